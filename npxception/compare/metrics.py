"""The error measures of a comparison, in one pass over both arrays.

For ``ours`` against ``theirs`` (same shape), with float64 accumulation:

    max_abs       = max |ours - theirs|
    scale         = max |theirs|
    max_rel       = max_abs / scale
    1 - cos       = 1 - <ours, theirs> / (|ours| |theirs|)

``errors`` is a Numba kernel reading each element once (the NumPy twin,
``errors_reference``, makes five float64 temporaries per layer: at 299x299 that
was half of compare's time). Both are tested against each other.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, prange

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504: past it a float16 port holds Inf
_CHUNKS = 64  # independent partial sums: enough for the threads, few enough to combine cheaply


@njit(parallel=True)
def _sums(a, b, out):
    """out[c] = (max|a-b|, max|b|, sum a*a, sum b*b, sum a*b) over chunk c of flat a, b."""
    n = a.size
    chunks = out.shape[0]
    for c in prange(chunks):
        lo = c * n // chunks
        hi = (c + 1) * n // chunks
        m = 0.0
        mb = 0.0
        saa = 0.0
        sbb = 0.0
        sab = 0.0
        for i in range(lo, hi):
            x = np.float64(a[i])
            y = np.float64(b[i])
            d = abs(x - y)
            if d > m:
                m = d
            if abs(y) > mb:
                mb = abs(y)
            saa += x * x
            sbb += y * y
            sab += x * y
        out[c, 0] = m
        out[c, 1] = mb
        out[c, 2] = saa
        out[c, 3] = sbb
        out[c, 4] = sab


def _finish(max_abs, scale, saa, sbb, sab):
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    if saa > 0 and sbb > 0:
        one_minus_cos = max(0.0, 1.0 - sab / np.sqrt(saa * sbb))
    else:
        one_minus_cos = float(saa != sbb)
    return float(max_abs), float(max_rel), float(one_minus_cos), float(scale)


def errors(a, b):
    """``(max_abs, max_rel, 1 - cos, max|b|)`` of ``a`` against ``b`` (same shape, finite)."""
    a = np.ascontiguousarray(a).ravel()
    b = np.ascontiguousarray(b).ravel()
    if a.dtype != b.dtype or a.dtype.kind != "f":
        a, b = a.astype(np.float64), b.astype(np.float64)
    if a.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    out = np.zeros((min(_CHUNKS, a.size), 5))
    _sums(a, b, out)
    return _finish(out[:, 0].max(), out[:, 1].max(), out[:, 2].sum(), out[:, 3].sum(), out[:, 4].sum())


def errors_reference(a, b):
    """The same measures in plain NumPy, float64."""
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a64.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    return _finish(np.abs(a64 - b64).max(), np.abs(b64).max(), a64 @ a64, b64 @ b64, a64 @ b64)


def non_finite(a) -> str:
    """``"1 Inf and 2 NaN of 23328 values"``, or ``""`` when every value of ``a`` is finite."""
    a = np.asarray(a)
    if a.dtype.kind != "f" or np.isfinite(a).all():
        return ""
    nan = int(np.isnan(a).sum())
    inf = int(np.isinf(a).sum())
    parts = [f"{inf} Inf"] * bool(inf) + [f"{nan} NaN"] * bool(nan)
    return f"{' and '.join(parts)} of {a.size} values"
