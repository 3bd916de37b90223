//! `cargo xtask demo`: a 4-validator network, kvstore transactions driven through JSON-RPC,
//! live progress on one line, a clean stop and a summary. The validators are VMs booted from
//! the measured image when QEMU can run here, real `bulwark` processes on loopback otherwise;
//! the demo says which.

use crate::image::{published_digest, recompute_command, CpuModel, CPU_MODELS};
use anyhow::{bail, Result};
use harness::process::{build_bulwark, Network};
use load::LoadConfig;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

const VALIDATORS: usize = 4;
/// Offered load: modest, so the demo shows latency rather than saturation.
const DEMO_TX_PER_S: f64 = 400.0;
/// Under software emulation every validator runs 10–20× slower.
const DEMO_VM_TX_PER_S: f64 = 40.0;

/// Where the demo's validators run.
enum Validators {
    Vms(vm_harness::vm::VmNetwork),
    Processes(Network),
}

impl Validators {
    fn rpc_addrs(&self) -> Vec<String> {
        match self {
            Validators::Vms(v) => v.rpc_addrs(),
            Validators::Processes(p) => (0..VALIDATORS).map(|i| p.rpc_addr(i)).collect(),
        }
    }
    fn live(&mut self) -> usize {
        match self {
            Validators::Vms(v) => v.live(),
            Validators::Processes(p) => p.live(),
        }
    }
    /// Stops every validator; how many stopped cleanly.
    fn stop(&mut self) -> usize {
        match self {
            Validators::Vms(v) => v.stop(),
            Validators::Processes(p) => p.stop(),
        }
    }
}
const TX_BYTES: usize = 256;
/// vCPUs of each demo VM, and so of the launch the printed measurement is for.
const DEMO_VCPUS: u32 = 1;

/// The expected launch digest per CPU model for the demo's vCPU count, from the image's
/// `measurement.json`, each checked against a fresh computation (`cargo xtask measure`).
fn measurements(image: &Path) -> Result<Vec<(CpuModel, String)>> {
    CPU_MODELS
        .iter()
        .map(|&cpu| {
            let published = published_digest(image, DEMO_VCPUS, cpu)?;
            let computed = crate::image::launch_digest(image, DEMO_VCPUS, cpu, 0x1)?;
            if published != computed {
                bail!("measurement.json says {published} for {cpu:?}, a fresh computation gives {computed}");
            }
            Ok((cpu, published))
        })
        .collect()
}

fn print_measurements(image: &Path, digests: &[(CpuModel, String)]) {
    eprintln!(
        "demo: expected SEV-SNP launch measurement of {} ({DEMO_VCPUS} vCPU, guest features 0x1):",
        image.display()
    );
    for (cpu, digest) in digests {
        eprintln!("demo:   {:<10} {digest}", cpu.qemu_model());
    }
    if let Some((cpu, _)) = digests.first() {
        eprintln!(
            "demo: recompute it independently: {}",
            recompute_command(image, DEMO_VCPUS, *cpu)
        );
    }
}

/// Re-verifies the ceremony's genesis with the image's own binary, as anyone can, and says
/// what each validator's evidence shows.
fn verify_genesis(vms: &vm_harness::vm::VmNetwork) -> Result<()> {
    let bin = vm_harness::vm::image_binary(vms.image());
    let genesis = vms.genesis.display().to_string();
    eprintln!(
        "demo: the ceremony: {VALIDATORS} VMs made and sealed their keys inside and published enrollments ({:.1} s); the host assembled {genesis}",
        vms.enrolment.as_secs_f64()
    );
    let out = vm_harness::vm::run_binary(&bin, &["verify-genesis", &genesis])?;
    for line in String::from_utf8_lossy(&out).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        eprintln!(
            "demo: verify-genesis: {} {} verified={} measurement {}",
            v["validator"].as_str().unwrap_or("?"),
            v["address"].as_str().unwrap_or("?"),
            v["verified"],
            v["measurement"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

pub fn run(duration: u64, json: bool) -> Result<()> {
    let vms = crate::qemu::start_vms(VALIDATORS, 200);
    let image = crate::image::image_dir(crate::image::Flavour::Simulated);
    let digests = match &vms {
        Ok(_) => {
            let digests = measurements(&image)?;
            print_measurements(&image, &digests);
            Some(digests)
        }
        Err(_) => None,
    };
    let (mut net, mode, rate) = match vms {
        Ok(vms) => {
            eprintln!("demo: VM mode: {VALIDATORS} validator VMs booted from the development image (target/image-simulated: the simulated PSP compiled in; the production image of `cargo xtask image` has none) under QEMU TCG");
            verify_genesis(&vms)?;
            (Validators::Vms(vms), "vm", DEMO_VM_TX_PER_S)
        }
        Err(e) => {
            eprintln!("demo: VMs cannot run here ({e:#}); process mode: {VALIDATORS} bulwark processes on loopback");
            let bin = build_bulwark(true)?;
            let net = Network::start(
                &bin,
                VALIDATORS,
                "demo",
                &[("timeout_commit_ms = 1000", "timeout_commit_ms = 200")],
            )?;
            (Validators::Processes(net), "process", DEMO_TX_PER_S)
        }
    };
    eprintln!("demo: validators connect only over mutually attested TLS 1.3; this testnet's genesis trusts the SIMULATED PSP (no SEV-SNP hardware here)");
    eprintln!("demo: offering {rate} kvstore txs/s of {TX_BYTES} bytes through broadcast_tx_async on every node");
    let addrs = net.rpc_addrs();
    let cfg = LoadConfig {
        rate,
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
        "demo: height {} | {} txs committed ({} offered, {} refused) | {:.0} tx/s | latency p50 {p50:.1} ms p99 {p99:.1} ms | {up}/{VALIDATORS} validators up at the end, {clean} stopped cleanly",
        report.height, report.committed, report.offered, report.refused, report.tx_per_s
    );
    if let Some(digests) = &digests {
        print_measurements(&image, digests);
    }
    if json {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        let mut measurement = serde_json::Map::new();
        if let Some(digests) = &digests {
            measurement.insert("vcpus".into(), DEMO_VCPUS.into());
            measurement.insert("guest_features".into(), "0x1".into());
            for (cpu, digest) in digests {
                measurement.insert(cpu.name().into(), digest.clone().into());
            }
        }
        println!(
            "{}",
            serde_json::json!({
                "validators": VALIDATORS,
                "height": report.height,
                "committed_txs": report.committed,
                "tx_per_s": round(report.tx_per_s),
                "latency_ms_p50": round(p50),
                "latency_ms_p99": round(p99),
                "mode": mode,
                "transport": "attested-tls",
                "trust": "simulated",
                "clean_stops": clean,
                "measurement": if digests.is_some() { serde_json::Value::Object(measurement) } else { serde_json::Value::Null },
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
