//! JSON-RPC as clients use it: four real `bulwark` processes, driven and read only through
//! `tendermint-rpc`'s own HTTP client (CompatMode v0.38). The chain they commit, with
//! transactions, is fetched height by height over RPC and verified from genesis by
//! `tendermint-light-client-verifier` (ProdVerifier, through `shared/commits.rs`). Malformed requests get JSON-RPC errors
//! and the network keeps committing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "shared/commits.rs"]
mod commits;

use commits::ChainVerifier;
use harness::ports::testnet_block;
use harness::process::{fast_testnet, rpc_url, start, wait_for, Node};
use std::io::{Read, Write};
use std::time::Duration;
use tendermint_rpc::client::CompatMode;
use tendermint_rpc::{Client, HttpClient, Paging};

const HEIGHTS: u64 = 30;

/// Duplicate-vote evidence against `address`, validator `index` at height 2 whose block is
/// dated `time`, in a set of 4 × 10, right in every field but its signatures, which nobody
/// made.
fn unsigned_evidence(
    address: bulwark_types::tendermint::account::Id,
    index: u32,
    time: bulwark_types::tendermint::Time,
) -> bulwark_types::tendermint::evidence::Evidence {
    use bulwark_types::tendermint::{block, evidence, hash::Hash, vote, Signature};
    let vote = |byte: u8| vote::Vote {
        vote_type: vote::Type::Precommit,
        height: block::Height::from(2u32),
        round: block::Round::default(),
        block_id: Some(block::Id {
            hash: Hash::Sha256([byte; 32]),
            part_set_header: block::parts::Header::new(1, Hash::Sha256([byte; 32])).unwrap(),
        }),
        timestamp: Some(time),
        validator_address: address,
        validator_index: vote::ValidatorIndex::try_from(index).unwrap(),
        signature: Signature::new([byte; 64]).unwrap(),
        extension: vec![],
        extension_signature: None,
    };
    evidence::Evidence::DuplicateVote(Box::new(evidence::DuplicateVoteEvidence {
        vote_a: vote(1),
        vote_b: vote(2),
        total_voting_power: 40u32.into(),
        validator_power: 10u32.into(),
        timestamp: time,
    }))
}

fn client(url: &str) -> HttpClient {
    HttpClient::builder(url.parse().unwrap())
        .compat_mode(CompatMode::V0_38)
        .build()
        .unwrap()
}

/// One raw HTTP exchange; returns the status code and the body.
fn raw_http(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn post(addr: &str, body: &str) -> (u16, serde_json::Value) {
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or_default())
}

fn get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, body) = raw_http(addr, request.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// A batch longer than the calls the server hands the engine at once: one answer per call, in
/// order, and the transactions land in the chain in the batch's order.
fn batch_transactions_keep_their_order(addr: &str) {
    use base64::Engine as _;
    const N: usize = 150;
    let calls: Vec<String> = (0..N)
        .map(|i| {
            let tx = base64::engine::general_purpose::STANDARD.encode(format!("order{i:03}=x"));
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"broadcast_tx_sync","params":{{"tx":"{tx}"}}}}"#)
        })
        .collect();
    let (_, v) = post(addr, &format!("[{}]", calls.join(",")));
    let mut positions = Vec::new();
    for i in 0..N {
        assert_eq!(v[i]["id"], i, "{}", v[i]);
        assert_eq!(v[i]["result"]["code"], 0, "{}", v[i]);
        let hash = v[i]["result"]["hash"].as_str().unwrap().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let found = loop {
            let (_, t) = get(addr, &format!("/tx?hash=0x{hash}"));
            if let Some(height) = t["result"]["height"].as_str() {
                break (
                    height.parse::<u64>().unwrap(),
                    t["result"]["index"].as_u64().unwrap(),
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tx {i} never committed: {t}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        positions.push(found);
    }
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "the batch's transactions were committed out of order: {positions:?}"
    );
}

fn error_code(v: &serde_json::Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or(0)
}

/// `tx_search` and `block_search` through the client's own queries and paging: each finds
/// exactly what the blocks fetched hold.
async fn searches_find_what_was_committed(
    c: &HttpClient,
    committed: &tendermint_rpc::endpoint::broadcast::tx_commit::Response,
    heights_with_txs: usize,
) {
    use tendermint_rpc::query::{EventType, Query};
    use tendermint_rpc::Order;
    let by_key = c
        .tx_search(
            Query::from(EventType::Tx).and_eq("app.key", "key7"),
            false,
            1,
            30,
            Order::Ascending,
        )
        .await
        .unwrap();
    assert_eq!(by_key.total_count, 1, "{by_key:?}");
    assert_eq!(by_key.txs[0].tx, b"key7=value7");
    let by_hash: Query = format!("tx.hash = '{}'", committed.hash).parse().unwrap();
    let found = c
        .tx_search(by_hash, false, 1, 30, Order::Ascending)
        .await
        .unwrap();
    assert_eq!(found.total_count, 1, "{found:?}");
    assert_eq!(found.txs[0].height, committed.height);
    let at_height = Query::eq("tx.height", committed.height.value());
    let found = c
        .tx_search(at_height, false, 1, 100, Order::Ascending)
        .await
        .unwrap();
    assert!(
        found.txs.iter().any(|t| t.hash == committed.hash),
        "{found:?}"
    );
    assert!(found.txs.iter().all(|t| t.height == committed.height));
    // With proofs: each leads from its transaction to the data hash of its block's header.
    let proven = c
        .tx_search(
            Query::exists("app.key").and_lte("tx.height", HEIGHTS),
            true,
            1,
            100,
            Order::Ascending,
        )
        .await
        .unwrap();
    let mut largest = 0;
    for t in &proven.txs {
        let proof = t.proof.as_ref().expect("a proof was asked for");
        let header = c.header(t.height).await.unwrap().header;
        assert_eq!(proof.data, t.tx);
        assert!(
            bulwark_types::hashes::verify_tx_proof(proof, &header.data_hash.unwrap()),
            "{t:?}"
        );
        largest = largest.max(proof.proof.total);
    }
    assert!(largest > 1, "no block with two transactions was proven");
    let one = c.tx(committed.hash, true).await.unwrap();
    let header = c.header(one.height).await.unwrap().header;
    assert!(bulwark_types::hashes::verify_tx_proof(
        one.proof.as_ref().unwrap(),
        &header.data_hash.unwrap()
    ));
    // key1 and key10..=key19.
    let contains = Query::contains("app.key", "key1");
    let found = c
        .tx_search(contains, false, 1, 30, Order::Ascending)
        .await
        .unwrap();
    assert_eq!(found.total_count, 11, "{found:?}");
    // 40 sent and one committed: pages in both orders, the same transactions.
    let all = Query::exists("app.key").and_lte("tx.height", HEIGHTS);
    let mut ascending = Vec::new();
    let mut descending = Vec::new();
    for page in 1..=5 {
        for (order, into) in [
            (Order::Ascending, &mut ascending),
            (Order::Descending, &mut descending),
        ] {
            let r = c
                .tx_search(all.clone(), false, page, 10, order)
                .await
                .unwrap();
            assert_eq!(r.total_count, 41, "page {page}");
            into.extend(r.txs.into_iter().map(|t| (t.height, t.index)));
        }
    }
    descending.reverse();
    assert_eq!(ascending.len(), 41);
    assert_eq!(ascending, descending);
    assert!(ascending.windows(2).all(|w| w[0] < w[1]), "{ascending:?}");
    assert!(c
        .tx_search(all, false, 6, 10, Order::Ascending)
        .await
        .is_err());
    // The kvstore's block event: every block with a transaction, and no other.
    let with_writes = Query::gte("block.writes", 1u64).and_lte("block.height", HEIGHTS);
    let blocks = c
        .block_search(with_writes, 1, 100, Order::Ascending)
        .await
        .unwrap();
    assert_eq!(blocks.total_count as usize, heights_with_txs, "{blocks:?}");
    for b in &blocks.blocks {
        assert!(!b.block.data.is_empty(), "height {}", b.block.header.height);
        assert_eq!(b.block_id.hash, b.block.header.hash());
    }
    let range = Query::gte("block.height", 3u64).and_lt("block.height", 7u64);
    let newest = c
        .block_search(range, 1, 2, Order::Descending)
        .await
        .unwrap();
    assert_eq!(newest.total_count, 4);
    let heights: Vec<u64> = newest
        .blocks
        .iter()
        .map(|b| b.block.header.height.value())
        .collect();
    assert_eq!(heights, vec![6, 5]);
}

#[test]
fn a_light_client_verifies_the_chain_fetched_over_rpc_and_bad_requests_get_errors() {
    let dir = tempfile::tempdir().unwrap();
    let base = testnet_block(4).unwrap();
    let homes = fast_testnet(dir.path(), base).unwrap();
    // Node 0 takes transactions of at most 4 KiB, so an oversized one fits in a request.
    let config = homes[0].join("config/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("max_tx_bytes = 1048576", "max_tx_bytes = 4096"),
    )
    .unwrap();
    // Node 1 indexes nothing (`tx_index.indexer = "null"`).
    let config = homes[1].join("config/config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let unindexed = text.replace("indexer = \"kv\"", "indexer = \"null\"");
    assert_ne!(unindexed, text);
    std::fs::write(&config, unindexed).unwrap();
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h).unwrap()).collect();
    let urls: Vec<String> = (0..4).map(|i| rpc_url(base, i as usize)).collect();
    let addr0 = urls[0].trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 2, Duration::from_secs(60)).unwrap();
    }

    runtime.block_on(async {
        let clients: Vec<HttpClient> = urls.iter().map(|u| client(u)).collect();
        clients[0].health().await.unwrap();

        // Transactions through every node and every broadcast mode.
        let mut sent = Vec::new();
        for i in 0..40u32 {
            let tx = format!("key{i}=value{i}").into_bytes();
            let c = &clients[(i % 4) as usize];
            if i % 2 == 0 {
                let r = c.broadcast_tx_sync(tx.clone()).await.unwrap();
                assert!(r.code.is_ok(), "{r:?}");
            } else {
                let r = c.broadcast_tx_async(tx.clone()).await.unwrap();
                assert!(r.code.is_ok(), "{r:?}");
            }
            sent.push(tx);
        }
        let committed = clients[1]
            .broadcast_tx_commit(b"committed=yes".to_vec())
            .await
            .unwrap();
        assert!(committed.check_tx.code.is_ok());
        assert!(committed.tx_result.code.is_ok(), "{committed:?}");
        assert!(committed.height.value() > 0);
        // Found again by its hash, with its result, through the client's own encoding.
        let found = clients[3].tx(committed.hash, false).await.unwrap();
        assert_eq!(found.tx, b"committed=yes");
        assert_eq!(found.height, committed.height);
        assert!(found.tx_result.code.is_ok(), "{found:?}");
        assert!(clients[3]
            .tx(bulwark_types::tendermint::Hash::Sha256([7; 32]), false)
            .await
            .is_err());
        // Node 1, without indexes, stored the block and answers as CometBFT's null indexer.
        let addr1 = urls[1].trim_start_matches("http://");
        let block = clients[1].block(committed.height).await.unwrap();
        assert!(block.block.data.contains(&b"committed=yes".to_vec()));
        let hash = committed.hash.to_string();
        for (call, disabled) in [
            (
                format!(r#""tx","params":{{"hash":"{hash}"}}"#),
                "transaction",
            ),
            (
                r#""tx_search","params":{"query":"tx.height>0"}"#.to_string(),
                "transaction",
            ),
            (
                r#""block_search","params":{"query":"block.height>0"}"#.to_string(),
                "block",
            ),
        ] {
            let (_, answer) = post(
                addr1,
                &format!(r#"{{"jsonrpc":"2.0","id":1,"method":{call}}}"#),
            );
            assert_eq!(error_code(&answer), -32603, "{answer}");
            assert_eq!(
                answer["error"]["data"],
                format!("{disabled} indexing is disabled"),
                "{answer}"
            );
        }
        // The application's refusal is an answer with its code, not an error.
        let refused = clients[2]
            .broadcast_tx_sync(b"no separator".to_vec())
            .await
            .unwrap();
        assert!(refused.code.is_err(), "{refused:?}");
        // Seen before: an error, as in CometBFT.
        assert!(clients[3].broadcast_tx_sync(sent[0].clone()).await.is_err());

        // Wait for the chain to grow past HEIGHTS.
        let deadline = std::time::Instant::now() + Duration::from_secs(240);
        loop {
            let status = clients[0].status().await.unwrap();
            if status.sync_info.latest_block_height.value() > HEIGHTS {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "stuck at {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The light client: trust genesis, then verify every height from what RPC serves.
        let c = &clients[3];
        let genesis = c.genesis::<serde_json::Value>().await.unwrap();
        let mut verifier = ChainVerifier::from_genesis(&genesis);
        assert_eq!(genesis.validators.len(), 4);
        let mut txs_seen = 0usize;
        for h in 1..=HEIGHTS {
            let signed = c.commit(h as u32).await.unwrap().signed_header;
            let validators = c
                .validators(h as u32, Paging::All)
                .await
                .unwrap()
                .validators;
            let next = c
                .validators(h as u32 + 1, Paging::All)
                .await
                .unwrap()
                .validators;
            verifier.verify_next(&signed, validators, next).unwrap();
            // The block's contents match the verified header.
            let block = c.block(h as u32).await.unwrap();
            assert_eq!(block.block.header, signed.header, "height {h}");
            assert_eq!(block.block_id.hash, signed.header.hash());
            // The same block and header by hash and by height, through the client's own
            // encodings (base64 for block_by_hash, hex for header_by_hash).
            let by_hash = c.block_by_hash(block.block_id.hash).await.unwrap();
            assert_eq!(by_hash.block.as_ref(), Some(&block.block), "height {h}");
            assert_eq!(c.header(h as u32).await.unwrap().header, signed.header);
            let header = c.header_by_hash(block.block_id.hash).await.unwrap().header;
            assert_eq!(header.as_ref(), Some(&signed.header), "height {h}");
            let results = c.block_results(h as u32).await.unwrap();
            let tx_results = results.txs_results.unwrap_or_default();
            assert_eq!(tx_results.len(), block.block.data.len(), "height {h}");
            assert!(tx_results.iter().all(|r| r.code.is_ok()));
            txs_seen += block.block.data.len();
        }
        assert!(
            txs_seen >= sent.len(),
            "only {txs_seen} txs in the first {HEIGHTS} blocks"
        );
        let heights_with_txs = {
            let mut n = 0;
            for h in 1..=HEIGHTS {
                n += usize::from(!c.block(h as u32).await.unwrap().block.data.is_empty());
            }
            n
        };
        searches_find_what_was_committed(c, &committed, heights_with_txs).await;
        // The height in progress, parsed by the client (vote summaries included): votes of
        // four validators in set order, at a height above what committed.
        let top = c.status().await.unwrap().sync_info.latest_block_height;
        let state = c.consensus_state().await.unwrap().round_state;
        assert!(state.height_round_step.height > top.value().saturating_sub(1).try_into().unwrap());
        for round in &state.height_vote_set {
            assert_eq!(round.prevotes.len(), 4, "{round:?}");
            assert_eq!(round.precommits.len(), 4, "{round:?}");
            assert!(round.prevotes_bit_array.starts_with("BA{4:"), "{round:?}");
        }
        assert!(genesis
            .validators
            .iter()
            .any(|v| v.address == state.proposer.address));
        // Within a few polls some validator's vote shows, as a summary the client parses.
        let mut summary = None;
        for _ in 0..100 {
            let state = c.consensus_state().await.unwrap().round_state;
            summary = state.height_vote_set.iter().find_map(|r| {
                r.prevotes
                    .iter()
                    .chain(&r.precommits)
                    .find_map(|v| match v {
                        tendermint_rpc::endpoint::consensus_state::RoundVote::Vote(s) => {
                            Some((s.clone(), state.height_round_step.height))
                        }
                        _ => None,
                    })
            });
            if summary.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (vote, height) = summary.expect("a vote in the height in progress");
        assert_eq!(vote.height, height);
        assert!((0..4).contains(&vote.validator_index), "{vote:?}");

        // The state the transactions made, as every node answers it.
        for c in &clients {
            let q = c
                .abci_query(None, b"key7".to_vec(), None, false)
                .await
                .unwrap();
            assert!(q.code.is_ok(), "{q:?}");
            assert_eq!(q.value, b"value7");
            let info = c.abci_info().await.unwrap();
            assert!(info.last_block_height.value() >= HEIGHTS);
            let net = c.net_info().await.unwrap();
            assert!(net.n_peers >= 3, "{net:?}");
            assert!(net
                .peers
                .iter()
                .all(|p| p.node_info.network == genesis.chain_id));
        }
        let status = clients[2].status().await.unwrap();
        let latest = clients[2]
            .block(status.sync_info.latest_block_height)
            .await
            .unwrap();
        assert_eq!(status.sync_info.latest_block_hash, latest.block_id.hash);
        // Block metas, highest first, at most 20; the consensus parameters of the genesis.
        let chain = clients[2].blockchain(1u32, 30u32).await.unwrap();
        assert_eq!(chain.block_metas.len(), 20);
        let top = chain.block_metas[0].header.height.value();
        assert_eq!(chain.block_metas[19].header.height.value(), top - 19);
        let meta = &chain.block_metas[0];
        let block = clients[2].block(meta.header.height).await.unwrap();
        assert_eq!(meta.block_id, block.block_id);
        assert_eq!(meta.num_txs as usize, block.block.data.len());
        let params = clients[2].consensus_params(2u32).await.unwrap();
        assert_eq!(params.block_height.value(), 2);
        assert_eq!(
            params.consensus_params.block,
            genesis.consensus_params.block
        );
        // With no height, v0.38 answers for the next height, which is allowed too.
        let top = clients[2]
            .status()
            .await
            .unwrap()
            .sync_info
            .latest_block_height;
        let next = top.increment();
        let params = clients[2].consensus_params(next).await.unwrap();
        assert_eq!(params.block_height, next);
        let far = (next.value() + 1_000) as u32;
        assert!(clients[2].consensus_params(far).await.is_err());
        assert_eq!(status.node_info.network, genesis.chain_id);
        assert_eq!(status.validator_info.power.value(), 10);
        assert!(!status.sync_info.catching_up);
        // Asking beyond the chain is an error, not a hang.
        assert!(c.block(1_000_000u32).await.is_err());
        // Evidence whose votes no validator signed is refused with the failed check.
        let time = c.block(2u32).await.unwrap().block.header.time;
        let set = c.validators(2u32, Paging::All).await.unwrap().validators;
        let address = status.validator_info.address;
        let index = set.iter().position(|v| v.address == address).unwrap() as u32;
        let refused = c
            .broadcast_evidence(unsigned_evidence(address, index, time))
            .await;
        let message = format!("{:?}", refused.unwrap_err());
        assert!(
            message.contains("evidence refused: vote A's signature does not verify"),
            "{message}"
        );
    });

    // The GET URI form, and what the client library does not cover.
    let (status, v) = get(&addr0, "/abci_query?data=%22key3%22");
    assert_eq!(status, 200);
    assert_eq!(v["result"]["response"]["value"], "dmFsdWUz"); // base64 of "value3"
    let (_, v) = get(&addr0, "/broadcast_tx_sync?tx=%22uri=form%22");
    assert_eq!(v["result"]["code"], 0, "{v}");
    let (_, v) = get(&addr0, "/num_unconfirmed_txs");
    assert!(v["result"]["n_txs"].as_str().is_some(), "{v}");
    let (_, v) = get(&addr0, "/validators?height=1&page=1&per_page=2");
    assert_eq!(v["result"]["count"], "2");
    assert_eq!(v["result"]["total"], "4");
    let (_, v) = get(&addr0, "/unconfirmed_txs?limit=2");
    assert!(
        v["result"]["txs"].as_array().is_some_and(|t| t.len() <= 2),
        "{v}"
    );
    // Priorities at every height, CometBFT's (the client's type drops them, so raw JSON):
    // they sum to about zero, and the proposer of a block decided in round 0 had the
    // highest before it paid the total power for proposing.
    let mut moved = 0;
    for h in 1..=HEIGHTS {
        let (_, v) = get(&addr0, &format!("/validators?height={h}"));
        let (_, commit) = get(&addr0, &format!("/commit?height={h}"));
        let header = &commit["result"]["signed_header"]["header"];
        let number = |v: &serde_json::Value| -> i64 { v.as_str().unwrap().parse().unwrap() };
        let set = v["result"]["validators"].as_array().unwrap();
        let priorities: Vec<i64> = set
            .iter()
            .map(|v| number(&v["proposer_priority"]))
            .collect();
        let total: i64 = set.iter().map(|v| number(&v["voting_power"])).sum();
        assert!(priorities.iter().sum::<i64>().abs() < 4, "height {h}: {v}");
        if commit["result"]["signed_header"]["commit"]["round"] == 0 {
            let proposer = set
                .iter()
                .position(|v| v["address"] == header["proposer_address"])
                .unwrap();
            let paid = priorities[proposer] + total;
            assert!(priorities.iter().all(|p| *p <= paid), "height {h}: {v}");
        }
        moved += usize::from(priorities.iter().any(|p| *p != 0));
    }
    // Four equal powers come back to all zeros every fourth height; before this test,
    // `validators` showed zeros at every one.
    assert!(
        moved as u64 >= HEIGHTS / 2,
        "priorities moved at {moved} heights"
    );
    // block_results' app hash is a Go []byte, base64; the next header has it in hex.
    let (_, results) = get(&addr0, "/block_results?height=2");
    let (_, next) = get(&addr0, "/block?height=3");
    let app_hash = {
        use base64::Engine as _;
        let encoded = results["result"]["app_hash"].as_str().unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap()
    };
    assert_eq!(
        hex::encode_upper(app_hash),
        next["result"]["block"]["header"]["app_hash"]
            .as_str()
            .unwrap(),
        "{results}"
    );
    let (_, v) = get(
        &addr0,
        "/tx_search?query=%22app.key%3D%27key3%27%22&per_page=5",
    );
    assert_eq!(v["result"]["total_count"], "1", "{v}");
    assert_eq!(v["result"]["txs"][0]["tx"], "a2V5Mz12YWx1ZTM=", "{v}"); // key3=value3
    let (_, v) = get(
        &addr0,
        "/block_search?query=%22block.height%3C%3D2%22&order_by=%22asc%22",
    );
    assert_eq!(v["result"]["total_count"], "2", "{v}");
    assert_eq!(
        v["result"]["blocks"][1]["block"]["header"]["height"], "2",
        "{v}"
    );
    for bad in [
        "/tx_search?query=%22app.key%22",
        "/tx_search?query=%22app.key%3C%27x%27%22",
        "/block_search?query=%22block.height%3E1%22&order_by=%22sideways%22",
        "/tx_search",
    ] {
        let (status, v) = get(&addr0, bad);
        assert_eq!(status, 200, "{bad}");
        assert!(v["error"]["code"].is_i64(), "{bad}: {v}");
    }
    // The full round state, and every peer with the height it last reported.
    let (_, v) = get(&addr0, "/dump_consensus_state");
    let round_state = &v["result"]["round_state"];
    assert_eq!(
        round_state["validators"]["validators"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "{v}"
    );
    assert!(
        round_state["height"].is_string() && round_state["votes"].is_array(),
        "{v}"
    );
    let votes = round_state["last_commit"]["votes"].as_array().unwrap();
    assert_eq!(votes.len(), 4, "{v}");
    assert!(
        votes
            .iter()
            .filter(|v| v.as_str().unwrap().starts_with("Vote{"))
            .count()
            >= 3,
        "{v}"
    );
    let peers = v["result"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3, "{v}");
    assert!(
        peers
            .iter()
            .all(|p| p["peer_state"]["round_state"]["height"].is_string()),
        "{v}"
    );
    let (_, v) = get(&addr0, "/check_tx?tx=%22uri=check%22");
    assert_eq!(v["result"]["code"], 0, "{v}");
    // The height being decided: above the latest block before the call, at most one above
    // the latest after it (a block may commit between the calls).
    let latest = || -> u64 {
        let (_, status) = get(&addr0, "/status");
        status["result"]["sync_info"]["latest_block_height"]
            .as_str()
            .and_then(|h| h.parse().ok())
            .unwrap()
    };
    let before = latest();
    let (_, v) = get(&addr0, "/consensus_params");
    let after = latest();
    let answered: u64 = v["result"]["block_height"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .unwrap();
    assert!(
        before < answered && answered <= after + 1,
        "{before} {after} {v}"
    );
    let (_, v) = get(&addr0, "/header?height=2");
    let hash = {
        let (_, b) = get(&addr0, "/block?height=2");
        assert_eq!(v["result"]["header"], b["result"]["block"]["header"], "{v}");
        b["result"]["block_id"]["hash"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (_, v) = get(&addr0, &format!("/header_by_hash?hash=0x{hash}"));
    assert_eq!(v["result"]["header"]["height"], "2", "{v}");
    let (_, v) = get(&addr0, "/");
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 27, "{v}");

    // Bad requests: JSON-RPC errors with the right codes.
    let (_, v) = post(&addr0, "{not json");
    assert_eq!(error_code(&v), -32700, "{v}");
    let (_, v) = post(&addr0, r#"{"jsonrpc":"2.0","id":1,"method":"rm_rf"}"#);
    assert_eq!(error_code(&v), -32601, "{v}");
    let (_, v) = post(
        &addr0,
        r#"{"jsonrpc":"2.0","id":2,"method":"block","params":{"height":"tall"}}"#,
    );
    assert_eq!(error_code(&v), -32602, "{v}");
    let (_, v) = post(
        &addr0,
        r#"{"jsonrpc":"2.0","id":3,"method":"broadcast_tx_sync","params":{"tx":"***"}}"#,
    );
    assert_eq!(error_code(&v), -32602, "{v}");
    let (_, v) = post(&addr0, r#"[]"#);
    assert_eq!(error_code(&v), -32600, "{v}");
    let (_, v) = post(&addr0, r#"42"#);
    assert_eq!(error_code(&v), -32600, "{v}");
    // A batch gets one answer per request, in order, with their ids.
    let (_, v) = post(
        &addr0,
        r#"[{"jsonrpc":"2.0","id":"a","method":"health"},{"jsonrpc":"2.0","id":"b","method":"nope"}]"#,
    );
    assert_eq!(v[0]["id"], "a");
    assert!(v[0]["result"].is_object());
    assert_eq!(v[1]["id"], "b");
    assert_eq!(error_code(&v[1]), -32601);
    use base64::Engine as _;
    batch_transactions_keep_their_order(&addr0);
    let big = base64::engine::general_purpose::STANDARD.encode(vec![b'k'; 10_000]);
    let (status, v) = post(
        &addr0,
        &format!(
            r#"{{"jsonrpc":"2.0","id":4,"method":"broadcast_tx_sync","params":{{"tx":"{big}"}}}}"#
        ),
    );
    assert_eq!(status, 200);
    assert_eq!(error_code(&v), -32603, "{v}");
    assert!(
        v["error"]["data"].as_str().unwrap().contains("exceeds"),
        "{v}"
    );
    // A body over rpc.max_body_bytes: 413, before anything is parsed.
    let huge = "A".repeat(2_000_000);
    let (status, v) = post(
        &addr0,
        &format!(
            r#"{{"jsonrpc":"2.0","id":5,"method":"broadcast_tx_sync","params":{{"tx":"{huge}"}}}}"#
        ),
    );
    assert_eq!(status, 413, "{v}");
    assert_eq!(error_code(&v), -32600);
    // Not HTTP at all: the connection is closed, nothing else happens.
    let (status, _) = raw_http(&addr0, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert_ne!(status, 200);

    // The peer port: bytes that are not a TLS handshake (here an oversized frame header and
    // undecodable bytes) close that connection only.
    let p2p0 = format!("127.0.0.1:{}", base);
    for bytes in [
        vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        vec![0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0x99],
    ] {
        let mut peer = std::net::TcpStream::connect(&p2p0).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        peer.write_all(&bytes).unwrap();
        // The node closes the connection: EOF, not a hang.
        let mut sink = Vec::new();
        let closed = peer.read_to_end(&mut sink);
        assert!(
            closed.is_ok(),
            "the node did not close the bad peer: {closed:?}"
        );
    }

    // The network kept committing through all of it.
    let reached = nodes.iter().map(|n| n.last).max().unwrap();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, reached + 3, Duration::from_secs(60)).unwrap();
    }
    for n in nodes.iter_mut() {
        n.stop_cleanly().unwrap();
    }
}
