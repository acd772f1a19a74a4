#!/usr/bin/env bash
# What a relying service pays per call to check an agent certificate: agentca-verify's
# `Verifier::verify_chain` with the OCSP answer cached (criterion,
# crates/agentca-verify/benches/verify.rs), next to `openssl verify` of the same chain, which
# is one process per call (hyperfine, and a timed shell loop): its figures include process
# start. docs/benchmarks.md ("Verification per call") explains the method.
#
#   scripts/bench-verify.sh
#
# Environment (default):
#   CPU (0): taskset core for every measurement; empty for no pinning
#   RUNS (3): criterion runs and hyperfine runs; medians
#   LOOP (1000): openssl calls in the timed loop
#   QUIET_WAIT (300): seconds to wait for a quiet machine (load average < 0.5, no cargo or rustc)
#   BUILD (1): 0 to use the release binary and bench already built
#   WORK: keep the chain, logs and raw results in this directory
# Needs cargo, openssl, hyperfine, jq, taskset, python3; the missing ones are installed with
# apt-get when run as root.
#
# The chain is agentca's own: `agentca init` (ECDSA P-256 root and issuing CA) and
# `agentca issue` of a P-256 agent certificate; `agentca serve` answers the one OCSP request
# that warms the verifier's cache.
set -euo pipefail

cd "$(dirname "$0")/.."
CPU=${CPU-0}
RUNS=${RUNS:-3}
LOOP=${LOOP:-1000}
QUIET_WAIT=${QUIET_WAIT:-300}
AGENT=spiffe://bench.test/agent/team/worker-1

. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
pin=()
[[ -n $CPU ]] && pin=(taskset -c "$CPU")

install_packages openssl:openssl hyperfine:hyperfine jq:jq taskset:util-linux python3:python3

target_dir=$(cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
export CRITERION_HOME="$target_dir/criterion"
if [[ -n ${WORK:-} ]]; then
    work=$WORK
    mkdir -p "$work"
else
    work=$(mktemp -d)
fi
agentca="$target_dir/release/agentca"
serve_pid=""
cleanup() {
    [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null || true
}
trap cleanup EXIT

median() { # numbers on stdin -> their median
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "== machine =="
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cores:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "kernel:  $(uname -r)"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "rustc:   $(rustc -V)"
echo "openssl: $(openssl version)"
echo "hyperfine: $(hyperfine --version)"
echo "pinning: CPU ${CPU:-any}"

echo "== build (release) =="
if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --release -p agentca --bin agentca >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
    cargo bench -p agentca-verify --bench verify --no-run >>"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
fi
tail -1 "$work/build.log" 2>/dev/null || true

echo "== the chain =="
rm -rf "$work/ca" "$work/chain"
mkdir -p "$work/chain"
port=$(free_port)
"$agentca" --data-dir "$work/ca" init --trust-domain bench.test --insecure-unencrypted-keys \
    --base-url "http://127.0.0.1:$port" >/dev/null
"$agentca" --data-dir "$work/ca" agent add "$AGENT" >/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj / \
    -keyout "$work/chain/leaf.key" -out "$work/chain/leaf.csr" 2>/dev/null
"$agentca" --data-dir "$work/ca" issue --agent "$AGENT" --csr "$work/chain/leaf.csr" \
    --out "$work/chain/leaf.pem" >/dev/null
cp "$work/ca/root.pem" "$work/chain/root.pem"
# leaf.pem is the leaf then the issuing CA; openssl gets them apart.
awk -v dir="$work/chain" '/BEGIN CERTIFICATE/ { n++ } { print > (dir "/cert" n ".pem") }' "$work/chain/leaf.pem"
mv "$work/chain/cert1.pem" "$work/chain/leaf-only.pem"
mv "$work/chain/cert2.pem" "$work/chain/issuing.pem"
openssl verify -CAfile "$work/chain/root.pem" -untrusted "$work/chain/issuing.pem" \
    "$work/chain/leaf-only.pem"

"$agentca" --data-dir "$work/ca" serve --http-listen "127.0.0.1:$port" --listen 127.0.0.1:0 \
    >"$work/serve.log" 2>&1 &
serve_pid=$!
wait_for_line "$work/serve.log" '^agentca listening' >/dev/null

wait_quiet

echo "== agentca-verify (criterion, $RUNS runs) =="
names=(chain_ocsp_cached chain_full_ocsp_cached chain_full_no_revocation async_ocsp_cached p256_signature)
for run in $(seq "$RUNS"); do
    AGENTCA_BENCH_CHAIN_DIR="$work/chain" "${pin[@]}" \
        cargo bench -p agentca-verify --bench verify >"$work/criterion-$run.log" 2>&1 ||
        { tail -30 "$work/criterion-$run.log"; exit 1; }
    for name in "${names[@]}"; do
        jq -r '.median.point_estimate' "$CRITERION_HOME/verify/$name/new/estimates.json" \
            >>"$work/$name.ns"
    done
    echo "run $run: $(for n in "${names[@]}"; do printf '%s %.2f µs  ' "$n" "$(tail -1 "$work/$n.ns" | awk '{ print $1 / 1000 }')"; done)"
done
kill "$serve_pid" 2>/dev/null || true
wait "$serve_pid" 2>/dev/null || true
serve_pid=""

echo "== openssl verify, one process per call =="
cd "$work/chain"
verify_cmd="openssl verify -CAfile root.pem -untrusted issuing.pem leaf-only.pem"
floor_cmd="openssl version"
echo "\$ hyperfine -N --warmup 20 --runs 500 '$verify_cmd' '$floor_cmd'   (x$RUNS)"
for run in $(seq "$RUNS"); do
    "${pin[@]}" hyperfine -N --warmup 20 --runs 500 --export-json "$work/hyperfine-$run.json" \
        "$verify_cmd" "$floor_cmd" >/dev/null 2>&1
    jq -r '.results[0].median' "$work/hyperfine-$run.json" >>"$work/openssl-verify.s"
    jq -r '.results[1].median' "$work/hyperfine-$run.json" >>"$work/openssl-version.s"
    echo "run $run: verify $(tail -1 "$work/openssl-verify.s" | awk '{ printf "%.0f", $1 * 1e6 }') µs, openssl version $(tail -1 "$work/openssl-version.s" | awk '{ printf "%.0f", $1 * 1e6 }') µs"
done
echo "\$ for i in \$(seq $LOOP); do $verify_cmd >/dev/null; done   (x$RUNS)"
for run in $(seq "$RUNS"); do
    start=$(date +%s%N)
    "${pin[@]}" bash -c "for i in \$(seq $LOOP); do $verify_cmd >/dev/null; done"
    end=$(date +%s%N)
    echo "$(( (end - start) / LOOP ))" >>"$work/openssl-loop.ns"
    echo "run $run: $(( (end - start) / LOOP / 1000 )) µs per call"
done
echo "\$ openssl speed -seconds 3 ecdsap256"
"${pin[@]}" openssl speed -seconds 3 ecdsap256 2>/dev/null | grep -E '^ *256 bits ecdsa' | tee "$work/openssl-speed.txt"
cd - >/dev/null

echo "== summary (medians) =="
cached=$(median <"$work/chain_ocsp_cached.ns")
full=$(median <"$work/chain_full_ocsp_cached.ns")
plain=$(median <"$work/chain_full_no_revocation.ns")
async=$(median <"$work/async_ocsp_cached.ns")
p256=$(median <"$work/p256_signature.ns")
ossl=$(median <"$work/openssl-verify.s")
floor=$(median <"$work/openssl-version.s")
loop=$(median <"$work/openssl-loop.ns")
awk -v c="$cached" -v u="$full" -v p="$plain" -v a="$async" -v s="$p256" -v o="$ossl" -v f="$floor" -v l="$loop" 'BEGIN {
    printf "| what | µs per call |\n|---|---:|\n"
    printf "| agentca-verify verify_chain, OCSP answer cached (default: verified path cached) | %.1f |\n", c / 1000
    printf "| agentca-verify verify_chain, OCSP answer cached, path cache off | %.1f |\n", u / 1000
    printf "| agentca-verify verify_chain, path cache off, revocation not checked | %.1f |\n", p / 1000
    printf "| agentca-verify verify (async), OCSP answer cached | %.1f |\n", a / 1000
    printf "| one P-256 signature verification (aws-lc-rs) | %.1f |\n", s / 1000
    printf "| openssl verify, process per call (hyperfine) | %.0f |\n", o * 1e6
    printf "| openssl version, process per call (hyperfine): the start-up floor | %.0f |\n", f * 1e6
    printf "| openssl verify, process per call (shell loop) | %.0f |\n", l / 1000
    printf "\nratio openssl verify (hyperfine) / verify_chain cached: %.0fx\n", o * 1e9 / c
    printf "ratio openssl verify (hyperfine) / verify_chain with the path cache off: %.0fx\n", o * 1e9 / u
    printf "openssl verify minus its start-up floor: %.0f µs\n", (o - f) * 1e6
}'
echo "raw results in $work"
