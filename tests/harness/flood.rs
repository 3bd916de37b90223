//! Forged-handshake floods against one validator's p2p port, and what the validator does
//! meanwhile (its commit rate and its RPC `health` latency), for the H-2 test and
//! `cargo xtask bench --only edge`.
//!
//! A forged handshake is what an attacker holding no key can make: a self-signed certificate
//! whose evidence extension carries a genuine (simulated chip's) VCEK and a report that claims
//! the network's measurement, with REPORT_DATA bound to the certificate and a random report
//! signature; the consensus key is random, or (a share of them) a real validator's public key,
//! which passes every check that needs no public-key operation. Each connection comes from a
//! loopback address of its own (`127.1.x.y`), as many attackers' addresses would.

use anyhow::{Context, Result};
use bulwark_attest::simulated::SimulatedPsp;
use bulwark_net::binding::{report_data, Window};
use bulwark_net::config::{provider, SERVER_NAME};
use bulwark_net::extension::{CertEvidence, OID_ARCS};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::Digest;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What the forged certificates claim.
#[derive(Clone, Debug)]
pub struct Forgery {
    /// The network's chain id.
    pub chain_id: String,
    /// SHA-256 of the network's genesis file.
    pub genesis_sha256: [u8; 32],
    /// The measurement genesis allows.
    pub measurement: [u8; 48],
    /// Real validators' consensus keys (public).
    pub validators: Vec<[u8; 32]>,
    /// Share of handshakes that name a real validator's key (the rest are random keys).
    pub member_share: f64,
}

/// How hard to flood.
#[derive(Clone, Debug)]
pub struct FloodConfig {
    /// The validator's p2p address.
    pub target: SocketAddr,
    /// Handshakes started per second (at most).
    pub rate: u32,
    /// For how long.
    pub duration: Duration,
    /// Connections in flight at once.
    pub threads: usize,
}

/// What the flood did.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    /// Connections attempted.
    pub attempted: u64,
    /// TCP connects that failed.
    pub connect_failed: u64,
    /// Closed by the node before its TLS answer (refused by its edge limits).
    pub closed_before_tls: u64,
    /// Refused during the handshake (the certificate was checked).
    pub refused_in_tls: u64,
    /// Let in (never expected).
    pub admitted: u64,
    /// Seconds it ran.
    pub seconds: f64,
}

impl FloodReport {
    /// Adds another window's counts to these.
    fn absorb(&mut self, other: &FloodReport) {
        self.attempted += other.attempted;
        self.connect_failed += other.connect_failed;
        self.closed_before_tls += other.closed_before_tls;
        self.refused_in_tls += other.refused_in_tls;
        self.admitted += other.admitted;
        self.seconds += other.seconds;
    }

    /// Handshakes attempted per second.
    pub fn rate(&self) -> f64 {
        self.attempted as f64 / self.seconds.max(1e-9)
    }
}

/// Makes forged certificates.
struct Forger {
    forgery: Forgery,
    key: rcgen::KeyPair,
    key_der: Vec<u8>,
    window: Window,
    template: Vec<u8>,
    vcek: Vec<u8>,
}

/// A small xorshift generator (no dependency; forged bytes need no quality).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

impl Forger {
    fn new(forgery: Forgery) -> Result<Self> {
        let psp = SimulatedPsp::new([0xf1; 32], forgery.measurement);
        let evidence = psp
            .evidence([0; 64])
            .map_err(|e| anyhow::anyhow!("simulated evidence: {e}"))?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs();
        Ok(Forger {
            key_der: key.serialize_der(),
            key,
            window: Window {
                not_before: now - 60,
                not_after: now + 3600,
            },
            template: evidence.report,
            vcek: evidence.endorsement_cert,
            forgery,
        })
    }

    fn certificate(&self, random: &mut u64) -> Result<CertificateDer<'static>> {
        let roll = (next_random(random) % 10_000) as f64 / 10_000.0;
        let consensus_key = match self.forgery.validators.len() {
            n if n > 0 && roll < self.forgery.member_share => {
                self.forgery.validators[(next_random(random) as usize) % n]
            }
            _ => {
                let mut k = [0u8; 32];
                for chunk in k.chunks_mut(8) {
                    chunk.copy_from_slice(&next_random(random).to_le_bytes());
                }
                k
            }
        };
        let mut report = self.template.clone();
        let binding = report_data(
            &self.key.public_key_der(),
            self.window,
            &consensus_key,
            &self.forgery.chain_id,
            &self.forgery.genesis_sha256,
        );
        report[0x50..0x90].copy_from_slice(&binding);
        // Random R and S (the low 48 bytes of each 72-byte field; the rest stays zero).
        for field in [0x2A0, 0x2A0 + 72] {
            for chunk in report[field..field + 48].chunks_mut(8) {
                chunk.copy_from_slice(&next_random(random).to_le_bytes());
            }
        }
        let extension = CertEvidence {
            consensus_key,
            report,
            endorsement: self.vcek.clone(),
        }
        .encode()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        let at = |secs: u64| time::OffsetDateTime::from_unix_timestamp(secs as i64);
        params.not_before = at(self.window.not_before)?;
        params.not_after = at(self.window.not_after)?;
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &OID_ARCS, extension,
            ));
        Ok(params.self_signed(&self.key)?.der().clone())
    }
}

/// Accepts any server certificate: the attacker only wants the node to check its own.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[derive(Clone, Copy)]
enum Outcome {
    ConnectFailed,
    ClosedBeforeTls,
    RefusedInTls,
    Admitted,
}

fn connect_from(n: u64, to: SocketAddr) -> std::io::Result<TcpStream> {
    // 127.1.0.0/16 and up: a source address per connection, cycling.
    let source = std::net::Ipv4Addr::from(0x7f01_0000 | (n as u32 & 0x00fe_ffff));
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

fn one_handshake(forger: &Forger, n: u64, random: &mut u64, to: SocketAddr) -> Outcome {
    let Ok(cert) = forger.certificate(random) else {
        return Outcome::ConnectFailed;
    };
    let Ok(stream) = connect_from(n, to) else {
        return Outcome::ConnectFailed;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = stream.set_nodelay(true);
    let Ok(key) = provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            forger.key_der.clone(),
        )))
    else {
        return Outcome::ConnectFailed;
    };
    let certified = Arc::new(rustls::sign::CertifiedKey::new(vec![cert], key));
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
    else {
        return Outcome::ConnectFailed;
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer))
        .with_client_cert_resolver(Arc::new(Present(certified)));
    let Ok(name) = ServerName::try_from(SERVER_NAME) else {
        return Outcome::ConnectFailed;
    };
    let Ok(conn) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return Outcome::ConnectFailed;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let sent = tls
        .write_all(&[0, 0, 0, 2, 0x2a, 0x00])
        .and_then(|_| tls.flush());
    let mut first = [0u8; 4];
    let answered = sent.and_then(|_| tls.read_exact(&mut first));
    match answered {
        Ok(()) => Outcome::Admitted,
        // Closed before the server's first flight: the edge refused it before TLS.
        Err(_) if tls.conn.is_handshaking() && tls.conn.peer_certificates().is_none() => {
            Outcome::ClosedBeforeTls
        }
        Err(_) => Outcome::RefusedInTls,
    }
}

/// Presents the forged certificate.
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

/// Puts the calling thread at the lowest CPU priority (nice 19). On a machine shared with the
/// validators it floods, the attacker's own CPU then comes from what the validators leave over,
/// as it would if the attacker ran elsewhere; what is measured is the validator's own cost of
/// the flood.
fn lowest_priority() {
    if let Ok(me) = std::fs::read_link("/proc/thread-self") {
        if let Some(tid) = me.file_name().and_then(|t| t.to_str()) {
            let _ = std::process::Command::new("renice")
                .args(["-n", "19", "-p", tid])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Floods `config.target` with forged handshakes as `forgery` describes, open loop at
/// `config.rate` per second (at most) from `config.threads` threads, for `config.duration`.
pub fn flood(config: &FloodConfig, forgery: Forgery) -> Result<FloodReport> {
    let forger = Arc::new(Forger::new(forgery).context("preparing forged certificates")?);
    let report = Arc::new(Mutex::new(FloodReport::default()));
    let started = Instant::now();
    let deadline = started + config.duration;
    let threads = config.threads.max(1);
    let interval = Duration::from_secs_f64(threads as f64 / f64::from(config.rate.max(1)));
    let counter = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (forger, report, counter) = (forger.clone(), report.clone(), counter.clone());
            let target = config.target;
            std::thread::spawn(move || {
                lowest_priority();
                let mut random =
                    0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1).wrapping_mul(0x1234_5677);
                // Spread the threads' starts over one interval.
                let mut next = Instant::now() + interval.mul_f64(t as f64 / threads as f64);
                while Instant::now() < deadline {
                    let now = Instant::now();
                    if now < next {
                        std::thread::sleep(next - now);
                    }
                    // Open loop: a late thread skips the starts it missed.
                    next = (next + interval).max(Instant::now());
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let outcome = one_handshake(&forger, n, &mut random, target);
                    if let Ok(mut r) = report.lock() {
                        r.attempted += 1;
                        match outcome {
                            Outcome::ConnectFailed => r.connect_failed += 1,
                            Outcome::ClosedBeforeTls => r.closed_before_tls += 1,
                            Outcome::RefusedInTls => r.refused_in_tls += 1,
                            Outcome::Admitted => r.admitted += 1,
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut out = report.lock().map(|r| r.clone()).unwrap_or_default();
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// What a validator did during a window: heights committed per second and RPC `health`
/// latencies (ms), probed every `probe` from another thread.
#[derive(Clone, Debug)]
pub struct Vitals {
    /// Heights per second.
    pub commit_rate: f64,
    /// `health` latencies, ms, sorted.
    pub health_ms: Vec<f64>,
    /// Probes that failed.
    pub health_errors: u64,
    /// Seconds watched.
    pub seconds: f64,
}

impl Vitals {
    /// Adds another window to this one (rates weighted by time).
    fn absorb(&mut self, other: Vitals) {
        let seconds = self.seconds + other.seconds;
        self.commit_rate = (self.commit_rate * self.seconds + other.commit_rate * other.seconds)
            / seconds.max(1e-9);
        self.seconds = seconds;
        self.health_ms.extend(other.health_ms);
        self.health_ms.sort_by(|a, b| a.total_cmp(b));
        self.health_errors += other.health_errors;
    }

    /// A percentile (0-100) of the health latencies.
    pub fn health_percentile(&self, p: f64) -> f64 {
        if self.health_ms.is_empty() {
            return f64::INFINITY;
        }
        let i = ((p / 100.0) * (self.health_ms.len() - 1) as f64).round() as usize;
        self.health_ms[i.min(self.health_ms.len() - 1)]
    }
}

/// Watches the validator whose JSON-RPC is at `rpc` while `during` runs (or for `window` if
/// it returns sooner), returning what it measured and what `during` returned.
pub fn watch<T>(
    rpc: &str,
    window: Duration,
    probe: Duration,
    during: impl FnOnce() -> T,
) -> Result<(Vitals, T)> {
    let mut client = crate::rpc::RpcClient::new(rpc);
    let start_height = crate::rpc::height(&mut client).context("no height from the node")?;
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (rpc, stop) = (rpc.to_string(), stop.clone());
        std::thread::spawn(move || {
            let mut client = crate::rpc::RpcClient::new(&rpc);
            let (mut samples, mut errors) = (Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match client.call("health", serde_json::json!({})) {
                    Ok(_) => samples.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(_) => errors += 1,
                }
                std::thread::sleep(probe.saturating_sub(t.elapsed()));
            }
            (samples, errors)
        })
    };
    let value = during();
    let left = window.saturating_sub(started.elapsed());
    std::thread::sleep(left);
    let seconds = started.elapsed().as_secs_f64();
    let end_height = crate::rpc::height(&mut client).context("no height from the node")?;
    stop.store(true, Ordering::Relaxed);
    let (mut health_ms, health_errors) = prober
        .join()
        .map_err(|_| anyhow::anyhow!("the health prober panicked"))?;
    health_ms.sort_by(|a, b| a.total_cmp(b));
    Ok((
        Vitals {
            commit_rate: end_height.saturating_sub(start_height) as f64 / seconds,
            health_ms,
            health_errors,
            seconds,
        },
        value,
    ))
}

/// One node's vitals calm and under a flood, and the flood itself.
#[derive(Clone, Debug)]
pub struct EdgeFigures {
    /// Before the flood.
    pub calm: Vitals,
    /// During it.
    pub loaded: Vitals,
    /// What the flood did.
    pub flood: FloodReport,
    /// The share of forged handshakes naming a real validator's key.
    pub member_share: f64,
}

/// Starts a 4-validator network of `bin` (fast timeouts; `[p2p]` limits as `limits` gives
/// them: `(handshakes_per_second, max_inbound_handshakes)`, else the node's defaults), watches
/// node 0 for `rounds` pairs of windows, each `window` calm then `window` while a flood of
/// forged handshakes at `rate` per second hits its p2p port (`member_share` of them naming a
/// real validator's key), and stops the network. Calm and flooded windows alternate so that
/// whatever else loads the machine for a few seconds falls on both alike.
pub fn edge_figures(
    bin: &std::path::Path,
    (window, rounds): (Duration, u32),
    rate: u32,
    limits: Option<(u32, usize)>,
    member_share: f64,
) -> Result<EdgeFigures> {
    let mut config = crate::process::FAST_TIMEOUTS.to_vec();
    let limit = limits.map(|(rate, cap)| {
        format!("max_frame_bytes = 4194304\nhandshakes_per_second = {rate}\nmax_inbound_handshakes = {cap}")
    });
    if let Some(line) = &limit {
        config.push(("max_frame_bytes = 4194304", line.as_str()));
    }
    let mut net = crate::process::Network::start(bin, 4, "edge", &config)?;
    {
        let mut all: Vec<&mut crate::process::Node> = net.nodes.iter_mut().collect();
        crate::process::wait_for(&mut all, 3, Duration::from_secs(90))?;
    }
    let genesis_bytes = std::fs::read(net.dir.join("node0/config/genesis.json"))?;
    let genesis: serde_json::Value = serde_json::from_slice(&genesis_bytes)?;
    let validators = genesis["validators"]
        .as_array()
        .context("genesis without validators")?
        .iter()
        .filter_map(|v| v["pub_key"]["value"].as_str())
        .filter_map(|b64| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b64).ok()
        })
        .filter_map(|k| <[u8; 32]>::try_from(k).ok())
        .collect();
    let measurement: [u8; 48] = genesis["attestation"]["measurements"]["one_of"][0]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|m| m.try_into().ok())
        .context("genesis allows no single measurement")?;
    let forgery = Forgery {
        chain_id: genesis["chain_id"].as_str().unwrap_or_default().to_string(),
        genesis_sha256: sha2::Sha256::digest(&genesis_bytes).into(),
        measurement,
        validators,
        member_share,
    };
    let rpc = net.rpc_addr(0);
    let probe = Duration::from_millis(50);
    let config = FloodConfig {
        target: format!("127.0.0.1:{}", net.base).parse()?,
        rate,
        duration: window,
        threads: 64,
    };
    let (mut calm, mut loaded, mut report) =
        (None::<Vitals>, None::<Vitals>, FloodReport::default());
    for _ in 0..rounds.max(1) {
        let (quiet, ()) = watch(&rpc, window, probe, || ())?;
        let (busy, done) = watch(&rpc, window, probe, || flood(&config, forgery.clone()))?;
        report.absorb(&done?);
        for (sum, v) in [(&mut calm, quiet), (&mut loaded, busy)] {
            match sum {
                Some(s) => s.absorb(v),
                None => *sum = Some(v),
            }
        }
    }
    let (calm, loaded, flood) = (
        calm.context("no calm window")?,
        loaded.context("no flooded window")?,
        report,
    );
    let alive = net.live();
    net.stop();
    anyhow::ensure!(
        alive == 4,
        "only {alive} of 4 validators survived the flood"
    );
    Ok(EdgeFigures {
        calm,
        loaded,
        flood,
        member_share,
    })
}
