//! The validator node without I/O: one [`Engine`] owns the consensus core, the privval, the
//! write-ahead log, the block store, the application, the mempool and the chain state, and
//! turns [`Input`]s (peer messages, timeouts, transactions, ticks) into [`Output`]s (messages to
//! send, timers to set, blocks committed). The tokio driver only moves bytes and time.
//!
//! Every input that reaches the consensus core is written to the WAL first, the node's own
//! signed messages and proposed blocks included, so that after a crash [`Engine::open`] replays
//! the height in progress without signing anything again (the privval refuses to sign
//! backwards anyway). Decided blocks are stored with their commit and the resulting state
//! before the application commits; the handshake repairs a crash in between.

use crate::chain::{
    block_id, commit_from_decision, encode_results, extensions_enabled, finalize_request,
    indexed_attributes, misbehavior_of, pack_signature, process_request, unpack_signature,
    BlockError, ChainState, CommitError,
};
use crate::handshake::{handshake, HandshakeError};
use bulwark_app::{tally, AppError, Application, Verdicts};
use bulwark_chain::extensions::{
    extend_request, max_extension_bytes, verify_commit_extensions, well_formed, Extensions,
    HeightExtensions,
};
use bulwark_consensus::{
    Action, Certificate as CoreCertificate, Config, Consensus, Event, Height as CHeight,
    Proposal as CoreProposal, Round, Signed, Timeout, ValidatorIndex, Validity, ValueId,
    Vote as CoreVote, VoteKind,
};
use bulwark_evidence::{summary as evidence_summary, AtHeight, EvidenceError, Now, Pool};
use bulwark_gossip::proposal::{block_to_parts, wire_parts, Assembler, PartAdded};
use bulwark_gossip::relay::Relay;
use bulwark_gossip::sync::BlockRequests;
use bulwark_instance::{Authorization, Claim, ClaimAction, ClaimError, Pool as ClaimPool, Signer};
use bulwark_mempool::{tx_hash, AddError, Mempool, MempoolConfig};
use bulwark_store::blocks::{BlockStore, DecidedHeight};
use bulwark_store::evidence::{CommittedEvidence, EvidenceLog};
use bulwark_store::privval::{PrivValidator, PrivvalError};
use bulwark_store::wal::Wal;
use bulwark_store::{Store, StoreError};
use bulwark_types::convert::value_id;
use bulwark_types::parts::PartSet;
use bulwark_types::signing::{
    is_non_nil_precommit, verify_proposal, verify_vote, verify_vote_extension,
};
use bulwark_types::tendermint::abci::{request, response};
use bulwark_types::tendermint::block::{self, Block, Commit};
use bulwark_types::tendermint::evidence::Evidence;
use bulwark_types::tendermint::{account, proposal, vote, Signature, Time};
use bulwark_types::tendermint_proto::v0_38 as pb;
use bulwark_wire::wal::{envelope, kind_code, kind_of, WalRecord};
use bulwark_wire::{self as wire, Payload};
use bytes::Bytes;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use thiserror::Error;

/// Who sent a message (the driver's connection number).
pub type PeerId = u64;

/// What happens to the engine.
#[derive(Debug)]
pub enum Input {
    /// A message from a peer.
    Peer(PeerId, Payload),
    /// A timer set by [`Output::Schedule`] fired.
    Timeout(Timeout),
    /// A transaction from a client.
    Tx(Bytes),
    /// Periodic: lets a node that made no progress ask its peers.
    Tick,
    /// The wait after a commit is over: start this height (see [`Output::ScheduleHeight`]).
    StartHeight(u64),
    /// Send the client transactions gathered since the last flush (see
    /// [`Output::ScheduleTxFlush`]).
    FlushTxs,
    /// The connection to this peer is gone: what it was known to have is forgotten (a later
    /// connection, even from the same validator, gets a new id).
    PeerGone(PeerId),
    /// The driver could not queue this [`Output::Send`] for the peer (its queue was full).
    Undelivered(PeerId, Payload),
    /// A status from a peer that has not read what it was sent: its height is noted, but it is
    /// not answered (the answer would only be dropped).
    BackloggedStatus(PeerId, wire::Status),
    /// What this peer is now: full nodes, which a host can run many of, neither move the
    /// median peer height nor come first for blocks; an unattested one is only answered.
    PeerRole(PeerId, PeerRole),
}

/// What a peer is, as the driver's admission sees it (a peer it never named is a validator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    /// Its key is a validator's.
    Validator,
    /// An attested node of the published image whose key is no validator's.
    FullNode,
    /// A node without evidence: its block requests are answered and a few of its transactions
    /// taken; what it says of its height counts for nothing.
    Unattested,
}

/// What the engine asks the driver to do.
#[derive(Debug, PartialEq)]
pub enum Output {
    /// Send to every peer.
    Broadcast(Payload),
    /// Send to one peer.
    Send(PeerId, Payload),
    /// Deliver `Input::Timeout(timeout)` after `after`.
    Schedule {
        /// The timeout.
        timeout: Timeout,
        /// When.
        after: Duration,
    },
    /// Deliver `Input::StartHeight(height)` after `after` (CometBFT's `timeout_commit`: time
    /// for late precommits and for the next proposer's mempool to fill).
    ScheduleHeight {
        /// The height to start.
        height: u64,
        /// When.
        after: Duration,
    },
    /// Deliver `Input::FlushTxs` after `after`: client transactions are gossiped in batches.
    ScheduleTxFlush {
        /// When.
        after: Duration,
    },
    /// A block was committed.
    Committed {
        /// Height.
        height: u64,
        /// Transactions in it.
        txs: usize,
    },
}

/// A failure the node cannot continue past.
#[derive(Debug, Error)]
pub enum EngineError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The application failed.
    #[error(transparent)]
    App(#[from] AppError),
    /// The start-up handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// Our own block could not be built, or a decided block could not be committed.
    #[error("block: {0}")]
    Block(#[from] BlockError),
    /// A decision could not be turned into a commit.
    #[error("commit: {0}")]
    Commit(#[from] CommitError),
    /// The privval refused to sign what the core decided to sign (a bug, never input).
    #[error("privval: {0}")]
    Privval(#[from] PrivvalError),
    /// The WAL holds a record this version cannot read, or a block of ours that fails the
    /// checks a peer's block gets.
    #[error("WAL: {0}")]
    Wal(String),
}

pub use bulwark_types::clock::Clock;

/// Settings the engine takes from config.toml.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where time comes from.
    pub clock: Clock,
    /// Consensus timeouts.
    pub consensus: Config,
    /// Mempool limits.
    pub mempool: MempoolConfig,
    /// Largest total tx bytes in a block.
    pub max_block_tx_bytes: i64,
    /// Wait after a commit before starting the next height.
    pub timeout_commit: Duration,
    /// This boot's instance of the validator (`bulwark_instance`): fresh random bytes, never
    /// stored, so a restarted or copied disk is a new instance.
    pub instance: [u8; 32],
}

pub use bulwark_gossip::limits::*;
pub use bulwark_gossip::sync::{CATCH_UP_BLOCKS, SHUN_TICKS};

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            clock: Clock::system(),
            consensus: Config::default(),
            mempool: MempoolConfig::default(),
            max_block_tx_bytes: 4 << 20,
            timeout_commit: Duration::from_millis(1000),
            // One instance across restarts: what tests of other things want. The binary
            // draws a fresh one at every boot.
            instance: [0; 32],
        }
    }
}

/// What the engine holds for the height in progress: the quantities a peer could try to grow
/// without bound, for the limits the simulator checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Messages kept for a height not started yet.
    pub early: usize,
    /// Their bytes.
    pub early_bytes: usize,
    /// Verified proposals waiting for their block.
    pub waiting: usize,
    /// Blocks of this height assembled or built.
    pub candidates: usize,
    /// Their encodings kept (see `Engine::encodings`).
    pub encodings: usize,
    /// Blocks being assembled from parts.
    pub assembling: usize,
    /// Messages remembered for peers that missed them.
    pub seen: usize,
    /// WAL records of this height.
    pub wal_records: u64,
}

/// The node's engine.
pub struct Engine {
    config: EngineConfig,
    address: account::Id,
    core: Consensus,
    privval: PrivValidator,
    wal: Wal,
    blocks: BlockStore,
    app: Box<dyn Application>,
    mempool: Mempool,
    state: ChainState,
    last_commit: Option<Commit>,
    /// Blocks of the current height by value id, with their ids.
    candidates: HashMap<ValueId, (Block, block::Id, Validity)>,
    /// Verified proposals waiting for their block, by part-set header.
    waiting: Vec<(proposal::Proposal, Signed<CoreProposal>)>,
    assembler: Assembler,
    /// Our own blocks of the current height, by round (built once, reused after a restart).
    own_blocks: HashMap<u32, Block>,
    /// The part sets (the protobuf encoding, cut and hashed) of the valid candidates whose
    /// encoding this node made: made once, then proposed and stored as they are.
    encodings: HashMap<ValueId, PartSet>,
    /// Messages of the current height admitted, for peers that missed them.
    relay: Relay,
    replaying: bool,
    /// Client transactions admitted since the last gossip.
    tx_outbox: Vec<Vec<u8>>,
    /// Messages of a height the core has not started yet (the next one, or this one during
    /// timeout_commit), handled when it starts: a node that commits a little later than its
    /// peers must not lose their first messages of the next height.
    early: Vec<(PeerId, Payload)>,
    early_bytes: usize,
    progress_mark: (u64, u32, Option<bulwark_consensus::Step>),
    /// Ticks since the height last changed.
    ticks_at_height: u32,
    /// Whom block sync asks, and each peer's last reported height.
    requests: BlockRequests,
    /// `Status` answers given to each peer since the last tick: an answer can be a whole
    /// height's messages or [`CATCH_UP_BYTES`] of blocks read from disk, so a peer repeating
    /// its request gets [`STATUS_ANSWERS_PER_TICK`] (an honest laggard asks twice at most: its
    /// own stuck broadcast, and its request to a peer it saw ahead).
    status_answers: HashMap<PeerId, u32>,
    /// Peers whose decided block came with wrong vote extensions since the last tick.
    refused_extensions: BTreeSet<PeerId>,
    /// Evidence from each peer checked since the last tick.
    peer_evidence_checks: HashMap<PeerId, u32>,
    /// RPC evidence submissions checked since the last tick (each costs signature checks on
    /// this thread).
    rpc_evidence_checks: u32,
    /// `check_tx` calls from RPC clients since the last tick.
    rpc_check_txs: u32,
    /// Conflicting votes found, evidence waiting for a block, and what blocks committed.
    evidence: Pool,
    /// What blocks committed, durably (so a restarted node never commits evidence twice).
    evidence_log: EvidenceLog,
    /// The block ids of this height's verified votes, by value id: a double vote for a block
    /// this node never saw still becomes evidence naming that block.
    vote_blocks: HashMap<ValueId, block::Id>,
    /// How many of them each validator (set index) added: one validator cannot fill them.
    vote_blocks_by: HashMap<u32, usize>,
    /// This height's verified vote extensions of precommits for a block.
    extensions: HeightExtensions,
    /// The last commit's vote extensions, by set index (none before the enable height).
    last_extensions: Extensions,
    /// Instance claims waiting for a block.
    claims: ClaimPool,
    /// This instance: whether it may sign, and its claim.
    signer: Signer,
    /// Peer claims checked since the last tick.
    claim_checks: u32,
    /// Of those, per peer (one peer cannot use up everyone's budget).
    claim_checks_by_peer: BTreeMap<PeerId, u32>,
    /// Transactions taken from each peer since the last tick ([`PEER_TXS_PER_TICK`]).
    peer_txs: BTreeMap<PeerId, u32>,
    /// The highest height of a proposal or vote each peer sent: the height it works on, as
    /// `dump_consensus_state` shows it (and for `catching_up`; it decides nothing).
    peer_working_heights: BTreeMap<PeerId, u64>,
    /// When the height in progress started, by this node's clock (`consensus_state`).
    height_started: Time,
    /// The peers that are no validators ([`Input::PeerRole`]).
    peer_roles: BTreeMap<PeerId, PeerRole>,
    /// Transactions taken from all full-node peers together since the last tick.
    full_node_txs: u32,
    /// The application's verdicts since the start.
    verdicts: Verdicts,
}

/// Most block ids of verified votes remembered at one height (each validator can vote for a
/// few blocks per round, over a bounded number of rounds).
const MAX_VOTE_BLOCKS: usize = 4096;
/// Most of them one validator adds: two per round for a long multi-round height.
const MAX_VOTE_BLOCKS_PER_VALIDATOR: usize = 64;

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("height", &self.state.next_height())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens the node: stores, handshake with the application, then replay of the height in
    /// progress from the WAL. Returns the engine and what its start asks the driver to do.
    pub fn open(
        config: EngineConfig,
        store: &Store,
        key: ed25519_consensus::SigningKey,
        mut app: Box<dyn Application>,
        genesis_state: ChainState,
    ) -> Result<(Engine, Vec<Output>), EngineError> {
        let config_instance = config.instance;
        let height_started = config.clock.now();
        let address = account::Id::from(
            bulwark_types::signing::public_key(&key)
                .ed25519()
                .ok_or_else(|| EngineError::Wal("not an ed25519 key".into()))?,
        );
        let blocks = BlockStore::open(store)?;
        let state = handshake(app.as_mut(), &blocks, genesis_state)?;
        let last_commit = match blocks.latest_height()? {
            None => None,
            Some(h) => {
                let bytes = blocks
                    .commit(h)?
                    .ok_or_else(|| EngineError::Wal(format!("commit {h} missing")))?;
                let raw = pb::types::Commit::decode(bytes.as_slice())
                    .map_err(|e| EngineError::Wal(e.to_string()))?;
                Some(Commit::try_from(raw).map_err(|e| EngineError::Wal(e.to_string()))?)
            }
        };
        let mut engine = Engine {
            mempool: Mempool::new(config.mempool.clone()),
            core: Consensus::new(config.consensus.clone(), Some(address.as_bytes().to_vec())),
            config,
            address,
            privval: PrivValidator::open(key, store)?,
            wal: Wal::open(store)?,
            blocks: blocks.clone(),
            app,
            state,
            last_commit,
            candidates: HashMap::new(),
            waiting: Vec::new(),
            assembler: Assembler::new(),
            own_blocks: HashMap::new(),
            encodings: HashMap::new(),
            relay: Relay::default(),
            replaying: false,
            tx_outbox: Vec::new(),
            early: Vec::new(),
            early_bytes: 0,
            progress_mark: (0, 0, None),
            ticks_at_height: 0,
            requests: BlockRequests::default(),
            status_answers: HashMap::new(),
            refused_extensions: BTreeSet::new(),
            peer_evidence_checks: HashMap::new(),
            rpc_evidence_checks: 0,
            rpc_check_txs: 0,
            evidence: Pool::new(),
            evidence_log: EvidenceLog::open(store)?,
            vote_blocks: HashMap::new(),
            vote_blocks_by: HashMap::new(),
            extensions: HeightExtensions::default(),
            last_extensions: match blocks.latest_height()? {
                Some(h) => wire::VoteExtensions::pairs_of(blocks.extensions(h)?)
                    .map_err(|e| EngineError::Wal(e.to_string()))?,
                None => Vec::new(),
            },
            claims: ClaimPool::default(),
            signer: Signer::new(config_instance),
            claim_checks: 0,
            claim_checks_by_peer: BTreeMap::new(),
            peer_txs: BTreeMap::new(),
            peer_roles: BTreeMap::new(),
            full_node_txs: 0,
            verdicts: Verdicts::default(),
            height_started,
            peer_working_heights: BTreeMap::new(),
        };
        for e in engine.evidence_log.all()? {
            engine
                .evidence
                .remember_committed(e.digest, e.height, e.time);
        }
        // Replay the height in progress. Our own blocks are known before the height starts, so
        // that as proposer we propose the block we already proposed, not a new one.
        let height = engine.state.next_height();
        let mut records = Vec::new();
        for bytes in engine.wal.records(height)? {
            let record =
                WalRecord::decode(bytes.as_slice()).map_err(|e| EngineError::Wal(e.to_string()))?;
            if let (Some(raw), Some(round)) = (record.own_block.clone(), record.own_round) {
                let block = Block::try_from(raw).map_err(|e| EngineError::Wal(e.to_string()))?;
                engine.check_replayed_own_block(&block, round)?;
                engine.own_blocks.insert(round, block);
            } else {
                records.push(record);
            }
        }
        engine.replaying = true;
        let own_blocks = std::mem::take(&mut engine.own_blocks);
        let mut out = engine.start_height_keeping(own_blocks)?;
        for record in records {
            out.extend(engine.replay(record)?);
        }
        engine.replaying = false;
        // Say now whether this instance signs: a replay can leave the core waiting for votes
        // that no timeout follows up (every restarted instance waiting for its claim), and then
        // no later signing attempt would say it.
        engine.may_sign();
        // The log's peers are connections of a past life, and what they had may be lost.
        engine.relay.forget_peers();
        out.extend(engine.manage_claim()?);
        Ok((engine, out))
    }

    /// What the register of instance claims says of this instance (`bulwark_instance`).
    pub fn signing(&self) -> Authorization {
        let validator: [u8; 20] = self.address.as_bytes().try_into().unwrap_or_default();
        self.signer.authorization(&self.state.claims, &validator)
    }

    /// The chain state (next height, validators, app hash, ...).
    pub fn state(&self) -> &ChainState {
        &self.state
    }

    /// The consensus core (read-only: round, step, lock, for diagnostics and RPC).
    pub fn consensus(&self) -> &Consensus {
        &self.core
    }

    /// The block store (blocks, commits and states by height).
    pub fn blocks(&self) -> &BlockStore {
        &self.blocks
    }

    /// This validator's address.
    pub fn address(&self) -> account::Id {
        self.address
    }

    /// The application (for queries).
    pub fn app(&self) -> &dyn Application {
        self.app.as_ref()
    }

    /// The mempool.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// The application's verdicts since the start.
    pub fn verdicts(&self) -> Verdicts {
        self.verdicts
    }

    /// Verified evidence waiting for a block.
    pub fn evidence_pending(&self) -> usize {
        self.evidence.pending()
    }

    /// Whether the network is beyond us: the lower median over the validator peers of the
    /// latest height each reported or worked on (peers in step send votes, not a `Status`),
    /// so no one peer's claim makes it or keeps it so.
    pub fn catching_up(&self) -> bool {
        let mut latest = BTreeMap::new();
        for (peer, h) in self
            .peer_working_heights
            .iter()
            .chain(self.requests.heights())
        {
            if !self.peer_roles.contains_key(peer) {
                let e: &mut u64 = latest.entry(*peer).or_default();
                *e = (*e).max(*h);
            }
        }
        let median = crate::heights::lower_median(latest.into_values().collect());
        median.is_some_and(|h| h > self.state.next_height())
    }

    /// What it holds for the height in progress.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            early: self.early.len(),
            early_bytes: self.early_bytes,
            waiting: self.waiting.len(),
            candidates: self.candidates.len(),
            encodings: self.encodings.len(),
            assembling: self.assembler.len(),
            seen: self.relay.len(),
            wal_records: self.wal.count_from(self.state.next_height()),
        }
    }

    /// The block this node built as proposer of `round` at the height in progress.
    pub fn own_block(&self, round: u32) -> Option<&Block> {
        self.own_blocks.get(&round)
    }

    /// When the height in progress started, by this node's clock.
    pub fn height_started(&self) -> Time {
        self.height_started
    }

    /// The block id of `value` at the height in progress, if this node saw it proposed or
    /// voted for.
    pub fn block_id_of(&self, value: &ValueId) -> Option<block::Id> {
        self.candidates
            .get(value)
            .map(|(_, id, _)| *id)
            .or_else(|| self.vote_blocks.get(value).copied())
    }

    /// The commit of the last block, if any.
    pub fn last_commit(&self) -> Option<&Commit> {
        self.last_commit.as_ref()
    }

    /// The highest height of a proposal or vote each connected peer sent.
    pub fn peer_working_heights(&self) -> &BTreeMap<PeerId, u64> {
        &self.peer_working_heights
    }

    /// The current consensus round.
    pub fn round(&self) -> u32 {
        self.core.round().map_or(0, |r| r.0)
    }

    fn replay(&mut self, record: WalRecord) -> Result<Vec<Output>, EngineError> {
        if let (Some(raw), Some(round)) = (record.own_block, record.own_round) {
            let block = Block::try_from(raw).map_err(|e| EngineError::Wal(e.to_string()))?;
            self.own_blocks.insert(round, block);
            return Ok(Vec::new());
        }
        if let (Some(round), Some(kind)) =
            (record.timeout_round, record.timeout_kind.and_then(kind_of))
        {
            return self.handle(Input::Timeout(Timeout {
                height: CHeight(self.state.next_height()),
                round: Round(round),
                kind,
            }));
        }
        if let Some(bytes) = record.envelope {
            let env = wire::Envelope::decode(bytes.as_slice())
                .map_err(|e| EngineError::Wal(e.to_string()))?;
            if let Some(payload) = env.payload {
                return self.handle(Input::Peer(0, payload));
            }
        }
        Ok(Vec::new())
    }

    /// Logs an input that reached the core, unless it is one being replayed from the log.
    fn log(&mut self, record: WalRecord) -> Result<(), EngineError> {
        if self.replaying {
            return Ok(());
        }
        self.log_own(record)
    }

    /// Logs what this node just made and signed (its block, proposal or vote), during a replay
    /// too. The privval signs nothing earlier than its last signature (it hands back only that
    /// last one again, so a restart logs at most one identical copy), so after a crash only
    /// the log can bring back an earlier one: a prevote signed at start and lost on the wire
    /// was lost for good (the engine simulator's seed 13884 of 20,000 never left height 1).
    ///
    /// Nothing here is flushed on its own: what the node made must be durable before it
    /// leaves, and the privval's flush of the signature that lets it leave does that. The log
    /// and the last-sign-state share one database, whose journal is recovered as a prefix, so
    /// a record appended before the signature's is durable once that one is. An own block is
    /// logged before its proposal is signed; a proposal the privval hands back again without
    /// a new flush was signed, and its block logged, before the flush that recorded it.
    fn log_own(&mut self, record: WalRecord) -> Result<(), EngineError> {
        self.wal
            .append(self.state.next_height(), &record.encode_to_vec())?;
        Ok(())
    }

    fn start_height(&mut self) -> Result<Vec<Output>, EngineError> {
        self.start_height_keeping(HashMap::new())
    }

    /// Starts the next height with `own_blocks` already known (from the WAL after a restart).
    fn start_height_keeping(
        &mut self,
        own_blocks: HashMap<u32, Block>,
    ) -> Result<Vec<Output>, EngineError> {
        self.candidates.clear();
        self.encodings.clear();
        self.waiting.clear();
        self.assembler = Assembler::new();
        self.own_blocks = own_blocks;
        self.relay.clear();
        self.vote_blocks.clear();
        self.vote_blocks_by.clear();
        self.extensions.clear();
        self.height_started = self.config.clock.now();
        let event = Event::NewHeight {
            height: CHeight(self.state.next_height()),
            validators: self.state.validators.clone(),
        };
        let mut out = self.drive(event)?;
        self.early_bytes = 0;
        for (peer, payload) in std::mem::take(&mut self.early) {
            out.extend(self.peer(peer, payload)?);
        }
        Ok(out)
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input) -> Result<Vec<Output>, EngineError> {
        match input {
            Input::Timeout(t) => {
                if t.height.0 != self.state.next_height() {
                    return Ok(Vec::new());
                }
                self.log(WalRecord {
                    timeout_round: Some(t.round.0),
                    timeout_kind: Some(kind_code(t.kind)),
                    ..Default::default()
                })?;
                self.drive(Event::Timeout(t))
            }
            Input::Tx(tx) => Ok(self.add_tx(tx).unwrap_or_default()),
            Input::FlushTxs => Ok(self.flush_txs()),
            Input::Tick => Ok(self.tick()),
            Input::StartHeight(h) => {
                if h == self.state.next_height() && self.core.height().is_none_or(|c| c.0 < h) {
                    self.start_height()
                } else {
                    Ok(vec![])
                }
            }
            Input::Peer(peer, payload) => self.peer(peer, payload),
            Input::PeerGone(peer) => {
                self.requests.forget(peer);
                self.peer_roles.remove(&peer);
                self.peer_working_heights.remove(&peer);
                self.relay.forget_peer(peer);
                self.status_answers.remove(&peer);
                Ok(vec![])
            }
            Input::Undelivered(peer, payload) => {
                self.relay.undelivered(peer, &payload);
                Ok(vec![])
            }
            Input::BackloggedStatus(peer, s) => {
                if self.peer_roles.get(&peer) != Some(&PeerRole::Unattested) {
                    self.requests.reported(peer, s.height);
                }
                Ok(vec![])
            }
            Input::PeerRole(peer, role) => {
                if role == PeerRole::Validator {
                    self.peer_roles.remove(&peer);
                } else {
                    self.peer_roles.insert(peer, role);
                }
                if role == PeerRole::Unattested {
                    self.requests.forget_height(peer);
                }
                Ok(vec![])
            }
        }
    }

    /// Admits a client transaction; it is gossiped with the others that arrive within
    /// [`TX_GOSSIP_DELAY`] (one message instead of one per transaction).
    fn add_tx(&mut self, tx: Bytes) -> Result<Vec<Output>, AddError> {
        match self.admit_claim(&tx) {
            None => {}
            Some(Ok(_)) => return Ok(vec![]),
            Some(Err(e)) => {
                return Err(AddError::Rejected {
                    code: 1,
                    log: format!("instance claim: {e}"),
                })
            }
        }
        self.mempool.add(tx.clone(), self.app.as_ref())?;
        self.tx_outbox.push(tx.to_vec());
        Ok(match self.tx_outbox.len() {
            1 => vec![Output::ScheduleTxFlush {
                after: TX_GOSSIP_DELAY,
            }],
            n if n >= TX_GOSSIP_BATCH => self.flush_txs(),
            _ => vec![],
        })
    }

    fn flush_txs(&mut self) -> Vec<Output> {
        if self.tx_outbox.is_empty() {
            return vec![];
        }
        let txs = std::mem::take(&mut self.tx_outbox);
        vec![Output::Broadcast(Payload::Txs(wire::Txs { txs }))]
    }

    /// Submits a client transaction; the result says whether the mempool took it.
    pub fn submit_tx(&mut self, tx: Bytes) -> (Result<(), AddError>, Vec<Output>) {
        match self.add_tx(tx) {
            Ok(out) => (Ok(()), out),
            Err(e) => (Err(e), vec![]),
        }
    }

    fn tick(&mut self) -> Vec<Output> {
        let mark = (self.state.next_height(), self.round(), self.core.step());
        // Stuck: nothing moved since the last tick, or rounds go by without a decision (an
        // equivocator can deny a node the polka or commit its peers saw; only their
        // certificates, sent on request, show it).
        self.ticks_at_height = if mark.0 == self.progress_mark.0 {
            self.ticks_at_height.saturating_add(1)
        } else {
            0
        };
        let stuck = mark == self.progress_mark || self.ticks_at_height >= STUCK_TICKS;
        self.progress_mark = mark;
        // A request gets a whole tick for its answer.
        self.requests.tick();
        self.status_answers.clear();
        self.peer_evidence_checks.clear();
        self.refused_extensions.clear();
        self.rpc_evidence_checks = 0;
        self.rpc_check_txs = 0;
        self.claim_checks = 0;
        self.claim_checks_by_peer.clear();
        self.peer_txs.clear();
        self.full_node_txs = 0;
        let mut out = vec![];
        if stuck {
            out.push(Output::Broadcast(Payload::Status(wire::Status {
                height: mark.0,
                round: mark.1,
            })));
        } else if self.network_height() > mark.0.saturating_add(1)
            && self.awaiting_run(mark.0).is_none()
            && !bulwark_consensus::mutation::active(
                bulwark_consensus::mutation::Mutant::BlockSyncOnStuckTicksOnly,
            )
        {
            // Behind and moving, with no request waiting: ask the next peer ahead.
            out.extend(self.ask_next_peer(mark.0, None));
        }
        out
    }

    fn peer(&mut self, peer: PeerId, payload: Payload) -> Result<Vec<Output>, EngineError> {
        let height = self.state.next_height();
        // Ahead of the core: the next height, or this one while the core still waits out
        // timeout_commit of the last.
        let core_started = self.core.height().map(|h| h.0) == Some(height);
        let ahead = payload
            .height()
            .is_some_and(|h| h == height + 1 || (h == height && !core_started));
        // A peer at work on a height past the next one decided ours already: we missed
        // decisions (a restart, a partition), so ask it for them now rather than at the next
        // stuck tick, while the chain moves on (once per peer and height reached).
        let sync_on_ticks_only = bulwark_consensus::mutation::active(
            bulwark_consensus::mutation::Mutant::BlockSyncOnStuckTicksOnly,
        );
        if let Some(h) = payload.height() {
            crate::heights::note(&mut self.peer_working_heights, peer, h, u64::max);
        }
        let far_ahead = payload
            .height()
            .is_some_and(|h| h > height.saturating_add(1));
        if far_ahead && !sync_on_ticks_only {
            // The sender is asked only when no peer is known to be ahead: a peer's claim is
            // unverified, and the peers take turns.
            return Ok(if self.awaiting_run(height).is_some() {
                vec![]
            } else {
                self.ask_next_peer(height, Some(peer)).into_iter().collect()
            });
        }
        if ahead {
            let size = payload.encoded_len();
            if self.early.len() < MAX_EARLY_MESSAGES && self.early_bytes + size <= MAX_EARLY_BYTES {
                self.early_bytes += size;
                self.early.push((peer, payload));
            }
            return Ok(vec![]);
        }
        // A copy of a message kept for relay: the core stored it already.
        if self.relay.holds(&payload) {
            return Ok(vec![]);
        }
        match payload {
            // Validators form a full mesh and every node gossips its clients' transactions to
            // all of its peers, so peer transactions are not relayed again.
            Payload::Txs(txs) => {
                // A claim costs a signature check: an honest peer sends its own, alone, a few
                // times per claim; checks are budgeted per message and per tick.
                // Only well-formed ones are charged; junk costs no signature check.
                let mut claims = 0;
                for tx in txs.txs.into_iter().take(10_000) {
                    if let Some(claim) = Claim::from_tx(&tx) {
                        // Malformed, or the very claim kept already (a re-send): no check.
                        let fresh = matches!(&claim, Ok(c) if !self.claims.holds(c));
                        if !fresh {
                            continue;
                        }
                        claims += 1;
                        let by_peer = self.claim_checks_by_peer.get(&peer).copied().unwrap_or(0);
                        if claims <= MAX_CLAIMS_PER_MESSAGE
                            && by_peer < CLAIM_CHECKS_PER_PEER_TICK
                            && self.claim_checks < CLAIM_CHECKS_PER_TICK
                        {
                            self.claim_checks += 1;
                            self.claim_checks_by_peer.insert(peer, by_peer + 1);
                            let _ = self.admit_claim(&tx);
                        }
                    } else {
                        // Full nodes relay their clients' transactions, within a budget of
                        // their own: a host can run many of them, each a CheckTx source.
                        let full = self.peer_roles.contains_key(&peer);
                        let (each, all) = if full {
                            (FULL_NODE_TXS_PER_TICK, FULL_NODES_TXS_PER_TICK)
                        } else {
                            (PEER_TXS_PER_TICK, u32::MAX)
                        };
                        let taken = self.peer_txs.entry(peer).or_default();
                        if *taken < each && self.full_node_txs < all {
                            *taken += 1;
                            self.full_node_txs += u32::from(full);
                            let _ = self.mempool.add(Bytes::from(tx), self.app.as_ref());
                        }
                    }
                }
                Ok(vec![])
            }
            Payload::Status(s) if self.peer_roles.get(&peer) == Some(&PeerRole::Unattested) => {
                self.answer_status(peer, s)
            }
            Payload::Status(s) => {
                // The peer asked for blocks ends its answer with this; if it moved us nowhere,
                // it has nothing for us this tick (no answer left, or no blocks).
                self.requests.answer_ended(peer, height);
                self.requests.reported(peer, s.height);
                let once_a_tick = bulwark_consensus::mutation::active(
                    bulwark_consensus::mutation::Mutant::BlockSyncOnStuckTicksOnly,
                ) && self.requests.asked_any();
                if s.height > height {
                    // A peer is ahead: unless a request at this height waits for another
                    // peer's answer, ask the next one ahead not asked at this height for the
                    // blocks we miss. (The peer asked ends its answer with its `Status`, and
                    // sends that alone when it has no answer left this tick.)
                    if self.awaiting_run(height).is_some() || once_a_tick {
                        return Ok(vec![]);
                    }
                    return Ok(self.ask_next_peer(height, None).into_iter().collect());
                }
                self.answer_status(peer, s)
            }
            // The driver handles introductions; nothing for consensus.
            Payload::Hello(_) => Ok(vec![]),
            Payload::DecidedBlock(d) => self.decided_block(peer, *d),
            Payload::Proposal(raw) => self.proposal(peer, raw),
            Payload::BlockPart(bp) => self.block_part(peer, bp),
            Payload::Vote(raw) => {
                if u64::try_from(raw.height).ok() == Some(self.state.last_block_height)
                    && self.state.last_block_height >= self.state.initial_height
                {
                    self.late_precommit(&raw);
                    return Ok(vec![]);
                }
                let Some((core_vote, signature)) = self.check_vote(&raw, true)? else {
                    return Ok(vec![]);
                };
                self.log(WalRecord {
                    envelope: Some(envelope(&Payload::Vote(raw.clone()))),
                    ..Default::default()
                })?;
                self.relay.keep(Some(peer), Payload::Vote(raw));
                self.drive(Event::Vote(Signed::new(core_vote, signature)))
            }
            Payload::Certificate(c) => self.certificate(c),
            Payload::Evidence(raw) => {
                self.peer_evidence(peer, *raw);
                Ok(vec![])
            }
        }
    }

    /// Evidence a peer found: kept for a block when it verifies against the set and block
    /// time of its height. Nothing is relayed: validators form a full mesh, and each one
    /// that sees both votes makes the evidence itself.
    fn peer_evidence(&mut self, peer: PeerId, raw: pb::types::Evidence) {
        let Ok(e) = Evidence::try_from(raw) else {
            return;
        };
        // Known or no room: nothing to verify.
        if self.evidence.is_full() || self.evidence.knows(&bulwark_evidence::digest(&e)) {
            return;
        }
        let checks = self.peer_evidence_checks.entry(peer).or_default();
        if *checks >= PEER_EVIDENCE_CHECKS_PER_TICK {
            return;
        }
        *checks += 1;
        match self.check_evidence(&e) {
            Ok(()) => {
                self.evidence.add(e);
            }
            Err(err) => tracing::debug!("evidence from a peer refused: {err}"),
        }
    }

    /// The application's CheckTx of `tx` for an RPC client, without admitting it;
    /// `None` once [`RPC_CHECK_TXS_PER_TICK`] calls were answered this tick.
    pub fn check_tx_for_rpc(&mut self, tx: Bytes) -> Option<Result<response::CheckTx, AppError>> {
        if self.rpc_check_txs >= RPC_CHECK_TXS_PER_TICK {
            return None;
        }
        self.rpc_check_txs += 1;
        Some(self.app.check_tx(request::CheckTx {
            tx,
            kind: request::CheckTxKind::New,
        }))
    }

    /// Evidence a client submits (`broadcast_evidence`): checked as a peer's is, kept for a
    /// block and sent to every peer. Returns CometBFT's hash of it. An offence already pending
    /// is answered with the pending piece's hash and not sent again, whatever variant of it
    /// was submitted.
    pub fn submit_evidence(
        &mut self,
        raw: pb::types::Evidence,
    ) -> Result<(bulwark_types::tendermint::Hash, Vec<Output>), EvidenceError> {
        let e = Evidence::try_from(raw).map_err(|err| EvidenceError::Malformed(err.to_string()))?;
        let offence = bulwark_evidence::digest(&e);
        if self.evidence.is_committed(&offence) {
            return Err(EvidenceError::AlreadyCommitted);
        }
        if let Some(pending) = self.evidence.pending_piece(&offence) {
            return Ok((self.cometbft_hash(pending)?, vec![]));
        }
        if self.evidence.is_full() {
            return Err(EvidenceError::PoolFull);
        }
        if self.rpc_evidence_checks >= RPC_EVIDENCE_CHECKS_PER_TICK {
            return Err(EvidenceError::Busy);
        }
        self.rpc_evidence_checks += 1;
        self.check_evidence(&e)?;
        let hash = self.cometbft_hash(&e)?;
        tracing::warn!("evidence submitted over RPC: {}", evidence_summary(&e));
        self.evidence.add(e.clone());
        Ok((
            hash,
            vec![Output::Broadcast(Payload::Evidence(Box::new(e.into())))],
        ))
    }

    /// CometBFT's hash of verified evidence, with the voter's power in the set of its height.
    fn cometbft_hash(
        &self,
        e: &Evidence,
    ) -> Result<bulwark_types::tendermint::Hash, EvidenceError> {
        let Evidence::DuplicateVote(d) = e else {
            return Err(EvidenceError::Unsupported);
        };
        let height = d.vote_a.height.value();
        let at = self
            .state_at(height)
            .ok_or(EvidenceError::NotCommitted(height))?;
        let power = bulwark_evidence::misbehavior(e, &at.last_validator_infos)
            .map(|m| m.validator.power)
            .ok_or(EvidenceError::UnknownValidator {
                index: d.vote_a.validator_index.value(),
                height,
            })?;
        Ok(bulwark_types::hashes::duplicate_vote_hash(d, power.value()))
    }

    /// What evidence of `height` is checked against, from the state stored after that block.
    fn state_at(&self, height: u64) -> Option<ChainState> {
        let bytes = self.blocks.state(height).ok()??;
        ChainState::decode(&bytes).ok()
    }

    /// Checks one piece of evidence against its height's set and block time, and this
    /// chain's age limits.
    fn check_evidence(&self, e: &Evidence) -> Result<(), EvidenceError> {
        let height = bulwark_evidence::height_of(e).ok_or(EvidenceError::Unsupported)?;
        let now = Now {
            height: self.state.last_block_height,
            time: self.state.last_block_time,
        };
        if height > now.height || height < self.state.initial_height {
            return Err(EvidenceError::NotCommitted(height));
        }
        let at = self
            .state_at(height)
            .ok_or(EvidenceError::NotCommitted(height))?;
        if bulwark_consensus::mutation::active(
            bulwark_consensus::mutation::Mutant::UncheckedEvidence,
        ) {
            return Ok(());
        }
        bulwark_evidence::verify(
            e,
            AtHeight {
                chain_id: &self.state.chain_id,
                validators: &at.last_validator_infos,
                block_time: at.last_block_time,
            },
            now,
            &self.state.consensus_params.evidence,
        )
    }

    /// A block of ours from the WAL is proposed again as it is, so it is checked as a peer's
    /// would be first (review M-8): a record that passed the MAC but not this is a bug or a
    /// key that leaked, and the node stops rather than sign it.
    fn check_replayed_own_block(&self, block: &Block, round: u32) -> Result<(), EngineError> {
        let refuse = |why: String| EngineError::Wal(format!("own block of round {round}: {why}"));
        if block.header.proposer_address != self.address {
            return Err(refuse("proposed by another validator".into()));
        }
        self.state
            .validate_block(block)
            .map_err(|e| refuse(e.to_string()))?;
        self.check_block_evidence(block)
            .map_err(|e| refuse(format!("evidence: {e}")))
    }

    /// Checks a block's evidence: the list as a whole, then each piece.
    fn check_block_evidence(&self, block: &Block) -> Result<(), EvidenceError> {
        let list = block.evidence.iter().as_slice();
        bulwark_evidence::check_list(list, &self.evidence, &self.state.consensus_params.evidence)?;
        list.iter().try_for_each(|e| self.check_evidence(e))
    }

    /// Two conflicting votes the core found, as CometBFT votes, kept until their height is
    /// committed (evidence carries that block's time).
    fn conflict_found(&mut self, dv: &bulwark_consensus::DuplicateVote) {
        let as_vote = |sv: &bulwark_consensus::SignedVote| -> Option<vote::Vote> {
            let (timestamp, sig) = unpack_signature(&sv.signature)?;
            let info = self
                .state
                .validator_infos
                .validators()
                .get(sv.message.validator.as_usize())?;
            let mut v = self
                .unsigned_vote(&sv.message, info.address, timestamp)
                .ok()?;
            v.signature = Some(sig);
            Some(v)
        };
        if let (Some(a), Some(b)) = (as_vote(&dv.first), as_vote(&dv.second)) {
            self.evidence.conflict(a, b);
        }
    }

    /// After block `height` is committed: the conflicts of that height become evidence, which
    /// every peer is told of.
    fn evidence_of_committed(&mut self, height: u64) -> Vec<Output> {
        let mut out = Vec::new();
        for (a, b) in self.evidence.conflicts_up_to(height) {
            let Some(at) = self.state_at(a.height.value()) else {
                continue;
            };
            let made = bulwark_evidence::duplicate_vote(
                a,
                b,
                AtHeight {
                    chain_id: &self.state.chain_id,
                    validators: &at.last_validator_infos,
                    block_time: at.last_block_time,
                },
            );
            match made {
                Ok(e) => {
                    if self.evidence.add(e.clone()) {
                        tracing::warn!("validator double-signed: {}", evidence_summary(&e));
                        out.push(Output::Broadcast(Payload::Evidence(Box::new(e.into()))));
                    }
                }
                Err(err) => tracing::debug!("conflicting votes are no evidence: {err}"),
            }
        }
        out
    }

    /// A peer's proposal. Only for the round in progress and the next one (CometBFT keeps only
    /// the current round's): a far-future round would cost a proposer computation per round
    /// stepped (review C3), and signed proposals for future rounds would crowd out the block
    /// being decided (H1). Past rounds stay admissible (a decision or a POL can need them).
    fn proposal(
        &mut self,
        peer: PeerId,
        raw: pb::types::Proposal,
    ) -> Result<Vec<Output>, EngineError> {
        let height = self.state.next_height();
        if u64::try_from(raw.height).ok() != Some(height) {
            return Ok(vec![]);
        }
        let current = self.core.round().map_or(0, |r| r.0);
        let Ok(round) = u32::try_from(raw.round) else {
            return Ok(vec![]);
        };
        if round > current.saturating_add(1)
            && !bulwark_consensus::mutation::active(
                bulwark_consensus::mutation::Mutant::AnyRoundProposal,
            )
        {
            return Ok(vec![]);
        }
        let Ok(p) = proposal::Proposal::try_from(raw.clone()) else {
            return Ok(vec![]);
        };
        let (Some(block_id), Some(timestamp), Some(signature)) =
            (p.block_id, p.timestamp, p.signature.clone())
        else {
            return Ok(vec![]);
        };
        // A part set larger than the largest block allowed is refused before any part comes.
        let max_parts = self
            .state
            .consensus_params
            .block
            .max_bytes
            .div_ceil(bulwark_types::parts::BLOCK_PART_SIZE as u64);
        if u64::from(block_id.part_set_header.total) > max_parts {
            return Ok(vec![]);
        }
        let round = Round(round);
        let Some(proposer) = self.core.proposer(round) else {
            return Ok(vec![]);
        };
        let core = CoreProposal {
            height: CHeight(height),
            round,
            value: value_id(&block_id),
            pol_round: p.pol_round.map(|r| Round(r.value())),
            proposer,
        };
        // The core's own bounds (one proposal per value, a few per round, rounds per
        // validator) first: a re-delivered proposal costs no signature check and no WAL record.
        // Proposals still waiting for their block count too: the core sees them only once
        // the block has arrived.
        let waiting_in_round = self
            .waiting
            .iter()
            .filter(|(w, _)| w.round.value() == round.0)
            .count();
        if !self.core.admits_proposal(&core)
            || waiting_in_round >= bulwark_consensus::MAX_PROPOSALS_PER_ROUND
            || self
                .waiting
                .iter()
                .any(|(w, _)| w.block_id == Some(block_id))
        {
            return Ok(vec![]);
        }
        let Some(info) = self
            .state
            .validator_infos
            .validators()
            .get(proposer.as_usize())
        else {
            return Ok(vec![]);
        };
        if verify_proposal(&info.pub_key, &p, &self.state.chain_id).is_err() {
            return Ok(vec![]);
        }
        self.log(WalRecord {
            envelope: Some(envelope(&Payload::Proposal(raw.clone()))),
            ..Default::default()
        })?;
        self.relay.keep(Some(peer), Payload::Proposal(raw));
        let signed = Signed::new(core, pack_signature(timestamp, &signature));
        if let Some((_, _, validity)) = self.candidates.get(&core.value) {
            let validity = *validity;
            return self.drive(Event::Proposal {
                proposal: signed,
                validity,
            });
        }
        if let Some(block) = self.own_blocks.get(&round.0).cloned() {
            // After a restart: our own proposal, whose block is in the WAL.
            let (id, parts) = crate::chain::block_id(&block)?;
            if id == block_id {
                self.encodings.insert(core.value, parts);
                self.candidates
                    .insert(core.value, (block, id, Validity::Valid));
                return self.drive(Event::Proposal {
                    proposal: signed,
                    validity: Validity::Valid,
                });
            }
        }
        if self
            .assembler
            .announce(block_id.part_set_header, round.0, current)
            .is_ok()
        {
            self.waiting.push((p, signed));
        }
        Ok(vec![])
    }

    /// A part of a proposed block: checked against the part set of each proposal of its round
    /// (an equivocating proposer may have announced several), logged only when new.
    fn block_part(
        &mut self,
        peer: PeerId,
        bp: wire::BlockPart,
    ) -> Result<Vec<Output>, EngineError> {
        if bp.height != self.state.next_height() {
            return Ok(vec![]);
        }
        let Some(part) = bp.part.clone() else {
            return Ok(vec![]);
        };
        let headers: Vec<_> = self
            .waiting
            .iter()
            .filter(|(p, _)| p.round.value() == bp.round)
            .filter_map(|(p, _)| p.block_id.map(|b| b.part_set_header))
            .collect();
        for header in headers {
            match self.assembler.add(&header, &part) {
                Ok(PartAdded::Duplicate) => return Ok(vec![]),
                Ok(added) => {
                    // Logged and relayed in the proposer's form: nothing the Merkle check does
                    // not read (the proof's leaf hash, total, index) travels on, so a peer
                    // cannot pad a part it forwards.
                    let mut part = part;
                    part.proof = part.proof.map(|proof| pb::crypto::Proof {
                        total: i64::from(header.total),
                        index: i64::from(part.index),
                        leaf_hash: Vec::new(),
                        aunts: proof.aunts,
                    });
                    let bp = wire::BlockPart {
                        part: Some(part),
                        ..bp
                    };
                    self.log(WalRecord {
                        envelope: Some(envelope(&Payload::BlockPart(bp.clone()))),
                        ..Default::default()
                    })?;
                    self.relay.keep(Some(peer), Payload::BlockPart(bp));
                    return match added {
                        PartAdded::Complete(block) => self.block_arrived(*block),
                        _ => Ok(vec![]),
                    };
                }
                Err(_) => {}
            }
        }
        Ok(vec![])
    }

    /// A precommit of the last height, arriving while this node waits out `timeout_commit`
    /// (or later): counted into the commit the next block will carry, so a slower validator
    /// is not marked absent (review M1). Only precommits of the commit's round, for its block
    /// or nil, that verify.
    fn late_precommit(&mut self, raw: &pb::types::Vote) {
        let Some(commit) = self.last_commit.as_mut() else {
            return;
        };
        if raw.r#type != pb::types::SignedMsgType::Precommit as i32
            || i64::from(commit.round.value()) != i64::from(raw.round)
        {
            return;
        }
        let Ok(v) = vote::Vote::try_from(raw.clone()) else {
            return;
        };
        let index = v.validator_index.value() as usize;
        let Some(info) = self.state.last_validator_infos.validators().get(index) else {
            return;
        };
        let Some(slot) = commit.signatures.get_mut(index) else {
            return;
        };
        if !matches!(slot, block::CommitSig::BlockIdFlagAbsent)
            || info.address != v.validator_address
            || (v.block_id.is_some() && v.block_id != Some(commit.block_id))
            || verify_vote(&info.pub_key, &v, &self.state.chain_id).is_err()
        {
            return;
        }
        let (Some(timestamp), Some(signature)) = (v.timestamp, v.signature.clone()) else {
            return;
        };
        // Its extension too, as for a vote of the height in progress (signature only: the
        // application verifies extensions of the height it works on).
        let extends =
            extensions_enabled(&self.state.consensus_params, self.state.last_block_height)
                && is_non_nil_precommit(&v);
        let max = max_extension_bytes(self.state.last_validator_infos.validators().len());
        if !well_formed(extends, &v.extension, v.extension_signature.is_some(), max) {
            return;
        }
        if let (true, Some(kept)) = (extends, self.last_extensions.get_mut(index)) {
            if verify_vote_extension(&info.pub_key, &v, &self.state.chain_id).is_err() {
                return;
            }
            let signature = v
                .extension_signature
                .as_ref()
                .map(|s| s.as_bytes().to_vec());
            *kept = (v.extension.clone(), signature.unwrap_or_default());
        }
        *slot = match v.block_id {
            Some(_) => block::CommitSig::BlockIdFlagCommit {
                validator_address: v.validator_address,
                timestamp,
                signature: Some(signature),
            },
            None => block::CommitSig::BlockIdFlagNil {
                validator_address: v.validator_address,
                timestamp,
                signature: Some(signature),
            },
        };
    }

    /// A relayed quorum of votes. Everything that costs nothing is checked before any
    /// signature (review M3): at most one vote per validator of the set, all of one height,
    /// round, kind and block, more than two thirds of the power, and something the core does
    /// not hold yet. Only then is each signature verified.
    fn certificate(&mut self, c: wire::Certificate) -> Result<Vec<Output>, EngineError> {
        let set = self.state.validator_infos.validators();
        let Some(first) = c.votes.first() else {
            return Ok(vec![]);
        };
        if c.votes.len() > set.len() {
            return Ok(vec![]);
        }
        let mut seen = vec![false; set.len()];
        let mut power: u64 = 0;
        for v in &c.votes {
            if v.height != first.height
                || v.round != first.round
                || v.r#type != first.r#type
                || v.block_id != first.block_id
            {
                return Ok(vec![]);
            }
            let Some(slot) = usize::try_from(v.validator_index)
                .ok()
                .and_then(|i| seen.get_mut(i))
            else {
                return Ok(vec![]);
            };
            if *slot {
                return Ok(vec![]);
            }
            *slot = true;
            power += set
                .get(v.validator_index as usize)
                .map_or(0, |info| info.power());
        }
        let total = self.state.validator_infos.total_voting_power().value();
        if 3 * u128::from(power) <= 2 * u128::from(total) {
            return Ok(vec![]);
        }
        let (Ok(round), Ok(block_id)) = (
            u32::try_from(first.round),
            first.block_id.clone().map(block::Id::try_from).transpose(),
        ) else {
            return Ok(vec![]);
        };
        let kind = if first.r#type == pb::types::SignedMsgType::Prevote as i32 {
            VoteKind::Prevote
        } else {
            VoteKind::Precommit
        };
        let value = block_id
            .filter(|id| *id != block::Id::default())
            .map(|id| value_id(&id));
        if !self.core.admits_certificate(kind, Round(round), value) {
            return Ok(vec![]);
        }
        // Every extension where it must be before any signature, every signature before the
        // application is asked about any extension.
        let extends = kind == VoteKind::Precommit
            && value.is_some()
            && extensions_enabled(&self.state.consensus_params, self.state.next_height());
        let max = max_extension_bytes(self.state.validator_infos.validators().len());
        let signed = |v: &pb::types::Vote| !v.extension_signature.is_empty();
        if !c
            .votes
            .iter()
            .all(|v| well_formed(extends, &v.extension, signed(v), max))
        {
            return Ok(vec![]);
        }
        let mut checked = Vec::new();
        for raw in &c.votes {
            match self.verified_vote(raw, false) {
                Some(v) if !v.3 || self.extension_signed(&v.0, &v.2) => checked.push(v),
                _ => return Ok(vec![]),
            }
        }
        let mut votes = Vec::new();
        for (v, core, _, extends) in checked {
            let Some((v, s)) = self.admit_verified(v, core, extends)? else {
                return Ok(vec![]);
            };
            votes.push(Signed::new(v, s));
        }
        let Some(first) = votes.first().map(|v| v.message) else {
            return Ok(vec![]);
        };
        self.log(WalRecord {
            envelope: Some(envelope(&Payload::Certificate(c))),
            ..Default::default()
        })?;
        self.drive(Event::Certificate(CoreCertificate {
            kind: first.kind,
            height: first.height,
            round: first.round,
            value: first.value,
            votes,
        }))
    }

    /// A verified vote of the current height, as the core's vote and packed signature. With
    /// `admit`, a vote the core would not store (a duplicate, a round beyond its bounds) is
    /// dropped before its signature is checked.
    fn check_vote(
        &mut self,
        raw: &pb::types::Vote,
        admit: bool,
    ) -> Result<Option<(CoreVote, bulwark_consensus::Signature)>, EngineError> {
        let Some((v, core, key, extends)) = self.verified_vote(raw, admit) else {
            return Ok(None);
        };
        if extends && !self.extension_signed(&v, &key) {
            return Ok(None);
        }
        self.admit_verified(v, core, extends)
    }

    /// A vote whose signatures verified, once the application accepts its extension (if it
    /// carries one), as the core's vote and packed signature.
    fn admit_verified(
        &mut self,
        v: vote::Vote,
        core: CoreVote,
        extends: bool,
    ) -> Result<Option<(CoreVote, bulwark_consensus::Signature)>, EngineError> {
        if extends && !self.extension_accepted(&v)? {
            return Ok(None);
        }
        if let (Some(value), Some(id)) = (core.value, v.block_id) {
            let added = self.vote_blocks_by.entry(core.validator.0).or_default();
            if self.vote_blocks.len() < MAX_VOTE_BLOCKS
                && *added < MAX_VOTE_BLOCKS_PER_VALIDATOR
                && !self.vote_blocks.contains_key(&value)
            {
                *added += 1;
                self.vote_blocks.insert(value, id);
            }
        }
        Ok(v.timestamp
            .zip(v.signature.as_ref())
            .map(|(t, s)| (core, pack_signature(t, s))))
    }

    /// A vote of the current height whose signature verifies, as the core's vote, with its
    /// validator's key and whether it must carry an extension (it does).
    fn verified_vote(
        &self,
        raw: &pb::types::Vote,
        admit: bool,
    ) -> Option<(
        vote::Vote,
        CoreVote,
        bulwark_types::tendermint::PublicKey,
        bool,
    )> {
        if u64::try_from(raw.height).ok()? != self.state.next_height() {
            return None;
        }
        let v = vote::Vote::try_from(raw.clone()).ok()?;
        let extends = extensions_enabled(&self.state.consensus_params, self.state.next_height())
            && is_non_nil_precommit(&v);
        let max = max_extension_bytes(self.state.validator_infos.validators().len());
        if !well_formed(extends, &v.extension, v.extension_signature.is_some(), max) {
            return None;
        }
        let index = v.validator_index.value();
        let info = self
            .state
            .validator_infos
            .validators()
            .get(index as usize)?;
        if info.address != v.validator_address {
            return None;
        }
        let kind = match v.vote_type {
            vote::Type::Prevote => VoteKind::Prevote,
            vote::Type::Precommit => VoteKind::Precommit,
        };
        let core = CoreVote {
            kind,
            height: CHeight(v.height.value()),
            round: Round(v.round.value()),
            value: v.block_id.as_ref().map(value_id),
            validator: ValidatorIndex(index),
        };
        if admit && !self.core.admits_vote(&core) {
            return None;
        }
        verify_vote(&info.pub_key, &v, &self.state.chain_id).ok()?;
        Some((v, core, info.pub_key, extends))
    }

    /// Whether the extension of `v`, a precommit for a block, is one kept already or signed
    /// by `key`.
    fn extension_signed(&self, v: &vote::Vote, key: &bulwark_types::tendermint::PublicKey) -> bool {
        let (round, index) = (v.round.value(), v.validator_index.value());
        let (Some(signature), Some(id)) = (v.extension_signature.as_ref(), v.block_id) else {
            return false;
        };
        let held = self.extensions.get(round, index, id.hash);
        held.is_some_and(|(e, s)| *e == v.extension && s[..] == *signature.as_bytes())
            || verify_vote_extension(key, v, &self.state.chain_id).is_ok()
    }

    /// Whether the application accepts the (signed) extension of `v`, a precommit for a
    /// block; an accepted one is kept. Our own is not asked about, nor one kept already; an
    /// error (UNKNOWN included, as CometBFT panics on it) is the application's failure.
    fn extension_accepted(&mut self, v: &vote::Vote) -> Result<bool, EngineError> {
        let (round, index) = (v.round.value(), v.validator_index.value());
        let (Some(signature), Some(id)) = (v.extension_signature.as_ref(), v.block_id) else {
            return Ok(false);
        };
        let kept = (v.extension.clone(), signature.as_bytes().to_vec());
        if self.extensions.get(round, index, id.hash) == Some(&kept) {
            return Ok(true);
        }
        let request = request::VerifyVoteExtension {
            hash: id.hash,
            validator_address: v.validator_address,
            height: v.height,
            vote_extension: v.extension.clone().into(),
        };
        if v.validator_address != self.address
            && !tally(
                &mut self.verdicts.extensions,
                bulwark_app::extension_accepted(self.app.as_mut(), request)?,
            )
        {
            return Ok(false);
        }
        self.extensions.keep(round, index, id.hash, kept);
        Ok(true)
    }

    fn block_arrived(&mut self, block: Block) -> Result<Vec<Output>, EngineError> {
        let (id, parts) = block_id(&block)?;
        let checked = self
            .state
            .validate_encoded_block(&block, parts.byte_len())
            .map_err(|e| e.to_string())
            .and_then(|()| {
                self.check_block_evidence(&block)
                    .map_err(|e| format!("evidence: {e}"))
            });
        if let Err(e) = &checked {
            tracing::warn!(height = %block.header.height, proposer = %block.header.proposer_address, "invalid proposed block: {e}");
        }
        let valid = checked.is_ok() && {
            let request = process_request(
                &block,
                &self.state.last_validator_infos,
                misbehavior_of(&block, &self.blocks),
            );
            let answer = self.app.process_proposal(request)?;
            tally(
                &mut self.verdicts.proposals,
                answer == response::ProcessProposal::Accept,
            )
        };
        let validity = if valid {
            Validity::Valid
        } else {
            Validity::Invalid
        };
        let value = value_id(&id);
        if validity == Validity::Valid {
            self.encodings.insert(value, parts);
        }
        self.candidates.insert(value, (block, id, validity));
        let ready: Vec<Signed<CoreProposal>> = self
            .waiting
            .iter()
            .filter(|(p, _)| p.block_id == Some(id))
            .map(|(_, s)| s.clone())
            .collect();
        self.waiting.retain(|(p, _)| p.block_id != Some(id));
        let mut out = Vec::new();
        for proposal in ready {
            out.extend(self.drive(Event::Proposal { proposal, validity })?);
        }
        Ok(out)
    }

    fn answer_status(&mut self, peer: PeerId, s: wire::Status) -> Result<Vec<Output>, EngineError> {
        let height = self.state.next_height();
        let answers = self.status_answers.entry(peer).or_default();
        if s.height > height {
            return Ok(vec![]);
        }
        if *answers >= STATUS_ANSWERS_PER_TICK {
            // A laggard told where we are asks another peer rather than wait for a tick
            // (and does not shun us for silence); told a bounded number of times a tick.
            let tell = *answers < STATUS_ANSWERS_PER_TICK + BUSY_ANSWERS_PER_TICK;
            *answers = answers.saturating_add(1);
            return Ok(if s.height < height && tell {
                vec![Output::Send(
                    peer,
                    Payload::Status(wire::Status {
                        height,
                        round: self.round(),
                    }),
                )]
            } else {
                vec![]
            });
        }
        *answers += 1;
        if s.height < height {
            // A run of decided blocks, so a laggard catches up faster than the chain grows.
            let mut out = Vec::new();
            let mut bytes = 0usize;
            for h in s.height..height.min(s.height.saturating_add(CATCH_UP_BLOCKS)) {
                if bytes >= CATCH_UP_BYTES {
                    break;
                }
                let (Some(block), Some(commit)) = (self.blocks.block(h)?, self.blocks.commit(h)?)
                else {
                    break;
                };
                bytes += block.len() + commit.len();
                let block = pb::types::Block::decode(block.as_slice()).ok();
                let commit = pb::types::Commit::decode(commit.as_slice()).ok();
                let extensions = self.blocks.extensions(h)?;
                let extensions = extensions.and_then(|e| wire::VoteExtensions::decode(&e[..]).ok());
                out.push(Output::Send(
                    peer,
                    Payload::DecidedBlock(Box::new(wire::DecidedBlock {
                        block,
                        commit,
                        extensions,
                    })),
                ));
            }
            // Then where we are: the laggard, having applied the run, asks for the next one
            // at once (not a tick later), and knows how far the network is.
            if bulwark_consensus::mutation::active(
                bulwark_consensus::mutation::Mutant::BlockSyncOnStuckTicksOnly,
            ) {
                return Ok(out);
            }
            out.push(Output::Send(
                peer,
                Payload::Status(wire::Status {
                    height,
                    round: self.round(),
                }),
            ));
            return Ok(out);
        }
        let certificates = self
            .core
            .certificates()
            .iter()
            .map(|c| wire::Certificate {
                votes: c
                    .votes
                    .iter()
                    .filter_map(|v| self.vote_to_wire(&v.message, &v.signature))
                    .collect(),
            })
            .collect();
        Ok(self
            .relay
            .answer(peer, certificates)
            .into_iter()
            .map(|p| Output::Send(peer, p))
            .collect())
    }

    fn vote_to_wire(
        &self,
        v: &CoreVote,
        signature: &bulwark_consensus::Signature,
    ) -> Option<pb::types::Vote> {
        let (timestamp, sig) = unpack_signature(signature)?;
        let info = self
            .state
            .validator_infos
            .validators()
            .get(v.validator.as_usize())?;
        let mut tv = self.unsigned_vote(v, info.address, timestamp).ok()?;
        tv.signature = Some(sig);
        let hash = tv.block_id.map(|id| id.hash).unwrap_or_default();
        if let Some((extension, signature)) = self.extensions.get(v.round.0, v.validator.0, hash) {
            if is_non_nil_precommit(&tv) {
                tv.extension.clone_from(extension);
                tv.extension_signature = Signature::new(signature.clone()).ok().flatten();
            }
        }
        Some(tv.into())
    }

    /// Block sync: a peer's decided block for our height, accepted when its commit verifies.
    fn decided_block(
        &mut self,
        peer: PeerId,
        d: wire::DecidedBlock,
    ) -> Result<Vec<Output>, EngineError> {
        let extensions = d.extensions.map(wire::VoteExtensions::into_pairs);
        let (Some(raw_block), Some(raw_commit)) = (d.block, d.commit) else {
            return Ok(vec![]);
        };
        let (Ok(block), Ok(commit)) = (Block::try_from(raw_block), Commit::try_from(raw_commit))
        else {
            return Ok(vec![]);
        };
        let height = block.header.height.value();
        if height != self.state.next_height() || self.refused_extensions.contains(&peer) {
            return Ok(vec![]);
        }
        let (id, parts) = block_id(&block)?;
        // The commit first: a forged block's commit fails on its block id, its claimed power or
        // its first forged signature, before the block's own last commit (public, so copyable
        // into any forgery) costs a signature per validator or its evidence any. Then the
        // commit's extensions, whose signatures only this thread checks: a peer that sent
        // wrong ones is not heard again on block sync until the next tick.
        let (chain_id, set) = (&self.state.chain_id, &self.state.validator_infos);
        if crate::chain::verify_commit(chain_id, set, height, &id, &commit).is_err() {
            return Ok(vec![]);
        }
        let extensions = match (
            extensions_enabled(&self.state.consensus_params, height),
            extensions,
        ) {
            (false, None) => Ok(Vec::new()),
            (true, Some(e)) => verify_commit_extensions(chain_id, set, height, &commit, e),
            _ => Err(BlockError::Extensions("missing, or not enabled".into())),
        };
        let Ok(extensions) = extensions else {
            self.refused_extensions.insert(peer);
            return Ok(vec![]);
        };
        if self
            .state
            .validate_encoded_block(&block, parts.byte_len())
            .is_err()
            || self.check_block_evidence(&block).is_err()
        {
            return Ok(vec![]);
        }
        self.commit_block(block, id, parts, commit, extensions)
    }

    /// Runs the core on `event` and carries out its actions.
    fn drive(&mut self, event: Event) -> Result<Vec<Output>, EngineError> {
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            for action in self.core.handle(event) {
                match action {
                    Action::ScheduleTimeout { timeout, after } => {
                        out.push(Output::Schedule { timeout, after })
                    }
                    Action::GetValue { height, round } => {
                        let (block, id, parts) = match self.own_blocks.get(&round.0) {
                            Some(b) => {
                                let (id, parts) = block_id(b)?;
                                (b.clone(), id, parts)
                            }
                            None => self.build_block(round.0)?,
                        };
                        let value = value_id(&id);
                        self.encodings.insert(value, parts);
                        self.candidates.insert(value, (block, id, Validity::Valid));
                        queue.push_back(Event::ProposeValue {
                            height,
                            round,
                            value,
                        });
                    }
                    Action::Propose(p) => out.extend(self.propose(p)?),
                    Action::Vote(v) => {
                        if let Some((payload, signed)) = self.sign_vote(v)? {
                            out.push(self.publish_own_vote(payload)?);
                            queue.push_back(Event::Vote(signed));
                        }
                    }
                    Action::Decide(d) => {
                        // The height ends here: its candidates are cleared with it.
                        let (block, id, _) = self.candidates.remove(&d.value).ok_or_else(|| {
                            EngineError::Wal("decided a block we do not have".into())
                        })?;
                        // Until the next height starts, `block_id_of` still names it.
                        self.vote_blocks.insert(d.value, id);
                        let parts = match self.encodings.remove(&d.value) {
                            Some(parts) => parts,
                            None => block_id(&block)?.1,
                        };
                        let commit = commit_from_decision(&d, id, &self.state.validator_infos)?;
                        let params = &self.state.consensus_params;
                        let extensions = match extensions_enabled(params, d.height.0) {
                            true => self.extensions.of_commit(&commit),
                            false => Vec::new(),
                        };
                        out.extend(self.commit_block(block, id, parts, commit, extensions)?);
                        return Ok(out);
                    }
                    Action::Evidence(dv) => self.conflict_found(&dv),
                }
            }
        }
        Ok(out)
    }

    fn build_block(&mut self, round: u32) -> Result<(Block, block::Id, PartSet), EngineError> {
        let height = self.state.next_height();
        let time = self.state.next_block_time(self.last_commit.as_ref());
        // Evidence comes out of the transactions' room, so the block stays within max_bytes
        // whatever the parameters say of evidence.
        let room = self.state.max_block_tx_bytes(i64::MAX);
        let evidence = self
            .evidence
            .reap(self.state.consensus_params.evidence.max_bytes.min(room));
        // Instance claims go first, out of the same room; the application never sees them.
        let mut claims = self
            .claims
            .reap(height, &self.state.claims, &self.state.validator_infos);
        if bulwark_consensus::mutation::active(bulwark_consensus::mutation::Mutant::ClaimsLeftOut) {
            claims.clear();
        }
        let budget = self
            .state
            .max_block_tx_bytes(self.config.max_block_tx_bytes)
            .saturating_sub(bulwark_evidence::encoded_len(&evidence) as i64)
            .saturating_sub(claims.iter().map(|c| c.len() as i64).sum())
            .max(0);
        let txs = self.app.prepare_proposal(request::PrepareProposal {
            max_tx_bytes: budget,
            txs: self.mempool.reap(budget),
            local_last_commit: Some(bulwark_chain::extended_commit_info(
                self.last_commit.as_ref(),
                &self.state.last_validator_infos,
                &self.last_extensions,
            )),
            misbehavior: evidence
                .iter()
                .filter_map(|e| {
                    let at = self.state_at(bulwark_evidence::height_of(e)?)?;
                    bulwark_evidence::misbehavior(e, &at.last_validator_infos)
                })
                .collect(),
            height: block::Height::try_from(height).map_err(|e| EngineError::Wal(e.to_string()))?,
            time,
            next_validators_hash: self.state.next_validator_infos.hash(),
            proposer_address: self.address,
        })?;
        // An application may return more than it was given room for: never beyond the budget.
        let mut room = budget;
        let app_txs = txs.txs.iter().filter(|t| Claim::from_tx(t).is_none());
        let txs: Vec<Vec<u8>> = claims
            .into_iter()
            .chain(
                app_txs
                    .take_while(|t| {
                        room -= t.len() as i64;
                        room >= 0
                    })
                    .map(|t| t.to_vec()),
            )
            .collect();
        let (block, id, parts) = self.state.make_block_with_evidence(
            txs,
            evidence,
            self.last_commit.clone(),
            self.address,
            time,
        )?;
        self.log_own(WalRecord {
            own_block: Some(block.clone().into()),
            own_round: Some(round),
            ..Default::default()
        })?;
        self.own_blocks.insert(round, block.clone());
        Ok((block, id, parts))
    }

    fn propose(&mut self, p: CoreProposal) -> Result<Vec<Output>, EngineError> {
        let (block, id, _) = self
            .candidates
            .get(&p.value)
            .ok_or_else(|| EngineError::Wal("proposing a block we do not have".into()))?;
        let parts = match self.encodings.get(&p.value) {
            Some(set) => wire_parts(set),
            // Every valid candidate keeps its encoding; made again should one not.
            None => {
                block_to_parts(block)
                    .map_err(|e| BlockError::Encoding(e.to_string()))?
                    .1
            }
        };
        let (height, block_time, id) = (block.header.height, block.header.time, *id);
        let mut tp = proposal::Proposal {
            msg_type: proposal::Type::Proposal,
            height,
            round: block::Round::try_from(p.round.0)
                .map_err(|e| EngineError::Wal(e.to_string()))?,
            pol_round: p
                .pol_round
                .map(|r| block::Round::try_from(r.0))
                .transpose()
                .map_err(|e| EngineError::Wal(e.to_string()))?,
            block_id: Some(id),
            timestamp: Some(self.config.clock.now().max(block_time)),
            signature: None,
        };
        if !self.may_sign() {
            return Ok(vec![]);
        }
        let signed = self.privval.sign_proposal(&mut tp, &self.state.chain_id);
        if !self.privval_signed(signed, "proposal")? {
            return Ok(vec![]);
        }
        let raw: pb::types::Proposal = tp.clone().into();
        let payload = Payload::Proposal(raw);
        let mut out = vec![Output::Broadcast(payload.clone())];
        // A re-proposal carries its proof of lock: the polka of its POL round, as a
        // certificate, so a validator that counted an equivocator's other vote can still
        // accept it (line 28).
        if let Some(vr) = p.pol_round {
            if let Some(c) =
                self.core.certificates().into_iter().find(|c| {
                    c.kind == VoteKind::Prevote && c.round == vr && c.value == Some(p.value)
                })
            {
                let votes = c
                    .votes
                    .iter()
                    .filter_map(|v| self.vote_to_wire(&v.message, &v.signature))
                    .collect();
                out.push(Output::Broadcast(Payload::Certificate(wire::Certificate {
                    votes,
                })));
            }
        }
        self.relay.keep(None, payload.clone());
        for part in parts {
            let bp = Payload::BlockPart(wire::BlockPart {
                height: height.value(),
                round: p.round.0,
                part: Some(part),
            });
            self.relay.keep(None, bp.clone());
            out.push(Output::Broadcast(bp));
        }
        self.log_own(WalRecord {
            envelope: Some(envelope(&payload)),
            ..Default::default()
        })?;
        let (Some(timestamp), Some(sig)) = (tp.timestamp, tp.signature.as_ref()) else {
            return Ok(out);
        };
        out.extend(self.drive(Event::Proposal {
            proposal: Signed::new(p, pack_signature(timestamp, sig)),
            validity: Validity::Valid,
        })?);
        Ok(out)
    }

    /// A vote's timestamp (CometBFT's `voteTime`): now, but at least a millisecond after the
    /// block voted for (for nil: after the newest valid block of this height, or the last
    /// block), so the median of a commit's times, the next block's time, always lies after
    /// the block it commits.
    fn vote_time(&self, value: Option<ValueId>) -> Time {
        let last = self.state.last_block_time;
        let block_time = match value {
            Some(v) => self.candidates.get(&v).map(|(b, _, _)| b.header.time),
            None => self
                .candidates
                .values()
                .filter(|(_, _, validity)| *validity == Validity::Valid)
                .map(|(b, _, _)| b.header.time)
                .max(),
        };
        let floor = block_time.map_or(last, |t| t.max(last));
        self.config
            .clock
            .now()
            .max(floor.checked_add(Duration::from_millis(1)).unwrap_or(floor))
    }

    /// Whether this instance may sign at the height in progress (`bulwark_instance`); says so
    /// when that changes.
    fn may_sign(&mut self) -> bool {
        let validator: [u8; 20] = self.address.as_bytes().try_into().unwrap_or_default();
        let planted = bulwark_consensus::mutation::active(
            bulwark_consensus::mutation::Mutant::SignWithoutClaim,
        );
        if self.replaying {
            let now = self.signer.authorization(&self.state.claims, &validator);
            return planted || now.may_sign();
        }
        let (may, line) = self.signer.may_sign(&self.state.claims, &validator);
        match line {
            Some(line) if may => tracing::info!("{line}"),
            Some(line) => tracing::warn!("{line}"),
            None => {}
        }
        may || planted
    }

    /// What this instance's key claim needs after a commit (or at start): a new claim, sent
    /// to every peer and kept for our own blocks, or the pending one again.
    fn manage_claim(&mut self) -> Result<Vec<Output>, EngineError> {
        let validator: [u8; 20] = self.address.as_bytes().try_into().unwrap_or_default();
        let next = self.state.next_height();
        self.claims.prune(next, &self.state.claims);
        // Far behind (block sync), a claim for our own next height would name one the others
        // passed long ago and expire before it reached a block: claim once nearly caught up
        // with the peers' median height (one peer lying about its height moves it little).
        // A claim never names a height above our own: an instance that dies with a claim for
        // a future height could have it replayed after a newer instance's claim.
        if self.network_height() > next.saturating_add(bulwark_instance::CLAIM_TTL / 2) {
            return Ok(vec![]);
        }
        if !self
            .state
            .validator_infos
            .validators()
            .iter()
            .any(|v| v.address == self.address)
        {
            return Ok(vec![]);
        }
        let claim = match self
            .signer
            .after_commit(&self.state.claims, &validator, next)
        {
            ClaimAction::None => return Ok(vec![]),
            // Also while block sync runs: a claim sent before any connection was up reached
            // nobody, and an instance that trails by a run of blocks (a slow VM) would never
            // send it again.
            ClaimAction::Resend(claim) => claim,
            ClaimAction::Claim(not_before) => {
                let instance = *self.signer.instance();
                let chain_id = self.state.chain_id.as_str();
                let bytes = Claim::signed_bytes(chain_id, &validator, &instance, not_before);
                let signature = self
                    .privval
                    .sign_domain_separated(&bytes)
                    .map_err(|e| EngineError::Wal(e.to_string()))?;
                let claim = Claim {
                    validator,
                    instance,
                    not_before,
                    signature,
                };
                self.signer.claimed(claim.clone());
                claim
            }
        };
        let _ = self.admit_claim(&claim.to_tx());
        Ok(vec![Output::Broadcast(Payload::Txs(wire::Txs {
            txs: vec![claim.to_tx()],
        }))])
    }

    /// The peer whose run of decided blocks this node, at `height`, still waits for.
    fn awaiting_run(&self, height: u64) -> Option<PeerId> {
        self.requests.awaiting_run(height)
    }

    /// Asks the next peer ahead (or else `fallback`, if neither shunned nor asked at
    /// `height`) for the decided blocks from `height` on.
    fn ask_next_peer(&mut self, height: u64, fallback: Option<PeerId>) -> Option<Output> {
        let roles = &self.peer_roles;
        let peer = self
            .requests
            .ask(height, fallback, |p| roles.contains_key(p))?;
        Some(Output::Send(
            peer,
            Payload::Status(wire::Status {
                height,
                round: self.round(),
            }),
        ))
    }

    /// The lower median of the validator peers' last reported heights (of all peers' when
    /// none is a validator; 0 with no peer): how far the network is.
    pub fn network_height(&self) -> u64 {
        self.requests
            .network_height(|p| self.peer_roles.contains_key(p))
    }

    /// `None` if `tx` is no instance claim; else whether it was valid (then kept in the claim
    /// pool). A claim never enters the mempool either way.
    fn admit_claim(&mut self, tx: &[u8]) -> Option<Result<bool, ClaimError>> {
        let claim = Claim::from_tx(tx)?;
        let (next, state) = (self.state.next_height(), &self.state);
        let chain_id = state.chain_id.as_str();
        Some(claim.and_then(|c| {
            self.claims
                .insert(c, chain_id, &state.validator_infos, next, &state.claims)
        }))
    }

    /// Whether the privval signed. Storage failing is fatal; a refusal is not: replaying, the
    /// message was signed before the crash and its record follows; live, the privval did its
    /// job (refusing can only cost liveness), so say so loudly and carry on without it.
    fn privval_signed(
        &self,
        result: Result<(), PrivvalError>,
        what: &str,
    ) -> Result<bool, EngineError> {
        match result {
            Ok(()) => Ok(true),
            Err(PrivvalError::Store(e)) => Err(EngineError::Store(e)),
            Err(e) => {
                if !self.replaying {
                    tracing::error!("privval refused a {what}: {e}");
                }
                Ok(false)
            }
        }
    }

    /// The CometBFT vote for a core vote of this height, unsigned.
    fn unsigned_vote(
        &self,
        v: &CoreVote,
        validator_address: account::Id,
        timestamp: Time,
    ) -> Result<vote::Vote, EngineError> {
        let block_id = match v.value {
            None => None,
            Some(value) => Some(
                self.candidates
                    .get(&value)
                    .map(|c| c.1)
                    .or_else(|| self.vote_blocks.get(&value).copied())
                    .ok_or_else(|| EngineError::Wal("a vote for a block we do not have".into()))?,
            ),
        };
        let bad = |e: bulwark_types::tendermint::Error| EngineError::Wal(e.to_string());
        Ok(vote::Vote {
            vote_type: if v.kind == VoteKind::Prevote {
                vote::Type::Prevote
            } else {
                vote::Type::Precommit
            },
            height: block::Height::try_from(v.height.0).map_err(bad)?,
            round: block::Round::try_from(v.round.0).map_err(bad)?,
            block_id,
            timestamp: Some(timestamp),
            validator_address,
            validator_index: vote::ValidatorIndex::try_from(v.validator.0).map_err(bad)?,
            signature: None,
            extension: vec![],
            extension_signature: None,
        })
    }

    /// Our signed vote: kept for peers that ask, written to the WAL, and broadcast.
    fn publish_own_vote(&mut self, payload: Payload) -> Result<Output, EngineError> {
        self.relay.keep(None, payload.clone());
        self.log_own(WalRecord {
            envelope: Some(envelope(&payload)),
            ..Default::default()
        })?;
        Ok(Output::Broadcast(payload))
    }

    fn sign_vote(
        &mut self,
        v: CoreVote,
    ) -> Result<Option<(Payload, Signed<CoreVote>)>, EngineError> {
        if !self.may_sign() {
            return Ok(None);
        }
        let mut tv = self.unsigned_vote(&v, self.address, self.vote_time(v.value))?;
        let extends = extensions_enabled(&self.state.consensus_params, v.height.0)
            && is_non_nil_precommit(&tv);
        if extends {
            let block = v.value.and_then(|value| self.candidates.get(&value));
            let block =
                block.ok_or_else(|| EngineError::Wal("a precommit without its block".into()))?;
            let request = extend_request(
                &block.0,
                &self.state.last_validator_infos,
                misbehavior_of(&block.0, &self.blocks),
            );
            tv.extension = self.app.extend_vote(request)?.vote_extension.to_vec();
            let max = max_extension_bytes(self.state.validator_infos.validators().len());
            if tv.extension.len() > max {
                let e = format!(
                    "ExtendVote returned {} bytes, above {max}",
                    tv.extension.len()
                );
                return Err(AppError::Protocol(e).into());
            }
        }
        let signed = self.privval.sign_vote(&mut tv, &self.state.chain_id);
        if !self.privval_signed(signed, "vote")? {
            return Ok(None);
        }
        if extends {
            let signed = self
                .privval
                .sign_vote_extension(&mut tv, &self.state.chain_id);
            if !self.privval_signed(signed, "vote extension")? {
                return Ok(None);
            }
            let signature = tv
                .extension_signature
                .as_ref()
                .map(|s| s.as_bytes().to_vec());
            let own = (tv.extension.clone(), signature.unwrap_or_default());
            let hash = tv.block_id.map(|id| id.hash).unwrap_or_default();
            self.extensions
                .keep_own(v.round.0, v.validator.0, hash, own);
        }
        let (Some(timestamp), Some(sig)) = (tv.timestamp, tv.signature.as_ref()) else {
            return Ok(None);
        };
        if !self.replaying {
            log_signed_vote(&tv);
        }
        let signed = Signed::new(v, pack_signature(timestamp, sig));
        Ok(Some((Payload::Vote(tv.into()), signed)))
    }

    /// Commits `block`, whose part set `parts` (its encoding) the caller made or checked.
    fn commit_block(
        &mut self,
        block: Block,
        id: block::Id,
        parts: PartSet,
        commit: Commit,
        extensions: Extensions,
    ) -> Result<Vec<Output>, EngineError> {
        let request = finalize_request(
            &block,
            &self.state.last_validator_infos,
            misbehavior_of(&block, &self.blocks),
        );
        // Every transaction of the block (claims too), hashed once for the store's index and
        // the mempool.
        let hashes: Vec<[u8; 32]> = request.txs.iter().map(|t| tx_hash(t)).collect();
        let app = &mut self.app;
        let result = bulwark_instance::finalize_without_claims(request, |r| {
            bulwark_app::finalize_checked(app.as_mut(), r)
        })?;
        let height = block.header.height.value();
        let evidence: Vec<Evidence> = block.evidence.iter().cloned().collect();
        let logged: Vec<CommittedEvidence> = evidence
            .iter()
            .filter_map(|e| match e {
                Evidence::DuplicateVote(d) => Some(CommittedEvidence {
                    digest: bulwark_evidence::digest(e),
                    height: d.vote_a.height.value(),
                    time: d.timestamp,
                }),
                Evidence::LightClientAttack(_) => None,
            })
            .collect();
        let mut next = self.state.clone();
        next.apply(&block, id, &result)?;
        let txs_succeeded: Vec<([u8; 32], bool)> = hashes
            .iter()
            .zip(&result.tx_results)
            .map(|(h, r)| (*h, r.code.is_ok()))
            .collect();
        let tx_attributes: Vec<_> = result
            .tx_results
            .iter()
            .map(|r| indexed_attributes(&r.events))
            .collect();
        let block_attributes = indexed_attributes(&result.events);
        // Block, commit and resulting state first; the app's Commit after (the handshake
        // replays the block if we crash in between).
        self.blocks.save(DecidedHeight {
            height,
            hash: id.hash.as_bytes(),
            block: &parts.bytes(),
            commit: &pb::types::Commit::from(commit.clone()).encode_to_vec(),
            extensions: &if extensions.is_empty() {
                Vec::new()
            } else {
                wire::VoteExtensions::from_pairs(&extensions).encode_to_vec()
            },
            state: &next.encode(),
            results: &encode_results(result),
            evidence: &logged,
            txs: &txs_succeeded,
            tx_attributes: &tx_attributes,
            block_attributes: &block_attributes,
        })?;
        self.app.commit()?;
        self.mempool.update(&hashes, self.app.as_ref())?;
        self.wal.truncate_below(height + 1)?;
        self.state = next;
        self.last_commit = Some(commit);
        self.last_extensions = extensions;
        let now = Now {
            height,
            time: self.state.last_block_time,
        };
        let expired =
            self.evidence
                .committed_in(&evidence, now, &self.state.consensus_params.evidence);
        self.evidence_log.forget(&expired)?;
        let mut out = vec![Output::Committed {
            height,
            txs: hashes.len(),
        }];
        out.extend(self.evidence_of_committed(height));
        out.extend(self.manage_claim()?);
        if self.config.timeout_commit.is_zero() {
            out.extend(self.start_height()?);
        } else {
            out.push(Output::ScheduleHeight {
                height: height + 1,
                after: self.config.timeout_commit,
            });
        }
        Ok(out)
    }
}

/// Says that this process signed `vote`, before it leaves (one line per signature; chaos runs
/// read them to find two conflicting signatures by one key across all its instances).
pub fn log_signed_vote(vote: &vote::Vote) {
    let kind = match vote.vote_type {
        vote::Type::Prevote => "prevote",
        vote::Type::Precommit => "precommit",
    };
    let block = vote
        .block_id
        .map_or_else(|| "nil".to_string(), |b| b.hash.to_string());
    tracing::info!(
        height = vote.height.value(),
        round = vote.round.value(),
        kind,
        block = %block,
        validator = %vote.validator_address,
        "signed vote"
    );
}
