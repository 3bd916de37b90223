//! What a network accepts, as it appears in genesis. Defaults are strict: debug off, no
//! migration agent, VMPL 0, committed TCB equal to current TCB, VCEK only, AMD roots only.

use crate::report::Tcb;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `N` bytes written as hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HexBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> std::fmt::Debug for HexBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> std::fmt::Display for HexBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> std::str::FromStr for HexBytes<N> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s.trim()).map_err(|e| format!("not hex: {e}"))?;
        let arr: [u8; N] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("expected {N} bytes, got {}", b.len()))?;
        Ok(HexBytes(arr))
    }
}

impl<const N: usize> Serialize for HexBytes<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for HexBytes<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A launch measurement (48 bytes).
pub type Measurement = HexBytes<48>;

/// Which roots evidence must chain to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// AMD's pinned roots: real hardware only.
    Amd,
    /// The project's simulated root: development networks only.
    Simulated,
}

/// Which measurements are accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measurements {
    /// Any measurement (for inspecting evidence, never for a network).
    Any,
    /// Only these.
    OneOf(Vec<Measurement>),
}

/// The attestation policy of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Which roots.
    pub trust: Trust,
    /// Which launch measurements.
    pub measurements: Measurements,
    /// Accept guests whose policy allows debugging (the host can read their memory).
    #[serde(default)]
    pub allow_debug: bool,
    /// Accept guests that allow a migration agent.
    #[serde(default)]
    pub allow_migration_agent: bool,
    /// Reject hosts with SMT enabled.
    #[serde(default)]
    pub forbid_smt: bool,
    /// Require the single-socket guest policy.
    #[serde(default)]
    pub require_single_socket: bool,
    /// Lowest acceptable reported TCB, component by component.
    #[serde(default)]
    pub minimum_tcb: Tcb,
    /// Accept a current TCB that differs from the committed one (provisional firmware).
    #[serde(default)]
    pub allow_provisional_tcb: bool,
    /// The VMPL the report must come from.
    #[serde(default)]
    pub vmpl: u32,
    /// Accept VCEK-signed reports.
    #[serde(default = "yes")]
    pub allow_vcek: bool,
    /// Accept VLEK-signed reports (cloud providers' keys).
    #[serde(default)]
    pub allow_vlek: bool,
    /// Required HOST_DATA.
    #[serde(default)]
    pub host_data: Option<HexBytes<32>>,
    /// Accepted ID key digests (empty: any).
    #[serde(default)]
    pub id_key_digests: Vec<HexBytes<48>>,
    /// Accepted author key digests (empty: any).
    #[serde(default)]
    pub author_key_digests: Vec<HexBytes<48>>,
    /// Accepted chip ids (empty: any).
    #[serde(default)]
    pub chip_ids: Vec<HexBytes<64>>,
}

fn yes() -> bool {
    true
}

impl Policy {
    /// The strict default for `measurements` under `trust`.
    pub fn strict(trust: Trust, measurements: Measurements) -> Self {
        Policy {
            trust,
            measurements,
            allow_debug: false,
            allow_migration_agent: false,
            forbid_smt: false,
            require_single_socket: false,
            minimum_tcb: Tcb::default(),
            allow_provisional_tcb: false,
            vmpl: 0,
            allow_vcek: true,
            allow_vlek: false,
            host_data: None,
            id_key_digests: Vec::new(),
            author_key_digests: Vec::new(),
            chip_ids: Vec::new(),
        }
    }
}
