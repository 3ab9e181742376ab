//! Node endpoints: /status, /readyz, /nodes, /leader, /debug/vars, headers, snapshots.

use std::time::Duration;

use crate::harness::{DataDir, Node, single};

#[tokio::test]
async fn status_readyz_nodes_leader() {
    let (_d, n) = single().await;

    // /status carries the keys clients read.
    let st = n.status().await;
    assert_eq!(st["store"]["raft"]["state"], "Leader");
    assert_eq!(st["store"]["ready"], true);
    assert_eq!(st["store"]["node_id"], n.raft.as_str());
    assert_eq!(st["store"]["leader"]["addr"], n.raft.as_str());
    assert_eq!(st["store"]["leader"]["node_id"], n.raft.as_str());
    assert_eq!(st["store"]["raft"]["voter"], true);
    assert_eq!(st["http"]["bind_addr"], n.http.as_str());
    assert!(st["build"]["version"].as_str().unwrap().starts_with("v10."));
    assert!(st["node"]["uptime"].is_string());
    assert_eq!(
        st["store"]["sqlite3"]["pragmas"]["rw"],
        serde_json::json!({"busy_timeout":"5000","foreign_keys":"0","journal_mode":"wal","synchronous":"0","wal_autocheckpoint":"0"})
    );
    assert_eq!(
        st["store"]["sqlite3"]["pragmas"]["ro"],
        serde_json::json!({"busy_timeout":"5000","foreign_keys":"0","journal_mode":"wal","synchronous":"0","wal_autocheckpoint":"1000"})
    );
    // Indexes move together after a write.
    n.execute(r#"["CREATE TABLE t(x)"]"#).await;
    let st = n.status().await;
    let applied = st["store"]["raft"]["applied_index"].as_u64().unwrap();
    assert_eq!(st["store"]["raft"]["commit_index"].as_u64().unwrap(), applied);
    assert_eq!(st["store"]["fsm_index"].as_u64().unwrap(), applied);
    assert_eq!(st["store"]["db_applied_index"].as_u64().unwrap(), applied);
    // A read through the log is applied but changes nothing: `db_applied_index` stays.
    n.query("?level=strong", r#"["SELECT * FROM t"]"#).await;
    let st = n.status().await;
    assert!(st["store"]["fsm_index"].as_u64().unwrap() > applied);
    assert_eq!(st["store"]["db_applied_index"].as_u64().unwrap(), applied);

    // ?key= selects a subtree; a missing key is {}.
    assert_eq!(n.get("/status?key=store.raft.state").await.1, r#""Leader""#);
    assert_eq!(n.get("/status?key=store.nope").await.1, "{}");

    // /readyz bodies.
    assert_eq!(
        n.get("/readyz").await,
        (200, "[+]node ok\n[+]leader ok\n[+]store ok\n[+]db ok".to_string())
    );
    assert_eq!(n.get("/readyz?noleader").await, (200, "[+]node ok".to_string()));
    assert_eq!(
        n.get("/readyz?sync").await,
        (
            200,
            "[+]node ok\n[+]leader ok\n[+]store ok\n[+]sync ok\n[+]db ok".to_string()
        )
    );

    // /nodes, legacy and ver=2, and /leader.
    let (s, body) = n.get("/nodes").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let me = &v[n.raft.as_str()];
    assert_eq!(me["api_addr"], format!("http://{}", n.http));
    assert_eq!(me["addr"], n.raft.as_str());
    assert_eq!(me["leader"], true);
    assert_eq!(me["reachable"], true);
    assert_eq!(me["voter"], true);
    let v: serde_json::Value = serde_json::from_str(&n.get("/nodes?ver=2").await.1).unwrap();
    assert_eq!(v["nodes"][0]["id"], n.raft.as_str());
    let v: serde_json::Value = serde_json::from_str(&n.get("/leader").await.1).unwrap();
    assert_eq!(v["addr"], n.raft.as_str());
}

#[tokio::test]
async fn headers_cors_and_expvar() {
    let d = DataDir::new();
    let n = Node::start_in(&d.path, &["-http-allow-origin", "https://example.com"]).await;
    let client = reqwest::Client::new();
    let r = client
        .request(reqwest::Method::OPTIONS, n.url("/db/query"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://example.com");
    assert_eq!(h["access-control-allow-methods"], "OPTIONS, GET, POST");
    assert_eq!(h["access-control-allow-headers"], "Content-Type");
    assert!(h["x-rqlite-version"].to_str().unwrap().starts_with("v10."));

    let r = client
        .post(n.url("/db/execute"))
        .body(r#"["CREATE TABLE t(x)"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-rqlite-served-by"], n.http.as_str());
    assert_eq!(r.headers()["content-type"], "application/json; charset=utf-8");

    // /debug/vars is expvar-shaped and counts requests.
    let v = n.expvar().await;
    assert_eq!(v["http"]["executions"], 1);
    assert!(v["store"]["num_snapshots"].is_number());
    assert!(v["cmdline"].is_array());
    let (_, one) = n.get("/debug/vars?key=http").await;
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(one.as_object().unwrap().len(), 1);
}

/// Status line, content type, served-by and body of one answer.
async fn answer(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: &str,
) -> (u16, String, Option<String>, String) {
    let r = client
        .request(method.parse().unwrap(), url)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let header = |k: &str| r.headers().get(k).map(|v| v.to_str().unwrap().to_string());
    let (status, ct, by) = (
        r.status().as_u16(),
        header("content-type"),
        header("x-rqlite-served-by"),
    );
    (status, ct.unwrap_or_default(), by, r.text().await.unwrap())
}

#[tokio::test]
async fn every_answer_carries_rqlite_headers() {
    let (_d, n) = single().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let json = "application/json; charset=utf-8";
    let text = "text/plain; charset=utf-8";

    // Phase 1: a wrong method is a bare 405, which keeps the JSON content type on the paths
    // whose handlers set it first, and has none elsewhere.
    for (method, path, ct) in [
        ("GET", "/db/execute", json),
        ("PUT", "/db/query", json),
        ("GET", "/db/request", json),
        ("PUT", "/db/sql", json),
        ("POST", "/status", json),
        ("POST", "/nodes", json),
        ("PUT", "/leader", json),
        ("POST", "/db/backup", ""),
        ("GET", "/db/load", ""),
        ("GET", "/boot", ""),
        ("GET", "/snapshot", ""),
        ("GET", "/reap", ""),
        ("GET", "/remove", ""),
        ("POST", "/readyz", ""),
    ] {
        let (status, got, _, body) = answer(&client, method, &n.url(path), "").await;
        assert_eq!((status, got.as_str(), body.as_str()), (405, ct, ""), "{method} {path}");
    }
    let (status, ct, _, _) = answer(&client, "GET", &n.url("/nope"), "").await;
    assert_eq!((status, ct.as_str()), (404, ""));

    // Phase 2: errors are Go's http.Error text, with nosniff.
    let r = client
        .get(n.url("/db/query?q=SELECT%201&timeout=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], text);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.text().await.unwrap(), "timeout is not a valid duration\n");
    // A malformed removal is a bare 400.
    let (status, ct, _, body) = answer(&client, "DELETE", &n.url("/remove"), r#"{"id":"x","y":"z"}"#).await;
    assert_eq!((status, ct.as_str(), body.as_str()), (400, "", ""));

    // Phase 3: the console redirects, with Go's little HTML body on a GET.
    let (status, ct, _, body) = answer(&client, "GET", &n.url("/"), "").await;
    assert_eq!(
        (status, ct.as_str(), body.as_str()),
        (302, "text/html; charset=utf-8", "<a href=\"/console/\">Found</a>.\n\n")
    );

    // Phase 4: successes name the node that served them where rqlite does: a stepdown (JSON
    // type, empty body) and a load (JSON written without a type, which Go sniffs as text),
    // but not a backup, whose header rqlite sets too late to be sent.
    let (status, ct, by, body) = answer(&client, "POST", &n.url("/leader"), "").await;
    assert_eq!(
        (status, ct.as_str(), by.as_deref(), body.as_str()),
        (200, json, Some(n.http.as_str()), "")
    );
    let (status, ct, by, _) = answer(&client, "POST", &n.url("/db/load"), "CREATE TABLE t(x);").await;
    assert_eq!((status, ct.as_str(), by.as_deref()), (200, text, Some(n.http.as_str())));
    let (status, ct, by, _) = answer(&client, "GET", &n.url("/db/backup"), "").await;
    assert_eq!((status, ct.as_str(), by), (200, "application/octet-stream", None));
}

#[tokio::test]
async fn snapshots_by_threshold_and_on_request() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &["-raft-snap", "10", "-raft-snap-int", "200ms"]).await;
    n.execute(r#"["CREATE TABLE foo(id INTEGER PRIMARY KEY, name TEXT)"]"#)
        .await;
    for _ in 0..60 {
        n.execute(r#"["INSERT INTO foo(name) VALUES('fiona')"]"#).await;
    }
    // Phase 1: the threshold triggers snapshots and the log is compacted behind them.
    n.wait_for(Duration::from_secs(20), "a snapshot past index 40", || async {
        n.status().await["store"]["raft"]["last_snapshot_index"]
            .as_u64()
            .unwrap_or(0)
            >= 40
    })
    .await;
    assert!(n.expvar().await["store"]["num_snapshots"].as_i64().unwrap() >= 1);
    let snaps = n.status().await["store"]["snapshot_store"]["snapshots"].clone();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");

    // Phase 2: kill -9 and restart: the database is reused, the tail replayed once.
    n.kill_and_restart().await;
    assert_eq!(
        n.query("?level=none", r#"["SELECT COUNT(*) FROM foo"]"#).await,
        r#"{"results":[{"columns":["COUNT(*)"],"types":["integer"],"values":[[60]]}]}"#
    );
    let v = n.expvar().await;
    assert_eq!(v["store"]["num_restores_start_skipped"], 1);
    assert_eq!(v["store"]["num_restores_start"], 0);

    // Phase 3: a user snapshot answers 200, or 204 when nothing is new.
    n.execute(r#"["INSERT INTO foo(name) VALUES('declan')"]"#).await;
    let client = reqwest::Client::new();
    let r = client.post(n.url("/snapshot?trailing_logs=0")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client.post(n.url("/snapshot")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(n.expvar().await["http"]["user_snapshots"], 2);
}

#[tokio::test]
async fn a_node_started_to_join_does_not_bootstrap() {
    let d = DataDir::new();
    let n = Node::spawn_in(&d.path, &["-join", "127.0.0.1:1", "-join-interval", "1s"]);
    // It serves HTTP, reports no leader, and is not ready.
    n.wait_for(Duration::from_secs(10), "the node to answer", || async {
        reqwest::get(n.url("/readyz?noleader")).await.is_ok()
    })
    .await;
    assert_eq!(
        n.get("/readyz").await,
        (503, "[+]node ok\n[+]leader does not exist".to_string())
    );
    assert_eq!(n.get("/readyz?noleader").await.0, 200);
    let st = n.status().await;
    assert_eq!(st["store"]["leader"]["addr"], "");
    // Writes need a leader.
    assert_eq!(
        n.post("/db/execute", r#"["CREATE TABLE t(x)"]"#).await,
        (503, "leader not found\n".to_string())
    );
    // Reads at level none work without one.
    assert!(n.query("?level=none", r#"["SELECT 1"]"#).await.contains("[[1]]"));
}
