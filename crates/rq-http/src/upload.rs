//! Request bodies that may be larger than memory (database files for `/db/load` and `/boot`),
//! streamed to a temporary file in the data directory.

use std::path::Path;

use axum::body::Body;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest database file accepted in one upload.
pub const MAX_UPLOAD: u64 = 64 * 1024 * 1024 * 1024;

/// An uploaded body on disk; the file is removed when this is dropped.
pub struct Upload {
    file: tempfile::NamedTempFile,
    head: Vec<u8>,
}

impl Upload {
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether the body starts as a SQLite database file does (rqlite's test: the first 13
    /// bytes, and more after them).
    pub fn is_sqlite(&self) -> bool {
        self.head.len() > 13 && self.head.starts_with(b"SQLite format")
    }

    /// The body as SQL text, if it is at most `limit` bytes of UTF-8 with no NUL byte (SQLite
    /// would stop reading a statement at a NUL, and silently leave the rest of a dump unrun).
    pub async fn read_text(&self, limit: usize) -> Result<String, TextError> {
        let io = |e: std::io::Error| TextError::Io(e.to_string());
        let mut f = tokio::fs::File::open(self.path()).await.map_err(io)?;
        let len = f.metadata().await.map_err(io)?.len();
        if len > limit as u64 {
            return Err(TextError::TooLarge(format!("SQL text larger than {limit} bytes")));
        }
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf).await.map_err(io)?;
        let text = String::from_utf8(buf).map_err(|_| TextError::NotText("SQL text is not valid UTF-8".into()))?;
        if text.contains('\0') {
            return Err(TextError::NotText("SQL text contains a NUL byte".into()));
        }
        Ok(text)
    }
}

/// Why an upload is not SQL text that can be run.
#[derive(Debug)]
pub enum TextError {
    TooLarge(String),
    NotText(String),
    Io(String),
}

/// Streams `body` into a new scratch file of the store's.
pub async fn to_temp_file(body: Body, store: &rq_store::Store) -> Result<Upload, String> {
    let named = store
        .scratch_file()
        .map_err(|e| format!("cannot create temporary file: {e}"))?;
    let mut out = tokio::fs::File::from_std(named.reopen().map_err(|e| e.to_string())?);
    let mut stream = body.into_data_stream();
    let mut head = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading body: {e}"))?;
        total += chunk.len() as u64;
        if total > MAX_UPLOAD {
            return Err(format!("body larger than {MAX_UPLOAD} bytes"));
        }
        if head.len() < 16 {
            head.extend_from_slice(&chunk[..chunk.len().min(16 - head.len())]);
        }
        out.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    out.flush().await.map_err(|e| e.to_string())?;
    Ok(Upload { file: named, head })
}
