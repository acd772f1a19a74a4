//! Enrollment and one renewal, over ACME or SCEP: a key made here, a certificate for the
//! agent identity, both installed together, and what the next renewal needs kept beside them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::acme::{AccountRecord, AcmeClient, Eab, Identifier, OrderRequest, ari_cert_id};
use crate::error::{AgentError, Result};
use crate::files::{CredentialFiles, Credentials};
use crate::http::HttpClient;
use crate::scep::ScepServer;
use agentca_scep::client::SignerKey;

const ENROLLMENT_FILE: &str = "enrollment.json";
const CA_FILE: &str = "ca.pem";
/// The roots trusted for the ACME server's TLS when they are not `ca.pem` (`--tls-ca`).
const TLS_CA_FILE: &str = "tls-ca.pem";
/// The timeout of each request to the CA.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What is kept, mode 0600, in the state directory so that `renew` needs only the files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    /// The agent ID the certificates carry.
    pub agent_id: String,
    /// DNS names ordered besides the identity (ACME only).
    #[serde(default)]
    pub dns: Vec<String>,
    /// How the agent renews.
    pub protocol: Protocol,
    /// Which identifiers ACME orders name (records from before this field: `auto`, which
    /// for an agent without DNS names is agentca's `uri` identifier as before).
    #[serde(default)]
    pub identifiers: IdentifierMode,
    /// Where the http-01 responder listens when a CA asks for a challenge (ACME only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http01_listen: Option<SocketAddr>,
}

/// Which identifiers an ACME order names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentifierMode {
    /// `uri` first; when the CA refuses that identifier type and there are DNS names, `dns`.
    /// Enrollment keeps whichever worked, so renewals do not ask again.
    #[default]
    Auto,
    /// The agent ID as agentca's `uri` identifier, plus the DNS names; the certificate must
    /// carry the agent ID as its URI SAN.
    Uri,
    /// The DNS names only, for CAs that know no `uri` identifier (RFC 8555 defines `dns`, RFC
    /// 8738 `ip`); the certificate names those hosts, and carries no agent ID unless the CA
    /// adds it.
    Dns,
}

/// An ACME enrollment: where, with which credential, and how orders are placed.
#[derive(Debug, Clone, Copy)]
pub struct AcmeEnrollment<'a> {
    /// The directory URL.
    pub directory: &'a str,
    /// The single-use EAB credential.
    pub eab: &'a Eab,
    /// The agent ID.
    pub agent_id: &'a str,
    /// DNS names ordered besides (or, with [`IdentifierMode::Dns`], instead of) the agent ID.
    pub dns: &'a [String],
    /// Which identifiers to order.
    pub identifiers: IdentifierMode,
    /// Where to answer http-01 challenges; `None` when the CA pre-authorizes every name.
    pub http01_listen: Option<SocketAddr>,
    /// Roots trusted for the server's TLS, when they are not the issuing root (`ca_pem`).
    pub tls_ca_pem: Option<&'a [u8]>,
}

/// The protocol an agent enrolled with, and what renewing over it needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Protocol {
    /// ACME: the account.
    Acme(AccountRecord),
    /// SCEP: the server's URL (renewal is signed by the current certificate).
    Scep {
        /// The SCEP URL.
        url: String,
    },
}

/// What an enrollment or renewal produced.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The agent ID in the certificate.
    pub agent_id: String,
    /// The serial, lowercase hex.
    pub serial: String,
    /// When the certificate was issued.
    pub not_before: OffsetDateTime,
    /// When it expires.
    pub not_after: OffsetDateTime,
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
}

/// Enrolls at an ACME server as `request` says, with `ca_pem` the root the chain must lead
/// to (and, unless `request.tls_ca_pem` says otherwise, the only root trusted for the
/// server's TLS); installs the pair at `files` and keeps the account for renewals.
pub async fn enroll_acme(
    files: &CredentialFiles,
    ca_pem: &[u8],
    request: &AcmeEnrollment<'_>,
) -> Result<Issued> {
    let http = HttpClient::new(request.tls_ca_pem.unwrap_or(ca_pem), REQUEST_TIMEOUT)?;
    let (mut client, account) = AcmeClient::register(http, request.directory, request.eab).await?;
    let mut record = EnrollmentRecord {
        agent_id: request.agent_id.to_owned(),
        dns: request.dns.to_vec(),
        protocol: Protocol::Acme(account),
        identifiers: request.identifiers,
        http01_listen: request.http01_listen,
    };
    // Kept before the order: the EAB credential is spent now, and a crash after this point
    // must not leave an account nobody can use again.
    keep_enrollment(files, &record, ca_pem, request.tls_ca_pem)?;
    obtain_and_install(&mut client, files, &mut record, ca_pem, None).await
}

/// Enrolls `agent_id` at the SCEP `url` with the one-time `challenge`, trusting `ca_pem`
/// for the RA certificate; an RSA 2048 key (SCEP replies are encrypted to the requester's
/// key, which needs RSA).
pub async fn enroll_scep(
    files: &CredentialFiles,
    ca_pem: &[u8],
    url: &str,
    challenge: &str,
    agent_id: &str,
) -> Result<Issued> {
    let http = HttpClient::new(ca_pem, REQUEST_TIMEOUT)?;
    let server = ScepServer::connect(http, url, ca_pem).await?;
    let (key, signer) = rsa_key()?;
    let transient = agentca_scep::client::transient_certificate(&signer, agent_id)
        .map_err(|e| AgentError::Credentials(format!("transient certificate: {e}")))?;
    let csr = scep_csr(&signer, agent_id, Some(challenge))?;
    let leaf = server.request(&signer, &transient, &csr, false).await?;
    let record = EnrollmentRecord {
        agent_id: agent_id.to_owned(),
        dns: Vec::new(),
        protocol: Protocol::Scep {
            url: url.to_owned(),
        },
        identifiers: IdentifierMode::default(),
        http01_listen: None,
    };
    keep_enrollment(files, &record, ca_pem, None)?;
    install_scep(files, &server, &key, &leaf, agent_id)
}

/// Renews once over whatever protocol the agent enrolled with.
pub async fn renew(files: &CredentialFiles) -> Result<Issued> {
    let (record, ca_pem) = read_enrollment(files)?;
    match &record.protocol {
        Protocol::Acme(_) => renew_acme(files).await,
        Protocol::Scep { url } => {
            let http = HttpClient::new(&ca_pem, REQUEST_TIMEOUT)?;
            let server = ScepServer::connect(http, url, &ca_pem).await?;
            let current = files.read()?.ok_or_else(|| AgentError::Layout {
                path: files.cert_path().to_owned(),
                reason: "no certificate installed to renew".into(),
            })?;
            let leaf = current_leaf(files)?.ok_or_else(|| AgentError::Layout {
                path: files.cert_path().to_owned(),
                reason: "no certificate in the chain".into(),
            })?;
            let current_key = pem::parse(&current.key_pem)
                .map_err(|e| AgentError::Credentials(format!("the current key: {e}")))?;
            let current_signer = SignerKey::from_pkcs8(current_key.contents())
                .map_err(|e| AgentError::Credentials(format!("the current key: {e}")))?;
            let (key, signer) = rsa_key()?;
            let csr = scep_csr(&signer, &record.agent_id, None)?;
            // RFC 8894 §3.3.1.2: signed by the current certificate's key; the new key is in
            // the CSR. The reply is encrypted to the signer, the current key.
            let issued = server.request(&current_signer, &leaf, &csr, true).await?;
            install_scep(files, &server, &key, &issued, &record.agent_id)
        }
    }
}

fn keep_enrollment(
    files: &CredentialFiles,
    record: &EnrollmentRecord,
    ca_pem: &[u8],
    tls_ca_pem: Option<&[u8]>,
) -> Result<()> {
    fs::create_dir_all(files.state_dir()).map_err(|e| AgentError::io(files.state_dir(), e))?;
    write_private(&files.state_dir().join(CA_FILE), ca_pem)?;
    let tls_path = files.state_dir().join(TLS_CA_FILE);
    match tls_ca_pem {
        Some(pem) => write_private(&tls_path, pem)?,
        // A file left by an earlier enrollment would be trusted instead of the new root.
        None => match fs::remove_file(&tls_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(AgentError::io(&tls_path, e));
            }
            _ => {}
        },
    }
    keep_record(files, record)
}

fn keep_record(files: &CredentialFiles, record: &EnrollmentRecord) -> Result<()> {
    write_private(
        &files.state_dir().join(ENROLLMENT_FILE),
        &serde_json::to_vec_pretty(record)
            .map_err(|e| AgentError::Protocol(format!("enrollment record: {e}")))?,
    )
}

fn rsa_key() -> Result<(rcgen::KeyPair, SignerKey)> {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .map_err(|e| AgentError::Credentials(format!("generating an RSA key: {e}")))?;
    let signer = SignerKey::from_pkcs8(&key.serialize_der())
        .map_err(|e| AgentError::Credentials(format!("the new RSA key: {e}")))?;
    Ok((key, signer))
}

fn scep_csr(signer: &SignerKey, agent_id: &str, challenge: Option<&str>) -> Result<Vec<u8>> {
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(agent_id)
            .map_err(|e| AgentError::Credentials(format!("agent ID: {e}")))?,
    )];
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, agent_id);
    params.distinguished_name = dn;
    agentca_scep::client::csr_with_challenge(signer, &params, challenge)
        .map_err(|e| AgentError::Credentials(format!("CSR: {e}")))
}

/// The leaf from SCEP plus the issuing CA from GetCACert (the one that signed it), checked and
/// installed.
fn install_scep(
    files: &CredentialFiles,
    server: &ScepServer,
    key: &rcgen::KeyPair,
    leaf: &[u8],
    agent_id: &str,
) -> Result<Issued> {
    let mut chain = vec![leaf.to_vec()];
    if let Some(issuer) = server
        .ca_certificates()
        .iter()
        .find(|ca| crate::scep::chains_to(leaf, &[], std::slice::from_ref(ca)).is_ok())
    {
        chain.push(issuer.clone());
    }
    let chain_pem: String = chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect();
    let issued = check_chain(&chain_pem, key, agent_id, &[Identifier::agent(agent_id)])?;
    files.install(&Credentials {
        key_pem: key.serialize_pem().into_bytes(),
        chain_pem: chain_pem.into_bytes(),
    })?;
    Ok(issued)
}

/// Renews the certificate at `files` once, from what enrollment kept: a fresh key, an order
/// that `replaces` the current certificate (RFC 9773 §5), and the new pair installed.
async fn renew_acme(files: &CredentialFiles) -> Result<Issued> {
    let (record, ca_pem) = read_enrollment(files)?;
    let Protocol::Acme(account) = &record.protocol else {
        return Err(AgentError::Layout {
            path: files.state_dir().join(ENROLLMENT_FILE),
            reason: "not an ACME enrollment".into(),
        });
    };
    let account = account.clone();
    let mut record = record;
    let http = HttpClient::new(&tls_roots(files, &ca_pem)?, REQUEST_TIMEOUT)?;
    let mut client = AcmeClient::resume(http, &account).await?;
    // A certificate without an authority key id has no ARI CertID: renewed without
    // `replaces`, which is only ever a hint to the server.
    let replaces = current_leaf(files)?.and_then(|leaf| ari_cert_id(&leaf).ok());
    obtain_and_install(
        &mut client,
        files,
        &mut record,
        &ca_pem,
        replaces.as_deref(),
    )
    .await
}

/// The roots trusted for the ACME server's TLS: `--tls-ca` as kept at enrollment, else the
/// CA's root.
pub fn tls_roots(files: &CredentialFiles, ca_pem: &[u8]) -> Result<Vec<u8>> {
    let path = files.state_dir().join(TLS_CA_FILE);
    match fs::read(&path) {
        Ok(pem) => Ok(pem),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ca_pem.to_vec()),
        Err(e) => Err(AgentError::io(&path, e)),
    }
}

/// The enrollment record and the CA certificates kept by [`enroll_acme`].
pub fn read_enrollment(files: &CredentialFiles) -> Result<(EnrollmentRecord, Vec<u8>)> {
    let path = files.state_dir().join(ENROLLMENT_FILE);
    let text = fs::read(&path).map_err(|e| AgentError::io(&path, e))?;
    let record = serde_json::from_slice(&text).map_err(|e| AgentError::Layout {
        path: path.clone(),
        reason: format!("not an enrollment record: {e}"),
    })?;
    let ca_path = files.state_dir().join(CA_FILE);
    let ca = fs::read(&ca_path).map_err(|e| AgentError::io(&ca_path, e))?;
    Ok((record, ca))
}

/// The leaf (DER) of the chain installed at `files`, if any.
pub fn current_leaf(files: &CredentialFiles) -> Result<Option<Vec<u8>>> {
    let Some(credentials) = files.read()? else {
        return Ok(None);
    };
    let leaf = pem::parse_many(&credentials.chain_pem)
        .map_err(|e| AgentError::Credentials(format!("the chain: {e}")))?
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents);
    Ok(leaf)
}

async fn obtain_and_install(
    client: &mut AcmeClient,
    files: &CredentialFiles,
    record: &mut EnrollmentRecord,
    ca_pem: &[u8],
    replaces: Option<&str>,
) -> Result<Issued> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Credentials(format!("generating the key: {e}")))?;
    let dns: Vec<Identifier> = record.dns.iter().map(|d| Identifier::dns(d)).collect();
    let mut with_uri = vec![Identifier::agent(&record.agent_id)];
    with_uri.extend(dns.iter().cloned());
    let (identifiers, fallback) = match record.identifiers {
        IdentifierMode::Uri => (with_uri, None),
        IdentifierMode::Dns => (dns, None),
        IdentifierMode::Auto => {
            let fallback = (!dns.is_empty()).then_some(dns);
            (with_uri, fallback)
        }
    };
    // The chain is picked among the server's alternates to lead to the root given at
    // enrollment (CLI-3).
    let roots: Vec<Vec<u8>> = pem::parse_many(ca_pem)
        .map_err(|e| AgentError::Credentials(format!("CA certificates: {e}")))?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    let request = OrderRequest {
        identifiers,
        fallback,
        replaces,
        http01_listen: record.http01_listen,
        preferred_roots: &roots,
    };
    let obtained = client
        .obtain(&request, &|ordered| csr_for(&key, ordered))
        .await?;
    let issued = check_chain(
        &obtained.chain_pem,
        &key,
        &record.agent_id,
        &obtained.identifiers,
    )?;
    files.install(&Credentials {
        key_pem: key.serialize_pem().into_bytes(),
        chain_pem: obtained.chain_pem.into_bytes(),
    })?;
    if record.identifiers == IdentifierMode::Auto {
        // What the server accepted is kept, so renewals order it straight away. After a
        // crash before this point the next renewal finds out again.
        record.identifiers = if obtained.identifiers.iter().any(|i| i.kind == "uri") {
            IdentifierMode::Uri
        } else {
            IdentifierMode::Dns
        };
        keep_record(files, record)?;
    }
    Ok(issued)
}

/// A CSR for exactly the identifiers ordered: RFC 8555 §7.4 has the server refuse a CSR
/// that names anything else.
fn csr_for(key: &rcgen::KeyPair, identifiers: &[Identifier]) -> Result<Vec<u8>> {
    let mut params = rcgen::CertificateParams::default();
    let mut sans = Vec::new();
    for identifier in identifiers {
        let value = rcgen::string::Ia5String::try_from(identifier.value.as_str()).map_err(|e| {
            AgentError::Credentials(format!("{} {:?}: {e}", identifier.kind, identifier.value))
        })?;
        sans.push(match identifier.kind {
            "uri" => rcgen::SanType::URI(value),
            _ => rcgen::SanType::DnsName(value),
        });
    }
    params.subject_alt_names = sans;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(key)
        .map_err(|e| AgentError::Credentials(format!("CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

/// The chain's leaf must certify our key, name every DNS name ordered, and carry the agent ID
/// as its one URI SAN when that was ordered (or no URI SAN but that one when it was not): a
/// pair that does not match is never installed.
fn check_chain(
    chain_pem: &str,
    key: &rcgen::KeyPair,
    agent_id: &str,
    ordered: &[Identifier],
) -> Result<Issued> {
    let leaf = pem::parse_many(chain_pem)
        .map_err(|e| AgentError::Protocol(format!("the chain is not PEM: {e}")))?
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .ok_or_else(|| AgentError::Protocol("the chain holds no certificate".into()))?
        .into_contents();
    let (_, cert) = X509Certificate::from_der(&leaf)
        .map_err(|e| AgentError::Protocol(format!("the certificate: {e}")))?;
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(key).as_slice() {
        return Err(AgentError::Credentials(
            "the certificate does not certify the key made for it".into(),
        ));
    }
    let names: Vec<&GeneralName<'_>> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.iter().collect())
        .unwrap_or_default();
    let uris: Vec<&str> = names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    let uri_ordered = ordered.iter().any(|i| i.kind == "uri");
    if uris != [agent_id] && (uri_ordered || !uris.is_empty()) {
        return Err(AgentError::Credentials(format!(
            "the certificate names {uris:?}, not {agent_id}"
        )));
    }
    for wanted in ordered.iter().filter(|i| i.kind == "dns") {
        let present = names
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(d) if d.eq_ignore_ascii_case(&wanted.value)));
        if !present {
            return Err(AgentError::Credentials(format!(
                "the certificate does not name {}",
                wanted.value
            )));
        }
    }
    Ok(Issued {
        agent_id: agent_id.to_owned(),
        serial: hex_lower(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        leaf_der: leaf,
    })
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` with mode 0600 through a synced temporary file and a rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = path.with_extension("agentca-tmp");
    let _ = fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| AgentError::io(&temp, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| AgentError::io(&temp, e))?;
    fs::rename(&temp, path).map_err(|e| AgentError::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AgentError::io(dir, e))
}
