//! One byzantine validator of four, as a real process (`bulwark-byzantine`: the real driver,
//! sockets and stores with a `bulwark-adversary` behaviour between its engine and its peers),
//! cannot halt the three honest `bulwark` processes. Each behaviour is one the consensus/node
//! review used to halt or freeze a real network: precommits for random block ids (C1), blocks
//! dated 9999-12-31 (C2), proposals for round 2³¹−1 (C3); and a double signer must be named by
//! evidence committed in a block (H3).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use harness::ports::testnet_block;
use harness::process::{fast_testnet, start, wait_for, Node};
use harness::rpc::RpcClient;
use std::path::Path;
use std::time::Duration;

/// The byzantine binary has a measurement of its own (SHA-384 of the executable under the
/// simulated PSP), which attestation rightly refuses: every genesis admits it too, as a
/// network would whose published image were compromised. Without this the byzantine process
/// is never connected and behaves as a silent one.
fn admit_byzantine_binary(homes: &[std::path::PathBuf]) {
    use sha2::Digest;
    let bin = harness::process::byzantine_binary().unwrap();
    let measurement = hex::encode(sha2::Sha384::digest(std::fs::read(bin).unwrap()));
    for home in homes {
        let path = home.join("config/genesis.json");
        let mut genesis: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        genesis["attestation"]["measurements"]["one_of"]
            .as_array_mut()
            .expect("the testnet's genesis lists its measurements")
            .push(measurement.clone().into());
        std::fs::write(&path, serde_json::to_vec_pretty(&genesis).unwrap()).unwrap();
    }
}

/// Heights the honest nodes must commit with the byzantine one running.
const HEIGHTS: u64 = 12;

/// Starts a 4-validator network whose validator 3 plays `behaviour`; the three honest nodes
/// must reach [`HEIGHTS`]. Returns the honest nodes and the byzantine validator's home.
fn honest_progress(behaviour: &str, dir: &Path) -> (Vec<Node>, Node, u16) {
    let base = testnet_block(4).unwrap();
    let homes = fast_testnet(dir, base).unwrap();
    admit_byzantine_binary(&homes);
    let mut honest: Vec<Node> = homes[..3].iter().map(|h| start(h).unwrap()).collect();
    let byzantine = Node::start_byzantine(behaviour, &homes[3]).unwrap();
    {
        let mut all: Vec<&mut Node> = honest.iter_mut().collect();
        if let Err(e) = wait_for(&mut all, HEIGHTS, Duration::from_secs(180)) {
            panic!(
                "{behaviour}: the honest nodes stopped: {e}\nbyzantine log:\n{}",
                byzantine.tail()
            );
        }
    }
    (honest, byzantine, base)
}

/// The byzantine validator's address (node 3's), upper-case hex.
fn byzantine_address(dir: &Path) -> String {
    let key: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("node3/config/priv_validator_key.json")).unwrap(),
    )
    .unwrap();
    key["address"].as_str().unwrap().to_uppercase()
}

#[test]
fn random_precommits_far_dated_blocks_and_huge_rounds_from_one_process_halt_nothing() {
    for behaviour in ["random-precommit", "max-time", "huge-round"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut honest, byzantine, _) = honest_progress(behaviour, dir.path());
        let dir = dir.path();
        let _ = byzantine;
        let address = byzantine_address(dir);
        assert!(
            honest[0]
                .peer_log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("peer attested") && l.to_uppercase().contains(&address)),
            "{behaviour}: node 0 never admitted the byzantine validator"
        );
        // Slowing the chain is not enough: an honest proposer's block is never refused.
        for i in 0..3 {
            let log = std::fs::read_to_string(dir.join(format!("node{i}/bulwark.log"))).unwrap();
            let refused: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("invalid proposed block") && !l.to_uppercase().contains(&address)
                })
                .collect();
            assert!(
                refused.is_empty(),
                "{behaviour}: node {i} refused honest proposers' blocks:\n{}",
                refused.join("\n")
            );
        }
        for n in honest.iter_mut() {
            n.stop_cleanly().unwrap();
        }
    }
}

#[test]
fn a_double_signing_process_is_named_by_evidence_in_a_committed_block() {
    let dir = tempfile::tempdir().unwrap();
    let (mut honest, _byzantine, base) = honest_progress("double-vote", dir.path());
    let dir = dir.path();
    let address = byzantine_address(dir);
    let mut rpc = RpcClient::new(&harness::process::rpc_addr(base, 0));
    let top = honest[0].poll();
    let mut accused = Vec::new();
    for h in 1..=top {
        let block = rpc
            .call("block", serde_json::json!({ "height": h.to_string() }))
            .unwrap();
        for e in block["block"]["evidence"]["evidence"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let who = e["value"]["vote_a"]["validator_address"]
                .as_str()
                .unwrap_or_default()
                .to_uppercase();
            accused.push((h, who));
        }
    }
    let log = std::fs::read_to_string(dir.join("node0/bulwark.log")).unwrap_or_default();
    assert!(
        !accused.is_empty(),
        "no block up to {top} carries evidence against the double signer; node 0 logged {} double signatures, block {top}: {}",
        log.matches("double-signed").count(),
        rpc.call("block", serde_json::json!({ "height": top.to_string() })).unwrap()["block"]["evidence"]
    );
    for (h, who) in &accused {
        assert_eq!(who, &address, "block {h} accuses another validator");
    }
    for n in honest.iter_mut() {
        n.stop_cleanly().unwrap();
    }
}
