"""The fast whole-network path: BatchNorm folded, epilogues fused, buffers reused.

``model(x)`` runs this plan; ``model.forward(x, capture=...)`` runs the plain
op-by-op path, which keeps every named activation. Both are tested against
Keras at the same tolerances (tests/test_model_keras.py).

What the plan does differently from the op-by-op path, and why:

* **BN folded into the weights.** An inference BN after a convolution is an
  affine map per output channel, ``y = s * conv(x) + t`` with
  ``s = gamma / sqrt(var + eps)`` and ``t = beta - s * mean``; scaling the
  convolution's output channels by ``s`` is scaling its kernel's last axis. For
  a separable convolution only the pointwise kernel is scaled. The bias ``t``
  is added in the GEMM's epilogue.
* **ReLU fused.** A ReLU before a separable convolution is applied as the
  depthwise kernel reads its input; a ReLU after a BN (stem, block14) is applied
  in the epilogue.
* **Max-pool fused with the residual add**, and the middle flow's Add fused into
  the epilogue of its last pointwise convolution.
* **Pointwise convolutions are one BLAS GEMM** on a contiguous ``(N*H*W, C)``
  buffer, written straight into a preallocated output (``np.matmul(..., out=)``).
* **Buffers are preallocated** per input shape and reused between calls.

Every fused kernel has a plain NumPy twin (``*_reference``) next to it, and the
tests compare the two.
"""

from __future__ import annotations

import time

import numpy as np

from . import architecture as arch
from ._jit import njit, prange
from .config import CONFIG
from .model import _run_head

# ---------------------------------------------------------------------------
# kernels and their twins
# ---------------------------------------------------------------------------


@njit(parallel=True, fastmath=False)
def depthwise3x3_same(x, k, out, relu_in):
    """Depthwise 3x3, stride 1, SAME padding, optional ReLU on the input.

    x (N, H, W, C), k (3, 3, C), out (N*H*W, C) — the GEMM's left operand.
    out[n,h,w,c] = sum_{i,j} relu?(x[n, h+i-1, w+j-1, c]) * k[i, j, c]   (zero outside)
    """
    n_, h_, w_, c_ = x.shape
    for nh in prange(n_ * h_):
        n = nh // h_
        h = nh % h_
        base = nh * w_
        for w in range(w_):
            o = out[base + w]
            for c in range(c_):
                o[c] = 0.0
        for i in range(3):
            hi = h + i - 1
            if hi < 0 or hi >= h_:
                continue
            row = x[n, hi]
            for j in range(3):
                kij = k[i, j]
                w_lo = 1 if j == 0 else 0
                w_hi = w_ - 1 if j == 2 else w_
                for w in range(w_lo, w_hi):
                    src = row[w + j - 1]
                    o = out[base + w]
                    if relu_in:
                        for c in range(c_):
                            v = src[c]
                            if v > 0:
                                o[c] += v * kij[c]
                    else:
                        for c in range(c_):
                            o[c] += src[c] * kij[c]


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


@njit(parallel=True)
def bias_act(y, b, relu):
    """In place: y = y + b, then ReLU if asked. y (M, C), b (C,)."""
    m, c_ = y.shape
    for r in prange(m):
        row = y[r]
        for c in range(c_):
            v = row[c] + b[c]
            if relu and v < 0:
                v = 0.0
            row[c] = v


@njit(parallel=True)
def bias_add_residual(y, b, res):
    """In place on res: res = y + b + res (the middle flow's Add). All (M, C)."""
    m, c_ = y.shape
    for r in prange(m):
        for c in range(c_):
            res[r, c] = y[r, c] + b[c] + res[r, c]


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


@njit(parallel=True)
def im2col(x, kh, kw, stride, pad_t, pad_l, ho, wo, out):
    """Patches for a convolution: out[(n, oh, ow), (i, j, c)] = x[n, oh*s+i-pad_t, ow*s+j-pad_l, c].

    Zero outside the image. out (N*Ho*Wo, KH*KW*C), laid out so that
    ``out @ kernel.reshape(KH*KW*C, C_out)`` is the convolution.
    """
    n_, h_, w_, c_ = x.shape
    for r in prange(n_ * ho):
        n = r // ho
        oh = r % ho
        for ow in range(wo):
            dst = out[r * wo + ow]
            col = 0
            for i in range(kh):
                hi = oh * stride + i - pad_t
                for j in range(kw):
                    wj = ow * stride + j - pad_l
                    if 0 <= hi < h_ and 0 <= wj < w_:
                        src = x[n, hi, wj]
                        for c in range(c_):
                            dst[col + c] = src[c]
                    else:
                        for c in range(c_):
                            dst[col + c] = 0.0
                    col += c_


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
# the plan
# ---------------------------------------------------------------------------

def fold_bn(kernel_2d, gamma, beta, mean, var, eps):
    """Fold an inference BN into a (C_in, C_out) kernel: returns (kernel * s, beta - s * mean)."""
    scale = gamma / np.sqrt(var + kernel_2d.dtype.type(eps))
    return (kernel_2d * scale).astype(kernel_2d.dtype), (beta - scale * mean).astype(kernel_2d.dtype)


class FastPlan:
    """BN-folded weights of one model, and the buffers for each input shape seen."""

    def __init__(self, model):
        p = model._params
        eps = CONFIG.bn_epsilon
        self.dtype = model.dtype
        self.variant = model.variant
        self.head = model.head
        self.model_params = p
        self.steps = []  # (layer, folded arrays)
        layers = model.layers
        by_name = {layer.name: layer for layer in layers}
        self.folded = {}
        for layer in layers:
            n = layer.name
            if layer.kind not in ("conv", "sepconv"):
                continue
            bn = n + "_bn" if not n.endswith("_residual_conv") else n.replace("_conv", "_bn")
            assert by_name[bn].inputs == (n,)
            g, b, m, v = (p[f"{bn}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance"))
            if layer.kind == "conv":
                k = p[f"{n}/kernel"]
                w2, bias = fold_bn(k.reshape(-1, k.shape[-1]), g, b, m, v, eps)
                self.folded[n] = (w2, bias)
            else:
                dw = np.ascontiguousarray(p[f"{n}/depthwise_kernel"][:, :, :, 0])
                pw = p[f"{n}/pointwise_kernel"][0, 0]
                w2, bias = fold_bn(pw, g, b, m, v, eps)
                self.folded[n] = (dw, w2, bias)
        self.buffers = {}
        self.profile = None  # {step: seconds} when set to a dict (npxception bench)
        self._t = 0.0

    def _mark(self, label):
        """Charge the time since the last mark to ``label`` (only while profiling)."""
        if self.profile is not None:
            now = time.perf_counter()
            self.profile[label] = self.profile.get(label, 0.0) + now - self._t
            self._t = now

    def _buffer(self, key, shape):
        buf = self.buffers.get(key)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, self.dtype)
            self.buffers[key] = buf
        return buf

    # ---- building blocks ----------------------------------------------
    def conv_bn(self, name, x, kh, stride, padding, relu_out):
        """Convolution + folded BN (+ ReLU) by im2col and one GEMM. Returns (N, Ho, Wo, C_out)."""
        w2, bias = self.folded[name]
        n, h, w, c = x.shape
        if padding == "same":
            ho, wo = -(-h // stride), -(-w // stride)
            pad_t = max((ho - 1) * stride + kh - h, 0) // 2
            pad_l = max((wo - 1) * stride + kh - w, 0) // 2
        else:
            ho, wo = (h - kh) // stride + 1, (w - kh) // stride + 1
            pad_t = pad_l = 0
        if kh == 1 and stride == 1:
            cols = x.reshape(n * h * w, c)
        elif kh == 1:
            cols = self._buffer(name + ":cols", (n * ho * wo, c))
            cols.reshape(n, ho, wo, c)[...] = x[:, pad_t::stride, pad_l::stride, :][:, :ho, :wo]
        else:
            cols = self._buffer(name + ":cols", (n * ho * wo, kh * kh * c))
            im2col(x, kh, kh, stride, pad_t, pad_l, ho, wo, cols)
        out = self._buffer(name, (n * ho * wo, w2.shape[1]))
        self._mark(name + " (im2col)")
        np.matmul(cols, w2, out=out)
        bias_act(out, bias, relu_out)
        self._mark(name + " (gemm+epilogue)")
        return out.reshape(n, ho, wo, w2.shape[1])

    def sep_bn(self, name, x, relu_in, relu_out=False, out_key=None, epilogue=True):
        """ReLU? -> depthwise 3x3 -> pointwise GEMM with folded BN (+ ReLU).

        Returns the (N*H*W, C_out) GEMM output, with the BN shift (and ReLU)
        applied unless ``epilogue=False``; then the caller fuses the shift into
        its own epilogue and gets ``(out, shift)``.
        """
        dw, w2, bias = self.folded[name]
        n, h, w, c = x.shape
        cols = self._buffer("dw:%d" % (n * h * w * c), (n * h * w, c))
        depthwise3x3_same(x, dw, cols, relu_in)
        self._mark(name + " (depthwise)")
        out = self._buffer(out_key or name, (n * h * w, w2.shape[1]))
        np.matmul(cols, w2, out=out)
        self._mark(name + " (pointwise gemm)")
        if not epilogue:
            return out, bias
        bias_act(out, bias, relu_out)
        self._mark(name + " (epilogue)")
        return out

    # ---- the network ----------------------------------------------------
    def __call__(self, x):
        self._t = time.perf_counter()
        v = self.variant
        n = x.shape[0]
        stem_pad = "same" if v.same_stem else "valid"
        x = self.conv_bn("block1_conv1", x, 3, 2, stem_pad, relu_out=True)
        x = self.conv_bn("block1_conv2", x, 3, 1, stem_pad, relu_out=True)

        # entry flow: two separable convs, max-pool + a strided 1x1 residual
        residual_source = x
        for block in (2, 3, 4):
            b = f"block{block}"
            block_input = x
            _, h, w, _ = x.shape
            # block2 reads block1_conv2_act, already rectified
            y = self.sep_bn(f"{b}_sepconv1", x, relu_in=(block != 2))
            y = self.sep_bn(f"{b}_sepconv2", y.reshape(n, h, w, -1), relu_in=True)
            res_in = residual_source if v.chained_residuals else block_input
            r = self.conv_bn(f"{b}_residual_conv", res_in, 1, 2, "same", relu_out=False)
            x = self._buffer(f"{b}_add", r.shape)
            maxpool3x3s2_same_add(y.reshape(n, h, w, -1), r, x)
            self._mark(f"{b}_pool+add")
            residual_source = r

        # middle flow: x <- x + sep3(relu(sep2(relu(sep1(relu(x)))))), in place
        _, h, w, c = x.shape
        flat = x.reshape(n * h * w, c)  # block4_add's buffer
        for block in arch.MIDDLE_FLOW_BLOCKS:
            b = f"block{block}"
            y = self.sep_bn(f"{b}_sepconv1", x, relu_in=True, out_key="middle1")
            y = self.sep_bn(f"{b}_sepconv2", y.reshape(n, h, w, c), relu_in=True, out_key="middle2")
            if v.relu_before_middle_add:
                y = self.sep_bn(f"{b}_sepconv3", y.reshape(n, h, w, c), relu_in=True, relu_out=True,
                                out_key="middle3")
                flat += y
            else:
                y, shift = self.sep_bn(f"{b}_sepconv3", y.reshape(n, h, w, c), relu_in=True,
                                       out_key="middle3", epilogue=False)
                bias_add_residual(y, shift, flat)
            self._mark(f"{b}_add")

        # exit flow
        block_input = x
        y = self.sep_bn("block13_sepconv1", x, relu_in=True)
        y = self.sep_bn("block13_sepconv2", y.reshape(n, h, w, -1), relu_in=True)
        r = self.conv_bn("block13_residual_conv", block_input, 1, 2, "same", relu_out=False)
        x = self._buffer("block13_add", r.shape)
        maxpool3x3s2_same_add(y.reshape(n, h, w, -1), r, x)
        self._mark("block13_pool+add")
        _, h, w, _ = x.shape
        y = self.sep_bn("block14_sepconv1", x, relu_in=False, relu_out=True)
        final_relu = not v.no_final_relu
        if self.head and self.head[0]["kind"] == "global_avg_pool":
            # ReLU and the global average fused in one pass
            y = self.sep_bn("block14_sepconv2", y.reshape(n, h, w, -1), relu_in=False)
            pooled = np.empty((n, y.shape[-1]), self.dtype)
            relu_global_avg(y.reshape(n, h, w, -1), final_relu, pooled)
            out = _run_head(self.head[1:], self.model_params, pooled, "fast")
        else:
            y = self.sep_bn("block14_sepconv2", y.reshape(n, h, w, -1), relu_in=False, relu_out=final_relu)
            features = y.reshape(n, h, w, -1).copy()  # the buffer is reused by the next call
            out = _run_head(self.head, self.model_params, features, "fast")
        self._mark("head")
        return out


def fast_forward(model, x):
    """Run ``model`` on a checked, contiguous batch ``x`` with the folded plan (built once)."""
    with model._lock:
        if model._fast is None:
            model._fast = FastPlan(model)
        return model._fast(x)
