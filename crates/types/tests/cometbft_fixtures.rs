//! Our hashes, part sets and sign bytes against values a real CometBFT v0.38 node produced
//! (see tests/data/cometbft-v0.38/SOURCE.txt).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use base64::Engine;
use bulwark_types::hashes::{commit_hash, consensus_params_hash, data_hash, evidence_hash, sha256};
use bulwark_types::parts::PartSet;
use bulwark_types::signing::{verify_vote, SignatureError};
use bulwark_types::tendermint::block::{Block, CommitSig};
use bulwark_types::tendermint::{block, vote, Genesis};
use prost::Message;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/data/cometbft-v0.38/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn block_10() -> (Block, block::Id) {
    let v = fixture("block_at_height_10.json");
    let block: Block = serde_json::from_value(v["result"]["block"].clone()).unwrap();
    let id: block::Id = serde_json::from_value(v["result"]["block_id"].clone()).unwrap();
    (block, id)
}

fn genesis() -> Genesis<Value> {
    let mut g = fixture("genesis.json")["result"]["genesis"].clone();
    // The RPC response leaves out the kvstore's empty app_state.
    g["app_state"] = serde_json::json!({});
    serde_json::from_value(g).unwrap()
}

#[test]
fn last_commit_hash_matches_cometbft() {
    let (block, _) = block_10();
    let commit = block.last_commit.clone().unwrap();
    assert_eq!(Some(commit_hash(&commit)), block.header.last_commit_hash);
}

#[test]
fn empty_data_and_evidence_hashes_match_cometbft() {
    let (block, _) = block_10();
    assert_eq!(Some(data_hash(block.data())), block.header.data_hash);
    assert_eq!(
        Some(evidence_hash(block.evidence().iter().as_slice())),
        block.header.evidence_hash
    );
}

#[test]
fn consensus_params_hash_matches_cometbft() {
    let (block, _) = block_10();
    assert_eq!(
        consensus_params_hash(&genesis().consensus_params),
        block.header.consensus_hash
    );
}

#[test]
fn data_hash_of_real_single_tx_blocks_matches_cometbft() {
    let roots = fixture("tx_data_roots.json");
    let roots = roots.as_array().unwrap();
    assert_eq!(roots.len(), 8);
    for r in roots {
        let tx = base64::engine::general_purpose::STANDARD
            .decode(r["tx_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(sha256(&tx).to_string(), r["tx_hash"].as_str().unwrap());
        assert_eq!(
            data_hash(&[tx]).to_string(),
            r["data_hash"].as_str().unwrap(),
            "height {}",
            r["height"]
        );
    }
}

#[test]
fn block_id_and_part_set_of_a_real_block_match_cometbft() {
    let (block, id) = block_10();
    assert_eq!(block.header.hash(), id.hash);
    let raw = bulwark_types::tendermint_proto::v0_38::types::Block::from(block).encode_to_vec();
    let parts = PartSet::from_bytes(&raw).unwrap();
    assert_eq!(parts.header(), id.part_set_header);
}

/// The precommit signature inside a real CometBFT commit verifies against our sign bytes,
/// and fails once any signed field changes.
#[test]
fn a_real_cometbft_precommit_verifies_with_our_sign_bytes() {
    let (block, _) = block_10();
    let commit = block.last_commit.unwrap();
    let validator = &genesis().validators[0];
    let CommitSig::BlockIdFlagCommit {
        validator_address,
        timestamp,
        signature,
    } = commit.signatures[0].clone()
    else {
        panic!("the fixture's signature is a commit signature");
    };
    let vote = vote::Vote {
        vote_type: vote::Type::Precommit,
        height: commit.height,
        round: commit.round,
        block_id: Some(commit.block_id),
        timestamp: Some(timestamp),
        validator_address,
        validator_index: 0u32.try_into().unwrap(),
        signature,
        extension: vec![],
        extension_signature: None,
    };
    let chain_id = block.header.chain_id.clone();
    verify_vote(&validator.pub_key, &vote, &chain_id).unwrap();

    let mut other_round = vote.clone();
    other_round.round = 1u16.into();
    assert_eq!(
        verify_vote(&validator.pub_key, &other_round, &chain_id),
        Err(SignatureError::Invalid)
    );
    let other_chain = "otherchain".parse().unwrap();
    assert_eq!(
        verify_vote(&validator.pub_key, &vote, &other_chain),
        Err(SignatureError::Invalid)
    );
    let mut prevote = vote.clone();
    prevote.vote_type = vote::Type::Prevote;
    assert_eq!(
        verify_vote(&validator.pub_key, &prevote, &chain_id),
        Err(SignatureError::Invalid)
    );
    let mut unsigned = vote;
    unsigned.signature = None;
    assert_eq!(
        verify_vote(&validator.pub_key, &unsigned, &chain_id),
        Err(SignatureError::Missing)
    );
}
