//! The simulated PSP's evidence goes through the same verifier, only under `trust: simulated`,
//! and lets every check be hit on evidence that is otherwise valid: the PSP re-signs the
//! report with exactly one field wrong, and the verifier must name exactly that check.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_attest::report::{platform_bits, policy_bits};
use bulwark_attest::simulated::{
    generate_root, SimulatedPsp, SIMULATED_ARK_KEY_PEM, SIMULATED_ARK_PEM, SIMULATED_ASK_PEM,
    SIMULATED_ROOT_SEED,
};
use bulwark_attest::{
    verify, AbiVersion, Binding, FirmwareVersion, HexBytes, Measurements, Policy, Product,
    ProductRules, RejectReason, Tcb, Trust,
};
use common::NOW;

const MEASUREMENT: [u8; 48] = [0x42; 48];

fn psp() -> SimulatedPsp {
    SimulatedPsp::new([7; 32], MEASUREMENT)
}

fn sim_policy() -> Policy {
    Policy::strict(
        Trust::Simulated,
        Measurements::OneOf(vec![HexBytes(MEASUREMENT)]),
    )
}

fn check(
    p: &SimulatedPsp,
    policy: &Policy,
) -> Result<bulwark_attest::VerifiedReport, RejectReason> {
    let data = [0x5a; 64];
    verify(
        &p.evidence(data).unwrap(),
        policy,
        &Binding::ReportData(data),
        NOW,
    )
}

#[test]
fn simulated_evidence_passes_every_check_under_simulated_trust_only() {
    let v = check(&psp(), &sim_policy()).unwrap();
    assert_eq!(v.product, Product::Milan);
    assert_eq!(v.report_version, 3);
    assert_eq!(v.measurement, HexBytes(MEASUREMENT));
    let amd = Policy {
        trust: Trust::Amd,
        ..sim_policy()
    };
    // The simulated VCEK names the simulated ASK as its issuer: no AMD signer has that name.
    assert_eq!(
        check(&psp(), &amd).unwrap_err().check(),
        "certificate_issuer"
    );
}

#[test]
fn the_committed_simulated_root_comes_from_the_published_seed() {
    let root = generate_root(SIMULATED_ROOT_SEED).unwrap();
    assert_eq!(root.ark_pem, SIMULATED_ARK_PEM);
    assert_eq!(root.ask_pem, SIMULATED_ASK_PEM);
    assert_eq!(root.ark_key_pem, SIMULATED_ARK_KEY_PEM);
}

/// A change to the simulated chip or guest, and to the policy, that one check must catch.
type Case = (&'static str, fn(&mut SimulatedPsp), fn(&mut Policy));

fn none(_: &mut Policy) {}

fn above(t: Tcb) -> Tcb {
    Tcb {
        microcode: t.microcode + 1,
        ..t
    }
}

/// An older microcode: what a platform running provisional firmware has committed.
fn older(t: Tcb) -> Tcb {
    Tcb {
        microcode: t.microcode - 1,
        ..t
    }
}

fn below(t: Tcb) -> Tcb {
    Tcb {
        snp: t.snp - 1,
        ..t
    }
}

const FW_1_54: FirmwareVersion = FirmwareVersion {
    major: 1,
    minor: 54,
    build: 40,
};

#[test]
fn every_guest_policy_check_fires_on_resigned_evidence() {
    let cases: Vec<Case> = vec![
        // The report's form.
        (
            "minimum_report_version",
            |_| {},
            |p| p.minimum_report_version = 5,
        ),
        ("guest_policy_reserved", |p| p.policy = 0x10000, none),
        (
            "guest_policy_reserved",
            |p| p.policy = 0x30000 | 1 << 40,
            none,
        ),
        (
            "guest_policy_reserved",
            |p| p.policy = 0x30000 | 1 << 26,
            none,
        ),
        (
            "platform_info_reserved",
            |p| p.platform_info |= 1 << 6,
            none,
        ),
        (
            "platform_info_reserved",
            |p| p.platform_info |= 1 << 8,
            none,
        ),
        // The CPU and the product line.
        ("product", |p| p.cpuid = Some((0x1B, 0x00, 0x00)), none),
        ("product", |p| p.cpuid = Some((0x19, 0x11, 0x01)), none),
        (
            "product_admitted",
            |_| {},
            |p| {
                p.products.remove(&Product::Milan);
            },
        ),
        // The certificate and what it was issued for.
        (
            "certificate_validity",
            |p| p.vcek_validity = Some((NOW - 100, NOW - 1)),
            none,
        ),
        (
            "certificate_validity",
            |p| p.vcek_validity = Some((NOW + 1, NOW + 100)),
            none,
        ),
        (
            "certificate_tcb",
            |p| p.vcek_issued_for = Some(Tcb { snp: 7, ..p.tcb }),
            none,
        ),
        // Subjects: AMD's common name under simulated trust, and the right one under another
        // organisation than the issuer's.
        (
            "certificate_subject",
            |p| p.vcek_subject = Some("CN=SEV-VCEK,O=Bulwark simulated PSP (not AMD)".into()),
            none,
        ),
        (
            "certificate_subject",
            |p| p.vcek_subject = Some("CN=SIMULATED-SEV-VCEK,O=Someone else".into()),
            none,
        ),
        (
            "hardware_id",
            |p| p.vcek_issued_to = Some(vec![9; 64]),
            none,
        ),
        (
            "hardware_id_form",
            |p| p.vcek_issued_to = Some(vec![9; 8]),
            none,
        ),
        (
            "masked_chip_id",
            |p| {
                p.vcek_issued_to = Some(p.chip_id.to_vec());
                p.chip_id = [0; 64];
            },
            none,
        ),
        // The guest policy.
        ("debug", |p| p.policy |= policy_bits::DEBUG, none),
        (
            "migration_agent",
            |p| p.policy |= policy_bits::MIGRATE_MA,
            none,
        ),
        ("guest_smt", |_| {}, |p| p.guest_policy.allow_smt = false),
        (
            "single_socket",
            |_| {},
            |p| p.guest_policy.require_single_socket = true,
        ),
        ("cxl", |p| p.policy |= policy_bits::CXL_ALLOW, none),
        (
            "aes_256_xts",
            |_| {},
            |p| p.guest_policy.require_aes_256_xts = true,
        ),
        (
            "guest_rapl_disabled",
            |_| {},
            |p| p.guest_policy.require_rapl_disabled = true,
        ),
        (
            "guest_ciphertext_hiding",
            |_| {},
            |p| p.guest_policy.require_ciphertext_hiding = true,
        ),
        (
            "page_swap_disabled",
            |_| {},
            |p| p.guest_policy.require_page_swap_disabled = true,
        ),
        (
            "minimum_abi",
            |p| p.policy |= 0x0137,
            |p| {
                p.guest_policy.minimum_abi = AbiVersion {
                    major: 1,
                    minor: 56,
                }
            },
        ),
        // The platform.
        ("smt", |_| {}, |p| p.platform.allow_smt = false),
        (
            "tsme",
            |p| p.platform_info |= platform_bits::TSME_EN,
            |p| p.platform.allow_tsme = false,
        ),
        ("ecc", |_| {}, |p| p.platform.require_ecc = true),
        (
            "rapl_disabled",
            |_| {},
            |p| p.platform.require_rapl_disabled = true,
        ),
        (
            "ciphertext_hiding",
            |_| {},
            |p| p.platform.require_ciphertext_hiding = true,
        ),
        (
            "alias_check",
            |p| p.platform_info = platform_bits::SMT_EN,
            none,
        ),
        ("tio", |p| p.platform_info |= platform_bits::TIO_EN, none),
        ("vmpl", |p| p.vmpl = 1, none),
        // TCB and firmware.
        ("minimum_tcb", |p| p.tcb = below(p.tcb), none),
        (
            "minimum_launch_tcb",
            |p| p.launch_tcb = Some(below(p.tcb)),
            none,
        ),
        (
            "provisional_tcb",
            |p| p.committed_tcb = Some(older(p.tcb)),
            none,
        ),
        (
            "committed_tcb_order",
            |p| p.committed_tcb = Some(above(p.tcb)),
            |p| p.allow_provisional_tcb = true,
        ),
        (
            "reported_tcb_order",
            |p| p.reported_tcb = Some(above(p.tcb)),
            |p| p.allow_provisional_tcb = true,
        ),
        (
            "minimum_firmware",
            |p| {
                p.current_firmware = FW_1_54;
                p.committed_firmware = FW_1_54;
            },
            none,
        ),
        (
            "provisional_firmware",
            |p| {
                p.committed_firmware.build -= 1;
            },
            none,
        ),
        (
            "committed_firmware_order",
            |p| {
                p.committed_firmware.build += 1;
            },
            |p| p.allow_provisional_tcb = true,
        ),
        (
            "mitigation_vector",
            |p| {
                p.version = 5;
                p.mitigations = (0b11, 0b01);
            },
            |p| p.minimum_mitigations.current = 0b10,
        ),
        (
            "mitigation_vector",
            |_| {},
            |p| p.minimum_mitigations.launch = 1,
        ),
        (
            "minimum_guest_svn",
            |p| p.guest_svn = 1,
            |p| p.minimum_guest_svn = 2,
        ),
        // What runs.
        ("measurement", |p| p.measurement = [0x43; 48], none),
        (
            "host_data",
            |p| p.host_data = [1; 32],
            |p| p.host_data = Some(HexBytes([0; 32])),
        ),
        (
            "family_id",
            |p| p.family_id = [1; 16],
            |p| p.family_id = Some(HexBytes([0; 16])),
        ),
        (
            "image_id",
            |p| p.image_id = [1; 16],
            |p| p.image_id = Some(HexBytes([0; 16])),
        ),
        (
            "id_key",
            |p| p.id_key_digest = [1; 48],
            |p| p.id_key_digests = vec![HexBytes([0; 48])],
        ),
        (
            "author_key_enabled",
            |_| {},
            |p| p.require_author_key = true,
        ),
        (
            "author_key",
            |p| p.author_key_digest = Some([1; 48]),
            |p| p.author_key_digests = vec![HexBytes([2; 48])],
        ),
        ("chip_id", |_| {}, |p| p.chip_ids = vec![HexBytes([3; 64])]),
    ];
    for (expected, mutate, relax) in cases {
        let mut p = psp();
        mutate(&mut p);
        let mut policy = sim_policy();
        relax(&mut policy);
        let reason = check(&p, &policy).expect_err(expected);
        assert_eq!(reason.check(), expected, "{reason}");
    }
}

#[test]
fn every_required_bit_passes_once_the_evidence_has_it() {
    // The same policies as above accept the chip or guest that has what they require: the
    // checks above fail on the field, not on the requirement.
    let cases: Vec<Case> = vec![
        (
            "aes_256_xts",
            |p| p.policy |= policy_bits::MEM_AES_256_XTS,
            |p| p.guest_policy.require_aes_256_xts = true,
        ),
        (
            "guest_rapl_disabled",
            |p| p.policy |= policy_bits::RAPL_DIS,
            |p| p.guest_policy.require_rapl_disabled = true,
        ),
        (
            "guest_ciphertext_hiding",
            |p| p.policy |= policy_bits::CIPHERTEXT_HIDING_DRAM,
            |p| p.guest_policy.require_ciphertext_hiding = true,
        ),
        (
            "page_swap_disabled",
            |p| p.policy |= policy_bits::PAGE_SWAP_DISABLE,
            |p| p.guest_policy.require_page_swap_disabled = true,
        ),
        (
            "single_socket",
            |p| p.policy |= policy_bits::SINGLE_SOCKET,
            |p| p.guest_policy.require_single_socket = true,
        ),
        (
            "guest_smt",
            |p| p.policy &= !policy_bits::SMT,
            |p| p.guest_policy.allow_smt = false,
        ),
        (
            "minimum_abi",
            |p| p.policy |= 0x0138,
            |p| {
                p.guest_policy.minimum_abi = AbiVersion {
                    major: 1,
                    minor: 56,
                }
            },
        ),
        (
            "cxl",
            |p| p.policy |= policy_bits::CXL_ALLOW,
            |p| p.guest_policy.allow_cxl = true,
        ),
        (
            "ecc",
            |p| p.platform_info |= platform_bits::ECC_EN,
            |p| p.platform.require_ecc = true,
        ),
        (
            "rapl_disabled",
            |p| p.platform_info |= platform_bits::RAPL_DIS,
            |p| p.platform.require_rapl_disabled = true,
        ),
        (
            "ciphertext_hiding",
            |p| p.platform_info |= platform_bits::CIPHERTEXT_HIDING_EN,
            |p| p.platform.require_ciphertext_hiding = true,
        ),
        (
            "smt",
            |p| p.platform_info &= !platform_bits::SMT_EN,
            |p| p.platform.allow_smt = false,
        ),
        (
            "tio",
            |p| p.platform_info |= platform_bits::TIO_EN,
            |p| p.platform.allow_tio = true,
        ),
        (
            "masked_chip_id",
            |p| {
                p.vcek_issued_to = Some(p.chip_id.to_vec());
                p.chip_id = [0; 64];
            },
            |p| p.allow_masked_chip_id = true,
        ),
        (
            "provisional_tcb",
            |p| p.committed_tcb = Some(older(p.tcb)),
            |p| p.allow_provisional_tcb = true,
        ),
        (
            "mitigation_vector",
            |p| {
                p.version = 5;
                p.mitigations = (0b01, 0b11);
            },
            |p| {
                p.minimum_mitigations = bulwark_attest::Mitigations {
                    launch: 1,
                    current: 2,
                }
            },
        ),
        (
            "author_key",
            |p| p.author_key_digest = Some([2; 48]),
            |p| {
                p.require_author_key = true;
                p.author_key_digests = vec![HexBytes([2; 48])];
            },
        ),
    ];
    for (name, mutate, relax) in cases {
        let mut p = psp();
        mutate(&mut p);
        let mut policy = sim_policy();
        relax(&mut policy);
        check(&p, &policy).unwrap_or_else(|r| panic!("{name}: {r}"));
    }
}

#[test]
fn each_product_line_is_accepted_at_its_own_minimum_and_rejected_one_spl_below() {
    for product in Product::ALL {
        let p = SimulatedPsp::for_product([3; 32], MEASUREMENT, product);
        let mut policy = sim_policy();
        let firmware = p.current_firmware;
        policy.products = [(
            product,
            ProductRules {
                minimum_tcb: p.tcb,
                minimum_launch_tcb: p.tcb,
                minimum_firmware: firmware,
            },
        )]
        .into();
        let v = check(&p, &policy).unwrap_or_else(|r| panic!("{product:?}: {r}"));
        assert_eq!((v.product, v.reported_tcb), (product, p.tcb));
        let mut components = vec!["bootloader", "tee", "snp", "microcode"];
        if product == Product::Turin {
            components.push("fmc");
        }
        for component in components {
            // The same minimum, one SPL above this chip in one component: the chip is one SPL
            // below the network's minimum there.
            let mut higher = p.tcb;
            let slot = match component {
                "bootloader" => &mut higher.bootloader,
                "tee" => &mut higher.tee,
                "snp" => &mut higher.snp,
                "microcode" => &mut higher.microcode,
                _ => higher.fmc.get_or_insert(0),
            };
            *slot += 1;
            let minimum = *slot;
            let mut strict = policy.clone();
            strict.products.get_mut(&product).unwrap().minimum_tcb = higher;
            assert_eq!(
                check(&p, &strict).unwrap_err(),
                RejectReason::TcbBelowMinimum {
                    component,
                    minimum,
                    reported: minimum - 1
                },
                "{product:?}"
            );
            let mut launch = policy.clone();
            launch
                .products
                .get_mut(&product)
                .unwrap()
                .minimum_launch_tcb = higher;
            assert_eq!(
                check(&p, &launch).unwrap_err().check(),
                "minimum_launch_tcb",
                "{product:?} {component}"
            );
        }
        // Another product line's floors do not admit this one.
        let mut others = policy.clone();
        let rules = others.products.remove(&product).unwrap();
        for other in Product::ALL.into_iter().filter(|o| *o != product) {
            others.products.insert(other, rules.clone());
        }
        assert_eq!(
            check(&p, &others).unwrap_err(),
            RejectReason::ProductNotAdmitted(product)
        );
    }
}

#[test]
fn the_templates_milan_and_genoa_floors_admit_exactly_their_level() {
    for product in [Product::Milan, Product::Genoa] {
        let at_floor = SimulatedPsp::for_product([4; 32], MEASUREMENT, product);
        check(&at_floor, &sim_policy()).unwrap_or_else(|r| panic!("{product:?}: {r}"));
        for component in ["snp", "microcode"] {
            let mut old = at_floor.clone();
            match component {
                "snp" => old.tcb.snp -= 1,
                _ => old.tcb.microcode -= 1,
            }
            let reason = check(&old, &sim_policy()).unwrap_err();
            assert!(
                matches!(reason, RejectReason::TcbBelowMinimum { component: c, .. } if c == component),
                "{product:?}: {reason}"
            );
        }
    }
    // Turin has no floor in the template: it is not admitted until a network states one.
    let turin = SimulatedPsp::for_product([4; 32], MEASUREMENT, Product::Turin);
    assert_eq!(
        check(&turin, &sim_policy()).unwrap_err(),
        RejectReason::ProductNotAdmitted(Product::Turin)
    );
}

#[test]
fn a_turin_chip_id_must_be_zero_after_its_eight_byte_hardware_id() {
    let mut policy = sim_policy();
    let mut p = SimulatedPsp::for_product([5; 32], MEASUREMENT, Product::Turin);
    policy.products.insert(
        Product::Turin,
        ProductRules {
            minimum_tcb: p.tcb,
            minimum_launch_tcb: p.tcb,
            minimum_firmware: p.current_firmware,
        },
    );
    check(&p, &policy).unwrap();
    // The VCEK keeps the genuine 8-byte id; the report's CHIP_ID gains bytes after it.
    p.vcek_issued_to = Some(p.chip_id[..8].to_vec());
    p.chip_id[8] = 1;
    assert_eq!(check(&p, &policy).unwrap_err().check(), "hardware_id");
    // A Turin VCEK carrying a Milan-length id is malformed.
    let mut long = SimulatedPsp::for_product([5; 32], MEASUREMENT, Product::Turin);
    long.vcek_issued_to = Some(vec![1; 64]);
    assert_eq!(
        check(&long, &policy).unwrap_err().check(),
        "hardware_id_form"
    );
}

#[test]
fn an_expired_intermediate_or_root_is_refused_even_for_a_valid_vcek() {
    // The simulated ASK and ARK are valid 2020-01-01 .. 2070-01-01; a VCEK valid to 2100
    // checked in 2075 outlives them.
    let mut p = psp();
    p.vcek_validity = Some((NOW, 4_102_444_800));
    let data = [0x5a; 64];
    let e = p.evidence(data).unwrap();
    check(&p, &sim_policy()).unwrap();
    let in_2075 = 3_313_526_400;
    assert_eq!(
        verify(&e, &sim_policy(), &Binding::ReportData(data), in_2075).unwrap_err(),
        RejectReason::CertificateValidity {
            certificate: "ASK",
            not_before: 1_577_836_800,
            not_after: 3_155_760_000,
            now: in_2075
        }
    );
}

#[test]
fn a_vcek_from_another_simulated_chip_does_not_verify() {
    let data = [1; 64];
    let mut e = psp().evidence(data).unwrap();
    e.endorsement_cert = SimulatedPsp::new([8; 32], MEASUREMENT)
        .vcek_cert_der()
        .unwrap();
    assert_eq!(
        verify(&e, &sim_policy(), &Binding::ReportData(data), NOW)
            .unwrap_err()
            .check(),
        "report_signature"
    );
}

#[test]
fn the_binding_and_the_sealing_key_depend_on_what_they_should() {
    let e = psp().evidence([2; 64]).unwrap();
    assert_eq!(
        verify(&e, &sim_policy(), &Binding::ReportData([3; 64]), NOW)
            .unwrap_err()
            .check(),
        "report_data"
    );
    let a = psp();
    let k = a.sealing_key(b"validator-key");
    assert_eq!(k, psp().sealing_key(b"validator-key"));
    assert_ne!(k, a.sealing_key(b"other-purpose"));
    assert_ne!(
        k,
        SimulatedPsp::new([8; 32], MEASUREMENT).sealing_key(b"validator-key"),
        "another chip"
    );
    assert_ne!(
        k,
        SimulatedPsp::new([7; 32], [0x43; 48]).sealing_key(b"validator-key"),
        "another image"
    );
    let mut debug = psp();
    debug.policy |= policy_bits::DEBUG;
    assert_ne!(k, debug.sealing_key(b"validator-key"), "another policy");
}

#[test]
fn version_5_reports_with_mitigation_vectors_verify_and_version_3_may_not_use_those_bytes() {
    let mut p = psp();
    p.version = 5;
    p.mitigations = (1, 1);
    assert_eq!(check(&p, &sim_policy()).unwrap().report_version, 5);
    // The same bytes in a version 3 report are reserved: a v5 report relabelled as v3 fails on
    // them before anything else.
    let data = [0x5a; 64];
    let mut e = p.evidence(data).unwrap();
    e.report[0] = 3;
    assert_eq!(
        verify(&e, &sim_policy(), &Binding::ReportData(data), NOW).unwrap_err(),
        RejectReason::ReservedNonZero {
            offset: 0x1F8,
            value: 1
        }
    );
}
