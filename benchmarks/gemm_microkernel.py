"""An experiment kept for its numbers: a GEMM with a register-blocked AVX-512 microkernel, against OpenBLAS.

    python benchmarks/gemm_microkernel.py        # MK=rows,lanes,vectors BBLOCK=floats to vary the blocking

The microkernel, since 2026-11-29 evening the fast path's own (npxception/fast/direct.py,
built here at the tile shape MK asks for), is written in LLVM IR through a Numba ``@intrinsic``: MR rows
of A broadcast against NVEC vectors of a packed B panel, MR * NVEC accumulators
held in registers for the whole K loop (the loop compiles to 4 loads, 6
broadcasts and 24 FMAs per step for 6 x 64). The driver packs B in
(k-block x 48)-column panels and A in (k, MR) micro-panels, and updates C in
place with masked loads and stores at the right edge.

What it measured (docs/performance.md, "A GEMM of our own"): the microkernel
alone, its operands in L1, reaches 145 GFLOP/s on one core, above OpenBLAS'
single-threaded sgemm on Xception's shapes; the whole GEMM, with packing and
blocking, reached 60-70% of OpenBLAS. This GEMM driver is not used by the fast path.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from numba import njit

from npxception.fast import direct


MR, LANES, NVEC = [int(v) for v in os.environ.get("MK", "8,16,3").split(",")]  # rows, lanes, vectors
assert LANES == direct.LANES, "the microkernel is float32 on 16-lane (AVX-512) vectors"
NR = LANES * NVEC
_micro = direct._make_micro(MR, NVEC)  # the fast path's microkernel (npxception/fast/direct.py), any tile shape
_at = direct._at


_OFFS = np.arange(4096, dtype=np.int64) * MR  # A packed in (k, MR) micro-panels: row i of step k at k*MR + i
_ONES, _ZEROS = np.ones(NR, np.float32), np.zeros(NR, np.float32)  # no BN: scale 1, shift 0


@njit(nogil=True)
def micro(a, lda, rows, b, k, c, ldc, ncols, beta):
    """C[:rows, :ncols] = A @ B, or += when ``beta``, for packed A (lda 1) and a packed B panel."""
    _micro(a, lda, rows, _at(_OFFS, 0), k, b, NR, c, ldc, ncols, _at(_ONES, 0), _at(_ZEROS, 0), False, beta)


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
                micro(_at(ap, 0), 1, rows, _at(bp, p * kc * NR), kc, _at(c, i0 * n + n0), n,
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
        micro(_at(ap, 0), 1, MR, _at(bp, 0), kc, _at(tile, 0), NR, NR, False)


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
