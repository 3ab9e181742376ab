//! A corpus of bad input, sent to a real node: malformed and invalid-UTF-8 JSON, wrong types,
//! deep nesting, oversized bodies, bad query parameters, reserved PRAGMAs in every spelling,
//! ATTACH / VACUUM INTO / load_extension, endless queries, broken SQLite files and SQL dumps,
//! bad credentials, and garbage on the node-to-node port.
//!
//! Every case must get a 4xx, or a 200 or 503 whose JSON carries an error; never another 5xx,
//! a dropped connection or a hang. Afterwards the node is still ready, its earlier data is
//! intact, and no file has appeared outside its data directory.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{DataDir, Node};

/// One request of the corpus.
struct Case {
    what: String,
    method: reqwest::Method,
    path: String,
    body: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    /// Whether the answer must be an error (4xx, or an error in the JSON), not a success.
    must_error: bool,
}

fn case(what: impl Into<String>, method: &str, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
    Case {
        what: what.into(),
        method: method.parse().unwrap(),
        path: path.into(),
        body: body.into(),
        headers: Vec::new(),
        must_error: false,
    }
}

/// A case whose answer must be an error.
fn refused(what: impl Into<String>, method: &str, path: impl Into<String>, body: impl Into<Vec<u8>>) -> Case {
    Case {
        must_error: true,
        ..case(what, method, path, body)
    }
}

/// Bodies that are not valid statement lists, or carry values of the wrong type.
fn bad_bodies() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = [
        ("empty", ""),
        ("open bracket", "["),
        ("open brace", "{"),
        ("object", r#"{"statements": ["SELECT 1"]}"#),
        ("number", "42"),
        ("string", r#""SELECT 1""#),
        ("null", "null"),
        ("array of numbers", "[1, 2]"),
        ("array of nulls", "[null]"),
        ("array of objects", r#"[{"sql": "SELECT 1"}]"#),
        ("empty statement array", "[[]]"),
        ("statement not a string", "[[1]]"),
        ("object parameter", r#"[["SELECT ?", {"a": 1}]]"#),
        ("array parameter", r#"[["SELECT ?", [1, 2]]]"#),
        ("nested named parameter", r#"[["SELECT :a", {"a": [1]}]]"#),
        ("named parameter object", r#"[["SELECT :a", {"a": {"b": 1}}]]"#),
        ("huge number", r#"[["SELECT ?", 1e999]]"#),
        ("huge integer", r#"[["SELECT ?", 123456789012345678901234567890]]"#),
        ("trailing garbage", r#"["SELECT 1"] garbage"#),
        ("trailing comma", r#"["SELECT 1",]"#),
        ("single quotes", "['SELECT 1']"),
        ("unterminated string", r#"["SELECT 1]"#),
        ("bad escape", r#"["SELECT '\q'"]"#),
        ("lone surrogate", r#"["SELECT '\ud800'"]"#),
        ("control character", "[\"SELECT '\u{1}'\"]"),
        ("mixed statement kinds", r#"["SELECT 1", ["SELECT ?", 1], 7]"#),
        ("bad SQL", r#"["SELEKT nonsense"]"#),
        ("unknown table", r#"["SELECT * FROM no_such_table"]"#),
        ("too many parameters", r#"[["SELECT ?", 1, 2, 3]]"#),
        ("parameter number out of range", r#"[["SELECT ?99999", 1]]"#),
    ]
    .into_iter()
    .map(|(w, b)| (w.to_string(), b.as_bytes().to_vec()))
    .collect();
    v.push(("invalid UTF-8".into(), b"[\"SELECT '\xff\xfe'\"]".to_vec()));
    v.push(("invalid UTF-8 outside strings".into(), b"[\xc3\x28]".to_vec()));
    v.push((
        "deeply nested arrays".into(),
        format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
    ));
    v.push((
        "deeply nested objects".into(),
        format!("[[\"SELECT ?\", {}1{}]]", "{\"a\":".repeat(3000), "}".repeat(3000)).into_bytes(),
    ));
    v.push(("only open brackets".into(), "[".repeat(100_000).into_bytes()));
    v
}

/// Query strings each endpoint refuses.
fn bad_params() -> Vec<&'static str> {
    vec![
        "timeout=abc",
        "timeout=-",
        "db_timeout=1parsec",
        "freshness=soon",
        "freshness_strict",
        "linearizable_timeout=x",
        "retries=many",
        "trailing_logs=lots",
        "q=",
        "level=linearizable&timeout=1y",
    ]
}

/// Reserved PRAGMAs, spelled every way SQLite accepts.
fn pragmas() -> Vec<&'static str> {
    vec![
        "PRAGMA synchronous=0",
        "pragma SYNCHRONOUS = OFF",
        "PRAGMA synchronous(0)",
        "PRAGMA/**/synchronous=0",
        "PRAGMA main . synchronous = 0",
        "PRAGMA \"main\".\"journal_mode\"=DELETE",
        "PRAGMA journal_mode = MEMORY",
        "PRAGMA wal_checkpoint",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA main.wal_checkpoint(FULL)",
        "PRAGMA query_only=1",
        "PRAGMA query_only(true)",
        "PRAGMA wal_autocheckpoint=10",
        "  \n PRAGMA journal_mode = WAL",
        "SELECT 1; PRAGMA journal_mode=delete",
        "PrAgMa SyNcHrOnOuS='full'",
        "PRAGMA soft_heap_limit=1048576",
        "PRAGMA hard_heap_limit(1048576)",
        // Unterminated quotes ending in a multi-byte character (found by the fuzz tests).
        "PRAGMA \"\u{16af4}",
        "PRAGMA main.'\u{1f574}",
        "PRAGMA `\u{e9}",
    ]
}

/// Statements that would reach a file other than the database, or load code.
fn escapes(outside: &Path) -> Vec<String> {
    let f = outside.join("escaped.db").display().to_string();
    vec![
        format!("ATTACH DATABASE '{f}' AS other"),
        format!("attach '{f}' as x"),
        format!("ATTACH 'file:{f}?mode=rwc' AS y"),
        "DETACH DATABASE main".to_string(),
        format!("VACUUM INTO '{f}'"),
        format!("VACUUM main INTO '{f}'"),
        format!("SELECT load_extension('{}/libevil.so')", outside.display()),
        "SELECT load_extension('libc.so.6', 'system')".to_string(),
        "UPDATE sqlite_master SET sql = 'x' WHERE name = 'keep'".to_string(),
        format!("SELECT readfile('{f}')"),
        format!("SELECT writefile('{f}', 'x')"),
        "SELECT * FROM sqlite_dbpage".to_string(),
        "CREATE VIRTUAL TABLE v USING fts5(x); INSERT INTO v_data VALUES(1, x'00')".to_string(),
    ]
}

/// Files that are not sound SQLite databases, or SQL dumps with errors.
fn bad_files() -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE loaded(x); INSERT INTO loaded VALUES(1),(2),(3);")
        .unwrap();
    drop(c);
    let good = std::fs::read(&path).unwrap();
    let mut corrupted = good.clone();
    for b in corrupted.iter_mut().skip(100).take(400) {
        *b ^= 0x5a;
    }
    let mut bad_page_size = good.clone();
    bad_page_size[16] = 3;
    let mut header_only = b"SQLite format 3\0".to_vec();
    header_only.extend_from_slice(&[0u8; 84]);
    let mut header_then_garbage = b"SQLite format 3\0".to_vec();
    header_then_garbage.extend((0..8192u32).map(|i| (i * 7919 % 251) as u8));
    vec![
        ("truncated database".into(), good[..100].to_vec()),
        ("half a database".into(), good[..good.len() / 2].to_vec()),
        ("corrupted pages".into(), corrupted),
        ("impossible page size".into(), bad_page_size),
        ("header only".into(), header_only),
        ("header then garbage".into(), header_then_garbage),
        (
            "dump with a syntax error".into(),
            b"CREATE TABLE d(x); INSERT INTO d VALUES(1; COMMIT;".to_vec(),
        ),
        (
            "dump with a reserved pragma".into(),
            b"PRAGMA journal_mode=OFF; CREATE TABLE e(x);".to_vec(),
        ),
        ("dump that attaches".into(), b"ATTACH '/tmp/x.db' AS x;".to_vec()),
        (
            "binary garbage".into(),
            (0..4096u32).map(|i| (i * 31 % 256) as u8).collect(),
        ),
        (
            "text with a NUL byte".into(),
            b"CREATE TABLE n(x);\0DROP TABLE keep;".to_vec(),
        ),
    ]
}

fn corpus(outside: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    for (what, body) in bad_bodies() {
        for path in ["/db/execute", "/db/query", "/db/request"] {
            cases.push(case(format!("{path}: {what}"), "POST", path, body.clone()));
        }
    }
    for params in bad_params() {
        for path in [
            "/db/execute",
            "/db/query",
            "/db/request",
            "/db/backup",
            "/status",
            "/nodes",
            "/readyz",
        ] {
            let method = if path.starts_with("/db/") && path != "/db/backup" {
                "POST"
            } else {
                "GET"
            };
            cases.push(case(
                format!("{path}?{params}"),
                method,
                format!("{path}?{params}"),
                "[\"SELECT 1\"]",
            ));
        }
    }
    for p in pragmas() {
        let body = serde_json::to_vec(&[p]).unwrap();
        cases.push(refused(format!("execute {p}"), "POST", "/db/execute", body.clone()));
        cases.push(refused(format!("query {p}"), "POST", "/db/query", body.clone()));
        cases.push(refused(format!("request {p}"), "POST", "/db/request", body));
    }
    for sql in escapes(outside) {
        let body = serde_json::to_vec(&[&sql]).unwrap();
        cases.push(refused(format!("execute {sql}"), "POST", "/db/execute", body.clone()));
        cases.push(refused(format!("query {sql}"), "POST", "/db/query", body));
    }
    // Accepted and ignored in defensive mode: the checks at the end show they changed nothing.
    for sql in [
        "PRAGMA writable_schema=ON",
        "PRAGMA schema_version=1",
        "PRAGMA writable_schema=1; UPDATE sqlite_master SET sql='x'",
    ] {
        let body = serde_json::to_vec(&[sql]).unwrap();
        cases.push(case(format!("execute {sql}"), "POST", "/db/execute", body));
    }
    cases.push(case("load an empty body", "POST", "/db/load", ""));
    let endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let endless_write =
        "INSERT INTO keep(v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c";
    for (path, sql) in [
        ("/db/query?db_timeout=300ms", endless),
        ("/db/request?db_timeout=300ms", endless),
        ("/db/execute?db_timeout=300ms", endless_write),
        ("/db/query?db_timeout=300ms&level=strong", endless),
    ] {
        cases.push(refused(
            format!("endless {path}"),
            "POST",
            path,
            serde_json::to_vec(&[sql]).unwrap(),
        ));
    }
    for (what, bytes) in bad_files() {
        cases.push(refused(format!("load {what}"), "POST", "/db/load", bytes.clone()));
        cases.push(refused(format!("boot {what}"), "POST", "/boot", bytes));
    }
    cases.push(refused(
        "a body past the limit",
        "POST",
        "/db/execute",
        vec![b' '; 2 * 1024 * 1024],
    ));
    for (method, path) in [
        ("PUT", "/db/execute"),
        ("DELETE", "/db/query"),
        ("PATCH", "/status"),
        ("GET", "/db/load"),
        ("GET", "/boot"),
        ("GET", "/remove"),
        ("PUT", "/leader"),
        ("GET", "/no/such/path"),
        ("GET", "/db/"),
    ] {
        cases.push(case(format!("{method} {path}"), method, path, ""));
    }
    for body in ["{}", "[]", r#"{"id": 7}"#, r#"{"id": "x", "extra": 1}"#, "not json"] {
        cases.push(case(format!("remove {body}"), "DELETE", "/remove", body));
    }
    for body in [r#"{"id": 7}"#, "not json", r#"{"id": "nobody"}"#] {
        cases.push(case(format!("leader {body}"), "POST", "/leader", body));
    }
    let mut weird = case("JSON with a text content type", "POST", "/db/query", r#"["SELECT 1"]"#);
    weird.headers.push(("content-type", b"text/plain".to_vec()));
    cases.push(weird);
    let mut weird = case("binary content type", "POST", "/db/execute", "\u{0}\u{1}\u{2}");
    weird
        .headers
        .push(("content-type", b"application/octet-stream".to_vec()));
    cases.push(weird);
    cases
}

/// Sends a case; its status and body, or what went wrong.
async fn send(client: &reqwest::Client, node: &Node, c: &Case) -> Result<(u16, String), String> {
    let mut req = client
        .request(c.method.clone(), node.url(&c.path))
        .timeout(Duration::from_secs(20))
        .body(c.body.clone());
    for (k, v) in &c.headers {
        req = req.header(*k, v.clone());
    }
    let r = req.send().await.map_err(|e| format!("no answer: {e}"))?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| format!("body cut off: {e}"))?;
    Ok((status, body))
}

/// Whether an answer is acceptable for bad input: a 4xx, a 503, or a 200, which must carry an
/// error when the case must be refused (others may be valid after all, e.g. `[]`).
fn acceptable(c: &Case, status: u16, body: &str) -> bool {
    match status {
        400..=499 | 503 => true,
        200 => !c.must_error || body.contains("\"error\""),
        _ => false,
    }
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn a_corpus_of_bad_input_gets_clear_errors_and_harms_nothing() {
    let d = DataDir::new();
    let parent = d.path.parent().unwrap().to_path_buf();
    let node = Node::spawn_in(&d.path, &["-http-max-body-size", "1048576"]);
    node.wait_ready().await;
    node.execute(r#"["CREATE TABLE keep(id INTEGER PRIMARY KEY, v)", "INSERT INTO keep(v) VALUES('precious')"]"#)
        .await;
    let outside = tempfile::tempdir().unwrap();
    let before_parent = listing(&parent);
    // A new connection for every case: the node closes one whose request it refused before
    // reading all of it (413), and a pooled client could send the next case on it as it closes.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let cases = corpus(outside.path());
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        match send(&client, &node, c).await {
            Ok((status, body)) if acceptable(c, status, &body) => {}
            Ok((status, body)) => failures.push(format!("{}: {status} {body}", c.what)),
            Err(e) => failures.push(format!("{}: {e}", c.what)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // Specific answers.
    let pragma = send(
        &client,
        &node,
        &case("", "POST", "/db/execute", r#"["PRAGMA synchronous=0"]"#),
    )
    .await;
    assert_eq!(
        pragma,
        Ok((200, r#"{"results":[],"error":"disallowed pragma"}"#.to_string()))
    );
    let big = send(
        &client,
        &node,
        &case("", "POST", "/db/execute", vec![b' '; 2 * 1024 * 1024]),
    )
    .await;
    assert_eq!(big.map(|(s, _)| s), Ok(413));
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep = send(&client, &node, &case("", "POST", "/db/query", deep))
        .await
        .unwrap();
    assert_eq!(deep.0, 400, "{}", deep.1);
    let endless = send(
        &client,
        &node,
        &case(
            "",
            "POST",
            "/db/query?db_timeout=200ms",
            r#"["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"]"#,
        ),
    )
    .await
    .unwrap();
    assert!(endless.1.contains("query timeout"), "{}", endless.1);

    // The node is whole: ready, its data intact and writable, nothing written elsewhere.
    node.wait_ready().await;
    let rows = node.query("", r#"["SELECT v FROM keep WHERE id = 1"]"#).await;
    assert!(rows.contains(r#"[["precious"]]"#), "{rows}");
    node.execute(r#"["INSERT INTO keep(v) VALUES('after')"]"#).await;
    // The endless insert stopped at its db_timeout left no row behind.
    let count = node.query("", r#"["SELECT count(*) FROM keep"]"#).await;
    assert!(count.contains("[[2]]"), "{count}");
    let check = node.query("", r#"["PRAGMA integrity_check"]"#).await;
    assert!(check.contains(r#"[["ok"]]"#), "{check}");
    assert_eq!(listing(outside.path()), BTreeSet::new());
    assert_eq!(listing(&parent), before_parent);
}

#[tokio::test]
async fn bad_credentials_are_refused_and_change_nothing() {
    let d = DataDir::new();
    let users = d.path.with_extension("users");
    std::fs::write(&users, r#"[{"username": "bob", "password": "pw", "perms": ["all"]}]"#).unwrap();
    let node = Node::spawn_in(&d.path, &["-auth", &users.display().to_string()]);
    let client = reqwest::Client::new();
    // Ready needs a permission too; bob's credentials.
    node.wait_for(Duration::from_secs(30), "ready", || async {
        client
            .get(node.url("/readyz"))
            .basic_auth("bob", Some("pw"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let long = format!("Basic {}", "A".repeat(8000));
    let headers: Vec<Vec<u8>> = vec![
        b"Basic".to_vec(),
        b"Basic ".to_vec(),
        b"Basic !!!!".to_vec(),
        b"Basic Ym9i".to_vec(),
        b"Basic Ym9iOnd4".to_vec(),
        b"Bearer Ym9iOnB3".to_vec(),
        b"Basic Ym9iOnB3 extra".to_vec(),
        b"basic\tYm9iOnB3x".to_vec(),
        b"Basic \xff\xfe".to_vec(),
        long.into_bytes(),
        b"Digest username=\"bob\"".to_vec(),
    ];
    for h in headers {
        let r = client
            .post(node.url("/db/execute"))
            .header("authorization", h.clone())
            .body(r#"["CREATE TABLE t(x)"]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{}", String::from_utf8_lossy(&h));
    }
    let r = client
        .post(node.url("/db/query"))
        .basic_auth("bob", Some("pw"))
        .body(r#"["SELECT name FROM sqlite_master"]"#)
        .send()
        .await
        .unwrap();
    assert!(!r.text().await.unwrap().contains("\"t\""));
}

/// Sends raw bytes to `addr` and reads what comes back (nothing, if the connection is closed).
async fn raw(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn garbage_on_the_node_to_node_port_is_refused_and_the_node_stays_up() {
    let (_d, node) = crate::harness::single().await;
    node.execute(r#"["CREATE TABLE keep(v)", "INSERT INTO keep VALUES('precious')"]"#)
        .await;
    let client = reqwest::Client::new();
    for path in [
        "/raft/append",
        "/raft/vote",
        "/raft/snapshot",
        "/join",
        "/notify",
        "/remove",
        "/forward",
        "/backup",
        "/elect",
        "/stepdown",
    ] {
        for body in [
            &b""[..],
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"{\"json\": true}",
            &[0x7f; 64],
        ] {
            let r = client
                .post(format!("http://{}{path}", node.raft))
                .timeout(Duration::from_secs(10))
                .body(body.to_vec())
                .send()
                .await;
            let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
            assert!((200..500).contains(&status), "{path} {body:?}: {status}");
        }
    }
    for bytes in [
        &b"\x00\x01\x02\x03 not http at all\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /raft/append HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        raw(&node.raft, bytes).await;
    }
    node.wait_ready().await;
    let rows = node.query("?level=strong", r#"["SELECT v FROM keep"]"#).await;
    assert!(rows.contains("precious"), "{rows}");
}
