//! `bulwark start` as an operator runs it: four real processes over TCP on loopback commit
//! blocks, stop cleanly on SIGTERM, restart from their data, and a node killed with SIGKILL
//! catches up.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Node {
    child: Child,
    heights: mpsc::Receiver<u64>,
    last: u64,
    /// The last lines the node logged, for the failure message.
    tail: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl Drop for Node {
    // A failing test must not leave validators running (they hold ports and CPU).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bulwark() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
}

fn testnet(dir: &Path) -> Vec<PathBuf> {
    // Ports unlikely to collide with other test runs on this machine.
    let base = 20_000 + (std::process::id() % 2000) as u16 * 20;
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

fn start(home: &Path) -> Node {
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
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
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
    }
}

fn wait_for(nodes: &mut [&mut Node], height: u64, limit: Duration) {
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

fn signal(node: &Node, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn stop_cleanly(node: &mut Node) {
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

#[test]
fn four_processes_commit_stop_restart_and_recover_from_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let homes = testnet(dir.path());
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h)).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 10, Duration::from_secs(120));
    }
    for n in nodes.iter_mut() {
        stop_cleanly(n);
    }

    // Restart from disk: the chain continues from where it was, not from genesis.
    let reached = nodes.iter().map(|n| n.last).min().unwrap();
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h)).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, reached + 5, Duration::from_secs(120));
    }

    // SIGKILL one node; the other three (a quorum) go on; the killed one comes back and catches up.
    signal(&nodes[2], "-KILL");
    let _ = nodes[2].child.wait();
    let ahead = {
        let (left, right) = nodes.split_at_mut(2);
        let mut three: Vec<&mut Node> = left.iter_mut().chain(right[1..].iter_mut()).collect();
        let target = three.iter().map(|n| n.last).max().unwrap() + 5;
        wait_for(&mut three, target, Duration::from_secs(120));
        target
    };
    nodes[2] = start(&homes[2]);
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, ahead + 3, Duration::from_secs(120));
    }
    for n in nodes.iter_mut() {
        stop_cleanly(n);
    }
}
