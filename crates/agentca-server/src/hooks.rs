//! What operator commands call while the server runs, so that the service reflects them at
//! once.

use std::sync::Arc;

use agentca_core::crl::Crl;
use agentca_core::store::CertificateRecord;

use crate::crl::CrlPublisher;
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::ocsp::OcspService;
use crate::scheduler::Maintenance;

/// Called by whoever issues or revokes while the server runs (the admin socket handler, and
/// later ACME and SCEP). The methods block (they sign, and may touch the store); call them
/// from a blocking thread, after the store operation they follow has returned.
pub struct Hooks {
    pub(crate) ocsp: Arc<OcspService>,
    pub(crate) crl: Arc<CrlPublisher>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) maintenance: Arc<Maintenance>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

impl Hooks {
    /// After an issuance: pre-signs the certificate's OCSP responses (SHA-1 and SHA-256
    /// CertIDs), so its first status lookup costs no signature. A failure is logged; the
    /// first lookup then signs.
    pub fn issued(&self, record: &CertificateRecord) {
        self.metrics.certificates_issued.inc();
        self.ocsp.presign(record);
    }

    /// After revocations: before it returns, OCSP answers `revoked` for each of `records`
    /// (pass everything `Authority::revoke_all` returned), and a CRL listing them is scheduled
    /// after the debounce delay.
    ///
    /// The revoke command should return only after this: that is what makes "when `revoke`
    /// returns, OCSP already says revoked" true.
    ///
    /// Records whose `revoked` answers this node already gives cost nothing: a front end that
    /// refuses a revocation as already done passes the stored record too, so that a
    /// revocation recorded by an attempt that failed before its reply is answered `revoked`
    /// from then on.
    pub fn revoked(&self, records: &[CertificateRecord]) {
        let changed = self.ocsp.revoked(records);
        if changed == 0 {
            return;
        }
        self.metrics
            .certificates_revoked
            .inc_by(u64::try_from(changed).unwrap_or(u64::MAX));
        self.crl.request();
    }

    /// Publishes a CRL now and serves it (`agentca crl` while serving). Blocks for a
    /// signature and a store flush.
    pub fn publish_crl(&self) -> Result<Crl, ServerError> {
        self.crl.publish()
    }

    /// Rotates the OCSP responder key and certificate now, whatever their remaining lifetime
    /// (e.g. after a suspected key exposure). The scheduler does this by itself when less than
    /// a third of the certificate's lifetime is left.
    pub fn rotate_responder(&self) -> Result<(), ServerError> {
        self.maintenance.rotate_responder()
    }

    /// The DER of the CRL being served, if one was published (SCEP GetCRL).
    pub fn current_crl(&self) -> Option<Vec<u8>> {
        self.crl.served().map(|c| c.der.to_vec())
    }

    /// Counts a SCEP PKIOperation answer; both labels come from closed sets of the front end.
    pub fn scep_answered(&self, request: &'static str, answer: &'static str) {
        self.metrics
            .scep_answers
            .get_or_create(&crate::metrics::ScepLabels { request, answer })
            .inc();
    }

    /// The DER of the OCSP responder certificate in use.
    pub fn responder_certificate(&self) -> Vec<u8> {
        self.ocsp.responder().cert_der().to_vec()
    }

    /// Signatures made so far with the responder key in use (for tests and diagnostics).
    pub fn responder_signatures(&self) -> u64 {
        self.ocsp.responder().signatures()
    }
}
