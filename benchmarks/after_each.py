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
import collections
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
    import keras  # bench extra: builds the model every system runs

    from npxception.weights_tools import from_keras

    kmodel = keras.applications.Xception(weights=None, input_shape=(299, 299, 3))
    rng = np.random.default_rng(0)
    for layer in kmodel.layers:  # random kernels and BN statistics, as npxception bench sets them
        if layer.weights:
            layer.set_weights([bench._random_like(w, layer, rng) for w in layer.weights])
    model = from_keras(kmodel)
    peers, _ = bench._peers(kmodel, ("tf", "ort"), 299, (1,))
    x = np.random.default_rng(1).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
    systems = {"ours": model, **peers}
    names = list(systems)
    orders = bench.round_orders(len(names))
    for fn in systems.values():
        for _ in range(2):
            fn(x)
    after, every = collections.defaultdict(list), collections.defaultdict(list)
    prev = None
    for r in range(args.rounds):
        for i in orders[r % len(orders)]:
            name = names[i]
            time.sleep(bench.GAP_S)
            t = time.perf_counter()
            systems[name](x)
            dt = time.perf_counter() - t
            every[name].append(dt)
            if prev is not None:
                after[name, prev].append(dt)
            prev = name
    print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}, medians in ms")
    for name in names:
        cells = [f"after {p} {1e3 * statistics.median(after[name, p]):.1f} ({len(after[name, p])} calls)"
                 for p in names if (name, p) in after]
        print(f"{name}: all {1e3 * statistics.median(every[name]):.1f}; " + ", ".join(cells))


if __name__ == "__main__":
    main()
