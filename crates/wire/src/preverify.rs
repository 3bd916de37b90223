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
//! The work a peer can get out of its receiving thread is bounded (review M1): votes only of
//! the heights `H - 1 ..= H + 1`, commits only of `H - 1 ..= H + COMMITS_AHEAD` (a catch-up
//! run), at most as many checks per certificate or commit as there are signers, and a
//! connection whose signatures failed [`FAILURES_PER_HEIGHT`] times is not checked here again
//! until the next height (a forgery is never remembered, so without it the same one would cost
//! a check every time it is sent). A genuine signature sent again is a lookup. Beyond the
//! budget its messages still reach the engine, which checks what it acts on under its own
//! bounds; so the edge's worker threads, which also run handshakes, cannot be kept busy.

use crate::{pb, Payload};
use bulwark_types::commit::commit_vote;
use bulwark_types::signing;
use bulwark_types::tendermint::block::Commit;
use bulwark_types::tendermint::{chain, validator, vote, PublicKey};
use std::sync::{Arc, RwLock};

/// Signatures remembered process-wide: a few heights of votes and commits of a large set.
pub const REMEMBERED_SIGNATURES: usize = 65_536;
/// Failed signature checks a connection gets on its receiving thread per height. An honest
/// peer fails only where this thread guesses the signers wrong (a set that changes).
pub const FAILURES_PER_HEIGHT: u32 = 64;
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
    failures: u32,
}

impl Budget {
    /// Starts the height's budget afresh when the height moved on; whether any is left.
    fn left_at(&mut self, height: u64) -> bool {
        if self.height != height {
            *self = Budget {
                height,
                failures: 0,
            };
        }
        self.failures < FAILURES_PER_HEIGHT
    }
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
    /// height, and a decided block's commits. Returns how many verified; invalid ones are
    /// simply not remembered.
    pub fn inspect(&self, payload: &Payload, budget: &mut Budget) -> usize {
        let Some(keys) = self.keys.read().ok().map(|k| Arc::clone(&k)) else {
            return 0;
        };
        if !budget.left_at(keys.height) {
            return 0;
        }
        match payload {
            Payload::Vote(raw) => usize::from(self.vote(&keys, raw.clone(), budget)),
            Payload::Certificate(cert) => {
                // Only as many as there are signers: a certificate padded with copies gets
                // no more work out of this thread than an honest one.
                let limit = keys.current.len().max(keys.last.len());
                cert.votes
                    .iter()
                    .take(limit)
                    .filter(|raw| self.vote(&keys, (*raw).clone(), budget))
                    .count()
            }
            Payload::DecidedBlock(decided) => {
                let mut verified = 0;
                if let Some(raw) = decided.commit.clone() {
                    verified += self.commit(&keys, raw, budget);
                }
                if let Some(raw) = decided.block.as_ref().and_then(|b| b.last_commit.clone()) {
                    verified += self.commit(&keys, raw, budget);
                }
                verified
            }
            _ => 0,
        }
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

    fn vote(&self, keys: &Keys, raw: pb::Vote, budget: &mut Budget) -> bool {
        // Votes more than one height ahead are the engine's to drop unchecked.
        let Ok(height) = u64::try_from(raw.height) else {
            return false;
        };
        if height > keys.height.saturating_add(1) {
            return false;
        }
        let Ok(v) = vote::Vote::try_from(raw) else {
            return false;
        };
        self.check(keys, &v, budget)
    }

    /// Whether `v`'s signature verified; a failure spends the budget, and nothing is checked
    /// once it is spent.
    fn check(&self, keys: &Keys, v: &vote::Vote, budget: &mut Budget) -> bool {
        if budget.failures >= FAILURES_PER_HEIGHT {
            return false;
        }
        let Some(key) = Self::signers(keys, v.height.value())
            .and_then(|set| set.get(v.validator_index.value() as usize))
        else {
            return false;
        };
        let Some(signature) = v.signature.as_ref() else {
            return false;
        };
        let bytes = signing::vote_sign_bytes(v, &self.chain_id);
        let verified = signing::preverify(key, &bytes, signature).is_ok();
        if !verified {
            budget.failures += 1;
        }
        verified
    }

    fn commit(&self, keys: &Keys, raw: pb::Commit, budget: &mut Budget) -> usize {
        // Checked before the decoding, which costs by the number of signatures.
        let Ok(height) = u64::try_from(raw.height) else {
            return 0;
        };
        if height > keys.height.saturating_add(COMMITS_AHEAD) {
            return 0;
        }
        let Ok(commit) = Commit::try_from(raw) else {
            return 0;
        };
        let Some(set) = Self::signers(keys, commit.height.value()) else {
            return 0;
        };
        (0..commit.signatures.len().min(set.len()))
            .filter_map(|index| commit_vote(&commit, index).ok().flatten())
            .filter(|v| self.check(keys, v, budget))
            .count()
    }
}
