//! rqlited's command line, parsed exactly as Go's `flag` package parses rqlited's.
//!
//! Go's rules differ from every Rust argument parser's: single-dash long names (`-http-addr`),
//! `-flag=value` or `-flag value`, booleans only as `-flag` or `-flag=false`, parsing stops at
//! the first non-flag, `-h` prints the usage and exits 0, an unknown flag exits 2. Scripts
//! depend on those exact rules and on the usage text, so the table below drives both.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rq_proto::gofmt::{duration_string, parse_duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    Int,
    Uint,
    Duration,
}

pub struct FlagDef {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub usage: &'static str,
    /// Whether this build gives the flag its meaning; others are accepted and reported.
    pub implemented: bool,
}

const fn f(name: &'static str, kind: Kind, default: &'static str, usage: &'static str, implemented: bool) -> FlagDef {
    FlagDef {
        name,
        kind,
        default,
        usage,
        implemented,
    }
}

use Kind::*;

/// Every rqlited flag, sorted by name (the order `-h` prints them in).
pub const FLAGS: &[FlagDef] = &[
    f(
        "auth",
        Str,
        "",
        "Path to authentication and authorization file. If not set, not enabled",
        true,
    ),
    f(
        "auto-backup",
        Str,
        "",
        "Path to automatic backup configuration file. If not set, not enabled",
        true,
    ),
    f(
        "auto-optimize-int",
        Duration,
        "24h",
        "Period between automatic 'PRAGMA optimize'. Set to 0h to disable",
        false,
    ),
    f(
        "auto-restore",
        Str,
        "",
        "Path to automatic restore configuration file. If not set, not enabled",
        true,
    ),
    f(
        "auto-vacuum-int",
        Duration,
        "0s",
        "Period between automatic VACUUMs. It not set, not enabled",
        false,
    ),
    f(
        "bootstrap-expect",
        Int,
        "0",
        "Minimum number of nodes required for a bootstrap",
        true,
    ),
    f(
        "bootstrap-expect-timeout",
        Duration,
        "120s",
        "Maximum time for bootstrap process",
        true,
    ),
    f(
        "cdc-config",
        Str,
        "",
        "Set CDC HTTP endpoint, or path to CDC config file. If not set, CDC not enabled",
        true,
    ),
    f(
        "cluster-connect-timeout",
        Duration,
        "30s",
        "Timeout for initial connection to other nodes",
        false,
    ),
    f(
        "compress-snap-transport",
        Bool,
        "false",
        "Enable compression when transferring snapshots between nodes",
        false,
    ),
    f(
        "cpu-profile",
        Str,
        "",
        "Path to file for CPU profiling information",
        false,
    ),
    f(
        "db-max-ro-conns",
        Int,
        "256",
        "Maximum number of read-only connections to database",
        true,
    ),
    f(
        "disco-config",
        Str,
        "",
        "Set discovery config, or path to cluster discovery config file",
        true,
    ),
    f(
        "disco-key",
        Str,
        "rqlite",
        "Key prefix for cluster discovery service",
        true,
    ),
    f(
        "disco-mode",
        Str,
        "",
        "Choose clustering discovery mode. If not set, no node discovery is performed",
        true,
    ),
    f(
        "extensions-path",
        Str,
        "",
        "Comma-delimited list of paths to directories, zipfiles, or tar.gz files containing SQLite extensions",
        true,
    ),
    f("fk", Bool, "false", "Enable SQLite foreign key constraints", true),
    f(
        "http-addr",
        Str,
        "localhost:4001",
        "HTTP server bind address. To enable HTTPS, set X.509 certificate and key",
        true,
    ),
    f(
        "http-adv-addr",
        Str,
        "",
        "Advertised HTTP address. If not set, same as HTTP server bind address",
        true,
    ),
    f(
        "http-allow-origin",
        Str,
        "",
        "Value to set for Access-Control-Allow-Origin HTTP header",
        true,
    ),
    f("http-ca-cert", Str, "", "Path to X.509 CA certificate for HTTPS", true),
    f(
        "http-max-body-size",
        Int,
        "67108864",
        "Largest request body accepted, in bytes, except a SQLite file to load or boot",
        true,
    ),
    f("http-cert", Str, "", "Path to HTTPS X.509 certificate", true),
    f("http-key", Str, "", "Path to HTTPS X.509 private key", true),
    f("http-verify-client", Bool, "false", "Enable mutual TLS for HTTPS", true),
    f(
        "http-verify-common-name",
        Str,
        "",
        "Required Common Name on client certificates. If not set, no Common Name required",
        true,
    ),
    f(
        "idle-poll-time",
        Duration,
        "150µs",
        "How long, after answering a request, the node keeps polling for the next rather than sleep, while the machine has CPU to spare. 0 turns polling off",
        true,
    ),
    f(
        "join",
        Str,
        "",
        "Comma-delimited list of nodes, in host:port form, through which a cluster can be joined",
        true,
    ),
    f(
        "join-as",
        Str,
        "",
        "Username in authentication file to join as. If not set, joins anonymously",
        true,
    ),
    f("join-attempts", Int, "5", "Number of join attempts to make", true),
    f("join-interval", Duration, "3s", "Period between join attempts", true),
    f(
        "mem-profile",
        Str,
        "",
        "Path to file for memory profiling information",
        false,
    ),
    f(
        "node-ca-cert",
        Str,
        "",
        "Path to X.509 CA certificate for node-to-node encryption",
        true,
    ),
    f(
        "node-cert",
        Str,
        "",
        "Path to X.509 certificate for node-to-node mutual authentication and encryption",
        true,
    ),
    f(
        "node-id",
        Str,
        "",
        "Unique ID for node. If not set, set to advertised Raft address",
        true,
    ),
    f(
        "node-key",
        Str,
        "",
        "Path to X.509 private key for node-to-node mutual authentication and encryption",
        true,
    ),
    f(
        "node-no-verify",
        Bool,
        "false",
        "Skip verification of any presented certificate.",
        true,
    ),
    f(
        "node-verify-client",
        Bool,
        "false",
        "Enable mutual TLS for node-to-node communication",
        true,
    ),
    f(
        "node-verify-common-name",
        Str,
        "",
        "Required Common Name on incoming peer certificates. If not set, no Common Name required",
        true,
    ),
    f(
        "node-verify-server-name",
        Str,
        "",
        "Hostname to verify on certificate returned by a node",
        true,
    ),
    f(
        "otlp-ca-cert",
        Str,
        "",
        "Path to X.509 CA certificate for verifying the OpenTelemetry Collector",
        true,
    ),
    f(
        "otlp-cert",
        Str,
        "",
        "Path to X.509 certificate for mutual TLS with the OpenTelemetry Collector",
        true,
    ),
    f(
        "otlp-endpoint",
        Str,
        "",
        "Address of OpenTelemetry Collector for metrics. If not set, OTLP reporting not enabled",
        true,
    ),
    f(
        "otlp-insecure",
        Bool,
        "false",
        "Use plaintext gRPC when communicating with the OpenTelemetry Collector",
        true,
    ),
    f(
        "otlp-interval",
        Duration,
        "30s",
        "Period between OTLP metric exports",
        true,
    ),
    f(
        "otlp-key",
        Str,
        "",
        "Path to X.509 private key for mutual TLS with the OpenTelemetry Collector",
        true,
    ),
    f(
        "otlp-no-verify",
        Bool,
        "false",
        "Skip verification of the OpenTelemetry Collector certificate",
        true,
    ),
    f(
        "raft-addr",
        Str,
        "localhost:4002",
        "Raft communication bind address",
        true,
    ),
    f(
        "raft-adv-addr",
        Str,
        "",
        "Advertised Raft communication address. If not set, same as Raft bind address",
        true,
    ),
    f("raft-apply-timeout", Duration, "10s", "Raft apply timeout", true),
    f(
        "raft-cluster-remove-shutdown",
        Bool,
        "false",
        "Node removes itself from cluster on graceful shutdown",
        true,
    ),
    f("raft-commit-timeout", Duration, "50ms", "Raft commit timeout", false),
    f("raft-election-timeout", Duration, "1s", "Raft election timeout", true),
    f("raft-heartbeat-timeout", Duration, "1s", "Raft heartbeat timeout", true),
    f(
        "raft-leader-lease-timeout",
        Duration,
        "0s",
        "Raft leader lease timeout. Use 0s for Raft default",
        false,
    ),
    f("raft-log-level", Str, "WARN", "Minimum log level for Raft module", true),
    f("raft-non-voter", Bool, "false", "Configure as non-voting node", true),
    f(
        "raft-read-lease",
        Bool,
        "true",
        "Answer linearizable reads on the Leader without asking the other nodes while a quorum of them accepted its heartbeats within 3/4 of the election timeout (sound while the nodes' clocks tick at rates within a third of each other). If false, every batch of such reads asks a quorum",
        true,
    ),
    f(
        "raft-reap-node-timeout",
        Duration,
        "0h",
        "Time after which a non-reachable voting node will be reaped. If not set, no reaping takes place",
        true,
    ),
    f(
        "raft-reap-read-only-node-timeout",
        Duration,
        "0h",
        "Time after which a non-reachable read replica (non-voting) node will be reaped. If not set, no reaping takes place",
        true,
    ),
    f(
        "raft-remove-shutdown",
        Bool,
        "false",
        "Shutdown Raft if node removed from cluster",
        false,
    ),
    f(
        "raft-shutdown-stepdown",
        Bool,
        "true",
        "If leader, stepdown before shutting down. Enabled by default",
        true,
    ),
    f(
        "raft-snap",
        Uint,
        "8192",
        "Number of outstanding log entries which triggers Raft snapshot",
        true,
    ),
    f(
        "raft-snap-int",
        Duration,
        "10s",
        "Snapshot threshold check interval",
        true,
    ),
    f(
        "raft-snap-wal-size",
        Uint,
        "4194304",
        "SQLite WAL file size in bytes which triggers Raft snapshot. Set to 0 to disable",
        true,
    ),
    f(
        "raft-timeout",
        Duration,
        "1s",
        "Raft heartbeat timeout (the name before -raft-heartbeat-timeout)",
        true,
    ),
    f(
        "remove-rqlite-backup",
        Bool,
        "false",
        "Delete the rqlite files kept in the data directory when it was converted from rqlite's layout",
        true,
    ),
    f(
        "trace-profile",
        Str,
        "",
        "Path to file for trace profiling information",
        false,
    ),
    f("version", Bool, "false", "Show version information and exit", true),
    f(
        "write-queue-batch-size",
        Int,
        "128",
        "Queued Writes queue batch size",
        true,
    ),
    f(
        "write-queue-capacity",
        Int,
        "1024",
        "Queued Writes queue capacity",
        true,
    ),
    f(
        "write-queue-timeout",
        Duration,
        "50ms",
        "Queued Writes queue timeout",
        true,
    ),
    f(
        "write-queue-tx",
        Bool,
        "false",
        "Use a transaction when processing a queued write",
        true,
    ),
];

const USAGE_HEADER: &str = "
rqlite is a lightweight, distributed relational database, which uses SQLite as its
storage engine. It provides an easy-to-use, fault-tolerant store for relational data.

Visit https://www.rqlite.io to learn more.

Usage: rqlited [flags] <data directory>
";

/// Why parsing stopped without a usable command line.
#[derive(Debug, PartialEq, Eq)]
pub enum FlagError {
    /// `-h`: print usage, exit 0.
    Help,
    /// A malformed or unknown flag: print the message and usage, exit 2.
    Usage(String),
    /// A well-formed command line that cannot run: print the message, exit 1.
    Fatal(String),
}

/// The parsed command line.
#[derive(Debug)]
pub struct Flags {
    values: HashMap<&'static str, String>,
    /// Flags given on the command line.
    set: HashSet<&'static str>,
    pub data_dir: String,
}

fn def(name: &str) -> Option<&'static FlagDef> {
    FLAGS.iter().find(|d| d.name == name)
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: decimal, `0x`, `0o`/`0` octal, `0b`, underscores.
fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (radix, digits) = if let Some(r) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        (16, r)
    } else if let Some(r) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        (2, r)
    } else if let Some(r) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        (8, r)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    let digits = digits.replace('_', "");
    let v = i64::from_str_radix(&digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

fn valid(kind: Kind, v: &str) -> bool {
    match kind {
        Bool => parse_bool(v).is_some(),
        Str => true,
        Int => parse_go_int(v).is_some(),
        Uint => parse_go_int(v).is_some_and(|n| n >= 0),
        Duration => parse_duration(v).is_some(),
    }
}

impl Flags {
    /// Parses the arguments after the program name.
    pub fn parse(args: &[String]) -> Result<Flags, FlagError> {
        let mut values = HashMap::new();
        let mut set = HashSet::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if arg.len() < 2 || !arg.starts_with('-') {
                break;
            }
            i += 1;
            if arg == "--" {
                break;
            }
            let name_part = arg.strip_prefix("--").unwrap_or(&arg[1..]);
            if name_part.is_empty() || name_part.starts_with('-') || name_part.starts_with('=') {
                return Err(FlagError::Usage(format!("bad flag syntax: {arg}")));
            }
            let (name, value) = match name_part.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name_part, None),
            };
            let Some(d) = def(name) else {
                if name == "h" || name == "help" {
                    return Err(FlagError::Help);
                }
                return Err(FlagError::Usage(format!("flag provided but not defined: -{name}")));
            };
            let value = match (d.kind, value) {
                (Bool, None) => "true".to_string(),
                (Bool, Some(v)) => {
                    if parse_bool(&v).is_none() {
                        return Err(FlagError::Usage(format!(
                            "invalid boolean value \"{v}\" for -{name}: parse error"
                        )));
                    }
                    v
                }
                (_, Some(v)) => v,
                (_, None) => {
                    let Some(v) = args.get(i) else {
                        return Err(FlagError::Usage(format!("flag needs an argument: -{name}")));
                    };
                    i += 1;
                    v.clone()
                }
            };
            if !valid(d.kind, &value) {
                return Err(FlagError::Usage(format!(
                    "invalid value \"{value}\" for flag -{name}: parse error"
                )));
            }
            values.insert(d.name, value);
            set.insert(d.name);
        }
        let rest = &args[i..];
        let is_version = values.get("version").and_then(|v| parse_bool(v)).unwrap_or(false);
        let data_dir = match rest.first() {
            Some(d) => d.clone(),
            None if is_version => String::new(),
            None => return Err(FlagError::Fatal("data directory path is required".into())),
        };
        if rest.len() > 1 {
            return Err(FlagError::Fatal(format!(
                "arguments after data directory ({}) are not accepted ({})",
                data_dir,
                rest[1..].join(" ")
            )));
        }
        let flags = Flags { values, set, data_dir };
        flags.validate()?;
        Ok(flags)
    }

    /// rqlite's checks of flags that go together.
    fn validate(&self) -> Result<(), FlagError> {
        for (cert, key) in [
            ("http-cert", "http-key"),
            ("node-cert", "node-key"),
            ("otlp-cert", "otlp-key"),
        ] {
            if self.raw(cert).is_empty() != self.raw(key).is_empty() {
                return Err(FlagError::Fatal(format!(
                    "either both -{cert} and -{key} must be set, or neither"
                )));
            }
        }
        let expect = parse_go_int(self.raw("bootstrap-expect")).unwrap_or(0);
        let non_voter = parse_bool(self.raw("raft-non-voter")).unwrap_or(false);
        let disco = self.raw("disco-mode");
        for p in self.raw("extensions-path").split(',').filter(|p| !p.is_empty()) {
            if !std::path::Path::new(p).exists() {
                return Err(FlagError::Fatal(format!("extension path does not exist: {p}")));
            }
        }
        if !self.raw("cdc-config").is_empty() && non_voter {
            return Err(FlagError::Fatal("CDC cannot be enabled on non-voting nodes".into()));
        }
        if expect > 0 && non_voter {
            return Err(FlagError::Fatal("bootstrapping only applicable to voting nodes".into()));
        }
        if !self.raw("join").is_empty() && expect == 0 && !self.raw("auto-restore").is_empty() {
            return Err(FlagError::Fatal(
                "auto-restoring cannot be used when joining a cluster".into(),
            ));
        }
        if !self.raw("join").is_empty() && !disco.is_empty() {
            return Err(FlagError::Fatal(
                "disco mode cannot be used when also explicitly joining a cluster".into(),
            ));
        }
        match disco {
            "" => {}
            "etcd-kv" | "consul-kv" if expect > 0 => {
                return Err(FlagError::Fatal(format!(
                    "bootstrapping not applicable when using {disco}"
                )));
            }
            "dns" | "dns-srv" if expect == 0 && !non_voter => {
                return Err(FlagError::Fatal(format!(
                    "bootstrap-expect value required when using {disco} with a voting node"
                )));
            }
            "etcd-kv" | "consul-kv" | "dns" | "dns-srv" => {}
            _ => {
                return Err(FlagError::Fatal(
                    "disco mode must be one of consul-kv, etcd-kv, dns, or dns-srv".into(),
                ));
            }
        }
        self.validate_otlp()?;
        for side in ["http", "node"] {
            if !self.raw(&format!("{side}-verify-common-name")).is_empty()
                && !parse_bool(self.raw(&format!("{side}-verify-client"))).unwrap_or(false)
            {
                return Err(FlagError::Fatal(format!(
                    "-{side}-verify-common-name requires -{side}-verify-client"
                )));
            }
        }
        Ok(())
    }

    /// rqlite's checks of the `-otlp-` flags.
    fn validate_otlp(&self) -> Result<(), FlagError> {
        let fatal = |m: String| Err(FlagError::Fatal(m));
        let insecure = parse_bool(self.raw("otlp-insecure")).unwrap_or(false);
        let tls_opts = parse_bool(self.raw("otlp-no-verify")).unwrap_or(false)
            || !self.raw("otlp-ca-cert").is_empty()
            || !self.raw("otlp-cert").is_empty();
        let endpoint = self.raw("otlp-endpoint");
        if endpoint.is_empty() {
            if insecure || tls_opts {
                return fatal("OTLP options require -otlp-endpoint".into());
            }
            return Ok(());
        }
        if endpoint.contains("://") {
            return fatal("-otlp-endpoint must not include a protocol scheme".into());
        }
        let valid = endpoint
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.chars().all(|c| c.is_ascii_digit()));
        if !valid {
            return fatal("-otlp-endpoint is not a valid address".into());
        }
        if parse_duration(self.raw("otlp-interval")).is_none_or(|d| d.is_zero()) {
            return fatal("-otlp-interval must be greater than zero".into());
        }
        if insecure && tls_opts {
            return fatal("-otlp-insecure cannot be used with other OTLP TLS options".into());
        }
        Ok(())
    }

    fn raw(&self, name: &str) -> &str {
        self.values
            .get(name)
            .map(String::as_str)
            .or_else(|| def(name).map(|d| d.default))
            .unwrap_or("")
    }

    pub fn is_set(&self, name: &str) -> bool {
        self.set.contains(name)
    }

    pub fn string(&self, name: &str) -> String {
        self.raw(name).to_string()
    }

    pub fn bool(&self, name: &str) -> bool {
        parse_bool(self.raw(name)).unwrap_or(false)
    }

    pub fn int(&self, name: &str) -> i64 {
        parse_go_int(self.raw(name)).unwrap_or(0)
    }

    pub fn duration(&self, name: &str) -> Duration {
        parse_duration(self.raw(name)).unwrap_or_default()
    }

    /// Flags given with a value other than their default that this build does not act on.
    pub fn unimplemented(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = FLAGS
            .iter()
            .filter(|d| !d.implemented && self.set.contains(d.name))
            .filter(|d| {
                let given = self.raw(d.name);
                match d.kind {
                    Bool => parse_bool(given) != parse_bool(d.default),
                    Duration => parse_duration(given) != parse_duration(d.default),
                    Int | Uint => parse_go_int(given) != parse_go_int(d.default),
                    Str => given != d.default,
                }
            })
            .map(|d| d.name)
            .collect();
        out.sort_unstable();
        out
    }
}

/// The usage text `-h` prints, in Go's `PrintDefaults` layout.
pub fn usage() -> String {
    let mut s = String::from(USAGE_HEADER);
    for d in FLAGS {
        s.push_str("  -");
        s.push_str(d.name);
        let ty = match d.kind {
            Bool => "",
            Str => " string",
            Int => " int",
            Uint => " uint",
            Duration => " duration",
        };
        s.push_str(ty);
        s.push_str("\n    \t");
        s.push_str(d.usage);
        let shown = match d.kind {
            Bool if d.default == "true" => Some("true".to_string()),
            Str if !d.default.is_empty() => Some(format!("\"{}\"", d.default)),
            Int | Uint if d.default != "0" => Some(d.default.to_string()),
            Duration => parse_duration(d.default).filter(|v| !v.is_zero()).map(duration_string),
            _ => None,
        };
        if let Some(v) = shown {
            s.push_str(&format!(" (default {v})"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, FlagError> {
        Flags::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn go_style_forms() {
        let f = parse(&[
            "-node-id",
            "0",
            "-http-addr=127.0.0.1:1",
            "--raft-addr",
            "127.0.0.1:2",
            "-fk",
            "-raft-non-voter=false",
            "-raft-snap",
            "0x10",
            "-raft-snap-int",
            "1s",
            "/data",
        ])
        .unwrap();
        assert_eq!(f.string("node-id"), "0");
        assert_eq!(f.string("http-addr"), "127.0.0.1:1");
        assert_eq!(f.string("raft-addr"), "127.0.0.1:2");
        assert!(f.bool("fk"));
        assert!(!f.bool("raft-non-voter"));
        assert_eq!(f.int("raft-snap"), 16);
        assert_eq!(f.duration("raft-snap-int"), Duration::from_secs(1));
        assert_eq!(f.data_dir, "/data");
        assert_eq!(f.string("raft-log-level"), "WARN");
        assert!(f.bool("raft-shutdown-stepdown"));
    }

    #[test]
    fn errors_as_go_reports_them() {
        assert_eq!(
            parse(&["-nope", "/d"]).unwrap_err(),
            FlagError::Usage("flag provided but not defined: -nope".into())
        );
        assert_eq!(parse(&["-h"]).unwrap_err(), FlagError::Help);
        assert_eq!(parse(&["-help"]).unwrap_err(), FlagError::Help);
        assert_eq!(
            parse(&["-fk=maybe", "/d"]).unwrap_err(),
            FlagError::Usage("invalid boolean value \"maybe\" for -fk: parse error".into())
        );
        assert_eq!(
            parse(&["-raft-snap-int", "ten", "/d"]).unwrap_err(),
            FlagError::Usage("invalid value \"ten\" for flag -raft-snap-int: parse error".into())
        );
        assert_eq!(
            parse(&["-http-addr"]).unwrap_err(),
            FlagError::Usage("flag needs an argument: -http-addr".into())
        );
        assert_eq!(
            parse(&["-fk"]).unwrap_err(),
            FlagError::Fatal("data directory path is required".into())
        );
        assert!(matches!(parse(&["/d", "extra"]).unwrap_err(), FlagError::Fatal(_)));
        assert!(parse(&["-version"]).is_ok());
    }

    #[test]
    fn parsing_stops_at_the_first_positional() {
        let e = parse(&["/d", "-fk"]).unwrap_err();
        assert!(matches!(e, FlagError::Fatal(m) if m.contains("are not accepted")));
    }

    #[test]
    fn unimplemented_flags_are_reported_only_when_they_change_something() {
        let f = parse(&["-raft-non-voter=false", "-auto-vacuum-int", "1h", "/d"]).unwrap();
        assert_eq!(f.unimplemented(), vec!["auto-vacuum-int"]);
    }

    #[test]
    fn usage_lists_defaults_like_go() {
        let u = usage();
        assert!(u.contains("  -http-addr string\n    \tHTTP server bind address. To enable HTTPS, set X.509 certificate and key (default \"localhost:4001\")\n"));
        assert!(u.contains("  -fk\n    \tEnable SQLite foreign key constraints\n"));
        assert!(u.contains("(default 2m0s)"));
        assert!(u.contains("  -raft-snap uint\n"));
    }
}
