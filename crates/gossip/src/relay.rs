//! What a node re-sends to a peer that reports being stuck at its height (pull gossip, the only
//! relay of other validators' messages): the admitted messages of the height in progress, kept
//! under their identity rather than in one list, so the number a peer can make it keep is
//! bounded by consensus itself (a vote slot per validator, round and kind; a few proposals per
//! round; parts of the part sets those announce) and spam cannot crowd out an honest vote
//! (review M4).
//!
//! Each peer is sent only what it is not known to have: what it sent us and what we already
//! answered it with (review H5: a stall no longer re-sends the whole height every tick). That
//! record goes stale when the peer restarts and loses what it had, or drops what it was sent
//! (a message of a height it had not started, beyond its bound), and a stale record withholds
//! exactly what the peer needs (the engine simulator's long run found heights that never
//! ended that way). So the record is forgotten when the connection goes
//! ([`Relay::forget_peer`]) and every [`FULL_ANSWER_EVERY`]-th answer to a peer is everything.

/// A peer connection, as the engine names it.
pub type PeerId = u64;
use bulwark_consensus::mutation::{self, Mutant};
use bulwark_consensus::MAX_PROPOSALS_PER_ROUND;
use bulwark_types::tendermint_proto::v0_38 as pb;
use bulwark_wire::Payload;
use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Distinct votes kept per validator, round and kind: its first, and a conflicting second (so
/// every honest node sees an equivocation and can make the evidence).
const VOTES_PER_SLOT: usize = 2;
/// Bytes of peers' block parts kept; beyond it the parts of the oldest round go first (a block
/// of an older round that is proposed again travels again, in the new round). This node's own
/// parts are always kept.
pub const MAX_PART_BYTES: usize = 96 << 20;
/// Every this many answers to a peer, it is sent everything kept whatever it is known to have.
pub const FULL_ANSWER_EVERY: u32 = 8;
/// Messages in one answer at most, well within a peer's send queue; the rest go in the next.
pub const MAX_ANSWER: usize = 1024;

/// What identifies a message: a re-delivery has the same key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// An answer runs through the keys from the greatest: proposals, votes (small, and what a stuck
/// peer most needs), then parts, each newest round first (what lets a peer skip to the round
/// in progress). Certificates, few and what shows a polka or commit, go before all of them.
enum Key {
    Part {
        round: u32,
        index: u32,
        bytes: [u8; 32],
    },
    Vote {
        round: u32,
        kind: i32,
        validator: u32,
        block: [u8; 32],
    },
    Proposal {
        round: u32,
        block: [u8; 32],
    },
    /// Only in a peer's record: a certificate sent, by the digest of its encoding.
    Certificate([u8; 32]),
}

/// The key of a proposal, part or vote; none for other payloads.
fn key_of(payload: &Payload) -> Option<Key> {
    // The whole block id (hash and part-set header), so an equivocation between two part sets
    // of one block is two messages.
    let block = |id: &Option<pb::types::BlockId>| -> [u8; 32] {
        id.as_ref()
            .map_or([0; 32], |b| Sha256::digest(b.encode_to_vec()).into())
    };
    match payload {
        Payload::Proposal(p) => Some(Key::Proposal {
            round: u32::try_from(p.round).ok()?,
            block: block(&p.block_id),
        }),
        Payload::BlockPart(bp) => {
            let part = bp.part.as_ref()?;
            Some(Key::Part {
                round: bp.round,
                index: part.index,
                bytes: Sha256::digest(&part.bytes).into(),
            })
        }
        Payload::Vote(v) => Some(Key::Vote {
            round: u32::try_from(v.round).ok()?,
            kind: v.r#type,
            validator: u32::try_from(v.validator_index).ok()?,
            block: block(&v.block_id),
        }),
        _ => None,
    }
}

/// The admitted messages of the height in progress.
#[derive(Debug, Default)]
pub struct Relay {
    messages: BTreeMap<Key, Payload>,
    /// Distinct votes per (round, kind, validator).
    votes_per_slot: HashMap<(u32, i32, u32), usize>,
    proposals_per_round: HashMap<u32, usize>,
    part_bytes: usize,
    /// What each peer is known to have of this height.
    peers: HashMap<PeerId, PeerRecord>,
}

/// What one peer is known to have, and how many answers it got since the record was last
/// forgotten.
#[derive(Debug, Default)]
struct PeerRecord {
    has: HashSet<Key>,
    answers: u32,
    /// A full answer is due: it starts once the answer in progress went through everything
    /// (an answer stops at [`MAX_ANSWER`], and clearing before the end would send the first
    /// messages again and again and the last never).
    full_due: bool,
    /// The last answer stopped at [`MAX_ANSWER`].
    partial: bool,
}

impl Relay {
    /// Forgets everything (a new height starts).
    pub fn clear(&mut self) {
        *self = Relay::default();
    }

    /// Messages kept.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Keeps an admitted message (the caller checked it), from peer `from` (none for our own).
    /// Returns whether it is kept.
    pub fn keep(&mut self, from: Option<PeerId>, payload: Payload) -> bool {
        let Some(key) = key_of(&payload) else {
            return false;
        };
        if let Some(peer) = from {
            if self.messages.contains_key(&key) {
                self.record(peer, key);
                return true;
            }
        }
        if !self.messages.contains_key(&key) {
            if mutation::active(Mutant::RelayFirstComeOnly) && self.messages.len() >= 32 {
                return false;
            }
            let room = match &key {
                Key::Vote {
                    round,
                    kind,
                    validator,
                    ..
                } => {
                    let n = self
                        .votes_per_slot
                        .entry((*round, *kind, *validator))
                        .or_default();
                    *n < VOTES_PER_SLOT && {
                        *n += 1;
                        true
                    }
                }
                Key::Proposal { round, .. } => {
                    let n = self.proposals_per_round.entry(*round).or_default();
                    *n < MAX_PROPOSALS_PER_ROUND && {
                        *n += 1;
                        true
                    }
                }
                Key::Part { round, .. } => {
                    let size = payload.encoded_len();
                    let round = *round;
                    self.make_room_for_part(round, size, from.is_none())
                }
                Key::Certificate(_) => false,
            };
            if !room {
                return false;
            }
            self.messages.insert(key.clone(), payload);
            if let Some(peer) = from {
                self.record(peer, key);
            }
        }
        true
    }

    /// Notes that `peer` has the message under `key` (only of messages kept, so a record is
    /// never larger than what is kept).
    fn record(&mut self, peer: PeerId, key: Key) {
        self.peers.entry(peer).or_default().has.insert(key);
    }

    /// Forgets what `peer` is known to have: its connection is gone, or what it had came from
    /// a log replayed after a restart (a peer of then may have lost it since).
    pub fn forget_peer(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
    }

    /// Forgets what every peer is known to have.
    pub fn forget_peers(&mut self) {
        self.peers.clear();
    }

    /// What to send `peer` that reports being stuck at this height: up to [`MAX_ANSWER`] of
    /// the `certificates` given and the messages kept that it is not known to have; every
    /// [`FULL_ANSWER_EVERY`]-th answer (the first included) starts from all of them, once the
    /// pass in progress is through.
    /// Everything returned counts as had until the driver reports it
    /// [`undelivered`](Relay::undelivered) (review M2: a full send queue drops frames, and a
    /// record of them would withhold the same tail on every answer).
    pub fn answer(
        &mut self,
        peer: PeerId,
        certificates: Vec<bulwark_wire::Certificate>,
    ) -> Vec<Payload> {
        let record = self.peers.entry(peer).or_default();
        if record.answers % FULL_ANSWER_EVERY == 0 {
            record.full_due = true;
        }
        if record.full_due && !record.partial {
            record.has.clear();
            record.full_due = false;
        }
        record.answers = record.answers.wrapping_add(1);
        let mut out = Vec::new();
        for certificate in certificates {
            if out.len() >= MAX_ANSWER {
                break;
            }
            let key = Key::Certificate(Sha256::digest(certificate.encode_to_vec()).into());
            if record.has.insert(key) {
                out.push(Payload::Certificate(certificate));
            }
        }
        let lacking: Vec<&Key> = self
            .messages
            .keys()
            .rev()
            .filter(|key| !record.has.contains(*key))
            .take(MAX_ANSWER - out.len())
            .collect();
        for key in lacking {
            record.has.insert(key.clone());
            if let Some(payload) = self.messages.get(key) {
                out.push(payload.clone());
            }
        }
        record.partial = out.len() >= MAX_ANSWER;
        out
    }

    /// The driver could not queue `payload` for `peer` (its send queue was full): it no longer
    /// counts as had, so the next answer carries it.
    pub fn undelivered(&mut self, peer: PeerId, payload: &Payload) {
        let key = match payload {
            Payload::Certificate(c) => {
                Some(Key::Certificate(Sha256::digest(c.encode_to_vec()).into()))
            }
            other => key_of(other),
        };
        if let (Some(key), Some(record)) = (key, self.peers.get_mut(&peer)) {
            record.has.remove(&key);
        }
    }

    /// Room for a part of `size` bytes in `round`: the parts of older rounds go first; a
    /// peer's part that still does not fit is not kept, our own always is.
    fn make_room_for_part(&mut self, round: u32, size: usize, own: bool) -> bool {
        while self.part_bytes + size > MAX_PART_BYTES {
            let oldest = self.messages.keys().find_map(|k| match k {
                Key::Part { round: r, .. } if *r < round => Some(*r),
                _ => None,
            });
            let Some(oldest) = oldest else { break };
            let evicted: Vec<Key> = self
                .messages
                .keys()
                .filter(|k| matches!(k, Key::Part { round: r, .. } if *r == oldest))
                .cloned()
                .collect();
            for key in evicted {
                if let Some(p) = self.messages.remove(&key) {
                    self.part_bytes -= p.encoded_len();
                }
            }
        }
        let fits = own || self.part_bytes + size <= MAX_PART_BYTES;
        if fits {
            self.part_bytes += size;
        }
        fits
    }

    /// Whether this very message, byte for byte, is kept already (a re-delivery of a checked
    /// message: nothing to check or do again).
    pub fn holds(&self, payload: &Payload) -> bool {
        key_of(payload).is_some_and(|key| self.messages.get(&key) == Some(payload))
    }

    /// Everything kept, for a stuck peer: proposals, then parts, then votes, each by round.
    pub fn all(&self) -> Vec<Payload> {
        self.messages.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn vote(validator: i32, round: i32, block: u8) -> Payload {
        Payload::Vote(pb::types::Vote {
            r#type: pb::types::SignedMsgType::Precommit as i32,
            height: 5,
            round,
            block_id: Some(pb::types::BlockId {
                hash: vec![block; 32],
                part_set_header: None,
            }),
            validator_index: validator,
            signature: vec![block; 64],
            ..Default::default()
        })
    }

    fn proposal(round: i32, block: u32) -> Payload {
        Payload::Proposal(pb::types::Proposal {
            height: 5,
            round,
            block_id: Some(pb::types::BlockId {
                hash: block.to_be_bytes().repeat(8),
                part_set_header: None,
            }),
            ..Default::default()
        })
    }

    #[test]
    fn spam_fills_only_its_own_slots_and_every_honest_vote_is_still_relayed() {
        let mut relay = Relay::default();
        let spammer = 1;
        for i in 0..10_001u32 {
            relay.keep(Some(spammer), proposal(1, i));
            relay.keep(Some(spammer), vote(3, 0, (i % 251) as u8));
        }
        assert_eq!(relay.len(), MAX_PROPOSALS_PER_ROUND + VOTES_PER_SLOT);
        for validator in 0..3 {
            assert!(relay.keep(Some(2), vote(validator, 0, 9)));
        }
        let sent = relay.all();
        for validator in 0..3 {
            assert!(
                sent.contains(&vote(validator, 0, 9)),
                "validator {validator}"
            );
        }
    }

    #[test]
    fn a_peer_is_sent_only_what_it_lacks_and_everything_every_few_answers() {
        let mut relay = Relay::default();
        let peer = 4;
        relay.keep(Some(2), vote(0, 0, 1));
        relay.keep(Some(peer), vote(1, 0, 1));
        relay.keep(None, vote(2, 0, 1));
        let certificate = || vec![bulwark_wire::Certificate::default()];
        // The first answer is everything, what the peer sent us included.
        assert_eq!(relay.answer(peer, certificate()).len(), 4);
        // Then only what came since: not what the peer sent, nor what it was sent.
        relay.keep(Some(peer), vote(3, 0, 1));
        relay.keep(Some(2), vote(0, 1, 1));
        assert_eq!(relay.answer(peer, certificate()), vec![vote(0, 1, 1)]);
        for _ in 2..FULL_ANSWER_EVERY {
            assert!(relay.answer(peer, certificate()).is_empty());
        }
        // Every few answers it is everything again (the peer may have lost it).
        assert_eq!(relay.answer(peer, certificate()).len(), 6);
        assert!(relay.answer(peer, certificate()).is_empty());
        // Another peer, or this one on a new connection, is sent everything.
        assert_eq!(relay.answer(5, vec![]).len(), 5);
        relay.forget_peer(peer);
        assert_eq!(relay.answer(peer, vec![]).len(), 5);
        relay.forget_peers();
        assert_eq!(relay.answer(5, vec![]).len(), 5);
        // A new height forgets the records with the messages.
        relay.clear();
        relay.keep(Some(2), vote(0, 0, 1));
        assert_eq!(relay.answer(5, vec![]).len(), 1);
    }

    #[test]
    fn only_an_identical_copy_counts_as_held() {
        let mut relay = Relay::default();
        relay.keep(Some(7), vote(0, 0, 1));
        relay.keep(None, vote(1, 0, 1));
        assert_eq!(relay.all().len(), 2);
        let Payload::Vote(mut altered) = vote(1, 0, 1) else {
            unreachable!()
        };
        altered.signature[0] ^= 1;
        assert!(!relay.holds(&Payload::Vote(altered)));
        assert!(relay.holds(&vote(1, 0, 1)));
        relay.clear();
        assert!(relay.is_empty() && relay.all().is_empty());
    }
}

#[cfg(test)]
mod part_tests {
    use super::*;
    use bulwark_wire as wire;

    fn part(round: u32, index: u32) -> Payload {
        let mut bytes = vec![0u8; 64 << 10];
        bytes[..4].copy_from_slice(&index.to_be_bytes());
        bytes[4..8].copy_from_slice(&round.to_be_bytes());
        Payload::BlockPart(wire::BlockPart {
            height: 5,
            round,
            part: Some(pb::types::Part {
                index,
                bytes,
                proof: Some(pb::crypto::Proof::default()),
            }),
        })
    }

    #[test]
    fn peers_parts_are_capped_a_newer_round_evicts_the_oldest_and_our_own_always_fit() {
        let mut relay = Relay::default();
        let fit = MAX_PART_BYTES / part(0, 0).encoded_len();
        let kept = (0..fit as u32 + 50)
            .filter(|i| relay.keep(Some(1), part(0, *i)))
            .count();
        assert_eq!(kept, fit, "a peer fills at most the cap");
        assert!(
            relay.keep(None, part(0, 99_999)),
            "our own part is kept anyway"
        );
        // A part of the next round pushes the older round out.
        assert!(relay.keep(Some(2), part(1, 0)));
        assert!(relay.part_bytes <= MAX_PART_BYTES);
        let sent = relay.all();
        assert!(sent.contains(&part(1, 0)));
        assert!(!sent.contains(&part(0, 0)));
    }

    #[test]
    fn an_answer_fits_a_send_queue_votes_first_and_what_could_not_be_queued_goes_next() {
        use super::tests::vote;
        let mut relay = Relay::default();
        for index in 0..8 {
            relay.keep(None, part(0, index));
        }
        let votes = MAX_ANSWER as i32 + 40;
        for validator in 0..votes {
            relay.keep(None, vote(validator, 0, 1));
        }
        let peer = 3;
        let first = relay.answer(peer, vec![]);
        assert_eq!(first.len(), MAX_ANSWER);
        assert!(first.iter().all(|p| matches!(p, Payload::Vote(_))));
        // The driver's queue for it filled up: the last 100 never left.
        let (queued, dropped) = first.split_at(MAX_ANSWER - 100);
        for payload in dropped {
            relay.undelivered(peer, payload);
        }
        let second = relay.answer(peer, vec![]);
        assert_eq!(second.len(), 100 + 40 + 8);
        assert_eq!(second[..100], *dropped);
        assert!(second[100..140]
            .iter()
            .all(|p| matches!(p, Payload::Vote(_))));
        assert!(second[140..]
            .iter()
            .all(|p| matches!(p, Payload::BlockPart(_))));
        assert!(second.iter().all(|p| !queued.contains(p)));
        assert!(relay.answer(peer, vec![]).is_empty());
    }

    #[test]
    fn a_long_height_reaches_a_peer_whole_certificates_and_the_newest_round_first() {
        use super::tests::vote;
        let mut relay = Relay::default();
        // More than FULL_ANSWER_EVERY answers' worth: 9 rounds of 1,024 validators.
        let (rounds, validators) = (9, MAX_ANSWER as i32);
        for round in 0..rounds {
            for validator in 0..validators {
                relay.keep(None, vote(validator, round, 1));
            }
        }
        let certificate = bulwark_wire::Certificate {
            votes: vec![pb::types::Vote::default()],
        };
        let peer = 1;
        let first = relay.answer(peer, vec![certificate.clone()]);
        assert_eq!(first[0], Payload::Certificate(certificate));
        assert!(matches!(&first[1], Payload::Vote(v) if v.round == rounds - 1));
        let mut sent: HashSet<Vec<u8>> = first.iter().map(bulwark_wire::encode_ref).collect();
        // Every message once, the first round's included, before anything is sent again.
        let everything = 1 + (rounds * validators) as usize;
        let mut answers = 1;
        while sent.len() < everything {
            let answer = relay.answer(peer, vec![]);
            answers += 1;
            assert!(answers <= 10, "the pass never ends");
            for payload in &answer {
                assert!(sent.insert(bulwark_wire::encode_ref(payload)), "sent twice");
            }
        }
        assert_eq!(answers, 10);
        // The full answer that came due meanwhile starts once the pass is through.
        assert_eq!(relay.answer(peer, vec![]).len(), MAX_ANSWER);
    }
}
