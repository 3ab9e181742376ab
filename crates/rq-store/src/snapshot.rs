//! The snapshot store: snapshot files of the SQLite database, each with a JSON sidecar holding
//! its Raft metadata, size and CRC32.
//!
//! Files are written under a temporary name, fsynced, checksummed, and renamed into place; the
//! sidecar is written the same way, after the data file. A snapshot without a sidecar, or whose
//! file does not match its sidecar's size and checksum, is not a snapshot and is removed at open.
//!
//! Architecture invariant: a snapshot's checksum is computed when it is written and verified
//! before it is installed or served.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::state_machine::SmState;
use crate::stats::Stats;
use crate::types::{Snapshot, SnapshotMeta};

const DATA_EXT: &str = "db";
const META_EXT: &str = "json";
const BUILDING: &str = "building.tmp";
const INCOMING: &str = "incoming.tmp";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sidecar {
    meta: SnapshotMeta,
    size: u64,
    crc32: u32,
}

pub struct SnapshotStore {
    dir: PathBuf,
    /// The newest complete snapshot.
    current: Mutex<Option<Sidecar>>,
    /// Serializes builds and installs.
    busy: tokio::sync::Mutex<()>,
    stats: Arc<Stats>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// CRC32 and length of a file, read in blocks.
fn checksum(path: &Path) -> io::Result<(u64, u32)> {
    let mut f = fs::File::open(path)?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, h.finalize()))
}

/// Bytes given back to the filesystem per step when an old snapshot is removed.
const REMOVE_STEP: u64 = 32 * 1024 * 1024;

/// Removes a file, a large one by cutting it down a step at a time first. Freeing a gigabyte
/// of extents at once holds the filesystem long enough to stall the log's fsyncs behind it.
fn remove_gradually(path: &Path) {
    if let Ok(f) = fs::OpenOptions::new().write(true).open(path)
        && let Ok(m) = f.metadata()
    {
        let mut len = m.len();
        while len > REMOVE_STEP {
            len -= REMOVE_STEP;
            if f.set_len(len).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let _ = fs::remove_file(path);
}

/// A snapshot id safe to use as a file name.
fn file_stem(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl SnapshotStore {
    /// Opens the store in `dir`, discarding partial writes and incomplete snapshots, and keeping
    /// only the newest complete one.
    pub fn open(dir: &Path, stats: Arc<Stats>) -> io::Result<SnapshotStore> {
        fs::create_dir_all(dir)?;
        let _ = fs::remove_file(dir.join(BUILDING));
        let _ = fs::remove_file(dir.join(INCOMING));
        let mut found: Vec<Sidecar> = Vec::new();
        for ent in fs::read_dir(dir)? {
            let p = ent?.path();
            if p.extension().and_then(|e| e.to_str()) != Some(META_EXT) {
                continue;
            }
            match fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Sidecar>(&b).ok())
            {
                Some(s) => found.push(s),
                None => {
                    tracing::warn!(path = %p.display(), "removing unreadable snapshot sidecar");
                    let _ = fs::remove_file(&p);
                }
            }
        }
        found.sort_by_key(|s| s.meta.last_log_id.map(|l| l.index));
        let store = SnapshotStore {
            dir: dir.to_path_buf(),
            current: Mutex::new(None),
            busy: tokio::sync::Mutex::new(()),
            stats,
        };
        // The newest snapshot whose file has the size its sidecar records is current. Its
        // checksum is verified when it is used (served or installed), not here: reading a large
        // snapshot at every start would make restarts slow.
        while let Some(s) = found.pop() {
            let path = store.data_path(&s.meta.snapshot_id);
            match fs::metadata(&path) {
                Ok(m) if m.len() == s.size => {
                    *store.current.lock().unwrap() = Some(s);
                    break;
                }
                _ => {
                    tracing::warn!(id = %s.meta.snapshot_id, "removing snapshot whose file is missing or cut short");
                    store.remove(&s.meta.snapshot_id);
                }
            }
        }
        store.remove_all_but_current()?;
        Ok(store)
    }

    /// The data file of snapshot `id`.
    pub fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{}.{DATA_EXT}", file_stem(id)))
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{}.{META_EXT}", file_stem(id)))
    }

    fn remove(&self, id: &str) {
        let _ = fs::remove_file(self.meta_path(id));
        let _ = fs::remove_file(self.data_path(id));
    }

    fn remove_all_but_current(&self) -> io::Result<()> {
        let keep = self
            .current
            .lock()
            .unwrap()
            .as_ref()
            .map(|s| file_stem(&s.meta.snapshot_id));
        for ent in fs::read_dir(&self.dir)? {
            let p = ent?.path();
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if (ext == DATA_EXT || ext == META_EXT) && Some(stem) != keep.as_deref() {
                remove_gradually(&p);
            }
        }
        Ok(())
    }

    /// Records a complete, fsynced data file at `tmp` as the snapshot described by `meta`.
    fn commit(&self, tmp: &Path, meta: SnapshotMeta) -> io::Result<Sidecar> {
        let started = std::time::Instant::now();
        let (size, crc32) = checksum(tmp)?;
        let side = Sidecar { meta, size, crc32 };
        let id = side.meta.snapshot_id.clone();
        fail::fail_point!("snapshot-before-rename");
        fs::rename(tmp, self.data_path(&id))?;
        fail::fail_point!("snapshot-before-sidecar");
        let meta_tmp = self.dir.join(format!("{}.{META_EXT}.tmp", file_stem(&id)));
        {
            let mut f = fs::File::create(&meta_tmp)?;
            f.write_all(&serde_json::to_vec(&side).map_err(io::Error::other)?)?;
            f.sync_all()?;
        }
        fs::rename(&meta_tmp, self.meta_path(&id))?;
        fsync_dir(&self.dir)?;
        *self.current.lock().unwrap() = Some(side.clone());
        self.remove_all_but_current()?;
        let snap = &self.stats.snapshot;
        snap.add("sink_full_total", 1);
        snap.set("persist_size", size as i64);
        snap.set("persist_duration_ms", started.elapsed().as_millis() as i64);
        Ok(side)
    }

    /// Makes `file`, a database written outside the store on the same file system, the
    /// current snapshot, described by `meta`: checked as an intact SQLite database, synced,
    /// then committed as a built one is.
    pub(crate) fn import(&self, file: &Path, meta: SnapshotMeta) -> io::Result<()> {
        rq_db::snapshot::validate(file).map_err(io::Error::other)?;
        fs::File::open(file)?.sync_all()?;
        self.commit(file, meta).map(|_| ())
    }

    async fn commit_blocking(self: &Arc<Self>, tmp: PathBuf, meta: SnapshotMeta) -> io::Result<Sidecar> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.commit(&tmp, meta))
            .await
            .map_err(io::Error::other)?
    }

    async fn open_snapshot(&self, side: Sidecar) -> io::Result<Snapshot> {
        let f = tokio::fs::File::open(self.data_path(&side.meta.snapshot_id)).await?;
        Ok(Snapshot {
            meta: side.meta,
            snapshot: Box::new(f),
        })
    }

    /// Copies the live database into a new snapshot. `pin` (run on a blocking thread, while
    /// no install can run) begins the read transaction to copy from and says which state it
    /// sees.
    pub async fn build<P>(self: &Arc<Self>, pin: P) -> io::Result<Snapshot>
    where
        P: FnOnce() -> io::Result<(rq_db::snapshot::PinnedRead, SmState)> + Send + 'static,
    {
        let _busy = self.busy.lock().await;
        let started = std::time::Instant::now();
        let tmp = self.dir.join(BUILDING);
        let t = tmp.clone();
        let state = tokio::task::spawn_blocking(move || -> io::Result<SmState> {
            fail::fail_point!("snapshot-start");
            let (pinned, state) = pin()?;
            pinned.copy_to(&t).map_err(io::Error::other)?;
            fail::fail_point!("snapshot-before-fsync");
            fs::File::open(&t)?.sync_all()?;
            Ok(state)
        })
        .await
        .map_err(io::Error::other)??;
        let id = match state.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, now_ms()),
            None => format!("0-0-{}", now_ms()),
        };
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership,
            snapshot_id: id,
        };
        let side = self.commit_blocking(tmp, meta).await?;
        tracing::info!(id = %side.meta.snapshot_id, size = side.size, "snapshot built");
        self.stats.store.add("num_snapshots", 1);
        self.stats.store.add("num_snapshots_full", 1);
        self.stats
            .store
            .set("snapshot_create_duration", started.elapsed().as_millis() as i64);
        crate::metric::snapshot().record(started.elapsed().as_secs_f64());
        self.open_snapshot(side).await
    }

    /// A fresh file to receive a snapshot from the leader into.
    pub async fn create_incoming(&self) -> io::Result<tokio::fs::File> {
        tokio::fs::File::create(self.dir.join(INCOMING)).await
    }

    /// Makes the received file the current snapshot and returns its path, after checking it is
    /// an intact SQLite database. The file is normally the one `create_incoming` made; any
    /// other file handle is copied in first.
    pub async fn accept_incoming(
        self: &Arc<Self>,
        meta: &SnapshotMeta,
        mut file: tokio::fs::File,
    ) -> io::Result<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let _busy = self.busy.lock().await;
        let tmp = self.dir.join(INCOMING);
        file.flush().await?;
        let theirs = file.metadata().await?;
        let ours = tokio::fs::metadata(&tmp).await.ok();
        if ours.is_some_and(|m| m.dev() == theirs.dev() && m.ino() == theirs.ino()) {
            file.sync_all().await?;
        } else {
            file.seek(std::io::SeekFrom::Start(0)).await?;
            let mut out = tokio::fs::File::create(&tmp).await?;
            tokio::io::copy(&mut file, &mut out).await?;
            out.sync_all().await?;
        }
        drop(file);
        let t = tmp.clone();
        tokio::task::spawn_blocking(move || rq_db::snapshot::validate(&t).map_err(io::Error::other))
            .await
            .map_err(io::Error::other)??;
        let side = self.commit_blocking(tmp, meta.clone()).await?;
        self.stats.store.add("num_restores", 1);
        Ok(self.data_path(&side.meta.snapshot_id))
    }

    /// The newest snapshot, its checksum verified.
    pub async fn current(&self) -> io::Result<Option<Snapshot>> {
        let side = self.current.lock().unwrap().clone();
        let Some(side) = side else { return Ok(None) };
        let path = self.data_path(&side.meta.snapshot_id);
        let (size, crc) = tokio::task::spawn_blocking(move || checksum(&path))
            .await
            .map_err(io::Error::other)??;
        if size != side.size || crc != side.crc32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot {} fails its checksum", side.meta.snapshot_id),
            ));
        }
        self.open_snapshot(side).await.map(Some)
    }

    /// Checks the newest snapshot's file against its recorded size and checksum, on the calling
    /// thread (it reads the whole file).
    pub fn verify_current(&self) -> io::Result<()> {
        let Some(side) = self.current.lock().unwrap().clone() else {
            return Ok(());
        };
        let (size, crc) = checksum(&self.data_path(&side.meta.snapshot_id))?;
        if size != side.size || crc != side.crc32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot {} fails its checksum", side.meta.snapshot_id),
            ));
        }
        Ok(())
    }

    /// Metadata of the newest snapshot.
    pub fn current_meta(&self) -> Option<SnapshotMeta> {
        self.current.lock().unwrap().as_ref().map(|s| s.meta.clone())
    }
}
