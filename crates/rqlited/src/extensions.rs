//! `-extensions-path`: the SQLite extensions every connection loads, gathered as rqlite gathers
//! them into `<data>/extensions/` (emptied at every start) from a comma-separated list of single
//! files, directories (their files, not subdirectories), zip files and tar.gz files (flat: an
//! archive with subdirectories is refused).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

/// Fills `dir` from `paths` and returns the files in it, sorted.
pub fn gather(paths: &[String], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("failed to create extensions store {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create extensions store {}", dir.display()))?;
    for p in paths {
        let path = Path::new(p);
        if path.is_dir() {
            for f in files_in(path).context("failed to load extensions from directory")? {
                copy(&f, dir).context("failed to load extensions from directory")?;
            }
        } else if magic(path, b"PK\x03\x04") {
            unzip(path, dir).context("failed to load extensions from zip file")?;
        } else if magic(path, &[0x1f, 0x8b]) {
            untar(path, dir).context("failed to load extensions from tar.gz file")?;
        } else {
            copy(path, dir).context("failed to load extension from file")?;
        }
    }
    files_in(dir)
}

/// The regular files in `dir` whose names do not start with a dot, sorted.
fn files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_file() && !name.starts_with('.') {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

fn magic(path: &Path, prefix: &[u8]) -> bool {
    let mut head = vec![0u8; prefix.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == prefix
}

fn copy(src: &Path, dir: &Path) -> anyhow::Result<()> {
    let name = src
        .file_name()
        .ok_or_else(|| anyhow!("{} names no file", src.display()))?;
    std::fs::copy(src, dir.join(name)).with_context(|| format!("copy {}", src.display()))?;
    Ok(())
}

/// Only a plain file name: archives are flat, and nothing may land outside `dir`.
fn flat_name(name: &str) -> anyhow::Result<&str> {
    let trimmed = name.trim_start_matches("./");
    if trimmed.is_empty() || trimmed.contains('/') || trimmed == ".." || trimmed.contains('\\') {
        bail!("archive entry {name:?} is in a subdirectory");
    }
    Ok(trimmed)
}

fn unzip(path: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path)?)?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i)?;
        if entry.is_dir() {
            bail!("zip file contains subdirectories");
        }
        let raw = entry.name()?.to_string();
        let name = flat_name(&raw)
            .map_err(|_| anyhow!("zip file contains subdirectories"))?
            .to_string();
        let mut out = std::fs::File::create(dir.join(name))?;
        std::io::copy(&mut entry, &mut out)?;
    }
    Ok(())
}

fn untar(path: &Path, dir: &Path) -> anyhow::Result<()> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(path)?);
    let mut archive = tar::Archive::new(gz);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            bail!("tar.gz file contains subdirectories");
        }
        if !kind.is_file() {
            continue;
        }
        let name = entry.path()?.to_string_lossy().into_owned();
        let name = flat_name(&name)
            .map_err(|_| anyhow!("tar.gz file contains subdirectories"))?
            .to_string();
        let mut out = std::fs::File::create(dir.join(name))?;
        std::io::copy(&mut entry, &mut out)?;
    }
    Ok(())
}
