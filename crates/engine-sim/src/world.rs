//! What one seed runs in engine mode: validators and their powers, who is byzantine and how,
//! outages with storage faults and late joiners, the network before and after GST, clock skew,
//! the client load and the block size. Everything is drawn from the seed.

use crate::byzantine::{Behaviour, BEHAVIOURS};
use bulwark_sim::rng::Rng;

/// The parameters a caller chooses; the rest is drawn from the seed.
#[derive(Clone, Debug)]
pub struct EngineSimConfig {
    /// Number of validators.
    pub validators: usize,
    /// Number of byzantine validators (more than f is a negative control).
    pub byzantine: usize,
    /// Heights every live honest validator must commit.
    pub target_height: u64,
    /// Only this behaviour for every byzantine validator (otherwise drawn per validator).
    pub behaviour: Option<Behaviour>,
    /// Wall-clock time one input may take in one engine before it is a violation.
    pub cpu_budget_ms: u64,
    /// Print every delivery to stderr.
    pub trace: bool,
    /// Full-size blocks above the default frame limit, and an honest validator that misses
    /// several of them and must catch up by block sync (review H2).
    pub full_blocks: bool,
    /// A long stormy period before GST (heavy drops and delays, no outages): many heights
    /// need several rounds, the situations the locking rules are for.
    pub stormy: bool,
    /// A planted bug to run under (`mutants` feature only; see `bulwark_consensus::mutation`).
    pub mutant: Option<bulwark_consensus::mutation::Mutant>,
    /// No outages, GST at 0, small delays and a `timeout_commit` above them: the steady
    /// state of a healthy network.
    pub calm: bool,
    /// The scaling bench's world (with `calm`): equal powers, delays of at most 5 ms, no
    /// `timeout_commit` and no transactions, so that a height's simulated time is its
    /// messages' and each input's CPU the work the validator count makes.
    pub scaling: bool,
    /// End the run at its first violation (a search for one needs no more, and a planted bug
    /// that makes every input slow would otherwise take minutes per seed).
    pub stop_at_first_violation: bool,
}

impl EngineSimConfig {
    /// Defaults for everything but the counts.
    pub fn new(validators: usize, byzantine: usize) -> Self {
        EngineSimConfig {
            validators,
            byzantine,
            target_height: 5,
            behaviour: None,
            cpu_budget_ms: 2_000,
            trace: false,
            full_blocks: false,
            mutant: None,
            stormy: false,
            calm: false,
            scaling: false,
            stop_at_first_violation: false,
        }
    }

    /// `f` for this many validators with equal power.
    pub fn max_faulty(&self) -> usize {
        self.validators.saturating_sub(1) / 3
    }

    /// Whether the faults are within the bound, so liveness is demanded.
    pub fn within_fault_bound(&self) -> bool {
        self.byzantine <= self.max_faulty()
    }
}

/// A validator's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs the real engine and follows the protocol (and may crash).
    Honest,
    /// Runs the real engine behind an adversary that rewrites and adds wire messages.
    Byzantine(Behaviour),
}

/// A partition before GST: messages between the two sides are lost until it heals.
#[derive(Clone, Debug)]
pub struct Partition {
    /// Start (simulated ms).
    pub start: u64,
    /// End (at or before GST).
    pub heal_at: u64,
    /// Side of each validator.
    pub side: Vec<bool>,
}

/// An honest validator stopping without warning and (perhaps) coming back.
#[derive(Clone, Debug)]
pub struct Outage {
    /// Which validator.
    pub node: usize,
    /// When it stops (simulated ms), or `None`: right after it commits height `after_commit`
    /// (inside `timeout_commit`).
    pub at: Option<u64>,
    /// With `at` unset: the height after whose commit it stops.
    pub after_commit: u64,
    /// How long it stays down.
    pub down_ms: u64,
    /// Of the writes after its last flush, the share that survives (0: a power cut).
    pub keep_unflushed: f64,
    /// What the host does to its disk while it is down.
    pub disk: DiskFault,
}

/// What the host does to a stopped validator's disk before it boots again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFault {
    /// Nothing: it boots on what survived the crash.
    Kept,
    /// Restores the snapshot it took at `snapshot_at` (simulated ms); a snapshot not taken
    /// yet is the enrolled disk (empty chain state, the key kept).
    RolledBack {
        /// When the snapshot was taken.
        snapshot_at: u64,
    },
    /// Wipes the chain state (the enrolled disk: the key kept, nothing else).
    Wiped,
}

/// What a clone sees of the other validators (the host partitions it from its original).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloneView {
    /// Only the clone is connected to this validator.
    CloneOnly,
    /// Only the original is.
    OriginalOnly,
    /// Both are.
    Both,
}

/// A copy of an honest validator's disk booted beside it: a second instance of its key, with
/// a network identity of its own, partitioned from the original.
#[derive(Clone, Debug)]
pub struct CloneRun {
    /// The validator copied.
    pub of: usize,
    /// When the copy is made and booted (simulated ms).
    pub at: u64,
    /// Per validator, who of the pair it is connected to (`Both` for the original itself is
    /// never used: the pair never talk).
    pub views: Vec<CloneView>,
}

/// One run's world.
#[derive(Clone, Debug)]
pub struct World {
    /// Voting power of each validator.
    pub powers: Vec<u64>,
    /// Role of each validator.
    pub roles: Vec<Role>,
    /// Each node's clock offset from true time (ms).
    pub skew_ms: Vec<i64>,
    /// When each node first starts (late joiners start late and catch up by block sync).
    pub start_at: Vec<u64>,
    /// Global stabilisation time (ms): afterwards no drops, no partitions, delays ≤ `delta`.
    pub gst: u64,
    /// Drop probability before GST.
    pub drop: f64,
    /// Duplication probability before GST.
    pub duplicate: f64,
    /// Largest delay before GST.
    pub max_delay_before_gst: u64,
    /// Largest delay after GST; may exceed the base timeouts, so liveness has to come from
    /// timeouts growing with the round.
    pub delta: u64,
    /// Partitions (all heal by GST).
    pub partitions: Vec<Partition>,
    /// Outages of honest validators.
    pub outages: Vec<Outage>,
    /// Clones of honest validators; clone `j` is node `validators + j` (the per-node vectors
    /// above are that long).
    pub clones: Vec<CloneRun>,
    /// Client transactions per simulated second, over all nodes.
    pub tx_per_s: u64,
    /// Bytes per transaction.
    pub tx_bytes: usize,
    /// The proposers' transaction budget per block.
    pub max_block_tx_bytes: i64,
    /// The consensus `block.max_bytes`.
    pub block_max_bytes: u64,
    /// Transactions every node's clients submit at the start (to fill blocks at once).
    pub initial_txs: u64,
    /// Wait after a commit (0 in some runs: the next height starts at once).
    pub timeout_commit_ms: u64,
    /// The first height whose precommits carry vote extensions (ABCI 2.0), if any.
    pub extensions_from: Option<u64>,
}

impl World {
    /// Draws the world of `seed`.
    pub fn draw(seed: u64, config: &EngineSimConfig) -> World {
        let mut rng = Rng::new(seed ^ 0x656e_6769_6e65);
        let n = config.validators;
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let byzantine: Vec<usize> = order.iter().copied().take(config.byzantine).collect();

        let mut powers = vec![10u64; n];
        if rng.below(3) == 0 {
            for _ in 0..32 {
                let candidate: Vec<u64> = (0..n).map(|_| 10 * rng.range(1, 4)).collect();
                let total: u64 = candidate.iter().sum();
                let faulty: u64 = byzantine.iter().map(|i| candidate[*i]).sum();
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
        let skew_ms: Vec<i64> = (0..n)
            .map(|_| {
                if rng.chance(0.3) {
                    rng.range(0, 4_000) as i64 - 2_000
                } else {
                    0
                }
            })
            .collect();

        let calm = rng.below(5) == 0;
        let gst = if calm { 0 } else { rng.range(0, 3_000) };
        let drop = if calm {
            0.0
        } else {
            rng.below(30) as f64 / 100.0
        };
        let duplicate = if calm {
            0.0
        } else {
            rng.below(10) as f64 / 100.0
        };
        let max_delay_before_gst = if calm { 10 } else { rng.range(5, 300) };
        // Mostly below the base timeouts; in a fifth of the runs above them.
        let delta = if rng.chance(0.2) {
            rng.range(100, 200)
        } else {
            rng.range(2, 20)
        };
        let mut partitions = Vec::new();
        if gst > 0 && rng.chance(0.3) {
            let start = rng.below(gst);
            partitions.push(Partition {
                start,
                heal_at: rng.range(start, gst),
                side: (0..n).map(|_| rng.chance(0.5)).collect(),
            });
        }

        let honest: Vec<usize> = (0..n).filter(|i| roles[*i] == Role::Honest).collect();
        let mut outages = Vec::new();
        let mut start_at = vec![0u64; n];
        if !honest.is_empty() && rng.chance(0.5) {
            for _ in 0..rng.range(1, 3) {
                let node = honest[rng.below(honest.len() as u64) as usize];
                let inside_commit = rng.chance(0.3);
                outages.push(Outage {
                    node,
                    at: (!inside_commit).then(|| rng.below(gst + 3_000)),
                    after_commit: rng.range(1, config.target_height.max(2)),
                    down_ms: if rng.chance(0.2) {
                        rng.range(3_000, 8_000)
                    } else {
                        rng.range(1, 1_500)
                    },
                    keep_unflushed: if rng.chance(0.5) {
                        0.0
                    } else {
                        rng.below(100) as f64 / 100.0
                    },
                    disk: DiskFault::Kept,
                });
            }
        }
        // A late joiner: one honest validator that starts only after the others committed a
        // few heights (only when the others are a quorum without it).
        if honest.len() > 2 * config.max_faulty() + 1 && rng.chance(0.15) {
            let node = honest[rng.below(honest.len() as u64) as usize];
            start_at[node] = rng.range(1_500, 4_000);
        }

        let (tx_per_s, tx_bytes) = match rng.below(4) {
            0 => (0, 32),
            1 => (50, 64),
            2 => (400, 256),
            _ => (200, 4_096),
        };
        let mut max_block_tx_bytes = if rng.chance(0.2) { 16 << 10 } else { 256 << 10 };
        let timeout_commit_ms = if rng.chance(0.25) {
            0
        } else {
            rng.range(5, 60)
        };
        // Not a whole number of parts, so a block a little above it still fits the part count
        // a proposal may announce, and only the byte limit refuses it.
        let (mut block_max_bytes, mut initial_txs) = ((1 << 20) - 4096, 0);
        let (mut tx_per_s, mut tx_bytes) = (tx_per_s, tx_bytes);
        let (mut gst, mut delta, mut timeout_commit_ms) = (gst, delta, timeout_commit_ms);
        let (mut drop, mut max_delay_before_gst) = (drop, max_delay_before_gst);
        if config.stormy {
            outages.clear();
            partitions.clear();
            gst = rng.range(8_000, 12_000);
            drop = 0.2 + rng.below(20) as f64 / 100.0;
            max_delay_before_gst = rng.range(100, 300);
        }
        if config.calm {
            outages.clear();
            start_at.iter_mut().for_each(|s| *s = 0);
            partitions.clear();
            (gst, delta, timeout_commit_ms) = (0, rng.range(2, 20), rng.range(50, 100));
        }
        if config.scaling {
            (delta, timeout_commit_ms, tx_per_s) = (5, 0, 0);
            powers.iter_mut().for_each(|p| *p = 10);
        }
        if config.full_blocks {
            // Blocks of 5 MiB of transactions, beyond the 4 MiB default frame, from a full
            // mempool; one honest validator down for several of them.
            block_max_bytes = 6 << 20;
            // Equal powers: the others are a quorum without the one that is down.
            powers.iter_mut().for_each(|p| *p = 10);
            max_block_tx_bytes = 5 << 20;
            initial_txs = 4_000;
            (tx_per_s, tx_bytes) = (400, 4_096);
            if let Some(&node) = honest.first() {
                outages.push(Outage {
                    node,
                    at: Some(400),
                    after_commit: 0,
                    down_ms: 6_000,
                    keep_unflushed: 0.0,
                    disk: DiskFault::Kept,
                });
            }
        }
        // The host's disk faults: drawn apart, so the worlds above stay as they were.
        let mut host = Rng::new(seed ^ 0x686f_7374);
        let mut clones = Vec::new();
        let (mut roles, mut skew_ms, mut start_at) = (roles, skew_ms, start_at);
        if !(config.stormy || config.calm || config.full_blocks) {
            for o in outages.iter_mut() {
                o.disk = match host.below(10) {
                    0..=4 => DiskFault::Kept,
                    5..=8 => DiskFault::RolledBack {
                        snapshot_at: host.below(o.at.unwrap_or(gst + 3_000) + 1),
                    },
                    _ => DiskFault::Wiped,
                };
            }
            if honest.len() >= 2 && host.chance(0.2) {
                let of = honest[host.below(honest.len() as u64) as usize];
                let mut views: Vec<CloneView> = (0..n)
                    .map(|_| match host.below(3) {
                        0 => CloneView::CloneOnly,
                        1 => CloneView::OriginalOnly,
                        _ => CloneView::Both,
                    })
                    .collect();
                // Each of the pair sees at least one honest validator (else it could not
                // follow the chain at all: not what this models).
                let others: Vec<usize> = honest.iter().copied().filter(|k| *k != of).collect();
                views[others[host.below(others.len() as u64) as usize]] = CloneView::Both;
                let at = host.range(300, gst + 3_000);
                clones.push(CloneRun { of, at, views });
                roles.push(Role::Honest);
                skew_ms.push(skew_ms[of]);
                start_at.push(at);
                for p in partitions.iter_mut() {
                    let side = p.side[of];
                    p.side.push(side);
                }
            }
        }
        // Vote extensions in half the worlds, from a height near the start: drawn apart too.
        let mut abci = Rng::new(seed ^ 0x6162_6369);
        let extensions_from = abci.chance(0.5).then(|| 1 + abci.below(4));
        World {
            clones,
            powers,
            roles,
            skew_ms,
            start_at,
            gst,
            drop,
            duplicate,
            max_delay_before_gst,
            delta,
            partitions,
            outages,
            tx_per_s,
            tx_bytes,
            max_block_tx_bytes,
            block_max_bytes,
            initial_txs,
            timeout_commit_ms,
            extensions_from,
        }
    }

    /// Whether validator `i` is honest.
    pub fn is_honest(&self, i: usize) -> bool {
        self.roles[i] == Role::Honest
    }

    /// Whether a message from `a` to `b` sent at `now` is cut by a partition, or by the host
    /// keeping a clone and its original apart.
    pub fn partitioned(&self, a: usize, b: usize, now: u64) -> bool {
        self.partitions
            .iter()
            .any(|p| now >= p.start && now < p.heal_at && p.side[a] != p.side[b])
            || self.clone_cut(a, b, now)
            || self.clone_cut(b, a, now)
    }

    /// Whether the host cuts the link between node `a` (a clone or a cloned validator) and
    /// node `b`.
    fn clone_cut(&self, a: usize, b: usize, now: u64) -> bool {
        let n = self.powers.len();
        self.clones.iter().enumerate().any(|(j, c)| {
            let clone = n + j;
            let other = |x: usize| if x < n { c.views[x] } else { CloneView::Both };
            now >= c.at
                && ((a == clone && (b == c.of || other(b) == CloneView::OriginalOnly))
                    || (a == c.of && other(b) == CloneView::CloneOnly))
        })
    }

    /// The validator node `i` runs (a clone runs its original's key).
    pub fn validator_of(&self, i: usize) -> usize {
        let n = self.powers.len();
        if i < n {
            i
        } else {
            self.clones.get(i - n).map_or(i, |c| c.of)
        }
    }

    /// Whether the instance rule leaves liveness demanded: the honest validators that never
    /// restart and are never cloned hold more than two thirds of the power (otherwise a
    /// restarted instance may wait for good, safety first, and the network with it). A late
    /// starter is still its validator's launch instance, which the genesis names: it signs.
    pub fn instances_allow_liveness(&self) -> bool {
        let n = self.powers.len();
        let total: u64 = self.powers.iter().sum();
        let steady: u64 = (0..n)
            .filter(|i| self.is_honest(*i))
            .filter(|i| !self.outages.iter().any(|o| o.node == *i))
            .filter(|i| !self.clones.iter().any(|c| c.of == *i))
            .map(|i| self.powers[i])
            .sum();
        3 * steady > 2 * total
    }
}
