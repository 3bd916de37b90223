//! A validator's own signatures, remembered where they are made, cost no check when they come
//! back (in the last commit of each block it receives, relayed by peers). A process of its
//! own: the remembered signatures are process-wide, and the other tests count checks.

use bulwark_types::signing::{
    full_checks_on_this_thread, public_key, remember_signatures_made_on_this_thread,
    remember_verified_signatures, sign, verify, SignatureError,
};
use ed25519_consensus::SigningKey;

#[test]
fn a_signature_made_on_a_thread_that_asked_is_accepted_anywhere_without_a_check() {
    remember_verified_signatures(1024);
    let key = SigningKey::from([9; 32]);
    let public = public_key(&key);
    let sign_on_a_thread = |remember: bool, bytes: &'static [u8]| {
        std::thread::scope(|s| {
            s.spawn(|| {
                if remember {
                    remember_signatures_made_on_this_thread();
                }
                sign(&key, bytes)
            })
            .join()
            .unwrap()
        })
    };
    let own = sign_on_a_thread(true, b"own vote");
    let other = sign_on_a_thread(false, b"other vote");
    let checks = full_checks_on_this_thread();
    assert_eq!(verify(&public, b"own vote", &own), Ok(()));
    assert_eq!(
        full_checks_on_this_thread(),
        checks,
        "its own signature was checked"
    );
    assert_eq!(verify(&public, b"other vote", &other), Ok(()));
    assert_eq!(full_checks_on_this_thread(), checks + 1);
    // Only what was signed is remembered: the same signature on other bytes, or under
    // another key, is checked in full and fails.
    assert_eq!(
        verify(&public, b"own votf", &own),
        Err(SignatureError::Invalid)
    );
    let stranger = public_key(&SigningKey::from([10; 32]));
    assert_eq!(
        verify(&stranger, b"own vote", &own),
        Err(SignatureError::Invalid)
    );
    assert_eq!(full_checks_on_this_thread(), checks + 3);
}
