"""Issue 15's last changes, whole network: the output panels shared between the threads, and float64 on the microkernel.

    python benchmarks/panels_and_f64_ab.py [--batch 1 8] [--repeats 31] [--rounds 3] [--ort]
    python benchmarks/panels_and_f64_ab.py --f64 [--batch 8] [--repeats 9] [--rounds 2]

Default: one model (seeded random weights and BN statistics, 299x299, with
the top), ``model(x)`` with ``direct.shares_panels`` (both the direct and the
separable convolutions') switched per call between "rows" (never) and
"panels" (the plan's rule). ``--ort`` adds ONNX Runtime on the same weights
(a Keras Xception exported with tf2onnx, as ``npxception bench`` does; needs
the test extras), so that its thread pool runs between our passes.

``--f64``: float32, float64 on im2col + OpenBLAS (a plan built as on a CPU
without AVX-512) and float64 on the microkernel, three models of the same
weights.

Interleaved in rounds in a Williams order (``bench.interleaved``), 20 ms idle
before each timed call, medians. Results: docs/performance.md, "Issue 15,
2026-11-30 04:50-06:30 UTC". On the shared machine run it in a session of its
own whose autogroup has a higher priority
(``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
"""

from __future__ import annotations

import argparse

import numpy as np
from profile_vs_ort import model_and_ort  # beside this script, on sys.path as its folder

import npxception
from npxception.bench import interleaved
from npxception.fast import direct, run
from npxception.fast.run import FastPlan


def panels(batch, repeats, rounds, with_ort):
    model, run_ort = model_and_ort(with_ort)
    x = np.random.default_rng(1).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)
    rule = direct.shares_panels

    def ours(on):
        direct.shares_panels = run.shares_panels = rule if on else (lambda *args: False)
        return model(x)

    assert np.array_equal(ours(False).copy(), ours(True).copy())  # the same sums in the same order: the same bits
    systems = {"rows": lambda _x: ours(False), "panels": lambda _x: ours(True)}
    if with_ort:
        systems["ort"] = lambda _x: run_ort(x)
    try:
        for _ in range(rounds):
            ms = {k: 1e3 * v for k, v in interleaved(systems, x, repeats).items()}
            line = (f"batch {batch}: rows {ms['rows']:.1f} ms, panels {ms['panels']:.1f} ms: "
                    f"{ms['panels'] / ms['rows']:.3f}")
            if with_ort:
                line += (f"; ort {ms['ort']:.1f} ms, ours/ort {ms['rows'] / ms['ort']:.2f} -> "
                         f"{ms['panels'] / ms['ort']:.2f}")
            print(line, flush=True)
    finally:
        direct.shares_panels = run.shares_panels = rule


def float64(batch, repeats, rounds):
    x32 = np.random.default_rng(1).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)
    x64 = x32.astype(np.float64)
    f32 = npxception.Xception(include_top=True, seed=0)
    micro = npxception.Xception(include_top=True, seed=0, dtype="float64")
    openblas = npxception.Xception(include_top=True, seed=0, dtype="float64")
    available = direct.AVAILABLE
    direct.AVAILABLE = False  # this plan packs nothing, as on a CPU without AVX-512
    try:
        openblas._fast = FastPlan(openblas)
    finally:
        direct.AVAILABLE = available
    a, b = micro(x64), openblas(x64)
    print(f"float64, microkernel against OpenBLAS: {np.abs(a - b).max() / np.abs(b).max():.1e} of max|x|", flush=True)
    for _ in range(rounds):
        ms = {k: 1e3 * v for k, v in interleaved({"f32": lambda _x: f32(x32), "openblas": lambda _x: openblas(x64),
                                                  "micro": lambda _x: micro(x64)}, None, repeats).items()}
        print(f"batch {batch}: float32 {ms['f32']:.1f} ms; float64 on OpenBLAS {ms['openblas']:.1f} "
              f"({ms['openblas'] / ms['f32']:.2f}x), on the microkernel {ms['micro']:.1f} "
              f"({ms['micro'] / ms['f32']:.2f}x): {ms['micro'] / ms['openblas']:.3f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ort", action="store_true", help="ONNX Runtime on the same weights in the loop")
    ap.add_argument("--f64", action="store_true", help="float64 on the microkernel against OpenBLAS")
    args = ap.parse_args()
    for batch in args.batch:
        if args.f64:
            float64(batch, args.repeats, args.rounds)
        else:
            panels(batch, args.repeats, args.rounds, args.ort)


if __name__ == "__main__":
    main()
