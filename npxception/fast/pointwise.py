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

import numpy as np
from numba import types
from numba.extending import overload

from .._jit import njit
from .micro import MR_NARROW as _MR_NARROW, MR_WIDE as _MR_WIDE, at as _at, half_panels as _half_panels
from .micro import micro_narrow, micro_wide, narrow, prefetch_part
from .packing import unpack_panels


@njit(nogil=True)
def _pointwise_packed(a, packed, offs, scale, shift, relu, add, y, prefetch, q0, q1):
    """y (M, C_out) = relu?(a @ kernel * scale + shift), or y += that when ``add``, in the output panels
    [q0, q1) only (channels [q0*NR, min(q1*NR, C_out))); a (M, K) C-contiguous.

    ``packed`` is :func:`pack_kernel` (kernel); ``offs`` is ``arange(K)``: the
    microkernel's taps are then the row's K values.
    """
    m, k_ = a.shape
    p_, _, nr = packed.shape
    co = y.shape[1]
    two = narrow(packed)
    half = _half_panels(m, two)
    mr = _MR_NARROW if two or half else _MR_WIDE
    blocks = -(-m // mr)
    for q in range(q0, q1):
        b = _at(packed, q * k_ * nr)
        cols = min(nr, co - q * nr)
        for i0 in range(0, m, mr):
            rows = min(mr, m - i0)
            if prefetch and q + 1 < q1:  # the next panel, a slice per block of rows
                prefetch_part(packed, q + 1, i0 // mr, blocks)
            if two:
                micro_narrow(_at(a, i0 * k_), k_, rows, _at(offs, 0), k_, b, nr, _at(y, i0 * co + q * nr), co,
                             cols, _at(scale, q * nr), _at(shift, q * nr), relu, add)
            elif half:  # each half of the panel (see _direct_part)
                hn = nr // 2
                for c0 in range(0, cols, hn):
                    micro_narrow(_at(a, i0 * k_), k_, rows, _at(offs, 0), k_, _at(packed, q * k_ * nr + c0), nr,
                                 _at(y, i0 * co + q * nr + c0), co, min(hn, cols - c0), _at(scale, q * nr + c0),
                                 _at(shift, q * nr + c0), relu, add)
            else:
                micro_wide(_at(a, i0 * k_), k_, rows, _at(offs, 0), k_, b, nr, _at(y, i0 * co + q * nr), co,
                           cols, _at(scale, q * nr), _at(shift, q * nr), relu, add)


def pointwise_tile(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
    """y = relu?(a @ kernel * scale + shift), or y += that when ``add``, by the microkernel.

    a (M, K), y (M, C_out), C-contiguous float32 or float64; ``packed`` is
    :func:`pack_kernel` of the (K, C_out) kernel. ``prefetch`` asks for each
    next panel ahead (a hint). Called from kernels (an overload below); as
    Python (``NUMBA_DISABLE_JIT=1``) this body, its NumPy twin, runs.
    """
    pointwise_panels(a, packed, offs, scale, shift, relu, add, y, 0, packed.shape[0], prefetch)


def pointwise_panels(a, packed, offs, scale, shift, relu, add, y, q0, q1, prefetch=True):
    """:func:`pointwise_tile` in the output panels [q0, q1) of ``packed`` only: channels
    [q0*NR, min(q1*NR, C_out)) of y, the others untouched. Called from kernels (an overload below); as Python
    this body, its NumPy twin, runs."""
    nr = packed.shape[2]
    c0, c1 = q0 * nr, min(q1 * nr, y.shape[1])
    if c1 <= c0:
        return
    v = a @ unpack_panels(packed[q0:q1], c1 - c0) * scale[c0:c1] + shift[c0:c1]
    if relu:
        v = np.maximum(v, 0)
    if add:
        y[:, c0:c1] += v
    else:
        y[:, c0:c1] = v


def _compiles_microkernel(packed, y):
    """Whether an overload below runs the microkernel: float32 or float64, ``packed`` of y's dtype;
    NO_MICROKERNEL (integers) packs nothing and must not compile it."""
    return y.dtype in (types.float32, types.float64) and packed.dtype == y.dtype


@overload(pointwise_tile)
def _pointwise_tile_compiled(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
    if not _compiles_microkernel(packed, y):
        def never(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
            pass
        return never

    def impl(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
        _pointwise_packed(a, packed, offs, scale, shift, relu, add, y, prefetch, 0, packed.shape[0])
    return impl


@overload(pointwise_panels)
def _pointwise_panels_compiled(a, packed, offs, scale, shift, relu, add, y, q0, q1, prefetch=True):
    if not _compiles_microkernel(packed, y):
        def never(a, packed, offs, scale, shift, relu, add, y, q0, q1, prefetch=True):
            pass
        return never

    def impl(a, packed, offs, scale, shift, relu, add, y, q0, q1, prefetch=True):
        _pointwise_packed(a, packed, offs, scale, shift, relu, add, y, prefetch, q0, q1)
    return impl
