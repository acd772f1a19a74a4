//! An agent's key and certificate chain on disk, replaced together.
//!
//! Two files cannot be renamed in one step, so the paths an application reads are links into a
//! generation directory, and a rotation switches one link. For `--key DIR/key.pem --cert
//! CDIR/cert.pem`:
//!
//! ```text
//! DIR/.agentca/gen-<id>/key.pem      the key (0600)
//! DIR/.agentca/gen-<id>/chain.pem    leaf first, then the issuing CA
//! DIR/.agentca/current -> gen-<id>   the one link a rotation replaces
//! DIR/key.pem    -> .agentca/current/key.pem
//! CDIR/cert.pem  -> DIR/.agentca/current/chain.pem
//! ```
//!
//! A rotation writes and syncs the new generation, then renames a new `current` link over the
//! old one and syncs the directory: after a crash at any point, both paths lead to the old pair
//! or both to the new one. Existing plain files (credentials from an earlier tool) are first
//! moved into a generation of their own, so that the switch to links changes no content.
//! A reader that opens the two files while a rotation happens can still see one of each; the
//! renewal daemon runs its `--exec` hook after the switch so that readers reload then.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{AgentError, Result};

const STATE_DIR: &str = ".agentca";
const CURRENT: &str = "current";
const KEY_FILE: &str = "key.pem";
const CHAIN_FILE: &str = "chain.pem";
const GENERATION_PREFIX: &str = "gen-";

/// The key and chain files of one agent; see the module documentation for the layout.
#[derive(Debug, Clone)]
pub struct CredentialFiles {
    key: PathBuf,
    cert: PathBuf,
    state: PathBuf,
}

/// The pair as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The private key, PEM.
    pub key_pem: Vec<u8>,
    /// The chain, PEM, leaf first.
    pub chain_pem: Vec<u8>,
}

impl CredentialFiles {
    /// The files an application reads at `key` and `cert`; the generations live next to `key`.
    pub fn new(key: &Path, cert: &Path) -> Self {
        let key = absolute(key);
        let cert = absolute(cert);
        let state = key
            .parent()
            .map_or_else(|| PathBuf::from(STATE_DIR), |dir| dir.join(STATE_DIR));
        Self { key, cert, state }
    }

    /// Where the generations and the agent's other state (enrollment record) are kept.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The key path an application reads.
    pub fn key_path(&self) -> &Path {
        &self.key
    }

    /// The certificate chain path an application reads.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// Reads the pair through the application's paths; `None` when either is missing.
    pub fn read(&self) -> Result<Option<Credentials>> {
        let key_pem = match fs::read(&self.key) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::io(&self.key, e)),
        };
        let chain_pem = match fs::read(&self.cert) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::io(&self.cert, e)),
        };
        Ok(Some(Credentials { key_pem, chain_pem }))
    }

    /// Makes `new` the pair both paths lead to, durably, in one switch; returns the new
    /// generation's directory.
    pub fn install(&self, new: &Credentials) -> Result<PathBuf> {
        self.adopt_plain_files()?;
        let generation = self.write_generation(new)?;
        self.switch_current(&generation)?;
        self.link(&self.key, KEY_FILE)?;
        self.link(&self.cert, CHAIN_FILE)?;
        self.prune(&generation)?;
        Ok(generation)
    }

    /// Credentials left as plain files (by an earlier tool, or before the first `install`)
    /// become a generation of their own, and the paths become links to it: the content each
    /// path shows does not change, so no reader sees a mismatched pair.
    fn adopt_plain_files(&self) -> Result<()> {
        let plain = |path: &Path| {
            fs::symlink_metadata(path)
                .map(|m| m.file_type().is_file())
                .unwrap_or(false)
        };
        if !plain(&self.key) && !plain(&self.cert) {
            return Ok(());
        }
        // One of the two alone is no pair to keep; the install replaces it.
        let Some(existing) = self.read()? else {
            return Ok(());
        };
        let generation = self.write_generation(&existing)?;
        self.switch_current(&generation)?;
        self.link(&self.key, KEY_FILE)?;
        self.link(&self.cert, CHAIN_FILE)
    }

    fn write_generation(&self, credentials: &Credentials) -> Result<PathBuf> {
        create_private_dir(&self.state)?;
        let generation = self.state.join(generation_name());
        create_private_dir(&generation)?;
        write_synced(&generation.join(KEY_FILE), &credentials.key_pem, 0o600)?;
        write_synced(&generation.join(CHAIN_FILE), &credentials.chain_pem, 0o644)?;
        sync_dir(&generation)?;
        Ok(generation)
    }

    /// Points `current` at `generation` with one rename.
    fn switch_current(&self, generation: &Path) -> Result<()> {
        let name = generation.file_name().ok_or_else(|| AgentError::Layout {
            path: generation.to_owned(),
            reason: "a generation directory has a name".into(),
        })?;
        replace_link(&self.state.join(CURRENT), Path::new(name))?;
        sync_dir(&self.state)
    }

    /// Makes `path` a link to `current/<file>`, unless it already is one.
    fn link(&self, path: &Path, file: &str) -> Result<()> {
        let target = self.link_target(path, file);
        if fs::read_link(path).is_ok_and(|existing| existing == target) {
            return Ok(());
        }
        replace_link(path, &target)?;
        sync_dir(parent_of(path))
    }

    /// Relative when the path sits next to the state directory, so the tree can be moved.
    fn link_target(&self, path: &Path, file: &str) -> PathBuf {
        let current = Path::new(STATE_DIR).join(CURRENT).join(file);
        if path.parent() == self.state.parent() {
            current
        } else {
            self.state.join(CURRENT).join(file)
        }
    }

    /// Removes every generation but `keep` and the one before it (a reader may still hold
    /// files of the previous one open; they stay readable anyway, but its paths stay valid).
    fn prune(&self, keep: &Path) -> Result<()> {
        let mut generations: Vec<OsString> = fs::read_dir(&self.state)
            .map_err(|e| AgentError::io(&self.state, e))?
            .filter_map(|entry| entry.ok().map(|e| e.file_name()))
            .filter(|name| name.to_string_lossy().starts_with(GENERATION_PREFIX))
            .collect();
        generations.sort();
        let keep_name = keep.file_name().map(OsString::from);
        let Some(position) = generations
            .iter()
            .position(|g| Some(g) == keep_name.as_ref())
        else {
            return Ok(());
        };
        for (i, name) in generations.iter().enumerate() {
            if i + 1 < position || i > position {
                let dir = self.state.join(name);
                fs::remove_dir_all(&dir).map_err(|e| AgentError::io(&dir, e))?;
            }
        }
        Ok(())
    }
}

/// A name that sorts by creation: nanoseconds since the epoch, then a counter for two in
/// the same nanosecond.
fn generation_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{GENERATION_PREFIX}{nanos:020}-{n:06}")
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new()
        .mode(0o700)
        .recursive(false)
        .create(dir)
    {
        Ok(()) => sync_dir(parent_of(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(AgentError::io(dir, e)),
    }
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| AgentError::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| AgentError::io(path, e))
}

/// Creates a link to `target` beside `path`, then renames it over `path`.
fn replace_link(path: &Path, target: &Path) -> Result<()> {
    let mut temp_name = path.file_name().map(OsString::from).unwrap_or_default();
    temp_name.push(".agentca-new");
    let temp = path.with_file_name(temp_name);
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AgentError::io(&temp, e)),
    }
    symlink(target, &temp).map_err(|e| AgentError::io(&temp, e))?;
    fs::rename(&temp, path).map_err(|e| AgentError::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AgentError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn pair(n: u8) -> Credentials {
        Credentials {
            key_pem: format!("key {n}\n").into_bytes(),
            chain_pem: format!("chain {n}\n").into_bytes(),
        }
    }

    #[test]
    fn install_then_rotate_keeps_both_paths_on_one_pair() {
        let dir = tempfile::tempdir().unwrap();
        let files = CredentialFiles::new(&dir.path().join("key.pem"), &dir.path().join("cert.pem"));
        assert_eq!(files.read().unwrap(), None);
        for n in 1..=4 {
            files.install(&pair(n)).unwrap();
            assert_eq!(files.read().unwrap(), Some(pair(n)));
        }
        let generations = fs::read_dir(files.state_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(GENERATION_PREFIX)
            })
            .count();
        assert_eq!(generations, 2, "the current generation and the one before");
        assert_eq!(
            fs::read_link(dir.path().join("key.pem")).unwrap(),
            Path::new(".agentca/current/key.pem")
        );
    }

    #[test]
    fn the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let files = CredentialFiles::new(&dir.path().join("key.pem"), &dir.path().join("cert.pem"));
        let generation = files.install(&pair(1)).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&generation.join(KEY_FILE)), 0o600);
        assert_eq!(mode(files.state_dir()), 0o700);
        assert_eq!(mode(&dir.path().join("key.pem")), 0o600);
    }

    #[test]
    fn plain_files_are_adopted_without_changing_what_they_show() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let cert = dir.path().join("cert.pem");
        fs::write(&key, b"key 0\n").unwrap();
        fs::write(&cert, b"chain 0\n").unwrap();
        let files = CredentialFiles::new(&key, &cert);
        files.adopt_plain_files().unwrap();
        assert_eq!(files.read().unwrap(), Some(pair(0)));
        assert!(fs::symlink_metadata(&key).unwrap().file_type().is_symlink());
        files.install(&pair(1)).unwrap();
        assert_eq!(files.read().unwrap(), Some(pair(1)));
    }

    #[test]
    fn a_certificate_elsewhere_links_by_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("certs");
        fs::create_dir(&other).unwrap();
        let files = CredentialFiles::new(&dir.path().join("key.pem"), &other.join("cert.pem"));
        files.install(&pair(1)).unwrap();
        assert!(fs::read_link(other.join("cert.pem")).unwrap().is_absolute());
        assert_eq!(files.read().unwrap(), Some(pair(1)));
    }

    /// A crash after the new generation is written and before the switch leaves the old pair
    /// in place; the next install goes on from there.
    #[test]
    fn an_interrupted_rotation_leaves_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let files = CredentialFiles::new(&dir.path().join("key.pem"), &dir.path().join("cert.pem"));
        files.install(&pair(1)).unwrap();
        // The steps of a rotation up to the switch, then a "crash".
        files.write_generation(&pair(2)).unwrap();
        let temp = files.state.join("current.agentca-new");
        symlink("gen-nowhere", &temp).unwrap();
        assert_eq!(files.read().unwrap(), Some(pair(1)));
        files.install(&pair(3)).unwrap();
        assert_eq!(files.read().unwrap(), Some(pair(3)));
    }
}
