//! Bulwark's consensus core: the Tendermint algorithm as a pure, deterministic state machine.
//!
//! [`Consensus::handle`] takes one [`Event`] (a proposal, a vote, a timeout, a new height) and
//! returns the [`Action`]s the driver must carry out (sign and broadcast, schedule a timeout,
//! commit a decision, report evidence). The core has no clock, no I/O and no randomness: the same
//! events in the same order always give the same actions, which is what lets the simulator
//! replay any run from its seed and a node replay its write-ahead log after a crash.
//!
//! The core trusts the driver for two things only: signatures are verified before a message
//! becomes an event, and `Validity` reflects the driver's checks of the proposed value.
//! Everything else (membership, proposer, rounds, duplicates, conflicts) the core checks itself.

pub mod mutation;
pub mod state;
pub mod types;
pub mod validators;
mod votes;

pub use state::{
    Action, Certificate, Config, Consensus, Decision, DuplicateVote, Event, RoundSeen, Step,
    Timeout, TimeoutKind, MAX_FUTURE_ROUNDS_PER_VALIDATOR, MAX_PROPOSALS_PER_ROUND,
    PROPOSER_LOOKAHEAD,
};
pub use types::{
    Height, Proposal, Round, Signature, Signed, SignedProposal, SignedVote, ValidatorIndex,
    Validity, ValueId, Vote, VoteKind,
};
pub use validators::{Validator, ValidatorSet, ValidatorSetError, MAX_TOTAL_VOTING_POWER};
