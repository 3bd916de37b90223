//! The mempool: transactions waiting for a block. Admission asks the application (CheckTx);
//! limits bound it by count, total bytes and per-tx bytes; a bounded cache of recently seen tx
//! hashes stops the same tx from being checked and gossiped again and again; after each commit
//! the block's txs leave and the rest are rechecked against the new state.

use bulwark_app::{AppError, Application};
use bulwark_types::tendermint::abci::request::{CheckTx, CheckTxKind};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use thiserror::Error;

/// Limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub max_txs: usize,
    /// Most bytes held (sum of tx sizes).
    pub max_bytes: usize,
    /// Largest single transaction.
    pub max_tx_bytes: usize,
    /// How many recent tx hashes are remembered to refuse repeats.
    pub cache_size: usize,
}

impl Default for MempoolConfig {
    /// CometBFT's defaults.
    fn default() -> Self {
        MempoolConfig {
            max_txs: 5_000,
            max_bytes: 1 << 30,
            max_tx_bytes: 1 << 20,
            cache_size: 10_000,
        }
    }
}

/// Why a transaction was not admitted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AddError {
    /// Larger than `max_tx_bytes`.
    #[error("transaction of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Empty transactions are refused.
    #[error("empty transaction")]
    Empty,
    /// The mempool is at its count or byte limit.
    #[error("mempool is full ({txs} txs, {bytes} bytes)")]
    Full {
        /// Transactions held.
        txs: usize,
        /// Bytes held.
        bytes: usize,
    },
    /// Seen recently (in the mempool, or committed, or rejected).
    #[error("transaction already seen")]
    AlreadySeen,
    /// The application's CheckTx refused it.
    #[error("rejected by the application (code {code}): {log}")]
    Rejected {
        /// CheckTx code.
        code: u32,
        /// CheckTx log.
        log: String,
    },
    /// The application failed to answer CheckTx: the node cannot go on (see
    /// `bulwark_app::socket`).
    #[error("the application failed: {0}")]
    App(String),
}

/// SHA-256 of a transaction: its id in CometBFT.
pub fn tx_hash(tx: &[u8]) -> [u8; 32] {
    Sha256::digest(tx).into()
}

#[derive(Debug, Default)]
struct SeenCache {
    order: VecDeque<[u8; 32]>,
    set: HashSet<[u8; 32]>,
    capacity: usize,
}

impl SeenCache {
    fn insert(&mut self, h: [u8; 32]) {
        if self.capacity == 0 || !self.set.insert(h) {
            return;
        }
        self.order.push_back(h);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, h: &[u8; 32]) -> bool {
        self.set.contains(h)
    }

    /// Forgets `h`. Its slot in `order` stays until it ages out (the cache is best-effort: a
    /// hash forgotten and seen again may age out early).
    fn remove(&mut self, h: &[u8; 32]) {
        self.set.remove(h);
    }
}

/// The mempool.
#[derive(Debug)]
pub struct Mempool {
    config: MempoolConfig,
    /// Arrival order; may hold hashes already removed from `txs` until the next compaction.
    order: VecDeque<[u8; 32]>,
    txs: HashMap<[u8; 32], Bytes>,
    bytes: usize,
    seen: SeenCache,
}

impl Mempool {
    /// An empty mempool.
    pub fn new(config: MempoolConfig) -> Self {
        let seen = SeenCache {
            capacity: config.cache_size,
            ..SeenCache::default()
        };
        Mempool {
            config,
            order: VecDeque::new(),
            txs: HashMap::new(),
            bytes: 0,
            seen,
        }
    }

    /// Transactions held.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the tx with this hash is waiting.
    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.txs.contains_key(hash)
    }

    /// Admits `tx` if it fits, is new and the application accepts it. Returns its hash.
    pub fn add(&mut self, tx: Bytes, app: &dyn Application) -> Result<[u8; 32], AddError> {
        if tx.is_empty() {
            return Err(AddError::Empty);
        }
        if tx.len() > self.config.max_tx_bytes {
            return Err(AddError::TooLarge {
                size: tx.len(),
                max: self.config.max_tx_bytes,
            });
        }
        let hash = tx_hash(&tx);
        if self.seen.contains(&hash) || self.txs.contains_key(&hash) {
            return Err(AddError::AlreadySeen);
        }
        if self.txs.len() >= self.config.max_txs || self.bytes + tx.len() > self.config.max_bytes {
            return Err(AddError::Full {
                txs: self.txs.len(),
                bytes: self.bytes,
            });
        }
        // Remembered before CheckTx so a rejected tx is not checked again for every peer that
        // relays it.
        self.seen.insert(hash);
        let answer = match app.check_tx(CheckTx {
            tx: tx.clone(),
            kind: CheckTxKind::New,
        }) {
            Ok(answer) => answer,
            Err(e) => {
                self.seen.remove(&hash);
                return Err(AddError::App(e.to_string()));
            }
        };
        if !answer.code.is_ok() {
            return Err(AddError::Rejected {
                code: answer.code.value(),
                log: answer.log,
            });
        }
        self.bytes += tx.len();
        self.txs.insert(hash, tx);
        self.order.push_back(hash);
        Ok(hash)
    }

    /// Transactions in arrival order, up to `max_bytes` in total (negative: no limit), for
    /// PrepareProposal.
    pub fn reap(&self, max_bytes: i64) -> Vec<Bytes> {
        let mut budget = if max_bytes < 0 {
            usize::MAX
        } else {
            max_bytes as usize
        };
        let mut out = Vec::new();
        for h in &self.order {
            let Some(tx) = self.txs.get(h) else { continue };
            if tx.len() > budget {
                break;
            }
            budget -= tx.len();
            out.push(tx.clone());
        }
        out
    }

    /// After a block is committed: its txs, given by their [`tx_hash`]es (the block store
    /// computed them already), leave and stay in the seen cache, and the rest are rechecked
    /// against the new state; those the application now refuses leave too. An application
    /// that fails to answer a recheck is an error the node stops on.
    pub fn update(
        &mut self,
        committed: &[[u8; 32]],
        app: &dyn Application,
    ) -> Result<(), AppError> {
        for h in committed {
            self.seen.insert(*h);
            self.remove(h);
        }
        self.order.retain(|h| self.txs.contains_key(h));
        let waiting: Vec<[u8; 32]> = self.order.iter().copied().collect();
        for h in waiting {
            let Some(tx) = self.txs.get(&h).cloned() else {
                continue;
            };
            let answer = app.check_tx(CheckTx {
                tx,
                kind: CheckTxKind::Recheck,
            })?;
            if !answer.code.is_ok() {
                self.remove(&h);
                // A tx that is invalid now may become valid later; let it be resubmitted.
                self.seen.remove(&h);
            }
        }
        self.order.retain(|h| self.txs.contains_key(h));
        Ok(())
    }

    fn remove(&mut self, h: &[u8; 32]) {
        if let Some(tx) = self.txs.remove(h) {
            self.bytes -= tx.len();
        }
    }
}
