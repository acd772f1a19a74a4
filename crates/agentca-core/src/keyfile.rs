//! CA private keys in files, encrypted at rest.
//!
//! The root, issuing CA, OCSP responder and SCEP RA keys live in the data directory as
//! standard encrypted PKCS#8 PEM (`-----BEGIN ENCRYPTED PRIVATE KEY-----`, RFC 5208 §6) using
//! PBES2 (RFC 8018 §6.2) with scrypt (RFC 7914) as the key derivation function and
//! AES-256-CBC as the cipher, so an operator can open one with stock tools:
//!
//! ```text
//! openssl pkey -in issuing.key -passin env:AGENTCA_PASSPHRASE
//! ```
//!
//! scrypt runs with N = 2^14, r = 8, p = 1 (16 MiB of memory). N = 2^15 would need 32 MiB plus
//! a little, which is more than OpenSSL 3 allows scrypt by default, and OpenSSL could then no
//! longer open the files. Reading a key file accepts any PBES2 scheme the `pkcs5` crate
//! implements (so keys re-encrypted with `openssl pkcs8 -topk8` work), but refuses key
//! derivation costs far above ours, so a crafted file cannot make startup allocate gigabytes.
//!
//! Key files are mode 0600 and written once: [`write_key`] never replaces an existing file,
//! and [`read_key`] refuses a file that grants any permission to group or other. A plaintext
//! `PRIVATE KEY` file is accepted only when the caller explicitly chose
//! [`Protection::InsecurePlaintext`], which exists for development and tests.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pkcs8::der::pem::{self, LineEnding};
use pkcs8::der::{Encode, asn1::OctetStringRef};
use pkcs8::pkcs5::{self, pbes2};
use pkcs8::{EncryptedPrivateKeyInfoRef, PrivateKeyInfoRef};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The environment variable [`Passphrase::from_env`] reads.
pub const PASSPHRASE_ENV: &str = "AGENTCA_PASSPHRASE";

/// scrypt cost for new key files: log2(N), r, p.
const SCRYPT_LOG_N: u8 = 14;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

/// Upper bounds on what a key file may ask of us: 256 MiB of scrypt memory, 32 times our own
/// scrypt work, and PBKDF2 iteration counts up to the 10,000,000 RFC 8018 mentions for
/// "especially critical keys".
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;
const MAX_SCRYPT_WORK: u64 = 32 * (1 << SCRYPT_LOG_N) * SCRYPT_R as u64 * SCRYPT_P as u64;
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Key and passphrase files larger than this are not what we wrote.
const MAX_KEY_FILE: u64 = 1 << 20;
const MAX_PASSPHRASE_FILE: u64 = 64 << 10;

const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";
const PLAINTEXT_LABEL: &str = "PRIVATE KEY";

/// How a key file is (or must be) protected.
#[derive(Debug, Clone)]
pub enum Protection {
    /// Encrypted PKCS#8 under this passphrase. The only choice for a real CA.
    Passphrase(Passphrase),
    /// Plain, unencrypted PKCS#8. For development only: anyone who can read the file holds
    /// the CA.
    InsecurePlaintext,
}

/// A key file passphrase. Wiped from memory when dropped; never printed.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Wraps a passphrase; refuses an empty one.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.is_empty() {
            return Err(Error::io(
                "reading the key passphrase",
                io::Error::new(io::ErrorKind::InvalidInput, "the passphrase is empty"),
            ));
        }
        Ok(Self(bytes))
    }

    /// The passphrase in `AGENTCA_PASSPHRASE`, or `None` when the variable is not set. An
    /// empty value is an error rather than a passphrase.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var_os(PASSPHRASE_ENV) {
            None => Ok(None),
            Some(value) => {
                let bytes = Zeroizing::new(value.into_encoded_bytes());
                if bytes.is_empty() {
                    return Err(Error::io(
                        format!("reading {PASSPHRASE_ENV}"),
                        io::Error::new(io::ErrorKind::InvalidInput, "the passphrase is empty"),
                    ));
                }
                Ok(Some(Self(bytes)))
            }
        }
    }

    /// The passphrase stored in the file at `path`, minus one trailing `\n` (or `\r\n`), as
    /// `echo` and editors leave it.
    ///
    /// A regular file must not grant any permission to group or other, for the same reason
    /// as a key file: it unlocks the keys. Pipes and other non-regular files (`<(pass show
    /// agentca)`, `/dev/stdin`) are read as they are.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = open_private(path, "passphrase file")?;
        let mut bytes = read_capped(&file, path, MAX_PASSPHRASE_FILE)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.is_empty() {
            return Err(key_file(path, "the passphrase file is empty"));
        }
        Ok(Self(bytes))
    }

    fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Writes a PKCS#8 private key (DER) to a new file at `path`, mode 0600, protected as asked.
///
/// Never replaces an existing file: the key is written to a temporary file in the same
/// directory, synced, then hard-linked to `path` (which fails if `path` exists), and the
/// directory is synced. A crash leaves either no key file or a complete one, never a torn one.
pub fn write_key(path: &Path, pkcs8_der: &[u8], protection: &Protection) -> Result<()> {
    // Refuse to write something that would not load again.
    PrivateKeyInfoRef::try_from(pkcs8_der)
        .map_err(|e| key_file(path, format!("not a PKCS#8 private key: {e}")))?;
    let pem = match protection {
        Protection::Passphrase(passphrase) => encrypt(path, pkcs8_der, passphrase)?,
        Protection::InsecurePlaintext => Zeroizing::new(
            pem::encode_string(PLAINTEXT_LABEL, LineEnding::LF, pkcs8_der)
                .map_err(|e| key_file(path, format!("PEM encoding: {e}")))?,
        ),
    };
    write_new_file(path, pem.as_bytes())
}

/// Reads the key file at `path` and returns the PKCS#8 private key (DER).
///
/// Fails closed: a file that grants any permission to group or other, a plaintext key unless
/// `protection` is [`Protection::InsecurePlaintext`], an encrypted key without a passphrase,
/// and a wrong passphrase are all errors naming the file.
pub fn read_key(path: &Path, protection: &Protection) -> Result<Zeroizing<Vec<u8>>> {
    let file = open_private(path, "key file")?;
    let contents = read_capped(&file, path, MAX_KEY_FILE)?;
    let (label, der) = pem::decode_vec(&contents)
        .map_err(|e| key_file(path, format!("not a PEM private key file: {e}")))?;
    let der = Zeroizing::new(der);
    match (label, protection) {
        (ENCRYPTED_LABEL, Protection::Passphrase(passphrase)) => decrypt(path, &der, passphrase),
        (ENCRYPTED_LABEL, Protection::InsecurePlaintext) => Err(key_file(
            path,
            format!("the key is encrypted; give its passphrase (e.g. in {PASSPHRASE_ENV})"),
        )),
        (PLAINTEXT_LABEL, Protection::InsecurePlaintext) => {
            PrivateKeyInfoRef::try_from(der.as_slice())
                .map_err(|e| key_file(path, format!("not a PKCS#8 private key: {e}")))?;
            Ok(der)
        }
        (PLAINTEXT_LABEL, Protection::Passphrase(_)) => Err(key_file(
            path,
            "the key is not encrypted; refusing an unprotected CA key outside development \
             mode (encrypt it with `openssl pkcs8 -topk8 -scrypt`)",
        )),
        (other, _) => Err(key_file(
            path,
            format!("unexpected PEM label {other:?}; expected {ENCRYPTED_LABEL:?}"),
        )),
    }
}

fn encrypt(path: &Path, pkcs8_der: &[u8], passphrase: &Passphrase) -> Result<Zeroizing<String>> {
    let fail = |what: &str, e: &dyn fmt::Display| key_file(path, format!("{what}: {e}"));
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt)
        .and_then(|()| aws_lc_rs::rand::fill(&mut iv))
        .map_err(|e| fail("drawing salt and IV", &e))?;
    let cost = pkcs5::scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        .map_err(|e| fail("scrypt parameters", &e))?;
    let params = pbes2::Parameters::generate_scrypt_aes256cbc(cost, &salt, iv)
        .map_err(|e| fail("PBES2 parameters", &e))?;
    let ciphertext = params
        .encrypt(passphrase.as_bytes(), pkcs8_der)
        .map_err(|e| fail("encrypting", &e))?;
    let info = EncryptedPrivateKeyInfoRef {
        encryption_algorithm: params.into(),
        encrypted_data: OctetStringRef::new(&ciphertext).map_err(|e| fail("encoding", &e))?,
    };
    let der = info.to_der().map_err(|e| fail("encoding", &e))?;
    pem::encode_string(ENCRYPTED_LABEL, LineEnding::LF, &der)
        .map(Zeroizing::new)
        .map_err(|e| fail("PEM encoding", &e))
}

fn decrypt(path: &Path, der: &[u8], passphrase: &Passphrase) -> Result<Zeroizing<Vec<u8>>> {
    let info = EncryptedPrivateKeyInfoRef::try_from(der)
        .map_err(|e| key_file(path, format!("not an encrypted PKCS#8 key: {e}")))?;
    check_cost(&info.encryption_algorithm).map_err(|why| key_file(path, why))?;
    // A wrong passphrase shows up as bad CBC padding or, rarely, as a plaintext that is not
    // PKCS#8; both get the same answer.
    let wrong = || key_file(path, "wrong passphrase or corrupt key file");
    let plain = info
        .decrypt(passphrase.as_bytes())
        .map_err(|_| wrong())?
        .to_bytes();
    PrivateKeyInfoRef::try_from(plain.as_slice()).map_err(|_| wrong())?;
    Ok(plain)
}

/// Refuses key derivation settings that would cost far more than ours.
fn check_cost(scheme: &pkcs5::EncryptionScheme) -> Result<(), String> {
    let Some(params) = scheme.pbes2() else {
        return Err("not encrypted with PBES2".to_owned());
    };
    if let Some(s) = params.kdf.scrypt() {
        let n = s.cost_parameter;
        let r = u64::from(s.block_size);
        let p = u64::from(s.parallelization);
        let memory = n.saturating_mul(r).saturating_mul(128);
        let work = n.saturating_mul(r).saturating_mul(p);
        if memory > MAX_SCRYPT_MEMORY || work > MAX_SCRYPT_WORK {
            return Err(format!(
                "scrypt parameters N={n}, r={r}, p={p} are too costly to accept"
            ));
        }
    } else if let Some(p) = params.kdf.pbkdf2()
        && p.iteration_count > MAX_PBKDF2_ITERATIONS
    {
        return Err(format!(
            "PBKDF2 iteration count {} is too costly to accept",
            p.iteration_count
        ));
    }
    Ok(())
}

/// Opens `path` for reading and, if it is a regular file, refuses it when group or other
/// have any permission.
fn open_private(path: &Path, what: &str) -> Result<File> {
    let file =
        File::open(path).map_err(|e| Error::io(format!("opening {what} {}", path.display()), e))?;
    // Checked on the open descriptor, so the file cannot be swapped between check and read.
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("inspecting {what} {}", path.display()), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        return Err(key_file(
            path,
            format!("mode {mode:04o} is too open; chmod 600 {}", path.display()),
        ));
    }
    if meta.is_dir() {
        return Err(key_file(path, "is a directory"));
    }
    Ok(file)
}

/// Reads a whole small file into wiped-on-drop memory.
fn read_capped(file: &File, path: &Path, cap: u64) -> Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    // Reserve up front: growing the vector would leave unwiped copies behind.
    buf.reserve(usize::try_from(cap).unwrap_or(usize::MAX).saturating_add(1));
    file.take(cap + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if buf.len() as u64 > cap {
        return Err(key_file(path, format!("larger than {cap} bytes")));
    }
    Ok(buf)
}

/// Creates `path` with `contents` and mode 0600, atomically and without replacing anything.
fn write_new_file(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let Some(name) = path.file_name() else {
        return Err(key_file(path, "not a file name"));
    };
    // Fail early with a clear message; the hard link below is what actually guarantees it.
    if path.symlink_metadata().is_ok() {
        return Err(key_file(
            path,
            "already exists; refusing to overwrite a key",
        ));
    }

    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix)
        .map_err(|e| key_file(path, format!("drawing a temporary name: {e}")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", hex::encode(suffix)));
    let tmp = dir.join(tmp_name);

    let result = write_then_link(&tmp, path, contents);
    // The temporary name is gone after a successful link, and must go after a failure.
    let _ = std::fs::remove_file(&tmp);
    result?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

fn write_then_link(tmp: &Path, path: &Path, contents: &[u8]) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::io(ctx("creating"), e))?;
    // The umask can only remove bits from 0600; set it exactly anyway.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(ctx("setting the mode of"), e))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(ctx("writing"), e))?;
    drop(file);
    std::fs::hard_link(tmp, path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            key_file(path, "already exists; refusing to overwrite a key")
        } else {
            Error::io(format!("linking key file {}", path.display()), e)
        }
    })
}

fn key_file(path: &Path, reason: impl Into<String>) -> Error {
    Error::KeyFile {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::process::Command;
    use std::time::Instant;

    use super::*;

    fn pass(s: &str) -> Protection {
        Protection::Passphrase(Passphrase::new(s).unwrap())
    }

    fn key(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        rcgen::KeyPair::generate_for(alg).unwrap().serialize_der()
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn round_trip_every_key_type() {
        let dir = tempfile::tempdir().unwrap();
        let protection = pass("correct horse battery staple");
        for (name, alg) in [
            ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
            ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
            ("ed25519", &rcgen::PKCS_ED25519),
            ("rsa", &rcgen::PKCS_RSA_SHA256),
        ] {
            let der = key(alg);
            let path = dir.path().join(format!("{name}.key"));
            write_key(&path, &der, &protection).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");

            let started = Instant::now();
            let back = read_key(&path, &protection).unwrap();
            eprintln!("{name}: decrypted in {:?}", started.elapsed());
            assert_eq!(back.as_slice(), der.as_slice(), "{name}");
            let pair = rcgen::KeyPair::try_from(back.as_slice()).unwrap();
            assert!(pair.is_compatible(alg), "{name}");
        }
    }

    #[test]
    fn plaintext_round_trip_needs_opt_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.key");
        let der = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        write_key(&path, &der, &Protection::InsecurePlaintext).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = read_key(&path, &Protection::InsecurePlaintext).unwrap();
        assert_eq!(back.as_slice(), der.as_slice());

        let err = read_key(&path, &pass("anything")).unwrap_err();
        assert!(matches!(err, Error::KeyFile { .. }));
        assert!(err.to_string().contains("not encrypted"), "{err}");
    }

    #[test]
    fn encrypted_key_needs_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuing.key");
        write_key(&path, &key(&rcgen::PKCS_ECDSA_P256_SHA256), &pass("right")).unwrap();

        let err = read_key(&path, &pass("wrong")).unwrap_err();
        assert!(
            err.to_string()
                .contains("wrong passphrase or corrupt key file"),
            "{err}"
        );
        let err = read_key(&path, &Protection::InsecurePlaintext).unwrap_err();
        assert!(err.to_string().contains("the key is encrypted"), "{err}");
    }

    #[test]
    fn corrupt_ciphertext_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuing.key");
        let protection = pass("pw");
        let der = key(&rcgen::PKCS_ECDSA_P256_SHA256);
        let pem = encrypt(&path, &der, &Passphrase::new("pw").unwrap()).unwrap();
        let (_, mut raw) = pem::decode_vec(pem.as_bytes()).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x01;
        let damaged = pem::encode_string(ENCRYPTED_LABEL, LineEnding::LF, &raw).unwrap();
        write_new_file(&path, damaged.as_bytes()).unwrap();
        let err = read_key(&path, &protection).unwrap_err();
        assert!(
            err.to_string().contains("wrong passphrase or corrupt"),
            "{err}"
        );
    }

    #[test]
    fn open_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuing.key");
        let protection = pass("pw");
        write_key(&path, &key(&rcgen::PKCS_ECDSA_P256_SHA256), &protection).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o610, 0o601] {
            chmod(&path, mode);
            let err = read_key(&path, &protection).unwrap_err();
            let expected = format!("mode {mode:04o} is too open; chmod 600 {}", path.display());
            assert!(err.to_string().contains(&expected), "{err}");
        }
        chmod(&path, 0o400);
        read_key(&path, &protection).unwrap();
    }

    #[test]
    fn existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuing.key");
        std::fs::write(&path, b"precious").unwrap();
        let err = write_key(
            &path,
            &key(&rcgen::PKCS_ECDSA_P256_SHA256),
            &Protection::InsecurePlaintext,
        )
        .unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");

        // The race the early check cannot see: the link itself refuses.
        let other = dir.path().join("other.key");
        std::fs::write(&other, b"also precious").unwrap();
        let err = write_then_link(&dir.path().join(".tmp-test"), &other, b"new").unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(std::fs::read(&other).unwrap(), b"also precious");

        // No temporary files are left behind.
        let _ = std::fs::remove_file(dir.path().join(".tmp-test"));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn garbage_is_not_written_as_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.key");
        assert!(write_key(&path, b"not der", &Protection::InsecurePlaintext).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn openssl_decrypts_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuing.key");
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let secret = "s3cret passphrase";
        write_key(&path, &pair.serialize_der(), &pass(secret)).unwrap();
        // openssl writes EC private keys in its own form; the public key shows it is ours.
        let out = Command::new("openssl")
            .args([
                "pkey",
                "-pubout",
                "-outform",
                "DER",
                "-passin",
                "env:AGENTCA_TEST_PASS",
            ])
            .arg("-in")
            .arg(&path)
            .env("AGENTCA_TEST_PASS", secret)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout,
            rcgen::PublicKeyData::subject_public_key_info(&pair)
        );

        let out = Command::new("openssl")
            .args(["pkey", "-noout", "-passin", "pass:wrong", "-in"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
    }

    #[test]
    fn openssl_encrypted_keys_can_be_read() {
        // An operator may re-encrypt a key with stock tools (PBKDF2 is OpenSSL's default).
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.key");
        let der = key(&rcgen::PKCS_ECDSA_P384_SHA384);
        write_key(&plain, &der, &Protection::InsecurePlaintext).unwrap();
        for extra in [&["-v2", "aes-256-cbc"][..], &["-scrypt"][..]] {
            let out_path = dir.path().join(format!("enc{}.key", extra.len()));
            let status = Command::new("openssl")
                .args(["pkcs8", "-topk8", "-passout", "pass:pw", "-in"])
                .arg(&plain)
                .arg("-out")
                .arg(&out_path)
                .args(extra)
                .status()
                .unwrap();
            assert!(status.success());
            chmod(&out_path, 0o600);
            let back = read_key(&out_path, &pass("pw")).unwrap();
            assert_eq!(back.as_slice(), der.as_slice(), "{extra:?}");
        }
    }

    #[test]
    fn excessive_kdf_cost_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("costly.key");
        let cost = pkcs5::scrypt::Params::new(22, 8, 1).unwrap();
        let params = pbes2::Parameters::generate_scrypt_aes256cbc(cost, &[7; 16], [9; 16]).unwrap();
        // Ciphertext content does not matter: the cost is checked before any work is done.
        let info = EncryptedPrivateKeyInfoRef {
            encryption_algorithm: params.into(),
            encrypted_data: OctetStringRef::new(&[0u8; 64]).unwrap(),
        };
        let pem =
            pem::encode_string(ENCRYPTED_LABEL, LineEnding::LF, &info.to_der().unwrap()).unwrap();
        write_new_file(&path, pem.as_bytes()).unwrap();
        let err = read_key(&path, &pass("pw")).unwrap_err();
        assert!(err.to_string().contains("too costly"), "{err}");
    }

    #[test]
    fn other_pem_labels_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.key");
        let pem = pem::encode_string("CERTIFICATE", LineEnding::LF, &[0x30, 0x00]).unwrap();
        write_new_file(&path, pem.as_bytes()).unwrap();
        let err = read_key(&path, &Protection::InsecurePlaintext).unwrap_err();
        assert!(err.to_string().contains("unexpected PEM label"), "{err}");
        let path = dir.path().join("empty.key");
        write_new_file(&path, b"").unwrap();
        assert!(read_key(&path, &Protection::InsecurePlaintext).is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let secret = "hunter2-very-secret";
        let protection = pass(secret);
        let shown = format!("{protection:?} {:?}", Passphrase::new(secret).unwrap());
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("redacted"));

        // Nor in error messages.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_key(&path, &key(&rcgen::PKCS_ED25519), &pass("other")).unwrap();
        let err = read_key(&path, &protection).unwrap_err();
        assert!(!format!("{err} {err:?}").contains(secret));
    }

    #[test]
    fn passphrase_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        std::fs::write(&path, b"line one\n").unwrap();
        chmod(&path, 0o600);
        assert_eq!(
            Passphrase::from_file(&path).unwrap().as_bytes(),
            b"line one"
        );

        std::fs::write(&path, b"crlf\r\n").unwrap();
        assert_eq!(Passphrase::from_file(&path).unwrap().as_bytes(), b"crlf");

        // Only one newline is taken off; the rest is part of the passphrase.
        std::fs::write(&path, b" spaced \n\n").unwrap();
        assert_eq!(
            Passphrase::from_file(&path).unwrap().as_bytes(),
            b" spaced \n"
        );

        std::fs::write(&path, b"\n").unwrap();
        let err = Passphrase::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");

        std::fs::write(&path, b"pw\n").unwrap();
        chmod(&path, 0o640);
        let err = Passphrase::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("mode 0640 is too open"), "{err}");

        assert!(Passphrase::new("").is_err());
        assert!(Passphrase::from_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn passphrase_from_a_pipe() {
        // `--passphrase-file <(...)` hands us a pipe; its mode is not checked.
        let mut child = Command::new("echo")
            .arg("piped")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let fd_path = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&stdout)
        ));
        let p = Passphrase::from_file(&fd_path).unwrap();
        assert_eq!(p.as_bytes(), b"piped");
        child.wait().unwrap();
    }
}
