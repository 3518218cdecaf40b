"""A direct (implicit-GEMM) convolution whose accumulators stay in AVX-512 registers, with its NumPy twin.

For a convolution with no padding (VALID, or any 1x1), output pixel
(n, oh, ow) and input channel tap k = (i, j, c) read
``x[n, oh*s + i, ow*s + j, c]``, which sits at a fixed offset
``off[k] = (i*W + j)*C + c`` from the pixel's first input, and consecutive
output pixels of a row are ``s*C`` apart. So a row of output pixels against
the kernel ``(KH*KW*C, C_out)`` is a GEMM whose left operand is read in place
(no im2col):

    y[ow, co] = sum_k x_flat[base + ow*s*C + off[k]] * kernel[k, co]
    out = relu?(y * scale + shift)          (the folded BN, then the ReLU)

The microkernel (npxception/fast/micro.py: LLVM IR through a Numba
``@intrinsic``, as in benchmarks/gemm_microkernel.py) holds MR pixels x NR channels of ``y`` in
registers for the whole reduction over k, broadcasting each input against
the weights' NR-wide row, and applies the affine map and the ReLU before its
one masked store (or adds into a residual). The same microkernel runs the
separable convolutions' pointwise GEMMs (npxception/fast/pointwise.py), its left
operand the depthwise tile in the thread's cache. The weights are packed
once, in NR-wide panels (npxception/fast/packing.py), when the plan is built, and
the model then holds them only packed (npxception/params.py): 80 MB of
pointwise kernels are in memory once. Why this exists and what it measured:
docs/performance.md, "Issue 15, 2026-11-29 17:10-18:50 UTC: the
register-tiled microkernel" and "every kernel held only packed".

float32 or float64 (16 or 8 lanes a vector), only on CPUs with AVX-512
(:data:`AVAILABLE`) where the microkernel compiled and computed a small case
right in that dtype (:func:`microkernel_ready`, once a process); elsewhere
the plan keeps im2col + OpenBLAS (npxception/fast/fused.py). Under
``NUMBA_DISABLE_JIT=1`` the twins (:func:`conv_direct_reference`, the
pointwise functions' bodies) run instead, on the kernels unpacked from the
same panels.
"""

from __future__ import annotations

import functools
import sys

import llvmlite
import llvmlite.binding as ll
import numba
import numpy as np

from .._jit import njit
from ..ops.padding import tap_view, window_geometry
from .micro import LANES, MR_NARROW as _MR_NARROW, MR_WIDE as _MR_WIDE, TILES, _make_micro, half_panels as _half_panels
from .micro import micro_narrow, micro_wide, narrow, prefetch_part
from .micro import at as _at
from .packing import pack_kernel, unpack_panels
from . import pointwise
from .pointwise import pointwise_panels, pointwise_tile  # noqa: F401 (the fused kernels' names for them)
from .threads import in_parallel

L2_BYTES = 512 * 1024  # half a core's L2 on the machines first measured, for inputs or weights
# each thread, while it runs one panel of weights over its rows, asks for the next panel ahead (into L2): the
# first rows of a panel otherwise wait on it from L3 or memory (docs/performance.md, "Issue 15, 2026-11-30");
# False: no prefetch (the benchmarks' A/B)
PREFETCH = True
from .micro import AVAILABLE  # noqa: E402 (tests set direct.AVAILABLE: worth_packing reads it here)

# passed as ``packed`` where the microkernel is not used: its type (an integer) keeps the microkernel out of
# the compiled fused kernel (the overloads in npxception/fast/pointwise.py), so a microkernel that cannot compile is never
# compiled; fused.NOT_PACKED (a float) keeps it in, for the steps of a plan that packs others
NO_MICROKERNEL = np.empty((0, 0, 0), np.int8)
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # what the microkernel computes in


def worth_packing(dtype) -> bool:
    """Whether a plan in ``dtype`` packs its kernels for the microkernel: float32 or float64, AVX-512 and
    :func:`microkernel_ready` for that dtype (asked last: only plans that would pack pay for the probe).

    Every kernel, whatever its size: held only packed, they cost no memory
    (docs/performance.md, "every kernel held only packed").
    """
    return AVAILABLE and np.dtype(dtype) in DTYPES and microkernel_ready(dtype)


def reads_in_place(step, h: int, w: int) -> bool:
    """Whether ``step`` (a plan's ``ConvBN``) on an (h, w) map has no padded tap, so that the direct kernel (npxception/fast/direct.py)
    reads its input in place, with no im2col buffer. One rule for the plan and for photo_memory's estimate."""
    kh, stride = step.kernel_size, step.strides
    ho, pad_t = window_geometry(h, kh, stride, step.padding)
    wo, pad_l = window_geometry(w, kh, stride, step.padding)
    return pad_t == pad_l == 0 and (ho - 1) * stride + kh <= h and (wo - 1) * stride + kh <= w


def shares_panels(pixels: int, c_out: int, threads: int) -> bool:
    """Whether a convolution with a packed kernel shares its output panels between the threads rather than its
    rows (:func:`conv_direct`, fused.sep_conv_by_panels): where the kernel has more columns than the batch has
    pixels, each thread then reads less (half the kernel and all the input, against all the kernel and half
    the input). One rule for the plan and for photo_memory's estimate."""
    return threads > 1 and c_out > pixels


@njit(nogil=True)
def _direct_part(t, nt, x, packed, offs, stride, ho, wo, scale, shift, relu, out, chunk, prefetch, panels):
    """Thread t's share of :func:`conv_direct`, MR pixels at a time: output rows (n, oh) numbered [a_t, b_t),
    or when ``panels`` every row in the output panels [q_t, q_t+1).

    ``chunk`` rows at a time, each panel of weights over all of them in turn:
    the chunk's inputs and one panel stay in L2 together.
    """
    _, h_, w_, c_ = x.shape
    p_, k_, nr = packed.shape
    co = out.shape[1]
    rows = x.shape[0] * ho
    two = narrow(packed)
    half = _half_panels(wo, two)
    mr = _MR_NARROW if two or half else _MR_WIDE
    if panels:
        start, end = 0, rows
        q0, q1 = t * -(-p_ // nt), min(p_, (t + 1) * -(-p_ // nt))
    else:
        start, end = t * -(-rows // nt), min(rows, (t + 1) * -(-rows // nt))
        q0, q1 = 0, p_
    for r0 in range(start, end, chunk):
        r1 = min(end, r0 + chunk)
        for q in range(q0, q1):
            b = _at(packed, q * k_ * nr)
            for r in range(r0, r1):
                if prefetch and q + 1 < q1:  # the next panel, a slice per row
                    prefetch_part(packed, q + 1, r - r0, r1 - r0)
                n = r // ho
                oh = r % ho
                base = ((n * h_ + oh * stride) * w_) * c_
                for ow0 in range(0, wo, mr):
                    m = min(mr, wo - ow0)
                    a = _at(x, base + ow0 * stride * c_)
                    dst = (r * wo + ow0) * co + q * nr
                    cols = min(nr, co - q * nr)
                    if two:
                        micro_narrow(a, stride * c_, m, _at(offs, 0), k_, b, nr, _at(out, dst), co, cols,
                                     _at(scale, q * nr), _at(shift, q * nr), relu, False)
                    elif half:  # each half of the panel: its first nr/2 columns, then the rest (rows nr apart)
                        hn = nr // 2
                        for c0 in range(0, min(nr, cols), hn):
                            micro_narrow(a, stride * c_, m, _at(offs, 0), k_, _at(packed, q * k_ * nr + c0), nr,
                                         _at(out, dst + c0), co, min(hn, cols - c0), _at(scale, q * nr + c0),
                                         _at(shift, q * nr + c0), relu, False)
                    else:
                        micro_wide(a, stride * c_, m, _at(offs, 0), k_, b, nr, _at(out, dst), co, cols,
                                   _at(scale, q * nr), _at(shift, q * nr), relu, False)


# made once per geometry (a call's Python under load costs 5-30 us for each array made anew: docs/performance.md,
# "Issue 15, 2026-11-30 14:00-15:30 UTC"); bounded, as photos at their own size bring new widths; never written
@functools.lru_cache(maxsize=64)
def tap_offsets(kh, kw, w, c):
    """off[(i*KW + j)*C + c] = (i*W + j)*C + c: where tap k sits from its pixel's first input, in elements."""
    i = np.arange(kh)[:, None, None]
    j = np.arange(kw)[None, :, None]
    return ((i * w + j) * c + np.arange(c)).reshape(-1).astype(np.int64)


def conv_direct(x, packed, kh, stride, ho, wo, scale, shift, relu, out, threads):
    """out (N*Ho*Wo, C_out) = relu?(conv(x, kernel) * scale + shift), no padding; x (N, H, W, C) float32 or 64.

    ``packed`` is :func:`pack_kernel` of the (KH*KH*C, C_out) kernel. Output
    rows, or where :func:`shares_panels` says the output panels, are shared among ``threads`` threads
    (npxception/fast/threads.py).
    """
    if numba.config.DISABLE_JIT:  # the intrinsic cannot run as Python: its twin computes the same
        out[...] = conv_direct_reference(x, unpack_panels(packed, out.shape[1]), kh, stride, ho, wo, scale, shift,
                                         relu)
        return
    offs = tap_offsets(kh, kh, x.shape[2], x.shape[3])
    rows = x.shape[0] * ho
    panels = shares_panels(rows * wo, out.shape[1], threads)
    chunk = rows if panels else -(-rows // threads)  # every row of the share under each panel: weights over
    if packed.nbytes <= L2_BYTES:  # L2_BYTES stream once; where they stay in L2 anyway, a chunk of inputs too
        chunk = max(1, min(chunk, L2_BYTES // (kh * x.shape[2] * x.strides[2])))
    in_parallel(_direct_part, threads, (threads, x, packed, offs, stride, ho, wo, scale, shift, relu, out, chunk,
                                        PREFETCH, panels))


def conv_direct_reference(x, kernel2d, kh, stride, ho, wo, scale, shift, relu):
    """NumPy twin of :func:`conv_direct`: one GEMM per tap on the input's strided tap view, then the epilogue."""
    n, _, _, c = x.shape
    y = np.zeros((n * ho * wo, kernel2d.shape[1]), x.dtype)
    for i in range(kh):
        for j in range(kh):
            taps = tap_view(x, i, j, (stride, stride), (ho, wo)).reshape(-1, c)
            y += taps @ kernel2d[(i * kh + j) * c:(i * kh + j + 1) * c]
    y = y * scale + shift
    return np.maximum(y, 0) if relu else y




# ---- whether the microkernel works in this process --------------------------------------------------------
_READY = {}  # dtype name -> the answer of microkernel_ready, once asked


def microkernel_ready(dtype=np.float32) -> bool:
    """Whether the microkernel compiles and computes right here in ``dtype``; asked once a process and
    dtype, on AVX-512 only.

    It is LLVM IR written for one LLVM's intrinsics (npxception/fast/micro.py),
    so another Numba/llvmlite may refuse it. :func:`_probe` compiles its
    callers and checks them on a small case; on any failure the plan keeps
    im2col + OpenBLAS, as on CPUs without AVX-512, and one notice on stderr
    names the cause. Under ``NUMBA_DISABLE_JIT=1`` the NumPy twins run: ready.
    """
    if not AVAILABLE:
        return False
    dtype = np.dtype(dtype)
    if dtype.name not in _READY:
        _READY[dtype.name] = False
        try:
            if not numba.config.DISABLE_JIT:
                _probe(dtype)
        except Exception as error:  # any compile or lowering error: the fallback is always correct
            lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
            # Numba's first line names the stage; LLVM's own complaint is the line saying "error:"
            cause = "; ".join(dict.fromkeys([lines[0]] + [line for line in lines if "error:" in line][:1]))
            print(f"npxception: the AVX-512 microkernel (npxception/fast/direct.py) is not used in {dtype.name}, "
                  f"convolutions run on im2col + OpenBLAS instead: it failed under Numba {numba.__version__}, "
                  f"llvmlite {llvmlite.__version__} (LLVM {'.'.join(map(str, ll.llvm_version_info))}): "
                  f"{type(error).__name__}: {cause}", file=sys.stderr)
        else:
            _READY[dtype.name] = True
    return _READY[dtype.name]


def _probe(dtype=np.float32):
    """Run :func:`conv_direct` (both tile shapes, a tail of rows and of channels) against its twin; raises on failure.

    The same argument types as the plan's calls: the compiled kernel is
    the one the plan then uses (and caches).
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 2 * _MR_NARROW + 3, 5)).astype(dtype)
    narrow_panel = 2 * 64 // np.dtype(dtype).itemsize  # two vectors of channels: 32 float32, 16 float64
    for c_out in (narrow_panel - 12, 70):  # one narrow panel (10-row tiles); wide ones and a tail (6-row tiles)
        kernel = rng.standard_normal((3 * 3 * 5, c_out)).astype(dtype)
        scale = rng.uniform(0.5, 2, c_out).astype(dtype)
        shift = rng.standard_normal(c_out).astype(dtype)
        ho, wo = x.shape[1] - 2, x.shape[2] - 2
        out = np.full((ho * wo, c_out), np.nan, dtype)
        conv_direct(x, pack_kernel(kernel), 3, 1, ho, wo, scale, shift, True, out, 1)
        want = conv_direct_reference(x.astype(np.float64), kernel.astype(np.float64), 3, 1, ho, wo, scale, shift,
                                     True)
        # 45-term float32 dot products of N(0, 1) values, scaled by <= 2: 1e-4 is ~100x their rounding error
        # (float64's is far smaller; the probe looks for wrong code, not for rounding)
        if not np.allclose(out, want, rtol=1e-4, atol=1e-4):
            raise ArithmeticError(f"a {ho}x{wo}x5 -> {c_out} convolution differs from its NumPy twin by up to "
                                  f"{np.nanmax(np.abs(out - want)):.3g}")
    pointwise.bind(dtype)  # the fused kernels' pointwise GEMM (the same microkernel), compiled once a dtype
