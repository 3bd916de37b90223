//! Pinned roots and endorsement-key certificates.
//!
//! The only trust roots are AMD's ARKs built into the `sev` crate (Milan, Genoa, Turin) with
//! their ASKs, and the ASVKs (VLEK roots) from AMD's published chains in `roots/`, each
//! accepted only after it verifies under the builtin ARK of its product line. A certificate the
//! host supplies is never a root: the endorsement key (VCEK/VLEK) must verify under one of
//! these, whatever else came with it.

use crate::report::Product;
use p384::ecdsa::VerifyingKey;
use sev::certs::snp::{builtin, Certificate as SevCertificate, Verifiable};
use std::sync::OnceLock;
use x509_cert::der::{Decode, Encode};
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

/// Loads and cross-checks the pinned roots once.
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
            // The builtin ARK is self-signed and signs the builtin ASK.
            if (&ark, &ark).verify().is_err() || (&ark, &ask).verify().is_err() {
                continue;
            }
            let asvk = ASVK_PEM
                .iter()
                .find(|(p, _)| *p == product)
                .and_then(|(_, pem)| asvk_from_published_chain(pem, &ark));
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

/// The ASVK in AMD's published chain: the certificate that the pinned ARK signs and that is
/// neither the ARK nor an ASK (its subject names SEV-VLEK).
fn asvk_from_published_chain(pem: &[u8], ark: &SevCertificate) -> Option<SevCertificate> {
    let certs = Certificate::load_pem_chain(pem).ok()?;
    certs.into_iter().find_map(|c| {
        let subject = c.tbs_certificate.subject.to_string();
        if !subject.contains("SEV-VLEK") {
            return None;
        }
        let sev_cert = SevCertificate::from(c);
        (ark, &sev_cert).verify().ok().map(|_| sev_cert)
    })
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

/// OIDs of AMD's VCEK/VLEK extensions (VCEK spec, "Certificate Extensions").
mod oid {
    pub const BOOTLOADER: &str = "1.3.6.1.4.1.3704.1.3.1";
    pub const TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
    pub const SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
    pub const MICROCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
    pub const FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
    pub const HWID: &str = "1.3.6.1.4.1.3704.1.4";
    pub const CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";
}

/// An extension value: AMD encodes SPLs as DER INTEGERs and the hardware id as raw bytes
/// (newer certificates wrap it in an OCTET STRING); both are accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtValue {
    /// A DER INTEGER that fits a u64.
    Int(u64),
    /// Bytes (OCTET STRING contents, or the raw extension value).
    Bytes(Vec<u8>),
}

fn decode_ext(value: &[u8]) -> ExtValue {
    // DER short-form TLV: tag, length, contents.
    if value.len() >= 2 && usize::from(value[1]) == value.len() - 2 && value[1] < 0x80 {
        let contents = &value[2..];
        match value[0] {
            0x02 if contents.len() <= 9 => {
                let mut n: u64 = 0;
                for b in contents {
                    n = (n << 8) | u64::from(*b);
                }
                return ExtValue::Int(n);
            }
            0x04 => return ExtValue::Bytes(contents.to_vec()),
            _ => {}
        }
    }
    ExtValue::Bytes(value.to_vec())
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

    /// The certificate's extension `oid`, decoded.
    pub fn extension(&self, oid: &str) -> Option<ExtValue> {
        self.cert
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| decode_ext(e.extn_value.as_bytes()))
    }

    /// Whether this certificate carries VLEK extensions (the CSP id).
    pub fn looks_like_vlek(&self) -> bool {
        self.extension(oid::CSP_ID).is_some()
    }

    /// The P-384 public key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, CertError> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
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

    /// The hardware id (chip id) the VCEK was issued to.
    pub fn hardware_id(&self) -> Option<Vec<u8>> {
        match self.extension(oid::HWID)? {
            ExtValue::Bytes(b) => Some(b),
            ExtValue::Int(_) => None,
        }
    }

    /// The product line whose pinned ASK (VCEK) or ASVK (VLEK) signed this certificate.
    pub fn chain_to_pinned_root(&self, kind: KeyKind) -> Option<Product> {
        let sev_cert = SevCertificate::from(self.cert.clone());
        amd_roots().iter().find_map(|roots| {
            let signer = match kind {
                KeyKind::Vcek => Some(&roots.ask),
                KeyKind::Vlek => roots.asvk.as_ref(),
            }?;
            (signer, &sev_cert).verify().ok().map(|_| roots.product)
        })
    }

    /// Whether `issuer_pem_or_der` (an RSA-PSS signer certificate, e.g. a simulated ASK)
    /// signed this certificate.
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
    fn every_product_has_pinned_ark_ask_and_asvk() {
        let roots = amd_roots();
        assert_eq!(roots.len(), 3);
        for r in roots {
            assert!(r.asvk.is_some(), "{:?} ASVK", r.product);
        }
    }

    #[test]
    fn extension_values_decode_integers_octet_strings_and_raw_bytes() {
        assert_eq!(decode_ext(&[0x02, 0x01, 0x73]), ExtValue::Int(0x73));
        assert_eq!(decode_ext(&[0x02, 0x02, 0x00, 0xd2]), ExtValue::Int(0xd2));
        assert_eq!(
            decode_ext(&[0x04, 0x02, 0xab, 0xcd]),
            ExtValue::Bytes(vec![0xab, 0xcd])
        );
        assert_eq!(decode_ext(&[0xab; 64]), ExtValue::Bytes(vec![0xab; 64]));
    }
}
