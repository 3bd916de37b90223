//! The privval never signs twice differently at one height/round/step, never steps back, and
//! remembers across restarts (the state is flushed before a signature is returned).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_store::privval::{PrivValidator, PrivvalError, Step};
use bulwark_store::Store;
use bulwark_types::signing::{public_key, verify_proposal, verify_vote};
use bulwark_types::tendermint::{account, block, chain, proposal, vote, Hash, Time};
use ed25519_consensus::SigningKey;

fn key() -> SigningKey {
    SigningKey::from([5u8; 32])
}

fn chain_id() -> chain::Id {
    "bulwark-test".parse().unwrap()
}

fn block_id(b: u8) -> block::Id {
    block::Id {
        hash: Hash::Sha256([b; 32]),
        part_set_header: block::parts::Header::new(1, Hash::Sha256([b ^ 0xff; 32])).unwrap(),
    }
}

fn vote(kind: vote::Type, h: u64, r: u32, b: Option<u8>, secs: i64) -> vote::Vote {
    vote::Vote {
        vote_type: kind,
        height: block::Height::try_from(h).unwrap(),
        round: block::Round::try_from(r).unwrap(),
        block_id: b.map(block_id),
        timestamp: Some(Time::from_unix_timestamp(1_700_000_000 + secs, 0).unwrap()),
        validator_address: account::Id::from(public_key(&key()).ed25519().unwrap()),
        validator_index: 0u32.try_into().unwrap(),
        signature: None,
        extension: vec![],
        extension_signature: None,
    }
}

fn proposal(h: u64, r: u32, b: u8, secs: i64) -> proposal::Proposal {
    proposal::Proposal {
        msg_type: proposal::Type::Proposal,
        height: block::Height::try_from(h).unwrap(),
        round: block::Round::try_from(r).unwrap(),
        pol_round: None,
        block_id: Some(block_id(b)),
        timestamp: Some(Time::from_unix_timestamp(1_700_000_000 + secs, 0).unwrap()),
        signature: None,
    }
}

fn open(dir: &std::path::Path) -> PrivValidator {
    PrivValidator::open(key(), &Store::open(dir).unwrap()).unwrap()
}

#[test]
fn signs_a_normal_sequence_and_every_signature_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut pv = open(dir.path());
    let mut p = proposal(1, 0, 1, 0);
    pv.sign_proposal(&mut p, &chain_id()).unwrap();
    verify_proposal(&public_key(&key()), &p, &chain_id()).unwrap();
    for kind in [vote::Type::Prevote, vote::Type::Precommit] {
        let mut v = vote(kind, 1, 0, Some(1), 1);
        pv.sign_vote(&mut v, &chain_id()).unwrap();
        verify_vote(&public_key(&key()), &v, &chain_id()).unwrap();
    }
    let mut next = vote(vote::Type::Prevote, 1, 1, None, 2);
    pv.sign_vote(&mut next, &chain_id()).unwrap();
    let mut later = vote(vote::Type::Prevote, 2, 0, Some(2), 3);
    pv.sign_vote(&mut later, &chain_id()).unwrap();
    assert_eq!(pv.last_sign_state().unwrap().height, 2);
}

#[test]
fn refuses_to_double_sign_and_to_step_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut pv = open(dir.path());
    let mut a = vote(vote::Type::Prevote, 5, 1, Some(1), 0);
    pv.sign_vote(&mut a, &chain_id()).unwrap();
    // Another block at the same height/round/step.
    let mut b = vote(vote::Type::Prevote, 5, 1, Some(2), 0);
    assert!(matches!(
        pv.sign_vote(&mut b, &chain_id()),
        Err(PrivvalError::Conflict {
            height: 5,
            round: 1,
            step: Step::Prevote
        })
    ));
    assert!(b.signature.is_none());
    // Nil instead of the block.
    let mut nil = vote(vote::Type::Prevote, 5, 1, None, 0);
    assert!(matches!(
        pv.sign_vote(&mut nil, &chain_id()),
        Err(PrivvalError::Conflict { .. })
    ));
    // Earlier round, earlier height, earlier step.
    for mut v in [
        vote(vote::Type::Prevote, 5, 0, Some(1), 0),
        vote(vote::Type::Precommit, 4, 9, Some(1), 0),
    ] {
        assert!(matches!(
            pv.sign_vote(&mut v, &chain_id()),
            Err(PrivvalError::Regression { .. })
        ));
    }
    let mut late_proposal = proposal(5, 1, 1, 0);
    assert!(matches!(
        pv.sign_proposal(&mut late_proposal, &chain_id()),
        Err(PrivvalError::Regression { .. })
    ));
}

#[test]
fn the_same_vote_again_gets_the_same_signature_and_a_new_timestamp_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut pv = open(dir.path());
    let mut first = vote(vote::Type::Precommit, 3, 0, Some(7), 0);
    pv.sign_vote(&mut first, &chain_id()).unwrap();
    let mut again = vote(vote::Type::Precommit, 3, 0, Some(7), 0);
    pv.sign_vote(&mut again, &chain_id()).unwrap();
    assert_eq!(again.signature, first.signature);
    // Only the timestamp differs: the old signature with the old timestamp, which verifies.
    let mut later = vote(vote::Type::Precommit, 3, 0, Some(7), 30);
    pv.sign_vote(&mut later, &chain_id()).unwrap();
    assert_eq!(later.signature, first.signature);
    assert_eq!(later.timestamp, first.timestamp);
    verify_vote(&public_key(&key()), &later, &chain_id()).unwrap();
    let mut p1 = proposal(4, 0, 1, 0);
    pv.sign_proposal(&mut p1, &chain_id()).unwrap();
    let mut p2 = proposal(4, 0, 1, 99);
    pv.sign_proposal(&mut p2, &chain_id()).unwrap();
    assert_eq!(
        (p2.signature.clone(), p2.timestamp),
        (p1.signature.clone(), p1.timestamp)
    );
    let mut other_block = proposal(4, 0, 2, 0);
    assert!(matches!(
        pv.sign_proposal(&mut other_block, &chain_id()),
        Err(PrivvalError::Conflict {
            step: Step::Propose,
            ..
        })
    ));
}

#[test]
fn a_restarted_privval_remembers_what_it_signed() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let mut pv = open(dir.path());
        let mut v = vote(vote::Type::Prevote, 9, 2, Some(1), 0);
        pv.sign_vote(&mut v, &chain_id()).unwrap();
        v
    };
    let mut pv = open(dir.path());
    assert_eq!(pv.last_sign_state().unwrap().height, 9);
    let mut conflicting = vote(vote::Type::Prevote, 9, 2, Some(2), 0);
    assert!(matches!(
        pv.sign_vote(&mut conflicting, &chain_id()),
        Err(PrivvalError::Conflict { .. })
    ));
    let mut same = vote(vote::Type::Prevote, 9, 2, Some(1), 0);
    pv.sign_vote(&mut same, &chain_id()).unwrap();
    assert_eq!(same.signature, first.signature);
}

#[test]
fn a_last_sign_state_written_without_the_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let key_of_node = [9u8; 32];
    {
        let store = Store::open(dir.path()).unwrap().with_mac_key(key_of_node);
        let mut pv = PrivValidator::open(key(), &store).unwrap();
        let mut v = vote(vote::Type::Prevote, 5, 0, Some(1), 0);
        pv.sign_vote(&mut v, &chain_id()).unwrap();
    }
    // It reopens under its key.
    {
        let store = Store::open(dir.path()).unwrap().with_mac_key(key_of_node);
        let pv = PrivValidator::open(key(), &store).unwrap();
        assert_eq!(pv.last_sign_state().unwrap().height, 5);
    }
    // The host rolls the state back to height 1 by writing it under a key it knows.
    {
        let host = Store::open(dir.path()).unwrap().with_mac_key([0; 32]);
        let tree = host.db().tree("privval").unwrap();
        tree.remove(b"last_sign_state").unwrap();
        let mut pv = PrivValidator::open(key(), &host).unwrap();
        let mut v = vote(vote::Type::Prevote, 1, 0, Some(1), 0);
        pv.sign_vote(&mut v, &chain_id()).unwrap();
    }
    let store = Store::open(dir.path()).unwrap().with_mac_key(key_of_node);
    match PrivValidator::open(key(), &store) {
        Err(e) => assert!(e.to_string().contains("fails its MAC"), "{e}"),
        Ok(_) => panic!("a host-written last-sign-state was accepted"),
    }
}

/// The engine logs its own block without a flush of its own: the flush that records the
/// proposal's signature, which comes next, makes it durable, as the log and the
/// last-sign-state share one database and one journal. Shown across a real crash: a child
/// process (this test, run again) appends the record, signs the proposal and aborts, with no
/// destructor or close run; the record is there when the store is opened again.
#[test]
fn a_record_logged_before_a_signature_is_durable_once_the_signature_is() {
    const CHILD: &str = "BULWARK_STORE_CRASH_DIR";
    if let Some(dir) = std::env::var_os(CHILD) {
        let store = Store::open(std::path::Path::new(&dir)).unwrap();
        let mut wal = bulwark_store::wal::Wal::open(&store).unwrap();
        wal.append(1, b"own block").unwrap();
        let mut pv = PrivValidator::open(key(), &store).unwrap();
        pv.sign_proposal(&mut proposal(1, 0, 1, 0), &chain_id())
            .unwrap();
        std::process::abort();
    }
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_record_logged_before_a_signature_is_durable_once_the_signature_is",
        ])
        .env(CHILD, dir.path())
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        child.status.signal(),
        Some(6),
        "the child did not abort: {}",
        String::from_utf8_lossy(&child.stdout)
    );
    let store = Store::open(dir.path()).unwrap();
    let pv = PrivValidator::open(key(), &store).unwrap();
    let last = pv.last_sign_state().expect("the signature was recorded");
    assert_eq!((last.height, last.step), (1, Step::Propose));
    let wal = bulwark_store::wal::Wal::open(&store).unwrap();
    assert_eq!(wal.records(1).unwrap(), vec![b"own block".to_vec()]);
}
