//! One byzantine validator of four, as a real process (`bulwark-byzantine`: the real driver,
//! sockets and stores with a `bulwark-adversary` behaviour between its engine and its peers),
//! cannot halt the three honest `bulwark` processes. Each behaviour is one the consensus/node
//! review used to halt or freeze a real network, run in turn, each in a network of its own:
//! precommits for random block ids (C1), blocks dated 9999-12-31 (C2), proposals for round
//! 2³¹−1 (C3), floods of signed proposals for future rounds after every other validator's
//! proposal (H1) and, as proposer, blocks above `block.max_bytes` (H2): the honest nodes keep
//! committing and never refuse an honest proposer's block, and under H2 no committed block
//! (RPC `block`) is larger than genesis's `consensus_params.block.max_bytes` (none of the
//! oversized ones the byzantine validator proposed, which its log shows it sent). A double
//! signer must be named by evidence committed in a block (H3). After every behaviour, every commit each honest
//! node stores for heights 1..=top, with that height's validator set (RPC `commit`,
//! `validators`), verifies from genesis with the light-client verifier (`shared/commits.rs`):
//! signatures of more than 2/3 of the set's power for that block, and the honest nodes agree
//! on every header.
//!
//! `BYZANTINE_BEHAVIOURS=proposal-flood,oversized-block` runs only those of the loop (to try
//! one behaviour, e.g. against a planted bug).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "shared/commits.rs"]
mod commits;

use bulwark_types::tendermint::block::signed_header::SignedHeader;
use harness::ports::testnet_block;
use harness::process::{fast_testnet, rpc_addr, start, wait_for, Node};
use harness::rpc::RpcClient;
use std::path::Path;
use std::time::{Duration, Instant};

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
    let started = Instant::now();
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
    let admitted = started.elapsed();
    {
        let mut all: Vec<&mut Node> = honest.iter_mut().collect();
        let from = all.iter_mut().map(|n| n.poll()).max().unwrap_or(0);
        if let Err(e) = wait_for(&mut all, from + HEIGHTS, Duration::from_secs(180)) {
            panic!(
                "{behaviour}: the honest nodes stopped: {e}\nbyzantine log:\n{}",
                byzantine.tail()
            );
        }
        eprintln!(
            "{behaviour}: admitted in {:.1} s, then heights {from}..{} in {:.1} s",
            admitted.as_secs_f64(),
            from + HEIGHTS,
            (started.elapsed() - admitted).as_secs_f64()
        );
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

/// Every honest node's stored commits for heights 1..=top (the lowest height they all
/// reported) verify from genesis with that height's validator set, and the nodes agree on
/// every header. Returns `top`.
fn every_stored_commit_verifies(
    behaviour: &str,
    dir: &Path,
    base: u16,
    honest: &mut [Node],
) -> u64 {
    let top = honest.iter_mut().map(|n| n.poll()).min().unwrap();
    let genesis = commits::genesis_of(&dir.join("node0")).unwrap();
    let mut first: Option<Vec<SignedHeader>> = None;
    for i in 0..honest.len() {
        let mut rpc = RpcClient::new(&rpc_addr(base, i));
        let headers = commits::verify_stored_commits(&genesis, &mut rpc, top)
            .unwrap_or_else(|e| panic!("{behaviour}: node {i}'s stored commits: {e:#}"));
        match &first {
            None => first = Some(headers),
            Some(theirs) => {
                for (a, b) in theirs.iter().zip(&headers) {
                    assert_eq!(
                        a.header.hash(),
                        b.header.hash(),
                        "{behaviour}: nodes 0 and {i} disagree at height {}",
                        a.header.height
                    );
                }
            }
        }
    }
    top
}

/// H2: no block committed up to `top` is larger than genesis's `block.max_bytes`, whoever
/// proposed it (the byzantine validator's original blocks may be, its oversized ones never),
/// and the attack was played: the byzantine validator sent proposals of part sets above
/// `block.max_bytes` (its log says what it sent).
fn no_oversized_block_was_committed(dir: &Path, base: u16, top: u64) {
    let genesis = commits::genesis_of(&dir.join("node0")).unwrap();
    let max = genesis.consensus_params.block.max_bytes;
    let max_parts = max.div_ceil(64 << 10);
    let address = byzantine_address(dir);
    let log = std::fs::read_to_string(dir.join("node3/bulwark.log")).unwrap();
    let oversized = log
        .lines()
        .filter_map(|l| l.split("bulwark-byzantine: sends proposal ").nth(1))
        .filter(|l| {
            l.split("parts=")
                .nth(1)
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > max_parts)
        })
        .count();
    assert!(
        oversized > 0,
        "oversized-block: the byzantine validator sent no proposal above {max_parts} parts"
    );
    let mut rpc = RpcClient::new(&rpc_addr(base, 0));
    for h in 1..=top {
        let (block, size) = commits::block_at(&mut rpc, h).unwrap();
        let by_byzantine = block.header.proposer_address.to_string().to_uppercase() == address;
        assert!(
            size as u64 <= max,
            "height {h}: a committed block of {size} bytes, above block.max_bytes {max} (proposed by the {} validator)",
            if by_byzantine { "byzantine" } else { "an honest" }
        );
    }
    eprintln!("oversized-block: {oversized} oversized proposals sent, none committed");
}

/// The behaviours of [`random_precommits_far_dated_blocks_huge_rounds_proposal_floods_and_oversized_blocks_halt_nothing`],
/// in the order they run.
const BEHAVIOURS: [&str; 5] = [
    "random-precommit",
    "max-time",
    "huge-round",
    "proposal-flood",
    "oversized-block",
];

#[test]
fn random_precommits_far_dated_blocks_huge_rounds_proposal_floods_and_oversized_blocks_halt_nothing(
) {
    let only = std::env::var("BYZANTINE_BEHAVIOURS").ok();
    for behaviour in BEHAVIOURS {
        if only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|b| b == behaviour))
        {
            continue;
        }
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let (mut honest, byzantine, base) = honest_progress(behaviour, dir.path());
        let dir = dir.path();
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
        let top = every_stored_commit_verifies(behaviour, dir, base, &mut honest);
        if behaviour == "oversized-block" {
            no_oversized_block_was_committed(dir, base, top);
        }
        drop(byzantine);
        for n in honest.iter_mut() {
            n.stop_cleanly().unwrap();
        }
        eprintln!(
            "{behaviour}: {top} heights verified in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn a_double_signing_process_is_named_by_evidence_in_a_committed_block() {
    let dir = tempfile::tempdir().unwrap();
    let (mut honest, _byzantine, base) = honest_progress("double-vote", dir.path());
    let dir = dir.path();
    let address = byzantine_address(dir);
    let mut rpc = RpcClient::new(&harness::process::rpc_addr(base, 0));
    let mut accused = Vec::new();
    // The evidence goes into a block some heights after an honest node sees both votes (a
    // loaded machine may see the first pair late): the chain is read until a block names the
    // signer, for at most a minute more.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut top = 0;
    while accused.is_empty() && Instant::now() < deadline {
        let now = honest[0].poll();
        for h in top + 1..=now {
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
        top = now;
        std::thread::sleep(Duration::from_millis(100));
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
    every_stored_commit_verifies("double-vote", dir, base, &mut honest);
    for n in honest.iter_mut() {
        n.stop_cleanly().unwrap();
    }
}
