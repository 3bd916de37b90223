//! An instance claim: its bytes as a transaction, its signature and its validity in a block.

use crate::register::Register;
use crate::signed;
use bulwark_types::tendermint::validator;

/// How a claim transaction starts: a zero byte, so no CometBFT sign bytes (a non-zero length
/// prefix) and no key=value transaction ever looks like one.
pub const TX_MAGIC: &[u8; 16] = b"\0bulwark-claim/1";
/// What the consensus key signs before a claim's body: starts with a zero byte too, so the
/// signature can never pass for a vote's or a proposal's.
pub const SIGNING_DOMAIN: &[u8] = b"\0bulwark/instance-claim/v1";
/// Heights after `not_before` during which a claim may still be included.
pub const CLAIM_TTL: u64 = 32;
const TX_LEN: usize = TX_MAGIC.len() + 20 + 32 + 8 + 64;

/// Why a claim is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    /// The transaction starts like a claim but is not one.
    #[error("a claim transaction of {0} bytes (a claim has {TX_LEN})")]
    Length(usize),
    /// Its validator is not in the set of the height.
    #[error("claim by {0}, not a validator of this height")]
    NotAValidator(String),
    /// The signature does not verify under the validator's key.
    #[error("claim by {0}: the signature does not verify")]
    Signature(String),
    /// Included outside `not_before ..= not_before + CLAIM_TTL`.
    #[error("claim by {validator} for heights {not_before}..={}, included at {height}", not_before.saturating_add(CLAIM_TTL))]
    Expired {
        /// Its validator.
        validator: String,
        /// Its first height.
        not_before: u64,
        /// Where it was included.
        height: u64,
    },
    /// Made before the current holder's claim committed: a replay.
    #[error("claim by {validator} from height {not_before}, not after its holder's claim of height {holder}")]
    Stale {
        /// Its validator.
        validator: String,
        /// Its first height.
        not_before: u64,
        /// The height of the holder's claim.
        holder: u64,
    },
    /// Two claims of one validator in one block.
    #[error("two claims by {0} in one block")]
    Twice(String),
}

/// A signed instance claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The validator's address.
    pub validator: [u8; 20],
    /// The instance: random bytes of one boot.
    pub instance: [u8; 32],
    /// The first height whose block may carry it.
    pub not_before: u64,
    /// Ed25519 by the validator's consensus key over [`Claim::signed_bytes`].
    pub signature: [u8; 64],
}

impl Claim {
    /// What the consensus key signs: the domain, the chain id (length-prefixed), validator,
    /// instance and `not_before`.
    pub fn signed_bytes(
        chain_id: &str,
        validator: &[u8; 20],
        instance: &[u8; 32],
        not_before: u64,
    ) -> Vec<u8> {
        signed::signed_bytes(
            SIGNING_DOMAIN,
            chain_id,
            &[validator, instance, &not_before.to_be_bytes()],
        )
    }

    /// The claim as a transaction.
    pub fn to_tx(&self) -> Vec<u8> {
        let mut tx = Vec::with_capacity(TX_LEN);
        tx.extend_from_slice(TX_MAGIC);
        tx.extend_from_slice(&self.validator);
        tx.extend_from_slice(&self.instance);
        tx.extend_from_slice(&self.not_before.to_be_bytes());
        tx.extend_from_slice(&self.signature);
        tx
    }

    /// `None` if `tx` is no claim; the claim, or why its bytes are not one, if it starts like
    /// one.
    pub fn from_tx(tx: &[u8]) -> Option<Result<Claim, ClaimError>> {
        let rest = tx.strip_prefix(TX_MAGIC.as_slice())?;
        if tx.len() != TX_LEN {
            return Some(Err(ClaimError::Length(tx.len())));
        }
        let (validator, rest) = rest.split_at(20);
        let (instance, rest) = rest.split_at(32);
        let (not_before, signature) = rest.split_at(8);
        Some(Ok(Claim {
            validator: validator.try_into().ok()?,
            instance: instance.try_into().ok()?,
            not_before: u64::from_be_bytes(not_before.try_into().ok()?),
            signature: signature.try_into().ok()?,
        }))
    }

    /// The validator's address in hex.
    pub fn validator_hex(&self) -> String {
        hex::encode_upper(self.validator)
    }

    /// Checks the signature under the key `validators` lists for the claim's validator.
    pub fn verify_signature(
        &self,
        chain_id: &str,
        validators: &validator::Set,
    ) -> Result<(), ClaimError> {
        let message =
            Self::signed_bytes(chain_id, &self.validator, &self.instance, self.not_before);
        signed::verify_by(validators, &self.validator, &message, &self.signature).map_err(|e| {
            match e {
                signed::Refused::NotAValidator => ClaimError::NotAValidator(self.validator_hex()),
                signed::Refused::Signature => ClaimError::Signature(self.validator_hex()),
            }
        })
    }

    /// Whether the claim may be included in the block of `height`, given the register before
    /// it (signature not checked).
    pub fn check_timing(&self, height: u64, register: &Register) -> Result<(), ClaimError> {
        let validator = self.validator_hex();
        if height < self.not_before || height > self.not_before.saturating_add(CLAIM_TTL) {
            return Err(ClaimError::Expired {
                validator,
                not_before: self.not_before,
                height,
            });
        }
        if let Some(holder) = register.holder(&self.validator) {
            if self.not_before <= holder.height {
                return Err(ClaimError::Stale {
                    validator,
                    not_before: self.not_before,
                    holder: holder.height,
                });
            }
        }
        Ok(())
    }

    /// Checks the claims among a block's `txs` at `height`: each valid, one per validator.
    pub fn check_block(
        txs: &[impl AsRef<[u8]>],
        chain_id: &str,
        validators: &validator::Set,
        height: u64,
        register: &Register,
    ) -> Result<(), ClaimError> {
        let mut seen = std::collections::BTreeSet::new();
        for tx in txs {
            let Some(claim) = Claim::from_tx(tx.as_ref()) else {
                continue;
            };
            let claim = claim?;
            if !seen.insert(claim.validator) {
                return Err(ClaimError::Twice(claim.validator_hex()));
            }
            claim.check_timing(height, register)?;
            claim.verify_signature(chain_id, validators)?;
        }
        Ok(())
    }
}
