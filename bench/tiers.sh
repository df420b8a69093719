#!/usr/bin/env bash
# CPU cost of each fidelity tier: whole-process CPU seconds per stream-hour of
# `avmon check --tier T` for full, reference, keyframes and transport, against FFmpeg's bare
# decode (`ffmpeg -threads 1 -i FILE -f null -`), on the same 720p25 H.264 + AAC file, side by side
# and interleaved in one run. Absolute times drift on a shared machine: the ratios are the figures,
# medians over RUNS.
#
#   bench/tiers.sh [SECONDS=60] [RUNS=5] [WIDTHxHEIGHT=1280x720]
#   AVMON=path/to/avmon bench/tiers.sh   # measure another build
#   GOP=6 bench/tiers.sh                 # keyframes every 6 s instead of 2 (the keyframes tier's
#                                        # cost is the keyframes': it falls as the GOP grows)
set -euo pipefail
default_runs=5
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

tiers=(full reference keyframes transport)
echo "input: ${secs} s of ${w}x${h}p25 H.264 + AAC (avmon synth, GOP ${GOP:-2} s), $runs runs, interleaved"
echo "CPU seconds per run (user + system):"
printf "%-4s %9s" run ffmpeg
for t in "${tiers[@]}"; do printf " %10s" "$t"; done; echo
declare -A cost
for i in $(seq "$runs"); do
  f=$(cpu ffmpeg -nostdin -threads 1 -i "$in" -f null -)
  cost[ffmpeg]+="$f "
  printf "%-4s %9s" "$i" "$f"
  for t in "${tiers[@]}"; do
    a=$(cpu "$avmon" check "$in" --tier "$t" --format json)
    cost[$t]+="$a "
    printf " %10s" "$a"
  done
  echo
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
f=$(echo "${cost[ffmpeg]}" | median)
echo
printf "%-26s %16s %12s %16s\n" what "CPU s/stream-h" "vs ffmpeg" "streams/core"
row() {
  awk -v n="$1" -v c="$2" -v f="$f" -v s="$secs" 'BEGIN {
    printf "%-26s %16.1f %12.3f %16.1f\n", n, c * 3600 / s, c / f, s / c }'
}
row "ffmpeg -threads 1 -f null" "$f"
for t in "${tiers[@]}"; do
  row "avmon check --tier $t" "$(echo "${cost[$t]}" | median)"
done
echo "(medians of $runs runs; streams/core = real-time streams one core holds at that cost)"
