//! What one seed runs: the validator set, who is byzantine and how, who crashes, the network's
//! faults before global stabilisation time (GST). Everything is drawn from the seed, so
//! `(seed, validators, byzantine, crashed)` names a run exactly.

use crate::rng::Rng;

/// What a byzantine validator does. Each runs a real core for its timing and lies on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends nothing at all.
    Silent,
    /// As proposer, sends different proposals to different peers; votes for different values to
    /// different peers.
    Equivocator,
    /// Sends every vote together with a conflicting one to everybody.
    DoubleVoter,
    /// Votes for random values (valid or not) or nil.
    RandomVoter,
    /// Sends messages that must be rejected: forged signatures, other heights, far-future
    /// rounds, proposals out of turn, bad POL rounds, invalid values.
    Malformed,
    /// Coordinates with the other split-brain validators: one value to one half of the honest
    /// validators, another to the other half, in every step. The classic attack that breaks
    /// agreement once more than a third of the power is byzantine.
    SplitBrain,
}

/// Every behaviour, for random choice.
pub const BEHAVIOURS: [Behaviour; 6] = [
    Behaviour::Silent,
    Behaviour::Equivocator,
    Behaviour::DoubleVoter,
    Behaviour::RandomVoter,
    Behaviour::Malformed,
    Behaviour::SplitBrain,
];

/// A validator's role in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows the protocol (and may crash and restart).
    Honest,
    /// Deviates.
    Byzantine(Behaviour),
}

/// A network partition: until `heal_at`, messages between the two sides are lost.
#[derive(Clone, Debug)]
pub struct Partition {
    /// Start, in simulated milliseconds.
    pub start: u64,
    /// End, in simulated milliseconds (at or before GST).
    pub heal_at: u64,
    /// Side of each validator.
    pub side: Vec<bool>,
}

/// A crash of an honest validator; without `restart_at` it never comes back.
#[derive(Clone, Debug)]
pub struct Crash {
    /// Which validator.
    pub node: usize,
    /// When it stops.
    pub at: u64,
    /// When it restarts from what it persisted.
    pub restart_at: Option<u64>,
}

/// The parameters a caller chooses; the rest is drawn from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of validators.
    pub validators: usize,
    /// Number of byzantine validators.
    pub byzantine: usize,
    /// Number of honest validators that crash for good.
    pub crashed: usize,
    /// Heights every live honest validator must decide.
    pub target_height: u64,
    /// Only this behaviour for all byzantine validators (otherwise drawn per validator).
    pub behaviour: Option<Behaviour>,
    /// Demand progress after GST; `None`: exactly when the faults are within the bound.
    pub expect_progress: Option<bool>,
    /// Print every delivery and action to stderr.
    pub trace: bool,
}

impl SimConfig {
    /// `f` for this many validators with equal power: the largest f with 3f < n.
    pub fn max_faulty(&self) -> usize {
        self.validators.saturating_sub(1) / 3
    }

    /// Whether the run is within the fault assumption, so liveness can be demanded.
    pub fn within_fault_bound(&self) -> bool {
        self.byzantine + self.crashed <= self.max_faulty()
    }

    /// Whether the run must make progress after GST.
    pub fn demands_progress(&self) -> bool {
        self.expect_progress
            .unwrap_or_else(|| self.within_fault_bound())
    }

    /// A configuration with defaults for everything but the fault counts.
    pub fn new(validators: usize, byzantine: usize, crashed: usize) -> Self {
        SimConfig {
            validators,
            byzantine,
            crashed,
            target_height: 5,
            behaviour: None,
            expect_progress: None,
            trace: false,
        }
    }
}

/// One run's world.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Voting power of each validator.
    pub powers: Vec<u64>,
    /// Role of each validator.
    pub roles: Vec<Role>,
    /// Global stabilisation time: from here no drops, no partitions, delays ≤ `delta`.
    pub gst: u64,
    /// Drop probability before GST.
    pub drop: f64,
    /// Duplication probability before GST.
    pub duplicate: f64,
    /// Largest delay before GST.
    pub max_delay_before_gst: u64,
    /// Largest delay after GST.
    pub delta: u64,
    /// Partitions (all heal by GST).
    pub partitions: Vec<Partition>,
    /// Crashes of honest validators.
    pub crashes: Vec<Crash>,
    /// The two halves the split-brain validators play against each other.
    pub split: Vec<bool>,
}

impl Scenario {
    /// Draws the world of `seed`.
    pub fn generate(seed: u64, config: &SimConfig) -> Scenario {
        let mut rng = Rng::new(seed);
        let n = config.validators;
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let byzantine: Vec<usize> = order.iter().copied().take(config.byzantine).collect();
        let crashed: Vec<usize> = order
            .iter()
            .copied()
            .skip(config.byzantine)
            .take(config.crashed)
            .collect();

        // Equal power in most runs; in a third, random weights (re-drawn until the faulty
        // validators hold less than a third of the power, so the fault bound means the same).
        let mut powers = vec![1u64; n];
        if rng.below(3) == 0 {
            for _ in 0..32 {
                let candidate: Vec<u64> = (0..n).map(|_| rng.range(1, 4)).collect();
                let total: u64 = candidate.iter().sum();
                let faulty: u64 = byzantine
                    .iter()
                    .chain(crashed.iter())
                    .map(|i| candidate[*i])
                    .sum();
                if !config.within_fault_bound() || 3 * faulty < total {
                    powers = candidate;
                    break;
                }
            }
        }

        let mut roles = vec![Role::Honest; n];
        for i in &byzantine {
            let behaviour = config
                .behaviour
                .unwrap_or(BEHAVIOURS[rng.below(BEHAVIOURS.len() as u64) as usize]);
            roles[*i] = Role::Byzantine(behaviour);
        }

        let calm = rng.below(5) == 0;
        let gst = if calm { 0 } else { rng.range(0, 4_000) };
        let drop = if calm {
            0.0
        } else {
            rng.below(40) as f64 / 100.0
        };
        let duplicate = if calm {
            0.0
        } else {
            rng.below(15) as f64 / 100.0
        };
        let max_delay_before_gst = if calm { 10 } else { rng.range(5, 400) };
        let delta = rng.range(2, 20);

        let mut partitions = Vec::new();
        if gst > 0 && rng.chance(0.4) {
            for _ in 0..rng.range(1, 2) {
                let start = rng.below(gst);
                let heal_at = rng.range(start, gst);
                let side = (0..n).map(|_| rng.chance(0.5)).collect();
                partitions.push(Partition {
                    start,
                    heal_at,
                    side,
                });
            }
        }

        let mut crashes: Vec<Crash> = crashed
            .iter()
            .map(|node| Crash {
                node: *node,
                at: rng.below(gst.max(1)),
                restart_at: None,
            })
            .collect();
        let honest: Vec<usize> = (0..n)
            .filter(|i| roles[*i] == Role::Honest && !crashed.contains(i))
            .collect();
        if !honest.is_empty() && rng.chance(0.5) {
            for _ in 0..rng.range(1, 3) {
                let node = honest[rng.below(honest.len() as u64) as usize];
                let horizon = gst.max(1_000);
                let at = rng.below(horizon);
                let restart_at = rng.range(at + 1, at + 1 + horizon / 2).min(gst.max(at + 1));
                crashes.push(Crash {
                    node,
                    at,
                    restart_at: Some(restart_at),
                });
            }
        }

        let split = (0..n).map(|i| i % 2 == 0).collect::<Vec<_>>();
        let mut split = split;
        rng.shuffle(&mut split);

        Scenario {
            powers,
            roles,
            gst,
            drop,
            duplicate,
            max_delay_before_gst,
            delta,
            partitions,
            crashes,
            split,
        }
    }

    /// Whether validator `i` is honest.
    pub fn is_honest(&self, i: usize) -> bool {
        self.roles[i] == Role::Honest
    }

    /// Whether `i` crashes for good.
    pub fn crashes_for_good(&self, i: usize) -> bool {
        self.crashes
            .iter()
            .any(|c| c.node == i && c.restart_at.is_none())
    }
}
