//! The `rqlite` shell: rqlite's interactive CLI, over the public HTTP API only, so it works with
//! rqlite's own server too. Options, commands and output follow rqlite's CLI.

mod client;
mod complete;
mod gather;
mod shell;
mod table;

use std::io::{BufRead, IsTerminal};

use clap::Parser;

use crate::client::Client;
use crate::shell::{Flow, Shell};

/// The variable that names the server when `-H`, `-p` and `-s` are not given.
const HOST_ENV: &str = "RQLITE_HOST";

#[derive(Parser, Debug)]
#[command(name = "rqlite", disable_help_flag = true, disable_version_flag = true)]
struct Args {
    #[arg(short = 'h', long = "help")]
    help: bool,
    #[arg(short = 'a', long = "alternatives", default_value = "")]
    alternatives: String,
    #[arg(short = 's', long = "scheme", default_value = "http")]
    scheme: String,
    #[arg(short = 'H', long = "host", default_value = "127.0.0.1")]
    host: String,
    #[arg(short = 'p', long = "port", default_value_t = 4001)]
    port: u16,
    #[arg(short = 'P', long = "prefix", default_value = "/")]
    prefix: String,
    #[arg(short = 'i', long = "insecure", default_value_t = false)]
    insecure: bool,
    #[arg(short = 'c', long = "ca-cert", default_value = "")]
    ca_cert: String,
    #[arg(short = 'd', long = "client-cert", default_value = "")]
    client_cert: String,
    #[arg(short = 'k', long = "client-key", default_value = "")]
    client_key: String,
    #[arg(short = 'u', long = "user", default_value = "")]
    user: String,
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[arg(short = 't', long = "http-timeout", default_value = "30s")]
    http_timeout: String,
}

const USAGE: &str = include_str!("usage.txt");

/// The `-h` text, with rqlite's bold option names and grey defaults on a terminal.
fn usage(color: bool) -> String {
    if !color {
        return USAGE.to_string();
    }
    USAGE
        .lines()
        .map(|l| {
            if l == "Options:" {
                "\x1b[1mOptions\x1b[0m:".to_string()
            } else if let Some(names) = l.strip_prefix("  -") {
                let (names, default) = match names.find("[=") {
                    Some(i) => (&names[..i], &names[i..]),
                    None => (names, ""),
                };
                let default = if default.is_empty() {
                    String::new()
                } else {
                    format!("\x1b[90m{default}\x1b[0m")
                };
                format!("  \x1b[1m-{names}\x1b[0m{default}")
            } else {
                l.to_string()
            }
        })
        .map(|l| l + "\n")
        .collect()
}

/// Runs the shell with the process's arguments.
pub fn main() -> std::process::ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ERR! {}", parse_error(&e));
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ERR! {e}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}

/// An option error in the words rqlite's option parser uses.
fn parse_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |k| match e.get(k) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(ContextValue::Strings(v)) => v.join(", "),
        _ => String::new(),
    };
    match e.kind() {
        ErrorKind::UnknownArgument => format!("undefined option {}", context(ContextKind::InvalidArg)),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => format!(
            "parameter {} invalid: `{}' couldn't converted to an uint",
            context(ContextKind::InvalidArg)
                .split_whitespace()
                .next()
                .unwrap_or_default(),
            context(ContextKind::InvalidValue)
        ),
        _ => e
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string(),
    }
}

/// `host:port`, bracketed for IPv6 as Go's `net.JoinHostPort` does.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `RQLITE_HOST`: `[scheme://]host[:port]`, as rqlite reads it.
fn parse_host_env(value: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let u = url::Url::parse(&with_scheme).map_err(|e| e.to_string())?;
    let scheme = value.contains("://").then(|| u.scheme().to_string());
    if let Some(s) = &scheme
        && s != "http"
        && s != "https"
    {
        return Err(format!("unsupported protocol {s}"));
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("{HOST_ENV} does not contain a hostname"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    Ok((scheme, host, u.port()))
}

async fn run(mut args: Args) -> std::process::ExitCode {
    let color = std::io::stdout().is_terminal();
    let err = |msg: &str| {
        if color {
            println!("\x1b[31mERR!\x1b[0m {msg}");
        } else {
            println!("ERR! {msg}");
        }
    };
    if args.help {
        print!("{}", usage(color));
        return std::process::ExitCode::SUCCESS;
    }
    if args.version {
        println!(
            "Version {}, commit unknown, built on unknown",
            concat!("v10.3.0+rs.", env!("CARGO_PKG_VERSION"))
        );
        return std::process::ExitCode::SUCCESS;
    }
    let given = |short: &str, long: &str| {
        std::env::args().any(|a| {
            a == short || a == long || a.starts_with(&format!("{long}=")) || a.starts_with(&format!("{short}="))
        })
    };
    if let Ok(v) = std::env::var(HOST_ENV)
        && !(given("-H", "--host") || given("-p", "--port") || given("-s", "--scheme"))
    {
        match parse_host_env(&v) {
            Ok((scheme, host, port)) => {
                if let Some(s) = scheme {
                    args.scheme = s;
                }
                args.host = host;
                if let Some(p) = port {
                    args.port = p;
                }
            }
            Err(e) => {
                err(&e);
                return std::process::ExitCode::from(1);
            }
        }
    }
    let timeout = match rq_proto::gofmt::parse_duration(&args.http_timeout) {
        Some(t) => t,
        None => {
            err(&format!("time: invalid duration \"{}\"", args.http_timeout));
            return std::process::ExitCode::from(1);
        }
    };
    let tls = if args.scheme == "https" {
        let pair = (!args.client_cert.is_empty()).then(|| rq_net::KeyPair {
            cert: args.client_cert.clone().into(),
            key: args.client_key.clone().into(),
        });
        match rq_net::client_config(&rq_net::ClientOptions {
            ca: (!args.ca_cert.is_empty()).then(|| args.ca_cert.clone().into()),
            no_verify: args.insecure,
            server_name: None,
            pair,
        }) {
            Ok(c) => Some(c),
            Err(e) => {
                err(&e.to_string());
                return std::process::ExitCode::from(1);
            }
        }
    } else {
        None
    };
    let first = join_host_port(&args.host, args.port);
    let mut hosts = vec![first.clone()];
    hosts.extend(
        args.alternatives
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string),
    );
    let creds = (!args.user.is_empty()).then(|| args.user.clone());
    let mut client = match Client::new(tls, timeout, &args.scheme, hosts, &args.prefix, creds) {
        Ok(c) => c,
        Err(e) => {
            err(&e.to_string());
            return std::process::ExitCode::from(1);
        }
    };
    let connection = format!("{}://{first}", args.scheme);
    let version = match client
        .request(
            reqwest::Method::GET,
            &format!("{}status", args.prefix),
            None,
            None,
            false,
        )
        .await
    {
        Ok(a) => a
            .headers
            .get("x-rqlite-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_string(),
        Err(e) => {
            err(&e.to_string());
            return std::process::ExitCode::from(1);
        }
    };
    println!("Welcome to the rqlite CLI.");
    println!("Enter \".help\" for usage hints.");
    println!("Connected to {connection} running version {version}");
    // The client may have answered from an alternative host already.
    let prompt_host = client.current_host().to_string();
    let mut shell = Shell::new(client, prompt_host, color);
    if std::io::stdin().is_terminal() {
        interactive(&mut shell).await;
    } else {
        // As rqlite's line reader: with output to a pipe (or a dumb terminal) the prompt is
        // still written before each line is read, and nothing is echoed.
        let dumb = std::env::var("TERM").map_or(true, |t| t.is_empty() || t == "dumb" || t == "cons25");
        let show_prompt = !color || dumb;
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        let mut gather = gather::Gather::default();
        'read: loop {
            if show_prompt {
                let prompt = if gather.pending() {
                    shell.continuation()
                } else {
                    shell.prompt()
                };
                print!("{prompt}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            let (units, end) = match lines.next() {
                Some(Ok(line)) => (gather.push(&line), false),
                _ => (gather.finish().into_iter().collect(), true),
            };
            for unit in units {
                if let Flow::Exit = shell.run_unit(unit).await {
                    break 'read;
                }
            }
            if end {
                break;
            }
        }
    }
    println!("bye~");
    if shell.failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// The history file, `~/.rqlite_history`, as rqlite keeps it.
fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| std::path::PathBuf::from(h).join(".rqlite_history"))
}

/// Line editing with history and tab completion; Ctrl-C drops the line, Ctrl-D leaves.
async fn interactive(shell: &mut Shell) {
    let Ok(mut editor) = rustyline::Editor::<complete::Completion, rustyline::history::DefaultHistory>::new() else {
        return;
    };
    let names = complete::Names::default();
    editor.set_helper(Some(complete::Completion {
        names: names.clone(),
        commands: shell::command_names(),
    }));
    names.set(shell.schema_names().await);
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let mut gather = gather::Gather::default();
    'read: loop {
        let prompt = if gather.pending() {
            shell.continuation()
        } else {
            shell.prompt()
        };
        match editor.readline(&prompt) {
            Ok(line) => {
                for unit in gather.push(&line) {
                    let (gather::Unit::Command(text) | gather::Unit::Sql(text)) = &unit;
                    let _ = editor.add_history_entry(text.lines().map(str::trim).collect::<Vec<_>>().join(" "));
                    let sql = matches!(unit, gather::Unit::Sql(_));
                    if let Flow::Exit = shell.run_unit(unit).await {
                        break 'read;
                    }
                    if sql {
                        names.set(shell.schema_names().await);
                    }
                }
            }
            // Ctrl-C drops the line and any statement it was continuing; Ctrl-D leaves.
            Err(rustyline::error::ReadlineError::Interrupted) => gather.clear(),
            Err(_) => break,
        }
    }
    // rqlite deletes the file when `RQLITE_HISTFILESIZE` is 0 or less.
    let keep = std::env::var("RQLITE_HISTFILESIZE")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .is_none_or(|n| n > 0);
    if let Some(h) = &history {
        if keep {
            let _ = editor.save_history(h);
        } else {
            let _ = std::fs::remove_file(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rqlite_host_is_read_as_rqlite_reads_it() {
        assert_eq!(
            parse_host_env("https://db.example.com:4011"),
            Ok((Some("https".into()), "db.example.com".into(), Some(4011)))
        );
        assert_eq!(parse_host_env("localhost"), Ok((None, "localhost".into(), None)));
        assert!(
            parse_host_env("ftp://x")
                .unwrap_err()
                .contains("unsupported protocol ftp")
        );
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(join_host_port("::1", 4001), "[::1]:4001");
        assert_eq!(join_host_port("127.0.0.1", 4001), "127.0.0.1:4001");
    }
}
