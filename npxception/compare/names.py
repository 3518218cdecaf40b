"""Their layer names -> ours: a user's map, or a built-in map for a known port.

A port names its activations after its own modules (timm: ``block4.rep.4``);
compare works in Keras' names (``block5_sepconv2``). ``names=`` takes a dict
``{their name: our name}``, a path to such a JSON object, or the name of a known
port from :data:`KNOWN_PORTS`.

timm's ``legacy_xception`` (``timm/models/xception.py`` in huggingface/
pytorch-image-models at aa4b5850, registered as ``legacy_xception``; the
tstandley/cadene port of these Keras weights) is read from its source:

* the stem is ``conv1, bn1, act1, conv2, bn2, act2``;
* ``block1`` .. ``block12`` are Keras' block2 .. block13. A ``Block`` holds
  ``rep``, a Sequential of ``[ReLU, SeparableConv2d, BatchNorm2d] * reps`` with
  the first ReLU dropped when ``start_with_relu=False`` (only ``block1``), then a
  ``MaxPool2d(3, strides, 1)`` when strided; ``skip`` / ``skipbn`` is the 1x1
  residual, and the Block's own output is the residual add (``x += skip``);
* ``block12`` has ``grow_first=False``: 728 -> 728 then 728 -> 1024, the same
  layer sequence as Keras' block13;
* the exit is ``conv3, bn3, act3, conv4, bn4, act4``, then ``global_pool`` and
  ``fc`` (logits: timm has no softmax).

Its ReLUs are in place and its add is ``x += skip``: a forward hook must copy
each output (see docs/discrepancies.md, dumping a PyTorch port).
"""

from __future__ import annotations

import json
import pathlib

from ..architecture import MIDDLE_FLOW_BLOCKS


def _timm_rep(block: str, ours: list[str]) -> dict[str, str]:
    return {f"{block}.rep.{i}": name for i, name in enumerate(ours)}


def timm_legacy_xception() -> dict[str, str]:
    """``{timm module path: our layer name}`` for timm's ``legacy_xception``."""
    m = {
        "conv1": "block1_conv1", "bn1": "block1_conv1_bn", "act1": "block1_conv1_act",
        "conv2": "block1_conv2", "bn2": "block1_conv2_bn", "act2": "block1_conv2_act",
    }
    # block1 has start_with_relu=False: its rep starts at the first separable conv.
    m.update(_timm_rep("block1", ["block2_sepconv1", "block2_sepconv1_bn", "block2_sepconv2_act",
                                  "block2_sepconv2", "block2_sepconv2_bn", "block2_pool"]))
    for timm_block, keras_block in (("block2", "block3"), ("block3", "block4"), ("block12", "block13")):
        k = keras_block
        m.update(_timm_rep(timm_block, [f"{k}_sepconv1_act", f"{k}_sepconv1", f"{k}_sepconv1_bn",
                                        f"{k}_sepconv2_act", f"{k}_sepconv2", f"{k}_sepconv2_bn", f"{k}_pool"]))
    for keras_index in MIDDLE_FLOW_BLOCKS:  # timm block4..block11 are Keras block5..block12
        k = f"block{keras_index}"
        m.update(_timm_rep(f"block{keras_index - 1}", [
            f"{k}_sepconv{i}{part}" for i in (1, 2, 3) for part in ("_act", "", "_bn")]))
    for timm_index in range(1, 13):
        k = f"block{timm_index + 1}"
        m[f"block{timm_index}"] = f"{k}_add"
        if timm_index in (1, 2, 3, 12):
            m[f"block{timm_index}.skip"] = f"{k}_residual_conv"
            m[f"block{timm_index}.skipbn"] = f"{k}_residual_bn"
    m.update({
        "conv3": "block14_sepconv1", "bn3": "block14_sepconv1_bn", "act3": "block14_sepconv1_act",
        "conv4": "block14_sepconv2", "bn4": "block14_sepconv2_bn", "act4": "block14_sepconv2_act",
        "global_pool": "avg_pool", "fc": "predictions",
    })
    return m


# Known ports by the name ``names=`` / ``--port`` accepts.
KNOWN_PORTS = {
    "timm.legacy_xception": timm_legacy_xception,
}


def resolve_names(names, our_names) -> dict[str, str]:
    """``names`` (None, dict, JSON path or a known port's name) -> ``{their name: our name}``.

    Every target must be one of ``our_names``: a typo in a hand-written map is an
    error naming the entry, not a silently missing row.
    """
    if names is None:
        return {}
    if isinstance(names, str) and names in KNOWN_PORTS:
        mapping = KNOWN_PORTS[names]()
    elif isinstance(names, dict):
        mapping = dict(names)
    elif isinstance(names, (str, pathlib.Path)):
        path = pathlib.Path(names)
        if path.suffix.lower() != ".json" or not path.is_file():
            raise ValueError(f"names: expected a dict, a .json file or one of {sorted(KNOWN_PORTS)}, "
                             f"found {str(names)!r}")
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable JSON object ({exc})") from None
        if not isinstance(mapping, dict):
            raise ValueError(f"{path}: expected a JSON object {{their name: our name}}, "
                             f"found {type(mapping).__name__}")
    else:
        raise TypeError(f"names: expected a dict, a .json path or a known port name, found {type(names).__name__}")
    ours = set(our_names)
    for theirs, mine in mapping.items():
        if not isinstance(theirs, str) or not isinstance(mine, str):
            raise ValueError(f"names: entries must map strings to strings, found {theirs!r}: {mine!r}")
        if mine not in ours:
            raise ValueError(f"names: {theirs!r} maps to {mine!r}, which is not one of our layer names "
                             "(see model.layer_names)")
    return mapping
