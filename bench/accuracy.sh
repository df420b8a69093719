#!/usr/bin/env bash
# Detector accuracy on a generated, labelled corpus, side by side with FFmpeg's own filters
# (blackdetect, freezedetect, silencedetect, blockdetect, ebur128) on the same files in the same
# run, plus loudness on the EBU Tech 3341/3342 test signals. Prints Markdown tables.
#
#   bench/accuracy.sh [--quick] [--only NAME] [--json FILE] [--duration SECS]
# The corpus is kept in target/accuracy and remade only when a recipe changes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p avmon -p avmon-bench
exec ./target/release/avmon-bench accuracy --avmon ./target/release/avmon "$@"
