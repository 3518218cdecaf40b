"""Issue 15's rejected alternatives, interleaved against the fast path's own steps.

    python benchmarks/entry_and_split_ab.py [--repeats 21]

Not used by the fast path; kept for its numbers (docs/performance.md, "Issue
15's speed part, 2026-11-29"). Each case times the current step and the
alternative on the same data, alternating, 25 ms idle before each call, medians:

* ``block1_conv1`` (299x299x3, 3x3/2 VALID -> 32) and ``block1_conv2``
  (149x149x32, 3x3 VALID -> 64): im2col + OpenBLAS GEMM (``conv_fused``)
  against a direct convolution vectorised over output channels, one output
  pixel at a time or four sharing each weight row's loads;
* 24 middle-flow separable convolutions in a row (19x19x728, in place,
  distinct weights): rows split between the threads (``sep_conv_fused``)
  against output channels split (the depthwise of every row first, then each
  thread's GEMM on its half of the pointwise kernel);
* the cost of one empty hand-off to the worker thread.

On the shared machine run it in a session of its own whose autogroup has a
higher priority (``setsid bash -c 'echo -20 > /proc/self/autogroup; exec python ...'``):
with autogroups, other sessions' ``nice 19`` does not yield to it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

from npxception import blas
from npxception._jit import njit
from npxception.blas import NO_TRANS, ROW_MAJOR, sgemm
from npxception.fast.fused import conv_fused, conv_fused_reference, sep_conv_fused
from npxception.fast.kernels import _epilogue, bind_symbols, depthwise_row
from npxception.fast.threads import in_parallel
from npxception.ops.padding import window_geometry


@njit(fastmath={"contract"})
def _direct_pixel(x, kernel, kh, stride, pad_t, pad_l, n, oh, ow, o):
    """o (C_out,) += the taps of output pixel (n, oh, ow) that fall inside x."""
    _, h_, w_, c_ = x.shape
    for i in range(kh):
        hi = oh * stride - pad_t + i
        if 0 <= hi < h_:
            for j in range(kh):
                wj = ow * stride + j - pad_l
                if 0 <= wj < w_:
                    for c in range(c_):
                        v = x[n, hi, wj, c]
                        wr = kernel[(i * kh + j) * c_ + c]
                        for co in range(o.shape[0]):
                            o[co] += v * wr[co]


@njit(nogil=True, fastmath={"contract"})
def _direct_part(t, nt, four, x, kernel, kh, stride, pad_t, pad_l, ho, wo, scale, shift, relu_out, out):
    """Thread t's output rows, a direct convolution vectorised over output channels, accumulating in ``out``.

    One output pixel at a time (:func:`_direct_pixel`), or, when ``four``, four
    interior pixels at a time sharing each weight row's loads.
    """
    _, h_, w_, c_ = x.shape
    rows = x.shape[0] * ho
    per = -(-rows // nt)
    for r in range(t * per, min(rows, (t + 1) * per)):
        n, oh = r // ho, r % ho
        y = out[r * wo:(r + 1) * wo]
        y[:, :] = 0
        rows_inside = oh * stride - pad_t >= 0 and oh * stride - pad_t + kh <= h_
        ow = 0
        while ow < wo:
            if (four and rows_inside and ow + 4 <= wo and ow * stride - pad_l >= 0
                    and (ow + 3) * stride + kh - 1 - pad_l < w_):
                o0, o1, o2, o3 = y[ow], y[ow + 1], y[ow + 2], y[ow + 3]
                for i in range(kh):
                    xr = x[n, oh * stride - pad_t + i]
                    for j in range(kh):
                        w0 = ow * stride + j - pad_l
                        p0, p1, p2, p3 = xr[w0], xr[w0 + stride], xr[w0 + 2 * stride], xr[w0 + 3 * stride]
                        for c in range(c_):
                            v0, v1, v2, v3 = p0[c], p1[c], p2[c], p3[c]
                            wr = kernel[(i * kh + j) * c_ + c]
                            for co in range(wr.shape[0]):
                                k = wr[co]
                                o0[co] += v0 * k
                                o1[co] += v1 * k
                                o2[co] += v2 * k
                                o3[co] += v3 * k
                ow += 4
            else:
                _direct_pixel(x, kernel, kh, stride, pad_t, pad_l, n, oh, ow, y[ow])
                ow += 1
        _epilogue(y, scale, shift, relu_out, out[:0])


@njit(nogil=True)
def _depthwise_all_part(t, nt, x, dw, lo, full, zero):
    """Thread t's rows of the depthwise 3x3 SAME convolution of x into full (N*H*W, C)."""
    n_, h_, w_, c_ = x.shape
    rows = n_ * h_
    xr = x.reshape(rows, w_, c_)
    per = -(-rows // nt)
    for nh in range(t * per, min(rows, (t + 1) * per)):
        h = nh % h_
        top = xr[nh - 1] if h > 0 else zero
        bot = xr[nh + 1] if h < h_ - 1 else zero
        depthwise_row(top, xr[nh], bot, dw, lo, full[nh * w_:(nh + 1) * w_])


@njit(nogil=True)
def _pointwise_columns_part(t, nt, a, pw, scale, shift, relu, out):
    """Thread t's output channels (a multiple of 16 wide) of relu?(a @ pw * scale + shift), float32."""
    m, k = a.shape
    n = pw.shape[1]
    share = -(-n // nt)
    per = -(-share // 16) * 16  # whole 16-float vectors
    c0, c1 = t * per, min(n, (t + 1) * per)
    if c1 <= c0:
        return
    sgemm(ROW_MAJOR, NO_TRANS, NO_TRANS, m, c1 - c0, k, np.float32(1.0), a.ctypes.data, k,
          pw.ctypes.data + 4 * c0, n, np.float32(0.0), out.ctypes.data + 4 * c0, n)
    for r in range(m):
        for c in range(c0, c1):
            v = out[r, c] * scale[c] + shift[c]
            out[r, c] = out.dtype.type(0) if relu and v < 0 else v


@njit(nogil=True)
def _nothing(t):
    pass


def interleaved(cases: dict, repeats: int, gap=0.025) -> dict:
    """{name: median ms} of the callables, called in turn after two warm-ups, ``gap`` s idle before each."""
    for f in cases.values():
        f()
        f()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, f in cases.items():
            time.sleep(gap)
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def entry_conv(h, c, c_out, kh, stride, repeats):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, h, h, c)).astype(np.float32)
    kernel = (rng.standard_normal((kh * kh * c, c_out)) * 0.1).astype(np.float32)
    scale = (rng.random(c_out) + 0.5).astype(np.float32)
    shift = rng.standard_normal(c_out).astype(np.float32)
    ho, pad_t = window_geometry(h, kh, stride, "valid")
    wo, pad_l = window_geometry(h, kh, stride, "valid")
    nt = numba.get_num_threads()
    rows = max(1, min(-(-ho // nt), 1024 * 288 // (wo * kh * kh * c)))  # as FastPlan.conv_bn
    cols = np.empty((nt, rows * wo, kh * kh * c), np.float32)
    outs = {name: np.empty((ho * wo, c_out), np.float32) for name in ("im2col + GEMM", "direct", "direct x4")}
    geometry = (kh, stride, pad_t, pad_l, ho, wo, scale, shift, True)
    cases = {
        "im2col + GEMM": lambda: conv_fused(x, kernel, *geometry, outs["im2col + GEMM"], cols, rows),
        "direct": lambda: in_parallel(_direct_part, nt, (nt, False, x, kernel, *geometry, outs["direct"])),
        "direct x4": lambda: in_parallel(_direct_part, nt, (nt, True, x, kernel, *geometry, outs["direct x4"])),
    }
    with blas.single_threaded():
        ms = interleaved(cases, repeats)
    want = conv_fused_reference(x, kernel, *geometry)
    for name, out in outs.items():
        assert np.allclose(out, want, rtol=1e-4, atol=1e-4), name
    gflop = 2e-9 * ho * wo * kh * kh * c * c_out
    print(f"{h}x{h}x{c}, {kh}x{kh}/{stride} -> {c_out}: "
          + ", ".join(f"{name} {t:.2f} ms ({gflop / t * 1e3:.0f} GFLOP/s)" for name, t in ms.items()))


def middle_flow(repeats, steps=24, h=19, c=728):
    rng = np.random.default_rng(0)
    weights = [((rng.standard_normal((3, 3, c)) * 0.3).astype(np.float32),
                (rng.standard_normal((c, c)) / np.sqrt(c)).astype(np.float32),
                (rng.random(c) + 0.5).astype(np.float32), (rng.standard_normal(c) * 0.1).astype(np.float32))
               for _ in range(steps)]
    x0 = rng.standard_normal((1, h, h, c)).astype(np.float32)
    nt = numba.get_num_threads()
    rows = max(1, min(-(-h // nt), 256 * 1024 // (h * c)))  # as FastPlan.sep_bn
    scratch = np.empty((nt, rows * h, c), np.float32)
    saved = np.empty((nt, 3, h, c), np.float32)
    full = np.empty((h * h, c), np.float32)
    zero = np.zeros((h, c), np.float32)
    none = np.empty((0, c), np.float32)
    bind_symbols(np.float32)
    xs = {"rows split": x0.copy(), "channels split": x0.copy()}

    def rows_split():
        x = xs["rows split"]
        for dw, pw, scale, shift in weights:
            sep_conv_fused(x, dw, pw, scale, shift, True, False, x.reshape(-1, c), none, scratch, rows, saved)

    def channels_split():
        x = xs["channels split"]
        for dw, pw, scale, shift in weights:
            in_parallel(_depthwise_all_part, nt, (nt, x, dw, np.float32(0), full, zero))
            in_parallel(_pointwise_columns_part, nt, (nt, full, pw, scale, shift, False, x.reshape(-1, c)))

    with blas.single_threaded():
        ms = interleaved({"rows split": rows_split, "channels split": channels_split,
                          "empty hand-offs": lambda: [in_parallel(_nothing, nt, ()) for _ in range(steps)]}, repeats)
    print(f"{steps} middle-flow steps ({h}x{h}x{c}, in place): "
          + ", ".join(f"{name} {t:.1f} ms ({t / steps:.3f} a step)" for name, t in ms.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    entry_conv(299, 3, 32, 3, 2, args.repeats)  # block1_conv1
    entry_conv(149, 32, 64, 3, 1, args.repeats)  # block1_conv2
    middle_flow(args.repeats)


if __name__ == "__main__":
    main()
