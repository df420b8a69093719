#!/usr/bin/env bash
# What a monitored stream costs (issue 5), side by side with FFmpeg on the same inputs in one
# run: CPU seconds per stream-hour of `avmon check` (every detector on), FFmpeg's bare decode
# and FFmpeg's own detection chain (medians of interleaved runs); peak memory of check and the
# service's memory per added stream; alert latency threshold → raised → webhook delivered; a
# perf profile of check. Prints Markdown (docs/cost.md keeps the latest).
#
#   bench/cost.sh [--runs 5] [--duration 60] [--only cpu|memory|latency|profile|streams|degrade|sched|transport]...
#   bench/cost.sh --streams [--max-streams 24] [--window 30]   # + streams per host (minutes)
#   bench/cost.sh --only degrade [--degrade-streams 16] [--workers 1] [--window 60]
#       # 1080p streams beyond what the workers hold: auto_degrade off, then on (minutes)
#   bench/cost.sh --only sched [--sched-streams 24] [--window 30]
#       # 720p streams, one CPU permit per core against a thread per stream (minutes)
#   bench/cost.sh --only transport [--transport-streams 100] [--window 30]
#       # 5 Mbit/s streams at tier transport on one worker, sent by one thread (minutes)
#   AVMON=path/to/avmon bench/cost.sh   # measure another build
# Inputs (720p25 and 1080p25 H.264 + AAC, and the latency stream) are cached in target/cost.
# Needs GNU time (/usr/bin/time) and, for the profile, perf.
set -euo pipefail
cd "$(dirname "$0")/.."
avmon="${AVMON:-./target/release/avmon}"
if [ -n "${AVMON:-}" ]; then
  cargo build --release -q -p avmon-bench
else
  cargo build --release -q -p avmon -p avmon-bench
fi
exec ./target/release/avmon-bench cost --avmon "$avmon" "$@"
