//! The Raft log and Raft's own durable state (vote, last purged): segment files written into
//! space that is already on disk.
//!
//! Each segment is a file of zeros, written and fsynced in full before it is used (a spare one
//! is prepared in the background). Appending a batch of entries is then one `pwrite` over bytes
//! that are already allocated and one `fdatasync`, which the file system can complete without
//! touching its metadata: on ext4 that fsync costs about half of an fsync that extends a file,
//! and about 60% of a B-tree commit (redb's, measured on the same disk), which writes several
//! pages scattered over its file.
//!
//! A record is `len: u32 | crc: u32 | index: u64 | payload (postcard Entry)`. The checksum
//! chains: it covers the record and the previous record's checksum (a segment starts from a
//! seed derived from its sequence number). Reading a segment stops at the first record whose
//! length is zero (never written), that runs past the end, or whose chained checksum does not
//! match: a torn write, or bytes left over behind a truncation point, cannot pass for a record,
//! because they were chained to a different predecessor.
//!
//! Writes run in-line, in the calling task. openraft 0.9's core waits for each append to be
//! reported flushed before it does anything else, replication to followers included. A
//! follower's append, and any entry that changes membership, is therefore flushed in-line too.
//! A leader's own entries are different: the core may send them to followers while they are
//! still being flushed, as the Raft paper allows (the leader then counts in a quorum only once
//! its flush is done). So, once `flush_own_entries_in_background` names this node, an append
//! of entries this node logs as leader of its current term is reported flushed as soon as it
//! is written, and a background thread fdatasyncs it while the followers write their copies.
//! The log's durable end (`durable()`) then trails what openraft believes, and two things wait
//! for it:
//!
//! - the state machine applies an entry only once it is durable here, so no client sees a
//!   result, and no read sees a write, before the entry is on disk on this node as well as on
//!   the follower whose acknowledgement committed it;
//! - the commit index sent to followers (`CommitGate`) is never past the durable end, so a
//!   follower applies nothing that a majority does not hold on disk.
//!
//! A failed background flush marks the log failed: nothing more is written or applied, and the
//! node stops. Many client writes still share one fsync: the store's proposer batches them into
//! one entry before they reach Raft (see `store.rs`).
//!
//! The committed log id is kept in `committed`, written in place through a shared mapping of
//! the file and not synced (`save_committed`): at start openraft applies the log up to it
//! before the node serves. The state machine's own applied state is recorded beside the
//! database (rq-db's `file_state`).
//!
//! Architecture invariant: `durable()` advances to an entry only after every segment holding it
//! was fdatasynced, and a segment file's name was made durable (directory fsync) before any
//! record in it is written. `LogFlushed::log_io_completed(Ok)` waits for the same, except for a
//! leader's own non-membership entries, as above.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak, mpsc as std_mpsc};
use std::thread::JoinHandle;

use memmap2::{MmapMut, MmapOptions};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogId, RaftLogReader};
use tokio::sync::watch;

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Size of a segment. A record larger than this gets a segment of its own, sized to fit.
const SEGMENT_BYTES: u64 = 8 << 20;
const HEADER: usize = 16;
const META_FILE: &str = "meta";
const COMMITTED_FILE: &str = "committed";
const LOCK_FILE: &str = "lock";
const SPARE_FILE: &str = "spare";
const SEGMENT_EXT: &str = "seg";
/// Mixed into each segment's checksum seed, so an all-zero header never checks.
const SEED_SALT: u32 = 0x7271_6c67;
/// The largest write buffer the writer keeps for the next append.
const KEPT_BUFFER: usize = 1 << 20;
/// Size of the `committed` file: its record (`len | crc | postcard(Option<LogId>)`) takes at
/// most 39 bytes.
const COMMITTED_BYTES: usize = 64;

/// Where an entry lives: segment sequence number, byte offset of its header, payload length,
/// and the checksum chain value before it (what a record written in its place chains to).
#[derive(Clone, Copy, Debug)]
struct Loc {
    seg: u32,
    offset: u64,
    len: u32,
    prev_crc: u32,
}

/// What readers see; replaced in place by the single writer after each durable change.
struct Index {
    /// Index of `locs[0]`, or of the next entry when `locs` is empty.
    first: u64,
    locs: VecDeque<Loc>,
    last: Option<LogId>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    segments: BTreeMap<u32, Arc<File>>,
    /// Bumped before a truncation rewrites anything, so a reader can tell that what it read
    /// may have changed under it.
    epoch: u64,
    /// Bumped by every truncation and by every membership entry appended (see
    /// `vote_and_membership_changes`).
    membership_changes: u64,
}

impl Index {
    fn next(&self) -> u64 {
        self.first + self.locs.len() as u64
    }
}

/// The segment being appended to.
struct Tail {
    seq: u32,
    file: Arc<File>,
    size: u64,
    offset: u64,
    crc: u32,
}

/// State only the writer (openraft's core, one call at a time) touches.
struct Writer {
    tail: Option<Tail>,
    next_seq: u32,
    spare: Option<JoinHandle<io::Result<File>>>,
    /// Set when a write failed part-way: the files may then hold records the index does not,
    /// so nothing more is written until the log is opened again (which reads the files).
    failed: bool,
}

/// The bytes an append wrote last, at `offset` in segment `seg`: the records the state machine
/// is about to apply are read from here rather than from the file. The append after it takes
/// the buffer back for its own records when no reader holds it, so an append of small entries
/// allocates nothing.
struct Written {
    seg: u32,
    offset: u64,
    bytes: Vec<u8>,
}

impl Written {
    /// The `len` bytes at `offset` in `seg`, if this is where they were written.
    fn get(&self, seg: u32, offset: u64, len: usize) -> Option<&[u8]> {
        let at = usize::try_from(offset.checked_sub(self.offset)?).ok()?;
        (self.seg == seg).then_some(())?;
        self.bytes.get(at..at.checked_add(len)?)
    }
}

impl Writer {
    /// Runs a write, refusing it after an earlier failure and remembering a new one.
    fn guard<T>(&mut self, f: impl FnOnce(&mut Writer) -> io::Result<T>) -> io::Result<T> {
        if self.failed {
            return Err(io_err("an earlier raft log write failed; the node must restart"));
        }
        let r = f(self);
        if r.is_err() {
            self.failed = true;
        }
        r
    }
}

/// The `committed` file, written at its start. A commit moves the id forward, so it is written
/// through a shared mapping of the file: a store into the page cache, where a `pwrite` would
/// cost a system call per commit. Either survives this process dying; neither survives the host
/// crashing. Where the file cannot be mapped, it is written with `pwrite`.
enum CommittedSink {
    Mapped(MmapMut),
    File(File),
}

impl CommittedSink {
    fn new(file: File) -> CommittedSink {
        // SAFETY: the file is this log's own and the log directory is locked (`LOCK_FILE`), so
        // no other process resizes or writes it while it is mapped; within this process it is
        // written only under `Shared::committed`'s lock.
        #[allow(unsafe_code)]
        let map = unsafe { MmapOptions::new().len(COMMITTED_BYTES).map_mut(&file) };
        match map {
            Ok(m) => CommittedSink::Mapped(m),
            Err(e) => {
                tracing::warn!(error = %e, "cannot map the raft log's committed file; writing it with pwrite");
                CommittedSink::File(file)
            }
        }
    }

    fn write(&mut self, record: &[u8]) -> io::Result<()> {
        match self {
            CommittedSink::Mapped(m) => {
                m[..record.len()].copy_from_slice(record);
                Ok(())
            }
            CommittedSink::File(f) => f.write_all_at(record, 0),
        }
    }
}

/// How far the log is on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// The last entry known to be on disk (with every entry before it).
    pub last: Option<LogId>,
    /// A flush failed: nothing past `last` will ever be durable in this process.
    pub failed: bool,
}

impl Durable {
    /// Whether the entry at `index` is on disk; an error once the log has failed.
    pub fn holds(&self, index: u64) -> io::Result<bool> {
        if self.last.is_some_and(|l| l.index >= index) {
            Ok(true)
        } else if self.failed {
            Err(io_err("a raft log flush failed; the node must restart"))
        } else {
            Ok(false)
        }
    }
}

/// Writes not yet fdatasynced.
#[derive(Default)]
struct Unsynced {
    files: Vec<Arc<File>>,
    upto: Option<LogId>,
}

struct Shared {
    /// Held (flock) while the log is open: one process per log.
    _lock: File,
    dir: PathBuf,
    segment_bytes: u64,
    index: RwLock<Index>,
    writer: Mutex<Writer>,
    unsynced: Mutex<Unsynced>,
    /// Held while flushing, so that `durable` advances only over data synced in order.
    flushing: Mutex<()>,
    durable: watch::Sender<Durable>,
    /// This node's Raft id once its own entries may be flushed in the background (0: never).
    own_id: AtomicU64,
    /// Wakes the background flusher; it ends when the log is dropped.
    wake: Mutex<Option<std_mpsc::SyncSender<()>>>,
    /// The last committed log id openraft reported, and where it is kept.
    committed: Mutex<(Option<LogId>, CommittedSink)>,
    /// What the last append wrote (up to `KEPT_BUFFER` bytes); cleared before a truncation
    /// rewrites anything.
    written: Mutex<Option<Arc<Written>>>,
}

impl Shared {
    /// Fdatasyncs everything written so far and advances the durable end over it.
    fn flush(&self) -> io::Result<()> {
        let _turn = self.flushing.lock().unwrap();
        let work = std::mem::take(&mut *self.unsynced.lock().unwrap());
        let mut done: Vec<&Arc<File>> = Vec::new();
        for f in &work.files {
            if done.iter().any(|d| Arc::ptr_eq(d, f)) {
                continue;
            }
            if let Err(e) = self.sync(f) {
                tracing::error!(error = %e, "raft log flush failed");
                self.durable.send_modify(|d| d.failed = true);
                return Err(e);
            }
            done.push(f);
        }
        if let Some(upto) = work.upto {
            self.durable.send_if_modified(|d| {
                let advance = d.last.is_none_or(|l| l.index < upto.index);
                if advance {
                    d.last = Some(upto);
                }
                advance
            });
        }
        Ok(())
    }

    fn sync(&self, f: &File) -> io::Result<()> {
        // The failpoint names the log directory whose flushes fail.
        if let Some(Some(dir)) = fail::eval("log-flush", |arg| arg)
            && Path::new(&dir) == self.dir
        {
            return Err(io::Error::other("log-flush failpoint"));
        }
        let started = std::time::Instant::now();
        f.sync_data()?;
        crate::metric::fsync().record(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn failed(&self) -> bool {
        self.durable.borrow().failed
    }
}

/// The background flusher: flushes whenever woken, until the log is dropped.
fn flusher(shared: Weak<Shared>, wake: std_mpsc::Receiver<()>) {
    while wake.recv().is_ok() {
        let Some(s) = shared.upgrade() else { return };
        // A failure is recorded in `durable`, which everything waiting on the flush watches.
        let _ = s.flush();
    }
}

/// The Raft log store. Cheap to clone; clones share the files.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(io_err)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(io_err)
}

fn store_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(subject, verb, io_err(e))
}

fn logs_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    store_err(ErrorSubject::Logs, verb, e)
}

fn seed(seq: u32) -> u32 {
    crc32fast::hash(&seq.to_le_bytes()) ^ SEED_SALT
}

fn chain(prev: u32, index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(prev);
    h.update(&(payload.len() as u32).to_le_bytes());
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn header(len: u32, crc: u32, index: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h[8..16].copy_from_slice(&index.to_le_bytes());
    h
}

fn parse_header(h: &[u8]) -> (u32, u32, u64) {
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    (len, crc, index)
}

fn segment_path(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("{seq:010}.{SEGMENT_EXT}"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `path` as `bytes` of zeros, written and fsynced, so later writes into it need no
/// block allocation.
fn zero_file(path: &Path, bytes: u64) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(f)
}

/// Segment files in `dir`, by sequence number.
fn list_segments(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().and_then(|x| x.to_str()) != Some(SEGMENT_EXT) {
            continue;
        }
        if let Some(seq) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u32>().ok())
        {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Total bytes of the log's segment files in `dir`, for `/status`.
pub fn disk_size(dir: &Path) -> u64 {
    list_segments(dir)
        .map(|segs| {
            segs.iter()
                .filter_map(|(_, p)| fs::metadata(p).ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The durable vote and purge point, in one small file replaced atomically.
fn read_meta(dir: &Path) -> io::Result<(Option<Vote>, Option<LogId>)> {
    let bytes = match fs::read(dir.join(META_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, None)),
        Err(e) => return Err(e),
    };
    if bytes.len() < 4 {
        return Err(corrupt(format!("{} is truncated", META_FILE)));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != sum {
        return Err(corrupt(format!("{} fails its checksum", META_FILE)));
    }
    decode(body)
}

fn write_meta(dir: &Path, vote: &Option<Vote>, last_purged: &Option<LogId>) -> io::Result<()> {
    let mut bytes = encode(&(vote, last_purged))?;
    let sum = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(META_FILE))?;
    sync_dir(dir)
}

/// The committed log id as last saved: `len | crc | postcard(Option<LogId>)`, or `None` if the
/// file is missing or does not check.
fn read_committed_file(f: &File) -> io::Result<Option<LogId>> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 64];
    let n = f.read_at(&mut buf, 0)?;
    if n < 8 {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let sum = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    let Some(body) = buf.get(8..8 + len).filter(|_| 8 + len <= n) else {
        return Ok(None);
    };
    if crc32fast::hash(body) != sum {
        return Ok(None);
    }
    Ok(decode::<Option<LogId>>(body).ok().flatten())
}

/// `committed` as the `committed` file holds it, written into `buf`.
fn committed_record<'b>(committed: &Option<LogId>, buf: &'b mut [u8; COMMITTED_BYTES]) -> io::Result<&'b [u8]> {
    let len = postcard::to_slice(committed, &mut buf[8..]).map_err(io_err)?.len();
    let sum = crc32fast::hash(&buf[8..8 + len]);
    buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&sum.to_le_bytes());
    Ok(&buf[..8 + len])
}

/// What reading one segment found.
struct Scan {
    /// Offset just past the last good record, and that record's checksum.
    end: u64,
    crc: u32,
    /// Whether the records continued the log (false: the segment had to be cut short).
    continuous: bool,
}

/// Reads the records of segment `seq`, adding those past the purge point to `index`.
fn scan_segment(seq: u32, file: &File, index: &mut Index, may_start: bool) -> io::Result<Scan> {
    let size = file.metadata()?.len();
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let purged = index.last_purged.map(|l| l.index);
    let mut offset = 0u64;
    let mut crc = seed(seq);
    let mut head = [0u8; HEADER];
    let mut payload = Vec::new();
    let mut continuous = true;
    let mut accepted = false;
    while offset + HEADER as u64 <= size {
        reader.read_exact(&mut head)?;
        let (len, stored, idx) = parse_header(&head);
        if len == 0 || offset + HEADER as u64 + len as u64 > size {
            break;
        }
        payload.resize(len as usize, 0);
        reader.read_exact(&mut payload)?;
        if chain(crc, idx, &payload) != stored {
            break;
        }
        if purged.is_none_or(|p| idx > p) {
            if may_start && purged.is_none() && index.locs.is_empty() {
                // A log that was never purged starts wherever its first entry does.
                index.first = idx;
            }
            if idx != index.next() {
                // Before any record of this segment was taken, the segment does not continue
                // the log; after, this is where the log ends.
                continuous = accepted;
                break;
            }
            accepted = true;
            let entry: Entry = decode(&payload)?;
            index.locs.push_back(Loc {
                seg: seq,
                offset,
                len,
                prev_crc: crc,
            });
            index.last = Some(*entry.get_log_id());
        }
        crc = stored;
        offset += HEADER as u64 + len as u64;
    }
    Ok(Scan {
        end: offset,
        crc,
        continuous,
    })
}

impl LogStore {
    /// Opens (or creates) the log in directory `dir`.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        LogStore::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> io::Result<LogStore> {
        fs::create_dir_all(dir)?;
        let lock = File::create(dir.join(LOCK_FILE))?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                std::fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!("{} is in use by another process", dir.display()),
                ),
                std::fs::TryLockError::Error(e) => e,
            });
        }
        let _ = fs::remove_file(dir.join(SPARE_FILE));
        let (vote, last_purged) = read_meta(dir)?;
        let committed_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(COMMITTED_FILE))?;
        let committed = read_committed_file(&committed_file)?;
        if committed_file.metadata()?.len() < COMMITTED_BYTES as u64 {
            committed_file.set_len(COMMITTED_BYTES as u64)?;
        }
        let committed_sink = CommittedSink::new(committed_file);
        let mut index = Index {
            first: last_purged.map(|l| l.index + 1).unwrap_or(0),
            locs: VecDeque::new(),
            last: None,
            last_purged,
            vote,
            segments: BTreeMap::new(),
            epoch: 0,
            membership_changes: 0,
        };
        let mut tail = None;
        let mut next_seq = 0;
        let mut broken = false;
        let mut removed = false;
        let mut scanned = 0;
        for (seq, path) in list_segments(dir)? {
            next_seq = seq + 1;
            if broken {
                // Written after a record that did not survive: never acknowledged.
                fs::remove_file(&path)?;
                removed = true;
                continue;
            }
            let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
            let scan = scan_segment(seq, &file, &mut index, scanned == 0)?;
            scanned += 1;
            if !scan.continuous {
                // Its records do not follow the log's: the segment was started by a batch
                // whose earlier records were torn, so none of it was acknowledged.
                tracing::warn!(segment = %path.display(), "raft log segment does not continue the log; removing it and any later one");
                broken = true;
                fs::remove_file(&path)?;
                removed = true;
                continue;
            }
            let size = file.metadata()?.len();
            index.segments.insert(seq, file.clone());
            tail = Some(Tail {
                seq,
                file,
                size,
                offset: scan.end,
                crc: scan.crc,
            });
        }
        if removed {
            sync_dir(dir)?;
        }
        // What the scan read is on disk: either this process's predecessor flushed it, or it
        // sat in the page cache of a host that did not restart (see `run_marker`).
        let (durable, _) = watch::channel(Durable {
            last: index.last.or(index.last_purged),
            failed: false,
        });
        let store = LogStore {
            shared: Arc::new(Shared {
                _lock: lock,
                dir: dir.to_path_buf(),
                segment_bytes,
                index: RwLock::new(index),
                writer: Mutex::new(Writer {
                    tail,
                    next_seq,
                    spare: None,
                    failed: false,
                }),
                unsynced: Mutex::default(),
                flushing: Mutex::new(()),
                durable,
                own_id: AtomicU64::new(0),
                wake: Mutex::new(None),
                committed: Mutex::new((None, committed_sink)),
                written: Mutex::new(None),
            }),
        };
        store.remove_purged_segments()?;
        store.shared.committed.lock().unwrap().0 = store.checked_committed(committed);
        {
            let mut w = store.shared.writer.lock().unwrap();
            if w.tail.is_some() {
                store.prepare_spare(&mut w);
            }
        }
        Ok(store)
    }

    /// `committed` if this log holds it: an id at or before the purge point (the snapshot holds
    /// it), or one whose entry is in the log with that very term, so that every entry up to it
    /// is the committed one. A saved id is not synced, so after a host crash the log may lack
    /// it; then nothing is claimed, and the entries are applied once a leader commits them.
    fn checked_committed(&self, committed: Option<LogId>) -> Option<LogId> {
        let c = committed?;
        let purged = self.shared.index.read().unwrap().last_purged;
        if purged.is_some_and(|p| c.index <= p.index) {
            return Some(c);
        }
        match self.read_range(c.index, Some(c.index + 1)) {
            Ok(e) if e.first().is_some_and(|e| e.log_id == c) => Some(c),
            _ => {
                tracing::warn!(committed = %c, "the raft log does not hold the saved committed entry; ignoring it");
                None
            }
        }
    }

    /// Starts zeroing the next segment in the background.
    fn prepare_spare(&self, w: &mut Writer) {
        let path = self.shared.dir.join(SPARE_FILE);
        let bytes = self.shared.segment_bytes;
        w.spare = Some(std::thread::spawn(move || zero_file(&path, bytes)));
    }

    /// Makes a new, empty segment the tail; it holds at least `need` bytes.
    fn roll(&self, w: &mut Writer, need: u64) -> io::Result<()> {
        let dir = &self.shared.dir;
        let seq = w.next_seq;
        let path = segment_path(dir, seq);
        let (file, size) = if need <= self.shared.segment_bytes {
            if w.spare.is_none() {
                self.prepare_spare(w);
            }
            let spare = w.spare.take().expect("spare prepared");
            let file = spare.join().map_err(|_| io_err("segment preparation panicked"))??;
            fs::rename(dir.join(SPARE_FILE), &path)?;
            (file, self.shared.segment_bytes)
        } else {
            let size = need.div_ceil(4096) * 4096;
            (zero_file(&path, size)?, size)
        };
        sync_dir(dir)?;
        w.next_seq = seq + 1;
        let file = Arc::new(file);
        self.shared.index.write().unwrap().segments.insert(seq, file.clone());
        w.tail = Some(Tail {
            seq,
            file,
            size,
            offset: 0,
            crc: seed(seq),
        });
        if w.spare.is_none() {
            self.prepare_spare(w);
        }
        Ok(())
    }

    /// Lets entries this node (Raft id `id`) logs as leader be flushed in the background, and
    /// starts the thread that flushes them; `None` stops it (a sole voter has no followers to
    /// overlap its flush with, and is quicker flushing in-line).
    pub fn flush_own_entries_in_background(&self, id: Option<u64>) {
        let mut wake = self.shared.wake.lock().unwrap();
        if wake.is_none() && id.is_some() {
            let (tx, rx) = std_mpsc::sync_channel(1);
            let shared = Arc::downgrade(&self.shared);
            std::thread::Builder::new()
                .name("raft-log-flush".into())
                .spawn(move || flusher(shared, rx))
                .expect("spawn the raft log flusher");
            *wake = Some(tx);
        }
        self.shared.own_id.store(id.unwrap_or(0), Ordering::Release);
    }

    /// The vote last saved. openraft saves a vote before it answers the request that granted
    /// it, so a vote this node gave is seen here before the candidate hears of it.
    pub fn saved_vote(&self) -> Option<Vote> {
        self.shared.index.read().unwrap().vote
    }

    /// The vote last saved, and a count that changes whenever the log's latest membership entry
    /// may have: on every truncation and every membership entry appended. Entries become
    /// readable (to replication) in the same step that counts them, and openraft appends from
    /// its core task, so while a count read there, next to the core's effective membership,
    /// stays the same, no newer membership has reached the log.
    pub fn vote_and_membership_changes(&self) -> (Option<Vote>, u64) {
        let ix = self.shared.index.read().unwrap();
        (ix.vote, ix.membership_changes)
    }

    /// How far the log is on disk; see the module documentation.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.shared.durable.subscribe()
    }

    /// Whether `entries` are this node's own, logged as leader of its current term, with no
    /// membership change among them: those may be flushed in the background.
    fn own_entries(&self, entries: &[Entry]) -> bool {
        let me = self.shared.own_id.load(Ordering::Acquire);
        let Some(vote) = self.shared.index.read().unwrap().vote else {
            return false;
        };
        me != 0
            && vote.is_committed()
            && vote.leader_id().voted_for() == Some(me)
            && entries.iter().all(|e| {
                e.get_log_id().leader_id == *vote.leader_id()
                    && !matches!(e.payload, openraft::EntryPayload::Membership(_))
            })
    }

    /// Writes `entries`; returns once they are on disk, or, for `own_entries`, once they are
    /// written and the background flusher has been woken.
    pub(crate) fn append_entries(&self, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let background = self.own_entries(&entries);
        {
            let mut w = self.shared.writer.lock().unwrap();
            if self.shared.failed() {
                return Err(io_err("a raft log flush failed; the node must restart"));
            }
            w.guard(|w| self.append_locked(w, entries))?;
        }
        let wake = if background {
            self.shared.wake.lock().unwrap().clone()
        } else {
            None
        };
        match wake {
            // A full channel means a wake-up is already pending; it will take these too.
            Some(tx) => {
                let _ = tx.try_send(());
                Ok(())
            }
            None => self.shared.flush(),
        }
    }

    fn append_locked(&self, w: &mut Writer, entries: Vec<Entry>) -> io::Result<()> {
        if let Some(e) = entries.first() {
            // Entries that replace part of the log replace everything after them too.
            self.truncate_locked(w, e.get_log_id().index)?;
        }
        let (mut next, empty, purged) = {
            let ix = self.shared.index.read().unwrap();
            (ix.next(), ix.locs.is_empty(), ix.last_purged.map(|l| l.index))
        };
        let mut first = None;
        let mut pending = self
            .shared
            .written
            .lock()
            .unwrap()
            .take()
            .and_then(|last| Arc::try_unwrap(last).ok())
            .map(|last| last.bytes)
            .unwrap_or_default();
        pending.clear();
        let mut synced: Vec<Arc<File>> = Vec::new();
        let mut locs = Vec::new();
        let mut last = None;
        let mut membership = false;
        for entry in entries {
            let id = *entry.get_log_id();
            // An empty log takes its first entry at any index up to the one after the purge
            // point (openraft puts entries behind it when the state machine is ahead of the
            // log; they are forgotten at the next open, as purged entries are).
            if empty && first.is_none() && purged.is_none_or(|p| id.index <= p + 1) {
                first = Some(id.index);
                next = id.index;
            }
            if id.index != next {
                return Err(io_err(format!(
                    "append of index {} where {} was expected",
                    id.index, next
                )));
            }
            // The record goes after those before it: its header's room, then its payload.
            let mut start = pending.len();
            pending.extend_from_slice(&[0; HEADER]);
            pending = postcard::to_extend(&entry, pending).map_err(io_err)?;
            let len = pending.len() - start - HEADER;
            let need = (HEADER + len) as u64;
            let fits = w
                .tail
                .as_ref()
                .is_some_and(|t| t.offset + start as u64 + need <= t.size);
            if !fits {
                // The records before it go to the current segment; it starts the next one.
                let record = pending.split_off(start);
                write_pending(w, &pending, &mut synced)?;
                self.roll(w, need)?;
                pending.clear();
                pending.extend_from_slice(&record);
                start = 0;
            }
            let t = w.tail.as_mut().expect("a tail segment");
            let crc = chain(t.crc, id.index, &pending[start + HEADER..]);
            locs.push(Loc {
                seg: t.seq,
                offset: t.offset + start as u64,
                len: len as u32,
                prev_crc: t.crc,
            });
            pending[start..start + HEADER].copy_from_slice(&header(len as u32, crc, id.index));
            membership |= matches!(entry.payload, openraft::EntryPayload::Membership(_));
            t.crc = crc;
            last = Some(id);
            next += 1;
        }
        let at = w.tail.as_ref().map(|t| (t.seq, t.offset));
        write_pending(w, &pending, &mut synced)?;
        if let Some((seg, offset)) = at.filter(|_| pending.capacity() <= KEPT_BUFFER) {
            *self.shared.written.lock().unwrap() = Some(Arc::new(Written {
                seg,
                offset,
                bytes: pending,
            }));
        }
        {
            let mut u = self.shared.unsynced.lock().unwrap();
            u.files.extend(synced);
            if last.is_some() {
                u.upto = last;
            }
        }
        let mut ix = self.shared.index.write().unwrap();
        if let Some(first) = first {
            ix.first = first;
        }
        ix.locs.extend(locs);
        if last.is_some() {
            ix.last = last;
        }
        if membership {
            ix.membership_changes += 1;
        }
        Ok(())
    }

    fn read_range(&self, start: u64, end: Option<u64>) -> io::Result<Vec<Entry>> {
        // Contiguous records of one segment are read with one pread, unless the last append
        // wrote them.
        let mut runs: Vec<(u32, Arc<File>, u64, Vec<u32>)> = Vec::new();
        let (first, epoch) = {
            let ix = self.shared.index.read().unwrap();
            let lo = start.max(ix.first);
            let hi = end.unwrap_or(u64::MAX).min(ix.next());
            let mut run_end: Option<(u32, u64)> = None;
            for i in lo..hi.max(lo) {
                let loc = ix.locs[(i - ix.first) as usize];
                if run_end != Some((loc.seg, loc.offset)) {
                    let file = ix
                        .segments
                        .get(&loc.seg)
                        .ok_or_else(|| io_err("entry in a removed segment"))?;
                    runs.push((loc.seg, file.clone(), loc.offset, Vec::new()));
                }
                run_end = Some((loc.seg, loc.offset + HEADER as u64 + loc.len as u64));
                runs.last_mut().expect("a run").3.push(loc.len);
            }
            (lo, ix.epoch)
        };
        let written = self.shared.written.lock().unwrap().clone();
        let mut out: Vec<Entry> = Vec::new();
        let mut expect = first;
        let mut read = Vec::new();
        for (seg, file, offset, lens) in runs {
            let total: usize = lens.iter().map(|l| HEADER + *l as usize).sum();
            let buf = match written.as_ref().and_then(|w| w.get(seg, offset, total)) {
                Some(b) => b,
                None => {
                    read.resize(total, 0);
                    file.read_exact_at(&mut read, offset)?;
                    &read[..]
                }
            };
            let mut at = 0;
            for len in lens {
                // Each record must be the entry asked for; a truncation during the read is
                // caught by the epoch check below.
                let entry: Entry = decode(&buf[at + HEADER..at + HEADER + len as usize])?;
                let index = entry.get_log_id().index;
                if index != expect || parse_header(&buf[at..at + HEADER]).2 != index {
                    return Err(corrupt(format!("read entry {index} where {expect} was expected")));
                }
                expect += 1;
                out.push(entry);
                at += HEADER + len as usize;
            }
        }
        if self.shared.index.read().unwrap().epoch != epoch {
            return Err(io_err("the log was truncated while it was read"));
        }
        Ok(out)
    }

    /// Removes entries from `index` on.
    fn truncate_from(&self, index: u64) -> io::Result<()> {
        self.shared
            .writer
            .lock()
            .unwrap()
            .guard(|w| self.truncate_locked(w, index))
    }

    fn truncate_locked(&self, w: &mut Writer, index: u64) -> io::Result<()> {
        let (index, loc, first, later) = {
            let ix = self.shared.index.read().unwrap();
            if index >= ix.next() || ix.locs.is_empty() {
                return Ok(());
            }
            if index < ix.first && ix.last_purged.is_some() {
                return Err(io_err(format!("truncation at {index}, behind the purged log")));
            }
            // A log never purged may be replaced from before its first entry: all of it goes.
            let index = index.max(ix.first);
            let pos = (index - ix.first) as usize;
            let loc = ix.locs[pos];
            let later: Vec<u32> = ix.segments.range(loc.seg + 1..).map(|(s, _)| *s).collect();
            (index, loc, ix.first, later)
        };
        // Whatever waits to be flushed goes to disk first, so that the durable end can simply
        // move back to the cut.
        self.shared.flush()?;
        // What can fail without changing the files comes first.
        let file = self.shared.index.read().unwrap().segments[&loc.seg].clone();
        let last = if index > first {
            self.read_range(index - 1, Some(index))?.pop().map(|e| *e.get_log_id())
        } else {
            None
        };
        let size = file.metadata()?.len();
        {
            let mut ix = self.shared.index.write().unwrap();
            ix.epoch += 1;
            ix.membership_changes += 1;
        }
        *self.shared.written.lock().unwrap() = None;
        // Later segments go first, then the cut record's header. A crash in between leaves the
        // log as it was up to the end of this segment: whole records, every one before the cut.
        for seq in &later {
            fs::remove_file(segment_path(&self.shared.dir, *seq))?;
        }
        if !later.is_empty() {
            sync_dir(&self.shared.dir)?;
        }
        file.write_all_at(&[0u8; HEADER], loc.offset)?;
        file.sync_data()?;
        w.tail = Some(Tail {
            seq: loc.seg,
            file,
            size,
            offset: loc.offset,
            crc: loc.prev_crc,
        });
        let mut ix = self.shared.index.write().unwrap();
        ix.locs.truncate((index - first) as usize);
        ix.last = last;
        for seq in later {
            ix.segments.remove(&seq);
        }
        let end = last.or(ix.last_purged);
        self.shared.durable.send_modify(|d| d.last = end);
        Ok(())
    }

    /// Forgets entries up to and including `log_id`, then removes segments nothing needs.
    fn purge_upto(&self, log_id: LogId) -> io::Result<()> {
        self.shared.writer.lock().unwrap().guard(|_| {
            let vote = self.shared.index.read().unwrap().vote;
            write_meta(&self.shared.dir, &vote, &Some(log_id))?;
            let mut ix = self.shared.index.write().unwrap();
            let n = (log_id.index + 1).saturating_sub(ix.first).min(ix.locs.len() as u64) as usize;
            ix.locs.drain(..n);
            ix.first = ix.first.max(log_id.index + 1);
            if ix.locs.is_empty() {
                ix.last = None;
            }
            ix.last_purged = Some(log_id);
            // Purged entries are in a snapshot on disk: the durable end is never behind them.
            self.shared.durable.send_if_modified(|d| {
                let behind = d.last.is_none_or(|l| l.index < log_id.index);
                if behind {
                    d.last = Some(log_id);
                }
                behind
            });
            Ok(())
        })?;
        self.remove_purged_segments()
    }

    /// Deletes segments that hold no entry past the purge point and are not the tail.
    fn remove_purged_segments(&self) -> io::Result<()> {
        let w = self.shared.writer.lock().unwrap();
        let tail = w.tail.as_ref().map(|t| t.seq);
        let doomed: Vec<u32> = {
            let mut ix = self.shared.index.write().unwrap();
            let keep_from = ix.locs.front().map(|l| l.seg).or(tail).unwrap_or(u32::MAX);
            let doomed: Vec<u32> = ix
                .segments
                .range(..keep_from)
                .map(|(s, _)| *s)
                .filter(|s| Some(*s) != tail)
                .collect();
            for s in &doomed {
                ix.segments.remove(s);
            }
            doomed
        };
        drop(w);
        for seq in doomed {
            // A segment that reappears after a crash holds only purged entries: harmless.
            fs::remove_file(segment_path(&self.shared.dir, seq))?;
        }
        Ok(())
    }
}

/// Writes the records gathered for the tail segment at its end; the file joins those to sync.
fn write_pending(w: &mut Writer, pending: &[u8], synced: &mut Vec<Arc<File>>) -> io::Result<()> {
    if let Some(t) = w.tail.as_mut().filter(|_| !pending.is_empty()) {
        t.file.write_all_at(pending, t.offset)?;
        t.offset += pending.len() as u64;
        synced.push(t.file.clone());
    }
    Ok(())
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e + 1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = bounds(&range);
        self.read_range(start, end).map_err(|e| logs_err(ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let ix = self.shared.index.read().unwrap();
        Ok(LogState {
            last_purged_log_id: ix.last_purged,
            last_log_id: ix.last.or(ix.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.shared
            .writer
            .lock()
            .unwrap()
            .guard(|_| {
                let purged = self.shared.index.read().unwrap().last_purged;
                write_meta(&self.shared.dir, &Some(*vote), &purged)?;
                self.shared.index.write().unwrap().vote = Some(*vote);
                Ok(())
            })
            .map_err(|e| store_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.shared.index.read().unwrap().vote)
    }

    /// Keeps the committed log id in a small file, written in place and not synced: it
    /// survives the process dying (the kernel still has it), which is what it is for. At start
    /// openraft applies the log up to it before the node serves, so a node restarted after a
    /// crash serves what it had applied, not the older state its database file was recorded at.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut buf = [0u8; COMMITTED_BYTES];
        let record = committed_record(&committed, &mut buf).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        let mut c = self.shared.committed.lock().unwrap();
        c.1.write(record).map_err(|e| logs_err(ErrorVerb::Write, e))?;
        c.0 = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.shared.committed.lock().unwrap().0)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.append_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "raft log write failed");
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(logs_err(ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.truncate_from(log_id.index)
            .map_err(|e| logs_err(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        fail::fail_point!("log-purge");
        self.purge_upto(log_id).map_err(|e| logs_err(ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};
    use rq_proto::{Command, Logged};

    use super::*;

    const SMALL: u64 = 4096;

    /// An entry whose payload is about `size` bytes; `tag` tells versions of one index apart.
    fn entry(term: u64, index: u64, size: usize, tag: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Logged {
                appended_at_ms: tag,
                cmd: Command::Batch(vec![Command::Noop; size]),
            }),
        }
    }

    fn tag_of(e: &Entry) -> u64 {
        match &e.payload {
            EntryPayload::Normal(l) => l.appended_at_ms,
            _ => panic!("not a normal entry"),
        }
    }

    fn ids(log: &LogStore) -> Vec<(u64, u64, u64)> {
        log.read_range(0, None)
            .unwrap()
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index, tag_of(e)))
            .collect()
    }

    fn state(log: &mut LogStore) -> LogState<TypeConfig> {
        futures::executor::block_on(log.get_log_state()).unwrap()
    }

    fn segment_count(dir: &Path) -> usize {
        list_segments(dir).unwrap().len()
    }

    /// Flips one byte of the payload of the record holding `index`.
    fn corrupt_record(log: &LogStore, dir: &Path, index: u64) {
        let ix = log.shared.index.read().unwrap();
        let loc = ix.locs[(index - ix.first) as usize];
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_path(dir, loc.seg))
            .unwrap();
        let at = loc.offset + HEADER as u64 + loc.len as u64 / 2;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    }

    /// Waits, a bounded time, until the durable end holds `index` or the log failed.
    fn wait_durable(log: &LogStore, index: u64) -> Durable {
        let rx = log.durable();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let d = *rx.borrow();
            if d.failed || d.last.is_some_and(|l| l.index >= index) {
                return d;
            }
            assert!(std::time::Instant::now() < deadline, "durable end stuck at {d:?}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn durable_index(log: &LogStore) -> Option<u64> {
        log.durable().borrow().last.map(|l| l.index)
    }

    fn membership_entry(term: u64, index: u64) -> Entry {
        let m = openraft::Membership::new(vec![std::collections::BTreeSet::from([1u64])], None);
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Membership(m),
        }
    }

    #[test]
    fn a_leaders_own_entries_are_flushed_in_the_background_and_all_others_in_line() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = LogStore::open_with(tmp.path(), SMALL).unwrap();
        futures::executor::block_on(log.save_vote(&Vote::new_committed(1, 1))).unwrap();
        // Until background flushing is turned on, every append returns durable.
        log.append_entries((0..3).map(|i| entry(1, i, 10, i))).unwrap();
        assert_eq!(durable_index(&log), Some(2));

        log.flush_own_entries_in_background(Some(1));
        log.append_entries((3..40).map(|i| entry(1, i, 300, i))).unwrap();
        // Readable at once, durable soon after.
        assert_eq!(ids(&log).len(), 40);
        assert!(!wait_durable(&log, 39).failed);

        // A membership change is flushed before the append returns, own or not.
        log.append_entries([membership_entry(1, 40)]).unwrap();
        assert_eq!(durable_index(&log), Some(40));

        // Entries of another leader: this node follows, and acknowledges only what is on disk.
        futures::executor::block_on(log.save_vote(&Vote::new_committed(2, 2))).unwrap();
        let theirs = Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 2), 41),
            payload: EntryPayload::Blank,
        };
        log.append_entries([theirs]).unwrap();
        assert_eq!(durable_index(&log), Some(41));

        // This node's own entries of an earlier term, sent back by a later leader: in line too.
        log.append_entries([entry(1, 42, 10, 42)]).unwrap();
        assert_eq!(durable_index(&log), Some(42));
        drop(log);
        let log = LogStore::open_with(tmp.path(), SMALL).unwrap();
        assert_eq!(log.read_range(0, None).unwrap().len(), 43);
    }

    #[test]
    fn the_membership_count_moves_with_membership_entries_and_truncations_only() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = LogStore::open_with(tmp.path(), SMALL).unwrap();
        let vote = Vote::new_committed(1, 1);
        futures::executor::block_on(log.save_vote(&vote)).unwrap();
        let count = |log: &LogStore| {
            let (v, n) = log.vote_and_membership_changes();
            assert_eq!(v, Some(vote));
            n
        };
        let start = count(&log);
        log.append_entries((0..5).map(|i| entry(1, i, 10, i))).unwrap();
        assert_eq!(count(&log), start);
        log.append_entries([entry(1, 5, 10, 5), membership_entry(1, 6), entry(1, 7, 10, 7)])
            .unwrap();
        assert_eq!(count(&log), start + 1);
        log.append_entries((8..10).map(|i| entry(1, i, 10, i))).unwrap();
        assert_eq!(count(&log), start + 1);
        // A truncation may remove the latest membership entry; so may an append that replaces
        // entries, which truncates first.
        log.truncate_from(9).unwrap();
        assert_eq!(count(&log), start + 2);
        log.append_entries([entry(1, 8, 10, 108)]).unwrap();
        assert_eq!(count(&log), start + 3);
        // Truncating past the end removes nothing.
        log.truncate_from(20).unwrap();
        assert_eq!(count(&log), start + 3);
    }

    #[test]
    fn truncation_waits_for_background_flushes_and_moves_the_durable_end_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = LogStore::open_with(tmp.path(), SMALL).unwrap();
        futures::executor::block_on(log.save_vote(&Vote::new_committed(1, 1))).unwrap();
        log.flush_own_entries_in_background(Some(1));
        for i in 0..30 {
            log.append_entries([entry(1, i, 200, i)]).unwrap();
        }
        log.truncate_from(20).unwrap();
        assert_eq!(durable_index(&log), Some(19));
        log.append_entries([entry(1, 20, 10, 120)]).unwrap();
        assert!(!wait_durable(&log, 20).failed);
        drop(log);
        let log = LogStore::open_with(tmp.path(), SMALL).unwrap();
        assert_eq!(ids(&log).last(), Some(&(1, 20, 120)));
    }

    #[test]
    fn a_failed_background_flush_fails_the_log_for_good() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("raft-log");
        let mut log = LogStore::open_with(&dir, SMALL).unwrap();
        futures::executor::block_on(log.save_vote(&Vote::new_committed(1, 1))).unwrap();
        log.flush_own_entries_in_background(Some(1));
        log.append_entries((0..5).map(|i| entry(1, i, 10, i))).unwrap();
        assert!(!wait_durable(&log, 4).failed);

        fail::cfg("log-flush", &format!("return({})", dir.display())).unwrap();
        log.append_entries([entry(1, 5, 10, 5)]).unwrap();
        let d = wait_durable(&log, 5);
        fail::remove("log-flush");
        assert!(d.failed, "the flush failed");
        assert_eq!(d.last.map(|l| l.index), Some(4), "nothing unflushed counts as durable");
        assert!(d.holds(5).is_err());
        assert!(d.holds(4).unwrap());
        assert!(
            log.append_entries([entry(1, 6, 10, 6)]).is_err(),
            "no write after a failed flush"
        );
    }

    #[test]
    fn entries_survive_reopen_across_segments_of_every_size() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = LogStore::open_with(dir, SMALL).unwrap();
        let sizes = [10usize, 3000, 9000, 1, 4070, 500];
        let mut want = Vec::new();
        for i in 0..30u64 {
            let size = sizes[i as usize % sizes.len()];
            log.append_entries([entry(1, i, size, i)]).unwrap();
            want.push((1, i, i));
        }
        log.append_entries((30..40).map(|i| entry(1, i, 700, i))).unwrap();
        want.extend((30..40).map(|i| (1, i, i)));
        assert_eq!(ids(&log), want);
        assert!(segment_count(dir) > 5, "small segments roll over");
        drop(log);
        let mut log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(ids(&log), want);
        assert_eq!(state(&mut log).last_log_id.unwrap().index, 39);
        log.append_entries([entry(2, 40, 100, 40)]).unwrap();
        drop(log);
        let log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(ids(&log).last(), Some(&(2, 40, 40)));
        assert_eq!(log.read_range(12, Some(15)).unwrap().len(), 3);
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_its_place_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = LogStore::open_with(dir, SEGMENT_BYTES).unwrap();
        log.append_entries((0..20).map(|i| entry(1, i, 50, i))).unwrap();
        corrupt_record(&log, dir, 19);
        drop(log);
        let mut log = LogStore::open_with(dir, SEGMENT_BYTES).unwrap();
        assert_eq!(state(&mut log).last_log_id.unwrap().index, 18);
        log.append_entries([entry(2, 19, 10, 119), entry(2, 20, 10, 120)])
            .unwrap();
        drop(log);
        let log = LogStore::open_with(dir, SEGMENT_BYTES).unwrap();
        let got = ids(&log);
        assert_eq!(got.len(), 21);
        assert_eq!(&got[19..], &[(2, 19, 119), (2, 20, 120)]);
    }

    #[test]
    fn truncated_entries_never_come_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = LogStore::open_with(dir, SMALL).unwrap();
        log.append_entries((0..40).map(|i| entry(1, i, 200, i))).unwrap();
        log.truncate_from(10).unwrap();
        // Same sizes as the old records: the new ones land exactly where old ones start.
        log.append_entries((10..13).map(|i| entry(2, i, 200, 100 + i))).unwrap();
        let want: Vec<_> = (0..10)
            .map(|i| (1, i, i))
            .chain((10..13).map(|i| (2, i, 100 + i)))
            .collect();
        assert_eq!(ids(&log), want);
        drop(log);
        let mut log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(ids(&log), want);
        assert_eq!(state(&mut log).last_log_id.unwrap().index, 12);
        // Truncating everything leaves an empty log that starts again at the same index.
        log.truncate_from(0).unwrap();
        assert!(ids(&log).is_empty());
        assert_eq!(state(&mut log).last_log_id, None);
        log.append_entries([entry(3, 0, 5, 300)]).unwrap();
        drop(log);
        let log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(ids(&log), vec![(3, 0, 300)]);
    }

    #[test]
    fn purge_removes_segments_and_is_remembered() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = LogStore::open_with(dir, SMALL).unwrap();
        log.append_entries((0..100).map(|i| entry(1, i, 300, i))).unwrap();
        let before = segment_count(dir);
        log.purge_upto(LogId::new(CommittedLeaderId::new(1, 1), 60)).unwrap();
        let holding_61 = log.shared.index.read().unwrap().locs[0].seg;
        assert_eq!(
            list_segments(dir).unwrap()[0].0,
            holding_61,
            "purged segments are deleted"
        );
        assert!(segment_count(dir) < before);
        assert_eq!(ids(&log).first(), Some(&(1, 61, 61)));
        drop(log);
        let mut log = LogStore::open_with(dir, SMALL).unwrap();
        let st = state(&mut log);
        assert_eq!(st.last_purged_log_id.unwrap().index, 60);
        assert_eq!(st.last_log_id.unwrap().index, 99);
        assert_eq!(ids(&log).len(), 39);
        // A purge past the end (a snapshot installed on a lagging node) empties the log; the
        // next entry follows the purge point.
        log.purge_upto(LogId::new(CommittedLeaderId::new(2, 1), 500)).unwrap();
        assert_eq!(state(&mut log).last_log_id.unwrap().index, 500);
        log.append_entries([entry(2, 501, 10, 501)]).unwrap();
        drop(log);
        let log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(ids(&log), vec![(2, 501, 501)]);
    }

    #[test]
    fn segments_written_after_a_torn_record_are_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = LogStore::open_with(dir, SMALL).unwrap();
        log.append_entries((0..5).map(|i| entry(1, i, 100, i))).unwrap();
        // One batch that spans three segments, as a crash could leave it: an early record torn,
        // later ones (in later segments) intact.
        log.append_entries((5..40).map(|i| entry(1, i, 300, i))).unwrap();
        corrupt_record(&log, dir, 8);
        let before = segment_count(dir);
        drop(log);
        let mut log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(state(&mut log).last_log_id.unwrap().index, 7);
        assert!(segment_count(dir) < before);
        log.append_entries([entry(2, 8, 10, 208)]).unwrap();
        drop(log);
        let log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(ids(&log).last(), Some(&(2, 8, 208)));
        assert_eq!(ids(&log).len(), 9);
    }

    #[test]
    fn a_truncation_cut_short_by_a_crash_leaves_a_log_that_opens() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = LogStore::open_with(dir, SMALL).unwrap();
        log.append_entries((0..40).map(|i| entry(1, i, 300, i))).unwrap();
        assert!(segment_count(dir) > 2);
        // The first record's header zeroed, the later segments not yet removed.
        let first = log.shared.index.read().unwrap().locs[0];
        drop(log);
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(dir, first.seg))
            .unwrap();
        f.write_all_at(&[0u8; HEADER], first.offset).unwrap();
        drop(f);
        let mut log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(state(&mut log).last_log_id, None, "no entry after the cut comes back");
        assert!(ids(&log).is_empty());
        log.append_entries([entry(2, 0, 10, 200)]).unwrap();
        drop(log);
        let log = LogStore::open_with(dir, SMALL).unwrap();
        assert_eq!(ids(&log), vec![(2, 0, 200)]);
    }

    #[test]
    fn a_record_that_does_not_continue_its_segment_ends_the_log_there() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = LogStore::open_with(dir, SEGMENT_BYTES).unwrap();
        log.append_entries((0..6).map(|i| entry(1, i, 20, i))).unwrap();
        // A well-formed record chained after entry 5 that claims index 3.
        let (seq, offset, crc) = {
            let w = log.shared.writer.lock().unwrap();
            let t = w.tail.as_ref().unwrap();
            (t.seq, t.offset, t.crc)
        };
        let payload = encode(&entry(2, 3, 20, 999)).unwrap();
        let mut rec = header(payload.len() as u32, chain(crc, 3, &payload), 3).to_vec();
        rec.extend_from_slice(&payload);
        drop(log);
        let f = OpenOptions::new().write(true).open(segment_path(dir, seq)).unwrap();
        f.write_all_at(&rec, offset).unwrap();
        drop(f);
        let log = LogStore::open_with(dir, SEGMENT_BYTES).unwrap();
        assert_eq!(ids(&log), (0..6).map(|i| (1, i, i)).collect::<Vec<_>>());
        log.append_entries([entry(1, 6, 20, 6)]).unwrap();
        drop(log);
        let log = LogStore::open_with(dir, SEGMENT_BYTES).unwrap();
        assert_eq!(ids(&log).len(), 7);
    }

    #[test]
    fn after_a_failed_write_the_log_refuses_more() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let log = LogStore::open_with(&dir, SMALL).unwrap();
        log.append_entries((0..3).map(|i| entry(1, i, 10, i))).unwrap();
        // The directory is gone: the next segment cannot be made.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(log.append_entries([entry(1, 3, 9000, 3)]).is_err());
        assert!(
            log.append_entries([entry(1, 3, 10, 3)]).is_err(),
            "a write after a failure is refused"
        );
        assert!(log.truncate_from(1).is_err());
        assert_eq!(ids(&log).len(), 3, "reads go on");
    }

    #[test]
    fn one_process_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let log = LogStore::open(tmp.path()).unwrap();
        let second = LogStore::open(tmp.path()).err().expect("a second open is refused");
        assert!(second.to_string().contains("in use by another process"), "{second}");
        drop(log);
        LogStore::open(tmp.path()).unwrap();
    }

    #[test]
    fn the_last_appends_records_are_read_from_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let log = LogStore::open_with(tmp.path(), SMALL).unwrap();
        log.append_entries((1..=3).map(|i| entry(1, i, 1, i))).unwrap();
        log.append_entries((4..=6).map(|i| entry(1, i, 1, i))).unwrap();
        // Zero every segment on disk: only what the last append wrote can still be read.
        for seg in fs::read_dir(tmp.path()).unwrap() {
            let path = seg.unwrap().path();
            if path.extension().is_some_and(|e| e == SEGMENT_EXT) {
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                f.write_all_at(&vec![0; SMALL as usize], 0).unwrap();
            }
        }
        let tags = |r: Vec<Entry>| r.iter().map(tag_of).collect::<Vec<_>>();
        assert_eq!(tags(log.read_range(4, None).unwrap()), [4, 5, 6]);
        assert_eq!(tags(log.read_range(5, Some(6)).unwrap()), [5]);
        assert!(log.read_range(3, Some(5)).is_err(), "entry 3 is read from the file");
    }

    #[test]
    fn the_committed_file_reads_back_written_through_its_mapping_or_with_pwrite() {
        let id = Some(LogId::new(CommittedLeaderId::new(3, 1), 12_345));
        for mapped in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let f = File::create_new(tmp.path().join(COMMITTED_FILE)).unwrap();
            f.set_len(COMMITTED_BYTES as u64).unwrap();
            let mut sink = if mapped {
                CommittedSink::new(f.try_clone().unwrap())
            } else {
                CommittedSink::File(f.try_clone().unwrap())
            };
            assert_eq!(matches!(sink, CommittedSink::Mapped(_)), mapped);
            let mut buf = [0; COMMITTED_BYTES];
            sink.write(committed_record(&id, &mut buf).unwrap()).unwrap();
            drop(sink);
            let f = File::open(tmp.path().join(COMMITTED_FILE)).unwrap();
            assert_eq!(read_committed_file(&f).unwrap(), id, "mapped: {mapped}");
        }
    }

    #[test]
    fn the_committed_id_survives_reopen_and_reads_as_the_earlier_format_wrote_it() {
        let tmp = tempfile::tempdir().unwrap();
        let reopen_committed = || {
            let mut log = LogStore::open(tmp.path()).unwrap();
            futures::executor::block_on(log.read_committed()).unwrap()
        };
        let log = LogStore::open(tmp.path()).unwrap();
        log.append_entries((1..=300).map(|i| entry(1, i, 1, 0))).unwrap();
        let id = |i: u64| Some(LogId::new(CommittedLeaderId::new(1, 1), i));
        // A longer record, then a shorter one over it.
        for i in [300, 2] {
            futures::executor::block_on(log.clone().save_committed(id(i))).unwrap();
        }
        drop(log);
        assert_eq!(reopen_committed(), id(2));
        // The file as a `pwrite` of the bare record left it, shorter than the mapping.
        let body = postcard::to_allocvec(&id(299)).unwrap();
        let mut record = (body.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        record.extend_from_slice(&body);
        fs::write(tmp.path().join(COMMITTED_FILE), &record).unwrap();
        assert_eq!(reopen_committed(), id(299));
        // A record that does not check claims nothing.
        let mut bad = fs::read(tmp.path().join(COMMITTED_FILE)).unwrap();
        bad[9] ^= 1;
        fs::write(tmp.path().join(COMMITTED_FILE), &bad).unwrap();
        assert_eq!(reopen_committed(), None);
    }

    #[test]
    fn the_vote_survives_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(tmp.path()).unwrap();
        futures::executor::block_on(log.save_vote(&Vote::new(7, 3))).unwrap();
        drop(log);
        let mut log = LogStore::open(tmp.path()).unwrap();
        assert_eq!(
            futures::executor::block_on(log.read_vote()).unwrap(),
            Some(Vote::new(7, 3))
        );
    }
}
