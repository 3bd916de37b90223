//! The events a committed height publishes to subscribers, in CometBFT v0.38's JSON:
//! `NewBlock`, `NewBlockHeader`, `NewBlockEvents`, and one `Tx` per transaction, each with the
//! composite-key map a subscription's query is matched against (`tm.event`, the block's or
//! transaction's event attributes whether indexed or not, `tx.hash`, `tx.height`).
//!
//! Rendered from the block store, so a subscriber sees only what was committed, and what it
//! sees is what `block`, `block_results` and `tx` answer for the same height.

use crate::answer::{
    block_results_value, internal, load_block_from, load_results_from, store_error, to_value,
};
use crate::calls::cometbft;
use bulwark_mempool::tx_hash;
use bulwark_node::chain::block_id;
use bulwark_query::{Query, EVENT_KEY};
use bulwark_store::blocks::BlockStore;
use bulwark_types::tendermint::abci::response;
use bulwark_types::tendermint::abci::Event;
use bulwark_types::tendermint::Block;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use tendermint_rpc::endpoint;
use tendermint_rpc::response_error::ResponseError;

/// The events one committed height publishes, `NewBlock` first, then one `Tx` per
/// transaction. What a query matches (a composite-key map) and what a subscription receives
/// (JSON) are made when first needed, then kept for every other subscription: a block's `Tx`
/// events cost more than the rest, and most subscribers ask for `NewBlock` alone.
#[derive(Debug)]
pub struct HeightEvents {
    height: u64,
    block: Block,
    results: response::FinalizeBlock,
    /// The composite-key maps of the three block events.
    block_events: Vec<BTreeMap<String, Vec<String>>>,
    /// Each `Tx` event's.
    tx_events: Vec<OnceLock<BTreeMap<String, Vec<String>>>>,
    /// Whether an application event of a transaction here has the type `tm`: it adds values
    /// to the `Tx` events' `tm.event`, as CometBFT's event bus adds them.
    app_tm_events: bool,
    /// Each event's map as JSON text.
    events_json: Vec<OnceLock<String>>,
    /// `{"type": "tendermint/event/…", "value": …}` of each of the three block events.
    block_data: [OnceLock<Result<String, ResponseError>>; BLOCK_EVENTS],
    /// The same of each `Tx` event.
    tx_data: Vec<OnceLock<String>>,
    /// Bytes of the block and results, about.
    source_bytes: usize,
    /// Bytes of the maps and JSON made so far, about.
    made_bytes: AtomicUsize,
}

/// Bytes a composite-key map holds, about.
fn map_bytes(map: &BTreeMap<String, Vec<String>>) -> usize {
    map.iter()
        .map(|(k, vs)| k.len() + 48 + vs.iter().map(|v| v.len() + 24).sum::<usize>())
        .sum()
}

impl HeightEvents {
    /// How many events.
    pub fn len(&self) -> usize {
        BLOCK_EVENTS + self.tx_events.len()
    }

    /// Whether it publishes none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Event `i`'s composite-key map.
    fn events(&self, i: usize) -> Option<&BTreeMap<String, Vec<String>>> {
        match i.checked_sub(BLOCK_EVENTS) {
            None => self.block_events.get(i),
            Some(t) => self.tx_events.get(t).map(|map| {
                map.get_or_init(|| {
                    let made = self.tx_map(t);
                    self.made_bytes
                        .fetch_add(map_bytes(&made), Ordering::Relaxed);
                    made
                })
            }),
        }
    }

    /// Whether `query` matches event `i`.
    pub fn matches(&self, i: usize, query: &Query) -> bool {
        // A `Tx` event's `tm.event` is `Tx` alone unless an application event adds to it:
        // then a condition on `tm.event` that `Tx` fails rules out every `Tx` event unmade.
        if i >= BLOCK_EVENTS
            && !self.app_tm_events
            && query
                .conditions()
                .iter()
                .any(|c| c.key == EVENT_KEY && !c.holds("Tx"))
        {
            return false;
        }
        let Some(events) = self.events(i) else {
            return false;
        };
        let pairs: Vec<(&str, &str)> = events
            .iter()
            .flat_map(|(k, vs)| vs.iter().map(move |v| (k.as_str(), v.as_str())))
            .collect();
        query.matches(&pairs)
    }

    /// The message a subscription with `id` and `query` receives for event `i`, as JSON text.
    pub fn message(&self, i: usize, id: &Value, query: &Query) -> Result<String, ResponseError> {
        let missing = || internal(format!("height {} has no event {i}", self.height));
        let (events, events_json) = self
            .events(i)
            .zip(self.events_json.get(i))
            .ok_or_else(missing)?;
        let made = |text: String| {
            self.made_bytes.fetch_add(text.len(), Ordering::Relaxed);
            text
        };
        let data = match i.checked_sub(BLOCK_EVENTS) {
            None => match self.block_data.get(i) {
                Some(data) => Some(
                    data.get_or_init(|| self.render_block_event(i).map(made))
                        .clone()?,
                ),
                None => None,
            },
            Some(t) => self
                .tx_data
                .get(t)
                .map(|data| data.get_or_init(|| made(self.render_tx(t))).clone()),
        }
        .ok_or_else(missing)?;
        let events_json = events_json
            .get_or_init(|| made(serde_json::to_string(events).unwrap_or_else(|_| "{}".into())));
        Ok(format!(
            r#"{{"jsonrpc":"2.0","id":{},"result":{{"query":{},"data":{},"events":{}}}}}"#,
            id,
            Value::String(query.to_string()),
            data,
            events_json,
        ))
    }

    /// Bytes it holds, about: its block, results, and what is made of them so far.
    pub fn size(&self) -> usize {
        self.source_bytes + self.made_bytes.load(Ordering::Relaxed)
    }

    /// The composite-key map of transaction `index`'s `Tx` event.
    fn tx_map(&self, index: usize) -> BTreeMap<String, Vec<String>> {
        let tx = self.block.data.get(index).map_or(&[][..], Vec::as_slice);
        let mut events = BTreeMap::from([
            kind("Tx"),
            ("tx.hash".to_string(), vec![hex::encode_upper(tx_hash(tx))]),
            ("tx.height".to_string(), vec![self.height.to_string()]),
        ]);
        if let Some(result) = self.results.tx_results.get(index) {
            attributes(&result.events, &mut events);
        }
        events
    }

    /// Block event `i`: `NewBlock`, `NewBlockHeader` or `NewBlockEvents`.
    fn render_block_event(&self, i: usize) -> Result<String, ResponseError> {
        let (height, block, results) = (self.height, &self.block, &self.results);
        Ok(match i {
            0 => json!({"type": "tendermint/event/NewBlock", "value": self.new_block()?}),
            1 => {
                let mut header = json!({"header": to_value(&block.header)?});
                cometbft::header(&mut header);
                json!({"type": "tendermint/event/NewBlockHeader", "value": header})
            }
            _ => {
                // As `block_results` has them: `null` when empty.
                let events = match to_value(&results.events)? {
                    Value::Array(list) if list.is_empty() => Value::Null,
                    events => events,
                };
                json!({"type": "tendermint/event/NewBlockEvents", "value": {
                    "height": height.to_string(),
                    "events": events,
                    "num_txs": block.data.len().to_string(),
                }})
            }
        }
        .to_string())
    }

    /// `NewBlock`'s value: the block, its id and the results of finalizing it.
    fn new_block(&self) -> Result<Value, ResponseError> {
        let (height, block, results) = (self.height, &self.block, &self.results);
        let (id, _) = block_id(block).map_err(store_error)?;
        let mut rendered = block_results_value(height, results.clone())?;
        let finalize = without_empty(json!({
            "events": rendered["finalize_block_events"].take(),
            "tx_results": rendered["txs_results"].take(),
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
        Ok(new_block)
    }

    /// The `Tx` event of transaction `index`.
    fn render_tx(&self, index: usize) -> String {
        let result = self.results.tx_results.get(index).map(to_value);
        let mut tx_result = json!({
            "height": self.height.to_string(),
            "tx": base64_of(self.block.data.get(index).map_or(&[][..], Vec::as_slice)),
            "result": without_empty(result.and_then(Result::ok).unwrap_or(Value::Null)),
        });
        // Go leaves out index 0 here.
        if index > 0 {
            tx_result["index"] = json!(index);
        }
        json!({"type": "tendermint/event/Tx", "value": {"TxResult": tx_result}}).to_string()
    }
}

/// `NewBlock`, `NewBlockHeader`, `NewBlockEvents`: the events before the `Tx` ones.
const BLOCK_EVENTS: usize = 3;

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
pub fn of_height(blocks: &BlockStore, height: u64) -> Result<HeightEvents, ResponseError> {
    let block = load_block_from(blocks, height)?;
    let results = load_results_from(blocks, height)?;
    if results.tx_results.len() != block.data.len() {
        return Err(internal(format!(
            "block {height} has {} transactions and {} results",
            block.data.len(),
            results.tx_results.len()
        )));
    }
    let mut block_attributes = BTreeMap::new();
    attributes(&results.events, &mut block_attributes);
    let with_kind = |name: &str| {
        let mut events = block_attributes.clone();
        events.extend([kind(name)]);
        events
    };
    let block_events = vec![
        with_kind("NewBlock"),
        with_kind("NewBlockHeader"),
        with_kind("NewBlockEvents"),
    ];
    let event_bytes = |events: &[Event]| -> usize {
        events
            .iter()
            .flat_map(|e| &e.attributes)
            .map(|a| a.key_bytes().len() + a.value_bytes().len() + 32)
            .sum::<usize>()
            + events.iter().map(|e| e.kind.len() + 32).sum::<usize>()
    };
    let source_bytes = 4096
        + block.data.iter().map(|tx| tx.len() + 32).sum::<usize>()
        + event_bytes(&results.events)
        + results
            .tx_results
            .iter()
            .map(|r| r.data.len() + r.log.len() + r.info.len() + 128 + event_bytes(&r.events))
            .sum::<usize>();
    let app_tm_events = results
        .tx_results
        .iter()
        .any(|r| r.events.iter().any(|e| e.kind == "tm"));
    let made_bytes = block_events.iter().map(map_bytes).sum();
    Ok(HeightEvents {
        height,
        events_json: (0..BLOCK_EVENTS + block.data.len())
            .map(|_| OnceLock::new())
            .collect(),
        tx_events: block.data.iter().map(|_| OnceLock::new()).collect(),
        tx_data: block.data.iter().map(|_| OnceLock::new()).collect(),
        block_events,
        app_tm_events,
        block,
        results,
        block_data: Default::default(),
        source_bytes,
        made_bytes: AtomicUsize::new(made_bytes),
    })
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
