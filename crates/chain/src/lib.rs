//! The chain's state machine around consensus: what the next block must look like, whether a
//! proposed block is that block, how a consensus decision becomes a CometBFT commit, and how
//! an executed block moves the state on (CometBFT's `state.State`, `MakeBlock`,
//! `validateBlock` and `updateState`).

use bulwark_consensus::mutation::{active, Mutant};
use bulwark_consensus::ValidatorSet as CoreSet;
use bulwark_instance::{Claim, ClaimError, Register};
use bulwark_store::blocks::BlockStore;
pub use bulwark_types::commit::{
    commit_from_decision, median_time, pack_signature, unpack_signature, verify_commit, CommitError,
};
use bulwark_types::hashes::{
    commit_hash, commit_sigs_hash, consensus_params_hash, data_hash, evidence_hash, results_hash,
    TxResultDigest,
};
use bulwark_types::parts::PartSet;
use bulwark_types::tendermint::abci::types::Misbehavior;
use bulwark_types::tendermint::abci::{request, response};
use bulwark_types::tendermint::block::{self, Block, Commit, CommitSig, Header};
use bulwark_types::tendermint::public_key::Algorithm;
use bulwark_types::tendermint::{
    account, chain, consensus, evidence, validator, AppHash, Genesis, Hash, Time,
};
use bulwark_types::tendermint_proto::v0_38 as pb;
use bulwark_types::tendermint_proto::v0_38::types as pb_types;
use bulwark_types::BLOCK_PROTOCOL;
use prost::Message;
use thiserror::Error;

pub mod extensions;
pub mod handshake;
pub use extensions::{extended_commit_info, extensions_enabled};

/// Why a proposed block is not the next block.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BlockError {
    /// A header field differs from what the state says it must be.
    #[error("header field {field}: expected {expected}, got {got}")]
    Header {
        /// Which field.
        field: &'static str,
        /// What the state requires.
        expected: String,
        /// What the block says.
        got: String,
    },
    /// The block's last commit does not prove the previous block.
    #[error("last commit: {0}")]
    LastCommit(#[from] CommitError),
    /// The block could not be encoded into parts.
    #[error("block encoding: {0}")]
    Encoding(String),
    /// The encoded block is larger than the consensus parameters allow (review H2).
    #[error("block of {size} bytes exceeds block.max_bytes {max}")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// `consensus_params.block.max_bytes`.
        max: u64,
    },
    /// The vote extensions sent with a decided block's commit are not that commit's.
    #[error("vote extensions: {0}")]
    Extensions(String),
    /// An instance claim among its transactions is not valid there.
    #[error("instance claim: {0}")]
    Claim(#[from] ClaimError),
    /// The application's validator or consensus-parameter updates cannot apply (CometBFT
    /// stops on these too).
    #[error("the application's updates cannot apply: {0}")]
    Updates(String),
}

/// Bytes a block carries besides its transactions, at most: header, an empty evidence list,
/// and a last commit of `validators` signatures (CometBFT's MaxOverheadForBlock,
/// MaxHeaderBytes and MaxCommitBytes, rounded up).
pub fn block_overhead(validators: usize) -> u64 {
    2_048 + 128 * validators as u64
}

/// The most validators an update makes (a genesis may list more): peers size their frames for
/// a commit of this many signatures when they start, so an update that would pass it stops
/// the chain instead.
pub const MAX_VALIDATORS: usize = 1_000;

/// The largest peer message a node of a chain with these parameters must accept: a decided
/// block of `block.max_bytes` with its commit and the commit's vote extensions (block sync
/// sends one per frame, so the frame limit follows the block limit, as CometBFT's blocksync
/// message size does).
pub fn max_message_bytes(params: &consensus::Params, validators: usize) -> usize {
    // With vote extensions, the commit's (at most `MAX_COMMIT_EXTENSION_BYTES`, and a
    // signature and framing per validator) travel with it.
    let extensions = extensions::MAX_COMMIT_EXTENSION_BYTES as u64 + 96 * validators as u64;
    usize::try_from(params.block.max_bytes + 2 * block_overhead(validators) + 4_096 + extensions)
        .unwrap_or(usize::MAX)
}

/// Everything the next height needs.
#[derive(Clone, Debug)]
pub struct ChainState {
    /// The chain id.
    pub chain_id: chain::Id,
    /// The first height.
    pub initial_height: u64,
    /// The last committed height (initial_height - 1 before the first block).
    pub last_block_height: u64,
    /// The last block's id.
    pub last_block_id: Option<block::Id>,
    /// The last block's time (genesis time before the first block).
    pub last_block_time: Time,
    /// Validators of the next height, with CometBFT proposer priorities.
    pub validators: CoreSet,
    /// Their keys, for hashing and signature checks.
    pub validator_infos: validator::Set,
    /// Validators of the height after the next (CometBFT's `NextValidators`): updates an
    /// application returns at height H take effect at H + 2.
    pub next_validators: CoreSet,
    /// Their keys.
    pub next_validator_infos: validator::Set,
    /// Validators that signed the last commit.
    pub last_validator_infos: validator::Set,
    /// Consensus parameters.
    pub consensus_params: consensus::Params,
    /// Results hash of the last block's txs.
    pub last_results_hash: Hash,
    /// App hash after the last block.
    pub app_hash: AppHash,
    /// Which instance holds each validator's key (`bulwark_instance`).
    pub claims: Register,
}

fn mismatch(
    field: &'static str,
    expected: impl std::fmt::Debug,
    got: impl std::fmt::Debug,
) -> BlockError {
    BlockError::Header {
        field,
        expected: format!("{expected:?}"),
        got: format!("{got:?}"),
    }
}

impl ChainState {
    /// The state before the first block.
    pub fn from_genesis<A>(genesis: &Genesis<A>) -> Result<ChainState, String> {
        let infos = validator::Set::without_proposer(genesis.validators.clone());
        let core = CoreSet::genesis(
            infos
                .validators()
                .iter()
                .map(|v| {
                    bulwark_consensus::Validator::new(v.address.as_bytes().to_vec(), v.power())
                })
                .collect(),
        )
        .map_err(|e| e.to_string())?;
        let initial_height =
            u64::try_from(genesis.initial_height.max(1)).map_err(|e| e.to_string())?;
        Ok(ChainState {
            chain_id: genesis.chain_id.clone(),
            initial_height,
            last_block_height: initial_height - 1,
            last_block_id: None,
            last_block_time: genesis.genesis_time,
            next_validators: core.next_height(),
            next_validator_infos: infos.clone(),
            validators: core,
            validator_infos: infos.clone(),
            last_validator_infos: infos,
            consensus_params: genesis.consensus_params.clone(),
            last_results_hash: results_hash(&[]),
            app_hash: genesis.app_hash.clone(),
            claims: Register::default(),
        })
    }

    /// The height of the next block.
    pub fn next_height(&self) -> u64 {
        self.last_block_height + 1
    }

    /// The time the next block must have (CometBFT v0.38's BFT time): the genesis time at the
    /// initial height, otherwise the power-weighted median of the last commit's vote times,
    /// which validators holding more than two thirds of the power bound, so no proposer can
    /// date a block where it likes (review C2).
    pub fn next_block_time(&self, last_commit: Option<&Commit>) -> Time {
        match last_commit {
            Some(commit) if self.next_height() > self.initial_height => {
                median_time(commit, &self.last_validator_infos).unwrap_or(self.last_block_time)
            }
            _ => self.last_block_time,
        }
    }

    /// The header the next block must have, given its txs, last commit, proposer and time.
    fn expected_header(
        &self,
        txs: &[Vec<u8>],
        evidence: &[evidence::Evidence],
        last_commit: Option<&Commit>,
        proposer: account::Id,
        time: Time,
    ) -> Result<Header, BlockError> {
        Ok(Header {
            version: block::header::Version {
                block: BLOCK_PROTOCOL,
                app: 1,
            },
            chain_id: self.chain_id.clone(),
            height: block::Height::try_from(self.next_height())
                .map_err(|e| BlockError::Encoding(e.to_string()))?,
            time,
            last_block_id: self.last_block_id,
            last_commit_hash: Some(last_commit.map_or_else(|| commit_sigs_hash(&[]), commit_hash)),
            data_hash: Some(data_hash(txs)),
            validators_hash: self.validator_infos.hash(),
            next_validators_hash: self.next_validator_infos.hash(),
            consensus_hash: consensus_params_hash(&self.consensus_params),
            app_hash: self.app_hash.clone(),
            last_results_hash: Some(self.last_results_hash),
            evidence_hash: Some(evidence_hash(evidence)),
            proposer_address: proposer,
        })
    }

    /// Builds the next block (the proposer's side) and its id.
    pub fn make_block(
        &self,
        txs: Vec<Vec<u8>>,
        last_commit: Option<Commit>,
        proposer: account::Id,
        time: Time,
    ) -> Result<(Block, block::Id, PartSet), BlockError> {
        self.make_block_with_evidence(txs, vec![], last_commit, proposer, time)
    }

    /// Builds the next block carrying `evidence`, and its id.
    pub fn make_block_with_evidence(
        &self,
        txs: Vec<Vec<u8>>,
        evidence: Vec<evidence::Evidence>,
        last_commit: Option<Commit>,
        proposer: account::Id,
        time: Time,
    ) -> Result<(Block, block::Id, PartSet), BlockError> {
        let header = self.expected_header(&txs, &evidence, last_commit.as_ref(), proposer, time)?;
        let block = Block::new(header, txs, evidence::List::new(evidence), last_commit);
        let (id, parts) = block_id(&block)?;
        Ok((block, id, parts))
    }

    /// The transaction bytes a proposer may put into the next block: `block.max_bytes` less
    /// the overhead, and no more than `configured`.
    pub fn max_block_tx_bytes(&self, configured: i64) -> i64 {
        let room = self
            .consensus_params
            .block
            .max_bytes
            // The last commit carries the last set's signatures, which may outnumber ours.
            .saturating_sub(block_overhead(
                self.validator_infos
                    .validators()
                    .len()
                    .max(self.last_validator_infos.validators().len()),
            ));
        configured.min(i64::try_from(room).unwrap_or(i64::MAX))
    }

    /// Checks that `block` is exactly the next block this state allows (every header field,
    /// the data, the size, and the last commit's signatures).
    pub fn validate_block(&self, block: &Block) -> Result<(), BlockError> {
        self.validate_encoded_block(block, pb_types::Block::from(block.clone()).encoded_len())
    }

    /// [`ChainState::validate_block`] for a block whose canonical encoding is `size` bytes:
    /// the length of the part set [`block_id`] made from this very block (measuring again
    /// copies every transaction). Never the length of bytes a peer sent.
    pub fn validate_encoded_block(&self, block: &Block, size: usize) -> Result<(), BlockError> {
        let chain_id = self.chain_id.as_str();
        let (infos, height) = (&self.validator_infos, self.next_height());
        Claim::check_block(&block.data, chain_id, infos, height, &self.claims)?;
        let max = self.consensus_params.block.max_bytes;
        if size as u64 > max {
            return Err(BlockError::TooLarge { size, max });
        }
        let h = &block.header;
        let expected = self.expected_header(
            &block.data,
            block.evidence.iter().as_slice(),
            block.last_commit.as_ref(),
            h.proposer_address,
            h.time,
        )?;
        macro_rules! same {
            ($field:ident) => {
                if h.$field != expected.$field {
                    return Err(mismatch(stringify!($field), &expected.$field, &h.$field));
                }
            };
        }
        same!(version);
        same!(chain_id);
        same!(height);
        same!(last_block_id);
        same!(last_commit_hash);
        same!(data_hash);
        same!(validators_hash);
        same!(next_validators_hash);
        same!(consensus_hash);
        same!(app_hash);
        same!(last_results_hash);
        // The evidence itself is checked by the engine, which has the sets and block times of
        // its heights (bulwark-evidence); here only that the header commits to it.
        same!(evidence_hash);
        if self.validator_infos.validator(h.proposer_address).is_none() {
            return Err(mismatch(
                "proposer_address",
                "a validator",
                h.proposer_address,
            ));
        }
        let expected_time = self.next_block_time(block.last_commit.as_ref());
        if h.time != expected_time && !active(Mutant::AcceptAnyBlockTime) {
            return Err(mismatch("time", expected_time, h.time));
        }
        if self.next_height() > self.initial_height && h.time <= self.last_block_time {
            return Err(mismatch(
                "time",
                format!("after {}", self.last_block_time),
                h.time,
            ));
        }
        match (&self.last_block_id, &block.last_commit) {
            (None, None) => {}
            (Some(last_id), Some(commit)) => verify_commit(
                &self.chain_id,
                &self.last_validator_infos,
                self.last_block_height,
                last_id,
                commit,
            )?,
            (expected_id, got) => {
                return Err(mismatch(
                    "last_commit",
                    expected_id.is_some(),
                    got.is_some(),
                ))
            }
        }
        Ok(())
    }

    /// Moves the state past `block`, executed with `result`: its validator updates take
    /// effect at the height after the next, its parameter updates at the next. Updates that
    /// cannot apply are an error and nothing changes.
    pub fn apply(
        &mut self,
        block: &Block,
        id: block::Id,
        result: &response::FinalizeBlock,
    ) -> Result<(), BlockError> {
        let (next_core, next_infos) = self.updated_next(&result.validator_updates)?;
        let params = self.updated_params(result.consensus_param_updates.as_ref())?;
        self.last_block_height = block.header.height.value();
        self.claims.apply(self.last_block_height, &block.data);
        self.last_block_id = Some(id);
        self.last_block_time = block.header.time;
        self.last_results_hash = results_hash(
            &result
                .tx_results
                .iter()
                .map(|r| TxResultDigest {
                    code: r.code.value(),
                    data: r.data.to_vec(),
                    gas_wanted: r.gas_wanted,
                    gas_used: r.gas_used,
                })
                .collect::<Vec<_>>(),
        );
        self.app_hash = result.app_hash.clone();
        self.last_validator_infos = std::mem::replace(
            &mut self.validator_infos,
            std::mem::replace(&mut self.next_validator_infos, next_infos),
        );
        self.validators = std::mem::replace(&mut self.next_validators, next_core);
        self.consensus_params = params;
        Ok(())
    }

    /// The validators of the height after the next once `updates` apply (CometBFT's
    /// `validateValidatorUpdates` and `UpdateWithChangeSet`, then one increment).
    fn updated_next(
        &self,
        updates: &[validator::Update],
    ) -> Result<(CoreSet, validator::Set), BlockError> {
        if updates.is_empty() {
            return Ok((
                self.next_validators.next_height(),
                self.next_validator_infos.clone(),
            ));
        }
        let refused = |m: String| BlockError::Updates(m);
        let allowed = &self.consensus_params.validator.pub_key_types;
        let mut keys = std::collections::HashMap::new();
        let mut changes = Vec::with_capacity(updates.len());
        for u in updates {
            // Bulwark's validators sign with ed25519 (their keys are born in the guest).
            let ed25519 = matches!(u.pub_key, bulwark_types::tendermint::PublicKey::Ed25519(_));
            if u.power.value() > 0 && !(ed25519 && allowed.contains(&Algorithm::Ed25519)) {
                return Err(refused(format!(
                    "validator {:?} uses a key type this chain does not allow",
                    u.pub_key
                )));
            }
            let address = account::Id::from(u.pub_key);
            keys.insert(address, u.pub_key);
            changes.push(bulwark_consensus::Validator::new(
                address.as_bytes().to_vec(),
                u.power.value(),
            ));
        }
        let core = self
            .next_validators
            .with_changes(&changes)
            .map_err(|e| refused(e.to_string()))?;
        if core.len() > MAX_VALIDATORS.max(self.next_validators.len()) {
            return Err(refused(format!(
                "{} validators, more than {MAX_VALIDATORS}",
                core.len()
            )));
        }
        let mut infos = Vec::with_capacity(core.len());
        for v in core.validators() {
            let address =
                account::Id::try_from(v.address.clone()).map_err(|e| refused(e.to_string()))?;
            let pub_key = match keys.get(&address) {
                Some(k) => *k,
                None => self
                    .next_validator_infos
                    .validator(address)
                    .map(|i| i.pub_key)
                    .ok_or_else(|| refused(format!("no key for validator {address}")))?,
            };
            let power = bulwark_types::tendermint::vote::Power::try_from(v.power)
                .map_err(|e| refused(e.to_string()))?;
            infos.push(validator::Info::new(pub_key, power));
        }
        Ok((core.next_height(), validator::Set::without_proposer(infos)))
    }

    /// The consensus parameters after `update` (CometBFT's `Update`, `ValidateBasic` and
    /// `ValidateUpdate`), in effect from the next height. Bulwark refuses what it cannot
    /// honour: a larger `block.max_bytes` (peers size their frames at start) and no ed25519
    /// keys.
    fn updated_params(
        &self,
        update: Option<&consensus::Params>,
    ) -> Result<consensus::Params, BlockError> {
        let Some(new) = update else {
            return Ok(self.consensus_params.clone());
        };
        let refused = |m: &str| Err(BlockError::Updates(format!("consensus parameters: {m}")));
        let old = &self.consensus_params;
        if new.block.max_bytes == 0 || new.block.max_bytes > old.block.max_bytes {
            return refused("block.max_bytes must be above 0 and not above the current value");
        }
        if new.block.max_gas < -1 {
            return refused("block.max_gas must be -1 or more");
        }
        if new.evidence.max_age_num_blocks == 0 {
            return refused("evidence.max_age_num_blocks must be above 0");
        }
        if new.evidence.max_age_duration.0.is_zero() {
            return refused("evidence.max_age_duration must be above 0");
        }
        if new.evidence.max_bytes > i64::try_from(new.block.max_bytes).unwrap_or(i64::MAX)
            || new.evidence.max_bytes < 0
        {
            return refused("evidence.max_bytes must lie within 0 and block.max_bytes");
        }
        if !new.validator.pub_key_types.contains(&Algorithm::Ed25519) {
            return refused("validator.pub_key_types must allow ed25519");
        }
        let (current, updated) = (
            old.abci.vote_extensions_enable_height.map(|h| h.value()),
            new.abci.vote_extensions_enable_height.map(|h| h.value()),
        );
        // The block being applied is at the next height; from the enable height on, every
        // precommit for a block carries an extension, and a chain cannot stop or move that.
        let height = self.next_height();
        if current != updated {
            if current.is_some_and(|e| e <= height) {
                return refused("vote extensions cannot be disabled or moved once enabled");
            }
            if updated.is_some_and(|e| e <= height) {
                return refused("vote extensions cannot be enabled at a past or current height");
            }
        }
        Ok(new.clone())
    }
}

/// Who signed `last_commit`, with the powers of `last_validators` (the set that signed it), in
/// the set's order, as CometBFT tells the application; at the initial height (no last commit)
/// round 0 and no votes.
pub fn commit_info(
    last_commit: Option<&block::Commit>,
    last_validators: &validator::Set,
) -> bulwark_types::tendermint::abci::types::CommitInfo {
    use bulwark_types::tendermint::abci::types::{
        BlockSignatureInfo, CommitInfo, Validator as AbciValidator, VoteInfo,
    };
    use bulwark_types::tendermint::block::BlockIdFlag;
    match last_commit {
        None => CommitInfo {
            round: block::Round::default(),
            votes: vec![],
        },
        Some(commit) => CommitInfo {
            round: commit.round,
            votes: commit
                .signatures
                .iter()
                .zip(last_validators.validators())
                .map(|(sig, info)| VoteInfo {
                    validator: AbciValidator {
                        address: info.address.as_bytes().try_into().unwrap_or([0; 20]),
                        power: info.power,
                    },
                    sig_info: BlockSignatureInfo::Flag(match sig {
                        CommitSig::BlockIdFlagAbsent => BlockIdFlag::Absent,
                        CommitSig::BlockIdFlagCommit { .. } => BlockIdFlag::Commit,
                        CommitSig::BlockIdFlagNil { .. } => BlockIdFlag::Nil,
                    }),
                })
                .collect(),
        },
    }
}

/// The FinalizeBlock request for a decided `block`: its txs and, as CometBFT sends it, who
/// signed the block's last commit (`decided_last_commit`), with the last validators' powers.
pub fn finalize_request(
    block: &Block,
    last_validators: &validator::Set,
    misbehavior: Vec<Misbehavior>,
) -> request::FinalizeBlock {
    let decided_last_commit = commit_info(block.last_commit.as_ref(), last_validators);
    request::FinalizeBlock {
        txs: block
            .data
            .iter()
            .map(|t| bytes::Bytes::from(t.clone()))
            .collect(),
        decided_last_commit,
        misbehavior,
        hash: block.header.hash(),
        height: block.header.height,
        time: block.header.time,
        next_validators_hash: block.header.next_validators_hash,
        proposer_address: block.header.proposer_address,
    }
}

/// What `block`'s evidence tells the application, each piece with the validator set of its
/// height from the states `blocks` stored (evidence in a block is of committed heights).
pub fn misbehavior_of(block: &Block, blocks: &BlockStore) -> Vec<Misbehavior> {
    block
        .evidence
        .iter()
        .filter_map(|e| {
            let height = bulwark_evidence::height_of(e)?;
            let state = ChainState::decode(&blocks.state(height).ok()??).ok()?;
            bulwark_evidence::misbehavior(e, &state.last_validator_infos)
        })
        .collect()
}

/// The validators committed evidence in `block` accuses, with the heights they double-signed
/// at.
pub fn accused(block: &Block) -> Vec<(account::Id, u64)> {
    block
        .evidence
        .iter()
        .filter_map(|e| match e {
            evidence::Evidence::DuplicateVote(d) => {
                Some((d.vote_a.validator_address, d.vote_a.height.value()))
            }
            evidence::Evidence::LightClientAttack(_) => None,
        })
        .collect()
}

/// The ProcessProposal request for a proposed `block`.
/// The application never sees instance claims (the node checks them).
pub fn process_request(
    block: &Block,
    last_validators: &validator::Set,
    misbehavior: Vec<Misbehavior>,
) -> request::ProcessProposal {
    let txs: Vec<bytes::Bytes> = block.data.iter().map(|t| t.clone().into()).collect();
    request::ProcessProposal {
        txs: bulwark_instance::split_claims(&txs).0,
        proposed_last_commit: Some(commit_info(block.last_commit.as_ref(), last_validators)),
        misbehavior,
        hash: block.header.hash(),
        height: block.header.height,
        time: block.header.time,
        next_validators_hash: block.header.next_validators_hash,
        proposer_address: block.header.proposer_address,
    }
}

/// A block's id: header hash and part-set header of its protobuf encoding.
pub fn block_id(block: &Block) -> Result<(block::Id, PartSet), BlockError> {
    let raw = pb::types::Block::from(block.clone()).encode_to_vec();
    let parts = PartSet::from_bytes(&raw).map_err(|e| BlockError::Encoding(e.to_string()))?;
    Ok((
        block::Id {
            hash: block.header.hash(),
            part_set_header: parts.header(),
        },
        parts,
    ))
}

/// A validator set as stored: validators in set order, their priorities, the proposer's
/// index.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredSet {
    validators: Vec<validator::Info>,
    priorities: Vec<i64>,
    proposer: u32,
}

impl StoredSet {
    fn of(infos: &validator::Set, core: &CoreSet) -> StoredSet {
        let shown = with_priorities(infos, core);
        StoredSet {
            priorities: shown
                .validators()
                .iter()
                .map(|v| v.proposer_priority.value())
                .collect(),
            validators: shown.validators().clone(),
            proposer: core.proposer().0,
        }
    }

    /// The sets it stands for, checked.
    fn restore(mut self) -> Result<(CoreSet, validator::Set), String> {
        if self.priorities.len() != self.validators.len() {
            return Err(format!(
                "{} priorities for {} validators",
                self.priorities.len(),
                self.validators.len()
            ));
        }
        for (info, priority) in self.validators.iter_mut().zip(&self.priorities) {
            info.proposer_priority = (*priority).into();
        }
        // The proposer index refers to the stored order, which is the set's order.
        let proposer_address = self
            .validators
            .get(self.proposer as usize)
            .map(|v| v.address)
            .ok_or_else(|| format!("proposer index {} outside the set", self.proposer))?;
        let infos = validator::Set::without_proposer(self.validators);
        let proposer_index = infos
            .validators()
            .iter()
            .position(|v| v.address == proposer_address)
            .ok_or("proposer not in the set")?;
        let core = CoreSet::with_priorities(
            bulwark_types::convert::core_validators(&infos),
            bulwark_consensus::ValidatorIndex(proposer_index as u32),
        )
        .map_err(|e| e.to_string())?;
        Ok((core, infos))
    }
}

/// [`ChainState`] as stored after each height (JSON, CometBFT's encodings for the chain types),
/// proposer priorities included, so a restarted node picks the same proposers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredState {
    chain_id: chain::Id,
    initial_height: u64,
    last_block_height: u64,
    last_block_id: Option<block::Id>,
    last_block_time: Time,
    /// Next height's validators in set order.
    validators: Vec<validator::Info>,
    /// Their proposer priorities, in the same order (`validator::Info` does not serialize its
    /// priority, and a restarted node must pick the same proposers as everyone else).
    priorities: Vec<i64>,
    /// Index of round 0's proposer of the next height.
    proposer: u32,
    /// The height after the next's (absent in states written before updates applied: then
    /// the next height's, incremented).
    #[serde(default)]
    next: Option<StoredSet>,
    last_validators: Vec<validator::Info>,
    consensus_params: consensus::Params,
    last_results_hash: Hash,
    /// Hex: `AppHash` has no serde encoding of its own.
    app_hash: String,
    #[serde(default)]
    claims: Register,
}

impl ChainState {
    /// The next height's validators with their proposer priorities now, and round 0's
    /// proposer (what `validators` and `consensus_state` show for the height in progress).
    pub fn validator_set(&self) -> validator::Set {
        with_priorities(&self.validator_infos, &self.validators)
    }

    /// Encodes for the block store.
    pub fn encode(&self) -> Vec<u8> {
        let current = StoredSet::of(&self.validator_infos, &self.validators);
        let stored = StoredState {
            chain_id: self.chain_id.clone(),
            initial_height: self.initial_height,
            last_block_height: self.last_block_height,
            last_block_id: self.last_block_id,
            last_block_time: self.last_block_time,
            validators: current.validators,
            priorities: current.priorities,
            proposer: current.proposer,
            next: Some(StoredSet::of(
                &self.next_validator_infos,
                &self.next_validators,
            )),
            last_validators: self.last_validator_infos.validators().clone(),
            consensus_params: self.consensus_params.clone(),
            last_results_hash: self.last_results_hash,
            app_hash: hex::encode(self.app_hash.as_bytes()),
            claims: self.claims.clone(),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Decodes what [`ChainState::encode`] wrote, checking that it is a usable state.
    pub fn decode(bytes: &[u8]) -> Result<ChainState, String> {
        let s: StoredState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let (core, infos) = StoredSet {
            validators: s.validators,
            priorities: s.priorities,
            proposer: s.proposer,
        }
        .restore()?;
        let (next_core, next_infos) = match s.next {
            Some(next) => next.restore()?,
            None => (core.next_height(), infos.clone()),
        };
        if s.last_block_height + 1 < s.initial_height {
            return Err("last block height below the initial height".into());
        }
        Ok(ChainState {
            chain_id: s.chain_id,
            initial_height: s.initial_height,
            last_block_height: s.last_block_height,
            last_block_id: s.last_block_id,
            last_block_time: s.last_block_time,
            validators: core,
            validator_infos: infos,
            next_validators: next_core,
            next_validator_infos: next_infos,
            last_validator_infos: validator::Set::without_proposer(s.last_validators),
            consensus_params: s.consensus_params,
            last_results_hash: s.last_results_hash,
            app_hash: hex::decode(&s.app_hash)
                .map_err(|e| e.to_string())
                .and_then(|b| AppHash::try_from(b).map_err(|e| e.to_string()))?,
            claims: s.claims,
        })
    }
}

/// `infos` with the proposer priorities of `core` (the same validators) and its proposer.
fn with_priorities(infos: &validator::Set, core: &CoreSet) -> validator::Set {
    let by_address: std::collections::HashMap<&[u8], i64> = core
        .validators()
        .iter()
        .map(|v| (v.address.as_slice(), v.priority))
        .collect();
    let mut shown: Vec<validator::Info> = infos.validators().clone();
    for info in &mut shown {
        let priority = by_address.get(info.address.as_bytes()).copied();
        info.proposer_priority = priority.unwrap_or(0).into();
    }
    let proposer = shown.get(core.proposer().0 as usize).cloned();
    validator::Set::new(shown, proposer)
}

/// The first height's validators with their priorities there, from the genesis validators
/// (`infos`): as [`ChainState::from_genesis`] starts them.
pub fn genesis_validators(infos: &validator::Set) -> Result<validator::Set, String> {
    let core = CoreSet::genesis(
        infos
            .validators()
            .iter()
            .map(|v| bulwark_consensus::Validator::new(v.address.as_bytes().to_vec(), v.power()))
            .collect(),
    )
    .map_err(|e| e.to_string())?;
    Ok(with_priorities(infos, &core))
}

/// The application's results of a block as stored (protobuf `ResponseFinalizeBlock`). Takes
/// them whole: a copy of every event of a block was a tenth of committing it.
pub fn encode_results(results: response::FinalizeBlock) -> Vec<u8> {
    pb::abci::ResponseFinalizeBlock::from(results).encode_to_vec()
}

/// Reads results written by [`encode_results`].
pub fn decode_results(bytes: &[u8]) -> Result<response::FinalizeBlock, String> {
    let raw = pb::abci::ResponseFinalizeBlock::decode(bytes).map_err(|e| e.to_string())?;
    response::FinalizeBlock::try_from(raw).map_err(|e| e.to_string())
}

/// The attributes of `events` marked for indexing, as `type.key` and value (CometBFT's kv
/// indexer: events without a type and attributes without a key are left out).
pub fn indexed_attributes(
    events: &[bulwark_types::tendermint::abci::Event],
) -> Vec<bulwark_store::events::Attribute> {
    let mut out = Vec::new();
    for event in events.iter().filter(|e| !e.kind.is_empty()) {
        for attribute in event.attributes.iter().filter(|a| a.index()) {
            let (Ok(key), Ok(value)) = (attribute.key_str(), attribute.value_str()) else {
                continue;
            };
            let composite = format!("{}.{key}", event.kind);
            if key.is_empty() || bulwark_store::events::RESERVED_KEYS.contains(&composite.as_str())
            {
                continue;
            }
            out.push((composite, value.to_string()));
        }
    }
    out
}
