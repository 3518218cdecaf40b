"""Wiring known: the model's input and the chain of input-stage layers behind it.

Preprocessing layers and operation nodes between the input and the backbone
(Rescaling, Normalization, Resizing, CenterCrop, preprocess_input's arithmetic)
form a chain that :func:`npxception.weights_tools.preprocessing.input_stage` turns into
the model's input stage; the backbone walk starts where the chain ends.
"""

from __future__ import annotations

from npxception.config import CONFIG

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
    fmt = data_format or CHANNELS_LAST
    where = "(N, C, H, W)" if fmt == CHANNELS_FIRST else "(N, H, W, C)"
    why = f"the model's layers are {fmt}" if data_format else f"no layer records a data_format: {fmt}"
    # Any channel count Keras builds (1 grayscale, 3 RGB, 4 RGBA...); the data format says which axis it is
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= CONFIG.max_input_channels:
        raise ConversionError(f"{source}: input layer {root.name}: expected C, the channels, in [1, "
                              f"{CONFIG.max_input_channels}] (3 for RGB), found {c!r}: its shape "
                              f"{tuple(shape)} read as {where}, as {why}")
    if c != 3 and 3 in (h, w):
        # An RGB batch in the other layout: 3 rows or columns, which no Xception computes (7 at least)
        raise ConversionError(f"{source}: input layer {root.name}: {c} channels and a side of 3: its shape "
                              f"{tuple(shape)} read as {where}, as {why}; in the other layout it is a 3-channel "
                              "(RGB) image")
    return (h, w, c)
