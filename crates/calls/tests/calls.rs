//! Parsing JSON-RPC calls in both of CometBFT's forms: what clients send becomes the right
//! call, and anything else a JSON-RPC error with the right code, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_calls::{parse, uri_params, BroadcastMode, Call, MAX_PER_PAGE};
use serde_json::json;
use tendermint_rpc::response_error::Code;

#[test]
fn named_positional_and_uri_params_give_the_same_call() {
    let by_name = parse("block", &json!({"height": "7"})).unwrap();
    let as_number = parse("block", &json!({"height": 7})).unwrap();
    let by_position = parse("block", &json!(["7"])).unwrap();
    let by_uri = parse("block", &uri_params("height=7").unwrap()).unwrap();
    for call in [as_number, by_position, by_uri] {
        assert_eq!(call, by_name);
    }
    assert_eq!(by_name, Call::Block(Some(7)));
    assert_eq!(parse("block", &json!(null)).unwrap(), Call::Block(None));
    assert_eq!(parse("block", &json!({})).unwrap(), Call::Block(None));
}

#[test]
fn transactions_arrive_as_base64_hex_or_quoted_strings() {
    let expected = Call::BroadcastTx {
        tx: b"k=v".to_vec(),
        mode: BroadcastMode::Sync,
    };
    assert_eq!(
        parse("broadcast_tx_sync", &json!({"tx": "az12"})).unwrap(),
        expected
    );
    for query in ["tx=0x6b3d76", "tx=%22k%3Dv%22", "tx=\"k=v\""] {
        let params = uri_params(query).unwrap();
        assert_eq!(
            parse("broadcast_tx_sync", &params).unwrap(),
            expected,
            "{query}"
        );
    }
    assert!(matches!(
        parse("broadcast_tx_commit", &json!(["az12"])).unwrap(),
        Call::BroadcastTx {
            mode: BroadcastMode::Commit,
            ..
        }
    ));
    let query = parse(
        "abci_query",
        &uri_params("path=%22%22&data=%22key%22&prove=true").unwrap(),
    )
    .unwrap();
    assert_eq!(
        query,
        Call::AbciQuery {
            path: String::new(),
            data: b"key".to_vec(),
            height: None,
            prove: true
        }
    );
}

#[test]
fn pages_are_clamped_like_cometbft() {
    let call = parse("validators", &json!({"per_page": "1000"})).unwrap();
    assert_eq!(
        call,
        Call::Validators {
            height: None,
            page: 1,
            per_page: MAX_PER_PAGE
        }
    );
    assert_eq!(
        parse("validators", &json!({"page": "0"}))
            .unwrap_err()
            .code(),
        Code::InvalidParams
    );
}

#[test]
fn bad_requests_are_errors_with_their_codes() {
    let code = |method: &str, params: serde_json::Value| parse(method, &params).unwrap_err().code();
    assert_eq!(
        code("unsafe_flush_mempool", json!(null)),
        Code::MethodNotFound
    );
    assert_eq!(code("block", json!({"height": "0"})), Code::InvalidParams);
    assert_eq!(code("block", json!({"height": "-1"})), Code::InvalidParams);
    assert_eq!(code("block", json!({"height": -1})), Code::InvalidParams);
    assert_eq!(code("block", json!({"height": [1]})), Code::InvalidParams);
    assert_eq!(code("block", json!(["1", "2"])), Code::InvalidParams);
    assert_eq!(code("block", json!("1")), Code::InvalidParams);
    assert_eq!(code("broadcast_tx_sync", json!({})), Code::InvalidParams);
    assert_eq!(
        code("broadcast_tx_sync", json!({"tx": "not base64!"})),
        Code::InvalidParams
    );
    assert_eq!(
        code("broadcast_tx_sync", json!({"tx": 5})),
        Code::InvalidParams
    );
    assert_eq!(
        code("abci_query", json!({"data": "zz"})),
        Code::InvalidParams
    );
    assert_eq!(
        code("abci_query", json!({"prove": "maybe"})),
        Code::InvalidParams
    );
    assert_eq!(
        uri_params("tx=%zz").unwrap_err().code(),
        Code::InvalidParams
    );
    assert_eq!(
        uri_params("tx=0xabc").unwrap_err().code(),
        Code::InvalidParams
    );
    assert_eq!(
        uri_params("x=%ff%fe").unwrap_err().code(),
        Code::InvalidParams
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic sweep over odd query strings and JSON values.
    let mut seed = 0x1234_5678_u64;
    let alphabet = b"%0x\"=&+ab9-.{}[]\\\xff";
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 24) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|i| alphabet[((seed >> (i % 8 * 8)) as usize + i) % alphabet.len()])
            .collect();
        let query = String::from_utf8_lossy(&bytes);
        if let Ok(params) = uri_params(&query) {
            for method in ["block", "validators", "broadcast_tx_sync", "abci_query"] {
                let _ = parse(method, &params);
            }
        }
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            let _ = parse("abci_query", &value);
        }
    }
}

/// Evidence as `tendermint-rpc`'s client sends it to `broadcast_evidence`.
fn client_evidence_request() -> (
    String,
    bulwark_types::tendermint_proto::v0_38::types::Evidence,
) {
    use bulwark_types::tendermint::{account, block, evidence, hash::Hash, vote, Signature, Time};
    use tendermint_rpc::request::RequestMessage;
    let vote = |byte: u8| vote::Vote {
        vote_type: vote::Type::Precommit,
        height: block::Height::from(5u32),
        round: block::Round::default(),
        block_id: Some(block::Id {
            hash: Hash::Sha256([byte; 32]),
            part_set_header: block::parts::Header::new(1, Hash::Sha256([byte; 32])).unwrap(),
        }),
        // Not the epoch: tendermint-proto reads a default timestamp back as none.
        timestamp: Some(Time::from_unix_timestamp(1_700_000_000, 0).unwrap()),
        validator_address: account::Id::new([7; 20]),
        validator_index: vote::ValidatorIndex::try_from(2u32).unwrap(),
        signature: Signature::new([byte; 64]).unwrap(),
        extension: vec![],
        extension_signature: None,
    };
    let e = evidence::Evidence::DuplicateVote(Box::new(
        evidence::DuplicateVoteEvidence::new(vote(1), vote(2)).unwrap(),
    ));
    let request = tendermint_rpc::endpoint::evidence::Request::<
        tendermint_rpc::dialect::v0_38::Dialect,
    >::new(e.clone());
    (request.into_json(), e.into())
}

#[test]
fn evidence_arrives_as_the_tendermint_rpc_client_sends_it() {
    let (body, expected) = client_evidence_request();
    let request: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(request["method"], "broadcast_evidence");
    let call = parse("broadcast_evidence", &request["params"]).unwrap();
    assert_eq!(call, Call::BroadcastEvidence(Box::new(expected.clone())));
    let by_position = parse(
        "broadcast_evidence",
        &json!([request["params"]["evidence"]]),
    )
    .unwrap();
    assert_eq!(by_position, call);
    let uri = format!(
        "evidence={}",
        serde_json::to_string(&request["params"]["evidence"]).unwrap()
    );
    assert_eq!(
        parse("broadcast_evidence", &uri_params(&uri).unwrap()).unwrap(),
        call
    );
    for bad in [
        json!({}),
        json!({"evidence": 5}),
        json!({"evidence": {"type": "x"}}),
    ] {
        assert_eq!(
            parse("broadcast_evidence", &bad).unwrap_err().code(),
            Code::InvalidParams,
            "{bad}"
        );
    }
}

#[test]
fn hashes_arrive_as_hex_or_base64_and_nothing_else() {
    let hash = [0xabu8; 32];
    let hex_form = hex::encode_upper(hash);
    let b64_form = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(hash)
    };
    for params in [
        json!({"hash": hex_form}),
        json!({"hash": b64_form}),
        json!([b64_form]),
        uri_params(&format!("hash=0x{hex_form}")).unwrap(),
    ] {
        assert_eq!(
            parse("block_by_hash", &params).unwrap(),
            Call::BlockByHash(hash.to_vec()),
            "{params}"
        );
        assert_eq!(
            parse("header_by_hash", &params).unwrap(),
            Call::HeaderByHash(hash.to_vec()),
            "{params}"
        );
    }
    // base64 that starts with `0x` is still base64.
    let mut h = [0u8; 32];
    h[0] = 0xd3;
    h[1] = 0x1f;
    let starts_0x = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(h)
    };
    assert!(starts_0x.starts_with("0x"), "{starts_0x}");
    assert_eq!(
        parse("block_by_hash", &json!({ "hash": starts_0x })).unwrap(),
        Call::BlockByHash(h.to_vec())
    );
    for bad in [
        json!({}),
        json!({"hash": "abcd"}),
        json!({"hash": "zz".repeat(32)}),
        json!({"hash": 5}),
    ] {
        let e = parse("block_by_hash", &bad).unwrap_err();
        assert_eq!(e.code(), Code::InvalidParams, "{bad}");
    }
}

#[test]
fn blockchain_unconfirmed_txs_and_check_tx_take_cometbfts_params() {
    assert_eq!(
        parse("blockchain", &json!({"minHeight": "3", "maxHeight": "9"})).unwrap(),
        Call::Blockchain {
            min: Some(3),
            max: Some(9)
        }
    );
    assert_eq!(
        parse("blockchain", &json!(["0", "0"])).unwrap(),
        Call::Blockchain {
            min: None,
            max: None
        }
    );
    assert_eq!(
        parse("unconfirmed_txs", &json!({})).unwrap(),
        Call::UnconfirmedTxs { limit: 30 }
    );
    assert_eq!(
        parse("unconfirmed_txs", &json!({"limit": "1000"})).unwrap(),
        Call::UnconfirmedTxs {
            limit: MAX_PER_PAGE
        }
    );
    assert_eq!(
        parse("check_tx", &uri_params("tx=%22k%3Dv%22").unwrap()).unwrap(),
        Call::CheckTx(b"k=v".to_vec())
    );
    assert_eq!(
        parse("header", &json!(["4"])).unwrap(),
        Call::Header(Some(4))
    );
    assert_eq!(
        parse("consensus_params", &json!({})).unwrap(),
        Call::ConsensusParams(None)
    );
    assert_eq!(
        parse("tx", &json!({"hash": "AB".repeat(32), "prove": true})).unwrap(),
        Call::Tx {
            hash: vec![0xab; 32],
            prove: true
        }
    );
}

#[test]
fn searches_take_a_query_a_page_and_an_order_as_cometbft_does() {
    let search = |method: &str, params: serde_json::Value| match parse(method, &params) {
        Ok(Call::TxSearch { search, prove }) => (search, prove),
        Ok(Call::BlockSearch(search)) => (search, false),
        other => panic!("{method} {params}: {other:?}"),
    };
    let (tx, prove) = search("tx_search", json!({"query": "app.key = 'a'"}));
    assert_eq!(
        (tx.page, tx.per_page, tx.descending, prove),
        (1, 30, false, false)
    );
    let (block, _) = search("block_search", json!(["block.height > 2"]));
    assert!(block.descending, "blocks newest first by default");
    let (tx, prove) = search(
        "tx_search",
        json!(["tx.height = 5", true, "2", "1000", "desc"]),
    );
    assert_eq!(
        (tx.page, tx.per_page, tx.descending, prove),
        (2, MAX_PER_PAGE, true, true)
    );
    let (tx, _) = search(
        "tx_search",
        json!({"query": "tx.height = 5", "per_page": 0}),
    );
    assert_eq!(
        tx.per_page, 30,
        "0 is the default, as CometBFT's validatePerPage"
    );
    let uri = uri_params("query=%22tx.height%3E%3D3%22&order_by=%22asc%22").unwrap();
    let (block, _) = search("block_search", uri);
    assert!(!block.descending);
    assert_eq!(block.query.to_string(), "tx.height>=3");
    let error = |method: &str, params: serde_json::Value| parse(method, &params).unwrap_err();
    assert_eq!(error("tx_search", json!({})).code(), Code::InvalidParams);
    assert_eq!(
        error("tx_search", json!({"query": "app.key"})).code(),
        Code::InternalError,
        "CometBFT's code for a query it cannot parse"
    );
    assert_eq!(
        error(
            "block_search",
            json!({"query": "a.b = 'c'", "order_by": "up"})
        )
        .code(),
        Code::InvalidParams
    );
    assert_eq!(
        error("tx_search", json!({"query": "a.b = 'c'", "page": 0})).code(),
        Code::InvalidParams
    );
    assert_eq!(
        parse("consensus_state", &json!({})).unwrap(),
        Call::ConsensusState
    );
    assert_eq!(
        parse("dump_consensus_state", &json!(null)).unwrap(),
        Call::DumpConsensusState
    );
}
