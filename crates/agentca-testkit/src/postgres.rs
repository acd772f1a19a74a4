//! A throwaway PostgreSQL cluster for tests: the distribution's `initdb` into a temporary
//! directory, `pg_ctl start` on a free loopback port (its unix socket in that directory too, so
//! nothing outside it is touched), one fresh database per test.
//!
//! Tests share one cluster per test binary ([`shared`]): starting one costs about a second,
//! creating a database a few milliseconds. A shared cluster lives in a `static` and so is never
//! dropped; a watchdog process therefore holds the other end of a pipe from the test process and
//! stops the cluster and removes its directory as soon as that pipe closes, which happens when
//! the test process exits for any reason (including a panic or `kill -9`).
//!
//! `initdb` refuses to run as root. Under root the cluster belongs to the `postgres` user that
//! Debian's package creates, and every server-side command runs through `runuser`.
//!
//! Missing binaries follow the [`tools`](crate::tools) rule: a notice and `None`, or a panic
//! under `AGENTCA_REQUIRE_TOOLS=1`.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

const PURPOSE: &str = "the PostgreSQL store tests (Debian package postgresql)";

/// The user a root test run hands the cluster to.
const SERVICE_USER: &str = "postgres";

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    databases: AtomicU64,
    tls: Option<PgTls>,
    /// Whether TCP asks for more than TLS (databases are then created over the unix socket).
    tcp_needs_credentials: bool,
}

/// The client side of a cluster started with TLS: PEM files in the cluster's directory.
#[derive(Debug, Clone)]
pub struct PgTls {
    /// The root that issued the server's certificate.
    pub root: PathBuf,
    /// A root of another CA, which issued nothing the server has.
    pub other_root: PathBuf,
    /// A client certificate for the `postgres` role, from [`root`](Self::root).
    pub client_cert: PathBuf,
    /// Its key (PKCS#8, mode 0600).
    pub client_key: PathBuf,
}

/// Which connections a TLS cluster accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsAccess {
    /// TLS and plain TCP alike, without a password.
    Optional,
    /// TLS only (`hostssl` lines in `pg_hba.conf`), and SCRAM authentication with this
    /// password for `postgres` (so that channel binding is used); plain TCP is refused.
    Password(String),
    /// TLS only, and the client must present a certificate for `postgres` from the cluster's
    /// root ([`PgTls::client_cert`]); plain TCP is refused.
    ClientCertificate,
}

/// The cluster shared by every test of this test binary, started on first use. `None` (after a
/// notice) when PostgreSQL is not installed, unless tools are required.
pub fn shared() -> Option<&'static PgCluster> {
    static CLUSTER: OnceLock<Option<PgCluster>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| match PgCluster::start(&[("fsync", "off")]) {
            Ok(cluster) => cluster,
            Err(e) => panic!("could not start a throwaway PostgreSQL cluster: {e}"),
        })
        .as_ref()
}

impl PgCluster {
    /// Starts a new cluster with extra `postgresql.conf` settings. `Ok(None)` (after a notice)
    /// when the binaries or a user to run them as are missing and tools are not required.
    pub fn start(settings: &[(&str, &str)]) -> Result<Option<Self>, String> {
        Self::start_with(settings, None)
    }

    /// Like [`start`](Self::start), with `ssl = on`, a fresh CA and a server certificate for
    /// `127.0.0.1` and `localhost`; [`tls`](Self::tls) names the client's files.
    pub fn start_tls(settings: &[(&str, &str)], access: TlsAccess) -> Result<Option<Self>, String> {
        Self::start_with(settings, Some(access))
    }

    fn start_with(
        settings: &[(&str, &str)],
        tls: Option<TlsAccess>,
    ) -> Result<Option<Self>, String> {
        let Some(bin) = find_bin_dir() else {
            crate::tools::missing("initdb", PURPOSE);
            return Ok(None);
        };
        let run_as = if effective_uid()? == 0 {
            if !user_exists(SERVICE_USER) {
                crate::tools::missing("a 'postgres' user (initdb refuses to run as root)", PURPOSE);
                return Ok(None);
            }
            Some(SERVICE_USER.to_owned())
        } else {
            None
        };
        // The service user must be able to reach the directory: a private TMPDIR (say, under
        // /root) is replaced by /tmp.
        let parent = std::env::temp_dir();
        let parent = if run_as.is_some() && !traversable_by_all(&parent) {
            PathBuf::from("/tmp")
        } else {
            parent
        };
        let dir = tempfile::Builder::new()
            .prefix("agentca-pg")
            .tempdir_in(parent)
            .map_err(|e| format!("temporary directory: {e}"))?
            .keep();
        let mut cluster = Self {
            dir,
            bin,
            port: 0,
            run_as,
            watchdog: Mutex::new(None),
            databases: AtomicU64::new(0),
            tls: None,
            tcp_needs_credentials: false,
        };
        // From here on a failure removes the directory (and stops a started server) on drop.
        cluster.arm_watchdog()?;
        if let Some(user) = &cluster.run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&cluster.dir)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err(format!("chown {user} {} failed", cluster.dir.display()));
            }
        }
        cluster.initdb(settings)?;
        if let Some(access) = &tls {
            cluster.tls = Some(cluster.set_up_tls(access)?);
        }
        cluster.start_server()?;
        match &tls {
            Some(TlsAccess::Password(password)) => cluster.set_password(password)?,
            Some(TlsAccess::ClientCertificate) => cluster.tcp_needs_credentials = true,
            _ => {}
        }
        Ok(Some(cluster))
    }

    /// The client's certificate files, for a cluster started with [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> Option<&PgTls> {
        self.tls.as_ref()
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `postgres://` URL for database `name` (superuser, trust authentication).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::SeqCst);
        let name = format!("agentca_test_{}_{n}", std::process::id());
        let host = if self.tcp_needs_credentials {
            self.dir.display().to_string()
        } else {
            "127.0.0.1".to_owned()
        };
        let output = Command::new(self.bin.join("createdb"))
            .args(["-h", &host, "-p", &self.port.to_string(), "-U", "postgres"])
            .arg(&name)
            .output();
        match output {
            Ok(out) if out.status.success() => self.url(&name),
            Ok(out) => panic!("createdb {name}: {}", crate::tools::transcript(&out)),
            Err(e) => panic!("createdb {name}: {e}"),
        }
    }

    /// Runs `sql` in `database` as the superuser, over the unix socket; returns psql's
    /// unaligned output. For tests that play a writer other than agentca.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !output.status.success() {
            return Err(format!("psql: {}", crate::tools::transcript(&output)));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop_server(&self) -> Result<(), String> {
        let data = self.data_dir();
        self.server_command("pg_ctl", &["stop", "-w", "-m", "fast", "-D"], &[&data])
    }

    /// Starts the server again after [`stop_server`](Self::stop_server), on the same port.
    pub fn restart_server(&self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.join("server.log").display().to_string();
        self.server_command(
            "pg_ctl",
            &["start", "-w", "-t", "60", "-D"],
            &[&data, "-l", &log],
        )
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn initdb(&self, settings: &[(&str, &str)]) -> Result<(), String> {
        let data = self.data_dir();
        self.server_command(
            "initdb",
            &[
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
                "-N",
                "-D",
            ],
            &[&data],
        )?;
        let mut conf = format!(
            "\n# throwaway test cluster\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = 300\n",
            self.dir.display()
        );
        for (name, value) in settings {
            conf.push_str(&format!("{name} = '{value}'\n"));
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("data").join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| format!("postgresql.conf: {e}"))
    }

    /// Writes the server's key and certificate into the data directory (private to the server's
    /// user, as PostgreSQL insists), the roots beside it, and turns TLS on.
    fn set_up_tls(&self, access: &TlsAccess) -> Result<PgTls, String> {
        let pki = tls_files("agentca test database root")
            .map_err(|e| format!("test certificates: {e}"))?;
        // Another name too: a root of the same name would be taken for the issuer, and fail on
        // the signature rather than as an unknown issuer.
        let other = tls_files("agentca test database root (another CA)")
            .map_err(|e| format!("test certificates: {e}"))?;
        let data = self.dir.join("data");
        // root.crt is read only when client certificates are asked for (ssl_ca_file).
        for (name, contents) in [
            ("server.crt", &pki.server_cert),
            ("server.key", &pki.server_key),
            ("root.crt", &pki.root),
        ] {
            let path = data.join(name);
            std::fs::write(&path, contents).map_err(|e| format!("{name}: {e}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{name}: {e}"))?;
            if let Some(user) = &self.run_as {
                let status = Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(&path)
                    .status()
                    .map_err(|e| format!("chown: {e}"))?;
                if !status.success() {
                    return Err(format!("chown {user} {} failed", path.display()));
                }
            }
        }
        let files = PgTls {
            root: self.dir.join("root.pem"),
            other_root: self.dir.join("other-root.pem"),
            client_cert: self.dir.join("client.pem"),
            client_key: self.dir.join("client.key"),
        };
        for (path, contents) in [
            (&files.root, &pki.root),
            (&files.other_root, &other.root),
            (&files.client_cert, &pki.client_cert),
            (&files.client_key, &pki.client_key),
        ] {
            std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        std::fs::set_permissions(&files.client_key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("client.key: {e}"))?;
        // server.crt and server.key are the defaults, relative to the data directory.
        append(&data.join("postgresql.conf"), "ssl = on\n")?;
        // Replaces initdb's lines: the unix socket stays open without a password (createdb
        // goes by TCP otherwise, where libpq's default `prefer` takes TLS), TCP needs TLS.
        let hba = match access {
            TlsAccess::Optional => None,
            TlsAccess::Password(_) => {
                Some("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
            }
            TlsAccess::ClientCertificate => {
                append(&data.join("postgresql.conf"), "ssl_ca_file = 'root.crt'\n")?;
                Some("local all all trust\nhostssl all all 127.0.0.1/32 cert\n")
            }
        };
        if let Some(hba) = hba {
            std::fs::write(data.join("pg_hba.conf"), hba)
                .map_err(|e| format!("pg_hba.conf: {e}"))?;
        }
        Ok(files)
    }

    /// Gives `postgres` a password (stored as SCRAM, PostgreSQL's default since 14), over the
    /// unix socket.
    fn set_password(&mut self, password: &str) -> Result<(), String> {
        let sql = format!(
            "ALTER ROLE postgres PASSWORD '{}'",
            password.replace('\'', "''")
        );
        self.psql("postgres", &sql)?;
        self.tcp_needs_credentials = true;
        Ok(())
    }

    fn start_server(&mut self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.join("server.log").display().to_string();
        let mut last = String::new();
        // A free port can be taken between the probe and the server's bind; try a few.
        for _ in 0..5 {
            let port = free_port()?;
            let options = format!("-p {port}");
            match self.server_command(
                "pg_ctl",
                &["start", "-w", "-t", "60", "-D"],
                &[&data, "-l", &log, "-o", &options],
            ) {
                Ok(()) => {
                    self.port = port;
                    // restart_server reuses the port without -o.
                    let conf = format!("port = {port}\n");
                    return std::fs::OpenOptions::new()
                        .append(true)
                        .open(self.dir.join("data").join("postgresql.conf"))
                        .and_then(|mut f| f.write_all(conf.as_bytes()))
                        .map_err(|e| format!("postgresql.conf: {e}"));
                }
                Err(e) => last = e,
            }
        }
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        Err(format!("pg_ctl start failed: {last}\nserver log:\n{log}"))
    }

    /// Runs a server-side binary, as the service user when the tests run as root.
    fn server_command(&self, program: &str, args: &[&str], more: &[&str]) -> Result<(), String> {
        let mut command = self.command(program);
        command.args(args).args(more);
        // Inherited stdio would keep the test harness's capture pipes open in the server.
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{program}: {}", crate::tools::transcript(&output)))
        }
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                // The service user cannot enter root's working directory.
                c.current_dir(&self.dir);
                c
            }
            None => Command::new(path),
        }
    }

    /// Starts the process that stops the server and removes the directory once the pipe from
    /// this process closes.
    fn arm_watchdog(&self) -> Result<(), String> {
        let mut stop = self.command("pg_ctl");
        let data = self.data_dir();
        stop.args(["stop", "-w", "-m", "immediate", "-D", &data]);
        let mut argv = vec![stop.get_program().to_owned()];
        argv.extend(stop.get_args().map(|a| a.to_owned()));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                // Ctrl-C reaches the whole process group; the watchdog outlives it to clean up.
                "trap '' INT HUP; read _ignored; \
                 if [ -f \"$AGENTCA_PG_DIR/data/postmaster.pid\" ]; then \"$@\"; fi; \
                 rm -rf -- \"$AGENTCA_PG_DIR\"",
            )
            .arg("agentca-pg-watchdog")
            .args(argv)
            .env("AGENTCA_PG_DIR", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("watchdog: {e}"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| "watchdog without stdin".to_owned())?;
        *self
            .watchdog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((child, stdin));
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((mut child, stdin)) = watchdog {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

fn append(path: &std::path::Path, text: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A fresh CA's PEM files: its root, a server certificate for `127.0.0.1` and `localhost`, a
/// client certificate for the `postgres` role, and their keys.
struct TestPki {
    root: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

/// A [`TestPki`] whose root is named `root_name`.
fn tls_files(root_name: &str) -> Result<TestPki, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    let root_key = KeyPair::generate()?;
    let mut root = CertificateParams::new(Vec::<String>::new())?;
    root.distinguished_name.push(DnType::CommonName, root_name);
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_pem = root.self_signed(&root_key)?.pem();
    let issuer = Issuer::from_params(&root, &root_key);

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "agentca test database");
    server.use_authority_key_identifier_extension = true;
    let server_cert = server.signed_by(&server_key, &issuer)?.pem();

    // PostgreSQL's `cert` authentication takes the role from the common name.
    let client_key = KeyPair::generate()?;
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client
        .distinguished_name
        .push(DnType::CommonName, "postgres");
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client.use_authority_key_identifier_extension = true;
    let client_cert = client.signed_by(&client_key, &issuer)?.pem();
    Ok(TestPki {
        root: root_pem,
        server_cert,
        server_key: server_key.serialize_pem(),
        client_cert,
        client_key: client_key.serialize_pem(),
    })
}

/// The newest `/usr/lib/postgresql/N/bin` (Debian keeps initdb off PATH), else the directory of
/// an `initdb` on PATH.
fn find_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

/// The effective user id: the owner of `/proc/self` (no libc call needed).
fn effective_uid() -> Result<u32, String> {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .or_else(|_| {
            let out = Command::new("id")
                .arg("-u")
                .output()
                .map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .map_err(|e| format!("id -u: {e}"))
        })
        .map_err(|e| format!("effective user id: {e}"))
}

/// Whether every directory from the root down to `dir` may be entered by any user.
fn traversable_by_all(dir: &std::path::Path) -> bool {
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg("-u")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_serves_and_is_removed_on_drop() {
        let Some(cluster) = PgCluster::start(&[("fsync", "off")]).unwrap() else {
            return;
        };
        let dir = cluster.dir.clone();
        assert!(dir.join("data").join("PG_VERSION").is_file());
        let url = cluster.fresh_database();
        assert!(url.starts_with("postgres://postgres@127.0.0.1:"));
        // The server answers on its port.
        assert!(std::net::TcpStream::connect(("127.0.0.1", cluster.port())).is_ok());
        let port = cluster.port();
        drop(cluster);
        assert!(!dir.exists(), "cluster directory left behind");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
