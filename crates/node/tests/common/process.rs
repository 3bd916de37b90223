//! Real `bulwark` processes for the node's integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A first port for this test process, unlikely to collide with other runs on this machine;
/// `slot` separates networks within one test binary.
pub fn base_port(slot: u16) -> u16 {
    20_000 + (std::process::id() % 1000) as u16 * 40 + slot * 20
}

/// The JSON-RPC address of node `i` of a testnet made with `base`.
pub fn rpc_url(base: u16, i: u16) -> String {
    format!("http://127.0.0.1:{}", base + 10 * i + 1)
}

pub struct Node {
    pub child: Child,
    heights: mpsc::Receiver<u64>,
    pub last: u64,
    /// The last lines the node logged, for the failure message.
    tail: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    /// Every line about admitting or refusing peers.
    pub peer_log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Node {
    /// Waits until a peer-log line contains `needle`; returns it.
    pub fn wait_for_peer_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self
                .peer_log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no peer log line with {needle:?}; have {:#?}",
                self.peer_log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    // A failing test must not leave validators running (they hold ports and CPU).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bulwark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
}

/// A 4-validator testnet with fast timeouts; `base` is its first port (see [`rpc_url`]).
pub fn testnet(dir: &Path, base: u16) -> Vec<PathBuf> {
    let out = bulwark()
        .args([
            "testnet",
            "--validators",
            "4",
            "--output",
            dir.to_str().unwrap(),
            "--base-port",
            &base.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (0..4)
        .map(|i| {
            let home = dir.join(format!("node{i}"));
            let cfg = home.join("config/config.toml");
            let text = std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("timeout_propose_ms = 3000", "timeout_propose_ms = 600")
                .replace("timeout_prevote_ms = 1000", "timeout_prevote_ms = 200")
                .replace("timeout_precommit_ms = 1000", "timeout_precommit_ms = 200")
                .replace("timeout_commit_ms = 1000", "timeout_commit_ms = 100");
            std::fs::write(&cfg, text).unwrap();
            home
        })
        .collect()
}

pub fn start(home: &Path) -> Node {
    let mut child = bulwark()
        .args(["start", "--home", home.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let keep = tail.clone();
    let peer_log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep_peers = peer_log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("refused") || line.contains("peer attested") {
                if let Ok(mut p) = keep_peers.lock() {
                    p.push(line.clone());
                }
            }
            if let Ok(mut t) = keep.lock() {
                t.push_back(line.clone());
                if t.len() > 15 {
                    t.pop_front();
                }
            }
            if let Some(rest) = line.split("committed height=").nth(1) {
                if let Ok(h) = rest.split_whitespace().next().unwrap_or("").parse::<u64>() {
                    let _ = tx.send(h);
                }
            }
        }
    });
    Node {
        child,
        heights: rx,
        last: 0,
        tail,
        peer_log,
    }
}

pub fn wait_for(nodes: &mut [&mut Node], height: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while nodes.iter().any(|n| n.last < height) {
        if Instant::now() >= deadline {
            let tails: Vec<String> = nodes
                .iter()
                .map(|n| {
                    n.tail
                        .lock()
                        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
                        .unwrap_or_default()
                })
                .collect();
            panic!(
                "not all nodes reached {height}: {:?}\n{}",
                nodes.iter().map(|n| n.last).collect::<Vec<_>>(),
                tails.join("\n-----\n")
            );
        }
        for n in nodes.iter_mut() {
            while let Ok(h) = n.heights.try_recv() {
                n.last = n.last.max(h);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn signal(node: &Node, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

pub fn stop_cleanly(node: &mut Node) {
    signal(node, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            assert!(status.success(), "exit {status}");
            return;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
