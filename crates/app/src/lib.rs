//! The application side of a Bulwark chain: an [`Application`] trait with CometBFT's ABCI 2.0
//! calls and types, the built-in [`kvstore::KvStore`], and [`socket::SocketApp`], an ABCI
//! application in another process (`proxy_app`, as in CometBFT's config.toml).
//!
//! Call order per height, as in CometBFT: `prepare_proposal` (proposer) or `process_proposal`
//! (others), then `finalize_block` with the decided block, then `commit`. Nothing is durable
//! before `commit`; a node that crashes in between replays the block (`info` tells it from
//! which height).

pub mod kvstore;
pub mod socket;
pub mod timed;

use bulwark_types::tendermint::abci::{request, response};
use thiserror::Error;

/// A failure the node cannot continue past (the application's state is unknown): it must stop
/// and replay, never skip a block.
#[derive(Clone, Debug, Error)]
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
    /// The application cannot be reached, closed its connection or did not answer in time.
    #[error("{0}")]
    Connection(String),
    /// The application answered something ABCI does not allow there.
    #[error("{0}")]
    Protocol(String),
    /// The application answered with an `Exception`.
    #[error("{0}")]
    Exception(String),
    /// `proxy_app` names no application this node can run.
    #[error("proxy_app {0}")]
    Config(String),
}

/// How long a node waits for its application to listen (it may be loading its state).
pub const CONNECT_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// Which application a node runs: the `proxy_app` and `abci_timeout_ms` keys of config.toml.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppConfig {
    /// As CometBFT's `proxy_app`: `kvstore` is the built-in store; `tcp://host:port` or
    /// `unix:///path` an ABCI application listening there.
    #[serde(default = "built_in")]
    pub proxy_app: String,
    /// How long an ABCI call waits for its answer before the node stops (taken within 1 s
    /// to 10 min).
    #[serde(default = "default_abci_timeout_ms")]
    pub abci_timeout_ms: u64,
}

fn built_in() -> String {
    "kvstore".into()
}

fn default_abci_timeout_ms() -> u64 {
    30_000
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            proxy_app: built_in(),
            abci_timeout_ms: default_abci_timeout_ms(),
        }
    }
}

impl AppConfig {
    /// The application, ready for the handshake (the built-in one stores in `data_dir`).
    pub fn connect(&self, data_dir: &std::path::Path) -> Result<Box<dyn Application>, AppError> {
        if self.proxy_app == "kvstore" {
            let app = Box::new(kvstore::KvStore::open(data_dir)?);
            return Ok(Box::new(timed::Timed(app)));
        }
        let address = socket::Address::parse(&self.proxy_app)?;
        let timeout = std::time::Duration::from_millis(self.abci_timeout_ms.clamp(1_000, 600_000));
        let app = Box::new(socket::SocketApp::connect(
            address,
            timeout,
            CONNECT_WITHIN,
        )?);
        Ok(Box::new(timed::Timed(app)))
    }
}

/// `finalize_block`, refused as CometBFT refuses it when the application does not return one
/// result per transaction (the block's results, and its successor's `last_results_hash`,
/// would be unknown).
pub fn finalize_checked(
    app: &mut dyn Application,
    request: request::FinalizeBlock,
) -> Result<response::FinalizeBlock, AppError> {
    let txs = request.txs.len();
    let result = app.finalize_block(request)?;
    if result.tx_results.len() != txs {
        return Err(AppError::Protocol(format!(
            "FinalizeBlock of {txs} txs answered with {} tx results",
            result.tx_results.len()
        )));
    }
    Ok(result)
}

/// `verify_vote_extension`: whether the application accepts the extension. An answer of
/// UNKNOWN is an error, as CometBFT panics on it (an application that left the status unset
/// would otherwise reject every other validator's precommit, and the chain stall quietly).
pub fn extension_accepted(
    app: &mut dyn Application,
    request: request::VerifyVoteExtension,
) -> Result<bool, AppError> {
    match app.verify_vote_extension(request)? {
        response::VerifyVoteExtension::Accept => Ok(true),
        response::VerifyVoteExtension::Reject => Ok(false),
        response::VerifyVoteExtension::Unknown => Err(AppError::Protocol(
            "VerifyVoteExtension answered UNKNOWN".into(),
        )),
    }
}

/// The application's verdicts since a node started, each (accepted, rejected): on proposed
/// blocks (ProcessProposal) and on other validators' vote extensions (VerifyVoteExtension),
/// CometBFT's `consensus_proposal_receive_count` and `consensus_vote_extension_receive_count`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// On proposed blocks.
    pub proposals: (u64, u64),
    /// On vote extensions.
    pub extensions: (u64, u64),
}

/// Counts `accepted` in `verdicts` (one pair of [`Verdicts`]) and returns it.
pub fn tally(verdicts: &mut (u64, u64), accepted: bool) -> bool {
    *if accepted {
        &mut verdicts.0
    } else {
        &mut verdicts.1
    } += 1;
    accepted
}

/// An application shaped like ABCI 2.0.
pub trait Application: Send {
    /// The last committed height and app hash (the handshake after a restart starts here).
    fn info(&self, request: request::Info) -> Result<response::Info, AppError>;
    /// Genesis.
    fn init_chain(&mut self, request: request::InitChain) -> Result<response::InitChain, AppError>;
    /// Mempool admission (new txs and rechecks after each commit).
    fn check_tx(&self, request: request::CheckTx) -> Result<response::CheckTx, AppError>;
    /// The proposer's block contents.
    fn prepare_proposal(
        &mut self,
        request: request::PrepareProposal,
    ) -> Result<response::PrepareProposal, AppError>;
    /// Whether a proposed block is acceptable (`valid(v)` of the consensus core).
    fn process_proposal(
        &mut self,
        request: request::ProcessProposal,
    ) -> Result<response::ProcessProposal, AppError>;
    /// The extension of this validator's precommit for a block (from the height
    /// `vote_extensions_enable_height` names on).
    fn extend_vote(
        &mut self,
        request: request::ExtendVote,
    ) -> Result<response::ExtendVote, AppError>;
    /// Whether another validator's vote extension is acceptable: a rejected one makes its
    /// precommit count for nothing.
    fn verify_vote_extension(
        &mut self,
        request: request::VerifyVoteExtension,
    ) -> Result<response::VerifyVoteExtension, AppError>;
    /// Executes a decided block: one result per tx and the new app hash.
    fn finalize_block(
        &mut self,
        request: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, AppError>;
    /// Makes the last finalized block's state durable.
    fn commit(&mut self) -> Result<response::Commit, AppError>;
    /// Reads state.
    fn query(&self, request: request::Query) -> Result<response::Query, AppError>;
    /// The consensus parameters in force for the next block. An application may answer with
    /// only the parts it changes, which are completed from these (the socket client's
    /// concern; the node says so after its handshake and before each block it replays).
    /// Wrappers must pass it on.
    fn consensus_params_are(&mut self, params: &bulwark_types::tendermint::consensus::Params);
}
