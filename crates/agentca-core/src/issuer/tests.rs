//! Issuance and revocation end to end, on a CA created by `init` in a temporary directory.
//!
//! Every certificate issued here is checked by the shared invariant checker
//! ([`agentca_testkit::assert_issued_invariants`]), pkilint, `openssl verify` and
//! rustls-webpki. Every refusal is checked for the rule it names and for the rule that applies
//! to all of them (security test plan, §1 conventions): the CA key signed nothing, no serial
//! was reserved, and a `cert.refused` audit entry records the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::path::Path;

use agentca_testkit::{
    Expectation, assert_serials_random, assert_webpki_revoked, openssl_verify_der, pkilint_cert,
    pkilint_crl, webpki_verify_client, webpki_verify_client_with_crls,
};
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SigningKey as _,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::revocation_list::CertificateRevocationList;

use super::*;
use crate::audit::{self, Entry};
use crate::ca::{self, Ca, DataDir, InitOptions};
use crate::crl;
use crate::csr::KeyKind;
use crate::keyfile::Protection;
use crate::store::{AgentRecord, RevocationReason, SerialEntry};

const ALICE: &str = "spiffe://example.org/agent/alice";
const BOB: &str = "spiffe://example.org/agent/bob";
const PAYER: &str = "spiffe://example.org/agent/payments/p1";

// ---------------------------------------------------------------------------------------------
// A CA in a temporary directory
// ---------------------------------------------------------------------------------------------

struct TestCa {
    authority: Authority,
    ca: Ca,
    root: Vec<u8>,
    issuing: Vec<u8>,
    dir: DataDir,
    // Dropped last: the directory outlives the store and audit log opened in it.
    tmp: tempfile::TempDir,
}

impl TestCa {
    /// An ECDSA P-256 CA with the default policy and ALICE and BOB registered.
    fn new() -> Self {
        Self::build(KeyKind::EcdsaP256, None, &[])
    }

    fn build(key_type: KeyKind, base_url: Option<&str>, extra_policies: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("ca"));
        ca::init(
            &dir,
            &InitOptions {
                trust_domain: "example.org".into(),
                key_type,
                base_url: base_url.map(Into::into),
                protection: Protection::InsecurePlaintext,
                issuing_key_in: None,
            },
        )
        .unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        for name in extra_policies {
            let file = format!("{name}.toml");
            std::fs::copy(shipped.join(&file), dir.policies().join(&file)).unwrap();
        }
        let t = Self::open(tmp, dir);
        t.add_agent(ALICE);
        t.add_agent(BOB);
        t
    }

    fn open(tmp: tempfile::TempDir, dir: DataDir) -> Self {
        let ca = Ca::open(&dir).unwrap();
        let authority = ca.authority(&Protection::InsecurePlaintext).unwrap();
        Self {
            root: ca.cert_der("root.pem").unwrap(),
            issuing: ca.cert_der("issuing.pem").unwrap(),
            authority,
            ca,
            dir,
            tmp,
        }
    }

    /// Closes the store and audit log and opens the CA again, as a restart does.
    fn reopen(self) -> Self {
        let Self {
            authority,
            ca,
            dir,
            tmp,
            ..
        } = self;
        drop(authority);
        drop(ca);
        Self::open(tmp, dir)
    }

    fn add_agent(&self, id: &str) {
        self.add(agent(id));
    }

    fn add(&self, record: AgentRecord) {
        self.ca.store().insert_agent(&record).unwrap();
    }

    fn base_url(&self) -> &str {
        &self.ca.config().base_url
    }

    /// Issuing CA, then root: what `ca-chain.pem` holds.
    fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.issuing.clone(), self.root.clone()]
    }

    fn signatures(&self) -> u64 {
        self.authority.ca().signer().signatures()
    }

    fn serials(&self) -> u64 {
        self.ca.store().serial_count().unwrap()
    }

    /// Issues through the same entry point every front end uses.
    fn issue(
        &self,
        agent: &str,
        csr: &[u8],
        method: EnrollmentMethod,
        lifetime: Option<Duration>,
    ) -> Result<CertificateRecord> {
        self.authority.issue_csr(agent, csr, method, lifetime)
    }

    /// Issues `csr` for `agent` by the CLI with the default lifetime, and checks the result.
    fn issue_checked(&self, agent: &str, csr: &[u8]) -> CertificateRecord {
        let signed_at = OffsetDateTime::now_utc();
        let record = self.issue(agent, csr, EnrollmentMethod::Cli, None).unwrap();
        self.check(&record, self.expect(agent, signed_at, csr));
        record
    }

    /// The expectation every certificate for `agent` from `csr` must meet.
    fn expect(&self, agent: &str, signed_at: OffsetDateTime, csr: &[u8]) -> Expectation {
        Expectation::new(agent, signed_at)
            .csr_public_key_spki(CertificateRequest::parse(csr).unwrap().spki_der().to_vec())
            .base_url(self.base_url())
    }

    /// INV-1 to INV-10 on one issued certificate: the shared invariants, pkilint, chain
    /// validation by OpenSSL and rustls-webpki, and the store and audit records.
    fn check(&self, record: &CertificateRecord, expect: Expectation) {
        pkilint_cert(&record.der);
        openssl_verify_der(&record.der, std::slice::from_ref(&self.issuing), &self.root);
        self.check_in_process(record, expect);
    }

    /// [`Self::check`] without the external tools (which cost a process each).
    fn check_in_process(&self, record: &CertificateRecord, expect: Expectation) {
        let der = &record.der;
        agentca_testkit::assert_issued_invariants(der, &self.chain(), &expect);
        webpki_verify_client(der, &self.chain(), &self.root, OffsetDateTime::now_utc());

        // The record describes the certificate it holds (INV-10).
        let (_, cert) = X509Certificate::from_der(der).unwrap();
        assert_eq!(cert.raw_serial(), record.intent.serial.as_bytes());
        assert_eq!(record.intent.agent_id, expect.agent_id);
        assert_eq!(
            cert.validity().not_before.timestamp(),
            record.intent.not_before.unix_timestamp()
        );
        assert_eq!(
            cert.validity().not_after.timestamp(),
            record.intent.not_after.unix_timestamp()
        );
        assert_eq!(
            record.intent.key_sha256,
            hex::encode(Sha256::digest(cert.public_key().raw))
        );
        match self.ca.store().serial(&record.intent.serial).unwrap() {
            Some(SerialEntry::Issued(stored)) => assert_eq!(stored.der, *der),
            other => panic!(
                "serial {} is not stored as issued: {other:?}",
                record.intent.serial
            ),
        }
        let serial = record.intent.serial.to_hex();
        let issued = self.audit_events("cert.issued");
        let entry = issued
            .iter()
            .find(|e| e.fields["serial"] == serial.as_str())
            .unwrap_or_else(|| panic!("no cert.issued audit entry for {serial}"));
        assert_eq!(entry.fields["agent"], expect.agent_id.as_str());
        assert_eq!(
            entry.fields["cert_sha256"],
            hex::encode(Sha256::digest(der)).as_str()
        );
    }

    /// Runs a request that must be refused and checks what every refusal must leave behind:
    /// no signature, no serial, one `cert.refused` audit entry carrying the reason.
    #[track_caller]
    fn refused(&self, attempt: impl FnOnce(&Authority) -> Result<CertificateRecord>) -> Error {
        let signatures = self.signatures();
        let serials = self.serials();
        let refusals = self.audit_events("cert.refused").len();
        let err = match attempt(&self.authority) {
            Ok(record) => panic!(
                "expected a refusal, but serial {} was issued",
                record.intent.serial
            ),
            Err(err) => err,
        };
        assert_eq!(
            self.signatures(),
            signatures,
            "a refused request reached the CA key: {err}"
        );
        assert_eq!(
            self.serials(),
            serials,
            "a refused request reserved a serial: {err}"
        );
        let after = self.audit_events("cert.refused");
        assert_eq!(
            after.len(),
            refusals + 1,
            "no cert.refused audit entry for: {err}"
        );
        let entry = after.last().unwrap();
        assert_eq!(entry.fields["reason"], err.to_string().as_str());
        err
    }

    /// The verified audit log's entries of one kind.
    fn audit_events(&self, event: &str) -> Vec<Entry> {
        let mut found = Vec::new();
        let report = audit::verify_each(&self.dir.audit_log(), |e| {
            if e.event == event {
                found.push(e.clone());
            }
        })
        .unwrap();
        assert!(report.is_intact(), "{report}");
        found
    }
}

fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        id: id.into(),
        owner: Some("tests".into()),
        policy: None,
        dns: Vec::new(),
        disabled: false,
        created_at: OffsetDateTime::now_utc(),
        early_renewal: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn key(kind: KeyKind) -> KeyPair {
    match kind {
        KeyKind::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyKind::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
        KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519),
        KeyKind::Rsa { bits } => KeyPair::generate_rsa_for(
            &rcgen::PKCS_RSA_SHA256,
            match bits {
                2048 => rcgen::RsaKeySize::_2048,
                3072 => rcgen::RsaKeySize::_3072,
                _ => rcgen::RsaKeySize::_4096,
            },
        ),
    }
    .unwrap()
}

fn p256() -> KeyPair {
    key(KeyKind::EcdsaP256)
}

fn params(sans: Vec<SanType>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = sans;
    p
}

fn csr_with(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
    params.serialize_request(key).unwrap().der().to_vec()
}

fn csr(key: &KeyPair, sans: Vec<SanType>) -> Vec<u8> {
    csr_with(&params(sans), key)
}

/// A request with no names: the agent ID comes from the request, not the CSR.
fn plain_csr() -> Vec<u8> {
    csr(&p256(), vec![])
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

fn ip(s: &str) -> SanType {
    SanType::IpAddress(s.parse().unwrap())
}

#[track_caller]
fn assert_policy(err: &Error, policy: &str, rule: &str) {
    match err {
        Error::PolicyRefused {
            policy: p, rule: r, ..
        } => {
            assert_eq!((p.as_str(), r.as_str()), (policy, rule), "{err}");
            let text = err.to_string();
            assert!(
                text.contains(&format!("rule {rule}")) && text.contains(policy),
                "the message does not name the policy and rule: {text}"
            );
        }
        other => panic!("expected a refusal by {policy} rule {rule}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// What is issued
// ---------------------------------------------------------------------------------------------

#[test]
fn every_agent_key_type_is_issued_and_verifies() {
    let t = TestCa::new();
    for kind in [
        KeyKind::EcdsaP256,
        KeyKind::EcdsaP384,
        KeyKind::Ed25519,
        KeyKind::Rsa { bits: 2048 },
        KeyKind::Rsa { bits: 3072 },
        KeyKind::Rsa { bits: 4096 },
    ] {
        let request = csr(&key(kind), vec![uri(ALICE)]);
        let record = t.issue_checked(ALICE, &request);
        let (_, cert) = X509Certificate::from_der(&record.der).unwrap();
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature());
        assert_eq!(ku.key_encipherment(), kind.is_rsa(), "{kind}");
    }
}

#[test]
fn every_ca_key_type_issues_verifiable_certificates() {
    for (kind, base_url) in [
        (KeyKind::EcdsaP384, None),
        (KeyKind::Ed25519, Some("https://ca.example.org:8443/")),
        (KeyKind::Rsa { bits: 2048 }, Some("http://127.0.0.1:9080")),
    ] {
        let t = TestCa::build(kind, base_url, &[]);
        if let Some(url) = base_url {
            assert_eq!(t.base_url(), url);
        }
        for leaf in [KeyKind::EcdsaP256, KeyKind::Ed25519] {
            let record = t.issue_checked(BOB, &csr(&key(leaf), vec![]));
            // AIA and CRL distribution point come from --base-url, without a doubled slash.
            let text = String::from_utf8_lossy(&record.der).into_owned();
            let base = t.base_url().trim_end_matches('/');
            assert!(text.contains(&format!("{base}/ocsp")), "{kind}: OCSP URL");
            assert!(text.contains(&format!("{base}/crl")), "{kind}: CRL URL");
            assert!(
                !text.contains("//ocsp") && !text.contains("//crl"),
                "{kind}"
            );
        }
    }
}

#[test]
fn default_and_requested_lifetimes() {
    let t = TestCa::new();
    for (requested, expected) in [
        (None, Duration::hours(24)),
        (Some(Duration::minutes(5)), Duration::minutes(5)),
        (Some(Duration::minutes(90)), Duration::minutes(90)),
        (Some(Duration::hours(24)), Duration::hours(24)),
    ] {
        let request = plain_csr();
        let signed_at = OffsetDateTime::now_utc();
        let record = t
            .issue(ALICE, &request, EnrollmentMethod::Acme, requested)
            .unwrap();
        t.check(
            &record,
            t.expect(ALICE, signed_at, &request)
                .requested_lifetime(expected),
        );
        assert_eq!(
            record.intent.not_after - record.intent.not_before,
            expected + profile::BACKDATE
        );
    }
}

#[test]
fn csr8_lifetimes_outside_the_policy_are_refused() {
    let t = TestCa::new();
    for (lifetime, words) in [
        (
            Duration::hours(24) + Duration::seconds(1),
            "exceeds the maximum 1d",
        ),
        (Duration::days(3650), "exceeds the maximum"),
        (
            Duration::minutes(5) - Duration::seconds(1),
            "below the 5m minimum",
        ),
        (Duration::ZERO, "below the 5m minimum"),
        (Duration::hours(-1), "below the 5m minimum"),
        (Duration::MIN, "below the 5m minimum"),
    ] {
        let request = plain_csr();
        let err =
            t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Cli, Some(lifetime)));
        assert_policy(&err, "default", "max_lifetime");
        assert!(err.to_string().contains(words), "{lifetime}: {err}");
    }
}

#[test]
fn csr9_no_certificate_outlives_the_issuing_ca() {
    let t = TestCa::new();
    let ca_not_after = t.authority.ca().not_after();
    let request = CertificateRequest::parse(&plain_csr()).unwrap();
    let mut req = IssueRequest {
        agent_id: ALICE,
        csr: &request,
        method: EnrollmentMethod::Cli,
        lifetime: None,
        validated_dns: &[],
        validated_ips: &[],
        csr_key_thumbprint: None,
    };
    // One hour of CA life left and a 24-hour default: refused, naming the CA's notAfter.
    let err = t
        .authority
        .authorize(&req, ca_not_after - Duration::hours(1))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidLifetime(m) if m.contains("after the issuing CA's notAfter")),
        "{err:?}"
    );
    // Exactly fitting is fine; one second more is not.
    let auth = t
        .authority
        .authorize(&req, ca_not_after - Duration::hours(24))
        .unwrap();
    assert_eq!(auth.lifetime(), Duration::hours(24));
    assert!(
        t.authority
            .authorize(
                &req,
                ca_not_after - Duration::hours(24) + Duration::seconds(1)
            )
            .is_err()
    );
    // A shorter requested lifetime fits where the default does not.
    req.lifetime = Some(Duration::minutes(30));
    t.authority
        .authorize(&req, ca_not_after - Duration::hours(1))
        .unwrap();

    // Behind the policy, the pre-signing lint refuses such a certificate on its own, before
    // the key is asked.
    let now = profile::whole_seconds(OffsetDateTime::now_utc());
    let auth = t.authority.authorize(&req, now).unwrap();
    let signatures = t.signatures();
    let serial = random_serial().unwrap();
    let err = t
        .authority
        .ca()
        .sign_leaf(&auth, serial, now, ca_not_after + Duration::seconds(1))
        .unwrap_err();
    assert!(
        matches!(&err, Error::ProfileViolation(m) if m.contains("beyond the issuing CA's notAfter")),
        "{err:?}"
    );
    assert_eq!(t.signatures(), signatures);
}

#[test]
fn csr4_csr5_nothing_from_the_request_reaches_the_certificate() {
    let t = TestCa::new();
    let injected = [
        "x\", \"isCA\": true, \"y\": \"",
        "nul\0byte",
        "line\nbreak",
        "right-to-left \u{202e}gpj.exe",
        "{{.Insecure.CR.Subject}}",
    ];
    let key = p256();
    for cn in injected {
        let mut p = params(vec![uri(ALICE)]);
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, cn);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
            KeyUsagePurpose::ContentCommitment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // An extension nobody knows, a foreign OCSP responder and CRL: all non-critical, so
        // tolerated in the request; none may appear in the certificate.
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 55555, 1],
            b"\x0c\x08smuggled".to_vec(),
        ));
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 1],
            seq(&[&seq(&[
                &profile::tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01]),
                &profile::tlv(0x86, b"http://evil.example/ocsp"),
            ])]),
        ));
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 31],
            seq(&[&seq(&[&profile::tlv(
                0xa0,
                &profile::tlv(0xa0, &profile::tlv(0x86, b"http://evil.example/crl")),
            )])]),
        ));
        let request = csr_with(&p, &key);
        let record = t.issue_checked(ALICE, &request);
        let (_, cert) = X509Certificate::from_der(&record.der).unwrap();
        // The subject is empty: nothing of it was copied.
        assert_eq!(cert.tbs_certificate.subject.as_raw(), &[0x30, 0x00]);
        for needle in [
            cn.as_bytes(),
            b"smuggled",
            b"evil.example",
            &[0x83, 0xb2, 0x03, 0x01],
        ] {
            assert!(
                !record.der.windows(needle.len()).any(|w| w == needle),
                "{cn:?}: the certificate contains {:?} from the request",
                String::from_utf8_lossy(needle)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSR-6: canonical identities only
// ---------------------------------------------------------------------------------------------

#[test]
fn csr6_non_canonical_agent_ids_are_refused() {
    let t = TestCa::new();
    let long = format!("{ALICE}/{}", "a".repeat(2048));
    for (id, words) in [
        ("SPIFFE://example.org/agent/alice", "lowercase"),
        ("spiffe://Example.org/agent/alice", "lowercase"),
        ("spiffe://example.org/agent/alice/", "trailing slash"),
        ("spiffe://example.org/agent/x/../alice", "'..'"),
        ("spiffe://example.org/agent/./alice", "'.'"),
        ("spiffe://example.org/agent/%61lice", "percent"),
        ("spiffe://example.org/agent//alice", "empty path segment"),
        ("spiffe://user@example.org/agent/alice", "userinfo"),
        ("spiffe://example.org:443/agent/alice", "port"),
        ("spiffe://example.org/agent/alice?x=1", "query"),
        ("spiffe://example.org/agent/alice#f", "fragment"),
        ("spiffe://example.org/agent/alïce", "not allowed"),
        ("spiffe://example.org", "needs a path"),
        ("", "spiffe://"),
        (long.as_str(), "2048"),
    ] {
        let request = plain_csr();
        let err = t.refused(|a| a.issue_csr(id, &request, EnrollmentMethod::Cli, None));
        assert!(
            matches!(&err, Error::InvalidAgentId(m) if m.contains(words)),
            "{id:?}: {err:?}"
        );
    }
}

#[test]
fn csr6_non_canonical_uri_names_in_the_request_are_refused() {
    let t = TestCa::new();
    let long = format!("{ALICE}/{}", "a".repeat(2100));
    let key = p256();
    for name in [
        "SPIFFE://example.org/agent/alice",
        "spiffe://EXAMPLE.org/agent/alice",
        "spiffe://example.org/agent/alice/",
        "spiffe://example.org/agent/alice/../alice",
        "spiffe://example.org/agent/%61lice",
        "spiffe://example.org/agent/alice%2e",
        "spiffe://x@example.org/agent/alice",
        "spiffe://example.org:8443/agent/alice",
        "spiffe://example.org/agent/alice?",
        "spiffe://example.org/agent/alice#",
        "spiffe://example.org/agent/alice ",
        "spiffe://example.org/agent/Alice",
        "spiffe://example.org//agent/alice",
        long.as_str(),
        "",
    ] {
        let request = csr(&key, vec![uri(name)]);
        let err = t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Cli, None));
        assert!(
            matches!(&err, Error::BadCsr(m) if m.contains("but the agent is")),
            "{name:?}: {err:?}"
        );
    }
    // A non-ASCII URI is not even an IA5String: refused when the request is parsed.
    let raw_san = seq(&[&profile::tlv(
        0x86,
        "spiffe://example.org/agent/alïce".as_bytes(),
    )]);
    let mut p = params(vec![]);
    p.custom_extensions
        .push(CustomExtension::from_oid_content(&[2, 5, 29, 17], raw_san));
    let request = csr_with(&p, &key);
    let err = t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Cli, None));
    assert!(matches!(err, Error::BadCsr(_)), "{err:?}");
}

#[test]
fn csr6_two_uri_names_are_refused() {
    let t = TestCa::new();
    let key = p256();
    for names in [
        vec![uri(ALICE), uri(ALICE)],
        vec![uri(ALICE), uri(BOB)],
        vec![uri(ALICE), uri("https://example.org/alice")],
    ] {
        let request = csr(&key, names);
        let err = t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Acme, None));
        assert!(
            matches!(&err, Error::BadCsr(m) if m.contains("asks for 2 URI names")),
            "{err:?}"
        );
    }
    // The agent's own ID, once, is accepted.
    t.issue_checked(ALICE, &csr(&key, vec![uri(ALICE)]));
}

// ---------------------------------------------------------------------------------------------
// CSR-7: least privilege between agents
// ---------------------------------------------------------------------------------------------

#[test]
fn csr7_an_agent_cannot_ask_for_another_identity() {
    let t = TestCa::new();
    t.add_agent("spiffe://example.org/agent/a");
    t.add_agent("spiffe://example.org/agent/ab");
    t.add_agent("spiffe://example.org/agent/a/x");
    let key = p256();
    for (agent, name) in [
        (ALICE, BOB),
        (
            "spiffe://example.org/agent/a",
            "spiffe://example.org/agent/ab",
        ),
        (
            "spiffe://example.org/agent/ab",
            "spiffe://example.org/agent/a",
        ),
        (
            "spiffe://example.org/agent/a",
            "spiffe://example.org/agent/a/x",
        ),
        (
            "spiffe://example.org/agent/a/x",
            "spiffe://example.org/agent/a",
        ),
        (ALICE, "spiffe://other.org/agent/alice"),
        (ALICE, "spiffe://example.org.evil/agent/alice"),
        (ALICE, "spiffe://example.org/agent/alicex"),
    ] {
        let request = csr(&key, vec![uri(name)]);
        let err = t.refused(|a| a.issue_csr(agent, &request, EnrollmentMethod::Acme, None));
        assert!(
            matches!(&err, Error::BadCsr(m) if m.contains(name) && m.contains("but the agent is")),
            "{agent} asking for {name}: {err:?}"
        );
    }
}

#[test]
fn csr7_unknown_foreign_and_disabled_agents_are_refused() {
    let t = TestCa::new();
    let mut disabled = agent("spiffe://example.org/agent/gone");
    disabled.disabled = true;
    t.add(disabled);
    let request = plain_csr();
    for (id, check) in [
        (
            "spiffe://example.org/agent/alicex",
            (|e: &Error| matches!(e, Error::UnknownAgent(_))) as fn(&Error) -> bool,
        ),
        ("spiffe://example.org/agent/alice/x", |e| {
            matches!(e, Error::UnknownAgent(_))
        }),
        (
            "spiffe://other.org/agent/alice",
            |e| matches!(e, Error::InvalidAgentId(m) if m.contains("trust domain other.org")),
        ),
        (
            "spiffe://example.org.evil/agent/alice",
            |e| matches!(e, Error::InvalidAgentId(m) if m.contains("trust domain")),
        ),
        ("spiffe://example.org/agent/gone", |e| {
            matches!(e, Error::AgentDisabled(_))
        }),
    ] {
        let err = t.refused(|a| a.issue_csr(id, &request, EnrollmentMethod::Cli, None));
        assert!(check(&err), "{id}: {err:?}");
    }
    // A path no policy covers.
    t.add_agent("spiffe://example.org/service/x");
    let err = t.refused(|a| {
        a.issue_csr(
            "spiffe://example.org/service/x",
            &request,
            EnrollmentMethod::Cli,
            None,
        )
    });
    assert!(
        matches!(&err, Error::PolicyRefused { rule, .. } if rule == "agents"),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

#[test]
fn strict_policy_refusals_name_the_rule() {
    let t = TestCa::build(KeyKind::EcdsaP256, None, &["strict"]);
    t.add_agent(PAYER);
    let ec = p256();
    let plain = csr(&ec, vec![]);
    for method in [EnrollmentMethod::Cli, EnrollmentMethod::Scep] {
        let err = t.refused(|a| a.issue_csr(PAYER, &plain, method, None));
        assert_policy(&err, "strict", "methods");
    }
    for kind in [KeyKind::Rsa { bits: 2048 }, KeyKind::Ed25519] {
        let request = csr(&key(kind), vec![]);
        let err = t.refused(|a| a.issue_csr(PAYER, &request, EnrollmentMethod::Acme, None));
        assert_policy(&err, "strict", "key_types");
        assert!(err.to_string().contains(&kind.to_string()), "{err}");
    }
    for name in [
        "evil.example.com",
        "payments.internal.example.org",
        "a.b.payments.internal.example.org",
        "pay1.payments.internal.example.org.evil.com",
    ] {
        let request = csr(
            &ec,
            vec![dns("pay1.payments.internal.example.org"), dns(name)],
        );
        let err = t.refused(|a| a.issue_csr(PAYER, &request, EnrollmentMethod::Acme, None));
        assert_policy(&err, "strict", "dns");
        assert!(err.to_string().contains(name), "{err}");
    }
    for addr in ["10.21.0.1", "127.0.0.1", "::1"] {
        let request = csr(&ec, vec![ip(addr)]);
        let err = t.refused(|a| a.issue_csr(PAYER, &request, EnrollmentMethod::Acme, None));
        assert_policy(&err, "strict", "ips");
    }
    let err = t.refused(|a| {
        a.issue_csr(
            PAYER,
            &plain,
            EnrollmentMethod::Acme,
            Some(Duration::minutes(61)),
        )
    });
    assert_policy(&err, "strict", "max_lifetime");

    // An agent naming the strict policy explicitly, outside the paths it covers.
    let mut record = agent("spiffe://example.org/agent/mail/m1");
    record.policy = Some("strict".into());
    t.add(record);
    let err = t.refused(|a| {
        a.issue_csr(
            "spiffe://example.org/agent/mail/m1",
            &plain,
            EnrollmentMethod::Acme,
            None,
        )
    });
    assert_policy(&err, "strict", "agents");
}

#[test]
fn strict_policy_grants_pre_authorized_names_with_server_auth() {
    let t = TestCa::build(KeyKind::EcdsaP256, None, &["strict"]);
    let mut payer = agent(PAYER);
    payer.dns = vec!["payer.example.net".into()];
    t.add(payer);
    let request = csr(
        &key(KeyKind::EcdsaP384),
        vec![
            uri(PAYER),
            dns("pay1.payments.internal.example.org"),
            dns("payer.example.net"),
            ip("10.20.3.4"),
        ],
    );
    let signed_at = OffsetDateTime::now_utc();
    let record = t
        .issue(PAYER, &request, EnrollmentMethod::Acme, None)
        .unwrap();
    t.check(
        &record,
        t.expect(PAYER, signed_at, &request)
            .dns(["pay1.payments.internal.example.org", "payer.example.net"])
            .ips(["10.20.3.4".parse::<IpAddr>().unwrap()])
            .max_lifetime(Duration::hours(1))
            .requested_lifetime(Duration::hours(1)),
    );
    let (_, cert) = X509Certificate::from_der(&record.der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth);
}

#[test]
fn default_policy_grants_only_the_agents_own_names() {
    let t = TestCa::new();
    let mut carol = agent("spiffe://example.org/agent/carol");
    carol.dns = vec!["carol.example.org".into()];
    t.add(carol);
    let key = p256();

    // The agent's own pre-authorized name: issued, with serverAuth.
    let request = csr(&key, vec![dns("Carol.Example.org")]);
    let signed_at = OffsetDateTime::now_utc();
    let record = t
        .issue(
            "spiffe://example.org/agent/carol",
            &request,
            EnrollmentMethod::Cli,
            None,
        )
        .unwrap();
    t.check(
        &record,
        t.expect("spiffe://example.org/agent/carol", signed_at, &request)
            .dns(["carol.example.org"]),
    );
    let (_, cert) = X509Certificate::from_der(&record.der).unwrap();
    assert!(
        cert.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .server_auth
    );

    // Without names, clientAuth only.
    let record = t.issue_checked(ALICE, &plain_csr());
    let (_, cert) = X509Certificate::from_der(&record.der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);

    // Another agent's name, or any IP address: refused, naming the rule.
    let request = csr(&key, vec![dns("carol.example.org")]);
    let err = t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Cli, None));
    assert_policy(&err, "default", "dns");
    let request = csr(&key, vec![ip("192.0.2.1")]);
    let err = t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Cli, None));
    assert_policy(&err, "default", "ips");
}

// ---------------------------------------------------------------------------------------------
// CSR-3: keys that must never be certified
// ---------------------------------------------------------------------------------------------

#[test]
fn csr3_a_key_revoked_for_key_compromise_is_blocked() {
    let t = TestCa::new();
    let key = p256();
    let request = csr(&key, vec![]);
    let spki = CertificateRequest::parse(&request)
        .unwrap()
        .key_sha256()
        .to_owned();

    // Other reasons do not block the key.
    let first = t.issue_checked(ALICE, &request);
    t.authority
        .revoke(&first.intent.serial, RevocationReason::Superseded)
        .unwrap();
    assert!(!t.ca.store().is_key_blocked(&spki).unwrap());
    let second = t.issue_checked(ALICE, &request);

    t.authority
        .revoke(&second.intent.serial, RevocationReason::KeyCompromise)
        .unwrap();
    assert!(t.ca.store().is_key_blocked(&spki).unwrap());
    for agent in [ALICE, BOB] {
        let fresh = csr(&key, vec![]);
        let err = t.refused(|a| a.issue_csr(agent, &fresh, EnrollmentMethod::Acme, None));
        assert!(
            matches!(&err, Error::UnsupportedKey(m) if m.contains("blocked")),
            "{err:?}"
        );
    }
    // The block survives a restart.
    let t = t.reopen();
    let err = t.refused(|a| a.issue_csr(ALICE, &csr(&key, vec![]), EnrollmentMethod::Cli, None));
    assert!(
        matches!(&err, Error::UnsupportedKey(m) if m.contains("blocked")),
        "{err:?}"
    );
    // Other keys are unaffected.
    t.issue_checked(ALICE, &plain_csr());
}

/// Requests for `key` whose SubjectPublicKeyInfo names the same P-256 key in other bytes,
/// signed by the key's holder: the SPKI SEQUENCE with a long-form length (BER), and the curve
/// OID's content octets under a SEQUENCE tag (which x509-parser reads as the OID).
fn re_encoded_key_csrs(key: &KeyPair) -> Vec<(&'static str, Vec<u8>)> {
    let spki = key.subject_public_key_info();
    let mut long = vec![0x30, 0x82, 0x00, spki[1]];
    long.extend(&spki[2..]);
    let mut disguised = spki.clone();
    // 30 59 30 13 06 07 <ecPublicKey> 06 08 <P-256>: retag the curve OID as a SEQUENCE.
    assert_eq!(disguised[13], 0x06);
    disguised[13] = 0x30;
    [
        ("long-form SPKI length", long),
        ("curve OID tagged as SEQUENCE", disguised),
    ]
    .into_iter()
    .map(|(what, spki)| {
        let info = seq(&[
            &profile::tlv(0x02, &[0]),
            &seq(&[]),
            &spki,
            &profile::tlv(0xa0, &[]),
        ]);
        let signature = key.sign(&info).unwrap();
        let ecdsa_sha256 = [
            0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
        ];
        let der = seq(&[
            &info,
            &ecdsa_sha256,
            &profile::tlv(0x03, &[&[0u8][..], &signature].concat()),
        ]);
        (what, der)
    })
    .collect()
}

#[test]

fn csr3_key_block_cannot_be_evaded_by_re_encoding_the_key() {
    // Today such a request passes `authorize` (blocklist and own-key checks compare raw
    // bytes), reserves a serial, and is stopped only by the pre-signing lint, as a
    // ProfileViolation, with no cert.refused audit entry and an orphaned serial reservation.
    let t = TestCa::new();
    let key = p256();
    let record = t.issue_checked(ALICE, &csr(&key, vec![]));
    t.authority
        .revoke(&record.intent.serial, RevocationReason::KeyCompromise)
        .unwrap();
    for (what, request) in re_encoded_key_csrs(&key) {
        let err = t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Acme, None));
        assert!(
            matches!(&err, Error::UnsupportedKey(_) | Error::BadCsr(_)),
            "{what}: {err:?}"
        );
    }
}

#[test]

fn non_der_public_keys_are_refused_before_a_serial_is_reserved() {
    let t = TestCa::new();
    for (what, request) in re_encoded_key_csrs(&p256()) {
        let err = t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Acme, None));
        assert!(
            matches!(&err, Error::UnsupportedKey(_) | Error::BadCsr(_)),
            "{what}: {err:?}"
        );
    }
}

#[test]
fn csr3_key_compromise_revokes_every_certificate_with_the_key() {
    let t = TestCa::new();
    let key = p256();
    let one = t.issue_checked(ALICE, &csr(&key, vec![]));
    let two = t.issue_checked(ALICE, &csr(&key, vec![]));
    let revoked = t
        .authority
        .revoke_all(&one.intent.serial, RevocationReason::KeyCompromise)
        .unwrap();
    // Everything revoked is reported, the named certificate first, so status caches can follow.
    let serials: Vec<_> = revoked.iter().map(|r| r.intent.serial).collect();
    assert_eq!(serials, vec![one.intent.serial, two.intent.serial]);
    match t.ca.store().serial(&two.intent.serial).unwrap() {
        Some(SerialEntry::Issued(record)) => assert!(
            record.revocation.is_some(),
            "another certificate for the compromised key is still valid"
        ),
        other => panic!("{other:?}"),
    }
    // Each has its line; the one taken along names the certificate whose key was compromised.
    let lines = t.audit_events("cert.revoked");
    let line_of = |serial: &Serial| {
        lines
            .iter()
            .find(|e| e.fields["serial"] == serial.to_hex().as_str())
            .unwrap_or_else(|| panic!("no cert.revoked line for {serial}"))
    };
    assert_eq!(
        line_of(&one.intent.serial).fields.get("because_key_of"),
        None
    );
    let taken_along = line_of(&two.intent.serial);
    assert_eq!(
        taken_along.fields["because_key_of"],
        one.intent.serial.to_hex().as_str()
    );
    assert_eq!(taken_along.fields["reason"], "keyCompromise");
}

#[test]
fn csr3_the_cas_own_keys_are_never_certified() {
    let t = TestCa::new();
    for file in ["root.key", "issuing.key", "ocsp.key", "scep-ra.key"] {
        let signer = t.ca.signer(file, &Protection::InsecurePlaintext).unwrap();
        let request = csr(signer.key_pair(), vec![uri(ALICE)]);
        let err = t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Cli, None));
        assert!(
            matches!(&err, Error::UnsupportedKey(m) if m.contains("this CA's own public keys")),
            "{file}: {err:?}"
        );
    }
}

#[test]
fn unparseable_requests_are_refused_and_audited() {
    let t = TestCa::new();
    let key = p256();
    let valid = csr(&key, vec![]);
    let certificate = params(vec![]).self_signed(&key).unwrap().pem();
    let truncated = valid[..valid.len() - 1].to_vec();
    let mut wrong_signature = valid.clone();
    *wrong_signature.last_mut().unwrap() ^= 1;
    for input in [
        &b""[..],
        b"garbage",
        certificate.as_bytes(),
        &truncated,
        &wrong_signature,
    ] {
        let err = t.refused(|a| a.issue_csr(ALICE, input, EnrollmentMethod::Scep, None));
        assert!(matches!(err, Error::BadCsr(_)), "{err:?}");
        let entry = t.audit_events("cert.refused").pop().unwrap();
        assert_eq!(entry.fields["agent"], ALICE);
        assert_eq!(entry.fields["method"], "scep");
        assert!(entry.fields["key_sha256"].is_null());
    }
    // A parsed request refused later records which key asked.
    let request = csr(&p256(), vec![uri(BOB)]);
    let expected = hex::encode(CertificateRequest::parse(&request).unwrap().key_sha256());
    t.refused(|a| a.issue_csr(ALICE, &request, EnrollmentMethod::Acme, None));
    let entry = t.audit_events("cert.refused").pop().unwrap();
    assert_eq!(entry.fields["key_sha256"], expected.as_str());
}

// ---------------------------------------------------------------------------------------------
// Revocation and CRLs
// ---------------------------------------------------------------------------------------------

#[test]
fn revocation_is_recorded_once() {
    let t = TestCa::new();
    let record = t.issue_checked(ALICE, &plain_csr());
    let serial = record.intent.serial;
    let signatures = t.signatures();
    let before = profile::whole_seconds(OffsetDateTime::now_utc());
    let revoked = t
        .authority
        .revoke(&serial, RevocationReason::CessationOfOperation)
        .unwrap();
    let after = OffsetDateTime::now_utc();
    let revocation = revoked.revocation.unwrap();
    assert_eq!(revocation.reason, RevocationReason::CessationOfOperation);
    assert!(revocation.revoked_at >= before && revocation.revoked_at <= after);
    assert_eq!(revoked.der, record.der);
    match t.ca.store().serial(&serial).unwrap() {
        Some(SerialEntry::Issued(stored)) => assert_eq!(stored.revocation, Some(revocation)),
        other => panic!("{other:?}"),
    }
    let entry = t.audit_events("cert.revoked").pop().unwrap();
    assert_eq!(entry.fields["serial"], serial.to_hex().as_str());
    assert_eq!(entry.fields["reason"], "cessationOfOperation");
    assert_eq!(entry.fields["agent"], ALICE);

    // Twice: refused, and the first revocation stands.
    for reason in [
        RevocationReason::CessationOfOperation,
        RevocationReason::KeyCompromise,
    ] {
        let err = t.authority.revoke(&serial, reason).unwrap_err();
        assert!(
            matches!(&err, Error::AlreadyRevoked(s) if *s == serial.to_hex()),
            "{err:?}"
        );
    }
    match t.ca.store().serial(&serial).unwrap() {
        Some(SerialEntry::Issued(stored)) => assert_eq!(stored.revocation, Some(revocation)),
        other => panic!("{other:?}"),
    }
    // The failed keyCompromise did not block the key either.
    let key = hex::decode(&record.intent.key_sha256).unwrap();
    assert!(
        !t.ca
            .store()
            .is_key_blocked(&key.try_into().unwrap())
            .unwrap()
    );

    // Unknown serials.
    let unknown = Serial::from_bytes([0x42; 16]).unwrap();
    let err = t
        .authority
        .revoke(&unknown, RevocationReason::Superseded)
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownSerial(s) if *s == unknown.to_hex()),
        "{err:?}"
    );

    // removeFromCRL undoes a hold, which agentca never places: refused, nothing changes.
    let other = t.issue_checked(ALICE, &plain_csr());
    let err = t
        .authority
        .revoke(&other.intent.serial, RevocationReason::RemoveFromCrl)
        .unwrap_err();
    assert!(err.to_string().contains("removeFromCRL"), "{err}");
    match t.ca.store().serial(&other.intent.serial).unwrap() {
        Some(SerialEntry::Issued(stored)) => assert_eq!(stored.revocation, None),
        other => panic!("{other:?}"),
    }
    // Revocation signs nothing by itself (the CRL does, below).
    assert_eq!(
        t.signatures(),
        signatures + 1,
        "only the second issuance signed"
    );
}

/// The root's CRL (empty), signed with the root key, so rustls-webpki can check the issuing
/// CA's status too.
fn root_crl(t: &TestCa) -> Vec<u8> {
    let root_key =
        t.ca.signer("root.key", &Protection::InsecurePlaintext)
            .unwrap();
    let issuer = Issuer::from_ca_cert_der(&t.root.as_slice().into(), root_key.key_pair()).unwrap();
    let now = profile::whole_seconds(OffsetDateTime::now_utc());
    rcgen::CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::days(1),
        crl_number: rcgen::SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .der()
    .to_vec()
}

#[test]
fn revoked_certificates_appear_on_a_crl_verifiers_honour() {
    let t = TestCa::new();
    let revoked = t.issue_checked(ALICE, &plain_csr());
    let valid = t.issue_checked(BOB, &plain_csr());
    t.authority
        .revoke(&revoked.intent.serial, RevocationReason::KeyCompromise)
        .unwrap();

    let now = OffsetDateTime::now_utc();
    let published = crl::publish(&t.authority, now, crl::DEFAULT_VALIDITY).unwrap();
    assert_eq!(published.entries, 1);
    pkilint_crl(&published.der);

    let (_, parsed) = CertificateRevocationList::from_der(&published.der).unwrap();
    assert_eq!(
        parsed.crl_number().map(|n| n.to_u64_digits()),
        Some(vec![published.number])
    );
    let entries: Vec<_> = parsed.iter_revoked_certificates().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].raw_serial(), revoked.intent.serial.as_bytes());
    assert_eq!(
        entries[0].reason_code().map(|(_, r)| r.0),
        Some(RevocationReason::KeyCompromise.code())
    );
    assert_eq!(
        entries[0].revocation_date.timestamp(),
        t.ca.store()
            .serial(&revoked.intent.serial)
            .map(|e| match e {
                Some(SerialEntry::Issued(r)) => r.revocation.unwrap().revoked_at.unix_timestamp(),
                other => panic!("{other:?}"),
            })
            .unwrap()
    );

    let chain = [t.issuing.clone()];
    agentca_testkit::openssl::openssl_verify_der_with_crl(
        &revoked.der,
        &chain,
        &t.root,
        &published.der,
    )
    .assert_rejected_with("certificate revoked");
    agentca_testkit::openssl::openssl_verify_der_with_crl(
        &valid.der,
        &chain,
        &t.root,
        &published.der,
    )
    .assert_accepted();
    let crls = vec![published.der.clone(), root_crl(&t)];
    assert_webpki_revoked(&revoked.der, &t.chain(), &t.root, &crls, now);
    webpki_verify_client_with_crls(&valid.der, &t.chain(), &t.root, &crls, now).unwrap();

    // A later revocation is added; the earlier one stays.
    t.authority
        .revoke(&valid.intent.serial, RevocationReason::Superseded)
        .unwrap();
    let next = crl::publish(
        &t.authority,
        OffsetDateTime::now_utc(),
        crl::DEFAULT_VALIDITY,
    )
    .unwrap();
    assert!(next.number > published.number);
    assert_eq!(next.entries, 2);
    pkilint_crl(&next.der);
    agentca_testkit::openssl::openssl_verify_der_with_crl(&valid.der, &chain, &t.root, &next.der)
        .assert_rejected_with("certificate revoked");
}

#[test]
fn crl_numbers_strictly_increase_across_publishes_and_restarts() {
    let mut t = TestCa::new();
    let mut last: Option<(u64, OffsetDateTime)> = None;
    for round in 0..3 {
        for _ in 0..3 {
            let now = OffsetDateTime::now_utc();
            let published = crl::publish(&t.authority, now, crl::DEFAULT_VALIDITY).unwrap();
            let (_, parsed) = CertificateRevocationList::from_der(&published.der).unwrap();
            assert_eq!(
                parsed.crl_number().map(|n| n.to_u64_digits()),
                Some(vec![published.number])
            );
            if let Some((number, this_update)) = last {
                assert!(
                    published.number > number,
                    "round {round}: {} after {number}",
                    published.number
                );
                assert!(published.this_update >= this_update);
            }
            last = Some((published.number, published.this_update));
        }
        t = t.reopen();
    }
    // A clock stepped back an hour neither lowers the number nor moves thisUpdate back.
    let (number, this_update) = last.unwrap();
    let published = crl::publish(
        &t.authority,
        OffsetDateTime::now_utc() - Duration::hours(1),
        crl::DEFAULT_VALIDITY,
    )
    .unwrap();
    assert!(published.number > number);
    assert!(published.this_update >= this_update);
}

#[test]
fn a_shared_crl_is_read_only_if_the_issuing_ca_signed_it() {
    let t = TestCa::new();
    let revoked = t.issue_checked(ALICE, &plain_csr());
    t.authority
        .revoke(&revoked.intent.serial, RevocationReason::KeyCompromise)
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let published = crl::publish(&t.authority, now, crl::DEFAULT_VALIDITY).unwrap();
    let read = crl::read_signed(t.authority.ca(), &published.der).unwrap();
    assert_eq!(read.number, published.number);
    assert_eq!(read.this_update, published.this_update);
    assert_eq!(read.next_update, published.next_update);
    assert_eq!(read.entries, 1);
    assert_eq!(read.der, published.der);

    let refused = |der: &[u8], why: &str| {
        let err = crl::read_signed(t.authority.ca(), der).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    };
    // The root's CRL names another issuer.
    refused(&root_crl(&t), "another issuer");
    // Another CA of the same names: the issuer matches, the signature does not.
    let other = TestCa::new();
    let foreign = crl::publish(&other.authority, now, crl::DEFAULT_VALIDITY).unwrap();
    refused(&foreign.der, "not signed by the issuing CA");
    // One bit of the signature, and bytes after the CRL.
    let mut flipped = published.der.clone();
    if let Some(last) = flipped.last_mut() {
        *last ^= 1;
    }
    refused(&flipped, "not signed by the issuing CA");
    let mut trailing = published.der.clone();
    trailing.push(0);
    refused(&trailing, "trailing bytes");
    refused(b"not a CRL", "not a CRL");
    // Signed by the same key, but for another CRL URL (a node with another base URL).
    let mut urls = t.authority.ca().urls().clone();
    urls.crl = "http://elsewhere.example/crl".into();
    let key =
        t.ca.signer("issuing.key", &Protection::InsecurePlaintext)
            .unwrap();
    let elsewhere = IssuingCa::new(
        Arc::new(key),
        t.issuing.clone(),
        urls,
        t.authority.ca().trust_domain().to_owned(),
        Vec::new(),
    )
    .unwrap();
    let scoped = crl::build(&elsewhere, 99, now, now + Duration::days(1), &[]).unwrap();
    refused(&scoped, "another distribution point");
}

// ---------------------------------------------------------------------------------------------
// Serials and concurrency
// ---------------------------------------------------------------------------------------------

#[test]
fn serials_of_a_thousand_issuances_look_random() {
    let t = TestCa::new();
    let key = p256();
    let request = csr(&key, vec![uri(ALICE)]);
    let parsed = CertificateRequest::parse(&request).unwrap();
    let issue = IssueRequest {
        agent_id: ALICE,
        csr: &parsed,
        method: EnrollmentMethod::Acme,
        lifetime: None,
        validated_dns: &[],
        validated_ips: &[],
        csr_key_thumbprint: None,
    };
    let serials: Vec<[u8; 16]> = (0..1000)
        .map(|_| *t.authority.issue(&issue).unwrap().intent.serial.as_bytes())
        .collect();
    assert_serials_random(&serials);
    assert_eq!(t.serials(), 1000);
}

#[test]
fn concurrent_issuance_gives_distinct_durable_serials() {
    let t = TestCa::new();
    let requests: Vec<Vec<u8>> = (0..32).map(|_| plain_csr()).collect();
    let signed_at = OffsetDateTime::now_utc();
    let records: Vec<CertificateRecord> = std::thread::scope(|scope| {
        let handles: Vec<_> = requests
            .iter()
            .enumerate()
            .map(|(i, request)| {
                let authority = &t.authority;
                scope.spawn(move || {
                    let agent = if i % 2 == 0 { ALICE } else { BOB };
                    authority
                        .issue_csr(agent, request, EnrollmentMethod::Acme, None)
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut serials: Vec<Serial> = records.iter().map(|r| r.intent.serial).collect();
    serials.sort_unstable_by_key(|s| *s.as_bytes());
    serials.dedup();
    assert_eq!(serials.len(), 32);
    assert_eq!(t.serials(), 32);
    assert_eq!(t.signatures(), 32);
    for (i, (record, request)) in records.iter().zip(&requests).enumerate() {
        let agent = record.intent.agent_id.clone();
        let expect = t
            .expect(&agent, signed_at, request)
            .signing_window(Duration::minutes(5));
        // The external linters and verifiers on a sample; the in-process checks on all.
        if i % 8 == 0 {
            t.check(record, expect);
        } else {
            t.check_in_process(record, expect);
        }
    }
    let report = audit::verify(&t.dir.audit_log()).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(t.audit_events("cert.issued").len(), 32);
}

/// REL-4, a forced collision: serials are reserved insert-if-absent, so a serial the random
/// number generator repeats (one already certified, or one only reserved by an issuance that
/// never finished) is drawn again and never overwrites what holds it; a generator that only
/// repeats itself is refused before anything is signed.
#[test]
fn rel4_a_repeated_serial_is_drawn_again_and_never_overwrites() {
    let mut t = TestCa::new();
    let certified = t.issue_checked(ALICE, &plain_csr());
    let now = OffsetDateTime::now_utc();
    let reserved = IssuanceIntent {
        serial: random_serial().unwrap(),
        agent_id: BOB.into(),
        method: EnrollmentMethod::Cli,
        not_before: now,
        not_after: now + Duration::hours(1),
        key_sha256: "00".repeat(32),
        reserved_at: now,
    };
    t.ca.store().reserve_serial(&reserved).unwrap();
    let taken = [certified.intent.serial, reserved.serial];
    let unchanged = |t: &TestCa| {
        match t.ca.store().serial(&taken[0]).unwrap() {
            Some(SerialEntry::Issued(stored)) => assert_eq!(stored, certified),
            other => panic!("the certified serial now holds {other:?}"),
        }
        match t.ca.store().serial(&taken[1]).unwrap() {
            Some(SerialEntry::Reserved(intent)) => assert_eq!(intent, reserved),
            other => panic!("the reserved serial now holds {other:?}"),
        }
    };

    // Both taken serials first, then fresh ones.
    let repeats = std::sync::Mutex::new(taken.to_vec());
    t.authority
        .draw_serials_from(move || match repeats.lock().unwrap().pop() {
            Some(serial) => Ok(serial),
            None => random_serial(),
        });
    let signed_at = OffsetDateTime::now_utc();
    let request = plain_csr();
    let second = t.issue(BOB, &request, EnrollmentMethod::Cli, None).unwrap();
    t.check(&second, t.expect(BOB, signed_at, &request));
    assert!(!taken.contains(&second.intent.serial));
    unchanged(&t);
    assert_eq!((t.serials(), t.signatures()), (3, 2));

    // Nothing but repeats: refused, nothing signed, nothing reserved, nothing overwritten.
    let repeated = taken[0];
    t.authority.draw_serials_from(move || Ok(repeated));
    let err = t
        .issue(BOB, &plain_csr(), EnrollmentMethod::Cli, None)
        .unwrap_err();
    assert!(err.to_string().contains("repeats"), "{err}");
    unchanged(&t);
    assert_eq!((t.serials(), t.signatures()), (3, 2));
    assert_eq!(t.audit_events("cert.issued").len(), 2);
}

/// A signer that signs, then corrupts the signature: a faulty hardware module.
struct CorruptingSigner(Arc<dyn Signer>);

impl Signer for CorruptingSigner {
    fn algorithm(&self) -> crate::signer::SignatureAlgorithm {
        self.0.algorithm()
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        self.0.subject_public_key_info()
    }

    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, Error> {
        let mut signature = self.0.sign(message)?;
        if let Some(last) = signature.last_mut() {
            *last ^= 0x01;
        }
        Ok(signature)
    }

    fn signatures(&self) -> u64 {
        self.0.signatures()
    }
}

/// KEY-4: every signature of the CA key is verified with its public key before anything
/// signed with it is released; a faulty signer gets no certificate and no CRL out, the
/// request fails with the reason, and nothing is recorded as issued or published.
#[test]
fn key4_a_signer_returning_corrupted_signatures_releases_nothing() {
    let t = TestCa::new();
    let good = &t.authority.ca;
    let mut faulty = t.ca.authority(&Protection::InsecurePlaintext).unwrap();
    faulty.ca = IssuingCa::new(
        Arc::new(CorruptingSigner(good.signer.clone())),
        good.cert_der.clone(),
        good.urls.clone(),
        good.trust_domain.clone(),
        good.own_keys.clone(),
    )
    .unwrap();
    let before = (t.serials(), t.audit_events("cert.issued").len());
    let signatures = faulty.ca().signer().signatures();
    let err = faulty
        .issue_csr(ALICE, &plain_csr(), EnrollmentMethod::Cli, None)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Signing(m) if m.contains("does not verify")),
        "{err}"
    );
    assert_eq!(faulty.ca().signer().signatures(), signatures + 1);
    let certificates =
        t.ca.store()
            .certificates(&crate::store::CertificateFilter::default())
            .unwrap();
    assert!(certificates.is_empty(), "a certificate was stored");
    assert_eq!(t.audit_events("cert.issued").len(), before.1);
    // The serial reached the key, so it stays reserved (reported, never reused).
    assert_eq!(t.serials(), before.0 + 1);

    let err = crl::publish(&faulty, OffsetDateTime::now_utc(), Duration::hours(24)).unwrap_err();
    assert!(
        matches!(&err, Error::Signing(m) if m.contains("does not verify")),
        "{err}"
    );
    assert!(t.audit_events("crl.published").is_empty());

    // The sound key goes on working.
    t.issue_checked(ALICE, &plain_csr());
    crl::publish(&t.authority, OffsetDateTime::now_utc(), Duration::hours(24)).unwrap();
}

// ---------------------------------------------------------------------------------------------

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    profile::tlv(0x30, &parts.concat())
}

#[test]
fn a_key_some_acme_account_uses_is_refused_when_the_front_end_asks() {
    let t = TestCa::new();
    let account = crate::store::battery::acme::account_in(t.ca.store().as_ref(), "acct");
    let csr = CertificateRequest::parse(&plain_csr()).unwrap();
    let request = |csr_key_thumbprint| IssueRequest {
        agent_id: ALICE,
        csr: &csr,
        method: EnrollmentMethod::Acme,
        lifetime: None,
        validated_dns: &[],
        validated_ips: &[],
        csr_key_thumbprint,
    };
    let err = t.refused(|a| a.issue(&request(Some(account.thumbprint.as_str()))));
    assert!(
        matches!(&err, Error::BadCsr(m) if m.contains("ACME account key")),
        "{err:?}"
    );
    // Another thumbprint, or none asked about: issued.
    t.authority
        .issue(&request(Some("tp-of-no-account")))
        .unwrap();
    t.authority.issue(&request(None)).unwrap();
}

#[test]
fn an_order_issuance_is_checked_against_the_facts_its_claim_read() {
    let t = TestCa::new();
    let csr = CertificateRequest::parse(&plain_csr()).unwrap();
    let request = IssueRequest {
        agent_id: ALICE,
        csr: &csr,
        method: EnrollmentMethod::Acme,
        lifetime: None,
        validated_dns: &[],
        validated_ips: &[],
        csr_key_thumbprint: None,
    };
    let store = t.ca.store();
    let alice = store.agent(ALICE).unwrap();
    let facts = |agent: Option<AgentRecord>, key_blocked| IssuanceFacts {
        agent,
        key_blocked,
        account_key: false,
    };
    let never_completed =
        |_: &CertificateRecord| -> AcmeOrder { panic!("a refused issuance reached its order") };
    let stage = |facts| {
        move |a: &Authority| {
            a.stage_issue_for_order(&request, facts, None, never_completed)
                .map(|staged| staged.record().clone())
        }
    };

    // What the claim read stands, not a second read: the store blocks no key, the facts do.
    let err = t.refused(stage(facts(alice.clone(), true)));
    assert!(matches!(err, Error::UnsupportedKey(_)), "{err:?}");
    let err = t.refused(stage(facts(None, false)));
    assert!(matches!(err, Error::UnknownAgent(_)), "{err:?}");
    // Facts read for another agent are never taken for this one's.
    let err = t.refused(stage(facts(store.agent(BOB).unwrap(), false)));
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
}

#[test]
fn an_order_issuance_takes_the_serial_its_claim_reserved_and_releases_it_when_refused() {
    let t = TestCa::new();
    let csr = CertificateRequest::parse(&plain_csr()).unwrap();
    let request = IssueRequest {
        agent_id: ALICE,
        csr: &csr,
        method: EnrollmentMethod::Acme,
        // Shorter than the longest a policy allows, which bounds the reservation.
        lifetime: Some(Duration::hours(1)),
        validated_dns: &[],
        validated_ips: &[],
        csr_key_thumbprint: None,
    };
    let store = t.ca.store();
    let (order, _) = crate::store::battery::acme::order_with_authorization(store.as_ref(), "acct");
    let facts = |key_blocked| IssuanceFacts {
        agent: store.agent(ALICE).unwrap(),
        key_blocked,
        account_key: false,
    };
    let completed = |_: &CertificateRecord| order.clone();

    // Reserved with the claim: the certificate takes that serial, with its own validity
    // inside the planned bound, and no other serial is reserved.
    let reservation = t.authority.order_reservation(ALICE, &csr).unwrap();
    store.reserve_serial(&reservation).unwrap();
    let serials = t.serials();
    let staged = t
        .authority
        .stage_issue_for_order(&request, facts(false), Some(reservation.clone()), completed)
        .unwrap();
    let intent = &staged.record().intent;
    assert_eq!(intent.serial, reservation.serial);
    assert_eq!(intent.reserved_at, reservation.reserved_at);
    assert!(intent.not_after <= reservation.not_after);
    assert_eq!(t.serials(), serials);
    assert!(matches!(
        store.serial(&reservation.serial).unwrap(),
        Some(SerialEntry::Issued(record)) if record.intent == *intent
    ));
    let plain = t.authority.issue(&request).unwrap();
    assert_eq!(
        intent.not_after - intent.not_before,
        plain.intent.not_after - plain.intent.not_before,
        "the certificate's lifetime is the policy's, not the reservation's bound"
    );
    assert!(
        reservation.not_after - reservation.not_before
            > plain.intent.not_after - plain.intent.not_before,
        "the test tells the policy's lifetime from the bound"
    );

    // Refused: the reservation is released, so the refusal leaves no serial behind.
    let refused_reservation = t.authority.order_reservation(ALICE, &csr).unwrap();
    let err = t.refused(|a| {
        a.store().reserve_serial(&refused_reservation).unwrap();
        a.stage_issue_for_order(
            &request,
            facts(true),
            Some(refused_reservation.clone()),
            completed,
        )
        .map(|staged| staged.record().clone())
    });
    assert!(matches!(err, Error::UnsupportedKey(_)), "{err:?}");
    assert_eq!(store.serial(&refused_reservation.serial).unwrap(), None);

    // A reservation for another agent is not this certificate's: released, and a serial of
    // its own reserved.
    let foreign = t.authority.order_reservation(BOB, &csr).unwrap();
    store.reserve_serial(&foreign).unwrap();
    let staged = t
        .authority
        .stage_issue_for_order(&request, facts(false), Some(foreign.clone()), completed)
        .unwrap();
    assert_ne!(staged.record().intent.serial, foreign.serial);
    assert_eq!(store.serial(&foreign.serial).unwrap(), None);
}
