//! The application side of a Bulwark chain: an [`Application`] trait with CometBFT's ABCI 2.0
//! calls and types (so an external ABCI application can stand behind it later), and the
//! built-in [`kvstore::KvStore`].
//!
//! Call order per height, as in CometBFT: `prepare_proposal` (proposer) or `process_proposal`
//! (others), then `finalize_block` with the decided block, then `commit`. Nothing is durable
//! before `commit`; a node that crashes in between replays the block (`info` tells it from
//! which height).

pub mod kvstore;

use bulwark_types::tendermint::abci::{request, response};
use thiserror::Error;

/// A failure the node cannot continue past (the application's state is unknown): it must stop
/// and replay, never skip a block.
#[derive(Debug, Error)]
pub enum AppError {
    /// Storage failed.
    #[error("application storage: {0}")]
    Storage(String),
    /// Calls out of order (e.g. `commit` without `finalize_block`, or a height gap).
    #[error("application call out of order: {0}")]
    Sequence(String),
    /// Genesis app state the application cannot use.
    #[error("genesis app state: {0}")]
    Genesis(String),
}

/// An application shaped like ABCI 2.0.
pub trait Application: Send {
    /// The last committed height and app hash (the handshake after a restart starts here).
    fn info(&self, request: request::Info) -> Result<response::Info, AppError>;
    /// Genesis.
    fn init_chain(&mut self, request: request::InitChain) -> Result<response::InitChain, AppError>;
    /// Mempool admission (new txs and rechecks after each commit).
    fn check_tx(&self, request: request::CheckTx) -> response::CheckTx;
    /// The proposer's block contents.
    fn prepare_proposal(&mut self, request: request::PrepareProposal) -> response::PrepareProposal;
    /// Whether a proposed block is acceptable (`valid(v)` of the consensus core).
    fn process_proposal(&mut self, request: request::ProcessProposal) -> response::ProcessProposal;
    /// Executes a decided block: one result per tx and the new app hash.
    fn finalize_block(
        &mut self,
        request: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, AppError>;
    /// Makes the last finalized block's state durable.
    fn commit(&mut self) -> Result<response::Commit, AppError>;
    /// Reads state.
    fn query(&self, request: request::Query) -> response::Query;
}
