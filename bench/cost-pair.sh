#!/usr/bin/env bash
# Two avmon builds' CPU side by side with FFmpeg's bare decode, in one run: bench/cost.sh's
# method (whole-process user + system seconds of `avmon check --threads 1` and of
# `ffmpeg -threads 1 -f null`, the median of interleaved runs) on bench/cost.sh's input (avmon
# synth, H.264 + AAC, black, freeze and silence defects). For a change whose cost must be
# measured against the build before it, on a shared machine where separate runs swing.
#
#   bench/cost-pair.sh BEFORE AFTER [RUNS=7] [SECONDS=60] [WIDTHxHEIGHT=1280x720]
# BEFORE is e.g. a copy of target/release/avmon kept before rebuilding, or a build of the older
# commit in a worktree of its own.
# Prints a Markdown table. Inputs are cached in target/cost-pair.
set -euo pipefail
cd "$(dirname "$0")/.."
before="$1"; after="$2"; runs="${3:-7}"; secs="${4:-60}"; size="${5:-1280x720}"
dir=target/cost-pair; mkdir -p "$dir"
in="$dir/synth-$size-${secs}s.ts"
if [ ! -s "$in" ]; then
  "$after" synth "$in.tmp.ts" --size "$size" --duration "$secs" --defect black@10-14 \
    --defect freeze@20-25 --defect silence@30-34 2>/dev/null
  mv "$in.tmp.ts" "$in"
fi
cpu() { /usr/bin/time -f '%U %S' "$@" 2>&1 >/dev/null | tail -1 | awk '{ printf "%.3f\n", $1 + $2 }'; }
: >"$dir/b"; : >"$dir/a"; : >"$dir/d"
for i in $(seq "$runs"); do
  echo "cost-pair: run $i/$runs" >&2
  cpu "$before" check "$in" --format json --threads 1 >>"$dir/b"
  cpu "$after" check "$in" --format json --threads 1 >>"$dir/a"
  cpu ffmpeg -nostdin -threads 1 -i "$in" -f null - >>"$dir/d"
done
python3 - "$dir" "$secs" "$size" "$runs" <<'PY'
import statistics, sys
d, secs, size, runs = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
m = {k: statistics.median(float(x) for x in open(f"{d}/{k}")) for k in "bad"}
h = 3600 / secs
print(f"| input | check before | check after | FFmpeg decode | before / decode | after / decode | after / before |")
print("|---|---:|---:|---:|---:|---:|---:|")
print(f"| {size} {secs:g} s (CPU s per stream-hour, median of {runs}) | {m['b']*h:.0f} | {m['a']*h:.0f} | "
      f"{m['d']*h:.0f} | {m['b']/m['d']:.3f}× | {m['a']/m['d']:.3f}× | {m['a']/m['b']:.3f}× |")
PY
