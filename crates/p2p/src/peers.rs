//! Connections to peers once attested: each has a reader (bytes to frames to [`PeerEvent`]s; a
//! bad frame or a `Hello` of another chain closes that peer only) and a writer (a bounded
//! queue, so a slow peer loses messages instead of stalling the node). Everything runs on the
//! edge runtime ([`crate::edge`]), never on the node's own thread. The listener survives every
//! `accept()` error, admits a connection to its handshake only within the edge's limits, and
//! runs every handshake in its own task; a dialler keeps one connection to each persistent peer
//! and redials it when it drops. A panic in a connection's task closes that connection only.

use crate::edge::EdgeHandle;
use crate::transport::{Attested, TransportHandle};
use bulwark_net::VerifiedPeer;
use bulwark_wire::preverify::{Budget, Preverifier};
use bulwark_wire::{FrameDecoder, Hello, Payload};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE: usize = 4096;
/// Bytes queued per peer before new messages are dropped (a queue of block parts or decided
/// blocks would otherwise hold gigabytes for a peer that stops reading).
pub const PEER_QUEUE_BYTES: u64 = 32 << 20;

/// A connection, numbered in the order they were made.
pub type ConnectionId = u64;

/// Bytes moved on one connection (for `net_info`).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes written.
    pub sent: AtomicU64,
    /// Bytes read.
    pub received: AtomicU64,
    /// Bytes queued and not yet written.
    pub queued: AtomicU64,
    /// When bytes last arrived, in milliseconds since the connection began.
    pub last_heard_ms: AtomicU64,
    /// When the connection began.
    pub began: OnceInstant,
}

/// An instant set once, at construction.
#[derive(Debug)]
pub struct OnceInstant(pub Instant);

impl Default for OnceInstant {
    fn default() -> Self {
        OnceInstant(Instant::now())
    }
}

impl Traffic {
    /// Notes that bytes arrived now.
    fn heard(&self) {
        let ms = u64::try_from(self.began.0.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_heard_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since bytes last arrived (since the connection began, if none did).
    pub fn silent_for(&self) -> Duration {
        let heard = Duration::from_millis(self.last_heard_ms.load(Ordering::Relaxed));
        self.began.0.elapsed().saturating_sub(heard)
    }
}

/// An attested connection as the driver sees it.
#[derive(Debug)]
pub struct Peer {
    queue: mpsc::Sender<Vec<u8>>,
    /// The remote address.
    pub addr: SocketAddr,
    /// Whether this node dialled it.
    pub outbound: bool,
    /// When it connected (monotonic).
    pub since: Instant,
    /// When it connected (wall clock).
    pub started: SystemTime,
    /// Bytes moved.
    pub traffic: Arc<Traffic>,
    /// How it introduced itself, once it has.
    pub hello: Option<Hello>,
    /// Its verified evidence.
    pub attested: VerifiedPeer,
    /// Dropped with the peer: its connection's supervisor then closes it at once, even
    /// while its writer is stuck on a peer that stopped reading.
    _close: tokio::sync::oneshot::Sender<()>,
}

impl Peer {
    /// Queues an encoded frame; false (and the frame dropped) when the peer's queue is full or
    /// the connection is gone.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        let len = frame.len() as u64;
        let queued = &self.traffic.queued;
        let before = queued.load(Ordering::Relaxed);
        // An empty queue takes any frame, so a block larger than the cap still goes out.
        if before > 0 && before.saturating_add(len) > PEER_QUEUE_BYTES {
            return false;
        }
        queued.fetch_add(len, Ordering::Relaxed);
        if self.queue.try_send(frame).is_err() {
            queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A peer with no connection behind it: what is sent to it waits in the returned
    /// receiver. For tests of a driver.
    pub fn detached(addr: SocketAddr, attested: VerifiedPeer) -> (Peer, mpsc::Receiver<Vec<u8>>) {
        let (queue, frames) = mpsc::channel(PEER_QUEUE);
        let (close, _) = tokio::sync::oneshot::channel();
        let peer = Peer {
            _close: close,
            queue,
            addr,
            outbound: false,
            since: Instant::now(),
            started: SystemTime::now(),
            traffic: Arc::default(),
            hello: None,
            attested,
        };
        (peer, frames)
    }

    /// Whether the peer's queue is more than three quarters full, by messages or bytes: it
    /// reads slower than it is sent to, and asking it for more (a status answer) would only
    /// be dropped.
    pub fn is_backlogged(&self) -> bool {
        self.queue.capacity() < PEER_QUEUE / 4
            || self.traffic.queued.load(Ordering::Relaxed) > PEER_QUEUE_BYTES / 4 * 3
    }
}

/// What became of a newly attested connection in the driver's table of peers.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// The first connection of its validator key.
    New,
    /// It replaced this older connection of the same validator key (a reconnect whose old
    /// connection has not closed yet, or another instance of that validator: a copy of its
    /// disk), which is closed: one validator is one peer.
    Replaced(ConnectionId),
    /// Both sides dialled each other: of the two connections, the one that both keep stays
    /// (this one is closed).
    Crossed(ConnectionId),
    /// It presents this node's own key: another instance of this validator. Closed.
    OwnKey,
}

/// Enters connection `id` into `peers`, keeping one connection per validator key and none of
/// `own_key`. Of two connections made the same way (both dialled by us, or both by the
/// peer), the newer stays: a stale one of a validator that restarted must not keep it out.
/// Of two made both ways (each side dialled the other), the one dialled by the lower key
/// stays, which both sides agree on. A connection dropped from `peers` closes (its queue's
/// sender is gone).
pub fn admit(
    peers: &mut std::collections::HashMap<ConnectionId, Peer>,
    id: ConnectionId,
    peer: Peer,
    own_key: &[u8; 32],
) -> Admission {
    if peer.attested.consensus_key == *own_key {
        return Admission::OwnKey;
    }
    let older = peers
        .iter()
        .find(|(_, p)| p.attested.consensus_key == peer.attested.consensus_key)
        .map(|(old, _)| *old);
    let Some(old) = older else {
        peers.insert(id, peer);
        return Admission::New;
    };
    let (old_outbound, old_silent) = peers.get(&old).map_or((false, Duration::MAX), |p| {
        (p.outbound, p.traffic.silent_for())
    });
    let we_dial = *own_key < peer.attested.consensus_key;
    // A kept connection that has gone silent is dead on this side too (peers send every
    // height, and every tick while stuck): the fresh one replaces it.
    if old_outbound != peer.outbound && peer.outbound != we_dial && old_silent < STALE_AFTER {
        return Admission::Crossed(old);
    }
    peers.insert(id, peer);
    peers.remove(&old);
    Admission::Replaced(old)
}

/// [`admit`], saying what became of the connection in the log; the connection it replaced,
/// if any, for the engine to forget.
pub fn admit_logged(
    peers: &mut std::collections::HashMap<ConnectionId, Peer>,
    id: ConnectionId,
    peer: Peer,
    own_key: &[u8; 32],
) -> Option<ConnectionId> {
    let (addr, validator) = (peer.addr, validator_address(&peer.attested.consensus_key));
    tracing::debug!(peer = id, %addr, "peer connected");
    match admit(peers, id, peer, own_key) {
        Admission::New => None,
        Admission::Replaced(old) => {
            tracing::warn!(peer = id, replaced = old, %addr, %validator, "a second connection of one validator: the newer one stays (a reconnect, or another instance of that validator, a copy of its disk)");
            Some(old)
        }
        Admission::Crossed(kept) => {
            tracing::debug!(peer = id, kept, %addr, "both sides dialled: one connection stays");
            None
        }
        Admission::OwnKey => {
            tracing::error!(peer = id, %addr, "a peer presents this validator's own key: another instance of this validator (a copy of this VM's disk) runs; refused");
            None
        }
    }
}

/// Sends `frame` to every peer, or (`positions`) to the peers at these positions of the
/// peers in connection order (modulo their number).
pub fn deliver(
    peers: &std::collections::HashMap<ConnectionId, Peer>,
    positions: Option<&[usize]>,
    frame: &[u8],
) {
    let mut ids: Vec<ConnectionId> = peers.keys().copied().collect();
    ids.sort_unstable();
    let chosen: Vec<ConnectionId> = match positions {
        None => ids,
        Some(positions) => positions
            .iter()
            .filter_map(|p| ids.get(p.checked_rem(ids.len())?).copied())
            .collect(),
    };
    for id in chosen {
        if let Some(peer) = peers.get(&id) {
            if !peer.send(frame.to_vec()) {
                tracing::warn!(addr = %peer.addr, "peer queue full: message dropped");
            }
        }
    }
}

/// What the connections tell the driver.
#[derive(Debug)]
pub enum PeerEvent {
    /// A connection is attested and registered before anything it sends.
    Connected(ConnectionId, Peer),
    /// It closed.
    Disconnected(ConnectionId),
    /// It introduced itself (and is of this chain).
    Hello(ConnectionId, Hello),
    /// It sent a message.
    Message(ConnectionId, Payload),
}

/// What every connection task needs: limits, this node's introduction, and where to report.
#[derive(Clone, Debug)]
pub struct Link {
    /// Largest frame a peer may send.
    pub max_frame: usize,
    /// The chain a peer's `Hello` must name.
    pub chain_id: String,
    /// This node's `Hello`, encoded: the first frame on every connection.
    pub hello: Vec<u8>,
    /// Where events go.
    pub events: mpsc::Sender<PeerEvent>,
    /// Where gossiped transactions go, when apart from `events`: a driver that takes `events`
    /// first hears votes and proposals before the transactions queued ahead of them.
    pub transactions: Option<mpsc::Sender<PeerEvent>>,
    /// The next connection's number.
    pub next_id: Arc<AtomicU64>,
    /// Where connection tasks run, and the edge's limits.
    pub edge: EdgeHandle,
    /// Checks each message's signatures on the connection's thread before the driver sees it
    /// (review M6), when the driver publishes who signs.
    pub preverifier: Option<Arc<Preverifier>>,
}

async fn read_frames(
    id: ConnectionId,
    mut stream: impl tokio::io::AsyncRead + Unpin,
    link: Link,
    traffic: Arc<Traffic>,
) {
    let events = &link.events;
    let mut decoder = FrameDecoder::new(link.max_frame);
    let mut budget = Budget::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        traffic.received.fetch_add(n as u64, Ordering::Relaxed);
        traffic.heard();
        decoder.push(&buf[..n]);
        loop {
            let event = match decoder.next_message() {
                Ok(Some(Payload::Hello(hello))) => {
                    if hello.chain_id != link.chain_id {
                        tracing::warn!(peer = id, chain = %hello.chain_id, "closing peer of another chain");
                        return;
                    }
                    PeerEvent::Hello(id, hello)
                }
                Ok(Some(payload)) => {
                    if let Some(preverifier) = &link.preverifier {
                        if let Err(forged) = preverifier.inspect(&payload, &mut budget) {
                            tracing::warn!(peer = id, "closing peer: {forged}");
                            return;
                        }
                    }
                    PeerEvent::Message(id, payload)
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = id, "closing peer: {e}");
                    return;
                }
            };
            let events = match (&event, &link.transactions) {
                (PeerEvent::Message(_, Payload::Txs(_)), Some(transactions)) => transactions,
                _ => events,
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Frames already queued when the writer wakes leave together, up to this many bytes: one
/// write (TLS records and a system call) for a burst instead of one per frame. A height's
/// proposal and its block part, or a run of votes, are such bursts. A frame that would take
/// a burst past it (a block) starts the next write instead of being copied.
const COALESCED_BYTES: usize = 64 * 1024;

async fn writer(
    mut stream: impl tokio::io::AsyncWrite + Unpin,
    mut frames: mpsc::Receiver<Vec<u8>>,
    traffic: Arc<Traffic>,
) {
    let mut next = None;
    loop {
        let mut burst = match next.take() {
            Some(frame) => frame,
            None => match frames.recv().await {
                Some(frame) => frame,
                None => break,
            },
        };
        while burst.len() < COALESCED_BYTES {
            match frames.try_recv() {
                Ok(frame) if burst.len() + frame.len() <= COALESCED_BYTES => {
                    burst.extend_from_slice(&frame)
                }
                Ok(frame) => {
                    next = Some(frame);
                    break;
                }
                Err(_) => break,
            }
        }
        let written = stream.write_all(&burst).await;
        traffic
            .queued
            .fetch_sub(burst.len() as u64, Ordering::Relaxed);
        if written.is_err() {
            break;
        }
        traffic
            .sent
            .fetch_add(burst.len() as u64, Ordering::Relaxed);
    }
}

/// The CometBFT address of a validator's ed25519 key (hex).
pub fn validator_address(key: &[u8; 32]) -> String {
    bulwark_types::tendermint::PublicKey::from_raw_ed25519(key)
        .and_then(|k| k.ed25519())
        .map(|k| bulwark_types::tendermint::account::Id::from(k).to_string())
        .unwrap_or_else(|| hex::encode(key))
}

/// Runs an attested connection: its reader and writer each in their own task, so a panic in
/// either (a parser bug reachable by a peer) ends this connection and nothing else; the first
/// to end closes the other. When the peer's certificate (and with it its evidence) expires
/// after `expires_in`, the connection is closed: a persistent peer is redialled and attested
/// afresh. The driver hears `Disconnected` however it ended, after `slots` (the peer cap's
/// and the descriptor pool's) are given back.
async fn supervise(
    id: ConnectionId,
    (reader, writer): (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>),
    expires_in: Duration,
    link: Link,
    slots: impl Send,
    closed: tokio::sync::oneshot::Sender<()>,
    dropped: tokio::sync::oneshot::Receiver<()>,
) {
    let (mut reader, mut writer) = (reader, writer);
    let ended = tokio::select! {
        r = &mut reader => { writer.abort(); r }
        w = &mut writer => { reader.abort(); w }
        _ = dropped => {
            tracing::debug!(peer = id, "the driver let the connection go: closed");
            reader.abort();
            writer.abort();
            Ok(())
        }
        _ = tokio::time::sleep(expires_in) => {
            tracing::info!(peer = id, "the peer's certificate expired: connection closed, to be attested afresh");
            reader.abort();
            writer.abort();
            Ok(())
        }
    };
    if let Err(e) = ended {
        if e.is_panic() {
            link.edge
                .counters()
                .peer_panics
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                peer = id,
                "a connection task panicked: the connection is closed"
            );
        }
    }
    drop(slots);
    let _ = link.events.send(PeerEvent::Disconnected(id)).await;
    let _ = closed.send(());
}

/// Starts a connection's reader and writer, introducing this node first; the returned
/// receiver resolves when the connection closes. `None` when the peer cap is reached (the
/// connection is closed).
async fn spawn_peer(
    (stream, attested): Attested,
    addr: SocketAddr,
    outbound: bool,
    link: Link,
    descriptor: tokio::sync::OwnedSemaphorePermit,
) -> Option<tokio::sync::oneshot::Receiver<()>> {
    let Some(slot) = link.edge.peer_slot() else {
        tracing::warn!(%addr, "refused attested peer: the peer cap is reached");
        return None;
    };
    let id = link.next_id.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        peer = id,
        %addr,
        validator = %validator_address(&attested.consensus_key),
        measurement = %hex::encode(attested.measurement),
        chip = %hex::encode(&attested.chip_id[..8]),
        tcb = ?attested.reported_tcb,
        "peer attested"
    );
    let now_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires_in = attested.valid_for(now_unix);
    let (r, w) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(PEER_QUEUE);
    let traffic = Arc::new(Traffic::default());
    traffic
        .queued
        .store(link.hello.len() as u64, Ordering::Relaxed);
    let _ = tx.try_send(link.hello.clone());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let (close, dropped) = tokio::sync::oneshot::channel();
    let peer = Peer {
        _close: close,
        queue: tx,
        addr,
        outbound,
        since: Instant::now(),
        started: SystemTime::now(),
        traffic: traffic.clone(),
        hello: None,
        attested,
    };
    // Registered before the reader can report anything, so no message arrives from an unknown
    // connection.
    let _ = link.events.send(PeerEvent::Connected(id, peer)).await;
    let rt = link.edge.runtime().clone();
    let writer = rt.spawn(writer(w, rx, traffic.clone()));
    let reader = rt.spawn(read_frames(id, r, link.clone(), traffic));
    rt.spawn(supervise(
        id,
        (reader, writer),
        expires_in,
        link,
        (slot, descriptor),
        closed_tx,
        dropped,
    ));
    Some(closed_rx)
}

/// Shortest time between dialling a peer and dialling it again; it doubles, up to
/// [`MAX_REDIAL_AFTER`], while each connection closes at once (a crossed dial, a refusal).
pub const REDIAL_AFTER: Duration = Duration::from_secs(1);
/// Longest time between dials of a peer whose connections keep closing at once.
pub const MAX_REDIAL_AFTER: Duration = Duration::from_secs(30);
/// Silence after which a connection kept against a crossed dial counts as dead.
pub const STALE_AFTER: Duration = Duration::from_secs(10);

/// Longest pause after an `accept()` error (descriptors exhausted, ...).
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts inbound peers on `listener` (set non-blocking) until the driver goes away, on the
/// edge runtime. An `accept()` error (EMFILE, ENFILE, ECONNABORTED, ...) is logged and waited
/// out with a growing pause, never the end of the listener; each connection must pass the
/// edge's limits before TLS starts, and each handshake runs in its own task. If the accept
/// loop itself panicked it would be started again.
pub fn spawn_listener(listener: std::net::TcpListener, tls: TransportHandle, link: Link) {
    let rt = link.edge.runtime().clone();
    rt.clone().spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => Arc::new(l),
            Err(e) => {
                tracing::error!("the p2p listener cannot be registered: {e}");
                return;
            }
        };
        while !link.events.is_closed() {
            let run = rt.spawn(accept_loop(listener.clone(), tls.clone(), link.clone()));
            match run.await {
                Err(e) if e.is_panic() => {
                    tracing::error!("the accept loop panicked; restarting it")
                }
                _ => return,
            }
        }
    });
}

async fn accept_loop(listener: Arc<TcpListener>, tls: TransportHandle, link: Link) {
    let counters = link.edge.counters();
    let mut backoff = Duration::ZERO;
    let mut refusals_logged: Option<Instant> = None;
    let mut refused_since = 0u64;
    while !link.events.is_closed() {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(e) => {
                counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                tracing::warn!("p2p accept failed (retrying in {backoff:?}): {e}");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let admitted = link
            .edge
            .descriptor()
            .and_then(|descriptor| Ok((descriptor, link.edge.admit(addr.ip())?)));
        let (descriptor, permit) = match admitted {
            Ok(admitted) => admitted,
            Err(why) => {
                // Closed at once; one line a second at most, however many.
                drop(stream);
                refused_since += 1;
                if refusals_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(
                        refused = refused_since,
                        last = ?why,
                        "refused inbound connections before TLS (edge limits)"
                    );
                    refusals_logged = Some(Instant::now());
                    refused_since = 0;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (link, tls) = (link.clone(), tls.clone());
        link.edge.runtime().clone().spawn(async move {
            let handshake = tls.accept(stream).await;
            drop(permit);
            match handshake {
                // Inbound connections are not redialled: no close notice needed.
                Ok(attested) => drop(spawn_peer(attested, addr, false, link, descriptor).await),
                Err(why) => tracing::warn!(%addr, "refused inbound peer: {why}"),
            }
        });
    }
}

/// Keeps one outbound connection to `peer`, reconnecting when it drops, until the driver goes
/// away; on the edge runtime.
pub fn spawn_dialler(peer: SocketAddr, tls: TransportHandle, link: Link) {
    link.edge.runtime().clone().spawn(async move {
        let mut wait = REDIAL_AFTER;
        loop {
            if link.events.is_closed() {
                return;
            }
            let Ok(descriptor) = link.edge.descriptor() else {
                tokio::time::sleep(REDIAL_AFTER).await;
                continue;
            };
            let Ok(stream) = TcpStream::connect(peer).await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            match tls.dial(stream).await {
                Ok(attested) => {
                    match spawn_peer(attested, peer, true, link.clone(), descriptor).await {
                        Some(closed) => {
                            // A connection closed at once (a crossed dial, replaced by another
                            // instance's, refused) is redialled later and later: no handshake loop.
                            let since = Instant::now();
                            drop(closed.await);
                            let lived = since.elapsed();
                            if lived < wait {
                                tokio::time::sleep(wait - lived).await;
                                wait = (wait * 2).min(MAX_REDIAL_AFTER);
                            } else {
                                wait = REDIAL_AFTER;
                            }
                        }
                        None => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
                Err(why) => {
                    tracing::warn!(%peer, "refused peer: {why}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{Edge, EdgeLimits};

    fn attested() -> VerifiedPeer {
        VerifiedPeer {
            not_before: 0,
            not_after: u64::MAX,
            consensus_key: [1; 32],
            attested: true,
            measurement: [0; 48],
            chip_id: [0; 64],
            reported_tcb: Default::default(),
        }
    }

    fn link(
        edge: &Edge,
        preverifier: Option<Arc<Preverifier>>,
    ) -> (Link, mpsc::Receiver<PeerEvent>) {
        let (tx, events) = mpsc::channel(64);
        let link = Link {
            max_frame: 1 << 20,
            chain_id: "c".into(),
            hello: vec![],
            events: tx,
            transactions: None,
            next_id: Arc::new(AtomicU64::new(1)),
            edge: edge.handle(),
            preverifier,
        };
        (link, events)
    }

    #[test]
    fn a_peer_that_stops_reading_holds_at_most_its_byte_cap_and_the_writer_gives_it_back() {
        let (peer, frames) = Peer::detached("127.0.0.1:1".parse().unwrap(), attested());
        let part = vec![0u8; 1 << 20];
        let fit = (PEER_QUEUE_BYTES >> 20) as usize;
        assert!((0..fit).all(|_| peer.send(part.clone())));
        assert!(peer.is_backlogged(), "by bytes");
        assert!(!peer.send(part.clone()), "beyond the byte cap");
        assert!(!peer.send(vec![0]), "not even one byte more");
        assert_eq!(
            peer.traffic.queued.load(Ordering::Relaxed),
            PEER_QUEUE_BYTES
        );
        // The writer drains it: the bytes it wrote no longer count.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let traffic = peer.traffic.clone();
        drop(peer);
        rt.block_on(async {
            let drain = tokio::spawn(async move {
                let mut sink = Vec::new();
                far.read_to_end(&mut sink).await.map(|_| sink.len())
            });
            writer(near, frames, traffic.clone()).await;
            assert_eq!(drain.await.unwrap().unwrap() as u64, PEER_QUEUE_BYTES);
        });
        assert_eq!(traffic.queued.load(Ordering::Relaxed), 0);
        assert_eq!(traffic.sent.load(Ordering::Relaxed), PEER_QUEUE_BYTES);
    }

    #[test]
    fn a_forged_vote_where_the_signers_are_known_closes_the_connection_a_guessed_one_does_not() {
        use bulwark_types::tendermint::{validator, vote, PublicKey};
        use bulwark_types::tendermint_proto::v0_38::types as pb;
        // The ed25519 base point: a valid key whose secret nobody here knows.
        let mut point = [0x66u8; 32];
        point[0] = 0x58;
        let key = PublicKey::from_raw_ed25519(&point).unwrap();
        let set = validator::Set::without_proposer(vec![validator::Info::new(
            key,
            vote::Power::from(10u32),
        )]);
        let preverifier = Arc::new(Preverifier::new("c".parse().unwrap()));
        preverifier.publish(5, &set, &set);
        let forged = |height| {
            Payload::Vote(pb::Vote {
                r#type: 2,
                height,
                timestamp: Some(
                    bulwark_types::tendermint_proto::google::protobuf::Timestamp {
                        seconds: 1,
                        nanos: 0,
                    },
                ),
                validator_address: vec![0; 20],
                signature: vec![7; 64],
                ..Default::default()
            })
        };
        let edge = Edge::new(EdgeLimits::default(), "contained-test").unwrap();
        let (link, mut events) = link(&edge, Some(preverifier));
        let rt = edge.handle().runtime().clone();
        let (mut near, far) = tokio::io::duplex(1 << 16);
        let traffic = Arc::new(Traffic::default());
        rt.block_on(async {
            let reader = tokio::spawn(read_frames(3, far, link, traffic));
            for payload in [forged(6), forged(5), Payload::Status(Default::default())] {
                near.write_all(&bulwark_wire::encode(payload))
                    .await
                    .unwrap();
            }
            // The height after the published one: signers guessed, so only not remembered.
            match events.recv().await {
                Some(PeerEvent::Message(3, p)) => assert_eq!(p, forged(6)),
                other => panic!("expected the guessed vote, got {other:?}"),
            }
            // At the height being decided: the connection ends, nothing after it arrives.
            let ended = tokio::time::timeout(Duration::from_secs(10), reader).await;
            assert!(ended.is_ok(), "the connection stayed open after a forgery");
            assert!(events.recv().await.is_none(), "read on after a forgery");
        });
    }

    #[test]
    fn gossiped_transactions_take_their_own_channel_when_the_driver_gives_one() {
        let edge = Edge::new(EdgeLimits::default(), "contained-test").unwrap();
        let (mut link, mut events) = link(&edge, None);
        let (transactions_tx, mut transactions) = mpsc::channel(64);
        link.transactions = Some(transactions_tx);
        let rt = edge.handle().runtime().clone();
        let (mut near, far) = tokio::io::duplex(1 << 16);
        let txs = Payload::Txs(bulwark_wire::Txs {
            txs: vec![b"a=1".to_vec()],
        });
        let status = Payload::Status(Default::default());
        rt.block_on(async {
            tokio::spawn(read_frames(3, far, link, Arc::new(Traffic::default())));
            for payload in [txs.clone(), status.clone(), txs.clone()] {
                near.write_all(&bulwark_wire::encode(payload))
                    .await
                    .unwrap();
            }
            drop(near);
            for _ in 0..2 {
                match transactions.recv().await {
                    Some(PeerEvent::Message(3, p)) => assert_eq!(p, txs),
                    other => panic!("expected the transactions, got {other:?}"),
                }
            }
            match events.recv().await {
                Some(PeerEvent::Message(3, p)) => assert_eq!(p, status),
                other => panic!("expected the status, got {other:?}"),
            }
            assert!(events.recv().await.is_none(), "more than the status");
            assert!(transactions.recv().await.is_none(), "more than two batches");
        });
    }

    #[test]
    fn one_connection_per_validator_key_the_newest_and_none_of_our_own() {
        use std::collections::HashMap;
        let with_key = |k: u8| {
            let mut a = attested();
            a.consensus_key = [k; 32];
            Peer::detached("127.0.0.1:1".parse().unwrap(), a)
        };
        let own = [9u8; 32];
        let mut peers = HashMap::new();
        let (first, mut first_frames) = with_key(1);
        assert_eq!(admit(&mut peers, 1, first, &own), Admission::New);
        let (other, _other_frames) = with_key(2);
        assert_eq!(admit(&mut peers, 2, other, &own), Admission::New);
        let (again, _again_frames) = with_key(1);
        assert_eq!(admit(&mut peers, 3, again, &own), Admission::Replaced(1));
        let mut ids: Vec<_> = peers.keys().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![2, 3]);
        // The replaced connection's queue is closed: its writer ends, and with it the
        // connection.
        assert!(first_frames.try_recv().is_err());
        assert!(first_frames.is_closed());
        let (me, _me_frames) = with_key(9);
        assert_eq!(admit(&mut peers, 4, me, &own), Admission::OwnKey);
        assert_eq!(peers.len(), 2);
        // Crossed dials with key 1 (below ours): the connection we were dialled on stays,
        // whichever came first, as on the other side.
        let outbound = |k: u8| {
            let (mut p, f) = with_key(k);
            p.outbound = true;
            (p, f)
        };
        let (ours, _f) = outbound(1);
        assert_eq!(admit(&mut peers, 5, ours, &own), Admission::Crossed(3));
        let mut peers = HashMap::new();
        let (ours, _f) = outbound(1);
        assert_eq!(admit(&mut peers, 6, ours, &own), Admission::New);
        let (theirs, _f) = with_key(1);
        assert_eq!(admit(&mut peers, 7, theirs, &own), Admission::Replaced(6));
        // With a key above ours, the one we dialled stays.
        let (theirs, _f) = with_key(20);
        assert_eq!(admit(&mut peers, 8, theirs, &own), Admission::New);
        let (ours, _f) = outbound(20);
        assert_eq!(admit(&mut peers, 9, ours, &own), Admission::Replaced(8));
        let (theirs, _f) = with_key(20);
        assert_eq!(admit(&mut peers, 10, theirs, &own), Admission::Crossed(9));
        // Unless the kept one went silent: dead on this side too, it is replaced.
        let silent = Traffic {
            began: OnceInstant(Instant::now() - STALE_AFTER * 2),
            ..Traffic::default()
        };
        peers.get_mut(&9).unwrap().traffic = Arc::new(silent);
        let (theirs, _f) = with_key(20);
        assert_eq!(admit(&mut peers, 11, theirs, &own), Admission::Replaced(9));
    }

    #[test]
    fn a_frame_larger_than_the_byte_cap_goes_to_an_empty_queue_only() {
        let (peer, _frames) = Peer::detached("127.0.0.1:1".parse().unwrap(), attested());
        let block = vec![0u8; PEER_QUEUE_BYTES as usize + 1];
        assert!(peer.send(block.clone()), "a large block on an empty queue");
        assert!(!peer.send(block), "a second one waits for the first");
        assert!(!peer.send(vec![0]));
    }

    #[test]
    fn a_peer_is_backlogged_when_three_quarters_of_its_queue_are_taken() {
        let (peer, _frames) = Peer::detached("127.0.0.1:1".parse().unwrap(), attested());
        for _ in 0..PEER_QUEUE / 4 * 3 {
            assert!(peer.send(vec![0]));
        }
        assert!(!peer.is_backlogged());
        assert!(peer.send(vec![0]));
        assert!(peer.is_backlogged());
    }

    #[test]
    fn a_panic_in_a_connection_task_closes_that_connection_only() {
        let edge = Edge::new(
            EdgeLimits {
                max_peers: 1,
                ..EdgeLimits::default()
            },
            "contained-test",
        )
        .unwrap();
        let (link, mut events) = link(&edge, None);
        let rt = edge.handle().runtime().clone();
        let slot = link.edge.peer_slot().unwrap();
        assert!(link.edge.peer_slot().is_none());
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let reader = rt.spawn(async { panic!("a parser bug a peer reached") });
        let (writer_gone_tx, writer_gone) = tokio::sync::oneshot::channel::<()>();
        let writer = rt.spawn(async move {
            let _gone = writer_gone_tx; // dropped when the task is aborted
            std::future::pending::<()>().await
        });
        let (_keep, never) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(supervise(
            7,
            (reader, writer),
            Duration::from_secs(3600),
            link.clone(),
            slot,
            closed_tx,
            never,
        ));
        rt.block_on(async {
            match events.recv().await {
                Some(PeerEvent::Disconnected(7)) => {}
                other => panic!("expected Disconnected(7), got {other:?}"),
            }
            closed_rx.await.unwrap();
            assert!(writer_gone.await.is_err(), "the writer was not stopped");
        });
        assert_eq!(link.edge.counters().peer_panics.load(Ordering::Relaxed), 1);
        // Its slot is free again, and the runtime still runs tasks.
        assert!(link.edge.peer_slot().is_some());
        assert_eq!(rt.block_on(rt.spawn(async { 41 + 1 })).unwrap(), 42);
    }

    /// A connection the driver lets go (replaced by a newer one of the same validator) is
    /// closed at once, even with its writer stuck on a peer that stopped reading.
    #[test]
    fn a_connection_the_driver_drops_is_closed_even_with_its_writer_stuck() {
        let edge = Edge::new(EdgeLimits::default(), "contained-test").unwrap();
        let (link, mut events) = link(&edge, None);
        let rt = edge.handle().runtime().clone();
        let slot = link.edge.peer_slot().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let (reader_gone_tx, reader_gone) = tokio::sync::oneshot::channel::<()>();
        let reader = rt.spawn(async move {
            let _gone = reader_gone_tx;
            std::future::pending::<()>().await
        });
        let (writer_gone_tx, writer_gone) = tokio::sync::oneshot::channel::<()>();
        let writer = rt.spawn(async move {
            let _gone = writer_gone_tx; // a write_all that never returns
            std::future::pending::<()>().await
        });
        let (close, dropped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(supervise(
            9,
            (reader, writer),
            Duration::from_secs(3600),
            link.clone(),
            slot,
            closed_tx,
            dropped,
        ));
        drop(close);
        rt.block_on(async {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
            assert!(
                matches!(event, Ok(Some(PeerEvent::Disconnected(9)))),
                "{event:?}"
            );
            closed_rx.await.unwrap();
            assert!(reader_gone.await.is_err() && writer_gone.await.is_err());
        });
    }

    /// Review M-5 / issue 14 item 4: a live connection does not outlive the peer's certificate.
    #[test]
    fn a_connection_is_closed_when_the_peers_certificate_expires() {
        let edge = Edge::new(EdgeLimits::default(), "contained-test").unwrap();
        let (link, mut events) = link(&edge, None);
        let rt = edge.handle().runtime().clone();
        let slot = link.edge.peer_slot().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let (reader_gone_tx, reader_gone) = tokio::sync::oneshot::channel::<()>();
        let (writer_gone_tx, writer_gone) = tokio::sync::oneshot::channel::<()>();
        let reader = rt.spawn(async move {
            let _gone = reader_gone_tx;
            std::future::pending::<()>().await
        });
        let writer = rt.spawn(async move {
            let _gone = writer_gone_tx;
            std::future::pending::<()>().await
        });
        let (_keep, never) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(supervise(
            9,
            (reader, writer),
            Duration::from_millis(50),
            link.clone(),
            slot,
            closed_tx,
            never,
        ));
        rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                Ok(Some(PeerEvent::Disconnected(9))) => {}
                other => {
                    panic!("expected Disconnected(9) once the certificate expired, got {other:?}")
                }
            }
            closed_rx.await.unwrap();
            assert!(reader_gone.await.is_err(), "the reader was not stopped");
            assert!(writer_gone.await.is_err(), "the writer was not stopped");
        });
    }
    /// Each `poll_write` a writer makes, as the bytes it was offered.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl tokio::io::AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.0.push(buf.to_vec());
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn queued_frames_leave_in_one_write_and_a_large_one_in_its_own() {
        let frames: Vec<Vec<u8>> = vec![
            vec![1; 100],
            vec![2; 200],
            vec![3; 300],
            vec![4; COALESCED_BYTES + 1],
            vec![5; 50],
        ];
        let (tx, rx) = mpsc::channel(8);
        for frame in &frames {
            tx.try_send(frame.clone()).unwrap();
        }
        drop(tx);
        let traffic = Arc::new(Traffic::default());
        let total: usize = frames.iter().map(Vec::len).sum();
        traffic.queued.store(total as u64, Ordering::Relaxed);
        let mut out = Writes::default();
        writer(&mut out, rx, traffic.clone()).await;
        let sizes: Vec<usize> = out.0.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![600, COALESCED_BYTES + 1, 50]);
        assert_eq!(out.0.concat(), frames.concat(), "the same bytes, in order");
        assert_eq!(traffic.queued.load(Ordering::Relaxed), 0);
        assert_eq!(traffic.sent.load(Ordering::Relaxed), total as u64);
    }
}
