//! Automatic backups and restores (`-auto-backup`, `-auto-restore`) against real object stores
//! on loopback: moto's S3 server and the GCS emulator (both from PyPI, in the virtual
//! environment `scripts/test.sh` makes), and local directories.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{BIN, DataDir, Node, free_port, refused_start, test_venv};

/// A program of the test virtual environment.
fn venv_bin(name: &str) -> PathBuf {
    test_venv().join("bin").join(name)
}

/// A server process on a loopback port, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    async fn start(program: &str, args: &[String], ready_path: &str) -> Server {
        let port = free_port();
        let args: Vec<String> = args.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
        let bin = venv_bin(program);
        let child = Command::new(&bin)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} ({e}); scripts/test.sh installs it", bin.display()));
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{}{ready_path}", server.url)).await
                && r.status().is_success()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "{program} did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// moto's S3 server.
    async fn moto() -> Server {
        let args = ["-H", "127.0.0.1", "-p", "{port}"].map(String::from);
        Server::start("moto_server", &args, "/").await
    }

    /// The GCS emulator, in memory, with bucket `bucket`.
    async fn gcs(bucket: &str) -> Server {
        let args = [
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--in-memory",
            "--default-bucket",
            bucket,
        ]
        .map(String::from);
        Server::start("gcp-storage-emulator", &args, &format!("/storage/v1/b/{bucket}")).await
    }

    async fn create_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{r:?}");
    }

    /// An S3 object's body and its `x-rqlite-auto-backup-id` metadata, if it exists.
    async fn s3_object(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, String)> {
        let r = reqwest::get(format!("{}/{bucket}/{key}", self.url)).await.ok()?;
        if !r.status().is_success() {
            return None;
        }
        let id = r
            .headers()
            .get("x-amz-meta-x-rqlite-auto-backup-id")?
            .to_str()
            .ok()?
            .to_string();
        Some((r.bytes().await.ok()?.to_vec(), id))
    }

    /// A GCS object's body and its `rqlite-auto-backup-id` metadata, if it exists.
    async fn gcs_object(&self, bucket: &str, name: &str) -> Option<(Vec<u8>, String)> {
        let name = name.replace('/', "%2F");
        let meta: Value = reqwest::get(format!("{}/storage/v1/b/{bucket}/o/{name}", self.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let id = meta["metadata"]["rqlite-auto-backup-id"].as_str()?.to_string();
        let body = reqwest::get(format!("{}/storage/v1/b/{bucket}/o/{name}?alt=media", self.url))
            .await
            .ok()?
            .bytes()
            .await
            .ok()?;
        Some((body.to_vec(), id))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration file in `dir`.
fn config_file(dir: &Path, name: &str, v: Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    path.display().to_string()
}

async fn uploader(node: &Node) -> Value {
    node.expvar().await["uploader"].clone()
}

/// Waits (bounded) until the node's `uploader` counter `key` is at least `n`.
async fn wait_counter(node: &Node, key: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let u = uploader(node).await;
        if u[key].as_i64().unwrap_or(0) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{key} did not reach {n}: {u}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rows of `SELECT * FROM t ORDER BY x` in a SQLite file's bytes (gzipped or not).
fn rows_in(bytes: &[u8]) -> Vec<i64> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let data = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    } else {
        bytes.to_vec()
    };
    std::fs::write(tmp.path(), data).unwrap();
    let c = rusqlite::Connection::open(tmp.path()).unwrap();
    let mut s = c.prepare("SELECT x FROM t ORDER BY x").unwrap();
    s.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
}

#[tokio::test]
async fn a_directory_gets_a_backup_at_each_interval_only_when_data_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let backups = tmp.path().join("backups");
    let cfg = config_file(
        tmp.path(),
        "backup.json",
        json!({"version": 1, "type": "file", "interval": "200ms", "timestamp": true,
               "sub": {"dir": backups, "name": "db.sqlite.gz"}}),
    );
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &["-auto-backup", &cfg]).await;
    node.execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    wait_counter(&node, "num_uploads_ok", 1).await;
    // Nothing changes: every interval is skipped, and no file is added.
    let skipped = uploader(&node).await["num_uploads_skipped"].as_i64().unwrap();
    wait_counter(&node, "num_uploads_skipped", skipped + 3).await;
    assert_eq!(uploader(&node).await["num_uploads_ok"], 1);
    node.execute(r#"["INSERT INTO t VALUES(2)"]"#).await;
    wait_counter(&node, "num_uploads_ok", 2).await;

    // Timestamped, gzipped files; METADATA.json names the newest and its index.
    let mut files: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_db.sqlite.gz"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{files:?}");
    let newest = files.last().unwrap();
    assert_eq!(rows_in(&std::fs::read(newest).unwrap()), [1, 2]);
    let md: Value = serde_json::from_slice(&std::fs::read(backups.join("METADATA.json")).unwrap()).unwrap();
    assert_eq!(md["name"], newest.display().to_string());
    let status = node.status().await;
    assert_eq!(md["id"], status["store"]["db_applied_index"].to_string());
    let s = &status["auto_backups"];
    assert_eq!(s["upload_interval"], "200ms");
    assert_eq!(s["last_outcome"], "ok");
    assert_eq!(s["last_index"], md["id"]);
    assert_eq!(
        s["upload_destination"],
        format!("dir:{}, file:db.sqlite.gz", backups.display())
    );
    let u = uploader(&node).await;
    assert_eq!(u["last_upload_bytes"], std::fs::metadata(newest).unwrap().len());
    assert!(
        u["total_upload_bytes"].as_i64() > u["last_upload_bytes"].as_i64(),
        "{u}"
    );

    // A booted database bypasses the log, and is a change too.
    let booted = tmp.path().join("boot.db");
    let c = rusqlite::Connection::open(&booted).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES(99);").unwrap();
    drop(c);
    let r = reqwest::Client::new()
        .post(node.url("/boot"))
        .body(std::fs::read(&booted).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_counter(&node, "num_uploads_ok", 3).await;
    let md: Value = serde_json::from_slice(&std::fs::read(backups.join("METADATA.json")).unwrap()).unwrap();
    let newest = md["name"].as_str().unwrap();
    assert_eq!(rows_in(&std::fs::read(newest).unwrap()), [99]);
}

#[tokio::test]
async fn s3_backups_restore_a_new_node_and_survive_a_missing_bucket() {
    let moto = Server::moto().await;
    let tmp = tempfile::tempdir().unwrap();
    let sub = json!({"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1",
                     "bucket": "rqlite-backups", "path": "prod/db.sqlite.gz",
                     "endpoint": moto.url, "force_path_style": true});
    let backup = config_file(
        tmp.path(),
        "backup.json",
        json!({"version": 1, "type": "s3", "interval": "200ms", "sub": sub}),
    );
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &["-auto-backup", &backup]).await;
    node.execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(7)"]"#)
        .await;
    // The bucket does not exist yet: uploads fail, are counted, and the node keeps serving.
    wait_counter(&node, "num_uploads_fail", 2).await;
    let s = node.status().await["auto_backups"].clone();
    assert_eq!(s["last_outcome"], "failed");
    assert!(s["last_error"].as_str().unwrap().contains("failed to upload"), "{s}");
    node.execute(r#"["INSERT INTO t VALUES(8)"]"#).await;
    moto.create_bucket("rqlite-backups").await;
    wait_counter(&node, "num_uploads_ok", 1).await;
    let (body, id) = moto.s3_object("rqlite-backups", "prod/db.sqlite.gz").await.unwrap();
    assert_eq!(rows_in(&body), [7, 8]);
    assert_eq!(id, node.status().await["store"]["db_applied_index"].to_string());
    drop(node);

    // A new node restores from it, and is not ready until it has.
    let restore = config_file(
        tmp.path(),
        "restore.json",
        json!({"version": 1, "type": "s3", "timeout": "20s", "sub": sub}),
    );
    let d2 = DataDir::new();
    let fresh = Node::start_in(&d2.path, &["-auto-restore", &restore]).await;
    let (_, body) = fresh.get("/db/query?q=SELECT+x+FROM+t+ORDER+BY+x").await;
    assert!(body.contains("[[7],[8]]"), "{body}");
    let v = fresh.expvar().await;
    assert_eq!(v["downloader"]["num_downloads_ok"], 1);
    assert_eq!(v["store"]["num_auto_restores"], 1);
    // The downloaded file is gone from the data directory.
    let leftovers: Vec<String> = std::fs::read_dir(&d2.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rqlite-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn gcs_backups_and_restores_through_the_emulator() {
    let gcs = Server::gcs("rq-gcs").await;
    let tmp = tempfile::tempdir().unwrap();
    let sub = json!({"project_id": "p", "bucket": "rq-gcs", "name": "backups/db.sqlite",
                     "endpoint": gcs.url});
    let backup = config_file(
        tmp.path(),
        "backup.json",
        json!({"version": 1, "type": "gcs", "interval": 200_000_000, "no_compress": true, "vacuum": true, "sub": sub}),
    );
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &["-auto-backup", &backup]).await;
    node.execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(3)"]"#)
        .await;
    wait_counter(&node, "num_uploads_ok", 1).await;
    let (body, id) = gcs.gcs_object("rq-gcs", "backups/db.sqlite").await.unwrap();
    assert!(body.starts_with(b"SQLite format 3\0"), "not compressed");
    assert_eq!(rows_in(&body), [3]);
    assert_eq!(id, node.status().await["store"]["db_applied_index"].to_string());
    drop(node);

    let restore = config_file(
        tmp.path(),
        "restore.json",
        json!({"version": 1, "type": "gcs", "sub": sub}),
    );
    let d2 = DataDir::new();
    let fresh = Node::start_in(&d2.path, &["-auto-restore", &restore]).await;
    let (_, body) = fresh.get("/db/query?q=SELECT+x+FROM+t").await;
    assert!(body.contains("[[3]]"), "{body}");

    // A node with data of its own skips the restore.
    fresh.execute(r#"["INSERT INTO t VALUES(4)"]"#).await;
    let mut fresh = fresh;
    fresh.kill_and_restart().await;
    let (_, body) = fresh.get("/db/query?q=SELECT+x+FROM+t+ORDER+BY+x").await;
    assert!(body.contains("[[3],[4]]"), "{body}");
    assert_eq!(fresh.expvar().await["downloader"]["num_downloads_ok"], 0);
}

/// A stand-in for Google's OAuth token endpoint: checks the service account's signed JWT
/// with the account's public key and answers with a token; records each assertion's claims.
async fn token_endpoint(public_pem: String, uri: String) -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{uri}", listener.local_addr().unwrap());
    let (record, aud) = (seen.clone(), url.clone());
    let app = axum::Router::new().route(
        &uri,
        axum::routing::post(move |body: String| {
            let (record, aud, public_pem) = (record.clone(), aud.clone(), public_pem.clone());
            async move {
                let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
                let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).unwrap();
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
                v.set_audience(&[aud]);
                let claims = jsonwebtoken::decode::<Value>(&form["assertion"], &key, &v)
                    .expect("a JWT signed with the account's key")
                    .claims;
                record.lock().unwrap().push(claims);
                axum::Json(json!({"access_token": "token-1", "expires_in": 3600, "token_type": "Bearer"}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn gcs_with_a_service_account_gets_a_token_and_keeps_it() {
    let gcs = Server::gcs("rq-sa").await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let (token_uri, seen) = token_endpoint(key.public_key_pem(), "/token".into()).await;
    let tmp = tempfile::tempdir().unwrap();
    let account = config_file(
        tmp.path(),
        "account.json",
        json!({"type": "service_account", "client_email": "backup@p.iam.gserviceaccount.com",
               "private_key": key.serialize_pem(), "token_uri": token_uri}),
    );
    let backup = config_file(
        tmp.path(),
        "backup.json",
        json!({"version": 1, "type": "gcs", "interval": "200ms",
               "sub": {"project_id": "p", "bucket": "rq-sa", "name": "db.gz", "endpoint": gcs.url,
                       "credentials_path": account}}),
    );
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &["-auto-backup", &backup]).await;
    node.execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(5)"]"#)
        .await;
    wait_counter(&node, "num_uploads_ok", 1).await;
    node.execute(r#"["INSERT INTO t VALUES(6)"]"#).await;
    wait_counter(&node, "num_uploads_ok", 2).await;
    let (body, _) = gcs.gcs_object("rq-sa", "db.gz").await.unwrap();
    assert_eq!(rows_in(&body), [5, 6]);
    // One token served every request since.
    let claims = seen.lock().unwrap().clone();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0]["iss"], "backup@p.iam.gserviceaccount.com");
    assert_eq!(
        claims[0]["scope"],
        "https://www.googleapis.com/auth/devstorage.read_write"
    );
}

#[tokio::test]
async fn a_cluster_uploads_from_its_leader_only_and_a_new_leader_does_not_upload_the_same_data() {
    let moto = Server::moto().await;
    moto.create_bucket("cluster").await;
    let tmp = tempfile::tempdir().unwrap();
    let backup = config_file(
        tmp.path(),
        "backup.json",
        json!({"version": 1, "type": "s3", "interval": "200ms",
               "sub": {"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1",
                       "bucket": "cluster", "path": "db.gz", "endpoint": moto.url, "force_path_style": true}}),
    );
    let dirs: Vec<DataDir> = (0..3).map(|_| DataDir::new()).collect();
    let mut nodes = vec![Node::start_in(&dirs[0].path, &["-node-id", "a0", "-auto-backup", &backup]).await];
    for (i, d) in dirs.iter().enumerate().skip(1) {
        let id = format!("a{i}");
        let join = nodes[0].raft.clone();
        nodes.push(Node::start_in(&d.path, &["-node-id", &id, "-join", &join, "-auto-backup", &backup]).await);
    }
    nodes[0]
        .execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    wait_counter(&nodes[0], "num_uploads_ok", 1).await;
    let index = nodes[0].status().await["store"]["db_applied_index"].clone();
    // Followers apply the same entries and hold the same index, but never upload.
    for n in &nodes[1..] {
        n.wait_for(Duration::from_secs(10), "the write applied", || async {
            n.status().await["store"]["db_applied_index"] == index
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    for n in &nodes[1..] {
        let u = uploader(n).await;
        assert_eq!(
            (u["num_uploads_ok"].as_i64(), u["num_uploads_skipped"].as_i64()),
            (Some(0), Some(0)),
            "{u}"
        );
    }

    // The leader dies; the new one finds the ID it would upload already there.
    nodes.remove(0).kill();
    let mut leader = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while leader.is_none() {
        for (i, n) in nodes.iter().enumerate() {
            if n.status().await["store"]["raft"]["state"] == "Leader" {
                leader = Some(i);
            }
        }
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = &nodes[leader.unwrap()];
    wait_counter(leader, "num_uploads_skipped_id", 1).await;
    assert_eq!(uploader(leader).await["num_uploads_ok"], 0);
    leader.execute(r#"["INSERT INTO t VALUES(2)"]"#).await;
    wait_counter(leader, "num_uploads_ok", 1).await;
    let (body, _) = moto.s3_object("cluster", "db.gz").await.unwrap();
    assert_eq!(rows_in(&body), [1, 2]);
}

#[tokio::test]
async fn a_failed_restore_stops_the_node_unless_told_to_continue() {
    let moto = Server::moto().await;
    moto.create_bucket("empty").await;
    let tmp = tempfile::tempdir().unwrap();
    let sub = json!({"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1",
                     "bucket": "empty", "path": "missing.gz", "endpoint": moto.url, "force_path_style": true});
    let stop = config_file(tmp.path(), "stop.json", json!({"version": 1, "type": "s3", "sub": sub}));
    let d = DataDir::new();
    let out = Command::new(BIN)
        .args([
            "-http-addr",
            "127.0.0.1:0",
            "-raft-addr",
            "127.0.0.1:0",
            "-auto-restore",
            &stop,
        ])
        .arg(&d.path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("failed to download auto-restore file"), "{err}");

    let go_on = config_file(
        tmp.path(),
        "continue.json",
        json!({"version": 1, "type": "s3", "continue_on_failure": true, "sub": sub}),
    );
    let node = Node::start_in(&d.path, &["-auto-restore", &go_on]).await;
    assert_eq!(node.expvar().await["downloader"]["num_downloads_fail"], 1);
}

#[test]
fn configurations_and_combinations_rqlite_refuses_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = config_file(
        tmp.path(),
        "bad.json",
        json!({"version": 2, "type": "file", "interval": "1s"}),
    );
    let relative = config_file(
        tmp.path(),
        "rel.json",
        json!({"type": "file", "interval": "1s", "sub": {"dir": "relative", "name": "x"}}),
    );
    let restore = config_file(tmp.path(), "restore.json", json!({"type": "s3", "sub": {}}));
    let dir = tmp.path().join("data");
    for (args, message) in [
        (
            vec!["-auto-backup", "/no/such/file.json"],
            "failed to read auto-backup file",
        ),
        (
            vec!["-auto-backup", &bad],
            "failed to parse auto-backup file: invalid version",
        ),
        (
            vec!["-auto-backup", &relative],
            "failed to start auto-backups: directory path must be absolute",
        ),
        (
            vec!["-auto-restore", &restore, "-join", "127.0.0.1:4002"],
            "auto-restoring cannot be used when joining a cluster",
        ),
    ] {
        let err = refused_start(&args, &dir);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
