"""The separable convolutions' pointwise GEMM on the microkernel, with its NumPy twin: y = relu?(a @ kernel *
scale + shift), or y += that, the kernel packed in panels (npxception/fast/packing.py).

    y[m, co] = relu?(sum_k a[m, k] * kernel[k, co] * scale[co] + shift[co])  (+ y[m, co] when add)

Its left operand is the depthwise tile in the thread's cache, read in place
(the microkernel's taps are then the row's K values). Called from the fused
kernels (npxception/fast/fused.py) through overloads; as Python
(``NUMBA_DISABLE_JIT=1``) each function's body, its twin, runs. Whether the
microkernel is used at all: npxception/fast/direct.py, ``worth_packing``.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray, types
from numba.extending import overload

from .._jit import njit
from .symbols import bind_symbol, symbol_name
from .micro import MR_NARROW as _MR_NARROW, MR_WIDE as _MR_WIDE, at as _at, half_panels as _half_panels
from .micro import micro_narrow, micro_wide, narrow, prefetch_part
from .packing import unpack_panels


@njit(nogil=True)
def _pointwise_packed(a, packed, offs, scale, shift, relu, add, y, prefetch, g0, g1):
    """y (M, C_out) = relu?(a @ kernel * scale + shift), or y += that when ``add``, over the span [g0, g1) of
    the panel-major line of (output panel, row) pairs only: g = q * M + i is row i under panel q (channels
    [q*NR, min((q+1)*NR, C_out))); the rest of y untouched. a (M, K) C-contiguous.

    ``packed`` is :func:`pack_kernel` (kernel); ``offs`` is ``arange(K)``: the
    microkernel's taps are then the row's K values. A last panel at most half
    full (728 = 11 x 64 + 24 channels) runs on the 10-row tile over its first
    half only: the 6-row tile computes all four vectors whatever the store
    keeps, so it cost a full panel. Each output is the same sum in the same
    order on either tile: the same bits.
    """
    m, k_ = a.shape
    p_, _, nr = packed.shape
    co = y.shape[1]
    if m == 0 or g1 <= g0:
        return
    two = narrow(packed)
    half = _half_panels(m, two)
    hn = nr // 2
    q_end = min(p_, -(-g1 // m))
    for q in range(g0 // m, q_end):
        lo = max(g0 - q * m, 0)
        hi = min(g1 - q * m, m)
        b = _at(packed, q * k_ * nr)
        cols = min(nr, co - q * nr)
        halves = half or (not two and cols <= hn)
        mr = _MR_NARROW if two or halves else _MR_WIDE
        blocks = -(-(hi - lo) // mr)
        for i0 in range(lo, hi, mr):
            rows = min(mr, hi - i0)
            if prefetch and q + 1 < q_end:  # the next panel, a slice per block of rows
                prefetch_part(packed, q + 1, (i0 - lo) // mr, blocks)
            if two:
                micro_narrow(_at(a, i0 * k_), k_, rows, _at(offs, 0), k_, b, nr, _at(y, i0 * co + q * nr), co,
                             cols, _at(scale, q * nr), _at(shift, q * nr), relu, add)
            elif halves:  # each half of the panel that holds channels (see _direct_part)
                for c0 in range(0, cols, hn):
                    micro_narrow(_at(a, i0 * k_), k_, rows, _at(offs, 0), k_, _at(packed, q * k_ * nr + c0), nr,
                                 _at(y, i0 * co + q * nr + c0), co, min(hn, cols - c0), _at(scale, q * nr + c0),
                                 _at(shift, q * nr + c0), relu, add)
            else:
                micro_wide(_at(a, i0 * k_), k_, rows, _at(offs, 0), k_, b, nr, _at(y, i0 * co + q * nr), co,
                           cols, _at(scale, q * nr), _at(shift, q * nr), relu, add)


@njit(nogil=True)
def span_start(t, nt, m, packed, co):
    """Where thread t of nt starts on :func:`_pointwise_packed`'s panel-major line of M rows under each of
    ``packed``'s panels (t = nt: the line's end), the line cut into spans of equal cost.

    A row under a full panel costs two, under a last panel at most half full one (it runs on half a panel);
    a cut inside a panel falls on a whole tile of rows. At batch 1 the middle flow's 728 channels are 11
    full panels and one of 24 channels: each thread 5.75 panels' work, where whole panels gave one 6 and the
    other 5 and the partial one, which cost a full panel (docs/performance.md, "Issue 15, 2026-11-30
    17:00-18:40 UTC").
    """
    p_, _, nr = packed.shape
    if t <= 0 or m == 0:
        return 0
    if t >= nt:
        return p_ * m
    two = narrow(packed)
    cheap = p_ > 0 and not two and co - (p_ - 1) * nr <= nr // 2
    full = p_ - 1 if cheap else p_
    c = m * (2 * full + (1 if cheap else 0)) * t // nt
    if c <= 2 * full * m:
        q, i = divmod(c // 2, m)
        mr = _MR_NARROW if two or _half_panels(m, two) else _MR_WIDE
    else:
        q, i = full, c - 2 * full * m
        mr = _MR_NARROW
    return q * m + min(m, (i + mr // 2) // mr * mr)


# ---- the pointwise GEMM, compiled once a dtype and called by name ------------
# As the depthwise row (npxception/fast/kernels.py): Numba links a callee's LLVM IR into each caller and
# optimizes and generates it again there, and the microkernel's three call sites are most of a fused kernel's
# compile. So _pointwise_packed is compiled once per dtype as a C-callable function bound to a symbol, and the
# fused kernels call that name (docs/performance.md, "Cold compile").

def _signature(dtype):
    """a, M, K, packed, panels, NR, offs, scale, shift, relu, add, y, C_out, prefetch, g0, g1: the arrays as
    pointers to C-contiguous data, the flags as integers (0 or 1)."""
    p, i = types.CPointer(numba.from_dtype(dtype)), types.int64
    return types.void(p, i, i, p, i, i, types.CPointer(i), p, p, i, i, p, i, i, i, i)


_SYMBOL = {dt: symbol_name(f"npxception_pointwise_{dt.name}", _signature(dt))
           for dt in (np.dtype(np.float32), np.dtype(np.float64))}
_EXTERNAL = {dt: types.ExternalFunction(name, _signature(dt)) for dt, name in _SYMBOL.items()}


def _pointwise_c(a, m, k, packed, panels, nr, offs, scale, shift, relu, add, y, co, prefetch, g0, g1):
    """:func:`_pointwise_packed` on raw pointers."""
    _pointwise_packed(carray(a, (m, k)), carray(packed, (panels, k, nr)), carray(offs, (k,)), carray(scale, (co,)),
                      carray(shift, (co,)), relu != 0, add != 0, carray(y, (m, co)), prefetch != 0, g0, g1)


def bind(dtype):
    """Compile (or load from the cache) the pointwise GEMM for ``dtype`` and bind its symbol; idempotent. Every
    kernel compiled with a packed kernel of ``dtype`` calls it: its Python wrapper binds first
    (npxception/fast/fused.py, ``bind_symbols``)."""
    dt = np.dtype(dtype)
    bind_symbol(_SYMBOL[dt], _signature(dt), _pointwise_c)


def pointwise_tile(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
    """y = relu?(a @ kernel * scale + shift), or y += that when ``add``, by the microkernel.

    a (M, K), y (M, C_out), C-contiguous float32 or float64; ``packed`` is
    :func:`pack_kernel` of the (K, C_out) kernel. ``prefetch`` asks for each
    next panel ahead (a hint). Called from kernels (an overload below); as
    Python (``NUMBA_DISABLE_JIT=1``) this body, its NumPy twin, runs.
    """
    pointwise_panels(a, packed, offs, scale, shift, relu, add, y, 0, packed.shape[0] * a.shape[0], prefetch)


def pointwise_panels(a, packed, offs, scale, shift, relu, add, y, g0, g1, prefetch=True):
    """:func:`pointwise_tile` over the span [g0, g1) of the panel-major line of (output panel, row) pairs
    only: g = q * M + i is row i of a under panel q of ``packed`` (channels [q*NR, min((q+1)*NR, C_out)) of
    y); the rest of y untouched. Called from kernels (an overload below); as Python this body, its NumPy
    twin, runs."""
    m = a.shape[0]
    nr = packed.shape[2]
    if m == 0:
        return
    for q in range(g0 // m, min(packed.shape[0], -(-g1 // m))):
        lo, hi = max(g0 - q * m, 0), min(g1 - q * m, m)
        c0, c1 = q * nr, min((q + 1) * nr, y.shape[1])
        if c1 <= c0 or hi <= lo:
            continue
        v = a[lo:hi] @ unpack_panels(packed[q:q + 1], c1 - c0) * scale[c0:c1] + shift[c0:c1]
        if relu:
            v = np.maximum(v, 0)
        if add:
            y[lo:hi, c0:c1] += v
        else:
            y[lo:hi, c0:c1] = v


def _compiles_microkernel(packed, y):
    """Whether an overload below runs the microkernel: float32 or float64, ``packed`` of y's dtype;
    NO_MICROKERNEL (integers) packs nothing and must not compile it."""
    return y.dtype in (types.float32, types.float64) and packed.dtype == y.dtype


def _by_symbol(a, packed, offs, scale, shift, y):
    """The overloads' call of the bound symbol for these argument types; None where a kernel must not call it."""
    if any(arr.layout != "C" for arr in (a, packed, offs, scale, shift, y)):
        return None  # pointers need C-contiguous arrays; every caller passes them
    dt = np.dtype(str(y.dtype))
    bind(dt)  # a kernel compiled now links the symbol; one loaded from the cache has its wrapper bind it
    return _EXTERNAL[dt]


@overload(pointwise_tile)
def _pointwise_tile_compiled(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
    if not _compiles_microkernel(packed, y):
        def never(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
            pass
        return never
    fn = _by_symbol(a, packed, offs, scale, shift, y)
    if fn is None:
        return None

    def impl(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
        fn(_at(a, 0), a.shape[0], a.shape[1], _at(packed, 0), packed.shape[0], packed.shape[2], _at(offs, 0),
           _at(scale, 0), _at(shift, 0), 1 if relu else 0, 1 if add else 0, _at(y, 0), y.shape[1],
           1 if prefetch else 0, 0, packed.shape[0] * a.shape[0])
    return impl


@overload(pointwise_panels)
def _pointwise_panels_compiled(a, packed, offs, scale, shift, relu, add, y, g0, g1, prefetch=True):
    if not _compiles_microkernel(packed, y):
        def never(a, packed, offs, scale, shift, relu, add, y, g0, g1, prefetch=True):
            pass
        return never
    fn = _by_symbol(a, packed, offs, scale, shift, y)
    if fn is None:
        return None

    def impl(a, packed, offs, scale, shift, relu, add, y, g0, g1, prefetch=True):
        fn(_at(a, 0), a.shape[0], a.shape[1], _at(packed, 0), packed.shape[0], packed.shape[2], _at(offs, 0),
           _at(scale, 0), _at(shift, 0), 1 if relu else 0, 1 if add else 0, _at(y, 0), y.shape[1],
           1 if prefetch else 0, g0, g1)
    return impl
