//! The one harness for starting, watching and stopping real `bulwark` processes, shared by the
//! end-to-end tests in this directory and by `cargo xtask` (demo, bench, qemu); validator VMs
//! and the SEV-SNP launch live in `bulwark-vm-harness`, the load generator in `bulwark-load`,
//! both on top of this. Everything returns
//! `anyhow::Result` with the log tail of what failed; tests unwrap.
//!
//! - [`process`]: testnet homes, `bulwark start` processes with their logs and heights, and a
//!   whole local network.
//! - [`rpc`]: a std-only JSON-RPC client (no async runtime).
//! - [`ports`]: blocks of free loopback ports.
//! - [`flood`]: forged-handshake floods at a validator's p2p port, and its commit rate and
//!   RPC `health` latency meanwhile (the edge test, bench).
//! - [`chaos`]: four validators in network namespaces under kills, restarts, partitions, loss
//!   and delay, and the invariants after (`cargo xtask chaos`).

pub mod chaos;
pub mod flood;
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

/// The cargo that runs us (or `cargo`), with the environment of a shell that typed `cargo`.
///
/// Cargo gives a program it runs (`cargo run`, a test binary, a build script) its package's
/// variables: `CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, `OUT_DIR`, ... ring's build script asks
/// to be re-run when those change, so a nested cargo inheriting `xtask`'s or a test package's
/// values found ring dirty, rebuilt it and everything above it (rustls, the network crates,
/// the node), and the next cargo with other values rebuilt them back: about a minute each
/// time. Without them every cargo of `cargo xtask test` sees the same environment.
pub fn cargo() -> std::process::Command {
    let mut cargo =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_set_by_cargo_for_a_package) {
            cargo.env_remove(name);
        }
    }
    cargo
}

/// Whether cargo sets the variable `name` for one package's program (not for cargo itself:
/// `CARGO`, `CARGO_HOME`, `CARGO_TARGET_DIR` and cargo's configuration stay).
fn is_set_by_cargo_for_a_package(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || name.starts_with("CARGO_MANIFEST_")
        || matches!(
            name,
            "OUT_DIR"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
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
