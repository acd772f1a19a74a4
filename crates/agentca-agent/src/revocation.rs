//! Watching the installed certificate's status over OCSP, so that a revocation is met with a
//! renewal at once instead of at the next planned look (which, without ARI or with a CA that
//! does not open the window on revocation, may be hours away).
//!
//! The responder asked is the one the certificate names (authorityInfoAccess), and its answers
//! are checked by `agentca-verify` against the root kept at enrollment. An unreachable
//! responder or an unusable answer says nothing either way: the schedule goes on.

use std::time::Duration;

use agentca_verify::{Error as VerifyError, Revocation, RevocationStatus, TrustAnchors, Verifier};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::enroll;
use crate::error::{AgentError, Result};
use crate::files::CredentialFiles;

/// The shortest pause between two looks: a responder is not asked more than this often.
const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// The longest pause, whatever the lifetime: a revocation is seen within this.
const MAX_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// The pause is this fraction of the lifetime: one minute for a 1-hour certificate, so a fleet
/// of 10,000 such agents asks its responder about 170 times a second.
const LIFETIME_FRACTION: u32 = 60;

/// What one look found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not revoked, according to an answer current until `next_update`.
    Good {
        /// The answer's nextUpdate.
        next_update: OffsetDateTime,
    },
    /// Revoked; the text says by whom, when and why.
    Revoked(String),
    /// No answer to go by (the responder is unreachable, the answer is unusable, the
    /// certificate has expired).
    Unknown(String),
}

impl Status {
    /// What the answer said, when it says revoked.
    pub fn revoked(self) -> Option<String> {
        match self {
            Self::Revoked(detail) => Some(detail),
            _ => None,
        }
    }
}

/// The installed certificate and how to ask about it.
pub struct Watch {
    verifier: Verifier,
    leaf: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
}

impl Watch {
    /// A watch on the certificate installed at `files`; `None` when it names no OCSP
    /// responder, so there is nobody to ask.
    pub fn new(files: &CredentialFiles) -> Result<Option<Self>> {
        let credentials = files.read()?.ok_or_else(|| AgentError::Layout {
            path: files.cert_path().to_owned(),
            reason: "no certificate installed".into(),
        })?;
        let mut chain = agentca_verify::read_certificates(&credentials.chain_pem)
            .map_err(|e| AgentError::Credentials(format!("the installed chain: {e}")))?
            .into_iter();
        let Some(leaf) = chain.next() else {
            return Err(AgentError::Credentials(
                "the installed chain is empty".into(),
            ));
        };
        let (_, cert) = X509Certificate::from_der(&leaf)
            .map_err(|e| AgentError::Credentials(format!("the installed certificate: {e}")))?;
        if !names_an_ocsp_responder(&cert) {
            return Ok(None);
        }
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        let (_, root) = enroll::read_enrollment(files)?;
        let anchors = TrustAnchors::from_pem_or_der(&root)
            .map_err(|e| AgentError::Credentials(format!("the CA certificate kept: {e}")))?;
        let verifier = Verifier::builder(anchors)
            .accept_any_id()
            .revocation(Revocation::ocsp_from_certificate())
            .timeout(enroll::REQUEST_TIMEOUT)
            .build()
            .map_err(|e| AgentError::Credentials(format!("the OCSP check: {e}")))?;
        Ok(Some(Self {
            verifier,
            leaf: leaf.clone(),
            intermediates: chain.collect(),
            not_before,
            not_after,
            next_update: None,
        }))
    }

    /// Asks the responder now.
    pub async fn check(&mut self) -> Status {
        match self
            .verifier
            .verify_fresh(&self.leaf, &self.intermediates)
            .await
        {
            Ok(verified) => match verified.revocation {
                RevocationStatus::Good { next_update, .. } => {
                    self.next_update = Some(next_update);
                    Status::Good { next_update }
                }
                other => Status::Unknown(format!("no OCSP answer: {}", other.name())),
            },
            Err(e @ VerifyError::Revoked { .. }) => Status::Revoked(e.to_string()),
            Err(e) => Status::Unknown(e.to_string()),
        }
    }

    /// How long to wait before the next look, at `now`.
    pub fn interval(&self, now: OffsetDateTime) -> Duration {
        poll_interval(self.not_before, self.not_after, self.next_update, now)
    }
}

/// The pause between two looks at a certificate valid from `not_before` to `not_after`: a
/// sixtieth of its lifetime, between 10 seconds and 15 minutes, and never past the last
/// answer's nextUpdate (after which that answer says nothing any more).
pub fn poll_interval(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Duration {
    let lifetime = Duration::try_from(not_after - not_before).unwrap_or(Duration::ZERO);
    let interval = (lifetime / LIFETIME_FRACTION).clamp(MIN_INTERVAL, MAX_INTERVAL);
    match next_update.map(|t| Duration::try_from(t - now).unwrap_or(Duration::ZERO)) {
        // An answer already past its nextUpdate: ask again after the shortest pause.
        Some(left) => interval.min(left.max(MIN_INTERVAL)),
        None => interval,
    }
}

fn names_an_ocsp_responder(cert: &X509Certificate<'_>) -> bool {
    cert.extensions().iter().any(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityInfoAccess(aia) => aia.accessdescs.iter().any(|d| {
            d.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP
                && matches!(d.access_location, x509_parser::prelude::GeneralName::URI(uri) if uri.starts_with("http://"))
        }),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NB: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn a_sixtieth_of_the_lifetime_within_bounds() {
        let hour = NB + time::Duration::hours(1);
        assert_eq!(poll_interval(NB, hour, None, NB), Duration::from_secs(60));
        let day = NB + time::Duration::days(1);
        assert_eq!(poll_interval(NB, day, None, NB), MAX_INTERVAL);
        let short = NB + time::Duration::minutes(5);
        assert_eq!(poll_interval(NB, short, None, NB), MIN_INTERVAL);
        let ten = NB + time::Duration::minutes(20);
        assert_eq!(poll_interval(NB, ten, None, NB), Duration::from_secs(20));
    }

    #[test]
    fn never_past_the_answers_next_update() {
        let day = NB + time::Duration::days(1);
        let now = NB + time::Duration::hours(1);
        let soon = now + time::Duration::minutes(2);
        assert_eq!(
            poll_interval(NB, day, Some(soon), now),
            Duration::from_secs(120)
        );
        let far = now + time::Duration::hours(5);
        assert_eq!(poll_interval(NB, day, Some(far), now), MAX_INTERVAL);
        let past = now - time::Duration::minutes(1);
        assert_eq!(poll_interval(NB, day, Some(past), now), MIN_INTERVAL);
    }
}
