"""Each system's batch-1 time filed under the system that ran just before it, under ``npxception bench``'s conditions.

    python benchmarks/after_each.py [--rounds 48]

The bench's model and peers (a Keras Xception with random kernels and BN
statistics, converted with ``weights_tools.from_keras``; TensorFlow and ONNX
Runtime on the same weights), one call of each system per round in the bench's
Williams order, ``bench.GAP_S`` idle before each call; for each system the median
of all its calls and of its calls after each predecessor. Needs the bench extras.
Run it in an autogroup of its own at -20 (``setsid bash -c 'echo -20 >
/proc/self/autogroup; exec python ...'``). Results: docs/performance.md,
"Issue 15, 2026-11-30 17:00-18:40 UTC" (ours just after ONNX Runtime 1.7x the
others at load 8).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from npxception import bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=48)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from npxception.weights_tools import from_keras

    kmodel = bench.random_keras_xception(299)  # bench extra: the model every system runs, as npxception bench sets it
    model = from_keras(kmodel)
    peers, _ = bench._peers(kmodel, ("tf", "ort"), 299, (1,))
    x = np.random.default_rng(1).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
    systems = {"ours": model, **peers}
    calls = bench.interleaved_calls(systems, x, args.rounds)
    print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}, medians in ms")
    for name in systems:
        every = [t for n, _, t in calls if n == name]
        cells = []
        for p in systems:
            after = [t for n, q, t in calls if n == name and q == p]
            if after:
                cells.append(f"after {p} {1e3 * statistics.median(after):.1f} ({len(after)} calls)")
        print(f"{name}: all {1e3 * statistics.median(every):.1f}; " + ", ".join(cells))


if __name__ == "__main__":
    main()
