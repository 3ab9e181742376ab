//! The web console in a real browser: Debian's chromium driven over WebDriver (chromedriver)
//! with fantoccini. One screenshot of each page is kept under the test target directory
//! (`console-screenshots/`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::harness::{free_port, single, three_nodes};

/// A headless browser session; its driver is killed when dropped.
struct Browser {
    client: Client,
    driver: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

async fn browser() -> Browser {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian's chromium-driver) on the PATH");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]}),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Browser { client, driver },
            Err(e) if Instant::now() > deadline => panic!("no WebDriver session: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until the text of the first element matching `css` satisfies `ok`; returns it.
async fn wait_text(c: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            if ok(&t) {
                return t;
            }
            last = t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css}: {last:?}");
}

async fn click(c: &Client, css: &str) {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn cells(c: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(css)).await.unwrap() {
        out.push(e.text().await.unwrap());
    }
    out
}

async fn screenshot(c: &Client, page: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{page}.png")), c.screenshot().await.unwrap()).unwrap();
}

/// Evaluates `expr` in the page.
async fn js(c: &Client, expr: &str) -> serde_json::Value {
    c.execute(&format!("return {expr};"), vec![]).await.unwrap()
}

#[tokio::test]
async fn queries_tables_backup_and_charts_work_in_a_browser() {
    let (_d, n) = single().await;
    n.execute(
        r#"["CREATE TABLE foo(id INTEGER PRIMARY KEY, name TEXT)", "INSERT INTO foo(name) VALUES('fiona')", "INSERT INTO foo(name) VALUES('declan')", "INSERT INTO foo(name) VALUES('aoife')"]"#,
    )
    .await;
    let b = browser().await;
    let c = &b.client;
    c.goto(&n.url("/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/console/"));
    wait_text(c, "#node-info", |t| t.contains("Leader")).await;

    // Run a query and read the result table; it joins the history.
    let sql = c.find(Locator::Css("#sql")).await.unwrap();
    sql.clear().await.unwrap();
    sql.send_keys("SELECT id, name FROM foo ORDER BY id").await.unwrap();
    click(c, "#run").await;
    wait_text(c, "#results table", |t| t.contains("aoife")).await;
    assert_eq!(cells(c, "#results th").await, ["id", "name"]);
    assert_eq!(
        cells(c, "#results td").await,
        ["1", "fiona", "2", "declan", "3", "aoife"]
    );
    wait_text(c, "#timing", |t| t.contains("ms")).await;
    assert_eq!(cells(c, "#history li").await, ["SELECT id, name FROM foo ORDER BY id"]);
    screenshot(c, "query").await;

    // Open the table: row count, schema, first rows; create an index, then drop it.
    click(c, "nav button[data-tab=tables]").await;
    click(c, "#table-list li[data-table=foo]").await;
    wait_text(c, "#row-count", |t| t == "3 rows").await;
    assert!(
        wait_text(c, "#schema", |t| t.contains("CREATE TABLE foo"))
            .await
            .contains("name TEXT")
    );
    c.find(Locator::Css("#index-name"))
        .await
        .unwrap()
        .send_keys("foo_by_name")
        .await
        .unwrap();
    c.find(Locator::Css("#index-columns"))
        .await
        .unwrap()
        .send_keys("name")
        .await
        .unwrap();
    click(c, "#create-index").await;
    wait_text(c, "#indexes", |t| t.contains("foo_by_name")).await;
    let indexes = || async {
        n.query("", r#"["SELECT name FROM sqlite_master WHERE type='index'"]"#)
            .await
    };
    assert!(indexes().await.contains("foo_by_name"));
    screenshot(c, "tables").await;
    click(c, "#indexes .drop-index").await;
    wait_text(c, "#indexes", |t| !t.contains("foo_by_name")).await;
    assert!(!indexes().await.contains("foo_by_name"));

    // Restore from a file uploaded with progress, then check the node has its data.
    click(c, "nav button[data-tab=backup]").await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("restore.sqlite");
    let db = rusqlite::Connection::open(&file).unwrap();
    db.execute_batch("CREATE TABLE restored(x); INSERT INTO restored VALUES(42);")
        .unwrap();
    drop(db);
    let href = c
        .find(Locator::Css("#download"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap();
    assert_eq!(href.as_deref(), Some("/db/backup"));
    c.find(Locator::Css("#restore-file"))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    click(c, "#restore").await;
    wait_text(c, "#restore-status", |t| t == "Restored.").await;
    assert_eq!(js(c, "document.querySelector('#restore-progress').value").await, 100);
    assert!(n.query("", r#"["SELECT x FROM restored"]"#).await.contains("42"));
    screenshot(c, "backup").await;

    // Charts: while a writer runs, the request rate and the commit index move.
    click(c, "nav button[data-tab=charts]").await;
    let writer = {
        let url = n.url("/db/execute");
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0.. {
                let body = format!(r#"["INSERT INTO restored VALUES({i})"]"#);
                let _ = client.post(&url).body(body).send().await;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_commit = js(c, "window.rqConsole.last ? window.rqConsole.last.commit : 0").await;
    loop {
        let rate = js(c, "window.rqConsole.last ? window.rqConsole.last.rate.execute : 0").await;
        let commit = js(c, "window.rqConsole.last ? window.rqConsole.last.commit : 0").await;
        if rate.as_f64().unwrap_or(0.0) > 0.0 && commit.as_f64() > first_commit.as_f64() {
            break;
        }
        assert!(Instant::now() < deadline, "rate {rate}, commit {commit}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writer.abort();
    assert!(c.find(Locator::Css("#chart-rate canvas")).await.is_ok());
    assert!(c.find(Locator::Css("#chart-raft canvas")).await.is_ok());
    screenshot(c, "charts").await;
}

#[tokio::test]
async fn the_cluster_page_shows_three_nodes_and_one_leader() {
    let (_dirs, nodes) = three_nodes(&[]).await;
    let leader = &nodes[0];
    leader.execute(r#"["CREATE TABLE t(x)"]"#).await;
    let b = browser().await;
    let c = &b.client;
    c.goto(&leader.url("/console/")).await.unwrap();
    click(c, "nav button[data-tab=cluster]").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = c.find_all(Locator::Css("#nodes tbody tr")).await.unwrap();
        let roles = cells(c, "#nodes tbody td.role").await;
        if rows.len() == 3 && roles.iter().filter(|r| *r == "leader").count() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{roles:?}");
        // The page reads the cluster when the tab opens.
        click(c, "nav button[data-tab=cluster]").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(cells(c, "#nodes tr.leader td:first-child").await, ["n0"]);
    let info = wait_text(c, "#cluster-info", |t| t.contains("applied index")).await;
    assert!(info.contains("Leader"), "{info}");
    // Each follower's lag is shown, read from the leader's /metrics.
    let lag = cells(c, "#nodes tbody tr:not(.leader) td:last-child").await;
    assert_eq!(lag.len(), 2);
    assert!(lag.iter().all(|l| l.parse::<u64>().is_ok()), "{lag:?}");
    screenshot(c, "cluster").await;
}
