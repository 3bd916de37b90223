//! The events a committed height publishes to subscribers, in CometBFT v0.38's JSON:
//! `NewBlock`, `NewBlockHeader`, `NewBlockEvents`, and one `Tx` per transaction, each with the
//! composite-key map a subscription's query is matched against (`tm.event`, the block's or
//! transaction's event attributes whether indexed or not, `tx.hash`, `tx.height`).
//!
//! Rendered from the block store, so a subscriber sees only what was committed, and what it
//! sees is what `block`, `block_results` and `tx` answer for the same height.

use crate::answer::{internal, load_block_from, load_results_from, store_error, to_value};
use crate::cometbft;
use bulwark_mempool::tx_hash;
use bulwark_node::chain::block_id;
use bulwark_query::{Query, EVENT_KEY};
use bulwark_store::blocks::BlockStore;
use bulwark_types::tendermint::abci::Event;
use bulwark_types::tendermint::block;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use tendermint_rpc::endpoint;
use tendermint_rpc::response_error::ResponseError;

/// One published event: its `data` (type and value), serialized once however many
/// subscriptions receive it, and the composite-key map queries match.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// `{"type": "tendermint/event/…", "value": …}`, as JSON text.
    pub data: String,
    /// Composite key to values.
    pub events: BTreeMap<String, Vec<String>>,
    /// `events` as JSON text.
    events_json: String,
}

impl Published {
    fn new(data: Value, events: BTreeMap<String, Vec<String>>) -> Published {
        Published {
            data: data.to_string(),
            events_json: serde_json::to_string(&events).unwrap_or_else(|_| "{}".into()),
            events,
        }
    }

    /// Whether `query` matches it.
    pub fn matches(&self, query: &Query) -> bool {
        let pairs: Vec<(&str, &str)> = self
            .events
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
            .collect();
        query.matches(&pairs)
    }

    /// The message a subscription with `id` and `query` receives, as JSON text.
    pub fn message(&self, id: &Value, query: &Query) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"query":{},"data":{},"events":{}}}}}"#,
            id,
            Value::String(query.to_string()),
            self.data,
            self.events_json,
        )
    }

    /// Bytes it holds, about.
    pub fn size(&self) -> usize {
        self.data.len() + 2 * self.events_json.len()
    }
}

/// Every attribute of `events` (indexed or not) under its composite key, as CometBFT's event
/// bus publishes them; events without a type are left out.
fn attributes(events: &[Event], into: &mut BTreeMap<String, Vec<String>>) {
    for event in events.iter().filter(|e| !e.kind.is_empty()) {
        for attribute in &event.attributes {
            let (Ok(key), Ok(value)) = (attribute.key_str(), attribute.value_str()) else {
                continue;
            };
            into.entry(format!("{}.{key}", event.kind))
                .or_default()
                .push(value.to_string());
        }
    }
}

/// CometBFT's event JSON leaves out a result's empty fields (Go's `omitempty`), except
/// `validator_updates`.
fn without_empty(value: Value) -> Value {
    let Value::Object(map) = value else {
        return value;
    };
    let kept: Map<String, Value> = map
        .into_iter()
        .filter(|(k, v)| {
            k == "validator_updates"
                || !(v.is_null()
                    || v == ""
                    || v == "0"
                    || v == 0
                    || v.as_array().is_some_and(Vec::is_empty))
        })
        .collect();
    Value::Object(kept)
}

fn kind(name: &str) -> (String, Vec<String>) {
    (EVENT_KEY.to_string(), vec![name.to_string()])
}

/// The events height `height` publishes, `NewBlock` first.
pub fn of_height(blocks: &BlockStore, height: u64) -> Result<Vec<Published>, ResponseError> {
    let block = load_block_from(blocks, height)?;
    let results = load_results_from(blocks, height)?;
    let (id, _) = block_id(&block).map_err(store_error)?;
    let txs = block.data.clone();
    let mut block_attributes = BTreeMap::new();
    attributes(&results.events, &mut block_attributes);
    let with_kind = |name: &str| {
        let mut events = block_attributes.clone();
        events.extend([kind(name)]);
        events
    };
    let mut rendered = to_value(&endpoint::block_results::Response {
        height: block::Height::try_from(height).map_err(store_error)?,
        txs_results: Some(results.tx_results.clone()),
        finalize_block_events: results.events.clone(),
        begin_block_events: None,
        end_block_events: None,
        validator_updates: results.validator_updates.clone(),
        consensus_param_updates: results.consensus_param_updates.clone(),
        app_hash: results.app_hash.clone(),
    })?;
    cometbft::block_results(&mut rendered);
    let tx_results: Vec<Value> = match rendered["txs_results"].take() {
        Value::Array(list) => list,
        _ => Vec::new(),
    };
    let finalize = without_empty(json!({
        "events": rendered["finalize_block_events"].take(),
        "tx_results": tx_results.clone(),
        // A Go slice without `omitempty`: `[]` when empty, never `null`.
        "validator_updates": match rendered["validator_updates"].take() {
            Value::Null => json!([]),
            updates => updates,
        },
        "consensus_param_updates": rendered["consensus_param_updates"].take(),
        "app_hash": rendered["app_hash"].take(),
    }));
    let mut new_block = to_value(&endpoint::block::Response {
        block_id: id,
        block: block.clone(),
    })?;
    cometbft::block(&mut new_block);
    new_block["result_finalize_block"] = finalize;
    let mut header = json!({"header": to_value(&block.header)?});
    cometbft::header(&mut header);
    let mut published = vec![
        Published::new(
            json!({"type": "tendermint/event/NewBlock", "value": new_block}),
            with_kind("NewBlock"),
        ),
        Published::new(
            json!({"type": "tendermint/event/NewBlockHeader", "value": header}),
            with_kind("NewBlockHeader"),
        ),
        Published::new(
            json!({"type": "tendermint/event/NewBlockEvents", "value": {
                "height": height.to_string(),
                "events": rendered["finalize_block_events"].clone(),
                "num_txs": txs.len().to_string(),
            }}),
            with_kind("NewBlockEvents"),
        ),
    ];
    for ((index, tx), (result, value)) in txs
        .iter()
        .enumerate()
        .zip(results.tx_results.iter().zip(tx_results))
    {
        let mut events = BTreeMap::from([
            kind("Tx"),
            ("tx.hash".to_string(), vec![hex::encode_upper(tx_hash(tx))]),
            ("tx.height".to_string(), vec![height.to_string()]),
        ]);
        attributes(&result.events, &mut events);
        let mut tx_result = json!({
            "height": height.to_string(),
            "tx": base64_of(tx),
            "result": without_empty(value),
        });
        // Go leaves out index 0 here.
        if index > 0 {
            tx_result["index"] = json!(index);
        }
        published.push(Published::new(
            json!({"type": "tendermint/event/Tx", "value": {"TxResult": tx_result}}),
            events,
        ));
    }
    if published.len() != txs.len() + 3 {
        return Err(internal(format!(
            "block {height} has {} transactions and {} results",
            txs.len(),
            results.tx_results.len()
        )));
    }
    Ok(published)
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
