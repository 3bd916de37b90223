//! The kvstore through the Application trait: results, deterministic app hash, durability only
//! at commit, queries.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_app::kvstore::{KvStore, CODE_INVALID_FORMAT, CODE_NOT_FOUND, CODE_UNSUPPORTED};
use bulwark_app::{AppError, Application};
use bulwark_types::tendermint::abci::{request, response, Code};
use bulwark_types::tendermint::{account, consensus, Hash, Time};
use bytes::Bytes;
use common::{finalize, info, query};

/// InitChain with `app_state` and `validators`, and CometBFT's default parameters.
fn init_chain(
    app_state: &str,
    validators: Vec<bulwark_types::tendermint::validator::Update>,
) -> request::InitChain {
    request::InitChain {
        time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
        chain_id: "bulwark-test".into(),
        consensus_params: serde_json::from_str::<consensus::Params>(
            r#"{"block":{"max_bytes":"22020096","max_gas":"-1"},"evidence":{"max_age_num_blocks":"100000","max_age_duration":"172800000000000","max_bytes":"1048576"},"validator":{"pub_key_types":["ed25519"]},"version":{"app":"0"}}"#,
        )
        .unwrap(),
        validators,
        app_state_bytes: Bytes::from(app_state.to_string()),
        initial_height: 1u32.into(),
    }
}

fn code(c: Code) -> u32 {
    c.value()
}

#[test]
fn valid_and_malformed_txs_get_their_codes_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = KvStore::open(dir.path()).unwrap();
    let longest = format!("{}=v", "k".repeat(bulwark_app::kvstore::MAX_KEY_BYTES));
    let too_long = format!("{}=v", "k".repeat(bulwark_app::kvstore::MAX_KEY_BYTES + 1));
    // Longer than any database key: it must fail in a block, never stop the node.
    let far_too_long = format!("{}=v", "k".repeat(70_000));
    for (tx, ok) in [
        ("a=1", true),
        ("key=val=ue", true),
        ("noequals", false),
        ("=v", false),
        ("k=", false),
        ("", false),
        (longest.as_str(), true),
        (too_long.as_str(), false),
        (far_too_long.as_str(), false),
    ] {
        let r = app
            .check_tx(request::CheckTx {
                tx: Bytes::from(tx.to_string()),
                kind: request::CheckTxKind::New,
            })
            .unwrap();
        assert_eq!(code(r.code) == 0, ok, "{:?}", &tx[..tx.len().min(20)]);
    }
    let out = app
        .finalize_block(finalize(
            1,
            &["a=1", "junk", "b=2", &too_long, &far_too_long, &longest],
        ))
        .unwrap();
    let codes: Vec<u32> = out.tx_results.iter().map(|r| code(r.code)).collect();
    assert_eq!(
        codes,
        vec![
            0,
            CODE_INVALID_FORMAT,
            0,
            CODE_INVALID_FORMAT,
            CODE_INVALID_FORMAT,
            0
        ]
    );
    app.commit().unwrap();
    let q = app.query(query("a")).unwrap();
    assert_eq!(
        (code(q.code), q.value.as_ref(), q.height.value()),
        (0, b"1".as_ref(), 1)
    );
    assert_eq!(code(app.query(query("junk")).unwrap().code), CODE_NOT_FOUND);
}

#[test]
fn app_hash_is_deterministic_and_depends_on_content_and_order() {
    let run = |txs: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let mut app = KvStore::open(dir.path()).unwrap();
        let h = app.finalize_block(finalize(1, txs)).unwrap().app_hash;
        app.commit().unwrap();
        h
    };
    assert_eq!(run(&["a=1", "b=2"]), run(&["a=1", "b=2"]));
    assert_ne!(run(&["a=1", "b=2"]), run(&["b=2", "a=1"]));
    assert_ne!(run(&["a=1"]), run(&["a=2"]));
    // Malformed txs do not change state, so they do not change the hash.
    assert_eq!(run(&["a=1", "junk"]), run(&["a=1"]));
}

#[test]
fn a_close_keeps_every_commit_and_nothing_finalized_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let committed_hash = {
        let mut app = KvStore::open(dir.path()).unwrap();
        app.finalize_block(finalize(1, &["a=1"])).unwrap();
        app.commit().unwrap();
        let out = app.finalize_block(finalize(2, &["b=2"])).unwrap();
        // Crash before commit of height 2.
        let _ = out;
        app.info(info()).unwrap().last_block_app_hash
    };
    let mut app = KvStore::open(dir.path()).unwrap();
    let i = app.info(info()).unwrap();
    assert_eq!(i.last_block_height.value(), 1);
    assert_eq!(i.last_block_app_hash, committed_hash);
    assert_eq!(code(app.query(query("b")).unwrap().code), CODE_NOT_FOUND);
    // Replaying height 2 gives the result a node that never crashed got.
    app.finalize_block(finalize(2, &["b=2"])).unwrap();
    app.commit().unwrap();
    assert_eq!(app.query(query("b")).unwrap().value.as_ref(), b"2");
}

#[test]
fn out_of_order_calls_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = KvStore::open(dir.path()).unwrap();
    assert!(matches!(app.commit(), Err(AppError::Sequence(_))));
    assert!(matches!(
        app.finalize_block(finalize(3, &[])),
        Err(AppError::Sequence(_))
    ));
}

#[test]
fn proposals_keep_to_the_byte_budget_and_reject_malformed_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = KvStore::open(dir.path()).unwrap();
    let txs: Vec<Bytes> = ["a=1", "bad", "bb=22", "ccc=333"]
        .iter()
        .map(|t| Bytes::from(t.to_string()))
        .collect();
    let prep = app
        .prepare_proposal(request::PrepareProposal {
            max_tx_bytes: 8,
            txs: txs.clone(),
            local_last_commit: None,
            misbehavior: vec![],
            height: 1u32.into(),
            time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
            next_validators_hash: Hash::None,
            proposer_address: account::Id::new([0; 20]),
        })
        .unwrap();
    assert_eq!(prep.txs, vec![Bytes::from("a=1"), Bytes::from("bb=22")]);
    let process = |txs: Vec<Bytes>| request::ProcessProposal {
        txs,
        proposed_last_commit: None,
        misbehavior: vec![],
        hash: Hash::None,
        height: 1u32.into(),
        time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
        next_validators_hash: Hash::None,
        proposer_address: account::Id::new([0; 20]),
    };
    assert_eq!(
        app.process_proposal(process(prep.txs)).unwrap(),
        response::ProcessProposal::Accept
    );
    assert_eq!(
        app.process_proposal(process(txs)).unwrap(),
        response::ProcessProposal::Reject
    );
}

#[test]
fn genesis_state_and_queries_the_store_cannot_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = KvStore::open(dir.path()).unwrap();
    let genesis = |state: &str| init_chain(state, vec![]);
    assert!(matches!(
        app.init_chain(genesis(r#"{"a": 1}"#)),
        Err(AppError::Genesis(_))
    ));
    assert!(matches!(
        app.init_chain(genesis("[1,2]")),
        Err(AppError::Genesis(_))
    ));
    app.init_chain(genesis(r#"{"greeting": "hello"}"#)).unwrap();
    assert_eq!(
        app.query(query("greeting")).unwrap().value.as_ref(),
        b"hello"
    );
    let mut proving = query("greeting");
    proving.prove = true;
    assert_eq!(code(app.query(proving).unwrap().code), CODE_UNSUPPORTED);
    let mut old = query("greeting");
    old.height = 5u32.into();
    assert_eq!(code(app.query(old).unwrap().code), CODE_UNSUPPORTED);
}

/// CometBFT's `val=` transactions: on a chain whose genesis opts in, updates of the genesis
/// validators' keys while the set stays valid, one per key whose power the block changed,
/// error codes otherwise, members kept from commit on; elsewhere an ordinary write.
#[test]
fn validator_transactions_become_updates_while_the_set_stays_valid() {
    use base64::Engine as _;
    use bulwark_app::kvstore::{CODE_BAD_VALIDATOR_UPDATE, MAX_VALIDATORS};
    use bulwark_types::tendermint::{validator, PublicKey};
    let key = |i: u8| PublicKey::from_raw_ed25519(&[i; 32]).unwrap();
    let tx = |i: u8, power: u64| {
        let b64 = base64::engine::general_purpose::STANDARD.encode([i; 32]);
        format!("val=ed25519!{b64}!{power}")
    };
    let genesis = |app_state: &str| {
        let validators = (1..=2)
            .map(|i| validator::Update {
                pub_key: key(i),
                power: 10u32.into(),
            })
            .collect();
        init_chain(app_state, validators)
    };
    let check = |app: &KvStore, t: &str| {
        let tx = Bytes::from(t.to_string());
        let kind = request::CheckTxKind::New;
        code(app.check_tx(request::CheckTx { tx, kind }).unwrap().code)
    };
    let bad = CODE_BAD_VALIDATOR_UPDATE;
    // Without the genesis's opt-in, `val=...` is an ordinary write: no update.
    let plain_dir = tempfile::tempdir().unwrap();
    let mut plain = KvStore::open(plain_dir.path()).unwrap();
    plain.init_chain(genesis("{}")).unwrap();
    let out = plain.finalize_block(finalize(1, &[&tx(1, 0)])).unwrap();
    assert!(out.validator_updates.is_empty());
    assert_eq!(code(out.tx_results[0].code), 0);
    let dir = tempfile::tempdir().unwrap();
    let mut app = KvStore::open(dir.path()).unwrap();
    assert!(app
        .init_chain(genesis(r#"{"validator_updates": "anyone"}"#))
        .is_err());
    app.init_chain(genesis(r#"{"validator_updates": "genesis-validators"}"#))
        .unwrap();
    assert_eq!(check(&app, &tx(1, 5)), 0);
    assert_eq!(check(&app, &tx(3, 5)), bad, "not a genesis validator");
    assert_eq!(check(&app, &tx(3, 0)), bad, "not a member");
    assert_eq!(check(&app, "val=secp256k1!AAAA!1"), bad);
    assert_eq!(check(&app, "val=ed25519!AAAA!1"), bad, "3 bytes");
    assert_eq!(check(&app, &tx(1, 5).replace("!5", "!-5")), bad);
    let block = [
        tx(1, 25),         // a raise
        tx(1, 30),         // the same key again: its last power counts
        tx(2, 0),          // a removal
        tx(1, 0),          // the last member: refused
        tx(9, 0),          // never a member: refused
        tx(2, 5),          // a genesis validator back
        tx(2, 0),          // and gone again: one removal in all
        "k=v".to_string(), // an ordinary write beside them
    ];
    let txs: Vec<&str> = block.iter().map(String::as_str).collect();
    let out = app.finalize_block(finalize(1, &txs)).unwrap();
    let codes: Vec<u32> = out.tx_results.iter().map(|r| code(r.code)).collect();
    assert_eq!(codes, vec![0, 0, 0, bad, bad, 0, 0, 0], "{out:?}");
    let updates: Vec<(PublicKey, u64)> = out
        .validator_updates
        .iter()
        .map(|u| (u.pub_key, u.power.value()))
        .collect();
    assert_eq!(updates, vec![(key(1), 30), (key(2), 0)]);
    app.commit().unwrap();
    // Joined and left within one block: no update at all.
    let out = app
        .finalize_block(finalize(2, &[&tx(2, 5), &tx(2, 0)]))
        .unwrap();
    assert!(out.validator_updates.is_empty(), "{out:?}");
    app.commit().unwrap();
    // Durable, after a reopen too.
    drop(app);
    let app = KvStore::open(dir.path()).unwrap();
    assert_eq!(check(&app, &tx(1, 0)), bad, "the last validator");
    assert_eq!(check(&app, &tx(2, 0)), bad, "removed already");
    assert_eq!(check(&app, &tx(2, 1)), 0, "a genesis validator may return");
    // `any-key`: a key outside the genesis may join, durably, up to the chain's cap.
    let open_dir = tempfile::tempdir().unwrap();
    let mut open = KvStore::open(open_dir.path()).unwrap();
    open.init_chain(genesis(r#"{"validator_updates": "any-key"}"#))
        .unwrap();
    assert_eq!(check(&open, &tx(3, 5)), 0, "any key");
    let out = open.finalize_block(finalize(1, &[&tx(3, 5)])).unwrap();
    assert_eq!(out.validator_updates.len(), 1);
    open.commit().unwrap();
    drop(open);
    let mut open = KvStore::open(open_dir.path()).unwrap();
    assert_eq!(check(&open, &tx(4, 5)), 0, "any key, after a reopen");
    let many = |i: u32| {
        let mut k = [7u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        format!("val=ed25519!{b64}!1")
    };
    let joiners: Vec<String> = (0..MAX_VALIDATORS as u32).map(many).collect();
    let joiners: Vec<&str> = joiners.iter().map(String::as_str).collect();
    let out = open.finalize_block(finalize(2, &joiners)).unwrap();
    assert_eq!(
        out.validator_updates.len(),
        MAX_VALIDATORS - 3,
        "3 before, cap reached"
    );
    assert_eq!(code(out.tx_results[MAX_VALIDATORS - 4].code), 0);
    assert_eq!(code(out.tx_results.last().unwrap().code), bad);
}
