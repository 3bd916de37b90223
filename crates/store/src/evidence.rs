//! The digests of evidence blocks committed, with the evidence's height and time, so that a
//! restarted node never lets the same evidence be committed twice while it could still be
//! offered.

use crate::{key, Store, StoreError};
use bulwark_kv::Tree;
use bulwark_types::tendermint::Time;

/// One piece of evidence a block committed: its digest, height and time. Written with the
/// block ([`crate::blocks::DecidedHeight::evidence`]), so the log and the blocks never
/// disagree after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedEvidence {
    /// SHA-256 of the evidence's protobuf encoding.
    pub digest: [u8; 32],
    /// The height of the votes.
    pub height: u64,
    /// The time of the block at that height.
    pub time: Time,
}

impl CommittedEvidence {
    pub(crate) fn value(&self) -> Vec<u8> {
        let mut value = key(self.height).to_vec();
        value.extend(self.time.unix_timestamp_nanos().to_be_bytes());
        value
    }
}

/// The tree committed evidence lives in.
pub(crate) const TREE: &str = "evidence";

/// Committed evidence, by digest.
#[derive(Debug, Clone)]
pub struct EvidenceLog {
    tree: Tree,
    store: Store,
}

impl EvidenceLog {
    /// Opens the log in `store`.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(EvidenceLog {
            tree: store.tree(TREE)?,
            store: store.clone(),
        })
    }

    /// Every piece recorded.
    pub fn all(&self) -> Result<Vec<CommittedEvidence>, StoreError> {
        self.tree
            .entries()?
            .into_iter()
            .map(|(k, v)| {
                let digest: [u8; 32] = k
                    .as_slice()
                    .try_into()
                    .map_err(|_| self.store.corrupt("evidence digest is not 32 bytes"))?;
                let bad = || self.store.corrupt("evidence record is not height and time");
                let (height, nanos) = match (v.get(..8), v.get(8..24), v.len()) {
                    (Some(h), Some(t), 24) => (h, t),
                    _ => return Err(bad()),
                };
                let height = u64::from_be_bytes(height.try_into().map_err(|_| bad())?);
                let nanos = i128::from_be_bytes(nanos.try_into().map_err(|_| bad())?);
                let time = time_of(nanos).ok_or_else(bad)?;
                Ok(CommittedEvidence {
                    digest,
                    height,
                    time,
                })
            })
            .collect()
    }

    /// Forgets `digests` (evidence that has expired).
    pub fn forget(&self, digests: &[[u8; 32]]) -> Result<(), StoreError> {
        if digests.is_empty() {
            return Ok(());
        }
        let mut batch = bulwark_kv::Batch::default();
        for d in digests {
            batch.remove(*d);
        }
        Ok(self.tree.apply_batch(&batch)?)
    }
}

fn time_of(nanos: i128) -> Option<Time> {
    let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    Time::from_unix_timestamp(secs, sub).ok()
}
