//! Proposed blocks on the wire: the proposer cuts its block into 64 KiB parts with Merkle
//! proofs; receivers collect the parts of the block a signed proposal names, from any peer, and
//! get the block once every part has arrived and checked against the part-set hash.
//!
//! Bounds, against peers that send parts for blocks nobody proposed: parts are only accepted
//! for a part-set header announced by a proposal of the current height, at most
//! [`MAX_PENDING_BLOCKS`] blocks are collected at once, and each block at most its announced
//! part count (itself at most `parts::MAX_PARTS`).

use bulwark_types::parts::{Part, PartError, PartSet, PartSetBuilder};
use bulwark_types::tendermint::block::{parts::Header as PartSetHeader, Block};
use bulwark_types::tendermint_proto::v0_38 as pb;
use prost::Message;
use std::collections::HashMap;
use thiserror::Error;

/// Blocks being collected at once (proposals of several rounds, or an equivocating proposer).
pub const MAX_PENDING_BLOCKS: usize = 8;

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
    let header = set.header();
    let parts = set
        .parts()
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
        .collect();
    Ok((header, parts))
}

/// The receivers' side: collects parts per announced part-set header.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: HashMap<PartSetHeader, PartSetBuilder>,
    /// Announcement order: when full, the oldest (an earlier round's block) makes room.
    order: std::collections::VecDeque<PartSetHeader>,
}

impl Assembler {
    /// A new, empty assembler (one per height).
    pub fn new() -> Self {
        Self::default()
    }

    /// A verified proposal announced `header`: start collecting its parts. When already
    /// collecting [`MAX_PENDING_BLOCKS`] blocks, the oldest announcement is dropped: a height
    /// that runs through many rounds must keep accepting the newest proposals.
    pub fn announce(&mut self, header: PartSetHeader) -> Result<(), AssemblyError> {
        if self.pending.contains_key(&header) {
            return Ok(());
        }
        let builder = PartSetBuilder::new(header)?;
        while self.pending.len() >= MAX_PENDING_BLOCKS {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.pending.remove(&oldest);
                }
                None => return Err(AssemblyError::TooManyBlocks),
            }
        }
        self.pending.insert(header, builder);
        self.order.push_back(header);
        Ok(())
    }

    /// Adds a part from a peer. Returns the block when this part completes it.
    pub fn add(
        &mut self,
        header: &PartSetHeader,
        part: &pb::types::Part,
    ) -> Result<Option<Block>, AssemblyError> {
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
            Err(PartError::Duplicate(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        if !builder.is_complete() {
            return Ok(None);
        }
        let bytes = builder.assemble()?;
        let raw = pb::types::Block::decode(bytes.as_slice())
            .map_err(|e| AssemblyError::NotABlock(e.to_string()))?;
        let block = Block::try_from(raw).map_err(|e| AssemblyError::NotABlock(e.to_string()))?;
        Ok(Some(block))
    }
}
