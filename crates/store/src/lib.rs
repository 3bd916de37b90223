//! Bulwark's storage (sled on disk, or a simulated disk in the simulator, through
//! `bulwark-kv`): the privval's last-sign-state ([`privval`]), the consensus
//! write-ahead log ([`wal`]), the block and state stores ([`blocks`]) and the committed
//! evidence ([`evidence`]).
//!
//! Everything is read back with checks: a record that does not parse is reported as
//! [`StoreError::Corrupt`], never skipped, and a database sled cannot open names its path.

pub mod blocks;
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
    Sled {
        /// The store's directory.
        path: PathBuf,
        /// sled's message.
        reason: String,
    },
    /// A write that would break the store's invariants (e.g. a gap in heights).
    #[error("refused: {0}")]
    Refused(String),
}

/// An open store: one database with one tree per concern.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

impl From<KvError> for StoreError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Corrupt { path, reason } => StoreError::Corrupt { path, reason },
            KvError::Io { path, source } => StoreError::Io { path, source },
            KvError::Backend { path, reason } => StoreError::Sled { path, reason },
        }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` (sled).
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        Ok(Store { db: Db::open(dir)? })
    }

    /// Opens the store on a simulated disk (the deterministic simulator's nodes).
    pub fn on(disk: &MemDisk) -> Store {
        Store { db: Db::on(disk) }
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

    /// Writes everything to disk (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.db.flush()?)
    }
}

/// A big-endian u64 key, so the database's order is numeric order.
pub(crate) fn key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}
