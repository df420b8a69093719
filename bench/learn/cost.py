"""What the picture-damage model costs, against FFmpeg's bare decode of the same input.

    python3 bench/learn/cost.py [--runs 5] [--inputs target/cost/720p25.ts ...]

Whole-process CPU (user + system, from wait4 through GNU time), as bench/cost.sh measures it, of:
  decode      ffmpeg -i INPUT -f null - (one thread): the bare decode;
  rules       avmon check INPUT with the model off (`[corruption] model = false`, the default);
  model/N     avmon check INPUT with the model looking at every N-th picture (and every picture
              after a suspicion), N = 1, 4, 8, 16.
Runs are interleaved (one of each command per round), and each figure is the median of the rounds.
The model's cost is (model/N − rules) / decode: the CPU it adds, as a share of the decode's.
The inputs default to bench/cost.sh's 720p25 and 1080p25 inputs (made by `bench/cost.sh
--only cpu` if missing).

    python3 bench/learn/cost.py --parts [--every 1 16 32] --inputs IN_720P IN_1080P

The same share from its parts, steadier on a shared host than whole-process CPU: the model's own
time per picture (crates/avmon-detect/examples/damage_model_cost.rs: `track` for a picture it
does not look at, `measure` + `score` for one it does) against FFmpeg's one-thread decode time per
picture of each input, run alternately, medians. At every N-th picture (none suspect) the model
adds ((N - 1) * track + measure + score) / N per picture.
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


def frames(inp):
    r = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
                        "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", inp],
                       stdout=subprocess.PIPE, text=True, check=True)
    return int(r.stdout.split()[0])


def parts(a, inputs):
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "avmon-detect", "--example",
                    "damage_model_cost"], cwd=ROOT, check=True)
    example = os.path.join(ROOT, "target", "release", "examples", "damage_model_cost")
    model, decode = {}, {}
    for _ in range(a.runs):
        out = subprocess.run([example], stdout=subprocess.PIPE, text=True, check=True).stdout
        for line in out.splitlines()[1:]:
            size, *ms = line.split(",")
            model.setdefault(size, []).append([float(v) for v in ms])
        for inp in inputs:
            t = cpu(["ffmpeg", "-v", "error", "-threads", "1", "-i", inp, "-map", "0:v", "-f",
                     "null", "-"])
            decode.setdefault(inp, []).append(1e3 * t / frames(inp))
    print("| input | decode (ms per picture) | track / measure / score (ms) | " +
          " | ".join(f"model every {n}" for n in a.every) + " |")
    print("|---|---:|---:|" + "---:|" * len(a.every))
    for inp, size in zip(inputs, model):
        tr, me, sc = (statistics.median(v[i] for v in model[size]) for i in range(3))
        d = statistics.median(decode[inp])
        cells = [f"+{100 * ((n - 1) * tr + me + sc) / n / d:.1f} %" for n in a.every]
        print(f"| {os.path.basename(inp)} ({size}) | {d:.2f} | {tr:.3f} / {me:.3f} / {sc:.3f} | "
              + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--inputs", nargs="*")
    ap.add_argument("--every", nargs="*", type=int, default=[1, 4, 8, 16])
    ap.add_argument("--parts", action="store_true", help="the model's parts against the decode")
    a = ap.parse_args()
    inputs = a.inputs or sorted(glob.glob(os.path.join(ROOT, "target", "cost", "*p25*.ts")))
    if a.parts:
        parts(a, inputs)
        return
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
