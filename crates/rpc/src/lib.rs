//! CometBFT-compatible JSON-RPC over HTTP on `rpc.laddr`: POST (JSON-RPC 2.0, single or
//! batch) and GET URI forms. The HTTP side parses and validates; every call is answered on the
//! engine's task ([`answer`]) through a bounded channel, so RPC never races consensus.
//!
//! Everything a client sends is untrusted: bodies are size-limited, headers must arrive in
//! time, connections are capped, and bad JSON, unknown methods and bad params get JSON-RPC
//! errors (never a panic or a hung connection).

pub mod answer;
pub use bulwark_calls as calls;
pub mod consensus;
pub mod events;
pub mod peers;
pub mod search;
pub mod waiters;
pub mod websocket;

pub use bulwark_p2p::Descriptors;
use bulwark_store::blocks::BlockStore;
use calls::{BroadcastMode, Call};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tendermint_rpc::response_error::{Code, ResponseError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// A call for the engine's task, with where to send the answer.
#[derive(Debug)]
pub struct RpcRequest {
    /// The call.
    pub call: Call,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Value, ResponseError>>,
}

/// Limits of the RPC server.
#[derive(Clone, Debug)]
pub struct RpcLimits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most open connections; more are closed at once.
    pub max_connections: usize,
    /// The descriptors connections may hold, shared with the node's other servers; a
    /// connection that finds none is closed at once.
    pub descriptors: Descriptors,
    /// How long `broadcast_tx_commit` waits for its block.
    pub commit_timeout: Duration,
    /// How long any other call may wait for the engine.
    pub call_timeout: Duration,
    /// How long a request's body may take to arrive (one that never ends would hold its
    /// connection, and its descriptor, for good).
    pub body_timeout: Duration,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            max_body_bytes: 1_000_000,
            max_connections: 900,
            descriptors: Descriptors::default(),
            commit_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

struct Server {
    engine: mpsc::Sender<RpcRequest>,
    limits: RpcLimits,
    /// The committed blocks that searches read, if this server serves them.
    blocks: Option<BlockStore>,
    /// Searches running at once.
    searches: Arc<Semaphore>,
    /// WebSocket connections open at once.
    websockets: Arc<Semaphore>,
    /// Recent heights' events, rendered once for every subscriber.
    rendered: websocket::Rendered,
}

/// Searches a server runs at once (each on a blocking thread); more are refused.
pub const MAX_SEARCHES: usize = 2;

/// Calls of one JSON-RPC batch handed to the engine and not yet answered, at most.
pub const BATCH_IN_FLIGHT: usize = 64;

fn error_object(e: &ResponseError) -> Value {
    serde_json::to_value(e).unwrap_or_else(|_| json!({"code": -32603, "message": "Internal error"}))
}

fn envelope(id: Value, answer: Result<Value, ResponseError>) -> Value {
    match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": error_object(&e)}),
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A call's answer: given already, or still to come from the engine.
enum Pending {
    Answered(Result<Value, ResponseError>),
    Engine {
        reply: oneshot::Receiver<Result<Value, ResponseError>>,
        /// `wait` after the call was handed over.
        deadline: tokio::time::Instant,
        wait: Duration,
    },
}

impl Pending {
    async fn answer(self) -> Result<Value, ResponseError> {
        let (reply, deadline, wait) = match self {
            Pending::Answered(answer) => return answer,
            Pending::Engine {
                reply,
                deadline,
                wait,
            } => (reply, deadline, wait),
        };
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ResponseError::new(
                Code::InternalError,
                Some("the node dropped the request".into()),
            )),
            Err(_) => Err(ResponseError::new(
                Code::InternalError,
                Some(format!("timed out after {wait:?} waiting for the node")),
            )),
        }
    }
}

/// A request object's id and its call.
fn parse_request(request: &Value) -> (Value, Result<Call, ResponseError>) {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        let e = ResponseError::new(
            Code::InvalidRequest,
            Some("a request needs a \"method\" string".into()),
        );
        return (id, Err(e));
    };
    // Read in place: a broadcast's params hold the whole transaction.
    static NO_PARAMS: Value = Value::Null;
    (
        id,
        calls::parse(method, request.get("params").unwrap_or(&NO_PARAMS)),
    )
}

impl Server {
    /// Runs a search on a blocking thread, at most [`MAX_SEARCHES`] at once, each until the
    /// call timeout.
    async fn search(&self, call: Call) -> Result<Value, ResponseError> {
        let refused = |m: &str| ResponseError::new(Code::InternalError, Some(m.into()));
        let Some(blocks) = self.blocks.clone() else {
            return Err(refused("this server does not serve searches"));
        };
        let what = match &call {
            Call::BlockSearch(_) => "block",
            _ => "transaction",
        };
        search::indexing(&blocks, what)?;
        let Ok(permit) = self.searches.clone().try_acquire_owned() else {
            return Err(refused("too many searches at once: try again shortly"));
        };
        let deadline = std::time::Instant::now() + self.limits.call_timeout;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            match call {
                Call::TxSearch { search, prove } => {
                    search::tx_search(&blocks, &search, prove, deadline)
                }
                Call::BlockSearch(search) => search::block_search(&blocks, &search, deadline),
                _ => Err(refused("not a search")),
            }
        });
        task.await
            .unwrap_or_else(|e| Err(refused(&format!("the search failed: {e}"))))
    }

    /// Hands a parsed call to the engine, or answers it here: a search runs to its end, and a
    /// call the engine's channel does not take in time is refused.
    async fn submit(&self, call: Call) -> Pending {
        if matches!(call, Call::TxSearch { .. } | Call::BlockSearch(_)) {
            return Pending::Answered(self.search(call).await);
        }
        let wait = match call {
            Call::BroadcastTx {
                mode: BroadcastMode::Commit,
                ..
            } => self.limits.commit_timeout,
            _ => self.limits.call_timeout,
        };
        let (tx, rx) = oneshot::channel();
        let request = RpcRequest { call, reply: tx };
        match tokio::time::timeout(wait, self.engine.send(request)).await {
            Err(_) => Pending::Answered(Err(ResponseError::new(
                Code::InternalError,
                Some("the node is busy".into()),
            ))),
            Ok(Err(_)) => Pending::Answered(Err(ResponseError::new(
                Code::InternalError,
                Some("the node is stopping".into()),
            ))),
            Ok(Ok(())) => Pending::Engine {
                reply: rx,
                deadline: tokio::time::Instant::now() + wait,
                wait,
            },
        }
    }

    /// One JSON-RPC request object.
    async fn single(&self, request: &Value) -> Value {
        let (id, call) = parse_request(request);
        let answer = match call {
            Ok(call) => self.submit(call).await.answer().await,
            Err(e) => Err(e),
        };
        envelope(id, answer)
    }

    /// A batch: its calls go to the engine one after another, in order, without waiting for
    /// the answers in between (its task answers them in one wake instead of one round trip
    /// each), at most [`BATCH_IN_FLIGHT`] unanswered, so one batch cannot queue a body's worth
    /// of calls ahead of every other client. Each answer is awaited at most the call's timeout
    /// after its call was handed over, and a search only once the calls before it are
    /// answered. Answers in the batch's order.
    async fn batch(&self, batch: &[Value]) -> Value {
        let mut answers = Vec::with_capacity(batch.len());
        let mut in_flight: std::collections::VecDeque<(Value, Pending)> =
            std::collections::VecDeque::with_capacity(BATCH_IN_FLIGHT);
        for request in batch {
            if in_flight.len() == BATCH_IN_FLIGHT {
                if let Some((id, pending)) = in_flight.pop_front() {
                    answers.push(envelope(id, pending.answer().await));
                }
            }
            let (id, call) = parse_request(request);
            // A search sees what the calls before it did.
            if matches!(call, Ok(Call::TxSearch { .. } | Call::BlockSearch(_))) {
                for (id, pending) in in_flight.drain(..) {
                    answers.push(envelope(id, pending.answer().await));
                }
            }
            let pending = match call {
                Ok(call) => self.submit(call).await,
                Err(e) => Pending::Answered(Err(e)),
            };
            in_flight.push_back((id, pending));
        }
        for (id, pending) in in_flight {
            answers.push(envelope(id, pending.answer().await));
        }
        Value::Array(answers)
    }

    async fn post(&self, body: Incoming) -> Response<Full<Bytes>> {
        let body = Limited::new(body, self.limits.max_body_bytes).collect();
        let late = || Err(format!("not whole after {:?}", self.limits.body_timeout).into());
        let read = tokio::time::timeout(self.limits.body_timeout, body).await;
        let bytes = match read.unwrap_or_else(|_| late()) {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                let too_large = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let (status, message) = if too_large {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body exceeds {} bytes", self.limits.max_body_bytes),
                    )
                } else {
                    (StatusCode::BAD_REQUEST, format!("reading the body: {e}"))
                };
                let error = ResponseError::new(Code::InvalidRequest, Some(message));
                return reply(status, &envelope(Value::Null, Err(error)));
            }
        };
        let parsed: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                let error = ResponseError::new(Code::ParseError, Some(e.to_string()));
                return reply(StatusCode::OK, &envelope(Value::Null, Err(error)));
            }
        };
        let answer = match &parsed {
            Value::Array(batch) if batch.is_empty() => envelope(
                Value::Null,
                Err(ResponseError::new(
                    Code::InvalidRequest,
                    Some("empty batch".into()),
                )),
            ),
            Value::Array(batch) => self.batch(batch).await,
            request @ Value::Object(_) => self.single(request).await,
            _ => envelope(
                Value::Null,
                Err(ResponseError::new(
                    Code::InvalidRequest,
                    Some("a request is a JSON object or an array of them".into()),
                )),
            ),
        };
        reply(StatusCode::OK, &answer)
    }

    async fn get(&self, path: &str, query: &str) -> Response<Full<Bytes>> {
        let method = path.trim_start_matches('/');
        if method.is_empty() {
            let list: Vec<String> = calls::METHODS.iter().map(|m| format!("/{m}")).collect();
            return reply(StatusCode::OK, &json!({ "endpoints": list }));
        }
        // CometBFT answers URI requests with id -1.
        let answer = match calls::uri_params(query).and_then(|p| calls::parse(method, &p)) {
            Ok(call) => self.submit(call).await.answer().await,
            Err(e) => Err(e),
        };
        let status = match &answer {
            Err(e) if e.code() == Code::MethodNotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::OK,
        };
        reply(status, &envelope(json!(-1), answer))
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        if path == "/websocket" && websocket::wanted(&request) {
            return websocket::upgrade(self, request);
        }
        match *request.method() {
            Method::POST => self.post(request.into_body()).await,
            Method::GET => self.get(&path, &query).await,
            _ => {
                let error = ResponseError::new(
                    Code::InvalidRequest,
                    Some("only GET and POST are served".into()),
                );
                reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &envelope(Value::Null, Err(error)),
                )
            }
        }
    }
}

/// Serves HTTP/1 on `listener`, at most `max_connections` connections at once, each holding
/// one of `descriptors` (more are closed at once), each request answered by `respond`, until
/// `stopped()` says so (asked at every accept).
pub async fn serve_http<R, F>(
    listener: TcpListener,
    (max_connections, descriptors): (usize, Descriptors),
    stopped: impl Fn() -> bool,
    respond: R,
) where
    R: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(max_connections));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if stopped() {
            return;
        }
        let (Ok(permit), Some(descriptor)) =
            (connections.clone().try_acquire_owned(), descriptors.take())
        else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = respond(request);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            drop((permit, descriptor));
        });
    }
}

/// Serves JSON-RPC on `listener` until the engine's channel closes; searches read `blocks`.
pub async fn serve(
    listener: TcpListener,
    engine: mpsc::Sender<RpcRequest>,
    limits: RpcLimits,
    blocks: Option<BlockStore>,
) {
    let connections = (limits.max_connections, limits.descriptors.clone());
    let server = Arc::new(Server {
        engine,
        limits,
        blocks,
        searches: Arc::new(Semaphore::new(MAX_SEARCHES)),
        websockets: Arc::new(Semaphore::new(websocket::MAX_CLIENTS)),
        rendered: websocket::Rendered::default(),
    });
    let watched = server.clone();
    serve_http(
        listener,
        connections,
        move || watched.engine.is_closed(),
        move |request| server.clone().handle(request),
    )
    .await;
}

/// Runs `serve` on `listener` on a thread named `name` with a runtime of its own, so that
/// parsing requests and writing answers never take the engine's thread.
pub fn spawn_on_own_thread<S, F>(
    listener: std::net::TcpListener,
    name: &str,
    serve: S,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    S: FnOnce(TcpListener) -> F + Send + 'static,
    F: std::future::Future<Output = ()>,
{
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _in_runtime = runtime.enter();
        TcpListener::from_std(listener)?
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(serve(listener)))
}

/// The name of the RPC server's thread: under the `contained-` prefix, so a panic in a
/// connection task (which tokio confines to that task) does not make PID 1 power the
/// validator off; it closes that connection only.
pub const RPC_THREAD: &str = "contained-rpc";

/// Serves JSON-RPC on `listener` from a thread of its own ([`RPC_THREAD`]) with its own
/// runtime, so parsing requests and writing answers never take the engine's thread; the
/// answers are still the engine's, between its inputs.
pub fn spawn_serve(
    listener: std::net::TcpListener,
    engine: mpsc::Sender<RpcRequest>,
    limits: RpcLimits,
    blocks: Option<BlockStore>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    spawn_on_own_thread(listener, RPC_THREAD, move |l| {
        serve(l, engine, limits, blocks)
    })
}
