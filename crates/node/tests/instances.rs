//! The host runs a validator's key in more than one place (`bulwark_instance`): its disk
//! booted again after it ran on (a rollback), or a copy booted beside it (a clone). Real
//! engines on disk, the host's copies made of their stopped disks; no two votes of one key
//! ever conflict, and a restarted instance signs again once the others commit its claim.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::net::{copy_dir, Net, N};

/// A fresh instance (what `bulwark start` draws at every boot).
fn instance(n: u8) -> [u8; 32] {
    [0xA0 + n; 32]
}

fn stop(net: &mut Net, i: usize) {
    net.slots[i].engine = None;
    net.committed[i] = u64::MAX;
}

/// Cuts every link between the two sides for `ms` of simulated time, then restores them.
/// Validator 0's two instances on opposite sides: with the instance rule neither side holds
/// more than two thirds of the signing power, so nothing decides; without it, the side with
/// three validators decides while the other instance votes on what it sees, and votes
/// conflict at once.
fn split_for(net: &mut Net, a: &[usize], b: &[usize], ms: u64) {
    for &x in a {
        for &y in b {
            net.blocked.insert((x, y));
            net.blocked.insert((y, x));
        }
    }
    let until = net.now + ms;
    while net.now < until {
        net.step();
    }
    net.blocked.clear();
}

/// Heights at which slot `from` sent votes of its own key since `since`, leaving out votes
/// sent before (relayed copies of its past instance's votes are not new signatures).
fn voted_heights(net: &Net, from: usize, since: usize) -> Vec<i64> {
    let (before, own) = net.sent_votes.split_at(since);
    let key = bulwark_types::signing::public_key(&net.slots[from].key);
    let address = bulwark_types::tendermint::account::Id::from(key.ed25519().unwrap());
    let same = |a: &common::net::SentVote, b: &common::net::SentVote| {
        (&a.validator, a.height, a.round, a.kind, &a.block)
            == (&b.validator, b.height, b.round, b.kind, &b.block)
    };
    let mut h: Vec<i64> = own
        .iter()
        .filter(|v| v.from == from && v.validator == address.as_bytes())
        .filter(|v| !before.iter().any(|b| same(b, v)))
        .map(|v| v.height)
        .collect();
    h.dedup();
    h
}

/// Steps until slot `i` has sent a non-nil prevote of its own at the height it is deciding;
/// returns that height.
fn until_it_prevotes_a_block(net: &mut Net, i: usize) -> i64 {
    let key = bulwark_types::signing::public_key(&net.slots[i].key);
    let address = bulwark_types::tendermint::account::Id::from(key.ed25519().unwrap());
    let height = net.slots[i].engine.as_ref().unwrap().state().next_height() as i64;
    for _ in 0..100_000 {
        let voted = net.sent_votes.iter().any(|v| {
            v.from == i
                && v.validator == address.as_bytes()
                && v.height == height
                && v.round == 0
                && v.kind == 1
                && v.block.is_some()
        });
        if voted {
            return height;
        }
        net.step();
    }
    panic!("slot {i} never prevoted a block at height {height}");
}

/// The rollback of review C-2(a): validator 0's disk copied at height 4; it runs on as
/// instance A and prevotes a block at height T; then the host stops it (and validator 3, so
/// that height T stays open), boots the old copy as instance B and keeps every proposal of
/// height T from it, so that B, had it signed, would prevote nil where A prevoted the block.
fn rolled_back(net: &mut Net) -> (i64, usize) {
    net.run_until(4, 200_000);
    stop(net, 0);
    let snapshot = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_dir(net.slots[0].store_dir.path(), snapshot.0.path());
    copy_dir(net.slots[0].app_dir.path(), snapshot.1.path());
    net.slots[0].instance = instance(1);
    net.start(0);
    net.run_until(12, 400_000);
    let t = until_it_prevotes_a_block(net, 0);
    stop(net, 0);
    stop(net, 3);
    // Back to the copy: the old disk, a new boot.
    let store = net.slots[0].store_dir.path().to_path_buf();
    let app = net.slots[0].app_dir.path().to_path_buf();
    for dir in [&store, &app] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    copy_dir(snapshot.0.path(), &store);
    copy_dir(snapshot.1.path(), &app);
    net.slots[0].instance = instance(2);
    net.no_proposals_to.insert(0);
    let since = net.sent_votes.len();
    net.start(0);
    // B catches up to height T (blocks from 1 and 2) and sits there through round 0.
    for _ in 0..60_000 {
        net.step();
    }
    (t, since)
}

#[test]
fn a_rolled_back_disk_never_signs_against_its_past_and_signs_again_once_its_claim_commits() {
    let mut net = Net::new();
    let (t, since) = rolled_back(&mut net);
    let b = net.slots[0].engine.as_ref().unwrap();
    assert_eq!(
        b.state().next_height() as i64,
        t,
        "B reached the open height"
    );
    assert!(
        !b.signing().may_sign(),
        "B must wait for its claim: {:?}",
        b.signing()
    );
    assert_eq!(net.conflicting_votes(), vec![], "no conflicting votes");
    // The host gives up: validator 3 comes back, proposals flow. The other three commit
    // height T and B's claim, and B signs again.
    net.no_proposals_to.clear();
    net.start(3);
    let target = t as u64 + 8;
    net.run_until(target, 400_000);
    assert_eq!(net.conflicting_votes(), vec![], "no conflicting votes");
    let signed_again = voted_heights(&net, 0, since);
    let claimed = match net.slots[0].engine.as_ref().unwrap().signing() {
        bulwark_instance::Authorization::Holder { since } => since,
        other => panic!("B never held the key: {other:?}"),
    };
    assert!(
        claimed <= t as u64 + 3,
        "B's claim committed at {claimed}, more than 3 heights after it caught up at {t}"
    );
    assert!(
        signed_again.iter().all(|h| *h as u64 > claimed),
        "B signed at {signed_again:?}, its claim committed at {claimed}"
    );
    assert!(
        signed_again.iter().any(|h| *h as u64 >= target - 2),
        "B signs again: {signed_again:?}"
    );
}

/// The same rollback with the claim check planted out of the engine: the test sees B prevote
/// nil where A prevoted the block (this test can fail).
#[cfg(feature = "mutants")]
#[test]
fn planted_without_the_claim_check_the_rolled_back_disk_double_signs() {
    use bulwark_consensus::mutation::{plant, Mutant};
    assert!(plant(Some(Mutant::SignWithoutClaim)));
    let mut net = Net::new();
    let (t, _) = rolled_back(&mut net);
    plant(None);
    let conflicts = net.conflicting_votes();
    assert!(
        conflicts.iter().any(|(a, _)| a.height == t),
        "the planted bug went unseen: {conflicts:?}"
    );
}

/// A clone of review C-2(c): validator 0's disk copied while it is stopped and booted twice,
/// the copies split apart first (each with some of the others, no link between the sides),
/// then partitioned from each other with validator 2 seeing both. At most one of
/// them holds the key at any height; no two votes conflict; the one whose claim committed
/// last signs, the other stops for good.
#[test]
fn two_clones_of_one_disk_never_both_sign_at_a_height() {
    let mut net = Net::new();
    net.run_until(4, 200_000);
    stop(&mut net, 0);
    net.slots[0].instance = instance(1);
    let clone = net.add_clone(0, instance(2));
    net.start(0);
    net.committed[clone] = u64::MAX;
    split_for(&mut net, &[0, 1], &[clone, 2, 3], 2_000);
    assert_eq!(net.conflicting_votes(), vec![], "split apart");
    // Partitioned: validator 0 talks to 1 and 2, its clone to 2 and 3.
    for (a, b) in [(0, clone), (0, 3), (clone, 1)] {
        net.blocked.insert((a, b));
        net.blocked.insert((b, a));
    }
    net.committed[clone] = u64::MAX;
    for _ in 0..6 {
        let top = net
            .committed
            .iter()
            .copied()
            .filter(|h| *h != u64::MAX)
            .min()
            .unwrap();
        net.run_until(top + 3, 400_000);
        assert_eq!(net.conflicting_votes(), vec![]);
    }
    // At the end exactly one of the two holds the key.
    let holders: Vec<bool> = [0, clone]
        .iter()
        .map(|&s| net.slots[s].engine.as_ref().unwrap().signing().may_sign())
        .collect();
    assert_eq!(holders.iter().filter(|h| **h).count(), 1, "{holders:?}");
    assert_eq!(net.slots.len(), N + 1);
}

/// The clones with the claim check planted out: both sign, and votes conflict.
#[cfg(feature = "mutants")]
#[test]
fn planted_without_the_claim_check_two_clones_double_sign() {
    fails_with(
        bulwark_consensus::mutation::Mutant::SignWithoutClaim,
        two_clones_of_one_disk_never_both_sign_at_a_height,
    );
}

/// `test` fails with `mutant` planted (the bug it plants is seen).
#[cfg(feature = "mutants")]
fn fails_with(mutant: bulwark_consensus::mutation::Mutant, test: fn()) {
    use bulwark_consensus::mutation::plant;
    assert!(plant(Some(mutant)));
    let result = std::panic::catch_unwind(test);
    plant(None);
    assert!(result.is_err(), "the planted {mutant:?} went unseen");
}

/// The slot whose validator proposed the block of `height`.
fn proposer_of(net: &Net, height: u64) -> usize {
    use prost::Message;
    let engine = net.slots[1].engine.as_ref().unwrap();
    let raw = engine.blocks().block(height).unwrap().unwrap();
    let block =
        bulwark_types::tendermint_proto::v0_38::types::Block::decode(raw.as_slice()).unwrap();
    let proposer = block.header.unwrap().proposer_address;
    (0..N)
        .find(|i| {
            let key = bulwark_types::signing::public_key(&net.slots[*i].key);
            let address = bulwark_types::tendermint::account::Id::from(key.ed25519().unwrap());
            address.as_bytes() == proposer.as_slice()
        })
        .unwrap()
}

/// The copy of review C-2(c) made at enrolment: the host boots the enrolled disk of the first
/// height's proposer again (its chain state empty) long after launch. The genesis names the
/// validator's launch instance, and the copy is another: it neither proposes nor votes at
/// height 1 again, and signs only after its own claim commits.
#[test]
fn the_enrolled_disk_booted_after_launch_never_signs_the_first_heights_again() {
    let mut net = Net::new();
    net.run_until(8, 200_000);
    let v = proposer_of(&net, 1);
    stop(&mut net, v);
    for dir in [
        net.slots[v].store_dir.path().to_path_buf(),
        net.slots[v].app_dir.path().to_path_buf(),
    ] {
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
    }
    net.slots[v].instance = instance(3);
    let since = net.sent_votes.len();
    // The host lets claims through but holds back every block, so the copy stays at height 1
    // (as proposer of its round 0) as long as the host likes.
    net.txs_only_to.insert(v);
    net.start(v);
    for _ in 0..20_000 {
        net.step();
    }
    assert_eq!(voted_heights(&net, v, since), Vec::<i64>::new());
    assert_eq!(net.conflicting_votes(), vec![], "no conflicting votes");
    let copy = net.slots[v].engine.as_ref().unwrap();
    assert_eq!(copy.state().next_height(), 1);
    assert!(
        matches!(
            copy.signing(),
            bulwark_instance::Authorization::Elsewhere { since: 0, .. }
        ),
        "{:?}",
        copy.signing()
    );
    net.txs_only_to.clear();
    // The others ran on meanwhile: the copy catches up, claims, and its claim commits.
    for _ in 0..400_000 {
        let copy = net.slots[v].engine.as_ref().unwrap();
        if copy.signing().may_sign() {
            break;
        }
        net.step();
    }
    let top = net
        .committed
        .iter()
        .copied()
        .filter(|h| *h != u64::MAX)
        .max()
        .unwrap();
    net.run_until(top + 3, 400_000);
    assert_eq!(net.conflicting_votes(), vec![], "no conflicting votes");
    let claimed = match net.slots[v].engine.as_ref().unwrap().signing() {
        bulwark_instance::Authorization::Holder { since } => since,
        other => panic!("the new instance never held the key: {other:?}"),
    };
    let signed = voted_heights(&net, v, since);
    assert!(
        signed.iter().all(|h| *h as u64 > claimed),
        "signed at {signed:?}, its claim committed at {claimed}"
    );
    assert!(!signed.is_empty(), "it signs again after its claim");
}

/// The launch window the genesis's launch instances closed: two copies of one enrolled disk
/// booted together at launch, split apart first (validator 0's launch instance with 1, the
/// copy with 2 and 3), then each shown a different part of the network (the launch instance
/// talks to 1 and 2, the copy to 2 and 3). Only the instance the genesis
/// names signs at the first heights; the copy signs only once its claim commits, and then the
/// launch instance stops for good. No two votes conflict.
#[test]
fn two_copies_of_an_enrolled_disk_booted_at_launch_never_both_sign() {
    let mut net = Net::new();
    let copy = net.add_clone(0, instance(4));
    split_for(&mut net, &[0, 1], &[copy, 2, 3], 2_000);
    assert_eq!(net.conflicting_votes(), vec![], "split apart");
    for (a, b) in [(0, copy), (0, 3), (copy, 1)] {
        net.blocked.insert((a, b));
        net.blocked.insert((b, a));
    }
    net.committed[copy] = u64::MAX;
    let copy_signing = net.slots[copy].engine.as_ref().unwrap().signing();
    assert!(!copy_signing.may_sign(), "{copy_signing:?}");
    assert!(net.slots[0].engine.as_ref().unwrap().signing().may_sign());
    for target in [3, 6, 9, 12] {
        net.run_until(target, 400_000);
        assert_eq!(net.conflicting_votes(), vec![], "by height {target}");
    }
    let holders: Vec<bool> = [0, copy]
        .iter()
        .map(|&s| net.slots[s].engine.as_ref().unwrap().signing().may_sign())
        .collect();
    assert!(holders.iter().filter(|h| **h).count() <= 1, "{holders:?}");
}

/// The same launch with the claim check planted out: both copies sign at the first heights
/// (as they could when launch acknowledgements stood in for the genesis's naming), and votes
/// conflict.
#[cfg(feature = "mutants")]
#[test]
fn planted_without_the_claim_check_two_copies_at_launch_double_sign() {
    fails_with(
        bulwark_consensus::mutation::Mutant::SignWithoutClaim,
        two_copies_of_an_enrolled_disk_booted_at_launch_never_both_sign,
    );
}

/// Validator 2's disk booted again (a new instance) after the others decided more than two
/// runs of block sync without it, on a chain deciding a height every ~60 ms. Its peers'
/// messages of later heights show it is behind, and each run's answer ends with where the
/// peer is, so it asks for the next run at once: it is caught up before two of the driver's
/// ticks (200 ms here) go by, its claim commits, and it signs again within half a claim's
/// lifetime of heights after catching up.
#[test]
fn a_restarted_instance_far_behind_catches_up_and_signs_again_within_a_bound() {
    use bulwark_node::engine::CATCH_UP_BLOCKS;
    use bulwark_node::instance::CLAIM_TTL;
    let mut net = Net::new();
    net.run_until(2, 200_000);
    stop(&mut net, 2);
    let ahead = 2 * CATCH_UP_BLOCKS + 10;
    net.run_until(ahead, 4_000_000);
    let restarted = net.now;
    net.slots[2].instance = instance(4);
    net.start(2);
    assert!(
        net.committed[2] + 2 * CATCH_UP_BLOCKS < ahead,
        "node 2 restarted at {} of {ahead}",
        net.committed[2]
    );
    let signing = |net: &Net| net.slots[2].engine.as_ref().unwrap().signing().may_sign();
    assert!(!signing(&net), "a new instance signs before its claim");
    while net.committed[2] + 1 < net.committed[0] {
        net.step();
        assert!(
            net.now < restarted + 400,
            "node 2 at {} of {} after {} ms",
            net.committed[2],
            net.committed[0],
            net.now - restarted
        );
    }
    let caught_up = net.committed[0];
    while !signing(&net) {
        net.step();
        assert!(
            net.committed[0] <= caught_up + CLAIM_TTL / 2,
            "caught up at {caught_up}, not signing at {}",
            net.committed[0]
        );
    }
    let since = net.sent_votes.len();
    let top = net.committed[0];
    net.run_until(top + 3, 1_000_000);
    assert!(
        !voted_heights(&net, 2, since).is_empty(),
        "no vote of its own"
    );
    net.assert_same_blocks(top + 3);
}

/// Block sync planted back to one run per stuck tick: the restarted instance trails.
#[cfg(feature = "mutants")]
#[test]
fn planted_block_sync_on_stuck_ticks_only_is_caught_trailing() {
    fails_with(
        bulwark_consensus::mutation::Mutant::BlockSyncOnStuckTicksOnly,
        a_restarted_instance_far_behind_catches_up_and_signs_again_within_a_bound,
    );
}

/// Proposers planted to leave claims out of their blocks: the restarted instance never
/// signs again.
#[cfg(feature = "mutants")]
#[test]
fn planted_claims_left_out_of_blocks_are_caught_never_signing() {
    fails_with(
        bulwark_consensus::mutation::Mutant::ClaimsLeftOut,
        a_restarted_instance_far_behind_catches_up_and_signs_again_within_a_bound,
    );
}

/// A restarted instance whose claim the host drops once (it went out before any connection
/// was up, as at a VM's boot), and which then follows the others by block sync only, a run
/// behind (a slow VM: the host passes it transactions, statuses and decided blocks only).
/// The claim is sent again while it is valid, and commits within half a claim's lifetime;
/// without the resend it would wait for the claim to expire and a new one.
#[test]
fn a_trailing_instance_whose_claim_was_lost_sends_it_again() {
    use bulwark_node::instance::{Claim, CLAIM_TTL};
    let mut net = Net::new();
    net.run_until(3, 200_000);
    stop(&mut net, 2);
    let dropped = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = dropped.clone();
    net.tamper = Some(Box::new(move |from, payload| {
        if let (2, bulwark_wire::Payload::Txs(txs)) = (from, payload) {
            if txs.txs.iter().any(|t| Claim::from_tx(t).is_some()) {
                if count.get() == 0 {
                    txs.txs.clear();
                }
                count.set(count.get() + 1);
            }
        }
    }));
    net.sync_only_to.insert(2);
    net.slots[2].instance = instance(5);
    net.start(2);
    let booted = net.committed[0];
    let signing = |net: &Net| net.slots[2].engine.as_ref().unwrap().signing().may_sign();
    while !signing(&net) {
        net.step();
        assert!(
            net.committed[0] <= booted + CLAIM_TTL / 2,
            "booted at {booted}, its claim not committed at {} (node 2 at {})",
            net.committed[0],
            net.committed[2]
        );
    }
    assert!(
        dropped.get() >= 2,
        "the claim went out {} times",
        dropped.get()
    );
}
