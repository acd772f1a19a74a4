//! INV-1: serial numbers (RFC 5280 §4.1.2.2, CA/B BR §7.1).

use crate::parse::hex;

const INV: &str = "INV-1 (serial)";

/// The RFC 5280 §4.1.2.2 rules every serial obeys, CA certificates included: a positive
/// INTEGER of at most 20 octets, minimally encoded. `raw` is the INTEGER's content octets.
pub(crate) fn check_rfc5280(raw: &[u8]) {
    let Some(&first) = raw.first() else {
        violated!(INV, "the serial INTEGER has no content octets");
    };
    if first & 0x80 != 0 {
        violated!(INV, "serial {} is negative", hex(raw));
    }
    if raw.iter().all(|&b| b == 0) {
        violated!(INV, "serial is zero; it must be positive");
    }
    if raw.len() > 20 {
        violated!(
            INV,
            "serial {} has {} octets; RFC 5280 allows at most 20",
            hex(raw),
            raw.len()
        );
    }
    if raw.len() > 1 && first == 0 && raw[1] & 0x80 == 0 {
        violated!(
            INV,
            "serial {} is not DER-minimal: a leading zero octet before {:02x}",
            hex(raw),
            raw[1]
        );
    }
}

/// agentca's own form on top of RFC 5280: 16 content octets holding 127 random bits, so the
/// first octet is 0x01..=0x7f (positive, and minimal without a padding octet).
pub(crate) fn check_agentca(raw: &[u8]) {
    check_rfc5280(raw);
    if raw.len() != 16 {
        violated!(
            INV,
            "serial {} has {} octets; agentca writes exactly 16",
            hex(raw),
            raw.len()
        );
    }
    if !(0x01..=0x7f).contains(&raw[0]) {
        violated!(
            INV,
            "serial {} starts with {:02x}; agentca's first octet is 0x01..=0x7f",
            hex(raw),
            raw[0]
        );
    }
    if raw.iter().all(|&b| b == raw[0]) {
        violated!(
            INV,
            "serial {} repeats one octet; it cannot come from a CSPRNG",
            hex(raw)
        );
    }
}

/// Checks that agentca serials look like the output of a CSPRNG: all distinct, and every bit
/// except the sign bit set in half of them.
///
/// A stuck bit (the "63-bit serial" class of bug) or a counter shows up as a bit position
/// far from 50%. The tolerance is 5 standard deviations of a fair coin over `serials.len()`
/// draws, so a correct generator fails about once in 1.7 million runs per position (about
/// once in 14,000 runs over all 127), while a stuck bit fails always. At least 1000 serials
/// are needed; 10,000 make the check sharper (±2.5%).
pub fn assert_serials_random(serials: &[[u8; 16]]) {
    let n = serials.len();
    assert!(
        n >= 1000,
        "{INV}: assert_serials_random needs at least 1000 serials, got {n}"
    );

    let mut sorted = serials.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
        violated!(INV, "serial {} was produced twice", hex(&pair[0]));
    }

    // n ≤ 2^53 for any realistic test, so the counts are exact in f64.
    let n_f = n as f64;
    let tolerance = 5.0 * (n_f * 0.25).sqrt();
    for bit in 1..128usize {
        let (byte, shift) = (bit / 8, 7 - bit % 8);
        let set = serials
            .iter()
            .filter(|s| (s[byte] >> shift) & 1 == 1)
            .count();
        let deviation = (set as f64 - n_f / 2.0).abs();
        if deviation > tolerance {
            violated!(
                INV,
                "bit {bit} (octet {byte}, mask {:#04x}) is set in {set} of {n} serials \
                 ({:.1}%); a random bit is set in 50% ± {:.1}%",
                1u8 << shift,
                100.0 * set as f64 / n_f,
                100.0 * tolerance / n_f
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpki::{panic_message, random_serial};

    fn random_serials(n: usize) -> Vec<[u8; 16]> {
        (0..n).map(|_| random_serial()).collect()
    }

    #[test]
    fn random_serials_pass() {
        assert_serials_random(&random_serials(10_000));
    }

    #[test]
    fn stuck_bit_fails() {
        let mut serials = random_serials(2000);
        for s in &mut serials {
            s[5] &= !0x10;
        }
        let msg = panic_message(|| assert_serials_random(&serials));
        assert!(msg.contains("bit 43"), "{msg}");
    }

    #[test]
    fn sixty_three_bit_serials_fail() {
        // The EJBCA-style bug: the top two bits are never set.
        let mut serials = random_serials(2000);
        for s in &mut serials {
            s[0] = (s[0] & 0x3f) | 0x01;
        }
        let msg = panic_message(|| assert_serials_random(&serials));
        assert!(msg.contains("bit 1 "), "{msg}");
    }

    #[test]
    fn counter_fails() {
        let serials: Vec<[u8; 16]> = (1..=2000u128)
            .map(|i| (i | (1 << 120)).to_be_bytes())
            .collect();
        let msg = panic_message(|| assert_serials_random(&serials));
        assert!(msg.contains("set in"), "{msg}");
    }

    #[test]
    fn duplicate_fails() {
        let mut serials = random_serials(1500);
        serials[700] = serials[3];
        let msg = panic_message(|| assert_serials_random(&serials));
        assert!(msg.contains("produced twice"), "{msg}");
    }

    #[test]
    #[should_panic(expected = "at least 1000 serials")]
    fn too_few_serials_fail() {
        assert_serials_random(&random_serials(999));
    }

    #[test]
    fn rfc5280_rules() {
        check_rfc5280(&[0x01]);
        check_rfc5280(&[0x00, 0x80]);
        check_rfc5280(&[0x7f; 20]);
        for (bad, needle) in [
            (vec![], "no content"),
            (vec![0x80, 1], "negative"),
            (vec![0x00], "zero"),
            (vec![0x01; 21], "at most 20"),
            (vec![0x00, 0x01], "not DER-minimal"),
        ] {
            let msg = panic_message(move || check_rfc5280(&bad));
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn agentca_form() {
        let mut good = [0x5a; 16];
        good[7] = 0x01;
        check_agentca(&good);
        for (bad, needle) in [
            (vec![0x01; 15], "exactly 16"),
            (vec![0x11; 16], "repeats one octet"),
            ([&[0x00, 0x80][..], &[0x22; 14]].concat(), "0x01..=0x7f"),
        ] {
            let msg = panic_message(move || check_agentca(&bad));
            assert!(msg.contains(needle), "{msg}");
        }
    }
}
