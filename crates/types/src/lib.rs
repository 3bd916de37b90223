//! Bulwark's chain types: CometBFT v0.38 blocks, headers, commits, votes, proposals, validator
//! sets and genesis, through the `tendermint` crate, plus what that crate leaves to its users:
//! the hashes a block producer computes ([`hashes`]), block part sets ([`parts`]), ed25519
//! signing over the canonical sign bytes ([`signing`]), the bridge to the consensus core
//! ([`convert`]), the defaults of a new genesis ([`genesis`]) and the clock block and vote
//! times are read from ([`clock`]).
//!
//! Using CometBFT's exact formats means existing light clients, RPC clients and ABCI
//! applications work with Bulwark chains unchanged; the tests check every hash against values
//! produced by a real CometBFT node.

pub mod clock;
pub mod commit;
pub mod convert;
pub mod genesis;
pub mod hashes;
pub mod parts;
pub mod signing;

pub use tendermint;
pub use tendermint_proto;

/// The CometBFT block protocol version these types encode (v0.38 is block protocol 11).
pub const BLOCK_PROTOCOL: u64 = 11;
