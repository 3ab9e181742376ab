//! `-cdc-config`, read as rqlite reads it: the word `stdout`, an `http://` or `https://` URL
//! (every other setting at its default), or the path of a JSON file. Durations in the file are
//! integer nanoseconds (Go's `time.Duration`) and the retry policy is `0` (linear) or `1`
//! (exponential), as rqlite's decoder takes them.

use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// How long changes may wait on disk for the endpoint, in bytes, unless the file says.
pub const DEFAULT_MAX_QUEUE_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Every wait is the minimum backoff.
    Linear,
    /// The wait doubles before each retry, up to the maximum backoff.
    Exponential,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_cert_file: String,
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default)]
    pub server_name: String,
}

#[derive(Debug, Clone)]
pub struct CdcConfig {
    /// `http(s)://...` or `stdout`.
    pub endpoint: String,
    pub service_id: String,
    pub row_ids_only: bool,
    pub table_filter: Option<Regex>,
    pub tls: Option<TlsConfig>,
    /// Log indexes per request.
    pub max_batch_size: usize,
    pub max_batch_delay: Duration,
    pub high_watermark_interval: Duration,
    pub transmit_timeout: Duration,
    /// Attempts per request before it is dropped; `None` retries forever.
    pub transmit_max_retries: Option<u32>,
    pub transmit_retry_policy: RetryPolicy,
    pub transmit_min_backoff: Duration,
    pub transmit_max_backoff: Duration,
    /// The on-disk queue's bound (ours; rqlite's queue has none).
    pub max_queue_bytes: u64,
}

impl CdcConfig {
    fn defaults(endpoint: &str) -> CdcConfig {
        CdcConfig {
            endpoint: endpoint.to_string(),
            service_id: String::new(),
            row_ids_only: false,
            table_filter: None,
            tls: None,
            max_batch_size: 10,
            max_batch_delay: Duration::from_millis(200),
            high_watermark_interval: Duration::from_secs(1),
            transmit_timeout: Duration::from_secs(5),
            transmit_max_retries: None,
            transmit_retry_policy: RetryPolicy::Linear,
            transmit_min_backoff: Duration::from_secs(1),
            transmit_max_backoff: Duration::from_secs(30),
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
        }
    }

    /// The flag's value as rqlite reads it; errors as rqlite words them.
    pub fn parse(arg: &str) -> Result<CdcConfig, String> {
        if arg == "stdout" {
            return Ok(CdcConfig::defaults("stdout"));
        }
        if (arg.starts_with("http://") || arg.starts_with("https://")) && url::Url::parse(arg).is_ok() {
            return Ok(CdcConfig::defaults(arg));
        }
        let text = std::fs::read_to_string(arg).map_err(|e| format!("open {arg}: {}", io_text(&e)))?;
        CdcConfig::from_json(&text)
    }

    fn from_json(text: &str) -> Result<CdcConfig, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            endpoint: String,
            #[serde(default)]
            service_id: String,
            #[serde(default)]
            row_ids_only: bool,
            #[serde(default)]
            table_filter: Option<Value>,
            #[serde(default)]
            tls: Option<TlsConfig>,
            #[serde(default)]
            max_batch_size: i64,
            #[serde(default)]
            max_batch_delay: i64,
            #[serde(default)]
            high_watermark_interval: i64,
            #[serde(default)]
            transmit_timeout: i64,
            #[serde(default)]
            transmit_max_retries: Option<i64>,
            #[serde(default)]
            transmit_retry_policy: i64,
            #[serde(default)]
            transmit_min_backoff: i64,
            #[serde(default)]
            transmit_max_backoff: i64,
            #[serde(default)]
            max_queue_bytes: u64,
        }
        let f: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut c = CdcConfig::defaults(&f.endpoint);
        c.service_id = f.service_id;
        c.row_ids_only = f.row_ids_only;
        c.table_filter = match f.table_filter {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if p.is_empty() => None,
            Some(Value::String(p)) => {
                Some(Regex::new(&p).map_err(|e| format!("invalid regexp {p:?}: error parsing regexp: {e}"))?)
            }
            Some(other) => return Err(format!("regexp must be a JSON string or null: {other}")),
        };
        c.tls = f.tls.filter(|t| *t != TlsConfig::default());
        if f.max_batch_size > 0 {
            c.max_batch_size = f.max_batch_size as usize;
        }
        let ns = |n: i64| Duration::from_nanos(n as u64);
        if f.max_batch_delay > 0 {
            c.max_batch_delay = ns(f.max_batch_delay);
        }
        match f.high_watermark_interval {
            0 => {}
            n if n < 0 => return Err("high_watermark_interval must be positive".into()),
            n => c.high_watermark_interval = ns(n),
        }
        if f.transmit_timeout > 0 {
            c.transmit_timeout = ns(f.transmit_timeout);
        }
        c.transmit_max_retries = f
            .transmit_max_retries
            .filter(|n| *n > 0)
            .map(|n| n.min(u32::MAX as i64) as u32);
        c.transmit_retry_policy = match f.transmit_retry_policy {
            0 => RetryPolicy::Linear,
            1 => RetryPolicy::Exponential,
            n => {
                return Err(format!(
                    "invalid transmit_retry_policy {n}: 0 (linear) or 1 (exponential)"
                ));
            }
        };
        if f.transmit_min_backoff > 0 {
            c.transmit_min_backoff = ns(f.transmit_min_backoff);
        }
        if f.transmit_max_backoff > 0 {
            c.transmit_max_backoff = ns(f.transmit_max_backoff);
        }
        if f.max_queue_bytes > 0 {
            c.max_queue_bytes = f.max_queue_bytes;
        }
        Ok(c)
    }

    /// Whether changes are printed rather than sent.
    pub fn is_stdout(&self) -> bool {
        self.endpoint.eq_ignore_ascii_case("stdout")
    }

    /// The endpoint as `/status` shows it: any password replaced.
    pub fn redacted_endpoint(&self) -> String {
        if self.is_stdout() {
            return "stdout".into();
        }
        match url::Url::parse(&self.endpoint) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("xxxxx"));
                u.to_string()
            }
            _ => self.endpoint.clone(),
        }
    }

    /// Checks the endpoint can be sent to, as rqlite does when it makes its sink.
    pub fn check_endpoint(&self) -> Result<(), String> {
        if self.is_stdout() {
            return Ok(());
        }
        let u = url::Url::parse(&self.endpoint).map_err(|e| format!("failed to parse endpoint URL: {e}"));
        let scheme = match u {
            Ok(u) => u.scheme().to_string(),
            Err(_) if self.endpoint.is_empty() => String::new(),
            Err(e) => return Err(e),
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!("failed to create sink: cdc: unsupported scheme {scheme:?}"));
        }
        Ok(())
    }

    /// The wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        match self.transmit_retry_policy {
            RetryPolicy::Linear => self.transmit_min_backoff,
            RetryPolicy::Exponential => {
                let factor = 2u32.saturating_pow(retry.min(30));
                self.transmit_min_backoff
                    .saturating_mul(factor)
                    .min(self.transmit_max_backoff)
            }
        }
    }
}

fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_stdout_and_files_as_rqlite_reads_them() {
        let c = CdcConfig::parse("http://127.0.0.1:8080/cdc").unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:8080/cdc");
        assert_eq!((c.max_batch_size, c.max_batch_delay), (10, Duration::from_millis(200)));
        assert!(CdcConfig::parse("stdout").unwrap().is_stdout());
        assert_eq!(
            CdcConfig::parse("/no/such/cdc.json").unwrap_err(),
            "open /no/such/cdc.json: no such file or directory"
        );
        let c = CdcConfig::from_json(
            r#"{"endpoint": "https://sink/x", "service_id": "prod", "row_ids_only": true,
                "table_filter": "^users", "max_batch_size": 3, "max_batch_delay": 50000000,
                "transmit_max_retries": 4, "transmit_retry_policy": 1, "transmit_min_backoff": 100000000,
                "transmit_max_backoff": 350000000, "tls": {"insecure_skip_verify": true}}"#,
        )
        .unwrap();
        assert_eq!(c.service_id, "prod");
        assert!(c.table_filter.as_ref().unwrap().is_match("users_archive"));
        assert_eq!(c.max_batch_delay, Duration::from_millis(50));
        assert_eq!(c.transmit_max_retries, Some(4));
        assert_eq!(
            (1..=4).map(|r| c.backoff(r).as_millis()).collect::<Vec<_>>(),
            [200, 350, 350, 350]
        );
        assert!(c.tls.unwrap().insecure_skip_verify);
        let forever = CdcConfig::from_json(r#"{"endpoint": "http://x", "transmit_max_retries": 0}"#).unwrap();
        assert_eq!(forever.transmit_max_retries, None);
        assert_eq!(forever.backoff(3), Duration::from_secs(1));
    }

    #[test]
    fn bad_settings_are_refused_with_rqlites_words() {
        assert!(CdcConfig::from_json(r#"{"endpoint": "http://x", "max_batch_delay": "250ms"}"#).is_err());
        assert!(
            CdcConfig::from_json(r#"{"table_filter": "("}"#)
                .unwrap_err()
                .starts_with("invalid regexp \"(\"")
        );
        assert!(
            CdcConfig::from_json(r#"{"table_filter": 5}"#)
                .unwrap_err()
                .starts_with("regexp must be a JSON string or null")
        );
        let c = CdcConfig::from_json(r#"{"endpoint": "ftp://x"}"#).unwrap();
        assert_eq!(
            c.check_endpoint().unwrap_err(),
            "failed to create sink: cdc: unsupported scheme \"ftp\""
        );
        let c = CdcConfig::from_json("{}").unwrap();
        assert_eq!(
            c.check_endpoint().unwrap_err(),
            "failed to create sink: cdc: unsupported scheme \"\""
        );
        let c = CdcConfig::parse("http://user:secret@sink:80/x").unwrap();
        assert_eq!(c.redacted_endpoint(), "http://user:xxxxx@sink/x");
    }
}
