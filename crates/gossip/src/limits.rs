//! How much the engine takes from peers and clients, per message and per tick, and how much
//! it gives a peer that lags: each a bound on what one peer (or RPC client) can make a node do
//! on its consensus thread.

use std::time::Duration;

/// Client transactions are gossiped at most this long after they arrive...
pub const TX_GOSSIP_DELAY: Duration = Duration::from_millis(2);
/// ...or as soon as this many have gathered.
pub const TX_GOSSIP_BATCH: usize = 512;

/// Most messages of the next height kept until it starts...
pub const MAX_EARLY_MESSAGES: usize = 4096;
/// ...and most bytes of them.
pub const MAX_EARLY_BYTES: usize = 32 << 20;

/// Instance claims checked per transaction message from a peer (each costs a signature check;
/// an honest peer sends its own claim alone)...
pub const MAX_CLAIMS_PER_MESSAGE: usize = 2;
/// ...and from all peers per tick (a validator set's claims arrive a few times each)...
pub const CLAIM_CHECKS_PER_TICK: u32 = 64;
/// ...and from one peer per tick.
pub const CLAIM_CHECKS_PER_PEER_TICK: u32 = 8;
/// A peer's transactions taken into the mempool per tick: each may cost the application a
/// CheckTx (a round trip to another process with an external one), on the engine's thread.
pub const PEER_TXS_PER_TICK: u32 = 4_096;
/// Transactions taken from one full-node peer per tick.
pub const FULL_NODE_TXS_PER_TICK: u32 = 64;
/// Transactions taken from all full-node peers together per tick.
pub const FULL_NODES_TXS_PER_TICK: u32 = 256;
/// `check_tx` calls from RPC clients per tick (each a CheckTx, not cached, on this thread).
pub const RPC_CHECK_TXS_PER_TICK: u32 = 256;

/// Ticks at one height after which a node asks its peers for what it missed even while its
/// rounds advance.
pub const STUCK_TICKS: u32 = 4;

/// Bytes of decided blocks sent to a lagging peer per status message (at least one block),
/// so a peer's queue holds a bounded amount of them.
pub const CATCH_UP_BYTES: usize = 16 << 20;

/// `Status` requests from a lagging peer answered per tick with where we are only, once
/// [`STATUS_ANSWERS_PER_TICK`] are spent.
pub const BUSY_ANSWERS_PER_TICK: u32 = 8;

/// `Status` requests answered per peer per tick.
pub const STATUS_ANSWERS_PER_TICK: u32 = 2;

/// Pieces of evidence checked per peer per tick (each costs a state read and signature
/// checks); honest peers send a piece once, when its height commits.
pub const PEER_EVIDENCE_CHECKS_PER_TICK: u32 = 8;

/// Evidence submissions over RPC checked per tick; more are refused as busy, so RPC clients
/// cannot keep the engine's thread verifying signatures.
pub const RPC_EVIDENCE_CHECKS_PER_TICK: u32 = 8;
