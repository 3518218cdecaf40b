"""The catalogue of named causes compare tests at every source of error.

A *source* is a layer whose output differs from ours even though it ran on the
same inputs (its local error is over tolerance). Each hypothesis below is one
way a port is known to differ: it takes the :class:`Case` (their inputs, their
output, our layer) and returns a :class:`Candidate`, the output *their* layer
would produce under that cause, with the fitted parameter; or None when it does
not apply. :func:`diagnose` keeps the candidate that reproduces their output
within tolerance with the smallest residual. A port that matches no hypothesis
is reported as "unexplained", never forced into one.

Layer-specific hypotheses are tried first; at a BN whose convolution their side
does not expose (folded into it), that convolution's, through our BN (``fused``);
the generic ones (an extra ReLU, a different input, a skipped layer) only when no
specific one explains the layer.
docs/discrepancies.md shows each with the signature compare reports.

One module per family, one small documented function per hypothesis:
``batchnorm``, ``fused`` (a convolution seen through the BN folded into it),
``windows`` (pooling and convolution), ``their_weights`` (their graph's own
weights and pads), ``wiring`` (activations, inputs, skipped layers, dumps
overwritten in place), ``head`` (the classifier), ``inputs``
(channel order, preprocessing, layout) and ``rounding`` (weights stored in
float16 or bfloat16).
"""

from __future__ import annotations

from itertools import chain
from typing import Callable

import numpy as np

from ..metrics import errors
from .batchnorm import bn_batch_statistics, bn_epsilon, bn_gamma_beta_swapped, bn_missing, bn_shift_missing
from .case import Candidate, Case, Diagnosis
from .fused import fused_weights_rounded, through_bn
from .head import (dense_classes_permuted, dense_kernel_transposed, dense_missing_bias, dense_rows_follow_flatten,
                   extra_class, flatten_order, global_max_for_avg, output_logits)
from .inputs import (CAFFE_MEAN_BGR, INPUT_TRANSFORMS, TORCH_MEAN, TORCH_STD, input_affine, input_candidates,
                     resize_candidates)
from .rounding import bn_epsilon_weights_rounded, weights_rounded
from .their_weights import their_weights
from .windows import (conv_extra_bias, conv_kernel_hw_swapped, conv_kernel_read_as_oihw, conv_same_for_valid,
                      conv_symmetric_padding, depthwise_channel_order, depthwise_reshaped_from_torch, pool_ceil_mode,
                      pool_stride_off_by_one, pool_symmetric_padding, pool_symmetric_zero_padding,
                      pool_window_off_by_one, pool_zero_padding)
from .wiring import (add_input_overwritten, extra_relu_after, extra_relu_on_input, overwritten_in_place, relu6,
                     relu_missing, skipped_behind_gap, skipped_layer, wrong_input)

# ---- the catalogue ------------------------------------------------------------------------------

CATALOGUE: dict[str, list[Callable]] = {
    "bn": [bn_epsilon, bn_batch_statistics, bn_missing, bn_gamma_beta_swapped, bn_shift_missing, weights_rounded,
           fused_weights_rounded, bn_epsilon_weights_rounded],
    "batch_norm": [bn_epsilon, bn_missing, bn_gamma_beta_swapped, weights_rounded, bn_epsilon_weights_rounded],
    "maxpool": [pool_symmetric_padding, pool_zero_padding, pool_symmetric_zero_padding, pool_ceil_mode,
                pool_window_off_by_one, pool_stride_off_by_one],
    "conv": [conv_same_for_valid, conv_symmetric_padding, conv_kernel_hw_swapped, conv_kernel_read_as_oihw,
             conv_extra_bias, weights_rounded],
    "sepconv": [conv_symmetric_padding, conv_kernel_hw_swapped, conv_kernel_read_as_oihw,
                depthwise_channel_order, depthwise_reshaped_from_torch, conv_extra_bias, weights_rounded],
    "relu": [relu6, relu_missing, fused_weights_rounded],
    "add": [extra_relu_on_input],
    "flatten": [flatten_order],
    "dense": [flatten_order, dense_rows_follow_flatten, output_logits, dense_classes_permuted, extra_class,
              dense_missing_bias, dense_kernel_transposed, weights_rounded],
    "activation": [output_logits, dense_classes_permuted, extra_class],
    "global_avg_pool": [global_max_for_avg],
}
GENERIC = [skipped_layer, skipped_behind_gap, extra_relu_after, wrong_input]
FIRST = [overwritten_in_place, add_input_overwritten]  # evidence about the dump itself, before any cause in the port


def _residual(y, theirs):
    # Inf or NaN on either side proves nothing: Inf is not above a tolerance of Inf
    if y.shape != theirs.shape or not np.isfinite(y).all() or not np.isfinite(theirs).all():
        return None
    max_abs, _, _, scale = errors(y, theirs)
    return max_abs, scale


def best_of(candidates, theirs, rtol, atol) -> Diagnosis | None:
    """The candidate that reproduces ``theirs`` within tolerance with the smallest residual."""
    best = None
    for c in candidates:
        if c is None:
            continue
        r = _residual(c.output, theirs)
        if r is None or r[0] > atol + rtol * r[1]:
            continue
        rel = r[0] / r[1] if r[1] > 0 else 0.0
        if best is None or rel < best.residual:
            best = Diagnosis(c.cause, c.explanation, c.parameter, rel)
        if rel <= 0.01 * rtol:
            # round-off level: nothing can fit better, and the remaining candidates (each a
            # pass over the layer) would double compare's time on a port with 40 sources
            break
    return best


def _tried(hypothesis, case):
    """A hypothesis' candidate, or None when their tensors do not fit it (a shape our ops refuse)."""
    try:
        return hypothesis(case)
    except ValueError:
        return None


def diagnose(case: Case, rtol: float, atol: float) -> Diagnosis | None:
    """Test the catalogue on one source layer; the best explanation, or None."""
    if case.x_ours is not None:
        def run(xt):
            return case.model.run_layer(case.name, [xt])

        found = best_of(chain(input_candidates(case.x_ours, run),
                              resize_candidates(case.images, case.x_input, case.model, run)),
                        case.theirs, rtol, atol)
        if found:
            return found
        # no listed pipeline: a per-channel affine map, channel order and flip fitted (the first layer is a
        # convolution without bias, linear in its input: block1_conv1)
        found = best_of([_tried(lambda c: input_affine(c.x_ours, c.theirs, run, tf_mode=not c.model.input_stage), case)],
                        case.theirs, rtol, atol)
        if found:
            return found
    found = best_of((h(case) for h in FIRST), case.theirs, rtol, atol)
    if found:
        return found
    found = best_of((_tried(h, case) for h in CATALOGUE.get(case.kind, [])), case.theirs, rtol, atol)
    if found:
        return found
    # a BN whose convolution their side does not expose (folded into it): that convolution's causes
    found = best_of(through_bn(case, CATALOGUE), case.theirs, rtol, atol)
    if found:
        return found
    # their own weights and pads, read from their graph, when those reproduce their output: after the named
    # causes (a kernel with height and width swapped is said so, not as "channels differ")
    found = best_of([_tried(their_weights, case)], case.theirs, rtol, atol)
    if found:
        return found
    return best_of((_tried(h, case) for h in GENERIC), case.theirs, rtol, atol)
