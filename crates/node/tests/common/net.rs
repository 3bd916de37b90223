//! The in-process network of the engine tests: engines with real cores, privvals, WALs, block
//! stores and kvstores on disk, connected by a router with simulated time.

use super::genesis as common_genesis;
use bulwark_app::kvstore::KvStore;
use bulwark_node::engine::{Engine, EngineConfig, Input, Output};
use bulwark_store::Store;
use bulwark_types::tendermint::Genesis;
use bytes::Bytes;
use ed25519_consensus::SigningKey;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

/// Validators of the network.
pub const N: usize = 4;

/// One validator's place: its key, its disks and, while it runs, its engine.
pub struct Slot {
    pub key: SigningKey,
    pub store_dir: tempfile::TempDir,
    pub app_dir: tempfile::TempDir,
    pub engine: Option<Engine>,
    /// The instance its next start runs as (`EngineConfig::instance`).
    pub instance: [u8; 32],
    /// What its application was asked (across restarts).
    pub asked: super::Asked,
}

pub fn genesis(keys: &[SigningKey]) -> Genesis<serde_json::Value> {
    common_genesis("bulwark-engine-test", keys)
}

pub fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.consensus.propose = Duration::from_millis(300);
    c.consensus.prevote = Duration::from_millis(100);
    c.consensus.precommit = Duration::from_millis(100);
    c.timeout_commit = Duration::from_millis(50);
    c
}

pub fn open(slot: &Slot, g: &Genesis<serde_json::Value>) -> (Engine, Vec<Output>) {
    try_open(slot, g).unwrap()
}

/// The slot's store, once the last engine's database has let go of it.
pub fn reopen_store(slot: &Slot) -> Store {
    // the database releases its file lock once its worker threads let go after the old engine is dropped; a
    // real restart is a new process, so retrying briefly here only models that.
    (0..200)
        .find_map(|_| {
            Store::open(slot.store_dir.path()).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(10));
                None
            })
        })
        .expect("store reopens")
}

pub fn try_open(
    slot: &Slot,
    g: &Genesis<serde_json::Value>,
) -> Result<(Engine, Vec<Output>), bulwark_node::engine::EngineError> {
    let mut app = (0..200)
        .find_map(|_| {
            KvStore::open(slot.app_dir.path()).ok().or_else(|| {
                std::thread::sleep(Duration::from_millis(10));
                None
            })
        })
        .expect("app reopens");
    let store = reopen_store(slot);
    let mut state = bulwark_node::handshake::genesis_state(&mut app, g).unwrap();
    let app = super::Extending {
        inner: app,
        asked: slot.asked.clone(),
    };
    state.claims = launch_register(g);
    let config = EngineConfig {
        instance: slot.instance,
        ..config()
    };
    Engine::open(config, &store, slot.key.clone(), Box::new(app), state)
}

/// The instance every slot first starts as: each validator's launch instance, which the
/// genesis names (its enrollment's).
pub const LAUNCH_INSTANCE: [u8; 32] = [0; 32];

/// The register a chain of `g` starts with: every validator's launch instance holds its key.
pub fn launch_register(g: &Genesis<serde_json::Value>) -> bulwark_node::instance::Register {
    bulwark_node::instance::Register::at_launch(
        1,
        g.validators
            .iter()
            .filter_map(|v| Some((v.address.as_bytes().try_into().ok()?, LAUNCH_INSTANCE))),
    )
}

/// A vote some engine sent (its own or relayed), by signer, height, round and type, with the
/// block it is for (`None`: nil).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SentVote {
    pub validator: Vec<u8>,
    pub height: i64,
    pub round: i32,
    pub kind: i32,
    pub block: Option<Vec<u8>>,
    /// The slot that sent it.
    pub from: usize,
}

/// Copies a directory tree (a host copying a stopped VM's disk).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// What a byzantine slot does to a message it sends: (slot, message).
pub type Tamper = Box<dyn FnMut(usize, &mut bulwark_wire::Payload)>;

/// Engines connected by an in-process router with simulated time.
pub struct Net {
    pub slots: Vec<Slot>,
    pub genesis: Genesis<serde_json::Value>,
    pub now: u64,
    pub last_tick: u64,
    /// Whether engines get ticks (and so can ask peers for what they missed).
    pub ticks: bool,
    /// Deliver pending messages in a seeded random order (FIFO per link) instead of FIFO.
    pub shuffle: Option<u64>,
    pub seq: u64,
    pub timers: BinaryHeap<Reverse<(u64, u64, usize)>>,
    pub timeouts: std::collections::HashMap<u64, Input>,
    pub inbox: VecDeque<(usize, Input)>,
    pub committed: Vec<u64>,
    /// Links (from, to) that deliver nothing (a partition).
    pub blocked: std::collections::HashSet<(usize, usize)>,
    /// Every vote sent, for the double-sign check.
    pub sent_votes: Vec<SentVote>,
    /// Slots that receive no proposals and block parts (they time out in round 0).
    pub no_proposals_to: std::collections::HashSet<usize>,
    /// Slots that receive transaction messages only (the host holds back everything else).
    pub txs_only_to: std::collections::HashSet<usize>,
    /// Changes what a slot sends before anyone gets it (a byzantine sender).
    pub tamper: Option<Tamper>,
    /// Slots that receive transactions, statuses and decided blocks only: they follow by
    /// block sync, always a run behind (a slow VM).
    pub sync_only_to: std::collections::HashSet<usize>,
}

impl Net {
    pub fn new() -> Net {
        Net::with_genesis(|_| {})
    }

    /// A network whose genesis `adjust` changed.
    pub fn with_genesis(adjust: impl FnOnce(&mut Genesis<serde_json::Value>)) -> Net {
        let keys: Vec<SigningKey> = (0..N)
            .map(|i| SigningKey::from([90 + i as u8; 32]))
            .collect();
        let mut genesis = genesis(&keys);
        adjust(&mut genesis);
        let slots = keys
            .into_iter()
            .map(|key| Slot {
                key,
                store_dir: tempfile::tempdir().unwrap(),
                app_dir: tempfile::tempdir().unwrap(),
                engine: None,
                instance: LAUNCH_INSTANCE,
                asked: Default::default(),
            })
            .collect();
        let mut net = Net {
            slots,
            genesis,
            now: 0,
            last_tick: 0,
            ticks: true,
            shuffle: None,
            seq: 0,
            timers: BinaryHeap::new(),
            timeouts: Default::default(),
            inbox: VecDeque::new(),
            committed: vec![0; N],
            blocked: Default::default(),
            sent_votes: Vec::new(),
            no_proposals_to: Default::default(),
            txs_only_to: Default::default(),
            tamper: None,
            sync_only_to: Default::default(),
        };
        for i in 0..N {
            net.start(i);
        }
        net
    }

    pub fn start(&mut self, i: usize) {
        let (engine, out) = open(&self.slots[i], &self.genesis);
        self.committed[i] = engine.state().last_block_height;
        self.slots[i].engine = Some(engine);
        self.route(i, out);
    }

    pub fn schedule(&mut self, node: usize, after: Duration, input: Input) {
        self.seq += 1;
        self.timers.push(Reverse((
            self.now + after.as_millis() as u64,
            self.seq,
            node,
        )));
        self.timeouts.insert(self.seq, input);
    }

    pub fn route(&mut self, from: usize, outputs: Vec<Output>) {
        for mut o in outputs {
            if let (Some(tamper), Output::Broadcast(p) | Output::Send(_, p)) =
                (self.tamper.as_mut(), &mut o)
            {
                tamper(from, p);
            }
            match o {
                Output::Broadcast(p) => {
                    self.note_votes(from, &p);
                    for to in (0..self.slots.len()).filter(|to| *to != from) {
                        if !self.blocked.contains(&(from, to)) {
                            self.inbox
                                .push_back((to, Input::Peer(from as u64, p.clone())));
                        }
                    }
                }
                Output::Send(peer, p) => {
                    self.note_votes(from, &p);
                    if !self.blocked.contains(&(from, peer as usize)) {
                        self.inbox
                            .push_back((peer as usize, Input::Peer(from as u64, p)));
                    }
                }
                Output::Schedule { timeout, after } => {
                    self.schedule(from, after, Input::Timeout(timeout))
                }
                Output::ScheduleHeight { height, after } => {
                    self.schedule(from, after, Input::StartHeight(height))
                }
                Output::ScheduleTxFlush { after } => self.schedule(from, after, Input::FlushTxs),
                Output::Committed { height, .. } => self.committed[from] = height,
            }
        }
    }

    fn note_votes(&mut self, from: usize, p: &bulwark_wire::Payload) {
        let votes = match p {
            bulwark_wire::Payload::Vote(v) => vec![v.clone()],
            bulwark_wire::Payload::Certificate(c) => c.votes.clone(),
            _ => vec![],
        };
        for v in votes {
            self.sent_votes.push(SentVote {
                validator: v.validator_address.clone(),
                height: v.height,
                round: v.round,
                kind: v.r#type,
                block: v.block_id.map(|b| b.hash),
                from,
            });
        }
    }

    /// Pairs of votes by one validator at one height, round and type for different blocks
    /// (nil included): what duplicate-vote evidence is made of.
    pub fn conflicting_votes(&self) -> Vec<(SentVote, SentVote)> {
        let mut votes = self.sent_votes.clone();
        votes.sort();
        votes.dedup_by(|a, b| {
            (&a.validator, a.height, a.round, a.kind, &a.block)
                == (&b.validator, b.height, b.round, b.kind, &b.block)
        });
        votes
            .windows(2)
            .filter(|w| {
                (&w[0].validator, w[0].height, w[0].round, w[0].kind)
                    == (&w[1].validator, w[1].height, w[1].round, w[1].kind)
            })
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect()
    }

    /// Another slot running validator `of`'s key on a copy of its disks (stopped first:
    /// a host copies a VM's disk image), as `instance`; it starts at once.
    pub fn add_clone(&mut self, of: usize, instance: [u8; 32]) -> usize {
        let store_dir = tempfile::tempdir().unwrap();
        let app_dir = tempfile::tempdir().unwrap();
        copy_dir(self.slots[of].store_dir.path(), store_dir.path());
        copy_dir(self.slots[of].app_dir.path(), app_dir.path());
        self.slots.push(Slot {
            key: self.slots[of].key.clone(),
            store_dir,
            app_dir,
            engine: None,
            instance,
            asked: Default::default(),
        });
        self.committed.push(0);
        let i = self.slots.len() - 1;
        self.start(i);
        i
    }

    /// Delivers everything pending, then the next timer; with ticks every 200 ms.
    pub fn step(&mut self) {
        let next = match self.shuffle.as_mut() {
            None => self.inbox.pop_front(),
            Some(state) if !self.inbox.is_empty() => {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                // Any link may go next, but each link stays FIFO, as TCP is.
                let link = |(to, input): &(usize, Input)| match input {
                    Input::Peer(from, _) => (*to, *from),
                    _ => (*to, u64::MAX),
                };
                let pick = link(&self.inbox[(*state % self.inbox.len() as u64) as usize]);
                let first = self.inbox.iter().position(|m| link(m) == pick);
                first.and_then(|i| self.inbox.remove(i))
            }
            Some(_) => None,
        };
        if let Some((to, input)) = next {
            let proposal = matches!(
                input,
                Input::Peer(
                    _,
                    bulwark_wire::Payload::Proposal(_) | bulwark_wire::Payload::BlockPart(_)
                )
            );
            if proposal && self.no_proposals_to.contains(&to) {
                return;
            }
            let txs = matches!(input, Input::Peer(_, bulwark_wire::Payload::Txs(_)));
            if !txs && self.txs_only_to.contains(&to) {
                return;
            }
            let sync = matches!(
                input,
                Input::Peer(
                    _,
                    bulwark_wire::Payload::Txs(_)
                        | bulwark_wire::Payload::Status(_)
                        | bulwark_wire::Payload::DecidedBlock(_)
                )
            );
            if !sync && self.sync_only_to.contains(&to) {
                return;
            }
            if let Some(engine) = self.slots[to].engine.as_mut() {
                let out = engine.handle(input).unwrap();
                self.route(to, out);
            }
            return;
        }
        // Ticks come every 200 ms whatever else is due (as the driver's interval does).
        let next_tick = self.last_tick + 200;
        match self.timers.peek() {
            Some(Reverse((at, ..))) if *at < next_tick || !self.ticks => {
                let Reverse((at, seq, node)) = self.timers.pop().unwrap();
                let input = self.timeouts.remove(&seq).unwrap();
                self.now = at;
                if let Some(engine) = self.slots[node].engine.as_mut() {
                    let out = engine.handle(input).unwrap();
                    self.route(node, out);
                }
            }
            _ => {
                self.now = next_tick;
                self.last_tick = next_tick;
                for i in 0..self.slots.len() {
                    if let Some(engine) = self.slots[i].engine.as_mut() {
                        let out = engine.handle(Input::Tick).unwrap();
                        self.route(i, out);
                    }
                }
            }
        }
    }

    pub fn run_until(&mut self, height: u64, budget: usize) {
        for _ in 0..budget {
            if self.committed.iter().all(|h| *h >= height) {
                return;
            }
            self.step();
        }
        let rounds: Vec<String> = self
            .slots
            .iter()
            .map(|s| {
                s.engine
                    .as_ref()
                    .map(|e| {
                        format!(
                            "h{} r{} {:?} locked {:?} valid {:?}",
                            e.state().next_height(),
                            e.round(),
                            e.consensus().step(),
                            e.consensus().locked(),
                            e.consensus().valid()
                        )
                    })
                    .unwrap_or_default()
            })
            .collect();
        panic!(
            "not all nodes reached height {height}: {:?} at {:?} (t={} ms)",
            self.committed, rounds, self.now
        );
    }

    /// Every node stored the same block at every height up to `upto`.
    pub fn assert_same_blocks(&self, upto: u64) {
        for height in 1..=upto {
            let blocks: Vec<_> = self
                .slots
                .iter()
                .map(|s| {
                    s.engine
                        .as_ref()
                        .unwrap()
                        .blocks()
                        .block(height)
                        .unwrap()
                        .expect("stored")
                })
                .collect();
            assert!(blocks.windows(2).all(|w| w[0] == w[1]), "height {height}");
        }
    }

    pub fn submit(&mut self, node: usize, tx: &str) {
        let engine = self.slots[node].engine.as_mut().unwrap();
        let (result, out) = engine.submit_tx(Bytes::from(tx.to_string()));
        result.unwrap();
        self.route(node, out);
    }
}
