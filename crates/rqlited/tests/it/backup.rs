//! Whole-database operations: backup, load, boot.

use std::io::Read;

use crate::harness::{DataDir, Node, single};

async fn get_bytes(n: &Node, path: &str) -> (u16, Vec<u8>, String) {
    let r = reqwest::get(n.url(path)).await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, r.bytes().await.unwrap().to_vec(), ct)
}

async fn post_bytes(n: &Node, path: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(n.url(path))
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A SQLite file with `rows` rows in `numbers(n)`, in rollback-journal mode, as clients make.
fn sqlite_file(dir: &std::path::Path, rows: i64) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("numbers-{rows}.db"));
    let _ = std::fs::remove_file(&path);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("CREATE TABLE numbers(n INTEGER)").unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute("INSERT INTO numbers VALUES(?1)", [i]).unwrap();
    }
    tx.commit().unwrap();
    drop(c);
    std::fs::read(&path).unwrap()
}

#[tokio::test]
async fn backups_in_every_format() {
    let (d, n) = single().await;
    n.execute(r#"["CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT)", "INSERT INTO foo VALUES(1, 'fiona')", "INSERT INTO foo VALUES(2, NULL)", "CREATE INDEX foo_name ON foo(name)", "CREATE TABLE bar(x)"]"#)
        .await;

    // Binary: a SQLite file (WAL-mode header, as rqlite's) that opens and holds the rows.
    let (s, bytes, ct) = get_bytes(&n, "/db/backup").await;
    assert_eq!((s, ct.as_str()), (200, "application/octet-stream"));
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    assert_eq!(&bytes[18..20], &[2, 2]);
    let path = d.path.with_extension("backup.db");
    std::fs::write(&path, &bytes).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let count: i64 = c.query_row("SELECT COUNT(*) FROM foo", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 2);

    // DELETE mode, compressed, vacuumed.
    let (_, bytes, _) = get_bytes(&n, "/db/backup?fmt=delete").await;
    assert_eq!(&bytes[18..20], &[1, 1]);
    let (_, gz, _) = get_bytes(&n, "/db/backup?compress&vacuum").await;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut raw).unwrap();
    assert_eq!(&raw[..16], b"SQLite format 3\0");

    // SQL: rqlite's dump layout, and tables= limits it.
    let (s, bytes, ct) = get_bytes(&n, "/db/backup?fmt=sql").await;
    assert_eq!((s, ct.as_str()), (200, "application/sql"));
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE bar(x);\nCREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT);\nINSERT INTO \"foo\" VALUES(1,'fiona');\nINSERT INTO \"foo\" VALUES(2,NULL);\nCREATE INDEX foo_name ON foo(name);\nCOMMIT;\n"
    );
    let (_, bytes, _) = get_bytes(&n, "/db/backup?fmt=sql&tables=bar").await;
    assert!(!String::from_utf8(bytes).unwrap().contains("INSERT INTO \"foo\""));

    // vacuum is for binary backups only.
    let (s, bytes, _) = get_bytes(&n, "/db/backup?fmt=sql&vacuum").await;
    assert_eq!((s, bytes.as_slice()), (400, b"invalid backup format\n".as_slice()));
}

#[tokio::test]
async fn load_replaces_the_database_and_survives_kill_9() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &[]).await;
    n.execute(r#"["CREATE TABLE old(x)", "INSERT INTO old VALUES(1)"]"#)
        .await;

    // Phase 1: a SQLite file replaces the database (in several log entries: it is > 4 MiB).
    let file = sqlite_file(&d.path.with_extension("src"), 400_000);
    assert!(file.len() > 4 * 1024 * 1024);
    let (s, body) = post_bytes(&n, "/db/load", file).await;
    assert_eq!((s, body.as_str()), (200, r#"{"results":[]}"#));
    assert_eq!(
        n.query("", r#"["SELECT COUNT(*), MAX(n) FROM numbers"]"#).await,
        r#"{"results":[{"columns":["COUNT(*)","MAX(n)"],"types":["integer","integer"],"values":[[400000,399999]]}]}"#
    );
    assert!(n.query("", r#"["SELECT * FROM old"]"#).await.contains("no such table"));

    // Phase 2: a file with a SQLite header but torn contents is refused; the data stays.
    let mut torn = sqlite_file(&d.path.with_extension("src"), 1000);
    torn.truncate(torn.len() / 2);
    for b in torn.iter_mut().skip(100) {
        *b = 0xAB;
    }
    // It is the client's error, answered as rqlite answers a body that is not SQLite.
    let (s, body) = post_bytes(&n, "/db/load", torn).await;
    assert_eq!((s, body.as_str()), (400, "invalid SQLite data\n"));
    assert!(
        n.query("", r#"["SELECT COUNT(*) FROM numbers"]"#)
            .await
            .contains("[[400000]]")
    );

    // Phase 3: kill -9 and restart: the loaded database is there.
    n.kill_and_restart().await;
    assert!(
        n.query("", r#"["SELECT COUNT(*) FROM numbers"]"#)
            .await
            .contains("[[400000]]")
    );
    n.execute(r#"["INSERT INTO numbers VALUES(-1)"]"#).await;

    // Phase 4: a SQL dump is run as one statement.
    let dump = "BEGIN TRANSACTION;\nCREATE TABLE d(x);\nINSERT INTO d VALUES(7);\nCOMMIT;\n";
    let (s, body) = post_bytes(&n, "/db/load", dump.as_bytes().to_vec()).await;
    assert_eq!(s, 200, "{body}");
    assert!(n.query("", r#"["SELECT x FROM d"]"#).await.contains("[[7]]"));
}

#[tokio::test]
async fn boot_takes_a_file_and_keeps_it_across_kill_9() {
    let d = DataDir::new();
    let mut n = Node::start_in(&d.path, &[]).await;
    let (s, body) = post_bytes(&n, "/boot", b"definitely not a database".to_vec()).await;
    assert_eq!((s, body.as_str()), (400, "invalid SQLite data\n"));

    let file = sqlite_file(&d.path.with_extension("src"), 1000);
    let (s, _) = post_bytes(&n, "/boot", file).await;
    assert_eq!(s, 200);
    // Immediately readable, no waiting.
    assert!(
        n.query("", r#"["SELECT COUNT(*) FROM numbers"]"#)
            .await
            .contains("[[1000]]")
    );
    n.kill_and_restart().await;
    assert!(
        n.query("", r#"["SELECT COUNT(*) FROM numbers"]"#)
            .await
            .contains("[[1000]]")
    );
    // Writes go on from there.
    n.execute(r#"["INSERT INTO numbers VALUES(1000)"]"#).await;
    n.kill_and_restart().await;
    assert!(
        n.query("", r#"["SELECT COUNT(*) FROM numbers"]"#)
            .await
            .contains("[[1001]]")
    );
}
