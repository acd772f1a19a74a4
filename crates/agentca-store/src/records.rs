//! What the store holds. Plain data: the core decides, the store only records.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A certificate serial number: 16 bytes, the first in `1..=0x7f`, so the DER INTEGER is
/// positive, minimal and exactly 16 octets long.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial([u8; Serial::LEN]);

impl Serial {
    /// Length in bytes.
    pub const LEN: usize = 16;

    /// Accepts bytes that form a valid agentca serial.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Option<Self> {
        match bytes[0] {
            1..=0x7f => Some(Self(bytes)),
            _ => None,
        }
    }

    /// The big-endian bytes (also the DER INTEGER contents).
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// Lowercase hex, the form printed and accepted by the CLI.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.to_hex())
    }
}

/// A serial that is not 32 hex digits of a valid agentca serial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a serial is 32 lowercase hex digits (16 bytes, first byte 01..7f)")]
pub struct InvalidSerial;

impl FromStr for Serial {
    type Err = InvalidSerial;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Lowercase only: serials are printed lowercase, and one spelling per serial keeps
        // audit and log searches exact.
        if s.len() != Self::LEN * 2 || s.bytes().any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(InvalidSerial);
        }
        let mut bytes = [0u8; Self::LEN];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| InvalidSerial)?;
        Self::from_bytes(bytes).ok_or(InvalidSerial)
    }
}

impl Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// RFC 5280 §5.3.1 revocation reasons. `certificateHold` (6) is deliberately absent: a hold
/// is not a revocation and the Baseline Requirements forbid it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum RevocationReason {
    /// 0
    Unspecified,
    /// 1
    KeyCompromise,
    /// 2
    CaCompromise,
    /// 3
    AffiliationChanged,
    /// 4
    Superseded,
    /// 5
    CessationOfOperation,
    /// 8
    RemoveFromCrl,
    /// 9
    PrivilegeWithdrawn,
    /// 10
    AaCompromise,
}

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [Self; 9] = [
        Self::Unspecified,
        Self::KeyCompromise,
        Self::CaCompromise,
        Self::AffiliationChanged,
        Self::Superseded,
        Self::CessationOfOperation,
        Self::RemoveFromCrl,
        Self::PrivilegeWithdrawn,
        Self::AaCompromise,
    ];

    /// The `CRLReason` code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::CaCompromise => 2,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
            Self::RemoveFromCrl => 8,
            Self::PrivilegeWithdrawn => 9,
            Self::AaCompromise => 10,
        }
    }

    /// The reason with this code, if agentca accepts it.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The RFC 5280 name (`keyCompromise`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "keyCompromise",
            Self::CaCompromise => "cACompromise",
            Self::AffiliationChanged => "affiliationChanged",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessationOfOperation",
            Self::RemoveFromCrl => "removeFromCRL",
            Self::PrivilegeWithdrawn => "privilegeWithdrawn",
            Self::AaCompromise => "aACompromise",
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an accepted RFC 5280 reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown revocation reason {0:?} (use an RFC 5280 name such as keyCompromise, superseded, cessationOfOperation)"
)]
pub struct InvalidReason(pub String);

impl FromStr for RevocationReason {
    type Err = InvalidReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| InvalidReason(s.to_owned()))
    }
}

/// How a certificate was requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EnrollmentMethod {
    /// RFC 8555.
    Acme,
    /// RFC 8894.
    Scep,
    /// `agentca issue` by an operator.
    Cli,
    /// The CA's own service certificates (HTTPS listener, rotated OCSP responder); never a
    /// policy choice.
    Internal,
}

impl fmt::Display for EnrollmentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Acme => "acme",
            Self::Scep => "scep",
            Self::Cli => "cli",
            Self::Internal => "internal",
        })
    }
}

/// A registered agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Canonical SPIFFE ID.
    pub id: String,
    /// Who is responsible for the agent.
    pub owner: Option<String>,
    /// Explicit policy name, if the operator chose one.
    pub policy: Option<String>,
    /// Extra DNS names pre-authorized for this agent.
    pub dns: Vec<String>,
    /// A disabled agent cannot be issued to.
    pub disabled: bool,
    /// When it was added.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The operator's request that the certificates it holds be renewed early, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_renewal: Option<EarlyRenewal>,
}

/// An operator's request that an agent renew the certificates it holds now instead of at their
/// usual time (RFC 9773 lets the CA move a renewal window): every certificate issued to the
/// agent before `advised_at` is offered a window that opens then and closes `within` later, so
/// that a cohort renews spread over that span. Certificates issued afterwards are its
/// replacements and keep their usual window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyRenewal {
    /// When the operator asked; the certificates issued before it are the ones to replace.
    #[serde(with = "time::serde::rfc3339")]
    pub advised_at: OffsetDateTime,
    /// How long after `advised_at` the window closes, in seconds.
    pub within_seconds: u32,
}

impl EarlyRenewal {
    /// The window's length.
    pub fn within(&self) -> time::Duration {
        time::Duration::seconds(i64::from(self.within_seconds))
    }

    /// Whether it asks that this certificate be replaced. Issuance times are whole seconds
    /// (rounded down) and `advised_at` is not, so a certificate issued in the same second
    /// just after the request still counts: it is asked once more rather than a certificate
    /// issued just before being missed.
    pub fn applies_to(&self, certificate: &CertificateRecord) -> bool {
        certificate.issued_at < self.advised_at
    }
}

/// What the CA is about to sign, recorded before the signature (Boulder's issuance cycle):
/// a crash after signing leaves a serial that can still be found, reconciled and revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuanceIntent {
    /// The reserved serial.
    pub serial: Serial,
    /// The agent the certificate is for.
    pub agent_id: String,
    /// How it was requested.
    pub method: EnrollmentMethod,
    /// Planned validity start.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// Planned validity end.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of the subject public key info, hex.
    pub key_sha256: String,
    /// When the reservation was made.
    #[serde(with = "time::serde::rfc3339")]
    pub reserved_at: OffsetDateTime,
}

/// A revocation: when and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When the CA recorded it.
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 reason.
    pub reason: RevocationReason,
}

/// An issued certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// The intent it fulfils (serial, agent, validity, method, key hash).
    pub intent: IssuanceIntent,
    /// The certificate, DER. Backends keep it apart from the metadata (it is most of the
    /// bytes and is read far less often).
    #[serde(skip)]
    pub der: Vec<u8>,
    /// When it was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// Set once revoked; never cleared.
    pub revocation: Option<Revocation>,
}

/// A serial's state in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SerialEntry {
    /// Reserved, intent recorded, certificate not (yet) stored.
    Reserved(IssuanceIntent),
    /// Certificate stored.
    Issued(CertificateRecord),
}

/// A revoked certificate as the CRL needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevokedEntry {
    /// The serial.
    pub serial: Serial,
    /// When and why.
    pub revocation: Revocation,
    /// When the certificate expires (entries stay on CRLs until after that).
    pub not_after: OffsetDateTime,
}

/// What an enrollment token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TokenKind {
    /// ACME External Account Binding key.
    Acme,
    /// SCEP one-time challenge password.
    Scep,
}

/// A one-time enrollment token bound to an agent. The secret itself is stored only in a form
/// the front end needs to check it (hashed for SCEP; sealed for ACME, whose HMAC key must be
/// usable), never in clear.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public identifier (the EAB key id; for SCEP a lookup id).
    pub id: String,
    /// ACME or SCEP.
    pub kind: TokenKind,
    /// The agent it enrolls.
    pub agent_id: String,
    /// Verifier material (hash or sealed key), hex.
    pub verifier: String,
    /// Expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was used, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub consumed_at: Option<OffsetDateTime>,
}

/// The CRL number high-water mark and the last `thisUpdate`, so neither goes backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlState {
    /// The last number handed out.
    pub number: u64,
    /// The `thisUpdate` of that CRL.
    #[serde(with = "time::serde::rfc3339")]
    pub this_update: OffsetDateTime,
}

/// Which certificates a listing wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateFilter {
    /// Only this agent's.
    pub agent_id: Option<String>,
}
