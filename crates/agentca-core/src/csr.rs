//! Certificate signing requests: parsed once into what the CA may use.
//!
//! The CA takes exactly two things from a CSR: its public key, and the names it asks for (which
//! policy then authorizes or refuses). Everything else — subject, requested extensions — is
//! never copied into a certificate. Requests for things the profile never grants (a CA
//! certificate, keyCertSign, name constraints, unknown EKUs, unknown critical extensions, odd
//! GeneralName types) are refused outright rather than silently dropped, so an operator sees
//! that something asked for more than it may have.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry as oids;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::{Error, Result};

/// The largest CSR accepted, PEM or DER; real ones are under 4 KiB.
pub const MAX_CSR_LEN: usize = 32 * 1024;

/// The largest RSA modulus accepted at all (policy narrows this further); bounds the cost of
/// verifying and of the Fermat check.
const MAX_RSA_BITS: usize = 8192;

/// Public key types agentca certifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyKind {
    /// ECDSA on NIST P-256.
    EcdsaP256,
    /// ECDSA on NIST P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with a modulus of this many bits.
    Rsa {
        /// Modulus size in bits.
        bits: u32,
    },
}

impl KeyKind {
    /// Whether this is an RSA key (which also gets keyEncipherment).
    pub fn is_rsa(self) -> bool {
        matches!(self, Self::Rsa { .. })
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EcdsaP256 => f.write_str("ecdsa-p256"),
            Self::EcdsaP384 => f.write_str("ecdsa-p384"),
            Self::Ed25519 => f.write_str("ed25519"),
            Self::Rsa { bits } => write!(f, "rsa-{bits}"),
        }
    }
}

impl std::str::FromStr for KeyKind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ecdsa-p256" => Ok(Self::EcdsaP256),
            "ecdsa-p384" => Ok(Self::EcdsaP384),
            "ed25519" => Ok(Self::Ed25519),
            "rsa-2048" => Ok(Self::Rsa { bits: 2048 }),
            "rsa-3072" => Ok(Self::Rsa { bits: 3072 }),
            "rsa-4096" => Ok(Self::Rsa { bits: 4096 }),
            _ => Err(format!(
                "{s:?} is not a key type (ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096)"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for KeyKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The names a CSR asks for (from its subjectAltName request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestedNames {
    /// URI names, as sent.
    pub uris: Vec<String>,
    /// DNS names, lowercased.
    pub dns: Vec<String>,
    /// IP addresses.
    pub ips: Vec<IpAddr>,
    /// The subject's commonName values, as sent. Never copied into a certificate; ACME checks
    /// that each is one of the order's names (RFC 8555 §7.4 lets a CSR's CN only repeat a SAN).
    pub common_names: Vec<String>,
}

/// A CSR that parsed, whose signature verified and whose key passed the quality checks.
#[derive(Clone, Debug)]
pub struct CertificateRequest {
    spki_der: Vec<u8>,
    key: KeyKind,
    key_sha256: [u8; 32],
    names: RequestedNames,
    challenge_password: Option<String>,
}

impl CertificateRequest {
    /// Parses and checks a CSR given as PEM or DER.
    pub fn parse(input: &[u8]) -> Result<Self> {
        if input.is_empty() {
            return Err(bad("the file is empty"));
        }
        if input.len() > MAX_CSR_LEN {
            return Err(bad(&format!(
                "{} bytes is larger than the {MAX_CSR_LEN}-byte limit for a CSR",
                input.len()
            )));
        }
        let der = if input.trim_ascii_start().starts_with(b"-----BEGIN") {
            let block = pem::parse(input).map_err(|e| bad(&format!("invalid PEM: {e}")))?;
            match block.tag() {
                "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST" => block.into_contents(),
                other => {
                    return Err(bad(&format!(
                        "the PEM block is a {other}, not a CERTIFICATE REQUEST"
                    )));
                }
            }
        } else {
            input.to_vec()
        };
        Self::from_der(&der)
    }

    /// Parses and checks a DER CSR.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        // x509-parser accepts BER framing (long-form and indefinite lengths); the `der` crate
        // does not. Requiring strict DER first means one key has one encoding, so blocklists
        // and own-key checks that compare bytes cannot be evaded by re-encoding.
        {
            use der::Decode;
            x509_cert::request::CertReq::from_der(der).map_err(|e| match e.kind() {
                der::ErrorKind::TrailingData { .. } => bad("trailing bytes after the request"),
                _ => bad("not a DER PKCS#10 certification request (BER or malformed)"),
            })?;
        }
        let (rest, csr) = X509CertificationRequest::from_der(der)
            .map_err(|_| bad("not a DER PKCS#10 certification request"))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the request"));
        }
        let info = &csr.certification_request_info;
        let spki = &info.subject_pki;
        let key = check_key(spki)?;
        check_signature_algorithm(&csr.signature_algorithm.algorithm)?;
        // Fuzz builds skip the signature, or no mutation of the signed part would get past it
        // to the attribute and extension checks below.
        if !cfg!(fuzzing) {
            csr.verify_signature()
                .map_err(|_| bad("the signature does not verify with the request's public key"))?;
        }

        let mut names = RequestedNames::default();
        let mut challenge_password = None;
        let mut seen_extension_request = false;
        for attribute in info.iter_attributes() {
            match attribute.parsed_attribute() {
                ParsedCriAttribute::ExtensionRequest(request) => {
                    if seen_extension_request {
                        return Err(bad("more than one extensionRequest attribute"));
                    }
                    seen_extension_request = true;
                    check_extensions(&request.extensions, &mut names)?;
                }
                ParsedCriAttribute::ChallengePassword(p) => {
                    if challenge_password.is_some() {
                        return Err(bad("more than one challengePassword attribute"));
                    }
                    challenge_password = Some(p.0.clone());
                }
                // Other attributes (e.g. unstructuredName) are never used.
                _ => {}
            }
        }
        for cn in info.subject.iter_common_name() {
            // A CN in an encoding x509-parser cannot read (BMPString) is kept lossily: it can
            // then only fail to match an order's names, never match one by accident.
            let text = cn.as_str().map_or_else(
                |_| String::from_utf8_lossy(cn.as_slice()).into_owned(),
                str::to_owned,
            );
            names.common_names.push(text);
        }
        let spki_der = spki.raw.to_vec();
        // One key, one encoding: certificates carry the canonical form, and byte comparisons
        // (blocklist, the CA's own keys) must not be evaded by an equivalent re-encoding.
        if spki_der != canonical_spki(key, &spki.subject_public_key.data) {
            return Err(weak(
                "the public key is not in its canonical DER form (RFC 3279, RFC 5480, RFC 8410)"
                    .into(),
            ));
        }
        let key_sha256 = Sha256::digest(&spki_der).into();
        Ok(Self {
            spki_der,
            key,
            key_sha256,
            names,
            challenge_password,
        })
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The key's type and size.
    pub fn key_kind(&self) -> KeyKind {
        self.key
    }

    /// SHA-256 of the DER SubjectPublicKeyInfo (key identity for blocklists and audit).
    pub fn key_sha256(&self) -> &[u8; 32] {
        &self.key_sha256
    }

    /// The names requested.
    pub fn names(&self) -> &RequestedNames {
        &self.names
    }

    /// The PKCS#9 challengePassword, if present (SCEP).
    pub fn challenge_password(&self) -> Option<&str> {
        self.challenge_password.as_deref()
    }
}

fn bad(why: &str) -> Error {
    Error::BadCsr(why.to_owned())
}

fn weak(why: String) -> Error {
    Error::UnsupportedKey(why)
}

fn check_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind> {
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let params = spki
            .algorithm
            .parameters
            .as_ref()
            .ok_or_else(|| weak("EC key without curve parameters".into()))?;
        // Explicit curve parameters (a SEQUENCE) are refused before anything looks at them
        // (CVE-2022-0778 made parsers loop on them). The tag must be checked: `as_oid` reads
        // the content of any element as an OID.
        if params.header.tag() != x509_parser::der_parser::asn1_rs::Tag::Oid {
            return Err(weak(
                "explicit EC curve parameters are not accepted; use a named curve".into(),
            ));
        }
        let curve = params.as_oid().map_err(|_| {
            weak("explicit EC curve parameters are not accepted; use a named curve".into())
        })?;
        let (kind, point_len) = if curve == oids::OID_EC_P256 {
            (KeyKind::EcdsaP256, 65)
        } else if curve == oids::OID_NIST_EC_P384 {
            (KeyKind::EcdsaP384, 97)
        } else {
            return Err(weak(format!(
                "EC curve {} is not supported (P-256 and P-384 are)",
                curve_name(&curve)
            )));
        };
        let point = &spki.subject_public_key.data;
        if point.len() != point_len || point.first() != Some(&0x04) {
            return Err(weak(
                "EC public key is not an uncompressed point of the curve's size".into(),
            ));
        }
        return Ok(kind);
    }
    if *alg == oids::OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(weak("unparseable RSA public key".into()));
        };
        let modulus = strip_leading_zeros(rsa.modulus);
        let bits = modulus_bits(modulus);
        if bits < 2048 {
            return Err(weak(format!(
                "RSA-{bits} is too small (2048 bits at least)"
            )));
        }
        if bits > MAX_RSA_BITS {
            return Err(weak(format!(
                "RSA-{bits} is larger than the {MAX_RSA_BITS}-bit limit"
            )));
        }
        if !bits.is_multiple_of(8) {
            return Err(weak(format!(
                "RSA modulus of {bits} bits is not a multiple of 8"
            )));
        }
        check_rsa_exponent(strip_leading_zeros(rsa.exponent))?;
        let canonical = crate::profile::tlv(
            0x30,
            &[
                der_integer(modulus),
                der_integer(strip_leading_zeros(rsa.exponent)),
            ]
            .concat(),
        );
        if spki.subject_public_key.data.as_ref() != canonical.as_slice() {
            return Err(weak(
                "the RSA public key is not in DER (RFC 3279 §2.3.1)".into(),
            ));
        }
        if modulus.last().is_some_and(|b| b % 2 == 0) {
            return Err(weak("RSA modulus is even".into()));
        }
        if fermat_factorable(modulus) {
            return Err(weak(
                "RSA modulus factors easily: its primes are too close (Fermat)".into(),
            ));
        }
        let bits = u32::try_from(bits).map_err(|_| Error::Unreachable("bounded RSA size"))?;
        return Ok(KeyKind::Rsa { bits });
    }
    if *alg == oids::OID_SIG_ED25519 {
        if spki.algorithm.parameters.is_some() {
            return Err(weak(
                "Ed25519 key with parameters (RFC 8410 §3 forbids them)".into(),
            ));
        }
        if spki.subject_public_key.data.len() != 32 {
            return Err(weak("Ed25519 public key is not 32 bytes".into()));
        }
        return Ok(KeyKind::Ed25519);
    }
    Err(weak(format!(
        "public key algorithm {alg} is not supported (ECDSA P-256/P-384, Ed25519, RSA)"
    )))
}

/// The DER SubjectPublicKeyInfo every certificate of this key carries.
fn canonical_spki(kind: KeyKind, key_bits: &[u8]) -> Vec<u8> {
    use crate::profile::tlv;
    // id-ecPublicKey, secp256r1, secp384r1, id-Ed25519, rsaEncryption
    const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
    const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let algorithm = match kind {
        KeyKind::EcdsaP256 => [tlv(0x06, EC), tlv(0x06, P256)].concat(),
        KeyKind::EcdsaP384 => [tlv(0x06, EC), tlv(0x06, P384)].concat(),
        KeyKind::Ed25519 => tlv(0x06, ED25519),
        KeyKind::Rsa { .. } => [tlv(0x06, RSA), vec![0x05, 0x00]].concat(),
    };
    let bits = [&[0u8][..], key_bits].concat();
    tlv(0x30, &[tlv(0x30, &algorithm), tlv(0x03, &bits)].concat())
}

fn curve_name(oid: &Oid<'_>) -> String {
    let s = oid.to_id_string();
    let name = match s.as_str() {
        "1.2.840.10045.3.1.1" => "P-192",
        "1.3.132.0.33" => "P-224",
        "1.3.132.0.10" => "secp256k1",
        "1.3.132.0.35" => "P-521",
        s if s.starts_with("1.3.36.3.3.2.8.1.1.") => "brainpool",
        _ => "",
    };
    if name.is_empty() {
        s
    } else {
        format!("{name} ({s})")
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// A DER INTEGER from unsigned big-endian magnitude bytes without leading zeros.
fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(magnitude);
    crate::profile::tlv(0x02, &content)
}

fn modulus_bits(m: &[u8]) -> usize {
    match m.first() {
        None => 0,
        Some(top) => (m.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

fn check_rsa_exponent(e: &[u8]) -> Result<()> {
    // BR §6.1.6: odd, at least 3 (we require the usual ≥ 65537? no: ≥ 3), at most 2^256.
    if e.len() > 32 {
        return Err(weak("RSA public exponent is larger than 2^256".into()));
    }
    let value_small = e.len() <= 8;
    let small = e
        .iter()
        .fold(0u64, |acc, b| acc.wrapping_shl(8) | u64::from(*b));
    if value_small && small < 3 {
        return Err(weak("RSA public exponent is smaller than 3".into()));
    }
    if e.last().is_none_or(|b| b % 2 == 0) {
        return Err(weak("RSA public exponent is even".into()));
    }
    Ok(())
}

/// Fermat's method for a few rounds: finds n = p·q when |p − q| is tiny, as happens with
/// broken key generators (CVE-2022-26320). 100 rounds, as Boulder's goodkey does.
///
/// Each round asks whether a² − n is a square. The candidate is updated by addition
/// ((a+1)² − n = a² − n + 2a + 1) and sieved by its residues modulo a few small numbers, which
/// rule out all but about one non-square in a thousand without a square root: a square root of
/// a 2048-bit number per round was the largest cost of checking an RSA request.
fn fermat_factorable(modulus: &[u8]) -> bool {
    use num_bigint::BigUint;
    let n = BigUint::from_bytes_be(modulus);
    let mut a = n.sqrt();
    if &a * &a < n {
        a += 1u32;
    }
    let mut b2 = &a * &a - &n;
    for _ in 0..100 {
        if may_be_square(&b2) {
            let b = b2.sqrt();
            if &b * &b == b2 {
                return true;
            }
        }
        b2 += &a << 1u32;
        b2 += 1u32;
        a += 1u32;
    }
    false
}

/// False only when `x` is certainly not a perfect square: its residue modulo 64, 63, 65 or 11
/// is not a quadratic residue there.
fn may_be_square(x: &num_bigint::BigUint) -> bool {
    [64u32, 63, 65, 11].into_iter().all(|m| {
        let r = (x % m).to_u32_digits().first().copied().unwrap_or(0);
        (0..m).any(|k| k * k % m == r)
    })
}

fn check_signature_algorithm(alg: &Oid<'_>) -> Result<()> {
    const WEAK: [&str; 6] = [
        "1.2.840.113549.1.1.2", // md2WithRSAEncryption
        "1.2.840.113549.1.1.4", // md5WithRSAEncryption
        "1.2.840.113549.1.1.5", // sha1WithRSAEncryption
        "1.3.14.3.2.29",        // sha1WithRSA (OIW)
        "1.2.840.10045.4.1",    // ecdsa-with-SHA1
        "1.2.840.10040.4.3",    // dsa-with-sha1
    ];
    if WEAK.contains(&alg.to_id_string().as_str()) {
        return Err(bad(
            "the request is signed with MD5 or SHA-1; use SHA-256 or better",
        ));
    }
    Ok(())
}

fn check_extensions(
    extensions: &[x509_parser::extensions::X509Extension<'_>],
    names: &mut RequestedNames,
) -> Result<()> {
    // A set, not a list: a request of thousands of tiny extensions must cost linear time.
    let mut seen: std::collections::HashSet<&[u8]> =
        std::collections::HashSet::with_capacity(extensions.len());
    for ext in extensions {
        if !seen.insert(ext.oid.as_bytes()) {
            return Err(bad(&format!("extension {} requested twice", ext.oid)));
        }
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                return Err(bad("asks for a CA certificate (basicConstraints cA=TRUE)"));
            }
            ParsedExtension::BasicConstraints(_) => {}
            ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                return Err(bad("asks for keyCertSign or cRLSign key usage"));
            }
            ParsedExtension::KeyUsage(_) => {}
            ParsedExtension::ExtendedKeyUsage(eku)
                if eku.any
                    || eku.code_signing
                    || eku.email_protection
                    || eku.time_stamping
                    || eku.ocsp_signing
                    || !eku.other.is_empty() =>
            {
                return Err(bad(
                    "asks for an extended key usage other than clientAuth or serverAuth",
                ));
            }
            ParsedExtension::ExtendedKeyUsage(_) => {}
            ParsedExtension::NameConstraints(_) => {
                return Err(bad("asks for name constraints"));
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    collect_name(name, names)?;
                }
            }
            ParsedExtension::ParseError { .. } => {
                return Err(bad(&format!(
                    "requested extension {} does not parse",
                    ext.oid
                )));
            }
            _ if ext.critical => {
                return Err(bad(&format!(
                    "asks for unsupported critical extension {}",
                    ext.oid
                )));
            }
            // Anything else non-critical is ignored: nothing from the CSR is copied.
            _ => {}
        }
    }
    Ok(())
}

fn collect_name(name: &GeneralName<'_>, names: &mut RequestedNames) -> Result<()> {
    match name {
        GeneralName::URI(uri) => names.uris.push((*uri).to_owned()),
        GeneralName::DNSName(dns) => {
            let lower = dns.to_ascii_lowercase();
            crate::policy::check_dns_name(&lower)
                .map_err(|e| bad(&format!("DNS name {dns:?}: {e}")))?;
            if !names.dns.contains(&lower) {
                names.dns.push(lower);
            }
        }
        GeneralName::IPAddress(bytes) => {
            let ip = match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).map_err(|_| bad("bad IP"))?),
                16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).map_err(|_| bad("bad IP"))?),
                _ => return Err(bad("an IP address SAN is neither 4 nor 16 bytes")),
            };
            if !names.ips.contains(&ip) {
                names.ips.push(ip);
            }
        }
        other => {
            return Err(bad(&format!(
                "asks for a subjectAltName of an unsupported type ({})",
                general_name_kind(other)
            )));
        }
    }
    Ok(())
}

fn general_name_kind(name: &GeneralName<'_>) -> &'static str {
    match name {
        GeneralName::RFC822Name(_) => "email",
        GeneralName::DirectoryName(_) => "directoryName",
        GeneralName::OtherName(..) => "otherName",
        GeneralName::X400Address(_) => "x400Address",
        GeneralName::EDIPartyName(_) => "ediPartyName",
        GeneralName::RegisteredID(_) => "registeredID",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;
