//! Blocks, their commits and the chain state after each height, by height (and blocks by
//! hash). Heights are stored without gaps: block `h` is only accepted after block `h - 1`.
//! Values are the caller's encodings (protobuf in the node); the store keeps them intact.

use crate::{key, Store, StoreError};

/// The block store.
#[derive(Debug, Clone)]
pub struct BlockStore {
    store: Store,
    blocks: sled::Tree,
    hashes: sled::Tree,
    commits: sled::Tree,
    states: sled::Tree,
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
        })
    }

    /// The highest stored height, if any.
    pub fn latest_height(&self) -> Result<Option<u64>, StoreError> {
        match self.blocks.last().map_err(|e| self.store.err(e))? {
            None => Ok(None),
            Some((k, _)) => {
                let k: [u8; 8] = k
                    .as_ref()
                    .try_into()
                    .map_err(|_| self.store.corrupt("block key is not 8 bytes"))?;
                Ok(Some(u64::from_be_bytes(k)))
            }
        }
    }

    /// Stores block `height` (with its hash), the commit that decided it and the state after
    /// executing it, atomically, and flushes.
    pub fn save(
        &self,
        height: u64,
        hash: &[u8],
        block: &[u8],
        commit: &[u8],
        state: &[u8],
    ) -> Result<(), StoreError> {
        if let Some(latest) = self.latest_height()? {
            if height != latest + 1 {
                return Err(StoreError::Refused(format!(
                    "block {height} after block {latest}"
                )));
            }
        }
        use sled::Transactional;
        (&self.blocks, &self.hashes, &self.commits, &self.states)
            .transaction(|(b, h, c, s)| {
                b.insert(&key(height), block)?;
                h.insert(hash, &key(height))?;
                c.insert(&key(height), commit)?;
                s.insert(&key(height), state)?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => self.store.err(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Refused("transaction aborted".into())
                }
            })?;
        self.store.flush()
    }

    fn get(&self, tree: &sled::Tree, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(tree
            .get(key(height))
            .map_err(|e| self.store.err(e))?
            .map(|v| v.to_vec()))
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

    /// The height of the block with `hash`.
    pub fn height_of(&self, hash: &[u8]) -> Result<Option<u64>, StoreError> {
        match self.hashes.get(hash).map_err(|e| self.store.err(e))? {
            None => Ok(None),
            Some(v) => {
                let v: [u8; 8] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| self.store.corrupt("hash index value is not 8 bytes"))?;
                Ok(Some(u64::from_be_bytes(v)))
            }
        }
    }
}
