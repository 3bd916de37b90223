//! Certificate revocation lists: AMD's ARK-signed CRL per product line (KDS
//! `/vcek/v1/{product}/crl`), carried in the policy. A [`Crl`] exists only once its signature
//! verified under a pinned ARK (AMD's, or the simulated root's), so a forged list never gets
//! into a policy; how old it may be, and what it revokes, the verifier checks.

use crate::certs::{self, normalized_serial};
use crate::report::Product;
use crate::Trust;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use x509_cert::crl::CertificateList;
use x509_cert::der::{Decode, Encode, Reader, SliceReader};
use x509_cert::Certificate;

/// Why bytes are not a usable revocation list.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CrlError {
    /// Not DER of an X.509 v2 CRL.
    #[error("not an X.509 CRL: {0}")]
    Malformed(String),
    /// The signature algorithm is not AMD's RSASSA-PSS.
    #[error("CRL signature algorithm: {0}")]
    SignatureParameters(String),
    /// No pinned ARK is named as its issuer.
    #[error("CRL issuer {0} is no pinned ARK")]
    UnknownIssuer(String),
    /// The issuing ARK did not sign it.
    #[error("the CRL's signature does not verify under the pinned {0}")]
    Signature(String),
}

/// A revocation list whose signature verified under a pinned root.
#[derive(Clone, PartialEq, Eq)]
pub struct Crl {
    der: Vec<u8>,
    trust: Trust,
    product: Product,
    this_update: u64,
    next_update: Option<u64>,
    revoked: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Crl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crl")
            .field("trust", &self.trust)
            .field("product", &self.product)
            .field("this_update", &self.this_update)
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

/// The ARKs a CRL may come from: AMD's pinned ones and, in a build with the simulated root,
/// its ARK.
fn arks() -> Vec<(Trust, Product, Certificate)> {
    #[cfg_attr(not(feature = "simulated"), allow(unused_mut))]
    let mut out: Vec<(Trust, Product, Certificate)> = certs::amd_roots()
        .iter()
        .map(|r| (Trust::Amd, r.product, Certificate::from(r.ark.clone())))
        .collect();
    #[cfg(feature = "simulated")]
    if let Some(ark) = crate::simulated_root::simulated_ark() {
        out.push((
            Trust::Simulated,
            crate::simulated_root::SIMULATED_PRODUCT,
            ark,
        ));
    }
    out
}

/// The raw DER of the `TBSCertList` inside a CRL's DER: the exact bytes the signature covers.
fn tbs_bytes(der: &[u8]) -> Result<&[u8], CrlError> {
    let malformed = |e: x509_cert::der::Error| CrlError::Malformed(e.to_string());
    let outer = SliceReader::new(der).map_err(malformed)?;
    let header = outer.peek_header().map_err(malformed)?;
    let header_len = header.encoded_len().map_err(malformed)?;
    let mut inner = SliceReader::new(
        der.get(usize::try_from(header_len).map_err(malformed)?..)
            .ok_or_else(|| CrlError::Malformed("truncated".into()))?,
    )
    .map_err(malformed)?;
    inner.tlv_bytes().map_err(malformed)
}

impl Crl {
    /// Parses a DER CRL (or PEM `X509 CRL`) and verifies it under the pinned ARK it names.
    pub fn from_der(bytes: &[u8]) -> Result<Crl, CrlError> {
        let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let (label, der) = x509_cert::der::pem::decode_vec(bytes.trim_ascii_start())
                .map_err(|e| CrlError::Malformed(e.to_string()))?;
            if label != "X509 CRL" {
                return Err(CrlError::Malformed(format!("PEM label {label}")));
            }
            der
        } else {
            bytes.to_vec()
        };
        let list =
            CertificateList::from_der(&der).map_err(|e| CrlError::Malformed(e.to_string()))?;
        if list.signature_algorithm != list.tbs_cert_list.signature {
            return Err(CrlError::SignatureParameters(
                "the signed and the outer algorithms differ".into(),
            ));
        }
        certs::check_pss_parameters(&list.signature_algorithm)
            .map_err(CrlError::SignatureParameters)?;
        let issuer = &list.tbs_cert_list.issuer;
        let (trust, product, ark) = arks()
            .into_iter()
            .find(|(_, _, ark)| ark.tbs_certificate.subject == *issuer)
            .ok_or_else(|| CrlError::UnknownIssuer(issuer.to_string()))?;
        let signature = list
            .signature
            .as_bytes()
            .ok_or_else(|| CrlError::Malformed("signature is not whole bytes".into()))?;
        if !certs::rsa_pss_sha384_verifies(
            &ark.tbs_certificate.subject_public_key_info,
            tbs_bytes(&der)?,
            signature,
        ) {
            return Err(CrlError::Signature(issuer.to_string()));
        }
        let tbs = &list.tbs_cert_list;
        Ok(Crl {
            trust,
            product,
            this_update: certs::unix(&tbs.this_update),
            next_update: tbs.next_update.as_ref().map(certs::unix),
            revoked: tbs
                .revoked_certificates
                .iter()
                .flatten()
                .map(|r| normalized_serial(r.serial_number.as_bytes()))
                .collect(),
            der,
        })
    }

    /// The DER bytes.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Which roots the signing ARK belongs to.
    pub fn trust(&self) -> Trust {
        self.trust
    }

    /// The product line of the signing ARK.
    pub fn product(&self) -> Product {
        self.product
    }

    /// thisUpdate, Unix seconds.
    pub fn this_update(&self) -> u64 {
        self.this_update
    }

    /// nextUpdate, Unix seconds, if stated.
    pub fn next_update(&self) -> Option<u64> {
        self.next_update
    }

    /// Whether the (normalized) serial number is listed.
    pub fn revokes(&self, serial: &[u8]) -> bool {
        let serial = normalized_serial(serial);
        self.revoked.contains(&serial)
    }

    /// The revoked serial numbers, normalized.
    pub fn revoked(&self) -> &[Vec<u8>] {
        &self.revoked
    }

    /// Re-encodes a parsed list (for tests that build CRLs).
    pub fn encode(list: &CertificateList) -> Result<Vec<u8>, CrlError> {
        list.to_der()
            .map_err(|e| CrlError::Malformed(e.to_string()))
    }
}

impl Serialize for Crl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.der))
    }
}

impl<'de> Deserialize<'de> for Crl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let der = hex::decode(s.trim()).map_err(|e| serde::de::Error::custom(e.to_string()))?;
        Crl::from_der(&der).map_err(serde::de::Error::custom)
    }
}
