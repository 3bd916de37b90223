//! How a height's cost grows with the validator count: the node's real engines (real ed25519
//! signatures, block parts, commits, stores on simulated disks) in the engine simulator's
//! steady world (`EngineSimConfig::scaling`: equal powers, message delays drawn from 1–5 ms,
//! no `timeout_commit`, empty blocks), for 4, 16, 64 and 128 validators. Per count: simulated
//! time per height (the messages' part of a height), the CPU one validator spends per height
//! (the run's CPU time, all on this thread, over heights and validators) and the messages one
//! validator handles per height. Prints one JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_engine_sim::world::EngineSimConfig;

/// CPU seconds this thread has used (Linux `/proc`; the simulator runs on this thread only).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime, fields 14 and 15 of the line, in USER_HZ (100 on Linux).
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// The node binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // (validators, heights): enough heights for a second or more of CPU at each count.
    let runs: &[(usize, u64)] = if full {
        &[(4, 200), (16, 40), (64, 10), (128, 5)]
    } else {
        &[(4, 3), (7, 3)]
    };
    let mut rows = Vec::new();
    for &(validators, heights) in runs {
        let mut config = EngineSimConfig::new(validators, 0);
        config.calm = true;
        config.scaling = true;
        config.target_height = heights;
        // One input of a 128-validator height (a certificate of 85 signatures) takes far
        // longer than the simulator's default budget, which is for finding slow inputs.
        config.cpu_budget_ms = 600_000;
        let cpu = cpu_seconds();
        let outcome = bulwark_engine_sim::run(1, &config).unwrap();
        let cpu = cpu_seconds() - cpu;
        assert!(
            outcome.violations.is_empty(),
            "{validators} validators: {:?}",
            outcome.violations
        );
        let decided = outcome.heights_decided.max(1) as f64;
        let n = validators as f64;
        eprintln!(
            "scaling: {validators} validators, {} heights in {:.1} s of CPU",
            outcome.heights_decided, cpu
        );
        rows.push(format!(
            "{{\"validators\":{validators},\"heights\":{},\"sim_ms_per_height\":{:.2},\"cpu_us_per_height_per_validator\":{:.0},\"messages_per_height_per_validator\":{:.1}}}",
            outcome.heights_decided,
            outcome.sim_ms as f64 / decided,
            cpu * 1e6 / decided / n,
            outcome.events as f64 / decided / n,
        ));
    }
    println!("{{\"rows\":[{}]}}", rows.join(","));
}
