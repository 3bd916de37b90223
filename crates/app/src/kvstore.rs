//! The built-in key-value store application. Transactions are `key=value` (UTF-8 not required;
//! key and value non-empty, one `=` splits them), or CometBFT's kvstore validator updates,
//! `val=ed25519!<base64 public key>!<power>` (power 0 removes). Anyone who reaches RPC can send
//! one, so they change the validator set only on a chain whose genesis opts in: `app_state`
//! `{"validator_updates": "genesis-validators"}` (only the genesis validators' keys) or
//! `"any-key"` (CometBFT's kvstore; a validator joins by its key, and peers admit it once it
//! is in the set and attested); elsewhere `val=...` is an ordinary write. A block's updates
//! are the difference between the set before and after it, each keeping the set valid (a
//! member removed, never the last one, the total power within CometBFT's cap, at most
//! [`MAX_VALIDATORS`]), so the chain can always apply them; a transaction that would not is
//! answered with code 4. The app hash commits to every write ever made,
//! in order: `H(height) = SHA-256(H(height-1) || height || len(key) || key || len(value) ||
//! value ...)` over the block's valid txs, so two nodes agree on it exactly when they executed
//! the same writes in the same order.

use crate::{AppError, Application};
use bulwark_kv::{Batch, Db, Tree};
use bulwark_types::tendermint::abci::{
    request, response, types::ExecTxResult, Code, Event, EventAttributeIndexExt,
};
use bulwark_types::tendermint::{block, AppHash};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Result code of a malformed transaction.
pub const CODE_INVALID_FORMAT: u32 = 1;
/// Result code of a query for a missing key.
pub const CODE_NOT_FOUND: u32 = 2;
/// Result code of a query the store cannot answer (old heights, proofs).
pub const CODE_UNSUPPORTED: u32 = 3;
/// Result code of a validator update that would leave an invalid set.
pub const CODE_BAD_VALIDATOR_UPDATE: u32 = 4;

/// A non-zero result code (every `CODE_*` here is).
fn error_code(code: u32) -> Code {
    Code::Err(code.try_into().unwrap_or(std::num::NonZeroU32::MIN))
}

/// The prefix of a validator update transaction (CometBFT's kvstore's).
pub const VALIDATOR_PREFIX: &[u8] = b"val=";

/// A validator update transaction: the key and the power, or why it is malformed.
pub fn parse_validator_tx(tx: &[u8]) -> Option<Result<([u8; 32], u64), String>> {
    let rest = tx.strip_prefix(VALIDATOR_PREFIX)?;
    let parsed = (|| {
        let text = std::str::from_utf8(rest).map_err(|_| "not UTF-8".to_string())?;
        let parts: Vec<&str> = text.split('!').collect();
        let [kind, key, power] = parts.as_slice() else {
            return Err(format!("expected 'pubkeytype!pubkey!power', got {text:?}"));
        };
        if *kind != "ed25519" {
            return Err(format!("key type {kind:?}: only ed25519"));
        }
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|e| format!("public key is not base64: {e}"))?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| "an ed25519 public key has 32 bytes".to_string())?;
        let power: u64 = power
            .parse()
            .map_err(|_| format!("power {power:?} is not a non-negative integer"))?;
        if power > MAX_POWER {
            return Err(format!("power {power} is above {MAX_POWER}"));
        }
        Ok((key, power))
    })();
    Some(parsed)
}

/// CometBFT's cap on the total voting power.
const MAX_POWER: u64 = (i64::MAX / 8) as u64;

const META_HEIGHT: &[u8] = b"height";
/// Set at InitChain when the genesis opts in to validator updates.
const META_VALIDATOR_UPDATES: &[u8] = b"validator_updates";
/// The `app_state` key, and value, that opt in.
pub const VALIDATOR_UPDATES_KEY: &str = "validator_updates";
/// See [`VALIDATOR_UPDATES_KEY`]: updates may name the genesis validators' keys only.
pub const GENESIS_VALIDATORS_ONLY: &str = "genesis-validators";
/// See [`VALIDATOR_UPDATES_KEY`]: updates may name any ed25519 key (CometBFT's kvstore). A key
/// no attested guest holds never gets a vote counted (peers refuse it as a validator and drop
/// consensus messages from unattested peers); with more than a third of the power it halts
/// the chain. A joining validator is an attested full
/// node first (genesis `attest_full_nodes`). Whoever reaches RPC decides the set: only for
/// networks whose RPC is trusted.
pub const ANY_KEY: &str = "any-key";
/// What [`META_VALIDATOR_UPDATES`] holds for [`ANY_KEY`] (never a whole number of keys).
const META_ANY_KEY: &[u8] = b"any-key";
/// The most validators an update makes: Bulwark's chain refuses more
/// (`bulwark_chain::MAX_VALIDATORS`), so the kvstore never emits it.
pub const MAX_VALIDATORS: usize = 1_000;

/// Initial key/value pairs, in order.
pub type Writes = Vec<(Vec<u8>, Vec<u8>)>;

/// What a genesis `app_state` (`raw`, its JSON; empty or `null` for none) gives the kvstore:
/// a JSON object of non-empty strings, its initial pairs, and the `validator_updates` choice
/// ([`ANY_KEY`] or [`GENESIS_VALIDATORS_ONLY`]) if it opts in. InitChain reads it so, and
/// `genesis assemble` checks it before a chain id certifies it (a genesis the kvstore refuses
/// would stop every validator at its first start).
pub fn read_app_state(raw: &[u8]) -> Result<(Writes, Option<&'static str>), AppError> {
    let genesis = |why: String| AppError::Genesis(why);
    let state: serde_json::Value = match raw {
        [] => serde_json::Value::Null,
        raw => serde_json::from_slice(raw).map_err(|e| genesis(e.to_string()))?,
    };
    let map = match state {
        serde_json::Value::Null => return Ok((Vec::new(), None)),
        serde_json::Value::Object(map) => map,
        _ => return Err(genesis("app_state must be a JSON object of strings".into())),
    };
    let (mut writes, mut updates) = (Vec::new(), None);
    for (k, v) in map {
        if k == VALIDATOR_UPDATES_KEY {
            updates = Some(match v.as_str() {
                Some(ANY_KEY) => ANY_KEY,
                Some(GENESIS_VALIDATORS_ONLY) => GENESIS_VALIDATORS_ONLY,
                _ => {
                    return Err(genesis(format!(
                        "{VALIDATOR_UPDATES_KEY} is {GENESIS_VALIDATORS_ONLY:?} or {ANY_KEY:?}"
                    )))
                }
            });
            continue;
        }
        let serde_json::Value::String(v) = v else {
            return Err(genesis(format!("value of {k:?} is not a string")));
        };
        if k.is_empty() || v.is_empty() {
            return Err(genesis("keys and values must be non-empty".into()));
        }
        writes.push((k.into_bytes(), v.into_bytes()));
    }
    Ok((writes, updates))
}

/// Which keys `val=` transactions may give power to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Eligible {
    /// Validator updates are off: `val=...` is an ordinary write.
    #[default]
    Off,
    /// The genesis validators' keys.
    GenesisKeys(std::collections::BTreeSet<[u8; 32]>),
    /// Any key.
    AnyKey,
}

impl Eligible {
    fn allows(&self, key: &[u8; 32]) -> bool {
        match self {
            Eligible::Off => false,
            Eligible::GenesisKeys(keys) => keys.contains(key),
            Eligible::AnyKey => true,
        }
    }
}
const META_APP_HASH: &[u8] = b"app_hash";

/// The longest key a transaction may set. Keys are stored as database keys and indexed as
/// event attributes (inside the event index's keys), which have a bounded length
/// (`bulwark_kv::MAX_KEY_BYTES`); a longer key is refused by CheckTx and fails in a block.
pub const MAX_KEY_BYTES: usize = 4096;

/// A parsed transaction.
fn parse(tx: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = tx.iter().position(|b| *b == b'=')?;
    let (key, value) = (&tx[..eq], &tx[eq + 1..]);
    (!key.is_empty() && key.len() <= MAX_KEY_BYTES && !value.is_empty()).then_some((key, value))
}

/// How often the kvstore's `commit` also flushes its database: after a crash the node's
/// handshake replays at most this many heights into it from the block store (a clean stop
/// flushes everything, as the database does when it closes).
pub const FLUSH_EVERY_HEIGHTS: u64 = 16;

/// Writes staged by `finalize_block`, applied atomically by `commit` (durable at the next
/// flush: see [`FLUSH_EVERY_HEIGHTS`]).
#[derive(Debug)]
struct Pending {
    height: u64,
    app_hash: [u8; 32],
    writes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The kvstore, persisted in a `bulwark-kv` database (fjall, or a simulated disk).
#[derive(Debug)]
pub struct KvStore {
    db: Db,
    data: Tree,
    meta: Tree,
    /// The validator set as the application knows it: public key to power.
    validators: Tree,
    /// The keys an update may give power to.
    eligible: Eligible,
    height: u64,
    app_hash: [u8; 32],
    pending: Option<Pending>,
}

fn storage(e: impl std::fmt::Display) -> AppError {
    AppError::Storage(e.to_string())
}

impl KvStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, AppError> {
        Self::open_db(Db::open(dir).map_err(storage)?)
    }

    /// Opens the store in `db`.
    pub fn open_db(db: Db) -> Result<Self, AppError> {
        let data = db.tree("kv").map_err(storage)?;
        let meta = db.tree("meta").map_err(storage)?;
        let validators = db.tree("validators").map_err(storage)?;
        let eligible = match meta.get(META_VALIDATOR_UPDATES).map_err(storage)? {
            None => Eligible::Off,
            Some(any) if any == META_ANY_KEY => Eligible::AnyKey,
            Some(keys) if !keys.is_empty() && keys.len() % 32 == 0 => Eligible::GenesisKeys(
                keys.chunks_exact(32)
                    .filter_map(|k| k.try_into().ok())
                    .collect(),
            ),
            Some(_) => return Err(storage("validator updates record damaged")),
        };
        let height = match meta.get(META_HEIGHT).map_err(storage)? {
            None => 0,
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| storage("height record damaged"))?,
            ),
        };
        let app_hash = match meta.get(META_APP_HASH).map_err(storage)? {
            None => [0; 32],
            Some(v) => v
                .as_slice()
                .try_into()
                .map_err(|_| storage("app hash record damaged"))?,
        };
        Ok(KvStore {
            db,
            data,
            meta,
            validators,
            eligible,
            height,
            app_hash,
            pending: None,
        })
    }

    /// The last committed height.
    pub fn height(&self) -> u64 {
        self.height
    }

    fn app_hash_value(&self) -> AppHash {
        // A 32-byte vector is always a valid app hash.
        AppHash::try_from(self.app_hash.to_vec()).unwrap_or_default()
    }
}

impl Application for KvStore {
    fn info(&self, _request: request::Info) -> Result<response::Info, AppError> {
        Ok(response::Info {
            data: "bulwark-kvstore".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            app_version: 1,
            last_block_height: block::Height::try_from(self.height).map_err(storage)?,
            last_block_app_hash: if self.height == 0 {
                AppHash::default()
            } else {
                self.app_hash_value()
            },
        })
    }

    fn init_chain(&mut self, request: request::InitChain) -> Result<response::InitChain, AppError> {
        if self.height != 0 {
            return Err(AppError::Sequence(format!(
                "init_chain at height {}",
                self.height
            )));
        }
        let (writes, updates) = read_app_state(request.app_state_bytes.as_ref())?;
        match updates {
            Some(ANY_KEY) => self.eligible = Eligible::AnyKey,
            Some(_) => {
                self.eligible = Eligible::GenesisKeys(
                    request
                        .validators
                        .iter()
                        .filter_map(|v| v.pub_key.ed25519())
                        .filter_map(|k| k.as_bytes().try_into().ok())
                        .collect(),
                )
            }
            None => {}
        }
        for (k, v) in &writes {
            self.data
                .insert(k.as_slice(), v.as_slice())
                .map_err(storage)?;
        }
        for v in &request.validators {
            let key: [u8; 32] = v
                .pub_key
                .ed25519()
                .map(|k| k.as_bytes().try_into().unwrap_or([0; 32]))
                .ok_or_else(|| AppError::Genesis("a validator key is not ed25519".into()))?;
            self.validators
                .insert(key, v.power.value().to_be_bytes())
                .map_err(storage)?;
        }
        self.app_hash = chain_hash(&[0; 32], 0, &writes);
        self.meta
            .insert(META_APP_HASH, self.app_hash)
            .map_err(storage)?;
        let record = match &self.eligible {
            Eligible::Off => None,
            Eligible::GenesisKeys(keys) => Some(keys.iter().flatten().copied().collect()),
            Eligible::AnyKey => Some(META_ANY_KEY.to_vec()),
        };
        if let Some(record) = record {
            self.meta
                .insert(META_VALIDATOR_UPDATES, record)
                .map_err(storage)?;
        }
        self.db.flush().map_err(storage)?;
        Ok(response::InitChain {
            consensus_params: None,
            validators: request.validators,
            app_hash: self.app_hash_value(),
        })
    }

    fn check_tx(&self, request: request::CheckTx) -> Result<response::CheckTx, AppError> {
        if let Some(update) = self.validator_tx(&request.tx) {
            let mut members = self.members()?;
            let outcome = update
                .and_then(|(key, power)| admit_update(&mut members, &self.eligible, key, power));
            return Ok(match outcome {
                Ok(()) => response::CheckTx {
                    code: Code::Ok,
                    gas_wanted: 1,
                    ..Default::default()
                },
                Err(log) => response::CheckTx {
                    code: error_code(CODE_BAD_VALIDATOR_UPDATE),
                    log,
                    ..Default::default()
                },
            });
        }
        Ok(match parse(&request.tx) {
            Some(_) => response::CheckTx {
                code: Code::Ok,
                gas_wanted: 1,
                ..Default::default()
            },
            None => response::CheckTx {
                code: error_code(CODE_INVALID_FORMAT),
                log: format!(
                    "transactions are key=value with a non-empty key of at most {MAX_KEY_BYTES} bytes and a non-empty value"
                ),
                ..Default::default()
            },
        })
    }

    fn prepare_proposal(
        &mut self,
        request: request::PrepareProposal,
    ) -> Result<response::PrepareProposal, AppError> {
        let mut budget = if request.max_tx_bytes < 0 {
            i64::MAX
        } else {
            request.max_tx_bytes
        };
        let mut txs = Vec::new();
        for tx in request.txs {
            if parse(&tx).is_none() {
                continue;
            }
            let size = tx.len() as i64;
            if size > budget {
                break;
            }
            budget -= size;
            txs.push(tx);
        }
        Ok(response::PrepareProposal { txs })
    }

    fn process_proposal(
        &mut self,
        request: request::ProcessProposal,
    ) -> Result<response::ProcessProposal, AppError> {
        Ok(if request.txs.iter().all(|tx| parse(tx).is_some()) {
            response::ProcessProposal::Accept
        } else {
            response::ProcessProposal::Reject
        })
    }

    /// No extension: the kvstore has nothing to add to a precommit (CometBFT's base
    /// application answers the same).
    fn extend_vote(
        &mut self,
        _request: request::ExtendVote,
    ) -> Result<response::ExtendVote, AppError> {
        Ok(response::ExtendVote {
            vote_extension: Default::default(),
        })
    }

    /// An empty extension, the only one a kvstore makes.
    fn verify_vote_extension(
        &mut self,
        request: request::VerifyVoteExtension,
    ) -> Result<response::VerifyVoteExtension, AppError> {
        Ok(if request.vote_extension.is_empty() {
            response::VerifyVoteExtension::Accept
        } else {
            response::VerifyVoteExtension::Reject
        })
    }

    fn finalize_block(
        &mut self,
        request: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, AppError> {
        let height = request.height.value();
        if height != self.height + 1 {
            return Err(AppError::Sequence(format!(
                "finalize_block {height} after committed height {}",
                self.height
            )));
        }
        let mut writes = Vec::new();
        let mut tx_results = Vec::with_capacity(request.txs.len());
        // The set before the block, read at its first validator transaction (most blocks
        // have none, and reading it cost a scan of the validators' tree at every height).
        let mut before = None;
        let mut members = std::collections::BTreeMap::new();
        let mut updated: Vec<[u8; 32]> = Vec::new();
        for tx in &request.txs {
            if let Some(update) = self.validator_tx(tx) {
                if before.is_none() {
                    let committed = self.members()?;
                    members = committed.clone();
                    before = Some(committed);
                }
                let outcome = update.and_then(|(key, power)| {
                    admit_update(&mut members, &self.eligible, key, power)?;
                    Ok((key, power))
                });
                tx_results.push(match outcome {
                    Ok((key, power)) => {
                        if !updated.contains(&key) {
                            updated.push(key);
                        }
                        let mut record = VALIDATOR_PREFIX.to_vec();
                        record.extend(key);
                        writes.push((record, power.to_string().into_bytes()));
                        ExecTxResult {
                            code: Code::Ok,
                            gas_wanted: 1,
                            gas_used: 1,
                            events: vec![Event::new(
                                "validator",
                                [
                                    ("pub_key", hex::encode_upper(key)).index(),
                                    ("power", power.to_string()).index(),
                                ],
                            )],
                            ..Default::default()
                        }
                    }
                    Err(log) => ExecTxResult {
                        code: error_code(CODE_BAD_VALIDATOR_UPDATE),
                        log,
                        ..Default::default()
                    },
                });
                continue;
            }
            match parse(tx) {
                Some((k, v)) => {
                    writes.push((k.to_vec(), v.to_vec()));
                    tx_results.push(ExecTxResult {
                        code: Code::Ok,
                        gas_wanted: 1,
                        gas_used: 1,
                        events: vec![Event::new(
                            "app",
                            [("key", String::from_utf8_lossy(k).to_string()).index()],
                        )],
                        ..Default::default()
                    });
                }
                None => tx_results.push(ExecTxResult {
                    code: error_code(CODE_INVALID_FORMAT),
                    log: "malformed transaction".into(),
                    ..Default::default()
                }),
            }
        }
        let app_hash = chain_hash(&self.app_hash, height, &writes);
        // A block event (what `block_search` finds) for blocks that wrote something; an empty
        // block has none, as CometBFT's kvstore's.
        let events = match writes.len() {
            0 => vec![],
            n => vec![Event::new("block", [("writes", n.to_string()).index()])],
        };
        self.pending = Some(Pending {
            height,
            app_hash,
            writes,
        });
        // One update per key whose power differs after the block from before it (CometBFT
        // refuses a key twice, and the removal of a key that joined and left within the
        // block would name a non-member).
        let mut validator_updates = Vec::with_capacity(updated.len());
        for key in updated {
            let power = members.get(&key).copied().unwrap_or(0);
            let was = before.as_ref().and_then(|b| b.get(&key)).copied();
            if was.unwrap_or(0) == power {
                continue;
            }
            let pub_key = bulwark_types::tendermint::PublicKey::from_raw_ed25519(&key)
                .ok_or_else(|| storage("a validator key does not decode"))?;
            validator_updates.push(bulwark_types::tendermint::validator::Update {
                pub_key,
                power: power.try_into().map_err(storage)?,
            });
        }
        Ok(response::FinalizeBlock {
            events,
            tx_results,
            validator_updates,
            consensus_param_updates: None,
            app_hash: AppHash::try_from(app_hash.to_vec()).unwrap_or_default(),
        })
    }

    fn commit(&mut self) -> Result<response::Commit, AppError> {
        let pending = self
            .pending
            .take()
            .ok_or_else(|| AppError::Sequence("commit without finalize_block".into()))?;
        let mut data = Batch::default();
        let mut validators = Batch::default();
        for (k, v) in &pending.writes {
            match validator_record(k, v) {
                Some((key, 0)) => validators.remove(key),
                Some((key, power)) => validators.insert(key, power.to_be_bytes()),
                None => data.insert(k, v),
            }
        }
        let mut meta = Batch::default();
        meta.insert(META_HEIGHT, pending.height.to_be_bytes());
        meta.insert(META_APP_HASH, pending.app_hash);
        self.db
            .write_atomically(&[
                (&self.data, &data),
                (&self.validators, &validators),
                (&self.meta, &meta),
            ])
            .map_err(storage)?;
        // The node's block store is the durable record of every committed height, and the
        // restart handshake replays into the application what it lacks: a flush at every
        // height would put a second synced write on each height's critical path for nothing.
        if pending.height % FLUSH_EVERY_HEIGHTS == 0 {
            self.db.flush().map_err(storage)?;
        }
        self.height = pending.height;
        self.app_hash = pending.app_hash;
        // Retain height 0: the node keeps every block (tendermint's Height::default() is 1).
        let retain_height = block::Height::try_from(0u64).map_err(storage)?;
        Ok(response::Commit {
            data: Bytes::new(),
            retain_height,
        })
    }

    fn query(&self, request: request::Query) -> Result<response::Query, AppError> {
        Ok(self.read(request))
    }

    /// Its answers carry no parameter updates.
    fn consensus_params_are(&mut self, _params: &bulwark_types::tendermint::consensus::Params) {}
}

/// A staged validator record: its key and power.
fn validator_record(k: &[u8], v: &[u8]) -> Option<([u8; 32], u64)> {
    let key: [u8; 32] = k.strip_prefix(VALIDATOR_PREFIX)?.try_into().ok()?;
    let power = std::str::from_utf8(v).ok()?.parse().ok()?;
    Some((key, power))
}

/// Applies one update to `members` if the set stays valid: a removal names a member and
/// leaves one, and the total power stays within the cap.
fn admit_update(
    members: &mut std::collections::BTreeMap<[u8; 32], u64>,
    eligible: &Eligible,
    key: [u8; 32],
    power: u64,
) -> Result<(), String> {
    if power > 0 && !eligible.allows(&key) {
        return Err(format!(
            "{} is not a genesis validator: this chain's updates name only those",
            hex::encode_upper(key)
        ));
    }
    if power > 0 && !members.contains_key(&key) && members.len() >= MAX_VALIDATORS {
        return Err(format!(
            "the set has {MAX_VALIDATORS} validators, the most it may"
        ));
    }
    if power == 0 {
        if !members.contains_key(&key) {
            return Err(format!("{} is not a validator", hex::encode_upper(key)));
        }
        if members.len() == 1 {
            return Err("the last validator cannot be removed".into());
        }
        members.remove(&key);
        return Ok(());
    }
    let others: u64 = members
        .iter()
        .filter(|(k, _)| **k != key)
        .map(|(_, p)| *p)
        .sum();
    if others.saturating_add(power) > MAX_POWER {
        return Err(format!("the total power would pass {MAX_POWER}"));
    }
    members.insert(key, power);
    Ok(())
}

impl KvStore {
    /// `tx` as a validator update, when this chain takes them.
    fn validator_tx(&self, tx: &[u8]) -> Option<Result<([u8; 32], u64), String>> {
        if self.eligible == Eligible::Off {
            return None;
        }
        parse_validator_tx(tx)
    }

    /// The validator set as committed: public key to power.
    fn members(&self) -> Result<std::collections::BTreeMap<[u8; 32], u64>, AppError> {
        let mut members = std::collections::BTreeMap::new();
        for (k, v) in self.validators.entries().map_err(storage)? {
            let key: [u8; 32] = k
                .as_slice()
                .try_into()
                .map_err(|_| storage("validator record key damaged"))?;
            let power: [u8; 8] = v
                .as_slice()
                .try_into()
                .map_err(|_| storage("validator record power damaged"))?;
            members.insert(key, u64::from_be_bytes(power));
        }
        Ok(members)
    }

    fn read(&self, request: request::Query) -> response::Query {
        let height = block::Height::try_from(self.height).unwrap_or_default();
        // Height 0 in a query means "latest".
        let unsupported = |log: &str| response::Query {
            code: error_code(CODE_UNSUPPORTED),
            log: log.into(),
            height,
            ..Default::default()
        };
        if request.prove {
            return unsupported("proofs are not supported by the kvstore");
        }
        if request.height.value() != 0 && request.height.value() != self.height {
            return unsupported("only the latest committed height can be queried");
        }
        match self.data.get(&request.data) {
            Ok(Some(v)) => response::Query {
                code: Code::Ok,
                key: request.data.clone(),
                value: Bytes::copy_from_slice(&v),
                height,
                log: "exists".into(),
                ..Default::default()
            },
            Ok(None) => response::Query {
                code: error_code(CODE_NOT_FOUND),
                key: request.data.clone(),
                log: "does not exist".into(),
                height,
                ..Default::default()
            },
            Err(e) => unsupported(&format!("storage: {e}")),
        }
    }
}

fn chain_hash(previous: &[u8; 32], height: u64, writes: &[(Vec<u8>, Vec<u8>)]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(height.to_be_bytes());
    for (k, v) in writes {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k);
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    h.finalize().into()
}
