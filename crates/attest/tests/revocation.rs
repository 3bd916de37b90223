//! Revocation: AMD's genuine ARK-signed CRLs (Milan, Genoa) verify under the pinned ARKs and
//! nothing else does; a CRL carried in the policy is bounded in age; a listed ASK or VCEK
//! serial is refused with `revoked`. The revoking cases use the simulated root, whose ARK key
//! is public, because AMD's lists revoke no certificate in the test data.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_attest::simulated::{sign_crl, simulated_ask_serial, SimulatedPsp};
use bulwark_attest::{
    verify, Binding, Crl, CrlError, HexBytes, Measurements, Policy, PolicyError, Product,
    RejectReason, Trust,
};
use common::{data, evidence, strict, MID_2025, NOW};

const DAY: u64 = 24 * 3600;

#[test]
fn amds_milan_and_genoa_crls_verify_under_the_pinned_arks() {
    let milan = Crl::from_der(&data("amd-crl", "milan.crl.der")).unwrap();
    assert_eq!(
        (milan.trust(), milan.product()),
        (Trust::Amd, Product::Milan)
    );
    assert_eq!(milan.this_update(), 1_746_535_146); // 2025-05-06T12:39:06Z
    assert!(milan.revoked().is_empty());
    let genoa = Crl::from_der(&data("amd-crl", "genoa.crl.pem")).unwrap();
    assert_eq!(
        (genoa.trust(), genoa.product()),
        (Trust::Amd, Product::Genoa)
    );
    assert_eq!(genoa.revoked(), &[vec![0x02, 0x00, 0x01]]);
    // The current Genoa ASK is 0x020002: not revoked.
    assert!(!genoa.revokes(&[0x02, 0x00, 0x02]));
}

#[test]
fn a_crl_altered_anywhere_in_its_signed_part_is_refused() {
    let der = data("amd-crl", "milan.crl.der");
    // The nextUpdate year, inside the signed TBSCertList.
    let at = der
        .windows(4)
        .position(|w| w == b"2605")
        .expect("nextUpdate 2026-05");
    let mut forged = der.clone();
    forged[at + 1] = b'9'; // 2026 -> 2029
    assert!(matches!(
        Crl::from_der(&forged),
        Err(CrlError::Signature(_))
    ));
    // AMD signs with a 48-byte salt (`A2 03 02 01 30`, in the signed and the outer algorithm);
    // a list claiming 32 is refused for its parameters before its signature is tried.
    let salt = [0xA2, 0x03, 0x02, 0x01, 0x30];
    let mut other_salt = der.clone();
    let at: Vec<usize> = (0..der.len() - salt.len())
        .filter(|i| der[*i..i + salt.len()] == salt)
        .collect();
    assert_eq!(at.len(), 2);
    for i in at {
        other_salt[i + 4] = 0x20;
    }
    assert_eq!(
        Crl::from_der(&other_salt),
        Err(CrlError::SignatureParameters(
            "PSS salt length 32 is not 48".into()
        ))
    );
    let mut truncated = der;
    truncated.truncate(100);
    assert!(matches!(
        Crl::from_der(&truncated),
        Err(CrlError::Malformed(_))
    ));
}

#[test]
fn the_genoa_report_passes_amds_genuine_crl_while_it_is_fresh_and_not_after() {
    let e = evidence("trustee-azure-genoa", "vcek.pem");
    let mut policy = strict();
    policy.revocation.crls.insert(
        Product::Genoa,
        Crl::from_der(&data("amd-crl", "genoa.crl.der")).unwrap(),
    );
    policy.revocation.require_crl = true;
    // 2025-06: the Genoa CRL (thisUpdate 2024-10-23) is 221 days old.
    verify(&e, &policy, &Binding::Unchecked, MID_2025).unwrap();
    // 2026-12: 769 days old, beyond the template's 400.
    assert!(matches!(
        verify(&e, &policy, &Binding::Unchecked, NOW).unwrap_err(),
        RejectReason::CrlStale {
            product: Product::Genoa,
            ..
        }
    ));
    // Without a Genoa CRL a policy that requires one refuses by name.
    policy.revocation.crls.clear();
    assert_eq!(
        verify(&e, &policy, &Binding::Unchecked, MID_2025).unwrap_err(),
        RejectReason::CrlMissing(Product::Genoa)
    );
}

fn sim_policy_with_crl(revoked: &[Vec<u8>], this_update: u64) -> Policy {
    let mut policy = Policy::strict(Trust::Simulated, Measurements::Any);
    let crl = sign_crl(revoked, this_update, this_update + 365 * DAY).unwrap();
    policy
        .revocation
        .crls
        .insert(Product::Milan, Crl::from_der(&crl).unwrap());
    policy
}

fn check(policy: &Policy) -> Result<bulwark_attest::VerifiedReport, RejectReason> {
    let data = [1; 64];
    let e = SimulatedPsp::new([6; 32], [0; 48]).evidence(data).unwrap();
    verify(&e, policy, &Binding::ReportData(data), NOW)
}

#[test]
fn a_revoked_ask_serial_is_refused_as_revoked() {
    let ask = simulated_ask_serial().unwrap();
    assert_eq!(
        check(&sim_policy_with_crl(std::slice::from_ref(&ask), NOW - DAY)).unwrap_err(),
        RejectReason::Revoked {
            certificate: "ASK",
            serial: hex::encode(&ask)
        }
    );
    // The same root's list without that serial admits the chip.
    check(&sim_policy_with_crl(&[vec![0x7f, 0x01]], NOW - DAY)).unwrap();
    check(&sim_policy_with_crl(&[], NOW - DAY)).unwrap();
}

#[test]
fn a_revoked_vcek_serial_is_refused_as_revoked() {
    let vcek = SimulatedPsp::new([6; 32], [0; 48]).vcek_serial().unwrap();
    assert_eq!(
        check(&sim_policy_with_crl(&[vcek], NOW - DAY))
            .unwrap_err()
            .check(),
        "revoked"
    );
}

#[test]
fn a_crl_older_than_the_bound_or_from_the_future_is_stale() {
    let max = Policy::strict(Trust::Simulated, Measurements::Any)
        .revocation
        .max_crl_age_secs;
    check(&sim_policy_with_crl(&[], NOW - max)).unwrap();
    for this_update in [NOW - max - 1, NOW + 60] {
        assert_eq!(
            check(&sim_policy_with_crl(&[], this_update))
                .unwrap_err()
                .check(),
            "crl_stale"
        );
    }
}

#[test]
fn a_crl_from_the_wrong_roots_never_counts() {
    // In a policy document: refused when the policy is read.
    let mut doc =
        serde_json::to_value(Policy::strict(Trust::Simulated, Measurements::Any)).unwrap();
    doc["revocation"]["crls"]["Milan"] =
        serde_json::json!(hex::encode(data("amd-crl", "milan.crl.der")));
    assert_eq!(
        Policy::from_json(&doc.to_string()),
        Err(PolicyError::CrlMismatch {
            listed: Product::Milan,
            signed_by: Product::Milan,
            trust: Trust::Amd
        })
    );
    // Built in code past that check: the verifier refuses it itself.
    let mut policy = Policy::strict(Trust::Simulated, Measurements::Any);
    policy.revocation.crls.insert(
        Product::Milan,
        Crl::from_der(&data("amd-crl", "milan.crl.der")).unwrap(),
    );
    assert_eq!(
        check(&policy).unwrap_err(),
        RejectReason::CrlIssuer(Product::Milan)
    );
}

#[test]
fn a_genuine_crl_filed_under_another_product_line_is_refused_at_verification() {
    // AMD's Genoa list put under Milan in a policy built in code: the Milan chain is not
    // checked against another line's list.
    let mut policy = common::fits_virtee();
    policy.revocation.crls.insert(
        Product::Milan,
        Crl::from_der(&data("amd-crl", "genoa.crl.der")).unwrap(),
    );
    assert_eq!(
        verify(&common::virtee(), &policy, &Binding::Unchecked, MID_2025).unwrap_err(),
        RejectReason::CrlIssuer(Product::Milan)
    );
}

#[test]
fn a_policy_carries_its_crls_through_json() {
    let mut policy = Policy::strict_template(vec![HexBytes([1; 48])]);
    policy.revocation.crls.insert(
        Product::Milan,
        Crl::from_der(&data("amd-crl", "milan.crl.der")).unwrap(),
    );
    let text = serde_json::to_string(&policy).unwrap();
    assert_eq!(Policy::from_json(&text), Ok(policy));
}
