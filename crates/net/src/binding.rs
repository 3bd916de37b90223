//! REPORT_DATA of a validator's TLS certificate: SHA-512 over a domain label, the certificate's
//! SubjectPublicKeyInfo, its validity window, the validator's consensus public key, the chain
//! id and the SHA-256 of the genesis file, each length-prefixed so no two different inputs give
//! the same bytes.
//!
//! The validity window is bound so that the evidence expires with the certificate it was made
//! for: whoever learns a TLS private key cannot re-issue its certificate with a fresh window
//! around the old evidence (the report's signature covers the window it was made for).
//!
//! The genesis hash is bound here, by the measured guest that checked the genesis, and not by
//! HOST_DATA, which the host sets at launch: a validator's launch instance is the boot that
//! enrolled it, launched before any genesis existed.

use sha2::{Digest, Sha512};

/// The domain label: evidence made for anything else never verifies as a TLS binding. Version
/// 2 added the validity window, version 3 the genesis hash.
pub const DOMAIN: &[u8] = b"bulwark/attested-tls/v3";

/// A certificate's validity window, Unix seconds (X.509 times have whole seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// notBefore.
    pub not_before: u64,
    /// notAfter.
    pub not_after: u64,
}

/// The 64 bytes the report's REPORT_DATA must equal.
pub fn report_data(
    spki_der: &[u8],
    window: Window,
    consensus_key: &[u8; 32],
    chain_id: &str,
    genesis_sha256: &[u8; 32],
) -> [u8; 64] {
    let mut h = Sha512::new();
    let not_before = window.not_before.to_be_bytes();
    let not_after = window.not_after.to_be_bytes();
    for part in [
        DOMAIN,
        spki_der,
        not_before.as_slice(),
        not_after.as_slice(),
        consensus_key.as_slice(),
        chain_id.as_bytes(),
        genesis_sha256.as_slice(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_binding() {
        let w = Window {
            not_before: 10,
            not_after: 20,
        };
        let base = report_data(b"spki", w, &[1; 32], "chain", &[7; 32]);
        for other in [
            report_data(b"spkj", w, &[1; 32], "chain", &[7; 32]),
            report_data(
                b"spki",
                Window {
                    not_before: 11,
                    ..w
                },
                &[1; 32],
                "chain",
                &[7; 32],
            ),
            report_data(
                b"spki",
                Window { not_after: 21, ..w },
                &[1; 32],
                "chain",
                &[7; 32],
            ),
            report_data(b"spki", w, &[2; 32], "chain", &[7; 32]),
            report_data(b"spki", w, &[1; 32], "chaim", &[7; 32]),
            report_data(b"spki", w, &[1; 32], "chain", &[8; 32]),
        ] {
            assert_ne!(base, other);
        }
    }
}
