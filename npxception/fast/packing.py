"""The microkernel's weight layout: a (K, C_out) kernel in NR-wide panels, and back, bit for bit.

The microkernel (npxception/fast/micro.py) reads NR output channels of one
row of weights with four (or two) aligned vector loads: NR = 64 (32) float32
or 32 (16) float64 channels. So each
kernel is packed once into panels of NR channels, zero past C_out. A model
holds a kernel its plan packed in this form only (:class:`PackedKernel`,
npxception/params.py); whatever reads the weights gets them unpacked.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

import numpy as np

ALIGN = 64  # bytes: a zmm register, and a cache line
HUGE_PAGE = 2 << 20  # bytes: an x86-64 transparent huge page
# Whether a plan's packed kernels go into one Slab (2 MB pages where the OS offers them); False: one allocation
# each, as before (benchmarks' A/B)
SLAB = True


def panel_width(c_out: int, dtype=np.float32) -> int:
    """NR for ``c_out`` channels: two vectors (32 float32, 16 float64) when they fit them, else four."""
    lanes = ALIGN // np.dtype(dtype).itemsize
    return 2 * lanes if c_out <= 2 * lanes else 4 * lanes


def packed_size(k: int, c_out: int, dtype=np.float32) -> int:
    """The elements :func:`pack_kernel` of a (K, C_out) kernel holds: P * K * NR."""
    nr = panel_width(c_out, dtype)
    return -(-c_out // nr) * k * nr


def pack_kernel(kernel2d, slab=None):
    """(K, C_out) -> (P, K, NR) panels of NR output channels in the kernel's dtype, zero past C_out; 64-byte
    aligned; in ``slab`` (a :class:`Slab`) when given, else in an allocation of its own."""
    k, c_out = kernel2d.shape
    nr = panel_width(c_out, kernel2d.dtype)
    p = -(-c_out // nr)
    size = p * k * nr
    packed = (aligned(size, kernel2d.dtype) if slab is None else slab.take(size, kernel2d.dtype)).reshape(p, k, nr)
    for q in range(p):
        cols = kernel2d[:, q * nr:(q + 1) * nr]
        packed[q, :, :cols.shape[1]] = cols
    return packed


def unpack_panels(panels, c_out):
    """(P, K, NR) panels -> the (K, C_out) kernel :func:`pack_kernel` packed: a permutation, bit for bit."""
    p, k, nr = panels.shape
    return np.ascontiguousarray(panels.transpose(1, 0, 2).reshape(k, p * nr)[:, :c_out])


@dataclass(frozen=True, eq=False)
class PackedKernel:
    """A Keras kernel held in the microkernel's layout only: how a model holds a kernel its plan runs here.

    ``panels`` are :func:`pack_kernel` of the kernel as a (KH*KW*C_in, C_out)
    matrix; ``unpack()`` gives the Keras array back, bit for bit, for whatever
    reads the weights (npxception/params.py: the reference path, capture, save).
    """

    panels: np.ndarray  # (P, K, NR) float32 or float64, zero past C_out, 64-byte aligned
    shape: tuple  # the Keras kernel's: (KH, KW, C_in, C_out)

    @classmethod
    def of(cls, kernel, slab=None):
        return cls(pack_kernel(kernel.reshape(-1, kernel.shape[-1]), slab), kernel.shape)

    @property
    def dtype(self):
        return self.panels.dtype

    def unpack(self):
        return unpack_panels(self.panels, self.shape[-1]).reshape(self.shape)


def aligned(size, dtype=np.float32):
    """An array of ``size`` zeros (float32 or float64) whose data starts on an ALIGN-byte boundary."""
    item = np.dtype(dtype).itemsize
    raw = np.zeros(size + ALIGN // item, dtype)
    start = (-raw.ctypes.data % ALIGN) // item  # elements to the next boundary
    return raw[start:start + size]


def huge_block(nbytes: int) -> np.ndarray:
    """``nbytes`` zero bytes starting on a 2 MB boundary, its whole 2 MB pages asked for as huge pages
    (``madvise(MADV_HUGEPAGE)``: Linux's transparent huge pages in ``madvise`` mode), the tail past the last
    whole one in 4 KB pages, so that nothing unused becomes resident: a private anonymous mapping 2 MB longer
    than asked, so that it can start on a boundary. Elsewhere (no ``MADV_HUGEPAGE``, or a mapping refused)
    an ordinary ALIGN-aligned array. The array holds the mapping."""
    if nbytes > 0 and hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap, "MAP_ANONYMOUS"):
        try:
            block = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            raw = np.frombuffer(block, np.uint8)
            start = -raw.ctypes.data % HUGE_PAGE
            if nbytes >= HUGE_PAGE:
                block.madvise(mmap.MADV_HUGEPAGE, start, nbytes // HUGE_PAGE * HUGE_PAGE)
        except (OSError, ValueError):  # refused (a memory limit, a kernel without THP): ordinary memory
            pass
        else:
            return raw[start:start + nbytes]
    return aligned(nbytes, np.uint8)


class Slab:
    """One block of zeroed memory that many packed kernels are cut from, in 2 MB pages where the OS offers them.

    A forward pass streams every packed kernel (85 MB for Xception) through the
    caches once. In 4 KB pages that is ~21 000 TLB misses a pass, each a
    two-level page walk on a VM; in one block asked for with
    ``madvise(MADV_HUGEPAGE)`` (Linux transparent huge pages in ``madvise``
    mode, this host's setting) it is ~43 pages: a batch-1 pass ~2% faster in
    three A/Bs of four (medians 0.969-0.979; 1.037 in one under heavy interference)
    (docs/performance.md, "Issue 15, 2026-11-30 19:35-21:05 UTC"). Each
    kernel alone, at 2.2 MB, is under the 4 MB from which NumPy asks for huge
    pages itself, and rounding each up to whole huge pages would cost memory.
    The block is :func:`huge_block`'s (zero-filled, as pack_kernel needs past C_out).
    """

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.offset = 0
        self.raw = huge_block(nbytes)

    @staticmethod
    def room(size, dtype) -> int:
        """The bytes :meth:`take` uses for ``size`` elements of ``dtype`` (rounded up to ALIGN)."""
        return -(-size * np.dtype(dtype).itemsize // ALIGN) * ALIGN

    def take(self, size, dtype):
        """The next ``size`` zero elements of ``dtype``, ALIGN-byte aligned."""
        item = np.dtype(dtype).itemsize
        nbytes = size * item
        if self.offset + nbytes > self.raw.size:
            raise ValueError(f"slab of {self.nbytes} bytes: no room for {nbytes} more at {self.offset}")
        out = self.raw[self.offset:self.offset + nbytes].view(dtype)
        self.offset += self.room(size, dtype)
        return out
