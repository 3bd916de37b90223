//! The vocabulary of the core: heights, rounds, values and the two signed messages.
//!
//! The core never signs or verifies anything. The driver verifies a message's signature (and
//! that the signer is the validator the message names) before it becomes an [`crate::Event`];
//! the core carries signatures opaquely so that commits and evidence can be handed back out.

use core::fmt;

/// A block height. Heights start at 1 in CometBFT chains; the core accepts any value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Height(pub u64);

impl Height {
    /// The height after this one.
    pub fn next(self) -> Height {
        Height(self.0.saturating_add(1))
    }
}

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A round within a height. Round numbers are non-negative; the paper's `-1` ("no round") is
/// `Option<Round>::None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Round(pub u32);

impl Round {
    /// The round after this one (saturating: a network never gets near `u32::MAX` rounds).
    pub fn next(self) -> Round {
        Round(self.0.saturating_add(1))
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Position of a validator in the validator set of the height (CometBFT order: voting power
/// descending, then address ascending).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorIndex(pub u32);

impl ValidatorIndex {
    /// The index as a `usize` for slice access.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// `id(v)` of the paper: the 32-byte identifier of a proposed value (in Bulwark the block hash).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId(pub [u8; 32]);

impl fmt::Debug for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…")
    }
}

/// Whether the driver found a proposed value valid (`valid(v)` of the paper). In the node this is
/// the block's own checks plus the application's ProcessProposal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// The value may be decided.
    Valid,
    /// The value must never be voted for or decided.
    Invalid,
}

/// The two kinds of vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VoteKind {
    /// First voting step of a round.
    Prevote,
    /// Second voting step of a round.
    Precommit,
}

/// ⟨PREVOTE | PRECOMMIT, h, r, id(v) | nil⟩ from one validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// Height voted at.
    pub height: Height,
    /// Round voted at.
    pub round: Round,
    /// The value voted for, `None` for nil.
    pub value: Option<ValueId>,
    /// Who votes.
    pub validator: ValidatorIndex,
}

/// ⟨PROPOSAL, h, r, v, vr⟩ from the proposer of (h, r).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Proposal {
    /// Height proposed at.
    pub height: Height,
    /// Round proposed at.
    pub round: Round,
    /// The proposed value.
    pub value: ValueId,
    /// `vr`: the round in which the proposer saw a polka for `value` (`None` is the paper's -1).
    pub pol_round: Option<Round>,
    /// Who proposes.
    pub proposer: ValidatorIndex,
}

/// Signature bytes, opaque to the core. The driver may pack anything it signs but the core does
/// not interpret (CometBFT vote timestamps, for instance) in here too.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Signature(pub Vec<u8>);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({} bytes)", self.0.len())
    }
}

/// A message together with its (already verified) signature.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signed<M> {
    /// The signed message.
    pub message: M,
    /// The signature, opaque to the core.
    pub signature: Signature,
}

impl<M> Signed<M> {
    /// Pairs a message with its signature.
    pub fn new(message: M, signature: Signature) -> Self {
        Signed { message, signature }
    }
}

/// A signed vote.
pub type SignedVote = Signed<Vote>;
/// A signed proposal.
pub type SignedProposal = Signed<Proposal>;
