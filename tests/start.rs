//! `bulwark start` as an operator runs it: four real processes over TCP on loopback commit
//! blocks, stop cleanly on SIGTERM and restart from their data one by one, a node killed with
//! SIGKILL catches up, and all four restarted at once wait, each saying why (the instance
//! rule's liveness limit). A SIGINT that arrives while the driver works, between two of its
//! waits, still stops it cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "shared/host.rs"]
mod host;

use harness::ports::testnet_block;
use harness::process::{bulwark_binary, fast_testnet, start, wait_for, Node};
use harness::process::{testnet, FAST_TIMEOUTS};
use prometheus_parse::Value;
use std::time::Duration;

#[path = "shared/metrics.rs"]
mod metrics;
use metrics::{scrape, value as gauge};

/// Whether `node` logged a line containing `needle` (its whole log, not just the tail).
fn logged(node: &Node, needle: &str) -> bool {
    std::fs::read_to_string(node.home.join("bulwark.log"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(needle))
}

/// Whether the driver logged that it stopped on SIGINT (a line ending in `SIGINT`; the
/// interposer's own line says more).
fn heard_sigint(node: &Node) -> bool {
    std::fs::read_to_string(node.home.join("bulwark.log"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.trim_end().ends_with("SIGINT"))
}

/// Waits until `node` logs a line containing `needle`.
fn wait_logged(node: &mut Node, needle: &str, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        node.poll();
        if logged(node, needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn four_processes_commit_restart_one_by_one_recover_from_a_kill_and_wait_after_a_full_restart() {
    let dir = tempfile::tempdir().unwrap();
    let base = testnet_block(4).unwrap();
    let mut config = FAST_TIMEOUTS.to_vec();
    config.push(metrics::ON);
    let homes = testnet(&bulwark_binary().unwrap(), dir.path(), 4, base, &config).unwrap();
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h).unwrap()).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 10, Duration::from_secs(120)).unwrap();
    }
    // What an operator's Prometheus sees: CometBFT's names, labelled with the chain id.
    let chain_id = harness::rpc::RpcClient::new(&harness::process::rpc_addr(base, 0))
        .call("status", serde_json::json!({}))
        .unwrap()["node_info"]["network"]
        .as_str()
        .unwrap()
        .to_string();
    let metrics = scrape(base, 0);
    let chain = [("chain_id", chain_id.as_str())];
    assert!(gauge(&metrics, "cometbft_consensus_latest_block_height", &chain) >= 10.0);
    assert_eq!(
        gauge(&metrics, "cometbft_consensus_validators", &chain),
        4.0
    );
    assert_eq!(gauge(&metrics, "cometbft_p2p_peers", &chain), 3.0);
    assert_eq!(gauge(&metrics, "bulwark_instance_signing", &chain), 1.0);
    let interval = metrics
        .samples
        .iter()
        .find(|s| s.metric == "cometbft_consensus_block_interval_seconds")
        .unwrap();
    assert!(
        matches!(&interval.value, Value::Histogram(buckets) if buckets.last().is_some_and(|b| b.count >= 8.0)),
        "{interval:?}"
    );
    // Each ABCI method's call times: a FinalizeBlock and a Commit per height, a
    // ProcessProposal per block another validator proposed.
    for (method, least) in [
        ("finalize_block", 10.0),
        ("commit", 10.0),
        ("process_proposal", 1.0),
    ] {
        let calls = metrics
            .samples
            .iter()
            .find(|s| {
                s.metric == "cometbft_abci_connection_method_timing_seconds"
                    && s.labels.get("method") == Some(method)
            })
            .unwrap_or_else(|| panic!("no timing of {method}"));
        assert!(
            matches!(&calls.value, Value::Histogram(buckets) if buckets.last().is_some_and(|b| b.count >= least)),
            "{method}: {calls:?}"
        );
    }
    // A rolling restart: each process in turn stops cleanly on SIGTERM and starts again from
    // its data, the chain continuing from where it was. Every start is a new instance of its
    // validator (bulwark_instance): it signs again once the other three commit its claim.
    for i in 0..nodes.len() {
        nodes[i].stop_cleanly().unwrap();
        let top = nodes.iter().map(|n| n.last).max().unwrap();
        nodes[i] = start(&homes[i]).unwrap();
        let signing = "signing; this instance holds the key since height";
        assert!(
            wait_logged(&mut nodes[i], signing, Duration::from_secs(60)),
            "node {i} did not say it signs again:\n{}",
            nodes[i].tail()
        );
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, top + 4, Duration::from_secs(120)).unwrap();
    }

    // SIGKILL one node; the other three (a quorum) go on; the killed one comes back and catches up.
    nodes[2].signal("-KILL").unwrap();
    let _ = nodes[2].child.wait();
    let ahead = {
        let (left, right) = nodes.split_at_mut(2);
        let mut three: Vec<&mut Node> = left.iter_mut().chain(right[1..].iter_mut()).collect();
        let target = three.iter().map(|n| n.last).max().unwrap() + 5;
        wait_for(&mut three, target, Duration::from_secs(120)).unwrap();
        target
    };
    nodes[2] = start(&homes[2]).unwrap();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, ahead + 3, Duration::from_secs(120)).unwrap();
    }

    // The liveness limit: all four stopped and started at once. Each is a new instance that
    // may sign only after the others commit its claim, and none can: the network waits (for
    // good, safety first: any of them could be a copy of a disk whose other copy runs on) and
    // every node says why.
    for n in nodes.iter_mut() {
        n.stop_cleanly().unwrap();
    }
    let reached = nodes.iter().map(|n| n.last).max().unwrap();
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(8));
    for (i, n) in nodes.iter_mut().enumerate() {
        assert!(
            n.poll() <= reached + 1,
            "node {i} committed past {reached} without a claim"
        );
        // (A loaded machine may take a while to get a node to its first signing attempt.)
        assert!(
            wait_logged(
                n,
                "not signing until this instance's claim commits",
                Duration::from_secs(60)
            ),
            "node {i} did not say why it waits:\n{}",
            n.tail()
        );
        let status = harness::rpc::RpcClient::new(&harness::process::rpc_addr(base, i))
            .call("status", serde_json::json!({}))
            .unwrap();
        assert_eq!(status["bulwark_instance"]["signing"], false, "{status}");
        // ... and in its metrics: not signing, because another instance holds the key.
        let metrics = scrape(base, i);
        assert_eq!(gauge(&metrics, "bulwark_instance_signing", &[]), 0.0);
        assert_eq!(
            gauge(
                &metrics,
                "bulwark_instance_state",
                &[("state", "elsewhere")]
            ),
            1.0
        );
        assert_eq!(
            gauge(&metrics, "bulwark_instance_state", &[("state", "holder")]),
            0.0
        );
    }
    for n in nodes.iter_mut() {
        n.stop_cleanly().unwrap();
    }
}

/// Runs `bulwark start` on `home` for at most `limit`: its exit code and stderr, or `None` if
/// it was still running (then it is killed).
fn run_briefly(home: &std::path::Path, limit: Duration) -> Option<(Option<i32>, String)> {
    use std::io::Read;
    let mut child = std::process::Command::new(harness::process::bulwark_binary().unwrap())
        .args(["start", "--home", home.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Some((status.code(), stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_wal_record_written_by_the_host_is_refused_at_restart_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let homes = fast_testnet(dir.path(), testnet_block(4).unwrap()).unwrap();
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h).unwrap()).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 3, Duration::from_secs(120)).unwrap();
    }
    for n in nodes.iter_mut() {
        n.stop_cleanly().unwrap();
    }
    // The host appends a record to node 1's WAL at the height in progress.
    let store_dir = homes[1].join("data/store");
    host::append_wal_record(&store_dir);
    let (code, stderr) = run_briefly(&homes[1], Duration::from_secs(60))
        .expect("the node replayed a WAL record the host wrote");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("fails its MAC") && stderr.contains(store_dir.to_str().unwrap()),
        "{stderr}"
    );
}

#[test]
fn a_sigint_that_arrives_while_the_driver_works_still_stops_it_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let homes = fast_testnet(dir.path(), testnet_block(4).unwrap()).unwrap();
    let mut honest: Vec<Node> = homes[..3].iter().map(|h| start(h).unwrap()).collect();
    // The real driver, which at height 2 sends itself SIGINT from inside a tick and keeps its
    // engine thread busy while the signal is handed out.
    let mut interrupted = Node::start_byzantine("interrupted-while-busy", &homes[3]).unwrap();
    assert!(
        wait_logged(
            &mut interrupted,
            "sent itself SIGINT while busy",
            Duration::from_secs(120)
        ),
        "{}",
        interrupted.tail()
    );
    let status = interrupted.wait_exit(Duration::from_secs(10));
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "{status:?}\n{}",
        interrupted.tail()
    );
    // It stopped because it heard the signal, not for another reason.
    assert!(
        heard_sigint(&interrupted) && logged(&interrupted, "shutting down"),
        "{}",
        interrupted.tail()
    );
    for n in honest.iter_mut() {
        n.stop_cleanly().unwrap();
    }
}
