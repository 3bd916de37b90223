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

/// Heights the honest nodes must commit with the byzantine one running.
const HEIGHTS: u64 = 12;

/// Starts a 4-validator network whose validator 3 plays `behaviour`; once every honest node
/// admitted it, the three honest nodes must commit [`HEIGHTS`] more. Returns the honest nodes,
/// the byzantine one and the network's first port.
fn honest_progress(behaviour: &str, dir: &Path) -> (Vec<Node>, Node, u16) {
    let base = testnet_block(4).unwrap();
    let homes = fast_testnet(dir, base).unwrap();
    let mut honest: Vec<Node> = homes[..3].iter().map(|h| start(h).unwrap()).collect();
    let byzantine = Node::start_byzantine(behaviour, &homes[3]).unwrap();
    let address = byzantine_address(dir);
    for (i, n) in honest.iter().enumerate() {
        let admitted =
            n.wait_for_peer_log(&format!("validator={address}"), Duration::from_secs(120));
        if let Err(e) = admitted {
            panic!(
                "{behaviour}: node {i} never admitted the byzantine validator: {e}
byzantine log:
{}",
                byzantine.tail()
            );
        }
    }
    {
        let mut all: Vec<&mut Node> = honest.iter_mut().collect();
        let from = all.iter_mut().map(|n| n.poll()).max().unwrap_or(0);
        if let Err(e) = wait_for(&mut all, from + HEIGHTS, Duration::from_secs(180)) {
            panic!(
                "{behaviour}: the honest nodes stopped: {e}\nbyzantine log:\n{}",
                byzantine.tail()
            );
        }
    }
    (honest, byzantine, base)
}

/// The byzantine validator's address (node 3's, as genesis lists it), upper-case hex.
fn byzantine_address(dir: &Path) -> String {
    let genesis: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("node3/config/genesis.json")).unwrap())
            .unwrap();
    genesis["validators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "node3")
        .expect("genesis names node3")["address"]
        .as_str()
        .unwrap()
        .to_uppercase()
}

#[test]
fn random_precommits_far_dated_blocks_and_huge_rounds_from_one_process_halt_nothing() {
    for behaviour in ["random-precommit", "max-time", "huge-round"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut honest, byzantine, _) = honest_progress(behaviour, dir.path());
        let dir = dir.path();
        let _ = byzantine;
        let address = byzantine_address(dir);
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
