//! A lone validator's engine on disk (fjall store and kvstore), as the benches drive it: it
//! proposes and decides on its own within one input, and the bench only starts each next
//! height (or, when nothing else is due, feeds the timeouts).
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use bulwark_app::kvstore::KvStore;
use bulwark_node::engine::{Engine, EngineConfig, Input, Output};
use bulwark_store::Store;
use bulwark_types::tendermint::{validator, Genesis, Time};
use bytes::Bytes;
use ed25519_consensus::SigningKey;
use std::collections::VecDeque;

/// A chain whose only validator is `validator`.
pub fn genesis(chain_id: &str, validator: &SigningKey) -> Genesis<serde_json::Value> {
    Genesis {
        genesis_time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
        chain_id: chain_id.parse().unwrap(),
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

/// Opens `key`'s engine of chain `g` in `dir`, on `store` (opened there by the caller).
pub fn open(
    dir: &std::path::Path,
    store: &Store,
    key: SigningKey,
    g: &Genesis<serde_json::Value>,
    config: EngineConfig,
) -> (Engine, Vec<Output>) {
    let mut app = KvStore::open(dir.join("app")).unwrap();
    let mut state = bulwark_node::handshake::genesis_state(&mut app, g).unwrap();
    // The lone validator runs as its launch instance (the config's), which the genesis names.
    state.claims = bulwark_node::instance::Register::at_launch(
        1,
        g.validators
            .iter()
            .filter_map(|v| Some((v.address.as_bytes().try_into().ok()?, config.instance))),
    );
    Engine::open(config, store, key, Box::new(app), state).unwrap()
}

/// Kvstore transaction number `n`, `bytes` long.
pub fn tx(n: u64, bytes: usize) -> Bytes {
    let mut tx = format!("k{n:012}=").into_bytes();
    tx.resize(bytes, b'v');
    Bytes::from(tx)
}

/// Submits transaction `n` through CheckTx.
pub fn submit(engine: &mut Engine, out: &mut VecDeque<Output>, n: u64, bytes: usize) {
    let (added, more) = engine.submit_tx(tx(n, bytes));
    added.unwrap();
    out.extend(more);
}

/// Acts on the engine's outputs: starts the next height if one is scheduled, or else feeds
/// the timeouts it set. Panics if there is neither (the validator stalled).
pub fn step(engine: &mut Engine, out: &mut VecDeque<Output>) {
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
        Some(height) => out.extend(engine.handle(Input::StartHeight(height)).unwrap()),
        None if !timeouts.is_empty() => {
            for t in timeouts {
                out.extend(engine.handle(Input::Timeout(t)).unwrap());
            }
        }
        None => panic!(
            "the lone validator stalled at {}",
            engine.state().last_block_height
        ),
    }
}
