"""Weights stored in half precision: a port that ships (or converted) its weights as float16 or
bfloat16 and computes in float32 differs from ours by that rounding alone, at every layer that
has weights."""

from __future__ import annotations

import numpy as np

from ...head import activation
from ...config import CONFIG
from .batchnorm import _bn, _fitted_epsilon
from .case import Candidate, Case, closest
from .windows import _conv


def rounded(a, to: str):
    """``a`` rounded to the nearest ``to`` ("float16" or "bfloat16", ties to even), kept in its dtype."""
    a = np.asarray(a)
    if to == "float16":
        return a.astype(np.float16).astype(a.dtype)
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)  # bfloat16: float32's top 16 bits
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32).astype(a.dtype)


def _with(case: Case, p: dict):
    """Our layer on their inputs, with weights ``p``."""
    x = case.inputs[0]
    if case.kind == "conv":
        return _conv(case, kernel=p["kernel"])
    if case.kind == "sepconv":
        return _conv(case, kernel=p["pointwise_kernel"], depthwise=p["depthwise_kernel"])
    if case.kind in ("bn", "batch_norm"):
        return _bn(x, p)
    return activation(x @ p["kernel"] + p.get("bias", 0), case.spec.get("activation"), "reference")


def weights_rounded(case: Case) -> Candidate | None:
    """Their weights rounded to float16 or bfloat16 (``model.half()`` then back to float32, or a
    checkpoint saved in half precision), the layer computed in float32."""
    if case.kind not in ("conv", "sepconv", "bn", "batch_norm", "dense") or not case.params:
        return None
    found = closest(((to, np.asarray(_with(case, {k: rounded(v, to) for k, v in case.params.items()}),
                                      case.local.dtype)) for to in ("float16", "bfloat16")), case.theirs)
    if found is None:
        return None
    to, y = found
    return Candidate("weights_rounded", f"their weights rounded to {to} (the layer computed in float32)", y, to)


def bn_epsilon_weights_rounded(case: Case) -> Candidate | None:
    """Both at once at a BN: their weights rounded to float16 or bfloat16 *and* another epsilon (a PyTorch
    checkpoint in bfloat16, loaded into a float32 model with BatchNorm2d's 1e-5). Each alone leaves the
    other's difference, over the tolerance (review 22: all 40 BN layers were unexplained); the epsilon is
    fitted on the rounded weights."""
    if case.kind not in ("bn", "batch_norm") or not case.params:
        return None
    options = []
    for to in ("float16", "bfloat16"):
        p = {k: rounded(v, to) for k, v in case.params.items()}
        eps = _fitted_epsilon(case, p)
        if eps is not None:
            options.append(((to, eps), np.asarray(_bn(case.inputs[0], p, epsilon=eps), case.local.dtype)))
    found = closest(options, case.theirs)
    if found is None:
        return None
    (to, eps), y = found
    return Candidate("bn_epsilon_weights_rounded", f"their weights rounded to {to} and epsilon ≈ {eps:.2g} "
                     f"(Keras uses {CONFIG.bn_epsilon:g})", y, {"rounded_to": to, "epsilon": eps})
