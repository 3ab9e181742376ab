//! `dns` and `dns-srv` discovery: the node-to-node addresses of the cluster, looked up afresh
//! each round of forming it.
//!
//! Lookups use the system's resolver configuration (`/etc/resolv.conf`, and `/etc/hosts`), with
//! no caching. Like rqlite, `RQLITE_DISCO_DNS_HOSTS` (comma-separated `host:port`) stands in for
//! an `A` lookup. `RQLITE_DISCO_DNS_SERVER` (`ip:port`) sends queries to that one server instead
//! of the system's, for a resolver that is not the host's.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use rq_proto::gofmt::rfc3339;
use serde::Deserialize;
use serde_json::{Value, json};

/// Stands in for the `A` lookup of `dns` mode, as in rqlite.
pub const HOSTS_ENV: &str = "RQLITE_DISCO_DNS_HOSTS";
/// The one DNS server to ask, instead of the system's.
pub const SERVER_ENV: &str = "RQLITE_DISCO_DNS_SERVER";

#[derive(Deserialize, Default)]
struct DnsConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    port: i64,
}

#[derive(Deserialize, Default)]
struct SrvConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    service: String,
}

enum What {
    /// Addresses of `name`, each with `port`.
    Host { name: String, port: u16 },
    /// The targets and ports of `_service._tcp.name`.
    Srv { name: String, service: String },
}

/// One DNS name to look up, and what its last lookup found.
pub struct DnsLookup {
    what: What,
    resolver: Result<TokioResolver, String>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last_contact: Option<SystemTime>,
    last_addresses: Vec<String>,
    last_error: Option<String>,
}

impl DnsLookup {
    /// `dns` mode: `{"name": ..., "port": ...}`, the name `rqlite` and this node's Raft port by
    /// default.
    pub fn host(config: Option<&str>, raft_port: u16) -> Result<DnsLookup, String> {
        let cfg: DnsConfig = parse(config)?;
        let port = match cfg.port {
            0 => raft_port,
            p => u16::try_from(p).map_err(|_| format!("invalid port {p}"))?,
        };
        Ok(DnsLookup::new(What::Host {
            name: non_empty(cfg.name, "rqlite"),
            port,
        }))
    }

    /// `dns-srv` mode: `{"name": ..., "service": ...}`, both `rqlite` by default.
    pub fn srv(config: Option<&str>) -> Result<DnsLookup, String> {
        let cfg: SrvConfig = parse(config)?;
        Ok(DnsLookup::new(What::Srv {
            name: non_empty(cfg.name, "rqlite"),
            service: non_empty(cfg.service, "rqlite"),
        }))
    }

    fn new(what: What) -> DnsLookup {
        DnsLookup {
            what,
            resolver: resolver(),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses the name has now, sorted.
    pub async fn lookup(&self) -> Result<Vec<String>, String> {
        let found = self.resolve().await;
        let mut st = self.state();
        let mut addrs = match found {
            Ok((addrs, from_dns)) => {
                if from_dns {
                    st.last_contact = Some(SystemTime::now());
                    st.last_error = None;
                }
                addrs
            }
            Err(e) => {
                st.last_error = Some(e.clone());
                return Err(e);
            }
        };
        addrs.sort();
        if addrs != st.last_addresses {
            tracing::info!(addresses = ?addrs, "discovery: resolved addresses");
            st.last_addresses = addrs.clone();
        }
        Ok(addrs)
    }

    /// The addresses, and whether they came from DNS rather than the environment.
    async fn resolve(&self) -> Result<(Vec<String>, bool), String> {
        match &self.what {
            What::Host { name, port } => {
                if let Ok(hosts) = std::env::var(HOSTS_ENV) {
                    let addrs = hosts
                        .split(',')
                        .map(|a| {
                            split_host_port(a)
                                .map(|_| a.to_string())
                                .ok_or_else(|| format!("{HOSTS_ENV}: invalid address {a}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok((addrs, false));
                }
                let resolver = self.resolver.as_ref().map_err(Clone::clone)?;
                let ips = resolver
                    .lookup_ip(name.as_str())
                    .await
                    .map_err(|e| format!("lookup {name}: {e}"))?;
                Ok((
                    ips.iter().map(|ip| SocketAddr::new(ip, *port).to_string()).collect(),
                    true,
                ))
            }
            What::Srv { name, service } => {
                let resolver = self.resolver.as_ref().map_err(Clone::clone)?;
                let query = format!("_{service}._tcp.{name}");
                let records = resolver
                    .srv_lookup(query.as_str())
                    .await
                    .map_err(|e| format!("lookup {query}: {e}"))?;
                let mut addrs = Vec::new();
                for record in records.answers() {
                    let RData::SRV(srv) = &record.data else { continue };
                    let target = srv.target.to_string();
                    let ips = resolver
                        .lookup_ip(target.as_str())
                        .await
                        .map_err(|e| format!("lookup {target}: {e}"))?;
                    addrs.extend(ips.iter().map(|ip| SocketAddr::new(ip, srv.port).to_string()));
                }
                Ok((addrs, true))
            }
        }
    }

    /// The `disco` section of `/status`, with rqlite's fields.
    pub fn status(&self) -> Value {
        let st = self.state();
        let mut v = match &self.what {
            What::Host { name, port } => json!({"mode": "dns", "name": name, "port": port}),
            // rqlite's key has the stray colon.
            What::Srv { name, service } => json!({
                "mode": "dns-srv",
                "name": name,
                "service": service,
                "dns_name:": format!("_{service}._tcp.{name}."),
            }),
        };
        if let Some(e) = &st.last_error {
            v["last_error"] = json!(e);
        }
        if let Some(t) = st.last_contact {
            v["last_contact"] = json!(rfc3339(t));
        }
        if !st.last_addresses.is_empty() {
            v["last_addresses"] = json!(st.last_addresses);
        }
        v
    }
}

fn parse<T: for<'de> Deserialize<'de> + Default>(config: Option<&str>) -> Result<T, String> {
    match config {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(text).map_err(|e| format!("error reading DNS configuration: {e}")),
    }
}

fn non_empty(s: String, default: &str) -> String {
    if s.is_empty() { default.to_string() } else { s }
}

/// `host:port` split as Go's `net.SplitHostPort` accepts it: IPv6 hosts in brackets.
fn split_host_port(a: &str) -> Option<(&str, &str)> {
    let (host, port) = a.rsplit_once(':')?;
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return None;
    }
    Some((host, port))
}

/// A resolver that asks every time (no cache), for both IPv4 and IPv6 addresses, as Go's
/// `net.LookupIP` does.
fn resolver() -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match std::env::var(SERVER_ENV) {
        Ok(server) => {
            let addr: SocketAddr = server
                .parse()
                .map_err(|e| format!("{SERVER_ENV}: invalid address {server}: {e}"))?;
            let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            TokioResolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
        }
        Err(_) => TokioResolver::builder(provider).map_err(|e| format!("DNS resolver configuration: {e}"))?,
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build().map_err(|e| format!("DNS resolver: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_have_rqlites_defaults() {
        let d = DnsLookup::host(None, 4002).unwrap();
        assert_eq!(d.status(), json!({"mode": "dns", "name": "rqlite", "port": 4002}));
        let d = DnsLookup::host(Some(r#"{"name": "rqlite.cluster", "port": 4012}"#), 4002).unwrap();
        assert_eq!(d.status()["port"], 4012);
        assert!(DnsLookup::host(Some(r#"{"port": 70000}"#), 4002).is_err());
        assert!(DnsLookup::host(Some("{"), 4002).is_err());
        let s = DnsLookup::srv(Some(r#"{"name": "rqlite.local", "service": "rqlite-raft"}"#)).unwrap();
        assert_eq!(s.status()["dns_name:"], "_rqlite-raft._tcp.rqlite.local.");
    }

    #[test]
    fn host_port_pairs_are_checked_as_go_checks_them() {
        assert!(split_host_port("localhost:4002").is_some());
        assert!(split_host_port("[::1]:4002").is_some());
        assert!(split_host_port("::1:4002").is_none());
        assert!(split_host_port("localhost").is_none());
    }
}
