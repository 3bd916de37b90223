//! The ABCI socket client against a server nobody here wrote (`tendermint-abci`'s kvstore,
//! over TCP, and over a Unix socket through a relay), and against servers that fail in every
//! way the node must stop on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bulwark_app::socket::{Address, SocketApp};
use bulwark_app::{finalize_checked, AppError, Application};
use bulwark_types::tendermint::abci::request;
use bulwark_types::tendermint_proto::v0_38::abci as pb;
use bytes::Bytes;
use common::{finalize, info, query};
use prost::Message;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(500);

/// tendermint-abci's kvstore on a free port; its address.
fn third_party_kvstore() -> String {
    let (app, driver) = tendermint_abci::KeyValueStoreApp::new();
    let server = tendermint_abci::ServerBuilder::new(1 << 20)
        .bind("127.0.0.1:0", app)
        .unwrap();
    let addr = server.local_addr();
    std::thread::spawn(move || driver.run().is_ok());
    std::thread::spawn(move || server.listen().is_ok());
    addr
}

/// Info, FinalizeBlock, Commit and Query round trips; the third-party kvstore returns no tx
/// results, which CometBFT and Bulwark both refuse.
fn exercise(app: &mut SocketApp) {
    let i = app.info(info()).unwrap();
    assert_eq!(
        (i.data.as_str(), i.last_block_height.value()),
        ("kvstore-rs", 0)
    );
    let empty = finalize_checked(app, finalize(1, &[])).unwrap();
    assert!(empty.tx_results.is_empty());
    app.commit().unwrap();
    let refused = finalize_checked(app, finalize(2, &["a=1"])).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("1 txs answered with 0 tx results"),
        "{refused}"
    );
    app.commit().unwrap();
    let q = app.query(query("a")).unwrap();
    assert_eq!(q.value.as_ref(), b"1");
    assert_eq!(app.info(info()).unwrap().last_block_height.value(), 2);
    let check = app
        .check_tx(request::CheckTx {
            tx: Bytes::from("b=2"),
            kind: request::CheckTxKind::New,
        })
        .unwrap();
    assert!(check.code.is_ok());
    assert!(app.failure().is_none());
}

#[test]
fn the_tendermint_abci_kvstore_answers_over_tcp() {
    let addr = third_party_kvstore();
    let address = Address::parse(&format!("tcp://{addr}")).unwrap();
    let mut app = SocketApp::connect(address, TIMEOUT, TIMEOUT).unwrap();
    exercise(&mut app);
}

#[test]
fn the_tendermint_abci_kvstore_answers_over_a_unix_socket() {
    let tcp = third_party_kvstore();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // A relay: the server speaks TCP only; the bytes are its own.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut unix) = conn else { return };
            let mut server = TcpStream::connect(&tcp).unwrap();
            let (mut unix2, mut server2) = (unix.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut unix2, &mut server2));
            std::thread::spawn(move || std::io::copy(&mut server, &mut unix));
        }
    });
    let address = Address::parse(&format!("unix://{}", path.display())).unwrap();
    let mut app = SocketApp::connect(address, TIMEOUT, TIMEOUT).unwrap();
    exercise(&mut app);
}

/// A server that treats each of its four connections with `serve`.
fn server(serve: fn(TcpStream)) -> Address {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    Address::Tcp(addr.to_string())
}

fn framed(response: pb::response::Value) -> Vec<u8> {
    pb::Response {
        value: Some(response),
    }
    .encode_length_delimited_to_vec()
}

/// Waits for a request's first byte, then answers `bytes`.
fn answer_with(mut conn: TcpStream, bytes: &[u8]) {
    let mut b = [0u8; 1];
    if conn.read(&mut b).is_ok() {
        let _ = conn.write_all(bytes);
    }
    std::thread::sleep(Duration::from_secs(5));
}

fn failed(serve: fn(TcpStream)) -> (AppError, Duration, SocketApp) {
    let app = SocketApp::connect(server(serve), TIMEOUT, TIMEOUT).unwrap();
    let start = Instant::now();
    let e = app.info(info()).unwrap_err();
    (e, start.elapsed(), app)
}

#[test]
fn a_hung_application_is_an_error_within_the_timeout_and_every_later_call_fails() {
    let (e, took, app) = failed(|conn| {
        std::thread::sleep(Duration::from_secs(5));
        drop(conn)
    });
    assert!(matches!(e, AppError::Connection(_)), "{e:?}");
    assert!(e.to_string().contains("no answer in time"), "{e}");
    assert!(took < TIMEOUT * 4, "{took:?}");
    // The client is dead: later calls, on any connection, fail at once with the first error.
    let later = app.check_tx(request::CheckTx {
        tx: Bytes::from("a=1"),
        kind: request::CheckTxKind::New,
    });
    assert_eq!(later.unwrap_err().to_string(), e.to_string());
    assert_eq!(app.failure(), Some(e.to_string()));
}

#[test]
fn an_application_that_closes_its_connection_is_an_error() {
    let (e, ..) = failed(drop);
    assert!(matches!(e, AppError::Connection(_)), "{e:?}");
    assert!(e.to_string().contains("query connection"), "{e}");
}

#[test]
fn an_exception_is_an_error_carrying_its_text() {
    let (e, ..) = failed(|conn| {
        let exception = pb::ResponseException {
            error: "out of gas".into(),
        };
        answer_with(conn, &framed(pb::response::Value::Exception(exception)))
    });
    assert!(matches!(e, AppError::Exception(_)), "{e:?}");
    assert!(e.to_string().contains("out of gas"), "{e}");
}

#[test]
fn an_answer_of_the_wrong_kind_is_a_protocol_error() {
    let (e, ..) = failed(|conn| {
        let mut bytes = framed(pb::response::Value::Echo(pb::ResponseEcho::default()));
        bytes.extend(framed(pb::response::Value::Flush(pb::ResponseFlush {})));
        answer_with(conn, &bytes)
    });
    assert!(matches!(e, AppError::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("asked Info"), "{e}");
}

#[test]
fn a_missing_flush_answer_is_a_protocol_error() {
    let (e, ..) = failed(|conn| {
        let mut bytes = framed(pb::response::Value::Info(pb::ResponseInfo::default()));
        bytes.extend(framed(pb::response::Value::Echo(
            pb::ResponseEcho::default(),
        )));
        answer_with(conn, &bytes)
    });
    assert!(matches!(e, AppError::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("Flush"), "{e}");
}

#[test]
fn a_huge_or_endless_length_prefix_is_a_protocol_error_without_the_allocation() {
    let (e, ..) = failed(|conn| answer_with(conn, &[0xff, 0xff, 0xff, 0xff, 0x0f]));
    assert!(matches!(e, AppError::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("more than"), "{e}");
    let (e, ..) = failed(|conn| answer_with(conn, &[0xff; 11]));
    assert!(e.to_string().contains("longer than 10 bytes"), "{e}");
    let (e, ..) = failed(|conn| answer_with(conn, &[0x05, 0xff, 0xff, 0xff, 0xff, 0xff]));
    assert!(matches!(e, AppError::Protocol(_)), "{e:?}");
}

#[test]
fn an_application_that_never_listens_is_an_error_after_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let start = Instant::now();
    let e = SocketApp::connect(Address::Tcp(addr.to_string()), TIMEOUT, TIMEOUT).unwrap_err();
    assert!(matches!(e, AppError::Connection(_)), "{e:?}");
    assert!(start.elapsed() >= TIMEOUT, "{:?}", start.elapsed());
}

#[test]
fn proxy_app_takes_cometbfts_forms() {
    assert_eq!(
        Address::parse("tcp://127.0.0.1:26658").unwrap(),
        Address::Tcp("127.0.0.1:26658".into())
    );
    assert_eq!(
        Address::parse("127.0.0.1:26658").unwrap(),
        Address::Tcp("127.0.0.1:26658".into())
    );
    assert_eq!(
        Address::parse("unix:///run/app.sock").unwrap(),
        Address::Unix("/run/app.sock".into())
    );
    for bad in [
        "unix://",
        "tcp://nohost",
        "kvstore2",
        "tcp://:1",
        "tcp://h:99999",
    ] {
        assert!(
            matches!(Address::parse(bad), Err(AppError::Config(_))),
            "{bad}"
        );
    }
}

#[test]
fn an_application_that_stops_reading_cannot_hold_a_call_past_its_deadline() {
    // It reads 64 KiB every 200 ms: each write makes progress within the timeout, and the
    // request would take over a minute to go out; the call must still end at its deadline.
    let app = SocketApp::connect(
        server(|mut conn| {
            let mut b = vec![0u8; 64 << 10];
            while conn.read(&mut b).is_ok_and(|n| n > 0) {
                std::thread::sleep(Duration::from_millis(200));
            }
        }),
        TIMEOUT,
        TIMEOUT,
    )
    .unwrap();
    let start = Instant::now();
    let e = app
        .check_tx(request::CheckTx {
            tx: Bytes::from(vec![b'a'; 16 << 20]),
            kind: request::CheckTxKind::New,
        })
        .unwrap_err();
    assert!(matches!(e, AppError::Connection(_)), "{e:?}");
    assert!(start.elapsed() < TIMEOUT * 4, "{:?}", start.elapsed());
}

/// Reads `conn`'s requests and answers each with `answer` (a Flush with a Flush), until the
/// client goes.
fn answer_each(mut conn: TcpStream, answer: fn(pb::request::Value) -> pb::response::Value) {
    loop {
        let mut len = 0u64;
        for i in 0..10 {
            let mut byte = [0u8; 1];
            if conn.read_exact(&mut byte).is_err() {
                return;
            }
            len |= u64::from(byte[0] & 0x7f) << (7 * i);
            if byte[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len as usize];
        if conn.read_exact(&mut body).is_err() {
            return;
        }
        let Some(request) = pb::Request::decode(body.as_slice()).unwrap().value else {
            return;
        };
        let response = match request {
            pb::request::Value::Flush(_) => pb::response::Value::Flush(pb::ResponseFlush {}),
            other => answer(other),
        };
        if conn.write_all(&framed(response)).is_err() {
            return;
        }
    }
}

/// An application that updates one part of the consensus parameters per block: the block
/// size at height 1, the evidence age at height 2, nothing at height 3.
fn partial_updates(request: pb::request::Value) -> pb::response::Value {
    use bulwark_types::tendermint_proto::v0_38::types as t;
    let pb::request::Value::FinalizeBlock(r) = request else {
        return pb::response::Value::Info(pb::ResponseInfo::default());
    };
    let update = match r.height {
        1 => Some(t::ConsensusParams {
            block: Some(t::BlockParams {
                max_bytes: 1_000_000,
                max_gas: 50,
            }),
            ..Default::default()
        }),
        4 => Some(t::ConsensusParams {
            validator: Some(t::ValidatorParams {
                pub_key_types: vec!["ed25519".into(), "sr25519".into()],
            }),
            ..Default::default()
        }),
        2 => Some(t::ConsensusParams {
            evidence: Some(t::EvidenceParams {
                max_age_num_blocks: 7,
                max_age_duration: Some(
                    bulwark_types::tendermint_proto::google::protobuf::Duration {
                        seconds: 60,
                        nanos: 0,
                    },
                ),
                max_bytes: 1_000,
            }),
            ..Default::default()
        }),
        _ => None,
    };
    pb::response::Value::FinalizeBlock(pb::ResponseFinalizeBlock {
        consensus_param_updates: update,
        app_hash: vec![0; 32].into(),
        ..Default::default()
    })
}

#[test]
fn a_partial_parameter_update_keeps_the_parts_it_does_not_carry_as_cometbft_does() {
    use bulwark_types::genesis::default_consensus_params;
    let genesis = default_consensus_params();
    // Before the node names the parameters in force, a partial update cannot be completed.
    let mut fresh = SocketApp::connect(
        server(|conn| answer_each(conn, partial_updates)),
        TIMEOUT,
        TIMEOUT,
    )
    .unwrap();
    let e = fresh.finalize_block(finalize(1, &[])).unwrap_err();
    assert!(matches!(e, AppError::Protocol(_)), "{e:?}");

    let mut app = SocketApp::connect(
        server(|conn| answer_each(conn, partial_updates)),
        TIMEOUT,
        TIMEOUT,
    )
    .unwrap();
    app.consensus_params_are(&genesis);
    let first = app.finalize_block(finalize(1, &[])).unwrap();
    let after_one = first.consensus_param_updates.expect("the completed update");
    assert_eq!(
        (after_one.block.max_bytes, after_one.block.max_gas),
        (1_000_000, 50)
    );
    assert_eq!(after_one.evidence, genesis.evidence);
    assert_eq!(after_one.validator, genesis.validator);
    assert_eq!(after_one.version, genesis.version);
    // The next update is completed from the last one, not from the genesis.
    let second = app.finalize_block(finalize(2, &[])).unwrap();
    let after_two = second
        .consensus_param_updates
        .expect("the completed update");
    assert_eq!(after_two.block, after_one.block);
    assert_eq!(
        (
            after_two.evidence.max_age_num_blocks,
            after_two.evidence.max_bytes
        ),
        (7, 1_000)
    );
    assert_eq!(after_two.validator, genesis.validator);
    let third = app.finalize_block(finalize(3, &[])).unwrap();
    assert!(third.consensus_param_updates.is_none());
    assert!(app.failure().is_none());
    // A key type CometBFT does not know is refused, not read as ed25519 (tendermint-rs would).
    let e = app.finalize_block(finalize(4, &[])).unwrap_err();
    assert!(e.to_string().contains("\"sr25519\""), "{e}");
}
