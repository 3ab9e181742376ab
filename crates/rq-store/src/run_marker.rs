//! Deciding at start whether the database file left by the last run can be trusted.
//!
//! SQLite runs with `synchronous=OFF`: a commit reaches the operating system, not the disk.
//! That is safe when only the process dies (kill -9, a panic): the OS still writes what it
//! holds, so the database is exactly as the last commit left it, applied index included. It
//! is not safe when the machine loses power or the kernel crashes: the file may then hold a
//! torn mix of pages. The Raft log, fsynced on every append, is what makes writes durable.
//!
//! So the node records, in `run.json`, the kernel's boot id when it starts and `clean: true`
//! when it stops cleanly. At the next start the database is trusted if the last run stopped
//! cleanly or the kernel is the same one (only the process died). Otherwise it is rebuilt:
//! from the newest snapshot (checksummed, fsynced) and the log after it, or, when there is no
//! snapshot, from the whole log, which is never purged without one.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

const FILE: &str = "run.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Run {
    boot_id: String,
    clean: bool,
}

/// The running kernel's boot id, unique per boot.
fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn write(dir: &Path, run: &Run) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(run).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))?;
    fs::File::open(dir)?.sync_all()
}

/// Whether the database left by the last run is trusted. A directory without a record (a new
/// node) has nothing to distrust.
pub fn trusted(dir: &Path) -> std::io::Result<bool> {
    let now = boot_id();
    match fs::read(dir.join(FILE)) {
        Ok(bytes) => Ok(match serde_json::from_slice::<Run>(&bytes) {
            Ok(last) => last.clean || (!now.is_empty() && last.boot_id == now),
            Err(_) => false,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Records this run's start. Called once the database is known good (trusted, or rebuilt),
/// so a crash while rebuilding leaves the old record, and the next start rebuilds again.
pub fn begin(dir: &Path) -> std::io::Result<()> {
    write(
        dir,
        &Run {
            boot_id: boot_id(),
            clean: false,
        },
    )
}

/// Records a clean stop: the database was checkpointed and closed.
pub fn end(dir: &Path) -> std::io::Result<()> {
    write(
        dir,
        &Run {
            boot_id: boot_id(),
            clean: true,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_follows_clean_stops_and_boots() {
        let d = tempfile::tempdir().unwrap();
        assert!(trusted(d.path()).unwrap(), "a new directory");
        begin(d.path()).unwrap();
        assert!(trusted(d.path()).unwrap(), "the process died, the kernel did not");
        // A record from another boot that did not stop cleanly: not trusted.
        write(
            d.path(),
            &Run {
                boot_id: "another-boot".into(),
                clean: false,
            },
        )
        .unwrap();
        assert!(!trusted(d.path()).unwrap());
        // A clean stop is trusted whatever happened since.
        end(d.path()).unwrap();
        let mut r: Run = serde_json::from_slice(&fs::read(d.path().join(FILE)).unwrap()).unwrap();
        r.boot_id = "another-boot".into();
        write(d.path(), &r).unwrap();
        assert!(trusted(d.path()).unwrap());
    }
}
