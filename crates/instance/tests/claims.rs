//! Claims, the register and the pool: what a block may carry and who may sign after it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_instance::*;
use bulwark_types::tendermint::abci::types::ExecTxResult;
use bulwark_types::tendermint::{validator, PublicKey};
use bytes::Bytes;

const CHAIN: &str = "test-chain-abc";

#[test]
fn only_the_launch_instance_the_genesis_names_signs_before_any_claim() {
    let register = Register::at_launch(5, [(address(1), [7; 32])]);
    let launch = register.authorization(&address(1), &[7; 32]);
    // As if claimed in the block before the chain's first.
    assert_eq!(launch, Authorization::Holder { since: 4 });
    assert!(launch.may_sign());
    // A copy of its enrolled disk boots as another instance: it waits for its claim.
    let copy = register.authorization(&address(1), &[8; 32]);
    assert!(
        matches!(copy, Authorization::Elsewhere { since: 4, .. }),
        "{copy:?}"
    );
    assert!(!copy.may_sign());
    // A validator the genesis names no instance of signs only after its claim.
    let unnamed = register.authorization(&address(2), &[7; 32]);
    assert_eq!(unnamed, Authorization::Unclaimed);
    assert!(!unnamed.may_sign());
    // The first claim above the launch may take the key over; none at or below it.
    assert!(claim(1, 8, 4).check_timing(5, &register).is_err());
    claim(1, 8, 5).check_timing(5, &register).unwrap();
}

#[test]
fn a_signer_at_launch_signs_and_stops_for_good_when_a_newer_instance_claims() {
    let mut register = Register::at_launch(1, [(address(1), [7; 32])]);
    let mut launch = Signer::new([7; 32]);
    assert!(launch.may_sign(&register, &address(1)).0);
    assert_eq!(
        launch.after_commit(&register, &address(1), 2),
        ClaimAction::None
    );
    // A copy claims and its claim commits: the launch instance stops and never claims back.
    register.apply(3, &[claim(1, 8, 3).to_tx()]);
    let (may, line) = launch.may_sign(&register, &address(1));
    assert!(!may);
    assert!(line.unwrap().contains("STOPPED SIGNING for good"));
    assert_eq!(
        launch.after_commit(&register, &address(1), 4),
        ClaimAction::None
    );
    // A restarted instance claims at the next height.
    let mut restarted = Signer::new([9; 32]);
    assert_eq!(
        restarted.after_commit(&register, &address(1), 4),
        ClaimAction::Claim(4)
    );
}

fn key(i: u8) -> ed25519_consensus::SigningKey {
    ed25519_consensus::SigningKey::from([i; 32])
}

fn set(n: u8) -> validator::Set {
    validator::Set::without_proposer(
        (1..=n)
            .map(|i| {
                let pk =
                    PublicKey::from_raw_ed25519(&key(i).verification_key().to_bytes()).unwrap();
                validator::Info::new(pk, 10u32.into())
            })
            .collect(),
    )
}

fn address(i: u8) -> [u8; 20] {
    let pk = PublicKey::from_raw_ed25519(&key(i).verification_key().to_bytes()).unwrap();
    validator::Info::new(pk, 10u32.into())
        .address
        .as_bytes()
        .try_into()
        .unwrap()
}

fn claim(i: u8, instance: u8, not_before: u64) -> Claim {
    let validator = address(i);
    let bytes = Claim::signed_bytes(CHAIN, &validator, &[instance; 32], not_before);
    Claim {
        validator,
        instance: [instance; 32],
        not_before,
        signature: key(i).sign(&bytes).to_bytes(),
    }
}

#[test]
fn a_claim_travels_as_a_transaction_and_verifies_only_as_signed() {
    let c = claim(1, 7, 5);
    let tx = c.to_tx();
    assert!(tx.starts_with(TX_MAGIC));
    assert_eq!(Claim::from_tx(&tx), Some(Ok(c.clone())));
    assert_eq!(Claim::from_tx(b"key=value"), None);
    assert_eq!(
        Claim::from_tx(&tx[..tx.len() - 1]),
        Some(Err(ClaimError::Length(tx.len() - 1)))
    );
    c.verify_signature(CHAIN, &set(4)).unwrap();
    // Another chain, another instance, another height, another signer: refused.
    assert!(c.verify_signature("other-chain", &set(4)).is_err());
    for changed in [
        Claim {
            instance: [8; 32],
            ..c.clone()
        },
        Claim {
            not_before: 6,
            ..c.clone()
        },
    ] {
        assert!(matches!(
            changed.verify_signature(CHAIN, &set(4)),
            Err(ClaimError::Signature(_))
        ));
    }
    let mut forged = claim(2, 7, 5);
    forged.validator = address(1);
    assert!(forged.verify_signature(CHAIN, &set(4)).is_err());
    assert!(matches!(
        claim(9, 1, 5).verify_signature(CHAIN, &set(4)),
        Err(ClaimError::NotAValidator(_))
    ));
}

#[test]
fn the_signed_bytes_can_never_be_consensus_sign_bytes() {
    // CometBFT sign bytes start with their non-zero varint length.
    assert_eq!(SIGNING_DOMAIN[0], 0);
    assert_eq!(Claim::signed_bytes(CHAIN, &[0; 20], &[0; 32], 1)[0], 0);
}

#[test]
fn a_claim_is_valid_for_its_window_and_only_above_the_holders_claim() {
    let mut register = Register::default();
    let c = claim(1, 7, 10);
    assert!(c.check_timing(9, &register).is_err());
    c.check_timing(10, &register).unwrap();
    c.check_timing(10 + CLAIM_TTL, &register).unwrap();
    assert!(c.check_timing(11 + CLAIM_TTL, &register).is_err());
    register.apply(12, &[c.to_tx()]);
    // Replayed after it committed, or any claim made before height 13: stale.
    assert!(matches!(
        c.check_timing(14, &register),
        Err(ClaimError::Stale { .. })
    ));
    assert!(claim(1, 8, 12).check_timing(14, &register).is_err());
    claim(1, 8, 13).check_timing(14, &register).unwrap();
}

#[test]
fn the_register_names_one_holder_per_validator_and_the_newest_claim_wins() {
    let mut register = Register::default();
    assert_eq!(
        register.authorization(&address(1), &[7; 32]),
        Authorization::Unclaimed
    );
    register.apply(3, &[claim(1, 7, 2).to_tx(), b"k=v".to_vec()]);
    assert_eq!(
        register.authorization(&address(1), &[7; 32]),
        Authorization::Holder { since: 3 }
    );
    assert!(register.authorization(&address(1), &[7; 32]).may_sign());
    register.apply(9, &[claim(1, 8, 8).to_tx()]);
    let old = register.authorization(&address(1), &[7; 32]);
    assert!(!old.may_sign(), "{old:?}");
    assert_eq!(
        register.authorization(&address(1), &[8; 32]),
        Authorization::Holder { since: 9 }
    );
    // Another validator is untouched.
    assert_eq!(
        register.authorization(&address(2), &[7; 32]),
        Authorization::Unclaimed
    );
}

#[test]
fn a_block_with_a_bad_claim_or_two_of_one_validator_is_refused() {
    let register = Register::default();
    let good = [
        claim(1, 7, 5).to_tx(),
        claim(2, 7, 5).to_tx(),
        b"a=b".to_vec(),
    ];
    Claim::check_block(&good, CHAIN, &set(4), 5, &register).unwrap();
    let twice = [claim(1, 7, 5).to_tx(), claim(1, 8, 5).to_tx()];
    assert!(matches!(
        Claim::check_block(&twice, CHAIN, &set(4), 5, &register),
        Err(ClaimError::Twice(_))
    ));
    let mut bad = claim(1, 7, 5).to_tx();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(Claim::check_block(&[bad], CHAIN, &set(4), 5, &register).is_err());
    let short = TX_MAGIC.to_vec();
    assert!(Claim::check_block(&[short], CHAIN, &set(4), 5, &register).is_err());
}

#[test]
fn the_application_sees_no_claim_and_every_transaction_gets_a_result_in_order() {
    let txs: Vec<Bytes> = vec![
        claim(1, 7, 5).to_tx().into(),
        Bytes::from_static(b"a=1"),
        claim(2, 7, 5).to_tx().into(),
        Bytes::from_static(b"b=2"),
    ];
    let (app, claims) = split_claims(&txs);
    assert_eq!(
        app,
        vec![Bytes::from_static(b"a=1"), Bytes::from_static(b"b=2")]
    );
    assert_eq!(claims, vec![0, 2]);
    let results = |log: &str| ExecTxResult {
        log: log.into(),
        ..Default::default()
    };
    let merged = merge_results(vec![results("a"), results("b")], &claims);
    let logs: Vec<&str> = merged.iter().map(|r| r.log.as_str()).collect();
    assert_eq!(
        logs,
        ["bulwark instance claim", "a", "bulwark instance claim", "b"]
    );
}

#[test]
fn the_pool_keeps_the_newest_valid_claim_per_validator_and_forgets_expired_ones() {
    let register = Register::default();
    let mut pool = Pool::default();
    assert!(pool
        .insert(claim(1, 7, 5), CHAIN, &set(4), 5, &register)
        .unwrap());
    assert!(!pool
        .insert(claim(1, 8, 4), CHAIN, &set(4), 5, &register)
        .unwrap());
    assert!(pool
        .insert(claim(1, 9, 6), CHAIN, &set(4), 5, &register)
        .unwrap());
    let mut bad = claim(2, 7, 5);
    bad.signature[0] ^= 1;
    assert!(pool.insert(bad, CHAIN, &set(4), 5, &register).is_err());
    assert!(pool
        .insert(claim(3, 7, 5 + CLAIM_TTL + 1), CHAIN, &set(4), 5, &register)
        .is_err());
    assert_eq!(pool.len(), 1);
    assert!(pool.reap(5, &register, &set(4)).is_empty(), "not before 6");
    assert_eq!(
        pool.reap(6, &register, &set(4)),
        vec![claim(1, 9, 6).to_tx()]
    );
    // Its validator gone from the set: no block carries it.
    let others = validator::Set::without_proposer(set(4).validators()[..0].to_vec());
    assert!(pool.reap(6, &register, &others).is_empty());
    pool.prune(7 + CLAIM_TTL, &register);
    assert!(pool.is_empty());
}
