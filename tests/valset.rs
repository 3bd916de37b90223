//! Validator-set updates on four real `bulwark` processes of a chain whose genesis opts in:
//! the built-in kvstore's `val=` transactions (CometBFT's format) remove a validator and
//! raise another's power; the change
//! takes effect two heights after the block that carried it, every commit before and after
//! verifies from genesis with the light-client verifier and each height's served set, the
//! removed validator's signature leaves the commits while its node follows the chain, and a
//! validator restarted after the change replays across it and signs again.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "shared/commits.rs"]
mod commits;

use base64::Engine as _;
use commits::{commit_at, genesis_of, validators_at, verify_stored_commits};
use harness::ports::testnet_block;
use harness::process::{
    bulwark_binary, rpc_addr, start, testnet_with_app_state, wait_for, Node, FAST_TIMEOUTS,
};
use harness::rpc::RpcClient;
use serde_json::json;
use std::time::Duration;

fn val_tx(key: &[u8], power: u64) -> String {
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    format!("val=ed25519!{key}!{power}")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn height_of(v: &serde_json::Value) -> u64 {
    v["height"].as_str().unwrap().parse().unwrap()
}

#[test]
fn val_transactions_change_the_set_two_heights_later_and_the_light_client_follows() {
    let dir = tempfile::tempdir().unwrap();
    let base = testnet_block(4).unwrap();
    // The kvstore takes validator updates only where the genesis says so.
    let opt_in = r#"{"validator_updates": "genesis-validators"}"#;
    let homes = testnet_with_app_state(
        &bulwark_binary().unwrap(),
        dir.path(),
        4,
        base,
        FAST_TIMEOUTS,
        opt_in,
    )
    .unwrap();
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h).unwrap()).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 2, Duration::from_secs(60)).unwrap();
    }
    let genesis = genesis_of(&homes[0]).unwrap();
    let key_of = |i: usize| -> Vec<u8> {
        let info = &genesis.validators[i];
        info.pub_key.ed25519().unwrap().as_bytes().to_vec()
    };
    // Node i's own key is genesis validator i? Find which node holds which key by `status`.
    let mut rpc: Vec<RpcClient> = (0..4).map(|i| RpcClient::new(&rpc_addr(base, i))).collect();
    let node_of = |rpc: &mut Vec<RpcClient>, address: &str| -> usize {
        (0..4)
            .find(|i| {
                rpc[*i].call("status", json!({})).unwrap()["validator_info"]["address"] == address
            })
            .unwrap()
    };
    let removed = genesis.validators[3].address.to_string();
    let raised = genesis.validators[0].address.to_string();
    let removed_node = node_of(&mut rpc, &removed);
    let raised_node = node_of(&mut rpc, &raised);

    // A removal of a key that is no validator, and a key nobody enrolled: refused at CheckTx.
    for tx in [val_tx(&[7; 32], 0), val_tx(&[7; 32], 100)] {
        let refused = rpc[0]
            .call("broadcast_tx_sync", json!({"tx": b64(&tx)}))
            .unwrap();
        assert_eq!(refused["code"], 4, "{refused}");
    }
    // The removal and the raise, each committed (through another node than the removed one).
    let via = (removed_node + 1) % 4;
    let mut change_heights = Vec::new();
    for tx in [val_tx(&key_of(3), 0), val_tx(&key_of(0), 30)] {
        let r = rpc[via]
            .call("broadcast_tx_commit", json!({"tx": b64(&tx)}))
            .unwrap();
        assert_eq!(r["tx_result"]["code"], 0, "{r}");
        change_heights.push(height_of(&r));
    }
    let (removal_at, raise_at) = (change_heights[0], change_heights[1]);
    let top = raise_at + 6;
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, top, Duration::from_secs(120)).unwrap();
    }
    let client = &mut rpc[via];
    // Each height's set, as served: the change two heights after its block.
    for h in 1..=top {
        let set = validators_at(client, h).unwrap();
        let has_removed = set.iter().any(|v| v.address.to_string() == removed);
        assert_eq!(has_removed, h <= removal_at + 1, "height {h}: {set:?}");
        let power = set
            .iter()
            .find(|v| v.address.to_string() == raised)
            .map(|v| v.power())
            .unwrap();
        assert_eq!(power, if h <= raise_at + 1 { 10 } else { 30 }, "height {h}");
        // Each commit carries one signature slot per validator of its height.
        let signed = commit_at(client, h).unwrap();
        assert_eq!(signed.commit.signatures.len(), set.len(), "height {h}");
    }
    // The light-client verifier follows every height from genesis across both changes.
    let headers = verify_stored_commits(&genesis, client, top).unwrap();
    assert_ne!(
        headers[removal_at as usize].header.next_validators_hash,
        headers[removal_at as usize].header.validators_hash,
        "block {} names the changed set as the next-but-one's",
        removal_at + 1
    );
    // The removed validator's node follows the chain without signing.
    let latest = |rpc: &mut RpcClient| -> u64 {
        let status = rpc.call("status", json!({})).unwrap();
        status["sync_info"]["latest_block_height"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let followed = latest(&mut rpc[removed_node]);
    assert!(
        followed + 3 >= top,
        "the removed node follows: at {followed}, top {top}"
    );
    // A validator restarted now replays across the change and signs again.
    let restarted = (0..4)
        .find(|i| *i != removed_node && *i != raised_node)
        .unwrap();
    let address = rpc[restarted].call("status", json!({})).unwrap()["validator_info"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    nodes[restarted].stop_cleanly().unwrap();
    nodes[restarted] = start(&homes[restarted]).unwrap();
    let again = top + 12;
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, again, Duration::from_secs(120)).unwrap();
    }
    let signed = commit_at(&mut rpc[via], again).unwrap();
    let signers: Vec<String> = signed
        .commit
        .signatures
        .iter()
        .filter_map(|s| s.validator_address().map(|a| a.to_string()))
        .collect();
    assert!(
        signers.contains(&address),
        "the restarted validator signs again: {signers:?}"
    );
    assert!(!signers.contains(&removed), "{signers:?}");
    verify_stored_commits(&genesis, &mut rpc[restarted], again).unwrap();
    drop(nodes);
}
