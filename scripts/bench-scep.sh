#!/usr/bin/env bash
# SCEP servers compared on this machine in one run: micromdm's scepserver (Debian package
# scep) and `agentca serve`, loaded by the same closed-loop generator (`agentca bench scep`):
# before the measured window it reads GetCACaps and GetCACert and makes every request (a fresh
# RSA key, a CSR with the challenge, the signed and encrypted PKCSReq), then each worker sends
# one PKCSReq after another and checks every CertRep. docs/benchmarks.md ("SCEP: agentca bench
# scep") explains the method.
#
#   scripts/bench-scep.sh                                  both servers, concurrency 1/4/8/32, 3 runs
#   SERVERS="scepserver" RUNS=1 CONCURRENCY="1 4" COUNT=200 scripts/bench-scep.sh
#
# Environment (default):
#   SERVERS (scepserver agentca)  CONCURRENCY (1 4 8 32)  RUNS (3) runs per cell; medians
#   COUNT (2000) PKCSReq requests per run, each with its own key (made before the window: about
#     0.06 s per RSA-2048 key per core)
#   KEY_BITS (2048) the requests' RSA keys   CIPHER (aes128) their content encryption
#   SCEPSERVER_KEY_BITS (2048) RSA size of scepserver's CA key (the size of agentca's RA key;
#     `scepserver ca -init` would make 4096)
#   STALL_AFTER (20s) no answer for this long ends a run as stalled   TIMEOUT (5s) per request
#   MAX_DURATION (5m) per measured window
#   SERVER_CPU (1) LOAD_CPU (0): the servers run on SERVER_CPU (taskset); the generator makes
#     its keys on every core, then sends the load from LOAD_CPU only (--load-cpus); set both
#     empty for no pinning
#   QUIET_WAIT (900): seconds to wait for a quiet machine (load average < 0.5, no cargo or rustc)
#   BUILD (1): 0 to use the release binary already built
#   WORK: keep the data (CAs, challenge files, logs, raw JSON results) in this directory
# Needs cargo, scepserver, jq, taskset, python3; the missing ones are installed with apt-get
# when run as root.
#
# scepserver gets a fresh CA (`scepserver ca -init`) in a new depot for every run and a static
# challenge (-challenge). agentca gets a fresh CA for every run, a policy that lets the bench
# agent enroll by SCEP only, and one single-use challenge per request from `agentca token
# create --for scep`; its SCEP endpoint is /scep on the HTTP listener. The generator encrypts
# with AES, so agentca runs without --scep-legacy-crypto.
set -euo pipefail

cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-scepserver agentca}
CONCURRENCY=${CONCURRENCY:-1 4 8 32}
RUNS=${RUNS:-3}
COUNT=${COUNT:-2000}
KEY_BITS=${KEY_BITS:-2048}
CIPHER=${CIPHER:-aes128}
SCEPSERVER_KEY_BITS=${SCEPSERVER_KEY_BITS:-2048}
STALL_AFTER=${STALL_AFTER:-20s}
TIMEOUT=${TIMEOUT:-5s}
MAX_DURATION=${MAX_DURATION:-5m}
SERVER_CPU=${SERVER_CPU-1}
LOAD_CPU=${LOAD_CPU-0}
QUIET_WAIT=${QUIET_WAIT:-900}

BENCH_AGENT=spiffe://bench.test/agent/bench/scep

install_missing() {
    install_packages scepserver:scep jq:jq taskset:util-linux python3:python3
}

. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

# The generator is not started under taskset: it pins itself after making its keys.
load_args=()
[[ -n $LOAD_CPU ]] && load_args=(--load-cpus "$LOAD_CPU")

machine() {
    echo "== machine =="
    echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cores:   $(nproc)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel:  $(uname -r)"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "rustc:   $(rustc -V)"
    echo "scep:    $(dpkg-query -W -f '${Version}' scep 2>/dev/null || echo unknown)"
    echo "pinning: servers on CPU ${SERVER_CPU:-any}, generator's load on CPU ${LOAD_CPU:-any} (its keys on every CPU)"
    echo "requests: RSA-$KEY_BITS keys, $CIPHER; scepserver CA key RSA-$SCEPSERVER_KEY_BITS"
}

build() {
    echo "== build (release) =="
    if [[ ${BUILD:-1} == 0 ]]; then
        echo "BUILD=0: using the binary already built"
    elif ! cargo build --release -p agentca --bin agentca >"$work/build.log" 2>&1; then
        tail -30 "$work/build.log" >&2
        exit 1
    else
        tail -1 "$work/build.log"
    fi
    agentca="$target_dir/release/agentca"
    if ! "$agentca" bench scep --help >/dev/null 2>&1; then
        echo "this agentca build has no 'bench scep' command" >&2
        exit 1
    fi
}

# A fresh scepserver CA in a new depot (one per run: its depot keeps every certificate and a
# serial counter).
prepare_scepserver() {
    local depot="$work/scepserver/depot"
    rm -rf "$work/scepserver"
    mkdir -p "$work/scepserver"
    scepserver ca -init -depot "$depot" -keySize "$SCEPSERVER_KEY_BITS" \
        -organization agentca-bench >"$work/scepserver/init.log" 2>&1
}

# A fresh agentca CA (one per run) whose bench policy admits the bench agent by SCEP only.
prepare_agentca() {
    local data="$work/agentca"
    rm -rf "$data"
    "$agentca" --data-dir "$data" init --trust-domain bench.test --insecure-unencrypted-keys \
        >/dev/null
    mkdir -p "$data/policies"
    cat >"$data/policies/bench.toml" <<EOF
description = "Benchmark agents: SCEP only, RSA-$KEY_BITS"
agents = ["/agent/bench/**"]
methods = ["scep"]
default_lifetime = "24h"
max_lifetime = "24h"
key_types = ["rsa-$KEY_BITS"]
ekus = ["clientAuth"]
dns = []
ips = []

[rate_limits]
certificates_per_agent_per_hour = 0
acme_orders_per_account_per_hour = 0
acme_orders_per_agent_per_hour = 0
acme_failed_validations_per_account_per_hour = 0
acme_failed_validations_per_agent_per_hour = 0
EOF
    "$agentca" --data-dir "$data" agent add "$BENCH_AGENT" --owner bench >/dev/null
}

# agentca's challenges are single use: one per request, for each run. Made while the server
# runs (through its admin socket, so no process opens the store again), before the window.
agentca_challenge_file() { # COUNT FILE
    local i
    : >"$2"
    for i in $(seq "$1"); do
        "$agentca" --data-dir "$work/agentca" token create --agent "$BENCH_AGENT" --for scep \
            --ttl 1h --output json | jq -r .challenge >>"$2"
    done
}

# start_server NAME: sets server_pid, url and server_args.
start_server() {
    local log="$work/$1.log"
    : >"$log"
    case $1 in
    scepserver)
        local port
        port=$(free_port)
        "${server_pin[@]}" scepserver -depot "$work/scepserver/depot" -port "$port" \
            -challenge "$SCEPSERVER_CHALLENGE" >"$log" 2>&1 &
        server_pid=$!
        wait_for_port "$port"
        url="http://127.0.0.1:$port/scep"
        server_args=(--challenge "$SCEPSERVER_CHALLENGE")
        ;;
    agentca)
        "${server_pin[@]}" "$agentca" --data-dir "$work/agentca" serve \
            --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 >"$log" 2>&1 &
        server_pid=$!
        local line http
        line=$(wait_for_line "$log" '^agentca listening:')
        http=$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$line")
        url="http://$http/scep"
        agentca_challenge_file "$COUNT" "$work/agentca/challenges.txt"
        server_args=(--challenge-file "$work/agentca/challenges.txt")
        ;;
    esac
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# bench NAME CONCURRENCY RUN: one run on a fresh server, appended to results.jsonl. A stalled
# run is recorded too: the generator prints its report and exits non-zero.
bench() {
    local name=$1 c=$2 run=$3
    wait_no_builds
    case $name in
    scepserver) prepare_scepserver ;;
    agentca) prepare_agentca ;;
    esac
    start_server "$name"
    local out rc=0
    out=$("$agentca" bench scep --url "$url" "${server_args[@]}" "${load_args[@]}" \
        --concurrency "$c" --count "$COUNT" --key-bits "$KEY_BITS" --cipher "$CIPHER" \
        --timeout "$TIMEOUT" --stall-after "$STALL_AFTER" --max-duration "$MAX_DURATION" \
        --server-pid "$server_pid" --output json 2>>"$work/generator.log") || rc=$?
    stop_server
    local builds
    builds=$(pgrep -c -x 'cargo|rustc' || true)
    if ! jq -e '.requested' >/dev/null 2>&1 <<<"$out"; then
        echo "$name c=$c run $run: the generator failed (exit $rc): $(jq -r '.error.message? // .' <<<"$out" 2>/dev/null | head -3)" >&2
        return
    fi
    jq -c --arg target "$name" --arg run "$run" --argjson builds "$builds" --argjson rc "$rc" \
        '. + {target: $target, run: $run, builds_after: $builds, exit: $rc}' \
        <<<"$out" >>"$work/results.jsonl"
    tail -1 "$work/results.jsonl" | jq -r '"\(.target) c=\(.concurrency) run \(.run): \(.end.reason), \(.enrollments)/\(.requested) enrolled, \(.enrollments_per_s) enrollments/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, server CPU \(.server.cpu_per_enrollment_ms) ms/enrollment, RSS end \((.server.rss_end_bytes // 0) / 1048576 * 10 | round / 10) MiB, failed \(.errors.total), duplicate serials \(.duplicate_serials.count), keys made in \(.preparation.elapsed_s) s"'
}

matrix() {
    echo
    echo "== runs: $COUNT requests each, a fresh server per run =="
    local name c run
    for run in $(seq "$RUNS"); do
        for name in $SERVERS; do
            for c in $CONCURRENCY; do
                bench "$name" "$c" "$run"
            done
        done
    done
}

summary() {
    echo
    echo "== summary: medians of the completed runs per row (each column's median on its own) =="
    [[ -s $work/results.jsonl ]] || { echo "no results"; return; }
    jq -rs '
      def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
                         else (.[length / 2 - 1] + .[length / 2]) / 2 end;
      def f(n): if . == null then "n/a" else (. * pow(10; n) | round) / pow(10; n) | tostring end;
      def mib: if . == null then "n/a" else (. / 1048576 * 10 | round) / 10 | tostring end;
      group_by([.target, .concurrency])
      | ["| server | workers | enrollments/s | p50 ms | p90 ms | p99 ms | max ms | server CPU ms/enrollment | server CPU ms/request | server RSS MiB (end) | failed requests (median %) | duplicate serials (median) | runs completed / stalled / time limit |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        + map(. as $all | map(select(.end.reason == "completed")) as $ok
              | "| \(.[0].target) | \(.[0].concurrency) | \($ok | map(.enrollments_per_s) | median | f(1)) | \($ok | map(.latency_ms.p50) | median | f(1)) | \($ok | map(.latency_ms.p90) | median | f(1)) | \($ok | map(.latency_ms.p99) | median | f(1)) | \($ok | map(.latency_ms.max) | median | f(1)) | \($ok | map(.server.cpu_per_enrollment_ms) | median | f(2)) | \($ok | map(.server.cpu_per_request_ms) | median | f(2)) | \($ok | map(.server.rss_end_bytes) | median | mib) | \($all | map(.errors.total / .requested * 100) | median | f(1)) | \($all | map(.duplicate_serials.count) | median | f(0)) | \($ok | length) / \($all | map(select(.end.reason == "stalled")) | length) / \($all | map(select(.end.reason == "time limit")) | length) |")
      | .[]' "$work/results.jsonl"
    local stalls
    stalls=$(jq -r 'select(.end.reason != "completed") | "  \(.target) c=\(.concurrency) run \(.run): \(.end.message)"' "$work/results.jsonl")
    if [[ -n $stalls ]]; then
        echo
        echo "runs that did not complete:"
        echo "$stalls"
    fi
    echo
    echo "failures by kind (all runs):"
    jq -rs '[.[] | .target as $t | .errors.by_kind | to_entries[] | .key |= "\($t): \(.)"] | group_by(.key) | map("  \(map(.value) | add) \(.[0].key)") | if length == 0 then ["  none"] else . end | .[]' "$work/results.jsonl"
    echo
    echo "duplicate serials (all runs): $(jq -s 'map(.duplicate_serials.count) | add' "$work/results.jsonl") among $(jq -s 'map(.enrollments) | add' "$work/results.jsonl") issued certificates"
    echo "runs that ended while someone else's cargo/rustc ran: $(jq -s '[.[] | select(.builds_after > 0)] | length' "$work/results.jsonl") of $(jq -s length "$work/results.jsonl")"
}

install_missing
target_dir=$(cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
if [[ -n ${WORK:-} ]]; then
    work=$WORK
    mkdir -p "$work"
else
    work=$(mktemp -d)
    remove_work=1
fi
# A server left behind by an interrupted run would be measured by the next one.
cleanup() {
    if [[ -n $server_pid ]]; then stop_server; fi
    if [[ ${remove_work:-0} == 1 ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
SCEPSERVER_CHALLENGE=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
server_pid=""
url=""
server_args=()
agentca=""
machine
build
wait_quiet
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
: >"$work/results.jsonl"
matrix
summary
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
