//! Attested TLS over real sockets: two validators with simulated-PSP evidence connect, and
//! every way of faking, stealing or bending a certificate is refused by the accepting side
//! with the named check that caught it. Each case runs a real TLS 1.3 handshake on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::report::policy_bits;
use bulwark_attest::simulated::SimulatedPsp;
use bulwark_attest::{EvidenceSource, HexBytes, Measurements, Policy, Product, Tcb, Trust};
use bulwark_net::binding::{report_data, Window};
use bulwark_net::config::{client_config, provider, server_config, SERVER_NAME};
use bulwark_net::extension::{CertEvidence, OID_ARCS};
use bulwark_net::verifier::peer_identity;
use bulwark_net::{AttestedVerifier, FullNodes, LocalIdentity, NetworkPolicy, PeerRejected};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const CHAIN: &str = "bulwark-attack-matrix";
/// SHA-256 of the network's genesis file.
const GENESIS: [u8; 32] = [0x6e; 32];
const MEASUREMENT: [u8; 48] = [0x42; 48];
const HOUR: Duration = Duration::from_secs(3600);

fn consensus_key(i: u8) -> [u8; 32] {
    [i; 32]
}

fn psp(i: u8) -> SimulatedPsp {
    SimulatedPsp::new([i; 32], MEASUREMENT)
}

fn network() -> NetworkPolicy {
    NetworkPolicy {
        attestation: Policy::strict(
            Trust::Simulated,
            Measurements::OneOf(vec![HexBytes(MEASUREMENT)]),
        ),
        chain_id: CHAIN.into(),
        genesis_sha256: GENESIS,
        validators: (1..=4).map(consensus_key).collect(),
        full_nodes: FullNodes::Refused,
    }
}

fn verifier(policy: NetworkPolicy) -> Arc<AttestedVerifier> {
    Arc::new(AttestedVerifier::new(policy, &provider()))
}

fn identity(i: u8) -> LocalIdentity {
    LocalIdentity::new(
        &mut psp(i),
        consensus_key(i),
        CHAIN,
        &GENESIS,
        SystemTime::now(),
        HOUR,
    )
    .unwrap()
}

/// When this test process started (Unix seconds): every forged certificate's window is
/// measured from it, so evidence made for a window and the certificate that states it agree.
fn start() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    })
}

/// The validity window of a forged certificate valid for `lifetime` from a minute ago.
fn window(lifetime: Duration) -> Window {
    Window {
        not_before: start() - 60,
        not_after: start() + lifetime.as_secs(),
    }
}

/// A certificate for `key` carrying `extension` (raw extension value), valid in `window`.
fn certificate_in(key: &rcgen::KeyPair, extension: Option<Vec<u8>>, window: Window) -> LocalParts {
    let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
    let at = |secs: u64| time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
    params.not_before = at(window.not_before);
    params.not_after = at(window.not_after);
    if let Some(value) = extension {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(&OID_ARCS, value));
    }
    let cert = params.self_signed(key).unwrap();
    LocalParts {
        cert: cert.der().clone(),
        key: key.serialize_der(),
    }
}

/// A certificate for `key` carrying `extension`, valid for `lifetime` around now.
fn forged(key: &rcgen::KeyPair, extension: Option<Vec<u8>>, lifetime: Duration) -> LocalParts {
    certificate_in(key, extension, window(lifetime))
}

/// Evidence from `psp` whose REPORT_DATA binds `spki`, an hour's window, `consensus`, `chain`
/// and the network's genesis.
fn extension_for(psp: &mut SimulatedPsp, spki: &[u8], consensus: [u8; 32], chain: &str) -> Vec<u8> {
    extension_for_genesis(psp, spki, consensus, chain, &GENESIS)
}

/// [`extension_for`] with the genesis hash `genesis`.
fn extension_for_genesis(
    psp: &mut SimulatedPsp,
    spki: &[u8],
    consensus: [u8; 32],
    chain: &str,
    genesis: &[u8; 32],
) -> Vec<u8> {
    let evidence = psp
        .evidence(report_data(spki, window(HOUR), &consensus, chain, genesis))
        .unwrap();
    CertEvidence {
        consensus_key: consensus,
        report: evidence.report,
        endorsement: evidence.endorsement_cert,
    }
    .encode()
    .unwrap()
}

fn fresh_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A certificate and key as the client presents them (possibly not a matching pair).
struct LocalParts {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl From<&LocalIdentity> for LocalParts {
    fn from(id: &LocalIdentity) -> Self {
        let PrivateKeyDer::Pkcs8(key) = id.private_key() else {
            unreachable!()
        };
        LocalParts {
            cert: id.cert.clone(),
            key: key.secret_pkcs8_der().to_vec(),
        }
    }
}

/// Presents a certificate with whatever key it is given (a thief's client).
#[derive(Debug)]
struct Present(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Present {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

fn client_presenting(parts: &LocalParts, server_policy: NetworkPolicy) -> rustls::ClientConfig {
    let key = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            parts.key.clone(),
        )))
        .unwrap();
    let certified = rustls::sign::CertifiedKey::new(vec![parts.cert.clone()], key);
    rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier(server_policy))
        .with_client_cert_resolver(Arc::new(Present(Arc::new(certified))))
}

/// What each side saw of one connection attempt.
struct Outcome {
    server: Result<(), std::io::Error>,
    client: Result<(), std::io::Error>,
}

fn run(server: rustls::ServerConfig, client: rustls::ClientConfig) -> Outcome {
    run_raw(server, move |stream| {
        let conn = rustls::ClientConnection::new(
            Arc::new(client),
            ServerName::try_from(SERVER_NAME).unwrap(),
        )
        .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, stream);
        tls.write_all(b"ping")?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong)?;
        assert_eq!(&pong, b"pong");
        Ok(())
    })
}

fn run_raw(
    server: rustls::ServerConfig,
    client: impl FnOnce(TcpStream) -> Result<(), std::io::Error> + Send + 'static,
) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client(stream)
    });
    let (stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let conn = rustls::ServerConnection::new(Arc::new(server)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let mut ping = [0u8; 4];
    let server_result = tls
        .read_exact(&mut ping)
        .and_then(|_| tls.write_all(b"pong"))
        .and_then(|_| tls.flush());
    drop(tls);
    Outcome {
        server: server_result,
        client: client.join().unwrap(),
    }
}

fn rejection(e: &std::io::Error) -> Option<PeerRejected> {
    bulwark_net::verifier::rejection_of(e)
}

fn validator_server(policy: NetworkPolicy) -> rustls::ServerConfig {
    server_config(&identity(1), verifier(policy)).unwrap()
}

/// The accepting validator refuses a client presenting `parts`, with `check`.
fn refused(parts: LocalParts, check: &str) {
    refused_by(network(), parts, check)
}

fn refused_by(policy: NetworkPolicy, parts: LocalParts, check: &str) {
    let outcome = run(
        validator_server(policy),
        client_presenting(&parts, network()),
    );
    let err = outcome
        .server
        .expect_err("the server accepted the connection");
    match rejection(&err) {
        Some(reason) => assert_eq!(reason.check(), check, "{reason}"),
        // Not the certificate: the handshake itself (the key does not match the certificate).
        None => {
            assert_eq!(check, "handshake", "refused for another reason: {err}");
            let tls = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>());
            assert_eq!(
                tls,
                Some(&rustls::Error::InvalidCertificate(
                    rustls::CertificateError::BadSignature
                )),
                "{err}"
            );
        }
    }
    assert!(outcome.client.is_err(), "the client thinks it is connected");
}

#[test]
fn two_attested_validators_connect_and_see_each_other() {
    let server_verifier = verifier(network());
    let server = server_config(&identity(1), server_verifier.clone()).unwrap();
    let client = client_config(&identity(2), verifier(network())).unwrap();
    let outcome = run(server, client);
    outcome.server.unwrap();
    outcome.client.unwrap();
    // What a node logs and shows in net_info for the peer.
    let me = identity(2);
    let seen = peer_identity(
        &server_verifier,
        Some(std::slice::from_ref(&me.cert)),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    assert_eq!(seen.consensus_key, consensus_key(2));
    assert_eq!(seen.measurement, MEASUREMENT);
    assert_eq!(seen.chip_id, psp(2).chip_id);
}

#[test]
fn attack_01_plain_tls_client_without_a_certificate() {
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier(network()))
        .with_no_client_auth();
    let outcome = run(validator_server(network()), client);
    let err = outcome
        .server
        .expect_err("accepted a client without a certificate");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[test]
fn attack_02_certificate_without_evidence() {
    refused(forged(&fresh_key(), None, HOUR), "evidence_missing");
}

#[test]
fn attack_03_evidence_binding_another_tls_key() {
    // Genuine evidence for key A, presented in a certificate (and handshake) of key B.
    let a = fresh_key();
    let b = fresh_key();
    let ext = extension_for(&mut psp(2), &a.public_key_der(), consensus_key(2), CHAIN);
    refused(forged(&b, Some(ext), HOUR), "report_data");
}

#[test]
fn attack_04_evidence_for_another_chain() {
    let key = fresh_key();
    let ext = extension_for(
        &mut psp(2),
        &key.public_key_der(),
        consensus_key(2),
        "other-chain",
    );
    refused(forged(&key, Some(ext), HOUR), "report_data");
}

#[test]
fn attack_04b_evidence_for_another_genesis_of_the_same_chain_id() {
    // A guest that was handed another genesis document whose chain id collides (or a host that
    // launched it for one) binds that document's hash: refused, whatever HOST_DATA says.
    let key = fresh_key();
    let mut other = GENESIS;
    other[31] ^= 1;
    let ext = extension_for_genesis(
        &mut psp(2),
        &key.public_key_der(),
        consensus_key(2),
        CHAIN,
        &other,
    );
    refused(forged(&key, Some(ext), HOUR), "report_data");
}

#[test]
fn attack_05_measurement_not_in_genesis() {
    let mut other_image = psp(2);
    other_image.measurement = [0x13; 48];
    let key = fresh_key();
    let ext = extension_for(
        &mut other_image,
        &key.public_key_der(),
        consensus_key(2),
        CHAIN,
    );
    refused(forged(&key, Some(ext), HOUR), "measurement");
}

#[test]
fn attack_06_debug_policy() {
    let mut debug = psp(2);
    debug.policy |= policy_bits::DEBUG;
    let key = fresh_key();
    let ext = extension_for(&mut debug, &key.public_key_der(), consensus_key(2), CHAIN);
    refused(forged(&key, Some(ext), HOUR), "debug");
}

#[test]
fn attack_07_tcb_below_the_minimum() {
    let mut policy = network();
    let tcb = psp(2).tcb;
    policy
        .attestation
        .products
        .get_mut(&Product::Milan)
        .unwrap()
        .minimum_tcb = Tcb {
        snp: tcb.snp.saturating_add(1),
        ..tcb
    };
    refused_by(policy, LocalParts::from(&identity(2)), "minimum_tcb");
}

#[test]
fn attack_08_forged_report_signature() {
    let key = fresh_key();
    let mut evidence = psp(2)
        .evidence(report_data(
            &key.public_key_der(),
            window(HOUR),
            &consensus_key(2),
            CHAIN,
            &GENESIS,
        ))
        .unwrap();
    evidence.report[0x2A0] ^= 1; // inside the signature's R
    let ext = CertEvidence {
        consensus_key: consensus_key(2),
        report: evidence.report,
        endorsement: evidence.endorsement_cert,
    }
    .encode()
    .unwrap();
    refused(forged(&key, Some(ext), HOUR), "report_signature");
}

#[test]
fn attack_09_vcek_of_another_chip() {
    let key = fresh_key();
    let binding = report_data(
        &key.public_key_der(),
        window(HOUR),
        &consensus_key(2),
        CHAIN,
        &GENESIS,
    );
    let report = psp(2).evidence(binding).unwrap().report;
    let other_chip = psp(9).evidence(binding).unwrap().endorsement_cert;
    let ext = CertEvidence {
        consensus_key: consensus_key(2),
        report,
        endorsement: other_chip,
    }
    .encode()
    .unwrap();
    refused(forged(&key, Some(ext), HOUR), "report_signature");
}

#[test]
fn attack_10_endorsement_certificate_from_a_host_supplied_chain() {
    // The verifier trusts only pinned roots: a VCEK signed by anything else (here: the genuine
    // simulated VCEK with its issuer signature forged) does not chain.
    let key = fresh_key();
    let mut evidence = psp(2)
        .evidence(report_data(
            &key.public_key_der(),
            window(HOUR),
            &consensus_key(2),
            CHAIN,
            &GENESIS,
        ))
        .unwrap();
    let n = evidence.endorsement_cert.len();
    evidence.endorsement_cert[n - 10] ^= 0x55;
    let ext = CertEvidence {
        consensus_key: consensus_key(2),
        report: evidence.report,
        endorsement: evidence.endorsement_cert,
    }
    .encode()
    .unwrap();
    refused(forged(&key, Some(ext), HOUR), "certificate_chain");
}

#[test]
fn attack_11_valid_certificate_replayed_without_its_private_key() {
    // A thief has validator 2's genuine certificate but not its TLS key.
    let stolen = identity(2);
    let parts = LocalParts {
        cert: stolen.cert.clone(),
        key: fresh_key().serialize_der(),
    };
    refused(parts, "handshake");
}

#[test]
fn attack_12_expired_certificate() {
    let old = LocalIdentity::new(
        &mut psp(2),
        consensus_key(2),
        CHAIN,
        &GENESIS,
        SystemTime::now() - 3 * HOUR,
        HOUR,
    )
    .unwrap();
    refused(LocalParts::from(&old), "validity");
}

#[test]
fn attack_13_consensus_key_not_in_the_validator_set() {
    refused(LocalParts::from(&identity(7)), "not_a_validator");
}

#[test]
fn attack_13b_a_full_node_is_admitted_only_where_genesis_admits_full_nodes_and_only_attested() {
    let full_nodes = NetworkPolicy {
        full_nodes: FullNodes::Attested,
        ..network()
    };
    let outcome = run(
        validator_server(full_nodes.clone()),
        client_config(&identity(7), verifier(network())).unwrap(),
    );
    outcome.server.unwrap();
    outcome.client.unwrap();
    // Admitting full nodes relaxes membership, nothing else: its evidence is checked in full.
    let key = fresh_key();
    let spki = key.public_key_der();
    let mut other_image = SimulatedPsp::new([7; 32], [0x13; 48]);
    let ext = extension_for(&mut other_image, &spki, consensus_key(7), CHAIN);
    refused_by(
        full_nodes.clone(),
        forged(&key, Some(ext), HOUR),
        "measurement",
    );
    refused_by(
        full_nodes,
        forged(&fresh_key(), None, HOUR),
        "evidence_missing",
    );
}

#[test]
fn attack_13c_without_evidence_a_peer_is_only_ever_an_unattested_full_node_and_bad_evidence_is_no_way_in(
) {
    let unattested = NetworkPolicy {
        full_nodes: FullNodes::Unattested,
        ..network()
    };
    // No evidence at all: admitted where genesis says so, known by a key of its own that is
    // no validator's, marked unattested.
    let plain = LocalIdentity::unattested(consensus_key(2), SystemTime::now(), HOUR).unwrap();
    let server = verifier(unattested.clone());
    let outcome = run(
        server_config(&identity(1), server.clone()).unwrap(),
        client_config(&plain, verifier(network())).unwrap(),
    );
    outcome.server.unwrap();
    let seen = peer_identity(&server, Some(std::slice::from_ref(&plain.cert)), start()).unwrap();
    assert!(!seen.attested);
    assert_ne!(
        seen.consensus_key,
        consensus_key(2),
        "it claims validator 2's key in vain"
    );
    assert!(!network().validators.contains(&seen.consensus_key));
    // Elsewhere it is refused; and evidence that fails is refused, not taken as none.
    refused(LocalParts::from(&plain), "evidence_missing");
    let key = fresh_key();
    let spki = key.public_key_der();
    let mut other_image = SimulatedPsp::new([2; 32], [0x13; 48]);
    let ext = extension_for(&mut other_image, &spki, consensus_key(2), CHAIN);
    refused_by(unattested, forged(&key, Some(ext), HOUR), "measurement");
}

#[test]
fn the_admitted_keys_follow_the_validator_set_on_a_running_verifier() {
    let policy = network();
    let keys = policy.validators.clone();
    let server = verifier(policy);
    let serve = || server_config(&identity(1), server.clone()).unwrap();
    let client = |i: u8| client_config(&identity(i), verifier(network())).unwrap();
    let refusal =
        |outcome: Outcome| rejection(&outcome.server.expect_err("admitted")).map(|r| r.check());
    assert_eq!(refusal(run(serve(), client(7))), Some("not_a_validator"));
    // The chain makes 7 a validator and removes 4: the same verifier (its refusal of 7 was not
    // remembered) admits 7 and refuses 4 from then on.
    assert!(keys.replace([1, 2, 3, 7].map(consensus_key).into_iter().collect()));
    run(serve(), client(7)).server.unwrap();
    assert_eq!(refusal(run(serve(), client(4))), Some("not_a_validator"));
    assert!(!keys.replace([1, 2, 3, 7].map(consensus_key).into_iter().collect()));
}

#[test]
fn attack_14_vmpl_mismatch() {
    let mut vmpl1 = psp(2);
    vmpl1.vmpl = 1;
    let key = fresh_key();
    let ext = extension_for(&mut vmpl1, &key.public_key_der(), consensus_key(2), CHAIN);
    refused(forged(&key, Some(ext), HOUR), "vmpl");
}

#[test]
fn attack_15_simulated_evidence_on_an_amd_trust_network() {
    let mut amd = network();
    amd.attestation.trust = Trust::Amd;
    // The simulated VCEK names the simulated ASK as its issuer: no AMD signer has that name.
    refused_by(amd, LocalParts::from(&identity(2)), "certificate_issuer");
}

#[test]
fn attack_16_garbage_instead_of_a_client_hello() {
    let outcome = run_raw(validator_server(network()), |mut stream| {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: validator\r\n\r\n")?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).map(|_| ())
    });
    let err = outcome.server.expect_err("the server accepted garbage");
    assert!(rejection(&err).is_none());
    // The client saw the connection end (an alert at most), never application data.
    outcome.client.ok();
}

#[test]
fn attack_17_malformed_evidence_extension() {
    refused(
        forged(&fresh_key(), Some(vec![0x30, 0x03, 0x02, 0x01]), HOUR),
        "evidence_malformed",
    );
}

#[test]
fn attack_18_certificate_valid_for_too_long() {
    // (The evidence binds an hour; the lifetime check refuses the certificate before that.)
    let key = fresh_key();
    let ext = extension_for(&mut psp(2), &key.public_key_der(), consensus_key(2), CHAIN);
    refused(
        forged(&key, Some(ext), Duration::from_secs(30 * 24 * 3600)),
        "validity",
    );
}

#[test]
fn attack_19_the_dialling_side_checks_the_server_too() {
    // A server without evidence: the validator dialling it refuses.
    let key = fresh_key();
    let parts = forged(&key, None, HOUR);
    let fake_server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![parts.cert],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(parts.key)),
        )
        .unwrap();
    let client = client_config(&identity(2), verifier(network())).unwrap();
    let outcome = run(fake_server, client);
    let err = outcome
        .client
        .expect_err("the client accepted an unattested server");
    assert_eq!(rejection(&err).unwrap().check(), "evidence_missing");
}

#[test]
fn a_rotated_certificate_is_presented_to_new_connections_while_old_ones_keep_working() {
    use bulwark_net::config::rotating_server_config;
    use bulwark_net::RotatingIdentity;
    let first = identity(1);
    let rotating = Arc::new(RotatingIdentity::new(&first).unwrap());
    let server = Arc::new(rotating_server_config(rotating.clone(), verifier(network())).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // An echo server: every accepted connection answers each 4 bytes with the same 4 bytes.
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let server = server.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(server).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream.unwrap());
                let mut buf = [0u8; 4];
                while tls.read_exact(&mut buf).is_ok() {
                    if tls.write_all(&buf).and_then(|_| tls.flush()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let connect = || {
        let client = Arc::new(client_config(&identity(2), verifier(network())).unwrap());
        let conn =
            rustls::ClientConnection::new(client, ServerName::try_from(SERVER_NAME).unwrap())
                .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
        tls.write_all(b"ping").unwrap();
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).unwrap();
        let cert = tls.conn.peer_certificates().unwrap()[0].clone();
        (tls, cert)
    };
    let (mut old, seen_first) = connect();
    assert_eq!(seen_first, first.cert);
    // Re-attested: fresh key, fresh evidence, new certificate.
    let second = identity(1);
    rotating.replace(&second).unwrap();
    let (_new, seen_second) = connect();
    assert_eq!(seen_second, second.cert);
    assert_ne!(seen_first, seen_second);
    // The connection made before the rotation still carries traffic.
    old.write_all(b"more").unwrap();
    let mut echo = [0u8; 4];
    old.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"more");
}

/// The raw value of the evidence extension in a certificate.
fn evidence_extension(cert: &[u8]) -> Vec<u8> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(cert).unwrap();
    cert.tbs_certificate
        .extensions
        .unwrap()
        .into_iter()
        .find(|e| e.extn_id.to_string() == bulwark_net::extension::OID)
        .unwrap()
        .extn_value
        .as_bytes()
        .to_vec()
}

#[test]
fn attack_20_certificate_reissued_with_new_validity_around_its_old_evidence() {
    // A thief with validator 2's TLS key and certificate re-signs the certificate for a fresh
    // window (same key, old extension): the evidence binds the old window.
    let stolen = identity(2);
    let key = rcgen::KeyPair::try_from(&stolen.private_key()).unwrap();
    let extension = evidence_extension(&stolen.cert);
    let now = start();
    let fresh = Window {
        not_before: now - 3600,
        not_after: now + 6 * 24 * 3600,
    };
    refused(
        certificate_in(&key, Some(extension.clone()), fresh),
        "report_data",
    );
    // The control: the same re-issue with the window the evidence was made for is the
    // genuine certificate again, and passes.
    let own = certificate_in(&key, Some(extension), stolen.window);
    let outcome = run(
        validator_server(network()),
        client_presenting(&own, network()),
    );
    outcome.server.unwrap();
    outcome.client.unwrap();
}

#[test]
fn the_verified_peer_states_when_its_certificate_expires() {
    let me = identity(2);
    let seen = peer_identity(
        &verifier(network()),
        Some(std::slice::from_ref(&me.cert)),
        start(),
    )
    .unwrap();
    assert_eq!(
        (seen.not_before, seen.not_after),
        (me.window.not_before, me.window.not_after)
    );
    assert_eq!(
        seen.valid_for(me.window.not_after - 10),
        Duration::from_secs(10)
    );
    assert_eq!(seen.valid_for(me.window.not_after + 1), Duration::ZERO);
}

/// Connects `client` to a fresh connection of `server` over loopback and returns how each
/// side says the handshake went.
fn handshake_kinds(
    server: &Arc<rustls::ServerConfig>,
    client: &Arc<rustls::ClientConfig>,
) -> (rustls::HandshakeKind, rustls::HandshakeKind) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server.clone();
    let serving = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut tls =
            rustls::StreamOwned::new(rustls::ServerConnection::new(server).unwrap(), stream);
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).unwrap();
        tls.write_all(b"pong").unwrap();
        tls.flush().unwrap();
        // Let the client read the tickets a resuming server would send after the handshake.
        let mut rest = Vec::new();
        let _ = tls.read_to_end(&mut rest);
        tls.conn.handshake_kind().unwrap()
    });
    let conn =
        rustls::ClientConnection::new(client.clone(), ServerName::try_from(SERVER_NAME).unwrap())
            .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    tls.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    tls.read_exact(&mut pong).unwrap();
    let client_kind = tls.conn.handshake_kind().unwrap();
    tls.conn.send_close_notify();
    let _ = tls.flush();
    drop(tls);
    (serving.join().unwrap(), client_kind)
}

#[test]
fn a_reconnect_is_a_full_handshake_verified_again() {
    use rustls::HandshakeKind::Full;
    let server = Arc::new(validator_server(network()));
    let client = Arc::new(client_config(&identity(2), verifier(network())).unwrap());
    assert_eq!(handshake_kinds(&server, &client), (Full, Full));
    // The same client config again: nothing was stored, nothing is resumed.
    assert_eq!(handshake_kinds(&server, &client), (Full, Full));
}

#[test]
fn the_reconnect_test_sees_resumption_when_it_is_left_on() {
    // The control for the test above: rustls's defaults do resume, and the test notices.
    let mut server = validator_server(network());
    server.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
    server.send_tls13_tickets = 2;
    let server = Arc::new(server);
    let mut client = client_config(&identity(2), verifier(network())).unwrap();
    client.resumption = rustls::client::Resumption::default();
    let client = Arc::new(client);
    handshake_kinds(&server, &client);
    assert_eq!(
        handshake_kinds(&server, &client),
        (
            rustls::HandshakeKind::Resumed,
            rustls::HandshakeKind::Resumed
        )
    );
}

/// The server's verifier (kept, to count its work) refuses a client presenting `parts` over a
/// real loopback handshake, with `check`.
fn refused_counting(server: &Arc<AttestedVerifier>, parts: &LocalParts, check: &str) {
    let config = server_config(&identity(1), server.clone()).unwrap();
    let outcome = run(config, client_presenting(parts, network()));
    let err = outcome
        .server
        .expect_err("the server accepted the connection");
    let reason = rejection(&err).expect("refused by the attested verifier");
    assert_eq!(reason.check(), check, "{reason}");
}

/// Evidence whose REPORT_DATA binds what `consensus` would need, with the report signature
/// bent (what an attacker holding only the public VCEK can make).
fn bad_signature_extension(spki: &[u8], consensus: [u8; 32]) -> Vec<u8> {
    let mut evidence = psp(2)
        .evidence(report_data(spki, window(HOUR), &consensus, CHAIN, &GENESIS))
        .unwrap();
    evidence.report[0x2A1] ^= 0x5a;
    CertEvidence {
        consensus_key: consensus,
        report: evidence.report,
        endorsement: evidence.endorsement_cert,
    }
    .encode()
    .unwrap()
}

#[test]
fn a_stranger_a_wrong_binding_or_measurement_costs_no_public_key_operation() {
    let server = verifier(network());
    // A genuine-looking certificate (the simulated chip's real VCEK) with a random consensus key.
    let key = fresh_key();
    let ext = bad_signature_extension(&key.public_key_der(), [0xee; 32]);
    refused_counting(&server, &forged(&key, Some(ext), HOUR), "not_a_validator");
    // A member's key, but REPORT_DATA binding another TLS key.
    let (key, other) = (fresh_key(), fresh_key());
    let ext = bad_signature_extension(&other.public_key_der(), consensus_key(2));
    refused_counting(&server, &forged(&key, Some(ext), HOUR), "report_data");
    // A member's key and the right binding, from a launch genesis does not allow.
    let key = fresh_key();
    let mut foreign = SimulatedPsp::new([2; 32], [0x11; 48]);
    let ext = extension_for(&mut foreign, &key.public_key_der(), consensus_key(2), CHAIN);
    refused_counting(&server, &forged(&key, Some(ext), HOUR), "measurement");
    assert_eq!(server.public_key_operations(), 0);
}

#[test]
fn a_refused_certificate_is_refused_again_without_public_key_operations() {
    let server = verifier(network());
    let key = fresh_key();
    let parts = forged(
        &key,
        Some(bad_signature_extension(
            &key.public_key_der(),
            consensus_key(2),
        )),
        HOUR,
    );
    refused_counting(&server, &parts, "report_signature");
    let first = server.public_key_operations();
    assert!(first >= 1, "the forged signature was never checked");
    for _ in 0..3 {
        refused_counting(&server, &parts, "report_signature");
    }
    assert_eq!(server.public_key_operations(), first);
    // Another forged signature is a new certificate: it is checked (the chain is cached).
    let key = fresh_key();
    let other = forged(
        &key,
        Some(bad_signature_extension(
            &key.public_key_der(),
            consensus_key(2),
        )),
        HOUR,
    );
    refused_counting(&server, &other, "report_signature");
    assert_eq!(server.public_key_operations(), first + 1);
    // A genuine validator still gets in through the same verifier.
    let outcome = run(
        server_config(&identity(1), server.clone()).unwrap(),
        client_presenting(&LocalParts::from(&identity(3)), network()),
    );
    outcome.server.unwrap();
    outcome.client.unwrap();
}
