//! WAL and block store: order, durability across reopen, gaps refused, damage reported.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_store::blocks::{BlockStore, DecidedHeight};
use bulwark_store::wal::Wal;
use bulwark_store::{Store, StoreError};

#[test]
fn wal_replays_a_heights_records_in_order_after_reopen_and_truncates() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut wal = Wal::open(&store).unwrap();
        for (h, r) in [(1u64, "a"), (1, "b"), (2, "c"), (2, "d"), (2, "e")] {
            wal.append(h, r.as_bytes()).unwrap();
        }
        wal.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let mut wal = Wal::open(&store).unwrap();
    assert_eq!(
        wal.records(2).unwrap(),
        vec![b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]
    );
    wal.append(2, b"f").unwrap();
    wal.flush().unwrap();
    assert_eq!(wal.records(2).unwrap().last().unwrap(), b"f");
    assert_eq!(wal.truncate_below(2).unwrap(), 2);
    assert!(wal.records(1).unwrap().is_empty());
    assert_eq!(wal.records(2).unwrap().len(), 4);
    wal.append(3, b"g").unwrap();
    wal.flush().unwrap();
    drop(wal);
    drop(store);
    // Reopened, it still knows where each height starts: truncation removes exactly height 2.
    let store = Store::open(dir.path()).unwrap();
    let mut wal = Wal::open(&store).unwrap();
    assert_eq!(wal.truncate_below(3).unwrap(), 4);
    assert!(wal.records(2).unwrap().is_empty());
    assert_eq!(wal.records(3).unwrap(), vec![b"g".to_vec()]);
    assert_eq!(wal.truncate_below(3).unwrap(), 0);
}

#[test]
fn block_store_keeps_heights_without_gaps_and_finds_blocks_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let blocks = BlockStore::open(&store).unwrap();
        assert_eq!(blocks.latest_height().unwrap(), None);
        blocks
            .save(decided(1, b"hash-1", b"block-1", b"commit-1", b"state-1"))
            .unwrap();
        blocks
            .save(decided(2, b"hash-2", b"block-2", b"commit-2", b"state-2"))
            .unwrap();
        assert!(matches!(
            blocks.save(decided(4, b"hash-4", b"b", b"c", b"s")),
            Err(StoreError::Refused(_))
        ));
        assert!(matches!(
            blocks.save(decided(2, b"hash-2b", b"b", b"c", b"s")),
            Err(StoreError::Refused(_))
        ));
    }
    let store = Store::open(dir.path()).unwrap();
    let blocks = BlockStore::open(&store).unwrap();
    assert_eq!(blocks.latest_height().unwrap(), Some(2));
    assert_eq!(blocks.block(2).unwrap().unwrap(), b"block-2");
    assert_eq!(blocks.commit(1).unwrap().unwrap(), b"commit-1");
    assert_eq!(blocks.state(2).unwrap().unwrap(), b"state-2");
    assert_eq!(blocks.results(2).unwrap().unwrap(), b"results of state-2");
    assert_eq!(blocks.height_of(b"hash-1").unwrap(), Some(1));
    assert_eq!(blocks.height_of(b"nope").unwrap(), None);
    assert_eq!(blocks.block(3).unwrap(), None);
    // Reopened, it knows where it stopped.
    assert!(matches!(
        blocks.save(decided(4, b"hash-4", b"b", b"c", b"s")),
        Err(StoreError::Refused(_))
    ));
    blocks
        .save(decided(3, b"hash-3", b"block-3", b"c", b"s"))
        .unwrap();
    assert_eq!(blocks.latest_height().unwrap(), Some(3));
}

/// A decided height whose results are derived from the state's bytes.
fn decided<'a>(
    height: u64,
    hash: &'a [u8],
    block: &'a [u8],
    commit: &'a [u8],
    state: &'a [u8],
) -> DecidedHeight<'a> {
    let results: &'static [u8] = match state {
        b"state-2" => b"results of state-2",
        _ => b"results",
    };
    DecidedHeight {
        height,
        hash,
        block,
        commit,
        extensions: &[],
        state,
        results,
        evidence: &[],
        txs: &[],
        tx_attributes: &[],
        block_attributes: &[],
    }
}

#[test]
fn a_damaged_store_is_a_clear_error_at_open_not_a_crash_or_silent_loss() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let blocks = BlockStore::open(&store).unwrap();
        for h in 1..=50u64 {
            blocks
                .save(decided(
                    h,
                    &h.to_be_bytes(),
                    &vec![h as u8; 4096],
                    b"c",
                    b"s",
                ))
                .unwrap();
        }
    }
    // Overwrite every file of the database with garbage.
    for entry in walk(dir.path()) {
        let len = std::fs::metadata(&entry).unwrap().len() as usize;
        std::fs::write(&entry, vec![0xA5; len.max(64)]).unwrap();
    }
    match Store::open(dir.path()) {
        Err(e @ StoreError::Corrupt { .. }) => {
            assert!(
                e.to_string().contains(&dir.path().display().to_string()),
                "{e}"
            );
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("garbage files opened as a store"),
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// What a host that holds the disk but not the node's key can do to the WAL: write records
/// framed under another key (the old public checksum's equivalent), or move genuine ones.
#[test]
fn wal_records_forged_or_moved_without_the_key_are_refused_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let key = [7u8; 32];
    {
        let store = Store::open(dir.path()).unwrap().with_mac_key(key);
        let mut wal = Wal::open(&store).unwrap();
        wal.append(1, b"genuine").unwrap();
        wal.flush().unwrap();
        wal.append(1, b"second").unwrap();
        wal.flush().unwrap();
    }
    // A host's record: framed by the same code, under a key it chose.
    {
        let host = Store::open(dir.path()).unwrap().with_mac_key([0; 32]);
        let mut wal = Wal::open(&host).unwrap();
        wal.append(1, b"own_block chosen by the host").unwrap();
        wal.flush().unwrap();
        let refused = wal.records(1).unwrap_err().to_string();
        assert!(refused.contains("fails its MAC"), "{refused}");
    }
    let store = Store::open(dir.path()).unwrap().with_mac_key(key);
    let wal = Wal::open(&store).unwrap();
    match wal.records(1) {
        Err(StoreError::Corrupt { path, reason }) => {
            assert_eq!(path, dir.path());
            assert!(reason.contains("fails its MAC"), "{reason}");
        }
        other => panic!("a forged record was accepted: {other:?}"),
    }
    // Remove the forgery; a genuine record copied to another position is refused too.
    let tree = store.db().tree("wal").unwrap();
    tree.remove(2u64.to_be_bytes()).unwrap();
    assert_eq!(wal.records(1).unwrap().len(), 2);
    let genuine = tree.get(0u64.to_be_bytes()).unwrap().unwrap();
    tree.insert(1u64.to_be_bytes(), genuine).unwrap();
    assert!(matches!(wal.records(1), Err(StoreError::Corrupt { .. })));
}

/// A host that removes a record from the middle of the log (the own block a signed proposal
/// needs, say) leaves a gap the next start refuses, naming the records on either side; a
/// removed suffix is what a crash leaves, and a truncated prefix what commits leave.
#[test]
fn a_wal_record_removed_from_the_middle_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap().with_mac_key([7; 32]);
    let mut wal = Wal::open(&store).unwrap();
    for record in [&b"proposal"[..], b"own block", b"prevote", b"precommit"] {
        wal.append(5, record).unwrap();
    }
    wal.flush().unwrap();
    let tree = store.db().tree("wal").unwrap();
    tree.remove(3u64.to_be_bytes()).unwrap();
    assert_eq!(Wal::open(&store).unwrap().records(5).unwrap().len(), 3);
    tree.remove(1u64.to_be_bytes()).unwrap();
    match Wal::open(&store) {
        Err(StoreError::Corrupt { reason, .. }) => {
            assert!(reason.contains("WAL record 2 follows record 0"), "{reason}")
        }
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("a WAL with a record removed from its middle was opened"),
    }
}

#[test]
fn committed_transactions_are_found_by_hash_and_a_failed_copy_never_hides_a_success() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blocks = BlockStore::open(&store).unwrap();
    let (ok, failed) = (true, false);
    let heights: [Vec<([u8; 32], bool)>; 4] = [
        vec![([1; 32], ok), ([2; 32], ok), ([5; 32], failed)],
        // A failed replay of tx 1 (a byzantine proposer's): the success stays indexed.
        vec![([3; 32], ok), ([1; 32], failed), ([5; 32], failed)],
        // In one block: the success stays; a failed one after a failed one takes the entry.
        vec![([4; 32], ok), ([4; 32], failed)],
        // A later success takes the entry, as in CometBFT.
        vec![([1; 32], ok)],
    ];
    for (height, txs) in (1u64..).zip(&heights) {
        let mut decided = decided(height, b"hash", b"block", b"commit", b"state");
        let hash = height.to_be_bytes();
        let attributes = vec![Vec::new(); txs.len()];
        decided.hash = &hash;
        decided.txs = txs;
        decided.tx_attributes = &attributes;
        blocks.save(decided).unwrap();
    }
    assert_eq!(blocks.tx_location(&[2; 32]).unwrap(), Some((1, 1)));
    assert_eq!(blocks.tx_location(&[3; 32]).unwrap(), Some((2, 0)));
    assert_eq!(blocks.tx_location(&[4; 32]).unwrap(), Some((3, 0)));
    assert_eq!(blocks.tx_location(&[5; 32]).unwrap(), Some((2, 2)));
    assert_eq!(blocks.tx_location(&[1; 32]).unwrap(), Some((4, 0)));
    assert_eq!(blocks.tx_location(&[9; 32]).unwrap(), None);
    drop(blocks);
    drop(store);
    let reopened = BlockStore::open(&Store::open(dir.path()).unwrap()).unwrap();
    assert_eq!(reopened.tx_location(&[2; 32]).unwrap(), Some((1, 1)));
}

fn attribute(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[test]
fn the_event_index_finds_positions_by_key_by_value_and_by_height_across_scan_steps() {
    use bulwark_store::events::Posting;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blocks = BlockStore::open(&store).unwrap();
    // 3 heights of 1,500 transactions each: scans cross their 1,024-entry steps.
    let per_height = 1_500u32;
    for height in 1u64..=3 {
        let txs: Vec<([u8; 32], bool)> = (0..per_height)
            .map(|i| {
                let mut h = [0u8; 32];
                h[..8].copy_from_slice(&height.to_be_bytes());
                h[8..12].copy_from_slice(&i.to_be_bytes());
                (h, true)
            })
            .collect();
        let attributes: Vec<Vec<(String, String)>> = (0..per_height)
            .map(|i| {
                let mut a = vec![attribute(
                    "app.parity",
                    if i % 2 == 0 { "even" } else { "odd" },
                )];
                if i % 500 == 7 {
                    a.push(attribute("app.rare", &format!("r{height}")));
                }
                // Keys and values that would run together without length prefixes.
                a.push(attribute("app.k\0x", "\0"));
                a
            })
            .collect();
        let block_attributes = if height == 2 {
            vec![attribute("block.writes", "1500"), attribute("ab", "c")]
        } else {
            vec![]
        };
        let mut d = decided(height, b"hash", b"block", b"commit", b"state");
        let hash = height.to_be_bytes();
        d.hash = &hash;
        d.txs = &txs;
        d.tx_attributes = &attributes;
        d.block_attributes = &block_attributes;
        blocks.save(d).unwrap();
    }
    let all = |scan: bulwark_store::events::Scan<'_, (u64, u32)>| -> Vec<(u64, u32)> {
        scan.map(Result::unwrap).collect()
    };
    let rare = all(blocks.tx_postings(Posting::Key("app.rare")));
    assert_eq!(rare.len(), 9, "{rare:?}");
    assert!(rare.contains(&(2, 507)) && rare.contains(&(3, 1007)));
    assert_eq!(
        all(blocks.tx_postings(Posting::KeyValue("app.rare", "r2"))),
        vec![(2, 7), (2, 507), (2, 1007)]
    );
    assert!(all(blocks.tx_postings(Posting::KeyValue("app.rare", "r"))).is_empty());
    assert!(all(blocks.tx_postings(Posting::Key("app.rar"))).is_empty());
    let even = all(blocks.tx_postings(Posting::KeyValue("app.parity", "even")));
    assert_eq!(even.len(), 3 * 750);
    assert!(even.iter().all(|(_, i)| i % 2 == 0));
    assert_eq!(
        all(blocks.tx_postings(Posting::Key("app.parity"))).len(),
        4_500
    );
    assert_eq!(
        all(blocks.tx_postings(Posting::Key("app.k\0x"))).len(),
        4_500
    );
    let between = all(blocks.txs_between(2, 3));
    assert_eq!(between.len(), 3_000);
    assert_eq!(between.first(), Some(&(2, 0)));
    assert_eq!(between.last(), Some(&(3, per_height - 1)));
    assert!(between.windows(2).all(|w| w[0] < w[1]), "in order");
    let (hash, attributes) = blocks.indexed_tx((3, 7)).unwrap().unwrap();
    assert_eq!(hash[..8], 3u64.to_be_bytes());
    assert_eq!(
        attributes,
        vec![
            attribute("app.parity", "odd"),
            attribute("app.rare", "r3"),
            attribute("app.k\0x", "\0")
        ]
    );
    assert_eq!(blocks.indexed_tx((3, per_height)).unwrap(), None);
    let heights: Vec<u64> = blocks
        .blocks_between(1, u64::MAX)
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        heights,
        vec![1, 2, 3],
        "every height is indexed, with or without events"
    );
    let writes: Vec<u64> = blocks
        .block_postings(Posting::Key("block.writes"))
        .map(Result::unwrap)
        .collect();
    assert_eq!(writes, vec![2]);
    assert_eq!(blocks.indexed_block(3).unwrap(), Some(vec![]));
    assert_eq!(
        blocks.indexed_block(2).unwrap().unwrap()[1],
        attribute("ab", "c")
    );
    // One transaction's attributes missing: refused, nothing written.
    let mut d = decided(4, b"hash", b"block", b"commit", b"state");
    let hash = 4u64.to_be_bytes();
    d.hash = &hash;
    d.txs = &[([4; 32], true)];
    assert!(matches!(blocks.save(d), Err(StoreError::Refused(_))));
    assert_eq!(blocks.latest_height().unwrap(), Some(3));
}

/// An application's attribute too long to be part of a database key: the block is stored, the
/// transaction is found by hash and by its other attributes, the long one is kept with it but
/// has no posting. (A posting of it would be a key fjall cannot store: the node would stop.)
#[test]
fn an_attribute_longer_than_a_database_key_is_kept_but_not_searchable() {
    use bulwark_store::events::Posting;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blocks = BlockStore::open(&store).unwrap();
    let long = "v".repeat(70_000);
    let attributes = vec![vec![
        attribute("app.key", &long),
        attribute("app.short", "s"),
    ]];
    let block_attributes = vec![attribute("block.long", &long)];
    let mut d = decided(1, b"hash", b"block", b"commit", b"state");
    let tx = [9u8; 32];
    let txs = [(tx, true)];
    d.txs = &txs;
    d.tx_attributes = &attributes;
    d.block_attributes = &block_attributes;
    blocks.save(d).unwrap();
    let postings =
        |p: Posting<'_>| -> Vec<(u64, u32)> { blocks.tx_postings(p).map(Result::unwrap).collect() };
    assert_eq!(postings(Posting::KeyValue("app.short", "s")), vec![(1, 0)]);
    assert!(postings(Posting::KeyValue("app.key", &long)).is_empty());
    assert_eq!(blocks.tx_location(&tx).unwrap(), Some((1, 0)));
    assert_eq!(blocks.indexed_tx((1, 0)).unwrap().unwrap().1, attributes[0]);
    assert_eq!(blocks.indexed_block(1).unwrap(), Some(block_attributes));
    drop((blocks, store));
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        BlockStore::open(&store).unwrap().latest_height().unwrap(),
        Some(1)
    );
}

/// `tx_index.indexer = "null"`: the block store keeps every block, commit, state and result,
/// and writes neither the transaction nor the event index (three database keys a transaction
/// fewer); the same heights indexed find everything.
#[test]
fn a_store_without_indexes_keeps_blocks_and_writes_no_index() {
    use bulwark_store::events::Posting;
    let save = |indexing: bool| -> (tempfile::TempDir, BlockStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().with_indexes(indexing);
        let blocks = BlockStore::open(&store).unwrap();
        assert_eq!(blocks.indexing(), indexing);
        let txs = [([1u8; 32], true), ([2u8; 32], false)];
        let attributes = vec![vec![attribute("app.key", "a")], vec![]];
        let block_attributes = vec![attribute("block.writes", "1")];
        let mut d = decided(1, b"hash-1", b"block-1", b"commit-1", b"state-1");
        d.txs = &txs;
        d.tx_attributes = &attributes;
        d.block_attributes = &block_attributes;
        blocks.save(d).unwrap();
        (dir, blocks)
    };
    for indexing in [true, false] {
        let (_dir, blocks) = save(indexing);
        assert_eq!(blocks.block(1).unwrap().as_deref(), Some(&b"block-1"[..]));
        assert_eq!(blocks.results(1).unwrap().as_deref(), Some(&b"results"[..]));
        assert_eq!(blocks.height_of(b"hash-1").unwrap(), Some(1));
        let found = blocks.tx_location(&[1u8; 32]).unwrap();
        let postings = blocks
            .tx_postings(Posting::Key("app.key"))
            .map(Result::unwrap)
            .count();
        let block_postings = blocks
            .block_postings(Posting::Key("block.writes"))
            .map(Result::unwrap)
            .count();
        let positions = blocks.txs_between(1, 1).map(Result::unwrap).count();
        if indexing {
            assert_eq!(found, Some((1, 0)));
            assert_eq!((postings, block_postings, positions), (1, 1, 2));
        } else {
            assert_eq!(found, None);
            assert_eq!((postings, block_postings, positions), (0, 0, 0));
        }
    }
}

/// Indexing turned on again over heights stored without it (the host rewrote config.toml)
/// is refused: the gap would make `tx` and the searches deny committed transactions. The
/// other way round, and staying unindexed, open.
#[test]
fn indexing_again_over_unindexed_heights_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap().with_indexes(false);
        let blocks = BlockStore::open(&store).unwrap();
        blocks
            .save(decided(1, b"hash-1", b"block-1", b"commit-1", b"state-1"))
            .unwrap();
    }
    let reopen = |indexing: bool| {
        let store = Store::open(dir.path()).unwrap().with_indexes(indexing);
        BlockStore::open(&store).map(|_| ())
    };
    match reopen(true) {
        Err(StoreError::Refused(why)) => assert!(why.contains("heights up to 1"), "{why}"),
        other => panic!("indexing again was not refused: {other:?}"),
    }
    reopen(false).unwrap();
    // An indexed store may stop indexing.
    let indexed = tempfile::tempdir().unwrap();
    {
        let store = Store::open(indexed.path()).unwrap();
        let blocks = BlockStore::open(&store).unwrap();
        blocks
            .save(decided(1, b"hash-1", b"block-1", b"commit-1", b"state-1"))
            .unwrap();
    }
    let store = Store::open(indexed.path()).unwrap().with_indexes(false);
    BlockStore::open(&store).unwrap();
}
