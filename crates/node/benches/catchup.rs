//! How long a node takes to catch up a chain of full blocks by block sync: a validator's engine
//! (fjall store and kvstore on disk) commits `HEIGHTS` blocks, each filled to the engine's
//! 4 MiB transaction budget; then a fresh engine of the same chain asks it for decided blocks
//! (CometBFT `Status`, answered with runs of `DecidedBlock`s) until it is level. Only the
//! catching-up engine's work is timed: decoding, the commit's signatures, `validate_block`,
//! FinalizeBlock on the kvstore, storing block, commit, results and state. No sockets.
//! Prints one JSON line for `cargo xtask bench --only catchup`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod lone;

use bulwark_node::engine::{Engine, EngineConfig, Input, Output};
use bulwark_store::Store;
use bulwark_wire::{self as wire, Payload};
use ed25519_consensus::SigningKey;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const TX_BYTES: usize = 64 << 10;

/// 1,000 heights under `cargo bench` (which passes `--bench`); a short smoke run of 40 when
/// `cargo test --all-targets` runs it in a debug build; `CATCHUP_HEIGHTS` overrides both.
fn heights() -> u64 {
    let benching = std::env::args().any(|a| a == "--bench");
    std::env::var("CATCHUP_HEIGHTS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(if benching { 1_000 } else { 40 })
}

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.mempool.max_txs = 10_000;
    c.mempool.max_tx_bytes = TX_BYTES + 64;
    c.timeout_commit = Duration::from_millis(1);
    c
}

fn open(
    dir: &std::path::Path,
    key: SigningKey,
    g: &bulwark_types::tendermint::Genesis<serde_json::Value>,
) -> (Engine, Vec<Output>) {
    let store = Store::open(dir.join("store")).unwrap();
    lone::open(dir, &store, key, g, config())
}

/// Outputs a lone validator acts on: only the start of the next height (its own messages
/// loop back inside the engine).
fn drain(out: &mut VecDeque<Output>) -> Option<u64> {
    let mut start = None;
    for o in out.drain(..) {
        if let Output::ScheduleHeight { height, .. } = o {
            start = Some(height);
        }
    }
    start
}

/// The node binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let heights = heights();
    let validator = SigningKey::from([7; 32]);
    let g = lone::genesis("bulwark-catchup-bench", &validator);
    let producer_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (mut producer, opened) = open(producer_dir.path(), validator, &g);

    // The chain: every block filled with 64 KiB kvstore transactions.
    let built = Instant::now();
    let mut next_tx = 0u64;
    let mut out = VecDeque::from(opened);
    while producer.state().last_block_height < heights {
        while producer.mempool().size_bytes() < (4 << 20) + TX_BYTES {
            lone::submit(&mut producer, &mut out, next_tx, TX_BYTES);
            next_tx += 1;
        }
        lone::step(&mut producer, &mut out);
    }
    let build_seconds = built.elapsed().as_secs_f64();
    let mut block_bytes = 0u64;
    for h in 1..=heights {
        block_bytes += producer.blocks().block(h).unwrap().unwrap().len() as u64;
    }

    // The laggard: another node of the chain, empty.
    let laggard_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (mut laggard, _) = open(laggard_dir.path(), SigningKey::from([8; 32]), &g);
    let mut timed = Duration::ZERO;
    let mut per_run = Vec::new();
    while laggard.state().last_block_height < heights {
        let from = laggard.state().next_height();
        // A laggard asks once a tick, and a peer is answered once a tick.
        let _ = producer.handle(Input::Tick).unwrap();
        let answer = producer
            .handle(Input::Peer(
                2,
                Payload::Status(wire::Status {
                    height: from,
                    round: 0,
                }),
            ))
            .unwrap();
        let blocks: Vec<Payload> = answer
            .into_iter()
            .filter_map(|o| match o {
                Output::Send(_, p @ Payload::DecidedBlock(_)) => Some(p),
                _ => None,
            })
            .collect();
        assert!(!blocks.is_empty(), "no blocks offered from {from}");
        let n = blocks.len();
        let start = Instant::now();
        for p in blocks {
            let mut out = VecDeque::from(laggard.handle(Input::Peer(1, p)).unwrap());
            if let Some(h) = drain(&mut out) {
                let _ = laggard.handle(Input::StartHeight(h)).unwrap();
            }
        }
        let spent = start.elapsed();
        timed += spent;
        per_run.push(spent.as_secs_f64() * 1e3 / n as f64);
        assert!(
            laggard.state().next_height() > from,
            "the laggard refused the blocks from {from}"
        );
    }
    assert_eq!(
        laggard.state().app_hash,
        producer.state().app_hash,
        "the laggard's application ended elsewhere"
    );
    per_run.sort_by(f64::total_cmp);
    let seconds = timed.as_secs_f64();
    println!(
        "{{\"heights\":{heights},\"block_mib\":{:.2},\"txs_per_block\":{},\"catchup_seconds\":{seconds:.1},\"heights_per_second\":{:.1},\"mib_per_second\":{:.1},\"ms_per_block_median\":{:.1},\"build_seconds\":{build_seconds:.1}}}",
        block_bytes as f64 / heights as f64 / f64::from(1 << 20),
        next_tx / heights,
        heights as f64 / seconds,
        block_bytes as f64 / f64::from(1 << 20) / seconds,
        per_run[per_run.len() / 2],
    );
}
