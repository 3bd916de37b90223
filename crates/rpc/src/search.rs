//! `tx_search` and `block_search` in CometBFT's JSON, over `bulwark_query::search`.
//!
//! A search reads only committed data, so it runs on the RPC side (a blocking task), never on
//! the engine's thread: a broad query costs RPC time, not consensus time, and stops at a
//! deadline with an error that says to narrow it.

use crate::answer::{internal, load_block_from, load_results_from, store_error, to_value};
use crate::calls::cometbft;
use bulwark_node::chain::block_id;
use bulwark_query::search::{matching_blocks, matching_txs, page_of, Search, SearchError};
use bulwark_store::blocks::BlockStore;
use bulwark_store::events::TxPosition;
use bulwark_types::hashes::tx_proof;
use bulwark_types::tendermint::abci::response;
use bulwark_types::tendermint::block::Block;
use bulwark_types::tendermint::{block, Hash};
use serde_json::{json, Value};
use std::time::Instant;
use tendermint_rpc::endpoint;
use tendermint_rpc::response_error::ResponseError;

fn refusal(e: SearchError) -> ResponseError {
    internal(e.to_string())
}

/// CometBFT's answer where `tx_index.indexer = "null"` (`what`: transaction or block).
pub(crate) fn indexing(blocks: &BlockStore, what: &str) -> Result<(), ResponseError> {
    if blocks.indexing() {
        Ok(())
    } else {
        Err(internal(format!("{what} indexing is disabled")))
    }
}

/// A height's block and results, decoded once for all the transactions of a page there.
type Decoded = (u64, Block, response::FinalizeBlock);

/// CometBFT's `tx` answer for the transaction at `at` (its hash known), with the Merkle proof
/// of its place in its block's `data_hash` if `prove`.
pub(crate) fn tx_answer(
    blocks: &BlockStore,
    at: TxPosition,
    hash: [u8; 32],
    prove: bool,
) -> Result<endpoint::tx::Response, ResponseError> {
    tx_answer_from(blocks, at, hash, prove, &mut None)
}

fn tx_answer_from(
    blocks: &BlockStore,
    (height, index): TxPosition,
    hash: [u8; 32],
    prove: bool,
    decoded: &mut Option<Decoded>,
) -> Result<endpoint::tx::Response, ResponseError> {
    if decoded.as_ref().is_none_or(|(h, _, _)| *h != height) {
        let block = load_block_from(blocks, height)?;
        *decoded = Some((height, block, load_results_from(blocks, height)?));
    }
    let Some((_, block, results)) = decoded.as_ref() else {
        return Err(internal("no block decoded"));
    };
    let found = |what: &str| internal(format!("{what} {index} of block {height} is not stored"));
    let tx = block
        .data
        .get(index as usize)
        .ok_or_else(|| found("tx"))?
        .clone();
    let tx_result = results
        .tx_results
        .get(index as usize)
        .ok_or_else(|| found("the result of tx"))?
        .clone();
    Ok(endpoint::tx::Response {
        hash: Hash::Sha256(hash),
        height: block::Height::try_from(height).map_err(store_error)?,
        index,
        tx_result,
        tx,
        proof: prove
            .then(|| tx_proof(&block.data, index as usize))
            .flatten(),
    })
}

/// The deadline, checked while a page is rendered too.
fn in_time(deadline: Instant) -> Result<(), ResponseError> {
    if Instant::now() > deadline {
        return Err(internal(
            "the deadline passed while the page was rendered: ask for smaller pages",
        ));
    }
    Ok(())
}

/// `tx_search`, with CometBFT's answer (each transaction with its proof if `prove`).
pub fn tx_search(
    blocks: &BlockStore,
    search: &Search,
    prove: bool,
    deadline: Instant,
) -> Result<Value, ResponseError> {
    indexing(blocks, "transaction")?;
    let found = matching_txs(blocks, &search.query, deadline).map_err(refusal)?;
    let mut txs = Vec::new();
    let mut decoded = None;
    for at in page_of(&found, search.page, search.per_page, search.descending).map_err(refusal)? {
        in_time(deadline)?;
        let (hash, _) = blocks
            .indexed_tx(at)
            .map_err(store_error)?
            .ok_or_else(|| internal(format!("transaction {at:?} left the index")))?;
        txs.push(tx_answer_from(blocks, at, hash, prove, &mut decoded)?);
    }
    to_value(&endpoint::tx_search::Response {
        txs,
        total_count: u32::try_from(found.len()).unwrap_or(u32::MAX),
    })
}

/// `block_search`, with CometBFT's answer.
pub fn block_search(
    blocks: &BlockStore,
    search: &Search,
    deadline: Instant,
) -> Result<Value, ResponseError> {
    indexing(blocks, "block")?;
    let found = matching_blocks(blocks, &search.query, deadline).map_err(refusal)?;
    let mut answers = Vec::new();
    for height in
        page_of(&found, search.page, search.per_page, search.descending).map_err(refusal)?
    {
        in_time(deadline)?;
        let block = load_block_from(blocks, height)?;
        let (id, _) = block_id(&block).map_err(store_error)?;
        let mut value = to_value(&endpoint::block::Response {
            block_id: id,
            block,
        })?;
        cometbft::block(&mut value);
        answers.push(value);
    }
    Ok(json!({
        "blocks": answers,
        "total_count": found.len().to_string(),
    }))
}
