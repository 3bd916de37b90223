//! The JSON-RPC server runs on a thread of its own whose name puts its panics under the
//! `contained-` rule of PID 1 (a panic closes one connection, never the VM), and answers
//! calls through the engine's channel.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_rpc::{spawn_serve, RpcLimits, RpcRequest, RPC_THREAD};
use std::io::{Read, Write};

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
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"health"}"#;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    engine.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""id":7"#) && answer.contains(r#""result":{}"#),
        "{answer}"
    );
}
