"""The input stage: preprocessing a Keras model does inside its graph, before the backbone.

Real fine-tuned models take raw pixels and preprocess them in-graph (the
keras.io transfer-learning recipe puts ``Rescaling(1/127.5, offset=-1)`` before
the backbone). The converter records those layers here, in order, and
``model(x)`` applies them, so the converted model takes exactly what the Keras
model takes. Each step is a small JSON-able dict, stored in the ``.npz``
manifest under ``"input_stage"``::

    {"kind": "rescaling", "name": "rescaling", "scale": 0.00784313725490196, "offset": -1.0}
    {"kind": "normalization", "name": "normalization", "mean": [...], "variance": [...], "epsilon": 1e-07}
    {"kind": "arithmetic", "name": "true_divide", "op": "divide", "scalar": 127.5, "scalar_first": false,
     "keras_class": "TrueDivide"}

Equations (per channel ``c``, ``x`` of shape ``(N, H, W, C)``, ``C`` the model's channels; scale,
offset, mean and variance are scalars or length-``C`` vectors broadcast over the channels)::

    rescaling:      y = x * scale + offset                                   (keras.layers.Rescaling)
    normalization:  y = (x - mean) / max(sqrt(variance), epsilon)           (keras.layers.Normalization)
                    y = mean + x * max(sqrt(variance), epsilon)    with "invert": true (Normalization(invert=True))
    arithmetic:     y = x <op> scalar, or scalar <op> x when scalar_first    (preprocess_input's x / 127.5, x - 1.0
                    <op>: + (add), - (subtract), * (multiply), / (divide)     on a symbolic tensor: operation nodes)

An integer input dtype (a serving model's ``Input(dtype="uint8")``) is the first step::

    {"kind": "cast", "name": "input_layer", "dtype": "uint8"}     (int8, uint16 and int16 too)
    cast:           y = trunc(x), refused unless every trunc(x) fits the dtype  (Keras casts what it is fed)

Keras casts whatever it is fed to the Input's dtype, so a fractional pixel is
truncated towards zero: measured in Keras 3 and tf_keras (model.predict and
model(x) alike), 0.6 -> 0, 254.9 -> 254, -0.5 -> 0. Outside the dtype's range
TensorFlow's float-to-integer conversion is undefined in C++: on x86-64 it wrapped
(256.7 -> 0, -1.5 -> 255, 300.2 -> 44, 1e10 -> 0 for uint8), another CPU may
saturate, so the file does not determine the answer and ``model(x)`` refuses
such values, naming the range. Every value of these dtypes is a float32, so
the truncated values go on exactly.

The other steps are computed in the model's dtype, in this order, as Keras computes them (no
folding of the two into one multiply-add, which would round differently; a
division stays a division, never a multiplication by the reciprocal).
``epsilon`` is Keras' ``backend.epsilon()`` (1e-7); the converter refuses a
channel whose ``sqrt(variance)`` does not exceed it, where the result would
depend on a setting the file does not record.

Geometry steps bring an image to the backbone's input size, as the Keras that
wrote the file computes them at inference (TensorFlow backend; the resampling is
:mod:`npxception.ops.resize`, ``tf.image.resize`` with half-pixel centres)::

    {"kind": "resizing", "name": ..., "height": h, "width": w, "interpolation": "bilinear" | "nearest",
     "crop_to_aspect_ratio": false, "pad_to_aspect_ratio": false, "fill_value": 0.0, "keras": "keras3"}
    {"kind": "center_crop" | "random_crop", "name": ..., "height": h, "width": w, "keras": "tf_keras"}

``keras`` says which implementation wrote the layer ("keras3" or "tf_keras"; the
converter reads it from the layer's config), because they differ (``x`` of size
``H x W``, target ``h x w``)::

    resizing:     crop (or pad) to h:w's aspect if asked, then resize to h x w         (both)
    center_crop:  H >= h and W >= w: x[(H - h) // 2 : ... + h, (W - w) // 2 : ... + w]  (both)
                  else tf_keras: smart_resize (the largest centred h:w window, bilinear)
                  else Keras 3: refused. Its eager call resizes, but model.predict
                  slices a partial window or resizes depending on which input sizes it
                  traced first, so the file does not determine the answer.
    random_crop:  tf_keras: smart_resize at every size (training=False never crops at random); Keras
                  before 2.7 resized to the shorter side and centre-cropped, with the same
                  config, so the converter needs a recorded version >= 2.7 to convert it
                  off its target size (weights_tools.preprocessing)
                  Keras 3: only at its target size, refused at any other. Its inference path returns the input
                  unchanged (transform_images when not training), although the layer
                  declares h x w outputs: a nested backbone built for h x w then refuses
                  the input in Keras 3 itself, an inline one runs at H x W.

A model records the input size of the Keras model it came from as
``source_input_shape`` (``None`` per variable axis, as ``Input((None, None, 3))``
writes it); ``input_shape`` is the backbone's. ``model(x)`` takes every size the
source takes and the stage brings it to the backbone's size; a fixed source size
admits that size only. A manifest without ``source_input_shape`` (written before
it existed, format 3) gets that format's rule: the source size is the backbone's, where every
geometry step is an identity; a geometry step without ``keras`` (same age)
converts only images already at its target size.

``predict()`` feeds a model with a variable source size and a geometry stage
each photo at its own size (``img_to_array(load_img(path))``, no ``target_size``),
which the stage brings to the backbone's size, as a Keras user's
``model.predict(img_to_array(load_img(path))[None])`` does; other models get
photos resized to their input size by ``load_img``'s pipeline (``nearest``).

Every step that is not geometry is *pixelwise*: each output pixel is computed from
the same input pixel alone, so it commutes with any gather of pixels. A photo at its
own size is therefore staged from only the pixels the first geometry step reads
(:func:`apply_gathered`: two rows and two columns per output coordinate for a
bilinear resize, one for nearest, a window for a crop), converted to float and
preprocessed there, not over the whole photo: the same bits as :func:`apply` on the
whole image, its readable twin (docs/performance.md, "Photos at their own size").

A model whose stage holds a rescaling, a normalization or arithmetic takes raw pixels in
``[0, 255]`` (what ``img_to_array(load_img(path))`` gives), so ``predict()``
feeds it pixels instead of applying ``preprocess_input`` a second time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import CONFIG
from .untrusted import short_repr
from .ops.resize import (INTERPOLATIONS, aspect_crop_box, compact, coordinates, pad_and_resize, resample,
                         resize)

# Steps that preprocess each pixel alone (module docstring): a model with one takes raw pixels.
PIXELWISE = ("cast", "rescaling", "normalization", "arithmetic")
# An integer Input's dtypes the stage casts to: every value of each is exact in float32 (module docstring).
INTEGER_DTYPES = ("uint8", "int8", "uint16", "int16")
# arithmetic's ops, as Keras computes them: elementwise in the tensor's dtype (numpy's true_divide is IEEE division)
ARITHMETIC = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.true_divide}
SYMBOL = {"add": "+", "subtract": "-", "multiply": "*", "divide": "/"}
GEOMETRY = ("resizing", "center_crop", "random_crop")
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): Normalization's floor on sqrt(variance)
# Which implementation wrote a geometry layer: Keras 3 and tf_keras differ at inference (module docstring).
KERAS = ("keras3", "tf_keras")
CLASS = {"cast": "InputLayer", "rescaling": "Rescaling", "normalization": "Normalization", "resizing": "Resizing",
         "center_crop": "CenterCrop", "random_crop": "RandomCrop"}
# Real models hold one to three preprocessing layers; a manifest listing thousands
# would make every model(x) call resample thousands of times.
MAX_STEPS = 16


def _vector(value, what: str, channels: int) -> float | list[float]:
    """A finite scalar or a list of ``channels`` finite floats, one per input channel."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        values = [float(value)]
    elif isinstance(value, (list, tuple)) and len(value) == channels:
        values = [float(v) for v in value]
    else:
        raise ValueError(f"{what}: expected a number or {channels} per-channel numbers (the model's input "
                         f"has {channels} channels), found {short_repr(value)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what}: contains NaN or Inf")
    return values[0] if len(values) == 1 else values


def _size(value) -> bool:
    """A target side: an int in [1, CONFIG.max_input_size]. The bound is the backbone's own (an
    image of that side already needs ~1 GB of activations): a manifest cannot make a step allocate more."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= CONFIG.max_input_size


def _arithmetic(step, where) -> dict:
    op, scalar, first, cls = (step.get(k) for k in ("op", "scalar", "scalar_first", "keras_class"))
    if op not in ARITHMETIC:
        raise ValueError(f"{where}.op: expected one of {tuple(ARITHMETIC)}, found {op!r}")
    if isinstance(scalar, bool) or not isinstance(scalar, (int, float)) or not math.isfinite(scalar):
        raise ValueError(f"{where}.scalar: expected a finite number, found {scalar!r}")
    if not isinstance(first, bool) or not isinstance(cls, str):
        raise ValueError(f"{where}: expected a boolean scalar_first and a keras_class name, found {first!r}, {cls!r}")
    if op == "divide" and not first and scalar == 0:
        raise ValueError(f"{where}: layer {step['name']} divides the image by zero (x / {scalar!r}), which gives "
                         "Inf or NaN at every pixel")
    return {"kind": "arithmetic", "name": step["name"], "op": op, "scalar": float(scalar), "scalar_first": first,
            "keras_class": cls}


def _geometry(step, where) -> dict:
    h, w = step.get("height"), step.get("width")
    if not (_size(h) and _size(w)):
        raise ValueError(f"{where}: expected int height and width in [1, {CONFIG.max_input_size}], "
                         f"found {h!r}, {w!r}")
    keras = step.get("keras")
    if keras is not None and keras not in KERAS:
        raise ValueError(f"{where}.keras: expected one of {KERAS}, found {keras!r}")
    out = {"kind": step["kind"], "name": step["name"], "height": h, "width": w}
    if step["kind"] == "resizing":
        interpolation = step.get("interpolation", "bilinear")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"{where}.interpolation: expected one of {INTERPOLATIONS}, found {interpolation!r}")
        crop, pad = step.get("crop_to_aspect_ratio", False), step.get("pad_to_aspect_ratio", False)
        if not (isinstance(crop, bool) and isinstance(pad, bool)) or (crop and pad):
            raise ValueError(f"{where}: crop_to_aspect_ratio and pad_to_aspect_ratio must be booleans, "
                             f"not both true, found {crop!r}, {pad!r}")
        if pad and keras != "keras3":
            raise ValueError(f"{where}: pad_to_aspect_ratio exists in Keras 3 only, found keras={keras!r}")
        fill = step.get("fill_value", 0.0)
        if isinstance(fill, bool) or not isinstance(fill, (int, float)) or not math.isfinite(fill):
            raise ValueError(f"{where}.fill_value: expected a finite number, found {fill!r}")
        out.update(interpolation=interpolation, crop_to_aspect_ratio=crop, pad_to_aspect_ratio=pad,
                   fill_value=float(fill))
    out["keras"] = keras
    return out


def validate(steps, channels: int) -> list[dict]:
    """Check a stage read from a manifest or built by the converter; return it as plain dicts.

    ``channels``: the model's input channels, the length of a per-channel scale, mean or variance."""
    steps = list(steps or [])
    if len(steps) > MAX_STEPS:
        raise ValueError(f"input_stage: at most {MAX_STEPS} steps, found {len(steps)}")
    out = []
    for i, step in enumerate(steps):
        where = f"input_stage[{i}]"
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise ValueError(f"{where}: expected a dict with a 'kind' and a 'name', found {step!r}")
        kind = step.get("kind")
        if kind == "rescaling":
            out.append({"kind": kind, "name": step["name"], "scale": _vector(step.get("scale"), f"{where}.scale", channels),
                        "offset": _vector(step.get("offset", 0.0), f"{where}.offset", channels)})
        elif kind == "normalization":
            var = _vector(step.get("variance"), f"{where}.variance", channels)
            eps = float(step.get("epsilon", KERAS_EPSILON))
            if min(np.atleast_1d(var)) < 0:
                raise ValueError(f"{where}.variance: negative variance {var!r}")
            invert = step.get("invert", False)
            if not isinstance(invert, bool):
                raise ValueError(f"{where}.invert: expected true or false, found {invert!r}")
            out.append({"kind": kind, "name": step["name"], "mean": _vector(step.get("mean"), f"{where}.mean", channels),
                        "variance": var, "epsilon": eps, **({"invert": True} if invert else {})})
        elif kind == "arithmetic":
            out.append(_arithmetic(step, where))
        elif kind == "cast":
            if i != 0 or step.get("dtype") not in INTEGER_DTYPES:
                raise ValueError(f"{where}: a cast is the stage's first step, to one of {INTEGER_DTYPES}; "
                                 f"found dtype {step.get('dtype')!r} at step {i}")
            out.append({"kind": kind, "name": step["name"], "dtype": step["dtype"]})
        elif kind in GEOMETRY:
            out.append(_geometry(step, where))
        else:
            raise ValueError(f"{where}: unknown kind {kind!r}; expected one of {PIXELWISE + GEOMETRY}")
    return out


def check_dtype(steps, dtype) -> None:
    """Every number a step computes with must be finite in the model's ``dtype`` (the stage computes in it):
    1e300 is a finite float64 but Inf in float32, and would make every pixel Inf or NaN."""
    top = float(np.finfo(dtype).max)
    for i, step in enumerate(steps):
        for key in ("scalar", "scale", "offset", "mean", "variance"):
            if key in step and not all(abs(v) <= top for v in np.atleast_1d(step[key])):
                raise ValueError(f"input_stage[{i}].{key}: layer {step['name']}'s {step[key]!r} is not a "
                                 f"finite {np.dtype(dtype).name} number (at most {top:.9g} in magnitude), the "
                                 "dtype the model computes in")


def _check_finite(step, x: np.ndarray) -> np.ndarray:
    """``x``, the output of ``step``, unless it holds NaN or Inf: the input was finite, so ``step`` made
    them (c / x at a zero pixel, an overflow), and the backbone would turn them into NaN scores."""
    if not np.isfinite(x).all():
        raise ValueError(f"x: the input stage's step {describe(step)} gives NaN or Inf on "
                         "this input; the model computes no scores from them")
    return x


def cast(step, x: np.ndarray) -> np.ndarray:
    """What Keras feeds an integer Input ``step["dtype"]`` (module docstring): ``trunc(x)``, in ``x``'s dtype
    (a float64 batch is truncated before any rounding to float32, as Keras casts it); a new array.

    Raises ValueError for NaN, Inf or a value whose truncation the dtype does not hold.
    """
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise ValueError("x: contains NaN or Inf")
    info = np.iinfo(step["dtype"])
    t = np.trunc(x) if x.dtype.kind == "f" else x
    if t.size and (t.min() < info.min or t.max() > info.max):
        bad = x.min() if t.min() < info.min else x.max()
        raise ValueError(f"x: the model's input {step['name']} is {step['dtype']}, and Keras casts what it is fed "
                         f"to it, truncating towards zero; {bad!r} does not truncate into [{info.min}, {info.max}], "
                         "where the conversion is undefined (TensorFlow wraps it on x86-64, another CPU may "
                         f"saturate). Feed values in ({info.min - 1}, {info.max + 1}), e.g. clipped pixels")
    return t.copy() if t is x else t


def takes_pixels(steps) -> bool:
    """True when the stage casts to an integer dtype, rescales, normalises or does arithmetic: the model's
    input is raw pixels in [0, 255]."""
    return any(s["kind"] in PIXELWISE for s in steps)


def has_geometry(steps) -> bool:
    return any(s["kind"] in GEOMETRY for s in steps)


def _refuse(step, hw, why) -> ValueError:
    size = "x".join("any" if d is None else str(d) for d in hw)
    return ValueError(f"x: layer {step['name']} ({CLASS[step['kind']]}) cannot take {size} images: {why}")


def _step_size(step, hw) -> tuple:
    """The size a geometry step gives an ``hw`` input (``None``: any size), or a ValueError naming it."""
    target = (step["height"], step["width"])
    if tuple(hw) == target:
        return target  # every geometry step is an identity at its target size
    if step["keras"] is None:
        raise _refuse(step, hw, f"the weight file does not record which Keras wrote it (its step has no 'keras' "
                                f"field: written before npxception computed geometry), so only {target[0]}x"
                                f"{target[1]} images are converted exactly; re-convert the Keras file")
    if step["kind"] == "random_crop" and step["keras"] == "keras3":
        raise _refuse(step, hw, f"Keras 3's RandomCrop returns its input unchanged at inference although it "
                                f"declares {target[0]}x{target[1]} outputs, so the layers after it run at a size "
                                f"the model does not declare (a nested backbone built for {target[0]}x{target[1]} "
                                f"refuses it in Keras 3 too); give the model Input(shape=({target[0]}, "
                                f"{target[1]}, C))")
    if step["kind"] == "center_crop" and step["keras"] == "keras3" and None not in hw and (
            hw[0] < target[0] or hw[1] < target[1]):
        raise _refuse(step, hw, f"Keras 3 crops images of at least {target[0]}x{target[1]}; for a smaller one "
                                "its model.predict slices a partial window or resizes, depending on which sizes "
                                "it traced first, so the file does not determine the answer. Give images of "
                                f"at least {target[0]}x{target[1]}")
    if step["kind"] in ("center_crop", "random_crop") or step.get("crop_to_aspect_ratio"):
        if step["keras"] == "tf_keras" and None not in hw:
            try:
                aspect_crop_box(*hw, *target, at_least_one=False)
            except ValueError as exc:
                raise _refuse(step, hw, f"tf_keras' smart_resize fails on it ({exc})") from None
    return target


def output_size(steps, hw) -> tuple:
    """``(H', W')`` after the stage for an ``(H, W)`` input (``None`` entries: any size, then maybe ``None``).

    Raises ValueError naming the layer, the size and the sizes it takes when the
    Keras that wrote it would not compute an answer the file determines.
    """
    hw = tuple(hw)
    for step in steps:
        if step["kind"] in GEOMETRY:
            hw = _step_size(step, hw)
    return hw


@dataclass(frozen=True)
class Geometry:
    """What one geometry step does to an image of a given size: read a window of it, then resample the
    window to ``size`` (or pad it towards ``size``'s aspect first), or keep it as it is."""

    window: tuple[int, int, int, int]  # (top, left, height, width): the part of the input the step reads
    size: tuple[int, int]  # (h, w): the output
    interpolation: str | None  # None: the window is the output (a crop, or the identity at the target size)
    pad_fill: float | None = None  # Keras 3's pad_to_aspect_ratio: its fill_value; None: no padding


def geometry_at(step, hw) -> Geometry:
    """One geometry step on an ``(H, W)`` input whose size :func:`_step_size` accepted (module docstring)."""
    in_h, in_w = hw
    h, w = step["height"], step["width"]
    whole = (0, 0, in_h, in_w)
    if (in_h, in_w) == (h, w):
        return Geometry(whole, (h, w), None)  # every geometry step is an identity at its target size
    if step["kind"] == "center_crop" and in_h >= h and in_w >= w:
        return Geometry(((in_h - h) // 2, (in_w - w) // 2, h, w), (h, w), None)
    interpolation = step.get("interpolation", "bilinear")  # smart_resize's is bilinear
    if step["kind"] != "resizing" or step["crop_to_aspect_ratio"]:
        return Geometry(aspect_crop_box(in_h, in_w, h, w, at_least_one=step["keras"] == "keras3"), (h, w),
                        interpolation)
    return Geometry(whole, (h, w), interpolation, step["fill_value"] if step["pad_to_aspect_ratio"] else None)


def _geometry_apply(step, x: np.ndarray) -> np.ndarray:
    """One geometry step on a ``(N, H, W, C)`` batch: the readable twin of what :func:`apply_gathered` reads."""
    g = geometry_at(step, x.shape[1:3])
    top, left, ch, cw = g.window
    x = x[:, top:top + ch, left:left + cw]
    if g.interpolation is None:
        return x
    if g.pad_fill is not None:
        # never materialised: a manifest's earlier step can make the padded image gigabytes
        return pad_and_resize(x, g.size, g.interpolation, g.pad_fill)
    return resize(x, g.size, g.interpolation)


def _pixelwise_apply(step, x: np.ndarray) -> np.ndarray:
    """One step that is not geometry: each output pixel from the same input pixel (module docstring)."""
    dt = x.dtype
    if step["kind"] == "cast":
        return cast(step, x)
    if step["kind"] == "rescaling":
        return x * np.asarray(step["scale"], dt) + np.asarray(step["offset"], dt)
    if step["kind"] == "normalization":
        std = np.maximum(np.sqrt(np.asarray(step["variance"], dt)), dt.type(step["epsilon"]))
        if step.get("invert"):  # Keras: mean + x * std, a multiply then an add (no fused multiply-add)
            return np.asarray(step["mean"], dt) + x * std
        return (x - np.asarray(step["mean"], dt)) / std
    if step["kind"] == "arithmetic":
        c = np.asarray(step["scalar"], dt)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # as TF: c / 0 is inf
            return ARITHMETIC[step["op"]](*((c, x) if step["scalar_first"] else (x, c)))
    raise ValueError(f"input stage: no computation for a step of kind {step['kind']!r}")


def apply(steps, x: np.ndarray, *, finite: bool = False) -> np.ndarray:
    """Run the stage on a checked ``(N, H, W, C)`` batch; a new array, ``x`` is never modified.

    The caller checked the size with :func:`output_size`. ``finite``: raise ValueError naming the
    first step whose output holds NaN or Inf (``model(x)``'s check; without it, c / 0 is Inf as in Keras).
    """
    for _, x in each_step(steps, x, finite=finite):
        pass
    return np.ascontiguousarray(x)


def each_step(steps, x: np.ndarray, *, finite: bool = False):
    """:func:`apply` one step at a time: ``(step, its output)`` for each (capture keeps some of them)."""
    for s in steps:
        x = _geometry_apply(s, x) if s["kind"] in GEOMETRY else _pixelwise_apply(s, x)
        if finite:
            _check_finite(s, x)
        yield s, x


def _reads(g: Geometry):
    """``(rows, cols, interpolation)``: each axis' ``(i0, i1, frac)`` in the input's coordinates (-1: the
    padding) and the interpolation, such that ``resample(x, rows, cols, interpolation, fill)`` is
    :func:`_geometry_apply`'s result."""
    top, left, ch, cw = g.window
    if g.interpolation is None:  # a window: each output reads one input pixel
        return _identity(top, ch), _identity(left, cw), "nearest"
    rows, cols = coordinates((ch, cw), g.size, g.interpolation, pad=g.pad_fill is not None)
    return _shift(rows, top), _shift(cols, left), g.interpolation


def _identity(start: int, length: int):
    i = np.arange(start, start + length)
    return i, i, np.zeros(length, np.float32)


def _shift(axis, offset: int):
    i0, i1, frac = axis
    return np.where(i0 >= 0, i0 + offset, -1), np.where(i1 >= 0, i1 + offset, -1), frac


def apply_gathered(steps, hw, read, feed, *, finite: bool = False) -> np.ndarray:
    """``apply(steps, feed(x)[None])`` for one ``H x W`` image ``x`` read piecewise, never whole.

    hw: ``(H, W)``, a size :func:`output_size` accepted.
    read(rows, cols): ``x[rows][:, cols]``, ``(len(rows), len(cols), C)``, for sorted distinct int arrays.
    feed: a pixelwise function of an array of pixels (predict's cast to float and ``preprocess_input``).
    finite: as :func:`apply`'s.
    Returns ``(1, h, w, C)`` after the whole stage.

    The stage's first geometry step reads at most two rows and two columns per output
    coordinate (bilinear; nearest and crops one), whatever ``H x W``: those are read
    (:func:`npxception.ops.resize.compact`), fed, put through the steps before it, and
    resampled. ``feed`` and those steps are pixelwise, so they compute on each gathered
    pixel exactly what they compute on it in the whole image, the padding is filled
    after them as in :func:`apply`, and the steps after it see the same array: the
    same bits as the whole-image path, which stays as its readable twin (the two are
    compared bit for bit in tests/test_input_stage.py). A new step kind that is not
    geometry must be pixelwise to be computed here.
    """
    first = next((i for i, s in enumerate(steps) if s["kind"] in GEOMETRY), None)
    if first is None:  # nothing to gather: every pixel is read
        return apply(steps, feed(read(np.arange(hw[0]), np.arange(hw[1])))[None], finite=finite)
    g = geometry_at(steps[first], hw)
    rows, cols, interpolation = _reads(g)
    kept_rows, rows = compact(rows)
    kept_cols, cols = compact(cols)
    x = feed(read(kept_rows, kept_cols))[None]  # (1, <= 2h, <= 2w, C)
    for s in steps[:first]:
        x = _pixelwise_apply(s, x)
        if finite:
            _check_finite(s, x)
    fill = None if g.pad_fill is None else x.dtype.type(g.pad_fill)
    x = resample(x, rows, cols, interpolation, fill)
    if finite:
        _check_finite(steps[first], x)
    return apply(steps[first + 1:], x, finite=finite)


def describe(step) -> str:
    """One line for ``summary()``: the step's Keras name and its formula or options."""
    def num(v):
        return f"{v:.6g}" if isinstance(v, float) else "[" + ", ".join(f"{a:.6g}" for a in v) + "]"

    if step["kind"] == "cast":
        info = np.iinfo(step["dtype"])
        return f"{step['name']} (InputLayer, dtype {step['dtype']}): trunc(x), x in ({info.min - 1}, {info.max + 1})"
    if step["kind"] == "rescaling":
        return f"{step['name']} (Rescaling): x * {num(step['scale'])} + {num(step['offset'])}"
    if step["kind"] == "arithmetic":
        operands = (f"{step['scalar']:.9g}", "x")
        a, b = operands if step["scalar_first"] else operands[::-1]
        return f"{step['name']} ({step['keras_class']}): {a} {SYMBOL[step['op']]} {b}"
    if step["kind"] == "normalization":
        std = f"max(sqrt({num(step['variance'])}), {step['epsilon']:g})"
        if step.get("invert"):
            return f"{step['name']} (Normalization, invert=True): {num(step['mean'])} + x * {std}"
        return f"{step['name']} (Normalization): (x - {num(step['mean'])}) / {std}"
    text = f"{step['name']} ({CLASS[step['kind']]}): {step['height']}x{step['width']}"
    if step["kind"] == "resizing":
        text += f", interpolation={step['interpolation']}"
        for flag in ("crop_to_aspect_ratio", "pad_to_aspect_ratio"):
            if step[flag]:
                text += f", {flag}=True" + (f" (fill {step['fill_value']:g})" if flag[0] == "p" else "")
    semantics = {"keras3": "Keras 3", "tf_keras": "tf_keras", None: "writer unrecorded: identity at that size"}
    return text + f" [{semantics[step['keras']]}]"
