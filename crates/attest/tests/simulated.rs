//! The simulated PSP's evidence goes through the same verifier, only under `trust: simulated`,
//! and lets every policy check be hit on evidence that is otherwise valid.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::report::policy_bits;
use bulwark_attest::simulated::{
    generate_root, SimulatedPsp, SIMULATED_ARK_PEM, SIMULATED_ASK_PEM, SIMULATED_ROOT_SEED,
};
use bulwark_attest::{
    verify, Binding, HexBytes, Measurements, Policy, Product, RejectReason, Tcb, Trust,
};

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
    assert_eq!(
        check(&psp(), &amd).unwrap_err().check(),
        "certificate_chain"
    );
}

#[test]
fn the_committed_simulated_root_comes_from_the_published_seed() {
    let root = generate_root(SIMULATED_ROOT_SEED).unwrap();
    assert_eq!(root.ark_pem, SIMULATED_ARK_PEM);
    assert_eq!(root.ask_pem, SIMULATED_ASK_PEM);
}

/// A change to the simulated chip or guest that one check must catch.
type Mutation = fn(&mut SimulatedPsp);

#[test]
fn every_guest_policy_check_fires_on_resigned_evidence() {
    let cases: Vec<(&str, Mutation)> = vec![
        ("debug", |p| p.policy |= policy_bits::DEBUG),
        ("migration_agent", |p| p.policy |= policy_bits::MIGRATE_MA),
        ("vmpl", |p| p.vmpl = 1),
        ("measurement", |p| p.measurement = [0x43; 48]),
        ("host_data", |p| p.host_data = [1; 32]),
        ("certificate_tcb", |p| {
            p.vcek_issued_for = Some(Tcb { snp: 7, ..p.tcb })
        }),
        ("hardware_id", |p| p.vcek_issued_to = Some([9; 64])),
    ];
    let mut policy = sim_policy();
    policy.host_data = Some(HexBytes([0; 32]));
    for (expected, mutate) in cases {
        let mut p = psp();
        mutate(&mut p);
        assert_eq!(check(&p, &policy).unwrap_err().check(), expected);
    }
    let mut p = psp();
    p.policy &= !policy_bits::SMT;
    let mut single = sim_policy();
    single.require_single_socket = true;
    assert_eq!(check(&p, &single).unwrap_err().check(), "single_socket");
    let mut min = sim_policy();
    min.minimum_tcb = Tcb {
        microcode: 116,
        ..Tcb::default()
    };
    assert_eq!(
        check(&psp(), &min).unwrap_err(),
        RejectReason::TcbBelowMinimum {
            component: "microcode",
            minimum: 116,
            reported: 115
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
        verify(&e, &sim_policy(), &Binding::ReportData(data))
            .unwrap_err()
            .check(),
        "report_signature"
    );
}

#[test]
fn the_binding_and_the_sealing_key_depend_on_what_they_should() {
    let e = psp().evidence([2; 64]).unwrap();
    assert_eq!(
        verify(&e, &sim_policy(), &Binding::ReportData([3; 64]))
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
    assert_eq!(check(&p, &sim_policy()).unwrap().report_version, 5);
    // The same bytes in a version 3 report are reserved: a v5 report relabelled as v3 fails on
    // them before anything else.
    let data = [0x5a; 64];
    let mut e = p.evidence(data).unwrap();
    e.report[0] = 3;
    assert_eq!(
        verify(&e, &sim_policy(), &Binding::ReportData(data)).unwrap_err(),
        RejectReason::ReservedNonZero {
            offset: 0x1F8,
            value: 1
        }
    );
}
