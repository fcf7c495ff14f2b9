#!/usr/bin/python3
"""The arithmetic of one MobileNetV2 + Dense training step, by layer type, and what a target
speed-up leaves for the memory-bound layers.

    /usr/bin/python3 benchmarks/step_flops.py [--alpha 1.0] [--size 96] [--batch 32]
        [--peak-gflops P --torch-ms T --target 2.0]

FLOPs count a multiply-add as 2. A training step runs each convolution three times: forward,
input gradient and weight gradient (the stem's input gradient is not needed, but it is counted:
it is <1% of the step). With --peak-gflops (the machine's FP32 FMA peak on all threads, as
bench_pointwise prints it with --threads N) it prints the time of the 1x1 convolutions at that
peak, and with --torch-ms (PyTorch's step on the same machine, compare_mobilenet.py) how many ms
a step may take for --target, and so how many are left for everything that is not a 1x1
convolution (depthwise, BatchNorm, activations, stem, pooling, loss, optimizer) even if the 1x1
convolutions ran at the peak."""

import argparse

from bench_common import MOBILENET_V2_TABLE, make_divisible


def step_flops(alpha, size, batch, classes=7):
    """Forward FLOPs by layer type: 1x1 convolutions, depthwise 3x3, stem 3x3, dense."""
    h = (size + 1) // 2  # stem: 3x3, stride 2, SAME
    c = make_divisible(32 * alpha)
    flops = {"1x1": 0, "depthwise": 0, "stem": 2 * batch * h * h * 27 * c, "dense": 0}
    for t, channels, n, s in MOBILENET_V2_TABLE:
        out_c = make_divisible(int(channels * alpha))
        for i in range(n):
            stride = s if i == 0 else 1
            e = c * t
            if t != 1:
                flops["1x1"] += 2 * batch * h * h * c * e
            h = (h + stride - 1) // stride
            flops["depthwise"] += 2 * batch * h * h * 9 * e
            flops["1x1"] += 2 * batch * h * h * e * out_c
            c = out_c
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280  # Keras keeps 1280 for alpha <= 1
    flops["1x1"] += 2 * batch * h * h * c * last
    flops["dense"] = 2 * batch * last * classes
    return flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--peak-gflops", type=float, help="FP32 FMA peak of all threads, GFLOP/s")
    parser.add_argument("--torch-ms", type=float, help="PyTorch's training step on the same machine, ms")
    parser.add_argument("--target", type=float, default=2.0, help="speed-up over --torch-ms (2.0)")
    args = parser.parse_args()

    forward = step_flops(args.alpha, args.size, args.batch)
    print(f"MobileNetV2 alpha {args.alpha}, {args.size}x{args.size}, batch {args.batch}: GFLOP per training step")
    total = 0.0
    for kind, value in forward.items():
        step = 3 * value / 1e9
        total += step
        print(f"  {kind:10s} {step:8.3f}  (forward {value / 1e9:.3f})")
    print(f"  {'total':10s} {total:8.3f}")
    if args.peak_gflops:
        pointwise_ms = 3 * forward["1x1"] / 1e9 / args.peak_gflops * 1e3
        print(f"1x1 convolutions at {args.peak_gflops:.1f} GFLOP/s: {pointwise_ms:.1f} ms per step")
        if args.torch_ms:
            budget = args.torch_ms / args.target
            print(f"{args.target}x PyTorch's {args.torch_ms:.1f} ms: a step of {budget:.1f} ms, which leaves "
                  f"{budget - pointwise_ms:.1f} ms for everything else with the 1x1 convolutions at the peak")


if __name__ == "__main__":
    main()
