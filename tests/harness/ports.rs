//! Blocks of free loopback ports, distinct between the networks one process starts and
//! unlikely to collide with other processes on the machine.

use anyhow::{bail, Result};
use std::sync::atomic::{AtomicU16, Ordering};

/// Where this process looks next (spread by process id, so parallel test binaries start
/// apart).
static NEXT: AtomicU16 = AtomicU16::new(0);

const FIRST: u16 = 20_000;

/// The last port handed out: below the kernel's ephemeral range, whose ports any outgoing
/// connection (a node dialling a peer, a test's RPC client) may take at any moment; a block
/// inside it was free when chosen and taken by such a connection before a node bound it
/// ("Address already in use").
fn last() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    ephemeral_start
        .saturating_sub(1)
        .clamp(FIRST + 4_096, 60_000)
}

fn free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first port of `span` consecutive ports that are free now and that no earlier call of
/// this process returned.
pub fn free_block(span: u16) -> Result<u16> {
    let span = span.max(1);
    let last = last();
    let starts = (last - FIRST) / 64;
    let _ = NEXT.compare_exchange(
        0,
        FIRST + (std::process::id() % u32::from(starts)) as u16 * 64,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..200 {
        let mut base = NEXT.fetch_add(span, Ordering::SeqCst);
        if base > last - span {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_stay_below_the_ephemeral_range_and_wrap_around() {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let ephemeral_start: u16 = range.split_whitespace().next().unwrap().parse().unwrap();
        let mut seen_wrap = false;
        let mut previous = 0;
        // More blocks than fit once below that range: the search wraps around to FIRST.
        for _ in 0..(ephemeral_start - FIRST) / 40 + 20 {
            let base = free_block(40).unwrap();
            assert!(
                base >= FIRST && base + 40 <= ephemeral_start,
                "{base}..{} reaches into the ephemeral ports from {ephemeral_start}",
                base + 40
            );
            seen_wrap |= base < previous;
            previous = base;
        }
        assert!(seen_wrap);
    }
}
