//! Enrollment and one renewal, over ACME: a key made here, a certificate for the agent
//! identity, both installed together, and what the next renewal needs kept beside them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::acme::{AccountRecord, AcmeClient, Eab, Identifier, ari_cert_id};
use crate::error::{AgentError, Result};
use crate::files::{CredentialFiles, Credentials};
use crate::http::HttpClient;

const ENROLLMENT_FILE: &str = "enrollment.json";
const CA_FILE: &str = "ca.pem";
/// The timeout of each request to the CA.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What is kept, mode 0600, in the state directory so that `renew` needs only the files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    /// The agent ID the certificates carry.
    pub agent_id: String,
    /// DNS names ordered besides the identity.
    #[serde(default)]
    pub dns: Vec<String>,
    /// The ACME account.
    pub acme: AccountRecord,
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

/// Enrolls `agent_id` at the ACME `directory` with the single-use `eab` credential,
/// trusting `ca_pem`; installs the pair at `files` and keeps the account for renewals.
pub async fn enroll_acme(
    files: &CredentialFiles,
    ca_pem: &[u8],
    directory: &str,
    eab: &Eab,
    agent_id: &str,
    dns: &[String],
) -> Result<Issued> {
    let http = HttpClient::new(ca_pem, REQUEST_TIMEOUT)?;
    let (mut client, account) = AcmeClient::register(http, directory, eab).await?;
    let record = EnrollmentRecord {
        agent_id: agent_id.to_owned(),
        dns: dns.to_vec(),
        acme: account,
    };
    // Kept before the order: the EAB credential is spent now, and a crash after this point
    // must not leave an account nobody can use again.
    fs::create_dir_all(files.state_dir()).map_err(|e| AgentError::io(files.state_dir(), e))?;
    write_private(&files.state_dir().join(CA_FILE), ca_pem)?;
    write_private(
        &files.state_dir().join(ENROLLMENT_FILE),
        &serde_json::to_vec_pretty(&record)
            .map_err(|e| AgentError::Protocol(format!("enrollment record: {e}")))?,
    )?;
    obtain_and_install(&mut client, files, &record, None).await
}

/// Renews the certificate at `files` once, from what enrollment kept: a fresh key, an order
/// that `replaces` the current certificate (RFC 9773 §5), and the new pair installed.
pub async fn renew_acme(files: &CredentialFiles) -> Result<Issued> {
    let (record, ca_pem) = read_enrollment(files)?;
    let http = HttpClient::new(&ca_pem, REQUEST_TIMEOUT)?;
    let mut client = AcmeClient::resume(http, &record.acme).await?;
    let replaces = match current_leaf(files)? {
        Some(leaf) => Some(ari_cert_id(&leaf)?),
        None => None,
    };
    obtain_and_install(&mut client, files, &record, replaces.as_deref()).await
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
    record: &EnrollmentRecord,
    replaces: Option<&str>,
) -> Result<Issued> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Credentials(format!("generating the key: {e}")))?;
    let csr = csr_for(&key, &record.agent_id, &record.dns)?;
    let mut identifiers = vec![Identifier::agent(&record.agent_id)];
    identifiers.extend(record.dns.iter().map(|d| Identifier::dns(d)));
    let chain_pem = client.obtain(&identifiers, &csr, replaces).await?;
    let issued = check_chain(&chain_pem, &key, &record.agent_id)?;
    files.install(&Credentials {
        key_pem: key.serialize_pem().into_bytes(),
        chain_pem: chain_pem.into_bytes(),
    })?;
    Ok(issued)
}

fn csr_for(key: &rcgen::KeyPair, agent_id: &str, dns: &[String]) -> Result<Vec<u8>> {
    let mut params = rcgen::CertificateParams::default();
    let mut sans = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(agent_id)
            .map_err(|e| AgentError::Credentials(format!("agent ID: {e}")))?,
    )];
    for name in dns {
        sans.push(rcgen::SanType::DnsName(
            rcgen::string::Ia5String::try_from(name.as_str())
                .map_err(|e| AgentError::Credentials(format!("DNS name {name:?}: {e}")))?,
        ));
    }
    params.subject_alt_names = sans;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(key)
        .map_err(|e| AgentError::Credentials(format!("CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

/// The chain's leaf must certify our key and carry the agent ID as its one URI SAN: a pair
/// that does not match is never installed.
fn check_chain(chain_pem: &str, key: &rcgen::KeyPair, agent_id: &str) -> Result<Issued> {
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
    let uris: Vec<&str> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if uris != [agent_id] {
        return Err(AgentError::Credentials(format!(
            "the certificate names {uris:?}, not {agent_id}"
        )));
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
