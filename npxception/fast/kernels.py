"""The fast plan's Numba kernels, each with its plain NumPy twin (``*_reference``) beside it.

tests/test_fast_kernels.py compares every kernel with its twin, and the twins
with the ops (npxception/ops/), which are tested against TensorFlow.

* depthwise 3x3 SAME with an optional ReLU on its input, by rows (the first
  half of every separable convolution);
* the folded-BN epilogue ``y * scale + shift`` with an optional ReLU or an add
  into a residual;
* max-pool + residual add in one pass;
* im2col (the ops' own kernel, npxception/ops/conv.py).
"""

from __future__ import annotations


import numba
import numpy as np
from numba import carray, types
from numba.extending import intrinsic, overload

from .._jit import njit, prange
from .symbols import bind_symbol, symbol_name
from .threads import in_parallel
from ..ops.conv import _im2col
from ..ops.padding import tap_view
from ..ops.pooling import max_pool2d


@njit(fastmath={"contract"}, inline="always")  # compiled once, in depthwise_row
def _depthwise_row(top, mid, bot, k, lo, o):
    """One output row of a depthwise 3x3 SAME convolution; each input read as max(v, lo).

    top, mid, bot (W, C): input rows h-1, h, h+1 (zeros where outside the
    image); k (3, 3, C); o (W, C). lo = 0 applies a ReLU to the input; -inf none.
    o[w, c] = sum_{i,j} max(row_i[w+j-1, c], lo) * k[i, j, c]   (columns outside skipped)

    Interior columns go four at a time (:func:`_depthwise_4`), the first and
    last and any leftovers one at a time (:func:`_depthwise_cols`).
    """
    w_ = mid.shape[0]
    w = 1
    while w + 4 <= w_ - 1:
        _depthwise_4(top, mid, bot, k, lo, o, w)
        w += 4
    for w0, w1 in ((0, min(1, w_)), (max(w, 1), w_)):  # one call site: the kernel is inlined once
        _depthwise_cols(top, mid, bot, k, lo, o, w0, w1)


@njit(fastmath={"contract"}, inline="always")  # compiled once, in depthwise_row
def _depthwise_4(top, mid, bot, k, lo, o, w):
    """Output columns w..w+3, all interior (1 <= w, w+4 <= W-1).

    Per channel the 9 taps and the 18 inputs they need (columns w-1..w+4 of the
    three rows) are loaded once and shared by the four outputs: 27 loads for 36
    multiply-adds, where one column at a time takes 18 loads for 9 (timings:
    docs/performance.md).
    """
    c_ = mid.shape[1]
    k00 = k[0, 0]; k01 = k[0, 1]; k02 = k[0, 2]  # noqa: E702  (the taps k[i, j])
    k10 = k[1, 0]; k11 = k[1, 1]; k12 = k[1, 2]  # noqa: E702
    k20 = k[2, 0]; k21 = k[2, 1]; k22 = k[2, 2]  # noqa: E702
    t_0, t_1, t_2, t_3, t_4, t_5 = top[w - 1], top[w], top[w + 1], top[w + 2], top[w + 3], top[w + 4]
    m_0, m_1, m_2, m_3, m_4, m_5 = mid[w - 1], mid[w], mid[w + 1], mid[w + 2], mid[w + 3], mid[w + 4]
    b_0, b_1, b_2, b_3, b_4, b_5 = bot[w - 1], bot[w], bot[w + 1], bot[w + 2], bot[w + 3], bot[w + 4]
    o0, o1, o2, o3 = o[w], o[w + 1], o[w + 2], o[w + 3]
    for c in range(c_):
        a0, a1, a2 = k00[c], k01[c], k02[c]
        b0, b1, b2 = k10[c], k11[c], k12[c]
        d0, d1, d2 = k20[c], k21[c], k22[c]
        t0, t1, t2 = max(t_0[c], lo), max(t_1[c], lo), max(t_2[c], lo)
        t3, t4, t5 = max(t_3[c], lo), max(t_4[c], lo), max(t_5[c], lo)
        m0, m1, m2 = max(m_0[c], lo), max(m_1[c], lo), max(m_2[c], lo)
        m3, m4, m5 = max(m_3[c], lo), max(m_4[c], lo), max(m_5[c], lo)
        e0, e1, e2 = max(b_0[c], lo), max(b_1[c], lo), max(b_2[c], lo)
        e3, e4, e5 = max(b_3[c], lo), max(b_4[c], lo), max(b_5[c], lo)
        o0[c] = t0 * a0 + t1 * a1 + t2 * a2 + m0 * b0 + m1 * b1 + m2 * b2 + e0 * d0 + e1 * d1 + e2 * d2
        o1[c] = t1 * a0 + t2 * a1 + t3 * a2 + m1 * b0 + m2 * b1 + m3 * b2 + e1 * d0 + e2 * d1 + e3 * d2
        o2[c] = t2 * a0 + t3 * a1 + t4 * a2 + m2 * b0 + m3 * b1 + m4 * b2 + e2 * d0 + e3 * d1 + e4 * d2
        o3[c] = t3 * a0 + t4 * a1 + t5 * a2 + m3 * b0 + m4 * b1 + m5 * b2 + e3 * d0 + e4 * d1 + e5 * d2


@njit(fastmath={"contract"}, inline="always")  # compiled once, in depthwise_row
def _depthwise_cols(top, mid, bot, k, lo, o, w0, w1):
    """Output columns w0..w1-1 one at a time, skipping the taps that fall in the padding."""
    w_, c_ = mid.shape
    for w in range(w0, w1):
        ow = o[w]
        t1, m1, b1 = top[w], mid[w], bot[w]
        for c in range(c_):
            ow[c] = max(t1[c], lo) * k[0, 1, c] + max(m1[c], lo) * k[1, 1, c] + max(b1[c], lo) * k[2, 1, c]
        if w > 0:
            t0, m0, b0 = top[w - 1], mid[w - 1], bot[w - 1]
            for c in range(c_):
                ow[c] += max(t0[c], lo) * k[0, 0, c] + max(m0[c], lo) * k[1, 0, c] + max(b0[c], lo) * k[2, 0, c]
        if w < w_ - 1:
            t2, m2, b2 = top[w + 1], mid[w + 1], bot[w + 1]
            for c in range(c_):
                ow[c] += max(t2[c], lo) * k[0, 2, c] + max(m2[c], lo) * k[1, 2, c] + max(b2[c], lo) * k[2, 2, c]


# ---- the depthwise row, compiled once and called by name (npxception/fast/symbols.py) ----
# The row above, unrolled four columns at a time, was rebuilt in each of its callers, parallel gufuncs
# included: most of the cold compile. So it is compiled once per dtype as a C-callable function bound to a
# symbol name, and the kernels call that name.

def _row_signature(dtype):
    real = numba.from_dtype(dtype)
    p = types.CPointer(real)
    return types.void(p, p, p, p, real, p, types.int64, types.int64)


_ROW_SYMBOL = {dt: symbol_name(f"npxception_depthwise_row_{dt.name}", _row_signature(dt))
               for dt in (np.dtype(np.float32), np.dtype(np.float64))}
_ROW_EXTERNAL = {dt: types.ExternalFunction(name, _row_signature(dt)) for dt, name in _ROW_SYMBOL.items()}


def _row_c(top, mid, bot, k, lo, o, w, c):
    """depthwise_row on raw pointers: rows (W, C), taps (3, 3, C), all C-contiguous."""
    _depthwise_row(carray(top, (w, c)), carray(mid, (w, c)), carray(bot, (w, c)), carray(k, (3, 3, c)), lo,
                   carray(o, (w, c)))


def bind_symbols(dtype):
    """Compile (or load from the cache) the row kernel for ``dtype`` and bind its symbol; idempotent.

    Every kernel that calls :func:`depthwise_row` needs this first: its Python
    wrapper calls it. Not done at import, so that importing compiles nothing.
    """
    dt = np.dtype(dtype)
    bind_symbol(_ROW_SYMBOL[dt], _row_signature(dt), _row_c, fastmath={"contract"})


@intrinsic
def _data(typingctx, arr):
    """The data pointer of a C-contiguous array, typed (a CPointer of its dtype)."""
    def codegen(context, builder, signature, args):
        return context.make_array(arr)(context, builder, args[0]).data
    return types.CPointer(arr.dtype)(arr), codegen


def depthwise_row(top, mid, bot, k, lo, o):
    """:func:`_depthwise_row`, called from kernels through its compiled symbol (plain Python without JIT)."""
    _depthwise_row(top, mid, bot, k, lo, o)


@overload(depthwise_row)
def _depthwise_row_by_symbol(top, mid, bot, k, lo, o):
    if any(a.layout != "C" for a in (top, mid, bot, k, o)):
        return None  # pointers need C-contiguous rows; every caller passes them
    row = _ROW_EXTERNAL[np.dtype(str(o.dtype))]

    def impl(top, mid, bot, k, lo, o):
        row(_data(top), _data(mid), _data(bot), _data(k), lo, _data(o), mid.shape[0], mid.shape[1])
    return impl


@njit(parallel=True)
def _depthwise3x3_same_rows(x, k, out, relu_in, row0, row1):
    """Depthwise 3x3, stride 1, SAME padding, optional ReLU on the input, for rows row0..row1-1.

    x (N, H, W, C), k (3, 3, C); a "row" is one (n, h) pair, numbered n*H + h.
    out ((row1 - row0) * W, C) — the GEMM's left operand for those rows:
    out[(n*H + h - row0)*W + w, c] = sum_{i,j} relu?(x[n, h+i-1, w+j-1, c]) * k[i, j, c]  (zero outside)
    """
    n_, h_, w_, c_ = x.shape
    lo = x.dtype.type(0) if relu_in else x.dtype.type(-np.inf)
    zero = np.zeros((w_, c_), x.dtype)
    xr = x.reshape(n_ * h_, w_, c_)
    for nh in prange(row0, row1):
        h = nh % h_
        top = xr[nh - 1] if h > 0 else zero
        bot = xr[nh + 1] if h < h_ - 1 else zero
        depthwise_row(top, xr[nh], bot, k, lo, out[(nh - row0) * w_:(nh - row0 + 1) * w_])


def depthwise3x3_same_rows(x, k, out, relu_in, row0, row1):
    """:func:`_depthwise3x3_same_rows`, once the row kernel's symbol is bound."""
    bind_symbols(x.dtype)
    _depthwise3x3_same_rows(x, k, out, relu_in, row0, row1)


def depthwise3x3_same(x, k, out, relu_in):
    """:func:`depthwise3x3_same_rows` over every row: out (N*H*W, C)."""
    depthwise3x3_same_rows(x, k, out, relu_in, 0, x.shape[0] * x.shape[1])


def depthwise3x3_same_reference(x, k, relu_in):
    """NumPy twin of :func:`depthwise3x3_same` (tap by tap, zero padding)."""
    if relu_in:
        x = np.maximum(x, 0)
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out += tap_view(xp, i, j, (1, 1), (h, w)) * k[i, j]
    return out.reshape(n * h * w, c)


@njit
def _epilogue(y, scale, shift, relu, res):
    """y = relu?(y * scale + shift) in place; or, if res has rows, res += relu?(y * scale + shift)."""
    add = res.shape[0] > 0
    for r in range(y.shape[0]):
        row = y[r]
        for c in range(y.shape[1]):
            v = row[c] * scale[c] + shift[c]
            if relu and v < 0:
                v = 0.0
            if add:
                res[r, c] += v
            else:
                row[c] = v


@njit(parallel=True)
def affine_act(y, scale, shift, relu):
    """In place, the folded BN: y = y * scale + shift, then ReLU if asked. y (M, C); scale, shift (C,)."""
    for r in prange(y.shape[0]):
        _epilogue(y[r:r + 1], scale, shift, relu, y[:0])


@njit(parallel=True)
def affine_add_residual(y, scale, shift, res):
    """In place on res, the middle flow's BN and Add: res = y * scale + shift + res. All rows (M, C)."""
    for r in prange(y.shape[0]):
        _epilogue(y[r:r + 1], scale, shift, False, res[r:r + 1])


def affine_act_reference(y, scale, shift, relu):
    """NumPy twin of :func:`affine_act`, as a new array: y * scale + shift, then ReLU if asked (-0.0 and NaN kept,
    as the kernel's ``v < 0`` test keeps them)."""
    out = y * scale + shift  # (M, C) * (C,) + (C,)
    return np.where(out < 0, out.dtype.type(0), out) if relu else out


def affine_add_residual_reference(y, scale, shift, res):
    """NumPy twin of :func:`affine_add_residual`, as a new array: res + (y * scale + shift)."""
    return res + (y * scale + shift)


def maxpool_add(x, res, k, stride, pad_t, pad_l, out, threads=None):
    """out = max_pool(k x k, stride, padded cells never win)(x) + res.

    x (N, H, W, C); res and out (N, H', W', C). Output pixel (oh, ow) reads
    rows oh*stride - pad_t .. + k - 1 (and likewise columns), skipping those
    outside x; H', pad_t and pad_l come from npxception/ops/padding.py.
    The output rows are shared among ``threads`` threads (default: as many as
    the fused layers use, ``numba.get_num_threads()``; npxception/fast/threads.py).
    """
    nt = numba.get_num_threads() if threads is None else threads
    in_parallel(_maxpool_add_part, nt, (nt, x, res, k, stride, pad_t, pad_l, out))


@njit(nogil=True)
def _maxpool_add_part(t, nt, x, res, k, stride, pad_t, pad_l, out):
    """Thread t's share of :func:`maxpool_add`: output rows (n, oh) numbered [a_t, b_t)."""
    n_, h_, w_, c_ = x.shape
    _, ho_, wo_, _ = out.shape
    rows = n_ * ho_
    per = -(-rows // nt)
    for nh in range(t * per, min(rows, (t + 1) * per)):
        n = nh // ho_
        oh = nh % ho_
        for ow in range(wo_):
            o = out[n, oh, ow]
            r = res[n, oh, ow]
            for c in range(c_):
                o[c] = -np.inf
            for i in range(k):
                hi = oh * stride + i - pad_t
                if hi < 0 or hi >= h_:
                    continue
                for j in range(k):
                    wj = ow * stride + j - pad_l
                    if wj < 0 or wj >= w_:
                        continue
                    src = x[n, hi, wj]
                    for c in range(c_):
                        if src[c] > o[c]:
                            o[c] = src[c]
            for c in range(c_):
                o[c] += r[c]


def maxpool_add_reference(x, res, k, stride, padding):
    """NumPy twin of :func:`maxpool_add` (the ops' reference max pool, then the add)."""
    return max_pool2d(x, pool_size=k, strides=stride, padding=padding, impl="reference") + res


def im2col(x, kh, kw, stride, pad_t, pad_l, ho, wo, out):
    """Patches for a convolution: out[(n, oh, ow), (i, j, c)] = x[n, oh*s+i-pad_t, ow*s+j-pad_l, c].

    Zero outside the image. out (N*Ho*Wo, KH*KW*C), laid out so that
    ``out @ kernel.reshape(KH*KW*C, C_out)`` is the convolution. The kernel is
    the ops' own (npxception/ops/conv.py), with one stride for both axes.
    """
    _im2col(x, kh, kw, stride, stride, pad_t, pad_l, ho, wo, out)


def im2col_reference(x, kh, kw, stride, pad_t, pad_l, ho, wo):
    """NumPy twin of :func:`im2col`: the padded input's tap views, side by side."""
    n, h, w, c = x.shape
    pad_b = max((ho - 1) * stride + kh - h - pad_t, 0)
    pad_r = max((wo - 1) * stride + kw - w - pad_l, 0)
    xp = np.pad(x, ((0, 0), (pad_t, pad_b), (pad_l, pad_r), (0, 0)))
    cols = [tap_view(xp, i, j, (stride, stride), (ho, wo)) for i in range(kh) for j in range(kw)]
    return np.concatenate(cols, axis=-1).reshape(n * ho * wo, kh * kw * c)
