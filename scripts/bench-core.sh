#!/usr/bin/env bash
# Runs the CA core's benchmarks and the peer tools they are compared with, on this machine in
# this run, and prints the figures side by side (docs/benchmarks.md explains each one).
#
#   scripts/bench-core.sh                 all three: issuance durable crl
#   scripts/bench-core.sh issuance crl    only these
#
# Environment: PEER_RUNS (runs per peer command, default 7); the AGENTCA_BENCH_* variables
# described in crates/agentca-core/benches/durable.rs (sizes of the durable runs).
# Needs: cargo, openssl, hyperfine, cfssl (Debian: golang-cfssl), jq, taskset; the missing
# ones are installed with apt-get when run as root.
set -euo pipefail

cd "$(dirname "$0")/.."
PEER_RUNS=${PEER_RUNS:-7}

. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

install_missing() {
    install_packages openssl:openssl hyperfine:hyperfine cfssl:golang-cfssl jq:jq taskset:util-linux
}

# The median of a criterion benchmark, in nanoseconds.
criterion_median_ns() {
    jq -r '.median.point_estimate' "$target_dir/criterion/$1/new/estimates.json"
}

# calc EXPR: floating-point arithmetic for the summaries.
calc() {
    awk "BEGIN { printf \"%.${2:-1}f\", $1 }"
}

der_size() { # FILE in PEM (or DER with --der)
    if [[ ${2:-} == --der ]]; then wc -c <"$1"; else openssl crl -in "$1" -outform DER | wc -c; fi
}

machine() {
    echo "== machine =="
    echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cores:   $(nproc)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel:  $(uname -r)"
    echo "rustc:   $(rustc -V)"
    echo "openssl: $(openssl version)"
    echo "cfssl:   $(cfssl version 2>/dev/null | head -1)"
    hyperfine --version
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
}

build() {
    echo "== build (release) =="
    cargo bench -p agentca-core --bench issuance --bench durable --bench crl --no-run 2>&1 |
        grep -E '^(error|warning: unused)|Finished|Executable' || true
    # The CLI, for the end-to-end CRL figure; the `bench` profile shares the benches' build.
    if cargo build --profile bench --bin agentca >/dev/null 2>&1; then
        agentca_bin="$target_dir/release/agentca"
    else
        agentca_bin=""
        echo "the agentca binary did not build; the CLI row of the CRL table is skipped"
    fi
}

openssl_sign_rate() { # prints sign/s of one `openssl speed` run pinned to core 0
    taskset -c 0 openssl speed -seconds 3 ecdsap256 2>/dev/null |
        awk '/256 bits ecdsa \(nistp256\)/ { print $(NF-1) }'
}

issuance() {
    echo
    echo "== in-memory issuance (one core: taskset -c 0) =="
    echo "\$ taskset -c 0 openssl speed -seconds 3 ecdsap256"
    local before after
    before=$(openssl_sign_rate)
    echo "openssl ecdsap256 sign/s (before): $before"
    echo "\$ taskset -c 0 cargo bench -p agentca-core --bench issuance"
    taskset -c 0 cargo bench -p agentca-core --bench issuance 2>&1 |
        grep -E '^(issuance/|\s+(time|thrpt):)' || true
    echo "\$ taskset -c 0 openssl speed -seconds 3 ecdsap256"
    after=$(openssl_sign_rate)
    echo "openssl ecdsap256 sign/s (after):  $after"

    local openssl_rate
    openssl_rate=$(calc "($before + $after) / 2" 0)
    echo
    echo "| step (criterion median) | µs | per second |"
    echo "|---|---:|---:|"
    local name ns
    for name in sign_leaf raw_sign_400B encode_without_key leaf_params csr_parse_verify authorize; do
        ns=$(criterion_median_ns "issuance/$name")
        echo "| $name | $(calc "$ns / 1000" 2) | $(calc "1e9 / $ns" 0) |"
    done
    echo "| openssl speed ecdsap256 sign (mean of before/after) | $(calc "1e6 / $openssl_rate" 2) | $openssl_rate |"
    local leaf_rate raw_rate
    leaf_rate=$(calc "1e9 / $(criterion_median_ns issuance/sign_leaf)" 0)
    raw_rate=$(calc "1e9 / $(criterion_median_ns issuance/raw_sign_400B)" 0)
    echo
    echo "certificates/s (sign_leaf):           $leaf_rate   (target >= 20000: $(calc "$leaf_rate / 20000" 2)x)"
    echo "sign_leaf / openssl sign rate:        $(calc "100 * $leaf_rate / $openssl_rate" 1)%   (target >= 40%)"
    echo "agentca raw sign / openssl sign rate: $(calc "100 * $raw_rate / $openssl_rate" 1)%"
}

durable() {
    echo
    echo "== durable issuance =="
    echo "\$ cargo bench -p agentca-core --bench durable"
    cargo bench -p agentca-core --bench durable 2>&1 | grep -v -E '^\s*(Compiling|Finished|Running)'
    echo "(target: >= 5000 certificates/s with 32 requesters)"
}

crl() {
    echo
    echo "== CRL with 100,000 revoked entries =="
    local fixture
    fixture=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$fixture'" EXIT
    echo "\$ AGENTCA_BENCH_CRL_FIXTURE=DIR cargo bench -p agentca-core --bench crl"
    AGENTCA_BENCH_CRL_FIXTURE="$fixture" cargo bench -p agentca-core --bench crl 2>&1 |
        grep -E '^(agentca CRL|store filled|crl/|\s+(time|thrpt):)' || true

    local n=100000 build_ms publish_ms
    build_ms=$(calc "$(criterion_median_ns crl/build/$n) / 1e6" 1)
    publish_ms=$(calc "$(criterion_median_ns crl/publish_from_store/$n) / 1e6" 1)
    local agentca_bpe
    agentca_bpe=$(calc "($(der_size "$fixture/agentca.crl" --der) - $(der_size "$fixture/agentca-empty.crl" --der)) / $n" 2)

    (
        cd "$fixture"
        # Sizes and a check that every CRL verifies and lists every serial.
        openssl ca -config openssl-empty.cnf -gencrl -out openssl-empty.pem 2>/dev/null
        openssl ca -config openssl.cnf -gencrl -out openssl.pem 2>/dev/null
        cfssl gencrl serials-empty.dec ca.pem ca.key | base64 -d >cfssl-empty.crl
        cfssl gencrl serials.dec ca.pem ca.key | base64 -d >cfssl.crl
        local file form listed verified
        for file in agentca.crl openssl.pem cfssl.crl; do
            form=DER
            [[ $file == *.pem ]] && form=PEM
            listed=$(openssl crl -inform "$form" -in "$file" -noout -text 2>&1 |
                grep -c 'Serial Number' || true)
            verified=$(openssl crl -inform "$form" -in "$file" -CAfile ca.pem -noout 2>&1 | tr -d '\n')
            echo "$file: $listed entries, $verified"
        done

        local cmds=(
            "openssl ca -config openssl.cnf -gencrl -out openssl.pem"
            "cfssl gencrl serials.dec ca.pem ca.key"
        )
        if [[ -n $agentca_bin ]]; then
            cmds+=("$agentca_bin --data-dir data crl --out cli.crl")
        fi
        echo "\$ hyperfine -N --warmup 1 --runs $PEER_RUNS ... (in the fixture directory)"
        hyperfine -N --warmup 1 --runs "$PEER_RUNS" --export-json times.json "${cmds[@]}" >/dev/null 2>&1
        local openssl_ms cfssl_ms cli_ms="n/a"
        openssl_ms=$(jq -r '.results[0].median * 1000' times.json)
        cfssl_ms=$(jq -r '.results[1].median * 1000' times.json)
        if [[ -n $agentca_bin ]]; then
            cli_ms=$(jq -r '.results[2].median * 1000' times.json)
        fi
        local openssl_bpe cfssl_bpe
        openssl_bpe=$(calc "($(der_size openssl.pem) - $(der_size openssl-empty.pem)) / $n" 2)
        cfssl_bpe=$(calc "($(der_size cfssl.crl --der) - $(der_size cfssl-empty.crl --der)) / $n" 2)

        echo
        echo "| generator | median ms | vs agentca build | bytes/entry | reasons and dates |"
        echo "|---|---:|---:|---:|---|"
        echo "| agentca crl::build (in process, criterion) | $build_ms | 1.0x | $agentca_bpe | per entry, 40% with reasonCode |"
        echo "| agentca crl::publish (store read + build, criterion) | $publish_ms | $(calc "$publish_ms / $build_ms" 1)x | $agentca_bpe | same |"
        if [[ -n $agentca_bin ]]; then
            echo "| agentca crl --out (CLI process, hyperfine) | $(calc "$cli_ms" 1) | $(calc "$cli_ms / $build_ms" 1)x | $agentca_bpe | same |"
        fi
        echo "| openssl ca -gencrl (hyperfine) | $(calc "$openssl_ms" 1) | $(calc "$openssl_ms / $build_ms" 1)x | $openssl_bpe | per entry, 40% with reasonCode |"
        echo "| cfssl gencrl (hyperfine) | $(calc "$cfssl_ms" 1) | $(calc "$cfssl_ms / $build_ms" 1)x | $cfssl_bpe | one date for all, no reasons (its input has none) |"
        echo
        echo "targets: build <= 100 ms: $(calc "$build_ms / 100" 2)x of the budget; <= 46 bytes/entry: $agentca_bpe"
    )
}

install_missing
target_dir=$(cargo metadata --no-deps --format-version 1 | jq -r .target_directory)
# Where criterion keeps its estimates; fixed here so the summaries below read this run's.
export CRITERION_HOME="$target_dir/criterion"
agentca_bin=""
machine
build
parts=("$@")
((${#parts[@]})) || parts=(issuance durable crl)
for part in "${parts[@]}"; do
    case $part in
    issuance | durable | crl) "$part" ;;
    *)
        echo "unknown part $part (use issuance, durable, crl)" >&2
        exit 2
        ;;
    esac
done
