#!/usr/bin/env bash
# The chaos soak (bench/soak.py says what it injects and what it accounts for): avmon watching
# live streams on loopback for --duration seconds while faults are injected on a seeded
# schedule, then an exact account against that schedule. Exits 1 when it does not balance.
#
#   bench/soak.sh [--duration 3600] [--streams 4] [--seed 1] [--out target/soak]
#   AVMON=target/debug/avmon bench/soak.sh --duration 600   # another build (CI: the test build)
#
# Needs libfaketime (avmon's clock is stepped), python3, and a mount namespace where it may
# mount the tmpfs it fills: root, or user namespaces. Installs the first two with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for p in faketime python3; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
libfaketime=$(dpkg -L libfaketime | grep '/libfaketime.so.1$' | head -1)
avmon="${AVMON:-./target/release/avmon}"
if [ -z "${AVMON:-}" ]; then
  cargo build --release -q -p avmon
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy: a rebuild during the run must not change the binary the restarts start.
cp "$avmon" "$work/avmon"
# A mount namespace of its own: the tmpfs under the store is filled, and nothing else sees it.
ns=(unshare --mount --propagation private)
if ! "${ns[@]}" true 2>/dev/null; then
  ns=(unshare --map-root-user --mount --propagation private)
fi
"${ns[@]}" python3 bench/soak.py --avmon "$work/avmon" --libfaketime "$libfaketime" \
  --work "$work" "$@"
