//! TLS 1.3 mutual-authentication handshake cost, attested vs plain, in one run: client and
//! server connections in memory (no sockets), so only the handshake's own work is measured.
//! Plain: rustls with WebPKI verifiers on both sides and P-256 certificates under a CA.
//! Attested: the same, with Bulwark's certificates and verifiers (simulated evidence; the
//! verifier's chain and report-signature cache warm after the first handshake, as for a peer
//! that reconnects). Prints one JSON line; `cargo xtask bench` records it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::simulated::SimulatedPsp;
use bulwark_attest::{HexBytes, Measurements, Policy, Trust};
use bulwark_net::config::{client_config, provider, server_config, SERVER_NAME};
use bulwark_net::{AttestedVerifier, LocalIdentity, NetworkPolicy};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const CHAIN: &str = "bench";
const MEASUREMENT: [u8; 48] = [0x42; 48];

fn transfer(from: &mut rustls::Connection, to: &mut rustls::Connection) {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut slice = buf.as_slice();
    while !slice.is_empty() {
        to.read_tls(&mut slice).unwrap();
        to.process_new_packets().unwrap();
    }
}

fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> Duration {
    let started = Instant::now();
    let mut c = rustls::Connection::Client(
        ClientConnection::new(client.clone(), ServerName::try_from(SERVER_NAME).unwrap()).unwrap(),
    );
    let mut s = rustls::Connection::Server(ServerConnection::new(server.clone()).unwrap());
    while c.is_handshaking() || s.is_handshaking() {
        transfer(&mut c, &mut s);
        transfer(&mut s, &mut c);
    }
    started.elapsed()
}

fn median_us(mut xs: Vec<Duration>) -> f64 {
    xs.sort();
    xs[xs.len() / 2].as_secs_f64() * 1e6
}

fn attested_pair() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let policy = NetworkPolicy {
        attestation: Policy::strict(
            Trust::Simulated,
            Measurements::OneOf(vec![HexBytes(MEASUREMENT)]),
        ),
        chain_id: CHAIN.into(),
        genesis_sha256: [6; 32],
        validators: [[1; 32], [2; 32]].into_iter().collect(),
        full_nodes: bulwark_net::FullNodes::Refused,
    };
    let identity = |i: u8| {
        LocalIdentity::new(
            &mut SimulatedPsp::new([i; 32], MEASUREMENT),
            [i; 32],
            CHAIN,
            &[6; 32],
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .unwrap()
    };
    let verifier = |p: &NetworkPolicy| Arc::new(AttestedVerifier::new(p.clone(), &provider()));
    (
        Arc::new(client_config(&identity(2), verifier(&policy)).unwrap()),
        Arc::new(server_config(&identity(1), verifier(&policy)).unwrap()),
    )
}

fn plain_pair() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = || {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let roots = Arc::new(roots);
    let (server_cert, server_key) = leaf();
    let (client_cert, client_key) = leaf();
    let client_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .unwrap();
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(vec![server_cert], server_key)
        .unwrap();
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert], client_key)
        .unwrap();
    (Arc::new(client), Arc::new(server))
}

fn main() {
    let runs = 400;
    let (ac, asrv) = attested_pair();
    let (pc, ps) = plain_pair();
    let cold = handshake(&ac, &asrv);
    // Interleaved, so both see the same machine state.
    let mut attested = Vec::with_capacity(runs);
    let mut plain = Vec::with_capacity(runs);
    for _ in 0..runs {
        attested.push(handshake(&ac, &asrv));
        plain.push(handshake(&pc, &ps));
    }
    let (a, p) = (median_us(attested), median_us(plain));
    println!(
        "{{\"bench\":\"tls_handshake\",\"runs\":{runs},\"attested_us_median\":{a:.0},\"plain_us_median\":{p:.0},\"ratio\":{:.2},\"attested_cold_us\":{:.0}}}",
        a / p,
        cold.as_secs_f64() * 1e6
    );
}
