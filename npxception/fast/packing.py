"""The microkernel's weight layout: a (K, C_out) kernel in NR-wide panels, and back, bit for bit.

The microkernel (npxception/fast/micro.py) reads NR output channels of one
row of weights with four (or two) aligned vector loads: NR = 64 (32) float32
or 32 (16) float64 channels. So each
kernel is packed once into panels of NR channels, zero past C_out. A model
holds a kernel its plan packed in this form only (:class:`PackedKernel`,
npxception/params.py); whatever reads the weights gets them unpacked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALIGN = 64  # bytes: a zmm register, and a cache line


def panel_width(c_out: int, dtype=np.float32) -> int:
    """NR for ``c_out`` channels: two vectors (32 float32, 16 float64) when they fit them, else four."""
    lanes = ALIGN // np.dtype(dtype).itemsize
    return 2 * lanes if c_out <= 2 * lanes else 4 * lanes


def pack_kernel(kernel2d):
    """(K, C_out) -> (P, K, NR) panels of NR output channels in the kernel's dtype, zero past C_out; 64-byte
    aligned."""
    k, c_out = kernel2d.shape
    nr = panel_width(c_out, kernel2d.dtype)
    p = -(-c_out // nr)
    packed = aligned(p * k * nr, kernel2d.dtype).reshape(p, k, nr)
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
    def of(cls, kernel):
        return cls(pack_kernel(kernel.reshape(-1, kernel.shape[-1])), kernel.shape)

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
