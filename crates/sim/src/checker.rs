//! The invariants every run must keep, checked as the run goes: agreement, validity, no honest
//! double-sign, and (after GST, within the fault bound) progress.

use bulwark_consensus::{Height, Round, ValueId, VoteKind};
use std::collections::BTreeMap;
use std::fmt;

/// A broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two honest validators decided different values at one height.
    Agreement {
        /// The height.
        height: Height,
        /// One validator and its value.
        first: (usize, ValueId),
        /// Another validator and its different value.
        second: (usize, ValueId),
    },
    /// An honest validator decided a value that is not valid.
    Validity {
        /// Who decided.
        node: usize,
        /// The height.
        height: Height,
        /// The invalid value.
        value: ValueId,
    },
    /// An honest validator's core asked to sign two different votes (or proposals) for the
    /// same height, round and step.
    DoubleSign {
        /// Who.
        node: usize,
        /// The height.
        height: Height,
        /// The round.
        round: Round,
        /// Which message.
        step: &'static str,
        /// The first value.
        first: Option<ValueId>,
        /// The conflicting value.
        second: Option<ValueId>,
    },
    /// An honest validator decided twice at one height, differently.
    Redecided {
        /// Who.
        node: usize,
        /// The height.
        height: Height,
    },
    /// A live honest validator did not reach the target height by the deadline.
    NoProgress {
        /// Who.
        node: usize,
        /// The height it reached.
        reached: u64,
        /// The height it should have reached.
        target: u64,
    },
    /// The run did not settle within its event budget (a livelock).
    EventBudgetExceeded {
        /// Events processed.
        events: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Collects observations and the violations they reveal.
#[derive(Debug, Default)]
pub struct Checker {
    /// height → (first honest decider, value).
    decided: BTreeMap<Height, (usize, ValueId)>,
    /// (node, height) → value: what each honest node decided.
    by_node: BTreeMap<(usize, Height), ValueId>,
    /// (node, height, round, step) → value signed.
    signed: BTreeMap<(usize, Height, Round, u8), Option<ValueId>>,
    violations: Vec<Violation>,
}

/// The step a signature belongs to, for the double-sign check.
#[derive(Clone, Copy, Debug)]
pub enum SignStep {
    /// A proposal.
    Proposal,
    /// A vote.
    Vote(VoteKind),
}

impl SignStep {
    fn code(self) -> (u8, &'static str) {
        match self {
            SignStep::Proposal => (1, "proposal"),
            SignStep::Vote(VoteKind::Prevote) => (2, "prevote"),
            SignStep::Vote(VoteKind::Precommit) => (3, "precommit"),
        }
    }
}

impl Checker {
    /// A checker with nothing observed.
    pub fn new() -> Self {
        Self::default()
    }

    /// An honest node decided `value` at `height`; `valid` is the validity predicate's answer.
    pub fn on_decide(&mut self, node: usize, height: Height, value: ValueId, valid: bool) {
        if !valid {
            self.violations.push(Violation::Validity {
                node,
                height,
                value,
            });
        }
        match self.by_node.insert((node, height), value) {
            Some(previous) if previous != value => {
                self.violations.push(Violation::Redecided { node, height })
            }
            _ => {}
        }
        match self.decided.get(&height) {
            None => {
                self.decided.insert(height, (node, value));
            }
            Some((first_node, first_value)) if *first_value != value => {
                self.violations.push(Violation::Agreement {
                    height,
                    first: (*first_node, *first_value),
                    second: (node, value),
                });
            }
            Some(_) => {}
        }
    }

    /// An honest node's core asked to sign a message.
    pub fn on_sign(
        &mut self,
        node: usize,
        height: Height,
        round: Round,
        step: SignStep,
        value: Option<ValueId>,
    ) {
        let (code, name) = step.code();
        match self.signed.get(&(node, height, round, code)) {
            None => {
                self.signed.insert((node, height, round, code), value);
            }
            Some(first) if *first != value => self.violations.push(Violation::DoubleSign {
                node,
                height,
                round,
                step: name,
                first: *first,
                second: value,
            }),
            Some(_) => {}
        }
    }

    /// Records a violation found elsewhere (progress, budget).
    pub fn report(&mut self, violation: Violation) {
        self.violations.push(violation);
    }

    /// Signatures older than `height` can no longer conflict with anything new; forgetting them
    /// keeps long runs small.
    pub fn forget_signatures_below(&mut self, height: Height) {
        self.signed.retain(|(_, h, _, _), _| *h >= height);
    }

    /// Violations so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Consumes the checker.
    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: u8) -> ValueId {
        ValueId([b; 32])
    }

    #[test]
    fn flags_two_honest_nodes_deciding_differently() {
        let mut c = Checker::new();
        c.on_decide(0, Height(1), v(2), true);
        c.on_decide(1, Height(1), v(2), true);
        assert!(c.violations().is_empty());
        c.on_decide(2, Height(1), v(4), true);
        assert!(matches!(c.violations(), [Violation::Agreement { .. }]));
    }

    #[test]
    fn flags_an_invalid_decision() {
        let mut c = Checker::new();
        c.on_decide(0, Height(1), v(1), false);
        assert!(matches!(c.violations(), [Violation::Validity { .. }]));
    }

    #[test]
    fn flags_a_conflicting_signature_but_not_a_repeated_one() {
        let mut c = Checker::new();
        let pv = SignStep::Vote(VoteKind::Prevote);
        c.on_sign(0, Height(1), Round(0), pv, Some(v(2)));
        c.on_sign(0, Height(1), Round(0), pv, Some(v(2)));
        c.on_sign(
            0,
            Height(1),
            Round(0),
            SignStep::Vote(VoteKind::Precommit),
            None,
        );
        c.on_sign(1, Height(1), Round(0), pv, None);
        assert!(c.violations().is_empty());
        c.on_sign(0, Height(1), Round(0), pv, None);
        assert!(matches!(
            c.violations(),
            [Violation::DoubleSign {
                step: "prevote",
                ..
            }]
        ));
    }

    #[test]
    fn flags_a_node_that_changes_its_decision() {
        let mut c = Checker::new();
        c.on_decide(0, Height(3), v(2), true);
        c.on_decide(0, Height(3), v(6), true);
        assert!(c
            .violations()
            .iter()
            .any(|x| matches!(x, Violation::Redecided { node: 0, .. })));
    }
}
