//! Discovery (`-disco-mode`): finding the rest of a cluster through DNS, or through a leader key
//! kept in etcd or Consul.
//!
//! With `dns` and `dns-srv` the addresses found each round are the targets of the usual
//! `-bootstrap-expect` formation (`bootstrap::form`). With `etcd-kv` and `consul-kv` a new node
//! reads the leader key: if no node holds it, a voter claims it with a check-and-set and the
//! winner bootstraps alone; every other node joins the address the key names. Whichever node
//! leads rewrites the key when it gains leadership and every 10 s after, so late nodes and nodes
//! started after a failover find the current leader.

pub mod dns;
pub mod kv;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rq_proto::gofmt::rfc3339;
use rq_store::Store;
use serde_json::{Value, json};

use crate::Network;
use crate::bootstrap::{self, JoinPlan};
use kv::{KvStore, Leader};

/// The ways `-disco-mode` can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Dns,
    DnsSrv,
    EtcdKv,
    ConsulKv,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "dns" => Some(Mode::Dns),
            "dns-srv" => Some(Mode::DnsSrv),
            "etcd-kv" => Some(Mode::EtcdKv),
            "consul-kv" => Some(Mode::ConsulKv),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Dns => "dns",
            Mode::DnsSrv => "dns-srv",
            Mode::EtcdKv => "etcd-kv",
            Mode::ConsulKv => "consul-kv",
        }
    }

    /// Whether the mode finds peers to form a cluster with (`-bootstrap-expect`), rather than a
    /// leader to join.
    pub fn is_dns(self) -> bool {
        matches!(self, Mode::Dns | Mode::DnsSrv)
    }
}

/// A node's way of finding its cluster.
pub enum Disco {
    Dns(Arc<dns::DnsLookup>),
    Kv(Arc<KvDisco>),
}

impl Disco {
    /// `mode` with its configuration text; `raft_port` is the `dns` mode's default port, `key`
    /// the `-disco-key` of the KV modes.
    pub fn new(mode: Mode, key: &str, config: Option<&str>, raft_port: u16) -> Result<Disco, String> {
        Ok(match mode {
            Mode::Dns => Disco::Dns(Arc::new(dns::DnsLookup::host(config, raft_port)?)),
            Mode::DnsSrv => Disco::Dns(Arc::new(dns::DnsLookup::srv(config)?)),
            Mode::EtcdKv => Disco::Kv(KvDisco::new(kv::Etcd::configure(key, config)?)),
            Mode::ConsulKv => Disco::Kv(KvDisco::new(kv::Consul::configure(key, config)?)),
        })
    }
}

/// `-disco-config`: the contents of the file it names, or, when no such file can be opened, the
/// text itself; environment variables expanded as Go's `os.ExpandEnv` does. `None` when empty.
pub fn config_text(arg: &str) -> Result<Option<String>, String> {
    if arg.is_empty() {
        return Ok(None);
    }
    let raw = match std::fs::File::open(arg) {
        Ok(mut f) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).map_err(|e| format!("read {arg}: {e}"))?;
            s
        }
        Err(_) => arg.to_string(),
    };
    Ok(Some(rq_proto::gofmt::expand_env(&raw)))
}

/// How long a new node waits between readings of the leader key.
const REGISTER_INTERVAL: Duration = Duration::from_secs(3);
/// How often the leader rewrites the key.
const REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Pause before reading the key again when joining the node it named failed.
const REJOIN_PAUSE: Duration = Duration::from_secs(1);

/// A leader key in etcd or Consul, and what this node last did with it.
pub struct KvDisco {
    kv: KvStore,
    state: Mutex<KvState>,
}

#[derive(Default)]
struct KvState {
    last_contact: Option<SystemTime>,
    last_leader: Option<Leader>,
    last_error: Option<String>,
}

impl KvDisco {
    pub fn new(kv: KvStore) -> Arc<KvDisco> {
        Arc::new(KvDisco {
            kv,
            state: Mutex::default(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, KvState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, result: Result<(), &str>) {
        let mut st = self.state();
        match result {
            Ok(()) => {
                st.last_contact = Some(SystemTime::now());
                st.last_error = None;
            }
            Err(e) => st.last_error = Some(e.to_string()),
        }
    }

    /// The `disco` section of `/status`: rqlite's fields, and what the key last said.
    pub fn status(&self) -> Value {
        let st = self.state();
        let mut v = json!({
            "mode": self.kv.mode(),
            "key": self.kv.leader_key(),
            "register_interval": REGISTER_INTERVAL.as_nanos() as u64,
            "report_interval": REPORT_INTERVAL.as_nanos() as u64,
            "last_contact": st.last_contact.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339),
        });
        if let Some(l) = &st.last_leader {
            v["last_leader"] = json!({"id": l.id, "api_addr": l.api_addr, "addr": l.addr});
        }
        if let Some(e) = &st.last_error {
            v["last_error"] = json!(e);
        }
        v
    }

    /// Reads the key until it names a leader, or, for a voter, until this node claims it:
    /// `(true, own address)` when this node won, `(false, leader's address)` otherwise.
    async fn register(&self, me: &Leader, voter: bool) -> (bool, String) {
        loop {
            match self.kv.get_leader().await {
                Ok(Some(leader)) => {
                    self.note(Ok(()));
                    let addr = leader.addr.clone();
                    self.state().last_leader = Some(leader);
                    return (false, addr);
                }
                Ok(None) => self.note(Ok(())),
                Err(e) => {
                    tracing::warn!(key = %self.kv.leader_key(), error = %e, "discovery: failed to read the leader key");
                    self.note(Err(&e));
                }
            }
            if voter {
                match self.kv.initialize_leader(me).await {
                    Ok(true) => {
                        self.note(Ok(()));
                        self.state().last_leader = Some(me.clone());
                        return (true, me.addr.clone());
                    }
                    Ok(false) => self.note(Ok(())),
                    Err(e) => {
                        tracing::warn!(key = %self.kv.leader_key(), error = %e, "discovery: failed to claim the leader key");
                        self.note(Err(&e));
                    }
                }
            }
            tokio::time::sleep(jitter(REGISTER_INTERVAL)).await;
        }
    }

    /// Keeps the key naming this node while it leads: at once when it gains leadership, and
    /// every `REPORT_INTERVAL` after. Runs until the store stops.
    pub async fn report(self: Arc<Self>, store: Store, me: Leader) {
        let mut metrics = store.raft().metrics();
        let mut tick = tokio::time::interval(REPORT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leader = false;
        loop {
            let ticked = tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
                _ = tick.tick() => true,
            };
            let leader = store.is_leader();
            let gained = leader && !was_leader;
            was_leader = leader;
            if !(gained || leader && ticked) {
                continue;
            }
            match self.kv.set_leader(&me).await {
                Ok(()) => {
                    self.note(Ok(()));
                    self.state().last_leader = Some(me.clone());
                    if gained {
                        tracing::info!(key = %self.kv.leader_key(), api_addr = %me.api_addr, "discovery: leader key now names this node, which gained leadership");
                    }
                }
                Err(e) => {
                    tracing::warn!(key = %self.kv.leader_key(), error = %e, "discovery: failed to update the leader key");
                    self.note(Err(&e));
                    // Try again at the next tick, leadership change or not.
                    was_leader = false;
                }
            }
        }
    }
}

/// Becomes part of a cluster through the leader key, as rqlite does: a node with Raft state
/// skips registration; otherwise it bootstraps alone if it claimed the key, or joins the node
/// the key names, reading the key again after each failed join.
pub async fn form_by_kv(
    store: &Store,
    net: &Network,
    plan: &JoinPlan,
    disco: &KvDisco,
    me: &Leader,
) -> Result<(), String> {
    if store.is_initialized().await {
        tracing::info!("discovery: this node has Raft state; not registering with the discovery service");
        return Ok(());
    }
    tracing::info!(key = %disco.kv.leader_key(), "discovery: no Raft state; registering with the discovery service");
    let (mut won, mut addr) = disco.register(me, plan.voter).await;
    loop {
        if won {
            tracing::info!("discovery: this node claimed the leader key; bootstrapping");
            return store.bootstrap_alone().await.map_err(|e| e.to_string());
        }
        tracing::info!(join = %addr, "discovery: the leader key names a node to join");
        let attempt = JoinPlan {
            targets: vec![addr.clone()],
            ..plan.clone()
        };
        match bootstrap::join(store, net, &attempt).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(join = %addr, error = %e, "discovery: could not join; reading the leader key again");
                tokio::time::sleep(REJOIN_PAUSE).await;
                (won, addr) = disco.register(me, plan.voter).await;
            }
        }
    }
}

/// `d` plus up to a quarter more, so nodes started together do not move in lockstep.
fn jitter(d: Duration) -> Duration {
    let extra = rand::random::<u64>() % (d.as_millis() as u64 / 4).max(1);
    d + Duration::from_millis(extra)
}
