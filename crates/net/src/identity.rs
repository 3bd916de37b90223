//! A validator's own TLS identity: a fresh key pair made in the VM, and a short-lived
//! self-signed certificate whose evidence binds that key, the consensus key and the chain id.
//! The node makes a new one before the current one expires.

use crate::binding::{report_data, Window};
use crate::extension::{CertEvidence, ExtensionError, OID_ARCS};
use bulwark_attest::source::{EvidenceSource, SourceError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Why an identity could not be made.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// Key generation or certificate signing failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The evidence source failed.
    #[error(transparent)]
    Evidence(#[from] SourceError),
    /// The evidence could not be encoded.
    #[error(transparent)]
    Extension(#[from] ExtensionError),
    /// The validity period is not representable.
    #[error("validity period: {0}")]
    Time(String),
}

/// A certificate with its private key.
pub struct LocalIdentity {
    /// The certificate (DER).
    pub cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
    /// When the certificate stops being valid.
    pub not_after: SystemTime,
    /// The validity window the evidence binds (Unix seconds).
    pub window: Window,
    /// The consensus key it binds.
    pub consensus_key: [u8; 32],
}

impl std::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIdentity")
            .field("not_after", &self.not_after)
            .field("consensus_key", &hex_short(&self.consensus_key))
            .finish_non_exhaustive()
    }
}

fn hex_short(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn unix(t: SystemTime) -> Result<u64, IdentityError> {
    Ok(t.duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| IdentityError::Time(e.to_string()))?
        .as_secs())
}

fn offset(secs: u64) -> Result<time::OffsetDateTime, IdentityError> {
    let secs = i64::try_from(secs).map_err(|e| IdentityError::Time(e.to_string()))?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| IdentityError::Time(e.to_string()))
}

impl LocalIdentity {
    /// Makes a fresh TLS key and a certificate valid from `now` (less a minute of clock skew)
    /// for `lifetime`, with evidence from `source`.
    pub fn new(
        source: &mut dyn EvidenceSource,
        consensus_key: [u8; 32],
        chain_id: &str,
        genesis_sha256: &[u8; 32],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Self, IdentityError> {
        let binding = (source, chain_id, genesis_sha256);
        Self::make(Some(binding), consensus_key, now, lifetime)
    }

    /// A certificate without evidence: an unattested full node's, which only a network whose
    /// genesis says `attest_full_nodes: false` admits (and never as a validator).
    pub fn unattested(
        consensus_key: [u8; 32],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Self, IdentityError> {
        Self::make(None, consensus_key, now, lifetime)
    }

    fn make(
        binding: Option<(&mut dyn EvidenceSource, &str, &[u8; 32])>,
        consensus_key: [u8; 32],
        now: SystemTime,
        lifetime: Duration,
    ) -> Result<Self, IdentityError> {
        let cert_err = |e: rcgen::Error| IdentityError::Certificate(e.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let not_before = now
            .checked_sub(Duration::from_secs(60))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let not_after = now
            .checked_add(lifetime)
            .ok_or_else(|| IdentityError::Time("lifetime overflows".into()))?;
        // Whole seconds, exactly as the certificate will state them and the peer will read them.
        let window = Window {
            not_before: unix(not_before)?,
            not_after: unix(not_after)?,
        };
        let mut params = rcgen::CertificateParams::new(vec!["bulwark-validator".to_string()])
            .map_err(cert_err)?;
        params.not_before = offset(window.not_before)?;
        params.not_after = offset(window.not_after)?;
        if let Some((source, chain_id, genesis_sha256)) = binding {
            let evidence = source.evidence(report_data(
                &key.public_key_der(),
                window,
                &consensus_key,
                chain_id,
                genesis_sha256,
            ))?;
            let extension = CertEvidence {
                consensus_key,
                report: evidence.report,
                endorsement: evidence.endorsement_cert,
            }
            .encode()?;
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &OID_ARCS, extension,
                ));
        }
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(LocalIdentity {
            cert: cert.der().clone(),
            key_pkcs8: key.serialize_der(),
            not_after,
            window,
            consensus_key,
        })
    }

    /// The private key, for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

/// The certificate a node presents, replaceable while it runs: new connections use the newest
/// identity, so certificates are re-made before they expire without touching live connections.
#[derive(Debug)]
pub struct RotatingIdentity {
    current: std::sync::RwLock<std::sync::Arc<rustls::sign::CertifiedKey>>,
}

impl RotatingIdentity {
    /// Starts with `identity`.
    pub fn new(identity: &LocalIdentity) -> Result<Self, rustls::Error> {
        Ok(RotatingIdentity {
            current: std::sync::RwLock::new(certified(identity)?),
        })
    }

    /// Presents `identity` from now on.
    pub fn replace(&self, identity: &LocalIdentity) -> Result<(), rustls::Error> {
        let key = certified(identity)?;
        if let Ok(mut current) = self.current.write() {
            *current = key;
        }
        Ok(())
    }

    fn get(&self) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn certified(
    identity: &LocalIdentity,
) -> Result<std::sync::Arc<rustls::sign::CertifiedKey>, rustls::Error> {
    let key = crate::config::provider()
        .key_provider
        .load_private_key(identity.private_key())?;
    Ok(std::sync::Arc::new(rustls::sign::CertifiedKey::new(
        vec![identity.cert.clone()],
        key,
    )))
}

impl rustls::server::ResolvesServerCert for RotatingIdentity {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        self.get()
    }
}

impl rustls::client::ResolvesClientCert for RotatingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<std::sync::Arc<rustls::sign::CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
