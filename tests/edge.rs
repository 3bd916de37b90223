//! The p2p edge of running validators under attack by peers that hold no key: idle
//! connections after every descriptor (H-3) and floods of forged handshakes (H-2).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use harness::ports::testnet_block;
use harness::process::{bulwark_binary, fast_testnet, start, wait_for, Node};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A TCP connection to `to` from loopback address `127.0.x.y` (a source of its own, as many
/// attackers' addresses look to the node's per-source limits).
fn connect_from(n: u32, to: SocketAddr) -> std::io::Result<TcpStream> {
    let source = std::net::Ipv4Addr::from(0x7f00_0000 | (0x0001_0000 + n));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// The tests here run one at a time: a second network would take the flood's CPU.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_files(node: &Node) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", node.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The open-files limit of the node under attack: room for its files, the databases' caches
/// and a pool of about 250 connections, half of them for peers.
const NOFILE: usize = 512;

/// Raises this process's soft open-files limit to its hard limit (prlimit, on itself), for the
/// attacker's side of a test.
fn raise_own_open_files_limit() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .unwrap()
        .to_string();
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string()])
        .arg(format!("--nofile={hard}:"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Keeps `to` full of connections that never time out, from a thread of its own until
/// `stop`: 512 held, each asking `GET /health` every 2 s (a node closes a silent one after
/// 10 s), those the node closed replaced.
fn keep_full_of_connections(
    to: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        let mut buf = [0u8; 4096];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            held.extend((held.len()..512).filter_map(|_| TcpStream::connect(to).ok()));
            held.retain_mut(|s| {
                let _ = s.set_nonblocking(true);
                let open = loop {
                    match s.read(&mut buf) {
                        Ok(0) => break false,
                        Ok(_) => continue,
                        Err(e) => break e.kind() == std::io::ErrorKind::WouldBlock,
                    }
                };
                open && s
                    .write_all(b"GET /health HTTP/1.1\r\nHost: node\r\n\r\n")
                    .is_ok()
            });
            std::thread::sleep(Duration::from_secs(2));
        }
    })
}

#[test]
fn idle_clients_take_no_descriptor_storage_or_validators_need() {
    let _alone = one_at_a_time();
    raise_own_open_files_limit();
    let dir = tempfile::tempdir().unwrap();
    let base = testnet_block(4).unwrap();
    let homes = fast_testnet(dir.path(), base).unwrap();
    let bin = bulwark_binary().unwrap();
    // Node 0 only accepts (node i dials the nodes before it): if its listener dies, it is cut
    // off for good.
    let nofile = format!("--nofile={NOFILE}:{NOFILE}");
    let mut node0 = Node::start_under(&["prlimit", &nofile, "--"], &bin, &homes[0]).unwrap();
    let p2p0: SocketAddr = format!("127.0.0.1:{base}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(p2p0).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "node 0 never listened: {}",
            node0.tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let at_rest = open_files(&node0);
    // The RPC port kept full of connections: without the pool they would take every
    // descriptor, with one pool for all they would take the validators' too. And idle p2p
    // connections from many sources.
    let rpc0: SocketAddr = harness::process::rpc_addr(base, 0).parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let filler = keep_full_of_connections(rpc0, stop.clone());
    node0
        .wait_for_peer_log("refused RPC and metrics clients", Duration::from_secs(30))
        .unwrap();
    let mut sources = 0..1024u32;
    let mut idle: Vec<TcpStream> = (&mut sources)
        .take(64)
        .filter_map(|n| connect_from(n, p2p0).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // The databases keep room for their caches (64 files each) and their flushes.
    let free = NOFILE - open_files(&node0);
    assert!(
        free >= 2 * 64 + 64,
        "{free} descriptors free under the attack ({at_rest} at rest)"
    );
    assert!(
        node0
            .wait_for_peer_log("accept failed", Duration::ZERO)
            .is_err(),
        "the node ran out of descriptors"
    );
    // A host that lowers the running node's limit below what it holds: `accept()` fails, and
    // the listener must outlive that (it once ended at the first EMFILE).
    let pid = node0.child.id().to_string();
    // The soft limit only: raising a hard limit again takes a capability containers lack.
    let set_limit = |n: usize| {
        let nofile = format!("--nofile={n}:");
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &nofile])
            .status()
            .unwrap();
        assert!(status.success(), "prlimit {nofile}");
    };
    // (Below the files open at rest: the lowest free descriptor is above it.)
    set_limit(at_rest / 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        for n in sources.by_ref().take(32) {
            if let Ok(s) = connect_from(n, p2p0) {
                idle.push(s);
            }
        }
        match node0.wait_for_peer_log("accept failed", Duration::from_secs(2)) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
            Err(_) => {}
        }
    }
    set_limit(NOFILE);
    // A validator joins while the clients hold all they may (the listener lived on).
    let mut node1 = start(&homes[1]).unwrap();
    node0
        .wait_for_peer_log("peer attested", Duration::from_secs(30))
        .unwrap();
    // And the rest join, the clients still at it: the network commits with node 0 in it.
    let mut rest: Vec<Node> = homes[2..].iter().map(|h| start(h).unwrap()).collect();
    {
        let mut all: Vec<&mut Node> = vec![&mut node0, &mut node1];
        all.extend(rest.iter_mut());
        wait_for(&mut all, 3, Duration::from_secs(60)).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    filler.join().unwrap();
    drop(idle);
    for n in std::iter::once(&mut node0)
        .chain(std::iter::once(&mut node1))
        .chain(rest.iter_mut())
    {
        n.stop_cleanly().unwrap();
    }
}

/// Seconds of each window; calm and flooded windows alternate [`FLOOD_ROUNDS`] times
/// (`cargo xtask bench --only edge` runs 3 pairs of 10 s).
const FLOOD_WINDOW: Duration = Duration::from_secs(3);
const FLOOD_ROUNDS: u32 = 3;
/// The flooded node's edge limits are lifted (2,000 handshakes/s from all sources, 1,024 in
/// progress, against 100/s and 32 by default), so that only the edge's own threads stand
/// between the verification work and consensus: on the consensus thread this fails.
const FLOOD_LIMITS: (u32, usize) = (2000, 1024);

/// Whether the node's own thread stayed free of the flood's work: the reason if not. Its RPC
/// latency, against the calm windows of the same run, tells (verification there made the
/// flooded p99 13 times the calm one in a planted run; on the edge's threads it is about
/// twice; the bar is at least 30 ms, for a very quiet calm); the absolute bar is the
/// last line.
fn latency_short_of_the_bar(figures: &harness::flood::EdgeFigures) -> Option<String> {
    let (calm_p99, loaded_p99) = (
        figures.calm.health_percentile(99.0),
        figures.loaded.health_percentile(99.0),
    );
    if loaded_p99 > (4.0 * calm_p99 + 10.0).max(30.0) {
        return Some(format!(
            "health p99 {loaded_p99:.1} ms under the flood against {calm_p99:.1} ms calm: the node's own thread does the flood's work"
        ));
    }
    (loaded_p99 > 100.0).then(|| format!("health p99 {loaded_p99:.1} ms under the flood"))
}

#[test]
fn a_flood_of_forged_handshakes_leaves_a_validators_commit_rate_and_rpc_health_intact() {
    let _alone = one_at_a_time();
    // Calm and flooded windows interleave so a few seconds of other load on the machine fall
    // on both. Every forged handshake names a real validator's key: each costs a P-384
    // verification. The latency bar decides in every run. The commit rate (≥ 80 % of calm)
    // has less margin on two cores that also run the load generator (82-96 % measured) and
    // gets a second run; with the handshakes planted on the node's own runtime it was 76 %.
    let mut misses = Vec::new();
    for _ in 0..2 {
        let figures = harness::flood::edge_figures(
            &bulwark_binary().unwrap(),
            (FLOOD_WINDOW, FLOOD_ROUNDS),
            2000,
            Some(FLOOD_LIMITS),
            1.0,
        )
        .unwrap();
        let (calm, loaded, flood) = (&figures.calm, &figures.loaded, &figures.flood);
        eprintln!(
            "calm: {:.2} heights/s, health p99 {:.1} ms; flooded ({:.0} handshakes/s: {} closed before TLS, {} refused in TLS, {} connect failures): {:.2} heights/s, health p99 {:.1} ms",
            calm.commit_rate,
            calm.health_percentile(99.0),
            flood.rate(),
            flood.closed_before_tls,
            flood.refused_in_tls,
            flood.connect_failed,
            loaded.commit_rate,
            loaded.health_percentile(99.0),
        );
        assert_eq!(flood.admitted, 0, "a forged handshake was let in");
        assert_eq!(
            (calm.health_errors, loaded.health_errors),
            (0, 0),
            "health probes failed (calm, flooded)"
        );
        assert!(
            flood.refused_in_tls > 0,
            "no forged certificate reached the verifier: the flood tested nothing"
        );
        if let Some(why) = latency_short_of_the_bar(&figures) {
            panic!("under the flood: {why}");
        }
        if loaded.commit_rate >= 0.8 * calm.commit_rate {
            return;
        }
        misses.push(format!(
            "commit rate {:.2}/s under the flood, {:.2}/s calm",
            loaded.commit_rate, calm.commit_rate
        ));
    }
    panic!("under the flood in both runs: {misses:?}");
}
