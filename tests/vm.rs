//! The measured image end to end: four validator VMs booted from `target/image` under QEMU
//! (TCG) commit at least 10 heights together, every validator's RPC answering through its
//! forwarded port, and all power off cleanly on Ctrl-Alt-Del.
//!
//! It needs the image, so it is ignored by a plain `cargo test` (which then says so);
//! `cargo xtask test` builds the image and runs it with `--ignored`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use harness::rpc::height;
use harness::vm::{image_dir, VmNetwork};
use std::time::{Duration, Instant};

const VALIDATORS: usize = 4;
const HEIGHTS: u64 = 10;
/// Under TCG a VM boots in seconds and the network commits about one height a second.
const LIMIT: Duration = Duration::from_secs(240);

#[test]
#[ignore = "needs the measured image and QEMU: run through `cargo xtask test` (or `cargo xtask image` first)"]
fn four_validator_vms_from_the_measured_image_commit_and_power_off_cleanly() {
    let mut net = VmNetwork::start(&image_dir(), VALIDATORS, 500).unwrap();
    eprintln!(
        "vm test: mode TCG (software emulation), {VALIDATORS} VMs, serial logs in {}",
        net.dir().display()
    );
    let mut clients = net.clients();
    let mut heights = vec![0u64; VALIDATORS];
    let deadline = Instant::now() + LIMIT;
    while heights.iter().any(|h| *h < HEIGHTS) {
        assert!(
            Instant::now() < deadline,
            "the VMs reached only {heights:?} within {LIMIT:?}; serial logs in {}",
            net.dir().display()
        );
        assert_eq!(
            net.live(),
            VALIDATORS,
            "a VM stopped; serial logs in {}",
            net.dir().display()
        );
        for (h, c) in heights.iter_mut().zip(clients.iter_mut()) {
            if let Some(now) = height(c) {
                *h = (*h).max(now);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "vm test: every validator reached height {HEIGHTS} after {:.1} s",
        net.started.elapsed().as_secs_f64()
    );
    let clean = net.stop();
    assert_eq!(
        clean,
        VALIDATORS,
        "not every VM powered off cleanly; serial logs in {}",
        net.dir().display()
    );
    net.clean_up();
}
