"""The hand-off's waiting sides spinning before they sleep (npxception/fast/spin.py) against the locks alone.

    python benchmarks/handoff_spin_ab.py [--repeats 31] [--batch 1 8] [--rounds 2]
    python benchmarks/handoff_spin_ab.py --switches [--passes 20]

* the A/B (default): one model (seeded random weights and BN statistics,
  299x299, with the top), ``model(x)`` with ``threads.SPIN`` switched per
  call (the worker's linger with it), interleaved in rounds in a Williams
  order (bench's), 20 ms idle before each timed call, medians;
* ``--switches``: each thread's voluntary and involuntary context switches
  per pass (``/proc/self/task/*/status``), locks only, spinning without the
  linger, spinning with it. A voluntary switch is a sleep, and on this VM
  (``haltpoll.guest_halt_poll_ns=0``) a quiet vCPU that sleeps halts and must
  be woken.

Results: docs/performance.md, "Issue 15, 2026-11-29 22:50-00:30 UTC: the idle
gap". On the shared machine run it in a session of its own whose autogroup
has a higher priority (``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import npxception
from npxception.bench import interleaved
from npxception.fast import threads

LINGER = threads.LINGER_CYCLES


def _switches():
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/status") as f:
            d = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        out[tid] = (int(d["voluntary_ctxt_switches"]), int(d["nonvoluntary_ctxt_switches"]))
    return out


def _set(spin, linger):
    threads.SPIN, threads.LINGER_CYCLES = spin, linger


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--batch", type=int, nargs="+", default=[1])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--switches", action="store_true")
    ap.add_argument("--passes", type=int, default=20)
    args = ap.parse_args()
    model = npxception.Xception(include_top=True, seed=0)
    if args.switches:
        x = np.random.default_rng(1).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
        for _ in range(3):
            model(x)
        for name, spin, linger in [("locks", False, 0), ("spin", True, 0), ("spin+linger", True, LINGER)] * 2:
            _set(spin, linger)
            before, times = _switches(), []
            for _ in range(args.passes):
                time.sleep(0.02)
                t = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t)
            after = _switches()
            per = [((after[k][0] - before[k][0]) / args.passes, (after[k][1] - before[k][1]) / args.passes)
                   for k in after if k in before and after[k] != before[k]]
            print(f"{name}: median {1e3 * statistics.median(times):.1f} ms; per pass, each thread "
                  f"(voluntary, involuntary): {per}", flush=True)
        return
    for batch in args.batch:
        x = np.random.default_rng(1).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)

        def run(spin, linger, _x=None):
            _set(spin, linger)
            return model(x)
        for _ in range(args.rounds):
            ms = {k: 1e3 * v for k, v in interleaved({"locks": lambda _x: run(False, 0),
                                                      "spin": lambda _x: run(True, LINGER)},
                                                     x, args.repeats, gap=0.02).items()}
            print(f"batch {batch}: locks only {ms['locks']:.1f} ms, spinning {ms['spin']:.1f} ms: "
                  f"{ms['spin'] / ms['locks']:.3f}", flush=True)
    _set(True, LINGER)


if __name__ == "__main__":
    main()
