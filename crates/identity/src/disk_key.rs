//! The data disk's key, made from the kernel's CRNG when the guest enrols and kept on the disk
//! only wrapped (ChaCha20-Poly1305) under the sealing key, in one of the raw disk's key slots.
//!
//! A slot is `magic | version | TCB_VERSION | nonce | ciphertext`, and everything before the
//! ciphertext is authenticated with it. It names no chain and no validator: the chain name is
//! in the sealing key's derivation instead, so the host's disk carries no such string. After a
//! firmware update the key is wrapped again under the committed TCB into the other slot
//! ([`rewrap`]), so the disk key itself never changes and the disk is never re-encrypted.

use crate::sealed::{committed_tcb, IdentityError};
use bulwark_attest::EvidenceSource;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::Zeroizing;

/// Bytes of the disk key (what `bulwark_boot::sealed_disk` takes).
pub const DISK_KEY_BYTES: usize = 128;
/// The purpose mixed into the wrapping key.
pub const DISK_KEY_PURPOSE: &[u8] = b"bulwark/data-disk-key/v1";
const MAGIC: &[u8; 8] = b"BWDKEY\x00\x01";
const HEADER: usize = 8 + 8 + 12;
/// Bytes of a filled slot.
pub const SLOT_LEN: usize = HEADER + DISK_KEY_BYTES + 16;

/// The disk key, wiped when dropped.
pub type DiskKey = Zeroizing<[u8; DISK_KEY_BYTES]>;

/// A fresh disk key from the CRNG.
pub fn generate() -> Result<DiskKey, IdentityError> {
    let mut key = Zeroizing::new([0u8; DISK_KEY_BYTES]);
    getrandom::getrandom(key.as_mut_slice())
        .map_err(|e| IdentityError::Randomness(e.to_string()))?;
    Ok(key)
}

fn context(chain_name: &str) -> Vec<u8> {
    crate::sealed::context_for(DISK_KEY_PURPOSE, chain_name)
}

/// `key` wrapped under the sealing key at `tcb_version` for `chain_name`: a slot's bytes.
pub fn wrap_at(
    source: &mut dyn EvidenceSource,
    key: &DiskKey,
    chain_name: &str,
    tcb_version: u64,
) -> Result<Vec<u8>, IdentityError> {
    let wrapping = Zeroizing::new(source.sealing_key(tcb_version, &context(chain_name))?);
    let mut nonce = [0u8; 12];
    getrandom::getrandom(&mut nonce).map_err(|e| IdentityError::Randomness(e.to_string()))?;
    let mut slot = Vec::with_capacity(SLOT_LEN);
    slot.extend_from_slice(MAGIC);
    slot.extend_from_slice(&tcb_version.to_be_bytes());
    slot.extend_from_slice(&nonce);
    let sealed = ChaCha20Poly1305::new(Key::from_slice(wrapping.as_slice()))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: key.as_slice(),
                aad: &slot,
            },
        )
        .map_err(|_| IdentityError::Malformed("encryption failed".into()))?;
    slot.extend_from_slice(&sealed);
    Ok(slot)
}

/// `key` wrapped at the committed TCB.
pub fn wrap(
    source: &mut dyn EvidenceSource,
    key: &DiskKey,
    chain_name: &str,
) -> Result<Vec<u8>, IdentityError> {
    let tcb = committed_tcb(source)?;
    wrap_at(source, key, chain_name, tcb)
}

/// The TCB a slot's bytes name, if they are a slot at all.
pub fn slot_tcb(slot: &[u8]) -> Option<u64> {
    if slot.len() < SLOT_LEN || &slot[..8] != MAGIC {
        return None;
    }
    slot[8..16].try_into().ok().map(u64::from_be_bytes)
}

/// An opened slot: the key, the slot's index and the TCB it was wrapped at.
pub struct Unwrapped {
    /// The disk key.
    pub key: DiskKey,
    /// Which slot opened.
    pub slot: usize,
    /// The TCB it was wrapped at.
    pub tcb_version: u64,
}

/// Opens the first slot (highest TCB first) whose key unwraps for this guest and chain.
pub fn unwrap(
    source: &mut dyn EvidenceSource,
    slots: &[Vec<u8>],
    chain_name: &str,
) -> Result<Unwrapped, IdentityError> {
    let mut candidates: Vec<(usize, u64)> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| slot_tcb(s).map(|t| (i, t)))
        .collect();
    if candidates.is_empty() {
        return Err(IdentityError::Malformed(
            "the data disk has no key slot: wiped, or never enrolled".into(),
        ));
    }
    candidates.sort_by_key(|&(_, t)| std::cmp::Reverse(t));
    let mut last = IdentityError::Unseal;
    for (slot, tcb_version) in candidates {
        let bytes = &slots[slot][..SLOT_LEN];
        let wrapping = match source.sealing_key(tcb_version, &context(chain_name)) {
            Ok(k) => Zeroizing::new(k),
            Err(e) => {
                last = e.into();
                continue;
            }
        };
        let opened = ChaCha20Poly1305::new(Key::from_slice(wrapping.as_slice())).decrypt(
            Nonce::from_slice(&bytes[16..HEADER]),
            Payload {
                msg: &bytes[HEADER..],
                aad: &bytes[..HEADER],
            },
        );
        let Ok(opened) = opened.map(Zeroizing::new) else {
            last = IdentityError::Unseal;
            continue;
        };
        let mut key = Zeroizing::new([0u8; DISK_KEY_BYTES]);
        if opened.len() != DISK_KEY_BYTES {
            return Err(IdentityError::Malformed(
                "a disk key slot of another size".into(),
            ));
        }
        key.copy_from_slice(&opened);
        return Ok(Unwrapped {
            key,
            slot,
            tcb_version,
        });
    }
    Err(last)
}

/// When the firmware has committed to a newer TCB than `opened` was wrapped at: the slot
/// index and bytes to write (the other slot), after which the old slot is cleared.
pub fn rewrap(
    source: &mut dyn EvidenceSource,
    opened: &Unwrapped,
    chain_name: &str,
) -> Result<Option<(usize, Vec<u8>)>, IdentityError> {
    let committed = committed_tcb(source)?;
    if committed == opened.tcb_version {
        return Ok(None);
    }
    let bytes = wrap_at(source, &opened.key, chain_name, committed)?;
    Ok(Some((1 - opened.slot.min(1), bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_attest::simulated::SimulatedPsp;

    fn source(chip: u8, measurement: u8) -> SimulatedPsp {
        SimulatedPsp::new([chip; 32], [measurement; 48])
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_chip_image_and_chain() {
        let key = generate().unwrap();
        let slot = wrap(&mut source(1, 1), &key, "main").unwrap();
        assert_eq!(slot.len(), SLOT_LEN);
        let slots = vec![vec![0; 4096], slot.clone()];
        let opened = unwrap(&mut source(1, 1), &slots, "main").unwrap();
        assert_eq!(*opened.key, *key);
        assert_eq!(opened.slot, 1);
        for (mut other, chain) in [
            (source(2, 1), "main"),
            (source(1, 2), "main"),
            (source(1, 1), "other"),
        ] {
            assert!(unwrap(&mut other, &slots, chain).is_err());
        }
    }

    #[test]
    fn a_slot_the_host_edited_does_not_open_and_names_no_chain() {
        let key = generate().unwrap();
        let slot = wrap(&mut source(1, 1), &key, "main-chain").unwrap();
        assert!(!slot.windows(4).any(|w| w == b"main"));
        for at in [9, 20, 40, SLOT_LEN - 1] {
            let mut edited = slot.clone();
            edited[at] ^= 1;
            assert!(unwrap(&mut source(1, 1), &[edited], "main-chain").is_err());
        }
        assert!(unwrap(&mut source(1, 1), &[vec![0; 4096]], "main-chain").is_err());
    }
}
