#!/usr/bin/python3
"""PyTorch's side of bench_mobilenet: the same MobileNetV2 + Dense(7) network, the same
configurations (see bench_mobilenet.cpp), channels_last, torch.set_num_threads(2).

The architecture is written here (torchvision is not installed) as torchvision and Keras build
it: the paper's table, make_divisible channel rounding, inverted residual blocks with ReLU6,
BatchNorm eps 1e-3 and momentum 0.01 (Keras' 0.99), global average pooling, Linear(1280, 7).
Convolutions use PyTorch's symmetric padding (padding=1 for 3x3); on these even sizes it gives
the same output sizes and cost as TF-SAME. Training step: forward in train mode, cross-entropy,
backward, Adam (eps 1e-7 as Keras); gradients are reset with zero_grad(set_to_none=True).
Inference: eval mode under torch.inference_mode() ("eager"), or with --frozen / the serve
variant "frozen": torch.jit.optimize_for_inference(torch.jit.script(model)), PyTorch's CPU
inference fast path (BatchNorm folded into the convolutions, oneDNN weights prepacked once).
Eager PyTorch 1.13 sends small ungrouped convolutions at batch 1 to its im2col + BLAS path,
and Debian's torch uses the reference (netlib) BLAS there, so eager batch-1 inference is slow.

Usage: /usr/bin/python3 bench_mobilenet_torch.py [--config NAME|all] [--steps N] [--frozen] [--jsonl] [--serve]
"""

import argparse
import statistics
import sys
import time

from bench_common import reexec_with_tuned_malloc

reexec_with_tuned_malloc()  # before torch is loaded: see bench_common.py

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_common import MOBILENET_V2_TABLE, make_divisible, peak_rss_mib, print_json, serve_loop, status_mib

CLASSES = 7
CONFIGS = {  # name: (train, alpha, size, batch), as in bench_mobilenet.cpp
    "train_a1.00_96_b32": (True, 1.0, 96, 32),
    "infer_a1.00_96_b32": (False, 1.0, 96, 32),
    "train_a0.35_96_b32": (True, 0.35, 96, 32),
    "infer_a0.35_96_b32": (False, 0.35, 96, 32),
    "infer_a1.00_96_b1": (False, 1.0, 96, 1),
    "infer_a1.00_224_b1": (False, 1.0, 224, 1),
}


def conv_bn(inp, out, kernel, stride=1, groups=1, relu6=True):
    layers = [nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out, eps=1e-3, momentum=0.01)]
    return layers + [nn.ReLU6(inplace=True)] if relu6 else layers


class InvertedResidual(nn.Module):
    def __init__(self, inp, out, stride, expansion):
        super().__init__()
        hidden = inp * expansion
        layers = conv_bn(inp, hidden, 1) if expansion != 1 else []
        layers += conv_bn(hidden, hidden, 3, stride, groups=hidden) + conv_bn(hidden, out, 1, relu6=False)
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and inp == out

    def forward(self, x):
        return x + self.body(x) if self.skip else self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self, alpha=1.0, classes=CLASSES):
        super().__init__()
        channels = make_divisible(32 * alpha)
        layers = conv_bn(3, channels, 3, 2)
        for t, c, n, s in MOBILENET_V2_TABLE:
            out = make_divisible(int(c * alpha))  # Keras truncates c * alpha first
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
        layers += conv_bn(channels, last, 1)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


class Workload:
    def __init__(self, name, frozen=False):
        self.name = name
        self.variant = "frozen" if frozen else "eager"
        self.train, self.alpha, self.size, self.batch = CONFIGS[name]
        torch.manual_seed(1)
        cl = torch.channels_last
        self.model = MobileNetV2(self.alpha).to(memory_format=cl)
        self.images = (torch.rand(self.batch, 3, self.size, self.size) * 2 - 1).contiguous(memory_format=cl)
        self.labels = torch.randint(0, CLASSES, (self.batch,))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, eps=1e-7)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.last = 0.0
        self.model.train(self.train)
        self.inference_model = self.model
        if frozen:
            if self.train:
                raise ValueError(f"{name}: 'frozen' applies to inference configurations only")
            with torch.no_grad():
                self.inference_model = torch.jit.optimize_for_inference(torch.jit.script(self.model))

    def step(self):
        if self.train:
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(self.images), self.labels)
            loss.backward()
            self.optimizer.step()
            self.last = loss.item()
        else:
            with torch.inference_mode():
                self.last = self.inference_model(self.images)[0, 0].item()

    def run(self, steps):
        seconds = []
        self.cpu_seconds = []  # CPU time of this thread per step (see bench_mobilenet.cpp)
        for _ in range(steps):
            start, cpu_start = time.perf_counter(), time.thread_time()
            self.step()
            self.cpu_seconds.append(time.thread_time() - cpu_start)
            seconds.append(time.perf_counter() - start)
        return seconds


def result(w, seconds, base_rss):
    ms = [1e3 * s for s in seconds]
    med = statistics.median(ms)
    return dict(tool="pytorch", variant=w.variant, config=w.name, train=w.train, alpha=w.alpha, size=w.size,
                batch=w.batch,
                threads=torch.get_num_threads(), params=w.params, ms=med, ms_min=min(ms), times_ms=ms,
                cpu_times_ms=[1e3 * c for c in getattr(w, "cpu_seconds", [])],
                images_per_s=w.batch / (med / 1e3), loss_or_logit=w.last, peak_rss_mib=peak_rss_mib(),
                base_rss_mib=base_rss)


def main():
    base_rss = status_mib("VmRSS")  # after importing torch, before any model
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=tuple(CONFIGS) + ("all",), default="all")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frozen", action="store_true",
                        help="inference configurations through torch.jit.optimize_for_inference")
    parser.add_argument("--jsonl", action="store_true")
    parser.add_argument("--serve", action="store_true",
                        help="read 'setup NAME WARMUP [frozen]' / 'run NAME STEPS [frozen]' / 'free NAME [frozen]' "
                             "lines from stdin")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.serve:
        loaded = {}

        def handle(words):
            frozen = words[-1] == "frozen"
            if frozen:
                words = words[:-1]
            key = (words[1] if len(words) > 1 else "", frozen)
            if words[0] == "setup" and len(words) == 3:
                start = time.perf_counter()
                w = Workload(words[1], frozen)
                w.run(int(words[2]))
                loaded[key] = w
                return {"setup": words[1], "variant": w.variant, "params": w.params,
                        "seconds": time.perf_counter() - start}
            if words[0] == "run" and len(words) == 3:
                w = loaded[key]
                return result(w, w.run(int(words[2])), base_rss)
            if words[0] == "free" and len(words) == 2:
                loaded.pop(key, None)
                return {"freed": words[1]}
            raise ValueError("expected 'setup NAME WARMUP [frozen]', 'run NAME STEPS [frozen]' or 'free NAME [frozen]'")
        serve_loop(handle)
        return 0

    names = list(CONFIGS) if args.config == "all" else [args.config]
    if not args.jsonl:
        print(f"PyTorch {torch.__version__} MobileNetV2 + Linear({CLASSES}), channels_last, "
              f"{torch.get_num_threads()} threads, {args.warmup} warm-up + {args.steps} timed steps"
              f"{', inference frozen (optimize_for_inference)' if args.frozen else ''}")
        print(f"{'config':20s} {'params':>10s} {'ms':>9s} {'ms min':>9s} {'images/s':>10s} {'peak MiB*':>11s}")
    for name in names:
        w = Workload(name, args.frozen and not CONFIGS[name][0])
        w.run(args.warmup)
        r = result(w, w.run(args.steps), base_rss)
        if args.jsonl:
            print_json(r)
        else:
            print(f"{name:20s} {r['params']:10d} {r['ms']:9.1f} {r['ms_min']:9.1f} {r['images_per_s']:10.1f} "
                  f"{r['peak_rss_mib']:11.0f}", flush=True)
        del w
    if not args.jsonl and len(names) > 1:
        print("* peak resident memory of this process so far (covers all configurations above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
