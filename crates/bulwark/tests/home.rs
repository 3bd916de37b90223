//! `bulwark init` / `bulwark testnet` write homes that load back, in CometBFT's layout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark::home::{Home, HomeError, PublicHome};
use std::process::Command;

fn bulwark(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn testnet_writes_four_homes_that_load_and_agree() {
    let dir = tempfile::tempdir().unwrap();
    let out = bulwark(&[
        "testnet",
        "--validators",
        "4",
        "--output",
        dir.path().to_str().unwrap(),
        "--base-port",
        "36656",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let homes: Vec<PublicHome> = (0..4)
        .map(|i| PublicHome::load(&dir.path().join(format!("node{i}"))).unwrap())
        .collect();
    for (i, h) in homes.iter().enumerate() {
        for f in [
            "config.toml",
            "genesis.json",
            "identity.sealed.json",
            "enrollment.json",
        ] {
            assert!(h.dir.join("config").join(f).is_file());
        }
        // No host-made key: the identity exists on disk only sealed.
        for f in ["node_key.json", "priv_validator_key.json"] {
            assert!(!h.dir.join("config").join(f).exists(), "{f}");
        }
        // The identity opens only in the binary that made it (the simulated measurement is
        // the binary's own), so ask the binary.
        let shown = show_validator(&h.dir);
        assert_eq!(shown["genesis_validator"], true, "node{i}");
        assert_eq!(
            h.genesis.validators[i]
                .pub_key
                .ed25519()
                .map(|k| hex::encode(k.as_bytes())),
            shown["consensus_key"].as_str().map(String::from)
        );
        assert_eq!(h.genesis.validators.len(), 4);
        assert_eq!(h.genesis.chain_id, homes[0].genesis.chain_id);
        assert_eq!(h.genesis.validators, homes[0].genesis.validators);
        // Node i dials the nodes before it: one connection per pair.
        assert_eq!(h.config.p2p.persistent_peers.len(), i);
        assert!(!h.config.p2p.persistent_peers.contains(&h.config.p2p.laddr));
    }
    let dialled: std::collections::HashSet<_> = homes
        .iter()
        .flat_map(|h| {
            h.config
                .p2p
                .persistent_peers
                .iter()
                .map(move |p| (h.config.p2p.laddr.min(*p), h.config.p2p.laddr.max(*p)))
        })
        .collect();
    assert_eq!(dialled.len(), 6, "every pair connected once");
    let mut ports: Vec<u16> = homes
        .iter()
        .flat_map(|h| [h.config.p2p.laddr.port(), h.config.rpc.laddr.port()])
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 8, "distinct ports");
    // Nothing in the home holds a private key in the clear: no 32-byte window of any file,
    // raw or hex-decoded, is a seed of the validator's key or its node key.
    let shown = show_validator(&homes[0].dir);
    let publics: Vec<[u8; 32]> = [
        shown["consensus_key"].as_str().unwrap(),
        std::fs::read_to_string(homes[0].dir.join("config/enrollment.json"))
            .map(|t| {
                serde_json::from_str::<serde_json::Value>(&t).unwrap()["node_key"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .unwrap()
            .as_str(),
    ]
    .iter()
    .map(|h| hex::decode(h).unwrap().try_into().unwrap())
    .collect();
    for entry in std::fs::read_dir(homes[0].dir.join("config")).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let mut candidates: Vec<[u8; 32]> =
            bytes.windows(32).map(|w| w.try_into().unwrap()).collect();
        candidates.extend(
            bytes
                .windows(64)
                .filter_map(|w| hex::decode(w).ok())
                .map(|d| <[u8; 32]>::try_from(d).unwrap()),
        );
        for seed in candidates {
            let public = ed25519_consensus::SigningKey::from(seed)
                .verification_key()
                .to_bytes();
            assert!(
                !publics.contains(&public),
                "{} holds a private key",
                path.display()
            );
        }
    }
}

fn show_validator(home: &std::path::Path) -> serde_json::Value {
    let out = bulwark(&["show-validator", "--home", home.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn init_refuses_to_overwrite_keys_and_bad_files_name_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    assert!(bulwark(&["init", "--home", home.to_str().unwrap()])
        .status
        .success());
    let again = bulwark(&["init", "--home", home.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    PublicHome::load(&home).unwrap();
    let cfg = home.join("config/config.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace("timeout_propose_ms = 3000", "timeout_propose_ms = 0"),
    )
    .unwrap();
    assert!(matches!(PublicHome::load(&home), Err(HomeError::Invalid { path, .. }) if path == cfg));
    std::fs::write(&cfg, "not toml [").unwrap();
    assert!(matches!(PublicHome::load(&home), Err(HomeError::Invalid { path, .. }) if path == cfg));
    // A metric namespace that would inject lines into the exposition text, and metrics on the
    // RPC port.
    for bad in [
        good.replace(
            "namespace = \"cometbft\"",
            "namespace = \"x 1\\nfake_metric 7\"",
        ),
        good.replace("prometheus = false", "prometheus = true")
            .replace(
                "prometheus_listen_addr = \":26660\"",
                "prometheus_listen_addr = \"127.0.0.1:26657\"",
            ),
        // CometBFT's psql indexer is not served.
        good.replace("indexer = \"kv\"", "indexer = \"psql\""),
    ] {
        assert_ne!(bad, good);
        std::fs::write(&cfg, &bad).unwrap();
        assert!(
            matches!(PublicHome::load(&home), Err(HomeError::Invalid { ref path, .. }) if *path == cfg),
            "{bad}"
        );
    }
    std::fs::write(&cfg, good.replace("indexer = \"kv\"", "indexer = \"null\"")).unwrap();
    assert_eq!(
        PublicHome::load(&home).unwrap().config.tx_index.indexer,
        bulwark_config::Indexer::Null
    );
    std::fs::write(&cfg, good).unwrap();

    std::fs::remove_file(home.join("config/genesis.json")).unwrap();
    assert!(matches!(PublicHome::load(&home), Err(HomeError::Io { .. })));
}

fn init_home(dir: &std::path::Path) -> std::path::PathBuf {
    let home = dir.join("h");
    let out = bulwark(&["init", "--home", home.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    home
}

fn genesis(home: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(home.join("config/genesis.json")).unwrap())
        .unwrap()
}

fn write_genesis(home: &std::path::Path, g: &serde_json::Value) {
    std::fs::write(
        home.join("config/genesis.json"),
        serde_json::to_string_pretty(g).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_forged_genesis_reusing_the_real_chain_id_stops_bulwark_start() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_home(dir.path());
    let real = genesis(&home);
    assert!(real["chain_id"]
        .as_str()
        .unwrap()
        .starts_with("bulwark-local-"));
    PublicHome::load(&home).unwrap();
    // The host widens the policy but keeps the real chain id.
    let mut forged = real.clone();
    forged["attestation"]["guest_policy"]["allow_debug"] = serde_json::json!(true);
    write_genesis(&home, &forged);
    assert!(matches!(
        PublicHome::load(&home),
        Err(HomeError::ChainId {
            source: bulwark_identity::ChainIdError::Mismatch { .. },
            ..
        })
    ));
    let out = bulwark(&["start", "--home", home.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not certify this genesis"), "{stderr}");
    // Re-certified, the forgery has another chain id: what the node signs there never
    // verifies on the real chain.
    bulwark_identity::certify("bulwark-local", &mut forged).unwrap();
    assert_ne!(forged["chain_id"], real["chain_id"]);
}

#[test]
fn a_plaintext_key_under_amd_trust_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_home(dir.path());
    let cfg = home.join("config");
    std::fs::remove_file(cfg.join("identity.sealed.json")).unwrap();
    std::fs::write(cfg.join("priv_validator_key.json"), "{}").unwrap();
    let mut g = genesis(&home);
    let measurements = g["attestation"]["measurements"].clone();
    let mut amd = serde_json::to_value(bulwark_attest::Policy::strict(
        bulwark_attest::Trust::Amd,
        bulwark_attest::Measurements::Any,
    ))
    .unwrap();
    amd["measurements"] = measurements;
    g["attestation"] = amd;
    bulwark_identity::certify("bulwark-local", &mut g).unwrap();
    write_genesis(&home, &g);
    let err = Home::load(&home).unwrap_err();
    assert!(matches!(err, HomeError::PlaintextKey(_)), "{err}");
    assert!(err.to_string().contains("the host can read it"), "{err}");
}

#[test]
fn a_sealed_identity_does_not_open_on_another_simulated_chip() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_home(dir.path());
    assert_eq!(show_validator(&home)["genesis_validator"], true);
    // Another binary (this test's own: another simulated measurement) cannot open it.
    assert!(matches!(
        Home::load(&home),
        Err(HomeError::Identity {
            source: bulwark_identity::IdentityError::Unseal,
            ..
        })
    ));
    // Nor can the same binary on another chip.
    std::fs::write(home.join("config/simulated_chip"), "11".repeat(32)).unwrap();
    let out = bulwark(&["show-validator", "--home", home.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not open here"));
}

/// `bulwark start` on `home` stops (exit 2) saying `reason` and that it refuses to run, before
/// it opened its stores.
fn refused_before_its_stores(home: &std::path::Path, reason: &str) {
    let (code, stderr) = start_briefly(home, std::time::Duration::from_secs(30))
        .expect("the node ran where it must refuse to");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(reason) && stderr.contains("refusing to run"),
        "{stderr}"
    );
    assert!(
        !home.join("data/store").exists(),
        "it opened its stores first"
    );
}

/// Binds the home's simulated launch to the genesis it holds (HOST_DATA = its SHA-256), as a
/// host launching it for that network would.
fn launch_for_its_genesis(home: &std::path::Path) {
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(
        std::fs::read(home.join("config/genesis.json")).unwrap(),
    ));
    std::fs::write(home.join("config/simulated_host_data"), sha).unwrap();
}

/// Runs `bulwark start` and returns its exit code and stderr, or `None` if it was still
/// running after `limit` (then it is killed).
fn start_briefly(home: &std::path::Path, limit: std::time::Duration) -> Option<(i32, String)> {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulwark"))
        .args(["start", "--home", home.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Some((status.code().unwrap_or(-1), stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_guest_launched_for_another_genesis_refuses_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let home = init_home(dir.path());
    // The launch's HOST_DATA names another network than the genesis the host put on the disk.
    std::fs::write(home.join("config/simulated_host_data"), "ab".repeat(32)).unwrap();
    refused_before_its_stores(&home, "host_data:");
    // Bound to the genesis it loads, the same node runs.
    launch_for_its_genesis(&home);
    assert!(start_briefly(&home, std::time::Duration::from_secs(3)).is_none());
}

#[test]
fn a_genesis_with_a_member_that_never_enrolled_stops_bulwark_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = bulwark(&[
        "testnet",
        "--validators",
        "2",
        "--output",
        dir.path().to_str().unwrap(),
        "--base-port",
        "37656",
    ]);
    assert!(out.status.success());
    let home = dir.path().join("node0");
    // The host swaps node1's key for one it made (no enrollment carries it), re-certifies the
    // chain id and launches node0 bound to that genesis: every local check but the
    // enrollments holds.
    let mut g = genesis(&home);
    let key = ed25519_consensus::SigningKey::from([9u8; 32]);
    let public =
        bulwark_types::tendermint::PublicKey::from_raw_ed25519(&key.verification_key().to_bytes())
            .unwrap();
    let mut info = bulwark_types::tendermint::validator::Info::new(public, 10u32.into());
    info.name = Some("node1".into());
    g["validators"][1] = serde_json::to_value(info).unwrap();
    bulwark_identity::certify("bulwark-testnet", &mut g).unwrap();
    write_genesis(&home, &g);
    launch_for_its_genesis(&home);
    refused_before_its_stores(&home, "enrollment: validator node1");
}
