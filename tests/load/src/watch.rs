//! The load's watcher: a `NewBlock` subscription over a node's `/websocket`, std only.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A `tm.event = 'NewBlock'` subscription over a node's `/websocket`: each block as it
/// commits, seen without the delay or the load of polling.
pub struct NewBlocks(tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>);

impl NewBlocks {
    /// Subscribes at the server at `addr` (host:port) and waits for the server to say it did;
    /// [`NewBlocks::next`] then waits at most `wait`.
    pub fn subscribe(addr: &str, wait: Duration) -> Result<NewBlocks> {
        // A NewBlock of a full block of small transactions is several times its size.
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
        let query = r#"{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"query":"tm.event = 'NewBlock'"}}"#;
        socket.send(tungstenite::Message::text(query))?;
        let mut watcher = NewBlocks(socket);
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

    /// The next committed block (its `block` object) and when its message arrived, or `None`
    /// if none came in time.
    pub fn next(&mut self) -> Result<Option<(Instant, Value)>> {
        loop {
            let Some((seen, mut message)) = self.message()? else {
                return Ok(None);
            };
            match message["result"]["data"]["value"]["block"].take() {
                Value::Null => continue,
                block => return Ok(Some((seen, block))),
            }
        }
    }

    /// The next message and when it arrived (before parsing it: a NewBlock of a large block
    /// takes a while), or `None` if none came in time.
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
                Err(e) => return Err(e).context("the NewBlock subscription ended"),
            };
            let seen = Instant::now();
            let message: Value = serde_json::from_str(text.as_str())?;
            if let Some(error) = message.get("error") {
                bail!("the NewBlock subscription failed: {error}");
            }
            return Ok(Some((seen, message)));
        }
    }
}
