"""The fast whole-network path: BatchNorm folded, epilogues fused, buffers reused.

``model(x)`` runs this plan; ``model.forward(x, capture=...)`` runs the plain
op-by-op path, which keeps every named activation. Both are tested against
Keras at the same tolerances (tests/test_model_keras.py).

What the plan does differently from the op-by-op path, and why:

* **BN folded.** An inference BN after a convolution is an affine map per
  output channel, ``BN(z) = s * z + t`` with ``s = gamma / sqrt(var + eps)``
  and ``t = beta - s * mean``. Scaling the convolution's output channels by
  ``s`` equals scaling its kernel's last axis, but a scaled copy of the kernels
  would double the 88 MB of weights (the unscaled ones stay, for capture and
  the reference path). So ``s`` and ``t`` are applied together in one fused
  epilogue on each GEMM output tile, with the ReLU or Add that follows.
* **ReLU fused.** A ReLU before a separable convolution is applied as the
  depthwise kernel reads its input; a ReLU after a BN is applied in the epilogue.
* **Max-pool fused with the residual add**, and the middle flow's Add fused into
  the epilogue of its last pointwise convolution.
* **Pointwise convolutions are BLAS GEMMs** on contiguous ``(rows, C)`` tiles:
  depthwise into a tile, GEMM straight into the output, epilogue while the tile
  is warm. Two ways:

  - *fused* (with NumPy's bundled OpenBLAS, the default): one parallel region
    per layer; each Numba thread takes its own rows through depthwise (or
    im2col) -> single-threaded GEMM -> epilogue (:func:`sep_conv_fused`,
    :func:`conv_fused`, npxception/blas.py). Only Numba's threads run, so no
    second thread pool is woken (~70 us a wake-up) or left spinning.
  - *between kernels* (any other BLAS, or ``NPXCEPTION_GEMM=numpy``): a Numba
    depthwise kernel, ``np.matmul(..., out=)`` on OpenBLAS' own threads, a
    Numba epilogue, tile by tile.
* **Buffers come from a small arena** keyed by role, sized on first use and
  reused between calls (about 32 MB at 299x299, batch 1).

Every fused kernel has a plain NumPy twin (``*_reference``) next to it, and the
tests compare the two.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from . import architecture as arch
from . import blas
from .blas import NO_TRANS, ROW_MAJOR, dgemm, sgemm
from ._jit import njit, prange
from .config import CONFIG
from .model import _run_head
from .ops.conv import _im2col, _im2col_row

# ---------------------------------------------------------------------------
# kernels and their twins
# ---------------------------------------------------------------------------


@njit(fastmath={"contract"})
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
    _depthwise_cols(top, mid, bot, k, lo, o, 0, min(1, w_))
    _depthwise_cols(top, mid, bot, k, lo, o, max(w, 1), w_)


@njit(fastmath={"contract"})
def _depthwise_4(top, mid, bot, k, lo, o, w):
    """Output columns w..w+3, all interior (1 <= w, w+4 <= W-1).

    Per channel the 9 taps and the 18 inputs they need (columns w-1..w+4 of the
    three rows) are loaded once and shared by the four outputs: 27 loads for 36
    multiply-adds, where one column at a time takes 18 loads for 9. Measured
    1.7-3x faster than one column at a time.
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


@njit(fastmath={"contract"})
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


@njit(parallel=True)
def depthwise3x3_same_rows(x, k, out, relu_in, row0, row1):
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
        _depthwise_row(top, xr[nh], bot, k, lo, out[(nh - row0) * w_:(nh - row0 + 1) * w_])


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
            out += xp[:, i:i + h, j:j + w, :] * k[i, j]
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


@njit(parallel=True)
def maxpool3x3s2_same_add(x, res, out):
    """out = max_pool(3x3, stride 2, SAME; padded cells never win)(x) + res.

    x (N, H, W, C), res and out (N, H', W', C) with H' = ceil(H / 2). TF's SAME
    pads the extra cell at the bottom/right: pad_top = (max((H'-1)*2 + 3 - H, 0)) // 2.
    """
    n_, h_, w_, c_ = x.shape
    _, ho_, wo_, _ = out.shape
    pad_t = max((ho_ - 1) * 2 + 3 - h_, 0) // 2
    pad_l = max((wo_ - 1) * 2 + 3 - w_, 0) // 2
    for nh in prange(n_ * ho_):
        n = nh // ho_
        oh = nh % ho_
        for ow in range(wo_):
            o = out[n, oh, ow]
            r = res[n, oh, ow]
            for c in range(c_):
                o[c] = -np.inf
            for i in range(3):
                hi = oh * 2 + i - pad_t
                if hi < 0 or hi >= h_:
                    continue
                for j in range(3):
                    wj = ow * 2 + j - pad_l
                    if wj < 0 or wj >= w_:
                        continue
                    src = x[n, hi, wj]
                    for c in range(c_):
                        if src[c] > o[c]:
                            o[c] = src[c]
            for c in range(c_):
                o[c] += r[c]


def maxpool3x3s2_same_add_reference(x, res):
    """NumPy twin of :func:`maxpool3x3s2_same_add`."""
    from .ops import max_pool2d

    return max_pool2d(x, pool_size=3, strides=2, padding="same", impl="reference") + res


@njit(parallel=True)
def relu_global_avg(x, relu, out):
    """out[n, c] = mean over (h, w) of relu?(x[n, h, w, c]). x (N, H, W, C)."""
    n_, h_, w_, c_ = x.shape
    for n in prange(n_):
        acc = np.zeros(c_, dtype=x.dtype)
        for h in range(h_):
            for w in range(w_):
                src = x[n, h, w]
                for c in range(c_):
                    v = src[c]
                    if relu and v < 0:
                        v = 0.0
                    acc[c] += v
        for c in range(c_):
            out[n, c] = acc[c] / (h_ * w_)


def im2col(x, kh, kw, stride, pad_t, pad_l, ho, wo, out):
    """Patches for a convolution: out[(n, oh, ow), (i, j, c)] = x[n, oh*s+i-pad_t, ow*s+j-pad_l, c].

    Zero outside the image. out (N*Ho*Wo, KH*KW*C), laid out so that
    ``out @ kernel.reshape(KH*KW*C, C_out)`` is the convolution. The kernel is
    the ops' own (npxception/ops/conv.py), with one stride for both axes.
    """
    _im2col(x, kh, kw, stride, stride, pad_t, pad_l, ho, wo, out)


def im2col_reference(x, kh, kw, stride, pad_t, pad_l, ho, wo):
    """NumPy twin of :func:`im2col`."""
    n, h, w, c = x.shape
    pad_b = max((ho - 1) * stride + kh - h - pad_t, 0)
    pad_r = max((wo - 1) * stride + kw - w - pad_l, 0)
    xp = np.pad(x, ((0, 0), (pad_t, pad_b), (pad_l, pad_r), (0, 0)))
    cols = [xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(kh) for j in range(kw)]
    return np.concatenate(cols, axis=-1).reshape(n * ho * wo, kh * kw * c)


# ---------------------------------------------------------------------------
# fused layers: one parallel region per layer, GEMM called from each thread
# ---------------------------------------------------------------------------
# With NumPy's bundled OpenBLAS reachable from Numba (npxception/blas.py), each
# thread takes its own rows through depthwise (or im2col) -> GEMM -> epilogue,
# tile by tile, while they are in its cache. Each kernel's twin (*_reference,
# below it) composes the twins above; tests/test_fast_kernels.py compares them.


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


@njit(parallel=True)
def sep_conv_fused(x, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch, tile_rows, saved):
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
    """
    nt = scratch.shape[0]
    _save_halo_rows(x, nt, saved)
    for t in prange(nt):
        _sep_conv_part(t, x, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch, tile_rows, saved)


def sep_conv_fused_reference(x, dw, pw, scale, shift, relu_in, relu_out):
    """NumPy twin of :func:`sep_conv_fused`: depthwise twin, then ``@ pw``, affine, ReLU. -> (N*H*W, Co)."""
    y = depthwise3x3_same_reference(x, dw, relu_in) @ pw * scale + shift
    return np.maximum(y, 0) if relu_out else y


@njit
def _save_halo_rows(x, nt, saved):
    """Before any thread writes: saved[t, 0] = the row above thread t's first, saved[t, 1] = below its last."""
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


@njit
def _sep_conv_part(t, x, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch, tile_rows, saved):
    """Thread t's share of :func:`sep_conv_fused`: its rows, tile by tile. Correct in any order of t."""
    n_, h_, w_, c_ = x.shape
    rows = n_ * h_
    nt = scratch.shape[0]
    lo = x.dtype.type(0) if relu_in else x.dtype.type(-np.inf)
    zero = np.zeros((w_, c_), x.dtype)
    add = residual.shape[0] > 0
    xr = x.reshape(rows, w_, c_)
    per = -(-rows // nt)
    a = t * per
    b = min(rows, a + per)
    buf = scratch[t]
    r0 = a
    while r0 < b:
        r1 = min(b, r0 + tile_rows)
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
            _depthwise_row(top, xr[nh], bot, dw, lo, buf[(nh - r0) * w_:(nh - r0 + 1) * w_])
        saved[t, 2] = xr[r1 - 1]
        m = (r1 - r0) * w_
        if add:
            y = out[t * buf.shape[0]:t * buf.shape[0] + m]
            res = residual[r0 * w_:r1 * w_]
        else:
            y = out[r0 * w_:r1 * w_]
            res = residual[:0]
        _gemm(buf[:m], pw, y)
        _epilogue(y, scale, shift, relu_out, res)
        r0 = r1


@njit(parallel=True)
def conv_fused(x, kernel, kh, stride, pad_t, pad_l, ho, wo, scale, shift, relu_out, out, cols, tiles):
    """A convolution + folded BN: out = relu?(im2col(x) @ kernel * scale + shift).

    x (N, H, W, C); kernel (KH*KH*C, Co); out (N*Ho*Wo, Co); cols
    (T, tile rows * Wo, KH*KH*C): each thread's patch tile. Thread t takes
    output rows (n, oh) [a_t, b_t), ``tiles`` at a time.
    """
    n_ = x.shape[0]
    co = kernel.shape[1]
    rows = n_ * ho
    nt = cols.shape[0]
    per = -(-rows // nt)
    for t in prange(nt):
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


# ---------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------

def fold_bn(gamma, beta, mean, var, eps):
    """An inference BN as a per-channel affine map: BN(z) = z * scale + shift.

    scale = gamma / sqrt(var + eps), shift = beta - scale * mean. Applied to a
    convolution's output channels it is the convolution with its kernel's last
    axis multiplied by ``scale``, plus a bias ``shift``.
    """
    scale = gamma / np.sqrt(var + gamma.dtype.type(eps))
    return scale.astype(gamma.dtype), (beta - scale * mean).astype(gamma.dtype)


class FastPlan:
    """The folded BN of one model, and a small arena of reused buffers.

    Where BN goes: it is folded into an affine epilogue applied to each GEMM's
    output tile (``y * scale + shift``), fused with the ReLU, the residual add or
    the pooling that follows. Scaling the kernel itself instead would need a
    second copy of the 88 MB of weights (the unfolded ones stay, for capture and
    the reference path), and the whole prediction must fit in 300 MB.
    """

    def __init__(self, model):
        p = model._params
        eps = CONFIG.bn_epsilon
        self.dtype = model.dtype
        self.variant = model.variant
        self.head = model.head
        self.model_params = p
        self.folded = {}
        for layer in model.layers:
            n = layer.name
            if layer.kind not in ("conv", "sepconv"):
                continue
            bn = n.replace("_residual_conv", "_residual_bn") if n.endswith("_residual_conv") else n + "_bn"
            scale, shift = fold_bn(*(p[f"{bn}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")),
                                   eps)
            if layer.kind == "conv":
                k = p[f"{n}/kernel"]
                self.folded[n] = (k.reshape(-1, k.shape[-1]), scale, shift)  # a view, no copy
            else:
                dw = np.ascontiguousarray(p[f"{n}/depthwise_kernel"][:, :, :, 0])  # (3, 3, C): a view
                self.folded[n] = (dw, p[f"{n}/pointwise_kernel"][0, 0], scale, shift)
        self.arena: dict[str, np.ndarray] = {}
        # one parallel region per layer, GEMM inside it (npxception/blas.py); else np.matmul between kernels
        self.fused = blas.AVAILABLE
        self.profile = None  # {step: seconds} when set to a dict (npxception bench)
        self._t = 0.0

    def _mark(self, label):
        """Charge the time since the last mark to ``label`` (only while profiling)."""
        if self.profile is not None:
            now = time.perf_counter()
            self.profile[label] = self.profile.get(label, 0.0) + now - self._t
            self._t = now

    def _buffer(self, role, shape):
        """A view of the arena slot ``role`` with ``shape``; slots grow to the largest use and are reused.

        Roles, and why each is separate: "dw0"/"dw1" (depthwise tiles, two for
        the pipelining in sep_bn), "tile" (a GEMM tile added into the middle
        flow's residual), "a"/"b" (separable-conv outputs; a
        conv keeping its width overwrites its own input, see sep_bn), "stem"
        (block1's output, read by block2 and its residual), "res0"/"res1" and
        "out0"/"out1" (residuals and block outputs alternate, because the next
        block reads the previous ones), "cols" (im2col chunks), "rows" (the
        fused kernel's saved input rows).
        """
        size = int(np.prod(shape))
        buf = self.arena.get(role)
        if buf is None or buf.size < size:
            buf = np.empty(size, self.dtype)
            self.arena[role] = buf
        return buf[:size].reshape(shape)

    def _in_buffer(self, x, role):
        """Whether x lives in the arena slot ``role`` (so a conv may write in place, or must not)."""
        return np.shares_memory(x, self.arena.get(role, _EMPTY))

    # ---- building blocks ----------------------------------------------
    COLS_ELEMS = 1024 * 288  # im2col floats per GEMM chunk: 1.2 MB (block1_conv2 whole would be 25 MB)

    def conv_bn(self, name, x, kh, stride, padding, relu_out, role):
        """Convolution + folded BN (+ ReLU): im2col in row chunks, one GEMM each. -> (N, Ho, Wo, C_out)."""
        w2, scale, shift = self.folded[name]
        n, h, w, c = x.shape
        if padding == "same":
            ho, wo = -(-h // stride), -(-w // stride)
            pad_t = max((ho - 1) * stride + kh - h, 0) // 2
            pad_l = max((wo - 1) * stride + kh - w, 0) // 2
        else:
            ho, wo = (h - kh) // stride + 1, (w - kh) // stride + 1
            pad_t = pad_l = 0
        out = self._buffer(role, (n * ho * wo, w2.shape[1]))
        if self.fused:
            threads = numba.get_num_threads()
            rows_per_tile = max(1, min(-(-n * ho // threads), self.COLS_ELEMS // (wo * kh * kh * c)))
            cols = self._buffer("cols", (threads, rows_per_tile * wo, kh * kh * c))
            conv_fused(x, w2, kh, stride, pad_t, pad_l, ho, wo, scale, shift, relu_out, out, cols, rows_per_tile)
            self._mark(name)
            return out.reshape(n, ho, wo, w2.shape[1])
        if kh == 1:
            # a 1x1 SAME convolution with stride s reads every s-th pixel (no padding needed)
            cols = self._buffer("cols", (n, ho, wo, c))
            cols[...] = x[:, pad_t::stride, pad_l::stride, :][:, :ho, :wo]
            np.matmul(cols.reshape(n * ho * wo, c), w2, out=out)
        else:
            rows_per_chunk = max(1, self.COLS_ELEMS // (wo * kh * kh * c))  # whole output rows per chunk
            for n0 in range(n):
                for r0 in range(0, ho, rows_per_chunk):
                    r1 = min(ho, r0 + rows_per_chunk)
                    cols = self._buffer("cols", ((r1 - r0) * wo, kh * kh * c))
                    im2col(x[n0:n0 + 1], kh, kh, stride, pad_t - r0 * stride, pad_l, r1 - r0, wo, cols)
                    start = (n0 * ho + r0) * wo
                    np.matmul(cols, w2, out=out[start:start + (r1 - r0) * wo])
        self._mark(name + " (im2col+gemm)")
        affine_act(out, scale, shift, relu_out)
        self._mark(name + " (epilogue)")
        return out.reshape(n, ho, wo, w2.shape[1])

    # Elements per depthwise tile (1 M floats = 4 MB in float32): measured best of
    # 256 K..4 M (121, 112, 107, 107 ms per 299x299 image); larger only costs memory.
    TILE_ELEMS = 1024 * 1024
    IN_PLACE_SPLIT = 4  # tiles 4x smaller where a conv overwrites its input: the 147x147 maps, the memory peak

    def sep_bn(self, name, x, relu_in, relu_out=False, residual=None):
        """ReLU? -> depthwise 3x3 -> pointwise GEMM -> folded BN (+ ReLU), in row chunks.

        x is (N, H, W, C_in). Returns (N*H*W, C_out). With ``residual`` (an
        (N*H*W, C_out) array) the result is added into ``residual`` instead (the
        middle flow's Add) and nothing is returned.

        Each tile of rows goes depthwise -> GEMM -> epilogue, so the depthwise
        output never exists whole. On maps that need several tiles (the large
        entry-flow maps) a conv that keeps its width overwrites its own input
        (see the pipelining below), which saves a whole activation buffer.
        """
        if self.fused:
            return self._sep_bn_fused(name, x, relu_in, relu_out, residual)
        dw, pw, scale, shift = self.folded[name]
        n, h, w, c = x.shape
        cout = pw.shape[1]
        rows = n * h
        tiles = -(-rows * w * max(c, cout) // self.TILE_ELEMS)
        step = -(-rows // tiles)  # whole rows per tile, tiles of equal size
        in_a, in_b = self._in_buffer(x, "a"), self._in_buffer(x, "b")
        # Overwrite the input only where it saves real memory (the 147x147 maps);
        # elsewhere write to the other buffer and skip the write-back copies.
        in_place = (residual is None and cout == c and (in_a or in_b) and tiles > 1)
        if in_place:
            # these are the 147x147 maps, where memory peaks: quarter-size tiles
            tiles = -(-rows * w * c * self.IN_PLACE_SPLIT // self.TILE_ELEMS)
            step = -(-rows // tiles)
        if residual is None and not in_place:
            out = self._buffer("b" if in_a else "a", (rows * w, cout))
        elif in_place:
            out = x.reshape(rows * w, c)
        bounds = [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]
        if in_place:
            # Software-pipelined so that no tile is copied: the depthwise of tile
            # k+1 runs before the GEMM of tile k overwrites tile k's rows, and it
            # is the last input the 3x3 window needs from them (it reaches back
            # one row). Tile k+2's window starts at tile k+1's last row.
            def depthwise(k):
                r0, r1 = bounds[k]
                tile_in = self._buffer(f"dw{k % 2}", ((r1 - r0) * w, c))
                depthwise3x3_same_rows(x, dw, tile_in, relu_in, r0, r1)
                return tile_in

            nxt = depthwise(0)
            for k, (r0, r1) in enumerate(bounds):
                tile_in = nxt
                if k + 1 < len(bounds):
                    nxt = depthwise(k + 1)
                tile = out[r0 * w:r1 * w]
                np.matmul(tile_in, pw, out=tile)
                affine_act(tile, scale, shift, relu_out)
            self._mark(name)
            return out
        for r0, r1 in bounds:
            tile_in = self._buffer("dw0", ((r1 - r0) * w, c))
            depthwise3x3_same_rows(x, dw, tile_in, relu_in, r0, r1)
            if residual is None:
                tile = out[r0 * w:r1 * w]  # straight into place
            else:
                tile = self._buffer("tile", ((r1 - r0) * w, cout))
            np.matmul(tile_in, pw, out=tile)
            if residual is None:
                affine_act(tile, scale, shift, relu_out)
            elif relu_out:  # the article's extra ReLU before the Add
                affine_act(tile, scale, shift, True)
                residual[r0 * w:r1 * w] += tile
            else:
                affine_add_residual(tile, scale, shift, residual[r0 * w:r1 * w])
        self._mark(name)
        return None if residual is not None else out

    # Per-thread tile of the fused path, in elements of the wider side (C or
    # C_out): 256 K floats (1 MB in float32) stays in a core's L2 between the
    # GEMM and its epilogue. Measured, whole network: 128 K 94.8, 256 K 90.6,
    # 512 K 91.8, 1 M 96.6 ms.
    FUSED_TILE_ELEMS = 256 * 1024

    def _sep_bn_fused(self, name, x, relu_in, relu_out, residual):
        """:meth:`sep_bn` as one fused kernel (:func:`sep_conv_fused`)."""
        dw, pw, scale, shift = self.folded[name]
        n, h, w, c = x.shape
        cout = pw.shape[1]
        rows = n * h
        threads = numba.get_num_threads()
        rows_per_tile = max(1, min(-(-rows // threads), self.FUSED_TILE_ELEMS // (w * max(c, cout))))
        scratch = self._buffer("dw0", (threads, rows_per_tile * w, c))
        saved = self._buffer("rows", (threads, 3, w, c))
        in_a, in_b = self._in_buffer(x, "a"), self._in_buffer(x, "b")
        if residual is not None:
            out = self._buffer("tile", (threads * rows_per_tile * w, cout))
        else:
            residual = np.empty((0, cout), self.dtype)
            if cout == c and (in_a or in_b):
                out = x.reshape(rows * w, c)  # in place: sep_conv_fused saves the rows still needed
            else:
                out = self._buffer("b" if in_a else "a", (rows * w, cout))
        sep_conv_fused(x, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch, rows_per_tile, saved)
        self._mark(name)
        return None if residual.shape[0] else out

    # ---- the network ----------------------------------------------------
    def __call__(self, x):
        if not self.fused:
            return self._forward(x)
        # Numba's threads call OpenBLAS, each on its own rows: one thread each
        with blas.single_threaded():
            return self._forward(x)

    def _forward(self, x):
        self._t = time.perf_counter()
        v = self.variant
        n = x.shape[0]
        stem_pad = "same" if v.same_stem else "valid"
        x = self.conv_bn("block1_conv1", x, 3, 2, stem_pad, relu_out=True, role="b")
        x = self.conv_bn("block1_conv2", x, 3, 1, stem_pad, relu_out=True, role="stem")

        # entry flow: two separable convs, max-pool + a strided 1x1 residual
        residual_source = x
        for i, block in enumerate((2, 3, 4)):
            b = f"block{block}"
            block_input = x
            _, h, w, _ = x.shape
            # block2 reads block1_conv2_act, already rectified
            y = self.sep_bn(f"{b}_sepconv1", x, relu_in=(block != 2))
            y = self.sep_bn(f"{b}_sepconv2", y.reshape(n, h, w, -1), relu_in=True)
            res_in = residual_source if v.chained_residuals else block_input
            r = self.conv_bn(f"{b}_residual_conv", res_in, 1, 2, "same", relu_out=False, role=f"res{i % 2}")
            x = self._buffer(f"out{i % 2}", r.shape)
            maxpool3x3s2_same_add(y.reshape(n, h, w, -1), r, x)
            self._mark(f"{b}_pool+add")
            residual_source = r

        # middle flow: x <- x + sep3(relu(sep2(relu(sep1(relu(x)))))), the Add in place
        _, h, w, c = x.shape
        flat = x.reshape(n * h * w, c)  # block4_add's buffer
        for block in arch.MIDDLE_FLOW_BLOCKS:
            b = f"block{block}"
            y = self.sep_bn(f"{b}_sepconv1", x, relu_in=True)
            y = self.sep_bn(f"{b}_sepconv2", y.reshape(n, h, w, c), relu_in=True)
            self.sep_bn(f"{b}_sepconv3", y.reshape(n, h, w, c), relu_in=True,
                        relu_out=v.relu_before_middle_add, residual=flat)

        # exit flow
        block_input = x
        y = self.sep_bn("block13_sepconv1", x, relu_in=True)
        y = self.sep_bn("block13_sepconv2", y.reshape(n, h, w, -1), relu_in=True)
        r = self.conv_bn("block13_residual_conv", block_input, 1, 2, "same", relu_out=False, role="res1")
        x = self._buffer("stem", r.shape)  # block1's output is long dead
        maxpool3x3s2_same_add(y.reshape(n, h, w, -1), r, x)
        self._mark("block13_pool+add")
        _, h, w, _ = x.shape
        y = self.sep_bn("block14_sepconv1", x, relu_in=False, relu_out=True)
        final_relu = not v.no_final_relu
        y = self.sep_bn("block14_sepconv2", y.reshape(n, h, w, -1), relu_in=False, relu_out=final_relu)
        features = y.reshape(n, h, w, -1)
        if self.head and self.head[0]["kind"] == "global_avg_pool":
            pooled = np.empty((n, features.shape[-1]), self.dtype)
            relu_global_avg(features, False, pooled)
            out = _run_head(self.head[1:], self.model_params, pooled, "fast")
        else:
            # the arena is reused by the next call: hand back a copy
            out = _run_head(self.head, self.model_params, features.copy(), "fast")
        self._mark("head")
        return out


_EMPTY = np.empty(0)


def fast_forward(model, x):
    """Run ``model`` on a checked, contiguous batch ``x`` with the folded plan (built once)."""
    with model._lock:
        if model._fast is None:
            model._fast = FastPlan(model)
        return model._fast(x)
