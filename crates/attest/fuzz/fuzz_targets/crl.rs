//! Arbitrary bytes as a certificate revocation list (DER or PEM): nothing may panic, and
//! nothing but a list signed by a pinned ARK may be accepted (a fuzzer that finds a CRL whose
//! signature verifies has found a forgery).
#![no_main]

use bulwark_attest::Crl;
use libfuzzer_sys::fuzz_target;

/// The genuine lists the corpus starts from; any other accepted input is a finding.
const GENUINE: [&[u8]; 2] = [
    include_bytes!("../../tests/data/amd-crl/milan.crl.der"),
    include_bytes!("../../tests/data/amd-crl/genoa.crl.der"),
];

fuzz_target!(|data: &[u8]| {
    if let Ok(crl) = Crl::from_der(data) {
        assert!(
            GENUINE.contains(&crl.der()),
            "a CRL that is not AMD's verified: {:?}",
            crl
        );
        let _ = crl.revokes(data);
    }
});
