//! `bulwark start`: the tokio driver around the [`Engine`]. It owns the sockets, the timers and
//! the signals; everything else is the engine's. One task runs the engine; each peer connection
//! has a reader (bytes to frames to engine inputs; a bad frame closes that peer only) and a
//! writer (a bounded queue, so a slow peer loses messages instead of stalling the node).
//! JSON-RPC calls arrive on their own channel and are answered between engine inputs.

use crate::engine::{Engine, EngineConfig, Input, Output, PeerId};
use crate::home::Home;
use crate::mempool::MempoolConfig;
use crate::rpc::answer::{answer, committed_tx, NodeView, Reply};
use crate::rpc::{RpcLimits, RpcRequest};
use crate::transport::{Attested, Transport, CERT_LIFETIME};
use crate::wire::{self, FrameDecoder, Payload};
use bulwark_app::kvstore::KvStore;
use bulwark_consensus::Config;
use bulwark_net::VerifiedPeer;
use bulwark_store::Store;
use bulwark_types::tendermint::private_key::PrivateKey;
use bulwark_types::tendermint::{node, Time};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tendermint_rpc::endpoint::net_info;
use tendermint_rpc::response_error::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// How often a node that made no progress asks its peers.
const TICK: Duration = Duration::from_millis(500);
/// Most `broadcast_tx_commit` calls waiting for their block at once.
const MAX_COMMIT_WAITERS: usize = 10_000;
/// The p2p protocol version announced in node info.
const P2P_PROTOCOL: u64 = 8;

/// Bytes moved on one connection (for `net_info`).
#[derive(Debug, Default)]
struct Traffic {
    sent: AtomicU64,
    received: AtomicU64,
}

/// A connection as the driver sees it.
struct Peer {
    queue: mpsc::Sender<Vec<u8>>,
    addr: SocketAddr,
    outbound: bool,
    since: std::time::Instant,
    started: Time,
    traffic: Arc<Traffic>,
    hello: Option<wire::Hello>,
    attested: VerifiedPeer,
}

enum Event {
    Connected(PeerId, Peer),
    Disconnected(PeerId),
    Hello(PeerId, wire::Hello),
    Input(Input),
}

fn engine_config(home: &Home) -> EngineConfig {
    let c = &home.config.consensus;
    let ms = Duration::from_millis;
    EngineConfig {
        consensus: Config {
            propose: ms(c.timeout_propose_ms),
            propose_delta: ms(c.timeout_propose_delta_ms),
            prevote: ms(c.timeout_prevote_ms),
            prevote_delta: ms(c.timeout_prevote_delta_ms),
            precommit: ms(c.timeout_precommit_ms),
            precommit_delta: ms(c.timeout_precommit_delta_ms),
        },
        mempool: MempoolConfig {
            max_txs: home.config.mempool.max_txs,
            max_bytes: home.config.mempool.max_bytes,
            max_tx_bytes: home.config.mempool.max_tx_bytes,
            cache_size: home.config.mempool.cache_size,
        },
        max_block_tx_bytes: 4 << 20,
        timeout_commit: ms(c.timeout_commit_ms),
    }
}

/// Opens the node's stores and application, runs the handshake and WAL replay.
pub fn open_engine(home: &Home) -> anyhow::Result<(Engine, Vec<Output>)> {
    let data = home.dir.join("data");
    let store = Store::open(data.join("store"))?;
    let mut app = KvStore::open(data.join("app"))?;
    let chain_started = bulwark_store::blocks::BlockStore::open(&store)?
        .latest_height()?
        .is_some();
    let state = crate::handshake::genesis_state(&mut app, &home.genesis, chain_started)?;
    let key = match &home.validator_key.priv_key {
        PrivateKey::Ed25519(k) => ed25519_consensus::SigningKey::try_from(k.clone())
            .map_err(|e| anyhow::anyhow!("validator key: {e}"))?,
        _ => anyhow::bail!("the validator key is not ed25519"),
    };
    Ok(Engine::open(
        engine_config(home),
        &store,
        key,
        Box::new(app),
        state,
    )?)
}

/// What a connection's reader needs to know.
#[derive(Clone)]
struct Link {
    max_frame: usize,
    chain_id: String,
    events: mpsc::Sender<Event>,
}

type PeerRead = tokio::io::ReadHalf<tokio_rustls::TlsStream<TcpStream>>;
type PeerWrite = tokio::io::WriteHalf<tokio_rustls::TlsStream<TcpStream>>;

async fn reader(
    id: PeerId,
    stream: PeerRead,
    link: Link,
    traffic: Arc<Traffic>,
    closed: tokio::sync::oneshot::Sender<()>,
) {
    let events = link.events.clone();
    read_frames(id, stream, &link, &traffic).await;
    let _ = events.send(Event::Disconnected(id)).await;
    let _ = closed.send(());
}

async fn read_frames(id: PeerId, mut stream: PeerRead, link: &Link, traffic: &Traffic) {
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
            match decoder.next_message() {
                Ok(Some(Payload::Hello(hello))) => {
                    if hello.chain_id != link.chain_id {
                        tracing::warn!(peer = id, chain = %hello.chain_id, "closing peer of another chain");
                        return;
                    }
                    if events.send(Event::Hello(id, hello)).await.is_err() {
                        return;
                    }
                }
                Ok(Some(payload)) => {
                    if events
                        .send(Event::Input(Input::Peer(id, payload)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(peer = id, "closing peer: {e}");
                    return;
                }
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

/// Starts a connection's reader and writer, introducing this node first; the returned
/// receiver resolves when the connection closes.
async fn spawn_peer(
    id: PeerId,
    (stream, attested): Attested,
    addr: SocketAddr,
    outbound: bool,
    link: Link,
    hello: Vec<u8>,
) -> tokio::sync::oneshot::Receiver<()> {
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
    let _ = tx.try_send(hello);
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let traffic = Arc::new(Traffic::default());
    let peer = Peer {
        queue: tx,
        addr,
        outbound,
        since: std::time::Instant::now(),
        started: Time::now(),
        traffic: traffic.clone(),
        hello: None,
        attested,
    };
    // Registered before the reader can report anything, so no input arrives from an unknown peer.
    let _ = link.events.send(Event::Connected(id, peer)).await;
    tokio::spawn(writer(w, rx, traffic.clone()));
    tokio::spawn(reader(id, r, link, traffic, closed_tx));
    closed_rx
}

/// The CometBFT address of a validator's ed25519 key (hex).
fn validator_address(key: &[u8; 32]) -> String {
    bulwark_types::tendermint::PublicKey::from_raw_ed25519(key)
        .and_then(|k| k.ed25519())
        .map(|k| bulwark_types::tendermint::account::Id::from(k).to_string())
        .unwrap_or_else(|| hex::encode(key))
}

/// What `net_info` shows of a peer's verified evidence.
fn attestation_json(peer: &VerifiedPeer) -> Value {
    serde_json::json!({
        "validator_address": validator_address(&peer.consensus_key),
        "measurement": hex::encode(peer.measurement),
        "chip_id": hex::encode(peer.chip_id),
        "reported_tcb": peer.reported_tcb,
    })
}

/// This node's `node_info` (status and the Hello it sends).
fn node_info(home: &Home) -> anyhow::Result<node::Info> {
    let id = node::Id::try_from(home.node_key.priv_key.public_key())
        .map_err(|e| anyhow::anyhow!("node key: {e}"))?;
    let info = serde_json::json!({
        "protocol_version": {"p2p": P2P_PROTOCOL.to_string(), "block": bulwark_types::BLOCK_PROTOCOL.to_string(), "app": "0"},
        "id": id.to_string(),
        "listen_addr": format!("tcp://{}", home.config.p2p.laddr),
        "network": home.genesis.chain_id.to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "channels": "",
        "moniker": home.config.moniker,
        "other": {"tx_index": "off", "rpc_address": format!("tcp://{}", home.config.rpc.laddr)},
    });
    Ok(serde_json::from_value(info)?)
}

/// A connected peer as `net_info` shows it, with its verified attestation.
fn peer_info(peer: &Peer, own: &node::Info) -> Option<(net_info::PeerInfo, Value)> {
    let hello = peer.hello.as_ref()?;
    let mut info = own.clone();
    info.id = hello.node_id.parse().ok()?;
    info.moniker = hello.moniker.parse().ok()?;
    info.listen_addr = node::info::ListenAddress::new(hello.listen_addr.clone());
    info.version = serde_json::from_value(Value::String(hello.version.clone())).ok()?;
    info.other.rpc_address = String::new();
    let duration = peer.since.elapsed();
    let monitor = |bytes: &AtomicU64| net_info::Monitor {
        active: true,
        start: peer.started,
        duration,
        idle: Duration::ZERO,
        bytes: bytes.load(Ordering::Relaxed),
        samples: 0,
        inst_rate: 0,
        cur_rate: 0,
        avg_rate: bytes.load(Ordering::Relaxed) / duration.as_secs().max(1),
        peak_rate: 0,
        bytes_rem: 0,
        time_rem: 0,
        progress: 0,
    };
    let info = net_info::PeerInfo {
        node_info: info,
        is_outbound: peer.outbound,
        connection_status: net_info::ConnectionStatus {
            duration,
            send_monitor: monitor(&peer.traffic.sent),
            recv_monitor: monitor(&peer.traffic.received),
            channels: vec![],
        },
        remote_ip: peer.addr.ip(),
    };
    Some((info, attestation_json(&peer.attested)))
}

/// Runs the node until SIGINT/SIGTERM.
pub fn start(home: Home) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(home))
}

/// Inputs the engine asked for later, in deadline order.
#[derive(Default)]
struct Timers {
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    inputs: HashMap<u64, Input>,
    seq: u64,
}

impl Timers {
    fn set(&mut self, after: Duration, input: Input) {
        self.seq += 1;
        self.queue.push(Reverse((Instant::now() + after, self.seq)));
        self.inputs.insert(self.seq, input);
    }

    fn next(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    fn pop(&mut self) -> Option<Input> {
        let Reverse((_, seq)) = self.queue.pop()?;
        self.inputs.remove(&seq)
    }
}

/// `broadcast_tx_commit` calls waiting for their transaction's block.
#[derive(Default)]
struct CommitWaiters {
    by_hash: HashMap<[u8; 32], Vec<tokio::sync::oneshot::Sender<Result<Value, ResponseError>>>>,
    count: usize,
}

impl CommitWaiters {
    fn add(
        &mut self,
        hash: [u8; 32],
        reply: tokio::sync::oneshot::Sender<Result<Value, ResponseError>>,
    ) {
        if self.count >= MAX_COMMIT_WAITERS {
            // Forget callers that gave up before refusing a new one.
            self.by_hash.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
            self.count = self.by_hash.values().map(Vec::len).sum();
        }
        if self.count >= MAX_COMMIT_WAITERS {
            let _ = reply.send(Err(ResponseError::new(
                tendermint_rpc::response_error::Code::InternalError,
                Some(format!(
                    "{MAX_COMMIT_WAITERS} broadcast_tx_commit calls are already waiting"
                )),
            )));
            return;
        }
        self.by_hash.entry(hash).or_default().push(reply);
        self.count += 1;
    }

    /// Answers the callers whose transactions block `height` holds.
    fn committed(&mut self, engine: &Engine, height: u64) {
        if self.by_hash.is_empty() {
            return;
        }
        let hashes: Vec<[u8; 32]> = self.by_hash.keys().copied().collect();
        for (hash, answer) in committed_tx(engine, height, &hashes) {
            for reply in self.by_hash.remove(&hash).unwrap_or_default() {
                self.count -= 1;
                let _ = reply.send(answer.clone());
            }
        }
    }
}

async fn run(home: Home) -> anyhow::Result<()> {
    let (mut engine, first) = open_engine(&home)?;
    tracing::info!(height = engine.state().next_height(), address = %engine.address(), "started");
    let own_info = node_info(&home)?;
    let hello = wire::encode(Payload::Hello(wire::Hello {
        node_id: own_info.id.to_string(),
        chain_id: home.genesis.chain_id.to_string(),
        moniker: home.config.moniker.clone(),
        listen_addr: own_info.listen_addr.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
    }));
    let (events_tx, mut events) = mpsc::channel::<Event>(16_384);
    let link = Link {
        max_frame: home.config.p2p.max_frame_bytes,
        chain_id: home.genesis.chain_id.to_string(),
        events: events_tx.clone(),
    };
    let listener = TcpListener::bind(home.config.p2p.laddr).await?;
    let rpc_listener = TcpListener::bind(home.config.rpc.laddr).await?;
    let (rpc_tx, mut rpc_calls) = mpsc::channel::<RpcRequest>(1024);
    tokio::spawn(crate::rpc::serve(
        rpc_listener,
        rpc_tx,
        RpcLimits {
            max_body_bytes: home.config.rpc.max_body_bytes,
            ..RpcLimits::default()
        },
    ));
    let mut transport = Transport::new(&home)?;
    let tls = transport.handle();
    let next_id = Arc::new(AtomicU64::new(1));
    {
        let (link, next_id, hello, tls) =
            (link.clone(), next_id.clone(), hello.clone(), tls.clone());
        tokio::spawn(async move {
            while let Ok((stream, addr)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (link, next_id, hello, tls) =
                    (link.clone(), next_id.clone(), hello.clone(), tls.clone());
                // Each handshake in its own task: a slow or hostile one blocks nobody.
                tokio::spawn(async move {
                    match tls.accept(stream).await {
                        Ok(attested) => {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            // Inbound connections are not redialled: no close notice needed.
                            drop(spawn_peer(id, attested, addr, false, link, hello).await);
                        }
                        Err(why) => tracing::warn!(%addr, "refused inbound peer: {why}"),
                    }
                });
            }
        });
    }
    // Keep one outbound connection to every persistent peer, reconnecting when it drops.
    for peer in home.config.p2p.persistent_peers.clone() {
        let (link, next_id, hello, tls) =
            (link.clone(), next_id.clone(), hello.clone(), tls.clone());
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
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let closed =
                            spawn_peer(id, attested, peer, true, link.clone(), hello.clone()).await;
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
    drop(link);

    let validator_key = home.validator_key.pub_key;
    let listeners = vec![own_info.listen_addr.to_string()];
    let mut peers: HashMap<PeerId, Peer> = HashMap::new();
    let mut waiters = CommitWaiters::default();
    let mut timers = Timers::default();
    let mut tick = tokio::time::interval(TICK);
    let mut recertify = tokio::time::interval_at(
        tokio::time::Instant::now() + CERT_LIFETIME / 2,
        CERT_LIFETIME / 2,
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut outputs = first;
    loop {
        for o in outputs.drain(..) {
            match o {
                Output::Broadcast(p) => {
                    let frame = wire::encode(p);
                    for peer in peers.values() {
                        if peer.queue.try_send(frame.clone()).is_err() {
                            tracing::warn!(addr = %peer.addr, "peer queue full: message dropped");
                        }
                    }
                }
                Output::Send(id, p) => {
                    if let Some(peer) = peers.get(&id) {
                        if peer.queue.try_send(wire::encode(p)).is_err() {
                            tracing::warn!(addr = %peer.addr, "peer queue full: message dropped");
                        }
                    }
                }
                Output::Schedule { timeout, after } => {
                    tracing::debug!(?timeout, ?after, "timer");
                    timers.set(after, Input::Timeout(timeout));
                }
                Output::ScheduleHeight { height, after } => {
                    timers.set(after, Input::StartHeight(height))
                }
                Output::ScheduleTxFlush { after } => timers.set(after, Input::FlushTxs),
                Output::Committed { height, txs } => {
                    tracing::info!(height, txs, "committed");
                    waiters.committed(&engine, height);
                }
            }
        }
        let next_timer = timers.next();
        let input = tokio::select! {
            event = events.recv() => match event {
                Some(Event::Connected(id, peer)) => {
                    tracing::debug!(peer = id, addr = %peer.addr, "peer connected");
                    peers.insert(id, peer);
                    continue;
                }
                Some(Event::Disconnected(id)) => {
                    peers.remove(&id);
                    continue;
                }
                Some(Event::Hello(id, hello)) => {
                    tracing::info!(peer = id, node = %hello.node_id, moniker = %hello.moniker, "peer introduced itself");
                    if let Some(peer) = peers.get_mut(&id) {
                        peer.hello = Some(hello);
                    }
                    continue;
                }
                Some(Event::Input(input)) => input,
                None => { tracing::info!("event channel closed"); break }
            },
            Some(request) = rpc_calls.recv() => {
                let view = NodeView {
                    node_info: &own_info,
                    genesis: &home.genesis,
                    peers: peers.values().filter_map(|p| peer_info(p, &own_info)).collect(),
                    listeners: listeners.clone(),
                    validator_key,
                };
                let (reply, out) = answer(&mut engine, &view, request.call);
                match reply {
                    Reply::Ready(answer) => { let _ = request.reply.send(answer); }
                    Reply::AwaitCommit { hash } => waiters.add(hash, request.reply),
                }
                outputs = out;
                continue;
            }
            _ = async { match next_timer { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                match timers.pop() { Some(i) => i, None => continue }
            }
            _ = tick.tick() => Input::Tick,
            _ = recertify.tick() => {
                match transport.refresh() {
                    Ok(()) => tracing::info!("re-attested: new connections present a fresh certificate"),
                    Err(e) => tracing::error!("re-attestation failed (the current certificate stays until it expires): {e}"),
                }
                continue;
            }
            r = tokio::signal::ctrl_c() => { tracing::info!(?r, "SIGINT"); break }
            _ = sigterm.recv() => { tracing::info!("SIGTERM"); break }
        };
        tracing::trace!(?input, "input");
        outputs = engine.handle(input)?;
    }
    tracing::info!(height = engine.state().last_block_height, "shutting down");
    drop(engine);
    Ok(())
}
