//! The simulator catches planted bugs: each mutant of `bulwark_consensus::mutation`, planted in
//! the real core or node, must make some seed of engine mode violate an invariant, under the
//! byzantine behaviour that exercises its rule; the one equivalent under the fault assumption
//! must not. Run by `cargo xtask mutants` (it needs the `mutants` feature).
#![cfg(feature = "mutants")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_consensus::mutation::{Mutant, MUTANTS};
use bulwark_engine_sim::byzantine::{behaviour_name, Behaviour};
use bulwark_engine_sim::world::EngineSimConfig;
use bulwark_engine_sim::{replay_command, run};

/// Seeds tried per behaviour before a mutant is declared alive.
const SEEDS: u64 = 150;

/// Seeds tried for the equivalent mutant (which survives them all).
const EQUIVALENT_SEEDS: u64 = 40;

/// The networks (validators, byzantine, behaviour) that exercise each mutant's rule, and
/// whether the mutant is equivalent under the fault assumption (then it must survive).
fn plan(m: Mutant) -> (Vec<(usize, usize, Behaviour, bool)>, bool) {
    use Behaviour::*;
    match m {
        // Not in MUTANTS (no byzantine behaviour exercises it): the host's disk faults do,
        // in `signing_without_a_claim_is_caught_by_the_hosts_disk_faults` below, and the
        // rollback and clone tests of `crates/node/tests/instances.rs` plant it too.
        Mutant::SignWithoutClaim => (vec![], false),
        // Not in MUTANTS either: the host's restarts exercise them, in
        // `the_instance_rules_liveness_bugs_are_caught_by_the_hosts_restarts` below.
        Mutant::ClaimsLeftOut | Mutant::BlockSyncOnStuckTicksOnly => (vec![], false),
        Mutant::IgnoreLock => (
            vec![(4, 1, FreshProposal, false), (4, 1, Mixed, false)],
            false,
        ),
        // Two polkas of one height: byzantine validators withhold precommits and re-propose the
        // older one, in a long stormy period (many multi-round heights).
        Mutant::IgnoreLockWithPol => (vec![(4, 1, StalePol, true), (7, 2, StalePol, true)], false),
        Mutant::MissingPolAsPresent => (vec![(4, 1, FakePol, false)], false),
        Mutant::CountEquivocatorsSecondVote => (vec![(4, 1, DoubleVote, false)], false),
        Mutant::RoundSkipOnOneValidator => (vec![(4, 1, FutureRoundVotes, false)], false),
        Mutant::LockedRoundStrictlyBelowPol => {
            (vec![(7, 2, StalePol, true), (4, 1, FakePol, false)], true)
        }
        Mutant::KeepMismatchedPrecommit => (vec![(4, 1, RandomPrecommit, false)], false),
        Mutant::AcceptAnyBlockTime => (
            vec![(4, 1, MaxTime, false), (4, 1, FutureTime, false)],
            false,
        ),
        // Round 2²⁴ costs about a second to a node that steps the proposer that far.
        Mutant::AnyRoundProposal => (vec![(4, 1, LargeRound, false)], false),
        Mutant::UncheckedEvidence => (vec![(4, 1, ForgedEvidence, false)], false),
        // Future-round proposals and votes arrive first and fill the list.
        Mutant::RelayFirstComeOnly => (
            vec![(4, 1, ProposalFlood, true), (4, 1, Mixed, true)],
            false,
        ),
    }
}

/// The first seed (and network) under which `m` breaks an invariant.
fn first_violation(
    m: Mutant,
    networks: &[(usize, usize, Behaviour, bool)],
    seeds: u64,
) -> Option<String> {
    for &(validators, byzantine, b, stormy) in networks {
        let mut c = EngineSimConfig::new(validators, byzantine);
        c.behaviour = Some(b);
        c.stormy = stormy;
        c.mutant = Some(m);
        c.stop_at_first_violation = true;
        c.cpu_budget_ms = if b == Behaviour::LargeRound {
            200
        } else {
            1_000
        };
        for seed in 0..seeds {
            let o = run(seed, &c).unwrap();
            if let Some(v) = o.violations.first() {
                return Some(format!(
                    "{} seed {seed}: {v} (replay: {})",
                    behaviour_name(b),
                    replay_command(seed, &c)
                ));
            }
        }
    }
    None
}

#[test]
fn every_planted_mutant_is_caught_except_the_equivalent_one() {
    let mut caught = 0;
    let mut wrong = Vec::new();
    // `BULWARK_MUTANT=Name` runs one (for working on it).
    let only = std::env::var("BULWARK_MUTANT").ok();
    let chosen: Vec<Mutant> = MUTANTS
        .into_iter()
        .filter(|m| only.as_ref().is_none_or(|o| *o == format!("{m:?}")))
        .collect();
    // The mutants are independent worlds (each run plants its mutant in its own thread): one
    // worker per core takes the next.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&m) = chosen.get(i) else { break };
                let (behaviours, equivalent) = plan(m);
                let seeds = if equivalent { EQUIVALENT_SEEDS } else { SEEDS };
                let found = first_violation(m, &behaviours, seeds);
                results.lock().unwrap().push((i, found));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    for (i, found) in results {
        let m = chosen[i];
        let (behaviours, equivalent) = plan(m);
        let seeds = if equivalent { EQUIVALENT_SEEDS } else { SEEDS };
        match (&found, equivalent) {
            (Some(how), false) => {
                caught += 1;
                println!("mutant {m:?}: caught by {how}");
            }
            (None, true) => println!(
                "mutant {m:?}: survives, as it must (equivalent under the fault assumption)"
            ),
            (None, false) => {
                println!("mutant {m:?}: SURVIVED {seeds} seeds of each of {behaviours:?}");
                wrong.push(m);
            }
            (Some(how), true) => {
                println!("mutant {m:?}: an equivalent mutant broke an invariant: {how}");
                wrong.push(m);
            }
        }
    }
    let expected = MUTANTS
        .iter()
        .filter(|m| !plan(**m).1)
        .filter(|m| only.as_ref().is_none_or(|o| *o == format!("{m:?}")))
        .count();
    println!("mutants: caught {caught} of {expected}");
    assert!(wrong.is_empty(), "mutants that did not behave: {wrong:?}");
}

/// The instance rule's planted bug (an instance signs whatever the register of claims says)
/// must be caught by the host's disk faults alone: rolled-back, wiped and cloned disks of
/// honest validators, no byzantine one.
#[test]
fn signing_without_a_claim_is_caught_by_the_hosts_disk_faults() {
    let mut c = EngineSimConfig::new(4, 0);
    c.mutant = Some(Mutant::SignWithoutClaim);
    c.stop_at_first_violation = true;
    let caught = (0..SEEDS).find_map(|seed| {
        let o = run(seed, &c).unwrap();
        o.violations.first().map(|v| {
            format!(
                "seed {seed} ({} disk faults, {} clones): {v} (replay: {})",
                o.disk_faults,
                o.clones,
                replay_command(seed, &c)
            )
        })
    });
    println!("mutant SignWithoutClaim: caught by {caught:?}");
    assert!(caught.is_some(), "SignWithoutClaim survived {SEEDS} seeds");
}

/// The instance rule's liveness bugs (claims never reach a block; block sync that trails a
/// fast chain) must be caught by the checker's demand that a restarted honest validator
/// signs again within a bound, with restarts by the host alone and no byzantine validator.
#[test]
fn the_instance_rules_liveness_bugs_are_caught_by_the_hosts_restarts() {
    use bulwark_engine_sim::checker::Violation;
    let only = std::env::var("BULWARK_MUTANT").ok();
    for m in [Mutant::ClaimsLeftOut, Mutant::BlockSyncOnStuckTicksOnly] {
        if only.as_ref().is_some_and(|o| *o != format!("{m:?}")) {
            continue;
        }
        let mut c = EngineSimConfig::new(4, 0);
        c.mutant = Some(m);
        let caught = (0..SEEDS).find_map(|seed| {
            let o = run(seed, &c).unwrap();
            o.violations
                .iter()
                .find(|v| {
                    matches!(
                        v,
                        Violation::NotSigningAgain { .. } | Violation::SignedAgainLate { .. }
                    )
                })
                .map(|v| format!("seed {seed}: {v} (replay: {})", replay_command(seed, &c)))
        });
        println!("mutant {m:?}: caught by {caught:?}");
        assert!(caught.is_some(), "{m:?} survived {SEEDS} seeds");
    }
}
