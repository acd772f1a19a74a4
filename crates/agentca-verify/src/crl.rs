//! CRLs as a relying party holds them: parsed once (rustls-webpki for the entries, which also
//! refuses delta, indirect and partitioned CRLs and unknown critical extensions), with the
//! update times read for caching. The signature, the issuer, the scope and nextUpdate are
//! checked by webpki against the certificate's issuer on every use.

use std::sync::{Arc, RwLock};

use time::OffsetDateTime;
use webpki::{CertRevocationList, OwnedCertRevocationList};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::error::Error;

/// The largest CRL accepted, fetched or given.
pub(crate) const MAX_CRL_LEN: usize = 16 << 20;

/// A parsed CRL and its update times.
#[derive(Debug)]
pub(crate) struct LoadedCrl {
    pub(crate) crl: CertRevocationList<'static>,
    pub(crate) this_update: OffsetDateTime,
    pub(crate) next_update: OffsetDateTime,
    /// When this copy stops being used (nextUpdate, or earlier with a maximum cache age).
    pub(crate) fresh_until: OffsetDateTime,
    /// When a background refresh should start.
    pub(crate) refresh_at: OffsetDateTime,
}

impl LoadedCrl {
    /// Parses a DER or PEM CRL (one `X509 CRL` block); `max_age` caps how long it is used,
    /// counted from `now`.
    pub(crate) fn parse(
        bytes: &[u8],
        now: OffsetDateTime,
        max_age: time::Duration,
    ) -> Result<Self, Error> {
        let malformed = |why: String| Error::CrlMalformed(why);
        let der = if crate::anchors::looks_like_pem(bytes) {
            let block = pem::parse(bytes).map_err(|e| malformed(format!("bad PEM: {e}")))?;
            if block.tag() != "X509 CRL" {
                return Err(malformed(format!(
                    "PEM block {:?}, not X509 CRL",
                    block.tag()
                )));
            }
            block.into_contents()
        } else {
            bytes.to_vec()
        };
        if der.len() > MAX_CRL_LEN {
            return Err(malformed(format!("larger than {MAX_CRL_LEN} bytes")));
        }
        let (rest, parsed) =
            CertificateRevocationList::from_der(&der).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes after the CRL".into()));
        }
        let this_update = parsed.last_update().to_datetime();
        let next_update = parsed
            .next_update()
            .ok_or_else(|| malformed("no nextUpdate".into()))?
            .to_datetime();
        let crl = OwnedCertRevocationList::from_der(&der)
            .map_err(|e| malformed(format!("{e:?}")))?
            .into();
        let fresh_until = next_update.min(crate::clock::later(now, max_age));
        Ok(Self {
            crl,
            this_update,
            next_update,
            fresh_until,
            refresh_at: now + (fresh_until - now) / 2,
        })
    }

    /// Refuses a CRL dated further ahead than `skew` (webpki checks nextUpdate itself).
    pub(crate) fn check_this_update(
        &self,
        now: OffsetDateTime,
        skew: time::Duration,
    ) -> Result<(), Error> {
        if self.this_update > crate::clock::later(now, skew) {
            return Err(Error::CrlNotYetValid {
                this_update: self.this_update,
                now,
            });
        }
        Ok(())
    }
}

/// The CRL a verifier uses: given once, or fetched from a URL and replaced when due.
#[derive(Debug)]
pub(crate) enum CrlHolder {
    Given(Arc<LoadedCrl>),
    Fetched {
        url: url::Url,
        current: RwLock<Option<Arc<LoadedCrl>>>,
    },
}

impl CrlHolder {
    /// The CRL to check against at `now`, if there is a usable one; for a fetched CRL, also
    /// whether a refresh is due.
    pub(crate) fn current(&self, now: OffsetDateTime) -> (Option<Arc<LoadedCrl>>, bool) {
        match self {
            Self::Given(crl) => (Some(crl.clone()), false),
            Self::Fetched { current, .. } => {
                let crl = current.read().unwrap_or_else(|e| e.into_inner()).clone();
                match crl {
                    Some(crl) if now < crl.fresh_until => {
                        let due = now >= crl.refresh_at;
                        (Some(crl), due)
                    }
                    _ => (None, true),
                }
            }
        }
    }

    pub(crate) fn store(&self, crl: Arc<LoadedCrl>) {
        if let Self::Fetched { current, .. } = self {
            *current.write().unwrap_or_else(|e| e.into_inner()) = Some(crl);
        }
    }
}
