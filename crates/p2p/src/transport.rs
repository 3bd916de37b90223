//! Every validator connection is mutually attested TLS 1.3 (`bulwark-net`). This node's
//! certificate carries fresh evidence from the evidence source the node chose by its network's
//! trust (the SEV-SNP guest device under `amd`, the simulated PSP under `simulated`) and is
//! re-made at half its lifetime; peers are admitted only by the network's policy.

use crate::stats::{self, Direction, HandshakeStats};
use bulwark_attest::EvidenceSource;
use bulwark_net::config::{rotating_client_config, rotating_server_config, SERVER_NAME};
use bulwark_net::verifier::{peer_identity, rejection_of};
use bulwark_net::{AttestedVerifier, LocalIdentity, NetworkPolicy, RotatingIdentity, VerifiedPeer};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

/// How long this node's certificates are valid.
pub const CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A handshake that takes longer is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why this node's own certificate or TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The certificate with fresh evidence.
    #[error("this node's attested certificate: {0}")]
    Identity(#[from] bulwark_net::identity::IdentityError),
    /// The rustls configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Attested TLS for one node.
pub struct Transport {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    verifier: Arc<AttestedVerifier>,
    identity: Arc<RotatingIdentity>,
    /// Where fresh evidence comes from; `None` for an unattested full node.
    source: Option<Box<dyn EvidenceSource>>,
    consensus_key: [u8; 32],
    chain_id: String,
    genesis_sha256: [u8; 32],
    stats: Arc<HandshakeStats>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("chain_id", &self.chain_id)
            .finish_non_exhaustive()
    }
}

/// A certificate valid from now for [`CERT_LIFETIME`]: with fresh evidence from `source`, or
/// none (an unattested full node).
fn fresh_identity(
    source: Option<&mut (dyn EvidenceSource + 'static)>,
    consensus_key: [u8; 32],
    chain_id: &str,
    genesis_sha256: &[u8; 32],
) -> Result<LocalIdentity, TransportError> {
    let now = SystemTime::now();
    Ok(match source {
        Some(source) => LocalIdentity::new(
            source,
            consensus_key,
            chain_id,
            genesis_sha256,
            now,
            CERT_LIFETIME,
        )?,
        None => LocalIdentity::unattested(consensus_key, now, CERT_LIFETIME)?,
    })
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Transport {
    /// Makes this node's first certificate with evidence from `source`, binding
    /// `consensus_key` and the policy's chain id, and the TLS configurations that admit peers
    /// only by `policy`.
    pub fn new(
        source: Box<dyn EvidenceSource>,
        consensus_key: [u8; 32],
        policy: NetworkPolicy,
    ) -> Result<Self, TransportError> {
        Self::with_source(Some(source), consensus_key, policy)
    }

    /// An unattested full node's transport: its certificates carry no evidence (only a
    /// network whose genesis says `attest_full_nodes: false` admits it); it checks its peers
    /// by `policy` as any node does.
    pub fn unattested(
        consensus_key: [u8; 32],
        policy: NetworkPolicy,
    ) -> Result<Self, TransportError> {
        Self::with_source(None, consensus_key, policy)
    }

    fn with_source(
        mut source: Option<Box<dyn EvidenceSource>>,
        consensus_key: [u8; 32],
        policy: NetworkPolicy,
    ) -> Result<Self, TransportError> {
        let chain_id = policy.chain_id.clone();
        let genesis_sha256 = policy.genesis_sha256;
        let verifier = Arc::new(AttestedVerifier::new(
            policy,
            &bulwark_net::config::provider(),
        ));
        let identity = fresh_identity(
            source.as_deref_mut(),
            consensus_key,
            &chain_id,
            &genesis_sha256,
        )?;
        let identity = Arc::new(RotatingIdentity::new(&identity)?);
        let server = rotating_server_config(identity.clone(), verifier.clone())?;
        let client = rotating_client_config(identity.clone(), verifier.clone())?;
        Ok(Transport {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            verifier,
            identity,
            source,
            consensus_key,
            chain_id,
            genesis_sha256,
            stats: Arc::default(),
        })
    }

    /// Re-makes this node's certificate with fresh evidence; new connections present it.
    pub fn refresh(&mut self) -> Result<(), TransportError> {
        let identity = fresh_identity(
            self.source.as_deref_mut(),
            self.consensus_key,
            &self.chain_id,
            &self.genesis_sha256,
        )?;
        self.identity.replace(&identity)?;
        Ok(())
    }

    /// A handle for accepting and dialling from other tasks.
    pub fn handle(&self) -> TransportHandle {
        TransportHandle {
            acceptor: self.acceptor.clone(),
            connector: self.connector.clone(),
            verifier: self.verifier.clone(),
            stats: self.stats.clone(),
        }
    }

    /// What its handshakes counted (refusals by check, times of the admitted ones).
    pub fn stats(&self) -> Arc<HandshakeStats> {
        self.stats.clone()
    }
}

/// What connection tasks need of the transport.
#[derive(Clone)]
pub struct TransportHandle {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    verifier: Arc<AttestedVerifier>,
    stats: Arc<HandshakeStats>,
}

/// An established, attested connection.
pub type Attested = (TlsStream<TcpStream>, VerifiedPeer);

/// Why a handshake failed: the check's name (for metrics) and the whole reason.
type Refusal = (&'static str, String);

fn refused(e: std::io::Error) -> Refusal {
    match rejection_of(&e) {
        Some(reason) => (reason.check(), format!("check={} {reason}", reason.check())),
        None => (stats::TLS, e.to_string()),
    }
}

fn timed_out<T>(_: T) -> Refusal {
    (stats::TIMED_OUT, "handshake timed out".to_string())
}

impl TransportHandle {
    fn identify(
        &self,
        certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    ) -> Result<VerifiedPeer, Refusal> {
        peer_identity(&self.verifier, certs, now_unix())
            .map_err(|r| (r.check(), format!("check={} {r}", r.check())))
    }

    /// Counts the `direction` handshake begun at `started`; the error names why the peer was
    /// refused.
    fn settle(
        &self,
        direction: Direction,
        started: Instant,
        result: Result<Attested, Refusal>,
    ) -> Result<Attested, String> {
        match result {
            Ok(attested) => {
                self.stats.admitted(started.elapsed());
                Ok(attested)
            }
            Err((check, why)) => {
                self.stats.refused(direction, check);
                Err(why)
            }
        }
    }

    /// Accepts an inbound connection; the error names why the peer was refused.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Attested, String> {
        let started = Instant::now();
        let result = async {
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp))
                .await
                .map_err(timed_out)?
                .map_err(refused)?;
            let peer = self.identify(tls.get_ref().1.peer_certificates())?;
            Ok((TlsStream::Server(tls), peer))
        }
        .await;
        self.settle(Direction::Inbound, started, result)
    }

    /// Dials a peer; the error names why it was refused.
    pub async fn dial(&self, tcp: TcpStream) -> Result<Attested, String> {
        let started = Instant::now();
        let result = async {
            let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
                .map_err(|e| (stats::TLS, e.to_string()))?;
            let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.connector.connect(name, tcp))
                .await
                .map_err(timed_out)?
                .map_err(refused)?;
            let peer = self.identify(tls.get_ref().1.peer_certificates())?;
            Ok((TlsStream::Client(tls), peer))
        }
        .await;
        self.settle(Direction::Outbound, started, result)
    }
}
