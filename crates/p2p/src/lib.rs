//! Bulwark's peer connections: attested TLS accept and dial ([`transport`]), per connection a
//! frame reader and a bounded writer ([`peers`]), all on the edge runtime with its limits
//! ([`edge`]); which connections stay as the validator set changes ([`membership`]). What
//! arrives becomes [`PeerEvent`]s on one channel for the node's driver; nothing a peer sends
//! reaches it before both sides verified each other's evidence, and bad bytes (or a panic
//! they cause) close that connection only.

pub mod descriptors;
pub mod edge;
pub mod inbox;
pub mod membership;
pub mod peers;
pub mod stats;
pub mod transport;

pub use descriptors::Descriptors;
pub use edge::{Edge, EdgeHandle, EdgeLimits};
pub use inbox::Inbox;
pub use membership::Membership;
pub use peers::{admit, admit_logged, deliver, Admission, ConnectionId, Link, Peer, PeerEvent};
pub use transport::{Transport, TransportError, TransportHandle};
