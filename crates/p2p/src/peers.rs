//! Connections to peers once attested: each has a reader (bytes to frames to [`PeerEvent`]s; a
//! bad frame or a `Hello` of another chain closes that peer only) and a writer (a bounded
//! queue, so a slow peer loses messages instead of stalling the node). The listener accepts
//! with every handshake in its own task; a dialler keeps one connection to each persistent
//! peer and redials it when it drops.

use crate::transport::{Attested, TransportHandle};
use bulwark_net::VerifiedPeer;
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

/// A connection, numbered in the order they were made.
pub type ConnectionId = u64;

/// Bytes moved on one connection (for `net_info`).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Bytes written.
    pub sent: AtomicU64,
    /// Bytes read.
    pub received: AtomicU64,
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
}

impl Peer {
    /// Queues an encoded frame; false (and the frame dropped) when the peer's queue is full or
    /// the connection is gone.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        self.queue.try_send(frame).is_ok()
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
    /// The next connection's number.
    pub next_id: Arc<AtomicU64>,
}

type PeerRead = tokio::io::ReadHalf<tokio_rustls::TlsStream<TcpStream>>;
type PeerWrite = tokio::io::WriteHalf<tokio_rustls::TlsStream<TcpStream>>;

async fn reader(
    id: ConnectionId,
    stream: PeerRead,
    link: Link,
    traffic: Arc<Traffic>,
    closed: tokio::sync::oneshot::Sender<()>,
) {
    read_frames(id, stream, &link, &traffic).await;
    let _ = link.events.send(PeerEvent::Disconnected(id)).await;
    let _ = closed.send(());
}

async fn read_frames(id: ConnectionId, mut stream: PeerRead, link: &Link, traffic: &Traffic) {
    let events = &link.events;
    let mut decoder = FrameDecoder::new(link.max_frame);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        traffic.received.fetch_add(n as u64, Ordering::Relaxed);
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
                Ok(Some(payload)) => PeerEvent::Message(id, payload),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = id, "closing peer: {e}");
                    return;
                }
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

async fn writer(mut stream: PeerWrite, mut frames: mpsc::Receiver<Vec<u8>>, traffic: Arc<Traffic>) {
    while let Some(frame) = frames.recv().await {
        if stream.write_all(&frame).await.is_err() {
            break;
        }
        traffic
            .sent
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
    }
}

/// The CometBFT address of a validator's ed25519 key (hex).
pub fn validator_address(key: &[u8; 32]) -> String {
    bulwark_types::tendermint::PublicKey::from_raw_ed25519(key)
        .and_then(|k| k.ed25519())
        .map(|k| bulwark_types::tendermint::account::Id::from(k).to_string())
        .unwrap_or_else(|| hex::encode(key))
}

/// Starts a connection's reader and writer, introducing this node first; the returned
/// receiver resolves when the connection closes.
async fn spawn_peer(
    (stream, attested): Attested,
    addr: SocketAddr,
    outbound: bool,
    link: Link,
) -> tokio::sync::oneshot::Receiver<()> {
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
    let (r, w) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(PEER_QUEUE);
    let _ = tx.try_send(link.hello.clone());
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let traffic = Arc::new(Traffic::default());
    let peer = Peer {
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
    tokio::spawn(writer(w, rx, traffic.clone()));
    tokio::spawn(reader(id, r, link, traffic, closed_tx));
    closed_rx
}

/// Accepts inbound peers on `listener` until the driver goes away; each handshake runs in its
/// own task, so a slow or hostile one blocks nobody.
pub fn spawn_listener(listener: TcpListener, tls: TransportHandle, link: Link) {
    tokio::spawn(async move {
        while let Ok((stream, addr)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (link, tls) = (link.clone(), tls.clone());
            tokio::spawn(async move {
                match tls.accept(stream).await {
                    // Inbound connections are not redialled: no close notice needed.
                    Ok(attested) => drop(spawn_peer(attested, addr, false, link).await),
                    Err(why) => tracing::warn!(%addr, "refused inbound peer: {why}"),
                }
            });
        }
    });
}

/// Keeps one outbound connection to `peer`, reconnecting when it drops, until the driver goes
/// away.
pub fn spawn_dialler(peer: SocketAddr, tls: TransportHandle, link: Link) {
    tokio::spawn(async move {
        loop {
            if link.events.is_closed() {
                return;
            }
            let Ok(stream) = TcpStream::connect(peer).await else {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            match tls.dial(stream).await {
                Ok(attested) => {
                    let closed = spawn_peer(attested, peer, true, link.clone()).await;
                    let _ = closed.await;
                }
                Err(why) => {
                    tracing::warn!(%peer, "refused peer: {why}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}
