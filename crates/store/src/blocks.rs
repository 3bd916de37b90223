//! Blocks, their commits, the application's results and the chain state after each height, by
//! height (blocks and transactions also by hash). Heights are stored without gaps: block `h` is only accepted after block `h - 1`.
//! Values are the caller's encodings (protobuf in the node); the store keeps them intact.

use crate::events::{Attribute, EventTrees, IndexedTx, Posting, Scan, TxPosition};
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
    extensions: Tree,
    states: Tree,
    results: Tree,
    evidence: Tree,
    txs: Tree,
    events: EventTrees,
    /// Whether transactions and events are indexed ([`Store::with_indexes`]).
    indexing: bool,
    /// The latest height stored without indexes, under [`UNINDEXED_KEY`].
    unindexed: Tree,
    /// The latest stored height, told to whoever watches (`committed`), shared by clones.
    latest: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
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
    /// The vote extensions of the commit's precommits (empty, and not stored, where vote
    /// extensions are not enabled).
    pub extensions: &'a [u8],
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
    /// Each transaction's attributes marked for indexing (parallel to `txs`).
    pub tx_attributes: &'a [Vec<Attribute>],
    /// The block's own attributes marked for indexing (FinalizeBlock's events).
    pub block_attributes: &'a [Attribute],
}

/// Where the latest height stored without indexes is kept.
const UNINDEXED_KEY: &[u8] = b"latest";

/// A height's index writes: transactions by hash, and the event index's four trees.
type IndexWrites<'a> = (Batch, [(&'a Tree, Batch); 4]);

impl BlockStore {
    /// Opens the block store in `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let opened = BlockStore {
            store: store.clone(),
            blocks: store.tree("blocks")?,
            hashes: store.tree("block_hashes")?,
            commits: store.tree("commits")?,
            extensions: store.tree("vote_extensions")?,
            states: store.tree("states")?,
            results: store.tree("results")?,
            evidence: store.tree(EVIDENCE_TREE)?,
            txs: store.tree("tx_hashes")?,
            events: EventTrees::open(store)?,
            indexing: store.indexing,
            unindexed: store.tree("unindexed")?,
            latest: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        };
        opened
            .latest
            .send_replace(opened.latest_height()?.unwrap_or(0));
        // Indexing again after heights stored without it would leave a gap that `tx` and the
        // searches could not tell from "not committed": the host, who writes config.toml,
        // could make an attested node deny transactions it committed.
        if let (true, Some(height)) = (opened.indexing, opened.unindexed.get(UNINDEXED_KEY)?) {
            let height = height
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| store.corrupt("the unindexed height is not 8 bytes"))?;
            return Err(StoreError::Refused(format!(
                "heights up to {height} were stored without the transaction index (tx_index.indexer = \"null\"); indexing from here on would leave them out of tx and tx_search answers: keep \"null\", or sync a new node with \"kv\""
            )));
        }
        Ok(opened)
    }

    /// The latest stored height now and after every save (0 before the first block), for
    /// readers that follow the chain (subscriptions) without asking the writer.
    pub fn committed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.latest.subscribe()
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

    /// Stores a decided height atomically, and flushes. After an error the store must be
    /// opened again: the height it checks the next save against is the last one saved in
    /// full, while a failed flush may leave the write in the database.
    pub fn save(&self, decided: DecidedHeight<'_>) -> Result<(), StoreError> {
        let height = decided.height;
        // The height the last save stored (read from the database at open): this store is
        // its only writer, and a read of the database's last key here cost 1.4 % of a loaded
        // engine thread.
        let latest = *self.latest.borrow();
        if latest > 0 && height != latest + 1 {
            return Err(StoreError::Refused(format!(
                "block {height} after block {latest}"
            )));
        }
        let one = |k: &[u8], v: &[u8]| {
            let mut b = Batch::default();
            b.insert(k, v);
            b
        };
        if decided.tx_attributes.len() != decided.txs.len() {
            return Err(StoreError::Refused(format!(
                "{} transactions with attributes for {}",
                decided.txs.len(),
                decided.tx_attributes.len()
            )));
        }
        let mut evidence = Batch::default();
        for e in decided.evidence {
            evidence.insert(e.digest, e.value());
        }
        let mut extensions = Batch::default();
        if !decided.extensions.is_empty() {
            extensions.insert(key(height), decided.extensions);
        }
        let stored = [
            one(&key(height), decided.block),
            one(decided.hash, &key(height)),
            one(&key(height), decided.commit),
            one(&key(height), decided.state),
            one(&key(height), decided.results),
        ];
        let unindexed = one(UNINDEXED_KEY, &key(height));
        let mut writes: Vec<(&Tree, &Batch)> = vec![
            (&self.extensions, &extensions),
            (&self.blocks, &stored[0]),
            (&self.hashes, &stored[1]),
            (&self.commits, &stored[2]),
            (&self.states, &stored[3]),
            (&self.results, &stored[4]),
            (&self.evidence, &evidence),
        ];
        let indexes = if self.indexing {
            Some(self.index_writes(&decided)?)
        } else {
            None
        };
        if let Some((txs, events)) = &indexes {
            writes.push((&self.txs, txs));
            writes.extend(events.iter().map(|(tree, batch)| (*tree, batch)));
        } else {
            writes.push((&self.unindexed, &unindexed));
        }
        self.store.db().write_atomically(&writes)?;
        self.store.flush()?;
        self.latest.send_replace(height);
        Ok(())
    }

    /// The index writes of a decided height: its transactions by hash, and the event index.
    fn index_writes(&self, decided: &DecidedHeight<'_>) -> Result<IndexWrites<'_>, StoreError> {
        let height = decided.height;
        let indexed: Vec<([u8; 32], &[Attribute])> = decided
            .txs
            .iter()
            .zip(decided.tx_attributes)
            .map(|((hash, _), attributes)| (*hash, attributes.as_slice()))
            .collect();
        let events = self
            .events
            .writes(height, decided.block_attributes, &indexed);
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
        Ok((txs, events))
    }

    /// Whether transactions and events are indexed (`tx`, `tx_search`, `block_search`).
    pub fn indexing(&self) -> bool {
        self.indexing
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

    /// The vote extensions of the commit of block `height`, if it has them.
    pub fn extensions(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(&self.extensions, height)
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

    /// A committed transaction's hash and indexed attributes.
    pub fn indexed_tx(&self, at: TxPosition) -> Result<Option<IndexedTx>, StoreError> {
        self.events.tx(at)
    }

    /// A committed block's indexed attributes.
    pub fn indexed_block(&self, height: u64) -> Result<Option<Vec<Attribute>>, StoreError> {
        self.events.block(height)
    }

    /// Positions of the transactions committed at heights `from..=to`, in order.
    pub fn txs_between(&self, from: u64, to: u64) -> Scan<'_, TxPosition> {
        self.events.txs_between(from, to)
    }

    /// The indexed heights in `from..=to`, in order.
    pub fn blocks_between(&self, from: u64, to: u64) -> Scan<'_, u64> {
        self.events.blocks_between(from, to)
    }

    /// Positions of the transactions carrying `posting` (by value, then position).
    pub fn tx_postings(&self, posting: Posting<'_>) -> Scan<'_, TxPosition> {
        self.events.tx_postings(posting)
    }

    /// Heights of the blocks carrying `posting` (by value, then height).
    pub fn block_postings(&self, posting: Posting<'_>) -> Scan<'_, u64> {
        self.events.block_postings(posting)
    }
}
