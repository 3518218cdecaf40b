"""The register-tiled microkernel in LLVM IR (a Numba ``@intrinsic``), and the pointer helpers around it.

    micro(a, lda, rows, offs, k, b, ldb, c, ldc, ncols, scale, shift, relu, add):
        y[i, n] = sum_k a[i*lda + offs[k]] * b[k*ldb + n]        i < MR (rows past ``rows`` repeat the last),
        c[i*ldc + n] = relu?(y * scale[n] + shift[n]) (+ c when add)      n < min(NR, ncols), one masked store

MR pixels x NVEC AVX-512 vectors of output channels stay in registers for the
whole reduction: each input is broadcast against the weights' NR-wide row.
The element type comes from the pointers: float32 (16 lanes a register) or
float64 (8), so a tile of NVEC vectors is NR = 64 or 32 float32 channels,
32 or 16 float64 ones (npxception/fast/packing.py packs panels that wide).
Used by npxception/fast/direct.py; why and what it measured: docs/performance.md,
"Issue 15, 2026-11-29 17:10-18:50 UTC: the register-tiled microkernel".
"""

from __future__ import annotations

import llvmlite.binding as ll
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .._jit import njit

LANES = 16  # float32 lanes of one zmm register (float64: 8)
VECTOR_BYTES = 64  # a zmm register, and a cache line
# vectors of channels -> rows of pixels: MR * NVEC accumulators + NVEC weight vectors fit the 32 zmm registers;
# two vectors take 10 rows, not 12: 12 row pointers left too few registers (10000x27x32, one thread: 95 against
# 127 GFLOP/s; docs/performance.md, "Issue 15, 2026-11-30 04:50-06:30 UTC")
ROWS = {4: 6, 2: 10}
TILES = {64: (6, 4), 32: (10, 2)}  # float32 NR -> (MR, NVEC)
MR_WIDE, MR_NARROW = ROWS[4], ROWS[2]


def _host_has_avx512() -> bool:
    """Whether the CPU Numba compiles for has AVX-512F (read through llvmlite, as Numba does)."""
    try:
        return bool(ll.get_host_cpu_features().get("avx512f", False))
    except RuntimeError:  # llvmlite could not read the host's features
        return False


AVAILABLE = _host_has_avx512()


def _opaque_pointers() -> bool:
    """Whether the LLVM in use reads pointers as opaque (``ptr``).

    LLVM 14 (llvmlite 0.42-0.43, Numba 0.59-0.60) has typed pointers, and an
    intrinsic on a pointer is named after its pointee
    (``llvm.masked.load.v16f32.p0v16f32``); LLVM with opaque pointers wants
    ``.p0``, and rejects the other ("Intrinsic name not mangled correctly").
    Asked of LLVM itself, not of llvmlite's IR layer: that layer prints typed
    pointers by default (``llvmlite.ir_layer_typed_pointers_enabled``) even
    where LLVM reads them as opaque (Numba 0.68, LLVM 20+).
    """
    return "(ptr)" in str(ll.parse_assembly(f"declare void @probe({ir.IntType(8).as_pointer()})"))


def _vector_name(fty):
    return f"v{VECTOR_BYTES // (4 if isinstance(fty, ir.FloatType) else 8)}{'f32' if isinstance(fty, ir.FloatType) else 'f64'}"


def _masked_suffix(vty):
    """The pointer part of the masked load/store intrinsics' names for ``vty*`` (see :func:`_opaque_pointers`)."""
    return "p0" if _opaque_pointers() else f"p0{_vector_name(vty.element)}"


def _make_micro(mr, nvec):
    """The MR x NVEC-vector microkernel of the module docstring, for float32 or float64 pointers."""

    @intrinsic
    def micro(typingctx, a, lda, rows, offs, k, b, ldb, c, ldc, ncols, scale, shift, relu, add):
        fp = types.CPointer(a.dtype)
        sig = types.void(fp, types.int64, types.int64, types.CPointer(types.int64), types.int64, fp,
                         types.int64, fp, types.int64, types.int64, fp, fp, types.boolean, types.boolean)
        size = 4 if a.dtype == types.float32 else 8
        fty = ir.FloatType() if size == 4 else ir.DoubleType()
        lanes = VECTOR_BYTES // size
        vty = ir.VectorType(fty, lanes)
        name = _vector_name(fty)

        def codegen(context, builder, signature, args):
            a, lda, rows, offs, k, b, ldb, c, ldc, ncols, scale, shift, relu, add = args
            mod = builder.module
            i64, i32, i1 = ir.IntType(64), ir.IntType(32), ir.IntType(1)
            mty = ir.VectorType(i1, lanes)
            fma = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty, vty, vty]), f"llvm.fma.{name}")
            ptr = _masked_suffix(vty)
            mload = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty.as_pointer(), i32, mty, vty]),
                                                   f"llvm.masked.load.{name}.{ptr}")
            mstore = cgutils.get_or_insert_function(
                mod, ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, mty]),
                f"llvm.masked.store.{name}.{ptr}")
            zero = ir.Constant(vty, [0.0] * lanes)
            splat_idx = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

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
            vi64 = ir.VectorType(i64, lanes)
            cols = splat(ncols, vi64)
            masks = [builder.icmp_signed("<", ir.Constant(vi64, [v * lanes + j for j in range(lanes)]), cols)
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
            bv = [builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(i64, v * lanes)]), vty.as_pointer()),
                               align=size) for v in range(nvec)]
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
            align = ir.Constant(i32, size)

            def vec(p, v):  # pointer p + v vectors, as a vector pointer
                return builder.bitcast(builder.gep(p, [ir.Constant(i64, v * lanes)]), vty.as_pointer())

            sv = [builder.call(mload, [vec(scale, v), align, masks[v], zero]) for v in range(nvec)]
            hv = [builder.call(mload, [vec(shift, v), align, masks[v], zero]) for v in range(nvec)]

            def flag(value):  # a boolean argument as a vector of i1
                return splat(value if value.type == i1 else builder.trunc(value, i1), ir.VectorType(i1, lanes))

            relu_v, add_v = flag(relu), flag(add)
            results = []
            for i in range(mr):
                for v in range(nvec):
                    y = builder.call(fma, [ys[i][v], sv[v], hv[v]])
                    neg = builder.fcmp_ordered("<", y, zero)
                    y = builder.select(builder.and_(neg, relu_v), zero, y)
                    dst = vec(cptr[i], v)
                    # added into what c holds (the residual) when asked: nothing is loaded otherwise
                    y = builder.fadd(y, builder.call(mload, [dst, align, builder.and_(masks[v], add_v), zero]))
                    results.append((y, dst, v))
            for y, dst, v in results:  # every load before any store: repeated last rows alias it
                builder.call(mstore, [y, dst, align, masks[v]])
            return context.get_dummy_value()
        return sig, codegen
    return micro


micro_wide = _make_micro(ROWS[4], 4)  # 4 vectors of channels: 64 float32 or 32 float64
micro_narrow = _make_micro(ROWS[2], 2)  # 2 vectors: 32 float32 or 16 float64, for C_out that narrow


@intrinsic
def at(typingctx, arr, off):
    """A typed pointer to element ``off`` of a C-contiguous array's flat data."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.gep(data, [args[1]])
    return types.CPointer(arr.dtype)(arr, off), codegen


@intrinsic
def _prefetch_l2(typingctx, arr, off):
    """A hint: bring the cache line of element ``off`` of a C-contiguous array's flat data into L2 (x86
    ``prefetcht1``). Computes nothing; a line past the array is never touched (a prefetch does not fault)."""
    def codegen(context, builder, sig, args):
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        suffix = "p0" if _opaque_pointers() else "p0i8"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            f"llvm.prefetch.{suffix}")
        # read, locality 2 (prefetcht1: L2 and beyond), data cache
        builder.call(fn, [builder.bitcast(builder.gep(data, [args[1]]), i8p), ir.Constant(i32, 0),
                          ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(arr, types.int64), codegen


@njit(nogil=True, inline="always")
def prefetch_part(packed, q, part, parts):
    """Prefetch the ``part``-th of ``parts`` slices of panel ``q`` of ``packed`` (nothing past the last panel)."""
    p_, k_, nr = packed.shape
    if q >= p_:
        return
    size = k_ * nr
    step = -(-size // parts)
    lo = q * size + part * step
    hi = min(q * size + size, lo + step)
    for off in range(lo, hi, VECTOR_BYTES // packed.itemsize):  # a cache line at a time
        _prefetch_l2(packed, off)


@njit(nogil=True, inline="always")
def narrow(packed):
    """Whether ``packed``'s panels are two vectors wide (the 10-row tile), not four (the 6-row one)."""
    return packed.shape[2] * packed.itemsize == 2 * VECTOR_BYTES


@njit(nogil=True, inline="always")
def half_panels(m, two):
    """Whether m rows run on the 10-row tile over each half of a wide panel rather than on the 6-row tile:
    where 6-row blocks would waste more rows (19 pixels: 24 against 20; 10: 12 against 10). Measured on
    block4's and block13's residual convolutions: 0.83 and 0.90 of the time (npxception/fast/direct.py; docs/performance.md, "Issue 15,
    2026-11-30 04:50-06:30 UTC")."""
    return not two and -(-m // MR_NARROW) * MR_NARROW < -(-m // MR_WIDE) * MR_WIDE
