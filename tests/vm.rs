//! The measured image end to end: four validator VMs booted from `target/image` under QEMU
//! (TCG) on the SEV-SNP machine shape (q35, UEFI firmware booting the kernel's EFI stub, virtio
//! devices with `iommu_platform=on`) commit at least 10 heights together, every validator's
//! RPC answering through its forwarded port, every guest driver negotiating ACCESS_PLATFORM
//! with its disk and network device, and all power off cleanly on Ctrl-Alt-Del.
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
fn four_validator_vms_on_the_snp_machine_shape_commit_and_power_off_cleanly() {
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
    for i in 0..VALIDATORS {
        // The kernel came up through its EFI stub (as under SEV-SNP, where the CC blob and
        // secrets page come from the EFI configuration table), not a legacy BIOS boot.
        assert!(
            net.serial_log(i).contains("EFI stub: Loaded initrd"),
            "VM {i} did not boot through the EFI stub; serial logs in {}",
            net.dir().display()
        );
        let devices = net.virtio_devices(i).unwrap();
        let mut kinds: Vec<&str> = devices.iter().map(|d| d.kind.as_str()).collect();
        kinds.sort();
        assert_eq!(kinds, ["virtio-blk", "virtio-net"], "VM {i}: {devices:?}");
        assert!(
            devices.iter().all(|d| d.access_platform),
            "VM {i}: a guest driver did not negotiate ACCESS_PLATFORM, which SEV-SNP requires: {devices:?}"
        );
    }
    let clean = net.stop();
    assert_eq!(
        clean,
        VALIDATORS,
        "not every VM powered off cleanly; serial logs in {}",
        net.dir().display()
    );
    net.clean_up();
}
