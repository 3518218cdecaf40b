"""A switch of the fast path A/B-tested under ``npxception bench``'s own conditions: both arms of our model,
TensorFlow and ONNX Runtime on the same weights, interleaved in Williams order, 20 ms idle before each call.

    python benchmarks/bench_conditions_ab.py MODULE NAME A B [--rounds 24] [--blocks 5] [--batch 1] [--no-tf]

e.g. ``npxception.fast.threads CLAIM True False``: before each call of an arm, ``MODULE.NAME`` is set to
that arm's value (a Python literal); ``MODULE:CLASS`` names a class attribute (``npxception.fast.run:FastPlan
HEAD_DENSE``). For each block of ``--rounds`` rounds, the median of each system, A/B and each arm's ratio
to ONNX Runtime, and each arm's median over its calls just after ONNX Runtime's (whose pool spins ~25 ms
after its run); at the end every block's A/B and their median. The arms' order in the rounds is swapped
every block: with one order the arm named first measured 3-7% faster than the same code named second
(docs/performance.md, "Issue 15, 2026-11-30 17:00-18:40 UTC"). The two arms' outputs are compared first
(they must be the same bits unless ``--not-same-bits``).
Run it in an autogroup of its own at -20 (``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python
...'``). Needs the bench extras. Results: docs/performance.md, "Issue 15, 2026-11-30 07:30-09:15 UTC".
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import statistics
import time

import numpy as np

from npxception import bench


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("module")
    ap.add_argument("name")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-tf", action="store_true", help="ONNX Runtime alone beside the two arms")
    ap.add_argument("--not-same-bits", action="store_true", help="the arms may differ: report by how much")
    ap.add_argument("--model-per-arm", action="store_true",
                    help="each arm its own model (same weights), its plan built with the arm's value: for a switch "
                         "read when the plan is built (npxception.fast.packing SLAB)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    path, _, cls = args.module.partition(":")
    module = importlib.import_module(path)
    if cls:
        module = getattr(module, cls)
    from npxception.weights_tools import from_keras

    kmodel = bench.random_keras_xception(299)  # bench extra: the model every system runs, as npxception bench sets it
    models = {"A": from_keras(kmodel), "B": from_keras(kmodel)} if args.model_per_arm else None
    model = from_keras(kmodel) if models is None else None
    peers, _ = bench._peers(kmodel, ("ort",) if args.no_tf else ("tf", "ort"), 299, (args.batch,))
    x = np.random.default_rng(args.batch).uniform(-1, 1, (args.batch, 299, 299, 3)).astype(np.float32)

    def arm(value, own):
        def call(x):
            setattr(module, args.name, value)
            return (own or model)(x)
        return call
    arms = {k: arm(ast.literal_eval(v), models and models[k]) for k, v in (("A", args.a), ("B", args.b))}
    bits = arms["B"](x).copy()
    a_out = arms["A"](x)
    if args.not_same_bits:
        print(f"largest difference of the arms' outputs: {np.abs(a_out - bits).max():.3g}")
    else:
        assert np.array_equal(a_out, bits), "the two arms' outputs differ"
    ratios = []
    for block in range(args.blocks):
        order = ("A", "B") if block % 2 == 0 else ("B", "A")
        systems = {k: arms[k] for k in order} | peers
        calls = bench.interleaved_calls(systems, x, args.rounds)
        times = {k: [t for n, _, t in calls if n == k] for k in systems}
        after = {k: [t for n, q, t in calls if n == k and q == "ort"] for k in ("A", "B")}
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        ratios.append(med["A"] / med["B"])
        print(f"{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f} | "
              + " ".join(f"{k} {v:.1f}" for k, v in med.items())
              + f" ms | A/B {med['A'] / med['B']:.3f}, A/ORT {med['A'] / med['ort']:.3f}, "
              f"B/ORT {med['B'] / med['ort']:.3f} | just after ORT: A {1e3 * statistics.median(after['A']):.1f}, "
              f"B {1e3 * statistics.median(after['B']):.1f} ms", flush=True)
    print(f"A/B each block: {' '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}, "
          f"{sum(r < 1 for r in ratios)} of {len(ratios)} below 1")


if __name__ == "__main__":
    main()
