//! Pinned roots and endorsement-key certificates.
//!
//! The only trust roots are AMD's ARKs built into the `sev` crate (Milan, Genoa, Turin) with
//! their ASKs, and the ASVKs (VLEK roots) from AMD's published chains in `roots/`, each
//! accepted only after it verifies under the builtin ARK of its product line and carries the
//! names AMD gives it. A certificate the host supplies is never a root: the endorsement key
//! (VCEK/VLEK) must verify under one of these, whatever else came with it.

use crate::report::Product;
use p384::ecdsa::VerifyingKey;
use sev::certs::snp::{builtin, Certificate as SevCertificate, Verifiable};
use std::sync::OnceLock;
use x509_cert::der::{Decode, Encode};
use x509_cert::name::Name;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

const ASVK_PEM: [(Product, &[u8]); 3] = [
    (
        Product::Milan,
        include_bytes!("../roots/milan_ask_ark_asvk.pem"),
    ),
    (
        Product::Genoa,
        include_bytes!("../roots/genoa_ask_ark_asvk.pem"),
    ),
    (
        Product::Turin,
        include_bytes!("../roots/turin_ask_ark_asvk.pem"),
    ),
];

/// Which kind of endorsement key a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum KeyKind {
    /// Versioned Chip Endorsement Key, signed by the ASK.
    Vcek,
    /// Versioned Loaded Endorsement Key, signed by the ASVK.
    Vlek,
}

impl KeyKind {
    /// The common name AMD gives this kind of endorsement-key certificate.
    pub fn amd_common_name(self) -> &'static str {
        match self {
            KeyKind::Vcek => "SEV-VCEK",
            KeyKind::Vlek => "SEV-VLEK",
        }
    }
}

/// The pinned chain of one product line.
pub struct ProductRoots {
    /// The product line.
    pub product: Product,
    /// AMD Root Key.
    pub ark: SevCertificate,
    /// AMD SEV Key: signs VCEKs.
    pub ask: SevCertificate,
    /// AMD SEV VLEK Key: signs VLEKs (`None` if its published chain did not verify).
    pub asvk: Option<SevCertificate>,
}

/// Loads and cross-checks the pinned roots once: each ARK is self-signed and named
/// `ARK-{product}`, signs its ASK (`SEV-{product}`) and ASVK (`SEV-VLEK-{product}`), and each
/// intermediate names the ARK as its issuer.
pub fn amd_roots() -> &'static [ProductRoots] {
    static ROOTS: OnceLock<Vec<ProductRoots>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut out = Vec::new();
        for product in Product::ALL {
            let (ark, ask) = match product {
                Product::Milan => (builtin::milan::ark(), builtin::milan::ask()),
                Product::Genoa => (builtin::genoa::ark(), builtin::genoa::ask()),
                Product::Turin => (builtin::turin::ark(), builtin::turin::ask()),
            };
            let (Ok(ark), Ok(ask)) = (ark, ask) else {
                continue;
            };
            let ark_x509 = x509(&ark);
            let ark_name = format!("ARK-{}", product.name());
            let ask_name = format!("SEV-{}", product.name());
            if (&ark, &ark).verify().is_err()
                || (&ark, &ask).verify().is_err()
                || common_name(&ark_x509.tbs_certificate.subject).as_deref() != Some(&ark_name)
                || !issued_by(&x509(&ask), &ark_x509, &ask_name)
            {
                continue;
            }
            let asvk = ASVK_PEM
                .iter()
                .find(|(p, _)| *p == product)
                .and_then(|(_, pem)| asvk_from_published_chain(pem, &ark, product));
            out.push(ProductRoots {
                product,
                ark,
                ask,
                asvk,
            });
        }
        out
    })
}

fn x509(cert: &SevCertificate) -> Certificate {
    Certificate::from(cert.clone())
}

/// Whether `cert` names `issuer` as its issuer, has the common name `cn`, and is version 3.
fn issued_by(cert: &Certificate, issuer: &Certificate, cn: &str) -> bool {
    cert.tbs_certificate.version == x509_cert::Version::V3
        && cert.tbs_certificate.issuer == issuer.tbs_certificate.subject
        && common_name(&cert.tbs_certificate.subject).as_deref() == Some(cn)
}

/// The ASVK in AMD's published chain: the certificate named `SEV-VLEK-{product}` that the
/// pinned ARK signed.
fn asvk_from_published_chain(
    pem: &[u8],
    ark: &SevCertificate,
    product: Product,
) -> Option<SevCertificate> {
    let certs = Certificate::load_pem_chain(pem).ok()?;
    let name = format!("SEV-VLEK-{}", product.name());
    certs.into_iter().find_map(|c| {
        if !issued_by(&c, &x509(ark), &name) {
            return None;
        }
        let sev_cert = SevCertificate::from(c);
        (ark, &sev_cert).verify().ok().map(|_| sev_cert)
    })
}

/// The common name (CN) of a distinguished name, if it has exactly one.
pub fn common_name(name: &Name) -> Option<String> {
    let mut found = None;
    for rdn in name.0.iter() {
        for attr in rdn.0.iter() {
            if attr.oid == oid::COMMON_NAME {
                if found.is_some() {
                    return None;
                }
                found = Some(attribute_string(&attr.value)?);
            }
        }
    }
    found
}

fn attribute_string(value: &x509_cert::der::Any) -> Option<String> {
    use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
    value
        .decode_as::<Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| {
            value
                .decode_as::<PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .or_else(|_| {
            value
                .decode_as::<Ia5StringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .ok()
}

/// The attributes of a name other than its common name, DER-encoded, in order.
fn attributes_but_cn(name: &Name) -> Vec<Vec<u8>> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|a| a.oid != oid::COMMON_NAME)
        .filter_map(|a| a.to_der().ok())
        .collect()
}

/// Why a certificate cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum CertError {
    /// Not DER or PEM X.509.
    #[error("not an X.509 certificate: {0}")]
    Malformed(String),
    /// The public key is not a P-384 key.
    #[error("the endorsement key is not an ECDSA P-384 key")]
    NotP384,
}

/// An endorsement-key certificate (VCEK or VLEK) as offered by the host.
#[derive(Clone, Debug)]
pub struct EndorsementCert {
    cert: Certificate,
    der: Vec<u8>,
}

/// OIDs of AMD's VCEK/VLEK extensions (VCEK spec, "Certificate Extensions") and of the
/// algorithms and attributes the checks name.
pub mod oid {
    use x509_cert::spki::ObjectIdentifier;

    /// Structure version of the extensions.
    pub const STRUCT_VERSION: &str = "1.3.6.1.4.1.3704.1.1";
    /// Product name, e.g. `Milan-B0` (IA5String).
    pub const PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
    /// Bootloader SPL.
    pub const BOOTLOADER: &str = "1.3.6.1.4.1.3704.1.3.1";
    /// PSP OS (TEE) SPL.
    pub const TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
    /// SNP firmware SPL.
    pub const SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
    /// Microcode SPL.
    pub const MICROCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
    /// FMC SPL (Turin).
    pub const FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
    /// Hardware id (VCEK).
    pub const HWID: &str = "1.3.6.1.4.1.3704.1.4";
    /// Cloud service provider id (VLEK, IA5String).
    pub const CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";

    /// id-at-commonName.
    pub const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    /// RSASSA-PSS.
    pub const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
    /// MGF1.
    pub const MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
    /// SHA-384.
    pub const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
    /// id-ecPublicKey.
    pub const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// secp384r1.
    pub const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
}

/// An extension value: AMD encodes SPLs as DER INTEGERs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtValue {
    /// A DER INTEGER that fits a u64.
    Int(u64),
    /// Anything else: the raw extension value.
    Bytes(Vec<u8>),
}

/// Decodes an SPL-style extension value: a short DER INTEGER, else the raw bytes.
pub fn decode_ext(value: &[u8]) -> ExtValue {
    if value.len() >= 3 && value[0] == 0x02 && usize::from(value[1]) == value.len() - 2 {
        let contents = &value[2..];
        // Non-negative and at most 8 significant bytes (a leading zero byte is allowed).
        let significant = match contents.first() {
            Some(0) => &contents[1..],
            Some(b) if b & 0x80 != 0 => return ExtValue::Bytes(value.to_vec()),
            _ => contents,
        };
        if significant.len() <= 8 {
            let n = significant
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b));
            return ExtValue::Int(n);
        }
    }
    ExtValue::Bytes(value.to_vec())
}

/// Reads a hardware id as AMD's KDS writes it: `len` raw bytes, or (should AMD ever tag it)
/// a DER OCTET STRING of exactly `len` bytes. Raw comes first: a raw id may itself start with
/// bytes that look like an OCTET STRING header.
pub fn decode_hwid(value: &[u8], len: usize) -> Option<Vec<u8>> {
    if value.len() == len {
        return Some(value.to_vec());
    }
    let octets = x509_cert::der::asn1::OctetString::from_der(value).ok()?;
    (octets.as_bytes().len() == len).then(|| octets.as_bytes().to_vec())
}

/// Reads an IA5String extension value (product name, CSP id).
pub fn decode_ia5(value: &[u8]) -> Option<String> {
    x509_cert::der::asn1::Ia5StringRef::from_der(value)
        .ok()
        .map(|s| s.as_str().to_string())
}

/// Checks that an algorithm identifier is RSASSA-PSS with SHA-384, MGF1 with SHA-384, a
/// 48-byte salt and the standard trailer: the only parameters AMD signs with.
pub fn check_pss_parameters(algorithm: &AlgorithmIdentifierOwned) -> Result<(), String> {
    use rsa::pkcs1::{RsaPssParams, TrailerField};
    if algorithm.oid != oid::RSASSA_PSS {
        return Err(format!(
            "signature algorithm {} is not RSASSA-PSS",
            algorithm.oid
        ));
    }
    let params = algorithm
        .parameters
        .as_ref()
        .ok_or("RSASSA-PSS without parameters")?
        .to_der()
        .map_err(|e| e.to_string())?;
    let params = RsaPssParams::from_der(&params).map_err(|e| format!("PSS parameters: {e}"))?;
    let no_params = |p: Option<x509_cert::der::AnyRef<'_>>| {
        p.is_none_or(|p| p == x509_cert::der::AnyRef::from(x509_cert::der::asn1::Null))
    };
    if params.hash.oid != oid::SHA384 || !no_params(params.hash.parameters) {
        return Err(format!("PSS hash {} is not SHA-384", params.hash.oid));
    }
    let mgf_hash = params.mask_gen.parameters.as_ref();
    if params.mask_gen.oid != oid::MGF1
        || mgf_hash.is_none_or(|h| h.oid != oid::SHA384 || !no_params(h.parameters))
    {
        return Err("PSS mask generation is not MGF1 with SHA-384".into());
    }
    if params.salt_len != 48 {
        return Err(format!("PSS salt length {} is not 48", params.salt_len));
    }
    if params.trailer_field != TrailerField::BC {
        return Err("PSS trailer field is not 1".into());
    }
    Ok(())
}

/// Whether `signer_spki` (an RSA key) made `signature` over `message` with RSA-PSS/SHA-384
/// and a 48-byte salt.
pub fn rsa_pss_sha384_verifies(
    signer_spki: &x509_cert::spki::SubjectPublicKeyInfoOwned,
    message: &[u8],
    signature: &[u8],
) -> bool {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    let Ok(spki) = signer_spki.to_der() else {
        return false;
    };
    let Ok(key) = rsa::RsaPublicKey::from_public_key_der(&spki) else {
        return false;
    };
    let Ok(signature) = rsa::pss::Signature::try_from(signature) else {
        return false;
    };
    rsa::pss::VerifyingKey::<sha2::Sha384>::new(key)
        .verify(message, &signature)
        .is_ok()
}

/// Seconds since the Unix epoch of an X.509 time.
pub fn unix(time: &x509_cert::time::Time) -> u64 {
    time.to_unix_duration().as_secs()
}

/// A certificate's validity window, in Unix seconds.
pub fn validity(cert: &Certificate) -> (u64, u64) {
    let v = &cert.tbs_certificate.validity;
    (unix(&v.not_before), unix(&v.not_after))
}

/// A serial number without leading zero bytes, so equal integers compare equal.
pub fn normalized_serial(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// What a successful chain check proves about an endorsement key: which product line, and
/// the intermediate (ASK or ASVK) and root it hangs from, for the validity and revocation
/// checks that follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// The product line.
    pub product: Product,
    /// The signing intermediate's serial number (normalized).
    pub intermediate_serial: Vec<u8>,
    /// The signing intermediate's validity window.
    pub intermediate_validity: (u64, u64),
    /// The root's validity window.
    pub root_validity: (u64, u64),
}

impl EndorsementCert {
    /// Parses a DER or PEM certificate. For a PEM stack, the first certificate is taken (AMD's
    /// and Azure's stacks put the endorsement key first).
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        let cert = if bytes.starts_with(b"-----BEGIN") {
            Certificate::load_pem_chain(bytes)
                .map_err(|e| CertError::Malformed(e.to_string()))?
                .into_iter()
                .next()
                .ok_or_else(|| CertError::Malformed("empty PEM".into()))?
        } else if bytes.first() == Some(&0x30) {
            Certificate::from_der(bytes).map_err(|e| CertError::Malformed(e.to_string()))?
        } else {
            // Tolerate leading whitespace in PEM files.
            let trimmed: &[u8] = bytes.trim_ascii_start();
            if trimmed.starts_with(b"-----BEGIN") {
                return Self::parse(trimmed);
            }
            return Err(CertError::Malformed("neither DER nor PEM".into()));
        };
        let der = cert
            .to_der()
            .map_err(|e| CertError::Malformed(e.to_string()))?;
        Ok(EndorsementCert { cert, der })
    }

    /// DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The parsed certificate.
    pub fn x509(&self) -> &Certificate {
        &self.cert
    }

    /// The raw value of the certificate's extension `oid`.
    pub fn extension_bytes(&self, oid: &str) -> Option<&[u8]> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// The certificate's extension `oid`, decoded as an SPL.
    pub fn extension(&self, oid: &str) -> Option<ExtValue> {
        self.extension_bytes(oid).map(decode_ext)
    }

    /// Whether this certificate carries VLEK extensions (the CSP id).
    pub fn looks_like_vlek(&self) -> bool {
        self.extension_bytes(oid::CSP_ID).is_some()
    }

    /// The cloud service provider a VLEK was issued to.
    pub fn csp_id(&self) -> Option<String> {
        self.extension_bytes(oid::CSP_ID).and_then(decode_ia5)
    }

    /// The product name the certificate states (e.g. `Milan-B0`).
    pub fn product_name(&self) -> Option<String> {
        self.extension_bytes(oid::PRODUCT_NAME).and_then(decode_ia5)
    }

    /// The P-384 public key; its SubjectPublicKeyInfo must name id-ecPublicKey on secp384r1.
    pub fn verifying_key(&self) -> Result<VerifyingKey, CertError> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<x509_cert::spki::ObjectIdentifier>().ok());
        if spki.algorithm.oid != oid::EC_PUBLIC_KEY || curve != Some(oid::SECP384R1) {
            return Err(CertError::NotP384);
        }
        VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
            .map_err(|_| CertError::NotP384)
    }

    /// The SPL of a TCB component named in this certificate.
    pub fn spl(&self, component: &str) -> Option<u64> {
        let oid = match component {
            "bootloader" => oid::BOOTLOADER,
            "tee" => oid::TEE,
            "snp" => oid::SNP,
            "microcode" => oid::MICROCODE,
            "fmc" => oid::FMC,
            _ => return None,
        };
        match self.extension(oid)? {
            ExtValue::Int(n) => Some(n),
            ExtValue::Bytes(_) => None,
        }
    }

    /// The hardware id (chip id) the VCEK was issued to, exactly `product`'s length.
    pub fn hardware_id(&self, product: Product) -> Option<Vec<u8>> {
        decode_hwid(self.extension_bytes(oid::HWID)?, product.hwid_len())
    }

    /// The hardware id extension's raw value (for messages).
    pub fn hardware_id_raw(&self) -> Option<&[u8]> {
        self.extension_bytes(oid::HWID)
    }

    /// X.509 version (3 is the only one AMD issues).
    pub fn version(&self) -> x509_cert::Version {
        self.cert.tbs_certificate.version
    }

    /// Serial number, normalized.
    pub fn serial(&self) -> Vec<u8> {
        normalized_serial(self.cert.tbs_certificate.serial_number.as_bytes())
    }

    /// Validity window, Unix seconds.
    pub fn validity(&self) -> (u64, u64) {
        validity(&self.cert)
    }

    /// Checks the signature algorithm: the outer and the signed one are identical and are
    /// RSASSA-PSS with AMD's parameters.
    pub fn check_signature_parameters(&self) -> Result<(), String> {
        if self.cert.signature_algorithm != self.cert.tbs_certificate.signature {
            return Err("the signed and the outer signature algorithms differ".into());
        }
        check_pss_parameters(&self.cert.signature_algorithm)
    }

    /// Checks the subject: common name `cn`, and otherwise the same attributes as the issuer
    /// (AMD's location and organisation). Returns the subject found when it does not fit.
    pub fn check_subject(&self, cn: &str) -> Result<(), String> {
        let tbs = &self.cert.tbs_certificate;
        if common_name(&tbs.subject).as_deref() != Some(cn)
            || attributes_but_cn(&tbs.subject) != attributes_but_cn(&tbs.issuer)
        {
            return Err(tbs.subject.to_string());
        }
        Ok(())
    }

    /// The product line whose pinned ASK (VCEK) or ASVK (VLEK) signed this certificate: the
    /// one whose subject is this certificate's issuer (names are compared first, so at most
    /// one RSA verification runs). `Err(true)`: an intermediate has that name but did not
    /// sign; `Err(false)`: no pinned intermediate has that name.
    pub fn chain_to_pinned_root(&self, kind: KeyKind) -> Result<Chain, bool> {
        let issuer = &self.cert.tbs_certificate.issuer;
        let mut named = false;
        for roots in amd_roots() {
            let Some(signer) = (match kind {
                KeyKind::Vcek => Some(&roots.ask),
                KeyKind::Vlek => roots.asvk.as_ref(),
            }) else {
                continue;
            };
            let signer_x509 = x509(signer);
            if signer_x509.tbs_certificate.subject != *issuer {
                continue;
            }
            named = true;
            if self.signed_by(&signer_x509) {
                return Ok(Chain {
                    product: roots.product,
                    intermediate_serial: normalized_serial(
                        signer_x509.tbs_certificate.serial_number.as_bytes(),
                    ),
                    intermediate_validity: validity(&signer_x509),
                    root_validity: validity(&x509(&roots.ark)),
                });
            }
        }
        Err(named)
    }

    /// Whether `issuer` (an RSA-PSS signer certificate, e.g. a simulated ASK) signed this
    /// certificate.
    pub fn signed_by(&self, issuer: &Certificate) -> bool {
        let signer = SevCertificate::from(issuer.clone());
        (&signer, &SevCertificate::from(self.cert.clone()))
            .verify()
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_product_has_pinned_ark_ask_and_asvk_with_amds_names() {
        let roots = amd_roots();
        assert_eq!(roots.len(), 3);
        for r in roots {
            let p = r.product.name();
            assert_eq!(
                common_name(&x509(&r.ark).tbs_certificate.subject),
                Some(format!("ARK-{p}"))
            );
            assert_eq!(
                common_name(&x509(&r.ask).tbs_certificate.subject),
                Some(format!("SEV-{p}"))
            );
            let asvk = r.asvk.as_ref().map(x509);
            assert_eq!(
                asvk.map(|a| common_name(&a.tbs_certificate.subject)),
                Some(Some(format!("SEV-VLEK-{p}"))),
                "{p} ASVK"
            );
        }
    }

    #[test]
    fn extension_values_decode_integers_and_leave_other_bytes_raw() {
        assert_eq!(decode_ext(&[0x02, 0x01, 0x73]), ExtValue::Int(0x73));
        assert_eq!(decode_ext(&[0x02, 0x02, 0x00, 0xd2]), ExtValue::Int(0xd2));
        assert_eq!(
            decode_ext(&[0x02, 0x01, 0x80]),
            ExtValue::Bytes(vec![0x02, 0x01, 0x80]),
            "negative"
        );
        assert_eq!(decode_ext(&[0xab; 64]), ExtValue::Bytes(vec![0xab; 64]));
    }

    #[test]
    fn a_raw_hwid_that_looks_like_an_octet_string_header_is_taken_raw() {
        // 64 raw bytes starting 04 3E: as a TLV this would be a 62-byte OCTET STRING.
        let mut raw = vec![0x04, 0x3E];
        raw.extend([0x5a; 62]);
        assert_eq!(decode_hwid(&raw, 64), Some(raw.clone()));
        // Turin: 8 raw bytes starting 04 06.
        let turin = [0x04, 0x06, 1, 2, 3, 4, 5, 6];
        assert_eq!(decode_hwid(&turin, 8), Some(turin.to_vec()));
        // A tagged id of the right length is unwrapped; any other length is refused.
        let mut tagged = vec![0x04, 0x08];
        tagged.extend([7; 8]);
        assert_eq!(decode_hwid(&tagged, 8), Some(vec![7; 8]));
        assert_eq!(decode_hwid(&tagged, 64), None);
        assert_eq!(decode_hwid(&[1; 8], 64), None, "an 8-byte id for Milan");
    }

    #[test]
    fn amds_pss_parameters_pass_and_others_are_named() {
        let der = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../attest/tests/data/virtee-sev-milan/vcek.der"
        ))
        .unwrap_or_default();
        let cert = EndorsementCert::parse(&der).expect("the virtee VCEK parses");
        assert_eq!(cert.check_signature_parameters(), Ok(()));
        let sha256 =
            rsa::pss::get_default_pss_signature_algo_id::<sha2::Sha256>().expect("an algorithm id");
        assert!(check_pss_parameters(&sha256)
            .unwrap_err()
            .contains("not SHA-384"));
    }
}
