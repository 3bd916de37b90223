//! The bytes a consensus key signs for a claim (a domain label, the chain id, then fixed-size
//! fields) and the check of such a signature under the key the validator set lists for its
//! signer.

use bulwark_types::tendermint::{validator, PublicKey};

/// `domain`, the chain id (length-prefixed), then `fields` as they are.
pub(crate) fn signed_bytes(domain: &[u8], chain_id: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut b = domain.to_vec();
    b.extend_from_slice(&(chain_id.len() as u64).to_be_bytes());
    b.extend_from_slice(chain_id.as_bytes());
    for f in fields {
        b.extend_from_slice(f);
    }
    b
}

/// Why a signature was refused.
pub(crate) enum Refused {
    /// `validators` lists no validator of that address.
    NotAValidator,
    /// Its key is not Ed25519, or the signature does not verify.
    Signature,
}

/// Checks `signature` over `message` under the key `validators` lists for `signer`.
pub(crate) fn verify_by(
    validators: &validator::Set,
    signer: &[u8; 20],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), Refused> {
    let info = validators
        .validators()
        .iter()
        .find(|v| v.address.as_bytes() == signer)
        .ok_or(Refused::NotAValidator)?;
    let PublicKey::Ed25519(key) = info.pub_key else {
        return Err(Refused::Signature);
    };
    let key = ed25519_consensus::VerificationKey::try_from(key.as_bytes())
        .map_err(|_| Refused::Signature)?;
    key.verify(&ed25519_consensus::Signature::from(*signature), message)
        .map_err(|_| Refused::Signature)
}
