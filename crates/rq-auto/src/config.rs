//! `-auto-backup` and `-auto-restore` configuration files, read as rqlite reads them: JSON with
//! environment variables expanded (Go's `os.ExpandEnv`), `version` at most 1, `type` one of
//! `s3`, `gcs`, `file`, durations as Go strings (`"5m"`) or numbers of nanoseconds.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// The newest configuration version understood.
const VERSION: i64 = 1;
/// How long a restore's download may take when the configuration does not say.
const DEFAULT_RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where backups go, or a restore comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageConfig {
    S3(S3Config),
    Gcs(GcsConfig),
    File(FileConfig),
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct S3Config {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: String,
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub force_path_style: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GcsConfig {
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub credentials_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct FileConfig {
    #[serde(default)]
    pub dir: String,
    #[serde(default)]
    pub name: String,
}

/// `-auto-backup`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupConfig {
    pub interval: Duration,
    pub vacuum: bool,
    /// Gzip the upload (unless `no_compress`).
    pub compress: bool,
    /// Prefix the object's last path element with `YYYYMMDDHHMMSS_` (UTC).
    pub timestamp: bool,
    pub storage: StorageConfig,
}

/// `-auto-restore`.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreConfig {
    pub timeout: Duration,
    pub continue_on_failure: bool,
    pub storage: StorageConfig,
}

#[derive(Deserialize)]
struct Common {
    #[serde(default)]
    version: i64,
    #[serde(rename = "type", default)]
    kind: Value,
    #[serde(default)]
    sub: Value,
}

#[derive(Deserialize)]
struct BackupFields {
    #[serde(default)]
    no_compress: bool,
    #[serde(default)]
    timestamp: bool,
    #[serde(default)]
    vacuum: bool,
    #[serde(default)]
    interval: Option<Value>,
}

#[derive(Deserialize)]
struct RestoreFields {
    #[serde(default)]
    timeout: Option<Value>,
    #[serde(default)]
    continue_on_failure: bool,
}

/// Reads a configuration file and expands environment variables in it.
pub fn read_file(path: &str) -> std::io::Result<String> {
    Ok(rq_proto::gofmt::expand_env(&std::fs::read_to_string(path)?))
}

impl BackupConfig {
    pub fn parse(text: &str) -> Result<BackupConfig, String> {
        let common = common(text)?;
        let f: BackupFields = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let storage = storage(&common, &["s3", "gcs", "file"])?;
        let interval = match &f.interval {
            None => return Err("invalid interval".into()),
            Some(v) => duration(v)?,
        };
        Ok(BackupConfig {
            interval,
            vacuum: f.vacuum,
            compress: !f.no_compress,
            timestamp: f.timestamp,
            storage,
        })
    }
}

impl RestoreConfig {
    pub fn parse(text: &str) -> Result<RestoreConfig, String> {
        let common = common(text)?;
        let f: RestoreFields = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let storage = storage(&common, &["s3", "gcs"])?;
        let timeout = match &f.timeout {
            None => DEFAULT_RESTORE_TIMEOUT,
            Some(v) => duration(v)?,
        };
        Ok(RestoreConfig {
            timeout,
            continue_on_failure: f.continue_on_failure,
            storage,
        })
    }
}

fn common(text: &str) -> Result<Common, String> {
    let c: Common = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if c.version > VERSION {
        return Err("invalid version".into());
    }
    Ok(c)
}

/// The backend `type` names, if `allowed`, with its `sub` settings.
fn storage(c: &Common, allowed: &[&str]) -> Result<StorageConfig, String> {
    let unsupported = || "unsupported storage type".to_string();
    let kind = c.kind.as_str().ok_or_else(unsupported)?;
    if !["s3", "gcs", "file"].contains(&kind) || !allowed.contains(&kind) {
        return Err(unsupported());
    }
    let sub = if c.sub.is_null() {
        Value::Object(Default::default())
    } else {
        c.sub.clone()
    };
    let e = |e: serde_json::Error| e.to_string();
    Ok(match kind {
        "s3" => StorageConfig::S3(serde_json::from_value(sub).map_err(e)?),
        "gcs" => StorageConfig::Gcs(serde_json::from_value(sub).map_err(e)?),
        _ => StorageConfig::File(serde_json::from_value(sub).map_err(e)?),
    })
}

/// A Go duration string, or a number of nanoseconds; it must be positive.
fn duration(v: &Value) -> Result<Duration, String> {
    let d = match v {
        Value::String(s) => {
            rq_proto::gofmt::parse_duration(s).ok_or_else(|| format!("time: invalid duration \"{s}\""))?
        }
        Value::Number(n) => {
            let ns = n.as_f64().ok_or("invalid duration")?;
            if ns <= 0.0 {
                return Err("invalid interval".into());
            }
            Duration::from_nanos(ns as u64)
        }
        _ => return Err("invalid duration".into()),
    };
    if d.is_zero() {
        return Err("invalid interval".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_configurations_as_rqlite_reads_them() {
        let c = BackupConfig::parse(
            r#"{"version": 1, "type": "s3", "interval": "5m", "timestamp": true,
                "sub": {"access_key_id": "k", "secret_access_key": "s", "region": "us-east-1",
                        "bucket": "b", "path": "backups/db.sqlite3.gz", "endpoint": "http://127.0.0.1:9000",
                        "force_path_style": true}}"#,
        )
        .unwrap();
        assert_eq!(c.interval, Duration::from_secs(300));
        assert!(c.compress && c.timestamp && !c.vacuum);
        let StorageConfig::S3(s3) = &c.storage else { panic!() };
        assert_eq!(s3.bucket, "b");
        assert!(s3.force_path_style);
        let c = BackupConfig::parse(
            r#"{"type": "file", "interval": 1000000000, "no_compress": true, "sub": {"dir": "/b", "name": "x.db"}}"#,
        )
        .unwrap();
        assert_eq!(c.interval, Duration::from_secs(1));
        assert!(!c.compress);
        for (text, err) in [
            (r#"{"version": 2, "type": "file", "interval": "1s"}"#, "invalid version"),
            (r#"{"type": "ftp", "interval": "1s"}"#, "unsupported storage type"),
            (r#"{"type": 3, "interval": "1s"}"#, "unsupported storage type"),
            (r#"{"type": "file", "interval": "0s"}"#, "invalid interval"),
            (r#"{"type": "file", "interval": -5}"#, "invalid interval"),
            (r#"{"type": "file"}"#, "invalid interval"),
            (r#"{"type": "file", "interval": "soon"}"#, "invalid duration"),
            ("{", "EOF"),
        ] {
            let e = BackupConfig::parse(text).unwrap_err();
            assert!(e.contains(err), "{text}: {e}");
        }
    }

    #[test]
    fn restore_configurations_as_rqlite_reads_them() {
        let c = RestoreConfig::parse(r#"{"version": 1, "type": "gcs", "sub": {"bucket": "b", "name": "n"}}"#).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert!(!c.continue_on_failure);
        let c =
            RestoreConfig::parse(r#"{"type": "s3", "timeout": "2m", "continue_on_failure": true, "sub": {}}"#).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(120));
        assert!(c.continue_on_failure);
        assert_eq!(
            RestoreConfig::parse(r#"{"type": "file", "sub": {"dir": "/b", "name": "x"}}"#).unwrap_err(),
            "unsupported storage type"
        );
    }
}
