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
    build_with(heights, key, g, app, blocks, None)
}

/// [`build`], with one more transaction in one block.
fn build_with(
    heights: u64,
    key: &SigningKey,
    g: &Genesis<serde_json::Value>,
    app: &mut KvStore,
    blocks: &BlockStore,
    extra: Option<(u64, Vec<u8>)>,
) -> ChainState {
    let address = account::Id::from(public_key(key).ed25519().unwrap());
    let mut state = genesis_state(g, app);
    let mut last_commit: Option<Commit> = None;
    for h in 1..=heights {
        // BFT time: genesis time, then the (one) vote time of the last commit.
        let time = state.next_block_time(last_commit.as_ref());
        let vote_time = Time::from_unix_timestamp(1_700_000_000 + h as i64, 0).unwrap();
        let mut txs = vec![format!("k{h}=v{h}").into_bytes()];
        if let Some((at, tx)) = &extra {
            if *at == h {
                txs.push(tx.clone());
            }
        }
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
        state.apply(&block, id, &result).unwrap();
        blocks
            .save(DecidedHeight {
                height: h,
                hash: id.hash.as_bytes(),
                block: &pb::types::Block::from(block).encode_to_vec(),
                commit: &pb::types::Commit::from(commit.clone()).encode_to_vec(),
                extensions: &[],
                state: &state.encode(),
                results: &encode_results(result.clone()),
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

/// The handshake replays each block with the last commit's own validator set: after the
/// sole validator's power changes at height 1 (in effect from height 3), block 3's last
/// commit (of height 2) still carries power 10 and block 4's carries 30, as the node passed
/// them when it ran. With the next set taken for the last one, block 3 would say 30.
#[test]
fn the_handshake_replays_each_block_with_its_last_commits_own_validators() {
    use base64::Engine as _;
    let key = SigningKey::from([12u8; 32]);
    let mut g = genesis(&key);
    g.app_state = serde_json::json!({"validator_updates": "genesis-validators"});
    let (da, ds, db) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let mut app = fresh_app(da.path(), &g);
    let blocks = BlockStore::open(&Store::open(ds.path()).unwrap()).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(public_key(&key).to_bytes());
    let raise = format!("val=ed25519!{encoded}!30").into_bytes();
    let built = build_with(6, &key, &g, &mut app, &blocks, Some((1, raise)));
    assert_eq!(built.validator_infos.validators()[0].power(), 30);
    let mut fresh = common::Altered {
        inner: fresh_app(db.path(), &g),
        init: |_| {},
        finalize: |_| {},
        finalized: Vec::new(),
        params_told: Vec::new(),
    };
    let genesis_s = genesis_state(&g, &fresh.inner);
    let replayed = handshake(&mut fresh, &blocks, genesis_s).unwrap();
    assert_eq!(replayed.encode(), built.encode());
    let powers: Vec<(u64, Vec<u64>)> = fresh
        .finalized
        .iter()
        .map(|r| {
            let powers = r
                .decided_last_commit
                .votes
                .iter()
                .map(|v| v.validator.power.value());
            (r.height.value(), powers.collect())
        })
        .collect();
    assert_eq!(
        powers,
        vec![
            (1, vec![]),
            (2, vec![10]),
            (3, vec![10]),
            (4, vec![30]),
            (5, vec![30]),
            (6, vec![30]),
        ]
    );
    // Before each replayed block, and once the handshake is done, the application's client
    // is told the parameters in force (what an application's partial update is completed
    // from).
    let told: Vec<usize> = fresh.params_told.iter().map(|(n, _)| *n).collect();
    assert_eq!(told, vec![0, 1, 2, 3, 4, 5, 6]);
    assert!(fresh
        .params_told
        .iter()
        .all(|(_, p)| *p == built.consensus_params));
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

/// The kvstore flushes at every `FLUSH_EVERY_HEIGHTS`-th commit only (the block store is the
/// durable record): a power cut after 20 heights that keeps `keep` of its 4 unflushed commits
/// (each one atomic write) leaves it at height 16 + `keep`, and the handshake replays the rest,
/// hash by hash, with their data.
#[test]
fn a_kvstore_that_lost_its_unflushed_commits_in_a_power_cut_is_replayed_to_the_chain() {
    use bulwark_app::kvstore::FLUSH_EVERY_HEIGHTS;
    use bulwark_kv::{Db, MemDisk};
    let key = SigningKey::from([3u8; 32]);
    let g = genesis(&key);
    let heights = FLUSH_EVERY_HEIGHTS + 4;
    for keep in 0..=4u64 {
        let ds = tempfile::tempdir().unwrap();
        let disk = MemDisk::new("kvstore");
        let mut app = KvStore::open_db(Db::on(&disk)).unwrap();
        bulwark_node::handshake::genesis_state(&mut app, &g).unwrap();
        let blocks = BlockStore::open(&Store::open(ds.path()).unwrap()).unwrap();
        let final_state = build(heights, &key, &g, &mut app, &blocks);
        assert_eq!(disk.unflushed(), 4, "one atomic write per unflushed commit");
        disk.crash(keep as usize);
        drop(app);
        let mut app = KvStore::open_db(Db::on(&disk)).unwrap();
        let info = app
            .info(request::Info {
                version: String::new(),
                block_version: 11,
                p2p_version: 8,
                abci_version: String::new(),
            })
            .unwrap();
        assert_eq!(info.last_block_height.value(), FLUSH_EVERY_HEIGHTS + keep);
        let start = genesis_state(&g, &app);
        let s = handshake(&mut app, &blocks, start).unwrap();
        assert_eq!(s.encode(), final_state.encode());
        assert_eq!(common::app_hash(&app), final_state.app_hash);
        for h in FLUSH_EVERY_HEIGHTS + 1..=heights {
            let q = app
                .query(request::Query {
                    data: Bytes::from(format!("k{h}")),
                    path: String::new(),
                    height: block::Height::try_from(0u64).unwrap(),
                    prove: false,
                })
                .unwrap();
            assert_eq!(q.value.as_ref(), format!("v{h}").as_bytes(), "keep {keep}");
        }
    }
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
            finalized: Vec::new(),
            params_told: Vec::new(),
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

/// What FinalizeBlock at height H returns for the validators takes effect at H + 2, its
/// parameters at H + 1 (CometBFT's `updateState`); updates that cannot apply are errors that
/// change nothing; the sets survive encoding, and a state written before `next` existed reads.
#[test]
fn updates_take_effect_at_the_heights_cometbft_gives_them_and_bad_ones_change_nothing() {
    let keys: Vec<SigningKey> = (0..4u8).map(|i| SigningKey::from([80 + i; 32])).collect();
    let mut g = genesis(&keys[0]);
    g.validators = keys
        .iter()
        .map(|k| validator::Info::new(public_key(k), 10u32.into()))
        .collect();
    let proposer = account::Id::from(public_key(&keys[0]).ed25519().unwrap());
    let mut state = ChainState::from_genesis(&g).unwrap();
    let genesis_hash = state.validator_infos.hash();
    let newcomer = public_key(&SigningKey::from([99u8; 32]));
    let update = |pub_key, power: u32| validator::Update {
        pub_key,
        power: power.into(),
    };
    let result = |updates: Vec<validator::Update>, params: Option<_>| response::FinalizeBlock {
        events: vec![],
        tx_results: vec![],
        validator_updates: updates,
        consensus_param_updates: params,
        app_hash: Default::default(),
    };
    let next_block = |state: &ChainState| {
        let (block, id, _) = state
            .make_block(vec![], None, proposer, g.genesis_time)
            .unwrap();
        (block, id)
    };
    // Height 1 adds a validator, removes one, changes another's power.
    let (block, id) = next_block(&state);
    let changes = vec![
        update(newcomer, 25),
        update(public_key(&keys[1]), 0),
        update(public_key(&keys[2]), 5),
    ];
    let before = state.encode();
    // Bad updates first: each refused, the state as it was.
    for bad in [
        vec![update(public_key(&SigningKey::from([98u8; 32])), 0)],
        vec![update(newcomer, 1), update(newcomer, 2)],
        keys.iter().map(|k| update(public_key(k), 0)).collect(),
    ] {
        let err = state.apply(&block, id, &result(bad, None)).unwrap_err();
        assert!(err.to_string().contains("updates cannot apply"), "{err}");
        assert_eq!(state.encode(), before);
    }
    let mut larger = g.consensus_params.clone();
    larger.block.max_bytes += 1;
    assert!(state
        .apply(&block, id, &result(vec![], Some(larger)))
        .is_err());
    assert_eq!(state.encode(), before);
    state.apply(&block, id, &result(changes, None)).unwrap();
    // Height 2 still has the genesis set; its header names the changed one as next.
    assert_eq!(state.validator_infos.hash(), genesis_hash);
    let changed_hash = state.next_validator_infos.hash();
    assert_ne!(changed_hash, genesis_hash);
    let (block2, id2) = next_block(&state);
    assert_eq!(block2.header.validators_hash, genesis_hash);
    assert_eq!(block2.header.next_validators_hash, changed_hash);
    // The sets survive the store, and so do states written before `next` was.
    let back = ChainState::decode(&state.encode()).unwrap();
    assert_eq!(back.next_validator_infos.hash(), changed_hash);
    assert_eq!(back.next_validators, state.next_validators);
    let mut old: serde_json::Value = serde_json::from_slice(&before).unwrap();
    old.as_object_mut().unwrap().remove("next");
    let old = ChainState::decode(old.to_string().as_bytes()).unwrap();
    assert_eq!(old.next_validator_infos.hash(), genesis_hash);
    assert_eq!(old.next_validators, old.validators.next_height());
    // Height 2 lowers block.max_bytes: in effect for height 3, whose header commits to it.
    let mut smaller = g.consensus_params.clone();
    smaller.block.max_bytes /= 2;
    state
        .apply(&block2, id2, &result(vec![], Some(smaller.clone())))
        .unwrap();
    assert_eq!(state.consensus_params, smaller);
    // Height 3 is signed by the changed set: the newcomer in, keys[1] out, keys[2] at 5.
    assert_eq!(state.validator_infos.hash(), changed_hash);
    let powers: Vec<(account::Id, u64)> = state
        .validator_infos
        .validators()
        .iter()
        .map(|v| (v.address, v.power()))
        .collect();
    let id_of = |k: &SigningKey| account::Id::from(public_key(k).ed25519().unwrap());
    assert_eq!(powers.len(), 4);
    assert_eq!(
        powers[0],
        (account::Id::from(newcomer.ed25519().unwrap()), 25)
    );
    assert!(!powers.iter().any(|(a, _)| *a == id_of(&keys[1])));
    assert!(powers.contains(&(id_of(&keys[2]), 5)));
    assert_eq!(state.last_validator_infos.hash(), genesis_hash);
    // The core agrees with the infos, newcomer included, and the newcomer does not propose
    // before those already waiting.
    assert_eq!(state.validators.len(), 4);
    assert_ne!(
        state
            .validators
            .get(state.validators.proposer())
            .unwrap()
            .address,
        newcomer
            .ed25519()
            .map(account::Id::from)
            .unwrap()
            .as_bytes()
            .to_vec()
    );
}

/// CometBFT's `ValidateUpdate` for `abci.vote_extensions_enable_height`: an application may
/// set, move or clear it only while it lies ahead of the block being executed.
#[test]
fn vote_extensions_are_enabled_moved_or_disabled_only_while_the_enable_height_lies_ahead() {
    let key = SigningKey::from([70u8; 32]);
    let g = genesis(&key);
    let proposer = account::Id::from(public_key(&key).ed25519().unwrap());
    let with_enable = |height: Option<u32>| {
        let mut p = g.consensus_params.clone();
        p.abci.vote_extensions_enable_height =
            height.map(bulwark_types::tendermint::block::Height::from);
        Some(p)
    };
    let result = |params| response::FinalizeBlock {
        events: vec![],
        tx_results: vec![],
        validator_updates: vec![],
        consensus_param_updates: params,
        app_hash: Default::default(),
    };
    // Applies block `state.next_height()` with `enable` as the update; whether it applied.
    let apply = |state: &mut ChainState, enable: Option<u32>| {
        let (block, id, _) = state
            .make_block(vec![], None, proposer, g.genesis_time)
            .unwrap();
        let before = state.encode();
        let applied = state
            .apply(&block, id, &result(with_enable(enable)))
            .is_ok();
        if !applied {
            assert_eq!(state.encode(), before, "a refused update changes nothing");
        }
        applied
    };
    let mut state = ChainState::from_genesis(&g).unwrap();
    assert!(
        !apply(&mut state, Some(1)),
        "the height being executed is too late"
    );
    assert!(
        apply(&mut state, Some(4)),
        "block 1 enables them from height 4"
    );
    assert!(apply(&mut state, Some(6)), "block 2 moves that to 6");
    assert!(
        !apply(&mut state, Some(3)),
        "not to the block being executed"
    );
    assert!(
        apply(&mut state, None),
        "block 3 disables them before they start"
    );
    assert!(apply(&mut state, Some(5)), "block 4 enables them from 5");
    assert!(
        !apply(&mut state, None),
        "block 5 is extended: too late to disable"
    );
    assert!(!apply(&mut state, Some(9)), "or to move");
    assert!(apply(&mut state, Some(5)), "the same height is no change");
    assert!(bulwark_node::chain::extensions_enabled(
        &state.consensus_params,
        6
    ));
    assert!(!bulwark_node::chain::extensions_enabled(
        &state.consensus_params,
        4
    ));
}
