//! The simulated PSP's root: development networks (genesis `trust: simulated`) chain evidence
//! to it instead of AMD's roots. Until the simulated PSP lands, no certificate chains here, so a
//! simulated-trust policy rejects everything with `certificate_chain`.

use crate::certs::{EndorsementCert, KeyKind};
use crate::report::Product;

/// The product line a certificate's chain to the simulated root proves, if it has one.
pub fn chain_to_simulated_root(_cert: &EndorsementCert, _kind: KeyKind) -> Option<Product> {
    None
}
