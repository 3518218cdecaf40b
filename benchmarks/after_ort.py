"""Our batch-1 pass just after an ONNX Runtime run, and ONNX Runtime's pool thread's CPU time around it.

    python benchmarks/after_ort.py [--rounds 21] [--gap 0.02]

Same weights for both (``profile_vs_ort.build``: a Keras Xception with random
kernels and BN statistics, exported with tf2onnx, as ``npxception bench``
does; needs the test extras). In each round, ``--gap`` seconds idle before
each call: ONNX Runtime, then our pass three times; medians of each position.
Done twice, with ONNX Runtime's default thread pool (its workers spin after a
run) and with ``session.intra_op.allow_spinning`` = 0. Then the CPU time
(``/proc/self/task/*/stat``, clock ticks of 10 ms) that ONNX Runtime's own
threads use in the gap after its run and during our next pass. Run it in a
session of its own whose autogroup has a higher priority
(``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
Results: docs/performance.md, "Issue 15, 2026-11-30 06:30-07:05 UTC".
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from profile_vs_ort import build, ort_session  # beside this script, on sys.path as its folder


def _cpu_ms(tids):
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for t in tids:
        fields = open(f"/proc/self/task/{t}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return 1e3 * total / tick


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--gap", type=float, default=0.02, help="seconds idle before each call (the bench's 20 ms)")
    args = ap.parse_args()
    model, proto = build(299)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
    model(x)

    def ms(values):
        return f"{1e3 * statistics.median(values):.1f}"

    for spin in (True, False):
        s = ort_session(proto, spin=spin)
        name = s.get_inputs()[0].name
        calls = {"ort": lambda: s.run(None, {name: x}), "ours 1st": lambda: model(x),
                 "2nd": lambda: model(x), "3rd": lambda: model(x)}
        for fn in calls.values():
            fn()
        times = {k: [] for k in calls}
        for _ in range(args.rounds):
            for k, fn in calls.items():
                time.sleep(args.gap)
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        print(f"ONNX Runtime {'spinning' if spin else 'allow_spinning=0'}: "
              + ", ".join(f"{k} {ms(v)} ms" for k, v in times.items()), flush=True)
    before = set(os.listdir("/proc/self/task"))
    s = ort_session(proto, spin=True)
    name = s.get_inputs()[0].name
    s.run(None, {name: x})
    theirs = sorted(set(os.listdir("/proc/self/task")) - before)
    gap_ms, pass_ms = [], []
    for _ in range(args.rounds):
        s.run(None, {name: x})
        c0 = _cpu_ms(theirs)
        time.sleep(args.gap)
        c1 = _cpu_ms(theirs)
        model(x)
        c2 = _cpu_ms(theirs)
        gap_ms.append(c1 - c0)
        pass_ms.append(c2 - c1)
    print(f"ONNX Runtime's {len(theirs)} thread(s), CPU ms: in the {1e3 * args.gap:.0f} ms gap after its run "
          f"mean {statistics.mean(gap_ms):.1f}, during our next pass mean {statistics.mean(pass_ms):.1f}", flush=True)


if __name__ == "__main__":
    main()
