//! CMS SignedData (RFC 5652 §5) as SCEP uses it: decoding with the limits of [`crate::ber`],
//! verifying the one signer, and encoding.

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

use crate::alg::{DigestAlgorithm, ScepOptions};
use crate::attr::{self, SignedAttributes};
use crate::ber;
use crate::cert::{CertInfo, EcCurve, PublicKey};
use crate::der::{self, Reader};
use crate::error::{Result, ScepError};
use crate::key::SignerKey;
use crate::oid;

/// The largest pkiMessage (or envelope, or certs-only reply) the decoders accept, in bytes.
/// Requests are a few kilobytes; 128 KiB leaves room for long chains and large CSRs.
pub const MAX_MESSAGE_LEN: usize = 128 * 1024;

/// How a SignerInfo names its certificate.
#[derive(Clone, Debug)]
pub(crate) enum SignerId {
    /// The content of an IssuerAndSerialNumber SEQUENCE.
    IssuerSerial(Vec<u8>),
    SubjectKeyId(Vec<u8>),
}

#[derive(Clone, Debug)]
pub(crate) struct SignerInfo {
    pub(crate) sid: SignerId,
    pub(crate) digest_oid: Vec<u8>,
    /// The content of `[0] IMPLICIT SignedAttributes`, if present.
    pub(crate) signed_attrs: Option<Vec<u8>>,
    pub(crate) signature_oid: Vec<u8>,
    pub(crate) signature: Vec<u8>,
}

/// A decoded SignedData, owned, with everything still unverified.
#[derive(Clone, Debug)]
pub(crate) struct SignedData {
    pub(crate) econtent_type: Vec<u8>,
    pub(crate) econtent: Option<Vec<u8>>,
    /// Certificates in the order sent, as DER.
    pub(crate) certificates: Vec<Vec<u8>>,
    /// CRLs in the order sent, as DER.
    pub(crate) crls: Vec<Vec<u8>>,
    pub(crate) signers: Vec<SignerInfo>,
}

/// Decodes a ContentInfo of `expected` type (BER accepted, size and depth bounded) and returns
/// the DER of its content.
pub(crate) fn decode_content_info(
    input: &[u8],
    expected: &const_oid::ObjectIdentifier,
    expected_name: &'static str,
) -> Result<Vec<u8>> {
    if input.len() > MAX_MESSAGE_LEN {
        return Err(ScepError::TooLarge {
            len: input.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    let normalized = ber::normalize(input)?;
    let ci = der::single(&normalized, der::SEQUENCE, "ContentInfo")?;
    let mut r = ci.reader();
    let content_type = r.read(der::OID, "ContentInfo contentType")?;
    if !oid::is(content_type.content, expected) {
        return Err(ScepError::UnexpectedContentType {
            expected: expected_name,
            found: oid::display(content_type.content),
        });
    }
    let explicit = r.read(der::context(0), "ContentInfo content")?;
    r.finish("ContentInfo")?;
    let inner = der::single(explicit.content, der::SEQUENCE, "ContentInfo content")?;
    Ok(inner.raw.to_vec())
}

impl SignedData {
    /// Decodes a ContentInfo holding a SignedData.
    pub(crate) fn decode(input: &[u8]) -> Result<Self> {
        let sd = decode_content_info(input, &oid::SIGNED_DATA, "signedData")?;
        Self::parse(&sd)
    }

    fn parse(sd_der: &[u8]) -> Result<Self> {
        let sd = der::single(sd_der, der::SEQUENCE, "SignedData")?;
        let mut r = sd.reader();
        let version = r.read_small_uint("SignedData version")?;
        if !(1..=5).contains(&version) {
            return Err(ScepError::Malformed("SignedData version"));
        }
        let digest_algs = r.read(der::SET, "SignedData digestAlgorithms")?;
        let mut d = digest_algs.reader();
        while !d.is_empty() {
            der::read_algorithm(&mut d, "digestAlgorithm")?;
        }

        let eci = r.read(der::SEQUENCE, "encapContentInfo")?;
        let mut e = eci.reader();
        let econtent_type = e.read(der::OID, "eContentType")?.content.to_vec();
        let econtent = match e.read_optional(der::context(0))? {
            Some(explicit) => {
                let os = der::single(explicit.content, der::OCTET_STRING, "eContent")?;
                Some(os.content.to_vec())
            }
            None => None,
        };
        e.finish("encapContentInfo")?;

        let mut certificates = Vec::new();
        if let Some(certs) = r.read_optional(der::context(0))? {
            let mut c = certs.reader();
            while !c.is_empty() {
                let choice = c.read_any()?;
                // Only plain certificates; attribute and other certificates are skipped.
                if choice.tag == der::SEQUENCE {
                    certificates.push(choice.raw.to_vec());
                }
            }
        }
        let mut crls = Vec::new();
        if let Some(list) = r.read_optional(der::context(1))? {
            let mut c = list.reader();
            while !c.is_empty() {
                let choice = c.read_any()?;
                if choice.tag == der::SEQUENCE {
                    crls.push(choice.raw.to_vec());
                }
            }
        }

        let infos = r.read(der::SET, "signerInfos")?;
        r.finish("SignedData")?;
        let mut signers = Vec::new();
        let mut s = infos.reader();
        while !s.is_empty() {
            signers.push(parse_signer_info(s.read(der::SEQUENCE, "SignerInfo")?)?);
        }
        Ok(Self {
            econtent_type,
            econtent,
            certificates,
            crls,
            signers,
        })
    }

    /// Verifies the one SignerInfo (RFC 5652 §5.4, §5.6): the signer's certificate is found
    /// among the message's certificates or `extra`, the content digest matches messageDigest,
    /// contentType matches eContentType, and the signature over the DER of the signed
    /// attributes verifies with the certificate's key.
    pub(crate) fn verify(&self, extra: &[CertInfo], options: &ScepOptions) -> Result<Verified<'_>> {
        let [signer] = self.signers.as_slice() else {
            return Err(ScepError::SignerCount(self.signers.len()));
        };
        let digest = DigestAlgorithm::from_oid(&signer.digest_oid, options)?;
        let attrs_content = signer
            .signed_attrs
            .as_deref()
            .ok_or(ScepError::Malformed("SignerInfo without signed attributes"))?;
        let attrs = SignedAttributes::parse(attrs_content)?;

        if attrs.content_type()? != self.econtent_type.as_slice() {
            return Err(ScepError::InvalidAttribute {
                attribute: crate::error::ScepAttribute::ContentType,
                reason: "differs from eContentType",
            });
        }
        let expected = attrs.message_digest()?;
        let actual = digest.digest(self.econtent.as_deref().unwrap_or_default());
        if aws_lc_rs::constant_time::verify_slices_are_equal(expected, actual.as_ref()).is_err() {
            return Err(ScepError::DigestMismatch);
        }

        let cert = self.find_signer(&signer.sid, extra)?;
        // The signature covers the DER of the attributes with the SET OF tag (§5.4).
        let signed = der::tlv(der::SET, attrs_content);
        verify_signature(
            &cert,
            &signer.signature_oid,
            digest,
            &signed,
            &signer.signature,
            options,
        )?;
        Ok(Verified {
            signer: cert,
            digest,
            attrs,
        })
    }

    fn find_signer(&self, sid: &SignerId, extra: &[CertInfo]) -> Result<CertInfo> {
        let matches = |c: &CertInfo| match sid {
            SignerId::IssuerSerial(isn) => c.matches_issuer_serial(isn),
            SignerId::SubjectKeyId(id) => c.matches_key_id(id),
        };
        for der_bytes in &self.certificates {
            // A certificate that does not parse cannot be the signer's; skip it.
            if let Ok(c) = CertInfo::parse(der_bytes)
                && matches(&c)
            {
                return Ok(c);
            }
        }
        extra
            .iter()
            .find(|c| matches(c))
            .cloned()
            .ok_or(ScepError::SignerCertificateNotFound)
    }
}

/// The outcome of [`SignedData::verify`].
#[derive(Debug)]
pub(crate) struct Verified<'a> {
    pub(crate) signer: CertInfo,
    pub(crate) digest: DigestAlgorithm,
    pub(crate) attrs: SignedAttributes<'a>,
}

fn parse_signer_info(tlv: der::Tlv<'_>) -> Result<SignerInfo> {
    let mut r = tlv.reader();
    let version = r.read_small_uint("SignerInfo version")?;
    // Version 1 goes with issuerAndSerialNumber and 3 with subjectKeyIdentifier (§5.3);
    // the sid's own tag decides, since not every client keeps the two in step.
    if version != 1 && version != 3 {
        return Err(ScepError::Malformed("SignerInfo version"));
    }
    let sid = match r.peek_tag() {
        Some(der::SEQUENCE) => {
            SignerId::IssuerSerial(r.read(der::SEQUENCE, "sid")?.content.to_vec())
        }
        Some(t) if t == der::context_primitive(0) => {
            SignerId::SubjectKeyId(r.read_any()?.content.to_vec())
        }
        _ => return Err(ScepError::Malformed("SignerInfo sid")),
    };
    let digest = der::read_algorithm(&mut r, "SignerInfo digestAlgorithm")?;
    let signed_attrs = r
        .read_optional(der::context(0))?
        .map(|t| t.content.to_vec());
    let signature_alg = der::read_algorithm(&mut r, "SignerInfo signatureAlgorithm")?;
    let signature = r
        .read(der::OCTET_STRING, "SignerInfo signature")?
        .content
        .to_vec();
    let _unsigned = r.read_optional(der::context(1))?;
    r.finish("SignerInfo")?;
    Ok(SignerInfo {
        sid,
        digest_oid: digest.oid.to_vec(),
        signed_attrs,
        signature_oid: signature_alg.oid.to_vec(),
        signature,
    })
}

/// Checks `signature` over `message` with the certificate's key, under the SignerInfo's
/// signatureAlgorithm and digestAlgorithm (which must agree where the former names a hash).
fn verify_signature(
    cert: &CertInfo,
    signature_oid: &[u8],
    digest: DigestAlgorithm,
    message: &[u8],
    sig: &[u8],
    options: &ScepOptions,
) -> Result<()> {
    use DigestAlgorithm::{Sha1, Sha256, Sha384, Sha512};

    let named_hash = |pairs: &[(const_oid::ObjectIdentifier, DigestAlgorithm)]| {
        pairs
            .iter()
            .find(|(o, _)| oid::is(signature_oid, o))
            .map(|(_, d)| *d)
    };
    let rsa_named = named_hash(&[
        (oid::SHA1_WITH_RSA, Sha1),
        (oid::SHA256_WITH_RSA, Sha256),
        (oid::SHA384_WITH_RSA, Sha384),
        (oid::SHA512_WITH_RSA, Sha512),
    ]);
    let ec_named = named_hash(&[
        (oid::ECDSA_WITH_SHA1, Sha1),
        (oid::ECDSA_WITH_SHA256, Sha256),
        (oid::ECDSA_WITH_SHA384, Sha384),
        (oid::ECDSA_WITH_SHA512, Sha512),
    ]);
    let is_rsa = oid::is(signature_oid, &oid::RSA_ENCRYPTION) || rsa_named.is_some();
    // Some implementations put id-ecPublicKey where the signature algorithm belongs.
    let is_ec = oid::is(signature_oid, &oid::EC_PUBLIC_KEY) || ec_named.is_some();
    if let Some(named) = rsa_named.or(ec_named)
        && named != digest
    {
        return Err(ScepError::UnsupportedAlgorithm {
            what: "signature algorithm (hash differs from digestAlgorithm)",
            oid: oid::display(signature_oid),
        });
    }

    let (alg, key): (&'static dyn VerificationAlgorithm, &[u8]) = match &cert.key {
        PublicKey::Rsa(key) if is_rsa => {
            let alg: &'static signature::RsaParameters = match (digest, options.legacy) {
                (Sha1, _) => &signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
                (Sha256, true) => &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                (Sha256, false) => &signature::RSA_PKCS1_2048_8192_SHA256,
                (Sha384, _) => &signature::RSA_PKCS1_2048_8192_SHA384,
                (Sha512, true) => &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
                (Sha512, false) => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            (alg, key)
        }
        PublicKey::Ec { curve, point } if is_ec => {
            let alg: &'static signature::EcdsaVerificationAlgorithm = match (curve, digest) {
                (EcCurve::P256, Sha1) => &signature::ECDSA_P256_SHA1_ASN1,
                (EcCurve::P256, Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                (EcCurve::P256, Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                (EcCurve::P256, Sha512) => &signature::ECDSA_P256_SHA512_ASN1,
                (EcCurve::P384, Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                (EcCurve::P384, Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                (EcCurve::P384, Sha512) => &signature::ECDSA_P384_SHA512_ASN1,
                (EcCurve::P384, Sha1) => {
                    return Err(ScepError::UnsupportedAlgorithm {
                        what: "signature algorithm",
                        oid: "ECDSA P-384 with SHA-1".into(),
                    });
                }
            };
            (alg, point)
        }
        PublicKey::Other(name) => {
            return Err(ScepError::UnsupportedAlgorithm {
                what: "signer key",
                oid: name.clone(),
            });
        }
        _ if !is_rsa && !is_ec => {
            return Err(ScepError::UnsupportedAlgorithm {
                what: "signature algorithm",
                oid: oid::display(signature_oid),
            });
        }
        _ => {
            return Err(ScepError::UnsupportedAlgorithm {
                what: "signature algorithm (does not fit the signer's key)",
                oid: oid::display(signature_oid),
            });
        }
    };
    UnparsedPublicKey::new(alg, key)
        .verify(message, sig)
        .map_err(|_| ScepError::BadSignature)
}

/// Deliberate defects for negative tests (see `client::Tamper`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SignTamper {
    pub(crate) wrong_message_digest: bool,
    pub(crate) corrupt_signature: bool,
    pub(crate) omit_content_type: bool,
    pub(crate) duplicate_signer_info: bool,
    pub(crate) signer_by_key_id: bool,
    pub(crate) unsorted_attributes: bool,
    /// Name this digest algorithm (signing with the real one).
    pub(crate) digest_oid: Option<const_oid::ObjectIdentifier>,
}

/// What to sign and with what.
pub(crate) struct SignRequest<'a> {
    /// The eContent (an id-data OCTET STRING), or `None` for none.
    pub(crate) econtent: Option<&'a [u8]>,
    /// Certificates for the `certificates` field, in this order.
    pub(crate) certificates: &'a [&'a [u8]],
    pub(crate) signer_cert: &'a CertInfo,
    pub(crate) signer_key: &'a SignerKey,
    pub(crate) digest: DigestAlgorithm,
    /// Encoded attributes besides contentType and messageDigest.
    pub(crate) attributes: Vec<Vec<u8>>,
    pub(crate) tamper: SignTamper,
}

/// Encodes a ContentInfo holding a SignedData with one signer.
pub(crate) fn encode_signed_data(req: SignRequest<'_>) -> Result<Vec<u8>> {
    let content = req.econtent.unwrap_or_default();
    let mut digest = req.digest.digest(content).as_ref().to_vec();
    if req.tamper.wrong_message_digest
        && let Some(b) = digest.first_mut()
    {
        *b ^= 0x01;
    }
    let mut attrs = req.attributes;
    if !req.tamper.omit_content_type {
        attrs.push(attr::content_type_attribute(&oid::DATA));
    }
    attrs.push(attr::message_digest_attribute(&digest));
    attrs.sort();
    if req.tamper.unsorted_attributes {
        attrs.reverse();
    }
    let attrs_content = attrs.concat();
    let (sig_alg, mut sig) = req
        .signer_key
        .sign(req.digest, &der::tlv(der::SET, &attrs_content))?;
    if req.tamper.corrupt_signature
        && let Some(b) = sig.last_mut()
    {
        *b ^= 0x01;
    }
    let (version, sid) = if req.tamper.signer_by_key_id {
        let id = req
            .signer_cert
            .subject_key_id
            .as_deref()
            .ok_or(ScepError::InvalidInput(
                "the signer certificate has no subjectKeyIdentifier",
            ))?;
        (3, der::tlv(der::context_primitive(0), id))
    } else {
        (1, req.signer_cert.issuer_and_serial())
    };
    let digest_algorithm = match req.tamper.digest_oid {
        Some(named) => der::algorithm(&named, None),
        None => req.digest.algorithm_identifier(),
    };
    let signer_info = der::sequence(&[
        &der::small_integer(version),
        &sid,
        &digest_algorithm,
        &der::tlv(der::context(0), &attrs_content),
        &sig_alg,
        &der::octet_string(&sig),
    ]);
    let mut infos = vec![signer_info.clone()];
    if req.tamper.duplicate_signer_info {
        infos.push(signer_info);
    }

    let econtent_info = match req.econtent {
        Some(c) => der::sequence(&[
            &der::oid(&oid::DATA),
            &der::tlv(der::context(0), &der::octet_string(c)),
        ]),
        None => der::sequence(&[&der::oid(&oid::DATA)]),
    };
    let digest_algs = der::set_of(vec![digest_algorithm]);
    let certs = der::constructed(der::context(0), req.certificates);
    let mut parts: Vec<&[u8]> = vec![&[2, 1, 1], &digest_algs, &econtent_info];
    if !req.certificates.is_empty() {
        parts.push(&certs);
    }
    // SignerInfos keep insertion order here: with duplicate_signer_info both are equal anyway.
    let infos = der::tlv(der::SET, &infos.concat());
    parts.push(&infos);
    let signed_data = der::sequence(&parts);
    Ok(content_info(&oid::SIGNED_DATA, &signed_data))
}

/// `ContentInfo ::= SEQUENCE { contentType, [0] EXPLICIT content }`.
pub(crate) fn content_info(content_type: &const_oid::ObjectIdentifier, content: &[u8]) -> Vec<u8> {
    der::sequence(&[&der::oid(content_type), &der::tlv(der::context(0), content)])
}

/// Encodes a degenerate certs-only SignedData (RFC 8894 §3.4): no content, no signers.
pub(crate) fn encode_certs_only(certificates: &[&[u8]], crls: &[&[u8]]) -> Vec<u8> {
    let econtent_info = der::sequence(&[&der::oid(&oid::DATA)]);
    let empty_set = der::tlv(der::SET, &[]);
    let certs = der::constructed(der::context(0), certificates);
    let crl_list = der::constructed(der::context(1), crls);
    let mut parts: Vec<&[u8]> = vec![&[2, 1, 1], &empty_set, &econtent_info];
    if !certificates.is_empty() {
        parts.push(&certs);
    }
    if !crls.is_empty() {
        parts.push(&crl_list);
    }
    parts.push(&empty_set);
    content_info(&oid::SIGNED_DATA, &der::sequence(&parts))
}

/// Checks that `bytes` is exactly one DER SEQUENCE (a certificate, CRL or CSR).
pub(crate) fn check_single_sequence(bytes: &[u8], what: &'static str) -> Result<()> {
    let mut r = Reader::new(bytes);
    r.read(der::SEQUENCE, what)?;
    r.finish(what)
}
