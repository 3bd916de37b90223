//! The simulated disk: trees in memory, with what was flushed kept apart from what was only
//! written, so that a crash can lose exactly what a real one would.

use crate::{Batch, Entry, KvError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

type Trees = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// One atomic write: batches for named trees.
type Write = Vec<(String, Batch)>;

#[derive(Debug, Default)]
struct DiskState {
    name: String,
    /// What survives a crash.
    durable: Trees,
    /// What a reader sees: `durable` with `unflushed` applied.
    current: Trees,
    /// Atomic writes since the last flush, in order.
    unflushed: Vec<Write>,
    /// Bumped at every crash: handles opened before it fail instead of writing to the new
    /// life of the disk.
    generation: u64,
    /// Atomic writes ever made and flushes ever done (for the simulator's bounds).
    writes: u64,
    flushes: u64,
}

fn apply(trees: &mut Trees, write: &Write) {
    for (name, batch) in write {
        let tree = trees.entry(name.clone()).or_default();
        for (k, v) in &batch.ops {
            match v {
                Some(v) => {
                    tree.insert(k.clone(), v.clone());
                }
                None => {
                    tree.remove(k);
                }
            }
        }
    }
}

/// A simulated disk. Clones are handles to the same disk.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Arc<Mutex<DiskState>>,
}

impl MemDisk {
    /// A new, empty disk.
    pub fn new(name: &str) -> MemDisk {
        MemDisk {
            state: Arc::new(Mutex::new(DiskState {
                name: name.to_string(),
                ..DiskState::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A panic while holding the lock leaves consistent maps (every update is one call).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn name(&self) -> String {
        self.lock().name.clone()
    }

    pub(crate) fn open(&self) -> MemDb {
        let generation = self.lock().generation;
        MemDb {
            disk: self.clone(),
            generation,
        }
    }

    /// The machine stops without warning: of the writes since the last flush only the first
    /// `keep` survive (0: all are lost, as after a power cut; more: a torn write that got part
    /// of the way). Handles opened before the crash stop working.
    pub fn crash(&self, keep: usize) {
        let mut s = self.lock();
        let unflushed = std::mem::take(&mut s.unflushed);
        for write in unflushed.iter().take(keep) {
            apply(&mut s.durable, write);
        }
        s.current = s.durable.clone();
        s.generation += 1;
    }

    /// Writes since the last flush.
    pub fn unflushed(&self) -> usize {
        self.lock().unflushed.len()
    }

    /// A new, independent disk holding what this one would hold after a crash now (what was
    /// flushed): a host's snapshot, for rollbacks and clones.
    pub fn copy(&self, name: &str) -> MemDisk {
        let s = self.lock();
        MemDisk {
            state: Arc::new(Mutex::new(DiskState {
                name: name.to_string(),
                durable: s.durable.clone(),
                current: s.durable.clone(),
                ..DiskState::default()
            })),
        }
    }

    /// Replaces this disk's contents by `other`'s durable contents (a host restoring a
    /// snapshot); open handles stop working.
    pub fn restore(&self, other: &MemDisk) {
        let snapshot = other.lock().durable.clone();
        let mut s = self.lock();
        s.durable = snapshot.clone();
        s.current = snapshot;
        s.unflushed.clear();
        s.generation += 1;
    }

    /// Atomic writes ever made and flushes ever done.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.writes, s.flushes)
    }

    /// Entries in tree `name` as a reader sees it now.
    pub fn tree_len(&self, name: &str) -> usize {
        self.lock().current.get(name).map_or(0, BTreeMap::len)
    }
}

/// A database opened on a [`MemDisk`] (one life of it: until its next crash).
#[derive(Clone, Debug)]
pub(crate) struct MemDb {
    disk: MemDisk,
    generation: u64,
}

impl MemDb {
    fn live(&self, path: &Path) -> Result<MutexGuard<'_, DiskState>, KvError> {
        let s = self.disk.lock();
        if s.generation != self.generation {
            return Err(KvError::Backend {
                path: path.to_path_buf(),
                reason: "the simulated disk crashed since this handle was opened".into(),
            });
        }
        Ok(s)
    }

    pub(crate) fn check(&self, path: &Path) -> Result<(), KvError> {
        self.live(path).map(|_| ())
    }

    pub(crate) fn write(&self, path: &Path, write: Write) -> Result<(), KvError> {
        let mut s = self.live(path)?;
        apply(&mut s.current, &write);
        s.unflushed.push(write);
        s.writes += 1;
        Ok(())
    }

    pub(crate) fn flush(&self, path: &Path) -> Result<(), KvError> {
        let mut s = self.live(path)?;
        let unflushed = std::mem::take(&mut s.unflushed);
        for write in &unflushed {
            apply(&mut s.durable, write);
        }
        s.flushes += 1;
        Ok(())
    }

    pub(crate) fn get(
        &self,
        path: &Path,
        tree: &str,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, KvError> {
        let s = self.live(path)?;
        Ok(s.current.get(tree).and_then(|t| t.get(key)).cloned())
    }

    pub(crate) fn last(&self, path: &Path, tree: &str) -> Result<Option<Entry>, KvError> {
        let s = self.live(path)?;
        Ok(s.current
            .get(tree)
            .and_then(|t| t.iter().next_back())
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    pub(crate) fn entries(&self, path: &Path, tree: &str) -> Result<Vec<Entry>, KvError> {
        let s = self.live(path)?;
        Ok(s.current.get(tree).map_or_else(Vec::new, |t| {
            t.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }))
    }

    pub(crate) fn range(
        &self,
        path: &Path,
        tree: &str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        use std::ops::Bound;
        let s = self.live(path)?;
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(s.current.get(tree).map_or_else(Vec::new, |t| {
            t.range::<[u8], _>((Bound::Included(start), upper))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    /// Calls `take` with each key in range, in order, until it says stop.
    pub(crate) fn visit_keys(
        &self,
        path: &Path,
        tree: &str,
        start: &[u8],
        end: Option<&[u8]>,
        take: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<(), KvError> {
        use std::ops::Bound;
        let s = self.live(path)?;
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        if let Some(t) = s.current.get(tree) {
            for (k, _) in t.range::<[u8], _>((Bound::Included(start), upper)) {
                if !take(k) {
                    break;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn len(&self, path: &Path, tree: &str) -> Result<usize, KvError> {
        let s = self.live(path)?;
        Ok(s.current.get(tree).map_or(0, BTreeMap::len))
    }
}
