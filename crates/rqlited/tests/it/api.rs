//! The data API: exact response bodies, as rqlite writes them.

use std::time::Duration;

use crate::harness::{DataDir, Node, single};

#[tokio::test]
async fn execute_and_query_shapes() {
    let (_d, n) = single().await;

    // Phase 1: writes report rqlite's omitempty execute results.
    assert_eq!(
        n.execute(r#"["CREATE TABLE bar (id INTEGER NOT NULL PRIMARY KEY, name TEXT)"]"#)
            .await,
        r#"{"results":[{}]}"#
    );
    assert_eq!(
        n.execute(r#"[["INSERT INTO bar(name) VALUES(?)", "fiona"], "INSERT INTO bar(name) VALUES(\"declan\")"]"#)
            .await,
        r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"last_insert_id":2,"rows_affected":1}]}"#
    );

    // Phase 2: reads, plain and associative (keys sorted as Go sorts map keys).
    assert_eq!(
        n.query("", r#"["SELECT * FROM bar"]"#).await,
        r#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[1,"fiona"],[2,"declan"]]}]}"#
    );
    assert_eq!(
        n.query("?associative", r#"["SELECT name, id FROM bar WHERE id=1"]"#)
            .await,
        r#"{"results":[{"types":{"id":"integer","name":"text"},"rows":[{"id":1,"name":"fiona"}]}]}"#
    );
    // No rows: no `values` key; associative always has `rows`.
    assert_eq!(
        n.query("", r#"["SELECT * FROM bar WHERE name='nobody'"]"#).await,
        r#"{"results":[{"columns":["id","name"],"types":["integer","text"]}]}"#
    );
    assert_eq!(
        n.query("?associative", r#"["SELECT * FROM bar WHERE name='nobody'"]"#)
            .await,
        r#"{"results":[{"types":{"id":"integer","name":"text"},"rows":[]}]}"#
    );

    // Phase 3: GET with q=, pretty output in Go's indentation.
    let (s, body) = n
        .get("/db/query?q=SELECT%20id%20FROM%20bar%20WHERE%20id%3D2&pretty")
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        body,
        "{\n    \"results\": [\n        {\n            \"columns\": [\n                \"id\"\n            ],\n            \"types\": [\n                \"integer\"\n            ],\n            \"values\": [\n                [\n                    2\n                ]\n            ]\n        }\n    ]\n}"
    );

    // Phase 4: associative execute results carry "rows":null; DDL after DML carries the
    // connection's last insert id and change count, as rqlite's single connection does.
    assert_eq!(
        n.post("/db/execute?associative", r#"["INSERT INTO bar(name) VALUES('x')"]"#)
            .await
            .1,
        r#"{"results":[{"last_insert_id":3,"rows_affected":1,"rows":null}]}"#
    );
    assert_eq!(
        n.execute(r#"["CREATE TABLE other(x)"]"#).await,
        r#"{"results":[{"last_insert_id":3,"rows_affected":1}]}"#
    );
}

#[tokio::test]
async fn value_encodings_and_types() {
    let (_d, n) = single().await;
    n.execute(
        r#"["CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, f BOOLEAN, d DATE, dt DATETIME, ts TIMESTAMP, v VARCHAR(10), j JSON, u)"]"#,
    )
    .await;
    n.execute(
        r#"[["INSERT INTO t VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", 7, 1.5, "a<b&c", "x'DEADBEEF'", true, "2004-02-14", 1700000000, "2021-10-22 19:39:32.016087", [104,105], [104,105], null]]"#,
    )
    .await;
    // Blobs base64 by default; text-like declared types turn blobs into text; boolean and
    // date types convert; HTML characters are escaped as Go escapes them.
    assert_eq!(
        n.query("", r#"["SELECT * FROM t"]"#).await,
        r#"{"results":[{"columns":["i","r","s","b","f","d","dt","ts","v","j","u"],"types":["integer","real","text","blob","boolean","date","datetime","timestamp","varchar(10)","json",""],"values":[[7,1.5,"a\u003cb\u0026c","3q2+7w==",true,"2004-02-14T00:00:00Z","2023-11-14T22:13:20Z","2021-10-22T19:39:32.016087Z","hi","hi",null]]}]}"#
    );
    // blob_array shows bytes as numbers.
    assert_eq!(
        n.query("?blob_array", r#"["SELECT b FROM t"]"#).await,
        r#"{"results":[{"columns":["b"],"types":["blob"],"values":[[[222,173,190,239]]]}]}"#
    );
    // Expressions get their type from the first row's value; floats print as Go prints them.
    assert_eq!(
        n.query("", r#"["SELECT 1+1, 2.0, 1e21, 'x', NULL"]"#).await,
        r#"{"results":[{"columns":["1+1","2.0","1e21","'x'","NULL"],"types":["integer","real","real","text",""],"values":[[2,2,1e+21,"x",null]]}]}"#
    );
}

#[tokio::test]
async fn errors_transactions_and_returning() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE foo (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"]"#)
        .await;

    // Per-statement errors; without ?transaction later statements still run.
    assert_eq!(
        n.execute(r#"["INSERT INTO foo(id, name) VALUES(1, 'a')", "INSERT INTO nope VALUES(1)", "INSERT INTO foo(id, name) VALUES(2, 'b')"]"#)
            .await,
        r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"error":"no such table: nope"},{"last_insert_id":2,"rows_affected":1}]}"#
    );
    // With ?transaction the first error stops and rolls back the request.
    assert_eq!(
        n.post(
            "/db/execute?transaction",
            r#"["INSERT INTO foo(id, name) VALUES(3, 'c')", "INSERT INTO foo(id, name) VALUES(4, 'a')", "INSERT INTO foo(id, name) VALUES(5, 'e')"]"#
        )
        .await
        .1,
        r#"{"results":[{"last_insert_id":3,"rows_affected":1},{"error":"UNIQUE constraint failed: foo.name"}]}"#
    );
    assert_eq!(
        n.query("", r#"["SELECT COUNT(*) FROM foo"]"#).await,
        r#"{"results":[{"columns":["COUNT(*)"],"types":["integer"],"values":[[2]]}]}"#
    );
    // A syntax error is reported as SQLite words it.
    assert_eq!(
        n.execute(r#"["blah"]"#).await,
        r#"{"results":[{"error":"near \"blah\": syntax error"}]}"#
    );
    // RETURNING makes a write answer with rows.
    assert_eq!(
        n.execute(r#"["INSERT INTO foo(id, name) VALUES(9, 'z') RETURNING id, name"]"#)
            .await,
        r#"{"results":[{"columns":["id","name"],"types":["integer","text"],"values":[[9,"z"]]}]}"#
    );
    // Writes through /db/query are refused per statement.
    assert_eq!(
        n.query("", r#"["INSERT INTO foo(name) VALUES('q')"]"#).await,
        r#"{"results":[{"error":"attempt to change database via query operation"}]}"#
    );
    // Reserved pragmas are refused for the whole request, with HTTP 200.
    for p in [
        "PRAGMA journal_mode=DELETE",
        "PRAGMA synchronous(0)",
        "PRAGMA/**/wal_checkpoint",
    ] {
        let body = serde_json::to_string(&[p]).unwrap();
        assert_eq!(
            n.execute(&body).await,
            r#"{"results":[],"error":"disallowed pragma"}"#,
            "{p}"
        );
    }
    // Reading a pragma is fine.
    assert_eq!(
        n.query("", r#"["PRAGMA foreign_keys"]"#).await,
        r#"{"results":[{"columns":["foreign_keys"],"types":["integer"],"values":[[0]]}]}"#
    );
    // ATTACH would open files outside the data directory.
    assert!(
        n.execute(r#"["ATTACH DATABASE '/tmp/x.db' AS x"]"#)
            .await
            .contains("error")
    );
}

#[tokio::test]
async fn request_endpoint_and_parameters() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE bar (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER)"]"#)
        .await;
    // Mixed writes go through the log; reads alone are served locally.
    let (s, body) = n
        .post(
            "/db/request",
            r#"[["INSERT INTO bar(name, age) VALUES(?,?)", "fiona", 20], ["INSERT INTO bar(name, age) VALUES(:name, :age)", {"name": "sinead", "age": 25}]]"#,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        body,
        r#"{"results":[{"last_insert_id":1,"rows_affected":1},{"last_insert_id":2,"rows_affected":1}]}"#
    );
    assert_eq!(
        n.post(
            "/db/request?associative",
            r#"[["SELECT * FROM bar WHERE age > @a", {"a": 21}]]"#
        )
        .await
        .1,
        r#"{"results":[{"types":{"age":"integer","id":"integer","name":"text"},"rows":[{"age":25,"id":2,"name":"sinead"}]}]}"#
    );
    // A mixed request answers each statement in its own shape.
    assert_eq!(
        n.post(
            "/db/request",
            r#"["INSERT INTO bar(name) VALUES('x')", "SELECT COUNT(*) FROM bar"]"#
        )
        .await
        .1,
        r#"{"results":[{"last_insert_id":3,"rows_affected":1},{"columns":["COUNT(*)"],"types":["integer"],"values":[[3]]}]}"#
    );
    // raft_index is reported for writes when asked for.
    let body = n
        .post("/db/execute?raft_index", r#"["INSERT INTO bar(name) VALUES('y')"]"#)
        .await
        .1;
    assert!(body.contains(r#""raft_index":"#), "{body}");
    // Named parameters must start with a letter, as Go's database/sql requires.
    assert_eq!(
        n.query("", r#"[["SELECT * FROM bar WHERE id=:id", {":id": 1}]]"#).await,
        r#"{"results":[{"error":"name \":id\" does not begin with a letter"}]}"#
    );
}

#[tokio::test]
async fn bad_requests_get_rqlite_errors() {
    let (_d, n) = single().await;
    let cases = [
        ("/db/execute", "not json", 400, "invalid JSON body\n"),
        ("/db/execute", "{}", 400, "invalid request\n"),
        ("/db/execute", "[]", 400, "no statements\n"),
        ("/db/execute", "[[]]", 400, "invalid request\n"),
        ("/db/execute", r#"[["x", [256]]]"#, 400, "unsupported type 256\n"),
        (
            "/db/query?timeout=abc",
            r#"["SELECT 1"]"#,
            400,
            "timeout is not a valid duration\n",
        ),
        (
            "/db/query?freshness_strict",
            r#"["SELECT 1"]"#,
            400,
            "freshness_strict requires freshness\n",
        ),
        ("/db/query?q=", r#"["SELECT 1"]"#, 400, "query parameter not set\n"),
    ];
    for (path, body, status, text) in cases {
        let (s, t) = n.post(path, body).await;
        assert_eq!((s, t.as_str()), (status, text), "{path} {body}");
    }
    // Wrong method and unknown path.
    assert_eq!(n.get("/db/execute").await.0, 405);
    assert_eq!(n.get("/nope").await.0, 404);
    // Deeply nested JSON is refused, not a crash.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(n.post("/db/execute", &deep).await.0, 400);
    // Invalid UTF-8 in a plain-text body is a statement error, not a crash.
    let r = reqwest::Client::new()
        .post(n.url("/db/execute"))
        .header("Content-Type", "text/plain")
        .body(vec![0xff, 0xfe, b'x'])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The node is still serving.
    n.wait_ready().await;
}

#[tokio::test]
async fn plain_text_bodies_and_multi_statements() {
    let (_d, n) = single().await;
    let r = reqwest::Client::new()
        .post(n.url("/db/execute"))
        .header("Content-Type", "text/plain")
        .body("CREATE TABLE t(x); INSERT INTO t VALUES(1); INSERT INTO t VALUES(2)")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"results":[{"last_insert_id":2,"rows_affected":1}]}"#
    );
    assert_eq!(
        n.query("", r#"["SELECT SUM(x) FROM t"]"#).await,
        r#"{"results":[{"columns":["SUM(x)"],"types":["integer"],"values":[[3]]}]}"#
    );
    // A user's BEGIN ... COMMIT inside one request works as one transaction.
    assert_eq!(
        n.execute(r#"["BEGIN", "INSERT INTO t VALUES(3)", "COMMIT"]"#).await,
        r#"{"results":[{"last_insert_id":2,"rows_affected":1},{"last_insert_id":3,"rows_affected":1},{"last_insert_id":3,"rows_affected":1}]}"#
    );
    // An empty statement gives no result at all.
    assert_eq!(n.execute(r#"[""]"#).await, r#"{"results":[]}"#);
}

#[tokio::test]
async fn read_levels() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#).await;
    let want = r#"{"results":[{"columns":["x"],"types":["integer"],"values":[[1]]}]}"#;
    for level in ["none", "weak", "linearizable", "strong", "auto", "bogus"] {
        assert_eq!(
            n.query(&format!("?level={level}"), r#"["SELECT x FROM t"]"#).await,
            want,
            "{level}"
        );
    }
    // The sole voter, once it has applied an entry of its term, answers a linearizable read
    // at once: no lease to check, no round.
    let store = &n.expvar().await["store"];
    assert_eq!(
        (store["num_read_lease"].as_i64(), store["num_verify_leader"].as_i64()),
        (Some(0), Some(0))
    );
    // A strong read goes through the log and can report its index.
    let body = n.query("?level=strong&raft_index", r#"["SELECT x FROM t"]"#).await;
    assert!(body.contains(r#""raft_index":"#), "{body}");
    // Freshness is only checked on followers; a leader is always fresh.
    assert_eq!(
        n.query("?level=none&freshness=1ns", r#"["SELECT x FROM t"]"#).await,
        want
    );
}

#[tokio::test]
async fn rewriting_makes_writes_deterministic() {
    let (_d, n) = single().await;
    // /db/sql shows what would be logged.
    let body = n
        .post("/db/sql", r#"["INSERT INTO t VALUES(random(), datetime('now'))"]"#)
        .await
        .1;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rewritten = v["results"][0]["rewritten"].as_str().unwrap();
    assert!(!rewritten.to_lowercase().contains("random()"), "{rewritten}");
    assert!(!rewritten.contains("'now'"), "{rewritten}");
    // norwrandom leaves RANDOM() alone.
    let body = n.post("/db/sql?norwrandom", r#"["SELECT random()"]"#).await.1;
    assert!(body.contains(r#""rewritten":"SELECT random()""#), "{body}");
}

#[tokio::test]
async fn timeouts_vacuum_and_what_a_node_refuses() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#).await;
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c";

    // Phase 1: db_timeout interrupts a statement, per statement, with rqlite's words.
    let body = serde_json::to_string(&[endless]).unwrap();
    assert_eq!(
        n.query("?db_timeout=100ms", &body).await,
        r#"{"results":[{"error":"query timeout"}]}"#
    );
    let insert_endless = format!("INSERT INTO t {}", endless.replace("count(*)", "x"));
    let body = serde_json::to_string(&[insert_endless.as_str(), "INSERT INTO t VALUES(2)"]).unwrap();
    let out = n.post("/db/execute?db_timeout=100ms", &body).await.1;
    assert!(out.starts_with(r#"{"results":[{"error":"execute timeout"},{"#), "{out}");
    // The interrupted statement left nothing behind; the next one ran.
    assert_eq!(
        n.query("", r#"["SELECT x FROM t ORDER BY x"]"#).await,
        r#"{"results":[{"columns":["x"],"types":["integer"],"values":[[1],[2]]}]}"#
    );

    // Phase 2: VACUUM runs (outside the batch transaction); VACUUM INTO and ATTACH do not.
    assert!(!n.execute(r#"["VACUUM"]"#).await.contains("error"));
    assert!(
        n.execute(r#"["VACUUM INTO '/tmp/rqlite-rs-vacuum-into.db'"]"#)
            .await
            .contains("error")
    );
    assert!(!std::path::Path::new("/tmp/rqlite-rs-vacuum-into.db").exists());
    assert_eq!(
        n.execute(r#"["ATTACH '' AS x"]"#).await,
        r#"{"results":[{"error":"ATTACH and DETACH are not allowed"}]}"#
    );
    assert!(
        n.query("", r#"["PRAGMA integrity_check"]"#)
            .await
            .contains(r#"[["ok"]]"#)
    );
}

#[tokio::test]
async fn qualified_columns_and_explain() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE a(id INTEGER, v TEXT)", "CREATE TABLE b(id INTEGER, w TEXT)", "INSERT INTO a VALUES(1, 'x')", "INSERT INTO b VALUES(1, 'y')"]"#)
        .await;
    assert_eq!(
        n.query("?qualify_columns", r#"["SELECT * FROM a JOIN b ON a.id = b.id"]"#)
            .await,
        r#"{"results":[{"columns":["a.id","a.v","b.id","b.w"],"types":["integer","text","integer","text"],"values":[[1,"x",1,"y"]]}]}"#
    );
    // EXPLAIN is a read, even on /db/request.
    let (s, body) = n.post("/db/request", r#"["EXPLAIN QUERY PLAN SELECT * FROM a"]"#).await;
    assert_eq!(s, 200);
    assert!(
        body.contains(r#""columns":["id","parent","notused","detail"]"#),
        "{body}"
    );
}

#[tokio::test]
async fn client_mistakes_are_never_a_server_error() {
    let (_d, n) = single().await;
    let client = reqwest::Client::new();

    // A statement that cannot be made deterministic is refused before it is logged.
    n.execute(r#"["CREATE TABLE t(b)"]"#).await;
    let (s, t) = n
        .post("/db/execute", r#"["INSERT INTO t VALUES(RANDOMBLOB(2000000000))"]"#)
        .await;
    assert_eq!(s, 400, "{t}");
    assert!(t.starts_with("SQL rewrite: "), "{t}");

    // A stepdown to a node that is not a voter, or that already leads, is the client's error.
    let (s, t) = n.post("/leader", r#"{"id":"nobody"}"#).await;
    assert_eq!((s, t.as_str()), (400, "stepdown: node not found in cluster\n"));
    let (s, t) = n.post("/leader", &format!(r#"{{"id":"{}"}}"#, n.raft)).await;
    assert_eq!(
        (s, t.as_str()),
        (400, "stepdown: cannot step down to the current Leader\n")
    );

    // Removing a node that is not a member changes nothing and succeeds, as in rqlite.
    let r = client
        .delete(n.url("/remove"))
        .body(r#"{"id":"nobody"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(n.get("/nodes").await.0, 200);
}

#[tokio::test]
async fn a_client_that_shuts_its_side_after_sending_still_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d, n) = single().await;
    // Long enough to leave the thread that received it, so the answer comes after the
    // client's end of the connection has closed.
    let q = "WITH%20RECURSIVE%20c(x)%20AS%20(SELECT%201%20UNION%20ALL%20SELECT%20x%2B1%20FROM%20c%20WHERE%20x%3C1000000)%20SELECT%20count(*)%20FROM%20c";
    let mut s = tokio::net::TcpStream::connect(&n.http).await.unwrap();
    s.write_all(format!("GET /db/query?q={q} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains(r#""values":[[1000000]]"#), "{answer}");
}

#[tokio::test]
async fn long_reads_finish_and_short_ones_answer_beside_them() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE t(x INTEGER)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    // A read far longer than a point read: it leaves the thread that received it and still
    // answers in full, on every endpoint that reads.
    let long = r#"["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) SELECT count(*) FROM c"]"#;
    let want = r#"{"results":[{"columns":["count(*)"],"types":["integer"],"values":[[2000000]]}]}"#;
    assert_eq!(n.query("", long).await, want);
    assert_eq!(n.post("/db/request", long).await, (200, want.to_string()));
    // Point reads from many clients while long reads run: all answer correctly.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (url, body) = if i % 4 == 0 {
            (n.url("/db/query"), long.to_string())
        } else {
            (n.url("/db/query?level=weak"), r#"["SELECT x FROM t"]"#.to_string())
        };
        tasks.push(tokio::spawn(async move {
            let text = reqwest::Client::new()
                .post(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            (i, text)
        }));
    }
    for t in tasks {
        let (i, text) = t.await.unwrap();
        if i % 4 == 0 {
            assert_eq!(text, want);
        } else {
            assert_eq!(
                text,
                r#"{"results":[{"columns":["x"],"types":["integer"],"values":[[1]]}]}"#
            );
        }
    }
    // db_timeout still bounds a read, wherever it runs.
    let (s, body) = n.post("/db/query?db_timeout=50ms", long).await;
    assert_eq!(s, 200);
    assert!(body.contains("error"), "{body}");
}

#[tokio::test]
async fn a_node_polls_for_requests_while_one_client_sends_them_then_sleeps() {
    // The machine counts as having CPU to spare, as a quiet one would. The window is wider than
    // the default 150 µs: this test's client, a debug build beside the other tests on a busy
    // machine, may take longer than that to send its next request.
    let d = DataDir::new();
    let n = Node::spawn_env(
        &d.path,
        &["-idle-poll-time", "5ms"],
        &[("FAILPOINTS", "idle-poll-spare-cpu=return")],
    );
    n.wait_ready().await;
    let client = reqwest::Client::new();
    let status = || async {
        let (_, body) = n.get("/status").await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["idle_poll"].clone()
    };
    assert_eq!(status().await["window_us"], 5000);
    // One client sending requests back to back, for longer than two samples of the machine.
    let until = std::time::Instant::now() + Duration::from_millis(600);
    while std::time::Instant::now() < until {
        client.get(n.url("/readyz")).send().await.unwrap();
    }
    let s = status().await;
    assert!(s["requests_caught"].as_u64().unwrap() > 0, "{s}");
    // Idle, it sleeps: polling stopped within its window.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = n.cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = n.cpu_time() - before;
    assert!(
        used < Duration::from_millis(300),
        "{used:?} of CPU in 2 s with no requests"
    );
}

#[tokio::test]
async fn idle_polling_can_be_turned_off() {
    let d = DataDir::new();
    let n = Node::start_in(&d.path, &[]).await;
    let (_, body) = n.get("/status").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["idle_poll"]["window_us"], 150, "the default window: {body}");
    drop(n);
    let d = DataDir::new();
    let n = Node::start_in(&d.path, &["-idle-poll-time", "0"]).await;
    let (_, body) = n.get("/status").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["idle_poll"]["enabled"], false, "{body}");
}
