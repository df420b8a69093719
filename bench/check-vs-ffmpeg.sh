#!/usr/bin/env bash
# Whole-process CPU time of `avmon check` (every detector on) against FFmpeg's bare decode
# (`ffmpeg -threads 1 -i FILE -f null -`) on the same 720p25 H.264 + AAC file, side by side in one
# run. Absolute times drift on a small shared machine; the ratio is the figure, and even it swings
# from run to run (1.06–1.86 seen for one build), so take the median of many runs.
# check-vs-ffmpeg-ir.sh counts instructions instead, which do not move.
#
#   bench/check-vs-ffmpeg.sh [SECONDS=60] [RUNS=11] [WIDTHxHEIGHT=1280x720]
#   AVMON=path/to/avmon bench/check-vs-ffmpeg.sh   # measure another build (e.g. before a change)
set -euo pipefail
default_runs=11
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

echo "input: ${secs} s of ${w}x${h}p25 H.264 + AAC (avmon synth), $runs runs each, interleaved"
printf "%-4s %10s %10s %8s\n" run avmon_s ffmpeg_s ratio
ratios=()
for i in $(seq "$runs"); do
  a=$(cpu "$avmon" check "$in" --format json)
  f=$(cpu ffmpeg -nostdin -threads 1 -i "$in" -f null -)
  r=$(awk -v a="$a" -v f="$f" 'BEGIN { printf "%.3f", a / f }')
  ratios+=("$r")
  printf "%-4s %10s %10s %8s\n" "$i" "$a" "$f" "$r"
done
median=$(printf "%s\n" "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median avmon/ffmpeg CPU ratio: $median"
