//! `agentca issue` with CSR files that are not CSRs: one clear error line, no panic, nothing
//! issued, no serial spent, the refusal audited when the file got as far as the parser.

use std::io::Read;

use super::support::Env;

/// Random bytes from the operating system.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf
}

/// What the refusal of one bad CSR file must look like.
struct Case {
    name: &'static str,
    path: String,
    /// Whether the bytes reached the CSR parser (and so the refusal is audited).
    parsed: bool,
    /// Words the error line must contain.
    says: &'static str,
}

#[test]
fn garbage_csr_files_are_refused_cleanly() {
    let env = Env::with_ca();
    let alice = env.add_agent("/agent/alice", &[]);
    let good = env.csr("good");
    let good_der = good.der();

    let mut flipped_signature = good_der.clone();
    let last = flipped_signature.len() - 3;
    flipped_signature[last] ^= 0x01;
    let mut trailing = good_der.clone();
    trailing.extend_from_slice(b"\x00\x00");
    let dir = env.path("a-directory");
    std::fs::create_dir(&dir).unwrap();

    let file = |name: &str, bytes: &[u8]| env.write(name, bytes).display().to_string();
    let cases = [
        Case { name: "empty file", path: file("empty.csr", b""), parsed: true, says: "bad CSR" },
        Case {
            name: "truncated DER",
            path: file("truncated.der", &good_der[..good_der.len() / 2]),
            parsed: true,
            says: "bad CSR",
        },
        Case {
            name: "PEM of a certificate",
            path: env.data_file("root.pem").display().to_string(),
            parsed: true,
            says: "CERTIFICATE",
        },
        Case {
            name: "PEM of a private key",
            path: env.path("good.key").display().to_string(),
            parsed: true,
            says: "PRIVATE KEY",
        },
        Case {
            name: "CSR PEM armour around garbage",
            path: file(
                "armour.csr",
                b"-----BEGIN CERTIFICATE REQUEST-----\nbm90IGEgQ1NS\n-----END CERTIFICATE REQUEST-----\n",
            ),
            parsed: true,
            says: "bad CSR",
        },
        Case {
            name: "bad signature",
            path: file("badsig.der", &flipped_signature),
            parsed: true,
            says: "bad CSR",
        },
        Case {
            name: "trailing bytes after the DER",
            path: file("trailing.der", &trailing),
            parsed: true,
            says: "bad CSR",
        },
        Case {
            name: "20 kB of random bytes",
            path: file("random-small.bin", &random_bytes(20 << 10)),
            parsed: true,
            says: "bad CSR",
        },
        Case {
            name: "10 MB of random bytes",
            path: file("random-10mb.bin", &random_bytes(10 << 20)),
            // Refused by size after reading only the first 32 KiB + 1 byte; still audited.
            parsed: true,
            says: "larger than",
        },
        Case { name: "a directory", path: dir.display().to_string(), parsed: false, says: "a-directory" },
        Case {
            name: "a missing file",
            path: env.path("missing.csr").display().to_string(),
            parsed: false,
            says: "missing.csr",
        },
    ];

    let listed = env.listed_serials(&[]);
    let serials = env.serial_count();
    for case in &cases {
        let refused_before = env.audit_events("cert.refused").len();
        let out = env.run(&["issue", "--agent", &alice, "--csr", &case.path]);
        let line = out.error_line();
        assert!(
            line.contains(case.says),
            "{}: expected {:?} in {line}",
            case.name,
            case.says
        );
        assert!(!out.stdout.contains("BEGIN CERTIFICATE"), "{}", case.name);

        let refused = env.audit_events("cert.refused");
        let expected = refused_before + usize::from(case.parsed);
        assert_eq!(
            refused.len(),
            expected,
            "{}: cert.refused entries",
            case.name
        );
        if case.parsed {
            let entry = &refused[refused.len() - 1]["fields"];
            assert_eq!(entry["agent"], alice.as_str(), "{}", case.name);
            assert_eq!(entry["method"], "cli");
        }
        assert_eq!(
            env.listed_serials(&[]),
            listed,
            "{}: a certificate appeared",
            case.name
        );
        assert_eq!(
            env.serial_count(),
            serials,
            "{}: a serial was consumed",
            case.name
        );
    }
    assert!(env.audit_events("cert.issued").is_empty());

    // The same refusals in JSON name their kind.
    let (kind, _) = env.json_error(&["issue", "--agent", &alice, "--csr", &cases[0].path]);
    assert_eq!(kind, "badCsr");
    let (kind, _) = env.json_error(&["issue", "--agent", &alice, "--csr", &cases[8].path]);
    assert_eq!(kind, "badCsr");
    let (kind, _) = env.json_error(&["issue", "--agent", &alice, "--csr", &cases[10].path]);
    assert_eq!(kind, "io");

    env.assert_audit_intact();
    // The good CSR still works afterwards.
    env.issue(&alice, &good, &[]);
}
