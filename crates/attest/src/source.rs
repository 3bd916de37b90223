//! Where a validator's own evidence and sealing keys come from: the SEV-SNP guest device on
//! real hardware, or the simulated PSP on development machines. The node sees only the trait.

use crate::policy::Trust;
use crate::report::{AttestationReport, SigningKey};
use crate::simulated::SimulatedPsp;
use crate::verify::Evidence;
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
    /// The extended report came without the endorsement certificate it needs.
    #[error("the host supplied no {0:?} certificate with the extended report")]
    MissingCertificate(SigningKey),
    /// The simulated PSP failed.
    #[error(transparent)]
    Simulated(#[from] crate::simulated::SimulatedError),
}

/// A producer of this validator's evidence and sealing keys.
pub trait EvidenceSource: Send {
    /// The roots its evidence chains to.
    fn trust(&self) -> Trust;
    /// Fresh evidence whose REPORT_DATA is `report_data`.
    fn evidence(&mut self, report_data: [u8; 64]) -> Result<Evidence, SourceError>;
    /// A 32-byte key bound to the chip, the launch measurement and the guest policy, distinct
    /// per `context`.
    fn sealing_key(&mut self, context: &[u8]) -> Result<[u8; 32], SourceError>;
}

/// Path of the SEV-SNP guest device.
pub const GUEST_DEVICE: &str = "/dev/sev-guest";

/// The SEV-SNP guest device (`/dev/sev-guest`).
pub struct GuestDevice {
    firmware: sev::firmware::guest::Firmware,
}

impl GuestDevice {
    /// Opens the device.
    pub fn open() -> Result<Self, SourceError> {
        if !std::path::Path::new(GUEST_DEVICE).exists() {
            return Err(SourceError::DeviceUnavailable {
                path: GUEST_DEVICE,
                reason: "it does not exist".into(),
            });
        }
        sev::firmware::guest::Firmware::open()
            .map(|firmware| GuestDevice { firmware })
            .map_err(|e| SourceError::DeviceUnavailable {
                path: GUEST_DEVICE,
                reason: e.to_string(),
            })
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
        let (report, certs) = self
            .firmware
            .get_ext_report(None, Some(report_data), Some(0))
            .map_err(|e| SourceError::Firmware {
                request: "SNP_GET_EXT_REPORT",
                reason: e.to_string(),
            })?;
        let signing_key = AttestationReport::from_bytes(&report)
            .map(|r| r.signing_key())
            .unwrap_or(SigningKey::Other(7));
        let wanted = match signing_key {
            SigningKey::Vcek => sev::firmware::host::CertType::VCEK,
            SigningKey::Vlek => sev::firmware::host::CertType::VLEK,
            other => return Err(SourceError::MissingCertificate(other)),
        };
        let cert = certs
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.cert_type == wanted)
            .ok_or(SourceError::MissingCertificate(signing_key))?;
        Ok(Evidence {
            report,
            endorsement_cert: cert.data,
        })
    }

    fn sealing_key(&mut self, context: &[u8]) -> Result<[u8; 32], SourceError> {
        use sev::firmware::guest::{DerivedKey, GuestFieldSelect};
        let mut fields = GuestFieldSelect::default();
        fields.set_guest_policy(true);
        fields.set_measurement(true);
        // Root key VCEK (false), VMPL 0, guest SVN 0, TCB 0: the key survives firmware updates
        // but not a change of image or policy.
        let request = DerivedKey::new(false, fields, 0, 0, 0, None);
        let key =
            self.firmware
                .get_derived_key(None, request)
                .map_err(|e| SourceError::Firmware {
                    request: "SNP_GET_DERIVED_KEY",
                    reason: e.to_string(),
                })?;
        Ok(hkdf_expand(&key, context))
    }
}

impl EvidenceSource for SimulatedPsp {
    fn trust(&self) -> Trust {
        Trust::Simulated
    }

    fn evidence(&mut self, report_data: [u8; 64]) -> Result<Evidence, SourceError> {
        Ok(SimulatedPsp::evidence(self, report_data)?)
    }

    fn sealing_key(&mut self, context: &[u8]) -> Result<[u8; 32], SourceError> {
        Ok(SimulatedPsp::sealing_key(self, context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_device_opening_says_so() {
        if std::path::Path::new(GUEST_DEVICE).exists() {
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
        let mut source: Box<dyn EvidenceSource> = Box::new(SimulatedPsp::new([1; 32], [2; 48]));
        assert_eq!(source.trust(), Trust::Simulated);
        let e = source.evidence([3; 64]).unwrap();
        assert_eq!(e.report.len(), crate::report::REPORT_SIZE);
        assert_ne!(
            source.sealing_key(b"a").unwrap(),
            source.sealing_key(b"b").unwrap()
        );
    }
}
