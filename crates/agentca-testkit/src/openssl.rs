//! INV-9 with OpenSSL: `openssl verify` as an independent chain validator, with and without a
//! CRL.

use std::ffi::OsStr;
use std::path::Path;

use crate::tools::{self, Scratch};

/// What an external verifier concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The verifier accepted the certificate.
    Accepted,
    /// The verifier rejected it; the text is its transcript.
    Rejected(String),
    /// The tool is not installed and tools are not required; nothing was checked.
    Skipped,
}

impl Verdict {
    /// Fails unless the verifier accepted (a skip passes: the notice was already printed).
    pub fn assert_accepted(&self) {
        if let Self::Rejected(transcript) = self {
            panic!("INV-9 violated: openssl rejected the certificate:\n{transcript}");
        }
    }

    /// Fails unless the verifier rejected and its transcript contains `needle` (for example
    /// `"certificate revoked"`); a skip passes.
    pub fn assert_rejected_with(&self, needle: &str) {
        match self {
            Self::Accepted => panic!("openssl accepted a certificate it should reject ({needle})"),
            Self::Rejected(transcript) if !transcript.contains(needle) => {
                panic!("openssl rejected the certificate, but not with {needle:?}:\n{transcript}")
            }
            Self::Rejected(_) | Self::Skipped => {}
        }
    }
}

/// Runs `openssl verify -x509_strict -purpose sslclient` on a leaf with a trusted root and
/// untrusted intermediates (all PEM files) and fails unless OpenSSL says OK.
///
/// `-x509_strict` makes OpenSSL apply RFC 5280 rules it skips by default (AKI present,
/// critical SAN for an empty subject, basicConstraints of CAs, …). `-purpose sslclient`
/// requires clientAuth in the EKU; it does not look at names, so URI-only leaves pass.
pub fn openssl_verify(leaf_pem_path: &Path, root_pem_path: &Path, untrusted_chain_path: &Path) {
    verify(leaf_pem_path, root_pem_path, untrusted_chain_path, None).assert_accepted();
}

/// Like [`openssl_verify`] with `-crl_check -CRLfile crl` (PEM): the leaf's revocation status
/// is looked up in the CRL, which must be valid and signed by the leaf's issuer. Returns the
/// verdict so a test can assert either outcome, e.g.
/// `verdict.assert_rejected_with("certificate revoked")`.
pub fn openssl_verify_with_crl(
    leaf_pem_path: &Path,
    root_pem_path: &Path,
    untrusted_chain_path: &Path,
    crl_pem_path: &Path,
) -> Verdict {
    verify(
        leaf_pem_path,
        root_pem_path,
        untrusted_chain_path,
        Some(crl_pem_path),
    )
}

/// [`openssl_verify`] on DER inputs: writes them to PEM files first. `intermediates_der` are
/// the certificates between the leaf and the root (the issuing CA).
pub fn openssl_verify_der(leaf_der: &[u8], intermediates_der: &[Vec<u8>], root_der: &[u8]) {
    verify_der(leaf_der, intermediates_der, root_der, None).assert_accepted();
}

/// [`openssl_verify_with_crl`] on DER inputs.
pub fn openssl_verify_der_with_crl(
    leaf_der: &[u8],
    intermediates_der: &[Vec<u8>],
    root_der: &[u8],
    crl_der: &[u8],
) -> Verdict {
    verify_der(leaf_der, intermediates_der, root_der, Some(crl_der))
}

fn verify_der(
    leaf_der: &[u8],
    intermediates_der: &[Vec<u8>],
    root_der: &[u8],
    crl_der: Option<&[u8]>,
) -> Verdict {
    let scratch = Scratch::new();
    let leaf = scratch.write(
        "leaf.pem",
        tools::pem("CERTIFICATE", &[leaf_der]).as_bytes(),
    );
    let root = scratch.write(
        "root.pem",
        tools::pem("CERTIFICATE", &[root_der]).as_bytes(),
    );
    let intermediates: Vec<&[u8]> = intermediates_der.iter().map(Vec::as_slice).collect();
    let chain = scratch.write(
        "chain.pem",
        tools::pem("CERTIFICATE", &intermediates).as_bytes(),
    );
    let crl =
        crl_der.map(|der| scratch.write("crl.pem", tools::pem("X509 CRL", &[der]).as_bytes()));
    verify(&leaf, &root, &chain, crl.as_deref())
}

fn verify(leaf: &Path, root: &Path, untrusted: &Path, crl: Option<&Path>) -> Verdict {
    let mut args: Vec<&OsStr> = ["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"]
        .iter()
        .map(OsStr::new)
        .collect();
    args.push(root.as_os_str());
    // An empty -untrusted file makes OpenSSL fail to load it; leave it out instead.
    let has_untrusted = std::fs::metadata(untrusted).is_ok_and(|m| m.len() > 0);
    if has_untrusted {
        args.push(OsStr::new("-untrusted"));
        args.push(untrusted.as_os_str());
    }
    if let Some(crl) = crl {
        args.extend([OsStr::new("-crl_check"), OsStr::new("-CRLfile")]);
        args.push(crl.as_os_str());
    }
    args.push(leaf.as_os_str());

    let Some(output) = tools::run("openssl", &args, "openssl verify (INV-9)") else {
        return Verdict::Skipped;
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && stdout.trim_end().ends_with(": OK") {
        Verdict::Accepted
    } else {
        Verdict::Rejected(tools::transcript(&output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpki::{Leaf, Pki};

    fn leaf_and_serial(pki: &Pki) -> (Vec<u8>, Vec<u8>) {
        let leaf = Leaf::new();
        let der = pki.issue(&leaf.params, &leaf.key);
        let serial = leaf.params.serial_number.clone().unwrap().to_bytes();
        (der, serial)
    }

    #[test]
    fn accepts_a_correct_uri_only_leaf() {
        let pki = Pki::new();
        let (leaf, _) = leaf_and_serial(&pki);
        openssl_verify_der(&leaf, std::slice::from_ref(&pki.ca_der), &pki.root_der);
    }

    #[test]
    fn accepts_with_pem_paths() {
        let pki = Pki::new();
        let (leaf, _) = leaf_and_serial(&pki);
        let scratch = Scratch::new();
        let leaf = scratch.write("l.pem", tools::pem("CERTIFICATE", &[&leaf]).as_bytes());
        let root = scratch.write(
            "r.pem",
            tools::pem("CERTIFICATE", &[&pki.root_der]).as_bytes(),
        );
        let chain = scratch.write(
            "c.pem",
            tools::pem("CERTIFICATE", &[&pki.ca_der]).as_bytes(),
        );
        openssl_verify(&leaf, &root, &chain);
    }

    #[test]
    fn rejects_a_leaf_from_another_ca() {
        let pki = Pki::new();
        let stranger = Pki::new();
        let (leaf, _) = leaf_and_serial(&stranger);
        let verdict = verify_der(
            &leaf,
            std::slice::from_ref(&pki.ca_der),
            &pki.root_der,
            None,
        );
        verdict.assert_rejected_with("unable to get local issuer certificate");
        if verdict != Verdict::Skipped {
            crate::testpki::assert_fails_with(&["INV-9"], || {
                openssl_verify_der(&leaf, std::slice::from_ref(&pki.ca_der), &pki.root_der)
            });
        }
    }

    #[test]
    fn crl_check_rejects_revoked_and_accepts_others() {
        let pki = Pki::new();
        let (revoked, serial) = leaf_and_serial(&pki);
        let (fine, _) = leaf_and_serial(&pki);
        let crl = pki.crl(&[&serial]);
        let chain = [pki.ca_der.clone()];
        openssl_verify_der_with_crl(&revoked, &chain, &pki.root_der, &crl)
            .assert_rejected_with("certificate revoked");
        openssl_verify_der_with_crl(&fine, &chain, &pki.root_der, &crl).assert_accepted();
    }

    #[test]
    fn crl_check_rejects_a_crl_from_another_ca() {
        let pki = Pki::new();
        let stranger = Pki::new();
        let (leaf, _) = leaf_and_serial(&pki);
        let crl = stranger.crl(&[]);
        let verdict = openssl_verify_der_with_crl(
            &leaf,
            std::slice::from_ref(&pki.ca_der),
            &pki.root_der,
            &crl,
        );
        verdict.assert_rejected_with("unable to get certificate CRL");
    }

    #[test]
    fn verdict_assertions() {
        Verdict::Accepted.assert_accepted();
        Verdict::Skipped.assert_accepted();
        Verdict::Skipped.assert_rejected_with("x");
        Verdict::Rejected("error: certificate revoked".into())
            .assert_rejected_with("certificate revoked");
        crate::testpki::assert_fails_with(&["INV-9"], || {
            Verdict::Rejected("nope".into()).assert_accepted()
        });
        crate::testpki::assert_fails_with(&["should reject"], || {
            Verdict::Accepted.assert_rejected_with("revoked")
        });
        crate::testpki::assert_fails_with(&["not with"], || {
            Verdict::Rejected("expired".into()).assert_rejected_with("revoked")
        });
    }
}
