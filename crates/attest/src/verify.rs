//! The verifier: a pure function from evidence, policy and expected binding to either a
//! [`VerifiedReport`] or the first check that failed. Each check is a named step, in the order
//! below; each rejection says which check and which values.

use crate::certs::{EndorsementCert, KeyKind};
use crate::policy::{HexBytes, Measurements, Policy, Trust};
use crate::report::{
    platform_bits, policy_bits, AttestationReport, Product, SigningKey, Tcb, REPORT_SIZE,
};
use p384::ecdsa::signature::Verifier;
use serde::Serialize;
use thiserror::Error;

/// Evidence as a peer or the host presents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The attestation report's bytes.
    pub report: Vec<u8>,
    /// The VCEK or VLEK certificate (DER or PEM).
    pub endorsement_cert: Vec<u8>,
}

/// What `report_data` must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Exactly these 64 bytes (the caller computes them, e.g. from a TLS key and chain id).
    ReportData([u8; 64]),
    /// Not checked: for inspecting evidence only, never for admitting a peer.
    Unchecked,
}

/// The report versions this verifier knows.
pub const KNOWN_VERSIONS: [u32; 3] = [2, 3, 5];

/// Why evidence was rejected: one variant per check.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RejectReason {
    /// `report_size`: the report is not 1184 bytes.
    #[error("report_size: expected {REPORT_SIZE} bytes, got {0}")]
    ReportSize(usize),
    /// `report_version`: not version 2, 3 or 5.
    #[error("report_version: version {0} is not one of 2, 3, 5")]
    ReportVersion(u32),
    /// `signature_algorithm`: not ECDSA P-384 with SHA-384 (1).
    #[error("signature_algorithm: {0} is not 1 (ECDSA P-384 SHA-384)")]
    SignatureAlgorithm(u32),
    /// `reserved_zero`: a reserved field is not zero.
    #[error("reserved_zero: byte {offset:#x} is {value:#04x}, must be zero")]
    ReservedNonZero {
        /// Offset in the report.
        offset: usize,
        /// The byte found.
        value: u8,
    },
    /// `signing_key`: the report names no endorsement key this verifier knows.
    #[error("signing_key: unknown signing key {0}")]
    UnknownSigningKey(u8),
    /// `signing_key`: VCEK-signed reports are not accepted.
    #[error("signing_key: VCEK-signed reports are not allowed by the policy")]
    VcekNotAllowed,
    /// `signing_key`: VLEK-signed reports are not accepted.
    #[error("signing_key: VLEK-signed reports are not allowed by the policy")]
    VlekNotAllowed,
    /// `certificate`: the endorsement certificate cannot be parsed or has no P-384 key.
    #[error("certificate: {0}")]
    Certificate(String),
    /// `certificate_chain`: the endorsement certificate does not verify under a pinned root.
    #[error(
        "certificate_chain: the {kind:?} certificate does not chain to a pinned {trust:?} root"
    )]
    CertificateChain {
        /// VCEK or VLEK.
        kind: KeyKind,
        /// The roots tried.
        trust: Trust,
    },
    /// `product`: the report's CPUID names another product line than the certificate chain.
    #[error("product: report CPUID says {report:?}, certificate chain says {chain:?}")]
    ProductMismatch {
        /// From the chain.
        chain: Product,
        /// From the report's CPUID.
        report: Product,
    },
    /// `report_signature`: the endorsement key did not sign this report.
    #[error("report_signature: the report's signature does not verify with the {0:?} key")]
    ReportSignature(KeyKind),
    /// `certificate_tcb`: the certificate was issued for another TCB than the report's.
    #[error("certificate_tcb: {component} is {cert:?} in the certificate, {report} in the report")]
    CertificateTcb {
        /// Which component.
        component: &'static str,
        /// In the certificate (`None`: missing).
        cert: Option<u64>,
        /// In the report's REPORTED_TCB.
        report: u8,
    },
    /// `hardware_id`: the VCEK was issued to another chip.
    #[error("hardware_id: certificate {cert}, report chip_id {report}")]
    HardwareId {
        /// In the certificate.
        cert: String,
        /// In the report.
        report: String,
    },
    /// `debug`: the guest policy allows debugging.
    #[error("debug: guest policy {0:#x} allows debugging")]
    Debug(u64),
    /// `migration_agent`: the guest policy allows a migration agent.
    #[error("migration_agent: guest policy {0:#x} allows a migration agent")]
    MigrationAgent(u64),
    /// `smt`: the host runs with SMT enabled.
    #[error("smt: platform info {0:#x} says SMT is enabled")]
    Smt(u64),
    /// `single_socket`: the guest policy does not require a single socket.
    #[error("single_socket: guest policy {0:#x} does not require a single socket")]
    SingleSocket(u64),
    /// `vmpl`: the report comes from another VMPL.
    #[error("vmpl: expected {expected}, report says {reported}")]
    Vmpl {
        /// Required.
        expected: u32,
        /// Reported.
        reported: u32,
    },
    /// `minimum_tcb`: a TCB component is below the minimum.
    #[error("minimum_tcb: {component} is {reported}, minimum {minimum}")]
    TcbBelowMinimum {
        /// Which component.
        component: &'static str,
        /// Required.
        minimum: u8,
        /// Reported.
        reported: u8,
    },
    /// `provisional_tcb`: the current TCB is not the committed one.
    #[error("provisional_tcb: current {current:?} differs from committed {committed:?}")]
    ProvisionalTcb {
        /// CURRENT_TCB.
        current: Tcb,
        /// COMMITTED_TCB.
        committed: Tcb,
    },
    /// `measurement`: the launch measurement is not allowed.
    #[error("measurement: {0} is not an allowed measurement")]
    Measurement(String),
    /// `host_data`: HOST_DATA differs.
    #[error("host_data: expected {expected}, report says {reported}")]
    HostData {
        /// Required.
        expected: String,
        /// Reported.
        reported: String,
    },
    /// `id_key`: the ID key digest is not allowed.
    #[error("id_key: digest {0} is not allowed")]
    IdKey(String),
    /// `author_key`: the author key digest is not allowed.
    #[error("author_key: digest {0} is not allowed")]
    AuthorKey(String),
    /// `chip_id`: the chip is not on the allowlist.
    #[error("chip_id: {0} is not allowed")]
    ChipId(String),
    /// `host_chain`: a certificate the host offered as ARK/ASK/ASVK is not AMD's pinned one.
    #[error("host_chain: {0}")]
    HostChain(String),
    /// `report_data`: REPORT_DATA is not the expected binding.
    #[error("report_data: expected {expected}, report says {reported}")]
    ReportData {
        /// Required.
        expected: String,
        /// Reported.
        reported: String,
    },
}

impl RejectReason {
    /// The name of the check that failed (the text before the colon).
    pub fn check(&self) -> &'static str {
        use RejectReason::*;
        match self {
            ReportSize(_) => "report_size",
            ReportVersion(_) => "report_version",
            SignatureAlgorithm(_) => "signature_algorithm",
            ReservedNonZero { .. } => "reserved_zero",
            UnknownSigningKey(_) | VcekNotAllowed | VlekNotAllowed => "signing_key",
            Certificate(_) => "certificate",
            CertificateChain { .. } => "certificate_chain",
            ProductMismatch { .. } => "product",
            ReportSignature(_) => "report_signature",
            CertificateTcb { .. } => "certificate_tcb",
            HardwareId { .. } => "hardware_id",
            Debug(_) => "debug",
            MigrationAgent(_) => "migration_agent",
            Smt(_) => "smt",
            SingleSocket(_) => "single_socket",
            Vmpl { .. } => "vmpl",
            TcbBelowMinimum { .. } => "minimum_tcb",
            ProvisionalTcb { .. } => "provisional_tcb",
            Measurement(_) => "measurement",
            HostData { .. } => "host_data",
            IdKey(_) => "id_key",
            AuthorKey(_) => "author_key",
            ChipId(_) => "chip_id",
            HostChain(_) => "host_chain",
            ReportData { .. } => "report_data",
        }
    }
}

/// Evidence that passed every check. Only [`verify`] makes one (non-exhaustive: no other
/// crate can construct it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VerifiedReport {
    /// The product line the chain proves.
    pub product: Product,
    /// Report version.
    pub report_version: u32,
    /// Which key signed.
    pub signing_key: KeyKind,
    /// Launch measurement.
    pub measurement: HexBytes<48>,
    /// Guest policy.
    pub policy: u64,
    /// REPORTED_TCB.
    pub reported_tcb: Tcb,
    /// CURRENT_TCB.
    pub current_tcb: Tcb,
    /// COMMITTED_TCB.
    pub committed_tcb: Tcb,
    /// VMPL.
    pub vmpl: u32,
    /// CHIP_ID (zero when masked or VLEK-signed).
    pub chip_id: HexBytes<64>,
    /// REPORT_DATA.
    pub report_data: HexBytes<64>,
    /// HOST_DATA.
    pub host_data: HexBytes<32>,
}

fn signature_of(report: &AttestationReport) -> Option<p384::ecdsa::Signature> {
    // R and S are little-endian in the report; p384 wants big-endian scalars.
    let mut r = [0u8; 48];
    let mut s = [0u8; 48];
    r.copy_from_slice(&report.signature_r()[..48]);
    s.copy_from_slice(&report.signature_s()[..48]);
    r.reverse();
    s.reverse();
    p384::ecdsa::Signature::from_slice(&[r, s].concat()).ok()
}

/// Remembers which endorsement certificates chain to which root, keyed by the SHA-256 of the
/// certificate's DER (the RSA-PSS chain checks dominate a cold verification), and which exact
/// (report, certificate) pairs had a valid report signature, keyed by the SHA-256 of both (the
/// P-384 check dominates a warm one). A peer that reconnects with the same certificate then
/// costs no public-key operation; every policy and binding check still runs. Only successes are
/// kept; a bounded number of them.
#[derive(Debug, Default)]
pub struct ChainCache {
    entries: std::sync::Mutex<std::collections::HashMap<ChainKey, Product>>,
    signatures: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

/// SHA-256 of the certificate's DER, the key kind and the roots it was checked against.
type ChainKey = ([u8; 32], KeyKind, Trust);

/// Most certificates a [`ChainCache`] keeps (one per validator machine is the expected use).
pub const CHAIN_CACHE_CAPACITY: usize = 4096;

impl ChainCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn chain(&self, cert: &EndorsementCert, kind: KeyKind, trust: Trust) -> Option<Product> {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(cert.der()).into();
        if let Ok(entries) = self.entries.lock() {
            if let Some(p) = entries.get(&(key, kind, trust)) {
                return Some(*p);
            }
        }
        let product = chain_uncached(cert, kind, trust)?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CHAIN_CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert((key, kind, trust), product);
        }
        Some(product)
    }

    /// Whether this exact report was verified under this exact certificate before; if not,
    /// runs `verify` and remembers a success.
    fn signature(&self, report: &[u8], cert_der: &[u8], verify: impl FnOnce() -> bool) -> bool {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update((report.len() as u64).to_be_bytes());
        h.update(report);
        h.update(cert_der);
        let key: [u8; 32] = h.finalize().into();
        if let Ok(known) = self.signatures.lock() {
            if known.contains(&key) {
                return true;
            }
        }
        if !verify() {
            return false;
        }
        if let Ok(mut known) = self.signatures.lock() {
            if known.len() >= CHAIN_CACHE_CAPACITY {
                known.clear();
            }
            known.insert(key);
        }
        true
    }
}

fn chain_uncached(cert: &EndorsementCert, kind: KeyKind, trust: Trust) -> Option<Product> {
    match trust {
        Trust::Amd => cert.chain_to_pinned_root(kind),
        Trust::Simulated => crate::simulated::chain_to_simulated_root(cert, kind),
    }
}

/// Verifies `evidence` against `policy` and `binding`, checking the certificate chain from
/// scratch.
pub fn verify(
    evidence: &Evidence,
    policy: &Policy,
    binding: &Binding,
) -> Result<VerifiedReport, RejectReason> {
    verify_with_cache(evidence, policy, binding, &ChainCache::new())
}

/// [`verify`] with chain and report-signature results remembered in `cache`; every other check
/// runs every time.
pub fn verify_with_cache(
    evidence: &Evidence,
    policy: &Policy,
    binding: &Binding,
    cache: &ChainCache,
) -> Result<VerifiedReport, RejectReason> {
    // -- The report's form.
    let report = AttestationReport::from_bytes(&evidence.report)
        .map_err(|_| RejectReason::ReportSize(evidence.report.len()))?;
    if !KNOWN_VERSIONS.contains(&report.version()) {
        return Err(RejectReason::ReportVersion(report.version()));
    }
    if report.signature_algo() != 1 {
        return Err(RejectReason::SignatureAlgorithm(report.signature_algo()));
    }
    if let Some((offset, value)) = report.first_nonzero_reserved() {
        return Err(RejectReason::ReservedNonZero { offset, value });
    }
    if report.key_flags() >> 5 != 0 {
        return Err(RejectReason::ReservedNonZero {
            offset: 0x48,
            value: report.as_bytes()[0x48],
        });
    }

    // -- Who signed it, and does that key chain to a pinned root.
    let kind = match report.signing_key() {
        SigningKey::Vcek => KeyKind::Vcek,
        SigningKey::Vlek => KeyKind::Vlek,
        SigningKey::Other(k) => return Err(RejectReason::UnknownSigningKey(k)),
    };
    match kind {
        KeyKind::Vcek if !policy.allow_vcek => return Err(RejectReason::VcekNotAllowed),
        KeyKind::Vlek if !policy.allow_vlek => return Err(RejectReason::VlekNotAllowed),
        _ => {}
    }
    let cert = EndorsementCert::parse(&evidence.endorsement_cert)
        .map_err(|e| RejectReason::Certificate(e.to_string()))?;
    let product = cache
        .chain(&cert, kind, policy.trust)
        .ok_or(RejectReason::CertificateChain {
            kind,
            trust: policy.trust,
        })?;
    let (family, model, _) = report.cpuid();
    if report.version() >= 3 {
        if let Some(named) = Product::from_cpuid(family, model) {
            if named != product {
                return Err(RejectReason::ProductMismatch {
                    chain: product,
                    report: named,
                });
            }
        }
    }
    let key = cert
        .verifying_key()
        .map_err(|e| RejectReason::Certificate(e.to_string()))?;
    let signature = signature_of(&report).ok_or(RejectReason::ReportSignature(kind))?;
    if !cache.signature(report.as_bytes(), cert.der(), || {
        key.verify(report.signed_bytes(), &signature).is_ok()
    }) {
        return Err(RejectReason::ReportSignature(kind));
    }

    // -- The certificate was issued for this TCB and (VCEK) this chip.
    let reported_tcb = Tcb::decode(report.reported_tcb_raw(), product);
    let mut components = vec![
        ("bootloader", reported_tcb.bootloader),
        ("tee", reported_tcb.tee),
        ("snp", reported_tcb.snp),
        ("microcode", reported_tcb.microcode),
    ];
    if let Some(fmc) = reported_tcb.fmc {
        components.push(("fmc", fmc));
    }
    for (component, value) in components {
        let in_cert = cert.spl(component);
        if in_cert != Some(u64::from(value)) {
            return Err(RejectReason::CertificateTcb {
                component,
                cert: in_cert,
                report: value,
            });
        }
    }
    if kind == KeyKind::Vcek && !report.mask_chip_id() {
        let chip_id = report.chip_id();
        let matches = match cert.hardware_id() {
            Some(hwid) if !hwid.is_empty() && hwid.len() <= 64 => chip_id[..hwid.len()] == hwid[..],
            _ => false,
        };
        if !matches {
            return Err(RejectReason::HardwareId {
                cert: cert
                    .hardware_id()
                    .map(hex::encode)
                    .unwrap_or_else(|| "none".into()),
                report: hex::encode(chip_id),
            });
        }
    }

    // -- The guest and platform policy.
    let guest_policy = report.policy();
    if guest_policy & policy_bits::DEBUG != 0 && !policy.allow_debug {
        return Err(RejectReason::Debug(guest_policy));
    }
    if guest_policy & policy_bits::MIGRATE_MA != 0 && !policy.allow_migration_agent {
        return Err(RejectReason::MigrationAgent(guest_policy));
    }
    if policy.forbid_smt && report.platform_info() & platform_bits::SMT_EN != 0 {
        return Err(RejectReason::Smt(report.platform_info()));
    }
    if policy.require_single_socket && guest_policy & policy_bits::SINGLE_SOCKET == 0 {
        return Err(RejectReason::SingleSocket(guest_policy));
    }
    if report.vmpl() != policy.vmpl {
        return Err(RejectReason::Vmpl {
            expected: policy.vmpl,
            reported: report.vmpl(),
        });
    }
    if let Some((component, minimum, reported)) = reported_tcb.first_below(&policy.minimum_tcb) {
        return Err(RejectReason::TcbBelowMinimum {
            component,
            minimum,
            reported,
        });
    }
    let current_tcb = Tcb::decode(report.current_tcb_raw(), product);
    let committed_tcb = Tcb::decode(report.committed_tcb_raw(), product);
    if current_tcb != committed_tcb && !policy.allow_provisional_tcb {
        return Err(RejectReason::ProvisionalTcb {
            current: current_tcb,
            committed: committed_tcb,
        });
    }

    // -- What runs, and where.
    let measurement = HexBytes(report.measurement());
    if let Measurements::OneOf(allowed) = &policy.measurements {
        if !allowed.contains(&measurement) {
            return Err(RejectReason::Measurement(measurement.to_string()));
        }
    }
    if let Some(expected) = &policy.host_data {
        if expected.0 != report.host_data() {
            return Err(RejectReason::HostData {
                expected: expected.to_string(),
                reported: hex::encode(report.host_data()),
            });
        }
    }
    let id_key = HexBytes(report.id_key_digest());
    if !policy.id_key_digests.is_empty() && !policy.id_key_digests.contains(&id_key) {
        return Err(RejectReason::IdKey(id_key.to_string()));
    }
    let author_key = HexBytes(report.author_key_digest());
    if !policy.author_key_digests.is_empty() && !policy.author_key_digests.contains(&author_key) {
        return Err(RejectReason::AuthorKey(author_key.to_string()));
    }
    let chip_id = HexBytes(report.chip_id());
    if !policy.chip_ids.is_empty() && !policy.chip_ids.contains(&chip_id) {
        return Err(RejectReason::ChipId(chip_id.to_string()));
    }

    // -- Bound to what the caller expects (TLS key, validator key, chain id).
    if let Binding::ReportData(expected) = binding {
        if *expected != report.report_data() {
            return Err(RejectReason::ReportData {
                expected: hex::encode(expected),
                reported: hex::encode(report.report_data()),
            });
        }
    }

    Ok(VerifiedReport {
        product,
        report_version: report.version(),
        signing_key: kind,
        measurement,
        policy: guest_policy,
        reported_tcb,
        current_tcb,
        committed_tcb,
        vmpl: report.vmpl(),
        chip_id,
        report_data: HexBytes(report.report_data()),
        host_data: HexBytes(report.host_data()),
    })
}

/// Checks certificates the host offered as the chain (ARK, ASK, ASVK; DER or PEM stack): each
/// must be byte-identical to a pinned certificate. They are never used for verification either
/// way; this only makes a forged chain visible by name.
pub fn check_host_chain(bytes: &[u8]) -> Result<usize, RejectReason> {
    use x509_cert::der::{Decode, Encode};
    let certs = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        x509_cert::Certificate::load_pem_chain(bytes.trim_ascii_start())
            .map_err(|e| RejectReason::HostChain(format!("unreadable PEM: {e}")))?
    } else {
        vec![x509_cert::Certificate::from_der(bytes)
            .map_err(|e| RejectReason::HostChain(format!("unreadable DER: {e}")))?]
    };
    let pinned: Vec<Vec<u8>> = crate::certs::amd_roots()
        .iter()
        .flat_map(|r| [Some(&r.ark), Some(&r.ask), r.asvk.as_ref()])
        .flatten()
        .filter_map(|c| c.to_der().ok())
        .collect();
    for cert in &certs {
        let der = cert
            .to_der()
            .map_err(|e| RejectReason::HostChain(format!("unencodable certificate: {e}")))?;
        if !pinned.contains(&der) {
            return Err(RejectReason::HostChain(format!(
                "{} is not AMD's pinned certificate",
                cert.tbs_certificate.subject
            )));
        }
    }
    Ok(certs.len())
}

/// What a report says about itself, without trusting any of it: for showing operators why
/// evidence was rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Inspection {
    /// Product line: proven by the chain if it verifies, else named by CPUID, else unknown.
    pub product: Option<Product>,
    /// VERSION.
    pub report_version: u32,
    /// MEASUREMENT.
    pub measurement: HexBytes<48>,
    /// POLICY.
    pub policy: u64,
    /// REPORTED_TCB, decoded for `product` (Milan layout when unknown).
    pub reported_tcb: Tcb,
    /// VMPL.
    pub vmpl: u32,
    /// SIGNING_KEY.
    pub signing_key: SigningKey,
}

/// Reads a report's fields for display.
pub fn inspect(evidence: &Evidence) -> Option<Inspection> {
    let report = AttestationReport::from_bytes(&evidence.report).ok()?;
    let kind = match report.signing_key() {
        SigningKey::Vlek => KeyKind::Vlek,
        _ => KeyKind::Vcek,
    };
    let from_chain = EndorsementCert::parse(&evidence.endorsement_cert)
        .ok()
        .and_then(|c| c.chain_to_pinned_root(kind));
    let (family, model, _) = report.cpuid();
    let product = from_chain.or_else(|| Product::from_cpuid(family, model));
    Some(Inspection {
        product,
        report_version: report.version(),
        measurement: HexBytes(report.measurement()),
        policy: report.policy(),
        reported_tcb: Tcb::decode(report.reported_tcb_raw(), product.unwrap_or(Product::Milan)),
        vmpl: report.vmpl(),
        signing_key: report.signing_key(),
    })
}
