"""An experiment kept for its numbers: a GEMM with a register-blocked AVX-512 microkernel, against OpenBLAS.

    python benchmarks/gemm_microkernel.py        # MK=rows,lanes,vectors BBLOCK=floats to vary the blocking

The microkernel is written in LLVM IR through a Numba ``@intrinsic``: MR rows
of A broadcast against NVEC vectors of a packed B panel, MR * NVEC accumulators
held in registers for the whole K loop (the loop compiles to 4 loads, 6
broadcasts and 24 FMAs per step for 6 x 64). The driver packs B in
(k-block x 48)-column panels and A in (k, MR) micro-panels, and updates C in
place with masked loads and stores at the right edge.

What it measured (docs/performance.md, "A GEMM of our own"): the microkernel
alone, its operands in L1, reaches 145 GFLOP/s on one core, above OpenBLAS'
single-threaded sgemm on Xception's shapes; the whole GEMM, with packing and
blocking, reached 60-70% of OpenBLAS. Not used by the fast path.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def make_micro(real, lanes, nvec, mr):
    fty = ir.FloatType() if real == types.float32 else ir.DoubleType()
    vty = ir.VectorType(fty, lanes)
    nr = lanes * nvec
    vname = f"v{lanes}" + ("f32" if real == types.float32 else "f64")
    P = types.CPointer(real)
    @intrinsic
    def micro(typingctx, a, lda, rows, b, k, c, ldc, ncols, beta):
        sig = types.void(P, types.int64, types.int64, P, types.int64, P, types.int64, types.int64, types.boolean)
        def codegen(context, builder, signature, args):
            a, lda, rows, b, k, c, ldc, ncols, beta = args
            mod = builder.module
            i64 = ir.IntType(64); i32 = ir.IntType(32); i1 = ir.IntType(1)
            mty = ir.VectorType(i1, lanes)
            fma = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty, vty, vty]), f"llvm.fma.{vname}")
            mload = cgutils.get_or_insert_function(mod, ir.FunctionType(vty, [vty.as_pointer(), i32, mty, vty]),
                                                   f"llvm.masked.load.{vname}.p0")
            mstore = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), [vty, vty.as_pointer(), i32, mty]),
                                                    f"llvm.masked.store.{vname}.p0")
            last = builder.sub(rows, ir.Constant(i64, 1))
            aptr, cptr = [], []
            for i in range(mr):
                ci = ir.Constant(i64, i)
                idx = builder.select(builder.icmp_signed("<", ci, rows), ci, last)
                aptr.append(builder.gep(a, [builder.mul(idx, lda)]))
                cptr.append(builder.gep(c, [builder.mul(idx, ldc)]))
            vi64 = ir.VectorType(i64, lanes)
            splat = builder.insert_element(ir.Constant(vi64, None), ncols, ir.Constant(i32, 0))
            splat = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))
            masks = [builder.icmp_signed("<", ir.Constant(vi64, [v * lanes + j for j in range(lanes)]), splat)
                     for v in range(nvec)]
            zero = ir.Constant(vty, [0.0] * lanes)
            cv = [[builder.bitcast(builder.gep(cptr[i], [ir.Constant(i64, v * lanes)]), vty.as_pointer())
                   for v in range(nvec)] for i in range(mr)]
            init = [[builder.select(beta, builder.call(mload, [cv[i][v], ir.Constant(i32, 4), masks[v], zero]), zero)
                     for v in range(nvec)] for i in range(mr)]
            entry = builder.block
            loop = builder.append_basic_block("mk.loop"); done = builder.append_basic_block("mk.done")
            builder.cbranch(builder.icmp_signed(">", k, ir.Constant(i64, 0)), loop, done)
            builder.position_at_end(loop)
            kk = builder.phi(i64); kk.add_incoming(ir.Constant(i64, 0), entry)
            accs = [[None] * nvec for _ in range(mr)]
            for i in range(mr):
                for v in range(nvec):
                    p = builder.phi(vty); p.add_incoming(init[i][v], entry); accs[i][v] = p
            brow = builder.gep(b, [builder.mul(kk, ir.Constant(i64, nr))])
            bv = [builder.load(builder.bitcast(builder.gep(brow, [ir.Constant(i64, v * lanes)]), vty.as_pointer()), align=4)
                  for v in range(nvec)]
            new = []
            for i in range(mr):
                s = builder.load(builder.gep(a, [builder.add(builder.mul(kk, ir.Constant(i64, mr)), ir.Constant(i64, i))]))
                sv = builder.insert_element(ir.Constant(vty, None), s, ir.Constant(i32, 0))
                sv = builder.shuffle_vector(sv, sv, ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))
                new.append([builder.call(fma, [sv, bv[v], accs[i][v]]) for v in range(nvec)])
            nk = builder.add(kk, ir.Constant(i64, 1))
            kk.add_incoming(nk, loop)
            for i in range(mr):
                for v in range(nvec):
                    accs[i][v].add_incoming(new[i][v], loop)
            builder.cbranch(builder.icmp_signed("<", nk, k), loop, done)
            builder.position_at_end(done)
            fin = []
            for i in range(mr):
                for v in range(nvec):
                    r = builder.phi(vty); r.add_incoming(init[i][v], entry); r.add_incoming(new[i][v], loop); fin.append(r)
            for i in range(mr):
                for v in range(nvec):
                    builder.call(mstore, [fin[i * nvec + v], cv[i][v], ir.Constant(i32, 4), masks[v]])
            return context.get_dummy_value()
        return sig, codegen
    return micro

MR, LANES, NVEC = [int(v) for v in os.environ.get("MK", "8,16,3").split(",")]  # rows, lanes, vectors
NR = LANES * NVEC
micro = make_micro(types.float32, LANES, NVEC, MR)

@intrinsic
def _ptr(typingctx, arr, off):
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.gep(data, [args[1]])
    return types.CPointer(arr.dtype)(arr, off), codegen

BBLOCK = int(os.environ.get("BBLOCK", str(1 << 16)))  # floats of packed B per k-block

@njit(nogil=True, fastmath=True)
def gemm(a, b, c, bp, ap):
    m, k = a.shape; n = b.shape[1]
    panels = -(-n // NR)
    kcb = max(16, min(k, BBLOCK // (panels * NR)))
    for k0 in range(0, k, kcb):
        kc = min(kcb, k - k0)
        for p in range(panels):
            base = p * kc * NR
            n0 = p * NR
            nc = min(NR, n - n0)
            for kk in range(kc):
                brow = b[k0 + kk]
                dst = base + kk * NR
                for jj in range(nc):
                    bp[dst + jj] = brow[n0 + jj]
                for jj in range(nc, NR):
                    bp[dst + jj] = 0
        for i0 in range(0, m, MR):
            rows = min(MR, m - i0)
            for i in range(MR):
                row = a[i0 + min(i, rows - 1)]
                for kk in range(kc):
                    ap[kk * MR + i] = row[k0 + kk]
            for p in range(panels):
                n0 = p * NR
                micro(_ptr(ap, 0), 1, rows, _ptr(bp, p * kc * NR), kc, _ptr(c, i0 * n + n0), n,
                      min(NR, n - n0), k0 > 0)


def _bench(f, n=30):
    f()
    f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


@njit(nogil=True)
def _spin(ap, bp, tile, kc, reps):
    for _ in range(reps):
        micro(_ptr(ap, 0), 1, MR, _ptr(bp, 0), kc, _ptr(tile, 0), NR, NR, False)


def main():
    from npxception import blas
    from npxception.fast.fused import _gemm

    bp = np.zeros(BBLOCK + 4096 * NR, np.float32)
    ap = np.zeros(4096 * MR, np.float32)
    rng = np.random.default_rng(0)
    kc = 128
    a_l1, b_l1, tile = rng.random(kc * MR, np.float32), rng.random(kc * NR, np.float32), np.empty(MR * NR, np.float32)
    reps = 20000
    t = _bench(lambda: _spin(a_l1, b_l1, tile, kc, reps), 5)
    print(f"microkernel {MR}x{NR}, operands in L1: {2 * MR * NR * kc * reps / t / 1e9:.0f} GFLOP/s (one core)")
    with blas.single_threaded():
        for m, k, n in [(180, 728, 728), (1911, 128, 128), (1911, 64, 128), (962, 256, 256), (481, 256, 728),
                        (50, 1536, 2048), (2000, 288, 64)]:
            a, b = rng.random((m, k), np.float32), rng.random((k, n), np.float32)
            c = np.empty((m, n), np.float32)
            gemm(a, b, c, bp, ap)
            assert np.allclose(c, a @ b, rtol=1e-4), "the experiment's GEMM is wrong"
            flop = 2 * m * k * n / 1e9
            ours, theirs = _bench(lambda: gemm(a, b, c, bp, ap)), _bench(lambda: _gemm(a, b, c))
            print(f"{m}x{k}x{n}: ours {flop / ours:.0f} GFLOP/s, OpenBLAS (one thread) {flop / theirs:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
