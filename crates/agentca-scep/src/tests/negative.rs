//! Requests that are wrong in one way each, and the typed error each gets.

use super::{pkcs_req, pki};
use crate::client::{Tamper, to_indefinite_ber};
use crate::{
    FailInfo, ScepAttribute, ScepError, ScepOptions, UnverifiedMessage, decode_pki_message,
};

fn tampered(t: Tamper) -> Vec<u8> {
    pkcs_req().tamper(t).build().unwrap().der().to_vec()
}

fn decode(der: &[u8]) -> Result<crate::PkiMessage, ScepError> {
    decode_pki_message(der, &ScepOptions::STRICT)
}

#[test]
fn wrong_message_digest() {
    let err = decode(&tampered(Tamper {
        wrong_message_digest: true,
        ..Tamper::default()
    }))
    .unwrap_err();
    assert!(matches!(err, ScepError::DigestMismatch), "{err}");
    assert_eq!(err.fail_info(), FailInfo::BadMessageCheck);
}

#[test]
fn corrupt_signature() {
    let err = decode(&tampered(Tamper {
        corrupt_signature: true,
        ..Tamper::default()
    }))
    .unwrap_err();
    assert!(matches!(err, ScepError::BadSignature), "{err}");
    assert_eq!(err.fail_info(), FailInfo::BadMessageCheck);
}

#[test]
fn missing_scep_attributes_are_typed_errors() {
    for (t, attribute) in [
        (
            Tamper {
                omit_message_type: true,
                ..Tamper::default()
            },
            ScepAttribute::MessageType,
        ),
        (
            Tamper {
                omit_transaction_id: true,
                ..Tamper::default()
            },
            ScepAttribute::TransactionId,
        ),
        (
            Tamper {
                omit_sender_nonce: true,
                ..Tamper::default()
            },
            ScepAttribute::SenderNonce,
        ),
    ] {
        let err = UnverifiedMessage::parse(&tampered(t)).unwrap_err();
        assert!(
            matches!(err, ScepError::MissingAttribute(a) if a == attribute),
            "{err}"
        );
        assert_eq!(err.fail_info(), FailInfo::BadRequest);
    }
}

#[test]
fn sender_nonce_must_be_16_bytes() {
    for len in [0usize, 8, 15, 17, 32] {
        let err = UnverifiedMessage::parse(&tampered(Tamper {
            sender_nonce_bytes: Some(vec![0x5a; len]),
            ..Tamper::default()
        }))
        .unwrap_err();
        assert!(
            matches!(
                err,
                ScepError::InvalidAttribute {
                    attribute: ScepAttribute::SenderNonce,
                    ..
                }
            ),
            "{len}: {err}"
        );
    }
}

#[test]
fn content_type_attribute_is_required() {
    let err = decode(&tampered(Tamper {
        omit_content_type: true,
        ..Tamper::default()
    }))
    .unwrap_err();
    assert!(
        matches!(err, ScepError::MissingAttribute(ScepAttribute::ContentType)),
        "{err}"
    );
}

#[test]
fn exactly_one_signer_info() {
    let err = UnverifiedMessage::parse(&tampered(Tamper {
        duplicate_signer_info: true,
        ..Tamper::default()
    }))
    .unwrap_err();
    assert!(matches!(err, ScepError::SignerCount(2)), "{err}");
}

#[test]
fn signer_certificate_must_be_in_the_message() {
    let err = decode(&tampered(Tamper {
        omit_signer_certificate: true,
        ..Tamper::default()
    }))
    .unwrap_err();
    assert!(matches!(err, ScepError::SignerCertificateNotFound), "{err}");
    // Other certificates do not stand in for it.
    let err = decode(&tampered(Tamper {
        omit_signer_certificate: true,
        extra_certificates: vec![pki().other_cert.clone(), pki().ra_cert.clone()],
        ..Tamper::default()
    }))
    .unwrap_err();
    assert!(matches!(err, ScepError::SignerCertificateNotFound), "{err}");
}

#[test]
fn signer_certificate_with_another_key() {
    // A certificate with the signer's issuer and serial number but another key: the
    // signature must not verify under it.
    let p = pki();
    let real = crate::cert::CertInfo::parse(&p.req_self_signed).unwrap();
    let other_key = rcgen::KeyPair::try_from(p.other_key.as_slice()).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "requester");
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&real.serial));
    let forged = params.self_signed(&other_key).unwrap().der().to_vec();
    let isn = real.issuer_and_serial();
    let isn = crate::der::single(&isn, crate::der::SEQUENCE, "isn").unwrap();
    assert!(
        crate::cert::CertInfo::parse(&forged)
            .unwrap()
            .matches_issuer_serial(isn.content)
    );
    let err = decode(&tampered(Tamper {
        omit_signer_certificate: true,
        extra_certificates: vec![forged],
        ..Tamper::default()
    }))
    .unwrap_err();
    assert!(matches!(err, ScepError::BadSignature), "{err}");
    // And the builder refuses a key that does not match the signer certificate.
    let err = crate::client::RequestBuilder::pkcs_req(
        &p.req_csr,
        super::requester_key(),
        &p.other_cert,
        &p.ra_cert,
    )
    .build()
    .unwrap_err();
    assert!(matches!(err, ScepError::Key(_)));
}

#[test]
fn not_a_pki_message() {
    for input in [
        &b""[..],
        b"\x30",
        b"hello world",
        &[0x30, 0x03, 0x02, 0x01, 0x01],
    ] {
        assert!(UnverifiedMessage::parse(input).is_err(), "{input:?}");
    }
    // A certs-only message parses as SignedData but has no signer.
    let certs = crate::certs_only(&[&pki().ra_cert]).unwrap();
    assert!(matches!(
        UnverifiedMessage::parse(&certs),
        Err(ScepError::SignerCount(0))
    ));
    // An EnvelopedData is not a SignedData.
    let env = {
        let ra_cert = crate::cert::CertInfo::parse(&pki().ra_cert).unwrap();
        crate::envelope::seal(
            &pki().req_csr,
            &ra_cert,
            crate::ContentCipher::Aes128Cbc,
            &Default::default(),
        )
        .unwrap()
    };
    assert!(matches!(
        UnverifiedMessage::parse(&env),
        Err(ScepError::UnexpectedContentType { .. })
    ));
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let mut big = tampered(Tamper::default());
    big.resize(crate::MAX_MESSAGE_LEN + 1, 0);
    assert!(matches!(
        UnverifiedMessage::parse(&big),
        Err(ScepError::TooLarge { .. })
    ));
}

#[test]
fn deep_nesting_is_refused() {
    // A ContentInfo whose content nests 1000 indefinite-length SEQUENCEs.
    let mut v = vec![0x30, 0x80, 0x06, 0x09];
    v.extend_from_slice(crate::oid::SIGNED_DATA.as_bytes());
    v.extend_from_slice(&[0xa0, 0x80]);
    for _ in 0..1000 {
        v.extend_from_slice(&[0x30, 0x80]);
    }
    for _ in 0..1002 {
        v.extend_from_slice(&[0, 0]);
    }
    assert!(matches!(
        UnverifiedMessage::parse(&v),
        Err(ScepError::TooDeep { .. })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut der = tampered(Tamper::default());
    der.push(0);
    assert!(UnverifiedMessage::parse(&der).is_err());
    let mut ber = to_indefinite_ber(&tampered(Tamper::default())).unwrap();
    ber.extend_from_slice(&[0, 0]);
    assert!(UnverifiedMessage::parse(&ber).is_err());
}
