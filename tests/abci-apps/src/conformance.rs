//! `abci-conformance ADDR` (`tcp://host:port` or `unix:///path`): an ABCI 2.0 application that
//! checks every field of every request it gets against what CometBFT v0.38 sends and what it
//! saw before, and at the first deviation prints `conformance: <what>` on stderr and exits
//! with status 2 (its node then stops on the closed connection, so a test sees it).
//!
//! What it checks: InitChain once, at height 0, with a chain id, an initial height, genesis
//! time, consensus parameters and validators of positive power; PrepareProposal,
//! ProcessProposal and FinalizeBlock at the height after the last commit, at a time after the
//! last block's (at the initial height: the genesis time), proposed by a validator, with
//! 32-byte hashes, transactions within the block's or the proposal's byte budget, and the last
//! commit's votes (present; empty at the initial height; otherwise one per validator of the
//! set, in the set's order (power descending, then address), with its power, more than two
//! thirds of the power signing for the block); misbehavior of a validator at an earlier height
//! with the total power; Commit only after FinalizeBlock of the same height; CheckTx of a
//! non-empty transaction, new or recheck.
//!
//! At the height after the initial one it lowers `block.max_bytes` to 1 MiB and enables vote
//! extensions two heights later, by a partial parameter update (the block and ABCI parts
//! alone, as CometBFT allows), and holds proposals to the new size from the next height on.
//! Vote extensions: no ExtendVote or VerifyVoteExtension before the enable height; from it,
//! ExtendVote for a block of the height in progress (checked as ProcessProposal is), answered
//! with an extension naming height and block; VerifyVoteExtension of a validator's extension
//! for a block of the height in progress, which must be the one a validator like itself makes;
//! PrepareProposal's last commit with no extension before the enable height and, after it, on
//! every precommit for the block exactly that extension, its signature by that validator's
//! key over `CanonicalVoteExtension` (encoded here by hand from types.proto), and none on the
//! other votes.
//!
//! Its state is a key-value store of `key=value` transactions (others get code 1), its app
//! hash SHA-256 over the previous one, the height and the block's transactions. `Info`'s
//! `data` counts the calls checked (`abci-conformance finalize=N prepare=N process=N
//! check=N commit=N extend=N verify=N extended_commit_votes=N`, the last the extensions of
//! PrepareProposal's last commits checked), so a test can see the checks ran.

use prost::Message;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::abci as pb;
use tendermint_proto::v0_38::abci::request::Value as Req;

/// `block.max_bytes` after the partial parameter update of the height after the initial one.
pub const PARTIAL_UPDATE_MAX_BYTES: i64 = 1 << 20;
/// Vote extensions start this many heights after the initial one (by the same update).
pub const EXTENSIONS_AFTER_INITIAL: i64 = 3;
use tendermint_proto::v0_38::abci::response::Value as Res;

/// `BlockIDFlag` values of `tendermint.types`.
const FLAG_ABSENT: i32 = 1;
const FLAG_COMMIT: i32 = 2;
const FLAG_NIL: i32 = 3;

/// A last commit's vote: validator, flag, and (PrepareProposal's only) its vote extension and
/// extension signature.
type Vote = (Option<pb::Validator>, i32, Option<(Vec<u8>, Vec<u8>)>);

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A finalized block's height, new app hash, writes and time.
type Finalized = (i64, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>, Option<Timestamp>);

#[derive(Default)]
struct Chain {
    chain_id: String,
    initial_height: i64,
    genesis_time: Option<Timestamp>,
    max_block_bytes: i64,
    /// Address → power, and the set's order (power descending, then address).
    validators: BTreeMap<Vec<u8>, i64>,
    /// Address → ed25519 key.
    keys: BTreeMap<Vec<u8>, [u8; 32]>,
    /// The height vote extensions start at (0: never), once the update saying so committed.
    extensions_from: i64,
    /// The hash of the last committed block, and of the one finalized until Commit.
    last_hash: Vec<u8>,
    pending_hash: Vec<u8>,
    order: Vec<Vec<u8>>,
    total_power: i64,
    height: i64,
    app_hash: Vec<u8>,
    last_time: Option<Timestamp>,
    store: BTreeMap<Vec<u8>, Vec<u8>>,
    /// FinalizeBlock's outcome, until Commit.
    pending: Option<Finalized>,
    counts: BTreeMap<&'static str, u64>,
}

fn deviation(what: String) -> ! {
    eprintln!("conformance: {what}");
    std::process::exit(2)
}

macro_rules! check {
    ($cond:expr, $($what:tt)+) => {
        if !$cond {
            deviation(format!($($what)+))
        }
    };
}

fn later(a: &Timestamp, b: &Timestamp) -> bool {
    (a.seconds, a.nanos) > (b.seconds, b.nanos)
}

fn parse(tx: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = tx.iter().position(|b| *b == b'=')?;
    let (k, v) = (&tx[..eq], &tx[eq + 1..]);
    (!k.is_empty() && !v.is_empty()).then_some((k, v))
}

/// What PrepareProposal, ProcessProposal and FinalizeBlock share.
struct Proposed<'a> {
    call: &'static str,
    height: i64,
    time: &'a Option<Timestamp>,
    proposer: &'a [u8],
    next_validators_hash: &'a [u8],
    misbehavior: &'a [pb::Misbehavior],
}

impl Chain {
    fn count(&mut self, call: &'static str) {
        *self.counts.entry(call).or_default() += 1;
    }

    fn init_chain(&mut self, r: pb::RequestInitChain) -> pb::ResponseInitChain {
        check!(
            self.height == 0 && self.order.is_empty(),
            "InitChain after height {} or twice",
            self.height
        );
        check!(!r.chain_id.is_empty(), "InitChain without a chain id");
        check!(
            r.initial_height >= 1,
            "InitChain initial_height {}",
            r.initial_height
        );
        check!(r.time.is_some(), "InitChain without genesis time");
        let params = r
            .consensus_params
            .unwrap_or_else(|| deviation("InitChain without consensus params".into()));
        let block = params
            .block
            .unwrap_or_else(|| deviation("InitChain without block params".into()));
        check!(
            block.max_bytes > 0 || block.max_bytes == -1,
            "InitChain block.max_bytes {}",
            block.max_bytes
        );
        check!(!r.validators.is_empty(), "InitChain without validators");
        let mut set = Vec::new();
        for v in &r.validators {
            check!(v.power > 0, "InitChain validator of power {}", v.power);
            let key = match v.pub_key.as_ref().and_then(|k| k.sum.as_ref()) {
                Some(tendermint_proto::crypto::public_key::Sum::Ed25519(k)) if k.len() == 32 => k,
                other => deviation(format!("InitChain validator key {other:?}")),
            };
            let address = Sha256::digest(key)[..20].to_vec();
            check!(
                !self.validators.contains_key(&address),
                "InitChain lists a validator twice"
            );
            self.validators.insert(address.clone(), v.power);
            if let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) {
                self.keys.insert(address.clone(), key);
            }
            set.push((v.power, address));
        }
        set.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        self.order = set.into_iter().map(|(_, a)| a).collect();
        self.total_power = self.validators.values().sum();
        self.chain_id = r.chain_id;
        self.initial_height = r.initial_height;
        self.genesis_time = r.time;
        self.max_block_bytes = block.max_bytes;
        self.height = r.initial_height - 1;
        self.app_hash = Sha256::digest(self.chain_id.as_bytes()).to_vec();
        pb::ResponseInitChain {
            consensus_params: None,
            validators: vec![],
            app_hash: self.app_hash.clone().into(),
        }
    }

    fn proposed(&self, p: Proposed<'_>) {
        let call = p.call;
        check!(!self.order.is_empty(), "{call} before InitChain");
        check!(
            p.height == self.height + 1,
            "{call} at height {} after commit of {}",
            p.height,
            self.height
        );
        check!(
            self.pending.is_none(),
            "{call} at height {} between FinalizeBlock and Commit",
            p.height
        );
        let time = p
            .time
            .as_ref()
            .unwrap_or_else(|| deviation(format!("{call} without time")));
        let genesis = self.genesis_time.unwrap_or_default();
        if p.height == self.initial_height {
            check!(
                *time == genesis,
                "{call} at the initial height at {time:?}, not the genesis time {genesis:?}"
            );
        } else if let Some(last) = &self.last_time {
            check!(
                later(time, last),
                "{call} at height {} at {time:?}, not after the last block's {last:?}",
                p.height
            );
        }
        check!(
            self.validators.contains_key(p.proposer),
            "{call} proposer {} is not a validator",
            hex(p.proposer)
        );
        check!(
            p.next_validators_hash.len() == 32,
            "{call} next_validators_hash of {} bytes",
            p.next_validators_hash.len()
        );
        for m in p.misbehavior {
            check!(
                m.r#type == 1 || m.r#type == 2,
                "{call} misbehavior of type {}",
                m.r#type
            );
            let v = m
                .validator
                .as_ref()
                .unwrap_or_else(|| deviation(format!("{call} misbehavior without validator")));
            check!(
                self.validators.get(v.address.as_ref()) == Some(&v.power),
                "{call} misbehavior of {} with power {}",
                hex(&v.address),
                v.power
            );
            check!(
                m.height >= self.initial_height && m.height < p.height,
                "{call} misbehavior at height {}",
                m.height
            );
            check!(
                m.total_voting_power == self.total_power,
                "{call} misbehavior total power {}",
                m.total_voting_power
            );
            check!(m.time.is_some(), "{call} misbehavior without time");
        }
    }

    /// The last commit's votes, as (validator, flag, vote extension and its signature).
    fn last_commit(&mut self, call: &str, height: i64, round: i32, votes: Vec<Vote>) {
        if height == self.initial_height {
            check!(
                votes.is_empty() && round == 0,
                "{call} at the initial height with a last commit"
            );
            return;
        }
        check!(round >= 0, "{call} last commit round {round}");
        check!(
            votes.len() == self.order.len(),
            "{call} last commit of {} votes for {} validators",
            votes.len(),
            self.order.len()
        );
        let mut signed = 0;
        let extended = self.extensions_from != 0 && height > self.extensions_from;
        let mut extended_votes = 0;
        for ((validator, flag, extension), address) in votes.into_iter().zip(&self.order) {
            let v =
                validator.unwrap_or_else(|| deviation(format!("{call} vote without validator")));
            check!(
                v.address.as_ref() == address.as_slice(),
                "{call} vote of {} where the set has {}",
                hex(&v.address),
                hex(address)
            );
            check!(
                Some(&v.power) == self.validators.get(address),
                "{call} vote of {} with power {}",
                hex(address),
                v.power
            );
            check!(
                [FLAG_ABSENT, FLAG_COMMIT, FLAG_NIL].contains(&flag),
                "{call} vote flag {flag}"
            );
            match extension {
                Some((e, s)) if extended && flag == FLAG_COMMIT => {
                    self.extension_signed(call, address, &e, &s, height - 1, round);
                    extended_votes += 1;
                }
                Some((e, s)) => check!(
                    e.is_empty() && s.is_empty(),
                    "{call} vote at {height} with flag {flag} carries an extension"
                ),
                None => {}
            }
            if flag == FLAG_COMMIT {
                signed += v.power;
            }
        }
        check!(
            3 * signed > 2 * self.total_power,
            "{call} last commit signed by {signed} of {}",
            self.total_power
        );
        *self.counts.entry("extended commit votes").or_default() += extended_votes;
    }

    /// The extension this application makes for a precommit for `hash` at `height`.
    fn extension(height: i64, hash: &[u8]) -> Vec<u8> {
        format!("ext/{height}/{}", hex(hash)).into_bytes()
    }

    /// `extension` must be this application's for the block of `height` committed last, and
    /// `signature` the validator's of `CanonicalVoteExtension { extension, height, round,
    /// chain_id }`, length-prefixed as CometBFT signs it.
    fn extension_signed(
        &self,
        call: &str,
        address: &[u8],
        extension: &[u8],
        signature: &[u8],
        height: i64,
        round: i32,
    ) {
        check!(
            extension == Self::extension(height, &self.last_hash).as_slice(),
            "{call}: {}'s extension at {height} is {:?}",
            hex(address),
            String::from_utf8_lossy(extension)
        );
        let mut canonical = Vec::new();
        let mut field = |tag: u8, bytes: &[u8]| {
            canonical.push(tag);
            if tag & 7 == 2 {
                varint(&mut canonical, bytes.len() as u64);
            }
            canonical.extend_from_slice(bytes);
        };
        if !extension.is_empty() {
            field(0x0a, extension);
        }
        field(0x11, &height.to_le_bytes());
        if round != 0 {
            field(0x19, &i64::from(round).to_le_bytes());
        }
        field(0x22, self.chain_id.as_bytes());
        let mut signed = Vec::new();
        varint(&mut signed, canonical.len() as u64);
        signed.extend(canonical);
        let key = self.keys.get(address).copied().unwrap_or_default();
        let verified = ed25519_consensus::VerificationKey::try_from(key).and_then(|k| {
            let signature = <[u8; 64]>::try_from(signature).unwrap_or([0; 64]);
            k.verify(&ed25519_consensus::Signature::from(signature), &signed)
        });
        check!(
            verified.is_ok(),
            "{call}: {}'s extension signature at {height} does not verify",
            hex(address)
        );
    }

    fn txs_within(&self, call: &str, txs: &[prost::bytes::Bytes], budget: i64) {
        let bytes: i64 = txs.iter().map(|t| t.len() as i64).sum();
        check!(
            budget < 0 || bytes <= budget,
            "{call} carries {bytes} bytes of txs, more than {budget}"
        );
        check!(
            txs.iter().all(|t| !t.is_empty()),
            "{call} carries an empty tx"
        );
    }

    /// What ProcessProposal and FinalizeBlock share: a whole block, its hash and last commit.
    fn block(
        &mut self,
        p: Proposed<'_>,
        hash: &[u8],
        txs: &[prost::bytes::Bytes],
        commit: Option<pb::CommitInfo>,
    ) {
        let (call, height) = (p.call, p.height);
        self.proposed(p);
        check!(hash.len() == 32, "{call} hash of {} bytes", hash.len());
        self.txs_within(call, txs, self.max_block_bytes);
        let commit = commit.unwrap_or_else(|| deviation(format!("{call} without its last commit")));
        let votes = commit
            .votes
            .into_iter()
            .map(|v| (v.validator, v.block_id_flag, None))
            .collect();
        self.last_commit(call, height, commit.round, votes);
    }

    fn prepare(&mut self, r: pb::RequestPrepareProposal) -> pb::ResponsePrepareProposal {
        self.count("prepare");
        self.proposed(Proposed {
            call: "PrepareProposal",
            height: r.height,
            time: &r.time,
            proposer: &r.proposer_address,
            next_validators_hash: &r.next_validators_hash,
            misbehavior: &r.misbehavior,
        });
        check!(
            r.max_tx_bytes > 0,
            "PrepareProposal max_tx_bytes {}",
            r.max_tx_bytes
        );
        self.txs_within("PrepareProposal", &r.txs, self.max_block_bytes);
        let commit = r
            .local_last_commit
            .unwrap_or_else(|| deviation("PrepareProposal without local_last_commit".into()));
        let votes = commit
            .votes
            .into_iter()
            .map(|v| {
                let extension = (v.vote_extension.to_vec(), v.extension_signature.to_vec());
                (v.validator, v.block_id_flag, Some(extension))
            })
            .collect();
        self.last_commit("PrepareProposal", r.height, commit.round, votes);
        let mut room = r.max_tx_bytes;
        let txs = r
            .txs
            .into_iter()
            .filter(|t| parse(t).is_some())
            .take_while(|t| {
                room -= t.len() as i64;
                room >= 0
            })
            .collect();
        pb::ResponsePrepareProposal { txs }
    }

    fn process(&mut self, r: pb::RequestProcessProposal) -> pb::ResponseProcessProposal {
        self.count("process");
        let proposed = Proposed {
            call: "ProcessProposal",
            height: r.height,
            time: &r.time,
            proposer: &r.proposer_address,
            next_validators_hash: &r.next_validators_hash,
            misbehavior: &r.misbehavior,
        };
        self.block(proposed, &r.hash, &r.txs, r.proposed_last_commit.clone());
        let status = if r.txs.iter().all(|t| parse(t).is_some()) {
            1
        } else {
            2
        };
        pb::ResponseProcessProposal { status }
    }

    fn finalize(&mut self, r: pb::RequestFinalizeBlock) -> pb::ResponseFinalizeBlock {
        self.count("finalize");
        let proposed = Proposed {
            call: "FinalizeBlock",
            height: r.height,
            time: &r.time,
            proposer: &r.proposer_address,
            next_validators_hash: &r.next_validators_hash,
            misbehavior: &r.misbehavior,
        };
        self.block(proposed, &r.hash, &r.txs, r.decided_last_commit.clone());
        let mut hash = Sha256::new();
        hash.update(&self.app_hash);
        hash.update(r.height.to_be_bytes());
        let mut writes = Vec::new();
        let mut tx_results = Vec::new();
        for tx in &r.txs {
            hash.update((tx.len() as u64).to_be_bytes());
            hash.update(tx);
            let code = match parse(tx) {
                Some((k, v)) => {
                    writes.push((k.to_vec(), v.to_vec()));
                    0
                }
                None => 1,
            };
            tx_results.push(pb::ExecTxResult {
                code,
                ..Default::default()
            });
        }
        let app_hash = hash.finalize().to_vec();
        self.pending = Some((r.height, app_hash.clone(), writes, r.time));
        let consensus_param_updates = (r.height == self.initial_height + 1).then(|| {
            self.max_block_bytes = PARTIAL_UPDATE_MAX_BYTES;
            self.extensions_from = self.initial_height + EXTENSIONS_AFTER_INITIAL;
            tendermint_proto::v0_38::types::ConsensusParams {
                block: Some(tendermint_proto::v0_38::types::BlockParams {
                    max_bytes: PARTIAL_UPDATE_MAX_BYTES,
                    max_gas: -1,
                }),
                abci: Some(tendermint_proto::v0_38::types::AbciParams {
                    vote_extensions_enable_height: self.extensions_from,
                }),
                ..Default::default()
            }
        });
        self.pending_hash = r.hash.to_vec();
        pb::ResponseFinalizeBlock {
            tx_results,
            app_hash: app_hash.into(),
            consensus_param_updates,
            ..Default::default()
        }
    }

    /// Whether vote extensions are on at the height in progress.
    fn extending(&self) -> bool {
        self.extensions_from != 0 && self.height + 1 >= self.extensions_from
    }

    fn extend_vote(&mut self, r: pb::RequestExtendVote) -> pb::ResponseExtendVote {
        self.count("extend");
        check!(
            self.extending(),
            "ExtendVote at height {} before the enable height {}",
            r.height,
            self.extensions_from
        );
        let proposed = Proposed {
            call: "ExtendVote",
            height: r.height,
            time: &r.time,
            proposer: &r.proposer_address,
            next_validators_hash: &r.next_validators_hash,
            misbehavior: &r.misbehavior,
        };
        self.block(proposed, &r.hash, &r.txs, r.proposed_last_commit.clone());
        pb::ResponseExtendVote {
            vote_extension: Self::extension(r.height, &r.hash).into(),
        }
    }

    fn verify_vote_extension(
        &mut self,
        r: pb::RequestVerifyVoteExtension,
    ) -> pb::ResponseVerifyVoteExtension {
        self.count("verify");
        check!(
            self.extending() && r.height == self.height + 1,
            "VerifyVoteExtension at height {} (in progress: {}, enable height {})",
            r.height,
            self.height + 1,
            self.extensions_from
        );
        check!(
            r.hash.len() == 32,
            "VerifyVoteExtension hash of {} bytes",
            r.hash.len()
        );
        check!(
            self.validators.contains_key(r.validator_address.as_ref()),
            "VerifyVoteExtension of {}, no validator",
            hex(&r.validator_address)
        );
        check!(
            r.vote_extension == Self::extension(r.height, &r.hash),
            "VerifyVoteExtension of {:?}",
            String::from_utf8_lossy(&r.vote_extension)
        );
        pb::ResponseVerifyVoteExtension { status: 1 }
    }

    fn commit(&mut self) -> pb::ResponseCommit {
        self.count("commit");
        let (height, app_hash, writes, time) = self.pending.take().unwrap_or_else(|| {
            deviation(format!(
                "Commit without FinalizeBlock after height {}",
                self.height
            ))
        });
        self.height = height;
        self.app_hash = app_hash;
        self.last_hash = std::mem::take(&mut self.pending_hash);
        self.last_time = time;
        self.store.extend(writes);
        pb::ResponseCommit { retain_height: 0 }
    }

    fn check_tx(&mut self, r: pb::RequestCheckTx) -> pb::ResponseCheckTx {
        self.count("check");
        check!(!r.tx.is_empty(), "CheckTx of an empty tx");
        check!(
            r.r#type == 0 || r.r#type == 1,
            "CheckTx of type {}",
            r.r#type
        );
        pb::ResponseCheckTx {
            code: if parse(&r.tx).is_some() { 0 } else { 1 },
            ..Default::default()
        }
    }

    fn info(&self) -> pb::ResponseInfo {
        let counts: Vec<String> = [
            "finalize",
            "prepare",
            "process",
            "check",
            "commit",
            "extend",
            "verify",
            "extended commit votes",
        ]
        .iter()
        .map(|c| {
            let n = self.counts.get(c).copied().unwrap_or(0);
            format!("{}={n}", c.replace(' ', "_"))
        })
        .collect();
        pb::ResponseInfo {
            data: format!("abci-conformance {}", counts.join(" ")),
            version: env!("CARGO_PKG_VERSION").into(),
            app_version: 1,
            last_block_height: if self.order.is_empty() {
                0
            } else {
                self.height
            },
            last_block_app_hash: if self.order.is_empty() {
                Default::default()
            } else {
                self.app_hash.clone().into()
            },
        }
    }

    fn query(&self, r: pb::RequestQuery) -> pb::ResponseQuery {
        let value = self.store.get(r.data.as_ref()).cloned();
        pb::ResponseQuery {
            code: if value.is_some() { 0 } else { 2 },
            key: r.data,
            value: value.unwrap_or_default().into(),
            height: self.height,
            ..Default::default()
        }
    }

    fn answer(&mut self, request: Req) -> Res {
        match request {
            Req::Echo(e) => Res::Echo(pb::ResponseEcho { message: e.message }),
            Req::Flush(_) => Res::Flush(pb::ResponseFlush {}),
            Req::Info(_) => Res::Info(self.info()),
            Req::InitChain(r) => Res::InitChain(self.init_chain(r)),
            Req::Query(r) => Res::Query(self.query(r)),
            Req::CheckTx(r) => Res::CheckTx(self.check_tx(r)),
            Req::Commit(_) => Res::Commit(self.commit()),
            Req::PrepareProposal(r) => Res::PrepareProposal(self.prepare(r)),
            Req::ProcessProposal(r) => Res::ProcessProposal(self.process(r)),
            Req::FinalizeBlock(r) => Res::FinalizeBlock(self.finalize(r)),
            Req::ExtendVote(r) => Res::ExtendVote(self.extend_vote(r)),
            Req::VerifyVoteExtension(r) => Res::VerifyVoteExtension(self.verify_vote_extension(r)),
            Req::ListSnapshots(_) => Res::ListSnapshots(Default::default()),
            Req::OfferSnapshot(_) => Res::OfferSnapshot(Default::default()),
            Req::LoadSnapshotChunk(_) => Res::LoadSnapshotChunk(Default::default()),
            Req::ApplySnapshotChunk(_) => Res::ApplySnapshotChunk(Default::default()),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// One connection: length-delimited requests in, answers out, in order.
fn serve(stream: impl Read + Write, chain: &Mutex<Chain>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut len: u64 = 0;
        for i in 0..10 {
            let mut byte = [0u8];
            if stream.read_exact(&mut byte).is_err() {
                return; // the node went away
            }
            len |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        check!(len <= 256 << 20, "a request of {len} bytes");
        let mut body = vec![0u8; len as usize];
        if stream.read_exact(&mut body).is_err() {
            return;
        }
        let request = pb::Request::decode(body.as_slice())
            .unwrap_or_else(|e| deviation(format!("an undecodable request: {e}")));
        let value = request
            .value
            .unwrap_or_else(|| deviation("an empty request".into()));
        let answer = chain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .answer(value);
        let bytes = pb::Response {
            value: Some(answer),
        }
        .encode_length_delimited_to_vec();
        let out = stream.get_mut();
        if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
            return;
        }
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp://127.0.0.1:26658".into());
    let chain = Arc::new(Mutex::new(Chain::default()));
    if let Some(path) = addr.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
        let listener = std::os::unix::net::UnixListener::bind(path)
            .unwrap_or_else(|e| deviation(format!("binding {addr}: {e}")));
        println!("listening on {addr}");
        for conn in listener.incoming().flatten() {
            let chain = chain.clone();
            std::thread::spawn(move || serve(conn, &chain));
        }
    } else {
        let host_port = addr.strip_prefix("tcp://").unwrap_or(&addr);
        let listener = std::net::TcpListener::bind(host_port)
            .unwrap_or_else(|e| deviation(format!("binding {addr}: {e}")));
        println!("listening on {addr}");
        for conn in listener.incoming().flatten() {
            let chain = chain.clone();
            std::thread::spawn(move || serve(conn, &chain));
        }
    }
}
