//! `cargo xtask qemu --validators N`: validators as VMs booted from `target/image`, through
//! the shared harness (`tests/harness/vm.rs`). The mode is printed: TCG (software emulation)
//! here, because KVM on this kind of machine does not run real guests.
//!
//! `cargo xtask qemu --snp --genesis FILE` prints the SEV-SNP launch of one validator for a real
//! host, and beside it the launch digest that host's reports will carry: the `-cpu` model,
//! `-smp`, guest policy and host data of the launch and the digest's row come from the same
//! values. `--snp --check` says what a would-be SNP host is missing.

use crate::image::{image_dir, published_digest, recompute_command, CpuModel, Flavour};
use anyhow::{bail, Context, Result};
use bulwark_attest::report::policy_bits;
use bulwark_attest::simulated::SimulatedPsp;
use bulwark_attest::{verify, Binding, Measurements, Policy, Trust};
use harness::rpc::height;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vm_harness::snp::{assess, host_cbitpos, Cbitpos, HostFacts, SnpLaunch};
use vm_harness::vm::{VmNetwork, GUEST_P2P_PORT, GUEST_RPC_PORT, VM_PACKAGES};

#[derive(clap::Args, Clone, Debug)]
pub struct QemuArgs {
    /// How many validator VMs.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Print the SEV-SNP launch of one validator for a real host, with its expected launch
    /// digest, and exit (needs --genesis).
    #[arg(long)]
    pub snp: bool,
    /// With --snp: check what this host needs to launch SEV-SNP guests and say what is missing.
    #[arg(long, requires = "snp")]
    pub check: bool,
    /// With --snp: the QEMU `-cpu` model (EPYC-Milan, EPYC-Genoa, EPYC-Turin: QEMU ≥ 10.1);
    /// it is in every VMSA, so it picks the digest's row. Never `-cpu host`.
    #[arg(long, value_enum, default_value = "milan")]
    pub cpu_type: CpuModel,
    /// With --snp: vCPUs (`-smp`), 1 to 8 (the pinned kernel's CONFIG_NR_CPUS).
    #[arg(long, default_value_t = 4)]
    pub vcpus: u32,
    /// With --snp: the guest policy (hex). Default: SMT allowed, no debug, no migration agent,
    /// single socket if genesis requires it. Refused if genesis would refuse it.
    #[arg(long, value_parser = crate::parse_hex)]
    pub policy: Option<u64>,
    /// With --snp: the network's genesis.json. Its SHA-256 becomes the launch's HOST_DATA,
    /// its attestation policy decides the guest policy, and it must admit the digest.
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// With --snp: print the enrolling launch instead (the validator's first boot, on an empty
    /// disk: no network yet, no HOST_DATA; the strict guest policy).
    #[arg(long, requires = "snp", conflicts_with = "genesis")]
    pub enroll: bool,
    /// Leave the VMs' data disks (as the host sees them: ciphertext), their disks right after
    /// enrolment, enrollments and serial logs, and the genesis, in DIR after the run.
    #[arg(long, value_name = "DIR", conflicts_with = "snp")]
    pub keep: Option<PathBuf>,
    /// With --snp: the host port forwarded (on every interface) to the validator's P2P port.
    #[arg(long, default_value_t = GUEST_P2P_PORT)]
    pub p2p_port: u16,
    /// With --snp: the host port forwarded (on 127.0.0.1 only) to the validator's RPC.
    #[arg(long, default_value_t = GUEST_RPC_PORT)]
    pub rpc_port: u16,
}

/// The most vCPUs the pinned kernel runs (`CONFIG_NR_CPUS=8`) and `measurement.json` covers.
pub const MAX_VCPUS: u32 = 8;

/// The network a launch binds: genesis's bytes and its attestation policy.
pub struct Network {
    /// Where the genesis came from.
    pub path: PathBuf,
    /// SHA-256 of its bytes: the launch's HOST_DATA.
    pub host_data: [u8; 32],
    /// Its `attestation` section.
    pub policy: Policy,
}

impl Network {
    /// Reads and checks a genesis file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("reading genesis {}", path.display()))?;
        #[derive(serde::Deserialize)]
        struct Section {
            attestation: Option<Policy>,
        }
        let section: Section = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a genesis document", path.display()))?;
        let policy = section.attestation.with_context(|| {
            format!(
                "{}: no \"attestation\" section (a Bulwark network states which evidence it admits)",
                path.display()
            )
        })?;
        if policy.trust != Trust::Amd {
            bail!(
                "{}: its attestation trusts the simulated PSP, so an SEV-SNP launch would prove nothing to it (a validator would still run the simulated PSP); an SEV-SNP network's genesis has \"trust\": \"amd\"",
                path.display()
            );
        }
        Ok(Network {
            path: path.to_path_buf(),
            host_data: Sha256::digest(&bytes).into(),
            policy,
        })
    }
}

/// The guest policy for a network: the SNP ABI's reserved bit, SMT allowed (the host may run
/// SMT; genesis's `forbid_smt` checks the platform, not the policy), single socket if genesis
/// requires it; never debug or a migration agent.
pub fn default_policy(network: &Policy) -> u64 {
    let mut policy = policy_bits::RESERVED_ONE;
    if network.guest_policy.allow_smt {
        policy |= policy_bits::SMT;
    }
    if network.guest_policy.require_single_socket {
        policy |= policy_bits::SINGLE_SOCKET;
    }
    policy
}

/// Bits 26 and up of the guest policy are reserved and must be zero (SNP ABI).
const POLICY_RESERVED_ZERO: u64 = !((1 << 26) - 1);

/// Refuses a guest policy the PSP would refuse at launch, or that the network's verifier
/// would refuse in every report: the verifier's own checks run over a report with that policy.
pub fn check_policy(policy: u64, network: &Policy) -> Result<()> {
    if policy & policy_bits::RESERVED_ONE == 0 {
        bail!("guest policy {policy:#x}: bit 17 is reserved and must be one (the PSP refuses the launch)");
    }
    if policy & POLICY_RESERVED_ZERO != 0 {
        bail!("guest policy {policy:#x}: bits 26-63 are reserved and must be zero (the PSP refuses the launch)");
    }
    // Only the guest-policy rules of genesis: the rest of its policy is about the chip, the
    // TCB and the measurement, which a report made here cannot stand for.
    let mut rules = Policy::strict(Trust::Simulated, Measurements::Any);
    rules.guest_policy = network.guest_policy.clone();
    let mut psp = SimulatedPsp::new([0; 32], [0; 48]);
    psp.policy = policy;
    let evidence = psp.evidence([0; 64])?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Err(reason) = verify(&evidence, &rules, &Binding::Unchecked, now) {
        bail!("guest policy {policy:#x}: the network's verifiers would refuse every report of this guest ({reason})");
    }
    Ok(())
}

/// What `--snp` prints: the launch beside the digest of its row and how to recompute it.
fn render(launch: &SnpLaunch, cpu: CpuModel, genesis: &Path) -> Result<String> {
    let digest = published_digest(&launch.image, launch.vcpus, cpu)?;
    let recompute = recompute_command(&launch.image, launch.vcpus, cpu);
    launch.render(cpu.name(), &digest, &recompute, genesis)
}

/// `cargo xtask qemu --snp`: the launch of the image in `image` and its digest.
fn snp_launch(args: &QemuArgs, image: &Path) -> Result<String> {
    if !(1..=MAX_VCPUS).contains(&args.vcpus) {
        bail!(
            "--vcpus {}: 1 to {MAX_VCPUS} (the pinned kernel has CONFIG_NR_CPUS={MAX_VCPUS}; measurement.json publishes 1-{MAX_VCPUS})",
            args.vcpus
        );
    }
    if !image.join("measurement.json").exists() {
        bail!(
            "no measured image in {}: run `cargo xtask image` first",
            image.display()
        );
    }
    let cbitpos = host_cbitpos().map_or(Cbitpos::Variable, Cbitpos::Host);
    if args.enroll {
        let strict = Policy::strict(Trust::Amd, Measurements::Any);
        let policy = args.policy.unwrap_or_else(|| default_policy(&strict));
        check_policy(policy, &strict)?;
        let launch = SnpLaunch {
            image: image.to_path_buf(),
            cpu_model: args.cpu_type.qemu_model(),
            vcpus: args.vcpus,
            policy,
            host_data: None,
            cbitpos,
            p2p_port: args.p2p_port,
            rpc_port: args.rpc_port,
        };
        return render(&launch, args.cpu_type, Path::new("-"));
    }
    let Some(genesis) = &args.genesis else {
        bail!("--snp needs --genesis FILE: the network the launch binds (HOST_DATA = SHA-256 of its bytes, guest policy from its attestation section); or --enroll for the first, enrolling launch");
    };
    let network = Network::read(genesis)?;
    let policy = args
        .policy
        .unwrap_or_else(|| default_policy(&network.policy));
    check_policy(policy, &network.policy)?;
    let digest = published_digest(image, args.vcpus, args.cpu_type)?;
    if let Measurements::OneOf(allowed) = &network.policy.measurements {
        if !allowed.iter().any(|m| m.to_string() == digest) {
            bail!(
                "{}: its attestation admits none of this launch's digest {digest} ({}, {} vCPUs): the peers would refuse this validator",
                network.path.display(),
                args.cpu_type.qemu_model(),
                args.vcpus
            );
        }
    }
    let launch = SnpLaunch {
        image: image.to_path_buf(),
        cpu_model: args.cpu_type.qemu_model(),
        vcpus: args.vcpus,
        policy,
        host_data: Some(network.host_data),
        cbitpos,
        p2p_port: args.p2p_port,
        rpc_port: args.rpc_port,
    };
    render(&launch, args.cpu_type, genesis)
}

/// `cargo xtask qemu --snp --check`.
fn snp_check(cpu: CpuModel) -> Result<()> {
    let findings = assess(&HostFacts::gather(), cpu.qemu_model(), cpu.min_qemu());
    for f in &findings {
        println!(
            "{:<8} {:<20} {}",
            if f.ok { "ok" } else { "MISSING" },
            f.item,
            f.detail
        );
    }
    let missing: Vec<&str> = findings.iter().filter(|f| !f.ok).map(|f| f.item).collect();
    if !missing.is_empty() {
        bail!(
            "this host cannot launch SEV-SNP guests; missing: {}",
            missing.join(", ")
        );
    }
    eprintln!(
        "qemu: this host has what an SEV-SNP launch of {} needs",
        cpu.qemu_model()
    );
    Ok(())
}

/// Installs what VMs need, builds the image (cached parts are reused) and boots one VM per
/// validator under TCG.
pub fn start_vms(validators: usize, timeout_commit_ms: u64) -> Result<VmNetwork> {
    crate::apt::ensure_packages(&VM_PACKAGES)?;
    crate::image::build(Flavour::Simulated)?;
    eprintln!("qemu: mode TCG (software emulation: KVM on this machine does not run real guests) on q35 + UEFI with the SEV-SNP device options, the development image (simulated attestation), {validators} validators");
    eprintln!("qemu: the ceremony: {validators} VMs enrol on empty disks, the host assembles the genesis from their enrollments and sends it to the enrolled VMs, which run on as the validators' launch instances");
    let net = VmNetwork::start(
        &image_dir(Flavour::Simulated),
        validators,
        timeout_commit_ms,
    )?;
    eprintln!(
        "qemu: enrolment took {:.1} s; genesis {} (check it: {} verify-genesis {})",
        net.enrolment.as_secs_f64(),
        net.genesis.display(),
        vm_harness::vm::image_binary(net.image()).display(),
        net.genesis.display()
    );
    eprintln!(
        "qemu: serial logs in {}/node*/serial.log",
        net.dir().display()
    );
    Ok(net)
}

pub fn run(args: QemuArgs) -> Result<()> {
    if args.check {
        return snp_check(args.cpu_type);
    }
    if args.snp {
        println!("{}", snp_launch(&args, &image_dir(Flavour::Production))?);
        return Ok(());
    }
    let mut net = start_vms(args.validators, 500)?;
    let mut clients = net.clients();
    let mut first_commit: Option<f64> = None;
    let mut heights = vec![0u64; args.validators];
    let mut first_height_at: Option<(Instant, u64)> = None;
    while net.started.elapsed() < Duration::from_secs(args.duration) {
        for (i, c) in clients.iter_mut().enumerate() {
            if let Some(h) = height(c) {
                heights[i] = heights[i].max(h);
            }
        }
        let top = heights.iter().copied().max().unwrap_or(0);
        if top > 0 && first_commit.is_none() {
            first_commit = Some(net.started.elapsed().as_secs_f64());
            first_height_at = Some((Instant::now(), top));
        }
        let live = net.live();
        eprint!(
            "\rqemu: {:>5.1}s | VMs up {live}/{} | heights {heights:?} ",
            net.started.elapsed().as_secs_f64(),
            args.validators
        );
        let _ = std::io::stderr().flush();
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!();
    let height = heights.iter().copied().min().unwrap_or(0);
    let rate = first_height_at.map_or(0.0, |(at, h0)| {
        (heights
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .saturating_sub(h0)) as f64
            / at.elapsed().as_secs_f64().max(0.001)
    });
    let powered_off = net.stop();
    eprintln!(
        "qemu: every validator reached height {height}; first block {:.1} s after launch; {rate:.2} heights/s; {powered_off}/{} powered off cleanly",
        first_commit.unwrap_or(0.0),
        args.validators
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "validators": args.validators,
                "mode": "tcg",
                "height": height,
                "heights_per_s": (rate * 100.0).round() / 100.0,
                "first_commit_s": first_commit.map(|s| (s * 10.0).round() / 10.0),
                "clean_poweroffs": powered_off,
            })
        );
    }
    let outcome = if height == 0 {
        Err(anyhow::anyhow!("the VMs made no progress"))
    } else if powered_off < args.validators {
        Err(anyhow::anyhow!(
            "{} VMs did not power off cleanly",
            args.validators - powered_off
        ))
    } else {
        Ok(())
    };
    match (&args.keep, outcome) {
        (Some(dest), outcome) => {
            let kept = net.keep(dest)?;
            eprintln!(
                "qemu: kept {} files in {} (data disks as the host sees them, serial logs, genesis)",
                kept.len(),
                dest.display()
            );
            outcome.with_context(|| format!("serial logs in {}", dest.display()))
        }
        (None, Err(e)) => Err(e).with_context(|| format!("serial logs in {}", net.dir().display())),
        (None, Ok(())) => {
            net.clean_up();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use clap::Parser;
    use sev::measurement::vcpu_types::{cpu_sig, CpuType};
    use std::collections::BTreeMap;
    use std::process::Command;
    use vm_harness::snp::{version_of, CBITPOS_ONE_LINER};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        qemu: QemuArgs,
    }

    fn args(extra: &[&str]) -> QemuArgs {
        Cli::parse_from(std::iter::once("qemu").chain(extra.iter().copied())).qemu
    }

    /// A scratch directory, removed when the test lets go of it.
    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    /// A stand-in digest for a row of a synthetic measurement.json: distinct per model and
    /// vCPU count, so a launch that picks the wrong row is caught.
    fn row_digest(cpu: CpuModel, vcpus: u32) -> String {
        hex::encode(sha2::Sha384::digest(format!("{}-{vcpus}", cpu.name())))
    }

    /// An image directory with the measured command line and a synthetic measurement.json.
    fn synthetic_image() -> tempfile::TempDir {
        let scratch = temp_dir();
        let dir = scratch.path();
        let cmdline = std::fs::read_to_string(harness::workspace().join("kernel-cmdline")).unwrap();
        std::fs::write(dir.join("kernel-cmdline"), cmdline).unwrap();
        let mut rows = serde_json::Map::new();
        for cpu in crate::image::CPU_MODELS {
            let per: serde_json::Map<String, serde_json::Value> = (1..=MAX_VCPUS)
                .map(|n| (n.to_string(), row_digest(cpu, n).into()))
                .collect();
            rows.insert(cpu.name().into(), per.into());
        }
        let json = serde_json::json!({"guest_features": "0x1", "launch_digest": rows});
        std::fs::write(dir.join("measurement.json"), json.to_string()).unwrap();
        scratch
    }

    /// A genesis with an `attestation` section (other CometBFT fields do not matter here).
    fn genesis(dir: &Path, attestation: serde_json::Value) -> PathBuf {
        let path = dir.join("genesis.json");
        let doc = serde_json::json!({"chain_id": "test-1", "attestation": attestation});
        std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
        path
    }

    /// The strict template admitting exactly `digests`.
    fn admitting(digests: Vec<String>) -> serde_json::Value {
        let mut policy = serde_json::to_value(Policy::strict_template(vec![])).unwrap();
        policy["measurements"] = serde_json::json!({"one_of": digests});
        policy
    }

    fn admitting_every_row() -> serde_json::Value {
        admitting(
            crate::image::CPU_MODELS
                .iter()
                .flat_map(|&cpu| (1..=MAX_VCPUS).map(move |n| row_digest(cpu, n)))
                .collect(),
        )
    }

    /// The printed launch as the shell reads it: the command's words, and the digest printed
    /// beside it.
    fn parse(printed: &str) -> (Vec<String>, String) {
        let joined = printed.replace("\\\n", " ");
        let command = joined
            .lines()
            .find(|l| l.starts_with("qemu-system-x86_64 "))
            .expect("a qemu-system-x86_64 command");
        let words = shlex::split(command).expect("shell words");
        let digest = printed
            .lines()
            .filter_map(|l| l.strip_prefix("#   "))
            .find(|l| l.len() == 96 && l.bytes().all(|b| b.is_ascii_hexdigit()))
            .expect("the expected digest")
            .to_string();
        (words[1..].to_vec(), digest)
    }

    /// Every value of option `name`.
    fn values<'a>(words: &'a [String], name: &str) -> Vec<&'a str> {
        words
            .windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].as_str())
            .collect()
    }

    fn one<'a>(words: &'a [String], name: &str) -> &'a str {
        let v = values(words, name);
        assert_eq!(v.len(), 1, "{name}: {v:?}");
        v[0]
    }

    /// `kind,k=v,...` as (kind, map).
    fn properties(value: &str) -> (&str, BTreeMap<&str, &str>) {
        let mut parts = value.split(',');
        let kind = parts.next().unwrap_or_default();
        let map = parts.filter_map(|p| p.split_once('=')).collect();
        (kind, map)
    }

    /// The published row a `-cpu` model's CPUID signature (which QEMU puts in every VMSA)
    /// selects, if any.
    fn row_of_cpu_model(model: &str) -> Option<CpuModel> {
        let sig = CpuType::try_from(model).ok()?.sig();
        crate::image::CPU_MODELS
            .into_iter()
            .find(|cpu| cpu.sev().sig() == sig)
    }

    #[test]
    fn the_printed_launch_derives_cpu_smp_policy_devices_host_data_and_ports_from_its_digest_row() {
        let scratch = synthetic_image();
        let image = scratch.path().to_path_buf();
        let scratch_dir = temp_dir();
        let dir = scratch_dir.path().to_path_buf();
        let genesis_path = genesis(&dir, admitting_every_row());
        let genesis_sha = Sha256::digest(std::fs::read(&genesis_path).unwrap());
        let cmdline = std::fs::read_to_string(image.join("kernel-cmdline")).unwrap();
        for cpu in crate::image::CPU_MODELS {
            for vcpus in 1..=MAX_VCPUS {
                let a = args(&[
                    "--snp",
                    "--genesis",
                    genesis_path.to_str().unwrap(),
                    "--cpu-type",
                    cpu.name(),
                    "--vcpus",
                    &vcpus.to_string(),
                    "--p2p-port",
                    "30656",
                    "--rpc-port",
                    "30657",
                ]);
                let printed = snp_launch(&a, &image).unwrap();
                let (w, digest) = parse(&printed);
                let at = format!("{} with {vcpus} vCPUs", cpu.qemu_model());
                // CPU model ↔ published row: the model's signature picks the row, and the
                // command's -smp the column; the digest printed beside it is that cell.
                let model = one(&w, "-cpu");
                assert_ne!(model, "host", "{at}");
                let row = row_of_cpu_model(model)
                    .unwrap_or_else(|| panic!("{at}: -cpu {model} is in no published row"));
                let smp: u32 = one(&w, "-smp").parse().unwrap();
                assert_eq!(smp, vcpus, "{at}");
                assert!((1..=MAX_VCPUS).contains(&smp), "{at}");
                assert_eq!(digest, row_digest(row, smp), "{at}: digest of another row");
                // Every virtio device carries the options an SEV guest needs; no drive is
                // attached with if=virtio (which cannot carry them).
                let devices: Vec<&str> = values(&w, "-device");
                assert!(devices.len() >= 2, "{at}: {devices:?}");
                for d in devices.iter().filter(|d| d.starts_with("virtio")) {
                    let (_, p) = properties(d);
                    assert_eq!(p.get("iommu_platform"), Some(&"on"), "{at}: {d}");
                    assert_eq!(p.get("disable-legacy"), Some(&"on"), "{at}: {d}");
                }
                for drive in values(&w, "-drive") {
                    let with_kind = format!("drive,{drive}");
                    let (_, p) = properties(&with_kind);
                    assert_eq!(p.get("if"), Some(&"none"), "{at}: -drive {drive}");
                }
                assert!(devices
                    .iter()
                    .any(|d| d.starts_with("virtio-blk-pci,drive=d0")));
                assert!(devices
                    .iter()
                    .any(|d| d.starts_with("virtio-net-pci,netdev=n0")));
                // The SEV-SNP object: explicit policy, the network as HOST_DATA, kernel
                // hashes, a C-bit position; the machine uses it and the memfd backend.
                let sev = values(&w, "-object")
                    .into_iter()
                    .find(|o| o.starts_with("sev-snp-guest,"))
                    .unwrap_or_else(|| panic!("{at}: no sev-snp-guest"));
                let (_, p) = properties(sev);
                let policy = crate::parse_hex(p.get("policy").expect("explicit policy")).unwrap();
                assert_eq!(policy, 0x30000, "{at}");
                check_policy(policy, &Policy::strict(Trust::Amd, Measurements::Any)).unwrap();
                let host_data = base64::engine::general_purpose::STANDARD
                    .decode(p.get("host-data").expect("host-data"))
                    .unwrap();
                assert_eq!(host_data, genesis_sha.to_vec(), "{at}");
                assert_eq!(p.get("kernel-hashes"), Some(&"on"), "{at}");
                assert!(p.contains_key("cbitpos") && p.get("reduced-phys-bits") == Some(&"1"));
                let (machine, m) = properties(one(&w, "-machine"));
                assert_eq!(machine, "q35");
                assert_eq!(m.get("confidential-guest-support"), p.get("id"), "{at}");
                let backend = values(&w, "-object")
                    .into_iter()
                    .find(|o| o.starts_with("memory-backend-memfd,"))
                    .map(|o| properties(o).1)
                    .unwrap();
                assert_eq!(m.get("memory-backend"), backend.get("id"));
                assert_eq!(backend.get("size"), Some(&one(&w, "-m")));
                // The measured inputs, as measured.
                assert_eq!(one(&w, "-append"), cmdline.trim(), "{at}");
                for (option, file) in [
                    ("-bios", "OVMF.amdsev.fd"),
                    ("-kernel", "bzImage"),
                    ("-initrd", "initramfs.cpio.gz"),
                ] {
                    assert_eq!(Path::new(one(&w, option)), image.join(file), "{at}");
                }
                // P2P forwarded for peers; RPC only to the host's loopback.
                let (_, net) = properties(one(&w, "-netdev"));
                let forwards: Vec<&str> = one(&w, "-netdev")
                    .split(',')
                    .filter_map(|p| p.strip_prefix("hostfwd="))
                    .collect();
                assert_eq!(net.get("id"), Some(&"n0"));
                assert_eq!(
                    forwards,
                    ["tcp::30656-:26656", "tcp:127.0.0.1:30657-:26657"],
                    "{at}"
                );
                // The host's configuration and the VCEK it hands in.
                let fw_cfg = values(&w, "-fw_cfg");
                // The guest reads the certificate under the name the launch gives it.
                let vcek = format!(
                    "name={},file=vcek.der",
                    bulwark_attest::source::HOST_CERTIFICATE_NAME
                );
                assert_eq!(
                    fw_cfg,
                    [
                        "name=opt/bulwark/config,file=host.json",
                        &vcek,
                        "name=opt/bulwark/genesis.json,file=genesis.json",
                        "name=opt/bulwark/config.toml,file=config.toml"
                    ]
                );
                assert!(!w.iter().any(|x| x.contains("if=virtio")), "{at}");
            }
        }
    }

    #[test]
    fn a_launch_on_a_machine_without_sev_prints_the_cbitpos_one_liner_and_uses_it() {
        let scratch = synthetic_image();
        let image = scratch.path().to_path_buf();
        let launch = SnpLaunch {
            image: image.clone(),
            cpu_model: CpuModel::Milan.qemu_model(),
            vcpus: 4,
            policy: 0x30000,
            host_data: Some([7; 32]),
            cbitpos: Cbitpos::Variable,
            p2p_port: 26656,
            rpc_port: 26657,
        };
        let printed = render(&launch, CpuModel::Milan, Path::new("genesis.json")).unwrap();
        assert!(printed.lines().any(|l| l == CBITPOS_ONE_LINER), "{printed}");
        let (w, _) = parse(&printed);
        let sev = values(&w, "-object")
            .into_iter()
            .find(|o| o.starts_with("sev-snp-guest,"))
            .unwrap();
        assert_eq!(properties(sev).1.get("cbitpos"), Some(&"$CBITPOS"));
        let host = SnpLaunch {
            cbitpos: Cbitpos::Host(51),
            ..launch
        };
        let printed = render(&host, CpuModel::Milan, Path::new("genesis.json")).unwrap();
        assert!(!printed.contains("CBITPOS"), "{printed}");
        assert!(printed.contains("cbitpos=51,"), "{printed}");
    }

    #[test]
    fn the_enrolling_launch_binds_no_network_and_hands_in_the_enrolment_request() {
        let scratch = synthetic_image();
        let image = scratch.path().to_path_buf();
        let printed = snp_launch(&args(&["--snp", "--enroll"]), &image).unwrap();
        let (w, digest) = parse(&printed);
        assert_eq!(digest, row_digest(CpuModel::Milan, 4));
        let sev = values(&w, "-object")
            .into_iter()
            .find(|o| o.starts_with("sev-snp-guest,"))
            .unwrap();
        let (_, p) = properties(sev);
        assert!(!p.contains_key("host-data"), "{sev}");
        assert_eq!(p.get("policy"), Some(&"0x30000"));
        let fw_cfg = values(&w, "-fw_cfg");
        assert!(
            fw_cfg.contains(&"name=opt/bulwark/enroll,file=enroll.json"),
            "{fw_cfg:?}"
        );
        assert!(!fw_cfg.iter().any(|f| f.contains("genesis")), "{fw_cfg:?}");
        assert!(printed.contains("bulwark-enrollment"), "{printed}");
        // The enrolled guest runs on: the host (loopback only) hands it the launch inputs.
        let netdev = values(&w, "-netdev").join(",");
        assert!(
            netdev.contains("hostfwd=tcp:127.0.0.1:26659-:26659"),
            "{netdev}"
        );
        assert!(printed.contains("nc -N 127.0.0.1 26659"), "{printed}");
        // A network's launch needs its genesis.
        assert!(snp_launch(&args(&["--snp"]), &image).is_err());
    }

    #[test]
    fn the_launch_refuses_what_its_network_would_refuse() {
        let scratch = synthetic_image();
        let image = scratch.path().to_path_buf();
        let scratch_dir = temp_dir();
        let dir = scratch_dir.path().to_path_buf();
        let launch = |attestation: serde_json::Value, extra: &[&str]| {
            let g = genesis(&dir, attestation);
            let mut a = vec!["--snp", "--genesis", g.to_str().unwrap()];
            a.extend_from_slice(extra);
            snp_launch(&args(&a), &image).map_err(|e| e.to_string())
        };
        let ok = admitting_every_row();
        launch(ok.clone(), &[]).unwrap();
        // Debug or a migration agent: every report would be refused (named by the verifier).
        let e = launch(ok.clone(), &["--policy", "0xb0000"]).unwrap_err();
        assert!(e.contains("debug: guest policy 0xb0000"), "{e}");
        let e = launch(ok.clone(), &["--policy", "0x70000"]).unwrap_err();
        assert!(e.contains("migration_agent"), "{e}");
        // Bits the PSP itself refuses.
        let e = launch(ok.clone(), &["--policy", "0x10000"]).unwrap_err();
        assert!(e.contains("bit 17"), "{e}");
        let e = launch(ok.clone(), &["--policy", "0x4000030000"]).unwrap_err();
        assert!(e.contains("bits 26-63"), "{e}");
        // A single-socket network gets a single-socket policy by default, and refuses one
        // without it.
        let mut single = ok.clone();
        single["guest_policy"]["require_single_socket"] = true.into();
        let printed = launch(single.clone(), &[]).unwrap();
        assert!(printed.contains("policy=0x130000,"), "{printed}");
        let e = launch(single, &["--policy", "0x30000"]).unwrap_err();
        assert!(e.contains("single_socket"), "{e}");
        // A network that does not admit the digest, or trusts the simulated PSP.
        let other = admitting(vec![row_digest(CpuModel::Genoa, 4)]);
        let e = launch(other, &["--cpu-type", "milan"]).unwrap_err();
        assert!(e.contains("admits none of this launch's digest"), "{e}");
        let mut simulated = ok.clone();
        simulated["trust"] = "simulated".into();
        let e = launch(simulated, &[]).unwrap_err();
        assert!(e.contains("simulated PSP"), "{e}");
        // vCPUs the kernel cannot run, and no genesis at all.
        let e = launch(ok, &["--vcpus", "9"]).unwrap_err();
        assert!(e.contains("CONFIG_NR_CPUS=8"), "{e}");
        let e = snp_launch(&args(&["--snp"]), &image)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--genesis"), "{e}");
    }

    /// A file QEMU's x86 loader takes for a bzImage (the boot protocol's setup header: 4 setup
    /// sectors, "HdrS", protocol 2.15, loaded high, an initrd limit and a command line size).
    fn dummy_bzimage() -> Vec<u8> {
        let mut b = vec![0u8; 64 * 1024];
        b[0x1f1] = 4;
        b[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x211] = 0x01;
        b[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        b[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes());
        b
    }

    /// The image to launch: the real one when it has been built, else files of the right
    /// kind (a 4 MiB firmware volume of zeros, a bzImage header, a gzipped newc initramfs).
    fn launchable_image() -> (PathBuf, &'static str, Option<tempfile::TempDir>) {
        let real = image_dir(Flavour::Production);
        if [
            "OVMF.amdsev.fd",
            "bzImage",
            "initramfs.cpio.gz",
            "kernel-cmdline",
            "measurement.json",
        ]
        .iter()
        .all(|f| real.join(f).exists())
        {
            return (real, "the built image", None);
        }
        let scratch = synthetic_image();
        let dir = scratch.path().to_path_buf();
        std::fs::write(dir.join("OVMF.amdsev.fd"), vec![0u8; 4 << 20]).unwrap();
        std::fs::write(dir.join("bzImage"), dummy_bzimage()).unwrap();
        std::fs::write(
            dir.join("initramfs.cpio.gz"),
            crate::image::initramfs(b"not a binary", None).unwrap(),
        )
        .unwrap();
        (dir, "stand-in image files", Some(scratch))
    }

    /// QEMU's version as (major, minor).
    fn qemu_version() -> (u32, u32) {
        let out = Command::new("qemu-system-x86_64")
            .arg("--version")
            .output()
            .expect("qemu-system-x86_64");
        version_of(&String::from_utf8_lossy(&out.stdout)).expect("a QEMU version")
    }

    /// What QEMU says when it reaches the SEV-SNP launch on a host that cannot do it: KVM
    /// without SNP, or no KVM at all. Nothing else may stop it.
    const NO_SEV_SNP: [&str; 2] = [
        "qemu-system-x86_64: vm-type SEV-SNP not supported by KVM",
        "qemu-system-x86_64: Could not access KVM kernel module: No such file or directory\nqemu-system-x86_64: failed to initialize kvm: No such file or directory",
    ];

    /// Runs QEMU with `words` in `cwd`, QMP on stdin fed `qmp` (then `quit`).
    fn run_qemu(words: &[String], cwd: &Path, qmp: &[serde_json::Value]) -> std::process::Output {
        use std::process::Stdio;
        let mut child = Command::new("qemu-system-x86_64")
            .args(words)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = String::from("{\"execute\":\"qmp_capabilities\"}\n");
        for q in qmp {
            input += &format!("{q}\n");
        }
        input += "{\"execute\":\"quit\"}\n";
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        child.wait_with_output().unwrap()
    }

    #[test]
    fn qemu_accepts_the_printed_launch_and_stops_only_at_the_missing_sev_snp_support() {
        crate::apt::ensure_packages(&["qemu-system-x86"]).unwrap();
        if qemu_version() < (10, 0) {
            crate::apt::ensure_from_backports(
                &["qemu-system-x86"],
                "the SEV-SNP launch's syntax check (sev-snp-guest, kernel-hashes, host-data)",
            )
            .unwrap();
        }
        let version = qemu_version();
        assert!(
            version >= (10, 0),
            "QEMU {version:?} has no sev-snp-guest (kernel-hashes, host-data): install QEMU >= 10 (Debian: apt-get install -t bookworm-backports qemu-system-x86)"
        );
        assert_ne!(
            std::fs::read_to_string("/sys/module/kvm_amd/parameters/sev_snp")
                .unwrap_or_default()
                .trim(),
            "Y",
            "this host runs SEV-SNP guests: boot the printed launch (cargo xtask qemu --snp) instead of this syntax check"
        );
        let (image, kind, _scratch) = launchable_image();
        let scratch_cwd = temp_dir();
        let cwd = scratch_cwd.path().to_path_buf();
        std::fs::write(cwd.join("data.img"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(
            cwd.join("host.json"),
            br#"{"version":1,"data_disk":"/dev/vda"}"#,
        )
        .unwrap();
        std::fs::copy(
            harness::workspace().join("crates/attest/tests/data/go-sev-guest-milan/vcek.der"),
            cwd.join("vcek.der"),
        )
        .unwrap();
        std::fs::write(cwd.join("genesis.json"), b"{}").unwrap();
        std::fs::write(cwd.join("config.toml"), b"").unwrap();
        std::fs::write(cwd.join("enroll.json"), b"{}").unwrap();
        // Every model's launch for a network, and the enrolling launch (no HOST_DATA).
        let launches = crate::image::CPU_MODELS
            .iter()
            .map(|&cpu| (cpu, Some(Sha256::digest(b"genesis").into())))
            .chain([(CpuModel::Milan, None)]);
        for (cpu, host_data) in launches {
            let launch = SnpLaunch {
                image: image.clone(),
                cpu_model: cpu.qemu_model(),
                vcpus: 4,
                policy: 0x30000,
                host_data,
                // What the one-liner gives on Milan and Genoa; KVM checks it, after SNP.
                cbitpos: Cbitpos::Host(51),
                p2p_port: 26656,
                rpc_port: 26657,
            };
            let printed = render(&launch, cpu, Path::new("genesis.json")).unwrap();
            let (words, _) = parse(&printed);
            let at = format!(
                "{} {} with {kind} on QEMU {version:?}",
                cpu.qemu_model(),
                if host_data.is_some() { "run" } else { "enrol" }
            );
            // 1. The launch as printed, run by the shell: QEMU parses every option and object
            // and stops where KVM is asked for an SEV-SNP VM.
            let out = Command::new("bash")
                .arg("-c")
                .arg(&printed)
                .current_dir(&cwd)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            assert!(
                !out.status.success(),
                "{at}: QEMU launched an SEV-SNP guest here?"
            );
            assert!(
                NO_SEV_SNP.contains(&stderr.as_str()),
                "{at}: QEMU stopped for another reason:\n{stderr}"
            );
            // 2. Everything QEMU sets up after that point (CPU model, firmware and kernel
            // loading, devices, network, fw_cfg), without the confidential guest and paused,
            // under TCG; and the model's CPUID signature, as QEMU defines it, is the row's.
            let mut plain: Vec<String> = Vec::new();
            let mut i = 0;
            while i < words.len() {
                match words[i].as_str() {
                    "-enable-kvm" => {}
                    "-object" if words[i + 1].starts_with("sev-snp-guest,") => i += 1,
                    "-machine" => {
                        plain.push("-machine".into());
                        plain.push(words[i + 1].replace(",confidential-guest-support=sev0", ""));
                        i += 1;
                    }
                    "-nographic" => plain.extend(["-display".into(), "none".into()]),
                    other => plain.push(other.to_string()),
                }
                i += 1;
            }
            plain.extend(["-accel", "tcg", "-S", "-qmp", "stdio"].map(String::from));
            let expand = serde_json::json!({"execute": "query-cpu-model-expansion",
                "arguments": {"type": "full", "model": {"name": cpu.qemu_model()}}});
            let out = run_qemu(&plain, &cwd, &[expand]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if matches!(cpu, CpuModel::Turin) && version < (10, 1) {
                // EPYC-Turin came with QEMU 10.1; the launch says so.
                assert!(!out.status.success(), "{at}");
                assert!(stderr.contains("EPYC-Turin"), "{at}: {stderr}");
                continue;
            }
            assert!(
                out.status.success(),
                "{at}: QEMU refused the launch's devices or files:\n{stderr}"
            );
            let props = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find_map(|v| v.pointer("/return/model/props").cloned())
                .unwrap_or_else(|| panic!("{at}: no CPU model expansion"));
            let field = |k: &str| props[k].as_i64().unwrap_or_else(|| panic!("{at}: {k}")) as i32;
            assert_eq!(
                cpu_sig(field("family"), field("model"), field("stepping")),
                cpu.sev().sig(),
                "{at}: QEMU's model is not the measured row's signature"
            );
        }
    }
}
