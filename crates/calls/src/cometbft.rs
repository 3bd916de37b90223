//! Where `tendermint-rpc`'s response types serialize differently from a CometBFT v0.38 node,
//! the JSON is rewritten to CometBFT's: stricter clients (Go's, JavaScript's) refuse the
//! difference. `tests/cometbft_json.rs` compares every answer with a real node's.

use serde_json::{json, Map, Value};

/// An object's field, as a mutable object (none if absent or not an object).
fn object<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    v.get_mut(key).and_then(Value::as_object_mut)
}

/// CometBFT's block id of nothing (the first block's last block id), not `null`.
pub fn empty_block_id() -> Value {
    json!({"hash": "", "parts": {"hash": "", "total": 0}})
}

/// `null` becomes `empty` at `key` of `map`.
fn null_to(map: &mut Map<String, Value>, key: &str, empty: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), empty);
    }
}

/// An empty list becomes `null` at `key` of `map` (Go's nil slice), a missing key too.
fn empty_to_null(map: &mut Map<String, Value>, key: &str) {
    let empty = map
        .get(key)
        .is_none_or(|v| v.as_array().is_some_and(Vec::is_empty));
    if empty {
        map.insert(key.into(), Value::Null);
    }
}

/// A `block` (in `block`, `block_by_hash`): empty lists and the first block's missing last
/// block id and last commit are what CometBFT writes for them.
pub fn block(value: &mut Value) {
    let Some(block) = object(value, "block") else {
        return;
    };
    if let Some(data) = block.get_mut("data").and_then(Value::as_object_mut) {
        null_to(data, "txs", json!([]));
    }
    if let Some(evidence) = block.get_mut("evidence").and_then(Value::as_object_mut) {
        null_to(evidence, "evidence", json!([]));
    }
    if let Some(header) = block.get_mut("header").and_then(Value::as_object_mut) {
        null_to(header, "last_block_id", empty_block_id());
    }
    null_to(
        block,
        "last_commit",
        json!({"block_id": empty_block_id(), "height": "0", "round": 0, "signatures": []}),
    );
}

/// `status`'s `validator_info`: CometBFT's `voting_power`, no `name` or `power`.
pub fn validator_info(address: Value, pub_key: Value, power: u64) -> Value {
    json!({"address": address, "pub_key": pub_key, "voting_power": power.to_string()})
}

/// A validator in `validators` (its `proposer_priority` written by the caller, from the
/// set): CometBFT's `voting_power`, no `name`.
pub fn validator(v: &mut Value) {
    let Some(map) = v.as_object_mut() else {
        return;
    };
    if let Some(power) = map.remove("power") {
        map.insert("voting_power".into(), power);
    }
    map.remove("name");
}

/// `genesis`: the consensus parameters of v0.38 (`abci`, no `time_iota_ms`), no `app_state`
/// when there is none.
pub fn genesis(value: &mut Value) {
    let Some(genesis) = object(value, "genesis") else {
        return;
    };
    if genesis.get("app_state").is_some_and(Value::is_null) {
        genesis.remove("app_state");
    }
    if let Some(params) = genesis.get_mut("consensus_params") {
        genesis_params(params);
    }
}

/// Consensus parameters as v0.38 writes them: no `time_iota_ms`, an `abci` section.
fn genesis_params(params: &mut Value) {
    let Some(params) = params.as_object_mut() else {
        return;
    };
    if let Some(block) = params.get_mut("block").and_then(Value::as_object_mut) {
        block.remove("time_iota_ms");
    }
    null_to(params, "abci", json!({}));
    if let Some(abci) = params.get_mut("abci").and_then(Value::as_object_mut) {
        null_to(abci, "vote_extensions_enable_height", json!("0"));
    }
}

/// `abci_query`: CometBFT's `proofOps`, and `null` for an empty value.
pub fn abci_query(value: &mut Value) {
    let Some(response) = object(value, "response") else {
        return;
    };
    let proof = response.remove("proof").unwrap_or(Value::Null);
    response.insert("proofOps".into(), proof);
    if response.get("value").is_some_and(|v| v == "") {
        response.insert("value".into(), Value::Null);
    }
}

/// `block_results`: v0.38 has `finalize_block_events` and no begin/end-block events, Go's
/// empty lists are `null`, and the app hash is a `[]byte`: base64, not `tendermint-rpc`'s hex
/// (a Go client would decode the hex digits as base64, silently, into other bytes).
pub fn block_results(value: &mut Value) {
    use base64::Engine as _;
    let Some(map) = value.as_object_mut() else {
        return;
    };
    map.remove("begin_block_events");
    map.remove("end_block_events");
    if let Some(bytes) = map
        .get("app_hash")
        .and_then(Value::as_str)
        .and_then(|h| hex::decode(h).ok())
    {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        map.insert("app_hash".into(), Value::String(encoded));
    }
    for key in ["txs_results", "finalize_block_events", "validator_updates"] {
        empty_to_null(map, key);
    }
}

/// `abci_info`: the last block's app hash in base64, not a list of numbers.
pub fn abci_info(value: &mut Value) {
    use base64::Engine as _;
    let Some(response) = object(value, "response") else {
        return;
    };
    if let Some(Value::Array(numbers)) = response.get("last_block_app_hash") {
        let bytes: Vec<u8> = numbers
            .iter()
            .filter_map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect();
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        response.insert("last_block_app_hash".into(), Value::String(text));
    }
}

/// `header` and `header_by_hash`: the first block's header has an empty `last_block_id`.
pub fn header(value: &mut Value) {
    if let Some(header) = object(value, "header") {
        null_to(header, "last_block_id", empty_block_id());
    }
}

/// `blockchain`: each meta's header as in `header`.
pub fn blockchain(value: &mut Value) {
    if let Some(metas) = value.get_mut("block_metas").and_then(Value::as_array_mut) {
        for meta in metas {
            header(meta);
        }
    }
}

/// `consensus_params`: v0.38's parameters (as `genesis` writes them).
pub fn consensus_params(value: &mut Value) {
    if let Some(params) = value.get_mut("consensus_params") {
        genesis_params(params);
    }
}

/// `broadcast_tx_commit`'s `check_tx`: the fields v0.38 dropped are gone.
pub fn check_tx(value: &mut Value) {
    if let Some(check) = object(value, "check_tx") {
        for gone in ["mempool_error", "priority", "sender"] {
            check.remove(gone);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_block_gets_cometbfts_empty_objects_and_lists() {
        let mut v = json!({"block": {"data": {"txs": null}, "evidence": {"evidence": null}, "header": {"last_block_id": null}, "last_commit": null}});
        block(&mut v);
        assert_eq!(v["block"]["data"]["txs"], json!([]));
        assert_eq!(v["block"]["evidence"]["evidence"], json!([]));
        assert_eq!(v["block"]["header"]["last_block_id"], empty_block_id());
        assert_eq!(v["block"]["last_commit"]["height"], "0");
    }

    #[test]
    fn validators_say_voting_power() {
        let mut v = json!({"address": "A", "power": "10", "name": null, "pub_key": {}, "proposer_priority": "-5"});
        validator(&mut v);
        assert_eq!(
            v,
            json!({"address": "A", "voting_power": "10", "proposer_priority": "-5", "pub_key": {}})
        );
    }

    #[test]
    fn block_results_lists_empty_are_null_and_old_events_go() {
        let mut v = json!({"txs_results": [], "validator_updates": [], "begin_block_events": null, "end_block_events": null});
        block_results(&mut v);
        assert_eq!(
            v,
            json!({"txs_results": null, "validator_updates": null, "finalize_block_events": null})
        );
    }
}
