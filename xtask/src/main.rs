//! `cargo xtask`: Bulwark's build, test, simulation and demo automation.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::process::Command;
use std::time::Instant;

mod bench;
mod demo;
use xtask_image as image;
mod layout;
mod qemu;
mod sim;

use xtask_steps::apt;

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
    /// Run 4 validator processes in network namespaces under random kills, restarts,
    /// partitions, loss and delay; check no conflicting signature, no lost commit, progress.
    Chaos(harness::chaos::ChaosArgs),
    /// Run every test: unit, rule, simulation sweeps, chain-format checks.
    Test(TestArgs),
    /// Show Bulwark working end to end: 4 validators, transactions, live progress.
    Demo(DemoArgs),
    /// Build the measured guest image: the production image into target/image (kernel,
    /// initramfs, cmdline, firmware, measurement.json, SHA256SUMS), or with --simulated the
    /// development image (simulated PSP) into target/image-simulated; with --app, carrying a
    /// static ABCI application that PID 1 starts and the node runs on.
    Image(ImageCmdArgs),
    /// Print the SEV-SNP launch measurement of target/image (hex, last line).
    Measure(MeasureArgs),
    /// Boot validators as VMs from target/image and watch them reach consensus.
    Qemu(qemu::QemuArgs),
    /// Plant each bug of `bulwark_consensus::mutation` in turn and show the simulator catches
    /// it; the last line is `mutants: caught C of T`.
    Mutants,
    /// Measure and write the figures in docs/BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Regenerate the simulated PSP's ARK/ASK from the published seed into
    /// crates/attest/simulated/ (anyone can check the committed files come from it).
    SimulatedRoot,
}

/// `cargo xtask chaos` (`harness::chaos`): installs what it needs, then runs.
fn chaos(args: harness::chaos::ChaosArgs) -> Result<harness::chaos::Figures> {
    apt::ensure_packages(&harness::chaos::PACKAGES)?;
    harness::chaos::run(&args)
}

#[derive(Args)]
struct TestArgs {
    /// Extra arguments passed to `cargo test`.
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

#[derive(Args)]
struct ImageArgs {
    /// Build the development image: the simulated PSP compiled in (TCG runs, the demo,
    /// tests), its own measurement, in target/image-simulated. Never publish its measurement
    /// for a network that carries value.
    #[arg(long)]
    simulated: bool,
}

#[derive(Args)]
struct ImageCmdArgs {
    #[command(flatten)]
    image: ImageArgs,
    /// A static ABCI application binary for the image to carry (as /bin/abci-app in the
    /// initramfs, so the launch measurement covers it; measurement.json names its sha256).
    /// PID 1 starts it and the node runs on it; without it, the built-in kvstore.
    #[arg(long)]
    app: Option<std::path::PathBuf>,
    /// An argument the application is started with (repeat for more; default: the
    /// `--app-proxy` address).
    #[arg(long = "app-arg", requires = "app")]
    app_args: Vec<String>,
    /// Where the node reaches the application (`unix:///path` or `tcp://127.0.0.1:port`).
    #[arg(long, requires = "app", default_value = image::DEFAULT_APP_PROXY)]
    app_proxy: String,
    /// Where to write the image (default: target/image or target/image-simulated).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

impl ImageArgs {
    fn flavour(&self) -> image::Flavour {
        if self.simulated {
            image::Flavour::Simulated
        } else {
            image::Flavour::Production
        }
    }
}

#[derive(Args)]
struct MeasureArgs {
    /// Which image.
    #[command(flatten)]
    image: ImageArgs,
    /// Number of vCPUs the VM is launched with.
    #[arg(long, default_value_t = 4)]
    vcpus: u32,
    /// The QEMU `-cpu` model the VM is launched with (EPYC-Milan, EPYC-Genoa or EPYC-Turin;
    /// its CPUID signature is in every VMSA). Never `-cpu host`.
    #[arg(long, value_enum, default_value = "milan")]
    cpu_type: image::CpuModel,
    /// SEV features the host's KVM gives the guest: 0x1 on upstream hosts (Linux ≥ 6.11,
    /// QEMU ≥ 9.1). Values the pinned guest kernel cannot boot with are refused.
    #[arg(long, default_value = "0x1", value_parser = parse_hex)]
    guest_features: u64,
    /// Instead: recompute every digest of measurement.json with sev-snp-measure 0.0.13 from
    /// PyPI (in a virtual environment under target/) and fail on any difference.
    #[arg(long)]
    against_reference: bool,
}

pub(crate) fn parse_hex(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| e.to_string())
}

#[derive(Args)]
struct DemoArgs {
    /// How long to run the network, in seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Run the deterministic simulator instead (this many seeds).
    #[arg(long)]
    sim: Option<u64>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Sim(args) => sim::run(args),
        Cmd::Chaos(args) => chaos(args).map(drop),
        Cmd::Test(args) => test(args),
        Cmd::Demo(args) => demo(args),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Image(args) => {
            let flavour = args.image.flavour();
            let app = args
                .app
                .map(|path| image::ImageApp::new(path, args.app_args, args.app_proxy))
                .transpose()?;
            let out = args.out.unwrap_or_else(|| image::image_dir(flavour));
            image::build_and_print(flavour, app.as_ref(), &out)
        }
        Cmd::Measure(args) => measure(args),
        Cmd::Qemu(args) => qemu::run(args),
        Cmd::SimulatedRoot => simulated_root(),
        Cmd::Mutants => mutants(),
    }
}

fn measure(args: MeasureArgs) -> Result<()> {
    if args.against_reference {
        return image::check_against_reference();
    }
    let dir = image::image_dir(args.image.flavour());
    if !dir.join("bzImage").exists() {
        bail!(
            "no image in {}: run `cargo xtask image{}` first",
            dir.display(),
            if args.image.simulated {
                " --simulated"
            } else {
                ""
            }
        );
    }
    let digest = image::launch_digest(&dir, args.vcpus, args.cpu_type, args.guest_features)?;
    eprintln!(
        "measure: SEV-SNP launch digest of {} for {} vCPUs, {:?}, guest features {:#x}, QEMU",
        dir.display(),
        args.vcpus,
        args.cpu_type,
        args.guest_features
    );
    println!("{digest}");
    Ok(())
}

fn cargo() -> Command {
    harness::cargo()
}

fn test(args: TestArgs) -> Result<()> {
    let started = Instant::now();
    // Each phase's time, so that a slow CI run says where its minutes went.
    let mut last = Instant::now();
    let mut lap = |phase: &str| {
        eprintln!(
            "xtask: {phase} took {:.0?} ({:.0?} in all)",
            last.elapsed(),
            started.elapsed()
        );
        last = Instant::now();
    };
    let (p1, f1) = harness::cargo_test(&["--workspace", "--all-targets"], &args.rest)?;
    let (p2, f2) = harness::cargo_test(&["--workspace", "--doc"], &[])?;
    lap("cargo test");
    // The headline simulations of the consensus issue, at full size: each exits non-zero on
    // any violation and prints its seed and replay command.
    let mut sims = 0;
    for (seeds, validators, byzantine) in [(20_000, 4, 1), (2_000, 7, 2)] {
        eprintln!("xtask: cargo xtask sim --seeds {seeds} --validators {validators} --byzantine {byzantine}");
        sim::run(sim::SimArgs {
            seeds,
            validators,
            byzantine,
            ..sim::SimArgs::default()
        })?;
        sims += 1;
    }
    lap("consensus-core sweeps");
    // The node's real engines: every byzantine behaviour in the mix, storage faults, the
    // checker's invariants (issue 11: at least 2,000 seeds in CI).
    // Disk faults are in every world; with no byzantine validator most still demand liveness.
    for (seeds, validators, byzantine) in [(1_600, 4, 1), (200, 7, 2), (200, 4, 0)] {
        eprintln!("xtask: cargo xtask sim --engine --seeds {seeds} --validators {validators} --byzantine {byzantine}");
        sim::run(sim::SimArgs {
            seeds,
            validators,
            byzantine,
            engine: true,
            ..sim::SimArgs::default()
        })?;
        sims += 1;
        lap(&format!("the engine sweep of {validators} validators"));
    }
    // Planted bugs: each must be caught by the engine simulator.
    eprintln!("xtask: cargo xtask mutants");
    mutants()?;
    sims += 1;
    // The instance rule's planted bugs are caught against engines on disk too: signing
    // whatever the register of claims says (by the rollback, clone and launch-copy tests),
    // claims left out of blocks and block sync on stuck ticks only (a restarted instance
    // far behind must sign again within a bound).
    let (p_planted, f_planted) = harness::cargo_test(
        &[
            "--workspace",
            "--features",
            PLANTED_FEATURES,
            "--test",
            "instances",
            "planted",
        ],
        &[],
    )?;
    if p_planted < 5 {
        bail!("the instance rule's planted-bug tests did not run");
    }
    lap("planted mutants");
    // Four validator processes under 50 kills, partitions, loss and delay (docs/RELIABILITY.md).
    eprintln!("xtask: cargo xtask chaos --kills 50 --json");
    let run = harness::chaos::ChaosArgs {
        kills: 50,
        seed: 1,
        json: true,
        release: false,
        double_signer: false,
    };
    let figures = chaos(run.clone())?;
    if figures.kills < 50 {
        bail!("the chaos run made {} kills, not 50", figures.kills);
    }
    // The same checks against a planted double signer (no faults needed): they must catch it.
    eprintln!("xtask: cargo xtask chaos --kills 0 --double-signer");
    chaos(harness::chaos::ChaosArgs {
        kills: 0,
        double_signer: true,
        ..run
    })?;
    sims += 2;
    lap("chaos");
    // The images end to end (tests/vm.rs): both flavours built from pinned inputs; 4
    // validator VMs of the simulated image enrol, get a genesis assembled on the host, boot
    // under QEMU (q35, UEFI, the SEV-SNP device options), commit together and power off
    // cleanly; then the host's attacks on them, and the production image under TCG. They are
    // ignored tests so that a plain `cargo test` says they did not run instead of failing
    // without the images. Every published digest is first recomputed with AMD's reference tool.
    crate::apt::ensure_packages(&vm_harness::vm::VM_PACKAGES)?;
    image::build(image::Flavour::Production)?;
    image::build(image::Flavour::Simulated)?;
    // Images carrying an ABCI application (`--app`): ours that checks every request, over a
    // Unix socket, and tendermint-abci's kvstore, whose server speaks TCP only.
    for (app, args, proxy) in [
        ("abci-conformance", vec![], image::DEFAULT_APP_PROXY),
        (
            "tendermint-kvstore",
            vec!["127.0.0.1:26658".to_string()],
            "tcp://127.0.0.1:26658",
        ),
    ] {
        let binary = image::static_abci_app(app)?;
        image::build_into(
            image::Flavour::Simulated,
            Some(&image::ImageApp::new(binary, args, proxy.into())?),
            &vm_harness::vm::app_image_dir(app),
        )?;
    }
    image::check_against_reference()?;
    lap("image builds");
    // The VM tests are the workspace's only ignored tests: running just the ignored ones of the
    // build above reuses it (`-p bulwark-tests` would unify features differently and rebuild).
    let (p3, f3) = harness::cargo_test(
        &[
            "--workspace",
            "--all-targets",
            "--",
            "--ignored",
            "--nocapture",
            // One VM test at a time: each boots VMs that would share the two cores.
            "--test-threads=1",
        ],
        &[],
    )?;
    if p3 == 0 {
        bail!("the VM end-to-end test did not run");
    }
    lap("VM tests");
    eprintln!("xtask: all tests passed in {:.0?}", started.elapsed());
    // One plain closing line that counts every test and simulation sweep.
    println!(
        "tests: {} passed, {} failed",
        p1 + p2 + p3 + p_planted + sims,
        f1 + f2 + f3 + f_planted
    );
    Ok(())
}

/// The features that plant the bugs (`bulwark-engine-sim/mutants` turns on the node's and the
/// core's): both planted-bug test runs name the same set, so the second compiles only its test.
const PLANTED_FEATURES: &str = "bulwark-engine-sim/mutants";

/// `cargo xtask mutants`: the planted-mutant check (a build of the engine simulator with the
/// `mutants` feature, then its mutants test, whose report ends with the caught count).
fn mutants() -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = cargo()
        .args([
            "test",
            "--quiet",
            // The workspace's feature resolution plus the planted bugs (as PLANTED_FEATURES
            // says), so that only the crates the bugs are planted in and those above them
            // are compiled again.
            "--workspace",
            "--features",
            PLANTED_FEATURES,
            "--test",
            "mutants",
            "--",
            "--nocapture",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test for the mutants")?;
    let mut last = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            if line.starts_with("mutant") {
                eprintln!("{line}");
            }
            if line.starts_with("mutants: caught") {
                last = Some(line);
            }
        }
    }
    let status = child.wait()?;
    match last {
        Some(line) => println!("{line}"),
        None => bail!("the mutants test printed no result"),
    }
    if !status.success() {
        bail!("a planted mutant was not caught ({status})");
    }
    Ok(())
}

fn simulated_root() -> Result<()> {
    use bulwark_attest::simulated::{generate_root, SIMULATED_ROOT_SEED};
    eprintln!("xtask: generating RSA-4096 ARK and ASK from seed {SIMULATED_ROOT_SEED:?}");
    let root = generate_root(SIMULATED_ROOT_SEED)?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/attest/simulated");
    std::fs::write(dir.join("ark.pem"), &root.ark_pem)?;
    std::fs::write(dir.join("ask.pem"), &root.ask_pem)?;
    std::fs::write(dir.join("ask-key-NOT-SECRET.pem"), &root.ask_key_pem)?;
    eprintln!("xtask: wrote {}", dir.display());
    Ok(())
}

fn demo(args: DemoArgs) -> Result<()> {
    if let Some(seeds) = args.sim {
        eprintln!("xtask demo: the deterministic simulator, {seeds} seeded 4-validator networks with one byzantine validator, drops, partitions and crashes");
        return sim::run(sim::SimArgs {
            seeds,
            validators: 4,
            byzantine: 1,
            ..sim::SimArgs::default()
        });
    }
    demo::run(args.duration, args.json)
}
