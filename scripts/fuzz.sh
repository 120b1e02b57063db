#!/usr/bin/env bash
# Long, coverage-guided fuzzing of every parser target with libFuzzer (`cargo fuzz`).
#
#   scripts/fuzz.sh                 # every target, 10 minutes each
#   scripts/fuzz.sh 3600 body       # one target for an hour
#
# Nightly Rust is not available here, so `cargo fuzz`'s -Z flags go through stable rustc with
# RUSTC_BOOTSTRAP=1. New inputs libFuzzer finds go to fuzz/work/<target> (not committed); the
# committed seeds in fuzz/corpus/<target> are read, not written. A crash leaves its input in
# fuzz/artifacts/<target>/ and the script stops with an error. The CI smoke of the same targets
# on stable, without libFuzzer, is `cargo test -p freshgate-fuzz`.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(body webhook timestamp mapping config activity)
fi

if ! command -v cargo-fuzz >/dev/null; then
    echo "== installing cargo-fuzz (crates.io)"
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# No sanitizer by default: every crate forbids unsafe code (the workspace lint
# `unsafe_code = "forbid"`), so AddressSanitizer has nothing of ours to catch and costs most of
# the speed (body: ~10k executions/s with it, several times that without). libFuzzer still
# catches panics, arithmetic overflow (cargo fuzz builds with debug assertions), timeouts and
# memory blow-ups. FUZZ_SANITIZER=address brings it back.
sanitizer="${FUZZ_SANITIZER:-none}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/fuzz/target}"

summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t"
    log="fuzz/work/$t.log"
    echo "== fuzzing $t for ${secs} s (log: $log)"
    cargo fuzz run --fuzz-dir fuzz -s "$sanitizer" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=1024 -timeout=10 \
        2>&1 | tee "$log" | grep -E "^(#[0-9]+ +(DONE|pulse))|ERROR|panicked" || true
    if grep -qE "ERROR: libFuzzer|panicked at|deadly signal" "$log"; then
        echo "!! $t crashed; input in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    execs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" | tail -1)
    summary+=("$t: ${execs:-?} executions in ${secs} s, 0 crashes")
done
echo "== summary"
printf '  %s\n' "${summary[@]}"
