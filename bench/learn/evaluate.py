"""How well avmon finds the picture damage of the corpus (bench/learn/corpus.py), per split.

    python3 bench/learn/evaluate.py [--split test] [--jobs 2] [--json out.json] [--avmon BINARY]

Runs `avmon check` on every item of the split three ways, side by side:
  rules   the hand-made picture rules alone (`[corruption]` as it comes: the model is off);
  model   the learned model alone (`model = true`, and `AVMON_CORRUPTION_RULES=off`);
  avmon   both (`model = true`);
and FFmpeg's `blockdetect` filter, given per source the highest score it reached on that source's
clean items (not the starved one) as its threshold (an advantage avmon does not get).

Scoring, as bench/accuracy.sh does: a label is a stretch of visibly damaged pictures (stretches
closer than 0.5 s are one). A picture is visibly damaged when, after the best local alignment with
the clean pictures, enough of it is still off (`visibly_damaged` in corpus.py: what a viewer sees
broken, not a picture a little displaced or late). A detection matches a label when they
overlap, with 0.5 s slack. Recall is the share of labels matched, precision the share of
detections that match a label. Every `video.corruption` on a clean item (grain, fast motion,
scene cuts, fades, starved encodes) is false, and so is one that overlaps no damaged picture at
all (`touched` in corpus.py: no picture the damage changed, visibly or not).
"""

import argparse
import concurrent.futures as cf
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import touched, visibly_damaged  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(ROOT, "target", "learn", "corpus")
AVMON = os.path.join(ROOT, "target", "release", "avmon")
SLACK = 0.5
WAYS = ["rules", "model", "avmon"]


def spans(bad, fps):
    out = []
    for i, b in enumerate(bad):
        if not b:
            continue
        t = i / fps
        if out and t - out[-1][1] <= SLACK:
            out[-1][1] = t + 1 / fps
        else:
            out.append([t, t + 1 / fps])
    return out


def check(ts, way, cfgdir, avmon=AVMON):
    env = dict(os.environ)
    args = [avmon, "check", ts, "--format", "json"]
    cfg = os.path.join(cfgdir, "rules.toml" if way == "rules" else "model.toml")
    args += ["--detectors", cfg]
    if way == "model":
        env["AVMON_CORRUPTION_RULES"] = "off"
    r = subprocess.run(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    rep = json.loads(r.stdout)
    return [(e["start_s"], e["end_s"]) for e in rep["events"] if e["kind"] == "video.corruption"]


def blockdetect(ts):
    r = subprocess.run(["ffmpeg", "-v", "error", "-i", ts, "-vf",
                        "blockdetect,metadata=print:key=lavfi.block:file=-", "-f", "null", "-"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    scores, t = [], None
    for line in r.stdout.splitlines():
        if line.startswith("frame:"):
            t = float(line.split("pts_time:")[1].split()[0])
        elif line.startswith("lavfi.block=") and t is not None:
            scores.append((t, float(line.split("=")[1])))
    t0 = scores[0][0] if scores else 0.0
    return [(t - t0, s) for t, s in scores]


def label_spans(d, fps):
    """The item's labels and the stretches its damage touched, from its labels.npz."""
    lab = np.load(os.path.join(d, "labels.npz"))
    return spans(visibly_damaged(lab["visible"]), fps), spans(touched(lab["cells"]), fps)


def item(d, cfgdir, ways=WAYS, avmon=AVMON):
    meta = json.load(open(os.path.join(d, "meta.json")))
    ts = os.path.join(d, "item.ts")
    res = {"name": meta["name"], "kind": meta["kind"], "source": meta["source"],
           "size": f"{meta['w']}x{meta['h']}", "codec": meta["codec"]}
    res["labels"], res["damaged"] = label_spans(d, meta["fps"])
    for way in WAYS:
        res[way] = check(ts, way, cfgdir, avmon) if way in ways else []
    res["blockdetect"] = blockdetect(ts)
    return res


def overlaps(a, b):
    return a[0] <= b[1] + SLACK and b[0] <= a[1] + SLACK


def score(results, way):
    labels = matched = dets = good = 0
    onset = []
    false = []
    for r in results:
        labels += len(r["labels"])
        for lab in r["labels"]:
            m = [d for d in r[way] if overlaps(d, lab)]
            if m:
                matched += 1
                onset.append(abs(min(d[0] for d in m) - lab[0]))
        for d in r[way]:
            dets += 1
            if any(overlaps(d, lab) for lab in r["damaged"]):
                good += 1
            else:
                false.append(f"{r['name']} @{d[0]:.2f}-{d[1]:.2f}")
    return dict(labels=labels, recall=matched / max(1, labels), precision=good / max(1, dets),
                detections=dets, onset_median=float(np.median(onset)) if onset else None,
                onset_worst=max(onset) if onset else None, false=false)


def blockdetect_ways(results):
    """blockdetect's detections: stretches above the source's clean maximum."""
    thr = {}
    for r in results:
        if r["kind"].startswith("clean"):
            m = max((s for _, s in r["blockdetect"]), default=0.0)
            thr[r["source"]] = max(thr.get(r["source"], 0.0), m)
    for r in results:
        th = thr.get(r["source"], float("inf"))
        out = []
        for t, s in r["blockdetect"]:
            if s > th:
                if out and t - out[-1][1] <= SLACK:
                    out[-1][1] = t + 0.04
                else:
                    out.append([t, t + 0.04])
        r["ffmpeg"] = out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", default="test")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--only")
    ap.add_argument("--ways", default=",".join(WAYS), help="which of rules,model,avmon to run")
    ap.add_argument("--settings", default="", help="more [corruption] settings, TOML lines")
    ap.add_argument("--rules-settings", default="",
                    help="[corruption] settings for the rules alone, TOML lines (e.g. colour = true)")
    ap.add_argument("--rescore", help="score the detections of an earlier --json again (labels as now)")
    ap.add_argument("--avmon", default=AVMON, help="the avmon binary to run (an older build, to compare)")
    a = ap.parse_args()
    if a.rescore:
        results = json.load(open(a.rescore))
        for r in results:
            d = os.path.join(CORPUS, a.split, r["name"])
            fps = json.load(open(os.path.join(d, "meta.json")))["fps"]
            r["labels"], r["damaged"] = label_spans(d, fps)
        report(a, results)
        return
    dirs = sorted(os.path.dirname(m) for m in glob.glob(os.path.join(CORPUS, a.split, "*", "meta.json")))
    dirs = [d for d in dirs if not a.only or a.only in d]
    with tempfile.TemporaryDirectory() as cfgdir:
        with open(os.path.join(cfgdir, "rules.toml"), "w") as f:
            # The defaults (the model is off), which an older build without the model reads too.
            f.write(f"[corruption]\n{a.rules_settings}\n")
        with open(os.path.join(cfgdir, "model.toml"), "w") as f:
            f.write(f"[corruption]\nmodel = true\n{a.settings}\n")
        with cf.ThreadPoolExecutor(a.jobs) as ex:
            results = list(ex.map(lambda d: item(d, cfgdir, a.ways.split(","), a.avmon), dirs))
    report(a, results)


def report(a, results):
    blockdetect_ways(results)
    damaged = [r for r in results if r["labels"]]
    clean = [r for r in results if r["kind"].startswith("clean") or r["kind"] == "starved"]
    print(f"## {a.split}: {len(results)} items ({len(damaged)} with visible damage, "
          f"{len(clean)} clean)\n")
    print("| | labels | recall | precision | detections | false on clean items | median onset err (s) | worst (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    names = {"rules": "avmon, hand-made rules (the default)", "model": "avmon, model only",
             "avmon": "avmon, rules + model", "ffmpeg": "FFmpeg blockdetect (threshold: clean max per source)"}
    out = {}
    for way in WAYS + ["ffmpeg"]:
        s = score(results, way)
        fc = sum(len(r[way]) for r in clean)
        out[way] = s
        om = "–" if s["onset_median"] is None else f"{s['onset_median']:.2f}"
        ow = "–" if s["onset_worst"] is None else f"{s['onset_worst']:.2f}"
        print(f"| {names[way]} | {s['labels']} | {s['recall']:.3f} | {s['precision']:.3f} | "
              f"{s['detections']} | {fc} | {om} | {ow} |")
    print()
    for way in WAYS:
        if out[way]["false"]:
            print(f"- {way} false: " + ", ".join(out[way]["false"][:20]))
        missed = [f"{r['name']} @{lab[0]:.2f}" for r in results for lab in r["labels"]
                  if not any(overlaps(d, lab) for d in r[way])]
        if missed:
            print(f"- {way} missed ({len(missed)}): " + ", ".join(missed[:30]))
    by_kind = {}
    for r in damaged:
        for way in WAYS:
            k = by_kind.setdefault((r["kind"], way), [0, 0])
            k[0] += len(r["labels"])
            k[1] += sum(1 for lab in r["labels"] if any(overlaps(d, lab) for d in r[way]))
    print("\n| damage | labels | " + " | ".join(names[w] for w in WAYS) + " |")
    print("|---|---:|" + "---:|" * len(WAYS))
    for kind in sorted({k for k, _ in by_kind}):
        n = by_kind[(kind, WAYS[0])][0]
        print(f"| {kind} | {n} | " + " | ".join(f"{by_kind[(kind, w)][1]}" for w in WAYS) + " |")
    if a.json:
        json.dump(results, open(a.json, "w"))


if __name__ == "__main__":
    main()
