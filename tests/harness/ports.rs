//! Blocks of free loopback ports, distinct between the networks one process starts and
//! unlikely to collide with other processes on the machine.

use anyhow::{bail, Result};
use std::sync::atomic::{AtomicU16, Ordering};

/// Where this process looks next (spread by process id, so parallel test binaries start
/// apart).
static NEXT: AtomicU16 = AtomicU16::new(0);

const FIRST: u16 = 20_000;
const LAST: u16 = 60_000;

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first port of `span` consecutive ports that are free now and that no earlier call of
/// this process returned.
pub fn free_block(span: u16) -> Result<u16> {
    let span = span.max(1);
    let _ = NEXT.compare_exchange(
        0,
        FIRST + (std::process::id() % 500) as u16 * 64,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..200 {
        let mut base = NEXT.fetch_add(span, Ordering::SeqCst);
        if base > LAST - span {
            base = FIRST;
            NEXT.store(FIRST + span, Ordering::SeqCst);
        }
        if (base..base + span).all(free) {
            return Ok(base);
        }
    }
    bail!("no block of {span} free loopback ports found")
}

/// The port block of a testnet of `validators` made with [`crate::process::testnet`]: node
/// `i` uses `base + 10i` (p2p) and `base + 10i + 1` (RPC).
pub fn testnet_block(validators: usize) -> Result<u16> {
    let span = u16::try_from(10 * validators.max(1)).unwrap_or(u16::MAX / 2);
    free_block(span)
}
