//! OCSP responder key rotation (RFC 6960 §4.2.2.2: the responder certificate is issued
//! directly by the CA; BR §4.9.9: it is short-lived and replaced before it expires).
//!
//! When less than a third of the responder certificate's lifetime is left, a new key is
//! generated, a new certificate issued by the issuing CA (recorded and audited), both written
//! to `ocsp.key`/`ocsp.pem`, and the new key put in use; the response cache is then re-signed.
//!
//! The two files are replaced with a roll-forward protocol, since no single rename can replace
//! both: the new pair is written as `ocsp.next.key` and `ocsp.next.pem` (the PEM last, renamed
//! into place, which is the commit point), then each is renamed over the old file. A crash
//! before the commit point leaves the old pair untouched and the partial files are deleted
//! later; a crash after it is completed by [`finish_interrupted_rotation`], which the server
//! runs before it loads the responder.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use agentca_core::ca::{Ca, DataDir};
use agentca_core::issuer::Authority;
use agentca_core::keyfile::{self, Protection};
use agentca_core::signer::KeyPairSigner;
use time::{Duration, OffsetDateTime};

use crate::certs;
use crate::error::ServerError;
use crate::ocsp::ResponderKey;

const KEY: &str = "ocsp.key";
const CERT: &str = "ocsp.pem";
const NEXT_KEY: &str = "ocsp.next.key";
const NEXT_CERT: &str = "ocsp.next.pem";
const NEXT_CERT_TMP: &str = "ocsp.next.pem.tmp";

/// Completes a responder rotation that a crash interrupted after its commit point, or
/// removes the leftovers of one interrupted before it. Safe to run at any start.
pub fn finish_interrupted_rotation(dir: &DataDir) -> Result<(), ServerError> {
    let next_cert = dir.file(NEXT_CERT);
    let next_key = dir.file(NEXT_KEY);
    if next_cert.exists() {
        if next_key.exists() {
            rename(&next_key, &dir.file(KEY))?;
        }
        rename(&next_cert, &dir.file(CERT))?;
        tracing::warn!("completed an interrupted OCSP responder rotation");
    } else {
        for leftover in [next_key, dir.file(NEXT_CERT_TMP)] {
            match std::fs::remove_file(&leftover) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ServerError::io(format!("remove {}", leftover.display()), e));
                }
            }
        }
    }
    sync_dir(dir.path())
}

/// Whether the responder certificate should be replaced at `now`.
pub(crate) fn due(key: &ResponderKey, now: OffsetDateTime) -> bool {
    certs::nearly_expired(key.not_before, key.not_after, now, 3)
}

/// Generates, certifies and stores a new responder key; the caller puts it in use.
pub(crate) fn rotate(
    ca: &Ca,
    authority: &Authority,
    protection: &Protection,
    validity: Duration,
) -> Result<ResponderKey, ServerError> {
    let dir = ca.dir();
    finish_interrupted_rotation(dir)?;
    let key = certs::generate_key(&ca.config().key_type)?;
    let record = certs::issue_ocsp_responder(authority, &key)?;

    keyfile::write_key(&dir.file(NEXT_KEY), &key.serialize_der(), protection)?;
    let tmp = dir.file(NEXT_CERT_TMP);
    write_synced(
        &tmp,
        crate::headers::pem_lf("CERTIFICATE", &record.der).as_bytes(),
    )?;
    rename(&tmp, &dir.file(NEXT_CERT))?;
    sync_dir(dir.path())?;
    // Committed: from here a crash is completed at the next start.
    finish_interrupted_rotation(dir)?;

    let signer = Arc::new(KeyPairSigner::new(key)?);
    let responder = ResponderKey::new(signer, record.der, authority.ca().cert_der(), validity, 0)?;
    tracing::info!(
        serial = %record.intent.serial,
        not_after = %responder.not_after,
        "OCSP responder certificate rotated"
    );
    Ok(responder)
}

/// Loads the responder key and certificate from the data directory.
pub(crate) fn load(
    ca: &Ca,
    authority: &Authority,
    protection: &Protection,
    validity: Duration,
) -> Result<ResponderKey, ServerError> {
    finish_interrupted_rotation(ca.dir())?;
    let signer = Arc::new(ca.signer(KEY, protection)?);
    ResponderKey::new(
        signer,
        ca.cert_der(CERT)?,
        authority.ca().cert_der(),
        validity,
        0,
    )
}

fn write_synced(path: &Path, contents: &[u8]) -> Result<(), ServerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| ServerError::io(format!("create {}", path.display()), e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| ServerError::io(format!("write {}", path.display()), e))
}

fn rename(from: &Path, to: &Path) -> Result<(), ServerError> {
    std::fs::rename(from, to)
        .map_err(|e| ServerError::io(format!("rename {} to {}", from.display(), to.display()), e))
}

fn sync_dir(path: &Path) -> Result<(), ServerError> {
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| ServerError::io(format!("sync {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> (tempfile::TempDir, DataDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path());
        for (name, contents) in files {
            std::fs::write(dir.file(name), contents).unwrap();
        }
        (tmp, dir)
    }

    fn read(dir: &DataDir, name: &str) -> Option<String> {
        std::fs::read_to_string(dir.file(name)).ok()
    }

    #[test]
    fn a_committed_rotation_is_completed() {
        let (_tmp, dir) = dir_with(&[
            (KEY, "old key"),
            (CERT, "old cert"),
            (NEXT_KEY, "new key"),
            (NEXT_CERT, "new cert"),
        ]);
        finish_interrupted_rotation(&dir).unwrap();
        assert_eq!(read(&dir, KEY).as_deref(), Some("new key"));
        assert_eq!(read(&dir, CERT).as_deref(), Some("new cert"));
        assert_eq!(read(&dir, NEXT_KEY), None);
        assert_eq!(read(&dir, NEXT_CERT), None);
    }

    #[test]
    fn a_rotation_stopped_between_the_renames_is_completed() {
        let (_tmp, dir) = dir_with(&[
            (KEY, "new key"),
            (CERT, "old cert"),
            (NEXT_CERT, "new cert"),
        ]);
        finish_interrupted_rotation(&dir).unwrap();
        assert_eq!(read(&dir, KEY).as_deref(), Some("new key"));
        assert_eq!(read(&dir, CERT).as_deref(), Some("new cert"));
    }

    #[test]
    fn an_uncommitted_rotation_is_discarded() {
        let (_tmp, dir) = dir_with(&[
            (KEY, "old key"),
            (CERT, "old cert"),
            (NEXT_KEY, "new key"),
            (NEXT_CERT_TMP, "half a cert"),
        ]);
        finish_interrupted_rotation(&dir).unwrap();
        assert_eq!(read(&dir, KEY).as_deref(), Some("old key"));
        assert_eq!(read(&dir, CERT).as_deref(), Some("old cert"));
        assert_eq!(read(&dir, NEXT_KEY), None);
        assert_eq!(read(&dir, NEXT_CERT_TMP), None);
        // Nothing to do is fine too.
        finish_interrupted_rotation(&dir).unwrap();
    }
}
