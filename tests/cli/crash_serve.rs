//! REL-1 from the outside, against a running server: `serve` is killed with SIGKILL at a
//! random moment while clients work against it, and started again on the same data
//! directory, fifty times. The clients: ACME accounts made with EAB credentials, orders
//! finalized and downloaded by two accounts at once, certificates revoked by the account that
//! ordered them, an account key rolled over and over, SCEP enrollments with one-time
//! challenges, and revocations through the admin socket. A kill lands in the middle of
//! several requests (every client is always busy); after each restart the interrupted
//! requests are tried again: an order that was being finalized is finished or downloaded, a
//! SCEP request is sent again.
//!
//! Whatever any client was answered must hold at the end: every certificate received is
//! stored, audited, and answers OCSP `good` unless its revocation was acknowledged, in which
//! case it answers `revoked` and the CRL lists it; no serial is duplicated and no order has
//! two certificates; a spent EAB credential or SCEP challenge stays spent; an account made
//! is found by its key, a rolled-over key is not; the audit chain verifies and agrees with the
//! store. A request a client saw fail *before* the kill is a failure of its own. Set
//! `AGENTCA_CRASH_SEED` to replay the kill delays; the seed is printed with every failure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentca_scep::ScepOptions;
use agentca_scep::client::{
    BuiltRequest, CertRepOutcome, RequestBuilder, SignerKey, csr_with_challenge,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use instant_acme::{
    Account, ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
    RevocationRequest,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::acme_flows::runtime;
use super::crash::Rng;
use super::harness::{AcmeServer, Server, try_http};
use super::scep_clients::{pkcs_req_to, rsa_key};
use super::support::{Env, pem_certs, serial_hex};

const CYCLES: usize = 50;
/// Each cycle's kill lands this long after the server is ready and the clients start.
const KILL_AFTER_MS: (u64, u64) = (50, 800);
/// Accounts that order at the same time.
const ISSUERS: usize = 2;
const NAME: &str = "crash.agent.test";
/// Bounds any one client request, so a wedged one cannot hang the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How a client received a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// Ordered by the issuer account with this index.
    Acme(usize),
    Scep,
}

/// What clients were answered, and what is in flight.
#[derive(Default)]
struct Ledger {
    /// Certificates received: serial → DER and how.
    issued: BTreeMap<String, (Vec<u8>, Via)>,
    /// Acknowledged revocations.
    revoked: BTreeSet<String>,
    /// Revocations sent and not answered before a kill: they may have happened.
    maybe_revoked: BTreeSet<String>,
    /// The issuer accounts' keys (PKCS#8).
    issuers: Vec<Vec<u8>>,
    /// Accounts the EAB registrations made, with the credential each spent: the key of
    /// each (`None` for a rolling account's, which changes).
    registered: Vec<(Option<Vec<u8>>, Eab)>,
    /// The rolling account's current key, and whether a rollover was unanswered at a kill.
    roller: Option<Vec<u8>>,
    roll_in_flight: bool,
    /// Keys an acknowledged rollover replaced: they must find no account.
    retired: Vec<Vec<u8>>,
    rollovers: usize,
    /// Unused EAB credentials (kid, HMAC) and SCEP challenges.
    eabs: Vec<Eab>,
    challenges: Vec<String>,
    /// Challenges an acknowledged enrollment spent.
    spent_challenges: Vec<String>,
    /// Orders being finalized or downloaded when a server died: issuer index, order path,
    /// and whether the finalize was answered.
    unfinished: Vec<(usize, String, bool)>,
    /// Orders finished after a restart.
    resumed_orders: usize,
    /// Orders gone after a restart: made less than a flush before the kill and never
    /// finalized (see docs/decisions.md, "ACME orders are durable with the next flush").
    lost_orders: usize,
    /// SCEP requests unanswered when a server died, to send again, and whether each is a
    /// renewal.
    scep_retries: Vec<(BuiltRequest, bool)>,
    /// The newest SCEP certificate (serial, DER): it signs the renewals, so it is never
    /// revoked.
    scep_signer: Option<(String, Vec<u8>)>,
    scep_renewals: usize,
    /// Retried SCEP requests answered SUCCESS, and FAILURE (their challenge spent by the
    /// request that died: the client needs a new one, which is allowed, not lost work).
    scep_retried: usize,
    scep_retry_refused: usize,
    /// The numbers of the CRLs `agentca crl` published, in order.
    crl_numbers: Vec<u64>,
    /// Every failure a client saw, with when: those before the kill are failures.
    errors: Vec<(Instant, String)>,
}

impl Ledger {
    fn error(&mut self, what: impl std::fmt::Display) {
        self.errors.push((Instant::now(), what.to_string()));
    }

    /// Records a certificate a client received; the same serial twice must be the same
    /// certificate (a re-download), never another one.
    fn received(&mut self, der: Vec<u8>, via: Via) {
        let serial = serial_hex(&der);
        if let Some((earlier, _)) = self.issued.get(&serial) {
            assert_eq!(
                earlier, &der,
                "serial {serial} was handed out for two certificates"
            );
            return;
        }
        self.issued.insert(serial, (der, via));
    }
}

impl Ledger {
    /// The first certificate received that `wanted` takes and no revocation has touched.
    fn revocable(&self, wanted: impl Fn(&str, Via) -> bool) -> Option<(String, Vec<u8>, Via)> {
        self.issued
            .iter()
            .find(|(serial, (_, via))| {
                wanted(serial, *via)
                    && !self.revoked.contains(*serial)
                    && !self.maybe_revoked.contains(*serial)
            })
            .map(|(serial, (der, via))| (serial.clone(), der.clone(), *via))
    }

    fn scep_received(&mut self, der: Vec<u8>) {
        self.scep_signer = Some((serial_hex(&der), der.clone()));
        self.received(der, Via::Scep);
    }
}

type Shared = Arc<Mutex<Ledger>>;
/// An EAB credential: key id and HMAC key (base64url).
type Eab = (String, String);

/// What the clients of one cycle need of the running server.
#[derive(Clone)]
struct Target {
    https: String,
    http: std::net::SocketAddr,
    root: PathBuf,
    ra: Vec<u8>,
}

impl Target {
    fn of(server: &Server, env: &Env) -> Self {
        Self {
            https: server.https_url(""),
            http: server.http,
            root: env.data_file("root.pem"),
            ra: env.ca_der("scep-ra.pem"),
        }
    }

    fn directory(&self) -> String {
        format!("{}/acme/directory", self.https)
    }
}

/// Runs one client request, bounded in time; its failure is recorded.
async fn step<T, E: std::fmt::Display>(
    ledger: &Shared,
    what: &str,
    request: impl Future<Output = Result<T, E>>,
) -> Option<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => {
            ledger.lock().unwrap().error(format!("{what}: {e}"));
            None
        }
        Err(_) => {
            ledger.lock().unwrap().error(format!("{what}: no answer"));
            None
        }
    }
}

/// The account whose key is `key` (PKCS#8), found by the key (newAccount with
/// onlyReturnExisting).
async fn account_of(t: &Target, key: &[u8]) -> Result<Account, instant_acme::Error> {
    let der = PrivatePkcs8KeyDer::from(key.to_vec());
    let signing = instant_acme::Key::from_pkcs8_der(der.clone_key())?;
    Account::builder_with_root(&t.root)?
        .from_key((signing, der.into()), t.directory())
        .await
        .map(|(account, _)| account)
}

/// A new account with the EAB credential `eab`; its key (PKCS#8).
async fn register(
    t: &Target,
    eab: &(String, String),
) -> Result<(Account, Vec<u8>), instant_acme::Error> {
    let hmac = URL_SAFE_NO_PAD.decode(&eab.1).unwrap();
    let (account, credentials) = Account::builder_with_root(&t.root)?
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            t.directory(),
            Some(&ExternalAccountKey::new(eab.0.clone(), &hmac)),
        )
        .await?;
    Ok((
        account,
        credentials.private_key().secret_pkcs8_der().to_vec(),
    ))
}

/// The leaf of a downloaded chain.
fn leaf_of(chain: &str) -> Vec<u8> {
    pem_certs(chain).swap_remove(0)
}

/// Finishes an order left by a kill: finalizes it if still ready, downloads it if valid.
/// `Some(true)` when it is settled (finished, or nothing left to do), `Some(false)` when it
/// is still processing (a finalize that died is retried once it is stale), `None` on failure.
async fn resume(
    t: &Target,
    ledger: &Shared,
    account: &Account,
    index: usize,
    (path, finalized): (&str, bool),
) -> Option<bool> {
    let url = format!("{}{path}", t.https);
    let mut order = match tokio::time::timeout(REQUEST_TIMEOUT, account.order(url)).await {
        Ok(Ok(order)) => order,
        Ok(Err(instant_acme::Error::Api(problem))) if problem.status == Some(404) => {
            // A finalize that was answered made the order durable with its certificate.
            assert!(
                !finalized,
                "the finalized order {path} is lost: {problem:?}"
            );
            ledger.lock().unwrap().lost_orders += 1;
            return Some(true);
        }
        Ok(Err(e)) => {
            ledger
                .lock()
                .unwrap()
                .error(format!("reading an unfinished order: {e}"));
            return None;
        }
        Err(_) => {
            ledger
                .lock()
                .unwrap()
                .error("reading an unfinished order: no answer");
            return None;
        }
    };
    let retry = RetryPolicy::default();
    let status = order.state().status;
    match status {
        OrderStatus::Ready => {
            step(ledger, "finalizing an unfinished order", order.finalize()).await?;
        }
        OrderStatus::Valid => {}
        OrderStatus::Processing => return Some(false),
        OrderStatus::Pending | OrderStatus::Invalid => return Some(true),
    }
    let chain = step(
        ledger,
        "downloading an unfinished order",
        order.poll_certificate(&retry),
    )
    .await?;
    let mut l = ledger.lock().unwrap();
    l.received(leaf_of(&chain), Via::Acme(index));
    l.resumed_orders += 1;
    Some(true)
}

/// An issuer: finishes its orders a kill left, then orders, finalizes and downloads until a
/// request fails.
async fn issuer(t: Target, ledger: Shared, index: usize) {
    let key = ledger.lock().unwrap().issuers[index].clone();
    let Some(account) = step(&ledger, "finding an issuer account", account_of(&t, &key)).await
    else {
        return;
    };
    let left: Vec<(usize, String, bool)> = {
        let mut l = ledger.lock().unwrap();
        let (mine, others) = l.unfinished.drain(..).partition(|(i, _, _)| *i == index);
        l.unfinished = others;
        mine
    };
    for (n, (_, path, finalized)) in left.iter().enumerate() {
        match resume(&t, &ledger, &account, index, (path, *finalized)).await {
            Some(true) => {}
            Some(false) => ledger.lock().unwrap().unfinished.push(left[n].clone()),
            None => {
                // Still unfinished: this and the ones not reached are tried after the next start.
                ledger
                    .lock()
                    .unwrap()
                    .unfinished
                    .extend(left[n..].iter().cloned());
                return;
            }
        }
    }
    let ids = [Identifier::Dns(NAME.into())];
    let retry = RetryPolicy::default();
    loop {
        let Some(mut order) =
            step(&ledger, "newOrder", account.new_order(&NewOrder::new(&ids))).await
        else {
            return;
        };
        // Pre-authorized: ready at once.
        assert_eq!(order.state().status, OrderStatus::Ready);
        let path = order.url().strip_prefix(&t.https).unwrap().to_owned();
        ledger
            .lock()
            .unwrap()
            .unfinished
            .push((index, path.clone(), false));
        if step(&ledger, "finalize", order.finalize()).await.is_none() {
            return;
        }
        for entry in ledger.lock().unwrap().unfinished.iter_mut() {
            if entry.0 == index && entry.1 == path {
                entry.2 = true;
            }
        }
        let Some(chain) = step(
            &ledger,
            "certificate download",
            order.poll_certificate(&retry),
        )
        .await
        else {
            return;
        };
        let mut l = ledger.lock().unwrap();
        l.unfinished
            .retain(|(i, p, _)| !(*i == index && *p == path));
        l.received(leaf_of(&chain), Via::Acme(index));
    }
}

/// Revokes, by the account that ordered it, every other ACME certificate received.
async fn acme_revoker(t: Target, ledger: Shared, stop: Arc<AtomicBool>) {
    let mut accounts: BTreeMap<usize, Account> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let pick = ledger.lock().unwrap().revocable(|serial, via| {
            // Every other one: some certificates stay good to the end.
            matches!(via, Via::Acme(_)) && serial.as_bytes()[serial.len() - 1] % 2 == 0
        });
        let Some((serial, der, Via::Acme(index))) = pick else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(vacant) = accounts.entry(index) {
            let key = ledger.lock().unwrap().issuers[index].clone();
            let Some(account) = step(
                &ledger,
                "finding the ordering account",
                account_of(&t, &key),
            )
            .await
            else {
                return;
            };
            vacant.insert(account);
        }
        ledger.lock().unwrap().maybe_revoked.insert(serial.clone());
        let certificate = CertificateDer::from(der);
        let request = RevocationRequest {
            certificate: &certificate,
            reason: None,
        };
        if step(&ledger, "revokeCert", accounts[&index].revoke(&request))
            .await
            .is_none()
        {
            return;
        }
        let mut l = ledger.lock().unwrap();
        l.maybe_revoked.remove(&serial);
        l.revoked.insert(serial);
    }
}

/// Rolls one account's key over and over.
async fn roller(t: Target, ledger: Shared) {
    let (current, in_flight) = {
        let l = ledger.lock().unwrap();
        (l.roller.clone().unwrap(), l.roll_in_flight)
    };
    let mut account = match account_of(&t, &current).await {
        Ok(account) => account,
        // A rollover unanswered at the kill went through: its new key is the client's no more.
        Err(_) if in_flight => {
            let eab = ledger.lock().unwrap().eabs.pop();
            let Some(eab) = eab else { return };
            let Some((account, key)) = step(
                &ledger,
                "registering a new rolling account",
                register(&t, &eab),
            )
            .await
            else {
                return;
            };
            let mut l = ledger.lock().unwrap();
            l.registered.push((None, eab));
            l.roller = Some(key);
            l.roll_in_flight = false;
            drop(l);
            account
        }
        Err(e) => {
            ledger
                .lock()
                .unwrap()
                .error(format!("the rolling account is lost: {e}"));
            return;
        }
    };
    ledger.lock().unwrap().roll_in_flight = false;
    loop {
        // Paced: a rollover is quick, and every retired key is checked at the end.
        tokio::time::sleep(Duration::from_millis(50)).await;
        ledger.lock().unwrap().roll_in_flight = true;
        let Some(credentials) = step(&ledger, "keyChange", account.update_key()).await else {
            return;
        };
        let mut l = ledger.lock().unwrap();
        let old = l
            .roller
            .replace(credentials.private_key().secret_pkcs8_der().to_vec());
        l.retired.extend(old);
        l.roll_in_flight = false;
        l.rollovers += 1;
    }
}

/// Makes new accounts with the pool's EAB credentials.
async fn registrar(t: Target, ledger: Shared) {
    loop {
        let eab = ledger.lock().unwrap().eabs.pop();
        let Some(eab) = eab else { return };
        // Unanswered, the credential may or may not be spent: it is not used again either way.
        let Some((_, key)) = step(&ledger, "newAccount with EAB", register(&t, &eab)).await else {
            return;
        };
        ledger.lock().unwrap().registered.push((Some(key), eab));
    }
}

fn acme_clients(t: &Target, ledger: &Shared, stop: &Arc<AtomicBool>) {
    runtime().block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for index in 0..ISSUERS {
            tasks.spawn(issuer(t.clone(), ledger.clone(), index));
        }
        tasks.spawn(acme_revoker(t.clone(), ledger.clone(), stop.clone()));
        tasks.spawn(roller(t.clone(), ledger.clone()));
        tasks.spawn(registrar(t.clone(), ledger.clone()));
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    });
}

/// Sends a SCEP request; the verified outcome, or why there is none.
fn scep_exchange(
    t: &Target,
    request: &BuiltRequest,
    key: &SignerKey,
) -> Result<CertRepOutcome, String> {
    let response = try_http(
        t.http,
        "POST",
        "/scep?operation=PKIOperation",
        &[("content-type", "application/x-pki-message")],
        request.der(),
    )?;
    if response.status != 200 {
        return Err(format!("HTTP {}: {}", response.status, response.text()));
    }
    request
        .parse_reply(&response.body, &[&t.ra], key, &ScepOptions::LEGACY)
        .map_err(|e| format!("unreadable CertRep: {e}"))
}

/// The SCEP client: sends again what a kill left unanswered, enrolls with the pool's
/// challenges, then renews (a RenewalReq signed by its newest certificate) until a request
/// fails.
fn scep_client(t: &Target, ledger: &Shared, stop: &AtomicBool) {
    let key = rsa_key(1);
    let retries = std::mem::take(&mut ledger.lock().unwrap().scep_retries);
    for (n, (request, renewal)) in retries.iter().enumerate() {
        match scep_exchange(t, request, &key) {
            Ok(CertRepOutcome::Success { mut certificates }) => {
                let mut l = ledger.lock().unwrap();
                l.scep_received(certificates.swap_remove(0));
                l.scep_retried += 1;
            }
            // A PKCSReq's challenge may have been spent by the request that died; a renewal's
            // signer is never revoked, so it must succeed.
            Ok(CertRepOutcome::Failure(_)) if !renewal => {
                ledger.lock().unwrap().scep_retry_refused += 1;
            }
            Ok(other) => panic!("a retried request (renewal: {renewal}) was answered {other:?}"),
            Err(e) => {
                let mut l = ledger.lock().unwrap();
                l.error(format!("retried SCEP request: {e}"));
                l.scep_retries.extend(retries[n..].iter().cloned());
                return;
            }
        }
    }
    while !stop.load(Ordering::SeqCst) {
        let (challenge, signer) = {
            let mut l = ledger.lock().unwrap();
            (l.challenges.pop(), l.scep_signer.clone())
        };
        let (request, renewal) = match (&challenge, signer) {
            (Some(challenge), _) => {
                let (parts, transient) = pkcs_req_to(t.ra.clone(), &key, Some(challenge));
                (parts.builder(&key, &transient).build().unwrap(), false)
            }
            (None, Some((_, current))) => {
                let csr =
                    csr_with_challenge(&key, &rcgen::CertificateParams::default(), None).unwrap();
                let request = RequestBuilder::renewal_req(&csr, &key, &current, &t.ra)
                    .build()
                    .unwrap();
                (request, true)
            }
            (None, None) => return,
        };
        match scep_exchange(t, &request, &key) {
            Ok(CertRepOutcome::Success { mut certificates }) => {
                let mut l = ledger.lock().unwrap();
                l.scep_received(certificates.swap_remove(0));
                l.spent_challenges.extend(challenge);
                l.scep_renewals += usize::from(renewal);
            }
            Ok(other) => {
                ledger.lock().unwrap().error(format!(
                    "SCEP request (renewal: {renewal}) answered {other:?}"
                ));
                return;
            }
            Err(e) => {
                let mut l = ledger.lock().unwrap();
                l.error(format!("SCEP request (renewal: {renewal}): {e}"));
                l.scep_retries.push((request, renewal));
                return;
            }
        }
    }
}

/// Publishes CRLs through the admin socket (`agentca crl`), every 50 ms; each number must be
/// above every one published before it, also across kills (REV-5).
fn crl_publisher(env: &Env, ledger: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let out = env.run_json(&["crl"]);
        if !out.status.success() {
            ledger.lock().unwrap().error(format!("agentca crl: {out}"));
            return;
        }
        let number = out.json()["number"].as_u64().unwrap();
        let mut l = ledger.lock().unwrap();
        if let Some(&last) = l.crl_numbers.last() {
            assert!(number > last, "CRL number {number} published after {last}");
        }
        l.crl_numbers.push(number);
        drop(l);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Revokes SCEP certificates through the admin socket (`agentca revoke`).
fn admin_revoker(env: &Env, ledger: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let pick = {
            let l = ledger.lock().unwrap();
            let signer = l.scep_signer.as_ref().map(|(s, _)| s.clone());
            l.revocable(|serial, via| via == Via::Scep && signer.as_deref() != Some(serial))
                .map(|(serial, _, _)| serial)
        };
        let Some(serial) = pick else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        ledger.lock().unwrap().maybe_revoked.insert(serial.clone());
        // superseded, not keyCompromise: every SCEP request uses the same key.
        let out = env.run_json(&["revoke", &serial, "--reason", "superseded"]);
        let mut l = ledger.lock().unwrap();
        if out.status.success() {
            l.maybe_revoked.remove(&serial);
            l.revoked.insert(serial);
        } else {
            l.error(format!("agentca revoke {serial}: {out}"));
            return;
        }
    }
}

/// Rate limits off: fifty cycles of busy clients order more than an hour's default.
fn without_rate_limits(env: &Env) {
    let path = env.data_file("policies/default.toml");
    let policy = std::fs::read_to_string(&path).unwrap();
    let unlimited: String = policy
        .lines()
        .map(|line| match line.split_once(" = ") {
            Some((name, _)) if name.ends_with("_per_hour") => format!("{name} = 0\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    assert_ne!(
        policy, unlimited,
        "no rate limit found in the default policy"
    );
    std::fs::write(path, unlimited).unwrap();
}

/// Tops up the pools of EAB credentials and SCEP challenges (through the admin socket).
fn top_up(server: &AcmeServer<'_>, agent: &str, ledger: &Shared) {
    let (eabs, challenges) = {
        let l = ledger.lock().unwrap();
        (l.eabs.len(), l.challenges.len())
    };
    let fresh_eabs: Vec<_> = (eabs..2).map(|_| server.eab(agent)).collect();
    let fresh_challenges: Vec<_> = (challenges..2)
        .map(|_| {
            let doc = server
                .env
                .json(&["token", "create", "--agent", agent, "--for", "scep"]);
            doc["challenge"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut l = ledger.lock().unwrap();
    l.eabs.extend(fresh_eabs);
    l.challenges.extend(fresh_challenges);
}

/// `openssl ocsp` for `leaves` (PEM files) in requests of up to 32 certificates; the status
/// word of each, after the response verifies.
fn ocsp_statuses(env: &Env, server: &Server, leaves: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let mut statuses = BTreeMap::new();
    for batch in leaves.chunks(32) {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args([
            "ocsp",
            "-no_nonce",
            "-timeout",
            "10",
            "-url",
            &server.url("/ocsp"),
        ])
        .arg("-issuer")
        .arg(env.data_file("issuing.pem"))
        .arg("-CAfile")
        .arg(env.data_file("ca-chain.pem"));
        for leaf in batch {
            cmd.arg("-cert").arg(leaf);
        }
        let output = cmd.output().expect("openssl is needed for these tests");
        let text = agentca_testkit::tools::transcript(&output);
        assert!(
            output.status.success() && text.contains("Response verify OK"),
            "openssl ocsp: {text}"
        );
        for leaf in batch {
            let prefix = format!("{}: ", leaf.display());
            let status = text
                .lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
                .unwrap_or_else(|| panic!("no status for {prefix:?} in:\n{text}"));
            statuses.insert(leaf.clone(), status);
        }
    }
    statuses
}

fn write_pem(dir: &Path, serial: &str, der: &[u8]) -> PathBuf {
    let path = dir.join(format!("{serial}.pem"));
    std::fs::write(
        &path,
        pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())),
    )
    .unwrap();
    path
}

#[test]
fn acknowledged_work_survives_serve_killed_at_random_moments() {
    let env = Env::with_ca();
    let agent = env.add_agent("/agent/crash", &["--dns", NAME]);
    without_rate_limits(&env);
    let (mut rng, seed) = Rng::new();
    let ctx = format!("serve crash test seed {seed} (AGENTCA_CRASH_SEED={seed} replays it)");
    let ledger: Shared = Arc::default();

    // The accounts that order and the one that rolls, made before any kill.
    {
        let server = AcmeServer::start(&env);
        let t = Target::of(&server, &env);
        let eabs: Vec<_> = (0..=ISSUERS).map(|_| server.eab(&agent)).collect();
        let keys: Vec<Vec<u8>> = runtime().block_on(async {
            let mut keys = Vec::new();
            for eab in &eabs {
                keys.push(register(&t, eab).await.unwrap().1);
            }
            keys
        });
        let mut l = ledger.lock().unwrap();
        l.roller = keys.last().cloned();
        l.issuers = keys[..ISSUERS].to_vec();
        drop(l);
        let AcmeServer { server, .. } = server;
        server.terminate();
    }

    let mut interrupted = 0usize;
    let started = Instant::now();
    for cycle in 1..=CYCLES {
        let server = AcmeServer::start(&env);
        top_up(&server, &agent, &ledger);
        let t = Target::of(&server, &env);
        let AcmeServer { server, dns, .. } = server;
        let stop = Arc::new(AtomicBool::new(false));
        let delay = Duration::from_millis(
            KILL_AFTER_MS.0 + rng.below(KILL_AFTER_MS.1 - KILL_AFTER_MS.0 + 1),
        );
        let errors_before = ledger.lock().unwrap().errors.len();
        let killed_at = std::thread::scope(|s| {
            s.spawn(|| acme_clients(&t, &ledger, &stop));
            s.spawn(|| scep_client(&t, &ledger, &stop));
            s.spawn(|| admin_revoker(&env, &ledger, &stop));
            s.spawn(|| crl_publisher(&env, &ledger, &stop));
            std::thread::sleep(delay);
            let killed_at = Instant::now();
            server.kill();
            stop.store(true, Ordering::SeqCst);
            killed_at
        });
        drop(dns);
        let l = ledger.lock().unwrap();
        let cycle_errors = &l.errors[errors_before..];
        if let Some((_, early)) = cycle_errors.iter().find(|(at, _)| *at < killed_at) {
            panic!(
                "{ctx}: cycle {cycle}: a request failed before the kill ({delay:?} in): {early}"
            );
        }
        // A client that saw its request fail was in the middle of one when the kill landed.
        interrupted += cycle_errors.len();
    }
    let elapsed = started.elapsed();

    let l = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    let acme_received = l
        .issued
        .values()
        .filter(|(_, via)| *via != Via::Scep)
        .count();
    eprintln!(
        "{ctx}: {CYCLES} cycles in {elapsed:?}, {interrupted} requests interrupted; received {} \
         certificates ({acme_received} by ACME, {} orders finished after a restart, {} lost \
         before their finalize), {} \
         revocations, {} CRLs, {} accounts registered, {} rollovers, {} SCEP renewals; {} SCEP retries \
         answered SUCCESS, {} FAILURE",
        l.issued.len(),
        l.resumed_orders,
        l.lost_orders,
        l.revoked.len(),
        l.crl_numbers.len(),
        l.registered.len(),
        l.rollovers,
        l.scep_renewals,
        l.scep_retried,
        l.scep_retry_refused,
    );
    assert!(
        interrupted >= CYCLES,
        "{ctx}: only {interrupted} requests were cut by {CYCLES} kills"
    );
    assert!(
        acme_received > 0 && acme_received < l.issued.len(),
        "{ctx}: both protocols must have issued"
    );
    assert!(
        !l.revoked.is_empty() && l.rollovers > 0 && !l.registered.is_empty(),
        "{ctx}"
    );

    // The store and the audit log, with no server running.
    let doc = env.assert_audit_intact();
    eprintln!("{ctx}: reconciliation: {}", doc["reconciliation"]);
    let mut status = BTreeMap::new();
    for cert in env.cert_list(&[]) {
        let serial = super::support::serial_of(&cert);
        let shown = cert["status"].as_str().unwrap().to_owned();
        assert!(
            status.insert(serial.clone(), shown).is_none(),
            "{ctx}: {serial} listed twice"
        );
    }
    for serial in l.issued.keys() {
        assert!(
            status.contains_key(serial),
            "{ctx}: the received certificate {serial} is lost"
        );
    }
    for serial in &l.revoked {
        assert_eq!(
            status[serial], "revoked",
            "{ctx}: the acknowledged revocation of {serial} is lost"
        );
    }
    let audited: Vec<String> = env
        .audit_events("cert.issued")
        .iter()
        .map(|e| e["fields"]["serial"].as_str().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<&String> = audited.iter().collect();
    assert_eq!(
        unique.len(),
        audited.len(),
        "{ctx}: a serial was issued twice"
    );
    for serial in l.issued.keys() {
        assert!(
            unique.contains(serial),
            "{ctx}: {serial} was received but not audited"
        );
    }
    {
        let store = env.open_store();
        let mut orders = BTreeMap::new();
        for serial in status.keys() {
            let parsed: agentca_store::Serial = serial.parse().unwrap();
            if let Some(order) = store.acme_order_of_certificate(&parsed).unwrap()
                && let Some(other) = orders.insert(order.id.clone(), serial.clone())
            {
                panic!(
                    "{ctx}: order {} has two certificates, {other} and {serial}",
                    order.id
                );
            }
        }
    }
    let crl = env.json(&["crl"]);
    let crl_der = pem::parse(crl["pem"].as_str().unwrap())
        .unwrap()
        .into_contents();
    let listed: BTreeSet<String> = super::harness::crl_serials(&crl_der).into_iter().collect();
    let last_published = l.crl_numbers.last().copied().unwrap();
    assert!(
        crl["number"].as_u64().unwrap() > last_published,
        "{ctx}: {crl} after {last_published}"
    );
    for serial in &l.revoked {
        assert!(
            listed.contains(serial),
            "{ctx}: the CRL misses the acknowledged revocation of {serial}"
        );
    }

    // A running server answers for all of it.
    let server = AcmeServer::start(&env);
    let t = Target::of(&server, &env);
    let dir = env.path("received");
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<(String, PathBuf)> = l
        .issued
        .iter()
        .map(|(serial, (der, _))| (serial.clone(), write_pem(&dir, serial, der)))
        .collect();
    let paths: Vec<PathBuf> = files.iter().map(|(_, p)| p.clone()).collect();
    let answers = ocsp_statuses(&env, &server, &paths);
    for (serial, path) in &files {
        // A revocation in flight at a kill may have happened; the store says whether.
        let revoked = l.revoked.contains(serial)
            || (l.maybe_revoked.contains(serial) && status[serial] == "revoked");
        let want = if revoked { "revoked" } else { "good" };
        assert_eq!(answers[path], want, "{ctx}: OCSP for {serial}");
    }
    runtime().block_on(async {
        for (key, (kid, hmac)) in &l.registered {
            if let Some(key) = key {
                account_of(&t, key)
                    .await
                    .unwrap_or_else(|e| panic!("{ctx}: the account of {kid} is lost: {e}"));
            }
            let Err(again) = register(&t, &(kid.clone(), hmac.clone())).await else {
                panic!("{ctx}: the spent EAB credential {kid} made a second account");
            };
            assert!(again.to_string().contains("unauthorized"), "{ctx}: {again}");
        }
        for key in &l.issuers {
            account_of(&t, key)
                .await
                .unwrap_or_else(|e| panic!("{ctx}: an issuer account is lost: {e}"));
        }
        if !l.roll_in_flight {
            let current = l.roller.as_deref().unwrap();
            account_of(&t, current)
                .await
                .unwrap_or_else(|e| panic!("{ctx}: the rolled account's current key is lost: {e}"));
        }
        for key in &l.retired {
            let Err(refused) = account_of(&t, key).await else {
                panic!("{ctx}: a key replaced by an acknowledged rollover still names an account");
            };
            assert!(
                refused.to_string().contains("accountDoesNotExist"),
                "{ctx}: {refused}"
            );
        }
    });
    let key = rsa_key(1);
    for challenge in &l.spent_challenges {
        let (parts, transient) = pkcs_req_to(t.ra.clone(), &key, Some(challenge));
        let request = parts.builder(&key, &transient).build().unwrap();
        let outcome = scep_exchange(&t, &request, &key).unwrap();
        assert!(
            matches!(outcome, CertRepOutcome::Failure(_)),
            "{ctx}: a spent challenge enrolled again: {outcome:?}"
        );
    }
    let AcmeServer { server, .. } = server;
    server.terminate();
    env.assert_audit_intact();
}

/// The marker of an open CA (`in-use`): there while `serve` runs, gone after a clean stop,
/// left by a kill, and cleared by the next process that opens the CA and catches its audit
/// log up.
#[test]
fn a_clean_stop_closes_the_ca_and_a_kill_leaves_it_open() {
    let env = Env::with_ca();
    let marker = env.data_file("in-use");
    assert!(!marker.exists(), "a CA nobody has open is marked open");
    let server = Server::start(super::harness::serve_on_free_ports(&env));
    assert!(marker.exists(), "serve runs without marking the CA open");
    let (status, log) = server.terminate();
    assert!(status.success(), "{log}");
    assert!(
        !marker.exists(),
        "a clean stop left the CA marked open:\n{log}"
    );

    let server = Server::start(super::harness::serve_on_free_ports(&env));
    server.kill();
    assert!(marker.exists(), "a kill cannot have closed the CA");
    env.json(&["agent", "list"]);
    assert!(
        !marker.exists(),
        "the command that caught up did not close the CA"
    );
    env.assert_audit_intact();
}
