//! CSR parsing under attack: the bad-input rows of the security test plan (CSR-1 to CSR-5 and
//! the parser-robustness rows PARSE-1/PARSE-2), and the shapes agentca certifies.
//!
//! Every refusal is checked for its error *kind* and for words of its message, so a request
//! refused for the wrong reason (say, a bad signature where a weak key was meant) fails.
//! Shapes rcgen cannot write (weak curves, explicit parameters, SHA-1 and MD5 signatures, DSA,
//! odd RSA sizes) come from the `openssl` command line at test time; shapes no tool writes
//! (duplicate attributes, odd GeneralNames, hand-made public keys) are assembled from DER here
//! and signed with a real key. `testdata/csr/README.md` describes each family of vectors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration as StdDuration, Instant};

use num_bigint::BigUint;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, OtherNameValue, PublicKeyData,
    SanType, SigningKey,
};
use sha2::{Digest, Sha256};

use super::*;
use crate::profile::tlv;

// ---------------------------------------------------------------------------------------------
// Building requests
// ---------------------------------------------------------------------------------------------

/// DER of `ecdsa-with-SHA256` (RFC 5758 §3.2), the signature algorithm of hand-built requests.
const ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
/// `ecdsa-with-SHA384`.
const ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
/// `sha256WithRSAEncryption` with NULL parameters.
const RSA_SHA256: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
/// `id-Ed25519`.
const ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];

/// OID contents (without tag and length).
const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
const OID_CHALLENGE_PASSWORD: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_X25519: &[u8] = &[0x2b, 0x65, 0x6e];
/// 1.3.6.1.4.1.55555.1, an arbitrary private-enterprise OID nobody interprets.
const PRIVATE_OID: [u64; 8] = [1, 3, 6, 1, 4, 1, 55555, 1];

fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

fn params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
}

fn with_sans(sans: Vec<SanType>) -> CertificateParams {
    let mut p = params();
    p.subject_alt_names = sans;
    p
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

fn request(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
    params.serialize_request(key).unwrap().der().to_vec()
}

fn with_extension(oid: &[u64], critical: bool, content: Vec<u8>) -> CertificateParams {
    let mut ext = CustomExtension::from_oid_content(oid, content);
    ext.set_criticality(critical);
    let mut p = params();
    p.custom_extensions.push(ext);
    p
}

fn oid(content: &[u8]) -> Vec<u8> {
    tlv(0x06, content)
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A PKCS#10 request assembled field by field: version 0, an empty subject unless set, the
/// given SubjectPublicKeyInfo and attributes.
struct Raw {
    subject: Vec<u8>,
    spki: Vec<u8>,
    attributes: Vec<Vec<u8>>,
}

impl Raw {
    fn new(key: &KeyPair) -> Self {
        Self {
            subject: seq(&[]),
            spki: key.subject_public_key_info(),
            attributes: Vec::new(),
        }
    }

    fn attribute(mut self, attribute: Vec<u8>) -> Self {
        self.attributes.push(attribute);
        self
    }

    fn info(&self) -> Vec<u8> {
        seq(&[
            &tlv(0x02, &[0]),
            &self.subject,
            &self.spki,
            &tlv(0xa0, &self.attributes.concat()),
        ])
    }

    /// Signed by `key` (which must be P-256) with ECDSA-SHA256.
    fn signed_by(&self, key: &KeyPair) -> Vec<u8> {
        sign_info(&self.info(), key, ECDSA_SHA256)
    }
}

fn sign_info(info: &[u8], key: &KeyPair, algorithm: &[u8]) -> Vec<u8> {
    let signature = key.sign(info).unwrap();
    assemble(info, algorithm, &signature)
}

fn assemble(info: &[u8], algorithm: &[u8], signature: &[u8]) -> Vec<u8> {
    let bits = [&[0u8][..], signature].concat();
    seq(&[info, algorithm, &tlv(0x03, &bits)])
}

/// `Attribute ::= SEQUENCE { type OID, values SET OF ANY }`.
fn attribute(oid_content: &[u8], values: &[&[u8]]) -> Vec<u8> {
    seq(&[&oid(oid_content), &tlv(0x31, &values.concat())])
}

fn challenge_password(password: &str) -> Vec<u8> {
    attribute(OID_CHALLENGE_PASSWORD, &[&tlv(0x0c, password.as_bytes())])
}

/// An extensionRequest attribute holding the given DER extensions.
fn extension_request(extensions: &[&[u8]]) -> Vec<u8> {
    attribute(OID_EXTENSION_REQUEST, &[&seq(extensions)])
}

/// `Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`.
fn extension(oid_content: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let critical: &[u8] = if critical { &[0x01, 0x01, 0xff] } else { &[] };
    seq(&[&oid(oid_content), critical, &tlv(0x04, value)])
}

/// A subjectAltName extension with raw GeneralName encodings.
fn san_extension(general_names: &[&[u8]]) -> Vec<u8> {
    extension(OID_SUBJECT_ALT_NAME, false, &seq(general_names))
}

/// The parts of a DER request: (CertificationRequestInfo, signatureAlgorithm, signature bits).
fn split(der: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (_, csr) = X509CertificationRequest::from_der(der).unwrap();
    let info = csr.certification_request_info.raw.to_vec();
    let rest = &der[header_len(der) + info.len()..];
    let alg_len = element_len(rest);
    let algorithm = rest[..alg_len].to_vec();
    (info, algorithm, csr.signature_value.data.to_vec())
}

/// Length of the identifier and length octets of the DER element at the start of `der`.
fn header_len(der: &[u8]) -> usize {
    match der[1] {
        n if n < 0x80 => 2,
        n => 2 + usize::from(n & 0x7f),
    }
}

/// Length of the whole DER element at the start of `der`.
fn element_len(der: &[u8]) -> usize {
    let header = header_len(der);
    let content = match der[1] {
        n if n < 0x80 => usize::from(n),
        _ => der[2..header]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
    };
    header + content
}

// ---------------------------------------------------------------------------------------------
// Checking outcomes
// ---------------------------------------------------------------------------------------------

/// Asserts a `BadCsr` whose message contains one of `needles`, and returns the message.
#[track_caller]
fn assert_bad_csr(result: Result<CertificateRequest>, needles: &[&str]) -> String {
    assert_bad_csr_in("", result, needles)
}

/// [`assert_bad_csr`] for one case of a table, named in the failure.
#[track_caller]
fn assert_bad_csr_in(case: &str, result: Result<CertificateRequest>, needles: &[&str]) -> String {
    match result {
        Err(Error::BadCsr(msg)) => {
            assert!(
                needles.iter().any(|n| msg.contains(n)),
                "{case}: BadCsr({msg:?}) names none of {needles:?}"
            );
            msg
        }
        Err(other) => panic!("{case}: expected BadCsr naming one of {needles:?}, got {other:?}"),
        Ok(csr) => {
            panic!("{case}: expected BadCsr naming one of {needles:?}, but it parsed: {csr:?}")
        }
    }
}

/// Asserts an `UnsupportedKey` whose message contains `needle`, which may list alternatives
/// separated by `|`.
#[track_caller]
fn assert_weak_key(result: Result<CertificateRequest>, needle: &str) {
    assert_weak_key_in("", result, needle);
}

/// [`assert_weak_key`] for one case of a table, named in the failure.
#[track_caller]
fn assert_weak_key_in(case: &str, result: Result<CertificateRequest>, needle: &str) {
    match result {
        Err(Error::UnsupportedKey(msg)) => assert!(
            needle.split('|').any(|n| msg.contains(n)),
            "{case}: UnsupportedKey({msg:?}) does not name {needle:?}"
        ),
        Err(other) => panic!("{case}: expected UnsupportedKey naming {needle:?}, got {other:?}"),
        Ok(csr) => {
            panic!("{case}: expected UnsupportedKey naming {needle:?}, but it parsed: {csr:?}")
        }
    }
}

/// Any refusal is fine, as long as it is an error and not a panic.
#[track_caller]
fn assert_refused(input: &[u8], context: &str) {
    match CertificateRequest::parse(input) {
        Err(Error::BadCsr(_) | Error::UnsupportedKey(_)) => {}
        Err(other) => panic!("{context}: unexpected error kind {other:?}"),
        Ok(csr) => panic!("{context}: parsed {csr:?}"),
    }
}

/// A deterministic generator for "random" inputs, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// openssl-made vectors
// ---------------------------------------------------------------------------------------------

/// Runs openssl with `args` in `dir`; `None` when openssl is not installed (after a notice,
/// or a failure under `AGENTCA_REQUIRE_TOOLS=1`).
fn openssl(dir: &Path, args: &[&str]) -> Option<()> {
    let output = match std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            agentca_testkit::tools::missing("openssl", "crafting CSR test vectors");
            return None;
        }
        Err(e) => panic!("could not run openssl: {e}"),
    };
    assert!(
        output.status.success(),
        "openssl {args:?} failed:\n{}",
        agentca_testkit::tools::transcript(&output)
    );
    Some(())
}

/// A DER request signed by the key `openssl` generated with `keygen` (the arguments after
/// `openssl`, writing `key.pem`), with the digest `digest`.
fn openssl_csr(keygen: &[&str], digest: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    openssl(dir.path(), keygen)?;
    openssl(
        dir.path(),
        &[
            "req", "-new", "-key", "key.pem", "-subj", "/CN=weak", digest, "-outform", "DER",
            "-out", "csr.der",
        ],
    )?;
    Some(std::fs::read(dir.path().join("csr.der")).unwrap())
}

fn openssl_ec(curve: &str) -> Vec<&str> {
    vec![
        "ecparam", "-name", curve, "-genkey", "-noout", "-out", "key.pem",
    ]
}

fn openssl_rsa(bits: &'static str) -> Vec<&'static str> {
    vec![
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        bits,
        "-out",
        "key.pem",
    ]
}

/// Parses and asserts the answer came within the 1 s the test plan allows (CSR-2).
fn parse_timed(der: &[u8], what: &str) -> Result<CertificateRequest> {
    let start = Instant::now();
    let result = CertificateRequest::from_der(der);
    let elapsed = start.elapsed();
    assert!(
        elapsed < StdDuration::from_secs(1),
        "{what}: answered after {elapsed:?}, the limit is 1 s"
    );
    result
}

// ---------------------------------------------------------------------------------------------
// What agentca certifies
// ---------------------------------------------------------------------------------------------

#[test]
fn every_supported_key_type_parses_with_its_kind() {
    let cases: Vec<(KeyPair, KeyKind)> = vec![
        (p256(), KeyKind::EcdsaP256),
        (
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
            KeyKind::EcdsaP384,
        ),
        (
            KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            KeyKind::Ed25519,
        ),
        (rsa(rcgen::RsaKeySize::_2048), KeyKind::Rsa { bits: 2048 }),
        (rsa(rcgen::RsaKeySize::_3072), KeyKind::Rsa { bits: 3072 }),
        (rsa(rcgen::RsaKeySize::_4096), KeyKind::Rsa { bits: 4096 }),
    ];
    for (key, kind) in cases {
        let der = request(&params(), &key);
        let csr = CertificateRequest::from_der(&der).unwrap();
        assert_eq!(csr.key_kind(), kind);
        assert_eq!(
            csr.spki_der(),
            key.subject_public_key_info().as_slice(),
            "{kind}"
        );
        let hash: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
        assert_eq!(csr.key_sha256(), &hash, "{kind}");
        assert_eq!(csr.names(), &RequestedNames::default(), "{kind}");
        assert_eq!(csr.challenge_password(), None);
        assert_eq!(csr.key_kind().is_rsa(), matches!(kind, KeyKind::Rsa { .. }));

        // The same request as PEM gives the same result.
        let pem = params().serialize_request(&key).unwrap().pem().unwrap();
        let from_pem = CertificateRequest::parse(pem.as_bytes()).unwrap();
        assert_eq!(from_pem.key_kind(), kind);
        assert_eq!(from_pem.spki_der(), csr.spki_der());
    }
}

fn rsa(size: rcgen::RsaKeySize) -> KeyPair {
    KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size).unwrap()
}

#[test]
fn key_kind_names_round_trip() {
    for kind in [
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::Ed25519,
        KeyKind::Rsa { bits: 2048 },
        KeyKind::Rsa { bits: 3072 },
        KeyKind::Rsa { bits: 4096 },
    ] {
        assert_eq!(kind.to_string().parse::<KeyKind>().unwrap(), kind);
    }
    for bad in ["rsa-1024", "RSA-2048", "ecdsa-p521", "", "p256"] {
        assert!(bad.parse::<KeyKind>().is_err(), "{bad}");
    }
}

#[test]
fn requested_names_are_collected() {
    let key = p256();
    let der = request(
        &with_sans(vec![
            uri("spiffe://example.org/agent/alice"),
            dns("Alice.Example.ORG"),
            dns("alice.example.org"),
            dns("api.example.org"),
            SanType::IpAddress("10.1.2.3".parse().unwrap()),
            SanType::IpAddress("fd00::1".parse().unwrap()),
            SanType::IpAddress("10.1.2.3".parse().unwrap()),
        ]),
        &key,
    );
    let csr = CertificateRequest::from_der(&der).unwrap();
    assert_eq!(
        csr.names(),
        &RequestedNames {
            uris: vec!["spiffe://example.org/agent/alice".into()],
            // Lowercased, and a name asked for twice is collected once.
            dns: vec!["alice.example.org".into(), "api.example.org".into()],
            ips: vec!["10.1.2.3".parse().unwrap(), "fd00::1".parse().unwrap()],
            common_names: vec![],
        }
    );

    // URI names are kept exactly as sent: the issuer compares them byte for byte, so a
    // non-canonical spelling is refused there, never repaired here.
    let der = request(
        &with_sans(vec![
            uri("SPIFFE://Example.org/agent/a/"),
            uri("spiffe://example.org/agent/b"),
        ]),
        &key,
    );
    let csr = CertificateRequest::from_der(&der).unwrap();
    assert_eq!(
        csr.names().uris,
        [
            "SPIFFE://Example.org/agent/a/",
            "spiffe://example.org/agent/b"
        ]
    );
}

#[test]
fn challenge_password_is_extracted() {
    let key = p256();
    // As rcgen writes it (UTF8String)...
    let der = params()
        .serialize_request_with_attributes(
            &key,
            vec![rcgen::Attribute {
                oid: &[1, 2, 840, 113549, 1, 9, 7],
                values: tlv(0x31, &tlv(0x0c, b"s3cret-challenge")),
            }],
        )
        .unwrap()
        .der()
        .to_vec();
    let csr = CertificateRequest::from_der(&der).unwrap();
    assert_eq!(csr.challenge_password(), Some("s3cret-challenge"));

    // ...as a PrintableString (what many SCEP clients send), next to an extension request.
    let der = Raw::new(&key)
        .attribute(attribute(
            OID_CHALLENGE_PASSWORD,
            &[&tlv(0x13, b"Printable 123")],
        ))
        .attribute(extension_request(&[&san_extension(&[&tlv(
            0x86,
            b"spiffe://example.org/agent/scep",
        )])]))
        .signed_by(&key);
    let csr = CertificateRequest::from_der(&der).unwrap();
    assert_eq!(csr.challenge_password(), Some("Printable 123"));
    assert_eq!(csr.names().uris, ["spiffe://example.org/agent/scep"]);

    // Two challengePassword attributes: which one would a front end check?
    let der = Raw::new(&key)
        .attribute(challenge_password("one"))
        .attribute(challenge_password("two"))
        .signed_by(&key);
    assert_bad_csr(
        CertificateRequest::from_der(&der),
        &["more than one challengePassword"],
    );
}

#[test]
fn pem_variants_are_accepted() {
    let key = p256();
    let der = request(&with_sans(vec![dns("a.example.org")]), &key);
    let body = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone()));
    for input in [
        body.clone(),
        pem::encode(&pem::Pem::new("NEW CERTIFICATE REQUEST", der.clone())),
        format!("\n\n  {body}"),
        body.replace('\n', "\r\n"),
    ] {
        let csr = CertificateRequest::parse(input.as_bytes()).unwrap();
        assert_eq!(csr.names().dns, ["a.example.org"]);
    }
    // Raw DER through `parse` too.
    CertificateRequest::parse(&der).unwrap();
}

#[test]
fn harmless_requests_are_parsed_and_ignored() {
    // Things a stock client may put in a request that the profile decides anyway: they are
    // not refused, and nothing of them reaches a certificate (the issuer tests check that).
    let key = p256();
    let mut p = with_sans(vec![uri("spiffe://example.org/agent/a")]);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyAgreement,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &PRIVATE_OID,
        tlv(0x05, &[]),
    ));
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
        foreign_aia(),
    ));
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &[2, 5, 29, 31],
        foreign_crldp(),
    ));
    let csr = CertificateRequest::from_der(&request(&p, &key)).unwrap();
    assert_eq!(csr.names().uris, ["spiffe://example.org/agent/a"]);
}

/// An AuthorityInfoAccess value pointing at someone else's OCSP responder.
fn foreign_aia() -> Vec<u8> {
    let ocsp = [0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    seq(&[&seq(&[
        &oid(&ocsp),
        &tlv(0x86, b"http://evil.example/ocsp"),
    ])])
}

/// A CRLDistributionPoints value pointing at someone else's CRL.
fn foreign_crldp() -> Vec<u8> {
    // DistributionPoint { distributionPoint [0] { fullName [0] { uniformResourceIdentifier } } }
    let full_name = tlv(0xa0, &tlv(0x86, b"http://evil.example/crl"));
    seq(&[&seq(&[&tlv(0xa0, &full_name)])])
}

// ---------------------------------------------------------------------------------------------
// CSR-1: signatures
// ---------------------------------------------------------------------------------------------

#[test]
fn csr1_every_flipped_signature_byte_is_refused() {
    for key in [
        p256(),
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        rsa(rcgen::RsaKeySize::_2048),
    ] {
        let der = request(&with_sans(vec![dns("a.example.org")]), &key);
        CertificateRequest::from_der(&der).unwrap();
        let (info, algorithm, signature) = split(&der);
        assert_eq!(
            assemble(&info, &algorithm, &signature),
            der,
            "split is exact"
        );
        for i in 0..signature.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut sig = signature.clone();
                sig[i] ^= mask;
                assert_bad_csr(
                    CertificateRequest::from_der(&assemble(&info, &algorithm, &sig)),
                    &["signature does not verify"],
                );
            }
        }
        // A truncated or empty signature.
        for sig in [&signature[..signature.len() - 1], &[][..]] {
            assert_bad_csr(
                CertificateRequest::from_der(&assemble(&info, &algorithm, sig)),
                &["signature does not verify"],
            );
        }
    }
}

#[test]
fn csr1_no_change_to_a_signed_byte_yields_an_accepted_request() {
    let key = p256();
    let der = request(
        &with_sans(vec![
            uri("spiffe://example.org/agent/a"),
            dns("a.example.org"),
        ]),
        &key,
    );
    let (info, algorithm, signature) = split(&der);
    for i in 0..info.len() {
        for mask in [0x01u8, 0x20, 0x80] {
            let mut mutated = info.clone();
            mutated[i] ^= mask;
            if let Ok(csr) =
                CertificateRequest::from_der(&assemble(&mutated, &algorithm, &signature))
            {
                panic!(
                    "changing signed byte {i} with {mask:#04x} still gives an accepted request: {csr:?}"
                );
            }
        }
    }
    // The signature algorithm is not signed, but every change to its OID is refused (its
    // framing is `non_der_framing_is_refused`'s business).
    for i in 4..algorithm.len() {
        let mut mutated = algorithm.clone();
        mutated[i] ^= 0x01;
        assert!(
            CertificateRequest::from_der(&assemble(&info, &mutated, &signature)).is_err(),
            "algorithm byte {i}"
        );
    }
}

#[test]
fn csr1_weak_digests_are_refused() {
    let cases = [
        (openssl_rsa("rsa_keygen_bits:2048"), "-sha1"),
        (openssl_rsa("rsa_keygen_bits:2048"), "-md5"),
        (openssl_ec("prime256v1"), "-sha1"),
    ];
    for (keygen, digest) in cases {
        let Some(der) = openssl_csr(&keygen, digest) else {
            return;
        };
        assert_bad_csr(CertificateRequest::from_der(&der), &["MD5 or SHA-1"]);
    }
    // The same keys with SHA-256 are fine: the digest alone was the problem.
    let Some(der) = openssl_csr(&openssl_ec("prime256v1"), "-sha256") else {
        return;
    };
    assert_eq!(
        CertificateRequest::from_der(&der).unwrap().key_kind(),
        KeyKind::EcdsaP256
    );
}

#[test]
fn csr1_signature_algorithm_must_match_the_key() {
    let ec = p256();
    let der = request(&params(), &ec);
    let (info, _, signature) = split(&der);
    for algorithm in [RSA_SHA256, ECDSA_SHA384, ED25519] {
        assert_bad_csr(
            CertificateRequest::from_der(&assemble(&info, algorithm, &signature)),
            &["signature does not verify"],
        );
    }
    // An Ed25519 request relabelled as ECDSA, and an RSA one as ECDSA.
    for key in [
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        rsa(rcgen::RsaKeySize::_2048),
    ] {
        let der = request(&params(), &key);
        let (info, _, signature) = split(&der);
        assert_bad_csr(
            CertificateRequest::from_der(&assemble(&info, ECDSA_SHA256, &signature)),
            &["signature does not verify"],
        );
    }
    // A valid signature over a *different* request.
    let other = request(&with_sans(vec![dns("b.example.org")]), &ec);
    let (_, algorithm, other_signature) = split(&other);
    assert_bad_csr(
        CertificateRequest::from_der(&assemble(&info, &algorithm, &other_signature)),
        &["signature does not verify"],
    );
}

// ---------------------------------------------------------------------------------------------
// CSR-2: weak keys, each answered within 1 s
// ---------------------------------------------------------------------------------------------

#[test]
fn csr2_weak_keys_made_by_openssl_are_refused_quickly() {
    /// openssl commands that leave the key in `key.pem`, and what the refusal must say.
    struct Case {
        what: &'static str,
        keygen: Vec<Vec<&'static str>>,
        needle: &'static str,
    }
    let case = |what, keygen: Vec<&'static str>, needle| Case {
        what,
        keygen: vec![keygen],
        needle,
    };
    let mut cases = vec![
        case(
            "RSA-1024",
            openssl_rsa("rsa_keygen_bits:1024"),
            "RSA-1024 is too small",
        ),
        case(
            "RSA-2047",
            openssl_rsa("rsa_keygen_bits:2047"),
            "RSA-2047 is too small",
        ),
        case(
            "RSA-2052",
            openssl_rsa("rsa_keygen_bits:2052"),
            "not a multiple of 8",
        ),
        case("P-192", openssl_ec("prime192v1"), "P-192"),
        case("P-224", openssl_ec("secp224r1"), "P-224"),
        case("secp256k1", openssl_ec("secp256k1"), "secp256k1"),
        case(
            "brainpoolP256r1",
            openssl_ec("brainpoolP256r1"),
            "brainpool",
        ),
        case(
            "brainpoolP384r1",
            openssl_ec("brainpoolP384r1"),
            "brainpool",
        ),
        case("P-521", openssl_ec("secp521r1"), "P-521"),
        // Refused either way; that the refusal says why is pinned by
        // `csr2_explicit_parameters_are_recognised_as_such`.
        case(
            "explicit P-256 parameters",
            vec![
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-param_enc",
                "explicit",
                "-out",
                "key.pem",
            ],
            "explicit EC curve parameters|is not supported",
        ),
    ];
    cases.push(Case {
        what: "DSA-2048",
        keygen: vec![
            vec![
                "genpkey",
                "-genparam",
                "-algorithm",
                "DSA",
                "-pkeyopt",
                "dsa_paramgen_bits:2048",
                "-out",
                "dsa-params.pem",
            ],
            vec!["genpkey", "-paramfile", "dsa-params.pem", "-out", "key.pem"],
        ],
        needle: "not supported",
    });
    for Case {
        what,
        keygen,
        needle,
    } in cases
    {
        let dir = tempfile::tempdir().unwrap();
        for command in keygen {
            if openssl(dir.path(), &command).is_none() {
                return;
            }
        }
        openssl(
            dir.path(),
            &[
                "req", "-new", "-key", "key.pem", "-subj", "/CN=weak", "-sha256", "-outform",
                "DER", "-out", "csr.der",
            ],
        );
        let der = std::fs::read(dir.path().join("csr.der")).unwrap();
        assert_weak_key_in(what, parse_timed(&der, what), needle);
    }
}

#[test]
fn csr2_rsa_exponent_3_is_accepted() {
    // BR §6.1.6: the exponent MUST be odd and at least 3; 65537 and above is only a SHOULD.
    let Some(der) = openssl_csr(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-pkeyopt",
            "rsa_keygen_pubexp:3",
            "-out",
            "key.pem",
        ],
        "-sha256",
    ) else {
        return;
    };
    assert_eq!(
        CertificateRequest::from_der(&der).unwrap().key_kind(),
        KeyKind::Rsa { bits: 2048 }
    );
}

/// A SubjectPublicKeyInfo for an RSA key with this modulus and exponent (big-endian bytes).
fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let integer = |b: &[u8]| {
        let mut content = b.to_vec();
        if content.first().is_none_or(|b| b & 0x80 != 0) {
            content.insert(0, 0);
        }
        tlv(0x02, &content)
    };
    let key = seq(&[&integer(modulus), &integer(exponent)]);
    let algorithm = seq(&[&oid(OID_RSA_ENCRYPTION), &[0x05, 0x00]]);
    seq(&[&algorithm, &tlv(0x03, &[&[0u8][..], &key].concat())])
}

fn ec_spki(parameters: Option<&[u8]>, point: &[u8]) -> Vec<u8> {
    let algorithm = match parameters {
        Some(p) => seq(&[&oid(OID_EC_PUBLIC_KEY), p]),
        None => seq(&[&oid(OID_EC_PUBLIC_KEY)]),
    };
    seq(&[&algorithm, &tlv(0x03, &[&[0u8][..], point].concat())])
}

/// A request carrying `spki`, signed by an unrelated P-256 key. The key checks run before the
/// signature is verified (a key agentca will never certify is not worth a verification), so
/// each case is refused for its key; the assertions name the key defect, so a signature error
/// could not pass for one.
fn request_with_spki(spki: Vec<u8>) -> Vec<u8> {
    let signer = p256();
    let mut raw = Raw::new(&signer);
    raw.spki = spki;
    raw.signed_by(&signer)
}

#[test]
fn csr2_crafted_rsa_keys_are_refused_quickly() {
    let real = rsa(rcgen::RsaKeySize::_2048);
    let der = request(&params(), &real);
    let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
    let Ok(PublicKey::RSA(key)) = csr.certification_request_info.subject_pki.parsed() else {
        panic!("not RSA");
    };
    let n = strip_leading_zeros(key.modulus).to_vec();
    let mut even = n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    let mut big_e = vec![0x01];
    big_e.extend([0u8; 32]);
    big_e.push(0x01); // 2^264 + 1: more than 32 octets
    let huge_modulus = {
        let mut m = vec![0xc5; 8200 / 8];
        *m.last_mut().unwrap() |= 1;
        m
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("e = 1", rsa_spki(&n, &[1]), "smaller than 3"),
        ("e = 0", rsa_spki(&n, &[0]), "smaller than 3"),
        ("e = 2", rsa_spki(&n, &[2]), "smaller than 3"),
        ("e = 4", rsa_spki(&n, &[4]), "even"),
        ("e = 65536", rsa_spki(&n, &[1, 0, 0]), "even"),
        (
            "e = 2^256",
            rsa_spki(&n, &[&[1u8][..], &[0u8; 32]].concat()),
            "larger than 2^256",
        ),
        ("e = 2^264 + 1", rsa_spki(&n, &big_e), "larger than 2^256"),
        ("even modulus", rsa_spki(&even, &[1, 0, 1]), "even"),
        (
            "8200-bit modulus",
            rsa_spki(&huge_modulus, &[1, 0, 1]),
            "larger than the 8192-bit",
        ),
        ("1-bit modulus", rsa_spki(&[1], &[1, 0, 1]), "too small"),
        (
            "garbage RSA key",
            seq(&[
                &seq(&[&oid(OID_RSA_ENCRYPTION), &[0x05, 0x00]]),
                &tlv(0x03, &[0, 0x30, 0x03, 0x02, 0x01]),
            ]),
            "unparseable RSA",
        ),
    ];
    for (what, spki, needle) in cases {
        assert_weak_key_in(what, parse_timed(&request_with_spki(spki), what), needle);
    }
}

#[test]
fn csr2_the_largest_rsa_key_is_answered_quickly() {
    // 8192 bits is the largest modulus looked at: its Fermat check and signature check are
    // the most a request can make the CA compute. A random odd modulus with e = 2^256 − 1.
    let mut rng = XorShift(0x5eed_0003);
    let mut modulus = rng.bytes(8192 / 8);
    modulus[0] |= 0x80;
    *modulus.last_mut().unwrap() |= 1;
    let exponent = [0xffu8; 32];
    let result = parse_timed(
        &request_with_spki(rsa_spki(&modulus, &exponent)),
        "RSA-8192",
    );
    assert_bad_csr(result, &["signature does not verify"]);
}

#[test]
fn csr2_crafted_ec_and_other_keys_are_refused_quickly() {
    let real = p256();
    let spki = real.subject_public_key_info();
    // The uncompressed point is the last 65 bytes of a P-256 SPKI.
    let point = spki[spki.len() - 65..].to_vec();
    let mut compressed = vec![0x02 | (point[64] & 1)];
    compressed.extend_from_slice(&point[1..33]);
    // CVE-2022-0778 made OpenSSL loop on explicit parameters whose "prime" is not prime; such
    // parameters are refused before anything looks at them.
    let looping_parameters = seq(&[
        &tlv(0x02, &[1]),
        &seq(&[
            &oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x01, 0x01]),
            &tlv(0x02, &[0x02, 0xb9]), // 697 = 17 · 41
        ]),
        &seq(&[&tlv(0x04, &[0x00]), &tlv(0x04, &[0x01])]),
        &tlv(0x04, &[0x04, 0x01, 0x02]),
        &tlv(0x02, &[0x01, 0x01]),
    ]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "no curve",
            ec_spki(None, &point),
            "without curve parameters",
        ),
        (
            "NULL curve",
            ec_spki(Some(&[0x05, 0x00]), &point),
            "explicit EC curve parameters|is not supported",
        ),
        (
            "explicit parameters",
            ec_spki(Some(&looping_parameters), &point),
            "explicit EC curve parameters|is not supported",
        ),
        (
            "compressed point",
            ec_spki(Some(&oid(OID_P256)), &compressed),
            "uncompressed point",
        ),
        (
            "short point",
            ec_spki(Some(&oid(OID_P256)), &point[..64]),
            "uncompressed point",
        ),
        (
            "P-384 curve, P-256 point",
            ec_spki(Some(&oid(&[0x2b, 0x81, 0x04, 0x00, 0x22])), &point),
            "uncompressed point",
        ),
        (
            "unknown curve",
            ec_spki(
                Some(&oid(&[
                    0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xb2, 0x03, 0x02,
                ])),
                &point,
            ),
            "not supported",
        ),
        (
            "Ed25519 with parameters",
            seq(&[
                &seq(&[&oid(OID_ED25519), &[0x05, 0x00]]),
                &tlv(0x03, &[&[0u8][..], &[7u8; 32]].concat()),
            ]),
            "parameters",
        ),
        (
            "Ed25519 of 31 bytes",
            seq(&[
                &seq(&[&oid(OID_ED25519)]),
                &tlv(0x03, &[&[0u8][..], &[7u8; 31]].concat()),
            ]),
            "not 32 bytes",
        ),
        (
            "X25519",
            seq(&[
                &seq(&[&oid(OID_X25519)]),
                &tlv(0x03, &[&[0u8][..], &[7u8; 32]].concat()),
            ]),
            "not supported",
        ),
    ];
    for (what, spki, needle) in cases {
        assert_weak_key_in(what, parse_timed(&request_with_spki(spki), what), needle);
    }
}

#[test]

fn csr2_explicit_parameters_are_recognised_as_such() {
    // `Any::as_oid` reads the content octets of *any* element as an OID, so explicit
    // parameters (a SEQUENCE) are not recognised: they are refused only because their bytes
    // happen to name no supported curve, with an "EC curve 02 01 01 30 2c ..." message.
    let Some(der) = openssl_csr(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-param_enc",
            "explicit",
            "-out",
            "key.pem",
        ],
        "-sha256",
    ) else {
        return;
    };
    assert_weak_key(
        parse_timed(&der, "explicit parameters"),
        "explicit EC curve parameters",
    );
    let point = p256().subject_public_key_info()[26..].to_vec();
    assert_weak_key(
        CertificateRequest::from_der(&request_with_spki(ec_spki(Some(&[0x05, 0x00]), &point))),
        "explicit EC curve parameters",
    );
}

#[test]

fn csr2_ec_curve_parameters_must_be_an_object_identifier() {
    // The same content octets as the P-256 OID under another tag (SEQUENCE, [0], OCTET
    // STRING): x509-parser's signature check reads them the same lenient way, so such a
    // request verifies and is accepted as P-256 with a SubjectPublicKeyInfo no certificate
    // should carry, and a key hash different from the key's real one.
    let key = p256();
    let point = key.subject_public_key_info()[26..].to_vec();
    for tag in [0x30u8, 0xa0, 0x04, 0x80] {
        let mut raw = Raw::new(&key);
        raw.spki = ec_spki(Some(&tlv(tag, OID_P256)), &point);
        let result = CertificateRequest::from_der(&raw.signed_by(&key));
        assert!(
            matches!(result, Err(Error::UnsupportedKey(_) | Error::BadCsr(_))),
            "parameters tagged {tag:#04x}: {result:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// CSR-3: keys that factor
// ---------------------------------------------------------------------------------------------

/// Two consecutive 1024-bit primes, as printed by `testdata/csr/close_primes.py` (a seeded
/// search with 40 Miller–Rabin rounds each). Their product is a 2048-bit modulus Fermat's method factors in
/// its first step, as with the broken generators of CVE-2022-26320.
const CLOSE_P: &str = "d5cd114c0b0cee3f5f002671eadb60d6c471b965c912af8df384dd99b12e2590d8e766cdf0fa82f39c526962f6ab2b3dc7b7e3c1ef1d9361e3beafbabc1dea508d8a3d6c17a0daa407c8b2b237b8c14c5b60059d4a093cc6b063656384e0af56a9db1d9f15b683b1e3f701added8beef5d506a7b0314522624c737a65c072953";
const CLOSE_Q: &str = "d5cd114c0b0cee3f5f002671eadb60d6c471b965c912af8df384dd99b12e2590d8e766cdf0fa82f39c526962f6ab2b3dc7b7e3c1ef1d9361e3beafbabc1dea508d8a3d6c17a0daa407c8b2b237b8c14c5b60059d4a093cc6b063656384e0af56a9db1d9f15b683b1e3f701added8beef5d506a7b0314522624c737a65c07298b";

/// A PKCS#1 RSAPrivateKey (RFC 8017 §A.1.2) from two primes and e = 65537.
fn rsa_private_key(p: &BigUint, q: &BigUint) -> Vec<u8> {
    let one = BigUint::from(1u32);
    let e = BigUint::from(65_537u32);
    let n = p * q;
    let phi = (p - &one) * (q - &one);
    let d = e.modinv(&phi).unwrap();
    let dp = &d % (p - &one);
    let dq = &d % (q - &one);
    let qinv = q.modinv(p).unwrap();
    let integer = |v: &BigUint| {
        let mut b = v.to_bytes_be();
        if b[0] & 0x80 != 0 {
            b.insert(0, 0);
        }
        tlv(0x02, &b)
    };
    seq(&[
        &tlv(0x02, &[0]),
        &integer(&n),
        &integer(&e),
        &integer(&d),
        &integer(p),
        &integer(q),
        &integer(&dp),
        &integer(&dq),
        &integer(&qinv),
    ])
}

fn close_primes_key() -> KeyPair {
    let p = BigUint::parse_bytes(CLOSE_P.as_bytes(), 16).unwrap();
    let q = BigUint::parse_bytes(CLOSE_Q.as_bytes(), 16).unwrap();
    let pkcs1 = rsa_private_key(&p, &q);
    let der = rustls_pki_types::PrivateKeyDer::Pkcs1(pkcs1.into());
    KeyPair::from_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256).unwrap()
}

#[test]
fn csr3_fermat_factorable_key_is_refused() {
    let key = close_primes_key();
    let der = request(&with_sans(vec![uri("spiffe://example.org/agent/a")]), &key);
    // The request itself is sound: a verifier that does not look at the primes accepts it.
    let (_, parsed) = X509CertificationRequest::from_der(&der).unwrap();
    parsed.verify_signature().unwrap();
    assert_weak_key(parse_timed(&der, "close primes"), "Fermat");
}

#[test]
fn csr3_fermat_check_is_precise() {
    let p = BigUint::parse_bytes(CLOSE_P.as_bytes(), 16).unwrap();
    let q = BigUint::parse_bytes(CLOSE_Q.as_bytes(), 16).unwrap();
    assert!(fermat_factorable(&(&p * &q).to_bytes_be()));
    // A perfect square is the degenerate case p = q.
    assert!(fermat_factorable(&(&p * &p).to_bytes_be()));
    // The sieve never rules out a square, whatever its size.
    let mut k = BigUint::from(3u32);
    for _ in 0..300 {
        assert!(may_be_square(&(&k * &k)), "{k}");
        k = &k * 7u32 + 5u32;
    }
    // A factorization Fermat's method reaches only after many rounds is still found: with
    // p = a + d and q = a − d, n = a² − d², and the search starts about d²/2a = 50 below a.
    let a = BigUint::from(1u32) << 1000u32;
    let d = BigUint::from(10u32) << 500u32;
    assert!(fermat_factorable(&((&a + &d) * (&a - &d)).to_bytes_be()));
    // Real keys' moduli are not flagged.
    for _ in 0..3 {
        let key = rsa(rcgen::RsaKeySize::_2048);
        let der = request(&params(), &key);
        CertificateRequest::from_der(&der).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// CSR-4: asking for more than the profile grants
// ---------------------------------------------------------------------------------------------

fn name_constraints_value() -> Vec<u8> {
    // NameConstraints { permittedSubtrees [0] { GeneralSubtree { base dNSName } } }
    let subtree = seq(&[&tlv(0x82, b"example.org")]);
    seq(&[&tlv(0xa0, &subtree)])
}

#[test]
fn csr4_extension_smuggling_is_refused() {
    let mut cases: Vec<(&str, CertificateParams, &[&str])> = Vec::new();

    let mut p = params();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    cases.push(("cA=TRUE", p, &["cA=TRUE"]));
    let mut p = params();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    cases.push(("cA=TRUE, pathLen 0", p, &["cA=TRUE"]));

    for (what, usage) in [
        ("keyCertSign", KeyUsagePurpose::KeyCertSign),
        ("cRLSign", KeyUsagePurpose::CrlSign),
    ] {
        let mut p = params();
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, usage];
        cases.push((what, p, &["keyCertSign or cRLSign"]));
    }

    cases.push((
        "nameConstraints",
        with_extension(&[2, 5, 29, 30], true, name_constraints_value()),
        &["name constraints"],
    ));
    cases.push((
        "non-critical nameConstraints",
        with_extension(&[2, 5, 29, 30], false, name_constraints_value()),
        &["name constraints"],
    ));

    for (what, eku) in [
        ("anyExtendedKeyUsage", ExtendedKeyUsagePurpose::Any),
        ("codeSigning", ExtendedKeyUsagePurpose::CodeSigning),
        ("emailProtection", ExtendedKeyUsagePurpose::EmailProtection),
        ("timeStamping", ExtendedKeyUsagePurpose::TimeStamping),
        ("OCSPSigning", ExtendedKeyUsagePurpose::OcspSigning),
        (
            "private EKU",
            ExtendedKeyUsagePurpose::Other(PRIVATE_OID.to_vec()),
        ),
    ] {
        let mut p = params();
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, eku];
        cases.push((
            what,
            p,
            &["extended key usage other than clientAuth or serverAuth"],
        ));
    }

    cases.push((
        "critical unknown extension",
        with_extension(&PRIVATE_OID, true, tlv(0x05, &[])),
        &["unsupported critical extension 1.3.6.1.4.1.55555.1"],
    ));
    cases.push((
        "critical foreign AIA",
        with_extension(&[1, 3, 6, 1, 5, 5, 7, 1, 1], true, foreign_aia()),
        &["unsupported critical extension 1.3.6.1.5.5.7.1.1"],
    ));
    cases.push((
        "critical foreign CRL distribution point",
        with_extension(&[2, 5, 29, 31], true, foreign_crldp()),
        &["unsupported critical extension 2.5.29.31"],
    ));
    cases.push((
        "email SAN",
        with_sans(vec![SanType::Rfc822Name(
            "a@example.org".try_into().unwrap(),
        )]),
        &["unsupported type (email)"],
    ));
    cases.push((
        "otherName SAN",
        with_sans(vec![SanType::OtherName((
            vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3],
            OtherNameValue::Utf8String("admin@example.org".into()),
        ))]),
        &["unsupported type (otherName)"],
    ));

    let mut p = params();
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &PRIVATE_OID,
        tlv(0x05, &[]),
    ));
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &PRIVATE_OID,
        tlv(0x05, &[]),
    ));
    cases.push(("duplicate unknown extension", p, &["requested twice"]));
    let mut p = with_sans(vec![dns("a.example.org")]);
    p.custom_extensions.push(CustomExtension::from_oid_content(
        &[2, 5, 29, 17],
        seq(&[&tlv(0x82, b"b.example.org")]),
    ));
    cases.push(("duplicate subjectAltName", p, &["requested twice"]));
    cases.push((
        "unparseable subjectAltName",
        with_extension(&[2, 5, 29, 17], false, vec![0x30, 0x05, 0x86, 0x09]),
        &["does not parse"],
    ));
    cases.push((
        "unparseable basicConstraints",
        with_extension(&[2, 5, 29, 19], false, vec![0x04, 0x00]),
        &["does not parse"],
    ));

    for (what, name) in [
        ("wildcard DNS name", "*.example.org"),
        ("underscore in DNS name", "a_b.example.org"),
        ("empty DNS label", "a..example.org"),
        ("leading hyphen", "-a.example.org"),
        ("space", "a b.example.org"),
        ("trailing dot", "a.example.org."),
    ] {
        cases.push((what, with_sans(vec![dns(name)]), &["DNS name"]));
    }

    let key = p256();
    for (what, p, needles) in cases {
        let der = request(&p, &key);
        assert_bad_csr_in(what, CertificateRequest::from_der(&der), needles);
    }
}

#[test]
fn csr4_odd_general_names_are_refused() {
    // GeneralName CHOICEs a certificate never carries, including the two OpenSSL mishandled
    // (x400Address: CVE-2023-0286; ediPartyName).
    let directory_name = tlv(
        0xa4,
        &seq(&[&tlv(
            0x31,
            &seq(&[&oid(&[0x55, 0x04, 0x03]), &tlv(0x0c, b"admin")]),
        )]),
    );
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "directoryName",
            directory_name,
            &["unsupported type (directoryName)"],
        ),
        (
            "registeredID",
            tlv(0x88, &[0x2b, 0x06, 0x01]),
            &["unsupported type (registeredID)"],
        ),
        (
            "x400Address",
            tlv(0xa3, &seq(&[])),
            &["unsupported type (x400Address)"],
        ),
        (
            "ediPartyName",
            tlv(0xa5, &tlv(0xa1, &tlv(0x0c, b"x"))),
            &["unsupported type (ediPartyName)"],
        ),
        (
            "5-byte IP address",
            tlv(0x87, &[10, 0, 0, 1, 0]),
            &["neither 4 nor 16"],
        ),
        ("empty IP address", tlv(0x87, &[]), &["neither 4 nor 16"]),
        (
            "IA5 DNS name with high bytes",
            tlv(0x82, "bücher.example".as_bytes()),
            &["DNS name"],
        ),
    ];
    let key = p256();
    for (what, name, needles) in cases {
        let der = Raw::new(&key)
            .attribute(extension_request(&[&san_extension(&[&name])]))
            .signed_by(&key);
        assert_bad_csr_in(what, CertificateRequest::from_der(&der), needles);
    }
}

#[test]
fn csr4_two_extension_requests_are_refused() {
    let key = p256();
    let der = Raw::new(&key)
        .attribute(extension_request(&[&san_extension(&[&tlv(
            0x82,
            b"a.example.org",
        )])]))
        .attribute(extension_request(&[&san_extension(&[&tlv(
            0x82,
            b"b.example.org",
        )])]))
        .signed_by(&key);
    assert_bad_csr(
        CertificateRequest::from_der(&der),
        &["more than one extensionRequest"],
    );
    // One extension request, whose single extension is fine, is accepted: the refusal above
    // was for the repetition.
    let der = Raw::new(&key)
        .attribute(extension_request(&[&san_extension(&[&tlv(
            0x82,
            b"a.example.org",
        )])]))
        .signed_by(&key);
    assert_eq!(
        CertificateRequest::from_der(&der).unwrap().names().dns,
        ["a.example.org"]
    );
}

// ---------------------------------------------------------------------------------------------
// CSR-5: subject injection
// ---------------------------------------------------------------------------------------------

/// Subject strings that broke template-based CAs. The subject is never used, so these parse;
/// the issuer tests check the certificate's subject is empty.
const INJECTED_COMMON_NAMES: [&str; 6] = [
    "a\"b",
    "x\", \"isCA\": true, \"y\": \"",
    "nul\0byte",
    "line\nbreak\r\n",
    "right-to-left \u{202e}gpj.exe",
    "{{.Insecure.CR.Subject}} ${jndi:ldap://x}",
];

#[test]
fn csr5_injected_subjects_parse_and_are_not_kept() {
    let key = p256();
    for cn in INJECTED_COMMON_NAMES {
        let mut p = params();
        p.distinguished_name
            .push(DnType::CommonName, DnValue::Utf8String(cn.into()));
        p.distinguished_name.push(DnType::OrganizationName, cn);
        let csr = CertificateRequest::from_der(&request(&p, &key)).unwrap();
        // Kept only to be compared with an ACME order's names, exactly as sent.
        assert_eq!(
            csr.names(),
            &RequestedNames {
                common_names: vec![cn.to_owned()],
                ..RequestedNames::default()
            },
            "{cn:?}"
        );
    }
    // A 20 kB common name fits the size limit and is equally inert.
    let mut p = params();
    p.distinguished_name
        .push(DnType::CommonName, "A".repeat(20_000));
    CertificateRequest::parse(&request(&p, &key)).unwrap();
}

#[test]
fn csr5_a_60_kb_common_name_is_refused_by_size() {
    let key = p256();
    let mut p = params();
    p.distinguished_name
        .push(DnType::CommonName, "\u{202e}\"".repeat(15_000));
    let der = request(&p, &key);
    assert!(der.len() > 60_000);
    assert_bad_csr(CertificateRequest::parse(&der), &["32768-byte limit"]);
}

// ---------------------------------------------------------------------------------------------
// Garbage (PARSE-1)
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_input_is_refused() {
    assert_bad_csr(CertificateRequest::parse(b""), &["empty"]);
    assert_bad_csr(CertificateRequest::from_der(b""), &["not a DER"]);
    assert_bad_csr(CertificateRequest::parse(b"   \n"), &["not a DER"]);
}

#[test]
fn every_truncation_of_a_valid_request_is_refused() {
    let key = p256();
    let der = request(
        &with_sans(vec![
            uri("spiffe://example.org/agent/a"),
            dns("a.example.org"),
        ]),
        &key,
    );
    for len in 0..der.len() {
        assert_refused(&der[..len], &format!("prefix of {len} bytes"));
        assert!(CertificateRequest::from_der(&der[..len]).is_err());
    }
    let pem = params().serialize_request(&key).unwrap().pem().unwrap();
    let lines: Vec<&str> = pem.lines().collect();
    for keep in 1..lines.len() {
        let cut = lines[..keep].join("\n");
        assert_refused(cut.as_bytes(), &format!("PEM cut after {keep} lines"));
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let mut rng = XorShift(0x5eed_0001);
    let big = rng.bytes(10 * 1024 * 1024);
    let start = Instant::now();
    let msg = assert_bad_csr(CertificateRequest::parse(&big), &["32768-byte limit"]);
    assert!(msg.contains("10485760 bytes"), "{msg}");
    assert!(
        start.elapsed() < StdDuration::from_millis(200),
        "{:?}",
        start.elapsed()
    );

    // The limit is inclusive: MAX_CSR_LEN bytes are parsed (and refused as garbage), one more
    // is refused by size.
    let at_limit = rng.bytes(MAX_CSR_LEN);
    assert_bad_csr(
        CertificateRequest::parse(&at_limit),
        &["not a DER", "invalid PEM"],
    );
    let over = rng.bytes(MAX_CSR_LEN + 1);
    assert_bad_csr(CertificateRequest::parse(&over), &["limit"]);
    // A valid request padded past the limit with PEM whitespace is refused by size too.
    let key = p256();
    let pem = params().serialize_request(&key).unwrap().pem().unwrap();
    let padded = format!("{pem}{}", "\n".repeat(MAX_CSR_LEN));
    assert_bad_csr(CertificateRequest::parse(padded.as_bytes()), &["limit"]);
}

#[test]
fn wrong_pem_types_are_refused() {
    let key = p256();
    let private = key.serialize_pem();
    let cert = params().self_signed(&key).unwrap().pem();
    let public = key.public_key_pem();
    for (input, label) in [
        (private.as_str(), "PRIVATE KEY"),
        (cert.as_str(), "CERTIFICATE"),
        (public.as_str(), "PUBLIC KEY"),
    ] {
        let msg = assert_bad_csr(
            CertificateRequest::parse(input.as_bytes()),
            &[&format!("is a {label}, not a CERTIFICATE REQUEST")],
        );
        // The refusal names the type, never the contents (a private key must not be echoed).
        let body: String = input.lines().nth(1).unwrap().chars().take(40).collect();
        assert!(!msg.contains(&body), "{msg}");
    }
    // The right label around the wrong contents.
    let cert_der = params().self_signed(&key).unwrap().der().to_vec();
    let relabelled = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", cert_der));
    assert_bad_csr(
        CertificateRequest::parse(relabelled.as_bytes()),
        &["not a DER"],
    );
    // Broken PEM.
    for broken in [
        "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n",
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE-----\n",
    ] {
        assert_bad_csr(
            CertificateRequest::parse(broken.as_bytes()),
            &["invalid PEM"],
        );
    }
}

#[test]
fn random_bytes_never_parse_or_panic() {
    let mut rng = XorShift(0x5eed_0002);
    let mut lengths: Vec<usize> = (0..300).collect();
    lengths.extend([511, 512, 1024, 4096, 16_384, MAX_CSR_LEN]);
    for len in lengths {
        for _ in 0..4 {
            let bytes = rng.bytes(len);
            assert_refused_or_empty(&bytes, len);
            // The same bytes behind a plausible SEQUENCE header reach deeper into the parser.
            let mut framed = tlv(0x30, &bytes);
            framed.truncate(MAX_CSR_LEN);
            assert_refused(&framed, &format!("framed random bytes ({len})"));
            let inner = tlv(
                0x30,
                &tlv(0x30, &[&[0x02, 0x01, 0x00][..], &bytes].concat()),
            );
            if inner.len() <= MAX_CSR_LEN {
                assert_refused(&inner, &format!("random request info ({len})"));
            }
        }
    }
}

fn assert_refused_or_empty(bytes: &[u8], len: usize) {
    if bytes.is_empty() {
        assert_bad_csr(CertificateRequest::parse(bytes), &["empty"]);
    } else {
        assert_refused(bytes, &format!("random bytes ({len})"));
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let key = p256();
    let der = request(&params(), &key);
    for tail in [&[0u8][..], b"junk", &[0x30, 0x00], &der] {
        let input = [&der[..], tail].concat();
        assert_bad_csr(CertificateRequest::from_der(&input), &["trailing bytes"]);
        assert_bad_csr(CertificateRequest::parse(&input), &["trailing bytes"]);
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", input));
        assert_bad_csr(
            CertificateRequest::parse(pem.as_bytes()),
            &["trailing bytes"],
        );
    }
}

/// `depth` SEQUENCEs, each holding the next, around `core`.
fn nested(depth: usize, core: &[u8]) -> Vec<u8> {
    let mut der = core.to_vec();
    for _ in 0..depth {
        der = tlv(0x30, &der);
    }
    der
}

#[test]
fn deeply_nested_input_does_not_exhaust_the_stack() {
    // from_der has no size limit of its own: 100,000 levels (about 500 kB).
    let deep = nested(100_000, &[]);
    assert_bad_csr(CertificateRequest::from_der(&deep), &["not a DER"]);
    // As deep as fits through `parse`.
    let deep = nested(7_000, &[0x05, 0x00]);
    assert!(deep.len() <= MAX_CSR_LEN, "{}", deep.len());
    assert_refused(&deep, "7000 nested SEQUENCEs");
    // Indefinite-length BER nesting, which DER forbids.
    let mut ber = Vec::new();
    for _ in 0..10_000 {
        ber.extend([0x30, 0x80]);
    }
    for _ in 0..10_000 {
        ber.extend([0x00, 0x00]);
    }
    assert_refused(&ber, "indefinite-length nesting");

    // Nesting inside a signed, otherwise valid request, where parsers read ANY: an unknown
    // attribute's value, an unknown non-critical extension's value, a subject attribute value.
    let key = p256();
    let deep_value = nested(5_000, &[0x05, 0x00]);
    let der = Raw::new(&key)
        .attribute(attribute(
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x02],
            &[&deep_value],
        ))
        .signed_by(&key);
    assert_outcome_without_panic(&der, "nested unknown attribute");
    let der = Raw::new(&key)
        .attribute(extension_request(&[&extension(
            &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xb2, 0x03, 0x01],
            false,
            &deep_value,
        )]))
        .signed_by(&key);
    assert_outcome_without_panic(&der, "nested unknown extension");
    let mut raw = Raw::new(&key);
    raw.subject = seq(&[&tlv(0x31, &seq(&[&oid(&[0x55, 0x04, 0x03]), &deep_value]))]);
    assert_outcome_without_panic(&raw.signed_by(&key), "nested subject value");
}

/// Parses something that may be acceptable (unknown parts are ignored) or not; it must not
/// panic or hang, and an acceptance must still have parsed the real key.
fn assert_outcome_without_panic(der: &[u8], what: &str) {
    let start = Instant::now();
    match CertificateRequest::parse(der) {
        Ok(csr) => assert_eq!(csr.key_kind(), KeyKind::EcdsaP256, "{what}"),
        Err(Error::BadCsr(_)) => {}
        Err(other) => panic!("{what}: unexpected {other:?}"),
    }
    assert!(
        start.elapsed() < StdDuration::from_secs(1),
        "{what}: {:?}",
        start.elapsed()
    );
}

#[test]

fn non_der_framing_is_refused() {
    let key = p256();
    let der = request(&with_sans(vec![dns("a.example.org")]), &key);
    let (info, algorithm, signature) = split(&der);
    let bits = tlv(0x03, &[&[0u8][..], &signature].concat());
    let body = [&info[..], &algorithm, &bits].concat();
    // The outer SEQUENCE with a long-form length where the short or shorter form fits, and
    // with an indefinite length.
    let mut long_form = vec![0x30, 0x84];
    long_form.extend((body.len() as u32).to_be_bytes());
    long_form.extend(&body);
    let mut indefinite = vec![0x30, 0x80];
    indefinite.extend(&body);
    indefinite.extend([0, 0]);
    // The outer SEQUENCE marked primitive instead of constructed.
    let mut primitive = der.clone();
    primitive[0] = 0x10;
    // The signature algorithm's OBJECT IDENTIFIER tagged as an ObjectDescriptor (7).
    let mut algorithm_tag = algorithm.clone();
    algorithm_tag[2] = 0x07;
    let wrong_tag = assemble(&info, &algorithm_tag, &signature);
    for (what, input) in [
        ("long-form length", long_form),
        ("indefinite length", indefinite),
        ("primitive SEQUENCE", primitive),
        ("algorithm OID tagged 7", wrong_tag),
    ] {
        match CertificateRequest::from_der(&input) {
            Err(Error::BadCsr(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// The key identity used for blocklists and the CA's own-key check is the DER
/// SubjectPublicKeyInfo; a BER re-encoding of the same key must not pass as a different key.
#[test]

fn re_encoded_public_keys_are_refused_or_canonical() {
    let key = p256();
    let canonical = key.subject_public_key_info();
    let point = &canonical[canonical.len() - 65..];
    let algorithm = seq(&[&oid(OID_EC_PUBLIC_KEY), &oid(OID_P256)]);
    let bits = [&[0u8][..], point].concat();
    // SPKI SEQUENCE with a long-form length; BIT STRING with a long-form length; algorithm
    // SEQUENCE with a long-form length.
    let long = |tag: u8, content: &[u8]| {
        let mut v = vec![tag, 0x82];
        v.extend((content.len() as u16).to_be_bytes());
        v.extend(content);
        v
    };
    let variants = [
        (
            "long SPKI length",
            long(0x30, &[&algorithm[..], &tlv(0x03, &bits)].concat()),
        ),
        (
            "long BIT STRING length",
            seq(&[&algorithm, &long(0x03, &bits)]),
        ),
        (
            "long algorithm length",
            seq(&[
                &long(
                    0x30,
                    &[&oid(OID_EC_PUBLIC_KEY)[..], &oid(OID_P256)].concat(),
                ),
                &tlv(0x03, &bits),
            ]),
        ),
    ];
    for (what, spki) in variants {
        let mut raw = Raw::new(&key);
        raw.spki = spki;
        match CertificateRequest::from_der(&raw.signed_by(&key)) {
            Err(_) => {}
            Ok(csr) => assert_eq!(
                csr.spki_der(),
                canonical.as_slice(),
                "{what}: accepted with a non-DER key encoding, so its key hash differs from \
                 the same key's usual one"
            ),
        }
    }
}

#[test]
fn a_request_of_thousands_of_extensions_is_read_in_linear_time() {
    // Within the largest body a front end accepts (64 KiB): 3,500 distinct unknown
    // extensions, which a pairwise duplicate check would compare six million times.
    let mut p = params();
    for i in 0..3_500u64 {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99_999, i / 100, i % 100],
            tlv(0x05, &[]),
        ));
    }
    let der = request(&p, &p256());
    assert!(der.len() < 64 * 1024, "{} bytes", der.len());
    // The best of three, so that a busy machine does not fail it; a pairwise check took
    // about 100 ms in a debug build, the set about 8.
    let took = (0..3)
        .map(|_| {
            let started = Instant::now();
            let parsed = CertificateRequest::from_der(&der);
            assert!(parsed.is_ok(), "unknown extensions are ignored: {parsed:?}");
            started.elapsed()
        })
        .min()
        .unwrap();
    assert!(took < StdDuration::from_millis(50), "{took:?}");
}
