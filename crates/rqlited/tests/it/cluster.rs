//! Clusters of real processes: forming, forwarding, failover, restart, catch-up, removal.

use std::time::{Duration, Instant};

use crate::harness::{DataDir, Node, acknowledged};

/// A cluster's nodes and their directories.
struct Cluster {
    _dirs: Vec<DataDir>,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `n` nodes: the first bootstraps, the others join it.
    async fn by_join(n: usize, extra: &[&str]) -> Cluster {
        Cluster::by_join_env(n, extra, &[]).await
    }

    /// As `by_join`, with extra environment variables for every node.
    async fn by_join_env(n: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        let mut dirs = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        for i in 0..n {
            let d = DataDir::new();
            let id = format!("node{i}");
            let mut args = vec!["-node-id", id.as_str()];
            args.extend_from_slice(extra);
            let join;
            if i > 0 {
                join = nodes[0].raft.clone();
                args.extend_from_slice(&["-join", join.as_str()]);
            }
            let node = Node::spawn_env(&d.path, &args, env);
            node.wait_ready().await;
            nodes.push(node);
            dirs.push(d);
        }
        let c = Cluster { _dirs: dirs, nodes };
        c.wait_members(n).await;
        c
    }

    /// Starts a read replica, `replica`, in `d` that joins through the first node, and waits
    /// until it is ready.
    async fn start_replica(&self, d: &DataDir, extra: &[&str]) -> Node {
        let join = self.nodes[0].raft.clone();
        let mut args = vec!["-node-id", "replica", "-raft-non-voter", "-join", &join];
        args.extend_from_slice(extra);
        Node::start_in(&d.path, &args).await
    }

    /// Starts `n` nodes at once, each told the others' addresses and `-bootstrap-expect n`.
    async fn by_bootstrap_expect(n: usize, extra: &[&str]) -> Cluster {
        let dirs: Vec<DataDir> = (0..n).map(|_| DataDir::new()).collect();
        // Addresses are known up front: every node names all of them.
        let ports: Vec<String> = (0..n)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().to_string()
            })
            .collect();
        let join = ports.join(",");
        let expect = n.to_string();
        let mut nodes = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let id = format!("n{i}");
            let mut args = vec![
                "-node-id",
                &id,
                "-bootstrap-expect",
                &expect,
                "-join",
                &join,
                "-join-interval",
                "200ms",
            ];
            args.extend_from_slice(extra);
            nodes.push(Node::spawn_fixed(&d.path, &ports[i], &args));
        }
        for n in &nodes {
            n.wait_ready().await;
        }
        let c = Cluster { _dirs: dirs, nodes };
        c.wait_members(n).await;
        c
    }

    async fn wait_members(&self, n: usize) {
        let first = &self.nodes[0];
        first
            .wait_for(Duration::from_secs(20), "all members", || async {
                let (_, body) = first.get("/nodes?nonvoters").await;
                serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.as_object().map(|m| m.len()))
                    == Some(n)
            })
            .await;
    }

    /// Index of the node that says it leads.
    async fn leader(&self) -> usize {
        crate::harness::leader_index(&self.nodes).await
    }
}

async fn count(n: &Node, level: &str) -> String {
    n.query(&format!("?level={level}"), r#"["SELECT COUNT(*) FROM t"]"#)
        .await
}

#[tokio::test]
async fn three_nodes_by_join_forward_and_fail_over() {
    let mut c = Cluster::by_join(3, &[]).await;
    let l = c.leader().await;
    let f = (l + 1) % 3;

    // Phase 1: writes through a follower are forwarded; it says the leader served them.
    let r = reqwest::Client::new()
        .post(c.nodes[f].url("/db/execute"))
        .body(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t(v) VALUES('a')"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-rqlite-served-by"], c.nodes[l].raft.as_str());
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"results":[{},{"last_insert_id":1,"rows_affected":1}]}"#
    );
    // Every read level answers the same from any node.
    for n in &c.nodes {
        for level in ["weak", "linearizable", "strong"] {
            assert!(count(n, level).await.contains("[[1]]"), "{level}");
        }
        n.wait_for(Duration::from_secs(5), "replication", || async {
            count(n, "none").await.contains("[[1]]")
        })
        .await;
    }
    // ?redirect answers 301 with the leader's API URL.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .post(c.nodes[f].url("/db/execute?redirect"))
        .body(r#"["INSERT INTO t(v) VALUES('x')"]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        format!("http://{}/db/execute?redirect", c.nodes[l].http).as_str()
    );
    // /nodes lists everyone, reachable, one leader.
    let (_, body) = c.nodes[f].get("/nodes?ver=2").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["reachable"] == true));
    assert_eq!(nodes.iter().filter(|n| n["leader"] == true).count(), 1);

    // Phase 2: kill the leader; another is elected and takes writes.
    c.nodes[l].kill();
    let started = Instant::now();
    let survivor = &c.nodes[f];
    survivor
        .wait_for(Duration::from_secs(20), "a write after failover", || async {
            // A forward to the dead leader answers 200 with an error, as rqlite does.
            let (s, b) = survivor
                .post("/db/execute", r#"["INSERT INTO t(v) VALUES('b')"]"#)
                .await;
            s == 200 && b.contains("rows_affected")
        })
        .await;
    eprintln!("failover to first successful write: {:?}", started.elapsed());

    // Phase 3: the old leader comes back, catches up, and the whole cluster restarts intact.
    c.nodes[l].kill_and_restart().await;
    let old = &c.nodes[l];
    old.wait_for(Duration::from_secs(10), "catch-up", || async {
        count(old, "none").await.contains("[[2]]")
    })
    .await;
    for n in &mut c.nodes {
        n.kill();
    }
    // None is ready until a quorum is back, so all start before any is waited for.
    for n in &mut c.nodes {
        n.kill_and_respawn();
    }
    for n in &c.nodes {
        n.wait_ready().await;
    }
    let l = c.leader().await;
    let got = count(&c.nodes[l], "strong").await;
    assert!(got.contains("[[2]]"), "{got}");
}

#[tokio::test]
async fn bootstrap_expect_forms_one_cluster() {
    let c = Cluster::by_bootstrap_expect(3, &[]).await;
    let l = c.leader().await;
    c.nodes[l]
        .execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    // Exactly one cluster: every node agrees on the members and holds the row.
    for n in &c.nodes {
        n.wait_for(Duration::from_secs(5), "replication", || async {
            count(n, "none").await.contains("[[1]]")
        })
        .await;
        let st = n.status().await;
        assert_eq!(st["store"]["nodes"].as_array().unwrap().len(), 3);
    }
}

#[tokio::test]
async fn a_lagging_follower_catches_up_from_a_snapshot() {
    let mut c = Cluster::by_join(3, &["-raft-snap", "20", "-raft-snap-int", "100ms"]).await;
    let l = c.leader().await;
    let f = (l + 1) % 3;
    c.nodes[l]
        .execute(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)"]"#)
        .await;
    c.nodes[f].kill();
    for i in 0..100 {
        c.nodes[l]
            .execute(&format!(r#"[["INSERT INTO t(v) VALUES(?)", {i}]]"#))
            .await;
    }
    // The log the follower missed is compacted away behind snapshots.
    let leader = &c.nodes[l];
    leader
        .wait_for(Duration::from_secs(20), "the log to be purged", || async {
            let st = leader.status().await;
            st["store"]["raft"]["last_purged_index"].as_u64().unwrap_or(0) > 50
        })
        .await;
    c.nodes[f].kill_and_restart().await;
    let follower = &c.nodes[f];
    follower
        .wait_for(Duration::from_secs(20), "catch-up by snapshot", || async {
            count(follower, "none").await.contains("[[100]]")
        })
        .await;
    assert!(follower.expvar().await["store"]["num_restores"].as_i64().unwrap() >= 1);
}

#[tokio::test]
async fn remove_stepdown_and_read_replicas() {
    let mut c = Cluster::by_join(3, &[]).await;
    // A read replica joins, follows, and is hidden from /nodes unless asked for.
    let d = DataDir::new();
    let replica = c.start_replica(&d, &[]).await;
    let l = c.leader().await;
    c.nodes[l]
        .execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    replica
        .wait_for(Duration::from_secs(10), "the replica to follow", || async {
            count(&replica, "none").await.contains("[[1]]")
        })
        .await;
    assert_eq!(replica.status().await["store"]["raft"]["voter"], false);
    let (_, body) = c.nodes[l].get("/nodes").await;
    assert!(!body.contains("replica"));
    let (_, body) = c.nodes[l].get("/nodes?nonvoters").await;
    assert!(body.contains("replica"));
    // auto reads locally on a replica.
    assert!(count(&replica, "auto").await.contains("[[1]]"));

    // Hand leadership to a named node, waiting for it.
    let target = (l + 1) % 3;
    let r = reqwest::Client::new()
        .post(c.nodes[l].url("/leader?wait"))
        .header("Content-Type", "application/json")
        .body(format!(r#"{{"id":"node{target}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(c.leader().await, target);

    // Remove a node through a follower (forwarded), then check the configuration.
    let victim = (target + 1) % 3;
    let via = (target + 2) % 3;
    let r = reqwest::Client::new()
        .delete(c.nodes[via].url("/remove"))
        .body(format!(r#"{{"id":"node{victim}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.nodes[victim].kill();
    let st = c.nodes[target].status().await;
    let ids: Vec<String> = st["store"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!ids.contains(&format!("node{victim}")), "{ids:?}");
    // Bad remove bodies are refused.
    let r = reqwest::Client::new()
        .delete(c.nodes[target].url("/remove"))
        .body(r#"{"id":"x","extra":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The two remaining voters still take writes.
    c.nodes[target].execute(r#"["INSERT INTO t VALUES(2)"]"#).await;
}

#[tokio::test]
async fn the_leader_reaps_members_that_stop_answering() {
    let reap = [
        "-raft-reap-node-timeout",
        "1s",
        "-raft-reap-read-only-node-timeout",
        "1s",
    ];
    let mut c = Cluster::by_join(3, &reap).await;
    let d = DataDir::new();
    let mut replica = c.start_replica(&d, &reap).await;
    c.wait_members(4).await;
    let l = c.leader().await;
    assert_eq!(c.nodes[l].status().await["store"]["reap_timeout"], "1s");
    let victim = (l + 1) % 3;
    c.nodes[victim].kill();
    replica.kill();
    let leader = &c.nodes[l];
    leader
        .wait_for(Duration::from_secs(20), "the silent members to be reaped", || async {
            let st = leader.status().await;
            st["store"]["nodes"].as_array().map(|n| n.len()) == Some(2)
        })
        .await;
    let (_, body) = leader.get("/nodes?nonvoters").await;
    assert!(
        !body.contains("replica") && !body.contains(&format!("node{victim}")),
        "{body}"
    );
    // The membership shows a removal as soon as it is logged; the reaper counts it once the
    // change has committed.
    leader
        .wait_for(Duration::from_secs(10), "both reapings to be counted", || async {
            leader.expvar().await["store"]["nodes_reaped_ok"] == 2
        })
        .await;
    // The remaining pair is a working cluster.
    leader.execute(r#"["CREATE TABLE t(x)"]"#).await;
}

#[tokio::test]
async fn followers_refuse_reads_staler_than_freshness() {
    let c = Cluster::by_join(3, &[]).await;
    let l = c.leader().await;
    c.nodes[l]
        .execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    let f = &c.nodes[(l + 1) % 3];
    f.wait_for(Duration::from_secs(5), "replication", || async {
        count(f, "none").await.contains("[[1]]")
    })
    .await;
    for q in ["freshness=1s", "freshness=1s&freshness_strict"] {
        assert!(count(f, &format!("none&{q}")).await.contains("[[1]]"), "{q}");
    }
    // A frozen leader sends nothing; past the bound the follower refuses, within it it serves.
    c.nodes[l].pause();
    f.wait_for(Duration::from_secs(10), "a stale read", || async {
        count(f, "none&freshness=300ms").await == r#"{"results":[],"error":"stale read"}"#
    })
    .await;
    assert!(count(f, "none&freshness=1h").await.contains("[[1]]"));
    assert!(count(f, "none").await.contains("[[1]]"));
    c.nodes[l].resume();
}

#[tokio::test]
async fn a_cluster_that_lost_its_quorum_recovers_from_peers_json() {
    let mut c = Cluster::by_join(3, &[]).await;
    let l = c.leader().await;
    c.nodes[l]
        .execute(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t(v) VALUES('kept')"]"#)
        .await;
    let s = (l + 1) % 3;
    let survivor = &c.nodes[s];
    survivor
        .wait_for(Duration::from_secs(10), "replication", || async {
            count(survivor, "none").await.contains("[[1]]")
        })
        .await;

    // Two of three are gone for good: no quorum, and no way to get one back.
    for (i, n) in c.nodes.iter_mut().enumerate() {
        if i != s {
            n.kill();
        }
    }
    // The operator names the survivor as the whole cluster and restarts it, without -join (as
    // with rqlite, whose node refuses to join elsewhere once it is a cluster of one).
    c.nodes[s].kill();
    let raft = c.nodes[s].raft.clone();
    let peers = serde_json::json!([{ "id": format!("node{s}"), "address": raft, "non_voter": false }]);
    let raft_dir = c.nodes[s].dir.join("raft");
    std::fs::write(raft_dir.join("peers.json"), peers.to_string()).unwrap();
    let id = format!("node{s}");
    let survivor = Node::spawn_fixed(&c.nodes[s].dir, &raft, &["-node-id", id.as_str()]);
    survivor.wait_ready().await;

    survivor
        .wait_for(Duration::from_secs(20), "the survivor to lead", || async {
            survivor.status().await["store"]["raft"]["state"] == "Leader"
        })
        .await;
    assert!(count(&survivor, "strong").await.contains("[[1]]"));
    let r = survivor.execute(r#"["INSERT INTO t(v) VALUES('after')"]"#).await;
    assert!(r.contains("rows_affected"), "{r}");
    let (_, nodes) = survivor.get("/nodes").await;
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    assert_eq!(nodes.as_object().map(|m| m.len()), Some(1), "{nodes}");
    assert!(!raft_dir.join("peers.json").exists(), "peers.json is used once");
    assert!(raft_dir.join("peers.info").exists());
}

#[tokio::test]
async fn a_leader_whose_background_flush_fails_stops_and_loses_nothing_acknowledged() {
    // The leader's own entries are flushed in the background; after the first 40 flushes,
    // every flush of its log fails.
    let d0 = DataDir::new();
    let failpoint = format!("log-flush=40*off->return({})", d0.path.join("raft-log").display());
    let first = Node::spawn_env(&d0.path, &["-node-id", "node0"], &[("FAILPOINTS", failpoint.as_str())]);
    first.wait_ready().await;
    let mut dirs = vec![d0];
    let mut nodes = vec![first];
    for i in 1..3 {
        let d = DataDir::new();
        let id = format!("node{i}");
        let join = nodes[0].raft.clone();
        nodes.push(Node::start_in(&d.path, &["-node-id", id.as_str(), "-join", join.as_str()]).await);
        dirs.push(d);
    }
    let mut c = Cluster { _dirs: dirs, nodes };
    c.wait_members(3).await;
    assert_eq!(c.leader().await, 0);
    c.nodes[0]
        .execute(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)"]"#)
        .await;

    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for id in 0..10_000u64 {
        let body = format!(r#"[["INSERT INTO t(id, v) VALUES(?, 'v')", {id}]]"#);
        if !acknowledged(&client, &c.nodes[0].url("/db/execute"), body).await {
            break;
        }
        acked.push(id);
    }
    assert!(
        !acked.is_empty() && acked.len() < 10_000,
        "{} writes acknowledged",
        acked.len()
    );
    let status = c.nodes[0].wait_exit_status(Duration::from_secs(20)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "the leader went on running after its log flush failed"
    );

    // The others elect a leader that holds every acknowledged row, once.
    eprintln!("{} writes acknowledged before the leader's flush failed", acked.len());
    let l = c.leader().await;
    assert_ne!(l, 0);
    let ids = |body: String| -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["results"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[0].as_u64().unwrap())
            .collect()
    };
    let got = ids(c.nodes[l]
        .query("?level=strong", r#"["SELECT id FROM t ORDER BY id"]"#)
        .await);
    let missing: Vec<&u64> = acked.iter().filter(|id| !got.contains(id)).collect();
    assert!(missing.is_empty(), "acknowledged rows lost: {missing:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]));

    // Restarted without the fault, the old leader catches up with the same rows.
    c.nodes[0].env.clear();
    c.nodes[0].kill_and_restart().await;
    let n = got.len();
    let old = &c.nodes[0];
    old.wait_for(Duration::from_secs(20), "the old leader to catch up", || async {
        count(old, "none").await.contains(&format!("[[{n}]]"))
    })
    .await;
    let integrity = old.query("?level=none", r#"["PRAGMA integrity_check"]"#).await;
    assert!(integrity.contains(r#"[["ok"]]"#), "{integrity}");
}

#[tokio::test]
async fn a_long_statement_does_not_cost_the_leader_its_leadership() {
    // One runtime worker per node, as on a one-core machine: a statement that held up the
    // worker would stop the leader's heartbeats. The apply timeout leaves the statement room
    // on a slow, busy machine (a debug build, other tests beside it).
    let c = Cluster::by_join_env(3, &["-raft-apply-timeout", "60s"], &[("TOKIO_WORKER_THREADS", "1")]).await;
    let l = c.leader().await;
    let leader = &c.nodes[l];
    let term = |st: serde_json::Value| st["store"]["raft"]["term"].as_u64().unwrap();
    let before = term(leader.status().await);
    leader.execute(r#"["CREATE TABLE t(v INTEGER)"]"#).await;
    // A single small entry whose one statement runs for seconds.
    let started = Instant::now();
    let r = leader
        .execute(
            r#"["INSERT INTO t(v) WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000000) SELECT sum(x) FROM c"]"#,
        )
        .await;
    let took = started.elapsed();
    assert!(r.contains("rows_affected"), "{r}");
    assert!(took > Duration::from_secs(1), "the statement took only {took:?}");
    // Heartbeats went on meanwhile: nobody stood for election.
    assert_eq!(c.leader().await, l);
    for n in &c.nodes {
        assert_eq!(term(n.status().await), before, "a new term after a {took:?} statement");
    }
}

#[tokio::test]
async fn a_pooled_connection_to_a_restarted_leader_is_replaced_and_counted() {
    let mut c = Cluster::by_join(1, &[]).await;
    let d = DataDir::new();
    let replica = c.start_replica(&d, &[]).await;
    let one = r#"{"results":[{"columns":["1"],"types":["integer"],"values":[[1]]}]}"#;

    // Phase 1: a strong read through the replica is forwarded to the leader, which leaves a
    // connection to it in the replica's pool.
    assert_eq!(replica.query("?level=strong", r#"["SELECT 1"]"#).await, one);
    assert_eq!(replica.expvar().await["cluster"]["num_client_force_new_conn"], 0);

    // Phase 2: the leader restarts on the same addresses (the sole voter leads again at
    // once); the pooled connection is now closed on its side.
    c.nodes[0].kill_and_restart().await;
    replica.wait_ready().await;

    // Phase 3: the next forwarded read finds the connection closed, sends on a new one, and
    // counts the replacement once.
    assert_eq!(replica.query("?level=strong", r#"["SELECT 1"]"#).await, one);
    assert_eq!(replica.expvar().await["cluster"]["num_client_force_new_conn"], 1);
    assert_eq!(replica.query("?level=strong", r#"["SELECT 1"]"#).await, one);
    assert_eq!(replica.expvar().await["cluster"]["num_client_force_new_conn"], 1);
}

/// How many voters `n` lists in `/nodes`.
async fn members(n: &Node) -> Option<usize> {
    let (_, body) = n.get("/nodes").await;
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.as_object().map(|m| m.len()))
}

#[tokio::test]
async fn a_node_that_removed_itself_joins_again_at_restart() {
    let mut c = Cluster::by_bootstrap_expect(3, &["-raft-cluster-remove-shutdown=true"]).await;

    // Phase 1: a follower stops cleanly and takes itself out of the cluster.
    let l = c.leader().await;
    let f = (l + 1) % 3;
    assert!(c.nodes[f].terminate().is_some_and(|s| s.success()));
    assert_eq!(members(&c.nodes[l]).await, Some(2));

    // Phase 2: started again with the same flags, it asks to join although it has Raft state,
    // and is a member again.
    c.nodes[f].kill_and_respawn();
    c.nodes[f].wait_ready().await;
    let leader = &c.nodes[l];
    leader
        .wait_for(Duration::from_secs(20), "three members", || async {
            members(leader).await == Some(3)
        })
        .await;

    // Phase 3: it follows the same leader and gets what is written.
    let leader_addr = c.nodes[l].raft.clone();
    c.nodes[f]
        .wait_for(Duration::from_secs(10), "the same leader", || async {
            c.nodes[f].status().await["store"]["leader"]["addr"] == leader_addr.as_str()
        })
        .await;
    c.nodes[l]
        .execute(r#"["CREATE TABLE t(x)", "INSERT INTO t VALUES(1)"]"#)
        .await;
    c.nodes[f]
        .wait_for(Duration::from_secs(10), "replication", || async {
            count(&c.nodes[f], "none").await.contains("[[1]]")
        })
        .await;
}

/// Reads `store.<key>` from a node's `/debug/vars`.
async fn store_var(n: &Node, key: &str) -> i64 {
    n.expvar().await["store"][key].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn a_leader_answers_linearizable_reads_from_its_lease_and_no_other_node_breaks_it() {
    let mut c = Cluster::by_join(3, &[]).await;
    let l = c.leader().await;
    c.nodes[l]
        .execute(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY)", "INSERT INTO t(id) VALUES(1)"]"#)
        .await;
    let (rounds, leased) = (
        store_var(&c.nodes[l], "num_verify_leader").await,
        store_var(&c.nodes[l], "num_read_lease").await,
    );
    for _ in 0..20 {
        assert!(count(&c.nodes[l], "linearizable").await.contains("[[1]]"));
    }
    // The followers' answers to heartbeats keep the lease; a read finds it held unless one
    // came late on a busy machine.
    let rounds = store_var(&c.nodes[l], "num_verify_leader").await - rounds;
    let leased = store_var(&c.nodes[l], "num_read_lease").await - leased;
    assert!(
        leased >= 10 && leased + rounds <= 20,
        "{leased} leased, {rounds} rounds"
    );

    // A follower counted in that lease does not stand for election when anyone but its leader
    // asks: not a request naming no leader, not one naming another.
    async fn term(n: &Node) -> u64 {
        n.status().await["store"]["raft"]["term"].as_u64().unwrap()
    }
    let t0 = term(&c.nodes[l]).await;
    let f = (l + 1) % 3;
    let client = reqwest::Client::new();
    let other = rq_store::types::Vote::new_committed(t0, 999);
    for body in [Vec::new(), postcard::to_stdvec(&other).unwrap()] {
        let r = client
            .post(format!("http://{}/elect", c.nodes[f].raft))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let answer: Result<(), rq_store::StoreError> = postcard::from_bytes(&r.bytes().await.unwrap()).unwrap();
        let err = answer.unwrap_err().to_string();
        assert!(err.contains("follows another leader"), "{err}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(term(&c.nodes[f]).await, t0);
    assert_eq!(c.leader().await, l);

    // Both followers stop. The leader sees their connections close and, as rqlite's does,
    // refuses linearizable reads at once rather than answer from its lease for up to 750 ms.
    assert!(count(&c.nodes[l], "linearizable").await.contains("[[1]]"));
    for i in (0..3).filter(|i| *i != l) {
        c.nodes[i].kill();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, body) = c.nodes[l]
        .post("/db/query?level=linearizable", r#"["SELECT COUNT(*) FROM t"]"#)
        .await;
    assert_eq!((status, body.as_str()), (503, "leader not found\n"));
}

/// Without the lease (`-raft-read-lease=false`), every batch of linearizable reads asks a
/// quorum.
#[tokio::test]
async fn linearizable_reads_share_confirmation_rounds_and_fail_at_once_without_a_quorum() {
    let mut c = Cluster::by_join(3, &["-raft-read-lease=false"]).await;
    let l = c.leader().await;
    c.nodes[l]
        .execute(r#"["CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t(v) VALUES('a')"]"#)
        .await;
    let rounds = store_var(&c.nodes[l], "num_verify_leader").await;

    // Phase 1: 16 clients reading at once share rounds of heartbeats.
    let url = c.nodes[l].url("/db/query?level=linearizable&q=SELECT%20COUNT(*)%20FROM%20t");
    let reads: Vec<_> = (0..16)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in 0..25 {
                    let body = client.get(&url).send().await.unwrap().text().await.unwrap();
                    assert!(body.contains("[[1]]"), "{body}");
                }
            })
        })
        .collect();
    for r in reads {
        r.await.unwrap();
    }
    let used = store_var(&c.nodes[l], "num_verify_leader").await - rounds;
    assert!(used > 0 && used < 400, "{used} rounds for 400 reads");
    // A round asks one follower for its saved vote (with the leader, a quorum of three), and
    // the other only if the first is slow to answer.
    let followers: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let mut probes = 0;
    for f in &followers {
        probes += c.nodes[*f].expvar().await["cluster"]["num_saved_vote_req"]
            .as_i64()
            .unwrap();
    }
    assert!(
        probes >= used && probes <= used + used / 4 + 4,
        "{probes} probes for {used} rounds"
    );

    // Phase 1b: with either follower paused, rounds go on with the other.
    let client = reqwest::Client::new();
    for f in &followers {
        c.nodes[*f].pause();
        for _ in 0..10 {
            let body = client.get(&url).send().await.unwrap().text().await.unwrap();
            assert!(body.contains("[[1]]"), "{body}");
        }
        c.nodes[*f].resume();
    }

    // Phase 2: with both followers gone, a linearizable read fails at once (the heartbeats
    // find nobody), although the leader still counts itself leader.
    for f in followers {
        c.nodes[f].kill();
    }
    let started = Instant::now();
    let (status, body) = c.nodes[l]
        .post("/db/query?level=linearizable", r#"["SELECT COUNT(*) FROM t"]"#)
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    // A weak read is still served: the node has not yet noticed it lost its quorum.
    let (status, _) = c.nodes[l].post("/db/query?level=weak", r#"["SELECT 1"]"#).await;
    assert!(status == 200 || status == 503);
}
