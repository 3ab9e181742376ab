//! Read-your-writes on any node: every write's answer carries `X-RQLITE-RAFT-INDEX`, and a read
//! with `min_index=N` (or `X-RQLITE-MIN-INDEX: N`) waits until the node answering has applied N.

use std::time::Duration;

use crate::harness::{DataDir, Node, three_nodes};

async fn three() -> (Vec<DataDir>, Vec<Node>) {
    let (dirs, nodes) = three_nodes(&[]).await;
    nodes[0].execute(r#"["CREATE TABLE t(x)"]"#).await;
    (dirs, nodes)
}

/// Posts a write; its `X-RQLITE-RAFT-INDEX`.
async fn write(client: &reqwest::Client, n: &Node, x: i64) -> u64 {
    let r = client
        .post(n.url("/db/execute"))
        .body(format!(r#"["INSERT INTO t VALUES({x})"]"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let index = r.headers()["x-rqlite-raft-index"].to_str().unwrap().parse().unwrap();
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("raft_index"),
        "the body names the index only when asked: {body}"
    );
    index
}

async fn count(client: &reqwest::Client, n: &Node, query: &str, header: Option<u64>) -> (u16, String) {
    let mut req = client.get(n.url(&format!("/db/query?q=SELECT%20COUNT(*)%20FROM%20t&{query}")));
    if let Some(i) = header {
        req = req.header("X-RQLITE-MIN-INDEX", i);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn has_count(body: &str, n: i64) -> bool {
    body.contains(&format!("\"values\":[[{n}]]"))
}

#[tokio::test]
async fn a_read_with_min_index_sees_the_write_on_any_node_at_any_level() {
    let (_dirs, nodes) = three().await;
    let client = reqwest::Client::new();
    // Right after a write, a follower has not yet heard that it committed: at `none`, with the
    // write's index, it waits until it has applied it, every time.
    for i in 1..=20 {
        let index = write(&client, &nodes[0], i).await;
        let f = &nodes[1 + (i as usize % 2)];
        let (status, body) = count(&client, f, &format!("level=none&min_index={index}"), None).await;
        assert_eq!(status, 200, "{body}");
        assert!(has_count(&body, i), "after write {i} (index {index}): {body}");
    }
    // The header form, and the other levels (a follower passes `weak` and `linearizable` to the
    // leader, which waits too).
    let index = write(&client, &nodes[0], 21).await;
    for level in ["none", "weak", "linearizable", "strong"] {
        let (status, body) = count(&client, &nodes[2], &format!("level={level}"), Some(index)).await;
        assert_eq!(status, 200, "{level}: {body}");
        assert!(has_count(&body, 21), "{level}: {body}");
    }

    // A paused follower answers once it has caught up, not before.
    nodes[2].pause();
    let index = write(&client, &nodes[0], 22).await;
    let read = {
        let (client, url) = (
            client.clone(),
            nodes[2].url(&format!(
                "/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=none&min_index={index}"
            )),
        );
        tokio::spawn(async move { client.get(url).send().await.unwrap().text().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[2].resume();
    let body = read.await.unwrap();
    assert!(has_count(&body, 22), "{body}");

    // An index no node has reached: the read times out with an error, never a stale answer.
    let (status, body) = count(
        &client,
        &nodes[1],
        &format!("level=none&min_index={}&timeout=300ms", index + 1000),
        None,
    )
    .await;
    assert!(body.contains("timeout"), "{status}: {body}");
    assert!(!body.contains("values"), "{body}");
    // A bad index is refused.
    let (status, body) = count(&client, &nodes[1], "min_index=soon", None).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_shell_reads_its_own_writes_through_a_follower() {
    let (_dirs, nodes) = three().await;
    let port = nodes[1].http.rsplit_once(':').unwrap().1.to_string();
    // SQL lines go through /db/request at rqlite's default level, which a follower passes to
    // the leader; `.tables` reads at the shell's level, here `none`, on the follower itself.
    let mut script = String::from(".consistency none\n");
    for i in 1..=10 {
        script.push_str(&format!("CREATE TABLE t{i}(x);\n.tables\n"));
    }
    let (_, text, _) = crate::shell::shell(&["-p", &port], &script);
    // Each `.tables` lists every table created so far: after the i-th, ti is there.
    let listings: Vec<&str> = text.split("0 row affected").skip(1).collect();
    assert_eq!(listings.len(), 10, "{text}");
    for (i, l) in listings.iter().enumerate() {
        let name = format!("| t{} ", i + 1);
        assert!(l.contains(&name), "listing {} lacks t{}: {text}", i + 1, i + 1);
    }
}
