//! One instance's side of the rule: whether it may sign at the height in progress, and when
//! it must claim its validator's key (again).

use crate::claim::{Claim, CLAIM_TTL};
use crate::register::{Authorization, Register};

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
    /// A new instance: `instance` must be fresh random bytes of this boot (or, at the boot
    /// that enrolled the validator and runs on, the launch instance its enrollment published).
    pub fn new(instance: [u8; 32]) -> Self {
        Signer {
            instance,
            pending: None,
            held: false,
            last: None,
        }
    }

    /// The instance's bytes.
    pub fn instance(&self) -> &[u8; 32] {
        &self.instance
    }

    /// What the register says of this instance of `validator`.
    pub fn authorization(&self, register: &Register, validator: &[u8; 20]) -> Authorization {
        register.authorization(validator, &self.instance)
    }

    /// Whether this instance may sign now (the register as of the last committed block), and a
    /// line to log when that changed since the last call.
    pub fn may_sign(
        &mut self,
        register: &Register,
        validator: &[u8; 20],
    ) -> (bool, Option<String>) {
        let now = self.authorization(register, validator);
        if let Authorization::Holder { .. } = now {
            self.held = true;
            self.pending = None;
        }
        let changed = self.last.as_ref() != Some(&now);
        self.last = Some(now.clone());
        let me = hex::encode(&self.instance[..4]);
        let line = changed.then(|| match &now {
            Authorization::Unclaimed => format!(
                "instance {me}: not signing until this instance's claim commits (no instance of this validator holds its key); this needs blocks the other validators decide without this one"
            ),
            Authorization::Holder { since } => format!(
                "instance {me}: signing; this instance holds the key since height {since} (its claim's block; for the launch instance, the one before the chain's first)"
            ),
            Authorization::Elsewhere { instance, since } if self.held => format!(
                "instance {me}: STOPPED SIGNING for good: another instance of this validator ({instance}) holds its key since height {since}; one of them is a copy of this VM's disk: stop it, or restart this one to take the key back"
            ),
            Authorization::Elsewhere { instance, since } => format!(
                "instance {me}: not signing until this instance's claim commits (instance {instance} holds the key since height {since}); this needs blocks the other validators decide without this one"
            ),
        });
        (now.may_sign(), line)
    }

    /// After a height committed (`next_height` is the one starting): what to do about this
    /// instance's claim.
    pub fn after_commit(
        &mut self,
        register: &Register,
        validator: &[u8; 20],
        next_height: u64,
    ) -> ClaimAction {
        match self.authorization(register, validator) {
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
