#!/usr/bin/env bash
# ACME servers compared on this machine in one run: pebble (the ACME test server) and
# `agentca serve`, loaded by the same closed-loop generator (`agentca bench acme`): each worker
# creates its account before the measured window, then runs complete orders (newOrder,
# authorization, http-01 trigger, finalize, certificate download) one after another.
# docs/benchmarks.md ("ACME: agentca bench acme") explains the method.
#
#   scripts/bench-acme.sh                          both servers, concurrency 1/8/16/32, 3 runs
#   SERVERS="pebble" RUNS=1 ORDERS=500 scripts/bench-acme.sh
#
# Environment (default):
#   SERVERS (pebble agentca)  CONCURRENCY (1 8 16 32)  RUNS (3) runs per cell; medians
#   ORDERS (2000) completed orders per run   STALL_AFTER (20s) no completed order for this
#     long ends a run as stalled   TIMEOUT (5s) per request   MAX_DURATION (5m) per run
#   SERVER_CPU (1) LOAD_CPU (0): taskset cores for the servers and the generator; set both
#     empty for no pinning
#   QUIET_WAIT (900): seconds to wait for a quiet machine (load average < 0.5, no cargo or rustc)
#   BUILD (1): 0 to use the release binary already built
#   WORK: keep the data (certificates, configurations, raw JSON results) in this directory
# Needs cargo, pebble, openssl, jq, taskset, python3; the missing ones are installed with
# apt-get when run as root.
#
# pebble runs with PEBBLE_VA_ALWAYS_VALID=1 (no challenge is really validated: the generator
# serves none), PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0, and requires EAB with one
# shared credential. agentca gets a fresh CA for every run, whose bench policy pre-authorizes
# *.bench.test, and one single-use EAB credential per worker from `agentca token create`.
set -euo pipefail

cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-pebble agentca}
CONCURRENCY=${CONCURRENCY:-1 8 16 32}
RUNS=${RUNS:-3}
ORDERS=${ORDERS:-2000}
STALL_AFTER=${STALL_AFTER:-20s}
TIMEOUT=${TIMEOUT:-5s}
MAX_DURATION=${MAX_DURATION:-5m}
SERVER_CPU=${SERVER_CPU-1}
LOAD_CPU=${LOAD_CPU-0}
QUIET_WAIT=${QUIET_WAIT:-900}

# pebble's shared EAB credential (any key identifier; the key is 48 random bytes, base64url).
PEBBLE_KID=bench
PEBBLE_HMAC=""
BENCH_AGENT=spiffe://bench.test/agent/bench/load

install_missing() {
    install_packages pebble:pebble openssl:openssl jq:jq taskset:util-linux python3:python3
}

. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

machine() {
    echo "== machine =="
    echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cores:   $(nproc)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel:  $(uname -r)"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "rustc:   $(rustc -V)"
    echo "pebble:  $(dpkg-query -W -f '${Version}' pebble 2>/dev/null || echo unknown)"
    echo "pinning: servers on CPU ${SERVER_CPU:-any}, generator on CPU ${LOAD_CPU:-any}"
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
    if ! "$agentca" bench acme --help >/dev/null 2>&1; then
        echo "this agentca build has no 'bench acme' command" >&2
        exit 1
    fi
}

# pebble's TLS certificate: a throwaway root and a server certificate for 127.0.0.1 (the
# package ships none).
prepare_pebble() {
    local dir="$work/pebble"
    mkdir -p "$dir"
    [[ -s $dir/cert.pem ]] && return
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench-acme-root -keyout "$dir/root.key" -out "$dir/root.pem" 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
        -keyout "$dir/key.pem" -out "$dir/server.csr" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' \
        >"$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/root.pem" -CAkey "$dir/root.key" \
        -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/cert.pem" 2>/dev/null
}

# A fresh agentca CA (one per run) whose bench policy pre-authorizes the names the generator orders.
prepare_agentca() {
    local data="$work/agentca"
    rm -rf "$data"
    "$agentca" --data-dir "$data" init --trust-domain bench.test --insecure-unencrypted-keys \
        >/dev/null
    mkdir -p "$data/policies"
    cat >"$data/policies/bench.toml" <<'EOF'
description = "Benchmark agents: ACME only, any name under bench.test pre-authorized"
agents = ["/agent/bench/**"]
methods = ["acme"]
default_lifetime = "24h"
max_lifetime = "24h"
key_types = ["ecdsa-p256"]
ekus = ["clientAuth"]
dns = ["*.bench.test"]
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

# agentca's EAB credentials are single use: one per worker, for each run.
agentca_eab_file() { # CONCURRENCY FILE
    local i
    : >"$2"
    for i in $(seq "$1"); do
        "$agentca" --data-dir "$work/agentca" token create --agent "$BENCH_AGENT" --for acme \
            --ttl 1h --output json | jq -r '"\(.kid) \(.hmac)"' >>"$2"
    done
}

# start_server NAME: sets server_pid, directory and server_args.
start_server() {
    local log="$work/$1.log"
    : >"$log"
    case $1 in
    pebble)
        local port
        port=$(free_port)
        jq -n --arg listen "127.0.0.1:$port" --arg mgmt "127.0.0.1:$(free_port)" \
            --arg cert "$work/pebble/cert.pem" --arg key "$work/pebble/key.pem" \
            --argjson http "$(free_port)" --argjson tls "$(free_port)" \
            --arg kid "$PEBBLE_KID" --arg hmac "$PEBBLE_HMAC" \
            '{pebble: {listenAddress: $listen, managementListenAddress: $mgmt,
              certificate: $cert, privateKey: $key, httpPort: $http, tlsPort: $tls,
              ocspResponderURL: "", externalAccountBindingRequired: true,
              externalAccountMACKeys: {($kid): $hmac}}}' >"$work/pebble/config.json"
        PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
            "${server_pin[@]}" pebble -config "$work/pebble/config.json" >"$log" 2>&1 &
        server_pid=$!
        wait_for_port "$port"
        directory="https://127.0.0.1:$port/dir"
        server_args=(--ca "$work/pebble/root.pem" --eab-kid "$PEBBLE_KID" --eab-hmac "$PEBBLE_HMAC")
        ;;
    agentca)
        "${server_pin[@]}" "$agentca" --data-dir "$work/agentca" serve \
            --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 >"$log" 2>&1 &
        server_pid=$!
        local line https
        line=$(wait_for_line "$log" '^agentca listening:')
        https=$(sed -E 's/.* https=([^ ]+).*/\1/' <<<"$line")
        directory="https://$https/acme/directory"
        server_args=(--ca "$work/agentca/root.pem" --eab-file "$work/agentca/eab.txt")
        ;;
    esac
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

# bench NAME CONCURRENCY RUN: one run on a fresh server, appended to results.jsonl. A stalled
# run is recorded too: the generator prints its report and exits non-zero.
bench() {
    local name=$1 c=$2 run=$3
    wait_no_builds
    if [[ $name == agentca ]]; then
        # A fresh CA per run, like pebble's in-memory state: a store that grew with the
        # previous runs' certificates would make later runs slower than earlier ones.
        prepare_agentca
        agentca_eab_file "$c" "$work/agentca/eab.txt"
    fi
    start_server "$name"
    local out rc=0
    out=$("${load_pin[@]}" "$agentca" bench acme --directory "$directory" "${server_args[@]}" \
        --concurrency "$c" --orders "$ORDERS" --timeout "$TIMEOUT" \
        --stall-after "$STALL_AFTER" --max-duration "$MAX_DURATION" \
        --server-pid "$server_pid" --output json 2>>"$work/generator.log") || rc=$?
    stop_server
    local builds
    builds=$(pgrep -c -x 'cargo|rustc' || true)
    if ! jq -e '.orders_requested' >/dev/null 2>&1 <<<"$out"; then
        echo "$name c=$c run $run: the generator failed (exit $rc): $(jq -r '.error.message? // .' <<<"$out" 2>/dev/null | head -3)" >&2
        return
    fi
    jq -c --arg target "$name" --arg run "$run" --argjson builds "$builds" --argjson rc "$rc" \
        '. + {target: $target, run: $run, builds_after: $builds, exit: $rc}' \
        <<<"$out" >>"$work/results.jsonl"
    tail -1 "$work/results.jsonl" | jq -r '"\(.target) c=\(.concurrency) run \(.run): \(.end.reason), \(.orders)/\(.orders_requested) orders, \(.orders_per_s) orders/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, server CPU \(.server.cpu_per_order_ms) ms/order, RSS end \((.server.rss_end_bytes // 0) / 1048576 * 10 | round / 10) MiB, errors \(.errors.total)"'
}

matrix() {
    echo
    echo "== runs: $ORDERS orders each, a fresh server per run =="
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
      | ["| server | workers | orders/s | p50 ms | p90 ms | p99 ms | max ms | server CPU ms/order | server RSS MiB (end) | account creation ms (p50) | failed orders | runs completed / stalled / time limit |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        + map(. as $all | map(select(.end.reason == "completed")) as $ok
              | "| \(.[0].target) | \(.[0].concurrency) | \($ok | map(.orders_per_s) | median | f(1)) | \($ok | map(.latency_ms.p50) | median | f(1)) | \($ok | map(.latency_ms.p90) | median | f(1)) | \($ok | map(.latency_ms.p99) | median | f(1)) | \($ok | map(.latency_ms.max) | median | f(1)) | \($ok | map(.server.cpu_per_order_ms) | median | f(2)) | \($ok | map(.server.rss_end_bytes) | median | mib) | \($all | map(.accounts.latency_ms.p50) | median | f(1)) | \($all | map(.errors.total) | add) | \($ok | length) / \($all | map(select(.end.reason == "stalled")) | length) / \($all | map(select(.end.reason == "time limit")) | length) |")
      | .[]' "$work/results.jsonl"
    local stalls
    stalls=$(jq -r 'select(.end.reason != "completed") | "  \(.target) c=\(.concurrency) run \(.run): \(.end.message)"' "$work/results.jsonl")
    if [[ -n $stalls ]]; then
        echo
        echo "runs that did not complete:"
        echo "$stalls"
    fi
    echo
    echo "errors by kind (all runs):"
    jq -rs '[.[] | .errors.by_kind | to_entries[]] | group_by(.key) | map("  \(map(.value) | add) \(.[0].key)") | if length == 0 then ["  none"] else . end | .[]' "$work/results.jsonl"
    echo
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
    [[ -n $server_pid ]] && stop_server
    if [[ ${remove_work:-0} == 1 ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
PEBBLE_HMAC=$(openssl rand 48 | basenc --base64url | tr -d '=\n')
server_pid=""
directory=""
server_args=()
agentca=""
machine
build
[[ " $SERVERS " == *" pebble "* ]] && prepare_pebble
wait_quiet
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
: >"$work/results.jsonl"
matrix
summary
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
