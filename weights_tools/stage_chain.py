"""Wiring known: the model's input and the chain of input-stage layers behind it.

Preprocessing layers and operation nodes between the input and the backbone
(Rescaling, Normalization, Resizing, CenterCrop, preprocess_input's arithmetic)
form a chain that :func:`weights_tools.preprocessing.input_stage` turns into
the model's input stage; the backbone walk starts where the chain ends.
"""

from __future__ import annotations

from .errors import ConversionError
from .graph import KLayer
from .kinds import kind_of
from .layout import CHANNELS_FIRST, CHANNELS_LAST, to_hwc
from .preprocessing import STAGE
from .walk import _consumers

def _stage_chain(root: KLayer, live, inputs) -> list[KLayer]:
    """The input-stage layers (Rescaling, Normalization, Resizing..., operation nodes such as
    preprocess_input's) that follow the input in a chain."""
    consumers = _consumers(live, inputs)
    chain, current = [], root.name
    while len(consumers.get(current, [])) == 1 and kind_of(consumers[current][0]) in (*STAGE.values(), "op"):
        chain.append(consumers[current][0])
        current = chain[-1].name
    return chain


def _input_shape(root: KLayer, source: str, data_format=None):
    """The input's ``(H, W, C)``, read from ``(N, C, H, W)`` when the model's layers are channels_first;
    ``source`` names the file in the error, as every converter error does."""
    cfg = root.config or {}
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if not shape or len(shape) != 4:
        return None
    h, w, c = to_hwc(shape[1:], data_format)
    if c != 3:
        fmt = data_format or CHANNELS_LAST
        where = "(N, C, H, W)" if fmt == CHANNELS_FIRST else "(N, H, W, C)"
        why = f"the model's layers are {fmt}" if data_format else f"no layer records a data_format: {fmt}"
        raise ConversionError(f"{source}: input layer {root.name}: expected 3 channels (RGB), found {c}: its shape "
                              f"{tuple(shape)} read as {where}, as {why}")
    return (h, w, c)
