"""What an XceptionModel is built and called with, checked: its input shape, the source model's shape and
data format, its labels, a Flatten head's input size, a positive count (``predict``'s ``batch_size``).

Each check returns the value in its canonical form or raises ValueError naming the argument, what was
expected and what was found. They bound what a manifest may ask for (docs/security.md): a weight file's
manifest reaches :class:`npxception.network.XceptionModel` through them, so they sit apart from the model
that runs, below it, with :mod:`npxception.model` (``Xception()``'s constructor rule) and
:mod:`npxception.prediction` (``batch_size``) using them too.
"""

from __future__ import annotations

import numpy as np

from . import architecture as arch
from . import head_schema
from .config import CONFIG
from .untrusted import short_repr


def check_positive_int(value, what) -> int:
    """``value`` as an int >= 1 (a bool is refused, as NumPy refuses it as an index count); ValueError
    naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}: expected a positive int, found {short_repr(value)}")
    return int(value)


def check_input_shape(shape, min_size) -> tuple:
    """(H, W, C) with min_size <= H, W <= max_input_size, or None for H and W (any size), and
    1 <= C <= max_input_channels (3 for RGB; Keras builds Xception for any count without ImageNet weights).

    ``min_size``: the network's (:func:`npxception.architecture.min_input_size`) for a model, Keras'
    constructor rule (``CONFIG.constructor_min_size``) for :func:`npxception.Xception`.
    """
    try:
        shape = tuple(None if d is None else _int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape: expected (H, W, C), found {shape!r}") from None
    if len(shape) != 3 or not _channels_ok(shape[2]):
        raise ValueError(f"input_shape: expected (H, W, C) with C, the channels, in "
                         f"[1, {CONFIG.max_input_channels}] (3 for RGB), found {shape!r}")
    if any(d is not None and not min_size <= d <= CONFIG.max_input_size for d in shape[:2]):
        raise ValueError(f"input_shape: height and width must be at least {min_size} and at "
                         f"most {CONFIG.max_input_size}, found {shape}")
    return shape


def check_flatten_size(layers, head, input_shape) -> None:
    """Refuse a flatten head (:func:`npxception.head_schema.flatten_step`) on an input size other than
    the one it was built for: its Dense has a row per feature of that map. Keras cannot build one on a
    variable size either ("The last dimension of the inputs to a Dense layer should be defined")."""
    flat = head_schema.flatten_step(head)
    if flat is None:
        return
    built = arch.shape_text(flat["map_shape"])
    if input_shape[0] is None or input_shape[1] is None:
        raise ValueError(f"head: {flat['name']} (Flatten) is built for a {built} feature map, so the model "
                         f"takes one input size; input_shape {input_shape} takes any size")
    arch.trace(layers, head, input_shape)  # raises naming both maps when input_shape gives another


# The data formats a Keras source can compute in (weights_tools.layout reads them from its layers).
DATA_FORMATS = ("channels_last", "channels_first")


def check_data_format(value):
    """A source's recorded data format: one of DATA_FORMATS, or None (not recorded)."""
    if value is not None and value not in DATA_FORMATS:
        raise ValueError(f"source_data_format: expected one of {DATA_FORMATS} or None, found {short_repr(value)}")
    return value


def check_source_shape(shape, channels) -> tuple:
    """The source model's (H, W, C) before its input stage: None (any size) or 1 <= H, W <= max_input_size,
    and the backbone's ``channels`` (no input-stage step changes them).

    Bounded as the backbone's size is: predict() loads photos at a fixed source size,
    so a manifest must not be able to make it allocate more than a backbone input.
    """
    try:
        shape = tuple(None if d is None else _int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"source_input_shape: expected (H, W, {channels}), found {short_repr(shape)}") from None
    if len(shape) != 3 or shape[2] != channels or any(d is not None and not 1 <= d <= CONFIG.max_input_size
                                                       for d in shape[:2]):
        raise ValueError(f"source_input_shape: expected (H, W, {channels}) with H and W None (any size) or in "
                         f"[1, {CONFIG.max_input_size}] and the backbone's {channels} channels, "
                         f"found {short_repr(shape)}")
    return shape


def _channels_ok(c) -> bool:
    return isinstance(c, int) and 1 <= c <= CONFIG.max_input_channels


def _int(d) -> int:
    """An int dimension; 299.0 or "299" (a hand-edited manifest) are not silently accepted."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
        raise TypeError(d)
    return int(d)


def check_labels(labels, classes):
    """None, or a list of exactly ``classes`` strings (a string is not a list of labels)."""
    if labels is None:
        return None
    if not isinstance(labels, (list, tuple)) or not all(isinstance(s, str) for s in labels):
        raise ValueError(f"labels: expected a list of strings, found {short_repr(labels)}")
    if classes is None or len(labels) != classes:
        raise ValueError(f"labels: expected {classes or 0} names, one per class, found {len(labels)}")
    return list(labels)
