//! The invariants an engine-mode run must keep, checked as it goes: agreement on every block,
//! every stored commit verifying, no conflicting signatures by one key, honest lock
//! monotonicity, bounded per-node state, a per-input CPU budget; and at the end progress, a
//! decision within k rounds after GST, and the decided chain passing the light-client verifier.

use bulwark_node::chain::verify_commit;
use bulwark_node::engine::Footprint;
use bulwark_types::convert::value_id;
use bulwark_types::tendermint::block::{self, Block, Commit};
use bulwark_types::tendermint::{chain, validator, Time};
use bulwark_types::tendermint_proto::v0_38::types as pb;
use bulwark_wire::Payload;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two honest validators stored different blocks at one height.
    Agreement {
        /// The height.
        height: u64,
        /// One validator and its block hash.
        first: (usize, String),
        /// Another validator and its different block hash.
        second: (usize, String),
    },
    /// A commit an honest validator stored does not prove its block.
    CommitInvalid {
        /// Who stored it.
        node: usize,
        /// The height.
        height: u64,
        /// Why.
        reason: String,
    },
    /// The decided chain fails `tendermint-light-client-verifier`.
    LightClient {
        /// Whose chain.
        node: usize,
        /// The first height it refuses.
        height: u64,
        /// The verdict.
        reason: String,
    },
    /// One honest key signed two different votes (or proposals) for one height, round and step.
    DoubleSign {
        /// Whose key (validator index).
        validator: usize,
        /// The height.
        height: i64,
        /// The round.
        round: i32,
        /// Which step.
        step: &'static str,
    },
    /// An honest validator prevoted another value than the one it is locked on, with no
    /// polka for that value since its lock.
    LockBroken {
        /// Who.
        node: usize,
        /// The height.
        height: u64,
        /// The round of the prevote.
        round: u32,
        /// The round it was locked in.
        locked_round: u32,
    },
    /// Per-node state grew past its bound.
    Unbounded {
        /// Whose.
        node: usize,
        /// Which quantity.
        what: &'static str,
        /// How much.
        value: u64,
        /// The bound.
        limit: u64,
    },
    /// One input took one engine longer than the budget.
    CpuBudget {
        /// Whose engine.
        node: usize,
        /// What the input was.
        input: String,
        /// How long it took (ms).
        ms: u64,
    },
    /// A live honest validator did not reach the target height.
    NoProgress {
        /// Who.
        node: usize,
        /// The height it reached.
        reached: u64,
        /// The target.
        target: u64,
    },
    /// After GST a height needed more rounds than the growing timeouts allow.
    SlowDecision {
        /// The height.
        height: u64,
        /// Its commit round.
        round: u32,
        /// The bound.
        limit: u32,
    },
    /// An honest engine stopped with an error.
    EngineFailed {
        /// Whose.
        node: usize,
        /// The error.
        error: String,
    },
    /// A block committed evidence against a validator an honest node runs.
    HonestAccused {
        /// The height of the block carrying it.
        height: u64,
        /// The accused validator (set index).
        validator: usize,
    },
    /// The same evidence committed by two blocks.
    EvidenceTwice {
        /// The first block's height.
        first: u64,
        /// The second's.
        second: u64,
    },
    /// The run did not settle within its event budget.
    EventBudgetExceeded {
        /// Events processed.
        events: u64,
    },
    /// A restarted honest validator was not signing again by the end of a run whose other
    /// validators held more than two thirds of the power (the instance rule's liveness).
    NotSigningAgain {
        /// Who.
        node: usize,
        /// The highest height decided when it restarted.
        restarted_at: u64,
        /// The highest height decided at the end.
        top: u64,
        /// What its register said.
        authorization: String,
    },
    /// A restarted honest validator signed again, but more than
    /// [`crate::SIGN_AGAIN_HEIGHTS`] heights after it caught up, in a run whose other
    /// validators held more than two thirds of the power.
    SignedAgainLate {
        /// Who.
        node: usize,
        /// The highest height decided when it restarted.
        restarted_at: u64,
        /// Heights decided between its catching up and its first signature.
        heights: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Limits on what a node may hold for one height.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Validators in the set.
    pub validators: u64,
    /// Parts of the largest block allowed.
    pub max_parts: u64,
}

impl Bounds {
    /// The limit of each footprint quantity at consensus round `round`.
    fn limits(&self, round: u32) -> [(&'static str, u64); 7] {
        let n = self.validators;
        let rounds = u64::from(round) + 2;
        [
            // Proposals waiting for their block: a few per round and proposer.
            ("waiting proposals", 4 * rounds + 8),
            // Blocks assembled or built: one per proposal at most.
            ("candidate blocks", 4 * rounds + 8),
            ("encodings of candidate blocks", 4 * rounds + 8),
            (
                "blocks being assembled",
                bulwark_node::proposal::MAX_PENDING_BLOCKS as u64,
            ),
            // Kept for relay by identity: two votes per validator, round (future ones
            // included) and kind, a few proposals per round and the parts of their blocks.
            (
                "messages remembered for peers",
                (rounds + 2) * (2 * 2 * n) + (4 * rounds + 8) * (1 + self.max_parts),
            ),
            ("early messages", 4_096),
            // Every WAL record is an input the core admitted: per round a proposal, its parts,
            // a vote per validator and kind, three timeouts and a few certificates.
            (
                "WAL records of the height",
                rounds * (3 * n + 40 + self.max_parts),
            ),
        ]
    }

    /// The violations of `footprint` at `round`.
    pub fn check(&self, node: usize, round: u32, footprint: &Footprint) -> Vec<Violation> {
        let values = [
            footprint.waiting as u64,
            footprint.candidates as u64,
            footprint.encodings as u64,
            footprint.assembling as u64,
            footprint.seen as u64,
            footprint.early as u64,
            footprint.wal_records,
        ];
        self.limits(round)
            .into_iter()
            .zip(values)
            .filter(|((_, limit), value)| value > limit)
            .map(|((what, limit), value)| Violation::Unbounded {
                node,
                what,
                value,
                limit,
            })
            .collect()
    }
}

/// Per block value, the validators (set indices) that prevoted it in one round.
type Prevoters = BTreeMap<[u8; 32], BTreeSet<usize>>;

/// Collects observations and the violations they reveal.
#[derive(Debug)]
pub struct Checker {
    chain_id: chain::Id,
    validators: validator::Set,
    honest: Vec<bool>,
    /// Each node's validator address.
    addresses: Vec<Vec<u8>>,
    /// Signatures that verified: each signed message is counted once, however often relayed.
    verified: BTreeSet<Vec<u8>>,
    /// height → (first honest node that stored it, block hash).
    decided: BTreeMap<u64, (usize, String)>,
    /// (validator, height, round, step) → what its first signature said.
    signed: BTreeMap<(usize, i64, i32, u8), Vec<u8>>,
    /// height → round → block value → validators that prevoted it.
    prevotes: BTreeMap<u64, BTreeMap<u32, Prevoters>>,
    /// height → commit round.
    commit_rounds: BTreeMap<u64, u32>,
    /// height → (slots of honest validators in the block's last commit, of them `Commit`).
    last_commit_slots: BTreeMap<u64, (u64, u64)>,
    /// height → when the first honest node started it (simulated ms).
    started: BTreeMap<u64, u64>,
    /// Validators (set indices) that committed evidence accuses, with the evidence heights.
    accused: BTreeSet<(usize, u64)>,
    /// Digest of each committed piece of evidence → the height of the block that committed it.
    evidence: BTreeMap<[u8; 32], u64>,
    violations: Vec<Violation>,
}

fn step_code(t: i32) -> (u8, &'static str) {
    if t == pb::SignedMsgType::Prevote as i32 {
        (2, "prevote")
    } else if t == pb::SignedMsgType::Precommit as i32 {
        (3, "precommit")
    } else {
        (1, "proposal")
    }
}

impl Checker {
    /// A checker for a chain with these validators; node `i` signs as `addresses[i]`, and
    /// `honest[i]` says whether it must behave.
    pub fn new(
        chain_id: chain::Id,
        validators: validator::Set,
        addresses: Vec<Vec<u8>>,
        honest: Vec<bool>,
    ) -> Checker {
        Checker {
            chain_id,
            validators,
            honest,
            addresses,
            decided: BTreeMap::new(),
            verified: BTreeSet::new(),
            signed: BTreeMap::new(),
            prevotes: BTreeMap::new(),
            commit_rounds: BTreeMap::new(),
            last_commit_slots: BTreeMap::new(),
            started: BTreeMap::new(),
            accused: BTreeSet::new(),
            evidence: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    /// Records a violation (once per kind and node for quantities that keep growing).
    pub fn violate(&mut self, v: Violation) {
        let repeat = self.violations.iter().any(|seen| match (seen, &v) {
            (
                Violation::Unbounded {
                    node: a, what: x, ..
                },
                Violation::Unbounded {
                    node: b, what: y, ..
                },
            ) => a == b && x == y,
            (Violation::CpuBudget { node: a, .. }, Violation::CpuBudget { node: b, .. }) => a == b,
            (seen, v) => seen == v,
        });
        if self.violations.len() < 64 && !repeat {
            self.violations.push(v);
        }
    }

    /// The violations so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether the validator at set index `index` is run by an honest node.
    fn signer_is_honest(&self, index: usize) -> bool {
        let Some(info) = self.validators.validators().get(index) else {
            return false;
        };
        self.addresses
            .iter()
            .position(|a| a.as_slice() == info.address.as_bytes())
            .is_some_and(|node| self.honest.get(node).copied().unwrap_or(false))
    }

    fn validator_index(&self, address: &[u8]) -> Option<usize> {
        self.validators
            .validators()
            .iter()
            .position(|v| v.address.as_bytes() == address)
    }

    /// A message node `from` put on the wire (its own, or relayed).
    pub fn sent(&mut self, from: usize, payload: &Payload) {
        if let Payload::Certificate(c) = payload {
            // A relayed quorum is votes like any other: they count toward polkas and toward
            // their signers' double signs.
            for v in &c.votes {
                self.sent(from, &Payload::Vote(v.clone()));
            }
            return;
        }
        let (signature, height, round, kind, block_id) = match payload {
            Payload::Vote(v) => (&v.signature, v.height, v.round, v.r#type, &v.block_id),
            Payload::Proposal(p) => (&p.signature, p.height, p.round, p.r#type, &p.block_id),
            _ => return,
        };
        // Each signed message once, however often it is relayed; and only signatures that
        // verify: a forged one proves nothing about the key it names, and is not remembered
        // (a copied signature on other bytes, sent first, must not hide the genuine message).
        if self.verified.contains(signature) {
            return;
        }
        let sender = self
            .addresses
            .get(from)
            .and_then(|a| self.validator_index(a));
        let Some(index) = self.signer(payload, sender) else {
            return;
        };
        self.verified.insert(signature.clone());
        if kind == pb::SignedMsgType::Prevote as i32 {
            if let (Ok(h), Ok(r), Some(id)) = (
                u64::try_from(height),
                u32::try_from(round),
                block_id.clone(),
            ) {
                if let Ok(id) = block::Id::try_from(id) {
                    if id != block::Id::default() {
                        self.prevotes
                            .entry(h)
                            .or_default()
                            .entry(r)
                            .or_default()
                            .entry(value_id(&id).0)
                            .or_default()
                            .insert(index);
                    }
                }
            }
        }
        if self.signer_is_honest(index) {
            let what = block_id
                .as_ref()
                .map(|b| b.hash.clone())
                .unwrap_or_default();
            self.signature(index, height, round, kind, what);
        }
    }

    /// The set index of the validator whose key signed `payload`, if a valid signature. The
    /// checks go through the process's cache of verified signatures, as a node's receive
    /// threads do, so the engines that get the message next find it there (a forged signature
    /// is never remembered and is checked in full again).
    /// A proposal names no signer: the sender's key (`likely`, most proposals are the
    /// sender's own) is tried first, since a key that fails costs a full verification.
    fn signer(&self, payload: &Payload, likely: Option<usize>) -> Option<usize> {
        use bulwark_types::signing::{preverify, proposal_sign_bytes, vote_sign_bytes};
        use bulwark_types::tendermint::{proposal, vote};
        let set = self.validators.validators();
        match payload {
            Payload::Vote(raw) => {
                let index = self.validator_index(&raw.validator_address)?;
                let v = vote::Vote::try_from(raw.clone()).ok()?;
                let bytes = vote_sign_bytes(&v, &self.chain_id);
                preverify(&set.get(index)?.pub_key, &bytes, v.signature.as_ref()?).ok()?;
                Some(index)
            }
            Payload::Proposal(raw) => {
                let p = proposal::Proposal::try_from(raw.clone()).ok()?;
                let bytes = proposal_sign_bytes(&p, &self.chain_id);
                let signature = p.signature.as_ref()?;
                let others = (0..set.len()).filter(|i| Some(*i) != likely);
                likely.into_iter().chain(others).find(|&i| {
                    set.get(i)
                        .is_some_and(|info| preverify(&info.pub_key, &bytes, signature).is_ok())
                })
            }
            _ => None,
        }
    }

    fn signature(&mut self, validator: usize, height: i64, round: i32, kind: i32, what: Vec<u8>) {
        let (code, step) = step_code(kind);
        match self.signed.get(&(validator, height, round, code)) {
            None => {
                self.signed.insert((validator, height, round, code), what);
            }
            Some(first) if *first == what => {}
            Some(_) => self.violate(Violation::DoubleSign {
                validator,
                height,
                round,
                step,
            }),
        }
    }

    /// Whether more than two thirds of the power prevoted `value` at `height` in some round of
    /// `rounds`.
    fn polka_between(&self, height: u64, rounds: std::ops::Range<u32>, value: [u8; 32]) -> bool {
        let total: u64 = self.validators.total_voting_power().value();
        let Some(by_round) = self.prevotes.get(&height) else {
            return false;
        };
        by_round.range(rounds).any(|(_, values)| {
            values.get(&value).is_some_and(|who| {
                let power: u64 = who
                    .iter()
                    .filter_map(|i| self.validators.validators().get(*i))
                    .map(|v| v.power())
                    .sum();
                3 * u128::from(power) > 2 * u128::from(total)
            })
        })
    }

    /// An honest node's prevote, with the lock it held before the input that made it.
    pub fn honest_prevote(
        &mut self,
        node: usize,
        lock: Option<(u64, u32, [u8; 32])>,
        vote: &pb::Vote,
    ) {
        let (Some((lock_height, locked_round, locked_value)), Ok(h), Ok(r), Some(raw)) = (
            lock,
            u64::try_from(vote.height),
            u32::try_from(vote.round),
            vote.block_id.clone(),
        ) else {
            return;
        };
        let Ok(id) = block::Id::try_from(raw) else {
            return;
        };
        if id == block::Id::default() || lock_height != h || r <= locked_round {
            return;
        }
        let value = value_id(&id).0;
        if value != locked_value && !self.polka_between(h, locked_round..r, value) {
            self.violate(Violation::LockBroken {
                node,
                height: h,
                round: r,
                locked_round,
            });
        }
    }

    /// An honest node started `height` at `now`.
    pub fn height_started(&mut self, height: u64, now: u64) {
        self.started.entry(height).or_insert(now);
    }

    /// An honest node stored `block` with `commit` at its height.
    pub fn committed(&mut self, node: usize, block: &Block, id: &block::Id, commit: &Commit) {
        let height = block.header.height.value();
        let hash = id.hash.to_string();
        match self.decided.get(&height) {
            None => {
                self.decided.insert(height, (node, hash));
                for e in block.evidence.iter() {
                    let digest = bulwark_evidence::digest(e);
                    if let Some(first) = self.evidence.insert(digest, height) {
                        self.violate(Violation::EvidenceTwice {
                            first,
                            second: height,
                        });
                    }
                }
                for (address, at) in bulwark_node::chain::accused(block) {
                    let Some(validator) = self.validator_index(address.as_bytes()) else {
                        continue;
                    };
                    self.accused.insert((validator, at));
                    if self.signer_is_honest(validator) {
                        self.violate(Violation::HonestAccused { height, validator });
                    }
                }
                if let Some(last) = &block.last_commit {
                    let mut slots = (0, 0);
                    for (i, sig) in last.signatures.iter().enumerate() {
                        if self.signer_is_honest(i) {
                            slots.0 += 1;
                            if matches!(sig, block::CommitSig::BlockIdFlagCommit { .. }) {
                                slots.1 += 1;
                            }
                        }
                    }
                    self.last_commit_slots.insert(height, slots);
                }
            }
            Some((first, h)) if *h != hash => {
                let first = (*first, h.clone());
                self.violate(Violation::Agreement {
                    height,
                    first,
                    second: (node, hash),
                });
            }
            Some(_) => {}
        }
        if let Err(e) = verify_commit(&self.chain_id, &self.validators, height, id, commit) {
            self.violate(Violation::CommitInvalid {
                node,
                height,
                reason: e.to_string(),
            });
        }
        self.commit_rounds
            .entry(height)
            .or_insert(commit.round.value());
    }

    /// Heights that started at or after `from` (simulated ms) must have decided within
    /// `limit` rounds.
    pub fn check_rounds_after(&mut self, from: u64, limit: u32) {
        let slow: Vec<(u64, u32)> = self
            .commit_rounds
            .iter()
            .filter(|(h, round)| {
                **round > limit && self.started.get(h).is_some_and(|at| *at >= from)
            })
            .map(|(h, r)| (*h, *r))
            .collect();
        for (height, round) in slow {
            self.violate(Violation::SlowDecision {
                height,
                round,
                limit,
            });
        }
    }

    /// Slots of honest validators in the last commits of blocks whose previous height started
    /// at or after `from` (simulated ms), and how many of them hold a precommit for the block.
    pub fn last_commit_slots(&self, from: u64) -> (u64, u64) {
        self.last_commit_slots
            .iter()
            .filter(|(h, _)| {
                self.started
                    .get(&h.saturating_sub(1))
                    .is_some_and(|at| *at >= from)
            })
            .fold((0, 0), |(a, b), (_, (x, y))| (a + x, b + y))
    }

    /// The validators committed evidence accused, each with the height it double-signed at.
    pub fn accused(&self) -> &BTreeSet<(usize, u64)> {
        &self.accused
    }

    /// Heights decided.
    pub fn heights_decided(&self) -> u64 {
        self.decided.len() as u64
    }

    /// The highest commit round seen.
    pub fn max_round(&self) -> u32 {
        self.commit_rounds.values().copied().max().unwrap_or(0)
    }

    /// Runs the light-client verifier over `chain` (blocks with their commits, from height 1),
    /// trusting genesis.
    pub fn light_client(&mut self, node: usize, genesis_time: Time, chain: &[(Block, Commit)]) {
        use bulwark_types::tendermint::block::signed_header::SignedHeader;
        use tendermint_light_client_verifier::options::Options;
        use tendermint_light_client_verifier::types::{
            TrustThreshold, TrustedBlockState, UntrustedBlockState,
        };
        use tendermint_light_client_verifier::{ProdVerifier, Verdict, Verifier};
        let options = Options {
            trust_threshold: TrustThreshold::TWO_THIRDS,
            trusting_period: std::time::Duration::from_secs(3600),
            clock_drift: std::time::Duration::from_secs(10),
        };
        let set = self.validators.clone();
        let mut trusted_height = block::Height::default();
        let mut first = true;
        // Trust comes from genesis alone; the first block is dated at genesis time exactly, so
        // the trusted "header" before it is just earlier.
        let mut trusted_time = genesis_time
            .checked_sub(std::time::Duration::from_secs(1))
            .unwrap_or(genesis_time);
        let mut trusted_next_hash = set.hash();
        for (block, commit) in chain {
            let Ok(signed) = SignedHeader::new(block.header.clone(), commit.clone()) else {
                self.violate(Violation::LightClient {
                    node,
                    height: block.header.height.value(),
                    reason: "commit does not match the header".into(),
                });
                return;
            };
            let now = block
                .header
                .time
                .checked_add(std::time::Duration::from_secs(1))
                .unwrap_or(block.header.time);
            let trusted = TrustedBlockState {
                chain_id: &self.chain_id,
                header_time: trusted_time,
                height: if first {
                    block::Height::try_from(0u64).unwrap_or_default()
                } else {
                    trusted_height
                },
                next_validators: &set,
                next_validators_hash: trusted_next_hash,
            };
            let verdict = ProdVerifier::default().verify_update_header(
                UntrustedBlockState {
                    signed_header: &signed,
                    validators: &set,
                    next_validators: Some(&set),
                },
                trusted,
                &options,
                now,
            );
            if verdict != Verdict::Success {
                self.violate(Violation::LightClient {
                    node,
                    height: block.header.height.value(),
                    reason: format!("{verdict:?}"),
                });
                return;
            }
            first = false;
            trusted_height = block.header.height;
            trusted_time = block.header.time;
            trusted_next_hash = block.header.next_validators_hash;
        }
    }
}
