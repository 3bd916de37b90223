//! One instance's side of the rule: whether it may sign at the height in progress, and when
//! it must claim its validator's key (again).

use crate::ack::Ack;
use crate::claim::{Claim, CLAIM_TTL};
use crate::register::BOOTSTRAP_HEIGHTS;
use crate::register::{Authorization, Bootstrap, Register};
use bulwark_types::tendermint::validator;
use std::collections::BTreeMap;

/// Re-send a pending claim to every peer this often (heights), for peers that connected after
/// it was sent.
const RESEND_EVERY: u64 = 4;

/// This boot's instance of a validator.
#[derive(Debug)]
pub struct Signer {
    instance: [u8; 32],
    /// The claim waiting for a block.
    pending: Option<Claim>,
    /// Whether this instance has held the key (then another instance's claim stops it for
    /// good: that one is newer).
    held: bool,
    /// What the register said last, for saying so when it changes.
    last: Option<Authorization>,
    /// Launch acknowledgements of this instance: per acking validator, its height then.
    acks: BTreeMap<[u8; 20], u64>,
}

/// What the engine should do after a height committed.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimAction {
    /// Nothing.
    None,
    /// Sign a new claim with this `not_before` and send it.
    Claim(u64),
    /// Send the pending claim again.
    Resend(Claim),
}

impl Signer {
    /// A new instance: `instance` must be fresh random bytes of this boot.
    pub fn new(instance: [u8; 32]) -> Self {
        Signer {
            instance,
            pending: None,
            held: false,
            last: None,
            acks: BTreeMap::new(),
        }
    }

    /// Records `ack` if it acknowledges this instance of `me` from within the first heights
    /// of a chain starting at `initial_height` (its signature already checked). Returns
    /// whether it was kept.
    pub fn acknowledged(&mut self, ack: &Ack, me: &[u8; 20], initial_height: u64) -> bool {
        let fits = ack.asker == *me
            && ack.acker != *me
            && ack.instance == self.instance
            && ack.height < initial_height.saturating_add(BOOTSTRAP_HEIGHTS);
        if fits {
            self.acks.insert(ack.acker, ack.height);
        }
        fits
    }

    /// Whether validators of `validators` holding, with `me`, more than two thirds of its
    /// power have acknowledged this instance.
    pub fn launch_confirmed(&self, validators: &validator::Set, me: &[u8; 20]) -> bool {
        let mut total: u128 = 0;
        let mut confirmed: u128 = 0;
        for v in validators.validators() {
            let power = u128::from(v.power.value());
            total += power;
            let address: &[u8] = v.address.as_bytes();
            if address == me || self.acks.keys().any(|a| a.as_slice() == address) {
                confirmed += power;
            }
        }
        3 * confirmed > 2 * total
    }

    /// The instance's bytes.
    pub fn instance(&self) -> &[u8; 32] {
        &self.instance
    }

    /// What the register says of this instance of `validator`.
    pub fn authorization(
        &self,
        register: &Register,
        validator: &[u8; 20],
        at: Bootstrap,
    ) -> Authorization {
        register.authorization(validator, &self.instance, at)
    }

    /// Whether this instance may sign now (the register as of the last committed block), and a
    /// line to log when that changed since the last call.
    pub fn may_sign(
        &mut self,
        register: &Register,
        validator: &[u8; 20],
        at: Bootstrap,
    ) -> (bool, Option<String>) {
        let now = self.authorization(register, validator, at);
        if let Authorization::Holder { .. } = now {
            self.held = true;
            self.pending = None;
        }
        let changed = self.last.as_ref() != Some(&now);
        self.last = Some(now.clone());
        let me = hex::encode(&self.instance[..4]);
        let line = changed.then(|| match &now {
            Authorization::Unclaimed => format!(
                "instance {me}: signing before any claim of this validator committed (the network's first heights)"
            ),
            Authorization::Unconfirmed => format!(
                "instance {me}: not signing yet: waiting for validators holding more than two thirds of the power to acknowledge that the network is in its first heights and holds no claim of this validator (a copy of an enrolled disk booted after launch never gets them)"
            ),
            Authorization::UnclaimedLate => format!(
                "instance {me}: not signing until this instance's claim commits (no claim of this validator has, and the network is past its first heights); this needs blocks the other validators decide without this one"
            ),
            Authorization::Holder { since } => {
                format!("instance {me}: signing; this instance's claim committed at height {since}")
            }
            Authorization::Elsewhere { instance, since } if self.held => format!(
                "instance {me}: STOPPED SIGNING for good: another instance of this validator ({instance}) claimed its key at height {since}; one of them is a copy of this VM's disk: stop it, or restart this one to take the key back"
            ),
            Authorization::Elsewhere { instance, since } => format!(
                "instance {me}: not signing until this instance's claim commits (instance {instance} claimed the key at height {since}); this needs blocks the other validators decide without this one"
            ),
        });
        (now.may_sign(), line)
    }

    /// After a height committed (`next.height` is the one starting): what to do about this
    /// instance's claim.
    pub fn after_commit(
        &mut self,
        register: &Register,
        validator: &[u8; 20],
        next: Bootstrap,
    ) -> ClaimAction {
        let next_height = next.height;
        match self.authorization(register, validator, next) {
            Authorization::Holder { .. } => {
                self.held = true;
                self.pending = None;
                return ClaimAction::None;
            }
            Authorization::Elsewhere { .. } if self.held => return ClaimAction::None,
            _ => {}
        }
        match &self.pending {
            Some(c)
                if next_height <= c.not_before.saturating_add(CLAIM_TTL)
                    && c.check_timing(next_height.max(c.not_before), register)
                        .is_ok() =>
            {
                if next_height >= c.not_before && (next_height - c.not_before) % RESEND_EVERY == 0 {
                    ClaimAction::Resend(c.clone())
                } else {
                    ClaimAction::None
                }
            }
            _ => ClaimAction::Claim(next_height),
        }
    }

    /// Records the claim made for [`ClaimAction::Claim`].
    pub fn claimed(&mut self, claim: Claim) {
        self.pending = Some(claim);
    }

    /// The claim waiting for a block.
    pub fn pending(&self) -> Option<&Claim> {
        self.pending.as_ref()
    }
}
