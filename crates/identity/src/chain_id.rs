//! The self-certifying chain id: `<name>-<hex of the first 12 bytes of SHA-256 of the canonical
//! genesis with chain_id set to <name>>`.
//!
//! CometBFT's sign bytes carry only the chain id, so a forged genesis (another validator set,
//! another attestation policy) that reused the real chain id would collect votes that verify on
//! the real chain. With the id derived from the whole document, a forged genesis has another id,
//! and whatever a validator signs there never verifies on the real chain.
//!
//! **The canonical form** of a genesis document is its JSON value (every field the file
//! holds: CometBFT's, the `attestation` policy, the `enrollments`) with `chain_id` replaced by
//! the name, written with no whitespace, every object's members sorted by the bytes of their
//! UTF-8 keys (the order RFC 8785 gives for ASCII keys), strings escaped as `serde_json`
//! writes them (`"` `\` and control characters only; other characters as UTF-8), numbers as
//! the integers or shortest round-trip decimals `serde_json` writes. The file's own layout
//! (indentation, member order) does not matter; any change of a value does.

use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Bytes of the genesis hash in the chain id.
pub const HASH_BYTES: usize = 12;

/// Longest chain name: CometBFT allows chain ids of 50 characters, and the suffix takes 25.
pub const MAX_NAME: usize = 50 - 1 - 2 * HASH_BYTES;

/// Why a chain id is not the one its genesis certifies.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChainIdError {
    /// The name is empty, too long or has characters other than ASCII letters, digits, `-`,
    /// `_` and `.`.
    #[error("chain name {0:?}: 1 to {MAX_NAME} ASCII letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// The genesis has no string `chain_id`, or the document is not an object.
    #[error("genesis has no chain_id")]
    Missing,
    /// The chain id is not `<name>-<24 hex digits>`.
    #[error("chain id {0:?} is not <name>-<24 hex digits of the genesis hash>")]
    NotSelfCertifying(String),
    /// The chain id's hash is not the hash of this genesis: the document was changed after
    /// its id was made, or it is a forgery reusing another network's id.
    #[error(
        "chain id {found:?} does not certify this genesis: its canonical hash gives {expected:?}"
    )]
    Mismatch {
        /// The id this document certifies.
        expected: String,
        /// The id it carries.
        found: String,
    },
}

/// The canonical bytes of a JSON value (see the module documentation).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serialising a string, number, bool or null into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn check_name(name: &str) -> Result<(), ChainIdError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ChainIdError::BadName(name.into()))
    }
}

/// The chain id `genesis` certifies under `name`.
pub fn expected_chain_id(name: &str, genesis: &Value) -> Result<String, ChainIdError> {
    check_name(name)?;
    let mut doc = genesis.clone();
    let Value::Object(fields) = &mut doc else {
        return Err(ChainIdError::Missing);
    };
    fields.insert("chain_id".into(), Value::String(name.into()));
    let digest = Sha256::digest(canonical_json(&doc));
    Ok(format!("{name}-{}", hex::encode(&digest[..HASH_BYTES])))
}

/// Sets `genesis`'s `chain_id` to the id it certifies under `name` and returns that id.
pub fn certify(name: &str, genesis: &mut Value) -> Result<String, ChainIdError> {
    let id = expected_chain_id(name, genesis)?;
    match genesis {
        Value::Object(fields) => {
            fields.insert("chain_id".into(), Value::String(id.clone()));
            Ok(id)
        }
        _ => Err(ChainIdError::Missing),
    }
}

/// The name part of a self-certifying chain id.
pub fn chain_name(chain_id: &str) -> Result<&str, ChainIdError> {
    let not = || ChainIdError::NotSelfCertifying(chain_id.into());
    let (name, hash) = chain_id.rsplit_once('-').ok_or_else(not)?;
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if hash.len() != 2 * HASH_BYTES || !hash.bytes().all(lower_hex) {
        return Err(not());
    }
    check_name(name)?;
    Ok(name)
}

/// Checks that `genesis`'s chain id is the one the document certifies; returns the chain name.
pub fn check_chain_id(genesis: &Value) -> Result<String, ChainIdError> {
    let found = genesis
        .get("chain_id")
        .and_then(Value::as_str)
        .ok_or(ChainIdError::Missing)?;
    let name = chain_name(found)?;
    let expected = expected_chain_id(name, genesis)?;
    if expected != found {
        return Err(ChainIdError::Mismatch {
            expected,
            found: found.into(),
        });
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn genesis() -> Value {
        json!({
            "genesis_time": "2026-12-01T00:00:00Z",
            "chain_id": "x",
            "initial_height": "1",
            "validators": [{"address": "AA", "pub_key": {"type": "tendermint/PubKeyEd25519", "value": "abc="}, "power": "10", "name": "node0"}],
            "attestation": {"trust": "simulated", "measurements": {"one_of": ["00"]}},
        })
    }

    #[test]
    fn canonical_json_sorts_members_and_drops_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{ "b": [1, {"d": "é\n", "c": null}], "a": true }"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":true,"b":[1,{"c":null,"d":"é\n"}]}"#
        );
    }

    #[test]
    fn a_certified_genesis_checks_and_keeps_its_id_through_reformatting() {
        let mut g = genesis();
        let id = certify("alpha", &mut g).unwrap();
        assert!(
            id.starts_with("alpha-") && id.len() == "alpha-".len() + 24,
            "{id}"
        );
        assert_eq!(check_chain_id(&g).unwrap(), "alpha");
        // Another layout of the same document: pretty-printed, members in another order.
        let pretty = serde_json::to_string_pretty(&g).unwrap();
        let reparsed: Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(check_chain_id(&reparsed).unwrap(), "alpha");
        assert_eq!(chain_name(&id).unwrap(), "alpha");
    }

    #[test]
    fn a_forged_genesis_reusing_the_real_chain_id_is_refused() {
        let mut real = genesis();
        let id = certify("alpha", &mut real).unwrap();
        let mut forged = real.clone();
        forged["attestation"]["trust"] = json!("amd");
        assert!(matches!(
            check_chain_id(&forged),
            Err(ChainIdError::Mismatch { found, .. }) if found == id
        ));
        let mut swapped = real.clone();
        swapped["validators"][0]["pub_key"]["value"] = json!("xyz=");
        assert!(matches!(
            check_chain_id(&swapped),
            Err(ChainIdError::Mismatch { .. })
        ));
        // A forgery can certify itself, but only under another id.
        let own = certify("alpha", &mut swapped).unwrap();
        assert_ne!(own, id);
    }

    #[test]
    fn ids_that_are_not_self_certifying_are_named() {
        for bad in [
            "bulwark-testnet",
            "alpha",
            "alpha-0123456789abcdef0123456X",
            "-0123456789abcdef01234567",
        ] {
            let mut g = genesis();
            g["chain_id"] = json!(bad);
            assert!(check_chain_id(&g).is_err(), "{bad}");
        }
        assert_eq!(check_chain_id(&json!({})), Err(ChainIdError::Missing));
        assert!(matches!(
            certify("a b", &mut genesis()),
            Err(ChainIdError::BadName(_))
        ));
        assert!(matches!(
            certify(&"n".repeat(MAX_NAME + 1), &mut genesis()),
            Err(ChainIdError::BadName(_))
        ));
        assert!(
            certify(&"n".repeat(MAX_NAME), &mut genesis())
                .unwrap()
                .len()
                <= 50
        );
    }
}
