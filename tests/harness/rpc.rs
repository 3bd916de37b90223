//! A JSON-RPC client for a node's RPC port, std only (no async runtime), for the harness and
//! `cargo xtask`'s load generator.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A JSON-RPC client over one keep-alive HTTP/1.1 connection (std only: no async runtime).
pub struct RpcClient {
    addr: String,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl RpcClient {
    /// A client for the server at `addr` (host:port); connects on first use.
    pub fn new(addr: &str) -> Self {
        RpcClient {
            addr: addr.into(),
            conn: None,
        }
    }

    fn connect(&mut self) -> Result<&mut (TcpStream, BufReader<TcpStream>)> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr)
                .with_context(|| format!("connecting to {}", self.addr))?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            let reader = BufReader::new(stream.try_clone()?);
            self.conn = Some((stream, reader));
        }
        self.conn.as_mut().ok_or_else(|| anyhow!("no connection"))
    }

    fn exchange(&mut self, body: &str) -> Result<Value> {
        let (stream, reader) = self.connect()?;
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: bulwark\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        stream.write_all(body.as_bytes())?;
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("connection closed");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse::<usize>().ok();
                }
            }
        }
        let length = length.ok_or_else(|| anyhow!("response without content-length"))?;
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// Posts `body`; reconnects once if the connection went away.
    pub fn post(&mut self, body: &str) -> Result<Value> {
        match self.exchange(body) {
            Ok(v) => Ok(v),
            Err(_) => {
                self.conn = None;
                self.exchange(body)
            }
        }
    }

    /// One call; its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let v = self.post(&body.to_string())?;
        match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => bail!("{method}: {}", v["error"]),
        }
    }
}

/// The node's latest committed height, as `status` says.
pub fn height(client: &mut RpcClient) -> Option<u64> {
    client
        .call("status", Value::Null)
        .ok()?
        .pointer("/sync_info/latest_block_height")?
        .as_str()?
        .parse()
        .ok()
}

/// `GET path` from the HTTP server at `addr` on a connection of its own: the status code and
/// the body (read to the end; the server closes the connection).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bulwark\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("{addr}{path}: no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{addr}{path}: no status in {head:?}"))?;
    Ok((status, body.to_string()))
}
