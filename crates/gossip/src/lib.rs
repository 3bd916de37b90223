//! What travels between validators for the height in progress, without I/O: blocks as 64 KiB
//! parts and their assembly from announced part sets (`proposal`), and what a stuck peer is
//! re-sent (`relay`), how far the peers are (`heights`) and whom a node behind asks for decided
//! blocks (`sync`). The engine (`bulwark-node`) uses
//! them and re-exports them.

pub mod heights;
pub mod proposal;
pub mod relay;
pub mod sync;
