//! One-time enrollment tokens bound to one agent (design §4): ACME External Account Binding
//! keys and SCEP challenge passwords, created by `agentca token create`.
//!
//! Secrets never reach the store in clear (security-test-plan.md OPS-5):
//! - a SCEP challenge is 256 random bits; the store keeps its SHA-256 (a fast hash is enough for
//!   a secret with that much entropy), and the token's id is derived from that hash so the SCEP
//!   front end can find it from the challenge alone;
//! - an EAB HMAC key must stay usable to check the binding's MAC, so it is sealed with
//!   AES-256-GCM under a key derived (HKDF-SHA256) from the CA's token-sealing secret,
//!   `token-seal.key` in the data directory, which is encrypted at rest like the CA keys.
//!
//! EAB key ids are URL-safe base64 of 128 random bits (no `:`, which uacme uses as a
//! separator); HMAC keys are 256 random bits as unpadded base64url (lego and uacme reject
//! padding). SCEP challenges are 256 random bits in lowercase hex: clients put the challenge
//! into the CSR's challengePassword as they like, certmonger always as a PrintableString,
//! whose alphabet has no `_` (X.680 §41.4), so a base64url challenge would make its CSR
//! invalid DER.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::store::{TokenKind, TokenRecord};

/// How long a token is valid unless the operator says otherwise.
pub const DEFAULT_TTL: Duration = Duration::hours(24);
/// The longest validity a token may be given.
pub const MAX_TTL: Duration = Duration::days(30);

/// A token as created: the secret is shown once, to the operator, and never stored.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    /// The stored record (no secret in it).
    pub record: TokenRecord,
    /// ACME: the HMAC key (unpadded base64url); SCEP: the challenge password.
    pub secret: Zeroizing<String>,
}

/// Seals and opens EAB HMAC keys, and derives the other keys every node of a CA must share.
///
/// The token-sealing secret is the one secret every node has from its copy of the data
/// directory, so keys that nodes must agree on without talking to each other are derived from
/// it, each with its own HKDF label.
pub struct TokenSealer {
    key: LessSafeKey,
    nonce_key: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSealer([secret])")
    }
}

impl TokenSealer {
    /// Derives the sealing key from the token-sealing secret (any high-entropy bytes).
    pub fn from_secret(secret: &[u8]) -> Result<Self> {
        struct Len;
        impl aws_lc_rs::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = Salt::new(HKDF_SHA256, b"agentca token seal v1").extract(secret);
        let derive = |label: &[u8]| -> Result<Zeroizing<[u8; 32]>> {
            let mut key = Zeroizing::new([0u8; 32]);
            prk.expand(&[label], Len)
                .and_then(|okm| okm.fill(key.as_mut()))
                .map_err(|_| Error::Unreachable("HKDF output of 32 bytes"))?;
            Ok(key)
        };
        let key = UnboundKey::new(&AES_256_GCM, derive(b"eab-hmac-key")?.as_ref())
            .map_err(|_| Error::Unreachable("AES-256 key of 32 bytes"))?;
        let nonce_key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            derive(b"acme-nonce-mac")?.as_ref(),
        );
        Ok(Self {
            key: LessSafeKey::new(key),
            nonce_key,
        })
    }

    /// The key that authenticates ACME nonces, the same on every node of the CA (so a nonce
    /// issued by one node is accepted by another).
    pub fn acme_nonce_key(&self) -> &aws_lc_rs::hmac::Key {
        &self.nonce_key
    }

    fn seal(&self, plaintext: &[u8], binding: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        random(&mut nonce)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding.as_bytes()),
                &mut buf,
            )
            .map_err(|_| Error::Signing("sealing a token key failed".into()))?;
        Ok(hex::encode([&nonce[..], &buf].concat()))
    }

    /// Opens a sealed EAB HMAC key of `record`.
    pub fn open(&self, record: &TokenRecord) -> Result<Zeroizing<Vec<u8>>> {
        let sealed = hex::decode(&record.verifier)
            .map_err(|_| Error::Audit(format!("token {} has a corrupt verifier", record.id)))?;
        if sealed.len() <= NONCE_LEN {
            return Err(Error::Audit(format!(
                "token {} has a corrupt verifier",
                record.id
            )));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| Error::Unreachable("nonce of NONCE_LEN bytes"))?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(binding(record).as_bytes()), &mut buf)
            .map_err(|_| Error::KeyFile {
                path: "token-seal.key".into(),
                reason: format!(
                    "token {} does not open with this CA's token-sealing key",
                    record.id
                ),
            })?
            .to_vec();
        Ok(Zeroizing::new(plain))
    }
}

/// Binds a sealed key to its token: a sealed key moved to another token or agent fails to open.
fn binding(record: &TokenRecord) -> String {
    format!("{}\n{}", record.id, record.agent_id)
}

fn random(buf: &mut [u8]) -> Result<()> {
    aws_lc_rs::rand::fill(buf)
        .map_err(|_| Error::Signing("the system random number generator failed".into()))
}

/// The store id of the SCEP token whose challenge is `challenge`.
pub fn scep_token_id(challenge: &str) -> String {
    let hash = Sha256::digest(challenge.as_bytes());
    format!("scep-{}", hex::encode(&hash[..16]))
}

/// Whether `challenge` is the one `record` was created with (constant time).
pub fn scep_challenge_matches(record: &TokenRecord, challenge: &str) -> bool {
    use subtle::ConstantTimeEq;
    let hash = hex::encode(Sha256::digest(challenge.as_bytes()));
    record.kind == TokenKind::Scep && bool::from(hash.as_bytes().ct_eq(record.verifier.as_bytes()))
}

/// Random bytes whose base64url form does not start with `-` or `_`: a key id or secret that
/// starts with `-` is taken for an option by certbot's, lego's and scepclient's argument
/// parsers. Redrawing when the first byte is 0xf8 or more costs 0.05 bits of 128 or 256.
fn random_unhyphenated(out: &mut [u8]) -> Result<()> {
    loop {
        random(out)?;
        if out.first().is_none_or(|b| *b < 0xf8) {
            return Ok(());
        }
    }
}

/// Makes a new token for `agent_id` (which the caller has checked exists and is enabled).
pub fn new_token(
    kind: TokenKind,
    agent_id: &str,
    ttl: Option<Duration>,
    sealer: Option<&TokenSealer>,
    now: OffsetDateTime,
) -> Result<CreatedToken> {
    let ttl = ttl.unwrap_or(DEFAULT_TTL);
    if ttl < Duration::minutes(1) || ttl > MAX_TTL {
        return Err(Error::InvalidArgument(
            "--ttl of a token is 1m to 30d".into(),
        ));
    }
    let now = crate::profile::whole_seconds(now);
    let mut secret_bytes = Zeroizing::new([0u8; 32]);
    random_unhyphenated(secret_bytes.as_mut())?;
    let secret = Zeroizing::new(match kind {
        TokenKind::Scep => hex::encode(secret_bytes.as_ref()),
        _ => URL_SAFE_NO_PAD.encode(secret_bytes.as_ref()),
    });
    let mut record = TokenRecord {
        id: String::new(),
        kind,
        agent_id: agent_id.to_owned(),
        verifier: String::new(),
        expires_at: now + ttl,
        created_at: now,
        consumed_at: None,
    };
    match kind {
        TokenKind::Acme => {
            let mut kid = [0u8; 16];
            random_unhyphenated(&mut kid)?;
            record.id = URL_SAFE_NO_PAD.encode(kid);
            let sealer = sealer.ok_or(Error::Unreachable("ACME tokens need the sealer"))?;
            record.verifier = sealer.seal(secret_bytes.as_ref(), &binding(&record))?;
        }
        TokenKind::Scep => {
            record.id = scep_token_id(&secret);
            record.verifier = hex::encode(Sha256::digest(secret.as_bytes()));
        }
        _ => return Err(Error::InvalidArgument("unknown token kind".into())),
    }
    Ok(CreatedToken { record, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> TokenSealer {
        TokenSealer::from_secret(&[7u8; 64]).unwrap()
    }

    #[test]
    fn acme_tokens_seal_their_hmac_key() {
        let s = sealer();
        let t = new_token(
            TokenKind::Acme,
            "spiffe://example.org/agent/a",
            None,
            Some(&s),
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(t.record.id.len(), 22);
        assert!(!t.record.id.starts_with(['-', '_']) && !t.secret.starts_with(['-', '_']));
        assert!(!t.record.id.contains(':') && !t.record.id.contains('='));
        assert_eq!(t.secret.len(), 43);
        assert!(!t.secret.contains('='));
        // The store never sees the key.
        let key = URL_SAFE_NO_PAD.decode(t.secret.as_bytes()).unwrap();
        assert!(!t.record.verifier.contains(&hex::encode(&key)));
        assert_eq!(s.open(&t.record).unwrap().as_slice(), key.as_slice());
        // Moved to another agent or another id, the sealed key does not open.
        let mut moved = t.record.clone();
        moved.agent_id = "spiffe://example.org/agent/b".into();
        assert!(s.open(&moved).is_err());
        let mut renamed = t.record.clone();
        renamed.id = "other".into();
        assert!(s.open(&renamed).is_err());
        // Another CA's sealer cannot open it.
        assert!(
            TokenSealer::from_secret(&[8u8; 64])
                .unwrap()
                .open(&t.record)
                .is_err()
        );
    }

    #[test]
    fn scep_tokens_keep_only_a_hash() {
        let t = new_token(
            TokenKind::Scep,
            "spiffe://example.org/agent/a",
            Some(Duration::hours(1)),
            None,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(t.record.id, scep_token_id(&t.secret));
        // 256 bits in characters every ASN.1 string type of a challengePassword can carry.
        assert_eq!(t.secret.len(), 64);
        assert!(
            t.secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(!t.record.verifier.contains(t.secret.as_str()));
        assert!(scep_challenge_matches(&t.record, &t.secret));
        assert!(!scep_challenge_matches(&t.record, "guess"));
        assert_eq!(
            t.record.expires_at - t.record.created_at,
            Duration::hours(1)
        );
    }

    #[test]
    fn ttl_is_bounded() {
        for ttl in [Duration::seconds(10), Duration::days(31)] {
            assert!(
                new_token(
                    TokenKind::Scep,
                    "x",
                    Some(ttl),
                    None,
                    OffsetDateTime::now_utc()
                )
                .is_err()
            );
        }
    }
}
