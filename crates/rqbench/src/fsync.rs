//! The raw fsync rate of a directory: sequential 4 KiB appends, each followed by
//! `fdatasync`, the call the Raft log store makes on every commit.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Appends-with-sync per second in `dir`, measured for `for_how_long`.
pub fn rate(dir: &Path, for_how_long: Duration) -> std::io::Result<f64> {
    let path = dir.join(".rqbench-fsync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < for_how_long {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(n as f64 / secs)
}
