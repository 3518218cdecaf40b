"""BatchNorm folded into the convolution before it, as ``torch.onnx.export`` leaves an eval-mode model.

An exporter that folds BN leaves no BatchNormalization node: per output channel ``o``,

    s[o]        = gamma[o] / sqrt(moving_variance[o] + eps)
    W_fused[o]  = W[o] * s[o]
    b_fused[o]  = beta[o] - moving_mean[o] * s[o]

and the convolution's tensor is the BN's output. compare therefore compares it as the BN's
(:func:`as_bn`): our convolution fills the gap from their previous layer, and the BN row's local
error is what their fused BN does differently, so the hypotheses fit its epsilon as when BN is its
own node. The fused weights are a second, independent witness (:func:`epsilon_from_weights`): with
our ``W``, ``gamma`` and ``moving_variance``, ``s = W_fused / W`` gives ``eps = (gamma / s)^2 - var``
per channel, and ``b_fused`` tells whether gamma and beta were swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import CONFIG
from .layer_names_text import compact_names


def is_folded(graph) -> bool:
    """No BatchNormalization node: BN (if the port has one) is folded into the convolutions."""
    return not any(node.op_type == "BatchNormalization" for node in graph.node)


def as_bn(model, wanted: dict) -> dict:
    """``{our name: their tensor}`` with each convolution's tensor moved to the BN that reads it."""
    bn_of = {layer.inputs[0]: layer.name for layer in model.layers if layer.kind == "bn"}
    return {bn_of.get(ours, ours): tensor for ours, tensor in wanted.items()
            if not (ours in bn_of and bn_of[ours] in wanted)}


def _ours_oihw(model, conv):
    """Our kernel of ``conv`` (its pointwise half for a separable one) in PyTorch's OIHW."""
    w = model._params  # read by key: only this kernel is unpacked (npxception/params.py)
    k = w.get(f"{conv}/kernel", w.get(f"{conv}/pointwise_kernel"))
    return None if k is None else np.asarray(k, np.float64).transpose(3, 2, 0, 1)


@dataclass(frozen=True)
class Fused:
    """What one convolution's weights say of the BN after it, against ours."""

    conv: str
    scaled: bool  # their kernel is ours times one number per output channel
    unscaled: bool  # ... and that number is 1 in every channel (nothing folded)
    bias: bool  # the convolution has a bias input
    eps: float | None = None  # the BN epsilon the scale gives; None when no epsilon > 0 does
    swapped: bool = False  # gamma and beta swapped, told from the fused bias


def _fit(model, bn, conv, fused_w, fused_b) -> Fused | None:
    """What convolution ``conv``'s weights say of BN ``bn``; None when they cannot say (not our layer's
    shape, or float16)."""
    ours = _ours_oihw(model, conv)
    # float16 weights fix s to ~5e-4 only, eps to ~1e-3 of the variance: no witness of a 1e-5 epsilon
    if ours is None or fused_w.shape != ours.shape or fused_w.dtype.itemsize < 4:
        return None
    w = {v: np.asarray(model._params[f"{bn}/{v}"], np.float64) for v in ("gamma", "beta", "moving_mean",
                                                                         "moving_variance")}
    o = ours.reshape(len(ours), -1)
    f = fused_w.reshape(len(ours), -1).astype(np.float64)
    den = (o * o).sum(1)
    s = np.divide((f * o).sum(1), den, out=np.zeros_like(den), where=den > 0)
    bias = fused_b is not None
    # their kernel is ours times one number per channel, to float32's precision, or it is another kernel
    if np.abs(f - s[:, None] * o).max() > 1e-4 * np.abs(f).max() or not (s != 0).all():
        return Fused(conv, False, False, bias)
    if np.abs(s - 1).max() <= _UNSCALED and (not bias or not np.asarray(fused_b).any()):
        return Fused(conv, True, True, bias)
    swapped = False
    if bias:
        b = np.asarray(fused_b, np.float64)
        plain = np.abs(b - (w["beta"] - w["moving_mean"] * s)).max()
        swap = np.abs(b - (w["gamma"] - w["moving_mean"] * s)).max()
        swapped = swap < plain
    eps = float(np.median((w["beta" if swapped else "gamma"] / s) ** 2 - w["moving_variance"]))
    return Fused(conv, True, False, bias, eps if np.isfinite(eps) and eps > 0 else None, swapped)


# float32 round-off of a kernel copied unscaled: far below any BN's scale (gamma / sqrt(var + eps) is 1 only
# where gamma^2 = var + eps, in every channel at once)
_UNSCALED = 1e-6


def fits(model, graph, wanted: dict) -> dict:
    """``{BN name: Fused}`` for the BNs :func:`as_bn` moved their tensors to, from the convolutions'
    weights (initializers; a convolution whose weights are computed is not read)."""
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    found = {}
    for layer in model.layers:
        node = producer.get(wanted.get(layer.name)) if layer.kind == "bn" else None
        if node is None or node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        from onnx import numpy_helper  # optional extra ('bench'), present whenever a graph is read

        bias = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else None
        fit = _fit(model, layer.name, layer.inputs[0], numpy_helper.to_array(inits[node.input[1]]), bias)
        if fit is not None:
            found[layer.name] = fit
    return found


def epsilon_from_weights(model, graph, wanted: dict) -> dict:
    """``{BN name: (eps, gamma and beta swapped)}`` read from the fused convolutions' weights, for the
    BNs folded with an epsilon > 0 (:func:`fits`)."""
    return {bn: (f.eps, f.swapped) for bn, f in fits(model, graph, wanted).items() if f.eps is not None}


def note(model, graph, wanted: dict) -> str:
    """The report's word on a graph with no BatchNormalization node: what compare did, and what the
    convolutions' weights say, each convolution whose weights are not a BN fold of ours named."""
    if not is_folded(graph):
        return ""
    convs = [layer.inputs[0] for layer in model.layers if layer.kind == "bn" and layer.name in wanted]
    if not convs:
        return ""
    found = fits(model, graph, wanted)
    folded = {bn: f for bn, f in found.items() if f.scaled and not f.unscaled}
    unscaled = [f.conv for f in found.values() if f.unscaled]
    if found and not folded:  # nothing a BN would leave: their port has none there
        text = (f"no BatchNormalization node, and none of the {len(convs)} convolutions before our BNs has one "
                "folded in: each one's output is compared as its BN's, and the convolutions themselves are not "
                "compared")
    else:
        text = (f"BN is folded into the convolution before it ({len(convs)} convolutions, no BatchNormalization "
                "node): each fused convolution's output is compared as its BN's, and the convolutions themselves "
                "are not compared (ours fill them from their previous layer, so a BN row's local error covers "
                "the fused pair)")
    eps = [f.eps for f in folded.values() if f.eps is not None]
    if eps:
        lo, hi = min(eps), max(eps)
        value = f"≈ {lo:.2g}" if np.isclose(lo, hi, rtol=0.1, atol=1e-9) else f"between {lo:.2g} and {hi:.2g}"
        text += (f"; their fused weights against ours give BN epsilon {value} in {len(eps)} of them "
                 f"(Keras uses {CONFIG.bn_epsilon:g})")
        swapped = [bn for bn, f in folded.items() if f.swapped]
        if swapped:
            text += f", gamma and beta swapped in {len(swapped)}: {', '.join(swapped[:5])}"
    no_eps = [f.conv for f in folded.values() if f.eps is None]
    if no_eps:
        text += (f"; kernel ours times a per-channel scale that no BN epsilon > 0 gives in {len(no_eps)}: "
                 f"{compact_names(no_eps)}")
    no_bias = [f.conv for f in folded.values() if not f.bias]
    if no_bias:
        text += (f"; no bias input in {len(no_bias)} of the fused convolutions: the fused bias beta - moving_mean "
                 f"* s is missing in {compact_names(no_bias)}")
    if unscaled:
        text += (f"; our kernel unscaled and no bias in {len(unscaled)}: no BN applied after "
                 f"{compact_names(unscaled)}")
    other = [f.conv for f in found.values() if not f.scaled]
    if other:
        text += f"; fused kernel is not ours times a per-channel scale in {len(other)}: {compact_names(other)}"
    return text
