"""Keras preprocessing and augmentation layers, as the converter reads them.

Real models carry layers that do nothing at inference, and layers that are
part of the model's contract with its input (keras.io's transfer-learning
recipe: ``RandomFlip`` and ``RandomRotation``, then ``Rescaling(1/127.5,
offset=-1)``, then the backbone). They are sorted here into:

* **identities at inference** (:data:`IDENTITY`): Keras' ``call(x,
  training=False)`` returns ``x`` unchanged. The converter routes around them,
  wherever they sit.
* **the input stage** (:data:`STAGE`): ``Rescaling`` and ``Normalization``
  (affine, applied by ``model(x)``), ``Resizing``, ``CenterCrop`` and
  ``RandomCrop`` (geometry: identities at their target size, which becomes the
  model's input size). They must form a chain between the model's input and the
  backbone; :func:`input_stage` turns that chain into
  :mod:`npxception.input_stage` steps, refusing what it cannot reproduce exactly.

Anything else (``Lambda``, custom classes, other augmentation layers) is refused
by :mod:`weights_tools.mapping`, naming the layer and the way out.
"""

from __future__ import annotations

import numpy as np

from npxception.input_stage import GEOMETRY, KERAS_EPSILON

from .graph import KLayer

# Keras and tf_keras class names whose inference path is `return inputs`.
IDENTITY = frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianDropout", "AlphaDropout", "GaussianNoise",
    "ActivityRegularization", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
    "RandomContrast", "RandomBrightness",
})
STAGE = {"Rescaling": "rescaling", "Normalization": "normalization", "Resizing": "resizing",
         "CenterCrop": "center_crop", "RandomCrop": "random_crop"}
_CLASS = {kind: cls for cls, kind in STAGE.items()}


class StageError(ValueError):
    """A preprocessing layer the converter cannot reproduce exactly; the message says why."""


def _axis_is_channels(axis) -> bool:
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    return axis in (-1, 3, None)


def _per_channel(a, what) -> float | list[float]:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 1:
        return float(a.reshape(()))
    if a.size != 3 or a.shape[-1] != 3:
        raise StageError(f"{what}: expected one value per RGB channel, found shape {a.shape}")
    return [float(v) for v in a.reshape(3)]


def _step(k: KLayer) -> dict:
    cfg = k.config or {}
    kind = STAGE[k.class_name]
    what = f"layer {k.name} ({k.class_name})"
    if kind == "rescaling":
        return {"kind": kind, "name": k.name, "scale": _per_channel(cfg.get("scale", 1.0), f"{what} scale"),
                "offset": _per_channel(cfg.get("offset", 0.0), f"{what} offset")}
    if kind == "normalization":
        if cfg.get("invert"):
            raise StageError(f"{what}: invert=True (de-normalisation) is not an input preprocessing")
        if not _axis_is_channels(cfg.get("axis", -1)):
            raise StageError(f"{what}: axis {cfg.get('axis')!r}; only per-channel (-1) statistics convert")
        if k.weights:  # adapted: [mean, variance, count]
            if len(k.weights) != 3:
                raise StageError(f"{what}: expected the arrays mean, variance and count, found {len(k.weights)}")
            mean, var = k.weights[0], k.weights[1]
        elif cfg.get("mean") is not None and cfg.get("variance") is not None:
            mean, var = cfg["mean"], cfg["variance"]
        else:
            raise StageError(f"{what}: neither adapted statistics nor mean/variance in its config")
        mean, var = _per_channel(mean, f"{what} mean"), _per_channel(var, f"{what} variance")
        if not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise StageError(f"{what}: its statistics contain NaN or Inf")
        if np.min(np.sqrt(np.maximum(var, 0))) <= KERAS_EPSILON:
            raise StageError(f"{what}: a variance of {np.min(var):g} makes the output depend on Keras' "
                             "epsilon setting, which the file does not record")
        return {"kind": kind, "name": k.name, "mean": mean, "variance": var, "epsilon": KERAS_EPSILON}
    h, w = cfg.get("height"), cfg.get("width")
    if not all(isinstance(d, int) and d > 0 for d in (h, w)):
        raise StageError(f"{what}: expected int height and width in its config, found {h!r}, {w!r}")
    return {"kind": kind, "name": k.name, "height": h, "width": w}


def input_stage(chain: list[KLayer], input_hw) -> tuple[list[dict], tuple | None]:
    """``(steps, (H, W) or None)`` for the stage layers between the input and the backbone.

    ``input_hw`` is the model input's ``(H, W)`` (``None`` entries for a
    variable size). A geometry layer at a fixed input size must be an identity
    there (its target is that size); at a variable size its target becomes the
    model's input size. Raises :class:`StageError` otherwise.
    """
    steps = []
    size = tuple(input_hw) if input_hw and None not in input_hw else None
    for k in chain:
        step = _step(k)
        if step["kind"] in GEOMETRY:
            target = (step["height"], step["width"])
            if size is None and step["kind"] == "random_crop":
                raise StageError(f"layer {k.name} (RandomCrop) at a variable input size: its inference path "
                                 "resizes and crops unless the input is already "
                                 f"{target[0]}x{target[1]}; give the model Input(shape=({target[0]}, "
                                 f"{target[1]}, 3))")
            if size is not None and size != target:
                raise StageError(f"layer {k.name} ({_CLASS[step['kind']]}) turns {size[0]}x{size[1]} images into "
                                 f"{target[0]}x{target[1]} inside the model; npxception does not reproduce "
                                 "in-graph resampling. Rebuild the model without it, with Input(shape="
                                 f"({target[0]}, {target[1]}, 3)), and resize images before the model")
            size = target
        steps.append(step)
    return steps, size
