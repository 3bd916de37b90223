//! Claims waiting for a block: at most one per validator (the newest), each checked before it
//! is kept.

use crate::claim::{Claim, ClaimError, CLAIM_TTL};
use crate::register::Register;
use bulwark_types::tendermint::validator;
use std::collections::BTreeMap;

/// Claims not yet in a block.
#[derive(Debug, Default)]
pub struct Pool {
    claims: BTreeMap<[u8; 20], Claim>,
}

impl Pool {
    /// Keeps `claim` for the block of `next_height` onwards if its signature verifies, it is
    /// neither expired, stale nor too far ahead, and it is newer than the one kept for its
    /// validator. Returns whether it was kept.
    pub fn insert(
        &mut self,
        claim: Claim,
        chain_id: &str,
        validators: &validator::Set,
        next_height: u64,
        register: &Register,
    ) -> Result<bool, ClaimError> {
        if claim.not_before > next_height.saturating_add(CLAIM_TTL) {
            return Err(ClaimError::Expired {
                validator: claim.validator_hex(),
                not_before: claim.not_before,
                height: next_height,
            });
        }
        claim.check_timing(next_height.max(claim.not_before), register)?;
        if self
            .claims
            .get(&claim.validator)
            .is_some_and(|kept| kept.not_before >= claim.not_before)
        {
            return Ok(false);
        }
        claim.verify_signature(chain_id, validators)?;
        self.claims.insert(claim.validator, claim);
        Ok(true)
    }

    /// The claims a block of `height` may carry, as transactions: of validators of
    /// `validators` only (a validator that left makes no block invalid).
    pub fn reap(
        &self,
        height: u64,
        register: &Register,
        validators: &validator::Set,
    ) -> Vec<Vec<u8>> {
        let member = |c: &Claim| {
            validators
                .validators()
                .iter()
                .any(|v| v.address.as_bytes() == c.validator)
        };
        self.claims
            .values()
            .filter(|c| c.check_timing(height, register).is_ok() && member(c))
            .map(Claim::to_tx)
            .collect()
    }

    /// Forgets claims that can no longer be included from `next_height` on.
    pub fn prune(&mut self, next_height: u64, register: &Register) {
        self.claims.retain(|_, c| {
            next_height <= c.not_before.saturating_add(CLAIM_TTL)
                && c.check_timing(next_height.max(c.not_before), register)
                    .is_ok()
        });
    }

    /// Whether the pool keeps exactly `claim` (so its signature was checked).
    pub fn holds(&self, claim: &Claim) -> bool {
        self.claims.get(&claim.validator) == Some(claim)
    }

    /// Claims kept.
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}
