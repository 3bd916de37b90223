//! Blocks, their commits, the application's results and the chain state after each height, by
//! height (blocks and transactions also by hash). Heights are stored without gaps: block `h` is only accepted after block `h - 1`.
//! Values are the caller's encodings (protobuf in the node); the store keeps them intact.

use crate::evidence::{CommittedEvidence, TREE as EVIDENCE_TREE};
use crate::{key, Store, StoreError};
use bulwark_kv::{Batch, Tree};

/// The block store.
#[derive(Debug, Clone)]
pub struct BlockStore {
    store: Store,
    blocks: Tree,
    hashes: Tree,
    commits: Tree,
    states: Tree,
    results: Tree,
    evidence: Tree,
    txs: Tree,
}

/// Everything stored for one decided height (the caller's encodings).
#[derive(Debug, Clone, Copy)]
pub struct DecidedHeight<'a> {
    /// The height.
    pub height: u64,
    /// The block's hash (indexed).
    pub hash: &'a [u8],
    /// The block.
    pub block: &'a [u8],
    /// The commit that decided it.
    pub commit: &'a [u8],
    /// The chain state after executing it.
    pub state: &'a [u8],
    /// The application's results of executing it (FinalizeBlock).
    pub results: &'a [u8],
    /// The evidence it committed (into the evidence log, in the same write).
    pub evidence: &'a [CommittedEvidence],
    /// Each of its transactions, in order: SHA-256 and whether the application executed it
    /// successfully (code 0). Indexed by hash as CometBFT's kv indexer does: a later copy
    /// takes the entry, unless it failed and the entry is of a successful one (a replayed
    /// transfer must not make `tx` report the one that succeeded as failed).
    pub txs: &'a [([u8; 32], bool)],
}

impl BlockStore {
    /// Opens the block store in `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(BlockStore {
            store: store.clone(),
            blocks: store.tree("blocks")?,
            hashes: store.tree("block_hashes")?,
            commits: store.tree("commits")?,
            states: store.tree("states")?,
            results: store.tree("results")?,
            evidence: store.tree(EVIDENCE_TREE)?,
            txs: store.tree("tx_hashes")?,
        })
    }

    /// The highest stored height, if any.
    pub fn latest_height(&self) -> Result<Option<u64>, StoreError> {
        match self.blocks.last()? {
            None => Ok(None),
            Some((k, _)) => {
                let k: [u8; 8] = k
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.store.corrupt("block key is not 8 bytes"))?;
                Ok(Some(u64::from_be_bytes(k)))
            }
        }
    }

    /// Stores a decided height atomically, and flushes.
    pub fn save(&self, decided: DecidedHeight<'_>) -> Result<(), StoreError> {
        let height = decided.height;
        if let Some(latest) = self.latest_height()? {
            if height != latest + 1 {
                return Err(StoreError::Refused(format!(
                    "block {height} after block {latest}"
                )));
            }
        }
        let one = |k: &[u8], v: &[u8]| {
            let mut b = Batch::default();
            b.insert(k, v);
            b
        };
        let mut evidence = Batch::default();
        for e in decided.evidence {
            evidence.insert(e.digest, e.value());
        }
        let mut txs = Batch::default();
        let mut succeeded = std::collections::BTreeSet::new();
        for (index, (hash, ok)) in (0u32..).zip(decided.txs) {
            if *ok {
                succeeded.insert(hash);
            } else if succeeded.contains(hash) || self.tx_entry(hash)?.is_some_and(|e| e.2) {
                continue;
            }
            let mut at = key(height).to_vec();
            at.extend(index.to_be_bytes());
            at.push(u8::from(*ok));
            txs.insert(hash, at);
        }
        self.store.db().write_atomically(&[
            (&self.blocks, &one(&key(height), decided.block)),
            (&self.hashes, &one(decided.hash, &key(height))),
            (&self.commits, &one(&key(height), decided.commit)),
            (&self.states, &one(&key(height), decided.state)),
            (&self.results, &one(&key(height), decided.results)),
            (&self.evidence, &evidence),
            (&self.txs, &txs),
        ])?;
        self.store.flush()
    }

    fn get(&self, tree: &Tree, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(tree.get(key(height))?)
    }

    /// Block `height`.
    pub fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&self.blocks, height)
    }

    /// The commit of block `height`.
    pub fn commit(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&self.commits, height)
    }

    /// The state after block `height`.
    pub fn state(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&self.states, height)
    }

    /// The application's results of block `height`.
    pub fn results(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&self.results, height)
    }

    /// Where the transaction with SHA-256 `hash` was committed: height and index in its block.
    pub fn tx_location(&self, hash: &[u8]) -> Result<Option<(u64, u32)>, StoreError> {
        Ok(self.tx_entry(hash)?.map(|(h, i, _)| (h, i)))
    }

    /// The index entry of `hash`: height, index, and whether it succeeded.
    fn tx_entry(&self, hash: &[u8]) -> Result<Option<(u64, u32, bool)>, StoreError> {
        let Some(v) = self.txs.get(hash)? else {
            return Ok(None);
        };
        let entry = match v.as_slice() {
            [h @ .., i0, i1, i2, i3, ok] if h.len() == 8 => {
                let mut height = [0u8; 8];
                height.copy_from_slice(h);
                Some((
                    u64::from_be_bytes(height),
                    u32::from_be_bytes([*i0, *i1, *i2, *i3]),
                    *ok == 1,
                ))
            }
            _ => None,
        };
        entry
            .map(Some)
            .ok_or_else(|| self.store.corrupt("tx index value is not 13 bytes"))
    }

    /// The height of the block with `hash`.
    pub fn height_of(&self, hash: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.hashes.get(hash)? {
            None => Ok(None),
            Some(v) => {
                let v: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.store.corrupt("hash index value is not 8 bytes"))?;
                Ok(Some(u64::from_be_bytes(v)))
            }
        }
    }
}
