//! What travels between validators, without I/O: blocks as 64 KiB parts and their assembly
//! from announced part sets (`proposal`), what a stuck peer is re-sent (`relay`), how far the
//! peers are (`heights`), whom a node behind asks for decided blocks (`sync`), and the bounds
//! on what peers make a node do (`limits`). The engine (`bulwark-node`) uses them and
//! re-exports them.

pub mod heights;
pub mod limits;
pub mod proposal;
pub mod relay;
pub mod sync;
