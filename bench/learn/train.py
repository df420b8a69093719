"""Train avmon's picture-damage model and export it to ONNX.

    python3 bench/learn/train.py features     # dump the features of every corpus item (avmon)
    python3 bench/learn/train.py train        # fit on `train`, pick the threshold on `tune`
    python3 bench/learn/train.py tune         # pick the threshold on `tune` again
    python3 bench/learn/train.py init         # write an untrained model (to build without data)

The model reads what crates/avmon-detect/src/damage_model.rs measures: per 16x16 cell of the luma,
9 figures (mean, steps across and down inside the cell and across its edges, how far its mean
moved and how much its pixels changed since the previous picture). It is fully convolutional, so
it runs at any picture size:

    1x1 conv 9->16, ReLU; plus the picture's mean of those 16 (1x1 conv), ReLU -> 3x3 conv
    16->16, ReLU -> 3x3 conv 16->8 dilated by 2, ReLU -> 1x1 conv 8->1, sigmoid

about 3,900 multiply-adds per cell (14 M for a 1280x720 picture). Each cell sees 7x7 cells
(112x112 pixels) around it, and what the whole picture is like (a scene cut changes every cell, a
starved encode is blocky everywhere: damage is where the rest of the picture is not). Its output
is each cell's probability of damage.

Labels (bench/learn/corpus.py): what of the damage is left after the best local alignment with
the clean pictures (`visible`). A cell is damaged when at least VISIBLE levels are left in a
visibly damaged picture, clean when the damage did not change it (less than SLIGHT levels before
alignment); cells in between, and pictures neither visibly damaged nor untouched, are left out
of the loss.

Training uses PyTorch on the CPU (it takes a few minutes); the seed is fixed.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import SLIGHT, VISIBLE, touched, visibly_damaged  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(ROOT, "target", "learn", "corpus")
MODEL = os.environ.get("MODEL", os.path.join(ROOT, "crates", "avmon-detect", "models",
                                             "picture_damage.onnx"))
AVMON = os.path.join(ROOT, "target", "release", "avmon")
WEIGHTS = os.environ.get("WEIGHTS", os.path.join(ROOT, "target", "learn", "net.pt"))
CHANNELS = 9


# The layers' sizes (the defaults are the shipped model's; other values are for experiments).
WIDTH = int(os.environ.get("WIDTH", "16"))
DILATE = int(os.environ.get("DILATE", "2"))
CONTEXT = os.environ.get("CONTEXT", "1") == "1"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        w = WIDTH
        self.cells = nn.Sequential(nn.Conv2d(CHANNELS, 16, 1), nn.ReLU())
        # What the whole picture is like (a scene cut changes every cell, a starved encode is
        # blocky everywhere; damage is where the rest of the picture is not): the mean of every
        # cell's first figures, added to each cell's.
        self.context = nn.Conv2d(16, 16, 1)
        self.body = nn.Sequential(
            nn.Conv2d(16, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 8, 3, padding=DILATE, dilation=DILATE), nn.ReLU(),
            nn.Conv2d(8, 1, 1),
        )

    def forward(self, x):
        h = self.cells(x)
        if CONTEXT:
            h = torch.relu(h + self.context(h.mean(dim=(2, 3), keepdim=True)))
        return self.body(h)


class Exported(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.sigmoid(self.net(x))


def export(net):
    os.makedirs(os.path.dirname(MODEL), exist_ok=True)
    net.eval()
    x = torch.zeros(1, CHANNELS, 45, 80)
    torch.onnx.export(Exported(net), (x,), MODEL, input_names=["cells"], output_names=["damage"],
                      dynamic_axes={"cells": {2: "rows", 3: "cols"}, "damage": {2: "rows", 3: "cols"}},
                      opset_version=13, dynamo=False)
    print(f"wrote {MODEL} ({os.path.getsize(MODEL)} bytes)")


def read_features(path):
    """[(t, array [CHANNELS, rows, cols])] from a dump of damage_model.rs."""
    raw = open(path, "rb").read()
    out, at = [], 0
    while at + 16 <= len(raw):
        t = np.frombuffer(raw, "<f8", 1, at)[0]
        rows, cols = np.frombuffer(raw, "<u4", 2, at + 8)
        n = CHANNELS * rows * cols
        a = np.frombuffer(raw, "<f4", n, at + 16).reshape(CHANNELS, rows, cols)
        out.append((float(t), a))
        at += 16 + 4 * n
    return out


def features():
    items = sorted(glob.glob(os.path.join(CORPUS, "*", "*", "meta.json")))
    for m in items:
        d = os.path.dirname(m)
        out = os.path.join(d, "features.bin")
        if os.path.exists(out):
            continue
        env = dict(os.environ, AVMON_DAMAGE_FEATURES=out)
        subprocess.run([AVMON, "check", os.path.join(d, "item.ts"), "--format", "json"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(os.path.relpath(d, CORPUS), flush=True)


def load(split):
    """Per item: (meta, features [n, C, R, Cc], cell labels [n, R, Cc] float with -1 = ignore,
    picture labels [n]: 1 damaged, 0 clean, -1 in between)."""
    data = []
    for m in sorted(glob.glob(os.path.join(CORPUS, split, "*", "meta.json"))):
        d = os.path.dirname(m)
        f = os.path.join(d, "features.bin")
        if not os.path.exists(f):
            continue
        meta = json.load(open(m))
        if meta["kind"] == "chroma":
            # Colour-plane damage leaves the luma whole, and the model sees the luma only.
            continue
        lab = np.load(os.path.join(d, "labels.npz"))
        feats = read_features(f)
        n = min(len(feats), len(lab["psnr"]))
        if n == 0:
            continue
        x = np.stack([a for _, a in feats[:n]])
        vis = lab["visible"][:n]
        R, C = x.shape[2], x.shape[3]
        raw = lab["cells"][:n]
        pic = np.where(visibly_damaged(vis), 1.0, np.where(touched(raw), -1.0, 0.0))
        vis, raw = vis[:, :R, :C], raw[:, :R, :C]
        y = np.where(vis >= VISIBLE, 1.0, np.where(raw < SLIGHT, 0.0, -1.0))
        # In a picture that is not visibly damaged, no cell counts as damaged.
        y[pic != 1] = np.where(y[pic != 1] == 1, -1, y[pic != 1])
        data.append((meta, x.astype(np.float32), y.astype(np.float32), pic.astype(np.float32),
                     [t for t, _ in feats[:n]]))
    return data


def train():
    """Fit on `train`: each step takes one item and up to 8 damaged and 8 clean pictures of it;
    the loss is each cell's (damaged cells weighted POS_WEIGHT) plus the picture's, its most
    likely cell against its label. Adam, cosine learning rate, STEPS steps."""
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    tr = load("train")
    tu = load("tune")
    print(f"train: {len(tr)} items, {sum(len(d[1]) for d in tr)} pictures; tune: {len(tu)} items")
    net = Net()
    steps = int(os.environ.get("STEPS", str(STEPS)))
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for st in range(steps):
        _, x, y, pic, _ = tr[rng.integers(len(tr))]
        pos, neg = np.where(pic == 1)[0], np.where(pic == 0)[0]
        sel = np.concatenate([rng.choice(pos, min(8, len(pos)), replace=False),
                              rng.choice(neg, min(8, len(neg)), replace=False)]).astype(int)
        if len(sel) == 0:
            continue
        xb, yb = torch.from_numpy(x[sel]), torch.from_numpy(y[sel])
        logit = net(xb)[:, 0]
        mask = yb >= 0
        wt = torch.where(yb[mask] > 0.5, POS_WEIGHT, 1.0)
        loss = nn.functional.binary_cross_entropy_with_logits(logit[mask], yb[mask], weight=wt)
        pl = torch.from_numpy(pic[sel])
        pm = pl >= 0
        if pm.any():
            pmax = logit.flatten(1).max(dim=1).values
            loss = loss + nn.functional.binary_cross_entropy_with_logits(pmax[pm], pl[pm])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if st % 2000 == 1999 or st == steps - 1:
            print(f"step {st + 1}: train {evaluate(net, tr[1::4])}", flush=True)
    torch.save(net.state_dict(), WEIGHTS)
    export(net)
    if tu:
        tune(net, tu)


def tune(net=None, tu=None):
    """The threshold: the lowest at which no clean picture of `tune` fires."""
    if net is None:
        net = Net()
        net.load_state_dict(torch.load(WEIGHTS))
    tu = tu if tu is not None else load("tune")
    thr = threshold(net, tu)
    print(f"tune ({len(tu)} items): {evaluate(net, tu, thr)}; threshold {thr:.3f}")


STEPS = 12000
LR = 3e-3
POS_WEIGHT = 5.0


def fired(sc, thr):
    """Per picture: damage as avmon decides it, two pictures in a row at or above `thr` (both
    count; one alone does not)."""
    hit = sc >= thr
    pair = hit[1:] & hit[:-1]
    out = np.zeros_like(hit)
    out[1:] |= pair
    out[:-1] |= pair
    return out


def threshold(net, data):
    """The lowest threshold, in steps of 0.01 up to 0.99, at which no clean picture of `data`
    fires (two in a row)."""
    s = scores(net, data)
    for thr in np.arange(0.50, 0.99, 0.01):
        if not any(fired(sc, thr)[pic == 0].any() for (_, _, _, pic, _), sc in zip(data, s)):
            return round(float(thr), 2)
    return 0.99


def scores(net, data):
    """Per item: per picture the model's score (max over cells)."""
    net.eval()
    out = []
    with torch.no_grad():
        for meta, x, y, pic, ts in data:
            s = torch.sigmoid(net(torch.from_numpy(x))).flatten(1).max(dim=1).values.numpy()
            out.append(s)
    return out


def evaluate(net, data, thr=None):
    s = scores(net, data)
    if thr is None:  # the best threshold that fires on no clean picture
        clean = np.concatenate([sc[pic == 0] for (_, _, _, pic, _), sc in zip(data, s)])
        thr = float(clean.max()) + 1e-6
    tp = fp = fn = 0
    clean_items_fired = 0
    for (meta, x, y, pic, ts), sc in zip(data, s):
        fire = fired(sc, thr)
        tp += int((fire & (pic == 1)).sum())
        fn += int((~fire & (pic == 1)).sum())
        fp += int((fire & (pic == 0)).sum())
        if meta["kind"].startswith("clean") or meta["kind"] == "starved":
            clean_items_fired += int(fire.any())
    rec = tp / max(1, tp + fn)
    prec = tp / max(1, tp + fp)
    return (f"at {thr:.3f}: pictures recall {rec:.3f} precision {prec:.3f} fp {fp}; "
            f"clean items fired {clean_items_fired}")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "train"
    if cmd == "init":
        torch.manual_seed(1)
        export(Net())
    elif cmd == "features":
        features()
    elif cmd == "tune":
        tune()
    else:
        train()
