//! Linearizable reads served by followers and read replicas with the leader's read index.

use std::time::{Duration, Instant};

use crate::harness::{DataDir, Node, three_nodes_with};

/// A leader `n0` and two voters, `env` for `n2` (a slow applier, say), and a table.
async fn three(env: &[(&str, &str)]) -> (Vec<DataDir>, Vec<Node>) {
    three_with(env, &[]).await
}

/// As `three`, with `extra` arguments for every node.
async fn three_with(env: &[(&str, &str)], extra: &[&str]) -> (Vec<DataDir>, Vec<Node>) {
    let (dirs, nodes) = three_nodes_with(env, extra).await;
    nodes[0].execute(r#"["CREATE TABLE t(x)"]"#).await;
    (dirs, nodes)
}

/// A linearizable count on `n`: status, body and the node that served it.
async fn count(client: &reqwest::Client, n: &Node, extra: &str) -> (u16, String, String) {
    let r = client
        .get(n.url(&format!(
            "/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=linearizable{extra}"
        )))
        .send()
        .await
        .unwrap();
    let by = r
        .headers()
        .get("x-rqlite-served-by")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), r.text().await.unwrap(), by)
}

async fn stat(n: &Node, map: &str, key: &str) -> i64 {
    n.expvar().await[map][key].as_i64().unwrap()
}

#[tokio::test]
async fn a_follower_behind_the_leader_waits_for_the_read_index_then_answers_itself() {
    // n2 applies every entry 400 ms late.
    let (_dirs, nodes) = three(&[("FAILPOINTS", "apply-delay-ms=return(400)")]).await;
    let client = reqwest::Client::new();
    nodes[2]
        .wait_for(Duration::from_secs(10), "n2 to have the table", || async {
            nodes[2]
                .query("?level=none", r#"["SELECT COUNT(*) FROM t"]"#)
                .await
                .contains("values")
        })
        .await;
    for i in 1..=3 {
        // Acknowledged once the leader and n1 hold it; n2 has not applied it yet.
        nodes[0].execute(&format!(r#"["INSERT INTO t VALUES({i})"]"#)).await;
        let stale = nodes[2].query("?level=none", r#"["SELECT COUNT(*) FROM t"]"#).await;
        let started = Instant::now();
        let (status, body, by) = count(&client, &nodes[2], "").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&format!("[[{i}]]")),
            "read {i} on n2: {body} (at none: {stale})"
        );
        assert!(stale.contains(&format!("[[{}]]", i - 1)), "n2 was not behind: {stale}");
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        assert!(
            by.ends_with(nodes[2].http.rsplit_once(':').unwrap().1),
            "served by {by}"
        );
    }
    assert_eq!(stat(&nodes[2], "store", "num_follower_linearizable_reads").await, 3);
    assert_eq!(stat(&nodes[2], "proxy", "remote_queries").await, 0);
    assert!(stat(&nodes[0], "cluster", "num_read_index_req").await >= 3);
}

#[tokio::test]
async fn reads_waiting_on_a_follower_share_read_index_requests() {
    let (_dirs, nodes) = three(&[]).await;
    nodes[0].execute(r#"["INSERT INTO t VALUES(1)"]"#).await;
    let client = reqwest::Client::new();
    let url = nodes[1].url("/db/query?q=SELECT%20COUNT(*)%20FROM%20t&level=linearizable");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                let body = client.get(&url).send().await.unwrap().text().await.unwrap();
                assert!(body.contains("[[1]]"), "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reads = stat(&nodes[1], "store", "num_follower_linearizable_reads").await;
    let asked = stat(&nodes[0], "cluster", "num_read_index_req").await;
    assert_eq!(reads, 320);
    assert!(asked < reads, "{asked} read-index requests for {reads} reads");
    // The asking voter and the leader are a quorum of three: no heartbeat round was needed.
    assert_eq!(stat(&nodes[0], "store", "num_read_index_asker_quorum").await, asked);
}

#[tokio::test]
async fn without_its_leader_a_follower_answers_an_error_never_stale_data() {
    let (_dirs, nodes) = three(&[]).await;
    nodes[0].execute(r#"["INSERT INTO t VALUES(1)"]"#).await;
    let client = reqwest::Client::new();
    // The leader is n0 unless a busy machine delayed its heartbeats past an election.
    let leader = crate::harness::leader_index(&nodes).await;
    let follower = (leader + 1) % 3;
    nodes[leader].pause();
    let (status, body, _) = count(&client, &nodes[follower], "&linearizable_timeout=500ms").await;
    assert!(!body.contains("values"), "{status}: {body}");
    assert!(status == 503 || body.contains("timeout"), "{status}: {body}");
    nodes[leader].resume();
}

#[tokio::test]
async fn a_read_replica_serves_linearizable_reads_itself() {
    let d0 = DataDir::new();
    let leader = Node::start_in(&d0.path, &["-node-id", "n0"]).await;
    let d1 = DataDir::new();
    let replica = Node::start_in(&d1.path, &["-node-id", "r", "-raft-non-voter", "-join", &leader.raft]).await;
    leader
        .execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    let client = reqwest::Client::new();
    let (status, body, by) = count(&client, &replica, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("[[1]]"), "{body}");
    assert!(by.ends_with(replica.http.rsplit_once(':').unwrap().1), "served by {by}");
    assert_eq!(stat(&replica, "store", "num_follower_linearizable_reads").await, 1);
    // The replica's vote does not count, but the sole voter is a quorum by itself.
    assert_eq!(stat(&leader, "store", "num_read_index_asker_quorum").await, 1);
    assert_eq!(stat(&leader, "cluster", "num_read_index_req").await, 1);
}

#[tokio::test]
async fn leadership_rounds_pass_over_a_slow_voter() {
    // n2 takes 5 ms to say which vote it holds; n1 answers at once. Without the lease, every
    // read on the leader waits for a round.
    let (_dirs, nodes) = three_with(
        &[("FAILPOINTS", "saved-vote-delay-ms=return(5)")],
        &["-raft-read-lease=false"],
    )
    .await;
    let client = reqwest::Client::new();
    let asked = |n: usize| {
        let n = &nodes[n];
        async move { stat(n, "cluster", "num_saved_vote_req").await }
    };
    let (slow0, quick0) = (asked(2).await, asked(1).await);
    for _ in 0..100 {
        let (status, body, _) = count(&client, &nodes[0], "").await;
        assert_eq!(status, 200, "{body}");
    }
    let (slow, quick) = (asked(2).await - slow0, asked(1).await - quick0);
    // Every round asked someone; the slow voter only while it was being measured, or when a
    // tick of the leadership watch fell inside a round waiting on it.
    assert!(slow + quick >= 100, "{slow} + {quick}");
    assert!(slow <= 5, "the slow voter was asked {slow} times");
}

#[tokio::test]
async fn a_leader_that_gains_voters_stops_counting_an_asker_as_half_its_quorum() {
    let (_dirs, nodes) = three(&[]).await;
    let client = reqwest::Client::new();
    let l = crate::harness::leader_index(&nodes).await;
    let f = (l + 1) % 3;
    let (leader, follower) = (&nodes[l], &nodes[f]);
    let read = || async {
        let (status, body, by) = count(&client, follower, "").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            by.ends_with(follower.http.rsplit_once(':').unwrap().1),
            "served by {by}"
        );
    };
    let voters = |n: usize| async move {
        let (_, body) = leader.get("/nodes").await;
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.as_object().map(|m| m.len()))
            == Some(n)
    };
    let asker_quorum = || stat(leader, "store", "num_read_index_asker_quorum");
    read().await;
    let fast = asker_quorum().await;
    assert!(fast >= 1);
    // Two more voters: the leader and one follower are two of five, no longer a quorum, and
    // the leader must confirm itself before it gives a read index.
    let extra: Vec<DataDir> = (0..2).map(|_| DataDir::new()).collect();
    let mut joined = Vec::new();
    for (i, d) in extra.iter().enumerate() {
        let id = format!("n{}", i + 3);
        joined.push(Node::start_in(&d.path, &["-node-id", &id, "-join", &leader.raft]).await);
    }
    leader
        .wait_for(Duration::from_secs(20), "five voters", || voters(5))
        .await;
    // It does in a round, or from its lease, which a quorum of the five holds up.
    let confirmed =
        || async { stat(leader, "store", "num_verify_leader").await + stat(leader, "store", "num_read_lease").await };
    let before = confirmed().await;
    read().await;
    assert_eq!(asker_quorum().await, fast);
    assert!(confirmed().await > before);
    // Back to three: the pair is a quorum again.
    for (n, id) in joined.iter_mut().zip(["n3", "n4"]) {
        n.kill();
        let r = client
            .delete(leader.url("/remove"))
            .body(format!(r#"{{"id":"{id}"}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    leader
        .wait_for(Duration::from_secs(20), "three voters", || voters(3))
        .await;
    read().await;
    assert_eq!(asker_quorum().await, fast + 1);
}
