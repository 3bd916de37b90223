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
use bulwark_types::tendermint::{chain, consensus, validator, Hash, Signature};
use std::collections::HashMap;

/// A commit's vote extensions with their signatures, by validator set index (both empty where
/// the commit holds no precommit for the block).
pub type Extensions = Vec<(Vec<u8>, Vec<u8>)>;

/// CometBFT's largest vote extension.
pub const MAX_VOTE_EXTENSION_BYTES: usize = 1 << 20;

/// The most bytes of vote extensions one commit carries. A Bulwark rule: block sync sends a
/// decided block with its commit's extensions in one frame, whose size peers fix at start
/// ([`crate::max_message_bytes`]), so one validator's extension is at most this share of it
/// (and CometBFT's 1 MiB): 1 MiB up to 4 validators, 40 KiB for 100, 4 KiB for 1,000.
pub const MAX_COMMIT_EXTENSION_BYTES: usize = 4 << 20;

/// The largest extension a member of a set of `validators` may add to its precommit.
pub fn max_extension_bytes(validators: usize) -> usize {
    MAX_VOTE_EXTENSION_BYTES.min(MAX_COMMIT_EXTENSION_BYTES / validators.max(1))
}

/// Whether a vote carries an extension, signed and within `max` bytes, exactly when it must
/// (`extends`: a precommit for a block at a height with vote extensions). A vote's signature
/// does not cover its extension: anywhere else one is padding a peer could add at will
/// (review M2 of the relay).
pub fn well_formed(extends: bool, extension: &[u8], signed: bool, max: usize) -> bool {
    extends == signed && extension.len() <= if extends { max } else { 0 }
}

/// A kept extension: the block its precommit is for, the extension and its signature.
type Kept = (Hash, (Vec<u8>, Vec<u8>));

/// The verified vote extensions of one height's precommits for a block, with their
/// signatures, by round, validator set index and block: at most two blocks per validator and
/// round (an equivocator's extension for one block is never taken for another's).
#[derive(Debug, Default)]
pub struct HeightExtensions(HashMap<(u32, u32), Vec<Kept>>);

impl HeightExtensions {
    /// Forgets them all (a new height).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Validator `index`'s extension and signature in `round` for block `hash`.
    pub fn get(&self, round: u32, index: u32, hash: Hash) -> Option<&(Vec<u8>, Vec<u8>)> {
        let kept = self.0.get(&(round, index))?;
        kept.iter().find(|(h, _)| *h == hash).map(|(_, e)| e)
    }

    /// Keeps validator `index`'s extension in `round` for block `hash`, unless one is kept
    /// for that block (the first stays) or for two blocks already.
    pub fn keep(&mut self, round: u32, index: u32, hash: Hash, extension: (Vec<u8>, Vec<u8>)) {
        let kept = self.0.entry((round, index)).or_default();
        if kept.len() < 2 && !kept.iter().any(|(h, _)| *h == hash) {
            kept.push((hash, extension));
        }
    }

    /// Keeps our own extension in `round` for block `hash` (signed again after a restart:
    /// the latest counts).
    pub fn keep_own(&mut self, round: u32, index: u32, hash: Hash, extension: (Vec<u8>, Vec<u8>)) {
        let kept = self.0.entry((round, index)).or_default();
        kept.retain(|(h, _)| *h != hash);
        kept.push((hash, extension));
    }

    /// The extensions of `commit`'s precommits for its block, by set index.
    pub fn of_commit(&self, commit: &Commit) -> Extensions {
        let (round, hash) = (commit.round.value(), commit.block_id.hash);
        (0u32..)
            .zip(&commit.signatures)
            .map(|(i, sig)| match sig {
                CommitSig::BlockIdFlagCommit { .. } => {
                    self.get(round, i, hash).cloned().unwrap_or_default()
                }
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
    let max = max_extension_bytes(set.validators().len());
    if extensions.iter().any(|(e, _)| e.len() > max) {
        return refused(format!("an extension above {max} bytes"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_kept_for_one_block_is_never_given_for_another() {
        let (x, y, z) = (
            Hash::Sha256([1; 32]),
            Hash::Sha256([2; 32]),
            Hash::Sha256([3; 32]),
        );
        let ext = |b: u8| (vec![b], vec![b; 64]);
        let mut kept = HeightExtensions::default();
        kept.keep(0, 1, x, ext(1));
        kept.keep(0, 1, x, ext(9));
        kept.keep(0, 1, y, ext(2));
        kept.keep(0, 1, z, ext(3));
        assert_eq!(
            kept.get(0, 1, x),
            Some(&ext(1)),
            "the first for a block stays"
        );
        assert_eq!(kept.get(0, 1, y), Some(&ext(2)));
        assert_eq!(
            kept.get(0, 1, z),
            None,
            "two blocks per validator and round at most"
        );
        assert_eq!(kept.get(1, 1, x), None);
        kept.keep_own(0, 1, x, ext(7));
        assert_eq!(
            kept.get(0, 1, x),
            Some(&ext(7)),
            "our own, signed again, replaces"
        );
        assert_eq!(max_extension_bytes(4), MAX_VOTE_EXTENSION_BYTES);
        assert_eq!(max_extension_bytes(1_000) * 1_000, 4_194_000);
        assert!(well_formed(true, &[0; 10], true, 10) && !well_formed(true, &[0; 11], true, 10));
        assert!(!well_formed(false, b"x", false, 10) && !well_formed(false, b"", true, 10));
        assert!(!well_formed(true, b"", false, 10) && well_formed(false, b"", false, 10));
    }
}
