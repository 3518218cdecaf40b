"""The data format a Keras model computes in: ``channels_last`` (NHWC) or ``channels_first`` (NCHW).

A Keras user who sets ``keras.config.set_image_data_format("channels_first")``
(common with Keras 3's torch backend) gets layers that record it. What differs
in such a file, read from Keras 3's source (keras/src/layers/) and tf_keras':

* ``Conv2D``, ``SeparableConv2D``, ``MaxPooling2D``, ``GlobalAverage/MaxPooling2D``,
  ``Flatten`` and the geometry preprocessing layers (``Resizing``, ``CenterCrop``,
  ``RandomCrop``, Keras 3 only) carry ``"data_format": "channels_first"``;
* ``BatchNormalization`` carries ``"axis": 1`` (``applications.Xception`` passes
  the channel axis explicitly; tf_keras writes ``[1]``); ``Normalization``'s axis
  is the user's (its default, -1, is the width there);
* the ``InputLayer``'s ``batch_shape`` is ``(None, C, H, W)``;
* the stored kernels are NOT transposed: ``base_conv.build`` makes
  ``kernel_size + (C_in, filters)`` and ``base_separable_conv.build``
  ``kernel_size + (C_in, M)`` and ``(1, 1, C_in * M, filters)`` whatever the data
  format, so the converter copies them as it does for channels_last files;
* ``Flatten`` transposes a channels_first map to channels_last before reshaping
  (``reshaping/flatten.py``); Keras 3's ``Rescaling`` reshapes a per-channel
  ``scale`` (not its ``offset``) to ``(3, 1, 1)`` when the *global*
  image_data_format is channels_first at call time (``preprocessing/rescaling.py``;
  tf_keras never does): the file does not record that setting, but for any image
  at least 71 wide the other setting is a broadcasting error, so per channel is
  the only answer Keras computes (weights_tools.preprocessing refuses the rest).

npxception computes in NHWC whatever the source's format (``model(x)`` takes
NHWC); the converted model records the source's format as
``source_data_format``, and the Keras side of a check feeds Keras NCHW and
brings its activations back to NHWC (:mod:`npxception.keras_side`).

Keras 1 wrote ``"dim_ordering"`` instead: ``"tf"`` is channels_last; ``"th"``
(Theano's) stored kernels as ``(C_out, C_in, KH, KW)``, flipped for Theano's true
convolution, which no test here can reproduce, so it is refused by name.
"""

from __future__ import annotations

from npxception.model_checks import DATA_FORMATS

CHANNELS_LAST, CHANNELS_FIRST = DATA_FORMATS
# Where each format puts the channels of a 4-D image batch.
CHANNEL_AXES = {CHANNELS_LAST: (-1, 3), CHANNELS_FIRST: (1, -3)}

# Layer classes whose arithmetic depends on the data format they record. Identities at inference
# (RandomFlip, Dropout...) record one too, but compute nothing: they are routed around, never read here.
DEPENDS = frozenset({
    "Conv2D", "Convolution2D", "SeparableConv2D", "SeparableConvolution2D", "MaxPooling2D", "MaxPool2D",
    "GlobalAveragePooling2D", "GlobalAvgPool2D", "GlobalMaxPooling2D", "GlobalMaxPool2D", "Flatten",
    "Resizing", "CenterCrop", "RandomCrop",
})
_DIM_ORDERING = {"tf": CHANNELS_LAST, "th": None}  # Keras 1; "th" is refused


class LayoutError(ValueError):
    """A model whose data format the converter cannot read or reproduce; the message names the layer."""


def layer_data_format(class_name: str, config: dict | None) -> str | None:
    """The data format a layer records (``None``: it records none, or its class does not depend on one)."""
    if class_name not in DEPENDS:
        return None
    cfg = config or {}
    if "data_format" in cfg:
        fmt = cfg["data_format"]
        if fmt not in DATA_FORMATS:
            raise LayoutError(f"data_format {fmt!r}; expected one of {DATA_FORMATS}")
        return fmt
    if "dim_ordering" in cfg:
        ordering = cfg["dim_ordering"]
        if _DIM_ORDERING.get(ordering) is None:
            raise LayoutError(f"Keras 1 dim_ordering {ordering!r}; only 'tf' (channels_last) converts: "
                              "Theano's 'th' stores kernels transposed and flipped")
        return _DIM_ORDERING[ordering]
    return None


def model_data_format(klayers, source: str) -> str | None:
    """The one data format of the layers that depend on it; None when none records one.

    A model mixing formats (a channels_last head pooling a channels_first
    backbone, a Resizing of the other format) is refused naming two layers
    that differ: each would compute over other axes than its neighbours.
    """
    first = None  # (layer, format)
    for k in klayers:
        if k.class_name == "Flatten":  # its format orders its features, read with the backbone's in the head
            continue
        try:
            fmt = layer_data_format(k.class_name, k.config)
        except LayoutError as exc:
            raise LayoutError(f"{source}: layer {k.name} ({k.class_name}): {exc}") from None
        if fmt is None:
            continue
        if first is None:
            first = (k, fmt)
        elif fmt != first[1]:
            raise LayoutError(
                f"{source}: mixed data_format: layer {first[0].name} ({first[0].class_name}) is {first[1]}, "
                f"layer {k.name} ({k.class_name}) is {fmt}; npxception converts a model computed in one "
                "data format. Rebuild the model with one image_data_format, load its weights (their layout "
                "does not depend on it) and save it again")
    return first[1] if first else None


def to_hwc(shape, data_format: str | None) -> tuple | None:
    """A recorded ``(C, H, W)`` (channels_first) or ``(H, W, C)`` input shape as ``(H, W, C)``."""
    if shape is None or len(shape) != 3:
        return shape
    return (shape[1], shape[2], shape[0]) if data_format == CHANNELS_FIRST else tuple(shape)


def nchw(x):
    """An NHWC batch as NCHW, to feed a channels_first Keras model."""
    return x.transpose(0, 3, 1, 2)


def nhwc(a):
    """A channels_first model's 4-D activation as NHWC; other ranks as they are (pooled (N, C) is the same)."""
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a
