//! The SEV-SNP `ATTESTATION_REPORT` (SEV-SNP Firmware ABI, table "ATTESTATION_REPORT
//! Structure"), read field by field from the exact bytes the PSP signed. The raw bytes are
//! kept: the signature is checked over them, never over a re-encoding.

use thiserror::Error;

/// Size of a report: 0x4A0 bytes.
pub const REPORT_SIZE: usize = 0x4A0;
/// The signed part of a report: everything before the signature.
pub const SIGNED_SIZE: usize = 0x2A0;

/// Why bytes are not a report at all.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum ReportParseError {
    /// Not exactly [`REPORT_SIZE`] bytes.
    #[error("an attestation report has {REPORT_SIZE} bytes, not {0}")]
    WrongSize(usize),
}

/// A TCB version: the security version numbers of each firmware component. The byte layout
/// differs between product lines (Turin adds the FMC and moves the fields), so decoding needs
/// the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tcb {
    /// PSP bootloader SVN.
    pub bootloader: u8,
    /// PSP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// CPU microcode SVN.
    pub microcode: u8,
    /// Firmware mask ROM SVN (Turin and later; `None` before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

/// AMD EPYC product lines with SEV-SNP.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Product {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl Product {
    /// Every product line, in the order chains are tried.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The name AMD uses.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// The product line a name such as `Milan`, `Milan-B0` or `Genoa` (a VCEK's product-name
    /// extension) belongs to.
    pub fn from_name(name: &str) -> Option<Product> {
        let line = name.split('-').next().unwrap_or(name);
        Product::ALL.into_iter().find(|p| p.name() == line)
    }

    /// Length of the hardware id in this product line's VCEKs: the whole 64-byte CHIP_ID for
    /// Milan and Genoa, its first 8 bytes for Turin (the rest of a Turin CHIP_ID is zero).
    pub fn hwid_len(self) -> usize {
        match self {
            Product::Milan | Product::Genoa => 64,
            Product::Turin => 8,
        }
    }

    /// The product a v3+ report's CPUID family/model names, if known.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }
}

impl Tcb {
    /// Decodes a raw little-endian TCB_VERSION for `product`.
    pub fn decode(raw: u64, product: Product) -> Tcb {
        let b = raw.to_le_bytes();
        match product {
            Product::Milan | Product::Genoa => Tcb {
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
                fmc: None,
            },
            Product::Turin => Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    /// Encodes for `product` (the inverse of [`Tcb::decode`]).
    pub fn encode(&self, product: Product) -> u64 {
        let mut b = [0u8; 8];
        match product {
            Product::Milan | Product::Genoa => {
                b[0] = self.bootloader;
                b[1] = self.tee;
                b[6] = self.snp;
                b[7] = self.microcode;
            }
            Product::Turin => {
                b[0] = self.fmc.unwrap_or(0);
                b[1] = self.bootloader;
                b[2] = self.tee;
                b[3] = self.snp;
                b[7] = self.microcode;
            }
        }
        u64::from_le_bytes(b)
    }

    /// The first component below `minimum`, as (name, minimum, actual).
    pub fn first_below(&self, minimum: &Tcb) -> Option<(&'static str, u8, u8)> {
        let fields = [
            ("bootloader", minimum.bootloader, self.bootloader),
            ("tee", minimum.tee, self.tee),
            ("snp", minimum.snp, self.snp),
            ("microcode", minimum.microcode, self.microcode),
            ("fmc", minimum.fmc.unwrap_or(0), self.fmc.unwrap_or(0)),
        ];
        fields.into_iter().find(|(_, min, actual)| actual < min)
    }
}

/// Bits of the guest policy (SEV-SNP ABI, "Guest Policy Structure").
pub mod policy_bits {
    /// The guest may run with SMT enabled.
    pub const SMT: u64 = 1 << 16;
    /// Must be one.
    pub const RESERVED_ONE: u64 = 1 << 17;
    /// A migration agent may be associated with the guest.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging is allowed: the host can read and write guest memory.
    pub const DEBUG: u64 = 1 << 19;
    /// The guest may only run on a single socket.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// CXL devices or memory may be attached to the guest.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// Memory must be encrypted with AES-256-XTS (otherwise AES-128-XEX may be used).
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// Running Average Power Limit must be disabled on the host.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Ciphertext hiding for DRAM must be enabled.
    pub const CIPHERTEXT_HIDING_DRAM: u64 = 1 << 24;
    /// The host may not page-swap (SNP_PAGE_MOVE, SNP_SWAP_OUT/IN) the guest's memory.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
    /// Bits 26 to 63: reserved, must be zero.
    pub const RESERVED_ZERO: u64 = !((1 << 26) - 1);

    /// The ABI version (major, minor) the guest requires.
    pub fn abi(policy: u64) -> (u8, u8) {
        (((policy >> 8) & 0xff) as u8, (policy & 0xff) as u8)
    }
}

/// Bits of PLATFORM_INFO.
pub mod platform_bits {
    /// SMT is enabled on the host.
    pub const SMT_EN: u64 = 1 << 0;
    /// TSME is enabled.
    pub const TSME_EN: u64 = 1 << 1;
    /// The platform uses error-correcting memory.
    pub const ECC_EN: u64 = 1 << 2;
    /// Running Average Power Limit is disabled.
    pub const RAPL_DIS: u64 = 1 << 3;
    /// Ciphertext hiding is enabled for DRAM.
    pub const CIPHERTEXT_HIDING_EN: u64 = 1 << 4;
    /// Memory alias detection completed since the last reset and found no aliases (the BadRAM
    /// mitigation of AMD-SB-3015).
    pub const ALIAS_CHECK_COMPLETE: u64 = 1 << 5;
    /// SEV-TIO is enabled.
    pub const TIO_EN: u64 = 1 << 7;
    /// Bit 6 and bits 8 to 63: reserved, must be zero.
    pub const RESERVED_ZERO: u64 = (1 << 6) | !((1 << 8) - 1);
}

/// A firmware version as the report states it: API major.minor and build.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct FirmwareVersion {
    /// API major version.
    pub major: u8,
    /// API minor version.
    pub minor: u8,
    /// Build number.
    pub build: u8,
}

impl FirmwareVersion {
    /// The API version alone, as one comparable number (major in the high byte).
    pub fn api(&self) -> u16 {
        (u16::from(self.major) << 8) | u16::from(self.minor)
    }
}

impl std::fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{} build {}", self.major, self.minor, self.build)
    }
}

/// Which key signed the report (the `SIGNING_KEY` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key (a cloud provider's).
    Vlek,
    /// No key (or an encoding this verifier does not know).
    Other(u8),
}

/// An attestation report: the raw bytes and accessors for each field.
#[derive(Clone, PartialEq, Eq)]
pub struct AttestationReport {
    raw: Box<[u8; REPORT_SIZE]>,
}

impl std::fmt::Debug for AttestationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationReport")
            .field("version", &self.version())
            .field("policy", &format_args!("{:#x}", self.policy()))
            .field("vmpl", &self.vmpl())
            .field("measurement", &hex::encode(self.measurement()))
            .finish_non_exhaustive()
    }
}

macro_rules! bytes_at {
    ($raw:expr, $off:expr, $len:expr) => {{
        let mut out = [0u8; $len];
        out.copy_from_slice(&$raw[$off..$off + $len]);
        out
    }};
}

impl AttestationReport {
    /// Takes the bytes of a report; only the size is checked here, the verifier checks the rest.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReportParseError> {
        let raw: [u8; REPORT_SIZE] = bytes
            .try_into()
            .map_err(|_| ReportParseError::WrongSize(bytes.len()))?;
        Ok(AttestationReport { raw: Box::new(raw) })
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8; REPORT_SIZE] {
        &self.raw
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_SIZE]
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(bytes_at!(self.raw, off, 4))
    }

    fn u64_at(&self, off: usize) -> u64 {
        u64::from_le_bytes(bytes_at!(self.raw, off, 8))
    }

    /// VERSION (2, 3 or 5 are known).
    pub fn version(&self) -> u32 {
        self.u32_at(0x00)
    }
    /// GUEST_SVN.
    pub fn guest_svn(&self) -> u32 {
        self.u32_at(0x04)
    }
    /// POLICY: the guest policy given at launch.
    pub fn policy(&self) -> u64 {
        self.u64_at(0x08)
    }
    /// FAMILY_ID from the ID block.
    pub fn family_id(&self) -> [u8; 16] {
        bytes_at!(self.raw, 0x10, 16)
    }
    /// IMAGE_ID from the ID block.
    pub fn image_id(&self) -> [u8; 16] {
        bytes_at!(self.raw, 0x20, 16)
    }
    /// VMPL of the guest that requested the report.
    pub fn vmpl(&self) -> u32 {
        self.u32_at(0x30)
    }
    /// SIGNATURE_ALGO (1: ECDSA P-384 with SHA-384).
    pub fn signature_algo(&self) -> u32 {
        self.u32_at(0x34)
    }
    /// CURRENT_TCB, raw.
    pub fn current_tcb_raw(&self) -> u64 {
        self.u64_at(0x38)
    }
    /// PLATFORM_INFO.
    pub fn platform_info(&self) -> u64 {
        self.u64_at(0x40)
    }
    /// The signer-info word at 0x48 (AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY).
    pub fn key_flags(&self) -> u32 {
        self.u32_at(0x48)
    }
    /// AUTHOR_KEY_EN: the ID block was signed by an author key.
    pub fn author_key_en(&self) -> bool {
        self.key_flags() & 1 != 0
    }
    /// MASK_CHIP_KEY: the host asked for an unsigned report (the signature is zero). Not to be
    /// confused with the platform's MASK_CHIP_ID setting, which zeroes CHIP_ID and shows in
    /// no report bit.
    pub fn mask_chip_key(&self) -> bool {
        self.key_flags() & 2 != 0
    }
    /// SIGNING_KEY.
    pub fn signing_key(&self) -> SigningKey {
        match (self.key_flags() >> 2) & 7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            other => SigningKey::Other(other as u8),
        }
    }
    /// REPORT_DATA: 64 bytes chosen by the guest.
    pub fn report_data(&self) -> [u8; 64] {
        bytes_at!(self.raw, 0x50, 64)
    }
    /// MEASUREMENT: the launch digest.
    pub fn measurement(&self) -> [u8; 48] {
        bytes_at!(self.raw, 0x90, 48)
    }
    /// HOST_DATA: 32 bytes the host set at launch.
    pub fn host_data(&self) -> [u8; 32] {
        bytes_at!(self.raw, 0xC0, 32)
    }
    /// ID_KEY_DIGEST: SHA-384 of the ID key that signed the ID block.
    pub fn id_key_digest(&self) -> [u8; 48] {
        bytes_at!(self.raw, 0xE0, 48)
    }
    /// AUTHOR_KEY_DIGEST.
    pub fn author_key_digest(&self) -> [u8; 48] {
        bytes_at!(self.raw, 0x110, 48)
    }
    /// REPORT_ID.
    pub fn report_id(&self) -> [u8; 32] {
        bytes_at!(self.raw, 0x140, 32)
    }
    /// REPORT_ID_MA: the report id of the migration agent (all ones without one).
    pub fn report_id_ma(&self) -> [u8; 32] {
        bytes_at!(self.raw, 0x160, 32)
    }
    /// REPORTED_TCB, raw: the TCB the VCEK was issued for.
    pub fn reported_tcb_raw(&self) -> u64 {
        self.u64_at(0x180)
    }
    /// CPUID family, model, stepping (version 3 and later; zero before).
    pub fn cpuid(&self) -> (u8, u8, u8) {
        (self.raw[0x188], self.raw[0x189], self.raw[0x18A])
    }
    /// CHIP_ID: the processor's unique id (zero when masked or VLEK-signed).
    pub fn chip_id(&self) -> [u8; 64] {
        bytes_at!(self.raw, 0x1A0, 64)
    }
    /// COMMITTED_TCB, raw.
    pub fn committed_tcb_raw(&self) -> u64 {
        self.u64_at(0x1E0)
    }
    /// CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR: the running firmware.
    pub fn current_firmware(&self) -> FirmwareVersion {
        FirmwareVersion {
            build: self.raw[0x1E8],
            minor: self.raw[0x1E9],
            major: self.raw[0x1EA],
        }
    }
    /// COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR: the firmware rollback floor.
    pub fn committed_firmware(&self) -> FirmwareVersion {
        FirmwareVersion {
            build: self.raw[0x1EC],
            minor: self.raw[0x1ED],
            major: self.raw[0x1EE],
        }
    }
    /// LAUNCH_TCB, raw.
    pub fn launch_tcb_raw(&self) -> u64 {
        self.u64_at(0x1F0)
    }
    /// LAUNCH_MIT_VECTOR (version 5 and later; reserved before).
    pub fn launch_mitigations(&self) -> u64 {
        self.u64_at(0x1F8)
    }
    /// CURRENT_MIT_VECTOR (version 5 and later; reserved before).
    pub fn current_mitigations(&self) -> u64 {
        self.u64_at(0x200)
    }
    /// Signature R, little-endian, 72 bytes (48 used).
    pub fn signature_r(&self) -> [u8; 72] {
        bytes_at!(self.raw, 0x2A0, 72)
    }
    /// Signature S, little-endian, 72 bytes (48 used).
    pub fn signature_s(&self) -> [u8; 72] {
        bytes_at!(self.raw, 0x2E8, 72)
    }

    /// Reserved ranges that must be zero for this report version, as (offset, length).
    pub fn reserved_ranges(&self) -> Vec<(usize, usize)> {
        let mut ranges = vec![
            (0x4C, 4),
            (0x1EB, 1),
            (0x1EF, 1),
            (0x330, REPORT_SIZE - 0x330),
        ];
        // Bytes 0x188..0x1A0: CPUID fields from version 3; reserved before.
        if self.version() >= 3 {
            ranges.push((0x18B, 0x1A0 - 0x18B));
        } else {
            ranges.push((0x188, 0x1A0 - 0x188));
        }
        // 0x1F8..0x2A0: mitigation vectors from version 5; reserved before.
        if self.version() >= 5 {
            ranges.push((0x208, 0x2A0 - 0x208));
        } else {
            ranges.push((0x1F8, 0x2A0 - 0x1F8));
        }
        // The unused top of R and S.
        ranges.push((0x2A0 + 48, 24));
        ranges.push((0x2E8 + 48, 24));
        ranges
    }

    /// The first reserved byte that is not zero, as (offset, value).
    pub fn first_nonzero_reserved(&self) -> Option<(usize, u8)> {
        self.reserved_ranges().into_iter().find_map(|(off, len)| {
            self.raw[off..off + len]
                .iter()
                .position(|b| *b != 0)
                .map(|i| (off + i, self.raw[off + i]))
        })
    }

    /// Writes `bytes` at `offset` (for the simulated PSP and for tests that mutate reports).
    pub fn set_bytes(&mut self, offset: usize, bytes: &[u8]) {
        self.raw[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcb_round_trips_for_every_product() {
        let t = Tcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            fmc: None,
        };
        for p in [Product::Milan, Product::Genoa] {
            assert_eq!(Tcb::decode(t.encode(p), p), t);
        }
        let turin = Tcb { fmc: Some(1), ..t };
        assert_eq!(
            Tcb::decode(turin.encode(Product::Turin), Product::Turin),
            turin
        );
        // A genuine Milan reported TCB (trustee fixture): bootloader 3, snp 8, microcode 0x73.
        let milan = Tcb::decode(0x7308_0000_0000_0003, Product::Milan);
        assert_eq!(
            (milan.bootloader, milan.tee, milan.snp, milan.microcode),
            (3, 0, 8, 0x73)
        );
    }

    #[test]
    fn a_report_must_have_exactly_its_size() {
        assert_eq!(
            AttestationReport::from_bytes(&[0; 10]),
            Err(ReportParseError::WrongSize(10))
        );
        assert_eq!(
            AttestationReport::from_bytes(&[0; REPORT_SIZE + 1]),
            Err(ReportParseError::WrongSize(REPORT_SIZE + 1))
        );
        assert!(AttestationReport::from_bytes(&[0; REPORT_SIZE]).is_ok());
    }

    #[test]
    fn tcb_comparison_names_the_first_low_component() {
        let min = Tcb {
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 100,
            fmc: None,
        };
        let ok = Tcb {
            microcode: 115,
            ..min
        };
        assert_eq!(ok.first_below(&min), None);
        let low = Tcb { snp: 7, ..ok };
        assert_eq!(low.first_below(&min), Some(("snp", 8, 7)));
    }
}
