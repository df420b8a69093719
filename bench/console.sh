#!/usr/bin/env bash
# What the console and evidence cost the service: `avmon run` on STREAMS live UDP streams of the
# same 720p25 H.264 + AAC file (black, freeze and silence defects: alerts, snapshots and clips),
# sent in real time by `ffmpeg -re -c copy`, measured with `[evidence] enabled = false` (no
# pictures, no byte rings, no evidence) and with it on while a console watches (an /api/events
# client, and every stream's thumbnail fetched every 5 s, as a wall of tiles does). The service's
# CPU seconds over the same window, interleaved runs, medians; and its resident memory at the end.
#
#   bench/console.sh [SECONDS=40] [RUNS=3] [WIDTHxHEIGHT=1280x720] [STREAMS=4]
set -euo pipefail
default_runs=3
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"
streams="${4:-4}"
warmup=5

# CPU seconds (user + system) of process $1 so far, from /proc.
proc_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
rss_mib() { awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One run: prints "CPU_SECONDS RSS_MIB".
run() {
  local mode="$1" api cfg pids=() svc
  api=$(free_port)
  cfg="$dir/$mode.toml"
  rm -rf "$dir/$mode.db" "$dir/$mode.evidence"
  {
    echo "[server]"; echo "listen = \"127.0.0.1:$api\""
    echo "[store]"; echo "url = \"sqlite://$dir/$mode.db\""
    echo "[evidence]"; echo "enabled = $([ "$mode" = on ] && echo true || echo false)"
    for i in $(seq "$streams"); do
      echo "[[streams]]"; echo "id = \"s$i\""; echo "url = \"udp://127.0.0.1:$((api + i))\""
    done
  } >"$cfg"
  "$avmon" run --config "$cfg" >/dev/null 2>&1 &
  svc=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$api/healthz" >/dev/null && break; sleep 0.2; done
  for i in $(seq "$streams"); do
    ffmpeg -nostdin -v error -re -i "$in" -c copy -f mpegts \
      "udp://127.0.0.1:$((api + i))?pkt_size=1316" >/dev/null 2>&1 &
    pids+=($!)
  done
  if [ "$mode" = on ]; then
    curl -sN "http://127.0.0.1:$api/api/events" >/dev/null 2>&1 &
    pids+=($!)
    ( while true; do
        for i in $(seq "$streams"); do curl -s -o /dev/null "http://127.0.0.1:$api/api/streams/s$i/thumbnail.jpg"; done
        sleep 5
      done ) &
    pids+=($!)
  fi
  sleep "$warmup"
  local c0 c1
  c0=$(proc_cpu "$svc")
  sleep "$((secs - warmup - 5))"
  c1=$(proc_cpu "$svc")
  local rss; rss=$(rss_mib "$svc")
  local files=0
  [ -d "$dir/$mode.evidence" ] && files=$(find "$dir/$mode.evidence" -type f | wc -l)
  kill "${pids[@]}" 2>/dev/null || true
  kill "$svc"; wait "$svc" 2>/dev/null || true
  wait 2>/dev/null || true
  awk -v a="$c0" -v b="$c1" -v r="$rss" -v f="$files" 'BEGIN { printf "%.2f %s %s", b - a, r, f }'
}

window=$((secs - warmup - 5))
echo "input: ${w}x${h}p25 H.264 + AAC, $streams live UDP streams, ${window} s measured per run, $runs runs, interleaved"
printf "%-4s %22s %22s\n" run "off: CPU s, RSS MiB" "on: CPU s, RSS MiB, files"
declare -A cpu_of rss_of
for r in $(seq "$runs"); do
  read -r c0 m0 _ <<<"$(run off)"
  read -r c1 m1 f1 <<<"$(run on)"
  cpu_of[off]+="$c0 "; cpu_of[on]+="$c1 "; rss_of[off]+="$m0 "; rss_of[on]+="$m1 "
  printf "%-4s %14s %7s %14s %7s %5s\n" "$r" "$c0" "$m0" "$c1" "$m1" "$f1"
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c0=$(echo "${cpu_of[off]}" | median); c1=$(echo "${cpu_of[on]}" | median)
m0=$(echo "${rss_of[off]}" | median); m1=$(echo "${rss_of[on]}" | median)
echo
awk -v c0="$c0" -v c1="$c1" -v m0="$m0" -v m1="$m1" -v n="$streams" -v s="$window" 'BEGIN {
  printf "CPU, median: off %.2f s, on %.2f s: on/off = %.3f (%.2f %% of a core per stream more)\n",
    c0, c1, c1 / c0, (c1 - c0) / s / n * 100
  printf "RSS, median: off %d MiB, on %d MiB: %+.1f MiB per stream\n", m0, m1, (m1 - m0) / n
}'
