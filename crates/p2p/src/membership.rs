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

    /// Whether `peer` presents a validator's key now.
    pub fn is_validator(&self, peer: &Peer) -> bool {
        self.keys.contains(&peer.attested.consensus_key)
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
        let others = peers
            .values()
            .filter(|p| !self.is_validator(p) && p.attested.consensus_key != *key)
            .count();
        if others >= self.max_full_nodes {
            return Err(Refused::FullNodesFull);
        }
        Ok(())
    }

    /// Makes `keys` the admitted validators. When they changed, the connections that may no
    /// longer stay (removed validators, where full nodes are refused) leave `peers`, which
    /// closes them; their ids are returned for the engine to forget.
    pub fn follow(
        &self,
        peers: &mut HashMap<ConnectionId, Peer>,
        keys: BTreeSet<[u8; 32]>,
    ) -> Vec<ConnectionId> {
        if !self.keys.replace(keys) {
            return Vec::new();
        }
        tracing::info!(
            validators = self.keys.current().len(),
            "the validator set changed: admission follows it"
        );
        if self.full_nodes {
            return Vec::new();
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
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_net::VerifiedPeer;

    fn peer(key: u8) -> Peer {
        let attested = VerifiedPeer {
            not_before: 0,
            not_after: u64::MAX,
            consensus_key: [key; 32],
            measurement: [0; 48],
            chip_id: [0; 64],
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
        assert!(rule.follow(&mut peers, keys(&[1, 2, 3])).is_empty());
        assert_eq!(rule.follow(&mut peers, keys(&[1, 3, 9])), vec![2]);
        assert_eq!(peers.len(), 2);
        assert!(shared.contains(&[9; 32]) && !shared.contains(&[2; 32]));
        assert_eq!(rule.admits(&peers, &peer(9)), Ok(()));
        assert_eq!(rule.admits(&peers, &peer(2)), Err(Refused::NotAValidator));
    }

    #[test]
    fn where_full_nodes_are_admitted_a_removed_validator_stays_as_one_and_their_number_is_capped() {
        let rule = Membership::new(keys(&[1, 2]).into_iter().collect(), true, 2);
        let mut peers = HashMap::from([(1, peer(1)), (2, peer(2)), (7, peer(7))]);
        assert!(rule.follow(&mut peers, keys(&[1])).is_empty());
        assert_eq!(peers.len(), 3);
        // 2 and 7 are full nodes now: the cap is reached for a third, not for a validator or
        // a reconnect of one of them.
        assert_eq!(rule.admits(&peers, &peer(8)), Err(Refused::FullNodesFull));
        assert_eq!(rule.admits(&peers, &peer(7)), Ok(()));
        assert_eq!(rule.admits(&peers, &peer(1)), Ok(()));
    }
}
