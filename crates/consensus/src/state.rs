//! The Tendermint state machine of one validator, following Algorithm 1 of "The latest gossip on
//! BFT consensus" (Buchman, Kwon, Milosevic; arXiv 1807.04938). Each `upon` rule of the paper is
//! one method named after it, with the paper's line numbers in its doc comment, so the two can be
//! read side by side.
//!
//! Deviations from the paper, each for a reason:
//! - Deciding (line 49) does not move to the next height by itself: the driver must first
//!   execute the block (which may change the validator set), then send [`Event::NewHeight`].
//! - The proposer also schedules `timeoutPropose`, as CometBFT does, so a proposer whose
//!   application is slow to build a block cannot hold its round forever (line 57 only ever
//!   prevotes nil, which is always safe).
//! - Messages of other heights are dropped; peers re-gossip what a lagging node misses.
//! - Each validator may occupy at most [`MAX_FUTURE_ROUNDS_PER_VALIDATOR`] rounds above ours, and
//!   an equivocating proposer at most [`MAX_PROPOSALS_PER_ROUND`] proposals a round, so a
//!   byzantine validator cannot make the core's memory grow without bound.

use crate::mutation::{active, Mutant};
use crate::types::{
    Height, Proposal, Round, SignedProposal, SignedVote, ValidatorIndex, Validity, ValueId, Vote,
    VoteKind,
};
use crate::validators::{ProposerSchedule, ValidatorSet};
use crate::votes::{AddVote, Tally};
use core::time::Duration;
use std::collections::BTreeMap;

/// How many rounds above the current one a single validator's messages may occupy.
pub const MAX_FUTURE_ROUNDS_PER_VALIDATOR: usize = 2;

/// How many distinct proposals of one round (from an equivocating proposer) are kept.
pub const MAX_PROPOSALS_PER_ROUND: usize = 4;

/// How many rounds above the current one `proposer(h, r)` is computed for. Stepping the
/// proposer priorities costs O(validators) per round, so a message naming round 2³¹ − 1 must
/// not make the node step two billion times before it checks anything (a peer cannot move an
/// honest node's round that far: a round skip needs f + 1 validators in that round).
pub const PROPOSER_LOOKAHEAD: u32 = 64;

/// Timeout durations: `base + delta * round`, so timeouts grow with the round until they exceed
/// the (unknown) message delay after GST, which is what gives liveness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `timeoutPropose(0)`.
    pub propose: Duration,
    /// Added to `timeoutPropose` per round.
    pub propose_delta: Duration,
    /// `timeoutPrevote(0)`.
    pub prevote: Duration,
    /// Added to `timeoutPrevote` per round.
    pub prevote_delta: Duration,
    /// `timeoutPrecommit(0)`.
    pub precommit: Duration,
    /// Added to `timeoutPrecommit` per round.
    pub precommit_delta: Duration,
}

impl Default for Config {
    /// CometBFT's defaults.
    fn default() -> Self {
        Config {
            propose: Duration::from_millis(3000),
            propose_delta: Duration::from_millis(500),
            prevote: Duration::from_millis(1000),
            prevote_delta: Duration::from_millis(500),
            precommit: Duration::from_millis(1000),
            precommit_delta: Duration::from_millis(500),
        }
    }
}

impl Config {
    /// The duration of `kind`'s timeout in `round`.
    pub fn timeout(&self, kind: TimeoutKind, round: Round) -> Duration {
        let (base, delta) = match kind {
            TimeoutKind::Propose => (self.propose, self.propose_delta),
            TimeoutKind::Prevote => (self.prevote, self.prevote_delta),
            TimeoutKind::Precommit => (self.precommit, self.precommit_delta),
        };
        base.saturating_add(delta.saturating_mul(round.0))
    }
}

/// The three timeouts of the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeoutKind {
    /// `OnTimeoutPropose` (line 57).
    Propose,
    /// `OnTimeoutPrevote` (line 61).
    Prevote,
    /// `OnTimeoutPrecommit` (line 65).
    Precommit,
}

/// A timeout the driver scheduled and now reports as expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeout {
    /// Height it was scheduled at.
    pub height: Height,
    /// Round it was scheduled at.
    pub round: Round,
    /// Which timeout.
    pub kind: TimeoutKind,
}

/// The step of the current round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Waiting for the proposal.
    Propose,
    /// Prevoted, waiting for a polka.
    Prevote,
    /// Precommitted, waiting for a decision or the next round.
    Precommit,
    /// Decided this height; waiting for the driver's [`Event::NewHeight`].
    Decided,
}

/// Everything that can happen to the core. The driver verifies signatures before it constructs
/// `Proposal` and `Vote` events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Start `height` with its validator set (line 10 / line 54 of the paper).
    NewHeight {
        /// The height to start.
        height: Height,
        /// The validators of that height.
        validators: ValidatorSet,
    },
    /// A proposal and whether its value is valid. The driver reports it once it holds the whole
    /// value (all block parts) and has checked it.
    Proposal {
        /// The signed proposal.
        proposal: SignedProposal,
        /// `valid(v)`.
        validity: Validity,
    },
    /// A prevote or precommit.
    Vote(SignedVote),
    /// The value `getValue()` produced, answering [`Action::GetValue`].
    ProposeValue {
        /// Height the value was asked for.
        height: Height,
        /// Round the value was asked for.
        round: Round,
        /// The value.
        value: ValueId,
    },
    /// A scheduled timeout expired.
    Timeout(Timeout),
    /// Votes that together prove a quorum (a commit, a polka), relayed by a peer. The core
    /// checks it as a whole; it counts even where an equivocator's other vote arrived first.
    Certificate(Certificate),
}

/// More than two thirds of the power, from distinct validators, signing the same kind, height,
/// round and value. The driver verifies each signature; the core checks the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// Prevotes (a polka) or precommits (a commit).
    pub kind: VoteKind,
    /// The height.
    pub height: Height,
    /// The round.
    pub round: Round,
    /// The value; `None` certifies nil.
    pub value: Option<ValueId>,
    /// The votes.
    pub votes: Vec<SignedVote>,
}

/// What the core asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Build a value (`getValue()`, line 17) and answer with [`Event::ProposeValue`].
    GetValue {
        /// Height to build for.
        height: Height,
        /// Round to build for.
        round: Round,
    },
    /// Sign and broadcast this proposal, then hand it back as an [`Event::Proposal`].
    Propose(Proposal),
    /// Sign and broadcast this vote, then hand it back as an [`Event::Vote`].
    Vote(Vote),
    /// Report [`Event::Timeout`] with `timeout` after `after` has passed.
    ScheduleTimeout {
        /// The timeout to report.
        timeout: Timeout,
        /// How long to wait.
        after: Duration,
    },
    /// The height is decided (line 51).
    Decide(Decision),
    /// A validator signed two different votes for the same height, round and kind.
    Evidence(DuplicateVote),
}

/// A decision with everything needed to prove it: the proposal and the round's precommits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The decided height.
    pub height: Height,
    /// The round in which the decision was made.
    pub round: Round,
    /// The decided value.
    pub value: ValueId,
    /// The proposal of `value` in `round`.
    pub proposal: SignedProposal,
    /// Every precommit received in `round` (for the value, for nil or for another value), in
    /// validator-set order. More than two thirds of the power precommitted `value`.
    pub precommits: Vec<SignedVote>,
}

/// Two conflicting signed votes of one validator (CometBFT's `DuplicateVoteEvidence`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateVote {
    /// The vote seen first.
    pub first: SignedVote,
    /// The conflicting vote.
    pub second: SignedVote,
}

#[derive(Clone, Debug)]
struct RoundState {
    /// Proposals from the round's proposer, first seen first.
    proposals: Vec<(SignedProposal, Validity)>,
    prevotes: Tally,
    precommits: Tally,
    /// Line 34 fired ("for the first time").
    prevote_timeout_scheduled: bool,
    /// Line 36 fired ("for the first time").
    polka_for_value_seen: bool,
    /// Line 47 fired ("for the first time").
    precommit_timeout_scheduled: bool,
}

impl RoundState {
    fn new(validators: usize) -> Self {
        RoundState {
            proposals: Vec::new(),
            prevotes: Tally::new(validators),
            precommits: Tally::new(validators),
            prevote_timeout_scheduled: false,
            polka_for_value_seen: false,
            precommit_timeout_scheduled: false,
        }
    }

    fn has_message_from(&self, validator: ValidatorIndex) -> bool {
        self.prevotes.voted(validator)
            || self.precommits.voted(validator)
            || self
                .proposals
                .iter()
                .any(|(p, _)| p.message.proposer == validator)
    }

    fn valid_proposal_of(&self, value: ValueId) -> Option<&SignedProposal> {
        self.proposals
            .iter()
            .find(|(p, validity)| p.message.value == value && *validity == Validity::Valid)
            .map(|(p, _)| p)
    }
}

/// One round of the height in progress, as [`Consensus::rounds_seen`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundSeen {
    /// The round.
    pub round: Round,
    /// Each validator's counted prevote, in set order.
    pub prevotes: Vec<Option<SignedVote>>,
    /// Each validator's counted precommit, in set order.
    pub precommits: Vec<Option<SignedVote>>,
    /// The value of the round's first valid proposal.
    pub proposal: Option<ValueId>,
}

/// Everything that only exists once a height has started.
#[derive(Clone, Debug)]
struct HeightState {
    height: Height,
    validators: ValidatorSet,
    schedule: ProposerSchedule,
    me: Option<ValidatorIndex>,
    round: Round,
    step: Step,
    /// `lockedValue`/`lockedRound`.
    locked: Option<(Round, ValueId)>,
    /// `validValue`/`validRound`.
    valid: Option<(Round, ValueId)>,
    rounds: BTreeMap<Round, RoundState>,
    /// A `GetValue` for the current round is outstanding.
    awaiting_value: bool,
}

/// The consensus state machine of one node. Feed it [`Event`]s with [`Consensus::handle`] and
/// carry out the [`Action`]s it returns, in order.
#[derive(Clone, Debug)]
pub struct Consensus {
    config: Config,
    address: Option<Vec<u8>>,
    state: Option<HeightState>,
}

impl Consensus {
    /// A core for the validator with `address` (or a non-voting follower when `None`). It does
    /// nothing until the first [`Event::NewHeight`].
    pub fn new(config: Config, address: Option<Vec<u8>>) -> Self {
        Consensus {
            config,
            address,
            state: None,
        }
    }

    /// The current height, once started.
    pub fn height(&self) -> Option<Height> {
        self.state.as_ref().map(|s| s.height)
    }

    /// The current round, once started.
    pub fn round(&self) -> Option<Round> {
        self.state.as_ref().map(|s| s.round)
    }

    /// The current step, once started.
    pub fn step(&self) -> Option<Step> {
        self.state.as_ref().map(|s| s.step)
    }

    /// `(lockedRound, lockedValue)`.
    pub fn locked(&self) -> Option<(Round, ValueId)> {
        self.state.as_ref().and_then(|s| s.locked)
    }

    /// `(validRound, validValue)`.
    pub fn valid(&self) -> Option<(Round, ValueId)> {
        self.state.as_ref().and_then(|s| s.valid)
    }

    /// What the height in progress has seen, round by round (for RPC's `consensus_state`):
    /// each validator's counted prevote and precommit in set order, and the round's first
    /// valid proposal.
    pub fn rounds_seen(&self) -> Vec<RoundSeen> {
        let Some(state) = &self.state else {
            return Vec::new();
        };
        state
            .rounds
            .iter()
            .map(|(round, r)| RoundSeen {
                round: *round,
                prevotes: r.prevotes.by_validator().to_vec(),
                precommits: r.precommits.by_validator().to_vec(),
                proposal: r
                    .proposals
                    .iter()
                    .find(|(_, validity)| *validity == Validity::Valid)
                    .map(|(p, _)| p.message.value),
            })
            .collect()
    }

    /// `proposer(h, round)` for the current height, for rounds up to [`PROPOSER_LOOKAHEAD`]
    /// above the current one (`None` beyond: nothing from such a round can matter yet).
    pub fn proposer(&mut self, round: Round) -> Option<ValidatorIndex> {
        let s = self.state.as_mut()?;
        if round.0 > s.round.0.saturating_add(PROPOSER_LOOKAHEAD)
            && !active(Mutant::AnyRoundProposal)
        {
            return None;
        }
        Some(s.schedule.proposer(round))
    }

    /// Whether [`Event::Vote`] with `vote` would be stored (counted, or kept as the first
    /// conflicting vote of its validator): the node logs only what the core admits, so a
    /// re-delivered or out-of-bounds vote costs neither a signature check nor a WAL record.
    pub fn admits_vote(&self, vote: &Vote) -> bool {
        let Some(s) = &self.state else {
            return false;
        };
        if s.step == Step::Decided
            || vote.height != s.height
            || s.validators.get(vote.validator).is_none()
            || !s.admits_round(vote.validator, vote.round)
        {
            return false;
        }
        match s.rounds.get(&vote.round) {
            None => true,
            Some(rs) => {
                let tally = match vote.kind {
                    VoteKind::Prevote => &rs.prevotes,
                    VoteKind::Precommit => &rs.precommits,
                };
                tally.would_store(vote)
            }
        }
    }

    /// Whether [`Event::Proposal`] with `proposal` would be stored.
    pub fn admits_proposal(&mut self, proposal: &Proposal) -> bool {
        let Some(s) = self.state.as_mut() else {
            return false;
        };
        s.admits_proposal(proposal)
    }

    /// Whether [`Event::Certificate`] of `kind` for `value` at `round` could still add
    /// anything: the round is admitted and holds no certificate of that kind yet.
    pub fn admits_certificate(&self, kind: VoteKind, round: Round, value: Option<ValueId>) -> bool {
        let Some(s) = &self.state else {
            return false;
        };
        if s.step == Step::Decided || round.0 > s.round.0.saturating_add(PROPOSER_LOOKAHEAD) {
            return false;
        }
        match s.rounds.get(&round) {
            None => true,
            Some(rs) => {
                let tally = match kind {
                    VoteKind::Prevote => &rs.prevotes,
                    VoteKind::Precommit => &rs.precommits,
                };
                !tally.is_certified() && tally.quorum_value(&s.validators) != Some(value)
            }
        }
    }

    /// This node's index in the current validator set (`None` for a follower).
    pub fn me(&self) -> Option<ValidatorIndex> {
        self.state.as_ref().and_then(|s| s.me)
    }

    /// Certificates for every quorum this node holds at the current height (polkas and
    /// commits for a value, or for nil), for relaying to peers that missed votes.
    pub fn certificates(&self) -> Vec<Certificate> {
        let Some(s) = &self.state else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (round, rs) in &s.rounds {
            for (kind, tally) in [
                (VoteKind::Prevote, &rs.prevotes),
                (VoteKind::Precommit, &rs.precommits),
            ] {
                if let Some((value, votes)) = tally.quorum_votes(&s.validators) {
                    out.push(Certificate {
                        kind,
                        height: s.height,
                        round: *round,
                        value,
                        votes,
                    });
                }
            }
        }
        out
    }

    /// The validator set of the current height.
    pub fn validators(&self) -> Option<&ValidatorSet> {
        self.state.as_ref().map(|s| &s.validators)
    }

    /// Processes one event and returns the actions it causes, in the order they must be
    /// carried out.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::NewHeight { height, validators } => {
                self.start_height(height, validators, &mut out)
            }
            Event::Proposal { proposal, validity } => {
                if let Some(s) = self.state.as_mut() {
                    s.accept_proposal(proposal, validity);
                }
            }
            Event::Vote(vote) => {
                if let Some(s) = self.state.as_mut() {
                    s.accept_vote(vote, &mut out);
                }
            }
            Event::ProposeValue {
                height,
                round,
                value,
            } => {
                if let Some(s) = self.state.as_mut() {
                    s.on_value(height, round, value, &mut out);
                }
            }
            Event::Certificate(c) => {
                if let Some(s) = self.state.as_mut() {
                    s.accept_certificate(c, &mut out);
                }
            }
            Event::Timeout(t) => {
                if let Some(s) = self.state.as_mut() {
                    match t.kind {
                        TimeoutKind::Propose => s.on_timeout_propose(t.height, t.round, &mut out),
                        TimeoutKind::Prevote => s.on_timeout_prevote(t.height, t.round, &mut out),
                        TimeoutKind::Precommit => {
                            s.on_timeout_precommit(&self.config, t.height, t.round, &mut out)
                        }
                    }
                }
            }
        }
        if let Some(s) = self.state.as_mut() {
            s.apply_rules(&self.config, &mut out);
        }
        out
    }

    /// Lines 10 and 52–54: a fresh height starts in round 0 with no lock.
    fn start_height(&mut self, height: Height, validators: ValidatorSet, out: &mut Vec<Action>) {
        if let Some(s) = &self.state {
            // A stale or repeated NewHeight must not wipe the lock of the height in progress.
            if height <= s.height {
                return;
            }
        }
        let me = self.address.as_deref().and_then(|a| validators.index_of(a));
        let schedule = ProposerSchedule::new(&validators);
        let mut s = HeightState {
            height,
            validators,
            schedule,
            me,
            round: Round(0),
            step: Step::Propose,
            locked: None,
            valid: None,
            rounds: BTreeMap::new(),
            awaiting_value: false,
        };
        s.start_round(&self.config, Round(0), out);
        self.state = Some(s);
    }
}

impl HeightState {
    fn round_state(&mut self, round: Round) -> &mut RoundState {
        let n = self.validators.len();
        self.rounds
            .entry(round)
            .or_insert_with(|| RoundState::new(n))
    }

    /// A message from `validator` for `round` may be stored: rounds at or below ours always,
    /// higher rounds only while the validator occupies fewer than the allowed number of them.
    fn admits_round(&self, validator: ValidatorIndex, round: Round) -> bool {
        if round <= self.round {
            return true;
        }
        let occupied = self
            .rounds
            .range(self.round.next()..)
            .filter(|(r, rs)| **r != round && rs.has_message_from(validator))
            .count();
        occupied < MAX_FUTURE_ROUNDS_PER_VALIDATOR
    }

    /// Whether `p` would be stored: this height, not decided, the round's proposer (checked
    /// only for rounds within [`PROPOSER_LOOKAHEAD`], after the cheap checks), a POL round
    /// before the round, and room in the round.
    fn admits_proposal(&mut self, p: &Proposal) -> bool {
        if self.step == Step::Decided
            || p.height != self.height
            || (p.round.0 > self.round.0.saturating_add(PROPOSER_LOOKAHEAD)
                && !active(Mutant::AnyRoundProposal))
            || self.validators.get(p.proposer).is_none()
            || p.pol_round.is_some_and(|vr| vr >= p.round)
            || !self.admits_round(p.proposer, p.round)
            || self.schedule.proposer(p.round) != p.proposer
        {
            return false;
        }
        self.rounds.get(&p.round).is_none_or(|rs| {
            !rs.proposals.iter().any(|(q, _)| q.message.value == p.value)
                && rs.proposals.len() < MAX_PROPOSALS_PER_ROUND
        })
    }

    fn accept_proposal(&mut self, proposal: SignedProposal, validity: Validity) {
        // Only the round's proposer may propose, and a POL round must precede the round.
        if !self.admits_proposal(&proposal.message) {
            return;
        }
        self.round_state(proposal.message.round)
            .proposals
            .push((proposal, validity));
    }

    fn accept_vote(&mut self, vote: SignedVote, out: &mut Vec<Action>) {
        let v = vote.message;
        if self.step == Step::Decided
            || v.height != self.height
            || self.validators.get(v.validator).is_none()
            || !self.admits_round(v.validator, v.round)
        {
            return;
        }
        let power = self.validators.power(v.validator);
        let rs = self.round_state(v.round);
        let tally = match v.kind {
            VoteKind::Prevote => &mut rs.prevotes,
            VoteKind::Precommit => &mut rs.precommits,
        };
        if let AddVote::Conflict(evidence) = tally.add(vote, power) {
            out.push(Action::Evidence(*evidence));
        }
    }

    fn accept_certificate(&mut self, c: Certificate, out: &mut Vec<Action>) {
        if self.step == Step::Decided || c.height != self.height {
            return;
        }
        let mut seen = vec![false; self.validators.len()];
        let mut power = 0u64;
        for v in &c.votes {
            let m = v.message;
            let i = m.validator.as_usize();
            if m.kind != c.kind || m.height != c.height || m.round != c.round || m.value != c.value
            {
                return;
            }
            match seen.get_mut(i) {
                Some(s) if !*s => *s = true,
                _ => return, // outside the set, or signed twice
            }
            power += self.validators.power(m.validator);
        }
        if !self.validators.is_quorum(power) {
            return;
        }
        // A quorum includes at least one honest validator above, so rounds up to it are real.
        // Counted votes also feed the "any" thresholds and evidence.
        for v in &c.votes {
            self.accept_vote(v.clone(), out);
        }
        let rs = self.round_state(c.round);
        let tally = match c.kind {
            VoteKind::Prevote => &mut rs.prevotes,
            VoteKind::Precommit => &mut rs.precommits,
        };
        tally.certify(c.value, c.votes);
    }

    fn cast(&self, out: &mut Vec<Action>, kind: VoteKind, value: Option<ValueId>) {
        if let Some(me) = self.me {
            out.push(Action::Vote(Vote {
                kind,
                height: self.height,
                round: self.round,
                value,
                validator: me,
            }));
        }
    }

    fn schedule(&self, config: &Config, out: &mut Vec<Action>, kind: TimeoutKind) {
        out.push(Action::ScheduleTimeout {
            timeout: Timeout {
                height: self.height,
                round: self.round,
                kind,
            },
            after: config.timeout(kind, self.round),
        });
    }

    /// Lines 11–21: `StartRound(round)`.
    fn start_round(&mut self, config: &Config, round: Round, out: &mut Vec<Action>) {
        self.round = round;
        self.step = Step::Propose;
        self.awaiting_value = false;
        self.round_state(round);
        if self.me.is_some() && self.me == Some(self.schedule.proposer(round)) {
            match self.valid {
                // Line 15: re-propose the value that already has a polka.
                Some((valid_round, value)) => out.push(Action::Propose(Proposal {
                    height: self.height,
                    round,
                    value,
                    pol_round: Some(valid_round),
                    proposer: self.schedule.proposer(round),
                })),
                // Line 17: ask the application for a new value.
                None => {
                    self.awaiting_value = true;
                    out.push(Action::GetValue {
                        height: self.height,
                        round,
                    });
                }
            }
        }
        self.schedule(config, out, TimeoutKind::Propose);
    }

    /// Line 18, once `getValue()` has answered.
    fn on_value(&mut self, height: Height, round: Round, value: ValueId, out: &mut Vec<Action>) {
        if !self.awaiting_value
            || height != self.height
            || round != self.round
            || self.step != Step::Propose
        {
            return;
        }
        self.awaiting_value = false;
        if let Some(me) = self.me {
            out.push(Action::Propose(Proposal {
                height,
                round,
                value,
                pol_round: None,
                proposer: me,
            }));
        }
    }

    /// Runs the `upon` rules until none fires: a state change by one rule (a new round, a new
    /// step) can enable another with messages already received.
    fn apply_rules(&mut self, config: &Config, out: &mut Vec<Action>) {
        loop {
            if self.step == Step::Decided {
                return;
            }
            let fired = self.upon_commit_quorum(out)
                || self.upon_round_skip(config, out)
                || self.upon_proposal_in_propose_step(out)
                || self.upon_polka_any(config, out)
                || self.upon_polka_for_proposal(out)
                || self.upon_polka_nil(out)
                || self.upon_precommit_any(config, out);
            if !fired {
                return;
            }
        }
    }

    /// Lines 22–33. Line 22: ⟨PROPOSAL, h, r, v, −1⟩ from the proposer while step = propose:
    /// prevote id(v) if v is valid and we are not locked on something else, else nil.
    /// Line 28: ⟨PROPOSAL, h, r, v, vr⟩ with vr < r and 2f+1 ⟨PREVOTE, h, vr, id(v)⟩: prevote
    /// id(v) if v is valid and our lock is not newer than vr (or is on v), else nil.
    fn upon_proposal_in_propose_step(&mut self, out: &mut Vec<Action>) -> bool {
        if self.step != Step::Propose {
            return false;
        }
        let Some(rs) = self.rounds.get(&self.round) else {
            return false;
        };
        let mut prevote = None;
        for (p, validity) in &rs.proposals {
            let v = p.message.value;
            let valid = *validity == Validity::Valid;
            match p.message.pol_round {
                None => {
                    // Line 23.
                    let free = match self.locked {
                        None => true,
                        Some((_, locked_value)) => locked_value == v || active(Mutant::IgnoreLock),
                    };
                    prevote = Some((valid && free).then_some(v));
                }
                Some(vr) => {
                    let polka = self
                        .rounds
                        .get(&vr)
                        .is_some_and(|r| r.prevotes.has_quorum_for(&self.validators, Some(v)));
                    if !polka && !active(Mutant::MissingPolAsPresent) {
                        continue;
                    }
                    // Line 29.
                    let free = match self.locked {
                        None => true,
                        Some((locked_round, locked_value)) => {
                            let pol_recent = if active(Mutant::LockedRoundStrictlyBelowPol) {
                                locked_round < vr
                            } else {
                                locked_round <= vr
                            };
                            pol_recent || locked_value == v || active(Mutant::IgnoreLockWithPol)
                        }
                    };
                    prevote = Some((valid && free).then_some(v));
                }
            }
            break;
        }
        let Some(value) = prevote else {
            return false;
        };
        self.cast(out, VoteKind::Prevote, value);
        self.step = Step::Prevote;
        true
    }

    /// Lines 34–35: 2f+1 ⟨PREVOTE, h, r, ∗⟩ while step = prevote, for the first time: schedule
    /// `OnTimeoutPrevote`.
    fn upon_polka_any(&mut self, config: &Config, out: &mut Vec<Action>) -> bool {
        if self.step != Step::Prevote {
            return false;
        }
        let quorum = {
            let Some(rs) = self.rounds.get(&self.round) else {
                return false;
            };
            !rs.prevote_timeout_scheduled && self.validators.is_quorum(rs.prevotes.total_power())
        };
        if !quorum {
            return false;
        }
        self.round_state(self.round).prevote_timeout_scheduled = true;
        self.schedule(config, out, TimeoutKind::Prevote);
        true
    }

    /// Lines 36–43: the proposal of v and 2f+1 ⟨PREVOTE, h, r, id(v)⟩ while valid(v) and
    /// step ≥ prevote, for the first time: if still in prevote, lock on v and precommit it; in
    /// any case remember v as the valid value.
    fn upon_polka_for_proposal(&mut self, out: &mut Vec<Action>) -> bool {
        if self.step < Step::Prevote {
            return false;
        }
        let round = self.round;
        let value = {
            let Some(rs) = self.rounds.get(&round) else {
                return false;
            };
            if rs.polka_for_value_seen {
                return false;
            }
            let Some(value) = rs.prevotes.quorum_value(&self.validators).flatten() else {
                return false;
            };
            if rs.valid_proposal_of(value).is_none() {
                return false;
            }
            value
        };
        self.round_state(round).polka_for_value_seen = true;
        if self.step == Step::Prevote {
            self.locked = Some((round, value));
            self.cast(out, VoteKind::Precommit, Some(value));
            self.step = Step::Precommit;
        }
        self.valid = Some((round, value));
        true
    }

    /// Lines 44–46: 2f+1 ⟨PREVOTE, h, r, nil⟩ while step = prevote: precommit nil.
    fn upon_polka_nil(&mut self, out: &mut Vec<Action>) -> bool {
        if self.step != Step::Prevote {
            return false;
        }
        let nil_quorum = self
            .rounds
            .get(&self.round)
            .is_some_and(|rs| rs.prevotes.has_quorum_for(&self.validators, None));
        if !nil_quorum {
            return false;
        }
        self.cast(out, VoteKind::Precommit, None);
        self.step = Step::Precommit;
        true
    }

    /// Lines 47–48: 2f+1 ⟨PRECOMMIT, h, r, ∗⟩ for the first time: schedule
    /// `OnTimeoutPrecommit`.
    fn upon_precommit_any(&mut self, config: &Config, out: &mut Vec<Action>) -> bool {
        let quorum = {
            let Some(rs) = self.rounds.get(&self.round) else {
                return false;
            };
            !rs.precommit_timeout_scheduled
                && self.validators.is_quorum(rs.precommits.total_power())
        };
        if !quorum {
            return false;
        }
        self.round_state(self.round).precommit_timeout_scheduled = true;
        self.schedule(config, out, TimeoutKind::Precommit);
        true
    }

    /// Lines 49–54: the proposal of v in any round r and 2f+1 ⟨PRECOMMIT, h, r, id(v)⟩ while
    /// undecided: if valid(v), decide v.
    fn upon_commit_quorum(&mut self, out: &mut Vec<Action>) -> bool {
        let mut decision = None;
        for (round, rs) in &self.rounds {
            let Some(Some(value)) = rs.precommits.quorum_value(&self.validators) else {
                continue;
            };
            if let Some(proposal) = rs.valid_proposal_of(value) {
                decision = Some(Decision {
                    height: self.height,
                    round: *round,
                    value,
                    proposal: proposal.clone(),
                    precommits: rs.precommits.proof_for(Some(value)),
                });
                break;
            }
        }
        let Some(decision) = decision else {
            return false;
        };
        self.step = Step::Decided;
        out.push(Action::Decide(decision));
        true
    }

    /// Lines 55–56: f+1 messages of any kind from distinct validators in a round above ours:
    /// jump to that round (the highest such, to catch up in one step).
    fn upon_round_skip(&mut self, config: &Config, out: &mut Vec<Action>) -> bool {
        let mut target = None;
        for (round, rs) in self.rounds.range(self.round.next()..).rev() {
            let power: u64 = (0..self.validators.len() as u32)
                .map(ValidatorIndex)
                .filter(|i| rs.has_message_from(*i))
                .map(|i| self.validators.power(i))
                .sum();
            let skip = if active(Mutant::RoundSkipOnOneValidator) {
                power > 0
            } else {
                self.validators.is_one_third(power)
            };
            if skip {
                target = Some(*round);
                break;
            }
        }
        let Some(round) = target else {
            return false;
        };
        self.start_round(config, round, out);
        true
    }

    /// Lines 57–60: `OnTimeoutPropose(h, r)`: still waiting for a proposal, prevote nil.
    fn on_timeout_propose(&mut self, height: Height, round: Round, out: &mut Vec<Action>) {
        if height == self.height && round == self.round && self.step == Step::Propose {
            self.cast(out, VoteKind::Prevote, None);
            self.step = Step::Prevote;
        }
    }

    /// Lines 61–64: `OnTimeoutPrevote(h, r)`: no polka for a value in time, precommit nil.
    fn on_timeout_prevote(&mut self, height: Height, round: Round, out: &mut Vec<Action>) {
        if height == self.height && round == self.round && self.step == Step::Prevote {
            self.cast(out, VoteKind::Precommit, None);
            self.step = Step::Precommit;
        }
    }

    /// Lines 65–67: `OnTimeoutPrecommit(h, r)`: no decision in time, start the next round.
    fn on_timeout_precommit(
        &mut self,
        config: &Config,
        height: Height,
        round: Round,
        out: &mut Vec<Action>,
    ) {
        if height == self.height && round == self.round && self.step != Step::Decided {
            self.start_round(config, round.next(), out);
        }
    }
}
