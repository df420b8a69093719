#!/usr/bin/env bash
# Does avmon's quality figure (blockiness_mean) rank real encodes? Starved H.264, HEVC and MPEG-2
# encodes against their near-lossless source, made from real photographs and footage
# (bench/learn/content.py's train/tune/test split) at QCIF, 360p, 720p and 1080p, side by side
# with FFmpeg's blockdetect on the same files. Prints a Markdown table (docs/accuracy.md,
# "Quality score on real encodes", keeps the latest on the test split).
#
#   bench/quality.sh [--split test|tune|train|all] [--res qcif,360p,720p,1080p] [--sources a,b]
#                    [--before path/to/older/avmon] [--no-blockdetect] [--json FILE]
# Files are kept in target/quality (remade only when missing). Report on --split test only;
# design and tune on train and tune.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${AVMON:-}" ] || cargo build --release -q -p avmon
exec python3 bench/quality.py --avmon "${AVMON:-./target/release/avmon}" "$@"
