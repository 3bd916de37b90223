//! Planted bugs, to show that the simulator catches them (`cargo xtask mutants`). Each
//! [`Mutant`] names one deliberate deviation at one place in the core or the node. Hooks are
//! compiled only with the `mutants` feature; without it [`active`] is a constant `false` and
//! every hook folds away, so no build that runs a validator carries them.
//!
//! The planted mutant is per thread: the simulator runs one world per thread, each under at
//! most one mutant.

/// A planted bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mutant {
    /// Line 23: prevote a proposal without a POL whatever the lock.
    IgnoreLock,
    /// Line 29: prevote a proposal with a POL whatever the lock.
    IgnoreLockWithPol,
    /// Lines 28–33: a proposal's POL round counts as a polka even without one.
    MissingPolAsPresent,
    /// Votes: an equivocator's second vote is counted as well.
    CountEquivocatorsSecondVote,
    /// Line 55: skip to a round on one validator's messages (f instead of f + 1).
    RoundSkipOnOneValidator,
    /// Line 29: `lockedRound < vr` instead of `≤`. Equivalent under the fault assumption: it
    /// differs only when a polka for two values exists in one round, which needs more than f
    /// byzantine validators.
    LockedRoundStrictlyBelowPol,
    /// The node: a precommit for another block stays in the commit as nil (review C1).
    KeepMismatchedPrecommit,
    /// The node: any block time after the last block's is accepted (review C2).
    AcceptAnyBlockTime,
    /// The node: proposals for any round, the proposer computed first (review C3).
    AnyRoundProposal,
    /// The node: evidence from peers and in blocks taken without checking its signatures
    /// (review H3).
    UncheckedEvidence,
    /// The node: what is kept for relay is one list of the first messages of a height,
    /// whatever they are, so spam crowds out honest votes (review M4; here 32 messages).
    RelayFirstComeOnly,
    /// The node: an instance signs whatever the register of instance claims says (review
    /// C-2). Not in [`MUTANTS`]: the engine simulator keeps one instance per node, and
    /// `crates/node/tests/instances.rs` plants it instead.
    SignWithoutClaim,
    /// The node: proposers leave instance claims out of their blocks, so a restarted
    /// instance never takes its key back (the instance rule's liveness). Not in [`MUTANTS`]:
    /// restarts by the host exercise it, in the engine simulator's own test.
    ClaimsLeftOut,
    /// The node: block sync asks for blocks only when a tick finds the node stuck, not as
    /// soon as a run of them landed or a peer shows a later height, so a restarted validator
    /// trails a fast chain (the instance rule's liveness). Not in [`MUTANTS`], as above.
    BlockSyncOnStuckTicksOnly,
}

/// Every planted bug, in the order `cargo xtask mutants` runs them.
pub const MUTANTS: [Mutant; 11] = [
    Mutant::IgnoreLock,
    Mutant::IgnoreLockWithPol,
    Mutant::MissingPolAsPresent,
    Mutant::CountEquivocatorsSecondVote,
    Mutant::RoundSkipOnOneValidator,
    Mutant::LockedRoundStrictlyBelowPol,
    Mutant::KeepMismatchedPrecommit,
    Mutant::AcceptAnyBlockTime,
    Mutant::AnyRoundProposal,
    Mutant::UncheckedEvidence,
    Mutant::RelayFirstComeOnly,
];

#[cfg(feature = "mutants")]
std::thread_local! {
    static PLANTED: std::cell::Cell<Option<Mutant>> = const { std::cell::Cell::new(None) };
}

/// Plants `mutant` in this thread (`None`: the real code). Without the `mutants` feature it
/// plants nothing and says so.
pub fn plant(mutant: Option<Mutant>) -> bool {
    #[cfg(feature = "mutants")]
    {
        PLANTED.with(|p| p.set(mutant));
        true
    }
    #[cfg(not(feature = "mutants"))]
    {
        mutant.is_none()
    }
}

/// Whether `mutant` is planted in this thread.
#[inline(always)]
pub fn active(mutant: Mutant) -> bool {
    #[cfg(feature = "mutants")]
    {
        PLANTED.with(|p| p.get() == Some(mutant))
    }
    #[cfg(not(feature = "mutants"))]
    {
        let _ = mutant;
        false
    }
}
