//! `bulwark start`: the tokio driver that wires the [`Engine`] to the world. It opens the stores
//! and the application, chooses the evidence source by the network's trust, starts the peer
//! connections (`bulwark-p2p`) and the JSON-RPC server (`bulwark-rpc`), and owns the timers and
//! signals; everything else is the engine's. One task runs the engine: peer messages, timers
//! and RPC calls reach it in turn, so RPC never races consensus.

use crate::home::{Home, Launch};
use anyhow::Context as _;
use bulwark_attest::{EvidenceSource, Trust};
use bulwark_consensus::Config;
use bulwark_mempool::MempoolConfig;
use bulwark_metrics::{Metrics, Scrape, ScrapeView};
use bulwark_net::{FullNodes, NetworkPolicy, ValidatorKeys};
use bulwark_node::engine::{Engine, EngineConfig, Input, Output, PeerRole};
use bulwark_p2p::peers::{spawn_dialler, spawn_listener};
use bulwark_p2p::transport::CERT_LIFETIME;
use bulwark_p2p::{
    admit_logged, deliver, ConnectionId, Edge, EdgeLimits, Inbox, Link, Membership, Peer,
    PeerEvent, Transport,
};
use bulwark_rpc::answer::{answer, NodeView, Reply};
use bulwark_rpc::peers::peer_info;
use bulwark_rpc::waiters::CommitWaiters;
use bulwark_rpc::{RpcLimits, RpcRequest};
use bulwark_store::Store;
use bulwark_types::tendermint::private_key::PrivateKey;
use bulwark_types::tendermint::validator;
use bulwark_wire::preverify::Preverifier;
use bulwark_wire::{self as wire, Payload};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often a node that made no progress asks its peers.
const TICK: Duration = Duration::from_millis(500);

fn engine_config(home: &Home) -> anyhow::Result<EngineConfig> {
    let c = &home.config.consensus;
    let ms = Duration::from_millis;
    // A new instance at every start: a copy of this disk booted elsewhere, or booted again after
    // this one ran on, must claim the key first. The launch instance the genesis names is the
    // enrolling VM running on, or (process mode, simulated trust) the enrolled home's first start.
    let mut instance = [0u8; 32];
    getrandom::getrandom(&mut instance)
        .map_err(|e| anyhow::anyhow!("drawing this start's instance: {e}"))?;
    match home.launch {
        Launch::Enrolled { instance: launch } => instance = launch,
        Launch::ForGenesis => {
            let stored = crate::ceremony::take_launch_instance(&home.dir.join("config"))?;
            if let (Some(launch), Trust::Simulated) = (stored, home.attestation.trust) {
                instance = launch;
            }
        }
    }
    Ok(EngineConfig {
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
        instance,
    })
}

/// Opens the node's stores and application, runs the handshake and WAL replay.
pub fn open_engine(home: &Home) -> anyhow::Result<(Engine, Vec<Output>)> {
    let data = home.dir.join("data");
    let key = match &home.validator_key.priv_key {
        PrivateKey::Ed25519(k) => ed25519_consensus::SigningKey::try_from(k.clone())
            .map_err(|e| anyhow::anyhow!("validator key: {e}"))?,
        _ => anyhow::bail!("the validator key is not ed25519"),
    };
    // WAL records and the last-sign-state carry a MAC under a key only the open identity gives.
    let mac_key = bulwark_identity::state_mac_key(key.as_bytes(), &home.chain_name);
    let store = Store::open(data.join("store"))?
        .with_mac_key(*mac_key)
        .with_indexes(home.config.tx_index.indexer == bulwark_config::Indexer::Kv);
    let mut app = home.config.app.connect(&data.join("app"))?;
    let mut state = bulwark_node::handshake::genesis_state(app.as_mut(), &home.genesis)?;
    state.claims = bulwark_node::instance::Register::at_launch(
        state.initial_height,
        crate::ceremony::launch_instances(&home.genesis_document)
            .map_err(|e| anyhow::anyhow!("genesis: {e}"))?,
    );
    Ok(Engine::open(engine_config(home)?, &store, key, app, state)?)
}

/// Runs the node until SIGINT/SIGTERM.
pub fn start(home: Home) -> anyhow::Result<()> {
    start_interposed(home, None)
}

/// Where an interposed message goes: every peer (`None`), or the peers at these positions of
/// the connected peers in connection order.
pub type Dests = Option<Vec<usize>>;

/// Something between the engine and its peers that may change what goes out: the byzantine
/// validators of the end-to-end tests (`bulwark-adversary`), run as real processes with the
/// real driver. The `bulwark` binary never installs one.
pub trait Interposer: Send {
    /// A message from the peer at position `from` reached the engine; what to send at once.
    fn incoming(
        &mut self,
        engine: &Engine,
        from: usize,
        payload: &Payload,
    ) -> Vec<(Dests, Payload)>;
    /// What goes out instead of a message the engine sends (`relayed`: a reply to one peer).
    fn outgoing(
        &mut self,
        engine: &Engine,
        payload: Payload,
        relayed: bool,
    ) -> Vec<(Dests, Payload)>;
    /// What it sends on its own, every tick.
    fn act(&mut self, engine: &Engine) -> Vec<(Dests, Payload)>;
}

/// Runs the node until SIGINT/SIGTERM with `interposer` between the engine and its peers.
pub fn start_interposed(home: Home, interposer: Option<Box<dyn Interposer>>) -> anyhow::Result<()> {
    // Every idle or hostile connection holds a descriptor: use all the kernel allows.
    match bulwark_boot::raise_nofile_limit() {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(e) => tracing::warn!("open files limit not raised: {e}"),
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    bulwark_types::signing::remember_signatures_made_on_this_thread();
    runtime.block_on(run(home, interposer))
}

/// Queues `payload` for peer `id`, or hands it back for the engine
/// ([`Input::Undelivered`]) when the peer's queue is full; once one message of a batch did not
/// fit (`full` names the peer), the rest of the batch to it is not even encoded.
fn send_to(
    peers: &HashMap<ConnectionId, Peer>,
    full: &mut HashSet<ConnectionId>,
    id: ConnectionId,
    payload: Payload,
) -> Option<Input> {
    let peer = peers.get(&id)?;
    if full.contains(&id) || !peer.send(wire::encode_ref(&payload)) {
        if full.insert(id) {
            tracing::warn!(addr = %peer.addr, "peer queue full: messages dropped");
        }
        return Some(Input::Undelivered(id, payload));
    }
    None
}

/// Inputs the engine asked for later, in deadline order (ties in the order they were set).
#[derive(Default)]
struct Timers {
    queue: BTreeMap<(Instant, u64), Input>,
    seq: u64,
}

impl Timers {
    fn set(&mut self, after: Duration, input: Input) {
        self.seq += 1;
        self.queue.insert((Instant::now() + after, self.seq), input);
    }

    fn next(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    fn pop(&mut self) -> Option<Input> {
        self.queue.pop_first().map(|(_, input)| input)
    }
}

/// Runs the engine's messages through `interposer`: what it sends instead goes out at once;
/// everything else is left for the loop.
fn interpose(
    interposer: &mut dyn Interposer,
    engine: &Engine,
    peers: &HashMap<ConnectionId, Peer>,
    outputs: Vec<Output>,
) -> Vec<Output> {
    let mut rest = Vec::new();
    for o in outputs {
        match o {
            Output::Broadcast(p) => {
                for (dests, p) in interposer.outgoing(engine, p, false) {
                    deliver(peers, dests.as_deref(), &wire::encode(p));
                }
            }
            Output::Send(id, p) => {
                for (_, p) in interposer.outgoing(engine, p, true) {
                    rest.push(Output::Send(id, p));
                }
            }
            other => rest.push(other),
        }
    }
    rest
}

/// Where this node's evidence comes from, by the network's trust.
fn evidence_source(home: &Home) -> anyhow::Result<Box<dyn EvidenceSource>> {
    if home.attestation.trust == Trust::Simulated {
        tracing::warn!(
            "SIMULATED ATTESTATION: this network's genesis trusts the project's simulated \
             PSP. Its evidence proves nothing about hardware or isolation; never let a \
             network that carries value use `simulated` trust."
        );
    }
    let node_public = home.node_key.priv_key.public_key().to_bytes();
    // A simulated launch's HOST_DATA, unless the host gave one: the enrolling boot's binds no
    // genesis, as on hardware.
    let host_data = match home.launch {
        Launch::ForGenesis => home.genesis_sha256,
        Launch::Enrolled { .. } => [0; 32],
    };
    Ok(crate::home::evidence_source(
        home.attestation.trust,
        &home.dir,
        Some(&node_public),
        host_data,
    )?)
}

/// The guest looks at its own report before it runs: a launch for a network must be bound to
/// the genesis it loaded (HOST_DATA = SHA-256 of the file; the enrolling boot, launched before
/// any genesis, binds it in its TLS evidence only), and its own key must be a validator of it.
fn check_own_launch(home: &Home, source: &mut dyn EvidenceSource) -> anyhow::Result<()> {
    let own = source.evidence([0; 64])?;
    let report = bulwark_attest::AttestationReport::from_bytes(&own.report)
        .map_err(|e| anyhow::anyhow!("this guest's own report: {e}"))?;
    if home.launch == Launch::ForGenesis && report.host_data() != home.genesis_sha256 {
        anyhow::bail!(
            "host_data: this guest was launched for the genesis with SHA-256 {}, but the host gave it {} (SHA-256 {}): refusing to run",
            hex::encode(report.host_data()),
            home.dir.join("config/genesis.json").display(),
            hex::encode(home.genesis_sha256)
        );
    }
    let at = u64::try_from(home.genesis.genesis_time.unix_timestamp()).unwrap_or(0);
    crate::ceremony::check_genesis_for(&home.genesis_document, at, &own_consensus_key(home)?)
        .map_err(|e| anyhow::anyhow!("{e}: refusing to run"))?;
    Ok(())
}

/// This node's consensus public key.
fn own_consensus_key(home: &Home) -> anyhow::Result<[u8; 32]> {
    home.validator_key
        .pub_key
        .ed25519()
        .and_then(|k| k.as_bytes().try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("the validator key is not ed25519"))
}

/// What a connected peer is, for the engine.
fn role_of(membership: &Membership, peer: &Peer) -> PeerRole {
    match (peer.attested.attested, membership.is_validator(peer)) {
        (false, _) => PeerRole::Unattested,
        (true, true) => PeerRole::Validator,
        (true, false) => PeerRole::FullNode,
    }
}

/// The validators a node admits: those of the next height and of the one after.
fn validators_ahead(state: &bulwark_node::chain::ChainState) -> BTreeSet<[u8; 32]> {
    bulwark_p2p::membership::keys_of([&state.validator_infos, &state.next_validator_infos])
}

/// Attested TLS for this node: its evidence source, its consensus key, and the policy that
/// admits genesis's validators (the driver then follows the chain's set) and, where genesis
/// says so, attested full nodes, with evidence genesis allows.
fn transport(home: &Home) -> anyhow::Result<(Transport, ValidatorKeys)> {
    let consensus_key = own_consensus_key(home)?;
    let validators: ValidatorKeys =
        bulwark_p2p::membership::keys_of([&validator::Set::without_proposer(
            home.genesis.validators.clone(),
        )])
        .into_iter()
        .collect();
    // Peers bind this very genesis file in their evidence (not by HOST_DATA: a validator's
    // enrolling boot, which runs on into the network, was launched before the genesis existed).
    let mut attestation = home.attestation.clone();
    attestation.host_data = None;
    let policy = NetworkPolicy {
        attestation,
        chain_id: home.genesis.chain_id.to_string(),
        genesis_sha256: home.genesis_sha256,
        validators: validators.clone(),
        full_nodes: home.full_nodes,
    };
    if home.unattested {
        tracing::warn!("UNATTESTED FULL NODE: this node's certificates carry no evidence; it follows the chain and serves RPC, and no peer will ever count it as a validator");
        return Ok((Transport::unattested(consensus_key, policy)?, validators));
    }
    let mut source = evidence_source(home)?;
    check_own_launch(home, source.as_mut())?;
    Ok((Transport::new(source, consensus_key, policy)?, validators))
}

async fn run(home: Home, mut interposer: Option<Box<dyn Interposer>>) -> anyhow::Result<()> {
    // Listeners first, for the whole run: tokio hands a signal only to listeners that exist when
    // it comes (PID 1 drops one it has no handler for), so one made per wait can miss it.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    // Attested TLS first: it checks this guest's own launch before anything is opened.
    let (mut transport, admitted) = transport(&home)?;
    let (mut engine, first) = open_engine(&home)?;
    let (full_nodes, settings) = (home.full_nodes != FullNodes::Refused, &home.config.p2p);
    let max_full_nodes = if full_nodes {
        settings.max_full_node_peers()
    } else {
        0
    };
    let membership = Membership::new(admitted, full_nodes, max_full_nodes);
    let mut peers: HashMap<ConnectionId, Peer> = HashMap::new();
    membership.follow(&mut peers, validators_ahead(engine.state()));
    tracing::info!(height = engine.state().next_height(), address = %engine.address(), "started");
    let own_info = bulwark_rpc::peers::own_node_info(
        home.node_key.priv_key.public_key(),
        &home.config.moniker,
        home.genesis.chain_id.as_str(),
        home.config.p2p.laddr,
        home.config.rpc.laddr,
    )
    .map_err(anyhow::Error::msg)?;
    let hello = wire::encode(Payload::Hello(wire::Hello {
        node_id: own_info.id.to_string(),
        chain_id: home.genesis.chain_id.to_string(),
        moniker: home.config.moniker.clone(),
        listen_addr: own_info.listen_addr.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
    }));
    let (events_tx, transactions_tx, mut inbox) = Inbox::channels(16_384, 1_024);
    // The peer connections run on the edge's own threads, never on this one (H-2); their
    // names tell PID 1 that a panic there is contained (L-7).
    let defaults = EdgeLimits::default();
    let total_rate = settings
        .handshakes_per_second
        .map_or(defaults.total_rate, f64::from);
    let limits = EdgeLimits {
        // Room for the largest set the chain may come to (only its members and the admitted
        // full nodes stay connected; the rest close at once).
        max_peers: 2 * bulwark_node::chain::MAX_VALIDATORS.max(home.genesis.validators.len())
            + 4
            + max_full_nodes,
        total_rate,
        total_burst: 2.0 * total_rate,
        max_handshakes: settings
            .max_inbound_handshakes
            .unwrap_or(defaults.max_handshakes),
        ..defaults
    };
    let (limits, servers) = limits.with_descriptors(
        bulwark_boot::nofile_limit()?,
        2 * bulwark_store::MAX_CACHED_FILES as u64,
    )?;
    let edge = Edge::new(
        limits,
        &format!("{}p2p", bulwark_boot::CONTAINED_THREAD_PREFIX),
    )?;
    // The connection threads check signatures before this thread sees them (review M6).
    let preverifier = Arc::new(Preverifier::new(home.genesis.chain_id.clone()));
    let state = engine.state();
    preverifier.publish(
        state.next_height(),
        &state.validator_infos,
        &state.last_validator_infos,
    );
    let link = Link {
        // A decided block travels in one frame: the limit is at least the chain's largest block
        // with the largest commit the chain's set may come to sign.
        max_frame: settings
            .max_frame_bytes
            .max(bulwark_node::chain::max_message_bytes(
                &home.genesis.consensus_params,
                bulwark_node::chain::MAX_VALIDATORS.max(home.genesis.validators.len()),
            )),
        chain_id: home.genesis.chain_id.to_string(),
        hello,
        events: events_tx,
        transactions: Some(transactions_tx),
        next_id: Arc::new(AtomicU64::new(1)),
        edge: edge.handle(),
        preverifier: Some(preverifier.clone()),
    };
    let listener = std::net::TcpListener::bind(home.config.p2p.laddr)?;
    listener.set_nonblocking(true)?;
    let rpc_listener = std::net::TcpListener::bind(home.config.rpc.laddr)?;
    let (rpc_tx, mut rpc_calls) = mpsc::channel::<RpcRequest>(1024);
    bulwark_rpc::spawn_serve(
        rpc_listener,
        rpc_tx,
        RpcLimits {
            max_body_bytes: home.config.rpc.max_body_bytes,
            descriptors: servers.clone(),
            ..RpcLimits::default()
        },
        Some(engine.blocks().clone()),
    )?;
    // Prometheus metrics, when enabled: scrapes are answered on this task like RPC calls.
    let (scrape_tx, mut scrapes) = mpsc::channel::<Scrape>(16);
    let instrumentation = &home.config.instrumentation;
    if instrumentation.prometheus {
        let addr = instrumentation.listen_addr().map_err(anyhow::Error::msg)?;
        let metrics_listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding instrumentation.prometheus_listen_addr {addr}"))?;
        bulwark_metrics::spawn_serve(
            metrics_listener,
            scrape_tx,
            (instrumentation.max_open_connections, servers),
        )?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    } else {
        drop(scrape_tx);
    }
    let mut metrics = Metrics::new(&instrumentation.namespace, home.genesis.chain_id.as_str());
    let handshakes = transport.stats();
    let edge_handle = edge.handle();
    spawn_listener(listener, transport.handle(), link.clone());
    // Keep one outbound connection to every persistent peer, reconnecting when it drops.
    for peer in home.config.p2p.persistent_peers.clone() {
        spawn_dialler(peer, transport.handle(), link.clone());
    }
    drop(link);

    let validator_key = home.validator_key.pub_key;
    let own_key = own_consensus_key(&home)?;
    let listeners = vec![own_info.listen_addr.to_string()];
    let mut waiters = CommitWaiters::default();
    let mut timers = Timers::default();
    let mut tick = tokio::time::interval(TICK);
    let mut recertify = tokio::time::interval_at(
        tokio::time::Instant::now() + CERT_LIFETIME / 2,
        CERT_LIFETIME / 2,
    );
    let mut outputs = first;
    // Inputs that only tell the engine what happened (sends a full queue dropped, peers' roles
    // and departures), handed over before the next event.
    let mut bookkeeping = Vec::new();
    let mut full = HashSet::new();
    loop {
        if let Some(i) = interposer.as_mut() {
            outputs = interpose(i.as_mut(), &engine, &peers, outputs);
        }
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
                Output::Send(id, p) => bookkeeping.extend(send_to(&peers, &mut full, id, p)),
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
                    metrics.committed(&engine, height, txs);
                    waiters.committed(&engine, height);
                }
            }
        }
        full.clear();
        for input in bookkeeping.drain(..) {
            engine.handle(input)?;
        }
        let next_timer = timers.next();
        let input = tokio::select! {
            event = inbox.next() => match event {
                Some(PeerEvent::Connected(id, peer)) => match membership.admits(&peers, &peer) {
                    Err(why) => {
                        tracing::info!(peer = id, addr = %peer.addr, ?why, "attested, but not kept");
                        continue;
                    }
                    Ok(()) => {
                        let role = role_of(&membership, &peer);
                        let replaced = admit_logged(&mut peers, id, peer, &own_key);
                        if peers.contains_key(&id) {
                            bookkeeping.push(Input::PeerRole(id, role));
                        }
                        match replaced {
                            // The older one closes; the engine forgets it.
                            Some(old) => Input::PeerGone(old),
                            None => continue,
                        }
                    }
                },
                Some(PeerEvent::Disconnected(id)) => {
                    peers.remove(&id);
                    Input::PeerGone(id)
                }
                Some(PeerEvent::Hello(id, hello)) => {
                    tracing::info!(peer = id, node = %hello.node_id, moniker = %hello.moniker, "peer introduced itself");
                    if let Some(peer) = peers.get_mut(&id) {
                        peer.hello = Some(hello);
                    }
                    continue;
                }
                // A connection replaced or refused: what it still sends is not heard.
                Some(PeerEvent::Message(id, _)) if !peers.contains_key(&id) => continue,
                Some(PeerEvent::Message(id, Payload::Status(status)))
                    if peers.get(&id).is_some_and(Peer::is_backlogged) =>
                {
                    Input::BackloggedStatus(id, status)
                }
                // An unattested full node may ask for blocks and send transactions, nothing
                // else: no vote, proposal or block it sends enters the network, so a key the
                // application made a validator counts only if an attested guest holds it.
                Some(PeerEvent::Message(id, payload))
                    if !peers.get(&id).is_some_and(|p| p.attested.attested)
                        && !matches!(payload, Payload::Status(_) | Payload::Txs(_)) =>
                {
                    continue;
                }
                Some(PeerEvent::Message(id, payload)) => {
                    if let Some(i) = interposer.as_mut() {
                        let mut ids: Vec<ConnectionId> = peers.keys().copied().collect();
                        ids.sort_unstable();
                        let from = ids.iter().position(|p| *p == id).unwrap_or(0);
                        for (dests, p) in i.incoming(&engine, from, &payload) {
                            deliver(&peers, dests.as_deref(), &wire::encode(p));
                        }
                    }
                    Input::Peer(id, payload)
                }
                None => { tracing::info!("event channel closed"); break }
            },
            Some(request) = rpc_calls.recv() => {
                let view = NodeView {
                    node_info: &own_info,
                    genesis: &home.genesis,
                    peers: &|| peers.iter().filter_map(|(id, p)| peer_info(*id, p, &own_info)).collect(),
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
            Some(reply) = scrapes.recv() => {
                let view = ScrapeView {
                    peers: peers.len(),
                    handshakes: handshakes.snapshot(),
                    edge: edge_handle.counters(),
                };
                let _ = reply.send(metrics.render(&engine, &view));
                continue;
            }
            _ = async { match next_timer { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                match timers.pop() { Some(i) => i, None => continue }
            }
            _ = tick.tick() => {
                if let Some(i) = interposer.as_mut() {
                    for (dests, p) in i.act(&engine) {
                        deliver(&peers, dests.as_deref(), &wire::encode(p));
                    }
                }
                Input::Tick
            }
            _ = recertify.tick() => {
                match transport.refresh() {
                    Ok(()) => tracing::info!("re-attested: new connections present a fresh certificate"),
                    Err(e) => tracing::error!("re-attestation failed (the current certificate stays until it expires): {e}"),
                }
                continue;
            }
            _ = sigint.recv() => { tracing::info!("SIGINT"); break }
            _ = sigterm.recv() => { tracing::info!("SIGTERM"); break }
        };
        tracing::trace!(?input, "input");
        outputs = engine.handle(input)?;
        let state = engine.state();
        if state.next_height() != preverifier.height() {
            preverifier.publish(
                state.next_height(),
                &state.validator_infos,
                &state.last_validator_infos,
            );
            if let Some(gone) = membership.follow(&mut peers, validators_ahead(state)) {
                bookkeeping.extend(gone.into_iter().map(Input::PeerGone));
                bookkeeping.extend(
                    peers
                        .iter()
                        .map(|(id, p)| Input::PeerRole(*id, role_of(&membership, p))),
                );
            }
        }
    }
    tracing::info!(height = engine.state().last_block_height, "shutting down");
    drop((edge, engine));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_p2p::peers::PEER_QUEUE;

    #[test]
    fn what_a_full_queue_refuses_goes_back_to_the_engine_and_the_rest_of_the_batch_too() {
        let attested = bulwark_net::VerifiedPeer {
            not_before: 0,
            not_after: u64::MAX,
            consensus_key: [1; 32],
            attested: true,
            measurement: [0; 48],
            chip_id: [0; 64],
            reported_tcb: Default::default(),
        };
        let (peer, mut frames) = Peer::detached("127.0.0.1:1".parse().unwrap(), attested);
        let peers = HashMap::from([(4, peer)]);
        let status = |height| Payload::Status(wire::Status { height, round: 0 });
        let mut full = HashSet::new();
        for height in 0..PEER_QUEUE as u64 {
            assert!(send_to(&peers, &mut full, 4, status(height)).is_none());
        }
        assert!(matches!(
            send_to(&peers, &mut full, 4, status(7)),
            Some(Input::Undelivered(4, p)) if p == status(7)
        ));
        // Room again, but the batch already lost a message to it: the rest follows it back.
        assert!(frames.try_recv().is_ok());
        assert!(send_to(&peers, &mut full, 4, status(8)).is_some());
        // The next batch tries again; an unknown peer is nobody's to report.
        full.clear();
        assert!(send_to(&peers, &mut full, 4, status(9)).is_none());
        assert!(send_to(&peers, &mut full, 5, status(9)).is_none());
    }
}
