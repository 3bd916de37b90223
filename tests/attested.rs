//! Attested TLS between running validators: four `bulwark` processes connect only over
//! mutually attested TLS, show each other's verified identity in `net_info`, and refuse every
//! forged, foreign or bent certificate an attacker presents on their peer port, each with the
//! named check in the log, while the network keeps committing.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::report::policy_bits;
use bulwark_attest::simulated::SimulatedPsp;
use bulwark_attest::EvidenceSource;
use bulwark_net::binding::{report_data, Window};
use bulwark_net::config::{provider, SERVER_NAME};
use bulwark_net::extension::{CertEvidence, OID_ARCS};
use harness::ports::testnet_block;
use harness::process::{bulwark_binary, fast_testnet, rpc_url, start, wait_for, Node};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::Digest;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

#[path = "shared/metrics.rs"]
mod metrics;

/// What the testnet's genesis admits: the measurement of this very binary (simulated trust).
fn binary_measurement() -> [u8; 48] {
    sha2::Sha384::digest(std::fs::read(bulwark_binary().unwrap()).unwrap()).into()
}

fn genesis(home: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(home.join("config/genesis.json")).unwrap())
        .unwrap()
}

/// When this test process started: every attacker certificate's window is measured from it,
/// so evidence made for a window and the certificate that states it agree.
fn started() -> time::OffsetDateTime {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let secs = *START.get_or_init(|| time::OffsetDateTime::now_utc().unix_timestamp());
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

/// The window from `from` to `until` relative to [`started`], as the binding states it.
fn window(from: time::Duration, until: time::Duration) -> Window {
    Window {
        not_before: (started() + from).unix_timestamp() as u64,
        not_after: (started() + until).unix_timestamp() as u64,
    }
}

/// The window of an attacker certificate that is valid now: from a minute ago for an hour.
fn valid_now() -> Window {
    window(-time::Duration::minutes(1), time::Duration::hours(1))
}

/// The network a binding names: its chain id and the SHA-256 of its genesis file.
struct Network {
    id: String,
    genesis: [u8; 32],
}

/// Evidence an attacker gets from `psp` for `key`, binding the window valid now, `consensus`
/// and `chain`, as the extension's bytes, after `bend` changed it.
fn evidence_for(
    psp: &mut SimulatedPsp,
    key: &rcgen::KeyPair,
    consensus: [u8; 32],
    chain: &Network,
    bend: impl FnOnce(&mut bulwark_attest::Evidence),
) -> Vec<u8> {
    let mut evidence = psp
        .evidence(report_data(
            &key.public_key_der(),
            valid_now(),
            &consensus,
            &chain.id,
            &chain.genesis,
        ))
        .unwrap();
    bend(&mut evidence);
    CertEvidence {
        consensus_key: consensus,
        report: evidence.report,
        endorsement: evidence.endorsement_cert,
    }
    .encode()
    .unwrap()
}

/// A certificate for `key` with `extension` (raw value), valid from `from` to `until`
/// (relative to the start of this test process).
fn certificate(
    key: &rcgen::KeyPair,
    extension: Option<Vec<u8>>,
    from: time::Duration,
    until: time::Duration,
) -> Presented {
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
    params.not_before = started() + from;
    params.not_after = started() + until;
    if let Some(ext) = extension {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(&OID_ARCS, ext));
    }
    let cert = params.self_signed(key).unwrap();
    (cert.der().clone(), key.serialize_der())
}

fn fresh_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A certificate an attacker makes, valid now: evidence from `psp` binding `consensus` and
/// `chain` (or no evidence at all).
fn attacker_cert(
    psp: Option<&mut SimulatedPsp>,
    consensus: [u8; 32],
    chain: &Network,
) -> Presented {
    let key = fresh_key();
    let ext = psp.map(|p| evidence_for(p, &key, consensus, chain, |_| {}));
    certificate(
        &key,
        ext,
        -time::Duration::minutes(1),
        time::Duration::hours(1),
    )
}

/// A certificate (DER) and its key (PKCS#8 DER), as a client presents them.
type Presented = (rustls::pki_types::CertificateDer<'static>, Vec<u8>);

/// Accepts any server (the attacker only wants to be let in), keeping the certificate it saw.
#[derive(Debug, Default)]
struct AnyServer(std::sync::Mutex<Option<rustls::pki_types::CertificateDer<'static>>>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if let Ok(mut seen) = self.0.lock() {
            *seen = Some(end_entity.clone().into_owned());
        }
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

/// Presents one certificate and key, matching or not.
#[derive(Debug)]
struct Present(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Present {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// Connects to `addr` presenting `cert` (or nothing) and tries to exchange a frame; returns
/// whether the node let it through.
fn attack(addr: &str, cert: Option<Presented>) -> bool {
    attack_seeing(addr, cert, Arc::new(AnyServer::default()))
}

fn attack_seeing(addr: &str, cert: Option<Presented>, server: Arc<AnyServer>) -> bool {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(server);
    let config = match cert {
        // Presented whatever the key (a thief's client: rustls would refuse a mismatched pair).
        Some((cert, key)) => {
            let key = provider()
                .key_provider
                .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
                .unwrap();
            let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![cert], key));
            builder.with_client_cert_resolver(Arc::new(Present(certified)))
        }
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
    let base = testnet_block(4).unwrap();
    let mut config = harness::process::FAST_TIMEOUTS.to_vec();
    config.push(metrics::ON);
    let homes = harness::process::testnet(&bulwark_binary().unwrap(), dir.path(), 4, base, &config)
        .unwrap();
    // The network requires the simulated chips' TCB as its minimum, so an older TCB is refused.
    let minimum = SimulatedPsp::new([0; 32], [0; 48]).tcb;
    for home in &homes {
        let mut g = genesis(home);
        g["attestation"]["products"]["Milan"]["minimum_tcb"] =
            serde_json::to_value(minimum).unwrap();
        // A changed genesis is another network: its chain id is certified anew.
        bulwark_identity::certify("bulwark-testnet", &mut g).unwrap();
        std::fs::write(
            home.join("config/genesis.json"),
            serde_json::to_string_pretty(&g).unwrap(),
        )
        .unwrap();
    }
    let g = genesis(&homes[0]);
    assert_eq!(g["attestation"]["trust"], "simulated");
    assert_eq!(
        g["attestation"]["measurements"]["one_of"][0],
        hex::encode(binary_measurement())
    );
    let chain = Network {
        id: g["chain_id"].as_str().unwrap().to_string(),
        genesis: sha2::Sha256::digest(std::fs::read(homes[0].join("config/genesis.json")).unwrap())
            .into(),
    };
    let validator_key = |i: usize| -> [u8; 32] {
        // The ceremony writes each node's public keys to its enrollment.json.
        let enrollment: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(homes[i].join("config/enrollment.json")).unwrap(),
        )
        .unwrap();
        hex::decode(enrollment["consensus_key"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h).unwrap()).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 3, Duration::from_secs(60)).unwrap();
    }
    // Every node attested its peers; net_info shows who they are.
    let line = nodes[0]
        .wait_for_peer_log("peer attested", Duration::from_secs(10))
        .unwrap();
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
    // A genuine chip launched for this network: HOST_DATA = SHA-256 of its genesis file.
    let genuine_chip = || {
        let mut psp = SimulatedPsp::new([77; 32], measurement);
        psp.host_data = chain.genesis;
        psp
    };
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
                &Network {
                    id: "another-chain".into(),
                    genesis: chain.genesis,
                },
            ))
        }),
        ("check=debug", {
            let mut debug = genuine_chip();
            debug.policy |= policy_bits::DEBUG;
            Some(attacker_cert(Some(&mut debug), validator_key(1), &chain))
        }),
        ("check=report_data", {
            // A genuine guest of the same image that runs for another genesis document under
            // this chain id binds that document's hash (HOST_DATA is not what peers read: a
            // launch instance was launched before the genesis existed).
            let mut elsewhere = genuine_chip();
            elsewhere.host_data = [0xab; 32];
            Some(attacker_cert(
                Some(&mut elsewhere),
                validator_key(1),
                &Network {
                    id: chain.id.clone(),
                    genesis: [0xab; 32],
                },
            ))
        }),
        ("check=not_a_validator", {
            Some(attacker_cert(Some(&mut genuine_chip()), [5; 32], &chain))
        }),
        ("check=minimum_tcb", {
            let mut old = genuine_chip();
            old.tcb.snp -= 1;
            Some(attacker_cert(Some(&mut old), validator_key(1), &chain))
        }),
        ("check=vmpl", {
            let mut vmpl1 = genuine_chip();
            vmpl1.vmpl = 1;
            Some(attacker_cert(Some(&mut vmpl1), validator_key(1), &chain))
        }),
        ("check=report_signature", {
            let key = fresh_key();
            let ext = evidence_for(&mut genuine_chip(), &key, validator_key(1), &chain, |e| {
                e.report[0x2A0] ^= 1
            });
            Some(certificate(
                &key,
                Some(ext),
                -time::Duration::minutes(1),
                time::Duration::hours(1),
            ))
        }),
        ("check=certificate_chain", {
            // The VCEK's issuer signature forged: as a host-supplied chain looks to a verifier
            // that trusts pinned roots only.
            let key = fresh_key();
            let ext = evidence_for(&mut genuine_chip(), &key, validator_key(1), &chain, |e| {
                let n = e.endorsement_cert.len();
                e.endorsement_cert[n - 10] ^= 0x55;
            });
            Some(certificate(
                &key,
                Some(ext),
                -time::Duration::minutes(1),
                time::Duration::hours(1),
            ))
        }),
        ("check=evidence_malformed", {
            let key = fresh_key();
            Some(certificate(
                &key,
                Some(vec![0x30, 0x03, 0x02, 0x01]),
                -time::Duration::minutes(1),
                time::Duration::hours(1),
            ))
        }),
        ("check=validity", {
            let key = fresh_key();
            let ext = evidence_for(&mut genuine_chip(), &key, validator_key(1), &chain, |_| {});
            Some(certificate(
                &key,
                Some(ext),
                -time::Duration::hours(3),
                -time::Duration::hours(2),
            ))
        }),
    ];
    for (expected, cert) in cases {
        assert!(
            !attack(&p2p0, cert),
            "{expected}: the node let the attacker in"
        );
        let line = nodes[0]
            .wait_for_peer_log(expected, Duration::from_secs(15))
            .unwrap();
        assert!(line.contains("refused inbound peer"), "{line}");
    }
    // Another chip's VCEK under a genuine report.
    {
        let key = fresh_key();
        let other_chip = SimulatedPsp::new([79; 32], measurement);
        let foreign_vcek = other_chip
            .evidence(report_data(
                &key.public_key_der(),
                valid_now(),
                &validator_key(1),
                &chain.id,
                &chain.genesis,
            ))
            .unwrap()
            .endorsement_cert;
        let ext = evidence_for(&mut genuine_chip(), &key, validator_key(1), &chain, |e| {
            e.endorsement_cert = foreign_vcek
        });
        let cert = certificate(
            &key,
            Some(ext),
            -time::Duration::minutes(1),
            time::Duration::hours(1),
        );
        let before = nodes[0].peer_log.lock().unwrap().len();
        assert!(!attack(&p2p0, Some(cert)), "another chip's VCEK was let in");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while nodes[0].peer_log.lock().unwrap()[before..]
            .iter()
            .all(|l| !l.contains("check=report_signature"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no report_signature refusal"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A genuine validator's certificate, replayed by someone without its TLS key: the
    // certificate passes every check, the handshake signature does not.
    {
        let seen = Arc::new(AnyServer::default());
        let p2p1 = format!("127.0.0.1:{}", base + 10);
        assert!(!attack_seeing(&p2p1, None, seen.clone()));
        let stolen = seen
            .0
            .lock()
            .unwrap()
            .clone()
            .expect("node 1 showed its certificate");
        assert!(!attack(&p2p0, Some((stolen, fresh_key().serialize_der()))));
        nodes[0]
            .wait_for_peer_log("BadSignature", Duration::from_secs(15))
            .unwrap();
    }
    // Not TLS at all.
    {
        let mut s = TcpStream::connect(&p2p0).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(b"\x00\x00\x00\x05hello").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        nodes[0]
            .wait_for_peer_log("InvalidContentType", Duration::from_secs(15))
            .unwrap();
    }

    // An operator sees each refusal counted by the check that failed; nobody got in.
    let refused = metrics::scrape(base, 0);
    let checks = [
        "evidence_missing",
        "measurement",
        "report_data",
        "debug",
        "not_a_validator",
        "minimum_tcb",
        "vmpl",
        "report_signature",
        "certificate_chain",
        "evidence_malformed",
        "validity",
        "tls",
    ];
    for check in checks {
        let n = metrics::value(
            &refused,
            "bulwark_p2p_handshakes_refused_total",
            &[("direction", "inbound"), ("check", check)],
        );
        // Two forgeries bind another network: another chain id, and another genesis.
        let least = if check == "report_data" { 2.0 } else { 1.0 };
        assert!(n >= least, "{check}: {n}");
    }
    assert_eq!(metrics::value(&refused, "cometbft_p2p_peers", &[]), 3.0);

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

#[test]
fn a_node_of_an_amd_trust_network_without_sev_snp_refuses_to_start() {
    // Simulated evidence can never be presented to an amd-trust network from a node: without
    // the SEV-SNP guest device it does not start at all (the TLS verifier refusing simulated
    // evidence under amd trust is in crates/net's attack matrix).
    let dir = tempfile::tempdir().unwrap();
    let homes = fast_testnet(dir.path(), testnet_block(4).unwrap()).unwrap();
    let mut g = genesis(&homes[0]);
    g["attestation"]["trust"] = "amd".into();
    bulwark_identity::certify("bulwark-testnet", &mut g).unwrap();
    std::fs::write(
        homes[0].join("config/genesis.json"),
        serde_json::to_string_pretty(&g).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(bulwark_binary().unwrap())
        .args(["start", "--home", homes[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("trusts AMD hardware only") && stderr.contains("/dev/sev-guest"),
        "{stderr}"
    );
}
