//! Instructions a node executes per request, counted by valgrind's callgrind (`--instructions`).
//!
//! Unlike CPU time, they hardly depend on what else the machine is doing: the same binary
//! serving the same requests executes nearly the same instructions, so two builds compare to
//! within a percent on a machine whose CPU time per request drifts by ten. They count the
//! node's own code and its libraries (SQLite, libc), not the kernel's work for it (system
//! calls, the network stack, fsync), and a node runs tens of times slower under callgrind, so
//! its request rate and latency then mean nothing.
//!
//! A node starts with instrumentation off; a workload turns it on for its measured part only,
//! then has callgrind write its counts (one file per dump, named by the node's process id).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Callgrind's dumps of a node go to the temporary directory, named after this and the
/// node's process id.
const DUMP_NAME: &str = "rqbench-callgrind";

/// The file name callgrind's dumps of process `pid` start with.
fn file_prefix(pid: u32) -> String {
    format!("{DUMP_NAME}.{pid}")
}

/// valgrind's arguments (before the program) for a node whose instructions are counted.
pub fn valgrind_args() -> Vec<String> {
    let out = std::env::temp_dir().join(format!("{DUMP_NAME}.%p"));
    vec![
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

/// Fails unless valgrind's callgrind can be run.
pub fn check_available() -> anyhow::Result<()> {
    let ok = Command::new("callgrind_control")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        bail!("--instructions needs valgrind (callgrind_control was not found)");
    }
    Ok(())
}

fn control(pid: u32, arg: &str) -> anyhow::Result<()> {
    let out = Command::new("callgrind_control")
        .arg(arg)
        .arg(pid.to_string())
        .output()
        .context("cannot run callgrind_control")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {arg} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Starts counting the instructions of node `pid` from zero.
pub fn start(pid: u32) -> anyhow::Result<()> {
    remove_counts(pid);
    control(pid, "--zero")?;
    control(pid, "--instr=on")
}

/// Stops counting and returns the instructions node `pid` executed since `start`.
pub fn stop(pid: u32) -> anyhow::Result<u64> {
    control(pid, "--instr=off")?;
    control(pid, "--dump")?;
    let mut total = 0;
    for path in dumps(pid) {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        total += total_of(&text).with_context(|| format!("no totals in {}", path.display()))?;
    }
    Ok(total)
}

/// Removes the dumps of process `pid`.
pub fn remove_counts(pid: u32) {
    for path in dumps(pid) {
        let _ = std::fs::remove_file(path);
    }
}

fn dumps(pid: u32) -> Vec<PathBuf> {
    let prefix = file_prefix(pid);
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == prefix || n.strip_prefix(&prefix).is_some_and(|r| r.starts_with('.')))
        })
        .collect()
}

/// The instruction count of one callgrind dump: its `totals:` line (older versions write
/// `summary:`).
fn total_of(dump: &str) -> Option<u64> {
    let line = |key: &str| {
        dump.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    line("totals:").or_else(|| line("summary:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_s_total_is_its_totals_line() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\npid: 42\nevents: Ir\nsummary: 7\nfn=(1) main\n3 4\ntotals: 192598682\n";
        assert_eq!(total_of(dump), Some(192_598_682));
        assert_eq!(total_of("events: Ir\nsummary: 12\n"), Some(12));
        assert_eq!(total_of("events: Ir\n"), None);
    }

    #[test]
    fn dumps_are_named_by_process_id() {
        let args = valgrind_args();
        assert!(args[2].ends_with("rqbench-callgrind.%p"), "{args:?}");
        let dir = std::env::temp_dir();
        let mine = dir.join("rqbench-callgrind.399999999.1");
        let other = dir.join("rqbench-callgrind.3999999991.1");
        std::fs::write(&mine, "totals: 5\n").unwrap();
        std::fs::write(&other, "totals: 9\n").unwrap();
        assert_eq!(dumps(399_999_999), vec![mine.clone()]);
        remove_counts(399_999_999);
        remove_counts(3_999_999_991);
        assert!(!mine.exists() && !other.exists());
    }
}
