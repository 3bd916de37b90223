//! Attested TLS between running validators: four `bulwark` processes connect only over
//! mutually attested TLS, show each other's verified identity in `net_info`, and refuse every
//! forged, foreign or bent certificate an attacker presents on their peer port, each with the
//! named check in the log, while the network keeps committing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_attest::report::policy_bits;
use bulwark_attest::simulated::SimulatedPsp;
use bulwark_attest::EvidenceSource;
use bulwark_net::binding::report_data;
use bulwark_net::config::{provider, SERVER_NAME};
use bulwark_net::extension::{CertEvidence, OID_ARCS};
use common::process::{base_port, rpc_url, start, stop_cleanly, testnet, wait_for, Node};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::Digest;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// What the testnet's genesis admits: the measurement of this very binary (simulated trust).
fn binary_measurement() -> [u8; 48] {
    sha2::Sha384::digest(std::fs::read(env!("CARGO_BIN_EXE_bulwark")).unwrap()).into()
}

fn genesis(home: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(home.join("config/genesis.json")).unwrap())
        .unwrap()
}

/// A certificate an attacker makes: evidence from `psp` binding `consensus` and `chain` (or no
/// evidence at all).
fn attacker_cert(psp: Option<&mut SimulatedPsp>, consensus: [u8; 32], chain: &str) -> Presented {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(1);
    if let Some(psp) = psp {
        let evidence = psp
            .evidence(report_data(&key.public_key_der(), &consensus, chain))
            .unwrap();
        let ext = CertEvidence {
            consensus_key: consensus,
            report: evidence.report,
            endorsement: evidence.endorsement_cert,
        }
        .encode()
        .unwrap();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(&OID_ARCS, ext));
    }
    let cert = params.self_signed(&key).unwrap();
    (cert.der().clone(), key.serialize_der())
}

/// A certificate (DER) and its key (PKCS#8 DER), as a client presents them.
type Presented = (rustls::pki_types::CertificateDer<'static>, Vec<u8>);

/// Accepts any server: the attacker only wants to be let in.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Connects to `addr` presenting `cert` (or nothing) and tries to exchange a frame; returns
/// whether the node let it through.
fn attack(addr: &str, cert: Option<Presented>) -> bool {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let config = match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(SERVER_NAME).unwrap())
            .unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    // A valid status frame; an admitted peer would get the node's Hello back.
    let sent = tls
        .write_all(&[0, 0, 0, 2, 0x2a, 0x00])
        .and_then(|_| tls.flush());
    let mut first = [0u8; 4];
    sent.and_then(|_| tls.read_exact(&mut first)).is_ok()
}

#[test]
fn validators_connect_only_over_attested_tls_and_refuse_forgeries() {
    let dir = tempfile::tempdir().unwrap();
    let base = base_port(2);
    let homes = testnet(dir.path(), base);
    let g = genesis(&homes[0]);
    assert_eq!(g["attestation"]["trust"], "simulated");
    assert_eq!(
        g["attestation"]["measurements"]["one_of"][0],
        hex::encode(binary_measurement())
    );
    let chain = g["chain_id"].as_str().unwrap().to_string();
    let validator_key = |i: usize| -> [u8; 32] {
        let key: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(homes[i].join("config/priv_validator_key.json")).unwrap(),
        )
        .unwrap();
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(key["pub_key"]["value"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h)).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 3, Duration::from_secs(60));
    }
    // Every node attested its peers; net_info shows who they are.
    let line = nodes[0].wait_for_peer_log("peer attested", Duration::from_secs(10));
    assert!(line.contains(&hex::encode(binary_measurement())), "{line}");
    let net: serde_json::Value = {
        let addr = rpc_url(base, 0).trim_start_matches("http://").to_string();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /net_info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap()
    };
    let peers = net["result"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3, "{net}");
    for p in peers {
        assert_eq!(
            p["attestation"]["measurement"],
            hex::encode(binary_measurement())
        );
        assert_eq!(
            p["attestation"]["validator_address"]
                .as_str()
                .unwrap()
                .len(),
            40
        );
    }

    let p2p0 = format!("127.0.0.1:{base}");
    let measurement = binary_measurement();
    let genuine_chip = || SimulatedPsp::new([77; 32], measurement);
    let cases: Vec<(&str, Option<Presented>)> = vec![
        ("peer sent no certificates", None),
        (
            "check=evidence_missing",
            Some(attacker_cert(None, validator_key(1), &chain)),
        ),
        ("check=measurement", {
            let mut other = SimulatedPsp::new([78; 32], [0x11; 48]);
            Some(attacker_cert(Some(&mut other), validator_key(1), &chain))
        }),
        ("check=report_data", {
            Some(attacker_cert(
                Some(&mut genuine_chip()),
                validator_key(1),
                "another-chain",
            ))
        }),
        ("check=debug", {
            let mut debug = genuine_chip();
            debug.policy |= policy_bits::DEBUG;
            Some(attacker_cert(Some(&mut debug), validator_key(1), &chain))
        }),
        ("check=not_a_validator", {
            Some(attacker_cert(Some(&mut genuine_chip()), [5; 32], &chain))
        }),
    ];
    for (expected, cert) in cases {
        assert!(
            !attack(&p2p0, cert),
            "{expected}: the node let the attacker in"
        );
        let line = nodes[0].wait_for_peer_log(expected, Duration::from_secs(15));
        assert!(line.contains("refused inbound peer"), "{line}");
    }
    // Not TLS at all.
    {
        let mut s = TcpStream::connect(&p2p0).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"\x00\x00\x00\x05hello").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        nodes[0].wait_for_peer_log("InvalidContentType", Duration::from_secs(15));
    }

    // The network kept committing through all of it.
    let reached = nodes.iter().map(|n| n.last).max().unwrap();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, reached + 3, Duration::from_secs(60));
    }
    for n in nodes.iter_mut() {
        stop_cleanly(n);
    }
}
