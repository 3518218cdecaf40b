"""One middle-flow separable convolution step against the bare GEMM it contains, and ONNX Runtime's kernels.

    python benchmarks/step_vs_gemm.py [--repeats 300]

The shape is the middle flow's: a 19x19x728 map, a 728x728 pointwise kernel
(361x728x728 GEMM). Timed, medians, weights hot in cache:

* our fused step (``sep_conv_fused``: depthwise -> GEMM -> epilogue on our two
  threads), and one thread's share of it alone;
* NumPy's OpenBLAS GEMM of all 361 rows on its own two threads, and of one
  thread's rows on one thread;
* ONNX Runtime's MatMul and 1x1 Conv nodes on the same shape (2 intra-op threads),
  if onnxruntime and onnx are installed.

Results and their reading: docs/performance.md, "Re-measured 2026-11-29, 05:35 UTC".
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from npxception import blas
from npxception.fast.fused import NOT_PACKED, _sep_conv_blas, sep_conv_fused
from npxception.fast.kernels import bind_symbols

H, C = 19, 728


def median_ms(f, repeats):
    for _ in range(10):
        f()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def ort_ms(repeats):
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return {}
    rng = np.random.default_rng(1)
    out = {}
    cases = {
        "ONNX Runtime MatMul": (helper.make_node("MatMul", ["x", "W"], ["y"]), [H * H, C], [H * H, C],
                                rng.random((C, C), dtype=np.float32)),
        "ONNX Runtime 1x1 Conv": (helper.make_node("Conv", ["x", "W"], ["y"]), [1, C, H, H], [1, C, H, H],
                                  rng.random((C, C, 1, 1), dtype=np.float32)),
    }
    for name, (node, xs, ys, w) in cases.items():
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ys)],
                                  [numpy_helper.from_array(w, "W")])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(proto, so, providers=["CPUExecutionProvider"])
        x = rng.random(xs, dtype=np.float32)
        out[name] = median_ms(lambda: sess.run(None, {"x": x}), repeats)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=300)
    repeats = ap.parse_args().repeats
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, H, H, C)).astype(np.float32)
    dw = rng.standard_normal((3, 3, C)).astype(np.float32)
    pw = (rng.standard_normal((C, C)) / 30).astype(np.float32)
    scale, shift = np.ones(C, np.float32), np.zeros(C, np.float32)
    nt, tile_rows = 2, 10  # what FastPlan.sep_bn chooses for this map on 2 threads
    out = np.empty((H * H, C), np.float32)
    scratch = np.empty((nt, tile_rows * H, C), np.float32)
    saved = np.zeros((nt, 3, H, C), np.float32)
    none = np.empty((0, C), np.float32)
    zero = np.zeros((H, C), np.float32)
    a = rng.standard_normal((H * H, C)).astype(np.float32)
    c = np.empty_like(a)
    bind_symbols(np.dtype(np.float32))
    flops = 2 * H * H * C * C
    rows = {}
    with blas.single_threaded():
        rows["our fused step, 2 threads"] = median_ms(
            lambda: sep_conv_fused(x, dw, pw, scale, shift, True, False, out, none, scratch, tile_rows, saved),
            repeats)
        rows["one thread's share alone (190 rows)"] = median_ms(
            lambda: _sep_conv_blas(0, x, dw, pw, scale, shift, True, False, out, none, scratch, tile_rows,
                                   saved, zero, NOT_PACKED, np.arange(0, dtype=np.int64), True), repeats)
        rows["OpenBLAS GEMM of 190 rows, 1 thread"] = median_ms(lambda: np.matmul(a[:190], pw, out=c[:190]),
                                                                  repeats)
    rows["OpenBLAS GEMM of 361 rows, its 2 threads"] = median_ms(lambda: np.matmul(a, pw, out=c), repeats)
    rows.update(ort_ms(min(repeats, 100)))
    print(f"| {H}x{H}x{C} -> {C} | ms (median) | GFLOP/s of the rows it computes |")
    print("|---|---|---|")
    for name, ms in rows.items():
        rate = flops / (ms * 1e-3) / 1e9 if "190" not in name else flops / 2 / (ms * 1e-3) / 1e9
        print(f"| {name} | {ms:.3f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
