"""The multi-image summary: do two implementations agree on what they predict?

Layer errors tell a porter where to look; over a batch or a folder of images
the question a user asks upstream is simpler: same top-1 class, how much of the
top-5 overlaps, and the largest difference in any probability. Only the final
outputs are computed, in chunks, so a folder of images costs two plain forward
passes per chunk.
"""

from __future__ import annotations

import numpy as np

from .precision import DEFAULT_RTOL
from .ranking import ranking_difference, scores
from .report import Agreement, agreement, output_activation
from .sides import INPUT_KEY, Other, open_other, stated_activation, to_nhwc


def summarize(model, other, x=None, *, batch_size=8, layout=None, names=None, their_activation=None,
              rtol=DEFAULT_RTOL["float32"]) -> Agreement:
    """How the predictions of ``model`` and ``other`` agree (:func:`npxception.compare.agreement`: top-1,
    top-5 and max |Δp| for a softmax head, yes/no decisions for a one-unit or sigmoid one) over batch ``x``, or over a
    list or iterator of batches (photos at their own sizes, which do not stack; ``iter_cli_inputs``, read
    as they are used: a folder's photos are never held at once).

    For a dump, its final layer is compared with ours on ``x`` (or on the dump's input); ``their_activation``
    states what its output ends with, as for :func:`~npxception.compare.compare`. ``rankings_differ`` says
    where the class rankings differ beyond near-ties (``rtol``, :mod:`npxception.compare.ranking`).
    """
    if not model.classes:
        raise ValueError("summarize: the model has no classifier (include_top=False); "
                         "prediction agreement needs class scores")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, found {batch_size!r}")
    side = other if isinstance(other, Other) else open_other(model, other, layout=layout, names=names)
    side = stated_activation(side, their_activation)
    last = model.layer_names[-1]
    activations = {"ours_activation": output_activation(model.head), "theirs_activation": side.activation}
    batches = None if x is None or isinstance(x, np.ndarray) else x  # else a list or iterator of batches
    if batches is not None and side.fixed:
        batches = list(batches)
        if len({np.shape(b)[1:] for b in batches}) > 1:
            raise ValueError(f"{side.label}: a dump holds one batch of one size; x holds batches of different sizes")
        x = np.concatenate(batches)
    if side.fixed:
        acts = side(None)
        if x is None:
            if INPUT_KEY not in acts:
                raise ValueError(f"{side.label}: no input given and the dump carries none (key {INPUT_KEY!r})")
            x = to_nhwc({INPUT_KEY: acts[INPUT_KEY]}, {}, side.layout, model.channels)[INPUT_KEY]
        if last not in acts:
            raise ValueError(f"{side.label}: holds no {last!r} output to compare predictions with")
        return _agreement(model(np.asarray(x)), np.asarray(acts[last]).reshape(len(x), -1), activations, rtol)
    if x is None:
        raise ValueError(f"x: an input batch is needed to run {side.label}")
    ours, theirs = [], []
    for batch in (batches if batches is not None else [x]):
        batch = np.asarray(batch)
        for i in range(0, len(batch), batch_size):
            chunk = batch[i:i + batch_size]
            ours.append(model(chunk))
            theirs.append(np.asarray(side.final(chunk) if side.final else side(chunk)[last]))
    return _agreement(np.concatenate(ours), np.concatenate(theirs), activations, rtol)


def _agreement(ours, theirs, activations, rtol=None) -> Agreement:
    """:func:`agreement`, with their one extra class dropped where theirs has one (:func:`without_extra_class`);
    other shapes that differ are refused by name (it raised numpy's "operands could not be broadcast")."""
    theirs = theirs.reshape(len(theirs), -1)
    if theirs.shape == ours.shape:
        out = agreement(ours, theirs, **activations)
        if rtol is not None and "sigmoid" not in activations.values():  # a multi-label head: its decisions say
            out.rankings_differ = ranking_difference(scores(ours, activations["ours_activation"]),
                                                     scores(theirs, activations["theirs_activation"]), rtol)
        return out
    dropped = without_extra_class(ours, theirs, activations["ours_activation"], activations["theirs_activation"])
    if dropped is None:
        raise ValueError(f"predictions: ours has {ours.shape[1]} outputs per image, theirs {theirs.shape[1]}: "
                         "not the same classifier, so their predictions cannot be compared")
    kept, i = dropped
    out = agreement(ours, kept, **activations)
    out.note += (f"; their {theirs.shape[1]} classes read without their class {i}"
                 + (" (a background class, as 1001-class ImageNet heads have it)" if i == 0 else "")
                 + ": it fits ours better than dropping their " + ("last" if i == 0 else "first"))
    return out


def without_extra_class(ours, theirs, ours_activation, theirs_activation):
    """``(theirs without one class, its index)`` when theirs has exactly one class more than ours: the
    index, 0 (a 1001-class head's background) or the last, whose removal leaves theirs nearest ours
    (probabilities renormalised over the classes kept; logits against our probabilities put through
    softmax over them); None for any other difference. Never a guess: the fit decides, and the note says."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if ours.ndim != 2 or theirs.shape != (ours.shape[0], ours.shape[1] + 1):
        return None
    best = None
    for i in (0, theirs.shape[1] - 1):
        kept = np.delete(theirs, i, axis=1)
        if theirs_activation == "softmax":
            kept = kept / np.maximum(kept.sum(1, keepdims=True), np.finfo(np.float64).tiny)
        seen = kept
        if theirs_activation is None and ours_activation == "softmax":
            seen = np.exp(kept - kept.max(1, keepdims=True))
            seen /= seen.sum(1, keepdims=True)
        err = np.abs(seen - ours).max()
        if best is None or err < best[0]:
            best = (err, kept, i)
    return best[1], best[2]
