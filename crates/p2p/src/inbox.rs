//! The driver's side of the connections' events: votes, proposals and blocks before the
//! gossiped transactions queued ahead of them, without starving the transactions.

use crate::peers::PeerEvent;
use tokio::sync::mpsc;

/// Consensus messages in a row taken before gossiped transactions waiting behind them get
/// a turn: a peer that floods votes slows the mempool, never stops it.
pub const CONSENSUS_STREAK: u32 = 32;

/// Where the connections' events arrive: one channel for connection events and consensus
/// messages, one for gossiped transaction batches (each connection sends on both, see
/// [`crate::Link`]).
#[derive(Debug)]
pub struct Inbox {
    events: mpsc::Receiver<PeerEvent>,
    transactions: mpsc::Receiver<PeerEvent>,
    streak: u32,
}

impl Inbox {
    /// An inbox holding up to `events` connection events and consensus messages and
    /// `transactions` batches; the senders go into a [`crate::Link`].
    pub fn channels(
        events: usize,
        transactions: usize,
    ) -> (mpsc::Sender<PeerEvent>, mpsc::Sender<PeerEvent>, Inbox) {
        let (events_tx, events) = mpsc::channel(events);
        let (transactions_tx, transactions) = mpsc::channel(transactions);
        let inbox = Inbox {
            events,
            transactions,
            streak: 0,
        };
        (events_tx, transactions_tx, inbox)
    }

    /// The next event: connections, votes, proposals and blocks before gossiped transactions,
    /// so a height's messages do not wait behind CheckTx of the batches queued ahead of them,
    /// but at most [`CONSENSUS_STREAK`] in a row. `None` once the connections are gone.
    /// Cancel-safe: an event is taken only when it is returned.
    ///
    /// A batch may so overtake its connection's `Connected` (on the transactions' turn) or
    /// come after its `Disconnected`: the driver drops it as it drops every message of a
    /// connection it does not hold. Gossip is best effort; the transactions stay in the
    /// sender's mempool, and the sender proposes them.
    pub async fn next(&mut self) -> Option<PeerEvent> {
        if self.streak >= CONSENSUS_STREAK {
            self.streak = 0;
            if let Ok(event) = self.transactions.try_recv() {
                return Some(event);
            }
        }
        tokio::select! {
            biased;
            event = self.events.recv() => {
                self.streak += 1;
                event
            }
            Some(event) = self.transactions.recv() => {
                self.streak = 0;
                Some(event)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_wire::{self as wire, Payload};

    #[test]
    fn votes_come_before_the_transactions_queued_ahead_of_them_but_never_starve_them() {
        let (events_tx, transactions_tx, mut inbox) = Inbox::channels(64, 64);
        let txs = |n: u8| PeerEvent::Message(1, Payload::Txs(wire::Txs { txs: vec![vec![n]] }));
        let status =
            |height| PeerEvent::Message(1, Payload::Status(wire::Status { height, round: 0 }));
        for n in 0..2 {
            transactions_tx.try_send(txs(n)).unwrap();
        }
        let statuses = u64::from(CONSENSUS_STREAK) + 8;
        for height in 0..statuses {
            events_tx.try_send(status(height)).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut order = Vec::new();
        rt.block_on(async {
            for _ in 0..statuses + 2 {
                order.push(match inbox.next().await {
                    Some(PeerEvent::Message(_, Payload::Status(s))) => format!("s{}", s.height),
                    Some(PeerEvent::Message(_, Payload::Txs(t))) => format!("t{}", t.txs[0][0]),
                    other => panic!("unexpected {other:?}"),
                });
            }
        });
        let streak = CONSENSUS_STREAK as usize;
        let mut expected: Vec<String> = (0..streak).map(|h| format!("s{h}")).collect();
        expected.push("t0".into());
        expected.extend((streak..streak + 8).map(|h| format!("s{h}")));
        expected.push("t1".into());
        assert_eq!(order, expected);
        // The connections gone: the driver hears it.
        drop((events_tx, transactions_tx));
        assert!(rt.block_on(inbox.next()).is_none());
    }
}
