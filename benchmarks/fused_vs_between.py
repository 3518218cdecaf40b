"""The fast plan's two ways to run a convolution step, interleaved on one model.

    python benchmarks/fused_vs_between.py [--repeats 15]

* fused (the default): each of our threads runs its rows through depthwise,
  a single-threaded OpenBLAS GEMM and the epilogue (npxception/fast/fused.py);
* between kernels (``NPXCEPTION_GEMM=numpy``): Numba kernels around
  ``np.matmul`` on OpenBLAS' own threads.

Same weights (seeded random, with the top), batch 1, 299x299, 30 ms idle before
each timed call, medians. Results: docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import npxception
from npxception.fast.run import FastPlan


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    model = npxception.Xception(include_top=True)
    x = np.random.default_rng(0).standard_normal((1, 299, 299, 3)).astype(np.float32)
    plans = {"fused": FastPlan(model), "between kernels": FastPlan(model)}
    plans["between kernels"].fused = False
    times = {name: [] for name in plans}
    for _ in range(2):  # warm-up: compile, fill the arenas
        for plan in plans.values():
            plan(x)
    for _ in range(args.repeats):
        for name, plan in plans.items():
            time.sleep(0.03)
            t = time.perf_counter()
            plan(x)
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    print("  ".join(f"{name} {ms:.1f} ms" for name, ms in med.items()),
          f" between/fused {med['between kernels'] / med['fused']:.2f}")


if __name__ == "__main__":
    main()
