"""The fast plan's head: its dense layers by NumPy's matmul (``FastPlan.HEAD_DENSE = "fast"``) against the
dense op's reference einsum, which does not use BLAS.

    python benchmarks/head_dense_ab.py [--repeats 21] [--batch 1 8] [--rounds 3]

One model (seeded random weights and BN statistics, 299x299, with the top,
1000 classes), ``model(x)`` switched per call, interleaved in rounds in a
Williams order (bench's), 20 ms idle before each timed call, medians; and the
head step alone (the plan's per-step timer), medians.

Results: docs/performance.md, "Issue 15, 2026-11-30 02:00-03:40 UTC". On the
shared machine run it in a session of its own whose autogroup has a higher
priority (``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import npxception
from npxception.bench import interleaved
from npxception.fast.run import FastPlan


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    model = npxception.Xception(include_top=True, seed=0)
    for batch in args.batch:
        x = np.random.default_rng(1).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)

        def run(impl):
            FastPlan.HEAD_DENSE = impl
            return model(x)
        a, b = run("reference"), run("fast")
        print(f"batch {batch}: largest difference of the softmax outputs {np.abs(a - b).max():.2g}")
        for _ in range(args.rounds):
            ms = {k: 1e3 * v for k, v in interleaved({"einsum": lambda _x: run("reference"),
                                                      "matmul": lambda _x: run("fast")},
                                                     x, args.repeats, gap=0.02).items()}
            print(f"batch {batch}: einsum {ms['einsum']:.1f} ms, matmul {ms['matmul']:.1f} ms: "
                  f"{ms['matmul'] / ms['einsum']:.3f}", flush=True)
        plan = model._fast
        head = {"reference": [], "fast": []}
        for _ in range(args.repeats):
            for impl in head:
                FastPlan.HEAD_DENSE = impl
                time.sleep(0.02)
                plan.profile = {}
                plan(x)
                head[impl].append(1e3 * plan.profile["head"])
        plan.profile = None
        print(f"batch {batch}: the head step, einsum {statistics.median(head['reference']):.2f} ms, "
              f"matmul {statistics.median(head['fast']):.2f} ms", flush=True)
    FastPlan.HEAD_DENSE = "fast"


if __name__ == "__main__":
    main()
