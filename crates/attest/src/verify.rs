//! The verifier: a pure function from evidence, policy, expected binding and the time to either
//! a [`VerifiedReport`] or the first check that failed. Each check is a named step, in the
//! order below (docs/SECURITY.md lists them with their policy fields); each rejection says
//! which check and which values.

use crate::certs::{Chain, EndorsementCert, KeyKind};
use crate::policy::{AbiVersion, HexBytes, Measurements, Policy, Trust};
use crate::report::{
    platform_bits, policy_bits, AttestationReport, FirmwareVersion, Product, SigningKey, Tcb,
    REPORT_SIZE,
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

/// Why evidence was rejected: one variant per check (a check with several distinct causes has
/// one variant per cause, all with the same [`RejectReason::check`] name).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RejectReason {
    /// `trust`: the policy trusts the simulated root, which this (production) build does not
    /// contain: such a policy admits nothing here.
    #[error("trust: the policy trusts the simulated PSP, and this production build has no simulated root: it admits no evidence under such a policy")]
    SimulatedTrustNotBuiltIn,
    /// `report_size`: the report is not 1184 bytes.
    #[error("report_size: expected {REPORT_SIZE} bytes, got {0}")]
    ReportSize(usize),
    /// `report_version`: not version 2, 3 or 5.
    #[error("report_version: version {0} is not one of 2, 3, 5")]
    ReportVersion(u32),
    /// `minimum_report_version`: older than the policy's minimum version.
    #[error("minimum_report_version: version {reported}, minimum {minimum}")]
    ReportVersionBelowMinimum {
        /// Required.
        minimum: u32,
        /// Reported.
        reported: u32,
    },
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
    /// `guest_policy_reserved`: guest-policy bit 17 is not one, or a bit from 26 up is set.
    #[error("guest_policy_reserved: guest policy {0:#x} has bit 17 clear or a reserved bit set")]
    GuestPolicyReserved(u64),
    /// `platform_info_reserved`: PLATFORM_INFO bit 6 or a bit from 8 up is set.
    #[error("platform_info_reserved: platform info {0:#x} sets a reserved bit")]
    PlatformInfoReserved(u64),
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
    /// `certificate_version`: not an X.509 version 3 certificate.
    #[error("certificate_version: the endorsement certificate is {0:?}, not V3")]
    CertificateVersion(String),
    /// `signature_parameters`: not signed with RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48.
    #[error("signature_parameters: {0}")]
    SignatureParameters(String),
    /// `certificate_subject`: the subject is not AMD's name for this kind of key.
    #[error("certificate_subject: expected common name {expected} under the issuer's organisation, found {found}")]
    CertificateSubject {
        /// The expected common name.
        expected: &'static str,
        /// The subject found.
        found: String,
    },
    /// `certificate_issuer`: no pinned intermediate has the certificate's issuer name.
    #[error("certificate_issuer: no pinned {trust:?} {kind:?} signer is named {issuer}")]
    CertificateIssuer {
        /// VCEK or VLEK.
        kind: KeyKind,
        /// The roots tried.
        trust: Trust,
        /// The issuer the certificate names.
        issuer: String,
    },
    /// `certificate_chain`: the named pinned intermediate did not sign the certificate.
    #[error(
        "certificate_chain: the {kind:?} certificate does not chain to a pinned {trust:?} root"
    )]
    CertificateChain {
        /// VCEK or VLEK.
        kind: KeyKind,
        /// The roots tried.
        trust: Trust,
    },
    /// `certificate_validity`: now is outside a certificate's validity window.
    #[error(
        "certificate_validity: the {certificate} is valid {not_before}..{not_after}, now is {now}"
    )]
    CertificateValidity {
        /// Which certificate (endorsement key, intermediate or root).
        certificate: &'static str,
        /// notBefore (Unix seconds).
        not_before: u64,
        /// notAfter (Unix seconds).
        not_after: u64,
        /// The time of the check.
        now: u64,
    },
    /// `crl_issuer`: the policy's CRL for this product line is another line's or trust's.
    #[error("crl_issuer: the CRL listed for {0:?} is not signed by that product line's ARK")]
    CrlIssuer(Product),
    /// `crl_missing`: the policy requires a CRL and has none for this product line.
    #[error("crl_missing: the policy requires a CRL and has none for {0:?}")]
    CrlMissing(Product),
    /// `crl_stale`: the CRL is older than the policy allows (or dated in the future).
    #[error("crl_stale: the {product:?} CRL was issued at {this_update}, now is {now}, at most {max_age} s allowed")]
    CrlStale {
        /// Whose CRL.
        product: Product,
        /// Its thisUpdate.
        this_update: u64,
        /// The time of the check.
        now: u64,
        /// The policy's bound.
        max_age: u64,
    },
    /// `revoked`: the CRL lists a certificate of the chain.
    #[error("revoked: the {certificate} with serial {serial} is revoked")]
    Revoked {
        /// Which certificate.
        certificate: &'static str,
        /// Its serial number, hex.
        serial: String,
    },
    /// `product`: a v3+ report's CPUID names no product line this verifier knows.
    #[error("product: report CPUID family {family:#x} model {model:#x} is no known product line")]
    UnknownCpuid {
        /// CPUID family.
        family: u8,
        /// CPUID model.
        model: u8,
    },
    /// `product`: the report's CPUID names another product line than the certificate chain.
    #[error("product: report CPUID says {report:?}, certificate chain says {chain:?}")]
    ProductMismatch {
        /// From the chain.
        chain: Product,
        /// From the report's CPUID.
        report: Product,
    },
    /// `product_admitted`: the policy has no entry (no floors) for this product line.
    #[error("product_admitted: the policy admits no {0:?} machines")]
    ProductNotAdmitted(Product),
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
    /// `hardware_id_form`: the VCEK's hardware id is missing or not this product's length.
    #[error("hardware_id_form: a {product:?} VCEK's hardware id has {expected} bytes; the certificate has {found}")]
    HardwareIdForm {
        /// The product line.
        product: Product,
        /// Its hardware id length.
        expected: usize,
        /// What the certificate carries (hex, or `none`).
        found: String,
    },
    /// `masked_chip_id`: CHIP_ID is all zero and the policy does not accept masked chip ids.
    #[error("masked_chip_id: the report's CHIP_ID is masked (all zero)")]
    MaskedChipId,
    /// `hardware_id`: the VCEK was issued to another chip.
    #[error("hardware_id: certificate {cert}, report chip_id {report}")]
    HardwareId {
        /// In the certificate.
        cert: String,
        /// In the report.
        report: String,
    },
    /// `vlek_csp`: the VLEK belongs to a cloud provider the policy does not name.
    #[error("vlek_csp: the VLEK's CSP_ID {0:?} is not on the policy's list")]
    VlekCsp(Option<String>),
    /// `debug`: the guest policy allows debugging.
    #[error("debug: guest policy {0:#x} allows debugging")]
    Debug(u64),
    /// `migration_agent`: the guest policy allows a migration agent.
    #[error("migration_agent: guest policy {0:#x} allows a migration agent")]
    MigrationAgent(u64),
    /// `guest_smt`: the guest policy allows SMT and the network does not.
    #[error("guest_smt: guest policy {0:#x} allows SMT")]
    GuestSmt(u64),
    /// `single_socket`: the guest policy does not require a single socket.
    #[error("single_socket: guest policy {0:#x} does not require a single socket")]
    SingleSocket(u64),
    /// `cxl`: the guest policy allows CXL.
    #[error("cxl: guest policy {0:#x} allows CXL")]
    Cxl(u64),
    /// `aes_256_xts`: the guest policy does not require AES-256-XTS.
    #[error("aes_256_xts: guest policy {0:#x} does not require AES-256-XTS")]
    Aes256Xts(u64),
    /// `guest_rapl_disabled`: the guest policy does not require RAPL to be disabled.
    #[error("guest_rapl_disabled: guest policy {0:#x} does not require RAPL disabled")]
    GuestRaplDisabled(u64),
    /// `guest_ciphertext_hiding`: the guest policy does not require ciphertext hiding.
    #[error("guest_ciphertext_hiding: guest policy {0:#x} does not require ciphertext hiding")]
    GuestCiphertextHiding(u64),
    /// `page_swap_disabled`: the guest policy does not forbid page swapping.
    #[error("page_swap_disabled: guest policy {0:#x} does not disable page swapping")]
    PageSwapDisabled(u64),
    /// `minimum_abi`: the guest policy names an older ABI than the minimum.
    #[error("minimum_abi: guest policy ABI {}.{}, minimum {}.{}", reported.major, reported.minor, minimum.major, minimum.minor)]
    AbiBelowMinimum {
        /// Required.
        minimum: AbiVersion,
        /// In the guest policy.
        reported: AbiVersion,
    },
    /// `smt`: the host runs with SMT enabled.
    #[error("smt: platform info {0:#x} says SMT is enabled")]
    Smt(u64),
    /// `tsme`: the host runs with TSME enabled.
    #[error("tsme: platform info {0:#x} says TSME is enabled")]
    Tsme(u64),
    /// `ecc`: the host does not use error-correcting memory.
    #[error("ecc: platform info {0:#x} says ECC is not enabled")]
    Ecc(u64),
    /// `rapl_disabled`: RAPL is not disabled on the host.
    #[error("rapl_disabled: platform info {0:#x} says RAPL is enabled")]
    RaplDisabled(u64),
    /// `ciphertext_hiding`: DRAM ciphertext hiding is not enabled on the host.
    #[error("ciphertext_hiding: platform info {0:#x} says ciphertext hiding is off")]
    CiphertextHiding(u64),
    /// `alias_check`: the memory alias check (BadRAM, AMD-SB-3015) has not completed.
    #[error("alias_check: platform info {0:#x} says the memory alias check did not complete")]
    AliasCheck(u64),
    /// `tio`: SEV-TIO is enabled on the host.
    #[error("tio: platform info {0:#x} says SEV-TIO is enabled")]
    Tio(u64),
    /// `vmpl`: the report comes from another VMPL.
    #[error("vmpl: expected {expected}, report says {reported}")]
    Vmpl {
        /// Required.
        expected: u32,
        /// Reported.
        reported: u32,
    },
    /// `minimum_tcb`: a REPORTED_TCB component is below the product's minimum.
    #[error("minimum_tcb: {component} is {reported}, minimum {minimum}")]
    TcbBelowMinimum {
        /// Which component.
        component: &'static str,
        /// Required.
        minimum: u8,
        /// Reported.
        reported: u8,
    },
    /// `minimum_launch_tcb`: a LAUNCH_TCB component is below the product's minimum.
    #[error("minimum_launch_tcb: {component} is {reported} at launch, minimum {minimum}")]
    LaunchTcbBelowMinimum {
        /// Which component.
        component: &'static str,
        /// Required.
        minimum: u8,
        /// At launch.
        reported: u8,
    },
    /// `provisional_tcb`: CURRENT_TCB differs from COMMITTED_TCB (provisional firmware).
    #[error("provisional_tcb: current TCB {current:?} differs from committed TCB {committed:?}")]
    ProvisionalTcb {
        /// CURRENT_TCB.
        current: Tcb,
        /// COMMITTED_TCB.
        committed: Tcb,
    },
    /// `committed_tcb_order`: a COMMITTED_TCB component is above CURRENT_TCB.
    #[error("committed_tcb_order: {component} is {committed} committed but {current} current")]
    CommittedAboveCurrent {
        /// Which component.
        component: &'static str,
        /// Committed.
        committed: u8,
        /// Current.
        current: u8,
    },
    /// `reported_tcb_order`: a REPORTED_TCB component is above CURRENT_TCB.
    #[error("reported_tcb_order: {component} is {reported} reported but {current} current")]
    ReportedAboveCurrent {
        /// Which component.
        component: &'static str,
        /// Reported.
        reported: u8,
        /// Current.
        current: u8,
    },
    /// `minimum_firmware`: the current firmware is older than the product's minimum.
    #[error("minimum_firmware: firmware {reported}, minimum {minimum}")]
    FirmwareBelowMinimum {
        /// Required.
        minimum: FirmwareVersion,
        /// Current.
        reported: FirmwareVersion,
    },
    /// `provisional_firmware`: the current firmware differs from the committed one.
    #[error("provisional_firmware: current firmware {current} differs from committed {committed}")]
    ProvisionalFirmware {
        /// Current.
        current: FirmwareVersion,
        /// Committed.
        committed: FirmwareVersion,
    },
    /// `committed_firmware_order`: the committed firmware is newer than the current one.
    #[error("committed_firmware_order: committed firmware {committed} is above current {current}")]
    CommittedFirmwareAboveCurrent {
        /// Current.
        current: FirmwareVersion,
        /// Committed.
        committed: FirmwareVersion,
    },
    /// `mitigation_vector`: a mitigation vector lacks a bit the policy requires.
    #[error(
        "mitigation_vector: {vector} mitigation vector {reported:#x} lacks bits of {required:#x}"
    )]
    MitigationVector {
        /// `launch` or `current`.
        vector: &'static str,
        /// Required bits.
        required: u64,
        /// Reported vector.
        reported: u64,
    },
    /// `minimum_guest_svn`: GUEST_SVN is below the minimum.
    #[error("minimum_guest_svn: guest SVN {reported}, minimum {minimum}")]
    GuestSvn {
        /// Required.
        minimum: u32,
        /// Reported.
        reported: u32,
    },
    /// `measurement`: the launch measurement is not allowed.
    #[error("measurement: {0} is not an allowed measurement")]
    Measurement(String),
    /// `host_data`: HOST_DATA differs from the policy's.
    #[error("host_data: expected {expected}, report says {reported}")]
    HostData {
        /// Required.
        expected: String,
        /// Reported.
        reported: String,
    },
    /// `family_id`: FAMILY_ID differs from the policy's.
    #[error("family_id: expected {expected}, report says {reported}")]
    FamilyId {
        /// Required.
        expected: String,
        /// Reported.
        reported: String,
    },
    /// `image_id`: IMAGE_ID differs from the policy's.
    #[error("image_id: expected {expected}, report says {reported}")]
    ImageId {
        /// Required.
        expected: String,
        /// Reported.
        reported: String,
    },
    /// `id_key`: the ID key digest is not allowed.
    #[error("id_key: {0} is not an allowed ID key")]
    IdKey(String),
    /// `author_key_enabled`: no author key signed the ID block and the policy requires one.
    #[error("author_key_enabled: the report's AUTHOR_KEY_EN is 0")]
    AuthorKeyMissing,
    /// `author_key`: the author key digest is not allowed.
    #[error("author_key: {0} is not an allowed author key")]
    AuthorKey(String),
    /// `chip_id`: the chip is not on the allowlist.
    #[error("chip_id: {0} is not an allowed chip")]
    ChipId(String),
    /// `host_chain`: a certificate the host offered as the chain is not the pinned one.
    #[error("host_chain: {0}")]
    HostChain(String),
    /// `report_data`: REPORT_DATA is not the expected binding.
    #[error("report_data: expected {expected}, report says {reported}")]
    ReportData {
        /// Expected.
        expected: String,
        /// Reported.
        reported: String,
    },
}

impl RejectReason {
    /// The short name of the check that failed (for logs, JSON output and tests).
    pub fn check(&self) -> &'static str {
        use RejectReason::*;
        match self {
            SimulatedTrustNotBuiltIn => "trust",
            ReportSize(_) => "report_size",
            ReportVersion(_) => "report_version",
            ReportVersionBelowMinimum { .. } => "minimum_report_version",
            SignatureAlgorithm(_) => "signature_algorithm",
            ReservedNonZero { .. } => "reserved_zero",
            GuestPolicyReserved(_) => "guest_policy_reserved",
            PlatformInfoReserved(_) => "platform_info_reserved",
            UnknownSigningKey(_) | VcekNotAllowed | VlekNotAllowed => "signing_key",
            Certificate(_) => "certificate",
            CertificateVersion(_) => "certificate_version",
            SignatureParameters(_) => "signature_parameters",
            CertificateSubject { .. } => "certificate_subject",
            CertificateIssuer { .. } => "certificate_issuer",
            CertificateChain { .. } => "certificate_chain",
            CertificateValidity { .. } => "certificate_validity",
            CrlIssuer(_) => "crl_issuer",
            CrlMissing(_) => "crl_missing",
            CrlStale { .. } => "crl_stale",
            Revoked { .. } => "revoked",
            UnknownCpuid { .. } | ProductMismatch { .. } => "product",
            ProductNotAdmitted(_) => "product_admitted",
            ReportSignature(_) => "report_signature",
            CertificateTcb { .. } => "certificate_tcb",
            HardwareIdForm { .. } => "hardware_id_form",
            MaskedChipId => "masked_chip_id",
            HardwareId { .. } => "hardware_id",
            VlekCsp(_) => "vlek_csp",
            Debug(_) => "debug",
            MigrationAgent(_) => "migration_agent",
            GuestSmt(_) => "guest_smt",
            SingleSocket(_) => "single_socket",
            Cxl(_) => "cxl",
            Aes256Xts(_) => "aes_256_xts",
            GuestRaplDisabled(_) => "guest_rapl_disabled",
            GuestCiphertextHiding(_) => "guest_ciphertext_hiding",
            PageSwapDisabled(_) => "page_swap_disabled",
            AbiBelowMinimum { .. } => "minimum_abi",
            Smt(_) => "smt",
            Tsme(_) => "tsme",
            Ecc(_) => "ecc",
            RaplDisabled(_) => "rapl_disabled",
            CiphertextHiding(_) => "ciphertext_hiding",
            AliasCheck(_) => "alias_check",
            Tio(_) => "tio",
            Vmpl { .. } => "vmpl",
            TcbBelowMinimum { .. } => "minimum_tcb",
            LaunchTcbBelowMinimum { .. } => "minimum_launch_tcb",
            ProvisionalTcb { .. } => "provisional_tcb",
            CommittedAboveCurrent { .. } => "committed_tcb_order",
            ReportedAboveCurrent { .. } => "reported_tcb_order",
            FirmwareBelowMinimum { .. } => "minimum_firmware",
            ProvisionalFirmware { .. } => "provisional_firmware",
            CommittedFirmwareAboveCurrent { .. } => "committed_firmware_order",
            MitigationVector { .. } => "mitigation_vector",
            GuestSvn { .. } => "minimum_guest_svn",
            Measurement(_) => "measurement",
            HostData { .. } => "host_data",
            FamilyId { .. } => "family_id",
            ImageId { .. } => "image_id",
            IdKey(_) => "id_key",
            AuthorKeyMissing => "author_key_enabled",
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
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// REPORTED_TCB.
    pub reported_tcb: Tcb,
    /// CURRENT_TCB.
    pub current_tcb: Tcb,
    /// COMMITTED_TCB.
    pub committed_tcb: Tcb,
    /// LAUNCH_TCB.
    pub launch_tcb: Tcb,
    /// The running firmware.
    pub current_firmware: FirmwareVersion,
    /// VMPL.
    pub vmpl: u32,
    /// CHIP_ID (zero when masked or VLEK-signed).
    pub chip_id: HexBytes<64>,
    /// REPORT_DATA.
    pub report_data: HexBytes<64>,
    /// HOST_DATA.
    pub host_data: HexBytes<32>,
    /// When the endorsement-key certificate expires (Unix seconds).
    pub endorsement_not_after: u64,
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
/// costs no public-key operation; every policy, validity, revocation and binding check still
/// runs. Only successes are kept; a bounded number of them.
#[derive(Debug, Default)]
pub struct ChainCache {
    entries: std::sync::Mutex<std::collections::HashMap<ChainKey, Chain>>,
    signatures: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
    public_key_operations: std::sync::atomic::AtomicU64,
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

    /// How many uncached public-key checks (a chain to a root, a report signature) ran through
    /// this cache: what unauthenticated peers can make a verifier spend (metrics and tests).
    pub fn public_key_operations(&self) -> u64 {
        self.public_key_operations
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_public_key_operation(&self) {
        self.public_key_operations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn chain(&self, cert: &EndorsementCert, kind: KeyKind, trust: Trust) -> Result<Chain, bool> {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(cert.der()).into();
        if let Ok(entries) = self.entries.lock() {
            if let Some(chain) = entries.get(&(key, kind, trust)) {
                return Ok(chain.clone());
            }
        }
        self.count_public_key_operation();
        let chain = chain_uncached(cert, kind, trust)?;
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CHAIN_CACHE_CAPACITY {
                entries.clear();
            }
            entries.insert((key, kind, trust), chain.clone());
        }
        Ok(chain)
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
        self.count_public_key_operation();
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

fn chain_uncached(cert: &EndorsementCert, kind: KeyKind, trust: Trust) -> Result<Chain, bool> {
    match trust {
        Trust::Amd => cert.chain_to_pinned_root(kind),
        #[cfg(feature = "simulated")]
        Trust::Simulated => crate::simulated::chain_to_simulated_root(cert, kind),
        #[cfg(not(feature = "simulated"))]
        Trust::Simulated => Err(false),
    }
}

/// Verifies `evidence` against `policy` and `binding` at `now` (Unix seconds), checking the
/// certificate chain from scratch.
pub fn verify(
    evidence: &Evidence,
    policy: &Policy,
    binding: &Binding,
    now: u64,
) -> Result<VerifiedReport, RejectReason> {
    verify_with_cache(evidence, policy, binding, now, &ChainCache::new())
}

/// The first TCB component where `higher` is below `lower`: the ordering `lower ≤ higher`
/// fails there.
fn first_not_ordered(lower: &Tcb, higher: &Tcb) -> Option<(&'static str, u8, u8)> {
    higher.first_below(lower)
}

/// Checks one certificate's validity window at `now`.
fn valid_at(certificate: &'static str, window: (u64, u64), now: u64) -> Result<(), RejectReason> {
    let (not_before, not_after) = window;
    if now < not_before || now > not_after {
        return Err(RejectReason::CertificateValidity {
            certificate,
            not_before,
            not_after,
            now,
        });
    }
    Ok(())
}

/// [`verify`] with chain and report-signature results remembered in `cache`; every other check
/// runs every time.
pub fn verify_with_cache(
    evidence: &Evidence,
    policy: &Policy,
    binding: &Binding,
    now: u64,
    cache: &ChainCache,
) -> Result<VerifiedReport, RejectReason> {
    if policy.trust == Trust::Simulated && !crate::SIMULATED_PSP_BUILT_IN {
        return Err(RejectReason::SimulatedTrustNotBuiltIn);
    }
    // -- The report's form.
    let report = AttestationReport::from_bytes(&evidence.report)
        .map_err(|_| RejectReason::ReportSize(evidence.report.len()))?;
    if !KNOWN_VERSIONS.contains(&report.version()) {
        return Err(RejectReason::ReportVersion(report.version()));
    }
    if report.version() < policy.minimum_report_version {
        return Err(RejectReason::ReportVersionBelowMinimum {
            minimum: policy.minimum_report_version,
            reported: report.version(),
        });
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
    let guest_policy = report.policy();
    if guest_policy & policy_bits::RESERVED_ONE == 0
        || guest_policy & policy_bits::RESERVED_ZERO != 0
    {
        return Err(RejectReason::GuestPolicyReserved(guest_policy));
    }
    let platform = report.platform_info();
    if platform & platform_bits::RESERVED_ZERO != 0 {
        return Err(RejectReason::PlatformInfoReserved(platform));
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
    let key = cert
        .verifying_key()
        .map_err(|e| RejectReason::Certificate(e.to_string()))?;
    if cert.version() != x509_cert::Version::V3 {
        return Err(RejectReason::CertificateVersion(format!(
            "{:?}",
            cert.version()
        )));
    }
    cert.check_signature_parameters()
        .map_err(RejectReason::SignatureParameters)?;
    let chain = cache
        .chain(&cert, kind, policy.trust)
        .map_err(|named| match named {
            true => RejectReason::CertificateChain {
                kind,
                trust: policy.trust,
            },
            false => RejectReason::CertificateIssuer {
                kind,
                trust: policy.trust,
                issuer: cert.x509().tbs_certificate.issuer.to_string(),
            },
        })?;
    let product = chain.product;
    let expected_cn = match policy.trust {
        Trust::Amd => kind.amd_common_name(),
        #[cfg(feature = "simulated")]
        Trust::Simulated => crate::simulated::SIMULATED_VCEK_CN,
        #[cfg(not(feature = "simulated"))]
        Trust::Simulated => return Err(RejectReason::SimulatedTrustNotBuiltIn),
    };
    cert.check_subject(expected_cn)
        .map_err(|found| RejectReason::CertificateSubject {
            expected: expected_cn,
            found,
        })?;
    let (endorsement_name, intermediate_name) = match kind {
        KeyKind::Vcek => ("VCEK", "ASK"),
        KeyKind::Vlek => ("VLEK", "ASVK"),
    };
    valid_at(endorsement_name, cert.validity(), now)?;
    valid_at(intermediate_name, chain.intermediate_validity, now)?;
    valid_at("ARK", chain.root_validity, now)?;

    // -- Revocation: the product line's ARK-signed CRL, if the policy carries one.
    match policy.revocation.crls.get(&product) {
        Some(crl) => {
            if crl.product() != product || crl.trust() != policy.trust {
                return Err(RejectReason::CrlIssuer(product));
            }
            let max_age = policy.revocation.max_crl_age_secs;
            if crl.this_update() > now || now - crl.this_update() > max_age {
                return Err(RejectReason::CrlStale {
                    product,
                    this_update: crl.this_update(),
                    now,
                    max_age,
                });
            }
            for (certificate, serial) in [
                (intermediate_name, chain.intermediate_serial.clone()),
                (endorsement_name, cert.serial()),
            ] {
                if crl.revokes(&serial) {
                    return Err(RejectReason::Revoked {
                        certificate,
                        serial: hex::encode(serial),
                    });
                }
            }
        }
        None if policy.revocation.require_crl => return Err(RejectReason::CrlMissing(product)),
        None => {}
    }

    // -- The CPU the report names is the chain's product line, and the policy admits it.
    if report.version() >= 3 {
        let (family, model, _) = report.cpuid();
        match Product::from_cpuid(family, model) {
            None => return Err(RejectReason::UnknownCpuid { family, model }),
            Some(named) if named != product => {
                return Err(RejectReason::ProductMismatch {
                    chain: product,
                    report: named,
                })
            }
            Some(_) => {}
        }
    }
    let rules = policy
        .products
        .get(&product)
        .ok_or(RejectReason::ProductNotAdmitted(product))?;

    // -- The endorsement key signed exactly these bytes.
    let signature = signature_of(&report).ok_or(RejectReason::ReportSignature(kind))?;
    if !cache.signature(report.as_bytes(), cert.der(), || {
        key.verify(report.signed_bytes(), &signature).is_ok()
    }) {
        return Err(RejectReason::ReportSignature(kind));
    }

    // -- The certificate was issued for this TCB, (VCEK) this chip, (VLEK) an allowed cloud.
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
    let chip_id = report.chip_id();
    match kind {
        KeyKind::Vcek => {
            let hwid = cert
                .hardware_id(product)
                .ok_or_else(|| RejectReason::HardwareIdForm {
                    product,
                    expected: product.hwid_len(),
                    found: cert
                        .hardware_id_raw()
                        .map(hex::encode)
                        .unwrap_or_else(|| "none".into()),
                })?;
            if chip_id == [0; 64] {
                // The platform's MASK_CHIP_ID zeroes CHIP_ID; there is nothing to compare.
                if !policy.allow_masked_chip_id {
                    return Err(RejectReason::MaskedChipId);
                }
            } else {
                let (id, padding) = chip_id.split_at(hwid.len());
                if id != hwid.as_slice() || padding.iter().any(|b| *b != 0) {
                    return Err(RejectReason::HardwareId {
                        cert: hex::encode(&hwid),
                        report: hex::encode(chip_id),
                    });
                }
            }
        }
        KeyKind::Vlek => {
            let csp = cert.csp_id();
            if !csp
                .as_ref()
                .is_some_and(|c| policy.vlek_csp_ids.iter().any(|allowed| allowed == c))
            {
                return Err(RejectReason::VlekCsp(csp));
            }
        }
    }

    // -- The guest policy.
    let rules_gp = &policy.guest_policy;
    let has = |bit: u64| guest_policy & bit != 0;
    if has(policy_bits::DEBUG) && !rules_gp.allow_debug {
        return Err(RejectReason::Debug(guest_policy));
    }
    if has(policy_bits::MIGRATE_MA) && !rules_gp.allow_migration_agent {
        return Err(RejectReason::MigrationAgent(guest_policy));
    }
    if has(policy_bits::SMT) && !rules_gp.allow_smt {
        return Err(RejectReason::GuestSmt(guest_policy));
    }
    if rules_gp.require_single_socket && !has(policy_bits::SINGLE_SOCKET) {
        return Err(RejectReason::SingleSocket(guest_policy));
    }
    if has(policy_bits::CXL_ALLOW) && !rules_gp.allow_cxl {
        return Err(RejectReason::Cxl(guest_policy));
    }
    if rules_gp.require_aes_256_xts && !has(policy_bits::MEM_AES_256_XTS) {
        return Err(RejectReason::Aes256Xts(guest_policy));
    }
    if rules_gp.require_rapl_disabled && !has(policy_bits::RAPL_DIS) {
        return Err(RejectReason::GuestRaplDisabled(guest_policy));
    }
    if rules_gp.require_ciphertext_hiding && !has(policy_bits::CIPHERTEXT_HIDING_DRAM) {
        return Err(RejectReason::GuestCiphertextHiding(guest_policy));
    }
    if rules_gp.require_page_swap_disabled && !has(policy_bits::PAGE_SWAP_DISABLE) {
        return Err(RejectReason::PageSwapDisabled(guest_policy));
    }
    let (major, minor) = policy_bits::abi(guest_policy);
    let abi = AbiVersion { major, minor };
    if abi < rules_gp.minimum_abi {
        return Err(RejectReason::AbiBelowMinimum {
            minimum: rules_gp.minimum_abi,
            reported: abi,
        });
    }

    // -- The platform.
    let rules_pl = &policy.platform;
    let on = |bit: u64| platform & bit != 0;
    if on(platform_bits::SMT_EN) && !rules_pl.allow_smt {
        return Err(RejectReason::Smt(platform));
    }
    if on(platform_bits::TSME_EN) && !rules_pl.allow_tsme {
        return Err(RejectReason::Tsme(platform));
    }
    if rules_pl.require_ecc && !on(platform_bits::ECC_EN) {
        return Err(RejectReason::Ecc(platform));
    }
    if rules_pl.require_rapl_disabled && !on(platform_bits::RAPL_DIS) {
        return Err(RejectReason::RaplDisabled(platform));
    }
    if rules_pl.require_ciphertext_hiding && !on(platform_bits::CIPHERTEXT_HIDING_EN) {
        return Err(RejectReason::CiphertextHiding(platform));
    }
    if rules_pl.require_alias_check && !on(platform_bits::ALIAS_CHECK_COMPLETE) {
        return Err(RejectReason::AliasCheck(platform));
    }
    if on(platform_bits::TIO_EN) && !rules_pl.allow_tio {
        return Err(RejectReason::Tio(platform));
    }
    if report.vmpl() != policy.vmpl {
        return Err(RejectReason::Vmpl {
            expected: policy.vmpl,
            reported: report.vmpl(),
        });
    }

    // -- TCB and firmware: floors, then committed ≤ current and reported ≤ current.
    if let Some((component, minimum, reported)) = reported_tcb.first_below(&rules.minimum_tcb) {
        return Err(RejectReason::TcbBelowMinimum {
            component,
            minimum,
            reported,
        });
    }
    let launch_tcb = Tcb::decode(report.launch_tcb_raw(), product);
    if let Some((component, minimum, reported)) = launch_tcb.first_below(&rules.minimum_launch_tcb)
    {
        return Err(RejectReason::LaunchTcbBelowMinimum {
            component,
            minimum,
            reported,
        });
    }
    let current_tcb = Tcb::decode(report.current_tcb_raw(), product);
    let committed_tcb = Tcb::decode(report.committed_tcb_raw(), product);
    if !policy.allow_provisional_tcb && current_tcb != committed_tcb {
        return Err(RejectReason::ProvisionalTcb {
            current: current_tcb,
            committed: committed_tcb,
        });
    }
    if let Some((component, committed, current)) = first_not_ordered(&committed_tcb, &current_tcb) {
        return Err(RejectReason::CommittedAboveCurrent {
            component,
            committed,
            current,
        });
    }
    if let Some((component, reported, current)) = first_not_ordered(&reported_tcb, &current_tcb) {
        return Err(RejectReason::ReportedAboveCurrent {
            component,
            reported,
            current,
        });
    }
    let current_firmware = report.current_firmware();
    let committed_firmware = report.committed_firmware();
    if current_firmware < rules.minimum_firmware {
        return Err(RejectReason::FirmwareBelowMinimum {
            minimum: rules.minimum_firmware,
            reported: current_firmware,
        });
    }
    if !policy.allow_provisional_tcb && current_firmware != committed_firmware {
        return Err(RejectReason::ProvisionalFirmware {
            current: current_firmware,
            committed: committed_firmware,
        });
    }
    if committed_firmware > current_firmware {
        return Err(RejectReason::CommittedFirmwareAboveCurrent {
            current: current_firmware,
            committed: committed_firmware,
        });
    }
    for (vector, required, reported) in [
        (
            "launch",
            policy.minimum_mitigations.launch,
            report.launch_mitigations(),
        ),
        (
            "current",
            policy.minimum_mitigations.current,
            report.current_mitigations(),
        ),
    ] {
        if reported & required != required {
            return Err(RejectReason::MitigationVector {
                vector,
                required,
                reported,
            });
        }
    }
    if report.guest_svn() < policy.minimum_guest_svn {
        return Err(RejectReason::GuestSvn {
            minimum: policy.minimum_guest_svn,
            reported: report.guest_svn(),
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
    if let Some(expected) = &policy.family_id {
        if expected.0 != report.family_id() {
            return Err(RejectReason::FamilyId {
                expected: expected.to_string(),
                reported: hex::encode(report.family_id()),
            });
        }
    }
    if let Some(expected) = &policy.image_id {
        if expected.0 != report.image_id() {
            return Err(RejectReason::ImageId {
                expected: expected.to_string(),
                reported: hex::encode(report.image_id()),
            });
        }
    }
    let id_key = HexBytes(report.id_key_digest());
    if !policy.id_key_digests.is_empty() && !policy.id_key_digests.contains(&id_key) {
        return Err(RejectReason::IdKey(id_key.to_string()));
    }
    if policy.require_author_key && !report.author_key_en() {
        return Err(RejectReason::AuthorKeyMissing);
    }
    let author_key = HexBytes(report.author_key_digest());
    if !policy.author_key_digests.is_empty() && !policy.author_key_digests.contains(&author_key) {
        return Err(RejectReason::AuthorKey(author_key.to_string()));
    }
    let chip = HexBytes(chip_id);
    if !policy.chip_ids.is_empty() && !policy.chip_ids.contains(&chip) {
        return Err(RejectReason::ChipId(chip.to_string()));
    }

    // -- Bound to what the caller expects (TLS key, validity, validator key, chain id).
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
        platform_info: platform,
        reported_tcb,
        current_tcb,
        committed_tcb,
        launch_tcb,
        current_firmware,
        vmpl: report.vmpl(),
        chip_id: chip,
        report_data: HexBytes(report.report_data()),
        host_data: HexBytes(report.host_data()),
        endorsement_not_after: cert.validity().1,
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
    /// PLATFORM_INFO.
    pub platform_info: u64,
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
        .and_then(|c| c.chain_to_pinned_root(kind).ok())
        .map(|c| c.product);
    let (family, model, _) = report.cpuid();
    let product = from_chain.or_else(|| Product::from_cpuid(family, model));
    Some(Inspection {
        product,
        report_version: report.version(),
        measurement: HexBytes(report.measurement()),
        policy: report.policy(),
        platform_info: report.platform_info(),
        reported_tcb: Tcb::decode(report.reported_tcb_raw(), product.unwrap_or(Product::Milan)),
        vmpl: report.vmpl(),
        signing_key: report.signing_key(),
    })
}
