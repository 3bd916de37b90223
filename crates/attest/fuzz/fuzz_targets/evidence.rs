//! Arbitrary bytes into everything the verifier reads from untrusted parties: the report, the
//! endorsement certificate (DER or PEM), a host-offered chain, and the whole verifier under
//! both trust roots and every product line. Nothing may panic; rejections are fine.
#![no_main]

use bulwark_attest::certs::EndorsementCert;
use bulwark_attest::report::REPORT_SIZE;
use bulwark_attest::{
    check_host_chain, inspect, verify, Binding, Evidence, Measurements, Policy, Product, Trust,
};
use libfuzzer_sys::fuzz_target;

/// 2026-12-01: inside the seed certificates' validity.
const NOW: u64 = 1_796_083_200;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(REPORT_SIZE);
    let (report, cert) = data.split_at(split);
    let evidence = Evidence { report: report.to_vec(), endorsement_cert: cert.to_vec() };
    for trust in [Trust::Amd, Trust::Simulated] {
        // Every floor at zero and every product admitted, so fuzzed evidence reaches the
        // later checks too.
        let mut policy = Policy::strict(trust, Measurements::Any).with_any_tcb();
        policy.allow_vlek = true;
        policy.allow_masked_chip_id = true;
        policy.platform.require_alias_check = false;
        let _ = verify(&evidence, &policy, &Binding::Unchecked, NOW);
    }
    let _ = inspect(&evidence);
    let _ = check_host_chain(data);
    if let Ok(c) = EndorsementCert::parse(data) {
        for product in Product::ALL {
            let _ = c.hardware_id(product);
        }
        let _ = c.spl("microcode");
        let _ = c.verifying_key();
        let _ = c.csp_id();
        let _ = c.check_signature_parameters();
        let _ = c.check_subject("SEV-VCEK");
    }
});
