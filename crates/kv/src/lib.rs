//! The key-value databases under Bulwark's stores and its built-in application: named trees of
//! byte keys and values, batches applied atomically across trees, and an explicit flush as the
//! only durability point.
//!
//! Two backends behind one API:
//! - **sled** on disk, what a node runs. Every named tree is a keyspace of sled's one default
//!   tree (its keys prefixed by the tree's length-prefixed name), so that a write across trees is
//!   one sled batch: atomic without a sled transaction, which costs several times as much (a
//!   read of every key it writes, and a commit under locks). A database written with one sled
//!   tree per name, as earlier versions did, is moved into keyspaces when it is opened;
//! - **a simulated disk** in memory ([`MemDisk`]), what the deterministic simulator runs. It keeps
//!   what was flushed apart from what was only written, so a simulated crash
//!   ([`MemDisk::crash`]) loses everything after the last flush point (or any prefix of it, as a
//!   torn write would), exactly the storage fault a power cut or a killed VM causes. A disk can
//!   also be copied ([`MemDisk::copy`]): rolled back or cloned by a hostile host.
//!
//! Everything read back is the caller's to check; a database sled cannot open is a
//! [`KvError`] naming its path, never a panic.

mod memory;

pub use memory::MemDisk;

use memory::MemDb;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the database failed.
#[derive(Debug, Error)]
pub enum KvError {
    /// The database's files are damaged.
    #[error("the database at {path} is corrupt: {reason}")]
    Corrupt {
        /// The database's directory.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// A file-system error.
    #[error("the database at {path}: {source}")]
    Io {
        /// The database's directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Anything else the backend reports (for the simulated disk: a handle used after a crash).
    #[error("the database at {path}: {reason}")]
    Backend {
        /// The database's directory.
        path: PathBuf,
        /// The backend's message.
        reason: String,
    },
}

/// An open database.
#[derive(Clone, Debug)]
pub struct Db {
    backend: DbBackend,
    path: PathBuf,
}

#[derive(Clone, Debug)]
enum DbBackend {
    Sled(sled::Db),
    Memory(MemDb),
}

/// One named tree of a [`Db`].
#[derive(Clone, Debug)]
pub struct Tree {
    backend: TreeBackend,
    path: PathBuf,
}

#[derive(Clone, Debug)]
enum TreeBackend {
    /// sled's default tree, and the prefix of this tree's keyspace in it.
    Sled {
        tree: sled::Tree,
        prefix: Vec<u8>,
    },
    Memory {
        db: MemDb,
        name: String,
    },
}

/// The prefix of tree `name`'s keyspace: its length, then its bytes. No prefix is another's
/// prefix (equal lengths differ within, unequal ones at the first byte).
fn keyspace(name: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(name.len()).ok()?;
    let mut prefix = vec![len];
    prefix.extend(name.as_bytes());
    Some(prefix)
}

/// The least key greater than every key that starts with `prefix`, if any (a scan's end).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn prefixed(prefix: &[u8], key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + key.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(key);
    k
}

/// sled's bounds for the keys of keyspace `prefix` with `start <= key < end` (to the
/// keyspace's last key if `end` is `None`).
fn sled_bounds(
    prefix: &[u8],
    start: &[u8],
    end: Option<&[u8]>,
) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let upper = match end {
        Some(e) => Bound::Excluded(prefixed(prefix, e)),
        None => prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded),
    };
    (Bound::Included(prefixed(prefix, start)), upper)
}

/// The name sled gives its default tree (never a keyspace's old tree).
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

/// Entries, and about how many bytes, moved per step when an old database's trees move into
/// keyspaces (values can be whole blocks: the step is bounded by bytes too).
const MIGRATION_STEP: usize = 4096;
const MIGRATION_STEP_BYTES: usize = 16 << 20;

/// The sled tree that marks a database laid out in keyspaces.
const LAYOUT_TREE: &[u8] = b"__bulwark_layout";

/// Writes applied together: inserts and removals, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    /// Whether it holds no write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds its writes to `out`, each key under `prefix`.
    fn add_to_sled(&self, prefix: &[u8], out: &mut sled::Batch) {
        for (k, v) in &self.ops {
            let key = prefixed(prefix, k);
            match v {
                Some(v) => out.insert(key, v.as_slice()),
                None => out.remove(key),
            }
        }
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

fn sled_error(path: &Path, e: sled::Error) -> KvError {
    match e {
        sled::Error::Corruption { at, .. } => KvError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("sled found damaged data at {at:?}"),
        },
        sled::Error::Unsupported(reason) => KvError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "not a readable database (damaged, or written by another sled version): {reason}"
            ),
        },
        sled::Error::Io(source) => KvError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => KvError::Backend {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// How long opening waits for a lock held by a database this process is still closing.
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl Db {
    /// Opens (or creates) the sled database in `dir`. Durability points flush explicitly, so
    /// there is no background flusher.
    pub fn open(dir: impl AsRef<Path>) -> Result<Db, KvError> {
        let path = dir.as_ref().to_path_buf();
        // sled panics on some forms of damage instead of returning an error; a damaged database
        // must be a clear error at start, never a crash.
        let open_once = || {
            std::panic::catch_unwind(|| sled::Config::new().path(&path).flush_every_ms(None).open())
        };
        // A database this process closed a moment ago keeps its lock until sled's shared I/O
        // threads have finished with it (longer when another database keeps them busy):
        // wait for that, a bounded time, rather than fail.
        let patience = std::time::Instant::now() + LOCK_PATIENCE;
        let mut opened = open_once();
        while matches!(&opened, Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock"))
            && std::time::Instant::now() < patience
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            opened = open_once();
        }
        match opened {
            Ok(Ok(db)) => {
                // Like opening, moving old trees reads damaged data sled may panic on. After
                // a panic the handle is dropped unused, so no broken state is observed.
                let moving = std::panic::AssertUnwindSafe(|| into_keyspaces(&db));
                match std::panic::catch_unwind(moving) {
                    Ok(moved) => moved.map_err(|e| sled_error(&path, e))?,
                    Err(_) => {
                        return Err(KvError::Corrupt {
                            path,
                            reason: "the database files could not be read".into(),
                        })
                    }
                }
                Ok(Db {
                    backend: DbBackend::Sled(db),
                    path,
                })
            }
            Ok(Err(e)) => Err(sled_error(&path, e)),
            Err(_) => Err(KvError::Corrupt {
                path,
                reason: "the database files could not be read".into(),
            }),
        }
    }

    /// Opens the database on a simulated disk: what was flushed there before its last crash,
    /// and whatever was written since.
    pub fn on(disk: &MemDisk) -> Db {
        Db {
            path: PathBuf::from(format!("(simulated disk {})", disk.name())),
            backend: DbBackend::Memory(disk.open()),
        }
    }

    /// The database's directory (or the simulated disk's name).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (or creates) the tree `name` (at most 255 bytes).
    pub fn tree(&self, name: &str) -> Result<Tree, KvError> {
        let backend = match &self.backend {
            DbBackend::Sled(db) => TreeBackend::Sled {
                tree: (**db).clone(),
                prefix: keyspace(name).ok_or_else(|| KvError::Backend {
                    path: self.path.clone(),
                    reason: format!("a tree name of {} bytes (at most 255)", name.len()),
                })?,
            },
            DbBackend::Memory(db) => {
                db.check(&self.path)?;
                TreeBackend::Memory {
                    db: db.clone(),
                    name: name.to_string(),
                }
            }
        };
        Ok(Tree {
            backend,
            path: self.path.clone(),
        })
    }

    /// Makes every write so far durable as sled does: written out and synced with
    /// `sync_file_range`, which does not flush a disk's own write cache or the file's metadata
    /// (a power cut under a write-back cache may still lose it; the instance rule, not the
    /// flush, is what protects against a disk that comes back older).
    pub fn flush(&self) -> Result<(), KvError> {
        match &self.backend {
            DbBackend::Sled(db) => db
                .flush()
                .map(|_| ())
                .map_err(|e| sled_error(&self.path, e)),
            DbBackend::Memory(db) => db.flush(&self.path),
        }
    }

    /// Applies each batch to its tree, all or none: a crash never leaves some of them applied.
    pub fn write_atomically(&self, writes: &[(&Tree, &Batch)]) -> Result<(), KvError> {
        match &self.backend {
            DbBackend::Sled(db) => {
                let mut all = sled::Batch::default();
                for (tree, batch) in writes {
                    match &tree.backend {
                        TreeBackend::Sled { prefix, .. } if tree.path == self.path => {
                            batch.add_to_sled(prefix, &mut all)
                        }
                        _ => return Err(self.mixed()),
                    }
                }
                db.apply_batch(all).map_err(|e| sled_error(&self.path, e))
            }
            DbBackend::Memory(db) => {
                let ops = writes
                    .iter()
                    .map(|(t, b)| match &t.backend {
                        TreeBackend::Memory { name, .. } => Ok((name.clone(), (*b).clone())),
                        TreeBackend::Sled { .. } => Err(self.mixed()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                db.write(&self.path, ops)
            }
        }
    }

    fn mixed(&self) -> KvError {
        KvError::Backend {
            path: self.path.clone(),
            reason: "a tree of another database in an atomic write".into(),
        }
    }
}

impl Tree {
    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, KvError> {
        match &self.backend {
            TreeBackend::Sled { tree, prefix } => tree
                .get(prefixed(prefix, key.as_ref()))
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(|e| sled_error(&self.path, e)),
            TreeBackend::Memory { db, name } => db.get(&self.path, name, key.as_ref()),
        }
    }

    /// Sets `key` to `value` (durable at the next flush).
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), KvError> {
        let mut b = Batch::default();
        b.insert(key, value);
        self.apply_batch(&b)
    }

    /// Removes `key` (durable at the next flush).
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), KvError> {
        let mut b = Batch::default();
        b.remove(key);
        self.apply_batch(&b)
    }

    /// Applies `batch` atomically.
    pub fn apply_batch(&self, batch: &Batch) -> Result<(), KvError> {
        match &self.backend {
            // One write is atomic by itself. A sled batch, however small, writes out (and
            // syncs) the log buffer before and after it: that made every WAL record two synced
            // writes to the disk.
            TreeBackend::Sled { tree, prefix } if batch.ops.len() == 1 => {
                let (k, v) = &batch.ops[0];
                let key = prefixed(prefix, k);
                match v {
                    Some(v) => tree.insert(key, v.as_slice()).map(|_| ()),
                    None => tree.remove(key).map(|_| ()),
                }
                .map_err(|e| sled_error(&self.path, e))
            }
            TreeBackend::Sled { tree, prefix } => {
                let mut b = sled::Batch::default();
                batch.add_to_sled(prefix, &mut b);
                tree.apply_batch(b).map_err(|e| sled_error(&self.path, e))
            }
            TreeBackend::Memory { db, name } => {
                db.write(&self.path, vec![(name.clone(), batch.clone())])
            }
        }
    }

    /// `key` without its keyspace's prefix; a key sled returned from outside the keyspace
    /// (damaged data) is `Corrupt`, never a panic.
    fn unprefixed<'k>(&self, prefix: &[u8], key: &'k [u8]) -> Result<&'k [u8], KvError> {
        key.strip_prefix(prefix).ok_or_else(|| KvError::Corrupt {
            path: self.path.clone(),
            reason: "sled returned a key outside the tree asked for".into(),
        })
    }

    fn entry(&self, prefix: &[u8], key: &[u8], value: &[u8]) -> Result<Entry, KvError> {
        Ok((self.unprefixed(prefix, key)?.to_vec(), value.to_vec()))
    }

    /// The entry with the greatest key.
    pub fn last(&self) -> Result<Option<Entry>, KvError> {
        match &self.backend {
            TreeBackend::Sled { tree, prefix } => tree
                .range(sled_bounds(prefix, &[], None))
                .next_back()
                .transpose()
                .map_err(|e| sled_error(&self.path, e))?
                .map(|(k, v)| self.entry(prefix, &k, &v))
                .transpose(),
            TreeBackend::Memory { db, name } => db.last(&self.path, name),
        }
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> Result<Vec<Entry>, KvError> {
        match &self.backend {
            TreeBackend::Sled { tree, prefix } => tree
                .scan_prefix(prefix)
                .map(|e| {
                    let (k, v) = e.map_err(|e| sled_error(&self.path, e))?;
                    self.entry(prefix, &k, &v)
                })
                .collect(),
            TreeBackend::Memory { db, name } => db.entries(&self.path, name),
        }
    }

    /// At most `limit` entries with `start <= key < end` (to the last key if `end` is
    /// `None`), in key order: a scan in bounded steps, each next one from the last key plus a
    /// zero byte.
    pub fn range(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        match &self.backend {
            TreeBackend::Sled { tree, prefix } => tree
                .range(sled_bounds(prefix, start, end))
                .take(limit)
                .map(|e| {
                    let (k, v) = e.map_err(|e| sled_error(&self.path, e))?;
                    self.entry(prefix, &k, &v)
                })
                .collect(),
            TreeBackend::Memory { db, name } => db.range(&self.path, name, start, end, limit),
        }
    }

    /// The keys with `start <= key < end` (to the last key if `end` is `None`), in order,
    /// at most `limit` of them and, past the first, no more than about `max_bytes` of keys:
    /// a scan in bounded steps that never copies values.
    pub fn range_keys(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, KvError> {
        let mut keys = Vec::new();
        let mut bytes = 0usize;
        let mut take = |k: &[u8]| -> bool {
            if keys.len() >= limit || (bytes >= max_bytes && !keys.is_empty()) {
                return false;
            }
            bytes = bytes.saturating_add(k.len());
            keys.push(k.to_vec());
            true
        };
        match &self.backend {
            TreeBackend::Sled { tree, prefix } => {
                for entry in tree.range(sled_bounds(prefix, start, end)) {
                    let (k, _) = entry.map_err(|e| sled_error(&self.path, e))?;
                    if !take(self.unprefixed(prefix, &k)?) {
                        break;
                    }
                }
            }
            TreeBackend::Memory { db, name } => {
                db.visit_keys(&self.path, name, start, end, &mut take)?;
            }
        }
        Ok(keys)
    }

    /// How many entries it holds (a scan of them all, as sled's own count is).
    pub fn len(&self) -> Result<usize, KvError> {
        match &self.backend {
            TreeBackend::Sled { tree, prefix } => {
                let mut n = 0;
                for entry in tree.scan_prefix(prefix).keys() {
                    entry.map_err(|e| sled_error(&self.path, e))?;
                    n += 1;
                }
                Ok(n)
            }
            TreeBackend::Memory { db, name } => db.len(&self.path, name),
        }
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> Result<bool, KvError> {
        self.len().map(|n| n == 0)
    }

    /// Makes every write of its database durable (a flush is database-wide, as sled's is).
    pub fn flush(&self) -> Result<(), KvError> {
        match &self.backend {
            TreeBackend::Sled { tree, .. } => tree
                .flush()
                .map(|_| ())
                .map_err(|e| sled_error(&self.path, e)),
            TreeBackend::Memory { db, .. } => db.flush(&self.path),
        }
    }
}

/// Moves every tree of a database written with one sled tree per name (earlier versions) into
/// its keyspace of the default tree, then drops the old tree, and marks the database as laid
/// out in keyspaces. Each step moves a bounded run of entries in one sled transaction (inserted
/// under the keyspace, removed from the old tree), so a crash keeps every entry in exactly one
/// place and the next open goes on from there. A marked database with a tree per name beside
/// its keyspaces was written by an earlier version since: two histories, refused.
fn into_keyspaces(db: &sled::Db) -> Result<(), sled::Error> {
    use sled::transaction::TransactionError;
    use sled::Transactional;
    let names = db.tree_names();
    let marked = names.iter().any(|n| n.as_ref() == LAYOUT_TREE);
    for name in names {
        if name.as_ref() == SLED_DEFAULT_TREE || name.as_ref() == LAYOUT_TREE {
            continue;
        }
        let shown = String::from_utf8_lossy(&name).into_owned();
        if marked {
            return Err(sled::Error::Unsupported(format!(
                "a tree named {shown:?} beside the keyspaces: an earlier version wrote to this database after this one"
            )));
        }
        let prefix = std::str::from_utf8(&name)
            .ok()
            .and_then(keyspace)
            .ok_or_else(|| {
                sled::Error::Unsupported(format!(
                    "a tree named {shown:?}, which no Bulwark version writes"
                ))
            })?;
        let old = db.open_tree(&name)?;
        loop {
            let mut step = Vec::new();
            let mut bytes = 0usize;
            for entry in old.iter() {
                let (k, v) = entry?;
                bytes = bytes.saturating_add(k.len() + v.len());
                step.push((k, v));
                if step.len() == MIGRATION_STEP || bytes >= MIGRATION_STEP_BYTES {
                    break;
                }
            }
            if step.is_empty() {
                break;
            }
            let default: &sled::Tree = db;
            (default, &old)
                .transaction(|(new, old)| {
                    for (k, v) in &step {
                        new.insert(prefixed(&prefix, k), v.clone())?;
                        old.remove(k.clone())?;
                    }
                    Ok(())
                })
                .map_err(|e: TransactionError<()>| match e {
                    TransactionError::Storage(e) => e,
                    TransactionError::Abort(()) => {
                        sled::Error::ReportableBug("moving a tree into its keyspace aborted".into())
                    }
                })?;
        }
        db.flush()?;
        db.drop_tree(&name)?;
    }
    if !marked {
        db.open_tree(LAYOUT_TREE)?
            .insert(b"layout", b"keyspaces/1")?;
    }
    db.flush()?;
    Ok(())
}
