//! The measured images end to end, and the host's attacks on them where the host acts: on
//! the VMs' disks, launch inputs and images.
//!
//! The simulated image: four validator VMs enrol inside (each on an empty disk, its identity
//! made and sealed in the guest), the host assembles the genesis from their enrollments and
//! sends it to each enrolled VM on its launch port (VM 0 first refuses a tampered one), and
//! the VMs run on with it under QEMU (TCG) on the SEV-SNP machine shape (q35, UEFI firmware
//! booting the kernel's EFI stub, virtio devices with `iommu_platform=on`); they commit at least
//! 10 heights together, every commit verifying with the light-client verifier, and power off
//! cleanly. Then the host attacks: it reads every byte of each disk (no key file, no seed);
//! it relaunches a validator with swapped genesis files and launch values (each refused at
//! start, the check named); and it runs a validator's enrolled disk in a forged network with
//! a valid chain id and HOST_DATA of its own, where it signs nothing (the genesis names the
//! validator's launch instance, and the copy is another).
//!
//! Five VMs of the simulated image enrol, the genesis names four and admits attested full
//! nodes: the fifth, launched late, block-syncs and serves RPC, then joins the set by a `val=`
//! transaction and signs, while a validator VM leaves and follows the chain; the light-client
//! verifier follows every height through the joiner's RPC.
//!
//! The production image: under TCG (no SEV-SNP device) it powers off saying so, never falls
//! back to simulated attestation, and a genesis trusting the simulated PSP is refused; its
//! binary refuses the same as a process.
//!
//! They need the images, so they are ignored by a plain `cargo test` (which then says so);
//! `cargo xtask test` builds both images and runs them with `--ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "shared/commits.rs"]
mod commits;
#[path = "shared/host.rs"]
mod host;

use bulwark_attest::simulated::SimulatedPsp;
use bulwark_types::tendermint::Genesis;
use harness::rpc::{height, RpcClient};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vm_harness::vm::{
    image_binary, image_dir, run_to_power_off, sha2_256, Boot, Flavour, VmNetwork, CHAIN_NAME,
    CLEAN_POWER_OFF, HOST_CONFIG_JSON,
};

const VALIDATORS: usize = 4;
const HEIGHTS: u64 = 10;
/// Under TCG a VM boots in seconds and the network commits about one height a second.
const LIMIT: Duration = Duration::from_secs(240);
/// A VM that refuses to start powers off within this.
const REFUSAL: Duration = Duration::from_secs(120);
/// What PID 1 prints when the node stopped with an error.
const FAILED_POWER_OFF: &str = "powering off (status 1)";
/// The line PID 1 prints with the node's error.
const NODE_ERROR: &str = "bulwark-init: the node: ";

/// Whether the node's error line in `log` names `check` (`<check>: `), and the VM then
/// powered off with an error.
fn refused_with(log: &str, check: &str) -> bool {
    log.lines()
        .filter(|l| l.contains(NODE_ERROR))
        .any(|l| l.contains(&format!("{check}: ")))
        && log.contains(FAILED_POWER_OFF)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// The chain name's genesis with `change` applied; re-certified (a valid chain id of its
/// own) when `recertify`, else keeping the real chain id.
fn swapped(real: &Value, recertify: bool, change: impl FnOnce(&mut Value)) -> Value {
    let mut g = real.clone();
    change(&mut g);
    if recertify {
        bulwark_identity::certify(CHAIN_NAME, &mut g).unwrap();
    }
    g
}

/// Boots VM `i` on `disk` with `genesis` and a HOST_DATA of `host_data`, expects it to refuse
/// and power off naming `check`, and returns its serial log.
fn expect_refusal(
    net: &VmNetwork,
    i: usize,
    tag: &str,
    disk: &Path,
    genesis: &Value,
    host_data: [u8; 32],
    check: &str,
) -> String {
    let dir = net.vm_dir(i);
    let genesis_path = dir.join(format!("genesis-{tag}.json"));
    write_json(&genesis_path, genesis);
    let host_data_path = dir.join(format!("host_data-{tag}"));
    std::fs::write(&host_data_path, host_data).unwrap();
    let boot = net.boot(
        i,
        tag,
        disk,
        &[
            ("config.toml", dir.join("config.toml")),
            ("genesis.json", genesis_path),
            ("host_data", host_data_path),
        ],
        false,
    );
    let started = Instant::now();
    let log = run_to_power_off(net.image(), &boot, REFUSAL).unwrap();
    assert!(
        refused_with(&log, check),
        "{tag}: expected a refusal naming `{check}`; serial log {}:\n{}",
        boot.serial.display(),
        vm_harness::vm::tail(&log)
    );
    // Refused before the node opened its stores and engine.
    assert!(
        !log.contains("bulwark::run: started"),
        "{tag}: the node started: {}",
        boot.serial.display()
    );
    eprintln!(
        "vm test: {tag}: refused with `{check}` in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    log
}

/// VM `i`'s disk key, unwrapped from its key slots as only the host of a simulated machine
/// can: it knows the simulated chip and the launch digest. A real host knows neither the
/// chip's secret nor any key derived from it.
fn disk_key_of(net: &VmNetwork, i: usize, raw: &[u8]) -> bulwark_identity::disk_key::DiskKey {
    let chip: [u8; 32] = std::fs::read(net.vm_dir(i).join("simulated_chip"))
        .unwrap()
        .try_into()
        .unwrap();
    let digest = vm_harness::vm::simulated_launch_digest(net.image()).unwrap();
    let slots = vec![raw[..4096].to_vec(), raw[4096..8192].to_vec()];
    bulwark_identity::disk_key::unwrap(&mut SimulatedPsp::new(chip, digest), &slots, CHAIN_NAME)
        .unwrap()
        .key
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The host reads every byte of VM `i`'s disk after a run: ciphertext only. No string of the
/// chain (its id, name, any moniker, any validator's key as genesis writes it, the names the
/// node's files and records carry), no validator's raw public key (the node's stores hold
/// every validator set), no filesystem the host could parse, and not the disk key itself.
fn host_reads_the_disk(net: &VmNetwork, i: usize, genesis: &Value) {
    let disk = net.vm_dir(i).join("data.img");
    let raw = std::fs::read(&disk).unwrap();
    // The guest's layout: two key slots, then dm-integrity's superblock (its magic in clear).
    assert_eq!(&raw[8192..8199], b"integrt", "VM {i}: no sealed layout");
    assert_ne!(
        &raw[1024 + 56..1024 + 58],
        &[0x53, 0xEF],
        "VM {i}: an ext4 superblock the host can read"
    );
    let mut plaintexts: Vec<(String, Vec<u8>)> = Vec::new();
    let chain_id = genesis["chain_id"].as_str().unwrap();
    plaintexts.push(("chain_id".into(), chain_id.as_bytes().to_vec()));
    plaintexts.push(("chain name".into(), CHAIN_NAME.as_bytes().to_vec()));
    for v in genesis["validators"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        plaintexts.push((format!("moniker {name}"), name.as_bytes().to_vec()));
        let key = v["pub_key"]["value"].as_str().unwrap();
        plaintexts.push((format!("{name}'s key (base64)"), key.as_bytes().to_vec()));
        use base64::Engine;
        let raw_key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        plaintexts.push((
            format!("{name}'s key (hex)"),
            hex::encode(&raw_key).into_bytes(),
        ));
        plaintexts.push((format!("{name}'s key (raw)"), raw_key));
    }
    for word in [
        "genesis",
        "validator",
        "priv_validator",
        "last_sign_state",
        "identity.sealed",
        "enrollment",
        "config.toml",
        "lost+found",
    ] {
        plaintexts.push((format!("the string {word:?}"), word.as_bytes().to_vec()));
    }
    let key = disk_key_of(net, i, &raw);
    plaintexts.push(("disk key (crypt half)".into(), key[..64].to_vec()));
    plaintexts.push(("disk key (MAC halves)".into(), key[64..].to_vec()));
    for (what, bytes) in &plaintexts {
        assert!(
            !contains(&raw, bytes),
            "VM {i}: the {what} is on its disk in plaintext"
        );
    }
    // The scan finds what is there.
    let mut planted = raw[..65536].to_vec();
    planted[30000..30000 + chain_id.len()].copy_from_slice(chain_id.as_bytes());
    assert!(contains(&planted, chain_id.as_bytes()));
    let written = raw
        .chunks(4096)
        .filter(|b| b.iter().any(|&x| x != 0))
        .count();
    eprintln!(
        "vm test: VM {i}'s disk: {} MiB raw, {written} blocks written, ciphertext only ({} plaintexts searched)",
        raw.len() >> 20,
        plaintexts.len()
    );
}

/// The host flips bytes of VM `i`'s disk between boots, at offsets drawn from `seed` in
/// blocks the guest wrote (one in every 32, after the key slots). The guest detects it (a
/// sector whose tag fails is an I/O error) and powers off without running the node: it is
/// booted alone, and refuses before it could sign.
fn host_flips_bytes_on_the_disk(net: &VmNetwork, i: usize, seed: u64) {
    let dir = net.vm_dir(i);
    let disk = dir.join(format!("flipped-{seed}.img"));
    std::fs::copy(dir.join("data.img"), &disk).unwrap();
    let mut raw = std::fs::read(&disk).unwrap();
    let written: Vec<usize> = raw
        .chunks(4096)
        .enumerate()
        .skip(2)
        .filter(|(_, b)| b.iter().any(|&x| x != 0))
        .map(|(n, _)| n)
        .collect();
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut flipped = 0;
    for block in written.iter().step_by(32) {
        let at = block * 4096 + (next() % 4096) as usize;
        raw[at] ^= 1 << (next() % 8);
        flipped += 1;
    }
    std::fs::write(&disk, &raw).unwrap();
    let boot = net.boot(
        i,
        &format!("flipped-{seed}"),
        &disk,
        &[
            ("config.toml", dir.join("config.toml")),
            ("genesis.json", net.genesis.clone()),
            ("host_data", net.dir().join("host_data")),
        ],
        false,
    );
    let log = run_to_power_off(net.image(), &boot, REFUSAL).unwrap();
    let detected = log.contains("INTEGRITY AEAD ERROR") || log.contains("data disk");
    assert!(
        detected && log.contains(FAILED_POWER_OFF) && !log.contains("bulwark::run: started"),
        "{flipped} flipped bits: expected the guest to detect them and power off; serial log {}:\n{}",
        boot.serial.display(),
        vm_harness::vm::tail(&log)
    );
    let first = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .map(|l| l.chars().take(160).collect::<String>())
            .unwrap_or_default()
    };
    eprintln!(
        "vm test: VM {i}: {flipped} bits the host flipped on its disk are detected at start, before the node runs: kernel `{}`, PID 1 `{}`",
        first("AEAD"),
        first(NODE_ERROR)
    );
}

/// The forged network: the host keeps VM 0's disk from right after enrolment and launches it
/// with a genesis of its own (VM 0 alone, the same chain name, a valid chain id and HOST_DATA
/// of its own), to collect signatures of VM 0's key. The guest runs there, but the genesis
/// names VM 0's launch instance (the enrolling boot, which runs in the real network), and
/// this boot is another: it signs nothing, so the forged network never makes a block. (Were
/// it to sign, the chain id, which certifies the genesis, would keep every signature from
/// verifying on the real chain: `chain_id::tests`.)
fn forged_network_gets_no_signature(net: &VmNetwork, real: &Value) {
    const WAITING: &str = "not signing until this instance's claim commits";
    let dir = net.vm_dir(0);
    let forged = swapped(real, true, |g| {
        let own = g["validators"][0].clone();
        g["validators"] = Value::Array(vec![own]);
    });
    assert_ne!(forged["chain_id"], real["chain_id"]);
    let genesis_path = dir.join("genesis-forged.json");
    write_json(&genesis_path, &forged);
    let host_data_path = dir.join("host_data-forged");
    std::fs::write(
        &host_data_path,
        sha2_256(&std::fs::read(&genesis_path).unwrap()),
    )
    .unwrap();
    let disk = dir.join("forged.img");
    assert!(std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(dir.join("enrolled.img"))
        .arg(&disk)
        .status()
        .unwrap()
        .success());
    let boot = net.boot(
        0,
        "forged",
        &disk,
        &[
            ("config.toml", dir.join("config.toml")),
            ("genesis.json", genesis_path),
            ("host_data", host_data_path),
        ],
        true,
    );
    let mut vm = vm_harness::vm::launch(net.image(), &boot).unwrap();
    let line = wait_in_log(&boot.serial, WAITING, LIMIT).unwrap_or_else(|| {
        panic!(
            "the forged network's guest never said it waits; serial log {}:\n{}",
            boot.serial.display(),
            vm_harness::vm::tail(&std::fs::read_to_string(&boot.serial).unwrap_or_default())
        )
    });
    // A one-validator network decides a height a second under TCG: give it twenty.
    let mut rpc = RpcClient::new(&net.rpc_addrs()[0]);
    std::thread::sleep(Duration::from_secs(20));
    let reached = height(&mut rpc);
    let log = std::fs::read_to_string(&boot.serial).unwrap_or_default();
    let _ = vm.kill();
    let _ = vm.wait();
    assert_eq!(
        reached,
        Some(0),
        "the forged network made blocks:\n{}",
        vm_harness::vm::tail(&log)
    );
    assert!(
        !log.contains("signing; this instance holds the key"),
        "{}",
        vm_harness::vm::tail(&log)
    );
    eprintln!(
        "vm test: the forged network ({}) made no block in 20 s: its only validator's copy is not the launch instance the genesis names ({})",
        forged["chain_id"],
        line.trim()
    );
}

#[test]
#[ignore = "needs the simulated image and QEMU: run through `cargo xtask test` (or `cargo xtask image --simulated` first)"]
fn four_vms_enrol_inside_commit_and_the_hosts_attacks_fail() {
    let image = image_dir(Flavour::Simulated);
    // The host first hands VM 0 a genesis changed under its chain id: the enrolled guest
    // refuses it on its launch port, says why, and takes the real one after.
    let tampered: vm_harness::vm::Hostile = |real| {
        let mut g: Value = serde_json::from_slice(real).unwrap();
        g["validators"][0]["power"] = Value::String("1000".into());
        (serde_json::to_vec(&g).unwrap(), "chain_id".into())
    };
    let mut net = VmNetwork::start_with(&image, VALIDATORS, 500, Some(tampered)).unwrap();
    eprintln!(
        "vm test: mode TCG (software emulation), {VALIDATORS} VMs of the simulated image enrolled in {:.1} s; files in {}",
        net.enrolment.as_secs_f64(),
        net.dir().display()
    );
    // The ceremony: every enrollment came back on a console, and anyone can re-verify the
    // genesis with the image's own binary.
    let verified = vm_harness::vm::run_binary(
        &image_binary(&image),
        &["verify-genesis", net.genesis.to_str().unwrap()],
    )
    .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&verified)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), VALIDATORS);
    assert!(lines.iter().all(|l| l["verified"] == true), "{lines:?}");
    let real = read_json(&net.genesis);
    let mut clients = net.clients();
    wait_heights(&mut net, &mut clients, HEIGHTS);
    eprintln!(
        "vm test: every validator reached height {HEIGHTS} after {:.1} s",
        net.started.elapsed().as_secs_f64()
    );
    let real_genesis: Genesis<Value> = serde_json::from_value(real.clone()).unwrap();
    let verified = commits::verify_stored_commits(&real_genesis, &mut clients[0], HEIGHTS).unwrap();
    assert_eq!(verified.len() as u64, HEIGHTS);
    for i in 0..VALIDATORS {
        // The kernel came up through its EFI stub (as under SEV-SNP, where the CC blob and
        // secrets page come from the EFI configuration table), not a legacy BIOS boot.
        assert!(
            net.serial_log(i).contains("EFI stub: Loaded initrd"),
            "VM {i} did not boot through the EFI stub; serial logs in {}",
            net.dir().display()
        );
        let devices = net.virtio_devices(i).unwrap();
        let mut kinds: Vec<&str> = devices.iter().map(|d| d.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, ["virtio-blk", "virtio-net"], "VM {i}: {devices:?}");
        assert!(
            devices.iter().all(|d| d.access_platform),
            "VM {i}: a guest driver did not negotiate ACCESS_PLATFORM, which SEV-SNP requires: {devices:?}"
        );
    }
    host_restarts_and_rolls_back_a_validator(&mut net, &mut clients);
    host_clones_a_validator(&mut net, &mut clients);
    // Every boot ran the image's built-in kvstore, never the application the host named.
    assert_eq!(
        net.decoy_app_connections(),
        0,
        "a guest used the host's application"
    );
    let clean = net.stop();
    assert_eq!(
        clean,
        VALIDATORS,
        "not every VM powered off cleanly; serial logs in {}",
        net.dir().display()
    );
    // The host reads the disks.
    for i in 0..VALIDATORS {
        host_reads_the_disk(&net, i, &real);
    }
    // The host relaunches validator 0 with swapped launch inputs: each refused at start.
    let disk = net.vm_dir(0).join("data.img");
    let real_host_data = sha2_256(&std::fs::read(&net.genesis).unwrap());
    let host_data_of = |g: &Value| sha2_256(&serde_json::to_vec_pretty(g).unwrap());
    // Each swap comes with the HOST_DATA of the genesis it hands in (the host makes its
    // launch consistent): every local check but the one named holds.
    let swaps = [
        (
            "widened-measurements",
            swapped(&real, false, |g| {
                g["attestation"]["measurements"]["one_of"]
                    .as_array_mut()
                    .unwrap()
                    .push(Value::String("ab".repeat(48)));
            }),
            "chain_id",
        ),
        (
            "forged-real-chain-id",
            swapped(&real, false, |g| {
                g["validators"].as_array_mut().unwrap().truncate(1);
            }),
            "chain_id",
        ),
        (
            "validator-replaced",
            swapped(&real, true, |g| {
                // Validator 1's key becomes one the host made (it has no enrollment).
                let key = ed25519_consensus::SigningKey::from([9u8; 32]);
                let public = bulwark_types::tendermint::PublicKey::from_raw_ed25519(
                    &key.verification_key().to_bytes(),
                )
                .unwrap();
                let mut info =
                    bulwark_types::tendermint::validator::Info::new(public, 10u32.into());
                info.name = g["validators"][1]["name"].as_str().map(String::from);
                g["validators"][1] = serde_json::to_value(info).unwrap();
            }),
            "enrollment",
        ),
        (
            "own-key-removed",
            swapped(&real, true, |g| {
                g["validators"].as_array_mut().unwrap().remove(0);
            }),
            "genesis_validator",
        ),
    ];
    for (tag, genesis, check) in &swaps {
        expect_refusal(&net, 0, tag, &disk, genesis, host_data_of(genesis), check);
    }
    let mut other_launch = real_host_data;
    other_launch[0] ^= 1;
    expect_refusal(
        &net,
        0,
        "other-host-data",
        &disk,
        &real,
        other_launch,
        "host_data",
    );
    forged_network_gets_no_signature(&net, &real);
    host_flips_bytes_on_the_disk(&net, 1, 1);
    host_flips_bytes_on_the_disk(&net, 2, 2);
    what_qemu_keep_leaves(net);
}

/// `cargo xtask qemu --keep DIR`'s step: each VM's data disk as the host sees it (byte for
/// byte) and its serial logs, and the network's genesis, moved out of the run's directory.
fn what_qemu_keep_leaves(net: VmNetwork) {
    let digest = |path: &std::path::Path| -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(path).unwrap()).to_vec()
    };
    let disks: Vec<Vec<u8>> = (0..VALIDATORS)
        .map(|i| digest(&net.vm_dir(i).join("data.img")))
        .collect();
    let run_dir = net.dir().to_path_buf();
    let dest = tempfile::tempdir().unwrap();
    let kept = net.keep(dest.path()).unwrap();
    assert!(!run_dir.exists(), "the run's directory is left behind");
    assert!(dest.path().join("genesis.json").is_file(), "{kept:?}");
    for (i, disk) in disks.iter().enumerate() {
        let node = dest.path().join(format!("node{i}"));
        assert!(kept.contains(&node.join("data.img")), "{kept:?}");
        assert!(
            digest(&node.join("data.img")) == *disk,
            "VM {i}: the kept disk is not the one the host saw"
        );
        let logs = kept
            .iter()
            .filter(|f| f.starts_with(&node))
            .filter(|f| {
                f.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("serial"))
            })
            .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
            .count();
        assert!(logs >= 1, "VM {i}: no serial log kept: {kept:?}");
    }
    eprintln!(
        "vm test: qemu --keep left {} files: the disks (also those of the flipped boots), serial logs, the genesis",
        kept.len()
    );
}

/// Waits until `log` (a serial log file) has a line containing `needle`.
fn wait_in_log(log: &Path, needle: &str, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Some(line.to_string());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

/// The host stops validator 3 cleanly and keeps a copy of its disk, boots it again (a new
/// instance: it signs once the other three commit its claim), lets the network run on, then
/// stops it again and boots the old copy (a rollback: again a new instance, which signs only
/// after its own claim). The network keeps committing, every node reaches the end, and no
/// block any node committed holds evidence of a double sign.
fn host_restarts_and_rolls_back_a_validator(net: &mut VmNetwork, clients: &mut [RpcClient]) {
    const SIGNING: &str = "signing; this instance holds the key since height";
    let i = 3;
    let dir = net.vm_dir(i);
    assert!(net.stop_one(i), "VM {i} did not stop cleanly");
    let snapshot = dir.join("rolled-back.img");
    std::fs::copy(dir.join("data.img"), &snapshot).unwrap();
    let top = |clients: &mut [RpcClient]| {
        clients[..i]
            .iter_mut()
            .filter_map(height)
            .max()
            .unwrap_or(0)
    };
    let at_snapshot = top(clients);
    for (tag, disk) in [
        ("restarted", dir.join("data.img")),
        ("rolled-back", snapshot),
    ] {
        if tag == "rolled-back" {
            assert!(net.stop_one(i), "VM {i} did not stop cleanly");
        }
        let booted = Instant::now();
        let from = top(clients);
        let serial = net.reboot(i, tag, &disk).unwrap();
        let line = wait_in_log(&serial, SIGNING, LIMIT).unwrap_or_else(|| {
            panic!(
                "{tag} VM {i} never signed again; serial log {}:\n{}",
                serial.display(),
                vm_harness::vm::tail(&std::fs::read_to_string(&serial).unwrap_or_default())
            )
        });
        let signed_at = top(clients);
        eprintln!(
            "vm test: VM {i} {tag} (disk of height {}): signs again {:.1} s after its boot, {} heights after the network's {from}: {}",
            if tag == "restarted" { from } else { at_snapshot },
            booted.elapsed().as_secs_f64(),
            signed_at.saturating_sub(from),
            line.split("bulwark_node::engine: ").last().unwrap_or(&line)
        );
    }
    let target = top(clients) + 3;
    no_evidence_up_to(clients, target);
}

/// Waits until every validator passes `target`, then checks that no block up to it holds
/// evidence of a double sign.
fn no_evidence_up_to(clients: &mut [RpcClient], target: u64) {
    let deadline = Instant::now() + LIMIT;
    while clients
        .iter_mut()
        .map(|c| height(c).unwrap_or(0))
        .min()
        .unwrap_or(0)
        < target
    {
        assert!(
            Instant::now() < deadline,
            "the network did not reach {target}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for h in 1..=target {
        let block = clients[0]
            .call("block", serde_json::json!({ "height": h.to_string() }))
            .unwrap();
        let evidence = &block["block"]["evidence"]["evidence"];
        assert!(
            evidence.as_array().is_none_or(|e| e.is_empty()),
            "height {h} commits evidence: {evidence}"
        );
    }
    eprintln!("vm test: no block up to height {target} holds evidence of a double sign");
}

/// Whether the node at `addr` says its instance signs.
fn signing(addr: &str) -> Option<bool> {
    RpcClient::new(addr)
        .call("status", serde_json::json!({}))
        .ok()?
        .pointer("/bulwark_instance/signing")?
        .as_bool()
}

/// The host's clone (review C-2(b)): validator 2's disk copied, then VM 2 and a fifth VM on
/// the copy run together on the same machine (same chip: the copy unseals), the copy connected
/// to the other three validators but never to its original. Both are new instances of one
/// key: each signs only once its own claim commits, and the later claim stops the earlier
/// holder for good. At most one of them signs in the end, and no block holds evidence of a
/// double sign.
fn host_clones_a_validator(net: &mut VmNetwork, clients: &mut [RpcClient]) {
    const STOPPED: &str = "STOPPED SIGNING for good";
    let i = 2;
    let dir = net.vm_dir(i);
    assert!(net.stop_one(i), "VM {i} did not stop cleanly");
    let copy = dir.join("clone.img");
    std::fs::copy(dir.join("data.img"), &copy).unwrap();
    let booted = Instant::now();
    let original_serial = net
        .reboot(i, "beside-its-clone", &dir.join("data.img"))
        .unwrap();
    let (clone_rpc, clone_serial) = net.boot_clone(i, &copy, &[0, 1, 3]).unwrap();
    let original_rpc = net.rpc_addrs()[i].clone();
    // One of the two took the key last; the other says it stopped for good. Or one of them
    // never got its claim into a block: the honest validators keep one connection per
    // validator (the newer one), so the original and its clone keep displacing each other,
    // and the one starved of blocks trails too far to claim; then it never signs and the
    // other signs on. Which of the two wins the race is up to the schedule.
    let deadline = Instant::now() + LIMIT;
    let outcome = loop {
        let original = std::fs::read_to_string(&original_serial).unwrap_or_default();
        let clone = std::fs::read_to_string(&clone_serial).unwrap_or_default();
        match (original.contains(STOPPED), clone.contains(STOPPED)) {
            (true, true) => panic!("both the original and its clone stopped signing"),
            (true, false) => break Some(("original", clone_rpc.clone())),
            (false, true) => break Some(("clone", original_rpc.clone())),
            (false, false) if Instant::now() >= deadline => break None,
            (false, false) => {}
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let logs = format!(
        "serial logs {} and {}",
        original_serial.display(),
        clone_serial.display()
    );
    // The heights an instance signed a vote at, from every `signed vote` line of its log.
    let signed = |serial: &Path| -> std::collections::BTreeSet<u64> {
        let text = std::fs::read_to_string(serial).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("signed vote"))
            .map(|l| {
                let height = l.split("height=").nth(1).and_then(|r| r.split(' ').next());
                height.and_then(|h| h.parse().ok()).unwrap_or_else(|| {
                    panic!(
                        "a signed vote without a height in {}: {l}",
                        serial.display()
                    )
                })
            })
            .collect()
    };
    match outcome {
        Some((stopped, holder_rpc)) => {
            let stopped_rpc = if stopped == "original" {
                &original_rpc
            } else {
                &clone_rpc
            };
            // The survivor signs; the one that stopped does not.
            let deadline = Instant::now() + LIMIT;
            while signing(&holder_rpc) != Some(true) {
                assert!(
                    Instant::now() < deadline,
                    "the surviving instance never signs; {logs}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            assert_eq!(
                signing(stopped_rpc),
                Some(false),
                "the {stopped} still signs; {logs}"
            );
            eprintln!(
                "vm test: VM {i} and a fifth VM on a copy of its disk ran together: the {stopped} stopped signing for good {:.1} s after both booted, the other signs",
                booted.elapsed().as_secs_f64()
            );
        }
        None => {
            let (by_original, by_clone) = (signed(&original_serial), signed(&clone_serial));
            match (by_original.is_empty(), by_clone.is_empty()) {
                // The earlier holder trails too far to see the later claim: both signed, and
                // neither says it stopped yet (the heights are checked below).
                (false, false) => eprintln!(
                    "vm test: VM {i} and a fifth VM on a copy of its disk ran together for {:.0} s: both signed, neither stopped yet",
                    booted.elapsed().as_secs_f64()
                ),
                (original_idle, _) => {
                    let (idle, idle_rpc, holder, holder_rpc) = if original_idle && !by_clone.is_empty() {
                        ("original", &original_rpc, "clone", &clone_rpc)
                    } else {
                        ("clone", &clone_rpc, "original", &original_rpc)
                    };
                    assert_eq!(signing(idle_rpc), Some(false), "the {idle} signs; {logs}");
                    assert_eq!(
                        signing(holder_rpc),
                        Some(true),
                        "the {holder} does not sign; {logs}"
                    );
                    eprintln!(
                        "vm test: VM {i} and a fifth VM on a copy of its disk ran together for {:.0} s: the {idle} never had its claim committed and never signed, the {holder} signs",
                        booted.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    // The network goes on, and no block holds evidence of a double sign; waiting on the three
    // others, since VM {i} or its clone may trail far behind.
    let top = clients.iter_mut().filter_map(height).max().unwrap_or(0);
    let mut others: Vec<RpcClient> = (0..4)
        .filter(|&j| j != i)
        .map(|j| RpcClient::new(&net.rpc_addrs()[j]))
        .collect();
    no_evidence_up_to(&mut others, top + 3);
    // Read after all that: one instance signed only below every height the other signed.
    let (by_original, by_clone) = (signed(&original_serial), signed(&clone_serial));
    let apart = |a: &std::collections::BTreeSet<u64>, b: &std::collections::BTreeSet<u64>| {
        a.last()
            .zip(b.first())
            .is_none_or(|(last, first)| last < first)
    };
    assert!(
        apart(&by_original, &by_clone) || apart(&by_clone, &by_original),
        "VM {i} signed at {:?}..={:?} and its clone at {:?}..={:?}: they overlap; {logs}",
        by_original.first(),
        by_original.last(),
        by_clone.first(),
        by_clone.last()
    );
    assert!(net.stop_clone(), "the clone did not power off cleanly");
}

/// A boot of the production image on a fresh empty disk in `dir`, with the host
/// configuration and `inputs`; the host also offers every simulated launch value, which a
/// production guest has no code to use.
/// The production image (checked to be there) and an empty directory for a test's files.
fn production_image_and_dir(tag: &str) -> (PathBuf, PathBuf) {
    let image = image_dir(Flavour::Production);
    vm_harness::vm::check_prerequisites(&image).unwrap();
    let dir = std::env::temp_dir().join(format!("bulwark-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    (image, dir)
}

fn production_boot(dir: &Path, tag: &str, inputs: &[(&str, PathBuf)]) -> Boot {
    let disk = dir.join(format!("{tag}.img"));
    vm_harness::vm::empty_data_disk(&disk).unwrap();
    std::fs::write(dir.join("host.json"), HOST_CONFIG_JSON).unwrap();
    std::fs::write(dir.join("chip"), [3u8; 32]).unwrap();
    std::fs::write(dir.join("measurement"), [4u8; 48]).unwrap();
    let fw_cfg = vm_harness::vm::simulated_machine_inputs(
        &dir.join("host.json"),
        &dir.join("chip"),
        &dir.join("measurement"),
        inputs,
    );
    Boot {
        disk,
        serial: dir.join(format!("serial-{tag}.log")),
        monitor: dir.join(format!("monitor-{tag}.sock")),
        fw_cfg,
        forwards: vec![],
        qemu_args: vec![],
    }
}

#[test]
#[ignore = "needs the production image and QEMU: run through `cargo xtask test` (or `cargo xtask image` first)"]
fn the_production_image_without_sev_snp_powers_off_and_never_trusts_simulated_evidence() {
    let (image, dir) = production_image_and_dir("production");
    // A development network's genesis (trust: simulated), made by the ceremony in process mode.
    let dev = harness::process::bulwark_binary().unwrap();
    let base = harness::ports::testnet_block(1).unwrap();
    let homes = harness::process::testnet(&dev, &dir.join("net"), 1, base, &[]).unwrap();
    let home = &homes[0];
    let simulated = read_json(&home.join("config/genesis.json"));
    assert_eq!(simulated["attestation"]["trust"], "simulated");
    let chain_name = bulwark_identity::check_chain_id(&simulated).unwrap();
    let mut amd = simulated.clone();
    amd["attestation"]["trust"] = Value::String("amd".into());
    bulwark_identity::certify(&chain_name, &mut amd).unwrap();
    let mut forged = amd.clone();
    forged["validators"][0]["power"] = Value::String("1000".into());
    let production = image_binary(&image);

    // The production binary as a process: simulated trust is refused, and so is everything
    // that would need the simulated PSP.
    let out = std::process::Command::new(&production)
        .args(["start", "--home", home.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("trust:") && stderr.contains("production build"),
        "{stderr}"
    );
    for args in [
        vec!["testnet", "--output", dir.join("t").to_str().unwrap()],
        vec![
            "attest",
            "report",
            "--simulated",
            "--report-data",
            &"00".repeat(64),
            "--out",
            dir.join("r").to_str().unwrap(),
        ],
    ] {
        let out = std::process::Command::new(&production)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("production build"), "{args:?}: {stderr}");
    }
    eprintln!(
        "vm test: the production binary refuses simulated trust and the simulated PSP as a process"
    );

    let cases: [(&str, Option<&Value>, &str); 5] = [
        ("enrol", None, "sev_guest_device"),
        ("enrol-simulated", None, "trust"),
        ("amd-genesis", Some(&amd), "sev_guest_device"),
        ("simulated-genesis", Some(&simulated), "trust"),
        ("forged-real-chain-id", Some(&forged), "chain_id"),
    ];
    for (tag, genesis, check) in cases {
        let mut inputs = Vec::new();
        match genesis {
            None => {
                let request = dir.join("enroll.json");
                let trust = if tag == "enrol-simulated" {
                    "simulated"
                } else {
                    "amd"
                };
                std::fs::write(
                    &request,
                    format!(
                        r#"{{"moniker":"v0","chain_name":"bulwark-testnet","trust":"{trust}","launch_token_sha256":"{}"}}"#,
                        "00".repeat(32)
                    ),
                )
                .unwrap();
                inputs.push(("enroll", request));
            }
            Some(g) => {
                let path = dir.join(format!("genesis-{tag}.json"));
                write_json(&path, g);
                let host_data = dir.join(format!("host_data-{tag}"));
                std::fs::write(&host_data, sha2_256(&std::fs::read(&path).unwrap())).unwrap();
                inputs.push(("genesis.json", path));
                inputs.push(("host_data", host_data));
                inputs.push(("config.toml", home.join("config/config.toml")));
            }
        }
        let boot = production_boot(&dir, tag, &inputs);
        let started = Instant::now();
        let log = run_to_power_off(&image, &boot, REFUSAL).unwrap();
        assert!(
            refused_with(&log, check),
            "{tag}: expected `{check}` and a power-off; serial log {}:\n{}",
            boot.serial.display(),
            vm_harness::vm::tail(&log)
        );
        assert!(!log.contains(CLEAN_POWER_OFF), "{tag}");
        assert!(
            !log.to_lowercase().contains("simulated attestation:"),
            "{tag}: the production guest ran simulated attestation"
        );
        if check == "sev_guest_device" {
            assert!(
                log.contains("runs only as an SEV-SNP guest"),
                "{tag}: the message does not say why: {}",
                vm_harness::vm::tail(&log)
            );
        }
        eprintln!(
            "vm test: production image, {tag}: powered off with `{check}` after {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// BadAML: the host hands the production guest an ACPI table of its own
/// (`tests/data/hostile-ssdt.asl`, compiled with `iasl`; the launch digest does not cover
/// ACPI tables). Its AML runs in the guest kernel at boot: it writes a marker to QEMU's debug
/// port, then tries to write and read back guest RAM, and to read the DSDT through an address
/// it finds in the FADT (ACPI table memory: not RAM to the kernel, yet the guest's own and
/// mapped encrypted). The kernel serves host AML no memory the firmware describes
/// (`image/patches/aml-no-memory-access.patch`): neither later marker comes, each refusal is
/// on the console, and the guest goes on to PID 1 (which, without SEV-SNP, refuses to enrol
/// and powers off). Under Debian's stock 6.1 cloud kernel the same table reaches both, and
/// under this image's earlier patch (guest RAM only) it read the DSDT.
#[test]
#[ignore = "needs the production image, QEMU and iasl: run through `cargo xtask test` (or `cargo xtask image` first)"]
fn the_hosts_acpi_table_runs_in_the_guest_but_never_maps_guest_ram() {
    let (image, dir) = production_image_and_dir("aml");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/hostile-ssdt.asl");
    let out = std::process::Command::new("iasl")
        .arg("-p")
        .arg(dir.join("hostile-ssdt"))
        .arg(&source)
        .output()
        .expect("iasl (Debian's acpica-tools; `cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "iasl: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let request = dir.join("enroll.json");
    std::fs::write(
        &request,
        r#"{"moniker":"v0","chain_name":"bulwark-testnet","trust":"amd","launch_token_sha256":"0000000000000000000000000000000000000000000000000000000000000000"}"#,
    )
    .unwrap();
    let mut boot = production_boot(&dir, "aml", &[("enroll", request)]);
    let port = dir.join("debug-port.log");
    boot.qemu_args = vec![
        "-acpitable".into(),
        format!("file={}", dir.join("hostile-ssdt.aml").display()),
        "-debugcon".into(),
        format!("file:{}", port.display()),
        "-global".into(),
        "isa-debugcon.iobase=0x402".into(),
    ];
    let log = run_to_power_off(&image, &boot, REFUSAL).unwrap();
    let written = String::from_utf8_lossy(&std::fs::read(&port).unwrap_or_default()).to_string();
    assert!(
        written.contains("<aml ran>"),
        "the hostile table did not run (debug port: {written:?}); serial log:\n{}",
        vm_harness::vm::tail(&log)
    );
    assert!(
        written.contains("<probing acpi>"),
        "the table's second method did not reach its access (debug port: {written:?})"
    );
    for (reached, what) in [
        ("<guest ram mapped>", "wrote and read guest RAM"),
        (
            "<acpi table read>",
            "read ACPI table memory (not RAM, mapped encrypted)",
        ),
    ] {
        assert!(
            !written.contains(reached),
            "the host's AML {what}; serial log:\n{}",
            vm_harness::vm::tail(&log)
        );
    }
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Bulwark: refused the host's AML access to memory at"))
        .collect();
    assert!(
        refusals.iter().any(|l| l.contains("0x0000000002000000"))
            && refusals.iter().any(|l| !l.contains("0x0000000002000000")),
        "the console does not show both refusals (guest RAM, then the DSDT): {refusals:?}\n{}",
        vm_harness::vm::tail(&log)
    );
    assert!(
        refused_with(&log, "sev_guest_device"),
        "the guest did not reach PID 1 after the hostile table:\n{}",
        vm_harness::vm::tail(&log)
    );
    eprintln!(
        "vm test: the host's AML ran in the production guest and every memory access it tried was refused"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The image's kernel is the pinned 6.12 with what the guest needs and nothing the host could
/// use against it: read from the final `.config` the image build kept.
#[test]
#[ignore = "needs the simulated image: run through `cargo xtask test` (or `cargo xtask image --simulated` first)"]
fn the_image_kernel_is_6_12_with_the_guests_configuration() {
    let image = image_dir(Flavour::Simulated);
    let config = std::fs::read_to_string(image.join("kernel.config")).unwrap();
    let header = config
        .lines()
        .find(|l| l.contains("Kernel Configuration"))
        .unwrap_or("");
    assert!(header.contains("Linux/x86 6.12."), "{header}");
    let set = |name: &str| config.lines().any(|l| l == format!("CONFIG_{name}=y"));
    let absent = |name: &str| {
        !config
            .lines()
            .any(|l| l.starts_with(&format!("CONFIG_{name}=")))
    };
    for needed in [
        // The sealed data disk.
        "BLK_DEV_DM",
        "DM_CRYPT",
        "DM_INTEGRITY",
        "CRYPTO_AUTHENC",
        "CRYPTO_HMAC",
        "CRYPTO_SHA256",
        "CRYPTO_XTS",
        "CRYPTO_AES",
        // SEV-SNP attestation: the guest device and configfs-tsm reports.
        "AMD_MEM_ENCRYPT",
        "SEV_GUEST",
        "TSM_REPORTS",
        "CONFIGFS_FS",
        "UNACCEPTED_MEMORY",
        "EFI_STUB",
        "VIRTIO_BLK",
        "VIRTIO_NET",
        "EXT4_FS",
    ] {
        assert!(set(needed), "CONFIG_{needed} is not built in");
    }
    for unwanted in [
        // The host's virtio-rng does not feed the CRNG.
        "HW_RANDOM",
        "HW_RANDOM_VIRTIO",
        // No way to add or replace ACPI tables or run firmware code at runtime.
        "ACPI_TABLE_UPGRADE",
        "ACPI_CONFIGFS",
        "ACPI_CUSTOM_METHOD",
        "ACPI_DEBUGGER",
        "ACPI_PRMT",
        "ACPI_PROCESSOR",
        "CPU_FREQ",
        // Nothing loads code after boot.
        "MODULES",
    ] {
        assert!(absent(unwanted), "CONFIG_{unwanted} is set");
    }
    let cmdline = std::fs::read_to_string(image.join("kernel-cmdline")).unwrap();
    assert!(
        cmdline
            .split_whitespace()
            .any(|w| w == "random.trust_cpu=on"),
        "{cmdline}"
    );
}

/// Waits until the VMs of `clients` have committed `target`, every VM of `net` up.
fn wait_heights(net: &mut VmNetwork, clients: &mut [RpcClient], target: u64) {
    let deadline = Instant::now() + LIMIT;
    let mut heights = vec![0u64; clients.len()];
    while heights.iter().any(|h| *h < target) {
        assert!(
            Instant::now() < deadline,
            "the VMs reached only {heights:?} within {LIMIT:?}; serial logs in {}",
            net.dir().display()
        );
        assert_eq!(
            net.live(),
            net.vm_count(),
            "a VM stopped; serial logs in {}",
            net.dir().display()
        );
        for (h, c) in heights.iter_mut().zip(clients.iter_mut()) {
            if let Some(now) = height(c) {
                *h = (*h).max(now);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Four VMs of an image built with `--app` run on the application it carries, which PID 1
/// started inside; the host's config.toml names one on the host, and every guest ignores it.
fn four_vms_run_their_images_application(app: &str) -> (VmNetwork, Vec<RpcClient>) {
    let image = vm_harness::vm::app_image_dir(app);
    let measurement = read_json(&image.join("measurement.json"));
    assert!(
        measurement["inputs"]["abci-app"]["sha256"].is_string(),
        "measurement.json names no application: {measurement}"
    );
    let mut net = VmNetwork::start(&image, VALIDATORS, 200).unwrap();
    let mut clients = net.clients();
    wait_heights(&mut net, &mut clients, 3);
    for i in 0..VALIDATORS {
        let log = net.serial_log(i);
        assert!(
            log.contains("started the image's ABCI application"),
            "VM {i} did not start its image's application; serial logs in {}",
            net.dir().display()
        );
        assert!(
            log.contains(&format!(
                "proxy_app {:?} of the host's config.toml ignored",
                net.hosts_proxy_app()
            )),
            "VM {i} did not ignore the host's proxy_app; serial logs in {}",
            net.dir().display()
        );
    }
    (net, clients)
}

/// No guest connected to the host's decoy application, and every VM powers off cleanly.
fn no_decoy_use_and_a_clean_power_off(mut net: VmNetwork) {
    assert_eq!(
        net.decoy_app_connections(),
        0,
        "a guest used the host's application"
    );
    assert_eq!(
        net.stop(),
        VALIDATORS,
        "serial logs in {}",
        net.dir().display()
    );
    net.clean_up();
}

#[test]
#[ignore = "needs the simulated images built with --app and QEMU: run through `cargo xtask test`"]
fn four_vms_run_the_abci_applications_their_images_carry() {
    // The conformance application over a Unix socket inside each guest: a transaction commits
    // and is queried, and no application finds a deviation (one would exit and power its VM
    // off; `wait_heights` demands all four up).
    let (mut net, mut clients) = four_vms_run_their_images_application("abci-conformance");
    let committed = clients[0]
        .call(
            "broadcast_tx_commit",
            serde_json::json!({"tx": "bmFtZT1idWx3YXJr"}),
        )
        .unwrap();
    assert_eq!(committed["tx_result"]["code"], 0, "{committed}");
    let top = height(&mut clients[0]).unwrap();
    wait_heights(&mut net, &mut clients, (top + 3).max(6));
    let q = clients[1]
        .call("abci_query", serde_json::json!({"data": "6e616d65"}))
        .unwrap();
    assert_eq!(q["response"]["value"], "YnVsd2Fyaw==", "{q}");
    let info = clients[2].call("abci_info", Value::Null).unwrap();
    let data = info["response"]["data"].as_str().unwrap_or_default();
    assert!(data.starts_with("abci-conformance finalize="), "{info}");
    // It enables vote extensions from height 4, which the chain passed: it extended its
    // precommits and verified the others' extensions (each checked, or it would have exited).
    for call in ["extend=", "verify="] {
        let n = data.split(' ').find_map(|kv| kv.strip_prefix(call));
        assert!(n.is_some_and(|n| n != "0"), "no {call}: {data}");
    }
    eprintln!("vm test: four VMs on their image's abci-conformance: {data}");
    no_decoy_use_and_a_clean_power_off(net);
    // tendermint-abci's kvstore over TCP inside each guest (it answers blocks without tx
    // results, so no transaction is sent: that stops a CometBFT chain too).
    let (net, mut clients) = four_vms_run_their_images_application("tendermint-kvstore");
    let info = clients[0].call("abci_info", Value::Null).unwrap();
    assert_eq!(info["response"]["data"], "kvstore-rs", "{info}");
    eprintln!("vm test: four VMs on their image's tendermint-kvstore committed height 3");
    no_decoy_use_and_a_clean_power_off(net);
}

/// A `val=` transaction of the built-in kvstore (CometBFT's format), base64 for RPC.
fn val_tx(key: &[u8], power: u64) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    b64.encode(format!("val=ed25519!{}!{power}", b64.encode(key)))
}

#[test]
#[ignore = "needs the simulated image and QEMU: run through `cargo xtask test` (or `cargo xtask image --simulated` first)"]
fn a_full_node_vm_block_syncs_then_joins_the_set_and_a_validator_vm_leaves() {
    use base64::Engine as _;
    let image = image_dir(Flavour::Simulated);
    // Five VMs enrol; the genesis names four, admits attested full nodes and takes `val=`
    // updates for any key. VM 4 waits, enrolled, while the validators commit.
    let mut net = VmNetwork::start_with_full_nodes(
        &image,
        VALIDATORS,
        1,
        200,
        r#"{"validator_updates": "any-key"}"#,
    )
    .unwrap();
    let full = VALIDATORS;
    let mut clients = net.clients();
    wait_heights(&mut net, &mut clients[..full], 6);
    let genesis: Genesis<Value> = serde_json::from_value(read_json(&net.genesis)).unwrap();
    assert_eq!(genesis.validators.len(), VALIDATORS);
    // The full node starts late: it catches up by block sync and serves RPC; every commit
    // it serves verifies from the genesis.
    net.launch_full_node(full).unwrap();
    let launched = Instant::now();
    let top = height(&mut clients[0]).unwrap();
    wait_heights(&mut net, &mut clients, top + 2);
    eprintln!(
        "vm test: the full node VM block-synced to height {} in {:.1} s",
        top + 2,
        launched.elapsed().as_secs_f64()
    );
    commits::verify_stored_commits(&genesis, &mut clients[full], top + 2).unwrap();
    let status = clients[full].call("status", Value::Null).unwrap();
    let info = &status["validator_info"];
    assert_eq!(info["voting_power"], "0", "{status}");
    let full_address = info["address"].as_str().unwrap().to_string();
    let full_key = base64::engine::general_purpose::STANDARD
        .decode(info["pub_key"]["value"].as_str().unwrap())
        .unwrap();
    // Every validator admits it (the last dial may still be in its handshake).
    let deadline = Instant::now() + LIMIT;
    loop {
        let peers = clients[full].call("net_info", Value::Null).unwrap();
        if peers["n_peers"] == "4" {
            break;
        }
        assert!(Instant::now() < deadline, "{peers}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // It joins by its own key, and the genesis's last validator leaves, through `val=`
    // transactions sent to validator 0.
    let removed = genesis.validators[VALIDATORS - 1].clone();
    let removed_vm = (0..VALIDATORS)
        .find(|i| {
            let s = clients[*i].call("status", Value::Null).unwrap();
            s["validator_info"]["address"] == removed.address.to_string()
        })
        .unwrap();
    let via = (removed_vm + 1) % VALIDATORS;
    let mut at = Vec::new();
    for tx in [
        val_tx(&full_key, 10),
        val_tx(removed.pub_key.ed25519().unwrap().as_bytes(), 0),
    ] {
        let r = clients[via]
            .call("broadcast_tx_commit", serde_json::json!({ "tx": tx }))
            .unwrap();
        assert_eq!(r["tx_result"]["code"], 0, "{r}");
        at.push(r["height"].as_str().unwrap().parse::<u64>().unwrap());
    }
    let (join_at, removal_at) = (at[0], at[1]);
    // The joiner signs once its instance's claim commits (within 16 heights of joining).
    let mut top = removal_at + 2;
    loop {
        wait_heights(&mut net, &mut clients, top);
        let signers = commits::signers_at(&mut clients[via], top).unwrap();
        if signers.contains(&full_address) {
            assert!(
                !signers.contains(&removed.address.to_string()),
                "{signers:?}"
            );
            break;
        }
        assert!(
            top < join_at + 2 + 16,
            "the joiner did not sign by height {top} (joined at {join_at}); serial logs in {}",
            net.dir().display()
        );
        top += 1;
    }
    // It waited for its claim: no commit up to the claim's block holds its signature.
    let serial = net.vm_dir(full).join("serial.log");
    let log = std::fs::read_to_string(&serial).unwrap();
    assert!(
        log.contains("not signing until this instance's claim commits"),
        "{serial:?}"
    );
    let since: u64 = wait_in_log(
        &serial,
        "signing; this instance holds the key since height",
        LIMIT,
    )
    .and_then(|l| {
        l.split("since height ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
    .unwrap();
    assert!(since < top, "claimed at {since}, signs at {top}");
    for h in 1..=since {
        let signers = commits::signers_at(&mut clients[via], h).unwrap();
        assert!(
            !signers.contains(&full_address),
            "height {h} (claim at {since}): {signers:?}"
        );
    }
    for h in 1..=top {
        let set = commits::validators_at(&mut clients[via], h).unwrap();
        let has = |a: &str| set.iter().any(|v| v.address.to_string() == a);
        assert_eq!(has(&full_address), h >= join_at + 2, "height {h}: {set:?}");
        let removed_in = has(&removed.address.to_string());
        assert_eq!(removed_in, h <= removal_at + 1, "height {h}: {set:?}");
    }
    // The light-client verifier follows both changes through the joiner's own RPC.
    commits::verify_stored_commits(&genesis, &mut clients[full], top).unwrap();
    // The removed validator's VM stays connected as a full node and follows the chain.
    let followed = height(&mut clients[removed_vm]).unwrap();
    assert!(
        followed + 3 >= top,
        "the removed VM at {followed}, top {top}"
    );
    eprintln!(
        "vm test: the full node VM joined at height {join_at}, its claim committed at {since}, it signs at {top}; VM {removed_vm} left at {removal_at} and follows at {followed}"
    );
    let clean = net.stop();
    assert_eq!(
        clean,
        VALIDATORS + 1,
        "serial logs in {}",
        net.dir().display()
    );
    net.clean_up();
}
