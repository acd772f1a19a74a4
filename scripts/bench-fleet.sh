#!/usr/bin/env bash
# What one agentca node spends on the renewals of a fleet: the server CPU of one complete
# renewal as `agentca renew` makes it (a new TLS connection, a nonce, newOrder with `replaces`,
# the authorization, finalize, the certificate download; a new P-256 key each time), measured
# over many renewals of agents with 1-hour certificates. docs/benchmarks.md ("Renewals of a
# fleet") turns it into the number of agents one node sustains.
#
#   scripts/bench-fleet.sh
#
# Environment (default):
#   RENEWALS (400): renewals per run, spread over the agents   AGENTS (4): agents renewing in
#     parallel, one `agentca renew` after another each   RUNS (3): runs; medians
#   SERVER_CPU (1) LOAD_CPU (0): taskset cores for the server and the renewing agents; set both
#     empty for no pinning
#   QUIET_WAIT (300): seconds to wait for a quiet machine   BUILD (1): 0 to use the release
#     binary already built   WORK: keep the data and logs in this directory
# Needs cargo, openssl, jq, taskset, python3; the missing ones are installed with apt-get when
# run as root.
set -euo pipefail

cd "$(dirname "$0")/.."
RENEWALS=${RENEWALS:-400}
AGENTS=${AGENTS:-4}
RUNS=${RUNS:-3}
SERVER_CPU=${SERVER_CPU-1}
LOAD_CPU=${LOAD_CPU-0}
QUIET_WAIT=${QUIET_WAIT:-300}

. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"
install_packages openssl:openssl jq:jq taskset:util-linux python3:python3

target_dir=$(cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
if [[ -n ${WORK:-} ]]; then
    work=$WORK
    mkdir -p "$work"
else
    work=$(mktemp -d)
fi
agentca="$target_dir/release/agentca"
server_pid=""
trap '[[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true' EXIT

echo "== machine =="
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "cores:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
echo "pinning: server on CPU ${SERVER_CPU:-any}, agents on CPU ${LOAD_CPU:-any}"
if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --release -p agentca --bin agentca >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; exit 1; }
fi

# cpu_ticks PID: utime + stime of the process, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)

# One run: a fresh CA, AGENTS agents enrolled, then RENEWALS renewals; prints one JSON line.
run() {
    local data="$work/ca-$1" i
    rm -rf "$data" "$work/agents-$1"
    "$agentca" --data-dir "$data" init --trust-domain bench.test --insecure-unencrypted-keys >/dev/null
    sed -e 's|"/agent/\*\*"|"/agent/fleet/*"|' -e 's|"24h"|"1h"|g' \
        -e 's|^\(acme_[a-z_]*\) = .*|\1 = 0|' "$data/policies/default.toml" \
        >"$data/policies/fleet.toml"
    for i in $(seq "$AGENTS"); do
        "$agentca" --data-dir "$data" agent add "spiffe://bench.test/agent/fleet/a$i" >/dev/null
    done
    local server_cmd=("$agentca" --data-dir "$data" serve --listen 127.0.0.1:0 --http-listen 127.0.0.1:0)
    [[ -n $SERVER_CPU ]] && server_cmd=(taskset -c "$SERVER_CPU" "${server_cmd[@]}")
    "${server_cmd[@]}" >"$work/serve-$1.log" 2>&1 &
    server_pid=$!
    local listening https
    listening=$(wait_for_line "$work/serve-$1.log" '^agentca listening')
    https=$(sed -E 's/.*https=([^ ]+).*/\1/' <<<"$listening")
    for i in $(seq "$AGENTS"); do
        local agent="spiffe://bench.test/agent/fleet/a$i" dir="$work/agents-$1/a$i" token
        mkdir -p "$dir"
        token=$("$agentca" --data-dir "$data" --output json token create --agent "$agent" --for acme)
        "$agentca" enroll --agent "$agent" --key "$dir/key.pem" --cert "$dir/cert.pem" \
            --acme "https://$https/acme/directory" --ca "$data/root.pem" \
            --eab-kid "$(jq -r .kid <<<"$token")" --eab-hmac "$(jq -r .hmac <<<"$token")" >/dev/null
    done
    wait_no_builds
    local per_agent=$((RENEWALS / AGENTS)) start end cpu0 cpu1 failed=0
    local load=()
    [[ -n $LOAD_CPU ]] && load=(taskset -c "$LOAD_CPU")
    cpu0=$(cpu_ticks "$server_pid")
    start=$(date +%s%N)
    for i in $(seq "$AGENTS"); do
        local dir="$work/agents-$1/a$i"
        "${load[@]}" bash -c "for n in \$(seq $per_agent); do
            '$agentca' renew --key '$dir/key.pem' --cert '$dir/cert.pem' >/dev/null 2>>'$work/renew-$1.err' || echo failed
        done" >"$work/failed-$1-$i" &
    done
    wait $(jobs -p | grep -v "^$server_pid\$") 2>/dev/null || true
    end=$(date +%s%N)
    cpu1=$(cpu_ticks "$server_pid")
    failed=$(cat "$work"/failed-"$1"-* | wc -l)
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    local done_count=$((per_agent * AGENTS))
    awk -v n="$done_count" -v f="$failed" -v c=$((cpu1 - cpu0)) -v hz="$ticks_per_second" \
        -v ns=$((end - start)) 'BEGIN {
        printf "{\"renewals\": %d, \"failed\": %d, \"seconds\": %.2f, \"renewals_per_s\": %.1f, \"server_cpu_ms_per_renewal\": %.3f}\n",
            n, f, ns / 1e9, n / (ns / 1e9), c / hz * 1000 / n
    }'
}

wait_quiet
echo "== $RUNS runs of $RENEWALS renewals by $AGENTS agents =="
: >"$work/results.jsonl"
for r in $(seq "$RUNS"); do
    run "$r" | tee -a "$work/results.jsonl"
done
echo "== medians =="
for field in renewals_per_s server_cpu_ms_per_renewal failed; do
    printf '%s: ' "$field"
    jq -r ".$field" "$work/results.jsonl" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
done
echo "raw results in $work"
