//! Vote extensions (ABCI 2.0) between real engines: from the enable height every precommit for
//! a block carries the application's extension, signed; the next proposer's application gets
//! each commit's extensions; a byzantine validator's precommit whose extension is missing,
//! forged, rejected by the application or out of place counts for nothing; block sync brings
//! a commit's extensions to a node that lagged, and refuses them forged. (A precommit that
//! arrives after the decision joins the next block's last commit with its extension's
//! signature checked, not the application's verdict, as in CometBFT: the tampering test looks
//! at the decisions' own commits.)
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_node::engine::Input;
use bulwark_types::signing::{sign, verify, vote_extension_sign_bytes};
use bulwark_types::tendermint::abci::types::BlockSignatureInfo;
use bulwark_types::tendermint::block::{Block, BlockIdFlag, Commit, CommitSig, Height};
use bulwark_types::tendermint::{account, Signature};
use bulwark_types::tendermint_proto::v0_38 as pb;
use bulwark_wire::{Payload, VoteExtensions};
use common::extension_for;
use common::net::{Net, N};
use prost::Message;

/// The first height whose precommits carry extensions.
const ENABLE: u64 = 3;

fn extending_net() -> Net {
    Net::with_genesis(|g| {
        g.consensus_params.abci.vote_extensions_enable_height = Some(Height::from(ENABLE as u32))
    })
}

fn block(net: &Net, node: usize, h: u64) -> Block {
    let bytes = net.slots[node].engine.as_ref().unwrap().blocks().block(h);
    Block::try_from(pb::types::Block::decode(&bytes.unwrap().unwrap()[..]).unwrap()).unwrap()
}

fn commit(net: &Net, node: usize, h: u64) -> Commit {
    let bytes = net.slots[node].engine.as_ref().unwrap().blocks().commit(h);
    Commit::try_from(pb::types::Commit::decode(&bytes.unwrap().unwrap()[..]).unwrap()).unwrap()
}

fn stored_extensions(net: &Net, node: usize, h: u64) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let engine = net.slots[node].engine.as_ref().unwrap();
    let bytes = engine.blocks().extensions(h).unwrap()?;
    Some(VoteExtensions::decode(&bytes[..]).unwrap().into_pairs())
}

fn address(net: &Net, i: usize) -> account::Id {
    net.genesis.validators[i].address
}

/// The validator at index `i` of the set (sorted by power, then address: not slot order).
fn member(net: &Net, i: usize) -> bulwark_types::tendermint::validator::Info {
    let engine = net.slots[0].engine.as_ref().unwrap();
    engine.state().validator_infos.validators()[i].clone()
}

/// Asserts that `extension` is set member `i`'s signed extension for `round` of `height`.
fn signed_by(net: &Net, i: usize, extension: &[u8], signature: &[u8], height: u64, round: u32) {
    let bytes = vote_extension_sign_bytes(extension, height, round, &net.genesis.chain_id);
    let signature = Signature::new(signature).unwrap().unwrap();
    verify(&member(net, i).pub_key, &bytes, &signature)
        .unwrap_or_else(|e| panic!("member {i}'s extension at {height}: {e}"));
}

#[test]
fn precommits_carry_signed_extensions_from_the_enable_height_and_the_next_proposer_gets_them() {
    let mut net = extending_net();
    for (i, tx) in ["a=1", "b=2", "c=3"].iter().enumerate() {
        net.submit(i, tx);
    }
    net.run_until(7, 50_000);
    for node in 0..N {
        let asked = net.slots[node].asked.lock().unwrap();
        // ExtendVote: from the enable height on, for the block this node precommitted, told
        // what ProcessProposal was told of it.
        let mut extended: Vec<u64> = asked.extended.iter().map(|r| r.height.value()).collect();
        extended.dedup();
        assert_eq!(
            &extended[..4],
            &[3, 4, 5, 6],
            "node {node} extended at {extended:?}"
        );
        for r in &asked.extended {
            let b = block(&net, node, r.height.value());
            assert_eq!(r.hash, b.header.hash());
            assert_eq!(r.time, b.header.time);
            assert_eq!(r.proposer_address, b.header.proposer_address);
            assert_eq!(r.next_validators_hash, b.header.next_validators_hash);
            let txs: Vec<Vec<u8>> = r.txs.iter().map(|t| t.to_vec()).collect();
            assert_eq!(txs, b.data);
        }
        // VerifyVoteExtension: others' extensions only, all honest here.
        assert!(!asked.verified.is_empty());
        for (r, answer) in &asked.verified {
            assert_ne!(r.validator_address, address(&net, node));
            assert!(r.height.value() >= ENABLE);
            assert_eq!(
                *answer,
                bulwark_types::tendermint::abci::response::VerifyVoteExtension::Accept
            );
        }
        // PrepareProposal: the last commit's extensions, each signed by its validator, from
        // the height after the enable height on; none before.
        let mut checked = 0;
        for r in &asked.prepared {
            let h = r.height.value();
            let info = r.local_last_commit.as_ref().unwrap();
            for (i, v) in info.votes.iter().enumerate() {
                let commits = v.sig_info == BlockSignatureInfo::Flag(BlockIdFlag::Commit);
                if h <= ENABLE || !commits {
                    assert!(v.vote_extension.is_empty() && v.extension_signature.is_none());
                    continue;
                }
                let hash = block(&net, node, h - 1).header.hash();
                assert_eq!(
                    v.vote_extension.to_vec(),
                    extension_for(h - 1, hash.as_bytes())
                );
                let signature = v.extension_signature.as_ref().unwrap().as_bytes();
                signed_by(
                    &net,
                    i,
                    &v.vote_extension,
                    signature,
                    h - 1,
                    info.round.value(),
                );
                checked += 1;
            }
        }
        assert!(checked > 0 || asked.prepared.iter().all(|r| r.height.value() <= ENABLE));
        drop(asked);
        // The block store keeps each commit's extensions from the enable height on.
        for h in 1..=7 {
            let stored = stored_extensions(&net, node, h);
            assert_eq!(stored.is_some(), h >= ENABLE, "height {h} on node {node}");
            let (Some(stored), c) = (stored, commit(&net, node, h)) else {
                continue;
            };
            assert_eq!(stored.len(), N);
            for (i, (sig, (e, s))) in c.signatures.iter().zip(&stored).enumerate() {
                match sig {
                    CommitSig::BlockIdFlagCommit { .. } => {
                        signed_by(&net, i, e, s, h, c.round.value())
                    }
                    _ => assert!(e.is_empty() && s.is_empty()),
                }
            }
        }
    }
    let proposals_with_extensions: usize = (0..N)
        .map(|n| {
            let asked = net.slots[n].asked.lock().unwrap();
            asked
                .prepared
                .iter()
                .filter(|r| {
                    r.local_last_commit
                        .as_ref()
                        .unwrap()
                        .votes
                        .iter()
                        .any(|v| !v.vote_extension.is_empty())
                })
                .count()
        })
        .sum();
    assert!(
        proposals_with_extensions >= 3,
        "{proposals_with_extensions}"
    );
}

/// How the byzantine validator changes its own precommits.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Leaves them alone (the control: the others then count them).
    Nothing,
    /// Drops the extension and its signature.
    Strip,
    /// Flips a bit of the extension's signature.
    Forge,
    /// Signs, correctly, an extension the application rejects.
    Rejected,
    /// Adds a signed extension before the enable height.
    TooEarly,
    /// Signs an extension one byte above the largest a validator may add.
    Oversized,
}

fn tamper(
    kind: Tamper,
    key: ed25519_consensus::SigningKey,
    who: Vec<u8>,
    net: &Net,
) -> impl FnMut(usize, &mut Payload) {
    let chain_id = net.genesis.chain_id.clone();
    move |_, payload| {
        let votes = match payload {
            Payload::Vote(v) => std::slice::from_mut(v),
            Payload::Certificate(c) => &mut c.votes[..],
            _ => return,
        };
        for v in votes.iter_mut() {
            if v.validator_address != who || v.r#type != pb::types::SignedMsgType::Precommit as i32
            {
                continue;
            }
            let (height, round) = (v.height as u64, v.round as u32);
            let sign_as_validator = |v: &mut pb::types::Vote| {
                let bytes = vote_extension_sign_bytes(&v.extension, height, round, &chain_id);
                v.extension_signature = sign(&key, &bytes).as_bytes().to_vec();
            };
            match kind {
                Tamper::Nothing => {}
                Tamper::Strip => {
                    v.extension.clear();
                    v.extension_signature.clear();
                }
                Tamper::Forge if !v.extension_signature.is_empty() => v.extension_signature[7] ^= 1,
                Tamper::Forge => {}
                Tamper::Rejected if !v.extension_signature.is_empty() => {
                    v.extension = b"something else".to_vec();
                    sign_as_validator(v);
                }
                Tamper::Rejected => {}
                Tamper::TooEarly if height < ENABLE => {
                    v.extension = b"early".to_vec();
                    sign_as_validator(v);
                }
                Tamper::TooEarly => {}
                Tamper::Oversized if !v.extension_signature.is_empty() => {
                    v.extension =
                        vec![7; bulwark_node::chain::extensions::max_extension_bytes(N) + 1];
                    sign_as_validator(v);
                }
                Tamper::Oversized => {}
            }
        }
    }
}

#[test]
fn a_precommit_whose_extension_is_missing_forged_rejected_or_early_counts_for_nothing() {
    const BYZANTINE: usize = 3;
    for kind in [
        Tamper::Nothing,
        Tamper::Strip,
        Tamper::Forge,
        Tamper::Rejected,
        Tamper::TooEarly,
        Tamper::Oversized,
    ] {
        let mut net = extending_net();
        let who = address(&net, BYZANTINE).as_bytes().to_vec();
        let key = net.slots[BYZANTINE].key.clone();
        net.tamper = Some(Box::new(tamper(kind, key, who, &net)));
        net.run_until(9, 100_000);
        // Where the honest nodes' own commits count the byzantine validator's precommit.
        let index = (0..N)
            .find(|i| member(&net, *i).address == address(&net, BYZANTINE))
            .unwrap();
        let counted: Vec<u64> = (1..=9)
            .filter(|h| {
                (0..N).filter(|n| *n != BYZANTINE).any(|n| {
                    matches!(
                        commit(&net, n, *h).signatures[index],
                        CommitSig::BlockIdFlagCommit { .. }
                    )
                })
            })
            .collect();
        let tampered: Vec<u64> = match kind {
            Tamper::Nothing => vec![],
            Tamper::TooEarly => (1..ENABLE).collect(),
            _ => (ENABLE..=9).collect(),
        };
        match kind {
            Tamper::Nothing => assert!(counted.len() >= 3, "the control counts it: {counted:?}"),
            _ => assert!(
                counted.iter().all(|h| !tampered.contains(h)),
                "{kind:?}: counted at {counted:?}"
            ),
        }
        // The application rejected only what it was shown wrong.
        for n in (0..N).filter(|n| *n != BYZANTINE) {
            let asked = net.slots[n].asked.lock().unwrap();
            let rejected = asked
                .verified
                .iter()
                .filter(|(_, a)| {
                    *a != bulwark_types::tendermint::abci::response::VerifyVoteExtension::Accept
                })
                .count();
            match kind {
                Tamper::Rejected => assert!(rejected > 0),
                _ => assert_eq!(rejected, 0, "{kind:?}"),
            }
            // The node counts each verdict once (`consensus_vote_extension_receive_count`).
            let counted = net.slots[n].engine.as_ref().unwrap().verdicts().extensions;
            let accepted = asked.verified.len() - rejected;
            assert_eq!(counted, (accepted as u64, rejected as u64), "{kind:?}");
        }
    }
}

#[test]
fn a_node_that_lagged_gets_each_commits_extensions_by_block_sync_and_refuses_them_forged() {
    const LAGGARD: usize = 3;
    let mut net = extending_net();
    for other in 0..N {
        net.blocked.insert((LAGGARD, other));
        net.blocked.insert((other, LAGGARD));
    }
    net.committed[LAGGARD] = u64::MAX;
    net.run_until(8, 100_000);
    net.blocked.clear();
    net.committed[LAGGARD] = 0;
    // A decided block whose extensions a peer stripped or forged is refused.
    let engine = net.slots[0].engine.as_ref().unwrap();
    let decided = |h: u64, change: fn(&mut VoteExtensions)| {
        let blocks = engine.blocks();
        let mut extensions =
            VoteExtensions::decode(&blocks.extensions(h).unwrap().unwrap()[..]).unwrap();
        change(&mut extensions);
        Payload::DecidedBlock(Box::new(bulwark_wire::DecidedBlock {
            block: Some(pb::types::Block::decode(&blocks.block(h).unwrap().unwrap()[..]).unwrap()),
            commit: Some(
                pb::types::Commit::decode(&blocks.commit(h).unwrap().unwrap()[..]).unwrap(),
            ),
            extensions: Some(extensions),
        }))
    };
    type Change = fn(&mut VoteExtensions);
    let strip: Change = |e| e.votes.clear();
    let forge: Change = |e| e.votes.iter_mut().for_each(|v| v.extension.push(1));
    let swap: Change = |e| e.votes.swap(0, 1);
    // Heights 1 and 2 come before the enable height: the laggard takes them as they are, and
    // then refuses each tampered copy of height 3.
    let honest: Vec<Payload> = (1..ENABLE)
        .map(|h| {
            let blocks = engine.blocks();
            Payload::DecidedBlock(Box::new(bulwark_wire::DecidedBlock {
                block: Some(
                    pb::types::Block::decode(&blocks.block(h).unwrap().unwrap()[..]).unwrap(),
                ),
                commit: Some(
                    pb::types::Commit::decode(&blocks.commit(h).unwrap().unwrap()[..]).unwrap(),
                ),
                extensions: None,
            }))
        })
        .collect();
    let mut tampered: Vec<Payload> = [strip, forge, swap]
        .into_iter()
        .map(|f| decided(ENABLE, f))
        .collect();
    let mut missing = decided(ENABLE, |_| {});
    if let Payload::DecidedBlock(d) = &mut missing {
        d.extensions = None;
    }
    tampered.push(missing);
    let genuine = decided(ENABLE, |_| {});
    let laggard = net.slots[LAGGARD].engine.as_mut().unwrap();
    for p in honest {
        laggard.handle(Input::Peer(0, p)).unwrap();
    }
    assert_eq!(laggard.state().last_block_height, ENABLE - 1);
    for (peer, p) in (10..).zip(tampered) {
        laggard.handle(Input::Peer(peer, p)).unwrap();
        assert_eq!(
            laggard.state().last_block_height,
            ENABLE - 1,
            "a tampered height 3 was taken"
        );
    }
    // A peer that sent wrong extensions is not heard on block sync again this tick, not even
    // with the genuine block; another peer is.
    laggard.handle(Input::Peer(10, genuine.clone())).unwrap();
    assert_eq!(laggard.state().last_block_height, ENABLE - 1);
    laggard.handle(Input::Peer(20, genuine)).unwrap();
    assert_eq!(laggard.state().last_block_height, ENABLE);
    // Then the network brings it the rest by block sync, extensions and all.
    net.run_until(10, 100_000);
    for h in ENABLE..=9 {
        let stored = stored_extensions(&net, LAGGARD, h).expect("extensions stored");
        let c = commit(&net, LAGGARD, h);
        assert_eq!(stored.len(), c.signatures.len());
        for (i, (sig, (e, s))) in c.signatures.iter().zip(&stored).enumerate() {
            if matches!(sig, CommitSig::BlockIdFlagCommit { .. }) {
                signed_by(&net, i, e, s, h, c.round.value());
            }
        }
    }
}

#[test]
#[should_panic(expected = "VerifyVoteExtension answered UNKNOWN")]
fn an_application_that_answers_unknown_stops_its_node() {
    let mut net = extending_net();
    net.slots[0].asked.lock().unwrap().unknown = true;
    net.run_until(ENABLE + 2, 50_000);
}
