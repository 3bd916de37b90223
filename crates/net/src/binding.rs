//! REPORT_DATA of a validator's TLS certificate: SHA-512 over a domain label, the certificate's
//! SubjectPublicKeyInfo, the validator's consensus public key and the chain id, each
//! length-prefixed so no two different inputs give the same bytes.

use sha2::{Digest, Sha512};

/// The domain label: evidence made for anything else never verifies as a TLS binding.
pub const DOMAIN: &[u8] = b"bulwark/attested-tls/v1";

/// The 64 bytes the report's REPORT_DATA must equal.
pub fn report_data(spki_der: &[u8], consensus_key: &[u8; 32], chain_id: &str) -> [u8; 64] {
    let mut h = Sha512::new();
    for part in [
        DOMAIN,
        spki_der,
        consensus_key.as_slice(),
        chain_id.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}
