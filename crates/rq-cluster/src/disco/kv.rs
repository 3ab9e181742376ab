//! The leader key in etcd (its v3 JSON gateway) or Consul (its KV API), over reqwest.
//!
//! The key holds `{"id": ..., "api_addr": ..., "addr": ...}` as rqlite writes it: at
//! `/<disco-key>/leader` in etcd and `<disco-key>/leader` in Consul.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest any call to the store may take when the configuration sets no shorter dial timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the leader key says.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Leader {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
}

/// A store that holds the leader key.
pub enum KvStore {
    Etcd(Etcd),
    Consul(Consul),
}

impl KvStore {
    pub fn mode(&self) -> &'static str {
        match self {
            KvStore::Etcd(_) => "etcd-kv",
            KvStore::Consul(_) => "consul-kv",
        }
    }

    pub fn leader_key(&self) -> &str {
        match self {
            KvStore::Etcd(e) => &e.key,
            KvStore::Consul(c) => &c.key,
        }
    }

    /// The leader the key names, if it is set.
    pub async fn get_leader(&self) -> Result<Option<Leader>, String> {
        let value = match self {
            KvStore::Etcd(e) => e.get().await?,
            KvStore::Consul(c) => c.get().await?,
        };
        match value {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| format!("leader key holds no leader: {e}")),
        }
    }

    /// Sets the key to `me` only if it is not set; whether it was.
    pub async fn initialize_leader(&self, me: &Leader) -> Result<bool, String> {
        let value = serde_json::to_vec(me).map_err(|e| e.to_string())?;
        match self {
            KvStore::Etcd(e) => e.put_if_absent(&value).await,
            KvStore::Consul(c) => c.put(&value, true).await,
        }
    }

    /// Sets the key to `me`.
    pub async fn set_leader(&self, me: &Leader) -> Result<(), String> {
        let value = serde_json::to_vec(me).map_err(|e| e.to_string())?;
        match self {
            KvStore::Etcd(e) => e.put(&value).await,
            KvStore::Consul(c) => c.put(&value, false).await.map(|_| ()),
        }
    }
}

/// TLS material named by files or given as PEM text, turned into a reqwest client.
#[derive(Default)]
struct TlsMaterial {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    no_verify: bool,
    server_name: Option<String>,
}

impl TlsMaterial {
    fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.no_verify || self.server_name.is_some()
    }

    fn client(self, timeout: Duration) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60));
        if self.is_set() {
            let identity = match (self.cert, self.key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                _ => return Err("a client certificate needs its key, and a key its certificate".into()),
            };
            let config = rq_net::client_config_from_pem(&rq_net::PemClientOptions {
                ca: self.ca,
                identity,
                no_verify: self.no_verify,
                server_name: self.server_name,
            })
            .map_err(|e| e.to_string())?;
            builder = builder.tls_backend_preconfigured((*config).clone());
        }
        builder.build().map_err(|e| e.to_string())
    }
}

fn read_file(what: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {path}: {e}"))
}

/// A string field that Go's JSON would fill from a number of nanoseconds (`time.Duration`).
fn go_duration(v: &Option<i64>) -> Option<Duration> {
    v.filter(|n| *n > 0).map(|n| Duration::from_nanos(n as u64))
}

/// The answer's body when the status is a success, or the error it carries.
async fn ok_body(resp: reqwest::Response) -> Result<bytes::Bytes, String> {
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        return Ok(body);
    }
    let text = String::from_utf8_lossy(&body);
    Err(format!("{status}: {}", text.trim()))
}

// ---------------------------------------------------------------------------------------------
// etcd

/// `-disco-config` for `etcd-kv`: the JSON of etcd's `clientv3.Config` as rqlite reads it. Of its
/// fields, `endpoints`, `username`, `password` and `dial-timeout` (nanoseconds) act here, and
/// `TLS` with `InsecureSkipVerify` and `ServerName` (the parts of Go's `tls.Config` JSON can
/// set); `ca-file`, `cert-file` and `key-file` add a CA and a client certificate, as `etcdctl`'s
/// flags of those names do. The rest (keep-alives, auto-sync, message sizes) are read and have
/// nothing to tune over HTTP.
#[derive(Deserialize, Default)]
struct EtcdConfig {
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "dial-timeout")]
    dial_timeout: Option<i64>,
    #[serde(default, rename = "TLS")]
    tls: Option<GoTlsConfig>,
    #[serde(default, rename = "ca-file")]
    ca_file: String,
    #[serde(default, rename = "cert-file")]
    cert_file: String,
    #[serde(default, rename = "key-file")]
    key_file: String,
}

#[derive(Deserialize, Default)]
struct GoTlsConfig {
    #[serde(default, rename = "InsecureSkipVerify")]
    insecure_skip_verify: bool,
    #[serde(default, rename = "ServerName")]
    server_name: String,
}

pub struct Etcd {
    http: reqwest::Client,
    endpoints: Vec<String>,
    credentials: Option<(String, String)>,
    /// The token of the last authentication, when `username` is set.
    token: tokio::sync::Mutex<Option<String>>,
    key: String,
}

impl Etcd {
    /// A client for `/<key>/leader`; with no configuration, etcd at `localhost:2379`.
    pub fn configure(key: &str, config: Option<&str>) -> Result<KvStore, String> {
        let cfg: EtcdConfig = match config {
            None => EtcdConfig {
                endpoints: vec!["localhost:2379".into()],
                ..Default::default()
            },
            Some(text) => serde_json::from_str(text).map_err(|e| format!("create etcd config: {e}"))?,
        };
        if cfg.endpoints.is_empty() {
            return Err("create etcd client: etcdclient: no available endpoints".into());
        }
        let go_tls = cfg.tls.unwrap_or_default();
        let tls = TlsMaterial {
            ca: (!cfg.ca_file.is_empty())
                .then(|| read_file("ca-file", &cfg.ca_file))
                .transpose()?,
            cert: (!cfg.cert_file.is_empty())
                .then(|| read_file("cert-file", &cfg.cert_file))
                .transpose()?,
            key: (!cfg.key_file.is_empty())
                .then(|| read_file("key-file", &cfg.key_file))
                .transpose()?,
            no_verify: go_tls.insecure_skip_verify,
            server_name: (!go_tls.server_name.is_empty()).then_some(go_tls.server_name),
        };
        let timeout = go_duration(&cfg.dial_timeout)
            .unwrap_or(REQUEST_TIMEOUT)
            .min(REQUEST_TIMEOUT);
        let http = tls.client(timeout).map_err(|e| format!("create etcd client: {e}"))?;
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| {
                let e = e.trim_end_matches('/');
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        Ok(KvStore::Etcd(Etcd {
            http,
            endpoints,
            credentials: (!cfg.username.is_empty()).then_some((cfg.username, cfg.password)),
            token: tokio::sync::Mutex::new(None),
            key: format!("/{key}/leader"),
        }))
    }

    /// Calls `path` of the gateway with `body` on each endpoint in turn until one answers.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, String> {
        let mut last = String::new();
        for endpoint in &self.endpoints {
            match self.call_one(endpoint, path, body).await {
                Ok(v) => return Ok(v),
                Err(e) => last = format!("{endpoint}: {e}"),
            }
        }
        Err(last)
    }

    async fn call_one(&self, endpoint: &str, path: &str, body: &Value) -> Result<Value, String> {
        for retry in [false, true] {
            let token = self.token(endpoint, retry).await?;
            let mut req = self.http.post(format!("{endpoint}{path}")).json(body);
            if let Some(t) = &token {
                req = req.header("Authorization", t);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            // An expired token is refused; authenticate again once.
            if token.is_some() && !retry && resp.status() == StatusCode::UNAUTHORIZED {
                continue;
            }
            let body = ok_body(resp).await?;
            return serde_json::from_slice(&body).map_err(|e| e.to_string());
        }
        Err("authentication failed".into())
    }

    /// The token to send, authenticating first if there is none yet (or `renew`).
    async fn token(&self, endpoint: &str, renew: bool) -> Result<Option<String>, String> {
        let Some((name, password)) = &self.credentials else {
            return Ok(None);
        };
        let mut token = self.token.lock().await;
        if token.is_none() || renew {
            let resp = self
                .http
                .post(format!("{endpoint}/v3/auth/authenticate"))
                .json(&json!({"name": name, "password": password}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let body = ok_body(resp)
                .await
                .map_err(|e| format!("authenticate as {name}: {e}"))?;
            let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let t = v["token"]
                .as_str()
                .ok_or_else(|| format!("authenticate as {name}: no token in the answer"))?;
            *token = Some(t.to_string());
        }
        Ok(token.clone())
    }

    fn key_b64(&self) -> String {
        B64.encode(self.key.as_bytes())
    }

    async fn get(&self) -> Result<Option<Vec<u8>>, String> {
        let v = self.call("/v3/kv/range", &json!({"key": self.key_b64()})).await?;
        let Some(value) = v["kvs"].get(0).map(|kv| kv["value"].as_str().unwrap_or_default()) else {
            return Ok(None);
        };
        B64.decode(value).map(Some).map_err(|e| e.to_string())
    }

    async fn put_if_absent(&self, value: &[u8]) -> Result<bool, String> {
        let key = self.key_b64();
        let txn = json!({
            "compare": [{"key": key, "result": "EQUAL", "target": "VERSION", "version": "0"}],
            "success": [{"request_put": {"key": key, "value": B64.encode(value)}}],
        });
        let v = self.call("/v3/kv/txn", &txn).await?;
        // The gateway leaves `false` out.
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    async fn put(&self, value: &[u8]) -> Result<(), String> {
        self.call(
            "/v3/kv/put",
            &json!({"key": self.key_b64(), "value": B64.encode(value)}),
        )
        .await
        .map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------------
// Consul

/// `-disco-config` for `consul-kv`, rqlite's fields. `ca_pem`, `cert_pem` and `key_pem` are
/// base64 in the JSON, as Go writes byte strings.
#[derive(Deserialize, Default)]
struct ConsulConfig {
    #[serde(default)]
    address: String,
    #[serde(default)]
    scheme: String,
    #[serde(default)]
    datacenter: String,
    #[serde(default)]
    basic_auth: Option<BasicAuth>,
    #[serde(default)]
    token: String,
    #[serde(default)]
    token_file: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    partition: String,
    #[serde(default)]
    tls_config: Option<ConsulTls>,
}

#[derive(Deserialize, Default)]
struct BasicAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize, Default)]
struct ConsulTls {
    #[serde(default)]
    address: String,
    #[serde(default)]
    ca_file: String,
    #[serde(default)]
    ca_path: String,
    #[serde(default)]
    ca_pem: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    cert_pem: String,
    #[serde(default)]
    key_file: String,
    #[serde(default)]
    key_pem: String,
    #[serde(default)]
    insecure_skip_verify: bool,
}

pub struct Consul {
    http: reqwest::Client,
    base: String,
    query: Vec<(&'static str, String)>,
    basic_auth: Option<(String, String)>,
    token: Option<String>,
    key: String,
}

impl Consul {
    /// A client for `<key>/leader`. Unset fields come from Consul's environment variables
    /// (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_SSL`,
    /// `CONSUL_HTTP_AUTH`), then Consul's defaults (`127.0.0.1:8500`, `http`), as Consul's
    /// client library takes them.
    pub fn configure(key: &str, config: Option<&str>) -> Result<KvStore, String> {
        let cfg: ConsulConfig = match config {
            None => ConsulConfig::default(),
            Some(text) => {
                let cfg: ConsulConfig = serde_json::from_str(text).map_err(|e| format!("create Consul config: {e}"))?;
                if cfg.address.starts_with("http") {
                    return Err("create Consul config: address should not contain HTTP or HTTPS".into());
                }
                cfg
            }
        };
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut address = cfg.address.clone();
        let mut scheme = cfg.scheme.clone();
        if address.is_empty() {
            address = env("CONSUL_HTTP_ADDR").unwrap_or_else(|| "127.0.0.1:8500".into());
            for prefix in ["https://", "http://"] {
                if let Some(rest) = address.strip_prefix(prefix) {
                    if scheme.is_empty() {
                        scheme = prefix.trim_end_matches("://").to_string();
                    }
                    address = rest.to_string();
                }
            }
        }
        if scheme.is_empty() {
            let ssl = env("CONSUL_HTTP_SSL")
                .is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
            scheme = if ssl { "https".into() } else { "http".into() };
        }
        let token_file = if cfg.token_file.is_empty() {
            env("CONSUL_HTTP_TOKEN_FILE").unwrap_or_default()
        } else {
            cfg.token_file.clone()
        };
        let token = if !token_file.is_empty() {
            let t = read_file("token_file", &token_file).map_err(|e| format!("create Consul client: {e}"))?;
            Some(String::from_utf8_lossy(&t).trim().to_string())
        } else if !cfg.token.is_empty() {
            Some(cfg.token.clone())
        } else {
            env("CONSUL_HTTP_TOKEN")
        };
        let basic_auth = match &cfg.basic_auth {
            Some(b) => Some((b.username.clone(), b.password.clone())),
            None => env("CONSUL_HTTP_AUTH").map(|a| match a.split_once(':') {
                Some((u, p)) => (u.to_string(), p.to_string()),
                None => (a, String::new()),
            }),
        };
        let tls = match &cfg.tls_config {
            None => TlsMaterial::default(),
            Some(t) => consul_tls(t).map_err(|e| format!("create Consul client: {e}"))?,
        };
        let http = tls
            .client(REQUEST_TIMEOUT)
            .map_err(|e| format!("create Consul client: {e}"))?;
        let mut query = Vec::new();
        for (name, value) in [
            ("dc", &cfg.datacenter),
            ("ns", &cfg.namespace),
            ("partition", &cfg.partition),
        ] {
            if !value.is_empty() {
                query.push((name, value.clone()));
            }
        }
        Ok(KvStore::Consul(Consul {
            http,
            base: format!("{scheme}://{address}"),
            query,
            basic_auth,
            token,
            key: format!("{key}/leader"),
        }))
    }

    fn request(&self, method: Method, extra: &[(&'static str, String)]) -> reqwest::RequestBuilder {
        let url = format!("{}/v1/kv/{}", self.base, self.key);
        let params = self.query.iter().chain(extra).map(|(k, v)| (*k, v.as_str()));
        let mut req = match reqwest::Url::parse_with_params(&url, params) {
            Ok(u) => self.http.request(method, u),
            Err(_) => self.http.request(method, url),
        };
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t);
        }
        if let Some((u, p)) = &self.basic_auth {
            req = req.basic_auth(u, Some(p));
        }
        req
    }

    async fn get(&self) -> Result<Option<Vec<u8>>, String> {
        let resp = self.request(Method::GET, &[]).send().await.map_err(|e| e.to_string())?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = ok_body(resp).await?;
        let pairs: Vec<Value> = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        match pairs.first().map(|p| p["Value"].as_str()) {
            None => Ok(None),
            Some(None) => Ok(Some(Vec::new())),
            Some(Some(v)) => B64.decode(v).map(Some).map_err(|e| e.to_string()),
        }
    }

    /// Writes the key (only if absent, with `cas`); whether Consul took it.
    async fn put(&self, value: &[u8], cas: bool) -> Result<bool, String> {
        let extra = if cas {
            vec![("cas", "0".to_string())]
        } else {
            Vec::new()
        };
        let resp = self
            .request(Method::PUT, &extra)
            .body(value.to_vec())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body = ok_body(resp).await?;
        Ok(String::from_utf8_lossy(&body).trim() == "true")
    }
}

fn consul_tls(t: &ConsulTls) -> Result<TlsMaterial, String> {
    let pem = |what: &str, b64: &str| B64.decode(b64).map_err(|e| format!("{what}: {e}"));
    let mut ca = Vec::new();
    if !t.ca_file.is_empty() {
        ca.extend(read_file("ca_file", &t.ca_file)?);
    }
    if !t.ca_path.is_empty() {
        let dir = std::fs::read_dir(&t.ca_path).map_err(|e| format!("ca_path {}: {e}", t.ca_path))?;
        let mut files: Vec<_> = dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            ca.extend(read_file("ca_path", &f.display().to_string())?);
            ca.push(b'\n');
        }
    }
    if !t.ca_pem.is_empty() {
        ca.extend(pem("ca_pem", &t.ca_pem)?);
    }
    let cert = match (t.cert_file.as_str(), t.cert_pem.as_str()) {
        ("", "") => None,
        ("", p) => Some(pem("cert_pem", p)?),
        (f, _) => Some(read_file("cert_file", f)?),
    };
    let key = match (t.key_file.as_str(), t.key_pem.as_str()) {
        ("", "") => None,
        ("", p) => Some(pem("key_pem", p)?),
        (f, _) => Some(read_file("key_file", f)?),
    };
    // The server name to expect, as Consul's client takes it from `address`: without a port.
    let server_name = match t.address.as_str() {
        "" => None,
        a => {
            let has_port = a.rfind(':').is_some_and(|c| a.rfind(']').is_none_or(|b| c > b));
            let host = if has_port {
                a.rsplit_once(':').map_or(a, |(h, _)| h)
            } else {
                a
            };
            Some(host.trim_start_matches('[').trim_end_matches(']').to_string())
        }
    };
    Ok(TlsMaterial {
        ca: (!ca.is_empty()).then_some(ca),
        cert,
        key,
        no_verify: t.insecure_skip_verify,
        server_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_record_is_written_as_rqlite_writes_it() {
        let me = Leader {
            id: "n1".into(),
            api_addr: "http://127.0.0.1:4001".into(),
            addr: "127.0.0.1:4002".into(),
        };
        assert_eq!(
            serde_json::to_string(&me).unwrap(),
            r#"{"id":"n1","api_addr":"http://127.0.0.1:4001","addr":"127.0.0.1:4002"}"#
        );
    }

    #[test]
    fn configurations_are_read_and_refused_as_rqlite_reads_them() {
        let e = Etcd::configure("rqlite", None).unwrap();
        let KvStore::Etcd(etcd) = &e else { panic!() };
        assert_eq!(etcd.endpoints, ["http://localhost:2379"]);
        assert_eq!(e.leader_key(), "/rqlite/leader");
        assert!(Etcd::configure("k", Some(r#"{"endpoints": []}"#)).is_err());
        let e = Etcd::configure(
            "k",
            Some(r#"{"endpoints": ["https://a:2379/"], "dial-timeout": 30000}"#),
        )
        .unwrap();
        let KvStore::Etcd(etcd) = &e else { panic!() };
        assert_eq!(etcd.endpoints, ["https://a:2379"]);

        assert!(Consul::configure("k", Some(r#"{"address": "http://a:8500"}"#)).is_err());
        let c = Consul::configure(
            "k",
            Some(r#"{"address": "a:8500", "scheme": "https", "datacenter": "dc1"}"#),
        )
        .unwrap();
        let KvStore::Consul(consul) = &c else { panic!() };
        assert_eq!(consul.base, "https://a:8500");
        assert_eq!(consul.query, [("dc", "dc1".to_string())]);
        assert_eq!(c.leader_key(), "k/leader");
        assert!(Consul::configure("k", Some(r#"{"tls_config": {"ca_file": "/no/such/file"}}"#)).is_err());
    }
}
