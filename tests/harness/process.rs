//! Real `bulwark` processes: testnet homes, `bulwark start` with its log and committed heights
//! watched, signals and clean stops, and a whole local network on loopback.

use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Timeouts that make a loopback testnet commit several heights a second.
pub const FAST_TIMEOUTS: &[(&str, &str)] = &[
    ("timeout_propose_ms = 3000", "timeout_propose_ms = 600"),
    ("timeout_prevote_ms = 1000", "timeout_prevote_ms = 200"),
    ("timeout_precommit_ms = 1000", "timeout_precommit_ms = 200"),
    ("timeout_commit_ms = 1000", "timeout_commit_ms = 100"),
];

/// Log lines kept for a failure message.
const TAIL_LINES: usize = 40;

/// Builds the development `bulwark` binary of this checkout (with the simulated PSP, which
/// process-mode testnets attest with; release: what figures are taken of; debug: what tests
/// run) and returns its path.
pub fn build_bulwark(release: bool) -> Result<PathBuf> {
    build_binary("bulwark", release)
}

/// Builds binary `name` of the package of that name (`bulwark` with the simulated PSP).
fn build_binary(name: &str, release: bool) -> Result<PathBuf> {
    build_binary_of(name, name, release)
}

/// The debug binary `bin` of `bulwark-abci-apps`: an ABCI application a test runs beside a
/// node (`tendermint-kvstore`: tendermint-abci's kvstore).
pub fn abci_app_binary(bin: &str) -> Result<PathBuf> {
    build_binary_of("bulwark-abci-apps", bin, false)
}

fn build_binary_of(package: &str, name: &str, release: bool) -> Result<PathBuf> {
    // Features resolved for the whole workspace, as `cargo test --workspace` resolves them
    // (which gives `bulwark` the simulated PSP through `bulwark-byzantine`): a build of one
    // package would resolve its dependencies' features differently and compile a second copy
    // of half the tree, minutes on a cold CI machine.
    let mut cargo = crate::cargo();
    cargo.args(["build", "--quiet", "--workspace", "--bin", name]);
    if name == "bulwark" {
        // Already on in the workspace's resolution; named so that no change there drops it.
        cargo.args(["--features", "bulwark/simulated-psp"]);
    }
    if release {
        cargo.arg("--release");
    }
    let status = cargo
        .current_dir(crate::workspace())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of {package}'s binary {name} failed ({status})");
    }
    Ok(target_dir()
        .join(if release { "release" } else { "debug" })
        .join(name))
}

/// The debug `bulwark-byzantine` binary (`tests/byzantine`), built once per process.
pub fn byzantine_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_binary("bulwark-byzantine", false).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The debug `bulwark` binary, built once per process: tests always run the code they were
/// built from.
pub fn bulwark_binary() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_bulwark(false).map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Cargo's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace().join("target"))
}

/// Makes the homes of a `validators`-node testnet in `dir` with `bin testnet` (ports from
/// `base`, see [`crate::ports::testnet_block`]) and applies `(from, to)` replacements to every
/// config.toml; each must match.
pub fn testnet(
    bin: &Path,
    dir: &Path,
    validators: usize,
    base: u16,
    config: &[(&str, &str)],
) -> Result<Vec<PathBuf>> {
    testnet_with_app_state(bin, dir, validators, base, config, "{}")
}

/// [`testnet`], with the genesis's `app_state` (JSON).
pub fn testnet_with_app_state(
    bin: &Path,
    dir: &Path,
    validators: usize,
    base: u16,
    config: &[(&str, &str)],
    app_state: &str,
) -> Result<Vec<PathBuf>> {
    let count = validators.to_string();
    let args = ["--validators", &count, "--app-state", app_state];
    testnet_with_args(bin, dir, validators, base, config, &args)
}

/// [`testnet`] with more `bulwark testnet` arguments (`--validators` among them), making
/// `homes` homes (validators, then full nodes).
pub fn testnet_with_args(
    bin: &Path,
    dir: &Path,
    homes: usize,
    base: u16,
    config: &[(&str, &str)],
    args: &[&str],
) -> Result<Vec<PathBuf>> {
    let out = Command::new(bin)
        .args(["testnet", "--output"])
        .arg(dir)
        .args(["--base-port", &base.to_string()])
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "bulwark testnet failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (0..homes)
        .map(|i| {
            let home = dir.join(format!("node{i}"));
            let cfg = home.join("config/config.toml");
            let mut text = std::fs::read_to_string(&cfg)?;
            for (from, to) in config {
                if !text.contains(from) {
                    bail!("{} has no {from:?}", cfg.display());
                }
                text = text.replace(from, to);
            }
            std::fs::write(&cfg, text)?;
            Ok(home)
        })
        .collect()
}

/// The JSON-RPC address (host:port) of node `i` of a testnet made from `base`.
pub fn rpc_addr(base: u16, i: usize) -> String {
    format!("127.0.0.1:{}", usize::from(base) + 10 * i + 1)
}

/// Where node `i` of a testnet made from `base` serves Prometheus metrics once
/// `instrumentation.prometheus` is on (host:port).
pub fn metrics_addr(base: u16, i: usize) -> String {
    format!("127.0.0.1:{}", usize::from(base) + 10 * i + 2)
}

/// The JSON-RPC URL of node `i` of a testnet made from `base`.
pub fn rpc_url(base: u16, i: usize) -> String {
    format!("http://{}", rpc_addr(base, i))
}

/// A running `bulwark start`. Its stderr goes to `HOME/bulwark.log`; committed heights, the
/// last lines and every line about admitting or refusing peers are kept. Dropping it kills
/// the process (a failing test must not leave validators holding ports and CPU).
pub struct Node {
    /// The process.
    pub child: Child,
    /// Its home.
    pub home: PathBuf,
    heights: mpsc::Receiver<u64>,
    /// The highest height it reported committed.
    pub last: u64,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Every line about admitting or refusing peers (and failed accepts).
    pub peer_log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `bin start --home HOME`.
    pub fn start(bin: &Path, home: &Path) -> Result<Node> {
        Self::start_under(&[], bin, home)
    }

    /// Starts `bin start --home HOME` under a wrapper command (e.g. `prlimit --nofile=256 --`).
    pub fn start_under(wrapper: &[&str], bin: &Path, home: &Path) -> Result<Node> {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        command.arg("start").arg("--home").arg(home);
        Node::spawn(command, home)
    }

    /// Starts the validator of `home` as a byzantine one playing `behaviour` (a
    /// `bulwark-adversary` name), with the real driver: [`byzantine_binary`], measured as the
    /// genuine binary (a compromised validator of the published image).
    pub fn start_byzantine(behaviour: &str, home: &Path) -> Result<Node> {
        let mut command = Command::new(byzantine_binary()?);
        command.arg(behaviour).arg(home).arg(bulwark_binary()?);
        Node::spawn(command, home)
    }

    /// Runs `command` for the node of `home`, its log in `home/bulwark.log`.
    pub fn spawn(mut command: Command, home: &Path) -> Result<Node> {
        let mut log = std::fs::File::create(home.join("bulwark.log"))
            .with_context(|| format!("creating the log in {}", home.display()))?;
        let bin = PathBuf::from(command.get_program());
        let mut child = command
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (tx, heights) = mpsc::channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let peer_log = Arc::new(Mutex::new(Vec::new()));
        let (keep_tail, keep_peers) = (tail.clone(), peer_log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("refused")
                    || line.contains("peer attested")
                    || line.contains("accept failed")
                    || line.contains("disconnected")
                    || line.contains("not kept")
                {
                    if let Ok(mut p) = keep_peers.lock() {
                        p.push(line.clone());
                    }
                }
                if let Some(h) = committed_height(&line) {
                    let _ = tx.send(h);
                }
                if let Ok(mut t) = keep_tail.lock() {
                    t.push_back(line);
                    if t.len() > TAIL_LINES {
                        t.pop_front();
                    }
                }
            }
        });
        Ok(Node {
            child,
            home: home.to_path_buf(),
            heights,
            last: 0,
            tail,
            peer_log,
        })
    }

    /// Takes in the heights reported since the last call; the highest so far.
    pub fn poll(&mut self) -> u64 {
        while let Ok(h) = self.heights.try_recv() {
            self.last = self.last.max(h);
        }
        self.last
    }

    /// The last lines it logged.
    pub fn tail(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Waits until a peer-log line contains `needle`; returns it.
    pub fn wait_for_peer_log(&self, needle: &str, limit: Duration) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self
                .peer_log
                .lock()
                .ok()
                .and_then(|log| log.iter().find(|l| l.contains(needle)).cloned())
            {
                return Ok(line);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no peer log line with {needle:?}; have {:#?}",
                    self.peer_log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`-TERM`, `-KILL`, ...).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill {sig} {} failed", self.child.id());
        }
        Ok(())
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for it to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {limit:?}", self.home.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then a successful exit within 10 s.
    pub fn stop_cleanly(&mut self) -> Result<()> {
        self.signal("-TERM")?;
        let status = self.wait_exit(Duration::from_secs(10))?;
        if !status.success() {
            bail!(
                "{} exited with {status} on SIGTERM:\n{}",
                self.home.display(),
                self.tail()
            );
        }
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The height of a "committed height=N" log line.
fn committed_height(line: &str) -> Option<u64> {
    line.split("committed height=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Waits until every node reported `height` committed; the error shows each node's height
/// and log tail.
pub fn wait_for(nodes: &mut [&mut Node], height: u64, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        for n in nodes.iter_mut() {
            n.poll();
        }
        if nodes.iter().all(|n| n.last >= height) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let tails: Vec<String> = nodes.iter().map(|n| n.tail()).collect();
            bail!(
                "not all nodes reached {height}: {:?}\n{}",
                nodes.iter().map(|n| n.last).collect::<Vec<_>>(),
                tails.join("\n-----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running local network: a testnet in its own directory, one process per validator.
/// Dropping it kills the processes and removes the directory.
pub struct Network {
    /// The network's directory (`node{i}` homes).
    pub dir: PathBuf,
    /// Its first port.
    pub base: u16,
    /// The validators.
    pub nodes: Vec<Node>,
}

impl Network {
    /// Makes a testnet of `validators` in a fresh directory named after `tag`, applies the
    /// config replacements, and starts every node.
    pub fn start(
        bin: &Path,
        validators: usize,
        tag: &str,
        config: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("bulwark-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let base = crate::ports::testnet_block(validators)?;
        let homes = testnet(bin, &dir, validators, base, config)?;
        let nodes = homes
            .iter()
            .map(|home| Node::start(bin, home))
            .collect::<Result<_>>()?;
        Ok(Network { dir, base, nodes })
    }

    /// The JSON-RPC address (host:port) of node `i`.
    pub fn rpc_addr(&self, i: usize) -> String {
        rpc_addr(self.base, i)
    }

    /// The CPU time (ns) its processes have used so far, every thread's, user and system
    /// (`/proc/PID/stat`, in clock ticks of 10 ms; `/proc/PID/schedstat` counts only the
    /// main thread).
    pub fn cpu_ns(&self) -> Result<f64> {
        // USER_HZ, 100 on every Linux architecture for decades.
        const NS_PER_TICK: f64 = 1e7;
        let mut total = 0.0;
        for node in &self.nodes {
            let path = format!("/proc/{}/stat", node.child.id());
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            // Fields after the command name (which may hold spaces) start after the last ')';
            // utime and stime are the 14th and 15th of the line, the 12th and 13th there.
            let ticks: Option<f64> = text.rsplit_once(')').and_then(|(_, rest)| {
                let mut fields = rest.split_whitespace().skip(11);
                let user = fields.next()?.parse::<f64>().ok()?;
                Some(user + fields.next()?.parse::<f64>().ok()?)
            });
            total += ticks.with_context(|| format!("{path}: {text:?}"))? * NS_PER_TICK;
        }
        Ok(total)
    }

    /// Once node 0 has committed 5 heights (within 180 s): its heights per second over
    /// `window`, and the CPU each validator spent per height (ms) meanwhile.
    pub fn empty_heights(&mut self, window: Duration) -> Result<(f64, f64)> {
        let mut rpc = crate::rpc::RpcClient::new(&self.rpc_addr(0));
        let deadline = Instant::now() + Duration::from_secs(180);
        while crate::rpc::height(&mut rpc).unwrap_or(0) < 5 {
            if Instant::now() > deadline {
                bail!("the network made no 5 heights in 180 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut sample = || -> Result<(f64, u64, Instant)> {
            let height = crate::rpc::height(&mut rpc).context("node 0's height")?;
            Ok((self.cpu_ns()?, height, Instant::now()))
        };
        let (cpu0, h0, t0) = sample()?;
        std::thread::sleep(window);
        let (cpu1, h1, t1) = sample()?;
        let heights = h1.saturating_sub(h0) as f64;
        if heights == 0.0 {
            bail!("the network made no height in {window:?}");
        }
        let cpu_ms = (cpu1 - cpu0) / 1e6 / self.nodes.len() as f64 / heights;
        Ok((heights / (t1 - t0).as_secs_f64(), cpu_ms))
    }

    /// How many nodes are still running.
    pub fn live(&mut self) -> usize {
        self.nodes
            .iter_mut()
            .map(Node::running)
            .filter(|&up| up)
            .count()
    }

    /// SIGTERM to every node; how many exited successfully within 10 s.
    pub fn stop(&mut self) -> usize {
        for n in &self.nodes {
            let _ = n.signal("-TERM");
        }
        self.nodes
            .iter_mut()
            .map(|n| {
                n.wait_exit(Duration::from_secs(10))
                    .is_ok_and(|status| status.success())
            })
            .filter(|&clean| clean)
            .count()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 4-validator testnet of this checkout's debug binary with [`FAST_TIMEOUTS`], its ports
/// from `base` (see [`crate::ports::testnet_block`]).
pub fn fast_testnet(dir: &Path, base: u16) -> Result<Vec<PathBuf>> {
    testnet(&bulwark_binary()?, dir, 4, base, FAST_TIMEOUTS)
}

/// Starts this checkout's debug binary on `home`.
pub fn start(home: &Path) -> Result<Node> {
    Node::start(&bulwark_binary()?, home)
}
