//! INV-3: the validity period (RFC 5280 §4.1.2.5, BR §7.1.2.7 and §6.3.2).

use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::time::ASN1Time;

use crate::expectation::{BACKDATE, Expectation};

const INV: &str = "INV-3 (validity)";

/// Certificates carry whole seconds; `signed_at` usually does not.
const TRUNCATION: Duration = Duration::seconds(1);

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050 on.
pub(crate) fn check_time_encoding(inv: &str, field: &str, t: &ASN1Time) {
    let year = t.to_datetime().year();
    if year < 2050 && !t.is_utctime() {
        violated!(
            inv,
            "{field} {} is before 2050 but encoded as GeneralizedTime; RFC 5280 wants UTCTime",
            t.to_datetime()
        );
    }
    if year >= 2050 && !t.is_generalizedtime() {
        violated!(
            inv,
            "{field} {} is from 2050 on but not encoded as GeneralizedTime",
            t.to_datetime()
        );
    }
}

/// Checks a leaf's validity against the request's timing and the issuer's own validity.
pub(crate) fn check_leaf(
    leaf: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    expect: &Expectation,
) {
    let validity = leaf.validity();
    check_time_encoding(INV, "notBefore", &validity.not_before);
    check_time_encoding(INV, "notAfter", &validity.not_after);
    let not_before = validity.not_before.to_datetime();
    let not_after = validity.not_after.to_datetime();

    // The signature was made between `signed_at` and `signed_at + signing_window`, and
    // notBefore is that moment minus the backdate.
    let earliest = expect.signed_at - BACKDATE - TRUNCATION;
    let latest = expect.signed_at - BACKDATE + expect.signing_window;
    if not_before < earliest {
        violated!(
            INV,
            "notBefore {not_before} is earlier than signing time − 5 min ({}): backdated by \
             more than the fixed 5 minutes",
            expect.signed_at - BACKDATE
        );
    }
    if not_before > latest {
        violated!(
            INV,
            "notBefore {not_before} is later than signing time − 5 min (expected at most \
             {latest}): the 5-minute backdate is missing or the signing time is wrong"
        );
    }
    if not_after <= not_before {
        violated!(
            INV,
            "notAfter {not_after} is not after notBefore {not_before}"
        );
    }

    // Lifetime counts from the signing time, not from the backdated notBefore.
    let lifetime = not_after - not_before - BACKDATE;
    if lifetime <= Duration::ZERO {
        violated!(
            INV,
            "notAfter {not_after} is not after the signing time {}",
            not_before + BACKDATE
        );
    }
    if lifetime > expect.max_lifetime {
        violated!(
            INV,
            "lifetime from signing is {lifetime} (notBefore {not_before} + 5 min → notAfter \
             {not_after}), above the policy maximum {}",
            expect.max_lifetime
        );
    }
    if let Some(requested) = expect.requested_lifetime
        && (lifetime - requested).abs() > TRUNCATION
    {
        violated!(
            INV,
            "lifetime from signing is {lifetime} but the request asked for {requested} \
             (notAfter {not_after}, expected about {})",
            expect.signed_at + requested
        );
    }

    let issuer_not_after = issuer.validity().not_after.to_datetime();
    if not_after > issuer_not_after {
        violated!(
            INV,
            "notAfter {not_after} is after the issuing CA's notAfter {issuer_not_after}"
        );
    }
}

/// Checks a CA-side certificate's validity: well-ordered, well-encoded and inside its
/// issuer's (a root is its own issuer).
pub(crate) fn check_within_issuer(
    inv: &str,
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) {
    let validity = cert.validity();
    check_time_encoding(inv, "notBefore", &validity.not_before);
    check_time_encoding(inv, "notAfter", &validity.not_after);
    let (not_before, not_after) = (
        validity.not_before.to_datetime(),
        validity.not_after.to_datetime(),
    );
    if not_after <= not_before {
        violated!(
            inv,
            "notAfter {not_after} is not after notBefore {not_before}"
        );
    }
    let issuer_not_after: OffsetDateTime = issuer.validity().not_after.to_datetime();
    if not_after > issuer_not_after {
        violated!(
            inv,
            "notAfter {not_after} is after the issuer's notAfter {issuer_not_after}"
        );
    }
}
