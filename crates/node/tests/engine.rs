//! Four engines (real cores, privvals, WALs, block stores, kvstores on disk) connected by an
//! in-process router with simulated time: they commit blocks of client transactions, agree on
//! every block, and a node killed in the middle of a height and reopened from disk (WAL replay
//! and handshake) carries on with the others.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_node::engine::{Engine, Input, Output, PeerRole};
use prost::Message;

use common::net::{reopen_store, try_open, Net, N};

#[test]
fn four_engines_commit_blocks_and_a_restarted_node_carries_on() {
    let mut net = Net::new();
    for h in 1..=10u64 {
        net.submit((h % 4) as usize, &format!("key{h}=value{h}"));
        net.run_until(h, 200_000);
    }
    let app_hashes: Vec<_> = net
        .slots
        .iter()
        .map(|s| s.engine.as_ref().unwrap().state().app_hash.clone())
        .collect();
    assert!(
        app_hashes.windows(2).all(|w| w[0] == w[1]),
        "same app hash everywhere"
    );

    // Kill node 2 in the middle of a height (after some messages of height 11 were handled),
    // let the other three (still a quorum) commit past height 14, then reopen it from disk: it
    // replays its WAL, then catches up by block sync.
    net.submit(0, "during=restart");
    for _ in 0..30 {
        net.step();
    }
    net.slots[2].engine = None;
    net.committed[2] = u64::MAX;
    net.run_until(14, 400_000);
    net.start(2);
    assert!(net.committed[2] < 14, "node 2 restarted behind the others");
    for h in 15..=20u64 {
        net.submit((h % 4) as usize, &format!("late{h}=v{h}"));
        net.run_until(h, 400_000);
    }
    net.assert_same_blocks(20);
    let states: Vec<_> = net
        .slots
        .iter()
        .map(|s| s.engine.as_ref().unwrap().state().clone())
        .collect();
    assert!(states.iter().all(|s| s.last_block_height >= 20));
}

#[test]
fn messages_of_a_height_not_started_yet_are_kept_not_lost() {
    // Messages arrive in random order (FIFO per link) and nobody asks peers for what it missed (no ticks):
    // votes of height h+1 often reach a node still waiting out timeout_commit of h. Kept until
    // the height starts, they make every height decide in round 0; lost, a node would wait
    // for a timeout and a later round.
    let mut net = Net::new();
    net.ticks = false;
    net.shuffle = Some(0x9e37_79b9_7f4a_7c15);
    for h in 1..=25u64 {
        net.submit((h % 4) as usize, &format!("early{h}=v{h}"));
        net.run_until(h, 400_000);
    }
    net.assert_same_blocks(25);
    let engine = net.slots[0].engine.as_ref().unwrap();
    for h in 1..=25u64 {
        let raw = engine.blocks().commit(h).unwrap().unwrap();
        let commit =
            bulwark_types::tendermint_proto::v0_38::types::Commit::decode(raw.as_slice()).unwrap();
        assert_eq!(commit.round, 0, "height {h} needed round {}", commit.round);
    }
}

#[test]
fn every_node_killed_and_reopened_at_many_points_keeps_the_chain_consistent() {
    let mut net = Net::new();
    net.run_until(2, 200_000);
    for k in 0..12usize {
        let victim = k % N;
        net.submit((victim + 1) % N, &format!("k{k}=v{k}"));
        // Let the height get going, then kill the victim somewhere inside it.
        for _ in 0..(k * 7 % 41) {
            net.step();
        }
        net.slots[victim].engine = None;
        net.committed[victim] = u64::MAX;
        for _ in 0..(k * 13 % 97) {
            net.step();
        }
        net.start(victim);
        let target = net
            .committed
            .iter()
            .copied()
            .filter(|h| *h != u64::MAX)
            .max()
            .unwrap()
            + 1;
        net.run_until(target, 400_000);
    }
    net.run_until(30, 400_000);
    net.assert_same_blocks(30);
}

/// Two conflicting precommits of validator `index` (by set order) at `height`, signed with its
/// key, as duplicate-vote evidence against the set and block time stored at that height.
fn double_sign(
    net: &Net,
    index: usize,
    height: u64,
    blocks: (u8, u8),
) -> bulwark_types::tendermint::evidence::Evidence {
    use bulwark_types::tendermint::{block, hash::Hash, vote};
    let engine = net.slots[0].engine.as_ref().unwrap();
    let state = engine.state();
    let info = state.validator_infos.validators()[index].clone();
    let key = net
        .slots
        .iter()
        .map(|s| &s.key)
        .find(|k| bulwark_types::signing::public_key(k) == info.pub_key)
        .unwrap();
    let raw = engine.blocks().block(height).unwrap().unwrap();
    let stored =
        bulwark_types::tendermint_proto::v0_38::types::Block::decode(raw.as_slice()).unwrap();
    let time = block::Block::try_from(stored).unwrap().header.time;
    let vote = |byte: u8| {
        let mut v = vote::Vote {
            vote_type: vote::Type::Precommit,
            height: block::Height::try_from(height).unwrap(),
            round: block::Round::default(),
            block_id: Some(block::Id {
                hash: Hash::Sha256([byte; 32]),
                part_set_header: block::parts::Header::new(1, Hash::Sha256([byte; 32])).unwrap(),
            }),
            timestamp: Some(time),
            validator_address: info.address,
            validator_index: vote::ValidatorIndex::try_from(index as u32).unwrap(),
            signature: None,
            extension: vec![],
            extension_signature: None,
        };
        bulwark_types::signing::sign_vote(key, &mut v, &state.chain_id);
        v
    };
    bulwark_evidence::duplicate_vote(
        vote(blocks.0),
        vote(blocks.1),
        bulwark_evidence::AtHeight {
            chain_id: &state.chain_id,
            validators: &state.last_validator_infos,
            block_time: time,
        },
    )
    .unwrap()
}

#[test]
fn evidence_submitted_to_one_node_reaches_a_block_every_node_commits() {
    use bulwark_evidence::EvidenceError;
    use bulwark_types::tendermint_proto::v0_38 as pb;
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let evidence = double_sign(&net, 1, 2, (1, 2));
    let raw = pb::types::Evidence::from(evidence.clone());

    // Tampered: refused with the reason, nothing sent.
    let mut forged = raw.clone();
    if let Some(pb::types::evidence::Sum::DuplicateVoteEvidence(d)) = forged.sum.as_mut() {
        d.vote_a.as_mut().unwrap().signature[0] ^= 1;
    }
    let engine = net.slots[3].engine.as_mut().unwrap();
    assert!(matches!(
        engine.submit_evidence(forged),
        Err(EvidenceError::BadSignature { .. })
    ));
    assert!(matches!(
        engine.submit_evidence(pb::types::Evidence { sum: None }),
        Err(EvidenceError::Malformed(_))
    ));

    let (hash, out) = engine.submit_evidence(raw.clone()).unwrap();
    // CometBFT's DuplicateVoteEvidence.Hash(): SHA-256 of the message with the voter's power
    // (10 of 40), built here from the protobuf types alone.
    let Some(pb::types::evidence::Sum::DuplicateVoteEvidence(mut message)) = raw.sum.clone() else {
        unreachable!()
    };
    message.validator_power = 10;
    message.total_voting_power = 40;
    let expected = bulwark_types::hashes::sha256(&message.encode_to_vec());
    assert_eq!(hash, expected);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Broadcast(bulwark_wire::Payload::Evidence(_)))),
        "sent to the peers"
    );
    // Pending already: the same answer, no second broadcast.
    let (again, out_again) = engine.submit_evidence(raw.clone()).unwrap();
    assert_eq!((again, out_again.len()), (hash, 0));
    // Another pair of votes for the same offence: answered with the pending piece's hash.
    let variant = pb::types::Evidence::from(double_sign(&net, 1, 2, (3, 4)));
    let engine = net.slots[3].engine.as_mut().unwrap();
    let (pending, out_variant) = engine.submit_evidence(variant).unwrap();
    assert_eq!((pending, out_variant.len()), (hash, 0));
    net.route(3, out);

    net.run_until(12, 400_000);
    net.assert_same_blocks(12);
    let engine = net.slots[0].engine.as_ref().unwrap();
    let carrying: Vec<u64> = (4..=12)
        .filter(|h| {
            let raw = engine.blocks().block(*h).unwrap().unwrap();
            let block = pb::types::Block::decode(raw.as_slice()).unwrap();
            block.evidence.is_some_and(|l| !l.evidence.is_empty())
        })
        .collect();
    assert_eq!(carrying.len(), 1, "committed once, in {carrying:?}");
    let engine = net.slots[2].engine.as_mut().unwrap();
    assert!(matches!(
        engine.submit_evidence(raw),
        Err(EvidenceError::AlreadyCommitted)
    ));
}

/// How many messages `engine` sends `peer` that says it is at height `from`.
fn status_answer(engine: &mut Engine, peer: u64, from: u64) -> usize {
    status_answer_payloads(engine, peer, from).len()
}

fn status_answer_payloads(engine: &mut Engine, peer: u64, from: u64) -> Vec<bulwark_wire::Payload> {
    use bulwark_wire::{Payload, Status};
    let status = Payload::Status(Status {
        height: from,
        round: 0,
    });
    let out = engine.handle(Input::Peer(peer, status)).unwrap();
    out.into_iter()
        .filter_map(|o| match o {
            Output::Send(p, payload) if p == peer => Some(payload),
            _ => None,
        })
        .collect()
}

#[test]
fn what_a_full_send_queue_dropped_is_in_the_next_answer() {
    let mut net = Net::new();
    net.run_until(4, 200_000);
    while net.slots[0].engine.as_ref().unwrap().footprint().seen < 3 {
        net.step();
    }
    let engine = net.slots[0].engine.as_mut().unwrap();
    let height = engine.state().next_height();
    engine.handle(Input::Tick).unwrap();
    let sent = status_answer_payloads(engine, 7, height);
    assert!(sent.len() >= 3, "{} messages", sent.len());
    // The driver could not queue the last two (review M2).
    let dropped = sent[sent.len() - 2..].to_vec();
    for payload in &dropped {
        engine
            .handle(Input::Undelivered(7, payload.clone()))
            .unwrap();
    }
    engine.handle(Input::Tick).unwrap();
    assert_eq!(status_answer_payloads(engine, 7, height), dropped);
    engine.handle(Input::Tick).unwrap();
    assert!(status_answer_payloads(engine, 7, height).is_empty());
}

#[test]
fn a_stuck_peer_is_sent_what_it_lacks_and_everything_again_on_a_new_connection() {
    use bulwark_gossip::relay::FULL_ANSWER_EVERY;
    let mut net = Net::new();
    net.run_until(4, 200_000);
    while net.slots[0].engine.as_ref().unwrap().footprint().seen < 3 {
        net.step();
    }
    let engine = net.slots[0].engine.as_mut().unwrap();
    let height = engine.state().next_height();
    engine.handle(Input::Tick).unwrap();
    let everything = status_answer(engine, 7, height);
    assert!(
        everything >= 3,
        "{everything} messages of the height in progress"
    );
    // Nothing arrived since: the same peer asking again is sent nothing, another everything.
    for _ in 1..FULL_ANSWER_EVERY {
        engine.handle(Input::Tick).unwrap();
        assert_eq!(status_answer(engine, 7, height), 0, "re-sent what it has");
    }
    engine.handle(Input::Tick).unwrap();
    assert_eq!(
        status_answer(engine, 7, height),
        everything,
        "no full answer"
    );
    assert_eq!(status_answer(engine, 8, height), everything);
    // Its connection went: a new one (same id here) is sent everything again.
    engine.handle(Input::PeerGone(8)).unwrap();
    engine.handle(Input::Tick).unwrap();
    assert_eq!(status_answer(engine, 8, height), everything);
}

#[test]
fn a_peer_repeating_its_status_gets_two_answers_a_tick() {
    use bulwark_node::engine::STATUS_ANSWERS_PER_TICK;
    use bulwark_wire::Payload;
    // What an answer holds beside the `Status` that ends it (where the answering peer is).
    let ask = |engine: &mut Engine, peer: u64, from: u64| {
        status_answer_payloads(engine, peer, from)
            .iter()
            .filter(|p| !matches!(p, Payload::Status(_)))
            .count()
    };
    let mut net = Net::new();
    net.run_until(6, 200_000);
    // Until node 0 keeps messages of the height in progress (for the current-height answer).
    while net.slots[0].engine.as_ref().unwrap().footprint().seen == 0 {
        net.step();
    }
    let engine = net.slots[0].engine.as_mut().unwrap();
    let height = engine.state().next_height();
    engine.handle(Input::Tick).unwrap();
    // Catch-up: blocks read from disk; the height in progress: what is kept for relay.
    let blocks = ask(engine, 7, 1);
    assert!(
        blocks >= 5,
        "{blocks} decided blocks for a peer at height 1"
    );
    let current = ask(engine, 7, height);
    assert!(current > 0, "nothing of the height in progress");
    assert_eq!(STATUS_ANSWERS_PER_TICK, 2);
    let third = status_answer_payloads(engine, 7, 1);
    assert!(
        matches!(third.as_slice(), [Payload::Status(s)] if s.height == height),
        "a third request in the same tick is told only where the peer is: {third:?}"
    );
    assert_eq!(ask(engine, 7, height), 0);
    assert!(ask(engine, 8, 1) >= 5, "another peer is answered");
    engine.handle(Input::Tick).unwrap();
    assert_eq!(ask(engine, 7, 1), blocks, "answered again after the tick");
}

#[test]
fn evidence_from_a_peer_is_checked_a_bounded_number_of_times_a_tick() {
    use bulwark_node::engine::PEER_EVIDENCE_CHECKS_PER_TICK;
    use bulwark_types::tendermint_proto::v0_38 as pb;
    use bulwark_wire::Payload;
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let genuine = pb::types::Evidence::from(double_sign(&net, 1, 2, (1, 2)));
    // Distinct forgeries (each a new offence by its round), each worth a check.
    let forged = |round: i32| {
        let mut f = genuine.clone();
        if let Some(pb::types::evidence::Sum::DuplicateVoteEvidence(d)) = f.sum.as_mut() {
            d.vote_a.as_mut().unwrap().round = round;
            d.vote_b.as_mut().unwrap().round = round;
        }
        Payload::Evidence(Box::new(f))
    };
    let engine = net.slots[3].engine.as_mut().unwrap();
    engine.handle(Input::Tick).unwrap();
    for round in 1..=PEER_EVIDENCE_CHECKS_PER_TICK as i32 {
        engine.handle(Input::Peer(9, forged(round))).unwrap();
    }
    // Peer 9 spent its budget: its genuine piece is not checked, so not pooled (submitted
    // afterwards it is new and sent to the peers). Another peer's is pooled (then pending).
    engine
        .handle(Input::Peer(9, Payload::Evidence(Box::new(genuine.clone()))))
        .unwrap();
    let (_, out) = engine.submit_evidence(genuine.clone()).unwrap();
    assert_eq!(out.len(), 1, "peer 9's piece was checked beyond its budget");
    let other = net.slots[2].engine.as_mut().unwrap();
    other.handle(Input::Tick).unwrap();
    other
        .handle(Input::Peer(
            10,
            Payload::Evidence(Box::new(genuine.clone())),
        ))
        .unwrap();
    let (_, out) = other.submit_evidence(genuine).unwrap();
    assert!(out.is_empty(), "a peer's genuine piece was not pooled");
}

#[test]
fn evidence_over_rpc_is_checked_a_bounded_number_of_times_a_tick() {
    use bulwark_evidence::EvidenceError;
    use bulwark_node::engine::RPC_EVIDENCE_CHECKS_PER_TICK;
    use bulwark_types::tendermint_proto::v0_38 as pb;
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let raw = pb::types::Evidence::from(double_sign(&net, 1, 2, (1, 2)));
    let mut forged = raw.clone();
    if let Some(pb::types::evidence::Sum::DuplicateVoteEvidence(d)) = forged.sum.as_mut() {
        d.vote_a.as_mut().unwrap().signature[0] ^= 1;
    }
    let engine = net.slots[3].engine.as_mut().unwrap();
    engine.handle(Input::Tick).unwrap();
    for _ in 0..RPC_EVIDENCE_CHECKS_PER_TICK {
        assert!(matches!(
            engine.submit_evidence(forged.clone()),
            Err(EvidenceError::BadSignature { .. })
        ));
    }
    // The budget is spent: even genuine evidence waits, unverified.
    assert!(matches!(
        engine.submit_evidence(forged),
        Err(EvidenceError::Busy)
    ));
    assert!(matches!(
        engine.submit_evidence(raw.clone()),
        Err(EvidenceError::Busy)
    ));
    engine.handle(Input::Tick).unwrap();
    assert!(engine.submit_evidence(raw).is_ok());
}

/// Takes out of the router the next vote some peer sent node `to` about the height `to` is
/// deciding (late votes of decided heights are dropped unchecked), running the network until
/// there is one.
fn next_vote_for(net: &mut Net, to: usize) -> (u64, bulwark_wire::Payload) {
    use bulwark_wire::Payload;
    loop {
        let height = net.slots[to].engine.as_ref().unwrap().state().next_height();
        let pending = net.inbox.iter().position(|(dest, input)| {
            *dest == to
                && matches!(input, Input::Peer(_, Payload::Vote(v)) if v.height as u64 == height)
        });
        if let Some((_, Input::Peer(from, vote))) = pending.and_then(|i| net.inbox.remove(i)) {
            return (from, vote);
        }
        net.step();
    }
}

#[test]
fn a_vote_checked_on_a_receiving_thread_costs_the_engine_no_check() {
    use bulwark_types::signing::full_checks_on_this_thread;
    use bulwark_wire::preverify::{Budget, Preverifier};
    use bulwark_wire::Payload;
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let state = net.slots[0].engine.as_ref().unwrap().state().clone();
    let preverifier = Preverifier::new(net.genesis.chain_id.clone());
    preverifier.publish(
        state.next_height(),
        &state.validator_infos,
        &state.last_validator_infos,
    );
    let deliver = |net: &mut Net, from: u64, vote: Payload| {
        let before = full_checks_on_this_thread();
        let engine = net.slots[0].engine.as_mut().unwrap();
        let out = engine.handle(Input::Peer(from, vote)).unwrap();
        let checks = full_checks_on_this_thread() - before;
        net.route(0, out);
        checks
    };
    let checked_on_a_reader = |vote: &Payload| {
        std::thread::scope(|s| {
            s.spawn(|| preverifier.inspect(vote, &mut Budget::default()))
                .join()
                .unwrap()
        })
    };
    // As a connection thread does: checked there, then handed to the engine.
    let (from, vote) = next_vote_for(&mut net, 0);
    let verified = checked_on_a_reader(&vote);
    assert_eq!(verified, Ok(1), "the receiving thread checked the vote");
    assert_eq!(
        deliver(&mut net, from, vote),
        0,
        "the engine checked it again"
    );
    // Not checked ahead: the engine checks it itself.
    let (from, vote) = next_vote_for(&mut net, 0);
    assert_eq!(
        deliver(&mut net, from, vote),
        1,
        "the control vote was not checked"
    );
    // A forged signature is not remembered, so the engine checks it (and drops it).
    let (from, mut vote) = next_vote_for(&mut net, 0);
    if let Payload::Vote(v) = &mut vote {
        v.signature[0] ^= 1;
    }
    let verified = checked_on_a_reader(&vote);
    assert_ne!(verified, Ok(1), "a forged vote passed the receiving thread");
    assert_eq!(
        deliver(&mut net, from, vote),
        1,
        "the forgery was not checked"
    );
    // A certificate padded with copies gets no more checks than the set has signers, and a
    // vote of a height the published signers are not about gets none.
    let (_, vote) = next_vote_for(&mut net, 0);
    let Payload::Vote(raw) = vote.clone() else {
        unreachable!()
    };
    let padded = Payload::Certificate(bulwark_wire::Certificate {
        votes: vec![raw; 50],
    });
    assert_eq!(preverifier.inspect(&padded, &mut Budget::default()), Ok(N));
    let height = net.slots[0].engine.as_ref().unwrap().state().next_height();
    preverifier.publish(height + 2, &state.validator_infos, &state.validator_infos);
    assert_eq!(
        preverifier.inspect(&vote, &mut Budget::default()),
        Ok(0),
        "signers of another height"
    );
    // The network still decides with the engines fed this way.
    net.run_until(5, 200_000);
}

#[test]
fn a_peer_sending_forgeries_gets_a_bounded_number_of_checks_on_its_receiving_thread() {
    use bulwark_types::signing::full_checks_on_this_thread;
    use bulwark_types::tendermint_proto::v0_38 as pb;
    use bulwark_wire::preverify::{
        Budget, Forged, Preverifier, CHECKS_PER_SIGNER, COMMITS_AHEAD, FAILURES_PER_HEIGHT,
    };
    use bulwark_wire::{DecidedBlock, Payload};
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let state = net.slots[0].engine.as_ref().unwrap().state().clone();
    let height = state.next_height();
    let preverifier = Preverifier::new(net.genesis.chain_id.clone());
    let publish =
        |height| preverifier.publish(height, &state.validator_infos, &state.last_validator_infos);
    publish(height);
    let checks = |payload: &Payload, budget: &mut Budget| {
        let before = full_checks_on_this_thread();
        let verified = preverifier.inspect(payload, budget);
        (verified, full_checks_on_this_thread() - before)
    };
    let (_, genuine) = next_vote_for(&mut net, 0);
    let mut forged = genuine.clone();
    if let Payload::Vote(v) = &mut forged {
        v.signature[0] ^= 1;
    }
    // Where the signers are known exactly (the height being decided) a forgery cannot come
    // from an honest relay: the reader says so, and the connection is closed.
    let Payload::Vote(raw) = &forged else {
        unreachable!()
    };
    assert_eq!(
        preverifier.inspect(&forged, &mut Budget::default()),
        Err(Forged {
            height,
            validator: raw.validator_index as u32
        })
    );
    // Where they are guessed (the next height) a forgery is only not remembered, so each copy
    // would cost a check: only so many do.
    let mut ahead = forged.clone();
    if let Payload::Vote(v) = &mut ahead {
        v.height += 1;
    }
    let mut budget = Budget::default();
    let spent: u64 = (0..FAILURES_PER_HEIGHT + 50)
        .map(|_| checks(&ahead, &mut budget).1)
        .sum();
    assert_eq!(spent, u64::from(FAILURES_PER_HEIGHT));
    // Those were every check the connection gets at this height: even a genuine vote is left
    // to the engine.
    assert_eq!(CHECKS_PER_SIGNER * N, FAILURES_PER_HEIGHT as usize);
    assert_eq!(checks(&genuine, &mut budget), (Ok(0), 0));
    // Another connection, or the next height, has its own.
    assert_eq!(checks(&genuine, &mut Budget::default()), (Ok(1), 1));
    publish(height + 1);
    assert_eq!(checks(&genuine, &mut budget).0, Ok(1));
    // A commit far ahead of the height being decided is not checked here at all.
    publish(height);
    let commit = net.slots[0]
        .engine
        .as_ref()
        .unwrap()
        .blocks()
        .commit(1)
        .unwrap()
        .unwrap();
    let mut commit = pb::types::Commit::decode(commit.as_slice()).unwrap();
    let signed = commit
        .signatures
        .iter()
        .filter(|s| !s.signature.is_empty())
        .count() as u64;
    assert!(signed >= 3, "{signed} signatures");
    let block_of = |commit: &pb::types::Commit| {
        Payload::DecidedBlock(Box::new(DecidedBlock {
            block: None,
            commit: Some(commit.clone()),
            extensions: None,
        }))
    };
    commit.height = (height + COMMITS_AHEAD) as i64;
    let near = checks(&block_of(&commit), &mut Budget::default());
    assert_eq!(
        near,
        (Ok(0), signed),
        "a forged commit near the height is checked"
    );
    commit.height += 1;
    let far = checks(&block_of(&commit), &mut Budget::default());
    assert_eq!(far, (Ok(0), 0), "a commit too far ahead was checked");
}

/// The WAL's own-block record, written by hand as the engine's schema has it (tags 4 and 5).
#[derive(Clone, PartialEq, prost::Message)]
struct OwnBlockRecord {
    #[prost(message, optional, tag = "4")]
    own_block: Option<bulwark_types::tendermint_proto::v0_38::types::Block>,
    #[prost(uint32, optional, tag = "5")]
    own_round: Option<u32>,
}

#[test]
fn an_own_block_in_the_wal_that_fails_validation_is_refused_at_start_never_proposed() {
    use bulwark_store::wal::Wal;
    use bulwark_types::tendermint_proto::v0_38::types as pb;
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let engine = net.slots[0].engine.take().unwrap();
    let height = engine.state().next_height();
    let address = engine.address();
    // An earlier block of ours, authenticated like every record (the MAC is the store's):
    // what a bug, or whoever got the store's key, would leave for the next start.
    let ours = (1..height)
        .filter_map(|h| engine.blocks().block(h).unwrap())
        .map(|raw| pb::Block::decode(raw.as_slice()).unwrap())
        .find(|b| b.header.as_ref().unwrap().proposer_address == address.as_bytes())
        .expect("node 0 proposed a block");
    drop(engine);
    let store = reopen_store(&net.slots[0]);
    let mut wal = Wal::open(&store).unwrap();
    let record = OwnBlockRecord {
        own_block: Some(ours),
        own_round: Some(1),
    };
    wal.append(height, &record.encode_to_vec()).unwrap();
    wal.flush().unwrap();
    drop((wal, store));
    let Err(refused) = try_open(&net.slots[0], &net.genesis) else {
        panic!("a stale own block was taken for height {height}");
    };
    let refused = refused.to_string();
    assert!(
        refused.contains("WAL: own block of round 1") && refused.contains("height"),
        "{refused}"
    );
}

#[test]
fn a_backlogged_peers_status_is_noted_but_never_answered() {
    use bulwark_wire::Status;
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let engine = net.slots[0].engine.as_mut().unwrap();
    let height = engine.state().next_height();
    engine.handle(Input::Tick).unwrap();
    // A peer at height 1 would be sent decided blocks; backlogged, it is sent nothing.
    let behind = Input::BackloggedStatus(
        7,
        Status {
            height: 1,
            round: 0,
        },
    );
    assert_eq!(engine.handle(behind).unwrap(), vec![]);
    assert!(
        status_answer(engine, 8, 1) > 0,
        "the control peer got no answer"
    );
    // Its height counts, toward the lower median over the validator peers of the latest
    // height each reported or worked on. The three others are in step: they sent this
    // height's votes and no `Status`. One peer claiming to be far ahead does not make this
    // node catch up, two of three do, and when they report their heights again it is over.
    engine.handle(Input::PeerGone(7)).unwrap();
    engine.handle(Input::PeerGone(8)).unwrap();
    let backlogged = |peer, height| Input::BackloggedStatus(peer, Status { height, round: 0 });
    assert!(!engine.catching_up());
    engine.handle(backlogged(3, height + 1_000_000)).unwrap();
    assert!(!engine.catching_up(), "one peer's claim moved it");
    engine.handle(backlogged(2, height + 5)).unwrap();
    assert!(engine.catching_up());
    engine.handle(backlogged(2, height)).unwrap();
    assert!(!engine.catching_up(), "a claim, once made, kept it");
}

#[test]
fn full_node_peers_do_not_move_how_far_the_network_is() {
    use bulwark_wire::{Payload, Status};
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let engine = net.slots[0].engine.as_mut().unwrap();
    let height = engine.state().next_height();
    let status = |h| {
        Payload::Status(Status {
            height: h,
            round: 0,
        })
    };
    // Three full nodes (a host can run many) claim to be far ahead; one validator is here.
    for peer in [201, 202, 203] {
        engine
            .handle(Input::PeerRole(peer, PeerRole::FullNode))
            .unwrap();
        engine
            .handle(Input::Peer(peer, status(height + 50)))
            .unwrap();
    }
    engine
        .handle(Input::PeerRole(101, PeerRole::Validator))
        .unwrap();
    engine.handle(Input::Peer(101, status(height))).unwrap();
    assert_eq!(engine.network_height(), height);
    // Two of them become validators: now they count.
    engine
        .handle(Input::PeerRole(202, PeerRole::Validator))
        .unwrap();
    engine
        .handle(Input::PeerRole(203, PeerRole::Validator))
        .unwrap();
    assert_eq!(engine.network_height(), height + 50);
    // An unattested peer's height counts for nothing, even with no validator left.
    for peer in [301, 302] {
        engine
            .handle(Input::PeerRole(peer, PeerRole::Unattested))
            .unwrap();
        engine
            .handle(Input::Peer(peer, status(height + 900)))
            .unwrap();
    }
    // With only full nodes left, the attested one's is all there is.
    for peer in [101, 202, 203] {
        engine.handle(Input::PeerGone(peer)).unwrap();
    }
    assert_eq!(engine.network_height(), height + 50);
}

#[test]
fn a_run_of_decided_blocks_ends_with_where_the_peer_is() {
    use bulwark_wire::Payload;
    let mut net = Net::new();
    net.run_until(6, 200_000);
    let engine = net.slots[0].engine.as_mut().unwrap();
    let height = engine.state().next_height();
    engine.handle(Input::Tick).unwrap();
    let answer = status_answer_payloads(engine, 7, 2);
    let blocks = answer
        .iter()
        .filter(|p| matches!(p, Payload::DecidedBlock(_)))
        .count() as u64;
    assert_eq!(blocks, height - 2, "every block from height 2 on");
    match answer.last() {
        Some(Payload::Status(s)) => assert_eq!(s.height, height),
        other => panic!("the answer ends with {other:?}"),
    }
}

#[test]
fn a_message_two_heights_ahead_asks_for_blocks_one_request_at_a_time() {
    use bulwark_wire::{Payload, Status};
    let mut net = Net::new();
    net.run_until(3, 200_000);
    let engine = net.slots[0].engine.as_mut().unwrap();
    let height = engine.state().next_height();
    engine.handle(Input::Tick).unwrap();
    let vote_at = |h: u64| {
        Payload::Vote(bulwark_types::tendermint_proto::v0_38::types::Vote {
            height: h as i64,
            ..Default::default()
        })
    };
    let asked = |out: Vec<Output>| -> Vec<(u64, u64)> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Send(p, Payload::Status(Status { height, .. })) => Some((p, height)),
                _ => None,
            })
            .collect()
    };
    // The next height is normal lag: no request.
    let out = engine.handle(Input::Peer(5, vote_at(height + 1))).unwrap();
    assert!(asked(out).is_empty());
    // No peer is known to be ahead: the sender is asked.
    let out = engine.handle(Input::Peer(5, vote_at(height + 2))).unwrap();
    assert_eq!(asked(out), vec![(5, height)]);
    // One request at a time: whatever more peers claim, it waits for peer 5's run.
    let status = |h: u64| {
        Payload::Status(Status {
            height: h,
            round: 0,
        })
    };
    let out = engine.handle(Input::Peer(6, vote_at(height + 9))).unwrap();
    assert!(asked(out).is_empty());
    let out = engine.handle(Input::Peer(6, status(height + 4))).unwrap();
    assert!(asked(out).is_empty());
    // Peer 5 ends its answer with its `Status` having moved us nowhere (it had no answer
    // left): it is not asked again this tick, and the next peer ahead is.
    let out = engine.handle(Input::Peer(5, status(height + 2))).unwrap();
    assert_eq!(asked(out), vec![(6, height)]);
    let out = engine.handle(Input::Peer(6, status(height + 4))).unwrap();
    assert!(
        asked(out).is_empty(),
        "every peer ahead was asked at this height"
    );
    let out = engine.handle(Input::Peer(7, vote_at(height + 9))).unwrap();
    assert_eq!(
        asked(out),
        vec![(7, height)],
        "a peer not known to be ahead, last"
    );
    // Peer 7 leaves it unanswered for a whole tick: shunned, whatever it sends, and the
    // peers known to be ahead asked in turn.
    engine.handle(Input::Tick).unwrap();
    engine.handle(Input::Tick).unwrap();
    let out = engine.handle(Input::Peer(7, vote_at(height + 9))).unwrap();
    assert_eq!(asked(out), vec![(5, height)]);
    let out = engine.handle(Input::Peer(5, status(height + 4))).unwrap();
    assert_eq!(asked(out), vec![(6, height)]);
}

#[test]
fn a_peers_transactions_are_taken_a_bounded_number_a_tick() {
    use bulwark_node::engine::PEER_TXS_PER_TICK;
    use bulwark_wire::{Payload, Txs};
    let mut net = Net::new();
    net.run_until(2, 200_000);
    let engine = net.slots[3].engine.as_mut().unwrap();
    engine.handle(Input::Tick).unwrap();
    let before = engine.mempool().len();
    let batch = |from: u32, n: u32| Txs {
        txs: (from..from + n)
            .map(|i| format!("flood{i}=x").into_bytes())
            .collect(),
    };
    // Three batches in one tick: the third goes past peer 9's budget; each tx would cost a
    // CheckTx on the engine's thread. (The mempool holds 5,000.)
    for from in [0, 1_500, 3_000] {
        engine
            .handle(Input::Peer(9, Payload::Txs(batch(from, 1_500))))
            .unwrap();
    }
    let taken = engine.mempool().len() - before;
    assert_eq!(taken, PEER_TXS_PER_TICK as usize);
    // Another peer has a budget of its own, and the next tick renews peer 9's.
    engine
        .handle(Input::Peer(10, Payload::Txs(batch(10_000, 400))))
        .unwrap();
    assert_eq!(engine.mempool().len() - before, taken + 400);
    engine.handle(Input::Tick).unwrap();
    engine
        .handle(Input::Peer(9, Payload::Txs(batch(4_500, 400))))
        .unwrap();
    assert_eq!(engine.mempool().len() - before, taken + 800);
}

#[test]
fn rpc_check_tx_is_answered_a_bounded_number_of_times_a_tick() {
    use bulwark_node::engine::RPC_CHECK_TXS_PER_TICK;
    let mut net = Net::new();
    net.run_until(2, 200_000);
    let engine = net.slots[3].engine.as_mut().unwrap();
    engine.handle(Input::Tick).unwrap();
    for i in 0..RPC_CHECK_TXS_PER_TICK {
        let answer = engine.check_tx_for_rpc(format!("k{i}=v").into()).unwrap();
        assert!(answer.unwrap().code.is_ok());
    }
    assert!(engine.check_tx_for_rpc("late=v".into()).is_none());
    // Nothing was admitted, and the next tick answers again.
    assert!(engine.mempool().is_empty());
    engine.handle(Input::Tick).unwrap();
    assert!(engine.check_tx_for_rpc("late=v".into()).is_some());
}

#[test]
fn a_decided_block_is_named_by_its_value_until_the_next_height_starts() {
    // `consensus_state` names the proposal, locked and valid blocks through `block_id_of`
    // while the node waits out timeout_commit; the decided candidate itself leaves the engine
    // at commit. A lone validator: no other validator's vote names the block.
    let mut net = Net::with_genesis(|g| g.validators.truncate(1));
    net.submit(0, "lone=value");
    for _ in 0..100_000 {
        if net.committed[0] >= 1 {
            break;
        }
        net.step();
    }
    let engine = net.slots[0].engine.as_ref().unwrap();
    assert_eq!(engine.state().last_block_height, 1);
    let id = engine.state().last_block_id.expect("block 1's id");
    let value = bulwark_types::convert::value_id(&id);
    assert_eq!(engine.block_id_of(&value), Some(id));
}
