//! Proposed blocks on the wire: the proposer cuts its block into 64 KiB parts with Merkle
//! proofs; receivers collect the parts of the block a signed proposal names, from any peer, and
//! get the block once every part has arrived and checked against the part-set hash.
//!
//! Bounds, against peers that send parts for blocks nobody proposed: parts are only accepted
//! for a part-set header announced by a proposal of the current height, at most
//! [`MAX_PENDING_BLOCKS`] blocks are collected at once, and each block at most its announced
//! part count (itself at most `parts::MAX_PARTS`). When full, only the block of a past round
//! makes room: a validator that floods signed proposals for future rounds cannot push out the
//! block of the round being decided (review H1).

use bulwark_types::parts::{Part, PartError, PartSet, PartSetBuilder};
use bulwark_types::tendermint::block::{parts::Header as PartSetHeader, Block};
use bulwark_types::tendermint_proto::v0_38 as pb;
use prost::Message;
use std::collections::HashMap;
use thiserror::Error;

/// Blocks being collected at once (proposals of several rounds, or an equivocating proposer).
pub const MAX_PENDING_BLOCKS: usize = 12;

/// What a part did.
#[derive(Debug, PartialEq)]
pub enum PartAdded {
    /// A new part; the block is not complete yet.
    New,
    /// This part arrived before (relayed by several peers): nothing new.
    Duplicate,
    /// The last missing part: the block.
    Complete(Box<Block>),
}

/// Why a part or a block was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AssemblyError {
    /// No proposal announced this part set.
    #[error("part for a block no proposal announced")]
    Unannounced,
    /// Too many blocks being collected.
    #[error("already collecting {MAX_PENDING_BLOCKS} blocks")]
    TooManyBlocks,
    /// The part itself is bad.
    #[error(transparent)]
    Part(#[from] PartError),
    /// All parts arrived but they do not decode to a block.
    #[error("the assembled bytes are not a block: {0}")]
    NotABlock(String),
}

/// The proposer's side: the wire parts of `block`.
pub fn block_to_parts(block: &Block) -> Result<(PartSetHeader, Vec<pb::types::Part>), PartError> {
    let raw = pb::types::Block::from(block.clone()).encode_to_vec();
    let set = PartSet::from_bytes(&raw)?;
    Ok((set.header(), wire_parts(&set)))
}

/// The wire parts of a part set made already (see [`block_to_parts`]).
pub fn wire_parts(set: &PartSet) -> Vec<pb::types::Part> {
    let header = set.header();
    set.parts()
        .iter()
        .map(|p| pb::types::Part {
            index: p.index,
            bytes: p.bytes.clone(),
            proof: Some(pb::crypto::Proof {
                total: i64::from(header.total),
                index: i64::from(p.index),
                leaf_hash: Vec::new(),
                aunts: p.aunts.iter().map(|a| a.to_vec()).collect(),
            }),
        })
        .collect()
}

/// The receivers' side: collects parts per announced part-set header.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: HashMap<PartSetHeader, PartSetBuilder>,
    /// The round of each announcement, in announcement order.
    order: Vec<(u32, PartSetHeader)>,
}

impl Assembler {
    /// A new, empty assembler (one per height).
    pub fn new() -> Self {
        Self::default()
    }

    /// How many blocks it is collecting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether it collects none.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A verified proposal of `round` announced `header` while round `current` is in progress:
    /// start collecting its parts. When already collecting [`MAX_PENDING_BLOCKS`] blocks, the
    /// one of the lowest round (the oldest of them) is dropped if that round is past;
    /// otherwise `header` is refused.
    pub fn announce(
        &mut self,
        header: PartSetHeader,
        round: u32,
        current: u32,
    ) -> Result<(), AssemblyError> {
        if self.pending.contains_key(&header) {
            return Ok(());
        }
        let builder = PartSetBuilder::new(header)?;
        while self.pending.len() >= MAX_PENDING_BLOCKS {
            let lowest = self
                .order
                .iter()
                .enumerate()
                .min_by_key(|(i, (r, _))| (*r, *i))
                .map(|(i, (r, h))| (i, *r, *h));
            match lowest {
                Some((i, r, h)) if r < current && r < round => {
                    self.order.remove(i);
                    self.pending.remove(&h);
                }
                _ => return Err(AssemblyError::TooManyBlocks),
            }
        }
        self.pending.insert(header, builder);
        self.order.push((round, header));
        Ok(())
    }

    /// Adds a part from a peer. Returns the block when this part completes it.
    pub fn add(
        &mut self,
        header: &PartSetHeader,
        part: &pb::types::Part,
    ) -> Result<PartAdded, AssemblyError> {
        let builder = self
            .pending
            .get_mut(header)
            .ok_or(AssemblyError::Unannounced)?;
        let aunts = part
            .proof
            .as_ref()
            .map(|p| {
                p.aunts
                    .iter()
                    .map(|a| {
                        <[u8; 32]>::try_from(a.as_slice())
                            .map_err(|_| PartError::BadProof(part.index))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        match builder.add(Part {
            index: part.index,
            bytes: part.bytes.clone(),
            aunts,
        }) {
            Ok(()) => {}
            // A part relayed by several peers arrives several times: not an error.
            Err(PartError::Duplicate(_)) => return Ok(PartAdded::Duplicate),
            Err(e) => return Err(e.into()),
        }
        if !builder.is_complete() {
            return Ok(PartAdded::New);
        }
        let bytes = builder.assemble()?;
        let raw = pb::types::Block::decode(bytes.as_slice())
            .map_err(|e| AssemblyError::NotABlock(e.to_string()))?;
        let block = Block::try_from(raw).map_err(|e| AssemblyError::NotABlock(e.to_string()))?;
        Ok(PartAdded::Complete(Box::new(block)))
    }
}
