//! How long a node takes to catch up a chain of full blocks by block sync: a validator's engine
//! (sled store and kvstore on disk) commits `HEIGHTS` blocks, each filled to the engine's
//! 4 MiB transaction budget; then a fresh engine of the same chain asks it for decided blocks
//! (CometBFT `Status`, answered with runs of `DecidedBlock`s) until it is level. Only the
//! catching-up engine's work is timed: decoding, the commit's signatures, `validate_block`,
//! FinalizeBlock on the kvstore, storing block, commit, results and state. No sockets.
//! Prints one JSON line for `cargo xtask bench --only catchup`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_app::kvstore::KvStore;
use bulwark_node::engine::{Engine, EngineConfig, Input, Output};
use bulwark_store::Store;
use bulwark_types::tendermint::{validator, Genesis, Time};
use bulwark_wire::{self as wire, Payload};
use bytes::Bytes;
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

fn genesis(validator: &SigningKey) -> Genesis<serde_json::Value> {
    Genesis {
        genesis_time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
        chain_id: "bulwark-catchup-bench".parse().unwrap(),
        initial_height: 1,
        consensus_params: bulwark_types::genesis::default_consensus_params(),
        validators: vec![validator::Info::new(
            bulwark_types::signing::public_key(validator),
            10u32.into(),
        )],
        app_hash: Default::default(),
        app_state: serde_json::Value::Null,
    }
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
    g: &Genesis<serde_json::Value>,
) -> (Engine, Vec<Output>) {
    let store = Store::open(dir.join("store")).unwrap();
    let mut app = KvStore::open(dir.join("app")).unwrap();
    let mut state = bulwark_node::handshake::genesis_state(&mut app, g).unwrap();
    // The lone validator runs as its launch instance (the default config's), which the
    // genesis names.
    let config = config();
    state.claims = bulwark_node::instance::Register::at_launch(
        1,
        g.validators
            .iter()
            .filter_map(|v| Some((v.address.as_bytes().try_into().ok()?, config.instance))),
    );
    Engine::open(config, &store, key, Box::new(app), state).unwrap()
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

fn main() {
    let heights = heights();
    let validator = SigningKey::from([7; 32]);
    let g = genesis(&validator);
    let producer_dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (mut producer, opened) = open(producer_dir.path(), validator, &g);

    // The chain: every block filled with 64 KiB kvstore transactions.
    let built = Instant::now();
    let mut next_tx = 0u64;
    let mut out = VecDeque::from(opened);
    while producer.state().last_block_height < heights {
        while producer.mempool().size_bytes() < (4 << 20) + TX_BYTES {
            let mut tx = format!("k{next_tx:012}=").into_bytes();
            tx.resize(TX_BYTES, b'v');
            next_tx += 1;
            let (added, more) = producer.submit_tx(Bytes::from(tx));
            added.unwrap();
            out.extend(more);
        }
        // A lone validator proposes and decides on its own within one input; the driver only
        // starts the next height (a timeout is fed only if nothing else is due).
        let outputs: Vec<Output> = out.drain(..).collect();
        let next = outputs.iter().find_map(|o| match o {
            Output::ScheduleHeight { height, .. } => Some(*height),
            _ => None,
        });
        let timeouts: Vec<_> = outputs
            .into_iter()
            .filter_map(|o| match o {
                Output::Schedule { timeout, .. } => Some(timeout),
                _ => None,
            })
            .collect();
        match next {
            Some(height) => out.extend(producer.handle(Input::StartHeight(height)).unwrap()),
            None if !timeouts.is_empty() => {
                for t in timeouts {
                    out.extend(producer.handle(Input::Timeout(t)).unwrap());
                }
            }
            None => panic!(
                "the producer stalled at {}",
                producer.state().last_block_height
            ),
        }
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
