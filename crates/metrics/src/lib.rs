//! Prometheus metrics on `instrumentation.prometheus_listen_addr`, in the text exposition
//! format: CometBFT's metric names (namespace `cometbft` unless configured otherwise, every
//! series labelled with the chain id) for what Bulwark has, and Bulwark's own under
//! `bulwark_`: whether this instance of the validator signs and why not, attested handshakes
//! refused by the check that failed, handshake times, connections refused at the edge, and
//! evidence waiting to be committed.
//!
//! A scrape is answered on the engine's task, between its inputs, like every RPC call: the
//! figures are the engine's at that moment. What must be seen at every commit (the block
//! interval, transactions so far) is recorded by [`Metrics::committed`]; the rest is read
//! when scraped, so metrics cost the engine nothing between scrapes.

use bulwark_node::engine::Engine;
use bulwark_node::instance::Authorization;
use bulwark_p2p::edge::EdgeCounters;
use bulwark_p2p::stats::{HandshakeSnapshot, Histogram};
use bulwark_rpc::answer::validators_at;
use bulwark_types::tendermint::Time;
use bulwark_types::tendermint_proto::v0_38 as pb;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prost::Message as _;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Bounds of the block-interval histogram, seconds.
pub const BLOCK_INTERVAL_SECONDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What the driver keeps between scrapes.
#[derive(Debug)]
pub struct Metrics {
    namespace: String,
    chain_id: String,
    block_interval: Histogram,
    total_txs: u64,
    /// The transactions of the latest block seen committed.
    last_txs: (u64, u64),
    /// The latest block's figures, by height.
    latest: Option<(u64, BlockFigures)>,
    /// The latest block seen committed: its height and time.
    last_block: Option<(u64, Time)>,
}

/// What the metrics say of the latest block, worked out once per height.
#[derive(Clone, Copy, Debug, Default)]
struct BlockFigures {
    txs: u64,
    size: u64,
    missing: u64,
    missing_power: u64,
    byzantine: u64,
    byzantine_power: u64,
}

/// The parts of a stored block the metrics read; its transactions (field 2) are skipped
/// unread, so a scrape never decodes a large block's data.
#[derive(Clone, PartialEq, prost::Message)]
struct BlockSummary {
    #[prost(message, optional, tag = "3")]
    evidence: Option<pb::types::EvidenceList>,
    #[prost(message, optional, tag = "4")]
    last_commit: Option<pb::types::Commit>,
}

/// What the driver knows at a scrape that the engine does not.
#[derive(Debug)]
pub struct ScrapeView<'a> {
    /// Connected (attested) peers.
    pub peers: usize,
    /// The attested handshakes so far.
    pub handshakes: HandshakeSnapshot,
    /// What the edge refused before TLS.
    pub edge: &'a EdgeCounters,
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: String,
    chain: &'a str,
}

impl Family<'_> {
    /// A sample with the chain label and `labels` (name, value).
    fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(
            self.out,
            "{}{suffix}{{chain_id=\"{}\"",
            self.name,
            escape(self.chain)
        );
        for (k, v) in labels {
            let _ = write!(self.out, ",{k}=\"{}\"", escape(v));
        }
        let _ = writeln!(self.out, "}} {}", number(value));
    }
}

/// A label value as the exposition format writes it.
/// One histogram's samples with `labels`: buckets written cumulatively, `+Inf`, sum, count.
fn histogram_samples(f: &mut Family<'_>, labels: &[(&str, &str)], h: &Histogram) {
    let mut cumulative = 0;
    for (bound, n) in h.bounds.iter().zip(&h.counts) {
        cumulative += n;
        let le = number(*bound);
        let mut with = labels.to_vec();
        with.push(("le", &le));
        f.sample("_bucket", &with, count(cumulative));
    }
    let mut with = labels.to_vec();
    with.push(("le", "+Inf"));
    f.sample("_bucket", &with, count(h.count));
    f.sample("_sum", labels, h.sum);
    f.sample("_count", labels, count(h.count));
}

/// CometBFT's `abci_connection_method_timing_seconds`: each ABCI method's call times.
fn abci_timings(f: &mut Family<'_>) {
    for (method, times) in bulwark_app::timed::TIMINGS.snapshot() {
        let h = Histogram {
            bounds: bulwark_app::timed::BOUNDS.to_vec(),
            counts: times.counts.to_vec(),
            sum: times.sum,
            count: times.count,
        };
        let labels = [("method", method), ("type", "sync")];
        histogram_samples(f, &labels, &h);
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

fn count(n: impl TryInto<u64>) -> f64 {
    // Counts far below 2^53: exact as f64.
    n.try_into().unwrap_or(u64::MAX) as f64
}

impl Metrics {
    /// Metrics of `chain_id` under `namespace` (CometBFT's `instrumentation.namespace`).
    pub fn new(namespace: &str, chain_id: &str) -> Self {
        Metrics {
            namespace: namespace.into(),
            chain_id: chain_id.into(),
            block_interval: Histogram::new(&BLOCK_INTERVAL_SECONDS),
            total_txs: 0,
            last_txs: (0, 0),
            latest: None,
            last_block: None,
        }
    }

    /// Records the committed block of `height` with `txs` transactions. The interval is
    /// observed between consecutive blocks committed one by one; blocks applied together (block
    /// sync) count their transactions only, since the engine's state is already past them.
    pub fn committed(&mut self, engine: &Engine, height: u64, txs: usize) {
        self.total_txs = self
            .total_txs
            .saturating_add(u64::try_from(txs).unwrap_or(u64::MAX));
        self.last_txs = (height, u64::try_from(txs).unwrap_or(u64::MAX));
        let state = engine.state();
        if state.last_block_height != height {
            return;
        }
        let time = state.last_block_time;
        if let Some((previous_height, previous_time)) = self.last_block {
            if previous_height + 1 == height {
                if let Ok(interval) = time.duration_since(previous_time) {
                    self.block_interval.observe(interval.as_secs_f64());
                }
            }
        }
        self.last_block = Some((height, time));
    }

    /// The latest block's figures: read from the store once per height (evidence and last
    /// commit only), then kept.
    fn latest_block(&mut self, engine: &Engine) -> BlockFigures {
        let state = engine.state();
        let height = state.last_block_height;
        if height < state.initial_height {
            return BlockFigures::default();
        }
        if let Some((h, figures)) = self.latest {
            if h == height {
                return figures;
            }
        }
        let mut f = BlockFigures {
            txs: if self.last_txs.0 == height {
                self.last_txs.1
            } else {
                0
            },
            ..BlockFigures::default()
        };
        let Ok(Some(bytes)) = engine.blocks().block(height) else {
            return f;
        };
        f.size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let Ok(summary) = BlockSummary::decode(bytes.as_slice()) else {
            return f;
        };
        // The last commit's absent signatures, weighed with the set that signed it.
        if let Some(commit) = &summary.last_commit {
            let signers = u64::try_from(commit.height)
                .ok()
                .and_then(|h| validators_at(engine, h).ok());
            for (i, sig) in commit.signatures.iter().enumerate() {
                if sig.block_id_flag == pb::types::BlockIdFlag::Absent as i32 {
                    f.missing += 1;
                    f.missing_power += signers
                        .as_ref()
                        .and_then(|s| s.validators().get(i))
                        .map_or(0, |v| v.power.value());
                }
            }
        }
        for e in summary.evidence.iter().flat_map(|l| &l.evidence) {
            if let Some(pb::types::evidence::Sum::DuplicateVoteEvidence(dv)) = &e.sum {
                f.byzantine += 1;
                f.byzantine_power += u64::try_from(dv.validator_power).unwrap_or(0);
            }
        }
        self.latest = Some((height, f));
        f
    }

    fn family<'a>(
        &'a self,
        out: &'a mut String,
        bulwark: bool,
        name: &str,
        kind: &str,
        help: &str,
    ) -> Family<'a> {
        let name = if bulwark {
            format!("bulwark_{name}")
        } else {
            format!("{}_{name}", self.namespace)
        };
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family {
            out,
            name,
            chain: &self.chain_id,
        }
    }

    fn gauge(&self, out: &mut String, name: &str, help: &str, value: f64) {
        self.family(out, false, name, "gauge", help)
            .sample("", &[], value);
    }

    fn histogram(&self, out: &mut String, bulwark: bool, name: &str, help: &str, h: &Histogram) {
        let mut f = self.family(out, bulwark, name, "histogram", help);
        histogram_samples(&mut f, &[], h);
    }

    /// The exposition text of this moment.
    pub fn render(&mut self, engine: &Engine, view: &ScrapeView<'_>) -> String {
        let mut out = String::new();
        let state = engine.state();
        let set = &state.validator_infos;
        self.gauge(
            &mut out,
            "consensus_height",
            "Height of the chain (the height in progress).",
            count(state.next_height()),
        );
        self.gauge(
            &mut out,
            "consensus_latest_block_height",
            "The latest block's height.",
            count(state.last_block_height),
        );
        self.gauge(
            &mut out,
            "consensus_rounds",
            "Number of rounds at the height in progress.",
            count(engine.round()),
        );
        self.gauge(
            &mut out,
            "consensus_validators",
            "Number of validators.",
            count(set.validators().len()),
        );
        self.gauge(
            &mut out,
            "consensus_validators_power",
            "Total voting power of the validators.",
            count(set.total_voting_power().value()),
        );
        let block = self.latest_block(engine);
        self.gauge(
            &mut out,
            "consensus_missing_validators",
            "Number of validators whose signature the latest block's last commit lacks.",
            count(block.missing),
        );
        self.gauge(
            &mut out,
            "consensus_missing_validators_power",
            "Voting power of the missing validators.",
            count(block.missing_power),
        );
        self.gauge(
            &mut out,
            "consensus_byzantine_validators",
            "Number of validators the latest block's evidence accuses.",
            count(block.byzantine),
        );
        self.gauge(
            &mut out,
            "consensus_byzantine_validators_power",
            "Voting power of the accused validators.",
            count(block.byzantine_power),
        );
        abci_timings(&mut self.family(
            &mut out,
            false,
            "abci_connection_method_timing_seconds",
            "histogram",
            "Time an ABCI call took, by method.",
        ));
        self.histogram(
            &mut out,
            false,
            "consensus_block_interval_seconds",
            "Time between this and the last block (block times).",
            &self.block_interval,
        );
        self.gauge(
            &mut out,
            "consensus_num_txs",
            "Number of transactions in the latest block.",
            count(block.txs),
        );
        self.gauge(
            &mut out,
            "consensus_total_txs",
            "Transactions committed since this node started.",
            count(self.total_txs),
        );
        self.gauge(
            &mut out,
            "consensus_block_size_bytes",
            "Size of the latest block (protobuf).",
            count(block.size),
        );
        self.gauge(
            &mut out,
            "consensus_block_syncing",
            "Whether the node is catching up by block sync (1) or not (0).",
            f64::from(u8::from(engine.catching_up())),
        );
        let verdicts = engine.verdicts();
        for (name, help, (accepted, rejected)) in [
            (
                "consensus_proposal_receive_count",
                "Proposed blocks received, by the application's verdict (ProcessProposal).",
                verdicts.proposals,
            ),
            (
                "consensus_vote_extension_receive_count",
                "Vote extensions received, by the application's verdict (VerifyVoteExtension).",
                verdicts.extensions,
            ),
        ] {
            let mut f = self.family(&mut out, false, name, "counter", help);
            f.sample("", &[("status", "accepted")], count(accepted));
            f.sample("", &[("status", "rejected")], count(rejected));
        }
        self.gauge(
            &mut out,
            "mempool_size",
            "Number of uncommitted transactions in the mempool.",
            count(engine.mempool().len()),
        );
        self.gauge(
            &mut out,
            "mempool_size_bytes",
            "Total size of the mempool's transactions, bytes.",
            count(engine.mempool().size_bytes()),
        );
        self.gauge(
            &mut out,
            "p2p_peers",
            "Number of attested peers connected.",
            count(view.peers),
        );

        let signing = engine.signing();
        self.family(&mut out, true, "instance_signing", "gauge", "Whether this instance of the validator signs (1) or waits (0) under the instance rule.")
            .sample("", &[], f64::from(u8::from(signing.may_sign())));
        let mut f = self.family(
            &mut out,
            true,
            "instance_state",
            "gauge",
            "The instance rule's state for this instance: 1 for the state it is in.",
        );
        for label in Authorization::LABELS {
            f.sample(
                "",
                &[("state", label)],
                f64::from(u8::from(label == signing.label())),
            );
        }
        let mut f = self.family(
            &mut out,
            true,
            "p2p_handshakes_refused_total",
            "counter",
            "Attested handshakes refused, by direction (inbound: a peer connected; outbound: we dialled) and the check that failed.",
        );
        for ((direction, check), n) in &view.handshakes.refused {
            f.sample(
                "",
                &[("direction", direction.label()), ("check", check)],
                count(*n),
            );
        }
        self.histogram(
            &mut out,
            true,
            "p2p_handshake_seconds",
            "Time of the attested handshakes that admitted a peer.",
            &view.handshakes.admitted,
        );
        let edge = view.edge;
        let mut f = self.family(
            &mut out,
            true,
            "p2p_edge_refused_total",
            "counter",
            "Inbound connections refused before TLS, by the limit that refused them.",
        );
        for (reason, n) in [
            ("source_rate", &edge.refused_source_rate),
            ("total_rate", &edge.refused_total_rate),
            ("handshakes", &edge.refused_handshakes),
            ("peers", &edge.refused_peers),
        ] {
            f.sample("", &[("reason", reason)], count(n.load(Ordering::Relaxed)));
        }
        self.family(
            &mut out,
            true,
            "evidence_pending",
            "gauge",
            "Verified evidence of misbehaviour waiting for a block.",
        )
        .sample("", &[], count(engine.evidence_pending()));
        out
    }
}

/// A scrape for the engine's task: where to send the exposition text.
pub type Scrape = oneshot::Sender<String>;

/// The metrics server's thread (`contained-`: a panic in a connection task closes that
/// connection only).
pub const METRICS_THREAD: &str = "contained-metrics";

/// How long a scrape waits for the engine's task.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The last rendering, served again to scrapes within [`RENDER_AT_MOST_EVERY`] of it. The
/// lock is held while the engine renders, so scrapes arriving meanwhile wait for that one
/// rendering instead of asking for their own.
type Rendered = Arc<tokio::sync::Mutex<Option<(Instant, String)>>>;

/// However fast and from however many connections the metrics port is scraped, the engine's
/// task renders at most this often.
pub const RENDER_AT_MOST_EVERY: Duration = Duration::from_secs(1);

async fn scrape(
    scrapes: mpsc::Sender<Scrape>,
    rendered: Rendered,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "metrics are served at GET /metrics\n".into(),
        );
    }
    let unavailable = |why: &str| text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    let Ok(mut last) = tokio::time::timeout(SCRAPE_TIMEOUT, rendered.lock()).await else {
        return unavailable("the node is busy");
    };
    if let Some((at, body)) = last.as_ref() {
        if at.elapsed() < RENDER_AT_MOST_EVERY {
            return text(StatusCode::OK, body.clone());
        }
    }
    let (tx, rx) = oneshot::channel();
    match tokio::time::timeout(SCRAPE_TIMEOUT, scrapes.send(tx)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return unavailable("the node is stopping"),
        Err(_) => return unavailable("the node is busy"),
    }
    match tokio::time::timeout(SCRAPE_TIMEOUT, rx).await {
        Ok(Ok(body)) => {
            *last = Some((Instant::now(), body.clone()));
            text(StatusCode::OK, body)
        }
        _ => unavailable("the node did not answer the scrape"),
    }
}

/// Serves `GET /metrics` on `listener` from a thread of its own ([`METRICS_THREAD`]), each
/// scrape answered by the engine's task through `scrapes`, at most `max_connections` at once
/// (CometBFT's `instrumentation.max_open_connections`), each holding one of `descriptors`.
pub fn spawn_serve(
    listener: std::net::TcpListener,
    scrapes: mpsc::Sender<Scrape>,
    (max_connections, descriptors): (usize, bulwark_rpc::Descriptors),
) -> std::io::Result<std::thread::JoinHandle<()>> {
    bulwark_rpc::spawn_on_own_thread(listener, METRICS_THREAD, move |listener| async move {
        let watched = scrapes.clone();
        let rendered = Rendered::default();
        bulwark_rpc::serve_http(
            listener,
            (max_connections.max(1), descriptors),
            move || watched.is_closed(),
            move |request| scrape(scrapes.clone(), rendered.clone(), request),
        )
        .await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn a_histogram_is_written_cumulatively_with_inf_sum_and_count() {
        let m = Metrics::new("cometbft", "c-1");
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        m.histogram(&mut out, false, "x_seconds", "X.", &h);
        assert_eq!(
            out,
            "# HELP cometbft_x_seconds X.\n# TYPE cometbft_x_seconds histogram\n\
             cometbft_x_seconds_bucket{chain_id=\"c-1\",le=\"1\"} 1\n\
             cometbft_x_seconds_bucket{chain_id=\"c-1\",le=\"2\"} 2\n\
             cometbft_x_seconds_bucket{chain_id=\"c-1\",le=\"+Inf\"} 3\n\
             cometbft_x_seconds_sum{chain_id=\"c-1\"} 11\n\
             cometbft_x_seconds_count{chain_id=\"c-1\"} 3\n"
        );
    }
}
