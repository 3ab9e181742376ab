//! Pushing the node's metrics to an OpenTelemetry collector over OTLP/gRPC (`-otlp-endpoint`
//! and the other `-otlp-` flags of rqlite v10.3).
//!
//! Every `-otlp-interval` a periodic reader exports, with resource attributes naming the node
//! (`service.name` "rqlite", `service.version`, `service.instance.id` the node id):
//!
//! - every expvar counter as rqlite exports it, `rqlite.<map>.<key>`: a cumulative monotonic
//!   sum, or a gauge for durations, sizes, ratios and `last_` values;
//! - the gauges `/metrics` reads when scraped, under the same names;
//! - every counter and histogram the node records through the `metrics` facade, under the
//!   same names as in `/metrics`: `recorder()` is installed beside the Prometheus one.
//!
//! The gRPC channel is tonic's, over a connection this crate dials: plain TCP with
//! `-otlp-insecure`, otherwise TLS with the node's rustls setup (`-otlp-ca-cert` or the system's
//! roots, `-otlp-no-verify`, and `-otlp-cert`/`-otlp-key` for mutual TLS), offering HTTP/2 by
//! ALPN. As in rqlite, a failed export is logged and not retried; the next interval sends
//! current values.

mod bridge;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

pub use bridge::Bridge;

/// `-otlp-*`.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// `host:port` of the collector.
    pub endpoint: String,
    pub interval: Duration,
    pub insecure: bool,
    pub no_verify: bool,
    pub ca_cert: Option<std::path::PathBuf>,
    /// This node's certificate and key, for mutual TLS.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    pub node_id: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("failed to create TLS config: {0}")]
    Tls(String),
    #[error("failed to create OTLP exporter: {0}")]
    Exporter(String),
}

/// The expvar maps: each map's name and its keys with their values.
pub type ExpvarSource = Arc<dyn Fn() -> Vec<(String, Vec<(&'static str, i64)>)> + Send + Sync>;

/// A gauge read when exported: name, description, labels, value.
pub type GaugeReading = (&'static str, &'static str, Vec<(&'static str, String)>, f64);

/// The gauges read when exported.
pub type GaugeSource = Arc<dyn Fn() -> Vec<GaugeReading> + Send + Sync>;

/// Whether rqlite exports an expvar key as a gauge rather than a monotonic sum.
pub type IsGauge = fn(&str, &str) -> bool;

/// A running exporter.
pub struct Otlp {
    cfg: OtlpConfig,
    provider: SdkMeterProvider,
    meter: Meter,
}

/// Readings shared by every instrument's callback of one export (they run one after another,
/// within milliseconds), so that one export reads the node once.
struct Cached<T> {
    read: Box<dyn Fn() -> T + Send + Sync>,
    last: Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Cached<T> {
    fn get(&self) -> Arc<T> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, v)) = last.as_ref()
            && at.elapsed() < Duration::from_millis(50)
        {
            return v.clone();
        }
        let v = Arc::new((self.read)());
        *last = Some((Instant::now(), v.clone()));
        v
    }
}

impl Otlp {
    /// Starts exporting. Must run inside the tokio runtime that serves the channel.
    pub fn start(cfg: OtlpConfig) -> Result<Otlp, OtlpError> {
        let channel = channel(&cfg)?;
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_channel(channel)
            .with_timeout(cfg.interval.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| OtlpError::Exporter(e.to_string()))?;
        let reader = PeriodicReader::builder(exporter).with_interval(cfg.interval).build();
        let resource = Resource::builder()
            .with_service_name("rqlite")
            .with_attributes([
                KeyValue::new("service.version", cfg.version.clone()),
                KeyValue::new("service.instance.id", cfg.node_id.clone()),
            ])
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        let meter = provider.meter("rqlite");
        tracing::info!(endpoint = %cfg.endpoint, interval = ?cfg.interval, "reporting metrics over OTLP");
        Ok(Otlp { cfg, provider, meter })
    }

    /// The `metrics` recorder that passes what the node records to this exporter, with the
    /// histogram boundaries of values in seconds and of the others.
    pub fn recorder(&self, seconds: &'static [f64], counts: &'static [f64]) -> Bridge {
        Bridge::new(self.meter.clone(), seconds, counts)
    }

    /// Exports every expvar key `expvar` gives now as rqlite does, and `gauges`.
    pub fn observe(&self, expvar: ExpvarSource, is_gauge: IsGauge, gauges: GaugeSource) {
        let maps = {
            let e = expvar.clone();
            Arc::new(Cached {
                read: Box::new(move || e()),
                last: Mutex::new(None),
            })
        };
        for (map, entries) in expvar() {
            for (key, _) in entries {
                let name = format!("rqlite.{map}.{key}");
                let (m, k) = (map.clone(), key);
                let maps = maps.clone();
                let read = move || {
                    maps.get()
                        .iter()
                        .find(|(n, _)| *n == m)
                        .and_then(|(_, e)| e.iter().find(|(x, _)| *x == k))
                        .map_or(0, |(_, v)| *v)
                };
                let unit = unit_of(&map, key);
                if is_gauge(&map, key) {
                    let mut b = self
                        .meter
                        .i64_observable_gauge(name)
                        .with_callback(move |o| o.observe(read(), &[]));
                    if let Some(u) = unit {
                        b = b.with_unit(u);
                    }
                    b.build();
                } else {
                    let mut b = self
                        .meter
                        .u64_observable_counter(name)
                        .with_callback(move |o| o.observe(read().max(0) as u64, &[]));
                    if let Some(u) = unit {
                        b = b.with_unit(u);
                    }
                    b.build();
                }
            }
        }
        let readings = Arc::new(Cached {
            read: Box::new(move || gauges()),
            last: Mutex::new(None),
        });
        let mut seen: Vec<&'static str> = Vec::new();
        for (name, help, _, _) in readings.get().iter() {
            if seen.contains(name) {
                continue;
            }
            seen.push(name);
            let (name, r) = (*name, readings.clone());
            self.meter
                .f64_observable_gauge(name)
                .with_description(*help)
                .with_callback(move |o| {
                    for (n, _, labels, v) in r.get().iter() {
                        if *n == name {
                            let attrs: Vec<KeyValue> =
                                labels.iter().map(|(k, v)| KeyValue::new(*k, v.clone())).collect();
                            o.observe(*v, &attrs);
                        }
                    }
                })
                .build();
        }
    }

    /// rqlite's `/status` section `otlp_metrics`.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoint": self.cfg.endpoint,
            "interval": format!("{:?}", self.cfg.interval),
            "insecure": self.cfg.insecure,
            "no_verify": self.cfg.no_verify,
            "running": true,
        })
    }

    /// Exports what is pending and stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "stopping OTLP metrics reporting");
        }
    }
}

/// rqlite's units for expvar keys.
fn unit_of(map: &str, key: &str) -> Option<&'static str> {
    match (map, key) {
        ("db", "precompact_wal_size" | "compacted_wal_size") | ("snapshot", "persist_size") => return Some("By"),
        _ => {}
    }
    if key.contains("duration") {
        return Some(if key.ends_with("_us") { "us" } else { "ms" });
    }
    if key.ends_with("_ratio") {
        return Some("1");
    }
    if key.ends_with("_bytes") {
        return Some("By");
    }
    None
}

/// The gRPC channel to the collector, over connections this crate makes.
fn channel(cfg: &OtlpConfig) -> Result<tonic::transport::Channel, OtlpError> {
    let tls = if cfg.insecure {
        None
    } else {
        let opts = rq_net::ClientOptions {
            ca: cfg.ca_cert.clone(),
            no_verify: cfg.no_verify,
            server_name: None,
            pair: cfg.identity.clone().map(|(cert, key)| rq_net::KeyPair { cert, key }),
        };
        let mut config = (*rq_net::client_config(&opts).map_err(|e| OtlpError::Tls(e.to_string()))?).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = rq_net::server_name_of(&cfg.endpoint).map_err(|e| OtlpError::Tls(e.to_string()))?;
        Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", cfg.endpoint))
        .map_err(|e| OtlpError::Exporter(e.to_string()))?
        .connect_timeout(Duration::from_secs(5));
    let addr = cfg.endpoint.clone();
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let (addr, tls) = (addr.clone(), tls.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let stream = rq_net::connect(tcp, tls.as_ref().map(|(c, n)| (c, n.clone()))).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_rqlites_rules() {
        assert_eq!(unit_of("store", "snapshot_create_duration"), Some("ms"));
        assert_eq!(unit_of("store", "fsm_apply_duration_us"), Some("us"));
        assert_eq!(unit_of("snapshot", "persist_size"), Some("By"));
        assert_eq!(unit_of("store", "num_snapshots"), None);
    }
}
