#!/usr/bin/env python3
"""The measuring half of bench/cluster.sh: polls the nodes' HTTP APIs, receives the webhooks and
writes the results table. Standard library only; every subcommand prints one JSON line (or the
table) on stdout. Run by bench/cluster.sh, not by hand (see its header for what is measured).

  port                                       a TCP port free on 127.0.0.1 a moment ago
  receiver PORT FILE                         webhook receiver: one line "PATH KEY" per key received
  held URL N ALIVE T0 TIMEOUT [EVERY]        until GET URL/api/streams lists N streams, each held
                                             by a node in ALIVE (comma list): seconds since T0
  balance URL NODE T0 TIMEOUT TOL QUIET      GET URL/api/cluster every second: when NODE's stream
                                             count is first within TOL of the mean of all nodes'
                                             (an even share), and when the counts last changed
                                             (settled: QUIET s still)
  sampler FILE EVERY NAME=URL...             every EVERY s, GET each node's /api/streams at once:
                                             the streams its own registry runs; until SIGTERM, then
                                             writes the streams listed by two nodes in a round
  local NAME=URL...                          the streams each node runs: how many, up, behind, down
  moves SINCE UNTIL LOG...                   hand-overs the nodes logged between two ISO times
  notifications OUTBOX RECEIVED PATH         compare the outbox ("KEY|STATUS" lines) with what the
                                             receiver got on PATH: lost, duplicated, unknown keys
  report RAW MD JSON                         the results table (Markdown) and raw JSON from the
                                             JSON lines bench/cluster.sh wrote
"""

import concurrent.futures
import http.server
import json
import re
import signal
import socket
import statistics
import sys
import threading
import time
import urllib.request


def get(url, timeout=10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def get_json(url, timeout=10.0):
    return json.loads(get(url, timeout))


def out(obj):
    print(json.dumps(obj), flush=True)


def cmd_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_receiver(port, path):
    f = open(path, "a", buffering=1)
    lock = threading.Lock()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n)
            try:
                v = json.loads(body)
                # A group carries its own key and its events, each with theirs: the outbox has
                # one row per event.
                keys = [e.get("idempotency_key") for e in v["events"]] if "events" in v else [
                    v.get("idempotency_key")]
            except (ValueError, KeyError, TypeError):
                keys = ["<unparsable>"]
            with lock:
                for k in keys:
                    f.write(f"{self.path} {k}\n")
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Hook)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    srv.serve_forever()


def cmd_held(url, n, alive, t0, timeout, every="0.2"):
    n, t0, timeout, every = int(n), float(t0), float(timeout), float(every)
    alive = set(alive.split(","))
    polls = errors = 0
    worst = None
    while True:
        at = time.time()
        try:
            streams = get_json(url + "/api/streams", timeout=5)
            polls += 1
            held = sum(1 for s in streams if s.get("node") in alive)
            unheld = n - held
            worst = unheld if worst is None else max(worst, unheld)
            if len(streams) >= n and held >= n:
                out({"s": round(time.time() - t0, 2), "polls": polls, "errors": errors,
                     "max_unheld": worst})
                return
        except Exception:  # noqa: BLE001 - a node busy or restarting: count it, poll again
            errors += 1
        if time.time() - t0 > timeout:
            out({"s": None, "polls": polls, "errors": errors, "max_unheld": worst,
                 "timeout_s": timeout})
            return
        time.sleep(max(0.0, every - (time.time() - at)))


def cmd_balance(url, node, t0, timeout, tol, quiet):
    t0, timeout, tol, quiet = float(t0), float(timeout), float(tol), float(quiet)
    balanced = None
    last = None
    changed = time.time()
    errors = 0
    view = {}
    while time.time() - t0 < timeout:
        at = time.time()
        try:
            c = get_json(url + "/api/cluster", timeout=5)
        except Exception:  # noqa: BLE001
            errors += 1
            time.sleep(1)
            continue
        view = {m["name"]: {"streams": m.get("streams"), "load": m.get("load")}
                for m in c.get("nodes", []) if m.get("alive")}
        counts = {k: v["streams"] for k, v in view.items()}
        if counts != last:
            last, changed = counts, time.time()
        mine = counts.get(node)
        if balanced is None and mine is not None and len(counts) > 1:
            # The even share: every node's count is a mean of them all.
            mean = sum(counts.values()) / len(counts)
            if mean > 0 and abs(mine - mean) <= tol * mean:
                balanced = time.time() - t0
        if balanced is not None and time.time() - changed >= quiet:
            break
        time.sleep(max(0.0, 1.0 - (time.time() - at)))
    settled = changed - t0 if time.time() - changed >= quiet else None
    out({"balanced_s": None if balanced is None else round(balanced, 1),
         "settled_s": None if settled is None else round(settled, 1),
         "nodes": view, "errors": errors, "timeout_s": timeout})


def local_streams(name, url):
    """The streams a node's own registry runs, id → its status, from its GET /api/streams.

    Not from /metrics, which would be cheaper: on a node with a PostgreSQL store, GET /metrics
    panics (it reads the outbox counts from the database on an async worker thread) and may
    abort the node. In a cluster /api/streams lists every stream: those this node runs (as its
    registry reports them: `starting` or `down`, or with data seen) and the others as the leases
    table says (`unwatched`, `ok` or `alarm`, never with data). A standalone node's have no
    node."""
    res = {}
    for e in get_json(url + "/api/streams", timeout=10):
        if e.get("node") not in (name, None):
            continue
        if e.get("status") in ("starting", "down") or e.get("last_data_at") or e.get("info") \
                or e.get("frames_audio") or e.get("frames_video"):
            res[e["id"]] = e
    return res


def parse_nodes(args):
    return dict(a.split("=", 1) for a in args)


def cmd_sampler(path, every, *nodes):
    every = float(every)
    nodes = parse_nodes(nodes)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    pool = concurrent.futures.ThreadPoolExecutor(len(nodes))
    rounds = fetch_errors = 0
    single = 0          # (stream, round) pairs listed by two nodes
    confirmed = set()   # streams listed by the same two nodes in two rounds in a row
    prev = {}
    examples = []
    spread = []         # seconds between the first and last answer of a round

    def fetch(item):
        name, url = item
        t = time.time()
        try:
            return name, set(local_streams(name, url)), t, time.time()
        except Exception:  # noqa: BLE001 - a killed or restarting node
            return name, None, t, time.time()

    while not stop.is_set():
        at = time.time()
        got = list(pool.map(fetch, nodes.items()))
        rounds += 1
        holders = {}
        for name, streams, _, _ in got:
            if streams is None:
                fetch_errors += 1
                continue
            for s in streams:
                holders.setdefault(s, []).append(name)
        answered = [g for g in got if g[1] is not None]
        if answered:
            spread.append(max(g[3] for g in answered) - min(g[2] for g in answered))
        dup = {s: tuple(sorted(h)) for s, h in holders.items() if len(h) > 1}
        single += len(dup)
        for s, h in dup.items():
            if prev.get(s) == h:
                confirmed.add(s)
            if len(examples) < 20:
                examples.append({"at": round(at, 2), "stream": s, "nodes": h})
        prev = dup
        stop.wait(max(0.0, every - (time.time() - at)))
    with open(path, "w") as f:
        json.dump({"rounds": rounds, "fetch_errors": fetch_errors,
                   "double_in_one_round": single, "double_in_two_rounds": len(confirmed),
                   "double_streams": sorted(confirmed)[:50], "examples": examples,
                   "round_spread_s_max": round(max(spread), 3) if spread else None,
                   "round_spread_s_p50": round(statistics.median(spread), 3) if spread else None},
                  f)


def cmd_local(*nodes):
    res = {}
    for name, url in parse_nodes(nodes).items():
        try:
            mine = local_streams(name, url)
            status = {}
            for e in mine.values():
                status[e.get("status")] = status.get(e.get("status"), 0) + 1
            res[name] = {"streams": len(mine), "status": status, "ids": sorted(mine),
                         "up": sum(1 for e in mine.values() if e.get("status") in ("ok", "alarm")),
                         "behind": sum(1 for e in mine.values() if (e.get("lag_s") or 0) > 2.0),
                         "down": sum(1 for e in mine.values() if e.get("status") == "down")}
        except Exception as e:  # noqa: BLE001
            res[name] = {"error": str(e)}
    out(res)


def cmd_notifications(outbox_path, received_path, path):
    status = {}
    for line in open(outbox_path):
        if "|" in line:
            k, st = line.rstrip("\n").rsplit("|", 1)
            status[k] = st
    got = {}
    for line in open(received_path):
        p, _, k = line.rstrip("\n").partition(" ")
        if p == path:
            got[k] = got.get(k, 0) + 1
    lost = sorted(k for k, st in status.items() if st != "pending" and k not in got)
    dups = {k: n for k, n in got.items() if n > 1}
    out({"outbox": len(status),
         "delivered": sum(1 for st in status.values() if st == "delivered"),
         "pending": sum(1 for st in status.values() if st == "pending"),
         "failed": sum(1 for st in status.values() if st == "failed"),
         "received": sum(got.values()), "received_keys": len(got),
         "lost": len(lost), "lost_keys": lost[:20],
         "dup_keys": len(dups), "dup_extra": sum(n - 1 for n in dups.values()),
         "dups": dict(list(dups.items())[:20]),
         "unknown": sum(1 for k in got if k not in status)})


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cmd_moves(since, until, *logs):
    """Hand-overs and take-overs the nodes logged between two ISO times (UTC)."""
    res = {"handovers": 0, "streams_handed_over": 0, "takeovers_after_gap": 0,
           "lease_losses": 0, "streams_lost_by_live_node": 0, "fenced_refusals": 0,
           "replaced": 0, "renew_failures": 0}
    keys = ("handing streams over", "taking the stream over", "no longer held by this node",
            "another node holds the stream now", "this node was replaced", "renewing this node")

    def count(line):
        m = re.search(r"streams=\[([^\]]*)\]", line)
        return len(re.findall(r'"', m.group(1))) // 2 if m else 0

    for path in logs:
        for line in open(path, errors="replace"):
            if not any(k in line for k in keys):
                continue
            line = ANSI.sub("", line)
            at = line.split(" ", 1)[0]
            if not since <= at <= until:
                continue
            if "handing streams over" in line:
                res["handovers"] += 1
                res["streams_handed_over"] += count(line)
            elif "taking the stream over" in line:
                res["takeovers_after_gap"] += 1
            elif "no longer held by this node" in line:
                # A live node's renewal found leases another node had claimed: it had run
                # them past their expiry.
                res["lease_losses"] += 1
                res["streams_lost_by_live_node"] += count(line)
            elif "another node holds the stream now" in line:
                res["fenced_refusals"] += 1
            elif "this node was replaced" in line:
                res["replaced"] += 1
            else:
                res["renew_failures"] += 1
    out(res)


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def fmt(x, spec=".1f", none="–"):
    return none if x is None else format(x, spec)


def cmd_report(raw_path, md_path, json_path):
    ev = [json.loads(line) for line in open(raw_path) if line.strip()]
    by = {}
    for e in ev:
        by.setdefault(e["event"], []).append(e)
    one = {k: v[-1] for k, v in by.items()}
    p = one["params"]
    fo = [e["s"] for e in by.get("failover", []) if e.get("s") is not None]
    fo_timeouts = sum(1 for e in by.get("failover", []) if e.get("s") is None)
    joins = by.get("join", [])
    bal = [e["balanced_s"] for e in joins if e.get("balanced_s") is not None]
    cl, st = one.get("window_cluster"), one.get("window_standalone")
    dbl, nt = one.get("doubles", {}), one.get("notifications", {})
    res = {"params": p, "events": ev}

    def per_stream(w, key):
        return w[key] / w["window_s"] / max(w["held"], 1) if w else None

    rows = []
    add = rows.append
    add(("Failover: kills (SIGKILL)", f"{len(by.get('failover', []))}"
         + (f" ({fo_timeouts} not done within {p['failover_timeout_s']} s)" if fo_timeouts else "")))
    add(("Failover: p50 / max s, kill → every stream held by a live node",
         f"{fmt(pct(fo, 0.5))} / {fmt(max(fo) if fo else None)}"
         + (f" (each: {', '.join(fmt(x) for x in fo)})" if fo else "")))
    fe = [e for e in by.get("failover", []) if e.get("polls")]
    if fe:
        add(("Failover, each kill: the victim's streams (its node_lost gaps) / most unheld at once / mean poll interval s",
             "; ".join(f"{e.get('gaps', '–')} / {e.get('max_unheld', '–')} / "
                       f"{(e['s'] or e.get('timeout_s', 0)) / e['polls']:.2f}" for e in fe)))
    add(("Streams held by two nodes in one sampling round (/api/streams of every node)",
         f"{dbl.get('double_in_one_round', '–')} in {dbl.get('rounds', '–')} rounds"
         f" (round spread p50 {fmt(dbl.get('round_spread_s_p50'), '.3f')} s)"))
    add(("Streams held by the same two nodes two rounds in a row", f"{dbl.get('double_in_two_rounds', '–')}"))
    if nt:
        add(("Notifications: outbox rows (delivered / pending at the end / failed)",
             f"{nt['outbox']} ({nt['delivered']} / {nt['pending']} / {nt['failed']})"))
        if nt.get("kinds"):
            add(("Notifications: outbox rows by alert kind (top 5)",
                 ", ".join(f"{k} {v}" for k, v in list(nt["kinds"].items())[:5])))
        add(("Notifications lost (in the outbox, never received)", f"{nt['lost']}"))
        add(("Duplicate deliveries (keys received more than once)",
             f"{nt['dup_keys']} keys, {nt['dup_extra']} extra deliveries"))
        add(("Received but not in the outbox", f"{nt['unknown']}"))
    mr = one.get("moves_run")
    if mr:
        add(("Whole cluster run: streams handed over (rebalancing) / taken over after a gap",
             f"{mr['streams_handed_over']} in {mr['handovers']} hand-overs / {mr['takeovers_after_gap']}"))
        add(("Whole cluster run: leases lost by live nodes (renewed too late; streams stopped "
             "when found), streams",
             f"{mr.get('streams_lost_by_live_node', '–')} in {mr.get('lease_losses', '–')} renewals"
             f" (renewal errors logged: {mr.get('renew_failures', '–')}; nodes replaced: {mr.get('replaced', '–')})"))
        add(("Whole cluster run: results refused by the fence (log lines: a stale holder's writes)",
             f"{mr.get('fenced_refusals', '–')}"))
    gp = one.get("gaps")
    if gp:
        killed = sum(e.get("gaps") or 0 for e in by.get("failover", []))
        add(("Monitoring gaps in the database: node_lost (of them after a kill) / released",
             f"{gp['node_lost']} ({killed}) / {gp['released']}; longest {fmt(gp['max_s'])} s"))
    if joins:
        add(("Balance after a node joins: s until its streams are within "
             f"{int(p['balance_tol'] * 100)} % of an even share (p50 / max)",
             f"{fmt(pct(bal, 0.5))} / {fmt(max(bal) if bal else None)} of {len(joins)} joins"
             + (f" ({len(joins) - len(bal)} not within {p['balance_timeout_s']} s)"
                if len(bal) < len(joins) else "")))
        settled = [e["settled_s"] for e in joins if e.get("settled_s") is not None]
        add(("Balance: s until no stream moved for "
             f"{p['balance_quiet_s']} s (p50 / max)",
             f"{fmt(pct(settled, 0.5))} / {fmt(max(settled) if settled else None)}"))
        add(("Balance: streams per node at the end of each join",
             "; ".join(",".join(f"{k}={v['streams']}" for k, v in sorted(e["nodes"].items()))
                       for e in joins)))
    if cl:
        c = per_stream(cl, "avmon_cpu_s")
        add(("Cost: avmon CPU per stream, cluster (all nodes)",
             f"{c * 100:.3f} % of a core ({cl['avmon_cpu_s'] / cl['window_s'] * 100:.1f} % for {cl['held']} streams)"))
        if st:
            s = per_stream(st, "avmon_cpu_s")
            add(("Cost: avmon CPU per stream, one standalone node",
                 f"{s * 100:.3f} % of a core ({st['avmon_cpu_s'] / st['window_s'] * 100:.1f} % for {st['held']} streams)"))
            add(("Cost: cluster / standalone (avmon only; target ≤ 1.05×)", f"{c / s:.2f}×"))
            if cl.get("pg_db_cpu_s") is not None and st.get("pg_db_cpu_s") is not None:
                cd = (cl["avmon_cpu_s"] + cl["pg_db_cpu_s"]) / cl["window_s"] / max(cl["held"], 1)
                sd = (st["avmon_cpu_s"] + st["pg_db_cpu_s"]) / st["window_s"] / max(st["held"], 1)
                add(("Cost: cluster / standalone, each one's database backends included", f"{cd / sd:.2f}×"))
        if cl.get("pg_db_cpu_s") is not None:
            add(("Database: PostgreSQL CPU, the cluster's backends (the standalone node's; the whole server)",
                 f"{cl['pg_db_cpu_s'] / cl['window_s'] * 100:.1f} % of a core"
                 + (f" ({st['pg_db_cpu_s'] / st['window_s'] * 100:.1f} %" if st else " (–")
                 + f"; {cl['pg_cpu_s'] / cl['window_s'] * 100:.1f} %)"))
        else:
            add(("Database: PostgreSQL CPU, cluster (standalone)",
                 f"{cl['pg_cpu_s'] / cl['window_s'] * 100:.1f} % of a core"
                 + (f" ({st['pg_cpu_s'] / st['window_s'] * 100:.1f} %)" if st else "")))
        for w, label in ((cl, "cluster"), (st, "standalone")):
            if not w:
                continue
            k = 1000 / max(w["held"], 1) / w["window_s"]
            add((f"Database: rows written / s per 1,000 streams, {label} (ins / upd / del)",
                 f"{(w['rows']['ins'] + w['rows']['upd'] + w['rows']['del']) * k:.0f}"
                 f" ({w['rows']['ins'] * k:.0f} / {w['rows']['upd'] * k:.0f} / {w['rows']['del'] * k:.0f});"
                 f" commits / s per 1,000 streams {w['commits'] * k:.0f}"))
            top = sorted(w["tables"].items(), key=lambda kv: -sum(kv[1]))[:4]
            add((f"Database: busiest tables, {label} (rows / s per 1,000 streams)",
                 ", ".join(f"{t} {sum(v) * k:.0f}" for t, v in top)))
        for w, label in ((cl, "cluster"), (st, "standalone")):
            if w:
                add((f"Streams at the end of the {label} window: up / behind (lag > 2 s) / by status",
                     f"{w['up']} / {w['behind']} of {w['held']}; "
                     + ", ".join(f"{k} {v}" for k, v in sorted((w.get('status') or {}).items()))))
                mv = w.get("moves") or {}
                add((f"Streams handed over (rebalancing) during the {label} window",
                     f"{mv.get('streams_handed_over', '–')} in {mv.get('handovers', '–')} hand-overs"))
                if w.get("threads"):
                    add((f"Threads / resident MB per node, load average, at the end of the {label} window",
                         ", ".join(f"{k} {v} / {(w.get('rss_mb') or {}).get(k, '–')}"
                                   for k, v in sorted(w["threads"].items()))
                         + f"; {w.get('loadavg', '–')}"))
                if label == "cluster":
                    # Side by side: the standalone node ran in the same window.
                    others = w["others_cpu_s"] - (st["avmon_cpu_s"] if st else 0)
                    add(("Host during the window: all CPU, of it not ours" + (" (cluster and standalone side by side)" if st else ""),
                         f"{w['host_cpu_s'] / w['window_s'] * 100:.0f} %, {others / w['window_s'] * 100:.0f} % of a core"
                         f" (origin: nginx + FFmpeg {w['origin_cpu_s'] / w['window_s'] * 100:.0f} %)"))
                if w.get("cpu_by_thread_s"):
                    top = sorted(w["cpu_by_thread_s"].items(), key=lambda kv: -kv[1])
                    add((f"CPU by thread kind, {label}, % of a core (threads alive through the window)",
                         ", ".join(f"{k} {v / w['window_s'] * 100:.1f}" for k, v in top if v > 0)))
    res["summary"] = {
        "failover_s": fo, "failover_p50_s": pct(fo, 0.5), "failover_max_s": max(fo) if fo else None,
        "balance_s": bal, "doubles": dbl, "notifications": nt,
        "cost_ratio": (per_stream(cl, "avmon_cpu_s") / per_stream(st, "avmon_cpu_s")) if cl and st else None,
    }
    head = (f"{p['streams']} streams at tier `{p['tier']}` ({p['alert_streams']} of them made to "
            f"alert), {p['nodes']} nodes (lease_ttl_s {p['ttl_s']}, capacity {p['capacity']}), "
            f"{p['kills']} kills, {p['window_s']} s cost windows; host {p['host']}, {p['date']}")
    md = [head, "", "| what | measured |", "|---|---|"]
    md += [f"| {a} | {b} |" for a, b in rows]
    md.append("")
    md.append(f"Command: `{p['command']}`")
    text = "\n".join(md) + "\n"
    open(md_path, "w").write(text)
    json.dump(res, open(json_path, "w"), indent=1)
    sys.stdout.write(text)


def main():
    cmd, args = sys.argv[1].replace("-", "_"), sys.argv[2:]
    globals()["cmd_" + cmd](*args)


if __name__ == "__main__":
    main()
