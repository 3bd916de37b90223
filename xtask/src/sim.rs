//! `cargo xtask sim`: many seeds of the deterministic simulator, on every core: bare consensus
//! cores (the fast sweep) or, with `--engine`, the node's real engines.

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
    /// Run the node's real engines (signatures, block parts, commits, block sync, WAL, kvstore,
    /// stores on simulated disks) instead of bare consensus cores.
    #[arg(long)]
    pub engine: bool,
    /// Engine mode: 5 MiB blocks and an honest validator that misses several of them.
    #[arg(long, requires = "engine")]
    pub full_blocks: bool,
    /// Engine mode: a long stormy period before GST (many multi-round heights).
    #[arg(long, requires = "engine")]
    pub stormy: bool,
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
            engine: false,
            full_blocks: false,
            stormy: false,
        }
    }
}

/// What the seed loop needs of one run, in either mode.
struct Summary {
    seed: u64,
    heights: u64,
    max_round: u32,
    events: u64,
    violations: Vec<String>,
    extra: [u64; 9],
}

/// Runs `count` seeds from `first` on `threads` workers; `one` runs a seed.
fn sweep(
    first: u64,
    count: u64,
    threads: usize,
    one: &(dyn Fn(u64) -> Result<Summary, String> + Sync),
) -> Result<(Vec<Summary>, std::time::Duration)> {
    let started = Instant::now();
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let results: Mutex<Vec<Summary>> = Mutex::new(Vec::with_capacity(count as usize));
    let error: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count {
                    break;
                }
                match one(first + k) {
                    Ok(summary) => {
                        if let Ok(mut r) = results.lock() {
                            r.push(summary);
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = error.lock() {
                            *slot = Some(e);
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
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|o| o.seed);
    Ok((results, started.elapsed()))
}

/// Prints the first failing seeds with their violations and replay commands.
fn print_failing(failing: &[&Summary], replay: &dyn Fn(u64) -> String) {
    for o in failing.iter().take(10) {
        eprintln!("sim: seed {} violated: {:?}", o.seed, o.violations);
        eprintln!("     replay: {}", replay(o.seed));
    }
    if failing.len() > 10 {
        eprintln!("sim: … and {} more failing seeds", failing.len() - 10);
    }
}

/// `cargo xtask sim --engine`: the node's real engines.
fn run_engine(args: &SimArgs, first: u64, count: u64, threads: usize) -> Result<()> {
    use bulwark_engine_sim::byzantine::{behaviour_name, parse_behaviour};
    use bulwark_engine_sim::world::EngineSimConfig;
    let behaviour = match &args.behaviour {
        None => None,
        Some(name) => match parse_behaviour(name) {
            Some(b) => Some(b),
            None => bail!(
                "unknown engine-mode behaviour {name:?}; one of: {}",
                bulwark_engine_sim::byzantine::BEHAVIOURS
                    .iter()
                    .map(|b| behaviour_name(*b))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    if args.trace {
        // The engines' own warnings (why a block was invalid, what the privval refused).
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .try_init();
    }
    let mut config = EngineSimConfig::new(args.validators, args.byzantine);
    config.target_height = args.heights;
    config.behaviour = behaviour;
    config.trace = args.trace;
    config.full_blocks = args.full_blocks;
    config.stormy = args.stormy;
    if !config.within_fault_bound() {
        eprintln!(
            "sim: {} byzantine of {} exceeds f = {}: violations are expected (negative control), liveness is not checked",
            config.byzantine, config.validators, config.max_faulty()
        );
    }
    let one = |seed: u64| -> Result<Summary, String> {
        let o = bulwark_engine_sim::run(seed, &config).map_err(|e| e.to_string())?;
        Ok(Summary {
            seed: o.seed,
            heights: o.heights_decided,
            max_round: o.max_round,
            events: o.events,
            violations: o.violations.iter().map(|v| v.to_string()).collect(),
            extra: [
                o.crashes,
                o.synced,
                o.sim_ms,
                o.accused.len() as u64,
                u64::from(o.liveness_demanded),
                o.disk_faults,
                o.clones,
                o.max_heights_to_sign_again,
                o.max_heights_from_restart,
            ],
        })
    };
    let (results, elapsed) = sweep(first, count, threads, &one)?;
    let failing: Vec<&Summary> = results
        .iter()
        .filter(|o| !o.violations.is_empty())
        .collect();
    print_failing(&failing, &|seed| {
        bulwark_engine_sim::replay_command(seed, &config)
    });
    let heights: u64 = results.iter().map(|o| o.heights).sum();
    let violations: usize = failing.iter().map(|o| o.violations.len()).sum();
    let events: u64 = results.iter().map(|o| o.events).sum();
    let crashes: u64 = results.iter().map(|o| o.extra[0]).sum();
    let synced: u64 = results.iter().map(|o| o.extra[1]).sum();
    let evidence: u64 = results.iter().map(|o| o.extra[3]).sum();
    let sum = |k: usize| -> u64 { results.iter().map(|o| o.extra[k]).sum() };
    let (live, disk_faults, clones) = (sum(4), sum(5), sum(6));
    let most = |k: usize| -> u64 { results.iter().map(|o| o.extra[k]).max().unwrap_or(0) };
    let (sign_again, from_restart) = (most(7), most(8));
    let max_round = results.iter().map(|o| o.max_round).max().unwrap_or(0);
    let seconds = elapsed.as_secs_f64();
    eprintln!(
        "sim: engine mode, {count} seeds in {elapsed:.2?} on {threads} threads: {heights} heights decided, {events} events, {crashes} crashes, {synced} heights block-synced, max round {max_round}, {} failing seeds",
        failing.len()
    );
    eprintln!(
        "sim: the host's disks: {disk_faults} rolled back or wiped (at launch too), {clones} clones (at launch too); liveness demanded in {live} of {count} seeds (the others restart or clone a third of the power or more); restarted validators signed again within {sign_again} heights of catching up (the checker's bound: {bound}) and {from_restart} of restarting", bound = bulwark_engine_sim::SIGN_AGAIN_HEIGHTS
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": "engine",
            "seeds": count,
            "validators": config.validators,
            "byzantine": config.byzantine,
            "behaviour": behaviour.map(behaviour_name).unwrap_or("all"),
            "heights_decided": heights,
            "violations": violations,
            "failing_seeds": failing.len(),
            "max_round": max_round,
            "crashes": crashes,
            "heights_block_synced": synced,
            "evidence_committed": evidence,
            "disk_faults": disk_faults,
            "clones": clones,
            "liveness_demanded": live,
            "max_heights_to_sign_again": sign_again,
            "max_heights_from_restart": from_restart,
            "wall_seconds": (seconds * 1000.0).round() / 1000.0,
            "seeds_per_second": if seconds > 0.0 { ((count as f64 / seconds) * 100.0).round() / 100.0 } else { 0.0 },
        })
    );
    if config.within_fault_bound() && violations > 0 {
        bail!("{} seeds violated an invariant", failing.len());
    }
    Ok(())
}

pub fn run(args: SimArgs) -> Result<()> {
    let (first, count) = match args.seed {
        Some(s) => (s, 1),
        None => (args.first_seed, args.seeds),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if args.engine {
        return run_engine(&args, first, count, threads);
    }
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
    let one = |seed: u64| -> Result<Summary, String> {
        let o: Outcome = bulwark_sim::run(seed, &config).map_err(|e| e.to_string())?;
        Ok(Summary {
            seed: o.seed,
            heights: o.heights_decided,
            max_round: o.max_round,
            events: o.events,
            violations: o.violations.iter().map(|v| v.to_string()).collect(),
            extra: [o.evidence, 0, 0, 0, 0, 0, 0, 0, 0],
        })
    };
    let (results, elapsed) = sweep(first, count, threads, &one)?;
    let heights: u64 = results.iter().map(|o| o.heights).sum();
    let failing: Vec<&Summary> = results
        .iter()
        .filter(|o| !o.violations.is_empty())
        .collect();
    let violations: usize = failing.iter().map(|o| o.violations.len()).sum();
    let max_round = results.iter().map(|o| o.max_round).max().unwrap_or(0);
    let evidence: u64 = results.iter().map(|o| o.extra[0]).sum();
    let events: u64 = results.iter().map(|o| o.events).sum();
    // CPU time: wall time × threads is an upper bound; with one thread it is exact.
    let cpu_seconds = elapsed.as_secs_f64() * threads as f64;

    print_failing(&failing, &|seed| replay_command(seed, &config));
    eprintln!(
        "sim: {count} seeds in {:.2?} on {threads} threads: {heights} heights decided, {events} \
         events, max round {max_round}, {evidence} equivocations reported, {} failing seeds",
        elapsed,
        failing.len()
    );
    println!(
        "{}",
        serde_json::json!({
            "mode": "core",
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
