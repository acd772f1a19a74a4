//! The issuing CA's key in a PKCS#11 token (a hardware security module; SoftHSM in tests).
//!
//! `init --pkcs11-module PATH --pkcs11-token LABEL` generates the key pair inside the token,
//! with the private key marked sensitive and not extractable, and records where it is
//! ([`TokenKey`], in `config.toml`); no `issuing.key` file is written. Every later command and
//! `serve` sign through [`TokenSigner`], which logs in with the PIN from `AGENTCA_PKCS11_PIN`
//! or the file named by `AGENTCA_PKCS11_PIN_FILE`.
//!
//! The signer keeps one session. A call that fails (the token removed, the session closed by
//! the module, the module restarted) drops it, and the next call opens and logs in a new one,
//! so a token that comes back is used again without a restart; while it is away every
//! signature fails, and the front ends answer `503` with `Retry-After`. Nothing ever falls
//! back to a key file. A key that the token would let out (extractable, or not sensitive) is
//! refused when it is opened.
//!
//! ECDSA keys only (P-256 and P-384): the token signs a digest computed here (`CKM_ECDSA`,
//! which every module offers), and its raw `r‖s` is encoded as the DER `ECDSA-Sig-Value`
//! certificates carry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};

use crate::csr::KeyKind;
use crate::error::{Error, Result};
use crate::profile::tlv;
use crate::signer::{SignatureAlgorithm, Signer};

/// The variable that holds the token's user PIN.
pub const PIN_VAR: &str = "AGENTCA_PKCS11_PIN";
/// The variable that names a file holding the token's user PIN (first line).
pub const PIN_FILE_VAR: &str = "AGENTCA_PKCS11_PIN_FILE";

/// A token's user PIN (zeroed when dropped, redacted when printed).
pub type Pin = AuthPin;

/// Where the issuing CA's key lives: `config.toml`'s `[issuing_key]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenKey {
    /// The PKCS#11 module (a shared library).
    pub pkcs11_module: PathBuf,
    /// The label of the token that holds the key.
    pub token: String,
    /// The key's `CKA_ID`, hex.
    pub id: String,
}

/// The user PIN, from [`PIN_VAR`] or the file [`PIN_FILE_VAR`] names.
pub fn pin_from_environment() -> Result<AuthPin> {
    if let Some(path) = std::env::var_os(PIN_FILE_VAR) {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::io(
                format!("read the PKCS#11 PIN file {}", Path::new(&path).display()),
                e,
            )
        })?;
        let pin = text.lines().next().unwrap_or_default().to_owned();
        return non_empty(pin);
    }
    match std::env::var(PIN_VAR) {
        Ok(pin) => non_empty(pin),
        Err(_) => Err(Error::Pkcs11(format!(
            "the issuing CA key is in a PKCS#11 token: set {PIN_VAR} or {PIN_FILE_VAR} to its \
             user PIN"
        ))),
    }
}

fn non_empty(pin: String) -> Result<AuthPin> {
    if pin.is_empty() {
        return Err(Error::Pkcs11("the PKCS#11 PIN is empty".into()));
    }
    Ok(AuthPin::new(pin.into()))
}

/// One initialised context per module for the life of the process: `C_Initialize` may run
/// only once, and dropping a context would finalise the module under every other user.
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS
        .get_or_init(Mutex::default)
        .lock()
        .map_err(|_| Error::Unreachable("the PKCS#11 context table is poisoned"))?;
    if let Some(context) = contexts.get(module) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(module).map_err(|e| {
        Error::Pkcs11(format!(
            "cannot load the PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, Function::Initialize)) => {}
        Err(e) => {
            return Err(Error::Pkcs11(format!(
                "cannot initialise the PKCS#11 module {}: {e}",
                module.display()
            )));
        }
    }
    contexts.insert(module.to_owned(), context.clone());
    Ok(context)
}

/// The slot of the token labelled `label`.
fn find_token(context: &Pkcs11, key: &TokenKey) -> Result<Slot> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| pkcs11_error("list the tokens", e))?;
    for slot in slots {
        if let Ok(info) = context.get_token_info(slot)
            && info.label().trim_end() == key.token
        {
            return Ok(slot);
        }
    }
    Err(Error::Pkcs11(format!(
        "no token labelled {:?} in the PKCS#11 module {}",
        key.token,
        key.pkcs11_module.display()
    )))
}

fn pkcs11_error(what: &str, e: Pkcs11Error) -> Error {
    Error::Pkcs11(format!("{what}: {e}"))
}

/// Opens a session on `slot` and logs the user in (a login already made by another session
/// of this process counts).
fn logged_in_session(context: &Pkcs11, slot: Slot, pin: &AuthPin) -> Result<Session> {
    let session = context
        .open_rw_session(slot)
        .map_err(|e| pkcs11_error("open a session", e))?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect, _)) => Err(Error::Pkcs11(
            "the token refused the PIN (CKR_PIN_INCORRECT)".into(),
        )),
        Err(e) => Err(pkcs11_error("log in to the token", e)),
    }
}

/// The curve's OID, DER, as `CKA_EC_PARAMS` and the SPKI's parameters carry it.
fn curve_oid(kind: KeyKind) -> Result<(&'static [u8], SignatureAlgorithm, usize)> {
    match kind {
        // 1.2.840.10045.3.1.7
        KeyKind::EcdsaP256 => Ok((
            &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
            SignatureAlgorithm::EcdsaP256Sha256,
            32,
        )),
        // 1.3.132.0.34
        KeyKind::EcdsaP384 => Ok((
            &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
            SignatureAlgorithm::EcdsaP384Sha384,
            48,
        )),
        other => Err(Error::Pkcs11(format!(
            "a CA key in a PKCS#11 token must be ecdsa-p256 or ecdsa-p384, not {other}"
        ))),
    }
}

/// The issuing CA's key in a token, as a [`Signer`].
pub struct TokenSigner {
    context: Pkcs11,
    /// Where the key is: the token is looked up again for each new session, since a module
    /// may give a token that comes back another slot.
    place: TokenKey,
    id: Vec<u8>,
    pin: AuthPin,
    algorithm: SignatureAlgorithm,
    coordinate_len: usize,
    spki: Vec<u8>,
    /// The open session and the private key's handle in it; `None` after a failure.
    session: Mutex<Option<(Session, ObjectHandle)>>,
    count: AtomicU64,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("algorithm", &self.algorithm)
            .field("id", &hex::encode(&self.id))
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Generates a key pair of `kind`, under a fresh random id, in the token labelled `token`
    /// of `module`; returns the signer and where the key is.
    pub fn generate(
        module: &Path,
        token: &str,
        kind: KeyKind,
        label: &str,
        pin: AuthPin,
    ) -> Result<(Self, TokenKey)> {
        let (oid, _, _) = curve_oid(kind)?;
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id)
            .map_err(|_| Error::Signing("the system random number generator failed".into()))?;
        let key = TokenKey {
            pkcs11_module: module.to_owned(),
            token: token.to_owned(),
            id: hex::encode(id),
        };
        let context = context(module)?;
        let slot = find_token(&context, &key)?;
        let session = logged_in_session(&context, slot, &pin)?;
        let common = [
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        let public: Vec<Attribute> = common
            .iter()
            .cloned()
            .chain([
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(oid.to_vec()),
            ])
            .collect();
        let private: Vec<Attribute> = common
            .iter()
            .cloned()
            .chain([
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                // Signing only: no decryption, unwrapping or key derivation with it.
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
            ])
            .collect();
        session
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .map_err(|e| pkcs11_error("generate the key pair in the token", e))?;
        drop(session);
        let signer = Self::open(&key, pin)?;
        Ok((signer, key))
    }

    /// Opens the key `key` names, logging in with `pin`. Refuses a key the token would let
    /// out.
    pub fn open(key: &TokenKey, pin: AuthPin) -> Result<Self> {
        let id = hex::decode(&key.id)
            .map_err(|_| Error::Pkcs11(format!("[issuing_key] id {:?} is not hex", key.id)))?;
        let context = context(&key.pkcs11_module)?;
        let slot = find_token(&context, key)?;
        let session = logged_in_session(&context, slot, &pin)?;
        let private = find_key(&session, ObjectClass::PRIVATE_KEY, &id)?;
        let flags = session
            .get_attributes(
                private,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::KeyType,
                ],
            )
            .map_err(|e| pkcs11_error("read the key's attributes", e))?;
        let mut guarded = (false, false, false);
        for attribute in flags {
            match attribute {
                Attribute::Sensitive(s) => guarded.0 = s,
                Attribute::Extractable(e) => guarded.1 = !e,
                Attribute::KeyType(t) => guarded.2 = t == KeyType::EC,
                _ => {}
            }
        }
        match guarded {
            (_, _, false) => {
                return Err(Error::Pkcs11(
                    "the token key is not an EC key; agentca signs with ECDSA keys in tokens"
                        .into(),
                ));
            }
            (true, true, true) => {}
            _ => {
                return Err(Error::Pkcs11(
                    "the token would let the key out (CKA_SENSITIVE false or CKA_EXTRACTABLE \
                     true): agentca signs only with a key that never leaves the token"
                        .into(),
                ));
            }
        }
        let public = find_key(&session, ObjectClass::PUBLIC_KEY, &id)?;
        let (mut params, mut point) = (Vec::new(), Vec::new());
        for attribute in session
            .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(|e| pkcs11_error("read the public key", e))?
        {
            match attribute {
                Attribute::EcParams(p) => params = p,
                Attribute::EcPoint(p) => point = p,
                _ => {}
            }
        }
        let kind = [KeyKind::EcdsaP256, KeyKind::EcdsaP384]
            .into_iter()
            .find(|k| curve_oid(*k).is_ok_and(|(oid, _, _)| oid == params.as_slice()))
            .ok_or_else(|| {
                Error::Pkcs11("the token key is on a curve agentca does not use".into())
            })?;
        let (oid, algorithm, coordinate_len) = curve_oid(kind)?;
        let point = uncompressed_point(&point, coordinate_len)?;
        // SEQUENCE { SEQUENCE { id-ecPublicKey, curve }, BIT STRING point }
        let ec_public_key = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        let algorithm_id = tlv(0x30, &[&ec_public_key[..], oid].concat());
        let bits = tlv(0x03, &[&[0u8][..], point].concat());
        let spki = tlv(0x30, &[algorithm_id, bits].concat());
        Ok(Self {
            context,
            place: key.clone(),
            id,
            pin,
            algorithm,
            coordinate_len,
            spki,
            session: Mutex::new(Some((session, private))),
            count: AtomicU64::new(0),
        })
    }

    fn sign_once(&self, digest: &[u8]) -> Result<Vec<u8>> {
        let mut slot = self
            .session
            .lock()
            .map_err(|_| Error::Unreachable("the PKCS#11 session lock is poisoned"))?;
        if slot.is_none() {
            *slot = Some(match self.reopen() {
                Ok(open) => open,
                Err(_) => {
                    // Some modules see a token that went away and came back only once they are
                    // initialised again (SoftHSM reads its token list at C_Initialize).
                    let _ = self.context.clone().finalize();
                    let _ = self
                        .context
                        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
                    self.reopen()?
                }
            });
        }
        let Some((session, key)) = slot.as_ref() else {
            return Err(Error::Unreachable("a PKCS#11 session was just opened"));
        };
        match session.sign(&Mechanism::Ecdsa, *key, digest) {
            Ok(raw) => Ok(raw),
            Err(e) => {
                // Whatever went wrong, the next attempt starts from a fresh session.
                *slot = None;
                Err(pkcs11_error("the token did not sign", e))
            }
        }
    }
}

impl TokenSigner {
    /// A new logged-in session on the key's token, and the key's handle in it.
    fn reopen(&self) -> Result<(Session, ObjectHandle)> {
        let token = find_token(&self.context, &self.place)?;
        let session = logged_in_session(&self.context, token, &self.pin)?;
        let key = find_key(&session, ObjectClass::PRIVATE_KEY, &self.id)?;
        Ok((session, key))
    }
}

fn find_key(session: &Session, class: ObjectClass, id: &[u8]) -> Result<ObjectHandle> {
    let found = session
        .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        .map_err(|e| pkcs11_error("look for the key", e))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::Pkcs11(format!(
            "the token holds no {} with id {}",
            if class == ObjectClass::PRIVATE_KEY {
                "private key"
            } else {
                "public key"
            },
            hex::encode(id)
        ))),
        _ => Err(Error::Pkcs11(format!(
            "the token holds several keys with id {}",
            hex::encode(id)
        ))),
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING holding the point (PKCS#11 2.40 §2.3.3); some modules
/// give the bare point. Either way, the uncompressed point.
fn uncompressed_point(value: &[u8], coordinate_len: usize) -> Result<&[u8]> {
    let point_len = 1 + 2 * coordinate_len;
    let point = match value {
        [0x04, len, rest @ ..] if usize::from(*len) == point_len && rest.len() == point_len => rest,
        bare if bare.len() == point_len => bare,
        _ => {
            return Err(Error::Pkcs11(
                "the token's CKA_EC_POINT does not parse".into(),
            ));
        }
    };
    if point.first() != Some(&0x04) {
        return Err(Error::Pkcs11(
            "the token's public key is not an uncompressed point".into(),
        ));
    }
    Ok(point)
}

/// A DER `ECDSA-Sig-Value` from the raw `r‖s` PKCS#11 returns.
fn der_signature(raw: &[u8], coordinate_len: usize) -> Result<Vec<u8>> {
    if raw.len() != 2 * coordinate_len {
        return Err(Error::Signing(format!(
            "the token returned a {}-byte ECDSA signature, not {}",
            raw.len(),
            2 * coordinate_len
        )));
    }
    let integer = |bytes: &[u8]| {
        let trimmed = match bytes.iter().position(|b| *b != 0) {
            Some(first) => &bytes[first..],
            None => &[0u8][..],
        };
        let content = if trimmed[0] & 0x80 != 0 {
            [&[0u8][..], trimmed].concat()
        } else {
            trimmed.to_vec()
        };
        tlv(0x02, &content)
    };
    let (r, s) = raw.split_at(coordinate_len);
    Ok(tlv(0x30, &[integer(r), integer(s)].concat()))
}

impl Signer for TokenSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let digest = match self.algorithm {
            SignatureAlgorithm::EcdsaP384Sha384 => {
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, message)
            }
            _ => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message),
        };
        // A session the module dropped since the last call fails once; the second attempt
        // runs on a fresh one.
        let raw = match self.sign_once(digest.as_ref()) {
            Ok(raw) => raw,
            Err(_) => self.sign_once(digest.as_ref())?,
        };
        der_signature(&raw, self.coordinate_len)
    }

    fn signatures(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn raw_signatures_become_minimal_der_integers() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[63] = 0x01; // s is 1 after 31 zero bytes
        let der = der_signature(&raw, 32).unwrap();
        assert_eq!(&der[..4], &[0x30, 0x26, 0x02, 0x21]);
        assert_eq!(der[4], 0x00);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        assert!(der_signature(&raw[..63], 32).is_err());
    }

    #[test]
    fn ec_points_come_wrapped_or_bare() {
        let point: Vec<u8> = std::iter::once(0x04).chain([7u8; 64]).collect();
        let wrapped = tlv(0x04, &point);
        assert_eq!(uncompressed_point(&wrapped, 32).unwrap(), point.as_slice());
        assert_eq!(uncompressed_point(&point, 32).unwrap(), point.as_slice());
        assert!(uncompressed_point(&point[..40], 32).is_err());
        let mut compressed = point.clone();
        compressed[0] = 0x02;
        assert!(uncompressed_point(&compressed, 32).is_err());
    }
}
