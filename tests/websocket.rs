//! `/websocket` as clients use it, against four real `bulwark` processes: `tendermint-rpc`'s
//! own WebSocket client (CompatMode v0.38) subscribes to new blocks and to transactions by
//! event query and gets exactly what was committed, and calls an ordinary method over the
//! socket; a raw client checks the messages' JSON against a real CometBFT v0.38 node's, and
//! the limits: malformed queries, duplicate and excess subscriptions, unsubscribing, non-JSON
//! frames, and the connection cap.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "shared/cometbft_json.rs"]
mod cometbft_json;

use cometbft_json::{differences, fixture, fixtures};
use futures_util::{SinkExt, StreamExt};
use harness::ports::testnet_block;
use harness::process::{fast_testnet, rpc_addr, start, wait_for, Node};
use serde_json::{json, Value};
use std::time::Duration;
use tendermint_rpc::client::CompatMode;
use tendermint_rpc::event::EventData;
use tendermint_rpc::query::{EventType, Query};
use tendermint_rpc::{Client, SubscriptionClient, WebSocketClient};
use tokio_tungstenite::tungstenite::Message;

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(30);

async fn raw(addr: &str) -> Raw {
    tokio_tungstenite::connect_async(format!("ws://{addr}/websocket"))
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Raw, request: Value) {
    ws.send(Message::text(request.to_string())).await.unwrap();
}

/// The next text message, as JSON.
async fn next(ws: &mut Raw) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("an open socket")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

fn shape(ours: &Value, theirs: &Value, extra_ok: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    differences(ours, theirs, "", extra_ok, &mut found);
    found
}

fn fixture_error(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["error"].clone()
}

#[test]
fn subscriptions_deliver_what_commits_in_cometbfts_json() {
    let dir = tempfile::tempdir().unwrap();
    let base = testnet_block(4).unwrap();
    let homes = fast_testnet(dir.path(), base).unwrap();
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h).unwrap()).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 2, Duration::from_secs(60)).unwrap();
    }
    let addr = rpc_addr(base, 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("ws://{addr}/websocket");
        let (client, driver) = WebSocketClient::builder(url.as_str().try_into().unwrap())
            .compat_mode(CompatMode::V0_38)
            .build()
            .await
            .unwrap();
        let driver = tokio::spawn(driver.run());
        // An ordinary call over the socket.
        let status = client.status().await.unwrap();
        assert!(status.sync_info.latest_block_height.value() >= 2);

        // New blocks: consecutive heights, each the block `block` serves.
        let mut blocks = client.subscribe(EventType::NewBlock.into()).await.unwrap();
        let mut heights = Vec::new();
        while heights.len() < 3 {
            let event = tokio::time::timeout(WAIT, blocks.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let EventData::NewBlock {
                block: Some(block),
                block_id,
                ..
            } = event.data
            else {
                panic!("not a new block: {event:?}");
            };
            assert_eq!(block_id.hash, block.header.hash());
            let served = client.block(block.header.height).await.unwrap();
            assert_eq!(served.block, *block);
            heights.push(block.header.height.value());
        }
        assert!(heights.windows(2).all(|w| w[1] == w[0] + 1), "{heights:?}");

        // Transactions by event query: only the one whose key matches.
        let query = Query::from(EventType::Tx).and_eq("app.key", "ws-wanted");
        let mut txs = client.subscribe(query).await.unwrap();
        let http = tendermint_rpc::HttpClient::builder(
            format!("http://{addr}").as_str().try_into().unwrap(),
        )
        .compat_mode(CompatMode::V0_38)
        .build()
        .unwrap();
        http.broadcast_tx_sync(b"ws-other=1".to_vec())
            .await
            .unwrap();
        let committed = http
            .broadcast_tx_commit(b"ws-wanted=2".to_vec())
            .await
            .unwrap();
        assert!(committed.tx_result.code.is_ok(), "{committed:?}");
        let event = tokio::time::timeout(WAIT, txs.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let EventData::Tx { tx_result } = event.data else {
            panic!("not a tx: {event:?}");
        };
        assert_eq!(tx_result.tx, b"ws-wanted=2");
        assert_eq!(tx_result.height as u64, committed.height.value());
        let events = event.events.expect("the event's composite keys");
        assert_eq!(events["app.key"], vec!["ws-wanted".to_string()]);
        assert_eq!(events["tx.hash"], vec![committed.hash.to_string()]);
        assert!(
            tokio::time::timeout(Duration::from_secs(3), txs.next())
                .await
                .is_err(),
            "only the matching transaction"
        );
        drop(blocks);
        drop(txs);
        client.close().unwrap();
        let _ = driver.await;

        raw_messages_and_limits(&addr).await;
    });
    drop(nodes);
}

async fn raw_messages_and_limits(addr: &str) {
    let mut ws = raw(addr).await;
    // A malformed query: CometBFT's error, code and shape.
    send(&mut ws, json!({"jsonrpc": "2.0", "id": "m", "method": "subscribe", "params": {"query": "tm.event = 'Tx' AND app.key"}})).await;
    let answer = next(&mut ws).await;
    assert_eq!(answer["id"], "m");
    assert!(
        shape(&answer["error"], &fixture_error("subscribe_malformed"), &[]).is_empty(),
        "{answer}"
    );
    assert!(
        answer["error"]["data"]
            .as_str()
            .unwrap()
            .starts_with("failed to parse query"),
        "{answer}"
    );
    // A subscription, its events in CometBFT's JSON; the same query twice is refused.
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"query": "tm.event = 'NewBlock'"}})).await;
    assert_eq!(
        next(&mut ws).await,
        json!({"jsonrpc": "2.0", "id": 1, "result": {}})
    );
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 2, "method": "subscribe", "params": ["tm.event = 'NewBlock'"]})).await;
    let mut empty_block = None;
    let mut refused_twice = false;
    while empty_block.is_none() || !refused_twice {
        let message = next(&mut ws).await;
        if message["id"] == 2 {
            assert_eq!(message["error"]["data"], "already subscribed", "{message}");
            refused_twice = true;
            continue;
        }
        assert_eq!(message["id"], 1, "{message}");
        assert_eq!(message["result"]["query"], "tm.event = 'NewBlock'");
        assert_eq!(message["result"]["events"]["tm.event"], json!(["NewBlock"]));
        let txs = &message["result"]["data"]["value"]["block"]["data"]["txs"];
        if txs.as_array().is_some_and(Vec::is_empty) {
            empty_block = Some(message["result"]["data"].clone());
        }
    }
    let theirs = fixture("subscribe_newblock_0");
    let found = shape(&empty_block.unwrap(), &theirs["data"], &[]);
    assert!(found.is_empty(), "NewBlock: {found:?}");
    // Transactions: the raw Tx event against the real node's; the block's own events in
    // its NewBlockEvents.
    send(&mut ws, json!({"jsonrpc": "2.0", "id": "t", "method": "subscribe", "params": {"query": "tm.event = 'Tx' AND app.key = 'raw'"}})).await;
    send(&mut ws, json!({"jsonrpc": "2.0", "id": "e", "method": "subscribe", "params": {"query": "tm.event = 'NewBlockEvents'"}})).await;
    send(&mut ws, json!({"jsonrpc": "2.0", "id": "b", "method": "broadcast_tx_sync", "params": {"tx": "cmF3PTE="}})).await;
    let (mut tx_event, mut block_events) = (None, None);
    while tx_event.is_none() || block_events.is_none() {
        let message = next(&mut ws).await;
        let data = &message["result"]["data"];
        if message["id"] == "t" && data["type"] == "tendermint/event/Tx" {
            tx_event = Some(message["result"].clone());
        }
        if message["id"] == "e" && data["value"]["num_txs"] == "1" {
            block_events = Some(data.clone());
        }
        if message["id"] == "b" {
            assert_eq!(
                message["result"]["code"], 0,
                "broadcast over the socket: {message}"
            );
        }
    }
    let (tx_event, block_events) = (tx_event.unwrap(), block_events.unwrap());
    assert_eq!(block_events["type"], "tendermint/event/NewBlockEvents");
    assert_eq!(
        block_events["value"]["events"][0]["type"], "block",
        "the kvstore's block event: {block_events}"
    );
    let ours_only = [
        ".value.TxResult.result.gas_wanted",
        ".value.TxResult.result.gas_used",
    ];
    let found = shape(
        &tx_event["data"],
        &fixture("subscribe_txs_0")["data"],
        &ours_only,
    );
    assert!(found.is_empty(), "Tx: {found:?}");
    assert_eq!(tx_event["data"]["value"]["TxResult"]["tx"], "cmF3PTE=");
    for key in ["tm.event", "tx.hash", "tx.height", "app.key"] {
        assert!(tx_event["events"][key].is_array(), "{key}: {tx_event}");
    }
    // Unsubscribing: a known query goes, an unknown one is an error, then all go.
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 3, "method": "unsubscribe", "params": {"query": "tm.event = 'NewBlock'"}})).await;
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 4, "method": "unsubscribe", "params": {"query": "tm.event = 'NewBlock'"}})).await;
    let (mut three, mut four) = (None, None);
    while three.is_none() || four.is_none() {
        let message = next(&mut ws).await;
        match message["id"].as_i64() {
            Some(3) => three = Some(message),
            Some(4) => four = Some(message),
            _ => {}
        }
    }
    assert_eq!(three.unwrap()["result"], json!({}));
    assert_eq!(four.unwrap()["error"]["data"], "subscription not found");
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 5, "method": "unsubscribe_all"}),
    )
    .await;
    loop {
        let message = next(&mut ws).await;
        if message["id"] == 5 {
            assert_eq!(message["result"], json!({}));
            break;
        }
    }
    // At most five subscriptions a client.
    for i in 0..6 {
        let query = format!("block.height > {i}");
        send(&mut ws, json!({"jsonrpc": "2.0", "id": 10 + i, "method": "subscribe", "params": {"query": query}})).await;
    }
    let mut refused = 0;
    let mut accepted = 0;
    while refused + accepted < 6 {
        let message = next(&mut ws).await;
        match message["id"].as_i64() {
            Some(id) if (10..16).contains(&id) && message["result"] == json!({}) => accepted += 1,
            Some(15) => {
                assert_eq!(
                    message["error"]["data"],
                    "max_subscriptions_per_client 5 reached"
                );
                refused += 1;
            }
            _ => {}
        }
    }
    assert_eq!((accepted, refused), (5, 1));
    // Garbage: errors, and the socket stays open.
    ws.send(Message::text("{not json")).await.unwrap();
    ws.send(Message::binary(vec![0u8; 16])).await.unwrap();
    ws.send(Message::text("[1, 2]")).await.unwrap();
    let mut errors = 0;
    while errors < 3 {
        let message = next(&mut ws).await;
        if message["id"].is_null() && message["error"]["code"].is_i64() {
            errors += 1;
        }
    }
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": "h", "method": "health"}),
    )
    .await;
    loop {
        let message = next(&mut ws).await;
        if message["id"] == "h" {
            assert_eq!(message["result"], json!({}));
            break;
        }
    }
    // The connection cap: 100 open sockets, the next refused.
    let mut open = vec![ws];
    for _ in 1..100 {
        open.push(raw(addr).await);
    }
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/websocket")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("the 101st socket: {:?}", other.map(|_| ())),
    }
    open.truncate(1);
    drop(open);
    // Closed sockets free their places.
    let deadline = std::time::Instant::now() + WAIT;
    while tokio_tungstenite::connect_async(format!("ws://{addr}/websocket"))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "places never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
