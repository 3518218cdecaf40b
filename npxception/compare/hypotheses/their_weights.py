"""Their own weights and padding, read from their graph (:mod:`npxception.compare.their_convs`).

When the port map pairs their convolution with ours and its weights are initializers, the direct check
needs no guess: our layer run with *their* kernel, depthwise kernel, bias and pads. When that reproduces
their output, and their weights or pads differ from ours, the difference is the cause, said in words
(output channels permuted, depthwise taps swapped, a strided 1x1 convolution sampling the other pixel
phase). At a BN row whose convolution their side fused (BN folded into it, not exposed), the fused
convolution, their BN included, is run on the gap's input.
"""

from __future__ import annotations

from ... import ops
from ..their_convs import differences
from .case import Candidate, Case
from .fused import filled_convolution


def their_weights(case: Case) -> Candidate | None:
    """Our layer (or the convolution their BN is folded into) with their weights and pads reproduces their
    output, and those differ from ours: named in words (:func:`~npxception.compare.their_convs.differences`)."""
    convs = case.their_convs or {}
    if case.kind in ("conv", "sepconv") and case.name in convs and not convs[case.name].folded:
        conv, spec, x = convs[case.name], case.spec, case.inputs[0]
        where = ""
    elif (found := filled_convolution(case)) is not None and found[0].name in convs and convs[found[0].name].folded:
        spec, x = found
        conv = convs[spec.name]
        where = f" ({spec.name}: the convolution their BN is folded into)"
    else:
        return None
    words = differences(conv, case.model, spec, x.shape)
    if not words:
        return None
    y = conv.run(x, ops, spec.strides)
    if y.shape != case.theirs.shape:
        return None
    return Candidate("their_weights", f"{words}{where}", y.astype(case.local.dtype), spec.name)
