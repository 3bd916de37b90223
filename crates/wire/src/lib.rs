//! The peer wire protocol, without sockets: length-prefixed frames (4-byte big-endian length,
//! then one protobuf `Envelope`). Messages reuse CometBFT's protobuf types for proposals,
//! votes, block parts, blocks and commits.
//!
//! Everything a peer sends is untrusted: a frame longer than the configured maximum, bytes that
//! do not decode, or an envelope without a message is a [`WireError`], and the node closes
//! that peer (only that peer). Decoding never panics, whatever the bytes.

pub mod preverify;
pub mod wal;

use bulwark_types::tendermint_proto::v0_38::types as pb;
use prost::{DecodeError, Message};
use thiserror::Error;

/// Why a peer's bytes were refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    /// A frame announces more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A zero-length frame.
    #[error("empty frame")]
    EmptyFrame,
    /// The frame is not a protobuf envelope.
    #[error("undecodable message: {0}")]
    Decode(String),
    /// The envelope carries no message (or one this version does not know).
    #[error("envelope without a known message")]
    Empty,
}

/// "I am at this height and round": a peer behind gets what it misses.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Status {
    /// Height.
    #[prost(uint64, tag = "1")]
    pub height: u64,
    /// Round.
    #[prost(uint32, tag = "2")]
    pub round: u32,
}

/// One part of a proposed block.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct BlockPart {
    /// Height of the block.
    #[prost(uint64, tag = "1")]
    pub height: u64,
    /// Round it was proposed in.
    #[prost(uint32, tag = "2")]
    pub round: u32,
    /// The part with its Merkle proof.
    #[prost(message, optional, tag = "3")]
    pub part: Option<pb::Part>,
}

/// Votes that together prove a quorum (a polka or a commit), relayed as a whole.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Certificate {
    /// The votes, all for the same height, round, kind and block.
    #[prost(message, repeated, tag = "1")]
    pub votes: Vec<pb::Vote>,
}

/// Mempool transactions.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Txs {
    /// The transactions.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub txs: Vec<Vec<u8>>,
}

/// A decided block with its commit, for a peer that fell behind (block sync).
#[derive(Clone, PartialEq, Message)]
pub struct DecidedBlock {
    /// The block.
    #[prost(message, optional, tag = "1")]
    pub block: Option<pb::Block>,
    /// The commit that decided it.
    #[prost(message, optional, tag = "2")]
    pub commit: Option<pb::Commit>,
    /// The extensions of the commit's precommits, from the height vote extensions are
    /// enabled at (CometBFT's block sync sends an extended commit): the block's proposer
    /// hands them to the application as PrepareProposal's `local_last_commit`.
    #[prost(message, optional, tag = "3")]
    pub extensions: Option<VoteExtensions>,
}

/// The vote extensions of one commit: one per validator of the set that signed it, in the
/// set's order; empty where the commit holds no precommit for the block.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct VoteExtensions {
    /// By set index.
    #[prost(message, repeated, tag = "1")]
    pub votes: Vec<VoteExtension>,
}

/// A vote extension and its signature.
pub type ExtensionPair = (Vec<u8>, Vec<u8>);

impl VoteExtensions {
    /// From (extension, signature) pairs by set index.
    pub fn from_pairs(pairs: &[(Vec<u8>, Vec<u8>)]) -> Self {
        VoteExtensions {
            votes: pairs
                .iter()
                .map(|(extension, signature)| VoteExtension {
                    extension: extension.clone(),
                    signature: signature.clone(),
                })
                .collect(),
        }
    }

    /// The pairs `bytes` encode (none without bytes).
    pub fn pairs_of(bytes: Option<Vec<u8>>) -> Result<Vec<ExtensionPair>, DecodeError> {
        bytes.map_or(Ok(Vec::new()), |b| {
            Ok(Self::decode(b.as_slice())?.into_pairs())
        })
    }

    /// As (extension, signature) pairs by set index.
    pub fn into_pairs(self) -> Vec<ExtensionPair> {
        self.votes
            .into_iter()
            .map(|v| (v.extension, v.signature))
            .collect()
    }
}

/// One precommit's vote extension and its signature.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct VoteExtension {
    /// What the application added to the precommit.
    #[prost(bytes = "vec", tag = "1")]
    pub extension: Vec<u8>,
    /// The validator's signature of CometBFT's `CanonicalVoteExtension`.
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
}

/// The first message on every connection: who the sender says it is (unauthenticated over
/// plain TCP; attested TLS binds it to the peer's evidence). A peer of another chain is closed.
#[derive(Clone, PartialEq, Eq, Message)]
pub struct Hello {
    /// The node id (hex of the node key's address).
    #[prost(string, tag = "1")]
    pub node_id: String,
    /// The chain it runs.
    #[prost(string, tag = "2")]
    pub chain_id: String,
    /// Its moniker.
    #[prost(string, tag = "3")]
    pub moniker: String,
    /// Where it listens for peers.
    #[prost(string, tag = "4")]
    pub listen_addr: String,
    /// Its software version.
    #[prost(string, tag = "5")]
    pub version: String,
}

/// Every message a peer can send.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Payload {
    /// A signed proposal.
    #[prost(message, tag = "1")]
    Proposal(pb::Proposal),
    /// A part of a proposed block.
    #[prost(message, tag = "2")]
    BlockPart(BlockPart),
    /// A signed vote.
    #[prost(message, tag = "3")]
    Vote(pb::Vote),
    /// A quorum certificate.
    #[prost(message, tag = "4")]
    Certificate(Certificate),
    /// Where the peer is.
    #[prost(message, tag = "5")]
    Status(Status),
    /// Transactions.
    #[prost(message, tag = "6")]
    Txs(Txs),
    /// A decided block and its commit (boxed: far larger than the other messages).
    #[prost(message, boxed, tag = "7")]
    DecidedBlock(Box<DecidedBlock>),
    /// Who the sender is (first on a connection).
    #[prost(message, tag = "8")]
    Hello(Hello),
    /// Evidence of misbehaviour (CometBFT's `Evidence`: two conflicting votes; boxed: two
    /// whole votes).
    #[prost(message, boxed, tag = "9")]
    Evidence(Box<pb::Evidence>),
}

impl Payload {
    /// The height a consensus message is for (a proposal, part, vote or certificate).
    pub fn height(&self) -> Option<u64> {
        match self {
            Payload::Proposal(p) => u64::try_from(p.height).ok(),
            Payload::BlockPart(b) => Some(b.height),
            Payload::Vote(v) => u64::try_from(v.height).ok(),
            Payload::Certificate(c) => c.votes.first().and_then(|v| u64::try_from(v.height).ok()),
            _ => None,
        }
    }
}

/// The one message type on the wire.
#[derive(Clone, PartialEq, Message)]
pub struct Envelope {
    /// The message.
    #[prost(oneof = "Payload", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    pub payload: Option<Payload>,
}

/// Encodes `payload` as one frame.
pub fn encode(payload: Payload) -> Vec<u8> {
    encode_ref(&payload)
}

/// Encodes `payload` as one frame, leaving it to the caller (to report it if it cannot go).
pub fn encode_ref(payload: &Payload) -> Vec<u8> {
    // An `Envelope` is its one oneof field, so the oneof's encoding is the envelope's.
    let body_len = payload.encoded_len();
    let mut out = Vec::with_capacity(4 + body_len);
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    payload.encode(&mut out);
    out
}

/// Reassembles frames from a byte stream and decodes them.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames above `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            max_frame_bytes,
        }
    }

    /// Adds bytes read from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or the error that must
    /// close the peer. An oversized frame is refused as soon as its length is read, before its
    /// bytes are buffered.
    pub fn next_message(&mut self) -> Result<Option<Payload>, WireError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        if len > self.max_frame_bytes {
            return Err(WireError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if len == 0 {
            return Err(WireError::EmptyFrame);
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        let envelope = Envelope::decode(&self.buffer[4..4 + len])
            .map_err(|e| WireError::Decode(e.to_string()))?;
        self.buffer.drain(..4 + len);
        envelope.payload.map(Some).ok_or(WireError::Empty)
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(h: u64) -> Payload {
        Payload::Status(Status {
            height: h,
            round: 2,
        })
    }

    #[test]
    fn messages_round_trip_through_frames_split_anywhere() {
        let msgs = vec![
            status(7),
            Payload::Txs(Txs {
                txs: vec![b"a=1".to_vec(), b"b=2".to_vec()],
            }),
            Payload::Vote(pb::Vote {
                height: 3,
                round: 1,
                ..Default::default()
            }),
            Payload::BlockPart(BlockPart {
                height: 3,
                round: 0,
                part: Some(pb::Part {
                    index: 1,
                    bytes: vec![9; 100],
                    proof: None,
                }),
            }),
        ];
        for m in &msgs {
            let envelope = Envelope {
                payload: Some(m.clone()),
            };
            assert_eq!(encode_ref(m)[4..], envelope.encode_to_vec());
        }
        let stream: Vec<u8> = msgs.iter().cloned().flat_map(encode).collect();
        for chunk in [1, 3, 7, stream.len()] {
            let mut d = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.push(piece);
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, msgs, "chunk size {chunk}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn oversized_empty_and_garbage_frames_are_errors() {
        let mut d = FrameDecoder::new(1024);
        d.push(&(5000u32).to_be_bytes());
        assert_eq!(
            d.next_message(),
            Err(WireError::FrameTooLarge {
                len: 5000,
                max: 1024
            })
        );
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_message(), Err(WireError::EmptyFrame));
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_message(), Err(WireError::Decode(_))));
        // A well-formed envelope with no message (or an unknown field only).
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 2, 0x78, 0x01]); // field 15, varint 1
        assert_eq!(d.next_message(), Err(WireError::Empty));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut d = FrameDecoder::new(4096);
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            // Short frames so that random lengths mostly fit and the protobuf decoder runs.
            let mut framed = ((bytes.len() as u32).to_be_bytes()).to_vec();
            framed.extend_from_slice(&bytes);
            d.push(&framed);
            let _ = d.next_message();
            d.push(&bytes);
            let _ = d.next_message();
        }
    }
}
