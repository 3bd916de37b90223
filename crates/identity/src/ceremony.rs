//! The genesis ceremony: enrolling guests make their identity inside and publish
//! `enrollment.json`; `bulwark genesis assemble` verifies every enrollment and writes a genesis
//! whose validators are exactly the enrolled keys, with their evidence and the attestation
//! policy, under a self-certifying chain id; `bulwark verify-genesis` lets anyone re-check it.

use crate::{
    certify, check_chain_id, ChainIdError, Enrollment, Identity, IdentityError, SealedIdentity,
};
use bulwark_attest::{AttestationReport, EvidenceSource, HexBytes, Measurements, Policy};
use bulwark_types::tendermint::{validator, Genesis, PublicKey, Time};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The sealed identity's file in a home's `config/`.
pub const SEALED_IDENTITY: &str = "identity.sealed.json";
/// The enrollment's file in a home's `config/`.
pub const ENROLLMENT: &str = "enrollment.json";
/// The voting power every enrolled validator gets.
pub const POWER: u32 = 10;

/// Why a ceremony step failed.
#[derive(Debug, Error)]
pub enum CeremonyError {
    /// A file could not be read, parsed or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An enrollment does not verify.
    #[error("enrollment {index} ({moniker}): {check}: {reason}")]
    Enrollment {
        /// Its position among the enrollments given.
        index: usize,
        /// Its moniker.
        moniker: String,
        /// The failed check.
        check: &'static str,
        /// What the check said.
        reason: String,
    },
    /// Two enrollments carry the same consensus key.
    #[error("two enrollments carry the consensus key {0}")]
    DuplicateKey(String),
    /// No enrollment was given.
    #[error("a genesis needs at least one enrollment")]
    NoEnrollments,
    /// Making, sealing or opening an identity failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The chain name or id is wrong.
    #[error(transparent)]
    ChainId(#[from] ChainIdError),
    /// The genesis document could not be built.
    #[error("genesis: {0}")]
    Genesis(String),
}

fn file_error(path: &Path, reason: impl ToString) -> CeremonyError {
    CeremonyError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The current time in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The sealed identity's path in `config_dir`, or an error if one is there already.
fn refuse_existing_identity(config_dir: &Path) -> Result<std::path::PathBuf, CeremonyError> {
    let sealed = config_dir.join(SEALED_IDENTITY);
    if sealed.exists() {
        return Err(file_error(
            &sealed,
            "already exists; refusing to replace an identity",
        ));
    }
    Ok(sealed)
}

/// Enrols this guest: makes a fresh identity from the CRNG, seals it under `source` for
/// `chain_name` into `config_dir/identity.sealed.json` and writes `config_dir/enrollment.json`.
/// Refuses to replace an existing identity.
pub fn enroll(
    source: &mut dyn EvidenceSource,
    config_dir: &Path,
    moniker: &str,
    chain_name: &str,
    launch_instance: &[u8; 32],
) -> Result<Enrollment, CeremonyError> {
    let sealed_path = refuse_existing_identity(config_dir)?;
    std::fs::create_dir_all(config_dir).map_err(|e| file_error(config_dir, e))?;
    let identity = Identity::generate()?;
    SealedIdentity::seal(source, &identity, chain_name)?.write(&sealed_path)?;
    let enrollment = Enrollment::create(source, &identity, moniker, chain_name, launch_instance)?;
    let path = config_dir.join(ENROLLMENT);
    let text = serde_json::to_string_pretty(&enrollment).map_err(|e| file_error(&path, e))?;
    std::fs::write(&path, text + "\n").map_err(|e| file_error(&path, e))?;
    Ok(enrollment)
}

/// The file of a process-mode validator's launch instance, in its home's `config/`.
pub const LAUNCH_INSTANCE: &str = "launch_instance";

/// Enrols a process-mode validator ([`enroll`] with a fresh launch instance), and keeps the
/// launch instance in `config_dir/launch_instance` for its first start to take
/// ([`take_launch_instance`]). A VM never stores it: its enrolling boot runs on as the launch
/// instance, and a copy of its disk is another. A process's host is its operator: a copy of
/// the home made before the first start could sign as the launch instance too.
pub fn enroll_for_process(
    source: &mut dyn EvidenceSource,
    config_dir: &Path,
    moniker: &str,
    chain_name: &str,
) -> Result<Enrollment, CeremonyError> {
    refuse_existing_identity(config_dir)?;
    let mut instance = [0u8; 32];
    getrandom::getrandom(&mut instance).map_err(|e| file_error(config_dir, e))?;
    // Kept before the enrollment names it: no enrollment names an instance nobody holds.
    std::fs::create_dir_all(config_dir).map_err(|e| file_error(config_dir, e))?;
    let path = config_dir.join(LAUNCH_INSTANCE);
    std::fs::write(&path, hex::encode(instance)).map_err(|e| file_error(&path, e))?;
    enroll(source, config_dir, moniker, chain_name, &instance)
}

/// The launch instance a process-mode home keeps for its first start, removed (and the
/// removal synced) before it is returned: every later start is a new instance.
pub fn take_launch_instance(config_dir: &Path) -> Result<Option<[u8; 32]>, CeremonyError> {
    let path = config_dir.join(LAUNCH_INSTANCE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(&path, e)),
    };
    std::fs::remove_file(&path).map_err(|e| file_error(&path, e))?;
    std::fs::File::open(config_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| file_error(config_dir, e))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(Some)
        .ok_or_else(|| file_error(&path, "not 32 bytes of hex"))
}

/// Reads an `enrollment.json`.
pub fn read_enrollment(path: &Path) -> Result<Enrollment, CeremonyError> {
    use std::io::Read;
    const MAX: u64 = 1 << 20;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX + 1).read_to_string(&mut text))
        .map_err(|e| file_error(path, e))?;
    if text.len() as u64 > MAX {
        return Err(file_error(path, format!("larger than {MAX} bytes")));
    }
    serde_json::from_str(&text).map_err(|e| file_error(path, e))
}

/// Whether `path` (as [`read_measurements`] takes it) is the `measurement.json` of an image
/// that carries no ABCI application (`cargo xtask image` without `--app`), whose nodes run the
/// built-in kvstore. A list of digests names no application: `false`.
pub fn runs_builtin_kvstore(path: &Path) -> Result<bool, CeremonyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| file_error(path, e))?;
    Ok(value.get("inputs").is_some() && value.pointer("/inputs/abci-app").is_none())
}

/// Reads allowed measurements: `measurement.json` as `cargo xtask image` writes it (every
/// digest under `launch_digest`), or a JSON array of 96-hex-digit digests.
pub fn read_measurements(path: &Path) -> Result<Vec<HexBytes<48>>, CeremonyError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| file_error(path, e))?;
    let root = match &value {
        Value::Array(_) => &value,
        _ => value
            .get("launch_digest")
            .ok_or_else(|| file_error(path, "neither a list of digests nor launch_digest"))?,
    };
    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            Value::Object(members) => members.values().for_each(|m| collect(m, out)),
            _ => {}
        }
    }
    let mut texts = Vec::new();
    collect(root, &mut texts);
    let mut digests = Vec::new();
    for t in texts {
        let d: HexBytes<48> = t
            .parse()
            .map_err(|e| file_error(path, format!("{t:?}: {e}")))?;
        if !digests.contains(&d) {
            digests.push(d);
        }
    }
    if digests.is_empty() {
        return Err(file_error(path, "no measurements"));
    }
    Ok(digests)
}

/// Builds the genesis of chain `chain_name` from verified enrollments: validators in the order
/// given (power [`POWER`], named by moniker), the application's `app_state`, the policy as
/// `attestation`, the enrollments as `enrollments`, `attest_full_nodes` when the network admits
/// full nodes ([`admits_full_nodes`]), and the self-certifying chain id. Every
/// enrollment must verify under `policy` at `now`.
pub fn assemble(
    chain_name: &str,
    enrollments: &[Enrollment],
    policy: &Policy,
    now: u64,
    app_state: Value,
    full_nodes: Option<bool>,
) -> Result<Value, CeremonyError> {
    if enrollments.is_empty() {
        return Err(CeremonyError::NoEnrollments);
    }
    if policy.measurements == Measurements::Any {
        return Err(CeremonyError::Genesis(
            "the policy must list the allowed measurements".into(),
        ));
    }
    let mut validators = Vec::new();
    for (index, e) in enrollments.iter().enumerate() {
        let failed = |err: crate::EnrollmentError| CeremonyError::Enrollment {
            index,
            moniker: e.moniker.clone(),
            check: err.check(),
            reason: err.to_string(),
        };
        e.verify(policy, chain_name, now).map_err(failed)?;
        let key = e.consensus_public().map_err(failed)?;
        let pub_key = PublicKey::from_raw_ed25519(&key)
            .ok_or_else(|| CeremonyError::Genesis(format!("{}: not an ed25519 key", e.moniker)))?;
        let mut info = validator::Info::new(pub_key, POWER.into());
        info.name = Some(e.moniker.clone());
        if validators
            .iter()
            .any(|v: &validator::Info| v.pub_key == pub_key)
        {
            return Err(CeremonyError::DuplicateKey(e.consensus_key.clone()));
        }
        validators.push(info);
    }
    let genesis = Genesis {
        genesis_time: Time::now(),
        chain_id: chain_name
            .parse()
            .map_err(|e| CeremonyError::Genesis(format!("chain name: {e}")))?,
        initial_height: 1,
        consensus_params: bulwark_types::genesis::default_consensus_params(),
        validators,
        app_hash: Default::default(),
        app_state,
    };
    let genesis_error = |e: serde_json::Error| CeremonyError::Genesis(e.to_string());
    let mut doc = serde_json::to_value(&genesis).map_err(genesis_error)?;
    let Value::Object(fields) = &mut doc else {
        return Err(CeremonyError::Genesis("not a JSON object".into()));
    };
    fields.insert(
        "attestation".into(),
        serde_json::to_value(policy).map_err(genesis_error)?,
    );
    fields.insert(
        "enrollments".into(),
        serde_json::to_value(enrollments).map_err(genesis_error)?,
    );
    if let Some(attested) = full_nodes {
        fields.insert(FULL_NODES_FIELD.into(), Value::Bool(attested));
    }
    certify(chain_name, &mut doc)?;
    Ok(doc)
}

/// One line of `bulwark verify-genesis`.
#[derive(Clone, Debug, Serialize)]
pub struct ValidatorLine {
    /// The validator's name in genesis.
    pub validator: String,
    /// Its address.
    pub address: String,
    /// Whether its enrollment verified.
    pub verified: bool,
    /// The failed check, if any.
    pub check: Option<String>,
    /// What the check said.
    pub reason: Option<String>,
    /// The launch measurement its evidence reports (verified only when `verified`).
    pub measurement: Option<String>,
    /// Its CHIP_ID.
    pub chip: Option<String>,
    /// Its REPORTED_TCB.
    pub tcb: Option<bulwark_attest::Tcb>,
}

/// The genesis field saying whether the network admits full nodes.
pub const FULL_NODES_FIELD: &str = "attest_full_nodes";

/// Which full nodes a genesis admits: `None` without the field (only the validator set
/// connects); `Some(true)` for `"attest_full_nodes": true` (peers whose key is not a
/// validator's, whose evidence passes the network's policy); `Some(false)` for `false` (those,
/// and peers whose certificates carry no evidence at all, which never count as validators).
pub fn admits_full_nodes(genesis: &Value) -> Result<Option<bool>, String> {
    match genesis.get(FULL_NODES_FIELD) {
        None => Ok(None),
        Some(Value::Bool(attested)) => Ok(Some(*attested)),
        Some(other) => Err(format!("{FULL_NODES_FIELD}: {other} is not a boolean")),
    }
}

/// What a node checks of its genesis before it runs with it: `consensus_key` is one of its
/// validators (unless the genesis admits full nodes: then the node runs as one until the
/// chain makes it a validator), and every member was born in an attested guest (its enrollment verifies under
/// the genesis's own policy, as it did when the genesis was assembled: judged at `at`, the
/// genesis time, since certificates and revocation lists age and the ceremony's evidence does
/// not change). The error starts with the check's name: `genesis_validator`, `genesis` or
/// `enrollment`.
pub fn check_genesis_for(genesis: &Value, at: u64, consensus_key: &[u8; 32]) -> Result<(), String> {
    let validators: Vec<validator::Info> =
        genesis_field(genesis, "validators").map_err(|e| format!("genesis: {e}"))?;
    let full_nodes = admits_full_nodes(genesis).map_err(|e| format!("genesis: {e}"))?;
    let member = full_nodes.is_some()
        || validators.iter().any(|v| {
            v.pub_key
                .ed25519()
                .is_some_and(|k| k.as_bytes() == consensus_key)
        });
    if !member {
        return Err(format!(
            "genesis_validator: consensus key {} is not a validator of this genesis",
            hex::encode(consensus_key)
        ));
    }
    let lines = verify_genesis(genesis, at).map_err(|e| format!("genesis: {e}"))?;
    if let Some(bad) = lines.iter().find(|l| !l.verified) {
        return Err(format!(
            "enrollment: validator {} ({}) of this genesis was not enrolled from an attested guest: {}: {}",
            bad.validator,
            bad.address,
            bad.check.as_deref().unwrap_or("?"),
            bad.reason.as_deref().unwrap_or("?")
        ));
    }
    Ok(())
}

/// Field `name` of a genesis document.
fn genesis_field<T: serde::de::DeserializeOwned>(genesis: &Value, name: &str) -> Result<T, String> {
    let value = genesis.get(name).ok_or(format!("{name}: missing"))?;
    T::deserialize(value).map_err(|e| format!("{name}: {e}"))
}

/// A validator's address and its launch instance.
pub type LaunchInstance = ([u8; 20], [u8; 32]);

/// Each genesis validator's launch instance, by address: the one its enrollment names (what
/// the register of instance claims starts as, `bulwark_instance::Register::at_launch`). Call
/// it on a genesis [`verify_genesis`] accepted, which checked every enrollment's evidence.
pub fn launch_instances(genesis: &Value) -> Result<Vec<LaunchInstance>, String> {
    let enrollments: Vec<Enrollment> = genesis_field(genesis, "enrollments")?;
    let validators: Vec<validator::Info> = genesis_field(genesis, "validators")?;
    let mut instances = Vec::new();
    for v in &validators {
        let Some(e) = enrollment_of(v, &enrollments) else {
            return Err(format!("validator {}: no enrollment", v.address));
        };
        let address: [u8; 20] = v
            .address
            .as_bytes()
            .try_into()
            .map_err(|_| format!("validator {}: not a 20-byte address", v.address))?;
        let instance = e
            .launch_instance()
            .map_err(|err| format!("validator {}: {err}", v.address))?;
        instances.push((address, instance));
    }
    Ok(instances)
}

/// Re-verifies every validator of a genesis: the chain id certifies the document, and each
/// validator has an enrollment that verifies under the document's own policy for its chain
/// name. `Err` when the document itself is unusable (its chain id or policy); otherwise one
/// line per validator.
pub fn verify_genesis(genesis: &Value, now: u64) -> Result<Vec<ValidatorLine>, String> {
    let chain_name = check_chain_id(genesis).map_err(|e| format!("chain_id: {e}"))?;
    let policy: Policy = genesis_field(genesis, "attestation")?;
    let enrollments: Vec<Enrollment> = genesis_field(genesis, "enrollments")?;
    let validators: Vec<validator::Info> = genesis_field(genesis, "validators")?;
    if validators.is_empty() {
        return Err("validators: none".into());
    }
    Ok(validators
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut out = line(v, &enrollments, &policy, &chain_name, now);
            // The consensus core keys validators by address: a listed address that is not
            // the key's, or a key listed twice, is power that can never vote.
            let problem = if v
                .pub_key
                .ed25519()
                .map(bulwark_types::tendermint::account::Id::from)
                != Some(v.address)
            {
                Some((
                    "address",
                    "the address is not the consensus key's".to_string(),
                ))
            } else if validators[..i].iter().any(|w| w.pub_key == v.pub_key) {
                Some(("duplicate", "the consensus key is listed twice".to_string()))
            } else {
                None
            };
            if let Some((check, reason)) = problem {
                out.verified = false;
                out.check = Some(check.into());
                out.reason = Some(reason);
            }
            out
        })
        .collect())
}

/// The enrollment of validator `v`: the first whose consensus key, decoded, is `v`'s. Both the
/// verification of a genesis and the launch instances it names take this one, so an
/// enrollment the verification skipped can never name an instance.
fn enrollment_of<'a>(v: &validator::Info, enrollments: &'a [Enrollment]) -> Option<&'a Enrollment> {
    let key = v.pub_key.ed25519()?;
    enrollments
        .iter()
        .find(|e| e.consensus_public().is_ok_and(|k| k == key.as_bytes()))
}

fn line(
    v: &validator::Info,
    enrollments: &[Enrollment],
    policy: &Policy,
    chain_name: &str,
    now: u64,
) -> ValidatorLine {
    let mut out = ValidatorLine {
        validator: v.name.clone().unwrap_or_default(),
        address: v.address.to_string(),
        verified: false,
        check: None,
        reason: None,
        measurement: None,
        chip: None,
        tcb: None,
    };
    let Some(e) = enrollment_of(v, enrollments) else {
        out.check = Some("enrollment".into());
        out.reason = Some("no enrollment carries this validator's consensus key".into());
        return out;
    };
    if out.validator.is_empty() {
        out.validator = e.moniker.clone();
    }
    if v.power.value() != u64::from(POWER) {
        out.check = Some("power".into());
        out.reason = Some(format!(
            "power {} (enrolled validators have {POWER})",
            v.power.value()
        ));
        return out;
    }
    match e.verify(policy, chain_name, now) {
        Ok(r) => {
            out.verified = true;
            out.measurement = Some(r.measurement.to_string());
            out.chip = Some(r.chip_id.to_string());
            out.tcb = Some(r.reported_tcb);
        }
        Err(err) => {
            out.check = Some(err.check().into());
            out.reason = Some(err.to_string());
            // What the evidence claims, unverified, to help the reader.
            if let Some(report) = e
                .evidence
                .to_evidence()
                .ok()
                .and_then(|ev| AttestationReport::from_bytes(&ev.report).ok())
            {
                out.measurement = Some(hex::encode(report.measurement()));
                out.chip = Some(hex::encode(report.chip_id()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_attest::simulated::SimulatedPsp;
    use bulwark_attest::Trust;

    const M: [u8; 48] = [5; 48];

    fn enrolled(dir: &Path, i: usize, chain: &str, psp: &mut SimulatedPsp) -> Enrollment {
        enroll(
            psp,
            &dir.join(format!("n{i}")),
            &format!("node{i}"),
            chain,
            &[i as u8; 32],
        )
        .unwrap()
    }

    /// Three validators enrolled in `dir` on one simulated chip, and their genesis.
    fn three_validators(dir: &Path) -> (Vec<Enrollment>, Policy, Value) {
        let mut psp = SimulatedPsp::new([1; 32], M);
        let es: Vec<_> = (0..3)
            .map(|i| enrolled(dir, i, "alpha", &mut psp))
            .collect();
        let policy = Policy::strict(Trust::Simulated, Measurements::OneOf(vec![HexBytes(M)]));
        let g = assemble("alpha", &es, &policy, now(), serde_json::json!({}), None).unwrap();
        (es, policy, g)
    }

    #[test]
    fn an_assembled_genesis_verifies_and_a_second_enrollment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (es, policy, g) = three_validators(dir.path());
        let mut psp = SimulatedPsp::new([1; 32], M);
        let lines = verify_genesis(&g, now()).unwrap();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.verified), "{lines:?}");
        assert_eq!(lines[1].validator, "node1");
        assert!(matches!(
            enroll(&mut psp, &dir.path().join("n0"), "again", "alpha", &[1; 32]),
            Err(CeremonyError::File { .. })
        ));
        // A validator without an enrollment is named.
        let mut extra = g.clone();
        extra["enrollments"].as_array_mut().unwrap().remove(2);
        certify("alpha", &mut extra).unwrap();
        let lines = verify_genesis(&extra, now()).unwrap();
        assert_eq!(lines[2].check.as_deref(), Some("enrollment"));
        // A key listed twice, or under an address that is not its own, is named.
        let mut twice = g.clone();
        let first = twice["validators"][0].clone();
        twice["validators"].as_array_mut().unwrap().push(first);
        certify("alpha", &mut twice).unwrap();
        let lines = verify_genesis(&twice, now()).unwrap();
        assert!(lines[0].verified, "{lines:?}");
        assert_eq!(lines[3].check.as_deref(), Some("duplicate"));
        let mut moved = g.clone();
        moved["validators"][1]["address"] = moved["validators"][2]["address"].clone();
        certify("alpha", &mut moved).unwrap();
        let lines = verify_genesis(&moved, now()).unwrap();
        assert_eq!(lines[1].check.as_deref(), Some("address"));
        assert!(lines[2].verified, "{lines:?}");
        // Assembly refuses an enrollment from an unlisted image, naming it.
        let other = enrolled(
            dir.path(),
            9,
            "alpha",
            &mut SimulatedPsp::new([1; 32], [6; 48]),
        );
        match assemble(
            "alpha",
            &[es[0].clone(), other],
            &policy,
            now(),
            serde_json::json!({}),
            None,
        ) {
            Err(CeremonyError::Enrollment { index, check, .. }) => {
                assert_eq!((index, check), (1, "measurement"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            assemble(
                "alpha",
                &[es[0].clone(), es[0].clone()],
                &policy,
                now(),
                serde_json::json!({}),
                None
            ),
            Err(CeremonyError::DuplicateKey(_))
        ));
    }

    #[test]
    fn the_genesis_names_each_validators_launch_instance_and_a_node_checks_its_membership() {
        let dir = tempfile::tempdir().unwrap();
        let (es, _, g) = three_validators(dir.path());
        let named = launch_instances(&g).unwrap();
        assert_eq!(named.len(), 3);
        for (i, (address, instance)) in named.iter().enumerate() {
            assert_eq!(*instance, [i as u8; 32]);
            let listed = g["validators"][i]["address"].as_str().unwrap();
            assert_eq!(hex::encode_upper(address), listed);
        }
        let key = |i: usize| es[i].consensus_public().unwrap();
        check_genesis_for(&g, now(), &key(1)).unwrap();
        let stranger = check_genesis_for(&g, now(), &[9; 32]).unwrap_err();
        assert!(stranger.starts_with("genesis_validator: "), "{stranger}");
        // Where the genesis admits full nodes, a stranger runs as one; a genesis that asks
        // for full nodes without evidence is refused.
        let mut full = g.clone();
        full[FULL_NODES_FIELD] = Value::Bool(true);
        certify("alpha", &mut full).unwrap();
        check_genesis_for(&full, now(), &[9; 32]).unwrap();
        full[FULL_NODES_FIELD] = Value::Bool(false);
        certify("alpha", &mut full).unwrap();
        check_genesis_for(&full, now(), &[9; 32]).unwrap();
        full[FULL_NODES_FIELD] = Value::String("yes".into());
        certify("alpha", &mut full).unwrap();
        let garbled = check_genesis_for(&full, now(), &key(1)).unwrap_err();
        assert!(garbled.contains("not a boolean"), "{garbled}");
        // A member without an enrollment: no launch instance, and no node runs with it.
        let mut missing = g.clone();
        missing["enrollments"].as_array_mut().unwrap().remove(2);
        certify("alpha", &mut missing).unwrap();
        assert!(launch_instances(&missing)
            .unwrap_err()
            .contains("no enrollment"));
        let refused = check_genesis_for(&missing, now(), &key(0)).unwrap_err();
        assert!(
            refused.starts_with("enrollment: validator node2"),
            "{refused}"
        );
        // A forged copy of an enrollment put first, its key in upper-case hex and another
        // launch instance: the verification and the launch instances both take it, and its
        // evidence does not bind that instance.
        let mut forged = g.clone();
        let mut copy = forged["enrollments"][1].clone();
        copy["consensus_key"] = Value::String(es[1].consensus_key.to_uppercase());
        copy["launch_instance"] = Value::String(hex::encode([7u8; 32]));
        forged["enrollments"]
            .as_array_mut()
            .unwrap()
            .insert(0, copy);
        certify("alpha", &mut forged).unwrap();
        assert_eq!(launch_instances(&forged).unwrap()[1].1, [7; 32]);
        let lines = verify_genesis(&forged, now()).unwrap();
        assert_eq!(lines[1].check.as_deref(), Some("report_data"), "{lines:?}");
        assert!(check_genesis_for(&forged, now(), &key(0))
            .unwrap_err()
            .starts_with("enrollment: validator node1"));
    }

    #[test]
    fn a_process_homes_launch_instance_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config");
        let mut psp = SimulatedPsp::new([1; 32], M);
        let e = enroll_for_process(&mut psp, &cfg, "node0", "alpha").unwrap();
        let taken = take_launch_instance(&cfg).unwrap();
        assert_eq!(taken, Some(e.launch_instance().unwrap()));
        assert_eq!(take_launch_instance(&cfg).unwrap(), None);
        std::fs::write(cfg.join(LAUNCH_INSTANCE), "zz").unwrap();
        assert!(take_launch_instance(&cfg).is_err());
    }

    #[test]
    fn measurements_are_read_from_the_image_file_or_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let a = hex::encode([1u8; 48]);
        let b = hex::encode([2u8; 48]);
        let image = dir.path().join("measurement.json");
        std::fs::write(
            &image,
            serde_json::json!({"vmm": "qemu", "launch_digest": {"milan": {"1": a, "2": b}, "genoa": {"1": a}}})
                .to_string(),
        )
        .unwrap();
        assert_eq!(read_measurements(&image).unwrap().len(), 2);
        let list = dir.path().join("list.json");
        std::fs::write(&list, serde_json::json!([a]).to_string()).unwrap();
        assert_eq!(read_measurements(&list).unwrap(), vec![HexBytes([1; 48])]);
        std::fs::write(&list, "[\"00\"]").unwrap();
        assert!(read_measurements(&list).is_err());
    }
}
