//! Where a validator's own evidence and sealing keys come from: the SEV-SNP guest device on
//! real hardware, or the simulated PSP on development machines. The node sees only the trait.
//!
//! On hardware the endorsement certificate (VCEK, or a cloud's VLEK) comes from the extended
//! report's certificate table when the host fills it, and otherwise from a file the host hands
//! in through QEMU's `fw_cfg` ([`HOST_CERTIFICATE`]). Upstream KVM returned an empty table until
//! the 2026 certificate-exit work, so the file is the usual case. Taking it from the untrusted
//! host is safe: every verifier checks it against the pinned AMD roots, the report's TCB and
//! its hardware id, exactly as it checks a certificate from the table.

use crate::policy::Trust;
#[cfg(feature = "simulated")]
use crate::report::Tcb;
use crate::report::{AttestationReport, SigningKey};
#[cfg(feature = "simulated")]
use crate::simulated::{SimulatedPsp, SIMULATED_PRODUCT};
use crate::verify::Evidence;
use sev::firmware::guest::{DerivedKey, GuestFieldSelect};
use sev::firmware::host::{CertTableEntry, CertType};
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why evidence or a key could not be produced.
#[derive(Debug, Error)]
pub enum SourceError {
    /// No SEV-SNP guest device (not an SEV-SNP guest, or the driver is missing).
    #[error("no SEV-SNP guest device ({path}): {reason}")]
    DeviceUnavailable {
        /// The device path.
        path: &'static str,
        /// What opening it said.
        reason: String,
    },
    /// The PSP refused or failed a request.
    #[error("the PSP failed the {request} request: {reason}")]
    Firmware {
        /// Which request.
        request: &'static str,
        /// The firmware's answer.
        reason: String,
    },
    /// Neither the extended report nor the host's file carried the endorsement certificate.
    #[error("the host supplied no {0:?} certificate: none in the extended report's table and none in fw_cfg {HOST_CERTIFICATE_NAME}")]
    MissingCertificate(SigningKey),
    /// The host's certificate file could not be read.
    #[error("reading the host's certificate {path}: {reason}")]
    HostCertificateUnreadable {
        /// Where it was read from.
        path: PathBuf,
        /// What reading it said.
        reason: String,
    },
    /// The host's certificate file is larger than any VCEK or VLEK certificate.
    #[error("the host's certificate {path} is larger than {MAX_HOST_CERTIFICATE} bytes")]
    HostCertificateTooLarge {
        /// Where it was read from.
        path: PathBuf,
    },
    /// A sealing key was asked for at a TCB above the one the firmware has committed to (the
    /// PSP refuses such a request).
    #[error("a sealing key at TCB {requested:#018x} is above the committed TCB {committed:#018x}")]
    TcbAboveCommitted {
        /// The TCB_VERSION asked for.
        requested: u64,
        /// The committed TCB.
        committed: u64,
    },
    /// The simulated PSP failed.
    #[cfg(feature = "simulated")]
    #[error(transparent)]
    Simulated(#[from] crate::simulated::SimulatedError),
}

/// A producer of this validator's evidence and sealing keys.
pub trait EvidenceSource: Send {
    /// The roots its evidence chains to.
    fn trust(&self) -> Trust;
    /// Fresh evidence whose REPORT_DATA is `report_data`.
    fn evidence(&mut self, report_data: [u8; 64]) -> Result<Evidence, SourceError>;
    /// A 32-byte key bound to the chip, the launch measurement, the guest policy and
    /// `tcb_version` (a TCB_VERSION as the report encodes it, at most the committed TCB),
    /// distinct per `context`. The same image under the same policy on the same chip derives
    /// the same key at the same TCB, so a value sealed at an older TCB can be unsealed after a
    /// firmware update by asking for that TCB.
    fn sealing_key(&mut self, tcb_version: u64, context: &[u8]) -> Result<[u8; 32], SourceError>;
}

/// Path of the SEV-SNP guest device.
pub const GUEST_DEVICE: &str = "/dev/sev-guest";

/// The `fw_cfg` name under which the host hands in the VCEK (or VLEK) certificate:
/// `-fw_cfg name=opt/bulwark/vcek,file=vcek.der`.
pub const HOST_CERTIFICATE_NAME: &str = "opt/bulwark/vcek";

/// Where the guest kernel shows [`HOST_CERTIFICATE_NAME`] (`CONFIG_FW_CFG_SYSFS`).
pub const HOST_CERTIFICATE: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/bulwark/vcek/raw";

/// Largest host certificate read. AMD's VCEK and VLEK certificates are about 1.4 KB in DER and
/// 2 KB in PEM; anything much larger is not one.
pub const MAX_HOST_CERTIFICATE: u64 = 8 * 1024;

/// The guest requests [`GuestDevice`] makes of the PSP: `/dev/sev-guest` on hardware
/// ([`SevGuestFirmware`]), a stand-in in tests.
pub trait GuestFirmware: Send {
    /// SNP_GET_EXT_REPORT for VMPL 0: the report and the host's certificate table, if the
    /// host filled one.
    fn extended_report(
        &mut self,
        report_data: [u8; 64],
    ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), SourceError>;
    /// SNP_GET_DERIVED_KEY.
    fn derived_key(&mut self, request: DerivedKeyRequest) -> Result<[u8; 32], SourceError>;
}

/// `/dev/sev-guest` through the `sev` crate.
pub struct SevGuestFirmware(sev::firmware::guest::Firmware);

impl SevGuestFirmware {
    /// Opens the device.
    pub fn open() -> Result<Self, SourceError> {
        if !Path::new(GUEST_DEVICE).exists() {
            return Err(SourceError::DeviceUnavailable {
                path: GUEST_DEVICE,
                reason: "it does not exist".into(),
            });
        }
        sev::firmware::guest::Firmware::open()
            .map(SevGuestFirmware)
            .map_err(|e| SourceError::DeviceUnavailable {
                path: GUEST_DEVICE,
                reason: e.to_string(),
            })
    }
}

impl GuestFirmware for SevGuestFirmware {
    fn extended_report(
        &mut self,
        report_data: [u8; 64],
    ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), SourceError> {
        self.0
            .get_ext_report(None, Some(report_data), Some(0))
            .map_err(|e| SourceError::Firmware {
                request: "SNP_GET_EXT_REPORT",
                reason: e.to_string(),
            })
    }

    fn derived_key(&mut self, request: DerivedKeyRequest) -> Result<[u8; 32], SourceError> {
        self.0
            .get_derived_key(Some(request.message_version), request.key)
            .map_err(|e| SourceError::Firmware {
                request: "SNP_GET_DERIVED_KEY",
                reason: e.to_string(),
            })
    }
}

/// One MSG_KEY_REQ: the message version and the request the `sev` crate sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DerivedKeyRequest {
    /// The guest message version (1, or 2 with a launch mitigation vector).
    pub message_version: u32,
    /// The request.
    pub key: DerivedKey,
}

/// The message version of sealing-key requests. Version 1, because the pinned guest kernel's
/// driver (6.1, `drivers/virt/coco/sev-guest`) sends only the 32-byte version-1 request (its
/// `struct snp_derived_key_req` has no LAUNCH_MIT_VECTOR), and because the `sev` crate refuses
/// version 2 without a mitigation vector before it reaches the PSP. Every SNP firmware accepts
/// version 1.
pub const SEALING_KEY_MESSAGE_VERSION: u32 = 1;

/// The sealing-key request at `tcb_version`: rooted in the VCEK, VMPL 0, guest SVN 0, mixing
/// in GUEST_POLICY (a relaunch with debug allowed derives another key), MEASUREMENT (another
/// image derives another key) and TCB_VERSION (the caller chooses which TCB, at most the
/// committed one).
pub fn sealing_key_request(tcb_version: u64) -> DerivedKeyRequest {
    let mut fields = GuestFieldSelect::default();
    fields.set_guest_policy(true);
    fields.set_measurement(true);
    fields.set_tcb_version(true);
    DerivedKeyRequest {
        message_version: SEALING_KEY_MESSAGE_VERSION,
        key: DerivedKey::new(false, fields, 0, 0, tcb_version, None),
    }
}

/// Reads the host's certificate file at `path`, if there is one, at most
/// [`MAX_HOST_CERTIFICATE`] bytes.
pub fn read_host_certificate(path: &Path) -> Result<Option<Vec<u8>>, SourceError> {
    let unreadable = |e: std::io::Error| SourceError::HostCertificateUnreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_HOST_CERTIFICATE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_HOST_CERTIFICATE {
        return Err(SourceError::HostCertificateTooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(bytes))
}

/// The SEV-SNP guest device (`/dev/sev-guest`), with the host's certificate file as the
/// fallback for the endorsement certificate.
pub struct GuestDevice {
    firmware: Box<dyn GuestFirmware>,
    host_certificate: PathBuf,
}

impl GuestDevice {
    /// Opens `/dev/sev-guest`; the fallback certificate is [`HOST_CERTIFICATE`].
    pub fn open() -> Result<Self, SourceError> {
        Ok(Self::with_firmware(
            Box::new(SevGuestFirmware::open()?),
            PathBuf::from(HOST_CERTIFICATE),
        ))
    }

    /// A device over `firmware`, taking the endorsement certificate from `host_certificate`
    /// when the extended report carries none.
    pub fn with_firmware(firmware: Box<dyn GuestFirmware>, host_certificate: PathBuf) -> Self {
        GuestDevice {
            firmware,
            host_certificate,
        }
    }
}

fn hkdf_expand(key: &[u8], context: &[u8]) -> [u8; 32] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"bulwark-sealing-v1"), key);
    let mut out = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA-256 output length.
    let _ = hk.expand(context, &mut out);
    out
}

impl EvidenceSource for GuestDevice {
    fn trust(&self) -> Trust {
        Trust::Amd
    }

    fn evidence(&mut self, report_data: [u8; 64]) -> Result<Evidence, SourceError> {
        let (report, table) = self.firmware.extended_report(report_data)?;
        let signing_key = AttestationReport::from_bytes(&report)
            .map(|r| r.signing_key())
            .unwrap_or(SigningKey::Other(7));
        let wanted = match signing_key {
            SigningKey::Vcek => CertType::VCEK,
            SigningKey::Vlek => CertType::VLEK,
            other => return Err(SourceError::MissingCertificate(other)),
        };
        let from_table = table
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.cert_type == wanted && !c.data.is_empty())
            .map(|c| c.data);
        let endorsement_cert = match from_table {
            Some(cert) => cert,
            None => read_host_certificate(&self.host_certificate)?
                .ok_or(SourceError::MissingCertificate(signing_key))?,
        };
        Ok(Evidence {
            report,
            endorsement_cert,
        })
    }

    fn sealing_key(&mut self, tcb_version: u64, context: &[u8]) -> Result<[u8; 32], SourceError> {
        let key = self
            .firmware
            .derived_key(sealing_key_request(tcb_version))?;
        Ok(hkdf_expand(&key, context))
    }
}

#[cfg(feature = "simulated")]
impl EvidenceSource for SimulatedPsp {
    fn trust(&self) -> Trust {
        Trust::Simulated
    }

    fn evidence(&mut self, report_data: [u8; 64]) -> Result<Evidence, SourceError> {
        Ok(SimulatedPsp::evidence(self, report_data)?)
    }

    fn sealing_key(&mut self, tcb_version: u64, context: &[u8]) -> Result<[u8; 32], SourceError> {
        // Like the PSP: a TCB above the committed one is refused, and the TCB is mixed in.
        let requested = Tcb::decode(tcb_version, SIMULATED_PRODUCT);
        if self.tcb.first_below(&requested).is_some() {
            return Err(SourceError::TcbAboveCommitted {
                requested: tcb_version,
                committed: self.tcb.encode(SIMULATED_PRODUCT),
            });
        }
        let mut info = tcb_version.to_le_bytes().to_vec();
        info.extend_from_slice(context);
        Ok(SimulatedPsp::sealing_key(self, &info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{verify, Binding, KeyKind, Measurements, Policy, Product, RejectReason};

    #[test]
    fn without_the_device_opening_says_so() {
        if Path::new(GUEST_DEVICE).exists() {
            return; // on an SEV-SNP guest the device is real; this test is for machines without
        }
        match GuestDevice::open() {
            Err(SourceError::DeviceUnavailable { path, .. }) => assert_eq!(path, GUEST_DEVICE),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("opened a device that does not exist"),
        }
    }

    #[test]
    fn the_simulated_psp_serves_through_the_trait() {
        let psp = SimulatedPsp::new([1; 32], [2; 48]);
        let committed = psp.tcb.encode(SIMULATED_PRODUCT);
        let mut source: Box<dyn EvidenceSource> = Box::new(psp);
        assert_eq!(source.trust(), Trust::Simulated);
        let e = source.evidence([3; 64]).unwrap();
        assert_eq!(e.report.len(), crate::report::REPORT_SIZE);
        assert_ne!(
            source.sealing_key(committed, b"a").unwrap(),
            source.sealing_key(committed, b"b").unwrap()
        );
    }

    #[test]
    fn simulated_sealing_keys_differ_per_tcb_and_refuse_a_tcb_above_the_committed_one() {
        let mut psp = SimulatedPsp::new([1; 32], [2; 48]);
        let committed = psp.tcb;
        let older = Tcb {
            snp: committed.snp - 1,
            ..committed
        };
        let newer = Tcb {
            microcode: committed.microcode + 1,
            ..committed
        };
        let at = |psp: &mut SimulatedPsp, tcb: Tcb| {
            EvidenceSource::sealing_key(psp, tcb.encode(SIMULATED_PRODUCT), b"identity")
        };
        let now = at(&mut psp, committed).unwrap();
        assert_ne!(now, at(&mut psp, older).unwrap(), "the TCB is mixed in");
        assert!(matches!(
            at(&mut psp, newer),
            Err(SourceError::TcbAboveCommitted { .. })
        ));
    }

    /// The `sev` 8 crate's own precondition in `Firmware::get_derived_key`
    /// (`firmware/guest/mod.rs`): message version 2 or later needs a launch mitigation
    /// vector, or the call fails before it reaches the PSP; version 0 is no version.
    fn sev_crate_sends(request: &DerivedKeyRequest) -> bool {
        match request.message_version {
            0 => false,
            1 => true,
            _ => request.key.launch_mit_vector.is_some(),
        }
    }

    #[test]
    fn the_sealing_key_request_passes_the_sev_crates_checks_and_mixes_policy_measurement_and_tcb() {
        let tcb = 0x7300_0000_0000_0304;
        let request = sealing_key_request(tcb);
        assert!(sev_crate_sends(&request), "{request:?}");
        // The pinned guest kernel's driver sends only the version-1 layout.
        assert_eq!(request.message_version, 1);
        let fields = request.key.guest_field_select;
        assert!(fields.get_guest_policy(), "GUEST_POLICY");
        assert!(fields.get_measurement(), "MEASUREMENT");
        assert!(fields.get_tcb_version(), "TCB_VERSION");
        // Nothing else: an image ID, family ID or SVN chosen at launch would move the key.
        assert!(!fields.get_image_id(), "IMAGE_ID");
        assert!(!fields.get_family_id(), "FAMILY_ID");
        assert!(!fields.get_svn(), "GUEST_SVN");
        assert!(!fields.get_launch_mit_vector(), "LAUNCH_MIT_VECTOR");
        assert_eq!(request.key.tcb_version, tcb, "the caller's TCB");
        assert_eq!(request.key.get_root_key_select(), 0, "rooted in the VCEK");
        assert_eq!(request.key.vmpl, 0);
        assert_eq!(request.key.guest_svn, 0);
    }

    #[test]
    fn the_crates_default_message_version_would_fail_before_the_psp() {
        // What the previous request did: no version (the crate then uses 2), no vector.
        let default = DerivedKeyRequest {
            message_version: 2,
            key: DerivedKey::new(false, GuestFieldSelect::default(), 0, 0, 0, None),
        };
        assert!(!sev_crate_sends(&default));
    }

    fn fixture(dir: &str, file: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/{dir}/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// A PSP that returns a genuine report and, like upstream KVM before the certificate
    /// exit, the certificate table the host gave (usually none).
    struct FakeFirmware {
        report: Vec<u8>,
        table: Option<Vec<CertTableEntry>>,
    }

    impl GuestFirmware for FakeFirmware {
        fn extended_report(
            &mut self,
            _: [u8; 64],
        ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), SourceError> {
            Ok((self.report.clone(), self.table.clone()))
        }
        fn derived_key(&mut self, _: DerivedKeyRequest) -> Result<[u8; 32], SourceError> {
            Ok([9; 32])
        }
    }

    /// The evidence a guest device gives with this certificate table and this host file.
    fn evidence_of(
        table: Option<Vec<CertTableEntry>>,
        host_file: Option<&[u8]>,
    ) -> Result<Evidence, SourceError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vcek");
        if let Some(bytes) = host_file {
            std::fs::write(&path, bytes).unwrap();
        }
        GuestDevice::with_firmware(
            Box::new(FakeFirmware {
                report: fixture("go-sev-guest-milan", "report.bin"),
                table,
            }),
            path,
        )
        .evidence([0; 64])
    }

    /// The go-sev-guest report (a v2 report, taken with debug allowed, before the alias
    /// check, at a TCB below today's floors) is what these tests verify: strict otherwise.
    fn policy() -> Policy {
        let mut p = Policy::strict(Trust::Amd, Measurements::Any);
        p.minimum_report_version = 2;
        p.guest_policy.allow_debug = true;
        p.platform.require_alias_check = false;
        p.products.insert(
            Product::Milan,
            crate::policy::ProductRules {
                minimum_tcb: Tcb::default(),
                minimum_launch_tcb: Tcb::default(),
                minimum_firmware: crate::FirmwareVersion::default(),
            },
        );
        p
    }

    /// 2026-12-01, inside the fixture VCEK's validity.
    const NOW: u64 = 1_796_083_200;

    #[test]
    fn without_a_certificate_table_the_hosts_vcek_file_is_used_and_verifies() {
        let vcek = fixture("go-sev-guest-milan", "vcek.der");
        let e = evidence_of(None, Some(&vcek)).unwrap();
        assert_eq!(e.endorsement_cert, vcek);
        let v = verify(&e, &policy(), &Binding::Unchecked, NOW).unwrap();
        assert_eq!(v.product, Product::Milan);
    }

    #[test]
    fn a_table_without_the_vcek_falls_back_to_the_hosts_file() {
        let vcek = fixture("go-sev-guest-milan", "vcek.der");
        let ask_only = vec![CertTableEntry {
            cert_type: CertType::ASK,
            data: vec![1, 2, 3],
        }];
        let e = evidence_of(Some(ask_only), Some(&vcek)).unwrap();
        assert_eq!(e.endorsement_cert, vcek);
    }

    #[test]
    fn the_extended_reports_vcek_comes_first() {
        let vcek = fixture("go-sev-guest-milan", "vcek.der");
        let table = vec![CertTableEntry {
            cert_type: CertType::VCEK,
            data: vcek.clone(),
        }];
        let e = evidence_of(Some(table), Some(b"the host's file")).unwrap();
        assert_eq!(e.endorsement_cert, vcek);
    }

    #[test]
    fn another_chips_vcek_from_the_host_is_rejected_by_the_verifier() {
        // A genuine Milan VCEK, but of another chip: the host cannot pass it off.
        let foreign = fixture("virtee-sev-milan", "vcek.der");
        let e = evidence_of(None, Some(&foreign)).unwrap();
        // It chains to AMD's Milan root, but its key did not sign this report.
        assert_eq!(
            verify(&e, &policy(), &Binding::Unchecked, NOW),
            Err(RejectReason::ReportSignature(KeyKind::Vcek))
        );
    }

    #[test]
    fn with_neither_table_nor_file_the_missing_vcek_is_named() {
        assert!(matches!(
            evidence_of(None, None),
            Err(SourceError::MissingCertificate(SigningKey::Vcek))
        ));
    }

    #[test]
    fn an_oversized_host_file_is_refused_unread() {
        let big = vec![0x30; MAX_HOST_CERTIFICATE as usize + 1];
        assert!(matches!(
            evidence_of(None, Some(&big)),
            Err(SourceError::HostCertificateTooLarge { .. })
        ));
        let largest = vec![0x30; MAX_HOST_CERTIFICATE as usize];
        assert!(evidence_of(None, Some(&largest)).is_ok());
    }

    #[test]
    fn the_guest_device_derives_with_the_sealing_request() {
        struct Recording(std::sync::Arc<std::sync::Mutex<Vec<DerivedKeyRequest>>>);
        impl GuestFirmware for Recording {
            fn extended_report(
                &mut self,
                _: [u8; 64],
            ) -> Result<(Vec<u8>, Option<Vec<CertTableEntry>>), SourceError> {
                Ok((Vec::new(), None))
            }
            fn derived_key(&mut self, r: DerivedKeyRequest) -> Result<[u8; 32], SourceError> {
                self.0.lock().unwrap().push(r);
                Ok([r.key.tcb_version as u8; 32])
            }
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut d = GuestDevice::with_firmware(Box::new(Recording(seen.clone())), PathBuf::new());
        let a = d.sealing_key(1, b"identity").unwrap();
        assert_ne!(a, d.sealing_key(2, b"identity").unwrap());
        assert_ne!(a, d.sealing_key(1, b"disk").unwrap());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                sealing_key_request(1),
                sealing_key_request(2),
                sealing_key_request(1)
            ]
        );
    }
}
