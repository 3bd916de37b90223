//! The simulated PSP, for development networks (genesis `trust: simulated`) on machines
//! without SEV-SNP.
//!
//! It produces byte-exact AMD-format reports (version 3 or 5, in the Milan, Genoa or Turin
//! layout) signed with ECDSA P-384 by a simulated VCEK, whose certificate carries AMD's TCB,
//! product-name and hardware-id extensions and is signed with RSA-PSS/SHA-384 by a simulated
//! ASK, itself signed by a simulated ARK (which also signs simulated CRLs): the same shapes as
//! AMD's, so the verifier runs every one of its checks on simulated evidence too. The
//! simulated root is the project's own, generated from a published seed
//! (`cargo xtask simulated-root`) and pinned in `bulwark-snp`, separate from AMD's: a policy with
//! `trust: amd` never accepts it, and `trust: simulated` accepts nothing else.
//!
//! Nothing about it is secret: the ARK's and ASK's private keys are in the repository.
//! Simulated evidence proves nothing about where code runs; it exists so that everything else
//! is exercised, and every field of a report can be set to exercise one check.

use crate::certs::EndorsementCert;
use crate::policy::{current_minimum_tcbs, HexBytes};
use crate::report::{
    platform_bits, AttestationReport, FirmwareVersion, Product, Tcb, REPORT_SIZE, SIGNED_SIZE,
};
use crate::verify::Evidence;
use p384::ecdsa::signature::Signer;
use p384::pkcs8::EncodePublicKey;
use rand_chacha::rand_core::SeedableRng;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use sha2::{Digest, Sha384};
use std::str::FromStr;
use std::sync::OnceLock;
use thiserror::Error;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString};
use x509_cert::der::{Decode, Encode, EncodePem};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

pub use bulwark_snp::simulated_root::{
    chain_to_simulated_root, simulated_ark, simulated_ask_serial, SIMULATED_ARK_PEM,
    SIMULATED_ASK_PEM, SIMULATED_PRODUCT, SIMULATED_VCEK_CN,
};

/// The simulated ASK's private key. Public on purpose: simulated evidence proves nothing.
const SIMULATED_ASK_KEY_PEM: &str = include_str!("../simulated/ask-key-NOT-SECRET.pem");
/// The simulated ARK's private key (it signs simulated CRLs). Public on purpose.
pub const SIMULATED_ARK_KEY_PEM: &str = include_str!("../simulated/ark-key-NOT-SECRET.pem");

/// The seed the committed simulated root was generated from.
pub const SIMULATED_ROOT_SEED: &str = "bulwark simulated AMD root v1 (not AMD, not secret)";

/// Why the simulated PSP could not do something.
#[derive(Debug, Error)]
pub enum SimulatedError {
    /// The pinned simulated root did not load or verify.
    #[error("the simulated root is unusable: {0}")]
    Root(String),
    /// Building or signing a certificate or CRL failed.
    #[error("certificate: {0}")]
    Certificate(String),
}

struct SimRoots {
    ark: &'static Certificate,
    ask: &'static Certificate,
    ask_key: rsa::RsaPrivateKey,
}

fn roots() -> Result<&'static SimRoots, SimulatedError> {
    static ROOTS: OnceLock<Result<SimRoots, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let root = bulwark_snp::simulated_root::simulated_root()?;
            let ask_key = rsa::RsaPrivateKey::from_pkcs8_pem(SIMULATED_ASK_KEY_PEM)
                .map_err(|e| e.to_string())?;
            Ok(SimRoots {
                ark: &root.ark,
                ask: &root.ask,
                ask_key,
            })
        })
        .as_ref()
        .map_err(|e| SimulatedError::Root(e.clone()))
}

fn name(dn: &str) -> Result<Name, SimulatedError> {
    Name::from_str(dn).map_err(|e| SimulatedError::Certificate(e.to_string()))
}

fn time(secs: u64) -> Result<Time, SimulatedError> {
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))
        .map(Time::GeneralTime)
        .map_err(|e| SimulatedError::Certificate(e.to_string()))
}

/// 2020-01-01 .. 2070-01-01, like AMD's long-lived roots.
const LONG_VALIDITY: (u64, u64) = (1_577_836_800, 3_155_760_000);

fn validity((not_before, not_after): (u64, u64)) -> Result<Validity, SimulatedError> {
    Ok(Validity {
        not_before: time(not_before)?,
        not_after: time(not_after)?,
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

/// Signs `msg` with RSA-PSS/SHA-384 (salt 48 bytes, as AMD) using a deterministic RNG seeded
/// from the message, so the same inputs give the same signature.
fn rsa_pss_sign(key: &rsa::RsaPrivateKey, msg: &[u8]) -> Vec<u8> {
    let seed: [u8; 32] = sha2::Sha256::digest(msg).into();
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    let signer = rsa::pss::BlindedSigningKey::<Sha384>::new(key.clone());
    signer.sign_with_rng(&mut rng, msg).to_bytes().to_vec()
}

fn sign_rsa_pss(
    key: &rsa::RsaPrivateKey,
    tbs: TbsCertificate,
) -> Result<Certificate, SimulatedError> {
    let err = |e: String| SimulatedError::Certificate(e);
    let msg = tbs.to_der().map_err(|e| err(e.to_string()))?;
    let signature = rsa_pss_sign(key, &msg);
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

/// A simulated CRL signed by the simulated ARK: `revoked` serial numbers, issued at
/// `this_update` (Unix seconds), valid until `next_update`.
pub fn sign_crl(
    revoked: &[Vec<u8>],
    this_update: u64,
    next_update: u64,
) -> Result<Vec<u8>, SimulatedError> {
    let err = |e: String| SimulatedError::Certificate(e);
    let roots = roots()?;
    let ark_key = rsa::RsaPrivateKey::from_pkcs8_pem(SIMULATED_ARK_KEY_PEM)
        .map_err(|e| err(e.to_string()))?;
    let entries = revoked
        .iter()
        .map(|serial| {
            Ok(RevokedCert {
                serial_number: SerialNumber::new(serial).map_err(|e| err(e.to_string()))?,
                revocation_date: time(this_update)?,
                crl_entry_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, SimulatedError>>()?;
    let tbs = TbsCertList {
        version: Version::V2,
        signature: pss_algorithm()?,
        issuer: roots.ark.tbs_certificate.subject.clone(),
        this_update: time(this_update)?,
        next_update: Some(time(next_update)?),
        revoked_certificates: (!entries.is_empty()).then_some(entries),
        crl_extensions: None,
    };
    let msg = tbs.to_der().map_err(|e| err(e.to_string()))?;
    let signature = rsa_pss_sign(&ark_key, &msg);
    CertificateList {
        signature_algorithm: tbs.signature.clone(),
        tbs_cert_list: tbs,
        signature: BitString::from_bytes(&signature).map_err(|e| err(e.to_string()))?,
    }
    .to_der()
    .map_err(|e| err(e.to_string()))
}

/// A freshly generated simulated root.
pub struct GeneratedRoot {
    /// ARK certificate, PEM.
    pub ark_pem: String,
    /// ASK certificate, PEM.
    pub ask_pem: String,
    /// ARK private key, PKCS#8 PEM.
    pub ark_key_pem: String,
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
            validity: validity(LONG_VALIDITY)?,
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
    let key_pem = |k: &rsa::RsaPrivateKey| -> Result<String, SimulatedError> {
        Ok(k.to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| err(e.to_string()))?
            .to_string())
    };
    Ok(GeneratedRoot {
        ark_pem: pem(&ark)?,
        ask_pem: pem(&ask)?,
        ark_key_pem: key_pem(&ark_key)?,
        ask_key_pem: key_pem(&ask_key)?,
    })
}

/// A simulated PSP for one simulated chip and one launched guest. Every field is what the
/// report (or the VCEK certificate) will say; tests set one of them wrong to hit one check.
#[derive(Clone, Debug)]
pub struct SimulatedPsp {
    chip_secret: [u8; 32],
    /// The product line whose report layout, CPUID and VCEK extensions are used.
    pub product: Product,
    /// CHIP_ID this chip reports (derived from the secret by default; Turin: 8 bytes, zero
    /// padded).
    pub chip_id: [u8; 64],
    /// CURRENT_TCB (and, unless set apart below, committed, reported and launch TCB).
    pub tcb: Tcb,
    /// REPORTED_TCB when it differs from the current TCB (the VCEK is issued for it).
    pub reported_tcb: Option<Tcb>,
    /// COMMITTED_TCB when it differs from the current TCB.
    pub committed_tcb: Option<Tcb>,
    /// LAUNCH_TCB when it differs from the current TCB.
    pub launch_tcb: Option<Tcb>,
    /// The running firmware.
    pub current_firmware: FirmwareVersion,
    /// The committed firmware.
    pub committed_firmware: FirmwareVersion,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// CPUID family, model, stepping when not the product's own.
    pub cpuid: Option<(u8, u8, u8)>,
    /// The guest's launch measurement.
    pub measurement: [u8; 48],
    /// The guest policy.
    pub policy: u64,
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST; `Some` also sets AUTHOR_KEY_EN.
    pub author_key_digest: Option<[u8; 48]>,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// The VMPL the guest asks from.
    pub vmpl: u32,
    /// Report version: 3, or 5 (adds the mitigation vectors).
    pub version: u32,
    /// LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR (version 5).
    pub mitigations: (u64, u64),
    /// The TCB written into the VCEK certificate, when a (misbehaving) host hands out a VCEK
    /// issued for another TCB; `None`: the reported TCB.
    pub vcek_issued_for: Option<Tcb>,
    /// The hardware id written into the VCEK certificate, when a host hands out another
    /// chip's VCEK (or one with a malformed id); `None`: this chip's.
    pub vcek_issued_to: Option<Vec<u8>>,
    /// The VCEK certificate's validity window (Unix seconds); `None`: 2020–2070.
    pub vcek_validity: Option<(u64, u64)>,
    /// The issuer name written into the VCEK certificate (an RFC 4514 string), when a host
    /// hands out a certificate that names another issuer; `None`: the simulated ASK's. It is
    /// signed by the simulated ASK either way.
    pub vcek_issuer: Option<String>,
    /// The subject name written into the VCEK certificate; `None`: AMD's shape with the
    /// simulated common name.
    pub vcek_subject: Option<String>,
}

impl SimulatedPsp {
    /// A Milan chip from its secret, running a guest with `measurement` under the default
    /// policy (ABI 0.0, SMT allowed, no debug, no migration agent) at the strict template's
    /// Milan TCB, with SMT on and the memory alias check done.
    pub fn new(chip_secret: [u8; 32], measurement: [u8; 48]) -> Self {
        Self::for_product(chip_secret, measurement, Product::Milan)
    }

    /// A chip of `product`, otherwise as [`SimulatedPsp::new`]; its TCB is the strict
    /// template's floor for that product line (Turin, which the template does not admit:
    /// SPL 1 everywhere).
    pub fn for_product(chip_secret: [u8; 32], measurement: [u8; 48], product: Product) -> Self {
        let mut h = Sha384::new();
        h.update(b"bulwark-simulated-chip-id");
        h.update(chip_secret);
        let a = h.finalize();
        let mut chip_id = [0u8; 64];
        chip_id[..48].copy_from_slice(&a);
        chip_id[48..].copy_from_slice(&sha2::Sha256::digest(a)[..16]);
        chip_id[product.hwid_len()..].fill(0);
        let tcb = match product {
            Product::Turin => Tcb {
                bootloader: 1,
                tee: 1,
                snp: 1,
                microcode: 1,
                fmc: Some(1),
            },
            _ => current_minimum_tcbs()
                .get(&product)
                .map(|r| r.minimum_tcb)
                .unwrap_or_default(),
        };
        let firmware = FirmwareVersion {
            major: 1,
            minor: 55,
            build: 29,
        };
        SimulatedPsp {
            chip_secret,
            product,
            chip_id,
            tcb,
            reported_tcb: None,
            committed_tcb: None,
            launch_tcb: None,
            current_firmware: firmware,
            committed_firmware: firmware,
            platform_info: platform_bits::SMT_EN | platform_bits::ALIAS_CHECK_COMPLETE,
            cpuid: None,
            measurement,
            policy: 0x30000,
            host_data: [0; 32],
            family_id: [0; 16],
            image_id: [0; 16],
            id_key_digest: [0; 48],
            author_key_digest: None,
            guest_svn: 0,
            vmpl: 0,
            version: 3,
            mitigations: (0, 0),
            vcek_issued_for: None,
            vcek_issued_to: None,
            vcek_validity: None,
            vcek_issuer: None,
            vcek_subject: None,
        }
    }

    fn reported(&self) -> Tcb {
        self.reported_tcb.unwrap_or(self.tcb)
    }

    /// The CPUID (family, model, stepping) this product line's reports carry.
    fn product_cpuid(&self) -> (u8, u8, u8) {
        match self.product {
            Product::Milan => (0x19, 0x01, 0x01),
            Product::Genoa => (0x19, 0x11, 0x01),
            Product::Turin => (0x1A, 0x02, 0x01),
        }
    }

    /// The VCEK's private key: derived from the chip secret and the reported TCB, as AMD's is.
    fn vcek_key(&self) -> p384::ecdsa::SigningKey {
        let tcb = self.reported().encode(self.product).to_le_bytes();
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

    /// The VCEK certificate for this chip and reported TCB, signed by the simulated ASK, DER.
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
        let t = self.vcek_issued_for.unwrap_or(self.reported());
        let hwid = self
            .vcek_issued_to
            .clone()
            .unwrap_or_else(|| self.chip_id[..self.product.hwid_len()].to_vec());
        let product_name = Ia5String::new(self.product.name())
            .and_then(|s| s.to_der())
            .map_err(|e| err(e.to_string()))?;
        let mut extensions = vec![
            ext("1.3.6.1.4.1.3704.1.1", int_der(1)?)?,
            ext("1.3.6.1.4.1.3704.1.2", product_name)?,
            ext("1.3.6.1.4.1.3704.1.3.1", int_der(t.bootloader)?)?,
            ext("1.3.6.1.4.1.3704.1.3.2", int_der(t.tee)?)?,
            ext("1.3.6.1.4.1.3704.1.3.3", int_der(t.snp)?)?,
            ext("1.3.6.1.4.1.3704.1.3.8", int_der(t.microcode)?)?,
            // AMD writes the hardware id raw, without an OCTET STRING header.
            ext("1.3.6.1.4.1.3704.1.4", hwid)?,
        ];
        if let Some(fmc) = t.fmc {
            extensions.push(ext("1.3.6.1.4.1.3704.1.3.9", int_der(fmc)?)?);
        }
        for spl in 5..=7 {
            extensions.push(ext(&format!("1.3.6.1.4.1.3704.1.3.{spl}"), int_der(0)?)?);
        }
        let serial = &Sha384::digest(self.chip_id)[..16];
        let mut serial = serial.to_vec();
        serial[0] &= 0x7f;
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&serial).map_err(|e| err(e.to_string()))?,
            signature: pss_algorithm()?,
            issuer: match &self.vcek_issuer {
                Some(dn) => name(dn)?,
                None => roots.ask.tbs_certificate.subject.clone(),
            },
            validity: validity(self.vcek_validity.unwrap_or(LONG_VALIDITY))?,
            subject: name(self.vcek_subject.as_deref().unwrap_or(&format!(
                "CN={SIMULATED_VCEK_CN},O=Bulwark simulated PSP (not AMD)"
            )))?,
            subject_public_key_info: spki,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(extensions),
        };
        sign_rsa_pss(&roots.ask_key, tbs)?
            .to_der()
            .map_err(|e| err(e.to_string()))
    }

    /// The VCEK certificate's serial number (normalized).
    pub fn vcek_serial(&self) -> Result<Vec<u8>, SimulatedError> {
        let cert = EndorsementCert::parse(&self.vcek_cert_der()?)
            .map_err(|e| SimulatedError::Certificate(e.to_string()))?;
        Ok(cert.serial())
    }

    /// A signed attestation report with `report_data`, byte-exact in AMD's layout.
    pub fn report(&self, report_data: [u8; 64]) -> Vec<u8> {
        let mut r = match AttestationReport::from_bytes(&[0u8; REPORT_SIZE]) {
            Ok(r) => r,
            Err(_) => unreachable!("a zeroed report has the right size"),
        };
        let tcb = |t: Tcb| t.encode(self.product).to_le_bytes();
        let fw = |f: FirmwareVersion| [f.build, f.minor, f.major];
        r.set_bytes(0x00, &self.version.to_le_bytes());
        r.set_bytes(0x04, &self.guest_svn.to_le_bytes());
        r.set_bytes(0x08, &self.policy.to_le_bytes());
        r.set_bytes(0x10, &self.family_id);
        r.set_bytes(0x20, &self.image_id);
        r.set_bytes(0x30, &self.vmpl.to_le_bytes());
        r.set_bytes(0x34, &1u32.to_le_bytes());
        r.set_bytes(0x38, &tcb(self.tcb));
        r.set_bytes(0x40, &self.platform_info.to_le_bytes());
        let author_key_en = u32::from(self.author_key_digest.is_some());
        r.set_bytes(0x48, &author_key_en.to_le_bytes());
        r.set_bytes(0x50, &report_data);
        r.set_bytes(0x90, &self.measurement);
        r.set_bytes(0xC0, &self.host_data);
        r.set_bytes(0xE0, &self.id_key_digest);
        r.set_bytes(0x110, &self.author_key_digest.unwrap_or([0; 48]));
        let report_id =
            sha2::Sha256::digest([&self.chip_secret[..], &self.measurement[..]].concat());
        r.set_bytes(0x140, &report_id);
        // No migration agent: REPORT_ID_MA is all ones, as AMD writes it.
        r.set_bytes(0x160, &[0xff; 32]);
        r.set_bytes(0x180, &tcb(self.reported()));
        let (family, model, stepping) = self.cpuid.unwrap_or(self.product_cpuid());
        r.set_bytes(0x188, &[family, model, stepping]);
        r.set_bytes(0x1A0, &self.chip_id);
        r.set_bytes(0x1E0, &tcb(self.committed_tcb.unwrap_or(self.tcb)));
        r.set_bytes(0x1E8, &fw(self.current_firmware));
        r.set_bytes(0x1EC, &fw(self.committed_firmware));
        r.set_bytes(0x1F0, &tcb(self.launch_tcb.unwrap_or(self.tcb)));
        if self.version >= 5 {
            r.set_bytes(0x1F8, &self.mitigations.0.to_le_bytes());
            r.set_bytes(0x200, &self.mitigations.1.to_le_bytes());
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

    /// This chip's CHIP_ID as a policy value.
    pub fn chip_id_hex(&self) -> HexBytes<64> {
        HexBytes(self.chip_id)
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
