//! Building rqlite data directories from the documented formats, for tests.

use std::path::Path;

use crate::bolt::{BRANCH, BUCKET_LEAF, ELEMENT, LEAF, MAGIC, META, PAGE_HEADER, VERSION, fnv1a};
use crate::command::{PbCommand, PbRequest, PbStatement, PbWithRequest};
use crate::raft_db::{Server, Suffrage};

/// A top-level bucket to write: its name, its keys and values in order, and whether it is
/// stored inline in its parent.
pub type TopBucket<'a> = (&'a [u8], Vec<(Vec<u8>, Vec<u8>)>, bool);

/// Writes a BoltDB file from the documented format, for the tests: `buckets` at the top
/// level, each either inline (small) or a tree of leaf pages under one branch page.
pub fn write_bolt(path: &Path, buckets: &[TopBucket<'_>]) {
    const PS: usize = 4096;
    let mut pages: Vec<Vec<u8>> = vec![vec![0u8; PS], vec![0u8; PS]];
    let leaf = |items: &[(Vec<u8>, Vec<u8>, u32)]| -> Vec<u8> {
        let mut body = Vec::new();
        let mut elems = Vec::new();
        let data_start = PAGE_HEADER + items.len() * ELEMENT;
        for (i, (k, v, flags)) in items.iter().enumerate() {
            let e = PAGE_HEADER + i * ELEMENT;
            let pos = data_start + body.len() - e;
            elems.extend_from_slice(&flags.to_le_bytes());
            elems.extend_from_slice(&(pos as u32).to_le_bytes());
            elems.extend_from_slice(&(k.len() as u32).to_le_bytes());
            elems.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(k);
            body.extend_from_slice(v);
        }
        let mut p = vec![0u8; PAGE_HEADER];
        p[8..10].copy_from_slice(&LEAF.to_le_bytes());
        p[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
        p.extend_from_slice(&elems);
        p.extend_from_slice(&body);
        p
    };
    let place = |pages: &mut Vec<Vec<u8>>, mut p: Vec<u8>| -> u64 {
        let id = pages.len() as u64;
        let n = p.len().div_ceil(PS).max(1);
        p[0..8].copy_from_slice(&id.to_le_bytes());
        p[12..16].copy_from_slice(&((n - 1) as u32).to_le_bytes());
        p.resize(n * PS, 0);
        for chunk in p.chunks(PS) {
            pages.push(chunk.to_vec());
        }
        id
    };
    let mut root_items = Vec::new();
    for (name, items, inline) in buckets {
        let value = if *inline {
            let mut v = vec![0u8; 16];
            let plain: Vec<_> = items.iter().map(|(k, v)| (k.clone(), v.clone(), 0)).collect();
            v.extend_from_slice(&leaf(&plain));
            v
        } else {
            // Two leaves under a branch, so the walk crosses pages.
            let half = items.len() / 2;
            let mut children = Vec::new();
            for part in [&items[..half], &items[half..]] {
                if part.is_empty() {
                    continue;
                }
                let plain: Vec<_> = part.iter().map(|(k, v)| (k.clone(), v.clone(), 0)).collect();
                let id = place(&mut pages, leaf(&plain));
                children.push((part[0].0.clone(), id));
            }
            let mut b = vec![0u8; PAGE_HEADER];
            b[8..10].copy_from_slice(&BRANCH.to_le_bytes());
            b[10..12].copy_from_slice(&(children.len() as u16).to_le_bytes());
            let mut keys = Vec::new();
            let start = PAGE_HEADER + children.len() * ELEMENT;
            for (i, (k, id)) in children.iter().enumerate() {
                let e = PAGE_HEADER + i * ELEMENT;
                b.extend_from_slice(&((start + keys.len() - e) as u32).to_le_bytes());
                b.extend_from_slice(&(k.len() as u32).to_le_bytes());
                b.extend_from_slice(&id.to_le_bytes());
                keys.extend_from_slice(k);
            }
            b.extend_from_slice(&keys);
            let id = place(&mut pages, b);
            let mut v = id.to_le_bytes().to_vec();
            v.extend_from_slice(&[0u8; 8]);
            v
        };
        root_items.push((name.to_vec(), value, BUCKET_LEAF));
    }
    let root = place(&mut pages, leaf(&root_items));
    let high_water = pages.len() as u64;
    for (i, txid) in [(0usize, 1u64), (1, 2)] {
        let p = &mut pages[i];
        p[0..8].copy_from_slice(&(i as u64).to_le_bytes());
        p[8..10].copy_from_slice(&META.to_le_bytes());
        let m = PAGE_HEADER;
        p[m..m + 4].copy_from_slice(&MAGIC.to_le_bytes());
        p[m + 4..m + 8].copy_from_slice(&VERSION.to_le_bytes());
        p[m + 8..m + 12].copy_from_slice(&(PS as u32).to_le_bytes());
        p[m + 16..m + 24].copy_from_slice(&root.to_le_bytes());
        p[m + 32..m + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        p[m + 40..m + 48].copy_from_slice(&high_water.to_le_bytes());
        p[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
        let sum = fnv1a(&p[m..m + 56]);
        p[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
    }
    std::fs::write(path, pages.concat()).unwrap();
}

/// A msgpack raw string (the old spec's only string type, as go-msgpack writes bytes).
pub fn raw(out: &mut Vec<u8>, b: &[u8]) {
    match b.len() {
        n if n < 32 => out.push(0xa0 | n as u8),
        n if n < 65536 => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0xdb);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(b);
}

/// A `raft.Log` as go-msgpack writes it (raw strings, keys sorted by name).
pub fn log_bytes(index: u64, term: u64, kind: u64, data: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![0x86];
    raw(&mut out, b"AppendedAt");
    out.push(0xc0);
    raw(&mut out, b"Data");
    match data {
        Some(d) => raw(&mut out, d),
        None => out.push(0xc0),
    }
    raw(&mut out, b"Extensions");
    out.push(0xc0);
    for (name, v) in [("Index", index), ("Term", term), ("Type", kind)] {
        raw(&mut out, name.as_bytes());
        rmpv::encode::write_value(&mut out, &rmpv::Value::from(v)).unwrap();
    }
    out
}

/// A `LogConfiguration` entry's data, as hashicorp/raft writes it.
pub fn configuration_bytes(servers: &[Server]) -> Vec<u8> {
    let mut out = vec![0x81];
    raw(&mut out, b"Servers");
    out.push(0x90 | servers.len() as u8);
    for s in servers {
        out.push(0x83);
        raw(&mut out, b"Address");
        raw(&mut out, s.address.as_bytes());
        raw(&mut out, b"ID");
        raw(&mut out, s.id.as_bytes());
        raw(&mut out, b"Suffrage");
        out.push(match s.suffrage {
            Suffrage::Voter => 0,
            Suffrage::Nonvoter => 1,
            Suffrage::Staging => 2,
        });
    }
    out
}

/// An rqlite EXECUTE command running `sqls` (compressed with gzip when `gzip` is set), as it
/// sits in a log entry's `Data`.
pub fn execute_command(sqls: &[&str], gzip: bool) -> Vec<u8> {
    use prost::Message;
    let req = PbWithRequest {
        request: Some(PbRequest {
            statements: sqls
                .iter()
                .map(|s| PbStatement {
                    sql: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        timings: false,
    };
    let mut sub = req.encode_to_vec();
    if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut e, &sub).unwrap();
        sub = e.finish().unwrap();
    }
    PbCommand {
        kind: 2,
        sub_command: sub,
        compressed: gzip,
    }
    .encode_to_vec()
}

/// Writes `<root>/<id>/meta.json` as rqlite's snapshot stores do.
pub fn snapshot_meta(root: &Path, id: &str, index: u64, term: u64, servers: &[Server], configuration_index: u64) {
    let servers: Vec<serde_json::Value> = servers
        .iter()
        .map(|s| {
            serde_json::json!({
                "Suffrage": s.suffrage as u64,
                "ID": s.id,
                "Address": s.address,
            })
        })
        .collect();
    let meta = serde_json::json!({
        "Version": 1,
        "ID": id,
        "Index": index,
        "Term": term,
        "Peers": null,
        "Configuration": {"Servers": servers},
        "ConfigurationIndex": configuration_index,
        "Size": 0,
    });
    std::fs::create_dir_all(root.join(id)).unwrap();
    std::fs::write(root.join(id).join("meta.json"), meta.to_string()).unwrap();
}

/// Writes rqlite v10's CRC-32C sidecar of `file` beside it.
pub fn crc_sidecar(file: &Path) {
    let crc = crate::snapshot::CRC32C.checksum(&std::fs::read(file).unwrap());
    std::fs::write(
        format!("{}.crc32", file.display()),
        format!(r#"{{"crc":"{crc:08x}","type":"castagnoli"}}"#),
    )
    .unwrap();
}
