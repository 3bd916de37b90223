//! Both backends behave the same for readers and writers, and the simulated disk loses exactly
//! what a crash loses: writes after the last flush (or all but a prefix of them).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_kv::{Batch, Db, MemDisk, Tree, MAX_MEMTABLE_BYTES, MIN_MEMTABLE_BYTES};

/// The same writes against a database, and what a reader then sees.
fn exercise(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    let a = db.tree("a").unwrap();
    let b = db.tree("b").unwrap();
    a.insert(b"k1", b"v1").unwrap();
    a.insert(b"k3", b"v3").unwrap();
    a.insert(b"k2", b"v2").unwrap();
    a.remove(b"k3").unwrap();
    let mut batch_a = Batch::default();
    batch_a.insert(b"k9", b"v9");
    batch_a.remove(b"k1");
    let mut batch_b = Batch::default();
    batch_b.insert(b"x", b"y");
    db.write_atomically(&[(&a, &batch_a), (&b, &batch_b)])
        .unwrap();
    assert_eq!(a.get(b"k2").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(a.get(b"k1").unwrap(), None);
    assert_eq!(a.last().unwrap().unwrap().0, b"k9".to_vec());
    assert_eq!(b.len().unwrap(), 1);
    for k in [&b"k5"[..], b"k6", b"k7"] {
        a.insert(k, b"r").unwrap();
    }
    let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
        entries.into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(
        keys(a.range(b"k3", Some(b"k7"), 10).unwrap()),
        vec![b"k5".to_vec(), b"k6".to_vec()],
        "end is excluded, start included when present"
    );
    assert_eq!(
        keys(a.range(b"k5", None, 2).unwrap()),
        vec![b"k5".to_vec(), b"k6".to_vec()]
    );
    assert_eq!(
        keys(a.range(b"k7\0", None, 10).unwrap()),
        vec![b"k9".to_vec()]
    );
    assert_eq!(
        a.range_keys(b"k3", Some(b"k7"), 10, 1 << 20).unwrap(),
        vec![b"k5".to_vec(), b"k6".to_vec()]
    );
    assert_eq!(
        a.range_keys(b"k", None, 10, 3).unwrap(),
        vec![b"k2".to_vec(), b"k5".to_vec()],
        "past the first key, no more than about max_bytes"
    );
    assert_eq!(
        a.range_keys(b"k", None, 10, 0).unwrap(),
        vec![b"k2".to_vec()]
    );
    for k in [&b"k5"[..], b"k6", b"k7"] {
        a.remove(k).unwrap();
    }
    a.entries().unwrap()
}

#[test]
fn fjall_and_the_simulated_disk_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = exercise(&Db::open(dir.path()).unwrap());
    let in_memory = exercise(&Db::on(&MemDisk::new("t")));
    assert_eq!(on_disk, in_memory);
    assert_eq!(
        in_memory,
        vec![
            (b"k2".to_vec(), b"v2".to_vec()),
            (b"k9".to_vec(), b"v9".to_vec())
        ]
    );
}

/// A batch is applied as its writes in order, whatever order fjall inserts them in (it takes
/// them sorted by key): the last write of a key wins, on both backends, and again after the
/// database is reopened from its journal.
#[test]
fn a_batch_that_writes_keys_out_of_order_and_again_reads_back_as_written_in_order() {
    let write = |db: &Db| {
        let t = db.tree("t").unwrap();
        t.insert(b"kept", b"old").unwrap();
        let mut batch = Batch::default();
        batch.insert(b"z", b"1");
        batch.insert(b"a", b"first");
        batch.remove(b"kept");
        batch.insert(b"a", b"second");
        batch.insert(b"m", b"gone");
        batch.insert(b"kept", b"new");
        batch.remove(b"m");
        batch.insert(b"a", b"third");
        // Many writes of a few keys, interleaved: a sort that does not keep their order
        // (an unstable one) lets an earlier write win.
        for i in 0..400u32 {
            batch.insert([b'n', (i * 7 % 5) as u8], i.to_be_bytes());
        }
        db.write_atomically(&[(&t, &batch)]).unwrap();
        db.flush().unwrap();
        t.entries().unwrap()
    };
    let mut expected = vec![
        (b"a".to_vec(), b"third".to_vec()),
        (b"kept".to_vec(), b"new".to_vec()),
    ];
    for k in 0..5u8 {
        let last = (0..400u32)
            .filter(|i| (i * 7 % 5) as u8 == k)
            .max()
            .unwrap();
        expected.push((vec![b'n', k], last.to_be_bytes().to_vec()));
    }
    expected.push((b"z".to_vec(), b"1".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(write(&Db::open(dir.path()).unwrap()), expected);
    let reopened = Db::open(dir.path()).unwrap().tree("t").unwrap();
    assert_eq!(
        reopened.entries().unwrap(),
        expected,
        "after replaying the journal"
    );
    assert_eq!(write(&Db::on(&MemDisk::new("t"))), expected);
}

#[test]
fn a_crash_loses_every_write_after_the_last_flush() {
    let disk = MemDisk::new("t");
    let db = Db::on(&disk);
    let t = db.tree("t").unwrap();
    t.insert(b"flushed", b"1").unwrap();
    db.flush().unwrap();
    t.insert(b"lost", b"2").unwrap();
    assert_eq!(disk.unflushed(), 1);
    disk.crash(0);
    assert!(
        t.get(b"flushed").is_err(),
        "a handle from before the crash must not work"
    );
    let t = Db::on(&disk).tree("t").unwrap();
    assert_eq!(t.get(b"flushed").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(t.get(b"lost").unwrap(), None);
}

#[test]
fn a_torn_crash_keeps_a_prefix_of_the_unflushed_writes_and_never_half_an_atomic_one() {
    let disk = MemDisk::new("t");
    let db = Db::on(&disk);
    let (a, b) = (db.tree("a").unwrap(), db.tree("b").unwrap());
    a.insert(b"1", b"x").unwrap();
    let (mut ba, mut bb) = (Batch::default(), Batch::default());
    ba.insert(b"2", b"x");
    bb.insert(b"2", b"x");
    db.write_atomically(&[(&a, &ba), (&b, &bb)]).unwrap();
    a.insert(b"3", b"x").unwrap();
    disk.crash(2);
    let db = Db::on(&disk);
    let (a, b) = (db.tree("a").unwrap(), db.tree("b").unwrap());
    assert!(a.get(b"1").unwrap().is_some());
    assert!(a.get(b"2").unwrap().is_some() && b.get(b"2").unwrap().is_some());
    assert!(a.get(b"3").unwrap().is_none());
}

#[test]
fn a_copy_is_what_the_disk_would_hold_after_a_crash_and_lives_on_its_own() {
    let disk = MemDisk::new("t");
    let db = Db::on(&disk);
    let t = db.tree("t").unwrap();
    t.insert(b"old", b"1").unwrap();
    db.flush().unwrap();
    t.insert(b"unflushed", b"1").unwrap();
    let snapshot = disk.copy("snapshot");
    t.insert(b"new", b"1").unwrap();
    db.flush().unwrap();
    let s = Db::on(&snapshot).tree("t").unwrap();
    assert!(s.get(b"old").unwrap().is_some());
    assert!(s.get(b"unflushed").unwrap().is_none() && s.get(b"new").unwrap().is_none());
    // Restoring the snapshot rolls the disk back.
    disk.restore(&snapshot);
    let t = Db::on(&disk).tree("t").unwrap();
    assert!(t.get(b"new").unwrap().is_none());
}

/// Trees are keyspaces of one fjall keyspace: none sees another's keys, whatever the names and
/// keys (a name that extends another's, keys of 0xff bytes at a keyspace's end).
#[test]
fn trees_never_see_each_others_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).unwrap();
    let longest = "z".repeat(255);
    let names = ["a", "ab", "b", "", longest.as_str()];
    for (i, name) in names.iter().enumerate() {
        let t = db.tree(name).unwrap();
        t.insert([0xff; 3], [i as u8]).unwrap();
        t.insert([], [i as u8]).unwrap();
        t.insert(name.as_bytes(), [i as u8]).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let t = db.tree(name).unwrap();
        let entries = t.entries().unwrap();
        assert_eq!(
            entries.len(),
            if name.is_empty() { 2 } else { 3 },
            "{name:?}"
        );
        assert!(
            entries.iter().all(|(_, v)| v == &[i as u8]),
            "{name:?}: {entries:?}"
        );
        assert_eq!(t.last().unwrap().unwrap(), (vec![0xff; 3], vec![i as u8]));
        assert_eq!(t.range(&[], None, 10).unwrap(), entries);
        assert_eq!(t.range(&[], Some(&[0xff; 4]), 10).unwrap(), entries);
        assert_eq!(
            t.range_keys(&[], None, 10, 1 << 20).unwrap().len(),
            entries.len()
        );
        assert_eq!(t.len().unwrap(), entries.len());
    }
    assert!(
        db.tree(&"x".repeat(256)).is_err(),
        "a name longer than 255 bytes"
    );
}

/// Whether sled's files are still in `dir`.
fn has_sled_files(dir: &std::path::Path) -> bool {
    ["conf", "db", "blobs"].iter().any(|f| dir.join(f).exists())
}

/// A database an earlier version wrote, one sled tree per name, opens with every entry in
/// its tree, imported into fjall, and sled's files are gone.
#[test]
fn a_database_with_a_sled_tree_per_name_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<(Vec<u8>, Vec<u8>)> = (0u32..10_000)
        .map(|i| (i.to_be_bytes().to_vec(), i.to_le_bytes().to_vec()))
        .collect();
    {
        let db = sled::open(dir.path()).unwrap();
        let blocks = db.open_tree("blocks").unwrap();
        for (k, v) in &old {
            blocks.insert(k, v.as_slice()).unwrap();
        }
        db.open_tree("meta")
            .unwrap()
            .insert(b"height", b"7")
            .unwrap();
        db.flush().unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    assert!(
        !has_sled_files(dir.path()),
        "sled's files outlived the import"
    );
    assert_eq!(db.tree("blocks").unwrap().entries().unwrap(), old);
    assert_eq!(
        db.tree("meta").unwrap().get(b"height").unwrap().as_deref(),
        Some(&b"7"[..])
    );
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(db.tree("blocks").unwrap().len().unwrap(), old.len());
}

/// sled's own handle on a database this process closed a moment ago (its lock is released
/// once sled's I/O threads let go).
fn open_raw(path: &std::path::Path) -> sled::Db {
    for _ in 0..500 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the database stayed locked");
}

/// A move into keyspaces cut short by a crash: some entries are in the keyspace already, the
/// rest still in the old tree (each step moves entries in one transaction). The next open
/// finishes it, and every entry is there once.
#[test]
fn a_move_into_keyspaces_cut_short_goes_on_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let old = db.open_tree("wal").unwrap();
        for i in 0u32..100 {
            // Entries 0..40 moved before the crash: in the keyspace (prefix: length, name).
            let key = i.to_be_bytes();
            if i < 40 {
                db.insert([&[3u8][..], b"wal", &key].concat(), &key)
                    .unwrap();
            } else {
                old.insert(key, &key).unwrap();
            }
        }
        db.flush().unwrap();
    }
    let db = Db::open(dir.path()).unwrap();
    let entries = db.tree("wal").unwrap().entries().unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = (0u32..100)
        .map(|i| (i.to_be_bytes().to_vec(), i.to_be_bytes().to_vec()))
        .collect();
    assert_eq!(entries, expected);
}

/// A sled database in keyspaces with `n` WAL entries, as the last sled version wrote it.
fn sled_in_keyspaces(dir: &std::path::Path, n: u32) {
    let db = open_raw(dir);
    db.open_tree("__bulwark_layout")
        .unwrap()
        .insert(b"layout", b"keyspaces/1")
        .unwrap();
    for i in 0..n {
        let key = i.to_be_bytes();
        db.insert([&[3u8][..], b"wal", &key].concat(), &key)
            .unwrap();
    }
    db.flush().unwrap();
}

/// fjall's own handle on the database in `dir`, with its keyspace.
fn open_fjall(dir: &std::path::Path) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(dir).open().unwrap();
    let ks = db
        .keyspace("bulwark", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    (db, ks)
}

/// An import cut short by a crash before its last marker: fjall holds the first marker, part of
/// the entries, and one sled no longer holds (an earlier version ran on sled in between and
/// removed it). The next open empties fjall and imports again: sled's entries exactly, once;
/// then sled's files go.
#[test]
fn an_import_cut_short_imports_again_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    sled_in_keyspaces(dir.path(), 100);
    {
        let (db, ks) = open_fjall(dir.path());
        let marker_tree = [&[16u8][..], b"__bulwark_layout"].concat();
        ks.insert(
            [&marker_tree[..], b"import-from-sled-started"].concat(),
            b"1".to_vec(),
        )
        .unwrap();
        for i in (0u32..30).chain([500]) {
            let key = i.to_be_bytes();
            ks.insert([&[3u8][..], b"wal", &key].concat(), key.to_vec())
                .unwrap();
        }
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    assert!(has_sled_files(dir.path()));
    let db = Db::open(dir.path()).unwrap();
    let keys: Vec<Vec<u8>> = db
        .tree("wal")
        .unwrap()
        .entries()
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let expected: Vec<Vec<u8>> = (0u32..100).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(keys, expected);
    assert!(!has_sled_files(dir.path()));
}

/// sled's files beside a fjall database that holds data and no import marker: two histories,
/// refused, and both are kept.
#[test]
fn a_sled_database_beside_a_fjall_database_with_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        db.tree("privval").unwrap().insert(b"k", b"newer").unwrap();
        db.flush().unwrap();
    }
    sled_in_keyspaces(dir.path(), 5);
    let e = Db::open(dir.path()).unwrap_err();
    assert!(e.to_string().contains("two histories"), "{e}");
    assert!(has_sled_files(dir.path()));
    let (_db, ks) = open_fjall(dir.path());
    assert_eq!(
        ks.get([&[7u8][..], b"privval", b"k"].concat())
            .unwrap()
            .as_deref(),
        Some(&b"newer"[..])
    );
}

/// A crash after the import's marker but before sled's files were deleted: the next open
/// deletes them and does not import them again (fjall's writes since then stand).
#[test]
fn sled_files_left_after_a_finished_import_are_deleted_not_imported_again() {
    let dir = tempfile::tempdir().unwrap();
    sled_in_keyspaces(dir.path(), 10);
    drop(Db::open(dir.path()).unwrap());
    let db = Db::open(dir.path()).unwrap();
    let wal = db.tree("wal").unwrap();
    wal.remove(5u32.to_be_bytes()).unwrap();
    db.flush().unwrap();
    drop((wal, db));
    // The same sled files again, as if their deletion had not happened.
    sled_in_keyspaces(dir.path(), 10);
    let db = Db::open(dir.path()).unwrap();
    assert!(!has_sled_files(dir.path()));
    let wal = db.tree("wal").unwrap();
    assert_eq!(wal.len().unwrap(), 9, "the removal after the import stands");
    assert!(wal.get(5u32.to_be_bytes()).unwrap().is_none());
}

/// A sled database laid out in keyspaces that an earlier version wrote to since (a tree per
/// name beside the keyspaces): two histories, refused with an error naming the tree, and
/// sled's files are kept.
#[test]
fn a_tree_per_name_beside_keyspaces_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    sled_in_keyspaces(dir.path(), 3);
    {
        let raw = open_raw(dir.path());
        raw.open_tree("privval")
            .unwrap()
            .insert(b"k", b"old")
            .unwrap();
        raw.flush().unwrap();
    }
    let refused = loop {
        match Db::open(dir.path()) {
            Err(e) if e.to_string().contains("lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => break other,
        }
    };
    let Err(e) = refused else {
        panic!("a tree per name beside the keyspaces was accepted");
    };
    assert!(e.to_string().contains("privval"), "{e}");
    assert!(has_sled_files(dir.path()));
}

/// A creation cut short before fjall's version marker (a lock file, an empty journal, the
/// keyspaces folder) does not stop the database from being created at the next open.
#[test]
fn a_creation_cut_short_does_not_stop_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keyspaces")).unwrap();
    std::fs::write(dir.path().join("lock"), b"").unwrap();
    std::fs::write(dir.path().join("0.jnl"), b"").unwrap();
    // Cut short while the marker was being written.
    std::fs::write(dir.path().join("version"), b"").unwrap();
    let db = Db::open(dir.path()).unwrap();
    db.tree("t").unwrap().insert(b"k", b"v").unwrap();
    db.flush().unwrap();
    drop(db);
    let db = Db::open(dir.path()).unwrap();
    assert_eq!(
        db.tree("t").unwrap().get(b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// A key longer than fjall can store is a typed error on both backends, and nothing of its
/// batch is written (a longer one would corrupt fjall's journal).
#[test]
fn a_key_longer_than_the_limit_is_refused_by_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let on_disk = Db::open(dir.path()).unwrap();
    let in_memory = Db::on(&MemDisk::new("t"));
    for db in [&on_disk, &in_memory] {
        let t = db.tree(&"n".repeat(255)).unwrap();
        t.insert(vec![1u8; bulwark_kv::MAX_KEY_BYTES], b"v")
            .unwrap();
        let mut batch = Batch::default();
        batch.insert(b"first", b"v");
        batch.insert(vec![2u8; bulwark_kv::MAX_KEY_BYTES + 1], b"v");
        let e = db.write_atomically(&[(&t, &batch)]).unwrap_err();
        assert!(
            matches!(e, bulwark_kv::KvError::KeyTooLong { len, .. } if len == bulwark_kv::MAX_KEY_BYTES + 1),
            "{e}"
        );
        assert!(t.apply_batch(&batch).is_err());
        assert!(
            t.get(b"first").unwrap().is_none(),
            "half a refused batch was written"
        );
        db.flush().unwrap();
        assert_eq!(t.len().unwrap(), 1);
    }

    // Reads and scans with keys and bounds longer than any stored key: the same answers on
    // both backends, never a panic.
    // Keys: [1, 0] < [1; MAX] (the longest, stored above) < `long` = [1; MAX + 10] < [1, 2].
    let long = vec![1u8; bulwark_kv::MAX_KEY_BYTES + 10];
    let max = bulwark_kv::MAX_KEY_BYTES;
    for db in [&on_disk, &in_memory] {
        let t = db.tree(&"n".repeat(255)).unwrap();
        t.insert([1u8, 0], b"low").unwrap();
        t.insert([1u8, 2], b"high").unwrap();
        assert_eq!(t.get(&long).unwrap(), None);
        let lens = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<usize> {
            entries.into_iter().map(|(k, _)| k.len()).collect()
        };
        assert_eq!(lens(t.range(&long, None, 10).unwrap()), vec![2]);
        assert_eq!(lens(t.range(&[1], Some(&long), 10).unwrap()), vec![2, max]);
        assert_eq!(lens(t.range(&[1, 1], Some(&long), 10).unwrap()), vec![max]);
        assert_eq!(lens(t.range(&[1], Some(&long), 1).unwrap()), vec![2]);
        assert_eq!(
            t.range_keys(&long, None, 10, 1 << 20).unwrap(),
            vec![vec![1, 2]]
        );
        assert_eq!(
            t.range_keys(&[1, 1], Some(&long), 10, 1 << 20)
                .unwrap()
                .len(),
            1
        );
        let longest = vec![1u8; max];
        assert!(t
            .range_keys(&[1, 1], Some(&longest), 10, 1 << 20)
            .unwrap()
            .is_empty());
    }
    drop(on_disk);
    let reopened = Db::open(dir.path()).unwrap();
    assert_eq!(reopened.tree(&"n".repeat(255)).unwrap().len().unwrap(), 3);
}

/// Runs `f` on a fresh fjall database and a tree of it, on a thread of its own, and fails if
/// it has not finished within `limit`: a deadlock is a failure, not a hung test run.
fn on_a_fresh_database(limit: std::time::Duration, f: impl FnOnce(&Db, &Tree) + Send + 'static) {
    on_a_fresh_database_of(MIN_MEMTABLE_BYTES, limit, move |db, tree, _| f(db, tree))
}

/// Runs `f` on a new database of `memtable` bytes memtables (and its directory), failing if
/// it takes longer than `limit`.
fn on_a_fresh_database_of(
    memtable: u64,
    limit: std::time::Duration,
    f: impl FnOnce(&Db, &Tree, &std::path::Path) + Send + 'static,
) {
    let (done, finished) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sized(dir.path(), memtable).unwrap();
        f(&db, &db.tree("t").unwrap(), dir.path());
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => worker.join().unwrap(),
        // The thread panicked (its assertion is the failure) or hangs.
        Err(_) if worker.is_finished() => std::panic::resume_unwind(worker.join().unwrap_err()),
        Err(_) => panic!("not finished within {limit:?}: a writer waits for good"),
    }
}

/// 8-byte keys in random order, as hashes are (xorshift from `seed`, not zero).
fn random_keys(mut seed: u64) -> impl FnMut() -> [u8; 8] {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed.to_be_bytes()
    }
}

/// fjall's lone worker never waits on itself: a stream of small writes of random keys (as the
/// WAL, the privval and the indexes make) while compactions run keeps fjall's memtables within
/// a few memtables. When fjall's workers rotated memtables, every write past the
/// threshold queued one more rotation request while the worker compacted; once they filled
/// its queue, the worker blocked sending itself a flush and the memtable grew without end.
#[test]
fn memtables_stay_bounded_under_a_stream_of_small_random_writes() {
    on_a_fresh_database(std::time::Duration::from_secs(300), |db, tree| {
        let bound = 6 * db.memtable_limit();
        let value = [7u8; 200];
        let mut next_key = random_keys(0x9E37_79B9_7F4A_7C15);
        let mut largest = 0;
        for i in 0..WRITES {
            tree.insert(next_key(), value).unwrap();
            largest = largest.max(db.memtable_bytes());
            assert!(
                largest <= bound,
                "after {i} writes fjall holds {largest} bytes in memtables (bound {bound})"
            );
        }
        eprintln!(
            "{WRITES} writes of 208 bytes: at most {:.1} MiB in memtables",
            largest as f64 / (1 << 20) as f64
        );
    });
}

/// Enough writes for many memtable rotations and compactions (about 125 MB).
const WRITES: u64 = 600_000;

/// A batch larger than a memtable (a block and its indexes) starts a memtable of its own: the
/// memtables hold at most about five such batches, not five memtables each topped up by one.
#[test]
fn a_batch_larger_than_a_memtable_gets_a_memtable_of_its_own() {
    on_a_fresh_database(std::time::Duration::from_secs(300), |db, tree| {
        let memtable = db.memtable_limit();
        let batch_bytes = memtable + memtable / 2;
        // Values kept in the tables (below fjall's blob threshold), keys in random order: the
        // worker's flushes and compactions fall behind the writer.
        let value = [5u8; 3000];
        let mut next_key = random_keys(0x2545_F491_4F6C_DD1D);
        let mut largest = 0;
        for _ in 0..24 {
            // Most of a memtable first, which the batch would overflow.
            for _ in 0..(memtable - memtable / 8) / value.len() as u64 {
                tree.insert(next_key(), value).unwrap();
                largest = largest.max(db.memtable_bytes());
            }
            let mut batch = Batch::default();
            for _ in 0..batch_bytes / value.len() as u64 {
                batch.insert(next_key(), value);
            }
            db.write_atomically(&[(tree, &batch)]).unwrap();
            largest = largest.max(db.memtable_bytes());
        }
        // Between two commits: at most four sealed memtables, each of one batch or of the
        // writes before it, never both, and an active one below the limit; slack for
        // fjall's cost per entry.
        let bound = 4 * batch_bytes + memtable + memtable / 8;
        eprintln!("at most {largest} bytes in memtables (bound {bound})");
        assert!(
            largest <= bound,
            "{largest} bytes in memtables (bound {bound})"
        );
    });
}

/// The memtable size is chosen by the machine's memory when a database is created, and kept:
/// fjall stores its own rotation threshold (twice the size) for good, and a writer that
/// rotated later than that would leave rotations to fjall's lone worker. On a machine with
/// less memory the writer rotates earlier, which that threshold allows.
#[test]
fn a_database_keeps_the_memtable_size_it_was_created_with() {
    let mib = |n: u64| n << 20;
    assert_eq!(bulwark_kv::memtable_bytes_for(None), MIN_MEMTABLE_BYTES);
    assert_eq!(bulwark_kv::memtable_bytes_for(Some(mib(384))), mib(8));
    assert_eq!(bulwark_kv::memtable_bytes_for(Some(mib(2048))), mib(16));
    assert_eq!(bulwark_kv::memtable_bytes_for(Some(mib(4096))), mib(32));
    assert_eq!(
        bulwark_kv::memtable_bytes_for(Some(mib(24_000))),
        MAX_MEMTABLE_BYTES
    );
    let dir = tempfile::tempdir().unwrap();
    let reopened = |asked: u64| Db::open_sized(dir.path(), asked).unwrap().memtable_limit();
    let db = Db::open_sized(dir.path(), mib(16)).unwrap();
    assert_eq!(db.memtable_limit(), mib(16));
    db.tree("t").unwrap().insert(b"k", b"v").unwrap();
    drop(db);
    assert_eq!(
        reopened(mib(32)),
        mib(16),
        "an existing database keeps its size"
    );
    assert_eq!(reopened(mib(8)), mib(8), "or rotates earlier");
    assert_eq!(reopened(mib(32)), mib(16), "and keeps its size after that");
    let fresh = tempfile::tempdir().unwrap();
    let asked_too_much = Db::open_sized(fresh.path(), mib(1024)).unwrap();
    assert_eq!(asked_too_much.memtable_limit(), MAX_MEMTABLE_BYTES);
}

/// A database created before the size was chosen has no size stored: it keeps the 8 MiB its
/// fjall threshold was made for. A stored size this crate would not choose is damage.
#[test]
fn a_database_without_a_stored_size_uses_the_minimum_and_a_wrong_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let keyspace = db
            .keyspace("bulwark", || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(8 << 20)
            })
            .unwrap();
        keyspace.insert(b"x", b"y").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let db = Db::open_sized(dir.path(), MAX_MEMTABLE_BYTES).unwrap();
    assert_eq!(db.memtable_limit(), MIN_MEMTABLE_BYTES);
    drop(db);
    for stored in [
        (64u64 << 20).to_be_bytes().to_vec(),
        0u64.to_be_bytes().to_vec(),
        (MIN_MEMTABLE_BYTES - 1).to_be_bytes().to_vec(),
        vec![0, 0, 0, 2],
    ] {
        {
            let db = fjall::Database::builder(dir.path()).open().unwrap();
            let settings = db
                .keyspace("bulwark-kv", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            settings.insert(b"memtable_bytes", stored.clone()).unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let refused = Db::open(dir.path()).unwrap_err();
        assert!(
            matches!(refused, bulwark_kv::KvError::Corrupt { .. }),
            "{stored:?}: {refused}"
        );
    }
}

/// The writer rotates at the database's own size: 28 MiB written into a database of 32 MiB
/// memtables stay in one memtable (nothing is sealed and flushed to a table meanwhile, by the
/// writer at 8 MiB, or by fjall's worker at a threshold not raised with the size).
#[test]
fn the_writer_rotates_at_the_stored_size_not_the_minimum() {
    let limit = std::time::Duration::from_secs(120);
    on_a_fresh_database_of(MAX_MEMTABLE_BYTES, limit, |db, tree, _| {
        let value = [3u8; 1000];
        let mut next_key = random_keys(0x5851_F42D_4C95_7F2D);
        while db.memtable_bytes() < 28 << 20 {
            tree.insert(next_key(), value).unwrap();
        }
        // A memtable sealed earlier would be flushed by fjall's worker within this wait.
        std::thread::sleep(std::time::Duration::from_secs(3));
        assert!(
            db.memtable_bytes() >= 28 << 20,
            "{} bytes left in memtables: one was sealed and flushed below 32 MiB",
            db.memtable_bytes()
        );
    });
}

/// A database's journals are deleted as their memtables are flushed: the size setting, written
/// when the database is created, holds none of them back (an unflushed keyspace keeps every
/// journal since its first write, up to fjall's 512 MiB), neither in a new database nor in one
/// reopened right after its creation. (Without the seal: 5 journals at once.)
#[test]
fn journals_are_deleted_behind_the_flushes() {
    for closed_at_once in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        if closed_at_once {
            drop(Db::open_sized(dir.path(), MIN_MEMTABLE_BYTES).unwrap());
        }
        let db = Db::open_sized(dir.path(), MIN_MEMTABLE_BYTES).unwrap();
        let tree = db.tree("t").unwrap();
        let value = [9u8; 2000];
        let mut next_key = random_keys(0x1405_7B7E_F767_814F);
        let journals = || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jnl"))
                })
                .count()
        };
        let mut most = 0;
        // 300 MB: fjall starts a journal every 64 MB.
        for _ in 0..1_500 {
            let mut batch = Batch::default();
            for _ in 0..100 {
                batch.insert(next_key(), value);
            }
            db.write_atomically(&[(&tree, &batch)]).unwrap();
            db.flush().unwrap();
            most = most.max(journals());
        }
        assert!(
            most <= 3,
            "{most} journals at once (closed at once: {closed_at_once})"
        );
    }
}
