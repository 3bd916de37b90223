//! What a network accepts, as it appears in genesis. Every field is named after the check it
//! drives (docs/SECURITY.md lists them in order). Parsing is strict: unknown fields are
//! errors, so a typo never selects a weaker default, and under `trust: amd` every
//! security-relevant field must be stated explicitly ([`PolicyError::MissingUnderAmd`] names
//! the one missing). Defaults, where a simulated network may leave a field out, are the strict
//! template of [`Policy::strict`].

use crate::crl::Crl;
use crate::report::{FirmwareVersion, Product, Tcb};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use thiserror::Error;

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

pub use bulwark_snp::Trust;

/// Which measurements are accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Measurements {
    /// Any measurement (for inspecting evidence, never for a network).
    Any,
    /// Only these.
    OneOf(Vec<Measurement>),
}

/// An SEV-SNP ABI version (major.minor), as in the guest policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbiVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
}

/// Rules for the guest policy the guest was launched with (the report's POLICY word; its
/// reserved bits are always checked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestPolicyRules {
    /// `debug`: accept a policy that allows debugging (the host can read guest memory).
    pub allow_debug: bool,
    /// `migration_agent`: accept a policy that allows a migration agent.
    pub allow_migration_agent: bool,
    /// `guest_smt`: accept a policy that allows the guest to run with SMT.
    pub allow_smt: bool,
    /// `single_socket`: require the single-socket policy bit.
    pub require_single_socket: bool,
    /// `cxl`: accept a policy that allows CXL devices or memory.
    pub allow_cxl: bool,
    /// `aes_256_xts`: require AES-256-XTS memory encryption.
    pub require_aes_256_xts: bool,
    /// `guest_rapl_disabled`: require the policy bit that makes RAPL be disabled.
    pub require_rapl_disabled: bool,
    /// `guest_ciphertext_hiding`: require the policy bit for DRAM ciphertext hiding.
    pub require_ciphertext_hiding: bool,
    /// `page_swap_disabled`: require the policy bit that forbids page swapping.
    pub require_page_swap_disabled: bool,
    /// `minimum_abi`: the lowest ABI version the policy may name.
    pub minimum_abi: AbiVersion,
}

/// Rules for the host platform (the report's PLATFORM_INFO; its reserved bits are always
/// checked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformRules {
    /// `smt`: accept a host with SMT enabled.
    pub allow_smt: bool,
    /// `tsme`: accept a host with TSME enabled.
    pub allow_tsme: bool,
    /// `ecc`: require error-correcting memory.
    pub require_ecc: bool,
    /// `rapl_disabled`: require RAPL to be disabled.
    pub require_rapl_disabled: bool,
    /// `ciphertext_hiding`: require DRAM ciphertext hiding to be enabled.
    pub require_ciphertext_hiding: bool,
    /// `alias_check`: require the completed memory alias check (BadRAM, AMD-SB-3015).
    pub require_alias_check: bool,
    /// `tio`: accept a host with SEV-TIO enabled.
    pub allow_tio: bool,
}

/// The floors for one product line. A product line without an entry is not admitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductRules {
    /// `minimum_tcb`: lowest REPORTED_TCB, component by component.
    pub minimum_tcb: Tcb,
    /// `minimum_launch_tcb`: lowest LAUNCH_TCB (the TCB the guest was launched under).
    pub minimum_launch_tcb: Tcb,
    /// `minimum_firmware`: lowest current firmware, compared as (major, minor, build) in that
    /// order (go-sev-guest compares its `MinimumVersion` and `MinimumBuild` separately, which
    /// refuses a newer API version with a lower build number).
    pub minimum_firmware: FirmwareVersion,
}

/// Minimum mitigation vectors (report version 5): every bit set here must be set in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mitigations {
    /// Bits LAUNCH_MIT_VECTOR must have.
    pub launch: u64,
    /// Bits CURRENT_MIT_VECTOR must have.
    pub current: u64,
}

/// Revocation: AMD's ARK-signed CRLs, one per product line, and how old one may be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The CRL of each product line (verified under its pinned ARK when parsed).
    pub crls: BTreeMap<Product, Crl>,
    /// `crl_missing`: reject evidence of a product line that has no CRL here.
    pub require_crl: bool,
    /// `crl_stale`: a CRL's thisUpdate may be at most this many seconds before now.
    pub max_crl_age_secs: u64,
}

/// The attestation policy of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PolicyWire")]
pub struct Policy {
    /// Which roots.
    pub trust: Trust,
    /// `measurement`: which launch measurements.
    pub measurements: Measurements,
    /// `minimum_report_version`: the lowest report version (3 and later carry the CPUID).
    pub minimum_report_version: u32,
    /// The guest-policy checks.
    pub guest_policy: GuestPolicyRules,
    /// The platform checks.
    pub platform: PlatformRules,
    /// The admitted product lines and their floors.
    pub products: BTreeMap<Product, ProductRules>,
    /// `provisional_tcb` / `provisional_firmware`: accept a current TCB and firmware above the
    /// committed ones (committed ≤ current is then still required).
    pub allow_provisional_tcb: bool,
    /// `mitigation_vector`: minimum mitigation vectors.
    pub minimum_mitigations: Mitigations,
    /// `minimum_guest_svn`: lowest GUEST_SVN (the image author's security version).
    pub minimum_guest_svn: u32,
    /// `vmpl`: the VMPL the report must come from.
    pub vmpl: u32,
    /// `signing_key`: accept VCEK-signed reports.
    pub allow_vcek: bool,
    /// `signing_key`: accept VLEK-signed reports (cloud providers' keys).
    pub allow_vlek: bool,
    /// `vlek_csp`: the cloud providers whose VLEKs are accepted (their CSP_ID, e.g.
    /// `CN=cc-us-east-2.amazonaws.com`).
    pub vlek_csp_ids: Vec<String>,
    /// `masked_chip_id`: accept VCEK reports whose CHIP_ID is all zero (the host masked it);
    /// the hardware-id comparison is then skipped.
    pub allow_masked_chip_id: bool,
    /// Revocation lists and their age bound.
    pub revocation: Revocation,
    /// `host_data`: required HOST_DATA.
    pub host_data: Option<HexBytes<32>>,
    /// `family_id`: required FAMILY_ID (from the ID block).
    pub family_id: Option<HexBytes<16>>,
    /// `image_id`: required IMAGE_ID (from the ID block).
    pub image_id: Option<HexBytes<16>>,
    /// `id_key`: accepted ID key digests (empty: any).
    pub id_key_digests: Vec<HexBytes<48>>,
    /// `author_key_enabled`: require an author key to have signed the ID block.
    pub require_author_key: bool,
    /// `author_key`: accepted author key digests (empty: any).
    pub author_key_digests: Vec<HexBytes<48>>,
    /// `chip_id`: accepted chip ids (empty: any).
    pub chip_ids: Vec<HexBytes<64>>,
}

/// Why a policy document is not a policy.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Not JSON of the policy's shape (an unknown field is named here).
    #[error("attestation policy: {0}")]
    Json(String),
    /// Under `trust: amd` this security-relevant field must be stated.
    #[error("attestation policy: under trust \"amd\" the field `{0}` must be stated explicitly")]
    MissingUnderAmd(&'static str),
    /// A CRL listed under one product line is signed by another product line's or another
    /// trust's ARK.
    #[error("attestation policy: the CRL under {listed:?} is signed by the {trust:?} ARK of {signed_by:?}")]
    CrlMismatch {
        /// Where it is listed.
        listed: Product,
        /// Whose ARK signed it.
        signed_by: Product,
        /// Which roots that ARK belongs to.
        trust: Trust,
    },
}

/// The policy as written, before the rules for what must be stated are applied.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyWire {
    trust: Trust,
    measurements: Measurements,
    minimum_report_version: Option<u32>,
    guest_policy: Option<GuestPolicyRules>,
    platform: Option<PlatformRules>,
    products: Option<BTreeMap<Product, ProductRules>>,
    allow_provisional_tcb: Option<bool>,
    minimum_mitigations: Option<Mitigations>,
    #[serde(default)]
    minimum_guest_svn: u32,
    vmpl: Option<u32>,
    allow_vcek: Option<bool>,
    allow_vlek: Option<bool>,
    vlek_csp_ids: Option<Vec<String>>,
    allow_masked_chip_id: Option<bool>,
    revocation: Option<Revocation>,
    #[serde(default)]
    host_data: Option<HexBytes<32>>,
    #[serde(default)]
    family_id: Option<HexBytes<16>>,
    #[serde(default)]
    image_id: Option<HexBytes<16>>,
    #[serde(default)]
    id_key_digests: Vec<HexBytes<48>>,
    #[serde(default)]
    require_author_key: bool,
    #[serde(default)]
    author_key_digests: Vec<HexBytes<48>>,
    #[serde(default)]
    chip_ids: Vec<HexBytes<64>>,
}

impl TryFrom<PolicyWire> for Policy {
    type Error = PolicyError;

    fn try_from(w: PolicyWire) -> Result<Policy, PolicyError> {
        let defaults = Policy::strict(w.trust, w.measurements.clone());
        let amd = w.trust == Trust::Amd;
        // Under AMD trust a missing field is an error naming it; otherwise the strict default.
        fn stated<T>(
            amd: bool,
            name: &'static str,
            value: Option<T>,
            default: T,
        ) -> Result<T, PolicyError> {
            match value {
                Some(v) => Ok(v),
                None if amd => Err(PolicyError::MissingUnderAmd(name)),
                None => Ok(default),
            }
        }
        let policy = Policy {
            trust: w.trust,
            measurements: w.measurements,
            minimum_report_version: stated(
                amd,
                "minimum_report_version",
                w.minimum_report_version,
                defaults.minimum_report_version,
            )?,
            guest_policy: stated(amd, "guest_policy", w.guest_policy, defaults.guest_policy)?,
            platform: stated(amd, "platform", w.platform, defaults.platform)?,
            products: stated(amd, "products", w.products, defaults.products)?,
            allow_provisional_tcb: stated(
                amd,
                "allow_provisional_tcb",
                w.allow_provisional_tcb,
                defaults.allow_provisional_tcb,
            )?,
            minimum_mitigations: stated(
                amd,
                "minimum_mitigations",
                w.minimum_mitigations,
                defaults.minimum_mitigations,
            )?,
            minimum_guest_svn: w.minimum_guest_svn,
            vmpl: stated(amd, "vmpl", w.vmpl, defaults.vmpl)?,
            allow_vcek: stated(amd, "allow_vcek", w.allow_vcek, defaults.allow_vcek)?,
            allow_vlek: stated(amd, "allow_vlek", w.allow_vlek, defaults.allow_vlek)?,
            vlek_csp_ids: stated(amd, "vlek_csp_ids", w.vlek_csp_ids, defaults.vlek_csp_ids)?,
            allow_masked_chip_id: stated(
                amd,
                "allow_masked_chip_id",
                w.allow_masked_chip_id,
                defaults.allow_masked_chip_id,
            )?,
            revocation: stated(amd, "revocation", w.revocation, defaults.revocation)?,
            host_data: w.host_data,
            family_id: w.family_id,
            image_id: w.image_id,
            id_key_digests: w.id_key_digests,
            require_author_key: w.require_author_key,
            author_key_digests: w.author_key_digests,
            chip_ids: w.chip_ids,
        };
        for (listed, crl) in &policy.revocation.crls {
            if crl.product() != *listed || crl.trust() != policy.trust {
                return Err(PolicyError::CrlMismatch {
                    listed: *listed,
                    signed_by: crl.product(),
                    trust: crl.trust(),
                });
            }
        }
        Ok(policy)
    }
}

/// The current per-product floors of the strict template, and where each number comes from
/// (docs/SECURITY.md, "Minimum TCB", has the same table with the sources in full).
///
/// - Milan: SNP SPL 24 (0x18) and microcode SPL 219 (0xDB). AMD-SB-3019 (CVE-2024-56161)
///   requires SNP 0x18 on Milan; 0xDB is the first Milan B1 microcode after the last one the
///   Linux kernel treats as EntrySign-vulnerable (AMD-SB-7033; `need_sha_check` cutoff
///   0x0A0011DA). Firmware 1.55 carries those fixes.
/// - Genoa: SNP SPL 23 (0x17), AMD-SB-3019; microcode SPL 84 (0x54), the first Genoa B1
///   microcode after the kernel's cutoff 0x0A101153. Firmware 1.55.
/// - Turin: not in the template. No bulletin value could be checked here (Turin's microcode
///   SPL does not follow the patch level), and a strict default does not admit hardware whose
///   floor nobody stated; a network with Turin validators adds its own entry.
///
/// Bootloader and TEE have no bulletin floor: 0.
pub fn current_minimum_tcbs() -> BTreeMap<Product, ProductRules> {
    let rules = |snp: u8, microcode: u8| {
        let tcb = Tcb {
            bootloader: 0,
            tee: 0,
            snp,
            microcode,
            fmc: None,
        };
        ProductRules {
            minimum_tcb: tcb,
            minimum_launch_tcb: tcb,
            minimum_firmware: FirmwareVersion {
                major: 1,
                minor: 55,
                build: 0,
            },
        }
    };
    BTreeMap::from([
        (Product::Milan, rules(24, 219)),
        (Product::Genoa, rules(23, 84)),
    ])
}

/// How old an AMD CRL may be in the strict template: AMD reissues them about yearly (the
/// Milan and Genoa lists in the test data run 371 and 376 days from thisUpdate to nextUpdate).
pub const DEFAULT_MAX_CRL_AGE_SECS: u64 = 400 * 24 * 3600;

impl Policy {
    /// The current strict template for `measurements` under `trust`: debug, migration agent,
    /// CXL and SEV-TIO refused; memory alias check (BadRAM) required; VMPL 0; committed =
    /// current TCB and firmware; report version 3 or later; VCEK only; masked chip ids
    /// refused; the per-product floors of [`current_minimum_tcbs`]; CRLs checked when given.
    /// The same under simulated trust: the simulated PSP reports at the template's floors.
    pub fn strict(trust: Trust, measurements: Measurements) -> Self {
        Policy {
            trust,
            measurements,
            minimum_report_version: 3,
            guest_policy: GuestPolicyRules {
                allow_debug: false,
                allow_migration_agent: false,
                allow_smt: true,
                require_single_socket: false,
                allow_cxl: false,
                require_aes_256_xts: false,
                require_rapl_disabled: false,
                require_ciphertext_hiding: false,
                require_page_swap_disabled: false,
                minimum_abi: AbiVersion::default(),
            },
            platform: PlatformRules {
                allow_smt: true,
                allow_tsme: true,
                require_ecc: false,
                require_rapl_disabled: false,
                require_ciphertext_hiding: false,
                require_alias_check: true,
                allow_tio: false,
            },
            products: current_minimum_tcbs(),
            allow_provisional_tcb: false,
            minimum_mitigations: Mitigations::default(),
            minimum_guest_svn: 0,
            vmpl: 0,
            allow_vcek: true,
            allow_vlek: false,
            vlek_csp_ids: Vec::new(),
            allow_masked_chip_id: false,
            revocation: Revocation {
                crls: BTreeMap::new(),
                require_crl: false,
                max_crl_age_secs: DEFAULT_MAX_CRL_AGE_SECS,
            },
            host_data: None,
            family_id: None,
            image_id: None,
            id_key_digests: Vec::new(),
            require_author_key: false,
            author_key_digests: Vec::new(),
            chip_ids: Vec::new(),
        }
    }

    /// The policy a new production network's genesis starts from: [`Policy::strict`] under
    /// AMD trust, admitting exactly `measurements`.
    pub fn strict_template(measurements: Vec<Measurement>) -> Self {
        Policy::strict(Trust::Amd, Measurements::OneOf(measurements))
    }

    /// Parses a policy document, with a typed error naming what is wrong.
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let wire: PolicyWire =
            serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        Policy::try_from(wire)
    }

    /// Every TCB floor at zero and every product admitted: for inspecting old evidence, never
    /// for a network.
    pub fn with_any_tcb(mut self) -> Self {
        let zero = ProductRules {
            minimum_tcb: Tcb::default(),
            minimum_launch_tcb: Tcb::default(),
            minimum_firmware: FirmwareVersion::default(),
        };
        self.products = Product::ALL
            .into_iter()
            .map(|p| (p, zero.clone()))
            .collect();
        self.minimum_report_version = 2;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd_json() -> serde_json::Value {
        serde_json::to_value(Policy::strict_template(vec![HexBytes([1; 48])]))
            .expect("a policy serializes")
    }

    #[test]
    fn the_strict_template_round_trips_through_json() {
        let policy = Policy::strict_template(vec![HexBytes([1; 48])]);
        let text = serde_json::to_string(&policy).expect("serializes");
        assert_eq!(Policy::from_json(&text), Ok(policy.clone()));
        assert_eq!(serde_json::from_str::<Policy>(&text).ok(), Some(policy));
    }

    #[test]
    fn an_unknown_field_anywhere_is_an_error_not_a_weaker_default() {
        let mut top = amd_json();
        top["forbid_smtt"] = serde_json::json!(true);
        let mut nested = amd_json();
        nested["platform"]["require_alias_chek"] = serde_json::json!(true);
        let mut tcb = amd_json();
        tcb["products"]["Milan"]["minimum_tcb"]["snpp"] = serde_json::json!(30);
        for (doc, field) in [
            (top, "forbid_smtt"),
            (nested, "require_alias_chek"),
            (tcb, "snpp"),
        ] {
            match Policy::from_json(&doc.to_string()) {
                Err(PolicyError::Json(e)) => assert!(e.contains(field), "{e}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn under_amd_trust_each_security_field_must_be_stated_and_is_named() {
        for field in [
            "minimum_report_version",
            "guest_policy",
            "platform",
            "products",
            "allow_provisional_tcb",
            "minimum_mitigations",
            "vmpl",
            "allow_vcek",
            "allow_vlek",
            "vlek_csp_ids",
            "allow_masked_chip_id",
            "revocation",
        ] {
            let mut doc = amd_json();
            doc.as_object_mut().map(|o| o.remove(field));
            assert_eq!(
                Policy::from_json(&doc.to_string()),
                Err(PolicyError::MissingUnderAmd(field)),
                "{field}"
            );
            // A simulated network may leave it out and gets the strict default.
            doc["trust"] = serde_json::json!("simulated");
            let parsed = Policy::from_json(&doc.to_string()).expect(field);
            let strict = Policy::strict(
                Trust::Simulated,
                Measurements::OneOf(vec![HexBytes([1; 48])]),
            );
            assert_eq!(parsed, strict, "{field}");
        }
    }

    #[test]
    fn a_crl_listed_under_another_product_is_refused() {
        let der = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/amd-crl/genoa.crl.der"
        ))
        .unwrap_or_default();
        let mut doc = amd_json();
        doc["revocation"]["crls"]["Milan"] = serde_json::json!(hex::encode(&der));
        assert_eq!(
            Policy::from_json(&doc.to_string()),
            Err(PolicyError::CrlMismatch {
                listed: Product::Milan,
                signed_by: Product::Genoa,
                trust: Trust::Amd
            })
        );
    }
}
