//! Bulwark's storage on sled: the privval's last-sign-state ([`privval`]), the consensus
//! write-ahead log ([`wal`]) and the block and state stores ([`blocks`]).
//!
//! Everything is read back with checks: a record that does not parse is reported as
//! [`StoreError::Corrupt`], never skipped, and a database sled cannot open names its path.

pub mod blocks;
pub mod privval;
pub mod wal;

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
    /// Any other error sled reports.
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

/// An open store: one sled database with one tree per concern.
#[derive(Clone, Debug)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = dir.as_ref().to_path_buf();
        // sled panics on some forms of damage instead of returning an error; a damaged store
        // must be a clear error at start, never a crash.
        // Durability points flush explicitly; a background flusher would only contend with them.
        let opened = std::panic::catch_unwind(|| {
            sled::Config::new().path(&path).flush_every_ms(None).open()
        });
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(sled::Error::Unsupported(reason))) => {
                return Err(StoreError::Corrupt {
                    path,
                    reason: format!("not a readable Bulwark store (damaged, or written by another sled version): {reason}"),
                })
            }
            Ok(Err(e)) => return Err(sled_error(&path, e)),
            Err(_) => {
                return Err(StoreError::Corrupt {
                    path,
                    reason: "the database files could not be read".into(),
                })
            }
        };
        Ok(Store { db, path })
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db
            .open_tree(name)
            .map_err(|e| sled_error(&self.path, e))
    }

    pub(crate) fn err(&self, e: sled::Error) -> StoreError {
        sled_error(&self.path, e)
    }

    pub(crate) fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Writes everything to disk (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }
}

fn sled_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("sled found damaged data at {at:?}"),
        },
        sled::Error::Io(source) => StoreError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => StoreError::Sled {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// A big-endian u64 key, so sled's order is numeric order.
pub(crate) fn key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}
