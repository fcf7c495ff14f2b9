#!/usr/bin/python3
"""Independent witness for the study-protocol number: trains the study's head in PyTorch on
features that eigennet's extract_features wrote, and prints the test accuracy per epoch.

The study's head on a frozen MobileNetV2 alpha 1.0 at 96x96: GlobalMaxPooling -> Dense 128 ReLU
-> Dropout 0.4 -> Dense N, Adam with Keras' defaults (lr 1e-3, eps 1e-7), batch 32, Keras'
Glorot-uniform kernels and zero biases. If PyTorch lands where train_emotions --recipe study
lands, the gap to the study's published number is the protocol's, not the library's.

Usage (Debian's python3 with torch and numpy):
  scripts/study_head_torch.py [--data ../shared/data/fer2013] [--exclude neutral] [--epochs 30]
It calls build/examples/extract_features once per class folder (features cached in
runs/study_head_torch/).
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)


def features(binary, weights, folder, out):
    if not os.path.exists(out):
        subprocess.run([binary, "--weights", weights, "--alpha", "1", "--size", "96", "--pool", "max", "--out", out,
                        folder], check=True, stdout=subprocess.DEVNULL)
    return np.load(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.path.join(repo, "..", "shared", "data", "fer2013"))
    p.add_argument("--weights", default=os.path.join(
        repo, "..", "shared", "weights", "mobilenetv2_1.0_224_imagenet_notop_bnfolded.safetensors"))
    p.add_argument("--binary", default=os.path.join(repo, "build", "examples", "extract_features"))
    p.add_argument("--exclude", default="")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=os.path.join(repo, "runs", "study_head_torch"))
    a = p.parse_args()
    os.makedirs(a.cache, exist_ok=True)
    classes = sorted(c for c in os.listdir(os.path.join(a.data, "train")) if c != a.exclude)
    split = {}
    for name in ("train", "test"):
        xs, ys = [], []
        for k, c in enumerate(classes):
            f = features(a.binary, a.weights, os.path.join(a.data, name, c), os.path.join(a.cache, f"{name}_{c}.npy"))
            xs.append(f)
            ys.append(np.full(len(f), k, dtype=np.int64))
        split[name] = (torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))
    torch.manual_seed(a.seed)
    head = torch.nn.Sequential(torch.nn.Linear(split["train"][0].shape[1], 128), torch.nn.ReLU(), torch.nn.Dropout(0.4),
                               torch.nn.Linear(128, len(classes)))
    for m in head:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, eps=1e-7)
    x, y = split["train"]
    xt, yt = split["test"]
    print(f"classes {classes}; train {len(x)}, test {len(xt)} (features {tuple(x.shape[1:])})")
    for epoch in range(a.epochs):
        head.train()
        order = torch.randperm(len(x))
        for b in range(0, len(x), 32):
            i = order[b:b + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(head(x[i]), y[i]).backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            acc = (head(xt).argmax(1) == yt).float().mean().item()
            dead = (torch.relu(head[0](x[:4096])).amax(0) == 0).sum().item()
        print(f"epoch {epoch + 1:2d}  test accuracy {acc:.4f}  dead hidden units {dead}/128")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
