//! Systematic mutations of genuine evidence, each rejected with the expected check.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_attest::policy::HexBytes;
use bulwark_attest::{
    verify, Binding, Evidence, Measurements, Policy, Product, RejectReason, Tcb, Trust,
};
use common::{data, NOW};

/// The genuine Milan report, accepted by the policy that fits it.
fn good() -> Evidence {
    common::virtee()
}

/// The strict template with exactly what the 2023 report predates relaxed.
fn strict() -> Policy {
    common::fits_virtee()
}

/// A change to the strict policy that makes one check reject the genuine report.
type Relax = fn(&mut Policy);

fn milan(p: &mut Policy) -> &mut bulwark_attest::ProductRules {
    p.products.get_mut(&Product::Milan).unwrap()
}

fn reject(e: &Evidence, p: &Policy, b: &Binding) -> RejectReason {
    verify(e, p, b, NOW).expect_err("must be rejected")
}

fn with_byte(offset: usize, f: impl Fn(u8) -> u8) -> Evidence {
    let mut e = good();
    e.report[offset] = f(e.report[offset]);
    e
}

#[test]
fn the_unmutated_report_is_accepted() {
    verify(&good(), &strict(), &Binding::Unchecked, NOW).unwrap();
}

#[test]
fn flipping_any_signed_field_breaks_the_signature() {
    // policy, family id, image id, vmpl, current TCB, platform info, report data, measurement,
    // host data, id key digest, author key digest, report id, reported TCB, chip id, committed
    // TCB, launch TCB, guest svn
    for offset in [
        0x08, 0x10, 0x20, 0x30, 0x38, 0x40, 0x50, 0x90, 0xC0, 0xE0, 0x110, 0x140, 0x180, 0x1A0,
        0x1E0, 0x1F0, 0x04,
    ] {
        let reason = reject(
            &with_byte(offset, |b| b ^ 0x01),
            &strict(),
            &Binding::Unchecked,
        );
        assert_eq!(
            reason,
            RejectReason::ReportSignature(bulwark_attest::KeyKind::Vcek),
            "offset {offset:#x}"
        );
    }
}

#[test]
fn signature_bytes_are_checked() {
    for offset in [0x2A0, 0x2A0 + 47, 0x2E8, 0x2E8 + 47] {
        let reason = reject(
            &with_byte(offset, |b| b ^ 0x80),
            &strict(),
            &Binding::Unchecked,
        );
        assert_eq!(reason.check(), "report_signature", "offset {offset:#x}");
    }
    // The unused top of R and the reserved tail must be zero.
    for offset in [0x2A0 + 48, 0x2E8 + 71, 0x330, 0x49F] {
        let reason = reject(&with_byte(offset, |_| 1), &strict(), &Binding::Unchecked);
        assert_eq!(reason, RejectReason::ReservedNonZero { offset, value: 1 });
    }
}

#[test]
fn structural_fields_fail_their_own_checks() {
    assert_eq!(
        reject(&with_byte(0x00, |_| 4), &strict(), &Binding::Unchecked),
        RejectReason::ReportVersion(4)
    );
    assert_eq!(
        reject(&with_byte(0x00, |_| 1), &strict(), &Binding::Unchecked),
        RejectReason::ReportVersion(1)
    );
    assert_eq!(
        reject(&with_byte(0x34, |_| 2), &strict(), &Binding::Unchecked),
        RejectReason::SignatureAlgorithm(2)
    );
    assert_eq!(
        reject(&with_byte(0x4C, |_| 9), &strict(), &Binding::Unchecked),
        RejectReason::ReservedNonZero {
            offset: 0x4C,
            value: 9
        }
    );
    assert_eq!(
        reject(&with_byte(0x190, |_| 9), &strict(), &Binding::Unchecked),
        RejectReason::ReservedNonZero {
            offset: 0x190,
            value: 9
        }
    );
    // SIGNING_KEY = 7 ("none") and = 1 (VLEK, which the strict policy refuses).
    assert_eq!(
        reject(
            &with_byte(0x48, |b| b | (7 << 2)),
            &strict(),
            &Binding::Unchecked
        ),
        RejectReason::UnknownSigningKey(7)
    );
    assert_eq!(
        reject(
            &with_byte(0x48, |b| b | (1 << 2)),
            &strict(),
            &Binding::Unchecked
        ),
        RejectReason::VlekNotAllowed
    );
    // Bits above SIGNING_KEY are reserved.
    assert_eq!(
        reject(
            &with_byte(0x48, |b| b | 0x80),
            &strict(),
            &Binding::Unchecked
        )
        .check(),
        "reserved_zero"
    );
    // Claiming VLEK with a VCEK: its issuer (SEV-Milan) is no pinned ASVK.
    let mut p = strict();
    p.allow_vlek = true;
    assert_eq!(
        reject(&with_byte(0x48, |b| b | (1 << 2)), &p, &Binding::Unchecked).check(),
        "certificate_issuer"
    );
}

#[test]
fn truncated_oversized_and_garbage_inputs_are_rejected_by_size_or_certificate() {
    for len in [0, 1, 1183] {
        let mut e = good();
        e.report.truncate(len);
        assert_eq!(
            reject(&e, &strict(), &Binding::Unchecked),
            RejectReason::ReportSize(len)
        );
    }
    let mut e = good();
    e.report.push(0);
    assert_eq!(
        reject(&e, &strict(), &Binding::Unchecked),
        RejectReason::ReportSize(1185)
    );
    for cert in [
        vec![],
        vec![0x30],
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(),
        vec![0xff; 2000],
    ] {
        let mut e = good();
        e.endorsement_cert = cert;
        assert_eq!(
            reject(&e, &strict(), &Binding::Unchecked).check(),
            "certificate"
        );
    }
    let mut e = good();
    e.endorsement_cert.truncate(e.endorsement_cert.len() / 2);
    assert_eq!(
        reject(&e, &strict(), &Binding::Unchecked).check(),
        "certificate"
    );
}

/// The genuine VCEK with bytes of its encoding replaced (its issuer signature then no longer
/// verifies, so a check that runs before the chain check must name the change).
fn with_cert_bytes(edit: impl Fn(&mut Vec<u8>)) -> Evidence {
    let mut e = good();
    edit(&mut e.endorsement_cert);
    e
}

/// Every position of `needle` in `der`.
fn positions(der: &[u8], needle: &[u8]) -> Vec<usize> {
    der.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

#[test]
fn a_certificate_of_another_x509_version_is_refused_by_name() {
    // TBSCertificate starts `A0 03 02 01 02` (explicit version 2, i.e. v3); make it v2.
    let e = with_cert_bytes(|der| {
        let at = positions(der, &[0xA0, 0x03, 0x02, 0x01, 0x02])[0];
        der[at + 4] = 0x01;
    });
    assert_eq!(
        reject(&e, &strict(), &Binding::Unchecked),
        RejectReason::CertificateVersion("V2".into())
    );
}

#[test]
fn pss_parameters_other_than_amds_are_refused_by_name() {
    // The salt length `A2 03 02 01 30` (48) appears in the signed and the outer algorithm.
    let salt = [0xA2, 0x03, 0x02, 0x01, 0x30];
    assert_eq!(positions(&good().endorsement_cert, &salt).len(), 2);
    // Both changed to 32: AMD never signs with that.
    let both = with_cert_bytes(|der| {
        for at in positions(der, &salt) {
            der[at + 4] = 0x20;
        }
    });
    assert_eq!(
        reject(&both, &strict(), &Binding::Unchecked),
        RejectReason::SignatureParameters("PSS salt length 32 is not 48".into())
    );
    // Only the signed one changed: the two algorithm identifiers differ.
    let inner = with_cert_bytes(|der| {
        let at = positions(der, &salt)[0];
        der[at + 4] = 0x20;
    });
    assert_eq!(
        reject(&inner, &strict(), &Binding::Unchecked).check(),
        "signature_parameters"
    );
}

#[test]
fn a_vcek_of_another_chip_does_not_verify_the_report() {
    let mut e = good();
    e.endorsement_cert = data("go-sev-guest-milan", "vcek.der");
    assert_eq!(
        reject(&e, &strict(), &Binding::Unchecked).check(),
        "report_signature"
    );
}

#[test]
fn a_chain_from_another_product_line_is_caught() {
    // A Genoa report (CPUID in v3) with a Milan VCEK: the chain says Milan, the CPU says Genoa.
    let e = Evidence {
        report: data("trustee-azure-genoa", "report.bin"),
        endorsement_cert: data("virtee-sev-milan", "vcek.der"),
    };
    assert!(matches!(
        reject(&e, &strict(), &Binding::Unchecked),
        RejectReason::ProductMismatch { .. }
    ));
    // A Turin VCEK with a Milan v2 report: chains to Turin, which the policy does not admit;
    // admitted, it still did not sign the report.
    let mut e = good();
    e.endorsement_cert = data("virtee-sev-milan", "vcek_turin_unpaired.der");
    assert_eq!(
        reject(&e, &strict(), &Binding::Unchecked),
        RejectReason::ProductNotAdmitted(Product::Turin)
    );
    assert_eq!(
        reject(&e, &strict().with_any_tcb(), &Binding::Unchecked).check(),
        "report_signature"
    );
}

#[test]
fn a_certificate_whose_issuer_signature_is_forged_does_not_chain() {
    // Corrupt the last byte of the VCEK's RSA-PSS signature by the ASK (a certificate from a
    // fake chain looks exactly like this to a verifier that only trusts pinned roots).
    let mut e = good();
    let n = e.endorsement_cert.len();
    e.endorsement_cert[n - 1] ^= 0x01;
    assert_eq!(
        reject(&e, &strict(), &Binding::Unchecked).check(),
        "certificate_chain"
    );
    // A host-supplied ARK/ASK never matters: the virtee chain file is not an input at all, and
    // the AMD-trust verifier never consults anything but its pinned roots.
}

#[test]
fn simulated_trust_does_not_accept_amd_evidence() {
    let p = Policy {
        trust: Trust::Simulated,
        ..strict()
    };
    // The VCEK names AMD's SEV-Milan as its issuer, which is no simulated signer.
    assert_eq!(
        reject(&good(), &p, &Binding::Unchecked).check(),
        "certificate_issuer"
    );
}

#[test]
fn every_policy_check_rejects_the_genuine_report_when_asked_to() {
    let e = good();
    let report = bulwark_attest::AttestationReport::from_bytes(&e.report).unwrap();
    let cases: Vec<(&str, Relax)> = vec![
        ("smt", |p| p.platform.allow_smt = false),
        ("guest_smt", |p| p.guest_policy.allow_smt = false),
        ("single_socket", |p| {
            p.guest_policy.require_single_socket = true
        }),
        ("vmpl", |p| p.vmpl = 1),
        ("minimum_tcb", |p| milan(p).minimum_tcb.snp = 9),
        ("minimum_tcb", |p| milan(p).minimum_tcb.microcode = 0x74),
        ("minimum_launch_tcb", |p| {
            milan(p).minimum_launch_tcb.bootloader = 4
        }),
        ("minimum_firmware", |p| milan(p).minimum_firmware.build = 5),
        ("minimum_firmware", |p| milan(p).minimum_firmware.minor = 53),
        ("product_admitted", |p| {
            p.products.remove(&Product::Milan);
        }),
        ("measurement", |p| {
            p.measurements = Measurements::OneOf(vec![HexBytes([7; 48])])
        }),
        ("host_data", |p| p.host_data = Some(HexBytes([1; 32]))),
        ("id_key", |p| p.id_key_digests = vec![HexBytes([2; 48])]),
        ("author_key", |p| {
            p.author_key_digests = vec![HexBytes([3; 48])]
        }),
        ("chip_id", |p| p.chip_ids = vec![HexBytes([4; 64])]),
        ("signing_key", |p| p.allow_vcek = false),
    ];
    for (check, relax) in cases {
        let mut p = strict();
        relax(&mut p);
        assert_eq!(reject(&e, &p, &Binding::Unchecked).check(), check);
    }
    // The same lists accept the report once they name its values.
    let mut p = strict();
    p.measurements = Measurements::OneOf(vec![HexBytes([7; 48]), HexBytes(report.measurement())]);
    p.host_data = Some(HexBytes(report.host_data()));
    p.id_key_digests = vec![HexBytes(report.id_key_digest())];
    p.author_key_digests = vec![HexBytes(report.author_key_digest())];
    p.chip_ids = vec![HexBytes(report.chip_id())];
    milan(&mut p).minimum_tcb = Tcb {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 0x73,
        fmc: None,
    };
    verify(&e, &p, &Binding::Unchecked, NOW).unwrap();
}

#[test]
fn report_data_must_equal_the_expected_binding() {
    let e = good();
    let actual = bulwark_attest::AttestationReport::from_bytes(&e.report)
        .unwrap()
        .report_data();
    verify(&e, &strict(), &Binding::ReportData(actual), NOW).unwrap();
    let mut other = actual;
    other[63] ^= 1;
    assert_eq!(
        reject(&e, &strict(), &Binding::ReportData(other)).check(),
        "report_data"
    );
}

#[test]
fn the_chain_and_signature_cache_changes_no_verdict() {
    use bulwark_attest::{verify_with_cache, ChainCache};
    let cache = ChainCache::new();
    for _ in 0..2 {
        verify_with_cache(&good(), &strict(), &Binding::Unchecked, NOW, &cache).unwrap();
        // A cached chain does not excuse a broken report signature ...
        assert_eq!(
            verify_with_cache(
                &with_byte(0x90, |b| b ^ 1),
                &strict(),
                &Binding::Unchecked,
                NOW,
                &cache
            )
            .unwrap_err()
            .check(),
            "report_signature"
        );
        // ... nor a forged certificate, which hashes differently.
        let mut e = good();
        let n = e.endorsement_cert.len();
        e.endorsement_cert[n - 1] ^= 1;
        assert_eq!(
            verify_with_cache(&e, &strict(), &Binding::Unchecked, NOW, &cache)
                .unwrap_err()
                .check(),
            "certificate_chain"
        );
        // ... nor, once the report's signature is known good, another binding.
        assert_eq!(
            verify_with_cache(
                &good(),
                &strict(),
                &Binding::ReportData([7; 64]),
                NOW,
                &cache
            )
            .unwrap_err()
            .check(),
            "report_data"
        );
        // ... nor trust in another root.
        let sim = Policy {
            trust: Trust::Simulated,
            ..strict()
        };
        assert_eq!(
            verify_with_cache(&good(), &sim, &Binding::Unchecked, NOW, &cache)
                .unwrap_err()
                .check(),
            "certificate_issuer"
        );
    }
}
