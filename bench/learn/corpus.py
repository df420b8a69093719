"""The picture-damage corpus: real content, damaged in every way avmon sees, labelled by its maker.

    python3 bench/learn/corpus.py [--split train|tune|test] [--only NAME] [--jobs N] [--relabel]

For every source of bench/learn/content.py (photographs moved like a camera would move, and real
footage) it makes short clips, then the items avmon is judged on. Every item is a clean H.264,
HEVC or MPEG-2 bitstream in MPEG-TS: whatever damage it carries happened upstream, decoded and
encoded again, so the decoder that monitors it sees nothing wrong.

Items (`KIND`):
  clean     the clip encoded again: no damage (some with film grain, a scene cut or a fade);
  loss      TS packets of the first encode dropped (`avmon damage --drop`), decoded with FFmpeg's
            concealment, encoded again;
  flip      bits of TS packets flipped (`avmon damage --flip`), then as `loss`;
  slice     a slice lost: from a macroblock row down, the rows concealed by drawing the last
            decoded row down (streaks) or by the previous picture, until the next keyframe;
  rows      macroblock rows frozen: a band keeps the picture of its first damaged frame;
  smear     wrong references: blocks of a region taken from the previous picture, displaced,
            and the damage carried on to the next keyframe;
  starved   the clip starved of bits (a quality defect, not corruption: labelled clean here);
  chroma    colour-plane corruption, the luma whole: a region's chroma lost (drawn as zero: green
            blocks) or taken from the wrong place, carried on to the next keyframe.

Labels come from the maker: the damaged decode (what the transcoder was given) is compared with
the clean decode, per picture and per 16x16 cell. `labels.npz` holds, per picture, the luma PSNR
against the clean decode, each cell's mean absolute difference (`cells`, 0-255), and what of it
is left after the best local alignment (`visible`, see `visible()`): the damage a viewer sees.
For the `chroma` items each cell's figures are the larger of its luma's and its chroma's.

Output: target/learn/corpus/<split>/<item>/{item.ts, labels.npz, meta.json}. An item is made
again only when it is missing; `--relabel` makes the labels of made items again.
"""

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import content  # noqa: E402

ROOT = content.ROOT
OUT = os.path.join(ROOT, "target", "learn", "corpus")
AVMON = os.path.join(ROOT, "target", "release", "avmon")
FPS = 25
SECONDS = 4
GOP = 50  # a keyframe every 2 s
CELL = 16


def run(args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def seed_of(*parts):
    h = 2166136261
    for c in "/".join(str(p) for p in parts).encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return h


# ---------------------------------------------------------------------------------------------
# Clips: frames of real content, yuv420p, as numpy arrays [n, h*3/2, w] (I420 layout).


def rgb_to_i420(rgb):
    """BT.601 limited range, as FFmpeg's swscale does for yuv420p."""
    f = rgb.astype(np.float32)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    h, w = y.shape
    u = u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    v = v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = np.clip(y + 0.5, 0, 255)
    out[h:h + h // 4] = np.clip(u + 0.5, 0, 255).reshape(h // 4, w)
    out[h + h // 4:] = np.clip(v + 0.5, 0, 255).reshape(h // 4, w)
    return out


def photo_frames(path, w, h, n, rng, fast=False):
    """A still moved like a camera: a smooth pan and zoom, with a little shake."""
    im = Image.open(path).convert("RGB")
    scale = max(w / im.width, h / im.height) * 1.6
    im = im.resize((max(w, int(im.width * scale)), max(h, int(im.height * scale))), Image.LANCZOS)
    speed = 6.0 if fast else 1.5
    cx, cy = im.width / 2, im.height / 2
    vx, vy = rng.uniform(-speed, speed), rng.uniform(-speed, speed) * 0.5
    z0 = rng.uniform(0.75, 0.95)
    z1 = z0 * rng.uniform(0.9, 1.1)
    frames = []
    for i in range(n):
        z = z0 + (z1 - z0) * i / max(1, n - 1)
        cw, ch = w / z, h / z
        sx = cx + vx * i + rng.normal(0, 0.4)
        sy = cy + vy * i + rng.normal(0, 0.4)
        sx = min(max(sx, cw / 2), im.width - cw / 2)
        sy = min(max(sy, ch / 2), im.height - ch / 2)
        box = (sx - cw / 2, sy - ch / 2, sx + cw / 2, sy + ch / 2)
        fr = im.transform((w, h), Image.EXTENT, box, Image.BICUBIC)
        frames.append(rgb_to_i420(np.asarray(fr)))
    return np.stack(frames)


def video_frames(path, w, h, n, start):
    """Real footage, scaled to w x h, from `start` seconds."""
    p = run(["ffmpeg", "-v", "error", "-ss", str(start), "-i", path, "-an", "-vf",
             f"scale={w}:{h}:flags=bicubic,fps={FPS}", "-frames:v", str(n), "-pix_fmt", "yuv420p",
             "-f", "rawvideo", "-"])
    a = np.frombuffer(p.stdout, np.uint8)
    k = len(a) // (w * h * 3 // 2)
    a = a[:k * w * h * 3 // 2].reshape(k, h * 3 // 2, w)
    if k < n:  # loop short footage back and forth
        a = np.concatenate([a, a[::-1]] * (n // max(1, k) + 1))[:n]
    return a.copy()


def clip(src, w, h, n, rng, fast=False):
    name, kind, path, _ = src
    if kind == "photo":
        return photo_frames(path, w, h, n, rng, fast)
    dur = float(run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                     "csv=p=0", path]).stdout or 0)
    start = rng.uniform(0, max(0.0, dur - n / FPS - 0.5))
    return video_frames(path, w, h, n, start)


def add_grain(frames, rng, sigma):
    f = frames.astype(np.int16)
    n, hh, w = f.shape
    h = hh * 2 // 3
    f[:, :h] += rng.normal(0, sigma, (n, h, w)).astype(np.int16)
    return np.clip(f, 0, 255).astype(np.uint8)


def fade(frames, at, length):
    """A fade to black and back, centred on frame `at`."""
    f = frames.astype(np.float32)
    h = f.shape[1] * 2 // 3
    for i in range(max(0, at - length), min(len(f), at + length)):
        k = abs(i - at) / length
        f[i, :h] = 16 + (f[i, :h] - 16) * k
        f[i, h:] = 128 + (f[i, h:] - 128) * k
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Encoding and decoding.


def encode(frames, out, codec="h264", rate=None, crf=None, slices=1):
    n, hh, w = frames.shape
    h = hh * 2 // 3
    args = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{w}x{h}",
            "-r", str(FPS), "-i", "-"]
    if codec == "h264":
        args += ["-c:v", "libx264", "-preset", "veryfast", "-g", str(GOP), "-bf", "2",
                 "-x264-params", f"slices={slices}:scenecut=0"]
        args += ["-crf", str(crf)] if crf is not None else ["-b:v", str(rate), "-maxrate",
                                                              str(rate), "-bufsize", str(rate)]
    elif codec == "hevc":
        args += ["-c:v", "libx265", "-preset", "veryfast", "-x265-params",
                 f"log-level=error:keyint={GOP}:scenecut=0"]
        args += ["-crf", str(crf)] if crf is not None else ["-b:v", str(rate)]
    else:
        args += ["-c:v", "mpeg2video", "-g", "12", "-bf", "2"]
        args += ["-q:v", str(max(2, crf // 6))] if crf is not None else ["-b:v", str(rate)]
    args += ["-f", "mpegts", out]
    subprocess.run(args, input=frames.tobytes(), check=True, stderr=subprocess.PIPE)


def decode(path, w, h, n):
    """Every picture of `path` at FPS (a lost picture repeats the one before), as I420 frames."""
    p = run(["ffmpeg", "-v", "quiet", "-err_detect", "ignore_err", "-i", path, "-an", "-vf",
             f"fps={FPS}", "-pix_fmt", "yuv420p", "-f", "rawvideo", "-"])
    a = np.frombuffer(p.stdout, np.uint8)
    size = w * h * 3 // 2
    k = len(a) // size
    a = a[:k * size].reshape(k, h * 3 // 2, w)
    if k < n:
        a = np.concatenate([a, np.repeat(a[-1:], n - k, axis=0)]) if k else np.zeros(
            (n, h * 3 // 2, w), np.uint8)
    return a[:n].copy()


# ---------------------------------------------------------------------------------------------
# Damage made on decoded pictures (what a decoder upstream would have shown).


def keyframe_after(i):
    return (i // GOP + 1) * GOP


def damage_slice(frames, rng):
    f = frames.copy()
    n, hh, w = f.shape
    h = hh * 2 // 3
    mbr = h // CELL
    for _ in range(2):
        at = int(rng.integers(5, n - 10))
        end = min(n, keyframe_after(at), at + int(rng.integers(3, 30)))
        row = int(rng.integers(1, max(2, mbr - 2))) * CELL
        streak = rng.random() < 0.5
        for i in range(at, end):
            if streak:
                f[i, row:h] = f[i, row - 1]
                f[i, h + row // 4:h + h // 4] = f[i, h + row // 4 - 1] if row // 4 > 0 else 128
                f[i, h + h // 4 + row // 4:] = f[i, h + h // 4 + row // 4 - 1] if row // 4 > 0 else 128
            else:
                f[i, row:h] = f[at - 1, row:h]
    return f


def damage_rows(frames, rng):
    f = frames.copy()
    n, hh, w = f.shape
    h = hh * 2 // 3
    mbr = h // CELL
    for _ in range(2):
        at = int(rng.integers(5, n - 10))
        end = min(n, keyframe_after(at), at + int(rng.integers(5, 40)))
        r0 = int(rng.integers(0, max(1, mbr - 3)))
        r1 = min(mbr, r0 + int(rng.integers(1, 4)))
        for i in range(at, end):
            f[i, r0 * CELL:r1 * CELL] = f[at, r0 * CELL:r1 * CELL]
    return f


def damaged_region(n, mbr, mbc, rng):
    """When and where damage in a reference picture strikes: from a picture to the next keyframe,
    a rectangle of macroblocks (rows r0..r1, columns c0..c1)."""
    at = int(rng.integers(5, n - 10))
    end = min(n, keyframe_after(at))
    r0 = int(rng.integers(0, max(1, mbr - 4)))
    c0 = int(rng.integers(0, max(1, mbc - 4)))
    r1 = min(mbr, r0 + int(rng.integers(2, max(3, mbr // 2))))
    c1 = min(mbc, c0 + int(rng.integers(2, max(3, mbc // 2))))
    return at, end, r0, r1, c0, c1


def damage_smear(frames, rng):
    f = frames.copy()
    n, hh, w = f.shape
    h = hh * 2 // 3
    mbr, mbc = h // CELL, w // CELL
    for _ in range(2):
        # a region of macroblocks, each with a wrong motion vector
        at, end, r0, r1, c0, c1 = damaged_region(n, mbr, mbc, rng)
        mv = rng.integers(-24, 25, size=(r1 - r0, c1 - c0, 2))
        for i in range(at, end):
            prev = f[i - 1]
            for r in range(r0, r1):
                for c in range(c0, c1):
                    dy, dx = mv[r - r0, c - c0]
                    y = min(max(r * CELL + dy, 0), h - CELL)
                    x = min(max(c * CELL + dx, 0), w - CELL)
                    f[i, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = \
                        prev[y:y + CELL, x:x + CELL]
    return f


def chroma_planes(frame):
    """Views of an I420 frame's U and V planes, each (h/2, w/2)."""
    hh, w = frame.shape
    h = hh * 2 // 3
    return (frame[h:h + h // 4].reshape(h // 2, w // 2),
            frame[h + h // 4:].reshape(h // 2, w // 2))


def damage_chroma(frames, rng):
    """Colour-plane corruption, the luma left whole: a region of macroblocks whose chroma is lost
    (drawn as zero, the green blocks of a decoder or a capture card that lost the colour), or
    taken from the wrong place of the previous picture (colours of something else bleeding in),
    carried to the next keyframe as damage in a reference picture is."""
    f = frames.copy()
    n, hh, w = f.shape
    h = hh * 2 // 3
    mbr, mbc = h // CELL, w // CELL
    c = CELL // 2
    for _ in range(2):
        at, end, r0, r1, c0, c1 = damaged_region(n, mbr, mbc, rng)
        lost = rng.random() < 0.5
        mv = rng.integers(-12, 13, size=(r1 - r0, c1 - c0, 2))
        for i in range(at, end):
            for plane, prev in zip(chroma_planes(f[i]), chroma_planes(f[i - 1])):
                if lost:
                    plane[r0 * c:r1 * c, c0 * c:c1 * c] = 0
                    continue
                for r in range(r0, r1):
                    for cc in range(c0, c1):
                        dy, dx = mv[r - r0, cc - c0]
                        y = min(max(r * c + dy, 0), h // 2 - c)
                        x = min(max(cc * c + dx, 0), w // 2 - c)
                        plane[r * c:(r + 1) * c, cc * c:(cc + 1) * c] = prev[y:y + c, x:x + c]
    return f


# ---------------------------------------------------------------------------------------------
# Labels.


def labels(ref, dmg):
    """Per picture: luma PSNR of dmg against ref; per cell: mean |dmg - ref| (uint8)."""
    n, hh, w = ref.shape
    h = hh * 2 // 3
    R, C = h // CELL, w // CELL
    psnr = np.empty(n, np.float32)
    cells = np.empty((n, R, C), np.uint8)
    for i in range(n):
        d = np.abs(ref[i, :h].astype(np.int16) - dmg[i, :h].astype(np.int16)).astype(np.float32)
        mse = float((d * d).mean())
        psnr[i] = 99.0 if mse == 0 else 10 * np.log10(255 * 255 / mse)
        cells[i] = np.clip(d[:R * CELL, :C * CELL].reshape(R, CELL, C, CELL).mean(axis=(1, 3)) + 0.5,
                           0, 255)
    return psnr, cells


SHIFT = 2  # pixels


def visible(ref, dmg, psnr):
    """Per picture and cell: what of the damage is left after the best local alignment, the mean
    |dmg - ref| (0-255) against the clean picture before, at or after it, each moved by up to
    SHIFT pixels either way, the best of the 3 x 25 for each cell on its own.

    Concealment often leaves a picture that is whole but a little displaced, or a picture late:
    its PSNR against the clean decode is low (28 dB on a detailed pan) while nothing in it looks
    broken. Such a picture is not damage a viewer sees in it; broken edges, misplaced blocks and
    streaks are, and alignment does not explain them away."""
    n, hh, w = ref.shape
    h = hh * 2 // 3
    R, C = h // CELL, w // CELL
    out = np.zeros((n, R, C), np.uint8)
    pad = [np.pad(ref[t, :h].astype(np.int16), SHIFT, mode="edge") for t in range(n)]
    for i in range(n):
        if psnr[i] >= 45:
            continue
        d = dmg[i, :R * CELL, :C * CELL].astype(np.int16)
        best = np.full((R, C), 255.0, np.float32)
        for t in (i - 1, i, i + 1):
            if not 0 <= t < n:
                continue
            for dy in range(-SHIFT, SHIFT + 1):
                for dx in range(-SHIFT, SHIFT + 1):
                    r = pad[t][SHIFT + dy:SHIFT + dy + R * CELL, SHIFT + dx:SHIFT + dx + C * CELL]
                    e = np.abs(d - r).reshape(R, CELL, C, CELL).mean(axis=(1, 3))
                    np.minimum(best, e, out=best)
        out[i] = np.clip(best + 0.5, 0, 255)
    return out


def chroma_labels(ref, dmg):
    """Per picture and 16x16 cell (8x8 chroma samples): the larger of the mean |dU| and |dV| of
    dmg against ref, before alignment and after the best local alignment (as `visible` does for
    the luma, moved by up to SHIFT / 2 chroma samples). Only the colour-plane items compute it:
    the other kinds damage the chroma as they damage the luma, or not at all."""
    n, hh, w = ref.shape
    h = hh * 2 // 3
    R, C, c, s = h // CELL, w // CELL, CELL // 2, SHIFT // 2
    raw = np.zeros((n, R, C), np.uint8)
    out = np.zeros((n, R, C), np.uint8)

    def mean_cells(d):
        return d[:R * c, :C * c].reshape(R, c, C, c).mean(axis=(1, 3))

    for i in range(n):
        pairs = list(zip(chroma_planes(dmg[i]), chroma_planes(ref[i])))
        if all(np.array_equal(a, b) for a, b in pairs):
            continue
        raw[i] = np.clip(np.max([mean_cells(np.abs(a.astype(np.int16) - b)) for a, b in pairs],
                                axis=0) + 0.5, 0, 255)
        best = np.full((R, C), 255.0, np.float32)
        for t in (i - 1, i, i + 1):
            if not 0 <= t < n:
                continue
            refs = [np.pad(p.astype(np.int16), s, mode="edge") for p in chroma_planes(ref[t])]
            for dy in range(-s, s + 1):
                for dx in range(-s, s + 1):
                    e = np.max([mean_cells(np.abs(a.astype(np.int16)
                                                  - r[s + dy:s + dy + h // 2, s + dx:s + dx + w // 2]))
                                for (a, _), r in zip(pairs, refs)], axis=0)
                    np.minimum(best, e, out=best)
        out[i] = np.clip(best + 0.5, 0, 255)
    return raw, out


# A picture is visibly damaged when at least VISIBLE_CELLS of its cells are still VISIBLE levels
# off after alignment (an area of 32x32 pixels), or one cell is STRONG levels off. It is
# untouched when no cell is even SLIGHT levels off the clean picture before alignment. Pictures
# in between (changed by the damage, but not visibly: a band frozen on still content, a picture
# a little displaced) count neither way.
VISIBLE = 12
VISIBLE_CELLS = 4
STRONG = 30
SLIGHT = 6


def visibly_damaged(vis):
    """Per picture of `visible` labels: is its damage visible?"""
    n = vis.reshape(len(vis), -1)
    return ((n >= VISIBLE).sum(axis=1) >= VISIBLE_CELLS) | (n.max(axis=1) >= STRONG)


def touched(cells):
    """Per picture of `cells` labels (before alignment): did the damage change it at all?"""
    return cells.reshape(len(cells), -1).max(axis=1) >= SLIGHT


# ---------------------------------------------------------------------------------------------
# Items.

# (width, height) per split: most training at SD and 720p; the held-out split at every size.
SIZES = {
    "train": [(640, 360), (640, 360), (960, 540), (1280, 720), (640, 360), (480, 272)],
    "tune": [(640, 360), (1280, 720)],
    "test": [(640, 360), (1280, 720), (960, 540), (640, 360)],
}
# The first held-out source is made at every size, 1080p included (1080p costs minutes per item).
FIRST_TEST_SIZES = [(640, 360), (1280, 720), (1920, 1080), (960, 540)]
KINDS = ["clean", "clean_grain", "clean_cut", "clean_fade", "clean_fast", "loss", "flip", "slice",
         "rows", "smear", "starved", "chroma"]


def plan(split):
    items = []
    srcs = content.sources(split)
    for si, src in enumerate(srcs):
        name = src[0]
        sizes = FIRST_TEST_SIZES if (split, si) == ("test", 0) else SIZES[split]
        for ki, kind in enumerate(KINDS):
            rng = np.random.default_rng(seed_of(split, name, kind))
            w, h = sizes[(si + ki) % len(sizes)]
            if src[1] == "video" and w > 1280:
                w, h = 1280, 720
            codec = ["h264", "h264", "hevc", "mpeg2"][(si + ki) % 4]
            other = srcs[(si + 1) % len(srcs)]
            items.append(dict(name=f"{name}-{kind}", src=src, kind=kind, w=w, h=h, codec=codec,
                              other=other, seed=int(rng.integers(1 << 31))))
    return items


def pictures(item, d):
    """The clean decode and the damaged pictures of `item` (what the transcoder was given), made
    in `d`. Returns (ref, dmg, src_ts): src_ts is the first encode, left in `d`."""
    rng = np.random.default_rng(item["seed"])
    w, h, n, kind = item["w"], item["h"], FPS * SECONDS, item["kind"]
    frames = clip(item["src"], w, h, n, rng, fast=(kind == "clean_fast"))
    if kind == "clean_grain":
        frames = add_grain(frames, rng, rng.uniform(3, 8))
    if kind == "clean_cut":
        cut = int(rng.integers(n // 3, 2 * n // 3))
        frames[cut:] = clip(item["other"], w, h, n - cut, rng)
    if kind == "clean_fade":
        frames = fade(frames, int(rng.integers(n // 3, 2 * n // 3)), 12)
    src_ts = os.path.join(d, "src.ts")
    bpp = 0.12 if kind != "starved" else 0.02
    encode(frames, src_ts, "h264", rate=int(w * h * FPS * bpp),
           slices=int(rng.choice([1, 4])) if kind in ("loss", "flip") else 1)
    ref = decode(src_ts, w, h, n)
    dmg = ref
    if kind in ("loss", "flip"):
        out = os.path.join(d, "damaged.ts")
        specs = []
        for _ in range(2):
            t = rng.uniform(0.4, SECONDS - 0.6)
            specs += [f"--{'drop' if kind == 'loss' else 'flip'}",
                      f"{t:.2f}-{t + rng.uniform(0.02, 0.3):.2f}:{rng.uniform(0.3, 1):.2f}"]
        run([AVMON, "damage", src_ts, out, "--seed", str(item["seed"] % 1000)] + specs)
        dmg = decode(out, w, h, n)
        os.remove(out)
    elif kind == "slice":
        dmg = damage_slice(ref, rng)
    elif kind == "rows":
        dmg = damage_rows(ref, rng)
    elif kind == "smear":
        dmg = damage_smear(ref, rng)
    elif kind == "chroma":
        dmg = damage_chroma(ref, rng)
    return ref, dmg, src_ts


def save_labels(d, ref, dmg, colour=False):
    """The item's labels. With `colour` (the colour-plane items), a cell's figures are the larger
    of its luma's and its chroma's (see `chroma_labels`)."""
    psnr, cells = labels(ref, dmg)
    vis = visible(ref, dmg, psnr)
    if colour:
        c_cells, c_vis = chroma_labels(ref, dmg)
        cells, vis = np.maximum(cells, c_cells), np.maximum(vis, c_vis)
    np.savez_compressed(os.path.join(d, "labels.npz"), psnr=psnr, cells=cells, visible=vis)


def make(item, split):
    d = os.path.join(OUT, split, item["name"])
    if os.path.exists(os.path.join(d, "meta.json")):
        return item["name"], "kept"
    os.makedirs(d, exist_ok=True)
    finish(item, split, d, *pictures(item, d))
    return item["name"], "made"


def finish(item, split, d, ref, dmg, src_ts):
    """The item from its pictures: item.ts, labels, meta (and no stale features)."""
    if os.path.exists(os.path.join(d, "features.bin")):
        os.remove(os.path.join(d, "features.bin"))
    if item["kind"] == "starved":
        os.replace(src_ts, os.path.join(d, "item.ts"))
    else:
        # The stream the monitor receives: the (damaged) pictures encoded again, cleanly.
        encode(dmg, os.path.join(d, "item.ts"), item["codec"],
               crf={"h264": 20, "hevc": 24, "mpeg2": 24}[item["codec"]])
        os.remove(src_ts)
    save_labels(d, ref, dmg, colour=item["kind"] == "chroma")
    meta = {k: v for k, v in item.items() if k not in ("src", "other")}
    meta.update(source=item["src"][0], split=split, frames=FPS * SECONDS, fps=FPS)
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


def relabel(item, split):
    """Labels made again for an item already made (its pictures are made again; item.ts stays)."""
    d = os.path.join(OUT, split, item["name"])
    if not os.path.exists(os.path.join(d, "meta.json")):
        return item["name"], "missing"
    old = np.load(os.path.join(d, "labels.npz"))
    if "visible" in old.files:
        return item["name"], "kept"
    if item["kind"].startswith("clean") or item["kind"] == "starved":  # nothing was damaged
        np.savez_compressed(os.path.join(d, "labels.npz"), psnr=old["psnr"], cells=old["cells"],
                            visible=np.zeros_like(old["cells"]))
        return item["name"], "relabelled"
    ref, dmg, src_ts = pictures(item, d)
    psnr, cells = labels(ref, dmg)
    # x264's rate control under threads is not bit-exact from run to run: a level here and there
    # is the same damage; more (concealment of a different bitstream) is other damage, and the
    # item is made again from these pictures.
    if np.abs(cells.astype(np.int16) - old["cells"]).max() > 3:
        finish(item, split, d, ref, dmg, src_ts)
        return item["name"], "made again"
    os.remove(src_ts)
    save_labels(d, ref, dmg, colour=item["kind"] == "chroma")
    return item["name"], "relabelled"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", action="append")
    ap.add_argument("--only")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--relabel", action="store_true", help="only make the labels of made items again")
    a = ap.parse_args()
    if not os.path.exists(AVMON):
        run(["cargo", "build", "--release", "-q", "-p", "avmon"], cwd=ROOT)
    for split in a.split or ["train", "tune", "test"]:
        items = [i for i in plan(split) if not a.only or a.only in i["name"]]
        with cf.ProcessPoolExecutor(a.jobs) as ex:
            for name, what in ex.map(relabel if a.relabel else make, items, [split] * len(items)):
                print(f"{split} {name}: {what}", flush=True)


if __name__ == "__main__":
    main()
