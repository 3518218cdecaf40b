"""Keras preprocessing and augmentation layers, as the converter reads them.

Real models carry layers that do nothing at inference, and layers that are
part of the model's contract with its input (keras.io's transfer-learning
recipe: ``RandomFlip`` and ``RandomRotation``, then ``Rescaling(1/127.5,
offset=-1)``, then the backbone). They are sorted here into:

* **identities at inference** (:data:`IDENTITY`): Keras' ``call(x,
  training=False)`` returns ``x`` unchanged. The converter routes around them,
  wherever they sit.
* **the input stage** (:data:`STAGE`): ``Rescaling`` and ``Normalization``
  (affine), arithmetic with a scalar on the input tensor (``preprocess_input``'s
  ``x / 127.5 - 1``: operation nodes, :mod:`npxception.weights_tools.operations`), ``Resizing``, ``CenterCrop`` and ``RandomCrop`` (geometry: they bring
  the source's input size to the backbone's, as the Keras that wrote them does at
  inference), all applied by ``model(x)``. They must form a chain between the
  model's input and the backbone; :func:`input_stage` turns that chain into
  :mod:`npxception.input_stage` steps, refusing what it cannot reproduce exactly.

Which Keras wrote a geometry layer is read from its config: Keras 3's
``Resizing``, ``CenterCrop`` and ``RandomCrop`` serialise ``data_format``
(``get_config`` of keras/src/layers/preprocessing/image_preprocessing/*.py),
tf_keras' (and Keras 2's) never do (tf_keras/layers/preprocessing/image_preprocessing.py).

Anything else (``Lambda``, custom classes, other augmentation layers) is refused
by :mod:`npxception.weights_tools.kinds`, naming the layer and the way out.
"""

from __future__ import annotations

import re

import numpy as np

from npxception.input_stage import INTEGER_DTYPES, KERAS_EPSILON, output_size
from npxception.untrusted import COUNTER
from npxception.ops.resize import INTERPOLATIONS

from . import operations
from .graph import KLayer, dtype_policy
from .layout import CHANNEL_AXES, CHANNELS_LAST

# Keras and tf_keras class names whose inference path is `return inputs`. Keras 3's image augmentation layers
# (keras/src/layers/preprocessing/image_preprocessing/*.py, Keras 3.15) transform only under `if training:` (or
# with a transformation get_random_transformation returns only in training), whatever their config: at
# inference they cast to the compute dtype (float32 here) and return the images. Measured too: with every factor
# at its maximum, each alone under model.predict returned its input exactly (review 27's helper), and a model with
# all of them before an Xception converts to what predict gives (tests/test_keras3_saves.py). AutoContrast and
# Equalization transform at inference (keras_layers).
IDENTITY = frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianDropout", "AlphaDropout", "GaussianNoise",
    "ActivityRegularization", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
    "RandomContrast", "RandomBrightness",
    "RandomColorJitter", "RandomGrayscale", "RandomErasing", "RandomGaussianBlur", "RandomPerspective",
    "RandomShear", "RandomHue", "RandomSaturation", "RandomSharpness", "RandomInvert", "RandomPosterization",
    "RandomColorDegeneration", "RandomElasticTransform", "RandAugment", "AugMix", "Solarization", "MixUp",
    "CutMix",
})

STAGE = {"Rescaling": "rescaling", "Normalization": "normalization", "Resizing": "resizing",
         "CenterCrop": "center_crop", "RandomCrop": "random_crop"}
# Keras 3 spells some interpolations differently from tf_keras; all are refused but these two.
_OTHER_INTERPOLATIONS = ("bicubic", "area", "lanczos3", "lanczos5", "gaussian", "mitchellcubic", "lanczos")


class StageError(ValueError):
    """A preprocessing layer the converter cannot reproduce exactly; the message says why."""


def _axis_is_channels(axis, data_format=CHANNELS_LAST) -> bool:
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    # None (tf_keras) or [] (Keras 3 writes axis=None as an empty tuple): one mean and variance for every value
    return axis in CHANNEL_AXES[data_format] or axis is None or axis == []


def _per_channel(a, what, channels) -> float | list[float]:
    """One number, or one per input channel (``channels``: the model input's, 3 for RGB)."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 1:
        return float(a.reshape(()))
    if a.size != channels or a.shape[-1] != channels:
        raise StageError(f"{what}: expected one value per input channel ({channels}), found shape {a.shape}")
    return [float(v) for v in a.reshape(channels)]


def _channels_first_rescaling(step, what, keras_version):
    """A Rescaling in a channels_first model, as Keras computes it on an NCHW batch, or StageError.

    Keras 3 reshapes a per-channel ``scale`` to ``(3, 1, 1)`` (keras/src/layers/preprocessing/
    rescaling.py; when the global image_data_format is channels_first, the only setting in which such a
    model runs at all: measured, the other is a broadcasting error), so it scales the channels; it does
    not reshape the ``offset``, nor does tf_keras either, so a per-channel value there broadcasts over
    the width, and Keras computes nothing for an image wider than 3.
    """
    vector = [name for name in ("scale", "offset") if isinstance(step[name], list)]
    keras3 = (version_tuple(keras_version) or (0,)) >= (3,)
    if vector and (vector != ["scale"] or not keras3):
        raise StageError(f"{what}: a per-channel {' and '.join(vector)} in a channels_first model broadcasts "
                         "over the width of the NCHW batch" + (" (Keras 3 reshapes the scale only)" if keras3 else
                                                               " (only Keras 3 reshapes the scale; the file records "
                                                               + (f"Keras {keras_version})" if keras_version
                                                                  else "no Keras version)"))
                         + ": Keras computes no answer for images at least 71 wide")


def _step(k: KLayer, data_format=CHANNELS_LAST, keras_version=None, channels=3) -> dict:
    """One stage step; ``data_format``: the model's (weights_tools.layout), which says where the channels are;
    ``channels``: the model input's, the length of a per-channel scale, mean or variance."""
    cfg = k.config or {}
    kind = STAGE[k.class_name]
    what = f"layer {k.name} ({k.class_name})"
    if kind == "rescaling":
        step = {"kind": kind, "name": k.name, "scale": _per_channel(cfg.get("scale", 1.0), f"{what} scale", channels),
                "offset": _per_channel(cfg.get("offset", 0.0), f"{what} offset", channels)}
        if data_format != CHANNELS_LAST:
            _channels_first_rescaling(step, what, keras_version)
        return step
    if kind == "normalization":
        invert = cfg.get("invert", False)
        if not isinstance(invert, bool):
            raise StageError(f"{what}: invert {invert!r}; expected true or false")
        if not _axis_is_channels(cfg.get("axis", -1), data_format):
            axes = " or ".join(map(str, CHANNEL_AXES[data_format]))
            raise StageError(f"{what}: axis {cfg.get('axis')!r}; only per-channel statistics convert (axis {axes} "
                             f"in a {data_format} model)")
        if k.weights:  # adapted: [mean, variance, count]
            if len(k.weights) != 3:
                raise StageError(f"{what}: expected the arrays mean, variance and count, found {len(k.weights)}")
            mean, var = k.weights[0], k.weights[1]
        elif cfg.get("mean") is not None and cfg.get("variance") is not None:
            mean, var = cfg["mean"], cfg["variance"]
        else:
            raise StageError(f"{what}: neither adapted statistics nor mean/variance in its config")
        mean, var = _per_channel(mean, f"{what} mean", channels), _per_channel(var, f"{what} variance", channels)
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise StageError(f"{what}: its statistics contain NaN or Inf")
        if np.min(np.sqrt(np.maximum(var, 0))) <= KERAS_EPSILON:
            raise StageError(f"{what}: a variance of {np.min(var):g} makes the output depend on Keras' "
                             "epsilon setting, which the file does not record")
        # invert=True maps normalised input back (mean + x * std): as affine as the forward direction
        return {"kind": kind, "name": k.name, "mean": mean, "variance": var, "epsilon": KERAS_EPSILON,
                **({"invert": True} if invert else {})}
    h, w = cfg.get("height"), cfg.get("width")
    if not all(isinstance(d, int) and d > 0 for d in (h, w)):
        raise StageError(f"{what}: expected int height and width in its config, found {h!r}, {w!r}")
    keras = "keras3" if "data_format" in cfg else "tf_keras"
    # its data_format is the model's (weights_tools.layout refuses a mix): it crops and resizes H and W either way
    step = {"kind": kind, "name": k.name, "height": h, "width": w, "keras": keras}
    if kind != "resizing":
        return step
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        known = "one of Keras' other methods" if interpolation in _OTHER_INTERPOLATIONS else "an unknown method"
        raise StageError(f"{what}: interpolation={interpolation!r} ({known}); npxception computes "
                         f"{' and '.join(INTERPOLATIONS)} exactly, as tf.image.resize does")
    if cfg.get("antialias"):
        raise StageError(f"{what}: antialias=True (tf.image.resize's scale-dependent kernel); npxception "
                         "computes antialias=False only")
    if cfg.get("pad_to_aspect_ratio") and cfg.get("fill_mode", "constant") != "constant":
        raise StageError(f"{what}: fill_mode={cfg.get('fill_mode')!r}; Keras pads with a constant only")
    fill = cfg.get("fill_value", 0.0)
    if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not np.isfinite(fill):
        raise StageError(f"{what}: fill_value {fill!r} is not a finite number")
    step.update(interpolation=interpolation, crop_to_aspect_ratio=bool(cfg.get("crop_to_aspect_ratio", False)),
                pad_to_aspect_ratio=bool(cfg.get("pad_to_aspect_ratio", False)), fill_value=float(fill))
    return step


# keras-team/keras 6cf8b34 (2021-09, first in v2.7.0): RandomCrop at inference became smart_resize (the
# largest centred h:w window, resized); before, it resized to the shorter side and then centre-cropped.
# Both write the same config, so only the Keras version the file records tells them apart.
RANDOM_CROP_SMART_RESIZE = (2, 7)


def version_tuple(text) -> tuple[int, ...] | None:
    """``"2.15.0"`` -> ``(2, 15)``; None for a missing or unreadable version."""
    found = re.match(rf"({COUNTER})\.({COUNTER})", text) if isinstance(text, str) else None
    return (int(found[1]), int(found[2])) if found else None


def _random_crop_determined(steps, hw, keras_version) -> None:
    """A tf_keras RandomCrop that resizes (its input is not its target size) computes what the file's
    Keras version says: StageError when the version is unrecorded or before 2.7."""
    version = version_tuple(keras_version)
    if version is not None and version >= RANDOM_CROP_SMART_RESIZE:
        return
    for i, s in enumerate(steps):
        if s["kind"] != "random_crop" or s["keras"] != "tf_keras":
            continue
        before = output_size(steps[:i], hw)
        if tuple(before) == (s["height"], s["width"]):
            continue  # an identity at its target size, in every version
        recorded = f"Keras {keras_version}" if version else "no Keras version"
        raise StageError(f"layer {s['name']} (RandomCrop): at inference Keras 2.7 and later resize a "
                         f"{'x'.join('any' if d is None else str(d) for d in before)} input with smart_resize, "
                         "earlier versions resized to the shorter side and centre-cropped; the file records "
                         f"{recorded}, so its answer is not determined. Give the model Input(shape=("
                         f"{s['height']}, {s['width']}, 3)), or save it with Keras 2.7 or later")


def _integer(dtype_name) -> bool:
    """Whether a recorded dtype name (None: float32) is an integer dtype numpy knows."""
    try:
        return dtype_name is not None and np.dtype(dtype_name).kind in "iu"
    except TypeError:
        return False


def input_stage(chain: list[KLayer], input_hw, keras_version=None, data_format=CHANNELS_LAST, *,
                input_dtype=None, input_name="input", channels=3) -> tuple[list[dict], tuple]:
    """``(steps, (H, W))``: the stage layers between the input and the backbone, and the backbone's size.

    ``input_hw`` is the model input's ``(H, W)`` (``None`` entries for a variable
    size, ``None`` when the file does not record it). The size the stage gives
    that input becomes the backbone's (:func:`npxception.input_stage.output_size`).
    ``keras_version`` is the version the file records (``"2.15.0"``; None when it
    records none), which decides what an old tf_keras RandomCrop computes.
    ``data_format`` is the model's (:mod:`npxception.weights_tools.layout`): where a Normalization's channels are.
    ``channels``: the input's (3 for RGB), the length of a per-channel Rescaling or Normalization.
    ``input_dtype``: the input's recorded dtype (None: float32), which operation nodes
    (:mod:`npxception.weights_tools.operations`) compute in. An integer one is the stage's first step, a cast
    named ``input_name`` (the Input layer's): Keras casts whatever it is fed to it, truncating.
    Raises :class:`StageError` for what Keras does not compute reliably.
    """
    steps = []
    if input_dtype in INTEGER_DTYPES:
        steps.append({"kind": "cast", "name": input_name, "dtype": input_dtype})
    elif _integer(input_dtype):
        raise StageError(f"the model's input {input_name} is {input_dtype}: Keras casts what it is fed to it, and "
                         f"npxception reproduces that cast for {', '.join(INTEGER_DTYPES)} inputs only (every value "
                         "of those is a float32); give the model one of those or a float32 Input")
    # {layer: the dtype of its output}: a layer's policy, a cast's float32: what the operations reading it compute in
    policies = {}
    for k in chain:
        if k.function is None:
            steps.append(_step(k, data_format, keras_version, channels))
            policies[k.name] = dtype_policy(k.config) or "float32"  # a layer computes in its policy
            continue
        try:
            op_step = operations.step(k, input_dtype, policies)
        except operations.OperationError:
            raise StageError(operations.refusal(k, "between the input and the backbone", input_dtype,
                                                policies)) from None
        if op_step is not None:  # None: a cast that changes nothing
            steps.append(op_step)
        policies[k.name] = "float32"  # a converted operation computes in float32 (a cast: to it, from uint8...)
    hw = tuple(input_hw) if input_hw else (None, None)
    try:
        size = output_size(steps, hw)
    except ValueError as exc:  # "x: layer L (Class) cannot take HxW images: why"
        raise StageError(f"{str(exc).removeprefix('x: ')} (the model's input size)") from None
    _random_crop_determined(steps, hw, keras_version)
    return steps, size
