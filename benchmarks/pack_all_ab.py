"""Issue 15: every kernel packed and held only packed (the default since 2026-11-29 20:30 UTC) against the
rule before it, in time and in memory (measurement only).

    python benchmarks/pack_all_ab.py [--repeats 21] [--batch 1 8]
    python benchmarks/pack_all_ab.py --save WEIGHTS.npz
    /usr/bin/time -f %M python benchmarks/pack_all_ab.py --rss WEIGHTS.npz [--verify]

The fast plan packs every kernel the AVX-512 microkernel
(``npxception/fast/direct.py``) can run, and the model then holds it only
packed (``npxception/params.py``). Before, only kernels of at most
:data:`OLD_PACK_MAX` floats were packed (Xception's entry flow, 2.3 MB of
copies beside the Keras arrays), the middle and exit flows ran on OpenBLAS.

* the A/B (default): one model (seeded random weights and BN statistics,
  299x299, with the top), one plan, its packed kernels and folded weights
  switched per call between the old rule (the larger kernels unpacked from
  the model for OpenBLAS) and every kernel packed; interleaved (rounds in a
  Williams order), 25 ms idle before each timed call, medians; then per step,
  from the plan's own timer.
* ``--rss WEIGHTS``: a fresh process loads WEIGHTS.npz (``--save`` writes one)
  and runs one batch-1 forward; peak RSS from ``VmHWM`` (and ``/usr/bin/time
  -f %M`` around it). ``--verify`` loads with the golden check (a forward pass
  inside ``load``, as ``npxception bench`` measures); without it the plan is
  built by the measured forward. For the figures before this change, run the
  script of that commit (7ff4b33) with ``--rss default``.

Results: docs/performance.md, "Issue 15: every kernel held only packed". On
the shared machine run it in a session of its own whose autogroup has a
higher priority (``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from direct_conv_ab import packed_only, run_packed  # noqa: E402

import npxception  # noqa: E402
from npxception import blas  # noqa: E402
from npxception.bench import interleaved  # noqa: E402
from npxception.fast import direct, fast_forward  # noqa: E402
from npxception.weights import save  # noqa: E402

# per-step rows always printed: a middle-flow step, and the exit flow's largest kernels
WATCH = ("block8_sepconv2", "block13_sepconv1", "block13_sepconv2", "block13_residual_conv",
         "block14_sepconv1", "block14_sepconv2")
OLD_PACK_MAX = 256 * 1024  # the rule before: floats of the largest kernel packed (the 1x1 256 -> 728)


def ab(batch, repeats, model):
    x = np.random.default_rng(1).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)
    fast_forward(model, x)
    plan = model._fast
    small = {label for label, panels in plan.packed.items()
             if panels.shape[1] * next(s.channels for s in plan.steps if s.label == label) <= OLD_PACK_MAX}
    variants = {"old rule": packed_only(plan, small), "all packed": (plan.packed, plan.folded)}
    steps = {k: {} for k in variants}

    def run(which, _x=None):
        return run_packed(plan, x, variants[which], steps[which])

    with blas.single_threaded():
        # rounds in a Williams order (bench's), so neither variant always runs first
        ms = {k: 1e3 * s for k, s in interleaved({k: (lambda _x, k=k: run(k)) for k in variants}, x, repeats,
                                                 gap=0.025).items()}
    want = run("old rule")
    # 728- to 2048-term float32 dot products summed in another order: a few ulp of values up to ~1e3
    assert np.allclose(run("all packed"), want, rtol=1e-4, atol=1e-6)
    print(f"batch {batch}: old rule {ms['old rule']:.1f} ms ({len(small)} kernels packed), all packed "
          f"{ms['all packed']:.1f} ms ({len(plan.packed)}): {ms['all packed'] / ms['old rule']:.3f}", flush=True)
    med = {k: {label: statistics.median(t) for label, t in steps[k].items()} for k in variants}
    flows = {"entry (block1-4)": range(1, 5), "middle (block5-12)": range(5, 13), "exit (block13-14)": range(13, 15)}
    for flow, blocks in flows.items():
        labels = [lb for lb in med["old rule"] if lb.startswith("block") and int(lb[5:].split("_")[0]) in blocks]
        a, b = (sum(med[k][lb] for lb in labels) for k in variants)
        print(f"  {flow}, sum of step medians: {a:.2f} -> {b:.2f} ms ({b / a:.3f})", flush=True)
    for label in med["old rule"]:
        a, b = med["old rule"][label], med["all packed"][label]
        if label in WATCH or abs(b - a) > 0.05 * max(a, b):
            print(f"  {label}: {a:.2f} -> {b:.2f} ms ({b / a:.3f})", flush=True)


def rss(path, verify):
    model = npxception.load(path, verify=verify)
    model(np.zeros((1, 299, 299, 3), np.float32))
    plan = model._fast
    packed = sum(v.nbytes for v in plan.packed.values())
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
    print(f"{'verify: ' if verify else ''}{len(plan.packed)} kernels packed, {packed / 2**20:.1f} MiB; "
          f"VmHWM {int(hwm.split()[1]) / 1024:.1f} MiB", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--save", metavar="WEIGHTS", help="write the seeded model with the top to this .npz, and stop")
    ap.add_argument("--rss", metavar="WEIGHTS", help="peak RSS of one batch-1 forward of this file's model")
    ap.add_argument("--verify", action="store_true", help="with --rss: load with the golden check")
    args = ap.parse_args()
    if not (direct.AVAILABLE and direct.microkernel_ready()):
        sys.exit("the AVX-512 microkernel is not usable here: nothing to measure")
    if args.save:
        save(npxception.Xception(include_top=True, seed=0), args.save)
        return
    if args.rss:
        rss(args.rss, args.verify)
        return
    model = npxception.Xception(include_top=True, seed=0)  # random weights and BN statistics, 299x299
    for batch in args.batch:
        ab(batch, args.repeats, model)


if __name__ == "__main__":
    main()
