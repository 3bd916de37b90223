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

/// Enrols this guest: makes a fresh identity from the CRNG, seals it under `source` for
/// `chain_name` into `config_dir/identity.sealed.json` and writes `config_dir/enrollment.json`.
/// Refuses to replace an existing identity.
pub fn enroll(
    source: &mut dyn EvidenceSource,
    config_dir: &Path,
    moniker: &str,
    chain_name: &str,
) -> Result<Enrollment, CeremonyError> {
    let sealed_path = config_dir.join(SEALED_IDENTITY);
    if sealed_path.exists() {
        return Err(file_error(
            &sealed_path,
            "already exists; refusing to replace an identity",
        ));
    }
    std::fs::create_dir_all(config_dir).map_err(|e| file_error(config_dir, e))?;
    let identity = Identity::generate()?;
    SealedIdentity::seal(source, &identity, chain_name)?.write(&sealed_path)?;
    let enrollment = Enrollment::create(source, &identity, moniker, chain_name)?;
    let path = config_dir.join(ENROLLMENT);
    let text = serde_json::to_string_pretty(&enrollment).map_err(|e| file_error(&path, e))?;
    std::fs::write(&path, text + "\n").map_err(|e| file_error(&path, e))?;
    Ok(enrollment)
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
/// given (power [`POWER`], named by moniker), the policy as `attestation`, the enrollments as
/// `enrollments`, and the self-certifying chain id. Every enrollment must verify under
/// `policy` at `now`.
pub fn assemble(
    chain_name: &str,
    enrollments: &[Enrollment],
    policy: &Policy,
    now: u64,
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
        app_state: serde_json::json!({}),
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

/// Re-verifies every validator of a genesis: the chain id certifies the document, and each
/// validator has an enrollment that verifies under the document's own policy for its chain
/// name. `Err` when the document itself is unusable (its chain id or policy); otherwise one
/// line per validator.
pub fn verify_genesis(genesis: &Value, now: u64) -> Result<Vec<ValidatorLine>, String> {
    let chain_name = check_chain_id(genesis).map_err(|e| format!("chain_id: {e}"))?;
    let policy: Policy = serde_json::from_value(
        genesis
            .get("attestation")
            .cloned()
            .ok_or("attestation: missing")?,
    )
    .map_err(|e| format!("attestation: {e}"))?;
    let enrollments: Vec<Enrollment> = serde_json::from_value(
        genesis
            .get("enrollments")
            .cloned()
            .ok_or("enrollments: missing")?,
    )
    .map_err(|e| format!("enrollments: {e}"))?;
    let validators: Vec<validator::Info> = serde_json::from_value(
        genesis
            .get("validators")
            .cloned()
            .ok_or("validators: missing")?,
    )
    .map_err(|e| format!("validators: {e}"))?;
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
    let key = v.pub_key.ed25519().map(|k| hex::encode(k.as_bytes()));
    let Some(e) = enrollments
        .iter()
        .find(|e| Some(&e.consensus_key) == key.as_ref())
    else {
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
        enroll(psp, &dir.join(format!("n{i}")), &format!("node{i}"), chain).unwrap()
    }

    #[test]
    fn an_assembled_genesis_verifies_and_a_second_enrollment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut psp = SimulatedPsp::new([1; 32], M);
        let es: Vec<_> = (0..3)
            .map(|i| enrolled(dir.path(), i, "alpha", &mut psp))
            .collect();
        let policy = Policy::strict(Trust::Simulated, Measurements::OneOf(vec![HexBytes(M)]));
        let g = assemble("alpha", &es, &policy, now()).unwrap();
        let lines = verify_genesis(&g, now()).unwrap();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.verified), "{lines:?}");
        assert_eq!(lines[1].validator, "node1");
        assert!(matches!(
            enroll(&mut psp, &dir.path().join("n0"), "again", "alpha"),
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
        match assemble("alpha", &[es[0].clone(), other], &policy, now()) {
            Err(CeremonyError::Enrollment { index, check, .. }) => {
                assert_eq!((index, check), (1, "measurement"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            assemble("alpha", &[es[0].clone(), es[0].clone()], &policy, now()),
            Err(CeremonyError::DuplicateKey(_))
        ));
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
