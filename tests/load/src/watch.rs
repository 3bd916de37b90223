//! The load's watcher: a `NewBlockHeader` subscription over a node's `/websocket`, std only.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A `tm.event = 'NewBlockHeader'` subscription over a node's `/websocket`: each height as it
/// commits, seen without the delay or the load of polling. Not `NewBlock`: its message
/// carries every transaction's result too, which costs the node more to render than the
/// watcher's `block` call.
pub struct Commits(tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>);

impl Commits {
    /// Subscribes at the server at `addr` (host:port) and waits for the server to say it did;
    /// [`Commits::next`] then waits at most `wait`.
    pub fn subscribe(addr: &str, wait: Duration) -> Result<Commits> {
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(1 << 30))
            .max_frame_size(Some(1 << 30));
        let (mut socket, _) = tungstenite::client::connect_with_config(
            format!("ws://{addr}/websocket"),
            Some(config),
            3,
        )
        .with_context(|| format!("opening the WebSocket of {addr}"))?;
        if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_mut() {
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(wait))?;
        }
        let query = r#"{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"query":"tm.event = 'NewBlockHeader'"}}"#;
        socket.send(tungstenite::Message::text(query))?;
        let mut watcher = Commits(socket);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match watcher.message()? {
                Some((_, answer)) if answer["id"] == 1 && answer["result"].is_object() => {
                    return Ok(watcher)
                }
                _ if Instant::now() > deadline => bail!("{addr} never answered the subscription"),
                _ => {}
            }
        }
    }

    /// The next committed height and when its message arrived, or `None` if none came in
    /// time.
    pub fn next(&mut self) -> Result<Option<(Instant, u64)>> {
        loop {
            let Some((seen, message)) = self.message()? else {
                return Ok(None);
            };
            let header = &message["result"]["data"]["value"]["header"];
            match header["height"].as_str().and_then(|h| h.parse().ok()) {
                Some(height) => return Ok(Some((seen, height))),
                None if header.is_null() => continue,
                None => bail!("a header without a height: {header}"),
            }
        }
    }

    /// The next message and when it arrived, or `None` if none came in time.
    fn message(&mut self) -> Result<Option<(Instant, Value)>> {
        loop {
            let text = match self.0.read() {
                Ok(tungstenite::Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e).context("the NewBlockHeader subscription ended"),
            };
            let seen = Instant::now();
            let message: Value = serde_json::from_str(text.as_str())?;
            if let Some(error) = message.get("error") {
                bail!("the NewBlockHeader subscription failed: {error}");
            }
            return Ok(Some((seen, message)));
        }
    }
}
