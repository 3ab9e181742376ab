//! Queued writes: acknowledged at once with a sequence number, all eventually written.

use crate::harness::single;

#[tokio::test]
async fn queued_writes_all_land() {
    let (_d, n) = single().await;
    n.execute(r#"["CREATE TABLE q(id INTEGER PRIMARY KEY, v INTEGER)"]"#)
        .await;

    // Phase 1: many concurrent queued writes, each answered with an increasing sequence number.
    let mut tasks = Vec::new();
    for c in 0..8 {
        let url = n.url("/db/execute?queue");
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seqs = Vec::new();
            for i in 0..50 {
                let body = format!(r#"[["INSERT INTO q(v) VALUES(?)", {}]]"#, c * 1000 + i);
                let text = client.post(&url).body(body).send().await.unwrap().text().await.unwrap();
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["results"], serde_json::json!([]), "{text}");
                seqs.push(v["sequence_number"].as_i64().unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "sequence numbers increase per client"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 400, "sequence numbers are unique");

    // Phase 2: a flush barrier (queue&wait with an empty body), then every row is there.
    let (s, body) = n.post("/db/execute?queue&wait", "").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        n.query("", r#"["SELECT COUNT(*), COUNT(DISTINCT v) FROM q"]"#).await,
        r#"{"results":[{"columns":["COUNT(*)","COUNT(DISTINCT v)"],"types":["integer","integer"],"values":[[400,400]]}]}"#
    );
    // The status reports the last sequence number written (the barrier's own, past them all).
    let st = n.status().await;
    let written = st["http"]["queue"]["_default"]["sequence_number"].as_i64().unwrap();
    assert!(written > *all.last().unwrap());

    // Phase 3: queue&wait answers after its own write is in.
    let (s, body) = n
        .post("/db/execute?queue&wait", r#"["INSERT INTO q(v) VALUES(-1)"]"#)
        .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        n.query("", r#"["SELECT v FROM q WHERE v=-1"]"#)
            .await
            .contains("[[-1]]")
    );

    // An empty queued request without wait is refused.
    assert_eq!(
        n.post("/db/execute?queue", "[]").await,
        (400, "no statements\n".to_string())
    );
}
