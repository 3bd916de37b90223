//! Restart handshake: the application catches up from the block store, checked hash by hash.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_app::kvstore::KvStore;
use bulwark_app::Application;
use bulwark_node::chain::{encode_results, finalize_request, ChainState};
use bulwark_node::handshake::{handshake, HandshakeError};
use bulwark_store::blocks::{BlockStore, DecidedHeight};
use bulwark_store::Store;
use bulwark_types::signing::{public_key, sign_vote};
use bulwark_types::tendermint::abci::{request, response};
use bulwark_types::tendermint::block::{self, Commit, CommitSig};
use bulwark_types::tendermint::{account, validator, vote, Genesis, Time};
use bulwark_types::tendermint_proto::v0_38 as pb;
use bytes::Bytes;
use ed25519_consensus::SigningKey;
use prost::Message;

fn genesis(key: &SigningKey) -> Genesis<serde_json::Value> {
    common::genesis("bulwark-handshake", std::slice::from_ref(key))
}

/// A kvstore in `dir` brought to genesis with app state the genesis does not have.
fn with_extra_state(dir: &std::path::Path, g: &Genesis<serde_json::Value>) -> KvStore {
    let mut app = KvStore::open(dir).unwrap();
    app.init_chain(request::InitChain {
        time: g.genesis_time,
        chain_id: g.chain_id.to_string(),
        consensus_params: g.consensus_params.clone(),
        validators: vec![],
        app_state_bytes: Bytes::from(r#"{"extra":"state"}"#),
        initial_height: 1u32.into(),
    })
    .unwrap();
    app
}

fn fresh_app(dir: &std::path::Path, g: &Genesis<serde_json::Value>) -> KvStore {
    common::app_at_genesis(dir, g).0
}

fn genesis_state(g: &Genesis<serde_json::Value>, app: &KvStore) -> ChainState {
    let mut s = ChainState::from_genesis(g).unwrap();
    s.app_hash = common::app_hash(app);
    s
}

/// Builds `heights` blocks on a one-validator chain, storing block, commit and state after each,
/// as the node does. Returns the final state.
fn build(
    heights: u64,
    key: &SigningKey,
    g: &Genesis<serde_json::Value>,
    app: &mut KvStore,
    blocks: &BlockStore,
) -> ChainState {
    let address = account::Id::from(public_key(key).ed25519().unwrap());
    let mut state = genesis_state(g, app);
    let mut last_commit: Option<Commit> = None;
    for h in 1..=heights {
        // BFT time: genesis time, then the (one) vote time of the last commit.
        let time = state.next_block_time(last_commit.as_ref());
        let vote_time = Time::from_unix_timestamp(1_700_000_000 + h as i64, 0).unwrap();
        let txs = vec![format!("k{h}=v{h}").into_bytes()];
        let (block, id, _) = state
            .make_block(txs, last_commit.clone(), address, time)
            .unwrap();
        state.validate_block(&block).unwrap();
        let mut v = vote::Vote {
            vote_type: vote::Type::Precommit,
            height: block.header.height,
            round: block::Round::default(),
            block_id: Some(id),
            timestamp: Some(vote_time),
            validator_address: address,
            validator_index: 0u32.try_into().unwrap(),
            signature: None,
            extension: vec![],
            extension_signature: None,
        };
        sign_vote(key, &mut v, &state.chain_id);
        let commit = Commit {
            height: block.header.height,
            round: block::Round::default(),
            block_id: id,
            signatures: vec![CommitSig::BlockIdFlagCommit {
                validator_address: address,
                timestamp: vote_time,
                signature: v.signature,
            }],
        };
        let result = app
            .finalize_block(finalize_request(
                &block,
                &state.last_validator_infos,
                vec![],
            ))
            .unwrap();
        state.apply(&block, id, &result);
        blocks
            .save(DecidedHeight {
                height: h,
                hash: id.hash.as_bytes(),
                block: &pb::types::Block::from(block).encode_to_vec(),
                commit: &pb::types::Commit::from(commit.clone()).encode_to_vec(),
                state: &state.encode(),
                results: &encode_results(&result),
                evidence: &[],
                txs: &[],
                tx_attributes: &[],
                block_attributes: &[],
            })
            .unwrap();
        app.commit().unwrap();
        last_commit = Some(commit);
    }
    state
}

#[test]
fn chain_state_survives_encoding_and_bad_bytes_are_errors() {
    let key = SigningKey::from([1u8; 32]);
    let g = genesis(&key);
    let d = tempfile::tempdir().unwrap();
    let app = fresh_app(d.path(), &g);
    let s = genesis_state(&g, &app);
    let back = ChainState::decode(&s.encode()).unwrap();
    assert_eq!(back.encode(), s.encode());
    assert_eq!(back.validators, s.validators);
    assert!(ChainState::decode(b"not json").is_err());
    // Four validators after several heights: the proposer priorities (which tendermint's
    // validator JSON leaves out) must survive, or a restarted node picks other proposers.
    let keys: Vec<SigningKey> = (0..4u8).map(|i| SigningKey::from([60 + i; 32])).collect();
    let mut g4 = genesis(&keys[0]);
    g4.validators = keys
        .iter()
        .map(|k| validator::Info::new(public_key(k), (10 + u32::from(k.as_bytes()[0] % 3)).into()))
        .collect();
    let mut s4 = ChainState::from_genesis(&g4).unwrap();
    for _ in 0..5 {
        s4.validators = s4.validators.next_height();
    }
    let back = ChainState::decode(&s4.encode()).unwrap();
    assert_eq!(back.validators, s4.validators);
    assert!(back.validators.validators().iter().any(|v| v.priority != 0));
    let mut v: serde_json::Value = serde_json::from_slice(&s.encode()).unwrap();
    v["proposer"] = serde_json::Value::from(7);
    assert!(ChainState::decode(v.to_string().as_bytes()).is_err());
}

#[test]
fn an_app_that_lost_its_state_is_replayed_to_the_chain_hash_by_hash() {
    let key = SigningKey::from([2u8; 32]);
    let g = genesis(&key);
    let (da, ds, db) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut app = fresh_app(da.path(), &g);
    let blocks = BlockStore::open(&Store::open(ds.path()).unwrap()).unwrap();
    let final_state = build(6, &key, &g, &mut app, &blocks);

    // The same app, already up to date: nothing to replay.
    let genesis_s = genesis_state(&g, &app);
    let s = handshake(&mut app, &blocks, genesis_s).unwrap();
    assert_eq!(s.encode(), final_state.encode());

    // A fresh app (its data lost): all six blocks are replayed and give the recorded hashes.
    let mut fresh = fresh_app(db.path(), &g);
    let genesis_s = genesis_state(&g, &fresh);
    let s = handshake(&mut fresh, &blocks, genesis_s).unwrap();
    assert_eq!(s.last_block_height, 6);
    assert_eq!(s.app_hash, final_state.app_hash);
    let q = fresh
        .query(request::Query {
            data: Bytes::from("k6"),
            path: String::new(),
            height: block::Height::try_from(0u64).unwrap(),
            prove: false,
        })
        .unwrap();
    assert_eq!(q.value.as_ref(), b"v6");
}

#[test]
fn an_app_ahead_of_the_store_or_computing_other_hashes_stops_the_node() {
    let key = SigningKey::from([3u8; 32]);
    let g = genesis(&key);
    let (da, ds, ds2) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut app = fresh_app(da.path(), &g);
    let blocks = BlockStore::open(&Store::open(ds.path()).unwrap()).unwrap();
    build(3, &key, &g, &mut app, &blocks);
    // The store of another node with fewer blocks: the app is ahead.
    let short = BlockStore::open(&Store::open(ds2.path()).unwrap()).unwrap();
    let genesis_s = genesis_state(&g, &app);
    assert!(matches!(
        handshake(&mut app, &short, genesis_s.clone()),
        Err(HandshakeError::AppAhead { app: 3, store: 0 })
    ));

    // A fresh app whose genesis state differs computes other hashes: replay refuses.
    let dc = tempfile::tempdir().unwrap();
    let mut other = with_extra_state(dc.path(), &g);
    assert!(matches!(
        handshake(&mut other, &blocks, genesis_s.clone()),
        Err(HandshakeError::AppHashMismatch { height: 1, .. })
    ));

    // An application at the store's height whose state is not the chain's (it executed other
    // blocks, or its data was changed): refused before the node votes, as in CometBFT.
    let (dd, ds3) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut diverged = with_extra_state(dd.path(), &g);
    let its_own = BlockStore::open(&Store::open(ds3.path()).unwrap()).unwrap();
    build(3, &key, &g, &mut diverged, &its_own);
    assert!(matches!(
        handshake(&mut diverged, &blocks, genesis_s),
        Err(HandshakeError::AppStateDiffers { height: 3, .. })
    ));
}

#[test]
fn an_application_at_height_zero_gets_init_chain_and_its_app_hash_starts_the_chain() {
    let key = SigningKey::from([3u8; 32]);
    let mut g = genesis(&key);
    g.app_state = serde_json::json!({"greeting": "hello"});
    let dir = tempfile::tempdir().unwrap();
    let (app, state) = common::app_at_genesis(dir.path(), &g);
    // InitChain ran with the genesis validators and app state; its answer's app hash (the
    // kvstore's hash of the genesis writes) is the first block's app hash, as in CometBFT.
    assert_eq!(state.app_hash.as_bytes().len(), 32);
    let q = app
        .query(request::Query {
            data: Bytes::from("greeting"),
            path: String::new(),
            height: block::Height::from(0u32),
            prove: false,
        })
        .unwrap();
    assert_eq!(q.value.as_ref(), b"hello");
    // Still at height 0 when the node opens again (a crash before block 1): InitChain again,
    // the same state.
    drop(app);
    let (_, again) = common::app_at_genesis(dir.path(), &g);
    assert_eq!(again.app_hash, state.app_hash);
}

#[test]
fn an_application_may_not_change_the_attested_validators_or_parameters_at_init_chain() {
    let keys = [SigningKey::from([4u8; 32]), SigningKey::from([5u8; 32])];
    let g = common::genesis("bulwark-init", &keys);
    let altered = |init: fn(&mut response::InitChain)| {
        let dir = tempfile::tempdir().unwrap();
        let mut app = common::Altered {
            inner: KvStore::open(dir.path()).unwrap(),
            init,
            finalize: |_| {},
        };
        bulwark_node::handshake::genesis_state(&mut app, &g).map(|s| s.app_hash)
    };
    // The same validators in another order, and the same parameters: accepted.
    let same = altered(|a| {
        a.validators.reverse();
    });
    assert!(same.is_ok(), "{same:?}");
    let err = altered(|a| a.validators.truncate(1)).unwrap_err();
    assert!(
        err.to_string().contains("replaces the genesis validators"),
        "{err}"
    );
    let err = altered(|a| a.validators[0].power = 99u32.into()).unwrap_err();
    assert!(
        err.to_string().contains("replaces the genesis validators"),
        "{err}"
    );
    let err = altered(|a| {
        let mut p = bulwark_types::genesis::default_consensus_params();
        p.block.max_bytes = 0;
        a.consensus_params = Some(p);
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("changes the consensus parameters"),
        "{err}"
    );
    // An empty answer (no validators, no parameters) keeps the genesis's.
    let empty = altered(|a| {
        a.validators.clear();
        a.consensus_params = None;
    });
    assert!(empty.is_ok(), "{empty:?}");
}

#[test]
fn validator_or_parameter_updates_the_node_does_not_apply_stop_it() {
    let key = SigningKey::from([6u8; 32]);
    let g = genesis(&key);
    let dir = tempfile::tempdir().unwrap();
    let mut app = common::Altered {
        inner: common::app_at_genesis(dir.path(), &g).0,
        init: |_| {},
        finalize: |a| {
            a.validator_updates.push(validator::Update {
                pub_key: public_key(&SigningKey::from([7u8; 32])),
                power: 10u32.into(),
            })
        },
    };
    let state = genesis_state(&g, &app.inner);
    let (block, _, _) = state
        .make_block(
            vec![],
            None,
            account::Id::from(public_key(&key).ed25519().unwrap()),
            g.genesis_time,
        )
        .unwrap();
    let request = finalize_request(&block, &state.last_validator_infos, vec![]);
    let err = bulwark_app::finalize_checked(&mut app, request).unwrap_err();
    assert!(err.to_string().contains("does not apply yet"), "{err}");
}
