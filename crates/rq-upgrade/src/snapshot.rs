//! rqlite's snapshots: the newest one's index, term and cluster configuration, and the SQLite
//! database it holds, from each layout rqlite has used.
//!
//! - v7 `snapshots/<id>/`: `meta.json` (with a CRC-64/ECMA of `state.bin`) and `state.bin`, a
//!   16-byte header (a marker and the gzip's length, little-endian) before a gzipped database.
//! - v8/v9 `rsnapshots/<id>/meta.json`, with the database beside it as `rsnapshots/<id>.db`
//!   (plus `<id>.db-wal` when a crash came between writing and checkpointing it).
//! - v10 `wsnapshots/<id>/`: `meta.json`, and a full `data.db` or incremental `*.wal` files, each
//!   with a `.crc32` sidecar (JSON, CRC-32C); the database is the newest full snapshot's with
//!   every later WAL checkpointed into it in order. A directory in the middle of a
//!   consolidation (`REAP_PLAN`) is refused.
//!
//! Snapshots are ordered by (term, index, id); directories ending in `.tmp` are unfinished.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::raft_db::{Server, Suffrage};

pub(crate) const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
const CRC64_ECMA: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("i/o on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(s: impl Into<String>) -> SnapshotError {
    SnapshotError::Invalid(s.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetaJson {
    #[serde(rename = "ID")]
    id: String,
    index: u64,
    term: u64,
    #[serde(default)]
    configuration: ConfigJson,
    #[serde(default)]
    configuration_index: u64,
    #[serde(default, rename = "CRC")]
    crc: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ConfigJson {
    #[serde(default)]
    servers: Option<Vec<ServerJson>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServerJson {
    #[serde(default)]
    suffrage: u64,
    #[serde(rename = "ID")]
    id: String,
    address: String,
}

/// The newest snapshot of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub index: u64,
    pub term: u64,
    pub servers: Vec<Server>,
    pub configuration_index: u64,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// v7: `state.bin`, and the CRC-64 its meta gives.
    V7 { state: PathBuf, crc: Option<String> },
    /// v8/v9: the database file, and a WAL left beside it.
    V8 { db: PathBuf, wal: Option<PathBuf> },
    /// v10: the newest full snapshot's database and the WALs after it, in order.
    V10 { db: PathBuf, wals: Vec<PathBuf> },
}

fn read_meta(path: &Path) -> Result<MetaJson, SnapshotError> {
    let text = std::fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&text).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

fn servers(c: ConfigJson) -> Result<Vec<Server>, SnapshotError> {
    c.servers
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            Ok(Server {
                suffrage: match s.suffrage {
                    0 => Suffrage::Voter,
                    1 => Suffrage::Nonvoter,
                    2 => Suffrage::Staging,
                    n => return Err(invalid(format!("unknown suffrage {n}"))),
                },
                id: s.id,
                address: s.address,
            })
        })
        .collect()
}

/// Snapshot directories under `root` (not `.tmp`), with their metas, oldest first.
fn catalog(root: &Path) -> Result<Vec<(PathBuf, MetaJson)>, SnapshotError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).map_err(io(root))? {
        let e = e.map_err(io(root))?;
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !path.is_dir() || name.ends_with(".tmp") {
            continue;
        }
        let meta_path = path.join("meta.json");
        if !meta_path.exists() {
            continue;
        }
        out.push((path, read_meta(&meta_path)?));
    }
    out.sort_by(|a, b| (a.1.term, a.1.index, &a.1.id).cmp(&(b.1.term, b.1.index, &b.1.id)));
    Ok(out)
}

/// The newest snapshot in `dir`, if it has one.
pub fn newest(dir: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    if dir.join("wsnapshots").is_dir() {
        return newest_v10(&dir.join("wsnapshots"));
    }
    if dir.join("rsnapshots").is_dir() {
        let root = dir.join("rsnapshots");
        let Some((path, meta)) = catalog(&root)?.into_iter().rev().find(|(p, _)| {
            let db = p.with_extension("db");
            db.exists()
        }) else {
            return Ok(None);
        };
        let db = path.with_extension("db");
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let kind = Kind::V8 {
            wal: wal.exists().then_some(wal),
            db,
        };
        return Snapshot::of(meta, kind).map(Some);
    }
    if dir.join("snapshots").is_dir() {
        let Some((path, meta)) = catalog(&dir.join("snapshots"))?
            .into_iter()
            .rev()
            .find(|(p, _)| p.join("state.bin").exists())
        else {
            return Ok(None);
        };
        let kind = Kind::V7 {
            state: path.join("state.bin"),
            crc: meta.crc.clone(),
        };
        return Snapshot::of(meta, kind).map(Some);
    }
    Ok(None)
}

/// A v10 sidecar's checksum of `file`, checked.
fn check_crc(file: &Path) -> Result<(), SnapshotError> {
    let side = PathBuf::from(format!("{}.crc32", file.display()));
    let text = std::fs::read(&side).map_err(io(&side))?;
    #[derive(Deserialize)]
    struct Sidecar {
        crc: String,
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        disabled: bool,
    }
    let s: Sidecar = serde_json::from_slice(&text).map_err(|e| invalid(format!("{}: {e}", side.display())))?;
    if s.disabled {
        return Ok(());
    }
    if s.kind != "castagnoli" {
        return Err(invalid(format!("{}: checksum type {}", side.display(), s.kind)));
    }
    let want = u32::from_str_radix(&s.crc, 16).map_err(|e| invalid(format!("{}: {e}", side.display())))?;
    let got = CRC32C.checksum(&std::fs::read(file).map_err(io(file))?);
    if got != want {
        return Err(invalid(format!(
            "{} does not match its checksum ({got:08x}, not {want:08x})",
            file.display()
        )));
    }
    Ok(())
}

fn sorted_wals(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut wals: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    wals.sort();
    Ok(wals)
}

fn newest_v10(root: &Path) -> Result<Option<Snapshot>, SnapshotError> {
    if root.join("REAP_PLAN").exists() {
        return Err(invalid(format!(
            "{} is in the middle of consolidating snapshots (REAP_PLAN); start rqlite v10 on it once to finish that",
            root.display()
        )));
    }
    let all = catalog(root)?;
    if all.is_empty() {
        return Ok(None);
    }
    let Some(full) = all.iter().rposition(|(p, _)| p.join("data.db").exists()) else {
        return Err(invalid(format!("{} has no full snapshot", root.display())));
    };
    let db = all[full].0.join("data.db");
    check_crc(&db)?;
    let mut wals = Vec::new();
    for (dir, _) in &all[full..] {
        for w in sorted_wals(dir)? {
            check_crc(&w)?;
            wals.push(w);
        }
    }
    let (_, meta) = all.into_iter().next_back().expect("not empty");
    Snapshot::of(meta, Kind::V10 { db, wals }).map(Some)
}

/// Checkpoints `wal` into the WAL-mode database `db` with SQLite itself.
fn checkpoint(db: &Path, wal: &Path) -> Result<(), SnapshotError> {
    let beside = PathBuf::from(format!("{}-wal", db.display()));
    std::fs::copy(wal, &beside).map_err(io(wal))?;
    let c = rusqlite::Connection::open(db)?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    drop(c);
    let _ = std::fs::remove_file(&beside);
    let _ = std::fs::remove_file(format!("{}-shm", db.display()));
    Ok(())
}

impl Snapshot {
    fn of(meta: MetaJson, kind: Kind) -> Result<Snapshot, SnapshotError> {
        Ok(Snapshot {
            id: meta.id,
            index: meta.index,
            term: meta.term,
            servers: servers(meta.configuration)?,
            configuration_index: meta.configuration_index,
            kind,
        })
    }

    /// Writes the snapshot's database to `out`, checking what the format lets one check.
    pub fn write_database(&self, out: &Path) -> Result<(), SnapshotError> {
        match &self.kind {
            Kind::V7 { state, crc } => {
                let bytes = std::fs::read(state).map_err(io(state))?;
                if let Some(c) = crc {
                    use base64::Engine;
                    let want = base64::engine::general_purpose::STANDARD
                        .decode(c)
                        .map_err(|e| invalid(format!("{}: CRC {e}", state.display())))?;
                    let got = CRC64_ECMA.checksum(&bytes).to_be_bytes();
                    if want != got {
                        return Err(invalid(format!("{} does not match its CRC", state.display())));
                    }
                }
                let head = bytes
                    .get(..16)
                    .ok_or_else(|| invalid("state.bin is shorter than its header"))?;
                let marker = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
                let n = u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")) as usize;
                if marker != u64::MAX {
                    return Err(invalid("state.bin is not compressed; rqlite v7 never wrote that"));
                }
                let mut db = Vec::new();
                if bytes.len() > 16 {
                    let gz = bytes
                        .get(16..16 + n)
                        .ok_or_else(|| invalid("state.bin is shorter than it says"))?;
                    flate2::read::GzDecoder::new(gz)
                        .read_to_end(&mut db)
                        .map_err(io(state))?;
                }
                std::fs::write(out, &db).map_err(io(out))?;
            }
            Kind::V8 { db, wal } => {
                std::fs::copy(db, out).map_err(io(db))?;
                if let Some(w) = wal {
                    checkpoint(out, w)?;
                }
            }
            Kind::V10 { db, wals } => {
                std::fs::copy(db, out).map_err(io(db))?;
                for w in wals {
                    checkpoint(out, w)?;
                }
            }
        }
        let empty = std::fs::metadata(out).map_err(io(out))?.len() == 0;
        let c = rusqlite::Connection::open(out)?;
        if empty {
            // A database nothing was ever written to is an empty file; give it a header, so
            // that it is a database file like any other.
            c.execute_batch("CREATE TABLE rqlite_upgrade_empty(x); DROP TABLE rqlite_upgrade_empty;")?;
        }
        let ok: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(invalid(format!("snapshot {}: integrity check: {ok}", self.id)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(dir: &Path, id: &str, index: u64, term: u64, extra: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let json = format!(
            r#"{{"Version":1,"ID":"{id}","Index":{index},"Term":{term},"Peers":null,"Configuration":{{"Servers":[{{"Suffrage":0,"ID":"1","Address":"localhost:4002"}},{{"Suffrage":1,"ID":"r","Address":"localhost:4012"}}]}},"ConfigurationIndex":3,"Size":0{extra}}}"#
        );
        std::fs::write(dir.join("meta.json"), json).unwrap();
    }

    /// A WAL-mode database with `rows` rows, and the WAL holding `more` rows written after it.
    fn db_and_wal(dir: &Path, rows: i64, more: i64) -> (PathBuf, PathBuf) {
        let db = dir.join("src.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE foo(x);")
            .unwrap();
        for i in 0..rows {
            c.execute("INSERT INTO foo VALUES(?1)", [i]).unwrap();
        }
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let base = dir.join("base.db");
        std::fs::copy(&db, &base).unwrap();
        for i in 0..more {
            c.execute("INSERT INTO foo VALUES(?1)", [rows + i]).unwrap();
        }
        let wal = dir.join("frames.wal");
        std::fs::copy(format!("{}-wal", db.display()), &wal).unwrap();
        (base, wal)
    }

    fn count(db: &Path) -> i64 {
        rusqlite::Connection::open(db)
            .unwrap()
            .query_row("SELECT count(*) FROM foo", [], |r| r.get(0))
            .unwrap()
    }

    fn sidecar(file: &Path) {
        let crc = CRC32C.checksum(&std::fs::read(file).unwrap());
        std::fs::write(
            format!("{}.crc32", file.display()),
            format!(r#"{{"crc":"{crc:08x}","type":"castagnoli"}}"#),
        )
        .unwrap();
    }

    #[test]
    fn v10_a_full_snapshot_and_the_incremental_ones_after_it_make_the_database() {
        let d = tempfile::tempdir().unwrap();
        let (base, wal) = db_and_wal(d.path(), 5, 3);
        let root = d.path().join("data/wsnapshots");
        // An older full snapshot that a newer full one supersedes, the newer, and an increment.
        let old = root.join("1-5-100");
        meta(&old, "1-5-100", 5, 1, "");
        std::fs::write(old.join("data.db"), b"SQLite format 3\0stale").unwrap();
        sidecar(&old.join("data.db"));
        let full = root.join("2-9-200");
        meta(&full, "2-9-200", 9, 2, "");
        std::fs::copy(&base, full.join("data.db")).unwrap();
        sidecar(&full.join("data.db"));
        let inc = root.join("2-12-300");
        meta(&inc, "2-12-300", 12, 2, "");
        std::fs::copy(&wal, inc.join("00000000000000000001-000001.wal")).unwrap();
        sidecar(&inc.join("00000000000000000001-000001.wal"));
        std::fs::create_dir_all(root.join("2-13-400.tmp")).unwrap();
        let s = newest(&d.path().join("data")).unwrap().unwrap();
        assert_eq!(
            (s.id.as_str(), s.index, s.term, s.configuration_index),
            ("2-12-300", 12, 2, 3)
        );
        assert_eq!(s.servers[1].suffrage, Suffrage::Nonvoter);
        let out = d.path().join("out.db");
        s.write_database(&out).unwrap();
        assert_eq!(count(&out), 8);

        // A damaged WAL fails its checksum; a consolidation under way is refused.
        let w = inc.join("00000000000000000001-000001.wal");
        let mut bytes = std::fs::read(&w).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&w, bytes).unwrap();
        assert!(
            newest(&d.path().join("data"))
                .unwrap_err()
                .to_string()
                .contains("checksum")
        );
        std::fs::write(root.join("REAP_PLAN"), "{}").unwrap();
        assert!(
            newest(&d.path().join("data"))
                .unwrap_err()
                .to_string()
                .contains("REAP_PLAN")
        );
    }

    #[test]
    fn v8_and_v9_keep_the_database_beside_the_meta_and_perhaps_a_wal() {
        let d = tempfile::tempdir().unwrap();
        let (base, wal) = db_and_wal(d.path(), 4, 2);
        let root = d.path().join("data/rsnapshots");
        meta(&root.join("2-7-100"), "2-7-100", 7, 2, "");
        std::fs::copy(&base, root.join("2-7-100.db")).unwrap();
        std::fs::copy(&wal, root.join("2-7-100.db-wal")).unwrap();
        let s = newest(&d.path().join("data")).unwrap().unwrap();
        let out = d.path().join("out.db");
        s.write_database(&out).unwrap();
        assert_eq!((s.index, count(&out)), (7, 6));
    }

    #[test]
    fn v7_state_bin_is_a_gzipped_database_behind_a_header_checked_by_its_crc() {
        let d = tempfile::tempdir().unwrap();
        let (base, _) = db_and_wal(d.path(), 3, 0);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &std::fs::read(&base).unwrap()).unwrap();
        let gz = gz.finish().unwrap();
        let mut state = u64::MAX.to_le_bytes().to_vec();
        state.extend_from_slice(&(gz.len() as u64).to_le_bytes());
        state.extend_from_slice(&gz);
        use base64::Engine;
        let crc = base64::engine::general_purpose::STANDARD.encode(CRC64_ECMA.checksum(&state).to_be_bytes());
        let snap = d.path().join("data/snapshots/2-22-1");
        meta(&snap, "2-22-1", 22, 2, &format!(r#","CRC":"{crc}""#));
        std::fs::write(snap.join("state.bin"), &state).unwrap();
        let s = newest(&d.path().join("data")).unwrap().unwrap();
        let out = d.path().join("out.db");
        s.write_database(&out).unwrap();
        assert_eq!(count(&out), 3);
        let mut bad = state.clone();
        bad[20] ^= 1;
        std::fs::write(snap.join("state.bin"), &bad).unwrap();
        assert!(
            newest(&d.path().join("data"))
                .unwrap()
                .unwrap()
                .write_database(&out)
                .is_err()
        );
    }
}
