//! One order, from newOrder to the downloaded certificate (RFC 8555 §7.4–7.4.2), timed step by
//! step.
//!
//! The client answers no challenge itself: it triggers http-01 and waits, so the server must
//! validate without reaching it (pebble's `PEBBLE_VA_ALWAYS_VALID`, or names a policy
//! pre-authorizes so that authorizations are valid from the start, as agentca does).

use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use serde_json::{Value, json};
use x509_parser::extensions::GeneralName;

use super::client::{Client, Directory, json_body, location};
use super::jose::b64;
use crate::failure::Failure;

/// First pause between polls without `Retry-After`; it doubles up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(250);
/// A server's `Retry-After` is honoured up to this: it is written for clients that poll for
/// minutes, and a benchmark that slept that long would measure its own sleep.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(1);

/// The parts of an order, in their order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    NewOrder,
    Authorize,
    Finalize,
    Certificate,
}

impl Step {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::NewOrder => "newOrder",
            Self::Authorize => "authorize",
            Self::Finalize => "finalize",
            Self::Certificate => "certificate",
        }
    }
}

/// How long each step of a completed order took, in the order of [`Step`].
pub(crate) type StepTimes = [Duration; 4];

/// Runs one order for `names` with the certificate key `key`, giving up at `deadline`.
pub(crate) async fn run_order(
    client: &mut Client,
    directory: &Directory,
    names: &[String],
    key: &KeyPair,
    deadline: Instant,
) -> Result<StepTimes, (Step, Failure)> {
    let mut times = [Duration::ZERO; 4];
    let mut mark = Instant::now();
    let mut lap = |step: Step, times: &mut StepTimes| {
        let now = Instant::now();
        times[step as usize] = now - mark;
        mark = now;
    };

    let step = Step::NewOrder;
    let identifiers: Vec<Value> = names
        .iter()
        .map(|n| json!({ "type": "dns", "value": n }))
        .collect();
    let response = client
        .post(
            directory,
            &directory.new_order,
            Some(&json!({ "identifiers": identifiers })),
        )
        .await
        .map_err(|f| (step, f))?;
    let order_url = location(&response).map_err(|f| (step, f))?;
    let order = json_body(&response).map_err(|f| (step, f))?;
    let finalize_url = string(&order, "finalize").map_err(|f| (step, f))?;
    let authorizations: Vec<String> = order
        .get("authorizations")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if authorizations.is_empty() {
        return Err((
            step,
            Failure::invalid("an order without authorizations".into()),
        ));
    }
    lap(step, &mut times);

    let step = Step::Authorize;
    for url in &authorizations {
        authorize(client, directory, url, deadline)
            .await
            .map_err(|f| (step, f))?;
    }
    lap(step, &mut times);

    let step = Step::Finalize;
    let csr = csr(names, key).map_err(|f| (step, f))?;
    let order = finalize(client, directory, &order_url, &finalize_url, &csr, deadline)
        .await
        .map_err(|f| (step, f))?;
    let certificate_url = string(&order, "certificate").map_err(|f| (step, f))?;
    lap(step, &mut times);

    let step = Step::Certificate;
    let response = client
        .post(directory, &certificate_url, None)
        .await
        .map_err(|f| (step, f))?;
    check_certificate(&response.body, names).map_err(|f| (step, f))?;
    lap(step, &mut times);
    Ok(times)
}

/// Brings one authorization to `valid`: nothing to do if it already is (pre-authorized), else
/// trigger its http-01 challenge and poll.
async fn authorize(
    client: &mut Client,
    directory: &Directory,
    url: &str,
    deadline: Instant,
) -> Result<(), Failure> {
    let (authz, _) = client.fetch(directory, url).await?;
    match status(&authz)? {
        "valid" => return Ok(()),
        "pending" => {}
        other => {
            return Err(Failure::state(
                &format!("authorization {other}"),
                problem_of(&authz),
            ));
        }
    }
    let challenge = authz
        .get("challenges")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("http-01"))
        })
        .and_then(|c| c.get("url"))
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::invalid("a pending authorization without http-01".into()))?
        .to_owned();
    client.post(directory, &challenge, Some(&json!({}))).await?;
    poll(
        client,
        directory,
        url,
        "authorization",
        &["valid"],
        deadline,
    )
    .await?;
    Ok(())
}

/// Sends the CSR, then polls the order until it is `valid` (§7.4). A server that says the
/// order is not ready yet (its authorizations were validated a moment ago) gets it again once
/// the order is `ready`.
async fn finalize(
    client: &mut Client,
    directory: &Directory,
    order_url: &str,
    finalize_url: &str,
    csr: &[u8],
    deadline: Instant,
) -> Result<Value, Failure> {
    let payload = json!({ "csr": b64(csr) });
    let response = match client.post(directory, finalize_url, Some(&payload)).await {
        Ok(response) => response,
        Err(f) if f.kind.ends_with(":orderNotReady") => {
            poll(client, directory, order_url, "order", &["ready"], deadline).await?;
            client.post(directory, finalize_url, Some(&payload)).await?
        }
        Err(f) => return Err(f),
    };
    let order = json_body(&response)?;
    if status(&order)? == "valid" && order.get("certificate").is_some() {
        return Ok(order);
    }
    poll(client, directory, order_url, "order", &["valid"], deadline).await
}

/// POST-as-GET `url` until its status is one of `wanted`; `invalid` (or any final status not
/// wanted) ends it, and so does `deadline`.
async fn poll(
    client: &mut Client,
    directory: &Directory,
    url: &str,
    what: &str,
    wanted: &[&str],
    deadline: Instant,
) -> Result<Value, Failure> {
    let mut pause = POLL_FIRST;
    loop {
        let (doc, response) = client.fetch(directory, url).await?;
        let now_status = status(&doc)?;
        if wanted.contains(&now_status) {
            return Ok(doc);
        }
        if !matches!(now_status, "pending" | "processing" | "ready") {
            return Err(Failure::state(
                &format!("{what} {now_status}"),
                problem_of(&doc),
            ));
        }
        let wait = match retry_after(response.header("retry-after")) {
            Some(server) => server.min(RETRY_AFTER_CAP),
            None => {
                let wait = pause;
                pause = (pause * 2).min(POLL_MAX);
                wait
            }
        };
        if Instant::now() + wait >= deadline {
            return Err(Failure::state(
                &format!("{what} still {now_status}"),
                format!("{url} was still {now_status} when the order's time was up"),
            ));
        }
        tokio::time::sleep(wait).await;
    }
}

/// `Retry-After` in seconds; the HTTP-date form is ignored (the backoff applies instead).
fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn status(doc: &Value) -> Result<&str, Failure> {
    doc.get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::invalid("an object without status".into()))
}

fn string(doc: &Value, field: &str) -> Result<String, Failure> {
    doc.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Failure::invalid(format!("an order without {field}")))
}

/// The problem an invalid object or its challenges carry, for the report's detail.
fn problem_of(doc: &Value) -> String {
    let error = doc.get("error").or_else(|| {
        doc.get("challenges")
            .and_then(Value::as_array)
            .and_then(|c| c.iter().find_map(|c| c.get("error")))
    });
    match error {
        Some(e) => format!(
            "{} {}",
            e.get("type").and_then(Value::as_str).unwrap_or(""),
            e.get("detail").and_then(Value::as_str).unwrap_or("")
        ),
        None => doc.to_string().chars().take(200).collect(),
    }
}

/// A CSR for `names` with an empty subject: the identifiers are the SANs, and a CA that
/// copies nothing but the key and the authorized names needs nothing else.
pub(crate) fn csr(names: &[String], key: &KeyPair) -> Result<Vec<u8>, Failure> {
    let fail = |e: rcgen::Error| Failure::state("CSR", format!("build the CSR: {e}"));
    let mut params = CertificateParams::new(names.to_vec()).map_err(fail)?;
    params.distinguished_name = DistinguishedName::new();
    Ok(params.serialize_request(key).map_err(fail)?.der().to_vec())
}

/// The download is a PEM chain whose first certificate names every identifier ordered.
pub(crate) fn check_certificate(body: &[u8], names: &[String]) -> Result<(), Failure> {
    let blocks = pem::parse_many(body)
        .map_err(|e| Failure::invalid(format!("the certificate is not PEM: {e}")))?;
    let leaf = match blocks.first() {
        Some(b) if b.tag() == "CERTIFICATE" => b,
        _ => {
            return Err(Failure::invalid(
                "no PEM certificate in the download".into(),
            ));
        }
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.contents())
        .map_err(|e| Failure::invalid(format!("the leaf certificate does not parse: {e}")))?;
    let sans: Vec<&str> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::DNSName(n) => Some(*n),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match names
        .iter()
        .find(|n| !sans.iter().any(|s| s.eq_ignore_ascii_case(n)))
    {
        Some(missing) => Err(Failure::invalid(format!(
            "the certificate does not name {missing}"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use x509_parser::prelude::FromDer as _;

    use super::*;

    #[test]
    fn the_csr_names_the_identifiers_and_nothing_else() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let names = vec!["1.bench.test".to_owned(), "www.1.bench.test".to_owned()];
        let der = csr(&names, &key).unwrap();
        let (_, req) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der).unwrap();
        req.verify_signature().unwrap();
        assert_eq!(req.certification_request_info.subject.iter().count(), 0);
        assert_eq!(
            req.certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .as_ref(),
            key.public_key_raw()
        );
    }

    #[test]
    fn the_certificate_must_name_what_was_ordered() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(vec!["7.bench.test".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let chain = format!("{}{}", cert.pem(), cert.pem());
        assert!(check_certificate(chain.as_bytes(), &["7.BENCH.test".into()]).is_ok());
        let err = check_certificate(chain.as_bytes(), &["8.bench.test".into()]).unwrap_err();
        assert!(err.detail.contains("8.bench.test"), "{err:?}");
        assert!(check_certificate(b"garbage", &["7.bench.test".into()]).is_err());
        let key_pem = key.serialize_pem();
        assert!(check_certificate(key_pem.as_bytes(), &["7.bench.test".into()]).is_err());
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(retry_after(Some(" 3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
