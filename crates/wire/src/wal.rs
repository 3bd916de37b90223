//! What the engine writes to its WAL: the inputs that reached the consensus core (messages as
//! wire envelopes, timeouts, and the blocks it built as proposer), each one record.

use crate::{Envelope, Payload};
use bulwark_consensus::TimeoutKind;
use bulwark_types::tendermint_proto::v0_38 as pb;
use prost::Message;

/// A WAL record: an input that reached the consensus core.
#[derive(Clone, PartialEq, Message)]
pub struct WalRecord {
    /// A message (from a peer, or our own signed one).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub envelope: Option<Vec<u8>>,
    /// A timeout: its round...
    #[prost(uint32, optional, tag = "2")]
    pub timeout_round: Option<u32>,
    /// ...and kind ([`kind_code`]).
    #[prost(uint32, optional, tag = "3")]
    pub timeout_kind: Option<u32>,
    /// A block we built as proposer, for the round in `own_round`.
    #[prost(message, optional, tag = "4")]
    pub own_block: Option<pb::types::Block>,
    /// The round of `own_block`.
    #[prost(uint32, optional, tag = "5")]
    pub own_round: Option<u32>,
}

/// A timeout kind as the WAL writes it.
pub fn kind_code(kind: TimeoutKind) -> u32 {
    match kind {
        TimeoutKind::Propose => 1,
        TimeoutKind::Prevote => 2,
        TimeoutKind::Precommit => 3,
    }
}

/// The timeout kind a WAL code names.
pub fn kind_of(code: u32) -> Option<TimeoutKind> {
    match code {
        1 => Some(TimeoutKind::Propose),
        2 => Some(TimeoutKind::Prevote),
        3 => Some(TimeoutKind::Precommit),
        _ => None,
    }
}

/// A payload as one wire envelope's bytes (what the WAL keeps of a message).
pub fn envelope(payload: &Payload) -> Vec<u8> {
    Envelope {
        payload: Some(payload.clone()),
    }
    .encode_to_vec()
}
