//! Setup shared by the node's integration tests.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

pub mod net;

use bulwark_app::kvstore::KvStore;
use bulwark_app::{AppError, Application};
use bulwark_node::chain::ChainState;
use bulwark_types::signing::public_key;
use bulwark_types::tendermint::abci::{request, response};
use bulwark_types::tendermint::{validator, AppHash, Genesis, Time};
use ed25519_consensus::SigningKey;

/// A genesis with these validators at equal power, CometBFT's default parameters.
pub fn genesis(chain_id: &str, keys: &[SigningKey]) -> Genesis<serde_json::Value> {
    Genesis {
        genesis_time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
        chain_id: chain_id.parse().unwrap(),
        initial_height: 1,
        consensus_params: bulwark_types::genesis::default_consensus_params(),
        validators: keys
            .iter()
            .map(|k| validator::Info::new(public_key(k), 10u32.into()))
            .collect(),
        app_hash: Default::default(),
        app_state: serde_json::Value::Null,
    }
}

/// The application's last committed app hash.
pub fn app_hash(app: &dyn Application) -> AppHash {
    app.info(request::Info {
        version: String::new(),
        block_version: 11,
        p2p_version: 8,
        abci_version: String::new(),
    })
    .unwrap()
    .last_block_app_hash
}

/// A fresh kvstore in `dir`, brought to genesis, and the chain state it starts from.
pub fn app_at_genesis(
    dir: &std::path::Path,
    g: &Genesis<serde_json::Value>,
) -> (KvStore, ChainState) {
    let mut app = KvStore::open(dir).unwrap();
    let state = bulwark_node::handshake::genesis_state(&mut app, g).unwrap();
    (app, state)
}

/// The kvstore, with InitChain's and FinalizeBlock's answers changed by `init` and `finalize`:
/// an application that answers what the node must refuse.
pub struct Altered {
    pub inner: KvStore,
    pub init: fn(&mut response::InitChain),
    pub finalize: fn(&mut response::FinalizeBlock),
    /// Every FinalizeBlock request, in order.
    pub finalized: Vec<request::FinalizeBlock>,
    /// The parameters the node said were in force, each with how many blocks were finalized
    /// by then.
    pub params_told: Vec<(usize, bulwark_types::tendermint::consensus::Params)>,
}

impl Application for Altered {
    fn info(&self, r: request::Info) -> Result<response::Info, AppError> {
        self.inner.info(r)
    }
    fn init_chain(&mut self, r: request::InitChain) -> Result<response::InitChain, AppError> {
        let mut answer = self.inner.init_chain(r)?;
        (self.init)(&mut answer);
        Ok(answer)
    }
    fn check_tx(&self, r: request::CheckTx) -> Result<response::CheckTx, AppError> {
        self.inner.check_tx(r)
    }
    fn prepare_proposal(
        &mut self,
        r: request::PrepareProposal,
    ) -> Result<response::PrepareProposal, AppError> {
        self.inner.prepare_proposal(r)
    }
    fn process_proposal(
        &mut self,
        r: request::ProcessProposal,
    ) -> Result<response::ProcessProposal, AppError> {
        self.inner.process_proposal(r)
    }
    fn finalize_block(
        &mut self,
        r: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, AppError> {
        self.finalized.push(r.clone());
        let mut answer = self.inner.finalize_block(r)?;
        (self.finalize)(&mut answer);
        Ok(answer)
    }
    fn extend_vote(&mut self, r: request::ExtendVote) -> Result<response::ExtendVote, AppError> {
        self.inner.extend_vote(r)
    }
    fn verify_vote_extension(
        &mut self,
        r: request::VerifyVoteExtension,
    ) -> Result<response::VerifyVoteExtension, AppError> {
        self.inner.verify_vote_extension(r)
    }
    fn commit(&mut self) -> Result<response::Commit, AppError> {
        self.inner.commit()
    }
    fn query(&self, r: request::Query) -> Result<response::Query, AppError> {
        self.inner.query(r)
    }
    fn consensus_params_are(&mut self, p: &bulwark_types::tendermint::consensus::Params) {
        self.params_told.push((self.finalized.len(), p.clone()));
        self.inner.consensus_params_are(p)
    }
}

/// What an application was asked, for the tests to check.
#[derive(Default)]
pub struct AskedLog {
    pub prepared: Vec<request::PrepareProposal>,
    pub extended: Vec<request::ExtendVote>,
    pub verified: Vec<(request::VerifyVoteExtension, response::VerifyVoteExtension)>,
    /// Answer VerifyVoteExtension with UNKNOWN (a status left unset).
    pub unknown: bool,
}

/// Shared with the application, which outlives no test.
pub type Asked = std::sync::Arc<std::sync::Mutex<AskedLog>>;

/// The extension [`Extending`] adds to a precommit for block `hash` at `height`.
pub fn extension_for(height: u64, hash: &[u8]) -> Vec<u8> {
    let mut e = b"ext".to_vec();
    e.extend(height.to_be_bytes());
    e.extend(&hash[..4]);
    e
}

/// The kvstore, extending its precommits with [`extension_for`], accepting only extensions
/// made so, and noting what it is asked.
pub struct Extending {
    pub inner: KvStore,
    pub asked: Asked,
}

impl Application for Extending {
    fn info(&self, r: request::Info) -> Result<response::Info, AppError> {
        self.inner.info(r)
    }
    fn init_chain(&mut self, r: request::InitChain) -> Result<response::InitChain, AppError> {
        self.inner.init_chain(r)
    }
    fn check_tx(&self, r: request::CheckTx) -> Result<response::CheckTx, AppError> {
        self.inner.check_tx(r)
    }
    fn prepare_proposal(
        &mut self,
        r: request::PrepareProposal,
    ) -> Result<response::PrepareProposal, AppError> {
        self.asked.lock().unwrap().prepared.push(r.clone());
        self.inner.prepare_proposal(r)
    }
    fn process_proposal(
        &mut self,
        r: request::ProcessProposal,
    ) -> Result<response::ProcessProposal, AppError> {
        self.inner.process_proposal(r)
    }
    fn extend_vote(&mut self, r: request::ExtendVote) -> Result<response::ExtendVote, AppError> {
        let vote_extension = extension_for(r.height.value(), r.hash.as_bytes()).into();
        self.asked.lock().unwrap().extended.push(r);
        Ok(response::ExtendVote { vote_extension })
    }
    fn verify_vote_extension(
        &mut self,
        r: request::VerifyVoteExtension,
    ) -> Result<response::VerifyVoteExtension, AppError> {
        let expected = extension_for(r.height.value(), r.hash.as_bytes());
        let answer = if self.asked.lock().unwrap().unknown {
            response::VerifyVoteExtension::Unknown
        } else if r.vote_extension == expected {
            response::VerifyVoteExtension::Accept
        } else {
            response::VerifyVoteExtension::Reject
        };
        self.asked.lock().unwrap().verified.push((r, answer));
        Ok(answer)
    }
    fn finalize_block(
        &mut self,
        r: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, AppError> {
        self.inner.finalize_block(r)
    }
    fn commit(&mut self) -> Result<response::Commit, AppError> {
        self.inner.commit()
    }
    fn query(&self, r: request::Query) -> Result<response::Query, AppError> {
        self.inner.query(r)
    }
    fn consensus_params_are(&mut self, p: &bulwark_types::tendermint::consensus::Params) {
        self.inner.consensus_params_are(p)
    }
}
