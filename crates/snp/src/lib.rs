//! SEV-SNP as AMD defines it, without any policy: the 1184-byte attestation report read from
//! the exact signed bytes ([`report`]), the pinned roots and endorsement-key certificates
//! ([`certs`]; AMD's ARK/ASK/ASVK per product line and, apart from them, the project's
//! simulated root in `simulated_root`, compiled only with the `simulated` feature), and AMD's
//! ARK-signed revocation lists ([`crl`]).
//! `bulwark-attest` builds the network's policy and the verifier on top and re-exports these.

pub mod certs;
pub mod crl;
pub mod report;
#[cfg(feature = "simulated")]
pub mod simulated_root;

/// Whether this build has the simulated root (the `simulated` feature). A production build
/// does not: a `trust: simulated` policy then admits nothing.
pub const SIMULATED_ROOT_BUILT_IN: bool = cfg!(feature = "simulated");

/// Which roots evidence must chain to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// AMD's pinned roots: real hardware only.
    Amd,
    /// The project's simulated root: development networks only.
    Simulated,
}
