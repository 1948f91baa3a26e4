#!/bin/sh
# Build the cargo-fuzz targets of the BGP codec on STABLE Rust, and with
# `run` also run each one for a while.
#
#   fuzz/build.sh            build all targets (ASan + SanitizerCoverage, -O)
#   fuzz/build.sh run [SECS] build, then run every target SECS seconds (10)
#   fuzz/build.sh check      type-check every target as cargo-fuzz compiles it
#                            (--cfg fuzzing), without the sanitizer build: what
#                            CI runs (50 s against 5 min for the ASan -O build)
#
# cargo-fuzz passes -Zsanitizer=address and the sancov flags; stable rustc
# accepts -Z flags with RUSTC_BOOTSTRAP=1 and ships the ASan runtime for
# x86_64-unknown-linux-gnu, so no nightly toolchain is needed.
set -eu
cd "$(dirname "$0")"
if [ "${1:-}" = check ]; then
    RUSTFLAGS="${RUSTFLAGS:-} --cfg fuzzing" exec cargo check --bins --locked
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
if [ "${1:-}" = run ]; then
    secs="${2:-10}"
    for target in $(cargo fuzz list); do
        mkdir -p "corpus/$target"
        echo "== $target (${secs}s)"
        cargo fuzz run -O "$target" "corpus/$target" seeds -- \
            -max_total_time="$secs" -print_final_stats=1 2>&1 |
            grep -E "^(stat::number_of_executed_units|Done|==[0-9]+==ERROR|SUMMARY)" || true
        # A crash leaves an artifact: fail like CI should.
        if ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
            echo "fuzz target $target crashed: see fuzz/artifacts/$target" >&2
            exit 1
        fi
    done
fi
