//! The restart handshake (CometBFT's `Handshaker`): the application says which height it has
//! committed; the block store says which the chain has. If the application is behind (a crash
//! between storing a block and the application's Commit), the missing blocks are replayed into
//! it, and each replay must produce the app hash the chain recorded. An application ahead of
//! the store, or one that computes another app hash, is an error: the node must not start.

use crate::{finalize_request, ChainState};
use bulwark_app::{AppError, Application};
use bulwark_store::blocks::BlockStore;
use bulwark_store::StoreError;
use bulwark_types::tendermint::abci::request;
use bulwark_types::tendermint::block::{self, Block};
use bulwark_types::tendermint::validator;
use bulwark_types::tendermint_proto::v0_38 as pb;
use prost::Message;
use thiserror::Error;

/// Why a node cannot start.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The application failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// A stored record does not decode.
    #[error("stored {what} at height {height} is unreadable: {reason}")]
    Corrupt {
        /// Block or state.
        what: &'static str,
        /// Height.
        height: u64,
        /// Why.
        reason: String,
    },
    /// The application has committed heights the chain has not stored.
    #[error("the application is at height {app}, ahead of the block store at {store}")]
    AppAhead {
        /// Application height.
        app: u64,
        /// Store height.
        store: u64,
    },
    /// The application's app hash at its height is not the one the chain recorded there.
    #[error("the application at height {height} has app hash {got}, the chain recorded {expected}: its state is not the chain's")]
    AppStateDiffers {
        /// Height.
        height: u64,
        /// Recorded.
        expected: String,
        /// The application's.
        got: String,
    },
    /// The genesis file cannot start the application.
    #[error("genesis: {0}")]
    Genesis(String),
    /// Replaying a block gave another app hash than the chain recorded.
    #[error("replaying height {height} gave app hash {got}, the chain recorded {expected}")]
    AppHashMismatch {
        /// Height.
        height: u64,
        /// Recorded.
        expected: String,
        /// Computed.
        got: String,
    },
}

/// The Info request of the handshake.
fn info_request() -> request::Info {
    request::Info {
        version: String::new(),
        block_version: 11,
        p2p_version: 8,
        abci_version: "2.0.0".into(),
    }
}

/// Brings `app` up to the block store and returns the chain state to continue from (`genesis`
/// if nothing is stored).
pub fn handshake(
    app: &mut dyn Application,
    blocks: &BlockStore,
    genesis: ChainState,
) -> Result<ChainState, HandshakeError> {
    let info = app.info(info_request())?;
    let app_height = info.last_block_height.value();
    let Some(store_height) = blocks.latest_height()? else {
        if app_height > genesis.last_block_height {
            return Err(HandshakeError::AppAhead {
                app: app_height,
                store: genesis.last_block_height,
            });
        }
        app.consensus_params_are(&genesis.consensus_params);
        return Ok(genesis);
    };
    if app_height > store_height {
        return Err(HandshakeError::AppAhead {
            app: app_height,
            store: store_height,
        });
    }
    let state_at = |h: u64| -> Result<ChainState, HandshakeError> {
        let bytes = blocks.state(h)?.ok_or(HandshakeError::Corrupt {
            what: "state",
            height: h,
            reason: "missing".into(),
        })?;
        ChainState::decode(&bytes).map_err(|reason| HandshakeError::Corrupt {
            what: "state",
            height: h,
            reason,
        })
    };
    let first = genesis.initial_height;
    // The parameters in force for the next block to replay (an update takes effect at the next
    // height): what the application's partial updates are completed from.
    let mut params = genesis.consensus_params.clone();
    let mut last_validators = if app_height < first {
        genesis.last_validator_infos.clone()
    } else {
        // The application's state must be the chain's at its height, as CometBFT checks: a
        // diverged or rolled-back application would otherwise vote on hashes it does not hold.
        let recorded = state_at(app_height)?;
        if recorded.app_hash != info.last_block_app_hash {
            return Err(HandshakeError::AppStateDiffers {
                height: app_height,
                expected: hex::encode_upper(recorded.app_hash.as_bytes()),
                got: hex::encode_upper(info.last_block_app_hash.as_bytes()),
            });
        }
        params = recorded.consensus_params;
        // Block h's last commit was signed by height h - 1's validators, which the state
        // after h - 1 keeps as its last validators (not its next ones: a validator update
        // makes them differ).
        recorded.last_validator_infos
    };
    for h in (app_height + 1).max(first)..=store_height {
        let bytes = blocks.block(h)?.ok_or(HandshakeError::Corrupt {
            what: "block",
            height: h,
            reason: "missing".into(),
        })?;
        let block = pb::types::Block::decode(bytes.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|raw| Block::try_from(raw).map_err(|e| e.to_string()))
            .map_err(|reason| HandshakeError::Corrupt {
                what: "block",
                height: h,
                reason,
            })?;
        let request = finalize_request(
            &block,
            &last_validators,
            crate::misbehavior_of(&block, blocks),
        );
        app.consensus_params_are(&params);
        let result = bulwark_instance::finalize_without_claims(request, |r| {
            bulwark_app::finalize_checked(app, r)
        })?;
        let recorded = state_at(h)?;
        if result.app_hash != recorded.app_hash {
            return Err(HandshakeError::AppHashMismatch {
                height: h,
                expected: format!("{:?}", recorded.app_hash),
                got: format!("{:?}", result.app_hash),
            });
        }
        app.commit()?;
        params = recorded.consensus_params;
        last_validators = recorded.last_validator_infos;
    }
    let state = state_at(store_height)?;
    app.consensus_params_are(&state.consensus_params);
    Ok(state)
}

/// The chain state before the first block, with the application brought to genesis: an
/// application at height 0 gets InitChain with the genesis validators and app state, whether
/// or not the chain has blocks (an application that lost its data replays from genesis), as
/// CometBFT's handshake does. Its answer may set the genesis app hash; it may not change the
/// validators or the consensus parameters, which are the attested genesis's.
pub fn genesis_state(
    app: &mut dyn Application,
    genesis: &bulwark_types::tendermint::Genesis<serde_json::Value>,
) -> Result<ChainState, HandshakeError> {
    let genesis_error = |e: &dyn std::fmt::Display| HandshakeError::Genesis(e.to_string());
    let info = app.info(info_request())?;
    let mut state = ChainState::from_genesis(genesis).map_err(HandshakeError::Genesis)?;
    state.app_hash = info.last_block_app_hash;
    if info.last_block_height.value() != 0 {
        return Ok(state);
    }
    let validators: Vec<validator::Update> = genesis
        .validators
        .iter()
        .map(|v| validator::Update {
            pub_key: v.pub_key,
            power: v.power,
        })
        .collect();
    let app_state = serde_json::to_vec(&genesis.app_state).map_err(|e| genesis_error(&e))?;
    let answer = app.init_chain(request::InitChain {
        time: genesis.genesis_time,
        chain_id: genesis.chain_id.to_string(),
        consensus_params: genesis.consensus_params.clone(),
        validators: validators.clone(),
        app_state_bytes: app_state.into(),
        initial_height: block::Height::try_from(genesis.initial_height)
            .map_err(|e| genesis_error(&e))?,
    })?;
    let sorted = |mut v: Vec<validator::Update>| {
        v.sort_by_key(|u| (u.pub_key.to_bytes(), u.power.value()));
        v
    };
    if !answer.validators.is_empty() && sorted(answer.validators) != sorted(validators) {
        return Err(genesis_error(
            &"the application's InitChain replaces the genesis validators; Bulwark's are the \
              attested enrollments of the genesis",
        ));
    }
    // Parameters are part of the attested genesis too; an application may only repeat them.
    if answer
        .consensus_params
        .is_some_and(|p| p != genesis.consensus_params)
    {
        return Err(genesis_error(
            &"the application's InitChain changes the consensus parameters; Bulwark's are the \
              genesis's",
        ));
    }
    if !answer.app_hash.as_bytes().is_empty() {
        state.app_hash = answer.app_hash;
    } else {
        state.app_hash = genesis.app_hash.clone();
    }
    Ok(state)
}
