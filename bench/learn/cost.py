"""What the picture-damage model costs, against FFmpeg's bare decode of the same input.

    python3 bench/learn/cost.py [--runs 5] [--inputs target/cost/720p25.ts ...]

Whole-process CPU (user + system, from wait4 through GNU time), as bench/cost.sh measures it, of:
  decode      ffmpeg -i INPUT -f null - (one thread): the bare decode;
  rules       avmon check INPUT with the model off (`[corruption] model = false`, the default);
  model/N     avmon check INPUT with the model looking at every N-th picture (and every picture
              after a suspicion), N = 1, 2, 4, 8.
Runs are interleaved (one of each command per round), and each figure is the median of the rounds.
The model's cost is (model/N − rules) / decode: the CPU it adds, as a share of the decode's.
The inputs default to bench/cost.sh's 720p25 and 1080p25 inputs (made by `bench/cost.sh
--only cpu` if missing).
"""

import argparse
import glob
import os
import statistics
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
AVMON = os.path.join(ROOT, "target", "release", "avmon")


def cpu(args, env=None):
    r = subprocess.run(["/usr/bin/time", "-f", "%U %S"] + args, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, env=env)
    u, s = r.stderr.strip().splitlines()[-1].split()
    return float(u) + float(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--inputs", nargs="*")
    ap.add_argument("--every", nargs="*", type=int, default=[1, 2, 4, 8])
    a = ap.parse_args()
    inputs = a.inputs or sorted(glob.glob(os.path.join(ROOT, "target", "cost", "*p25*.ts")))
    with tempfile.TemporaryDirectory() as tmp:
        cfgs = {}
        off = os.path.join(tmp, "off.toml")
        open(off, "w").write("[corruption]\nmodel = false\n")
        cfgs["rules"] = off
        for n in a.every:
            p = os.path.join(tmp, f"every{n}.toml")
            open(p, "w").write(f"[corruption]\nmodel = true\nmodel_every = {n}\n")
            cfgs[f"model/{n}"] = p
        print("| input | decode (s CPU) | avmon, rules only | " +
              " | ".join(f"model every {n}" for n in a.every) + " |")
        print("|---|---:|---:|" + "---:|" * len(a.every))
        for inp in inputs:
            runs = {k: [] for k in ["decode"] + list(cfgs)}
            for _ in range(a.runs):
                runs["decode"].append(cpu(["ffmpeg", "-v", "error", "-threads", "1", "-i", inp,
                                           "-map", "0:v", "-f", "null", "-"]))
                for k, c in cfgs.items():
                    runs[k].append(cpu([AVMON, "check", inp, "--format", "json", "--detectors", c]))
            med = {k: statistics.median(v) for k, v in runs.items()}
            d = med["decode"]
            cells = [f"{med['rules']:.2f} ({med['rules'] / d:.3f}×)"]
            for n in a.every:
                m = med[f"model/{n}"]
                cells.append(f"{m:.2f} (+{100 * (m - med['rules']) / d:.1f} % of decode)")
            print(f"| {os.path.basename(inp)} | {d:.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
