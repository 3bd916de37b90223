//! Bulwark checks signatures with `ed25519-zebra` (curve25519-dalek 4, AVX2 at run time); the
//! `tendermint` crate, its light client and CometBFT's Go verifier use the ZIP-215 rules as
//! `ed25519-consensus` implements them. A signature one accepts and the other refuses would
//! split validators from light clients, so the two are compared where ed25519 implementations
//! disagree: small-order keys and nonces in every encoding, keys and nonces with a small-order
//! component under a real `s` (cofactored and cofactorless checks differ there), non-canonical
//! encodings of large-order points, a non-canonical `s`, and corrupted signatures.

use bulwark_types::signing::{sign, verify, SignatureError};
use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::{EdwardsPoint, Scalar};
use ed25519_consensus::{SigningKey, VerificationKey};
use sha2::{Digest, Sha512};
use tendermint::{PublicKey, Signature};

/// p = 2^255 - 19, little-endian.
const P: [u8; 32] = {
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    p
};

/// The group order ℓ, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `a + b` on little-endian 256-bit integers, if it does not overflow 2^255.
fn add_below_2_255(a: &[u8; 32], b: &[u8; 32]) -> Option<[u8; 32]> {
    let mut sum = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        sum[i] = s as u8;
        carry = s >> 8;
    }
    (carry == 0 && sum[31] & 0x80 == 0).then_some(sum)
}

/// Every encoding of every small-order point: the eight canonical ones, `y + p` where that is
/// still below 2^255 (y is 0 or 1), and either with the sign bit set on the two points whose x
/// is 0 (ZIP-215's list has these fourteen).
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut all = Vec::new();
    for point in EIGHT_TORSION {
        let canonical = point.compress().to_bytes();
        // The sign bit may be set on either encoding of a point whose x is 0 (it names -x).
        let x_is_zero = point.compress() == (-point).compress();
        let signs: &[u8] = if x_is_zero {
            &[0, 0x80]
        } else {
            &[canonical[31] & 0x80]
        };
        let mut y = canonical;
        y[31] &= 0x7f;
        let shifted = add_below_2_255(&y, &P);
        for sign in signs {
            for mut encoding in [Some(y), shifted].into_iter().flatten() {
                encoding[31] |= sign;
                all.push(encoding);
            }
        }
    }
    all.sort();
    all.dedup();
    all
}

/// What `ed25519-consensus` says of `signature` on `message` by the key encoded as `key`.
fn reference(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
    let key = VerificationKey::try_from(*key).map_err(|_| SignatureError::BadKey)?;
    key.verify(&ed25519_consensus::Signature::from(*signature), message)
        .map_err(|_| SignatureError::Invalid)
}

/// What Bulwark says of the same, through `tendermint`'s types. A key `tendermint` refuses
/// to hold is a bad key for both.
fn bulwark(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
    let key = PublicKey::from_raw_ed25519(key).ok_or(SignatureError::BadKey)?;
    let signature = Signature::new(*signature)
        .ok()
        .flatten()
        .ok_or(SignatureError::Malformed(64))?;
    verify(&key, message, &signature)
}

#[test]
fn the_fourteen_small_order_encodings_are_the_zip215_list() {
    assert_eq!(small_order_encodings().len(), 14);
}

#[test]
fn both_verifiers_agree_on_every_small_order_key_and_nonce() {
    let encodings = small_order_encodings();
    let mut accepted = 0;
    for key in &encodings {
        for nonce in &encodings {
            // s = 0: [8][s]B = [8]R + [8][k]A holds for any small-order R and A, so ZIP-215
            // accepts all 196; implementations that refuse small-order or non-canonical
            // points do not.
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(nonce);
            for message in [&b"Zcash"[..], b"a vote"] {
                let expected = reference(key, message, &signature);
                assert_eq!(
                    bulwark(key, message, &signature),
                    expected,
                    "key {key:02x?}, nonce {nonce:02x?}"
                );
                accepted += usize::from(expected.is_ok());
            }
        }
    }
    assert_eq!(accepted, 2 * 196, "ZIP-215 accepts every one of these");
}

#[test]
fn both_verifiers_agree_on_genuine_corrupted_and_non_canonical_signatures() {
    for seed in 0..64u8 {
        let key = SigningKey::from([seed; 32]);
        let public = key.verification_key().to_bytes();
        let message = Sha512::digest([seed]).to_vec();
        let genuine: [u8; 64] = sign(&key, &message)
            .as_bytes()
            .try_into()
            .expect("64 bytes");
        assert_eq!(bulwark(&public, &message, &genuine), Ok(()));
        assert_eq!(reference(&public, &message, &genuine), Ok(()));
        // s + ℓ is the same scalar, non-canonical: refused by both.
        let mut s = [0u8; 32];
        s.copy_from_slice(&genuine[32..]);
        if let Some(s_plus_l) = add_below_2_255(&s, &L) {
            let mut shifted = genuine;
            shifted[32..].copy_from_slice(&s_plus_l);
            assert_eq!(
                reference(&public, &message, &shifted),
                Err(SignatureError::Invalid)
            );
            assert_eq!(
                bulwark(&public, &message, &shifted),
                Err(SignatureError::Invalid)
            );
        }
        // One flipped bit anywhere in the signature, the message or the key.
        for bit in (0..512).step_by(7).map(|b| (b + usize::from(seed)) % 512) {
            let mut corrupted = genuine;
            corrupted[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                bulwark(&public, &message, &corrupted),
                reference(&public, &message, &corrupted),
                "seed {seed}, signature bit {bit}"
            );
        }
        for bit in (0..256).step_by(5).map(|b| (b + usize::from(seed)) % 256) {
            let mut key = public;
            key[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                bulwark(&key, &message, &genuine),
                reference(&key, &message, &genuine),
                "seed {seed}, key bit {bit}"
            );
            let mut other = message.clone();
            let at = bit / 8 % other.len();
            other[at] ^= 1 << (bit % 8);
            assert_eq!(
                bulwark(&public, &other, &genuine),
                reference(&public, &other, &genuine)
            );
        }
    }
}

/// A scalar from 64 bytes of SHA-512 over `label` and `n`.
fn scalar(label: &[u8], n: u8) -> Scalar {
    let wide: [u8; 64] = Sha512::new()
        .chain_update(label)
        .chain_update([n])
        .finalize()
        .into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

#[test]
fn both_verifiers_accept_keys_and_nonces_with_a_small_order_component() {
    // A = aB + T and R = rB + T' with s = r + k·a: [8][s]B = [8]R + [8][k]A holds, as the
    // cofactored check ZIP-215 prescribes asks, while [s]B = R + [k]A (the cofactorless one)
    // fails unless T' + [k]T is the identity. Both verifiers must accept every one.
    for (i, key_torsion) in EIGHT_TORSION.iter().enumerate() {
        for (j, nonce_torsion) in EIGHT_TORSION.iter().enumerate() {
            let n = (i * 8 + j) as u8;
            let a = scalar(b"key", n);
            let r = scalar(b"nonce", n);
            let key = (EdwardsPoint::mul_base(&a) + key_torsion)
                .compress()
                .to_bytes();
            let nonce = (EdwardsPoint::mul_base(&r) + nonce_torsion)
                .compress()
                .to_bytes();
            let message = [n; 40];
            let k: [u8; 64] = Sha512::new()
                .chain_update(nonce)
                .chain_update(key)
                .chain_update(message)
                .finalize()
                .into();
            let s = r + Scalar::from_bytes_mod_order_wide(&k) * a;
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&nonce);
            signature[32..].copy_from_slice(s.as_bytes());
            assert_eq!(reference(&key, &message, &signature), Ok(()), "{i}, {j}");
            assert_eq!(bulwark(&key, &message, &signature), Ok(()), "{i}, {j}");
            // The same with a wrong s is refused by both.
            signature[32] ^= 1;
            assert_eq!(
                reference(&key, &message, &signature),
                Err(SignatureError::Invalid)
            );
            assert_eq!(
                bulwark(&key, &message, &signature),
                Err(SignatureError::Invalid)
            );
        }
    }
}

#[test]
fn both_verifiers_agree_on_non_canonical_encodings_of_large_order_points() {
    // y + p < 2^255 only for y < 19: each such y on the curve, either sign, as key and as
    // nonce, against a genuine signature by another key and against s = 0.
    let genuine_key = SigningKey::from([3; 32]);
    let message = b"non-canonical";
    let genuine: [u8; 64] = sign(&genuine_key, message)
        .as_bytes()
        .try_into()
        .expect("64 bytes");
    let mut checked = 0;
    for y in 2u8..19 {
        let mut canonical = [0u8; 32];
        canonical[0] = y;
        if curve25519_dalek::edwards::CompressedEdwardsY(canonical)
            .decompress()
            .is_none()
        {
            continue;
        }
        for sign_bit in [0, 0x80] {
            let mut encoding = add_below_2_255(&canonical, &P).expect("y + p < 2^255");
            encoding[31] |= sign_bit;
            let mut as_nonce = genuine;
            as_nonce[..32].copy_from_slice(&encoding);
            let mut zero_s = [0u8; 64];
            zero_s[..32].copy_from_slice(&encoding);
            let public = genuine_key.verification_key().to_bytes();
            for (key, signature) in [
                (encoding, genuine),
                (encoding, zero_s),
                (public, as_nonce),
                (encoding, as_nonce),
            ] {
                assert_eq!(
                    bulwark(&key, message, &signature),
                    reference(&key, message, &signature),
                    "y {y}, sign {sign_bit:#x}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 8,
        "only {checked} cases: too few such points on the curve"
    );
}

#[test]
fn both_verifiers_refuse_an_s_with_its_top_bit_set() {
    let key = SigningKey::from([4; 32]);
    let public = key.verification_key().to_bytes();
    let mut signature: [u8; 64] = sign(&key, b"top bit").as_bytes().try_into().expect("64");
    signature[63] |= 0x80;
    assert_eq!(
        reference(&public, b"top bit", &signature),
        Err(SignatureError::Invalid)
    );
    assert_eq!(
        bulwark(&public, b"top bit", &signature),
        Err(SignatureError::Invalid)
    );
}
