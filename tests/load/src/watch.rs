//! The load's watcher: a `NewBlock` subscription over a node's `/websocket`, std only.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::net::TcpStream;
use std::time::Duration;

/// A `tm.event = 'NewBlock'` subscription over a node's `/websocket`: each block as it
/// commits, seen without the delay or the load of polling.
pub struct NewBlocks(tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>);

impl NewBlocks {
    /// Subscribes at the server at `addr` (host:port); [`NewBlocks::next`] waits at most `wait`.
    pub fn subscribe(addr: &str, wait: Duration) -> Result<NewBlocks> {
        let (mut socket, _) = tungstenite::connect(format!("ws://{addr}/websocket"))
            .with_context(|| format!("opening the WebSocket of {addr}"))?;
        if let tungstenite::stream::MaybeTlsStream::Plain(tcp) = socket.get_mut() {
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(wait))?;
        }
        let query = r#"{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{"query":"tm.event = 'NewBlock'"}}"#;
        socket.send(tungstenite::Message::text(query))?;
        Ok(NewBlocks(socket))
    }

    /// The next committed block (its `block` object), or `None` if none came in time.
    pub fn next(&mut self) -> Result<Option<Value>> {
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
            let mut message: Value = serde_json::from_str(text.as_str())?;
            if let Some(error) = message.get("error") {
                bail!("the NewBlock subscription failed: {error}");
            }
            // The subscribe call's own answer carries no block.
            match message["result"]["data"]["value"]["block"].take() {
                Value::Null => continue,
                block => return Ok(Some(block)),
            }
        }
    }
}
