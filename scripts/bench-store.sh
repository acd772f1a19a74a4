#!/usr/bin/env bash
# agentca on its store backends, compared on this machine in one run: one node on the embedded
# store (sled), one node on PostgreSQL, and two nodes sharing that PostgreSQL. Each setup is
# loaded by the same closed-loop generators as scripts/bench-ocsp.sh (`agentca bench ocsp`, on a
# fixture of issued certificates) and scripts/bench-acme.sh (`agentca bench acme`: complete
# orders with single-use EAB credentials, names pre-authorized by the bench policy).
# docs/benchmarks.md ("Store backends: sled, PostgreSQL, two nodes") explains the method.
#
#   scripts/bench-store.sh                                  every setup, 3 runs
#   RUNS=1 ORDERS=200 CERTS=200 OCSP_DURATION=2s scripts/bench-store.sh    a quick check
#
# Environment (default):
#   SETUPS (sled pg pg2)  RUNS (3) runs per setup; medians
#   ORDERS (2000) completed ACME orders per run, over all nodes   ACME_CONCURRENCY (16) workers
#     over all nodes   STALL_AFTER (20s)  TIMEOUT (5s) per request  MAX_DURATION (5m) per run
#   CERTS (10000) certificates issued into the store before the nodes start; SAMPLE (1000) of
#     them asked about   OCSP_CONCURRENCY (16) connections over all nodes   OCSP_DURATION (15s)
#     measured window   WARMUP (2s) unmeasured OCSP load first
#   SERVER_CPU (1) LOAD_CPU (0): taskset cores for the servers (agentca nodes and PostgreSQL)
#     and the generators; set both empty for no pinning
#   QUIET_WAIT (900): seconds to wait for a quiet machine (load average < 0.5, no cargo or rustc)
#   BUILD (1): 0 to use the release binaries already built
#   WORK: keep the data (CAs, fixtures, logs, raw JSON results) in this directory
#   PG_SETTINGS (empty): extra postgresql.conf lines for the cluster, separated by ';', for
#     example "commit_delay = 100;commit_siblings = 2"
#   STATEMENTS (0): 1 to count, with pg_stat_statements, the statements each ACME order costs
#     on PostgreSQL (printed per run, kept in WORK/statements-SETUP-RUN.txt)
# Needs cargo, PostgreSQL's server binaries (Debian: postgresql, in /usr/lib/postgresql/N/bin),
# jq, taskset, python3; the missing ones are installed with apt-get when run as root.
#
# In the two-node setup each generator (one per node) gets half of the workers and half of the
# orders (or connections): requests/s and orders/s are the sum over the nodes, latencies and
# CPU per order are given per node. PostgreSQL's CPU is the utime+stime of the cluster's
# processes (the postmaster, its children, and the children it has reaped) from /proc, taken
# around each generator run, so it also counts the accounts created before the measured
# window. The cluster runs with PostgreSQL's defaults (fsync and synchronous_commit on): agentca
# acknowledges only durable writes, and a benchmark without durable commits would measure
# something else.
set -euo pipefail

cd "$(dirname "$0")/.."
SETUPS=${SETUPS:-sled pg pg2}
RUNS=${RUNS:-3}
ORDERS=${ORDERS:-2000}
ACME_CONCURRENCY=${ACME_CONCURRENCY:-16}
STALL_AFTER=${STALL_AFTER:-20s}
TIMEOUT=${TIMEOUT:-5s}
MAX_DURATION=${MAX_DURATION:-5m}
CERTS=${CERTS:-10000}
SAMPLE=${SAMPLE:-1000}
OCSP_CONCURRENCY=${OCSP_CONCURRENCY:-16}
OCSP_DURATION=${OCSP_DURATION:-15s}
WARMUP=${WARMUP:-2s}
SERVER_CPU=${SERVER_CPU-1}
LOAD_CPU=${LOAD_CPU-0}
QUIET_WAIT=${QUIET_WAIT:-900}
STATEMENTS=${STATEMENTS:-0}
PG_SETTINGS=${PG_SETTINGS:-}

BENCH_AGENT=spiffe://bench.test/agent/bench/load
# Every command names its data directory and store itself: a store or passphrase exported in
# the caller's shell would send the sled setup to a database, or the fixture to another CA.
unset AGENTCA_STORE AGENTCA_DATA_DIR AGENTCA_PASSPHRASE AGENTCA_PASSPHRASE_FILE

install_missing() {
    install_packages jq:jq taskset:util-linux python3:python3 runuser:util-linux
    # initdb is not on PATH on Debian; pg_ctlcluster, from the same packages, is.
    if ! pg_bin >/dev/null; then
        install_packages pg_ctlcluster:postgresql
    fi
    pg_bin >/dev/null || {
        echo "no initdb in /usr/lib/postgresql/*/bin" >&2
        exit 1
    }
}

. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

# The newest /usr/lib/postgresql/N/bin (Debian keeps initdb and pg_ctl off PATH).
pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [[ -n $dir && -x $dir/initdb ]] && echo "$dir"
}

machine() {
    echo "== machine =="
    echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cores:    $(nproc)"
    echo "cpu:      $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel:   $(uname -r)"
    echo "commit:   $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "rustc:    $(rustc -V)"
    echo "postgres: $("$(pg_bin)/postgres" --version)"
    echo "disk:     $(df -h "$work" | awk 'NR == 2 { print $1 " (" $2 ")" }')"
    echo "pinning:  servers (nodes and PostgreSQL) on CPU ${SERVER_CPU:-any}, generators on CPU ${LOAD_CPU:-any}"
}

build() {
    echo "== build (release) =="
    if [[ ${BUILD:-1} == 0 ]]; then
        echo "BUILD=0: using the binaries already built"
    elif ! cargo build --release -p agentca -p agentca-bench --bin agentca \
        --example ocsp_fixture >"$work/build.log" 2>&1; then
        tail -30 "$work/build.log" >&2
        exit 1
    else
        tail -1 "$work/build.log"
    fi
    agentca="$target_dir/release/agentca"
    fixture="$target_dir/release/examples/ocsp_fixture"
    for sub in "bench acme" "bench ocsp"; do
        # shellcheck disable=SC2086
        if ! "$agentca" $sub --help >/dev/null 2>&1; then
            echo "this agentca build has no '$sub' command" >&2
            exit 1
        fi
    done
    if ! "$fixture" --help 2>/dev/null | grep -q -- '--store'; then
        echo "this ocsp_fixture takes no --store" >&2
        exit 1
    fi
}

# ---- the throwaway PostgreSQL cluster ----

# initdb refuses to run as root: under root the cluster belongs to the postgres user.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    pg_dir=$(mktemp -d /tmp/agentca-bench-pg.XXXXXX)
    [[ $(id -u) -eq 0 ]] && chown postgres: "$pg_dir"
    local bin
    bin=$(pg_bin)
    (cd / && as_pg "$bin/initdb" --auth=trust --username=postgres --encoding=UTF8 --no-locale \
        -D "$pg_dir/data" >"$work/initdb.log" 2>&1) || {
        tail -20 "$work/initdb.log" >&2
        exit 1
    }
    pg_port=$(free_port)
    cat >>"$pg_dir/data/postgresql.conf" <<EOF
# throwaway benchmark cluster
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg_dir'
max_connections = 100
EOF
    if [[ -n $PG_SETTINGS ]]; then
        tr ';' '\n' <<<"$PG_SETTINGS" >>"$pg_dir/data/postgresql.conf"
    fi
    if [[ $STATEMENTS == 1 ]]; then
        cat >>"$pg_dir/data/postgresql.conf" <<EOF
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
EOF
    fi
    # Pinned like the nodes: the postmaster's children inherit its affinity.
    (cd / && as_pg "${server_pin[@]}" "$bin/pg_ctl" start -w -t 60 -D "$pg_dir/data" \
        -l "$pg_dir/server.log" >/dev/null) || {
        tail -20 "$pg_dir/server.log" >&2
        exit 1
    }
    pg_databases=0
    echo "postgres: throwaway cluster on 127.0.0.1:$pg_port"
}

pg_stop() {
    [[ -n ${pg_dir:-} && -f $pg_dir/data/postmaster.pid ]] || return 0
    (cd / && as_pg "$(pg_bin)/pg_ctl" stop -w -m fast -D "$pg_dir/data" >/dev/null 2>&1) || true
}

# pg_fresh_url NAME: a fresh database per run, so the store starts empty as the embedded one
# does.
pg_fresh_url() {
    as_pg "$(pg_bin)/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "$1"
    echo "postgres://postgres@127.0.0.1:$pg_port/$1"
}

# CPU ticks (utime+stime, with those of reaped children) of the cluster's processes.
pg_cpu_ticks() {
    local pm pid total=0 t
    pm=$(head -1 "$pg_dir/data/postmaster.pid")
    for pid in "$pm" $(pgrep -P "$pm" || true); do
        # Fields after the command name (which may hold spaces): utime, stime, cutime and
        # cstime are the 12th to 15th.
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }') || continue
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# ---- a CA per setup and run ----

# prepare SETUP: a fresh CA in $work/ca (node-a; node-b a copy for pg2) with the bench policy,
# the bench agent, and the OCSP fixture issued into its store.
prepare() {
    local setup=$1
    rm -rf "$work/ca" "$work/ca-b" "$work/fixture"
    store=()
    if [[ $setup != sled ]]; then
        pg_databases=$((pg_databases + 1))
        store=(--store "$(pg_fresh_url "agentca_bench_$pg_databases")")
    fi
    "$agentca" --data-dir "$work/ca" "${store[@]}" init --trust-domain bench.test \
        --insecure-unencrypted-keys >/dev/null
    mkdir -p "$work/ca/policies"
    cat >"$work/ca/policies/bench.toml" <<'EOF'
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
    "$agentca" --data-dir "$work/ca" "${store[@]}" agent add "$BENCH_AGENT" --owner bench \
        >/dev/null
    "$fixture" --data-dir "$work/ca" "${store[@]}" --count "$CERTS" --sample "$SAMPLE" \
        --threads 32 --out "$work/fixture" >"$work/fixture.log" 2>&1 || {
        tail -5 "$work/fixture.log" >&2
        exit 1
    }
    # The second node: a copy of the data directory, as docs/deployment.md describes.
    [[ $setup == pg2 ]] && cp -a "$work/ca" "$work/ca-b"
    return 0
}

# start_nodes SETUP: sets node_pids, node_http, node_https.
start_nodes() {
    local dirs=("$work/ca") i=0 dir log line
    [[ $1 == pg2 ]] && dirs+=("$work/ca-b")
    node_pids=()
    node_http=()
    node_https=()
    for dir in "${dirs[@]}"; do
        log="$work/node-$i.log"
        "${server_pin[@]}" "$agentca" --data-dir "$dir" "${store[@]}" serve \
            --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 >"$log" 2>&1 &
        node_pids+=("$!")
        i=$((i + 1))
    done
    i=0
    for dir in "${dirs[@]}"; do
        log="$work/node-$i.log"
        line=$(wait_for_line "$log" '^agentca listening:')
        node_https+=("$(sed -E 's/.* https=([^ ]+).*/\1/' <<<"$line")")
        node_http+=("$(sed -E 's/.* http=([^ ]+).*/\1/' <<<"$line")")
        # The steady state starts once every certificate's OCSP responses are pre-signed.
        if ! wait_for_line "$log" 'OCSP responses pre-signed' >/dev/null 2>&1; then
            echo "node $i did not log the end of pre-signing; measuring anyway" >&2
        fi
        i=$((i + 1))
    done
}

stop_nodes() {
    local pid
    for pid in "${node_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${node_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    node_pids=()
}

# share TOTAL NODES INDEX: node INDEX's part of TOTAL (the first nodes take the remainder).
share() {
    echo $(($1 / $2 + ($3 < $1 % $2 ? 1 : 0)))
}

# bench_ocsp SETUP RUN: one generator per node, concurrently; one summed record.
bench_ocsp() {
    local setup=$1 run=$2 n=${#node_pids[@]} i c pids=() before after
    before=$(if [[ $setup != sled ]]; then pg_cpu_ticks; else echo 0; fi)
    for ((i = 0; i < n; i++)); do
        c=$(share "$OCSP_CONCURRENCY" "$n" "$i")
        "${load_pin[@]}" "$agentca" bench ocsp --url "http://${node_http[$i]}/ocsp" \
            --issuer "$work/ca/issuing.pem" --cert "$work/fixture/leaves.pem" \
            --concurrency "$c" --duration "$OCSP_DURATION" --warmup "$WARMUP" \
            --server-pid "${node_pids[$i]}" --output json >"$work/ocsp-$i.json" \
            2>>"$work/generator.log" &
        pids+=("$!")
    done
    local failed=0
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed=1; done
    after=$(if [[ $setup != sled ]]; then pg_cpu_ticks; else echo 0; fi)
    if ((failed)); then
        echo "$setup ocsp run $run: a generator failed" >&2
        return
    fi
    jq -cs --arg setup "$setup" --arg run "$run" --argjson ticks "$((after - before))" \
        --argjson hz "$(getconf CLK_TCK)" --argjson builds "$(pgrep -c -x 'cargo|rustc' || true)" '
        (map(.requests) | add) as $requests
        | {kind: "ocsp", setup: $setup, run: $run, nodes: length,
           requests: $requests,
           requests_per_s: (map(.rps) | add | . * 10 | round / 10),
           p50_us: map(.latency_us.p50), p99_us: map(.latency_us.p99),
           node_cpu_per_request_us: map(.server.cpu_per_request_us),
           postgres_cpu_per_request_us:
             (if $setup == "sled" then null else $ticks / $hz * 1e6 / $requests end),
           errors: (map(.errors.total) | add), builds_after: $builds, raw: .}' \
        "$work"/ocsp-*.json >>"$work/results.jsonl"
    rm -f "$work"/ocsp-*.json
    tail -1 "$work/results.jsonl" | jq -c 'del(.raw)'
}

# agentca's EAB credentials are single use: one per worker.
eab_file() { # DATA_DIR WORKERS FILE
    local i
    : >"$3"
    for ((i = 0; i < $2; i++)); do
        "$agentca" --data-dir "$1" "${store[@]}" token create --agent "$BENCH_AGENT" \
            --for acme --ttl 1h --output json | jq -r '"\(.kid) \(.hmac)"' >>"$3"
    done
}

# bench_acme SETUP RUN: one generator per node, concurrently; one summed record.
bench_acme() {
    local setup=$1 run=$2 n=${#node_pids[@]} i c orders pids=() before after
    local dirs=("$work/ca" "$work/ca-b")
    for ((i = 0; i < n; i++)); do
        # While a node runs, the command goes through its admin socket (the server holds
        # the embedded store open).
        eab_file "${dirs[$i]}" "$(share "$ACME_CONCURRENCY" "$n" "$i")" "$work/eab-$i.txt"
    done
    if [[ $STATEMENTS == 1 && $setup != sled ]]; then statements_reset; fi
    before=$(if [[ $setup != sled ]]; then pg_cpu_ticks; else echo 0; fi)
    for ((i = 0; i < n; i++)); do
        c=$(share "$ACME_CONCURRENCY" "$n" "$i")
        orders=$(share "$ORDERS" "$n" "$i")
        "${load_pin[@]}" "$agentca" bench acme --directory "https://${node_https[$i]}/acme/directory" \
            --ca "$work/ca/root.pem" --eab-file "$work/eab-$i.txt" \
            --concurrency "$c" --orders "$orders" --timeout "$TIMEOUT" \
            --stall-after "$STALL_AFTER" --max-duration "$MAX_DURATION" \
            --server-pid "${node_pids[$i]}" --output json >"$work/acme-$i.json" \
            2>>"$work/generator.log" &
        pids+=("$!")
    done
    local rc=0
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=$?; done
    after=$(if [[ $setup != sled ]]; then pg_cpu_ticks; else echo 0; fi)
    for ((i = 0; i < n; i++)); do
        if ! jq -e '.orders_requested' "$work/acme-$i.json" >/dev/null 2>&1; then
            echo "$setup acme run $run: generator $i failed (exit $rc): $(head -c 300 "$work/acme-$i.json")" >&2
            rm -f "$work"/acme-*.json
            return
        fi
    done
    if [[ $STATEMENTS == 1 && $setup != sled ]]; then
        statements_report "$(jq -s 'map(.orders) | add' "$work"/acme-*.json)" \
            "$work/statements-$setup-$run.txt"
    fi
    jq -cs --arg setup "$setup" --arg run "$run" --argjson ticks "$((after - before))" \
        --argjson hz "$(getconf CLK_TCK)" --argjson rc "$rc" \
        --argjson builds "$(pgrep -c -x 'cargo|rustc' || true)" '
        (map(.orders) | add) as $orders
        | {kind: "acme", setup: $setup, run: $run, nodes: length,
           orders: $orders, orders_requested: (map(.orders_requested) | add),
           end: (map(.end.reason) | unique | join(",")),
           orders_per_s: (map(.orders_per_s) | add | . * 100 | round / 100),
           p50_ms: map(.latency_ms.p50), p99_ms: map(.latency_ms.p99),
           node_cpu_per_order_ms: map(.server.cpu_per_order_ms),
           postgres_cpu_per_order_ms:
             (if $setup == "sled" or $orders == 0 then null else $ticks / $hz * 1e3 / $orders end),
           errors: (map(.errors.total) | add), exit: $rc, builds_after: $builds, raw: .}' \
        "$work"/acme-*.json >>"$work/results.jsonl"
    rm -f "$work"/acme-*.json
    tail -1 "$work/results.jsonl" | jq -c 'del(.raw)'
}

# psql on this setup's database (the URL after --store).
pg_sql() {
    "$(pg_bin)/psql" -X -q -A -t -v ON_ERROR_STOP=1 -d "${store[1]}" -c "$1"
}

statements_reset() {
    pg_sql "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    pg_sql "SELECT pg_stat_statements_reset()" >/dev/null
    pg_sql "SELECT pg_stat_reset_shared('wal')" >/dev/null
}

# statements_report ORDERS FILE: calls per order of each statement on this database since the
# reset, most frequent first, and their sum (transaction control included); then, per call,
# the mean execution time in µs (wall time, waits for locks included) and the WAL bytes.
statements_report() {
    local orders=$1 file=$2
    pg_sql "SELECT to_char(s.calls::numeric / $orders, 'FM990.00') || ' ' ||
                   to_char(s.mean_exec_time * 1000, 'FM999990') || 'us ' ||
                   to_char(s.wal_bytes / greatest(s.calls, 1), 'FM99999990') || 'B ' ||
                   left(regexp_replace(s.query, '\s+', ' ', 'g'), 110)
            FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
            WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%'
            ORDER BY s.calls DESC" >"$file"
    echo "statements per order: $(awk '{ n += $1 } END { printf "%.2f", n }' "$file") ($file)"
    # The cluster's WAL flushes (each one an fdatasync) since the reset, over all databases.
    echo "WAL per order: $(pg_sql "SELECT to_char(wal_records::numeric / $orders, 'FM990.0') || ' records, ' ||
        to_char(wal_bytes / $orders, 'FM9999990') || ' bytes, ' ||
        to_char(wal_write::numeric / $orders, 'FM990.00') || ' writes, ' ||
        to_char(wal_sync::numeric / $orders, 'FM990.00') || ' syncs' FROM pg_stat_wal")"
}

matrix() {
    echo
    echo "== runs: a fresh CA and $CERTS certificates per setup and run; OCSP for $OCSP_DURATION after $WARMUP, then $ORDERS ACME orders =="
    local run setup
    for run in $(seq "$RUNS"); do
        for setup in $SETUPS; do
            wait_no_builds
            prepare "$setup"
            start_nodes "$setup"
            bench_ocsp "$setup" "$run"
            bench_acme "$setup" "$run"
            stop_nodes
        done
    done
}

summary() {
    echo
    echo "== summary: medians of the runs per setup (each column's median on its own; per node: node A / node B) =="
    [[ -s $work/results.jsonl ]] || {
        echo "no results"
        return
    }
    jq -rs '
      def median: map(select(. != null)) | sort
        | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
          else (.[length / 2 - 1] + .[length / 2]) / 2 end;
      def f(n): if . == null then "n/a" else (. * pow(10; n) | round) / pow(10; n) | tostring end;
      # per-node columns: the median of each node on its own, joined with " / "
      def pernode(field; n): . as $runs | [range(0; .[0].nodes) | . as $i | $runs | map(field[$i]) | median | f(n)] | join(" / ");
      def name: {sled: "1 node, sled", pg: "1 node, PostgreSQL", pg2: "2 nodes, one PostgreSQL"}[.] // .;
      # rows in the order of the setups, not alphabetical
      def bysetup: group_by(.setup) | sort_by(["sled", "pg", "pg2"] as $o | .[0].setup as $s | ($o | index($s)) // 99);
      (map(select(.kind == "acme")) | bysetup) as $acme
      | (map(select(.kind == "ocsp")) | bysetup) as $ocsp
      | ["ACME (complete orders)", "",
         "| setup | orders/s | p50 ms | p99 ms | node CPU ms/order | PostgreSQL CPU ms/order | errors | runs |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
        + ($acme | map("| \(.[0].setup | name) | \(map(.orders_per_s) | median | f(1)) | \(pernode(.p50_ms; 1)) | \(pernode(.p99_ms; 1)) | \(pernode(.node_cpu_per_order_ms; 2)) | \(map(.postgres_cpu_per_order_ms) | median | f(2)) | \(map(.errors) | add) | \(length) |"))
        + ["", "OCSP (POST, pre-signed responses)", "",
           "| setup | requests/s | p50 µs | p99 µs | node CPU µs/request | PostgreSQL CPU µs/request | errors | runs |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
        + ($ocsp | map("| \(.[0].setup | name) | \(map(.requests_per_s) | median | f(0)) | \(pernode(.p50_us; 0)) | \(pernode(.p99_us; 0)) | \(pernode(.node_cpu_per_request_us; 1)) | \(map(.postgres_cpu_per_request_us) | median | f(2)) | \(map(.errors) | add) | \(length) |"))
      | .[]' "$work/results.jsonl"
    local incomplete
    incomplete=$(jq -r 'select(.kind == "acme" and .end != "completed") | "  \(.setup) run \(.run): \(.end)"' "$work/results.jsonl")
    if [[ -n $incomplete ]]; then
        echo
        echo "ACME runs that did not complete:"
        echo "$incomplete"
    fi
    echo
    echo "runs that ended while someone else's cargo/rustc ran: $(jq -s '[.[] | select(.builds_after > 0)] | length' "$work/results.jsonl") of $(jq -s length "$work/results.jsonl")"
}

if [[ " $SETUPS " == *" pg2 "* ]] && ((ACME_CONCURRENCY < 2 || OCSP_CONCURRENCY < 2 || ORDERS < 2)); then
    echo "the two-node setup splits workers, connections and orders between the nodes: each must be at least 2" >&2
    exit 1
fi
install_missing
target_dir=$(cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
if [[ -n ${WORK:-} ]]; then
    work=$WORK
    mkdir -p "$work"
else
    work=$(mktemp -d)
    remove_work=1
fi
node_pids=()
store=()
pg_dir=""
# Nodes or a cluster left behind by an interrupted run would be measured by the next one.
cleanup() {
    stop_nodes
    pg_stop
    [[ -n $pg_dir ]] && rm -rf "$pg_dir"
    if [[ ${remove_work:-0} == 1 ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
machine
build
if [[ " $SETUPS " == *" pg"* ]]; then pg_start; fi
wait_quiet
echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
: >"$work/results.jsonl"
matrix
summary
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
