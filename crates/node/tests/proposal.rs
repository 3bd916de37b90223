//! Blocks travel as parts and come back whole only when every part checks out.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_node::proposal::{
    block_to_parts, Assembler, AssemblyError, PartAdded, MAX_PENDING_BLOCKS,
};
use bulwark_types::parts::{PartError, PartSet};
use bulwark_types::tendermint::block::{self, Block, Header};
use bulwark_types::tendermint::{account, evidence, Hash, Time};
use bulwark_types::tendermint_proto::v0_38 as pb;

fn block(txs: usize, tx_len: usize) -> Block {
    let header = Header {
        version: block::header::Version { block: 11, app: 1 },
        chain_id: "bulwark-test".parse().unwrap(),
        height: block::Height::try_from(3u64).unwrap(),
        time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
        last_block_id: None,
        last_commit_hash: None,
        data_hash: None,
        validators_hash: Hash::Sha256([1; 32]),
        next_validators_hash: Hash::Sha256([1; 32]),
        consensus_hash: Hash::Sha256([2; 32]),
        app_hash: Default::default(),
        last_results_hash: None,
        evidence_hash: None,
        proposer_address: account::Id::new([3; 20]),
    };
    let data = (0..txs).map(|i| vec![(i % 251) as u8; tx_len]).collect();
    Block::new(header, data, evidence::List::default(), None)
}

#[test]
fn a_multi_part_block_reassembles_from_parts_in_any_order_with_repeats() {
    let b = block(50, 5_000); // ~250 KB: four parts
    let (header, parts) = block_to_parts(&b).unwrap();
    assert_eq!(header.total as usize, parts.len());
    assert!(parts.len() >= 4);
    let mut a = Assembler::new();
    a.announce(header, 0, 0).unwrap();
    let mut got = None;
    let mut duplicates = 0;
    for p in parts.iter().rev().chain(parts.iter()) {
        match a.add(&header, p).unwrap() {
            PartAdded::Complete(done) => got = Some(done),
            PartAdded::Duplicate => duplicates += 1,
            PartAdded::New => {}
        }
    }
    assert_eq!(duplicates, parts.len(), "every repeat is reported as one");
    let got = got.expect("complete");
    assert_eq!(got.header.hash(), b.header.hash());
    assert_eq!(got.data, b.data);
}

#[test]
fn unannounced_tampered_and_excess_blocks_are_refused() {
    let b = block(10, 10_000);
    let (header, parts) = block_to_parts(&b).unwrap();
    let mut a = Assembler::new();
    assert_eq!(a.add(&header, &parts[0]), Err(AssemblyError::Unannounced));
    a.announce(header, 0, 0).unwrap();
    let mut tampered = parts[0].clone();
    tampered.bytes[100] ^= 1;
    assert_eq!(
        a.add(&header, &tampered),
        Err(AssemblyError::Part(PartError::BadProof(0)))
    );
    let mut short_aunt = parts[0].clone();
    if let Some(proof) = short_aunt.proof.as_mut() {
        proof.aunts[0].pop();
    }
    assert_eq!(
        a.add(&header, &short_aunt),
        Err(AssemblyError::Part(PartError::BadProof(0)))
    );
    // At most MAX_PENDING_BLOCKS at once: the block of a past round makes room.
    for i in 0..MAX_PENDING_BLOCKS {
        a.announce(block_to_parts(&block(1, 10 + i)).unwrap().0, 1, 1)
            .unwrap();
    }
    assert_eq!(
        a.add(&header, &parts[0]),
        Err(AssemblyError::Unannounced),
        "the round-0 block was evicted"
    );
    let newest = block(1, 99);
    let (newest_header, newest_parts) = block_to_parts(&newest).unwrap();
    a.announce(newest_header, 2, 2).unwrap();
    let PartAdded::Complete(done) = a.add(&newest_header, &newest_parts[0]).unwrap() else {
        panic!("one part completes it");
    };
    assert_eq!(done.header.hash(), newest.header.hash());
}

#[test]
fn a_flood_of_future_round_announcements_never_evicts_the_block_of_the_round_being_decided() {
    // H1: a validator that signs many proposals for future rounds with random part sets.
    let honest = block(10, 10_000);
    let (header, parts) = block_to_parts(&honest).unwrap();
    let mut a = Assembler::new();
    a.announce(header, 3, 3).unwrap();
    for i in 0..100 {
        let decoy = block_to_parts(&block(1, 1_000 + i)).unwrap().0;
        let _ = a.announce(decoy, 4 + (i as u32 % 2), 3);
    }
    assert!(a.len() <= MAX_PENDING_BLOCKS);
    for p in &parts {
        assert_ne!(a.add(&header, p), Err(AssemblyError::Unannounced));
    }
}

#[test]
fn parts_that_are_not_a_block_are_refused_when_complete() {
    let garbage = vec![0xffu8; 70_000];
    let set = PartSet::from_bytes(&garbage).unwrap();
    let header = set.header();
    let mut a = Assembler::new();
    a.announce(header, 0, 0).unwrap();
    let mut last = Ok(PartAdded::New);
    for p in set.parts() {
        let wire = pb::types::Part {
            index: p.index,
            bytes: p.bytes.clone(),
            proof: Some(pb::crypto::Proof {
                total: 2,
                index: i64::from(p.index),
                leaf_hash: vec![],
                aunts: p.aunts.iter().map(|x| x.to_vec()).collect(),
            }),
        };
        last = a.add(&header, &wire);
    }
    assert!(matches!(last, Err(AssemblyError::NotABlock(_))));
}
