//! Google Cloud Storage through its JSON API, as rqlite's own client uses it: a multipart
//! upload whose metadata part carries `rqlite-auto-backup-id`, the object's metadata to read the
//! ID back, and `alt=media` to download. (The XML API, which `object_store` speaks, cannot
//! carry custom metadata to the GCS emulator this is tested against.)
//!
//! With `credentials_path`, requests carry an OAuth token obtained with the service account's
//! key (a signed JWT exchanged at the account's `token_uri`), renewed two minutes before it
//! expires. Without one, requests carry no credentials (an emulator, or a public bucket).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::config::GcsConfig;

/// The GCS metadata key of the upload's ID.
pub const GCS_ID_KEY: &str = "rqlite-auto-backup-id";
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Longest one request may take before its body starts to flow.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a metadata or token request may take.
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a whole upload or download may take.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    token_uri: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

pub struct Gcs {
    http: reqwest::Client,
    base: String,
    bucket: String,
    name: String,
    account: Option<(ServiceAccount, jsonwebtoken::EncodingKey)>,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

fn escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Gcs {
    pub fn new(cfg: &GcsConfig) -> Result<Gcs, String> {
        let account = if cfg.credentials_path.is_empty() {
            None
        } else {
            let text =
                std::fs::read(&cfg.credentials_path).map_err(|e| format!("open {}: {e}", cfg.credentials_path))?;
            let sa: ServiceAccount =
                serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", cfg.credentials_path))?;
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_key.as_bytes())
                .map_err(|e| format!("{}: private key: {e}", cfg.credentials_path))?;
            Some((sa, key))
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let endpoint = if cfg.endpoint.is_empty() {
            DEFAULT_ENDPOINT
        } else {
            &cfg.endpoint
        };
        Ok(Gcs {
            http,
            base: endpoint.trim_end_matches('/').to_string(),
            bucket: cfg.bucket.clone(),
            name: cfg.name.clone(),
            account,
            token: tokio::sync::Mutex::new(None),
        })
    }

    pub fn describe(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn object_url(&self) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            escape(&self.bucket),
            escape(&self.name)
        )
    }

    /// The bearer token to send, if this client has credentials.
    async fn token(&self) -> Result<Option<String>, String> {
        let Some((sa, key)) = &self.account else {
            return Ok(None);
        };
        let mut cached = self.token.lock().await;
        if let Some((t, expiry)) = cached.as_ref()
            && expiry.saturating_duration_since(Instant::now()) > Duration::from_secs(120)
        {
            return Ok(Some(t.clone()));
        }
        let aud = if sa.token_uri.is_empty() {
            DEFAULT_TOKEN_URI
        } else {
            &sa.token_uri
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: &sa.client_email,
            scope: SCOPE,
            aud,
            iat: now,
            exp: now + 3600,
        };
        let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, key)
            .map_err(|e| format!("token: {e}"))?;
        let form = format!(
            "grant_type={}&assertion={}",
            escape("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            escape(&jwt)
        );
        let resp = self
            .http
            .post(aud)
            .timeout(SHORT_TIMEOUT)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| format!("token exchange failed: {e}"))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("token exchange failed: {}", String::from_utf8_lossy(&body)));
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default)]
            expires_in: u64,
        }
        let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| format!("token exchange failed: {e}"))?;
        let expiry = Instant::now() + Duration::from_secs(t.expires_in);
        *cached = Some((t.access_token.clone(), expiry));
        Ok(Some(t.access_token))
    }

    async fn request(&self, method: reqwest::Method, url: &str) -> Result<reqwest::RequestBuilder, String> {
        let mut req = self.http.request(method, url);
        if let Some(t) = self.token().await? {
            req = req.bearer_auth(t);
        }
        Ok(req)
    }

    /// The ID in the object's metadata.
    pub async fn current_id(&self) -> Result<String, String> {
        let resp = self
            .request(reqwest::Method::GET, &self.object_url())
            .await?
            .timeout(SHORT_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("metadata fetch failed: {}", String::from_utf8_lossy(&body)));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        v["metadata"][GCS_ID_KEY]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("ID key ({GCS_ID_KEY}) not found in metadata {}", self.describe()))
    }

    /// Streams `file` (`len` bytes) to object `name` with ID `id`, in one multipart request
    /// whose body is read from the file as it is sent.
    pub async fn upload(&self, file: tokio::fs::File, len: u64, name: &str, id: &str) -> Result<(), String> {
        let boundary = format!("{:032x}", rand::random::<u128>());
        let meta = serde_json::json!({"name": name, "metadata": {GCS_ID_KEY: id}});
        let head = format!(
            "--{boundary}\r\nContent-Type: application/json\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let total = head.len() as u64 + len + tail.len() as u64;
        let data = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
        let body = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(head)) })
            .chain(data)
            .chain(futures::stream::once(async move { Ok(Bytes::from(tail)) }));
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart",
            self.base,
            escape(&self.bucket)
        );
        let resp = self
            .request(reqwest::Method::POST, &url)
            .await?
            .timeout(TRANSFER_TIMEOUT)
            .header("Content-Type", format!("multipart/related; boundary={boundary}"))
            .header("Content-Length", total)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| format!("upload failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(format!("upload failed: {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    }

    /// Streams the object into `out`; the bytes received.
    pub async fn download(&self, out: &mut tokio::fs::File) -> Result<u64, String> {
        let resp = self
            .request(reqwest::Method::GET, &format!("{}?alt=media", self.object_url()))
            .await?
            .timeout(TRANSFER_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("download failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(format!("download failed: {status}: {}", String::from_utf8_lossy(&body)));
        }
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("download failed: {e}"))?;
            out.write_all(&chunk).await.map_err(|e| e.to_string())?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}
