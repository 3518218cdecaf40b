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
from .case import Candidate, Case, closest
from .rounding import rounded
from .windows import _conv


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


def _fused_pair(case: Case):
    """``(BN layer, convolution layer, the convolution's input)`` when this layer's output is a BN's
    folded into the convolution before it, neither exposed by their side: this BN row, or the ReLU
    that reads such a BN (TFLite fuses the activation too, and its dump shows only that)."""
    found = filled_convolution(case)
    if found is not None:
        return case.spec, found[0], found[1]
    if case.kind != "relu" or not case.skipped or 0 not in case.skipped or not case.gaps:
        return None
    bn = next((layer for layer in case.model.layers if layer.name == case.skipped[0][0]), None)
    if bn is None or bn.kind != "bn" or bn.inputs[0] not in case.gaps:
        return None
    conv = next(layer for layer in case.model.layers if layer.name == bn.inputs[0])
    x = case.gaps[conv.name]
    return (bn, conv, x) if conv.kind in ("conv", "sepconv") and x is not None else None


def fused_weights_rounded(case: Case) -> Candidate | None:
    """The fused convolution's weights stored in float16 or bfloat16 (TFLite's float16 quantization,
    ``supported_types=[tf.float16]``, which folds BN first), the layer computed in float32::

        y = conv(x, round(W * s)) + round(beta - moving_mean * s),  s = gamma / sqrt(var + eps)

    and its ReLU when the activation is fused too. Rounding the unfused weights (:func:`weights_rounded`)
    is another model: the fused bias alone moves by up to 2^-11 of itself."""
    found = _fused_pair(case)
    if found is None:
        return None
    bn, conv, x = found
    w = case.model._params  # read by key: only these are unpacked (npxception/params.py)
    g, beta, mean, var = (w[f"{bn.name}/{k}"].astype(np.float64)
                          for k in ("gamma", "beta", "moving_mean", "moving_variance"))
    s = g / np.sqrt(var + CONFIG.bn_epsilon)
    conv_case = Case(case.model, conv.name, conv.kind, conv, conv.inputs, [x], case.theirs, case.local)
    options = []
    for to in ("float16", "bfloat16"):
        if conv.kind == "conv":
            y = _conv(conv_case, kernel=rounded(w[f"{conv.name}/kernel"] * s, to).astype(x.dtype))
        else:
            y = _conv(conv_case, kernel=rounded(w[f"{conv.name}/pointwise_kernel"] * s, to).astype(x.dtype),
                      depthwise=rounded(w[f"{conv.name}/depthwise_kernel"], to))
        y = y + rounded(beta - mean * s, to).astype(y.dtype)
        options.append((to, np.maximum(y, 0) if case.kind == "relu" else y))
    found = closest(options, case.theirs)
    if found is None:
        return None
    to, y = found
    return Candidate("fused_weights_rounded", f"their fused weights ({conv.name}'s kernel times {bn.name}'s scale, "
                     f"and its shift as the bias) stored in {to}, as TFLite's {to} quantization leaves them "
                     "(computed in float32)", y.astype(case.local.dtype), to)


def _their_convolution(case: Case, y):
    """The convolution output our BN maps to their BN output ``y`` (per channel
    ``x = (y - beta) * sqrt(var + eps) / gamma + mean``; 0 where gamma is 0): what a convolution
    hypothesis that fits a value (an extra bias) fits to."""
    p = case.params
    sd = np.sqrt(p["moving_variance"].astype(np.float64) + CONFIG.bn_epsilon)
    g = p["gamma"].astype(np.float64)
    scale = np.divide(sd, g, out=np.zeros_like(g), where=g != 0)
    return ((y - p["beta"]) * scale + p["moving_mean"]).astype(y.dtype)


def _scale(p):
    return p["gamma"].astype(np.float64) / np.sqrt(p["moving_variance"].astype(np.float64) + CONFIG.bn_epsilon)


def _half_ulp(p):
    """The most float16 storage moves the fused bias ``beta - moving_mean * s`` by: half its unit in the
    last place, 2^-11 of its largest value (float16 has 10 fraction bits)."""
    return float(np.abs(p["beta"] - p["moving_mean"] * _scale(p)).max()) * 2.0 ** -11


# An extra bias in a convolution whose BN is folded into it is named only when its offset after the BN
# (max |b| * max |s|) passes 16 times float16's rounding of the fused bias: TFLite's float16 model of
# a 75x75 Xception fitted offsets of 1.8 times that rounding (8.7e-4 at block9_sepconv3, against
# 4.8e-4), where a bias a port really carries is of the order of its activations (1e-2 and up).
_ABOVE_HALF = 16


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
        if c is None or (c.cause == "extra_bias" and c.parameter * np.abs(_scale(p)).max() <= _ABOVE_HALF * _half_ulp(p)):
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
