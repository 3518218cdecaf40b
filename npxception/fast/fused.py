"""Fused layers: one parallel region per layer, the GEMM called from each thread.

With NumPy's bundled OpenBLAS reachable from Numba (npxception/blas.py), each
thread takes its own rows through depthwise (or im2col) -> GEMM -> epilogue,
tile by tile, while they are in its cache. Only our threads run (as many as
Numba's; npxception/fast/threads.py): OpenBLAS' pool is never woken (~70 us a
wake-up on 2 cores; docs/performance.md) and Numba's, started only to tell
its thread count, is never given work. Each kernel's twin (``*_reference``, below it) composes the
twins in npxception/fast/kernels.py; tests/test_fast_kernels.py compares them.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from .._jit import njit
from ..blas import NO_TRANS, ROW_MAJOR, dgemm, sgemm
from ..ops.conv import _im2col_row
from . import direct, kernels, pointwise
from .micro import prefetch_part
from .pointwise import pointwise_panels, pointwise_tile, span_start
from .kernels import _epilogue, depthwise3x3_same_reference, depthwise_row, im2col_reference
from .threads import in_parallel


@njit
def _gemm(a, b, c):
    """c = a @ b by NumPy's OpenBLAS, from inside a kernel. a (M, K), b (K, N), c (M, N), C-contiguous.

    Runs on the calling thread (the caller holds blas.single_threaded()).
    """
    m, k = a.shape
    n = b.shape[1]
    if m == 0:
        return
    if a.itemsize == 4:
        sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, np.float32(1.0), a.ctypes.data, k,
              b.ctypes.data, n, np.float32(0.0), c.ctypes.data, n)
    else:
        dgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, 1.0, a.ctypes.data, k,
              b.ctypes.data, n, 0.0, c.ctypes.data, n)


_BOUND: set = set()  # the (dtype, pointwise_too) pairs bound: a set lookup, as it runs before every step


def bind_symbols(dtype, pointwise_too=None):
    """Bind the symbols the fused kernels of ``dtype`` call: the depthwise row, and the pointwise GEMM when
    ``pointwise_too`` (the step has a packed kernel; None: wherever the microkernel runs,
    :func:`npxception.fast.direct.worth_packing`). Before any such kernel is called: one loaded from Numba's
    cache needs its symbols bound, or LLVM ends the process (review 31, R2: the wrappers say what their step
    needs rather than rely on the probe having bound it)."""
    key = (dtype, pointwise_too)
    if key in _BOUND:
        return
    dt = np.dtype(dtype)
    kernels.bind_symbols(dt)
    if direct.worth_packing(dt) if pointwise_too is None else pointwise_too:
        pointwise.bind(dt)
    _BOUND.add(key)


NOT_PACKED = np.empty((0, 0, 32), np.float32)  # no pointwise kernel packed in advance (a float32 plan's)

# The small constant arrays the kernels read, made once: a call's Python costs 5-30 us under load for each
# one made anew, ~45 steps a pass (docs/performance.md, "Issue 15, 2026-11-30 14:00-15:30 UTC"). Bounded (photos at
# their own size bring new widths); never written: every kernel only reads them.
@functools.lru_cache(maxsize=64)
def _zero_row(shape, dtype):
    """A zero (W, C) row of ``dtype``: the depthwise kernels' padding row."""
    return np.zeros(shape, dtype)


@functools.lru_cache(maxsize=64)
def _taps(n):
    """``arange(n)`` as int64: the microkernel's taps over a row of n values."""
    return np.arange(n, dtype=np.int64)


def sep_conv_fused(x, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch, tile_rows, saved,
                   packed=NOT_PACKED):
    """A whole separable conv + folded BN: relu?(depthwise(relu?(x)) @ pw * scale + shift).

    x (N, H, W, C); dw (3, 3, C); pw (C, Co). The result goes to out
    (N*H*W, Co), which may be x itself (in place); or, when ``residual``
    (N*H*W, Co) has rows, it is added into residual, and out is a
    (T * tile_rows * W, Co) scratch. scratch (T, tile_rows * W, C): each
    thread's depthwise tile; saved (T, 3, W, C): each thread's saved input rows.

    Thread t takes the image rows (n, h) numbered [a_t, b_t), ``tile_rows`` at a
    time: depthwise into its scratch, GEMM, epilogue. In place, a tile's GEMM
    overwrites input rows that the 3x3 window still needs: so the row above
    each thread's first and the row below its last are saved before any thread
    starts, and each tile's last input row before its GEMM, for the next tile.

    The GEMM and its epilogue: OpenBLAS then a pass over the tile, or, when
    ``packed`` is given (the kernel packed in advance, AVX-512), the
    microkernel of npxception/fast/direct.py with the epilogue from registers
    (docs/performance.md, "Issue 15, 2026-11-29 17:10-18:50 UTC: the register-tiled microkernel");
    ``pw`` then has no rows (the model holds that kernel only packed) and is not read.
    """
    bind_symbols(x.dtype, packed.shape[0] > 0)
    nt = scratch.shape[0]
    _save_halo_rows(x, nt, saved)
    zero = _zero_row(x.shape[2:], x.dtype)  # the padding row; made here, as np.zeros in a kernel compiles for ~0.4 s
    offs = _taps(x.shape[3] if packed.shape[0] else 0)  # the microkernel's taps: a row
    part = _sep_conv_packed if packed.shape[0] else _sep_conv_blas
    in_parallel(part, nt, (x, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch,
                                     tile_rows, saved, zero, packed, offs, direct.PREFETCH))


def sep_conv_by_panels(x, dw, scale, shift, relu_in, relu_out, dest, add, dwbuf, packed, threads):
    """:func:`sep_conv_fused`'s result, the threads sharing the output channels instead of the rows.

    dest (N*H*W, Co) = relu?(depthwise(relu?(x)) @ pw * scale + shift), or dest += that when ``add``; dest may
    be x itself. Two parallel regions: the depthwise of every row into dwbuf (N*H*W, C), the rows shared;
    then the pointwise GEMM of every row, each thread taking its share of the packed kernel's output panels.
    Each thread so reads half of the kernel and all of the depthwise output, where sharing rows reads all of
    the kernel and half of the output: less where the kernel (C x Co) outweighs the map (N*H*W x C)
    (:func:`npxception.fast.direct.shares_panels`; docs/performance.md, "Issue 15, 2026-11-30 04:50-06:30 UTC").
    The first region ends before the second writes, so dest may be x.
    """
    bind_symbols(x.dtype, True)
    zero = _zero_row(x.shape[2:], x.dtype)
    # while the depthwise runs, each thread asks for the first panel of its span of the GEMM ahead (a hint; the
    # prefetch is an intrinsic, so not as Python): 0.989 of the pass (docs/performance.md, "Issue 15,
    # 2026-11-30 17:00-18:40 UTC")
    first = direct.PREFETCH and not numba.config.DISABLE_JIT
    in_parallel(_depthwise_part, threads, (threads, x, dw, relu_in, zero, dwbuf, packed, dest.shape[1], first))
    offs = _taps(x.shape[3])
    in_parallel(_panels_part, threads, (threads, dwbuf, packed, offs, scale, shift, relu_out, add, dest,
                                        direct.PREFETCH))


@njit(nogil=True)
def _depthwise_part(t, nt, x, dw, relu_in, zero, buf, packed, co, prefetch):
    """Thread t's rows of :func:`sep_conv_by_panels`' depthwise: buf[(n, h) rows] = depthwise(relu?(x)); and,
    when ``prefetch``, the first panel of thread t's span of the pointwise GEMM that follows asked for ahead."""
    n_, h_, w_, c_ = x.shape
    rows = n_ * h_
    lo = x.dtype.type(0) if relu_in else x.dtype.type(-np.inf)
    xr = x.reshape(rows, w_, c_)
    per = -(-rows // nt)
    for nh in range(t * per, min(rows, (t + 1) * per)):
        h = nh % h_
        top = zero if h == 0 else xr[nh - 1]
        bot = zero if h == h_ - 1 else xr[nh + 1]
        depthwise_row(top, xr[nh], bot, dw, lo, buf[nh * w_:(nh + 1) * w_])
    if prefetch:
        prefetch_part(packed, span_start(t, nt, rows * w_, packed, co) // (rows * w_), 0, 1)


@njit(nogil=True)
def _panels_part(t, nt, a, packed, offs, scale, shift, relu, add, y, prefetch):
    """Thread t's span of :func:`sep_conv_by_panels`' pointwise GEMM: its output panels over every row, the
    panels cut where the threads' work is equal (:func:`~npxception.fast.pointwise.span_start`)."""
    m, co = a.shape[0], y.shape[1]
    pointwise_panels(a, packed, offs, scale, shift, relu, add, y, span_start(t, nt, m, packed, co),
                     span_start(t + 1, nt, m, packed, co), prefetch)


def sep_conv_fused_reference(x, dw, pw, scale, shift, relu_in, relu_out):
    """NumPy twin of :func:`sep_conv_fused`: depthwise twin, then ``@ pw``, affine, ReLU. -> (N*H*W, Co)."""
    y = depthwise3x3_same_reference(x, dw, relu_in) @ pw * scale + shift
    return np.maximum(y, 0) if relu_out else y


@njit
def _copy_row(dst, src):
    """dst[:] = src for two (W, C) arrays, as loops: Numba compiles an array assignment to far more code."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


def _save_halo_rows(x, nt, saved):
    """Before any thread writes: saved[t, 0] = the row above thread t's first, saved[t, 1] = below its last.

    In NumPy: a few (W, C) rows, microseconds, where a kernel would add its compile to the first call.
    """
    n_, h_, w_, c_ = x.shape
    rows = n_ * h_
    xr = x.reshape(rows, w_, c_)
    per = -(-rows // nt)
    for t in range(nt):
        a = t * per
        b = min(rows, a + per)
        if 0 < a < rows:
            saved[t, 0] = xr[a - 1]
        if b < rows:
            saved[t, 1] = xr[b]


@njit(nogil=True)
def _thread_rows(t, x, nt):
    """Thread t's image rows (n, h), numbered n*H + h, of nt threads' equal shares: [a, b)."""
    rows = x.shape[0] * x.shape[1]
    per = -(-rows // nt)
    return t * per, min(rows, t * per + per)


@njit(nogil=True)
def _depthwise_tile(t, x, dw, relu_in, saved, zero, scratch, r0, tile_rows):
    """Thread t's depthwise rows from r0, ``tile_rows`` of them or to the end of its share, into scratch[t];
    then saves the tile's last input row for the next tile (which its GEMM may overwrite in place). Returns
    the row after the tile's last."""
    a, b = _thread_rows(t, x, scratch.shape[0])
    r1 = min(b, r0 + tile_rows)
    h_, w_ = x.shape[1], x.shape[2]
    lo = x.dtype.type(0) if relu_in else x.dtype.type(-np.inf)
    xr = x.reshape(x.shape[0] * h_, w_, x.shape[3])
    buf = scratch[t]
    for nh in range(r0, r1):
        h = nh % h_
        if h == 0:
            top = zero
        elif nh - 1 < a:
            top = saved[t, 0]
        elif nh - 1 < r0:
            top = saved[t, 2]  # the previous tile's last row
        else:
            top = xr[nh - 1]
        if h == h_ - 1:
            bot = zero
        elif nh + 1 >= b:
            bot = saved[t, 1]
        else:
            bot = xr[nh + 1]
        depthwise_row(top, xr[nh], bot, dw, lo, buf[(nh - r0) * w_:(nh - r0 + 1) * w_])
    _copy_row(saved[t, 2], xr[r1 - 1])
    return r1


# Thread t's share of sep_conv_fused, in two kernels: with the kernel packed (the microkernel) and without
# (OpenBLAS, then the epilogue). One kernel holding both compiled both, where a plan runs one (AVX-512: every
# kernel packed); each compiled the other's code for nothing (~0.3-1 s of the cold compile).

@njit(nogil=True)
def _sep_conv_packed(t, x, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch, tile_rows, saved, zero,
                     packed, offs, prefetch):
    """Thread t's share of :func:`sep_conv_fused` with ``packed``: its rows, tile by tile. Correct in any order
    of t."""
    w_, add = x.shape[2], residual.shape[0] > 0
    a, b = _thread_rows(t, x, scratch.shape[0])
    for r0 in range(a, b, tile_rows):
        r1 = _depthwise_tile(t, x, dw, relu_in, saved, zero, scratch, r0, tile_rows)
        dest = residual[r0 * w_:r1 * w_] if add else out[r0 * w_:r1 * w_]
        pointwise_tile(scratch[t][:(r1 - r0) * w_], packed, offs, scale, shift, relu_out, add, dest, prefetch)


@njit(nogil=True)
def _sep_conv_blas(t, x, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch, tile_rows, saved, zero,
                   packed, offs, prefetch):
    """Thread t's share of :func:`sep_conv_fused` with ``pw`` (nothing packed): its rows, tile by tile,
    OpenBLAS then the epilogue. Correct in any order of t."""
    w_, add = x.shape[2], residual.shape[0] > 0
    a, b = _thread_rows(t, x, scratch.shape[0])
    tile = scratch.shape[1]
    for r0 in range(a, b, tile_rows):
        r1 = _depthwise_tile(t, x, dw, relu_in, saved, zero, scratch, r0, tile_rows)
        m = (r1 - r0) * w_
        if add:
            y = out[t * tile:t * tile + m]
            res = residual[r0 * w_:r1 * w_]
        else:
            y = out[r0 * w_:r1 * w_]
            res = residual[:0]
        _gemm(scratch[t][:m], pw, y)
        _epilogue(y, scale, shift, relu_out, res)


def conv_fused(x, kernel, kh, stride, pad_t, pad_l, ho, wo, scale, shift, relu_out, out, cols, tiles):
    """A convolution + folded BN: out = relu?(im2col(x) @ kernel * scale + shift).

    x (N, H, W, C); kernel (KH*KH*C, Co); out (N*Ho*Wo, Co); cols
    (T, tile rows * Wo, KH*KH*C): each thread's patch tile. Thread t takes
    output rows (n, oh) [a_t, b_t), ``tiles`` at a time.
    """
    in_parallel(_conv_part, cols.shape[0], (x, kernel, kh, stride, pad_t, pad_l, ho, wo, scale, shift, relu_out,
                                            out, cols, tiles))


@njit(nogil=True)
def _conv_part(t, x, kernel, kh, stride, pad_t, pad_l, ho, wo, scale, shift, relu_out, out, cols, tiles):
    """Thread t's share of :func:`conv_fused`: its output rows, ``tiles`` at a time."""
    rows = x.shape[0] * ho
    per = -(-rows // cols.shape[0])
    a = t * per
    b = min(rows, a + per)
    r0 = a
    while r0 < b:
        r1 = min(b, r0 + tiles)
        m = (r1 - r0) * wo
        buf = cols[t, :m]
        for r in range(r0, r1):  # output row r is (n, oh) = divmod(r, Ho)
            _im2col_row(x, r // ho, r % ho, kh, kh, stride, stride, pad_t, pad_l, wo,
                        buf[(r - r0) * wo:(r - r0 + 1) * wo])
        y = out[r0 * wo:r1 * wo]
        _gemm(buf, kernel, y)
        _epilogue(y, scale, shift, relu_out, out[:0])
        r0 = r1


def conv_fused_reference(x, kernel, kh, stride, pad_t, pad_l, ho, wo, scale, shift, relu_out):
    """NumPy twin of :func:`conv_fused`: im2col twin, then ``@ kernel``, affine, ReLU. -> (N*Ho*Wo, Co)."""
    y = im2col_reference(x, kh, kh, stride, pad_t, pad_l, ho, wo) @ kernel * scale + shift
    return np.maximum(y, 0) if relu_out else y
