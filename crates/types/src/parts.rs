//! Block part sets: a block's protobuf encoding cut into 64 KiB parts, each with a Merkle
//! proof against the part-set hash that the `BlockID` carries, so a node can check every part
//! as it arrives from an untrusted peer (CometBFT `types/part_set.go`).

use sha2::{Digest, Sha256};
use tendermint::block::parts::Header as PartSetHeader;
use tendermint::merkle::simple_hash_from_byte_vectors;
use tendermint::Hash;
use thiserror::Error;

type MerkleSha256 = tendermint::crypto::default::Sha256;

/// CometBFT's `BlockPartSizeBytes`.
pub const BLOCK_PART_SIZE: usize = 65_536;

/// The largest number of parts a block may have (CometBFT: 100 MiB blocks / 64 KiB).
pub const MAX_PARTS: u32 = 1_600;

/// One part with its proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Position in the set.
    pub index: u32,
    /// The part's bytes (`BLOCK_PART_SIZE`, the last one shorter).
    pub bytes: Vec<u8>,
    /// Sibling hashes from the leaf up (CometBFT `Proof.Aunts`).
    pub aunts: Vec<[u8; 32]>,
}

/// Why a part (or a part-set header) was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PartError {
    /// The header announces no parts or more than [`MAX_PARTS`].
    #[error("part set of {0} parts is outside 1..={MAX_PARTS}")]
    BadTotal(u32),
    /// The header's hash is not a SHA-256 hash.
    #[error("part set hash is not a SHA-256 hash")]
    BadHash,
    /// Index at or beyond the total.
    #[error("part index {index} is outside a set of {total}")]
    IndexOutOfRange {
        /// The index.
        index: u32,
        /// The total.
        total: u32,
    },
    /// Larger than a part may be.
    #[error("part {index} has {len} bytes, more than {BLOCK_PART_SIZE}")]
    TooLarge {
        /// The index.
        index: u32,
        /// Its length.
        len: usize,
    },
    /// The proof does not lead to the part-set hash.
    #[error("part {0} does not match the part-set hash")]
    BadProof(u32),
    /// The set already has this part.
    #[error("part {0} was already added")]
    Duplicate(u32),
    /// Not every part has arrived.
    #[error("{missing} of {total} parts are missing")]
    Incomplete {
        /// Parts still missing.
        missing: u32,
        /// All parts.
        total: u32,
    },
}

pub(crate) fn leaf_hash(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

fn inner_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (n ≥ 2): where a tree of n leaves splits.
fn split_point(n: usize) -> usize {
    n.next_power_of_two() / 2
}

/// Root of the subtree over `leaves`, and for each leaf its aunts within the subtree.
pub(crate) fn root_and_aunts(leaves: &[[u8; 32]]) -> ([u8; 32], Vec<Vec<[u8; 32]>>) {
    match leaves.len() {
        0 => (Sha256::digest([]).into(), Vec::new()),
        1 => (leaves[0], vec![Vec::new()]),
        n => {
            let k = split_point(n);
            let (left, mut left_aunts) = root_and_aunts(&leaves[..k]);
            let (right, mut right_aunts) = root_and_aunts(&leaves[k..]);
            for a in &mut left_aunts {
                a.push(right);
            }
            for a in &mut right_aunts {
                a.push(left);
            }
            left_aunts.extend(right_aunts);
            (inner_hash(&left, &right), left_aunts)
        }
    }
}

/// Root of the subtree over `leaves` (leaf hashes).
fn subtree_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split_point(n);
            inner_hash(&subtree_root(&leaves[..k]), &subtree_root(&leaves[k..]))
        }
    }
}

/// Root of the tree over `leaves`, pushing onto `aunts` those of the leaf at `index` only,
/// from its sibling up (one path: linear time, logarithmic memory).
pub(crate) fn root_and_path(
    leaves: &[[u8; 32]],
    index: usize,
    aunts: &mut Vec<[u8; 32]>,
) -> [u8; 32] {
    if leaves.len() < 2 {
        return subtree_root(leaves);
    }
    let k = split_point(leaves.len());
    let (left, right) = if index < k {
        let left = root_and_path(&leaves[..k], index, aunts);
        let right = subtree_root(&leaves[k..]);
        aunts.push(right);
        (left, right)
    } else {
        let left = subtree_root(&leaves[..k]);
        let right = root_and_path(&leaves[k..], index - k, aunts);
        aunts.push(left);
        (left, right)
    };
    inner_hash(&left, &right)
}

/// The root that `leaf` with `aunts` proves at `index` of `total` (CometBFT
/// `computeHashFromAunts`), or `None` if the proof has the wrong shape.
pub(crate) fn root_from_aunts(
    index: usize,
    total: usize,
    leaf: [u8; 32],
    aunts: &[[u8; 32]],
) -> Option<[u8; 32]> {
    match total {
        0 => None,
        1 => aunts.is_empty().then_some(leaf),
        _ => {
            let (last, rest) = aunts.split_last()?;
            let k = split_point(total);
            if index < k {
                let left = root_from_aunts(index, k, leaf, rest)?;
                Some(inner_hash(&left, last))
            } else {
                let right = root_from_aunts(index - k, total - k, leaf, rest)?;
                Some(inner_hash(last, &right))
            }
        }
    }
}

/// A complete part set made from a block's bytes.
#[derive(Clone, Debug)]
pub struct PartSet {
    header: PartSetHeader,
    parts: Vec<Part>,
}

impl PartSet {
    /// Cuts `data` into parts of [`BLOCK_PART_SIZE`] bytes with their proofs. Fails only for
    /// data larger than [`MAX_PARTS`] parts.
    pub fn from_bytes(data: &[u8]) -> Result<PartSet, PartError> {
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(BLOCK_PART_SIZE).collect()
        };
        let leaves: Vec<[u8; 32]> = chunks.iter().map(|c| leaf_hash(c)).collect();
        let (root, aunts) = root_and_aunts(&leaves);
        debug_assert_eq!(root, simple_hash_from_byte_vectors::<MerkleSha256>(&chunks));
        debug_assert!(aunts.iter().enumerate().all(|(i, a)| {
            let mut path = Vec::new();
            root_and_path(&leaves, i, &mut path) == root && path == *a
        }));
        let parts = chunks
            .iter()
            .zip(aunts)
            .enumerate()
            .map(|(i, (c, aunts))| Part {
                index: i as u32,
                bytes: c.to_vec(),
                aunts,
            })
            .collect::<Vec<_>>();
        let total = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        if total > MAX_PARTS {
            return Err(PartError::BadTotal(total));
        }
        let header = PartSetHeader::new(total, Hash::Sha256(root))
            .map_err(|_| PartError::BadTotal(total))?;
        Ok(PartSet { header, parts })
    }

    /// The header a `BlockID` carries.
    pub fn header(&self) -> PartSetHeader {
        self.header
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// How many bytes the set was made from.
    pub fn byte_len(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }

    /// The bytes the set was made from: its parts' bytes, in order.
    pub fn bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.byte_len());
        for part in &self.parts {
            bytes.extend_from_slice(&part.bytes);
        }
        bytes
    }
}

/// Checks that `part` belongs to the part set announced by `header`.
pub fn verify_part(header: &PartSetHeader, part: &Part) -> Result<(), PartError> {
    let total = header.total;
    if total == 0 || total > MAX_PARTS {
        return Err(PartError::BadTotal(total));
    }
    let Hash::Sha256(root) = header.hash else {
        return Err(PartError::BadHash);
    };
    if part.index >= total {
        return Err(PartError::IndexOutOfRange {
            index: part.index,
            total,
        });
    }
    if part.bytes.len() > BLOCK_PART_SIZE {
        return Err(PartError::TooLarge {
            index: part.index,
            len: part.bytes.len(),
        });
    }
    // A tree of `total` leaves is at most 11 levels deep; a longer proof is malformed.
    if part.aunts.len() > 32 {
        return Err(PartError::BadProof(part.index));
    }
    match root_from_aunts(
        part.index as usize,
        total as usize,
        leaf_hash(&part.bytes),
        &part.aunts,
    ) {
        Some(r) if r == root => Ok(()),
        _ => Err(PartError::BadProof(part.index)),
    }
}

/// Collects parts from untrusted peers until the block is complete.
#[derive(Clone, Debug)]
pub struct PartSetBuilder {
    header: PartSetHeader,
    parts: Vec<Option<Vec<u8>>>,
    missing: u32,
}

impl PartSetBuilder {
    /// Starts collecting the parts `header` announces.
    pub fn new(header: PartSetHeader) -> Result<Self, PartError> {
        if header.total == 0 || header.total > MAX_PARTS {
            return Err(PartError::BadTotal(header.total));
        }
        if !matches!(header.hash, Hash::Sha256(_)) {
            return Err(PartError::BadHash);
        }
        Ok(PartSetBuilder {
            header,
            parts: vec![None; header.total as usize],
            missing: header.total,
        })
    }

    /// Adds a part after checking its proof.
    pub fn add(&mut self, part: Part) -> Result<(), PartError> {
        verify_part(&self.header, &part)?;
        let slot = &mut self.parts[part.index as usize];
        if slot.is_some() {
            return Err(PartError::Duplicate(part.index));
        }
        *slot = Some(part.bytes);
        self.missing -= 1;
        Ok(())
    }

    /// Whether every part has arrived.
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// The block's bytes, once complete.
    pub fn assemble(&self) -> Result<Vec<u8>, PartError> {
        if self.missing > 0 {
            return Err(PartError::Incomplete {
                missing: self.missing,
                total: self.header.total,
            });
        }
        Ok(self.parts.iter().flatten().flatten().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn every_part_of_every_size_verifies_and_reassembles() {
        for len in [
            0,
            1,
            100,
            BLOCK_PART_SIZE,
            BLOCK_PART_SIZE + 1,
            3 * BLOCK_PART_SIZE - 7,
            5 * BLOCK_PART_SIZE,
            7 * BLOCK_PART_SIZE + 9,
        ] {
            let bytes = data(len);
            let set = PartSet::from_bytes(&bytes).unwrap();
            let expected = len.div_ceil(BLOCK_PART_SIZE).max(1);
            assert_eq!(set.header().total as usize, expected);
            let mut builder = PartSetBuilder::new(set.header()).unwrap();
            // Out of order, as peers deliver them.
            for part in set.parts().iter().rev() {
                verify_part(&set.header(), part).unwrap();
                builder.add(part.clone()).unwrap();
            }
            assert_eq!(builder.assemble().unwrap(), bytes);
            assert_eq!(set.bytes(), bytes);
        }
    }

    #[test]
    fn part_set_hash_is_the_simple_merkle_root_of_the_parts() {
        let bytes = data(3 * BLOCK_PART_SIZE + 5);
        let set = PartSet::from_bytes(&bytes).unwrap();
        let chunks: Vec<&[u8]> = bytes.chunks(BLOCK_PART_SIZE).collect();
        assert_eq!(
            set.header().hash,
            Hash::Sha256(simple_hash_from_byte_vectors::<MerkleSha256>(&chunks))
        );
    }

    #[test]
    fn tampered_parts_and_proofs_are_refused_with_a_reason() {
        let set = PartSet::from_bytes(&data(3 * BLOCK_PART_SIZE)).unwrap();
        let header = set.header();
        let mut flipped = set.parts()[1].clone();
        flipped.bytes[7] ^= 1;
        assert_eq!(verify_part(&header, &flipped), Err(PartError::BadProof(1)));
        let mut moved = set.parts()[1].clone();
        moved.index = 2;
        assert_eq!(verify_part(&header, &moved), Err(PartError::BadProof(2)));
        let mut short = set.parts()[0].clone();
        short.aunts.pop();
        assert_eq!(verify_part(&header, &short), Err(PartError::BadProof(0)));
        let mut beyond = set.parts()[0].clone();
        beyond.index = 3;
        assert_eq!(
            verify_part(&header, &beyond),
            Err(PartError::IndexOutOfRange { index: 3, total: 3 })
        );
        let mut big = set.parts()[0].clone();
        big.bytes.push(0);
        assert!(matches!(
            verify_part(&header, &big),
            Err(PartError::TooLarge { .. })
        ));
        let mut builder = PartSetBuilder::new(header).unwrap();
        builder.add(set.parts()[0].clone()).unwrap();
        assert_eq!(
            builder.add(set.parts()[0].clone()),
            Err(PartError::Duplicate(0))
        );
        assert_eq!(
            builder.assemble(),
            Err(PartError::Incomplete {
                missing: 2,
                total: 3
            })
        );
        assert_eq!(
            PartSetBuilder::new(PartSetHeader::new(MAX_PARTS + 1, header.hash).unwrap()).err(),
            Some(PartError::BadTotal(MAX_PARTS + 1))
        );
        assert_eq!(
            PartSetBuilder::new(PartSetHeader::new(0, Hash::None).unwrap()).err(),
            Some(PartError::BadTotal(0))
        );
    }
}
