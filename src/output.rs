//! Printing results: one line of text per fact, or one JSON document per command.

use std::io::Write;

use serde_json::Value;

use crate::OutputFormat;

/// Prints a command's result: `text` for people, `json` for programs.
pub(crate) fn print(format: OutputFormat, text: &str, json: &Value) {
    let mut out = std::io::stdout().lock();
    let result = match format {
        OutputFormat::Text => {
            if text.is_empty() {
                Ok(())
            } else if text.ends_with('\n') {
                out.write_all(text.as_bytes())
            } else {
                writeln!(out, "{text}")
            }
        }
        OutputFormat::Json => writeln!(out, "{json:#}"),
    };
    // A closed pipe (e.g. `| head`) is not an error worth a panic.
    let _ = result.and_then(|()| out.flush());
}

/// Prints an error: one line on standard error, or a JSON document on standard output.
pub(crate) fn error(format: OutputFormat, e: &agentca_core::Error) {
    match format {
        OutputFormat::Text => eprintln!("error: {e}"),
        OutputFormat::Json => {
            let doc = serde_json::json!({ "error": { "kind": kind(e), "message": e.to_string() } });
            let mut out = std::io::stdout().lock();
            // A closed pipe must not turn an error into a panic.
            let _ = writeln!(out, "{doc:#}").and_then(|()| out.flush());
        }
    }
}

/// The error kind as JSON output and the admin protocol name it.
pub(crate) fn kind(e: &agentca_core::Error) -> &str {
    use agentca_core::Error as E;
    match e {
        E::Remote { kind, .. } => kind,
        E::InvalidAgentId(_) => "invalidAgentId",
        E::BadCsr(_) => "badCsr",
        E::UnsupportedKey(_) => "badKey",
        E::PolicyRefused { .. } => "policyRefused",
        E::PolicyFile { .. } => "policyFile",
        E::UnknownAgent(_) => "unknownAgent",
        E::AgentDisabled(_) => "agentDisabled",
        E::AgentExists(_) => "agentExists",
        E::UnknownSerial(_) => "unknownSerial",
        E::AlreadyRevoked(_) => "alreadyRevoked",
        E::InvalidLifetime(_) => "invalidLifetime",
        E::RateLimited { .. } => "rateLimited",
        E::KeyFile { .. } => "keyFile",
        E::Pkcs11(_) => "pkcs11",
        E::DataDir { .. } => "dataDir",
        E::Audit(_) => "audit",
        E::Store(_) => "store",
        E::Io { .. } => "io",
        E::InvalidArgument(_) => "invalidArgument",
        _ => "internal",
    }
}
