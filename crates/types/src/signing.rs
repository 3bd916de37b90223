//! Ed25519 signatures over CometBFT's canonical sign bytes (length-prefixed protobuf
//! `CanonicalVote` / `CanonicalProposal` with the chain id), verified with the ZIP-215 rules
//! that CometBFT and the `tendermint` crate use, so every validator agrees on which signatures
//! are valid.

use ed25519_consensus::SigningKey;
use sha2::{Digest, Sha256};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, OnceLock};
use tendermint::chain;
use tendermint::proposal::Proposal;
use tendermint::vote::Vote;
use tendermint::{PublicKey, Signature};
use thiserror::Error;

/// Why a signature was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The message carries no signature.
    #[error("the message is not signed")]
    Missing,
    /// Not 64 bytes.
    #[error("a signature has 64 bytes, not {0}")]
    Malformed(usize),
    /// The public key is not an ed25519 key, or not a valid one.
    #[error("the public key is not a valid ed25519 key")]
    BadKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Invalid,
}

/// The bytes a validator signs for `vote` on `chain_id`.
pub fn vote_sign_bytes(vote: &Vote, chain_id: &chain::Id) -> Vec<u8> {
    vote.clone().into_signable_vec(chain_id.clone())
}

/// The bytes a proposer signs for `proposal` on `chain_id`.
pub fn proposal_sign_bytes(proposal: &Proposal, chain_id: &chain::Id) -> Vec<u8> {
    proposal.clone().into_signable_vec(chain_id.clone())
}

/// Signs `bytes` with an ed25519 key; on a thread that called
/// [`remember_signatures_made_on_this_thread`], the signature is remembered as valid.
pub fn sign(key: &SigningKey, bytes: &[u8]) -> Signature {
    let sig = key.sign(bytes).to_bytes();
    if REMEMBER_SIGNED.with(Cell::get) {
        remember(fingerprint_of(
            key.verification_key().as_bytes(),
            bytes,
            &sig,
        ));
    }
    match Signature::new(sig) {
        Ok(Some(s)) => s,
        // 64 non-empty bytes always make a signature.
        _ => unreachable!("ed25519 signatures are 64 bytes"),
    }
}

/// Signatures verified already, on threads other than the one that asks (review M6: the
/// connection threads check what arrives, so the consensus thread does not). It holds only
/// facts (this key signed these bytes), so a process shares one, and a miss (never enabled,
/// evicted, never seen) only means the full check runs.
struct VerifiedSignatures {
    capacity: usize,
    kept: Mutex<Fingerprints>,
}

/// The fingerprints kept, and the order they came in (the oldest goes first).
type Fingerprints = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

static VERIFIED: OnceLock<VerifiedSignatures> = OnceLock::new();

thread_local! {
    static FULL_CHECKS: Cell<u64> = const { Cell::new(0) };
    /// Whether [`sign`] on this thread remembers what it signs.
    static REMEMBER_SIGNED: Cell<bool> = const { Cell::new(false) };
    /// Verification keys decompressed by this thread (a decompression costs about a tenth of a
    /// check), by their 32 bytes.
    static DECOMPRESSED_KEYS: RefCell<HashMap<[u8; 32], ed25519_zebra::VerificationKey>> =
        RefCell::new(HashMap::new());
}

/// How many decompressed keys a thread keeps before it starts again from none. Keys come from
/// validator sets, so a thread sees few of them.
const DECOMPRESSED_KEYS_KEPT: usize = 4096;

/// Makes this process remember up to `capacity` signatures that [`preverify`] found valid, so
/// [`verify`] accepts them without checking again. The first call sets the capacity.
pub fn remember_verified_signatures(capacity: usize) {
    VERIFIED.get_or_init(|| VerifiedSignatures {
        capacity: capacity.max(1),
        kept: Mutex::new((HashSet::new(), VecDeque::new())),
    });
}

/// Makes [`sign`] on this thread remember each signature it makes as valid, once
/// [`remember_verified_signatures`] was called, so [`verify`] accepts it on any thread without
/// a check. A node's own votes and proposals come back to it: in the last commit of every
/// block it receives, and relayed by its peers. Each was a full check (one a received block:
/// 1.2 % of the samples of a profile of empty heights). Per thread, because a test that runs
/// several validators in one process would otherwise remember the others' signatures too.
pub fn remember_signatures_made_on_this_thread() {
    REMEMBER_SIGNED.with(|r| r.set(true));
}

/// Full ed25519 checks this thread has run (cache hits are not counted): how a test shows
/// which thread did the work.
pub fn full_checks_on_this_thread() -> u64 {
    FULL_CHECKS.with(Cell::get)
}

/// What names one (key, bytes, signature) triple; only ed25519 keys (32 bytes) have one, and a
/// signature has 64 bytes (`Signature::new` takes no other length), so the concatenation of
/// key, signature and bytes is unambiguous.
fn fingerprint(key: &PublicKey, bytes: &[u8], signature: &Signature) -> Option<[u8; 32]> {
    let PublicKey::Ed25519(vk) = key else {
        return None;
    };
    Some(fingerprint_of(vk.as_bytes(), bytes, signature.as_bytes()))
}

fn fingerprint_of(key: &[u8], bytes: &[u8], signature: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(signature);
    h.update(bytes);
    h.finalize().into()
}

/// Adds `print` to the signatures known valid (nothing when they are not remembered).
fn remember(print: [u8; 32]) {
    let Some(cache) = VERIFIED.get() else {
        return;
    };
    if let Ok(mut kept) = cache.kept.lock() {
        let (set, order) = &mut *kept;
        if set.insert(print) {
            order.push_back(print);
            while order.len() > cache.capacity {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }
}

fn remembered(fingerprint: &[u8; 32]) -> bool {
    VERIFIED.get().is_some_and(|cache| {
        cache
            .kept
            .lock()
            .is_ok_and(|kept| kept.0.contains(fingerprint))
    })
}

/// How a signature [`preverify`] accepted was found valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preverified {
    /// It was remembered: a lookup.
    Remembered,
    /// It was checked in full (and is remembered now).
    Checked,
}

/// Verifies like [`verify`] and, when the signature holds and [`remember_verified_signatures`]
/// was called, remembers it for a later [`verify`] on any thread. For the threads that receive
/// messages, ahead of the one that acts on them.
pub fn preverify(
    key: &PublicKey,
    bytes: &[u8],
    signature: &Signature,
) -> Result<Preverified, SignatureError> {
    let checked = |()| Preverified::Checked;
    if VERIFIED.get().is_none() {
        return full_check(key, bytes, signature).map(checked);
    }
    let Some(print) = fingerprint(key, bytes, signature) else {
        return full_check(key, bytes, signature).map(checked);
    };
    if remembered(&print) {
        return Ok(Preverified::Remembered);
    }
    full_check(key, bytes, signature)?;
    remember(print);
    Ok(Preverified::Checked)
}

/// Verifies an ed25519 signature on `bytes` by `key` (at once when another thread verified
/// this very signature with [`preverify`]).
pub fn verify(key: &PublicKey, bytes: &[u8], signature: &Signature) -> Result<(), SignatureError> {
    if VERIFIED.get().is_some()
        && fingerprint(key, bytes, signature).is_some_and(|print| remembered(&print))
    {
        return Ok(());
    }
    full_check(key, bytes, signature)
}

/// Checks one signature with the ZIP-215 rules: `ed25519-zebra` on curve25519-dalek 4 (AVX2
/// where the CPU has it, chosen at run time), which accepts exactly the signatures
/// `ed25519-consensus` (the `tendermint` crate's verifier) does; `tests/zip215.rs` compares
/// the two on every small-order edge case.
fn full_check(key: &PublicKey, bytes: &[u8], signature: &Signature) -> Result<(), SignatureError> {
    FULL_CHECKS.with(|n| n.set(n.get() + 1));
    let PublicKey::Ed25519(vk) = key else {
        return Err(SignatureError::BadKey);
    };
    let vk = decompressed(vk.as_bytes())?;
    let raw: [u8; 64] = signature
        .as_bytes()
        .try_into()
        .map_err(|_| SignatureError::Malformed(signature.as_bytes().len()))?;
    vk.verify(&ed25519_zebra::Signature::from(raw), bytes)
        .map_err(|_| SignatureError::Invalid)
}

/// `key` decompressed, from this thread's [`DECOMPRESSED_KEYS`] when it is there.
fn decompressed(key: &[u8]) -> Result<ed25519_zebra::VerificationKey, SignatureError> {
    let key: [u8; 32] = key.try_into().map_err(|_| SignatureError::BadKey)?;
    DECOMPRESSED_KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if let Some(vk) = keys.get(&key) {
            return Ok(*vk);
        }
        let vk =
            ed25519_zebra::VerificationKey::try_from(key).map_err(|_| SignatureError::BadKey)?;
        if keys.len() >= DECOMPRESSED_KEYS_KEPT {
            keys.clear();
        }
        keys.insert(key, vk);
        Ok(vk)
    })
}

/// Signs `vote` in place.
pub fn sign_vote(key: &SigningKey, vote: &mut Vote, chain_id: &chain::Id) {
    vote.signature = Some(sign(key, &vote_sign_bytes(vote, chain_id)));
}

/// Verifies `vote`'s signature by `key`.
pub fn verify_vote(
    key: &PublicKey,
    vote: &Vote,
    chain_id: &chain::Id,
) -> Result<(), SignatureError> {
    let signature = vote.signature.as_ref().ok_or(SignatureError::Missing)?;
    verify(key, &vote_sign_bytes(vote, chain_id), signature)
}

/// Whether `vote` is a precommit for a block: the only vote that carries a vote extension.
pub fn is_non_nil_precommit(vote: &Vote) -> bool {
    vote.vote_type == tendermint::vote::Type::Precommit
        && vote
            .block_id
            .is_some_and(|id| id != tendermint::block::Id::default())
}

/// The bytes a validator signs for the vote extension of its precommit at `height` and
/// `round` on `chain_id`: CometBFT's length-prefixed protobuf `CanonicalVoteExtension`. They
/// start with their non-zero length, like a vote's: a domain-separated message never does.
pub fn vote_extension_sign_bytes(
    extension: &[u8],
    height: u64,
    round: u32,
    chain_id: &chain::Id,
) -> Vec<u8> {
    use prost::Message;
    tendermint_proto::v0_38::types::CanonicalVoteExtension {
        extension: extension.to_vec(),
        height: i64::try_from(height).unwrap_or(i64::MAX),
        round: i64::from(round),
        chain_id: chain_id.to_string(),
    }
    .encode_length_delimited_to_vec()
}

/// The sign bytes of `vote`'s extension.
fn extension_sign_bytes_of(vote: &Vote, chain_id: &chain::Id) -> Vec<u8> {
    vote_extension_sign_bytes(
        &vote.extension,
        vote.height.value(),
        vote.round.value(),
        chain_id,
    )
}

/// Signs `vote`'s extension in place (a precommit for a block; see [`is_non_nil_precommit`]).
pub fn sign_vote_extension(key: &SigningKey, vote: &mut Vote, chain_id: &chain::Id) {
    vote.extension_signature = Some(sign(key, &extension_sign_bytes_of(vote, chain_id)));
}

/// Verifies the signature by `key` of `vote`'s extension.
pub fn verify_vote_extension(
    key: &PublicKey,
    vote: &Vote,
    chain_id: &chain::Id,
) -> Result<(), SignatureError> {
    let signature = vote
        .extension_signature
        .as_ref()
        .ok_or(SignatureError::Missing)?;
    verify(key, &extension_sign_bytes_of(vote, chain_id), signature)
}

/// Signs `proposal` in place.
pub fn sign_proposal(key: &SigningKey, proposal: &mut Proposal, chain_id: &chain::Id) {
    proposal.signature = Some(sign(key, &proposal_sign_bytes(proposal, chain_id)));
}

/// Verifies `proposal`'s signature by `key`.
pub fn verify_proposal(
    key: &PublicKey,
    proposal: &Proposal,
    chain_id: &chain::Id,
) -> Result<(), SignatureError> {
    let signature = proposal.signature.as_ref().ok_or(SignatureError::Missing)?;
    verify(key, &proposal_sign_bytes(proposal, chain_id), signature)
}

/// The `tendermint` public key of an ed25519 signing key.
pub fn public_key(key: &SigningKey) -> PublicKey {
    match PublicKey::from_raw_ed25519(key.verification_key().as_bytes()) {
        Some(pk) => pk,
        None => unreachable!("an ed25519 verification key is 32 valid bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vote_extension_sign_bytes_are_cometbfts_canonical_vote_extension() {
        let chain_id = chain::Id::try_from("c").unwrap();
        let bytes = vote_extension_sign_bytes(b"ext", 5, 2, &chain_id);
        // Written out from types.proto (extension = 1 bytes, height = 2 and round = 3
        // sfixed64, chain_id = 4 string) after the varint length: not through prost.
        let mut expected = vec![0x0a, 3, b'e', b'x', b't', 0x11];
        expected.extend(5i64.to_le_bytes());
        expected.push(0x19);
        expected.extend(2i64.to_le_bytes());
        expected.extend([0x22, 1, b'c']);
        expected.insert(0, expected.len() as u8);
        assert_eq!(bytes, expected);
        // An empty extension is left out, as proto3 leaves out empty fields; still signed.
        assert_eq!(vote_extension_sign_bytes(b"", 5, 2, &chain_id)[1], 0x11);
    }

    #[test]
    fn only_a_signature_checked_ahead_is_accepted_without_a_check() {
        remember_verified_signatures(2);
        let key = SigningKey::from([7; 32]);
        let public = public_key(&key);
        let good = sign(&key, b"vote");
        let checks = full_checks_on_this_thread();
        // Checked on another thread, accepted here without a check of this thread's own.
        std::thread::scope(|s| {
            s.spawn(|| preverify(&public, b"vote", &good).unwrap());
        });
        assert_eq!(verify(&public, b"vote", &good), Ok(()));
        assert_eq!(full_checks_on_this_thread(), checks);
        // Other bytes, another key or a forged signature are each checked in full, and fail.
        assert_eq!(
            verify(&public, b"votf", &good),
            Err(SignatureError::Invalid)
        );
        let other = public_key(&SigningKey::from([8; 32]));
        assert_eq!(verify(&other, b"vote", &good), Err(SignatureError::Invalid));
        assert_eq!(full_checks_on_this_thread(), checks + 2);
        let mut forged = good.as_bytes().to_vec();
        forged[0] ^= 1;
        let forged = Signature::new(forged).unwrap().unwrap();
        assert_eq!(
            preverify(&public, b"vote", &forged),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(&public, b"vote", &forged),
            Err(SignatureError::Invalid)
        );
        // Beyond the capacity the oldest is forgotten: checked in full again, still valid.
        for m in [&b"a"[..], b"b"] {
            preverify(&public, m, &sign(&key, m)).unwrap();
        }
        let before = full_checks_on_this_thread();
        assert_eq!(verify(&public, b"vote", &good), Ok(()));
        assert_eq!(full_checks_on_this_thread(), before + 1);
    }
}
