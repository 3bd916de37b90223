//! The `bulwark` binary's library: CometBFT-layout homes and their configuration ([`home`]) and
//! the driver that wires the validator to sockets, timers, signals and RPC ([`run`]). The CLI
//! is `main.rs`; as PID 1 of the measured guest it hands [`run::start`] to `bulwark-boot`.

pub mod home;
pub mod run;
