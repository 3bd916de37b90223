//! Arbitrary bytes as a policy document (genesis's `attestation` section is host input):
//! parsing either yields a policy that serializes back to the same policy, or a typed error.
//! Nothing may panic.
#![no_main]

use bulwark_attest::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = Policy::from_json(text) {
        let again = serde_json::to_string(&policy).expect("a parsed policy serializes");
        assert_eq!(Policy::from_json(&again), Ok(policy), "round trip");
    }
});
