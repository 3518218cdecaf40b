"""Layers a weights-only file lists without saying what they are, counted against the table.

A Keras 3 checkpoint read without config (:mod:`npxception.weights_tools.keras3_checkpoint`) references
every layer of its model's list, in Keras' order, but records nothing of a layer without weights: an
Activation, a MaxPooling2D, an Add, a global pooling, a Rescaling or a Dropout are each an empty object
(:data:`~npxception.weights_tools.graph.UNRECORDED`), an operation (``x / 127.5``) a missing index. Their
number is recorded, and Xception fixes it: Keras lists its layers by depth, so the InputLayer alone comes
before ``block1_conv1``, every activation, pooling and Add of the table (but the last activation) comes
between ``block1_conv1`` and ``block14_sepconv2_bn``, and after it the table's last activation, then the
head. So a count that differs is something the file does not describe: a preprocessing layer in front, a
layer inside the backbone, a Dropout before the classifier, an Activation after it. Each is refused,
naming the layers and the remedy, never guessed; the one layer a flag describes is the global pooling of a
bare backbone (``--pooling``).
"""

from __future__ import annotations

from npxception import architecture as arch

from .errors import ConversionError
from .graph import UNRECORDED, KLayer

_WEIGHTED = ("conv", "sepconv", "bn")
_CONFIG = "pass the model's config with --config model.keras|config.json"


def _listed(layers: list[KLayer]) -> str:
    return ", ".join(k.name for k in layers[:4]) + (f", ... ({len(layers)} in all)" if len(layers) > 4 else "")


def refuse_unrecorded(klayers: list[KLayer], backbone: list[KLayer], dense: KLayer | None, variant: arch.Variant,
                      given: dict, source: str) -> None:
    """Refuse a file whose unrecorded layers (none: not such a file) do not sit where ``variant``'s
    Xception, with ``dense`` as its classifier (or none), puts its weightless layers. ``backbone``: the file's
    layers matched to the table's weighted ones; ``given``: the head flags (``pooling``)."""
    if not any(k.class_name == UNRECORDED for k in klayers):
        return
    at = {id(k): i for i, k in enumerate(klayers)}
    spots = sorted(at[id(k)] for k in backbone)
    first, last = spots[0], spots[-1]
    end = at[id(dense)] if dense is not None else len(klayers)

    def unrecorded(lo, hi):
        return [k for k in klayers[lo:hi] if k.class_name == UNRECORDED]

    table = arch.backbone(variant)
    weighted = [i for i, layer in enumerate(table) if layer.kind in _WEIGHTED]
    tail = [layer.name for layer in table[weighted[-1] + 1:]]  # keras: block14_sepconv2_act
    inside = sum(1 for layer in table[weighted[0]:weighted[-1]] if layer.kind not in _WEIGHTED)
    name = arch.variant_name(variant)

    before = unrecorded(0, first)
    if len(before) != 1:
        raise ConversionError(
            f"{source}: {len(before)} layers or operations before {klayers[first].name} ({_listed(before)}) where "
            f"Xception has its input alone: the file does not record what "
            f"{'they compute' if len(before) > 2 else 'it computes'} (a Rescaling, a Normalization, an "
            f"x / 127.5 or augmentation in front of the backbone); {_CONFIG}"
            if before else f"{source}: no input layer before {klayers[first].name}; not a Keras model's layers")
    middle = unrecorded(first, last)
    if len(middle) != inside:
        raise ConversionError(
            f"{source}: {len(middle)} layers without weights between {klayers[first].name} and "
            f"{klayers[last].name}, where {name} Xception has {inside} (its activations, max-poolings and adds): "
            f"the file does not record what the other{'s' if abs(len(middle) - inside) > 1 else ''} compute "
            f"or which are missing; {_CONFIG}")
    after = unrecorded(last + 1, end)
    pooling = given.get("pooling")
    extra = len(after) - len(tail)
    if dense is not None:
        trailing = unrecorded(end + 1, len(klayers))
        if extra != 1:
            raise ConversionError(
                f"{source}: {len(after)} layers without weights between {klayers[last].name} and the Dense "
                f"{dense.name} ({_listed(after)}), where {name} Xception's head has {len(tail) + 1} "
                f"({', '.join(tail + ['its global pooling'])}): the file does not record what "
                f"{'the others are' if extra > 1 else 'pools the features'} (a Dropout, an Activation...); "
                f"{_CONFIG}")
        if trailing:
            raise ConversionError(
                f"{source}: {len(trailing)} layer(s) after the classifier {dense.name} ({_listed(trailing)}), "
                f"which the file does not record (an Activation?): --classifier-activation describes the "
                f"Dense's own activation only; {_CONFIG}")
        return
    if extra == 0 and pooling is not None:
        raise ConversionError(
            f"{source}: --pooling {pooling} contradicts the file: it records no layer after "
            f"{tail[-1] if tail else klayers[last].name}, so the model was not pooled. Leave --pooling out")
    if extra == 1 and pooling is None:
        raise ConversionError(
            f"{source}: the file records one layer after {tail[-1] if tail else klayers[last].name} ({after[-1].name}) "
            "but not its class: the backbone's global pooling, average or max? Give --pooling avg|max, or "
            f"{_CONFIG}")
    if extra not in (0, 1):
        raise ConversionError(
            f"{source}: {len(after)} layers without weights after {klayers[last].name} ({_listed(after)}), "
            f"where {name} Xception has {len(tail)} and then at most a global pooling: the file does not record "
            f"what the others compute; {_CONFIG}")
