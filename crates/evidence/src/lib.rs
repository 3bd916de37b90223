//! Evidence of misbehaviour, as CometBFT v0.38 has it: a validator that signed two different
//! votes for one height, round and step (`DuplicateVoteEvidence`). Without I/O:
//!
//! - [`duplicate_vote`] turns two conflicting votes into evidence in CometBFT's canonical form
//!   (votes ordered by block-id key, the validator's and the set's power, the time of the
//!   block at that height);
//! - [`verify`] checks evidence a peer or a proposer offers against the set and block time of
//!   its height and the chain's evidence parameters, naming what is wrong;
//! - [`Pool`] keeps conflicting votes until their height is committed, then pending evidence
//!   until a block commits it, and what was committed, so evidence is committed once.
//!
//! What is committed reaches the application as `Misbehavior` ([`misbehavior`]).

use bulwark_types::signing::verify_vote;
use bulwark_types::tendermint::abci::types::{Misbehavior, MisbehaviorKind, Validator};
use bulwark_types::tendermint::evidence::{self, DuplicateVoteEvidence, Evidence};
use bulwark_types::tendermint::vote::{Power, Vote};
use bulwark_types::tendermint::{block, chain, validator, Time};
use bulwark_types::tendermint_proto::v0_38 as pb;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Why evidence is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EvidenceError {
    /// Light-client-attack evidence (Bulwark chains have no light-client attacks to punish:
    /// validators only accept headers with their own commits).
    #[error("only duplicate-vote evidence is accepted")]
    Unsupported,
    /// The two votes differ in what must be the same.
    #[error("the two votes differ in {0}")]
    Mismatch(&'static str),
    /// The two votes are for the same block: no conflict.
    #[error("both votes are for the same block")]
    SameBlock,
    /// Vote A's block-id key is not below vote B's (CometBFT's canonical order).
    #[error("the votes are not in canonical order")]
    Order,
    /// The voter is not in the set of that height (or at another index).
    #[error("the voter is not validator {index} of height {height}")]
    UnknownValidator {
        /// The index the votes name.
        index: u32,
        /// The height.
        height: u64,
    },
    /// A signature does not verify.
    #[error("vote {which}'s signature does not verify")]
    BadSignature {
        /// "A" or "B".
        which: &'static str,
    },
    /// The total power stated is not the set's.
    #[error("stated total power {stated} is not the set's {total}")]
    WrongPower {
        /// Stated total power.
        stated: u64,
        /// The set's.
        total: u64,
    },
    /// The time stated is not the time of the block at the evidence height.
    #[error("time {got} is not the time of block {height} ({expected})")]
    WrongTime {
        /// The height.
        height: u64,
        /// That block's time.
        expected: Time,
        /// The evidence's time.
        got: Time,
    },
    /// Older than `evidence.max_age_num_blocks` and `max_age_duration` both.
    #[error("evidence of height {height} has expired")]
    Expired {
        /// The evidence height.
        height: u64,
    },
    /// A vote carries a vote extension: this chain does not enable them, and the extension is
    /// not signed by the vote's signature, so it could pad evidence at will.
    #[error("vote {which} carries a vote extension")]
    Extension {
        /// "A" or "B".
        which: &'static str,
    },
    /// Its height is not committed yet.
    #[error("evidence of height {0}, which is not committed yet")]
    NotCommitted(u64),
    /// Committed before.
    #[error("evidence committed before")]
    AlreadyCommitted,
    /// Not evidence CometBFT's types can hold (a missing vote, a bad field).
    #[error("malformed evidence: {0}")]
    Malformed(String),
    /// The pool holds as much pending evidence as it may until some is committed.
    #[error("the evidence pool is full")]
    PoolFull,
    /// More submissions than the node checks per tick: retry after a moment.
    #[error("too many evidence submissions at once; retry shortly")]
    Busy,
    /// Twice in one block.
    #[error("the same evidence twice in one block")]
    Duplicate,
    /// More evidence bytes than `evidence.max_bytes`.
    #[error("{size} bytes of evidence exceed evidence.max_bytes {max}")]
    TooLarge {
        /// Bytes.
        size: usize,
        /// The limit.
        max: i64,
    },
}

/// What evidence of one height is checked against: the chain, the validator set of that height
/// and the time of its block.
#[derive(Clone, Copy, Debug)]
pub struct AtHeight<'a> {
    /// The chain id votes are signed for.
    pub chain_id: &'a chain::Id,
    /// The validators of the evidence height.
    pub validators: &'a validator::Set,
    /// The time of the block at the evidence height.
    pub block_time: Time,
}

/// The chain's last block: evidence ages against it.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// The last committed height.
    pub height: u64,
    /// Its time.
    pub time: Time,
}

/// CometBFT's `BlockID.Key()`: the hash followed by the protobuf part-set header.
pub fn block_id_key(id: Option<&block::Id>) -> Vec<u8> {
    let id = id.copied().unwrap_or_default();
    let mut key = id.hash.as_bytes().to_vec();
    key.extend(pb::types::PartSetHeader::from(id.part_set_header).encode_to_vec());
    key
}

fn powers(set: &validator::Set, vote: &Vote, height: u64) -> Result<(Power, Power), EvidenceError> {
    let index = vote.validator_index.value();
    let unknown = EvidenceError::UnknownValidator { index, height };
    let info = set.validators().get(index as usize).ok_or(unknown)?;
    if info.address != vote.validator_address {
        return Err(EvidenceError::UnknownValidator { index, height });
    }
    Ok((info.power, set.total_voting_power()))
}

/// Evidence that the signer of `a` and `b` voted twice, in canonical form.
pub fn duplicate_vote(a: Vote, b: Vote, at: AtHeight<'_>) -> Result<Evidence, EvidenceError> {
    let (vote_a, vote_b) = if block_id_key(a.block_id.as_ref()) < block_id_key(b.block_id.as_ref())
    {
        (a, b)
    } else {
        (b, a)
    };
    let height = vote_a.height.value();
    let (validator_power, total_voting_power) = powers(at.validators, &vote_a, height)?;
    let mut e = DuplicateVoteEvidence::new(vote_a, vote_b)
        .map_err(|_| EvidenceError::Mismatch("height"))?;
    e.validator_power = validator_power;
    e.total_voting_power = total_voting_power;
    e.timestamp = at.block_time;
    let e = Evidence::DuplicateVote(Box::new(e));
    check_votes(&e, at)?;
    Ok(e)
}

/// The height evidence is of.
pub fn height_of(e: &Evidence) -> Option<u64> {
    match e {
        Evidence::DuplicateVote(d) => Some(d.vote_a.height.value()),
        Evidence::LightClientAttack(_) => None,
    }
}

/// Whether evidence of `height` at `time` is too old to commit: CometBFT expires it only when
/// it is older than both limits.
pub fn is_expired(height: u64, time: Time, now: Now, params: &evidence::Params) -> bool {
    let blocks = now.height.saturating_sub(height);
    let age = now
        .time
        .duration_since(time)
        .unwrap_or(std::time::Duration::ZERO);
    blocks > params.max_age_num_blocks && age > params.max_age_duration.0
}

fn check_votes(e: &Evidence, at: AtHeight<'_>) -> Result<(), EvidenceError> {
    let Evidence::DuplicateVote(d) = e else {
        return Err(EvidenceError::Unsupported);
    };
    let (a, b) = (&d.vote_a, &d.vote_b);
    for (which, v) in [("A", a), ("B", b)] {
        if !v.extension.is_empty() || v.extension_signature.is_some() {
            return Err(EvidenceError::Extension { which });
        }
    }
    let same = |what, same: bool| {
        if same {
            Ok(())
        } else {
            Err(EvidenceError::Mismatch(what))
        }
    };
    same("height", a.height == b.height)?;
    same("round", a.round == b.round)?;
    same("type", a.vote_type == b.vote_type)?;
    same("validator", a.validator_address == b.validator_address)?;
    same("validator index", a.validator_index == b.validator_index)?;
    if a.block_id == b.block_id {
        return Err(EvidenceError::SameBlock);
    }
    if block_id_key(a.block_id.as_ref()) >= block_id_key(b.block_id.as_ref()) {
        return Err(EvidenceError::Order);
    }
    let height = a.height.value();
    // The stated validator power is not checked: tendermint-rs 0.41 encodes the total power
    // in its place (`From<DuplicateVoteEvidence> for RawDuplicateVoteEvidence`), so after any
    // trip through protobuf it is not what was made. What the application is told takes the
    // power from the set instead ([`misbehavior`]).
    let (_, total) = powers(at.validators, a, height)?;
    if d.total_voting_power != total {
        return Err(EvidenceError::WrongPower {
            stated: d.total_voting_power.value(),
            total: total.value(),
        });
    }
    let key = &at.validators.validators()[a.validator_index.value() as usize].pub_key;
    verify_vote(key, a, at.chain_id).map_err(|_| EvidenceError::BadSignature { which: "A" })?;
    verify_vote(key, b, at.chain_id).map_err(|_| EvidenceError::BadSignature { which: "B" })?;
    Ok(())
}

/// Checks evidence offered by a peer or in a block: two conflicting, validly signed votes of a
/// validator of its height, in canonical form, with that height's powers and block time, and
/// not expired.
pub fn verify(
    e: &Evidence,
    at: AtHeight<'_>,
    now: Now,
    params: &evidence::Params,
) -> Result<(), EvidenceError> {
    let Evidence::DuplicateVote(d) = e else {
        return Err(EvidenceError::Unsupported);
    };
    let size = encoded_len(std::slice::from_ref(e));
    if size as i64 > params.max_bytes {
        return Err(EvidenceError::TooLarge {
            size,
            max: params.max_bytes,
        });
    }
    let height = d.vote_a.height.value();
    if height > now.height {
        return Err(EvidenceError::NotCommitted(height));
    }
    if d.timestamp != at.block_time {
        return Err(EvidenceError::WrongTime {
            height,
            expected: at.block_time,
            got: d.timestamp,
        });
    }
    if is_expired(height, d.timestamp, now, params) {
        return Err(EvidenceError::Expired { height });
    }
    check_votes(e, at)
}

/// What identifies a piece of evidence: the offence, SHA-256 over a label, the validator's
/// address, the height, round and vote type. Not the encoding: the double signer can re-sign its
/// votes with other timestamps, so one offence could otherwise be committed (and punished) any
/// number of times, and fill every pool with variants.
pub fn digest(e: &Evidence) -> [u8; 32] {
    match e {
        Evidence::DuplicateVote(d) => offence(&d.vote_a),
        Evidence::LightClientAttack(_) => {
            Sha256::digest(pb::types::Evidence::from(e.clone()).encode_to_vec()).into()
        }
    }
}

/// The offence a vote would be half of (see [`digest`]).
pub fn offence(v: &Vote) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"bulwark/offence/v1");
    h.update(v.validator_address.as_bytes());
    h.update(v.height.value().to_be_bytes());
    h.update(v.round.value().to_be_bytes());
    h.update([match v.vote_type {
        bulwark_types::tendermint::vote::Type::Prevote => 1u8,
        bulwark_types::tendermint::vote::Type::Precommit => 2u8,
    }]);
    h.finalize().into()
}

/// The protobuf size of a list of evidence, as a block carries it.
pub fn encoded_len(list: &[Evidence]) -> usize {
    pb::types::EvidenceList {
        evidence: list.iter().cloned().map(Into::into).collect(),
    }
    .encoded_len()
}

/// Who misbehaved, where: for a log line.
pub fn summary(e: &Evidence) -> String {
    match e {
        Evidence::DuplicateVote(d) => format!(
            "{} at height {} round {} ({:?})",
            d.vote_a.validator_address,
            d.vote_a.height,
            d.vote_a.round.value(),
            d.vote_a.vote_type
        ),
        Evidence::LightClientAttack(_) => "light-client attack".into(),
    }
}

/// What the application is told about committed evidence, with the validator's power taken
/// from `validators`, the set of the evidence height (see [`check_votes`] for why not from the
/// evidence).
pub fn misbehavior(e: &Evidence, validators: &validator::Set) -> Option<Misbehavior> {
    let Evidence::DuplicateVote(d) = e else {
        return None;
    };
    let (power, _) = powers(validators, &d.vote_a, d.vote_a.height.value()).ok()?;
    Some(Misbehavior {
        kind: MisbehaviorKind::DuplicateVote,
        validator: Validator {
            address: d.vote_a.validator_address.as_bytes().try_into().ok()?,
            power,
        },
        height: d.vote_a.height,
        time: d.timestamp,
        total_voting_power: d.total_voting_power,
    })
}

/// Most conflicting vote pairs kept until their height is committed, and most pending pieces.
pub const MAX_PENDING: usize = 1_024;

/// The node's evidence: conflicting votes its core found, evidence waiting for a block, and
/// what blocks committed.
#[derive(Debug, Default)]
pub struct Pool {
    /// Conflicting votes of heights not committed yet.
    conflicts: Vec<(Vote, Vote)>,
    /// Verified evidence not committed yet, by digest.
    pending: BTreeMap<[u8; 32], Evidence>,
    /// Digests committed, with the evidence's height and time: kept until the evidence has
    /// expired, after which [`verify`] refuses it anyway.
    committed: BTreeMap<[u8; 32], (u64, Time)>,
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Pool {
        Pool::default()
    }

    /// Two conflicting votes the core found; they become evidence once their height is
    /// committed ([`Pool::conflicts_of`]).
    pub fn conflict(&mut self, a: Vote, b: Vote) {
        let id = offence(&a);
        if self.conflicts.len() < MAX_PENDING
            && !self.knows(&id)
            && !self.conflicts.iter().any(|(x, _)| offence(x) == id)
        {
            self.conflicts.push((a, b));
        }
    }

    /// Whether no more evidence fits until some is committed or expires.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= MAX_PENDING
    }

    /// The conflicting votes of heights up to `height`, taken out.
    pub fn conflicts_up_to(&mut self, height: u64) -> Vec<(Vote, Vote)> {
        let (ready, later) = std::mem::take(&mut self.conflicts)
            .into_iter()
            .partition(|(a, _)| a.height.value() <= height);
        self.conflicts = later;
        ready
    }

    /// Whether evidence with this digest was committed.
    pub fn is_committed(&self, digest: &[u8; 32]) -> bool {
        self.committed.contains_key(digest)
    }

    /// Whether evidence with this digest is pending or was committed.
    pub fn knows(&self, digest: &[u8; 32]) -> bool {
        self.is_committed(digest) || self.pending.contains_key(digest)
    }

    /// The pending piece of this offence.
    pub fn pending_piece(&self, digest: &[u8; 32]) -> Option<&Evidence> {
        self.pending.get(digest)
    }

    /// Evidence of `height` and `time` committed before a restart (from the node's log).
    pub fn remember_committed(&mut self, digest: [u8; 32], height: u64, time: Time) {
        self.committed.insert(digest, (height, time));
    }

    /// Adds verified evidence; true when it is new (not pending, not committed).
    pub fn add(&mut self, e: Evidence) -> bool {
        let d = digest(&e);
        if self.committed.contains_key(&d)
            || self.pending.contains_key(&d)
            || self.pending.len() >= MAX_PENDING
        {
            return false;
        }
        self.pending.insert(d, e);
        true
    }

    /// Pending evidence for a block, oldest heights first, within `max_bytes`.
    pub fn reap(&self, max_bytes: i64) -> Vec<Evidence> {
        let mut list: Vec<&Evidence> = self.pending.values().collect();
        list.sort_by_key(|e| (height_of(e), digest(e)));
        let mut out = Vec::new();
        for e in list {
            out.push(e.clone());
            // One that does not fit makes room for smaller ones, never blocks them.
            if encoded_len(&out) as i64 > max_bytes {
                out.pop();
            }
        }
        out
    }

    /// A block committed `list`; forgets what expired by `now`. Returns the committed digests
    /// forgotten, for the node's log.
    pub fn committed_in(
        &mut self,
        list: &[Evidence],
        now: Now,
        params: &evidence::Params,
    ) -> Vec<[u8; 32]> {
        for e in list {
            let d = digest(e);
            self.pending.remove(&d);
            if let Evidence::DuplicateVote(v) = e {
                self.committed
                    .insert(d, (v.vote_a.height.value(), v.timestamp));
            }
        }
        self.pending.retain(|_, e| match e {
            Evidence::DuplicateVote(d) => {
                !is_expired(d.vote_a.height.value(), d.timestamp, now, params)
            }
            Evidence::LightClientAttack(_) => false,
        });
        let expired: Vec<[u8; 32]> = self
            .committed
            .iter()
            .filter(|(_, (h, t))| is_expired(*h, *t, now, params))
            .map(|(d, _)| *d)
            .collect();
        for d in &expired {
            self.committed.remove(d);
        }
        expired
    }

    /// Evidence waiting for a block.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Checks a block's evidence list as a whole: no piece twice, none committed before, within
/// `evidence.max_bytes`. Each piece is checked with [`verify`] by the caller, who has the sets
/// and block times of their heights.
pub fn check_list(
    list: &[Evidence],
    pool: &Pool,
    params: &evidence::Params,
) -> Result<(), EvidenceError> {
    let size = encoded_len(list);
    if size as i64 > params.max_bytes {
        return Err(EvidenceError::TooLarge {
            size,
            max: params.max_bytes,
        });
    }
    let mut seen = BTreeSet::new();
    for e in list {
        let d = digest(e);
        if !seen.insert(d) {
            return Err(EvidenceError::Duplicate);
        }
        if pool.is_committed(&d) {
            return Err(EvidenceError::AlreadyCommitted);
        }
    }
    Ok(())
}
