"""The fast whole-network path: BN folded, epilogues fused, buffers reused.

``model(x)`` runs this path; ``model.forward(x, capture=...)`` runs the plain
op-by-op path, which keeps every named activation. Both are tested against
Keras at the same tolerances (tests/test_model_keras.py).

* plan.py: the plan, compiled from the architecture table by matching layer
  sequences into fused steps (it holds no description of the network);
* run.py: runs the steps, with BN folded into the GEMM epilogues (folding.py) and a
  small arena of reused buffers;
* fused.py: one parallel region per layer, OpenBLAS' GEMM called from each thread;
* direct.py: the AVX-512 microkernel (direct convolutions, pointwise GEMMs), its
  twins and its once-a-process probe; packing.py: the weight layout it reads;
* kernels.py: the Numba kernels, each with its NumPy twin; symbols.py: the two
  compiled once a dtype and called by name (the depthwise row, pointwise.py's GEMM);
* threads.py: the hand-off that runs a kernel's per-thread shares at once.

Why each fusion, and what it measured: docs/performance.md.
"""

from __future__ import annotations

from .fused import conv_fused, conv_fused_reference, sep_conv_fused, sep_conv_fused_reference
from .kernels import (affine_act, affine_act_reference, affine_add_residual, affine_add_residual_reference,
                      depthwise3x3_same, depthwise3x3_same_reference, depthwise3x3_same_rows, im2col,
                      im2col_reference, maxpool_add, maxpool_add_reference)
from .folding import fold_bn
from .plan import ConvBN, Head, PoolAdd, SepConvBN, Unsupported, compile_plan
from .run import FastPlan, fast_forward

__all__ = [
    "compile_plan", "ConvBN", "SepConvBN", "PoolAdd", "Head", "Unsupported", "FastPlan", "fast_forward",
    "fold_bn", "depthwise3x3_same", "depthwise3x3_same_rows", "depthwise3x3_same_reference", "affine_act",
    "affine_act_reference", "affine_add_residual", "affine_add_residual_reference", "maxpool_add", "maxpool_add_reference", "im2col",
    "im2col_reference", "sep_conv_fused", "sep_conv_fused_reference", "conv_fused", "conv_fused_reference",
]
