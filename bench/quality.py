"""Does avmon's quality figure rank real encodes? Starved encodes against their pristine source.

For each real source of a split (bench/learn/content.py: photographs moved like a camera would,
and real footage), at each resolution (QCIF to 1080p), it makes:
  - the *source*: a near-lossless encode (libx264 -crf 10) of a short clip at 25 fps; a photo is
    panned and zoomed slowly (a crop moved with sub-pixel steps, resampled with PIL), footage is
    scaled and cropped to the picture size and played at 25 fps;
  - three *starved* encodes of it: libx264 (H.264), libx265 (HEVC) and mpeg2video (MPEG-2), at
    a bitrate starved for the resolution (BPP below: for H.264 0.04 bits per pixel per frame at
    QCIF down to 0.015 at 1080p; HEVC gets half that, MPEG-2 twice: see CODECS), visibly damaged,
    all in MPEG-TS, keyframes every 2 s.
A source is used at a resolution only where it is upscaled by at most --max-upscale (1.5): a
1080p picture blown up from a 600x400 photo is not a real 1080p encode.
Then it runs `avmon check --format json` on each file (summary.video.blockiness_mean, per cent:
higher is blockier) and FFmpeg's `blockdetect` (the mean of its per-frame scores: higher is
blockier), and prints a Markdown table: per pair, each figure on the source and the starved
encode, their ratio (starved / source), and whether it ranks the starved encode worse
(ratio >= 1.3 is "clearly": yes; above 1: "barely"; else "no").

    bench/quality.sh [--split test] [--res qcif,360p,720p,1080p] [--before path/to/avmon] ...
    AVMON=path/to/avmon bench/quality.sh ...   # measure another build (not built here)

Files are kept in target/quality and remade only when missing (the name carries the recipe);
blockdetect's figure is kept beside each file. `--before` runs a second avmon build on the same
files (for "before / after" tables). Tune only on --split train or tune: test is held out.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "learn"))
import content  # noqa: E402

OUT = os.path.join(ROOT, "target", "quality")
FPS = 25
RESOLUTIONS = {
    "qcif": (176, 144),
    "360p": (640, 360),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}
# Starved bits per pixel per frame, per resolution: low enough that every codec's picture is
# visibly damaged at full size on this content (slow camera moves compress well: at 0.05 bpp the
# H.264 and HEVC pictures at 360p are hard to tell from the source). Smaller pictures carry more
# detail per pixel and need more bits for the same damage.
BPP = {"qcif": 0.04, "360p": 0.025, "720p": 0.02, "1080p": 0.015}
# Starved encoders: ffmpeg's arguments, and the share of the resolution's starved rate (BPP) each
# gets: about what each needs for the same picture quality (HEVC half of H.264's rate, MPEG-2
# twice), so that each is about as damaged. At one rate for all, HEVC's picture is often hard to
# tell from the source while MPEG-2's falls apart.
CODECS = {
    "h264": (["-c:v", "libx264", "-preset", "medium"], 1.0),
    "hevc": (["-c:v", "libx265", "-preset", "fast", "-x265-params", "log-level=error"], 0.5),
    "mpeg2": (["-c:v", "mpeg2video"], 2.0),
}
CLEARLY = 1.3


def ffmpeg(args, **kw):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, **kw)


def photo_frames(path, w, h, frames):
    """RGB frames of a slow camera move over a photograph: a pan across the middle of the
    picture with a slow zoom in (crop 72% → 60% of the photo's width), eased at both ends."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    # Work on a copy at most 1.6x the output's width (the crop is then still downscaled).
    scale = min(1.0, 1.6 * w / (0.72 * img.width))
    if scale < 1.0:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    iw, ih = img.size
    for i in range(frames):
        t = i / max(1, frames - 1)
        e = t * t * (3 - 2 * t)  # ease in and out
        cw = iw * (0.72 - 0.12 * e)
        ch = cw * h / w
        if ch > ih * 0.95:
            ch = ih * 0.95
            cw = ch * w / h
        cx = iw * (0.42 + 0.16 * e)
        cy = ih * (0.47 + 0.06 * e)
        x0 = min(max(cx - cw / 2, 0), iw - cw)
        y0 = min(max(cy - ch / 2, 0), ih - ch)
        yield img.resize((w, h), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch)).tobytes()


def upscale(kind, path, w, h):
    """How much a source is blown up to make a w x h picture (below 1: downscaled)."""
    if kind == "photo":
        from PIL import Image

        iw, ih = Image.open(path).size
        cw = 0.72 * iw
        if cw * h / w > 0.95 * ih:
            cw = 0.95 * ih * w / h
        return w / cw
    o = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                        "stream=width,height", "-of", "csv=p=0", path],
                       capture_output=True, text=True, check=True).stdout
    vw, vh = (int(x) for x in o.strip().split("\n")[0].split(",")[:2])
    return max(w / vw, h / vh)


def make_source(name, kind, path, w, h, seconds, out):
    """The near-lossless source clip."""
    enc = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "10", "-pix_fmt", "yuv420p",
           "-g", str(2 * FPS), "-an", "-f", "mpegts"]
    tmp = out + ".tmp"
    if kind == "photo":
        frames = seconds * FPS
        p = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", f"{w}x{h}", "-r", str(FPS), "-i", "-", *enc, tmp],
            stdin=subprocess.PIPE)
        for f in photo_frames(path, w, h, frames):
            p.stdin.write(f)
        p.stdin.close()
        if p.wait() != 0:
            raise RuntimeError(f"ffmpeg failed on {name}")
    else:
        # The footage's own motion, its frames played at 25 fps, scaled to cover the picture.
        ffmpeg(["-r", str(FPS), "-i", path, "-t", str(seconds),
                "-vf", f"scale={w}:{h}:force_original_aspect_ratio=increase:flags=bicubic,"
                       f"crop={w}:{h},setsar=1", *enc, tmp])
    os.replace(tmp, out)


def make_starved(src, codec, w, h, bpp, out):
    rate = round(bpp * w * h * FPS)
    tmp = out + ".tmp"
    ffmpeg(["-i", src, *CODECS[codec][0], "-b:v", str(rate), "-g", str(2 * FPS),
            "-pix_fmt", "yuv420p", "-an", "-f", "mpegts", tmp])
    os.replace(tmp, out)


def blockdetect(path):
    """Mean of blockdetect's per-frame scores (kept beside the file)."""
    keep = path + ".blockdetect"
    if os.path.exists(keep) and os.path.getmtime(keep) >= os.path.getmtime(path):
        return float(open(keep).read())
    o = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", path, "-vf", "blockdetect,metadata=mode=print:file=-",
         "-an", "-f", "null", "-"], check=True, capture_output=True, text=True).stdout
    scores = [float(line.split("=", 1)[1]) for line in o.splitlines()
              if line.startswith("lavfi.block=")]
    mean = sum(scores) / max(1, len(scores))
    with open(keep, "w") as f:
        f.write(repr(mean))
    return mean


def avmon(binary, path):
    o = subprocess.run([binary, "check", "--format", "json", path], check=True,
                       capture_output=True, text=True).stdout
    return json.loads(o)["summary"]["video"]["blockiness_mean"]


def verdict(src, starved):
    r = starved / src if src > 0 else float("inf")
    return r, ("yes" if r >= CLEARLY else "barely" if r > 1 else "no")


def fmt(v, d=3):
    return "∞" if v == float("inf") else f"{v:.{d}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", help="train, tune, test or all (default test)")
    ap.add_argument("--sources", help="comma-separated source names (default: all of the split)")
    ap.add_argument("--res", default=",".join(RESOLUTIONS), help="comma-separated: qcif,360p,...")
    ap.add_argument("--codecs", default=",".join(CODECS))
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--bpp", type=float, help="starved bits per pixel per frame (default: BPP)")
    ap.add_argument("--max-upscale", type=float, default=1.5)
    ap.add_argument("--avmon", default=os.path.join(ROOT, "target", "release", "avmon"))
    ap.add_argument("--before", help="another avmon build to run on the same files")
    ap.add_argument("--no-blockdetect", action="store_true")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--make-only", action="store_true", help="make the files, measure nothing")
    a = ap.parse_args()

    srcs = content.sources(None if a.split == "all" else a.split)
    if a.sources:
        want = a.sources.split(",")
        srcs = [s for s in srcs if s[0] in want]
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for res in a.res.split(","):
        w, h = RESOLUTIONS[res]
        for name, kind, path, split in srcs:
            if upscale(kind, path, w, h) > a.max_upscale:
                continue
            stem = os.path.join(OUT, f"{name}-{res}-{a.seconds}s")
            src = stem + "-src.ts"
            if not os.path.exists(src):
                print(f"making {os.path.basename(src)}", file=sys.stderr)
                make_source(name, kind, path, w, h, a.seconds, src)
            for codec in a.codecs.split(","):
                bpp = (a.bpp or BPP[res]) * CODECS[codec][1]
                starved = f"{stem}-{codec}-{bpp:g}bpp.ts"
                if not os.path.exists(starved):
                    print(f"making {os.path.basename(starved)}", file=sys.stderr)
                    make_starved(src, codec, w, h, bpp, starved)
                if a.make_only:
                    continue
                row = {"content": name, "split": split, "kind": kind, "res": res,
                       "codec": codec, "source": src, "starved": starved}
                row["avmon"] = [avmon(a.avmon, src), avmon(a.avmon, starved)]
                if a.before:
                    row["before"] = [avmon(a.before, src), avmon(a.before, starved)]
                if not a.no_blockdetect:
                    row["blockdetect"] = [blockdetect(src), blockdetect(starved)]
                rows.append(row)
    if a.make_only:
        return
    figures = (["before"] if a.before else []) + ["avmon"] + \
        ([] if a.no_blockdetect else ["blockdetect"])
    title = {"before": "avmon before", "avmon": "avmon", "blockdetect": "blockdetect"}
    head = "| content | resolution | codec |"
    rule = "|---|---|---|"
    for f in figures:
        head += f" {title[f]} source | starved | ratio | worse? |"
        rule += "---:|---:|---:|---|"
    print(head)
    print(rule)
    summary = {f: {"yes": 0, "barely": 0, "no": 0, "min": float("inf")} for f in figures}
    for r in rows:
        line = f"| {r['content']} | {r['res']} | {r['codec']} |"
        for f in figures:
            s, t = r[f]
            ratio, v = verdict(s, t)
            summary[f][v] += 1
            summary[f]["min"] = min(summary[f]["min"], ratio)
            line += f" {fmt(s)} | {fmt(t)} | {fmt(ratio, 2)} | {v} |"
        print(line)
    print()
    for f in figures:
        s = summary[f]
        print(f"- {title[f]}: starved clearly worse (ratio >= {CLEARLY}) in {s['yes']} of "
              f"{len(rows)} pairs, barely in {s['barely']}, not in {s['no']}; "
              f"lowest ratio {fmt(s['min'], 2)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
