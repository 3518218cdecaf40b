"""Where the time goes: npxception's fast plan against ONNX Runtime's own per-node profile, block by block.

    python benchmarks/profile_vs_ort.py [--size 299] [--repeats 9] [--gemm]

The same weights for both (a Keras Xception with random kernels and BN
statistics, converted with ``weights_tools.from_keras`` and exported with
tf2onnx, as ``npxception bench`` does). ONNX Runtime runs with
``SessionOptions.enable_profiling``; its per-node kernel times are summed per
Keras block (a node belongs to the block its tensors are named after; the
unnamed residual convolutions to the block whose pool they are added to).
Ours comes from the fast plan's own per-step timer (``FastPlan.profile``).
Medians over ``--repeats`` runs, batch 1, one process.

``--gemm`` adds the floor that OpenBLAS sets: every convolution's GEMM shape
timed alone with ``np.matmul`` (OpenBLAS on both cores), summed.

Needs the test extras (TensorFlow, tf2onnx, onnxruntime, onnx). Results and
their reading: docs/performance.md, "Against ONNX Runtime, block by block".
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import sys
import tempfile
import time

import numpy as np

import npxception


def build(size):
    """(npxception model, ONNX bytes), the same random weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    import tf2onnx

    from npxception.bench import _random_like
    from npxception.weights_tools import from_keras

    kmodel = keras.applications.Xception(weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(0)
    for layer in kmodel.layers:
        if layer.weights:
            layer.set_weights([_random_like(w, layer, rng) for w in layer.weights])
    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="input"),)
    fn = tf.function(lambda t: kmodel(t, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    return from_keras(kmodel), proto


def ort_session(proto, *, spin=True, profile_prefix=None):
    """ONNX Runtime on every core, as ``npxception bench`` runs it; ``spin=False`` turns its pool's spin-wait off,
    ``profile_prefix`` turns its per-node profile on."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def model_and_ort(with_ort, size=299):
    """(our model, ``run_ort(x)`` or None): with ONNX Runtime, both on the same random weights (:func:`build`);
    without, our seeded model alone, no framework imported."""
    if not with_ort:
        return npxception.Xception(include_top=True, seed=0, input_shape=(size, size, 3)), None
    model, proto = build(size)
    session = ort_session(proto)
    name = session.get_inputs()[0].name
    return model, lambda x: session.run(None, {name: x})


def block_of_tensors(proto) -> dict:
    """{ONNX tensor name: Keras block} for every node output the block can be read from."""
    named = re.compile(r"(block\d+)_")
    block, producer = {}, {}
    for node in proto.graph.node:
        for out in node.output:
            producer[out] = node
        found = next((named.search(t) for t in [node.name, *node.input, *node.output] if named.search(t)), None)
        if found:
            for out in node.output:
                block[out] = found.group(1)
    # an unnamed residual convolution: its Add's other input comes from blockN_pool
    for node in proto.graph.node:
        if node.op_type == "Add":
            blocks = {block.get(i) for i in node.input} - {None}
            if len(blocks) == 1:
                b = blocks.pop()
                for i in node.input:
                    src = producer.get(i)
                    while src is not None and i not in block:
                        block[i] = b
                        i = src.input[0] if src.input else None
                        src = producer.get(i)
                block[node.output[0]] = b
    return block


def ort_profile(proto, x, repeats) -> dict:
    """{Keras block: median ms} from ONNX Runtime's per-node profile."""
    blocks = block_of_tensors(proto)
    with tempfile.TemporaryDirectory() as tmp:
        session = ort_session(proto, profile_prefix=os.path.join(tmp, "ort"))
        name = session.get_inputs()[0].name
        for _ in range(2 + repeats):
            session.run(None, {name: x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"][: -len("_kernel_time")]].append(e["dur"] / 1e3)
    out = collections.Counter()
    for node, times in per_node.items():
        tensor = re.sub(r"_nchwc$", "", node)  # the NCHWc transformer names a node after its output
        b = blocks.get(tensor) or (re.search(r"(block\d+)_", node) or [None, None])[1]
        out[b or ("head" if "predictions" in node or "avg_pool" in node else "other")] += \
            statistics.median(times[2:] or times)
    return dict(out)


def our_profile(model, x, repeats) -> dict:
    """{Keras block: median ms} from the fast plan's per-step timer."""
    from npxception.fast import fast_forward

    fast_forward(model, x)
    plan = model._fast
    samples = collections.defaultdict(list)
    for _ in range(repeats):
        plan.profile = {}
        plan(x)
        for step, seconds in plan.profile.items():
            samples[step].append(1e3 * seconds)
    plan.profile = None
    out = collections.Counter()
    for step, times in samples.items():
        found = re.match(r"(block\d+)_", step)
        out[found.group(1) if found else step] += statistics.median(times)
    return dict(out)


def gemm_floor(model, x, repeats) -> tuple[float, float]:
    """(ms, GFLOP) of every convolution's GEMM alone, by np.matmul on OpenBLAS' own threads."""
    from npxception.fast import ConvBN, SepConvBN, fast_forward
    from npxception.ops.padding import window_geometry

    fast_forward(model, x)
    plan = model._fast
    side = {"input": x.shape[1]}
    total = flops = 0.0
    for s in plan.steps:
        if not hasattr(s, "output"):
            continue
        h = side[s.source]
        if isinstance(s, (ConvBN,)) or hasattr(s, "pool"):
            h, _ = window_geometry(h, s.kernel_size, s.strides, s.padding)
        side[s.output] = h
        if isinstance(s, ConvBN):
            k = plan.folded[s.conv][0]
        elif isinstance(s, SepConvBN):
            k = plan.folded[s.sepconv][1]
        else:
            continue
        a = np.random.default_rng(0).random((h * h, k.shape[0]), np.float32)
        c = np.empty((h * h, k.shape[1]), np.float32)
        np.matmul(a, k, out=c)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            np.matmul(a, k, out=c)
            times.append(time.perf_counter() - t)
        total += statistics.median(times)
        flops += 2.0 * a.shape[0] * a.shape[1] * k.shape[1]
    return 1e3 * total, flops / 1e9


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=299)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--gemm", action="store_true", help="also time every convolution's GEMM alone (OpenBLAS)")
    args = p.parse_args()
    model, proto = build(args.size)
    x = np.random.default_rng(1).uniform(-1, 1, (1, args.size, args.size, 3)).astype(np.float32)
    ort_ms = ort_profile(proto, x, args.repeats)
    ours_ms = our_profile(model, x, args.repeats)

    def order(k):
        return (0, int(k[5:])) if re.fullmatch(r"block\d+", k) else (1, k)

    print("| block | npxception (ms) | ONNX Runtime (ms) | difference (ms) |")
    print("|---|---|---|---|")
    for k in sorted(set(ours_ms) | set(ort_ms), key=order):
        a, b = ours_ms.get(k, 0.0), ort_ms.get(k, 0.0)
        print(f"| {k} | {a:.2f} | {b:.2f} | {a - b:+.2f} |")
    a, b = sum(ours_ms.values()), sum(ort_ms.values())
    print(f"| total | {a:.1f} | {b:.1f} | {a - b:+.1f} |")
    if args.gemm:
        ms, gflop = gemm_floor(model, x, args.repeats)
        print(f"\nGEMMs alone (np.matmul, OpenBLAS on {os.cpu_count()} threads): {ms:.1f} ms for {gflop:.2f} GFLOP "
              f"({gflop / ms * 1e3:.0f} GFLOP/s); ONNX Runtime's whole network: {b:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
