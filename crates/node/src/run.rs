//! `bulwark start`: the tokio driver around the [`Engine`]. It owns the sockets, the timers and
//! the signals; everything else is the engine's. One task runs the engine; each peer connection
//! has a reader (bytes to frames to engine inputs; a bad frame closes that peer only) and a
//! writer (a bounded queue, so a slow peer loses messages instead of stalling the node).

use crate::engine::{Engine, EngineConfig, Input, Output, PeerId};
use crate::home::Home;
use crate::mempool::MempoolConfig;
use crate::wire::{self, FrameDecoder};
use bulwark_app::kvstore::KvStore;
use bulwark_consensus::Config;
use bulwark_store::Store;
use bulwark_types::tendermint::private_key::PrivateKey;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// How often a node that made no progress asks its peers.
const TICK: Duration = Duration::from_millis(500);

enum Event {
    Connected(PeerId, mpsc::Sender<Vec<u8>>, SocketAddr),
    Disconnected(PeerId),
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

async fn reader(
    id: PeerId,
    stream: tokio::net::tcp::OwnedReadHalf,
    max_frame: usize,
    events: mpsc::Sender<Event>,
    closed: tokio::sync::oneshot::Sender<()>,
) {
    read_frames(id, stream, max_frame, &events).await;
    let _ = events.send(Event::Disconnected(id)).await;
    let _ = closed.send(());
}

async fn read_frames(
    id: PeerId,
    mut stream: tokio::net::tcp::OwnedReadHalf,
    max_frame: usize,
    events: &mpsc::Sender<Event>,
) {
    let mut decoder = FrameDecoder::new(max_frame);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_message() {
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

async fn writer(mut stream: tokio::net::tcp::OwnedWriteHalf, mut frames: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = frames.recv().await {
        if stream.write_all(&frame).await.is_err() {
            break;
        }
    }
}

/// Starts a connection's reader and writer; the returned receiver resolves when it closes.
async fn spawn_peer(
    id: PeerId,
    stream: TcpStream,
    addr: SocketAddr,
    max_frame: usize,
    events: mpsc::Sender<Event>,
) -> tokio::sync::oneshot::Receiver<()> {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    let (tx, rx) = mpsc::channel(PEER_QUEUE);
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    // Registered before the reader can report anything, so no input arrives from an unknown peer.
    let _ = events.send(Event::Connected(id, tx, addr)).await;
    tokio::spawn(writer(w, rx));
    tokio::spawn(reader(id, r, max_frame, events, closed_tx));
    closed_rx
}

/// Runs the node until SIGINT/SIGTERM.
pub fn start(home: Home) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(home))
}

async fn run(home: Home) -> anyhow::Result<()> {
    let (mut engine, first) = open_engine(&home)?;
    tracing::info!(height = engine.state().next_height(), address = %engine.address(), "started");
    let max_frame = home.config.p2p.max_frame_bytes;
    let (events_tx, mut events) = mpsc::channel::<Event>(16_384);
    let listener = TcpListener::bind(home.config.p2p.laddr).await?;
    let next_id = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    {
        let events = events_tx.clone();
        let next_id = next_id.clone();
        tokio::spawn(async move {
            while let Ok((stream, addr)) = listener.accept().await {
                let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Inbound connections are not redialled: the close notice is not needed.
                drop(spawn_peer(id, stream, addr, max_frame, events.clone()).await);
            }
        });
    }
    // Keep one outbound connection to every persistent peer, reconnecting when it drops.
    for peer in home.config.p2p.persistent_peers.clone() {
        let events = events_tx.clone();
        let next_id = next_id.clone();
        tokio::spawn(async move {
            loop {
                if events.is_closed() {
                    return;
                }
                match TcpStream::connect(peer).await {
                    Ok(stream) => {
                        let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let closed = spawn_peer(id, stream, peer, max_frame, events.clone()).await;
                        let _ = closed.await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        });
    }

    let mut peers: HashMap<PeerId, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut timers: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut timer_inputs: HashMap<u64, Input> = HashMap::new();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(TICK);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut outputs = first;
    loop {
        for o in outputs.drain(..) {
            match o {
                Output::Broadcast(p) => {
                    let frame = wire::encode(p);
                    for tx in peers.values() {
                        let _ = tx.try_send(frame.clone());
                    }
                }
                Output::Send(id, p) => {
                    if let Some(tx) = peers.get(&id) {
                        let _ = tx.try_send(wire::encode(p));
                    }
                }
                Output::Schedule { timeout, after } => {
                    tracing::debug!(?timeout, ?after, "timer");
                    seq += 1;
                    timers.push(Reverse((Instant::now() + after, seq)));
                    timer_inputs.insert(seq, Input::Timeout(timeout));
                }
                Output::ScheduleHeight { height, after } => {
                    seq += 1;
                    timers.push(Reverse((Instant::now() + after, seq)));
                    timer_inputs.insert(seq, Input::StartHeight(height));
                }
                Output::Committed { height, txs } => tracing::info!(height, txs, "committed"),
            }
        }
        let next_timer = timers.peek().map(|Reverse((at, _))| *at);
        let input = tokio::select! {
            event = events.recv() => match event {
                Some(Event::Connected(id, tx, addr)) => {
                    tracing::debug!(peer = id, %addr, "peer connected");
                    peers.insert(id, tx);
                    continue;
                }
                Some(Event::Disconnected(id)) => {
                    peers.remove(&id);
                    continue;
                }
                Some(Event::Input(input)) => input,
                None => { tracing::info!("event channel closed"); break }
            },
            _ = async { match next_timer { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                let Some(Reverse((_, s))) = timers.pop() else { continue };
                match timer_inputs.remove(&s) { Some(i) => i, None => continue }
            }
            _ = tick.tick() => Input::Tick,
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
