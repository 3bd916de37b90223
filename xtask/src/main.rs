//! `cargo xtask`: Bulwark's build, test, simulation and demo automation.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::process::Command;
use std::time::Instant;

mod bench;
mod sim;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Bulwark automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the deterministic consensus simulator over many seeds.
    Sim(sim::SimArgs),
    /// Run every test: unit, rule, simulation sweeps, chain-format checks.
    Test(TestArgs),
    /// Show Bulwark working end to end (today: the simulated 4-validator network).
    Demo(DemoArgs),
    /// Measure and write the figures in docs/BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct TestArgs {
    /// Extra arguments passed to `cargo test`.
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Seeds to simulate.
    #[arg(long, default_value_t = 200)]
    seeds: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Sim(args) => sim::run(args),
        Cmd::Test(args) => test(args),
        Cmd::Demo(args) => demo(args),
        Cmd::Bench(args) => bench::run(args),
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run_checked(mut cmd: Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn test(args: TestArgs) -> Result<()> {
    let started = Instant::now();
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--all-targets"])
        .args(&args.rest);
    run_checked(cmd, "cargo test --workspace --all-targets")?;
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"]);
    run_checked(doc, "cargo test --workspace --doc")?;
    // The headline simulations of the consensus issue, at full size: each exits non-zero on
    // any violation and prints its seed and replay command.
    for (seeds, validators, byzantine) in [(20_000, 4, 1), (2_000, 7, 2)] {
        eprintln!("xtask: cargo xtask sim --seeds {seeds} --validators {validators} --byzantine {byzantine}");
        sim::run(sim::SimArgs {
            seeds,
            validators,
            byzantine,
            ..sim::SimArgs::default()
        })?;
    }
    eprintln!("xtask: all tests passed in {:.0?}", started.elapsed());
    Ok(())
}

fn demo(args: DemoArgs) -> Result<()> {
    eprintln!(
        "xtask demo: the node and the VM image do not exist yet, so this demo runs the \
         deterministic simulator: {} seeded 4-validator networks, one of them byzantine, \
         with drops, partitions and crashes.",
        args.seeds
    );
    sim::run(sim::SimArgs {
        seeds: args.seeds,
        validators: 4,
        byzantine: 1,
        ..sim::SimArgs::default()
    })
}
