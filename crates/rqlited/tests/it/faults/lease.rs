//! The read lease under a partition: a leader cut off from the others answers linearizable
//! reads from its lease only until it runs out, which is before the others can elect a new
//! leader. So no read on the old leader that begins after the new leader acknowledged a write
//! misses that write.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::lab::Lab;
use super::{NODES, execute, in_lab, leader, query, start_cluster};

/// How long the old leader is read after the cut; the others elect a new leader within 2 s.
const READING: Duration = Duration::from_secs(5);

#[test]
fn a_cut_off_leader_stops_answering_from_its_lease_before_another_is_elected() {
    in_lab(|| Lab::new(NODES), cut_off_leader);
}

async fn cut_off_leader(mut lab: Lab) {
    let http = reqwest::Client::new();
    start_cluster(&mut lab, &http).await;
    let l = leader(&lab, &http).await.expect("leader");
    let old = lab.nodes[l].http();
    execute(
        &http,
        &old,
        r#"["CREATE TABLE r(k INTEGER PRIMARY KEY, v INTEGER)", "INSERT INTO r VALUES(1, 0)"]"#,
    )
    .await;
    let rest: Vec<usize> = (0..NODES).filter(|&i| i != l).collect();
    lab.partition(&[vec![l], rest.clone()]);
    let cut = Instant::now();

    // One client reads on the old leader, back to back...
    let reader = {
        let (http, old) = (http.clone(), old.clone());
        tokio::spawn(async move {
            let mut reads = Vec::new();
            while cut.elapsed() < READING {
                let began = Instant::now();
                if let Some(v) = query(&http, &old, "linearizable", "SELECT v FROM r WHERE k = 1").await {
                    reads.push((began, v[0][0].as_i64()));
                }
            }
            reads
        })
    };
    // ...while another writes through the other side until a new leader acknowledges it.
    let mut tries = 0;
    let acked = loop {
        assert!(
            cut.elapsed() < Duration::from_secs(15),
            "no new leader acknowledged the write"
        );
        let node = lab.nodes[rest[tries % rest.len()]].http();
        tries += 1;
        let answer = http
            .post(format!("http://{node}/db/execute"))
            .body(r#"["UPDATE r SET v = 1 WHERE k = 1"]"#)
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        if let Ok(r) = answer
            && let Ok(v) = r.json::<Value>().await
            && v.get("error").is_none()
            && v["results"][0].get("error").is_none()
        {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reads = reader.await.expect("reader");

    // The old leader answered from its lease after the cut, while it held...
    assert!(
        reads.iter().any(|(began, _)| *began > cut + Duration::from_millis(50)),
        "no read answered after the cut"
    );
    // ...and never once the new leader had acknowledged the write.
    let after: Vec<_> = reads
        .iter()
        .filter(|(began, _)| *began > acked)
        .map(|(began, v)| (began.duration_since(cut), *v))
        .collect();
    assert!(
        after.is_empty(),
        "the write was acknowledged {:?} after the cut; the old leader still answered {} reads, \
         from {:?} to {:?} (first value {:?})",
        acked.duration_since(cut),
        after.len(),
        after.first().map(|a| a.0),
        after.last().map(|a| a.0),
        after.first().map(|a| a.1),
    );
}
