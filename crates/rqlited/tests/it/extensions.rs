//! SQLite extensions (`-extensions-path`): rot13 and carray built here from the C sources in
//! `fixtures/extensions/` (gcc and `libsqlite3-dev`'s `sqlite3ext.h`), and sqlite-vec's `vec0.so`
//! from PyPI (in the virtual environment `scripts/test.sh` makes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{DataDir, Node, refused_start, test_venv};

/// The built extensions: rot13.so, carray.so, a zip and a tar.gz of rot13.so, and a directory
/// with both.
struct Built {
    rot13: PathBuf,
    carray: PathBuf,
    zip: PathBuf,
    tar_gz: PathBuf,
    dir: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("extensions-{}", std::process::id()));
        let dir = out.join("dir");
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/extensions");
        for name in ["rot13", "carray"] {
            let so = dir.join(format!("{name}.so"));
            let status = Command::new("gcc")
                .args(["-g", "-fPIC", "-shared", "-O1"])
                .arg(src.join(format!("{name}.c")))
                .arg("-o")
                .arg(&so)
                .status()
                .expect("gcc (scripts/test.sh installs it, and libsqlite3-dev)");
            assert!(status.success(), "building {name}.so");
        }
        let rot13 = dir.join("rot13.so");
        let bytes = std::fs::read(&rot13).unwrap();
        let zip_path = out.join("rot13.zip");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        z.start_file("rot13.so", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(&bytes).unwrap();
        z.finish().unwrap();
        let tar_path = out.join("rot13.tar.gz");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&tar_path).unwrap(), flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        t.append_path_with_name(&rot13, "rot13.so").unwrap();
        t.into_inner().unwrap().finish().unwrap();
        Built {
            rot13,
            carray: dir.join("carray.so"),
            zip: zip_path,
            tar_gz: tar_path,
            dir,
        }
    })
}

/// sqlite-vec's loadable extension in the test virtual environment.
fn vec0() -> PathBuf {
    let lib = test_venv().join("lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}; scripts/test.sh makes it", lib.display()))
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages/sqlite_vec/vec0.so"))
        .find(|p| p.exists())
        .expect("sqlite-vec installed in the test virtual environment")
}

async fn rot13(node: &Node, level: &str) -> String {
    let (status, body) = node
        .get(&format!("/db/query?level={level}&q=SELECT%20rot13('hello')"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

const UR: &str = r#"[["uryyb"]]"#;

#[tokio::test]
async fn extensions_from_a_file_a_directory_a_zip_a_tar_gz_and_a_list() {
    let b = built();
    let both = format!("{},{}", b.zip.display(), b.carray.display());
    for (path, names) in [
        (b.rot13.display().to_string(), r#"["rot13.so"]"#),
        (b.dir.display().to_string(), r#"["carray.so","rot13.so"]"#),
        (b.zip.display().to_string(), r#"["rot13.so"]"#),
        (b.tar_gz.display().to_string(), r#"["rot13.so"]"#),
        (both, r#"["carray.so","rot13.so"]"#),
    ] {
        let d = DataDir::new();
        let node = Node::start_in(&d.path, &["-extensions-path", &path]).await;
        assert!(rot13(&node, "weak").await.contains(UR), "{path}");
        let (_, status) = node.get("/status?key=extensions.names").await;
        assert_eq!(status, names, "{path}");
    }
    // carray is there as a table-valued function (it needs a pointer bound by C to give rows).
    let d = DataDir::new();
    let node = Node::start_in(&d.path, &["-extensions-path", &b.dir.display().to_string()]).await;
    let (_, body) = node
        .get("/db/query?q=SELECT%20count(*)%20FROM%20carray(NULL,%200)")
        .await;
    assert!(body.contains("[[0]]"), "{body}");
    // SQL's load_extension() stays refused.
    let q = format!("/db/query?q=SELECT%20load_extension('{}')", b.rot13.display());
    let (_, body) = node.get(&q).await;
    assert!(body.contains("not authorized"), "{body}");
    // The shell lists them.
    let out = Command::new(env!("CARGO_BIN_EXE_rqlite"))
        .args(["-H", "127.0.0.1", "-p", node.http.rsplit_once(':').unwrap().1])
        .env_remove("RQLITE_HOST")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b".extensions\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("> carray.so\nrot13.so\n"), "{text}");
}

#[tokio::test]
async fn extensions_stay_loaded_on_followers_and_after_restarts_snapshots_boots_and_loads() {
    let b = built();
    let vec = vec0();
    let paths = format!("{},{}", b.rot13.display(), vec.display());
    let d0 = DataDir::new();
    let mut leader = Node::start_in(&d0.path, &["-node-id", "e0", "-extensions-path", &paths]).await;
    leader
        .execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(rot13('abc'))"]"#)
        .await;
    let (_, body) = leader.get("/db/query?q=SELECT%20vec_version()").await;
    assert!(body.contains("\"v0."), "a real vector search extension: {body}");
    // A snapshot with one trailing entry: a new follower catches up from the snapshot.
    let r = reqwest::Client::new()
        .post(leader.url("/snapshot?trailing_logs=1"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let d1 = DataDir::new();
    let follower = Node::start_in(
        &d1.path,
        &["-node-id", "e1", "-join", &leader.raft, "-extensions-path", &paths],
    )
    .await;
    follower
        .wait_for(Duration::from_secs(10), "the snapshot installed", || async {
            follower
                .get("/db/query?level=none&q=SELECT%20x%20FROM%20t")
                .await
                .1
                .contains("nop")
        })
        .await;
    assert!(rot13(&follower, "none").await.contains(UR));
    leader.kill_and_restart().await;
    assert!(rot13(&leader, "weak").await.contains(UR));
    drop(follower);

    // A single node's whole database replaced, by /boot and by /db/load.
    let d2 = DataDir::new();
    let single = Node::start_in(&d2.path, &["-extensions-path", &paths]).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    let c = rusqlite::Connection::open(file.path()).unwrap();
    c.execute_batch("CREATE TABLE u(y); INSERT INTO u VALUES('zrffntr');")
        .unwrap();
    drop(c);
    for path in ["/boot", "/db/load"] {
        let r = reqwest::Client::new()
            .post(single.url(path))
            .header("Content-Type", "application/octet-stream")
            .body(std::fs::read(file.path()).unwrap())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}");
        let (_, body) = single.get("/db/query?q=SELECT%20rot13(y)%20FROM%20u").await;
        assert!(body.contains(r#"[["message"]]"#), "{path}: {body}");
    }
}

#[test]
fn an_extension_that_does_not_load_stops_the_node_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.so");
    std::fs::write(&junk, "not a shared object").unwrap();
    let dir = tmp.path().join("data");
    for (path, message) in [
        (junk.display().to_string(), "failed to load extension".to_string()),
        (
            "/no/such/extension.so".to_string(),
            "extension path does not exist: /no/such/extension.so".into(),
        ),
    ] {
        let err = refused_start(&["-extensions-path", &path], &dir);
        assert!(err.contains(&message), "{err}");
        if path.contains("junk") {
            assert!(err.contains("junk.so"), "the file is named: {err}");
        }
    }
}
