//! Validator VMs for the end-to-end tests and `cargo xtask` (qemu, demo, test), on top of the
//! process harness (`harness`):
//!
//! - [`vm`]: the two image flavours, one VM boot under QEMU (TCG) on the SEV-SNP machine shape,
//!   and a network of validator VMs made by the in-VM genesis ceremony (enrol, assemble, run).
//! - [`snp`]: the SEV-SNP launch of one validator on a real host (the same device arguments)
//!   and what a would-be SNP host lacks.

pub mod snp;
pub mod vm;
