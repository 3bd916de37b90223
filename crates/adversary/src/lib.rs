//! Byzantine validators at the wire level. Each runs a real engine (so its timing and its view
//! of the chain are a validator's) behind an [`Adversary`] that rewrites, redirects, withholds
//! and adds the messages that engine sends, signing what it likes with its own key. Every
//! behaviour is one a single validator within the fault bound can carry out.

use bulwark_node::engine::Engine;
use bulwark_node::proposal::block_to_parts;
use bulwark_sim::rng::Rng;
use bulwark_types::signing::{sign, sign_proposal, sign_vote};
use bulwark_types::tendermint::block::{self, Block};
use bulwark_types::tendermint::evidence::{DuplicateVoteEvidence, Evidence};
use bulwark_types::tendermint::{chain, proposal, vote, Time};
use bulwark_types::tendermint_proto::v0_38::types as pb;
use bulwark_wire::{self as wire, Payload};
use ed25519_consensus::SigningKey;
use std::collections::{BTreeMap, VecDeque};

/// What a byzantine validator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Behaviour {
    /// Sends nothing.
    Silent,
    /// Prevotes for random block ids.
    RandomPrevote,
    /// Precommits for random block ids (review C1).
    RandomPrecommit,
    /// Every vote to half the peers, a conflicting one to the other half (evidence, H3).
    DoubleVote,
    /// As proposer, dates its block ten years ahead (C2).
    FutureTime,
    /// As proposer, dates its block one nanosecond after the last one (C2).
    MinimalTime,
    /// As proposer, dates its block at the latest time there is, 9999-12-31 (C2).
    MaxTime,
    /// Proposals for round 2³¹−1, with garbage and with valid signatures (C3).
    HugeRound,
    /// Right after another validator's proposal, many signed proposals of its own for future
    /// rounds with random part-set headers (H1).
    ProposalFlood,
    /// As proposer, sends its block's parts to half the peers only.
    WithholdParts,
    /// As proposer, a block above the consensus `block.max_bytes` (H2).
    OversizedBlock,
    /// Certificates of duplicated, mixed-round, sub-quorum and outsider votes (M3).
    ForgedCertificates,
    /// Re-sends old votes it saw, of earlier heights and rounds.
    ReplayOldVotes,
    /// Status messages with fake heights, many of them (L4, M2).
    StatusFlood,
    /// Answers catching-up peers with decided blocks whose commit or content is forged.
    ForgedDecidedBlocks,
    /// As proposer, a decoy proposal (another part-set header, no parts) to half the peers
    /// before its real one (L7).
    EquivocatingProposer,
    /// As proposer, always a fresh block without a POL, whatever its lock.
    FreshProposal,
    /// As proposer, a fresh block claiming a POL in the round before, which has none.
    FakePol,
    /// On every proposal it sees, a prevote for the next round (a round skip needs f + 1
    /// validators; this is one).
    FutureRoundVotes,
    /// Withholds its precommits (so polkas need not end in decisions) and, as proposer,
    /// re-proposes the value of the oldest polka it saw at this height with that polka's round
    /// as POL: genuine, but older than what others may be locked on since.
    StalePol,
    /// Proposals for round 2²⁴: beyond the lookahead, and costly only to a node that steps
    /// the proposer that far.
    LargeRound,
    /// As proposer, a block carrying forged evidence against another validator (votes with
    /// random signatures), and the same evidence to every peer (H3).
    ForgedEvidence,
    /// Holds a catching-up peer's one request for decided blocks open: claims to be ahead
    /// and sends messages of later heights (so it is asked), then trickles an answer's
    /// blocks and never ends it with its `Status`.
    TrickleSync,
    /// A different one of the above at every height.
    Mixed,
}

/// Every behaviour, for random choice.
pub const BEHAVIOURS: [Behaviour; 24] = [
    Behaviour::Silent,
    Behaviour::RandomPrevote,
    Behaviour::RandomPrecommit,
    Behaviour::DoubleVote,
    Behaviour::FutureTime,
    Behaviour::MinimalTime,
    Behaviour::MaxTime,
    Behaviour::HugeRound,
    Behaviour::ProposalFlood,
    Behaviour::WithholdParts,
    Behaviour::OversizedBlock,
    Behaviour::ForgedCertificates,
    Behaviour::ReplayOldVotes,
    Behaviour::StatusFlood,
    Behaviour::ForgedDecidedBlocks,
    Behaviour::EquivocatingProposer,
    Behaviour::FreshProposal,
    Behaviour::FakePol,
    Behaviour::FutureRoundVotes,
    Behaviour::StalePol,
    Behaviour::LargeRound,
    Behaviour::ForgedEvidence,
    Behaviour::TrickleSync,
    Behaviour::Mixed,
];

/// A behaviour's name on the command line.
pub fn behaviour_name(b: Behaviour) -> &'static str {
    match b {
        Behaviour::Silent => "silent",
        Behaviour::RandomPrevote => "random-prevote",
        Behaviour::RandomPrecommit => "random-precommit",
        Behaviour::DoubleVote => "double-vote",
        Behaviour::FutureTime => "future-time",
        Behaviour::MinimalTime => "minimal-time",
        Behaviour::MaxTime => "max-time",
        Behaviour::HugeRound => "huge-round",
        Behaviour::ProposalFlood => "proposal-flood",
        Behaviour::WithholdParts => "withhold-parts",
        Behaviour::OversizedBlock => "oversized-block",
        Behaviour::ForgedCertificates => "forged-certificates",
        Behaviour::ReplayOldVotes => "replay-old-votes",
        Behaviour::StatusFlood => "status-flood",
        Behaviour::ForgedDecidedBlocks => "forged-decided-blocks",
        Behaviour::EquivocatingProposer => "equivocating-proposer",
        Behaviour::FreshProposal => "fresh-proposal",
        Behaviour::FakePol => "fake-pol",
        Behaviour::FutureRoundVotes => "future-round-votes",
        Behaviour::StalePol => "stale-pol",
        Behaviour::LargeRound => "large-round",
        Behaviour::ForgedEvidence => "forged-evidence",
        Behaviour::TrickleSync => "trickle-sync",
        Behaviour::Mixed => "mixed",
    }
}

/// The behaviour named `name`.
pub fn parse_behaviour(name: &str) -> Option<Behaviour> {
    BEHAVIOURS
        .iter()
        .copied()
        .find(|b| behaviour_name(*b) == name)
}

/// Where an adversary's message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// Every other validator.
    All,
    /// These validators.
    Some(Vec<usize>),
}

/// Prevotes for one value in one round: their power, the votes, the validators that cast them.
type Polka = (u64, Vec<pb::Vote>, Vec<i32>);

/// Old votes kept for replays and forged certificates.
const KEPT_VOTES: usize = 512;

/// A byzantine validator's wire-level behaviour around its own engine.
pub struct Adversary {
    behaviour: Behaviour,
    me: usize,
    n: usize,
    key: SigningKey,
    chain_id: chain::Id,
    rng: Rng,
    /// Votes received, newest last.
    votes: VecDeque<pb::Vote>,
    /// Block ids its engine proposed, replaced by the ones it sent instead.
    replaced: BTreeMap<Vec<u8>, block::Id>,
    /// (height, round) of the last proposal by another validator it reacted to.
    flooded: Option<(i64, i32)>,
    /// Peers that said they are behind, with their height.
    behind: BTreeMap<usize, u64>,
    /// Height whose behaviour `Mixed` is playing, and the behaviour.
    mixed: (u64, Behaviour),
    /// Proposals seen: (height, round) → block id.
    proposals: BTreeMap<(i64, i32), pb::BlockId>,
    /// Parts seen: (height, round) → parts.
    parts: BTreeMap<(i64, u32), Vec<pb::Part>>,
    /// (height, round) whose random precommit went out with the prevote.
    early_precommits: std::collections::BTreeSet<(i64, i32)>,
    /// The first height whose precommits for a block carry a vote extension.
    extensions_from: Option<u64>,
}

impl Adversary {
    /// The adversary of validator `me` (of `n`), signing with `key`.
    pub fn new(
        behaviour: Behaviour,
        me: usize,
        n: usize,
        key: SigningKey,
        chain_id: chain::Id,
        seed: u64,
    ) -> Adversary {
        Adversary {
            behaviour,
            me,
            n,
            key,
            chain_id,
            rng: Rng::new(seed),
            votes: VecDeque::new(),
            replaced: BTreeMap::new(),
            flooded: None,
            behind: BTreeMap::new(),
            mixed: (0, Behaviour::Silent),
            proposals: BTreeMap::new(),
            parts: BTreeMap::new(),
            early_precommits: std::collections::BTreeSet::new(),
            extensions_from: None,
        }
    }

    /// Vote extensions from `height` (the chain's `vote_extensions_enable_height`): the
    /// precommits for a block it signs carry a signed extension from there on, as an honest
    /// validator's do, so the others count them (and see them conflict).
    pub fn extending_from(mut self, height: Option<u64>) -> Adversary {
        self.extensions_from = height;
        self
    }

    /// The behaviour it plays at the engine's current height.
    fn now_playing(&mut self, engine: &Engine) -> Behaviour {
        if self.behaviour != Behaviour::Mixed {
            return self.behaviour;
        }
        let h = engine.state().next_height();
        if self.mixed.0 != h {
            let pick = BEHAVIOURS[self.rng.below(BEHAVIOURS.len() as u64 - 1) as usize];
            self.mixed = (h, pick);
        }
        self.mixed.1
    }

    fn halves(&mut self) -> (Vec<usize>, Vec<usize>) {
        let mut others: Vec<usize> = (0..self.n).filter(|i| *i != self.me).collect();
        self.rng.shuffle(&mut others);
        let cut = others.len() / 2;
        let second = others.split_off(cut);
        (others, second)
    }

    fn random_hash(&mut self) -> Vec<u8> {
        (0..4)
            .flat_map(|_| self.rng.next_u64().to_le_bytes())
            .collect()
    }

    fn random_block_id(&mut self) -> pb::BlockId {
        pb::BlockId {
            hash: self.random_hash(),
            part_set_header: Some(pb::PartSetHeader {
                total: self.rng.range(1, 6) as u32,
                hash: self.random_hash(),
            }),
        }
    }

    /// Evidence that another validator precommitted two blocks at the last height, in the
    /// canonical form an honest node makes, except that both signatures are random.
    fn forged_evidence(&mut self, engine: &Engine) -> Option<Evidence> {
        let state = engine.state();
        let height = state.last_block_height;
        if height < state.initial_height {
            return None;
        }
        let bytes = engine.blocks().state(height).ok()??;
        let at = bulwark_node::chain::ChainState::decode(&bytes).ok()?;
        let set = &at.last_validator_infos;
        if set.validators().len() < 2 {
            return None;
        }
        let own = set
            .validators()
            .iter()
            .position(|v| v.address == engine.address())?;
        let index = (own + 1 + self.rng.below(set.validators().len() as u64 - 1) as usize)
            % set.validators().len();
        let info = set.validators().get(index)?;
        let forged_vote = |rng: &mut Self| -> Option<vote::Vote> {
            let id = block::Id::try_from(rng.random_block_id()).ok()?;
            let mut signature = [0u8; 64];
            for chunk in signature.chunks_mut(8) {
                chunk.copy_from_slice(&rng.rng.next_u64().to_be_bytes());
            }
            Some(vote::Vote {
                vote_type: vote::Type::Precommit,
                height: block::Height::try_from(height).ok()?,
                round: block::Round::default(),
                block_id: Some(id),
                timestamp: Some(at.last_block_time),
                validator_address: info.address,
                validator_index: vote::ValidatorIndex::try_from(index as u32).ok()?,
                signature: bulwark_types::tendermint::Signature::new(signature).ok()?,
                extension: vec![],
                extension_signature: None,
            })
        };
        let (a, b) = (forged_vote(self)?, forged_vote(self)?);
        let (a, b) = if bulwark_evidence::block_id_key(a.block_id.as_ref())
            < bulwark_evidence::block_id_key(b.block_id.as_ref())
        {
            (a, b)
        } else {
            (b, a)
        };
        let mut e = DuplicateVoteEvidence::new(a, b).ok()?;
        e.validator_power = info.power;
        e.total_voting_power = set.total_voting_power();
        e.timestamp = at.last_block_time;
        Some(Evidence::DuplicateVote(Box::new(e)))
    }

    /// Re-signs a raw vote after `change` edited it.
    fn resign_vote(&self, raw: &pb::Vote, change: impl FnOnce(&mut pb::Vote)) -> Option<pb::Vote> {
        let mut edited = raw.clone();
        change(&mut edited);
        let mut v = vote::Vote::try_from(edited).ok()?;
        v.signature = None;
        sign_vote(&self.key, &mut v, &self.chain_id);
        let extends = self
            .extensions_from
            .is_some_and(|from| from <= v.height.value())
            && bulwark_types::signing::is_non_nil_precommit(&v);
        if extends {
            bulwark_types::signing::sign_vote_extension(&self.key, &mut v, &self.chain_id);
        } else {
            v.extension.clear();
            v.extension_signature = None;
        }
        // A signature that leaves, like the engine's own: chaos runs count them.
        bulwark_node::engine::log_signed_vote(&v);
        Some(v.into())
    }

    /// A signed proposal for `height`/`round` of `block_id`.
    fn signed_proposal(
        &self,
        height: i64,
        round: i32,
        block_id: pb::BlockId,
    ) -> Option<pb::Proposal> {
        let raw = pb::Proposal {
            r#type: pb::SignedMsgType::Proposal as i32,
            height,
            round,
            pol_round: -1,
            block_id: Some(block_id),
            timestamp: Some(Time::unix_epoch().into()),
            signature: vec![],
        };
        let mut p = proposal::Proposal::try_from(raw).ok()?;
        p.signature = None;
        sign_proposal(&self.key, &mut p, &self.chain_id);
        Some(p.into())
    }

    /// Its engine's own block for a proposal, rebuilt by `rebuild` (its txs and time) and
    /// proposed in place of the original: the new proposal and its parts.
    fn replace_block(
        &mut self,
        engine: &Engine,
        raw: &pb::Proposal,
        rebuild: impl FnOnce(&Block) -> (Vec<Vec<u8>>, Time),
    ) -> Option<Vec<(Dest, Payload)>> {
        self.replace_block_with_evidence(engine, raw, rebuild, vec![])
    }

    fn replace_block_with_evidence(
        &mut self,
        engine: &Engine,
        raw: &pb::Proposal,
        rebuild: impl FnOnce(&Block) -> (Vec<Vec<u8>>, Time),
        evidence: Vec<Evidence>,
    ) -> Option<Vec<(Dest, Payload)>> {
        let round = u32::try_from(raw.round).ok()?;
        let original = engine.own_block(round)?.clone();
        let (txs, time) = rebuild(&original);
        let (block, id, _) = engine
            .state()
            .make_block_with_evidence(
                txs,
                evidence,
                original.last_commit.clone(),
                original.header.proposer_address,
                time,
            )
            .ok()?;
        let original_id = raw.block_id.clone()?;
        self.replaced.insert(original_id.hash.clone(), id);
        let mut out = vec![];
        let proposal = self.signed_proposal(raw.height, raw.round, id.into())?;
        out.push((Dest::All, Payload::Proposal(proposal)));
        let (_, parts) = block_to_parts(&block).ok()?;
        for part in parts {
            out.push((
                Dest::All,
                Payload::BlockPart(wire::BlockPart {
                    height: block.header.height.value(),
                    round,
                    part: Some(part),
                }),
            ));
        }
        Some(out)
    }

    /// Instead of the proposal its engine made (which may re-propose what it is locked on), a
    /// valid block nobody saw yet, with `pol` as its POL round (-1: none).
    fn fresh_proposal(
        &mut self,
        engine: &Engine,
        raw: &pb::Proposal,
        pol: i32,
    ) -> Option<Vec<(Dest, Payload)>> {
        use prost::Message;
        let state = engine.state();
        let last_commit = if state.last_block_height >= state.initial_height {
            let bytes = engine.blocks().commit(state.last_block_height).ok()??;
            Some(block::Commit::try_from(pb::Commit::decode(bytes.as_slice()).ok()?).ok()?)
        } else {
            None
        };
        let time = state.next_block_time(last_commit.as_ref());
        let tx = format!("fresh{}.{}={}", raw.height, raw.round, self.rng.next_u64()).into_bytes();
        let (block, id, _) = state
            .make_block(vec![tx], last_commit, engine.address(), time)
            .ok()?;
        let mut proposal = self.signed_proposal(raw.height, raw.round, id.into())?;
        if pol >= 0 {
            proposal.pol_round = pol;
            let mut p = proposal::Proposal::try_from(proposal).ok()?;
            p.signature = None;
            sign_proposal(&self.key, &mut p, &self.chain_id);
            proposal = p.into();
        }
        let round = u32::try_from(raw.round).ok()?;
        let mut out = vec![(Dest::All, Payload::Proposal(proposal))];
        let (_, parts) = block_to_parts(&block).ok()?;
        for part in parts {
            out.push((
                Dest::All,
                Payload::BlockPart(wire::BlockPart {
                    height: block.header.height.value(),
                    round,
                    part: Some(part),
                }),
            ));
        }
        Some(out)
    }

    /// The oldest polka of this height below `raw`'s round whose block it has seen, proposed
    /// again in `raw`'s round with that polka's round as POL, with the parts and the polka's
    /// votes as a certificate.
    fn stale_proposal(
        &mut self,
        engine: &Engine,
        raw: &pb::Proposal,
    ) -> Option<Vec<(Dest, Payload)>> {
        let infos = engine.state().validator_infos.validators();
        let total: u64 = infos.iter().map(|v| v.power()).sum();
        let mut by_round: BTreeMap<(i32, Vec<u8>), Polka> = BTreeMap::new();
        for v in self.votes.iter().filter(|v| {
            v.height == raw.height
                && v.round < raw.round
                && v.r#type == pb::SignedMsgType::Prevote as i32
        }) {
            let Some(id) = v.block_id.as_ref().filter(|b| !b.hash.is_empty()) else {
                continue;
            };
            let entry = by_round.entry((v.round, id.hash.clone())).or_default();
            if entry.2.contains(&v.validator_index) {
                continue;
            }
            entry.2.push(v.validator_index);
            entry.0 += infos
                .get(v.validator_index as usize)
                .map_or(0, |i| i.power());
            entry.1.push(v.clone());
        }
        let ((vr, hash), (_, votes, _)) = by_round
            .into_iter()
            .find(|(_, (power, _, _))| 3 * u128::from(*power) > 2 * u128::from(total))?;
        if raw.block_id.as_ref().is_some_and(|b| b.hash == hash) {
            return None;
        }
        let (&(_, proposed_in), id) = self
            .proposals
            .iter()
            .find(|((h, _), id)| *h == raw.height && id.hash == hash)?;
        let parts = self
            .parts
            .get(&(raw.height, u32::try_from(proposed_in).ok()?))?;
        let round = u32::try_from(raw.round).ok()?;
        let mut p = proposal::Proposal::try_from(self.signed_proposal(
            raw.height,
            raw.round,
            id.clone(),
        )?)
        .ok()?;
        p.pol_round = Some(bulwark_types::tendermint::block::Round::try_from(vr).ok()?);
        p.signature = None;
        sign_proposal(&self.key, &mut p, &self.chain_id);
        let mut out = vec![
            (Dest::All, Payload::Proposal(p.into())),
            (Dest::All, Payload::Certificate(wire::Certificate { votes })),
        ];
        for part in parts {
            out.push((
                Dest::All,
                Payload::BlockPart(wire::BlockPart {
                    height: raw.height as u64,
                    round,
                    part: Some(part.clone()),
                }),
            ));
        }
        Some(out)
    }

    /// Sees a message its engine receives; what it sends at once in reply.
    pub fn incoming(
        &mut self,
        engine: &Engine,
        from: usize,
        payload: &Payload,
    ) -> Vec<(Dest, Payload)> {
        if self.now_playing(engine) == Behaviour::FutureRoundVotes {
            if let Payload::Proposal(p) = payload {
                let vote = pb::Vote {
                    r#type: pb::SignedMsgType::Prevote as i32,
                    height: p.height,
                    round: p.round.saturating_add(1),
                    block_id: None,
                    timestamp: Some(engine.state().last_block_time.into()),
                    validator_address: engine.address().as_bytes().to_vec(),
                    validator_index: engine.consensus().me().map_or(0, |i| i.0 as i32),
                    signature: vec![],
                    extension: vec![],
                    extension_signature: vec![],
                };
                if let Some(v) = self.resign_vote(&vote, |_| {}) {
                    return vec![(Dest::All, Payload::Vote(v))];
                }
            }
        }
        self.observe(from, payload);
        vec![]
    }

    fn observe(&mut self, from: usize, payload: &Payload) {
        match payload {
            Payload::Proposal(p) => {
                if let Some(id) = p.block_id.clone() {
                    if self.proposals.len() < 256 {
                        self.proposals.insert((p.height, p.round), id);
                    }
                }
            }
            Payload::BlockPart(b) => {
                if let (Ok(h), Some(part)) = (i64::try_from(b.height), b.part.clone()) {
                    let kept = self.parts.entry((h, b.round)).or_default();
                    if kept.len() < 128 && !kept.iter().any(|p| p.index == part.index) {
                        kept.push(part);
                    }
                }
            }
            Payload::Vote(v) => {
                if self.votes.len() >= KEPT_VOTES {
                    self.votes.pop_front();
                }
                self.votes.push_back(v.clone());
            }
            Payload::Status(s) => {
                self.behind.insert(from, s.height);
            }
            _ => {}
        }
    }

    /// What goes out instead of one message its engine sends; `relayed`: a reply to one peer
    /// (its engine relays what it saw, others' messages included, that way only).
    pub fn outgoing(
        &mut self,
        engine: &Engine,
        payload: Payload,
        relayed: bool,
    ) -> Vec<(Dest, Payload)> {
        let playing = self.now_playing(engine);
        let keep = |p: Payload| vec![(Dest::All, p)];
        // Consensus messages it relays pass unchanged: they may be others', and it can only
        // sign as itself.
        let consensus = matches!(
            payload,
            Payload::Vote(_) | Payload::Proposal(_) | Payload::BlockPart(_)
        );
        if relayed && consensus && playing != Behaviour::Silent {
            return keep(payload);
        }
        match (playing, payload) {
            (Behaviour::Silent, _) => vec![],
            (Behaviour::RandomPrevote, Payload::Vote(v))
                if v.r#type == pb::SignedMsgType::Prevote as i32 =>
            {
                let id = self.random_block_id();
                self.resign_vote(&v, |v| v.block_id = Some(id))
                    .map(|v| keep(Payload::Vote(v)))
                    .unwrap_or_default()
            }
            // Its precommit goes out with its prevote, for a random block: early enough to be
            // in the decision round's precommits when the others decide.
            (Behaviour::RandomPrecommit, Payload::Vote(v))
                if v.r#type == pb::SignedMsgType::Prevote as i32 =>
            {
                let id = self.random_block_id();
                self.early_precommits.retain(|(h, _)| *h >= v.height);
                self.early_precommits.insert((v.height, v.round));
                let early = self.resign_vote(&v, |v| {
                    v.r#type = pb::SignedMsgType::Precommit as i32;
                    v.block_id = Some(id);
                });
                let mut out = keep(Payload::Vote(v));
                out.extend(early.map(|p| (Dest::All, Payload::Vote(p))));
                out
            }
            (Behaviour::RandomPrecommit, Payload::Vote(v))
                if v.r#type == pb::SignedMsgType::Precommit as i32 =>
            {
                if self.early_precommits.contains(&(v.height, v.round)) {
                    return vec![];
                }
                let id = self.random_block_id();
                self.resign_vote(&v, |v| v.block_id = Some(id))
                    .map(|v| keep(Payload::Vote(v)))
                    .unwrap_or_default()
            }
            (Behaviour::DoubleVote, Payload::Vote(v)) => {
                let (a, b) = self.halves();
                let other = if v.block_id.as_ref().is_some_and(|b| !b.hash.is_empty()) {
                    None
                } else {
                    Some(self.random_block_id())
                };
                // Half the peers get its vote; the other half get a conflicting one first and
                // then the vote too, so some count one and see the other as evidence.
                let mut out = vec![];
                if let Some(conflict) = self.resign_vote(&v, |v| v.block_id = other) {
                    out.push((Dest::Some(b.clone()), Payload::Vote(conflict)));
                }
                out.push((Dest::Some(a), Payload::Vote(v.clone())));
                out.push((Dest::Some(b), Payload::Vote(v)));
                out
            }
            (
                Behaviour::FutureTime | Behaviour::MinimalTime | Behaviour::MaxTime,
                Payload::Proposal(p),
            ) => {
                let last = engine.state().last_block_time;
                let when = match playing {
                    Behaviour::FutureTime => last
                        .checked_add(std::time::Duration::from_secs(10 * 365 * 24 * 3600))
                        .unwrap_or(last),
                    Behaviour::MinimalTime => last
                        .checked_add(std::time::Duration::from_nanos(1))
                        .unwrap_or(last),
                    _ => Time::parse_from_rfc3339("9999-12-31T23:59:59.999999999Z").unwrap_or(last),
                };
                self.replace_block(engine, &p, |b| (b.data.clone(), when))
                    .unwrap_or_else(|| keep(Payload::Proposal(p)))
            }
            (Behaviour::ForgedEvidence, Payload::Proposal(p)) => {
                let Some(forged) = self.forged_evidence(engine) else {
                    return keep(Payload::Proposal(p));
                };
                let mut out = vec![(
                    Dest::All,
                    Payload::Evidence(Box::new(forged.clone().into())),
                )];
                out.extend(
                    self.replace_block_with_evidence(
                        engine,
                        &p,
                        |b| (b.data.clone(), b.header.time),
                        vec![forged],
                    )
                    .unwrap_or_else(|| keep(Payload::Proposal(p))),
                );
                out
            }
            (Behaviour::OversizedBlock, Payload::Proposal(p)) => {
                let max = engine.state().consensus_params.block.max_bytes;
                // The bytes the most parts a proposal may announce hold: a block between
                // `max` and this passes the part count, and only the byte limit refuses it.
                let part = bulwark_types::parts::BLOCK_PART_SIZE as u64;
                let room = max.div_ceil(part) * part;
                let just_over = room >= max + 1024 && self.rng.chance(0.5);
                let mut k = self.rng.next_u64();
                let mut filler = move |len: usize| {
                    k = k.wrapping_add(1);
                    let mut tx = format!("big{k:016x}=").into_bytes();
                    tx.resize(len.max(32), b'x');
                    tx
                };
                self.replace_block(engine, &p, |b| {
                    use prost::Message;
                    let mut txs = b.data.clone();
                    if just_over {
                        // A transaction of `len` bytes adds `len`, its tag and its length; the
                        // data's own length may grow by a byte or two.
                        let added =
                            |len: u64| len + 1 + prost::length_delimiter_len(len as usize) as u64;
                        let target = max + (room - max) / 2;
                        // The replacement carries no evidence.
                        let mut plain = pb::Block::from(b.clone());
                        plain.evidence = None;
                        let mut size = plain.encoded_len() as u64 + 2;
                        while size < target {
                            let len = (target - size).saturating_sub(4).clamp(32, 16 << 10);
                            size += added(len);
                            txs.push(filler(len as usize));
                        }
                    } else {
                        let mut size: u64 = txs.iter().map(|t| t.len() as u64).sum();
                        while size <= max + (64 << 10) {
                            let tx = filler(16 << 10);
                            size += tx.len() as u64;
                            txs.push(tx);
                        }
                    }
                    (txs, b.header.time)
                })
                .unwrap_or_else(|| keep(Payload::Proposal(p)))
            }
            // Parts of a replaced block: the replacement's parts went out with it.
            (
                Behaviour::FutureTime
                | Behaviour::MinimalTime
                | Behaviour::MaxTime
                | Behaviour::OversizedBlock,
                Payload::BlockPart(_),
            ) => vec![],
            // Its own votes follow its replacement block, not the one its engine built.
            (
                Behaviour::FutureTime
                | Behaviour::MinimalTime
                | Behaviour::MaxTime
                | Behaviour::OversizedBlock,
                Payload::Vote(v),
            ) => {
                let swap = v
                    .block_id
                    .as_ref()
                    .and_then(|b| self.replaced.get(&b.hash))
                    .copied();
                match swap {
                    Some(id) => self
                        .resign_vote(&v, |v| v.block_id = Some(id.into()))
                        .map(|v| keep(Payload::Vote(v)))
                        .unwrap_or_default(),
                    None => keep(Payload::Vote(v)),
                }
            }
            (Behaviour::WithholdParts, Payload::BlockPart(bp)) => {
                let (a, _) = self.halves();
                vec![(Dest::Some(a), Payload::BlockPart(bp))]
            }
            (Behaviour::EquivocatingProposer, Payload::Proposal(p)) => {
                let (victims, _) = self.halves();
                let decoy_id = self.random_block_id();
                let mut out = vec![];
                if let Some(decoy) = self.signed_proposal(p.height, p.round, decoy_id) {
                    out.push((Dest::Some(victims), Payload::Proposal(decoy)));
                }
                out.push((Dest::All, Payload::Proposal(p)));
                out
            }
            (Behaviour::FreshProposal | Behaviour::FakePol, Payload::Proposal(p)) => {
                let pol = if playing == Behaviour::FakePol {
                    p.round - 1
                } else {
                    -1
                };
                self.fresh_proposal(engine, &p, pol)
                    .unwrap_or_else(|| keep(Payload::Proposal(p)))
            }
            (Behaviour::FreshProposal | Behaviour::FakePol, Payload::BlockPart(_)) => vec![],
            (Behaviour::StalePol, Payload::Vote(v)) => {
                if v.r#type == pb::SignedMsgType::Precommit as i32 {
                    return vec![];
                }
                self.observe(self.me, &Payload::Vote(v.clone()));
                keep(Payload::Vote(v))
            }
            (Behaviour::StalePol, Payload::Proposal(p)) => self
                .stale_proposal(engine, &p)
                .unwrap_or_else(|| keep(Payload::Proposal(p))),
            (Behaviour::ForgedDecidedBlocks, Payload::DecidedBlock(d)) => {
                let mut forged = (*d).clone();
                if self.rng.chance(0.5) {
                    if let Some(c) = forged.commit.as_mut() {
                        for s in &mut c.signatures {
                            if !s.signature.is_empty() {
                                s.signature = sign(&self.key, b"forged").as_bytes().to_vec();
                            }
                        }
                    }
                } else if let Some(b) = forged.block.as_mut() {
                    if let Some(data) = b.data.as_mut() {
                        data.txs.push(b"forged=tx".to_vec());
                    }
                }
                keep(Payload::DecidedBlock(Box::new(forged)))
            }
            // Its engine's answers: one decided block in ten, and never the `Status` that
            // ends an answer (it says where it is on its own, in `act`).
            (Behaviour::TrickleSync, Payload::DecidedBlock(d)) => {
                if self.rng.chance(0.1) {
                    keep(Payload::DecidedBlock(d))
                } else {
                    vec![]
                }
            }
            (Behaviour::TrickleSync, Payload::Status(_)) => vec![],
            (_, p) => keep(p),
        }
    }

    /// What it sends on its own initiative (called every few simulated milliseconds).
    pub fn act(&mut self, engine: &Engine) -> Vec<(Dest, Payload)> {
        let playing = self.now_playing(engine);
        let height = engine.state().next_height();
        let Ok(h) = i64::try_from(height) else {
            return vec![];
        };
        match playing {
            Behaviour::HugeRound | Behaviour::LargeRound => {
                let huge = if playing == Behaviour::HugeRound {
                    i32::MAX
                } else {
                    1 << 24
                };
                let mut out = vec![];
                let id = self.random_block_id();
                let garbage = pb::Proposal {
                    r#type: pb::SignedMsgType::Proposal as i32,
                    height: h,
                    round: huge,
                    pol_round: -1,
                    block_id: Some(id.clone()),
                    timestamp: Some(Time::unix_epoch().into()),
                    signature: self.random_hash().repeat(2),
                };
                out.push((Dest::All, Payload::Proposal(garbage)));
                if let Some(signed) = self.signed_proposal(h, huge, id) {
                    out.push((Dest::All, Payload::Proposal(signed)));
                }
                out
            }
            Behaviour::ProposalFlood => {
                // Once per other validator's proposal it heard of: the latest vote it saw of
                // this height tells it the round in progress.
                let round = engine.round() as i32;
                if self.flooded == Some((h, round)) {
                    return vec![];
                }
                self.flooded = Some((h, round));
                let mut out = vec![];
                for k in 0..24 {
                    let r = round.saturating_add(1 + k / 3);
                    let id = self.random_block_id();
                    if let Some(p) = self.signed_proposal(h, r, id) {
                        out.push((Dest::All, Payload::Proposal(p)));
                    }
                }
                out
            }
            Behaviour::ForgedCertificates => {
                let current: Vec<pb::Vote> = self
                    .votes
                    .iter()
                    .filter(|v| v.height == h)
                    .cloned()
                    .collect();
                let Some(one) = current.last().cloned() else {
                    return vec![];
                };
                let mut out = vec![];
                // Duplicates of one vote.
                out.push((
                    Dest::All,
                    Payload::Certificate(wire::Certificate {
                        votes: vec![one.clone(); 2_000],
                    }),
                ));
                // Mixed rounds and kinds.
                out.push((
                    Dest::All,
                    Payload::Certificate(wire::Certificate {
                        votes: current.iter().rev().take(8).cloned().collect(),
                    }),
                ));
                // Sub-quorum.
                out.push((
                    Dest::All,
                    Payload::Certificate(wire::Certificate {
                        votes: vec![one.clone()],
                    }),
                ));
                // An outsider's slot.
                let mut outsider = one;
                outsider.validator_index = self.n as i32 + 3;
                out.push((
                    Dest::All,
                    Payload::Certificate(wire::Certificate {
                        votes: vec![outsider],
                    }),
                ));
                out
            }
            Behaviour::ReplayOldVotes => {
                let old: Vec<pb::Vote> = self
                    .votes
                    .iter()
                    .filter(|v| v.height < h || self.rng.chance(0.2))
                    .cloned()
                    .collect();
                old.into_iter()
                    .rev()
                    .take(16)
                    .map(|v| (Dest::All, Payload::Vote(v)))
                    .collect()
            }
            Behaviour::TrickleSync => {
                let far = pb::Vote {
                    height: h.saturating_add(3),
                    ..Default::default()
                };
                vec![
                    (
                        Dest::All,
                        Payload::Status(wire::Status {
                            height: height.saturating_add(1),
                            round: 0,
                        }),
                    ),
                    (Dest::All, Payload::Vote(far)),
                ]
            }
            Behaviour::StatusFlood => (0..8)
                .map(|_| {
                    let fake = if self.rng.chance(0.5) {
                        self.rng.range(height + 1, height + 1_000_000_000)
                    } else {
                        self.rng.below(height.max(1))
                    };
                    (
                        Dest::All,
                        Payload::Status(wire::Status {
                            height: fake,
                            round: self.rng.below(1_000) as u32,
                        }),
                    )
                })
                .collect(),
            Behaviour::ForgedDecidedBlocks => {
                // A peer behind gets a decided block for its height with a forged commit
                // before the honest answer reaches it.
                let behind: Vec<(usize, u64)> = self
                    .behind
                    .iter()
                    .filter(|(_, h)| **h < height)
                    .map(|(p, h)| (*p, *h))
                    .collect();
                let mut out = vec![];
                for (peer, at) in behind {
                    let Ok(Some(block)) = engine.blocks().block(at) else {
                        continue;
                    };
                    let Ok(Some(commit)) = engine.blocks().commit(at) else {
                        continue;
                    };
                    use prost::Message;
                    let block = pb::Block::decode(block.as_slice()).ok();
                    let mut commit = pb::Commit::decode(commit.as_slice()).ok();
                    if let Some(c) = commit.as_mut() {
                        for s in &mut c.signatures {
                            if !s.signature.is_empty() {
                                s.signature = sign(&self.key, b"forged").as_bytes().to_vec();
                            }
                        }
                    }
                    out.push((
                        Dest::Some(vec![peer]),
                        Payload::DecidedBlock(Box::new(wire::DecidedBlock {
                            block,
                            commit,
                            extensions: None,
                        })),
                    ));
                }
                self.behind.clear();
                out
            }
            _ => vec![],
        }
    }
}
