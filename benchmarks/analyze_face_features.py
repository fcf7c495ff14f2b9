#!/usr/bin/python3
"""Analyses of the detections that bench_face_detection --features writes (training side), as in
weights/README.md: other ways to place the crop, other rules against false faces, and a second
opinion of the 128 model.

    bench_face_detection --split train --count 2000 --photos DIR --half even --model back_256 --tiles \\
        --scores 0.5 --calibrate --no-classify --features back.csv        (and the same for front_128)
    /usr/bin/python3 benchmarks/analyze_face_features.py back.csv front.csv PHOTOS PICTURES

PHOTOS is the number of face-free photos of that half (245), PICTURES the number of faces (2000).
"""
import csv
import sys
from collections import defaultdict

import numpy as np


def arr(rows, key):
    return np.array([float(r[key]) for r in rows])


def iou(a, b):
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def box(r):
    return (float(r["box_x"]), float(r["box_y"]), float(r["box_w"]), float(r["box_h"]))


def crop_alternatives(rows, pictures):
    """Found (IoU >= 0.5) with crops placed from the box, the eyes, eyes and mouth, and a fit."""
    best = {}
    for r in rows:
        if r["kind"] not in ("face", "extra"):
            continue
        side = float(r["side"])
        o = iou((float(r["pasted_x"]), float(r["pasted_y"]), side, side), box(r))
        p = int(r["picture"])
        if o > best.get(p, (0, None))[0]:
            best[p] = (o, r)
    m = [r for o, r in best.values() if o >= 0.2]
    px, py, ps = arr(m, "pasted_x"), arr(m, "pasted_y"), arr(m, "side")
    pcx, pcy = px + ps / 2, py + ps / 2
    bw = arr(m, "box_w")
    bcx, bcy = arr(m, "box_x") + bw / 2, arr(m, "box_y") + arr(m, "box_h") / 2
    k = np.stack([np.stack([arr(m, f"k{i}_x"), arr(m, f"k{i}_y")], 1) for i in range(6)], 1)
    eyes = (k[:, 0] + k[:, 1]) / 2
    eye_distance = np.linalg.norm(k[:, 1] - k[:, 0], axis=1)
    eye_mouth = np.linalg.norm(k[:, 3] - eyes, axis=1)

    def found(cx, cy, s):
        ious = np.array([iou((x - w / 2, y - w / 2, w, w), (a, b, c, c)) for x, y, w, a, b, c in
                         zip(cx, cy, s, px, py, ps)])
        return 100.0 * (ious >= 0.5).sum() / pictures, np.median(ious)

    print(f"{len(m)} of {pictures} pictures have a detection overlapping the face (IoU >= 0.2)")
    for name, cx0, cy0, unit in [("box", bcx, bcy, bw), ("eyes", eyes[:, 0], eyes[:, 1], eye_distance),
                                 ("eyes and mouth", eyes[:, 0], eyes[:, 1], eye_mouth)]:
        s, dx, dy = np.median(ps / unit), np.median((pcx - cx0) / unit), np.median((pcy - cy0) / unit)
        f, med = found(cx0 + dx * unit, cy0 + dy * unit, s * unit)
        print(f"  crop from the {name} (medians): found {f:.2f}%, median IoU {med:.3f}; "
              f"spread of log(side / unit) {np.std(np.log(ps / unit)):.3f}")
    x = np.stack([bw, eye_distance, eye_mouth], 1)
    xc = np.stack([bcx, eyes[:, 0], k[:, 3, 0], k[:, 2, 0], np.ones_like(bw)], 1)
    yc = np.stack([bcy, eyes[:, 1], k[:, 3, 1], k[:, 2, 1], np.ones_like(bw)], 1)
    fit = [np.linalg.lstsq(a, b, rcond=None)[0] for a, b in ((x, ps), (xc, pcx), (yc, pcy))]
    f, med = found(xc @ fit[1], yc @ fit[2], x @ fit[0])
    print(f"  least-squares crop from box and keypoints (in-sample): found {f:.2f}%, median IoU {med:.3f}")


def rules(rows, photos, pictures):
    """Faces kept and false faces for thresholds on score, support and keypoint geometry."""
    def features(rs):
        bw = arr(rs, "box_w")
        k = np.stack([np.stack([arr(rs, f"k{i}_x"), arr(rs, f"k{i}_y")], 1) for i in range(6)], 1)
        eyes = (k[:, 0] + k[:, 1]) / 2
        return {"score": arr(rs, "score"), "support": arr(rs, "support"),
                "eye_distance": np.linalg.norm(k[:, 1] - k[:, 0], axis=1) / bw,
                "mouth_below_eyes": (k[:, 3, 1] - eyes[:, 1]) / bw}
    face = features([r for r in rows if r["kind"] == "face"])
    false = features([r for r in rows if r["kind"] == "false"])
    for key in face:
        print(f"  {key:17s} faces 5/50/95%: {np.round(np.quantile(face[key], [.05, .5, .95]), 3)}  "
              f"false faces: {np.round(np.quantile(false[key], [.05, .5, .95]), 3)}")
    for t in (0.55, 0.6, 0.65, 0.7):
        for name, keep in [("score only", lambda f, t=t: f["score"] >= t),
                           ("+ support >= 2", lambda f, t=t: (f["score"] >= t) & (f["support"] >= 2)),
                           ("+ keypoint geometry", lambda f, t=t: (f["score"] >= t) & (f["mouth_below_eyes"] >= 0.35)
                            & (f["mouth_below_eyes"] <= 0.5) & (f["eye_distance"] >= 0.3) & (f["eye_distance"] <= 0.55))]:
            print(f"  score >= {t:.2f} {name:20s}: found {100 * keep(face).sum() / pictures:.2f}%, "
                  f"false faces / 10 photos {10 * keep(false).sum() / photos:.2f}")


def second_opinion(back_rows, front_rows, photos, pictures):
    """Keep a 256 detection when its score >= t1, or >= t2 and a 128 detection (>= t3) overlaps it."""
    def group(rows):
        pics, free = defaultdict(list), defaultdict(list)
        for r in rows:
            (pics if r["kind"] in ("face", "extra") else free if r["kind"] == "false" else {}).setdefault(
                int(r["picture"]), []).append(r) if r["kind"] != "miss" else None
        return pics, free
    b, bf = group(back_rows)
    f, ff = group(front_rows)

    def keep(d, others, t1, t2, t3):
        s = float(d["score"])
        return s >= t1 or (s >= t2 and any(float(o["score"]) >= t3 and iou(box(d), box(o)) >= 0.3 for o in others))
    for t1, t2, t3 in [(0.7, 0.6, 0.55), (0.7, 0.6, 0.6), (0.65, 0.6, 0.6), (0.75, 0.6, 0.55)]:
        found = sum(any(d["kind"] == "face" and keep(d, f.get(p, []), t1, t2, t3) for d in b.get(p, []))
                    for p in range(pictures))
        false = sum(keep(d, ff.get(p, []), t1, t2, t3) for p in range(photos) for d in bf.get(p, []))
        print(f"  t1 {t1:.2f} t2 {t2:.2f} t3 {t3:.2f}: found {100 * found / pictures:.2f}%, "
              f"false faces / 10 photos {10 * false / photos:.2f}")


def main():
    if len(sys.argv) != 5:
        raise SystemExit(__doc__)
    back = list(csv.DictReader(open(sys.argv[1])))
    front = list(csv.DictReader(open(sys.argv[2])))
    photos, pictures = int(sys.argv[3]), int(sys.argv[4])
    print("crop placement (256 model):")
    crop_alternatives(back, pictures)
    print("rules against false faces (256 model):")
    rules(back, photos, pictures)
    print("second opinion of the 128 model:")
    second_opinion(back, front, photos, pictures)


if __name__ == "__main__":
    main()
