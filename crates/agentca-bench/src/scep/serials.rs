//! Duplicate serial numbers among the certificates a run was issued. A CA must never give two
//! certificates the same issuer and serial (RFC 5280 §4.1.2.2), and under load is where one
//! that keeps a counter without a lock does: micromdm's file depot reads, increments and
//! writes a serial file per request.

use std::collections::HashMap;

/// How many examples of duplicated serials a report names.
const EXAMPLES: usize = 5;

/// The serials seen, per issuer.
#[derive(Debug, Default)]
pub(crate) struct SerialRegistry {
    /// (issuer Name DER, serial content octets) → certificates seen with it.
    seen: HashMap<(Vec<u8>, Vec<u8>), u64>,
    issued: u64,
}

impl SerialRegistry {
    /// Records an issued certificate; says whether its serial had been issued before.
    pub(crate) fn record(&mut self, issuer: &[u8], serial: &[u8]) -> bool {
        self.issued += 1;
        let count = self
            .seen
            .entry((issuer.to_vec(), serial.to_vec()))
            .or_default();
        *count += 1;
        *count > 1
    }

    /// Certificates whose issuer and serial an earlier certificate of the run already had:
    /// issued minus distinct.
    pub(crate) fn duplicates(&self) -> u64 {
        self.issued - self.seen.len() as u64
    }

    /// Up to five of the serials issued more than once, in hex, with their counts; the most
    /// repeated first.
    pub(crate) fn examples(&self) -> Vec<(String, u64)> {
        let mut repeated: Vec<(String, u64)> = self
            .seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|((_, serial), n)| (hex::encode(serial), *n))
            .collect();
        repeated.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        repeated.truncate(EXAMPLES);
        repeated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_counted_per_issuer() {
        let mut r = SerialRegistry::default();
        assert!(!r.record(b"CA", &[1]));
        assert!(!r.record(b"CA", &[2]));
        assert_eq!(r.duplicates(), 0);
        assert!(r.examples().is_empty());

        // The same serial twice more: two duplicates of one serial.
        assert!(r.record(b"CA", &[2]));
        assert!(r.record(b"CA", &[2]));
        // Another serial repeated once.
        assert!(!r.record(b"CA", &[0x0a, 0xff]));
        assert!(r.record(b"CA", &[0x0a, 0xff]));
        // The same serial from another issuer is no duplicate.
        assert!(!r.record(b"other CA", &[1]));
        assert_eq!(r.duplicates(), 3);
        assert_eq!(r.examples(), [("02".to_owned(), 3), ("0aff".to_owned(), 2)]);
    }

    #[test]
    fn examples_are_bounded() {
        let mut r = SerialRegistry::default();
        for serial in 0u8..10 {
            r.record(b"CA", &[serial]);
            r.record(b"CA", &[serial]);
        }
        assert_eq!(r.duplicates(), 10);
        assert_eq!(r.examples().len(), EXAMPLES);
        assert_eq!(r.examples()[0], ("00".to_owned(), 2));
    }
}
