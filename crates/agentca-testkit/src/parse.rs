//! Parsing that fails the test instead of returning an error.

use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Parses one DER certificate that must fill `der` exactly; `what` names it in the message.
pub(crate) fn certificate<'a>(what: &str, der: &'a [u8]) -> X509Certificate<'a> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => cert,
        Ok((rest, _)) => panic!(
            "the {what} certificate has {} bytes after its DER encoding",
            rest.len()
        ),
        Err(e) => panic!("the {what} certificate does not parse as DER X.509: {e}"),
    }
}

/// Lowercase hex, for messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
