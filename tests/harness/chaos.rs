//! The chaos run of `cargo xtask chaos`: a 4-validator network of real `bulwark` processes, each in a network
//! namespace of its own on a bridge the run creates, under random SIGKILLs and restarts,
//! partitions, packet loss and rate limits; then the invariants: no conflicting signatures by
//! any key, no lost commit, progress after the faults end.
//!
//! Faults come one at a time: a validator killed is restarted and must sign again (its new
//! instance's claim committed by the other three) before the next fault, because a second
//! validator down while the first waits for its claim leaves no two thirds to commit it (the
//! instance rule's liveness limit, `bulwark_instance`). `tc netem` is used for delays and loss
//! where the kernel has it; where it has not (this workplace's kernel has no `sch_netem`),
//! loss comes from nftables (`numgen random`) and delay from a `tbf` rate limit's queue.

use crate::process::{self, Node};
use crate::rpc::RpcClient;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const VALIDATORS: usize = 4;

/// What a chaos run does (`cargo xtask chaos` options).
#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// SIGKILLs (each followed by a restart).
    #[arg(long, default_value_t = 50)]
    pub kills: u64,
    /// Seed of the fault schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// End with one JSON line of the figures on stdout.
    #[arg(long)]
    pub json: bool,
    /// Run the release build of `bulwark` (the long run: less CPU per node), not the debug.
    #[arg(long)]
    pub release: bool,
    /// Plant a double signer, to show the invariants can fail: the last validator runs
    /// `bulwark-byzantine double-vote` (the real driver, signing two votes at every step).
    /// The run then succeeds only if its checks caught it.
    #[arg(long)]
    pub double_signer: bool,
}

/// The validator that plays the double signer under `--double-signer`.
const PLANTED: usize = VALIDATORS - 1;

/// The run's figures.
#[derive(Debug, Default, Clone)]
#[allow(missing_docs)]
pub struct Figures {
    pub kills: u64,
    pub partitions: u64,
    pub loss_episodes: u64,
    pub delay_episodes: u64,
    pub conflicting_signatures: u64,
    pub equivocations_detected: u64,
    pub signatures_checked: u64,
    pub evidence_committed: u64,
    pub lost_commits: u64,
    pub height: u64,
    pub heights_checked: u64,
    pub seconds: f64,
    /// Seconds from a restart to its new instance signing: median and largest.
    pub sign_again_median_s: f64,
    pub sign_again_max_s: f64,
    pub netem: bool,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn run_cmd(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces, their veths and the bridge; removed when dropped.
struct Netns {
    tag: u32,
    subnet: u32,
    netem: bool,
}

impl Netns {
    fn create() -> Result<Netns> {
        let tag = std::process::id() % 100_000;
        let net = Netns {
            tag,
            subnet: 10 + tag % 240,
            netem: false,
        };
        let bridge = net.bridge();
        run_cmd("ip", &["link", "add", &bridge, "type", "bridge"])
            .context("creating the bridge (needs root and iproute2)")?;
        run_cmd(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.host_ip()),
                "dev",
                &bridge,
            ],
        )?;
        run_cmd("ip", &["link", "set", &bridge, "up"])?;
        for i in 0..VALIDATORS {
            let ns = net.ns(i);
            let veth = format!("{bridge}v{i}");
            run_cmd("ip", &["netns", "add", &ns])?;
            run_cmd(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run_cmd("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
            run_cmd(
                "ip",
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/24", net.ip(i)),
                    "dev",
                    "eth0",
                ],
            )?;
            run_cmd("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run_cmd("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            let nft =
                |rule: &str| -> Result<()> { run_cmd("ip", &["netns", "exec", &ns, "nft", rule]) };
            nft("add table inet chaos")?;
            nft("add chain inet chaos cut { type filter hook output priority 0; }")?;
            nft("add chain inet chaos loss { type filter hook output priority 1; }")?;
        }
        let probe = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.ns(0),
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
            ])
            .args(["root", "netem", "delay", "1ms"])
            .output()?;
        let mut net = net;
        net.netem = probe.status.success();
        if net.netem {
            let _ = run_cmd(
                "ip",
                &[
                    "netns",
                    "exec",
                    &net.ns(0),
                    "tc",
                    "qdisc",
                    "del",
                    "dev",
                    "lo",
                    "root",
                ],
            );
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("bwc{}", self.tag)
    }
    fn ns(&self, i: usize) -> String {
        format!("bulwark-chaos-{}-{i}", self.tag)
    }
    fn ip(&self, i: usize) -> String {
        format!("10.78.{}.{}", self.subnet, i + 1)
    }
    fn host_ip(&self) -> String {
        format!("10.78.{}.254", self.subnet)
    }

    fn nft(&self, i: usize, rule: &str) -> Result<()> {
        run_cmd("ip", &["netns", "exec", &self.ns(i), "nft", rule])
    }

    /// Cuts the links between the two sides (both directions).
    fn partition(&self, side: &[bool]) -> Result<()> {
        for i in 0..VALIDATORS {
            for j in 0..VALIDATORS {
                if side[i] != side[j] {
                    self.nft(
                        i,
                        &format!("add rule inet chaos cut ip daddr {} drop", self.ip(j)),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn heal(&self) -> Result<()> {
        for i in 0..VALIDATORS {
            self.nft(i, "flush chain inet chaos cut")?;
        }
        Ok(())
    }

    /// Drops `percent` of node `i`'s packets to its peers (0: none).
    fn loss(&self, i: usize, percent: u64) -> Result<()> {
        if self.netem {
            return self.netem_on(i, &format!("loss {percent}%"), percent == 0);
        }
        self.nft(i, "flush chain inet chaos loss")?;
        if percent > 0 {
            self.nft(
                i,
                &format!("add rule inet chaos loss ip daddr 10.78.{}.0/24 numgen random mod 100 < {percent} drop", self.subnet),
            )?;
        }
        Ok(())
    }

    /// Delays node `i`'s packets: netem where the kernel has it, else a tight rate limit
    /// whose queue delays them (`None`: clear).
    fn delay(&self, i: usize, ms: Option<u64>) -> Result<()> {
        let ns = self.ns(i);
        let _ = run_cmd(
            "ip",
            &[
                "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
            ],
        );
        let Some(ms) = ms else { return Ok(()) };
        if self.netem {
            return self.netem_on(i, &format!("delay {ms}ms {}ms", ms / 4), false);
        }
        run_cmd(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                "tbf",
                "rate",
                "2mbit",
                "burst",
                "16kb",
                "latency",
                &format!("{ms}ms"),
            ],
        )
    }

    fn netem_on(&self, i: usize, what: &str, clear: bool) -> Result<()> {
        let ns = self.ns(i);
        let _ = run_cmd(
            "ip",
            &[
                "netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root",
            ],
        );
        if clear {
            return Ok(());
        }
        let mut args = vec!["netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0"];
        args.extend(["root", "netem"]);
        args.extend(what.split(' '));
        run_cmd("ip", &args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for i in 0..VALIDATORS {
            let _ = run_cmd("ip", &["netns", "del", &self.ns(i)]);
        }
        let _ = run_cmd("ip", &["link", "del", &self.bridge()]);
    }
}

/// Every vote signature any instance of any validator logged ("signed vote", before it left),
/// by validator, height, round and kind: two block ids at one key are conflicting signatures.
#[derive(Debug, Default)]
pub struct SignatureLedger {
    signed: BTreeMap<(String, u64, u32, String), String>,
    /// Conflicting signatures found, by validator address.
    pub conflicts: BTreeMap<String, u64>,
    /// Signatures read.
    pub signatures: u64,
}

impl SignatureLedger {
    /// Takes in the "signed vote" lines of a log (a line read twice counts once), with or
    /// without terminal colours.
    pub fn absorb(&mut self, log: &str) {
        for line in log.lines().filter(|l| l.contains("signed vote")) {
            let line = &strip_colours(line);
            let field = |name: &str| {
                let start = line.find(&format!(" {name}="))? + name.len() + 2;
                let rest = &line[start..];
                Some(
                    rest.split_whitespace()
                        .next()?
                        .trim_matches('"')
                        .to_string(),
                )
            };
            let (Some(h), Some(r), Some(kind), Some(block), Some(validator)) = (
                field("height").and_then(|h| h.parse::<u64>().ok()),
                field("round").and_then(|r| r.parse::<u32>().ok()),
                field("kind"),
                field("block"),
                field("validator"),
            ) else {
                continue;
            };
            self.signatures += 1;
            match self.signed.get(&(validator.clone(), h, r, kind.clone())) {
                Some(first) if *first != block => {
                    *self.conflicts.entry(validator).or_default() += 1;
                }
                Some(_) => {}
                None => {
                    self.signed.insert((validator, h, r, kind), block);
                }
            }
        }
    }

    /// Conflicting signatures by validators other than `except`.
    pub fn conflicts_except(&self, except: &str) -> u64 {
        self.conflicts
            .iter()
            .filter(|(v, _)| v.as_str() != except)
            .map(|(_, n)| n)
            .sum()
    }
}

/// `line` without ANSI SGR sequences (`ESC [ ... m`).
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct Network {
    net: Netns,
    bin: PathBuf,
    /// `bulwark-byzantine`, when validator [`PLANTED`] double-signs.
    double_signer: Option<PathBuf>,
    homes: Vec<PathBuf>,
    nodes: Vec<Option<Node>>,
    rpc: Vec<RpcClient>,
    /// Per height, the hash some node reported committed and which node.
    seen: BTreeMap<u64, (String, usize)>,
    /// Equivocations the honest nodes' engines reported ("double-signed").
    equivocations_detected: u64,
    /// Every signature every instance logged.
    ledger: SignatureLedger,
    forks_seen: u64,
    txs: u64,
}

impl Network {
    fn start(&mut self, i: usize) -> Result<()> {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.net.ns(i)]);
        match &self.double_signer {
            Some(byzantine) if i == PLANTED => command
                .arg(byzantine)
                .arg("double-vote")
                .arg(&self.homes[i])
                .arg(&self.bin),
            _ => command
                .arg(&self.bin)
                .arg("start")
                .arg("--home")
                .arg(&self.homes[i]),
        };
        self.nodes[i] = Some(Node::spawn(command, &self.homes[i])?);
        Ok(())
    }

    fn status(&mut self, i: usize) -> Option<Value> {
        self.rpc[i].call("status", json!({})).ok()
    }

    /// Notes what each node says it committed last; a second hash at one height is a fork.
    fn observe(&mut self) {
        for i in 0..VALIDATORS {
            let Some(s) = self.status(i) else { continue };
            let height = s
                .pointer("/sync_info/latest_block_height")
                .and_then(Value::as_str)
                .and_then(|h| h.parse::<u64>().ok());
            let hash = s
                .pointer("/sync_info/latest_block_hash")
                .and_then(Value::as_str)
                .map(str::to_string);
            if let (Some(h), Some(hash)) = (height, hash) {
                if h == 0 {
                    continue;
                }
                match self.seen.get(&h) {
                    Some((first, _)) if *first != hash => self.forks_seen += 1,
                    Some(_) => {}
                    None => {
                        self.seen.insert(h, (hash, i));
                    }
                }
            }
        }
        // A little client load, so blocks carry transactions.
        let i = (self.txs % VALIDATORS as u64) as usize;
        let tx = hex_encode(format!("chaos{}=v{}", self.txs, self.txs).as_bytes());
        let _ = self.rpc[i].call("broadcast_tx_async", json!({ "tx": tx }));
        self.txs += 1;
    }

    fn height(&mut self, i: usize) -> Option<u64> {
        crate::rpc::height(&mut self.rpc[i])
    }

    fn top(&mut self) -> u64 {
        (0..VALIDATORS)
            .filter_map(|i| self.height(i))
            .max()
            .unwrap_or(0)
    }

    /// Reads node `i`'s log before it is started again (a start begins a new log): every
    /// signature it made, and the equivocations its engine reports (its double-sign detector).
    fn scan_log(&mut self, i: usize) {
        let text = std::fs::read_to_string(self.homes[i].join("bulwark.log")).unwrap_or_default();
        self.ledger.absorb(&text);
        // The planted double signer's own detector does not count: the honest ones must see it.
        if self.double_signer.is_some() && i == PLANTED {
            return;
        }
        self.equivocations_detected +=
            text.lines().filter(|l| l.contains("double-signed")).count() as u64;
    }

    fn signing(&mut self, i: usize) -> bool {
        self.status(i)
            .and_then(|s| {
                s.pointer("/bulwark_instance/signing")
                    .and_then(Value::as_bool)
            })
            .unwrap_or(false)
    }

    /// Waits until every node passes `height`.
    fn wait_all(&mut self, height: u64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let heights: Vec<Option<u64>> = (0..VALIDATORS).map(|i| self.height(i)).collect();
            if heights.iter().all(|h| h.is_some_and(|h| h >= height)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the network did not reach height {height} within {limit:?}: {heights:?}");
            }
            self.observe();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn remove_leftovers() {
    let listed = |args: &[&str]| -> String {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for ns in listed(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("bulwark-chaos-"))
    {
        let _ = run_cmd("ip", &["netns", "del", ns]);
    }
    for link in listed(&["-o", "link", "show", "type", "bridge"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|n| n.starts_with("bwc"))
    {
        let _ = run_cmd("ip", &["link", "del", link]);
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rewrites every loopback address of node `j`'s ports to its namespace's address.
fn move_off_loopback(homes: &[PathBuf], base: u16, net: &Netns) -> Result<()> {
    for home in homes {
        let cfg = home.join("config/config.toml");
        let mut text = std::fs::read_to_string(&cfg)?;
        for j in 0..VALIDATORS {
            for k in 0..10 {
                let port = usize::from(base) + 10 * j + k;
                text = text.replace(
                    &format!("127.0.0.1:{port}\""),
                    &format!("{}:{port}\"", net.ip(j)),
                );
            }
        }
        std::fs::write(&cfg, text)?;
    }
    Ok(())
}

/// The Debian packages a chaos run needs (`ip`, `tc`, `nft`).
pub const PACKAGES: [&str; 2] = ["iproute2", "nftables"];

/// Runs the chaos schedule and checks the invariants; the figures. Needs root and
/// [`PACKAGES`].
pub fn run(args: &ChaosArgs) -> Result<Figures> {
    let started = Instant::now();
    // A run killed before it could clean up leaves its namespaces and bridge: one chaos run
    // at a time per machine, so any left are removed first.
    remove_leftovers();
    let net = Netns::create()?;
    eprintln!(
        "chaos: {VALIDATORS} validators in network namespaces on bridge {} ({}); delays and loss by {}",
        net.bridge(),
        format_args!("10.78.{}.0/24", net.subnet),
        if net.netem {
            "tc netem"
        } else {
            "nftables random drops and a tbf rate limit (this kernel has no sch_netem)"
        }
    );
    let bin = if args.release {
        process::build_bulwark(true)?
    } else {
        process::bulwark_binary()?
    };
    // The homes stay for inspection if the run fails; removed when it passes.
    let dir = process::target_dir().join(format!("chaos/{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let base = crate::ports::free_block(10 * VALIDATORS as u16)?;
    let homes = process::testnet(&bin, &dir, VALIDATORS, base, process::FAST_TIMEOUTS)?;
    move_off_loopback(&homes, base, &net)?;
    let rpc = (0..VALIDATORS)
        .map(|i| RpcClient::new(&format!("{}:{}", net.ip(i), usize::from(base) + 10 * i + 1)))
        .collect();
    let mut n = Network {
        net,
        bin,
        double_signer: if args.double_signer {
            Some(process::byzantine_binary()?)
        } else {
            None
        },
        homes,
        nodes: (0..VALIDATORS).map(|_| None).collect(),
        rpc,
        seen: BTreeMap::new(),
        equivocations_detected: 0,
        ledger: SignatureLedger::default(),
        forks_seen: 0,
        txs: 0,
    };
    for i in 0..VALIDATORS {
        n.start(i)?;
    }
    n.wait_all(3, Duration::from_secs(120))
        .context("the network did not start")?;
    let mut rng = Rng(args.seed ^ 0x0063_6861_6f73);
    let mut fig = Figures {
        netem: n.net.netem,
        ..Figures::default()
    };
    let mut sign_again: Vec<f64> = Vec::new();
    while fig.kills < args.kills {
        // A kill and restart; it must sign again before anything else happens.
        let i = rng.below(VALIDATORS as u64) as usize;
        if let Some(mut node) = n.nodes[i].take() {
            node.signal("-KILL")?;
            let _ = node.child.wait();
        }
        n.scan_log(i);
        fig.kills += 1;
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        n.start(i)?;
        let restarted = Instant::now();
        loop {
            n.observe();
            if n.signing(i) {
                break;
            }
            if restarted.elapsed() > Duration::from_secs(120) {
                bail!(
                    "validator {i} did not sign again within 120 s of its restart (kill {}):\n{}",
                    fig.kills,
                    n.nodes[i].as_ref().map(Node::tail).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        sign_again.push(restarted.elapsed().as_secs_f64());
        // Then, often, a network fault of a few seconds.
        match rng.below(4) {
            0 => {
                let side: Vec<bool> = if rng.below(2) == 0 {
                    let alone = rng.below(VALIDATORS as u64) as usize;
                    (0..VALIDATORS).map(|k| k == alone).collect()
                } else {
                    let partner = 1 + rng.below(VALIDATORS as u64 - 1) as usize;
                    (0..VALIDATORS).map(|k| k == 0 || k == partner).collect()
                };
                n.net.partition(&side)?;
                fig.partitions += 1;
                let until = Instant::now() + Duration::from_millis(300 + rng.below(2_000));
                while Instant::now() < until {
                    n.observe();
                    std::thread::sleep(Duration::from_millis(150));
                }
                n.net.heal()?;
            }
            1 => {
                let k = rng.below(VALIDATORS as u64) as usize;
                n.net.loss(k, 5 + rng.below(30))?;
                fig.loss_episodes += 1;
                std::thread::sleep(Duration::from_millis(300 + rng.below(1_500)));
                n.observe();
                n.net.loss(k, 0)?;
            }
            2 => {
                let k = rng.below(VALIDATORS as u64) as usize;
                n.net.delay(k, Some(50 + rng.below(250)))?;
                fig.delay_episodes += 1;
                std::thread::sleep(Duration::from_millis(300 + rng.below(1_500)));
                n.observe();
                n.net.delay(k, None)?;
            }
            _ => {}
        }
        if fig.kills % 10 == 0 {
            eprintln!(
                "chaos: {} kills, {} partitions, {} loss and {} delay episodes, height {}, {:.0} s",
                fig.kills,
                fig.partitions,
                fig.loss_episodes,
                fig.delay_episodes,
                n.top(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    // The faults are over: everyone must progress.
    let top = n.top();
    n.wait_all(top + 5, Duration::from_secs(120))
        .context("no progress after the faults ended")?;
    for i in 0..VALIDATORS {
        n.scan_log(i);
    }
    n.observe();
    // Every block any node reported committed is in every node's chain, and the chains agree
    // at every height.
    let end = (0..VALIDATORS)
        .filter_map(|i| n.height(i))
        .min()
        .unwrap_or(0);
    let mut lost = n.forks_seen;
    let mut evidence = 0;
    // Under --double-signer, evidence must name the planted validator and nobody else.
    let planted = n
        .status(PLANTED)
        .and_then(|s| {
            s.pointer("/validator_info/address")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let mut evidence_against_others = 0;
    for h in 1..=end {
        let mut hashes = Vec::new();
        for i in 0..VALIDATORS {
            let block = n.rpc[i]
                .call("block", json!({ "height": h.to_string() }))
                .with_context(|| format!("block {h} of node {i}"))?;
            let hash = block
                .pointer("/block_id/hash")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if i == 0 {
                let pieces = block
                    .pointer("/block/evidence/evidence")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                evidence += pieces.len() as u64;
                evidence_against_others += pieces
                    .iter()
                    .filter(|e| {
                        e.pointer("/value/vote_a/validator_address")
                            .and_then(Value::as_str)
                            != Some(planted.as_str())
                    })
                    .count() as u64;
            }
            hashes.push(hash);
        }
        let reported = n.seen.get(&h).map(|(hash, _)| hash.clone());
        if hashes.iter().any(|x| *x != hashes[0])
            || reported.is_some_and(|r| hashes.iter().any(|x| *x != r))
        {
            lost += 1;
        }
    }
    for node in n.nodes.iter_mut().flatten() {
        let _ = node.stop_cleanly();
    }
    sign_again.sort_by(|a, b| a.total_cmp(b));
    // Conflicting signatures by honest keys, across every instance of each: none may exist.
    let honest_planted = if args.double_signer {
        planted.as_str()
    } else {
        ""
    };
    fig.conflicting_signatures = n.ledger.conflicts_except(honest_planted);
    let planted_conflicts = n.ledger.conflicts.get(&planted).copied().unwrap_or(0);
    fig.equivocations_detected = n.equivocations_detected;
    fig.signatures_checked = n.ledger.signatures;
    fig.evidence_committed = evidence;
    fig.lost_commits = lost;
    fig.height = end;
    fig.heights_checked = end;
    fig.seconds = started.elapsed().as_secs_f64();
    fig.sign_again_median_s = sign_again.get(sign_again.len() / 2).copied().unwrap_or(0.0);
    fig.sign_again_max_s = sign_again.last().copied().unwrap_or(0.0);
    let summary = json!({
        "kills": fig.kills,
        "partitions": fig.partitions,
        "conflicting_signatures": fig.conflicting_signatures,
        "equivocations_detected": fig.equivocations_detected,
        "signatures_checked": fig.signatures_checked,
        "lost_commits": fig.lost_commits,
        "height": fig.height,
        "evidence_committed": fig.evidence_committed,
        "loss_episodes": fig.loss_episodes,
        "delay_episodes": fig.delay_episodes,
        "netem": fig.netem,
        "sign_again_median_s": (fig.sign_again_median_s * 100.0).round() / 100.0,
        "sign_again_max_s": (fig.sign_again_max_s * 100.0).round() / 100.0,
        "seconds": fig.seconds.round(),
        "seed": args.seed,
        "build": if args.release { "release" } else { "debug" },
    });
    eprintln!(
        "chaos: {} kills, {} partitions, {} loss and {} delay episodes in {:.0} s; {} heights checked on all {VALIDATORS}: {} conflicting signatures among the {} every instance logged, {} equivocations detected, {} evidence committed, {} lost commits; restarted validators signed again after {:.1} s (median), {:.1} s (max)",
        fig.kills,
        fig.partitions,
        fig.loss_episodes,
        fig.delay_episodes,
        fig.seconds,
        fig.heights_checked,
        fig.conflicting_signatures,
        fig.signatures_checked,
        fig.equivocations_detected,
        fig.evidence_committed,
        fig.lost_commits,
        fig.sign_again_median_s,
        fig.sign_again_max_s
    );
    if args.json {
        println!("{summary}");
    }
    let broken = fig.conflicting_signatures > 0
        || fig.equivocations_detected > 0
        || fig.lost_commits > 0
        || fig.evidence_committed > 0
        || fig.signatures_checked == 0;
    if args.double_signer {
        // Caught means: the honest nodes saw it and committed evidence against it alone, and
        // no commit was lost (one byzantine validator of four must not fork the chain).
        if fig.equivocations_detected == 0
            || planted_conflicts == 0
            || fig.conflicting_signatures > 0
            || fig.evidence_committed == 0
            || evidence_against_others > 0
            || fig.lost_commits > 0
            || planted.is_empty()
        {
            bail!(
                "chaos: the planted double signer (validator {PLANTED}, {planted}) was not caught as it must be: {summary}, {evidence_against_others} pieces of evidence against others (homes and logs in {})",
                dir.display()
            );
        }
        eprintln!(
            "chaos: the planted double signer (validator {PLANTED}) was caught: {planted_conflicts} conflicting signatures in its log, {} double signatures seen by the honest nodes, {} pieces of evidence committed, all against it; 0 lost commits, none by honest keys",
            fig.equivocations_detected, fig.evidence_committed
        );
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(fig);
    }
    if broken {
        bail!(
            "chaos: an invariant broke: {summary} (homes and logs in {})",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(fig)
}

#[cfg(test)]
mod tests {
    use super::SignatureLedger;

    #[test]
    fn the_ledger_finds_two_block_ids_signed_at_one_step_by_one_key_across_logs() {
        let line = |h: u64, kind: &str, block: &str, v: &str| {
            format!("2026-12-06T07:00:00Z  INFO bulwark_node::engine: signed vote height={h} round=0 kind=\"{kind}\" block={block} validator={v}\n")
        };
        let mut ledger = SignatureLedger::default();
        // One instance's log, then a restarted instance's: the same vote again is no conflict.
        ledger.absorb(&(line(5, "prevote", "AB", "V1") + &line(5, "precommit", "AB", "V1")));
        ledger.absorb(&(line(5, "prevote", "AB", "V1") + &line(6, "prevote", "nil", "V1")));
        assert!(ledger.conflicts.is_empty());
        // Another instance of V1 signs another block at a step it signed: caught, by key.
        ledger.absorb(&(line(5, "precommit", "CD", "V1") + &line(5, "precommit", "CD", "V2")));
        assert_eq!(ledger.conflicts.get("V1"), Some(&1));
        assert_eq!(ledger.conflicts_except("V1"), 0);
        assert_eq!(ledger.conflicts_except("V2"), 1);
        assert_eq!(ledger.signatures, 6);
        ledger.absorb("committed height=5\nsigned vote height=x round=0\n");
        assert_eq!(ledger.signatures, 6);
        // A coloured line (a terminal's format) reads the same.
        let coloured = "\u{1b}[2m2026\u{1b}[0m signed vote \u{1b}[3mheight\u{1b}[0m\u{1b}[2m=\u{1b}[0m6 \u{1b}[3mround\u{1b}[0m=0 kind=\"prevote\" block=EF validator=V2";
        ledger.absorb(coloured);
        assert_eq!(ledger.signatures, 7);
        assert_eq!(ledger.conflicts.get("V2"), None);
        ledger.absorb(&line(6, "prevote", "AB", "V2"));
        assert_eq!(ledger.conflicts.get("V2"), Some(&1));
    }
}
