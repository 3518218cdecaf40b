"""Issue 15: what packing EVERY kernel for the microkernel would buy, in time and in memory (measurement only).

    python benchmarks/pack_all_ab.py [--repeats 21] [--batch 1 8]
    python benchmarks/pack_all_ab.py --save WEIGHTS.npz
    /usr/bin/time -f %M python benchmarks/pack_all_ab.py --rss {default,all,only-packed} WEIGHTS.npz [--verify] [--trim]

The fast plan packs a kernel for the AVX-512 microkernel
(``npxception/fast/direct.py``) only when it holds at most ``direct.PACK_MAX``
floats: Xception's entry flow, 2.3 MB of copies. The larger pointwise kernels
(middle and exit flows) stay on OpenBLAS, because a second, packed copy of
them costs ~85 MB against the 300 MB budget. Nothing here changes that
default: this script packs the rest itself, with ``direct.pack_kernel``.

* the A/B (default): one model (seeded random weights and BN statistics,
  299x299, with the top), one plan, its ``packed`` dict switched per call
  between the default plan's and every kernel packed; interleaved (rounds in
  a Williams order), 25 ms idle before each timed call, medians; then per
  step, from the plan's own timer.
* ``--rss MODE``: a fresh process loads WEIGHTS.npz (``--save`` writes one) and
  runs one batch-1 forward; peak RSS from ``VmHWM`` (and ``/usr/bin/time -f %M``
  around it). ``default``: the plan as built. ``all``: ``direct.PACK_MAX``
  raised past the largest kernel before the plan is built, so every kernel is
  packed beside its unpacked array. ``only-packed``: a prototype of keeping the
  large kernels only packed: the default plan, then each remaining kernel
  packed and its unpacked array dropped from the model (so the reference path
  of that model no longer works), one kernel at a time. ``--verify`` loads
  with the golden check (a forward pass inside ``load``, as ``npxception
  bench`` measures); without it the plan is built by the measured forward.
  ``--trim``: ``malloc_trim(0)`` before the forward, so that the holes the
  dropped arrays leave in glibc's heap are returned to the system, as a
  loader that packed each kernel as it read it would never have made them.

Results: docs/performance.md, "Issue 15, 2026-11-29 17:10-18:50 UTC: the
register-tiled microkernel". On the shared machine run it in a session of its
own whose autogroup has a higher priority
(``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from direct_conv_ab import run_packed  # noqa: E402

import npxception  # noqa: E402
from npxception import blas  # noqa: E402
from npxception.bench import interleaved  # noqa: E402
from npxception.fast import ConvBN, SepConvBN, direct, fast_forward  # noqa: E402
from npxception.fast.run import FastPlan  # noqa: E402
from npxception.weights import save  # noqa: E402

# per-step rows always printed: a middle-flow step, and the exit flow's largest kernels
WATCH = ("block8_sepconv2", "block13_sepconv1", "block13_sepconv2", "block13_residual_conv",
         "block14_sepconv1", "block14_sepconv2")


def _kernel_key(plan, step):
    """(param key, the 2-D kernel the plan runs) of a ConvBN or SepConvBN step."""
    if isinstance(step, ConvBN):
        return f"{step.conv}/kernel", plan.folded[step.conv][0]
    return f"{step.sepconv}/pointwise_kernel", plan.folded[step.sepconv][1]


def _kernel_steps(plan):
    """The steps the microkernel can run: every ConvBN (Xception's are unpadded), SepConvBN on the fused path."""
    return [s for s in plan.steps if isinstance(s, ConvBN) or (isinstance(s, SepConvBN) and plan.fused)]


def pack_rest(plan):
    """{label: packed} for every kernel step the plan left unpacked, and their packed bytes."""
    extra = {}
    for step in _kernel_steps(plan):
        if step.label not in plan.packed:
            extra[step.label] = direct.pack_kernel(_kernel_key(plan, step)[1])
    return extra, sum(p.nbytes for p in extra.values())


def ab(batch, repeats, model):
    x = np.random.default_rng(1).uniform(-1, 1, (batch, 299, 299, 3)).astype(np.float32)
    fast_forward(model, x)
    plan = model._fast
    extra, extra_bytes = pack_rest(plan)
    variants = {"default": dict(plan.packed), "all packed": {**plan.packed, **extra}}
    steps = {k: {} for k in variants}

    def run(which, _x=None):
        return run_packed(plan, x, variants[which], steps[which])

    with blas.single_threaded():
        # rounds in a Williams order (bench's), so neither variant always runs first
        ms = {k: 1e3 * s for k, s in interleaved({k: (lambda _x, k=k: run(k)) for k in variants}, x, repeats,
                                                 gap=0.025).items()}
    want = run("default")
    # 728- to 2048-term float32 dot products summed in another order: a few ulp of values up to ~1e3
    assert np.allclose(run("all packed"), want, rtol=1e-4, atol=1e-6)
    plan.packed = variants["default"]
    print(f"batch {batch}: default {ms['default']:.1f} ms, all packed {ms['all packed']:.1f} ms "
          f"({ms['all packed'] / ms['default']:.3f}); packed copies: default "
          f"{sum(p.nbytes for p in variants['default'].values()) / 2**20:.1f} MiB, "
          f"+{extra_bytes / 2**20:.1f} MiB for the other {len(extra)}", flush=True)
    med = {k: {label: statistics.median(t) for label, t in steps[k].items()} for k in variants}
    flows = {"entry (block1-4)": range(1, 5), "middle (block5-12)": range(5, 13), "exit (block13-14)": range(13, 15)}
    for flow, blocks in flows.items():
        labels = [lb for lb in med["default"] if lb.startswith("block") and int(lb[5:].split("_")[0]) in blocks]
        a, b = (sum(med[k][lb] for lb in labels) for k in variants)
        print(f"  {flow}, sum of step medians: {a:.2f} -> {b:.2f} ms ({b / a:.3f})", flush=True)
    for label in med["default"]:
        a, b = med["default"][label], med["all packed"][label]
        if label in WATCH or abs(b - a) > 0.05 * max(a, b):
            print(f"  {label}: {a:.2f} -> {b:.2f} ms ({b / a:.3f})", flush=True)


def rss(mode, path, verify, trim):
    if mode == "all":
        direct.PACK_MAX = 1 << 40  # past any kernel: every one packed where the plan is built
    model = npxception.load(path, verify=verify)
    x = np.zeros((1, 299, 299, 3), np.float32)
    if mode == "only-packed":
        plan = model._fast if isinstance(model._fast, FastPlan) else FastPlan(model)
        model._fast = plan
        p = model._params
        dropped = 0
        for step in _kernel_steps(plan):
            if step.label in plan.packed:
                continue
            key, k2 = _kernel_key(plan, step)
            plan.packed[step.label] = direct.pack_kernel(k2)
            dropped += p[key].nbytes
            stub = np.empty((0, k2.shape[1]), k2.dtype)  # the plan reads only its width
            folded = plan.folded[step.label]
            plan.folded[step.label] = (stub, *folded[1:]) if isinstance(step, ConvBN) else \
                (folded[0], stub, *folded[2:])
            p[key] = stub.reshape(1, 1, 0, k2.shape[1])  # a model whose reference path no longer runs
            del k2, folded
            gc.collect()
        print(f"dropped unpacked: {dropped / 2**20:.1f} MiB", flush=True)
    if trim:  # glibc keeps its heap's freed holes resident; a loader that packed as it read would leave none
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    model(x)
    plan = model._fast
    packed = sum(v.nbytes for v in plan.packed.values())
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
    flags = "".join(f" ({f})" for f, on in (("verify", verify), ("trim", trim)) if on)
    print(f"{mode}{flags}: {len(plan.packed)} kernels packed, {packed / 2**20:.1f} MiB; "
          f"VmHWM {int(hwm.split()[1]) / 1024:.1f} MiB", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--save", metavar="WEIGHTS", help="write the seeded model with the top to this .npz, and stop")
    ap.add_argument("--rss", nargs=2, metavar=("MODE", "WEIGHTS"))
    ap.add_argument("--verify", action="store_true", help="with --rss: load with the golden check")
    ap.add_argument("--trim", action="store_true",
                    help="with --rss: malloc_trim(0) just before the forward (after any arrays are dropped)")
    args = ap.parse_args()
    if not (direct.AVAILABLE and direct.microkernel_ready()):
        sys.exit("the AVX-512 microkernel is not usable here: nothing to measure")
    if args.save:
        save(npxception.Xception(include_top=True, seed=0), args.save)
        return
    if args.rss:
        mode, path = args.rss
        if mode not in ("default", "all", "only-packed"):
            sys.exit(f"--rss: expected default, all or only-packed, found {mode!r}")
        rss(mode, path, args.verify, args.trim)
        return
    model = npxception.Xception(include_top=True, seed=0)  # random weights and BN statistics, 299x299
    for batch in args.batch:
        ab(batch, args.repeats, model)


if __name__ == "__main__":
    main()
