//! `-otlp-*`: metrics pushed over OTLP/gRPC to a receiver running in the test (opentelemetry's
//! generated collector service on tonic), in plain text and over TLS with and without client
//! certificates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use rq_net::testing::Ca;
use tokio::sync::mpsc;

use crate::harness::{DataDir, Node};

struct Receiver(mpsc::UnboundedSender<ExportMetricsServiceRequest>);

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A collector on loopback: its address and what arrives.
async fn receiver(
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (String, mpsc::UnboundedReceiver<ExportMetricsServiceRequest>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let router = tonic::service::Routes::new(MetricsServiceServer::new(Receiver(tx))).into_axum_router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let opts = rq_net::ServeOptions {
        tls,
        max_connections: 16,
        header_read_timeout: Duration::from_secs(5),
        port: "otlp",
    };
    tokio::spawn(rq_net::serve(listener, router, opts, std::future::pending()));
    (addr, rx)
}

/// A data point: its attributes and its value, a histogram's value being its count.
type Point = (Vec<(String, String)>, f64);

/// One export, flattened: resource attributes, and per metric name its points.
#[derive(Debug, Default)]
struct Export {
    resource: Vec<(String, String)>,
    metrics: Vec<(String, Vec<Point>)>,
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn flatten(req: &ExportMetricsServiceRequest) -> Export {
    let mut out = Export::default();
    for rm in &req.resource_metrics {
        if let Some(r) = &rm.resource {
            out.resource = r
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), text(&kv.value)))
                .collect();
        }
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let attrs = |a: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
                    a.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect::<Vec<_>>()
                };
                let number = |v: &Option<number_data_point::Value>| match v {
                    Some(number_data_point::Value::AsInt(i)) => *i as f64,
                    Some(number_data_point::Value::AsDouble(d)) => *d,
                    None => f64::NAN,
                };
                let points = match &m.data {
                    Some(metric::Data::Sum(s)) => {
                        assert!(s.is_monotonic, "{} is a sum that can go down", m.name);
                        s.data_points
                            .iter()
                            .map(|p| (attrs(&p.attributes), number(&p.value)))
                            .collect()
                    }
                    Some(metric::Data::Gauge(g)) => g
                        .data_points
                        .iter()
                        .map(|p| (attrs(&p.attributes), number(&p.value)))
                        .collect(),
                    Some(metric::Data::Histogram(h)) => h
                        .data_points
                        .iter()
                        .map(|p| (attrs(&p.attributes), p.count as f64))
                        .collect(),
                    _ => Vec::new(),
                };
                out.metrics.push((m.name.clone(), points));
            }
        }
    }
    out
}

impl Export {
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.metrics.iter().filter(|(n, _)| n == name).find_map(|(_, points)| {
            points
                .iter()
                .find(|(a, _)| labels.iter().all(|(k, v)| a.iter().any(|(x, y)| x == k && y == v)))
                .map(|(_, v)| *v)
        })
    }
}

/// Waits for an export in which `ok` holds.
async fn wait_export(
    rx: &mut mpsc::UnboundedReceiver<ExportMetricsServiceRequest>,
    ok: impl Fn(&Export) -> bool,
) -> Export {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let req = tokio::time::timeout(left, rx.recv())
            .await
            .expect("an export in time")
            .expect("receiver open");
        let e = flatten(&req);
        if ok(&e) {
            return e;
        }
    }
}

#[tokio::test]
async fn every_metric_arrives_at_the_collector_with_the_nodes_identity() {
    let (addr, mut rx) = receiver(None).await;
    let d = DataDir::new();
    let n = Node::start_in(
        &d.path,
        &[
            "-node-id",
            "otlp-node",
            "-otlp-endpoint",
            &addr,
            "-otlp-insecure",
            "-otlp-interval",
            "300ms",
        ],
    )
    .await;
    n.execute(r#"["CREATE TABLE t(x)"]"#).await;
    for i in 0..5 {
        n.execute(&format!(r#"["INSERT INTO t VALUES({i})"]"#)).await;
    }
    n.query("?level=weak", r#"["SELECT * FROM t"]"#).await;
    // An export read after the last answer went out.
    let e = wait_export(&mut rx, |e| {
        e.value(
            "rqlite_http_requests_total",
            &[("endpoint", "query"), ("status", "200")],
        ) == Some(1.0)
    })
    .await;
    let attr = |k: &str| e.resource.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    assert_eq!(attr("service.name").as_deref(), Some("rqlite"), "{:?}", e.resource);
    assert_eq!(attr("service.instance.id").as_deref(), Some("otlp-node"));
    assert!(
        attr("service.version").is_some_and(|v| v.starts_with('v')),
        "{:?}",
        e.resource
    );
    // rqlite's expvar names, the histograms and counters of /metrics, and its gauges.
    assert_eq!(e.value("rqlite.http.executions", &[]), Some(6.0));
    assert!(e.value("rqlite.store.num_snapshots", &[]).is_some());
    assert!(e.value("rqlite_raft_commit_seconds", &[]).is_some_and(|c| c >= 6.0));
    assert!(e.value("rqlite_raft_log_fsync_seconds", &[]).is_some_and(|c| c >= 6.0));
    assert_eq!(
        e.value(
            "rqlite_http_requests_total",
            &[("endpoint", "execute"), ("status", "200")]
        ),
        Some(6.0)
    );
    assert_eq!(e.value("rqlite_read_seconds", &[("level", "weak")]), Some(1.0));
    let applied = e.value("rqlite_raft_applied_index", &[]);
    assert!(applied.is_some_and(|i| i >= 7.0), "{applied:?}");
    assert_eq!(e.value("rqlite_raft_leader", &[]), Some(1.0));
    let status = n.status().await;
    assert_eq!(status["otlp_metrics"]["endpoint"], addr.as_str(), "{status}");
    assert_eq!(status["otlp_metrics"]["running"], true);
    assert_eq!(status["otlp_metrics"]["insecure"], true);
}

fn server_tls(ca: &Ca, dir: &std::path::Path, verify_client: bool) -> Arc<rustls::ServerConfig> {
    let pair = ca
        .issue("collector", &["127.0.0.1", "localhost"])
        .write(dir, "collector");
    rq_net::server_config(&rq_net::ServerOptions {
        pair,
        ca: verify_client.then(|| ca.write(dir, "clients-ca.pem")),
        verify_client,
        verify_common_name: None,
        alpn: vec![b"h2".to_vec()],
    })
    .unwrap()
}

#[tokio::test]
async fn exports_go_over_tls_verified_or_not_and_with_client_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::new("otlp test CA");
    let ca_file = ca.write(tmp.path(), "ca.pem");
    let client = ca.issue("rqlite-node", &["127.0.0.1"]).write(tmp.path(), "client");

    // Mutual TLS: the collector checks the node's certificate, the node the collector's.
    let (addr, mut rx) = receiver(Some(server_tls(&ca, tmp.path(), true))).await;
    let d = DataDir::new();
    let _n = Node::start_in(
        &d.path,
        &[
            "-otlp-endpoint",
            &addr,
            "-otlp-interval",
            "300ms",
            "-otlp-ca-cert",
            &ca_file.display().to_string(),
            "-otlp-cert",
            &client.cert.display().to_string(),
            "-otlp-key",
            &client.key.display().to_string(),
        ],
    )
    .await;
    wait_export(&mut rx, |e| e.value("rqlite.store.num_snapshots", &[]).is_some()).await;

    // A collector whose certificate the node cannot verify gets nothing, unless the node is
    // told not to verify.
    let other = Ca::new("another CA");
    let (addr, mut rx) = receiver(Some(server_tls(&other, tmp.path(), false))).await;
    let d = DataDir::new();
    let _n = Node::start_in(&d.path, &["-otlp-endpoint", &addr, "-otlp-interval", "300ms"]).await;
    assert!(tokio::time::timeout(Duration::from_secs(2), rx.recv()).await.is_err());
    let d = DataDir::new();
    let _n = Node::start_in(
        &d.path,
        &["-otlp-endpoint", &addr, "-otlp-interval", "300ms", "-otlp-no-verify"],
    )
    .await;
    wait_export(&mut rx, |e| e.value("rqlite.store.num_snapshots", &[]).is_some()).await;
}
