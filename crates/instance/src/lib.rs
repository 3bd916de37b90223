//! One signing instance per validator key at every height, ordered by the chain itself.
//!
//! A validator's key can run in more than one place at once: the host may boot a copy of its
//! disk (a clone), or an older copy after it ran on (a rollback: the copy has forgotten what it
//! signed). SEV-SNP has no monotonic counter, so the guest cannot tell a fresh disk from a
//! stale one. The chain can: every boot of a validator is a new **instance** (32 random bytes,
//! never stored), which signs a **claim** (its validator, the instance, the first height it may
//! be included at) with the consensus key and sends it to every peer as a transaction. A block
//! carries claims at the front of its data, at most one per validator; the **register** in the
//! chain state records, per validator, the instance of the last claim committed and the height
//! of its block. The rule the engine keeps:
//!
//! > an instance signs (proposes, prevotes, precommits) at height `h` only if the register as
//! > of the end of height `h - 1` names it, or, for a genesis validator within the network's
//! > first [`BOOTSTRAP_HEIGHTS`] heights, names no instance of it yet and validators holding
//! > (with it) more than two thirds of the power have acknowledged this instance ([`Ack`]:
//! > "the network is in its first heights and my register names no instance of yours").
//!
//! Safety. Two instances of one key never sign at the same height: the register is part of
//! the decided chain, so every instance at height `h` reads the same holder. An instance that
//! booted later commits its claim in a block `c` made after it booted; every signature of an
//! instance that stopped before (a rollback's past) is at a height the network had reached
//! when it stopped plus one, so at most `c`, and the new instance signs only above `c`. A claim
//! is valid only for [`CLAIM_TTL`] heights after its `not_before`, and only if that is above
//! the current holder's claim height, so an old claim replayed by the host cannot take the
//! key back for a dead instance.
//!
//! Liveness. A restarted instance signs again once its claim commits, which takes blocks
//! decided without it: within a few heights when the other validators alone hold more than
//! two thirds of the power, never otherwise (it waits, safety first, and says so).
//!
//! Limit. Before a genesis validator's first claim commits (normally within the network's
//! first one or two heights), its instances may sign unclaimed once acknowledged. A validator
//! acknowledges one instance per validator (while it runs), only while its own next height is
//! among the first ones and its register names no instance of the asker, and never itself;
//! but the asker's own power counts, and so does an acknowledgement from any key. So
//! copies of enrolled disks are refused by honest validators past the launch, yet: two copies
//! of one enrolled disk booted together at launch can both sign; and copies of the enrolled
//! disks of several validators, booted by hosts that together with byzantine validators hold
//! more than two thirds of the power and kept apart from the network, acknowledge each other
//! and can sign a second chain from height 1. The way to close it (name each validator's
//! launch instance in the genesis ceremony, so that no instance ever signs unclaimed) is
//! open. After the window an unclaimed validator (one that joined later, or whose claims
//! were kept out of blocks) signs only after its claim commits. A halted network (validators
//! holding a third of the power or more restarted together, or restarted while byzantine
//! validators withhold their votes) stays halted: the way out is a new network (a new
//! genesis). An instance that held the key and sees another instance's claim commit stops for
//! good (the other one is newer); it never claims back, so two live clones cannot take turns.

mod ack;
mod claim;
mod pool;
mod register;
mod signed;
mod signer;

pub use ack::{Ack, AckError, ACK_SIGNING_DOMAIN, ACK_TX_MAGIC};
pub use claim::{Claim, ClaimError, CLAIM_TTL, SIGNING_DOMAIN, TX_MAGIC};
pub use pool::Pool;
pub use register::{
    finalize_without_claims, merge_results, split_claims, Authorization, Bootstrap, Holder,
    Register, BOOTSTRAP_HEIGHTS,
};
pub use signer::{ClaimAction, Signer};
