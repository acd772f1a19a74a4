//! REL-3, test A: what a running server acknowledges is on disk first. `strace` follows every
//! thread of `agentca serve` while an operator issues and revokes through its admin socket
//! and an agent enrolls over SCEP, and the system calls must come in this order for each: the store's writes to its data
//! file, then an `fsync`/`fdatasync` of that file that completes, and the audit log's line
//! and its sync, all before the first byte of the reply. (sled's own flush ends with
//! `sync_file_range`, which makes no promise about the file's metadata nor the disk's cache;
//! this is what the store's own `fsync` is for.)
//!
//! A kill -9 cannot show this: the page cache survives it. A power cut would, and the order of
//! these calls is what decides whether it loses an acknowledged write.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use agentca_testkit::tools::{missing, on_path};

use super::harness::{Server, serve_on_free_ports, wrapped};
use super::support::{Env, serial_of};

/// One system call in the trace: where it began and ended (line numbers; the same for a call
/// strace printed whole).
#[derive(Debug)]
struct Call {
    name: String,
    /// The file descriptor's target as `strace -y` prints it (a path, `socket:[…]`, `pipe:[…]`).
    target: String,
    /// The rest of the line it began on (arguments, possibly truncated).
    args: String,
    begun: usize,
    ended: usize,
}

/// Parses `strace -f -y` output: `PID name(fd<target>, …) = result`, or the same split into
/// `… <unfinished ...>` and `PID <... name resumed> …` lines.
fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: HashMap<&str, Call> = HashMap::new();
    for (line_no, line) in text.lines().enumerate() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let name = resumed.split(' ').next().unwrap_or_default();
            if let Some(mut call) = pending.remove(pid)
                && call.name == name
            {
                call.ended = line_no;
                calls.push(call);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name.starts_with("+++") || name.starts_with("---") {
            continue;
        }
        let target = args
            .split_once('<')
            .and_then(|(fd, after)| fd.chars().all(|c| c.is_ascii_digit()).then_some(after))
            .and_then(|after| after.split_once('>'))
            .map_or("", |(target, _)| target);
        let call = Call {
            name: name.to_owned(),
            target: target.to_owned(),
            args: args.to_owned(),
            begun: line_no,
            ended: line_no,
        };
        if rest.ends_with("<unfinished ...>") {
            pending.insert(pid, call);
        } else {
            calls.push(call);
        }
    }
    calls.sort_by_key(|c| c.begun);
    calls
}

const WRITES: &[&str] = &["write", "pwrite64", "writev", "pwritev", "pwritev2"];
const SYNCS: &[&str] = &["fsync", "fdatasync"];
const SENDS: &[&str] = &["write", "writev", "sendto", "sendmsg"];
const READS: &[&str] = &["read", "recvfrom", "recvmsg"];

/// How one kind of request and its success look on a socket, as strace prints the data.
struct Exchange<'a> {
    what: &'a str,
    /// In the first read of the request.
    request: String,
    /// At the start of the successful reply.
    reply: &'a str,
}

impl<'a> Exchange<'a> {
    /// An operator command `op` over the admin socket: one JSON line each way.
    fn admin(op: &'a str) -> Self {
        Self {
            what: op,
            request: format!("\\\"op\\\":\\\"{op}\\\""),
            reply: "{\\\"ok\\\"",
        }
    }
}

/// Checks the order of one acknowledged operation: its request read from a socket, then the
/// writes to each of `files`, then a completed sync of it, all before the reply.
fn assert_durable_before_reply(
    calls: &[Call],
    exchange: &Exchange<'_>,
    files: &[&Path],
    trace: &Path,
) {
    let (op, request) = (exchange.what, &exchange.request);
    let asked = calls
        .iter()
        .find(|c| {
            READS.contains(&c.name.as_str())
                && c.target.starts_with("socket:")
                && c.args.contains(request.as_str())
        })
        .unwrap_or_else(|| panic!("no {op} request read in {}", trace.display()));
    let reply = calls
        .iter()
        .find(|c| {
            c.begun > asked.ended
                && SENDS.contains(&c.name.as_str())
                && c.target.starts_with("socket:")
                && c.args.contains(exchange.reply)
        })
        .unwrap_or_else(|| panic!("no reply to {op} in {}", trace.display()));
    for file in files {
        let file = file.to_str().unwrap();
        let on_file = |names: &[&str], c: &&Call| {
            names.contains(&c.name.as_str())
                && c.target == file
                && c.begun > asked.ended
                && c.begun < reply.begun
        };
        let last_write = calls
            .iter()
            .filter(|c| on_file(WRITES, c))
            .map(|c| c.ended)
            .max()
            .unwrap_or_else(|| panic!("{op}: nothing written to {file} before the reply"));
        assert!(
            calls
                .iter()
                .filter(|c| on_file(SYNCS, c))
                .any(|c| c.begun > last_write && c.ended < reply.begun),
            "{op}: no fsync of {file} after its last write (line {}) completed before the reply \
             (line {}); trace in {}",
            last_write + 1,
            reply.begun + 1,
            trace.display()
        );
    }
}

#[test]
fn issuance_revocation_and_enrollment_are_synced_to_disk_before_the_reply() {
    let Some(strace) = on_path("strace") else {
        missing("strace", "the durability order test (REL-3)");
        return;
    };
    let env = Env::with_ca();
    // The order of a database's own writes is PostgreSQL's to keep.
    if env.postgres_url().is_some() {
        return;
    }
    let alice = env.add_agent("/agent/alice", &[]);
    let trace = env.path("serve.trace");
    let names: Vec<&str> = WRITES
        .iter()
        .chain(SYNCS)
        .chain(SENDS)
        .chain(READS)
        .chain(&["sync_file_range"])
        .copied()
        .collect();
    let filter = format!("trace={}", names.join(","));
    let trace_arg = trace.to_str().unwrap();
    let options = [
        "-f",
        "-y",
        "-s",
        "64",
        "-e",
        filter.as_str(),
        "-o",
        trace_arg,
    ];
    let args: Vec<&OsStr> = options.iter().map(OsStr::new).collect();
    let server = Server::start(wrapped(
        strace.to_str().unwrap(),
        &args,
        &serve_on_free_ports(&env),
    ));
    let serial = serial_of(&env.issue(&alice, &env.csr("traced"), &[]));
    let doc = env.json(&["revoke", &serial, "--reason", "keyCompromise"]);
    assert_eq!(doc["status"], "revoked");
    // A SCEP enrollment: its challenge spent and its certificate stored, on disk, before the
    // CertRep leaves.
    let challenge = env.json(&["token", "create", "--agent", &alice, "--for", "scep"]);
    let request =
        super::scep_clients::ready_pkcs_req(&env, challenge["challenge"].as_str().unwrap());
    let enrolled = super::scep_clients::post_pki_message(server.http, &request);
    assert_eq!(enrolled.status, 200);
    // strace keeps SIGTERM to itself: the server, its child, gets it.
    let tracer = server.pid();
    let children = format!("/proc/{tracer}/task/{tracer}/children");
    let traced: u32 = std::fs::read_to_string(&children)
        .unwrap()
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no process under strace ({children})"));
    let (status, log) = server.terminate_through(traced);
    assert!(status.success(), "{status}\n{log}");

    let text = std::fs::read_to_string(&trace).unwrap();
    let calls = parse_trace(&text);
    let store = env.data_file("store/db");
    let audit = env.data_file("audit.log");
    let files = [store.as_path(), audit.as_path()];
    assert_durable_before_reply(&calls, &Exchange::admin("issue"), &files, &trace);
    assert_durable_before_reply(&calls, &Exchange::admin("revoke"), &files, &trace);
    let scep = Exchange {
        what: "SCEP PKCSReq",
        request: "POST /scep".into(),
        reply: "HTTP/1.1 200",
    };
    assert_durable_before_reply(&calls, &scep, &files, &trace);
    // sled's flush is there too: the fsync is ours on top of it, not instead of it.
    let db = store.to_str().unwrap();
    assert!(
        calls
            .iter()
            .any(|c| c.name == "sync_file_range" && c.target == db),
        "no sync_file_range of {db}"
    );
}

#[test]
fn the_trace_parser_pairs_split_calls() {
    let text = "\
11 read(9<socket:[77]>, \"{\\\"op\\\":\\\"issue\\\"\"..., 8192) = 120
12 pwrite64(7</d/store/db>, \"x\", 1, 0) = 1
12 fsync(7</d/store/db> <unfinished ...>
11 write(2<pipe:[5]>, \"log\", 3) = 3
12 <... fsync resumed>) = 0
11 write(9<socket:[77]>, \"{\\\"ok\\\":{}}\\n\", 10) = 10
13 +++ exited with 0 +++
";
    let calls = parse_trace(text);
    let names: Vec<(&str, &str, usize, usize)> = calls
        .iter()
        .map(|c| (c.name.as_str(), c.target.as_str(), c.begun, c.ended))
        .collect();
    assert_eq!(
        names,
        [
            ("read", "socket:[77]", 0, 0),
            ("pwrite64", "/d/store/db", 1, 1),
            ("fsync", "/d/store/db", 2, 4),
            ("write", "pipe:[5]", 3, 3),
            ("write", "socket:[77]", 5, 5),
        ]
    );
    let trace = Path::new("inline");
    let files = [Path::new("/d/store/db")];
    assert_durable_before_reply(&calls, &Exchange::admin("issue"), &files, trace);
    // The same with the fsync finishing after the reply began: refused.
    let late = text.replace(
        "12 <... fsync resumed>) = 0\n11 write(9<socket:[77]>, \"{\\\"ok\\\":{}}\\n\", 10) = 10",
        "11 write(9<socket:[77]>, \"{\\\"ok\\\":{}}\\n\", 10) = 10\n12 <... fsync resumed>) = 0",
    );
    assert_ne!(late, text);
    let refused = std::panic::catch_unwind(|| {
        assert_durable_before_reply(
            &parse_trace(&late),
            &Exchange::admin("issue"),
            &files,
            trace,
        )
    });
    assert!(
        refused.is_err(),
        "a sync that ends after the reply was accepted"
    );
}
