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

The microkernel (LLVM IR through a Numba ``@intrinsic``, as in
benchmarks/gemm_microkernel.py) holds MR pixels x NR channels of ``y`` in
registers for the whole reduction over k, broadcasting each input against
the weights' NR-wide row, and applies the affine map and the ReLU before its
one masked store (or adds into a residual). The same microkernel runs the
separable convolutions' pointwise GEMMs (:func:`pointwise_tile`), its left
operand the depthwise tile in the thread's cache. The weights are packed
once, in NR-wide panels (npxception/fast/packing.py), when the plan is built, and
the model then holds them only packed (npxception/params.py): 80 MB of
pointwise kernels are in memory once. Why this exists and what it measured:
docs/performance.md, "Issue 15, 2026-11-29 17:10-18:50 UTC: the
register-tiled microkernel" and "every kernel held only packed".

float32 only, and only on CPUs with AVX-512 (:data:`AVAILABLE`) where the
microkernel compiled and computed a small case right (:func:`microkernel_ready`,
once a process); elsewhere the plan keeps im2col + OpenBLAS
(npxception/fast/fused.py). Under
``NUMBA_DISABLE_JIT=1`` the twins (:func:`conv_direct_reference`, the body of
:func:`pointwise_tile`) run instead, on the kernels unpacked from the same panels.
"""

from __future__ import annotations

import sys

import llvmlite
import llvmlite.binding as ll
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._jit import njit
from ..ops.padding import tap_view
from .packing import pack_kernel, unpack_panels
from .threads import in_parallel

LANES = 16  # float32 lanes of one zmm register
# (rows of pixels, vectors of channels): MR * NVEC accumulators + NVEC weight vectors fit the 32 zmm registers
TILES = {64: (6, 4), 32: (12, 2)}  # NR -> (MR, NVEC)
L2_FLOATS = 128 * 1024  # 512 KB: half a core's L2 on the machines measured, for inputs or weights
LINE_FLOATS = 16  # float32 values in a 64-byte cache line
# each thread, while it runs one panel of weights over its rows, asks for the next panel ahead (into L2): the
# first rows of a panel otherwise wait on it from L3 or memory (docs/performance.md, "Issue 15, 2026-11-30");
# False: no prefetch (the benchmarks' A/B)
PREFETCH = True


def _host_has_avx512() -> bool:
    """Whether the CPU Numba compiles for has AVX-512F (read through llvmlite, as Numba does)."""
    try:
        return bool(ll.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # llvmlite could not read the host's features
        return False


AVAILABLE = _host_has_avx512()
# passed as ``packed`` where the microkernel is not used: its type (not float32) keeps the microkernel out of
# the compiled fused kernel (the overload of pointwise_tile below), so a microkernel that cannot compile is never
# compiled; fused.NOT_PACKED (float32) keeps it in, for the steps of a plan that packs others
NO_MICROKERNEL = np.empty((0, 0, 0), np.float64)


def worth_packing(dtype) -> bool:
    """Whether a plan in ``dtype`` packs its kernels for the microkernel: float32, AVX-512 and
    :func:`microkernel_ready` (asked last: only plans that would pack pay for the probe).

    Every kernel, whatever its size: held only packed, they cost no memory
    (docs/performance.md, "every kernel held only packed").
    """
    return AVAILABLE and np.dtype(dtype) == np.float32 and microkernel_ready()


def _masked_suffix(vty):
    """The pointer part of the masked load/store intrinsics' names, as the LLVM in use mangles ``vty*``.

    LLVM 14 (llvmlite 0.42-0.43, Numba 0.59-0.60) has typed pointers:
    ``llvm.masked.load.v16f32.p0v16f32``; LLVM with opaque pointers wants
    ``.p0``, and rejects the other ("Intrinsic name not mangled correctly").
    Asked of LLVM itself, not of llvmlite's IR layer: that layer prints typed
    pointers by default (``llvmlite.ir_layer_typed_pointers_enabled``) even
    where LLVM reads them as opaque (Numba 0.68, LLVM 20+).
    """
    declared = str(ll.parse_assembly(f"declare void @probe({vty.as_pointer()})"))
    return "p0" if "(ptr)" in declared else f"p0v{LANES}f32"


def _make_micro(mr, nvec):
    """The MR x (NVEC*16) microkernel: y = A @ B over k, then relu?(y * scale + shift), masked store."""
    fty = ir.FloatType()
    vty = ir.VectorType(fty, LANES)
    nr = LANES * nvec
    f32p = types.CPointer(types.float32)

    @intrinsic
    def micro(typingctx, a, lda, rows, offs, k, b, ldb, c, ldc, ncols, scale, shift, relu, add):
        sig = types.void(f32p, types.int64, types.int64, types.CPointer(types.int64), types.int64, f32p,
                         types.int64, f32p, types.int64, types.int64, f32p, f32p, types.boolean, types.boolean)

        def codegen(context, builder, signature, args):
            a, lda, rows, offs, k, b, ldb, c, ldc, ncols, scale, shift, relu, add = args
            mod = builder.module
            i64, i32, i1 = ir.IntType(64), ir.IntType(32), ir.IntType(1)
            mty = ir.VectorType(i1, LANES)
            fma = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty, vty, vty]), "llvm.fma.v16f32")
            ptr = _masked_suffix(vty)
            mload = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty.as_pointer(), i32, mty, vty]),
                                                   f"llvm.masked.load.v{LANES}f32.{ptr}")
            mstore = cgutils.get_or_insert_function(
                mod, ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, mty]),
                f"llvm.masked.store.v{LANES}f32.{ptr}")
            zero = ir.Constant(vty, [0.0] * LANES)
            splat_idx = ir.Constant(ir.VectorType(i32, LANES), [0] * LANES)

            def splat(value, ty):
                v = builder.insert_element(ir.Constant(ty, None), value, ir.Constant(i32, 0))
                return builder.shuffle_vector(v, v, splat_idx)

            # rows past the last pixel repeat it: their stores write the same values to the same place
            last = builder.sub(rows, ir.Constant(i64, 1))
            aptr, cptr = [], []
            for i in range(mr):
                ci = ir.Constant(i64, i)
                idx = builder.select(builder.icmp_signed("<", ci, rows), ci, last)
                aptr.append(builder.gep(a, [builder.mul(idx, lda)]))
                cptr.append(builder.gep(c, [builder.mul(idx, ldc)]))
            vi64 = ir.VectorType(i64, LANES)
            cols = splat(ncols, vi64)
            masks = [builder.icmp_signed("<", ir.Constant(vi64, [v * LANES + j for j in range(LANES)]), cols)
                     for v in range(nvec)]
            entry = builder.block
            loop = builder.append_basic_block("direct.loop")
            done = builder.append_basic_block("direct.done")
            builder.cbranch(builder.icmp_signed(">", k, ir.Constant(i64, 0)), loop, done)
            builder.position_at_end(loop)
            kk = builder.phi(i64)
            kk.add_incoming(ir.Constant(i64, 0), entry)
            accs = [[None] * nvec for _ in range(mr)]
            for i in range(mr):
                for v in range(nvec):
                    accs[i][v] = builder.phi(vty)
                    accs[i][v].add_incoming(zero, entry)
            brow = builder.gep(b, [builder.mul(kk, ldb)])
            bv = [builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(i64, v * LANES)]), vty.as_pointer()),
                               align=4) for v in range(nvec)]
            off = builder.load(builder.gep(offs, [kk]))
            new = []
            for i in range(mr):
                s = splat(builder.load(builder.gep(aptr[i], [off])), vty)
                new.append([builder.call(fma, [s, bv[v], accs[i][v]]) for v in range(nvec)])
            nk = builder.add(kk, ir.Constant(i64, 1))
            kk.add_incoming(nk, loop)
            for i in range(mr):
                for v in range(nvec):
                    accs[i][v].add_incoming(new[i][v], loop)
            builder.cbranch(builder.icmp_signed("<", nk, k), loop, done)
            builder.position_at_end(done)
            ys = [[None] * nvec for _ in range(mr)]
            for i in range(mr):  # the sums (zero when k = 0), first in the block as LLVM requires
                for v in range(nvec):
                    ys[i][v] = builder.phi(vty)
                    ys[i][v].add_incoming(zero, entry)
                    ys[i][v].add_incoming(new[i][v], loop)
            four = ir.Constant(i32, 4)
            sv = [builder.call(mload, [builder.bitcast(builder.gep(scale, [ir.Constant(i64, v * LANES)]),
                                                       vty.as_pointer()), four, masks[v], zero]) for v in range(nvec)]
            hv = [builder.call(mload, [builder.bitcast(builder.gep(shift, [ir.Constant(i64, v * LANES)]),
                                                       vty.as_pointer()), four, masks[v], zero]) for v in range(nvec)]
            def flag(value):  # a boolean argument as a vector of i1
                return splat(value if value.type == i1 else builder.trunc(value, i1), ir.VectorType(i1, LANES))

            relu_v, add_v = flag(relu), flag(add)
            results = []
            for i in range(mr):
                for v in range(nvec):
                    y = builder.call(fma, [ys[i][v], sv[v], hv[v]])
                    neg = builder.fcmp_ordered("<", y, zero)
                    y = builder.select(builder.and_(neg, relu_v), zero, y)
                    dst = builder.bitcast(builder.gep(cptr[i], [ir.Constant(i64, v * LANES)]), vty.as_pointer())
                    # added into what c holds (the residual) when asked: nothing is loaded otherwise
                    y = builder.fadd(y, builder.call(mload, [dst, four, builder.and_(masks[v], add_v), zero]))
                    results.append((y, dst, v))
            for y, dst, v in results:  # every load before any store: repeated last rows alias it
                builder.call(mstore, [y, dst, four, masks[v]])
            return context.get_dummy_value()
        return sig, codegen
    return micro


_MICRO = {nr: _make_micro(*TILES[nr]) for nr in TILES}
_micro64 = _MICRO[64]
_micro32 = _MICRO[32]
_MR64, _MR32 = TILES[64][0], TILES[32][0]


@intrinsic
def _at(typingctx, arr, off):
    """A typed pointer to element ``off`` of a C-contiguous array's flat data."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.gep(data, [args[1]])
    return types.CPointer(arr.dtype)(arr, off), codegen


def _prefetch_suffix():
    """The pointer part of ``llvm.prefetch``'s name, as the LLVM in use mangles ``i8*`` (see :func:`_masked_suffix`)."""
    declared = str(ll.parse_assembly(f"declare void @probe({ir.IntType(8).as_pointer()})"))
    return "p0" if "(ptr)" in declared else "p0i8"


@intrinsic
def _prefetch_l2(typingctx, arr, off):
    """A hint: bring the cache line of element ``off`` of a C-contiguous array's flat data into L2 (x86
    ``prefetcht1``). Computes nothing; a line past the array is never touched (a prefetch does not fault)."""
    def codegen(context, builder, sig, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            f"llvm.prefetch.{_prefetch_suffix()}")
        # read, locality 2 (prefetcht1: L2 and beyond), data cache
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), i8p), ir.Constant(i32, 0),
                          ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(arr, types.int64), codegen


@njit(nogil=True, inline="always")
def _prefetch_part(packed, q, part, parts):
    """Prefetch the ``part``-th of ``parts`` slices of panel ``q`` of ``packed`` (nothing past the last panel)."""
    p_, k_, nr = packed.shape
    if q >= p_:
        return
    size = k_ * nr
    step = -(-size // parts)
    lo = q * size + part * step
    hi = min(q * size + size, lo + step)
    for off in range(lo, hi, LINE_FLOATS):
        _prefetch_l2(packed, off)


@njit(nogil=True)
def _direct_part(t, nt, x, packed, offs, stride, ho, wo, scale, shift, relu, out, chunk, prefetch):
    """Thread t's share of :func:`conv_direct`: output rows (n, oh) numbered [a_t, b_t), MR pixels at a time.

    ``chunk`` rows at a time, each panel of weights over all of them in turn:
    the chunk's inputs and one panel stay in L2 together.
    """
    _, h_, w_, c_ = x.shape
    p_, k_, nr = packed.shape
    co = out.shape[1]
    rows = x.shape[0] * ho
    per = -(-rows // nt)
    mr = _MR32 if nr == 32 else _MR64
    end = min(rows, (t + 1) * per)
    for r0 in range(t * per, end, chunk):
        r1 = min(end, r0 + chunk)
        for q in range(p_):
            b = _at(packed, q * k_ * nr)
            for r in range(r0, r1):
                if prefetch:  # the next panel, a slice per row
                    _prefetch_part(packed, q + 1, r - r0, r1 - r0)
                n = r // ho
                oh = r % ho
                base = ((n * h_ + oh * stride) * w_) * c_
                for ow0 in range(0, wo, mr):
                    m = min(mr, wo - ow0)
                    a = _at(x, base + ow0 * stride * c_)
                    dst = _at(out, (r * wo + ow0) * co + q * nr)
                    cols = min(nr, co - q * nr)
                    if nr == 32:
                        _micro32(a, stride * c_, m, _at(offs, 0), k_, b, nr, dst, co, cols, _at(scale, q * nr),
                                 _at(shift, q * nr), relu, False)
                    else:
                        _micro64(a, stride * c_, m, _at(offs, 0), k_, b, nr, dst, co, cols, _at(scale, q * nr),
                                 _at(shift, q * nr), relu, False)


def tap_offsets(kh, kw, w, c):
    """off[(i*KW + j)*C + c] = (i*W + j)*C + c: where tap k sits from its pixel's first input, in elements."""
    i = np.arange(kh)[:, None, None]
    j = np.arange(kw)[None, :, None]
    return ((i * w + j) * c + np.arange(c)).reshape(-1).astype(np.int64)


def conv_direct(x, packed, kh, stride, ho, wo, scale, shift, relu, out, threads):
    """out (N*Ho*Wo, C_out) = relu?(conv(x, kernel) * scale + shift), no padding; x (N, H, W, C) float32.

    ``packed`` is :func:`pack_kernel` of the (KH*KH*C, C_out) kernel. Output
    rows are shared among ``threads`` threads (npxception/fast/threads.py).
    """
    if numba.config.DISABLE_JIT:  # the intrinsic cannot run as Python: its twin computes the same
        out[...] = conv_direct_reference(x, unpack_panels(packed, out.shape[1]), kh, stride, ho, wo, scale, shift,
                                         relu)
        return
    offs = tap_offsets(kh, kh, x.shape[2], x.shape[3])
    rows = x.shape[0] * ho
    chunk = -(-rows // threads)  # every row of the share under each panel: weights over L2_FLOATS stream once
    if packed.size <= L2_FLOATS:  # the weights stay in L2 anyway: a chunk of inputs that stays there too
        chunk = max(1, min(chunk, L2_FLOATS // (kh * x.shape[2] * x.shape[3])))
    in_parallel(_direct_part, threads, (threads, x, packed, offs, stride, ho, wo, scale, shift, relu, out, chunk,
                                        PREFETCH))


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




@njit(nogil=True)
def _pointwise_packed(a, packed, offs, scale, shift, relu, add, y, prefetch):
    """y (M, C_out) = relu?(a @ kernel * scale + shift), or y += that when ``add``; a (M, K) C-contiguous.

    ``packed`` is :func:`pack_kernel` (kernel); ``offs`` is ``arange(K)``: the
    microkernel's taps are then the row's K values.
    """
    m, k_ = a.shape
    p_, _, nr = packed.shape
    co = y.shape[1]
    mr = _MR32 if nr == 32 else _MR64
    blocks = -(-m // mr)
    for q in range(p_):
        b = _at(packed, q * k_ * nr)
        for i0 in range(0, m, mr):
            rows = min(mr, m - i0)
            if prefetch:  # the next panel, a slice per block of rows
                _prefetch_part(packed, q + 1, i0 // mr, blocks)
            if nr == 32:
                _micro32(_at(a, i0 * k_), k_, rows, _at(offs, 0), k_, b, nr, _at(y, i0 * co + q * nr), co,
                         min(nr, co - q * nr), _at(scale, q * nr), _at(shift, q * nr), relu, add)
            else:
                _micro64(_at(a, i0 * k_), k_, rows, _at(offs, 0), k_, b, nr, _at(y, i0 * co + q * nr), co,
                         min(nr, co - q * nr), _at(scale, q * nr), _at(shift, q * nr), relu, add)


def pointwise_tile(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
    """y = relu?(a @ kernel * scale + shift), or y += that when ``add``, by the microkernel.

    a (M, K), y (M, C_out), C-contiguous float32; ``packed`` is
    :func:`pack_kernel` of the (K, C_out) kernel. ``prefetch`` asks for each
    next panel ahead (a hint). Called from kernels (an overload below); as
    Python (``NUMBA_DISABLE_JIT=1``) this body, its NumPy twin, runs.
    """
    v = a @ unpack_panels(packed, y.shape[1]) * scale + shift
    if relu:
        v = np.maximum(v, 0)
    if add:
        y += v
    else:
        y[...] = v


@overload(pointwise_tile)
def _pointwise_tile_compiled(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
    if y.dtype != types.float32 or packed.dtype != types.float32:
        # float64 plans pack nothing; NO_MICROKERNEL packs nothing and must not compile the microkernel
        def never(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
            pass
        return never

    def impl(a, packed, offs, scale, shift, relu, add, y, prefetch=True):
        _pointwise_packed(a, packed, offs, scale, shift, relu, add, y, prefetch)
    return impl


# ---- whether the microkernel works in this process --------------------------------------------------------
_READY = {}  # "ready": the answer of microkernel_ready, once asked


def microkernel_ready() -> bool:
    """Whether the microkernel compiles and computes right here; asked once a process, on AVX-512 only.

    It is LLVM IR written for one LLVM's intrinsics (:func:`_masked_suffix`),
    so another Numba/llvmlite may refuse it. :func:`_probe` compiles its
    callers and checks them on a small case; on any failure the plan keeps
    im2col + OpenBLAS, as on CPUs without AVX-512, and one notice on stderr
    names the cause. Under ``NUMBA_DISABLE_JIT=1`` the NumPy twins run: ready.
    """
    if not AVAILABLE:
        return False
    if "ready" not in _READY:
        _READY["ready"] = False
        try:
            if not numba.config.DISABLE_JIT:
                _probe()
        except Exception as error:  # any compile or lowering error: the fallback is always correct
            lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
            # Numba's first line names the stage; LLVM's own complaint is the line saying "error:"
            cause = "; ".join(dict.fromkeys([lines[0]] + [line for line in lines if "error:" in line][:1]))
            print(f"npxception: the AVX-512 microkernel (npxception/fast/direct.py) is not used, convolutions "
                  f"run on im2col + OpenBLAS instead: it failed under Numba {numba.__version__}, llvmlite "
                  f"{llvmlite.__version__} (LLVM {'.'.join(map(str, ll.llvm_version_info))}): "
                  f"{type(error).__name__}: {cause}", file=sys.stderr)
        else:
            _READY["ready"] = True
    return _READY["ready"]


def _probe():
    """Run :func:`conv_direct` (both tile shapes, a tail of rows and of channels) against its twin; raises on failure.

    The same argument types as the plan's calls: the compiled kernel is
    the one the plan then uses (and caches).
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 2 * _MR32 + 3, 5)).astype(np.float32)
    for c_out in (20, 70):  # one half-width panel (NR 32, 12 x 32 tiles); a full one and its tail (NR 64)
        kernel = rng.standard_normal((3 * 3 * 5, c_out)).astype(np.float32)
        scale = rng.uniform(0.5, 2, c_out).astype(np.float32)
        shift = rng.standard_normal(c_out).astype(np.float32)
        ho, wo = x.shape[1] - 2, x.shape[2] - 2
        out = np.full((ho * wo, c_out), np.nan, np.float32)
        conv_direct(x, pack_kernel(kernel), 3, 1, ho, wo, scale, shift, True, out, 1)
        want = conv_direct_reference(x.astype(np.float64), kernel.astype(np.float64), 3, 1, ho, wo, scale, shift,
                                     True)
        # 45-term float32 dot products of N(0, 1) values, scaled by <= 2: 1e-4 is ~100x their rounding error
        if not np.allclose(out, want, rtol=1e-4, atol=1e-4):
            raise ArithmeticError(f"a {ho}x{wo}x5 -> {c_out} convolution differs from its NumPy twin by up to "
                                  f"{np.nanmax(np.abs(out - want)):.3g}")
