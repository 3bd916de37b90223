//! Answers to JSON-RPC calls, computed on the engine's task from the engine's stores and
//! application. Responses are built from `tendermint-rpc`'s own endpoint types, so their JSON
//! is what CometBFT v0.38 serves and what its clients parse.

use crate::calls::cometbft;
use crate::calls::{BroadcastMode, Call};
use bulwark_mempool::{tx_hash, AddError};
use bulwark_node::chain::{block_id, decode_results, genesis_validators, ChainState};
use bulwark_node::engine::{Engine, Output};
use bulwark_node::instance::Authorization;
use bulwark_store::blocks::BlockStore;
use bulwark_types::tendermint::abci::{request, response, Code};
use bulwark_types::tendermint::block::{self, signed_header::SignedHeader, Block, Commit};
use bulwark_types::tendermint::{node, validator, Genesis, Hash, PublicKey};
use bulwark_types::tendermint_proto::v0_38 as pb;
use bytes::Bytes;
use prost::Message;
use serde::Serialize;
use serde_json::Value;
use tendermint_rpc::endpoint;
use tendermint_rpc::response_error::{Code as RpcCode, ResponseError};

/// What the driver knows that the engine does not.
pub struct NodeView<'a> {
    /// This node's info, as in `status`.
    pub node_info: &'a node::Info,
    /// genesis.json.
    pub genesis: &'a Genesis<Value>,
    /// Connected peers, each with what its verified evidence says: built only for the one
    /// method that shows them (`net_info`), as a client polling `status` would pay for it.
    pub peers: &'a dyn Fn() -> Vec<crate::peers::ShownPeer>,
    /// Where the node listens for peers.
    pub listeners: Vec<String>,
    /// The validator key's public half.
    pub validator_key: PublicKey,
}

/// The answer to a call.
#[derive(Debug)]
pub enum Reply {
    /// Answered now.
    Ready(Result<Value, ResponseError>),
    /// `broadcast_tx_commit` of a transaction CheckTx accepted: answer when a block with it
    /// commits (see [`committed_tx`]).
    AwaitCommit {
        /// The transaction's hash.
        hash: [u8; 32],
    },
}

pub(crate) fn internal(message: impl Into<String>) -> ResponseError {
    ResponseError::new(RpcCode::InternalError, Some(message.into()))
}

pub(crate) fn to_value<T: Serialize>(value: &T) -> Result<Value, ResponseError> {
    serde_json::to_value(value).map_err(|e| internal(format!("serializing the response: {e}")))
}

pub(crate) fn store_error(e: impl std::fmt::Display) -> ResponseError {
    internal(format!("storage: {e}"))
}

/// The height asked for, checked against what is stored.
fn resolve(engine: &Engine, height: Option<u64>) -> Result<u64, ResponseError> {
    let latest = engine.state().last_block_height;
    let first = engine.state().initial_height;
    match height {
        None if latest < first => Err(internal("no block has been committed yet")),
        None => Ok(latest),
        Some(h) if h > latest => Err(internal(format!(
            "height {h} must be less than or equal to the current blockchain height {latest}"
        ))),
        Some(h) if h < first => Err(internal(format!(
            "height {h} is below the chain's initial height {first}"
        ))),
        Some(h) => Ok(h),
    }
}

/// Block `height` from the store.
pub fn load_block(engine: &Engine, height: u64) -> Result<Block, ResponseError> {
    load_block_from(engine.blocks(), height)
}

/// Block `height` from `blocks`.
pub fn load_block_from(blocks: &BlockStore, height: u64) -> Result<Block, ResponseError> {
    let bytes = blocks
        .block(height)
        .map_err(store_error)?
        .ok_or_else(|| internal(format!("block {height} is not stored")))?;
    let raw = pb::types::Block::decode(bytes.as_slice()).map_err(store_error)?;
    Block::try_from(raw).map_err(store_error)
}

fn load_commit(engine: &Engine, height: u64) -> Result<Commit, ResponseError> {
    let bytes = engine
        .blocks()
        .commit(height)
        .map_err(store_error)?
        .ok_or_else(|| internal(format!("commit {height} is not stored")))?;
    let raw = pb::types::Commit::decode(bytes.as_slice()).map_err(store_error)?;
    Commit::try_from(raw).map_err(store_error)
}

/// The application's results of block `height`.
pub fn load_results(
    engine: &Engine,
    height: u64,
) -> Result<response::FinalizeBlock, ResponseError> {
    load_results_from(engine.blocks(), height)
}

/// The application's results of block `height` from `blocks`.
pub fn load_results_from(
    blocks: &BlockStore,
    height: u64,
) -> Result<response::FinalizeBlock, ResponseError> {
    let bytes = blocks
        .results(height)
        .map_err(store_error)?
        .ok_or_else(|| internal(format!("results of block {height} are not stored")))?;
    decode_results(&bytes).map_err(store_error)
}

/// The validators that sign block `height` (up to the next height, which the current state
/// already knows, so a light client can check `next_validators_hash` of the latest block).
pub fn validators_at(engine: &Engine, height: u64) -> Result<validator::Set, ResponseError> {
    let state = engine.state();
    if height == state.next_height() {
        return Ok(state.validator_set());
    }
    let h = resolve(engine, Some(height))?;
    // Height h's validators, with their priorities at h, are the next validators of the
    // state after h - 1 (of the genesis for the first height).
    let stored = |at: u64| -> Result<ChainState, ResponseError> {
        let bytes = engine
            .blocks()
            .state(at)
            .map_err(store_error)?
            .ok_or_else(|| internal(format!("state {at} is not stored")))?;
        ChainState::decode(&bytes).map_err(store_error)
    };
    if h == state.initial_height {
        return genesis_validators(&stored(h)?.last_validator_infos).map_err(store_error);
    }
    Ok(stored(h - 1)?.validator_set())
}

fn status(engine: &Engine, node: &NodeView<'_>) -> Result<Value, ResponseError> {
    let state = engine.state();
    // The earliest block's header is read from the store; the latest block is described by
    // the chain state (status is polled often, and the latest block may be megabytes).
    let earliest = if state.last_block_height >= state.initial_height {
        Some(load_block(engine, state.initial_height)?)
    } else {
        None
    };
    let power = state
        .validator_infos
        .validators()
        .iter()
        .find(|v| v.address == engine.address())
        .map(|v| v.power)
        .unwrap_or_default();
    let mut node_info = node.node_info.clone();
    // CometBFT says "on" for its kv indexer (relayers refuse a node that says "off").
    node_info.other.tx_index = if engine.blocks().indexing() {
        bulwark_types::tendermint::node::info::TxIndexStatus::On
    } else {
        bulwark_types::tendermint::node::info::TxIndexStatus::Off
    };
    let response = endpoint::status::Response {
        node_info,
        sync_info: endpoint::status::SyncInfo {
            earliest_block_hash: earliest.as_ref().map_or(Hash::None, |b| b.header.hash()),
            earliest_app_hash: earliest
                .as_ref()
                .map(|b| b.header.app_hash.clone())
                .unwrap_or_default(),
            earliest_block_height: earliest
                .as_ref()
                .map_or_else(|| block::Height::from(0u32), |b| b.header.height),
            earliest_block_time: earliest
                .as_ref()
                .map_or(node.genesis.genesis_time, |b| b.header.time),
            latest_block_hash: state.last_block_id.map_or(Hash::None, |id| id.hash),
            latest_app_hash: state.app_hash.clone(),
            latest_block_height: block::Height::try_from(state.last_block_height)
                .map_err(store_error)?,
            latest_block_time: state.last_block_time,
            catching_up: engine.catching_up(),
        },
        validator_info: validator::Info {
            address: engine.address(),
            pub_key: node.validator_key,
            power,
            name: None,
            proposer_priority: Default::default(),
        },
    };
    let mut value = to_value(&response)?;
    value["validator_info"] = cometbft::validator_info(
        to_value(&engine.address())?,
        to_value(&node.validator_key)?,
        power.value(),
    );
    // Beside CometBFT's fields (clients ignore it): whether this instance of the validator
    // may sign (`bulwark_instance`), and if not, why.
    let (signing, reason) = match engine.signing() {
        Authorization::Unclaimed => (
            false,
            "no instance of this validator holds its key (the genesis named none): this instance signs only after its own claim commits".into(),
        ),
        Authorization::Holder { since } => (true, format!("this instance holds the key since height {since} (its claim's block; for the launch instance, the one before the chain's first)")),
        Authorization::Elsewhere { instance, since } => (
            false,
            format!("instance {instance} of this validator holds its key since height {since}; this instance signs only after its own claim commits (blocks the other validators decide without it)"),
        ),
    };
    if let Value::Object(map) = &mut value {
        map.insert(
            "bulwark_instance".into(),
            serde_json::json!({ "signing": signing, "reason": reason }),
        );
    }
    Ok(value)
}

fn validators(
    engine: &Engine,
    height: Option<u64>,
    page: usize,
    per_page: usize,
) -> Result<Value, ResponseError> {
    let height = match height {
        Some(h) => h,
        None => resolve(engine, None)?,
    };
    let set = validators_at(engine, height)?;
    let all = set.validators();
    let start = (page - 1).saturating_mul(per_page);
    if start >= all.len() && !(all.is_empty() && page == 1) {
        return Err(ResponseError::new(
            RpcCode::InvalidParams,
            Some(format!(
                "page should be within [1, {}] range, given {page}",
                all.len().div_ceil(per_page).max(1)
            )),
        ));
    }
    let end = start.saturating_add(per_page).min(all.len());
    let response = endpoint::validators::Response::new(
        block::Height::try_from(height).map_err(store_error)?,
        all[start..end].to_vec(),
        i32::try_from(all.len()).map_err(store_error)?,
    );
    let mut value = to_value(&response)?;
    // CometBFT also says how many are on this page; tendermint-rpc's type leaves it out.
    if let Value::Object(fields) = &mut value {
        fields.insert("count".into(), Value::String((end - start).to_string()));
    }
    if let Some(shown) = value.get_mut("validators").and_then(Value::as_array_mut) {
        for (v, info) in shown.iter_mut().zip(&all[start..end]) {
            // tendermint-rpc's type leaves the priority out of its JSON.
            v["proposer_priority"] = Value::String(info.proposer_priority.value().to_string());
            cometbft::validator(v);
        }
    }
    Ok(value)
}

fn commit(engine: &Engine, height: Option<u64>) -> Result<Value, ResponseError> {
    let h = resolve(engine, height)?;
    let header = load_block(engine, h)?.header;
    // Below the tip the canonical commit is the one block h+1 carries; at the tip it is the
    // commit this node decided with (CometBFT's "seen commit").
    let (commit, canonical) = match load_block(engine, h + 1) {
        Ok(next) if h < engine.state().last_block_height => match next.last_commit {
            Some(c) => (c, true),
            None => (load_commit(engine, h)?, false),
        },
        _ => (load_commit(engine, h)?, false),
    };
    let signed_header = SignedHeader::new(header, commit).map_err(store_error)?;
    to_value(&endpoint::commit::Response {
        signed_header,
        canonical,
    })
}

fn block_results(engine: &Engine, height: Option<u64>) -> Result<Value, ResponseError> {
    let h = resolve(engine, height)?;
    block_results_value(h, load_results(engine, h)?)
}

/// `block_results`' answer for height `h` with `results`, in CometBFT's JSON (the `NewBlock`
/// event carries it too).
pub(crate) fn block_results_value(
    h: u64,
    r: response::FinalizeBlock,
) -> Result<Value, ResponseError> {
    let mut value = to_value(&endpoint::block_results::Response {
        height: block::Height::try_from(h).map_err(store_error)?,
        txs_results: Some(r.tx_results),
        finalize_block_events: r.events,
        begin_block_events: None,
        end_block_events: None,
        validator_updates: r.validator_updates,
        consensus_param_updates: r.consensus_param_updates,
        app_hash: r.app_hash,
    })?;
    cometbft::block_results(&mut value);
    Ok(value)
}

fn abci_query(
    engine: &Engine,
    path: String,
    data: Vec<u8>,
    height: Option<u64>,
    prove: bool,
) -> Result<Value, ResponseError> {
    let q = engine
        .app()
        .query(request::Query {
            data: Bytes::from(data),
            path,
            height: block::Height::try_from(height.unwrap_or(0)).map_err(store_error)?,
            prove,
        })
        .map_err(|e| internal(e.to_string()))?;
    let mut value = to_value(&endpoint::abci_query::Response {
        response: endpoint::abci_query::AbciQuery {
            code: q.code,
            log: q.log,
            info: q.info,
            index: q.index,
            key: q.key.to_vec(),
            value: q.value.to_vec(),
            proof: q.proof,
            height: q.height,
            codespace: q.codespace,
        },
    })?;
    cometbft::abci_query(&mut value);
    Ok(value)
}

fn tx_sync_response(hash: [u8; 32], code: u32, log: String) -> Result<Value, ResponseError> {
    to_value(&endpoint::broadcast::tx_sync::Response {
        codespace: String::new(),
        code: Code::from(code),
        data: Bytes::new(),
        log,
        hash: Hash::Sha256(hash),
    })
}

fn broadcast(engine: &mut Engine, tx: Vec<u8>, mode: BroadcastMode) -> (Reply, Vec<Output>) {
    let hash = tx_hash(&tx);
    let (added, outputs) = engine.submit_tx(Bytes::from(tx));
    let reply = match (added, mode) {
        (Ok(()), BroadcastMode::Commit) => Reply::AwaitCommit { hash },
        (Ok(()), _) => Reply::Ready(tx_sync_response(hash, 0, String::new())),
        // The application refused it: a normal answer with its code, as CometBFT gives.
        (Err(AddError::Rejected { code, log }), BroadcastMode::Commit) => {
            Reply::Ready(commit_response(hash, code, log, None, 0))
        }
        (Err(AddError::Rejected { code, log }), _) => {
            Reply::Ready(tx_sync_response(hash, code, log))
        }
        // Size, capacity and duplicates are errors of the request, as in CometBFT.
        (Err(e), _) => Reply::Ready(Err(internal(e.to_string()))),
    };
    (reply, outputs)
}

fn commit_response(
    hash: [u8; 32],
    check_code: u32,
    check_log: String,
    tx_result: Option<bulwark_types::tendermint::abci::types::ExecTxResult>,
    height: u64,
) -> Result<Value, ResponseError> {
    let mut value = to_value(&endpoint::broadcast::tx_commit::Response {
        check_tx: response::CheckTx {
            code: Code::from(check_code),
            log: check_log,
            ..Default::default()
        },
        tx_result: tx_result.unwrap_or_default(),
        hash: Hash::Sha256(hash),
        height: block::Height::try_from(height).map_err(store_error)?,
    })?;
    cometbft::check_tx(&mut value);
    Ok(value)
}

/// The `broadcast_tx_commit` answers for transactions in committed block `height`: `(hash,
/// answer)` for each of `waiting` that the block holds.
pub fn committed_tx(
    engine: &Engine,
    height: u64,
    waiting: &[[u8; 32]],
) -> Vec<([u8; 32], Result<Value, ResponseError>)> {
    let (block, results) = match (load_block(engine, height), load_results(engine, height)) {
        (Ok(b), Ok(r)) => (b, r),
        (Err(e), _) | (_, Err(e)) => return waiting.iter().map(|h| (*h, Err(e.clone()))).collect(),
    };
    block
        .data
        .iter()
        .zip(results.tx_results)
        .filter_map(|(tx, result)| {
            let hash = tx_hash(tx);
            waiting.contains(&hash).then(|| {
                (
                    hash,
                    commit_response(hash, 0, String::new(), Some(result), height),
                )
            })
        })
        .collect()
}

fn net_info(node: &NodeView<'_>) -> Result<Value, ResponseError> {
    let listeners: Vec<endpoint::net_info::Listener> = node
        .listeners
        .iter()
        .map(|l| serde_json::from_value(Value::String(l.clone())))
        .collect::<Result<_, _>>()
        .map_err(|e| internal(e.to_string()))?;
    let shown_peers = (node.peers)();
    let mut value = to_value(&endpoint::net_info::Response {
        listening: true,
        listeners,
        n_peers: shown_peers.len() as u64,
        peers: shown_peers.iter().map(|p| p.info.clone()).collect(),
    })?;
    // Each peer's verified identity (validator, measurement, chip, TCB) beside CometBFT's fields.
    if let Some(peers) = value.get_mut("peers").and_then(Value::as_array_mut) {
        for (shown, peer) in peers.iter_mut().zip(&shown_peers) {
            if let Value::Object(fields) = shown {
                fields.insert("attestation".into(), peer.attestation.clone());
            }
        }
    }
    Ok(value)
}

fn num_unconfirmed_txs(engine: &Engine) -> Result<Value, ResponseError> {
    // Not among tendermint-rpc's endpoints: CometBFT's shape, written out.
    let n = engine.mempool().len().to_string();
    Ok(serde_json::json!({
        "n_txs": n,
        "total": n,
        "total_bytes": engine.mempool().size_bytes().to_string(),
        "txs": null,
    }))
}

/// Block `height` and its id.
fn block_with_id(engine: &Engine, height: u64) -> Result<(Block, block::Id), ResponseError> {
    let block = load_block(engine, height)?;
    let (id, _) = block_id(&block).map_err(store_error)?;
    Ok((block, id))
}

/// The height of the stored block whose hash is `hash`, if any.
fn height_of(engine: &Engine, hash: &[u8]) -> Result<Option<u64>, ResponseError> {
    engine.blocks().height_of(hash).map_err(store_error)
}

fn block_by_hash(engine: &Engine, hash: &[u8]) -> Result<Value, ResponseError> {
    let found = height_of(engine, hash)?
        .map(|h| block_with_id(engine, h))
        .transpose()?;
    let (block, block_id) = match found {
        Some((block, id)) => (Some(block), id),
        // CometBFT's answer for a hash it does not have: an empty id, no block.
        None => (None, block::Id::default()),
    };
    let mut value = to_value(&endpoint::block_by_hash::Response { block_id, block })?;
    if value["block"].is_null() {
        value["block_id"] = cometbft::empty_block_id();
    } else {
        cometbft::block(&mut value);
    }
    Ok(value)
}

fn header_by_hash(engine: &Engine, hash: &[u8]) -> Result<Value, ResponseError> {
    let header = height_of(engine, hash)?
        .map(|h| load_block(engine, h).map(|b| b.header))
        .transpose()?;
    let mut value = to_value(&endpoint::header_by_hash::Response { header })?;
    cometbft::header(&mut value);
    Ok(value)
}

/// CometBFT's `blockchain`: at most 20 block metas, from `max` (the latest if none) down to
/// `min` (the first if none).
fn blockchain(engine: &Engine, min: Option<u64>, max: Option<u64>) -> Result<Value, ResponseError> {
    const LIMIT: u64 = 20;
    let latest = engine.state().last_block_height;
    let first = engine.state().initial_height;
    let max = max.unwrap_or(latest).min(latest);
    let min = min
        .unwrap_or(first)
        .max(first)
        .max((max + 1).saturating_sub(LIMIT));
    if min > max {
        return Err(internal(format!(
            "min height {min} can't be greater than max height {max}"
        )));
    }
    let mut block_metas = Vec::new();
    for h in (min..=max).rev() {
        let (block, block_id) = block_with_id(engine, h)?;
        // The stored bytes are the block's protobuf encoding: their length is its size.
        let block_size = engine
            .blocks()
            .block(h)
            .map_err(store_error)?
            .map_or(0, |b| b.len() as i64);
        block_metas.push(block::Meta {
            block_id,
            block_size,
            num_txs: block.data.len() as i64,
            header: block.header,
        });
    }
    let mut value = to_value(&endpoint::blockchain::Response {
        last_height: block::Height::try_from(latest).map_err(store_error)?,
        block_metas,
    })?;
    cometbft::blockchain(&mut value);
    Ok(value)
}

/// The consensus parameters in force at `height`: the genesis's at the initial height, else
/// those the state after the height before carries.
fn consensus_params(
    engine: &Engine,
    node: &NodeView<'_>,
    height: Option<u64>,
) -> Result<Value, ResponseError> {
    // As v0.38: the default and the highest height asked for are the next one, whose
    // parameters the current state holds.
    let next = engine.state().next_height();
    let h = match height {
        None => next,
        Some(h) if h == next => h,
        h => resolve(engine, h)?,
    };
    let consensus_params = if h == next {
        engine.state().consensus_params.clone()
    } else if h == engine.state().initial_height {
        node.genesis.consensus_params.clone()
    } else {
        let bytes = engine
            .blocks()
            .state(h - 1)
            .map_err(store_error)?
            .ok_or_else(|| internal(format!("the state after height {} is not stored", h - 1)))?;
        ChainState::decode(&bytes)
            .map_err(store_error)?
            .consensus_params
    };
    let mut value = to_value(&endpoint::consensus_params::Response {
        block_height: block::Height::try_from(h).map_err(store_error)?,
        consensus_params,
    })?;
    cometbft::consensus_params(&mut value);
    Ok(value)
}

fn unconfirmed_txs(engine: &Engine, limit: usize) -> Result<Value, ResponseError> {
    use base64::Engine as _;
    let txs: Vec<String> = engine
        .mempool()
        .reap(-1)
        .iter()
        .take(limit)
        .map(|t| base64::engine::general_purpose::STANDARD.encode(t))
        .collect();
    // Not among tendermint-rpc's endpoints: CometBFT's shape, written out.
    Ok(serde_json::json!({
        "n_txs": txs.len().to_string(),
        "total": engine.mempool().len().to_string(),
        "total_bytes": engine.mempool().size_bytes().to_string(),
        "txs": txs,
    }))
}

fn check_tx(engine: &mut Engine, tx: Vec<u8>) -> Result<Value, ResponseError> {
    let answer = engine
        .check_tx_for_rpc(Bytes::from(tx))
        .ok_or_else(|| internal("too many check_tx calls at once: try again shortly"))?
        .map_err(|e| internal(e.to_string()))?;
    let mut value = serde_json::json!({ "check_tx": to_value(&answer)? });
    cometbft::check_tx(&mut value);
    Ok(value["check_tx"].take())
}

/// A committed transaction by its hash, with its result (CometBFT's kv indexer's answer) and,
/// if `prove`, the Merkle proof of its place in its block.
fn committed(engine: &Engine, hash: &[u8], prove: bool) -> Result<Value, ResponseError> {
    crate::search::indexing(engine.blocks(), "transaction")?;
    let at = engine
        .blocks()
        .tx_location(hash)
        .map_err(store_error)?
        .ok_or_else(|| internal(format!("tx ({}) not found", hex::encode_upper(hash))))?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| internal("a hash has 32 bytes"))?;
    to_value(&crate::search::tx_answer(engine.blocks(), at, hash, prove)?)
}

/// Answers `call`; any outputs (a broadcast transaction's gossip) are the driver's to carry out.
pub fn answer(engine: &mut Engine, node: &NodeView<'_>, call: Call) -> (Reply, Vec<Output>) {
    let ready = |r| (Reply::Ready(r), Vec::new());
    match call {
        Call::Health => ready(to_value(&endpoint::health::Response {})),
        Call::Status => ready(status(engine, node)),
        Call::NetInfo => ready(net_info(node)),
        Call::Genesis => ready(
            to_value(&endpoint::genesis::Response {
                genesis: node.genesis.clone(),
            })
            .map(|mut v| {
                cometbft::genesis(&mut v);
                v
            }),
        ),
        Call::Block(height) => ready(resolve(engine, height).and_then(|h| {
            let (block, id) = block_with_id(engine, h)?;
            let mut value = to_value(&endpoint::block::Response {
                block_id: id,
                block,
            })?;
            cometbft::block(&mut value);
            Ok(value)
        })),
        Call::BlockResults(height) => ready(block_results(engine, height)),
        Call::Commit(height) => ready(commit(engine, height)),
        Call::Validators {
            height,
            page,
            per_page,
        } => ready(validators(engine, height, page, per_page)),
        Call::BroadcastTx { tx, mode } => broadcast(engine, tx, mode),
        Call::AbciQuery {
            path,
            data,
            height,
            prove,
        } => ready(abci_query(engine, path, data, height, prove)),
        Call::AbciInfo => ready(
            engine
                .app()
                .info(request::Info {
                    version: env!("CARGO_PKG_VERSION").into(),
                    block_version: bulwark_types::BLOCK_PROTOCOL,
                    p2p_version: 8,
                    abci_version: "2.0.0".into(),
                })
                .map_err(|e| internal(e.to_string()))
                .and_then(|info| {
                    let mut value = to_value(&endpoint::abci_info::Response { response: info })?;
                    cometbft::abci_info(&mut value);
                    Ok(value)
                }),
        ),
        Call::NumUnconfirmedTxs => ready(num_unconfirmed_txs(engine)),
        Call::BroadcastEvidence(evidence) => match engine.submit_evidence(*evidence) {
            Ok((hash, outputs)) => (
                Reply::Ready(to_value(&endpoint::evidence::Response { hash })),
                outputs,
            ),
            Err(e) => ready(Err(internal(format!("evidence refused: {e}")))),
        },
        Call::BlockByHash(hash) => ready(block_by_hash(engine, &hash)),
        Call::Header(height) => ready(resolve(engine, height).and_then(|h| {
            let mut value = to_value(&endpoint::header::Response {
                header: load_block(engine, h)?.header,
            })?;
            cometbft::header(&mut value);
            Ok(value)
        })),
        Call::HeaderByHash(hash) => ready(header_by_hash(engine, &hash)),
        Call::Blockchain { min, max } => ready(blockchain(engine, min, max)),
        Call::ConsensusParams(height) => ready(consensus_params(engine, node, height)),
        Call::UnconfirmedTxs { limit } => ready(unconfirmed_txs(engine, limit)),
        Call::CheckTx(tx) => ready(check_tx(engine, tx)),
        Call::Tx { hash, prove } => ready(committed(engine, &hash, prove)),
        Call::ConsensusState => ready(crate::consensus::consensus_state(engine)),
        Call::DumpConsensusState => ready(crate::consensus::dump_consensus_state(engine, node)),
        // Searches read committed data on the RPC side (`search`), never here.
        Call::TxSearch { .. } | Call::BlockSearch(_) => {
            ready(Err(internal("searches are answered by the RPC server")))
        }
    }
}
