//! The change data capture queue: every captured change, grouped per log index and encoded as
//! the message the endpoint receives, kept on disk in `<data>/cdc/` until the endpoint has it.
//!
//! Records are appended by the apply thread before the batch that made them commits (so a crash
//! after the commit finds them), in segment files named by their first index:
//! `len: u32 | crc: u32 | index: u64 | message JSON`. A torn tail is cut at open. An index at
//! or below the highest ever appended is skipped, so entries applied again after a crash do not
//! queue twice. Appends are not synced one by one: the files are synced before every snapshot,
//! so that the log entries a snapshot lets go of have their changes on disk; a node that loses
//! unsynced appends to a power failure rebuilds its database from the snapshot and applies the
//! log after it again, which captures them again.
//!
//! The high-water mark is the highest index the endpoint has acknowledged (through any leader).
//! Segments wholly at or below it are deleted; it is kept in `hwm` beside them (rqlite keeps it
//! in memory only). The queue is bounded (`max_bytes`): past it, new changes are dropped, counted
//! and logged, until the endpoint catches up.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rq_db::capture::{RowEvent, Value};
use rq_proto::json::{write_base64, write_f64, write_i64, write_str};

use crate::stats::Stats;

/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 8 << 20;
/// Record header: length and checksum.
const HEADER: usize = 8;
/// Largest record accepted when reading back (a corrupt length is not followed).
const MAX_RECORD: usize = 1 << 30;

/// Where the queue lives, and how big it may grow.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

struct Segment {
    first: u64,
    last: u64,
    path: PathBuf,
    bytes: u64,
    records: u64,
}

struct Inner {
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending.
    writer: Option<File>,
    /// The highest index ever appended.
    max_key: u64,
    hwm: u64,
    bytes: u64,
    records: u64,
    /// Whether appends are being dropped because the queue is full.
    full: bool,
    /// Where the last read stopped: the segment's first index, the offset after the record,
    /// and that record's index.
    cursor: Option<(u64, u64, u64)>,
}

pub struct CdcQueue {
    cfg: QueueConfig,
    inner: Mutex<Inner>,
    stats: Arc<Stats>,
    /// Woken when records are appended.
    pub appended: tokio::sync::Notify,
}

fn crc(index: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Reads records from `r` until its end or the first incomplete or corrupt one; calls `f` with
/// each record's index, body and end offset. Returns the offset after the last good record.
fn scan(r: &mut impl Read, mut f: impl FnMut(u64, Vec<u8>, u64) -> bool) -> io::Result<u64> {
    let mut offset = 0u64;
    loop {
        let mut head = [0u8; HEADER + 8];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(offset),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let index = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes"));
        if len > MAX_RECORD {
            return Ok(offset);
        }
        let mut body = vec![0u8; len];
        match r.read_exact(&mut body) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(offset),
            Err(e) => return Err(e),
        }
        if crc(index, &body) != sum {
            return Ok(offset);
        }
        offset += (HEADER + 8 + len) as u64;
        if !f(index, body, offset) {
            return Ok(offset);
        }
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.cdc")
}

impl CdcQueue {
    /// Opens (or creates) the queue in `cfg.dir`, cutting any torn tail.
    pub fn open(cfg: QueueConfig, stats: Arc<Stats>) -> io::Result<Arc<CdcQueue>> {
        std::fs::create_dir_all(&cfg.dir)?;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(&cfg.dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let first = name.strip_suffix(".cdc")?.parse::<u64>().ok()?;
                Some((first, e.path()))
            })
            .collect();
        names.sort();
        let hwm = std::fs::read_to_string(cfg.dir.join("hwm"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let mut segments = VecDeque::new();
        let (mut max_key, mut bytes, mut records) = (hwm, 0u64, 0u64);
        let count = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
            let (mut last, mut n) = (0u64, 0u64);
            let end = scan(&mut BufReader::new(&mut f), |index, _, _| {
                last = index;
                n += 1;
                true
            })?;
            if f.metadata()?.len() != end {
                tracing::warn!(segment = %path.display(), "CDC queue: cutting a torn record at the end");
                f.set_len(end)?;
                f.sync_all()?;
            }
            if n == 0 && i + 1 < count {
                std::fs::remove_file(&path)?;
                continue;
            }
            max_key = max_key.max(last);
            if n > 0 && last <= hwm {
                std::fs::remove_file(&path)?;
                continue;
            }
            bytes += end;
            records += n;
            segments.push_back(Segment {
                first,
                last,
                path,
                bytes: end,
                records: n,
            });
        }
        let writer = match segments.back() {
            Some(s) => Some(OpenOptions::new().append(true).open(&s.path)?),
            None => None,
        };
        stats.cdc.set("fifo_size", records as i64);
        stats.cdc.set("fifo_bytes", bytes as i64);
        stats.cdc.set("highwater_mark", hwm as i64);
        Ok(Arc::new(CdcQueue {
            cfg,
            inner: Mutex::new(Inner {
                segments,
                writer,
                max_key,
                hwm,
                bytes,
                records,
                full: false,
                cursor: None,
            }),
            stats,
            appended: tokio::sync::Notify::new(),
        }))
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    pub fn hwm(&self) -> u64 {
        self.inner().hwm
    }

    /// Records queued, and their bytes on disk.
    pub fn len(&self) -> (u64, u64) {
        let i = self.inner();
        (i.records, i.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.inner().records == 0
    }

    /// Whether a record after `index` is queued.
    pub fn has_after(&self, index: u64) -> bool {
        let i = self.inner();
        i.segments.back().is_some_and(|s| s.records > 0 && s.last > index)
    }

    /// Appends the messages of committed log entries, in index order. Indexes already appended
    /// once are skipped; past the size bound, messages are dropped.
    pub fn append(&self, messages: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut i = self.inner();
        let mut buf = Vec::new();
        let mut appended = false;
        for (index, body) in messages {
            if *index <= i.max_key {
                self.stats.cdc.add("fifo_enqueue_ignored", 1);
                continue;
            }
            if i.bytes + buf.len() as u64 >= self.cfg.max_bytes {
                if !i.full {
                    tracing::error!(
                        max_bytes = self.cfg.max_bytes,
                        "CDC queue is full: changes are dropped until the endpoint takes what is queued"
                    );
                    i.full = true;
                }
                self.stats.cdc.add("dropped_fifo_full", 1);
                i.max_key = *index;
                continue;
            }
            if i.full {
                tracing::info!("CDC queue has room again: capturing changes");
                i.full = false;
            }
            let need_segment = match i.segments.back() {
                None => true,
                Some(s) => s.bytes + buf.len() as u64 >= SEGMENT_BYTES,
            };
            if need_segment {
                self.write_out(&mut i, &mut buf)?;
                let path = self.cfg.dir.join(segment_name(*index));
                let f = OpenOptions::new().create(true).append(true).open(&path)?;
                if let Some(prev) = i.writer.replace(f) {
                    prev.sync_all()?;
                }
                i.segments.push_back(Segment {
                    first: *index,
                    last: 0,
                    path,
                    bytes: 0,
                    records: 0,
                });
            }
            let start = buf.len();
            buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc(*index, body).to_le_bytes());
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(body);
            let len = (buf.len() - start) as u64;
            let seg = i.segments.back_mut().expect("a segment is open");
            seg.last = *index;
            seg.records += 1;
            seg.bytes += len;
            i.max_key = *index;
            i.records += 1;
            i.bytes += len;
            appended = true;
        }
        self.write_out(&mut i, &mut buf)?;
        self.stats.cdc.set("fifo_size", i.records as i64);
        self.stats.cdc.set("fifo_bytes", i.bytes as i64);
        drop(i);
        if appended {
            self.appended.notify_waiters();
            self.appended.notify_one();
        }
        Ok(())
    }

    fn write_out(&self, i: &mut Inner, buf: &mut Vec<u8>) -> io::Result<()> {
        if !buf.is_empty() {
            if let Some(w) = i.writer.as_mut() {
                w.write_all(buf)?;
            }
            buf.clear();
        }
        Ok(())
    }

    /// Syncs what was appended: before a snapshot lets go of the log entries behind it.
    pub fn sync(&self) -> io::Result<()> {
        let i = self.inner();
        if let Some(w) = &i.writer {
            w.sync_all()?;
        }
        File::open(&self.cfg.dir)?.sync_all()?;
        self.stats.cdc.add("snapshot_sync", 1);
        Ok(())
    }

    /// Up to `max` queued messages with indexes above `after`, in order.
    pub fn read_after(&self, after: u64, max: usize) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut i = self.inner();
        let mut out = Vec::new();
        // Resume where the last read stopped if it stopped at `after`.
        let start = match i.cursor {
            Some((first, offset, last)) if last == after && i.segments.iter().any(|s| s.first == first) => {
                Some((first, offset))
            }
            _ => None,
        };
        let segments: Vec<(u64, PathBuf, u64)> = i
            .segments
            .iter()
            .filter(|s| s.records > 0 && s.last > after)
            .map(|s| (s.first, s.path.clone(), s.last))
            .collect();
        let mut cursor = i.cursor;
        for (first, path, _) in segments {
            if out.len() >= max {
                break;
            }
            let mut f = File::open(&path)?;
            let base = match start {
                Some((f0, off)) if f0 == first => off,
                _ => 0,
            };
            f.seek(SeekFrom::Start(base))?;
            scan(&mut BufReader::new(f), |index, body, end| {
                if index > after {
                    out.push((index, body));
                    cursor = Some((first, base + end, index));
                }
                out.len() < max
            })?;
        }
        i.cursor = cursor;
        if !out.is_empty() {
            self.stats.cdc.add("batcher_reads", 1);
        }
        Ok(out)
    }

    /// Raises the high-water mark to `hwm` (never lowers it), keeps it on disk, and deletes the
    /// segments wholly at or below it.
    pub fn set_hwm(&self, hwm: u64) -> io::Result<()> {
        let mut i = self.inner();
        if hwm <= i.hwm {
            return Ok(());
        }
        i.hwm = hwm;
        let tmp = self.cfg.dir.join("hwm.tmp");
        std::fs::write(&tmp, hwm.to_string())?;
        std::fs::rename(&tmp, self.cfg.dir.join("hwm"))?;
        while let Some(s) = i.segments.front() {
            if s.records == 0 || s.last > hwm {
                break;
            }
            let s = i.segments.pop_front().expect("front exists");
            if i.segments.is_empty() {
                i.writer = None;
            }
            std::fs::remove_file(&s.path)?;
            i.bytes -= s.bytes;
            i.records -= s.records;
        }
        self.stats.cdc.set("fifo_size", i.records as i64);
        self.stats.cdc.set("fifo_bytes", i.bytes as i64);
        self.stats.cdc.set("highwater_mark", hwm as i64);
        Ok(())
    }
}

/// The database's capture sink: encodes each committed log index's changes and appends them.
/// Changes captured under no index (none set) are not queued.
pub fn sink(queue: Arc<CdcQueue>, stats: Arc<Stats>) -> rq_db::CaptureSink {
    Box::new(move |groups| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut messages = Vec::with_capacity(groups.len());
        for (index, events) in groups {
            if index == 0 {
                continue;
            }
            stats.cdc.add("batcher_writes", 1);
            stats.cdc.add("batcher_events_write", events.len() as i64);
            messages.push((index, encode_message(index, now, &events)));
        }
        queue.append(&messages).map_err(|e| format!("CDC queue: {e}"))
    })
}

/// The message of one log index as the endpoint receives it:
/// `{"index":N,"commit_timestamp":MS,"events":[...]}`, each event as rqlite writes it
/// (zero row ids and empty images left out, row images with their keys sorted, BLOBs in
/// base64, `<`, `>` and `&` escaped).
pub fn encode_message(index: u64, commit_ms: u64, events: &[RowEvent]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + events.len() * 96);
    out.extend_from_slice(b"{\"index\":");
    write_i64(&mut out, index as i64);
    out.extend_from_slice(b",\"commit_timestamp\":");
    write_i64(&mut out, commit_ms as i64);
    out.extend_from_slice(b",\"events\":[");
    for (n, e) in events.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        encode_event(&mut out, e);
    }
    out.extend_from_slice(b"]}");
    out
}

fn encode_event(out: &mut Vec<u8>, e: &RowEvent) {
    out.extend_from_slice(b"{\"op\":");
    write_str(out, e.op.as_str(), true);
    if !e.table.is_empty() {
        out.extend_from_slice(b",\"table\":");
        write_str(out, &e.table, true);
    }
    if e.new_rowid != 0 {
        out.extend_from_slice(b",\"new_row_id\":");
        write_i64(out, e.new_rowid);
    }
    if e.old_rowid != 0 {
        out.extend_from_slice(b",\"old_row_id\":");
        write_i64(out, e.old_rowid);
    }
    let mut error = e.error.clone();
    if error.is_none() {
        let check = |row: &Option<Vec<Value>>, which: &str| match (row, &e.columns) {
            (Some(r), Some(c)) if r.len() != c.len() => {
                Some(format!("mismatched column names and {which} CDC row column count"))
            }
            _ => None,
        };
        error = check(&e.before, "old").or_else(|| check(&e.after, "new"));
    }
    if error.is_none()
        && let Some(cols) = &e.columns
    {
        for (key, row) in [("before", &e.before), ("after", &e.after)] {
            if let Some(row) = row {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":{");
                let mut pairs: Vec<(&String, &Value)> = cols.iter().zip(row).collect();
                pairs.sort_by(|a, b| a.0.cmp(b.0));
                for (n, (c, v)) in pairs.into_iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    write_str(out, c, true);
                    out.push(b':');
                    match v {
                        Value::Null => out.extend_from_slice(b"null"),
                        Value::Integer(i) => write_i64(out, *i),
                        Value::Real(f) => write_f64(out, *f),
                        Value::Text(s) => write_str(out, s, true),
                        Value::Blob(b) => write_base64(out, b),
                    }
                }
                out.push(b'}');
            }
        }
    }
    if let Some(err) = &error {
        out.extend_from_slice(b",\"error\":");
        write_str(out, err, true);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rq_db::capture::Op;

    fn queue(dir: &Path, max_bytes: u64) -> Arc<CdcQueue> {
        CdcQueue::open(
            QueueConfig {
                dir: dir.to_path_buf(),
                max_bytes,
            },
            Arc::new(Stats::default()),
        )
        .unwrap()
    }

    fn msgs(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, format!("{{\"index\":{i}}}").into_bytes())).collect()
    }

    #[test]
    fn messages_are_kept_in_order_read_back_and_pruned() {
        let d = tempfile::tempdir().unwrap();
        let q = queue(d.path(), 1 << 30);
        q.append(&msgs(1..=5)).unwrap();
        q.append(&msgs(3..=7)).unwrap();
        let got = q.read_after(0, 3).unwrap();
        assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 2, 3]);
        let got = q.read_after(3, 100).unwrap();
        assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), [4, 5, 6, 7]);
        assert_eq!(got[0].1, b"{\"index\":4}");
        q.set_hwm(4).unwrap();
        drop(q);
        // Reopened: the mark and what is above it survive; what was appended is not again.
        let q = queue(d.path(), 1 << 30);
        assert_eq!(q.hwm(), 4);
        q.append(&msgs(6..=8)).unwrap();
        let got = q.read_after(q.hwm(), 100).unwrap();
        assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), [5, 6, 7, 8]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_segments_below_the_mark_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let q = queue(d.path(), 1 << 30);
        let big = vec![b'x'; 3 << 20];
        for i in 1..=8u64 {
            q.append(&[(i, big.clone())]).unwrap();
        }
        let files = || {
            std::fs::read_dir(d.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cdc"))
                .count()
        };
        assert!(files() >= 3, "segments roll over");
        q.set_hwm(6).unwrap();
        assert!(files() < 3);
        assert_eq!(q.read_after(6, 10).unwrap().len(), 2);
        drop(q);
        // Half a record at the end of the newest segment, as a crash mid-write leaves.
        let newest = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "cdc"))
            .max()
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&newest).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let q = queue(d.path(), 1 << 30);
        q.append(&[(9, b"nine".to_vec())]).unwrap();
        let got = q.read_after(6, 10).unwrap();
        assert_eq!(got.iter().map(|m| m.0).collect::<Vec<_>>(), [7, 8, 9]);
    }

    #[test]
    fn past_its_bound_the_queue_drops_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let q = queue(d.path(), 100);
        q.append(&msgs(1..=20)).unwrap();
        let kept = q.read_after(0, 100).unwrap().len() as i64;
        assert!(kept > 0 && kept < 20, "{kept}");
        assert_eq!(q.stats.cdc.get("dropped_fifo_full"), 20 - kept);
    }

    #[test]
    fn events_are_encoded_as_rqlite_encodes_them() {
        let cols: Arc<[String]> = ["id", "name", "data", "score"].iter().map(|s| s.to_string()).collect();
        let ev = |op, old, new, before, after| RowEvent {
            op,
            table: Arc::from("foo"),
            old_rowid: old,
            new_rowid: new,
            before,
            after,
            columns: Some(cols.clone()),
            error: None,
        };
        let row = |name: &str| {
            Some(vec![
                Value::Integer(1),
                Value::Text(name.into()),
                Value::Blob(vec![1, 2, 3]),
                Value::Real(3.0),
            ])
        };
        let events = [
            ev(Op::Insert, 0, 1, None, row("fiona")),
            ev(Op::Update, 1, 1, row("fiona"), row("<b>")),
            ev(Op::Delete, 1, 0, row("<b>"), None),
        ];
        let got = String::from_utf8(encode_message(4, 1753370000123, &events)).unwrap();
        assert_eq!(
            got,
            concat!(
                r#"{"index":4,"commit_timestamp":1753370000123,"events":["#,
                r#"{"op":"INSERT","table":"foo","new_row_id":1,"after":{"data":"AQID","id":1,"name":"fiona","score":3}},"#,
                r#"{"op":"UPDATE","table":"foo","new_row_id":1,"old_row_id":1,"before":{"data":"AQID","id":1,"name":"fiona","score":3},"after":{"data":"AQID","id":1,"name":"\u003cb\u003e","score":3}},"#,
                r#"{"op":"DELETE","table":"foo","old_row_id":1,"before":{"data":"AQID","id":1,"name":"\u003cb\u003e","score":3}}]}"#
            )
        );
        let mut short = ev(Op::Insert, 0, 2, None, Some(vec![Value::Integer(2)]));
        assert!(
            String::from_utf8(encode_message(5, 1, std::slice::from_ref(&short)))
                .unwrap()
                .contains(r#""new_row_id":2,"error":"mismatched column names and new CDC row column count"}"#)
        );
        short.columns = None;
        short.after = None;
        assert_eq!(
            String::from_utf8(encode_message(5, 1, &[short])).unwrap(),
            r#"{"index":5,"commit_timestamp":1,"events":[{"op":"INSERT","table":"foo","new_row_id":2}]}"#
        );
    }
}
