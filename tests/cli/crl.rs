//! `agentca crl`: the CRL it signs, as files and on standard output, checked by pkilint,
//! OpenSSL and rustls-webpki.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::support::{Env, Outcome, PKILINT_ALLOWED_ANY, pem_certs, serial_of};

/// What a test reads from a CRL.
struct Parsed {
    number: u64,
    /// thisUpdate, Unix seconds.
    this_update: i64,
    /// Serial (hex) → reason code.
    entries: BTreeMap<String, Option<u8>>,
}

/// Parses a CRL, checks its signature against the issuing CA and its issuing distribution
/// point, and lints it.
fn parse_and_check(env: &Env, der: &[u8]) -> Parsed {
    let (rest, crl) = CertificateRevocationList::from_der(der).unwrap();
    assert!(rest.is_empty(), "bytes after the CRL");
    let issuing = env.ca_der("issuing.pem");
    let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&issuing).unwrap();
    assert_eq!(crl.issuer().as_raw(), ca.subject().as_raw());
    crl.verify_signature(ca.public_key())
        .expect("the CRL is signed by the issuing CA");
    let idp = x509_parser::oid_registry::OID_X509_EXT_ISSUER_DISTRIBUTION_POINT;
    let idp = crl.extensions().iter().find(|e| e.oid == idp);
    assert!(
        idp.is_some_and(|e| e.critical),
        "the CRL lacks a critical IDP extension"
    );
    let next = crl.next_update().expect("nextUpdate present");
    assert!(next.timestamp() > crl.last_update().timestamp());

    // The issuing CA's SKI method draws a NOTICE (see PKILINT_ALLOWED_ANY); the CRL's AKI
    // repeats it.
    agentca_testkit::pkilint::pkilint_crl_allowing(der, PKILINT_ALLOWED_ANY);

    let number: u64 = crl
        .crl_number()
        .expect("a CRL number")
        .to_string()
        .parse()
        .unwrap();
    let entries = crl
        .iter_revoked_certificates()
        .map(|r| {
            (
                hex::encode(r.raw_serial()),
                r.reason_code().map(|(_, c)| c.0),
            )
        })
        .collect();
    Parsed {
        number,
        this_update: crl.last_update().timestamp(),
        entries,
    }
}

/// rustls-webpki's verdict on `leaf` with the CRL checked for the leaf only (the CLI does not
/// publish the root's CRL, which webpki would need for the issuing CA).
fn webpki_with_crl(env: &Env, leaf: &[u8], crl: &[u8]) -> Result<(), webpki::Error> {
    let now = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap();
    webpki_with_crl_at(
        env,
        leaf,
        crl,
        UnixTime::since_unix_epoch(StdDuration::from_secs(now)),
    )
}

/// [`webpki_with_crl`] at the time `when`.
fn webpki_with_crl_at(
    env: &Env,
    leaf: &[u8],
    crl: &[u8],
    when: UnixTime,
) -> Result<(), webpki::Error> {
    let root = env.ca_der("root.pem");
    let issuing = env.ca_der("issuing.pem");
    let root = CertificateDer::from(root.as_slice());
    let anchors = [webpki::anchor_from_trusted_cert(&root).unwrap()];
    let intermediates = [CertificateDer::from(issuing.as_slice())];
    let leaf = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf).unwrap();
    let crl = webpki::CertRevocationList::from(webpki::OwnedCertRevocationList::from_der(crl)?);
    let crls = [&crl];
    let options = webpki::RevocationOptionsBuilder::new(&crls)
        .unwrap()
        .with_depth(webpki::RevocationCheckDepth::EndEntity)
        .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
        .build();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        when,
        webpki::KeyUsage::client_auth(),
        Some(options),
        None,
    )
    .map(|_| ())
}

#[test]
fn crl_files_and_stdout_list_revocations_with_increasing_numbers() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    // The shortest certificate the CA issues is revocable like any other and listed (the BRs
    // would let certificates of 7 days or less go without; agentca does not, docs/profile.md).
    let compromised = env.issue(&alice, &env.csr("c"), &["--ttl", "5m"]);
    let superseded = env.issue(&alice, &env.csr("s"), &[]);
    let plain = env.issue(&alice, &env.csr("p"), &[]);
    let valid = env.issue(&alice, &env.csr("v"), &[]);
    env.json(&[
        "revoke",
        &serial_of(&compromised),
        "--reason",
        "keyCompromise",
    ]);
    env.json(&["revoke", &serial_of(&superseded), "--reason", "superseded"]);
    env.json(&["revoke", &serial_of(&plain)]);
    let expected: BTreeMap<String, Option<u8>> = [
        (serial_of(&compromised), Some(1)),
        (serial_of(&superseded), Some(4)),
        // unspecified (0) SHOULD be absent as a reason code (RFC 5280 §5.3.1); either is
        // accepted here, see below.
        (serial_of(&plain), None),
    ]
    .into_iter()
    .collect();
    let check_entries = |parsed: &Parsed| {
        assert_eq!(parsed.entries.len(), 3, "{:?}", parsed.entries);
        for (serial, reason) in &expected {
            let got = parsed
                .entries
                .get(serial)
                .unwrap_or_else(|| panic!("{serial} not listed"));
            match reason {
                Some(code) => assert_eq!(got, &Some(*code), "{serial}"),
                None => assert!(matches!(got, None | Some(0)), "{serial}: {got:?}"),
            }
        }
        assert!(!parsed.entries.contains_key(&serial_of(&valid)));
    };

    let mut numbers = Vec::new();

    // DER file.
    let der_path = env.path("crl.der");
    let out = env
        .run(&["crl", "--out", der_path.to_str().unwrap()])
        .success();
    assert!(out.stdout.contains("with 3 entries"), "{out}");
    let der = std::fs::read(&der_path).unwrap();
    let parsed = parse_and_check(&env, &der);
    check_entries(&parsed);
    numbers.push(parsed.number);

    // PEM file.
    let pem_path = env.path("crl.pem");
    let doc = env.json(&["crl", "--out", pem_path.to_str().unwrap()]);
    let pem_text = std::fs::read_to_string(&pem_path).unwrap();
    let block = pem::parse(&pem_text).unwrap();
    assert_eq!(block.tag(), "X509 CRL");
    let parsed = parse_and_check(&env, block.contents());
    check_entries(&parsed);
    assert_eq!(doc["number"], parsed.number);
    assert_eq!(doc["entries"], 3);
    assert_eq!(doc["bytes"], block.contents().len());
    numbers.push(parsed.number);

    // Standard output, text: the PEM alone on stdout, the summary on stderr.
    let out = env.run(&["crl"]).success();
    let block = pem::parse(&out.stdout).unwrap();
    assert_eq!(block.tag(), "X509 CRL");
    assert!(out.stderr.starts_with("CRL number "), "{out}");
    let parsed = parse_and_check(&env, block.contents());
    check_entries(&parsed);
    numbers.push(parsed.number);

    // Standard output, JSON: the PEM inside the document.
    let doc = env.json(&["crl"]);
    let block = pem::parse(doc["pem"].as_str().unwrap()).unwrap();
    let parsed = parse_and_check(&env, block.contents());
    check_entries(&parsed);
    assert_eq!(doc["number"], parsed.number);
    numbers.push(parsed.number);

    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "CRL numbers do not strictly increase: {numbers:?}"
    );

    // OpenSSL: the revoked certificate is refused, the valid one accepted.
    for (doc, revoked) in [
        (&compromised, true),
        (&superseded, true),
        (&plain, true),
        (&valid, false),
    ] {
        let leaf = pem_certs(doc["certificate_pem"].as_str().unwrap()).remove(0);
        let leaf_pem = env.write("leaf.pem", doc["certificate_pem"].as_str().unwrap());
        let verdict = agentca_testkit::openssl_verify_with_crl(
            &leaf_pem,
            &env.data_file("root.pem"),
            &env.data_file("issuing.pem"),
            &pem_path,
        );
        let webpki = webpki_with_crl(&env, &leaf, &der);
        if revoked {
            verdict.assert_rejected_with("certificate revoked");
            assert_eq!(webpki, Err(webpki::Error::CertRevoked));
        } else {
            verdict.assert_accepted();
            assert_eq!(webpki, Ok(()));
        }
    }
}

#[test]
fn an_empty_crl_is_valid_too() {
    let env = Env::with_ca();
    let doc = env.json(&["crl"]);
    assert_eq!(doc["entries"], 0);
    let block = pem::parse(doc["pem"].as_str().unwrap()).unwrap();
    let parsed = parse_and_check(&env, block.contents());
    assert!(parsed.entries.is_empty());
    assert!(parsed.number >= 1);
}

#[test]
fn crl_needs_the_passphrase() {
    let env = Env::with_ca();
    let mut cmd = env.command();
    cmd.env_remove("AGENTCA_PASSPHRASE").arg("crl");
    let out = Outcome::of(&mut cmd);
    assert!(out.error_line().contains("AGENTCA_PASSPHRASE"), "{out}");
}

/// REL-7: the clock set back an hour, then forward two, then back to now, between CRLs
/// (libfaketime on the `crl` command): every CRL has a higher number than the one before, a
/// thisUpdate no earlier than the one before, lists every revocation, and passes the checks of
/// [`parse_and_check`].
#[test]
fn a_clock_moved_back_or_forward_never_lowers_the_crl_number() {
    let Some(lib) = super::support::libfaketime() else {
        agentca_testkit::tools::missing("faketime", "the CRL clock test (REL-7)");
        return;
    };
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let revoked = serial_of(&env.issue(&alice, &env.csr("r"), &[]));
    env.json(&["revoke", &revoked]);
    let crl_at = |offset: Option<&str>, name: &str| {
        let out = env.path(name);
        let mut cmd = env.command();
        cmd.args(["crl", "--out", out.to_str().unwrap()]);
        if let Some(offset) = offset {
            super::support::move_clock(&mut cmd, &lib, offset);
        }
        Outcome::of(&mut cmd).success();
        parse_and_check(&env, &std::fs::read(&out).unwrap())
    };
    let (mut last, mut last_update) = (0, 0);
    for (offset, name) in [
        (None, "now.crl"),
        (Some("-1h"), "back.crl"),
        (Some("+2h"), "ahead.crl"),
        (None, "again.crl"),
    ] {
        let parsed = crl_at(offset, name);
        assert!(
            parsed.number > last,
            "{name}: CRL number {} after {last}",
            parsed.number
        );
        // thisUpdate never goes back, whatever the clock says.
        assert!(
            parsed.this_update >= last_update,
            "{name}: thisUpdate {} before {last_update}",
            parsed.this_update
        );
        assert!(
            parsed.entries.contains_key(&revoked),
            "{name}: {:?}",
            parsed.entries
        );
        if offset == Some("+2h") {
            // The clock did move.
            let ahead = OffsetDateTime::now_utc().unix_timestamp() + 7200;
            assert!((parsed.this_update - ahead).abs() < 60, "{name}");
        }
        (last, last_update) = (parsed.number, parsed.this_update);
    }
}

/// REL-7, the year 2050: dates through 2049 are UTCTime and dates from 2050 on are
/// GeneralizedTime (RFC 5280 §4.1.2.5 for validity, §5.1.2.4–5 and §5.1.2.6 for the CRL). A CA
/// made, and a certificate issued, revoked and listed, in the last half hour of 2049 gets each
/// date in the form of its year, and OpenSSL and rustls-webpki, at a time in 2050, read the
/// chain and find the certificate revoked; pkilint checks every encoding.
#[test]
fn dates_from_2050_on_are_generalized_time() {
    let Some(lib) = super::support::libfaketime() else {
        agentca_testkit::tools::missing("faketime", "the year-2050 test (REL-7)");
        return;
    };
    let env = Env::empty();
    let at_end_of_2049 = |args: &[&str]| {
        let mut cmd = env.command();
        cmd.args(args);
        super::support::move_clock(&mut cmd, &lib, "@2049-12-31 23:30:00");
        Outcome::of(&mut cmd).success()
    };
    at_end_of_2049(&["init", "--trust-domain", "example.org"]);
    let alice = env.add_agent("/agent/alice", &[]);
    let csr = env.csr("alice");
    let leaf_pem = env.path("leaf.pem");
    at_end_of_2049(&[
        "issue",
        "--agent",
        &alice,
        "--csr",
        csr.arg(),
        "--ttl",
        "24h",
        "--out",
        leaf_pem.to_str().unwrap(),
    ]);
    let leaf = pem_certs(&std::fs::read_to_string(&leaf_pem).unwrap()).remove(0);
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
    let serial = hex::encode(parsed.raw_serial());
    at_end_of_2049(&["revoke", &serial, "--reason", "keyCompromise"]);
    let crl_file = env.path("crl.der");
    at_end_of_2049(&["crl", "--out", crl_file.to_str().unwrap()]);
    let crl = std::fs::read(&crl_file).unwrap();

    let year = |t: &x509_parser::time::ASN1Time| t.to_datetime().year();
    let form = |t: &x509_parser::time::ASN1Time| {
        assert_ne!(t.is_utctime(), t.is_generalizedtime());
        if t.is_utctime() {
            "UTCTime"
        } else {
            "GeneralizedTime"
        }
    };
    let expected = |y: i32| {
        if y < 2050 {
            "UTCTime"
        } else {
            "GeneralizedTime"
        }
    };
    let mut years = Vec::new();
    for (name, der) in [
        ("root", env.ca_der("root.pem")),
        ("issuing", env.ca_der("issuing.pem")),
        ("leaf", leaf.clone()),
    ] {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        for (field, t) in [
            ("notBefore", cert.validity().not_before),
            ("notAfter", cert.validity().not_after),
        ] {
            assert_eq!(form(&t), expected(year(&t)), "{name} {field} {t}");
            years.push(year(&t));
        }
    }
    let (_, list) = CertificateRevocationList::from_der(&crl).unwrap();
    let next = list.next_update().expect("nextUpdate");
    let entry = list.iter_revoked_certificates().next().expect("one entry");
    for (field, t) in [
        ("thisUpdate", list.last_update()),
        ("nextUpdate", next),
        ("revocationDate", entry.revocation_date),
    ] {
        assert_eq!(form(&t), expected(year(&t)), "CRL {field} {t}");
        years.push(year(&t));
    }
    // The boundary was crossed: both forms occur.
    assert!(
        years.contains(&2049) && years.iter().any(|y| *y >= 2050),
        "{years:?}"
    );

    agentca_testkit::pkilint::pkilint_cert_allowing(&leaf, super::support::PKILINT_ALLOWED_LEAF);
    agentca_testkit::pkilint::pkilint_crl_allowing(&crl, PKILINT_ALLOWED_ANY);
    // 2050-01-01T00:15:00Z: every certificate valid, the CRL current.
    let in_2050 = 2_524_609_800;
    let crl_pem = env.write("crl.pem", agentca_testkit::tools::pem("X509 CRL", &[&crl]));
    let verify = |extra: &[&str]| {
        std::process::Command::new("openssl")
            .args(["verify", "-attime", &in_2050.to_string(), "-CAfile"])
            .arg(env.data_file("root.pem"))
            .arg("-untrusted")
            .arg(env.data_file("issuing.pem"))
            .args(extra)
            .arg(&leaf_pem)
            .output()
            .unwrap()
    };
    let plain = verify(&[]);
    assert!(plain.status.success(), "{plain:?}");
    let checked = verify(&["-crl_check", "-CRLfile", crl_pem.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(
        !checked.status.success() && said.contains("certificate revoked"),
        "{said}"
    );
    let when = UnixTime::since_unix_epoch(StdDuration::from_secs(in_2050));
    assert!(matches!(
        webpki_with_crl_at(&env, &leaf, &crl, when),
        Err(webpki::Error::CertRevoked)
    ));
}
