//! The edge: where unauthenticated peers arrive. Everything of the peer connections runs here,
//! on a small runtime of its own (a fixed number of threads), never on the thread that runs
//! consensus: the TLS handshakes with the attestation checks inside rustls's certificate
//! callback, the dialling, and the readers and writers of attested peers.
//!
//! Before a handshake starts, [`EdgeHandle::admit`] asks three limits, each refusing at once
//! (the connection is closed, nothing is queued): a token bucket per source IP, one for all
//! sources together (so many addresses cannot buy unbounded verification work), and a cap on
//! handshakes in progress. Established peers are capped too, and every connection holds a
//! descriptor of the node's pool ([`crate::descriptors`]).

use crate::descriptors::{Descriptors, DescriptorsError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How much the edge lets unauthenticated peers do.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeLimits {
    /// Threads of the edge runtime (the verification pool).
    pub threads: usize,
    /// Inbound handshakes in progress at once; more are refused.
    pub max_handshakes: usize,
    /// Attested connections at once (both directions).
    pub max_peers: usize,
    /// Inbound handshakes per second one source IP may start (sustained).
    pub per_ip_rate: f64,
    /// ... and in a burst.
    pub per_ip_burst: f64,
    /// Inbound handshakes per second all sources together may start (sustained).
    pub total_rate: f64,
    /// ... and in a burst.
    pub total_burst: f64,
    /// The descriptors connections may hold, shared with the node's other servers.
    pub descriptors: Descriptors,
}

impl EdgeLimits {
    /// These limits with the peers' share of this process's descriptors under the open-files
    /// `limit` (half, or less if every peer and handshake fits in less), and the share left for
    /// the node's servers ([`Descriptors::for_this_process`]). Handshakes in progress, keyless,
    /// get at most half the peers' share, so the rest stays for validators.
    pub fn with_descriptors(
        mut self,
        limit: u64,
        cached: u64,
    ) -> Result<(Self, Descriptors), DescriptorsError> {
        let peers = self.max_peers.saturating_add(self.max_handshakes);
        let (peers, servers) = Descriptors::for_this_process(limit, cached, peers)?;
        self.max_handshakes = self.max_handshakes.min(peers.size() / 2).max(1);
        self.descriptors = peers;
        Ok((self, servers))
    }
}

impl Default for EdgeLimits {
    fn default() -> Self {
        EdgeLimits {
            threads: 2,
            max_handshakes: 32,
            max_peers: 64,
            per_ip_rate: 5.0,
            per_ip_burst: 20.0,
            total_rate: 100.0,
            total_burst: 200.0,
            descriptors: Descriptors::default(),
        }
    }
}

/// Source addresses whose buckets are remembered; beyond it, full (idle) buckets are
/// forgotten first, and all of them if none is.
pub const MAX_TRACKED_SOURCES: usize = 4096;

/// A token bucket: `rate` tokens a second up to `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a connection was refused before its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its source IP started too many handshakes.
    SourceRate,
    /// All sources together started too many handshakes.
    TotalRate,
    /// Too many handshakes are in progress.
    Handshakes,
    /// The descriptors connections may hold are all held: the rest are kept for storage.
    DescriptorsKeptForStorage,
}

struct Buckets {
    per_ip: HashMap<IpAddr, Bucket>,
    total: Bucket,
}

/// What the edge counted (for logs and tests).
#[derive(Debug, Default)]
pub struct EdgeCounters {
    /// Connections accepted from the socket.
    pub accepted: AtomicU64,
    /// Refused before TLS by a source's rate.
    pub refused_source_rate: AtomicU64,
    /// Refused before TLS by the total rate.
    pub refused_total_rate: AtomicU64,
    /// Refused before TLS because the handshake cap was reached.
    pub refused_handshakes: AtomicU64,
    /// Attested peers refused because the peer cap was reached.
    pub refused_peers: AtomicU64,
    /// Connections closed at once because the descriptor pool was empty.
    pub refused_descriptors: AtomicU64,
    /// `accept()` errors survived.
    pub accept_errors: AtomicU64,
    /// Peer tasks that panicked (each closed its connection only).
    pub peer_panics: AtomicU64,
}

struct EdgeState {
    limits: EdgeLimits,
    handshakes: Arc<Semaphore>,
    peers: Arc<Semaphore>,
    buckets: Mutex<Buckets>,
    counters: EdgeCounters,
}

/// The edge runtime. Dropping it stops every connection task (without blocking: it may be
/// dropped inside the node's own runtime).
pub struct Edge {
    runtime: Option<tokio::runtime::Runtime>,
    handle: EdgeHandle,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("limits", &self.handle.state.limits)
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// Starts the edge runtime; its threads are named `thread_name` (a PID 1 may treat panics
    /// on them as contained).
    pub fn new(limits: EdgeLimits, thread_name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.threads.max(1))
            .max_blocking_threads(limits.threads.max(1))
            .thread_name(thread_name)
            .enable_all()
            .build()?;
        let now = Instant::now();
        let state = EdgeState {
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            peers: Arc::new(Semaphore::new(limits.max_peers)),
            buckets: Mutex::new(Buckets {
                per_ip: HashMap::new(),
                total: Bucket::full(limits.total_burst, now),
            }),
            counters: EdgeCounters::default(),
            limits,
        };
        let handle = EdgeHandle {
            runtime: runtime.handle().clone(),
            state: Arc::new(state),
        };
        Ok(Edge {
            runtime: Some(runtime),
            handle,
        })
    }

    /// A handle for the connection tasks.
    pub fn handle(&self) -> EdgeHandle {
        self.handle.clone()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What connection tasks need of the edge: its runtime and its limits.
#[derive(Clone)]
pub struct EdgeHandle {
    runtime: tokio::runtime::Handle,
    state: Arc<EdgeState>,
}

impl std::fmt::Debug for EdgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeHandle")
            .field("limits", &self.state.limits)
            .finish_non_exhaustive()
    }
}

impl EdgeHandle {
    /// The edge runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// What it counted.
    pub fn counters(&self) -> &EdgeCounters {
        &self.state.counters
    }

    /// Whether an inbound connection from `source` may start a handshake now: a permit to
    /// hold while it runs, or why not.
    pub fn admit(&self, source: IpAddr) -> Result<OwnedSemaphorePermit, Refusal> {
        self.admit_at(source, Instant::now())
    }

    fn admit_at(&self, source: IpAddr, now: Instant) -> Result<OwnedSemaphorePermit, Refusal> {
        let source = rate_source(source);
        let state = &self.state;
        let l = &state.limits;
        let counters = &state.counters;
        // Held only for arithmetic; a poisoned lock (a panic elsewhere) refuses nothing.
        let mut buckets = state.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.per_ip.len() >= MAX_TRACKED_SOURCES && !buckets.per_ip.contains_key(&source) {
            buckets.per_ip.retain(|_, b| {
                b.refill(l.per_ip_rate, l.per_ip_burst, now);
                b.tokens < l.per_ip_burst
            });
            if buckets.per_ip.len() >= MAX_TRACKED_SOURCES {
                buckets.per_ip.clear();
            }
        }
        let bucket = buckets
            .per_ip
            .entry(source)
            .or_insert_with(|| Bucket::full(l.per_ip_burst, now));
        if !bucket.take(l.per_ip_rate, l.per_ip_burst, now) {
            counters.refused_source_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::SourceRate);
        }
        if !buckets.total.take(l.total_rate, l.total_burst, now) {
            counters.refused_total_rate.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::TotalRate);
        }
        drop(buckets);
        state.handshakes.clone().try_acquire_owned().map_err(|_| {
            counters.refused_handshakes.fetch_add(1, Ordering::Relaxed);
            Refusal::Handshakes
        })
    }

    /// A descriptor for one more connection (to hold while it is open), if the pool has one.
    pub fn descriptor(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.state.limits.descriptors.take().ok_or_else(|| {
            self.state
                .counters
                .refused_descriptors
                .fetch_add(1, Ordering::Relaxed);
            Refusal::DescriptorsKeptForStorage
        })
    }

    /// A place for one more attested peer, if the cap allows.
    pub fn peer_slot(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.state.peers.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.state
                .counters
                .refused_peers
                .fetch_add(1, Ordering::Relaxed);
        }
        slot
    }
}

/// Whose rate a connection counts against: an IPv4 address (an IPv4-mapped IPv6 address is
/// that IPv4 address), or an IPv6 /64, the smallest block a host is usually given, so one host
/// cannot mint itself 2⁶⁴ fresh buckets.
pub fn rate_source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn edge(limits: EdgeLimits) -> Edge {
        Edge::new(limits, "edge-test").unwrap()
    }

    #[test]
    fn keyless_handshakes_get_at_most_half_the_peers_descriptors() {
        let open = crate::descriptors::open_now().unwrap();
        // Room for other tests' descriptors meanwhile.
        let limit = open + crate::descriptors::KEPT_FOR_MOMENTS + 400;
        let limits = EdgeLimits {
            max_handshakes: 1024,
            ..EdgeLimits::default()
        };
        let (limits, servers) = limits.with_descriptors(limit, 0).unwrap();
        let peers = limits.descriptors.size();
        assert!(
            peers > 0 && servers.size() >= peers,
            "{peers} / {}",
            servers.size()
        );
        assert_eq!(limits.max_handshakes, peers / 2);
        let (roomy, _) = EdgeLimits::default().with_descriptors(1 << 20, 0).unwrap();
        assert_eq!(roomy.max_handshakes, EdgeLimits::default().max_handshakes);
    }

    #[test]
    fn a_source_beyond_its_burst_is_refused_and_refills_at_its_rate() {
        let e = edge(EdgeLimits {
            per_ip_rate: 2.0,
            per_ip_burst: 3.0,
            ..EdgeLimits::default()
        });
        let h = e.handle();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(h.admit_at(a, t0).unwrap());
        }
        assert_eq!(h.admit_at(a, t0).unwrap_err(), Refusal::SourceRate);
        // Another source is not affected.
        held.push(h.admit_at(b, t0).unwrap());
        // Half a second refills one token at 2/s.
        held.push(h.admit_at(a, t0 + Duration::from_millis(500)).unwrap());
        assert_eq!(
            h.admit_at(a, t0 + Duration::from_millis(500)).unwrap_err(),
            Refusal::SourceRate
        );
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64_however_many_addresses_it_uses() {
        let e = edge(EdgeLimits {
            per_ip_rate: 0.001,
            per_ip_burst: 2.0,
            ..EdgeLimits::default()
        });
        let h = e.handle();
        let t0 = Instant::now();
        let v6 = |bits: u128| IpAddr::V6(std::net::Ipv6Addr::from(bits));
        let host = |low: u64| v6((0x2001_0db8_0000_0001u128 << 64) | u128::from(low));
        let mut held = vec![
            h.admit_at(host(1), t0).unwrap(),
            h.admit_at(host(2), t0).unwrap(),
        ];
        assert_eq!(h.admit_at(host(3), t0).unwrap_err(), Refusal::SourceRate);
        // The next /64 is another source.
        held.push(h.admit_at(v6(0x2001_0db8_0000_0002u128 << 64), t0).unwrap());
        // An IPv4-mapped address is its IPv4 address.
        let v4: IpAddr = [192, 0, 2, 7].into();
        held.push(h.admit_at(v4, t0).unwrap());
        held.push(h.admit_at("::ffff:192.0.2.7".parse().unwrap(), t0).unwrap());
        assert_eq!(h.admit_at(v4, t0).unwrap_err(), Refusal::SourceRate);
        assert_eq!(rate_source(host(9)), rate_source(host(u64::MAX)));
    }

    #[test]
    fn many_sources_together_meet_the_total_rate_and_the_handshake_cap() {
        let e = edge(EdgeLimits {
            total_rate: 1.0,
            total_burst: 5.0,
            max_handshakes: 3,
            ..EdgeLimits::default()
        });
        let h = e.handle();
        let t0 = Instant::now();
        let mut held = Vec::new();
        for i in 0..3u8 {
            held.push(h.admit_at([10, 0, 1, i].into(), t0).unwrap());
        }
        assert_eq!(
            h.admit_at([10, 0, 1, 9].into(), t0).unwrap_err(),
            Refusal::Handshakes
        );
        held.clear(); // handshakes finished
        let _held = h.admit_at([10, 0, 1, 10].into(), t0).unwrap();
        assert_eq!(
            h.admit_at([10, 0, 1, 11].into(), t0).unwrap_err(),
            Refusal::TotalRate
        );
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let e = edge(EdgeLimits {
            total_burst: 1e9,
            ..EdgeLimits::default()
        });
        let h = e.handle();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_SOURCES as u32 * 2) {
            let _ = h.admit_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        let tracked = h.state.buckets.lock().unwrap().per_ip.len();
        assert!(tracked <= MAX_TRACKED_SOURCES, "{tracked}");
    }

    #[test]
    fn the_peer_cap_holds() {
        let e = edge(EdgeLimits {
            max_peers: 2,
            ..EdgeLimits::default()
        });
        let h = e.handle();
        let (a, b) = (h.peer_slot().unwrap(), h.peer_slot().unwrap());
        assert!(h.peer_slot().is_none());
        drop((a, b));
        assert!(h.peer_slot().is_some());
    }
}
