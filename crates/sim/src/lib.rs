//! Deterministic simulation of a Bulwark validator network.
//!
//! One seed fixes everything: the validator set and its powers, who is byzantine and how, who
//! crashes and when, the network's drops, duplicates, delays and partitions before GST. The
//! simulator runs real [`bulwark_consensus::Consensus`] cores under a simulated clock, with a
//! driver shaped like the node's: a write-ahead log of external inputs replayed after a crash, a
//! privval that refuses to step back or to sign a conflicting message, pull gossip for what a
//! node missed, and catch-up by decided blocks for a node that fell behind.
//!
//! The [`checker::Checker`] watches every run for the invariants: agreement, validity, no honest
//! double-sign and, when the faults are within the bound, progress after GST.

pub mod checker;
pub mod rng;
pub mod scenario;

use bulwark_consensus::{
    Action, Certificate, Config, Consensus, Event, Height, Proposal, Round, Signature, Signed,
    SignedProposal, SignedVote, Timeout, Validator, ValidatorIndex, ValidatorSet, Validity,
    ValueId, Vote, VoteKind,
};
use checker::{Checker, SignStep, Violation};
use rng::{mix_all, Rng};
use scenario::{Behaviour, Role, Scenario, SimConfig};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Duration;

/// The first height of every simulated chain.
pub const START_HEIGHT: Height = Height(1);

/// Simulated milliseconds after GST within which live honest validators must reach the target.
pub const LIVENESS_WINDOW_MS: u64 = 60_000;

/// Items processed before a run is declared a livelock.
pub const EVENT_BUDGET: u64 = 4_000_000;

/// How often a node that made no progress asks its peers for what it missed.
const GOSSIP_INTERVAL_MS: u64 = 200;

/// Messages of the next height a node keeps until it gets there.
const NEXT_HEIGHT_BUFFER: usize = 512;

/// The timeouts simulated validators use: short, so a run covers many rounds quickly.
pub fn sim_consensus_config() -> Config {
    Config {
        propose: Duration::from_millis(100),
        propose_delta: Duration::from_millis(20),
        prevote: Duration::from_millis(40),
        prevote_delta: Duration::from_millis(20),
        precommit: Duration::from_millis(40),
        precommit_delta: Duration::from_millis(20),
    }
}

/// The validity predicate of simulated values (`valid(v)`): even first byte.
pub fn is_valid(value: ValueId) -> bool {
    value.0[0] & 1 == 0
}

fn value_from(word: u64, valid: bool) -> ValueId {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix_all(&[word, i as u64]).to_le_bytes());
    }
    if valid {
        bytes[0] &= !1;
    } else {
        bytes[0] |= 1;
    }
    ValueId(bytes)
}

fn value_words(value: Option<ValueId>) -> [u64; 4] {
    let mut words = [0u64; 4];
    if let Some(v) = value {
        for (w, chunk) in words.iter_mut().zip(v.0.chunks(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b) ^ 1;
        }
    }
    words
}

/// A decided height with its proof, as a node stores it and sends it to laggards.
#[derive(Clone, Debug)]
pub struct DecidedBlock {
    /// The height.
    pub height: Height,
    /// The proposal of the decided value.
    pub proposal: SignedProposal,
    /// The precommits of the deciding round.
    pub precommits: Vec<SignedVote>,
}

#[derive(Clone, Debug)]
enum Msg {
    Proposal(SignedProposal),
    Vote(SignedVote),
    /// "I am at this height and round and have not progressed": pull gossip.
    Status {
        from: usize,
        height: Height,
        round: Round,
    },
    Decided(Box<DecidedBlock>),
    Certificate(Box<Certificate>),
}

impl Msg {
    fn height(&self) -> Option<Height> {
        match self {
            Msg::Proposal(p) => Some(p.message.height),
            Msg::Vote(v) => Some(v.message.height),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Item {
    Deliver {
        to: usize,
        msg: Msg,
    },
    Timer {
        node: usize,
        epoch: u64,
        timeout: Timeout,
    },
    Value {
        node: usize,
        epoch: u64,
        height: Height,
        round: Round,
    },
    Gossip {
        node: usize,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
}

/// CometBFT's last-sign-state: height, round and step of the last signature and what it signed.
#[derive(Clone, Debug)]
struct LastSign {
    height: Height,
    round: Round,
    step: u8,
    value: Option<ValueId>,
    signature: Signature,
}

struct Node {
    role: Role,
    up: bool,
    /// Bumped at every crash; timers and value answers of an older epoch are void.
    epoch: u64,
    core: Consensus,
    // Persisted across crashes:
    wal: Vec<Event>,
    last_sign: Option<LastSign>,
    chain: Vec<DecidedBlock>,
    // Lost at a crash:
    /// Every verified vote and proposal of the current height (own and others'), for relaying
    /// to peers that missed them: (round, kind, signer) → up to two distinct messages.
    seen: BTreeMap<(Round, u8, u32), Vec<Msg>>,
    next_height: Vec<Msg>,
    replaying: bool,
    pending_value: Option<(Height, Round)>,
    progress_mark: (Height, Round, Option<bulwark_consensus::Step>),
}

impl Node {
    fn height(&self) -> Height {
        Height(START_HEIGHT.0 + self.chain.len() as u64)
    }
}

/// The result of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Heights decided by every live honest validator.
    pub heights_decided: u64,
    /// Highest round any validator reached.
    pub max_round: u32,
    /// Simulated time at the end, in milliseconds.
    pub sim_ms: u64,
    /// Items processed (deliveries, timers, ...).
    pub events: u64,
    /// Duplicate-vote evidence reported by honest validators.
    pub evidence: u64,
    /// What went wrong; empty for a good run.
    pub violations: Vec<Violation>,
}

/// One simulated network.
pub struct Simulation {
    config: SimConfig,
    scenario: Scenario,
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    items: Vec<Option<Item>>,
    free: Vec<usize>,
    nodes: Vec<Node>,
    /// Signing key of each node.
    keys: Vec<u64>,
    /// Node of each validator index (the set is ordered by power, not by node).
    node_of: Vec<usize>,
    sets: Vec<ValidatorSet>,
    checker: Checker,
    events: u64,
    evidence: u64,
    max_round: u32,
}

fn address(i: usize) -> Vec<u8> {
    // Addresses sort like the indices, so equal-power sets keep index order.
    vec![0xb0, i as u8]
}

impl Simulation {
    /// Builds the network of `seed`.
    pub fn new(seed: u64, config: SimConfig) -> Result<Self, SimError> {
        if config.validators == 0 || config.validators > MAX_VALIDATORS {
            return Err(SimError::Validators(config.validators));
        }
        if config.byzantine + config.crashed > config.validators {
            return Err(SimError::TooManyFaulty {
                faulty: config.byzantine + config.crashed,
                validators: config.validators,
            });
        }
        let scenario = Scenario::generate(seed, &config);
        let mut rng = Rng::new(seed ^ 0x5eed);
        let n = config.validators;
        let validators = (0..n)
            .map(|i| Validator::new(address(i), scenario.powers[i]))
            .collect();
        let genesis = ValidatorSet::genesis(validators).map_err(SimError::ValidatorSet)?;
        let keys = (0..n).map(|i| mix_all(&[seed, i as u64, 0x5157])).collect();
        let node_of = genesis
            .validators()
            .iter()
            .map(|v| usize::from(v.address[1]))
            .collect();
        let nodes = (0..n)
            .map(|i| Node {
                role: scenario.roles[i],
                up: true,
                epoch: 0,
                core: Consensus::new(sim_consensus_config(), Some(address(i))),
                wal: Vec::new(),
                last_sign: None,
                chain: Vec::new(),
                seen: BTreeMap::new(),
                next_height: Vec::new(),
                replaying: false,
                pending_value: None,
                progress_mark: (Height(0), Round(0), None),
            })
            .collect();
        let _ = rng.next_u64();
        Ok(Simulation {
            config,
            scenario,
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            items: Vec::new(),
            free: Vec::new(),
            nodes,
            keys,
            node_of,
            sets: vec![genesis],
            checker: Checker::new(),
            events: 0,
            evidence: 0,
            max_round: 0,
        })
    }

    /// The drawn world.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.config.trace {
            eprintln!("[{:>7} ms] {}", self.now, what());
        }
    }

    fn schedule(&mut self, at: u64, item: Item) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.items[slot] = Some(item);
                slot
            }
            None => {
                self.items.push(Some(item));
                self.items.len() - 1
            }
        };
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, slot)));
    }

    fn set_for(&mut self, height: Height) -> ValidatorSet {
        let index = (height.0 - START_HEIGHT.0) as usize;
        while self.sets.len() <= index {
            let next = self.sets[self.sets.len() - 1].next_height();
            self.sets.push(next);
        }
        self.sets[index].clone()
    }

    fn live_honest(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len())
            .filter(|i| self.scenario.is_honest(*i) && !self.scenario.crashes_for_good(*i))
    }

    // ---- signatures -------------------------------------------------------------------------

    fn proposal_digest(p: &Proposal) -> Vec<u64> {
        let mut w = vec![1, p.height.0, u64::from(p.round.0)];
        w.extend(value_words(Some(p.value)));
        w.push(p.pol_round.map_or(0, |r| u64::from(r.0) + 1));
        w.push(u64::from(p.proposer.0));
        w
    }

    fn vote_digest(v: &Vote) -> Vec<u64> {
        let kind = match v.kind {
            VoteKind::Prevote => 2,
            VoteKind::Precommit => 3,
        };
        let mut w = vec![kind, v.height.0, u64::from(v.round.0)];
        w.extend(value_words(v.value));
        w.push(u64::from(v.validator.0));
        w
    }

    fn sign_words(key: u64, words: &[u64]) -> Signature {
        let mut all = vec![key];
        all.extend_from_slice(words);
        Signature(mix_all(&all).to_le_bytes().to_vec())
    }

    fn verify(&self, signer: ValidatorIndex, words: &[u64], signature: &Signature) -> bool {
        match self.node_of.get(signer.as_usize()) {
            Some(node) => Self::sign_words(self.keys[*node], words) == *signature,
            None => false,
        }
    }

    fn sign_proposal(&self, node: usize, p: Proposal) -> SignedProposal {
        Signed::new(
            p,
            Self::sign_words(self.keys[node], &Self::proposal_digest(&p)),
        )
    }

    fn sign_vote(&self, node: usize, v: Vote) -> SignedVote {
        Signed::new(v, Self::sign_words(self.keys[node], &Self::vote_digest(&v)))
    }

    /// The privval: refuses to step back and to sign a different message at the same
    /// height/round/step; the same message again gets the same signature.
    fn privval(
        &mut self,
        node: usize,
        height: Height,
        round: Round,
        step: u8,
        value: Option<ValueId>,
        make: impl FnOnce(&Self) -> Signature,
    ) -> Option<Signature> {
        if let Some(last) = &self.nodes[node].last_sign {
            let here = (height, round, step);
            let there = (last.height, last.round, last.step);
            if here < there {
                return None;
            }
            if here == there {
                return (last.value == value).then(|| last.signature.clone());
            }
        }
        let signature = make(self);
        self.nodes[node].last_sign = Some(LastSign {
            height,
            round,
            step,
            value,
            signature: signature.clone(),
        });
        Some(signature)
    }

    // ---- network ----------------------------------------------------------------------------

    fn partitioned(&self, a: usize, b: usize) -> bool {
        self.scenario
            .partitions
            .iter()
            .any(|p| self.now >= p.start && self.now < p.heal_at && p.side[a] != p.side[b])
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if from == to || self.partitioned(from, to) {
            return;
        }
        let before_gst = self.now < self.scenario.gst;
        if before_gst && self.rng.chance(self.scenario.drop) {
            return;
        }
        let max_delay = if before_gst {
            self.scenario.max_delay_before_gst
        } else {
            self.scenario.delta
        };
        if before_gst && self.rng.chance(self.scenario.duplicate) {
            let at = self.now + self.rng.range(1, max_delay);
            self.schedule(
                at,
                Item::Deliver {
                    to,
                    msg: msg.clone(),
                },
            );
        }
        let at = self.now + self.rng.range(1, max_delay);
        self.schedule(at, Item::Deliver { to, msg });
    }

    fn broadcast(&mut self, from: usize, msg: &Msg) {
        for to in 0..self.nodes.len() {
            self.send(from, to, msg.clone());
        }
    }

    // ---- the node driver ------------------------------------------------------------------

    /// Hands an external event to node `i`: logged in its WAL first, then processed together
    /// with everything it causes locally (own messages loop back).
    fn input(&mut self, i: usize, event: Event) {
        let at_height = match &event {
            Event::Proposal { proposal, .. } => Some(proposal.message.height),
            Event::Vote(v) => Some(v.message.height),
            Event::ProposeValue { height, .. } => Some(*height),
            Event::Timeout(t) => Some(t.height),
            Event::Certificate(c) => Some(c.height),
            Event::NewHeight { .. } => None,
        };
        if at_height.is_some_and(|h| h != self.nodes[i].height()) {
            return;
        }
        let mut local = VecDeque::from([event]);
        while let Some(e) = local.pop_front() {
            // Write-ahead: every event the core sees is logged first, the node's own signed
            // messages included (as CometBFT does), so a replay never needs to sign again.
            if !self.nodes[i].replaying {
                self.nodes[i].wal.push(e.clone());
            }
            self.remember(i, &e);
            self.trace(|| format!("node {i} <- {}", describe_event(&e)));
            let actions = self.nodes[i].core.handle(e);
            for action in actions {
                self.trace(|| format!("node {i} -> {}", describe_action(&action)));
                self.perform(i, action, &mut local);
            }
        }
        if let Some(r) = self.nodes[i].core.round() {
            self.max_round = self.max_round.max(r.0);
        }
    }

    fn perform(&mut self, i: usize, action: Action, local: &mut VecDeque<Event>) {
        let epoch = self.nodes[i].epoch;
        match action {
            Action::GetValue { height, round } => {
                if self.nodes[i].replaying {
                    self.nodes[i].pending_value = Some((height, round));
                } else {
                    let at = self.now + self.rng.below(5);
                    self.schedule(
                        at,
                        Item::Value {
                            node: i,
                            epoch,
                            height,
                            round,
                        },
                    );
                }
            }
            Action::ScheduleTimeout { timeout, after } => {
                let at = self.now + after.as_millis() as u64;
                self.schedule(
                    at,
                    Item::Timer {
                        node: i,
                        epoch,
                        timeout,
                    },
                );
            }
            Action::Propose(p) => {
                if let Some(signed) = self.sign_own_proposal(i, p) {
                    local.push_back(Event::Proposal {
                        proposal: signed,
                        validity: Validity::Valid,
                    });
                }
            }
            Action::Vote(v) => {
                if let Some(signed) = self.sign_own_vote(i, v) {
                    local.push_back(Event::Vote(signed));
                }
            }
            Action::Decide(d) => {
                let honest = self.scenario.is_honest(i);
                self.trace(|| {
                    format!(
                        "node {i} decides {} = {:?} (round {})",
                        d.height, d.value, d.round
                    )
                });
                if honest {
                    self.checker
                        .on_decide(i, d.height, d.value, is_valid(d.value));
                }
                let next = d.height.next();
                self.nodes[i].chain.push(DecidedBlock {
                    height: d.height,
                    proposal: d.proposal,
                    precommits: d.precommits,
                });
                let validators = self.set_for(next);
                let start = Event::NewHeight {
                    height: next,
                    validators,
                };
                let node = &mut self.nodes[i];
                node.wal.clear();
                node.seen.clear();
                // Whatever was still queued belongs to the decided height.
                local.clear();
                local.push_back(start);
                // Messages that arrived early for the new height are inputs now.
                let early = std::mem::take(&mut self.nodes[i].next_height);
                for msg in early {
                    if let Some(e) = self.event_of(&msg) {
                        local.push_back(e);
                    }
                }
                let lowest = self
                    .live_honest()
                    .map(|j| self.nodes[j].height())
                    .min()
                    .unwrap_or(next);
                self.checker.forget_signatures_below(lowest);
            }
            Action::Evidence(_) => {
                if self.scenario.is_honest(i) {
                    self.evidence += 1;
                }
            }
        }
    }

    /// Keeps what the node saw at its height for relaying (CometBFT gossips every vote a peer
    /// lacks, not only its own: a locked validator's POL may rest on a vote of a validator that
    /// has since crashed). Bounded: rounds up to two above the node's, two messages per
    /// (round, kind, signer).
    fn remember(&mut self, i: usize, event: &Event) {
        let node = &mut self.nodes[i];
        let Some(current) = node.core.round() else {
            return;
        };
        let (key, msg) = match event {
            Event::Vote(v) => {
                let kind = match v.message.kind {
                    VoteKind::Prevote => 2,
                    VoteKind::Precommit => 3,
                };
                (
                    (v.message.round, kind, v.message.validator.0),
                    Msg::Vote(v.clone()),
                )
            }
            Event::Proposal { proposal, .. } => (
                (proposal.message.round, 1, proposal.message.proposer.0),
                Msg::Proposal(proposal.clone()),
            ),
            _ => return,
        };
        if key.0 .0 > current.0.saturating_add(2) {
            return;
        }
        let slot = node.seen.entry(key).or_default();
        let duplicate = slot.iter().any(|m| match (m, &msg) {
            (Msg::Vote(a), Msg::Vote(b)) => a == b,
            (Msg::Proposal(a), Msg::Proposal(b)) => a == b,
            _ => false,
        });
        if !duplicate && slot.len() < 2 {
            slot.push(msg);
        }
    }

    fn sign_own_proposal(&mut self, i: usize, p: Proposal) -> Option<SignedProposal> {
        match self.nodes[i].role {
            Role::Honest => {
                self.checker
                    .on_sign(i, p.height, p.round, SignStep::Proposal, Some(p.value));
                let digest = Self::proposal_digest(&p);
                let key = self.keys[i];
                let signature = self.privval(i, p.height, p.round, 1, Some(p.value), |_| {
                    Self::sign_words(key, &digest)
                })?;
                let signed = Signed::new(p, signature);
                self.broadcast(i, &Msg::Proposal(signed.clone()));
                Some(signed)
            }
            Role::Byzantine(b) => {
                let signed = self.sign_proposal(i, p);
                self.lie_proposal(i, b, &signed);
                Some(signed)
            }
        }
    }

    fn sign_own_vote(&mut self, i: usize, v: Vote) -> Option<SignedVote> {
        match self.nodes[i].role {
            Role::Honest => {
                self.checker
                    .on_sign(i, v.height, v.round, SignStep::Vote(v.kind), v.value);
                let step = match v.kind {
                    VoteKind::Prevote => 2,
                    VoteKind::Precommit => 3,
                };
                let digest = Self::vote_digest(&v);
                let key = self.keys[i];
                let signature = self.privval(i, v.height, v.round, step, v.value, |_| {
                    Self::sign_words(key, &digest)
                })?;
                let signed = Signed::new(v, signature);
                self.broadcast(i, &Msg::Vote(signed.clone()));
                Some(signed)
            }
            Role::Byzantine(b) => {
                let signed = self.sign_vote(i, v);
                self.lie_vote(i, b, &signed);
                Some(signed)
            }
        }
    }

    /// The byzantine split: `left` to one side of `scenario.split`, `right` to the other.
    fn send_by_side(&mut self, from: usize, left: Msg, right: Msg) {
        for to in 0..self.nodes.len() {
            let msg = if self.scenario.split[to] {
                left.clone()
            } else {
                right.clone()
            };
            self.send(from, to, msg);
        }
    }

    fn split_values(&self, height: Height, round: Round) -> (ValueId, ValueId) {
        let base = mix_all(&[self.seed, height.0, u64::from(round.0), 0x5b]);
        (value_from(base, true), value_from(base ^ 0xffff, true))
    }

    fn random_value(&mut self, valid: bool) -> ValueId {
        let w = self.rng.next_u64();
        value_from(w, valid)
    }

    fn lie_proposal(&mut self, i: usize, behaviour: Behaviour, honest: &SignedProposal) {
        let p = honest.message;
        match behaviour {
            Behaviour::Silent => {}
            Behaviour::Equivocator => {
                let other = self.random_value(true);
                let alt = self.sign_proposal(
                    i,
                    Proposal {
                        value: other,
                        pol_round: None,
                        ..p
                    },
                );
                self.send_by_side(i, Msg::Proposal(honest.clone()), Msg::Proposal(alt));
            }
            Behaviour::SplitBrain => {
                let (left, right) = self.split_values(p.height, p.round);
                let l = self.sign_proposal(
                    i,
                    Proposal {
                        value: left,
                        pol_round: None,
                        ..p
                    },
                );
                let r = self.sign_proposal(
                    i,
                    Proposal {
                        value: right,
                        pol_round: None,
                        ..p
                    },
                );
                self.send_by_side(i, Msg::Proposal(l), Msg::Proposal(r));
            }
            Behaviour::RandomVoter | Behaviour::DoubleVoter => {
                let valid = self.rng.chance(0.5);
                let value = if valid {
                    p.value
                } else {
                    self.random_value(false)
                };
                let msg = self.sign_proposal(i, Proposal { value, ..p });
                self.broadcast(i, &Msg::Proposal(msg));
            }
            Behaviour::Malformed => {
                self.broadcast(i, &Msg::Proposal(honest.clone()));
                let bad_pol = self.sign_proposal(
                    i,
                    Proposal {
                        pol_round: Some(p.round),
                        ..p
                    },
                );
                let invalid = self.random_value(false);
                let bad_value = self.sign_proposal(
                    i,
                    Proposal {
                        value: invalid,
                        ..p
                    },
                );
                let far = self.sign_proposal(
                    i,
                    Proposal {
                        round: Round(p.round.0.saturating_add(10_000)),
                        ..p
                    },
                );
                for m in [bad_pol, bad_value, far] {
                    self.broadcast(i, &Msg::Proposal(m));
                }
            }
        }
    }

    fn lie_vote(&mut self, i: usize, behaviour: Behaviour, honest: &SignedVote) {
        let n = self.nodes.len();
        let v = honest.message;
        match behaviour {
            Behaviour::Silent => {}
            Behaviour::Equivocator => {
                let other = if v.value.is_some() && self.rng.chance(0.5) {
                    None
                } else {
                    Some(self.random_value(true))
                };
                let alt = self.sign_vote(i, Vote { value: other, ..v });
                self.send_by_side(i, Msg::Vote(honest.clone()), Msg::Vote(alt));
            }
            Behaviour::DoubleVoter => {
                let other = match v.value {
                    Some(_) => None,
                    None => Some(self.random_value(true)),
                };
                let alt = self.sign_vote(i, Vote { value: other, ..v });
                for to in 0..n {
                    let (a, b) = if self.rng.chance(0.5) {
                        (honest.clone(), alt.clone())
                    } else {
                        (alt.clone(), honest.clone())
                    };
                    self.send(i, to, Msg::Vote(a));
                    self.send(i, to, Msg::Vote(b));
                }
            }
            Behaviour::RandomVoter => {
                let value = match self.rng.below(3) {
                    0 => None,
                    1 => Some(self.random_value(true)),
                    _ => Some(self.random_value(false)),
                };
                let msg = self.sign_vote(i, Vote { value, ..v });
                self.broadcast(i, &Msg::Vote(msg));
            }
            Behaviour::SplitBrain => {
                let (left, right) = self.split_values(v.height, v.round);
                let l = self.sign_vote(
                    i,
                    Vote {
                        value: Some(left),
                        ..v
                    },
                );
                let r = self.sign_vote(
                    i,
                    Vote {
                        value: Some(right),
                        ..v
                    },
                );
                self.send_by_side(i, Msg::Vote(l), Msg::Vote(r));
            }
            Behaviour::Malformed => {
                self.broadcast(i, &Msg::Vote(honest.clone()));
                let victim = ValidatorIndex(((v.validator.0 as usize + 1) % n) as u32);
                // Forged: claims another validator but carries our signature.
                let forged = self.sign_vote(
                    i,
                    Vote {
                        validator: victim,
                        ..v
                    },
                );
                // Not a validator at all.
                let outsider = self.sign_vote(
                    i,
                    Vote {
                        validator: ValidatorIndex(n as u32 + 7),
                        ..v
                    },
                );
                let other_height = self.sign_vote(
                    i,
                    Vote {
                        height: Height(v.height.0 + 3),
                        ..v
                    },
                );
                let old_height = self.sign_vote(
                    i,
                    Vote {
                        height: Height(v.height.0.saturating_sub(1)),
                        ..v
                    },
                );
                let far_round = self.rng.range(3, 100_000) as u32;
                let far = self.sign_vote(
                    i,
                    Vote {
                        round: Round(v.round.0.saturating_add(far_round)),
                        ..v
                    },
                );
                let mut corrupt = honest.clone();
                corrupt.signature = Signature(vec![0xde, 0xad]);
                for m in [forged, outsider, other_height, old_height, far, corrupt] {
                    self.broadcast(i, &Msg::Vote(m));
                }
            }
        }
    }

    /// The event a verified message becomes, or `None` if its signature does not verify.
    fn event_of(&self, msg: &Msg) -> Option<Event> {
        match msg {
            Msg::Proposal(p) => self
                .verify(
                    p.message.proposer,
                    &Self::proposal_digest(&p.message),
                    &p.signature,
                )
                .then(|| Event::Proposal {
                    proposal: p.clone(),
                    validity: if is_valid(p.message.value) {
                        Validity::Valid
                    } else {
                        Validity::Invalid
                    },
                }),
            Msg::Vote(v) => self
                .verify(
                    v.message.validator,
                    &Self::vote_digest(&v.message),
                    &v.signature,
                )
                .then(|| Event::Vote(v.clone())),
            Msg::Certificate(c) => c
                .votes
                .iter()
                .all(|v| {
                    self.verify(
                        v.message.validator,
                        &Self::vote_digest(&v.message),
                        &v.signature,
                    )
                })
                .then(|| Event::Certificate((**c).clone())),
            _ => None,
        }
    }

    fn receive(&mut self, to: usize, msg: Msg) {
        if !self.nodes[to].up {
            return;
        }
        let height = self.nodes[to].height();
        match &msg {
            Msg::Proposal(_) | Msg::Vote(_) => {
                let Some(event) = self.event_of(&msg) else {
                    return;
                };
                let msg_height = msg.height().unwrap_or(height);
                if msg_height == height.next() {
                    if self.nodes[to].next_height.len() < NEXT_HEIGHT_BUFFER {
                        self.nodes[to].next_height.push(msg);
                    }
                    return;
                }
                self.input(to, event);
            }
            Msg::Status {
                from,
                height,
                round,
            } => {
                self.trace(|| format!("node {to} <- Status h{height} r{round} from node {from}"));
                self.answer_status(to, *from, *height, *round);
            }
            Msg::Decided(block) => {
                self.trace(|| format!("node {to} <- Decided h{}", block.height));
                if block.height != height {
                    return;
                }
                let value = block.proposal.message.value;
                let certificate = Certificate {
                    kind: VoteKind::Precommit,
                    height: block.height,
                    round: block.proposal.message.round,
                    value: Some(value),
                    votes: block
                        .precommits
                        .iter()
                        .filter(|v| v.message.value == Some(value))
                        .cloned()
                        .collect(),
                };
                if let Some(e) = self.event_of(&Msg::Proposal(block.proposal.clone())) {
                    self.input(to, e);
                }
                if let Some(e) = self.event_of(&Msg::Certificate(Box::new(certificate))) {
                    self.input(to, e);
                }
            }
            Msg::Certificate(c) => {
                if c.height != height {
                    return;
                }
                if let Some(e) = self.event_of(&msg) {
                    self.input(to, e);
                }
            }
        }
    }

    /// Pull gossip: a peer that made no progress says where it is; send it what it needs.
    fn answer_status(&mut self, me: usize, from: usize, their_height: Height, their_round: Round) {
        // Byzantine validators do not help.
        if !self.scenario.is_honest(me) {
            return;
        }
        let height = self.nodes[me].height();
        if their_height < height {
            let index = (their_height.0.saturating_sub(START_HEIGHT.0)) as usize;
            if let Some(block) = self.nodes[me].chain.get(index).cloned() {
                self.send(me, from, Msg::Decided(Box::new(block)));
            }
            return;
        }
        if their_height != height {
            return;
        }
        let floor = Round(their_round.0.saturating_sub(1));
        let msgs: Vec<Msg> = self.nodes[me]
            .seen
            .iter()
            // Everything from the peer's round on, and prevotes of every round: a later
            // proposal may cite any round as its POL.
            .filter(|((round, kind, _), _)| *round >= floor || *kind == 2)
            .flat_map(|(_, msgs)| msgs.iter().cloned())
            .collect();
        let certificates: Vec<Certificate> = self.nodes[me]
            .core
            .certificates()
            .into_iter()
            .filter(|c| c.round >= floor || c.kind == VoteKind::Prevote)
            .collect();
        for m in msgs {
            self.send(me, from, m);
        }
        for c in certificates {
            self.send(me, from, Msg::Certificate(Box::new(c)));
        }
    }

    fn gossip_tick(&mut self, i: usize) {
        let next = self.now + GOSSIP_INTERVAL_MS + self.rng.below(20);
        self.schedule(next, Item::Gossip { node: i });
        let node = &self.nodes[i];
        if !node.up || !self.scenario.is_honest(i) {
            return;
        }
        let mark = (
            node.height(),
            node.core.round().unwrap_or_default(),
            node.core.step(),
        );
        let stuck = mark == node.progress_mark;
        self.nodes[i].progress_mark = mark;
        if stuck {
            self.ask_peers(i);
        }
    }

    fn ask_peers(&mut self, i: usize) {
        let height = self.nodes[i].height();
        let round = self.nodes[i].core.round().unwrap_or_default();
        for to in 0..self.nodes.len() {
            if to != i {
                self.send(
                    i,
                    to,
                    Msg::Status {
                        from: i,
                        height,
                        round,
                    },
                );
            }
        }
    }

    fn crash(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        self.trace(|| format!("node {i} crashes at height {}", self.nodes[i].height()));
        let node = &mut self.nodes[i];
        node.up = false;
        node.epoch += 1;
        node.core = Consensus::new(sim_consensus_config(), Some(address(i)));
        node.seen.clear();
        node.next_height.clear();
        node.pending_value = None;
    }

    fn restart(&mut self, i: usize) {
        if self.nodes[i].up {
            return;
        }
        self.trace(|| {
            format!(
                "node {i} restarts at height {} replaying {} WAL entries",
                self.nodes[i].height(),
                self.nodes[i].wal.len()
            )
        });
        self.nodes[i].up = true;
        self.nodes[i].replaying = true;
        let wal = self.nodes[i].wal.clone();
        for event in wal {
            if let Event::ProposeValue { height, round, .. } = &event {
                if self.nodes[i].pending_value == Some((*height, *round)) {
                    self.nodes[i].pending_value = None;
                }
            }
            self.input(i, event);
        }
        self.nodes[i].replaying = false;
        if let Some((height, round)) = self.nodes[i].pending_value.take() {
            let epoch = self.nodes[i].epoch;
            self.schedule(
                self.now,
                Item::Value {
                    node: i,
                    epoch,
                    height,
                    round,
                },
            );
        }
        self.ask_peers(i);
    }

    fn boot(&mut self, i: usize) {
        let validators = self.set_for(START_HEIGHT);
        self.input(
            i,
            Event::NewHeight {
                height: START_HEIGHT,
                validators,
            },
        );
    }

    fn done(&self) -> bool {
        let target = self.config.target_height;
        self.live_honest()
            .all(|i| self.nodes[i].chain.len() as u64 >= target)
            && self.now >= self.scenario.gst
    }

    /// Runs to the end: every live honest validator at the target height, or the deadline.
    pub fn run(mut self) -> Outcome {
        self.trace(|| format!("scenario: {:?}", self.scenario));
        for i in 0..self.nodes.len() {
            self.boot(i);
            let at = self.rng.below(GOSSIP_INTERVAL_MS);
            self.schedule(at, Item::Gossip { node: i });
        }
        for c in self.scenario.crashes.clone() {
            self.schedule(c.at, Item::Crash { node: c.node });
            if let Some(r) = c.restart_at {
                self.schedule(r, Item::Restart { node: c.node });
            }
        }
        let deadline = self.scenario.gst + LIVENESS_WINDOW_MS;
        let mut budget_exceeded = false;
        while let Some(Reverse((at, _, slot))) = self.queue.pop() {
            if at > deadline || self.done() {
                self.trace(|| {
                    format!(
                        "run ends: next item at {at} ms, deadline {deadline} ms, done {}",
                        self.done()
                    )
                });
                break;
            }
            self.events += 1;
            if self.events > EVENT_BUDGET {
                budget_exceeded = true;
                break;
            }
            self.now = at;
            let Some(item) = self.items[slot].take() else {
                continue;
            };
            self.free.push(slot);
            match item {
                Item::Deliver { to, msg } => self.receive(to, msg),
                Item::Timer {
                    node,
                    epoch,
                    timeout,
                } => {
                    if self.nodes[node].up && self.nodes[node].epoch == epoch {
                        self.input(node, Event::Timeout(timeout));
                    }
                }
                Item::Value {
                    node,
                    epoch,
                    height,
                    round,
                } => {
                    if self.nodes[node].up && self.nodes[node].epoch == epoch {
                        let value = self.random_value(true);
                        self.input(
                            node,
                            Event::ProposeValue {
                                height,
                                round,
                                value,
                            },
                        );
                    }
                }
                Item::Gossip { node } => self.gossip_tick(node),
                Item::Crash { node } => self.crash(node),
                Item::Restart { node } => self.restart(node),
            }
        }
        if budget_exceeded {
            self.checker.report(Violation::EventBudgetExceeded {
                events: self.events,
            });
        } else if self.config.demands_progress() {
            let target = self.config.target_height;
            for i in self.live_honest().collect::<Vec<_>>() {
                let reached = self.nodes[i].chain.len() as u64;
                if reached < target {
                    self.checker.report(Violation::NoProgress {
                        node: i,
                        reached,
                        target,
                    });
                }
            }
        }
        let heights_decided = self
            .live_honest()
            .map(|i| self.nodes[i].chain.len() as u64)
            .min()
            .unwrap_or(0);
        Outcome {
            seed: self.seed,
            heights_decided,
            max_round: self.max_round,
            sim_ms: self.now,
            events: self.events,
            evidence: self.evidence,
            violations: self.checker.into_violations(),
        }
    }
}

fn describe_event(e: &Event) -> String {
    match e {
        Event::NewHeight { height, .. } => format!("NewHeight {height}"),
        Event::Proposal { proposal, validity } => {
            let p = proposal.message;
            format!(
                "Proposal h{} r{} {:?} pol {:?} from {} ({validity:?})",
                p.height, p.round, p.value, p.pol_round, p.proposer.0
            )
        }
        Event::Vote(v) => {
            let v = v.message;
            format!(
                "{:?} h{} r{} {:?} from {}",
                v.kind, v.height, v.round, v.value, v.validator.0
            )
        }
        Event::ProposeValue {
            height,
            round,
            value,
        } => format!("Value h{height} r{round} {value:?}"),
        Event::Timeout(t) => format!("Timeout {:?} h{} r{}", t.kind, t.height, t.round),
        Event::Certificate(c) => format!(
            "Certificate {:?} h{} r{} {:?} ({} votes)",
            c.kind,
            c.height,
            c.round,
            c.value,
            c.votes.len()
        ),
    }
}

fn describe_action(a: &Action) -> String {
    match a {
        Action::Decide(d) => format!("Decide h{} r{} {:?}", d.height, d.round, d.value),
        Action::Evidence(e) => format!("Evidence against {}", e.first.message.validator.0),
        other => format!("{other:?}"),
    }
}

/// Largest simulated network (addresses are one byte).
pub const MAX_VALIDATORS: usize = 200;

/// A configuration the simulator cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Validator count outside `1..=MAX_VALIDATORS`.
    #[error("validators must be between 1 and {MAX_VALIDATORS}, got {0}")]
    Validators(usize),
    /// More faulty validators than validators.
    #[error("{faulty} faulty validators do not fit in {validators}")]
    TooManyFaulty {
        /// Byzantine plus crashed.
        faulty: usize,
        /// All validators.
        validators: usize,
    },
    /// The generated validator set was rejected.
    #[error("validator set: {0}")]
    ValidatorSet(bulwark_consensus::ValidatorSetError),
}

/// Runs one seed.
pub fn run(seed: u64, config: &SimConfig) -> Result<Outcome, SimError> {
    Ok(Simulation::new(seed, config.clone())?.run())
}

/// The command that replays `seed` with a trace.
pub fn replay_command(seed: u64, config: &SimConfig) -> String {
    format!(
        "cargo xtask sim --seed {seed} --validators {} --byzantine {} --crashed {} --heights {}{} --trace",
        config.validators,
        config.byzantine,
        config.crashed,
        config.target_height,
        config
            .behaviour
            .map(|b| format!(" --behaviour {}", behaviour_name(b)))
            .unwrap_or_default()
    )
}

/// The CLI name of a behaviour.
pub fn behaviour_name(b: Behaviour) -> &'static str {
    match b {
        Behaviour::Silent => "silent",
        Behaviour::Equivocator => "equivocator",
        Behaviour::DoubleVoter => "double-voter",
        Behaviour::RandomVoter => "random-voter",
        Behaviour::Malformed => "malformed",
        Behaviour::SplitBrain => "split-brain",
    }
}

/// Parses a behaviour name.
pub fn parse_behaviour(name: &str) -> Option<Behaviour> {
    scenario::BEHAVIOURS
        .iter()
        .copied()
        .find(|b| behaviour_name(*b) == name)
}
