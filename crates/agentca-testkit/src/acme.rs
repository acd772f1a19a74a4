//! A raw ACME (RFC 8555) client for tests, built to send *wrong* requests on purpose.
//!
//! Nothing here validates what it sends: protected headers are raw JSON text (so duplicate or
//! extra members are possible), payload and signature bytes are whatever the test asks for,
//! `jwk` and `kid` may both be present or both absent, and the external account binding can
//! be broken one part at a time. HTTP is equally raw: any method, Content-Type, Host and extra
//! headers, one request per TLS connection (`Connection: close`), blocking, with timeouts.
//!
//! The happy-path helpers ([`AcmeClient::new_account`], [`AcmeClient::new_order`],
//! [`AcmeClient::finalize`], ...) let a test reach each state before attacking it.
//!
//! Every function panics when the transport fails: that is how a test reports it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair, RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

/// How long one HTTP exchange may take.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The problem type URN prefix.
pub const PROBLEM: &str = "urn:ietf:params:acme:error:";

/// Unpadded base64url, as every JOSE field.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url.
pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// The account key algorithms ACME allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    /// ECDSA P-256.
    Es256,
    /// ECDSA P-384.
    Es384,
    /// RSA 2048, PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl KeyAlg {
    /// Every algorithm.
    pub const ALL: [Self; 4] = [Self::Es256, Self::Es384, Self::Rs256, Self::EdDsa];

    /// The JWS `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }
}

enum Inner {
    Ec(EcdsaKeyPair),
    Rsa(Arc<RsaKeyPair>),
    Ed(Ed25519KeyPair),
}

/// An account (or certificate) key pair.
pub struct AccountKey {
    alg: KeyAlg,
    inner: Inner,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountKey({}, {})", self.alg.name(), self.thumbprint())
    }
}

fn rsa_keys() -> &'static [(Arc<RsaKeyPair>, Vec<u8>)] {
    // RSA generation is slow in debug builds; a few keys serve every test.
    static KEYS: OnceLock<Vec<(Arc<RsaKeyPair>, Vec<u8>)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..2)
            .map(|_| {
                use aws_lc_rs::encoding::AsDer;
                let key = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
                let der = key.as_der().unwrap().as_ref().to_vec();
                (Arc::new(key), der)
            })
            .collect()
    })
}

impl AccountKey {
    /// A fresh key (RSA keys come from a small shared pool: index 0 unless [`Self::rsa`]).
    pub fn generate(alg: KeyAlg) -> Self {
        let rng = SystemRandom::new();
        match alg {
            KeyAlg::Es256 | KeyAlg::Es384 => {
                let curve = if alg == KeyAlg::Es256 {
                    &ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &ECDSA_P384_SHA384_FIXED_SIGNING
                };
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(curve, &rng).unwrap();
                let key = EcdsaKeyPair::from_pkcs8(curve, pkcs8.as_ref()).unwrap();
                Self {
                    alg,
                    inner: Inner::Ec(key),
                    pkcs8: pkcs8.as_ref().to_vec(),
                }
            }
            KeyAlg::Rs256 => Self::rsa(0),
            KeyAlg::EdDsa => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
                let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
                Self {
                    alg,
                    inner: Inner::Ed(key),
                    pkcs8: pkcs8.as_ref().to_vec(),
                }
            }
        }
    }

    /// RSA key `index` (0 or 1) of the shared pool.
    pub fn rsa(index: usize) -> Self {
        let (key, der) = &rsa_keys()[index];
        Self {
            alg: KeyAlg::Rs256,
            inner: Inner::Rsa(key.clone()),
            pkcs8: der.clone(),
        }
    }

    /// A fresh P-256 key.
    pub fn es256() -> Self {
        Self::generate(KeyAlg::Es256)
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The private key, PKCS#8 DER (for a CSR with this key).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public JWK, required members only.
    pub fn jwk(&self) -> Value {
        match &self.inner {
            Inner::Ec(k) => {
                let point = k.public_key().as_ref();
                let (x, y) = point[1..].split_at((point.len() - 1) / 2);
                let crv = if self.alg == KeyAlg::Es256 {
                    "P-256"
                } else {
                    "P-384"
                };
                json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)})
            }
            Inner::Rsa(k) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Inner::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key())}),
        }
    }

    /// The RFC 7638 thumbprint.
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.jwk())
    }

    /// Signs `message` with this key's algorithm (ECDSA: fixed-width r||s, as JWS wants).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec(k) => k.sign(&rng, message).unwrap().as_ref().to_vec(),
            Inner::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig).unwrap();
                sig
            }
            Inner::Ed(k) => k.sign(message).as_ref().to_vec(),
        }
    }
}

/// The RFC 7638 thumbprint of a public JWK.
pub fn thumbprint(jwk: &Value) -> String {
    let s = |name: &str| jwk[name].as_str().unwrap_or_default().to_owned();
    let canonical = match jwk["kty"].as_str() {
        Some("EC") => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            s("crv"),
            s("x"),
            s("y")
        ),
        Some("RSA") => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, s("e"), s("n")),
        _ => format!(r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#, s("crv"), s("x")),
    };
    b64(digest::digest(&digest::SHA256, canonical.as_bytes()))
}

/// How a protected header names its key.
#[derive(Clone, Debug)]
pub enum KeyRef {
    /// `jwk` only.
    Jwk(Value),
    /// `kid` only.
    Kid(String),
    /// Both (refused by the server).
    Both(Value, String),
    /// Neither (refused by the server).
    Neither,
}

/// A protected header as raw JSON text: `alg`, the key reference, `nonce` (if any), `url`.
pub fn protected(alg: &str, key: &KeyRef, nonce: Option<&str>, url: &str) -> String {
    let mut h = serde_json::Map::new();
    h.insert("alg".into(), json!(alg));
    match key {
        KeyRef::Jwk(jwk) => {
            h.insert("jwk".into(), jwk.clone());
        }
        KeyRef::Kid(kid) => {
            h.insert("kid".into(), json!(kid));
        }
        KeyRef::Both(jwk, kid) => {
            h.insert("jwk".into(), jwk.clone());
            h.insert("kid".into(), json!(kid));
        }
        KeyRef::Neither => {}
    }
    if let Some(nonce) = nonce {
        h.insert("nonce".into(), json!(nonce));
    }
    h.insert("url".into(), json!(url));
    Value::Object(h).to_string()
}

/// The three encoded members of a flattened JWS over `protected` (raw text) and `payload`,
/// signed by `key`.
pub fn sign_parts(protected: &str, payload: &[u8], key: &AccountKey) -> [String; 3] {
    let p = b64(protected);
    let pl = b64(payload);
    let sig = key.sign(format!("{p}.{pl}").as_bytes());
    [p, pl, b64(sig)]
}

/// The flattened JWS body from its encoded members.
pub fn jws_body([p, pl, sig]: &[String; 3]) -> Vec<u8> {
    json!({"protected": p, "payload": pl, "signature": sig})
        .to_string()
        .into_bytes()
}

/// A validly signed flattened JWS over `protected` (raw text) and `payload`.
pub fn signed(protected: &str, payload: &[u8], key: &AccountKey) -> Vec<u8> {
    jws_body(&sign_parts(protected, payload, key))
}

/// A flattened JWS object (not yet serialized), for nesting (keyChange, EAB).
pub fn signed_value(protected: &str, payload: &[u8], key: &AccountKey) -> Value {
    let [p, pl, sig] = sign_parts(protected, payload, key);
    json!({"protected": p, "payload": pl, "signature": sig})
}

/// An EAB credential as `agentca token create --for acme` prints it.
#[derive(Clone, Debug)]
pub struct Eab {
    /// The key id.
    pub kid: String,
    /// The HMAC key (decoded).
    pub hmac_key: Vec<u8>,
}

impl Eab {
    /// From the `kid` and the base64url `hmac` of `token create --output json`.
    pub fn new(kid: &str, hmac_b64: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            hmac_key: unb64(hmac_b64),
        }
    }
}

/// Knobs to break one part of an external account binding at a time. The default builds a
/// correct one.
#[derive(Clone, Debug, Default)]
pub struct EabKnobs {
    /// `alg` (default `HS256`).
    pub alg: Option<String>,
    /// `kid` in the header (default the credential's).
    pub kid: Option<String>,
    /// `url` in the header (default the newAccount URL).
    pub url: Option<String>,
    /// A `nonce` to add to the header.
    pub nonce: Option<String>,
    /// The JWK the payload binds (default the account's).
    pub jwk: Option<Value>,
    /// The HMAC key to MAC with (default the credential's).
    pub mac_key: Option<Vec<u8>>,
    /// The signature bytes, replacing the MAC.
    pub signature: Option<Vec<u8>>,
    /// Extra raw header text appended before the closing brace (e.g. `,"alg":"HS256"`).
    pub extra_header: Option<String>,
}

/// The `externalAccountBinding` object for `account_jwk`, posted to `new_account_url`.
pub fn eab_jws(eab: &Eab, account_jwk: &Value, new_account_url: &str, knobs: &EabKnobs) -> Value {
    let alg = knobs.alg.as_deref().unwrap_or("HS256");
    let mut h = serde_json::Map::new();
    h.insert("alg".into(), json!(alg));
    h.insert(
        "kid".into(),
        json!(knobs.kid.as_deref().unwrap_or(&eab.kid)),
    );
    if let Some(nonce) = &knobs.nonce {
        h.insert("nonce".into(), json!(nonce));
    }
    h.insert(
        "url".into(),
        json!(knobs.url.as_deref().unwrap_or(new_account_url)),
    );
    let mut header = Value::Object(h).to_string();
    if let Some(extra) = &knobs.extra_header {
        header.pop();
        header.push_str(extra);
        header.push('}');
    }
    let p = b64(&header);
    let pl = b64(knobs.jwk.as_ref().unwrap_or(account_jwk).to_string());
    let hmac_alg = match alg {
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    };
    let key = hmac::Key::new(hmac_alg, knobs.mac_key.as_deref().unwrap_or(&eab.hmac_key));
    let tag = hmac::sign(&key, format!("{p}.{pl}").as_bytes());
    let sig = knobs
        .signature
        .clone()
        .unwrap_or_else(|| tag.as_ref().to_vec());
    json!({"protected": p, "payload": pl, "signature": b64(sig)})
}

/// An HMAC tag (`alg` HS256, HS384 or HS512) over `message`.
pub fn hmac_tag(alg: &str, key: &[u8], message: &[u8]) -> Vec<u8> {
    let alg = match alg {
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        _ => hmac::HMAC_SHA256,
    };
    hmac::sign(&hmac::Key::new(alg, key), message)
        .as_ref()
        .to_vec()
}

/// The inner JWS of a keyChange (RFC 8555 §7.3.5), signed by `new_key`, with `url` as its
/// url, `account` and `old_key` as its payload, and `nonce` if given (which is a defect).
pub fn key_change_inner(
    new_key: &AccountKey,
    url: &str,
    account: &str,
    old_key: &Value,
    nonce: Option<&str>,
) -> Value {
    let header = protected(
        new_key.alg().name(),
        &KeyRef::Jwk(new_key.jwk()),
        nonce,
        url,
    );
    let payload = json!({"account": account, "oldKey": old_key}).to_string();
    signed_value(&header, payload.as_bytes(), new_key)
}

/// The key authorization of `token` for `key` (RFC 8555 §8.1).
pub fn key_authorization(token: &str, key: &AccountKey) -> String {
    format!("{token}.{}", key.thumbprint())
}

/// A CSR (DER) for `key` asking for `dns` names, `ips` and `uris`, empty subject.
pub fn csr(key: &AccountKey, dns: &[&str], ips: &[IpAddr], uris: &[&str]) -> Vec<u8> {
    csr_with_cn(key, dns, ips, uris, None)
}

/// [`csr`] with a subject commonName.
pub fn csr_with_cn(
    key: &AccountKey,
    dns: &[&str],
    ips: &[IpAddr],
    uris: &[&str],
    cn: Option<&str>,
) -> Vec<u8> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, SanType};
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec());
    let alg = match key.alg() {
        KeyAlg::Es256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlg::Es384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlg::Rs256 => &rcgen::PKCS_RSA_SHA256,
        KeyAlg::EdDsa => &rcgen::PKCS_ED25519,
    };
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, alg).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    let mut sans = Vec::new();
    for d in dns {
        sans.push(SanType::DnsName((*d).try_into().unwrap()));
    }
    for ip in ips {
        sans.push(SanType::IpAddress(*ip));
    }
    for u in uris {
        sans.push(SanType::URI((*u).try_into().unwrap()));
    }
    params.subject_alt_names = sans;
    params.serialize_request(&pair).unwrap().der().to_vec()
}

/// One HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names in lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header `name`.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `Replay-Nonce` header.
    pub fn nonce(&self) -> Option<&str> {
        self.header("replay-nonce")
    }

    /// The `Location` header.
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The problem type's suffix (`malformed`, ...), or `""` when the body is no problem.
    pub fn problem(&self) -> String {
        self.json()["type"]
            .as_str()
            .and_then(|t| t.strip_prefix(PROBLEM))
            .unwrap_or("")
            .to_owned()
    }

    /// Panics unless the response is `status` with problem type `kind` (suffix), served as
    /// `application/problem+json` with a `Replay-Nonce`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, kind: &str) -> &Self {
        assert_eq!(
            (self.status, self.problem().as_str()),
            (status, kind),
            "unexpected answer: {} {}",
            self.status,
            self.text()
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(self.json()["status"], status, "{}", self.text());
        assert!(self.nonce().is_some(), "no Replay-Nonce on {self:?}");
        self
    }

    /// Panics unless the status is `status` (with a `Replay-Nonce`).
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text());
        assert!(self.nonce().is_some(), "no Replay-Nonce on {self:?}");
        self
    }
}

/// An account the server created.
#[derive(Debug)]
pub struct Account {
    /// Its key.
    pub key: AccountKey,
    /// Its URL (the `kid`).
    pub url: String,
}

/// The raw client. Cheap to clone; every request opens its own connection.
#[derive(Clone)]
pub struct AcmeClient {
    addr: SocketAddr,
    host: String,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AcmeClient({})", self.addr)
    }
}

impl AcmeClient {
    /// A client for the HTTPS listener at `addr` (on 127.0.0.1), trusting the root
    /// certificate(s) in the PEM file `root_pem`.
    pub fn new(addr: SocketAddr, root_pem: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(root_pem).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            addr,
            host: addr.to_string(),
            tls: Arc::new(tls),
        }
    }

    /// This client, connecting to `addr` instead but still naming the same host in `Host`
    /// and in URLs: another node behind the same public name.
    pub fn via(&self, addr: SocketAddr) -> Self {
        Self {
            addr,
            host: self.host.clone(),
            tls: self.tls.clone(),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://HOST/acme/` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}/acme/{path}", self.host)
    }

    /// The path part of one of our URLs (`/acme/...`), or `url` itself if it is a path.
    pub fn path_of(&self, url: &str) -> String {
        let prefix = format!("https://{}", self.host);
        url.strip_prefix(&prefix).unwrap_or(url).to_owned()
    }

    /// One raw request: `target` is a path or one of our URLs; `headers` are added as given
    /// (a `Host` among them replaces the default); `Content-Length` is added for a body or
    /// a POST.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let target = self.path_of(target);
        let mut head = format!("{method} {target} HTTP/1.1\r\n");
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
            head.push_str(&format!("Host: {}\r\n", self.host));
        }
        head.push_str("Connection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if method == "POST" || !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.exchange(&bytes)
    }

    fn exchange(&self, request: &[u8]) -> Response {
        let tcp = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).unwrap();
        tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let conn = rustls::ClientConnection::new(self.tls.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // A server refusing a large body may answer and close before reading all of it:
        // then stop writing and read what it said, straight from the socket.
        let mut wrote_all = true;
        for chunk in request.chunks(16 * 1024) {
            if tls.write_all(chunk).and_then(|()| tls.flush()).is_err() {
                wrote_all = false;
                break;
            }
        }
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        if wrote_all {
            loop {
                match tls.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // No close_notify, or a reset after the answer: keep what arrived.
                    Err(e) => {
                        assert!(!raw.is_empty(), "no answer from {}: {e}", self.addr);
                        break;
                    }
                }
                if complete(&raw) {
                    break;
                }
            }
        } else {
            let rustls::StreamOwned { mut conn, mut sock } = tls;
            loop {
                let n = match sock.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if conn.read_tls(&mut &buf[..n]).is_err() || conn.process_new_packets().is_err() {
                    break;
                }
                let _ = conn.reader().read_to_end(&mut raw);
                if complete(&raw) {
                    break;
                }
            }
            assert!(
                !raw.is_empty(),
                "no answer from {} to a request it did not read",
                self.addr
            );
        }
        parse_response(&raw)
    }

    /// A fresh nonce (HEAD newNonce).
    pub fn nonce(&self) -> String {
        let r = self.request("HEAD", "/acme/new-nonce", &[], &[]);
        assert_eq!(r.status, 200, "{r:?}");
        r.nonce()
            .expect("HEAD new-nonce without Replay-Nonce")
            .to_owned()
    }

    /// POSTs `body` as `application/jose+json` to `url`.
    pub fn post_body(&self, url: &str, body: &[u8]) -> Response {
        self.request(
            "POST",
            url,
            &[("Content-Type", "application/jose+json")],
            body,
        )
    }

    /// The correct protected header for `key` (kid when `kid` is given, else jwk) with a
    /// fresh nonce.
    pub fn header_for(&self, key: &AccountKey, kid: Option<&str>, url: &str) -> String {
        let key_ref = match kid {
            Some(kid) => KeyRef::Kid(kid.to_owned()),
            None => KeyRef::Jwk(key.jwk()),
        };
        protected(key.alg().name(), &key_ref, Some(&self.nonce()), url)
    }

    /// A correctly signed POST of `payload` to `url` (fresh nonce; kid when given).
    pub fn post_signed(
        &self,
        key: &AccountKey,
        kid: Option<&str>,
        url: &str,
        payload: &[u8],
    ) -> Response {
        let header = self.header_for(key, kid, url);
        self.post_body(url, &signed(&header, payload, key))
    }

    /// POST `payload` (JSON) to `url` as `account`.
    pub fn post_as(&self, account: &Account, url: &str, payload: &Value) -> Response {
        self.post_signed(
            &account.key,
            Some(&account.url),
            url,
            payload.to_string().as_bytes(),
        )
    }

    /// POST-as-GET to `url` as `account`.
    pub fn get_as(&self, account: &Account, url: &str) -> Response {
        self.post_signed(&account.key, Some(&account.url), url, b"")
    }

    /// newAccount for `key` with the binding `eab` (already built) and extra payload members.
    pub fn new_account_raw(&self, key: &AccountKey, payload: &Value) -> Response {
        self.post_signed(
            key,
            None,
            &self.url("new-account"),
            payload.to_string().as_bytes(),
        )
    }

    /// newAccount for `key` with a correct binding by `eab`; panics unless it is created.
    pub fn new_account(&self, key: AccountKey, eab: &Eab) -> Account {
        let url = self.url("new-account");
        let binding = eab_jws(eab, &key.jwk(), &url, &EabKnobs::default());
        let r = self.new_account_raw(
            &key,
            &json!({"termsOfServiceAgreed": true, "externalAccountBinding": binding}),
        );
        assert_eq!(r.status, 201, "newAccount: {}", r.text());
        Account {
            key,
            url: r
                .location()
                .expect("newAccount without Location")
                .to_owned(),
        }
    }

    /// newOrder for `identifiers` (the JSON array).
    pub fn new_order(&self, account: &Account, identifiers: &Value) -> Response {
        self.post_as(
            account,
            &self.url("new-order"),
            &json!({ "identifiers": identifiers }),
        )
    }

    /// newOrder that must succeed: (order URL, order object).
    pub fn order(&self, account: &Account, identifiers: &Value) -> (String, Value) {
        let r = self.new_order(account, identifiers);
        assert_eq!(r.status, 201, "newOrder: {}", r.text());
        (r.location().unwrap().to_owned(), r.json())
    }

    /// Finalize `order` (its object) with `csr_der`.
    pub fn finalize(&self, account: &Account, order: &Value, csr_der: &[u8]) -> Response {
        self.post_as(
            account,
            order["finalize"].as_str().unwrap(),
            &json!({"csr": b64(csr_der)}),
        )
    }

    /// Polls `order_url` until its status is not `pending`/`processing` or `timeout` passes;
    /// returns the last object.
    pub fn poll_order(&self, account: &Account, order_url: &str, timeout: Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let order = self.get_as(account, order_url).json();
            let status = order["status"].as_str().unwrap_or("").to_owned();
            if (status != "pending" && status != "processing")
                || std::time::Instant::now() >= deadline
            {
                return order;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls an authorization until it is no longer pending (or `timeout` passes).
    pub fn poll_authz(&self, account: &Account, authz_url: &str, timeout: Duration) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let authz = self.get_as(account, authz_url).json();
            if authz["status"] != "pending" || std::time::Instant::now() >= deadline {
                return authz;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Downloads the certificate chain (PEM) at `url`.
    pub fn download(&self, account: &Account, url: &str) -> Response {
        self.get_as(account, url)
    }

    /// A full issuance for an order of `identifiers` that is ready at once (pre-authorized):
    /// (order URL, final order object, leaf DER).
    pub fn issue_ready(
        &self,
        account: &Account,
        identifiers: &Value,
        csr_der: &[u8],
    ) -> (String, Value, Vec<u8>) {
        let (url, order) = self.order(account, identifiers);
        assert_eq!(order["status"], "ready", "{order}");
        let r = self.finalize(account, &order, csr_der);
        assert_eq!(r.status, 200, "finalize: {}", r.text());
        let order = r.json();
        assert_eq!(order["status"], "valid", "{order}");
        let chain = self.download(account, order["certificate"].as_str().unwrap());
        assert_eq!(chain.status, 200, "{chain:?}");
        let leaf = pem_first(&chain.text());
        (url, order, leaf)
    }
}

/// The first PEM block's DER.
pub fn pem_first(text: &str) -> Vec<u8> {
    let start = text.find("-----BEGIN CERTIFICATE-----").unwrap() + 27;
    let end = text[start..].find("-----END").unwrap() + start;
    let b64: String = text[start..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Whether `raw` holds a whole response (headers and, by Content-Length or chunking, body).
fn complete(raw: &[u8]) -> bool {
    let Some(end) = find(raw, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304") {
        return true;
    }
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            return v.trim().parse::<usize>().is_ok_and(|n| body.len() >= n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return find(body, b"0\r\n\r\n").is_some();
        }
    }
    false
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(raw: &[u8]) -> Response {
    let end = find(raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    } else if let Some(n) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(data, b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let stop = (start + size).min(data.len());
        out.extend_from_slice(&data[start..stop]);
        data = &data[(stop + 2).min(data.len())..];
    }
    out
}
