#!/usr/bin/env bash
# Builds the cargo-fuzz (libFuzzer) targets in fuzz/ and runs each for a bounded time.
#
# The targets check the parsers that read hostile input (Go durations, job payloads,
# config.toml, the log masker, archive extraction); the property each checks lives in
# fuzz/checks/src/lib.rs, which the stable test `cargo test -p runner-fuzz-checks` also
# replays over every committed corpus file in fuzz/corpus/<target>/.
#
# Usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  libFuzzer's -max_total_time for each target (default 60)
#   TARGET              any of: go_duration job_payload config_toml masker archive_extract
#                       (default: all five)
#
# Installs what is missing: the nightly toolchain, cargo-fuzz, and a C++ compiler (libFuzzer
# is C++; installed with apt-get when running as root). The committed corpus is read but never
# written: new inputs libFuzzer finds go to fuzz/target/scratch-corpus/<target>/ (kept between
# runs, ignored by git). A crash or timeout input is saved by cargo-fuzz under
# fuzz/artifacts/<target>/; the script names it and exits non-zero after running every target.
# To keep a finding as a regression seed, copy it to fuzz/corpus/<target>/ under a
# descriptive name. Each target's libFuzzer output is in fuzz/target/fuzz-logs/<target>.log.
#
# On a shared machine, run it under `nice -n 19 env CARGO_BUILD_JOBS=1`.
set -euo pipefail

ALL_TARGETS=(go_duration job_payload config_toml masker archive_extract)

seconds=${1:-60}
if [[ $# -gt 0 ]]; then
    shift
fi
if ! [[ $seconds =~ ^[0-9]+$ ]] || [[ $seconds -eq 0 ]]; then
    echo "usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    echo "SECONDS_PER_TARGET must be a positive whole number, not '$seconds'" >&2
    exit 2
fi
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi
for target in "${targets[@]}"; do
    if [[ ! " ${ALL_TARGETS[*]} " == *" $target "* ]]; then
        echo "unknown fuzz target '$target' (known: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

# cargo fuzz looks for fuzz/ in the current directory.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "== installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]]; then
        echo "== installing a C++ compiler (for libFuzzer)"
        apt-get update
        apt-get install -y --no-install-recommends g++
    else
        echo "libFuzzer needs a C++ compiler (c++): install g++ or clang++ first" >&2
        exit 1
    fi
fi

echo "== building the fuzz targets (nightly, address sanitizer, debug assertions)"
build_start=$(date +%s)
for target in "${targets[@]}"; do
    cargo +nightly fuzz build "$target"
done
echo "== built in $(($(date +%s) - build_start)) s"

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
failed=()
for target in "${targets[@]}"; do
    corpus=fuzz/corpus/$target
    scratch=fuzz/target/scratch-corpus/$target
    artifacts=fuzz/artifacts/$target
    mkdir -p "$scratch" "$artifacts"
    marker=$(mktemp)
    log=$logs/$target.log
    echo "== fuzzing $target for $seconds s (seeds: $corpus, new inputs: $scratch)"
    status=0
    # The scratch directory comes first: libFuzzer writes new inputs to the first corpus only.
    cargo +nightly fuzz run "$target" "$scratch" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=30 >"$log" 2>&1 || status=$?
    if [[ $status -eq 0 ]]; then
        tail -n 3 "$log"
        echo "== $target: no crash; $(find "$scratch" -type f | wc -l) inputs in $scratch"
    else
        # The panic (or sanitizer error, timeout, out-of-memory) and cargo-fuzz's summary.
        grep -m1 -A6 ' panicked at ' "$log" || true
        grep -m3 -E 'ERROR: |SUMMARY: |ALARM: |out-of-memory' "$log" || true
        sed -n '/^Failing input:/,/^Minimize/p' "$log"
        found=$(find "$artifacts" -type f -newer "$marker" | sort)
        echo "== $target FAILED (exit $status); full output in $log"
        if [[ -n $found ]]; then
            echo "== $target artifacts (reproduce: cargo +nightly fuzz run $target <artifact>):"
            echo "$found" | sed 's/^/   /'
            failed+=("$target: $(echo "$found" | tr '\n' ' ')")
        else
            failed+=("$target: exit $status, no artifact (see $log)")
        fi
    fi
    rm -f "$marker"
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "== fuzzing found problems in ${#failed[@]} of ${#targets[@]} targets:" >&2
    printf '   %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "== all ${#targets[@]} targets ran $seconds s without a crash"
