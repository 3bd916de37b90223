//! The key-value databases under Bulwark's stores and its built-in application: named trees of
//! byte keys and values, batches applied atomically across trees, and an explicit flush as the
//! only durability point.
//!
//! Two backends behind one API:
//! - **fjall** on disk (an LSM tree with a journal), what a node runs. Every named tree is a
//!   keyspace of one fjall keyspace (its keys prefixed by the tree's length-prefixed name), so
//!   a write across trees is one fjall batch, one journal record. A flush is the journal's
//!   `fdatasync`. fjall replaced sled (2026-12-07): on this project's machines it writes a key
//!   for about a third of sled's CPU and makes a small write durable for a third of the CPU,
//!   with `fdatasync` where sled's flush was a `sync_file_range` (see `docs/BENCHMARKS.md`).
//!   A database sled wrote (earlier versions) is imported when it is opened
//!   ([`sled_import`]);
//! - **a simulated disk** in memory ([`MemDisk`]), what the deterministic simulator runs. It keeps
//!   what was flushed apart from what was only written, so a simulated crash
//!   ([`MemDisk::crash`]) loses everything after the last flush point (or any prefix of it, as a
//!   torn write would), exactly the storage fault a power cut or a killed VM causes. A disk can
//!   also be copied ([`MemDisk::copy`]): rolled back or cloned by a hostile host.
//!
//! Everything read back is the caller's to check; a database that cannot be opened is a
//! [`KvError`] naming its path, never a panic.

mod memory;
mod sled_import;

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
    /// A key longer than [`MAX_KEY_BYTES`]: refused before anything is written.
    #[error("the database at {path}: a key of {len} bytes (at most {MAX_KEY_BYTES})")]
    KeyTooLong {
        /// The database's directory.
        path: PathBuf,
        /// The key's length.
        len: usize,
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
#[derive(Clone)]
pub struct Db {
    backend: DbBackend,
    path: PathBuf,
}

#[derive(Clone)]
enum DbBackend {
    Lsm(Lsm),
    Memory(MemDb),
}

/// fjall's database and the one keyspace every tree lives in.
#[derive(Clone)]
struct Lsm {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
    /// The size at which the writer rotates the active memtable ([`MEMTABLE_SETTING`]).
    memtable_bytes: u64,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

/// One named tree of a [`Db`].
#[derive(Clone)]
pub struct Tree {
    backend: TreeBackend,
    path: PathBuf,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("path", &self.path).finish()
    }
}

#[derive(Clone)]
enum TreeBackend {
    /// The database, and the prefix of this tree's keyspace in it.
    Lsm {
        lsm: Lsm,
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

/// The bounds of the keys of keyspace `prefix` with `start <= key < end` (to the keyspace's
/// last key if `end` is `None`). fjall cannot take a bound longer than a key may be
/// ([`MAX_KEY_BYTES`]; a longer one panics), so a long bound is cut to one that takes in at
/// least the same keys, and [`in_range`] drops the extra ones.
fn keyspace_bounds(
    prefix: &[u8],
    start: &[u8],
    end: Option<&[u8]>,
) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    use std::ops::Bound;
    let cut = |k: &[u8]| k.get(..MAX_KEY_BYTES).unwrap_or(k).to_vec();
    let upper = match end {
        Some(e) if e.len() <= MAX_KEY_BYTES => Some(prefixed(prefix, e)),
        Some(e) => prefix_end(&prefixed(prefix, &cut(e))),
        None => prefix_end(prefix),
    };
    let lower = Bound::Included(prefixed(prefix, &cut(start)));
    (lower, upper.map_or(Bound::Unbounded, Bound::Excluded))
}

/// Whether `key` is within `start <= key < end` (the bounds [`keyspace_bounds`] may have cut).
fn in_range(key: &[u8], start: &[u8], end: Option<&[u8]>) -> bool {
    key >= start && end.is_none_or(|e| key < e)
}

/// The fjall keyspace that holds every tree.
const KEYSPACE: &str = "bulwark";

/// Values from this size on live in fjall's blob files, not in the LSM tree's tables, so
/// compaction does not rewrite whole blocks again and again.
const SEPARATE_VALUES_FROM: u32 = 4096;

/// Memory bounds of one open database: fjall's block cache, and the memtable it writes into
/// before a table is flushed. [`Lsm::commit`] lets at most four sealed memtables wait for their
/// flush besides the active one, and starts a new memtable before a batch that would overflow
/// the active one, so a database holds at most about 5 × max(its memtable size, its largest
/// batch) plus the 8 MiB cache (a node opens two; a test VM has 384 MiB).
const CACHE_BYTES: u64 = 8 << 20;
/// Table and blob files a database keeps open at most (fjall's default is 900): a node sets
/// its connections' descriptors apart from these (`bulwark_p2p::descriptors`). Past them a
/// read opens its file again, one system call.
pub const MAX_CACHED_FILES: usize = 64;

/// The smallest memtable, the size at which the writer rotates fjall's active memtable: that of
/// every database created before the size was chosen by memory (and of one on a machine of
/// 1 GiB or less).
pub const MIN_MEMTABLE_BYTES: u64 = 8 << 20;
/// The largest memtable. Larger memtables make fewer, larger level-0 tables, so compactions
/// rewrite the randomly keyed indexes less often: a lone validator's CPU per transaction over
/// a store of 2,000,000 (limit bench, 2026-12-08) was 27.9–28.5 µs with 8 MiB, 20.6 with 16,
/// 16.0–16.8 with 32 and 16.4 with 64.
pub const MAX_MEMTABLE_BYTES: u64 = 32 << 20;

/// The memtable size for a machine of `total_memory` bytes (the minimum if it is unknown): a
/// 128th of it, within [`MIN_MEMTABLE_BYTES`] and [`MAX_MEMTABLE_BYTES`]. A node's two
/// databases then hold at most about 2 × (5 × that + 8 MiB) of memtables and caches as fjall
/// counts them (about 1.4 times as much in memory for small entries): an eighth of a 2 GiB
/// guest at worst.
pub fn memtable_bytes_for(total_memory: Option<u64>) -> u64 {
    total_memory.map_or(MIN_MEMTABLE_BYTES, |m| {
        (m / 128).clamp(MIN_MEMTABLE_BYTES, MAX_MEMTABLE_BYTES)
    })
}

/// This machine's memory (`MemTotal` in `/proc/meminfo`), if it says.
fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The keyspace of this crate's own settings for the database, beside [`KEYSPACE`].
const SETTINGS_KEYSPACE: &str = "bulwark-kv";
/// The memtable size chosen when the database was created, under this key of
/// [`SETTINGS_KEYSPACE`] (8 bytes, big-endian); a database without it uses the minimum.
const MEMTABLE_SETTING: &[u8] = b"memtable_bytes";

/// fjall's background threads (memtable flushes and compactions). One, not fjall's default of
/// one per core: with two or more, worker 0 hands every compaction request back to the queue
/// to stay free for flushes, and while the others compact it takes the same request again at
/// once, spinning (fjall 3.1.13 `worker_pool::worker_tick`). On two cores that spin was a
/// fifth of a lone validator's CPU (probe of 400,000 transactions: 37 µs a transaction with
/// the default, 28 µs with one worker, same wall time). The price: a flush waits behind the
/// compaction in progress, so a writer far ahead of the disk waits in [`Lsm::commit`].
///
/// A lone worker must never be the one to rotate a memtable: fjall asks its workers for a
/// rotation at every write past `max_memtable_size`, and a worker that rotates sends the
/// flush into the same bounded queue with a blocking send; once a long compaction let those
/// requests fill it, the worker waits on itself for good and the memtable and journal grow
/// without bound (fjall-rs/fjall PR 323; a single-core VM had that worker by default). So
/// the writer rotates, in [`Lsm::commit`], before fjall's own threshold sees the memtable.
const WORKER_THREADS: usize = 1;

/// fjall's own rotation threshold, stored when a database is created: twice its memtable
/// size, above any memtable the writer lets grow but one batch larger still. fjall keeps it
/// for good, so the memtable size is chosen once too ([`MEMTABLE_SETTING`]): a writer rotating
/// later than fjall's threshold would leave the rotations to the worker. A database created
/// by the earliest fjall versions of this crate has 8 MiB stored; there fjall asks for at
/// most one rotation per commit that crosses it, which the writer then makes itself, and the
/// stale request finds the memtable already rotated.
const FJALL_ROTATION_FACTOR: u64 = 2;

/// The writer waits before a commit while this many memtables wait for their flush, or while
/// level 0 holds [`MAX_L0_RUNS`] runs: then fjall's own stalls inside a commit, which never
/// look at its poison flag, cannot start, and a dead worker is an error, not a hang.
const MAX_SEALED_MEMTABLES: usize = 3;
/// fjall slows writes from 20 runs in level 0 and halts them from 30.
const MAX_L0_RUNS: usize = 20;

/// Level 0 is compacted into level 1 from this many tables (fjall's default: 4; here each
/// table is a run, so [`MAX_L0_RUNS`] is reached only after), in databases created from now on:
/// an existing database keeps the options it was created with. Most keys written are the
/// indexes' (transaction hashes, event postings) in random order, so each compaction of level
/// 0 rewrites nearly all of level 1: while level 1 fills (its target is 64 MiB times this),
/// fewer, larger compactions rewrite it less often. A lone validator's CPU per transaction
/// (limit bench, a young database of 400,000 transactions, three runs each): 16.6–17.2 µs at
/// 4, 15.6–15.7 at 8, 12.9–14.1 at 12, 12.6–14.2 at 16; with 2,000,000 (two runs each):
/// 34.0–35.2 µs at 4, 22.9–26.0 at 12. Each compaction, which a flush waits behind (one
/// worker), is larger; point reads check a bloom filter per level-0 table.
const L0_THRESHOLD: u8 = 12;

/// The longest key a tree takes. fjall stores a key's length in 16 bits (and a longer one
/// would corrupt its journal), and the tree's prefix (at most 256 bytes) comes first; both
/// backends refuse longer keys alike, so the simulator meets the same limit.
pub const MAX_KEY_BYTES: usize = u16::MAX as usize - 256;

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

    /// Refuses a key longer than [`MAX_KEY_BYTES`] before anything is written.
    fn check(&self, path: &Path) -> Result<(), KvError> {
        match self.ops.iter().find(|(k, _)| k.len() > MAX_KEY_BYTES) {
            Some((k, _)) => Err(KvError::KeyTooLong {
                path: path.to_path_buf(),
                len: k.len(),
            }),
            None => Ok(()),
        }
    }

    /// Bytes of its keys (each under `prefix`) and values.
    fn bytes(&self, prefix: &[u8]) -> u64 {
        self.ops
            .iter()
            .map(|(k, v)| (prefix.len() + k.len() + v.as_ref().map_or(0, Vec::len)) as u64)
            .sum()
    }

    /// Adds its writes to `out`, each key under `prefix`, in key order; the writes of one key
    /// keep their order (a stable sort), so the last still wins. fjall inserts a batch into its
    /// memtable, a skip list, one key at a time: keys in order find most of their path in the
    /// cache, where the indexes' keys (hashes, postings) came in random order. A probe of
    /// 800,000 random keys in batches of 4,000: 1.2–1.5 µs of CPU a key sorted, 1.8–2.1 not.
    fn add_to(&self, keyspace: &fjall::Keyspace, prefix: &[u8], out: &mut fjall::OwnedWriteBatch) {
        let mut ops: Vec<&(Vec<u8>, Option<Vec<u8>>)> = self.ops.iter().collect();
        ops.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in ops {
            let key = prefixed(prefix, k);
            match v {
                Some(v) => out.insert(keyspace, key, v.as_slice()),
                None => out.remove(keyspace, key),
            }
        }
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

fn lsm_error(path: &Path, e: fjall::Error) -> KvError {
    let corrupt = |what: String| KvError::Corrupt {
        path: path.to_path_buf(),
        reason: what,
    };
    match e {
        fjall::Error::Io(source) | fjall::Error::Storage(fjall::LsmError::Io(source)) => {
            KvError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
        fjall::Error::Locked => KvError::Backend {
            path: path.to_path_buf(),
            reason: "the database is open in another process (its lock file is held)".into(),
        },
        fjall::Error::Poisoned | fjall::Error::KeyspaceDeleted => KvError::Backend {
            path: path.to_path_buf(),
            reason: format!("{e:?}"),
        },
        fjall::Error::InvalidVersion(v) => {
            corrupt(format!("not a database this version reads (format {v:?})"))
        }
        other => corrupt(format!("fjall found damaged data: {other:?}")),
    }
}

/// How long opening waits for a lock held by a database this process is still closing.
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

impl Db {
    /// Opens (or creates) the database in `dir`; a database sled wrote there (earlier
    /// versions) is imported first. Durability points flush explicitly: nothing is synced in
    /// the background.
    pub fn open(dir: impl AsRef<Path>) -> Result<Db, KvError> {
        Db::open_sized(dir, memtable_bytes_for(total_memory()))
    }

    /// [`Db::open`] with memtables of `memtable_bytes` (within [`MIN_MEMTABLE_BYTES`] and
    /// [`MAX_MEMTABLE_BYTES`]) in a new database. One that exists rotates at the smaller of
    /// that and the size it was created with: never later than fjall's stored threshold, and
    /// never with more memory than this machine gives.
    pub fn open_sized(dir: impl AsRef<Path>, memtable_bytes: u64) -> Result<Db, KvError> {
        let path = dir.as_ref().to_path_buf();
        let new_memtable = memtable_bytes.clamp(MIN_MEMTABLE_BYTES, MAX_MEMTABLE_BYTES);
        let lsm = open_lsm(&path, new_memtable)?;
        sled_import::import(&path, &lsm)?;
        Ok(Db {
            backend: DbBackend::Lsm(lsm),
            path,
        })
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
            DbBackend::Lsm(lsm) => TreeBackend::Lsm {
                lsm: lsm.clone(),
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

    /// Makes every write so far durable: the journal is written out and `fdatasync`ed (the
    /// disk's write cache is flushed too where the disk honours it; the instance rule, not the
    /// flush, is what protects against a disk that comes back older).
    pub fn flush(&self) -> Result<(), KvError> {
        match &self.backend {
            DbBackend::Lsm(lsm) => lsm.flush(&self.path),
            DbBackend::Memory(db) => db.flush(&self.path),
        }
    }

    /// The size at which a memtable is sealed for its flush to a table (the simulated disk
    /// has none: 0).
    pub fn memtable_limit(&self) -> u64 {
        match &self.backend {
            DbBackend::Lsm(lsm) => lsm.memtable_bytes,
            DbBackend::Memory(_) => 0,
        }
    }

    /// Bytes written and not yet in fjall's tables: its active and sealed memtables (the
    /// simulated disk has none: 0). Bounded by about five times [`Db::memtable_limit`].
    pub fn memtable_bytes(&self) -> u64 {
        match &self.backend {
            DbBackend::Lsm(lsm) => lsm.unflushed_bytes(),
            DbBackend::Memory(_) => 0,
        }
    }

    /// Applies each batch to its tree, all or none: a crash never leaves some of them applied.
    pub fn write_atomically(&self, writes: &[(&Tree, &Batch)]) -> Result<(), KvError> {
        for (_, batch) in writes {
            batch.check(&self.path)?;
        }
        match &self.backend {
            DbBackend::Lsm(lsm) => {
                let mut all = lsm.db.batch();
                let mut bytes = 0u64;
                for (tree, batch) in writes {
                    match &tree.backend {
                        TreeBackend::Lsm { prefix, .. } if tree.path == self.path => {
                            batch.add_to(&lsm.keyspace, prefix, &mut all);
                            bytes = bytes.saturating_add(batch.bytes(prefix));
                        }
                        _ => return Err(self.mixed()),
                    }
                }
                lsm.commit(all, bytes, &self.path)
            }
            DbBackend::Memory(db) => {
                let ops = writes
                    .iter()
                    .map(|(t, b)| match &t.backend {
                        TreeBackend::Memory { name, .. } => Ok((name.clone(), (*b).clone())),
                        TreeBackend::Lsm { .. } => Err(self.mixed()),
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

/// Opens fjall's database in `path`, waiting a bounded time for the lock of a database this
/// process is still closing. fjall is written to return errors, but a damaged database must
/// be a clear error at start even if some path panics: a panic while opening is `Corrupt`.
fn open_lsm(path: &Path, new_memtable: u64) -> Result<Lsm, KvError> {
    /// The database, its keyspace and the memtable size stored for it.
    type Opened = (fjall::Database, fjall::Keyspace, Option<Vec<u8>>);
    clear_unfinished_creation(path).map_err(|source| KvError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let open_once = || {
        std::panic::catch_unwind(|| -> Result<Opened, fjall::Error> {
            let db = fjall::Database::builder(path)
                .manual_journal_persist(true)
                .cache_size(CACHE_BYTES)
                .max_cached_files(Some(MAX_CACHED_FILES))
                .worker_threads(WORKER_THREADS)
                .open()?;
            let created = std::cell::Cell::new(false);
            let keyspace = db.keyspace(KEYSPACE, || {
                created.set(true);
                fjall::KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(FJALL_ROTATION_FACTOR * new_memtable)
                    .compaction_strategy(std::sync::Arc::new(
                        fjall::compaction::Leveled::default().with_l0_threshold(L0_THRESHOLD),
                    ))
                    .with_kv_separation(Some(
                        fjall::KvSeparationOptions::default()
                            .separation_threshold(SEPARATE_VALUES_FROM),
                    ))
            })?;
            let settings = db.keyspace(SETTINGS_KEYSPACE, || {
                fjall::KeyspaceCreateOptions::default().manual_journal_persist(true)
            })?;
            // Made durable at once; lost anyway, the database falls back to the minimum, below
            // every threshold fjall ever stored.
            let stored = if created.get() {
                settings.insert(MEMTABLE_SETTING, new_memtable.to_be_bytes())?;
                db.persist(fjall::PersistMode::SyncAll)?;
                Some(new_memtable.to_be_bytes().to_vec())
            } else {
                settings.get(MEMTABLE_SETTING)?.map(|v| v.to_vec())
            };
            // Sealed at every open (nothing to do once flushed): a memtable left open, as the
            // journal's replay makes one after a crash or a close before the worker flushed
            // it, would keep every journal from being deleted (fjall deletes one only once
            // each keyspace has flushed past it).
            settings.rotate_memtable()?;
            Ok((db, keyspace, stored))
        })
    };
    let patience = std::time::Instant::now() + LOCK_PATIENCE;
    let mut opened = open_once();
    while matches!(&opened, Ok(Err(fjall::Error::Locked))) && std::time::Instant::now() < patience {
        std::thread::sleep(std::time::Duration::from_millis(10));
        opened = open_once();
    }
    match opened {
        Ok(Ok((db, keyspace, stored))) => Ok(Lsm {
            db,
            keyspace,
            memtable_bytes: stored_memtable_bytes(stored.as_deref())
                .ok_or_else(|| KvError::Corrupt {
                    path: path.to_path_buf(),
                    reason: "the stored memtable size is not one this crate chooses".into(),
                })?
                .min(new_memtable),
        }),
        Ok(Err(e)) => Err(lsm_error(path, e)),
        Err(_) => Err(KvError::Corrupt {
            path: path.to_path_buf(),
            reason: "the database files could not be read".into(),
        }),
    }
}

/// The memtable size a database was created with: the minimum if it has none stored, nothing
/// if what is stored is not a size [`Db::open_sized`] chooses.
fn stored_memtable_bytes(stored: Option<&[u8]>) -> Option<u64> {
    let Some(bytes) = stored else {
        return Some(MIN_MEMTABLE_BYTES);
    };
    let size = u64::from_be_bytes(bytes.try_into().ok()?);
    (MIN_MEMTABLE_BYTES..=MAX_MEMTABLE_BYTES)
        .contains(&size)
        .then_some(size)
}

/// fjall writes a new database's version marker, and syncs it, before anything else can be
/// written; a creation cut short before (or while writing) it leaves a journal and perhaps an
/// empty marker, which fjall would refuse to create again. They hold no data: they go.
fn clear_unfinished_creation(path: &Path) -> std::io::Result<()> {
    let version = path.join("version");
    match std::fs::metadata(&version) {
        Ok(marker) if marker.len() > 0 => return Ok(()),
        Ok(_) => std::fs::remove_file(&version)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if path.join("keyspaces").try_exists()? {
        std::fs::remove_dir_all(path.join("keyspaces"))?;
    }
    for file in ["0.jnl", "lock"] {
        if path.join(file).try_exists()? {
            std::fs::remove_file(path.join(file))?;
        }
    }
    Ok(())
}

impl Lsm {
    /// Commits `batch` (about `bytes` of keys and values), rotating the active memtable
    /// itself (see [`WORKER_THREADS`]): before a batch that would overflow it, and once it
    /// holds [`Lsm::memtable_bytes`]. Waits first while the worker is behind (see
    /// [`MAX_SEALED_MEMTABLES`]); a database whose worker failed is an error.
    fn commit(
        &self,
        batch: fjall::OwnedWriteBatch,
        bytes: u64,
        path: &Path,
    ) -> Result<(), KvError> {
        use fjall::AbstractTree;
        let tree = &self.keyspace.tree;
        while tree.sealed_memtable_count() >= MAX_SEALED_MEMTABLES
            || tree.l0_run_count() >= MAX_L0_RUNS
        {
            // Fails once fjall is poisoned (a worker died): waiting on would never end.
            self.db
                .persist(fjall::PersistMode::Buffer)
                .map_err(|e| lsm_error(path, e))?;
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let active = tree.active_memtable().size();
        if active > 0 && active.saturating_add(bytes) > self.memtable_bytes {
            self.keyspace
                .rotate_memtable()
                .map_err(|e| lsm_error(path, e))?;
        }
        batch.commit().map_err(|e| lsm_error(path, e))?;
        if tree.active_memtable().size() >= self.memtable_bytes {
            // The batch is in: a failed rotation is tried again at the next commit, and a
            // database that cannot rotate fails that commit before writing it.
            let _ = self.keyspace.rotate_memtable();
        }
        Ok(())
    }

    /// Bytes written and not yet flushed to tables: the active and sealed memtables.
    fn unflushed_bytes(&self) -> u64 {
        self.db.write_buffer_size()
    }

    fn flush(&self, path: &Path) -> Result<(), KvError> {
        self.db
            .persist(fjall::PersistMode::SyncData)
            .map_err(|e| lsm_error(path, e))
    }
}

impl Tree {
    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, KvError> {
        match &self.backend {
            // No key that long can be stored (and fjall panics on one).
            TreeBackend::Lsm { .. } if key.as_ref().len() > MAX_KEY_BYTES => Ok(None),
            TreeBackend::Lsm { lsm, prefix } => lsm
                .keyspace
                .get(prefixed(prefix, key.as_ref()))
                .map(|v| v.map(|v| v.to_vec()))
                .map_err(|e| lsm_error(&self.path, e)),
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
        batch.check(&self.path)?;
        match &self.backend {
            TreeBackend::Lsm { lsm, prefix } => {
                let mut b = lsm.db.batch();
                batch.add_to(&lsm.keyspace, prefix, &mut b);
                lsm.commit(b, batch.bytes(prefix), &self.path)
            }
            TreeBackend::Memory { db, name } => {
                db.write(&self.path, vec![(name.clone(), batch.clone())])
            }
        }
    }

    /// `key` without its keyspace's prefix; a key fjall returned from outside the keyspace
    /// (damaged data) is `Corrupt`, never a panic.
    fn unprefixed<'k>(&self, prefix: &[u8], key: &'k [u8]) -> Result<&'k [u8], KvError> {
        key.strip_prefix(prefix).ok_or_else(|| KvError::Corrupt {
            path: self.path.clone(),
            reason: "the database returned a key outside the tree asked for".into(),
        })
    }

    /// An entry of the keyspace `prefix`, read through fjall's guard.
    fn entry(&self, prefix: &[u8], guard: fjall::Guard) -> Result<Entry, KvError> {
        let (k, v) = guard.into_inner().map_err(|e| lsm_error(&self.path, e))?;
        Ok((self.unprefixed(prefix, &k)?.to_vec(), v.to_vec()))
    }

    /// The entry with the greatest key.
    pub fn last(&self) -> Result<Option<Entry>, KvError> {
        match &self.backend {
            TreeBackend::Lsm { lsm, prefix } => lsm
                .keyspace
                .range(keyspace_bounds(prefix, &[], None))
                .next_back()
                .map(|g| self.entry(prefix, g))
                .transpose(),
            TreeBackend::Memory { db, name } => db.last(&self.path, name),
        }
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> Result<Vec<Entry>, KvError> {
        match &self.backend {
            TreeBackend::Lsm { lsm, prefix } => lsm
                .keyspace
                .range(keyspace_bounds(prefix, &[], None))
                .map(|g| self.entry(prefix, g))
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
            TreeBackend::Lsm { lsm, prefix } => lsm
                .keyspace
                .range(keyspace_bounds(prefix, start, end))
                .map(|g| self.entry(prefix, g))
                .filter(|e| e.as_ref().map_or(true, |(k, _)| in_range(k, start, end)))
                .take(limit)
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
            TreeBackend::Lsm { lsm, prefix } => {
                for guard in lsm.keyspace.range(keyspace_bounds(prefix, start, end)) {
                    let k = guard.key().map_err(|e| lsm_error(&self.path, e))?;
                    let k = self.unprefixed(prefix, &k)?;
                    if in_range(k, start, end) && !take(k) {
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

    /// How many entries it holds (a scan of its keys).
    pub fn len(&self) -> Result<usize, KvError> {
        match &self.backend {
            TreeBackend::Lsm { lsm, prefix } => {
                let mut n = 0;
                for guard in lsm.keyspace.range(keyspace_bounds(prefix, &[], None)) {
                    guard.key().map_err(|e| lsm_error(&self.path, e))?;
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

    /// Makes every write of its database durable (a flush is database-wide).
    pub fn flush(&self) -> Result<(), KvError> {
        match &self.backend {
            TreeBackend::Lsm { lsm, .. } => lsm.flush(&self.path),
            TreeBackend::Memory { db, .. } => db.flush(&self.path),
        }
    }
}
