//! `agentca serve`: configuration, the development CA on first run, logging, the admin socket,
//! and signals. The service itself is `agentca_server::Server`.
//!
//! Configuration precedence, highest first: command-line flags, environment variables
//! (`AGENTCA_LISTEN`, `AGENTCA_HTTP_LISTEN`, `AGENTCA_LOG_FORMAT`, `AGENTCA_TLS_NAMES`), the
//! TOML file given with `--config` (or `AGENTCA_CONFIG`), then built-in defaults.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentca_core::ca::{self, Ca, DataDir, InitOptions};
use agentca_core::crl::Crl;
use agentca_core::csr::KeyKind;
use agentca_core::issuer::Authority;
use agentca_core::keyfile::{Passphrase, Protection};
use agentca_core::store::CertificateRecord;
use agentca_core::{Error, Result};
use agentca_server::{Hooks, Server, ServerConfig};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::operations::Backend;
use crate::{LogFormat, ServeArgs};

/// The trust domain of the development CA `serve` creates when the data directory is empty.
const DEV_TRUST_DOMAIN: &str = "agents.localhost";
/// How often the store is cleared of ACME orders and SCEP transactions nothing needs any more
/// (`agentca_core::retention`); the first pass runs at start.
const RETENTION_PASS: Duration = Duration::from_secs(600);

/// `--config FILE`: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    tls_names: Option<Vec<String>>,
    crl_interval: Option<String>,
    /// With a PostgreSQL store: how often to ask it for other nodes' revocations.
    revocation_poll: Option<String>,
    #[serde(default)]
    acme: AcmeFileConfig,
}

/// `[acme]` in the configuration file: how challenge validation reaches agents' hosts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcmeFileConfig {
    /// Address ranges validation may connect to although they are private or loopback
    /// (`["10.0.0.0/8"]`); by default only public addresses are validated.
    allow_addresses: Option<Vec<String>>,
    /// DNS servers (`"10.0.0.53:53"`) for validation lookups; default: /etc/resolv.conf.
    nameservers: Option<Vec<SocketAddr>>,
    /// The port http-01 connects to (default 80).
    http01_port: Option<u16>,
    /// The port tls-alpn-01 connects to (default 443).
    tls_alpn01_port: Option<u16>,
    /// How long a new order stays usable (default 8h).
    order_lifetime: Option<String>,
}

impl AcmeFileConfig {
    fn to_config(&self) -> Result<agentca_acme::AcmeConfig> {
        let mut config = agentca_acme::AcmeConfig::default();
        let v = &mut config.validation;
        if let Some(ranges) = &self.allow_addresses {
            v.allow = ranges
                .iter()
                .map(|r| {
                    r.parse().map_err(|e| {
                        Error::InvalidArgument(format!("acme.allow_addresses {r:?}: {e}"))
                    })
                })
                .collect::<Result<_>>()?;
        }
        if let Some(servers) = &self.nameservers {
            v.nameservers = servers.clone();
        }
        if let Some(port) = self.http01_port {
            v.http01_port = port;
        }
        if let Some(port) = self.tls_alpn01_port {
            v.tls_alpn01_port = port;
        }
        if let Some(lifetime) = &self.order_lifetime {
            config.order_lifetime = agentca_core::policy::parse_duration(lifetime)
                .map_err(|e| Error::InvalidArgument(format!("acme.order_lifetime: {e}")))?;
        }
        Ok(config)
    }
}

/// Issuances and revocations over ACME reach OCSP and the CRL as the CLI's do.
struct HookEvents(Arc<Hooks>);

impl agentca_acme::IssuanceEvents for HookEvents {
    fn issued(&self, record: &CertificateRecord) {
        self.0.issued(record);
    }

    fn revoked(&self, records: &[CertificateRecord]) {
        self.0.revoked(records);
    }
}

impl agentca_scep::server::ScepEvents for HookEvents {
    fn issued(&self, record: &CertificateRecord) {
        self.0.issued(record);
    }

    fn current_crl(&self) -> Option<Vec<u8>> {
        self.0.current_crl()
    }

    fn answered(
        &self,
        request: agentca_scep::server::RequestKind,
        answer: agentca_scep::server::Answer,
    ) {
        self.0.scep_answered(request.as_str(), answer.as_str());
    }
}

/// The SCEP RA identity: RSA, decrypts envelopes and signs CertReps; never the CA key.
fn scep_ra(ca: &Ca, protection: &Protection) -> Result<agentca_scep::RaIdentity> {
    let ra_cert = ca.cert_der("scep-ra.pem")?;
    let ra_key = agentca_core::keyfile::read_key(&ca.dir().file("scep-ra.key"), protection)?;
    agentca_scep::RaIdentity::from_pkcs8(&ra_cert, &ra_key)
        .map_err(|e| Error::InvalidArgument(format!("SCEP RA identity: {e}")))
}

/// The SCEP front end, with the chain GetCACert serves.
fn scep_service(
    ca: &Ca,
    ra: agentca_scep::RaIdentity,
    authority: Arc<Authority>,
    events: Arc<HookEvents>,
    legacy: bool,
) -> Result<agentca_scep::server::ScepService> {
    let chain = vec![ca.cert_der("issuing.pem")?, ca.cert_der("root.pem")?];
    let options = if legacy {
        agentca_scep::ScepOptions::LEGACY
    } else {
        agentca_scep::ScepOptions::STRICT
    };
    Ok(agentca_scep::server::ScepService::new(
        authority, ra, chain, options, events,
    ))
}

pub(crate) fn serve(dir: &DataDir, passphrase_file: Option<&Path>, args: ServeArgs) -> Result<()> {
    // First, before anything is opened or allocated that the new image would lose.
    let allocator_not_tuned = crate::malloc_tuning::fix_mmap_threshold();
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            toml::from_str(&text).map_err(|e| {
                Error::InvalidArgument(format!(
                    "{}: {}",
                    path.display(),
                    e.to_string().lines().collect::<Vec<_>>().join(" ")
                ))
            })?
        }
        None => FileConfig::default(),
    };
    let log_format = args
        .log_format
        .or(file.log_format)
        .unwrap_or(LogFormat::Text);
    init_logging(log_format);
    if let Some(reason) = allocator_not_tuned {
        tracing::warn!(%reason, "memory freed in large blocks may stay with the process");
    }

    let created = ensure_ca(dir, passphrase_file, args.trust_domain.as_deref())?;
    let ca = Arc::new(Ca::open(dir)?);
    let caught_up = ca.caught_up();
    if !caught_up.is_empty() {
        tracing::warn!(
            certificates = ?caught_up.issued,
            revocations = ?caught_up.revoked,
            "the audit log lacked the lines of writes in flight at a crash; written now, marked recovered"
        );
    }
    let protection = ca.protection(passphrase_file)?;
    let authority = Arc::new(ca.authority(&protection)?);
    let sealer = Arc::new(ca.token_sealer(&protection)?);
    let scep_ra = scep_ra(&ca, &protection)?;

    let mut config = ServerConfig::default();
    if let Some(listen) = args.listen.or(file.listen) {
        config.listen = listen;
    }
    if let Some(listen) = args.http_listen.or(file.http_listen) {
        config.http_listen = listen;
    }
    let tls_names = if args.tls_name.is_empty() {
        file.tls_names
    } else {
        Some(args.tls_name.clone())
    };
    if let Some(names) = tls_names {
        config.tls_names = names;
    }
    if let Some(host) = base_url_host(&ca.config().base_url)
        && !config.tls_names.contains(&host)
    {
        config.tls_names.push(host);
    }
    if let Some(interval) = file.crl_interval {
        let d = agentca_core::policy::parse_duration(&interval)
            .map_err(|e| Error::InvalidArgument(format!("crl_interval: {e}")))?;
        config.crl_interval = Duration::from_secs(d.whole_seconds().unsigned_abs());
    }
    if let Some(poll) = file.revocation_poll {
        let d = agentca_core::policy::parse_duration(&poll)
            .map_err(|e| Error::InvalidArgument(format!("revocation_poll: {e}")))?;
        config.revocation_poll = Duration::from_secs(d.whole_seconds().unsigned_abs());
    }

    let acme_config = file.acme.to_config()?;
    let certificates = CertificateRetention {
        authority: authority.clone(),
        keep: ca.config().keep_expired_certificates()?,
        crl_validity: config.crl_validity,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the async runtime", e))?;
    let closing = ca.clone();
    let result = runtime.block_on(async move {
        survive_file_size_limit();
        // Loading signs the HTTPS certificate, pre-signs OCSP responses and publishes a CRL.
        let server = tokio::task::block_in_place(|| {
            Server::new(ca.clone(), authority.clone(), protection, config)
        })
        .map_err(server_error)?;
        let acme = agentca_acme::AcmeService::new(
            authority.clone(),
            sealer.clone(),
            Arc::new(HookEvents(server.hooks())),
            acme_config,
        )
        .map_err(|e| Error::InvalidArgument(format!("ACME: {e}")))?;
        let acme = Arc::new(acme);
        let scep = Arc::new(scep_service(
            &ca,
            scep_ra,
            authority.clone(),
            Arc::new(HookEvents(server.hooks())),
            args.scep_legacy_crypto,
        )?);
        tokio::spawn(forget_old_records(acme.clone(), scep.clone(), certificates));
        let mut server = server
            .with_http_routes(agentca_scep::server::router(scep))
            .with_https_routes(agentca_acme::router(acme.clone()))
            .with_https_wrapper(move |router| agentca_acme::with_protocol_headers(acme, router));
        let bound = server.bind().await.map_err(server_error)?;
        let backend = Arc::new(ServerBackend {
            ca: ca.clone(),
            authority,
            sealer,
            hooks: server.hooks(),
        });
        let socket = crate::admin::socket_path(dir);
        let admin = bind_admin(&socket, dir.path())?;
        tokio::spawn(admin_loop(admin, backend, owner_uid(dir.path())?));

        // Handlers first: a SIGTERM right after the listening line must stop the server
        // gracefully, not kill it by the default disposition.
        let shutdown = shutdown_signal();
        announce(dir, &ca, &bound, &socket, created);
        let checkpoints = tokio::spawn(log_checkpoints(ca.audit().clone()));
        let result = server.run(shutdown).await.map_err(server_error);
        checkpoints.abort();
        let _ = std::fs::remove_file(&socket);
        log_checkpoint(ca.audit(), None);
        tracing::info!("stopped");
        result
    });
    // Every task goes with the runtime, and with them every other handle to the store and the
    // audit log; the CA, dropped last, then records that it was closed (see `Ca::open`).
    runtime.shutdown_timeout(Duration::from_secs(10));
    if Arc::strong_count(&closing) > 1 {
        tracing::debug!("the CA is still held at exit; the next start catches the audit log up");
    }
    drop(closing);
    result
}

/// How often `serve` logs the audit log's head as a checkpoint (when it moved).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(600);

/// Logs the audit log's head at start, then every [`CHECKPOINT_INTERVAL`] when it moved: the
/// server's log goes where the data directory does not (a journal, a log collector), so a
/// checkpoint there shows later whether the audit log was cut short or rewritten (`agentca
/// audit verify --checkpoint SEQ:HASH`).
async fn log_checkpoints(audit: Arc<agentca_core::audit::AuditLog>) {
    let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
    let mut last = None;
    loop {
        ticks.tick().await;
        last = log_checkpoint(&audit, last);
    }
}

/// Logs the head unless it is `last`; returns it.
fn log_checkpoint(
    audit: &agentca_core::audit::AuditLog,
    last: Option<agentca_core::audit::Checkpoint>,
) -> Option<agentca_core::audit::Checkpoint> {
    let head = audit.checkpoint();
    if let Some(head) = head.as_ref().filter(|h| last.as_ref() != Some(*h)) {
        tracing::info!(checkpoint = %head, "audit checkpoint");
    }
    head.or(last)
}

/// Creates a development CA if the directory holds none, and says so.
fn ensure_ca(
    dir: &DataDir,
    passphrase_file: Option<&Path>,
    trust_domain: Option<&str>,
) -> Result<Option<String>> {
    if dir.config().exists() {
        return Ok(None);
    }
    let passphrase = match passphrase_file {
        Some(f) => Some(Passphrase::from_file(f)?),
        None => Passphrase::from_env()?,
    };
    let encrypted = passphrase.is_some();
    let protection = passphrase.map_or(Protection::InsecurePlaintext, Protection::Passphrase);
    let trust_domain = trust_domain.unwrap_or(DEV_TRUST_DOMAIN).to_owned();
    ca::init(
        dir,
        &InitOptions {
            trust_domain: trust_domain.clone(),
            key_type: KeyKind::EcdsaP256,
            base_url: None,
            protection,
            issuing_key_in: None,
        },
    )?;
    Ok(Some(if encrypted {
        format!(
            "No CA was found in {}: created one for trust domain {trust_domain} (keys encrypted with your passphrase).",
            dir.path().display()
        )
    } else {
        format!(
            "No CA was found in {}: created a DEVELOPMENT CA for trust domain {trust_domain} with UNENCRYPTED keys.\n\
             For a real CA, stop this, remove the directory, and start again with AGENTCA_PASSPHRASE set\n\
             (or run `agentca init --trust-domain YOUR.DOMAIN` first).",
            dir.path().display()
        )
    }))
}

/// Prints where the service listens and what to do next. Tests read the `listening` line.
fn announce(
    dir: &DataDir,
    ca: &Ca,
    bound: &agentca_server::BoundAddresses,
    socket: &Path,
    created: Option<String>,
) {
    if let Some(created) = created {
        println!("{created}\n");
    }
    let d = dir.path().display();
    let td = &ca.config().trust_domain;
    println!(
        "agentca listening: https={} http={} admin={}",
        bound.https,
        bound.http,
        socket.display()
    );
    println!(
        "\nTrust anchor: {d}/root.pem   (curl http://{http}/ca.pem for the issuing chain)\n\
         ACME directory: https://{https}/acme/directory   (agents enroll with: agentca token create --agent ID --for acme)\n\
         SCEP: http://{http}/scep   (challenges: agentca token create --agent ID --for scep)\n\
         OCSP: http://{http}/ocsp   CRL: http://{http}/crl   health: http://{http}/healthz   metrics: http://{http}/metrics\n\
         \nNext steps (in another terminal; commands go through the admin socket while this runs):\n\
         \x20 agentca --data-dir {d} agent add spiffe://{td}/agent/demo\n\
         \x20 openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout demo.key -out demo.csr -subj /\n\
         \x20 agentca --data-dir {d} issue --agent spiffe://{td}/agent/demo --csr demo.csr --out demo.pem\n\
         \x20 openssl ocsp -issuer {d}/issuing.pem -cert demo.pem -url http://{http}/ocsp -CAfile {d}/ca-chain.pem\n",
        http = bound.http,
        https = bound.https
    );
    // Flush now: a supervisor or test may be waiting for the listening line.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    tracing::info!(https = %bound.https, http = %bound.http, admin = %socket.display(), "listening");
}

fn base_url_host(base: &str) -> Option<String> {
    let rest = base.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENTCA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // A log line that cannot be written (a full disk under a redirected stderr) is dropped:
    // the subscriber's own complaint about it goes through `eprintln!`, which panics when
    // stderr fails, and a panic in the thread that logged (one of sled's I/O threads, on the
    // path that records its write error) left the store waiting forever on that write.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    // Logging may already be set up (a second call in one process); that is fine.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Installs the SIGTERM and SIGINT handlers now (not when the future is first polled) and
/// returns a future that completes on either.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                }
            }
            _ => {
                tracing::error!("cannot listen for signals; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A write past the file-size limit (`ulimit -f`, RLIMIT_FSIZE) raises SIGXFSZ, whose default
/// disposition kills the process: OCSP and the CRL would go down with the one write that
/// failed. With a handler installed the write fails with EFBIG instead, and that failure takes
/// the same path as a full disk (503 for issuance, degraded health, answers from memory).
///
/// Said at most once a minute: when the log itself is a file past the limit, writing the
/// warning raises the signal again, and logging each one would never stop.
fn survive_file_size_limit() {
    use tokio::signal::unix::{SignalKind, signal};
    const QUIET: Duration = Duration::from_secs(60);
    match signal(SignalKind::from_raw(libc::SIGXFSZ)) {
        Ok(mut xfsz) => {
            tokio::spawn(async move {
                let mut said: Option<std::time::Instant> = None;
                while xfsz.recv().await.is_some() {
                    if said.is_none_or(|at| at.elapsed() >= QUIET) {
                        said = Some(std::time::Instant::now());
                        tracing::warn!(
                            "a write reached the file-size limit (SIGXFSZ); it failed (said once a minute)"
                        );
                    }
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGXFSZ; a write past the file-size limit would stop the server")
        }
    }
}

fn server_error(e: agentca_server::ServerError) -> Error {
    Error::Remote {
        kind: "server".into(),
        message: e.to_string(),
    }
}

/// Runs operations inside the server, keeping its OCSP cache and CRL in step.
struct ServerBackend {
    ca: Arc<Ca>,
    authority: Arc<Authority>,
    sealer: Arc<agentca_core::token::TokenSealer>,
    hooks: Arc<Hooks>,
}

impl Backend for ServerBackend {
    fn ca(&self) -> &Ca {
        &self.ca
    }

    fn authority(&self) -> Result<&Authority> {
        Ok(&self.authority)
    }

    fn token_sealer(&self) -> Result<&agentca_core::token::TokenSealer> {
        Ok(&self.sealer)
    }

    fn issued(&self, record: &CertificateRecord) {
        self.hooks.issued(record);
    }

    fn revoked(&self, records: &[CertificateRecord]) {
        self.hooks.revoked(records);
    }

    fn publish_crl(&self) -> Result<Crl> {
        self.hooks.publish_crl().map_err(server_error)
    }
}

fn owner_uid(path: &Path) -> Result<u32> {
    std::fs::metadata(path)
        .map(|m| m.uid())
        .map_err(|e| Error::io(format!("stat {}", path.display()), e))
}

fn bind_admin(socket: &Path, data_dir: &Path) -> Result<tokio::net::UnixListener> {
    // Only one server can hold the store, so a socket file left here is stale.
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("remove stale {}", socket.display()), e)),
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| Error::io(format!("bind {}", socket.display()), e))?;
    // The data directory is 0700, so there is no window in which others could connect.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", socket.display()), e))?;
    let _ = data_dir;
    Ok(listener)
}

async fn admin_loop(listener: tokio::net::UnixListener, backend: Arc<ServerBackend>, owner: u32) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let backend = backend.clone();
        tokio::spawn(async move {
            if let Err(e) = admin_connection(stream, backend, owner).await {
                tracing::warn!(error = %e, "admin connection failed");
            }
        });
    }
}

async fn admin_connection(
    stream: tokio::net::UnixStream,
    backend: Arc<ServerBackend>,
    owner: u32,
) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    // The request is read even from a peer about to be refused: closing first would make the
    // peer's write fail, and it would see a broken pipe instead of the refusal.
    let mut line = Vec::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(
        read,
        crate::admin::MAX_REQUEST,
    ));
    match tokio::time::timeout(Duration::from_secs(30), reader.read_until(b'\n', &mut line)).await {
        Ok(result) => {
            result?;
        }
        Err(_) => return Ok(()),
    }
    if uid != owner && uid != 0 {
        tracing::warn!(
            uid,
            "admin connection refused: not the data directory's owner"
        );
        write
            .write_all(br#"{"error":{"kind":"unauthorized","message":"only the owner of the data directory may operate this CA"}}"#)
            .await?;
        write.write_all(b"\n").await?;
        return write.shutdown().await;
    }
    let answer =
        tokio::task::spawn_blocking(move || crate::admin::handle_line(backend.as_ref(), &line))
            .await
            .unwrap_or_else(|_| {
                br#"{"error":{"kind":"internal","message":"the operation failed unexpectedly"}}
"#
                .to_vec()
            });
    write.write_all(&answer).await?;
    write.shutdown().await
}

/// What the retention pass needs to forget expired certificates.
#[derive(Clone)]
struct CertificateRetention {
    authority: Arc<Authority>,
    /// `None`: the CA keeps them forever.
    keep: Option<time::Duration>,
    crl_validity: time::Duration,
}

impl CertificateRetention {
    fn pass(&self, now: time::OffsetDateTime) -> Result<u64> {
        match self.keep {
            Some(keep) => agentca_core::retention::forget_expired_certificates(
                &self.authority,
                now,
                keep,
                self.crl_validity,
            ),
            None => Ok(0),
        }
    }
}

/// Forgets old ACME orders, SCEP transactions and expired certificates every
/// [`RETENTION_PASS`], on the blocking pool; ends with the runtime.
async fn forget_old_records(
    acme: Arc<agentca_acme::AcmeService>,
    scep: Arc<agentca_scep::server::ScepService>,
    certificates: CertificateRetention,
) {
    let mut every = tokio::time::interval(RETENTION_PASS);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (acme, scep, certificates) = (acme.clone(), scep.clone(), certificates.clone());
        let now = time::OffsetDateTime::now_utc();
        let pass = tokio::task::spawn_blocking(move || {
            let forgotten = (
                acme.forget_old_orders(now),
                scep.forget_old_transactions(now),
                certificates.pass(now),
            );
            // What is reported forgotten stays forgotten: on the embedded store the removals
            // are only in memory until a flush, and a stop before one would bring them back.
            // (The certificates' pass makes its own durable before it audits them.)
            let protocol_records =
                matches!(forgotten.0, Ok(n) if n > 0) || matches!(forgotten.1, Ok(n) if n > 0);
            if protocol_records && let Err(e) = certificates.authority.store().commit() {
                tracing::warn!(error = %e, "making forgotten records durable failed");
            }
            forgotten
        });
        let (orders, transactions, expired) = match pass.await {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(error = %e, "forgetting old protocol records did not finish");
                continue;
            }
        };
        for (what, result) in [
            ("old ACME orders", orders.map_err(|e| e.to_string())),
            (
                "old SCEP transactions",
                transactions.map_err(|e| e.to_string()),
            ),
            ("expired certificates", expired.map_err(|e| e.to_string())),
        ] {
            match result {
                Ok(0) => {}
                Ok(forgotten) => tracing::info!(forgotten, "{what} forgotten"),
                Err(e) => tracing::warn!(error = %e, "forgetting {what} failed; retrying later"),
            }
        }
    }
}
