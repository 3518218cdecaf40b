"""How long ``compare`` takes on a full dump, against a plain forward pass of both sides.

    python benchmarks/bench_compare.py [--size 299] [--repeats 5] [--epsilon 1e-5]

The other side is a Keras Xception (random weights, random BN statistics) that
dumps every layer to an .npz, the way a porter would. Timed, interleaved after
a warm-up, medians reported:

* ``ours``: ``model(x)``, npxception's plain (fused) forward pass;
* ``keras``: ``kmodel(x, training=False)``;
* ``compare``: ``compare(model, "dump.npz", x)``: loading the dump, our forward
  pass capturing every layer, our every layer on their inputs (local error),
  the errors and the diagnosis of every source (none here: the dump is right).

The acceptance is ``compare <= 3 * (ours + keras)``. Needs the test extras.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=299)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epsilon", type=float, default=None,
                   help="plant this BN epsilon in every Keras BN (1e-5: 40 sources to diagnose)")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from npxception.compare import compare
    from npxception.weights_tools import from_keras

    kmodel = keras.applications.Xception(weights=None, input_shape=(args.size, args.size, 3),
                                         include_top=args.size == 299)
    rng = np.random.default_rng(0)
    for layer in kmodel.layers:  # BN statistics away from the identity, as in every test model
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.1, b.shape),
                               rng.normal(0, 0.5, m.shape), rng.uniform(0.5, 2, v.shape)])
    model = from_keras(kmodel)
    if args.epsilon is not None:  # after the conversion: our model keeps Keras' 1e-3
        for layer in kmodel.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.epsilon = args.epsilon
    x = rng.uniform(-1, 1, (1, args.size, args.size, 3)).astype(np.float32)
    names = model.source_layer_names
    order = [n for n in model.layer_names if n in names]
    probe = keras.Model(kmodel.inputs, [kmodel.get_layer(names[n]).output for n in order])
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "dump.npz")
        np.savez(dump, **{n: np.asarray(v) for n, v in zip(order, probe(x, training=False))})
        size_mb = os.path.getsize(dump) / 1e6
        runs = {
            "ours": lambda: model(x),
            "keras": lambda: kmodel(x, training=False),
            "compare": lambda: compare(model, dump, x),
        }
        for f in runs.values():  # warm-up: JIT compiles, TF traces
            f()
        times = {k: [] for k in runs}
        for _ in range(args.repeats):
            for k, f in runs.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        report = compare(model, dump, x)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["compare"] / (med["ours"] + med["keras"])
    print(f"input {args.size}x{args.size}, dump {size_mb:.0f} MB, {len(report.rows)} layers, "
          f"{len(report.sources)} sources; medians of {args.repeats}:")
    for k, v in med.items():
        print(f"  {k:8s} {v * 1000:8.0f} ms   (all: {', '.join(f'{t * 1000:.0f}' for t in times[k])})")
    print(f"compare / (ours + keras) = {ratio:.2f}  (acceptance: <= 3)")
    return 0 if ratio <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
