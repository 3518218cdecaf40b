"""Software prefetch of each next panel of weights (npxception/fast/direct.py, ``PREFETCH``) against none.

    python benchmarks/prefetch_ab.py [--repeats 31] [--batch 1 8] [--rounds 3] [--steps]

One model (seeded random weights and BN statistics, 299x299, with the top),
``model(x)`` with ``direct.PREFETCH`` switched per call, interleaved in rounds
in a Williams order (bench's), 20 ms idle before each timed call, medians.
``--steps`` adds the per-step profile of each (medians of the plan's timer) for
the steps that differ by more than 3%.

Results: docs/performance.md, "Issue 15, 2026-11-30 02:00-03:40 UTC". On the
shared machine run it in a session of its own whose autogroup has a higher
priority (``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np

import npxception
from npxception.bench import interleaved
from npxception.fast import direct


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", action="store_true")
    args = ap.parse_args()
    model = npxception.Xception(include_top=True, seed=0)
    for batch in args.batch:
        x = np.random.default_rng(1).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)

        def run(prefetch):
            direct.PREFETCH = prefetch
            return model(x)
        assert np.array_equal(run(False), run(True))  # a hint: the same bits
        for _ in range(args.rounds):
            ms = {k: 1e3 * v for k, v in interleaved({"off": lambda _x: run(False), "on": lambda _x: run(True)},
                                                     x, args.repeats, gap=0.02).items()}
            print(f"batch {batch}: no prefetch {ms['off']:.1f} ms, prefetch {ms['on']:.1f} ms: "
                  f"{ms['on'] / ms['off']:.3f}", flush=True)
        if args.steps:
            plan = model._fast
            samples = {k: collections.defaultdict(list) for k in (False, True)}
            for _ in range(args.repeats):
                for prefetch in (False, True):
                    direct.PREFETCH = prefetch
                    time.sleep(0.02)
                    plan.profile = {}
                    plan(x)
                    for step, s in plan.profile.items():
                        samples[prefetch][step].append(1e3 * s)
            plan.profile = None
            for step in samples[False]:
                a, b = statistics.median(samples[False][step]), statistics.median(samples[True][step])
                if abs(b / a - 1) > 0.03:
                    print(f"  {step}: {a:.3f} -> {b:.3f} ms")
    direct.PREFETCH = True


if __name__ == "__main__":
    main()
