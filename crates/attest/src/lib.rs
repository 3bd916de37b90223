//! SEV-SNP attestation evidence for Bulwark: the network's policy ([`policy`]), the verifier
//! ([`verify()`], a pure function that names the check that failed), the evidence sources
//! ([`source`]: the guest device and, with the `simulated` feature, the simulated PSP of
//! `simulated`). The formats and
//! pinned roots it builds on come from `bulwark-snp` and are re-exported: the report format
//! ([`report`]), AMD's roots and endorsement-key certificates ([`certs`]) and revocation
//! lists ([`crl`]).

pub use bulwark_snp::{certs, crl, report};
pub mod policy;
#[cfg(feature = "simulated")]
pub mod simulated;

/// Whether this build has the simulated PSP and root (the `simulated` feature): development
/// builds do, the production image does not, so no input can make it trust simulated evidence.
pub const SIMULATED_PSP_BUILT_IN: bool = bulwark_snp::SIMULATED_ROOT_BUILT_IN;
pub mod source;
mod verify;

pub use certs::KeyKind;
pub use crl::{Crl, CrlError};
pub use policy::{
    AbiVersion, GuestPolicyRules, HexBytes, Measurement, Measurements, Mitigations, PlatformRules,
    Policy, PolicyError, ProductRules, Revocation, Trust,
};
pub use report::{AttestationReport, FirmwareVersion, Product, Tcb};
pub use source::{EvidenceSource, GuestDevice, SourceError};
pub use verify::{
    check_host_chain, inspect, verify, verify_with_cache, Binding, ChainCache, Evidence,
    Inspection, RejectReason, VerifiedReport, CHAIN_CACHE_CAPACITY, KNOWN_VERSIONS,
};
