//! An enrollment: what a guest with a fresh identity publishes so that a genesis can admit it.
//! It names the validator (moniker), its consensus key, its node key and id, the chain name,
//! its launch instance (the enrolling boot, which runs on as the validator:
//! `bulwark_instance`), and carries evidence whose REPORT_DATA binds all of them under
//! [`ENROLLMENT_DOMAIN`] ([`enrollment_report_data`]). Anyone can re-verify it against the
//! network's policy.
//!
//! Evidence is tagged with its kind (`"kind": "sev-snp"`), so other TEEs' evidence can be added
//! beside it without changing the format.

use crate::sealed::{Identity, IdentityError};
use bulwark_attest::{
    verify, Binding, Evidence, EvidenceSource, Policy, RejectReason, VerifiedReport,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use thiserror::Error;

/// The domain label of an enrollment's REPORT_DATA: evidence made for a TLS certificate or
/// anything else never verifies as an enrollment.
pub const ENROLLMENT_DOMAIN: &[u8] = b"bulwark/enrollment/v2";

/// The enrollment format version (2: the launch instance).
pub const ENROLLMENT_VERSION: u32 = 2;

/// Longest moniker.
pub const MAX_MONIKER: usize = 64;

/// REPORT_DATA of an enrollment: SHA-512 over the domain label, the consensus public key, the
/// node public key, the chain name and the launch instance, each length-prefixed.
pub fn enrollment_report_data(
    consensus_key: &[u8; 32],
    node_key: &[u8; 32],
    chain_name: &str,
    launch_instance: &[u8; 32],
) -> [u8; 64] {
    let mut h = Sha512::new();
    for part in [
        ENROLLMENT_DOMAIN,
        consensus_key.as_slice(),
        node_key.as_slice(),
        chain_name.as_bytes(),
        launch_instance.as_slice(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// CometBFT's node id of an ed25519 node key: hex of the first 20 bytes of its SHA-256.
pub fn node_id(node_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(node_key)[..20])
}

/// Evidence, tagged with the kind of TEE that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum TaggedEvidence {
    /// An AMD SEV-SNP report and its VCEK or VLEK certificate.
    #[serde(rename = "sev-snp")]
    SevSnp {
        /// The attestation report (hex).
        report: String,
        /// The endorsement certificate (hex of DER or PEM bytes).
        endorsement_cert: String,
    },
}

impl TaggedEvidence {
    /// SEV-SNP evidence.
    pub fn sev_snp(evidence: &Evidence) -> Self {
        TaggedEvidence::SevSnp {
            report: hex::encode(&evidence.report),
            endorsement_cert: hex::encode(&evidence.endorsement_cert),
        }
    }

    /// The evidence's bytes.
    pub fn to_evidence(&self) -> Result<Evidence, EnrollmentError> {
        let bytes = |field: &str, text: &str| {
            hex::decode(text)
                .map_err(|e| EnrollmentError::Encoding(format!("evidence.{field}: {e}")))
        };
        match self {
            TaggedEvidence::SevSnp {
                report,
                endorsement_cert,
            } => Ok(Evidence {
                report: bytes("report", report)?,
                endorsement_cert: bytes("endorsement_cert", endorsement_cert)?,
            }),
        }
    }
}

/// `enrollment.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// [`ENROLLMENT_VERSION`].
    pub version: u32,
    /// The validator's human name.
    pub moniker: String,
    /// The chain name the identity was made and sealed for.
    pub chain_name: String,
    /// The consensus public key (hex).
    pub consensus_key: String,
    /// The node public key (hex).
    pub node_key: String,
    /// The node id derived from the node key.
    pub node_id: String,
    /// The launch instance (hex): the enrolling boot's, which the genesis therefore names as
    /// the validator's first holder of its key.
    pub launch_instance: String,
    /// Evidence binding the keys, the chain name and the launch instance.
    pub evidence: TaggedEvidence,
}

/// Why an enrollment is not admitted. [`EnrollmentError::check`] names the check.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum EnrollmentError {
    /// A field is not in its format.
    #[error("encoding: {0}")]
    Encoding(String),
    /// The enrollment is for another chain.
    #[error("chain_name: the enrollment is for {found:?}, not {expected:?}")]
    ChainName {
        /// The chain being assembled or verified.
        expected: String,
        /// The enrollment's.
        found: String,
    },
    /// `node_id` is not the id of `node_key`.
    #[error("node_id: {0} is not the id of the node key")]
    NodeId(String),
    /// The evidence failed a check (its REPORT_DATA not binding these keys and chain name is
    /// `report_data`).
    #[error("{0}")]
    Evidence(RejectReason),
}

impl EnrollmentError {
    /// The failed check's name.
    pub fn check(&self) -> &'static str {
        match self {
            EnrollmentError::Encoding(_) => "encoding",
            EnrollmentError::ChainName { .. } => "chain_name",
            EnrollmentError::NodeId(_) => "node_id",
            EnrollmentError::Evidence(r) => r.check(),
        }
    }
}

fn key32(field: &str, text: &str) -> Result<[u8; 32], EnrollmentError> {
    hex::decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EnrollmentError::Encoding(format!("{field} is not 32 bytes of hex")))
}

impl Enrollment {
    /// Makes the enrollment of `identity` with launch instance `launch_instance` (fresh
    /// random bytes of the enrolling boot), with fresh evidence from `source`.
    pub fn create(
        source: &mut dyn EvidenceSource,
        identity: &Identity,
        moniker: &str,
        chain_name: &str,
        launch_instance: &[u8; 32],
    ) -> Result<Self, IdentityError> {
        let consensus = identity.consensus_public();
        let node = identity.node_public();
        let evidence = source.evidence(enrollment_report_data(
            &consensus,
            &node,
            chain_name,
            launch_instance,
        ))?;
        Ok(Enrollment {
            version: ENROLLMENT_VERSION,
            moniker: moniker.into(),
            chain_name: chain_name.into(),
            consensus_key: hex::encode(consensus),
            node_key: hex::encode(node),
            node_id: node_id(&node),
            launch_instance: hex::encode(launch_instance),
            evidence: TaggedEvidence::sev_snp(&evidence),
        })
    }

    /// The launch instance.
    pub fn launch_instance(&self) -> Result<[u8; 32], EnrollmentError> {
        key32("launch_instance", &self.launch_instance)
    }

    /// The consensus public key.
    pub fn consensus_public(&self) -> Result<[u8; 32], EnrollmentError> {
        key32("consensus_key", &self.consensus_key)
    }

    /// The node public key.
    pub fn node_public(&self) -> Result<[u8; 32], EnrollmentError> {
        key32("node_key", &self.node_key)
    }

    /// Verifies the enrollment for `chain_name` under `policy` at `now` (Unix seconds): the
    /// format, the chain name, the node id, then every evidence check with REPORT_DATA bound
    /// to the stated keys and `chain_name`.
    pub fn verify(
        &self,
        policy: &Policy,
        chain_name: &str,
        now: u64,
    ) -> Result<VerifiedReport, EnrollmentError> {
        if self.version != ENROLLMENT_VERSION {
            return Err(EnrollmentError::Encoding(format!(
                "version {}",
                self.version
            )));
        }
        if self.moniker.is_empty()
            || self.moniker.len() > MAX_MONIKER
            || self.moniker.chars().any(char::is_control)
        {
            return Err(EnrollmentError::Encoding(format!(
                "moniker: 1 to {MAX_MONIKER} bytes without control characters"
            )));
        }
        if self.chain_name != chain_name {
            return Err(EnrollmentError::ChainName {
                expected: chain_name.into(),
                found: self.chain_name.clone(),
            });
        }
        let consensus = self.consensus_public()?;
        let node = self.node_public()?;
        if node_id(&node) != self.node_id {
            return Err(EnrollmentError::NodeId(self.node_id.clone()));
        }
        let launch_instance = self.launch_instance()?;
        let evidence = self.evidence.to_evidence()?;
        let binding = Binding::ReportData(enrollment_report_data(
            &consensus,
            &node,
            chain_name,
            &launch_instance,
        ));
        verify(&evidence, policy, &binding, now).map_err(EnrollmentError::Evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_attest::simulated::SimulatedPsp;
    use bulwark_attest::{HexBytes, Measurements, Trust};

    const MEASUREMENT: [u8; 48] = [8; 48];

    fn policy() -> Policy {
        Policy::strict(
            Trust::Simulated,
            Measurements::OneOf(vec![HexBytes(MEASUREMENT)]),
        )
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn enrol(psp: &mut SimulatedPsp, chain: &str) -> (Identity, Enrollment) {
        let id = Identity::generate().unwrap();
        let e = Enrollment::create(psp, &id, "node0", chain, &[5; 32]).unwrap();
        (id, e)
    }

    #[test]
    fn an_enrollment_verifies_and_round_trips_as_json() {
        let (id, e) = enrol(&mut SimulatedPsp::new([1; 32], MEASUREMENT), "alpha");
        let v = e.verify(&policy(), "alpha", now()).unwrap();
        assert_eq!(v.measurement, HexBytes(MEASUREMENT));
        assert_eq!(e.consensus_public().unwrap(), id.consensus_public());
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.contains(r#""kind":"sev-snp""#), "{text}");
        let back: Enrollment = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn an_enrollment_bound_to_another_key_fails_report_data() {
        let mut psp = SimulatedPsp::new([1; 32], MEASUREMENT);
        let (_, mut e) = enrol(&mut psp, "alpha");
        let (other, _) = enrol(&mut psp, "alpha");
        e.consensus_key = hex::encode(other.consensus_public());
        let err = e.verify(&policy(), "alpha", now()).unwrap_err();
        assert_eq!(err.check(), "report_data", "{err}");
    }

    #[test]
    fn an_enrollment_for_another_chain_fails_even_when_relabelled() {
        let (_, mut e) = enrol(&mut SimulatedPsp::new([1; 32], MEASUREMENT), "beta");
        assert_eq!(
            e.verify(&policy(), "alpha", now()).unwrap_err().check(),
            "chain_name"
        );
        e.chain_name = "alpha".into();
        assert_eq!(
            e.verify(&policy(), "alpha", now()).unwrap_err().check(),
            "report_data"
        );
    }

    #[test]
    fn debug_policies_unlisted_measurements_and_bad_node_ids_are_named() {
        let mut debug = SimulatedPsp::new([1; 32], MEASUREMENT);
        debug.policy |= 1 << 19;
        let (_, e) = enrol(&mut debug, "alpha");
        assert_eq!(
            e.verify(&policy(), "alpha", now()).unwrap_err().check(),
            "debug"
        );
        let (_, e) = enrol(&mut SimulatedPsp::new([1; 32], [9; 48]), "alpha");
        assert_eq!(
            e.verify(&policy(), "alpha", now()).unwrap_err().check(),
            "measurement"
        );
        let (_, mut e) = enrol(&mut SimulatedPsp::new([1; 32], MEASUREMENT), "alpha");
        e.node_id = "00".repeat(20);
        assert_eq!(
            e.verify(&policy(), "alpha", now()).unwrap_err().check(),
            "node_id"
        );
        e.node_key = "zz".into();
        assert_eq!(
            e.verify(&policy(), "alpha", now()).unwrap_err().check(),
            "encoding"
        );
    }

    #[test]
    fn every_input_changes_the_enrollment_binding() {
        let base = enrollment_report_data(&[1; 32], &[2; 32], "alpha", &[4; 32]);
        for other in [
            enrollment_report_data(&[3; 32], &[2; 32], "alpha", &[4; 32]),
            enrollment_report_data(&[1; 32], &[3; 32], "alpha", &[4; 32]),
            enrollment_report_data(&[1; 32], &[2; 32], "alphb", &[4; 32]),
            enrollment_report_data(&[2; 32], &[1; 32], "alpha", &[4; 32]),
            enrollment_report_data(&[1; 32], &[2; 32], "alpha", &[5; 32]),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_launch_instance_swapped_by_the_host_fails_report_data() {
        // The host cannot name another instance (a copy of the disk it booted) for the one
        // that enrolled: the evidence binds the enrolling boot's.
        let (_, mut e) = enrol(&mut SimulatedPsp::new([1; 32], MEASUREMENT), "alpha");
        assert_eq!(e.launch_instance().unwrap(), [5; 32]);
        e.launch_instance = hex::encode([6; 32]);
        assert_eq!(
            e.verify(&policy(), "alpha", now()).unwrap_err().check(),
            "report_data"
        );
        e.launch_instance = "00".into();
        assert_eq!(
            e.verify(&policy(), "alpha", now()).unwrap_err().check(),
            "encoding"
        );
    }
}
