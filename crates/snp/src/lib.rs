//! SEV-SNP as AMD defines it, without any policy: the 1184-byte attestation report read from
//! the exact signed bytes ([`report`]), the pinned roots and endorsement-key certificates
//! ([`certs`]; AMD's ARK/ASK/ASVK per product line and, apart from them, the project's
//! simulated root in [`simulated_root`]), and AMD's ARK-signed revocation lists ([`crl`]).
//! `bulwark-attest` builds the network's policy and the verifier on top and re-exports these.

pub mod certs;
pub mod crl;
pub mod report;
pub mod simulated_root;

/// Which roots evidence must chain to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// AMD's pinned roots: real hardware only.
    Amd,
    /// The project's simulated root: development networks only.
    Simulated,
}
