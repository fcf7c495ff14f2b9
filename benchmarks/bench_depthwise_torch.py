#!/usr/bin/python3
"""PyTorch's 3x3 depthwise convolution on MobileNetV2's depthwise shapes (the yardstick for
bench_depthwise): F.conv2d with groups=C on channels_last tensors, forward, backward to the
input and backward to the weights (aten.convolution_backward, the function autograd calls,
with an output mask for just one gradient), median timings, same GFLOP/s and byte counts as
bench_depthwise.

TF-SAME padding: stride 1 (and any symmetric case) uses conv2d's own padding. Stride 2 on an
even size pads only bottom/right, which conv2d cannot express, so forward is F.pad + conv2d
with padding 0 and includes the pad copy; "ms_nopad" is the time of conv2d with PyTorch's
symmetric padding=1 (same cost without the copy, different border values). The backward
directions run on the padded input; bwd_input includes narrowing the gradient back (a view).

Usage: /usr/bin/python3 bench_depthwise_torch.py [--config train|infer|all] [--jsonl] [--serve]
"""

import argparse
import sys

from bench_common import reexec_with_tuned_malloc

reexec_with_tuned_malloc()  # before torch is loaded: see bench_common.py

import torch
import torch.nn.functional as F

from bench_common import depthwise_shapes, print_json, same_padding, serve_loop, time_calls

DIRECTIONS = ("fwd", "bwd_input", "bwd_weight")


class DepthwiseCase:
    def __init__(self, batch, h, w, c, stride):
        self.batch, self.h, self.w, self.c, self.stride = batch, h, w, c, stride
        gen = torch.Generator().manual_seed(1)
        cl = torch.channels_last
        self.x = (torch.rand(batch, c, h, w, generator=gen) * 2 - 1).contiguous(memory_format=cl)
        self.weight = torch.rand(c, 1, 3, 3, generator=gen) * 2 - 1
        self.top, self.bottom = same_padding(h, stride)
        self.left, self.right = same_padding(w, stride)
        self.symmetric = self.top == self.bottom and self.left == self.right
        self.conv_padding = [self.top, self.left] if self.symmetric else [0, 0]
        self.x_conv = self.x if self.symmetric else self.pad(self.x)
        out = self.forward()
        self.out_h, self.out_w = out.shape[2], out.shape[3]
        self.dout = (torch.rand(out.shape, generator=gen) * 2 - 1).contiguous(memory_format=cl)

    def pad(self, x):
        return F.pad(x, (self.left, self.right, self.top, self.bottom))

    def forward(self):
        if self.symmetric:
            return F.conv2d(self.x, self.weight, stride=self.stride, padding=self.conv_padding, groups=self.c)
        return F.conv2d(self.pad(self.x), self.weight, stride=self.stride, groups=self.c)

    def forward_symmetric(self):
        return F.conv2d(self.x, self.weight, stride=self.stride, padding=1, groups=self.c)

    def backward(self, mask):
        s = self.stride
        return torch.ops.aten.convolution_backward(self.dout, self.x_conv, self.weight, None, [s, s],
                                                   self.conv_padding, [1, 1], False, [0, 0], self.c, mask)

    def backward_input(self):
        din = self.backward([True, False, False])[0]
        return din if self.symmetric else din[:, :, self.top:self.top + self.h, self.left:self.left + self.w]

    def backward_weight(self):
        return self.backward([False, True, False])[1]

    def backend(self):
        try:
            s = self.stride
            return str(torch._C._select_conv_backend(self.x_conv, self.weight, None, [s, s], self.conv_padding, [1, 1],
                                                     False, [0, 0], self.c)).split(".")[-1]
        except Exception:  # a private API: report nothing rather than fail
            return None


def run(batch, h, w, c, stride, direction, samples, min_sample_s, config="custom", layers=1):
    case = DepthwiseCase(batch, h, w, c, stride)
    fn = {"fwd": case.forward, "bwd_input": case.backward_input, "bwd_weight": case.backward_weight}[direction]
    with torch.no_grad():
        timing = time_calls(fn, samples, min_sample_s)
        nopad = None
        if direction == "fwd" and not case.symmetric:
            nopad = time_calls(case.forward_symmetric, samples, min_sample_s)["median_s"]
    out_elems = batch * case.out_h * case.out_w * c
    flops = 18.0 * out_elems
    nbytes = 4.0 * (batch * h * w * c + out_elems)
    s = timing["median_s"]
    return dict(tool="pytorch", config=config, batch=batch, h=h, w=w, c=c, stride=stride, out_h=case.out_h,
                out_w=case.out_w, layers=layers, direction=direction, threads=torch.get_num_threads(),
                ms=1e3 * s, ms_min=1e3 * timing["min_s"], samples=timing["samples"],
                calls_per_sample=timing["calls_per_sample"], gflops=flops / s / 1e9, bytes=nbytes,
                gbs=nbytes / s / 1e9, pad=not case.symmetric, ms_nopad=None if nopad is None else 1e3 * nopad,
                backend=case.backend())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("train", "infer", "all"), default="all")
    parser.add_argument("--direction", choices=DIRECTIONS + ("all",), default="all")
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--min-sample-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jsonl", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument("--serve", action="store_true",
                        help="read 'run BATCH H W C STRIDE DIRECTION' lines from stdin, answer with JSON lines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    min_sample_s = args.min_sample_ms / 1e3

    if args.serve:
        def handle(words):
            if words[0] != "run" or len(words) != 7:
                raise ValueError("expected 'run BATCH H W C STRIDE DIRECTION'")
            b, h, w, c, s = (int(v) for v in words[1:6])
            return run(b, h, w, c, s, words[6], args.samples, min_sample_s)
        serve_loop(handle)
        return 0

    directions = DIRECTIONS if args.direction == "all" else (args.direction,)
    if not args.jsonl:
        print(f"PyTorch {torch.__version__} depthwise 3x3 (channels_last, groups=C) on MobileNetV2 alpha 1.0 shapes, "
              f"{torch.get_num_threads()} threads")
        print(f"{'shape (NxHxWxC stride)':28s} {'n':>3s} {'direction':10s} {'ms':>9s} {'ms min':>9s} {'GFLOP/s':>8s} "
              f"{'GB/s':>8s} {'ms nopad':>9s} backend")
    for shape in depthwise_shapes(args.config):
        for d in directions:
            r = run(shape["batch"], shape["h"], shape["w"], shape["c"], shape["stride"], d, args.samples,
                     min_sample_s, shape["config"], shape["layers"])
            if args.jsonl:
                print_json(r)
            else:
                label = f"{r['config']} {r['batch']}x{r['h']}x{r['w']}x{r['c']} s{r['stride']}"
                nopad = f"{r['ms_nopad']:9.4f}" if r["ms_nopad"] is not None else f"{'-':>9s}"
                print(f"{label:28s} {r['layers']:3d} {d:10s} {r['ms']:9.4f} {r['ms_min']:9.4f} {r['gflops']:8.1f} "
                      f"{r['gbs']:8.1f} {nopad} {r['backend']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
