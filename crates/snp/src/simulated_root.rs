//! The project's simulated root: a self-signed ARK and an ASK it signed, shaped like AMD's
//! (RSA-4096, RSA-PSS/SHA-384) and pinned here apart from them. Only a policy with
//! `trust: simulated` accepts certificates under it, and such a policy accepts nothing else.
//! Nothing about it is secret; the simulated PSP in `bulwark-attest` holds its private keys.
//!
//! The certificates live beside the PSP's keys in `crates/attest/simulated/`, where
//! `cargo xtask simulated-root` writes them.

use crate::certs::{normalized_serial, validity, Chain, EndorsementCert, KeyKind};
use crate::report::Product;
use sev::certs::snp::{Certificate as SevCertificate, Verifiable};
use std::sync::OnceLock;
use x509_cert::der::DecodePem;
use x509_cert::Certificate;

/// The simulated ARK (self-signed, RSA-4096, RSA-PSS/SHA-384).
pub const SIMULATED_ARK_PEM: &str = include_str!("../../attest/simulated/ark.pem");
/// The simulated ASK, signed by the simulated ARK.
pub const SIMULATED_ASK_PEM: &str = include_str!("../../attest/simulated/ask.pem");

/// The product line a simulated CRL is filed under (the simulated root has one ARK), and of
/// simulated VCEKs that name none.
pub const SIMULATED_PRODUCT: Product = Product::Milan;

/// The common name of simulated VCEK certificates.
pub const SIMULATED_VCEK_CN: &str = "SIMULATED-SEV-VCEK";

/// The loaded simulated root.
pub struct SimulatedRoot {
    /// The ARK.
    pub ark: Certificate,
    /// The ASK.
    pub ask: Certificate,
    ask_sev: SevCertificate,
}

/// Loads the pinned simulated root once and checks it: the ARK is self-signed and signs the
/// ASK. `Err` says why it is unusable.
pub fn simulated_root() -> Result<&'static SimulatedRoot, String> {
    static ROOT: OnceLock<Result<SimulatedRoot, String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let ark = Certificate::from_pem(SIMULATED_ARK_PEM).map_err(|e| e.to_string())?;
        let ask = Certificate::from_pem(SIMULATED_ASK_PEM).map_err(|e| e.to_string())?;
        let ark_sev = SevCertificate::from(ark.clone());
        let ask_sev = SevCertificate::from(ask.clone());
        (&ark_sev, &ark_sev)
            .verify()
            .map_err(|e| format!("ARK: {e}"))?;
        (&ark_sev, &ask_sev)
            .verify()
            .map_err(|e| format!("ASK: {e}"))?;
        Ok(SimulatedRoot { ark, ask, ask_sev })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The simulated ARK, if the pinned simulated root loads.
pub fn simulated_ark() -> Option<Certificate> {
    simulated_root().ok().map(|r| r.ark.clone())
}

/// The simulated ASK's serial number (normalized), for tests that revoke it.
pub fn simulated_ask_serial() -> Option<Vec<u8>> {
    simulated_root()
        .ok()
        .map(|r| normalized_serial(r.ask.tbs_certificate.serial_number.as_bytes()))
}

/// What a certificate's chain to the simulated root proves: only VCEKs whose issuer is the
/// simulated ASK and which it signed, for the product line their product-name extension
/// states (Milan when absent). `Err(true)`: named the simulated ASK but not signed by it.
pub fn chain_to_simulated_root(cert: &EndorsementCert, kind: KeyKind) -> Result<Chain, bool> {
    let root = simulated_root().map_err(|_| false)?;
    if kind != KeyKind::Vcek
        || cert.x509().tbs_certificate.issuer != root.ask.tbs_certificate.subject
    {
        return Err(false);
    }
    let sev_cert = SevCertificate::from(cert.x509().clone());
    (&root.ask_sev, &sev_cert).verify().map_err(|_| true)?;
    Ok(Chain {
        product: cert
            .product_name()
            .and_then(|n| Product::from_name(&n))
            .unwrap_or(SIMULATED_PRODUCT),
        intermediate_serial: normalized_serial(root.ask.tbs_certificate.serial_number.as_bytes()),
        intermediate_validity: validity(&root.ask),
        root_validity: validity(&root.ark),
    })
}
