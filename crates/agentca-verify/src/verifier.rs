//! The [`Verifier`]: settings chosen once with a [`Builder`], then a synchronous check that
//! never touches the network ([`Verifier::verify_chain`], also behind the rustls verifiers) and
//! an asynchronous one that fetches a missing revocation answer ([`Verifier::verify`]).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use url::Url;

use crate::anchors::TrustAnchors;
use crate::cache::{Cache, Key};
use crate::chain::{ChainPolicy, Checked, IdPolicy, Usage};
use crate::clock::{self, Clock, SystemClock};
use crate::crl::{CrlHolder, LoadedCrl, MAX_CRL_LEN};
use crate::error::Error;
use crate::http::{self, Limits};
use crate::ocsp::{self, Answer, AnswerStatus, Issuer};
use crate::paths::PathCache;
use crate::pattern::IdPattern;
use crate::revocation::{
    CrlSource, FailurePolicy, OcspSource, Revocation, RevocationSource, RevocationStatus,
};
use crate::spiffe::SpiffeId;

/// The largest OCSP response accepted.
const MAX_OCSP_LEN: usize = 64 << 10;

/// An agent whose certificate passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedAgent {
    /// The agent's identity: the certificate's one URI SAN.
    pub spiffe_id: SpiffeId,
    /// The certificate's serial.
    pub serial: Serial,
    /// The certificate's notBefore.
    pub not_before: OffsetDateTime,
    /// The certificate's notAfter.
    pub not_after: OffsetDateTime,
    /// What revocation checking found.
    pub revocation: RevocationStatus,
}

/// A certificate serial number: the INTEGER's content bytes; shown as lowercase hex, the way
/// agentca prints and accepts serials.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// The INTEGER content bytes (big-endian two's complement).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

/// Settings for a [`Verifier`]. Start with [`Verifier::builder`].
#[must_use]
pub struct Builder {
    anchors: TrustAnchors,
    ids: Vec<IdPattern>,
    any_id: bool,
    usage: Usage,
    revocation: Revocation,
    failure: FailurePolicy,
    timeout: Duration,
    skew: Duration,
    cache_capacity: usize,
    path_cache_capacity: usize,
    max_cache_age: Duration,
    clock: Arc<dyn Clock>,
    runtime: Option<Handle>,
    provider: Option<Arc<CryptoProvider>>,
}

impl Builder {
    /// Accepts agents whose SPIFFE ID matches `pattern` (repeatable: any one match admits).
    pub fn expect_id(mut self, pattern: IdPattern) -> Self {
        self.ids.push(pattern);
        self
    }

    /// Accepts any well-formed SPIFFE ID the trust anchors vouch for. Ignored when
    /// [`Builder::expect_id`] was also called. Without either, [`Builder::build`] refuses.
    pub fn accept_any_id(mut self) -> Self {
        self.any_id = true;
        self
    }

    /// The key usage [`Verifier::verify_chain`] and [`Verifier::verify`] require (default
    /// client authentication). The TLS verifiers always require their own.
    pub fn usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// How revocation is checked (default: not at all).
    pub fn revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = revocation;
        self
    }

    /// What to do when no revocation answer can be had (default fail-closed).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// The deadline of one OCSP or CRL fetch, connection included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How far in the future an answer's thisUpdate may be (default 5 minutes, the CA's
    /// backdating).
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// How many OCSP answers are cached at most (default 10,000).
    pub fn ocsp_cache_capacity(mut self, entries: usize) -> Self {
        self.cache_capacity = entries;
        self
    }

    /// How many verified paths are kept at most (default 10,000; 0 keeps none). A leaf
    /// presented again with the same intermediates then skips path building and its signature
    /// verifications while every certificate of the path is valid: the bulk of a check's cost
    /// when the revocation answer is cached. Checks against a CRL always build the path.
    pub fn path_cache_capacity(mut self, entries: usize) -> Self {
        self.path_cache_capacity = entries;
        self
    }

    /// The longest an OCSP answer or a fetched CRL is used, even when its nextUpdate is later
    /// (default 1 hour). This bounds how long a revocation can go unnoticed.
    pub fn max_cache_age(mut self, age: Duration) -> Self {
        self.max_cache_age = age;
        self
    }

    /// Where "now" comes from for [`Verifier::verify`] and the caches (default the system
    /// clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The runtime background refreshes run on. By default, the runtime current when
    /// [`Builder::build`] runs, else the one current at the time of a refresh; with neither,
    /// nothing is refreshed in the background.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// The crypto provider for signatures (default rustls' aws-lc-rs provider).
    pub fn crypto_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Checks the settings and builds the verifier.
    pub fn build(self) -> Result<Verifier, Error> {
        let ids = if !self.ids.is_empty() {
            IdPolicy::OneOf(self.ids)
        } else if self.any_id {
            IdPolicy::Any
        } else {
            return Err(Error::NoIdentityPolicy);
        };
        let max_age = clock::duration(self.max_cache_age);
        let revocation = match self.revocation {
            Revocation::None => RevocationState::None,
            Revocation::Ocsp(OcspSource::Url(url)) => RevocationState::Ocsp {
                url: Some(http::parse_url(&url)?),
            },
            Revocation::Ocsp(OcspSource::FromCertificate) => RevocationState::Ocsp { url: None },
            Revocation::Crl(CrlSource::Url(url)) => RevocationState::Crl(CrlHolder::Fetched {
                url: http::parse_url(&url)?,
                current: Default::default(),
            }),
            Revocation::Crl(CrlSource::Given(bytes)) => {
                let crl = LoadedCrl::parse(&bytes, self.clock.now(), time::Duration::MAX)
                    .map_err(|e| Error::InvalidCrl(e.to_string()))?;
                RevocationState::Crl(CrlHolder::Given(Arc::new(crl)))
            }
        };
        let provider = self
            .provider
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        Ok(Verifier {
            inner: Arc::new(Inner {
                anchors: self.anchors,
                ids,
                usage: self.usage,
                revocation,
                failure: self.failure,
                timeout: self.timeout,
                skew: clock::duration(self.skew),
                cache: Cache::new(self.cache_capacity, max_age),
                paths: PathCache::new(self.path_cache_capacity),
                max_age,
                clock: self.clock,
                runtime: self.runtime.or_else(|| Handle::try_current().ok()),
                provider,
                in_flight: Mutex::new(HashSet::new()),
                crl_in_flight: AtomicBool::new(false),
            }),
        })
    }
}

/// Checks agent certificates: chain, identity and revocation. Cheap to clone (shared state:
/// the OCSP cache and the current CRL).
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    anchors: TrustAnchors,
    ids: IdPolicy,
    usage: Usage,
    revocation: RevocationState,
    failure: FailurePolicy,
    timeout: Duration,
    skew: time::Duration,
    cache: Cache,
    paths: PathCache,
    max_age: time::Duration,
    clock: Arc<dyn Clock>,
    runtime: Option<Handle>,
    provider: Arc<CryptoProvider>,
    /// OCSP refreshes under way, so one certificate is fetched once at a time.
    in_flight: Mutex<HashSet<Key>>,
    crl_in_flight: AtomicBool,
}

enum RevocationState {
    None,
    Ocsp { url: Option<Url> },
    Crl(CrlHolder),
}

/// What a synchronous check does when no revocation answer is at hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// Apply the [`FailurePolicy`].
    Policy,
    /// Admit for now: an asynchronous check follows before the peer is trusted.
    Defer,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("Verifier")
            .field("anchors", &i.anchors.len())
            .field("ids", &i.ids)
            .field("usage", &i.usage)
            .field(
                "revocation",
                &match &i.revocation {
                    RevocationState::None => "none",
                    RevocationState::Ocsp { .. } => "ocsp",
                    RevocationState::Crl(_) => "crl",
                },
            )
            .field("failure", &i.failure)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Starts the settings of a verifier trusting `anchors`.
    pub fn builder(anchors: TrustAnchors) -> Builder {
        Builder {
            anchors,
            ids: Vec::new(),
            any_id: false,
            usage: Usage::ClientAuth,
            revocation: Revocation::None,
            failure: FailurePolicy::Closed,
            timeout: Duration::from_secs(5),
            skew: Duration::from_secs(300),
            cache_capacity: 10_000,
            path_cache_capacity: 10_000,
            max_cache_age: Duration::from_secs(3600),
            clock: Arc::new(SystemClock),
            runtime: None,
            provider: None,
        }
    }

    /// Checks `leaf` (with the peer's `intermediates`) at `now` without any network access:
    /// the chain to a trust anchor, the validity window, the agent profile and identity, and
    /// revocation from what is cached (a fresh OCSP answer or the current CRL). Without a
    /// cached answer the [`FailurePolicy`] decides, and a background refresh is started when
    /// a tokio runtime is available, so a later check finds an answer.
    pub fn verify_chain(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Result<VerifiedAgent, Error> {
        self.verify_offline(
            leaf,
            intermediates,
            now,
            self.inner.usage,
            &[],
            Miss::Policy,
        )
    }

    /// Checks like [`Verifier::verify_chain`] at the clock's time, but fetches the revocation
    /// answer when none is cached (waiting at most the configured timeout) and caches it. Needs
    /// a tokio runtime with I/O and timers enabled.
    pub async fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<VerifiedAgent, Error> {
        self.verify_online(leaf, intermediates, false).await
    }

    /// Checks like [`Verifier::verify`], but asks the OCSP responder (or fetches the CRL) even
    /// when a cached answer is still fresh, and caches what it gets. For a party that polls a
    /// certificate's status, such as an agent watching its own certificate, whose question is
    /// whether anything changed since the last answer. Without an answer the
    /// [`FailurePolicy`] decides, as in [`Verifier::verify`].
    pub async fn verify_fresh(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<VerifiedAgent, Error> {
        self.verify_online(leaf, intermediates, true).await
    }

    /// [`Verifier::verify`] (`fresh` false: a fresh cached answer is used) and
    /// [`Verifier::verify_fresh`] (`fresh` true: the answer is always fetched).
    async fn verify_online(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        fresh: bool,
    ) -> Result<VerifiedAgent, Error> {
        let i = &self.inner;
        let now = i.clock.now();
        let usage = i.usage;
        match &i.revocation {
            RevocationState::None | RevocationState::Crl(CrlHolder::Given(_)) => {
                self.verify_offline(leaf, intermediates, now, usage, &[], Miss::Policy)
            }
            RevocationState::Crl(holder) => {
                if fresh || holder.current(now).0.is_none() {
                    // The certificate first, so that a refusal names its own problem.
                    let checked =
                        self.chain_policy()
                            .check(leaf, intermediates, now, usage, None)?;
                    match self.fetch_crl().await {
                        Ok(()) => {}
                        Err(Error::RevocationUnavailable(reason)) => {
                            return self.miss(checked, reason, Miss::Policy);
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.verify_offline(leaf, intermediates, i.clock.now(), usage, &[], Miss::Policy)
            }
            RevocationState::Ocsp { .. } => {
                let checked = self
                    .chain_policy()
                    .check(leaf, intermediates, now, usage, None)?;
                let key = cache_key(&checked)?;
                if !fresh && let Some(hit) = i.cache.lookup(&key, now) {
                    if hit.refresh_due {
                        self.spawn_ocsp_refresh(checked.clone(), key);
                    }
                    return apply(checked, hit.answer);
                }
                match self.fetch_ocsp(&checked).await {
                    Ok(answer) => {
                        i.cache.insert(key, answer, i.clock.now());
                        apply(checked, answer)
                    }
                    Err(Error::RevocationUnavailable(reason)) => {
                        self.miss(checked, reason, Miss::Policy)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn cached_paths(&self) -> usize {
        self.inner.paths.len()
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.inner.provider
    }

    pub(crate) fn anchors(&self) -> &TrustAnchors {
        &self.inner.anchors
    }

    fn algs(&self) -> &'static [&'static dyn SignatureVerificationAlgorithm] {
        self.inner.provider.signature_verification_algorithms.all
    }

    fn chain_policy(&self) -> ChainPolicy<'_> {
        ChainPolicy {
            anchors: &self.inner.anchors,
            algs: self.algs(),
            ids: &self.inner.ids,
            paths: &self.inner.paths,
        }
    }

    /// The synchronous check behind [`Verifier::verify_chain`] and the TLS verifiers.
    /// `stapled` is an OCSP response the peer sent with its certificate (empty if none).
    pub(crate) fn verify_offline(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: OffsetDateTime,
        usage: Usage,
        stapled: &[u8],
        miss: Miss,
    ) -> Result<VerifiedAgent, Error> {
        let i = &self.inner;
        let policy = self.chain_policy();
        match &i.revocation {
            RevocationState::None => {
                let checked = policy.check(leaf, intermediates, now, usage, None)?;
                Ok(agent(checked, RevocationStatus::NotChecked))
            }
            RevocationState::Crl(holder) => {
                let (crl, refresh) = holder.current(now);
                if refresh {
                    self.spawn_crl_refresh();
                }
                let Some(crl) = crl else {
                    let checked = policy.check(leaf, intermediates, now, usage, None)?;
                    return self.miss(checked, "no current CRL is at hand".into(), miss);
                };
                let checked = policy.check(leaf, intermediates, now, usage, Some(&crl.crl))?;
                crl.check_this_update(now, i.skew)?;
                Ok(agent(
                    checked,
                    RevocationStatus::Good {
                        source: RevocationSource::Crl,
                        this_update: crl.this_update,
                        next_update: crl.next_update,
                    },
                ))
            }
            RevocationState::Ocsp { .. } => {
                let checked = policy.check(leaf, intermediates, now, usage, None)?;
                let key = cache_key(&checked)?;
                if let Some(hit) = i.cache.lookup(&key, now) {
                    if hit.refresh_due {
                        self.spawn_ocsp_refresh(checked.clone(), key);
                    }
                    return apply(checked, hit.answer);
                }
                if !stapled.is_empty() {
                    let issuer = Issuer::new(&checked.issuer)?;
                    match ocsp::check_response(
                        stapled,
                        &issuer,
                        &checked.serial,
                        now,
                        i.skew,
                        self.algs(),
                    ) {
                        Ok(answer) => {
                            i.cache.insert(key, answer, now);
                            return apply(checked, answer);
                        }
                        Err(Error::RevocationUnavailable(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                let refreshing = self.spawn_ocsp_refresh(checked.clone(), key);
                let reason = if refreshing {
                    "no fresh OCSP answer is cached yet; it is being fetched"
                } else {
                    "no fresh OCSP answer is cached"
                };
                self.miss(checked, reason.into(), miss)
            }
        }
    }

    fn miss(&self, checked: Checked, reason: String, miss: Miss) -> Result<VerifiedAgent, Error> {
        match (miss, self.inner.failure) {
            (Miss::Policy, FailurePolicy::Closed) => Err(Error::RevocationUnavailable(reason)),
            (Miss::Defer, _) | (Miss::Policy, FailurePolicy::Open) => {
                tracing::debug!(agent = %checked.id, %reason, "admitted without a revocation answer");
                Ok(agent(checked, RevocationStatus::Unavailable { reason }))
            }
        }
    }

    fn limits(&self, max_body: usize) -> Limits {
        Limits {
            timeout: self.inner.timeout,
            max_body,
        }
    }

    fn runtime(&self) -> Option<Handle> {
        self.inner
            .runtime
            .clone()
            .or_else(|| Handle::try_current().ok())
    }

    /// Asks the OCSP responder about `checked` and checks the answer.
    async fn fetch_ocsp(&self, checked: &Checked) -> Result<Answer, Error> {
        let i = &self.inner;
        let url = match &i.revocation {
            RevocationState::Ocsp { url: Some(url) } => url.clone(),
            _ => checked
                .ocsp_urls
                .iter()
                .find_map(|u| http::parse_url(u).ok())
                .ok_or_else(|| {
                    Error::RevocationUnavailable(
                        "the certificate names no http:// OCSP responder".into(),
                    )
                })?,
        };
        let issuer = Issuer::new(&checked.issuer)?;
        let request = ocsp::request(&issuer, &checked.serial)?;
        let response = http::post(
            &url,
            "application/ocsp-request",
            "application/ocsp-response",
            request,
            self.limits(MAX_OCSP_LEN),
        )
        .await
        .map_err(|e| Error::RevocationUnavailable(format!("OCSP responder {e}")))?;
        ocsp::check_response(
            &response,
            &issuer,
            &checked.serial,
            i.clock.now(),
            i.skew,
            self.algs(),
        )
    }

    /// Fetches the CRL and makes it current, unless it is already stale or future-dated.
    async fn fetch_crl(&self) -> Result<(), Error> {
        let i = &self.inner;
        let RevocationState::Crl(holder @ CrlHolder::Fetched { url, .. }) = &i.revocation else {
            return Ok(());
        };
        let body = http::get(url, "application/pkix-crl", self.limits(MAX_CRL_LEN))
            .await
            .map_err(|e| Error::RevocationUnavailable(format!("CRL server {e}")))?;
        let now = i.clock.now();
        let crl = LoadedCrl::parse(&body, now, i.max_age)?;
        crl.check_this_update(now, i.skew)?;
        if crl.next_update <= now {
            return Err(Error::CrlStale {
                next_update: crl.next_update,
                now,
            });
        }
        holder.store(Arc::new(crl));
        Ok(())
    }

    /// Starts fetching an OCSP answer for `checked` in the background, unless one is under
    /// way. Returns whether a fetch is (now) running.
    fn spawn_ocsp_refresh(&self, checked: Checked, key: Key) -> bool {
        let Some(runtime) = self.runtime() else {
            return false;
        };
        if !lock(&self.inner.in_flight).insert(key.clone()) {
            return true;
        }
        let this = self.clone();
        runtime.spawn(async move {
            let _done = InFlight {
                verifier: this.clone(),
                key: key.clone(),
            };
            match this.fetch_ocsp(&checked).await {
                Ok(answer) => this.inner.cache.insert(key, answer, this.inner.clock.now()),
                Err(e) => {
                    tracing::debug!(agent = %checked.id, error = %e, "background OCSP refresh failed");
                }
            }
        });
        true
    }

    fn spawn_crl_refresh(&self) {
        let Some(runtime) = self.runtime() else {
            return;
        };
        if self.inner.crl_in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        runtime.spawn(async move {
            if let Err(e) = this.fetch_crl().await {
                tracing::debug!(error = %e, "background CRL refresh failed");
            }
            this.inner.crl_in_flight.store(false, Ordering::Release);
        });
    }
}

/// Removes a key from the in-flight set when its refresh ends, however it ends.
struct InFlight {
    verifier: Verifier,
    key: Key,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.verifier.inner.in_flight).remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache_key(checked: &Checked) -> Result<Key, Error> {
    Ok((
        Issuer::new(&checked.issuer)?.key_id(),
        checked.serial.clone(),
    ))
}

fn agent(checked: Checked, revocation: RevocationStatus) -> VerifiedAgent {
    VerifiedAgent {
        spiffe_id: checked.id,
        serial: Serial(checked.serial),
        not_before: checked.not_before,
        not_after: checked.not_after,
        revocation,
    }
}

fn apply(checked: Checked, answer: Answer) -> Result<VerifiedAgent, Error> {
    match answer.status {
        AnswerStatus::Good => Ok(agent(
            checked,
            RevocationStatus::Good {
                source: RevocationSource::Ocsp,
                this_update: answer.this_update,
                next_update: answer.next_update,
            },
        )),
        AnswerStatus::Revoked { at, reason } => Err(Error::Revoked {
            serial: hex::encode(&checked.serial),
            revoked_at: Some(at),
            reason,
            by: RevocationSource::Ocsp,
        }),
    }
}
