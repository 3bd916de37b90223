//! Signature checks on the threads that receive messages, ahead of the consensus thread (review
//! M6). A connection task calls [`Preverifier::inspect`] on every payload before handing it
//! over; whatever it verifies is remembered process-wide ([`signing::preverify`]), so the
//! engine's own check of the same vote or commit signature is a lookup. The engine stays the
//! judge: it still checks every signature it acts on, and a miss here (an unknown key, a set
//! that changed, a cache that evicted) only means it checks in full itself.
//!
//! Proposals are left to the engine: the signer is the round's proposer, which only the engine
//! computes, and there is one per round.
//!
//! The work a peer can get out of its receiving thread is bounded (review M1):
//! - votes only of the heights `H - 1 ..= H + 1` and commits only of `H - 1 ..= H +
//!   COMMITS_AHEAD` (a catch-up run), at most one check per signer in a certificate or commit;
//! - a signature that fails at `H` or `H - 1`, whose signers this thread knows exactly, is a
//!   forgery (an honest peer relays only what it checked), and [`Preverifier::inspect`] says so:
//!   the connection is closed, and the next one costs the peer a handshake;
//! - beyond, where the signers are guessed, [`FAILURES_PER_HEIGHT`] failures end the checks of
//!   guessed heights on that connection for the height;
//! - every full check counts: a connection gets [`CHECKS_PER_SIGNER`] per signer and height
//!   (a byzantine validator can sign fresh valid votes as fast as they can be checked). A
//!   genuine signature sent again is a lookup and costs nothing.
//!
//! Beyond its budget a connection's messages still reach the engine, which checks what it
//! acts on under its own bounds. A budget starts afresh at each height, and heights advance
//! only by genuine commits.

use crate::{pb, Payload};
use bulwark_types::commit::commit_vote;
use bulwark_types::signing;
use bulwark_types::tendermint::block::Commit;
use bulwark_types::tendermint::{chain, validator, vote, PublicKey};
use std::sync::{Arc, RwLock};

/// Signatures remembered process-wide: a few heights of votes and commits of a large set.
pub const REMEMBERED_SIGNATURES: usize = 65_536;
/// Failed checks of guessed signers (heights past `H`) a connection gets per height. An honest
/// peer fails there only when the set changes.
pub const FAILURES_PER_HEIGHT: u32 = 64;
/// Full checks a connection gets per signer and height: an honest height takes a few votes
/// per signer and round, a certificate or two and a catch-up run's commits.
pub const CHECKS_PER_SIGNER: usize = 16;
/// Heights beyond the one being decided whose commits are checked here: a catch-up answer's
/// run of decided blocks.
pub const COMMITS_AHEAD: u64 = 32;

/// The keys that sign at the heights a peer's messages may be about.
#[derive(Debug, Default)]
struct Keys {
    /// The height being decided.
    height: u64,
    /// Who signs at `height`, by validator index.
    current: Vec<PublicKey>,
    /// Who signed at `height - 1`.
    last: Vec<PublicKey>,
}

/// What the receiving threads share: the chain and its current signers.
#[derive(Debug)]
pub struct Preverifier {
    chain_id: chain::Id,
    /// Swapped whole by [`Preverifier::publish`], so a reader holds the lock only to clone it.
    keys: RwLock<Arc<Keys>>,
}

/// What one connection may still cost its receiving thread at a height.
#[derive(Debug, Default)]
pub struct Budget {
    height: u64,
    checks: usize,
    guessed_failures: u32,
}

impl Budget {
    /// Starts the height's budget afresh when the height moved on.
    fn at(&mut self, height: u64) {
        if self.height != height {
            *self = Budget {
                height,
                ..Budget::default()
            };
        }
    }
}

/// A signature that cannot be genuine: it fails at a height whose signers are known exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a forged signature of validator {validator} at height {height}")]
pub struct Forged {
    /// The height the message is about.
    pub height: u64,
    /// The validator it claims.
    pub validator: u32,
}
impl Preverifier {
    /// Turns on the process-wide memory of verified signatures (see [`signing::preverify`]).
    pub fn new(chain_id: chain::Id) -> Self {
        signing::remember_verified_signatures(REMEMBERED_SIGNATURES);
        Self {
            chain_id,
            keys: RwLock::new(Arc::new(Keys::default())),
        }
    }

    /// The consensus thread's word on who signs now: `current` at `height`, `last` at
    /// `height - 1`.
    pub fn publish(&self, height: u64, current: &validator::Set, last: &validator::Set) {
        let keys = |set: &validator::Set| set.validators().iter().map(|v| v.pub_key).collect();
        if let Ok(mut published) = self.keys.write() {
            *published = Arc::new(Keys {
                height,
                current: keys(current),
                last: keys(last),
            });
        }
    }

    /// The height last published.
    pub fn height(&self) -> u64 {
        self.keys.read().map_or(0, |keys| keys.height)
    }

    /// Checks the signatures `payload` carries that the engine will check, within the
    /// connection's `budget`: votes (alone or in a certificate) at the current or previous
    /// height, and a decided block's commits. Returns how many verified (invalid ones are not
    /// remembered), or [`Forged`] when one fails where the signers are known exactly.
    pub fn inspect(&self, payload: &Payload, budget: &mut Budget) -> Result<usize, Forged> {
        let Some(keys) = self.keys.read().ok().map(|k| Arc::clone(&k)) else {
            return Ok(0);
        };
        budget.at(keys.height);
        let mut verified = 0;
        match payload {
            Payload::Vote(raw) => verified += usize::from(self.vote(&keys, raw, budget)?),
            Payload::Certificate(cert) => {
                // Only as many as there are signers: a certificate padded with copies gets
                // no more work out of this thread than an honest one.
                let limit = keys.current.len().max(keys.last.len());
                for raw in cert.votes.iter().take(limit) {
                    verified += usize::from(self.vote(&keys, raw, budget)?);
                }
            }
            Payload::DecidedBlock(decided) => {
                if let Some(raw) = &decided.commit {
                    verified += self.commit(&keys, raw, budget)?;
                }
                if let Some(raw) = decided.block.as_ref().and_then(|b| b.last_commit.as_ref()) {
                    verified += self.commit(&keys, raw, budget)?;
                }
            }
            _ => {}
        }
        Ok(verified)
    }

    /// The signers at `height`, as far as this thread knows: beyond the current height the set
    /// is assumed unchanged (a wrong guess is a miss, not an error).
    fn signers(keys: &Keys, height: u64) -> Option<&[PublicKey]> {
        if height >= keys.height && keys.height > 0 {
            Some(&keys.current)
        } else if height + 1 == keys.height {
            Some(&keys.last)
        } else {
            None
        }
    }

    fn vote(&self, keys: &Keys, raw: &pb::Vote, budget: &mut Budget) -> Result<bool, Forged> {
        // Votes more than one height ahead are the engine's to drop unchecked.
        let Ok(height) = u64::try_from(raw.height) else {
            return Ok(false);
        };
        if height > keys.height.saturating_add(1) {
            return Ok(false);
        }
        let Ok(v) = vote::Vote::try_from(raw.clone()) else {
            return Ok(false);
        };
        self.check(keys, &v, budget)
    }

    /// Whether `v`'s signature verified, within the budget.
    fn check(&self, keys: &Keys, v: &vote::Vote, budget: &mut Budget) -> Result<bool, Forged> {
        let height = v.height.value();
        let exact = height <= keys.height;
        let limit = CHECKS_PER_SIGNER.saturating_mul(keys.current.len().max(1));
        if budget.checks >= limit || (!exact && budget.guessed_failures >= FAILURES_PER_HEIGHT) {
            return Ok(false);
        }
        let Some(key) =
            Self::signers(keys, height).and_then(|set| set.get(v.validator_index.value() as usize))
        else {
            return Ok(false);
        };
        let Some(signature) = v.signature.as_ref() else {
            return Ok(false);
        };
        let bytes = signing::vote_sign_bytes(v, &self.chain_id);
        match signing::preverify(key, &bytes, signature) {
            Ok(signing::Preverified::Remembered) => Ok(true),
            Ok(signing::Preverified::Checked) => {
                budget.checks += 1;
                Ok(true)
            }
            Err(_) if exact => Err(Forged {
                height,
                validator: v.validator_index.value(),
            }),
            Err(_) => {
                budget.checks += 1;
                budget.guessed_failures += 1;
                Ok(false)
            }
        }
    }

    fn commit(&self, keys: &Keys, raw: &pb::Commit, budget: &mut Budget) -> Result<usize, Forged> {
        // Checked before the decoding, which costs by the number of signatures.
        let Ok(height) = u64::try_from(raw.height) else {
            return Ok(0);
        };
        if height > keys.height.saturating_add(COMMITS_AHEAD) {
            return Ok(0);
        }
        let Ok(commit) = Commit::try_from(raw.clone()) else {
            return Ok(0);
        };
        let Some(set) = Self::signers(keys, commit.height.value()) else {
            return Ok(0);
        };
        let mut verified = 0;
        for index in 0..commit.signatures.len().min(set.len()) {
            if let Ok(Some(v)) = commit_vote(&commit, index) {
                verified += usize::from(self.check(keys, &v, budget)?);
            }
        }
        Ok(verified)
    }
}
