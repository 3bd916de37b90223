//! The real listener on loopback with real attested transports: connections beyond a source's
//! rate are closed before TLS while another source's genuine validator gets in, and the
//! handshakes run on the edge's threads, not the caller's.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::simulated::SimulatedPsp;
use bulwark_attest::{HexBytes, Measurements, Policy, Trust};
use bulwark_net::NetworkPolicy;
use bulwark_p2p::peers::spawn_listener;
use bulwark_p2p::{Descriptors, Edge, EdgeLimits, Link, PeerEvent, Transport};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const CHAIN: &str = "bulwark-p2p-listener";
const MEASUREMENT: [u8; 48] = [0x24; 48];

fn policy() -> NetworkPolicy {
    NetworkPolicy {
        attestation: Policy::strict(
            Trust::Simulated,
            Measurements::OneOf(vec![HexBytes(MEASUREMENT)]),
        ),
        chain_id: CHAIN.into(),
        genesis_sha256: [6; 32],
        validators: (1..=4u8).map(|i| [i; 32]).collect(),
        full_nodes: bulwark_net::FullNodes::Refused,
    }
}

fn transport(i: u8) -> Transport {
    Transport::new(
        Box::new(SimulatedPsp::new([i; 32], MEASUREMENT)),
        [i; 32],
        policy(),
    )
    .unwrap()
}

struct Node {
    addr: SocketAddr,
    events: mpsc::Receiver<PeerEvent>,
    edge: Edge,
    _transport: Transport,
}

fn listening(limits: EdgeLimits) -> Node {
    let edge = Edge::new(limits, "contained-test-edge").unwrap();
    let (tx, events) = mpsc::channel(64);
    let link = Link {
        max_frame: 1 << 20,
        chain_id: CHAIN.into(),
        hello: vec![0, 0, 0, 0],
        events: tx,
        transactions: None,
        next_id: Arc::new(AtomicU64::new(1)),
        edge: edge.handle(),
        preverifier: None,
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let transport = transport(1);
    spawn_listener(listener, transport.handle(), link);
    Node {
        addr,
        events,
        edge,
        _transport: transport,
    }
}

/// Whether the node closed a plain TCP connection at once (refused before TLS) rather than
/// waiting for a ClientHello.
fn closed_at_once(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
        || matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

/// A genuine validator dialling from `source` (a loopback address of its own).
fn dial_from(source: [u8; 4], to: SocketAddr, i: u8) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((source, 0)))
            .map_err(|e| e.to_string())?;
        let stream = socket.connect(to).await.map_err(|e| e.to_string())?;
        let t = transport(i);
        t.handle().dial(stream).await.map(|_| ())
    })
}

async fn next_connected(events: &mut mpsc::Receiver<PeerEvent>) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), events.recv()).await {
            Ok(Some(PeerEvent::Connected(..))) => return true,
            Ok(Some(_)) => continue,
            _ => return false,
        }
    }
}

#[test]
fn a_source_over_its_rate_is_closed_before_tls_while_another_source_gets_in() {
    let mut node = listening(EdgeLimits {
        per_ip_rate: 0.001,
        per_ip_burst: 3.0,
        ..EdgeLimits::default()
    });
    // Three idle connections from 127.0.0.1 are let through to their handshakes (held open
    // by the node, waiting for a ClientHello); the next ones are closed at once.
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(node.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for s in &mut held {
        assert!(
            !closed_at_once(s),
            "a connection within the burst was closed"
        );
    }
    for _ in 0..5 {
        let mut s = TcpStream::connect(node.addr).unwrap();
        assert!(
            closed_at_once(&mut s),
            "a connection over the rate was held"
        );
    }
    let counters = node.edge.handle();
    assert_eq!(
        counters
            .counters()
            .refused_source_rate
            .load(Ordering::Relaxed),
        5
    );
    // A genuine validator from another address is attested.
    dial_from([127, 0, 0, 2], node.addr, 2).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(next_connected(&mut node.events)));
}

#[test]
fn handshakes_beyond_the_cap_are_refused_at_once_and_a_slot_frees_when_one_ends() {
    let mut node = listening(EdgeLimits {
        max_handshakes: 2,
        ..EdgeLimits::default()
    });
    let held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(node.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut over = TcpStream::connect(node.addr).unwrap();
    assert!(closed_at_once(&mut over));
    assert!(dial_from([127, 0, 0, 3], node.addr, 3).is_err());
    // The idle ones leave; a genuine validator then gets a slot.
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    dial_from([127, 0, 0, 3], node.addr, 3).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(rt.block_on(next_connected(&mut node.events)));
    assert!(
        node.edge
            .handle()
            .counters()
            .refused_handshakes
            .load(Ordering::Relaxed)
            >= 2
    );
}

#[test]
fn connections_beyond_the_edges_descriptors_are_closed_at_once_and_one_frees_its_place() {
    let node = listening(EdgeLimits {
        descriptors: Descriptors::pool(2, "peer connections"),
        ..EdgeLimits::default()
    });
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(node.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut over = TcpStream::connect(node.addr).unwrap();
    assert!(closed_at_once(&mut over), "a third connection was kept");
    let edge = node.edge.handle();
    assert!(edge.counters().refused_descriptors.load(Ordering::Relaxed) >= 1);
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = TcpStream::connect(node.addr).unwrap();
    assert!(
        !closed_at_once(&mut again),
        "a closed connection's descriptor never came back"
    );
}
