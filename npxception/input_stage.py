"""The input stage: preprocessing a Keras model does inside its graph, before the backbone.

Real fine-tuned models take raw pixels and preprocess them in-graph (the
keras.io transfer-learning recipe puts ``Rescaling(1/127.5, offset=-1)`` before
the backbone). The converter records those layers here, in order, and
``model(x)`` applies them, so the converted model takes exactly what the Keras
model takes. Each step is a small JSON-able dict, stored in the ``.npz``
manifest under ``"input_stage"``::

    {"kind": "rescaling", "name": "rescaling", "scale": 0.00784313725490196, "offset": -1.0}
    {"kind": "normalization", "name": "normalization", "mean": [...], "variance": [...], "epsilon": 1e-07}
    {"kind": "resizing" | "center_crop" | "random_crop", "name": ..., "height": H, "width": W}

Equations (per channel ``c``, ``x`` of shape ``(N, H, W, 3)``; scale, offset,
mean and variance are scalars or length-3 vectors broadcast over the channels)::

    rescaling:      y = x * scale + offset                                   (keras.layers.Rescaling)
    normalization:  y = (x - mean) / max(sqrt(variance), epsilon)           (keras.layers.Normalization)

computed in the model's dtype, in this order, as Keras computes them (no
folding of the two into one multiply-add, which would round differently).
``epsilon`` is Keras' ``backend.epsilon()`` (1e-7); the converter refuses a
channel whose ``sqrt(variance)`` does not exceed it, where the result would
depend on a setting the file does not record.

Geometry steps (``Resizing``, ``CenterCrop``, ``RandomCrop``) are identities at
their target size, which becomes the model's input size: ``model(x)`` takes
exactly ``(height, width)`` images (where Keras' layers change nothing) and
``predict()`` brings photos to that size with ``load_img``'s pipeline
(``nearest`` by default). They are recorded so that ``summary()`` shows them.

A model whose stage holds a rescaling or a normalization takes raw pixels in
``[0, 255]`` (what ``img_to_array(load_img(path))`` gives), so ``predict()``
feeds it pixels instead of applying ``preprocess_input`` a second time.
"""

from __future__ import annotations

import math

import numpy as np

AFFINE = ("rescaling", "normalization")
GEOMETRY = ("resizing", "center_crop", "random_crop")
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): Normalization's floor on sqrt(variance)


def _vector(value, what: str) -> float | list[float]:
    """A finite scalar or a length-3 list of finite floats."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [float(value)]
    elif isinstance(value, (list, tuple)) and len(value) == 3:
        values = [float(v) for v in value]
    else:
        raise ValueError(f"{what}: expected a number or 3 per-channel numbers, found {value!r}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: contains NaN or Inf")
    return values[0] if len(values) == 1 else values


def validate(steps) -> list[dict]:
    """Check a stage read from a manifest or built by the converter; return it as plain dicts."""
    out = []
    for i, step in enumerate(list(steps or [])):
        where = f"input_stage[{i}]"
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise ValueError(f"{where}: expected a dict with a 'kind' and a 'name', found {step!r}")
        kind = step.get("kind")
        if kind == "rescaling":
            out.append({"kind": kind, "name": step["name"], "scale": _vector(step.get("scale"), f"{where}.scale"),
                        "offset": _vector(step.get("offset", 0.0), f"{where}.offset")})
        elif kind == "normalization":
            var = _vector(step.get("variance"), f"{where}.variance")
            eps = float(step.get("epsilon", KERAS_EPSILON))
            if min(np.atleast_1d(var)) < 0:
                raise ValueError(f"{where}.variance: negative variance {var!r}")
            out.append({"kind": kind, "name": step["name"], "mean": _vector(step.get("mean"), f"{where}.mean"),
                        "variance": var, "epsilon": eps})
        elif kind in GEOMETRY:
            h, w = step.get("height"), step.get("width")
            if not all(isinstance(d, int) and d > 0 for d in (h, w)):
                raise ValueError(f"{where}: expected positive int height and width, found {h!r}, {w!r}")
            out.append({"kind": kind, "name": step["name"], "height": h, "width": w})
        else:
            raise ValueError(f"{where}: unknown kind {kind!r}; expected one of {AFFINE + GEOMETRY}")
    return out


def takes_pixels(steps) -> bool:
    """True when the stage rescales or normalises: the model's input is raw pixels in [0, 255]."""
    return any(s["kind"] in AFFINE for s in steps)


def apply(steps, x: np.ndarray) -> np.ndarray:
    """Run the stage on a checked ``(N, H, W, 3)`` batch; a new array, ``x`` is never modified."""
    dt = x.dtype
    for s in steps:
        if s["kind"] == "rescaling":
            x = x * np.asarray(s["scale"], dt) + np.asarray(s["offset"], dt)
        elif s["kind"] == "normalization":
            std = np.maximum(np.sqrt(np.asarray(s["variance"], dt)), dt.type(s["epsilon"]))
            x = (x - np.asarray(s["mean"], dt)) / std
        # geometry steps are identities at the model's input size, which _check_input enforces
    return x


def describe(step) -> str:
    """One line for ``summary()``: the step's Keras name and its formula."""
    def num(v):
        return f"{v:.6g}" if isinstance(v, float) else "[" + ", ".join(f"{a:.6g}" for a in v) + "]"

    if step["kind"] == "rescaling":
        return f"{step['name']} (Rescaling): x * {num(step['scale'])} + {num(step['offset'])}"
    if step["kind"] == "normalization":
        return (f"{step['name']} (Normalization): (x - {num(step['mean'])}) / max(sqrt({num(step['variance'])}), "
                f"{step['epsilon']:g})")
    cls = {"resizing": "Resizing", "center_crop": "CenterCrop", "random_crop": "RandomCrop"}[step["kind"]]
    return f"{step['name']} ({cls}): {step['height']}x{step['width']}, an identity at the model's input size"
