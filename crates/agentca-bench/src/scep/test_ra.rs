//! A small SCEP server for the tests, built on agentca's own SCEP message layer the way
//! agentca's front end uses it: an RSA RA next to an ECDSA CA (GetCACert as a certs-only
//! message, RA first), single-use challenges, AES only. Switches: whether POST is advertised,
//! and whether serials repeat (a CA with a racy counter).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use agentca_core::csr::CertificateRequest;
use agentca_scep::{
    CertRep, CertRepStatus, FailInfo, RaIdentity, ScepOptions, UnverifiedMessage,
    decode_message_param,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_RSA_SHA256, RsaKeySize, SerialNumber, SubjectPublicKeyInfo,
};

/// How the server behaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Behaviour {
    /// Advertise POSTPKIOperation (otherwise PKIOperation is GET only, POST gets 405).
    pub(crate) post: bool,
    /// Give every serial to two certificates in a row.
    pub(crate) repeat_serials: bool,
}

struct State {
    behaviour: Behaviour,
    ra: RaIdentity,
    ca_issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
    challenges: Mutex<HashSet<String>>,
    issued: AtomicU64,
}

pub(crate) struct TestRa {
    pub(crate) url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestRa {
    /// A server that accepts each of `challenges` once.
    pub(crate) fn start(behaviour: Behaviour, challenges: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
        let ca_issuer = Issuer::new(ca_params, ca_key);

        let ra_key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
        let mut ra_params = CertificateParams::default();
        ra_params
            .distinguished_name
            .push(DnType::CommonName, "test RA");
        ra_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let ra_der = ra_params
            .signed_by(&ra_key, &ca_issuer)
            .unwrap()
            .der()
            .to_vec();
        let ra = RaIdentity::from_pkcs8(&ra_der, &ra_key.serialize_der()).unwrap();

        let state = Arc::new(State {
            behaviour,
            ra,
            ca_issuer,
            ca_der,
            challenges: Mutex::new(challenges.iter().map(|c| (*c).to_owned()).collect()),
            issued: AtomicU64::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/scep", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(listener, state, stopped));
        });
        Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TestRa {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let operation = query_value(&query, "operation").unwrap_or("");
    let post = *req.method() == Method::POST;
    let message = match (operation, post) {
        ("GetCACaps", false) => {
            let caps = if state.behaviour.post {
                "AES\nPOSTPKIOperation\nRenewal\nSHA-256\nSCEPStandard\n"
            } else {
                "AES\nSHA-256\n"
            };
            return Ok(reply(StatusCode::OK, "text/plain", caps.into()));
        }
        ("GetCACert", false) => {
            let body = agentca_scep::get_ca_cert_response(state.ra.certificate(), &[&state.ca_der])
                .unwrap();
            return Ok(reply(StatusCode::OK, "application/x-x509-ca-ra-cert", body));
        }
        ("PKIOperation", true) if state.behaviour.post => match req.into_body().collect().await {
            Ok(body) => body.to_bytes().to_vec(),
            Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", Vec::new())),
        },
        ("PKIOperation", false) => match query_value(&query, "message").map(decode_message_param) {
            Some(Ok(der)) => der,
            _ => return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", Vec::new())),
        },
        ("PKIOperation", true) => {
            return Ok(reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                Vec::new(),
            ));
        }
        _ => return Ok(reply(StatusCode::NOT_FOUND, "text/plain", Vec::new())),
    };
    let Ok(body) = pki_operation(&state, &message) else {
        return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", Vec::new()));
    };
    Ok(reply(StatusCode::OK, "application/x-pki-message", body))
}

/// PKCSReq only: decode, verify, decrypt, check the challenge (spent on use), issue.
fn pki_operation(state: &State, message: &[u8]) -> Result<Vec<u8>, agentca_scep::ScepError> {
    let options = ScepOptions::STRICT;
    let unverified = UnverifiedMessage::parse(message)?;
    let verified = unverified.verify(&options)?;
    let reply_to = verified.reply_to();
    let decrypted = verified.decrypt(&state.ra, &options)?;
    let csr = CertificateRequest::from_der(&decrypted.csr)
        .map_err(|_| agentca_scep::ScepError::Malformed("CSR"))?;
    let spent = csr.challenge_password().is_some_and(|c| {
        let mut live = state
            .challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        live.remove(c)
    });
    if !spent {
        let status = CertRepStatus::Failure(FailInfo::BadRequest);
        return CertRep {
            reply_to: &reply_to,
            status,
            signing_time: None,
        }
        .encode(&state.ra, &options);
    }
    let n = state.issued.fetch_add(1, Ordering::Relaxed);
    let serial = if state.behaviour.repeat_serials {
        n / 2 + 1
    } else {
        n + 1
    };
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("enrolled {n}"));
    // DER-minimal: no leading zero octets (the serials stay below 2^63).
    let bytes = serial.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    params.serial_number = Some(SerialNumber::from_slice(&bytes[first..]));
    let unusable = |_| agentca_scep::ScepError::Malformed("CSR key");
    let spki = SubjectPublicKeyInfo::from_der(csr.spki_der()).map_err(unusable)?;
    let issued = params
        .signed_by(&spki, &state.ca_issuer)
        .map_err(unusable)?
        .der()
        .to_vec();
    let certificates = [issued, state.ca_der.clone()];
    CertRep {
        reply_to: &reply_to,
        status: CertRepStatus::Success {
            cipher: decrypted.cipher,
            certificates: &certificates,
        },
        signing_time: None,
    }
    .encode(&state.ra, &options)
}

mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scep::{Challenge, ScepBenchOptions, ScepEnd, run_scep};

    fn options(ra: &TestRa, challenge: Challenge, count: u64) -> ScepBenchOptions {
        let mut o = ScepBenchOptions::new(&ra.url, challenge);
        o.count = count;
        o.timeout = Duration::from_secs(5);
        o.stall_after = Duration::from_secs(10);
        o.max_duration = Duration::from_secs(60);
        o
    }

    #[test]
    fn single_use_challenges_enroll_over_get() {
        let challenges = ["c-0", "c-1", "c-2", "c-3"];
        let ra = TestRa::start(
            Behaviour {
                post: false,
                repeat_serials: false,
            },
            &challenges,
        );
        let file = crate::scep::parse_challenge_file(&challenges.join("\n")).unwrap();
        let mut opts = options(&ra, Challenge::PerRequest(file), 4);
        opts.concurrency = 2;
        let report = run_scep(&opts).unwrap();
        let text = report.to_text();
        assert_eq!(report.enrollments, 4, "{text}");
        assert_eq!(report.errors.total(), 0, "{text}");
        assert_eq!(report.duplicate_serials, 0, "{text}");
        assert_eq!(report.end, ScepEnd::Completed);
        // No POSTPKIOperation: the message goes in the query.
        assert_eq!(report.http_method, "GET", "{text}");
        // agentca's GetCACert form: the RSA RA first, then the ECDSA CA; the RA is chosen.
        assert_eq!(report.server_info.ca_certificates, 2, "{text}");
        assert_eq!(report.server_info.recipient_subject, "CN=test RA", "{text}");
        assert_eq!(report.connections, 2, "{text}");
    }

    #[test]
    fn a_spent_challenge_fails_and_repeated_serials_are_counted() {
        let ra = TestRa::start(
            Behaviour {
                post: true,
                repeat_serials: true,
            },
            &["a", "b", "c"],
        );
        // The fourth request spends "a" again: the server refuses it with a signed FAILURE.
        let challenges = ["a", "b", "c", "a"].map(str::to_owned).to_vec();
        let mut opts = options(&ra, Challenge::PerRequest(challenges), 4);
        opts.cipher = agentca_scep::ContentCipher::Aes256Cbc;
        let report = run_scep(&opts).unwrap();
        let text = report.to_text();
        assert_eq!(report.http_method, "POST", "{text}");
        assert_eq!(report.enrollments, 3, "{text}");
        assert_eq!(
            report.errors.by_kind.get("FAILURE badRequest"),
            Some(&1),
            "{text}"
        );
        assert_eq!(report.errors.total(), 1, "{text}");
        // Serials 1, 1, 2: one certificate repeats an earlier serial.
        assert_eq!(report.duplicate_serials, 1, "{text}");
        assert_eq!(
            report.duplicate_serial_examples,
            [("01".to_owned(), 2)],
            "{text}"
        );
        assert_eq!(report.to_json()["duplicate_serials"]["count"], 1);
        assert!(text.contains("1 duplicate (e.g. 01 ×2)"), "{text}");
    }
}
