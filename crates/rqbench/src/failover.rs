//! Failover time: kill -9 the leader of a 3-node cluster and time until a write is
//! acknowledged through a surviving node; repeated, with the killed node restarted in between.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::Client;
use crate::node::Cluster;

/// Longest a single failover may take before the run is abandoned.
const GIVE_UP: Duration = Duration::from_secs(60);

pub async fn run(bin: &str, times: usize) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(bin, 3).await?;
    let l = cluster.leader().await?;
    Client::new(&cluster.nodes[l].http_addr)
        .post_json(
            "/db/execute",
            br#"["CREATE TABLE f(id INTEGER PRIMARY KEY, n INTEGER)"]"#.to_vec(),
        )
        .await?;
    let mut took = Vec::new();
    for round in 0..times {
        let l = cluster.leader().await?;
        let survivor = (l + 1) % cluster.nodes.len();
        let client = Client::new(&cluster.nodes[survivor].http_addr);
        let body = format!(r#"[["INSERT INTO f(n) VALUES(?)", {round}]]"#).into_bytes();
        cluster.nodes[l].kill();
        let t = Instant::now();
        // The surviving node forwards to whichever node leads; a write is acknowledged only
        // once a new leader has committed it.
        while client.post_json("/db/execute", body.clone()).await.is_err() {
            if t.elapsed() > GIVE_UP {
                bail!("no write succeeded within {GIVE_UP:?} of killing the leader");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let d = t.elapsed();
        println!("failover {:>2}: {:>8.3} s", round + 1, d.as_secs_f64());
        took.push(d);
        cluster.nodes[l].restart().await?;
        // Let the restarted node catch up and settle as a follower before the next round.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    took.sort();
    println!(
        "failover over {} runs: median {:.3} s, min {:.3} s, max {:.3} s",
        took.len(),
        took[took.len() / 2].as_secs_f64(),
        took[0].as_secs_f64(),
        took[took.len() - 1].as_secs_f64()
    );
    Ok(())
}
