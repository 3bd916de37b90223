//! Bulwark's storage (fjall on disk, or a simulated disk in the simulator, through
//! `bulwark-kv`): the privval's last-sign-state ([`privval`]), the consensus
//! write-ahead log ([`wal`]), the block and state stores ([`blocks`]) and the committed
//! evidence ([`evidence`]).
//!
//! Everything is read back with checks: a record that does not parse, or whose MAC under the
//! store's key ([`Store::with_mac_key`]) does not verify, is reported as [`StoreError::Corrupt`]
//! naming the store, never skipped or replayed, and a database that cannot be opened names its path.

/// Table files each database keeps open at most.
pub use bulwark_kv::MAX_CACHED_FILES;
pub mod blocks;
pub mod events;
pub mod evidence;
pub mod privval;
pub mod wal;

use bulwark_kv::{Db, KvError, MemDisk, Tree};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Storage failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be opened or read because its files are damaged.
    #[error("the store at {path} is corrupt: {reason}")]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A file-system error.
    #[error("the store at {path}: {source}")]
    Io {
        /// The store's directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Any other error the database reports.
    #[error("the store at {path}: {reason}")]
    Backend {
        /// The store's directory.
        path: PathBuf,
        /// the database's message.
        reason: String,
    },
    /// A write that would break the store's invariants (e.g. a gap in heights).
    #[error("refused: {0}")]
    Refused(String),
}

/// An open store: one database with one tree per concern.
#[derive(Clone)]
pub struct Store {
    db: Db,
    mac_key: [u8; 32],
    /// Whether its block store indexes transactions and events.
    indexing: bool,
}

// The MAC key never appears in logs.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

/// The length of a record's MAC tag in the WAL.
pub const WAL_TAG: usize = 16;

/// HMAC-SHA-256 under `key` over the length-prefixed `parts`.
pub(crate) fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::Mac;
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for part in parts {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m.finalize().into_bytes().into()
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Corrupt { path, reason } => StoreError::Corrupt { path, reason },
            KvError::Io { path, source } => StoreError::Io { path, source },
            KvError::Backend { path, reason } => StoreError::Backend { path, reason },
            e @ KvError::KeyTooLong { .. } => StoreError::Refused(e.to_string()),
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` (fjall, through `bulwark-kv`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::open(dir)?,
            mac_key: [0; 32],
            indexing: true,
        })
    }

    /// Opens the store on a simulated disk (the deterministic simulator's nodes).
    pub fn on(disk: &MemDisk) -> Store {
        Store {
            db: Db::on(disk),
            mac_key: [0; 32],
            indexing: true,
        }
    }

    /// The store with WAL records and the last-sign-state authenticated under `key`
    /// (HMAC-SHA-256): the node derives it from its sealed identity, so whoever holds only the
    /// disk cannot write a record the node accepts. Without it the key is all zero, which
    /// detects damage but not forgery (the simulator's stores).
    pub fn with_mac_key(mut self, key: [u8; 32]) -> Store {
        self.mac_key = key;
        self
    }

    /// The store with a block store that indexes transactions and events, or neither
    /// (config.toml `tx_index.indexer = "null"`).
    pub fn with_indexes(mut self, indexing: bool) -> Store {
        self.indexing = indexing;
        self
    }

    pub(crate) fn mac_key(&self) -> &[u8; 32] {
        &self.mac_key
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        self.db.path()
    }

    /// The database under it.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn tree(&self, name: &str) -> Result<Tree, StoreError> {
        Ok(self.db.tree(name)?)
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path().to_path_buf(),
            reason: reason.into(),
        }
    }

    /// Writes everything to disk ([`bulwark_kv::Db::flush`]: the journal's `fdatasync`).
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.db.flush()?)
    }
}

/// A big-endian u64 key, so the database's order is numeric order.
pub(crate) fn key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}
