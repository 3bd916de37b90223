//! Duplicate-vote evidence: made from genuinely signed votes it verifies; each way of getting
//! it wrong is refused with its own error; the pool commits each piece once and forgets it only
//! once it can no longer be offered.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_evidence::{
    check_list, digest, duplicate_vote, encoded_len, misbehavior, verify, AtHeight, EvidenceError,
    Now, Pool,
};
use bulwark_types::signing::{public_key, sign_vote};
use bulwark_types::tendermint::evidence::{self, DuplicateVoteEvidence, Evidence};
use bulwark_types::tendermint::{block, chain, validator, vote, Hash, Time};
use bulwark_types::tendermint_proto::v0_38 as pb;
use ed25519_consensus::SigningKey;
use std::time::Duration;

struct Net {
    keys: Vec<SigningKey>,
    set: validator::Set,
    chain_id: chain::Id,
    block_time: Time,
}

fn net() -> Net {
    let keys: Vec<SigningKey> = (1..=4u8).map(|i| SigningKey::from([i; 32])).collect();
    let infos = keys
        .iter()
        .enumerate()
        .map(|(i, k)| validator::Info::new(public_key(k), (10 * (i as u32 + 1)).into()))
        .collect();
    Net {
        keys,
        set: validator::Set::without_proposer(infos),
        chain_id: "evidence-test".parse().unwrap(),
        block_time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
    }
}

fn block_id(tag: u8) -> block::Id {
    block::Id {
        hash: Hash::Sha256([tag; 32]),
        part_set_header: block::parts::Header::new(1, Hash::Sha256([tag ^ 0xff; 32])).unwrap(),
    }
}

impl Net {
    fn at(&self) -> AtHeight<'_> {
        AtHeight {
            chain_id: &self.chain_id,
            validators: &self.set,
            block_time: self.block_time,
        }
    }

    /// The set's validator at `index` (the set sorts by power) and its key.
    fn signer(&self, index: usize) -> (&validator::Info, &SigningKey) {
        let info = &self.set.validators()[index];
        let key = self
            .keys
            .iter()
            .find(|k| public_key(k) == info.pub_key)
            .unwrap();
        (info, key)
    }

    fn vote(&self, index: usize, height: u64, round: u32, id: Option<block::Id>) -> vote::Vote {
        let (info, key) = self.signer(index);
        let mut v = vote::Vote {
            vote_type: vote::Type::Precommit,
            height: block::Height::try_from(height).unwrap(),
            round: block::Round::try_from(round).unwrap(),
            block_id: id,
            timestamp: Some(self.block_time),
            validator_address: info.address,
            validator_index: vote::ValidatorIndex::try_from(index as u32).unwrap(),
            signature: None,
            extension: vec![],
            extension_signature: None,
        };
        sign_vote(key, &mut v, &self.chain_id);
        v
    }

    fn evidence(&self, index: usize, height: u64) -> Evidence {
        let a = self.vote(index, height, 0, Some(block_id(1)));
        let b = self.vote(index, height, 0, Some(block_id(2)));
        duplicate_vote(a, b, self.at()).unwrap()
    }

    fn now(&self, height: u64) -> Now {
        Now {
            height,
            time: self.block_time,
        }
    }
}

fn params() -> evidence::Params {
    evidence::Params {
        max_age_num_blocks: 100,
        max_age_duration: evidence::Duration(Duration::from_secs(3600)),
        max_bytes: 1 << 20,
    }
}

fn dv(e: &Evidence) -> DuplicateVoteEvidence {
    match e {
        Evidence::DuplicateVote(d) => (**d).clone(),
        Evidence::LightClientAttack(_) => unreachable!(),
    }
}

fn refit(d: DuplicateVoteEvidence) -> Evidence {
    Evidence::DuplicateVote(Box::new(d))
}

#[test]
fn evidence_of_a_genuine_double_vote_verifies_whichever_vote_came_first() {
    let n = net();
    let a = n.vote(2, 5, 0, Some(block_id(1)));
    let b = n.vote(2, 5, 0, None);
    let one = duplicate_vote(a.clone(), b.clone(), n.at()).unwrap();
    let other = duplicate_vote(b, a, n.at()).unwrap();
    assert_eq!(digest(&one), digest(&other), "canonical order");
    verify(&one, n.at(), n.now(6), &params()).unwrap();
    let m = misbehavior(&one, &n.set).unwrap();
    assert_eq!(m.validator.power, n.set.validators()[2].power);
    assert_eq!(m.total_voting_power, n.set.total_voting_power());
    assert_eq!(m.height.value(), 5);
}

#[test]
fn each_flaw_is_refused_with_its_own_error() {
    let n = net();
    let good = n.evidence(1, 5);
    let p = params();
    let now = n.now(6);
    let check = |e: &Evidence| verify(e, n.at(), now, &p);

    let mut d = dv(&good);
    d.vote_b.round = block::Round::from(1u8);
    assert_eq!(check(&refit(d)), Err(EvidenceError::Mismatch("round")));

    let mut d = dv(&good);
    d.vote_b = d.vote_a.clone();
    assert_eq!(check(&refit(d)), Err(EvidenceError::SameBlock));

    let mut d = dv(&good);
    std::mem::swap(&mut d.vote_a, &mut d.vote_b);
    assert_eq!(check(&refit(d)), Err(EvidenceError::Order));

    let mut d = dv(&good);
    d.vote_b.signature = d.vote_a.signature.clone();
    assert_eq!(
        check(&refit(d)),
        Err(EvidenceError::BadSignature { which: "B" })
    );

    let mut d = dv(&good);
    d.total_voting_power = 7u32.into();
    assert!(matches!(
        check(&refit(d)),
        Err(EvidenceError::WrongPower { stated: 7, .. })
    ));

    let mut d = dv(&good);
    d.timestamp = n.block_time.checked_add(Duration::from_secs(1)).unwrap();
    assert!(matches!(
        check(&refit(d)),
        Err(EvidenceError::WrongTime { height: 5, .. })
    ));

    // Another validator's index with the first one's votes.
    let mut d = dv(&good);
    d.vote_a.validator_index = vote::ValidatorIndex::try_from(3u32).unwrap();
    d.vote_b.validator_index = d.vote_a.validator_index;
    assert_eq!(
        check(&refit(d)),
        Err(EvidenceError::UnknownValidator {
            index: 3,
            height: 5
        })
    );

    assert_eq!(
        verify(&good, n.at(), n.now(4), &p),
        Err(EvidenceError::NotCommitted(5))
    );

    // Expired only when older than both limits.
    let late = Now {
        height: 5 + 101,
        time: n.block_time.checked_add(Duration::from_secs(3601)).unwrap(),
    };
    assert_eq!(
        verify(&good, n.at(), late, &p),
        Err(EvidenceError::Expired { height: 5 })
    );
    let many_blocks_soon = Now {
        height: 5 + 101,
        time: n.block_time,
    };
    verify(&good, n.at(), many_blocks_soon, &p).unwrap();

    // Signed for another chain.
    let other: chain::Id = "another-chain".parse().unwrap();
    let at = AtHeight {
        chain_id: &other,
        ..n.at()
    };
    assert_eq!(
        verify(&good, at, now, &p),
        Err(EvidenceError::BadSignature { which: "A" })
    );
}

/// tendermint-rs 0.41 writes the total power where the validator's power belongs when it
/// encodes duplicate-vote evidence; the verifier does not rely on that field for that reason.
/// When this test fails, tendermint-rs fixed it: check the stated power again.
#[test]
fn tendermint_rs_still_encodes_the_total_power_as_the_validators_power() {
    let n = net();
    let e = n.evidence(0, 5);
    assert_ne!(dv(&e).validator_power, dv(&e).total_voting_power);
    let decoded = Evidence::try_from(pb::types::Evidence::from(e.clone())).unwrap();
    assert_eq!(dv(&decoded).validator_power, dv(&e).total_voting_power);
    verify(&decoded, n.at(), n.now(6), &params()).unwrap();
    assert_eq!(
        misbehavior(&decoded, &n.set).unwrap().validator.power,
        n.set.validators()[0].power
    );
}

#[test]
fn the_pool_commits_each_piece_once_and_forgets_it_only_after_it_expired() {
    let n = net();
    let p = params();
    let mut pool = Pool::new();
    let (a, b) = (n.evidence(0, 3), n.evidence(1, 4));
    assert!(pool.add(a.clone()));
    assert!(!pool.add(a.clone()), "pending twice");
    assert!(pool.add(b.clone()));
    assert_eq!(pool.reap(i64::MAX), vec![a.clone(), b.clone()]);
    assert_eq!(
        pool.reap(encoded_len(std::slice::from_ref(&a)) as i64),
        vec![a.clone()]
    );
    assert!(pool.reap(1).is_empty());

    let forgotten = pool.committed_in(std::slice::from_ref(&a), n.now(5), &p);
    assert!(forgotten.is_empty());
    assert!(pool.is_committed(&digest(&a)));
    assert!(!pool.add(a.clone()), "committed: never again");
    assert_eq!(pool.reap(i64::MAX), vec![b.clone()]);
    assert_eq!(
        check_list(std::slice::from_ref(&a), &pool, &p),
        Err(EvidenceError::AlreadyCommitted)
    );
    assert_eq!(
        check_list(&[b.clone(), b.clone()], &pool, &p),
        Err(EvidenceError::Duplicate)
    );
    let small = evidence::Params { max_bytes: 10, ..p };
    assert!(matches!(
        check_list(std::slice::from_ref(&b), &pool, &small),
        Err(EvidenceError::TooLarge { max: 10, .. })
    ));
    check_list(std::slice::from_ref(&b), &pool, &p).unwrap();

    // Many blocks later but within the duration: still remembered.
    let soon = Now {
        height: 1_000,
        time: n.block_time,
    };
    assert!(pool.committed_in(&[], soon, &p).is_empty());
    assert!(pool.is_committed(&digest(&a)));
    let late = Now {
        height: 1_000,
        time: n.block_time.checked_add(Duration::from_secs(7200)).unwrap(),
    };
    assert_eq!(pool.committed_in(&[], late, &p), vec![digest(&a)]);
    assert!(!pool.is_committed(&digest(&a)));
    assert_eq!(pool.pending(), 0, "pending evidence expired too");
}

#[test]
fn conflicts_wait_for_their_height_to_be_committed() {
    let n = net();
    let mut pool = Pool::new();
    pool.conflict(
        n.vote(0, 3, 0, Some(block_id(1))),
        n.vote(0, 3, 0, Some(block_id(2))),
    );
    pool.conflict(n.vote(1, 4, 0, Some(block_id(1))), n.vote(1, 4, 0, None));
    assert!(pool.conflicts_up_to(2).is_empty());
    assert_eq!(pool.conflicts_up_to(3).len(), 1);
    assert_eq!(pool.conflicts_up_to(9).len(), 1);
    assert!(pool.conflicts_up_to(9).is_empty());
}

/// Review F1/F2: one double-sign is one piece of evidence however its votes are re-signed or
/// padded; padding with (unsigned) vote extensions is refused; an oversized piece neither
/// verifies nor blocks smaller ones from a block.
#[test]
fn one_offence_is_one_piece_and_padding_neither_verifies_nor_blocks_others() {
    let n = net();
    let p = params();
    let good = n.evidence(1, 5);
    // The same offence re-signed with another timestamp on vote B.
    let mut b = n.vote(1, 5, 0, Some(block_id(2)));
    b.timestamp = Some(n.block_time.checked_add(Duration::from_secs(9)).unwrap());
    b.signature = None;
    sign_vote(n.signer(1).1, &mut b, &n.chain_id);
    let variant = duplicate_vote(n.vote(1, 5, 0, Some(block_id(1))), b, n.at()).unwrap();
    verify(&variant, n.at(), n.now(6), &p).unwrap();
    assert_eq!(digest(&good), digest(&variant));
    let mut pool = Pool::new();
    assert!(pool.add(good.clone()));
    assert!(!pool.add(variant.clone()), "a variant of a pending offence");
    assert_eq!(
        check_list(&[good.clone(), variant.clone()], &Pool::new(), &p),
        Err(EvidenceError::Duplicate)
    );

    let mut padded = dv(&good);
    padded.vote_b.extension = vec![0; 100_000];
    let padded = refit(padded);
    assert_eq!(
        verify(&padded, n.at(), n.now(6), &p),
        Err(EvidenceError::Extension { which: "B" })
    );
    let tight = evidence::Params {
        max_bytes: encoded_len(std::slice::from_ref(&good)) as i64 - 1,
        ..p
    };
    assert!(matches!(
        verify(&good, n.at(), n.now(6), &tight),
        Err(EvidenceError::TooLarge { .. })
    ));

    // The padded piece sorts first (lower height) but does not fit: the next one still does.
    let mut low = dv(&n.evidence(2, 3));
    low.vote_a.extension = vec![0; 100_000];
    let mut pool = Pool::new();
    assert!(pool.add(refit(low)));
    assert!(pool.add(good.clone()));
    assert_eq!(
        pool.reap(encoded_len(std::slice::from_ref(&good)) as i64),
        vec![good]
    );
}
