"""NUMBA_DISABLE_JIT=1, the debugging mode of docs/debugging.md: the kernels run as Python and must
compute what they compute compiled.

The fused kernels call OpenBLAS' GEMM by symbol (npxception/blas.py); run as Python that call once
computed nothing, and model(x) returned NaN or garbage with no error while the load-time golden
check ran only the reference ops. Each test runs in a subprocess (the switch is read when Numba is
imported), on small inputs: as Python the fast path takes ~0.5 s at 16x16 (~7 s at 71x71).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import npxception
from npxception import blas
from npxception.golden import RTOL

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _run(argv):
    """``python *argv`` with the kernels as Python."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), NPXCEPTION_OFFLINE="1", NUMBA_DISABLE_JIT="1")
    return subprocess.run([sys.executable, *map(str, argv)], env=env, capture_output=True, text=True,
                          timeout=600)


FORWARD = r"""
import json, warnings, numba, numpy as np, npxception
from npxception import blas
from npxception.network import XceptionModel
warnings.simplefilter("error", RuntimeWarning)  # the old no-op GEMM overflowed into NaN with warnings
out = {"jit_disabled": bool(numba.config.DISABLE_JIT), "fused": blas.AVAILABLE, "runs": {}}
x16 = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3))  # batch 2: rows split across threads
for dtype in ("float32", "float64"):
    for top in (False, True):
        kw = dict(classes=5, classifier_activation=None) if top else dict(include_top=False, pooling="avg")
        m = npxception.Xception(input_shape=(71, 71, 3) if top else (None, None, 3), dtype=dtype, seed=3, **kw)
        # any size with the top, as a converted fine-tuned model is (Xception(), as Keras, wants a static size)
        m = XceptionModel(m.weights, variant=m.variant, head=m.head, input_shape=(None, None, 3))  # BN random
        x = x16.astype(dtype)
        ours, ref = m(x), m.forward(x, impl="reference")[0]
        out["runs"][f"{dtype} {'top' if top else 'avg'}"] = [
            float(np.abs(ours - ref).max() / np.abs(ref).max()), bool(np.isfinite(ours).all())]
print(json.dumps(out))
"""


def test_fast_path_as_python_equals_the_reference_ops():
    """model(x) under NUMBA_DISABLE_JIT=1, float32 and float64, with and without the top: impl="reference"'s
    numbers, through the same fused path as compiled (blas.AVAILABLE unchanged by the switch)."""
    proc = _run(["-c", FORWARD])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["jit_disabled"] is True
    assert out["fused"] == blas.AVAILABLE  # the debugger steps through the kernels the compiled run uses
    assert set(out["runs"]) == {"float32 avg", "float32 top", "float64 avg", "float64 top"}
    for name, (dev, finite) in out["runs"].items():
        # deviation relative to the output's max|x|. Tolerance: the golden check's (npxception/golden.py
        # RTOL: float32 1e-4, 50x above the measured 2.4e-6 here; float64 1e-9, measured 3.4e-15). The old
        # no-op GEMM gave NaN or 2e32.
        assert finite and dev <= RTOL[name.split()[0]], (name, dev)


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    """An any-size 5-class classifier whose softmax does not saturate, saved with its golden."""
    from npxception.network import XceptionModel

    m = npxception.Xception(classes=5, input_shape=(71, 71, 3), seed=5)  # a static size with the top, as Keras
    p = dict(m.weights)
    p["predictions/kernel"] = p["predictions/kernel"] * np.float32(0.01)  # logits of order 1, not 100
    m = XceptionModel(p, variant=m.variant, head=m.head, input_shape=(None, None, 3), source="test")
    return m.save(tmp_path_factory.mktemp("nojit") / "five.npz")


def test_predict_cli_as_python_gives_the_compiled_labels(classifier_file):
    """`npxception predict` under NUMBA_DISABLE_JIT=1 (the file's load check included) ranks the classes as
    the compiled kernels do, with the same scores (the old code answered a wrong class with score 1.0)."""
    chelsea = os.path.join(EXAMPLES, "chelsea.png")
    proc = _run(["-m", "npxception", "predict", chelsea, "--weights", classifier_file, "--size", "32x32",
                 "--top", "5", "--format", "json", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    python = [(p["index"], p["score"]) for p in row["predictions"]]
    compiled = [(int(label), score) for label, _, score in
                npxception.predict(chelsea, weights=str(classifier_file), top=5, target_size=(32, 32))]
    assert [i for i, _ in python] == [i for i, _ in compiled]
    assert 0.3 < compiled[0][1] < 0.99, compiled  # not saturated: a wrong computation shows in the scores
    # float32 scores, 1e-4 absolute: the golden's float32 tolerance, far above the two paths' difference
    # (FMA contraction compiled, none as Python: ~1e-6 relative)
    np.testing.assert_allclose([s for _, s in python], [s for _, s in compiled], atol=1e-4)


GOLDEN = r"""
import ctypes, sys, npxception
from npxception.fast import direct, fused
if sys.argv[2] == "nothing":  # what the GEMM did as Python before the fix: its output kept what it held
    fused.sgemm = fused.dgemm = lambda *args: None
    # on AVX-512 the plan's GEMMs are the microkernel's (its twins, as Python): nothing there either
    fused.pointwise_tile = fused.pointwise_panels = direct.conv_direct = lambda *args: None
else:  # NaN, which is also what "nothing" leaves where the output buffer held NaN bit patterns
    def gemm(layout, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        size = ctypes.sizeof(ctypes.c_float if isinstance(alpha, fused.np.float32) else ctypes.c_double)
        ctypes.memset(c, 0xFF, m * ldc * size)  # all-ones bits: a NaN in either float type
    fused.sgemm = fused.dgemm = gemm
    fused.pointwise_tile = lambda a, packed, offs, scale, shift, relu, add, y, prefetch=True: y.fill(float("nan"))
    fused.pointwise_panels = lambda a, packed, offs, scale, shift, relu, add, y, q0, q1, prefetch=True: y.fill(
        float("nan"))
    direct.conv_direct = lambda x, packed, kh, stride, ho, wo, scale, shift, relu, out, threads: out.fill(
        float("nan"))
try:
    npxception.load(sys.argv[1])
    print("loaded")
except ValueError as exc:
    print(exc)
"""


@pytest.mark.parametrize("kernels", ["nothing", "nan"])
def test_load_check_without_jit_checks_the_fast_path(classifier_file, kernels):
    """Under NUMBA_DISABLE_JIT=1 the load check still covers model(x)'s kernels: a GEMM that computes nothing
    as Python (what it missed when it ran only the reference ops), or NaN, is refused by name. NaN once
    escaped as ActivationOverflow, blaming the weights' range, where the buffers "nothing" leaves behind held
    NaN (a CI machine's). (The sound kernels load the same file in
    test_predict_cli_as_python_gives_the_compiled_labels.)"""
    proc = _run(["-c", GOLDEN, classifier_file, kernels])
    assert proc.returncode == 0, proc.stderr
    assert "under NUMBA_DISABLE_JIT=1 the fast path" in proc.stdout, proc.stdout
    assert "the kernels miscompute as Python" in proc.stdout and "block14_sepconv2_act" in proc.stdout
