//! Bulwark's peer connections: attested TLS accept and dial ([`transport`]), and per
//! connection a frame reader and a bounded writer ([`peers`]). What arrives becomes
//! [`PeerEvent`]s on one channel for the node's driver; nothing a peer sends reaches it before
//! both sides verified each other's evidence, and bad bytes close that connection only.

pub mod peers;
pub mod transport;

pub use peers::{ConnectionId, Link, Peer, PeerEvent};
pub use transport::{Transport, TransportError, TransportHandle};
