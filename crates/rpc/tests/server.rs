//! The JSON-RPC server runs on a thread of its own whose name puts its panics under the
//! `contained-` rule of PID 1 (a panic closes one connection, never the VM), and answers
//! calls through the engine's channel.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_rpc::calls::Call;
use bulwark_rpc::{spawn_serve, RpcLimits, RpcRequest, RPC_THREAD};
use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn the_server_has_a_contained_thread_of_its_own_and_answers_through_the_engine() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RpcRequest>(4);
    let server = spawn_serve(listener, tx, RpcLimits::default(), None).unwrap();
    assert_eq!(server.thread().name(), Some(RPC_THREAD));
    assert!(RPC_THREAD.starts_with("contained-"));

    let engine = std::thread::spawn(move || {
        let request = rx.blocking_recv().unwrap();
        assert_eq!(request.call, bulwark_rpc::calls::Call::Health);
        assert_ne!(std::thread::current().name(), Some(RPC_THREAD));
        request.reply.send(Ok(serde_json::json!({}))).unwrap();
    });
    let answer = post(addr, r#"{"jsonrpc":"2.0","id":7,"method":"health"}"#);
    engine.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""id":7"#) && answer.contains(r#""result":{}"#),
        "{answer}"
    );
}

/// Posts `body` and reads the whole answer.
fn post(addr: std::net::SocketAddr, body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_batch_reaches_the_engine_at_once_in_order_and_is_answered_in_order() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RpcRequest>(16);
    let _server = spawn_serve(listener, tx, RpcLimits::default(), None).unwrap();
    // The engine answers nothing until it holds every call of the batch, then the last first.
    let engine = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut held = Vec::new();
        for i in 0..3 {
            let next = rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), rx.recv()).await });
            match next {
                Ok(Some(request)) => held.push(request),
                _ => panic!("call {i} of the batch did not come while the others waited"),
            }
        }
        let heights: Vec<_> = held
            .iter()
            .map(|r| match r.call {
                bulwark_rpc::calls::Call::Block(h) => h,
                ref other => panic!("expected a block call, got {other:?}"),
            })
            .collect();
        assert_eq!(heights, [Some(1), Some(2), Some(3)], "out of order");
        for request in held.into_iter().rev() {
            let height = match request.call {
                bulwark_rpc::calls::Call::Block(h) => h,
                _ => None,
            };
            request
                .reply
                .send(Ok(serde_json::json!({ "height": height })))
                .unwrap();
        }
    });
    let call = |id: u64| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"block","params":{{"height":"{id}"}}}}"#)
    };
    let answer = post(addr, &format!("[{},{},{}]", call(1), call(2), call(3)));
    engine.join().unwrap();
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let answers: serde_json::Value = serde_json::from_str(body).unwrap();
    let pairs: Vec<(u64, u64)> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["id"].as_u64().unwrap(),
                a["result"]["height"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(pairs, [(1, 1), (2, 2), (3, 3)], "{answer}");
}

#[test]
fn a_batch_has_at_most_its_bound_of_calls_at_the_engine_at_once() {
    use bulwark_rpc::BATCH_IN_FLIGHT;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A channel smaller than the bound: later calls queue for room, as on a busy node.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RpcRequest>(8);
    let _server = spawn_serve(listener, tx, RpcLimits::default(), None).unwrap();
    let calls = BATCH_IN_FLIGHT + 6;
    let engine = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let next = |rx: &mut tokio::sync::mpsc::Receiver<RpcRequest>, wait| {
            rt.block_on(async { tokio::time::timeout(wait, rx.recv()).await })
                .ok()
                .flatten()
        };
        let mut held = std::collections::VecDeque::new();
        while held.len() < BATCH_IN_FLIGHT {
            held.push_back(next(&mut rx, Duration::from_secs(5)).expect("a call of the batch"));
        }
        // None answered: no call beyond the bound comes.
        assert!(
            next(&mut rx, Duration::from_millis(300)).is_none(),
            "more than {BATCH_IN_FLIGHT} calls in flight"
        );
        // Answered together: the rest come, still in the batch's order.
        let mut arrived = Vec::new();
        for request in held {
            arrived.push(request.call.clone());
            request.reply.send(Ok(serde_json::json!({}))).unwrap();
        }
        while arrived.len() < calls {
            let request = next(&mut rx, Duration::from_secs(5)).expect("the next call");
            arrived.push(request.call.clone());
            request.reply.send(Ok(serde_json::json!({}))).unwrap();
        }
        arrived
    });
    let batch: Vec<String> = (1..=calls)
        .map(|h| {
            format!(r#"{{"jsonrpc":"2.0","id":{h},"method":"block","params":{{"height":"{h}"}}}}"#)
        })
        .collect();
    let answer = post(addr, &format!("[{}]", batch.join(",")));
    let arrived = engine.join().unwrap();
    let in_order: Vec<_> = (1..=calls as u64).map(|h| Call::Block(Some(h))).collect();
    assert_eq!(
        arrived, in_order,
        "the engine got the batch's calls out of order"
    );
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let answers: serde_json::Value = serde_json::from_str(body).unwrap();
    let ids: Vec<u64> = answers
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=calls as u64).collect::<Vec<_>>());
}

/// Asks `addr` for a WebSocket: the stream if it answered 101 (it stays open as the socket),
/// else the status line's start.
fn websocket(addr: std::net::SocketAddr) -> Result<std::net::TcpStream, String> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let asked = write!(
        stream,
        "GET /websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut head = [0u8; 12];
    match asked.and_then(|()| stream.read_exact(&mut head)) {
        Ok(()) if &head == b"HTTP/1.1 101" => Ok(stream),
        Ok(()) => Err(String::from_utf8_lossy(&head).into()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn websockets_hold_a_descriptor_of_the_pool_after_the_upgrade() {
    let dir = std::env::temp_dir().join(format!("bulwark-rpc-ws-{}", std::process::id()));
    let store = bulwark_store::Store::open(&dir).unwrap();
    let blocks = bulwark_store::blocks::BlockStore::open(&store).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel::<RpcRequest>(4);
    let limits = RpcLimits {
        descriptors: bulwark_rpc::Descriptors::pool(4, "clients"),
        ..RpcLimits::default()
    };
    let _server = spawn_serve(listener, tx, limits, Some(blocks)).unwrap();
    // An upgrade holds two for a moment: its HTTP connection's and the socket's.
    let mut sockets: Vec<_> = (0..3).map(|_| websocket(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    // The HTTP connections gave theirs back at the upgrade; the sockets did not.
    assert_eq!(websocket(addr).unwrap_err(), "HTTP/1.1 503");
    sockets.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while websocket(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "a closed socket's descriptor never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop((sockets, store));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_body_that_never_ends_is_answered_and_its_connection_closed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel::<RpcRequest>(4);
    let limits = RpcLimits {
        body_timeout: Duration::from_millis(300),
        ..RpcLimits::default()
    };
    let _server = spawn_serve(listener, tx, limits, None).unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"jsonrpc\""
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("not whole after 300ms"), "{answer}");
}
