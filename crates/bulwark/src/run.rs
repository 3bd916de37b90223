//! `bulwark start`: the tokio driver that wires the [`Engine`] to the world. It opens the stores
//! and the application, chooses the evidence source by the network's trust, starts the peer
//! connections (`bulwark-p2p`) and the JSON-RPC server (`bulwark-rpc`), and owns the timers and
//! signals; everything else is the engine's. One task runs the engine: peer messages, timers
//! and RPC calls reach it in turn, so RPC never races consensus.

use crate::home::{simulated_measurement, Home};
use bulwark_app::kvstore::KvStore;
use bulwark_attest::simulated::SimulatedPsp;
use bulwark_attest::{EvidenceSource, GuestDevice, Trust};
use bulwark_consensus::Config;
use bulwark_mempool::MempoolConfig;
use bulwark_net::NetworkPolicy;
use bulwark_node::engine::{Engine, EngineConfig, Input, Output};
use bulwark_p2p::peers::{spawn_dialler, spawn_listener};
use bulwark_p2p::transport::CERT_LIFETIME;
use bulwark_p2p::{ConnectionId, Edge, EdgeLimits, Link, Peer, PeerEvent, Transport};
use bulwark_rpc::answer::{answer, NodeView, Reply};
use bulwark_rpc::peers::peer_info;
use bulwark_rpc::waiters::CommitWaiters;
use bulwark_rpc::{RpcLimits, RpcRequest};
use bulwark_store::Store;
use bulwark_types::tendermint::node;
use bulwark_types::tendermint::private_key::PrivateKey;
use bulwark_wire::{self as wire, Payload};
use sha2::Digest;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often a node that made no progress asks its peers.
const TICK: Duration = Duration::from_millis(500);
/// The p2p protocol version announced in node info.
const P2P_PROTOCOL: u64 = 8;

fn engine_config(home: &Home) -> EngineConfig {
    let c = &home.config.consensus;
    let ms = Duration::from_millis;
    EngineConfig {
        clock: bulwark_node::engine::Clock::system(),
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
    let state = bulwark_node::handshake::genesis_state(&mut app, &home.genesis, chain_started)?;
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

/// Runs the node until SIGINT/SIGTERM.
pub fn start(home: Home) -> anyhow::Result<()> {
    // Every idle or hostile connection holds a descriptor: use all the kernel allows.
    match bulwark_boot::raise_nofile_limit() {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!("open files limit not raised: {e}"),
    }
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

/// Where this node's evidence comes from, by the network's trust.
fn evidence_source(home: &Home) -> anyhow::Result<Box<dyn EvidenceSource>> {
    match home.attestation.trust {
        Trust::Amd => Ok(Box::new(GuestDevice::open().map_err(|e| {
            anyhow::anyhow!("this network's genesis trusts AMD hardware only: {e}")
        })?)),
        Trust::Simulated => {
            tracing::warn!(
                "SIMULATED ATTESTATION: this network's genesis trusts the project's simulated \
                 PSP. Its evidence proves nothing about hardware or isolation; never let a \
                 network that carries value use `simulated` trust."
            );
            // A stable simulated chip per node; the simulated root is public, so nothing here
            // is a secret.
            let node_public = home.node_key.priv_key.public_key().to_bytes();
            let chip_secret: [u8; 32] =
                sha2::Sha256::digest([b"bulwark simulated chip".as_slice(), &node_public].concat())
                    .into();
            Ok(Box::new(SimulatedPsp::new(
                chip_secret,
                simulated_measurement()?,
            )))
        }
    }
}

/// Attested TLS for this node: its evidence source, its consensus key, and the policy that
/// admits exactly genesis's validators with evidence genesis allows.
fn transport(home: &Home) -> anyhow::Result<Transport> {
    let consensus_key: [u8; 32] = home
        .validator_key
        .pub_key
        .ed25519()
        .map(|k| k.as_bytes().to_vec())
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("the validator key is not ed25519"))?;
    let validators = home
        .genesis
        .validators
        .iter()
        .filter_map(|v| v.pub_key.ed25519())
        .filter_map(|k| k.as_bytes().try_into().ok())
        .collect();
    let policy = NetworkPolicy {
        attestation: home.attestation.clone(),
        chain_id: home.genesis.chain_id.to_string(),
        validators,
    };
    Ok(Transport::new(
        evidence_source(home)?,
        consensus_key,
        policy,
    )?)
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
    let (events_tx, mut events) = mpsc::channel::<PeerEvent>(16_384);
    // The peer connections run on the edge's own threads, never on this one (H-2); their
    // names tell PID 1 that a panic there is contained (L-7).
    let defaults = EdgeLimits::default();
    let total_rate = home
        .config
        .p2p
        .handshakes_per_second
        .map_or(defaults.total_rate, f64::from);
    let edge = Edge::new(
        EdgeLimits {
            max_peers: 2 * home.genesis.validators.len() + 4,
            total_rate,
            total_burst: 2.0 * total_rate,
            max_handshakes: home
                .config
                .p2p
                .max_inbound_handshakes
                .unwrap_or(defaults.max_handshakes),
            ..defaults
        },
        &format!("{}p2p", bulwark_boot::CONTAINED_THREAD_PREFIX),
    )?;
    let link = Link {
        // A decided block travels in one frame: the limit is at least the chain's largest block.
        max_frame: home
            .config
            .p2p
            .max_frame_bytes
            .max(bulwark_node::chain::max_message_bytes(
                &home.genesis.consensus_params,
                home.genesis.validators.len(),
            )),
        chain_id: home.genesis.chain_id.to_string(),
        hello,
        events: events_tx,
        next_id: Arc::new(AtomicU64::new(1)),
        edge: edge.handle(),
    };
    let listener = std::net::TcpListener::bind(home.config.p2p.laddr)?;
    listener.set_nonblocking(true)?;
    let rpc_listener = TcpListener::bind(home.config.rpc.laddr).await?;
    let (rpc_tx, mut rpc_calls) = mpsc::channel::<RpcRequest>(1024);
    tokio::spawn(bulwark_rpc::serve(
        rpc_listener,
        rpc_tx,
        RpcLimits {
            max_body_bytes: home.config.rpc.max_body_bytes,
            ..RpcLimits::default()
        },
    ));
    let mut transport = transport(&home)?;
    spawn_listener(listener, transport.handle(), link.clone());
    // Keep one outbound connection to every persistent peer, reconnecting when it drops.
    for peer in home.config.p2p.persistent_peers.clone() {
        spawn_dialler(peer, transport.handle(), link.clone());
    }
    drop(link);

    let validator_key = home.validator_key.pub_key;
    let listeners = vec![own_info.listen_addr.to_string()];
    let mut peers: HashMap<ConnectionId, Peer> = HashMap::new();
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
                        if !peer.send(frame.clone()) {
                            tracing::warn!(addr = %peer.addr, "peer queue full: message dropped");
                        }
                    }
                }
                Output::Send(id, p) => {
                    if let Some(peer) = peers.get(&id) {
                        if !peer.send(wire::encode(p)) {
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
                Some(PeerEvent::Connected(id, peer)) => {
                    tracing::debug!(peer = id, addr = %peer.addr, "peer connected");
                    peers.insert(id, peer);
                    continue;
                }
                Some(PeerEvent::Disconnected(id)) => {
                    peers.remove(&id);
                    continue;
                }
                Some(PeerEvent::Hello(id, hello)) => {
                    tracing::info!(peer = id, node = %hello.node_id, moniker = %hello.moniker, "peer introduced itself");
                    if let Some(peer) = peers.get_mut(&id) {
                        peer.hello = Some(hello);
                    }
                    continue;
                }
                Some(PeerEvent::Message(id, payload)) => Input::Peer(id, payload),
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
    drop(edge);
    drop(engine);
    Ok(())
}
