//! The validator set of one height: voting power, quorum arithmetic and CometBFT's
//! proposer selection (weighted round robin on proposer priorities).
//!
//! Proposer selection must match CometBFT exactly, or blocks made by Bulwark would name a
//! different `proposer_address` than CometBFT tooling expects. The algorithm (priorities,
//! rescaling to a window of twice the total power, centring on the average, ties to the lower
//! address) follows CometBFT v0.38's `types/validator_set.go`; the test vector below is theirs.

use crate::types::{Round, ValidatorIndex};
use thiserror::Error;

/// CometBFT's cap on the total voting power (`MaxInt64 / 8`), which keeps priority
/// arithmetic far from overflow.
pub const MAX_TOTAL_VOTING_POWER: u64 = (i64::MAX / 8) as u64;

/// Priorities are kept within a window of this many times the total power.
const PRIORITY_WINDOW_SIZE_FACTOR: i64 = 2;

/// One validator as the core sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// The validator's address (20 bytes in CometBFT); orders validators of equal power.
    pub address: Vec<u8>,
    /// Voting power, at least 1.
    pub power: u64,
    /// CometBFT proposer priority.
    pub priority: i64,
}

impl Validator {
    /// A validator with priority 0, as it enters a fresh set.
    pub fn new(address: impl Into<Vec<u8>>, power: u64) -> Self {
        Validator {
            address: address.into(),
            power,
            priority: 0,
        }
    }
}

/// Why a validator set cannot be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ValidatorSetError {
    /// A set must have at least one validator.
    #[error("the validator set is empty")]
    Empty,
    /// Zero-power validators are removed, never kept, in CometBFT.
    #[error("validator {address} has zero voting power")]
    ZeroPower {
        /// Hex address of the offending validator.
        address: String,
    },
    /// Two entries share an address.
    #[error("validator {address} appears twice")]
    DuplicateAddress {
        /// Hex address of the duplicate.
        address: String,
    },
    /// The total exceeds [`MAX_TOTAL_VOTING_POWER`].
    #[error("total voting power exceeds {MAX_TOTAL_VOTING_POWER}")]
    TotalPowerTooLarge,
    /// The proposer given is not in the set.
    #[error("proposer index {0} is outside the set")]
    ProposerOutOfRange(u32),
    /// More validators than a `u32` index can name.
    #[error("too many validators")]
    TooManyValidators,
    /// A change removes a validator the set does not have.
    #[error("validator {address} to remove is not in the set")]
    UnknownRemoval {
        /// Hex address of the validator named.
        address: String,
    },
}

/// The validators of one height, in CometBFT order, with the proposer of round 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_power: u64,
    proposer: ValidatorIndex,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

impl ValidatorSet {
    /// A set as CometBFT's `NewValidatorSet` makes it at genesis: priorities start equal and are
    /// incremented once, which picks the proposer of the first height.
    pub fn genesis(validators: Vec<Validator>) -> Result<Self, ValidatorSetError> {
        let validators = validators
            .into_iter()
            .map(|v| Validator { priority: 0, ..v })
            .collect();
        let mut set = Self::checked(validators, ValidatorIndex(0))?;
        set.increment_proposer_priority(1);
        Ok(set)
    }

    /// A set restored from stored state: priorities and the round-0 proposer as they were
    /// recorded for this height.
    pub fn with_priorities(
        validators: Vec<Validator>,
        proposer: ValidatorIndex,
    ) -> Result<Self, ValidatorSetError> {
        Self::checked(validators, proposer)
    }

    fn checked(
        mut validators: Vec<Validator>,
        proposer: ValidatorIndex,
    ) -> Result<Self, ValidatorSetError> {
        if validators.is_empty() {
            return Err(ValidatorSetError::Empty);
        }
        if u32::try_from(validators.len()).is_err() {
            return Err(ValidatorSetError::TooManyValidators);
        }
        let proposer_address = validators
            .get(proposer.as_usize())
            .map(|v| v.address.clone())
            .ok_or(ValidatorSetError::ProposerOutOfRange(proposer.0))?;
        let mut total: u64 = 0;
        for v in &validators {
            if v.power == 0 {
                return Err(ValidatorSetError::ZeroPower {
                    address: hex(&v.address),
                });
            }
            total = total
                .checked_add(v.power)
                .filter(|t| *t <= MAX_TOTAL_VOTING_POWER)
                .ok_or(ValidatorSetError::TotalPowerTooLarge)?;
        }
        validators.sort_by(|a, b| b.power.cmp(&a.power).then(a.address.cmp(&b.address)));
        if let Some(w) = validators.windows(2).find(|w| w[0].address == w[1].address) {
            return Err(ValidatorSetError::DuplicateAddress {
                address: hex(&w[0].address),
            });
        }
        let proposer = validators
            .iter()
            .position(|v| v.address == proposer_address)
            .map(|i| ValidatorIndex(i as u32))
            .ok_or(ValidatorSetError::ProposerOutOfRange(proposer.0))?;
        Ok(ValidatorSet {
            validators,
            total_power: total,
            proposer,
        })
    }

    /// The set after `changes` (address and new power; power 0 removes), as CometBFT's
    /// `UpdateWithChangeSet` makes it: changes are checked first (no address twice, no
    /// removal of a non-member, not empty after, total power within the cap) and nothing
    /// changes on an error; a new validator enters with priority -1.125 times the total power
    /// after the updates and before the removals, a changed one keeps its priority; then
    /// priorities are rescaled and centred and the set sorted. The round-0 proposer is chosen
    /// by the next increment ([`ValidatorSet::next_height`]).
    pub fn with_changes(&self, changes: &[Validator]) -> Result<ValidatorSet, ValidatorSetError> {
        let mut sorted: Vec<&Validator> = changes.iter().collect();
        sorted.sort_by(|a, b| a.address.cmp(&b.address));
        if let Some(w) = sorted.windows(2).find(|w| w[0].address == w[1].address) {
            return Err(ValidatorSetError::DuplicateAddress {
                address: hex(&w[0].address),
            });
        }
        if sorted.iter().any(|c| c.power > MAX_TOTAL_VOTING_POWER) {
            return Err(ValidatorSetError::TotalPowerTooLarge);
        }
        let (removals, updates): (Vec<&Validator>, Vec<&Validator>) =
            sorted.into_iter().partition(|c| c.power == 0);
        let new_members = updates
            .iter()
            .filter(|u| self.index_of(&u.address).is_none())
            .count();
        if new_members == 0 && removals.len() == self.validators.len() {
            return Err(ValidatorSetError::Empty);
        }
        let mut removed: u64 = 0;
        for r in &removals {
            let index =
                self.index_of(&r.address)
                    .ok_or_else(|| ValidatorSetError::UnknownRemoval {
                        address: hex(&r.address),
                    })?;
            removed += self.power(index);
        }
        // CometBFT's verifyUpdates: the running total, in increasing order of change, never
        // passes the cap (removals counted first).
        let delta = |u: &Validator| -> i128 {
            let old = self.index_of(&u.address).map_or(0, |i| self.power(i));
            i128::from(u.power) - i128::from(old)
        };
        let mut by_delta: Vec<&&Validator> = updates.iter().collect();
        by_delta.sort_by_key(|u| delta(u));
        let mut running = i128::from(self.total_power) - i128::from(removed);
        for u in by_delta {
            running += delta(u);
            if running > i128::from(MAX_TOTAL_VOTING_POWER) {
                return Err(ValidatorSetError::TotalPowerTooLarge);
            }
        }
        let before_removals = i64::try_from(running + i128::from(removed))
            .map_err(|_| ValidatorSetError::TotalPowerTooLarge)?;
        let mut merged: Vec<Validator> = self
            .validators
            .iter()
            .filter(|v| !changes.iter().any(|c| c.address == v.address))
            .cloned()
            .collect();
        for u in &updates {
            let priority = match self.index_of(&u.address) {
                Some(i) => self.validators[i.as_usize()].priority,
                None => -(before_removals + (before_removals >> 3)),
            };
            merged.push(Validator {
                address: u.address.clone(),
                power: u.power,
                priority,
            });
        }
        let mut set = ValidatorSet::checked(merged, ValidatorIndex(0))?;
        set.rescale_and_centre();
        Ok(set)
    }

    /// The validators in set order.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Never true: a set has at least one validator.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// The validator at `index`, if there is one.
    pub fn get(&self, index: ValidatorIndex) -> Option<&Validator> {
        self.validators.get(index.as_usize())
    }

    /// The index of the validator with this address.
    pub fn index_of(&self, address: &[u8]) -> Option<ValidatorIndex> {
        self.validators
            .iter()
            .position(|v| v.address == address)
            .map(|i| ValidatorIndex(i as u32))
    }

    /// Voting power of `index` (0 outside the set).
    pub fn power(&self, index: ValidatorIndex) -> u64 {
        self.get(index).map_or(0, |v| v.power)
    }

    /// Sum of all voting power.
    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    /// `2f+1` of the paper: strictly more than two thirds of the total power.
    pub fn is_quorum(&self, power: u64) -> bool {
        3 * u128::from(power) > 2 * u128::from(self.total_power)
    }

    /// `f+1` of the paper: strictly more than one third of the total power, so at least one
    /// honest validator is among them.
    pub fn is_one_third(&self, power: u64) -> bool {
        3 * u128::from(power) > u128::from(self.total_power)
    }

    /// The proposer of round 0 of this height.
    pub fn proposer(&self) -> ValidatorIndex {
        self.proposer
    }

    /// The proposer of `round` of this height (CometBFT's `CopyIncrementProposerPriority`).
    pub fn proposer_in_round(&self, round: Round) -> ValidatorIndex {
        ProposerSchedule::new(self).proposer(round)
    }

    /// The set of the next height when the membership does not change (CometBFT:
    /// `state.NextValidators.Copy().IncrementProposerPriority(1)`).
    pub fn next_height(&self) -> ValidatorSet {
        let mut next = self.clone();
        next.increment_proposer_priority(1);
        next
    }

    /// CometBFT's `IncrementProposerPriority(times)`: rescale and centre once, then run `times`
    /// weighted-round-robin steps; the last step's winner becomes the proposer.
    fn increment_proposer_priority(&mut self, times: u32) {
        self.rescale_and_centre();
        for _ in 0..times {
            self.proposer = self.step_proposer_priority();
        }
    }

    fn rescale_and_centre(&mut self) {
        let window = PRIORITY_WINDOW_SIZE_FACTOR.saturating_mul(self.total_power as i64);
        let max = self
            .validators
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(0);
        let min = self
            .validators
            .iter()
            .map(|v| v.priority)
            .min()
            .unwrap_or(0);
        let diff = max.saturating_sub(min);
        if window > 0 && diff > window {
            let ratio = (diff + window - 1) / window;
            for v in &mut self.validators {
                v.priority /= ratio;
            }
        }
        let sum: i128 = self.validators.iter().map(|v| i128::from(v.priority)).sum();
        let avg = sum.div_euclid(self.validators.len() as i128);
        let avg = i64::try_from(avg).unwrap_or(if avg < 0 { i64::MIN } else { i64::MAX });
        for v in &mut self.validators {
            v.priority = v.priority.saturating_sub(avg);
        }
    }

    fn step_proposer_priority(&mut self) -> ValidatorIndex {
        for v in &mut self.validators {
            v.priority = v.priority.saturating_add(v.power as i64);
        }
        let mut best = 0usize;
        for (i, v) in self.validators.iter().enumerate().skip(1) {
            let b = &self.validators[best];
            if v.priority > b.priority || (v.priority == b.priority && v.address < b.address) {
                best = i;
            }
        }
        let total = self.total_power as i64;
        let winner = &mut self.validators[best];
        winner.priority = winner.priority.saturating_sub(total);
        ValidatorIndex(best as u32)
    }
}

/// Proposers of the rounds of one height, computed as CometBFT does
/// (`CopyIncrementProposerPriority(round)` for round > 0) and memoised, since the core asks
/// for the same rounds again and again.
#[derive(Clone, Debug)]
pub(crate) struct ProposerSchedule {
    round0: ValidatorIndex,
    /// The set after rescale/centre and `stepped` further steps.
    cursor: ValidatorSet,
    stepped: u32,
    by_round: Vec<ValidatorIndex>,
}

/// Rounds above this are served by stepping a fresh copy, so that a node pushed to a huge round
/// does not keep a huge memo table.
const MEMO_ROUNDS: u32 = 4096;

impl ProposerSchedule {
    pub(crate) fn new(set: &ValidatorSet) -> Self {
        let mut cursor = set.clone();
        cursor.rescale_and_centre();
        ProposerSchedule {
            round0: set.proposer,
            cursor,
            stepped: 0,
            by_round: vec![set.proposer],
        }
    }

    /// `proposer(h, r)`.
    pub(crate) fn proposer(&mut self, round: Round) -> ValidatorIndex {
        if round.0 == 0 {
            return self.round0;
        }
        if let Some(p) = self.by_round.get(round.0 as usize) {
            return *p;
        }
        if round.0 > MEMO_ROUNDS {
            let mut copy = self.cursor.clone();
            copy.stepped_to(self.stepped, round.0);
            return copy.proposer;
        }
        while self.stepped < round.0 {
            self.cursor.proposer = self.cursor.step_proposer_priority();
            self.stepped += 1;
            self.by_round.push(self.cursor.proposer);
        }
        self.cursor.proposer
    }
}

impl ValidatorSet {
    fn stepped_to(&mut self, from: u32, to: u32) {
        for _ in from..to {
            self.proposer = self.step_proposer_priority();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(set: &ValidatorSet, idx: ValidatorIndex) -> String {
        String::from_utf8(set.validators()[idx.as_usize()].address.clone()).unwrap_or_default()
    }

    /// CometBFT `TestProposerSelection1`: the same 99 proposers in the same order.
    #[test]
    fn proposer_sequence_matches_cometbft_test_vector() {
        let expected =
            "foo baz foo bar foo foo baz foo bar foo foo baz foo foo bar foo baz foo foo bar \
foo foo baz foo bar foo foo baz foo bar foo foo baz foo foo bar foo baz foo foo bar \
foo baz foo foo bar foo baz foo foo bar foo baz foo foo foo baz bar foo foo foo baz \
foo bar foo foo baz foo bar foo foo baz foo bar foo foo baz foo bar foo foo baz foo \
foo bar foo baz foo foo bar foo baz foo foo bar foo baz foo foo";
        let mut set = ValidatorSet::genesis(vec![
            Validator::new(*b"foo", 1000),
            Validator::new(*b"bar", 300),
            Validator::new(*b"baz", 330),
        ])
        .unwrap();
        let mut got = Vec::new();
        for _ in 0..99 {
            got.push(names(&set, set.proposer()));
            set = set.next_height();
        }
        assert_eq!(got.join(" "), expected);
    }

    #[test]
    fn round_schedule_equals_copy_increment_by_round() {
        let set = ValidatorSet::genesis(vec![
            Validator::new(*b"a", 7),
            Validator::new(*b"b", 3),
            Validator::new(*b"c", 1),
            Validator::new(*b"d", 5),
        ])
        .unwrap();
        let mut schedule = ProposerSchedule::new(&set);
        for r in [0u32, 1, 2, 3, 9, 5, 17, 16] {
            let mut copy = set.clone();
            if r > 0 {
                copy.increment_proposer_priority(r);
            }
            assert_eq!(schedule.proposer(Round(r)), copy.proposer(), "round {r}");
        }
        let mut copy = set.clone();
        copy.increment_proposer_priority(MEMO_ROUNDS + 10);
        assert_eq!(schedule.proposer(Round(MEMO_ROUNDS + 10)), copy.proposer());
    }

    #[test]
    fn equal_power_round_robin_visits_everyone() {
        let set =
            ValidatorSet::genesis((0u8..4).map(|i| Validator::new([i], 1)).collect()).unwrap();
        let mut schedule = ProposerSchedule::new(&set);
        let mut seen: Vec<u32> = (0..4).map(|r| schedule.proposer(Round(r)).0).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }

    fn set_of(entries: &[(&[u8], u64)]) -> ValidatorSet {
        ValidatorSet::genesis(
            entries
                .iter()
                .map(|(a, p)| Validator::new(*a, *p))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn changes_add_update_and_remove_as_cometbft_does() {
        let set = set_of(&[(b"a", 10), (b"b", 10), (b"c", 10), (b"d", 10)]);
        let changed = set
            .with_changes(&[
                Validator::new(*b"e", 30),
                Validator::new(*b"b", 0),
                Validator::new(*b"c", 20),
            ])
            .unwrap();
        let order: Vec<(&[u8], u64)> = changed
            .validators()
            .iter()
            .map(|v| (v.address.as_slice(), v.power))
            .collect();
        assert_eq!(
            order,
            vec![(&b"e"[..], 30), (b"c", 20), (b"a", 10), (b"d", 10)],
            "power first, then address"
        );
        assert_eq!(changed.total_power(), 70);
        // The newcomer starts far behind: -1.125 x 80 (the total before removals), then
        // centred with the rest; it proposes after those already waiting.
        let newcomer = changed.get(changed.index_of(b"e").unwrap()).unwrap();
        assert!(
            changed
                .validators()
                .iter()
                .all(|v| v.priority >= newcomer.priority),
            "{changed:?}"
        );
        let sum: i64 = changed.validators().iter().map(|v| v.priority).sum();
        assert!(sum.abs() < 4, "centred: {changed:?}");
        // A changed validator keeps its priority (before centring): c keeps its order
        // relative to a, whose priority did not change.
        let prio = |s: &ValidatorSet, a: &[u8]| s.get(s.index_of(a).unwrap()).unwrap().priority;
        assert_eq!(
            prio(&set, b"c") - prio(&set, b"a"),
            prio(&changed, b"c") - prio(&changed, b"a")
        );
        // Nothing changes on an error.
        assert_eq!(
            set.with_changes(&[Validator::new(*b"z", 0)]),
            Err(ValidatorSetError::UnknownRemoval {
                address: "7A".into()
            })
        );
        assert!(matches!(
            set.with_changes(&[Validator::new(*b"a", 5), Validator::new(*b"a", 6)]),
            Err(ValidatorSetError::DuplicateAddress { .. })
        ));
        let everyone: Vec<Validator> = [b"a", b"b", b"c", b"d"]
            .iter()
            .map(|a| Validator::new(**a, 0))
            .collect();
        assert_eq!(set.with_changes(&everyone), Err(ValidatorSetError::Empty));
        assert!(matches!(
            set.with_changes(&[Validator::new(*b"e", MAX_TOTAL_VOTING_POWER)]),
            Err(ValidatorSetError::TotalPowerTooLarge)
        ));
        // Removing as much as is added in the same change stays within the cap.
        let big = set_of(&[(b"a", MAX_TOTAL_VOTING_POWER - 10), (b"b", 10)]);
        assert!(big
            .with_changes(&[
                Validator::new(*b"a", 0),
                Validator::new(*b"c", MAX_TOTAL_VOTING_POWER - 10)
            ])
            .is_ok());
        // No change at all is the same set.
        assert_eq!(
            set.with_changes(&[]).unwrap().validators(),
            {
                let mut same = set.clone();
                same.rescale_and_centre();
                same
            }
            .validators()
        );
    }

    #[test]
    fn rejects_bad_sets_with_named_errors() {
        assert_eq!(ValidatorSet::genesis(vec![]), Err(ValidatorSetError::Empty));
        assert!(matches!(
            ValidatorSet::genesis(vec![Validator::new(*b"a", 0)]),
            Err(ValidatorSetError::ZeroPower { .. })
        ));
        assert!(matches!(
            ValidatorSet::genesis(vec![Validator::new(*b"a", 1), Validator::new(*b"a", 2)]),
            Err(ValidatorSetError::DuplicateAddress { .. })
        ));
        assert_eq!(
            ValidatorSet::genesis(vec![
                Validator::new(*b"a", MAX_TOTAL_VOTING_POWER),
                Validator::new(*b"b", 1)
            ]),
            Err(ValidatorSetError::TotalPowerTooLarge)
        );
        assert_eq!(
            ValidatorSet::with_priorities(vec![Validator::new(*b"a", 1)], ValidatorIndex(3)),
            Err(ValidatorSetError::ProposerOutOfRange(3))
        );
    }

    #[test]
    fn quorum_thresholds_are_strict() {
        let set =
            ValidatorSet::genesis((0u8..4).map(|i| Validator::new([i], 1)).collect()).unwrap();
        assert!(!set.is_quorum(2));
        assert!(set.is_quorum(3));
        assert!(!set.is_one_third(1));
        assert!(set.is_one_third(2));
        // One validator holding 3 of 4 power is a quorum alone, but not 2 of 4.
        let set = ValidatorSet::genesis(vec![Validator::new(*b"big", 3), Validator::new(*b"s", 1)])
            .unwrap();
        assert!(set.is_quorum(3));
        assert!(!set.is_quorum(2));
        assert!(set.is_one_third(2));
    }
}
