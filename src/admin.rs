//! The admin socket: how operator commands reach a running `agentca serve`.
//!
//! `serve` holds the store (sled allows one process), so while it runs the CLI sends each
//! operation over a unix socket in the data directory instead of opening the store. The socket
//! file is mode 0600 and the server also checks the peer's credentials: only the data
//! directory's owner (or root) may operate the CA. Nothing on the TCP listeners exposes these
//! operations.
//!
//! Protocol: one JSON [`Request`] per connection, one line; the answer is one JSON line,
//! `{"ok": Reply}` or `{"error": {"kind": …, "message": …}}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use agentca_core::ca::DataDir;
use agentca_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::operations::{self, Backend, Reply, Request};

/// The largest request accepted (an issue request carries a CSR of at most 32 KiB).
pub(crate) const MAX_REQUEST: u64 = 256 * 1024;

/// How long the CLI waits for a server to answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The socket's path in a data directory.
pub(crate) fn socket_path(dir: &DataDir) -> PathBuf {
    dir.file("admin.sock")
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Ok(Box<Reply>),
    Error { kind: String, message: String },
}

/// Sends `request` to the server running on `dir`, if one is. `Ok(None)` means no server is
/// running (no socket, or a stale one nobody listens on): the caller works on the directory.
pub(crate) fn try_remote(dir: &DataDir, request: &Request) -> Result<Option<Result<Reply>>> {
    let path = socket_path(dir);
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(Error::io(format!("connect to {}", path.display()), e)),
    };
    let io = |e| Error::io(format!("talk to the server at {}", path.display()), e);
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
    let mut line =
        serde_json::to_vec(request).map_err(|_| Error::Unreachable("requests encode as JSON"))?;
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(&stream, 64 * 1024 * 1024))
        .read_line(&mut answer)
        .map_err(io)?;
    let answer: Answer = serde_json::from_str(&answer).map_err(|e| Error::Remote {
        kind: "internal".into(),
        message: format!("unreadable answer from the server: {e}"),
    })?;
    Ok(Some(match answer {
        Answer::Ok(reply) => Ok(*reply),
        Answer::Error { kind, message } => Err(Error::Remote { kind, message }),
    }))
}

/// Executes one request line on the server side and returns the answer line.
pub(crate) fn handle_line(backend: &dyn Backend, line: &[u8]) -> Vec<u8> {
    let answer = match serde_json::from_slice::<Request>(line) {
        Ok(request) => match operations::execute(backend, request) {
            Ok(reply) => Answer::Ok(Box::new(reply)),
            Err(e) => Answer::Error {
                kind: crate::output::kind(&e).to_owned(),
                message: e.to_string(),
            },
        },
        Err(e) => Answer::Error {
            kind: "invalidArgument".into(),
            message: format!("malformed admin request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_else(|_| {
        br#"{"error":{"kind":"internal","message":"unencodable answer"}}"#.to_vec()
    });
    out.push(b'\n');
    out
}
