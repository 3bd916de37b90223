//! The one harness for starting, watching and stopping real `bulwark` processes, shared by the
//! end-to-end tests in this directory and by `cargo xtask` (demo, bench, qemu); validator VMs
//! and the SEV-SNP launch live in `bulwark-vm-harness`, on top of this. Everything returns
//! `anyhow::Result` with the log tail of what failed; tests unwrap.
//!
//! - [`process`]: testnet homes, `bulwark start` processes with their logs and heights, and a
//!   whole local network.
//! - [`rpc`]: a std-only JSON-RPC client (no async runtime).
//! - [`ports`]: blocks of free loopback ports.
//! - [`load`]: open-loop kvstore load through JSON-RPC and commit latency (demo, bench).
//! - [`flood`]: forged-handshake floods at a validator's p2p port, and its commit rate and
//!   RPC `health` latency meanwhile (the edge test, bench).
//! - [`chaos`]: four validators in network namespaces under kills, restarts, partitions, loss
//!   and delay, and the invariants after (`cargo xtask chaos`).

pub mod chaos;
pub mod flood;
pub mod load;
pub mod ports;
pub mod process;
pub mod rpc;

use std::path::{Path, PathBuf};

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo that runs us (or `cargo`).
pub fn cargo() -> std::process::Command {
    std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs `cargo test` with its output passed through, and returns the passed/failed counts
/// summed over its "test result:" lines.
pub fn cargo_test(args: &[&str], extra: &[String]) -> anyhow::Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut cmd = cargo();
    cmd.arg("test")
        .args(args)
        .args(extra)
        .stdout(std::process::Stdio::piped());
    eprintln!("xtask: cargo test {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting cargo test: {e}"))?;
    let (mut passed, mut failed) = (0, 0);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(';') {
                    let words: Vec<&str> = part.split_whitespace().collect();
                    match words.as_slice() {
                        [.., n, "passed"] => passed += n.parse::<u64>().unwrap_or(0),
                        [n, "failed"] => failed += n.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        anyhow::bail!("cargo test {} failed ({status})", args.join(" "));
    }
    Ok((passed, failed))
}
