#!/usr/bin/env bash
# OCSP responders compared on this machine in one run: `agentca serve` against
# `cfssl ocspserve` (pre-signed responses) and `openssl ocsp` (signs every answer), all three
# answering for the same agentca CA, loaded by the same closed-loop generator
# (`agentca bench ocsp`). docs/benchmarks.md ("OCSP responder") explains the method.
#
#   scripts/bench-ocsp.sh                          every server, concurrency 1/16/64, 3 runs each
#   SERVERS="agentca cfssl" RUNS=1 DURATION=5s scripts/bench-ocsp.sh
#
# Environment (default):
#   SERVERS (agentca cfssl openssl)  CONCURRENCY (1 16 64)  RUNS (3) runs per cell; medians
#   DURATION (15s) measured window   WARMUP (2s) unmeasured load first
#   LONG (60s) the agentca memory run at the highest concurrency; empty to skip it
#   CERTS (100000) certificates issued into the store; SAMPLE (1000) of them asked about
#   SERVER_CPU (1) LOAD_CPU (0): taskset cores for the servers and the generator; set both
#     empty for no pinning
#   QUIET_WAIT (900): seconds to wait for a quiet machine (load average < 0.5, no cargo or rustc)
#   BUILD (1): 0 to use the release binaries already built
#   WORK: keep the data (CA, fixture, raw JSON results) in this directory; a later run with the
#     same WORK reuses its fixture
# Needs cargo, openssl, cfssl (Debian: golang-cfssl), jq, taskset, python3; the missing ones are
# installed with apt-get when run as root.
set -euo pipefail

cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-agentca cfssl openssl}
CONCURRENCY=${CONCURRENCY:-1 16 64}
RUNS=${RUNS:-3}
DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-2s}
LONG=${LONG-60s}
CERTS=${CERTS:-100000}
SAMPLE=${SAMPLE:-1000}
SERVER_CPU=${SERVER_CPU-1}
LOAD_CPU=${LOAD_CPU-0}
QUIET_WAIT=${QUIET_WAIT:-900}

install_missing() {
    install_packages openssl:openssl cfssl:golang-cfssl jq:jq taskset:util-linux python3:python3
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
    echo "openssl: $(openssl version)"
    echo "cfssl:   $(cfssl version 2>/dev/null | head -1)"
    echo "pinning: servers on CPU ${SERVER_CPU:-any}, generator on CPU ${LOAD_CPU:-any}"
}

build() {
    echo "== build (release) =="
    if [[ ${BUILD:-1} == 0 ]]; then
        echo "BUILD=0: using the binaries already built"
    elif ! cargo build --release -p agentca -p agentca-bench --bin agentca --example ocsp_fixture \
        --example ocsp_load >"$work/build.log" 2>&1; then
        tail -30 "$work/build.log" >&2
        exit 1
    else
        tail -1 "$work/build.log"
    fi
    agentca="$target_dir/release/agentca"
    if "$agentca" bench ocsp --help >/dev/null 2>&1; then
        generator=("$agentca" bench ocsp)
    else
        # The same generator and flags, before the subcommand is wired into the CLI.
        generator=("$target_dir/release/examples/ocsp_load")
    fi
    echo "generator: ${generator[*]}"
    if [[ " $SERVERS " == *" agentca "* ]] && ! "$agentca" serve --help >/dev/null 2>&1; then
        echo "NOTE: this agentca build has no 'serve' command; agentca is skipped"
        SERVERS=${SERVERS//agentca/}
    fi
}

prepare() {
    echo "== fixture: $CERTS certificates issued, $SAMPLE asked about =="
    if [[ -s $work/fixture/leaves.pem && -s $work/cfssl/responses.b64 ]]; then
        echo "reusing the fixture in $work ($(wc -l <"$work/fixture/index.txt") certificates)"
        return
    fi
    "$agentca" --data-dir "$work/ca" init --trust-domain bench.example \
        --insecure-unencrypted-keys >/dev/null
    "$target_dir/release/examples/ocsp_fixture" --data-dir "$work/ca" --count "$CERTS" \
        --sample "$SAMPLE" --threads 32 --out "$work/fixture" 2>&1 | tail -2
    # cfssl serves what `cfssl ocspsign` signed, one base64 response a line.
    mkdir -p "$work/cfssl"
    (
        cd "$work/cfssl"
        awk '/BEGIN CERTIFICATE/ { n++ } { print > ("leaf-" n ".pem") }' ../fixture/leaves.pem
        find . -name 'leaf-*.pem' -print0 | xargs -0 -P "$(nproc)" -I{} sh -c \
            'cfssl ocspsign -ca ../ca/issuing.pem -responder ../ca/ocsp.pem \
                 -responder-key ../ca/ocsp.key -cert {} -status good 2>/dev/null |
             jq -r .ocspResponse' >responses.b64
        echo "cfssl: $(wc -l <responses.b64) responses signed by cfssl ocspsign"
    )
}

# start_server NAME: sets server_pid and server_url.
start_server() {
    local log="$work/$1.log"
    : >"$log"
    case $1 in
    agentca)
        "${server_pin[@]}" "$agentca" --data-dir "$work/ca" serve \
            --http-listen 127.0.0.1:0 --listen 127.0.0.1:0 >"$log" 2>&1 &
        server_pid=$!
        local line http
        line=$(wait_for_line "$log" '^agentca listening:')
        http=$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$line")
        server_url="http://$http/ocsp"
        # The server listens at once and pre-signs every certificate's responses in the
        # background; the steady state starts when that is done.
        if ! wait_for_line "$log" 'OCSP responses pre-signed' >/dev/null 2>&1; then
            echo "agentca did not log the end of pre-signing; measuring anyway" >&2
        fi
        ;;
    cfssl)
        local port
        port=$(free_port)
        "${server_pin[@]}" cfssl ocspserve -port "$port" \
            -responses "$work/cfssl/responses.b64" >"$log" 2>&1 &
        server_pid=$!
        wait_for_port "$port"
        server_url="http://127.0.0.1:$port/"
        ;;
    openssl)
        (
            cd "$work/ca"
            exec "${server_pin[@]}" openssl ocsp \
                -index ../fixture/index.txt -port 0 -rsigner ocsp.pem -rkey ocsp.key \
                -CA issuing.pem >"$log" 2>&1
        ) &
        server_pid=$!
        local line
        line=$(wait_for_line "$log" '^ACCEPT ') # ACCEPT [::]:PORT PID=N
        server_url="http://127.0.0.1:$(sed -E 's/^ACCEPT .*:([0-9]+) .*/\1/' <<<"$line")/"
        ;;
    esac
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
}

# bench NAME METHOD CONCURRENCY RUN DURATION: one measured run on a fresh server, appended
# to results.jsonl.
bench() {
    local name=$1 method=$2 c=$3 run=$4 duration=$5
    wait_no_builds
    start_server "$name"
    local out
    out=$("${load_pin[@]}" "${generator[@]}" --url "$server_url" \
        --issuer "$work/ca/issuing.pem" --cert "$work/fixture/leaves.pem" \
        --concurrency "$c" --duration "$duration" --warmup "$WARMUP" --method "$method" \
        --server-pid "$server_pid" --output json) || out=""
    stop_server
    local builds
    builds=$(pgrep -c -x 'cargo|rustc' || true)
    if [[ -z $out ]]; then
        echo "$name $method c=$c run $run: the generator failed" >&2
        return
    fi
    jq -c --arg responder "$name" --arg run "$run" --argjson builds "$builds" \
        '. + {responder: $responder, run: $run, builds_after: $builds}' \
        <<<"$out" >>"$work/results.jsonl"
    tail -1 "$work/results.jsonl" | jq -r '"\(.responder) \(.method) c=\(.concurrency): \(.rps) req/s, p50 \(.latency_us.p50) µs, p99 \(.latency_us.p99) µs, server CPU \(.server.cpu_per_request_us) µs/req, generator \(.client_cpu_per_request_us) µs/req, errors \(.errors.total)"' 
}

matrix() {
    echo
    echo "== runs: $DURATION each after $WARMUP warm-up, a fresh server per run =="
    local name method c run
    for run in $(seq "$RUNS"); do
        for name in $SERVERS; do
            for method in post get; do
                # cfssl's GET handler decodes the path as a query (a '+' becomes a space),
                # and openssl is compared on POST like cfssl.
                [[ $method == get && $name != agentca ]] && continue
                for c in $CONCURRENCY; do
                    bench "$name" "$method" "$c" "$run" "$DURATION"
                done
            done
        done
    done
}

long_run() {
    [[ -z $LONG || " $SERVERS " != *" agentca "* ]] && return
    local c
    c=$(tr ' ' '\n' <<<"$CONCURRENCY" | sort -n | tail -1)
    echo
    echo "== agentca memory over $LONG at concurrency $c, $(wc -l <"$work/fixture/index.txt") certificates in the store =="
    bench agentca post "$c" long "$LONG"
}

summary() {
    echo
    echo "== summary: medians of $RUNS runs per row (each column's median on its own) =="
    jq -rs '
      def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                         else (.[length / 2 - 1] + .[length / 2]) / 2 end;
      def f(n): if . == null then "n/a" else (. * pow(10; n) | round) / pow(10; n) | tostring end;
      def mib: if . == null then "n/a" else (. / 1048576 * 10 | round) / 10 | tostring end;
      [.[] | select(.run != "long")]
      | group_by([.responder, .method, .concurrency])
      | ["| server | method | connections | requests/s | p50 µs | p99 µs | server CPU µs/request | server RSS MiB (end) | generator CPU µs/request | errors | runs |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        + map("| \(.[0].responder) | \(.[0].method) | \(.[0].concurrency) | \(map(.rps) | median | f(0)) | \(map(.latency_us.p50) | median | f(0)) | \(map(.latency_us.p99) | median | f(0)) | \(map(.server.cpu_per_request_us) | median | f(1)) | \(map(.server.rss_end_bytes) | median | mib) | \(map(.client_cpu_per_request_us) | median | f(1)) | \(map(.errors.total) | add) | \(length) |")
      | .[]' "$work/results.jsonl"

    if [[ " $SERVERS " == *" agentca "* && " $SERVERS " == *" cfssl "* ]]; then
        echo
        echo "agentca POST against cfssl POST (medians):"
        jq -rs '
          def median: sort | if length % 2 == 1 then .[length / 2 | floor]
                             else (.[length / 2 - 1] + .[length / 2]) / 2 end;
          [.[] | select(.run != "long" and .method == "POST")]
          | group_by(.concurrency)[]
          | (map(select(.responder == "agentca"))) as $a
          | (map(select(.responder == "cfssl"))) as $c
          | select(($a | length) > 0 and ($c | length) > 0)
          | ($a | map(.rps) | median) as $ar | ($c | map(.rps) | median) as $cr
          | ($a | map(.server.cpu_per_request_us) | median) as $acpu
          | ($c | map(.server.cpu_per_request_us) | median) as $ccpu
          | ($a | map(.latency_us.p99) | median) as $ap99
          | "  c=\(.[0].concurrency): requests/s \(($ar / $cr * 100 | round) / 100)x cfssl (target >= 5x at 64); server CPU per request 1/\(($ccpu / $acpu * 10 | round) / 10) of cfssl (target <= 1/10); agentca p99 \($ap99) µs (target < 5000)"
        ' "$work/results.jsonl"
    fi
    echo
    echo "runs that ended while someone else's cargo/rustc ran: $(jq -s '[.[] | select(.builds_after > 0)] | length' "$work/results.jsonl") of $(jq -s length "$work/results.jsonl")"
    if grep -q '"run":"long"' "$work/results.jsonl"; then
        echo
        jq -r 'select(.run == "long") | "agentca \(.elapsed_s) s at c=\(.concurrency): \(.requests) requests, \(.rps) req/s, p99 \(.latency_us.p99) µs; RSS start \(.server.rss_start_bytes / 1048576 * 10 | round / 10) MiB, end \(.server.rss_end_bytes / 1048576 * 10 | round / 10) MiB, max \(.server.rss_max_bytes / 1048576 * 10 | round / 10) MiB"' \
            "$work/results.jsonl"
    fi
}

install_missing
target_dir=$(cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
if [[ -n ${WORK:-} ]]; then
    work=$WORK
    mkdir -p "$work"
else
    work=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
fi
server_pid=""
server_url=""
agentca=""
generator=()
machine
build
prepare
wait_quiet
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
: >"$work/results.jsonl"
matrix
long_run
summary
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
