#!/usr/bin/env bash
# avmon as a cluster on this host: NODES `avmon run` nodes on one PostgreSQL, STREAMS HLS streams
# pulled from one local origin, one node killed (SIGKILL) and restarted KILLS times. Measures:
#
# - failover: seconds from each kill until every stream is held by a live node again (a
#   surviving node's GET /api/streams, polled every 0.2 s); p50 and max;
# - correctness: streams run by two nodes at once (every node's /api/streams, fetched together
#   every SAMPLE_S: the streams its own registry runs are told apart from those it lists from
#   the leases table; a stream counts when two nodes run it in the same round, and as confirmed
#   when the same two do so two rounds in a row: a hand-over between two answers of one round
#   is not a double); notifications lost and delivered twice (a webhook receiver's keys against
#   the outbox's rows; ALERT_STREAMS streams are made to alert: half read a packager that stops
#   and starts every FLAP_S seconds, half a playlist that is not there; FLAP_S is longer than the
#   slowest clear confirmation, 30 s for hls.stale, so that their alerts are raised and cleared,
#   often across a take-over);
# - balance: when a node joins (the last one at start, and each restarted one), seconds until
#   its stream count is within BALANCE_TOL of the others' mean, and until no stream moved for
#   BALANCE_QUIET_S seconds;
# - cost: CPU seconds (/proc/PID/stat, user + system) of the nodes over a steady WINDOW_S
#   window, per stream held, against one standalone node (no [cluster], its own database on
#   the same PostgreSQL) on the same streams, measured side by side: the standalone node runs
#   at the same time as the cluster, over the same window, so both see the same host (a busy
#   host makes every thread do more per wake-up, and looks cheaper per stream: windows taken
#   one after the other differ by 10 % from that alone). The host must hold both: at most
#   about half the streams it holds. PostgreSQL's CPU (postmaster and backends; each
#   database's backends apart) and rows written per second per 1,000 streams
#   (pg_stat_user_tables) over the same window.
#
#   bench/cluster.sh                                   # the issue's run: 1,000 streams, transport
#   STREAMS=30 KILLS=2 WINDOW_S=20 bench/cluster.sh    # a quick one
#   TIER=keyframes STREAMS=400 bench/cluster.sh        # keyframes: as many as the host holds
#   AVMON=path/to/avmon bench/cluster.sh               # measure another build
#
# Settings (environment): STREAMS (1000), TIER (transport), KILLS (5), WINDOW_S (60), NODES (3),
# TTL_S (lease_ttl_s, 8), CAPACITY (each node's [cluster] capacity in cores; default the host's
# cores: they share it), ALERT_STREAMS (1 % of STREAMS, at least 2), FLAP_S (60), SETTLE_S (20),
# SAMPLE_S (1), FAILOVER_TIMEOUT_S (120), BALANCE_TOL (0.1), BALANCE_QUIET_S (15),
# BALANCE_TIMEOUT_S (180), STANDALONE (1: also run the standalone node), OUT (results directory,
# default target/bench-cluster/TIER-STREAMS-TIME). Prints a Markdown table and writes it with the
# raw numbers (results.md, results.json, raw.jsonl), the nodes' logs and PostgreSQL's under OUT.
#
# The origin is nginx serving one live playlist that FFmpeg writes (160x90 testsrc2 + a tone,
# H.264 + AAC at ~100 kbit/s, 2 s segments, a keyframe every 2 s); stream i reads
# live.m3u8?s=i, so every stream is its own client. PostgreSQL is a throwaway server as
# avmon-testpg starts one (fsync and synchronous_commit off: its CPU and rows are measured, not
# its disk). Every node shares this host's cores with the origin, the database and whatever else
# runs here: the host's CPU not ours is reported beside each window.
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS=${STREAMS:-1000}; TIER=${TIER:-transport}; KILLS=${KILLS:-5}; WINDOW_S=${WINDOW_S:-60}
NODES=${NODES:-3}; TTL_S=${TTL_S:-8}; CAPACITY=${CAPACITY:-$(nproc)}
ALERT_STREAMS=${ALERT_STREAMS:-$(( STREAMS / 100 > 2 ? STREAMS / 100 : 2 ))}
FLAP_S=${FLAP_S:-60}; SETTLE_S=${SETTLE_S:-20}; SAMPLE_S=${SAMPLE_S:-1}
FAILOVER_TIMEOUT_S=${FAILOVER_TIMEOUT_S:-120}; BALANCE_TOL=${BALANCE_TOL:-0.1}
BALANCE_QUIET_S=${BALANCE_QUIET_S:-15}; BALANCE_TIMEOUT_S=${BALANCE_TIMEOUT_S:-180}
STANDALONE=${STANDALONE:-1}
OUT=${OUT:-target/bench-cluster/$TIER-$STREAMS-$(date -u +%Y%m%dT%H%M%SZ)}
command="STREAMS=$STREAMS TIER=$TIER KILLS=$KILLS WINDOW_S=$WINDOW_S NODES=$NODES bench/cluster.sh"
[ "$NODES" -ge 2 ] || { echo "NODES must be at least 2" >&2; exit 2; }
[ "$ALERT_STREAMS" -lt "$STREAMS" ] || { echo "ALERT_STREAMS must be under STREAMS" >&2; exit 2; }

avmon="${AVMON:-./target/release/avmon}"
[ -n "${AVMON:-}" ] || cargo build --release -q -p avmon
probe() { python3 bench/cluster_probe.py "$@"; }
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
: >"$OUT/raw.jsonl"
raw() { echo "$1" >>"$OUT/raw.jsonl"; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
# Every stream is a socket or two in a node, and a connection to nginx.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---- Clean-up: every process started here, by its id. ----
pids=(); declare -A node_pid node_port base
tmp=$(mktemp -d /tmp/avmon-bench-cluster.XXXXXX)
pgroot=$(mktemp -d /tmp/avmon-bench-pg.XXXXXX)
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/postgres" ] || { echo "PostgreSQL not found under /usr/lib/postgresql/*/bin: apt-get install postgresql" >&2; exit 2; }
as_pg() { if [ "$(id -u)" = 0 ]; then (cd "$pgroot" && runuser -u nobody -- "$@"); else "$@"; fi; }
sampler_pid=
cleanup() {
  set +e
  [ -z "$sampler_pid" ] || kill "$sampler_pid" 2>/dev/null
  for n in "${!node_pid[@]}"; do kill -KILL "${node_pid[$n]}" 2>/dev/null; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  if [ -f "$pgroot/data/postmaster.pid" ]; then
    as_pg "$pgbin/pg_ctl" -D "$pgroot/data" -m immediate stop >/dev/null 2>&1
  fi
  cp "$pgroot/server.log" "$OUT/postgres.log" 2>/dev/null
  rm -rf "$tmp" "$pgroot"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- CPU from /proc: a process and its children, user + system, their reaped children's too
# (a backend that exits is counted in the postmaster's). ----
clk=$(getconf CLK_TCK)
ticks() {
  local p t=0
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    t=$(( t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  echo "$t"
}
tree_ticks() {
  local p all=()
  for p in "$@"; do all+=("$p" $(ps -o pid= --ppid "$p" 2>/dev/null || true)); done
  ticks "${all[@]}"
}
# Each thread's ticks, by what it is (its name up to the first '-' or digit: stream threads,
# HLS variants, the tokio workers, placement, hub...): "TID GROUP TICKS" lines.
thread_ticks() {
  python3 - "$@" <<'PY'
import os, re, sys
for p in sys.argv[1:]:
    try:
        tids = os.listdir(f"/proc/{p}/task")
    except OSError:
        continue
    for t in tids:
        try:
            stat = open(f"/proc/{p}/task/{t}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        rest = stat[stat.rindex(")") + 2 :].split()
        group = re.sub(r"[-0-9].*$", "", name) or name
        print(f"{p}/{t}", group, int(rest[11]) + int(rest[12]))
PY
}
host_ticks() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
secs() { awk -v t="$1" -v c="$clk" 'BEGIN { printf "%.2f", t / c }'; }

# ---- PostgreSQL ----
log "PostgreSQL ($pgbin)"
[ "$(id -u)" != 0 ] || chown nobody "$pgroot"
as_pg "$pgbin/initdb" -D "$pgroot/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
cat >>"$pgroot/data/postgresql.conf" <<EOF
# bench/cluster.sh: a throwaway server, as avmon-testpg's
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
huge_pages = off
EOF
pgport=$(probe port)
as_pg "$pgbin/pg_ctl" -D "$pgroot/data" -l "$pgroot/server.log" -w -t 60 \
  -o "-p $pgport -h 127.0.0.1 -k $pgroot" start >/dev/null
pgmaster=$(head -1 "$pgroot/data/postmaster.pid")
pgurl() { echo "postgres://postgres@127.0.0.1:$pgport/$1"; }
sql() { psql "$(pgurl "$1")" -XAtq -c "$2"; }
# The CPU of one database's backends (those connected now).
pg_db_ticks() { ticks $(sql postgres "SELECT pid FROM pg_stat_activity WHERE datname = '$1'"); }
sql postgres "CREATE DATABASE cluster" >/dev/null
sql postgres "CREATE DATABASE standalone" >/dev/null

# ---- The origin: nginx, FFmpeg writing live.m3u8, and a packager that stops and starts. ----
www="$tmp/www"; mkdir -p "$www/flap" "$tmp/nginx"
ngport=$(probe port)
cat >"$tmp/nginx/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; worker_rlimit_nofile 65536;
error_log $OUT/nginx.log error; pid $tmp/nginx/nginx.pid;
events { worker_connections 16384; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $tmp/nginx/body; proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi; uwsgi_temp_path $tmp/nginx/uwsgi; scgi_temp_path $tmp/nginx/scgi;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  default_type application/octet-stream;
  server { listen 127.0.0.1:$ngport; root $www; add_header Cache-Control no-cache; }
}
EOF
nginx -p "$tmp/nginx" -e "$OUT/nginx.log" -c "$tmp/nginx/nginx.conf" &
ngpid=$!; pids+=("$ngpid")
origin="http://127.0.0.1:$ngport"
writer() {
  exec ffmpeg -hide_banner -loglevel error -nostdin -re \
    -f lavfi -i "testsrc2=size=160x90:rate=25" -f lavfi -i "sine=frequency=1000:sample_rate=48000" \
    -c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 50 -keyint_min 50 -sc_threshold 0 \
    -b:v 64k -maxrate 80k -bufsize 160k -c:a aac -b:a 32k \
    -f hls -hls_time 2 -hls_list_size 5 -hls_flags delete_segments+omit_endlist+temp_file \
    -hls_segment_filename "$1/seg%05d.ts" "$1/live.m3u8" 2>>"$OUT/ffmpeg.log"
}
writer "$www" &
wrpid=$!; pids+=("$wrpid")
flapper() {
  local w=
  trap '[ -z "$w" ] || kill "$w" 2>/dev/null; exit 0' TERM
  while :; do
    writer "$www/flap" & w=$!
    sleep "$FLAP_S" & wait $!
    kill "$w"; wait "$w" 2>/dev/null; w=
    sleep "$FLAP_S" & wait $!
  done
}
flapper &
flpid=$!; pids+=("$flpid")
log "origin $origin: waiting for FFmpeg's first playlist"
for _ in $(seq 100); do [ -s "$www/live.m3u8" ] && [ -s "$www/flap/live.m3u8" ] && break; sleep 0.2; done
# Every stream is its own client through a query string: nginx must serve the file with one.
curl -fs "$origin/live.m3u8?s=1" | grep -q '^#EXTM3U' \
  || { echo "nginx does not serve $origin/live.m3u8?s=1" >&2; exit 1; }
[ "$(curl -s -o /dev/null -w '%{http_code}' "$origin/missing/live.m3u8?s=1")" = 404 ]
origin_ticks() { tree_ticks "$ngpid" "$wrpid" "$flpid"; }

# ---- The webhook receiver ----
hport=$(probe port)
# Started as themselves (not through the probe function), so that their ids are the Python
# processes' own.
python3 bench/cluster_probe.py receiver "$hport" "$OUT/received.txt" &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$hport/" && break; sleep 0.1; done
hook="http://127.0.0.1:$hport"

# ---- Streams and node configs ----
n_flap=$(( ALERT_STREAMS / 2 > 1 ? ALERT_STREAMS / 2 : 1 ))
{
  for i in $(seq 0 $(( STREAMS - 1 ))); do
    if [ "$i" -lt "$n_flap" ]; then id="flap-$i"; url="$origin/flap/live.m3u8?s=$i"
    elif [ "$i" -lt "$ALERT_STREAMS" ]; then id="missing-$i"; url="$origin/missing/live.m3u8?s=$i"
    else id="s$i"; url="$origin/live.m3u8?s=$i"; fi
    printf '[[streams]]\nid = "%s"\nurl = "%s"\ntier = "%s"\n' "$id" "$url" "$TIER"
  done
} >"$tmp/streams.toml"
# NAME PORT DATABASE CLUSTER(0|1) HOOK-PATH
node_conf() {
  printf '[server]\nlisten = "127.0.0.1:%s"\n[store]\nurl = "%s"\n' "$2" "$(pgurl "$3")"
  # Evidence (clips, pictures) off, and the tier fixed: the same work in every run.
  printf '[evidence]\nenabled = false\n[service]\nauto_degrade = false\n'
  [ "$4" = 0 ] || printf '[cluster]\nname = "%s"\nlease_ttl_s = %s\ncapacity = %s\n' "$1" "$TTL_S" "$CAPACITY"
  printf '[[notifiers]]\nkind = "webhook"\nurl = "%s%s"\n' "$hook" "$5"
  cat "$tmp/streams.toml"
}
start_node() {
  local n=$1 t=$SECONDS
  echo "==== bench/cluster.sh: start $(date -u +%FT%TZ)" >>"$OUT/$n.log"
  AVMON_LOG=${AVMON_LOG:-info} "$avmon" run --config "$tmp/$n.toml" >>"$OUT/$n.log" 2>&1 &
  node_pid[$n]=$!
  until curl -s -o /dev/null -m 2 "${base[$n]}/healthz"; do
    if ! kill -0 "${node_pid[$n]}" 2>/dev/null; then
      echo "node $n exited at start; the end of $OUT/$n.log:" >&2; tail -20 "$OUT/$n.log" >&2; exit 1
    fi
    [ $(( SECONDS - t )) -lt 120 ] || { echo "node $n's API did not answer in 120 s" >&2; exit 1; }
    sleep 0.2
  done
}
stop_node() { # SIGTERM, and wait up to 60 s for the process to end
  local n=$1 p=${node_pid[$1]}
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$p" 2>/dev/null && log "node $n did not stop in 60 s after SIGTERM: killed" || true
  wait "$p" 2>/dev/null || true
  unset "node_pid[$n]"
}
node_list() { local n s=(); for n in "$@"; do s+=("$n=${base[$n]}"); done; echo "${s[@]}"; }
now() { date +%s.%N; }
iso() { date -u +%FT%T.%NZ; }

# ---- A steady window: CPU of the nodes, the database and the origin; rows written. ----
table_rows() { sql "$1" "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"; }
window() { # LABEL DATABASE NODE...
  local label=$1 db=$2; shift 2
  local ps=() n; for n in "$@"; do ps+=("${node_pid[$n]}"); done
  log "$label: steady window of $WINDOW_S s"
  local a0 g0 o0 h0 c0 a1 g1 o1 h1 c1
  table_rows "$db" >"$tmp/rows0-$label"; c0=$(sql "$db" "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
  local since until
  since=$(iso)
  local d0 d1 out=${RAW_OUT:-$OUT/raw.jsonl}
  thread_ticks "${ps[@]}" >"$tmp/threads0-$label"
  d0=$(pg_db_ticks "$db")
  a0=$(tree_ticks "${ps[@]}"); g0=$(tree_ticks "$pgmaster"); o0=$(origin_ticks); h0=$(host_ticks)
  sleep "$WINDOW_S"
  a1=$(tree_ticks "${ps[@]}"); g1=$(tree_ticks "$pgmaster"); o1=$(origin_ticks); h1=$(host_ticks)
  d1=$(pg_db_ticks "$db")
  thread_ticks "${ps[@]}" >"$tmp/threads1-$label"
  # CPU seconds by kind of thread, over the threads alive at both ends of the window.
  local by_thread
  by_thread=$(awk -v c="$clk" 'NR == FNR { t[$1] = $3; next } ($1 in t) { g[$2] += $3 - t[$1] }
    END { for (k in g) printf "%s\"%s\": %.2f", (n++ ? ", " : ""), k, g[k] / c }' "$tmp/threads0-$label" "$tmp/threads1-$label")
  until=$(iso)
  table_rows "$db" >"$tmp/rows1-$label"; c1=$(sql "$db" "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
  local th="" rss="" la; for n in "$@"; do
    th+="${th:+,}\"$n\": $(awk '/^Threads:/ { print $2 }' "/proc/${node_pid[$n]}/status" 2>/dev/null || echo null)"
    rss+="${rss:+,}\"$n\": $(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/${node_pid[$n]}/status" 2>/dev/null || echo null)"
  done
  la=$(cut -d' ' -f1-3 /proc/loadavg)
  local m mv; m=$(probe local $(node_list "$@"))
  mv=$(probe moves "$since" "$until" $(for n in "$@"; do echo "$OUT/$n.log"; done))
  local tables
  tables=$(awk -F'|' 'NR == FNR { i[$1] = $2; u[$1] = $3; d[$1] = $4; next }
    { printf "%s\"%s\": [%d, %d, %d]", (n++ ? ", " : ""), $1, $2 - i[$1], $3 - u[$1], $4 - d[$1] }' \
    "$tmp/rows0-$label" "$tmp/rows1-$label")
  echo "$(jq -cn --arg e "window_$label" --argjson gd "$(secs $(( d1 - d0 )))" --argjson w "$WINDOW_S" --argjson m "$m" --argjson t "{$tables}" \
    --argjson a "$(secs $(( a1 - a0 )))" --argjson g "$(secs $(( g1 - g0 )))" \
    --argjson o "$(secs $(( o1 - o0 )))" --argjson h "$(secs $(( h1 - h0 )))" --argjson c $(( c1 - c0 )) --argjson mv "$mv" --argjson th "{$th}" --argjson rss "{$rss}" --arg la "$la" --argjson bt "{$by_thread}" '
    { event: $e, cpu_by_thread_s: $bt, pg_db_cpu_s: $gd, window_s: $w, avmon_cpu_s: $a, pg_cpu_s: $g, origin_cpu_s: $o, host_cpu_s: $h,
      others_cpu_s: ($h - $a - $g - $o), commits: $c, tables: $t, moves: $mv, threads: $th, rss_mb: $rss, loadavg: $la,
      status: ([$m[].status // {} | to_entries[]] | group_by(.key) | map({(.[0].key): (map(.value) | add)}) | add),
      rows: { ins: ([$t[][0]] | add // 0), upd: ([$t[][1]] | add // 0), del: ([$t[][2]] | add // 0) },
      held: ([$m[].streams // 0] | add), up: ([$m[].up // 0] | add), behind: ([$m[].behind // 0] | add), down: ([$m[].down // 0] | add),
      per_node: ($m | map_values(del(.ids))) }')" >>"$out"
  tail -1 "$out" | jq -c '{event, avmon_cpu_s, pg_cpu_s, held, status, moves, host_cpu_s, others_cpu_s}' >&2
}

raw "$(jq -cn --argjson s "$STREAMS" --arg t "$TIER" --argjson k "$KILLS" --argjson w "$WINDOW_S" \
  --argjson n "$NODES" --argjson ttl "$TTL_S" --argjson cap "$CAPACITY" --argjson al "$ALERT_STREAMS" \
  --argjson fto "$FAILOVER_TIMEOUT_S" --argjson bt "$BALANCE_TOL" --argjson bto "$BALANCE_TIMEOUT_S" \
  --argjson bq "$BALANCE_QUIET_S" --arg host "$(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)" \
  --arg date "$(date -u +%FT%TZ)" --arg cmd "$command" --arg rev "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" '
  { event: "params", streams: $s, tier: $t, kills: $k, window_s: $w, nodes: $n, ttl_s: $ttl,
    capacity: $cap, alert_streams: $al, failover_timeout_s: $fto, balance_tol: $bt,
    balance_timeout_s: $bto, balance_quiet_s: $bq, host: $host, date: $date, command: $cmd,
    revision: $rev }')"

# ---- The cluster ----
names=(); for i in $(seq 1 "$NODES"); do names+=("n$i"); done
for n in "${names[@]}"; do
  node_port[$n]=$(probe port); base[$n]="http://127.0.0.1:${node_port[$n]}"
  node_conf "$n" "${node_port[$n]}" cluster 1 /cluster >"$tmp/$n.toml"
done
cp "$tmp/${names[0]}.toml" "$OUT/node.toml"
first=("${names[@]:0:NODES-1}"); last=${names[NODES-1]}
log "cluster: starting ${first[*]} with $STREAMS streams"
t0=$(now); run_since=$(iso)
for n in "${first[@]}"; do start_node "$n"; done
r=$(probe held "${base[${first[0]}]}" "$STREAMS" "$(IFS=,; echo "${first[*]}")" "$t0" 600 0.5)
raw "$(jq -c '. + {event: "start"}' <<<"$r")"; log "all held by ${first[*]}: $r"
[ "$(jq .s <<<"$r")" != null ] || { echo "the first nodes did not take every stream in 600 s" >&2; exit 1; }

python3 bench/cluster_probe.py sampler "$OUT/doubles.json" "$SAMPLE_S" $(node_list "${names[@]}") &
sampler_pid=$!

log "cluster: $last joins"
t0=$(now); start_node "$last"
r=$(probe balance "${base[${first[0]}]}" "$last" "$t0" "$BALANCE_TIMEOUT_S" "$BALANCE_TOL" "$BALANCE_QUIET_S")
raw "$(jq -c --arg n "$last" '. + {event: "join", node: $n, after: "start"}' <<<"$r")"; log "join of $last: $r"

for k in $(seq 1 "$KILLS"); do
  victim=${names[$(( (k - 1) % NODES ))]}
  alive=(); for n in "${names[@]}"; do [ "$n" = "$victim" ] || alive+=("$n"); done
  via=${alive[0]}
  log "kill $k/$KILLS: SIGKILL $victim"
  t0=$(now); kill -KILL "${node_pid[$victim]}"; wait "${node_pid[$victim]}" 2>/dev/null || true
  r=$(probe held "${base[$via]}" "$STREAMS" "$(IFS=,; echo "${alive[*]}")" "$t0" "$FAILOVER_TIMEOUT_S")
  gaps=$(curl -s -m 10 "${base[$via]}/api/cluster" | jq -c --arg v "$victim" --argjson t0 "$t0" '
    [.gaps[]? | select(.prev_node == $v and .reason == "node_lost")
      | select((.to | sub("\\.[0-9]+"; "") | sub("\\+00:00$"; "Z") | fromdateiso8601) >= ($t0 | floor))] as $g
    | { gaps: ($g | length), gap_max_s: ([$g[].duration_s] | max) }' || true)
  [ -n "$gaps" ] || gaps='{}'
  raw "$(jq -c --arg v "$victim" --argjson k "$k" --argjson g "$gaps" '. + {event: "failover", kill: $k, victim: $v} + $g' <<<"$r")"
  log "failover after killing $victim: $r $gaps"
  t0=$(now); start_node "$victim"
  r=$(probe balance "${base[$via]}" "$victim" "$t0" "$BALANCE_TIMEOUT_S" "$BALANCE_TOL" "$BALANCE_QUIET_S")
  raw "$(jq -c --arg n "$victim" --argjson k "$k" '. + {event: "join", node: $n, after: "kill \($k)"}' <<<"$r")"
  log "rejoin of $victim: $r"
done

kill "$sampler_pid"; wait "$sampler_pid" || true; sampler_pid=
raw "$(probe moves "$run_since" "$(iso)" $(for n in "${names[@]}"; do echo "$OUT/$n.log"; done) | jq -c '{event: "moves_run"} + .')"
raw "$(jq -c '{event: "doubles"} + .' "$OUT/doubles.json")"
log "doubles: $(jq -c 'del(.examples)' "$OUT/doubles.json")"
# ---- One standalone node on the same streams, beside the cluster ----
if [ "$STANDALONE" = 1 ]; then
  node_port[standalone]=$(probe port); base[standalone]="http://127.0.0.1:${node_port[standalone]}"
  node_conf standalone "${node_port[standalone]}" standalone 0 /standalone >"$tmp/standalone.toml"
  log "standalone: one node with $STREAMS streams, beside the cluster"
  start_node standalone
  for _ in $(seq 600); do
    [ "$(probe local "standalone=${base[standalone]}" | jq '.standalone.streams // 0')" -ge "$STREAMS" ] && break
    sleep 1
  done
fi
sleep "$SETTLE_S"
if [ "$STANDALONE" = 1 ]; then
  RAW_OUT="$tmp/raw-standalone" window standalone standalone standalone & side=$!
fi
window cluster cluster "${names[@]}"
if [ "$STANDALONE" = 1 ]; then
  wait "$side"; cat "$tmp/raw-standalone" >>"$OUT/raw.jsonl"
  stop_node standalone
fi

# Notifications: everything in the outbox delivered, then the nodes stopped (they write what is
# queued), then the outbox against the receiver.
for _ in $(seq 120); do [ "$(sql cluster "SELECT count(*) FROM outbox WHERE status = 'pending'")" = 0 ] && break; sleep 0.5; done
for n in "${names[@]}"; do stop_node "$n"; done
sql cluster "SELECT idem_key || '|' || status FROM outbox" >"$OUT/outbox.txt"
sql cluster "SELECT coalesce(a.kind, '?') || ' ' || o.state, count(*) FROM outbox o
  LEFT JOIN alerts a ON a.id = o.alert_id GROUP BY 1 ORDER BY 2 DESC" >"$OUT/outbox-kinds.txt"
r=$(probe notifications "$OUT/outbox.txt" "$OUT/received.txt" /cluster)
r=$(jq -c --rawfile k "$OUT/outbox-kinds.txt" '. + {kinds: ($k | split("\n") | map(select(length > 0) | split("|") | {(.[0]): (.[1] | tonumber)}) | add)}' <<<"$r")
raw "$(jq -c '{event: "notifications"} + .' <<<"$r")"; log "notifications: $(jq -c 'del(.kinds)' <<<"$r")"
# What the outbox says of each key delivered twice: its attempts (outcome, HTTP status, error).
dups=$(jq -r '.dups | keys | map("'"'"'" + . + "'"'"'") | join(",")' <<<"$r")
[ -z "$dups" ] || sql cluster "SELECT o.idem_key, o.claimed_by, a.at, a.outcome, a.detail
  FROM outbox o JOIN outbox_attempts a ON a.outbox_id = o.id AND a.notifier = o.notifier
  WHERE o.idem_key IN ($dups) ORDER BY o.idem_key, a.id" >"$OUT/duplicates.txt" \
  || log "could not read the duplicates' attempts"
# Monitoring gaps as the database recorded them: after a kill, and any other.
raw "$(sql cluster "SELECT json_build_object('event', 'gaps',
    'node_lost', count(*) FILTER (WHERE reason = 'node_lost'),
    'released', count(*) FILTER (WHERE reason = 'released'),
    'max_s', round(max(extract(epoch FROM to_at - from_at))::numeric, 1))
  FROM monitoring_gaps")"

probe report "$OUT/raw.jsonl" "$OUT/results.md" "$OUT/results.json"
echo "(results in $OUT)"
