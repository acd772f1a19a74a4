//! ACME Renewal Information (RFC 9773): certificate identifiers and suggested windows.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::{Duration, OffsetDateTime};

use agentca_core::store::{CertificateRecord, EarlyRenewal, Serial};

use crate::error::AcmeError;

/// A parsed RFC 9773 §4.1 CertID: `base64url(AKI keyIdentifier) "." base64url(serial)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertId {
    /// The authority key identifier bytes.
    pub key_identifier: Vec<u8>,
    /// The serial, if it is one agentca could have issued.
    pub serial: Option<Serial>,
}

impl CertId {
    /// Parses a CertID. `malformed` for anything that is not two canonical unpadded base64url
    /// parts, or whose serial is not a DER-minimal positive INTEGER's content.
    pub fn parse(text: &str) -> Result<Self, AcmeError> {
        let bad = || AcmeError::malformed("not an RFC 9773 certificate identifier");
        let (aki, serial) = text.split_once('.').ok_or_else(bad)?;
        let key_identifier = URL_SAFE_NO_PAD.decode(aki).map_err(|_| bad())?;
        let serial_bytes = URL_SAFE_NO_PAD.decode(serial).map_err(|_| bad())?;
        if key_identifier.is_empty() || serial_bytes.is_empty() {
            return Err(bad());
        }
        // The DER content of a positive INTEGER: no superfluous leading zero, top bit clear.
        let non_minimal = serial_bytes.len() > 1 && serial_bytes[0] == 0 && serial_bytes[1] < 0x80;
        if non_minimal || serial_bytes[0] >= 0x80 {
            return Err(AcmeError::malformed(
                "the serial in the certificate identifier is not DER-minimal and positive",
            ));
        }
        let serial = <[u8; Serial::LEN]>::try_from(serial_bytes.as_slice())
            .ok()
            .and_then(Serial::from_bytes);
        Ok(Self {
            key_identifier,
            serial,
        })
    }

    /// The CertID of one of our certificates.
    pub fn format(key_identifier: &[u8], serial: &Serial) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(key_identifier),
            URL_SAFE_NO_PAD.encode(serial.as_bytes())
        )
    }
}

/// A suggested renewal window and how soon to ask again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Start of the window.
    pub start: OffsetDateTime,
    /// End of the window.
    pub end: OffsetDateTime,
    /// The Retry-After to send.
    pub retry_after: Duration,
}

/// The window for a certificate: from two thirds to five sixths of its lifetime for a valid
/// certificate (inside the validity, leaving a sixth of it for retries), and one that is
/// already open for a revoked one (RFC 9773 §4.2: renew at once). Clients are asked to check
/// again after a twelfth of the lifetime, between one minute and six hours.
///
/// When the operator asked the agent to renew early (`early`) and the certificate predates
/// that request, the window opens no later than the request and closes no later than its
/// span after it, so a cohort renews spread over that span (and within one `Retry-After` of
/// asking); a window already earlier stays as it was.
pub fn window(
    record: &CertificateRecord,
    early: Option<&EarlyRenewal>,
    now: OffsetDateTime,
) -> RenewalWindow {
    let not_before = record.intent.not_before;
    let lifetime = record.intent.not_after - not_before;
    let retry_after = (lifetime / 12_i32).clamp(Duration::minutes(1), Duration::hours(6));
    if record.revocation.is_some() {
        let start = (now - Duration::minutes(10)).max(not_before);
        return RenewalWindow {
            start,
            end: (start + Duration::minutes(5))
                .min(now)
                .max(start + Duration::seconds(1)),
            retry_after: Duration::minutes(5),
        };
    }
    let usual = RenewalWindow {
        start: not_before + lifetime * 2_i32 / 3_i32,
        end: not_before + lifetime * 5_i32 / 6_i32,
        retry_after,
    };
    match early.filter(|e| e.applies_to(record)) {
        Some(e) => {
            // The request is at or after the issuance, so it lies inside the validity; a span
            // too short to be a window is stretched to one second.
            let start = usual.start.min(e.advised_at.max(not_before));
            let end = usual
                .end
                .min(e.advised_at + e.within())
                .max(start + Duration::seconds(1));
            RenewalWindow {
                start,
                end,
                retry_after,
            }
        }
        None => usual,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use agentca_core::store::{EnrollmentMethod, IssuanceIntent, Revocation, RevocationReason};

    fn serial() -> Serial {
        Serial::from_bytes([0x11; 16]).unwrap()
    }

    fn record(revoked: bool) -> CertificateRecord {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        CertificateRecord {
            intent: IssuanceIntent {
                serial: serial(),
                agent_id: "spiffe://example.org/agent/a".into(),
                method: EnrollmentMethod::Acme,
                not_before: t,
                not_after: t + Duration::hours(24),
                key_sha256: String::new(),
                reserved_at: t,
            },
            der: vec![],
            issued_at: t,
            revocation: revoked.then_some(Revocation {
                revoked_at: t + Duration::hours(1),
                reason: RevocationReason::KeyCompromise,
            }),
        }
    }

    #[test]
    fn cert_ids_round_trip() {
        let id = CertId::format(&[1, 2, 3], &serial());
        let parsed = CertId::parse(&id).unwrap();
        assert_eq!(parsed.key_identifier, [1, 2, 3]);
        assert_eq!(parsed.serial, Some(serial()));
    }

    #[test]
    fn ari1_malformed_cert_ids() {
        for bad in [
            "",
            ".",
            "AQID",
            "AQID.",
            ".AQID",
            "AQID=.AQID",
            "AQ+D.AQID",
            "AQID.AAEC",   // 00 01 02: a superfluous leading zero
            "AQID.gAEC",   // top bit set: negative
            "AQID.AQID.x", // three parts
        ] {
            assert!(CertId::parse(bad).is_err(), "{bad:?}");
        }
        // A serial that is valid DER but not one of ours parses, and is simply unknown.
        assert_eq!(CertId::parse("AQID.AQID").unwrap().serial, None);
        // 00 80: the leading zero is needed there, so it is minimal.
        assert_eq!(CertId::parse("AQID.AIA").unwrap().serial, None);
    }

    #[test]
    fn windows_lie_inside_the_validity() {
        let r = record(false);
        let w = window(&r, None, r.intent.not_before);
        assert!(r.intent.not_before < w.start && w.start < w.end && w.end < r.intent.not_after);
        assert_eq!(w.retry_after, Duration::hours(2));
    }

    #[test]
    fn revoked_certificates_get_a_window_that_is_already_open() {
        let r = record(true);
        let now = r.intent.not_before + Duration::hours(3);
        let w = window(&r, None, now);
        assert!(w.start < w.end && w.end <= now);
        assert!(w.start >= r.intent.not_before);
    }

    fn early(r: &CertificateRecord, after: Duration, within: u32) -> EarlyRenewal {
        EarlyRenewal {
            advised_at: r.issued_at + after,
            within_seconds: within,
        }
    }

    #[test]
    fn ari3_an_early_renewal_request_opens_the_window_at_once_for_older_certificates() {
        let r = record(false);
        let asked = early(&r, Duration::hours(1), 600);
        let now = asked.advised_at + Duration::seconds(5);
        let w = window(&r, Some(&asked), now);
        assert_eq!(w.start, asked.advised_at);
        assert_eq!(w.end, asked.advised_at + Duration::minutes(10));
        assert!(w.start <= now && w.end < r.intent.not_after);
        // The usual poll interval still applies: the request reaches clients within it.
        assert_eq!(w.retry_after, Duration::hours(2));
    }

    #[test]
    fn ari3_an_early_renewal_request_never_moves_a_window_later_or_past_the_validity() {
        let r = record(false);
        let usual = window(&r, None, r.issued_at);
        // Asked after the usual window opened: it stays open from its usual start.
        let late = early(&r, Duration::hours(17), 86_400);
        let w = window(&r, Some(&late), late.advised_at);
        assert_eq!((w.start, w.end), (usual.start, usual.end));
        // A long span is cut at the usual end, inside the validity.
        let long = early(&r, Duration::hours(1), 86_400);
        let w = window(&r, Some(&long), long.advised_at);
        assert_eq!((w.start, w.end), (long.advised_at, usual.end));
        // A zero span is still a window.
        let zero = early(&r, Duration::hours(1), 0);
        let w = window(&r, Some(&zero), zero.advised_at);
        assert!(w.end > w.start);
    }

    #[test]
    fn ari3_certificates_issued_after_the_request_are_its_replacements_and_keep_their_window() {
        let r = record(false);
        let before = early(&r, -Duration::seconds(1), 600);
        assert_eq!(
            window(&r, Some(&before), r.issued_at),
            window(&r, None, r.issued_at)
        );
        // And a revoked certificate's immediate window wins over the request.
        let revoked = record(true);
        let asked = early(&revoked, Duration::hours(1), 600);
        let now = asked.advised_at + Duration::hours(1);
        assert!(window(&revoked, Some(&asked), now).end <= now);
    }
}
