"""The worker's linger (``threads.LINGER_CYCLES``) switched per call, whole network, on a quiet host.

    python benchmarks/linger_ab.py [--batch 1] [--lingers 50000 10000 5000] [--repeats 31] [--rounds 3] [--ort]

A hand-off with an empty share costs about the linger itself (~20 us at
50 000 cycles, ~6 us at 5 000, quiet: the worker waits that long after seeing
its job before it returns to Python), and a pass has ~64 of them at batch 1.
One model (seeded random weights and BN statistics, 299x299, with the top),
``model(x)`` with the linger set before each call (the worker reads it anew for
each job); ``--ort`` adds ONNX Runtime on the same weights (needs the test
extras). Interleaved in rounds in a Williams order (``bench.interleaved``),
20 ms idle before each timed call, medians. Run it in a session of its own
whose autogroup has a higher priority
(``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
Results: docs/performance.md, "Issue 15, 2026-11-30 06:30-07:05 UTC".
"""

from __future__ import annotations

import argparse

import numpy as np
from profile_vs_ort import model_and_ort  # beside this script, on sys.path as its folder

from npxception.bench import interleaved
from npxception.fast import threads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lingers", type=int, nargs="+", default=[50_000, 10_000, 5_000])
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ort", action="store_true", help="ONNX Runtime on the same weights in the loop")
    args = ap.parse_args()
    model, run_ort = model_and_ort(args.ort)
    x = np.random.default_rng(1).uniform(-1, 1, (args.batch, 299, 299, 3)).astype(np.float32)
    kept = threads.LINGER_CYCLES

    def ours(linger):
        threads.LINGER_CYCLES = linger
        return model(x)

    systems = {f"linger {lg}": (lambda _x, lg=lg: ours(lg)) for lg in args.lingers}
    if args.ort:
        systems["ort"] = lambda _x: run_ort(x)
    try:
        first = systems[f"linger {args.lingers[0]}"](x).copy()
        for lg in args.lingers[1:]:
            assert np.array_equal(first, ours(lg))  # the linger changes when a share starts, not what it computes
        for _ in range(args.rounds):
            ms = {k: 1e3 * v for k, v in interleaved(systems, x, args.repeats).items()}
            base = ms[f"linger {args.lingers[0]}"]
            line = f"batch {args.batch}: " + ", ".join(
                f"{k} {v:.1f} ms ({v / base:.3f})" for k, v in ms.items() if k != "ort")
            if args.ort:
                line += "; ort {:.1f} ms, ours/ort ".format(ms["ort"]) + " / ".join(
                    f"{v / ms['ort']:.2f}" for k, v in ms.items() if k != "ort")
            print(line, flush=True)
    finally:
        threads.LINGER_CYCLES = kept


if __name__ == "__main__":
    main()
