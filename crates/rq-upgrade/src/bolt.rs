//! A read-only reader of BoltDB files (bbolt's format), enough to walk buckets in key order:
//! the two meta pages (the valid one with the higher transaction id wins), branch and leaf
//! pages, overflow pages, nested and inline buckets. Pages are read from the file as needed;
//! every offset is checked, so a damaged file gives an error, never a panic. Only files
//! written on a little-endian machine are read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// BoltDB's magic number.
pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;
pub(crate) const PAGE_HEADER: usize = 16;
pub(crate) const ELEMENT: usize = 16;
pub(crate) const BRANCH: u16 = 0x01;
pub(crate) const LEAF: u16 = 0x02;
pub(crate) const META: u16 = 0x04;
/// A leaf element whose value is a bucket.
pub(crate) const BUCKET_LEAF: u32 = 0x01;
/// Deepest tree walked: a sane file is far shallower.
const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a BoltDB file: {0}")]
    NotBolt(String),
    #[error("damaged BoltDB file: {0}")]
    Corrupt(String),
}

fn corrupt(what: impl Into<String>) -> BoltError {
    BoltError::Corrupt(what.into())
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BoltError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| corrupt(format!("short read at {at}")))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BoltError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| corrupt(format!("short read at {at}")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, BoltError> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
        .ok_or_else(|| corrupt(format!("short read at {at}")))
}

/// FNV-1a, 64 bits: the meta page's checksum.
pub(crate) fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Called with each key and value of a bucket; returns whether to go on.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, BoltError> + 'a;
/// As `Visit`, also told whether the value is a nested bucket.
type VisitAll<'a> = dyn FnMut(&[u8], &[u8], bool) -> Result<bool, BoltError> + 'a;

/// An open BoltDB file.
pub struct Bolt {
    file: File,
    len: u64,
    page_size: usize,
    root: u64,
}

/// Where a bucket's tree is: a page of the file, or a page image inside its parent's value.
#[derive(Debug, Clone)]
pub enum Bucket {
    Page(u64),
    Inline(Vec<u8>),
}

struct Meta {
    page_size: usize,
    root: u64,
    txid: u64,
}

fn meta(b: &[u8]) -> Result<Meta, BoltError> {
    let m = PAGE_HEADER;
    if u32_at(b, m)? != MAGIC {
        return Err(BoltError::NotBolt("bad magic".into()));
    }
    if u32_at(b, m + 4)? != VERSION {
        return Err(BoltError::NotBolt(format!("version {}", u32_at(b, m + 4)?)));
    }
    let sum = u64_at(b, m + 56)?;
    if fnv1a(&b[m..m + 56]) != sum {
        return Err(corrupt("meta page checksum"));
    }
    Ok(Meta {
        page_size: u32_at(b, m + 8)? as usize,
        root: u64_at(b, m + 16)?,
        txid: u64_at(b, m + 48)?,
    })
}

impl Bolt {
    pub fn open(path: &Path) -> Result<Bolt, BoltError> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = vec![0u8; 4096.min(len as usize)];
        file.read_exact_at(&mut head, 0)?;
        let m0 = meta(&head);
        let page_size = match &m0 {
            Ok(m) => m.page_size,
            Err(BoltError::NotBolt(e)) => return Err(BoltError::NotBolt(e.clone())),
            // A torn first meta page: find the second by probing, as bbolt does.
            Err(_) => (0..8)
                .map(|i| 1024usize << i)
                .find(|&ps| {
                    let mut b = vec![0u8; PAGE_HEADER + 64];
                    file.read_exact_at(&mut b, ps as u64).is_ok() && meta(&b).is_ok()
                })
                .ok_or_else(|| corrupt("no valid meta page"))?,
        };
        if !(512..=1 << 20).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(corrupt(format!("page size {page_size}")));
        }
        let mut m1_page = vec![0u8; PAGE_HEADER + 64];
        file.read_exact_at(&mut m1_page, page_size as u64)?;
        let m1 = meta(&m1_page);
        let best = match (m0, m1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) | (Err(_), Ok(a)) => a,
            (Err(e), Err(_)) => return Err(e),
        };
        Ok(Bolt {
            file,
            len,
            page_size,
            root: best.root,
        })
    }

    /// The bytes of page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<Vec<u8>, BoltError> {
        let at = id
            .checked_mul(self.page_size as u64)
            .filter(|&a| a + self.page_size as u64 <= self.len)
            .ok_or_else(|| corrupt(format!("page {id} is past the end of the file")))?;
        let mut b = vec![0u8; self.page_size];
        self.file.read_exact_at(&mut b, at)?;
        let overflow = u32_at(&b, 12)? as u64;
        if overflow > 0 {
            let total = (overflow + 1)
                .checked_mul(self.page_size as u64)
                .filter(|&t| at + t <= self.len)
                .ok_or_else(|| corrupt(format!("page {id} overflows the file")))?;
            b = vec![0u8; total as usize];
            self.file.read_exact_at(&mut b, at)?;
        }
        Ok(b)
    }

    /// The top-level bucket `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>, BoltError> {
        let mut found = None;
        self.walk(&Bucket::Page(self.root), 0, &mut |k, v, is_bucket| {
            if is_bucket && k == name {
                found = Some(bucket_of(v)?);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// Calls `f` with every key and value of `bucket`, in key order, until it returns false.
    /// Nested buckets are skipped.
    pub fn for_each(&self, bucket: &Bucket, f: &mut Visit<'_>) -> Result<(), BoltError> {
        self.walk(bucket, 0, &mut |k, v, is_bucket| {
            if is_bucket { Ok(true) } else { f(k, v) }
        })
        .map(|_| ())
    }

    /// The value of `key` in `bucket`.
    pub fn get(&self, bucket: &Bucket, key: &[u8]) -> Result<Option<Vec<u8>>, BoltError> {
        let mut out = None;
        self.for_each(bucket, &mut |k, v| {
            if k == key {
                out = Some(v.to_vec());
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Walks a tree; returns false once `f` asked to stop.
    fn walk(&self, bucket: &Bucket, depth: usize, f: &mut VisitAll<'_>) -> Result<bool, BoltError> {
        match bucket {
            Bucket::Inline(page) => self.walk_page(page, depth, f),
            Bucket::Page(id) => {
                let page = self.page(*id)?;
                self.walk_page(&page, depth, f)
            }
        }
    }

    fn walk_page(&self, page: &[u8], depth: usize, f: &mut VisitAll<'_>) -> Result<bool, BoltError> {
        if depth > MAX_DEPTH {
            return Err(corrupt("tree too deep"));
        }
        let flags = u16_at(page, 8)?;
        let count = u16_at(page, 10)? as usize;
        for i in 0..count {
            let e = PAGE_HEADER + i * ELEMENT;
            if flags & BRANCH != 0 {
                let child = u64_at(page, e + 8)?;
                if !self.walk(&Bucket::Page(child), depth + 1, f)? {
                    return Ok(false);
                }
            } else if flags & LEAF != 0 {
                let elem_flags = u32_at(page, e)?;
                let pos = u32_at(page, e + 4)? as usize;
                let ksize = u32_at(page, e + 8)? as usize;
                let vsize = u32_at(page, e + 12)? as usize;
                let k_at = e + pos;
                let key = page
                    .get(k_at..k_at + ksize)
                    .ok_or_else(|| corrupt("leaf key out of its page"))?;
                let value = page
                    .get(k_at + ksize..k_at + ksize + vsize)
                    .ok_or_else(|| corrupt("leaf value out of its page"))?;
                if !f(key, value, elem_flags & BUCKET_LEAF != 0)? {
                    return Ok(false);
                }
            } else if flags & META != 0 {
                return Err(corrupt("a meta page inside a tree"));
            } else {
                return Err(corrupt(format!("page kind {flags:#x} inside a tree")));
            }
        }
        Ok(true)
    }
}

/// A bucket header: the root page, or an inline page image after the 16 header bytes.
fn bucket_of(v: &[u8]) -> Result<Bucket, BoltError> {
    let root = u64_at(v, 0)?;
    if root != 0 {
        return Ok(Bucket::Page(root));
    }
    let page = v.get(16..).ok_or_else(|| corrupt("inline bucket without its page"))?;
    Ok(Bucket::Inline(page.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::write_bolt;

    #[test]
    fn buckets_inline_and_in_pages_are_walked_in_key_order() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("raft.db");
        let logs: Vec<(Vec<u8>, Vec<u8>)> = (1u64..=40)
            .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; if i == 7 { 9000 } else { 50 }]))
            .collect();
        let conf = vec![(b"CurrentTerm".to_vec(), 3u64.to_be_bytes().to_vec())];
        write_bolt(&path, &[(b"conf", conf, true), (b"logs", logs, false)]);
        let db = Bolt::open(&path).unwrap();
        let conf = db.bucket(b"conf").unwrap().unwrap();
        assert!(matches!(conf, Bucket::Inline(_)));
        assert_eq!(
            db.get(&conf, b"CurrentTerm").unwrap(),
            Some(3u64.to_be_bytes().to_vec())
        );
        let logs = db.bucket(b"logs").unwrap().unwrap();
        let mut seen = Vec::new();
        db.for_each(&logs, &mut |k, v| {
            seen.push((u64::from_be_bytes(k.try_into().unwrap()), v.len()));
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen.len(), 40);
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(seen[6], (7, 9000), "a value spilling into overflow pages");
        assert!(db.bucket(b"nope").unwrap().is_none());
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("raft.db");
        std::fs::write(&path, b"SQLite format 3\0 and not a bolt file at all, not at all.....").unwrap();
        assert!(Bolt::open(&path).is_err());
        let logs: Vec<(Vec<u8>, Vec<u8>)> = (1u64..=10).map(|i| (i.to_be_bytes().to_vec(), vec![1; 10])).collect();
        write_bolt(&path, &[(b"logs", logs, false)]);
        let mut bytes = std::fs::read(&path).unwrap();
        // Scribble over everything past the meta pages.
        for b in bytes.iter_mut().skip(8192) {
            *b = 0xAB;
        }
        std::fs::write(&path, &bytes).unwrap();
        let db = Bolt::open(&path).unwrap();
        assert!(db.bucket(b"logs").is_err());
    }
}
