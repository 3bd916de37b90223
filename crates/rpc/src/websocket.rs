//! `/websocket`, as CometBFT serves it: JSON-RPC over WebSocket, every method of the HTTP side
//! plus `subscribe`, `unsubscribe` and `unsubscribe_all`. A subscription gets every event
//! committed after it whose composite keys match its query (`events.rs`), as a JSON-RPC
//! message with the subscribe request's id.
//!
//! Everything a client sends is untrusted: messages are size-limited, at most
//! [`MAX_CLIENTS`] connections and [`MAX_SUBSCRIPTIONS`] subscriptions each, and a client
//! that does not take its messages within [`SEND_TIMEOUT`], or falls [`MAX_LAG`] heights
//! behind, is cut off as CometBFT cuts off one "not pulling messages fast enough". A height's
//! events are read from the block store once and shared by every connection; each event's
//! JSON is rendered when a subscription first receives it (`events.rs`), so `Tx` events cost
//! nothing while nobody subscribes to them.

use crate::events::{of_height, HeightEvents};
use crate::Server;
use bulwark_query::Query;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tendermint_rpc::response_error::{Code, ResponseError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// WebSocket connections at once (CometBFT's `max_subscription_clients`).
pub const MAX_CLIENTS: usize = 100;
/// Subscriptions per connection (CometBFT's `max_subscriptions_per_client`).
pub const MAX_SUBSCRIPTIONS: usize = 5;
/// How long one message may take to leave before the client is cut off.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Heights a subscriber may fall behind before its subscriptions are cancelled.
pub const MAX_LAG: u64 = 100;
/// Rendered heights kept for connections that are a little behind, and about how many
/// bytes of them (the highest is always kept; the lowest go first).
const RENDERED_KEPT: usize = 16;
const RENDERED_BYTES: usize = 64 << 20;

/// The events of recent heights, read once for every connection.
#[derive(Default)]
pub(crate) struct Rendered(Mutex<VecDeque<(u64, Arc<HeightEvents>)>>);

impl Rendered {
    /// Height `height`'s events, read from the store unless kept. What is kept is trimmed at
    /// every call, since the kept heights grow as their events are rendered.
    fn of(&self, server: &Server, height: u64) -> Result<Arc<HeightEvents>, ResponseError> {
        let cached = |kept: &VecDeque<(u64, Arc<HeightEvents>)>| {
            kept.iter()
                .find(|(h, _)| *h == height)
                .map(|(_, e)| e.clone())
        };
        let mut events = match self.0.lock().ok().as_deref().and_then(cached) {
            Some(found) => found,
            None => {
                let blocks = server
                    .blocks
                    .as_ref()
                    .ok_or_else(|| internal("this server has no block store"))?;
                Arc::new(of_height(blocks, height)?)
            }
        };
        if let Ok(mut kept) = self.0.lock() {
            // Another connection may have kept this height meanwhile: share its renderings.
            match cached(&kept) {
                Some(found) => events = found,
                None => kept.push_back((height, events.clone())),
            }
            let bytes = |kept: &VecDeque<(u64, Arc<HeightEvents>)>| -> usize {
                kept.iter().map(|(_, e)| e.size()).sum()
            };
            // The lowest height first: a connection far behind inserts old heights last, and
            // evicting in insertion order would make every current one read the latest again.
            while kept.len() > 1 && (kept.len() > RENDERED_KEPT || bytes(&kept) > RENDERED_BYTES) {
                let lowest = (0..kept.len()).min_by_key(|&i| kept[i].0).unwrap_or(0);
                kept.remove(lowest);
            }
        }
        Ok(events)
    }
}

fn internal(message: impl Into<String>) -> ResponseError {
    ResponseError::new(Code::InternalError, Some(message.into()))
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_string())));
    *response.status_mut() = status;
    response
}

/// Whether `request` asks for a WebSocket.
pub(crate) fn wanted(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers the upgrade request and runs the connection on its own task.
pub(crate) fn upgrade(
    server: Arc<Server>,
    mut request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let Some(key) = request.headers().get(hyper::header::SEC_WEBSOCKET_KEY) else {
        return plain(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(blocks) = server.blocks.clone() else {
        return plain(StatusCode::NOT_FOUND, "no subscriptions here");
    };
    let Ok(permit) = server.websockets.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("max_subscription_clients {MAX_CLIENTS} reached"),
        );
    };
    // The socket outlives the HTTP connection, which gives its descriptor back at the upgrade.
    let Some(descriptor) = server.limits.descriptors.take() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no descriptor left for clients",
        );
    };
    let upgraded = hyper::upgrade::on(&mut request);
    let max = server.limits.max_body_bytes;
    tokio::spawn(async move {
        let Ok(upgraded) = upgraded.await else {
            return;
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let committed = blocks.committed();
        Connection {
            server,
            subscriptions: Vec::new(),
            committed,
            next_height: 0,
        }
        .run(socket)
        .await;
        drop((permit, descriptor));
    });
    let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(accept) = hyper::header::HeaderValue::from_str(&accept) {
        headers.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

struct Subscription {
    id: Value,
    query: Query,
}

struct Connection {
    server: Arc<Server>,
    subscriptions: Vec<Subscription>,
    committed: tokio::sync::watch::Receiver<u64>,
    /// The first height not yet published to this connection.
    next_height: u64,
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The sending half of a connection, each message within [`SEND_TIMEOUT`].
struct Sender<'a> {
    sink: &'a mut futures_util::stream::SplitSink<Socket, Message>,
}

impl Sender<'_> {
    async fn send(&mut self, text: String) -> bool {
        let send = self.sink.send(Message::text(text));
        matches!(tokio::time::timeout(SEND_TIMEOUT, send).await, Ok(Ok(())))
    }
}

fn envelope(id: Value, answer: Result<Value, ResponseError>) -> Value {
    crate::envelope(id, answer)
}

fn query_of(params: &Value) -> Result<String, ResponseError> {
    let query = match params {
        Value::Object(m) => m.get("query"),
        Value::Array(list) => list.first(),
        _ => None,
    };
    query
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ResponseError::new(Code::InvalidParams, Some("missing query".into())))
}

impl Connection {
    async fn run(mut self, socket: Socket) {
        let (mut sink, mut stream) = socket.split();
        loop {
            let answer: Option<String> = tokio::select! {
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => Some(self.answer(text.as_str()).await.to_string()),
                    Some(Ok(Message::Binary(_))) => Some(envelope(Value::Null, Err(
                        ResponseError::new(Code::InvalidRequest, Some("send JSON-RPC as text".into())),
                    )).to_string()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    // Pings are answered by the library when it next writes or flushes.
                    Some(Ok(_)) => None,
                },
                changed = self.committed.changed(), if !self.subscriptions.is_empty() => {
                    if changed.is_err() {
                        return;
                    }
                    None
                },
            };
            let mut sender = Sender { sink: &mut sink };
            if let Some(text) = answer {
                if !sender.send(text).await {
                    return;
                }
            }
            if !self.subscriptions.is_empty() && !self.publish(&mut sender).await {
                return;
            }
            if !matches!(
                tokio::time::timeout(SEND_TIMEOUT, sink.flush()).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    }

    /// Sends the events of every height committed since the last call, one message at a time,
    /// to the subscriptions they match; past [`MAX_LAG`], the cancellation of every
    /// subscription instead. False when the client is gone or too slow.
    async fn publish(&mut self, sender: &mut Sender<'_>) -> bool {
        let latest = *self.committed.borrow_and_update();
        if latest.saturating_sub(self.next_height) >= MAX_LAG {
            let cancelled =
                "subscription was canceled (reason: client is not pulling messages fast enough)";
            for s in std::mem::take(&mut self.subscriptions) {
                let error = ResponseError::new(Code::ServerError, Some(cancelled.into()));
                if !sender.send(envelope(s.id, Err(error)).to_string()).await {
                    return false;
                }
            }
            return true;
        }
        while self.next_height <= latest {
            let height = self.next_height;
            self.next_height += 1;
            let events = match self.server.rendered.of(&self.server, height) {
                Ok(events) => events,
                Err(e) => {
                    for s in &self.subscriptions {
                        if !sender
                            .send(envelope(s.id.clone(), Err(e.clone())).to_string())
                            .await
                        {
                            return false;
                        }
                    }
                    continue;
                }
            };
            for i in 0..events.len() {
                for s in self
                    .subscriptions
                    .iter()
                    .filter(|s| events.matches(i, &s.query))
                {
                    let message = events
                        .message(i, &s.id, &s.query)
                        .unwrap_or_else(|e| envelope(s.id.clone(), Err(e)).to_string());
                    if !sender.send(message).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The answer to one text message: a subscription call, or any other call as the HTTP
    /// side answers it.
    async fn answer(&mut self, text: &str) -> Value {
        let request: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                let e = ResponseError::new(
                    Code::InvalidRequest,
                    Some("a request is a JSON object".into()),
                );
                return envelope(Value::Null, Err(e));
            }
            Err(e) => {
                return envelope(
                    Value::Null,
                    Err(ResponseError::new(Code::ParseError, Some(e.to_string()))),
                )
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        static NO_PARAMS: Value = Value::Null;
        let params = request.get("params").unwrap_or(&NO_PARAMS);
        let answer = match request.get("method").and_then(Value::as_str) {
            Some("subscribe") => self.subscribe(&id, params),
            Some("unsubscribe") => self.unsubscribe(params),
            Some("unsubscribe_all") => {
                self.subscriptions.clear();
                Ok(json!({}))
            }
            _ => return self.server.single(&request).await,
        };
        envelope(id, answer)
    }

    fn subscribe(&mut self, id: &Value, params: &Value) -> Result<Value, ResponseError> {
        let text = query_of(params)?;
        // CometBFT answers a query it cannot parse with an internal error.
        let query =
            Query::parse(&text).map_err(|e| internal(format!("failed to parse query: {e}")))?;
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(internal(format!(
                "max_subscriptions_per_client {MAX_SUBSCRIPTIONS} reached"
            )));
        }
        if self.subscriptions.iter().any(|s| s.query == query) {
            return Err(internal("already subscribed"));
        }
        if self.subscriptions.is_empty() {
            self.next_height = *self.committed.borrow_and_update() + 1;
        }
        self.subscriptions.push(Subscription {
            id: id.clone(),
            query,
        });
        Ok(json!({}))
    }

    fn unsubscribe(&mut self, params: &Value) -> Result<Value, ResponseError> {
        let query = Query::parse(&query_of(params)?)
            .map_err(|e| internal(format!("failed to parse query: {e}")))?;
        let before = self.subscriptions.len();
        self.subscriptions.retain(|s| s.query != query);
        if self.subscriptions.len() == before {
            return Err(internal("subscription not found"));
        }
        Ok(json!({}))
    }
}
