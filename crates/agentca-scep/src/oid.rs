//! The object identifiers SCEP messages use, and a helper to name an OID in an error.

use const_oid::ObjectIdentifier;

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

// RFC 5652 content types.
pub(crate) const DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.1");
pub(crate) const SIGNED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.2");
pub(crate) const ENVELOPED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.3");

// RFC 5652 §11 / PKCS #9 attributes.
pub(crate) const CONTENT_TYPE: ObjectIdentifier = oid("1.2.840.113549.1.9.3");
pub(crate) const MESSAGE_DIGEST: ObjectIdentifier = oid("1.2.840.113549.1.9.4");
pub(crate) const SIGNING_TIME: ObjectIdentifier = oid("1.2.840.113549.1.9.5");

// RFC 8894 §3.2.1 SCEP attributes.
pub(crate) const SCEP_MESSAGE_TYPE: ObjectIdentifier = oid("2.16.840.1.113733.1.9.2");
pub(crate) const SCEP_PKI_STATUS: ObjectIdentifier = oid("2.16.840.1.113733.1.9.3");
pub(crate) const SCEP_FAIL_INFO: ObjectIdentifier = oid("2.16.840.1.113733.1.9.4");
pub(crate) const SCEP_SENDER_NONCE: ObjectIdentifier = oid("2.16.840.1.113733.1.9.5");
pub(crate) const SCEP_RECIPIENT_NONCE: ObjectIdentifier = oid("2.16.840.1.113733.1.9.6");
pub(crate) const SCEP_TRANSACTION_ID: ObjectIdentifier = oid("2.16.840.1.113733.1.9.7");

// Digests.
pub(crate) const SHA1: ObjectIdentifier = oid("1.3.14.3.2.26");
pub(crate) const SHA256: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.1");
pub(crate) const SHA384: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.2");
pub(crate) const SHA512: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.3");

// Public keys and signatures.
pub(crate) const RSA_ENCRYPTION: ObjectIdentifier = oid("1.2.840.113549.1.1.1");
pub(crate) const SHA1_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.5");
pub(crate) const SHA256_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.11");
pub(crate) const SHA384_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.12");
pub(crate) const SHA512_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.13");
pub(crate) const EC_PUBLIC_KEY: ObjectIdentifier = oid("1.2.840.10045.2.1");
pub(crate) const ECDSA_WITH_SHA1: ObjectIdentifier = oid("1.2.840.10045.4.1");
pub(crate) const ECDSA_WITH_SHA256: ObjectIdentifier = oid("1.2.840.10045.4.3.2");
pub(crate) const ECDSA_WITH_SHA384: ObjectIdentifier = oid("1.2.840.10045.4.3.3");
pub(crate) const ECDSA_WITH_SHA512: ObjectIdentifier = oid("1.2.840.10045.4.3.4");
pub(crate) const SECP256R1: ObjectIdentifier = oid("1.2.840.10045.3.1.7");
pub(crate) const SECP384R1: ObjectIdentifier = oid("1.3.132.0.34");

// Content encryption.
pub(crate) const DES_CBC: ObjectIdentifier = oid("1.3.14.3.2.7");
pub(crate) const DES_EDE3_CBC: ObjectIdentifier = oid("1.2.840.113549.3.7");
pub(crate) const AES128_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.2");
pub(crate) const AES192_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.22");
pub(crate) const AES256_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.42");

/// Whether the DER content octets of an OBJECT IDENTIFIER are `oid`.
pub(crate) fn is(content: &[u8], oid: &ObjectIdentifier) -> bool {
    content == oid.as_bytes()
}

/// A dotted rendering of OID content octets for error messages (hex when not a valid OID).
pub(crate) fn display(content: &[u8]) -> String {
    match ObjectIdentifier::from_bytes(content) {
        Ok(oid) => oid.to_string(),
        Err(_) => format!("invalid OID {}", hex_string(content)),
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_oids() {
        assert_eq!(display(SHA256.as_bytes()), "2.16.840.1.101.3.4.2.1");
        assert!(display(&[0x80]).starts_with("invalid OID"));
        assert!(is(DATA.as_bytes(), &DATA));
        assert!(!is(DATA.as_bytes(), &SIGNED_DATA));
    }
}
