#!/usr/bin/env bash
# Fuzz each target for SECONDS (default 60), failing on any crash, panic, broken invariant, or
# memory beyond the limits below. Installs cargo-fuzz when missing.
#
#   fuzz/run.sh [SECONDS]
#
# Only the stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take the -Z flags cargo-fuzz
# passes (sanitizer, coverage), and stable ships the AddressSanitizer runtime.
# New inputs go to fuzz/target/corpus/<target> (ignored); the seeds in fuzz/corpus/<target> are
# only read. A crash is saved under fuzz/artifacts/<target>/, and `cargo fuzz run <target> FILE`
# replays it.
set -euo pipefail
secs=${1:-60}
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

# Limits: libFuzzer fails the run when one input makes the process pass rss_limit_mb, or asks
# for more than malloc_limit_mb at once. ts_analyzer also asserts the analyser's own heap.
limits=(-rss_limit_mb=1024 -malloc_limit_mb=256 -print_final_stats=1 -max_total_time="$secs")

cargo fuzz build --sanitizer address
run() {
    local target=$1 max_len=$2
    mkdir -p "fuzz/target/corpus/$target"
    cargo fuzz run --sanitizer address "$target" "fuzz/target/corpus/$target" "fuzz/corpus/$target" \
        -- "${limits[@]}" -max_len="$max_len"
}
run ts_analyzer 65536
run hls_playlist 16384
run dash_mpd 16384
run keyframe_filter 65536
run scte35_section 4096
