#!/usr/bin/env bash
# The project's test command: installs the external test tools, then runs the format check,
# clippy, the whole workspace's tests (with every external verifier required), and the extra
# test scripts. Ends with the test totals.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() {
    printf '\n==== %s ====\n' "$*"
}

# Tools installed per user (rustup, pyenv, pip --user) must be found from a non-login shell.
for dir in "$HOME/.cargo/bin" "$HOME/.local/bin" "${PYENV_ROOT:-$HOME/.pyenv}/shims"; do
    case ":$PATH:" in
    *":$dir:"*) ;;
    *) [ -d "$dir" ] && PATH="$dir:$PATH" ;;
    esac
done
export PATH

# A one-off build on a fresh machine gains nothing from incremental compilation, whose caches
# take as much disk as the build itself.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
fi

section "test dependencies"
scripts/install-test-deps.sh

section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

section "cargo test"
# A missing openssl or pkilint must fail the run, not skip a check.
export AGENTCA_REQUIRE_TOOLS=1
log_dir="${CARGO_TARGET_DIR:-target}/test-logs"
mkdir -p "$log_dir"
log="$log_dir/cargo-test.log"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
cargo_status=${PIPESTATUS[0]}
set -e

# The protocol suites (stock clients, attacks, the renewal daemon and drill, status) and the
# operator commands again, with every CA's records in PostgreSQL (a database of its own per
# test in one throwaway cluster), and `serve` killed at random moments under load. Suites
# about the embedded store itself (losing its writes, killing commands) stay on it; the
# multi-node ones run on PostgreSQL already.
pg_log="$log_dir/cargo-test-postgres.log"
: >"$pg_log"
if [ "$cargo_status" -eq 0 ]; then
    section "protocol suites on PostgreSQL"
    set +e
    AGENTCA_TEST_STORE=postgres cargo test --test cli --no-fail-fast -- \
        acme_attacks:: scep_attacks:: acme_flows:: acme_clients:: scep_clients:: enroll:: \
        drill:: crl:: revoke:: verify:: token:: issue:: agent:: crash_serve:: 2>&1 | tee "$pg_log"
    cargo_status=${PIPESTATUS[0]}
    set -e
fi

# The same suites once more with each CA as two nodes on one PostgreSQL database behind a
# round-robin TCP balancer per listener, as a deployment runs them: a client's consecutive
# connections go to different nodes.
nodes_log="$log_dir/cargo-test-postgres-2nodes.log"
: >"$nodes_log"
if [ "$cargo_status" -eq 0 ]; then
    section "protocol suites on two nodes"
    set +e
    AGENTCA_TEST_STORE=postgres AGENTCA_TEST_NODES=2 cargo test --test cli --no-fail-fast -- \
        acme_attacks:: scep_attacks:: acme_flows:: acme_clients:: scep_clients:: enroll:: \
        drill:: crl:: revoke:: verify:: token:: issue:: agent:: 2>&1 | tee "$nodes_log"
    cargo_status=${PIPESTATUS[0]}
    set -e
fi

summary() {
    section "summary"
    # The start of each failure's report (its panic message), so that the end of the output
    # says why, not only which.
    awk '/^---- .* stdout ----$/ { n = 25; print; next }
         /^failures:$/ || /^test result:/ { n = 0 }
         n > 0 { print substr($0, 1, 300); n-- }' "$log" "$pg_log" "$nodes_log"
    grep -hE '^test result:' "$log" "$pg_log" "$nodes_log" || true
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i + 1) ~ /^passed/) p += $i
                if ($(i + 1) ~ /^failed/) f += $i
                if ($(i + 1) ~ /^ignored/) s += $i
            }
         }
         END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log" "$pg_log" "$nodes_log"
}

if [ "$cargo_status" -ne 0 ]; then
    summary
    echo "cargo test failed (exit $cargo_status)"
    exit "$cargo_status"
fi

section "extra test scripts"
# ---- extra test scripts: each runs only if present, and fails the run if it fails ----
# Crash tests (kill -9 during issuance/revocation, then reconcile).
if [ -f scripts/crash-test.sh ]; then
    bash scripts/crash-test.sh
else
    echo "scripts/crash-test.sh not present; skipped"
fi
# Coverage-guided fuzzing of the parsers of untrusted input (PARSE-1, SCEP-7): every target
# for a short while from the seed corpus; a crash, a hang or unbounded memory fails the run.
SECONDS_PER_TARGET=${FUZZ_SECONDS_PER_TARGET:-20} bash scripts/fuzz.sh
# ---- end of extra test scripts ----

summary
