//! `rqbench`: load generator for rqlite's HTTP API.
//!
//! Two modes. With a SQL statement it behaves like rqlite's rqbench (`-a -n -b -x -q -p -o`).
//! With `-w` it runs named workloads, each on a fresh node when `--spawn` names an `rqlited`
//! binary, and prints requests/s, rows/s, mean, p50, p99, p99.9 and highest latency and the
//! server's CPU time per request (from `/proc/PID/stat`) as a table. Every write figure is printed
//! beside the raw fsync rate of the node's data directory, measured just before and just after
//! the workload (their mean), because this disk's fsync speed varies by several times from
//! hour to hour. `--cluster N` runs the workloads against the leader of an N-node cluster;
//! `--failover N` times N leader failovers; `--against B` compares the `--spawn` binary with
//! B, running them in turns; `--instructions` counts the instructions a node executes per
//! request, under callgrind; `--floor` runs each workload against a plain HTTP server too, the
//! least a node can cost on the machine (`floor.rs`), and `--floor-sql` against the same server
//! running each request's SQL on SQLite.

mod cdc_sink;
mod client;
mod failover;
mod floor;
mod fsync;
mod instructions;
mod large;
mod node;
mod workload;

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use crate::client::Client;
use crate::workload::{Outcome, Workload};

#[derive(Parser, Debug)]
#[command(name = "rqbench", about = "Load testing tool for rqlite's HTTP API")]
struct Args {
    /// Node address (host:port).
    #[arg(short = 'a', default_value = "localhost:4001")]
    addr: String,
    /// Number of requests (per client).
    #[arg(short = 'n', default_value_t = 100)]
    requests: usize,
    /// Statements per request.
    #[arg(short = 'b', default_value_t = 1)]
    batch: usize,
    /// Print progress every m requests.
    #[arg(short = 'm', default_value_t = 0)]
    mod_print: usize,
    /// Use an explicit transaction per request.
    #[arg(short = 'x')]
    tx: bool,
    /// Use queued writes.
    #[arg(short = 'q')]
    queued: bool,
    /// Transport to use (only http).
    #[arg(short = 't', default_value = "http")]
    transport: String,
    /// Endpoint to use.
    #[arg(short = 'p', default_value = "/db/execute")]
    path: String,
    /// One-shot statement to execute before the test.
    #[arg(short = 'o')]
    oneshot: Option<String>,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(short = 'c', default_value_t = 1)]
    clients: usize,
    /// Named workloads to run, comma-separated, or `all`.
    #[arg(short = 'w')]
    workloads: Option<String>,
    /// An rqlited binary: start a fresh node in a temporary directory for each workload.
    #[arg(long)]
    spawn: Option<String>,
    /// How long each named workload runs.
    #[arg(long, default_value = "10", value_name = "SECONDS")]
    duration: u64,
    /// Repeat each named workload this many times and report the median run.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Time whole-database operations (boot, snapshot, backup, load, restart) on a database of
    /// this many rows (about 100 bytes each); needs --spawn.
    #[arg(long, value_name = "ROWS")]
    large: Option<u64>,
    /// With --spawn: run workloads against the leader of a cluster of this many nodes.
    #[arg(long, default_value_t = 1, value_name = "NODES")]
    cluster: usize,
    /// With --spawn: kill the leader of a 3-node cluster this many times and time each
    /// failover (kill to the first write acknowledged through a surviving node).
    #[arg(long, value_name = "TIMES")]
    failover: Option<usize>,
    /// Talk HTTPS. With --spawn, nodes serve HTTPS with a certificate made for the run;
    /// otherwise the node's certificate is verified against --ca-cert, or the system's roots.
    #[arg(long)]
    tls: bool,
    /// With --tls: the CA certificate (PEM) that signed the node's certificate.
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// The statement for the rqbench-compatible mode.
    statement: Option<String>,
    /// With --spawn: turn change data capture on in every node, sending to an endpoint in this
    /// process, and print each workload's delivery lag (commit to endpoint).
    #[arg(long)]
    cdc: bool,
    /// Run each named workload twice in the same run: as it is, then while every node's
    /// /metrics is fetched once a second (printed as `<workload>+scrape`).
    #[arg(long)]
    scrape_metrics: bool,
    /// With --cluster: spread the clients over every node, not only the leader, and print the
    /// leader's share of the nodes' CPU time.
    #[arg(long)]
    spread: bool,
    /// With --spawn: compare the --spawn binary (A) with this one (B). Each workload runs on
    /// them in turns, A B B A, --cycles times; printed are each one's medians and the median
    /// of the ratios B/A of the cycles, which the machine's drift from minute to minute cancels
    /// out of.
    #[arg(long, value_name = "BINARY")]
    against: Option<String>,
    /// With --against: how many A B B A cycles each workload runs.
    #[arg(long, default_value_t = 2)]
    cycles: usize,
    /// With --spawn (one node): run each node under valgrind's callgrind and print the
    /// instructions it executed per request (`kinstr`, thousands), a figure the machine's load
    /// hardly moves. The node runs tens of times slower, so its rates and latencies then mean
    /// nothing.
    #[arg(long)]
    instructions: bool,
    /// Also run each workload against a plain hyper server that does no SQL and no consensus
    /// (a write is one append and fdatasync, shared by the writes that arrive meanwhile; any
    /// other request gets a fixed answer), printed as `<workload>@floor`: the least a node can
    /// cost on this machine, measured in the same run.
    #[arg(long)]
    floor: bool,
    /// Also run each workload against that plain server running each request's statements on
    /// SQLite too (a database set up as a node's: WAL, commits not synced; a write's statements
    /// run after its fdatasync, those of the writes one sync covers in one transaction), printed
    /// as `<workload>@floor+sql`: the least a node that runs its SQL on SQLite can cost.
    #[arg(long)]
    floor_sql: bool,
    /// Serve as that plain server, writing into this directory, on -a (what --floor starts).
    #[arg(long, value_name = "DIR", hide = true)]
    serve_floor: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.serve_floor {
        return floor::serve(dir, &args.addr, args.floor_sql);
    }
    if args.transport != "http" {
        bail!("not a valid transport: {}", args.transport);
    }
    // Certificates made for spawned HTTPS nodes live as long as the run.
    let _certs = if args.tls { Some(set_up_tls(&args)?) } else { None };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        if let Some(rows) = args.large {
            let bin = args.spawn.as_deref().context("--large needs --spawn")?;
            return large::run(bin, rows).await;
        }
        if let Some(times) = args.failover {
            let bin = args.spawn.as_deref().context("--failover needs --spawn")?;
            return failover::run(bin, times).await;
        }
        if args.instructions {
            if args.spawn.is_none() || args.cluster > 1 {
                bail!("--instructions needs --spawn, and one node");
            }
            instructions::check_available()?;
            node::run_every_node_under_callgrind();
        }
        let lags = if args.cdc {
            let (url, lags) = cdc_sink::start().await?;
            node::add_flags_to_every_node(vec!["-cdc-config".into(), url]);
            Some(lags)
        } else {
            None
        };
        match (&args.workloads, &args.statement) {
            (Some(w), _) => run_workloads(&args, w, lags).await,
            (None, Some(stmt)) => run_statement(&args, stmt).await,
            (None, None) => bail!("give a SQL statement, or named workloads with -w (see --help)"),
        }
    })
}

/// Makes every client talk HTTPS and, with --spawn, every node serve it with a certificate
/// for 127.0.0.1 from a CA made here, in the returned directory.
fn set_up_tls(args: &Args) -> anyhow::Result<Option<tempfile::TempDir>> {
    let (ca, dir) = match (&args.spawn, &args.ca_cert) {
        (Some(_), _) => {
            let dir = tempfile::tempdir()?;
            let ca = rq_net::testing::Ca::new("rqbench CA");
            let pair = ca
                .issue("rqbench node", &["127.0.0.1", "localhost"])
                .write(dir.path(), "node");
            node::add_flags_to_every_node(vec![
                "-http-cert".into(),
                pair.cert.display().to_string(),
                "-http-key".into(),
                pair.key.display().to_string(),
            ]);
            (Some(ca.write(dir.path(), "ca.pem")), Some(dir))
        }
        (None, ca) => (ca.clone(), None),
    };
    let config = rq_net::client_config(&rq_net::ClientOptions {
        ca,
        ..Default::default()
    })?;
    client::use_tls(config);
    Ok(dir)
}

/// rqlite rqbench's mode: the same statement, `-b` times per request, `-n` requests.
async fn run_statement(args: &Args, stmt: &str) -> anyhow::Result<()> {
    let client = Client::new(&args.addr);
    if let Some(o) = &args.oneshot {
        client
            .post_json("/db/execute", serde_json::to_vec(&[o])?)
            .await
            .context("one-shot statement")?;
    }
    let body = serde_json::to_vec(&vec![stmt; args.batch])?;
    let mut path = args.path.clone();
    let mut q = Vec::new();
    if args.tx {
        q.push("transaction");
    }
    if args.queued {
        q.push("queue");
    }
    if !q.is_empty() {
        path = format!("{path}?{}", q.join("&"));
    }
    let scheme = if args.tls { "https" } else { "http" };
    println!("Test target: {scheme}://{}{}", args.addr, path);
    let out = workload::drive(
        std::slice::from_ref(&args.addr),
        args.clients,
        workload::Stop::Requests(args.requests),
        {
            let body = body.clone();
            let path = path.clone();
            move |_, _| (path.clone(), Some(body.clone()))
        },
    )
    .await?;
    if args.mod_print > 0 {
        println!("{} requests completed", out.requests);
    }
    println!("Total duration: {:?}", out.elapsed);
    println!("Requests/sec: {:.2}", out.requests as f64 / out.elapsed.as_secs_f64());
    println!(
        "Statements/sec: {:.2}",
        (out.requests * args.batch) as f64 / out.elapsed.as_secs_f64()
    );
    Ok(())
}

async fn run_workloads(args: &Args, names: &str, lags: Option<cdc_sink::Lags>) -> anyhow::Result<()> {
    let list: Vec<Workload> = if names == "all" {
        Workload::all()
    } else {
        names
            .split(',')
            .map(|n| Workload::by_name(n.trim()).with_context(|| format!("unknown workload {n}")))
            .collect::<anyhow::Result<_>>()?
    };
    let duration = Duration::from_secs(args.duration);
    if let Some(b) = &args.against {
        let a = args.spawn.as_deref().context("--against needs --spawn")?;
        return run_ab(args, &list, [a, b], duration).await;
    }
    println!(
        "{:<24} {:>7} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>7}",
        "workload",
        "clients",
        "requests",
        "req/s",
        "rows/s",
        "mean ms",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "cpu us",
        "fsync/s",
        "x fsync",
        "rss MiB",
        "anon MiB",
        "kinstr"
    );
    let variants: &[bool] = if args.scrape_metrics { &[false, true] } else { &[false] };
    for (w, scrape) in list.iter().flat_map(|w| variants.iter().map(move |s| (w, *s))) {
        let mut runs: Vec<Outcome> = Vec::new();
        for _ in 0..args.repeat.max(1) {
            runs.push(run_once(args, args.spawn.as_deref(), w, scrape, &lags, duration).await?);
        }
        let name = if scrape {
            format!("{}+scrape", w.name)
        } else {
            w.name.to_string()
        };
        let name = if args.spread { format!("{name}@all") } else { name };
        print_row(&name, w, runs);
        let floors = [(args.floor, false, "floor"), (args.floor_sql, true, "floor+sql")];
        for (_, sql, suffix) in floors.into_iter().filter(|(asked, ..)| *asked && !scrape) {
            let mut runs: Vec<Outcome> = Vec::new();
            for _ in 0..args.repeat.max(1) {
                let floor = floor::Floor::start(sql).await?;
                runs.push(w.run(std::slice::from_ref(&floor.addr), duration).await?);
            }
            print_row(&format!("{}@{suffix}", w.name), w, runs);
        }
    }
    Ok(())
}

/// Prints the median of `runs` (by rate) as a row of the table.
fn print_row(name: &str, w: &Workload, mut runs: Vec<Outcome>) {
    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let o = &runs[runs.len() / 2];
    let fsync = o.fsync_rate.map(|f| format!("{f:.0}")).unwrap_or_else(|| "-".into());
    let ratio = match (o.fsync_rate, w.writes) {
        (Some(f), true) if f > 0.0 => format!("{:.2}", o.rate() / f),
        _ => "-".into(),
    };
    let mib = |b: Option<u64>| {
        b.map(|b| format!("{:.1}", b as f64 / 1048576.0))
            .unwrap_or_else(|| "-".into())
    };
    let (rss, anon) = (mib(o.rss_bytes), mib(o.anon_bytes));
    let cpu = o.cpu_us.map(|c| format!("{c:.1}")).unwrap_or_else(|| "-".into());
    let kinstr = o
        .instructions
        .map(|i| format!("{:.1}", i / 1000.0))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:<24} {:>7} {:>9} {:>9.0} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>8.1} {:>8} {:>8} {:>7} {:>7} {:>8} {:>7}",
        name,
        w.clients,
        o.requests,
        o.rate(),
        o.rows as f64 / o.elapsed.as_secs_f64(),
        o.mean.as_secs_f64() * 1e3,
        o.p50.as_secs_f64() * 1e3,
        o.p99.as_secs_f64() * 1e3,
        o.p999.as_secs_f64() * 1e3,
        o.max.as_secs_f64() * 1e3,
        cpu,
        fsync,
        ratio,
        rss,
        anon,
        kinstr
    );
    if let Some(share) = o.cpu_share {
        println!("  the leader used {:.0}% of the nodes' CPU time", share * 100.0);
    }
}

/// `--against`: each workload on binaries A and B in turns, A B B A, `--cycles` times.
async fn run_ab(args: &Args, list: &[Workload], bins: [&str; 2], duration: Duration) -> anyhow::Result<()> {
    println!("A: {}\nB: {}", bins[0], bins[1]);
    println!(
        "{:<24} {:>7} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6}",
        "workload",
        "clients",
        "A req/s",
        "B req/s",
        "B/A",
        "A cpu us",
        "B cpu us",
        "B/A",
        "A mean ms",
        "B mean ms",
        "A anon",
        "B anon",
        "fsync/s",
        "A kinstr",
        "B kinstr",
        "B/A"
    );
    for w in list {
        // runs[cycle][binary]: the two runs of each binary in that cycle.
        let mut runs: Vec<[Vec<Outcome>; 2]> = Vec::new();
        for _ in 0..args.cycles.max(1) {
            let mut cycle: [Vec<Outcome>; 2] = [Vec::new(), Vec::new()];
            for turn in [0, 1, 1, 0] {
                cycle[turn].push(run_once(args, Some(bins[turn]), w, false, &None, duration).await?);
            }
            runs.push(cycle);
        }
        let all = |b: usize| runs.iter().flat_map(move |c| c[b].iter());
        let each = |b: usize, f: &dyn Fn(&Outcome) -> Option<f64>| median(all(b).filter_map(f).collect());
        // A cycle's ratio compares runs minutes apart at most, so the machine's drift cancels.
        let ratio = |f: &dyn Fn(&Outcome) -> Option<f64>| {
            median(
                runs.iter()
                    .filter_map(|c| {
                        let sum = |b: usize| c[b].iter().map(f).sum::<Option<f64>>();
                        Some(sum(1)? / sum(0)?)
                    })
                    .collect(),
            )
        };
        let rate = |o: &Outcome| Some(o.rate());
        let cpu = |o: &Outcome| o.cpu_us;
        let mean = |o: &Outcome| Some(o.mean.as_secs_f64() * 1e3);
        let anon = |o: &Outcome| o.anon_bytes.map(|b| b as f64 / 1048576.0);
        let kinstr = |o: &Outcome| o.instructions.map(|i| i / 1000.0);
        let fsync = if w.writes {
            median(runs.iter().flatten().flatten().filter_map(|o| o.fsync_rate).collect())
        } else {
            None
        };
        let show = |v: Option<f64>, places: usize| v.map(|v| format!("{v:.places$}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:>7} {:>9} {:>9} {:>6} {:>8} {:>8} {:>6} {:>9} {:>9} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6}",
            w.name,
            w.clients,
            show(each(0, &rate), 0),
            show(each(1, &rate), 0),
            show(ratio(&rate), 2),
            show(each(0, &cpu), 1),
            show(each(1, &cpu), 1),
            show(ratio(&cpu), 2),
            show(each(0, &mean), 3),
            show(each(1, &mean), 3),
            show(each(0, &anon), 1),
            show(each(1, &anon), 1),
            show(fsync, 0),
            show(each(0, &kinstr), 1),
            show(each(1, &kinstr), 1),
            show(ratio(&kinstr), 3)
        );
    }
    Ok(())
}

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// One run of workload `w`: on a fresh node (or cluster) of `spawn` if given, else on `-a`.
async fn run_once(
    args: &Args,
    spawn: Option<&str>,
    w: &Workload,
    scrape: bool,
    lags: &Option<cdc_sink::Lags>,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let cluster = match spawn {
        Some(bin) => Some(node::Cluster::start(bin, args.cluster.max(1)).await?),
        None => None,
    };
    let addrs: Vec<String> = match &cluster {
        Some(c) => {
            let l = c.leader().await?;
            let mut a = vec![c.nodes[l].http_addr.clone()];
            if args.spread {
                a.extend(
                    c.nodes
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != l)
                        .map(|(_, n)| n.http_addr.clone()),
                );
            }
            a
        }
        None => vec![args.addr.clone()],
    };
    let scraper = scrape.then(|| {
        let addrs: Vec<String> = match &cluster {
            Some(c) => c.nodes.iter().map(|n| n.http_addr.clone()).collect(),
            None => vec![args.addr.clone()],
        };
        tokio::spawn(scrape_every_second(addrs))
    });
    let out = w.run(&addrs, duration).await;
    if let Some(s) = scraper {
        s.abort();
    }
    let out = out?;
    if let Some(l) = lags {
        // Let the last changes arrive before the nodes go.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut v = l.take();
        println!(
            "  cdc: {} messages delivered; lag p50 {} ms, p99 {} ms",
            v.len(),
            cdc_sink::percentile(&mut v, 0.5),
            cdc_sink::percentile(&mut v, 0.99)
        );
    }
    drop(cluster);
    Ok(out)
}

/// Fetches `/metrics` from every node once a second, as a Prometheus server would, until
/// aborted.
async fn scrape_every_second(addrs: Vec<String>) {
    let clients: Vec<Client> = addrs.iter().map(|a| Client::new(a)).collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for c in &clients {
            if let Err(e) = c.get("/metrics").await {
                eprintln!("scraping /metrics: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
