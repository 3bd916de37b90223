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
//! thirds of the power signing for the block, no vote extension); misbehavior of a validator at
//! an earlier height with the total power; Commit only after FinalizeBlock of the same
//! height; CheckTx of a non-empty transaction, new or recheck; no ExtendVote or
//! VerifyVoteExtension (vote extensions are not enabled).
//!
//! At the height after the initial one it lowers `block.max_bytes` to 1 MiB by a partial
//! parameter update (the block part alone, as CometBFT allows), and holds proposals to it from
//! the next height on.
//!
//! Its state is a key-value store of `key=value` transactions (others get code 1), its app
//! hash SHA-256 over the previous one, the height and the block's transactions. `Info`'s
//! `data` counts the calls checked (`abci-conformance finalize=N prepare=N process=N
//! check=N commit=N`), so a test can see the checks ran.

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
use tendermint_proto::v0_38::abci::response::Value as Res;

/// `BlockIDFlag` values of `tendermint.types`.
const FLAG_ABSENT: i32 = 1;
const FLAG_COMMIT: i32 = 2;
const FLAG_NIL: i32 = 3;

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

    /// The last commit's votes, as (address, power, flag, extension).
    fn last_commit(
        &self,
        call: &str,
        height: i64,
        round: i32,
        votes: Vec<(Option<pb::Validator>, i32, bool)>,
    ) {
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
        for ((validator, flag, extended), address) in votes.into_iter().zip(&self.order) {
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
            check!(
                !extended,
                "{call} vote with an extension (extensions are not enabled)"
            );
            if flag == FLAG_COMMIT {
                signed += v.power;
            }
        }
        check!(
            3 * signed > 2 * self.total_power,
            "{call} last commit signed by {signed} of {}",
            self.total_power
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
        &self,
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
            .map(|v| (v.validator, v.block_id_flag, false))
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
                (
                    v.validator,
                    v.block_id_flag,
                    !v.vote_extension.is_empty() || !v.extension_signature.is_empty(),
                )
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
            tendermint_proto::v0_38::types::ConsensusParams {
                block: Some(tendermint_proto::v0_38::types::BlockParams {
                    max_bytes: PARTIAL_UPDATE_MAX_BYTES,
                    max_gas: -1,
                }),
                ..Default::default()
            }
        });
        pb::ResponseFinalizeBlock {
            tx_results,
            app_hash: app_hash.into(),
            consensus_param_updates,
            ..Default::default()
        }
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
        let counts: Vec<String> = ["finalize", "prepare", "process", "check", "commit"]
            .iter()
            .map(|c| format!("{c}={}", self.counts.get(c).copied().unwrap_or(0)))
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
            Req::ExtendVote(_) | Req::VerifyVoteExtension(_) => {
                deviation("a vote-extension call, though extensions are not enabled".into())
            }
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
