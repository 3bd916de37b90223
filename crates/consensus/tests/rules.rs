//! One test (or more) per rule of Algorithm 1, driving the core through its public API.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_consensus::*;
use core::time::Duration;

const H: Height = Height(5);

fn value(b: u8) -> ValueId {
    ValueId([b; 32])
}

fn set(powers: &[u64]) -> ValidatorSet {
    ValidatorSet::genesis(
        powers
            .iter()
            .enumerate()
            .map(|(i, p)| Validator::new(vec![i as u8], *p))
            .collect(),
    )
    .unwrap()
}

/// A core for the validator at `me` in a set of equal-power validators, started at `H`, and the
/// actions of starting.
struct Fixture {
    core: Consensus,
    n: u32,
}

/// Hands `event` to the core the way a driver does: the node's own votes come back to it as
/// events. Returns every action, including those caused by the looped-back votes.
fn drive(core: &mut Consensus, event: Event) -> Vec<Action> {
    let mut all = Vec::new();
    let mut queue = vec![event];
    while let Some(e) = queue.pop() {
        let out = core.handle(e);
        for a in &out {
            if let Action::Vote(v) = a {
                queue.push(Event::Vote(Signed::new(*v, Signature(vec![0xee]))));
            }
        }
        all.extend(out);
    }
    all
}

impl Fixture {
    fn handle(&mut self, event: Event) -> Vec<Action> {
        drive(&mut self.core, event)
    }

    /// The proposer of round 0 when `proposer`, otherwise a validator that proposes none of
    /// rounds 0–2 (so multi-round tests see other validators' proposals).
    fn role(n: u32, proposer: bool) -> (Self, Vec<Action>) {
        let s = set(&vec![1; n as usize]);
        let mut probe = Consensus::new(Config::default(), None);
        probe.handle(Event::NewHeight {
            height: H,
            validators: s.clone(),
        });
        let early: Vec<u32> = (0..3)
            .map(|r| probe.proposer(Round(r)).unwrap().0)
            .collect();
        let me = if proposer {
            early[0]
        } else {
            (0..n)
                .find(|i| !early.contains(i))
                .expect("a seat that proposes none of rounds 0-2")
        };
        let mut core = Consensus::new(Config::default(), Some(vec![me as u8]));
        let actions = drive(
            &mut core,
            Event::NewHeight {
                height: H,
                validators: s,
            },
        );
        (Fixture { core, n }, actions)
    }

    fn weighted(powers: &[u64], me: u8) -> (Self, Vec<Action>) {
        let mut core = Consensus::new(Config::default(), Some(vec![me]));
        let actions = drive(
            &mut core,
            Event::NewHeight {
                height: H,
                validators: set(powers),
            },
        );
        (
            Fixture {
                core,
                n: powers.len() as u32,
            },
            actions,
        )
    }

    fn me(&self) -> ValidatorIndex {
        self.core.me().unwrap()
    }

    fn proposer(&mut self, r: u32) -> ValidatorIndex {
        self.core.proposer(Round(r)).unwrap()
    }

    fn others(&self) -> Vec<ValidatorIndex> {
        (0..self.n)
            .map(ValidatorIndex)
            .filter(|i| *i != self.me())
            .collect()
    }

    fn proposal(
        &mut self,
        r: u32,
        v: ValueId,
        pol: Option<u32>,
        validity: Validity,
    ) -> Vec<Action> {
        let proposer = self.proposer(r);
        self.handle(Event::Proposal {
            proposal: Signed::new(
                Proposal {
                    height: H,
                    round: Round(r),
                    value: v,
                    pol_round: pol.map(Round),
                    proposer,
                },
                Signature(vec![1]),
            ),
            validity,
        })
    }

    fn vote(
        &mut self,
        kind: VoteKind,
        r: u32,
        v: Option<ValueId>,
        from: ValidatorIndex,
    ) -> Vec<Action> {
        self.handle(Event::Vote(signed_vote(kind, H, r, v, from)))
    }

    /// Votes from the given validators; returns all actions.
    fn votes(
        &mut self,
        kind: VoteKind,
        r: u32,
        v: Option<ValueId>,
        from: &[ValidatorIndex],
    ) -> Vec<Action> {
        from.iter()
            .flat_map(|i| self.vote(kind, r, v, *i))
            .collect()
    }

    fn timeout(&mut self, kind: TimeoutKind, r: u32) -> Vec<Action> {
        self.handle(Event::Timeout(Timeout {
            height: H,
            round: Round(r),
            kind,
        }))
    }
}

fn signed_vote(
    kind: VoteKind,
    h: Height,
    r: u32,
    v: Option<ValueId>,
    from: ValidatorIndex,
) -> SignedVote {
    Signed::new(
        Vote {
            kind,
            height: h,
            round: Round(r),
            value: v,
            validator: from,
        },
        Signature(vec![from.0 as u8]),
    )
}

fn cast(actions: &[Action]) -> Vec<(VoteKind, u32, Option<ValueId>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Vote(v) => Some((v.kind, v.round.0, v.value)),
            _ => None,
        })
        .collect()
}

fn timeouts(actions: &[Action]) -> Vec<(TimeoutKind, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ScheduleTimeout { timeout, .. } => Some((timeout.kind, timeout.round.0)),
            _ => None,
        })
        .collect()
}

fn decisions(actions: &[Action]) -> Vec<&Decision> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Decide(d) => Some(d),
            _ => None,
        })
        .collect()
}

// ---- Lines 11–21: StartRound -------------------------------------------------------------

#[test]
fn start_round_as_proposer_asks_for_a_value_and_proposes_it() {
    let (mut f, start) = Fixture::role(4, true);
    assert!(start.contains(&Action::GetValue {
        height: H,
        round: Round(0)
    }));
    let out = f.core.handle(Event::ProposeValue {
        height: H,
        round: Round(0),
        value: value(7),
    });
    assert_eq!(
        out,
        vec![Action::Propose(Proposal {
            height: H,
            round: Round(0),
            value: value(7),
            pol_round: None,
            proposer: f.me(),
        })]
    );
    // A second answer for the same round is not a second proposal.
    let again = f.core.handle(Event::ProposeValue {
        height: H,
        round: Round(0),
        value: value(8),
    });
    assert!(again.is_empty());
}

#[test]
fn start_round_as_non_proposer_schedules_propose_timeout_and_asks_nothing() {
    let (_, start) = Fixture::role(4, false);
    assert_eq!(timeouts(&start), vec![(TimeoutKind::Propose, 0)]);
    assert!(!start.iter().any(|a| matches!(a, Action::GetValue { .. })));
}

#[test]
fn late_value_for_an_old_round_is_not_proposed() {
    let (mut f, _) = Fixture::role(4, true);
    f.timeout(TimeoutKind::Propose, 0);
    let out = f.core.handle(Event::ProposeValue {
        height: H,
        round: Round(0),
        value: value(7),
    });
    assert!(out.is_empty());
}

// ---- Lines 22–27 ------------------------------------------------------------------------------

#[test]
fn prevotes_a_valid_proposal_when_not_locked() {
    let (mut f, _) = Fixture::role(4, false);
    let out = f.proposal(0, value(1), None, Validity::Valid);
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 0, Some(value(1)))]);
    assert_eq!(f.core.step(), Some(Step::Prevote));
}

#[test]
fn prevotes_nil_for_an_invalid_proposal() {
    let (mut f, _) = Fixture::role(4, false);
    let out = f.proposal(0, value(1), None, Validity::Invalid);
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 0, None)]);
}

#[test]
fn ignores_a_proposal_from_a_validator_that_is_not_the_proposer() {
    let (mut f, _) = Fixture::role(4, false);
    let wrong = ValidatorIndex((f.proposer(0).0 + 1) % 4);
    let out = f.core.handle(Event::Proposal {
        proposal: Signed::new(
            Proposal {
                height: H,
                round: Round(0),
                value: value(1),
                pol_round: None,
                proposer: wrong,
            },
            Signature(vec![]),
        ),
        validity: Validity::Valid,
    });
    assert!(cast(&out).is_empty());
    assert_eq!(f.core.step(), Some(Step::Propose));
}

/// Locks on value 1 in round 0, then times out round 0 so round 1 starts with the lock.
fn locked_on_1_in_round_0() -> Fixture {
    let (mut f, _) = Fixture::role(4, false);
    f.proposal(0, value(1), None, Validity::Valid);
    let others = f.others();
    let out = f.votes(VoteKind::Prevote, 0, Some(value(1)), &others[..2]);
    assert_eq!(cast(&out), vec![(VoteKind::Precommit, 0, Some(value(1)))]);
    assert_eq!(f.core.locked(), Some((Round(0), value(1))));
    f.votes(VoteKind::Precommit, 0, None, &others);
    f.timeout(TimeoutKind::Precommit, 0);
    assert_eq!(f.core.round(), Some(Round(1)));
    f
}

#[test]
fn prevotes_nil_for_another_value_while_locked() {
    let mut f = locked_on_1_in_round_0();
    assert_ne!(f.proposer(1), f.me());
    let out = f.proposal(1, value(2), None, Validity::Valid);
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 1, None)]);
}

#[test]
fn prevotes_the_locked_value_when_it_is_proposed_again() {
    let mut f = locked_on_1_in_round_0();
    assert_ne!(f.proposer(1), f.me());
    let out = f.proposal(1, value(1), None, Validity::Valid);
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 1, Some(value(1)))]);
}

// ---- Lines 28–33 -------------------------------------------------------------------------

#[test]
fn prevotes_a_pol_proposal_whose_polka_is_not_older_than_the_lock() {
    let mut f = locked_on_1_in_round_0();
    // Round 1 ends without a decision; round 2 re-proposes value 2 with a polka from round 1.
    let others = f.others();
    f.timeout(TimeoutKind::Propose, 1);
    f.votes(VoteKind::Prevote, 1, Some(value(2)), &others);
    f.votes(VoteKind::Precommit, 1, None, &others);
    f.timeout(TimeoutKind::Precommit, 1);
    assert_eq!(f.core.round(), Some(Round(2)));
    assert_ne!(f.proposer(2), f.me());
    let out = f.proposal(2, value(2), Some(1), Validity::Valid);
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 2, Some(value(2)))]);
}

#[test]
fn prevotes_nil_for_a_pol_proposal_older_than_the_lock_on_another_value() {
    // Lock on 1 in round 1 while a polka for 2 exists in round 0.
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.timeout(TimeoutKind::Propose, 0);
    f.votes(VoteKind::Prevote, 0, Some(value(2)), &others);
    f.votes(VoteKind::Precommit, 0, None, &others);
    f.timeout(TimeoutKind::Precommit, 0);
    assert_ne!(f.proposer(1), f.me());
    f.proposal(1, value(1), None, Validity::Valid);
    f.votes(VoteKind::Prevote, 1, Some(value(1)), &others[..2]);
    assert_eq!(f.core.locked(), Some((Round(1), value(1))));
    f.votes(VoteKind::Precommit, 1, None, &others);
    f.timeout(TimeoutKind::Precommit, 1);
    assert_ne!(f.proposer(2), f.me());
    let out = f.proposal(2, value(2), Some(0), Validity::Valid);
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 2, None)]);
}

#[test]
fn waits_for_the_polka_before_prevoting_a_pol_proposal() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.timeout(TimeoutKind::Propose, 0);
    f.votes(VoteKind::Precommit, 0, None, &others);
    f.timeout(TimeoutKind::Precommit, 0);
    assert_ne!(f.proposer(1), f.me());
    let out = f.proposal(1, value(3), Some(0), Validity::Valid);
    assert!(cast(&out).is_empty(), "no polka yet in round 0");
    let out = f.votes(VoteKind::Prevote, 0, Some(value(3)), &others);
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 1, Some(value(3)))]);
}

#[test]
fn ignores_a_proposal_whose_pol_round_is_not_below_its_round() {
    let (mut f, _) = Fixture::role(4, false);
    let out = f.proposal(0, value(1), Some(0), Validity::Valid);
    assert!(cast(&out).is_empty());
}

// ---- Lines 34–35 -------------------------------------------------------------------------

#[test]
fn schedules_the_prevote_timeout_once_on_a_mixed_prevote_quorum() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.proposal(0, value(1), None, Validity::Valid);
    let a = f.vote(VoteKind::Prevote, 0, None, others[0]);
    assert!(timeouts(&a).is_empty());
    let b = f.vote(VoteKind::Prevote, 0, Some(value(2)), others[1]);
    assert_eq!(timeouts(&b), vec![(TimeoutKind::Prevote, 0)]);
    let c = f.vote(VoteKind::Prevote, 0, Some(value(3)), others[2]);
    assert!(timeouts(&c).is_empty(), "for the first time only");
}

// ---- Lines 36–43 -------------------------------------------------------------------------

#[test]
fn sets_valid_value_without_locking_when_the_polka_arrives_after_precommitting() {
    // Seven validators: quorum is 5. We precommit nil after a prevote timeout, then the
    // proposal and a polka for it arrive: validValue moves, the lock does not, no new vote.
    let (mut g, _) = Fixture::role(7, false);
    let others = g.others();
    g.timeout(TimeoutKind::Propose, 0); // own nil prevote
    g.votes(VoteKind::Prevote, 0, Some(value(4)), &others[..4]);
    let out = g.timeout(TimeoutKind::Prevote, 0);
    assert_eq!(cast(&out), vec![(VoteKind::Precommit, 0, None)]);
    g.proposal(0, value(4), None, Validity::Valid);
    assert_eq!(g.core.valid(), None, "4 of 7 is not a polka");
    let out = g.vote(VoteKind::Prevote, 0, Some(value(4)), others[4]);
    assert!(cast(&out).is_empty(), "no second precommit");
    assert_eq!(g.core.locked(), None);
    assert_eq!(g.core.valid(), Some((Round(0), value(4))));
}

#[test]
fn does_not_lock_on_a_polka_for_an_invalid_value() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.proposal(0, value(1), None, Validity::Invalid);
    let out = f.votes(VoteKind::Prevote, 0, Some(value(1)), &others);
    assert!(!cast(&out).contains(&(VoteKind::Precommit, 0, Some(value(1)))));
    assert_eq!(f.core.locked(), None);
}

// ---- Lines 44–46 -------------------------------------------------------------------------

#[test]
fn precommits_nil_on_a_nil_polka() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.timeout(TimeoutKind::Propose, 0);
    let out = f.votes(VoteKind::Prevote, 0, None, &others[..2]);
    assert_eq!(cast(&out), vec![(VoteKind::Precommit, 0, None)]);
}

// ---- Lines 47–48 -------------------------------------------------------------------------

#[test]
fn schedules_the_precommit_timeout_once_on_a_mixed_precommit_quorum_in_any_step() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    assert_eq!(f.core.step(), Some(Step::Propose));
    f.vote(VoteKind::Precommit, 0, None, others[0]);
    f.vote(VoteKind::Precommit, 0, Some(value(9)), others[1]);
    let out = f.vote(VoteKind::Precommit, 0, Some(value(8)), others[2]);
    assert_eq!(timeouts(&out), vec![(TimeoutKind::Precommit, 0)]);
    let more = f.vote(VoteKind::Precommit, 0, Some(value(8)), others[2]);
    assert!(timeouts(&more).is_empty());
}

// ---- Lines 49–54 -------------------------------------------------------------------------

#[test]
fn decides_on_a_proposal_with_a_precommit_quorum() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.proposal(0, value(1), None, Validity::Valid);
    let out = f.votes(VoteKind::Precommit, 0, Some(value(1)), &others);
    let d = decisions(&out);
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].height, d[0].round, d[0].value),
        (H, Round(0), value(1))
    );
    assert_eq!(d[0].proposal.message.value, value(1));
    assert!(d[0]
        .precommits
        .windows(2)
        .all(|w| w[0].message.validator < w[1].message.validator));
    assert_eq!(f.core.step(), Some(Step::Decided));
    // Decided: nothing else happens at this height.
    assert!(f.timeout(TimeoutKind::Precommit, 0).is_empty());
}

#[test]
fn decides_for_an_earlier_round_while_in_a_later_one() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.proposal(0, value(1), None, Validity::Valid); // own prevote for 1
    f.timeout(TimeoutKind::Prevote, 0);
    // f+1 validators are in round 1 already: we follow them there.
    f.votes(VoteKind::Prevote, 1, None, &others[..2]);
    assert_eq!(f.core.round(), Some(Round(1)));
    // Round 0's precommits for value 1 arrive late and still decide round 0.
    let out = f.votes(VoteKind::Precommit, 0, Some(value(1)), &others);
    let d = decisions(&out);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].round, d[0].value), (Round(0), value(1)));
}

#[test]
fn never_decides_an_invalid_value_even_with_a_precommit_quorum() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.proposal(0, value(1), None, Validity::Invalid);
    let out = f.votes(VoteKind::Precommit, 0, Some(value(1)), &others);
    assert!(decisions(&out).is_empty());
}

#[test]
fn does_not_decide_without_the_proposal_then_decides_when_it_arrives() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    let out = f.votes(VoteKind::Precommit, 0, Some(value(1)), &others);
    assert!(decisions(&out).is_empty());
    let out = f.proposal(0, value(1), None, Validity::Valid);
    assert_eq!(decisions(&out).len(), 1);
}

#[test]
fn a_validator_with_most_of_the_power_and_one_other_make_a_quorum() {
    // Powers 5,1,1,1 (total 8): 5+1 = 6 > 16/3, while 5 alone is not.
    let (mut f, _) = Fixture::weighted(&[5, 1, 1, 1], 1);
    let big = ValidatorIndex(0);
    let small = ValidatorIndex(2);
    f.proposal(0, value(1), None, Validity::Valid);
    let out = f.vote(VoteKind::Precommit, 0, Some(value(1)), big);
    assert!(decisions(&out).is_empty());
    let out = f.vote(VoteKind::Precommit, 0, Some(value(1)), small);
    assert_eq!(decisions(&out).len(), 1);
}

// ---- Lines 55–56 -------------------------------------------------------------------------

#[test]
fn skips_to_a_higher_round_on_f_plus_one_messages_but_not_on_f() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.vote(VoteKind::Prevote, 3, None, others[0]);
    assert_eq!(f.core.round(), Some(Round(0)), "one of four is not f+1");
    let out = f.vote(VoteKind::Precommit, 3, None, others[1]);
    assert_eq!(f.core.round(), Some(Round(3)));
    assert_eq!(f.core.step(), Some(Step::Propose));
    assert!(timeouts(&out).contains(&(TimeoutKind::Propose, 3)));
}

#[test]
fn a_byzantine_validator_cannot_occupy_unbounded_future_rounds() {
    let (mut f, _) = Fixture::role(4, false);
    let byz = f.others()[0];
    for r in 1..1000 {
        f.vote(VoteKind::Prevote, r, None, byz);
    }
    // Only the first MAX_FUTURE_ROUNDS_PER_VALIDATOR future rounds were kept: an honest
    // validator joining in round 1 together with the byzantine one makes f+1 there.
    let honest = f.others()[1];
    f.vote(VoteKind::Prevote, 1, None, honest);
    assert_eq!(f.core.round(), Some(Round(1)));
    let (mut g, _) = Fixture::role(4, false);
    let byz = g.others()[0];
    for r in 1..1000 {
        g.vote(VoteKind::Prevote, r, None, byz);
    }
    let honest = g.others()[1];
    g.vote(VoteKind::Prevote, 500, None, honest);
    assert_eq!(
        g.core.round(),
        Some(Round(0)),
        "round 500 was never stored for the byzantine one"
    );
}

// ---- Lines 57–67: timeouts -------------------------------------------------------------

#[test]
fn timeout_propose_prevotes_nil_only_in_its_own_round_and_step() {
    let (mut f, _) = Fixture::role(4, false);
    assert!(
        cast(&f.timeout(TimeoutKind::Propose, 1)).is_empty(),
        "other round"
    );
    let out = f.timeout(TimeoutKind::Propose, 0);
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 0, None)]);
    assert!(
        cast(&f.timeout(TimeoutKind::Propose, 0)).is_empty(),
        "already prevoted"
    );
}

#[test]
fn timeout_prevote_precommits_nil() {
    let (mut f, _) = Fixture::role(4, false);
    assert!(
        cast(&f.timeout(TimeoutKind::Prevote, 0)).is_empty(),
        "not in prevote step yet"
    );
    f.timeout(TimeoutKind::Propose, 0);
    let out = f.timeout(TimeoutKind::Prevote, 0);
    assert_eq!(cast(&out), vec![(VoteKind::Precommit, 0, None)]);
}

#[test]
fn timeout_precommit_starts_the_next_round_with_a_longer_propose_timeout() {
    let (mut f, _) = Fixture::role(4, false);
    let out = f.timeout(TimeoutKind::Precommit, 0);
    assert_eq!(f.core.round(), Some(Round(1)));
    let after: Vec<Duration> = out
        .iter()
        .filter_map(|a| match a {
            Action::ScheduleTimeout { after, .. } => Some(*after),
            _ => None,
        })
        .collect();
    assert_eq!(after, vec![Duration::from_millis(3500)]);
    assert!(
        f.timeout(TimeoutKind::Precommit, 0).is_empty(),
        "stale timeout"
    );
}

#[test]
fn timeouts_grow_linearly_with_the_round() {
    let c = Config::default();
    assert_eq!(
        c.timeout(TimeoutKind::Propose, Round(0)),
        Duration::from_millis(3000)
    );
    assert_eq!(
        c.timeout(TimeoutKind::Prevote, Round(4)),
        Duration::from_millis(3000)
    );
    assert_eq!(
        c.timeout(TimeoutKind::Precommit, Round(2)),
        Duration::from_millis(2000)
    );
    assert_eq!(
        c.timeout(TimeoutKind::Precommit, Round(u32::MAX)),
        Duration::from_millis(1000) + Duration::from_millis(500) * u32::MAX
    );
}

// ---- Lines 15–16: re-proposing the valid value ------------------------------------------

#[test]
fn proposer_reproposes_its_valid_value_with_its_valid_round() {
    // Find a 4-validator seat that is not proposer in round 0 but is in round 1.
    for seat in 0..4u8 {
        let mut core = Consensus::new(Config::default(), Some(vec![seat]));
        drive(
            &mut core,
            Event::NewHeight {
                height: H,
                validators: set(&[1, 1, 1, 1]),
            },
        );
        let me = core.me().unwrap();
        let p0 = core.proposer(Round(0)).unwrap();
        let p1 = core.proposer(Round(1)).unwrap();
        if p0 == me || p1 != me {
            continue;
        }
        let others: Vec<_> = (0..4).map(ValidatorIndex).filter(|i| *i != me).collect();
        drive(
            &mut core,
            Event::Proposal {
                proposal: Signed::new(
                    Proposal {
                        height: H,
                        round: Round(0),
                        value: value(6),
                        pol_round: None,
                        proposer: p0,
                    },
                    Signature(vec![]),
                ),
                validity: Validity::Valid,
            },
        );
        for i in &others[..2] {
            drive(
                &mut core,
                Event::Vote(signed_vote(VoteKind::Prevote, H, 0, Some(value(6)), *i)),
            );
        }
        assert_eq!(core.valid(), Some((Round(0), value(6))));
        for i in &others {
            drive(
                &mut core,
                Event::Vote(signed_vote(VoteKind::Precommit, H, 0, None, *i)),
            );
        }
        let out = drive(
            &mut core,
            Event::Timeout(Timeout {
                height: H,
                round: Round(0),
                kind: TimeoutKind::Precommit,
            }),
        );
        assert!(out.contains(&Action::Propose(Proposal {
            height: H,
            round: Round(1),
            value: value(6),
            pol_round: Some(Round(0)),
            proposer: me,
        })));
        assert!(!out.iter().any(|a| matches!(a, Action::GetValue { .. })));
        return;
    }
    panic!("no seat is proposer of round 1 only");
}

// ---- Input hygiene -----------------------------------------------------------------------

#[test]
fn ignores_votes_from_outside_the_set_and_from_other_heights() {
    let (mut f, _) = Fixture::role(4, false);
    let stranger = ValidatorIndex(4);
    f.proposal(0, value(1), None, Validity::Valid);
    let mut out = f.vote(VoteKind::Precommit, 0, Some(value(1)), stranger);
    for i in f.others() {
        out.extend(f.core.handle(Event::Vote(signed_vote(
            VoteKind::Precommit,
            Height(6),
            0,
            Some(value(1)),
            i,
        ))));
    }
    assert!(decisions(&out).is_empty());
    assert_eq!(f.core.step(), Some(Step::Prevote));
}

#[test]
fn reports_an_equivocation_once_and_counts_only_the_first_vote() {
    let (mut f, _) = Fixture::role(4, false);
    let byz = f.others()[0];
    f.vote(VoteKind::Prevote, 0, Some(value(1)), byz);
    let out = f.vote(VoteKind::Prevote, 0, Some(value(2)), byz);
    let evidence: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Evidence(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].first.message.value, Some(value(1)));
    assert_eq!(evidence[0].second.message.value, Some(value(2)));
    let again = f.vote(VoteKind::Prevote, 0, None, byz);
    assert!(!again.iter().any(|a| matches!(a, Action::Evidence(_))));
    // The same vote twice is a duplicate, not evidence.
    let dup = f.vote(VoteKind::Prevote, 0, Some(value(1)), byz);
    assert!(dup.is_empty());
}

#[test]
fn a_stale_new_height_does_not_reset_the_height_in_progress() {
    let mut f = locked_on_1_in_round_0();
    let out = f.core.handle(Event::NewHeight {
        height: H,
        validators: set(&[1, 1, 1, 1]),
    });
    assert!(out.is_empty());
    assert_eq!(f.core.locked(), Some((Round(0), value(1))));
    f.core.handle(Event::NewHeight {
        height: H.next(),
        validators: set(&[1, 1, 1, 1]),
    });
    assert_eq!(f.core.locked(), None);
    assert_eq!(f.core.round(), Some(Round(0)));
}

#[test]
fn a_follower_never_votes_or_proposes_but_decides() {
    let mut core = Consensus::new(Config::default(), None);
    let mut out = drive(
        &mut core,
        Event::NewHeight {
            height: H,
            validators: set(&[1, 1, 1, 1]),
        },
    );
    let p = core.proposer(Round(0)).unwrap();
    out.extend(drive(
        &mut core,
        Event::Proposal {
            proposal: Signed::new(
                Proposal {
                    height: H,
                    round: Round(0),
                    value: value(1),
                    pol_round: None,
                    proposer: p,
                },
                Signature(vec![]),
            ),
            validity: Validity::Valid,
        },
    ));
    for i in 0..4 {
        out.extend(drive(
            &mut core,
            Event::Vote(signed_vote(
                VoteKind::Precommit,
                H,
                0,
                Some(value(1)),
                ValidatorIndex(i),
            )),
        ));
    }
    assert!(cast(&out).is_empty());
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::Propose(_) | Action::GetValue { .. })));
    assert_eq!(decisions(&out).len(), 1);
}

#[test]
fn events_before_the_first_height_are_ignored() {
    let mut core = Consensus::new(Config::default(), Some(vec![0]));
    assert!(drive(
        &mut core,
        Event::Vote(signed_vote(
            VoteKind::Prevote,
            H,
            0,
            None,
            ValidatorIndex(0)
        ))
    )
    .is_empty());
    assert!(drive(
        &mut core,
        Event::Timeout(Timeout {
            height: H,
            round: Round(0),
            kind: TimeoutKind::Propose
        })
    )
    .is_empty());
    assert_eq!(core.height(), None);
}

#[test]
fn equivocating_proposer_cannot_store_unbounded_proposals() {
    let (mut f, _) = Fixture::role(4, false);
    for b in 0..50u8 {
        f.proposal(0, value(b), None, Validity::Valid);
    }
    let others = f.others();
    // Value 49 was never stored, so a precommit quorum for it cannot decide.
    let out = f.votes(VoteKind::Precommit, 0, Some(value(49)), &others);
    assert!(decisions(&out).is_empty());
    // Value 3 was stored (within the bound).
    let (mut g, _) = Fixture::role(4, false);
    for b in 0..50u8 {
        g.proposal(0, value(b), None, Validity::Valid);
    }
    let others = g.others();
    let out = g.votes(VoteKind::Precommit, 0, Some(value(3)), &others);
    assert_eq!(
        decisions(&out).len(),
        (MAX_PROPOSALS_PER_ROUND > 3) as usize
    );
}

// ---- Quorum certificates -------------------------------------------------------------------

fn certificate(kind: VoteKind, r: u32, v: Option<ValueId>, from: &[ValidatorIndex]) -> Event {
    Event::Certificate(Certificate {
        kind,
        height: H,
        round: Round(r),
        value: v,
        votes: from
            .iter()
            .map(|i| signed_vote(kind, H, r, v, *i))
            .collect(),
    })
}

#[test]
fn a_commit_certificate_decides_even_where_an_equivocator_voted_differently_first() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.proposal(0, value(1), None, Validity::Valid);
    // The equivocator's precommit for another value arrives first ...
    f.vote(VoteKind::Precommit, 0, Some(value(2)), others[0]);
    // ... so the two honest precommits for value 1 plus ours are only 2 + 0 counted here.
    let out = f.votes(VoteKind::Precommit, 0, Some(value(1)), &others[1..]);
    assert!(decisions(&out).is_empty());
    let out = f.handle(certificate(VoteKind::Precommit, 0, Some(value(1)), &others));
    let d = decisions(&out);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].value, value(1));
    assert_eq!(d[0].precommits.len(), 3, "the certificate is the proof");
}

#[test]
fn a_polka_certificate_lets_a_pol_proposal_through() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.timeout(TimeoutKind::Propose, 0);
    f.vote(VoteKind::Prevote, 0, None, others[0]); // first-seen nil from the equivocator
    f.votes(VoteKind::Precommit, 0, None, &others);
    f.timeout(TimeoutKind::Precommit, 0);
    assert_ne!(f.proposer(1), f.me());
    let out = f.proposal(1, value(3), Some(0), Validity::Valid);
    assert!(cast(&out).is_empty());
    let out = f.handle(certificate(VoteKind::Prevote, 0, Some(value(3)), &others));
    assert_eq!(cast(&out), vec![(VoteKind::Prevote, 1, Some(value(3)))]);
}

#[test]
fn certificates_without_a_quorum_or_with_foreign_votes_are_ignored() {
    let (mut f, _) = Fixture::role(4, false);
    let others = f.others();
    f.proposal(0, value(1), None, Validity::Valid);
    let short = certificate(VoteKind::Precommit, 0, Some(value(1)), &others[..2]);
    let repeated = certificate(
        VoteKind::Precommit,
        0,
        Some(value(1)),
        &[others[0], others[0], others[1]],
    );
    let outsider = certificate(
        VoteKind::Precommit,
        0,
        Some(value(1)),
        &[others[0], others[1], ValidatorIndex(9)],
    );
    let mut mixed = certificate(VoteKind::Precommit, 0, Some(value(1)), &others);
    if let Event::Certificate(c) = &mut mixed {
        c.votes[2].message.round = Round(1);
    }
    let mut wrong_height = certificate(VoteKind::Precommit, 0, Some(value(1)), &others);
    if let Event::Certificate(c) = &mut wrong_height {
        c.height = Height(99);
    }
    for bad in [short, repeated, outsider, mixed, wrong_height] {
        let out = f.handle(bad);
        assert!(decisions(&out).is_empty());
    }
    assert_eq!(f.core.step(), Some(Step::Prevote));
}

#[test]
fn certificates_exported_by_one_core_are_accepted_by_another() {
    let (mut a, _) = Fixture::role(4, false);
    let others = a.others();
    a.proposal(0, value(5), None, Validity::Valid);
    a.votes(VoteKind::Prevote, 0, Some(value(5)), &others);
    let exported = a.core.certificates();
    assert!(exported
        .iter()
        .any(|c| c.kind == VoteKind::Prevote && c.value == Some(value(5)) && c.votes.len() >= 3));
    let (mut b, _) = Fixture::role(4, false);
    b.proposal(0, value(5), None, Validity::Valid);
    for c in exported {
        b.handle(Event::Certificate(c));
    }
    assert_eq!(b.core.locked(), Some((Round(0), value(5))));
}
