//! The Bulwark validator without I/O: the [`engine::Engine`] takes peer messages, timeouts,
//! transactions and ticks and returns messages to send, timers to set and commits; around the
//! consensus core it keeps the chain state between heights, block parts, the mempool
//! (`bulwark-mempool`) and the handshake with the application. No sockets, no runtime, no clock of its own: the `bulwark`
//! binary drives it, and tests and the simulator can drive it the same way.

pub use bulwark_chain as chain;
pub use bulwark_instance as instance;
pub mod engine;
pub use bulwark_chain::handshake;
pub use bulwark_gossip::{heights, proposal, relay};
