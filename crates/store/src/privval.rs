//! The private validator: signs votes and proposals with the validator's ed25519 key, but
//! only after recording and flushing the last-sign-state (height, round, step, sign bytes,
//! signature), with CometBFT's rules:
//!
//! - a request for an earlier height, round or step than the last signature is refused;
//! - a request for the same height/round/step gets the same signature if its sign bytes are
//!   the same, or differ only in the timestamp (the old timestamp is put back), and is refused
//!   otherwise: that would be a double sign.
//!
//! The state is written and flushed to disk before the signature is returned, so a crash can
//! lose a signature but never forget one.

use crate::{Store, StoreError};
use bulwark_types::signing::{proposal_sign_bytes, sign, vote_sign_bytes};
use bulwark_types::tendermint::{chain, proposal::Proposal, vote, Signature, Time};
use bulwark_types::tendermint_proto::v0_38::types::{CanonicalProposal, CanonicalVote};
use ed25519_consensus::SigningKey;
use prost::Message;
use thiserror::Error;

/// CometBFT's signing steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A proposal.
    Propose = 1,
    /// A prevote.
    Prevote = 2,
    /// A precommit.
    Precommit = 3,
}

/// The last thing signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastSignState {
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// Step.
    pub step: Step,
    /// The exact sign bytes.
    pub sign_bytes: Vec<u8>,
    /// The signature given.
    pub signature: Vec<u8>,
}

/// Why a signature was refused.
#[derive(Debug, Error)]
pub enum PrivvalError {
    /// The request is for an earlier height/round/step than the last signature.
    #[error("refusing to sign {requested:?}: already signed {last:?}")]
    Regression {
        /// (height, round, step) of the request.
        requested: (u64, u32, Step),
        /// (height, round, step) last signed.
        last: (u64, u32, Step),
    },
    /// Same height/round/step, different content: a double sign.
    #[error("refusing to double-sign at height {height}, round {round}, step {step:?}")]
    Conflict {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
        /// Step.
        step: Step,
    },
    /// The message is not one a validator signs (negative height or round, no type).
    #[error("not a signable message: {0}")]
    Invalid(String),
    /// Storage failed; nothing was signed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const STATE_KEY: &[u8] = b"last_sign_state";

/// The private validator.
pub struct PrivValidator {
    key: SigningKey,
    tree: bulwark_kv::Tree,
    last: Option<LastSignState>,
    mac_key: [u8; 32],
}

impl std::fmt::Debug for PrivValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivValidator")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// The label the last-sign-state's MAC covers.
const STATE_LABEL: &[u8] = b"bulwark/last-sign-state/v1";

/// The encoded state followed by its HMAC-SHA-256 under the store's key.
fn seal(mac_key: &[u8; 32], s: &LastSignState) -> Vec<u8> {
    let mut out = encode(s);
    let tag = crate::mac(mac_key, &[STATE_LABEL, &out]);
    out.extend_from_slice(&tag);
    out
}

/// The state, if its MAC verifies and it parses.
fn open_sealed(mac_key: &[u8; 32], bytes: &[u8]) -> Result<LastSignState, &'static str> {
    let split = bytes
        .len()
        .checked_sub(32)
        .ok_or("last-sign-state is too short")?;
    let (body, tag) = bytes.split_at(split);
    if crate::mac(mac_key, &[STATE_LABEL, body])[..] != *tag {
        return Err("last-sign-state fails its MAC: damaged or not written by this validator");
    }
    decode(body).ok_or("unreadable last-sign-state")
}

fn encode(s: &LastSignState) -> Vec<u8> {
    let mut out = Vec::with_capacity(21 + s.sign_bytes.len() + s.signature.len());
    out.extend_from_slice(&s.height.to_be_bytes());
    out.extend_from_slice(&s.round.to_be_bytes());
    out.push(s.step as u8);
    out.extend_from_slice(&(s.sign_bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&s.sign_bytes);
    out.extend_from_slice(&(s.signature.len() as u32).to_be_bytes());
    out.extend_from_slice(&s.signature);
    out
}

fn decode(bytes: &[u8]) -> Option<LastSignState> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    let mut b = bytes;
    let height = u64::from_be_bytes(take(&mut b, 8)?.try_into().ok()?);
    let round = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?);
    let step = match take(&mut b, 1)?[0] {
        1 => Step::Propose,
        2 => Step::Prevote,
        3 => Step::Precommit,
        _ => return None,
    };
    let n = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
    let sign_bytes = take(&mut b, n)?.to_vec();
    let m = u32::from_be_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
    let signature = take(&mut b, m)?.to_vec();
    if !b.is_empty() {
        return None;
    }
    Some(LastSignState {
        height,
        round,
        step,
        sign_bytes,
        signature,
    })
}

/// What to do with a request.
enum Decision {
    /// Sign anew.
    Sign,
    /// Give back the stored signature (and, for a timestamp-only difference, the stored
    /// timestamp).
    Reuse {
        signature: Vec<u8>,
        timestamp: Option<Time>,
    },
}

fn vote_timestamp_only_differs(a: &[u8], b: &[u8]) -> Option<Time> {
    let mut x = CanonicalVote::decode_length_delimited(a).ok()?;
    let mut y = CanonicalVote::decode_length_delimited(b).ok()?;
    let old = x.timestamp.take();
    y.timestamp = None;
    (x == y).then_some(())?;
    old.and_then(|t| Time::try_from(t).ok())
}

fn proposal_timestamp_only_differs(a: &[u8], b: &[u8]) -> Option<Time> {
    let mut x = CanonicalProposal::decode_length_delimited(a).ok()?;
    let mut y = CanonicalProposal::decode_length_delimited(b).ok()?;
    let old = x.timestamp.take();
    y.timestamp = None;
    (x == y).then_some(())?;
    old.and_then(|t| Time::try_from(t).ok())
}

impl PrivValidator {
    /// Loads the last-sign-state from `store` (none if this validator never signed).
    pub fn open(key: SigningKey, store: &Store) -> Result<Self, PrivvalError> {
        let tree = store.tree("privval")?;
        let last = match tree.get(STATE_KEY).map_err(StoreError::from)? {
            None => None,
            Some(bytes) => {
                Some(open_sealed(store.mac_key(), &bytes).map_err(|e| store.corrupt(e))?)
            }
        };
        Ok(PrivValidator {
            key,
            tree,
            last,
            mac_key: *store.mac_key(),
        })
    }

    /// The last signature's state.
    pub fn last_sign_state(&self) -> Option<&LastSignState> {
        self.last.as_ref()
    }

    fn decide(
        &self,
        hrs: (u64, u32, Step),
        sign_bytes: &[u8],
        timestamp_only: fn(&[u8], &[u8]) -> Option<Time>,
    ) -> Result<Decision, PrivvalError> {
        let Some(last) = &self.last else {
            return Ok(Decision::Sign);
        };
        let there = (last.height, last.round, last.step);
        if hrs < there {
            return Err(PrivvalError::Regression {
                requested: hrs,
                last: there,
            });
        }
        if hrs > there {
            return Ok(Decision::Sign);
        }
        if last.sign_bytes == sign_bytes {
            return Ok(Decision::Reuse {
                signature: last.signature.clone(),
                timestamp: None,
            });
        }
        match timestamp_only(&last.sign_bytes, sign_bytes) {
            Some(old) => Ok(Decision::Reuse {
                signature: last.signature.clone(),
                timestamp: Some(old),
            }),
            None => Err(PrivvalError::Conflict {
                height: hrs.0,
                round: hrs.1,
                step: hrs.2,
            }),
        }
    }

    /// Records the new state durably, then returns the signature.
    fn sign_and_record(
        &mut self,
        hrs: (u64, u32, Step),
        sign_bytes: Vec<u8>,
    ) -> Result<Signature, PrivvalError> {
        let signature = sign(&self.key, &sign_bytes);
        let state = LastSignState {
            height: hrs.0,
            round: hrs.1,
            step: hrs.2,
            sign_bytes,
            signature: signature.as_bytes().to_vec(),
        };
        self.tree
            .insert(STATE_KEY, seal(&self.mac_key, &state))
            .map_err(StoreError::from)?;
        self.tree.flush().map_err(StoreError::from)?;
        self.last = Some(state);
        Ok(signature)
    }

    /// Signs `message`, which must start with a zero byte: CometBFT's sign bytes start with
    /// their non-zero length, so nothing signed here passes for a vote or a proposal (an
    /// instance claim, `bulwark_instance`). Not recorded in the last-sign-state.
    pub fn sign_domain_separated(&self, message: &[u8]) -> Result<[u8; 64], PrivvalError> {
        if message.first() != Some(&0) {
            return Err(PrivvalError::Invalid(
                "a domain-separated message starts with a zero byte".into(),
            ));
        }
        Ok(self.key.sign(message).to_bytes())
    }

    /// Signs `vote` in place, or refuses.
    pub fn sign_vote(
        &mut self,
        vote: &mut vote::Vote,
        chain_id: &chain::Id,
    ) -> Result<(), PrivvalError> {
        let step = match vote.vote_type {
            vote::Type::Prevote => Step::Prevote,
            vote::Type::Precommit => Step::Precommit,
        };
        let hrs = (vote.height.value(), vote.round.value(), step);
        let sign_bytes = vote_sign_bytes(vote, chain_id);
        match self.decide(hrs, &sign_bytes, vote_timestamp_only_differs)? {
            Decision::Reuse {
                signature,
                timestamp,
            } => {
                if let Some(t) = timestamp {
                    vote.timestamp = Some(t);
                }
                vote.signature =
                    Signature::new(signature).map_err(|e| PrivvalError::Invalid(e.to_string()))?;
            }
            Decision::Sign => vote.signature = Some(self.sign_and_record(hrs, sign_bytes)?),
        }
        Ok(())
    }

    /// Signs the extension of `vote`, a precommit for a block, in place; refuses any other
    /// vote. Not recorded in the last-sign-state: as in CometBFT, an extension is the
    /// application's and may differ when a precommit is signed again, and two signed
    /// extensions of one precommit are no equivocation (only the precommit's signature is).
    pub fn sign_vote_extension(
        &self,
        vote: &mut vote::Vote,
        chain_id: &chain::Id,
    ) -> Result<(), PrivvalError> {
        if !bulwark_types::signing::is_non_nil_precommit(vote) {
            return Err(PrivvalError::Invalid(
                "only a precommit for a block carries a vote extension".into(),
            ));
        }
        bulwark_types::signing::sign_vote_extension(&self.key, vote, chain_id);
        Ok(())
    }

    /// Signs `proposal` in place, or refuses.
    pub fn sign_proposal(
        &mut self,
        proposal: &mut Proposal,
        chain_id: &chain::Id,
    ) -> Result<(), PrivvalError> {
        let hrs = (
            proposal.height.value(),
            proposal.round.value(),
            Step::Propose,
        );
        let sign_bytes = proposal_sign_bytes(proposal, chain_id);
        match self.decide(hrs, &sign_bytes, proposal_timestamp_only_differs)? {
            Decision::Reuse {
                signature,
                timestamp,
            } => {
                if let Some(t) = timestamp {
                    proposal.timestamp = Some(t);
                }
                proposal.signature =
                    Signature::new(signature).map_err(|e| PrivvalError::Invalid(e.to_string()))?;
            }
            Decision::Sign => proposal.signature = Some(self.sign_and_record(hrs, sign_bytes)?),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_encoding_round_trips_and_rejects_damage() {
        let s = LastSignState {
            height: 7,
            round: 2,
            step: Step::Precommit,
            sign_bytes: vec![1, 2, 3],
            signature: vec![9; 64],
        };
        let bytes = encode(&s);
        assert_eq!(decode(&bytes), Some(s));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
        let mut bad_step = bytes.clone();
        bad_step[12] = 9;
        assert_eq!(decode(&bad_step), None);
        let mut long = bytes;
        long.push(0);
        assert_eq!(decode(&long), None);
    }
}
