//! The floor under the node benchmark's figures, measured on this machine: what one validator
//! cannot avoid spending per transaction and per height, from which `cargo xtask bench --only
//! node` derives the throughput and the heights per second 4 validators sharing the machine's
//! cores could reach at best, and each figure's ratio to them.
//!
//! - **Per transaction**: a lone validator's engine (fjall store and kvstore on disk, as a node
//!   runs them) takes 256-byte kvstore transactions through CheckTx into the mempool and decides
//!   blocks of them on its own: FinalizeBlock, Commit, the block store and its indexes. The
//!   process's CPU time (every thread's, the database's worker threads included, until the
//!   database closed) per transaction, less what the same engine spends per empty height.
//! - **Per height**: the pieces of a height every validator pays whatever its code: an ed25519
//!   signature made, one verified, a durable write (a small database write and its flush, as the
//!   privval, block store and application make), and a message over loopback TCP (one way:
//!   half a round trip of 512 bytes between two threads), each as CPU time and wall time.
//!
//! Prints one JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod lone;

use bulwark_node::engine::{Engine, EngineConfig, Input, Output};
use bulwark_store::Store;
use ed25519_consensus::SigningKey;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const TX_BYTES: usize = 256;

fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// CPU seconds this process has used, all threads, user and system (Linux `/proc`).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    // Linux has reported USER_HZ = 100 to user space on every architecture for decades.
    100.0
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn open(dir: &std::path::Path, txs_per_block: usize, indexing: bool) -> Engine {
    let key = SigningKey::from([7; 32]);
    let g = lone::genesis("bulwark-limit-bench", &key);
    let store = Store::open(dir.join("store"))
        .unwrap()
        .with_indexes(indexing);
    let mut config = EngineConfig::default();
    config.mempool.max_txs = (txs_per_block * 2).max(1);
    // Not zero: with no wait a lone validator would start, decide and commit the next
    // height inside the same input, without end; the bench starts each height itself.
    config.timeout_commit = Duration::from_millis(1);
    lone::open(dir, &store, key, &g, config).0
}

/// A lone validator decides `heights` blocks of `txs_per_block` fresh transactions each
/// (submitted before each height, through CheckTx), its block store indexing them or not;
/// returns the CPU seconds spent.
fn lone_validator(heights: u64, txs_per_block: usize, indexing: bool) -> f64 {
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let mut engine = open(dir.path(), txs_per_block, indexing);
    let mut next_tx = 0u64;
    let mut out: VecDeque<Output> = VecDeque::new();
    let start_height = engine.state().last_block_height;
    let cpu = cpu_seconds();
    out.extend(
        engine
            .handle(Input::StartHeight(engine.state().next_height()))
            .unwrap(),
    );
    while engine.state().last_block_height < start_height + heights {
        for _ in 0..txs_per_block {
            lone::submit(&mut engine, &mut out, next_tx, TX_BYTES);
            next_tx += 1;
        }
        lone::step(&mut engine, &mut out);
    }
    // Closing waits for the database's flush or compaction in progress: its CPU counts.
    drop(engine);
    cpu_seconds() - cpu
}

/// Writes every dirty page out, then waits a moment.
fn settle_disk() {
    let synced = std::process::Command::new("sync").status();
    assert!(
        synced.as_ref().is_ok_and(|s| s.success()),
        "sync failed: {synced:?}"
    );
    std::thread::sleep(Duration::from_secs(2));
}

/// Median CPU and wall microseconds of `f`, run `runs` times.
fn each(runs: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut walls = Vec::with_capacity(runs);
    let cpu = cpu_seconds();
    for _ in 0..runs {
        let t = Instant::now();
        f();
        walls.push(t.elapsed().as_secs_f64() * 1e6);
    }
    ((cpu_seconds() - cpu) * 1e6 / runs as f64, median(walls))
}

/// One-way loopback messages: CPU µs per message (both ends) and median wall µs one way.
fn loopback(runs: usize) -> (f64, f64) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 512];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [7u8; 512];
    let (cpu, wall) = each(runs, || {
        s.write_all(&buf).unwrap();
        s.read_exact(&mut buf).unwrap();
    });
    drop(s);
    echo.join().unwrap();
    (cpu / 2.0, wall / 2.0)
}

/// The node binary's allocator, so the floors are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let full = benching();
    // 400,000 transactions: a store that small is still cheap to compact (80,000 cost 18 µs a
    // transaction, 400,000 cost 28 µs before the allocator and worker changes), and the node
    // bench's validators each store millions.
    let (heights, txs) = if full { (200, 2_000) } else { (3, 50) };
    let runs = if full { 2_000 } else { 20 };

    // Per height of a lone validator without transactions, then per transaction.
    let empty_heights = heights * 10;
    let empty_cpu = lone_validator(empty_heights, 0, true);
    let cpu_per_empty_height = empty_cpu / empty_heights as f64;
    let per_tx_us = |cpu: f64| {
        (cpu - cpu_per_empty_height * heights as f64) / (heights as f64 * txs as f64) * 1e6
    };
    let tx_cpu_us = per_tx_us(lone_validator(heights, txs, true));
    // The same without the block store's transaction and event indexes
    // (`tx_index.indexer = "null"`).
    let unindexed_tx_cpu_us = per_tx_us(lone_validator(heights, txs, false));
    // The lone validators wrote hundreds of MB: their writeback would slow the synced writes
    // measured next, here and in the node bench that follows (151 empty heights/s right after,
    // 222–234 on a calm disk, same binary).
    settle_disk();

    // The pieces of a height.
    let key = SigningKey::from([9; 32]);
    let message = [5u8; 160];
    // Pure computation on one thread: its wall time is its CPU time, to the microsecond.
    let (_, sign_us) = each(runs, || {
        std::hint::black_box(key.sign(&message));
    });
    // Verified as the node verifies: `bulwark_types::signing`'s full check (no cache of
    // signatures is set up here), the key decompressed once.
    let signature = bulwark_types::signing::sign(&key, &message);
    let public = bulwark_types::signing::public_key(&key);
    let (_, verify_us) = each(runs, || {
        bulwark_types::signing::verify(&public, &message, &signature).unwrap();
    });
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let db = bulwark_kv::Db::open(dir.path()).unwrap();
    let tree = db.tree("privval").unwrap();
    let mut n = 0u64;
    let (flush_cpu_us, flush_wall_us) = each(runs, || {
        n += 1;
        tree.insert(b"last_sign_state", n.to_be_bytes().repeat(40))
            .unwrap();
        db.flush().unwrap();
    });
    let (hop_cpu_us, hop_wall_us) = loopback(runs * 5);

    println!(
        "{{\"tx_bytes\":{TX_BYTES},\"lone_heights\":{heights},\"lone_txs_per_block\":{txs},\"tx_cpu_us\":{tx_cpu_us:.2},\"unindexed_tx_cpu_us\":{unindexed_tx_cpu_us:.2},\"empty_height_cpu_us\":{:.0},\"sign_us\":{sign_us:.1},\"verify_us\":{verify_us:.1},\"flush_cpu_us\":{flush_cpu_us:.0},\"flush_wall_us\":{flush_wall_us:.0},\"hop_cpu_us\":{hop_cpu_us:.1},\"hop_wall_us\":{hop_wall_us:.1}}}",
        cpu_per_empty_height * 1e6,
    );
}
