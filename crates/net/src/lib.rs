//! Attested TLS between validators: TLS 1.3 with mutual authentication, where a certificate is
//! accepted only if it carries SEV-SNP evidence that genuine AMD hardware (or, on development
//! networks, the simulated PSP) signed, for a launch measurement and policy the network's
//! genesis allows, binding this very TLS key, a validator's consensus key and the chain id.
//!
//! - [`binding`]: what REPORT_DATA must be for a certificate.
//! - [`extension`]: the X.509 extension that carries the evidence, and its OID.
//! - [`identity`]: a validator's own short-lived certificate, made with fresh evidence.
//! - [`verifier`]: the pure check of a peer's certificate, and the rustls verifiers around it.
//! - [`config`]: rustls client and server configurations (TLS 1.3 only, client auth mandatory).

pub mod binding;
pub mod config;
pub mod extension;
pub mod identity;
pub mod verifier;

pub use identity::{LocalIdentity, RotatingIdentity};
pub use verifier::{
    AttestedVerifier, FullNodes, NetworkPolicy, PeerRejected, ValidatorKeys, VerifiedPeer,
};
