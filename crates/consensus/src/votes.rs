//! Vote keeping for one (round, kind): at most one vote per validator, power per value, and
//! detection of a validator voting twice differently (equivocation).

use crate::state::DuplicateVote;
use crate::types::{SignedVote, ValidatorIndex, ValueId};
use crate::validators::ValidatorSet;

/// What adding a vote did.
#[derive(Debug)]
pub(crate) enum AddVote {
    /// First vote of this validator: counted.
    Counted,
    /// The same vote again: ignored.
    Duplicate,
    /// A different vote from a validator that already voted: not counted; evidence, reported
    /// once per validator.
    Conflict(Box<DuplicateVote>),
    /// A conflict already reported for this validator: ignored.
    ConflictAgain,
}

/// Votes of one kind in one round.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    by_validator: Vec<Option<SignedVote>>,
    equivocated: Vec<bool>,
    nil_power: u64,
    /// Power per value, in first-seen order; tiny (honest validators agree, each byzantine one
    /// adds at most one entry).
    value_power: Vec<(ValueId, u64)>,
    total_power: u64,
    /// A verified quorum certificate for one value: it wins over first-seen counting, which an
    /// equivocator can bend differently at every node.
    certified: Option<(Option<ValueId>, Vec<SignedVote>)>,
}

impl Tally {
    pub(crate) fn new(validators: usize) -> Self {
        Tally {
            by_validator: vec![None; validators],
            equivocated: vec![false; validators],
            nil_power: 0,
            value_power: Vec::new(),
            total_power: 0,
            certified: None,
        }
    }

    /// Records a certificate the caller has verified (distinct signers of this kind, height and
    /// round, all for `value`, more than two thirds of the power).
    pub(crate) fn certify(&mut self, value: Option<ValueId>, votes: Vec<SignedVote>) {
        if self.certified.is_none() {
            self.certified = Some((value, votes));
        }
    }

    /// Adds `vote` by a validator of `power`. The caller has checked the index is in the set.
    pub(crate) fn add(&mut self, vote: SignedVote, power: u64) -> AddVote {
        let i = vote.message.validator.as_usize();
        let Some(slot) = self.by_validator.get_mut(i) else {
            return AddVote::Duplicate;
        };
        match slot {
            Some(existing) if existing.message.value == vote.message.value => AddVote::Duplicate,
            Some(existing) => {
                if self.equivocated[i] {
                    return AddVote::ConflictAgain;
                }
                self.equivocated[i] = true;
                if crate::mutation::active(crate::mutation::Mutant::CountEquivocatorsSecondVote) {
                    match vote.message.value {
                        None => self.nil_power += power,
                        Some(v) => match self.value_power.iter_mut().find(|(id, _)| *id == v) {
                            Some((_, p)) => *p += power,
                            None => self.value_power.push((v, power)),
                        },
                    }
                }
                AddVote::Conflict(Box::new(DuplicateVote {
                    first: existing.clone(),
                    second: vote,
                }))
            }
            None => {
                match vote.message.value {
                    None => self.nil_power += power,
                    Some(v) => match self.value_power.iter_mut().find(|(id, _)| *id == v) {
                        Some((_, p)) => *p += power,
                        None => self.value_power.push((v, power)),
                    },
                }
                self.total_power += power;
                *slot = Some(vote);
                AddVote::Counted
            }
        }
    }

    /// Whether [`Tally::add`] would store `vote`: counted, or the first conflict of its
    /// validator (the evidence).
    pub(crate) fn would_store(&self, vote: &crate::types::Vote) -> bool {
        let i = vote.validator.as_usize();
        match self.by_validator.get(i) {
            None => false,
            Some(None) => true,
            Some(Some(existing)) => {
                existing.message.value != vote.value
                    && !self.equivocated.get(i).copied().unwrap_or(true)
            }
        }
    }

    /// Whether a certificate was recorded.
    pub(crate) fn is_certified(&self) -> bool {
        self.certified.is_some()
    }

    /// The counted vote of each validator, in set order.
    pub(crate) fn by_validator(&self) -> &[Option<SignedVote>] {
        &self.by_validator
    }

    /// Whether `validator` has a counted vote here.
    pub(crate) fn voted(&self, validator: ValidatorIndex) -> bool {
        self.by_validator
            .get(validator.as_usize())
            .is_some_and(|v| v.is_some())
    }

    /// Power of the votes for `value` (`None`: nil).
    fn power_for(&self, value: Option<ValueId>) -> u64 {
        match value {
            None => self.nil_power,
            Some(v) => self
                .value_power
                .iter()
                .find(|(id, _)| *id == v)
                .map_or(0, |(_, p)| *p),
        }
    }

    /// Power of all counted votes.
    pub(crate) fn total_power(&self) -> u64 {
        self.total_power
    }

    /// Whether more than two thirds of the power voted for `value` (`None`: nil).
    pub(crate) fn has_quorum_for(&self, set: &ValidatorSet, value: Option<ValueId>) -> bool {
        self.certified.as_ref().is_some_and(|(v, _)| *v == value)
            || set.is_quorum(self.power_for(value))
    }

    /// The value (or nil, as `Some(None)`) with more than two thirds of the power, if any. At
    /// most one can have it while at most a third of the power is byzantine.
    pub(crate) fn quorum_value(&self, set: &ValidatorSet) -> Option<Option<ValueId>> {
        if let Some((v, _)) = &self.certified {
            return Some(*v);
        }
        if set.is_quorum(self.nil_power) {
            return Some(None);
        }
        self.value_power
            .iter()
            .find(|(_, p)| set.is_quorum(*p))
            .map(|(v, _)| Some(*v))
    }

    /// The votes proving the quorum for `value`, in validator-set order: the certificate's if
    /// there is one for it, otherwise the counted votes (all of them, nil and others included,
    /// as CometBFT commits carry them).
    pub(crate) fn proof_for(&self, value: Option<ValueId>) -> Vec<SignedVote> {
        match &self.certified {
            Some((v, votes)) if *v == value => votes.clone(),
            _ => self.by_validator.iter().flatten().cloned().collect(),
        }
    }

    /// The votes for `value` only, if they make a quorum (for relaying as a certificate).
    pub(crate) fn quorum_votes(
        &self,
        set: &ValidatorSet,
    ) -> Option<(Option<ValueId>, Vec<SignedVote>)> {
        let value = self.quorum_value(set)?;
        if let Some((v, votes)) = &self.certified {
            if *v == value {
                return Some((value, votes.clone()));
            }
        }
        let votes = self
            .by_validator
            .iter()
            .flatten()
            .filter(|v| v.message.value == value)
            .cloned()
            .collect();
        Some((value, votes))
    }
}
