//! A local network of real `bulwark` processes on loopback (what the demo and the node
//! benchmark run): build, testnet homes with config overrides, start (each node logs to
//! `nodeN/bulwark.log` in the network's directory), clean stop.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the `bulwark` binary (release: what operators run and what figures are taken of).
pub fn build_bulwark() -> Result<PathBuf> {
    eprintln!("building the bulwark binary (release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "bulwark-node",
            "--bin",
            "bulwark",
        ])
        .current_dir(workspace())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(workspace().join("target/release/bulwark"))
}

/// A free loopback port range: asks the OS for a port and uses the block after it.
pub fn base_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let p = l.local_addr()?.port();
    Ok(if p > 60_000 {
        30_000 + p % 1000
    } else {
        p + 10
    })
}

struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running network.
pub struct Network {
    pub dir: PathBuf,
    pub base: u16,
    nodes: Vec<Process>,
}

impl Network {
    /// Makes a testnet of `validators` in a fresh temp dir, applies `(from, to)` replacements
    /// to every config.toml, and starts every node.
    pub fn start(
        bin: &Path,
        validators: usize,
        tag: &str,
        config: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("bulwark-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let base = base_port()?;
        let out = Command::new(bin)
            .args([
                "testnet",
                "--validators",
                &validators.to_string(),
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
        for i in 0..validators {
            let cfg = dir.join(format!("node{i}/config/config.toml"));
            let mut text = std::fs::read_to_string(&cfg)?;
            for (from, to) in config {
                if !text.contains(from) {
                    bail!("{} has no {from:?}", cfg.display());
                }
                text = text.replace(from, to);
            }
            std::fs::write(&cfg, text)?;
        }
        let mut nodes = Vec::new();
        for i in 0..validators {
            let home = dir.join(format!("node{i}"));
            let log = std::fs::File::create(home.join("bulwark.log"))?;
            let child = Command::new(bin)
                .args(["start", "--home", &home.display().to_string()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            nodes.push(Process { child });
        }
        Ok(Network { dir, base, nodes })
    }

    /// The JSON-RPC address of node `i`.
    pub fn rpc_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", usize::from(self.base) + 10 * i + 1)
    }

    /// How many nodes are still running.
    pub fn live(&mut self) -> usize {
        self.nodes
            .iter_mut()
            .map(|n| n.child.try_wait())
            .filter(|status| matches!(status, Ok(None)))
            .count()
    }

    /// SIGTERM to every node; returns how many exited successfully within 10 s.
    pub fn stop(&mut self) -> usize {
        for n in &self.nodes {
            let _ = Command::new("kill")
                .args(["-TERM", &n.child.id().to_string()])
                .status();
        }
        let mut clean = 0;
        for n in self.nodes.iter_mut() {
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
        clean
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
