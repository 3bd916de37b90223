//! `cargo xtask demo`: a 4-validator network of real `bulwark` processes on loopback (process
//! mode; VMs come with the image issue), kvstore transactions driven through JSON-RPC, live
//! progress on one line, a clean stop and a summary.

use crate::load::{self, LoadConfig};
use crate::network::{build_bulwark, Network};
use anyhow::{bail, Result};
use std::io::Write;
use std::time::Duration;

const VALIDATORS: usize = 4;
/// Offered load: modest, so the demo shows latency rather than saturation.
const DEMO_TX_PER_S: f64 = 400.0;
const TX_BYTES: usize = 256;

pub fn run(duration: u64, json: bool) -> Result<()> {
    let bin = build_bulwark()?;
    let mut net = Network::start(
        &bin,
        VALIDATORS,
        "demo",
        &[("timeout_commit_ms = 1000", "timeout_commit_ms = 200")],
    )?;
    eprintln!(
        "demo: process mode (the measured VM image is a later issue): {VALIDATORS} validators, RPC on {}..",
        net.rpc_addr(0)
    );
    eprintln!("demo: validators connect only over mutually attested TLS 1.3; this testnet's genesis trusts the SIMULATED PSP (process mode has no SEV-SNP hardware)");
    eprintln!("demo: offering {DEMO_TX_PER_S} kvstore txs/s of {TX_BYTES} bytes through broadcast_tx_async on every node");
    let addrs: Vec<String> = (0..VALIDATORS).map(|i| net.rpc_addr(i)).collect();
    let cfg = LoadConfig {
        rate: DEMO_TX_PER_S,
        tx_bytes: TX_BYTES,
        warmup: Duration::from_secs(2).min(Duration::from_secs(duration) / 4),
        duration: Duration::from_secs(duration),
        run: 1,
    };
    let mut live = 0;
    let report = load::run(&addrs, &cfg, |p| {
        live = p.elapsed.as_secs();
        eprint!(
            "\rdemo: height {:>5} | committed {:>7}/{:>7} offered txs ({} refused) | {:>6.0} tx/s | commit latency p50 {:>6.1} ms | {:>5.1}s ",
            p.height,
            p.committed,
            p.offered,
            p.refused,
            p.recent_tx_per_s,
            p.latency_p50_ms,
            p.elapsed.as_secs_f64()
        );
        let _ = std::io::stderr().flush();
    });
    eprintln!();
    let up = net.live();
    let clean = net.stop();
    let report = report?;
    let (p50, p99) = (report.percentile(0.5), report.percentile(0.99));
    eprintln!(
        "demo: height {} | {} txs committed ({} offered, {} refused) | {:.0} tx/s | latency p50 {p50:.1} ms p99 {p99:.1} ms | {up}/{VALIDATORS} validators up at the end, {clean} stopped cleanly on SIGTERM",
        report.height, report.committed, report.offered, report.refused, report.tx_per_s
    );
    if json {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        println!(
            "{}",
            serde_json::json!({
                "validators": VALIDATORS,
                "height": report.height,
                "committed_txs": report.committed,
                "tx_per_s": round(report.tx_per_s),
                "latency_ms_p50": round(p50),
                "latency_ms_p99": round(p99),
                "mode": "process",
                "transport": "attested-tls",
                "trust": "simulated",
                "clean_stops": clean,
            })
        );
    }
    if report.height == 0 || report.committed == 0 {
        bail!("the network made no progress");
    }
    if clean < VALIDATORS {
        bail!("{} validators did not stop cleanly", VALIDATORS - clean);
    }
    Ok(())
}
