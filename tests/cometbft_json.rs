//! CometBFT's exact JSON: a running `bulwark` validator's answer to every call that a real
//! CometBFT v0.38 node's answer was captured for (`tests/data/cometbft-rpc-v0.38/`), compared
//! key by key and type by type (`shared/cometbft_json.rs`). Stricter clients than
//! `tendermint-rpc` (Go's, JavaScript's) refuse a number where a string belongs, base64 where
//! hex belongs, `null` where an object belongs, or a missing key.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "shared/cometbft_json.rs"]
mod cometbft_json;

use cometbft_json::{differences, fixture};
use harness::ports::testnet_block;
use harness::process::{bulwark_binary, rpc_url, start, testnet, wait_for, FAST_TIMEOUTS};
use harness::rpc::RpcClient;
use serde_json::{json, Value};
use std::time::Duration;

/// Keys Bulwark adds to CometBFT's answers, on purpose.
const OURS_ONLY: &[&str] = &[
    // Whether this instance may sign (the instance rule), in `status`.
    ".bulwark_instance",
    // What each peer's verified attestation evidence says, in `net_info`.
    ".peers[0].attestation",
    ".peers[1].attestation",
    ".peers[2].attestation",
    // CometBFT writes a genesis's `app_state` when it has one; the captured genesis had none.
    ".genesis.app_state",
];

/// Paths whose `null` in CometBFT's answer stands for an empty value that ours has: its
/// kvstore gave no app hash in block results.
const VALUE_DEPENDENT: &[&str] = &[".app_hash"];

/// An object's keys, sorted.
fn sorted_keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Where `ours` differs from `theirs` in shape.
fn shape_differences(ours: &Value, theirs: &Value) -> Vec<String> {
    let mut found = Vec::new();
    differences(ours, theirs, "", OURS_ONLY, &mut found);
    found
}

#[test]
fn every_answer_has_cometbfts_exact_json_shape() {
    let dir = tempfile::tempdir().unwrap();
    let base = testnet_block(2).unwrap();
    let homes = testnet(
        &bulwark_binary().unwrap(),
        dir.path(),
        2,
        base,
        FAST_TIMEOUTS,
    )
    .unwrap();
    let mut nodes: Vec<_> = homes.iter().map(|h| start(h).unwrap()).collect();
    let addr = rpc_url(base, 0).trim_start_matches("http://").to_string();
    let mut client = RpcClient::new(&addr);
    let mut post = |method: &str, params: Value| {
        client
            .call(method, params.clone())
            .unwrap_or_else(|e| panic!("{method} {params}: {e}"))
    };
    {
        let mut all: Vec<_> = nodes.iter_mut().collect();
        wait_for(&mut all, 1, Duration::from_secs(60)).unwrap();
    }
    // base64 of the transactions, as CometBFT takes them in JSON.
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let mut answers: Vec<(&str, Value)> = vec![(
        "broadcast_tx_async",
        post("broadcast_tx_async", json!({"tx": b64("async=1")})),
    )];
    answers.push((
        "broadcast_tx_sync",
        post("broadcast_tx_sync", json!({"tx": b64("sync=2")})),
    ));
    answers.push((
        "broadcast_tx_commit",
        post("broadcast_tx_commit", json!({"tx": b64("commit=3")})),
    ));
    {
        let mut all: Vec<_> = nodes.iter_mut().collect();
        wait_for(&mut all, 11, Duration::from_secs(120)).unwrap();
    }
    // Height 10 of the fixtures holds no transaction: compare with a height of ours that
    // holds none either (nil lists are `null` in CometBFT's JSON).
    let empty = (5..=10u64)
        .rev()
        .find(|h| {
            let b = post("block", json!({"height": h.to_string()}));
            b["block"]["data"]["txs"]
                .as_array()
                .is_none_or(|t| t.is_empty())
        })
        .expect("a height without transactions");
    for (name, method, params) in [
        ("status", "status", json!({})),
        ("net_info", "net_info", json!({})),
        ("genesis", "genesis", json!({})),
        ("abci_info", "abci_info", json!({})),
        (
            "abci_query_with_existing_key",
            "abci_query",
            json!({"data": hex::encode("commit")}),
        ),
        (
            "abci_query_with_non_existent_key",
            "abci_query",
            json!({"data": hex::encode("nobody")}),
        ),
        ("block_at_height_1", "block", json!({"height": "1"})),
        (
            "block_at_height_10",
            "block",
            json!({"height": empty.to_string()}),
        ),
        (
            "block_results_at_height_10",
            "block_results",
            json!({"height": empty.to_string()}),
        ),
        (
            "commit_at_height_10",
            "commit",
            json!({"height": empty.to_string()}),
        ),
        (
            "blockchain_from_1_to_10",
            "blockchain",
            json!({"minHeight": "1", "maxHeight": "10"}),
        ),
        (
            "consensus_params",
            "consensus_params",
            json!({"height": empty.to_string()}),
        ),
        ("consensus_state", "consensus_state", json!({})),
        (
            "block_search",
            "block_search",
            json!({"query": "block.height >= 2 AND block.height <= 10"}),
        ),
    ] {
        answers.push((name, post(method, params)));
    }
    // By hash: the fixture's block is at height 10 and empty; ours too, found by its hash
    // (base64, as tendermint-rpc and Go send `[]byte`).
    let by_height = post("block", json!({"height": empty.to_string()}));
    let hash = by_height["block_id"]["hash"]
        .as_str()
        .expect("a hash")
        .to_string();
    let b64_hash = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(hex::decode(&hash).unwrap())
    };
    let by_hash = post("block_by_hash", json!({"hash": b64_hash}));
    assert_eq!(
        by_hash, by_height,
        "block_by_hash differs from block at the same height"
    );
    answers.push(("block_by_hash", by_hash));
    // `header` and `header_by_hash` (hex): the header of `block`, the fixture's block header.
    let header = post("header", json!({"height": empty.to_string()}));
    assert_eq!(header["header"], by_height["block"]["header"], "{header}");
    let header_by_hash = post("header_by_hash", json!({"hash": hash}));
    assert_eq!(header_by_hash, header, "{header_by_hash}");
    let unknown = post("header_by_hash", json!({"hash": "AB".repeat(32)}));
    assert_eq!(unknown, json!({"header": null}));
    let unknown = post("block_by_hash", json!({"hash": "AB".repeat(32)}));
    assert!(
        unknown["block"].is_null() && unknown["block_id"]["hash"] == "",
        "{unknown}"
    );
    let header_differences = shape_differences(
        &header["header"],
        &fixture("block_at_height_10")["block"]["header"],
    );
    assert!(
        header_differences.is_empty(),
        "header: {header_differences:?}"
    );
    // `tx`: the committed transaction by its hash, against an item of a captured `tx_search`
    // (the same shape as CometBFT's `tx`).
    let committed_hash = answers
        .iter()
        .find(|(name, _)| *name == "broadcast_tx_commit")
        .and_then(|(_, v)| v["hash"].as_str())
        .expect("broadcast_tx_commit's hash")
        .to_string();
    let tx = post("tx", json!({"hash": committed_hash}));
    assert_eq!(tx["tx"], b64("commit=3"), "{tx}");
    let tx_differences = shape_differences(&tx, &fixture("tx_search_no_prove")["txs"][0]);
    assert!(tx_differences.is_empty(), "tx: {tx_differences:?}");
    let search = json!({"query": format!("tx.hash = '{committed_hash}'")});
    let found = post("tx_search", search);
    assert_eq!(found["txs"][0], tx, "{found}");
    answers.push(("tx_search_no_prove", found));
    let proven = post(
        "tx_search",
        json!({"query": format!("tx.hash = '{committed_hash}'"), "prove": true}),
    );
    assert!(
        proven["txs"][0]["proof"]["root_hash"].is_string(),
        "{proven}"
    );
    answers.push(("tx_search_with_prove", proven));
    // `unconfirmed_txs` and `check_tx` (no capture: CometBFT's keys, written out).
    let unconfirmed = post("unconfirmed_txs", json!({"limit": "5"}));
    for key in ["n_txs", "total", "total_bytes"] {
        assert!(unconfirmed[key].is_string(), "{key}: {unconfirmed}");
    }
    assert!(unconfirmed["txs"].is_array(), "{unconfirmed}");
    let checked = post("check_tx", json!({"tx": b64("check=4")}));
    assert_eq!(
        sorted_keys(&checked),
        [
            "code",
            "codespace",
            "data",
            "events",
            "gas_used",
            "gas_wanted",
            "info",
            "log"
        ],
        "{checked}"
    );
    assert_eq!(checked["code"], 0, "{checked}");
    assert_eq!(
        post("check_tx", json!({"tx": b64("no equals sign")}))["code"],
        1
    );
    // No capture of `validators`: CometBFT's keys, written out (v0.38's `ValidatorSet` JSON).
    let validators = post("validators", json!({"height": empty.to_string()}));
    for v in validators["validators"].as_array().expect("a list") {
        assert_eq!(
            sorted_keys(v),
            ["address", "proposer_priority", "pub_key", "voting_power"],
            "{v}"
        );
        assert!(
            v["voting_power"].is_string() && v["proposer_priority"].is_string(),
            "{v}"
        );
    }
    for key in ["block_height", "count", "total"] {
        assert!(validators[key].is_string(), "{key}: {validators}");
    }
    let mut all = Vec::new();
    for (name, ours) in &answers {
        let mut theirs = fixture(name);
        for path in VALUE_DEPENDENT {
            let key = path.trim_start_matches('.');
            if theirs.get(key).is_some_and(Value::is_null) && ours.get(key).is_some() {
                theirs[key] = ours[key].clone();
            }
        }
        let mut found = Vec::new();
        differences(ours, &theirs, "", OURS_ONLY, &mut found);
        all.extend(found.into_iter().map(|d| format!("{name}{d}")));
    }
    drop(nodes);
    assert!(
        all.is_empty(),
        "{} differences:\n{}",
        all.len(),
        all.join("\n")
    );
}
