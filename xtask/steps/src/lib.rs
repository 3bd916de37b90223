//! What every `cargo xtask` command needs before its real work: long steps that print one
//! line each with their output in `target/xtask-logs/`, and the Debian packages they install.

pub mod apt;
pub mod step;

use std::path::PathBuf;

/// The per-user cache of downloads, kernels and private apt state (`BULWARK_CACHE`, else
/// `~/.cache/bulwark`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("BULWARK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/bulwark")
        })
}
