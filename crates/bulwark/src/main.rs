//! `bulwark`: the validator node's binary: operator commands (homes, testnets, attestation
//! evidence) and `start`; as `/init` of the measured guest it runs PID 1's duties first.

use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod attest_cmd;
mod ceremony_cmd;

#[derive(Parser)]
#[command(
    name = "bulwark",
    version,
    about = "Bulwark confidential BFT validator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version.
    Version,
    /// SEV-SNP attestation evidence.
    #[command(subcommand)]
    Attest(AttestCommand),
    /// Run the validator node of a home directory until SIGINT/SIGTERM.
    Start {
        /// The home directory.
        #[arg(long)]
        home: PathBuf,
        /// Run as an unattested full node: no evidence in this node's certificates, plaintext
        /// keys (made at the first start); only where the genesis says
        /// `"attest_full_nodes": false`. Never a validator.
        #[arg(long)]
        unattested: bool,
    },
    /// Create a single-validator home directory by the ceremony through the simulated PSP
    /// (config, sealed identity, enrollment, genesis).
    Init {
        /// The home directory.
        #[arg(long)]
        home: PathBuf,
        /// The chain name (the chain id is `<name>-<hash of the genesis>`).
        #[arg(long, alias = "chain-id", default_value = "bulwark-local")]
        chain_name: String,
    },
    /// Make this process's identity (sealed in HOME/config) and write its enrollment.json;
    /// development only (--simulated): under AMD trust the measured image's enrolling VM is
    /// the validator's launch instance.
    Enroll {
        /// The home directory.
        #[arg(long)]
        home: PathBuf,
        /// This validator's name.
        #[arg(long)]
        moniker: String,
        /// The chain name.
        #[arg(long)]
        chain_name: String,
        /// Use the simulated PSP on the home's simulated chip (development only).
        #[arg(long)]
        simulated: bool,
    },
    /// Open the home's identity and print its public keys (one JSON object): consensus key,
    /// address, node id, and whether genesis lists it.
    ShowValidator {
        /// The home directory.
        #[arg(long)]
        home: PathBuf,
    },
    /// Genesis ceremony commands.
    #[command(subcommand)]
    Genesis(GenesisCommand),
    /// Re-verify every validator of a genesis: one JSON line per validator; exit 0 only when
    /// the chain id certifies the document and every validator's enrollment verifies.
    VerifyGenesis {
        /// The genesis file.
        genesis: PathBuf,
        /// Judge certificate validity at this time (Unix seconds) instead of now.
        #[arg(long)]
        at: Option<u64>,
    },
    /// Print a config.toml: for a VM, the host hands it in as fw_cfg
    /// `opt/bulwark/config.toml`.
    NodeConfig(NodeConfigArgs),
    /// Create the homes of a local test network: OUTPUT/node{i}, distinct loopback ports,
    /// every node a persistent peer of every other.
    Testnet {
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Output directory.
        #[arg(long)]
        output: PathBuf,
        /// The chain name (the chain id is `<name>-<hash of the genesis>`).
        #[arg(long, alias = "chain-id", default_value = "bulwark-testnet")]
        chain_name: String,
        /// P2P port of node0; node i uses base + 10i (p2p) and base + 10i + 1 (RPC).
        #[arg(long, default_value_t = 26656)]
        base_port: u16,
        /// The genesis's `app_state` (JSON).
        #[arg(long, default_value = "{}", value_parser = parse_json)]
        app_state: serde_json::Value,
        /// Full nodes after the validators: enrolled the same way, not in the genesis.
        #[arg(long, default_value_t = 0)]
        full_nodes: usize,
        /// Admit full nodes: genesis `attest_full_nodes` (`true`: attested ones; `false`:
        /// unattested ones too). `--full-nodes` implies `true` unless given.
        #[arg(long)]
        attest_full_nodes: Option<bool>,
    },
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Arguments of `bulwark node-config`.
#[derive(Args, Debug)]
pub struct NodeConfigArgs {
    /// This node's name.
    #[arg(long)]
    pub moniker: String,
    /// Where to listen for peers.
    #[arg(long, default_value = "0.0.0.0:26656")]
    pub p2p_laddr: std::net::SocketAddr,
    /// Where to serve JSON-RPC.
    #[arg(long, default_value = "0.0.0.0:26657")]
    pub rpc_laddr: std::net::SocketAddr,
    /// A peer to keep connected to (repeatable).
    #[arg(long)]
    pub peer: Vec<std::net::SocketAddr>,
    /// The wait after a commit before the next height, in milliseconds.
    #[arg(long)]
    pub timeout_commit_ms: Option<u64>,
}

#[derive(Subcommand)]
enum GenesisCommand {
    /// Verify every enrollment and write the genesis: validators, their enrollments, the
    /// attestation policy and the self-certifying chain id.
    Assemble(AssembleArgs),
}

/// Arguments of `bulwark genesis assemble`.
#[derive(Args, Debug)]
pub struct AssembleArgs {
    /// The chain name.
    #[arg(long)]
    pub chain_name: String,
    /// An enrollment.json; repeatable, in validator order.
    #[arg(long, required = true)]
    pub enrollment: Vec<PathBuf>,
    /// The allowed measurements: the image's measurement.json or a JSON list of digests.
    #[arg(long)]
    pub measurements: PathBuf,
    /// The attestation policy (JSON; its measurements are replaced); default: the strict
    /// template under AMD trust.
    #[arg(long, conflicts_with = "simulated")]
    pub policy: Option<PathBuf>,
    /// The strict template under simulated trust instead (development networks, the
    /// simulated image; development builds only).
    #[arg(long)]
    pub simulated: bool,
    /// Where to write genesis.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Admit full nodes (genesis `attest_full_nodes`): `true`, peers whose key is not a
    /// validator's but whose evidence passes the policy (a validator that joins later syncs as
    /// one first); `false`, those and peers without evidence, never counted as validators.
    /// Absent: only the validator set connects.
    #[arg(long)]
    pub attest_full_nodes: Option<bool>,
    /// The genesis's `app_state` (JSON), which the application's InitChain takes.
    #[arg(long, default_value = "{}", value_parser = parse_json)]
    pub app_state: serde_json::Value,
}

#[derive(Subcommand)]
enum AttestCommand {
    /// Verify a report and its VCEK/VLEK against AMD's pinned roots and a policy; prints one
    /// JSON object and exits 0 only when verified.
    Verify(VerifyArgs),
    /// Produce evidence (report + endorsement certificate) from /dev/sev-guest, or from the
    /// simulated PSP with --simulated.
    Report(ReportArgs),
}

/// Arguments of `bulwark attest report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// REPORT_DATA (128 hex digits).
    #[arg(long)]
    pub report_data: String,
    /// Where to write the report (1184 raw bytes).
    #[arg(long)]
    pub out: PathBuf,
    /// Where to write the VCEK/VLEK certificate (DER); default: OUT.vcek.der.
    #[arg(long)]
    pub cert_out: Option<PathBuf>,
    /// Use the simulated PSP (development only: its evidence proves nothing).
    #[arg(long)]
    pub simulated: bool,
    /// Simulated chip secret (64 hex digits); default: a fixed development chip.
    #[arg(long, requires = "simulated")]
    pub chip_secret: Option<String>,
    /// Simulated launch measurement (96 hex digits); default: zero.
    #[arg(long, requires = "simulated")]
    pub measurement: Option<String>,
}

/// Arguments of `bulwark attest verify`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("key").required(true).args(["vcek", "vlek"])))]
#[command(group(ArgGroup::new("measurements").required(true).args(["measurement", "any_measurement", "policy"])))]
pub struct VerifyArgs {
    /// The attestation report: 1184 raw bytes, or the same as hex text.
    #[arg(long)]
    pub report: PathBuf,
    /// VCEK certificate (DER or PEM).
    #[arg(long)]
    pub vcek: Option<PathBuf>,
    /// VLEK certificate (DER or PEM).
    #[arg(long)]
    pub vlek: Option<PathBuf>,
    /// The host's ARK/ASK(/ASVK) chain (DER or PEM): never trusted, only compared with the
    /// pinned roots.
    #[arg(long)]
    pub ask_ark: Option<PathBuf>,
    /// A whole attestation policy (JSON, as in genesis's `attestation` section) instead of
    /// the strict template adjusted by the flags below.
    #[arg(long, conflicts_with_all = ["measurement", "any_measurement", "simulated", "any_tcb", "allow_debug", "allow_provisional_tcb", "allow_vlek", "vlek_csp", "no_alias_check", "vmpl"])]
    pub policy: Option<PathBuf>,
    /// An allowed launch measurement (96 hex digits); repeatable.
    #[arg(long)]
    pub measurement: Vec<String>,
    /// Accept any measurement (inspection only).
    #[arg(long)]
    pub any_measurement: bool,
    /// No TCB or firmware floors, every product line, report version 2 (inspecting old
    /// evidence only).
    #[arg(long)]
    pub any_tcb: bool,
    /// Accept a guest policy that allows debugging.
    #[arg(long)]
    pub allow_debug: bool,
    /// Accept a current TCB and firmware above the committed ones.
    #[arg(long)]
    pub allow_provisional_tcb: bool,
    /// Accept VLEK-signed reports (of the clouds named with --vlek-csp).
    #[arg(long)]
    pub allow_vlek: bool,
    /// A cloud whose VLEKs are accepted (its CSP_ID, e.g. CN=cc-us-east-2.amazonaws.com);
    /// repeatable.
    #[arg(long, requires = "allow_vlek")]
    pub vlek_csp: Vec<String>,
    /// Do not require the completed memory alias check (hosts before AMD-SB-3015's fix).
    #[arg(long)]
    pub no_alias_check: bool,
    /// The VMPL the report must come from.
    #[arg(long, default_value_t = 0)]
    pub vmpl: u32,
    /// The expected REPORT_DATA (128 hex digits).
    #[arg(long)]
    pub report_data: Option<String>,
    /// Without --report-data, still exit 0 for evidence that passes every other check (it is
    /// bound to nothing, so it proves nothing fresh).
    #[arg(long, conflicts_with = "report_data")]
    pub allow_unbound: bool,
    /// Check certificate validity and CRL age at this time (Unix seconds) instead of now.
    #[arg(long)]
    pub at: Option<u64>,
    /// Trust the project's simulated root instead of AMD's (development networks only).
    #[arg(long)]
    pub simulated: bool,
}

#[global_allocator] // mimalloc: glibc's arenas took a third of a validator's CPU
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // As /init of the measured guest the kernel starts us as PID 1 with no arguments.
    if std::process::id() == 1 {
        bulwark_boot::run(|disk| {
            logging(false);
            bulwark::guest::run(disk)
        });
    }
    let cli = Cli::parse();
    let result: Result<ExitCode> = match cli.command {
        Command::Version => {
            println!("bulwark {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Attest(AttestCommand::Verify(args)) => attest_cmd::verify(&args),
        Command::Attest(AttestCommand::Report(args)) => attest_cmd::report(&args),
        Command::Enroll {
            home,
            moniker,
            chain_name,
            simulated,
        } => ceremony_cmd::enroll(&home, &moniker, &chain_name, simulated),
        Command::ShowValidator { home } => ceremony_cmd::show_validator(&home),
        Command::NodeConfig(args) => node_config(&args),
        Command::Genesis(GenesisCommand::Assemble(args)) => ceremony_cmd::assemble(&args),
        Command::VerifyGenesis { genesis, at } => ceremony_cmd::verify_genesis(&genesis, at),
        Command::Start { home, unattested } => {
            use std::io::IsTerminal;
            logging(std::io::stderr().is_terminal());
            let load = if unattested {
                bulwark::home::Home::load_unattested
            } else {
                bulwark::home::Home::load
            };
            load(&home)
                .map_err(anyhow::Error::from)
                .and_then(bulwark::run::start)
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Init { home, chain_name } => bulwark::home::init(&home, &chain_name)
            .map(|()| print_homes(vec![home]))
            .map_err(Into::into),
        Command::Testnet {
            validators,
            output,
            chain_name,
            base_port,
            app_state,
            full_nodes,
            attest_full_nodes,
        } => bulwark::home::testnet(
            &output,
            bulwark::home::TestnetSpec {
                validators,
                full_nodes,
                attest_full_nodes: attest_full_nodes.or((full_nodes > 0).then_some(true)),
                chain_name,
                base_port,
                app_state,
            },
        )
        .map(print_homes)
        .map_err(Into::into),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bulwark: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints the homes made, one per line.
fn print_homes(homes: Vec<PathBuf>) -> ExitCode {
    homes.iter().for_each(|h| println!("{}", h.display()));
    ExitCode::SUCCESS
}

/// `bulwark node-config`.
fn node_config(args: &NodeConfigArgs) -> Result<ExitCode> {
    let mut config = bulwark::home::NodeConfig::new(&args.moniker, 0, 0);
    config.p2p.laddr = args.p2p_laddr;
    config.rpc.laddr = args.rpc_laddr;
    config.p2p.persistent_peers = args.peer.clone();
    if let Some(ms) = args.timeout_commit_ms {
        config.consensus.timeout_commit_ms = ms;
    }
    config.check().map_err(anyhow::Error::msg)?;
    print!("{}", toml::to_string_pretty(&config)?);
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr, at `RUST_LOG`'s filter or `info`.
fn logging(ansi: bool) {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// Reads a file, naming it in the error.
pub fn read(path: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}
