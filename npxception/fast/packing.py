"""The microkernel's weight layout: a (K, C_out) kernel in NR-wide panels, and back, bit for bit.

The microkernel (npxception/fast/direct.py) reads NR = 64 (or 32) output
channels of one row of weights with four (two) aligned vector loads, so each
kernel is packed once into panels of NR channels, zero past C_out. A model
holds a kernel its plan packed in this form only (:class:`PackedKernel`,
npxception/params.py); whatever reads the weights gets them unpacked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALIGN = 64  # bytes: a zmm register, and a cache line


def panel_width(c_out: int) -> int:
    """NR for ``c_out`` channels: 32 when they fit one half-width panel, else 64."""
    return 32 if c_out <= 32 else 64


def pack_kernel(kernel2d):
    """(K, C_out) -> (P, K, NR) float32 panels of NR output channels, zero past C_out; 64-byte aligned."""
    k, c_out = kernel2d.shape
    nr = panel_width(c_out)
    p = -(-c_out // nr)
    packed = aligned(p * k * nr).reshape(p, k, nr)
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

    panels: np.ndarray  # (P, K, NR) float32, zero past C_out, 64-byte aligned
    shape: tuple  # the Keras kernel's: (KH, KW, C_in, C_out)

    @classmethod
    def of(cls, kernel):
        return cls(pack_kernel(kernel.reshape(-1, kernel.shape[-1])), kernel.shape)

    @property
    def dtype(self):
        return self.panels.dtype

    def unpack(self):
        return unpack_panels(self.panels, self.shape[-1]).reshape(self.shape)


def aligned(size):
    """A float32 array of ``size`` zeros whose data starts on an ALIGN-byte boundary."""
    raw = np.zeros(size + ALIGN // 4, np.float32)
    start = (-raw.ctypes.data % ALIGN) // 4  # floats to the next boundary
    return raw[start:start + size]
