//! `cargo xtask sim`: many seeds of the deterministic simulator, on every core.

use anyhow::{bail, Result};
use bulwark_sim::scenario::SimConfig;
use bulwark_sim::{parse_behaviour, replay_command, Outcome};
use clap::Args;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Args, Clone, Debug)]
pub struct SimArgs {
    /// Number of seeds to run (seeds `first-seed .. first-seed + seeds`).
    #[arg(long, default_value_t = 1000)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Run exactly this one seed (a replay).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validators in each network.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Byzantine validators (more than f is the negative control: violations are expected).
    #[arg(long, default_value_t = 1)]
    pub byzantine: usize,
    /// Honest validators that crash for good.
    #[arg(long, default_value_t = 0)]
    pub crashed: usize,
    /// Heights every live honest validator must decide.
    #[arg(long, default_value_t = 5)]
    pub heights: u64,
    /// One behaviour for all byzantine validators: silent, equivocator, double-voter,
    /// random-voter, malformed, split-brain (default: drawn per validator and seed).
    #[arg(long)]
    pub behaviour: Option<String>,
    /// Print the run's events (use with --seed).
    #[arg(long)]
    pub trace: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Default for SimArgs {
    fn default() -> Self {
        SimArgs {
            seeds: 1000,
            first_seed: 0,
            seed: None,
            validators: 4,
            byzantine: 1,
            crashed: 0,
            heights: 5,
            behaviour: None,
            trace: false,
            threads: None,
        }
    }
}

pub fn run(args: SimArgs) -> Result<()> {
    let behaviour = match &args.behaviour {
        None => None,
        Some(name) => match parse_behaviour(name) {
            Some(b) => Some(b),
            None => bail!("unknown behaviour {name:?}"),
        },
    };
    let config = SimConfig {
        validators: args.validators,
        byzantine: args.byzantine,
        crashed: args.crashed,
        target_height: args.heights,
        behaviour,
        expect_progress: None,
        trace: args.trace,
    };
    if !config.within_fault_bound() {
        eprintln!(
            "sim: {} byzantine + {} crashed of {} exceeds f = {}: safety violations are \
             expected (negative control), liveness is not checked",
            config.byzantine,
            config.crashed,
            config.validators,
            config.max_faulty()
        );
    }
    let (first, count) = match args.seed {
        Some(s) => (s, 1),
        None => (args.first_seed, args.seeds),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);

    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::with_capacity(count as usize));
    let error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count {
                    break;
                }
                match bulwark_sim::run(first + k, &config) {
                    Ok(outcome) => {
                        if let Ok(mut r) = results.lock() {
                            r.push(outcome);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = error.lock() {
                            *slot = Some(e.to_string());
                        }
                        break;
                    }
                }
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if count >= 1000 && d % (count / 10) == 0 {
                    eprintln!("sim: {d}/{count} seeds, {:.1?}", started.elapsed());
                }
            });
        }
    });
    if let Some(e) = error.into_inner().ok().flatten() {
        bail!("sim: {e}");
    }
    let elapsed = started.elapsed();
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|o| o.seed);

    let heights: u64 = results.iter().map(|o| o.heights_decided).sum();
    let failing: Vec<&Outcome> = results
        .iter()
        .filter(|o| !o.violations.is_empty())
        .collect();
    let violations: usize = failing.iter().map(|o| o.violations.len()).sum();
    let max_round = results.iter().map(|o| o.max_round).max().unwrap_or(0);
    let evidence: u64 = results.iter().map(|o| o.evidence).sum();
    let events: u64 = results.iter().map(|o| o.events).sum();
    // CPU time: wall time × threads is an upper bound; with one thread it is exact.
    let cpu_seconds = elapsed.as_secs_f64() * threads as f64;

    for o in failing.iter().take(10) {
        eprintln!("sim: seed {} violated: {:?}", o.seed, o.violations);
        eprintln!("     replay: {}", replay_command(o.seed, &config));
    }
    if failing.len() > 10 {
        eprintln!("sim: … and {} more failing seeds", failing.len() - 10);
    }
    eprintln!(
        "sim: {count} seeds in {:.2?} on {threads} threads: {heights} heights decided, {events} \
         events, max round {max_round}, {evidence} equivocations reported, {} failing seeds",
        elapsed,
        failing.len()
    );
    println!(
        "{}",
        serde_json::json!({
            "seeds": count,
            "validators": config.validators,
            "byzantine": config.byzantine,
            "heights_decided": heights,
            "violations": violations,
            "crashed": config.crashed,
            "failing_seeds": failing.len(),
            "max_round": max_round,
            "wall_seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "heights_per_cpu_second": if cpu_seconds > 0.0 { (heights as f64 / cpu_seconds).round() } else { 0.0 },
        })
    );
    if violations > 0 {
        bail!("{} seeds violated an invariant", failing.len());
    }
    Ok(())
}
