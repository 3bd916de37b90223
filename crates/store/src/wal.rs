//! The consensus write-ahead log: every event the consensus core processes is appended (and,
//! for the node's own messages, flushed) before it is processed, so a restarted node replays
//! exactly the state it had. Records are opaque bytes framed with their height and a SHA-256
//! checksum; a damaged record is an error, never skipped.

use crate::{key, Store, StoreError};
use bulwark_kv::{Batch, Tree};
use sha2::{Digest, Sha256};

/// The write-ahead log of one node.
#[derive(Debug)]
pub struct Wal {
    store: Store,
    tree: Tree,
    next: u64,
    /// The first sequence number of each height still stored, so truncation removes keys
    /// without reading (and checksumming) the records.
    starts: std::collections::BTreeMap<u64, u64>,
    /// The lowest sequence number possibly still stored.
    oldest: u64,
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
        let mut starts = std::collections::BTreeMap::new();
        let mut oldest = None;
        let mut next = 0;
        for (k, v) in tree.entries()? {
            let seq = u64::from_be_bytes(
                k.as_slice()
                    .try_into()
                    .map_err(|_| store.corrupt("WAL key is not 8 bytes"))?,
            );
            let height = v
                .get(..8)
                .and_then(|h| h.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| store.corrupt(format!("WAL record {seq} is too short")))?;
            starts.entry(height).or_insert(seq);
            oldest.get_or_insert(seq);
            next = seq + 1;
        }
        Ok(Wal {
            store: store.clone(),
            tree,
            next,
            starts,
            oldest: oldest.unwrap_or(0),
        })
    }

    /// Appends a record for `height`; durable only after [`Wal::flush`] (or `sync`).
    pub fn append(&mut self, height: u64, payload: &[u8], sync: bool) -> Result<u64, StoreError> {
        let seq = self.next;
        self.tree.insert(key(seq), frame(height, payload))?;
        self.starts.entry(height).or_insert(seq);
        self.next += 1;
        if sync {
            self.flush()?;
        }
        Ok(seq)
    }

    /// Makes every appended record durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.tree.flush()?)
    }

    /// How many records height `height` and later heights hold (without reading them).
    pub fn count_from(&self, height: u64) -> u64 {
        self.starts
            .range(height..)
            .next()
            .map_or(0, |(_, first)| self.next - first)
    }

    /// The records of `height`, in the order they were appended.
    pub fn records(&self, height: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.tree.entries()? {
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
    pub fn truncate_below(&mut self, height: u64) -> Result<usize, StoreError> {
        let cut = self
            .starts
            .range(height..)
            .next()
            .map_or(self.next, |(_, seq)| *seq);
        let mut batch = Batch::default();
        for seq in self.oldest..cut {
            batch.remove(key(seq));
        }
        self.tree.apply_batch(&batch)?;
        let removed = cut.saturating_sub(self.oldest) as usize;
        self.oldest = self.oldest.max(cut);
        self.starts = self.starts.split_off(&height);
        Ok(removed)
    }
}

fn hex_key(k: &[u8]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}
