//! The append-only, hash-chained audit log.
//!
//! Every issuance, revocation, agent change and token change, and every refused request, is
//! written here as one line of JSON. Each line commits to the one before it, so editing,
//! removing, inserting or reordering a line is detected by [`verify`] at that exact line.
//!
//! # Line format
//!
//! A line is a compact JSON object (no whitespace between tokens) with exactly these members,
//! in this order, followed by a single `\n`:
//!
//! | member   | content |
//! |----------|---------|
//! | `seq`    | 1 for the first entry, then each entry's `seq` is the previous one's plus one |
//! | `time`   | when the entry was written, RFC 3339 in UTC (`Z`) |
//! | `event`  | a short name such as `cert.issued`, `cert.revoked`, `agent.added` |
//! | `fields` | a JSON object with the details (serial, agent, reason, ...); never secrets |
//! | `prev`   | the previous entry's `hash`, or 64 `0`s for the first entry |
//! | `hash`   | lowercase hex SHA-256 of the entry's canonical bytes (below) |
//!
//! # Canonical bytes
//!
//! The hash is computed over bytes, not over a re-serialization, so a verifier needs no JSON
//! canonicalization rules. The canonical bytes of an entry are its line with the trailing `\n`
//! removed and the final member `,"hash":"<64 hex digits>"` removed, i.e. the line ends in
//!
//! ```text
//! ...,"prev":"<64 hex>","hash":"<64 hex>"}\n
//! ```
//!
//! and its canonical bytes are everything up to and including `"prev":"<64 hex>"` followed by
//! one `}`. In other words, the canonical bytes are the JSON object `{"seq":..,"time":..,
//! "event":..,"fields":..,"prev":..}` exactly as it appears on the line, and an independent
//! verifier checks a line by:
//!
//! 1. stripping the final `\n`;
//! 2. checking that the line ends with `,"hash":"` + 64 lowercase hex digits + `"}` and removing
//!    that suffix;
//! 3. appending `}` and comparing the SHA-256 of the result with the removed digits;
//! 4. parsing the line as JSON and checking that `seq` is the previous entry's plus one and
//!    `prev` equals the previous entry's `hash`.
//!
//! # What the chain can and cannot show
//!
//! The chain proves the log's *prefix* intact. Whole lines cut from the *end* leave a valid,
//! shorter chain; no verifier can see them from the file alone. That is covered elsewhere: the
//! store's records are reconciled against the log (every issued certificate must have its audit
//! entries), and an attacker able to rewrite the file can also recompute every hash, which only
//! signed checkpoints kept apart from the data directory would expose.
//!
//! # Durability and crashes
//!
//! [`AuditLog::append`] writes a whole line with one `write` to a file opened with `O_APPEND`
//! and does not wait for the disk; [`AuditLog::sync`] makes everything appended so far durable,
//! sharing one `fdatasync` among concurrent callers. A caller syncs before it acknowledges
//! anything. A crash can therefore leave at most a torn, never-acknowledged last line, which
//! [`AuditLog::open`] cuts off and records as an `audit.recovered` entry.
//!
//! One process at a time appends: [`AuditLog::open`] takes an exclusive advisory lock on the
//! file for as long as the log is open, so two writers can never interleave or fork the chain.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use agentca_store::{FlushFailed, GroupCommit};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Error, Result};

/// The `prev` of the first entry.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// How long [`AuditLog::open`] waits for another process to release the log.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The event [`AuditLog::open`] appends after cutting off a torn last line.
pub const RECOVERED_EVENT: &str = "audit.recovered";

/// No line may be longer than this; it bounds the memory a damaged file can make us use.
const MAX_LINE: usize = 1 << 20;

/// The member that closes every line, before the 64 hex digits and `"}`.
const HASH_MEMBER: &[u8] = b",\"hash\":\"";
const HEX_LEN: usize = 64;
/// `,"hash":"` + 64 hex digits + `"}`.
const SUFFIX_LEN: usize = HASH_MEMBER.len() + HEX_LEN + 2;

/// An open audit log, ready to append.
///
/// Cheap to share between threads (`&self` methods). Dropping it releases the file lock.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    tail: Mutex<Tail>,
    commit: GroupCommit,
    /// Set when a write could not be undone or an fsync failed: the file's state is unknown,
    /// so nothing more is appended until the log is reopened (which re-reads the tail).
    broken: AtomicBool,
    /// When an entry first failed to be appended (the caller got the error), in Unix seconds;
    /// `i64::MAX` while none has: whatever it recorded may be in the store without its line.
    lost_since: AtomicI64,
    /// Told the time of the first lost entry, once (see [`AuditLog::on_first_loss`]).
    loss_hook: LossHook,
}

/// What [`AuditLog::on_first_loss`] set.
#[derive(Default)]
struct LossHook(OnceLock<Box<dyn Fn(OffsetDateTime) + Send + Sync>>);

impl fmt::Debug for LossHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "LossHook(set)"
        } else {
            "LossHook(none)"
        })
    }
}

/// What the next append needs to know about the end of the chain.
#[derive(Debug)]
struct Tail {
    seq: u64,
    head: String,
    len: u64,
}

impl AuditLog {
    /// Opens (or creates, with mode 0600) the audit log at `path`, waiting up to
    /// [`DEFAULT_LOCK_TIMEOUT`] for another process to release it.
    ///
    /// A torn last line (no trailing newline: a write cut short by a crash, never
    /// acknowledged) is cut off and an `audit.recovered` entry records how many bytes were
    /// dropped. If the last complete line is not a valid entry the log is refused: appending
    /// after damage would hide it.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_lock_timeout(path, DEFAULT_LOCK_TIMEOUT)
    }

    /// [`AuditLog::open`] with a chosen wait for the file lock.
    pub fn open_with_lock_timeout(path: &Path, lock_timeout: Duration) -> Result<Self> {
        let file = open_or_create(path)?;
        lock_exclusive(&file, path, lock_timeout)?;

        let ctx = |what: &str| format!("{what} audit log {}", path.display());
        let mut len = file
            .metadata()
            .map_err(|e| Error::io(ctx("reading the size of"), e))?
            .len();

        // Cut off a torn last line. Only an unacknowledged write can be torn, because every
        // line is written whole and synced before anything is acknowledged.
        let mut dropped = 0;
        if len > 0 && read_byte(&file, len - 1).map_err(|e| Error::io(ctx("reading"), e))? != b'\n'
        {
            let keep = last_newline_before(&file, len)
                .map_err(|e| Error::io(ctx("reading"), e))?
                .map_or(0, |at| at + 1);
            dropped = len - keep;
            file.set_len(keep)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(ctx("truncating the torn last line of"), e))?;
            len = keep;
        }

        let (seq, head) = if len == 0 {
            (0, GENESIS_PREV.to_owned())
        } else {
            let entry = read_last_entry(&file, len).map_err(|reason| {
                Error::Audit(format!(
                    "{}: {reason}; refusing to append after a damaged entry \
                     (run `agentca audit verify`)",
                    path.display()
                ))
            })?;
            (entry.seq, entry.hash)
        };

        let log = Self {
            path: path.to_owned(),
            file,
            tail: Mutex::new(Tail { seq, head, len }),
            commit: GroupCommit::new(),
            broken: AtomicBool::new(false),
            lost_since: AtomicI64::new(i64::MAX),
            loss_hook: LossHook::default(),
        };
        if dropped > 0 {
            let mut fields = Map::new();
            fields.insert("dropped_bytes".to_owned(), Value::from(dropped));
            log.append(RECOVERED_EVENT, Value::Object(fields))?;
            log.sync()?;
        }
        Ok(log)
    }

    /// The file this log writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and returns its `seq`. Not yet durable: call [`AuditLog::sync`]
    /// before acknowledging anything the entry records.
    ///
    /// `event` must be 1 to 64 characters of `a-z`, `0-9`, `.`, `-`, `_`; `fields` must be a
    /// JSON object (or `null`, written as `{}`) and must never contain secrets.
    pub fn append(&self, event: &str, fields: Value) -> Result<u64> {
        if !is_event_name(event) {
            return Err(Error::Audit(format!(
                "invalid event name {event:?} (use 1 to 64 of a-z, 0-9, '.', '-', '_')"
            )));
        }
        let fields = match fields {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => {
                return Err(Error::Audit(
                    "entry fields must be a JSON object".to_owned(),
                ));
            }
        };

        let mut tail = self.lock_tail();
        self.check_usable()?;
        // The time is taken under the lock so that entries are in time order unless the clock
        // itself steps back.
        let time = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .map_err(|e| Error::Audit(format!("formatting the entry time: {e}")))?;
        let seq = tail.seq + 1;
        let (line, hash) = encode_line(seq, &time, event, &fields, &tail.head)?;
        if line.len() > MAX_LINE {
            self.note_lost_entry();
            return Err(Error::Audit(format!(
                "entry {event} is {} bytes, more than the {MAX_LINE} allowed",
                line.len()
            )));
        }

        let written = write_line(&self.file, &line);
        if let Err(e) = written {
            self.note_lost_entry();
            // Undo a partial line so the next entry does not land after garbage.
            if self.file.set_len(tail.len).is_err() {
                self.broken.store(true, Ordering::SeqCst);
            }
            return Err(Error::io(
                format!("appending to audit log {}", self.path.display()),
                e,
            ));
        }
        tail.seq = seq;
        tail.head = hash;
        tail.len += line.len() as u64;
        Ok(seq)
    }

    /// Makes every entry appended before this call durable. Concurrent callers share one
    /// `fdatasync`.
    pub fn sync(&self) -> Result<()> {
        self.check_usable()?;
        let result = self
            .commit
            .commit(|| self.file.sync_data().map_err(SyncError::Io));
        result.map_err(|e| {
            // After a failed fsync the kernel may have dropped the dirty pages; what is on disk
            // is unknown, so stop appending until the log is reopened.
            self.broken.store(true, Ordering::SeqCst);
            match e {
                SyncError::Io(e) => {
                    Error::io(format!("syncing audit log {}", self.path.display()), e)
                }
                SyncError::Covered => Error::Audit(format!(
                    "syncing audit log {}: the fsync covering this entry failed",
                    self.path.display()
                )),
            }
        })
    }

    /// [`AuditLog::append`] followed by [`AuditLog::sync`].
    pub fn append_durable(&self, event: &str, fields: Value) -> Result<u64> {
        let seq = self.append(event, fields)?;
        self.sync()?;
        Ok(seq)
    }

    fn note_lost_entry(&self) {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if self.lost_since.fetch_min(now, Ordering::SeqCst) == i64::MAX
            && let (Some(hook), Ok(at)) = (
                self.loss_hook.0.get(),
                OffsetDateTime::from_unix_timestamp(now),
            )
        {
            hook(at);
        }
    }

    /// Has `hook` told the time of the first entry that fails to be appended, as it fails,
    /// so that it can be recorded where a process killed afterwards still leaves it. Only the
    /// first hook set is kept.
    pub fn on_first_loss(&self, hook: impl Fn(OffsetDateTime) + Send + Sync + 'static) {
        let _ = self.loss_hook.0.set(Box::new(hook));
    }

    /// When an append first failed since the log was opened (to the second): the store may
    /// hold something of that time whose line is missing, for a catch-up to write.
    pub fn lost_since(&self) -> Option<OffsetDateTime> {
        match self.lost_since.load(Ordering::SeqCst) {
            i64::MAX => None,
            t => OffsetDateTime::from_unix_timestamp(t).ok(),
        }
    }

    /// The last entry and every entry before it written less than `window` earlier, newest
    /// first (see [`AuditLog::visit_recent`]).
    pub fn recent_entries(&self, window: time::Duration) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        self.visit_recent(window, None, |_| true, |entry| entries.push(entry))?;
        Ok(entries)
    }

    /// Visits entries newest first, read from the end of the file backwards, down to the
    /// first one written more than `window` before the *anchor*: the newest entry `anchors`
    /// accepts (every entry after the anchor is visited too), and, with `reach_back`, at least
    /// down to the first one written before that time. A recovery after a crash needs
    /// only the last minutes of a log that may hold years, and anchors on the last entry
    /// written before the crash, not on what the restart itself wrote. Returns the anchor's
    /// time, `None` when no entry was accepted (then every entry was visited). Each line is
    /// checked against its own hash (not against its neighbours': `agentca audit verify`
    /// checks the chain); a line that fails is an error, since anything decided from a damaged
    /// log could hide the damage.
    pub fn visit_recent(
        &self,
        window: time::Duration,
        reach_back: Option<OffsetDateTime>,
        anchors: impl Fn(&Entry) -> bool,
        mut visit: impl FnMut(Entry),
    ) -> Result<Option<OffsetDateTime>> {
        let len = self.lock_tail().len;
        let mut anchor = None;
        lines_backwards(&self.file, len, |line, offset| {
            let entry = parse_line(line).map_err(|e| {
                Error::Audit(format!(
                    "{}: the entry at byte offset {offset} is not valid ({}); \
                     run `agentca audit verify`",
                    self.path.display(),
                    match e {
                        LineError::Unparseable(why) => why,
                        LineError::HashMismatch { seq } =>
                            format!("seq {seq} does not match its hash"),
                    }
                ))
            })?;
            match anchor {
                None if anchors(&entry) => anchor = Some(entry.time),
                Some(at) if entry.time < reach_back.map_or(at - window, |r| r.min(at - window)) => {
                    return Ok(false);
                }
                _ => {}
            }
            visit(entry);
            Ok(true)
        })?;
        Ok(anchor)
    }

    /// The `seq` and `hash` of the last entry (0 and [`GENESIS_PREV`] when empty).
    pub fn head(&self) -> (u64, String) {
        let tail = self.lock_tail();
        (tail.seq, tail.head.clone())
    }

    fn lock_tail(&self) -> MutexGuard<'_, Tail> {
        // The tail is only updated after a successful write, in one place; a panic elsewhere
        // cannot leave it half-changed.
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_usable(&self) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::Audit(format!(
                "audit log {} is in an unknown state after a failed write or sync; \
                 reopen it (restart) to recover",
                self.path.display()
            )));
        }
        Ok(())
    }
}

/// The flush error type [`GroupCommit`] needs.
enum SyncError {
    Io(io::Error),
    /// Another caller's flush covered this entry and failed.
    Covered,
}

impl From<FlushFailed> for SyncError {
    fn from(_: FlushFailed) -> Self {
        Self::Covered
    }
}

/// One verified entry of the log.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// What happened, e.g. `cert.issued`.
    pub event: String,
    /// The details.
    pub fields: Map<String, Value>,
    /// The previous entry's hash.
    pub prev: String,
    /// This entry's hash.
    pub hash: String,
}

/// The outcome of [`verify`].
///
/// `Display` gives the one line `agentca audit verify` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// Entries verified, i.e. all of them when intact, else those before the break.
    pub entries: u64,
    /// Hash of the last verified entry ([`GENESIS_PREV`] when there is none).
    pub head: String,
    /// The first bad entry, if any. Verification stops there.
    pub broken: Option<Break>,
    /// Entries whose time is earlier than their predecessor's: clocks step, so this is a note,
    /// not a break. At most [`MAX_NOTED_CLOCK_STEPS`] are kept; see `clock_steps_back_total`.
    pub clock_steps_back: Vec<ClockStepBack>,
    /// How many entries went back in time in all.
    pub clock_steps_back_total: u64,
    /// Bytes after the last newline: a torn write, ignored here and cut off (and recorded)
    /// by the next [`AuditLog::open`].
    pub torn_tail_bytes: u64,
}

/// How many clock steps a [`VerifyReport`] lists.
pub const MAX_NOTED_CLOCK_STEPS: usize = 100;

/// The members of a `cert.issued` line that carry the certificate: `cert_sha256` (hex) and
/// `der` (standard base64). With the DER in the log, a restore brings back every certificate
/// issued after its snapshot, so a later revocation of one still reaches OCSP and the CRLs.
pub fn issued_certificate_fields(der: &[u8]) -> [(&'static str, Value); 2] {
    use base64::Engine;
    [
        (
            "cert_sha256",
            Value::String(hex::encode(Sha256::digest(der))),
        ),
        (
            "der",
            Value::String(base64::engine::general_purpose::STANDARD.encode(der)),
        ),
    ]
}

/// The certificate a `cert.issued` line carries, if it carries one whose SHA-256 is the line's
/// `cert_sha256` (lines written by earlier versions carry only the hash).
pub fn issued_certificate(fields: &Map<String, Value>) -> Option<Vec<u8>> {
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(fields.get("der")?.as_str()?)
        .ok()?;
    let sum = fields.get("cert_sha256")?.as_str()?;
    (hex::encode(Sha256::digest(&der)) == sum).then_some(der)
}

impl VerifyReport {
    /// True when no entry is bad.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }

    /// `Ok` when intact, otherwise [`Error::Audit`] naming the first bad entry.
    pub fn ensure_intact(&self) -> Result<()> {
        match &self.broken {
            None => Ok(()),
            Some(b) => Err(Error::Audit(b.to_string())),
        }
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broken {
            None => write!(
                f,
                "audit log intact: {} entries, head {}",
                self.entries, self.head
            ),
            Some(b) => write!(f, "audit log broken at {b}"),
        }
    }
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Break {
    /// 1-based line number in the file.
    pub line: u64,
    /// The `seq` the line claims, when it could be read.
    pub seq: Option<u64>,
    /// What is wrong.
    pub reason: BreakReason,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "line {} (seq {seq}): {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// Why an entry is bad.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BreakReason {
    /// Not a well-formed entry (not JSON, wrong members, no hash at the end, too long).
    Unparseable(String),
    /// The hash does not match the entry's bytes: the entry was edited.
    HashMismatch,
    /// `seq` is not the previous entry's plus one: a line was dropped, inserted or moved.
    SeqGap {
        /// The `seq` the chain needed here.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// `prev` is not the previous entry's hash.
    PrevMismatch {
        /// The previous entry's hash.
        expected: String,
        /// The `prev` found.
        found: String,
    },
    /// The entry at a checkpoint's `seq` has another hash: the log was rewritten.
    CheckpointMismatch {
        /// The hash the checkpoint recorded.
        expected: String,
    },
    /// The log ends before a checkpoint's `seq`: entries were cut from its end.
    EndsBeforeCheckpoint {
        /// The checkpoint's `seq`.
        checkpoint: u64,
        /// The last `seq` the log holds.
        last: u64,
    },
}

impl fmt::Display for BreakReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unparseable(why) => write!(f, "not a valid entry: {why}"),
            Self::HashMismatch => f.write_str("hash does not match the entry (entry was altered)"),
            Self::SeqGap { expected, found } => write!(
                f,
                "seq is {found}, expected {expected} (an entry was removed, inserted or moved)"
            ),
            Self::PrevMismatch { expected, found } => write!(
                f,
                "prev is {found}, but the previous entry's hash is {expected}"
            ),
            Self::CheckpointMismatch { expected } => write!(
                f,
                "the hash differs from the checkpoint's {expected} (the log was rewritten)"
            ),
            Self::EndsBeforeCheckpoint { checkpoint, last } => write!(
                f,
                "the log ends at seq {last}, before the checkpoint at seq {checkpoint} \
                 (entries were cut from its end)"
            ),
        }
    }
}

/// An entry whose time is earlier than the one before it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockStepBack {
    /// 1-based line number.
    pub line: u64,
    /// The entry's `seq`.
    pub seq: u64,
    /// The previous entry's time.
    pub previous: OffsetDateTime,
    /// This entry's time.
    pub time: OffsetDateTime,
}

/// Walks the whole log at `path` and reports the first bad entry, if any.
///
/// `Err` only when the file cannot be read; a damaged chain is an `Ok` report with
/// [`VerifyReport::broken`] set. Takes no lock, so it can run while a server appends (a line
/// being written at that moment shows up as [`VerifyReport::torn_tail_bytes`]).
pub fn verify(path: &Path) -> Result<VerifyReport> {
    verify_each(path, |_| ())
}

/// [`verify`], handing each verified entry to `visit` in order (for reconciliation against
/// the store). Entries after a break are not visited.
pub fn verify_each(path: &Path, visit: impl FnMut(&Entry)) -> Result<VerifyReport> {
    verify_against(path, &[], visit)
}

/// [`verify_each`] that also holds the log to `checkpoints`: each must name an entry of the
/// log, with the same hash (OPS-3).
pub fn verify_against(
    path: &Path,
    checkpoints: &[Checkpoint],
    mut visit: impl FnMut(&Entry),
) -> Result<VerifyReport> {
    let expected: std::collections::BTreeMap<u64, &str> = checkpoints
        .iter()
        .map(|c| (c.seq, c.hash.as_str()))
        .collect();
    let file = File::open(path)
        .map_err(|e| Error::io(format!("opening audit log {}", path.display()), e))?;
    let mut reader = BufReader::new(file);
    let mut report = VerifyReport {
        entries: 0,
        head: GENESIS_PREV.to_owned(),
        broken: None,
        clock_steps_back: Vec::new(),
        clock_steps_back_total: 0,
        torn_tail_bytes: 0,
    };
    let mut previous_time: Option<OffsetDateTime> = None;
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        let read = read_line_capped(&mut reader, &mut buf)
            .map_err(|e| Error::io(format!("reading audit log {}", path.display()), e))?;
        line_no += 1;
        let line = match read {
            LineRead::Eof => break,
            LineRead::Torn => {
                report.torn_tail_bytes = buf.len() as u64;
                break;
            }
            LineRead::TooLong => {
                report.broken = Some(Break {
                    line: line_no,
                    seq: None,
                    reason: BreakReason::Unparseable(format!("longer than {MAX_LINE} bytes")),
                });
                break;
            }
            LineRead::Line => &buf[..buf.len() - 1],
        };

        let expected_seq = report.entries + 1;
        let entry = match parse_line(line) {
            Ok(entry) => entry,
            Err(LineError::Unparseable(why)) => {
                report.broken = Some(Break {
                    line: line_no,
                    seq: None,
                    reason: BreakReason::Unparseable(why),
                });
                break;
            }
            Err(LineError::HashMismatch { seq }) => {
                report.broken = Some(Break {
                    line: line_no,
                    seq: Some(seq),
                    reason: BreakReason::HashMismatch,
                });
                break;
            }
        };
        if entry.seq != expected_seq {
            report.broken = Some(Break {
                line: line_no,
                seq: Some(entry.seq),
                reason: BreakReason::SeqGap {
                    expected: expected_seq,
                    found: entry.seq,
                },
            });
            break;
        }
        if entry.prev != report.head {
            report.broken = Some(Break {
                line: line_no,
                seq: Some(entry.seq),
                reason: BreakReason::PrevMismatch {
                    expected: report.head.clone(),
                    found: entry.prev.clone(),
                },
            });
            break;
        }
        if let Some(previous) = previous_time.filter(|p| entry.time < *p) {
            report.clock_steps_back_total += 1;
            if report.clock_steps_back.len() < MAX_NOTED_CLOCK_STEPS {
                report.clock_steps_back.push(ClockStepBack {
                    line: line_no,
                    seq: entry.seq,
                    previous,
                    time: entry.time,
                });
            }
        }
        if let Some(hash) = expected.get(&entry.seq).filter(|h| **h != entry.hash) {
            report.broken = Some(Break {
                line: line_no,
                seq: Some(entry.seq),
                reason: BreakReason::CheckpointMismatch {
                    expected: (*hash).to_owned(),
                },
            });
            break;
        }
        previous_time = Some(entry.time);
        visit(&entry);
        report.entries = entry.seq;
        report.head = entry.hash;
    }
    if let (None, Some((&checkpoint, _))) = (&report.broken, expected.last_key_value())
        && checkpoint > report.entries
    {
        report.broken = Some(Break {
            line: line_no,
            seq: None,
            reason: BreakReason::EndsBeforeCheckpoint {
                checkpoint,
                last: report.entries,
            },
        });
    }
    Ok(report)
}

/// A point of the chain kept apart from the log (OPS-3): entry `seq` has hash `hash`, written
/// `SEQ:HASH`. The chain itself shows an entry edited, removed or moved, but not entries cut
/// from the end, nor a log rewritten whole with fresh hashes; a checkpoint recorded elsewhere
/// (the server's own log, a monitoring system) shows both, since a rewritten log no longer has
/// that hash at that seq and a shortened one no longer reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The entry's position in the chain.
    pub seq: u64,
    /// Its hash (64 lowercase hex digits).
    pub hash: String,
}

impl std::str::FromStr for Checkpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Audit(format!(
                "{s:?} is not a checkpoint (SEQ:HASH, as `agentca audit checkpoint` prints)"
            ))
        };
        let (seq, hash) = s.split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if seq == 0 || hash.len() != HEX_LEN || !hash.bytes().all(hex) {
            return Err(bad());
        }
        Ok(Self {
            seq,
            hash: hash.to_owned(),
        })
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// The last entry of the log at `path` as a checkpoint, `None` for an empty log. Takes no lock
/// (a running server holds it); a line being written at that moment is not read.
pub fn checkpoint_of(path: &Path) -> Result<Option<Checkpoint>> {
    let ctx = |e| Error::io(format!("reading audit log {}", path.display()), e);
    let file = File::open(path).map_err(ctx)?;
    let len = file.metadata().map_err(ctx)?.len();
    let end = match len {
        0 => return Ok(None),
        _ if read_byte(&file, len - 1).map_err(ctx)? == b'\n' => len,
        _ => match last_newline_before(&file, len).map_err(ctx)? {
            Some(at) => at + 1,
            None => return Ok(None),
        },
    };
    let entry = read_last_entry(&file, end)
        .map_err(|reason| Error::Audit(format!("{}: {reason}", path.display())))?;
    Ok(Some(Checkpoint {
        seq: entry.seq,
        hash: entry.hash,
    }))
}

impl AuditLog {
    /// The last entry appended as a checkpoint, `None` while the log is empty.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let tail = self.lock_tail();
        (tail.seq > 0).then(|| Checkpoint {
            seq: tail.seq,
            hash: tail.head.clone(),
        })
    }
}

/// The canonical bytes of an entry: the JSON object without `hash`, members in this order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: &'a str,
    event: &'a str,
    fields: &'a Map<String, Value>,
    prev: &'a str,
}

/// Builds the line (with its `\n`) and its hash.
fn encode_line(
    seq: u64,
    time: &str,
    event: &str,
    fields: &Map<String, Value>,
    prev: &str,
) -> Result<(Vec<u8>, String)> {
    let mut line = serde_json::to_vec(&Canonical {
        seq,
        time,
        event,
        fields,
        prev,
    })
    .map_err(|e| Error::Audit(format!("encoding entry: {e}")))?;
    let hash = hex::encode(Sha256::digest(&line));
    // Reopen the object to add `hash` as its last member.
    if line.pop() != Some(b'}') {
        return Err(Error::Unreachable("a serialized struct ends with '}'"));
    }
    line.reserve(SUFFIX_LEN + 1);
    line.extend_from_slice(HASH_MEMBER);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

#[derive(Debug)]
enum LineError {
    Unparseable(String),
    HashMismatch { seq: u64 },
}

/// Parses one line (without its `\n`) and checks its own hash; the chain links are checked
/// by the caller.
fn parse_line(line: &[u8]) -> Result<Entry, LineError> {
    let Some(hash_at) = line.len().checked_sub(SUFFIX_LEN) else {
        return Err(LineError::Unparseable("too short".to_owned()));
    };
    let (body, suffix) = line.split_at(hash_at);
    let (member, rest) = suffix.split_at(HASH_MEMBER.len());
    let (digits, close) = rest.split_at(HEX_LEN);
    if member != HASH_MEMBER || close != b"\"}" || !is_lower_hex(digits) {
        return Err(LineError::Unparseable(
            "does not end with the \"hash\" member".to_owned(),
        ));
    }
    let entry: Entry =
        serde_json::from_slice(line).map_err(|e| LineError::Unparseable(e.to_string()))?;
    if entry.hash.as_bytes() != digits {
        return Err(LineError::Unparseable(
            "duplicate \"hash\" member".to_owned(),
        ));
    }
    if !is_lower_hex(entry.prev.as_bytes()) {
        return Err(LineError::Unparseable(
            "prev is not 64 lowercase hex digits".to_owned(),
        ));
    }
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    if hex::encode(hasher.finalize()).as_bytes() != digits {
        return Err(LineError::HashMismatch { seq: entry.seq });
    }
    Ok(entry)
}

fn is_lower_hex(s: &[u8]) -> bool {
    s.len() == HEX_LEN && s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_event_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
}

enum LineRead {
    /// `buf` holds a line ending in `\n`.
    Line,
    /// End of file, nothing read.
    Eof,
    /// End of file after bytes with no `\n`.
    Torn,
    /// No `\n` within [`MAX_LINE`] bytes.
    TooLong,
}

/// Reads one line into `buf` without letting a damaged file make it grow past [`MAX_LINE`].
fn read_line_capped(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<LineRead> {
    buf.clear();
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                LineRead::Eof
            } else {
                LineRead::Torn
            });
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if buf.len() + take > MAX_LINE + 1 {
            return Ok(LineRead::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(LineRead::Line);
        }
    }
}

/// Opens the log for appending, creating it with mode 0600 if absent.
fn open_or_create(path: &Path) -> Result<File> {
    let ctx = |what: &str| format!("{what} audit log {}", path.display());
    let mut options = OpenOptions::new();
    options.read(true).append(true);
    match options.clone().create_new(true).mode(0o600).open(path) {
        Ok(file) => {
            // The umask may have taken bits away, never added them; set exactly 0600.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io(ctx("setting the mode of"), e))?;
            // Make the new directory entry durable along with the first entries.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| Error::io(ctx("syncing the directory of"), e))?;
            }
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            options.open(path).map_err(|e| Error::io(ctx("opening"), e))
        }
        Err(e) => Err(Error::io(ctx("creating"), e)),
    }
}

/// Takes the exclusive advisory lock (`flock`), polling until `timeout`.
///
/// `flock` rather than `std::fs::File::try_lock` only because the latter needs Rust 1.89.
fn lock_exclusive(file: &File, path: &Path, timeout: Duration) -> Result<()> {
    use rustix::fs::{FlockOperation, flock};
    use rustix::io::Errno;

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(Errno::WOULDBLOCK | Errno::INTR) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("locking audit log {}", path.display()),
                    e.into(),
                ));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Audit(format!(
                "{} is in use by another agentca process (waited {} ms for its lock); \
                 while the server runs, go through it",
                path.display(),
                timeout.as_millis()
            )));
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

fn read_byte(file: &File, at: u64) -> io::Result<u8> {
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at)?;
    Ok(byte[0])
}

/// The offset of the last `\n` before `end`, reading backwards in blocks.
fn last_newline_before(file: &File, end: u64) -> io::Result<Option<u64>> {
    const BLOCK: u64 = 8192;
    let mut buf = [0u8; BLOCK as usize];
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(BLOCK);
        let chunk = &mut buf[..(hi - lo) as usize];
        file.read_exact_at(chunk, lo)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(lo + i as u64));
        }
        hi = lo;
    }
    Ok(None)
}

/// Calls `visit` with each line of the first `len` bytes of `file` (which end in `\n`) and
/// its byte offset, last line first, until it returns `false`, reading backwards in blocks.
fn lines_backwards(
    file: &File,
    len: u64,
    mut visit: impl FnMut(&[u8], u64) -> Result<bool>,
) -> Result<()> {
    const BLOCK: u64 = 64 * 1024;
    if len == 0 {
        return Ok(());
    }
    // The bytes from `pos` to the end of the line being assembled; lines before it are
    // unread. The file's final '\n' closes the last line.
    let mut pos = len - 1;
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let lo = pos.saturating_sub(BLOCK);
        let mut data = vec![0u8; (pos - lo) as usize];
        file.read_exact_at(&mut data, lo)
            .map_err(|e| Error::io("reading the audit log backwards", e))?;
        data.extend_from_slice(&carry);
        // Every line but the first of `data` is whole; the first is whole only at the start
        // of the file.
        let mut end = data.len();
        while let Some(newline) = data[..end].iter().rposition(|&b| b == b'\n') {
            if !visit(&data[newline + 1..end], lo + newline as u64 + 1)? {
                return Ok(());
            }
            end = newline;
        }
        if lo == 0 {
            visit(&data[..end], 0)?;
            return Ok(());
        }
        if end > MAX_LINE {
            return Err(Error::Audit(format!(
                "an entry before byte offset {} is longer than {MAX_LINE} bytes",
                lo + end as u64
            )));
        }
        data.truncate(end);
        carry = data;
        pos = lo;
    }
}

/// Reads and checks the last line of a file of `len` bytes that ends in `\n`.
fn read_last_entry(file: &File, len: u64) -> Result<Entry, String> {
    let end = len - 1; // the final '\n'
    let start = last_newline_before(file, end)
        .map_err(|e| format!("reading the last entry: {e}"))?
        .map_or(0, |at| at + 1);
    let line_len = end - start;
    if line_len > MAX_LINE as u64 {
        return Err(format!(
            "the last entry (byte offset {start}) is longer than {MAX_LINE} bytes"
        ));
    }
    let mut line = vec![0u8; line_len as usize];
    file.read_exact_at(&mut line, start)
        .map_err(|e| format!("reading the last entry: {e}"))?;
    match parse_line(&line) {
        Ok(entry) => Ok(entry),
        Err(LineError::Unparseable(why)) => Err(format!(
            "the last entry (byte offset {start}) is not valid: {why}"
        )),
        Err(LineError::HashMismatch { seq }) => Err(format!(
            "the last entry (seq {seq}) does not match its hash"
        )),
    }
}

/// Appends one encoded line; the fail point stands for a full disk.
fn write_line(mut file: &File, line: &[u8]) -> io::Result<()> {
    fail::fail_point!("audit::write", |_| Err(io::Error::other(
        "fail point audit::write"
    )));
    file.write_all(line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn new_log(dir: &tempfile::TempDir) -> (PathBuf, AuditLog) {
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        (path, log)
    }

    /// A log with `n` entries, closed; returns its path.
    fn log_with(dir: &tempfile::TempDir, n: u64) -> PathBuf {
        let (path, log) = new_log(dir);
        for i in 0..n {
            log.append(
                "cert.issued",
                json!({"serial": format!("{i:032x}"), "n": i}),
            )
            .unwrap();
        }
        log.sync().unwrap();
        path
    }

    fn lines(path: &Path) -> Vec<Vec<u8>> {
        let data = std::fs::read(path).unwrap();
        data.split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn write_lines(path: &Path, lines: &[Vec<u8>]) {
        std::fs::write(path, lines.concat()).unwrap();
    }

    fn broken_at(path: &Path) -> Break {
        let report = verify(path).unwrap();
        assert!(report.ensure_intact().is_err());
        report.broken.unwrap()
    }

    #[test]
    fn recent_entries_are_read_backwards_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = new_log(&dir);
        assert!(
            log.recent_entries(time::Duration::hours(1))
                .unwrap()
                .is_empty()
        );
        // Lines of about 1.2 KB, so the 64 KiB blocks split many of them.
        let filler = "x".repeat(1200);
        for i in 0..300u64 {
            log.append("cert.issued", json!({"n": i, "filler": filler}))
                .unwrap();
        }
        log.sync().unwrap();
        let all = log.recent_entries(time::Duration::hours(1)).unwrap();
        let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=300).rev().collect::<Vec<_>>());
        assert_eq!(all[0].fields["n"], 299);
        assert_eq!(all[299].fields["n"], 0);
        // Reopened, it reads the same from the file.
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.recent_entries(time::Duration::hours(1)).unwrap(), all);
    }

    /// A log of `n` entries whose first `back` are dated an hour back, resealed.
    fn log_dated_back(dir: &tempfile::TempDir, n: u64, back: usize) -> PathBuf {
        let path = log_with(dir, n);
        let mut prev = GENESIS_PREV.to_owned();
        let mut rewritten = Vec::new();
        for (i, line) in lines(&path).iter().enumerate() {
            let mut entry = parse_line(line.strip_suffix(b"\n").unwrap()).unwrap();
            if i < back {
                entry.time -= time::Duration::hours(1);
            }
            let time = entry.time.format(&Rfc3339).unwrap();
            let (line, hash) =
                encode_line(entry.seq, &time, &entry.event, &entry.fields, &prev).unwrap();
            prev = hash;
            rewritten.push(line);
        }
        write_lines(&path, &rewritten);
        assert!(verify(&path).unwrap().is_intact());
        path
    }

    #[test]
    fn recent_entries_stop_at_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_dated_back(&dir, 3, 2);
        let log = AuditLog::open(&path).unwrap();
        let recent = log.recent_entries(time::Duration::minutes(10)).unwrap();
        assert_eq!(recent.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
        let all = log.recent_entries(time::Duration::hours(2)).unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn the_window_hangs_from_the_anchor_not_from_the_last_entry() {
        let dir = tempfile::tempdir().unwrap();
        // Entries 1 and 2 an hour back (before a crash), 3 and 4 now (written at the restart).
        let path = log_dated_back(&dir, 4, 2);
        let log = AuditLog::open(&path).unwrap();
        let mut seen = Vec::new();
        let anchor = log
            .visit_recent(
                time::Duration::minutes(10),
                None,
                |e| e.seq <= 2,
                |e| seen.push(e.seq),
            )
            .unwrap();
        assert_eq!(
            seen,
            [4, 3, 2, 1],
            "the restart's entries and the window before the anchor"
        );
        let entries = log.recent_entries(time::Duration::hours(2)).unwrap();
        assert_eq!(anchor, Some(entries[2].time));

        // Anchored on the last entry, the window holds 4 and 3; reaching back takes in the rest.
        let mut seen = Vec::new();
        log.visit_recent(
            time::Duration::minutes(10),
            None,
            |_| true,
            |e| seen.push(e.seq),
        )
        .unwrap();
        assert_eq!(seen, [4, 3]);
        let mut seen = Vec::new();
        let back = entries[3].time - time::Duration::minutes(1);
        log.visit_recent(
            time::Duration::minutes(10),
            Some(back),
            |_| true,
            |e| seen.push(e.seq),
        )
        .unwrap();
        assert_eq!(seen, [4, 3, 2, 1]);

        // Nothing accepted: every entry is visited, and there is no anchor.
        let mut seen = 0;
        let anchor = log
            .visit_recent(time::Duration::minutes(10), None, |_| false, |_| seen += 1)
            .unwrap();
        assert_eq!((anchor, seen), (None, 4));
    }

    #[test]
    fn a_failed_append_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let (_, log) = new_log(&dir);
        log.append("cert.issued", json!({"n": 1})).unwrap();
        assert_eq!(log.lost_since(), None);
        let before = OffsetDateTime::now_utc().unix_timestamp();
        let too_long = "x".repeat(MAX_LINE + 1);
        assert!(
            log.append("cert.issued", json!({"n": too_long.clone()}))
                .is_err()
        );
        let first = log.lost_since().unwrap();
        assert!(first.unix_timestamp() >= before);
        // A later failure keeps the first one's time.
        assert!(log.append("cert.issued", json!({"n": too_long})).is_err());
        assert_eq!(log.lost_since(), Some(first));
        // The log itself stays usable.
        log.append_durable("cert.issued", json!({"n": 2})).unwrap();
    }

    #[test]
    fn recent_entries_refuse_a_damaged_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 4);
        let mut l = lines(&path);
        let text = String::from_utf8(l[2].clone()).unwrap();
        l[2] = text.replace("\"n\":2", "\"n\":9").into_bytes();
        write_lines(&path, &l);
        let log = AuditLog::open(&path).unwrap();
        let e = log.recent_entries(time::Duration::hours(1)).unwrap_err();
        assert!(e.to_string().contains("does not match its hash"), "{e}");
    }

    #[test]
    fn checkpoints_parse_only_in_their_form() {
        let hash = "ab".repeat(32);
        let c: Checkpoint = format!("7:{hash}").parse().unwrap();
        assert_eq!((c.seq, c.hash.as_str()), (7, hash.as_str()));
        assert_eq!(c.to_string(), format!("7:{hash}"));
        for bad in [
            String::new(),
            hash.clone(),
            format!("0:{hash}"),
            format!("-1:{hash}"),
            format!("x:{hash}"),
            format!("7:{}", "AB".repeat(32)),
            format!("7:{}", &hash[..63]),
            format!("7:{hash}0"),
            format!("7 :{hash}"),
        ] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_checkpoint_shows_a_log_cut_short_or_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 5);
        let at = |seq: u64| {
            let line = &lines(&path)[seq as usize - 1];
            let entry = parse_line(line.strip_suffix(b"\n").unwrap()).unwrap();
            Checkpoint {
                seq,
                hash: entry.hash,
            }
        };
        let (third, last) = (at(3), at(5));
        assert_eq!(checkpoint_of(&path).unwrap(), Some(last.clone()));
        let report = verify_against(&path, &[third.clone(), last.clone()], |_| ()).unwrap();
        assert!(report.is_intact(), "{report}");

        // Cut short: the chain of what is left verifies, the checkpoint does not.
        let original = lines(&path);
        write_lines(&path, &original[..4]);
        assert!(verify(&path).unwrap().is_intact());
        let b = verify_against(&path, &[third.clone(), last.clone()], |_| ())
            .unwrap()
            .broken
            .unwrap();
        assert_eq!(
            (b.line, b.seq, b.reason),
            (
                5,
                None,
                BreakReason::EndsBeforeCheckpoint {
                    checkpoint: 5,
                    last: 4
                }
            )
        );

        // Rewritten whole from the second entry on, every hash recomputed: only the checkpoint
        // shows it, at its own line.
        let mut prev = at(1).hash;
        let mut rewritten = vec![original[0].clone()];
        for line in &original[1..] {
            let entry = parse_line(line.strip_suffix(b"\n").unwrap()).unwrap();
            let mut fields = entry.fields.clone();
            fields.insert("n".into(), json!(99));
            let time = entry.time.format(&Rfc3339).unwrap();
            let (line, hash) = encode_line(entry.seq, &time, &entry.event, &fields, &prev).unwrap();
            prev = hash;
            rewritten.push(line);
        }
        write_lines(&path, &rewritten);
        assert!(verify(&path).unwrap().is_intact());
        let b = verify_against(&path, std::slice::from_ref(&third), |_| ())
            .unwrap()
            .broken
            .unwrap();
        assert_eq!((b.line, b.seq), (3, Some(3)));
        assert_eq!(
            b.reason,
            BreakReason::CheckpointMismatch {
                expected: third.hash
            }
        );
    }

    #[test]
    fn the_checkpoint_of_a_log_skips_a_torn_line_and_needs_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = new_log(&dir);
        assert_eq!(checkpoint_of(&path).unwrap(), None);
        assert_eq!(log.checkpoint(), None);
        log.append_durable("agent.added", json!({"agent": "a"}))
            .unwrap();
        log.append_durable("agent.added", json!({"agent": "b"}))
            .unwrap();
        // The writer keeps its lock; the reader needs none.
        let head = log.checkpoint().unwrap();
        assert_eq!(head.seq, 2);
        assert_eq!(checkpoint_of(&path).unwrap(), Some(head.clone()));
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":3,\"ti").unwrap();
        assert_eq!(checkpoint_of(&path).unwrap(), Some(head));
    }

    #[test]
    fn fresh_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = new_log(&dir);
        let report = verify(&path).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.entries, 0);
        assert_eq!(report.head, GENESIS_PREV);

        assert_eq!(log.append("agent.added", json!({"agent": "a"})).unwrap(), 1);
        assert_eq!(log.append_durable("token.created", Value::Null).unwrap(), 2);
        let report = verify(&path).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries, 2);
        assert_eq!(report.head, log.head().1);
        assert_eq!(
            report.to_string(),
            format!("audit log intact: 2 entries, head {}", report.head)
        );
    }

    #[test]
    fn file_mode_is_0600() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _log) = new_log(&dir);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn line_format_is_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 3);
        let mut prev = GENESIS_PREV.to_owned();
        for (i, line) in lines(&path).iter().enumerate() {
            // The documented procedure, with string operations only.
            let text = std::str::from_utf8(line).unwrap();
            let text = text.strip_suffix('\n').unwrap();
            let (body, suffix) = text.split_at(text.len() - SUFFIX_LEN);
            let digits = suffix
                .strip_prefix(",\"hash\":\"")
                .unwrap()
                .strip_suffix("\"}")
                .unwrap();
            let canonical = format!("{body}}}");
            assert_eq!(hex::encode(Sha256::digest(canonical.as_bytes())), digits);
            assert!(canonical.starts_with(&format!("{{\"seq\":{},\"time\":\"", i + 1)));
            assert!(canonical.ends_with(&format!(",\"prev\":\"{prev}\"}}")));
            assert!(text.contains("\"event\":\"cert.issued\",\"fields\":{"));
            let parsed: Value = serde_json::from_str(text).unwrap();
            assert!(parsed["time"].as_str().unwrap().ends_with('Z'));
            prev = digits.to_owned();
        }
    }

    #[test]
    fn concurrent_appends_make_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = new_log(&dir);
        let log = Arc::new(log);
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut seqs = Vec::new();
                    for i in 0..50 {
                        seqs.push(log.append("cert.issued", json!({"t": t, "i": i})).unwrap());
                        if i % 10 == 0 {
                            log.sync().unwrap();
                        }
                    }
                    log.sync().unwrap();
                    seqs
                })
            })
            .collect();
        let mut seqs: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=800).collect::<Vec<_>>());
        let report = verify(&path).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries, 800);
        assert_eq!(report.clock_steps_back_total, 0);
    }

    #[test]
    fn every_flipped_byte_of_a_middle_line_is_found_at_that_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 5);
        let original = lines(&path);
        for mask in [0x01u8, 0x80] {
            for at in 0..original[2].len() {
                let mut damaged = original.clone();
                damaged[2][at] ^= mask;
                write_lines(&path, &damaged);
                let b = broken_at(&path);
                assert_eq!(b.line, 3, "byte {at} ^ {mask:#x}: {b}");
            }
        }
    }

    #[test]
    fn edited_content_is_a_hash_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 4);
        let mut l = lines(&path);
        let text = String::from_utf8(l[1].clone()).unwrap();
        l[1] = text.replace("\"n\":1", "\"n\":7").into_bytes();
        write_lines(&path, &l);
        let b = broken_at(&path);
        assert_eq!(
            (b.line, b.seq, b.reason),
            (2, Some(2), BreakReason::HashMismatch)
        );
    }

    #[test]
    fn dropped_line_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 5);
        let mut l = lines(&path);
        l.remove(2);
        write_lines(&path, &l);
        let b = broken_at(&path);
        assert_eq!(b.line, 3);
        assert_eq!(b.seq, Some(4));
        assert_eq!(
            b.reason,
            BreakReason::SeqGap {
                expected: 3,
                found: 4
            }
        );
        let report = verify(&path).unwrap();
        assert_eq!(report.entries, 2);
        assert!(
            report
                .to_string()
                .starts_with("audit log broken at line 3 (seq 4): seq is 4, expected 3")
        );
    }

    #[test]
    fn swapped_lines_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 5);
        let mut l = lines(&path);
        l.swap(1, 2);
        write_lines(&path, &l);
        let b = broken_at(&path);
        assert_eq!((b.line, b.seq), (2, Some(3)));
    }

    #[test]
    fn forged_prev_is_found() {
        // A line that is internally consistent but chained to the wrong predecessor.
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 2);
        let mut l = lines(&path);
        let (forged, _) = encode_line(
            2,
            "2030-01-01T00:00:00Z",
            "cert.revoked",
            &Map::new(),
            &"1".repeat(64),
        )
        .unwrap();
        l[1] = forged;
        write_lines(&path, &l);
        let b = broken_at(&path);
        assert_eq!(b.line, 2);
        assert!(matches!(b.reason, BreakReason::PrevMismatch { .. }), "{b}");
    }

    #[test]
    fn non_json_line_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 3);
        let mut l = lines(&path);
        l.insert(1, b"hello, world\n".to_vec());
        write_lines(&path, &l);
        let b = broken_at(&path);
        assert_eq!((b.line, b.seq), (2, None));
        assert!(matches!(b.reason, BreakReason::Unparseable(_)));

        l[1] = b"\n".to_vec();
        write_lines(&path, &l);
        assert_eq!(broken_at(&path).line, 2);
    }

    #[test]
    fn torn_last_line_is_recovered_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 4);
        let full = std::fs::read(&path).unwrap();
        let cut = 17;
        std::fs::write(&path, &full[..full.len() - cut]).unwrap();

        // The verifier ignores (and reports) the torn tail.
        let report = verify(&path).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries, 3);
        let torn = lines(&path).last().unwrap().len() as u64;
        assert_eq!(report.torn_tail_bytes, torn);

        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.head().0, 4);
        let mut recovered = Vec::new();
        let report = verify_each(&path, |e| {
            if e.event == RECOVERED_EVENT {
                recovered.push(e.clone());
            }
        })
        .unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries, 4);
        assert_eq!(report.torn_tail_bytes, 0);
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].seq, 4);
        assert_eq!(recovered[0].fields["dropped_bytes"], json!(torn));

        assert_eq!(log.append("cert.issued", json!({})).unwrap(), 5);
        log.sync().unwrap();
        assert!(verify(&path).unwrap().is_intact());
    }

    #[test]
    fn torn_only_line_is_recovered_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"{\"seq\":1,\"ti").unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.head().0, 1);
        drop(log);
        let report = verify(&path).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries, 1);
    }

    #[test]
    fn truncated_whole_tail_lines_still_verify() {
        // A verifier cannot see lines cut from the end; reconciliation with the store does.
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 5);
        let l = lines(&path);
        write_lines(&path, &l[..3]);
        let report = verify(&path).unwrap();
        assert!(report.is_intact());
        assert_eq!(report.entries, 3);
    }

    #[test]
    fn reopen_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 3);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.head().0, 3);
        assert_eq!(
            log.append("crl.published", json!({"number": 9})).unwrap(),
            4
        );
        drop(log);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(
            log.append("cert.revoked", json!({"reason": "superseded"}))
                .unwrap(),
            5
        );
        log.sync().unwrap();
        let report = verify(&path).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.entries, 5);
        assert_eq!(report.head, log.head().1);
    }

    #[test]
    fn open_refuses_a_damaged_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 3);
        let mut l = lines(&path);
        let last = l.len() - 1;
        l[last][20] ^= 0x01;
        write_lines(&path, &l);
        let err = AuditLog::open(&path).unwrap_err();
        assert!(matches!(err, Error::Audit(_)), "{err}");
        assert!(err.to_string().contains("refusing to append"), "{err}");

        l[last] = b"not json\n".to_vec();
        write_lines(&path, &l);
        assert!(AuditLog::open(&path).is_err());
    }

    #[test]
    fn second_writer_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = new_log(&dir);
        let started = Instant::now();
        let err = AuditLog::open_with_lock_timeout(&path, Duration::from_millis(100)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(err.to_string().contains("in use by another"), "{err}");
        drop(log);
        AuditLog::open_with_lock_timeout(&path, Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn time_going_backwards_is_noted_not_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let times = [
            "2030-01-01T10:00:00Z",
            "2030-01-01T11:00:00Z",
            "2030-01-01T10:30:00Z",
            "2030-01-01T10:31:00Z",
        ];
        let mut prev = GENESIS_PREV.to_owned();
        let mut data = Vec::new();
        for (i, t) in times.iter().enumerate() {
            let (line, hash) =
                encode_line(i as u64 + 1, t, "cert.issued", &Map::new(), &prev).unwrap();
            data.extend_from_slice(&line);
            prev = hash;
        }
        std::fs::write(&path, data).unwrap();
        let report = verify(&path).unwrap();
        assert!(report.is_intact(), "{report}");
        assert_eq!(report.clock_steps_back_total, 1);
        assert_eq!(report.clock_steps_back[0].line, 3);
        assert_eq!(report.clock_steps_back[0].seq, 3);
    }

    #[test]
    fn bad_event_names_and_fields_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_path, log) = new_log(&dir);
        for event in ["", "Cert.Issued", "a b", "x\n", &"a".repeat(65)] {
            assert!(log.append(event, json!({})).is_err(), "{event:?}");
        }
        assert!(log.append("cert.issued", json!([1, 2])).is_err());
        assert!(log.append("cert.issued", json!("s")).is_err());
        assert_eq!(log.head().0, 0);
    }

    #[test]
    fn strings_with_newlines_stay_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let (path, log) = new_log(&dir);
        log.append("cert.refused", json!({"reason": "a\nb\r\"c\"\u{2028}é"}))
            .unwrap();
        log.sync().unwrap();
        assert_eq!(lines(&path).len(), 1);
        assert!(verify(&path).unwrap().is_intact());
    }

    #[test]
    fn overlong_line_is_reported_without_reading_it_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_with(&dir, 1);
        let mut l = lines(&path);
        l.push(vec![b'x'; MAX_LINE + 10]);
        l.push(b"\n".to_vec());
        write_lines(&path, &l);
        let b = broken_at(&path);
        assert_eq!(b.line, 2);
        assert!(AuditLog::open(&path).is_err());
    }

    #[test]
    fn missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            verify(&dir.path().join("nope.log")),
            Err(Error::Io { .. })
        ));
    }
}
