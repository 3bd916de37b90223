//! The Bulwark validator node's library: the parts of the node that are not wiring.

pub mod boot;
pub mod chain;
pub mod engine;
pub mod handshake;
pub mod home;
pub mod mempool;
pub mod proposal;
pub mod rpc;
pub mod run;
pub mod transport;
pub mod wire;
