//! A validator's identity (its ed25519 consensus key and node key), born inside the guest from
//! the kernel's CRNG and kept on the host's disk only as an AEAD-sealed blob.
//!
//! The sealing key comes from the evidence source's derived-key call (on hardware MSG_KEY_REQ:
//! VCEK root, GUEST_POLICY | MEASUREMENT | TCB_VERSION) at a TCB recorded in the clear beside the
//! blob, expanded with HKDF over [`SEALING_PURPOSE`] and the chain name. Another chip, another
//! image, the same image relaunched under another guest policy (debug on, say) or a TCB the
//! firmware has not committed to derive another key, and the blob does not open. After a
//! firmware update the committed TCB moves up; [`SealedIdentity::open`] still opens the blob at
//! its recorded TCB and hands back a re-sealed blob under the newer one.

use bulwark_attest::{AttestationReport, EvidenceSource, SourceError};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_consensus::SigningKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// The purpose mixed into the sealing key: a key derived for anything else never opens an
/// identity.
pub const SEALING_PURPOSE: &[u8] = b"bulwark/sealed-identity/v1";

/// The sealed blob's format version.
pub const SEALED_VERSION: u32 = 1;

/// Largest sealed-identity file read (the real one is about 400 bytes).
pub const MAX_SEALED_FILE: u64 = 4096;

/// Why an identity could not be made, sealed or opened.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// The kernel's CRNG failed.
    #[error("system randomness: {0}")]
    Randomness(String),
    /// The evidence source refused a report or a derived key.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The guest's own report did not parse.
    #[error("the guest's own report: {0}")]
    OwnReport(String),
    /// The AEAD tag did not verify: the sealing key differs (another chip, image, guest policy,
    /// TCB or chain name) or the blob was altered.
    #[error("the sealed identity does not open here: another chip, image, guest policy, TCB or chain, or an altered blob")]
    Unseal,
    /// The blob was sealed for another chain.
    #[error("the sealed identity belongs to chain {found:?}, not {expected:?}")]
    ChainName {
        /// The chain the caller runs.
        expected: String,
        /// The chain the blob names.
        found: String,
    },
    /// The blob's public keys are not those of the keys inside it.
    #[error("the sealed identity's public keys do not match the keys inside it")]
    PublicKeyMismatch,
    /// A field of the blob is not what its format says.
    #[error("malformed sealed identity: {0}")]
    Malformed(String),
    /// A file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A validator's two keys, only ever in guest memory.
pub struct Identity {
    consensus: SigningKey,
    node: SigningKey,
}

// Keys never appear in logs: only their public parts.
impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("consensus", &hex::encode(self.consensus_public()))
            .field("node", &hex::encode(self.node_public()))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Two fresh keys from the operating system's CRNG (`getrandom(2)` inside the guest).
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seeds = Zeroizing::new([0u8; 64]);
        getrandom::getrandom(seeds.as_mut_slice())
            .map_err(|e| IdentityError::Randomness(e.to_string()))?;
        Ok(Self::from_seeds(&seeds))
    }

    fn from_seeds(seeds: &[u8; 64]) -> Self {
        let mut consensus = Zeroizing::new([0u8; 32]);
        let mut node = Zeroizing::new([0u8; 32]);
        consensus.copy_from_slice(&seeds[..32]);
        node.copy_from_slice(&seeds[32..]);
        Identity {
            consensus: SigningKey::from(*consensus),
            node: SigningKey::from(*node),
        }
    }

    fn seeds(&self) -> Zeroizing<[u8; 64]> {
        let mut seeds = Zeroizing::new([0u8; 64]);
        seeds[..32].copy_from_slice(self.consensus.as_bytes());
        seeds[32..].copy_from_slice(self.node.as_bytes());
        seeds
    }

    /// The consensus (validator) signing key.
    pub fn consensus_key(&self) -> &SigningKey {
        &self.consensus
    }

    /// The node (peer identity) key.
    pub fn node_key(&self) -> &SigningKey {
        &self.node
    }

    /// The consensus public key.
    pub fn consensus_public(&self) -> [u8; 32] {
        self.consensus.verification_key().to_bytes()
    }

    /// The node public key.
    pub fn node_public(&self) -> [u8; 32] {
        self.node.verification_key().to_bytes()
    }
}

/// The key that authenticates this validator's node state (WAL records, last-sign-state) on
/// the host's disk: HKDF-SHA-256 of the consensus key's seed, over a label and the chain name.
/// It exists only where the identity is open, and does not change when the identity is
/// re-sealed under a newer TCB.
pub fn state_mac_key(consensus_seed: &[u8; 32], chain_name: &str) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"bulwark/state-mac/v1"), consensus_seed);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is always a valid HKDF-SHA-256 output length.
    let _ = hk.expand(chain_name.as_bytes(), out.as_mut_slice());
    out
}

/// The committed TCB (COMMITTED_TCB of a fresh own report, as a TCB_VERSION): the highest TCB
/// a sealing key may be derived at.
pub fn committed_tcb(source: &mut dyn EvidenceSource) -> Result<u64, IdentityError> {
    let evidence = source.evidence([0; 64])?;
    AttestationReport::from_bytes(&evidence.report)
        .map(|r| r.committed_tcb_raw())
        .map_err(|e| IdentityError::OwnReport(e.to_string()))
}

/// The sealing key's HKDF context: the purpose and the chain name, each length-prefixed.
fn context(chain_name: &str) -> Vec<u8> {
    context_for(SEALING_PURPOSE, chain_name)
}

/// A derived key's HKDF context for `purpose`: the purpose and the chain name, each
/// length-prefixed.
pub(crate) fn context_for(purpose: &[u8], chain_name: &str) -> Vec<u8> {
    let mut c = Vec::new();
    for part in [purpose, chain_name.as_bytes()] {
        c.extend_from_slice(&(part.len() as u64).to_be_bytes());
        c.extend_from_slice(part);
    }
    c
}

/// The sealed blob: the public header in the clear (authenticated as associated data) and the
/// two 32-byte seeds encrypted with ChaCha20-Poly1305.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedIdentity {
    /// [`SEALED_VERSION`].
    pub version: u32,
    /// The chain name mixed into the sealing key.
    pub chain_name: String,
    /// The TCB_VERSION the sealing key was derived at (16 hex digits): the committed TCB at
    /// sealing time.
    pub tcb_version: String,
    /// The consensus public key (hex).
    pub consensus_key: String,
    /// The node public key (hex).
    pub node_key: String,
    /// The AEAD nonce (hex, 12 bytes, fresh from the CRNG per sealing).
    pub nonce: String,
    /// The sealed seeds and the tag (hex).
    pub ciphertext: String,
}

impl SealedIdentity {
    /// Seals `identity` for `chain_name` at the committed TCB.
    pub fn seal(
        source: &mut dyn EvidenceSource,
        identity: &Identity,
        chain_name: &str,
    ) -> Result<Self, IdentityError> {
        let tcb = committed_tcb(source)?;
        Self::seal_at(source, identity, chain_name, tcb)
    }

    /// Seals `identity` for `chain_name` with the key derived at `tcb_version`.
    pub fn seal_at(
        source: &mut dyn EvidenceSource,
        identity: &Identity,
        chain_name: &str,
        tcb_version: u64,
    ) -> Result<Self, IdentityError> {
        let key = Zeroizing::new(source.sealing_key(tcb_version, &context(chain_name))?);
        let mut nonce = [0u8; 12];
        getrandom::getrandom(&mut nonce).map_err(|e| IdentityError::Randomness(e.to_string()))?;
        let mut blob = SealedIdentity {
            version: SEALED_VERSION,
            chain_name: chain_name.to_string(),
            tcb_version: format!("{tcb_version:016x}"),
            consensus_key: hex::encode(identity.consensus_public()),
            node_key: hex::encode(identity.node_public()),
            nonce: hex::encode(nonce),
            ciphertext: String::new(),
        };
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_slice()));
        let seeds = identity.seeds();
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: seeds.as_slice(),
                    aad: &blob.associated_data(),
                },
            )
            .map_err(|_| IdentityError::Malformed("encryption failed".into()))?;
        blob.ciphertext = hex::encode(sealed);
        Ok(blob)
    }

    /// The recorded TCB_VERSION.
    pub fn tcb(&self) -> Result<u64, IdentityError> {
        if self.tcb_version.len() != 16 {
            return Err(IdentityError::Malformed(
                "tcb_version is not 16 hex digits".into(),
            ));
        }
        u64::from_str_radix(&self.tcb_version, 16)
            .map_err(|e| IdentityError::Malformed(format!("tcb_version: {e}")))
    }

    /// Everything in the clear, length-prefixed: what the AEAD tag also covers.
    fn associated_data(&self) -> Vec<u8> {
        let mut aad = Vec::new();
        let version = self.version.to_be_bytes();
        for part in [
            SEALING_PURPOSE,
            version.as_slice(),
            self.chain_name.as_bytes(),
            self.tcb_version.as_bytes(),
            self.consensus_key.as_bytes(),
            self.node_key.as_bytes(),
        ] {
            aad.extend_from_slice(&(part.len() as u64).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }

    /// Opens the blob for `chain_name` with the key derived at its recorded TCB.
    pub fn unseal(
        &self,
        source: &mut dyn EvidenceSource,
        chain_name: &str,
    ) -> Result<Identity, IdentityError> {
        if self.version != SEALED_VERSION {
            return Err(IdentityError::Malformed(format!(
                "version {} (this build reads {SEALED_VERSION})",
                self.version
            )));
        }
        if self.chain_name != chain_name {
            return Err(IdentityError::ChainName {
                expected: chain_name.into(),
                found: self.chain_name.clone(),
            });
        }
        let nonce: [u8; 12] = hex::decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| IdentityError::Malformed("nonce is not 12 bytes of hex".into()))?;
        let sealed = hex::decode(&self.ciphertext)
            .map_err(|e| IdentityError::Malformed(format!("ciphertext: {e}")))?;
        let key = Zeroizing::new(source.sealing_key(self.tcb()?, &context(chain_name))?);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_slice()));
        let opened = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &sealed,
                        aad: &self.associated_data(),
                    },
                )
                .map_err(|_| IdentityError::Unseal)?,
        );
        let seeds: Zeroizing<[u8; 64]> = Zeroizing::new(
            opened
                .as_slice()
                .try_into()
                .map_err(|_| IdentityError::Malformed("sealed seeds are not 64 bytes".into()))?,
        );
        let identity = Identity::from_seeds(&seeds);
        if hex::encode(identity.consensus_public()) != self.consensus_key
            || hex::encode(identity.node_public()) != self.node_key
        {
            return Err(IdentityError::PublicKeyMismatch);
        }
        Ok(identity)
    }

    /// Opens the blob and, when the firmware has committed to another TCB since it was sealed,
    /// re-seals the identity under the committed TCB: the caller writes the new blob (then
    /// drops the old one) so the next start derives its key at the current TCB.
    pub fn open(
        &self,
        source: &mut dyn EvidenceSource,
        chain_name: &str,
    ) -> Result<(Identity, Option<SealedIdentity>), IdentityError> {
        let identity = self.unseal(source, chain_name)?;
        let committed = committed_tcb(source)?;
        if committed == self.tcb()? {
            return Ok((identity, None));
        }
        let resealed = Self::seal_at(source, &identity, chain_name, committed)?;
        Ok((identity, Some(resealed)))
    }

    /// Reads a sealed identity file (at most [`MAX_SEALED_FILE`] bytes).
    pub fn read(path: &Path) -> Result<Self, IdentityError> {
        use std::io::Read;
        let file_error = |reason: String| IdentityError::File {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| file_error(e.to_string()))?;
        let mut text = String::new();
        file.take(MAX_SEALED_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|e| file_error(e.to_string()))?;
        if text.len() as u64 > MAX_SEALED_FILE {
            return Err(file_error(format!("larger than {MAX_SEALED_FILE} bytes")));
        }
        serde_json::from_str(&text).map_err(|e| file_error(e.to_string()))
    }

    /// Writes the blob to `path` atomically (a temporary file, flushed, then renamed), so a
    /// crash leaves the old blob or the new one, never neither.
    pub fn write(&self, path: &Path) -> Result<(), IdentityError> {
        use std::io::Write;
        let file_error = |reason: String| IdentityError::File {
            path: path.to_path_buf(),
            reason,
        };
        let text = serde_json::to_string_pretty(self).map_err(|e| file_error(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|e| file_error(e.to_string()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| file_error(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| file_error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_attest::simulated::{SimulatedPsp, SIMULATED_PRODUCT};
    use bulwark_attest::Tcb;

    fn psp() -> SimulatedPsp {
        SimulatedPsp::new([7; 32], [8; 48])
    }

    #[test]
    fn a_sealed_identity_opens_on_the_same_chip_image_policy_and_chain() {
        let id = Identity::generate().unwrap();
        let blob = SealedIdentity::seal(&mut psp(), &id, "alpha").unwrap();
        let opened = blob.unseal(&mut psp(), "alpha").unwrap();
        assert_eq!(opened.consensus_public(), id.consensus_public());
        assert_eq!(opened.node_public(), id.node_public());
        assert_eq!(blob.consensus_key, hex::encode(id.consensus_public()));
        // The seeds are not in the blob in the clear.
        let text = serde_json::to_string(&blob).unwrap();
        assert!(!text.contains(&hex::encode(id.consensus_key().as_bytes())));
    }

    #[test]
    fn the_state_mac_key_is_per_key_and_per_chain() {
        let a = state_mac_key(&[1; 32], "alpha");
        assert_ne!(*a, *state_mac_key(&[2; 32], "alpha"));
        assert_ne!(*a, *state_mac_key(&[1; 32], "beta"));
        assert_eq!(*a, *state_mac_key(&[1; 32], "alpha"));
    }

    #[test]
    fn two_identities_differ() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        assert_ne!(a.consensus_public(), b.consensus_public());
        assert_ne!(a.consensus_public(), a.node_public());
    }

    #[test]
    fn unsealing_under_another_guest_policy_fails() {
        let id = Identity::generate().unwrap();
        let blob = SealedIdentity::seal(&mut psp(), &id, "alpha").unwrap();
        let mut debug = psp();
        debug.policy |= 1 << 19; // DEBUG allowed: the same image relaunched by the host
        assert!(matches!(
            blob.unseal(&mut debug, "alpha"),
            Err(IdentityError::Unseal)
        ));
    }

    #[test]
    fn unsealing_under_another_measurement_fails() {
        let id = Identity::generate().unwrap();
        let blob = SealedIdentity::seal(&mut psp(), &id, "alpha").unwrap();
        let mut other = psp();
        other.measurement[0] ^= 1;
        assert!(matches!(
            blob.unseal(&mut other, "alpha"),
            Err(IdentityError::Unseal)
        ));
    }

    #[test]
    fn unsealing_on_another_chip_fails() {
        let id = Identity::generate().unwrap();
        let blob = SealedIdentity::seal(&mut psp(), &id, "alpha").unwrap();
        let mut other = SimulatedPsp::new([9; 32], [8; 48]);
        assert!(matches!(
            blob.unseal(&mut other, "alpha"),
            Err(IdentityError::Unseal)
        ));
    }

    #[test]
    fn unsealing_for_another_chain_fails_even_with_the_name_rewritten() {
        let id = Identity::generate().unwrap();
        let blob = SealedIdentity::seal(&mut psp(), &id, "alpha").unwrap();
        assert!(matches!(
            blob.unseal(&mut psp(), "beta"),
            Err(IdentityError::ChainName { .. })
        ));
        let renamed = SealedIdentity {
            chain_name: "beta".into(),
            ..blob
        };
        assert!(matches!(
            renamed.unseal(&mut psp(), "beta"),
            Err(IdentityError::Unseal)
        ));
    }

    #[test]
    fn an_altered_header_or_ciphertext_does_not_open() {
        let id = Identity::generate().unwrap();
        let blob = SealedIdentity::seal(&mut psp(), &id, "alpha").unwrap();
        let other = Identity::generate().unwrap();
        let swapped_key = SealedIdentity {
            consensus_key: hex::encode(other.consensus_public()),
            ..blob.clone()
        };
        assert!(matches!(
            swapped_key.unseal(&mut psp(), "alpha"),
            Err(IdentityError::Unseal)
        ));
        let mut flipped = blob.clone();
        let mut c = hex::decode(&flipped.ciphertext).unwrap();
        c[0] ^= 1;
        flipped.ciphertext = hex::encode(c);
        assert!(matches!(
            flipped.unseal(&mut psp(), "alpha"),
            Err(IdentityError::Unseal)
        ));
        let short = SealedIdentity {
            nonce: "00".into(),
            ..blob
        };
        assert!(matches!(
            short.unseal(&mut psp(), "alpha"),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn after_a_firmware_update_the_identity_opens_and_is_resealed_under_the_new_tcb() {
        let id = Identity::generate().unwrap();
        let mut chip = psp();
        let blob = SealedIdentity::seal(&mut chip, &id, "alpha").unwrap();
        assert_eq!(blob.tcb().unwrap(), chip.tcb.encode(SIMULATED_PRODUCT));
        assert!(blob.open(&mut chip, "alpha").unwrap().1.is_none());
        // The firmware update: the committed TCB moves up.
        chip.tcb = Tcb {
            snp: chip.tcb.snp + 1,
            ..chip.tcb
        };
        let (opened, resealed) = blob.open(&mut chip, "alpha").unwrap();
        assert_eq!(opened.consensus_public(), id.consensus_public());
        let resealed = resealed.expect("re-sealed under the newer TCB");
        assert_eq!(resealed.tcb().unwrap(), chip.tcb.encode(SIMULATED_PRODUCT));
        assert_ne!(resealed.ciphertext, blob.ciphertext);
        let (again, none) = resealed.open(&mut chip, "alpha").unwrap();
        assert!(none.is_none());
        assert_eq!(again.consensus_public(), id.consensus_public());
        // Relabelling the new blob with the old TCB does not open it: the TCB is in the key.
        let relabelled = SealedIdentity {
            tcb_version: blob.tcb_version.clone(),
            ..resealed
        };
        assert!(matches!(
            relabelled.unseal(&mut chip, "alpha"),
            Err(IdentityError::Unseal)
        ));
    }

    #[test]
    fn a_blob_recorded_above_the_committed_tcb_is_refused_by_the_psp() {
        let id = Identity::generate().unwrap();
        let mut chip = psp();
        let above = chip.tcb.encode(SIMULATED_PRODUCT) + (1 << 56);
        let blob = SealedIdentity::seal_at(&mut chip, &id, "alpha", above);
        assert!(matches!(
            blob,
            Err(IdentityError::Source(SourceError::TcbAboveCommitted { .. }))
        ));
    }

    #[test]
    fn the_file_round_trips_and_oversized_or_foreign_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("bulwark-sealed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("identity.sealed.json");
        let id = Identity::generate().unwrap();
        let blob = SealedIdentity::seal(&mut psp(), &id, "alpha").unwrap();
        blob.write(&path).unwrap();
        assert_eq!(SealedIdentity::read(&path).unwrap(), blob);
        std::fs::write(&path, vec![b' '; MAX_SEALED_FILE as usize + 1]).unwrap();
        assert!(matches!(
            SealedIdentity::read(&path),
            Err(IdentityError::File { .. })
        ));
        std::fs::write(&path, r#"{"version":1,"extra":true}"#).unwrap();
        assert!(matches!(
            SealedIdentity::read(&path),
            Err(IdentityError::File { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
