//! Genuine SEV-SNP reports and AMD certificates captured on real hardware (tests/data/*/SOURCE.txt):
//! each chains to the right AMD product line, is rejected by the strict default policy for
//! the right named reason, and is accepted once the policy allows exactly that.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::{
    verify, Binding, Evidence, KeyKind, Measurements, Policy, Product, RejectReason, Trust,
};

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

pub fn strict() -> Policy {
    Policy::strict(Trust::Amd, Measurements::Any)
}

fn check(
    dir: &str,
    cert: &str,
    strict_says: Option<&str>,
    relax: impl Fn(&mut Policy),
    product: Product,
    kind: KeyKind,
) {
    let e = evidence(dir, cert);
    let strict_result = verify(&e, &strict(), &Binding::Unchecked);
    match strict_says {
        None => {
            let v = strict_result.unwrap_or_else(|r| panic!("{dir}: strict policy rejected: {r}"));
            assert_eq!((v.product, v.signing_key), (product, kind), "{dir}");
        }
        Some(check) => {
            let reason = strict_result.expect_err(dir);
            assert_eq!(reason.check(), check, "{dir}: {reason}");
        }
    }
    let mut relaxed = strict();
    relax(&mut relaxed);
    let v = verify(&e, &relaxed, &Binding::Unchecked)
        .unwrap_or_else(|r| panic!("{dir}: relaxed policy rejected: {r}"));
    assert_eq!((v.product, v.signing_key), (product, kind), "{dir}");
}

#[test]
fn virtee_milan_report_is_accepted_by_the_strict_policy() {
    check(
        "virtee-sev-milan",
        "vcek.der",
        None,
        |_| {},
        Product::Milan,
        KeyKind::Vcek,
    );
}

#[test]
fn azure_genoa_report_is_accepted_by_the_strict_policy() {
    check(
        "trustee-azure-genoa",
        "vcek.pem",
        None,
        |_| {},
        Product::Genoa,
        KeyKind::Vcek,
    );
}

#[test]
fn go_sev_guest_report_is_rejected_for_debug_and_accepted_when_debug_is_allowed() {
    check(
        "go-sev-guest-milan",
        "vcek.der",
        Some("debug"),
        |p| p.allow_debug = true,
        Product::Milan,
        KeyKind::Vcek,
    );
}

#[test]
fn azure_milan_report_is_rejected_as_provisional_tcb_and_accepted_when_allowed() {
    check(
        "trustee-azure-milan",
        "vcek.pem",
        Some("provisional_tcb"),
        |p| p.allow_provisional_tcb = true,
        Product::Milan,
        KeyKind::Vcek,
    );
}

#[test]
fn trustee_vcek_report_is_rejected_as_provisional_tcb_and_accepted_when_allowed() {
    check(
        "trustee-snp-vcek",
        "vcek.der",
        Some("provisional_tcb"),
        |p| p.allow_provisional_tcb = true,
        Product::Milan,
        KeyKind::Vcek,
    );
}

#[test]
fn vlek_report_is_rejected_for_vlek_and_accepted_with_vlek_vmpl1_and_provisional_tcb() {
    check(
        "trustee-snp-vlek",
        "vlek.der",
        Some("signing_key"),
        |p| {
            p.allow_vlek = true;
            p.vmpl = 1;
            p.allow_provisional_tcb = true;
        },
        Product::Milan,
        KeyKind::Vlek,
    );
    // Each relaxation alone is not enough, and each missing one is named.
    let e = evidence("trustee-snp-vlek", "vlek.der");
    let mut p = strict();
    p.allow_vlek = true;
    assert!(matches!(
        verify(&e, &p, &Binding::Unchecked),
        Err(RejectReason::Vmpl {
            expected: 0,
            reported: 1
        })
    ));
    p.vmpl = 1;
    assert_eq!(
        verify(&e, &p, &Binding::Unchecked).unwrap_err().check(),
        "provisional_tcb"
    );
}

#[test]
fn trustees_invalid_vceks_are_rejected() {
    for bad in ["vcek-invalid-legacy.der", "vcek-invalid-new.der"] {
        let mut p = strict();
        p.allow_provisional_tcb = true;
        let reason =
            verify(&evidence("trustee-snp-vcek", bad), &p, &Binding::Unchecked).unwrap_err();
        // Their signatures by the ASK are broken: no pinned root vouches for them.
        assert_eq!(reason.check(), "certificate_chain", "{bad}: {reason}");
    }
}
