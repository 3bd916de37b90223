//! Vote extensions (ABCI 2.0): from the height `abci.vote_extensions_enable_height` names on,
//! every precommit for a block carries what the application added to it (ExtendVote), signed
//! apart from the vote (CometBFT's `CanonicalVoteExtension`); the next proposer hands a
//! commit's extensions to the application in PrepareProposal, and block sync carries them.

use crate::{commit_info, process_request, BlockError};
use bulwark_types::signing::{verify, vote_extension_sign_bytes};
use bulwark_types::tendermint::abci::request;
use bulwark_types::tendermint::abci::types::{
    BlockSignatureInfo, ExtendedCommitInfo, ExtendedVoteInfo, Misbehavior,
};
use bulwark_types::tendermint::block::{Block, BlockIdFlag, Commit, CommitSig};
use bulwark_types::tendermint::{chain, consensus, validator, vote, Signature};
use std::collections::HashMap;

/// A commit's vote extensions with their signatures, by validator set index (both empty where
/// the commit holds no precommit for the block).
pub type Extensions = Vec<(Vec<u8>, Vec<u8>)>;

/// Whether `v` carries an extension, signed, exactly when it must (`extends`: a precommit for
/// a block at a height with vote extensions). A vote's signature does not cover its
/// extension: anywhere else one is padding a peer could add at will (review M2 of the relay).
pub fn well_formed(extends: bool, v: &vote::Vote) -> bool {
    extends == v.extension_signature.is_some() && (extends || v.extension.is_empty())
}

/// The verified vote extensions of one height's precommits for a block, with their
/// signatures, by round and validator set index: one each, as the core keeps one precommit
/// each.
#[derive(Debug, Default)]
pub struct HeightExtensions(HashMap<(u32, u32), (Vec<u8>, Vec<u8>)>);

impl HeightExtensions {
    /// Forgets them all (a new height).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Validator `index`'s extension and signature in `round`.
    pub fn get(&self, round: u32, index: u32) -> Option<&(Vec<u8>, Vec<u8>)> {
        self.0.get(&(round, index))
    }

    /// Keeps validator `index`'s extension in `round`, unless it has one: the first stays.
    pub fn keep(&mut self, round: u32, index: u32, extension: (Vec<u8>, Vec<u8>)) {
        self.0.entry((round, index)).or_insert(extension);
    }

    /// Keeps our own extension in `round` (signed again after a restart: the latest counts).
    pub fn keep_own(&mut self, round: u32, index: u32, extension: (Vec<u8>, Vec<u8>)) {
        self.0.insert((round, index), extension);
    }

    /// The extensions of `commit`'s precommits for its block, by set index.
    pub fn of_commit(&self, commit: &Commit) -> Extensions {
        (0u32..)
            .zip(&commit.signatures)
            .map(|(i, sig)| match sig {
                CommitSig::BlockIdFlagCommit { .. } => self
                    .get(commit.round.value(), i)
                    .cloned()
                    .unwrap_or_default(),
                _ => Default::default(),
            })
            .collect()
    }
}

/// Whether precommits for a block carry vote extensions at `height` under `params`.
pub fn extensions_enabled(params: &consensus::Params, height: u64) -> bool {
    params
        .abci
        .vote_extensions_enable_height
        .is_some_and(|e| e.value() <= height)
}

/// The ExtendVote request for a precommit for `block`: what ProcessProposal was told of it.
pub fn extend_request(
    block: &Block,
    last_validators: &validator::Set,
    misbehavior: Vec<Misbehavior>,
) -> request::ExtendVote {
    let p = process_request(block, last_validators, misbehavior);
    request::ExtendVote {
        hash: p.hash,
        height: p.height,
        time: p.time,
        txs: p.txs,
        proposed_last_commit: p.proposed_last_commit,
        misbehavior: p.misbehavior,
        next_validators_hash: p.next_validators_hash,
        proposer_address: p.proposer_address,
    }
}

/// [`commit_info`] as PrepareProposal's `local_last_commit`, each precommit for the block with
/// the extension and signature `extensions` holds for its validator (none where vote
/// extensions were not enabled at the last commit's height).
pub fn extended_commit_info(
    last_commit: Option<&Commit>,
    last_validators: &validator::Set,
    extensions: &[(Vec<u8>, Vec<u8>)],
) -> ExtendedCommitInfo {
    let info = commit_info(last_commit, last_validators);
    ExtendedCommitInfo {
        round: info.round,
        votes: info
            .votes
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let (extension, signature) = extensions
                    .get(i)
                    .filter(|_| v.sig_info == BlockSignatureInfo::Flag(BlockIdFlag::Commit))
                    .cloned()
                    .unwrap_or_default();
                ExtendedVoteInfo {
                    validator: v.validator,
                    sig_info: v.sig_info,
                    vote_extension: extension.into(),
                    extension_signature: Signature::new(signature).ok().flatten(),
                }
            })
            .collect(),
    }
}

/// Checks `extensions`, sent with the (verified) `commit` of block `height` signed by `set`:
/// one entry per validator, and a signed extension exactly where the commit holds a
/// precommit for the block, its signature by that validator's key.
pub fn verify_commit_extensions(
    chain_id: &chain::Id,
    set: &validator::Set,
    height: u64,
    commit: &Commit,
    extensions: Extensions,
) -> Result<Extensions, BlockError> {
    let refused = |m: String| Err(BlockError::Extensions(m));
    if extensions.len() != commit.signatures.len() || extensions.len() != set.validators().len() {
        return refused(format!(
            "{} extensions for a commit of {} signatures",
            extensions.len(),
            commit.signatures.len()
        ));
    }
    for (i, ((sig, (extension, signature)), info)) in commit
        .signatures
        .iter()
        .zip(&extensions)
        .zip(set.validators())
        .enumerate()
    {
        if !matches!(sig, CommitSig::BlockIdFlagCommit { .. }) {
            if !extension.is_empty() || !signature.is_empty() {
                return refused(format!("validator {i} precommitted no block, yet extends"));
            }
            continue;
        }
        let bytes = vote_extension_sign_bytes(extension, height, commit.round.value(), chain_id);
        let signature = Signature::new(signature.clone())
            .ok()
            .flatten()
            .ok_or_else(|| BlockError::Extensions(format!("validator {i}: no signature")))?;
        if verify(&info.pub_key, &bytes, &signature).is_err() {
            return refused(format!("validator {i}: the signature does not verify"));
        }
    }
    Ok(extensions)
}
