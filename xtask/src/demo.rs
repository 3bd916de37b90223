//! `cargo xtask demo`: a 4-validator network of real `bulwark` processes on loopback (process
//! mode; VMs come with the image issue), live progress on one line, a clean stop, a summary.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const VALIDATORS: usize = 4;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn build() -> Result<PathBuf> {
    eprintln!("demo: building the bulwark binary");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "-p", "bulwark-node", "--bin", "bulwark"])
        .current_dir(workspace())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(workspace().join("target/debug/bulwark"))
}

/// A free loopback port range: asks the OS for a port and uses the block after it.
fn base_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let p = l.local_addr()?.port();
    Ok(if p > 60_000 {
        30_000 + p % 1000
    } else {
        p + 10
    })
}

struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn run(duration: u64, json: bool) -> Result<()> {
    let bin = build()?;
    let dir = std::env::temp_dir().join(format!("bulwark-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = base_port()?;
    let out = Command::new(&bin)
        .args([
            "testnet",
            "--validators",
            &VALIDATORS.to_string(),
            "--output",
            &dir.display().to_string(),
            "--base-port",
            &base.to_string(),
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "bulwark testnet failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for i in 0..VALIDATORS {
        let cfg = dir.join(format!("node{i}/config/config.toml"));
        let text = std::fs::read_to_string(&cfg)?
            .replace("timeout_commit_ms = 1000", "timeout_commit_ms = 200");
        std::fs::write(&cfg, text)?;
    }
    eprintln!("demo: process mode (the measured VM image is a later issue): {VALIDATORS} validators on 127.0.0.1:{base}.. in {}", dir.display());
    eprintln!("demo: plain TCP between validators (attested TLS is a later issue); no client transactions yet (JSON-RPC is a later step), so blocks are empty");
    let (tx, rx) = mpsc::channel::<(usize, u64, Instant)>();
    let mut nodes = Vec::new();
    for i in 0..VALIDATORS {
        let mut child = Command::new(&bin)
            .args([
                "start",
                "--home",
                &dir.join(format!("node{i}")).display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(h) = line
                    .split("committed height=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|h| h.parse().ok())
                {
                    let _ = tx.send((i, h, Instant::now()));
                }
            }
        });
        nodes.push(Node { child });
    }
    let started = Instant::now();
    let mut heights = [0u64; VALIDATORS];
    let mut commit_times: Vec<Instant> = Vec::new();
    while started.elapsed() < Duration::from_secs(duration) {
        while let Ok((i, h, at)) = rx.try_recv() {
            if h > heights.iter().copied().max().unwrap_or(0) {
                commit_times.push(at);
            }
            heights[i] = heights[i].max(h);
        }
        let top = heights.iter().copied().max().unwrap_or(0);
        let live = nodes
            .iter_mut()
            .map(|n| matches!(n.child.try_wait(), Ok(None)))
            .filter(|up| *up)
            .count();
        let rate = top as f64 / started.elapsed().as_secs_f64().max(0.001);
        eprint!("\rdemo: height {top:>5} | validators up {live}/{VALIDATORS} | heights per node {heights:?} | {rate:5.1} blocks/s | {:>4.1}s ", started.elapsed().as_secs_f64());
        let _ = std::io::stderr().flush();
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!();
    for n in &nodes {
        let _ = Command::new("kill")
            .args(["-TERM", &n.child.id().to_string()])
            .status();
    }
    let mut clean = 0;
    for n in nodes.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = n.child.try_wait() {
                if status.success() {
                    clean += 1;
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    while let Ok((i, h, _)) = rx.try_recv() {
        heights[i] = heights[i].max(h);
    }
    let height = heights.iter().copied().min().unwrap_or(0);
    let gaps: Vec<f64> = commit_times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    let median_gap = {
        let mut g = gaps.clone();
        g.sort_by(|a, b| a.total_cmp(b));
        g.get(g.len() / 2).copied().unwrap_or(0.0)
    };
    eprintln!("demo: every validator reached height {height}; {clean}/{VALIDATORS} stopped cleanly on SIGTERM; median block interval {median_gap:.0} ms");
    if json {
        println!(
            "{}",
            serde_json::json!({
                "validators": VALIDATORS,
                "height": height,
                "committed_txs": 0,
                "tx_per_s": 0.0,
                "block_interval_ms_p50": (median_gap * 10.0).round() / 10.0,
                "clean_stops": clean,
                "mode": "process",
            })
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    if height == 0 {
        bail!("the network made no progress");
    }
    if clean < VALIDATORS {
        bail!("{} validators did not stop cleanly", VALIDATORS - clean);
    }
    Ok(())
}
