"""Issue 15: the register-tiled direct convolution against im2col + OpenBLAS, per convolution step.

    python benchmarks/direct_conv_ab.py [--repeats 21] [--network 1 8]

Every convolution step of Xception at 299x299, batch 1 (``block1_conv1``,
``block1_conv2`` and the four 1x1 stride-2 residual convolutions), with random
weights and folded BN + ReLU: the fast path's im2col + single-threaded OpenBLAS
GEMM per thread (``conv_fused``) against the direct convolution whose
accumulators stay in AVX-512 registers (``npxception/fast/direct.py``), on the
same data, alternating, 25 ms idle before each call, medians. Results:
docs/performance.md, "Issue 15, 2026-11-29 17:10-18:50 UTC: the register-tiled microkernel".

On the shared machine run it in a session of its own whose autogroup has a
higher priority (``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from entry_and_split_ab import interleaved  # noqa: E402

from npxception import blas  # noqa: E402
from npxception.fast import ConvBN, direct, packing  # noqa: E402
from npxception.fast.fused import conv_fused, conv_fused_reference  # noqa: E402
from npxception.fast.run import FastPlan  # noqa: E402
from npxception.ops.padding import window_geometry  # noqa: E402

STEPS = {  # name: (input side, C_in, C_out, kernel, stride); every one VALID or 1x1, so unpadded
    "block1_conv1": (299, 3, 32, 3, 2),
    "block1_conv2": (149, 32, 64, 3, 1),
    "block2_residual (1x1/2)": (147, 64, 128, 1, 2),
    "block3_residual (1x1/2)": (74, 128, 256, 1, 2),
    "block4_residual (1x1/2)": (37, 256, 728, 1, 2),
    "block13_residual (1x1/2)": (19, 728, 1024, 1, 2),
}


def one_step(name, h, c, c_out, kh, stride, repeats):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, h, h, c)).astype(np.float32)
    kernel = (rng.standard_normal((kh * kh * c, c_out)) / np.sqrt(kh * kh * c)).astype(np.float32)
    scale = (rng.random(c_out) + 0.5).astype(np.float32)
    shift = rng.standard_normal(c_out).astype(np.float32)
    ho, pad_t = window_geometry(h, kh, stride, "valid" if kh > 1 else "same")
    wo, pad_l = window_geometry(h, kh, stride, "valid" if kh > 1 else "same")
    assert pad_t == pad_l == 0
    nt = numba.get_num_threads()
    rows = max(1, min(-(-ho // nt), FastPlan.COLS_ELEMS // (wo * kh * kh * c)))  # as FastPlan.conv_bn
    cols = np.empty((nt, rows * wo, kh * kh * c), np.float32)
    packed = packing.pack_kernel(kernel)
    outs = {k: np.empty((ho * wo, c_out), np.float32) for k in ("im2col + GEMM", "direct")}
    cases = {
        "im2col + GEMM": lambda: conv_fused(x, kernel, kh, stride, 0, 0, ho, wo, scale, shift, True,
                                            outs["im2col + GEMM"], cols, rows),
        "direct": lambda: direct.conv_direct(x, packed, kh, stride, ho, wo, scale, shift, True, outs["direct"],
                                             nt),
    }
    with blas.single_threaded():
        ms = interleaved(cases, repeats)
    want = conv_fused_reference(x, kernel, kh, stride, 0, 0, ho, wo, scale, shift, True)
    for k, out in outs.items():
        assert np.allclose(out, want, rtol=1e-4, atol=1e-4), k
    gflop = 2e-9 * ho * wo * kh * kh * c * c_out
    print(f"{name} ({h}x{h}x{c}, {kh}x{kh}/{stride} -> {c_out}): "
          + ", ".join(f"{k} {t:.3f} ms ({gflop / t * 1e3:.0f} GFLOP/s)" for k, t in ms.items())
          + f"; direct/im2col {ms['direct'] / ms['im2col + GEMM']:.2f}", flush=True)


def packed_only(plan, labels):
    """(packed, folded) for ``plan`` with only the kernels of the steps ``labels`` packed, the others unpacked
    from the model's weights (which hold every kernel the plan packed only packed) for OpenBLAS."""
    packed = {k: v for k, v in plan.packed.items() if k in labels}
    folded = dict(plan.folded)
    p = plan.model_params
    for step in plan.steps:
        if step.label not in plan.packed or step.label in labels:
            continue
        if isinstance(step, ConvBN):
            k = p[f"{step.conv}/kernel"]
            folded[step.label] = (k.reshape(-1, k.shape[-1]), *folded[step.label][1:])
        else:
            dw, _, scale, shift = folded[step.label]
            folded[step.label] = (dw, p[f"{step.sepconv}/pointwise_kernel"][0, 0], scale, shift)
    return packed, folded


def run_packed(plan, x, variant, steps):
    """plan(x) with ``variant``, a :func:`packed_only` (packed, folded), as the plan's kernels; each step's ms
    appended to ``steps[label]``."""
    plan.packed, plan.folded = variant
    plan.profile = {}
    y = plan(x)
    for label, seconds in plan.profile.items():
        steps.setdefault(label, []).append(1e3 * seconds)
    plan.profile = None
    return y


def network(batch, repeats, per_step=True):
    """Whole forward passes, one plan: packed kernels for none, the convolutions, or those and the pointwise."""
    import npxception
    from npxception.fast import fast_forward

    model = npxception.Xception(include_top=True, seed=0)  # random weights and BN statistics, 299x299
    x = np.random.default_rng(1).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)
    fast_forward(model, x)
    plan = model._fast
    convs = {s.conv for s in plan.steps if isinstance(s, ConvBN)}
    variants = {"OpenBLAS": packed_only(plan, set()), "direct convs": packed_only(plan, convs),
                "direct convs + every pointwise": (plan.packed, plan.folded)}

    steps = {k: {} for k in variants}  # per-step times from the plan's own timer

    def run(which):
        return run_packed(plan, x, variants[which], steps[which])

    with blas.single_threaded():
        ms = interleaved({k: (lambda k=k: run(k)) for k in variants}, repeats)
    want = run("OpenBLAS")
    for k in variants:
        assert np.allclose(run(k), want, rtol=1e-4, atol=1e-6), k
    print(f"network, batch {batch}: " + ", ".join(f"{k} {t:.1f} ms ({t / ms['OpenBLAS']:.3f})"
                                                  for k, t in ms.items()), flush=True)
    if per_step:
        base = {label: statistics.median(t) for label, t in steps["OpenBLAS"].items()}
        for label in base:
            row = [statistics.median(steps[k][label]) for k in variants]
            if max(row) - min(row) > 0.05 * max(row):
                print(f"  {label}: " + " / ".join(f"{v:.2f}" for v in row) + " ms", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--network", type=int, nargs="*", metavar="BATCH",
                    help="time whole forward passes at these batch sizes instead of the steps")
    args = ap.parse_args()
    if not direct.AVAILABLE:
        sys.exit("this CPU has no AVX-512: the direct convolution is not used here")
    if args.network:
        for batch in args.network:
            network(batch, args.repeats)
        return
    for name, shape in STEPS.items():
        one_step(name, *shape, args.repeats)


if __name__ == "__main__":
    main()
