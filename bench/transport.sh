#!/usr/bin/env bash
# Cost of the TR 101 290 analyser (crates/avmon-transport) on a 20 Mbit/s transport stream:
# CPU seconds per second of stream, i.e. the share of one core it takes in real time. The
# issue's budget is 2 %.
#
#   bench/transport.sh [SECONDS=20] [PASSES=100] [CHUNK=1316]
#
# The stream: 1280x720p25 H.264 at 17 Mbit/s + AAC, muxed by FFmpeg at a constant 20 Mbit/s
# (null packets fill the rest, as on a broadcast contribution link). CHUNK is the size of each
# feed() call; 1316 bytes is one UDP datagram of seven packets.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"; passes="${2:-100}"; chunk="${3:-1316}"
cargo build --release -q -p avmon-transport --example tr101290
dir="$(mktemp -d)"; trap 'rm -rf "$dir"' EXIT
ts="$dir/20mbit.ts"
ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=1280x720:rate=25 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$secs" \
  -c:v libx264 -preset ultrafast -g 25 -b:v 17M -maxrate 17M -bufsize 8M \
  -c:a aac -b:a 128k -muxrate 20000000 -f mpegts "$ts"
echo "input: $secs s of 720p25 H.264 + AAC, CBR 20 Mbit/s ($(stat -c %s "$ts") bytes); $passes passes, $chunk-byte chunks"
./target/release/examples/tr101290 "$ts" --repeat "$passes" --chunk "$chunk" --quiet
