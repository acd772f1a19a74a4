//! INV-8: pkilint's RFC 5280 / RFC 6960 linters on certificates, CRLs and OCSP responses.
//!
//! pkilint reports findings at six severities. FATAL, ERROR, WARNING and NOTICE fail a test;
//! INFO and DEBUG findings are statements of fact (for example "the SKI was made with
//! method 1") and are ignored. Individual codes can be allowed by the `_allowing` variants,
//! each use of which should say why in the calling test.

use std::ffi::OsStr;
use std::path::PathBuf;

use serde_json::Value;

use crate::tools::{self, Scratch};

/// Severities that fail a lint.
const FAILING: [&str; 4] = ["FATAL", "ERROR", "WARNING", "NOTICE"];

/// One pkilint finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// FATAL, ERROR, WARNING, NOTICE, INFO or DEBUG.
    pub severity: String,
    /// The finding's code, e.g. `pkix.ca_certificate_no_ku_extension`.
    pub code: String,
    /// Where in the document pkilint found it.
    pub node_path: String,
    /// pkilint's explanation, when it gives one.
    pub message: Option<String>,
}

/// Lints a DER certificate with `lint_pkix_cert` and fails on any finding of NOTICE severity
/// or above.
pub fn pkilint_cert(der: &[u8]) {
    pkilint_cert_allowing(der, &[]);
}

/// [`pkilint_cert`] tolerating the finding codes in `allowed`.
pub fn pkilint_cert_allowing(der: &[u8], allowed: &[&str]) {
    lint("lint_pkix_cert", &["lint"], &[("cert.der", der)], allowed);
}

/// Lints a DER CRL with `lint_crl` (type CRL, PKIX profile) and fails on any finding of
/// NOTICE severity or above.
pub fn pkilint_crl(der: &[u8]) {
    pkilint_crl_allowing(der, &[]);
}

/// [`pkilint_crl`] tolerating the finding codes in `allowed`.
pub fn pkilint_crl_allowing(der: &[u8], allowed: &[&str]) {
    lint(
        "lint_crl",
        &["lint", "-t", "CRL", "-p", "PKIX"],
        &[("crl.der", der)],
        allowed,
    );
}

/// Lints a DER OCSPResponse with `lint_ocsp_response` and fails on any finding of NOTICE
/// severity or above.
pub fn pkilint_ocsp(der: &[u8]) {
    pkilint_ocsp_allowing(der, &[]);
}

/// [`pkilint_ocsp`] tolerating the finding codes in `allowed`.
pub fn pkilint_ocsp_allowing(der: &[u8], allowed: &[&str]) {
    lint(
        "lint_ocsp_response",
        &["lint"],
        &[("ocsp.der", der)],
        allowed,
    );
}

/// Lints an issuer/subject pair with `lint_pkix_signer_signee_cert_chain` (name chaining,
/// key identifiers, validity nesting) and fails on any finding of NOTICE severity or above.
pub fn pkilint_issuer_subject(issuer_der: &[u8], subject_der: &[u8]) {
    lint(
        "lint_pkix_signer_signee_cert_chain",
        &["lint"],
        &[("issuer.der", issuer_der), ("subject.der", subject_der)],
        &[],
    );
}

/// Runs a pkilint linter and returns all its findings, or `None` when pkilint is not
/// installed (and tools are not required). Fails if pkilint cannot load the document.
pub fn findings(program: &str, args: &[&str], documents: &[(&str, &[u8])]) -> Option<Vec<Finding>> {
    let scratch = Scratch::new();
    let paths: Vec<PathBuf> = documents
        .iter()
        .map(|(name, der)| scratch.write(name, der))
        .collect();
    let mut argv: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    argv.extend(
        ["-f", "JSON", "-s", "ALL", "--document-format", "DER"]
            .iter()
            .map(OsStr::new),
    );
    argv.extend(paths.iter().map(|p| p.as_os_str()));

    let output = tools::run(program, &argv, &format!("pkilint {program} (INV-8)"))?;
    let report: Value = match serde_json::from_slice(&output.stdout) {
        Ok(report) => report,
        Err(e) => panic!(
            "{program} produced no JSON report ({e}); it probably could not load the document:\n{}",
            tools::transcript(&output)
        ),
    };
    Some(parse_report(program, &report))
}

fn parse_report(program: &str, report: &Value) -> Vec<Finding> {
    let Some(results) = report.get("results").and_then(Value::as_array) else {
        panic!("{program}'s JSON report has no results array: {report}");
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    let mut out = Vec::new();
    for result in results {
        let node_path = text(result, "node_path").unwrap_or_default();
        let descriptions = result
            .get("finding_descriptions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for d in descriptions {
            out.push(Finding {
                severity: text(d, "severity").unwrap_or_default(),
                code: text(d, "code").unwrap_or_default(),
                node_path: node_path.clone(),
                message: text(d, "message"),
            });
        }
    }
    out
}

fn lint(program: &str, args: &[&str], documents: &[(&str, &[u8])], allowed: &[&str]) {
    let Some(all) = findings(program, args, documents) else {
        return;
    };
    let failing: Vec<&Finding> = all
        .iter()
        .filter(|f| FAILING.contains(&f.severity.as_str()) && !allowed.contains(&f.code.as_str()))
        .collect();
    if !failing.is_empty() {
        let listing: String = all
            .iter()
            .map(|f| {
                format!(
                    "  {} {} at {}{}\n",
                    f.severity,
                    f.code,
                    f.node_path,
                    f.message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        panic!(
            "INV-8 violated: {program} reported {} finding(s) of NOTICE severity or above:\n{listing}",
            failing.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_parsing() {
        let report: Value = serde_json::from_str(
            r#"{"results": [{"node_path": "certificate.tbsCertificate.extensions",
                "validator": "KeyUsagePresenceValidator",
                "finding_descriptions": [{"severity": "ERROR",
                  "code": "pkix.ca_certificate_no_ku_extension", "message": null}]}]}"#,
        )
        .unwrap();
        let findings = parse_report("lint_pkix_cert", &report);
        assert_eq!(
            findings,
            vec![Finding {
                severity: "ERROR".into(),
                code: "pkix.ca_certificate_no_ku_extension".into(),
                node_path: "certificate.tbsCertificate.extensions".into(),
                message: None,
            }]
        );
        assert!(parse_report("x", &serde_json::json!({"results": []})).is_empty());
    }
}
