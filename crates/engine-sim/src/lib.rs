//! The node's real engines inside the deterministic simulator (engine mode).
//!
//! Where `bulwark-sim` drives bare consensus cores with a driver of its own, this runs N real
//! [`bulwark_node::engine::Engine`]s: real ed25519 signatures, block parts and assembly,
//! CometBFT commits, `validate_block`, block sync, the WAL and privval policy, the built-in
//! kvstore, each node's stores on a simulated disk ([`bulwark_kv::MemDisk`]) that a crash
//! cuts back to its last flush. One seed fixes the world ([`world::World`]): powers, byzantine
//! validators and their wire-level behaviours ([`byzantine`]), outages with storage faults and
//! late joiners, the network before and after GST, clock skew and client load. The
//! [`checker::Checker`] holds the invariants. A failing seed replays exactly.

pub mod checker;

/// The byzantine behaviours (`bulwark-adversary`).
pub use bulwark_adversary as byzantine;
pub mod world;

use bulwark_app::kvstore::KvStore;
use bulwark_consensus::Config;
use bulwark_kv::{Db, MemDisk};
use bulwark_mempool::MempoolConfig;
use bulwark_node::engine::{Clock, Engine, EngineConfig, Input, Output};
use bulwark_sim::rng::{mix_all, Rng};
use bulwark_store::Store;
use bulwark_types::signing::public_key;
use bulwark_types::tendermint::block::{Block, Commit};
use bulwark_types::tendermint::{validator, Genesis, Time};
use bulwark_types::tendermint_proto::v0_38::types as pb;
use bulwark_wire::Payload;
use byzantine::{Adversary, Dest};
use checker::{Bounds, Checker, Violation};
use ed25519_consensus::SigningKey;
use prost::Message;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use world::{DiskFault, EngineSimConfig, Role, World};

/// How often an engine gets a tick (as the node's driver gives it).
const TICK_MS: u64 = 500;
/// How often a byzantine validator acts on its own.
const ADVERSARY_MS: u64 = 40;
/// The node's default `p2p.max_frame_bytes` (raised to the chain's largest block message).
pub const MAX_FRAME_BYTES: usize = 4 << 20;
/// Simulated time after the last fault within which live honest nodes must reach the target.
pub const LIVENESS_WINDOW_MS: u64 = 60_000;
/// Heights the network may decide after a restarted validator caught up before it signs
/// again, when liveness is demanded: its claim, sent once it is within half a claim's
/// lifetime of the network, waits for the next honest proposer's block, and its instance
/// signs from the height after that block.
pub const SIGN_AGAIN_HEIGHTS: u64 = bulwark_node::instance::CLAIM_TTL / 2;
/// Events processed before a run is declared a livelock.
pub const EVENT_BUDGET: u64 = 3_000_000;
/// Genesis time of simulated chains (2026-01-01T00:00:00Z).
const GENESIS_UNIX: i64 = 1_767_225_600;

/// The consensus timeouts of simulated validators: short, so a run covers many rounds.
pub fn sim_timeouts() -> Config {
    Config {
        propose: Duration::from_millis(100),
        propose_delta: Duration::from_millis(40),
        prevote: Duration::from_millis(40),
        prevote_delta: Duration::from_millis(30),
        precommit: Duration::from_millis(40),
        precommit_delta: Duration::from_millis(30),
    }
}

/// The first round whose timeouts all exceed twice the largest delay: from there a round with
/// an honest proposer decides.
pub fn rounds_to_outgrow(delta_ms: u64) -> u32 {
    let config = sim_timeouts();
    let slowest = Duration::from_millis(2 * delta_ms + 20);
    (0u32..10_000)
        .find(|r| {
            [
                bulwark_consensus::TimeoutKind::Propose,
                bulwark_consensus::TimeoutKind::Prevote,
                bulwark_consensus::TimeoutKind::Precommit,
            ]
            .iter()
            .all(|k| config.timeout(*k, bulwark_consensus::Round(*r)) >= slowest)
        })
        .unwrap_or(10_000)
}

/// Simulated time one height may take after GST: every round up to the one that outgrows the
/// delays, plus one more per faulty proposer, each its three timeouts long.
pub fn height_time_bound(delta_ms: u64, faulty: u32) -> u64 {
    let config = sim_timeouts();
    (0..=rounds_to_outgrow(delta_ms) + faulty + 1)
        .map(|r| {
            let r = bulwark_consensus::Round(r);
            (config.timeout(bulwark_consensus::TimeoutKind::Propose, r)
                + config.timeout(bulwark_consensus::TimeoutKind::Prevote, r)
                + config.timeout(bulwark_consensus::TimeoutKind::Precommit, r))
            .as_millis() as u64
                + 4 * delta_ms
        })
        .sum()
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Heights decided (by any honest node).
    pub heights_decided: u64,
    /// The highest commit round.
    pub max_round: u32,
    /// Events processed.
    pub events: u64,
    /// Simulated milliseconds.
    pub sim_ms: u64,
    /// Crashes with storage faults.
    pub crashes: u64,
    /// Heights a node synced by block sync (committed from a peer's decided block).
    pub synced: u64,
    /// Slots of honest validators in the last commits of blocks decided after every fault,
    /// and of them `Commit` (counted only when `timeout_commit` exceeds twice the delay, as
    /// it must for late precommits to arrive).
    pub last_commit_slots: (u64, u64),
    /// Committed evidence: each accused validator (set index) with the height it
    /// double-signed at.
    pub accused: Vec<(usize, u64)>,
    /// The broken invariants.
    pub violations: Vec<Violation>,
    /// Whether liveness was demanded: the faults were within the bound, and the honest
    /// validators the host never restarted or cloned held more than two thirds of the power.
    pub liveness_demanded: bool,
    /// Disks the host rolled back or wiped before a boot.
    pub disk_faults: u64,
    /// Clones booted beside their original.
    pub clones: u64,
    /// Of the restarted validators that signed again, the most heights the network decided
    /// between their catching up after the restart and their first permission to sign.
    pub max_heights_to_sign_again: u64,
    /// The same, counted from their restart (block sync included).
    pub max_heights_from_restart: u64,
}

/// Why a run could not be carried out at all (not a violation: the harness failed).
#[derive(Debug, Error)]
pub enum SimError {
    /// Genesis or an engine could not be set up.
    #[error("setting up the simulated network: {0}")]
    Setup(String),
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        payload: Payload,
    },
    Timer {
        node: usize,
        life: u64,
        input: Input,
    },
    Tick {
        node: usize,
        life: u64,
    },
    Act {
        node: usize,
        life: u64,
    },
    Start {
        node: usize,
    },
    Crash {
        node: usize,
        keep: f64,
        down_ms: u64,
        disk: DiskFault,
    },
    /// The host copies a validator's disk (for a later rollback).
    Snapshot {
        node: usize,
    },
    /// A client transaction; `repeat`: part of the steady load, which schedules the next.
    ClientTx {
        node: usize,
        n: u64,
        repeat: bool,
    },
}

struct Node {
    key: SigningKey,
    store_disk: MemDisk,
    app_disk: MemDisk,
    engine: Option<Engine>,
    /// Bumped at every start: timers of an earlier life are ignored.
    life: u64,
    adversary: Option<Adversary>,
    /// Crashes after a commit still to come: (height, keep, down, disk fault).
    crash_after: Vec<(u64, f64, u64, DiskFault)>,
    /// The host's copy of its disks (store, application), for a rollback.
    snapshot: Option<(MemDisk, MemDisk)>,
    /// Restarted and not signing yet: the highest height decided when it started.
    restarted_at: Option<u64>,
    /// Restarted, not signing yet, and caught up: the highest height decided then.
    caught_up_at: Option<u64>,
}

struct Sim {
    seed: u64,
    config: EngineSimConfig,
    world: World,
    genesis: Genesis<serde_json::Value>,
    /// The genesis validator set (the simulated chains never change it).
    validators: validator::Set,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    seq: u64,
    now: Arc<AtomicU64>,
    net: Rng,
    /// Per link, the last delivery time (TCP keeps order).
    last_delivery: Vec<Vec<u64>>,
    checker: Checker,
    bounds: Bounds,
    processed: u64,
    crashes: u64,
    /// When the latest crash so far ends.
    last_fault_end: u64,
    synced: u64,
    committed: Vec<u64>,
    liveness_demanded: bool,
    disk_faults: u64,
    max_heights_to_sign_again: u64,
    max_heights_from_restart: u64,
    /// The register every chain starts with: each validator's launch instance (its node's
    /// first start), as its genesis enrollment names it.
    launch: bulwark_node::instance::Register,
}

fn node_key(seed: u64, i: usize) -> SigningKey {
    let mut bytes = [0u8; 32];
    for (k, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix_all(&[seed, i as u64, k as u64, 0x6b6579]).to_le_bytes());
    }
    SigningKey::from(bytes)
}

/// The instance of node `i` in its `life`-th start: new at every start, as a real boot draws
/// fresh random bytes (`bulwark_instance`).
fn instance_of(seed: u64, i: usize, life: u64) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (k, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk
            .copy_from_slice(&mix_all(&[seed, i as u64, life, k as u64, 0x696e7374]).to_le_bytes());
    }
    bytes
}

fn describe(input: &Input) -> String {
    match input {
        Input::Peer(from, p) => format!("from {from}: {}", describe_payload(p)),
        other => format!("{other:?}").chars().take(120).collect(),
    }
}

/// The first bytes of a block id's hash, or "nil".
fn short_id(id: Option<&pb::BlockId>) -> String {
    match id {
        Some(b) if !b.hash.is_empty() => {
            b.hash.iter().take(3).map(|x| format!("{x:02x}")).collect()
        }
        _ => "nil".into(),
    }
}

fn describe_payload(p: &Payload) -> String {
    match p {
        Payload::Proposal(p) => format!(
            "proposal h{} r{} pol{} {}",
            p.height,
            p.round,
            p.pol_round,
            short_id(p.block_id.as_ref())
        ),
        Payload::Vote(v) => format!(
            "vote {} h{} r{} by {} {}",
            v.r#type,
            v.height,
            v.round,
            v.validator_index,
            short_id(v.block_id.as_ref())
        ),
        Payload::BlockPart(b) => format!(
            "part h{} r{} #{}",
            b.height,
            b.round,
            b.part.as_ref().map_or(0, |p| p.index)
        ),
        Payload::Certificate(c) => format!(
            "certificate of {} votes: {}",
            c.votes.len(),
            c.votes
                .iter()
                .take(6)
                .map(|v| format!(
                    "t{} r{} by {} {}",
                    v.r#type,
                    v.round,
                    v.validator_index,
                    short_id(v.block_id.as_ref())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Payload::Status(s) => format!("status h{} r{}", s.height, s.round),
        Payload::DecidedBlock(_) => "decided block".into(),
        Payload::Txs(t) => {
            let claims = t
                .txs
                .iter()
                .filter_map(|tx| bulwark_node::instance::Claim::from_tx(tx)?.ok())
                .map(|c| format!(" (claim not before {})", c.not_before))
                .collect::<String>();
            format!("{} txs{claims}", t.txs.len())
        }
        Payload::Hello(_) => "hello".into(),
        Payload::Evidence(_) => "evidence".into(),
    }
}

impl Sim {
    fn new(seed: u64, config: &EngineSimConfig) -> Result<Sim, SimError> {
        let world = World::draw(seed, config);
        let n = config.validators;
        let keys: Vec<SigningKey> = (0..n).map(|i| node_key(seed, i)).collect();
        let mut params = bulwark_types::genesis::default_consensus_params();
        params.block.max_bytes = world.block_max_bytes;
        params.abci.vote_extensions_enable_height = world
            .extensions_from
            .and_then(|h| u32::try_from(h).ok())
            .map(bulwark_types::tendermint::block::Height::from);
        let genesis = Genesis {
            genesis_time: Time::from_unix_timestamp(GENESIS_UNIX, 0)
                .map_err(|e| SimError::Setup(e.to_string()))?,
            chain_id: "bulwark-sim"
                .parse()
                .map_err(|e: bulwark_types::tendermint::Error| SimError::Setup(e.to_string()))?,
            initial_height: 1,
            consensus_params: params,
            validators: keys
                .iter()
                .zip(&world.powers)
                .map(|(k, p)| {
                    validator::Info::new(
                        public_key(k),
                        u32::try_from(*p).unwrap_or(u32::MAX).into(),
                    )
                })
                .collect(),
            app_hash: Default::default(),
            app_state: serde_json::json!({}),
        };
        let set = validator::Set::without_proposer(genesis.validators.clone());
        let addresses: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| {
                public_key(k)
                    .ed25519()
                    .map(|pk| {
                        bulwark_types::tendermint::account::Id::from(pk)
                            .as_bytes()
                            .to_vec()
                    })
                    .unwrap_or_default()
            })
            .collect();
        // Clones sign as their originals.
        let total = world.roles.len();
        let addresses: Vec<Vec<u8>> = (0..total)
            .map(|i| addresses[world.validator_of(i)].clone())
            .collect();
        let honest = (0..total).map(|i| world.is_honest(i)).collect();
        // Each validator's first start is its launch instance, which the genesis names.
        let launch = bulwark_node::instance::Register::at_launch(
            1,
            (0..n).filter_map(|i| {
                let address: [u8; 20] = addresses[i].as_slice().try_into().ok()?;
                Some((address, instance_of(seed, i, 1)))
            }),
        );
        let checker = Checker::new(genesis.chain_id.clone(), set.clone(), addresses, honest);
        let keys: Vec<SigningKey> = (0..total)
            .map(|i| keys[world.validator_of(i)].clone())
            .collect();
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| Node {
                adversary: match world.roles[i] {
                    Role::Honest => None,
                    Role::Byzantine(b) => Some(
                        Adversary::new(
                            b,
                            i,
                            n,
                            key.clone(),
                            genesis.chain_id.clone(),
                            mix_all(&[seed, i as u64, 0xbad]),
                        )
                        .extending_from(world.extensions_from),
                    ),
                },
                key,
                store_disk: MemDisk::new(&format!("node{i}-store")),
                app_disk: MemDisk::new(&format!("node{i}-app")),
                engine: None,
                life: 0,
                crash_after: world
                    .outages
                    .iter()
                    .filter(|o| o.node == i && o.at.is_none())
                    .map(|o| (o.after_commit, o.keep_unflushed, o.down_ms, o.disk))
                    .collect(),
                snapshot: None,
                restarted_at: None,
                caught_up_at: None,
            })
            .collect();
        let mut sim = Sim {
            seed,
            config: config.clone(),
            bounds: Bounds {
                validators: n as u64,
                max_parts: world
                    .block_max_bytes
                    .div_ceil(bulwark_types::parts::BLOCK_PART_SIZE as u64),
            },
            genesis,
            validators: set,
            nodes,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now: Arc::new(AtomicU64::new(0)),
            net: Rng::new(mix_all(&[seed, 0x6e6574])),
            last_delivery: vec![vec![0; total]; total],
            checker,
            processed: 0,
            crashes: 0,
            last_fault_end: 0,
            synced: 0,
            committed: vec![0; total],
            liveness_demanded: config.within_fault_bound() && world.instances_allow_liveness(),
            disk_faults: 0,
            max_heights_to_sign_again: 0,
            max_heights_from_restart: 0,
            launch,
            world,
        };
        sim.trace(|| format!("world of seed {seed}: {:?}", sim.world));
        for i in 0..total {
            sim.at(sim.world.start_at[i], Event::Start { node: i });
        }
        for o in sim.world.outages.clone() {
            if let DiskFault::RolledBack { snapshot_at } = o.disk {
                sim.at(snapshot_at, Event::Snapshot { node: o.node });
            }
            if let Some(at) = o.at {
                sim.at(
                    at,
                    Event::Crash {
                        node: o.node,
                        keep: o.keep_unflushed,
                        down_ms: o.down_ms,
                        disk: o.disk,
                    },
                );
            }
        }
        if sim.world.tx_per_s > 0 {
            sim.at(
                1,
                Event::ClientTx {
                    node: 0,
                    n: 0,
                    repeat: true,
                },
            );
        }
        for k in 0..sim.world.initial_txs {
            let node = (k % n as u64) as usize;
            sim.at(
                1,
                Event::ClientTx {
                    node,
                    n: 1_000_000_000 + k,
                    repeat: false,
                },
            );
        }
        Ok(sim)
    }

    fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    fn at(&mut self, when: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((when, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if self.config.trace {
            eprintln!("[{:>7} ms] {}", self.now(), what());
        }
    }

    fn start(&mut self, i: usize) {
        let clock_now = self.now.clone();
        let skew = self.world.skew_ms[i];
        let clock = Clock::from_fn(move || {
            let ms = clock_now.load(Ordering::Relaxed) as i64 + skew;
            let ms = GENESIS_UNIX * 1000 + ms.max(0);
            Time::from_unix_timestamp(ms / 1000, (ms % 1000) as u32 * 1_000_000)
                .unwrap_or_else(|_| Time::unix_epoch())
        });
        let config = EngineConfig {
            clock,
            consensus: sim_timeouts(),
            mempool: MempoolConfig {
                max_txs: 20_000,
                max_bytes: 64 << 20,
                max_tx_bytes: 64 << 10,
                cache_size: 20_000,
            },
            max_block_tx_bytes: self.world.max_block_tx_bytes,
            timeout_commit: Duration::from_millis(self.world.timeout_commit_ms),
            instance: instance_of(self.seed, i, self.nodes[i].life + 1),
        };
        // A clone boots on a copy of its original's disk as it is now.
        let of = self.world.validator_of(i);
        if of != i && self.nodes[i].life == 0 {
            let (store, app) = (
                self.nodes[of].store_disk.copy(&format!("node{i}-store")),
                self.nodes[of].app_disk.copy(&format!("node{i}-app")),
            );
            self.nodes[i].store_disk = store;
            self.nodes[i].app_disk = app;
            self.trace(|| format!("node {i} is a clone of node {of}'s disk"));
        }
        let top = self.top_height();
        let node = &mut self.nodes[i];
        let opened = (|| -> Result<(Engine, Vec<Output>), String> {
            let store = Store::on(&node.store_disk);
            let mut app = KvStore::open_db(Db::on(&node.app_disk)).map_err(|e| e.to_string())?;
            let mut state = bulwark_node::handshake::genesis_state(&mut app, &self.genesis)
                .map_err(|e| e.to_string())?;
            state.claims = self.launch.clone();
            Engine::open(config, &store, node.key.clone(), Box::new(app), state)
                .map_err(|e| e.to_string())
        })();
        match opened {
            Ok((engine, out)) => {
                node.life += 1;
                let life = node.life;
                // Whatever its last life did, this one has to catch up and claim again.
                node.caught_up_at = None;
                node.restarted_at = (life > 1 && !engine.signing().may_sign()).then_some(top);
                self.committed[i] = engine.state().last_block_height;
                node.engine = Some(engine);
                self.trace(|| format!("node {i} starts (life {life})"));
                // Its peers see a new connection: what they knew it had is of its last life.
                self.connections_lost(i);
                let tick = self.now() + TICK_MS;
                self.at(tick, Event::Tick { node: i, life });
                if self.nodes[i].adversary.is_some() {
                    let act = self.now() + ADVERSARY_MS;
                    self.at(act, Event::Act { node: i, life });
                }
                self.route(i, out);
            }
            Err(error) => {
                if self.world.is_honest(i) {
                    self.checker
                        .violate(Violation::EngineFailed { node: i, error });
                }
            }
        }
    }

    fn crash(&mut self, i: usize, keep: f64, down_ms: u64, disk: DiskFault) {
        let node = &mut self.nodes[i];
        if node.engine.take().is_none() {
            return;
        }
        let keep_store = (node.store_disk.unflushed() as f64 * keep) as usize;
        let keep_app = (node.app_disk.unflushed() as f64 * keep) as usize;
        node.store_disk.crash(keep_store);
        node.app_disk.crash(keep_app);
        let restored = match disk {
            DiskFault::Kept => None,
            DiskFault::RolledBack { .. } => Some(node.snapshot.clone().unwrap_or_else(|| {
                (
                    MemDisk::new(&format!("node{i}-store")),
                    MemDisk::new(&format!("node{i}-app")),
                )
            })),
            DiskFault::Wiped => Some((
                MemDisk::new(&format!("node{i}-store")),
                MemDisk::new(&format!("node{i}-app")),
            )),
        };
        if let Some((store, app)) = restored {
            node.store_disk.restore(&store);
            node.app_disk.restore(&app);
            self.disk_faults += 1;
            self.trace(|| format!("node {i}: the host replaces its disk ({disk:?})"));
        }
        self.crashes += 1;
        // What it had committed counts again only once it is back and has it from its disk.
        self.committed[i] = 0;
        self.connections_lost(i);
        self.last_fault_end = self.last_fault_end.max(self.now() + down_ms);
        self.trace(|| {
            format!("node {i} crashes (keeps {keep_store} unflushed writes), back in {down_ms} ms")
        });
        let back = self.now() + down_ms;
        self.at(back, Event::Start { node: i });
    }

    /// Tells every running node that its connection to node `i` is gone.
    fn connections_lost(&mut self, i: usize) {
        for peer in (0..self.nodes.len()).filter(|p| *p != i) {
            if self.nodes[peer].engine.is_some() {
                self.feed(peer, Input::PeerGone(i as u64));
            }
        }
    }

    /// Sends `payload` from `from` to `to` through the network model.
    fn send(&mut self, from: usize, to: usize, payload: Payload) {
        if from == to || to >= self.nodes.len() {
            return;
        }
        let now = self.now();
        if self.world.partitioned(from, to, now) {
            return;
        }
        let before_gst = now < self.world.gst;
        if before_gst && self.net.chance(self.world.drop) {
            return;
        }
        let max_frame = MAX_FRAME_BYTES.max(bulwark_node::chain::max_message_bytes(
            &self.genesis.consensus_params,
            self.nodes.len(),
        ));
        if payload.encoded_len() > max_frame {
            // The receiver closes the connection: the frame never arrives.
            return;
        }
        let delay = if before_gst {
            self.net.range(0, self.world.max_delay_before_gst)
        } else {
            self.net.range(1, self.world.delta)
        };
        let at = (now + delay).max(self.last_delivery[from][to]);
        self.last_delivery[from][to] = at;
        if before_gst && self.net.chance(self.world.duplicate) {
            self.at(
                at,
                Event::Deliver {
                    to,
                    from,
                    payload: payload.clone(),
                },
            );
        }
        self.at(at, Event::Deliver { to, from, payload });
    }

    fn broadcast(&mut self, from: usize, dest: Dest, payload: Payload) {
        self.checker.sent(from, &payload);
        let targets: Vec<usize> = match dest {
            Dest::All => (0..self.nodes.len()).filter(|j| *j != from).collect(),
            Dest::Some(list) => list,
        };
        for to in targets {
            self.send(from, to, payload.clone());
        }
    }

    /// Carries out what node `i`'s engine asked for; a byzantine node's messages go through
    /// its adversary first.
    fn route(&mut self, i: usize, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Broadcast(p) => self.outgoing(i, Dest::All, p),
                Output::Send(peer, p) => {
                    let to = usize::try_from(peer).unwrap_or(usize::MAX);
                    self.outgoing(i, Dest::Some(vec![to]), p)
                }
                Output::Schedule { timeout, after } => {
                    let life = self.nodes[i].life;
                    let at = self.now() + after.as_millis() as u64;
                    self.at(
                        at,
                        Event::Timer {
                            node: i,
                            life,
                            input: Input::Timeout(timeout),
                        },
                    );
                }
                Output::ScheduleHeight { height, after } => {
                    let life = self.nodes[i].life;
                    let at = self.now() + after.as_millis() as u64;
                    self.at(
                        at,
                        Event::Timer {
                            node: i,
                            life,
                            input: Input::StartHeight(height),
                        },
                    );
                }
                Output::ScheduleTxFlush { after } => {
                    let life = self.nodes[i].life;
                    let at = self.now() + after.as_millis() as u64;
                    self.at(
                        at,
                        Event::Timer {
                            node: i,
                            life,
                            input: Input::FlushTxs,
                        },
                    );
                }
                Output::Committed { height, .. } => self.on_commit(i, height),
            }
        }
    }

    fn outgoing(&mut self, i: usize, dest: Dest, payload: Payload) {
        let node = &mut self.nodes[i];
        let transformed = match (node.adversary.as_mut(), node.engine.as_ref()) {
            (Some(adversary), Some(engine)) => {
                // Replies to one peer stay replies to that peer.
                let single = match &dest {
                    Dest::Some(list) => Some(list.clone()),
                    Dest::All => None,
                };
                adversary
                    .outgoing(engine, payload, single.is_some())
                    .into_iter()
                    .map(|(d, p)| match (&single, d) {
                        (Some(to), Dest::All) => (Dest::Some(to.clone()), p),
                        (_, d) => (d, p),
                    })
                    .collect()
            }
            _ => vec![(dest, payload)],
        };
        for (d, p) in transformed {
            self.broadcast(i, d, p);
        }
    }

    fn on_commit(&mut self, i: usize, height: u64) {
        self.committed[i] = self.committed[i].max(height);
        let now = self.now();
        if !self.world.is_honest(i) {
            return;
        }
        self.checker.height_started(height + 1, now);
        let Some(engine) = self.nodes[i].engine.as_ref() else {
            return;
        };
        match stored(engine, height).and_then(|(block, commit)| {
            extensions_hold(engine, &self.genesis, &self.validators, height, &commit)?;
            Ok((block, commit))
        }) {
            Ok((block, commit)) => match bulwark_node::chain::block_id(&block) {
                Ok((_, parts)) if parts.byte_len() as u64 > self.world.block_max_bytes => {
                    self.checker.violate(Violation::CommitInvalid {
                        node: i,
                        height,
                        reason: format!(
                            "a block of {} bytes, above block.max_bytes",
                            parts.byte_len()
                        ),
                    })
                }
                Ok((id, _)) => self.checker.committed(i, &block, &id, &commit),
                Err(e) => self.checker.violate(Violation::CommitInvalid {
                    node: i,
                    height,
                    reason: e.to_string(),
                }),
            },
            Err(reason) => self.checker.violate(Violation::CommitInvalid {
                node: i,
                height,
                reason,
            }),
        }
        let due: Vec<(u64, f64, u64, DiskFault)> = self.nodes[i]
            .crash_after
            .iter()
            .copied()
            .filter(|(h, ..)| *h == height)
            .collect();
        self.nodes[i].crash_after.retain(|(h, ..)| *h != height);
        for (_, keep, down, disk) in due {
            // Inside timeout_commit: right after the commit, before the next height starts.
            self.at(
                now,
                Event::Crash {
                    node: i,
                    keep,
                    down_ms: down,
                    disk,
                },
            );
        }
    }

    /// Runs one input through node `i`'s engine, with the checks around it.
    fn feed(&mut self, i: usize, input: Input) {
        let honest = self.world.is_honest(i);
        let Some(engine) = self.nodes[i].engine.as_mut() else {
            return;
        };
        let lock = if honest {
            match (engine.consensus().height(), engine.consensus().locked()) {
                (Some(h), Some((r, v))) => Some((h.0, r.0, v.0)),
                _ => None,
            }
        } else {
            None
        };
        let label = if self.config.trace || honest {
            describe(&input)
        } else {
            String::new()
        };
        let synced_before = engine.state().last_block_height;
        let was_sync = matches!(input, Input::Peer(_, Payload::DecidedBlock(_)));
        let started = Instant::now();
        let result = engine.handle(input);
        let took = started.elapsed();
        let footprint = engine.footprint();
        let round = engine.round();
        let synced_after = engine.state().last_block_height;
        let signing = engine.signing().may_sign();
        if self.config.trace {
            eprintln!("[{:>7} ms] node {i} <- {label}", self.now());
        }
        if was_sync && synced_after > synced_before {
            self.synced += synced_after - synced_before;
        }
        let top = self.top_height();
        let node = &mut self.nodes[i];
        if node.restarted_at.is_some() && node.caught_up_at.is_none() && synced_after + 1 >= top {
            node.caught_up_at = Some(top);
            self.trace(|| format!("node {i} caught up at height {synced_after} (top {top})"));
        }
        let node = &mut self.nodes[i];
        if signing {
            if let Some(at) = node.restarted_at.take() {
                // Heights decided after it caught up: the claim's part of the wait (none if
                // the claim's block came while it still block-synced).
                let waited = node
                    .caught_up_at
                    .take()
                    .map_or(0, |c| top.saturating_sub(c));
                self.max_heights_to_sign_again = self.max_heights_to_sign_again.max(waited);
                self.max_heights_from_restart =
                    self.max_heights_from_restart.max(top.saturating_sub(at));
                self.trace(|| format!("node {i} signs again at top {top}: {waited} heights after it caught up (restarted at top {at})"));
                if honest && self.liveness_demanded && waited > SIGN_AGAIN_HEIGHTS {
                    self.checker.violate(Violation::SignedAgainLate {
                        node: i,
                        restarted_at: at,
                        heights: waited,
                    });
                }
            }
        }
        if honest && took.as_millis() as u64 > self.config.cpu_budget_ms {
            self.checker.violate(Violation::CpuBudget {
                node: i,
                input: label,
                ms: took.as_millis() as u64,
            });
        }
        if honest {
            for v in self.bounds.check(i, round, &footprint) {
                self.checker.violate(v);
            }
        }
        match result {
            Ok(out) => {
                if honest {
                    for o in &out {
                        if let Output::Broadcast(Payload::Vote(v)) = o {
                            if v.r#type == pb::SignedMsgType::Prevote as i32 {
                                self.checker.honest_prevote(i, lock, v);
                            }
                        }
                    }
                }
                self.route(i, out);
            }
            Err(e) => {
                if honest {
                    self.checker.violate(Violation::EngineFailed {
                        node: i,
                        error: e.to_string(),
                    });
                }
                self.nodes[i].engine = None;
            }
        }
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, payload } => {
                if self.nodes[to].engine.is_none() {
                    return;
                }
                let node = &mut self.nodes[to];
                let replies = match (node.adversary.as_mut(), node.engine.as_ref()) {
                    (Some(a), Some(e)) => a.incoming(e, from, &payload),
                    _ => vec![],
                };
                for (d, p) in replies {
                    self.broadcast(to, d, p);
                }
                self.feed(to, Input::Peer(from as u64, payload));
            }
            Event::Timer { node, life, input } => {
                if self.nodes[node].life == life {
                    self.feed(node, input);
                }
            }
            Event::Tick { node, life } => {
                if self.nodes[node].life == life && self.nodes[node].engine.is_some() {
                    self.feed(node, Input::Tick);
                    let next = self.now() + TICK_MS;
                    self.at(next, Event::Tick { node, life });
                }
            }
            Event::Act { node, life } => {
                if self.nodes[node].life != life {
                    return;
                }
                let n = &mut self.nodes[node];
                let acts = match (n.adversary.as_mut(), n.engine.as_ref()) {
                    (Some(a), Some(e)) => a.act(e),
                    _ => return,
                };
                for (d, p) in acts {
                    self.broadcast(node, d, p);
                }
                let next = self.now() + ADVERSARY_MS;
                self.at(next, Event::Act { node, life });
            }
            Event::Start { node } => {
                if self.nodes[node].engine.is_none() {
                    self.start(node);
                }
            }
            Event::Crash {
                node,
                keep,
                down_ms,
                disk,
            } => self.crash(node, keep, down_ms, disk),
            Event::Snapshot { node } => {
                let n = &mut self.nodes[node];
                n.snapshot = Some((
                    n.store_disk.copy(&format!("node{node}-store-snapshot")),
                    n.app_disk.copy(&format!("node{node}-app-snapshot")),
                ));
                self.trace(|| format!("the host snapshots node {node}'s disk"));
            }
            Event::ClientTx { node, n, repeat } => {
                let mut tx = format!("tx{n:08}=").into_bytes();
                tx.resize(self.world.tx_bytes.max(tx.len() + 1), b'v');
                if let Some(engine) = self.nodes[node].engine.as_mut() {
                    let (_, out) = engine.submit_tx(bytes::Bytes::from(tx));
                    self.route(node, out);
                }
                if !repeat {
                    return;
                }
                let gap = 1000 / self.world.tx_per_s.max(1);
                let next = self.now() + gap.max(1);
                let to = (self.net.below(self.nodes.len() as u64)) as usize;
                if next < self.deadline() {
                    self.at(
                        next,
                        Event::ClientTx {
                            node: to,
                            n: n + 1,
                            repeat: true,
                        },
                    );
                }
            }
        }
    }

    /// When every fault is over.
    fn settled(&self) -> u64 {
        let timed = self
            .world
            .outages
            .iter()
            .filter_map(|o| o.at.map(|at| at + o.down_ms))
            .max()
            .unwrap_or(0);
        let late = self.world.start_at.iter().copied().max().unwrap_or(0);
        self.world.gst.max(timed).max(late).max(self.last_fault_end)
    }

    /// When faults may still be pending, for the run's deadline: crashes due after a commit
    /// come at the latest some time after GST.
    fn fault_horizon(&self) -> u64 {
        let after_commit = self
            .world
            .outages
            .iter()
            .filter(|o| o.at.is_none())
            .map(|o| self.world.gst + 6_000 + o.down_ms)
            .max()
            .unwrap_or(0);
        self.settled().max(after_commit)
    }

    fn deadline(&self) -> u64 {
        // Every height may need the rounds it takes for the timeouts to outgrow the delays.
        let per_height = height_time_bound(self.world.delta, self.config.byzantine as u32);
        self.fault_horizon() + LIVENESS_WINDOW_MS + self.config.target_height * per_height
    }

    /// The highest height any node has committed.
    fn top_height(&self) -> u64 {
        self.committed.iter().copied().max().unwrap_or(0)
    }

    fn live_honest(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.world.is_honest(*i))
            .collect()
    }

    /// Every fault is over, and every honest node is up, at the target height, and caught up
    /// with the others (within a height).
    fn done(&self) -> bool {
        let target = self.config.target_height;
        let honest = self.live_honest();
        let top = honest.iter().map(|i| self.committed[*i]).max().unwrap_or(0);
        self.now() >= self.settled()
            && honest.iter().all(|i| {
                self.nodes[*i].engine.is_some()
                    && self.committed[*i] >= target
                    && self.committed[*i] + 1 >= top
            })
            && self.nodes.iter().all(|n| n.crash_after.is_empty())
            && (!self.liveness_demanded
                || honest.iter().all(|i| self.nodes[*i].restarted_at.is_none()))
    }

    fn run(mut self) -> Outcome {
        let deadline = self.deadline();
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            if at > deadline {
                break;
            }
            self.now.store(at, Ordering::Relaxed);
            self.step(event);
            self.processed += 1;
            if self.processed > EVENT_BUDGET {
                self.checker.violate(Violation::EventBudgetExceeded {
                    events: self.processed,
                });
                break;
            }
            if self.done()
                || (self.config.stop_at_first_violation && !self.checker.violations().is_empty())
            {
                break;
            }
        }
        self.finish()
    }

    fn finish(mut self) -> Outcome {
        if self.liveness_demanded {
            let top = self.top_height();
            for i in self.live_honest() {
                // Block sync outruns the chain, so one that never caught up is a failure too.
                let Some(restarted_at) = self.nodes[i].restarted_at else {
                    continue;
                };
                let authorization = self.nodes[i]
                    .engine
                    .as_ref()
                    .map_or("down".into(), |e| format!("{:?}", e.signing()));
                self.checker.violate(Violation::NotSigningAgain {
                    node: i,
                    restarted_at,
                    top,
                    authorization,
                });
            }
        }
        if self.liveness_demanded {
            let target = self.config.target_height;
            for i in self.live_honest() {
                if self.committed[i] < target {
                    self.checker.violate(Violation::NoProgress {
                        node: i,
                        reached: self.committed[i],
                        target,
                    });
                }
            }
            // After GST, a height decides once timeouts exceed the delays: within the rounds
            // that takes plus one per faulty proposer.
            let limit = rounds_to_outgrow(self.world.delta) + self.config.byzantine as u32 + 3;
            self.checker
                .check_rounds_after(self.settled() + 1_000, limit);
        }
        // The chain an honest node decided passes the light-client verifier from genesis.
        if let Some(best) = self
            .live_honest()
            .into_iter()
            .max_by_key(|i| self.committed[*i])
        {
            if let Some(engine) = self.nodes[best].engine.as_ref() {
                let chain: Vec<(Block, Commit)> = (1..=self.committed[best])
                    .map_while(|h| stored(engine, h).ok())
                    .collect();
                let genesis_time = self.genesis.genesis_time;
                self.checker.light_client(best, genesis_time, &chain);
            }
        }
        Outcome {
            seed: self.seed,
            heights_decided: self.checker.heights_decided(),
            max_round: self.checker.max_round(),
            events: self.processed,
            sim_ms: self.now(),
            crashes: self.crashes,
            synced: self.synced,
            last_commit_slots: if self.world.timeout_commit_ms > 2 * self.world.delta {
                let settled = self.settled();
                self.checker
                    .last_commit_slots(if settled == 0 { 0 } else { settled + 1_000 })
            } else {
                (0, 0)
            },
            accused: self.checker.accused().iter().copied().collect(),
            violations: self.checker.violations().to_vec(),
            liveness_demanded: self.liveness_demanded,
            disk_faults: self.disk_faults,
            clones: self.world.clones.len() as u64,
            max_heights_to_sign_again: if self.liveness_demanded {
                self.max_heights_to_sign_again
            } else {
                0
            },
            max_heights_from_restart: if self.liveness_demanded {
                self.max_heights_from_restart
            } else {
                0
            },
        }
    }
}

/// Block `height` and its commit as `engine` stored them.
fn stored(engine: &Engine, height: u64) -> Result<(Block, Commit), String> {
    let blocks = engine.blocks();
    let block = blocks
        .block(height)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("block {height} not stored"))?;
    let commit = blocks
        .commit(height)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("commit {height} not stored"))?;
    let block = pb::Block::decode(block.as_slice()).map_err(|e| e.to_string())?;
    let commit = pb::Commit::decode(commit.as_slice()).map_err(|e| e.to_string())?;
    Ok((
        Block::try_from(block).map_err(|e| e.to_string())?,
        Commit::try_from(commit).map_err(|e| e.to_string())?,
    ))
}

/// The vote extensions `engine` stored with `commit` of `height`: present from the enable
/// height on, none before, and each signed by its validator where the commit holds its
/// precommit for the block.
fn extensions_hold(
    engine: &Engine,
    genesis: &Genesis<serde_json::Value>,
    set: &validator::Set,
    height: u64,
    commit: &Commit,
) -> Result<(), String> {
    let stored = engine
        .blocks()
        .extensions(height)
        .map_err(|e| e.to_string())?;
    let enabled = bulwark_node::chain::extensions_enabled(&genesis.consensus_params, height);
    match (enabled, stored) {
        (false, None) => Ok(()),
        (true, Some(bytes)) => {
            let pairs = bulwark_wire::VoteExtensions::decode(bytes.as_slice())
                .map_err(|e| e.to_string())?
                .into_pairs();
            let (chain_id, check) = (
                &genesis.chain_id,
                bulwark_node::chain::extensions::verify_commit_extensions,
            );
            check(chain_id, set, height, commit, pairs)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        (enabled, stored) => Err(format!(
            "vote extensions {} at height {height}, yet {} stored",
            if enabled { "on" } else { "off" },
            if stored.is_some() { "some" } else { "none" }
        )),
    }
}

/// Valid signatures the simulator's process remembers (32 bytes each).
const VERIFIED_SIGNATURES: usize = 1 << 16;

/// Runs the world of `seed` and checks it (under `config.mutant`, if one is planted).
pub fn run(seed: u64, config: &EngineSimConfig) -> Result<Outcome, SimError> {
    if !bulwark_consensus::mutation::plant(config.mutant) {
        return Err(SimError::Setup(
            "a planted mutant needs the `mutants` feature (cargo xtask mutants)".into(),
        ));
    }
    // What the checker found valid the engines need not check again (see `Checker::signer`).
    bulwark_types::signing::remember_verified_signatures(VERIFIED_SIGNATURES);
    let outcome = Sim::new(seed, config).map(Sim::run);
    bulwark_consensus::mutation::plant(None);
    outcome
}

/// The command that replays `seed` under `config`.
pub fn replay_command(seed: u64, config: &EngineSimConfig) -> String {
    let mut cmd = format!(
        "cargo xtask sim --engine --seed {seed} --validators {} --byzantine {} --heights {}",
        config.validators, config.byzantine, config.target_height
    );
    if let Some(b) = config.behaviour {
        cmd += &format!(" --behaviour {}", byzantine::behaviour_name(b));
    }
    if config.full_blocks {
        cmd += " --full-blocks";
    }
    if config.stormy {
        cmd += " --stormy";
    }
    cmd + " --trace"
}
