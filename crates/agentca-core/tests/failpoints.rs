//! White-box crash tests (REL-1 of the security test plan): a fail point after each step of
//! issuance, revocation and CRL publication is made to fail (`return`, an error as a storage
//! backend gives) and to panic; the CA is then opened again from its data directory, as after a
//! restart, and must hold the recovery invariants:
//!
//! - the audit chain verifies and no acknowledged write is missing from the store;
//! - a serial that reached the signer has a record (a reservation or its certificate), and no
//!   serial is used twice;
//! - what was in flight is either there or reported (a stored certificate or revocation
//!   without its audit line, a reservation without a certificate), never half-applied in a way
//!   a retry cannot finish;
//! - the CRL number rises past every number published;
//! - and the client's retry succeeds.
//!
//! The fail points are live only in test builds (the `fail` crate's `failpoints` feature, which
//! the crate's dev-dependencies turn on); the tests share one process-wide registry of them, so
//! each holds a [`fail::FailScenario`], which runs them one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use agentca_core::ca::{self, Ca, DataDir, InitOptions};
use agentca_core::csr::KeyKind;
use agentca_core::issuer::Authority;
use agentca_core::keyfile::Protection;
use agentca_core::reconcile::{Reconciliation, reconcile};
use agentca_core::store::{
    AgentRecord, CertificateFilter, CertificateRecord, EnrollmentMethod, RevocationReason, Serial,
};
use agentca_core::{Error, Result, crl};
use fail::FailScenario;
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use time::{Duration, OffsetDateTime};

const ALICE: &str = "spiffe://example.org/agent/alice";

/// A CA in a temporary directory, opened as a process opens it.
struct TestCa {
    authority: Authority,
    ca: Ca,
    dir: DataDir,
    // Dropped last: the directory outlives the store and audit log opened in it.
    _tmp: tempfile::TempDir,
}

impl TestCa {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().join("ca"));
        ca::init(
            &dir,
            &InitOptions {
                trust_domain: "example.org".into(),
                key_type: KeyKind::EcdsaP256,
                base_url: None,
                protection: Protection::InsecurePlaintext,
                issuing_key_in: None,
            },
        )
        .unwrap();
        let t = Self::open(tmp, dir);
        t.ca.store()
            .insert_agent(&AgentRecord {
                id: ALICE.into(),
                owner: None,
                policy: None,
                dns: Vec::new(),
                disabled: false,
                created_at: OffsetDateTime::now_utc(),
                early_renewal: None,
            })
            .unwrap();
        t
    }

    fn open(tmp: tempfile::TempDir, dir: DataDir) -> Self {
        let ca = Ca::open(&dir).unwrap();
        let authority = ca.authority(&Protection::InsecurePlaintext).unwrap();
        Self {
            authority,
            ca,
            dir,
            _tmp: tmp,
        }
    }

    /// Closes everything and opens the data directory again, as a new process after this one
    /// was killed: the marker of a CA left open stays, so the opening catches the audit log up.
    fn restart(self) -> Self {
        let (tmp, dir) = self.close();
        std::fs::write(dir.in_use_marker(), b"").unwrap();
        Self::open(tmp, dir)
    }

    /// Closes everything, as a process that stops cleanly.
    fn close(self) -> (tempfile::TempDir, DataDir) {
        let Self {
            authority,
            ca,
            dir,
            _tmp,
        } = self;
        drop(authority);
        drop(ca);
        (_tmp, dir)
    }

    fn issue(&self, csr: &[u8]) -> Result<CertificateRecord> {
        self.authority
            .issue_csr(ALICE, csr, EnrollmentMethod::Cli, None)
    }

    fn signatures(&self) -> u64 {
        self.authority.ca().signer().signatures()
    }

    fn certificates(&self) -> Vec<CertificateRecord> {
        self.ca
            .store()
            .certificates(&CertificateFilter::default())
            .unwrap()
    }

    /// The invariants every state after a restart must hold; returns what reconciliation
    /// reported, for the test's own expectations about what was in flight.
    fn assert_recovered(&self) -> Reconciliation {
        let log = self.dir.audit_log();
        let (reports, found) =
            reconcile(self.ca.store().as_ref(), &[log.as_path()], None, &[]).unwrap();
        assert!(reports[0].is_intact(), "{}", reports[0]);
        assert!(
            found.is_consistent(),
            "an acknowledged write is lost: {found:?}"
        );
        let certificates = self.certificates();
        for record in &certificates {
            let (_, parsed) =
                x509_parser::parse_x509_certificate(&record.der).expect("a stored DER parses");
            assert_eq!(
                parsed.raw_serial(),
                record.intent.serial.as_bytes(),
                "a record holds another serial's certificate"
            );
        }
        let serials: BTreeSet<String> = certificates
            .iter()
            .map(|c| c.intent.serial.to_hex())
            .chain(found.orphaned_intents.iter().cloned())
            .collect();
        assert_eq!(
            u64::try_from(serials.len()).unwrap(),
            self.ca.store().serial_count().unwrap(),
            "every reserved serial is a certificate or a reported reservation"
        );
        found
    }
}

fn csr() -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.serialize_request(&key).unwrap().der().to_vec()
}

/// How a fail point is made to act.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// The function returns a storage error there.
    Fail,
    /// The thread panics there (a bug, or the process dying with it).
    Panic,
}

const MODES: [Mode; 2] = [Mode::Fail, Mode::Panic];

/// Runs `attempt` with `point` acting as `mode`, and checks that it failed that way.
fn with_point<T: std::fmt::Debug>(point: &str, mode: Mode, attempt: impl FnOnce() -> Result<T>) {
    let action = match mode {
        Mode::Fail => "return",
        Mode::Panic => "panic",
    };
    fail::cfg(point, action).unwrap();
    let outcome = catch_unwind(AssertUnwindSafe(attempt));
    fail::remove(point);
    match (mode, outcome) {
        (Mode::Fail, Ok(Err(Error::Store(e)))) => {
            assert!(e.to_string().contains(point), "{point}: {e}");
        }
        (Mode::Panic, Err(_)) => {}
        (mode, other) => panic!("{point} as {mode:?}: {other:?}"),
    }
}

/// What a failed issuance left, by the step it failed after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IssuanceLeft {
    /// A reserved serial, nothing signed.
    Reservation,
    /// A reserved serial whose certificate was signed and never stored.
    SignedReservation,
    /// Either a certificate stored without its audit line, or (the store's write not yet
    /// durable) the signed reservation.
    InFlight,
    /// A durable certificate without its audit line.
    Unaudited,
    /// Everything but the reply.
    Complete,
}

#[test]
fn issuance_recovers_from_a_failure_after_every_step() {
    let _scenario = FailScenario::setup();
    let points = [
        ("issue::reserved", IssuanceLeft::Reservation),
        ("issue::signed", IssuanceLeft::SignedReservation),
        ("issue::stored", IssuanceLeft::InFlight),
        ("issue::committed", IssuanceLeft::Unaudited),
        ("issue::audited", IssuanceLeft::Complete),
    ];
    for (point, left) in points {
        for mode in MODES {
            let t = TestCa::new();
            let first = t.issue(&csr()).unwrap();
            let signatures = t.signatures();
            with_point(point, mode, || t.issue(&csr()));
            let signed = t.signatures() - signatures;
            let expect_signed = u64::from(left != IssuanceLeft::Reservation);
            assert_eq!(signed, expect_signed, "{point} {mode:?}: signatures");

            let t = t.restart();
            let found = t.assert_recovered();
            let stored: Vec<Serial> = t.certificates().iter().map(|c| c.intent.serial).collect();
            // (reservations without a certificate, certificates without their audit line,
            // certificates stored, audit lines the restart wrote for stored certificates)
            let state = (
                found.orphaned_intents.len(),
                found.stored_without_audit.len(),
                stored.len(),
                t.ca.caught_up().issued.len(),
            );
            // A certificate stored without its line gets it at the restart (INV-10).
            let allowed: &[(usize, usize, usize, usize)] = match left {
                IssuanceLeft::Reservation | IssuanceLeft::SignedReservation => &[(1, 0, 1, 0)],
                IssuanceLeft::InFlight => &[(1, 0, 1, 0), (0, 0, 2, 1)],
                IssuanceLeft::Unaudited => &[(0, 0, 2, 1)],
                IssuanceLeft::Complete => &[(0, 0, 2, 0)],
            };
            assert!(
                allowed.contains(&state),
                "{point} {mode:?}: {state:?}, {found:?}"
            );
            assert!(stored.contains(&first.intent.serial));

            // The client's retry gets a certificate of a fresh serial.
            let retried = t.issue(&csr()).unwrap();
            assert!(!stored.contains(&retried.intent.serial));
            assert!(
                found
                    .orphaned_intents
                    .iter()
                    .all(|s| *s != retried.intent.serial.to_hex())
            );
            t.restart().assert_recovered();
        }
    }
}

#[test]
fn revocation_recovers_from_a_failure_after_every_step_and_a_retry_finishes_it() {
    let _scenario = FailScenario::setup();
    let points = ["revoke::recorded", "revoke::committed", "revoke::audited"];
    for point in points {
        for mode in MODES {
            // Two certificates of one key: keyCompromise of one revokes both and blocks the key.
            let t = TestCa::new();
            let request = csr();
            let named = t.issue(&request).unwrap();
            let sibling = t.issue(&request).unwrap();
            let other = t.issue(&csr()).unwrap();
            with_point(point, mode, || {
                t.authority
                    .revoke_all(&named.intent.serial, RevocationReason::KeyCompromise)
            });

            let t = t.restart();
            let found = t.assert_recovered();
            // A revocation stored without its line gets it at the restart (INV-10).
            assert!(
                found.revoked_without_audit.is_empty(),
                "{point} {mode:?}: {found:?}"
            );
            // The operator retries: the revocation is finished, whatever it had reached.
            match t
                .authority
                .revoke_all(&named.intent.serial, RevocationReason::KeyCompromise)
            {
                Ok(_) | Err(Error::AlreadyRevoked(_)) => {}
                Err(e) => panic!("{point} {mode:?}: the retry failed: {e}"),
            }
            let t = t.restart();
            let found = t.assert_recovered();
            assert!(found.revoked_missing_from_store.is_empty());
            for record in t.certificates() {
                let revoked = record.revocation.is_some();
                if record.intent.serial == other.intent.serial {
                    assert!(
                        !revoked,
                        "{point} {mode:?}: another key's certificate revoked"
                    );
                } else {
                    assert!(
                        record
                            .revocation
                            .is_some_and(|r| r.reason == RevocationReason::KeyCompromise),
                        "{point} {mode:?}: {} is not revoked for keyCompromise after the retry \
                         (named {}, sibling {})",
                        record.intent.serial,
                        named.intent.serial,
                        sibling.intent.serial
                    );
                }
            }
            match t.issue(&request) {
                Err(Error::UnsupportedKey(_)) | Err(Error::PolicyRefused { .. }) => {}
                other => panic!("{point} {mode:?}: the compromised key was certified: {other:?}"),
            }
        }
    }
}

#[test]
fn crl_numbers_rise_past_a_publication_that_failed_after_every_step() {
    let _scenario = FailScenario::setup();
    let validity = Duration::hours(24);
    for point in ["crl::numbered", "crl::signed"] {
        for mode in MODES {
            let t = TestCa::new();
            let now = OffsetDateTime::now_utc();
            let first = crl::publish(&t.authority, now, validity).unwrap();
            with_point(point, mode, || crl::publish(&t.authority, now, validity));
            let t = t.restart();
            t.assert_recovered();
            let next = crl::publish(&t.authority, OffsetDateTime::now_utc(), validity).unwrap();
            assert!(
                next.number > first.number + 1,
                "{point} {mode:?}: number {} after {} and a failed publication",
                next.number,
                first.number
            );
        }
    }
}

#[test]
fn an_audit_line_that_could_not_be_written_is_caught_up_at_the_next_open() {
    let _scenario = FailScenario::setup();
    let t = TestCa::new();
    // The certificate is stored, then its line cannot be appended (a full disk, say): the
    // caller gets the error and the CA goes on.
    fail::cfg("audit::write", "1*return").unwrap();
    let failed = t.issue(&csr());
    fail::remove("audit::write");
    assert!(failed.is_err(), "{failed:?}");
    // Noted in the marker at once, for a process killed from here on.
    let marker = std::fs::read_to_string(t.dir.in_use_marker()).unwrap();
    assert!(marker.contains("missing since"), "{marker:?}");
    assert_eq!(t.certificates().len(), 1);
    let later = t.issue(&csr()).unwrap();

    // A clean close keeps the marker, saying since when lines are missing.
    let (tmp, dir) = t.close();
    let marker = std::fs::read_to_string(dir.in_use_marker()).expect("the marker stays");
    assert!(marker.contains("missing since"), "{marker:?}");

    // The next open writes the missing line, and only that one.
    let t = TestCa::open(tmp, dir);
    assert_eq!(t.ca.caught_up().issued.len(), 1);
    assert!(
        !t.ca
            .caught_up()
            .issued
            .contains(&later.intent.serial.to_hex())
    );
    t.assert_recovered();
    // Caught up, the CA closes cleanly again.
    let (_tmp, dir) = t.close();
    assert!(!dir.in_use_marker().exists());
}
