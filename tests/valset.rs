//! Validator-set updates on real `bulwark` processes of chains whose genesis opts in: the
//! built-in kvstore's `val=` transactions (CometBFT's format) change the set.
//!
//! - Four validators, full nodes refused: one is removed and another raised. The change takes
//!   effect two heights after the block that carried it, every commit before and after
//!   verifies from genesis with the light-client verifier and each height's served set, the
//!   removed validator's signature leaves the commits and the others disconnect it (their
//!   attested TLS refuses it from then on), and a validator restarted after the change
//!   replays across it and signs again.
//! - Four validators and a full node, attested full nodes admitted: the full node starts late,
//!   block-syncs and serves RPC (the light-client verifier follows the chain through it); it
//!   joins the set by its own key and signs; a removed validator stays connected as a full
//!   node and follows the chain, and, its chain wiped, block-syncs from genesis across both
//!   changes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "shared/commits.rs"]
mod commits;

use base64::Engine as _;
use commits::{commit_at, genesis_of, validators_at, verify_stored_commits};

fn signers_at(rpc: &mut RpcClient, height: u64) -> Vec<String> {
    commits::signers_at(rpc, height).unwrap()
}
use harness::ports::testnet_block;
use harness::process::{
    bulwark_binary, rpc_addr, start, testnet_with_app_state, testnet_with_args, wait_for, Node,
    FAST_TIMEOUTS,
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

fn latest(rpc: &mut RpcClient) -> u64 {
    let status = rpc.call("status", json!({})).unwrap();
    status["sync_info"]["latest_block_height"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for_all_but(nodes: &mut [Node], except: usize, height: u64) {
    let mut others: Vec<&mut Node> = nodes
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| *i != except)
        .map(|(_, n)| n)
        .collect();
    wait_for(&mut others, height, Duration::from_secs(120)).unwrap();
}

/// `tendermint-light-client` (its production builder, HTTP I/O and bisection) against a
/// node's RPC, trusting block 1 by `trusted` hash: the height it verified, at least `target`.
fn light_client_sync(rpc: &str, trusted: bulwark_types::tendermint::Hash, target: u64) -> u64 {
    use tendermint_light_client::builder::LightClientBuilder;
    use tendermint_light_client::store::memory::MemoryStore;
    use tendermint_light_client::verifier::options::Options;
    use tendermint_light_client::verifier::types::TrustThreshold;
    let client = tendermint_rpc::HttpClient::new(format!("http://{rpc}").as_str()).unwrap();
    let peer = "0000000000000000000000000000000000000000".parse().unwrap();
    let options = Options {
        trust_threshold: TrustThreshold::ONE_THIRD,
        trusting_period: Duration::from_secs(3600),
        clock_drift: Duration::from_secs(5),
    };
    let mut instance = LightClientBuilder::prod(
        peer,
        client,
        Box::new(MemoryStore::new()),
        options,
        Some(Duration::from_secs(10)),
    )
    .trust_primary_at(1u32.into(), trusted)
    .unwrap()
    .build();
    let block = instance
        .light_client
        .verify_to_target(target.try_into().unwrap(), &mut instance.state)
        .unwrap();
    block.height().value()
}

/// Four validators and a full node (`node4`) whose genesis says `attest_full_nodes: attest`
/// and takes `val=` updates for any key: the directory, the first port, the homes.
fn full_node_testnet(attest: &str) -> (tempfile::TempDir, u16, Vec<std::path::PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let base = testnet_block(5).unwrap();
    let args = [
        "--validators",
        "4",
        "--full-nodes",
        "1",
        "--attest-full-nodes",
        attest,
        "--app-state",
        r#"{"validator_updates": "any-key"}"#,
    ];
    let bin = bulwark_binary().unwrap();
    let homes = testnet_with_args(&bin, dir.path(), 5, base, FAST_TIMEOUTS, &args).unwrap();
    (dir, base, homes)
}

/// A node's own address, public key and voting power, as its `status` reports them.
fn own_identity(rpc: &mut RpcClient) -> (String, Vec<u8>, String) {
    let status = rpc.call("status", json!({})).unwrap();
    let info = &status["validator_info"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_else(|| panic!("{status}")).to_string();
    let key = base64::engine::general_purpose::STANDARD
        .decode(text(&info["pub_key"]["value"]))
        .unwrap();
    (text(&info["address"]), key, text(&info["voting_power"]))
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
    wait_for_all_but(&mut nodes, removed_node, top);
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
    // The others disconnect the removed validator: no full nodes here, and their attested
    // TLS refuses it from then on.
    for i in (0..4).filter(|i| *i != removed_node) {
        wait_until(Duration::from_secs(30), || {
            rpc[i].call("net_info", json!({})).unwrap()["n_peers"] == "2"
        });
    }
    let refusals = (0..4)
        .filter(|i| *i != removed_node)
        .filter(|i| {
            nodes[*i]
                .wait_for_peer_log("not_a_validator", Duration::from_secs(30))
                .is_ok()
        })
        .count();
    assert!(
        refusals > 0,
        "no node refused the removed validator's handshakes"
    );
    let stalled = latest(&mut rpc[removed_node]);
    assert!(
        stalled <= removal_at + 2,
        "the removed node is cut off after its last height {}: at {stalled}",
        removal_at + 1
    );
    // A validator restarted now replays across the change and signs again.
    let restarted = (0..4)
        .find(|i| *i != removed_node && *i != raised_node)
        .unwrap();
    let (address, _, _) = own_identity(&mut rpc[restarted]);
    nodes[restarted].stop_cleanly().unwrap();
    nodes[restarted] = start(&homes[restarted]).unwrap();
    let again = top + 30;
    wait_for_all_but(&mut nodes, removed_node, again);
    // The other two hold more than two thirds, so a commit may form before its precommit
    // arrives: it signs again if some commit of the last 20 heights carries its signature.
    let signed_by_it = (again - 20..=again)
        .filter(|h| signers_at(&mut rpc[via], *h).contains(&address))
        .count();
    assert!(
        signed_by_it > 0,
        "the restarted validator signs again\n{}",
        std::fs::read_to_string(homes[restarted].join("bulwark.log")).unwrap_or_default()
    );
    let signers = signers_at(&mut rpc[via], again);
    assert!(!signers.contains(&removed), "{signers:?}");
    verify_stored_commits(&genesis, &mut rpc[restarted], again).unwrap();
    drop(nodes);
}

#[test]
fn a_full_node_syncs_serves_rpc_and_joins_the_set_and_a_removed_validator_stays_as_a_full_node() {
    let (_dir, base, homes) = full_node_testnet("true");
    let genesis = genesis_of(&homes[0]).unwrap();
    assert_eq!(
        genesis.validators.len(),
        4,
        "the full node is not in the genesis"
    );
    let mut nodes: Vec<Node> = homes[..4].iter().map(|h| start(h).unwrap()).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 6, Duration::from_secs(60)).unwrap();
    }
    // The full node starts late: it catches up by block sync and serves RPC.
    nodes.push(start(&homes[4]).unwrap());
    wait_for(&mut [&mut nodes[4]], 6, Duration::from_secs(60)).unwrap();
    let mut rpc: Vec<RpcClient> = (0..5).map(|i| RpcClient::new(&rpc_addr(base, i))).collect();
    let (full_address, full_key, power) = own_identity(&mut rpc[4]);
    assert_eq!(power, "0");
    verify_stored_commits(&genesis, &mut rpc[4], 6).unwrap();
    assert_eq!(rpc[4].call("net_info", json!({})).unwrap()["n_peers"], "4");

    // It joins by its own key; a genesis validator leaves.
    let removed = genesis.validators[3].address.to_string();
    let removed_node = (0..4)
        .find(|i| {
            rpc[*i].call("status", json!({})).unwrap()["validator_info"]["address"] == removed
        })
        .unwrap();
    let via = (removed_node + 1) % 4;
    let mut at = Vec::new();
    for tx in [
        val_tx(&full_key, 10),
        val_tx(
            genesis.validators[3].pub_key.ed25519().unwrap().as_bytes(),
            0,
        ),
    ] {
        let r = rpc[via]
            .call("broadcast_tx_commit", json!({"tx": b64(&tx)}))
            .unwrap();
        assert_eq!(r["tx_result"]["code"], 0, "{r}");
        at.push(height_of(&r));
    }
    let (join_at, removal_at) = (at[0], at[1]);
    // The joiner signs once its instance's claim commits: within 16 heights of joining
    // (SIGN_AGAIN_HEIGHTS), the block commits of the heights after it show it.
    let mut top = removal_at + 2;
    loop {
        {
            let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
            wait_for(&mut all, top, Duration::from_secs(120)).unwrap();
        }
        if signers_at(&mut rpc[via], top).contains(&full_address) {
            break;
        }
        if top >= join_at + 2 + 16 {
            // What the joiner saw, so that a failure under a loaded CI machine says why.
            let status = rpc[4].call("status", json!({})).unwrap_or_default();
            panic!(
                "the joiner did not sign by height {top} (joined at {join_at}, removal at \
                 {removal_at}); its status: {}\nits last log lines:\n{}",
                status["sync_info"],
                nodes[4].tail()
            );
        }
        top += 1;
    }
    for h in 1..=top {
        let set = validators_at(&mut rpc[via], h).unwrap();
        let has = |a: &str| set.iter().any(|v| v.address.to_string() == a);
        assert_eq!(has(&full_address), h >= join_at + 2, "height {h}: {set:?}");
        assert_eq!(has(&removed), h <= removal_at + 1, "height {h}: {set:?}");
    }
    let signers = signers_at(&mut rpc[via], top);
    assert!(
        signers.contains(&full_address),
        "the joiner signs: {signers:?}"
    );
    assert!(!signers.contains(&removed), "{signers:?}");
    // The light-client verifier follows the chain across both changes, through the node
    // that was a full node and is a validator now.
    verify_stored_commits(&genesis, &mut rpc[4], top).unwrap();
    // So does `tendermint-light-client` itself, through the same node's RPC: trusting block 1
    // (its hash from another node), it verifies the latest height by bisection.
    let trusted = commit_at(&mut rpc[via], 1).unwrap().header.hash();
    let reached = light_client_sync(&rpc_addr(base, 4), trusted, top);
    assert!(reached >= top, "the light client reached {reached}");
    // The removed validator stays connected as a full node and follows.
    let followed = latest(&mut rpc[removed_node]);
    assert!(
        followed + 3 >= top,
        "the removed node follows: at {followed}, top {top}"
    );
    assert_eq!(
        rpc[removed_node].call("net_info", json!({})).unwrap()["n_peers"],
        "4"
    );
    // Block sync across both changes: the removed node, its chain wiped, catches up from
    // genesis, checking each block's commit with the set of its height.
    nodes[removed_node].stop_cleanly().unwrap();
    std::fs::remove_dir_all(homes[removed_node].join("data")).unwrap();
    std::fs::create_dir_all(homes[removed_node].join("data")).unwrap();
    nodes[removed_node] = start(&homes[removed_node]).unwrap();
    let synced = top + 4;
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, synced, Duration::from_secs(120)).unwrap();
    }
    verify_stored_commits(&genesis, &mut rpc[removed_node], synced).unwrap();
    drop(nodes);
}

#[test]
fn an_unattested_full_node_follows_and_serves_rpc_but_nothing_it_signs_counts() {
    let (_dir, base, homes) = full_node_testnet("false");
    let bin = bulwark_binary().unwrap();
    let genesis = genesis_of(&homes[0]).unwrap();
    let mut nodes: Vec<Node> = homes[..4].iter().map(|h| start(h).unwrap()).collect();
    // The full node runs without evidence: plaintext keys made at its first start.
    let mut command = std::process::Command::new(&bin);
    command
        .args(["start", "--unattested", "--home"])
        .arg(&homes[4]);
    nodes.push(Node::spawn(command, &homes[4]).unwrap());
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 6, Duration::from_secs(60)).unwrap();
    }
    let mut rpc: Vec<RpcClient> = (0..5).map(|i| RpcClient::new(&rpc_addr(base, i))).collect();
    verify_stored_commits(&genesis, &mut rpc[4], 6).unwrap();
    // The validators show it with no attestation.
    let peers = rpc[0].call("net_info", json!({})).unwrap()["peers"].clone();
    let unattested = peers
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["attestation"].is_null())
        .count();
    assert_eq!(unattested, 1, "{peers}");
    // An RPC client makes its key a validator (10 of 50): it claims its key and signs, but a
    // vote or block from a peer without evidence never enters the network, so no commit
    // carries its signature and the others go on without it.
    let (address, key, _) = own_identity(&mut rpc[4]);
    let r = rpc[0]
        .call("broadcast_tx_commit", json!({"tx": b64(&val_tx(&key, 10))}))
        .unwrap();
    assert_eq!(r["tx_result"]["code"], 0, "{r}");
    let joined = height_of(&r) + 2;
    let top = joined + 20;
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, top, Duration::from_secs(120)).unwrap();
    }
    let set = validators_at(&mut rpc[0], top).unwrap();
    assert!(set.iter().any(|v| v.address.to_string() == address));
    for h in joined..=top {
        let signers = signers_at(&mut rpc[0], h);
        assert!(!signers.contains(&address), "height {h}: {signers:?}");
    }
    let log = std::fs::read_to_string(homes[4].join("bulwark.log")).unwrap();
    assert!(
        log.contains("signed vote"),
        "the unattested node never tried to sign; the test shows nothing"
    );
    verify_stored_commits(&genesis, &mut rpc[4], top).unwrap();
    drop(nodes);
}
