//! Arbitrary bytes into the VCEK/VLEK extension decoders (SPL integers, the raw-or-tagged
//! hardware id, IA5 strings), checking what each promises: an SPL fits its encoding, a
//! hardware id has exactly the requested length. Nothing may panic.
#![no_main]

use bulwark_attest::certs::{decode_ext, decode_hwid, decode_ia5, ExtValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let ExtValue::Int(n) = decode_ext(data) {
        // A DER INTEGER of at most 8 significant bytes, non-negative.
        assert_eq!(data[0], 0x02);
        assert!(data.len() <= 11, "{n}");
    }
    for len in [8, 64] {
        if let Some(id) = decode_hwid(data, len) {
            assert_eq!(id.len(), len);
        }
    }
    let _ = decode_ia5(data);
});
