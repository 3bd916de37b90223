//! Helpers shared by the attestation tests: the genuine fixtures in `tests/data` and the times
//! they are checked at.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::{
    Evidence, FirmwareVersion, Measurements, Policy, Product, ProductRules, Tcb, Trust,
};

/// The time the tests check evidence at: 2026-12-01T00:00:00Z (every VCEK in the test data is
/// valid then; the AWS VLEK expired on 2025-12-10).
pub const NOW: u64 = 1_796_083_200;
/// 2025-06-01T00:00:00Z: inside the VLEK's validity window and the Milan CRL's year.
pub const MID_2025: u64 = 1_748_736_000;

pub fn data(dir: &str, file: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/{dir}/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

pub fn evidence(dir: &str, cert: &str) -> Evidence {
    Evidence {
        report: data(dir, "report.bin"),
        endorsement_cert: data(dir, cert),
    }
}

/// The strict template under AMD trust, any measurement.
pub fn strict() -> Policy {
    Policy::strict(Trust::Amd, Measurements::Any)
}

/// Floors for `product` at exactly `tcb` (reported and launch) and `firmware`.
pub fn floors(policy: &mut Policy, product: Product, tcb: Tcb, firmware: FirmwareVersion) {
    policy.products.insert(
        product,
        ProductRules {
            minimum_tcb: tcb,
            minimum_launch_tcb: tcb,
            minimum_firmware: firmware,
        },
    );
}

/// The genuine virtee Milan report (v2, 2023: bootloader 3, SNP 8, microcode 0x73, firmware
/// 1.52 build 4, no alias check) and the policy that fits it exactly: the strict template
/// with each thing it predates relaxed to its own values.
pub fn virtee() -> Evidence {
    evidence("virtee-sev-milan", "vcek.der")
}

pub const VIRTEE_TCB: Tcb = Tcb {
    bootloader: 3,
    tee: 0,
    snp: 8,
    microcode: 0x73,
    fmc: None,
};

pub const VIRTEE_FIRMWARE: FirmwareVersion = FirmwareVersion {
    major: 1,
    minor: 52,
    build: 4,
};

pub fn fits_virtee() -> Policy {
    let mut p = strict();
    p.minimum_report_version = 2;
    p.platform.require_alias_check = false;
    floors(&mut p, Product::Milan, VIRTEE_TCB, VIRTEE_FIRMWARE);
    p
}
