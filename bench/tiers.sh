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
#   KEYINT=6 bench/tiers.sh              # the keyframes tier with --keyframe-interval 6
#
# Each command also runs on the input's first second alone: start-up (loading libraries, opening
# the input and decoders) is paid once per process, not per stream-hour, so the "steady" columns
# take it out, (whole - first second) / (SECONDS - 1), as a service holding streams for hours
# pays it; streams per core against `full` is judged on those.
set -euo pipefail
default_runs=5
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

tiers=(full reference keyframes transport)
# The first second alone: what every command costs to start (loading libraries, opening the
# input and the decoders) is paid once per process, not per stream-hour. A service holds its
# streams for hours, so streams per core is judged on the steady cost: (long - short) / (secs - 1).
short="$dir/first-second.ts"
ffmpeg -nostdin -v error -i "$in" -t 1 -c copy -f mpegts "$short"
echo "input: ${secs} s of ${w}x${h}p25 H.264 + AAC (avmon synth, GOP ${GOP:-2} s), and its first second; $runs runs, interleaved${KEYINT:+; keyframes tier with --keyframe-interval $KEYINT}"
echo "CPU seconds per run (user + system), whole input / first second:"
printf "%-4s %13s" run ffmpeg
for t in "${tiers[@]}"; do printf " %13s" "$t"; done; echo
declare -A cost start
for i in $(seq "$runs"); do
  f=$(cpu ffmpeg -nostdin -threads 1 -i "$in" -f null -)
  g=$(cpu ffmpeg -nostdin -threads 1 -i "$short" -f null -)
  cost[ffmpeg]+="$f "; start[ffmpeg]+="$g "
  printf "%-4s %13s" "$i" "$f/$g"
  for t in "${tiers[@]}"; do
    extra=()
    [ "$t" != keyframes ] || [ -z "${KEYINT:-}" ] || extra=(--keyframe-interval "$KEYINT")
    a=$(cpu "$avmon" check "$in" --tier "$t" "${extra[@]}" --format json)
    b=$(cpu "$avmon" check "$short" --tier "$t" "${extra[@]}" --format json)
    cost[$t]+="$a "; start[$t]+="$b "
    printf " %13s" "$a/$b"
  done
  echo
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
f=$(echo "${cost[ffmpeg]}" | median)
full_steady=$(awk -v c="$(echo "${cost[full]}" | median)" -v d="$(echo "${start[full]}" | median)" \
  -v s="$secs" 'BEGIN { print (c - d) / (s - 1) }')
echo
printf "%-26s %14s %10s %13s %16s %14s %16s\n" what "CPU s/stream-h" "vs ffmpeg" "streams/core" \
  "steady s/str-h" "steady/core" "steady vs full"
row() {
  awk -v n="$1" -v c="$2" -v d="$3" -v f="$f" -v s="$secs" -v full="$full_steady" 'BEGIN {
    st = (c - d) / (s - 1)
    printf "%-26s %14.1f %10.3f %13.1f %16.1f %14.1f %15.1fx\n", n, c * 3600 / s, c / f, s / c,
      st * 3600, 1 / st, full / st }'
}
row "ffmpeg -threads 1 -f null" "$f" "$(echo "${start[ffmpeg]}" | median)"
for t in "${tiers[@]}"; do
  row "avmon check --tier $t" "$(echo "${cost[$t]}" | median)" "$(echo "${start[$t]}" | median)"
done
echo "(medians of $runs runs; streams/core = real-time streams one core holds at that cost;"
echo " steady = without the start-up, (whole - first second) / (${secs} - 1) s, as a service pays it;"
echo " steady vs full = streams per core against the full tier's, both steady)"
