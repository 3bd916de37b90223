//! A Bulwark validator's identity and the network it belongs to:
//!
//! - [`sealed`]: the consensus and node keys, generated inside the guest and sealed under the
//!   SEV-SNP derived key (or the simulated PSP's), re-sealed after a firmware update;
//! - [`disk_key`]: the data disk's key, wrapped under the sealing key in the disk's key slots;
//! - [`enrollment`]: what an enrolling guest publishes (its public keys and evidence binding
//!   them to the chain name) and its verification;
//! - [`chain_id`]: the self-certifying chain id, `<name>-<hash of the canonical genesis>`;
//! - [`ceremony`]: the genesis ceremony: enrol (make, seal, publish), assemble a genesis from
//!   verified enrollments, and re-verify every validator of a genesis.

pub mod ceremony;
pub mod chain_id;
pub mod disk_key;
pub mod enrollment;
pub mod sealed;

pub use chain_id::{canonical_json, certify, chain_name, check_chain_id, ChainIdError};
pub use enrollment::{enrollment_report_data, Enrollment, EnrollmentError, TaggedEvidence};
pub use sealed::{committed_tcb, state_mac_key, Identity, IdentityError, SealedIdentity};
