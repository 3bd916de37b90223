//! Which attested connections the driver keeps as the chain's validator set changes: the
//! validators of the next two heights (an update committed at H takes effect at H + 2, and a
//! joining validator must hear the proposals of its first height), and, where the genesis
//! admits them (`attest_full_nodes`), a bounded number of full nodes. A validator the chain
//! removes is disconnected where full nodes are refused, and becomes a full node where they
//! are admitted. The verifier's keys ([`ValidatorKeys`]) are the same, so new handshakes
//! follow the set too.

use crate::peers::{ConnectionId, Peer};
use bulwark_net::ValidatorKeys;
use std::collections::{BTreeSet, HashMap};

/// The consensus keys of validator sets.
pub fn keys_of<'a>(
    sets: impl IntoIterator<Item = &'a bulwark_types::tendermint::validator::Set>,
) -> BTreeSet<[u8; 32]> {
    sets.into_iter()
        .flat_map(|s| s.validators())
        .filter_map(|v| v.pub_key.ed25519())
        .filter_map(|k| k.as_bytes().try_into().ok())
        .collect()
}

/// The driver's rule for which peers stay.
#[derive(Clone, Debug)]
pub struct Membership {
    keys: ValidatorKeys,
    full_nodes: bool,
    max_full_nodes: usize,
}

/// Why a newly attested connection was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Its key is no validator's (any more), and the network admits no full nodes.
    NotAValidator,
    /// It is a full node, and this node keeps as many as it takes.
    FullNodesFull,
    /// It is a full node on a chip (unattested: at an address) that already runs
    /// [`FULL_NODES_PER_CHIP`] of this node's full-node peers (one host's guests do not take
    /// every place).
    ChipFull,
}

/// Full-node peers one chip (or, for unattested ones, one address) may hold at once.
pub const FULL_NODES_PER_CHIP: usize = 2;

/// Where a full node runs, as far as this node can tell: its chip if attested, else its
/// address (an IPv6 /64, as the edge counts it).
fn place_of(peer: &Peer) -> Result<[u8; 64], std::net::IpAddr> {
    if peer.attested.attested {
        Ok(peer.attested.chip_id)
    } else {
        Err(crate::edge::rate_source(peer.addr.ip()))
    }
}

impl Membership {
    /// The rule over `keys` (shared with the verifier), admitting at most `max_full_nodes`
    /// full nodes if `full_nodes`.
    pub fn new(keys: ValidatorKeys, full_nodes: bool, max_full_nodes: usize) -> Self {
        Membership {
            keys,
            full_nodes,
            max_full_nodes,
        }
    }

    /// Whether `peer` presents a validator's key now (an unattested peer never does, even if
    /// the set came to hold its stand-in key).
    pub fn is_validator(&self, peer: &Peer) -> bool {
        peer.attested.attested && self.keys.contains(&peer.attested.consensus_key)
    }

    /// Whether a newly attested `peer` may join `peers`: a validator always, a full node where
    /// the network admits them and fewer than the cap are connected. (Its handshake may have
    /// raced a change of the set.)
    pub fn admits(&self, peers: &HashMap<ConnectionId, Peer>, peer: &Peer) -> Result<(), Refused> {
        if self.is_validator(peer) {
            return Ok(());
        }
        if !self.full_nodes {
            return Err(Refused::NotAValidator);
        }
        // Another connection of the same key replaces it, and takes no new place.
        let key = &peer.attested.consensus_key;
        let others: Vec<&Peer> = peers
            .values()
            .filter(|p| !self.is_validator(p) && p.attested.consensus_key != *key)
            .collect();
        if others.len() >= self.max_full_nodes {
            return Err(Refused::FullNodesFull);
        }
        // Unattested ones take at most half the places: attested full nodes (validators to
        // be, removed validators, sentries) keep room.
        let unattested = others.iter().filter(|p| !p.attested.attested).count();
        if !peer.attested.attested && unattested >= self.max_full_nodes / 2 {
            return Err(Refused::FullNodesFull);
        }
        let place = place_of(peer);
        if others.iter().filter(|p| place_of(p) == place).count() >= FULL_NODES_PER_CHIP {
            return Err(Refused::ChipFull);
        }
        Ok(())
    }

    /// Makes `keys` the admitted validators. When they changed, the connections that may no
    /// longer stay (removed validators, where full nodes are refused) leave `peers`, which
    /// closes them; their ids are returned for the engine to forget. `None`: no change.
    pub fn follow(
        &self,
        peers: &mut HashMap<ConnectionId, Peer>,
        keys: BTreeSet<[u8; 32]>,
    ) -> Option<Vec<ConnectionId>> {
        if !self.keys.replace(keys) {
            return None;
        }
        tracing::info!(
            validators = self.keys.current().len(),
            "the validator set changed: admission follows it"
        );
        if self.full_nodes {
            return Some(Vec::new());
        }
        let gone: Vec<ConnectionId> = peers
            .iter()
            .filter(|(_, p)| !self.is_validator(p))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            if let Some(p) = peers.remove(id) {
                tracing::warn!(peer = id, addr = %p.addr, validator = %crate::peers::validator_address(&p.attested.consensus_key), "no longer a validator: disconnected");
            }
        }
        Some(gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_net::VerifiedPeer;

    fn peer(key: u8) -> Peer {
        peer_on(key, key)
    }

    fn peer_on(key: u8, chip: u8) -> Peer {
        let attested = VerifiedPeer {
            not_before: 0,
            not_after: u64::MAX,
            consensus_key: [key; 32],
            attested: true,
            measurement: [0; 48],
            chip_id: [chip; 64],
            reported_tcb: Default::default(),
        };
        Peer::detached("127.0.0.1:1".parse().unwrap(), attested).0
    }

    fn keys(of: &[u8]) -> BTreeSet<[u8; 32]> {
        of.iter().map(|k| [*k; 32]).collect()
    }

    #[test]
    fn where_full_nodes_are_refused_a_removed_validator_is_disconnected() {
        let shared: ValidatorKeys = keys(&[1, 2, 3]).into_iter().collect();
        let rule = Membership::new(shared.clone(), false, 4);
        let mut peers = HashMap::from([(1, peer(1)), (2, peer(2)), (3, peer(3))]);
        assert_eq!(rule.admits(&peers, &peer(9)), Err(Refused::NotAValidator));
        assert_eq!(rule.follow(&mut peers, keys(&[1, 2, 3])), None);
        assert_eq!(rule.follow(&mut peers, keys(&[1, 3, 9])), Some(vec![2]));
        assert_eq!(peers.len(), 2);
        assert!(shared.contains(&[9; 32]) && !shared.contains(&[2; 32]));
        assert_eq!(rule.admits(&peers, &peer(9)), Ok(()));
        assert_eq!(rule.admits(&peers, &peer(2)), Err(Refused::NotAValidator));
    }

    #[test]
    fn where_full_nodes_are_admitted_a_removed_validator_stays_as_one_and_their_number_is_capped() {
        let rule = Membership::new(keys(&[1, 2]).into_iter().collect(), true, 2);
        let mut peers = HashMap::from([(1, peer(1)), (2, peer(2)), (7, peer(7))]);
        assert_eq!(rule.follow(&mut peers, keys(&[1])), Some(vec![]));
        assert_eq!(peers.len(), 3);
        // 2 and 7 are full nodes now: the cap is reached for a third, not for a validator or
        // a reconnect of one of them.
        assert_eq!(rule.admits(&peers, &peer(8)), Err(Refused::FullNodesFull));
        assert_eq!(rule.admits(&peers, &peer(7)), Ok(()));
        assert_eq!(rule.admits(&peers, &peer(1)), Ok(()));
    }

    #[test]
    fn one_chip_holds_at_most_two_full_node_places() {
        let rule = Membership::new(keys(&[1]).into_iter().collect(), true, 16);
        let mut peers = HashMap::from([(1, peer(1))]);
        peers.insert(5, peer_on(5, 9));
        assert_eq!(rule.admits(&peers, &peer_on(6, 9)), Ok(()));
        peers.insert(6, peer_on(6, 9));
        assert_eq!(rule.admits(&peers, &peer_on(7, 9)), Err(Refused::ChipFull));
        assert_eq!(rule.admits(&peers, &peer_on(7, 8)), Ok(()));
        // A validator on that chip is no full node: always room.
        assert_eq!(rule.admits(&peers, &peer_on(1, 9)), Ok(()));
    }
}
