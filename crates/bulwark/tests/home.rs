//! `bulwark init` / `bulwark testnet` write homes that load back, in CometBFT's layout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark::home::{Home, HomeError};
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
    let homes: Vec<Home> = (0..4)
        .map(|i| Home::load(&dir.path().join(format!("node{i}"))).unwrap())
        .collect();
    for (i, h) in homes.iter().enumerate() {
        for f in [
            "config.toml",
            "genesis.json",
            "node_key.json",
            "priv_validator_key.json",
        ] {
            assert!(h.dir.join("config").join(f).is_file());
        }
        assert!(h.is_genesis_validator(), "node{i}");
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
    // Key files are CometBFT's format.
    let key: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(homes[0].dir.join("config/priv_validator_key.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(key["priv_key"]["type"], "tendermint/PrivKeyEd25519");
    assert_eq!(key["pub_key"]["type"], "tendermint/PubKeyEd25519");
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
    Home::load(&home).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for secret in ["priv_validator_key.json", "node_key.json"] {
        let mode = std::fs::metadata(home.join("config").join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{secret} is readable by others: {mode:o}");
    }

    let cfg = home.join("config/config.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace("timeout_propose_ms = 3000", "timeout_propose_ms = 0"),
    )
    .unwrap();
    assert!(matches!(Home::load(&home), Err(HomeError::Invalid { path, .. }) if path == cfg));
    std::fs::write(&cfg, "not toml [").unwrap();
    assert!(matches!(Home::load(&home), Err(HomeError::Invalid { path, .. }) if path == cfg));
    std::fs::write(&cfg, good).unwrap();

    let key = home.join("config/priv_validator_key.json");
    let k: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let mut mismatched = k.clone();
    mismatched["address"] = serde_json::Value::from("0000000000000000000000000000000000000000");
    std::fs::write(&key, mismatched.to_string()).unwrap();
    assert!(matches!(Home::load(&home), Err(HomeError::Invalid { path, .. }) if path == key));
    std::fs::remove_file(home.join("config/genesis.json")).unwrap();
    assert!(matches!(Home::load(&home), Err(HomeError::Io { .. })));
}
