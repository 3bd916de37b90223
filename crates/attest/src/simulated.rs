//! The simulated PSP, for development networks (genesis `trust: simulated`) on machines
//! without SEV-SNP.
//!
//! It produces byte-exact AMD-format reports (version 3, Milan layout) signed with ECDSA P-384
//! by a simulated VCEK, whose certificate carries AMD's TCB and hardware-id extensions and is
//! signed with RSA-PSS/SHA-384 by a simulated ASK, itself signed by a simulated ARK: the same
//! shapes as AMD's, so the verifier runs every one of its checks on simulated evidence too.
//! The simulated root is the project's own, generated from a published seed
//! (`cargo xtask simulated-root`) and pinned here, separate from AMD's: a policy with
//! `trust: amd` never accepts it, and `trust: simulated` accepts nothing else.
//!
//! Nothing about it is secret: the ASK's private key is in the repository. Simulated evidence
//! proves nothing about where code runs; it exists so that everything else is exercised.

use crate::certs::{EndorsementCert, KeyKind};
use crate::report::{AttestationReport, Product, Tcb, REPORT_SIZE, SIGNED_SIZE};
use crate::verify::Evidence;
use p384::ecdsa::signature::Signer;
use p384::pkcs8::EncodePublicKey;
use rand_chacha::rand_core::SeedableRng;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use sev::certs::snp::{Certificate as SevCertificate, Verifiable};
use sha2::{Digest, Sha384};
use std::str::FromStr;
use std::sync::OnceLock;
use thiserror::Error;
use x509_cert::der::asn1::{BitString, GeneralizedTime, OctetString};
use x509_cert::der::{Decode, DecodePem, Encode, EncodePem};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// The simulated ARK (self-signed, RSA-4096, RSA-PSS/SHA-384).
pub const SIMULATED_ARK_PEM: &str = include_str!("../simulated/ark.pem");
/// The simulated ASK, signed by the simulated ARK.
pub const SIMULATED_ASK_PEM: &str = include_str!("../simulated/ask.pem");
/// The simulated ASK's private key. Public on purpose: simulated evidence proves nothing.
const SIMULATED_ASK_KEY_PEM: &str = include_str!("../simulated/ask-key-NOT-SECRET.pem");

/// The seed the committed simulated root was generated from.
pub const SIMULATED_ROOT_SEED: &str = "bulwark simulated AMD root v1 (not AMD, not secret)";

/// The product layout simulated reports use.
pub const SIMULATED_PRODUCT: Product = Product::Milan;

/// Why the simulated PSP could not do something.
#[derive(Debug, Error)]
pub enum SimulatedError {
    /// The pinned simulated root did not load or verify.
    #[error("the simulated root is unusable: {0}")]
    Root(String),
    /// Building or signing a certificate failed.
    #[error("certificate: {0}")]
    Certificate(String),
}

struct SimRoots {
    ask: Certificate,
    ask_sev: SevCertificate,
    ask_key: rsa::RsaPrivateKey,
}

fn roots() -> Result<&'static SimRoots, SimulatedError> {
    static ROOTS: OnceLock<Result<SimRoots, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let ark = Certificate::from_pem(SIMULATED_ARK_PEM).map_err(|e| e.to_string())?;
            let ask = Certificate::from_pem(SIMULATED_ASK_PEM).map_err(|e| e.to_string())?;
            let ark_sev = SevCertificate::from(ark);
            let ask_sev = SevCertificate::from(ask.clone());
            (&ark_sev, &ark_sev)
                .verify()
                .map_err(|e| format!("ARK: {e}"))?;
            (&ark_sev, &ask_sev)
                .verify()
                .map_err(|e| format!("ASK: {e}"))?;
            let ask_key = rsa::RsaPrivateKey::from_pkcs8_pem(SIMULATED_ASK_KEY_PEM)
                .map_err(|e| e.to_string())?;
            Ok(SimRoots {
                ask,
                ask_sev,
                ask_key,
            })
        })
        .as_ref()
        .map_err(|e| SimulatedError::Root(e.clone()))
}

/// The product line a certificate's chain to the simulated root proves: only VCEKs signed by
/// the simulated ASK, and only as [`SIMULATED_PRODUCT`].
pub fn chain_to_simulated_root(cert: &EndorsementCert, kind: KeyKind) -> Option<Product> {
    if kind != KeyKind::Vcek {
        return None;
    }
    let roots = roots().ok()?;
    let sev_cert = SevCertificate::from_der(cert.der()).ok()?;
    (&roots.ask_sev, &sev_cert)
        .verify()
        .ok()
        .map(|_| SIMULATED_PRODUCT)
}

fn name(dn: &str) -> Result<Name, SimulatedError> {
    Name::from_str(dn).map_err(|e| SimulatedError::Certificate(e.to_string()))
}

fn validity() -> Result<Validity, SimulatedError> {
    let t = |secs| {
        GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
            .map(Time::GeneralTime)
            .map_err(|e| SimulatedError::Certificate(e.to_string()))
    };
    // 2020-01-01 .. 2070-01-01, like AMD's long-lived roots.
    Ok(Validity {
        not_before: t(1_577_836_800)?,
        not_after: t(3_155_760_000)?,
    })
}

fn ext(oid: &str, value_der: Vec<u8>) -> Result<Extension, SimulatedError> {
    Ok(Extension {
        extn_id: x509_cert::spki::ObjectIdentifier::new(oid)
            .map_err(|e| SimulatedError::Certificate(e.to_string()))?,
        critical: false,
        extn_value: OctetString::new(value_der)
            .map_err(|e| SimulatedError::Certificate(e.to_string()))?,
    })
}

fn int_der(v: u8) -> Result<Vec<u8>, SimulatedError> {
    u32::from(v)
        .to_der()
        .map_err(|e| SimulatedError::Certificate(e.to_string()))
}

/// Signs `tbs` with RSA-PSS/SHA-384 (salt 48 bytes, as AMD) using a deterministic RNG seeded
/// from the certificate, so the same inputs give the same certificate.
fn sign_rsa_pss(
    key: &rsa::RsaPrivateKey,
    tbs: TbsCertificate,
) -> Result<Certificate, SimulatedError> {
    let err = |e: String| SimulatedError::Certificate(e);
    let msg = tbs.to_der().map_err(|e| err(e.to_string()))?;
    let seed: [u8; 32] = sha2::Sha256::digest(&msg).into();
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    let signer = rsa::pss::BlindedSigningKey::<Sha384>::new(key.clone());
    let signature = signer.sign_with_rng(&mut rng, &msg).to_bytes();
    Ok(Certificate {
        signature_algorithm: tbs.signature.clone(),
        tbs_certificate: tbs,
        signature: BitString::from_bytes(&signature).map_err(|e| err(e.to_string()))?,
    })
}

fn pss_algorithm() -> Result<x509_cert::spki::AlgorithmIdentifierOwned, SimulatedError> {
    rsa::pss::get_default_pss_signature_algo_id::<Sha384>()
        .map_err(|e| SimulatedError::Certificate(e.to_string()))
}

/// A freshly generated simulated root.
pub struct GeneratedRoot {
    /// ARK certificate, PEM.
    pub ark_pem: String,
    /// ASK certificate, PEM.
    pub ask_pem: String,
    /// ASK private key, PKCS#8 PEM.
    pub ask_key_pem: String,
}

/// Generates a simulated ARK/ASK pair (RSA-4096) deterministically from `seed`. Slow (RSA key
/// generation); run in release via `cargo xtask simulated-root`.
pub fn generate_root(seed: &str) -> Result<GeneratedRoot, SimulatedError> {
    let err = |e: String| SimulatedError::Certificate(e);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(sha2::Sha256::digest(seed.as_bytes()).into());
    let ark_key = rsa::RsaPrivateKey::new(&mut rng, 4096).map_err(|e| err(e.to_string()))?;
    let ask_key = rsa::RsaPrivateKey::new(&mut rng, 4096).map_err(|e| err(e.to_string()))?;
    let spki = |k: &rsa::RsaPrivateKey| -> Result<SubjectPublicKeyInfoOwned, SimulatedError> {
        let der = k
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| err(e.to_string()))?;
        SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(|e| err(e.to_string()))
    };
    let ark_name = name("CN=SIMULATED-ARK-Bulwark,O=Bulwark simulated PSP (not AMD)")?;
    let ask_name = name("CN=SIMULATED-SEV-Bulwark,O=Bulwark simulated PSP (not AMD)")?;
    let tbs = |serial: u8,
               issuer: &Name,
               subject: &Name,
               key: SubjectPublicKeyInfoOwned|
     -> Result<TbsCertificate, SimulatedError> {
        Ok(TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&[serial]).map_err(|e| err(e.to_string()))?,
            signature: pss_algorithm()?,
            issuer: issuer.clone(),
            validity: validity()?,
            subject: subject.clone(),
            subject_public_key_info: key,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: None,
        })
    };
    let ark = sign_rsa_pss(&ark_key, tbs(1, &ark_name, &ark_name, spki(&ark_key)?)?)?;
    let ask = sign_rsa_pss(&ark_key, tbs(2, &ark_name, &ask_name, spki(&ask_key)?)?)?;
    let pem = |c: &Certificate| c.to_pem(LineEnding::LF).map_err(|e| err(e.to_string()));
    Ok(GeneratedRoot {
        ark_pem: pem(&ark)?,
        ask_pem: pem(&ask)?,
        ask_key_pem: ask_key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| err(e.to_string()))?
            .to_string(),
    })
}

/// A simulated PSP for one simulated chip and one launched guest.
#[derive(Clone, Debug)]
pub struct SimulatedPsp {
    chip_secret: [u8; 32],
    /// CHIP_ID this chip reports (derived from the secret by default).
    pub chip_id: [u8; 64],
    /// The TCB the chip runs (current = committed = reported = launch).
    pub tcb: Tcb,
    /// The guest's launch measurement.
    pub measurement: [u8; 48],
    /// The guest policy.
    pub policy: u64,
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// The VMPL the guest asks from.
    pub vmpl: u32,
    /// Report version: 3, or 5 (adds the launch and current mitigation vectors).
    pub version: u32,
    /// The TCB written into the VCEK certificate, when a (misbehaving) host hands out a VCEK
    /// issued for another TCB; `None`: the chip's own.
    pub vcek_issued_for: Option<Tcb>,
    /// The chip id written into the VCEK certificate, when a host hands out another chip's
    /// VCEK; `None`: this chip's.
    pub vcek_issued_to: Option<[u8; 64]>,
}

impl SimulatedPsp {
    /// A chip from its secret, running a guest with `measurement` under the default policy
    /// (ABI 0.0, SMT allowed, no debug, no migration agent) at a plausible Milan TCB.
    pub fn new(chip_secret: [u8; 32], measurement: [u8; 48]) -> Self {
        let mut h = Sha384::new();
        h.update(b"bulwark-simulated-chip-id");
        h.update(chip_secret);
        let a = h.finalize();
        let mut chip_id = [0u8; 64];
        chip_id[..48].copy_from_slice(&a);
        chip_id[48..].copy_from_slice(&sha2::Sha256::digest(a)[..16]);
        SimulatedPsp {
            chip_secret,
            chip_id,
            tcb: Tcb {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
                fmc: None,
            },
            measurement,
            policy: 0x30000,
            host_data: [0; 32],
            vmpl: 0,
            version: 3,
            vcek_issued_for: None,
            vcek_issued_to: None,
        }
    }

    /// The VCEK's private key: derived from the chip secret and the TCB, as AMD's is.
    fn vcek_key(&self) -> p384::ecdsa::SigningKey {
        let tcb = self.tcb.encode(SIMULATED_PRODUCT).to_le_bytes();
        let mut counter = 0u8;
        loop {
            let mut h = Sha384::new();
            h.update(b"bulwark-simulated-vcek");
            h.update(self.chip_secret);
            h.update(tcb);
            h.update([counter]);
            if let Ok(key) = p384::ecdsa::SigningKey::from_slice(&h.finalize()) {
                return key;
            }
            counter = counter.wrapping_add(1);
        }
    }

    /// The VCEK certificate for this chip and TCB, signed by the simulated ASK, DER.
    pub fn vcek_cert_der(&self) -> Result<Vec<u8>, SimulatedError> {
        let err = |e: String| SimulatedError::Certificate(e);
        let roots = roots()?;
        let public = self
            .vcek_key()
            .verifying_key()
            .to_public_key_der()
            .map_err(|e| err(e.to_string()))?;
        let spki = SubjectPublicKeyInfoOwned::from_der(public.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        let t = self.vcek_issued_for.unwrap_or(self.tcb);
        let hwid = self.vcek_issued_to.unwrap_or(self.chip_id);
        let mut extensions = vec![
            ext("1.3.6.1.4.1.3704.1.1", int_der(1)?)?,
            ext("1.3.6.1.4.1.3704.1.3.1", int_der(t.bootloader)?)?,
            ext("1.3.6.1.4.1.3704.1.3.2", int_der(t.tee)?)?,
            ext("1.3.6.1.4.1.3704.1.3.3", int_der(t.snp)?)?,
            ext("1.3.6.1.4.1.3704.1.3.8", int_der(t.microcode)?)?,
            ext(
                "1.3.6.1.4.1.3704.1.4",
                OctetString::new(hwid.to_vec())
                    .and_then(|o| o.to_der())
                    .map_err(|e| err(e.to_string()))?,
            )?,
        ];
        for spl in 4..=7 {
            extensions.push(ext(&format!("1.3.6.1.4.1.3704.1.3.{spl}"), int_der(0)?)?);
        }
        let serial = &Sha384::digest(self.chip_id)[..16];
        let mut serial = serial.to_vec();
        serial[0] &= 0x7f;
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&serial).map_err(|e| err(e.to_string()))?,
            signature: pss_algorithm()?,
            issuer: roots.ask.tbs_certificate.subject.clone(),
            validity: validity()?,
            subject: name("CN=SIMULATED-SEV-VCEK,O=Bulwark simulated PSP (not AMD)")?,
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(extensions),
        };
        sign_rsa_pss(&roots.ask_key, tbs)?
            .to_der()
            .map_err(|e| err(e.to_string()))
    }

    /// A signed attestation report with `report_data`, byte-exact in AMD's layout.
    pub fn report(&self, report_data: [u8; 64]) -> Vec<u8> {
        let mut r = match AttestationReport::from_bytes(&[0u8; REPORT_SIZE]) {
            Ok(r) => r,
            Err(_) => unreachable!("a zeroed report has the right size"),
        };
        let tcb = self.tcb.encode(SIMULATED_PRODUCT).to_le_bytes();
        r.set_bytes(0x00, &self.version.to_le_bytes());
        r.set_bytes(0x08, &self.policy.to_le_bytes());
        r.set_bytes(0x30, &self.vmpl.to_le_bytes());
        r.set_bytes(0x34, &1u32.to_le_bytes());
        r.set_bytes(0x38, &tcb);
        r.set_bytes(0x40, &1u64.to_le_bytes()); // SMT enabled, as on most hosts
        r.set_bytes(0x50, &report_data);
        r.set_bytes(0x90, &self.measurement);
        r.set_bytes(0xC0, &self.host_data);
        let report_id =
            sha2::Sha256::digest([&self.chip_secret[..], &self.measurement[..]].concat());
        r.set_bytes(0x140, &report_id);
        r.set_bytes(0x180, &tcb);
        r.set_bytes(0x188, &[0x19, 0x01, 0x01]); // Milan B1
        r.set_bytes(0x1A0, &self.chip_id);
        r.set_bytes(0x1E0, &tcb);
        r.set_bytes(0x1E8, &[0x04, 0x34, 0x01]);
        r.set_bytes(0x1EC, &[0x04, 0x34, 0x01]);
        r.set_bytes(0x1F0, &tcb);
        if self.version >= 5 {
            // LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR.
            r.set_bytes(0x1F8, &1u64.to_le_bytes());
            r.set_bytes(0x200, &1u64.to_le_bytes());
        }
        let signature: p384::ecdsa::Signature = self.vcek_key().sign(&r.as_bytes()[..SIGNED_SIZE]);
        let (sr, ss) = signature.split_bytes();
        let (mut sr, mut ss) = (sr.to_vec(), ss.to_vec());
        sr.reverse();
        ss.reverse();
        r.set_bytes(0x2A0, &sr);
        r.set_bytes(0x2E8, &ss);
        r.as_bytes().to_vec()
    }

    /// Report plus VCEK certificate.
    pub fn evidence(&self, report_data: [u8; 64]) -> Result<Evidence, SimulatedError> {
        Ok(Evidence {
            report: self.report(report_data),
            endorsement_cert: self.vcek_cert_der()?,
        })
    }

    /// A 32-byte key bound to this chip, the guest's measurement and policy, and `context`
    /// (HKDF-SHA-256; on hardware the PSP's MSG_KEY_REQ derives it from the same inputs).
    pub fn sealing_key(&self, context: &[u8]) -> [u8; 32] {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(
            Some(b"bulwark-simulated-sealing-v1"),
            &self.chip_secret,
        );
        let mut info = Vec::with_capacity(48 + 8 + context.len());
        info.extend_from_slice(&self.measurement);
        info.extend_from_slice(&self.policy.to_le_bytes());
        info.extend_from_slice(context);
        let mut out = [0u8; 32];
        // 32 bytes is always a valid HKDF-SHA-256 output length.
        let _ = hk.expand(&info, &mut out);
        out
    }
}
