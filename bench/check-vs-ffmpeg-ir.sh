#!/usr/bin/env bash
# Instructions executed by `avmon check` (every detector on) against FFmpeg's bare decode
# (`ffmpeg -threads 1 -i FILE -f null -`) on the same 720p25 H.264 + AAC file, counted by
# valgrind's callgrind. CPU time on a small shared machine swings by ±30 % from run to run
# (check-vs-ffmpeg.sh); an instruction count does not move, so a change of a few per cent shows.
# It is a proxy: an instruction of libavcodec's SIMD code and one of a detector's loop do not
# cost the same time, so check the CPU-time ratio too.
#
#   bench/check-vs-ffmpeg-ir.sh [SECONDS=10] [WIDTHxHEIGHT=1280x720]
#   AVMON=path/to/avmon bench/check-vs-ffmpeg-ir.sh   # count another build (e.g. before a change)
#
# Prints the whole-process ratio, the ratio per second of media (a 1 s clip's counts subtracted
# from both, which removes start-up: FFmpeg's dynamic linking of every libav* library alone is
# ~0.2 G instructions, a monitor's streams run for hours), and what each avmon detector costs
# (inclusive, per second of media) next to FFmpeg's decode.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"; size="${2:-1280x720}"
w="${size%x*}"; h="${size#*x}"
[[ "$secs" =~ ^[0-9]+$ && "$secs" -ge 2 ]] || { echo "SECONDS: a whole number >= 2" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
avmon="${AVMON:-./target/release/avmon}"
[ -n "${AVMON:-}" ] || cargo build --release -q -p avmon
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT

# The defects of check-vs-ffmpeg.sh, each over a fifth of the clip so that a short one has them
# for longer than their 2 s minimum.
at() { awk -v s="$secs" -v a="$1" -v b="$2" 'BEGIN { printf "%.2f-%.2f", s * a, s * b }'; }
synth() { "$avmon" synth "$1" --duration "$2" --width "$w" --height "$h" "${@:3}" 2>/dev/null; }
synth "$dir/long.ts" "$secs" --defect "black@$(at 0.17 0.40)" --defect "freeze@$(at 0.43 0.66)" \
  --defect "silence@$(at 0.70 0.93)"
synth "$dir/short.ts" 1

# Total instructions (Ir) of one command; its callgrind profile is kept as $dir/$1.out.
ir() {
  local name="$1"; shift
  valgrind --tool=callgrind --callgrind-out-file="$dir/$name.out" "$@" >/dev/null 2>"$dir/$name.log"
  awk '/Collected :/ { print $NF }' "$dir/$name.log"
}
a_long=$(ir avmon "$avmon" check "$dir/long.ts" --format json)
f_long=$(ir ffmpeg ffmpeg -nostdin -threads 1 -i "$dir/long.ts" -f null -)
a_short=$(ir avmon-1s "$avmon" check "$dir/short.ts" --format json)
f_short=$(ir ffmpeg-1s ffmpeg -nostdin -threads 1 -i "$dir/short.ts" -f null -)

g() { awk -v n="$1" 'BEGIN { printf "%.3f G", n / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
per_s=$(awk -v s="$secs" 'BEGIN { print s - 1 }')
echo "input: ${secs} s of ${w}x${h}p25 H.264 + AAC (avmon synth); instructions under callgrind"
printf "%-28s %12s %12s %8s\n" "" avmon ffmpeg ratio
printf "%-28s %12s %12s %8s\n" "whole process" "$(g "$a_long")" "$(g "$f_long")" \
  "$(ratio "$a_long" "$f_long")"
printf "%-28s %12s %12s %8s\n" "per second of media" "$(g $(((a_long - a_short) / per_s)))" \
  "$(g $(((f_long - f_short) / per_s)))" "$(ratio $((a_long - a_short)) $((f_long - f_short)))"

# Each detector's own cost: the inclusive count of its Detector methods, as a share of FFmpeg's
# per-second count (the detectors' costs are all per frame, so the 1 s clip's share is small).
# callgrind lists a function once per source file its inlined code came from; the entry of the
# function itself is the largest.
echo "avmon detectors (inclusive, share of ffmpeg's per-second instructions):"
callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$dir/avmon.out" 2>/dev/null |
  awk -v total=$(((f_long - f_short) / per_s * secs)) '
    match($0, /<avmon_detect::[a-z_]+::[A-Za-z]+ as avmon_core::detector::Detector>::[a-z_]+/) {
      f = substr($0, RSTART, RLENGTH)
      n = $1; gsub(",", "", n)
      if (n + 0 > cost[f]) cost[f] = n + 0
    }
    END {
      for (f in cost) { split(f, p, "::"); d[p[2]] += cost[f] }
      for (k in d) printf "  %-18s %6.1f %%\n", k, 100 * d[k] / total
    }' | sort -k2 -rn
