#!/usr/bin/env python3
"""The chaos soak: `avmon run` watching live streams on loopback while faults are injected on a
seeded schedule, then an exact account of what it raised, cleared and delivered against what
was injected. With --store postgres, avmon runs as a cluster node on a PostgreSQL of the
soak's own (real root only: the server runs as nobody), its data on the same tmpfs. Run through
bench/soak.sh, which puts it in a mount namespace of its own (for the
tmpfs it fills) and steps avmon's clock with libfaketime.

Faults, each on its own seeded schedule:
  kill      avmon SIGKILLed, restarted 3-15 s later
  receiver  the webhook receiver gone (connection refused), 10-12 min in an hour's run
  disk      the tmpfs holding the store and the evidence filled to ENOSPC, then freed
  clock     avmon's wall clock stepped by 1-5 min, forwards or back
  pg        PostgreSQL stopped at once (immediate) and started 2-10 s later (--store postgres)
  flap      a stream's source killed, restarted 5-30 s later (its defect schedule restarts)
  stall     a stream's source stopped (SIGSTOP) 5-20 s, then continued
  garbage   random datagrams sent into a stream's port beside its source, 5-15 s

Every stream carries black@20-24 and silence@40-44 every 60 s. The account:
  - each defect occurrence clear of faults raised once and cleared once, on time;
  - no alert of a defect kind outside an occurrence (false alarms), nor of any kind outside the
    fault windows;
  - no alert left open at the end;
  - every outbox row delivered, each idempotency key received, the duplicates counted;
  - RSS, file descriptors and threads of each avmon process sampled every 5 s, with their
    slopes per hour.
Writes report.json and report.md to --out; exits 1 when an account does not balance.
"""

import argparse
import http.server
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

PERIOD = 60.0
DEFECTS = [("video.black", "black", 20.0, 24.0), ("audio.silence", "silence", 40.0, 44.0)]
# How long after a fault ends its effects may last: reconnecting, confirmation windows, the
# carried-alert grace after a restart (45 s of media).
SETTLE_S = 20.0
KILL_SETTLE_S = 60.0
# A stream's first seconds, while its source and the decoder start: alerts raised then are
# reported apart (a start on a busy host), not counted as false alarms.
STARTUP_S = 10.0
# avmon's own findings about the host's load (a tier lowered, a stream behind real time): on a
# host shared with other work they come and go with that work, not with the faults; reported
# apart.
LOAD_KINDS = ("monitor.degraded", "monitor.behind")


def tail_s(duration):
    """Seconds at the end without faults: the notifiers' backoff (60 s at most) runs out, and
    every alert a fault caused clears."""
    return min(150.0, max(90.0, duration * 0.25))


def log(msg):
    print(f"soak {time.strftime('%H:%M:%S')} {msg}", flush=True)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook receiver that can go away (its port closed) and come back on the same port."""

    def __init__(self):
        self.port = free_port()
        self.got = []
        self.lock = threading.Lock()
        self.server = None
        self.up()

    def up(self):
        if self.server:
            return
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = {}
                with outer.lock:
                    outer.got.append({"t": time.time(), "body": doc,
                                      "webhook_timestamp": self.headers.get("webhook-timestamp")})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Garbage:
    """Random datagrams into a port, ~100 a second, until stopped."""

    def __init__(self, port, rng):
        self.stop = threading.Event()
        seed = rng.random()

        def run():
            r = random.Random(seed)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                while not self.stop.wait(0.01):
                    s.sendto(r.randbytes(1316), ("127.0.0.1", port))

        threading.Thread(target=run, daemon=True).start()


def schedule(rng, duration, streams, pg):
    """The faults: (start, end, kind, target) in seconds from the start, sorted."""
    hours = duration / 3600.0
    window = (min(90.0, duration * 0.15), duration - tail_s(duration) - 30.0)
    if window[1] - window[0] < 100:
        raise SystemExit("soak: --duration must be at least 300 s")
    events = []

    def place(kind, target, count, length):
        placed = 0
        for _ in range(200):
            if placed >= count:
                break
            d = length()
            t0 = rng.uniform(window[0], max(window[0], window[1] - d))
            clash = any(e[2] == kind and e[3] == target and t0 < e[1] + 30 and e[0] < t0 + d + 30
                        for e in events)
            if not clash:
                events.append((t0, t0 + d, kind, target))
                placed += 1

    n = lambda per_hour: max(1, round(per_hour * hours))
    place("kill", None, n(4), lambda: rng.uniform(3, 15))
    receiver_len = (lambda: rng.uniform(600, 720)) if duration >= 2400 else (lambda: duration / 6)
    place("receiver", None, max(1, round(hours)), receiver_len)
    place("disk", None, n(2), lambda: rng.uniform(60, 180) * min(1.0, hours * 2))
    place("clock", None, n(2), lambda: 0.0)
    if pg:
        place("pg", None, n(3), lambda: rng.uniform(2, 10))
    for s in range(streams):
        place("flap", s, n(2), lambda: rng.uniform(5, 30))
        place("stall", s, n(2), lambda: rng.uniform(5, 20))
        place("garbage", s, n(2), lambda: rng.uniform(5, 15))
    events.sort()
    return events


class Soak:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.t0 = time.time()
        self.work = a.work
        self.mnt = os.path.join(self.work, "data")
        os.makedirs(self.mnt, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={a.disk_mib}m", "avmon-soak", self.mnt],
                       check=True)
        self.api = free_port()
        self.udp = [free_port(socket.SOCK_DGRAM) for _ in range(a.streams)]
        self.receiver = Receiver()
        self.clock_file = os.path.join(self.work, "faketime")
        self.offset = 0.0
        self.offsets = [(0.0, 0.0)]  # (soak time it began, offset in seconds)
        self.write_clock()
        self.cfg = os.path.join(self.work, "avmon.toml")
        if a.store == "postgres":
            self.start_pg()
            url, cluster = self.pg_url, '[cluster]\nname = "soak"\nlease_ttl_s = 8\n'
        else:
            url, cluster = f"sqlite://{self.mnt}/avmon.db", ""
        with open(self.cfg, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{self.api}"\n'
                    f'[store]\nurl = "{url}"\nmetrics_interval_s = 5\n'
                    f'[evidence]\ndir = "{self.mnt}/evidence"\n{cluster}')
            for i, port in enumerate(self.udp):
                f.write(f'[[streams]]\nid = "s{i}"\nurl = "udp://127.0.0.1:{port}"\n')
                if cluster:
                    f.write('node = "soak"\n')  # a push input reaches this node only
            f.write(f'[[notifiers]]\nkind = "webhook"\nurl = "http://127.0.0.1:{self.receiver.port}/hook"\n'
                    'secret = "whsec_c29hay1zZWNyZXQtc29hay1zZWNyZXQ="\n')
        self.avmon = None
        self.segments = []  # per avmon process: {"pid", "start", "end", "samples": [(t, rss, fds, threads)]}
        self.senders = [None] * a.streams
        self.starts = [[] for _ in range(a.streams)]  # each source start, soak time
        self.stops = [[] for _ in range(a.streams)]
        self.stopped = [False] * a.streams
        self.garbage = {}
        self.filler = None
        self.injected = {}
        self.killed = False
        self.restart_at = None
        self.exits = []  # [start, end, "exit", None]: avmon exited by itself

    def now(self):
        return time.time() - self.t0

    # PostgreSQL, as nobody, its data on the tmpfs.

    def as_pg(self, *cmd, check=True):
        r = subprocess.run(["runuser", "-u", "nobody", "--", *cmd], cwd=self.pgroot,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and r.returncode != 0:
            raise SystemExit(f"soak: {' '.join(cmd)} failed: {r.stdout}")
        return r

    def start_pg(self):
        with open("/proc/self/uid_map") as f:
            if f.read().split()[:2] != ["0", "0"]:
                raise SystemExit("soak: --store postgres needs real root (the server runs as nobody)")
        pgbins = sorted(d for d in os.listdir("/usr/lib/postgresql")
                        if os.path.exists(f"/usr/lib/postgresql/{d}/bin/postgres"))
        self.pgbin = f"/usr/lib/postgresql/{pgbins[-1]}/bin"
        os.chmod(self.work, 0o755)  # nobody must reach its data dir
        self.pgroot = os.path.join(self.mnt, "pg")
        os.makedirs(self.pgroot)
        subprocess.run(["chown", "nobody", self.pgroot], check=True)
        self.pg_port = free_port()
        self.as_pg(f"{self.pgbin}/initdb", "-D", "data", "-U", "avmon", "--auth=trust", "-E", "UTF8")
        self.pg_url = f"postgres://avmon@127.0.0.1:{self.pg_port}/postgres"
        self.pg_ctl("start")

    def pg_ctl(self, action):
        opts = f"-p {self.pg_port} -k {self.pgroot} -c listen_addresses=127.0.0.1"
        args = ["-m", "immediate"] if action == "stop" else ["-w", "-o", opts, "-l", "server.log"]
        r = self.as_pg(f"{self.pgbin}/pg_ctl", "-D", "data", action, *args, check=False)
        if r.returncode != 0:
            log(f"pg_ctl {action}: {r.stdout.strip()}")

    def sql(self, query):
        r = self.as_pg("psql", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "avmon", "-d",
                       "postgres", "-At", "-F", "\t", "-c", query)
        return [line.split("\t") for line in r.stdout.splitlines() if line]

    def write_clock(self):
        with open(self.clock_file + ".tmp", "w") as f:
            f.write(f"{self.offset:+.0f}\n")
        os.replace(self.clock_file + ".tmp", self.clock_file)

    def start_avmon(self):
        env = dict(os.environ)
        env.update({
            "LD_PRELOAD": self.a.libfaketime,
            "FAKETIME_TIMESTAMP_FILE": self.clock_file,
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "RUST_LOG": "warn",
        })
        out = open(os.path.join(self.a.out, f"avmon-{len(self.segments)}.log"), "w")
        self.avmon = subprocess.Popen([self.a.avmon, "run", "--config", self.cfg], env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
        self.segments.append({"pid": self.avmon.pid, "start": self.now(), "end": None, "samples": []})

    def supervise(self):
        """As systemd's `Restart=on-failure` would: avmon that exits by itself (it refuses to
        start while its database refuses connections) is started again 5 s later. Each exit is
        reported, and its window treated as a kill's."""
        if self.avmon and self.avmon.poll() is not None:
            code = self.avmon.returncode
            log(f"avmon exited ({code}) by itself (avmon-{len(self.segments) - 1}.log): "
                "restarting it in 5 s")
            self.segments[-1]["end"] = self.now()
            self.avmon = None
            self.restart_at = self.now() + 5.0
            self.exits.append([self.now(), None, "exit", None])
        if not self.avmon and not self.killed and self.restart_at and self.now() >= self.restart_at:
            self.restart_at = None
            self.start_avmon()
            self.exits[-1][1] = self.now()

    def stop_avmon(self, sig):
        if self.avmon:
            self.avmon.send_signal(sig)
            self.avmon.wait()
            self.segments[-1]["end"] = self.now()
            self.avmon = None

    def start_source(self, i):
        self.senders[i] = subprocess.Popen(
            [self.a.avmon, "synth", f"udp://127.0.0.1:{self.udp[i]}", "--width", "320",
             "--height", "180", "--preset", "ultrafast", "--repeat-every", str(int(PERIOD))]
            + sum((["--defect", f"{d}@{a:g}-{b:g}"] for _, d, a, b in DEFECTS), []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts[i].append(self.now())

    def stop_source(self, i):
        p = self.senders[i]
        if p:
            p.kill()
            p.wait()
            self.senders[i] = None
            self.stops[i].append(self.now())

    def fill(self):
        """Fill the disk until it refuses; called again while the fault lasts, so that what
        avmon frees (its evidence) is taken back at once, as by another writer on the disk."""
        path = os.path.join(self.mnt, "filler")
        chunk = b"\x5a" * (1 << 20)
        with open(path, "ab", buffering=0) as f:
            for size in (1 << 20, 4096):
                try:
                    while f.write(chunk[:size]) == size:
                        pass
                except OSError:
                    pass
        self.filler = path

    def sample(self):
        if not self.avmon:
            return
        pid = self.avmon.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
            rss = int(st["VmRSS"].split()[0]) / 1024.0
            threads = int(st["Threads"])
            fds = len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, KeyError, ValueError):
            return
        self.segments[-1]["samples"].append((self.now(), rss, fds, threads))

    def apply(self, action, kind, target):
        self.injected[kind] = self.injected.get(kind, 0) + (action == "start")
        log(f"{action} {kind}{'' if target is None else f' s{target}'}")
        if kind == "kill":
            if action == "start":
                self.stop_avmon(signal.SIGKILL)
                self.killed = True
            else:
                self.killed = False
                self.restart_at = None
                if not self.avmon:
                    self.start_avmon()
        elif kind == "receiver":
            (self.receiver.down if action == "start" else self.receiver.up)()
        elif kind == "disk":
            if action == "start":
                self.fill()
            elif self.filler:
                os.remove(self.filler)
                self.filler = None
                # PostgreSQL may have stopped on the full disk (a PANIC on its WAL): as an
                # operator would, start it again.
                if self.a.store == "postgres" and self.as_pg(
                        f"{self.pgbin}/pg_ctl", "-D", "data", "status", check=False).returncode != 0:
                    log("PostgreSQL stopped on the full disk: starting it again")
                    self.injected["pg_stopped_by_disk"] = self.injected.get("pg_stopped_by_disk", 0) + 1
                    self.pg_ctl("start")
        elif kind == "clock" and action == "start":
            step = self.rng.choice([-1, 1]) * self.rng.uniform(60, 300)
            # Steps go back toward true time as often as away from it.
            if abs(self.offset + step) > 600:
                step = -step
            self.offset = round(self.offset + step)
            self.offsets.append((self.now(), self.offset))
            self.write_clock()
        elif kind == "pg":
            self.pg_ctl("stop" if action == "start" else "start")
        elif kind == "flap":
            (self.stop_source if action == "start" else self.start_source)(target)
        elif kind == "stall":
            p = self.senders[target]
            if p:
                p.send_signal(signal.SIGSTOP if action == "start" else signal.SIGCONT)
        elif kind == "garbage":
            if action == "start":
                self.garbage[target] = Garbage(self.udp[target], self.rng)
            else:
                self.garbage.pop(target).stop.set()

    def run(self):
        a = self.a
        self.events = schedule(self.rng, a.duration, a.streams, a.store == "postgres")
        log(f"{len(self.events)} faults over {a.duration:.0f} s on {a.streams} streams (seed {a.seed}); "
            f"work dir {self.work}")
        actions = sorted([(e[0], "start", e[2], e[3]) for e in self.events]
                         + [(e[1] + (0.001 if e[2] != "clock" else 0), "end", e[2], e[3])
                            for e in self.events if e[2] != "clock"], key=lambda x: x[0])
        self.start_avmon()
        time.sleep(1.0)
        for i in range(a.streams):
            self.start_source(i)
        next_sample = 0.0
        while self.now() < a.duration:
            self.supervise()
            while actions and actions[0][0] <= self.now():
                _, action, kind, target = actions.pop(0)
                self.apply(action, kind, target)
            if self.now() >= next_sample:
                next_sample = self.now() + 5.0
                self.sample()
            if self.filler:
                self.fill()
            time.sleep(0.1)
        log("schedule done; waiting for everything to settle")
        for e in self.exits:
            e[1] = e[1] if e[1] is not None else self.now()
        self.events = sorted(self.events + [tuple(e) for e in self.exits])
        self.injected["exit_by_itself"] = len(self.exits)
        self.settle()
        alerts, outbox = self.fetch()
        with open(os.path.join(a.out, "raw.json"), "w") as f:
            json.dump(self.raw(alerts, outbox), f)
        result = self.account(alerts, outbox)
        self.stop_avmon(signal.SIGTERM)
        for i in range(a.streams):
            self.stop_source(i)
        self.receiver.down()
        return result

    def settle(self):
        """Wait until no alert is open and nothing is pending, or 5 minutes."""
        deadline = self.now() + 300
        while self.now() < deadline:
            self.supervise()
            self.sample()
            try:
                open_, pending = self.db_state()
            except (sqlite3.Error, subprocess.CalledProcessError, IndexError, ValueError):
                open_, pending = -1, -1
            if open_ == 0 and pending == 0:
                break
            time.sleep(5)
        self.settled_at = self.now()

    def query(self, sqlite_q, pg_q):
        """Rows of the store, by the query for its backend (values as the backend gives them)."""
        if self.a.store == "postgres":
            return self.sql(pg_q)
        # Closed after each query (sqlite3's `with` does not close): the tmpfs is unmounted at
        # the end.
        c = sqlite3.connect(f"file:{self.mnt}/avmon.db?mode=ro", uri=True, timeout=10)
        try:
            return c.execute(sqlite_q).fetchall()
        finally:
            c.close()

    def db_state(self):
        q = ("SELECT (SELECT COUNT(*) FROM alerts WHERE state = 'raised'), "
             "(SELECT COUNT(*) FROM outbox WHERE status = 'pending')")
        rows = self.query(q, q)
        return int(rows[0][0]), int(rows[0][1])

    # The account.

    def candidates(self, fake_ms):
        """The soak times a wall time avmon wrote may stand for: its clock was stepped, and after
        a step back one wall time stands for two moments."""
        fake = fake_ms / 1000.0 - self.t0
        out = []
        for i, (since, off) in enumerate(self.offsets):
            until = self.offsets[i + 1][0] if i + 1 < len(self.offsets) else float("inf")
            # libfaketime reads the offset at most once a second: a second of slack.
            if since - 1.5 <= fake - off < until + 1.5:
                out.append(fake - off)
        return out or [fake - self.offsets[-1][1]]

    def true_time(self, fake_ms, arrived=None):
        """Soak time of a wall time avmon wrote, where nothing better is known: the latest
        moment before the notification arrived (it never arrives before the alert)."""
        candidates = self.candidates(fake_ms)
        if arrived is not None:
            before = [c for c in candidates if c <= arrived + 1.0]
            if before:
                return max(before)
        return candidates[0]

    def place_in_order(self, alerts, outbox, arrivals):
        """Soak times of the raises and clears, told apart by the order avmon made them in: its
        outbox rows are numbered as they are written, in the order of the alert events. Of each
        event's candidate times, the choice that breaks that order least (a Viterbi pass), never
        after the notification arrived. Returns {(alert id, "raised"|"cleared"): soak time}."""
        ids = {o["key"]: o["id"] for o in outbox if o.get("id") is not None}
        events = []
        for al in alerts:
            for field in ("raised", "cleared"):
                key = f"{al['id']}:{field}"
                if al[field] is not None and key in ids:
                    events.append((int(ids[key]), (al["id"], field), al[field], arrivals.get(key)))
        events.sort()
        slack = 2.0
        best = []  # per event: [(cost, back pointer, time)] per candidate
        for n, (_, _, fake_ms, arrived) in enumerate(events):
            row = []
            for c in self.candidates(fake_ms):
                cost = 0 if arrived is None or c <= arrived + 1.0 else 100
                if n == 0:
                    row.append((cost, None, c))
                    continue
                prev = [(p[0] + (1 if c < p[2] - slack else 0), j) for j, p in enumerate(best[-1])]
                pc, pj = min(prev)
                row.append((cost + pc, pj, c))
            best.append(row)
        out = {}
        if not best:
            return out
        j = min(range(len(best[-1])), key=lambda k: best[-1][k][0])
        for n in range(len(events) - 1, -1, -1):
            cost, back, t = best[n][j]
            out[events[n][1]] = t
            j = back
        return out

    def down_windows(self):
        """When avmon was not running: [(from, to)]."""
        out = []
        for prev, nxt in zip(self.segments, self.segments[1:]):
            out.append((prev["end"], nxt["start"]))
        return out

    def masked(self, stream, t0, t1):
        """Whether [t0, t1] of `stream` is near a fault that can change what is seen."""
        for (s, e, kind, target) in self.events:
            if kind in ("receiver", "disk", "pg"):
                continue  # none of them may change detection: not masked
            if target is not None and target != stream:
                continue
            settle = KILL_SETTLE_S if kind in ("kill", "exit") else SETTLE_S
            lo, hi = s - 10 if kind == "clock" else s, e + settle
            if kind in ("kill", "exit"):
                # Killed while nothing could be written (the disk full; in a cluster, PostgreSQL
                # away): what waited in memory since that began is lost with the process, as
                # documented. Those occurrences are not counted.
                lo = min([lo] + [d0 for (d0, d1, k, _) in self.events
                                 if k in ("disk", "pg") and d0 <= s <= d1])
            if t0 < hi and lo < t1:
                return True
        return False

    def occurrences(self, stream):
        """Every defect occurrence a source of `stream` sent: (kind, start, end), soak time."""
        out = []
        starts, stops = self.starts[stream], self.stops[stream] + [self.settled_at]
        for begin, end in zip(starts, stops):
            k = 0
            while begin + k * PERIOD < end:
                for kind, _, a, b in DEFECTS:
                    t0, t1 = begin + k * PERIOD + a, begin + k * PERIOD + b
                    if t0 < end:
                        out.append((kind, t0, min(t1, end)))
                k += 1
        return out

    def fetch(self):
        """The store's alerts and outbox rows."""
        ms = lambda col: f"(extract(epoch from {col}) * 1000)::bigint"
        alerts = [dict(zip(("id", "stream", "kind", "state", "raised", "cleared"), r)) for r in self.query(
            "SELECT id, stream_id, kind, state, raised_at_ms, cleared_at_ms FROM alerts ORDER BY raised_at_ms",
            f"SELECT id, stream_id, kind, state, {ms('raised_at')}, {ms('cleared_at')} FROM alerts "
            "ORDER BY raised_at")]
        for al in alerts:
            al["raised"] = int(al["raised"])
            al["cleared"] = int(al["cleared"]) if al["cleared"] not in (None, "") else None
        q = "SELECT idem_key, status, attempts, alert_id, id FROM outbox"
        outbox = [dict(zip(("key", "status", "attempts", "alert", "id"), r)) for r in self.query(q, q)]
        return alerts, outbox

    def raw(self, alerts, outbox):
        """Everything the account is made of (re-account it with --account RAW.json)."""
        return {"args": vars(self.a), "t0": self.t0, "offsets": self.offsets, "events": self.events,
                "starts": self.starts, "stops": self.stops, "settled_at": self.settled_at,
                "segments": self.segments, "injected": self.injected,
                "received": self.receiver.got, "alerts": alerts, "outbox": outbox}

    @staticmethod
    def from_raw(raw):
        soak = Soak.__new__(Soak)
        soak.a = argparse.Namespace(**raw["args"])
        for k in ("t0", "starts", "stops", "settled_at", "segments", "injected"):
            setattr(soak, k, raw[k])
        soak.offsets = [tuple(o) for o in raw["offsets"]]
        soak.events = [tuple(e) for e in raw["events"]]
        soak.receiver = argparse.Namespace(got=raw["received"])
        return soak

    def account(self, alerts, outbox):
        arrivals = {}
        for r in self.receiver.got:
            key = r["body"].get("idempotency_key")
            arrivals[key] = min(arrivals.get(key, r["t"] - self.t0), r["t"] - self.t0)
        placed = self.place_in_order(alerts, outbox, arrivals)
        for al in alerts:
            for field in ("raised", "cleared"):
                key = (al["id"], field)
                al[f"t_{field}"] = (placed[key] if key in placed else
                                    self.true_time(al[field], arrivals.get(f"{al['id']}:{field}"))
                                    if al[field] else None)
        defect_kinds = {k for k, *_ in DEFECTS}
        problems = []
        occ_report = {"clean": 0, "raised_once": 0, "cleared_once": 0, "masked": 0, "masked_seen": 0}
        used = set()
        for s in range(self.a.streams):
            sid = f"s{s}"
            for kind, t0, t1 in self.occurrences(s):
                if t1 - t0 < 3.5:
                    continue  # cut short by a flap: too short to confirm
                hits = [al for al in alerts if al["stream"] == sid and al["kind"] == kind
                        and t0 - 1 <= al["t_raised"] <= t0 + 8]
                for al in hits:
                    used.add(al["id"])
                if self.masked(s, t0 - 5, t1 + 5):
                    occ_report["masked"] += 1
                    occ_report["masked_seen"] += bool(hits)
                    continue
                occ_report["clean"] += 1
                if len(hits) != 1:
                    problems.append(f"{sid} {kind} at {t0:.1f}-{t1:.1f} s raised {len(hits)} times")
                    continue
                occ_report["raised_once"] += 1
                tc = hits[0]["t_cleared"]
                if tc is None or not (t1 - 1 <= tc <= t1 + 10):
                    problems.append(f"{sid} {kind} at {t0:.1f}-{t1:.1f} s cleared at {tc}")
                else:
                    occ_report["cleared_once"] += 1
        unexplained, startup, load = [], [], []
        by_kind = {}
        for al in alerts:
            by_kind[al["kind"]] = by_kind.get(al["kind"], 0) + 1
            if al["id"] in used:
                continue
            s = int(al["stream"][1:]) if al["stream"].startswith("s") else None
            t = al["t_raised"]
            if al["kind"] == "monitor.storage":
                if not any(e[2] == "disk" and e[0] - 5 <= t <= e[1] + 30 for e in self.events):
                    unexplained.append(al)
                continue
            if al["kind"] in LOAD_KINDS:
                load.append(al)
            elif s is not None and t < self.starts[s][0] + STARTUP_S:
                startup.append(al)
            elif s is None or not self.masked(s, t - 5, t):
                unexplained.append(al)
        for al in unexplained:
            problems.append(f"unexplained {al['kind']} on {al['stream']} raised at {al['t_raised']:.1f} s")
        # Each disk fault told by monitor.storage, raised while the disk was full and cleared
        # after it was freed (standalone: in a cluster the disk holds PostgreSQL, whose refusal
        # is the database being away).
        disk_told = 0
        disks = [e for e in self.events if e[2] == "disk"]
        for (d0, d1, _, _) in disks:
            # Cleared, maybe before the fault ended: avmon deletes its oldest evidence for room.
            told = [al for al in alerts if al["kind"] == "monitor.storage" and d0 <= al["t_raised"] <= d1
                    and al["t_cleared"] is not None]
            if told:
                disk_told += 1
            elif self.a.store == "sqlite":
                problems.append(f"the disk full from {d0:.1f} to {d1:.1f} s raised no monitor.storage")
        still_open = [al for al in alerts if al["state"] == "raised"]
        for al in still_open:
            problems.append(f"left open: {al['kind']} on {al['stream']} raised at {al['t_raised']:.1f} s")
        # Notifications.
        received = {}
        for r in self.receiver.got:
            key = r["body"].get("idempotency_key")
            received[key] = received.get(key, 0) + 1
        keys = {o["key"] for o in outbox}
        not_delivered = [o for o in outbox if o["status"] != "delivered"]
        lost = sorted(keys - set(received))
        strays = sorted(set(received) - keys)
        if not_delivered:
            problems.append(f"{len(not_delivered)} outbox rows not delivered: "
                            f"{[(o['key'], o['status']) for o in not_delivered[:5]]}")
        if lost:
            problems.append(f"{len(lost)} notifications never received: {lost[:5]}")
        if strays:
            problems.append(f"{len(strays)} keys received that the outbox does not have: {strays[:5]}")
        alerts_without = [al for al in alerts
                          if not any(o["alert"] == al["id"] and o["key"].endswith(":raised") for o in outbox)]
        if alerts_without:
            problems.append(f"{len(alerts_without)} alerts without a raise notification")
        # Resources.
        slopes = []
        for i, seg in enumerate(self.segments):
            # After the first two minutes (the first 30 s in a short run), as caches fill.
            warm = 120 if self.a.duration >= 1800 else 30
            pts = [p for p in seg["samples"] if p[0] - seg["start"] >= warm]
            if len(pts) < 10:
                continue
            row = {"process": i, "minutes": round((pts[-1][0] - pts[0][0]) / 60, 1)}
            for j, name in ((1, "rss_mib"), (2, "fds"), (3, "threads")):
                xs = [p[0] / 3600 for p in pts]
                ys = [p[j] for p in pts]
                mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
                sxx = sum((x - mx) ** 2 for x in xs)
                slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
                row[name] = {"first": ys[0], "last": ys[-1], "min": min(ys), "max": max(ys),
                             "slope_per_hour": round(slope, 2)}
            slopes.append(row)
        dups = sum(n - 1 for n in received.values())
        return {
            "seed": self.a.seed,
            "store": self.a.store,
            "duration_s": self.a.duration,
            "streams": self.a.streams,
            "settled_after_s": round(self.settled_at - self.a.duration, 1),
            "faults": self.injected,
            "clock_offsets_s": [round(o, 1) for _, o in self.offsets],
            "occurrences": occ_report,
            "alerts_by_kind": by_kind,
            "alerts": len(alerts),
            "load_alerts": [f"{al['kind']} on {al['stream']} at {al['t_raised']:.1f} s" for al in load],
            "startup_alerts": [f"{al['kind']} on {al['stream']} at {al['t_raised']:.1f} s" for al in startup],
            "left_open": len(still_open),
            "disk_faults_told": f"{disk_told} of {len(disks)}",
            "notifications": {"outbox_rows": len(outbox), "received": len(self.receiver.got),
                              "keys_received": len(received), "duplicates": dups,
                              "not_delivered": len(not_delivered), "lost": len(lost)},
            "resources": slopes,
            "problems": problems,
        }


def markdown(r):
    lines = [f"# Soak: {r['duration_s'] / 3600:.2f} h, {r['streams']} streams, {r['store']}, seed {r['seed']}", ""]
    lines += ["| fault | injected |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(r["faults"].items())]
    o, n = r["occurrences"], r["notifications"]
    lines += ["", "| account | value |", "|---|---:|",
              f"| defect occurrences clear of faults | {o['clean']} |",
              f"| of them raised once | {o['raised_once']} |",
              f"| of them cleared once, on time | {o['cleared_once']} |",
              f"| occurrences near a fault (not counted) | {o['masked']} |",
              f"| alerts in all | {r['alerts']} |",
              f"| alerts left open | {r['left_open']} |",
              f"| disk faults told by monitor.storage | {r['disk_faults_told']} |",
              f"| alerts in a stream's first {STARTUP_S:.0f} s (not counted) | {len(r['startup_alerts'])} |",
              f"| the host behind: tiers lowered or streams late (not counted) | {len(r.get('load_alerts', []))} |",
              f"| notifications in the outbox | {n['outbox_rows']} |",
              f"| deliveries received | {n['received']} |",
              f"| idempotency keys received | {n['keys_received']} |",
              f"| duplicate deliveries (same key) | {n['duplicates']} |",
              f"| not delivered / never received | {n['not_delivered']} / {n['lost']} |",
              f"| settled after the schedule, s | {r['settled_after_s']} |"]
    lines += ["", "| alert kind | count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(r["alerts_by_kind"].items())]
    lines += ["", "| process | minutes | RSS MiB first → last (slope /h) | fds (slope /h) | threads (slope /h) |",
              "|---:|---:|---|---|---|"]
    for s in r["resources"]:
        f = lambda m, d=1: f"{s[m]['first']:.{d}f} → {s[m]['last']:.{d}f} ({s[m]['slope_per_hour']:+.2f})"
        lines.append(f"| {s['process']} | {s['minutes']} | {f('rss_mib')} | {f('fds', 0)} | {f('threads', 0)} |")
    lines += ["", "Problems: " + ("none" if not r["problems"] else "")]
    lines += [f"- {p}" for p in r["problems"]]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=3600)
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default="target/soak")
    p.add_argument("--avmon")
    p.add_argument("--libfaketime")
    p.add_argument("--work")
    p.add_argument("--disk-mib", type=int, default=128)
    p.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--account", metavar="RAW", help="only account again for a run's raw.json")
    a = p.parse_args()
    if a.account:
        with open(a.account) as f:
            raw = json.load(f)
        r = Soak.from_raw(raw).account(raw["alerts"], raw["outbox"])
        print(markdown(r))
        sys.exit(1 if r["problems"] else 0)
    os.makedirs(a.out, exist_ok=True)
    soak = Soak(a)
    try:
        r = soak.run()
    finally:
        for s in soak.senders:
            if s:
                s.kill()
                s.wait()
        if soak.avmon:
            soak.avmon.kill()
            soak.avmon.wait()
        if a.store == "postgres" and hasattr(soak, "pgroot"):
            soak.pg_ctl("stop")
            subprocess.run(["cp", os.path.join(soak.pgroot, "server.log"), os.path.join(a.out, "postgres.log")],
                           check=False)
        subprocess.run(["umount", soak.mnt], check=False)
    with open(os.path.join(a.out, "report.json"), "w") as f:
        json.dump(r, f, indent=2)
    md = markdown(r)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(md)
    print(md)
    sys.exit(1 if r["problems"] else 0)


if __name__ == "__main__":
    main()
