"""A BN row whose convolution their side does not expose: the convolution's causes, seen through our BN.

A BN-folded export (``torch.onnx.export`` in eval mode, npxception.compare.folded_bn) has no tensor
between a convolution and its BN, so compare fills the convolution by running ours on their previous
layer, and the BN row's local error covers the fused pair. A fault in the convolution (a kernel with
height and width swapped, PyTorch ``padding=1`` on a VALID stem) then shows at the BN row, where the BN
catalogue cannot explain it. Each convolution hypothesis is run on the gap's own input, and its output
goes through our BN, with Keras' epsilon or the one fitted from their output (a fold with PyTorch's
1e-5 carries both faults at once)::

    candidate = BN_eps(conv_cause(x_gap))
"""

from __future__ import annotations

import numpy as np

from ... import ops
from ...config import CONFIG
from .batchnorm import bn_epsilon
from .case import Candidate, Case


def filled_convolution(case: Case):
    """``(conv layer, its input)`` when this BN's input is a convolution compare filled with ours
    (their side does not expose it), else None."""
    if case.kind != "bn" or not case.skipped or 0 not in case.skipped:
        return None
    gap, gap_input = case.skipped[0]
    spec = next((layer for layer in case.model.layers if layer.name == gap), None)
    if spec is None or spec.kind not in ("conv", "sepconv") or gap_input is None:
        return None
    return spec, gap_input


def _their_convolution(case: Case, y):
    """The convolution output our BN maps to their BN output ``y`` (per channel
    ``x = (y - beta) * sqrt(var + eps) / gamma + mean``; 0 where gamma is 0): what a convolution
    hypothesis that fits a value (an extra bias) fits to."""
    p = case.params
    sd = np.sqrt(p["moving_variance"].astype(np.float64) + CONFIG.bn_epsilon)
    g = p["gamma"].astype(np.float64)
    scale = np.divide(sd, g, out=np.zeros_like(g), where=g != 0)
    return ((y - p["beta"]) * scale + p["moving_mean"]).astype(y.dtype)


def through_bn(case: Case, catalogue: dict):
    """Yield each hypothesis of ``catalogue`` (``{kind: hypotheses}``) for the convolution this BN
    row's input was filled with, composed with our BN: as given, then with the epsilon fitted from
    their output when that is not Keras'."""
    found = filled_convolution(case)
    if found is None:
        return
    spec, x = found
    hypotheses = catalogue.get(spec.kind, [])
    local = case.model.run_layer(spec.name, [x])
    conv_case = Case(case.model, spec.name, spec.kind, spec, spec.inputs, [x], _their_convolution(case, case.theirs),
                     local)
    p = case.params
    for hypothesis in hypotheses:
        try:
            c = hypothesis(conv_case)
        except ValueError:  # their tensors do not fit it (a shape our ops refuse)
            c = None
        if c is None:
            continue
        where = f"in {spec.name}, the convolution their BN is folded into (their side does not expose it)"
        bn = ops.batch_norm(c.output, p["gamma"], p["beta"], p["moving_mean"], p["moving_variance"],
                            epsilon=CONFIG.bn_epsilon, impl="reference")
        yield Candidate(c.cause, f"{c.explanation} {where}", bn.astype(case.local.dtype), c.parameter)
        if c.output.shape == case.theirs.shape:
            eps = bn_epsilon(Case(case.model, case.name, case.kind, case.spec, case.input_names, [c.output],
                                  case.theirs, bn))
            if eps is not None:
                yield Candidate(c.cause, f"{c.explanation} {where}, and BN {eps.explanation}",
                                eps.output.astype(case.local.dtype), c.parameter)
