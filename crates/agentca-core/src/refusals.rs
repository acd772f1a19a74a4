//! Refused requests in the audit log, at a bounded rate.
//!
//! Every refusal a front end answers (an ACME problem document, a SCEP FAILURE or an
//! unparseable SCEP message) is recorded, so that an operator can see and attribute attempts
//! next to the issuances and revocations. A flood of bad requests must neither fill the disk
//! nor cost a sync each, so:
//!
//! - entries are appended without a sync of their own: they reach the disk with the next sync
//!   of the log (the next issuance or revocation), and survive a crash of the process, though
//!   not necessarily one of the machine;
//! - a token bucket bounds them: [`BURST`] entries at once, then [`PER_SECOND`]. What it drops
//!   is counted, and the count is recorded as one `refusals.suppressed` entry before the next
//!   refusal that is recorded.
//!
//! A refusal that cannot be recorded (the log is broken) is still answered as a refusal: the
//! request was refused either way, and the log's own failure stops issuance elsewhere.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde_json::{Map, Value};

use crate::audit::AuditLog;
use crate::error::Result;

/// How many refusals are recorded at once before the rate applies.
pub const BURST: u32 = 1000;

/// How many refusals per second are recorded, sustained.
pub const PER_SECOND: u32 = 5;

/// Text fields are cut to at most this many bytes as the log writes them (escapes counted): a
/// refusal's detail may quote the request.
const MAX_TEXT: usize = 256;

/// The audit log's record of refused requests; see the module documentation.
#[derive(Debug)]
pub struct RefusalLog {
    audit: Arc<AuditLog>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Refusals dropped since the last one recorded.
    suppressed: u64,
}

impl RefusalLog {
    /// Records into `audit`, starting with a full burst.
    pub fn new(audit: Arc<AuditLog>) -> Self {
        Self {
            audit,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(BURST),
                refilled: Instant::now(),
                suppressed: 0,
            }),
        }
    }

    /// Records the refusal `event` with `fields` (a JSON object; its strings are cut to a few
    /// hundred characters, and it must never hold a secret). `Ok(false)` when the rate bound
    /// dropped it; an error when the log could not take it (the caller logs that and still
    /// refuses).
    pub fn record(&self, event: &str, fields: Value) -> Result<bool> {
        let suppressed = {
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * f64::from(PER_SECOND)).min(f64::from(BURST));
            bucket.refilled = now;
            if bucket.tokens < 1.0 {
                bucket.suppressed += 1;
                return Ok(false);
            }
            bucket.tokens -= 1.0;
            std::mem::take(&mut bucket.suppressed)
        };
        if suppressed > 0
            && let Err(e) = self.audit.append(
                "refusals.suppressed",
                serde_json::json!({ "count": suppressed }),
            )
        {
            // Counted again, for the next entry that gets through.
            self.bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .suppressed += suppressed;
            return Err(e);
        }
        self.audit.append(event, cut_strings(fields))?;
        Ok(true)
    }
}

fn cut_strings(fields: Value) -> Value {
    match fields {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, cut_strings(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::String(s) => Value::String(cut_text(s)),
        other => other,
    }
}

/// `s`, or as much of it as fits [`MAX_TEXT`] bytes once written as JSON, and `…`.
fn cut_text(s: String) -> String {
    let mut written = 0;
    for (at, c) in s.char_indices() {
        written += match c {
            '"' | '\\' => 2,
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => 6,
            c => c.len_utf8(),
        };
        if written > MAX_TEXT {
            let mut cut = s[..at].to_owned();
            cut.push('…');
            return cut;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn events(path: &std::path::Path) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        crate::audit::verify_each(path, |entry| {
            out.push((entry.event.clone(), Value::Object(entry.fields.clone())));
        })
        .unwrap();
        out
    }

    #[test]
    fn refusals_are_recorded_up_to_the_burst_then_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = RefusalLog::new(Arc::new(AuditLog::open(&path).unwrap()));
        let flood = BURST + 50;
        let started = Instant::now();
        let recorded = (0..flood)
            .filter(|i| {
                log.record("acme.refused", serde_json::json!({ "n": i }))
                    .unwrap()
            })
            .count();
        // The bucket refills while the loop runs, by the rate over the loop's time.
        let refilled = (started.elapsed().as_secs_f64() * f64::from(PER_SECOND)).ceil() as usize;
        assert!(
            (BURST as usize..=BURST as usize + refilled).contains(&recorded),
            "{recorded} recorded, {refilled} refilled"
        );
        let before = events(&path);
        assert_eq!(before.len(), recorded);
        assert!(before.iter().all(|(event, _)| event == "acme.refused"));

        // Once the bucket has a token again, the count of what was dropped comes first.
        std::thread::sleep(std::time::Duration::from_millis(
            1000 / u64::from(PER_SECOND) + 20,
        ));
        assert!(log.record("scep.refused", serde_json::json!({})).unwrap());
        let after = events(&path);
        let new = &after[before.len()..];
        assert_eq!(new.len(), 2, "{new:?}");
        assert_eq!(new[0].0, "refusals.suppressed");
        let count = new[0].1["count"].as_u64().unwrap();
        assert_eq!(count, u64::from(flood) - recorded as u64);
        assert_eq!(new[1].0, "scep.refused");
    }

    #[test]
    fn long_texts_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = RefusalLog::new(Arc::new(AuditLog::open(&path).unwrap()));
        let accents = "é".repeat(MAX_TEXT * 3);
        let controls = "\u{1}".repeat(MAX_TEXT);
        let short = "short \"enough\"".to_owned();
        assert!(
            log.record(
                "acme.refused",
                serde_json::json!({
                    "detail": accents,
                    "nested": { "detail": controls },
                    "short": short,
                    "status": 400,
                })
            )
            .unwrap()
        );
        let (_, fields) = events(&path).pop().unwrap();
        for text in [&fields["detail"], &fields["nested"]["detail"]] {
            let written = serde_json::to_string(text).unwrap();
            assert!(written.len() <= MAX_TEXT + 2 + '…'.len_utf8(), "{written}");
            assert!(text.as_str().unwrap().ends_with('…'));
        }
        assert_eq!(fields["short"], short);
        assert_eq!(fields["status"], 400);
    }
}
