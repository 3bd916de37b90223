//! End to end for the chain format: four real consensus cores decide 30 blocks that are built
//! with our hashes and part sets and signed with ed25519 over CometBFT sign bytes; commits are
//! made from the cores' decisions. The independent `tendermint-light-client-verifier`
//! (ProdVerifier) must accept every height sequentially and by skipping, and must reject a
//! tampered header and a commit without enough signatures.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_consensus::{
    Action, Config, Consensus, Event, Height as CHeight, Signature as CSignature, Signed, Validity,
    VoteKind,
};
use bulwark_types::convert::{consensus_validator_set, value_id};
use bulwark_types::hashes::{
    commit_hash, commit_sigs_hash, consensus_params_hash, data_hash, evidence_hash, results_hash,
    TxResultDigest,
};
use bulwark_types::parts::PartSet;
use bulwark_types::signing::{public_key, sign_proposal, sign_vote, verify_proposal, verify_vote};
use bulwark_types::tendermint::block::{self, Block, Commit, CommitSig, Header};
use bulwark_types::tendermint::{
    account, chain, consensus, evidence, proposal, validator, vote, AppHash, Time,
};
use bulwark_types::BLOCK_PROTOCOL;
use ed25519_consensus::SigningKey;
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tendermint_light_client_verifier::options::Options;
use tendermint_light_client_verifier::types::{
    TrustThreshold, TrustedBlockState, UntrustedBlockState,
};
use tendermint_light_client_verifier::{ProdVerifier, Verdict, Verifier};

const N: usize = 4;
const HEIGHTS: u64 = 30;

struct Chain {
    chain_id: chain::Id,
    keys: Vec<SigningKey>,
    set: validator::Set,
    params: consensus::Params,
    genesis_time: Time,
    headers: Vec<Header>,
    commits: Vec<Commit>,
}

fn params() -> consensus::Params {
    let genesis = r#"{"block":{"max_bytes":"22020096","max_gas":"-1"},"evidence":{"max_age_num_blocks":"100000","max_age_duration":"172800000000000","max_bytes":"1048576"},"validator":{"pub_key_types":["ed25519"]},"version":{"app":"0"}}"#;
    serde_json::from_str(genesis).unwrap()
}

fn key_of(set: &validator::Set, keys: &[SigningKey], index: usize) -> SigningKey {
    let address = set.validators()[index].address;
    keys.iter()
        .find(|k| account::Id::from(public_key(k).ed25519().unwrap()) == address)
        .unwrap()
        .clone()
}

/// Runs four cores for one height with synchronous delivery, signing every proposal and vote
/// as the chain types require, and returns the decided commit.
fn decide(chain: &Chain, height: u64, block_id: block::Id, vote_time: Time) -> Commit {
    let cset = consensus_validator_set(&chain.set).unwrap();
    let value = value_id(&block_id);
    let mut cores: Vec<Consensus> = chain
        .set
        .validators()
        .iter()
        .map(|v| Consensus::new(Config::default(), Some(v.address.as_bytes().to_vec())))
        .collect();
    let mut queue: VecDeque<(usize, Event)> = VecDeque::new();
    for i in 0..N {
        queue.push_back((
            i,
            Event::NewHeight {
                height: CHeight(height),
                validators: cset.clone(),
            },
        ));
    }
    let mut signed_votes: BTreeMap<(u32, u32, u8), vote::Vote> = BTreeMap::new();
    let mut decided = None;
    while let Some((i, event)) = queue.pop_front() {
        for action in cores[i].handle(event) {
            match action {
                Action::GetValue { height: h, round } => {
                    queue.push_back((
                        i,
                        Event::ProposeValue {
                            height: h,
                            round,
                            value,
                        },
                    ));
                }
                Action::Propose(p) => {
                    let mut tp = proposal::Proposal {
                        msg_type: proposal::Type::Proposal,
                        height: block::Height::try_from(height).unwrap(),
                        round: block::Round::try_from(p.round.0).unwrap(),
                        pol_round: p.pol_round.map(|r| block::Round::try_from(r.0).unwrap()),
                        block_id: Some(block_id),
                        timestamp: Some(vote_time),
                        signature: None,
                    };
                    let key = key_of(&chain.set, &chain.keys, i);
                    sign_proposal(&key, &mut tp, &chain.chain_id);
                    verify_proposal(&public_key(&key), &tp, &chain.chain_id).unwrap();
                    let sig = CSignature(tp.signature.unwrap().into_bytes());
                    for j in 0..N {
                        queue.push_back((
                            j,
                            Event::Proposal {
                                proposal: Signed::new(p, sig.clone()),
                                validity: Validity::Valid,
                            },
                        ));
                    }
                }
                Action::Vote(v) => {
                    let mut tv = vote::Vote {
                        vote_type: match v.kind {
                            VoteKind::Prevote => vote::Type::Prevote,
                            VoteKind::Precommit => vote::Type::Precommit,
                        },
                        height: block::Height::try_from(height).unwrap(),
                        round: block::Round::try_from(v.round.0).unwrap(),
                        block_id: v.value.map(|_| block_id),
                        timestamp: Some(vote_time),
                        validator_address: chain.set.validators()[v.validator.as_usize()].address,
                        validator_index: vote::ValidatorIndex::try_from(v.validator.0).unwrap(),
                        signature: None,
                        extension: vec![],
                        extension_signature: None,
                    };
                    let key = key_of(&chain.set, &chain.keys, i);
                    sign_vote(&key, &mut tv, &chain.chain_id);
                    // Every receiver checks the signature before the vote becomes an event.
                    verify_vote(&public_key(&key), &tv, &chain.chain_id).unwrap();
                    let sig = CSignature(tv.signature.clone().unwrap().into_bytes());
                    signed_votes.insert((v.validator.0, v.round.0, v.kind as u8), tv);
                    for j in 0..N {
                        queue.push_back((j, Event::Vote(Signed::new(v, sig.clone()))));
                    }
                }
                Action::Decide(d) => {
                    if decided.is_none() {
                        decided = Some(d);
                    }
                }
                Action::ScheduleTimeout { .. } | Action::Evidence(_) => {}
            }
        }
    }
    let d = decided.expect("the honest synchronous network decides");
    assert_eq!(d.value, value);
    // CommitSigs in validator-set order; everyone who precommitted the block signs it.
    let signatures = (0..N)
        .map(|i| {
            match d
                .precommits
                .iter()
                .find(|v| v.message.validator.as_usize() == i)
            {
                Some(pc) if pc.message.value == Some(value) => {
                    let tv = &signed_votes[&(i as u32, d.round.0, VoteKind::Precommit as u8)];
                    CommitSig::BlockIdFlagCommit {
                        validator_address: tv.validator_address,
                        timestamp: vote_time,
                        signature: tv.signature.clone(),
                    }
                }
                Some(_) => CommitSig::BlockIdFlagNil {
                    validator_address: chain.set.validators()[i].address,
                    timestamp: vote_time,
                    signature: None,
                },
                None => CommitSig::BlockIdFlagAbsent,
            }
        })
        .collect();
    Commit {
        height: block::Height::try_from(height).unwrap(),
        round: block::Round::try_from(d.round.0).unwrap(),
        block_id,
        signatures,
    }
}

fn build_chain() -> Chain {
    let keys: Vec<SigningKey> = (0..N)
        .map(|i| SigningKey::from([i as u8 + 1; 32]))
        .collect();
    let infos = keys
        .iter()
        .map(|k| validator::Info::new(public_key(k), vote::Power::from(10u32)))
        .collect();
    let set = validator::Set::without_proposer(infos);
    let mut chain = Chain {
        chain_id: "bulwark-test".parse().unwrap(),
        keys,
        set,
        params: params(),
        genesis_time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
        headers: Vec::new(),
        commits: Vec::new(),
    };
    let mut proposer_set = consensus_validator_set(&chain.set).unwrap();
    let mut last_results: Vec<TxResultDigest> = Vec::new();
    for height in 1..=HEIGHTS {
        let txs: Vec<Vec<u8>> = (0..height % 5)
            .map(|k| format!("key{height}-{k}=value").into_bytes())
            .collect();
        let time = chain
            .genesis_time
            .checked_add(Duration::from_secs(height))
            .unwrap();
        let last_commit = chain.commits.last().cloned();
        let header = Header {
            version: block::header::Version {
                block: BLOCK_PROTOCOL,
                app: 1,
            },
            chain_id: chain.chain_id.clone(),
            height: block::Height::try_from(height).unwrap(),
            time,
            last_block_id: last_commit.as_ref().map(|c| c.block_id),
            last_commit_hash: Some(
                last_commit
                    .as_ref()
                    .map_or_else(|| commit_sigs_hash(&[]), commit_hash),
            ),
            data_hash: Some(data_hash(&txs)),
            validators_hash: chain.set.hash(),
            next_validators_hash: chain.set.hash(),
            consensus_hash: consensus_params_hash(&chain.params),
            app_hash: AppHash::try_from(height.to_be_bytes().to_vec()).unwrap(),
            last_results_hash: Some(results_hash(&last_results)),
            evidence_hash: Some(evidence_hash(&[])),
            proposer_address: account::Id::try_from(
                proposer_set.validators()[proposer_set.proposer().as_usize()]
                    .address
                    .clone(),
            )
            .unwrap(),
        };
        let block = Block::new(
            header.clone(),
            txs.clone(),
            evidence::List::default(),
            last_commit,
        );
        let raw = bulwark_types::tendermint_proto::v0_38::types::Block::from(block).encode_to_vec();
        let parts = PartSet::from_bytes(&raw).unwrap();
        let block_id = block::Id {
            hash: header.hash(),
            part_set_header: parts.header(),
        };
        let vote_time = time.checked_add(Duration::from_millis(500)).unwrap();
        let commit = decide(&chain, height, block_id, vote_time);
        chain.headers.push(header);
        chain.commits.push(commit);
        last_results = txs
            .iter()
            .map(|tx| TxResultDigest {
                code: 0,
                data: tx.clone(),
                gas_wanted: 1,
                gas_used: 1,
            })
            .collect();
        proposer_set = proposer_set.next_height();
    }
    chain
}

fn options() -> Options {
    Options {
        trust_threshold: TrustThreshold::ONE_THIRD,
        trusting_period: Duration::from_secs(14 * 24 * 3600),
        clock_drift: Duration::from_secs(5),
    }
}

fn verify_step(chain: &Chain, trusted: usize, header: &Header, commit: &Commit) -> Verdict {
    let signed = block::signed_header::SignedHeader::new(header.clone(), commit.clone()).unwrap();
    let trusted_header = &chain.headers[trusted];
    let now = chain
        .genesis_time
        .checked_add(Duration::from_secs(HEIGHTS + 60))
        .unwrap();
    ProdVerifier::default().verify_update_header(
        UntrustedBlockState {
            signed_header: &signed,
            validators: &chain.set,
            next_validators: Some(&chain.set),
        },
        TrustedBlockState {
            chain_id: &chain.chain_id,
            header_time: trusted_header.time,
            height: trusted_header.height,
            next_validators: &chain.set,
            next_validators_hash: trusted_header.next_validators_hash,
        },
        &options(),
        now,
    )
}

#[test]
fn light_client_verifies_every_height_decided_by_the_core() {
    let chain = build_chain();
    for h in 1..HEIGHTS as usize {
        let verdict = verify_step(&chain, h - 1, &chain.headers[h], &chain.commits[h]);
        assert_eq!(verdict, Verdict::Success, "height {}", h + 1);
        // Each header links to the previous block through its last commit.
        assert_eq!(
            chain.headers[h].last_block_id,
            Some(chain.commits[h - 1].block_id)
        );
        assert_eq!(
            chain.headers[h].last_commit_hash,
            Some(commit_hash(&chain.commits[h - 1]))
        );
    }
    // Skipping verification from height 1 straight to the last height.
    let last = HEIGHTS as usize - 1;
    assert_eq!(
        verify_step(&chain, 0, &chain.headers[last], &chain.commits[last]),
        Verdict::Success
    );
}

#[test]
fn light_client_rejects_a_tampered_header_and_a_thin_commit() {
    let chain = build_chain();
    let mut tampered = chain.headers[14].clone();
    tampered.app_hash = AppHash::try_from(vec![0xee; 8]).unwrap();
    assert!(matches!(
        verify_step(&chain, 13, &tampered, &chain.commits[14]),
        Verdict::Invalid(_)
    ));

    let mut thin = chain.commits[14].clone();
    for sig in thin.signatures.iter_mut().skip(2) {
        *sig = CommitSig::BlockIdFlagAbsent;
    }
    assert!(!matches!(
        verify_step(&chain, 13, &chain.headers[14], &thin),
        Verdict::Success
    ));
}
