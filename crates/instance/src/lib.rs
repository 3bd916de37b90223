//! One signing instance per validator key at every height, ordered by the chain itself.
//!
//! A validator's key can run in more than one place at once: the host may boot a copy of its
//! disk (a clone), or an older copy after it ran on (a rollback: the copy has forgotten what it
//! signed). SEV-SNP has no monotonic counter, so the guest cannot tell a fresh disk from a
//! stale one. The chain can: every boot of a validator is a new **instance** (32 random bytes,
//! never stored), except the boot that enrolled it, whose instance its enrollment publishes and
//! the genesis therefore names: its **launch instance** (in a VM, the enrolling boot running
//! on; a development process-mode home keeps it in a file until its first start takes it). A later instance signs a **claim**
//! (its validator, the instance, the first height it may be included at) with the consensus key
//! and sends it to every peer as a transaction. A block carries claims at the front of its
//! data, at most one per validator; the **register** in the chain state records, per
//! validator, the instance of the last claim committed and the height of its block, and starts
//! as the genesis's launch instances, as if claimed in the block before the first. The rule the
//! engine keeps:
//!
//! > an instance signs (proposes, prevotes, precommits) at height `h` only if the register as
//! > of the end of height `h - 1` names it.
//!
//! Safety. Two instances of one key never sign at the same height: the register is part of
//! the decided chain, so every instance at height `h` reads the same holder. The launch
//! instance is one running VM (a copy of its disk boots as another instance, with bytes of its
//! own). An instance that booted later commits its claim in a block `c` made after it booted;
//! every signature of an instance that stopped before (a rollback's past, the launch
//! instance's included) is at a height the network had reached when it stopped plus one, so at
//! most `c`, and the new instance signs only above `c`. A claim is valid only for
//! [`CLAIM_TTL`] heights after its `not_before`, and only if that is above the current holder's
//! claim height, so an old claim replayed by the host cannot take the key back for a dead
//! instance.
//!
//! Liveness. A restarted instance signs again once its claim commits, which takes blocks
//! decided without it: within a few heights when the other validators alone hold more than
//! two thirds of the power, never otherwise (it waits, safety first, and says so). A halted
//! network (validators holding a third of the power or more restarted together, or restarted
//! while byzantine validators withhold their votes) stays halted: the way out is a new network
//! (a new genesis). A validator the genesis names no launch instance of signs only after its
//! claim commits. An instance that held the key and sees another instance's claim commit stops
//! for good (the other one is newer); it never claims back, so two live clones cannot take
//! turns.

mod claim;
mod pool;
mod register;
mod signed;
mod signer;

pub use claim::{Claim, ClaimError, CLAIM_TTL, SIGNING_DOMAIN, TX_MAGIC};
pub use pool::Pool;
pub use register::{
    finalize_without_claims, merge_results, split_claims, Authorization, Holder, Register,
};
pub use signer::{ClaimAction, Signer};
