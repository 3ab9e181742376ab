//! The places backups go and restores come from: S3 and S3-compatible stores and local
//! directories through `object_store`, Google Cloud Storage through its JSON API (`gcs.rs`).
//!
//! Every upload streams a file in bounded chunks and carries the Raft index of the data it
//! holds as its ID: S3 metadata `x-rqlite-auto-backup-id`, GCS metadata
//! `rqlite-auto-backup-id`, or a `METADATA.json` beside the file in a directory, as rqlite
//! stores it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions, RetryConfig,
    WriteMultipart,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{FileConfig, S3Config, StorageConfig};
use crate::gcs::Gcs;

/// The S3 metadata key of the upload's ID.
pub const S3_ID_KEY: &str = "x-rqlite-auto-backup-id";
/// Bytes sent per part of a streamed upload.
const PART_BYTES: usize = 8 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Longest one request to a store may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A configured store.
pub struct Storage {
    kind: Kind,
    timestamp: bool,
}

enum Kind {
    S3 {
        store: Arc<dyn ObjectStore>,
        key: String,
        shown: String,
    },
    File {
        store: Arc<dyn ObjectStore>,
        dir: PathBuf,
        name: String,
    },
    Gcs(Gcs),
}

/// `METADATA.json` in a backup directory.
#[derive(Serialize, Deserialize)]
struct Metadata {
    id: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    timestamp: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Storage {
    /// A store for `cfg`; `timestamp` prefixes uploaded names with the time.
    pub fn new(cfg: &StorageConfig, timestamp: bool) -> Result<Storage, String> {
        let kind = match cfg {
            StorageConfig::S3(s3) => s3_store(s3)?,
            StorageConfig::File(f) => file_store(f)?,
            StorageConfig::Gcs(g) => Kind::Gcs(Gcs::new(g)?),
        };
        Ok(Storage { kind, timestamp })
    }

    /// Where uploads go, as rqlite names it in its logs and status.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::S3 { shown, .. } => shown.clone(),
            Kind::File { dir, name, .. } => format!("dir:{}, file:{name}", dir.display()),
            Kind::Gcs(g) => g.describe(),
        }
    }

    /// The ID of the newest upload, if the store has one.
    pub async fn current_id(&self) -> Result<String, String> {
        match &self.kind {
            Kind::S3 { store, key, shown } => {
                let opts = GetOptions {
                    head: true,
                    ..Default::default()
                };
                let got = store
                    .get_opts(&ObjectPath::from(key.as_str()), opts)
                    .await
                    .map_err(|e| format!("failed to get object head for {shown}: {e}"))?;
                got.attributes
                    .get(&Attribute::Metadata(S3_ID_KEY.into()))
                    .map(|v| v.to_string())
                    .ok_or_else(|| format!("sum metadata not found for {shown}"))
            }
            Kind::File { store, .. } => match store.get(&ObjectPath::from("METADATA.json")).await {
                Err(object_store::Error::NotFound { .. }) => Ok(String::new()),
                Err(e) => Err(e.to_string()),
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(|e| e.to_string())?;
                    let md: Metadata = serde_json::from_slice(&bytes).map_err(|e| format!("METADATA.json: {e}"))?;
                    Ok(md.id)
                }
            },
            Kind::Gcs(g) => g.current_id().await,
        }
    }

    /// Streams `file`, from its start, to the store under ID `id`; the bytes sent.
    pub async fn upload(&self, file: std::fs::File, id: &str) -> Result<u64, String> {
        let file = tokio::fs::File::from_std(file);
        let len = file.metadata().await.map_err(|e| e.to_string())?.len();
        let now = SystemTime::now();
        match &self.kind {
            Kind::S3 { store, key, shown } => {
                let key = if self.timestamp {
                    timestamped(key, now)
                } else {
                    key.clone()
                };
                let attributes = Attributes::from_iter([(Attribute::Metadata(S3_ID_KEY.into()), id.to_string())]);
                stream_to(store.as_ref(), &key, attributes, file)
                    .await
                    .map_err(|e| format!("failed to upload to {shown}: {e}"))?;
            }
            Kind::File { store, dir, name } => {
                let name = if self.timestamp {
                    timestamped(name, now)
                } else {
                    name.clone()
                };
                stream_to(store.as_ref(), &name, Attributes::new(), file)
                    .await
                    .map_err(|e| format!("failed to write {}: {e}", dir.join(&name).display()))?;
                let md = Metadata {
                    id: id.to_string(),
                    timestamp: now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64),
                    name: dir.join(&name).display().to_string(),
                };
                let body = serde_json::to_vec(&md).map_err(|e| e.to_string())?;
                store
                    .put(&ObjectPath::from("METADATA.json"), body.into())
                    .await
                    .map_err(|e| format!("failed to write METADATA.json: {e}"))?;
            }
            Kind::Gcs(g) => {
                let name = if self.timestamp {
                    timestamped(g.name(), now)
                } else {
                    g.name().to_string()
                };
                g.upload(file, len, &name, id).await?;
            }
        }
        Ok(len)
    }

    /// Streams the newest upload into the file at `to`; the bytes received.
    pub async fn download(&self, to: &Path) -> Result<u64, String> {
        let mut out = tokio::fs::File::create(to).await.map_err(|e| e.to_string())?;
        let n = match &self.kind {
            Kind::S3 { store, key, shown } => {
                let got = store
                    .get(&ObjectPath::from(key.as_str()))
                    .await
                    .map_err(|e| format!("failed to download from {shown}: {e}"))?;
                let mut stream = got.into_stream();
                let mut n = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| format!("failed to download from {shown}: {e}"))?;
                    out.write_all(&chunk).await.map_err(|e| e.to_string())?;
                    n += chunk.len() as u64;
                }
                n
            }
            Kind::File { .. } => return Err("unsupported storage type".into()),
            Kind::Gcs(g) => g.download(&mut out).await?,
        };
        out.sync_all().await.map_err(|e| e.to_string())?;
        Ok(n)
    }
}

/// Sends `file` to `key` as a multipart upload of `PART_BYTES` parts, at most
/// `PARTS_IN_FLIGHT` at once, so memory stays flat whatever the file's size.
async fn stream_to(
    store: &dyn ObjectStore,
    key: &str,
    attributes: Attributes,
    mut file: tokio::fs::File,
) -> object_store::Result<()> {
    let opts = PutMultipartOptions {
        attributes,
        ..Default::default()
    };
    let upload = store.put_multipart_opts(&ObjectPath::from(key), opts).await?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                w.abort().await?;
                return Err(object_store::Error::Generic {
                    store: "upload",
                    source: Box::new(e),
                });
            }
        };
        if n == 0 {
            break;
        }
        w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        w.write(&buf[..n]);
    }
    w.finish().await?;
    Ok(())
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(10))
        .with_allow_http(true)
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: Duration::from_secs(120),
        ..Default::default()
    }
}

/// S3, or an S3-compatible store at `endpoint`. Without both keys, credentials come from the
/// environment (`AWS_ACCESS_KEY_ID`, ..., web identity, instance metadata), as the AWS SDK's
/// default chain finds them.
fn s3_store(cfg: &S3Config) -> Result<Kind, String> {
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&cfg.bucket)
        .with_client_options(client_options())
        .with_retry(retry_config());
    if !cfg.region.is_empty() {
        b = b.with_region(&cfg.region);
    }
    if !cfg.access_key_id.is_empty() && !cfg.secret_access_key.is_empty() {
        b = b
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(&cfg.secret_access_key)
            .with_token("");
    }
    let mut endpoint = cfg.endpoint.clone();
    if !endpoint.is_empty() && !endpoint.contains("://") {
        endpoint = format!("https://{endpoint}");
    }
    if endpoint.is_empty() {
        // AWS itself: the bucket in the host name, as the SDK addresses it, unless asked not to.
        b = b.with_virtual_hosted_style_request(!cfg.force_path_style);
    } else if cfg.force_path_style {
        b = b.with_endpoint(&endpoint);
    } else {
        // Virtual-hosted addressing at a custom endpoint: the bucket goes in front of the host.
        let url = url::Url::parse(&endpoint).map_err(|e| format!("endpoint {endpoint}: {e}"))?;
        let host = url.host_str().unwrap_or_default();
        let mut virtual_url = url.clone();
        virtual_url
            .set_host(Some(&format!("{}.{host}", cfg.bucket)))
            .map_err(|e| format!("endpoint {endpoint}: {e}"))?;
        b = b
            .with_endpoint(virtual_url.as_str().trim_end_matches('/'))
            .with_virtual_hosted_style_request(true);
    }
    let store = b.build().map_err(|e| e.to_string())?;
    let shown = if endpoint.is_empty() || endpoint.ends_with("amazonaws.com") {
        format!("s3://{}/{}", cfg.bucket, cfg.path)
    } else {
        format!("{endpoint}/{}/{}", cfg.bucket, cfg.path)
    };
    Ok(Kind::S3 {
        store: Arc::new(store),
        key: cfg.path.clone(),
        shown,
    })
}

/// A local directory, checked as rqlite checks it: an absolute path, writable, and a plain
/// file name. Files are written to a temporary name, synced and renamed into place.
fn file_store(cfg: &FileConfig) -> Result<Kind, String> {
    let dir = PathBuf::from(&cfg.dir);
    if !dir.is_absolute() {
        return Err(format!("directory path must be absolute: {}", cfg.dir));
    }
    let name = &cfg.name;
    if name.is_empty() || name.contains('/') || name.contains("..") || name == "." {
        return Err(format!(
            "invalid file parameter: {name} (must be a simple filename without path separators)"
        ));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("failed to create directory {}: {e}", dir.display()))?;
    tempfile::tempfile_in(&dir).map_err(|e| format!("failed to test writing to directory {}: {e}", dir.display()))?;
    let store = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| e.to_string())?
        .with_fsync(true);
    Ok(Kind::File {
        store: Arc::new(store),
        dir,
        name: name.clone(),
    })
}

/// `path` with its last element prefixed by the UTC time as `YYYYMMDDHHMMSS_`.
pub fn timestamped(path: &str, t: SystemTime) -> String {
    let stamp: String = rq_proto::gofmt::rfc3339(t)
        .chars()
        .take(19)
        .filter(char::is_ascii_digit)
        .collect();
    match path.rsplit_once('/') {
        Some((dir, last)) => format!("{dir}/{stamp}_{last}"),
        None => format!("{stamp}_{path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_prefix_the_last_element() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            timestamped("backups/db.sqlite.gz", t),
            "backups/20231114221320_db.sqlite.gz"
        );
        assert_eq!(timestamped("db", t), "20231114221320_db");
    }

    #[test]
    fn directories_are_checked_as_rqlite_checks_them() {
        let cfg = |dir: &str, name: &str| {
            StorageConfig::File(FileConfig {
                dir: dir.into(),
                name: name.into(),
            })
        };
        assert!(Storage::new(&cfg("relative", "x"), false).is_err());
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().display().to_string();
        for bad in ["a/b", "..", ""] {
            assert!(Storage::new(&cfg(&dir, bad), false).is_err(), "{bad}");
        }
        let s = Storage::new(&cfg(&dir, "backup.sqlite"), false).unwrap();
        assert_eq!(s.describe(), format!("dir:{dir}, file:backup.sqlite"));
    }

    #[tokio::test]
    async fn a_directory_keeps_the_file_and_its_id() {
        let d = tempfile::tempdir().unwrap();
        let cfg = StorageConfig::File(FileConfig {
            dir: d.path().display().to_string(),
            name: "backup.sqlite".into(),
        });
        let s = Storage::new(&cfg, false).unwrap();
        assert_eq!(s.current_id().await.unwrap(), "");
        let src = d.path().join("src");
        std::fs::write(&src, vec![7u8; 20 << 20]).unwrap();
        let file = std::fs::File::open(&src).unwrap();
        assert_eq!(s.upload(file, "42").await.unwrap(), 20 << 20);
        assert_eq!(s.current_id().await.unwrap(), "42");
        assert_eq!(
            std::fs::read(d.path().join("backup.sqlite")).unwrap(),
            vec![7u8; 20 << 20]
        );
        let md: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join("METADATA.json")).unwrap()).unwrap();
        assert_eq!(md["name"], d.path().join("backup.sqlite").display().to_string());
    }
}
