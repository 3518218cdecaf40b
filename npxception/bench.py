"""``npxception bench``: npxception against TensorFlow and ONNX Runtime, measured side by side.

How it measures, because this machine (2 cores) is noisy:

* every system gets the same weights (a Keras Xception with random weights and
  BN statistics, converted to npxception, exported to ONNX with tf2onnx);
* after warm-up, runs are interleaved so drifts in machine load hit every
  system alike, in rounds ordered by a Williams design (A B C, B C A, C A B,
  C B A, A C B, B A C) so that within the rounds every system follows every
  other equally often, because a pass's time depends on which system ran just
  before it (docs/performance.md, "Who runs before whom"); we report medians and
  the ratio of ours to each peer within the same run;
* peak RSS and start-up are measured in fresh processes.

Peers are the optional extra ``bench`` (``pip install 'npxception[bench]'``); missing
ones are reported, not fatal. TensorFlow is imported here only, never by the
rest of the package.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

from .extras import pip_install
from .fast import fast_forward
from .untrusted import atomic_write, check_output_dir


def machine() -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(),
            "cores": os.cpu_count(), "numpy": np.__version__}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        model = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")]
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
        info["cpu"] = model[0] if model else platform.processor()
        info["simd"] = [f for f in ("avx2", "fma", "avx512f") if f" {f}" in flags]
    except OSError:
        info["cpu"] = platform.processor()
    info["numba"] = numba.__version__
    info["numba_threads"] = numba.get_num_threads()
    info["env"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                               "OPENBLAS_CORETYPE", "NUMBA_THREADING_LAYER") if k in os.environ}
    return info


def _peers(kmodel, against, size, batches):
    """{name: callable(x) -> output} for the peers that are installed, plus notes on the missing."""
    runners, missing = {}, []
    if "tf" in against:
        import tensorflow as tf  # optional extra (bench): the peer being timed

        fn = tf.function(lambda t: kmodel(t, training=False), reduce_retracing=True)
        runners["tf"] = lambda x: fn(tf.constant(x)).numpy()
    if "ort" in against:
        try:
            import onnxruntime as ort  # optional extra (bench): the peer being timed
            import tf2onnx  # noqa: F401 - optional extra (bench); checked here, used in _ort_runner
        except ImportError as exc:
            missing.append(f"ort ({exc.name} not installed: {pip_install('bench')})")
        else:
            runners["ort"] = _ort_runner(kmodel, size, ort)
    return runners, missing


def _ort_runner(kmodel, size, ort):
    import tensorflow as tf  # optional extra (bench): exports the peer's graph
    import tf2onnx  # optional extra (bench)

    spec = (tf.TensorSpec((None, size, size, 3), tf.float32, name="input"),)
    fn = tf.function(lambda t: kmodel(t, training=False))
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


GAP_S = 0.02  # idle time before each timed call: TF's and ORT's thread pools spin-wait
# for a few ms after a run and would steal the cores from whichever system runs
# next. Longer gaps measure a cold start instead (docs/performance.md,
# "Measurements behind the code's choices").


def round_orders(n: int) -> list[list[int]]:
    """A Williams design: orders of ``n`` systems in which, within the rounds, each system
    follows each other equally often (once for even ``n``, twice over ``2n`` rounds for odd)."""
    first, lo, hi = [0], 1, n - 1
    while lo <= hi:
        first.append(lo)
        lo += 1
        if lo <= hi:
            first.append(hi)
            hi -= 1
    rows = [[(v + r) % n for v in first] for r in range(n)]
    return rows + [row[::-1] for row in rows] if n % 2 else rows


def interleaved_calls(systems: dict, x, repeats: int, warmup: int = 2, gap: float = GAP_S) -> list:
    """Every timed call, ``[(system, the system timed just before it or None, seconds), ...]``, in rounds of
    one call each.

    The rounds' orders cycle through a Williams design (:func:`round_orders`), so every
    system follows every other equally often: a pass is slower just after another system's
    (docs/performance.md, "Who runs before whom"), and the fixed order A B C A B C charged
    that to whichever system came after it.
    """
    for fn in systems.values():
        for _ in range(warmup):
            fn(x)
    calls, prev = [], None
    names = list(systems)
    orders = round_orders(len(names))
    for r in range(repeats):
        for i in orders[r % len(orders)]:
            name, fn = names[i], systems[names[i]]
            time.sleep(gap)
            t = time.perf_counter()
            fn(x)
            calls.append((name, prev, time.perf_counter() - t))
            prev = name
    return calls


def interleaved(systems: dict, x, repeats: int, warmup: int = 2, gap: float = GAP_S) -> dict:
    """Median seconds per call for each system, measured as :func:`interleaved_calls` says."""
    calls = interleaved_calls(systems, x, repeats, warmup, gap)
    return {name: statistics.median(t for n, _, t in calls if n == name) for name in systems}


def random_keras_xception(size: int = 299):
    """``keras.applications.Xception(weights=None)`` at ``size``, with random kernels and BN statistics: the
    model every system of the bench runs (needs the bench extra)."""
    import keras  # optional extra (bench): only the bench builds a Keras model

    kmodel = keras.applications.Xception(weights=None, input_shape=(size, size, 3))
    rng = np.random.default_rng(0)
    for layer in kmodel.layers:
        if layer.weights:
            layer.set_weights([_random_like(w, layer, rng) for w in layer.weights])
    return kmodel


def _fresh(code: str, env=None) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})})
    return out.stdout.strip().splitlines()[-1]


def startup(weights_path: str, size: int) -> dict:
    """Import time, first use with a cold and a warm cache, the compile, peak RSS."""
    res = {}
    res["import_s"] = float(_fresh("import time; t = time.perf_counter(); import npxception; "
                                   "print(time.perf_counter() - t)"))
    # what a first model call imports anyway: the model, the ops and Numba
    res["import_with_ops_s"] = float(_fresh("import time; t = time.perf_counter(); import npxception.model, "
                                            "npxception.ops, npxception.fast; print(time.perf_counter() - t)"))
    # The first use is load + first call: load() checks the file's golden case
    # with a forward pass (npxception/golden.py), so with a cold cache the
    # kernels compile inside load(), and timing the first call alone shows none.
    probe = (
        "import time, numpy as np, npxception\n"
        f"x = np.random.default_rng(0).uniform(-1, 1, (1, {size}, {size}, 3)).astype('float32')\n"
        f"t = time.perf_counter(); m = npxception.load({weights_path!r}); load = time.perf_counter() - t\n"
        "t = time.perf_counter(); m(x); first = time.perf_counter() - t\n"
        "t = time.perf_counter(); m(x); steady = time.perf_counter() - t\n"
        "m64 = m.astype('float64'); x64 = x.astype('float64')\n"
        "t = time.perf_counter(); m64(x64); first64 = time.perf_counter() - t\n"
        "t = time.perf_counter(); m64(x64); steady64 = time.perf_counter() - t\n"
        "print(load, first, steady, first64 - steady64)\n"
    )
    with tempfile.TemporaryDirectory() as cold:
        load, first, steady, compile64 = map(float, _fresh(probe, {"NUMBA_CACHE_DIR": cold}).split())
        res["first_ever_use_s"] = load + first  # load (golden check) + first call, compiling every kernel
        res["float64_compile_s"] = compile64  # the first float64 call beyond a steady one: its kernels
        load_w, first_w, steady_w, _ = map(float, _fresh(probe, {"NUMBA_CACHE_DIR": cold}).split())
        res["compile_s"] = (load + first) - (load_w + first_w)
        res["load_warm_cache_s"] = load_w  # reading the file + its golden check (one forward pass)
        res["first_call_warm_cache_extra_s"] = first_w - steady_w
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork+exec,
    # so a child of this (TensorFlow-sized) process would report the parent's peak.
    rss_probe = (
        "import numpy as np, npxception\n"
        f"m = npxception.load({weights_path!r})\n"
        f"m(np.zeros((1, {size}, {size}, 3), 'float32'))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]) / 1024)\n"
    )
    _fresh(rss_probe)  # once to fill the kernel cache: the peak of a compile is not a prediction's
    res["peak_rss_mb"] = float(_fresh(rss_probe))
    return res


def run(batches=(1, 8), size=299, dtypes=("float32", "float64"), against=("tf", "ort"), repeats=15,
        reference=True, log=print, gap=None) -> dict:
    """Every system on the same weights, interleaved (:func:`interleaved`), ``gap`` seconds idle before
    each timed call (None: :data:`GAP_S`); medians, ratios, a per-step profile and start-up figures."""
    gap = GAP_S if gap is None else gap
    from npxception.weights_tools import from_keras  # weights_tools imports npxception at import time; not the reverse

    log(f"building Keras Xception {size}x{size} with random weights ...")
    kmodel = random_keras_xception(size)  # Keras: an optional extra (bench)
    ours32 = from_keras(kmodel)
    results = {"machine": machine(), "size": size, "gap_s": gap, "runs": [], "missing": []}
    runners, missing = _peers(kmodel, against, size, batches)
    results["missing"] = missing
    for note in missing:
        log(f"peer missing: {note}")
    for batch in batches:
        x32 = np.random.default_rng(batch).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
        systems = {"npxception": ours32, **runners}
        if "float64" in dtypes:
            ours64 = ours32.astype("float64")
            x64 = x32.astype(np.float64)
            systems["npxception_f64"] = lambda _x, m=ours64, xx=x64: m(xx)
        med = interleaved(systems, x32, repeats, gap=gap)
        row = {"batch": batch, "median_s": med, "per_image_ms": {k: 1e3 * v / batch for k, v in med.items()}}
        row["ratios"] = {f"ours/{p}": med["npxception"] / med[p] for p in runners}
        if "npxception_f64" in med:
            row["ratios"]["f64/f32"] = med["npxception_f64"] / med["npxception"]
        results["runs"].append(row)
        log(f"batch {batch}: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in med.items())
            + " | " + ", ".join(f"{k} {v:.2f}" for k, v in row["ratios"].items()))
    if reference:
        x = np.random.default_rng(1).uniform(-1, 1, (1, size, size, 3)).astype(np.float32)
        t = time.perf_counter()
        ours32(x, impl="reference")
        results["reference_batch1_s"] = time.perf_counter() - t
        log(f"reference path, batch 1: {results['reference_batch1_s']:.1f} s")
    results["profile_ms"] = profile(ours32, size)
    with tempfile.TemporaryDirectory() as tmp:
        path = ours32.save(os.path.join(tmp, "w.npz"))
        results["startup"] = startup(str(path), size)
    log("start-up: " + ", ".join(f"{k} {v:.3g}" for k, v in results["startup"].items()))
    results["machine"]["numba_threading_layer"] = numba.threading_layer()
    return results


def profile(model, size, repeats=5) -> dict:
    """Median milliseconds per step of the fast plan (batch 1)."""
    x = np.random.default_rng(2).uniform(-1, 1, (1, size, size, 3)).astype(model.dtype)
    fast_forward(model, x)
    plan = model._fast
    samples: dict[str, list] = {}
    for _ in range(repeats):
        plan.profile = {}
        plan(x)
        for k, v in plan.profile.items():
            samples.setdefault(k, []).append(v)
    plan.profile = None
    return {k: 1e3 * statistics.median(v) for k, v in samples.items()}


def _random_like(w, layer, rng):
    shape = tuple(w.shape)
    name = w.name.split("/")[-1].split(":")[0]
    if type(layer).__name__ == "BatchNormalization":
        lo_hi = {"gamma": (0.5, 1.5), "moving_variance": (0.5, 2.0)}.get(name)
        a = rng.uniform(*lo_hi, shape) if lo_hi else rng.normal(0, 0.1 if name == "beta" else 0.5, shape)
    elif name == "bias":
        a = rng.normal(0, 0.1, shape)
    else:
        fan_in = shape[0] * shape[1] if name == "depthwise_kernel" else int(np.prod(shape[:-1]))
        a = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
    return a.astype(np.float32)


def cli_bench(args) -> int:
    if args.json:  # before minutes of timing: a writable file name
        check_output_dir(args.json)
    try:
        import keras  # noqa: F401 - optional extra (bench); asked for here to name it in the error
    except ImportError:
        raise ImportError(f"npxception bench builds its reference model with Keras: {pip_install('bench')}") from None
    res = run(args.batch, args.size, args.dtype, args.against, args.repeats, not args.no_reference,
              log=lambda s: print(s, file=sys.stderr), gap=getattr(args, "gap", None))
    text = json.dumps(res, indent=2)
    if args.json:
        atomic_write(args.json, lambda f: f.write(text.encode()))
    print(text)
    return 0


def to_markdown(res: dict) -> str:
    """The results as the tables of docs/performance.md."""
    m = res["machine"]
    lines = [f"Machine: {m.get('cpu')}, {m.get('cores')} cores, SIMD {', '.join(m.get('simd', []))}; "
             f"Python {m['python']}, NumPy {m['numpy']}, Numba {m['numba']} "
             f"(threading layer {m.get('numba_threading_layer')}, {m['numba_threads']} threads). "
             f"Input {res['size']}x{res['size']}, medians of interleaved runs.", ""]
    peers = sorted({k for run in res["runs"] for k in run["median_s"]} - {"npxception", "npxception_f64"})
    head = "| batch | npxception f32 (ms/img) | " + " | ".join(f"{p} (ms/img)" for p in peers)
    head += " | npxception f64 (ms/img) | " + " | ".join(f"ours/{p}" for p in peers) + " | f64/f32 |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for run in res["runs"]:
        per = run["per_image_ms"]
        row = f"| {run['batch']} | {per['npxception']:.1f} | " + " | ".join(f"{per[p]:.1f}" for p in peers)
        row += f" | {per.get('npxception_f64', float('nan')):.1f} | "
        row += " | ".join(f"{run['ratios'][f'ours/{p}']:.2f}" for p in peers)
        row += f" | {run['ratios'].get('f64/f32', float('nan')):.2f} |"
        lines.append(row)
    if res.get("missing"):
        lines += ["", "Missing peers: " + "; ".join(res["missing"])]
    st = res.get("startup", {})
    if st:
        lines += ["", "| start-up and memory | value |", "|---|---|",
                  f"| `import npxception` | {st['import_s'] * 1e3:.1f} ms |",
                  f"| `import npxception.model, npxception.ops, npxception.fast` (loads Numba) | "
                  f"{st['import_with_ops_s'] * 1e3:.0f} ms |",
                  f"| first-ever use: load + first call, cold cache (compiles every kernel) | "
                  f"{st['first_ever_use_s']:.1f} s |",
                  f"| of which compiling | {st['compile_s']:.1f} s |",
                  f"| then the first float64 call, beyond a steady one (compiles the float64 kernels) | "
                  f"{st['float64_compile_s']:.1f} s |",
                  f"| load with a warm cache (reads the file, checks its golden case) | {st['load_warm_cache_s']:.2f} s |",
                  f"| first call with a warm cache, beyond a steady call | {st['first_call_warm_cache_extra_s']:.2f} s |",
                  f"| peak RSS, fresh process, one batch-1 prediction with the top | {st['peak_rss_mb']:.0f} MB |"]
    if "reference_batch1_s" in res:
        lines += [f"| reference path (`impl=\"reference\"`), batch 1 | {res['reference_batch1_s']:.1f} s |"]
    prof = res.get("profile_ms")
    if prof:
        total = sum(prof.values())
        lines += ["", f"Fast path, batch 1, per step (median of 5; total {total:.1f} ms):", "",
                  "| step | ms | share |", "|---|---|---|"]
        for k, v in sorted(prof.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {k} | {v:.2f} | {v / total:.1%} |")
    return "\n".join(lines)
