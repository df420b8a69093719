# Shared by the CPU benchmarks (sourced, not run): parses [SECONDS] [RUNS] [WIDTHxHEIGHT] with
# RUNS defaulting to $default_runs, builds avmon unless AVMON names a build, makes the input
# ($in: black, freeze and silence defects; keyframes every $GOP seconds, default 2) in a temporary
# directory, and defines `cpu`.
cd "$(dirname "$0")/.."
secs="${1:-60}"; runs="${2:-$default_runs}"; size="${3:-1280x720}"
w="${size%x*}"; h="${size#*x}"
avmon="${AVMON:-./target/release/avmon}"
[ -n "${AVMON:-}" ] || cargo build --release -q -p avmon
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
in="$dir/in.ts"
"$avmon" synth "$in" --duration "$secs" --width "$w" --height "$h" \
  --gop "${GOP:-2}" --defect black@10-14 --defect freeze@20-25 --defect silence@30-34 2>/dev/null

# CPU seconds (user + system) of one command, children included.
cpu() {
  local TIMEFORMAT='%U %S'
  { time "$@" >/dev/null 2>&1; } 2>&1 | awk '{ printf "%.3f", $1 + $2 }'
}
