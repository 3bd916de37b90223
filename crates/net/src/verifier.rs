//! Admitting a peer: [`verify_peer_certificate`] is a pure function from a certificate, the
//! network's policy and the time to a [`VerifiedPeer`] or the first check that failed;
//! [`AttestedVerifier`] runs it as both rustls's server and client certificate verifier, so
//! both sides of every connection check each other. Possession of the certified key is then
//! proven by the TLS 1.3 handshake signature, which rustls checks with the same key.

use crate::binding::{report_data, Window};
use crate::extension::{CertEvidence, ExtensionError, OID};
use bulwark_attest::policy::{HexBytes, Measurements, Policy};
use bulwark_attest::{verify_with_cache, Binding, ChainCache, Evidence, RejectReason};
use der::{Decode, Encode};
use lru::LruCache;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::{Mutex, RwLock};
use thiserror::Error;

/// Longest certificate lifetime accepted: evidence is re-made at least this often.
pub const MAX_CERT_LIFETIME_SECS: u64 = 7 * 24 * 3600;

/// What a network admits: its attestation policy from genesis, its chain id, the SHA-256 of its
/// genesis file, the consensus keys of its validators, and whether it admits full nodes.
#[derive(Clone, Debug)]
pub struct NetworkPolicy {
    /// The attestation policy.
    pub attestation: Policy,
    /// The chain id every binding names.
    pub chain_id: String,
    /// SHA-256 of the genesis file's bytes, which every binding names.
    pub genesis_sha256: [u8; 32],
    /// Consensus public keys of the validator set, as the chain changes it.
    pub validators: ValidatorKeys,
    /// Whether peers whose key is not a validator's are admitted (genesis `attest_full_nodes`).
    pub full_nodes: FullNodes,
}

/// Whether a network admits peers that are not its validators (genesis `attest_full_nodes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullNodes {
    /// Only the validator set's keys connect (a genesis without `attest_full_nodes`).
    Refused,
    /// Any key whose evidence passes the same policy connects as a full node: it runs the
    /// published image on genuine hardware, and its key was born inside it, so the chain can
    /// make it a validator later (`attest_full_nodes: true`).
    Attested,
    /// As [`FullNodes::Attested`], and a peer whose certificate carries no evidence at all
    /// connects too, as an unattested full node (`attest_full_nodes: false`): it can never
    /// count as a validator. A certificate that carries evidence is checked in full: evidence
    /// that fails is refused, never taken as no evidence.
    Unattested,
}

/// The key an unattested peer is known by (it has no consensus key the hardware vouches
/// for): SHA-256 over a label and its certificate's public key, which is no validator's.
pub fn unattested_key(spki: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"bulwark unattested peer\0");
    h.update(spki);
    h.finalize().into()
}

/// The consensus keys of the validator set a node admits, shared between the verifier (new
/// handshakes) and the node's driver, which replaces them as the chain's set changes.
#[derive(Clone, Debug, Default)]
pub struct ValidatorKeys(Arc<RwLock<Arc<BTreeSet<[u8; 32]>>>>);

impl ValidatorKeys {
    /// Whether `key` is a validator's now.
    pub fn contains(&self, key: &[u8; 32]) -> bool {
        self.current().contains(key)
    }

    /// The keys now.
    pub fn current(&self) -> Arc<BTreeSet<[u8; 32]>> {
        match self.0.read() {
            Ok(keys) => keys.clone(),
            // A writer never panics while holding the lock (it only swaps an Arc).
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the keys; whether they changed.
    pub fn replace(&self, keys: BTreeSet<[u8; 32]>) -> bool {
        let mut current = match self.0.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if **current == keys {
            return false;
        }
        *current = Arc::new(keys);
        true
    }
}

impl FromIterator<[u8; 32]> for ValidatorKeys {
    fn from_iter<I: IntoIterator<Item = [u8; 32]>>(keys: I) -> Self {
        ValidatorKeys(Arc::new(RwLock::new(Arc::new(keys.into_iter().collect()))))
    }
}

/// Why a peer's certificate was refused: one variant per check.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PeerRejected {
    /// `certificate`: not an X.509 certificate.
    #[error("certificate: not a valid X.509 certificate: {0}")]
    Certificate(String),
    /// `validity`: outside its validity period, or valid for too long.
    #[error("validity: {0}")]
    Validity(String),
    /// `evidence_missing`: no evidence extension.
    #[error("evidence_missing: the certificate carries no attestation evidence ({OID})")]
    NoEvidence,
    /// `evidence_malformed`: the extension does not decode.
    #[error("evidence_malformed: {0}")]
    MalformedEvidence(ExtensionError),
    /// `attestation`: the attestation verifier refused the evidence (its check is named).
    #[error("attestation: {0}")]
    Attestation(RejectReason),
    /// `not_a_validator`: its consensus key is not in the set, and the network admits no full
    /// nodes.
    #[error("not_a_validator: consensus key {0} is not in the validator set, and this network admits no full nodes")]
    NotAValidator(String),
}

impl PeerRejected {
    /// The short name of the check that failed (for logs and tests).
    pub fn check(&self) -> &'static str {
        match self {
            PeerRejected::Certificate(_) => "certificate",
            PeerRejected::Validity(_) => "validity",
            PeerRejected::NoEvidence => "evidence_missing",
            PeerRejected::MalformedEvidence(_) => "evidence_malformed",
            PeerRejected::Attestation(r) => r.check(),
            PeerRejected::NotAValidator(_) => "not_a_validator",
        }
    }
}

/// A peer that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// When its certificate (and with it the evidence, which binds the window) became valid,
    /// Unix seconds.
    pub not_before: u64,
    /// When its certificate expires, Unix seconds: a connection must not outlive it.
    pub not_after: u64,
    /// Its consensus public key (a member of the validator set, unless the network admits
    /// full nodes); for an unattested peer, [`unattested_key`].
    pub consensus_key: [u8; 32],
    /// Whether its certificate carried evidence that passed (false only for an unattested
    /// full node: then the fields below are zero).
    pub attested: bool,
    /// Its launch measurement.
    pub measurement: [u8; 48],
    /// Its chip id.
    pub chip_id: [u8; 64],
    /// Its reported TCB.
    pub reported_tcb: bulwark_attest::report::Tcb,
}

impl VerifiedPeer {
    /// How long from `now_unix` until the peer's certificate expires (zero once it has): a
    /// driver closes or re-verifies the connection then.
    pub fn valid_for(&self, now_unix: u64) -> std::time::Duration {
        std::time::Duration::from_secs(self.not_after.saturating_sub(now_unix))
    }
}

/// Checks a peer's certificate at `now_unix` (seconds).
pub fn verify_peer_certificate(
    cert_der: &[u8],
    policy: &NetworkPolicy,
    cache: &ChainCache,
    now_unix: u64,
) -> Result<VerifiedPeer, PeerRejected> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| PeerRejected::Certificate(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    let not_before = tbs.validity.not_before.to_unix_duration().as_secs();
    let not_after = tbs.validity.not_after.to_unix_duration().as_secs();
    if now_unix < not_before {
        return Err(PeerRejected::Validity(format!(
            "not valid before {not_before}, now {now_unix}"
        )));
    }
    if now_unix > not_after {
        return Err(PeerRejected::Validity(format!(
            "expired at {not_after}, now {now_unix}"
        )));
    }
    if not_after.saturating_sub(not_before) > MAX_CERT_LIFETIME_SECS {
        return Err(PeerRejected::Validity(format!(
            "valid for {} s, longer than {MAX_CERT_LIFETIME_SECS} s",
            not_after.saturating_sub(not_before)
        )));
    }
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| PeerRejected::Certificate(e.to_string()))?;
    let extension = tbs
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id.to_string() == OID);
    let Some(extension) = extension else {
        if policy.full_nodes != FullNodes::Unattested {
            return Err(PeerRejected::NoEvidence);
        }
        return Ok(VerifiedPeer {
            not_before,
            not_after,
            consensus_key: unattested_key(&spki),
            attested: false,
            measurement: [0; 48],
            chip_id: [0; 64],
            reported_tcb: Default::default(),
        });
    };
    let evidence = CertEvidence::decode(extension.extn_value.as_bytes())
        .map_err(PeerRejected::MalformedEvidence)?;
    let window = Window {
        not_before,
        not_after,
    };
    // The cheap checks first, on the unauthenticated bytes: a forged certificate that names a
    // stranger's key (where full nodes are refused), binds another TLS key or claims a
    // measurement genesis does not allow costs no public-key operation (H-2). The full
    // verifier repeats them after the crypto.
    if policy.full_nodes == FullNodes::Refused
        && !policy.validators.contains(&evidence.consensus_key)
    {
        return Err(PeerRejected::NotAValidator(hex(&evidence.consensus_key)));
    }
    let binding = report_data(
        &spki,
        window,
        &evidence.consensus_key,
        &policy.chain_id,
        &policy.genesis_sha256,
    );
    precheck(&evidence.report, &policy.attestation, &binding).map_err(PeerRejected::Attestation)?;
    let verified = verify_with_cache(
        &Evidence {
            report: evidence.report,
            endorsement_cert: evidence.endorsement,
        },
        &policy.attestation,
        &Binding::ReportData(binding),
        now_unix,
        cache,
    )
    .map_err(PeerRejected::Attestation)?;
    Ok(VerifiedPeer {
        not_before,
        not_after,
        consensus_key: evidence.consensus_key,
        attested: true,
        measurement: verified.measurement.0,
        chip_id: verified.chip_id.0,
        reported_tcb: verified.reported_tcb,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the report claims, checked before anything is verified: its size, REPORT_DATA against
/// the binding and MEASUREMENT against the allowlist (the same reasons the full verifier
/// gives).
fn precheck(report: &[u8], policy: &Policy, binding: &[u8; 64]) -> Result<(), RejectReason> {
    let report = bulwark_attest::AttestationReport::from_bytes(report)
        .map_err(|_| RejectReason::ReportSize(report.len()))?;
    if report.report_data() != *binding {
        return Err(RejectReason::ReportData {
            expected: hex(binding),
            reported: hex(&report.report_data()),
        });
    }
    if let Measurements::OneOf(allowed) = &policy.measurements {
        let measurement = HexBytes(report.measurement());
        if !allowed.contains(&measurement) {
            return Err(RejectReason::Measurement(measurement.to_string()));
        }
    }
    Ok(())
}

/// Most refused certificates an [`AttestedVerifier`] remembers.
pub const NEGATIVE_CACHE_CAPACITY: usize = 1024;

/// Whether a refusal holds whatever the time: only those are remembered (a certificate that is
/// not valid yet, or a CRL that went stale, may pass later, and a key the chain makes a
/// validator later is admitted then).
fn timeless(reason: &PeerRejected) -> bool {
    !matches!(
        reason,
        PeerRejected::Validity(_)
            | PeerRejected::NotAValidator(_)
            | PeerRejected::Attestation(
                RejectReason::CertificateValidity { .. } | RejectReason::CrlStale { .. }
            )
    )
}

/// rustls's view of a rejection: the named reason travels inside the error.
fn tls_error(reason: PeerRejected) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(reason),
    )))
}

/// The attested verifier, for both ends of a connection.
///
/// It remembers the SHA-256 of the last [`NEGATIVE_CACHE_CAPACITY`] certificates it refused
/// for a reason that does not depend on the time, and refuses them again without any work.
#[derive(Debug)]
pub struct AttestedVerifier {
    policy: NetworkPolicy,
    cache: ChainCache,
    refused: Mutex<LruCache<[u8; 32], PeerRejected>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl AttestedVerifier {
    /// A verifier for `policy`, checking handshake signatures with `provider`'s algorithms.
    pub fn new(policy: NetworkPolicy, provider: &rustls::crypto::CryptoProvider) -> Self {
        let capacity = NonZeroUsize::new(NEGATIVE_CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        AttestedVerifier {
            policy,
            cache: ChainCache::default(),
            refused: Mutex::new(LruCache::new(capacity)),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// Public-key operations its checks ran so far (chain and report signatures; the TLS
    /// handshake signature is rustls's and not counted).
    pub fn public_key_operations(&self) -> u64 {
        self.cache.public_key_operations()
    }

    /// The policy it enforces.
    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        now: UnixTime,
    ) -> Result<VerifiedPeer, rustls::Error> {
        let key: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if let Some(reason) = self
            .refused
            .lock()
            .ok()
            .and_then(|mut r| r.get(&key).cloned())
        {
            return Err(tls_error(reason));
        }
        verify_peer_certificate(end_entity, &self.policy, &self.cache, now.as_secs()).map_err(
            |reason| {
                if timeless(&reason) {
                    if let Ok(mut refused) = self.refused.lock() {
                        refused.put(key, reason.clone());
                    }
                }
                tls_error(reason)
            },
        )
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

impl ServerCertVerifier for AttestedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The server name is not an identity here: the evidence is.
        self.check(end_entity, now)
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is never offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AttestedVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, now)
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is never offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The verified identity of the peer of an established connection (its certificate is
/// checked again: cheap with the chain cache warm, and no state is kept between the two).
pub fn peer_identity(
    verifier: &AttestedVerifier,
    peer_certificates: Option<&[CertificateDer<'_>]>,
    now_unix: u64,
) -> Result<VerifiedPeer, PeerRejected> {
    let cert = peer_certificates
        .and_then(|c| c.first())
        .ok_or(PeerRejected::NoEvidence)?;
    verify_peer_certificate(cert, &verifier.policy, &verifier.cache, now_unix)
}

/// The named check behind a failed TLS handshake, if the attested verifier refused the peer.
pub fn rejection_of(error: &std::io::Error) -> Option<PeerRejected> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = tls else {
        return None;
    };
    other.0.downcast_ref::<PeerRejected>().cloned()
}
