//! SEV-SNP attestation evidence for Bulwark: the report format ([`report`]), the pinned AMD
//! roots and endorsement-key certificates ([`certs`]), AMD's revocation lists ([`crl`]), the
//! network's policy ([`policy`]) and the verifier ([`verify()`]), a pure function that names
//! the check that failed.

pub mod certs;
pub mod crl;
pub mod policy;
pub mod report;
pub mod simulated;
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
