#!/usr/bin/env python3
"""The tables of docs/reliability.md's soak results, from the report.json of each run.

    python3 bench/soak_tables.py "SQLite, standalone=target/soak-1h-sqlite" \
                                 "PostgreSQL, a cluster node=target/soak-1h-pg"

Each argument is NAME=DIR, DIR holding a soak's report.json (bench/soak.sh --out DIR).
"""

import json
import os
import sys

FAULTS = ["kill", "exit_by_itself", "receiver", "disk", "clock", "pg", "flap", "stall", "garbage"]


def load(arg):
    name, path = arg.split("=", 1)
    with open(os.path.join(path, "report.json")) as f:
        return name, json.load(f)


def main(args):
    runs = [load(a) for a in args]
    out = ["**Faults injected**", "",
           "| run | " + " | ".join(FAULTS) + " |",
           "|---|" + "---:|" * len(FAULTS)]
    for name, r in runs:
        out.append(f"| {name} | " + " | ".join(str(r["faults"].get(k, 0)) for k in FAULTS) + " |")
    rows = [
        ("defect occurrences clear of faults", lambda r: r["occurrences"]["clean"]),
        ("of them raised once, within 8 s", lambda r: r["occurrences"]["raised_once"]),
        ("of them cleared once, within 10 s of the end", lambda r: r["occurrences"]["cleared_once"]),
        ("occurrences near a fault (not counted)", lambda r: r["occurrences"]["masked"]),
        ("alerts in all", lambda r: r["alerts"]),
        ("false alarms: alerts outside every fault window",
         lambda r: sum(1 for p in r["problems"] if p.startswith("unexplained"))),
        ("alerts in a stream's first 10 s (not counted)", lambda r: len(r["startup_alerts"])),
        ("the host behind: `monitor.degraded`, `monitor.behind` (not counted)",
         lambda r: len(r["load_alerts"])),
        ("alerts left open at the end", lambda r: r["left_open"]),
        ("disk faults told by `monitor.storage`", lambda r: r["disk_faults_told"]),
        ("notifications in the outbox", lambda r: r["notifications"]["outbox_rows"]),
        ("idempotency keys received", lambda r: r["notifications"]["keys_received"]),
        ("deliveries received", lambda r: r["notifications"]["received"]),
        ("deliveries of a key already received", lambda r: r["notifications"]["duplicates"]),
        ("notifications not delivered, or never received",
         lambda r: r["notifications"]["not_delivered"] + r["notifications"]["lost"]),
        ("seconds to settle after the schedule", lambda r: r["settled_after_s"]),
        ("problems", lambda r: len(r["problems"])),
    ]
    out += ["", "**The account**, against the schedule", "",
            "| | " + " | ".join(n for n, _ in runs) + " |",
            "|---|" + "---:|" * len(runs)]
    for label, f in rows:
        out.append(f"| {label} | " + " | ".join(str(f(r)) for _, r in runs) + " |")
    for name, r in runs:
        if r["problems"]:
            out += ["", f"Problems in the {name} run:", ""]
            out += [f"- {p}" for p in r["problems"]]
    out += ["", "**Resources**, per avmon process, fitted after its first 2 minutes "
                "(processes that ran at least 10 minutes)", "",
            "| run | process | minutes | RSS, MiB: first → last (slope per hour) | open fds (slope) | threads (slope) |",
            "|---|---:|---:|---|---|---|"]

    def cell(s, digits=1):
        return (f"{s['first']:.{digits}f} → {s['last']:.{digits}f} "
                f"({s['slope_per_hour']:+.1f})")

    for name, r in runs:
        for p in r["resources"]:
            if p["minutes"] < 10:
                continue
            out.append(f"| {name} | {p['process']} | {p['minutes']} | {cell(p['rss_mib'])} | "
                       f"{cell(p['fds'], 0)} | {cell(p['threads'], 0)} |")
    print("\n".join(out))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
