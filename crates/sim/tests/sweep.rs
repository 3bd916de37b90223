#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! Seed sweeps: thousands of simulated networks per `cargo test`, each checked for agreement,
//! validity, no honest double-sign and progress after GST. A failure names the seed and the
//! command that replays it with a trace.

use bulwark_sim::checker::Violation;
use bulwark_sim::scenario::{Behaviour, SimConfig, BEHAVIOURS};
use bulwark_sim::{replay_command, run, Outcome};

fn sweep(config: &SimConfig, seeds: std::ops::Range<u64>) -> Vec<Outcome> {
    seeds
        .map(|seed| run(seed, config).expect("valid configuration"))
        .collect()
}

fn assert_all_good(config: &SimConfig, outcomes: &[Outcome]) {
    let failing: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.violations.is_empty())
        .take(5)
        .map(|o| {
            format!(
                "seed {}: {:?}\n  replay: {}",
                o.seed,
                o.violations,
                replay_command(o.seed, config)
            )
        })
        .collect();
    assert!(
        failing.is_empty(),
        "invariants violated:\n{}",
        failing.join("\n")
    );
    let target = config.target_height;
    assert!(
        outcomes.iter().all(|o| o.heights_decided >= target),
        "every run reaches the target height"
    );
}

#[test]
fn four_validators_one_byzantine_keep_every_invariant_over_1000_seeds() {
    let config = SimConfig::new(4, 1, 0);
    let outcomes = sweep(&config, 0..1000);
    assert_all_good(&config, &outcomes);
    // The byzantine validators really did attack: honest nodes saw equivocations.
    assert!(outcomes.iter().map(|o| o.evidence).sum::<u64>() > 0);
}

#[test]
fn seven_validators_two_byzantine_keep_every_invariant_over_300_seeds() {
    let config = SimConfig::new(7, 2, 0);
    assert_all_good(&config, &sweep(&config, 10_000..10_300));
}

#[test]
fn ten_validators_three_byzantine_keep_every_invariant_over_100_seeds() {
    let config = SimConfig::new(10, 3, 0);
    assert_all_good(&config, &sweep(&config, 20_000..20_100));
}

#[test]
fn four_validators_with_one_crashed_for_good_still_decide_over_400_seeds() {
    let config = SimConfig::new(4, 0, 1);
    assert_all_good(&config, &sweep(&config, 30_000..30_400));
}

#[test]
fn seven_validators_one_byzantine_one_crashed_over_200_seeds() {
    let config = SimConfig::new(7, 1, 1);
    assert_all_good(&config, &sweep(&config, 40_000..40_200));
}

#[test]
fn every_byzantine_behaviour_alone_is_tolerated_over_100_seeds_each() {
    for (k, behaviour) in BEHAVIOURS.iter().enumerate() {
        let config = SimConfig {
            behaviour: Some(*behaviour),
            ..SimConfig::new(4, 1, 0)
        };
        let first = 50_000 + 1_000 * k as u64;
        assert_all_good(&config, &sweep(&config, first..first + 100));
    }
}

#[test]
fn honest_networks_of_one_to_five_validators_decide_over_300_seeds() {
    for n in 1..=5 {
        let config = SimConfig::new(n, 0, 0);
        assert_all_good(&config, &sweep(&config, 60_000..60_060));
    }
}

/// Negative control: with half the power byzantine, the split-brain attack must break
/// agreement in some runs, and the checker must say so.
#[test]
fn byzantine_majority_split_brain_is_caught_as_an_agreement_violation() {
    let config = SimConfig {
        behaviour: Some(Behaviour::SplitBrain),
        ..SimConfig::new(4, 2, 0)
    };
    let outcomes = sweep(&config, 0..200);
    let broken = outcomes
        .iter()
        .filter(|o| {
            o.violations
                .iter()
                .any(|v| matches!(v, Violation::Agreement { .. }))
        })
        .count();
    assert!(broken >= 10, "only {broken} of 200 runs caught");
}

/// Negative control for liveness: once two of four validators have crashed for good no height
/// can be decided, so a run that demands more heights than fit before the crashes (all before
/// GST ≤ 4 s) must report it.
#[test]
fn lost_quorum_is_caught_as_no_progress() {
    let config = SimConfig {
        expect_progress: Some(true),
        target_height: 100_000,
        ..SimConfig::new(4, 0, 2)
    };
    let outcomes = sweep(&config, 0..20);
    assert!(outcomes.iter().all(|o| o
        .violations
        .iter()
        .any(|v| matches!(v, Violation::NoProgress { .. }))));
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let config = SimConfig::new(7, 2, 0);
    for seed in [3, 77, 1234] {
        assert_eq!(run(seed, &config).unwrap(), run(seed, &config).unwrap());
    }
    assert_ne!(
        run(3, &config).unwrap().events,
        run(4, &config).unwrap().events
    );
}

#[test]
fn impossible_configurations_are_errors_not_panics() {
    assert!(run(0, &SimConfig::new(0, 0, 0)).is_err());
    assert!(run(0, &SimConfig::new(4, 3, 2)).is_err());
    assert!(run(0, &SimConfig::new(500, 0, 0)).is_err());
}
