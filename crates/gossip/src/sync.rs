//! Whom a node behind asks for decided blocks (block sync), and how far the network is: each
//! peer's last reported height, the one request waiting for its answer, and the peers shunned
//! for leaving one unanswered. The engine decides when to ask; this decides whom.

use crate::heights;
use crate::relay::PeerId;
use std::collections::{BTreeMap, HashMap};

/// Most decided blocks one request returns.
pub const CATCH_UP_BLOCKS: u64 = 32;

/// Ticks a peer is not asked for blocks after it left a request unanswered.
pub const SHUN_TICKS: u32 = 8;

/// The block-sync requests of one node.
#[derive(Debug, Default)]
pub struct BlockRequests {
    /// Each peer's last reported height (forgotten with the connection): their median, not
    /// the highest (a peer may lie), says how far the network is.
    heights: BTreeMap<PeerId, u64>,
    /// Peers asked for decided blocks since the last tick, each with the height asked at:
    /// a peer is asked again only once those blocks moved this node (block sync is a
    /// pipeline of runs, each requested when the last one landed), whatever peers claim.
    asked: HashMap<PeerId, u64>,
    /// The peer asked last, so the next run is asked of the next peer ahead: each answers a
    /// few runs a tick.
    asked_peer: Option<PeerId>,
    /// The request waiting for its answer (peer, height asked at): one at a time, so peers
    /// do not spend their answers on the same run. The answer ends with the peer's
    /// `Status`; a peer whose answer has not ended by the next tick is shunned.
    outstanding: Option<(PeerId, u64)>,
    /// Whether a tick passed since `outstanding` was asked (the next one shuns its peer).
    outstanding_aged: bool,
    /// Peers not asked for blocks for this many more ticks: they left a request unanswered
    /// (a byzantine one could otherwise hold the one request open and trickle blocks).
    shunned: HashMap<PeerId, u32>,
}

impl BlockRequests {
    /// Each peer's last reported height.
    pub fn heights(&self) -> &BTreeMap<PeerId, u64> {
        &self.heights
    }

    /// Notes the height `peer` reported.
    pub fn reported(&mut self, peer: PeerId, height: u64) {
        heights::note(&mut self.heights, peer, height, |_, reported| reported);
    }

    /// Forgets the height `peer` reported (it may not serve blocks).
    pub fn forget_height(&mut self, peer: PeerId) {
        self.heights.remove(&peer);
    }

    /// Forgets everything about `peer` (its connection closed).
    pub fn forget(&mut self, peer: PeerId) {
        self.heights.remove(&peer);
        self.asked.remove(&peer);
        self.shunned.remove(&peer);
        if self.outstanding.is_some_and(|(p, _)| p == peer) {
            self.outstanding = None;
        }
    }

    /// A tick: shunning counts down, a request unanswered since the last tick shuns its
    /// peer, and every peer may be asked again.
    pub fn tick(&mut self) {
        self.shunned.retain(|_, ticks| {
            *ticks -= 1;
            *ticks > 0
        });
        match self.outstanding {
            Some((peer, _)) if self.outstanding_aged => {
                self.shunned.insert(peer, SHUN_TICKS);
                self.outstanding = None;
            }
            Some(_) => self.outstanding_aged = true,
            None => {}
        }
        self.asked.clear();
    }

    /// `peer` sent its `Status` while this node is at `height`: if it was the peer asked,
    /// its answer ended; one that moved this node nowhere (asked at `height`) means it has
    /// nothing for us this tick.
    pub fn answer_ended(&mut self, peer: PeerId, height: u64) {
        if let Some((asked, from)) = self.outstanding.filter(|(asked, _)| *asked == peer) {
            self.outstanding = None;
            if from == height {
                self.shunned.insert(asked, 1);
            }
        }
    }

    /// Whether any peer was asked since the last tick.
    pub fn asked_any(&self) -> bool {
        !self.asked.is_empty()
    }

    /// The peer whose run of decided blocks this node, at `height`, still waits for.
    pub fn awaiting_run(&self, height: u64) -> Option<PeerId> {
        self.outstanding
            .filter(|(_, from)| height < from.saturating_add(CATCH_UP_BLOCKS))
            .map(|(peer, _)| peer)
    }

    /// The peer to ask for the decided blocks from `height` on: the next peer ahead, or else
    /// `fallback` if neither shunned nor asked at `height`. It is noted as asked.
    pub fn ask(
        &mut self,
        height: u64,
        fallback: Option<PeerId>,
        full_node: impl Fn(&PeerId) -> bool,
    ) -> Option<PeerId> {
        let askable =
            |p: &PeerId| !self.shunned.contains_key(p) && self.asked.get(p) != Some(&height);
        let peer = self
            .next_peer_ahead(height, full_node)
            .or(fallback.filter(|p| askable(p)))?;
        self.asked.insert(peer, height);
        self.outstanding = Some((peer, height));
        self.outstanding_aged = false;
        self.asked_peer = Some(peer);
        Some(peer)
    }

    /// After the peer asked last, the next peer (by id, wrapping) that reported a height
    /// above `height`, is not shunned, and was not asked at `height` since the last tick:
    /// a validator if one qualifies, else a full node.
    fn next_peer_ahead(&self, height: u64, full_node: impl Fn(&PeerId) -> bool) -> Option<PeerId> {
        let ahead = |full: bool| {
            let full_node = &full_node;
            move |(p, h): (&PeerId, &u64)| {
                (*h > height
                    && full_node(p) == full
                    && self.asked.get(p) != Some(&height)
                    && !self.shunned.contains_key(p))
                .then_some(*p)
            }
        };
        let after = self.asked_peer.map_or(0, |p| p.saturating_add(1));
        [false, true].into_iter().find_map(|full| {
            self.heights
                .range(after..)
                .find_map(ahead(full))
                .or_else(|| self.heights.range(..after).find_map(ahead(full)))
        })
    }

    /// The lower median of the validator peers' last reported heights (of all peers' when
    /// none is a validator; 0 with no peer): how far the network is.
    pub fn network_height(&self, full_node: impl Fn(&PeerId) -> bool) -> u64 {
        let mut reported: Vec<u64> = self
            .heights
            .iter()
            .filter(|(p, _)| !full_node(p))
            .map(|(_, h)| *h)
            .collect();
        if reported.is_empty() {
            reported = self.heights.values().copied().collect();
        }
        heights::lower_median(reported).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_asked_in_turn_and_a_silent_one_is_shunned() {
        let mut r = BlockRequests::default();
        let validator = |_: &PeerId| false;
        for (peer, h) in [(1, 50), (2, 50), (3, 9)] {
            r.reported(peer, h);
        }
        assert_eq!(r.network_height(validator), 50);
        assert_eq!(r.ask(10, None, validator), Some(1));
        assert_eq!(r.awaiting_run(10), Some(1));
        assert_eq!(r.awaiting_run(10 + CATCH_UP_BLOCKS), None);
        assert_eq!(r.ask(10, None, validator), Some(2), "the next peer ahead");
        assert_eq!(
            r.ask(10, None, validator),
            None,
            "each asked once at a height"
        );
        r.tick();
        r.tick();
        assert_eq!(r.awaiting_run(10), None, "peer 2 never answered");
        assert_eq!(r.ask(10, None, validator), Some(1), "peer 2 is shunned");
        r.answer_ended(1, 10);
        assert_eq!(
            r.ask(11, None, validator),
            None,
            "an answer that moved us nowhere shuns"
        );
        r.tick();
        assert_eq!(r.ask(11, None, validator), Some(1), "for one tick");
        r.forget(2);
        assert_eq!(r.heights().len(), 2);
    }

    #[test]
    fn full_nodes_are_asked_only_when_no_validator_is_ahead() {
        let mut r = BlockRequests::default();
        let full = |p: &PeerId| *p == 1;
        r.reported(1, 90);
        r.reported(2, 40);
        assert_eq!(r.network_height(full), 40, "full nodes do not count");
        assert_eq!(r.ask(10, None, full), Some(2));
        r.tick();
        r.answer_ended(2, 11);
        assert_eq!(r.ask(40, None, full), Some(1));
    }
}
