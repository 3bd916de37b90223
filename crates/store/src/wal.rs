//! The consensus write-ahead log: every event the consensus core processes is appended before
//! it is processed, so a restarted node replays the state it had. Nothing is flushed here: the
//! log shares its database, and so its journal, with the privval's last-sign-state, whose
//! flush before every signature makes all earlier records durable with it; what the node
//! signed and the block it proposed are never lost while the signature is kept. Records are opaque bytes framed with their height and an
//! HMAC-SHA-256 tag under the store's key over the label, the record's sequence number, its
//! height and its payload; a damaged or forged record (or one moved to another place) is an
//! error, never replayed.

use crate::{key, mac, Store, StoreError, WAL_TAG};
use bulwark_kv::{Batch, Tree};

/// The label every WAL tag covers.
const WAL_LABEL: &[u8] = b"bulwark/wal/v1";

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

fn tag(mac_key: &[u8; 32], seq: &[u8], height: &[u8], payload: &[u8]) -> [u8; WAL_TAG] {
    let full = mac(mac_key, &[WAL_LABEL, seq, height, payload]);
    let mut out = [0; WAL_TAG];
    out.copy_from_slice(&full[..WAL_TAG]);
    out
}

fn frame(mac_key: &[u8; 32], seq: u64, height: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + WAL_TAG + payload.len());
    out.extend_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&tag(mac_key, &key(seq), &height.to_be_bytes(), payload));
    out.extend_from_slice(payload);
    out
}

fn unframe<'a>(mac_key: &[u8; 32], seq: &[u8], bytes: &'a [u8]) -> Option<(u64, &'a [u8])> {
    if bytes.len() < 8 + WAL_TAG {
        return None;
    }
    let height = u64::from_be_bytes(bytes[..8].try_into().ok()?);
    let payload = &bytes[8 + WAL_TAG..];
    // Compared whole; a forger learns nothing useful from timing of a 16-byte tag it cannot
    // compute.
    (tag(mac_key, seq, &bytes[..8], payload)[..] == bytes[8..8 + WAL_TAG])
        .then_some((height, payload))
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
            // Truncation removes whole heights from the front and a crash loses a suffix, so
            // the records left are consecutive: a gap is a record the host removed (an own
            // block, say, whose proposal the privval still remembers signing).
            if oldest.is_some() && seq != next {
                return Err(store.corrupt(format!(
                    "WAL record {seq} follows record {}: the records between were removed",
                    next.saturating_sub(1)
                )));
            }
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

    /// Appends a record for `height`; durable at the next flush of its database
    /// ([`Wal::flush`], or any other store's flush: they share one journal).
    pub fn append(&mut self, height: u64, payload: &[u8]) -> Result<u64, StoreError> {
        let seq = self.next;
        self.tree
            .insert(key(seq), frame(self.store.mac_key(), seq, height, payload))?;
        self.starts.entry(height).or_insert(seq);
        self.next += 1;
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
            let (h, payload) = unframe(self.store.mac_key(), &k, &v).ok_or_else(|| {
                self.store.corrupt(format!(
                    "WAL record {} fails its MAC: damaged or not written by this node",
                    hex_key(&k)
                ))
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
