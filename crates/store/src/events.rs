//! The event index behind `tx_search` and `block_search`, kept as CometBFT's kv indexer keeps
//! it: the attributes an application marked `index` (as `type.key` and value), per transaction
//! and per block, written with the block in the same atomic write.
//!
//! Two trees per kind: the attributes by position (transactions by height and index, blocks by
//! height), and postings by attribute (`key`, `value`, position), so that a condition on a key
//! or a key and value reads only the positions that carry it. Keys and values are
//! length-prefixed, so any bytes an application sends cannot run one into the next.

use crate::{Store, StoreError};
use bulwark_kv::{Batch, Tree};
use std::collections::VecDeque;

/// Composite keys the node gives every transaction or block itself; an application's event
/// cannot claim them (CometBFT's kv indexer refuses them too).
pub const RESERVED_KEYS: &[&str] = &["tm.event", "tx.hash", "tx.height", "block.height"];

/// One indexed attribute: its composite key (`type.key`) and its value.
pub type Attribute = (String, String);

/// A transaction's place: height and index in its block.
pub type TxPosition = (u64, u32);

/// A committed transaction's hash and its indexed attributes.
pub type IndexedTx = ([u8; 32], Vec<Attribute>);

/// Where a posting scan looks: every position carrying a key, or a key with one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posting<'a> {
    /// Any value of the key.
    Key(&'a str),
    /// The key with exactly this value.
    KeyValue(&'a str, &'a str),
}

/// Entries read per step of a scan, and about how many bytes of keys (a posting key holds
/// its value, which an application may make large).
const STEP: usize = 1024;
const STEP_BYTES: usize = 4 << 20;

#[derive(Debug, Clone)]
pub(crate) struct EventTrees {
    store: Store,
    tx_attributes: Tree,
    tx_postings: Tree,
    block_attributes: Tree,
    block_postings: Tree,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u32).to_be_bytes());
    out.extend(s.as_bytes());
}

fn encode(attributes: &[Attribute]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in attributes {
        put_str(&mut out, k);
        put_str(&mut out, v);
    }
    out
}

fn take_str<'a>(bytes: &mut &'a [u8]) -> Option<&'a str> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    let (s, rest) = (rest.get(..len)?, rest.get(len..)?);
    *bytes = rest;
    std::str::from_utf8(s).ok()
}

fn decode(mut bytes: &[u8]) -> Option<Vec<Attribute>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let k = take_str(&mut bytes)?;
        let v = take_str(&mut bytes)?;
        out.push((k.to_string(), v.to_string()));
    }
    Some(out)
}

fn posting_prefix(posting: Posting<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match posting {
        Posting::Key(k) => put_str(&mut out, k),
        Posting::KeyValue(k, v) => {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
    }
    out
}

fn tx_key((height, index): TxPosition) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&height.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

fn tx_position(key: &[u8]) -> Option<TxPosition> {
    let (h, i) = key.split_first_chunk::<8>()?;
    let i: [u8; 4] = i.try_into().ok()?;
    Some((u64::from_be_bytes(*h), u32::from_be_bytes(i)))
}

fn height_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Positions in key order, read from a tree in bounded steps.
pub struct Scan<'a, T> {
    tree: &'a Tree,
    store: &'a Store,
    next: Option<Vec<u8>>,
    end: Option<Vec<u8>>,
    strip: usize,
    parse: fn(&[u8]) -> Option<T>,
    buffered: VecDeque<Vec<u8>>,
}

impl<T> Iterator for Scan<'_, T> {
    type Item = Result<T, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() {
            let start = self.next.take()?;
            let keys = match self
                .tree
                .range_keys(&start, self.end.as_deref(), STEP, STEP_BYTES)
            {
                Ok(keys) => keys,
                Err(e) => return Some(Err(e.into())),
            };
            // A step may stop at the byte bound: continue after its last key (an empty step
            // ends the scan).
            self.next = keys.last().map(|k| {
                let mut k = k.clone();
                k.push(0);
                k
            });
            self.buffered = keys.into_iter().collect();
        }
        let key = self.buffered.pop_front()?;
        let parsed = key
            .get(self.strip..)
            .and_then(self.parse)
            .ok_or_else(|| self.store.corrupt("an event index key does not parse"));
        Some(parsed)
    }
}

impl EventTrees {
    pub(crate) fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(EventTrees {
            store: store.clone(),
            tx_attributes: store.tree("tx_attributes")?,
            tx_postings: store.tree("tx_postings")?,
            block_attributes: store.tree("block_attributes")?,
            block_postings: store.tree("block_postings")?,
        })
    }

    /// The writes that index one height: its block's attributes and each transaction's
    /// (with its hash first). An attribute too long to be part of a database key
    /// ([`bulwark_kv::MAX_KEY_BYTES`]) is kept with its transaction or block but has no
    /// posting: a search by its value does not find it (an application's event must never
    /// stop the node).
    pub(crate) fn writes(
        &self,
        height: u64,
        block: &[Attribute],
        txs: &[([u8; 32], &[Attribute])],
    ) -> [(&Tree, Batch); 4] {
        let mut tx_attributes = Batch::default();
        let mut tx_postings = Batch::default();
        for (index, (hash, attributes)) in (0u32..).zip(txs) {
            let at = tx_key((height, index));
            let mut value = hash.to_vec();
            value.extend(encode(attributes));
            tx_attributes.insert(at, value);
            for (k, v) in attributes.iter() {
                let mut posting = posting_prefix(Posting::KeyValue(k, v));
                posting.extend(at);
                if posting.len() <= bulwark_kv::MAX_KEY_BYTES {
                    tx_postings.insert(posting, []);
                }
            }
        }
        let mut block_attributes = Batch::default();
        let mut block_postings = Batch::default();
        block_attributes.insert(height.to_be_bytes(), encode(block));
        for (k, v) in block {
            let mut posting = posting_prefix(Posting::KeyValue(k, v));
            posting.extend(height.to_be_bytes());
            if posting.len() <= bulwark_kv::MAX_KEY_BYTES {
                block_postings.insert(posting, []);
            }
        }
        [
            (&self.tx_attributes, tx_attributes),
            (&self.tx_postings, tx_postings),
            (&self.block_attributes, block_attributes),
            (&self.block_postings, block_postings),
        ]
    }

    pub(crate) fn tx(&self, at: TxPosition) -> Result<Option<IndexedTx>, StoreError> {
        let Some(value) = self.tx_attributes.get(tx_key(at))? else {
            return Ok(None);
        };
        value
            .split_first_chunk::<32>()
            .and_then(|(hash, rest)| Some((*hash, decode(rest)?)))
            .map(Some)
            .ok_or_else(|| {
                self.store
                    .corrupt("a transaction's indexed attributes do not parse")
            })
    }

    pub(crate) fn block(&self, height: u64) -> Result<Option<Vec<Attribute>>, StoreError> {
        let Some(value) = self.block_attributes.get(height.to_be_bytes())? else {
            return Ok(None);
        };
        decode(&value).map(Some).ok_or_else(|| {
            self.store
                .corrupt("a block's indexed attributes do not parse")
        })
    }

    pub(crate) fn txs_between(&self, from: u64, to: u64) -> Scan<'_, TxPosition> {
        self.scan(
            &self.tx_attributes,
            from.to_be_bytes().to_vec(),
            to,
            0,
            tx_position,
        )
    }

    pub(crate) fn blocks_between(&self, from: u64, to: u64) -> Scan<'_, u64> {
        self.scan(
            &self.block_attributes,
            from.to_be_bytes().to_vec(),
            to,
            0,
            height_of,
        )
    }

    fn scan<'a, T>(
        &'a self,
        tree: &'a Tree,
        start: Vec<u8>,
        to: u64,
        strip: usize,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Scan<'a, T> {
        Scan {
            tree,
            store: &self.store,
            next: Some(start),
            end: to.checked_add(1).map(|e| e.to_be_bytes().to_vec()),
            strip,
            parse,
            buffered: VecDeque::new(),
        }
    }

    fn postings<'a, T>(
        &'a self,
        tree: &'a Tree,
        posting: Posting<'_>,
        parse: fn(&[u8]) -> Option<T>,
    ) -> Scan<'a, T> {
        let prefix = posting_prefix(posting);
        let end = bulwark_kv::prefix_end(&prefix);
        // After a key's prefix come the value (length-prefixed) and the position.
        let strip = prefix.len();
        Scan {
            tree,
            store: &self.store,
            next: Some(prefix),
            end,
            strip,
            parse,
            buffered: VecDeque::new(),
        }
    }

    pub(crate) fn tx_postings(&self, posting: Posting<'_>) -> Scan<'_, TxPosition> {
        match posting {
            Posting::KeyValue(..) => self.postings(&self.tx_postings, posting, tx_position),
            Posting::Key(_) => self.postings(&self.tx_postings, posting, |rest| {
                let mut rest = rest;
                take_str(&mut rest)?;
                tx_position(rest)
            }),
        }
    }

    pub(crate) fn block_postings(&self, posting: Posting<'_>) -> Scan<'_, u64> {
        match posting {
            Posting::KeyValue(..) => self.postings(&self.block_postings, posting, height_of),
            Posting::Key(_) => self.postings(&self.block_postings, posting, |rest| {
                let mut rest = rest;
                take_str(&mut rest)?;
                height_of(rest)
            }),
        }
    }
}
