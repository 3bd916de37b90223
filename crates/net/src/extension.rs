//! The certificate extension that carries a validator's evidence.
//!
//! OID `2.25.16715802`, whose value is the DER of the structure below. It is not marked
//! critical, so generic X.509 code (webpki checks the handshake signature) can parse the
//! certificate; Bulwark's verifier refuses any certificate without it.
//!
//! ```text
//! BulwarkEvidence ::= SEQUENCE {
//!     version       INTEGER (1),
//!     consensusKey  OCTET STRING (SIZE (32)),   -- the validator's ed25519 public key
//!     report        OCTET STRING,               -- the 1184-byte SEV-SNP attestation report
//!     endorsement   OCTET STRING                -- the VCEK or VLEK certificate (DER)
//! }
//! ```
//!
//! The OID sits in the UUID arc 2.25 (its number is the first three bytes of
//! SHA-256("bulwark/attested-tls/evidence")); it is not an IANA registration.

use der::asn1::OctetString;
use der::{Decode, Encode};
use thiserror::Error;

/// The extension's OID, as arcs.
pub const OID_ARCS: [u64; 3] = [2, 25, 16_715_802];
/// The extension's OID, dotted.
pub const OID: &str = "2.25.16715802";
/// The only version this code writes and reads.
pub const VERSION: u8 = 1;
/// Largest evidence accepted (report + endorsement certificate are a few KiB).
pub const MAX_EVIDENCE_BYTES: usize = 16 * 1024;

/// Why an extension's bytes were refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ExtensionError {
    /// Not the DER of `BulwarkEvidence`.
    #[error("evidence extension is not valid DER: {0}")]
    Der(String),
    /// A version this code does not know.
    #[error("evidence extension version {0} (this node reads version {VERSION})")]
    Version(u8),
    /// The consensus key is not 32 bytes.
    #[error("consensus key of {0} bytes (ed25519 keys are 32)")]
    KeyLength(usize),
    /// Larger than [`MAX_EVIDENCE_BYTES`].
    #[error("evidence extension of {0} bytes exceeds the limit of {MAX_EVIDENCE_BYTES}")]
    TooLarge(usize),
}

#[derive(der::Sequence)]
struct Raw {
    version: u8,
    consensus_key: OctetString,
    report: OctetString,
    endorsement: OctetString,
}

/// What the extension says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertEvidence {
    /// The validator's consensus (ed25519) public key.
    pub consensus_key: [u8; 32],
    /// The attestation report.
    pub report: Vec<u8>,
    /// The VCEK or VLEK certificate.
    pub endorsement: Vec<u8>,
}

impl CertEvidence {
    /// The extension value's DER.
    pub fn encode(&self) -> Result<Vec<u8>, ExtensionError> {
        let der = |e: der::Error| ExtensionError::Der(e.to_string());
        Raw {
            version: VERSION,
            consensus_key: OctetString::new(self.consensus_key.to_vec()).map_err(der)?,
            report: OctetString::new(self.report.clone()).map_err(der)?,
            endorsement: OctetString::new(self.endorsement.clone()).map_err(der)?,
        }
        .to_der()
        .map_err(der)
    }

    /// Reads an extension value (untrusted bytes from a peer).
    pub fn decode(bytes: &[u8]) -> Result<Self, ExtensionError> {
        if bytes.len() > MAX_EVIDENCE_BYTES {
            return Err(ExtensionError::TooLarge(bytes.len()));
        }
        let raw = Raw::from_der(bytes).map_err(|e| ExtensionError::Der(e.to_string()))?;
        if raw.version != VERSION {
            return Err(ExtensionError::Version(raw.version));
        }
        let key = raw.consensus_key.as_bytes();
        let consensus_key: [u8; 32] = key
            .try_into()
            .map_err(|_| ExtensionError::KeyLength(key.len()))?;
        Ok(CertEvidence {
            consensus_key,
            report: raw.report.as_bytes().to_vec(),
            endorsement: raw.endorsement.as_bytes().to_vec(),
        })
    }
}
