//! Client → server decode → CertRep → client parse, for every supported algorithm.

use super::{ec_key, pkcs_req, pki, ra, requester_key};
use crate::certrep::EmptyContent;
use crate::client::{CertRepOutcome, RequestBuilder, Tamper};
use crate::signed::SignedData;
use crate::{
    CertRep, CertRepStatus, ContentCipher, DigestAlgorithm, FailInfo, MessageType, ScepError,
    ScepOptions, UnverifiedMessage, decode_pki_message, oid,
};

/// Runs one request through the server side and answers SUCCESS; returns the client's view.
fn enroll(
    builder: RequestBuilder<'_>,
    options: &ScepOptions,
) -> (MessageType, ContentCipher, CertRepOutcome) {
    let p = pki();
    let req = builder.build().unwrap();
    let msg = decode_pki_message(req.der(), options).unwrap();
    assert_eq!(msg.transaction_id(), req.transaction_id());
    assert_eq!(msg.sender_nonce(), req.sender_nonce());
    let decrypted = msg.decrypt(ra(), options).unwrap();
    assert_eq!(decrypted.csr, p.req_csr);
    let issued = vec![p.issue_for_requester(), p.ca_cert.clone()];
    let reply = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Success {
            cipher: decrypted.cipher,
            certificates: &issued,
        },
        signing_time: Some(std::time::SystemTime::now()),
    }
    .encode(ra(), options)
    .unwrap();
    let outcome = req
        .parse_reply(&reply, &[&p.ra_cert], requester_key(), options)
        .unwrap();
    if let CertRepOutcome::Success { certificates } = &outcome {
        assert_eq!(
            certificates, &issued,
            "issued certificate first, order kept"
        );
    }
    (msg.message_type(), decrypted.cipher, outcome)
}

#[test]
fn pkcs_req_with_each_aes_size() {
    for cipher in [
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes192Cbc,
        ContentCipher::Aes256Cbc,
    ] {
        let (ty, used, outcome) = enroll(pkcs_req().cipher(cipher), &ScepOptions::STRICT);
        assert_eq!(ty, MessageType::PkcsReq);
        assert_eq!(used, cipher);
        assert!(matches!(outcome, CertRepOutcome::Success { .. }));
    }
}

#[test]
fn pkcs_req_with_sha384_and_sha512() {
    for digest in [DigestAlgorithm::Sha384, DigestAlgorithm::Sha512] {
        let (_, _, outcome) = enroll(pkcs_req().digest(digest), &ScepOptions::STRICT);
        assert!(matches!(outcome, CertRepOutcome::Success { .. }));
    }
}

#[test]
fn renewal_req_signed_by_the_current_certificate() {
    let p = pki();
    let builder =
        RequestBuilder::renewal_req(&p.req_csr, requester_key(), &p.req_issued, &p.ra_cert);
    let req = builder.clone().build().unwrap();
    let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
    assert_eq!(msg.message_type(), MessageType::RenewalReq);
    assert_eq!(msg.signer_certificate(), p.req_issued.as_slice());
    let (_, _, outcome) = enroll(builder, &ScepOptions::STRICT);
    assert!(matches!(outcome, CertRepOutcome::Success { .. }));
}

#[test]
fn legacy_des_and_sha1_round_trip() {
    for cipher in [ContentCipher::DesCbc, ContentCipher::DesEde3Cbc] {
        for digest in [DigestAlgorithm::Sha1, DigestAlgorithm::Sha256] {
            let (_, used, outcome) = enroll(
                pkcs_req().cipher(cipher).digest(digest),
                &ScepOptions::LEGACY,
            );
            assert_eq!(used, cipher);
            assert!(matches!(outcome, CertRepOutcome::Success { .. }));
        }
    }
}

#[test]
fn legacy_reply_uses_sha1_only_for_sha1_requests() {
    let p = pki();
    for (digest, expected) in [
        (DigestAlgorithm::Sha1, oid::SHA1),
        (DigestAlgorithm::Sha256, oid::SHA256),
    ] {
        let req = pkcs_req()
            .cipher(ContentCipher::DesCbc)
            .digest(digest)
            .build()
            .unwrap();
        let msg = decode_pki_message(req.der(), &ScepOptions::LEGACY).unwrap();
        let reply = CertRep {
            reply_to: &msg.reply_to(),
            status: CertRepStatus::Failure(FailInfo::BadRequest),
            signing_time: None,
        }
        .encode(ra(), &ScepOptions::LEGACY)
        .unwrap();
        let sd = SignedData::decode(&reply).unwrap();
        assert_eq!(sd.signers[0].digest_oid, expected.as_bytes());
        let outcome = req
            .parse_reply(&reply, &[&p.ra_cert], requester_key(), &ScepOptions::LEGACY)
            .unwrap();
        assert_eq!(outcome, CertRepOutcome::Failure(FailInfo::BadRequest));
    }
}

#[test]
fn legacy_algorithms_are_refused_without_the_option() {
    // SHA-1: refused when verifying, as badAlg.
    let req = pkcs_req().digest(DigestAlgorithm::Sha1).build().unwrap();
    let err = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap_err();
    assert!(
        matches!(err, ScepError::UnsupportedAlgorithm { .. }),
        "{err}"
    );
    assert_eq!(err.fail_info(), FailInfo::BadAlg);
    // DES: the signature is fine, the envelope's algorithm is refused, as badAlg (not as a
    // decryption failure: the algorithm is public).
    for cipher in [ContentCipher::DesCbc, ContentCipher::DesEde3Cbc] {
        let req = pkcs_req().cipher(cipher).build().unwrap();
        let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
        let err = msg.decrypt(ra(), &ScepOptions::STRICT).unwrap_err();
        assert!(
            matches!(err, ScepError::UnsupportedAlgorithm { .. }),
            "{err}"
        );
        assert_eq!(err.fail_info(), FailInfo::BadAlg);
    }
    // And a SUCCESS reply is not sealed with DES either.
    let req = pkcs_req().build().unwrap();
    let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
    let certs = vec![pki().issue_for_requester()];
    let err = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Success {
            cipher: ContentCipher::DesCbc,
            certificates: &certs,
        },
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap_err();
    assert!(matches!(err, ScepError::UnsupportedAlgorithm { .. }));
}

#[test]
fn failure_and_pending_replies() {
    let p = pki();
    let req = pkcs_req().build().unwrap();
    let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
    for fail_info in [
        FailInfo::BadAlg,
        FailInfo::BadMessageCheck,
        FailInfo::BadRequest,
        FailInfo::BadTime,
        FailInfo::BadCertId,
    ] {
        let reply = CertRep {
            reply_to: &msg.reply_to(),
            status: CertRepStatus::Failure(fail_info),
            signing_time: None,
        }
        .encode(ra(), &ScepOptions::STRICT)
        .unwrap();
        // No pkcsPKIEnvelope in a FAILURE: an empty eContent, which OpenSSL's PKCS7_verify
        // needs.
        let sd = SignedData::decode(&reply).unwrap();
        assert_eq!(sd.econtent.as_deref(), Some(&[][..]));
        assert_eq!(sd.certificates, vec![p.ra_cert.clone()]);
        let outcome = req
            .parse_reply(&reply, &[&p.ra_cert], requester_key(), &ScepOptions::STRICT)
            .unwrap();
        assert_eq!(outcome, CertRepOutcome::Failure(fail_info));

        // The client also reads a FAILURE without any eContent, as other servers send it.
        let absent = CertRep {
            reply_to: &msg.reply_to(),
            status: CertRepStatus::Failure(fail_info),
            signing_time: None,
        }
        .encode_with(ra(), &ScepOptions::STRICT, EmptyContent::Absent)
        .unwrap();
        assert!(SignedData::decode(&absent).unwrap().econtent.is_none());
        let outcome = req
            .parse_reply(
                &absent,
                &[&p.ra_cert],
                requester_key(),
                &ScepOptions::STRICT,
            )
            .unwrap();
        assert_eq!(outcome, CertRepOutcome::Failure(fail_info));
    }
    let reply = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Pending,
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap();
    let outcome = req
        .parse_reply(&reply, &[&p.ra_cert], requester_key(), &ScepOptions::STRICT)
        .unwrap();
    assert_eq!(outcome, CertRepOutcome::Pending);
}

#[test]
fn failure_reply_to_a_message_that_did_not_verify() {
    let p = pki();
    let req = pkcs_req()
        .tamper(Tamper {
            corrupt_signature: true,
            ..Tamper::default()
        })
        .build()
        .unwrap();
    let unverified = UnverifiedMessage::parse(req.der()).unwrap();
    let err = unverified.verify(&ScepOptions::STRICT).unwrap_err();
    let reply = CertRep {
        reply_to: &unverified.reply_to(),
        status: CertRepStatus::Failure(err.fail_info()),
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap();
    let outcome = req
        .parse_reply(&reply, &[&p.ra_cert], requester_key(), &ScepOptions::STRICT)
        .unwrap();
    assert_eq!(outcome, CertRepOutcome::Failure(FailInfo::BadMessageCheck));
    // A SUCCESS cannot be addressed from an unverified message: no requester certificate.
    let certs = vec![p.issue_for_requester()];
    assert!(
        CertRep {
            reply_to: &unverified.reply_to(),
            status: CertRepStatus::Success {
                cipher: ContentCipher::Aes256Cbc,
                certificates: &certs,
            },
            signing_time: None,
        }
        .encode(ra(), &ScepOptions::STRICT)
        .is_err()
    );
}

#[test]
fn ber_indefinite_requests_decode() {
    let (_, _, outcome) = enroll(
        pkcs_req().tamper(Tamper {
            indefinite_ber: true,
            ..Tamper::default()
        }),
        &ScepOptions::STRICT,
    );
    assert!(matches!(outcome, CertRepOutcome::Success { .. }));
    // The BER really is BER.
    let req = pkcs_req()
        .tamper(Tamper {
            indefinite_ber: true,
            ..Tamper::default()
        })
        .build()
        .unwrap();
    assert_eq!(&req.der()[..2], &[0x30, 0x80]);
}

#[test]
fn ecdsa_signers_verify_but_cannot_receive_an_envelope() {
    let p = pki();
    let req = RequestBuilder::pkcs_req(&p.ec_csr, ec_key(), &p.ec_self_signed, &p.ra_cert)
        .build()
        .unwrap();
    let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
    assert_eq!(
        msg.decrypt(ra(), &ScepOptions::STRICT).unwrap().csr,
        p.ec_csr
    );
    let certs = vec![p.issue_for_requester()];
    let err = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Success {
            cipher: ContentCipher::Aes256Cbc,
            certificates: &certs,
        },
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap_err();
    assert_eq!(err.fail_info(), FailInfo::BadAlg);
    // FAILURE needs no envelope, so the EC requester still gets an answer.
    let reply = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Failure(err.fail_info()),
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap();
    let outcome = req
        .parse_reply(&reply, &[&p.ra_cert], ec_key(), &ScepOptions::STRICT)
        .unwrap();
    assert_eq!(outcome, CertRepOutcome::Failure(FailInfo::BadAlg));
}

#[test]
fn unsupported_message_types_decode_for_the_dispatcher_to_refuse() {
    for n in [18, 20, 21, 23, 99] {
        let req = pkcs_req()
            .tamper(Tamper {
                message_type_number: Some(n),
                ..Tamper::default()
            })
            .build()
            .unwrap();
        let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
        // What a dispatcher does: an allow-list, and the default arm refuses.
        let answer = match msg.message_type() {
            MessageType::PkcsReq | MessageType::RenewalReq | MessageType::GetCrl => None,
            _ => Some(FailInfo::BadRequest),
        };
        assert_eq!(msg.message_type(), MessageType::Unsupported(n));
        assert_eq!(answer, Some(FailInfo::BadRequest));
    }
}

#[test]
fn client_refuses_replies_to_other_requests() {
    let p = pki();
    let req = pkcs_req().build().unwrap();
    let other = pkcs_req().build().unwrap();
    let other_msg = decode_pki_message(other.der(), &ScepOptions::STRICT).unwrap();
    // Answering `other` (other nonce, other transaction) is not an answer to `req`.
    let reply = CertRep {
        reply_to: &other_msg.reply_to(),
        status: CertRepStatus::Failure(FailInfo::BadRequest),
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap();
    let err = req
        .parse_reply(&reply, &[&p.ra_cert], requester_key(), &ScepOptions::STRICT)
        .unwrap_err();
    assert!(matches!(err, ScepError::ReplyMismatch(_)), "{err}");
    // Same transaction, other nonce.
    let same_tx = pkcs_req()
        .transaction_id(req.transaction_id().clone())
        .build()
        .unwrap();
    let msg = decode_pki_message(same_tx.der(), &ScepOptions::STRICT).unwrap();
    let reply = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Pending,
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap();
    let err = req
        .parse_reply(&reply, &[&p.ra_cert], requester_key(), &ScepOptions::STRICT)
        .unwrap_err();
    assert!(matches!(
        err,
        ScepError::ReplyMismatch(crate::ScepAttribute::RecipientNonce)
    ));
    // A reply signed by the RA but checked against another trusted signer.
    let msg = decode_pki_message(req.der(), &ScepOptions::STRICT).unwrap();
    let reply = CertRep {
        reply_to: &msg.reply_to(),
        status: CertRepStatus::Pending,
        signing_time: None,
    }
    .encode(ra(), &ScepOptions::STRICT)
    .unwrap();
    let err = req
        .parse_reply(
            &reply,
            &[&p.other_cert],
            requester_key(),
            &ScepOptions::STRICT,
        )
        .unwrap_err();
    assert!(matches!(err, ScepError::UntrustedSigner), "{err}");
    // A request is not a reply.
    let err = req
        .parse_reply(
            req.der(),
            &[&p.req_self_signed],
            requester_key(),
            &ScepOptions::STRICT,
        )
        .unwrap_err();
    assert!(matches!(err, ScepError::UnexpectedMessageType(19)), "{err}");
}

#[test]
fn certs_only_messages_keep_order() {
    let p = pki();
    let msg = crate::get_ca_cert_response(&p.ra_cert, &[&p.ca_cert]).unwrap();
    let parsed = crate::parse_certs_only(&msg).unwrap();
    assert_eq!(
        parsed.certificates,
        vec![p.ra_cert.clone(), p.ca_cert.clone()]
    );
    assert!(parsed.crls.is_empty());
    let reversed = crate::certs_only(&[&p.ca_cert, &p.ra_cert]).unwrap();
    let parsed = crate::parse_certs_only(&reversed).unwrap();
    assert_eq!(
        parsed.certificates,
        vec![p.ca_cert.clone(), p.ra_cert.clone()]
    );
    let crl = p.crl();
    let parsed = crate::parse_certs_only(&crate::crl_only(&crl).unwrap()).unwrap();
    assert_eq!(parsed.crls, vec![crl]);
    assert!(parsed.certificates.is_empty());
    assert!(crate::certs_only::<&[u8]>(&[]).is_err());
    assert!(crate::certs_only(&[&b"not a cert"[..]]).is_err());
}

#[test]
fn ra_identity_checks_its_key() {
    let p = pki();
    assert!(crate::RaIdentity::from_pkcs8(&p.ra_cert, &p.other_key).is_err());
    assert!(crate::RaIdentity::from_pkcs8(&p.ra_cert, &p.ec_key).is_err());
    assert!(crate::RaIdentity::from_pkcs8(b"junk", &p.ra_key).is_err());
    assert_eq!(ra().certificate(), p.ra_cert.as_slice());
}

#[test]
fn identifier_variants_and_unsorted_attributes_are_accepted() {
    let p = pki();
    assert!(
        ra().cert.subject_key_id.is_some(),
        "the test RA certificate has an SKI"
    );
    // RenewalReq: the issued certificate has an SKI, so it can be named by it.
    for t in [
        Tamper {
            recipient_by_key_id: true,
            ..Tamper::default()
        },
        Tamper {
            signer_by_key_id: true,
            ..Tamper::default()
        },
        Tamper {
            unsorted_attributes: true,
            ..Tamper::default()
        },
    ] {
        let builder =
            RequestBuilder::renewal_req(&p.req_csr, requester_key(), &p.req_issued, &p.ra_cert)
                .tamper(t.clone());
        let req = builder.build().unwrap();
        let msg = decode_pki_message(req.der(), &ScepOptions::STRICT)
            .unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert_eq!(
            msg.decrypt(ra(), &ScepOptions::STRICT).unwrap().csr,
            p.req_csr
        );
    }
}
