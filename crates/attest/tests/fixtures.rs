//! Genuine SEV-SNP reports and AMD certificates captured on real hardware
//! (tests/data/*/SOURCE.txt). Each one starts from the strict template and is rejected, one
//! named check at a time, for exactly what it lacks; once the policy allows exactly that, it
//! verifies and chains to the right AMD product line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_attest::{
    verify, Binding, Evidence, FirmwareVersion, HexBytes, KeyKind, Policy, Product, RejectReason,
    Tcb,
};
use common::*;

/// A change to the policy that lets the next check pass.
type Relax = Box<dyn Fn(&mut Policy)>;

/// Walks `ladder` from the strict template at `now`: before each step the evidence is rejected
/// with that step's check; after the last it verifies as `product`/`kind`.
fn ladder(e: &Evidence, now: u64, steps: Vec<(&str, Relax)>, product: Product, kind: KeyKind) {
    let mut policy = strict();
    for (check, relax) in steps {
        let reason = verify(e, &policy, &Binding::Unchecked, now)
            .expect_err(&format!("accepted before relaxing {check}"));
        assert_eq!(reason.check(), check, "{reason}");
        relax(&mut policy);
    }
    let v = verify(e, &policy, &Binding::Unchecked, now)
        .unwrap_or_else(|r| panic!("the fitting policy rejected: {r}"));
    assert_eq!((v.product, v.signing_key), (product, kind));
}

fn milan_floors(tcb: Tcb, firmware: FirmwareVersion) -> Relax {
    Box::new(move |p| floors(p, Product::Milan, tcb, firmware))
}

#[test]
fn azure_genoa_report_is_accepted_by_the_strict_template() {
    // Captured in 2025 at exactly the template's Genoa floors (SNP 23, microcode 84, firmware
    // 1.55), with the memory alias check done.
    let e = evidence("trustee-azure-genoa", "vcek.pem");
    ladder(&e, NOW, vec![], Product::Genoa, KeyKind::Vcek);
}

#[test]
fn virtee_milan_report_lacks_v3_the_alias_check_and_a_current_tcb_and_firmware() {
    ladder(
        &virtee(),
        NOW,
        vec![
            (
                "minimum_report_version",
                Box::new(|p| p.minimum_report_version = 2),
            ),
            (
                "alias_check",
                Box::new(|p| p.platform.require_alias_check = false),
            ),
            // Each floor is lowered on its own: the reported TCB's, then the launch TCB's.
            (
                "minimum_tcb",
                Box::new(|p| {
                    p.products.get_mut(&Product::Milan).unwrap().minimum_tcb = VIRTEE_TCB;
                }),
            ),
            (
                "minimum_launch_tcb",
                Box::new(|p| {
                    p.products
                        .get_mut(&Product::Milan)
                        .unwrap()
                        .minimum_launch_tcb = VIRTEE_TCB;
                }),
            ),
            (
                "minimum_firmware",
                milan_floors(VIRTEE_TCB, VIRTEE_FIRMWARE),
            ),
        ],
        Product::Milan,
        KeyKind::Vcek,
    );
}

#[test]
fn go_sev_guest_report_lacks_v3_and_allows_debug() {
    let tcb = Tcb {
        bootloader: 2,
        tee: 0,
        snp: 5,
        microcode: 0x44,
        fmc: None,
    };
    let firmware = FirmwareVersion {
        major: 1,
        minor: 49,
        build: 3,
    };
    ladder(
        &evidence("go-sev-guest-milan", "vcek.der"),
        NOW,
        vec![
            (
                "minimum_report_version",
                Box::new(|p| p.minimum_report_version = 2),
            ),
            ("debug", Box::new(|p| p.guest_policy.allow_debug = true)),
            (
                "alias_check",
                Box::new(|p| p.platform.require_alias_check = false),
            ),
            ("minimum_tcb", milan_floors(tcb, firmware)),
        ],
        Product::Milan,
        KeyKind::Vcek,
    );
}

#[test]
fn azure_and_trustee_milan_reports_run_provisional_microcode() {
    let tcb = Tcb {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 0x73,
        fmc: None,
    };
    for (dir, cert) in [
        ("trustee-azure-milan", "vcek.pem"),
        ("trustee-snp-vcek", "vcek.der"),
    ] {
        ladder(
            &evidence(dir, cert),
            NOW,
            vec![
                (
                    "minimum_report_version",
                    Box::new(|p| p.minimum_report_version = 2),
                ),
                (
                    "alias_check",
                    Box::new(|p| p.platform.require_alias_check = false),
                ),
                ("minimum_tcb", milan_floors(tcb, VIRTEE_FIRMWARE)),
                // CURRENT microcode is ahead of COMMITTED: allowed, and then committed ≤ current
                // holds.
                (
                    "provisional_tcb",
                    Box::new(|p| p.allow_provisional_tcb = true),
                ),
            ],
            Product::Milan,
            KeyKind::Vcek,
        );
    }
}

fn vlek_steps() -> Vec<(&'static str, Relax)> {
    let reported = Tcb {
        bootloader: 4,
        tee: 0,
        snp: 24,
        microcode: 0xd9,
        fmc: None,
    };
    vec![
        ("signing_key", Box::new(|p| p.allow_vlek = true)),
        (
            "vlek_csp",
            Box::new(|p| p.vlek_csp_ids = vec!["CN=cc-us-east-2.amazonaws.com".into()]),
        ),
        ("vmpl", Box::new(|p| p.vmpl = 1)),
        // Its REPORTED microcode (0xd9) is below the template's Milan floor (0xdb).
        (
            "minimum_tcb",
            milan_floors(
                reported,
                FirmwareVersion {
                    major: 1,
                    minor: 55,
                    build: 0,
                },
            ),
        ),
        (
            "provisional_tcb",
            Box::new(|p| p.allow_provisional_tcb = true),
        ),
    ]
}

#[test]
fn aws_vlek_report_needs_vlek_its_cloud_vmpl_1_its_tcb_and_provisional_firmware() {
    ladder(
        &evidence("trustee-snp-vlek", "vlek.der"),
        MID_2025,
        vlek_steps(),
        Product::Milan,
        KeyKind::Vlek,
    );
}

#[test]
fn the_aws_vlek_is_rejected_for_validity_once_it_expired() {
    // AMD issued this VLEK for one year (2024-12-10 .. 2025-12-10).
    let e = evidence("trustee-snp-vlek", "vlek.der");
    let mut policy = strict();
    for (_, relax) in vlek_steps() {
        relax(&mut policy);
    }
    verify(&e, &policy, &Binding::Unchecked, MID_2025).unwrap();
    assert_eq!(
        verify(&e, &policy, &Binding::Unchecked, NOW).unwrap_err(),
        RejectReason::CertificateValidity {
            certificate: "VLEK",
            not_before: 1_733_868_861,
            not_after: 1_765_404_861,
            now: NOW
        }
    );
    // And before it was issued.
    assert_eq!(
        verify(&e, &policy, &Binding::Unchecked, 1_733_868_860)
            .unwrap_err()
            .check(),
        "certificate_validity"
    );
}

#[test]
fn a_vlek_of_another_cloud_is_refused_by_name() {
    let e = evidence("trustee-snp-vlek", "vlek.der");
    let mut policy = strict();
    for (_, relax) in vlek_steps() {
        relax(&mut policy);
    }
    policy.vlek_csp_ids = vec!["CN=another-cloud.example".into()];
    assert_eq!(
        verify(&e, &policy, &Binding::Unchecked, MID_2025).unwrap_err(),
        RejectReason::VlekCsp(Some("CN=cc-us-east-2.amazonaws.com".into()))
    );
}

#[test]
fn trustees_invalid_vceks_are_rejected() {
    for bad in ["vcek-invalid-legacy.der", "vcek-invalid-new.der"] {
        let reason = verify(
            &evidence("trustee-snp-vcek", bad),
            &fits_virtee(),
            &Binding::Unchecked,
            NOW,
        )
        .unwrap_err();
        // Their signatures by the ASK are broken: no pinned root vouches for them.
        assert_eq!(reason.check(), "certificate_chain", "{reason}");
    }
}

#[test]
fn the_genoa_report_fails_each_identity_field_it_does_not_have_and_passes_its_own() {
    let e = evidence("trustee-azure-genoa", "vcek.pem");
    let report = bulwark_attest::AttestationReport::from_bytes(&e.report).unwrap();
    let cases: Vec<(&str, Relax)> = vec![
        (
            "family_id",
            Box::new(|p| p.family_id = Some(HexBytes([9; 16]))),
        ),
        (
            "image_id",
            Box::new(|p| p.image_id = Some(HexBytes([9; 16]))),
        ),
        (
            "id_key",
            Box::new(|p| p.id_key_digests = vec![HexBytes([9; 48])]),
        ),
        // The Azure ID block has no author key.
        (
            "author_key_enabled",
            Box::new(|p| p.require_author_key = true),
        ),
        (
            "minimum_guest_svn",
            Box::new(|p| p.minimum_guest_svn = 65_548),
        ),
        (
            "mitigation_vector",
            Box::new(|p| p.minimum_mitigations.current = 1),
        ),
        ("ecc", Box::new(|_| {})),
    ];
    for (check, relax) in cases {
        let mut p = strict();
        relax(&mut p);
        if check == "ecc" {
            // Genoa's platform info has ECC on: requiring it passes; SMT is off: forbidding
            // it passes too.
            p.platform.require_ecc = true;
            p.platform.allow_smt = false;
            verify(&e, &p, &Binding::Unchecked, NOW).unwrap();
            continue;
        }
        assert_eq!(
            verify(&e, &p, &Binding::Unchecked, NOW)
                .unwrap_err()
                .check(),
            check
        );
    }
    let mut p = strict();
    p.family_id = Some(HexBytes(report.family_id()));
    p.image_id = Some(HexBytes(report.image_id()));
    p.id_key_digests = vec![HexBytes(report.id_key_digest())];
    p.minimum_guest_svn = report.guest_svn();
    verify(&e, &p, &Binding::Unchecked, NOW).unwrap();
}

#[test]
fn genuine_reports_are_accepted_at_their_own_tcb_and_rejected_one_spl_below_it() {
    // (evidence, when, its product line, the policy that fits it, its REPORTED_TCB)
    let genoa_tcb = Tcb {
        bootloader: 10,
        tee: 0,
        snp: 23,
        microcode: 84,
        fmc: None,
    };
    let mut vlek = strict();
    for (_, relax) in vlek_steps() {
        relax(&mut vlek);
    }
    let vlek_tcb = vlek.products[&Product::Milan].minimum_tcb;
    let table = [
        (virtee(), NOW, Product::Milan, fits_virtee(), VIRTEE_TCB),
        (
            evidence("trustee-azure-genoa", "vcek.pem"),
            NOW,
            Product::Genoa,
            strict(),
            genoa_tcb,
        ),
        (
            evidence("trustee-snp-vlek", "vlek.der"),
            MID_2025,
            Product::Milan,
            vlek,
            vlek_tcb,
        ),
    ];
    for (e, now, product, mut policy, tcb) in table {
        let rules = policy.products.get_mut(&product).unwrap();
        rules.minimum_tcb = tcb;
        rules.minimum_launch_tcb = Tcb::default();
        verify(&e, &policy, &Binding::Unchecked, now)
            .unwrap_or_else(|r| panic!("{product:?} at its own TCB: {r}"));
        for component in ["bootloader", "tee", "snp", "microcode"] {
            let mut above = tcb;
            let slot = match component {
                "bootloader" => &mut above.bootloader,
                "tee" => &mut above.tee,
                "snp" => &mut above.snp,
                _ => &mut above.microcode,
            };
            *slot += 1;
            let minimum = *slot;
            let mut higher = policy.clone();
            higher.products.get_mut(&product).unwrap().minimum_tcb = above;
            assert_eq!(
                verify(&e, &higher, &Binding::Unchecked, now).unwrap_err(),
                RejectReason::TcbBelowMinimum {
                    component,
                    minimum,
                    reported: minimum - 1
                },
                "{product:?}"
            );
        }
    }
}
