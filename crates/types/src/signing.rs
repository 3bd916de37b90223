//! Ed25519 signatures over CometBFT's canonical sign bytes (length-prefixed protobuf
//! `CanonicalVote` / `CanonicalProposal` with the chain id), verified with the ZIP-215 rules
//! that CometBFT and the `tendermint` crate use, so every validator agrees on which signatures
//! are valid.

use ed25519_consensus::{Signature as EdSignature, SigningKey, VerificationKey};
use tendermint::chain;
use tendermint::proposal::Proposal;
use tendermint::vote::Vote;
use tendermint::{PublicKey, Signature};
use thiserror::Error;

/// Why a signature was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The message carries no signature.
    #[error("the message is not signed")]
    Missing,
    /// Not 64 bytes.
    #[error("a signature has 64 bytes, not {0}")]
    Malformed(usize),
    /// The public key is not an ed25519 key, or not a valid one.
    #[error("the public key is not a valid ed25519 key")]
    BadKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Invalid,
}

/// The bytes a validator signs for `vote` on `chain_id`.
pub fn vote_sign_bytes(vote: &Vote, chain_id: &chain::Id) -> Vec<u8> {
    vote.clone().into_signable_vec(chain_id.clone())
}

/// The bytes a proposer signs for `proposal` on `chain_id`.
pub fn proposal_sign_bytes(proposal: &Proposal, chain_id: &chain::Id) -> Vec<u8> {
    proposal.clone().into_signable_vec(chain_id.clone())
}

/// Signs `bytes` with an ed25519 key.
pub fn sign(key: &SigningKey, bytes: &[u8]) -> Signature {
    let sig = key.sign(bytes).to_bytes();
    match Signature::new(sig) {
        Ok(Some(s)) => s,
        // 64 non-empty bytes always make a signature.
        _ => unreachable!("ed25519 signatures are 64 bytes"),
    }
}

/// Verifies an ed25519 signature on `bytes` by `key`.
pub fn verify(key: &PublicKey, bytes: &[u8], signature: &Signature) -> Result<(), SignatureError> {
    let PublicKey::Ed25519(vk) = key else {
        return Err(SignatureError::BadKey);
    };
    let vk = VerificationKey::try_from(vk.as_bytes()).map_err(|_| SignatureError::BadKey)?;
    let raw: [u8; 64] = signature
        .as_bytes()
        .try_into()
        .map_err(|_| SignatureError::Malformed(signature.as_bytes().len()))?;
    vk.verify(&EdSignature::from(raw), bytes)
        .map_err(|_| SignatureError::Invalid)
}

/// Signs `vote` in place.
pub fn sign_vote(key: &SigningKey, vote: &mut Vote, chain_id: &chain::Id) {
    vote.signature = Some(sign(key, &vote_sign_bytes(vote, chain_id)));
}

/// Verifies `vote`'s signature by `key`.
pub fn verify_vote(
    key: &PublicKey,
    vote: &Vote,
    chain_id: &chain::Id,
) -> Result<(), SignatureError> {
    let signature = vote.signature.as_ref().ok_or(SignatureError::Missing)?;
    verify(key, &vote_sign_bytes(vote, chain_id), signature)
}

/// Signs `proposal` in place.
pub fn sign_proposal(key: &SigningKey, proposal: &mut Proposal, chain_id: &chain::Id) {
    proposal.signature = Some(sign(key, &proposal_sign_bytes(proposal, chain_id)));
}

/// Verifies `proposal`'s signature by `key`.
pub fn verify_proposal(
    key: &PublicKey,
    proposal: &Proposal,
    chain_id: &chain::Id,
) -> Result<(), SignatureError> {
    let signature = proposal.signature.as_ref().ok_or(SignatureError::Missing)?;
    verify(key, &proposal_sign_bytes(proposal, chain_id), signature)
}

/// The `tendermint` public key of an ed25519 signing key.
pub fn public_key(key: &SigningKey) -> PublicKey {
    match PublicKey::from_raw_ed25519(key.verification_key().as_bytes()) {
        Some(pk) => pk,
        None => unreachable!("an ed25519 verification key is 32 valid bytes"),
    }
}
