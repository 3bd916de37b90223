//! The `bulwark` binary's library: CometBFT-layout homes and their configuration ([`home`]), the
//! genesis ceremony (enrollments, assembly, re-verification: [`ceremony`]), what PID 1 of the
//! measured guest does with the host's launch inputs ([`guest`], [`launch`]) and
//! the driver that wires the validator to sockets, timers, signals and RPC ([`run`]). The CLI
//! is `main.rs`; as PID 1 of the measured guest it hands [`run::start`] to `bulwark-boot`.

pub use bulwark_identity::ceremony;
pub mod guest;
pub mod home;
pub mod launch;
pub mod run;
