//! Hosts for fault tests: each node in a network namespace of its own, all joined by a bridge
//! in one more namespace where the test's clients live. Partitions are iptables rules inside
//! the nodes' namespaces (clients keep reaching every node, as in Jepsen); pauses are SIGSTOP;
//! crashes are SIGKILL. Everything lives in namespaces this test creates and removes.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{BIN, DataDir};

/// Ports inside each node's namespace; namespaces keep them from colliding.
const HTTP_PORT: u16 = 4001;
const RAFT_PORT: u16 = 4002;

/// Namespace names start with this and the test process's pid.
const PREFIX: &str = "rqf";

pub struct LabNode {
    pub id: String,
    ns: String,
    pub ip: String,
    dir: DataDir,
    child: Option<Child>,
    paused: bool,
    /// A read replica (`-raft-non-voter`).
    pub replica: bool,
}

impl LabNode {
    pub fn http(&self) -> String {
        format!("{}:{HTTP_PORT}", self.ip)
    }

    pub fn raft(&self) -> String {
        format!("{}:{RAFT_PORT}", self.ip)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn signal(&self, sig: Signal) {
        if let Some(c) = &self.child {
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
        }
    }
}

pub struct Lab {
    switch: String,
    pub nodes: Vec<LabNode>,
}

/// Runs a command that must succeed.
fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| {
        panic!("cannot run {args:?}: {e}");
    });
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Removes namespaces left by earlier runs whose process is gone (with any process in them).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(p) = Command::new("ip").args(["netns", "pids", name]).output() {
            for pid in String::from_utf8_lossy(&p.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", name]).status();
    }
}

impl Lab {
    /// Builds `n` node hosts on 10.77.0.0/24 (nodes from .11) and the clients' switch (.1).
    pub fn new(n: usize) -> Lab {
        assert!(
            nix::unistd::geteuid().is_root(),
            "fault tests build network namespaces and need root (and iproute2 and iptables)"
        );
        remove_stale();
        // Labs of one test process differ by a number, so they may run at once.
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let lab_no = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = format!("{PREFIX}{}l{lab_no}", std::process::id());
        let switch = format!("{base}sw");
        run(&["ip", "netns", "add", &switch]);
        let mut lab = Lab {
            switch: switch.clone(),
            nodes: Vec::new(),
        };
        run(&["ip", "-n", &switch, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &switch, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &switch, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        run(&["ip", "-n", &switch, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = format!("{base}n{i}");
            run(&["ip", "netns", "add", &ns]);
            let ip = format!("10.77.0.{}", 11 + i);
            lab.nodes.push(LabNode {
                id: format!("n{i}"),
                ns: ns.clone(),
                ip: ip.clone(),
                dir: DataDir::new(),
                child: None,
                paused: false,
                replica: false,
            });
            let port = format!("p{i}");
            run(&[
                "ip", "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            run(&["ip", "-n", &switch, "link", "set", &port, "master", "br0"]);
            run(&["ip", "-n", &switch, "link", "set", &port, "up"]);
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    /// Moves the calling thread into the clients' namespace: sockets it opens from now on reach
    /// the nodes (and nothing else).
    pub fn enter_switch(&self) {
        let f = File::open(format!("/var/run/netns/{}", self.switch)).expect("switch namespace");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the switch namespace");
    }

    /// Starts node `i`. `join` lists the other nodes; without it the node forms a cluster alone.
    pub fn start(&mut self, i: usize, join: bool) {
        let others: Vec<String> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(|j| self.nodes[j].raft())
            .collect();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} already running", node.id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(node.dir.path.with_extension("log"))
            .expect("node log");
        let (http, raft) = (node.http(), node.raft());
        let mut args: Vec<String> = [
            "netns",
            "exec",
            &node.ns,
            BIN,
            "-node-id",
            &node.id,
            "-http-addr",
            &http,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["-raft-addr".to_string(), raft]);
        if node.replica {
            args.push("-raft-non-voter".to_string());
        }
        if join {
            args.extend(["-join".to_string(), others.join(",")]);
        }
        args.push(node.dir.path.display().to_string());
        let child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rqlited");
        node.child = Some(child);
        node.paused = false;
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.nodes[i].paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        self.nodes[i].signal(Signal::SIGSTOP);
        self.nodes[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.nodes[i].signal(Signal::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// Cuts node-to-node traffic between the groups, both ways; clients still reach everyone.
    pub fn partition(&self, groups: &[Vec<usize>]) {
        for (ga, a) in groups.iter().enumerate() {
            for (gb, b) in groups.iter().enumerate() {
                if ga == gb {
                    continue;
                }
                for &x in a {
                    let ns = &self.nodes[x].ns;
                    for &y in b {
                        let ip = &self.nodes[y].ip;
                        run(&[
                            "ip", "netns", "exec", ns, "iptables", "-A", "INPUT", "-s", ip, "-j", "DROP",
                        ]);
                        run(&[
                            "ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-d", ip, "-j", "DROP",
                        ]);
                    }
                }
            }
        }
    }

    /// Removes every partition, resumes paused nodes and restarts dead ones.
    pub fn heal(&mut self) {
        for i in 0..self.nodes.len() {
            run(&["ip", "netns", "exec", &self.nodes[i].ns, "iptables", "-F"]);
            if self.nodes[i].paused {
                self.resume(i);
            }
            if !self.nodes[i].is_running() {
                self.start(i, true);
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for n in &self.nodes {
            let _ = Command::new("ip").args(["netns", "del", &n.ns]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.switch]).status();
    }
}

/// Where a node's log is, for the failure message.
pub fn log_of(lab: &Lab, i: usize) -> PathBuf {
    lab.nodes[i].dir.path.with_extension("log")
}
