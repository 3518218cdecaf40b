"""``predict(images)``: photos in, labels out, with only numpy, numba, Pillow and h5py.

The pipeline is Keras' own, so results can be compared like with like:
``load_img`` (Pillow decode, RGB, ``nearest`` resize) -> ``img_to_array`` ->
``preprocess_input`` (x / 127.5 - 1) -> the model -> ``decode_predictions``.
"""

from __future__ import annotations

import os
import pathlib
import sys
import threading
from dataclasses import dataclass

import numpy as np

from .config import CONFIG

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

_MODELS: dict = {}  # weights key -> model: weights are loaded once per process
_MODELS_LOCK = threading.Lock()


@dataclass(frozen=True)
class Prediction:
    index: int  # class index in the model's output
    label: str | None  # ImageNet wnid ('n01484850'), or None
    name: str | None  # human-readable name ('great_white_shark'), or None
    score: float

    def as_tuple(self):
        """Keras' ``decode_predictions`` tuple, or ``(index, name, score)`` for other heads."""
        return (self.label if self.label is not None else self.index, self.name, self.score)


def get_model(weights="imagenet"):
    """The model for ``weights``, loaded once per process and cached."""
    from .model import Xception

    if isinstance(weights, str) and weights == "imagenet":
        key = ("imagenet",)
    elif isinstance(weights, (str, os.PathLike)):
        path = pathlib.Path(weights).expanduser().resolve()
        stat = path.stat() if path.exists() else None
        key = (str(path), stat and stat.st_mtime_ns, stat and stat.st_size)
    else:
        raise TypeError(f"weights: expected 'imagenet' or a path, found {type(weights).__name__}")
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            if key == ("imagenet",):
                model = Xception("imagenet")
            else:
                from .weights import load

                model = load(weights)
            _MODELS[key] = model
        return model


def _target_size(model):
    h, w = model.input_shape[:2]
    return (h, w) if h is not None else CONFIG.default_input_shape[:2]


def _to_pixels(image, target_size, interpolation):
    """Any accepted image form -> float32 (H, W, 3) pixels in [0, 255] at target_size."""
    from PIL import Image

    from .images import load_image, resize_array, to_array

    if isinstance(image, (str, os.PathLike)):
        return load_image(image, target_size=target_size, interpolation=interpolation)
    if isinstance(image, Image.Image):
        return load_image(image, target_size=target_size, interpolation=interpolation)
    if isinstance(image, np.ndarray):
        if image.ndim == 4:
            raise ValueError(f"images: a 4-D array {image.shape} is a batch; pass a list of images "
                             "(e.g. list(batch)) or one (H, W, 3) image")
        pixels = to_array(image)
        if pixels.shape[:2] != tuple(target_size):
            pixels = resize_array(pixels, target_size, interpolation)
        return pixels
    raise TypeError(f"images: expected a path, a PIL image or an array, found {type(image).__name__}")


def _decode(model, probs, top, labels=None) -> list[list[Prediction]]:
    from .labels import imagenet_labels

    top = min(int(top), probs.shape[1])
    names = labels if labels is not None else model.labels
    wnids = None
    if names is None and probs.shape[1] == 1000:
        wnids = imagenet_labels()
    out = []
    for row in probs:
        order = np.argsort(row)[::-1][:top]  # Keras' decode_predictions uses the same argsort
        preds = []
        for i in order:
            i = int(i)
            if wnids is not None:
                preds.append(Prediction(i, wnids[i][0], wnids[i][1], float(row[i])))
            else:
                preds.append(Prediction(i, None, None if names is None else names[i], float(row[i])))
        out.append(preds)
    return out


def predict(images, *, weights="imagenet", top=5, model=None, interpolation=None, labels=None,
            batch_size=8):
    """Label one image or a list of images.

    images: a path, a PIL image, a uint8 (H, W, 3) / (H, W) array, a float array
      of pixels in [0, 255], or a list of these.
    Returns, per image, a list of ``(label, name, score)`` best first: for the
    1000 ImageNet classes exactly Keras' ``decode_predictions`` tuples
    (``('n01484850', 'great_white_shark', 0.93)``); for other heads ``label`` is
    the class index and ``name`` comes from ``labels=`` or the weight file, else None.
    A single image gives a single list.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top: expected a positive int, found {top!r}")
    from .images import _interpolation

    interpolation = interpolation or CONFIG.default_interpolation
    _interpolation(interpolation)  # a bad name fails even when no image needs resizing
    single = not isinstance(images, (list, tuple))
    items = [images] if single else list(images)
    if not items:
        return []
    model = model if model is not None else get_model(weights)
    if model.classes is None:
        raise ValueError("model: predict needs a classifier; this model has no top (include_top=False)")
    if labels is not None and len(labels) != model.classes:
        raise ValueError(f"labels: expected {model.classes} names, found {len(labels)}")
    size = _target_size(model)
    results = []
    for start in range(0, len(items), batch_size):
        batch = [_to_pixels(im, size, interpolation) for im in items[start:start + batch_size]]
        results += _decode(model, _run(model, batch), top, labels)
    tuples = [[p.as_tuple() for p in preds] for preds in results]
    return tuples[0] if single else tuples


def _run(model, pixels):
    from .images import preprocess_input

    x = preprocess_input(np.stack(pixels)).astype(model.dtype, copy=False)
    return model(x)


def expand(paths) -> list[str]:
    """Files as given, and folders expanded to the images in them (sorted)."""
    out = []
    for p in paths:
        path = pathlib.Path(p)
        if path.is_dir():
            out += [str(f) for f in sorted(path.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        else:
            out.append(str(p))
    return out


def predict_files(paths, *, weights="imagenet", top=5, interpolation="nearest", batch_size=8,
                  progress=False):
    """For the CLI: ``([(path, [Prediction, ...]), ...], [(path, reason), ...])``.

    One bad file never stops the rest: it is reported and skipped.
    """
    from .images import ImageError, load_image

    files = expand(paths)
    model = get_model(weights)
    if model.classes is None:
        raise ValueError(f"{weights}: this weight file has no classifier (it was saved without the top)")
    size = _target_size(model)
    results, failures = [], []
    pending_paths, pending = [], []

    def flush():
        if pending:
            probs = _run(model, pending)
            for path, row, preds in zip(pending_paths, probs, _decode(model, probs, top)):
                if np.isfinite(row).all():
                    results.append((path, preds))
                else:  # never print NaN scores with an arbitrary top class
                    failures.append((path, "the model gave non-finite scores (NaN or Inf) for this image"))
            pending.clear()
            pending_paths.clear()

    for n, path in enumerate(files, 1):
        try:
            pending.append(load_image(path, target_size=size, interpolation=interpolation))
            pending_paths.append(path)
        except ImageError as exc:
            failures.append((path, str(exc).split(": ", 1)[-1] if str(exc).startswith(path) else str(exc)))
        if len(pending) >= batch_size:
            flush()
        if progress:
            _bar(n, len(files))
    flush()
    if progress and files:
        print(file=sys.stderr)
    return results, failures


def _bar(done, total, width=30):
    filled = int(width * done / max(total, 1))
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)

