//! A launch acknowledgement: another validator's signed word, bound to one fresh instance, that
//! the network is still in its first heights and holds no claim of the instance's validator.
//!
//! Before any claim of a validator commits, the register cannot tell its instances apart, so
//! an unclaimed instance would sign on its own say-so, and the host can boot a copy of the
//! enrolled disk (whose chain state is empty) at any time: it would start at the first height
//! again and propose or vote there a second time. The network knows better. An unclaimed
//! instance signs only once validators holding, with it, more than two thirds of the power
//! have acknowledged its instance: each says, under its consensus key, "at my next height `h`,
//! within the first heights, my register names no instance of your validator". The instance is
//! fresh random bytes, so an acknowledgement cannot be replayed to a later boot, and honest
//! validators past the first heights, or holding a claim of the validator, never give one: a
//! copy booted after the validator's first claim committed gathers too few.

use crate::signed;
use bulwark_types::tendermint::validator;

/// How an acknowledgement transaction starts (a zero byte, like a claim's: no CometBFT sign
/// bytes and no key=value transaction looks like one). It travels only between peers: never
/// into the mempool or a block.
pub const ACK_TX_MAGIC: &[u8; 16] = b"\0bulwark-l-ack/1";
/// What the consensus key signs before an acknowledgement's body.
pub const ACK_SIGNING_DOMAIN: &[u8] = b"\0bulwark/launch-ack/v1";
const ACK_TX_LEN: usize = ACK_TX_MAGIC.len() + 20 + 20 + 32 + 8 + 64;

/// Why an acknowledgement is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AckError {
    /// The transaction starts like an acknowledgement but is not one.
    #[error("an acknowledgement of {0} bytes (one has {ACK_TX_LEN})")]
    Length(usize),
    /// Its signer is not a validator.
    #[error("acknowledgement by {0}, not a validator")]
    NotAValidator(String),
    /// The signature does not verify.
    #[error("acknowledgement by {0}: the signature does not verify")]
    Signature(String),
}

/// A signed launch acknowledgement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The validator that acknowledges.
    pub acker: [u8; 20],
    /// The validator whose instance is acknowledged.
    pub asker: [u8; 20],
    /// The acknowledged instance.
    pub instance: [u8; 32],
    /// The acker's next height when it acknowledged.
    pub height: u64,
    /// Ed25519 by the acker's consensus key over [`Ack::signed_bytes`].
    pub signature: [u8; 64],
}

impl Ack {
    /// What the acker's key signs: the domain, the chain id (length-prefixed), acker, asker,
    /// instance and height.
    pub fn signed_bytes(
        chain_id: &str,
        acker: &[u8; 20],
        asker: &[u8; 20],
        instance: &[u8; 32],
        height: u64,
    ) -> Vec<u8> {
        signed::signed_bytes(
            ACK_SIGNING_DOMAIN,
            chain_id,
            &[acker, asker, instance, &height.to_be_bytes()],
        )
    }

    /// The acknowledgement as a transaction.
    pub fn to_tx(&self) -> Vec<u8> {
        let mut tx = Vec::with_capacity(ACK_TX_LEN);
        tx.extend_from_slice(ACK_TX_MAGIC);
        tx.extend_from_slice(&self.acker);
        tx.extend_from_slice(&self.asker);
        tx.extend_from_slice(&self.instance);
        tx.extend_from_slice(&self.height.to_be_bytes());
        tx.extend_from_slice(&self.signature);
        tx
    }

    /// `None` if `tx` is no acknowledgement; the acknowledgement, or why its bytes are not one,
    /// if it starts like one.
    pub fn from_tx(tx: &[u8]) -> Option<Result<Ack, AckError>> {
        let rest = tx.strip_prefix(ACK_TX_MAGIC.as_slice())?;
        if tx.len() != ACK_TX_LEN {
            return Some(Err(AckError::Length(tx.len())));
        }
        let (acker, rest) = rest.split_at(20);
        let (asker, rest) = rest.split_at(20);
        let (instance, rest) = rest.split_at(32);
        let (height, signature) = rest.split_at(8);
        Some(Ok(Ack {
            acker: acker.try_into().ok()?,
            asker: asker.try_into().ok()?,
            instance: instance.try_into().ok()?,
            height: u64::from_be_bytes(height.try_into().ok()?),
            signature: signature.try_into().ok()?,
        }))
    }

    /// Checks the signature under the key `validators` lists for the acker.
    pub fn verify_signature(
        &self,
        chain_id: &str,
        validators: &validator::Set,
    ) -> Result<(), AckError> {
        let message = Self::signed_bytes(
            chain_id,
            &self.acker,
            &self.asker,
            &self.instance,
            self.height,
        );
        signed::verify_by(validators, &self.acker, &message, &self.signature).map_err(|e| {
            let who = hex::encode_upper(self.acker);
            match e {
                signed::Refused::NotAValidator => AckError::NotAValidator(who),
                signed::Refused::Signature => AckError::Signature(who),
            }
        })
    }
}
