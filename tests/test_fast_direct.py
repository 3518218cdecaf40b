"""The register-tiled microkernel (npxception/fast/direct.py) against TensorFlow, its NumPy twin and the
OpenBLAS path it replaces; the plan's choice of it by shape; and the plan without AVX-512.

Tolerance of every comparison, element by element: a dot product of K terms in a dtype of unit roundoff eps
is within gamma_K * sum_k |x_k w_k| of the exact one (Higham, Accuracy and Stability, eq. 3.4; gamma_K ~ K
eps), for any summation order (ours, TensorFlow's, OpenBLAS'); folding BN into ``scale`` and ``shift`` and
applying it adds a few roundings of its terms' size (``shift = beta - scale * mean`` may cancel). So
``tol = (K + 4) eps |scale| (|x| * |w|) + 8 eps (|y| + |beta| + |scale * mean|)``, with the reference in
float64 (TensorFlow run in float64: its own rounding is ~1e-16, nothing against float32's eps; against
float64's it is the same bound again, so a float64 case allows twice it).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume, given
from hypothesis import strategies as st

import npxception
from npxception import blas
from npxception.config import CONFIG
from npxception.fast import ConvBN, SepConvBN, direct, fast_forward, fold_bn, packing
from npxception.fast.fused import conv_fused_reference
from npxception.ops.padding import window_geometry

EPS32 = float(np.finfo(np.float32).eps)
needs_avx512 = pytest.mark.skipif(not direct.AVAILABLE, reason="no AVX-512: the plan keeps OpenBLAS (see "
                                  "test_without_avx512_the_plan_packs_nothing, which runs everywhere)")


def bn_stats(rng, c):
    """Random BN statistics (gamma, beta, mean, var), float32, as in every test model."""
    return (rng.uniform(0.5, 1.5, c), rng.normal(0, 0.5, c), rng.normal(0, 0.5, c), rng.uniform(0.2, 2, c))


def tf_conv_bn_relu(x, kernel4, stride, stats, relu):
    """TensorFlow in float64: conv2d VALID -> batch_normalization (Keras' epsilon) -> ReLU?."""
    gamma, beta, mean, var = (tf.constant(np.asarray(s, np.float64)) for s in stats)
    y = tf.nn.conv2d(tf.constant(x, tf.float64), tf.constant(kernel4, tf.float64), strides=stride, padding="VALID")
    y = tf.nn.batch_normalization(y, mean, var, beta, gamma, CONFIG.bn_epsilon)
    return (tf.nn.relu(y) if relu else y).numpy()


def tolerance(x, kernel4, stride, stats, scale, want):
    """The bound of the module docstring, from |x| conv |w| in float64 -> (N*Ho*Wo, C_out), for x's dtype."""
    eps = EPS32 if x.dtype == np.float32 else 2 * float(np.finfo(np.float64).eps)  # ours and TF's rounding
    sizes = tf.nn.conv2d(tf.constant(np.abs(x), tf.float64), tf.constant(np.abs(kernel4), tf.float64),
                         strides=stride, padding="VALID").numpy().reshape(want.shape)
    k = kernel4.shape[0] * kernel4.shape[1] * kernel4.shape[2]
    beta, mean = stats[1], stats[2]
    # shift = beta - scale * mean is rounded to the dtype: relative to its terms, which may cancel
    return (k + 4) * eps * np.abs(scale) * sizes + 8 * eps * (np.abs(want) + np.abs(beta) + np.abs(scale * mean))


@needs_avx512
@given(n=st.integers(1, 2), h=st.integers(1, 16), w=st.integers(1, 30), c=st.integers(1, 40),
       cout=st.integers(1, 80), k=st.integers(1, 3), stride=st.integers(1, 2), relu=st.booleans(),
       threads=st.integers(1, 3), seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]))
def test_conv_direct_against_tf(n, h, w, c, cout, k, stride, relu, threads, seed, dtype):
    """Widths up to 30 leave partial tiles of 6 and 10 pixels; up to 80 channels take one half-width panel
    (<= 32 float32 channels, 16 float64), one full panel or more, the last one masked; the kernel sizes and
    strides are Xception's."""
    assume(h >= k and w >= k)
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, h, w, c)).astype(dtype)
    kernel4 = (rng.normal(0, 1, (k, k, c, cout)) / np.sqrt(k * k * c)).astype(dtype)
    stats = [s.astype(dtype) for s in bn_stats(rng, cout)]
    scale, shift = fold_bn(*stats, CONFIG.bn_epsilon)
    ho, pad_t = window_geometry(h, k, stride, "valid")
    wo, pad_l = window_geometry(w, k, stride, "valid")
    kernel = kernel4.reshape(-1, cout)
    out = np.full((n * ho * wo, cout), np.nan, dtype)
    direct.conv_direct(x, packing.pack_kernel(kernel), k, stride, ho, wo, scale, shift, relu, out, threads)
    want = tf_conv_bn_relu(x, kernel4, stride, stats, relu).reshape(-1, cout)
    tol = tolerance(x, kernel4, stride, stats, scale, want)
    twin = direct.conv_direct_reference(x, kernel, k, stride, ho, wo, scale, shift, relu)
    im2col = conv_fused_reference(x, kernel, k, stride, pad_t, pad_l, ho, wo, scale, shift, relu)
    for name, got in (("kernel", out), ("twin", twin), ("im2col path", im2col)):
        bad = np.abs(got - want) > tol
        assert not bad.any(), f"{name}: ours {got[bad][:3]} against TF's {want[bad][:3]} (tol {tol[bad][:3]})"


@numba.njit
def compiled_pointwise_tile(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
    """:func:`direct.pointwise_tile` as a kernel calls it (its overload: the microkernel)."""
    direct.pointwise_tile(a, packed, offs, scale, shift, relu, add, y, prefetch)


@needs_avx512
@given(m=st.integers(1, 40), c=st.integers(1, 300), cout=st.integers(1, 150), relu=st.booleans(),
       add=st.booleans(), seed=st.integers(0, 2**16), dtype=st.sampled_from([np.float32, np.float64]))
def test_pointwise_tile_against_tf(m, c, cout, relu, add, seed, dtype):
    """The separable convolutions' pointwise GEMM with its BN, ReLU and residual Add, by the microkernel, as a
    1x1 tf.nn.conv2d on a row of m pixels (fewer than a tile of 6 or 10 rows too); the twin (the function run
    as Python) too."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (m, c)).astype(dtype)
    pw = (rng.normal(0, 1, (c, cout)) / np.sqrt(c)).astype(dtype)
    stats = [s.astype(dtype) for s in bn_stats(rng, cout)]
    scale, shift = fold_bn(*stats, CONFIG.bn_epsilon)
    residual = rng.normal(0, 1, (m, cout)).astype(dtype) if add else np.full((m, cout), np.nan, dtype)
    args = (a, packing.pack_kernel(pw), np.arange(c, dtype=np.int64), scale, shift, relu, add)
    got, twin = residual.copy(), residual.copy()
    compiled_pointwise_tile(*args, got)
    direct.pointwise_tile(*args, twin)  # as Python: the NumPy twin, on the kernel unpacked from the panels
    x, kernel4 = a.reshape(1, 1, m, c), pw.reshape(1, 1, c, cout)
    want = tf_conv_bn_relu(x, kernel4, 1, stats, relu).reshape(m, cout)
    tol = tolerance(x, kernel4, 1, stats, scale, want)
    if add:
        want = want + residual
        tol = tol + float(np.finfo(dtype).eps) * np.abs(want)  # one more rounding
    for name, out in (("kernel", got), ("twin", twin)):
        bad = np.abs(out - want) > tol
        assert not bad.any(), f"{name}: ours {out[bad][:3]} against TF's {want[bad][:3]} (tol {tol[bad][:3]})"


@needs_avx512
def test_prefetch_changes_no_bit(monkeypatch):
    """The prefetch of each next panel of weights (direct.PREFETCH) is a hint: the same bits with and without it,
    on kernels of several panels (the last one masked) and fewer rows than a tile as well as several tiles. The
    hypothesis tests above run it on (prefetch is on by default) against TensorFlow."""
    rng = np.random.default_rng(0)
    for m, c, cout in ((3, 50, 200), (40, 300, 150), (13, 17, 33)):
        a = rng.normal(0, 1, (m, c)).astype(np.float32)
        packed = packing.pack_kernel(rng.normal(0, 1, (c, cout)).astype(np.float32))
        scale, shift = rng.uniform(0.5, 2, cout).astype(np.float32), rng.normal(0, 1, cout).astype(np.float32)
        args = (a, packed, np.arange(c, dtype=np.int64), scale, shift, True, False)
        on, off = np.full((m, cout), np.nan, np.float32), np.full((m, cout), np.nan, np.float32)
        compiled_pointwise_tile(*args, on, True)
        compiled_pointwise_tile(*args, off, False)
        np.testing.assert_array_equal(on.view(np.uint32), off.view(np.uint32))
    x = rng.normal(0, 1, (1, 9, 20, 40)).astype(np.float32)
    packed = packing.pack_kernel(rng.normal(0, 1, (9 * 40, 150)).astype(np.float32))
    scale, shift = rng.uniform(0.5, 2, 150).astype(np.float32), rng.normal(0, 1, 150).astype(np.float32)
    outs = []
    for prefetch in (True, False):
        monkeypatch.setattr(direct, "PREFETCH", prefetch)
        outs.append(np.full((7 * 18, 150), np.nan, np.float32))
        direct.conv_direct(x, packed, 3, 1, 7, 18, scale, shift, False, outs[-1], 2)
    np.testing.assert_array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_direct_shares_panels_or_rows_alike(monkeypatch, dtype):
    """Where the kernel has more columns than the map has pixels the threads share the output panels
    (direct.shares_panels), elsewhere the rows: the same bits either way (each output is the same sum in the
    same order), on 1x1/2 and 3x3 kernels of several panels, the last one masked, rows of 10 and 19 pixels."""
    rng = np.random.default_rng(0)
    uint = {4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    rule = direct.shares_panels
    for h, c, cout, k, stride in ((19, 40, 300, 1, 2), (37, 24, 400, 1, 2), (12, 8, 200, 3, 1)):
        x = rng.normal(0, 1, (1, h, h, c)).astype(dtype)
        packed = packing.pack_kernel(rng.normal(0, 1, (k * k * c, cout)).astype(dtype))
        scale, shift = rng.uniform(0.5, 2, cout).astype(dtype), rng.normal(0, 1, cout).astype(dtype)
        ho = (h - k) // stride + 1
        assert rule(ho * ho, cout, 2)
        outs = []
        for panels in (True, False):
            monkeypatch.setattr(direct, "shares_panels", lambda *args, panels=panels: panels)
            outs.append(np.full((ho * ho, cout), np.nan, dtype))
            direct.conv_direct(x, packed, k, stride, ho, ho, scale, shift, True, outs[-1], 2)
        np.testing.assert_array_equal(outs[0].view(uint), outs[1].view(uint))
        want = direct.conv_direct_reference(x, packing.unpack_panels(packed, cout), k, stride, ho, ho, scale, shift,
                                            True)
        # the same sums in another order (NumPy's): a few units of rounding of |x| |w| sums of at most 216 terms
        np.testing.assert_allclose(outs[0], want, rtol=1e-3 if dtype == np.float32 else 1e-11,
                                   atol=1e-3 if dtype == np.float32 else 1e-11)


@pytest.mark.parametrize("dtype, widths", [(np.float32, (32, 64)), (np.float64, (16, 32))])
def test_pack_kernel_round_trips(dtype, widths):
    """Panels of two or four vectors of channels (32 or 64 float32, 16 or 32 float64), zero past the last
    channel, and 64-byte aligned for the vector loads; unpacked, the same bits (signed zeros, subnormals and
    all), as a model reads a kernel it holds packed."""
    rng = np.random.default_rng(0)
    uint = {4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    narrow, wide = widths
    for cout in (1, narrow, narrow + 1, wide, wide + 1, 100):
        kernel = rng.normal(0, 1, (7, cout)).astype(dtype)
        kernel[0, 0], kernel[1, 0] = -0.0, np.finfo(dtype).smallest_subnormal  # bits a value comparison misses
        packed = packing.pack_kernel(kernel)
        nr = narrow if cout <= narrow else wide
        assert packing.panel_width(cout, dtype) == nr and packed.dtype == dtype
        assert packed.shape == (-(-cout // nr), 7, nr)
        assert packed.ctypes.data % 64 == 0
        side_by_side = packed.transpose(1, 0, 2).reshape(7, -1)
        np.testing.assert_array_equal(side_by_side[:, :cout], kernel)
        assert not side_by_side[:, cout:].any()
        back = packing.unpack_panels(packed, cout)
        assert back.flags.c_contiguous and back.dtype == dtype
        np.testing.assert_array_equal(back.view(uint), kernel.view(uint))
        kernel4 = kernel.reshape(1, 1, 7, cout)
        held = packing.PackedKernel.of(kernel4)
        assert held.shape == kernel4.shape and held.dtype == dtype
        np.testing.assert_array_equal(held.unpack().view(uint), kernel4.view(uint))


@pytest.fixture(scope="module")
def small_model():
    """A 71x71 float32 backbone with random BN statistics: every step kind at small maps."""
    return npxception.Xception(include_top=False, pooling="avg", input_shape=(71, 71, 3), seed=4)


def kernel_keys(plan):
    """{step label: its kernel's weight key} for the steps the microkernel can run."""
    keys = {s.conv: f"{s.conv}/kernel" for s in plan.steps if isinstance(s, ConvBN)}
    if plan.fused:
        keys.update({s.sepconv: f"{s.sepconv}/pointwise_kernel" for s in plan.steps if isinstance(s, SepConvBN)})
    return keys


def openblas_plan(model, monkeypatch):
    """A plan of ``model`` as on a CPU without AVX-512: im2col + OpenBLAS, reading the weights unpacked."""
    from npxception.fast.run import FastPlan

    with monkeypatch.context() as m:
        m.setattr(direct, "AVAILABLE", False)
        return FastPlan(model)


@pytest.mark.skipif(not blas.AVAILABLE, reason=f"the fused path needs NumPy's bundled OpenBLAS: {blas.WHERE}")
def test_plan_packs_by_shape_and_agrees_with_openblas(small_model, monkeypatch):
    """A float32 plan packs every kernel the microkernel can run, whatever its size or name (worth_packing
    asks the dtype and the CPU only), and the whole network gives the OpenBLAS path's answer with them; that
    path, planned after the model holds the kernels only packed, reads them unpacked."""
    x = np.random.default_rng(1).uniform(-1, 1, (2, 71, 71, 3)).astype(np.float32)
    fast_forward(small_model, x)
    plan = small_model._fast
    assert set(plan.packed) == (set(kernel_keys(plan)) if direct.worth_packing(np.float32) else set())
    assert bool(plan.packed) == direct.AVAILABLE
    ours = plan(x).copy()
    theirs = openblas_plan(small_model, monkeypatch)(x).copy()
    reference = small_model.forward(x, impl="reference")[0]
    # the whole network's float32 rounding, both paths against the same reference: the golden check's
    # relative tolerance (npxception/golden.py RTOL float32 1e-4) of the output's max|x|
    scale = np.abs(reference).max()
    assert np.abs(ours - theirs).max() <= 1e-4 * scale
    assert np.abs(ours - reference).max() <= 1e-4 * scale


def test_without_avx512_the_plan_packs_nothing(small_model, monkeypatch):
    """On a CPU without AVX-512 no kernel is packed, and every step runs im2col + OpenBLAS as before. A float64
    plan packs as a float32 one does (8 lanes a vector) where the microkernel works in float64, and nothing
    without AVX-512, its model then holding its arrays as given; both give the reference's answer."""
    from npxception.fast.run import FastPlan

    assert openblas_plan(small_model, monkeypatch).packed == {}
    x = np.random.default_rng(1).uniform(-1, 1, (2, 71, 71, 3))
    for avx512 in (False, True):
        f64 = npxception.Xception(include_top=False, pooling="avg", input_shape=(71, 71, 3), seed=4,
                                  dtype="float64")
        with monkeypatch.context() as m:
            if not avx512:
                m.setattr(direct, "AVAILABLE", False)
            plan = FastPlan(f64)
        packs = avx512 and direct.worth_packing(np.float64)
        assert bool(plan.packed) == packs
        if packs:
            assert set(plan.packed) == set(kernel_keys(plan)) and plan.packed["block1_conv1"].dtype == np.float64
        assert all(isinstance(a, np.ndarray) for a in f64._params._store.values()) == (not packs)
        if packs:  # the OpenBLAS plan's answers: tests/test_fast_plan.py (float64 models)
            reference = f64.forward(x, impl="reference")[0]
            # float64 sums of at most 3x3x2048 terms in another order: ~1e-12 of max|x| would be a loose
            # bound; the golden check's float64 tolerance (npxception/golden.py) is looser still
            assert np.abs(plan(x) - reference).max() <= 1e-10 * np.abs(reference).max()


def test_a_microkernel_that_fails_falls_back_to_openblas(small_model, monkeypatch, capsys):
    """Another Numba/llvmlite may refuse the microkernel's IR (simulated: the probe raises what LLVM says of a
    wrongly mangled intrinsic), after another plan of the model packed its kernels. The plan then packs nothing
    (and reads those kernels unpacked), keeps the microkernel out of the compiled fused
    kernel (its ``packed`` is not float32: the overload's no-op), gives the reference's answer, and says why
    on stderr once for the process, not once per plan."""
    from npxception.fast.run import FastPlan

    def refused(dtype):
        raise RuntimeError("Failed in nopython mode pipeline (step: native lowering)\nLLVM IR parsing error\n"
                           "<string>:9:3: error: invalid intrinsic name\n\nDuring: lowering ...")

    def never(*args):
        raise AssertionError("the microkernel ran after its probe failed")

    x = np.random.default_rng(2).uniform(-1, 1, (1, 71, 71, 3)).astype(np.float32)
    fast_forward(small_model, x)  # on AVX-512 the model now holds its kernels only packed
    packed = {k for k, held in small_model._params._store.items() if isinstance(held, packing.PackedKernel)}
    assert bool(packed) == direct.worth_packing(np.float32)
    monkeypatch.setattr(direct, "AVAILABLE", True)  # even on a CPU without AVX-512: the probe decides
    monkeypatch.setattr(direct, "_READY", {})  # asked afresh in this process
    monkeypatch.setattr(direct, "_probe", refused)
    monkeypatch.setattr(direct, "conv_direct", never)
    plans = [FastPlan(small_model) for _ in range(2)]
    assert plans[0].packed == {} and plans[0].not_packed is direct.NO_MICROKERNEL
    ours = plans[0](x).copy()  # from the kernels the model holds packed, unpacked for OpenBLAS
    reference = small_model.forward(x, impl="reference")[0]
    # as in test_plan_packs_by_shape_and_agrees_with_openblas: the golden check's float32 tolerance
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
    err = capsys.readouterr().err
    assert err.count("npxception: the AVX-512 microkernel") == 1, err
    assert "im2col + OpenBLAS" in err, err
    assert "RuntimeError: Failed in nopython mode pipeline (step: native lowering); <string>:9:3: error: " \
           "invalid intrinsic name\n" in err, err
    assert f"Numba {numba.__version__}" in err, err


def test_a_microkernel_that_computes_wrong_is_not_used(monkeypatch, capsys):
    """The probe checks answers, not only that the microkernel compiled: one wrong output (simulated:
    the kernel's result off by one in one element) makes it not ready, and the notice names the difference."""
    real = direct.conv_direct

    def off_by_one(*args):
        real(*args)
        args[9][0, 0] += 1  # out

    # without AVX-512 the real kernel cannot run (illegal instruction): there every element is wrong instead
    monkeypatch.setattr(direct, "conv_direct", off_by_one if direct.AVAILABLE else
                        lambda *args: args[9].__setitem__(Ellipsis, 0))
    monkeypatch.setattr(direct, "AVAILABLE", True)
    monkeypatch.setattr(direct, "_READY", {})
    assert not direct.microkernel_ready()
    assert not direct.worth_packing(np.float32)
    err = capsys.readouterr().err
    assert "ArithmeticError: a 2x21x5 -> 20 convolution differs from its NumPy twin by up to" in err, err
