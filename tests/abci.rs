//! Existing ABCI applications under real `bulwark` processes (`proxy_app`, as in CometBFT's
//! config.toml): four validators, each beside its own `tendermint-kvstore` (the
//! `tendermint-abci` crate's kvstore and server, code nobody here wrote), commit; the
//! application a node serves answers `abci_info`; an application that dies stops its node
//! with an error naming it, and that validator signs nothing after; an application that
//! breaks ABCI (no result for a transaction) stops every node, as it stops CometBFT.

#[allow(clippy::expect_used)]
#[path = "shared/metrics.rs"]
mod metrics;

use anyhow::{bail, Context, Result};
use harness::process::{abci_app_binary, bulwark_binary, testnet, wait_for, Node, FAST_TIMEOUTS};
use harness::rpc::RpcClient;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An application process, killed when dropped.
struct App(Child);

impl App {
    /// Starts `bin ADDR` and waits for it to listen.
    fn start(bin: &std::path::Path, addr: &str) -> Result<App> {
        let mut child = Command::new(bin)
            .arg(addr)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("listening on") {
            let _ = child.kill();
            bail!("{} did not listen: {line:?}", bin.display());
        }
        Ok(App(child))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The validator address that signed each precommit of the commit at `height`.
fn signers(rpc: &mut RpcClient, height: u64) -> Result<Vec<String>> {
    let commit = rpc.call("commit", serde_json::json!({"height": height.to_string()}))?;
    let sigs = commit
        .pointer("/signed_header/commit/signatures")
        .and_then(|s| s.as_array())
        .context("commit without signatures")?;
    Ok(sigs
        .iter()
        .filter_map(|s| s["validator_address"].as_str().map(str::to_string))
        .filter(|a| !a.is_empty())
        .collect())
}

fn wait_exit_with(node: &mut Node, needle: &str) -> Result<()> {
    let status = node.wait_exit(Duration::from_secs(30))?;
    if status.success() {
        bail!("the node exited successfully; log:\n{}", node.tail());
    }
    if !node.tail().contains(needle) {
        bail!("the node's log does not say {needle:?}:\n{}", node.tail());
    }
    Ok(())
}

/// A 4-validator testnet in a fresh directory, node `i` on its own `app_bin` listening at
/// `address(dir, i)` (`proxy_app`'s form), every application and node started.
struct AppNetwork {
    dir: std::path::PathBuf,
    base: u16,
    apps: Vec<App>,
    nodes: Vec<Node>,
}

impl AppNetwork {
    fn start(
        tag: &str,
        app_bin: &str,
        address: impl Fn(&std::path::Path, u16, usize) -> String,
    ) -> Result<AppNetwork> {
        let bin = bulwark_binary()?;
        let app_bin = abci_app_binary(app_bin)?;
        let dir = std::env::temp_dir().join(format!("bulwark-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let base = harness::ports::testnet_block(4)?;
        let homes = testnet(&bin, &dir, 4, base, FAST_TIMEOUTS)?;
        let mut apps = Vec::new();
        for (i, home) in homes.iter().enumerate() {
            let addr = address(&dir, base, i);
            apps.push(App::start(&app_bin, &addr)?);
            let cfg = home.join("config/config.toml");
            let text = std::fs::read_to_string(&cfg)?
                .replace(
                    "proxy_app = \"kvstore\"",
                    &format!("proxy_app = \"{addr}\""),
                )
                .replace("abci_timeout_ms = 30000", "abci_timeout_ms = 5000")
                .replace(metrics::ON.0, metrics::ON.1);
            if !text.contains(&addr) || !text.contains("abci_timeout_ms = 5000") {
                bail!("config.toml has no proxy_app/abci_timeout_ms to set:\n{text}");
            }
            std::fs::write(&cfg, text)?;
        }
        let nodes = homes
            .iter()
            .map(|h| Node::start(&bin, h))
            .collect::<Result<Vec<_>>>()?;
        Ok(AppNetwork {
            dir,
            base,
            apps,
            nodes,
        })
    }

    fn rpc(&self, i: usize) -> RpcClient {
        RpcClient::new(&harness::process::rpc_addr(self.base, i))
    }

    fn wait_all(&mut self, height: u64) -> Result<()> {
        wait_for(
            &mut self.nodes.iter_mut().collect::<Vec<_>>(),
            height,
            Duration::from_secs(120),
        )
    }
}

impl Drop for AppNetwork {
    fn drop(&mut self) {
        self.nodes.clear();
        self.apps.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn validators_run_an_abci_application_nobody_here_wrote_and_stop_when_it_fails() -> Result<()> {
    let start = Instant::now();
    let mut net = AppNetwork::start("abci", "tendermint-kvstore", |_, base, i| {
        format!("127.0.0.1:{}", usize::from(base) + 10 * i + 5)
    })?;
    net.wait_all(4)?;
    let mut rpc0 = net.rpc(0);
    eprintln!("abci test: height 4 after {:?}", start.elapsed());
    let info = rpc0.call("abci_info", serde_json::Value::Null)?;
    assert_eq!(info["response"]["data"], "kvstore-rs", "{info}");

    // Node 3's application dies: node 3 stops, naming it; the other three go on without it.
    let address3 = net.rpc(3).call("status", serde_json::Value::Null)?["validator_info"]["address"]
        .as_str()
        .context("no validator address")?
        .to_string();
    drop(net.apps.pop());
    wait_exit_with(&mut net.nodes[3], "ABCI application at tcp://")?;
    let last3 = net.nodes[3].poll();
    eprintln!(
        "abci test: node 3 stopped at height {last3} after {:?}",
        start.elapsed()
    );
    let h = net.nodes[0].poll();
    wait_for(
        &mut net.nodes[..3].iter_mut().collect::<Vec<_>>(),
        h + 3,
        Duration::from_secs(60),
    )?;
    // It precommitted at most the height its application failed to finalize.
    let top = net.nodes[0].poll();
    for height in last3 + 2..=top {
        let signed = signers(&mut rpc0, height)?;
        assert!(
            !signed.contains(&address3),
            "validator 3 signed height {height} after its application died at {last3}"
        );
    }

    // tendermint-abci's kvstore answers FinalizeBlock without tx results: a block with a
    // transaction stops every node, as CometBFT v0.38 stops ("expected tx results length to
    // match size of transactions in block").
    let sent = rpc0.call("broadcast_tx_sync", serde_json::json!({"tx": "YT0x"}))?;
    assert_eq!(sent["code"], 0, "{sent}");
    for node in net.nodes[..3].iter_mut() {
        wait_exit_with(node, "1 txs answered with 0 tx results")?;
    }
    eprintln!(
        "abci test: stopped on the broken application after {:?}",
        start.elapsed()
    );
    Ok(())
}

/// What the conformance application says it checked (`abci_info`'s data).
fn calls_checked(rpc: &mut RpcClient) -> Result<String> {
    let info = rpc.call("abci_info", serde_json::Value::Null)?;
    Ok(info["response"]["data"]
        .as_str()
        .context("no data")?
        .to_string())
}

/// How many `call`s `data` counts.
fn count_of(data: &str, call: &str) -> u64 {
    data.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{call}=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_conformance_application_finds_every_request_field_as_cometbft_sends_it() -> Result<()> {
    let mut net = AppNetwork::start("abci-conformance", "abci-conformance", |dir, _, i| {
        format!("unix://{}", dir.join(format!("app{i}.sock")).display())
    })?;
    net.wait_all(3)?;
    let mut rpc0 = net.rpc(0);
    let committed = rpc0.call(
        "broadcast_tx_commit",
        serde_json::json!({"tx": "bmFtZT1idWx3YXJr"}),
    )?;
    assert_eq!(committed["tx_result"]["code"], 0, "{committed}");
    // Node 0 answered once it committed; node 1 may still be finishing that height.
    let height: u64 = committed["height"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .context("broadcast_tx_commit without a height")?;
    net.wait_all(height)?;
    let q = net
        .rpc(1)
        .call("abci_query", serde_json::json!({"data": "6e616d65"}))?;
    assert_eq!(q["response"]["value"], "YnVsd2Fyaw==", "{q}");
    // A validator restarts on the same application: the handshake's Info, then its blocks.
    net.nodes[2].stop_cleanly()?;
    let h = net.nodes[0].poll();
    net.nodes[2] = harness::process::start(&net.nodes[2].home.clone())?;
    net.wait_all(h + 4)?;
    for (i, app) in net.apps.iter_mut().enumerate() {
        assert!(
            app.0.try_wait()?.is_none(),
            "application {i} exited: a deviation (see above)"
        );
    }
    let data = calls_checked(&mut rpc0)?;
    let count = |call: &str| count_of(&data, call);
    assert!(
        count("finalize") >= h + 4 && count("commit") >= h + 4,
        "{data}"
    );
    assert!(
        count("prepare") >= 1 && count("process") >= 1 && count("check") >= 1,
        "{data}"
    );
    // Vote extensions from height 4 (the same update): every application extended and
    // verified, and the proposers' applications checked each extension of their last
    // commits, signatures included.
    let mut extended_commit_votes = 0;
    for i in 0..4 {
        let data = calls_checked(&mut net.rpc(i))?;
        let count = |call: &str| count_of(&data, call);
        assert!(
            count("extend") >= 1 && count("verify") >= 1,
            "node {i}: {data}"
        );
        extended_commit_votes += count("extended_commit_votes");
    }
    assert!(extended_commit_votes >= 3, "{extended_commit_votes}");
    // Node 0's metrics count every verdict its application gave, as CometBFT's do: the
    // application's own counts fall between a scrape before and one after (renders are at
    // least a second apart), and nothing was rejected.
    let verdicts = |name: &str, status: &str| {
        metrics::value(&metrics::scrape(net.base, 0), name, &[("status", status)]) as u64
    };
    let names = [
        ("process", "cometbft_consensus_proposal_receive_count"),
        ("verify", "cometbft_consensus_vote_extension_receive_count"),
    ];
    let before = names.map(|(_, name)| verdicts(name, "accepted"));
    let data = calls_checked(&mut rpc0)?;
    std::thread::sleep(Duration::from_millis(1100));
    for ((call, name), before) in names.into_iter().zip(before) {
        let (answered, after) = (count_of(&data, call), verdicts(name, "accepted"));
        assert!(
            before <= answered && answered <= after,
            "{name}: {before} <= {call}={answered} <= {after}"
        );
        assert_eq!(verdicts(name, "rejected"), 0, "{name}");
    }
    // Its FinalizeBlock of height 2 carried only the block part of the parameters: every
    // node (node 2 also across its restart) completed it from the parameters in force, as
    // CometBFT does, and the chain runs on the 1 MiB blocks from height 3.
    for (i, height) in [(0, 2), (1, 3), (2, h + 4)] {
        let params = net.rpc(i).call(
            "consensus_params",
            serde_json::json!({"height": height.to_string()}),
        )?;
        let p = &params["consensus_params"];
        let max_bytes = if height == 2 { "22020096" } else { "1048576" };
        assert_eq!(
            p["block"]["max_bytes"], max_bytes,
            "node {i}, height {height}: {params}"
        );
        assert_eq!(p["evidence"]["max_age_num_blocks"], "100000", "{params}");
        let enable = if height == 2 { "0" } else { "4" };
        assert_eq!(
            p["abci"]["vote_extensions_enable_height"], enable,
            "{params}"
        );
        assert_eq!(p["validator"]["pub_key_types"][0], "ed25519", "{params}");
    }
    Ok(())
}
