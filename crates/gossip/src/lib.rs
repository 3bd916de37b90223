//! What travels between validators for the height in progress, without I/O: blocks as 64 KiB
//! parts and their assembly from announced part sets (`proposal`), and what a stuck peer is
//! re-sent (`relay`). The engine (`bulwark-node`) uses both and re-exports them.

pub mod proposal;
pub mod relay;
