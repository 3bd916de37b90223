//! An ABCI 2.0 application in another process, reached as CometBFT's socket client reaches it:
//! `tcp://host:port` or `unix:///path`, four connections (query, snapshot, mempool, consensus,
//! opened in CometBFT's order), each message a protobuf `Request`/`Response` of
//! `tendermint.abci` (v0.38) behind its length as an unsigned varint. Every request is followed
//! by a `Flush`, so servers that buffer until a flush (Go's older ones) answer at once.
//!
//! The node cannot go on past an application it cannot hear: a refused or closed connection,
//! an answer later than the call timeout, an `Exception`, an answer of the wrong kind or bytes
//! that do not decode make that call and every later one fail ([`AppError::Connection`] and
//! friends), as CometBFT stops the node when an ABCI connection dies. The engine then stops
//! before it signs anything past the last state the application committed.

use crate::{AppError, Application};
use bulwark_types::tendermint::abci::{request, response};
use bulwark_types::tendermint::consensus;
use bulwark_types::tendermint::v0_38::abci::{Request, Response};
use bulwark_types::tendermint_proto::v0_38::abci as pb;
use bulwark_types::tendermint_proto::v0_38::types as pb_types;
use prost::Message;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest answer read (a PrepareProposal answer carries a whole block's txs).
pub const MAX_MESSAGE_BYTES: u64 = 128 << 20;

/// Where the application listens, from `proxy_app` (`tcp://host:port`, `unix:///path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A TCP `host:port`.
    Tcp(String),
    /// A Unix socket path.
    Unix(std::path::PathBuf),
}

impl Address {
    /// Parses CometBFT's `proxy_app` forms; a bare `host:port` is TCP, as in CometBFT.
    pub fn parse(proxy_app: &str) -> Result<Self, AppError> {
        if let Some(path) = proxy_app.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(AppError::Config(format!("{proxy_app:?}: no socket path")));
            }
            return Ok(Address::Unix(path.into()));
        }
        let host_port = proxy_app.strip_prefix("tcp://").unwrap_or(proxy_app);
        match host_port.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Address::Tcp(host_port.into()))
            }
            _ => Err(AppError::Config(format!(
                "{proxy_app:?}: not `kvstore`, `tcp://host:port` or `unix:///path`"
            ))),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "tcp://{a}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn connect(address: &Address) -> std::io::Result<Self> {
        Ok(match address {
            Address::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Address::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        })
    }

    fn set_timeouts(&self, t: Duration) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s
                .set_read_timeout(Some(t))
                .and(s.set_write_timeout(Some(t))),
            Stream::Unix(s) => s
                .set_read_timeout(Some(t))
                .and(s.set_write_timeout(Some(t))),
        }
    }

    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// One of the four connections.
struct Connection {
    name: &'static str,
    stream: Stream,
}

/// The first failure, shared by the four connections: after it every call fails.
type Failure = Arc<Mutex<Option<AppError>>>;

/// The consensus parameters in force, as the application's answers are merged into them.
type ParamsInForce = Mutex<Option<pb_types::ConsensusParams>>;

/// An ABCI application behind a socket.
pub struct SocketApp {
    address: Address,
    timeout: Duration,
    failure: Failure,
    /// Where a partial parameter update is completed: CometBFT's `ConsensusParams.Update`
    /// replaces only the parts an answer carries.
    params: ParamsInForce,
    consensus: Mutex<Connection>,
    mempool: Mutex<Connection>,
    query: Mutex<Connection>,
    /// Opened as CometBFT opens it; state sync is not served, so it carries nothing.
    _snapshot: Mutex<Connection>,
}

impl std::fmt::Debug for SocketApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketApp")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl SocketApp {
    /// Connects the four connections, retrying for up to `connect_within` while the
    /// application starts; `timeout` bounds each call's answer.
    pub fn connect(
        address: Address,
        timeout: Duration,
        connect_within: Duration,
    ) -> Result<Self, AppError> {
        let deadline = Instant::now() + connect_within;
        let open = |name| -> Result<Mutex<Connection>, AppError> {
            loop {
                match Stream::connect(&address) {
                    Ok(stream) => return Ok(Mutex::new(Connection { name, stream })),
                    Err(e) if Instant::now() >= deadline => {
                        return Err(AppError::Connection(format!(
                            "ABCI application at {address} ({name} connection): {e}"
                        )))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        };
        let query = open("query")?;
        let snapshot = open("snapshot")?;
        let mempool = open("mempool")?;
        let consensus = open("consensus")?;
        Ok(SocketApp {
            address,
            timeout,
            failure: Arc::default(),
            params: Mutex::new(None),
            consensus,
            mempool,
            query,
            _snapshot: snapshot,
        })
    }

    /// The first failure, if the application has failed.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).as_ref().map(|e| e.to_string())
    }

    fn call(&self, connection: &Mutex<Connection>, request: Request) -> Result<Response, AppError> {
        if let Some(e) = lock(&self.failure).as_ref() {
            return Err(e.clone());
        }
        let mut conn = connection.lock().unwrap_or_else(|p| p.into_inner());
        let result = exchange(&mut conn, request, self.timeout, &self.params);
        result.map_err(|e| {
            let e = e.at(&self.address, conn.name);
            lock(&self.failure).get_or_insert_with(|| e.clone()).clone()
        })
    }
}

fn lock(failure: &Failure) -> std::sync::MutexGuard<'_, Option<AppError>> {
    failure.lock().unwrap_or_else(|p| p.into_inner())
}

/// What went wrong in one exchange, before it is told where.
enum Fault {
    Io(std::io::Error),
    Malformed(String),
    Exception(String),
}

impl Fault {
    fn at(self, address: &Address, name: &str) -> AppError {
        match self {
            Fault::Io(e) if is_timeout(&e) => AppError::Connection(format!(
                "ABCI application at {address} ({name} connection): no answer in time"
            )),
            Fault::Io(e) => AppError::Connection(format!(
                "ABCI application at {address} ({name} connection): {e}"
            )),
            Fault::Malformed(e) => AppError::Protocol(format!(
                "ABCI application at {address} ({name} connection): {e}"
            )),
            Fault::Exception(e) => AppError::Exception(format!(
                "ABCI application at {address} ({name} connection): {e}"
            )),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Sends `request` and a Flush; reads the answer and the Flush's, by one deadline.
fn exchange(
    conn: &mut Connection,
    request: Request,
    timeout: Duration,
    params: &ParamsInForce,
) -> Result<Response, Fault> {
    let deadline = Instant::now() + timeout;
    if let Request::InitChain(r) = &request {
        *lock_params(params) = Some(r.consensus_params.clone().into());
    }
    let mut out = pb::Request::from(request).encode_length_delimited_to_vec();
    pb::Request::from(Request::Flush)
        .encode_length_delimited(&mut out)
        .map_err(|e| Fault::Malformed(e.to_string()))?;
    write_by(&mut conn.stream, &out, deadline)?;
    let answer = read_response(&mut conn.stream, deadline, params)?;
    if let Response::Exception(e) = answer {
        return Err(Fault::Exception(e.error));
    }
    match read_response(&mut conn.stream, deadline, params)? {
        Response::Flush => Ok(answer),
        other => Err(Fault::Malformed(format!(
            "a {} where the Flush answer belongs",
            kind(&other)
        ))),
    }
}

/// Writes all of `bytes`, each write bounded by what is left until `deadline` (an application
/// that reads a byte now and then cannot hold the node past it).
fn write_by(stream: &mut Stream, mut bytes: &[u8], deadline: Instant) -> Result<(), Fault> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fault::Io(std::io::ErrorKind::TimedOut.into()));
        }
        stream.set_timeouts(left).map_err(Fault::Io)?;
        match stream.io().write(bytes) {
            Ok(0) => return Err(Fault::Io(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Fault::Io(e)),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, each read bounded by what is left until `deadline`.
fn read_by(stream: &mut Stream, buf: &mut [u8], deadline: Instant) -> Result<(), Fault> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Fault::Io(std::io::ErrorKind::TimedOut.into()));
        }
        stream.set_timeouts(left).map_err(Fault::Io)?;
        match stream.io().read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(Fault::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the application closed the connection",
                )))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Fault::Io(e)),
        }
    }
    Ok(())
}

fn read_response(
    stream: &mut Stream,
    deadline: Instant,
    params: &ParamsInForce,
) -> Result<Response, Fault> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8];
        read_by(stream, &mut byte, deadline)?;
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            break;
        }
        if i == 9 {
            return Err(Fault::Malformed(
                "a length prefix longer than 10 bytes".into(),
            ));
        }
    }
    if len > MAX_MESSAGE_BYTES {
        return Err(Fault::Malformed(format!(
            "an answer of {len} bytes, more than {MAX_MESSAGE_BYTES}"
        )));
    }
    // Read in pieces so a false length costs no allocation beyond what actually arrives.
    let mut body = Vec::new();
    while (body.len() as u64) < len {
        let piece = (len - body.len() as u64).min(1 << 20) as usize;
        let start = body.len();
        body.resize(start + piece, 0);
        read_by(stream, &mut body[start..], deadline)?;
    }
    let mut message =
        pb::Response::decode(body.as_slice()).map_err(|e| Fault::Malformed(e.to_string()))?;
    complete_params(&mut message, params)?;
    Response::try_from(message).map_err(|e| Fault::Malformed(e.to_string()))
}

fn lock_params(
    params: &ParamsInForce,
) -> std::sync::MutexGuard<'_, Option<pb_types::ConsensusParams>> {
    params.lock().unwrap_or_else(|p| p.into_inner())
}

/// Completes the parameters an InitChain or FinalizeBlock answer carries as CometBFT's
/// `ConsensusParams.Update` does: each part present (block, evidence, validator, version,
/// abci) replaces the one in force, the others stay. The result is in force from then on.
fn complete_params(message: &mut pb::Response, params: &ParamsInForce) -> Result<(), Fault> {
    use pb::response::Value;
    let field = match message.value.as_mut() {
        Some(Value::FinalizeBlock(answer)) => &mut answer.consensus_param_updates,
        Some(Value::InitChain(answer)) => &mut answer.consensus_params,
        _ => return Ok(()),
    };
    let Some(update) = field.take() else {
        return Ok(());
    };
    // tendermint-rs reads a key type it does not know as ed25519; CometBFT refuses it.
    if let Some(unknown) = update
        .validator
        .iter()
        .flat_map(|v| &v.pub_key_types)
        .find(|t| !matches!(t.as_str(), "ed25519" | "secp256k1"))
    {
        return Err(Fault::Malformed(format!(
            "consensus parameters name the unknown key type {unknown:?}"
        )));
    }
    let mut in_force = lock_params(params);
    let base = in_force.take().unwrap_or_default();
    let complete = pb_types::ConsensusParams {
        block: update.block.or(base.block),
        evidence: update.evidence.or(base.evidence),
        validator: update.validator.or(base.validator),
        version: update.version.or(base.version),
        abci: update.abci.or(base.abci),
    };
    *in_force = Some(complete.clone());
    *field = Some(complete);
    Ok(())
}

fn kind(r: &Response) -> String {
    let debug = format!("{r:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("")
        .to_string()
}

/// The answer of the expected kind, or a protocol error naming both.
macro_rules! expect {
    ($answer:expr, $variant:ident) => {
        match $answer {
            Response::$variant(x) => Ok(x),
            other => Err(AppError::Protocol(format!(
                "asked {}, the application answered {}",
                stringify!($variant),
                kind(&other)
            ))),
        }
    };
}

impl SocketApp {
    /// Calls and checks the answer's kind; a wrong kind poisons the client like any failure.
    fn consensus_call(&self, request: Request) -> Result<Response, AppError> {
        self.call(&self.consensus, request)
    }

    fn poison(&self, e: AppError) -> AppError {
        lock(&self.failure).get_or_insert_with(|| e.clone()).clone()
    }
}

impl Application for SocketApp {
    fn info(&self, r: request::Info) -> Result<response::Info, AppError> {
        let answer = self.call(&self.query, Request::Info(r))?;
        expect!(answer, Info).map_err(|e| self.poison(e))
    }

    fn init_chain(&mut self, r: request::InitChain) -> Result<response::InitChain, AppError> {
        let answer = self.consensus_call(Request::InitChain(r))?;
        expect!(answer, InitChain).map_err(|e| self.poison(e))
    }

    fn check_tx(&self, r: request::CheckTx) -> Result<response::CheckTx, AppError> {
        let answer = self.call(&self.mempool, Request::CheckTx(r))?;
        expect!(answer, CheckTx).map_err(|e| self.poison(e))
    }

    fn prepare_proposal(
        &mut self,
        r: request::PrepareProposal,
    ) -> Result<response::PrepareProposal, AppError> {
        let answer = self.consensus_call(Request::PrepareProposal(r))?;
        expect!(answer, PrepareProposal).map_err(|e| self.poison(e))
    }

    fn process_proposal(
        &mut self,
        r: request::ProcessProposal,
    ) -> Result<response::ProcessProposal, AppError> {
        let answer = self.consensus_call(Request::ProcessProposal(r))?;
        expect!(answer, ProcessProposal).map_err(|e| self.poison(e))
    }

    fn finalize_block(
        &mut self,
        r: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, AppError> {
        let answer = self.consensus_call(Request::FinalizeBlock(r))?;
        expect!(answer, FinalizeBlock).map_err(|e| self.poison(e))
    }

    fn extend_vote(&mut self, r: request::ExtendVote) -> Result<response::ExtendVote, AppError> {
        let answer = self.consensus_call(Request::ExtendVote(r))?;
        expect!(answer, ExtendVote).map_err(|e| self.poison(e))
    }

    fn verify_vote_extension(
        &mut self,
        r: request::VerifyVoteExtension,
    ) -> Result<response::VerifyVoteExtension, AppError> {
        let answer = self.consensus_call(Request::VerifyVoteExtension(r))?;
        expect!(answer, VerifyVoteExtension).map_err(|e| self.poison(e))
    }

    fn commit(&mut self) -> Result<response::Commit, AppError> {
        let answer = self.consensus_call(Request::Commit)?;
        expect!(answer, Commit).map_err(|e| self.poison(e))
    }

    fn query(&self, r: request::Query) -> Result<response::Query, AppError> {
        let answer = self.call(&self.query, Request::Query(r))?;
        expect!(answer, Query).map_err(|e| self.poison(e))
    }

    fn consensus_params_are(&mut self, params: &consensus::Params) {
        *lock_params(&self.params) = Some(params.clone().into());
    }
}
