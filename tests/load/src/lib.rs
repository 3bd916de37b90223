//! Open-loop kvstore load through JSON-RPC, and commit latency as a client sees it.
//!
//! One sender thread per node offers transactions at a fixed rate, in JSON-RPC batches of
//! `broadcast_tx_async` over one keep-alive HTTP connection, whatever the network does (open
//! loop: a slow network does not slow the offer). A watcher subscribed to node 0's
//! `NewBlockHeader` events reads each committed block and matches its transactions to their
//! send times: latency is send to seen-committed.

mod watch;

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use harness::rpc::RpcClient;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{atomic::AtomicBool, atomic::AtomicU64, atomic::Ordering, Arc, Mutex};
use std::time::{Duration, Instant};
use watch::Commits;

/// A kvstore transaction of exactly `size` bytes (at least 18) whose key names it.
pub fn make_tx(id: u64, size: usize) -> Vec<u8> {
    let mut tx = format!("{id:016x}=").into_bytes();
    tx.resize(size.max(tx.len() + 1), b'v');
    tx
}

fn tx_id(tx: &[u8]) -> Option<u64> {
    let key = tx.get(..16)?;
    u64::from_str_radix(std::str::from_utf8(key).ok()?, 16).ok()
}

/// What to offer.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Offered transactions per second, over all nodes (0: none).
    pub rate: f64,
    /// Bytes per transaction.
    pub tx_bytes: usize,
    /// Measured window starts after this.
    pub warmup: Duration,
    /// How long to offer load.
    pub duration: Duration,
    /// Distinguishes runs against the same chain (tx ids must not repeat).
    pub run: u64,
}

/// Live figures, for a progress line.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Since the start.
    pub elapsed: Duration,
    /// The height node 0 reached.
    pub height: u64,
    /// Transactions committed.
    pub committed: u64,
    /// Transactions offered.
    pub offered: u64,
    /// Transactions refused.
    pub refused: u64,
    /// Committed tx/s over the last second.
    pub recent_tx_per_s: f64,
    /// Median commit latency so far.
    pub latency_p50_ms: f64,
}

/// How long the watch goes on after the offer stops: a transaction sent late counts too.
const DRAIN: Duration = Duration::from_secs(2);

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Transactions offered.
    pub offered: u64,
    /// Transactions refused.
    pub refused: u64,
    /// Why the first refused transaction was refused.
    pub first_refusal: Option<String>,
    /// Transactions committed.
    pub committed: u64,
    /// The height node 0 reached.
    pub height: u64,
    /// Committed tx/s inside the measured window.
    pub tx_per_s: f64,
    /// Heights per second inside the window.
    pub heights_per_s: f64,
    /// Commit latencies (ms) of transactions sent inside the window, sorted, up to [`DRAIN`].
    pub latencies_ms: Vec<f64>,
    /// Transaction bytes committed per second inside the window.
    pub tx_bytes_per_s: f64,
    /// The most transaction bytes one block held (any block of the run).
    pub largest_block_tx_bytes: u64,
    /// CPU time (µs) the nodes' processes spent inside the window, all threads, when the run
    /// could read it.
    pub node_cpu_us: Option<f64>,
    /// Transactions committed inside the window.
    pub window_txs: u64,
    /// Heights committed inside the window.
    pub window_heights: u64,
}

impl LoadReport {
    /// Node CPU per committed transaction (µs, all validators' processes together).
    pub fn cpu_us_per_tx(&self) -> Option<f64> {
        self.node_cpu_us
            .filter(|_| self.window_txs > 0)
            .map(|us| us / self.window_txs as f64)
    }

    /// Node CPU per committed height (µs, all validators' processes together).
    pub fn cpu_us_per_height(&self) -> Option<f64> {
        self.node_cpu_us
            .filter(|_| self.window_heights > 0)
            .map(|us| us / self.window_heights as f64)
    }

    /// The latency (ms) at quantile `p` (0..=1); 0 for a run without one (the index saturates).
    pub fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies_ms.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_ms.get(i).copied().unwrap_or(0.0)
    }
}

struct Shared {
    sent: Mutex<HashMap<u64, Instant>>,
    offered: AtomicU64,
    refused: AtomicU64,
    first_refusal: Mutex<Option<String>>,
    stop: AtomicBool,
}

fn sender(addr: String, node: u64, rate: f64, cfg: LoadConfig, shared: Arc<Shared>) {
    let mut client = RpcClient::new(&addr);
    let started = Instant::now();
    let mut sent = 0u64;
    let b64 = base64::engine::general_purpose::STANDARD;
    while !shared.stop.load(Ordering::Relaxed) {
        let due = (rate * started.elapsed().as_secs_f64()) as u64;
        // At most 1,000 transactions and about 4 MB of JSON a request (RPC bodies are capped).
        let per_request = ((4 << 20) / (cfg.tx_bytes * 4 / 3 + 80)).clamp(1, 1000) as u64;
        let n = due.saturating_sub(sent).min(per_request);
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let mut batch = String::with_capacity(n as usize * (cfg.tx_bytes * 4 / 3 + 80));
        batch.push('[');
        let mut ids = Vec::with_capacity(n as usize);
        for k in 0..n {
            let id = (cfg.run << 56) | (node << 48) | (sent + k);
            ids.push(id);
            if k > 0 {
                batch.push(',');
            }
            batch.push_str(
                r#"{"jsonrpc":"2.0","id":0,"method":"broadcast_tx_async","params":{"tx":""#,
            );
            batch.push_str(&b64.encode(make_tx(id, cfg.tx_bytes)));
            batch.push_str(r#""}}"#);
        }
        batch.push(']');
        let now = Instant::now();
        if let Ok(mut map) = shared.sent.lock() {
            for id in &ids {
                map.insert(*id, now);
            }
        }
        sent += n;
        shared.offered.fetch_add(n, Ordering::Relaxed);
        let (refused, why) = match client.post(&batch) {
            Ok(Value::Array(answers)) => {
                let errors: Vec<&Value> = answers
                    .iter()
                    .filter(|a| a.get("result").is_none())
                    .collect();
                (errors.len() as u64, errors.first().map(|e| e.to_string()))
            }
            Ok(other) => (n, Some(other.to_string())),
            Err(e) => (n, Some(e.to_string())),
        };
        if let (Some(why), Ok(mut first)) = (why, shared.first_refusal.lock()) {
            first.get_or_insert(why);
        }
        shared.refused.fetch_add(refused, Ordering::Relaxed);
    }
}

/// Offers `cfg` to the nodes at `addrs` and watches node 0's chain; `progress` is called about
/// four times a second.
pub fn run(
    addrs: &[String],
    cfg: &LoadConfig,
    progress: impl FnMut(&Progress),
) -> Result<LoadReport> {
    run_measuring(addrs, cfg, || None, progress)
}

/// [`run`], with `node_cpu_ns` read as the window opens and as it closes: the CPU time (ns)
/// the nodes' processes have used so far, for [`LoadReport::node_cpu_us`].
pub fn run_measuring(
    addrs: &[String],
    cfg: &LoadConfig,
    mut node_cpu_ns: impl FnMut() -> Option<f64>,
    mut progress: impl FnMut(&Progress),
) -> Result<LoadReport> {
    let shared = Arc::new(Shared {
        sent: Mutex::new(HashMap::new()),
        offered: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        first_refusal: Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    // Wait for RPC to come up; the first measured block is the first one seen.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut watcher = loop {
        match Commits::subscribe(&addrs[0], Duration::from_millis(20)) {
            Ok(watcher) => break watcher,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("the node's RPC never answered"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut blocks = RpcClient::new(&addrs[0]);
    // Every node must answer before the offer starts: a refused connection is not a refused tx.
    for addr in &addrs[1..] {
        let mut c = RpcClient::new(addr);
        while c.call("health", Value::Null).is_err() {
            if Instant::now() > deadline {
                bail!("the RPC of {addr} never answered");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut threads = Vec::new();
    if cfg.rate > 0.0 {
        for (i, addr) in addrs.iter().enumerate() {
            let (addr, shared, cfg) = (addr.clone(), shared.clone(), cfg.clone());
            let rate = cfg.rate / addrs.len() as f64;
            threads.push(std::thread::spawn(move || {
                sender(addr, i as u64, rate, cfg, shared)
            }));
        }
    }
    let started = Instant::now();
    let window = (cfg.warmup, cfg.duration);
    let mut report = LoadReport::default();
    let mut window_heights = 0u64;
    let mut recent: std::collections::VecDeque<(Instant, u64)> = Default::default();
    let mut all_latencies = Vec::new();
    let mut last_progress = Instant::now();
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut cpu_opened, mut cpu_closed) = (None, None);
    loop {
        if cpu_opened.is_none() && started.elapsed() >= window.0 {
            cpu_opened = Some(node_cpu_ns());
        }
        if cpu_closed.is_none() && started.elapsed() >= window.1 {
            cpu_closed = Some(node_cpu_ns());
        }
        let offer_over = started.elapsed() >= cfg.duration;
        shared.stop.store(offer_over, Ordering::Relaxed);
        let outstanding = shared.sent.lock().map_or(0, |m| m.len());
        if offer_over && (outstanding == 0 || started.elapsed() >= cfg.duration + DRAIN) {
            break;
        }
        while let Some((seen, height)) = watcher.next()? {
            let block = blocks.call("block", serde_json::json!({"height": height.to_string()}))?;
            let block = &block["block"];
            let in_window = (window.0..window.1).contains(&started.elapsed());
            let txs = block["data"]["txs"].as_array().cloned().unwrap_or_default();
            let mut ids = Vec::with_capacity(txs.len());
            let mut bytes = 0;
            for tx in txs.iter().filter_map(|t| b64.decode(t.as_str()?).ok()) {
                bytes += tx.len() as u64;
                ids.extend(tx_id(&tx));
            }
            report.largest_block_tx_bytes = report.largest_block_tx_bytes.max(bytes);
            if let Ok(mut map) = shared.sent.lock() {
                for id in ids {
                    if let Some(at) = map.remove(&id) {
                        let ms = (seen - at).as_secs_f64() * 1000.0;
                        all_latencies.push(ms);
                        if at - started >= window.0 {
                            report.latencies_ms.push(ms);
                        }
                    }
                }
            }
            report.committed += txs.len() as u64;
            recent.push_back((seen, txs.len() as u64));
            if in_window {
                report.tx_per_s += txs.len() as f64;
                report.tx_bytes_per_s += bytes as f64;
                window_heights += 1;
            }
            report.height = height;
            let offer_ends = started.elapsed() >= cfg.duration;
            if offer_over || offer_ends || last_progress.elapsed() >= Duration::from_millis(250) {
                break;
            }
        }
        while recent
            .front()
            .is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(1))
        {
            recent.pop_front();
        }
        if last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            let mut l = all_latencies.clone();
            let median = match l.len() / 2 {
                mid if mid < l.len() => Some(*l.select_nth_unstable_by(mid, f64::total_cmp).1),
                _ => None,
            };
            progress(&Progress {
                elapsed: started.elapsed(),
                height: report.height,
                committed: report.committed,
                offered: shared.offered.load(Ordering::Relaxed),
                refused: shared.refused.load(Ordering::Relaxed),
                recent_tx_per_s: recent.iter().map(|(_, n)| *n).sum::<u64>() as f64,
                latency_p50_ms: median.unwrap_or(0.0),
            });
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let seconds = (window.1 - window.0).as_secs_f64().max(0.001);
    report.window_txs = report.tx_per_s as u64;
    report.window_heights = window_heights;
    if let (Some(Some(opened)), Some(Some(closed))) = (cpu_opened, cpu_closed) {
        report.node_cpu_us = Some((closed - opened) / 1e3);
    }
    report.tx_per_s /= seconds;
    report.tx_bytes_per_s /= seconds;
    report.heights_per_s = window_heights as f64 / seconds;
    report.offered = shared.offered.load(Ordering::Relaxed);
    report.refused = shared.refused.load(Ordering::Relaxed);
    report.first_refusal = shared.first_refusal.lock().ok().and_then(|f| f.clone());
    report.latencies_ms.sort_by(|a, b| a.total_cmp(b));
    Ok(report)
}

/// Validators of a [`network_run`]'s network.
pub const VALIDATORS: usize = 4;

/// The node bench's config replacements: no wait after commit, room for the offered load.
pub const BENCH_CONFIG: &[(&str, &str)] = &[
    ("timeout_commit_ms = 1000", "timeout_commit_ms = 0"),
    ("max_txs = 5000", "max_txs = 200000"),
    ("cache_size = 10000", "cache_size = 400000"),
    ("max_body_bytes = 1000000", "max_body_bytes = 8000000"),
];

/// One load run of `seconds` against a fresh 4-validator network of `bin` with the config
/// replacements `config`: `rate` tx/s of `tx_bytes` each, progress and result on stderr.
pub fn network_run(
    bin: &Path,
    rate: f64,
    seconds: u64,
    config: &[(&str, &str)],
    tx_bytes: usize,
) -> Result<LoadReport> {
    let mut net = harness::process::Network::start(bin, VALIDATORS, "bench", config)?;
    let addrs: Vec<String> = (0..VALIDATORS).map(|i| net.rpc_addr(i)).collect();
    let cfg = LoadConfig {
        rate,
        tx_bytes,
        warmup: std::time::Duration::from_secs(3),
        duration: std::time::Duration::from_secs(seconds),
        run: 2,
    };
    let report = run_measuring(
        &addrs,
        &cfg,
        || net.cpu_ns().ok(),
        |p| {
            eprint!(
            "\rbench: {:>4.1}s height {:>6} committed {:>8} offered {:>8} refused {:>7} | {:>6.0} tx/s ",
            p.elapsed.as_secs_f64(),
            p.height,
            p.committed,
            p.offered,
            p.refused,
            p.recent_tx_per_s
        );
        },
    );
    eprintln!();
    let up = net.live();
    net.stop();
    let report = report?;
    if up < 4 {
        bail!("{} validators died during the run", 4 - up);
    }
    eprintln!(
        "bench: offered {rate:.0} tx/s: committed {:.0} tx/s, {:.1} heights/s, latency p50 {:.1} ms p99 {:.1} ms ({} offered, {} refused)",
        report.tx_per_s,
        report.heights_per_s,
        report.percentile(0.5),
        report.percentile(0.99),
        report.offered,
        report.refused
    );
    if let Some(why) = &report.first_refusal {
        eprintln!("bench: first refusal: {why}");
    }
    Ok(report)
}

/// The median, figure by figure, of several runs under one load.
#[derive(Clone, Debug, Default)]
pub struct MedianRun {
    /// Committed tx/s.
    pub tx_per_s: f64,
    /// Heights per second.
    pub heights_per_s: f64,
    /// Commit latency p50 (ms).
    pub p50_ms: f64,
    /// Commit latency p99 (ms).
    pub p99_ms: f64,
    /// Node CPU per committed transaction, per validator (µs; 0 if unread).
    pub cpu_us_per_tx: f64,
    /// Node CPU per committed height, per validator (µs; 0 if unread).
    pub cpu_us_per_height: f64,
}

/// `runs` runs of [`network_run`], each on a fresh network, and the median of each figure:
/// this machine's speed drifts from one run to the next.
pub fn median_run(
    bin: &Path,
    rate: f64,
    seconds: u64,
    config: &[(&str, &str)],
    tx_bytes: usize,
    runs: usize,
) -> Result<MedianRun> {
    let reports = (0..runs.max(1))
        .map(|_| network_run(bin, rate, seconds, config, tx_bytes))
        .collect::<Result<Vec<_>>>()?;
    let median = |figure: &dyn Fn(&LoadReport) -> f64| {
        let mut values: Vec<f64> = reports.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let run = MedianRun {
        tx_per_s: median(&|r| r.tx_per_s),
        heights_per_s: median(&|r| r.heights_per_s),
        p50_ms: median(&|r| r.percentile(0.5)),
        p99_ms: median(&|r| r.percentile(0.99)),
        cpu_us_per_tx: median(&|r| r.cpu_us_per_tx().unwrap_or(0.0) / VALIDATORS as f64),
        cpu_us_per_height: median(&|r| r.cpu_us_per_height().unwrap_or(0.0) / VALIDATORS as f64),
    };
    eprintln!(
        "bench: median of {} runs at {rate:.0} tx/s: {run:?}",
        reports.len()
    );
    Ok(run)
}

/// The highest rate kept, its run, and the next step's (offered, committed) if one was tried.
pub type Sustained = (f64, LoadReport, Option<(f64, f64)>);

/// Sustained throughput for transactions of `tx_bytes`: the highest offered rate the network
/// commits in full (≥ 95 %, nothing refused), stepping by ×1.25 from `from` tx/s (down while
/// even that is too much, at most four times, then up until it no longer keeps up), with its
/// run and where it fell behind (offered, committed). Overload itself is not the figure: on
/// shared cores the refused requests take CPU from the validators.
pub fn sustained(
    bin: &Path,
    config: &[(&str, &str)],
    tx_bytes: usize,
    from: f64,
) -> Result<Sustained> {
    let mut kept: Option<(f64, LoadReport)> = None;
    let mut first_failure: Option<(f64, f64)> = None;
    let mut rate = from;
    loop {
        let r = network_run(bin, rate, 13, config, tx_bytes)?;
        if r.refused == 0 && r.tx_per_s >= 0.95 * rate {
            // Found stepping down from a rate that failed: the step above it is that one.
            let stepped_down = first_failure.is_some();
            kept = Some((rate, r));
            rate *= 1.25;
            if stepped_down || rate > 40_000.0 {
                break;
            }
        } else {
            first_failure = Some((rate, r.tx_per_s));
            if kept.is_some() || rate < from / 2.5 {
                break;
            }
            rate /= 1.25;
        }
    }
    let (rate, report) = kept
        .ok_or_else(|| anyhow!("the network did not keep up even with the lowest offered load"))?;
    Ok((rate, report, first_failure))
}
