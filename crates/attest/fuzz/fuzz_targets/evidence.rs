//! Arbitrary bytes into everything the verifier reads from untrusted parties: the report, the
//! endorsement certificate (DER or PEM), a host-offered chain, and the whole verifier under
//! both trust roots. Nothing may panic; rejections are fine.
#![no_main]

use bulwark_attest::certs::EndorsementCert;
use bulwark_attest::report::REPORT_SIZE;
use bulwark_attest::{check_host_chain, inspect, verify, Binding, Evidence, Measurements, Policy, Trust};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.len().min(REPORT_SIZE);
    let (report, cert) = data.split_at(split);
    let evidence = Evidence { report: report.to_vec(), endorsement_cert: cert.to_vec() };
    for trust in [Trust::Amd, Trust::Simulated] {
        let mut policy = Policy::strict(trust, Measurements::Any);
        policy.allow_vlek = true;
        let _ = verify(&evidence, &policy, &Binding::Unchecked);
    }
    let _ = inspect(&evidence);
    let _ = check_host_chain(data);
    if let Ok(c) = EndorsementCert::parse(data) {
        let _ = c.hardware_id();
        let _ = c.spl("microcode");
        let _ = c.verifying_key();
    }
});
