//! The consensus write-ahead log: every event the consensus core processes is appended (and,
//! for the node's own messages, flushed) before it is processed, so a restarted node replays
//! exactly the state it had. Records are opaque bytes framed with their height and a SHA-256
//! checksum; a damaged record is an error, never skipped.

use crate::{key, Store, StoreError};
use sha2::{Digest, Sha256};

/// The write-ahead log of one node.
#[derive(Debug)]
pub struct Wal {
    store: Store,
    tree: sled::Tree,
    next: u64,
}

fn frame(height: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 + payload.len());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&Sha256::digest(payload)[..8]);
    out.extend_from_slice(payload);
    out
}

fn unframe(bytes: &[u8]) -> Option<(u64, &[u8])> {
    if bytes.len() < 16 {
        return None;
    }
    let height = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let payload = &bytes[16..];
    (Sha256::digest(payload)[..8] == bytes[8..16]).then_some((height, payload))
}

impl Wal {
    /// Opens the log in `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let tree = store.tree("wal")?;
        let next = match tree.last().map_err(|e| store.err(e))? {
            Some((k, _)) => {
                let k: [u8; 8] = k
                    .as_ref()
                    .try_into()
                    .map_err(|_| store.corrupt("WAL key is not 8 bytes"))?;
                u64::from_be_bytes(k) + 1
            }
            None => 0,
        };
        Ok(Wal {
            store: store.clone(),
            tree,
            next,
        })
    }

    /// Appends a record for `height`; durable only after [`Wal::flush`] (or `sync`).
    pub fn append(&mut self, height: u64, payload: &[u8], sync: bool) -> Result<u64, StoreError> {
        let seq = self.next;
        self.tree
            .insert(key(seq), frame(height, payload))
            .map_err(|e| self.store.err(e))?;
        self.next += 1;
        if sync {
            self.flush()?;
        }
        Ok(seq)
    }

    /// Makes every appended record durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush().map(|_| ()).map_err(|e| self.store.err(e))
    }

    /// The records of `height`, in the order they were appended.
    pub fn records(&self, height: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(|e| self.store.err(e))?;
            let (h, payload) = unframe(&v).ok_or_else(|| {
                self.store
                    .corrupt(format!("WAL record {} fails its checksum", hex_key(&k)))
            })?;
            if h == height {
                out.push(payload.to_vec());
            }
        }
        Ok(out)
    }

    /// Drops every record of a height below `height` (after that height's block is stored).
    pub fn truncate_below(&self, height: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in self.tree.iter() {
            let (k, v) = item.map_err(|e| self.store.err(e))?;
            match unframe(&v) {
                Some((h, _)) if h >= height => break,
                _ => {
                    self.tree.remove(k).map_err(|e| self.store.err(e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

fn hex_key(k: &[u8]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}
