#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ with libFuzzer's coverage instrumentation on the stable
# toolchain (the flags cargo-fuzz passes, without a sanitizer: the crates have no unsafe code,
# so what is looked for is panics, hangs and unbounded memory), writes the seed corpus, and
# runs every target for SECONDS_PER_TARGET (default 30) with a per-input timeout and an RSS
# cap. The corpus is kept in FUZZ_CORPUS when set (so that long campaigns build on each
# other), else in a temporary directory.
#
#   scripts/fuzz.sh                 all targets, 30 s each
#   SECONDS_PER_TARGET=600 scripts/fuzz.sh csr jws
#
# A crash, timeout or out-of-memory input is saved as fuzz/artifacts/TARGET/...; replay it
# with `TARGET_DIR/TARGET FILE`. With a nightly toolchain `cargo fuzz run TARGET` works too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${SECONDS_PER_TARGET:-30}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(scep_message scep_envelope scep_certs_only csr ocsp_request jws)
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}/fuzz}
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
bin_dir="$target_dir/$triple/release"

flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cdebug-assertions
    -Coverflow-checks
)
cargo fmt --manifest-path fuzz/Cargo.toml --check
# The fuzzed code is the shipped code: the targets build with the workspace's locked versions
# (cargo adds only what fuzz/ needs on top, libfuzzer-sys).
cp Cargo.lock fuzz/Cargo.lock
echo "fuzz: building ${targets[*]} into $target_dir"
# --target keeps the instrumentation out of build scripts (they would not link).
RUSTFLAGS="${flags[*]}" CARGO_TARGET_DIR="$target_dir" \
    cargo build --manifest-path fuzz/Cargo.toml --release --target "$triple" --bin seeds \
    "${targets[@]/#/--bin=}"

if [ -n "${FUZZ_CORPUS:-}" ]; then
    corpus=$FUZZ_CORPUS
    mkdir -p "$corpus"
else
    corpus=$(mktemp -d)
    trap 'rm -rf "$corpus"' EXIT
fi
"$bin_dir/seeds" "$corpus"

status=0
for t in "${targets[@]}"; do
    mkdir -p "$corpus/$t" "fuzz/artifacts/$t"
    echo "fuzz: $t for ${seconds}s"
    # -rss_limit_mb and -timeout make unbounded memory or time a failure of its own;
    # -max_len: just over the largest input a decoder accepts (128 KiB), so that the length
    # limits are exercised too.
    if ! "$bin_dir/$t" "$corpus/$t" -max_total_time="$seconds" -rss_limit_mb=1024 \
        -timeout=5 -max_len=132000 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" 2>"$corpus/$t.log"; then
        tail -40 "$corpus/$t.log" >&2
        echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/" >&2
        status=1
    else
        grep -E '^stat::number_of_executed_units|^Done' "$corpus/$t.log" | tr '\n' ' ' || true
        echo
    fi
done
exit "$status"
