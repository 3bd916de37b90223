//! Commits: how a consensus decision becomes a CometBFT commit, how a commit is checked
//! against a validator set, and the BFT time a commit fixes for the next block. Vote
//! timestamps, which CometBFT signs but the consensus core does not interpret, travel inside
//! the core's opaque signature bytes ([`pack_signature`]).

use crate::convert::value_id;
use crate::signing::verify_vote;
use bulwark_consensus::mutation::{active, Mutant};
use bulwark_consensus::{Decision, Signature as CoreSignature, VoteKind};
use tendermint::block::{self, Commit, CommitSig};
use tendermint::{chain, validator, vote, Signature, Time};
use thiserror::Error;

/// Why a commit does not prove a block.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommitError {
    /// For another height or block.
    #[error("commit is for height {got_height} block {got_block}, expected height {height} block {block}")]
    WrongBlock {
        /// Expected height.
        height: u64,
        /// Expected block hash.
        block: String,
        /// Committed height.
        got_height: u64,
        /// Committed block hash.
        got_block: String,
    },
    /// Not one signature slot per validator.
    #[error("commit has {got} signatures for {expected} validators")]
    WrongSize {
        /// Validators.
        expected: usize,
        /// Signature slots.
        got: usize,
    },
    /// A slot names another validator than the set's at that index.
    #[error("signature {index} names another validator")]
    WrongValidator {
        /// Slot index.
        index: usize,
    },
    /// A signature does not verify.
    #[error("signature {index} does not verify")]
    BadSignature {
        /// Slot index.
        index: usize,
    },
    /// Not more than two thirds of the power signed the block.
    #[error("only {signed} of {total} voting power signed")]
    NotEnoughPower {
        /// Power that signed the block.
        signed: u64,
        /// Total power.
        total: u64,
    },
}

/// Packs what a CometBFT vote signs but the consensus core does not interpret (the timestamp)
/// with the signature into the core's opaque signature bytes.
pub fn pack_signature(timestamp: Time, signature: &Signature) -> CoreSignature {
    let nanos = timestamp.unix_timestamp_nanos();
    let mut out = nanos.to_be_bytes().to_vec();
    out.extend_from_slice(signature.as_bytes());
    CoreSignature(out)
}

/// The inverse of [`pack_signature`].
pub fn unpack_signature(packed: &CoreSignature) -> Option<(Time, Signature)> {
    let b = &packed.0;
    if b.len() != 16 + 64 {
        return None;
    }
    let nanos = i128::from_be_bytes(b[..16].try_into().ok()?);
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let time = Time::from_unix_timestamp(secs, nanos.rem_euclid(1_000_000_000) as u32).ok()?;
    let signature = Signature::new(&b[16..]).ok()??;
    Some((time, signature))
}

/// CometBFT's `MedianTime`: the power-weighted median of the timestamps of a commit's present
/// signatures (commit and nil), by the powers of `validators` (the set that signed it).
/// `None` when no signature is present.
pub fn median_time(commit: &Commit, validators: &validator::Set) -> Option<Time> {
    let mut weighted: Vec<(Time, u64)> = commit
        .signatures
        .iter()
        .filter_map(|sig| match sig {
            CommitSig::BlockIdFlagAbsent => None,
            CommitSig::BlockIdFlagCommit {
                validator_address,
                timestamp,
                ..
            }
            | CommitSig::BlockIdFlagNil {
                validator_address,
                timestamp,
                ..
            } => validators
                .validator(*validator_address)
                .map(|v| (*timestamp, v.power())),
        })
        .collect();
    let total: u64 = weighted.iter().map(|(_, p)| p).sum();
    weighted.sort_by_key(|(t, _)| *t);
    let mut median = total / 2;
    for (time, power) in weighted {
        if median <= power {
            return Some(time);
        }
        median -= power;
    }
    None
}

/// The CometBFT commit for a decision: one slot per validator in set order, `Commit` for
/// precommits of the block, `Nil` for nil precommits, `Absent` otherwise. A precommit for
/// another block is `Absent` too, as CometBFT's `MakeExtendedCommit` excludes it: its
/// signature covers that other block, so kept as `Nil` it would never verify and every block
/// carrying the commit would be invalid (review C1).
pub fn commit_from_decision(
    decision: &Decision,
    id: block::Id,
    infos: &validator::Set,
) -> Result<Commit, CommitError> {
    let value = value_id(&id);
    let signatures = infos
        .validators()
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let Some(pc) = decision.precommits.iter().find(|v| {
                v.message.validator.as_usize() == i && v.message.kind == VoteKind::Precommit
            }) else {
                return Ok(CommitSig::BlockIdFlagAbsent);
            };
            let (timestamp, signature) =
                unpack_signature(&pc.signature).ok_or(CommitError::BadSignature { index: i })?;
            Ok(match pc.message.value {
                Some(v) if v == value => CommitSig::BlockIdFlagCommit {
                    validator_address: info.address,
                    timestamp,
                    signature: Some(signature),
                },
                None => CommitSig::BlockIdFlagNil {
                    validator_address: info.address,
                    timestamp,
                    signature: Some(signature),
                },
                Some(_) if active(Mutant::KeepMismatchedPrecommit) => CommitSig::BlockIdFlagNil {
                    validator_address: info.address,
                    timestamp,
                    signature: Some(signature),
                },
                Some(_) => CommitSig::BlockIdFlagAbsent,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Commit {
        height: block::Height::try_from(decision.height.0).map_err(|_| CommitError::WrongSize {
            expected: 0,
            got: 0,
        })?,
        round: block::Round::try_from(decision.round.0).map_err(|_| CommitError::WrongSize {
            expected: 0,
            got: 0,
        })?,
        block_id: id,
        signatures,
    })
}

/// The precommit that signature `index` of `commit` stands for (none when absent), as its
/// validator signed it.
pub fn commit_vote(commit: &Commit, index: usize) -> Result<Option<vote::Vote>, CommitError> {
    let (address, timestamp, signature, block_id) = match commit.signatures.get(index) {
        None | Some(CommitSig::BlockIdFlagAbsent) => return Ok(None),
        Some(CommitSig::BlockIdFlagCommit {
            validator_address,
            timestamp,
            signature,
        }) => (
            validator_address,
            timestamp,
            signature,
            Some(commit.block_id),
        ),
        Some(CommitSig::BlockIdFlagNil {
            validator_address,
            timestamp,
            signature,
        }) => (validator_address, timestamp, signature, None),
    };
    Ok(Some(vote::Vote {
        vote_type: vote::Type::Precommit,
        height: commit.height,
        round: commit.round,
        block_id,
        timestamp: Some(*timestamp),
        validator_address: *address,
        validator_index: vote::ValidatorIndex::try_from(index as u32)
            .map_err(|_| CommitError::WrongValidator { index })?,
        signature: signature.clone(),
        extension: vec![],
        extension_signature: None,
    }))
}

/// Checks that `commit` proves block `id` at `height`: every present signature verifies for the
/// validator at its index, and more than two thirds of the power signed the block.
pub fn verify_commit(
    chain_id: &chain::Id,
    validators: &validator::Set,
    height: u64,
    id: &block::Id,
    commit: &Commit,
) -> Result<(), CommitError> {
    if commit.height.value() != height || commit.block_id != *id {
        return Err(CommitError::WrongBlock {
            height,
            block: id.hash.to_string(),
            got_height: commit.height.value(),
            got_block: commit.block_id.hash.to_string(),
        });
    }
    let set = validators.validators();
    if commit.signatures.len() != set.len() {
        return Err(CommitError::WrongSize {
            expected: set.len(),
            got: commit.signatures.len(),
        });
    }
    // The power the commit claims, before any signature costs a verification: a forged commit
    // that could not reach two thirds even if every signature held is refused for free.
    let total = validators.total_voting_power().value();
    let claimed: u64 = commit
        .signatures
        .iter()
        .zip(set)
        .filter(|(sig, _)| matches!(sig, CommitSig::BlockIdFlagCommit { .. }))
        .map(|(_, info)| info.power())
        .sum();
    if 3 * u128::from(claimed) <= 2 * u128::from(total) {
        return Err(CommitError::NotEnoughPower {
            signed: claimed,
            total,
        });
    }
    let mut signed: u64 = 0;
    for (index, info) in set.iter().enumerate() {
        let Some(v) = commit_vote(commit, index)? else {
            continue;
        };
        if v.validator_address != info.address {
            return Err(CommitError::WrongValidator { index });
        }
        let block_id = v.block_id;
        verify_vote(&info.pub_key, &v, chain_id)
            .map_err(|_| CommitError::BadSignature { index })?;
        if block_id.is_some() {
            signed += info.power();
        }
    }
    if 3 * u128::from(signed) <= 2 * u128::from(total) {
        return Err(CommitError::NotEnoughPower { signed, total });
    }
    Ok(())
}
