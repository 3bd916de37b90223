//! Queries over the event index the block store writes with every block
//! (`bulwark_store::events`): which transactions (`tx_search`) or blocks (`block_search`)
//! match, in order, and which of them one page holds.
//!
//! Candidates come from the narrowest source a query offers: `tx.hash = '…'` from the hash
//! index; otherwise a condition on an application key from that key's postings (one value's
//! for `= 'string'`); otherwise the height range its `tx.height` (`block.height`) conditions
//! allow. Every candidate is then matched against the whole query, so the index only narrows,
//! never decides. A search stops at its deadline with [`SearchError::Deadline`].

use crate::{Comparison, Operand, Query, Test, EVENT_KEY};
use bulwark_store::blocks::BlockStore;
use bulwark_store::events::{Attribute, Posting, TxPosition, RESERVED_KEYS};
use bulwark_store::StoreError;
use std::collections::BTreeSet;
use std::time::Instant;
use thiserror::Error;

/// Why a search gave no answer.
#[derive(Debug, Error)]
pub enum SearchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The deadline passed.
    #[error(
        "the deadline passed after {examined} candidates: narrow the query \
         (for example with tx.height or block.height)"
    )]
    Deadline {
        /// Candidates examined by then.
        examined: usize,
    },
    /// A page beyond the last (CometBFT's message).
    #[error("page should be within [1, {pages}] range, given {page}")]
    Page {
        /// Pages there are.
        pages: usize,
        /// The page asked for.
        page: usize,
    },
}

/// A search as asked.
#[derive(Clone, Debug, PartialEq)]
pub struct Search {
    /// The query.
    pub query: Query,
    /// 1-based page.
    pub page: usize,
    /// Page size (1 to 100).
    pub per_page: usize,
    /// Highest first.
    pub descending: bool,
}

/// Candidates examined between readings of the clock.
const CHECK_EVERY: usize = 256;

struct Budget {
    deadline: Instant,
    examined: usize,
}

impl Budget {
    fn spend(&mut self) -> Result<(), SearchError> {
        self.examined += 1;
        if self.examined % CHECK_EVERY == 0 && Instant::now() > self.deadline {
            return Err(SearchError::Deadline {
                examined: self.examined,
            });
        }
        Ok(())
    }
}

/// The condition whose postings narrow the candidates most, if any names an application key.
fn posting_of(query: &Query) -> Option<Posting<'_>> {
    let applications = || {
        query
            .conditions()
            .iter()
            .filter(|c| !RESERVED_KEYS.contains(&c.key.as_str()))
    };
    applications()
        .find_map(|c| match &c.test {
            Test::Compare(Comparison::Eq, Operand::String(s)) => Some(Posting::KeyValue(&c.key, s)),
            _ => None,
        })
        .or_else(|| applications().next().map(|c| Posting::Key(&c.key)))
}

/// The `per_page` entries of 1-based `page` of `found`, highest first if `descending`.
pub fn page_of<T: Copy>(
    found: &[T],
    page: usize,
    per_page: usize,
    descending: bool,
) -> Result<Vec<T>, SearchError> {
    let per_page = per_page.max(1);
    let pages = found.len().saturating_sub(1) / per_page + 1;
    if page == 0 || page > pages {
        return Err(SearchError::Page { pages, page });
    }
    let skip = (page - 1) * per_page;
    let picked: Vec<T> = if descending {
        found
            .iter()
            .rev()
            .skip(skip)
            .take(per_page)
            .copied()
            .collect()
    } else {
        found.iter().skip(skip).take(per_page).copied().collect()
    };
    Ok(picked)
}

/// A transaction's attributes as a query sees them: the indexed ones, its hash (upper- and
/// lower-case hex: CometBFT takes either), its height and its event kind.
fn tx_attributes(at: TxPosition, hash: &[u8; 32], indexed: Vec<Attribute>) -> Vec<Attribute> {
    let mut all = indexed;
    all.push(("tx.hash".into(), hex::encode_upper(hash)));
    all.push(("tx.hash".into(), hex::encode(hash)));
    all.push(("tx.height".into(), at.0.to_string()));
    all.push((EVENT_KEY.into(), "Tx".into()));
    all
}

/// The candidates `keep` keeps, each examined within the budget.
fn collect<T, I>(
    candidates: I,
    budget: &mut Budget,
    mut keep: impl FnMut(T) -> Result<bool, SearchError>,
) -> Result<Vec<T>, SearchError>
where
    I: Iterator<Item = Result<T, StoreError>>,
    T: Ord + Copy,
{
    let mut found = BTreeSet::new();
    for candidate in candidates {
        budget.spend()?;
        let candidate = candidate?;
        if keep(candidate)? {
            found.insert(candidate);
        }
    }
    Ok(found.into_iter().collect())
}

/// The positions of the committed transactions matching `query`, in order.
pub fn matching_txs(
    blocks: &BlockStore,
    query: &Query,
    deadline: Instant,
) -> Result<Vec<TxPosition>, SearchError> {
    let mut budget = Budget {
        deadline,
        examined: 0,
    };
    let Some((low, high)) = query.integer_range("tx.height") else {
        return Ok(Vec::new());
    };
    let high = high.min(blocks.latest_height()?.unwrap_or(0));
    let keep = |at: TxPosition| -> Result<bool, SearchError> {
        if at.0 < low || at.0 > high {
            return Ok(false);
        }
        let Some((hash, indexed)) = blocks.indexed_tx(at)? else {
            return Ok(false);
        };
        Ok(query.matches(&tx_attributes(at, &hash, indexed)))
    };
    if let Some(hash) = query.equal_string("tx.hash") {
        let location = match hex::decode(hash) {
            Ok(bytes) => blocks.tx_location(&bytes)?,
            Err(_) => None,
        };
        collect(location.into_iter().map(Ok), &mut budget, keep)
    } else if let Some(posting) = posting_of(query) {
        collect(blocks.tx_postings(posting), &mut budget, keep)
    } else if low <= high {
        collect(blocks.txs_between(low, high), &mut budget, keep)
    } else {
        Ok(Vec::new())
    }
}

/// The heights of the committed blocks matching `query`, in order.
pub fn matching_blocks(
    blocks: &BlockStore,
    query: &Query,
    deadline: Instant,
) -> Result<Vec<u64>, SearchError> {
    let mut budget = Budget {
        deadline,
        examined: 0,
    };
    let Some((low, high)) = query.integer_range("block.height") else {
        return Ok(Vec::new());
    };
    let high = high.min(blocks.latest_height()?.unwrap_or(0));
    let keep = |height: u64| -> Result<bool, SearchError> {
        if height < low || height > high {
            return Ok(false);
        }
        let Some(mut attributes) = blocks.indexed_block(height)? else {
            return Ok(false);
        };
        attributes.push(("block.height".into(), height.to_string()));
        attributes.push((EVENT_KEY.into(), "NewBlock".into()));
        Ok(query.matches(&attributes))
    };
    if let Some(posting) = posting_of(query) {
        collect(blocks.block_postings(posting), &mut budget, keep)
    } else if low <= high {
        collect(blocks.blocks_between(low, high), &mut budget, keep)
    } else {
        Ok(Vec::new())
    }
}
