"""``predict(images)``: photos in, labels out, with only numpy, numba, Pillow and h5py.

The pipeline is Keras' own, so results can be compared like with like:
``load_img`` (Pillow decode, RGB, ``nearest`` resize) -> ``img_to_array`` ->
``preprocess_input`` (x / 127.5 - 1) -> the model -> ``decode_predictions``.
A model with 1 or 4 input channels gets ``load_img(color_mode="grayscale")`` or
``color_mode="rgba"``: the one Keras color mode whose arrays it takes
(:func:`npxception.images.color_mode`).
A model that preprocesses in-graph (a converted ``Rescaling`` or
``Normalization``, see :mod:`npxception.input_stage`) gets the raw pixels
instead, exactly as its Keras original does.

Photo sizes: a model whose source took any size (``Input((None, None, 3))``)
gets each photo at its own size, ``img_to_array(load_img(path))`` without
``target_size``, as its Keras user feeds it. When its stage resizes or crops
(a converted ``Resizing``, ``CenterCrop``...) to the backbone's size, the batch
is stacked after the stage, and only the pixels the stage reads are converted
from Pillow's image and preprocessed (the same bits as the whole photo's,
docs/performance.md); when nothing fixes the backbone's size, photos of
different sizes cannot be stacked and each runs alone (Keras' user calls
``model.predict`` once per photo too). A photo the model cannot take (smaller
than the network computes, 7x7 as in Keras, or refused by a stage layer) is refused by name. Every other model,
and any model given ``target_size=(h, w)`` (CLI ``--size HxW``), gets photos
resized by ``load_img``'s pipeline (``nearest`` unless ``interpolation=``), as
``load_img(path, target_size=...)`` does.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import _fork, head_schema
from .config import CONFIG
from .console import EXIT_USAGE, CLIError
from .images import (ImageError, _interpolation, _name, _target_size as _size_arg, color_mode, image_suffixes,
                     load_image, load_img, preprocess_input, read_pixels, resize_array, to_array)
from .input_stage import GEOMETRY
from .labels import imagenet_labels
from .model import Xception, load
from .model_checks import check_positive_int
from .overflow import ActivationOverflow
from .photo_memory import PhotoTooLarge, budget as memory_budget, check as check_memory

_MODELS: dict = {}  # weights key -> model: weights are loaded once per process
_MODELS_LOCK = _fork.lock()  # held for a load: a child forked meanwhile loads again


@dataclass(frozen=True)
class Prediction:
    index: int  # class index in the model's output
    label: str | None  # ImageNet wnid ('n01484850'), or None
    name: str | None  # human-readable name ('great_white_shark'), or None
    score: np.floating  # the output's numpy scalar (np.float32), as Keras' decode_predictions gives
    # A one-unit head (a binary classifier, the keras.io recipe's Dense(1)): ``index`` is the class Keras
    # decides (head_schema.decision_rule: 1 when the logit z > 0, or a sigmoid's p > 0.5, else 0), ``score``
    # the unit's value, ``output`` what that value is ("logit", "probability") and ``rule`` the decision
    # ("logit > 0": when class 1). An activation with no yes/no rule (tanh...): ``index`` 0 (the unit),
    # ``output`` "tanh output", ``rule`` None. Both None for a head of several units (``index``: the unit, best first).
    output: str | None = None
    rule: str | None = None

    def as_tuple(self):
        """Keras' ``decode_predictions`` tuple, or ``(index, name, score)`` for other heads."""
        return (self.label if self.label is not None else self.index, self.name, self.score)


def get_model(weights="imagenet"):
    """The model for ``weights``, loaded once per process and cached."""
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
                model = load(weights)
            _MODELS[key] = model
        return model


def photo_size(model, target_size=None):
    """The size photos are loaded at: ``target_size`` when given (refused unless ``model(x)`` takes it), the
    source model's fixed size, else None: each photo at its own size (see the module docstring)."""
    if target_size is not None:
        size = _size_arg(target_size)
        _check_size(model, size, "target_size", lambda h, w: f"target_size=({h}, {w})")
        return size
    h, w = model.source_input_shape[:2]
    return (h, w) if None not in (h, w) else None


def check_size_option(model, size, interpolation=None) -> None:
    """The CLI's ``--size HxW`` (``(H, W)`` or None) and ``--interpolation`` against the model before anything
    is read: :func:`photo_size`'s rule, refused in the CLI's terms (predict, show, compare) as a usage error
    (exit code 2, as argparse's): the command line asks what this model cannot take."""
    try:
        if size is not None:
            h, w = _size_arg(size)
            _check_size(model, (h, w), f"--size {h}x{w}", lambda h, w: f"--size {h}x{w}")
        try:
            _resize_filter(model, photo_size(model, size), interpolation)
        except ValueError as exc:
            raise ValueError(f"--{exc}".replace("interpolation= applies", "--interpolation applies")
                             .replace("give target_size=(h, w) (--size HxW) too", "give --size HxW too")) from None
    except ValueError as exc:
        raise CLIError(str(exc), code=EXIT_USAGE) from None


def _check_size(model, size, option, spell) -> None:
    """Refuse a ``size`` that ``model(x)`` cannot take, named ``option`` (and the fixed size spelled by
    ``spell(h, w)``) as the caller gave it: ``model.check_image_size``'s advice is for ``model(x)`` callers."""
    try:
        model.check_image_size(*size)
    except ValueError as exc:
        eh, ew = model.source_input_shape[:2]
        if (eh is not None and size[0] != eh) or (ew is not None and size[1] != ew):  # a model of one size
            want = "x".join("any" if d is None else str(d) for d in (eh, ew))
            give = (f"give {spell(eh, ew)}, or leave it out: photos are then resized to {eh}x{ew}"
                    if None not in (eh, ew) else f"give a size of {want}")
            raise ValueError(f"{option}: this model takes {want} images only (the source model's input shape "
                             f"{model.source_input_shape}), found {size[0]}x{size[1]}; {give}") from None
        raise ValueError(f"{option}: {str(exc).removeprefix('x: ')}") from None


def load_photo(model, image, target_size=None, interpolation=None, *, exif_transpose=False, photo_memory_limit=None,
               stop_after=None, capture=0) -> np.ndarray:
    """One photo as :func:`predict` sizes it for ``model``: float32 ``(H, W, C)`` pixels in [0, 255], resized
    by ``load_img``'s pipeline to ``target_size`` or the model's fixed size, else at its own size
    (:func:`photo_size`); a size ``model(x)`` cannot take is refused naming the photo. ``feed(model,
    pixels[None])`` is then what ``model(x)`` takes. What ``compare --image`` and ``show`` run on.
    A photo whose plain forward pass (``model.forward``, up to ``stop_after``; with ``capture``, compare's, every
    layer kept by that many sides) would need more than the photo memory budget (:mod:`npxception.photo_memory`)
    is refused before it is decoded."""
    size = photo_size(model, target_size)
    mode = color_mode(model.channels)
    check = _budget_check(model, size, image, photo_memory_limit, stop_after=stop_after, plain=True,
                          gathered=False, capture=capture, transposed=exif_transpose)  # load_image converts the whole photo
    pixels = load_image(image, target_size=size, interpolation=_resize_filter(model, size, interpolation),
                        exif_transpose=exif_transpose, check_size=check, color_mode=mode)
    try:
        model.check_image_size(*pixels.shape[:2])
    except ValueError as exc:
        raise ValueError(f"{_label(image, 0)}: {str(exc).removeprefix('x: ')}") from None
    return pixels


def _budget_check(model, size, image, limit=None, **how):
    """``load_img``'s ``check_size`` for ``model``: refuses (ImageError naming ``image``) a photo whose estimated
    memory at the size it is fed (``size``, else its own) exceeds the budget (:mod:`npxception.photo_memory`)."""
    limit = memory_budget(limit)
    how = {"gathered": size is None, **how}  # predict stages a photo at its own size from the pixels it reads

    def check(h, w, mode=None):  # mode: the decoded image's, from a file's header (images.load_img gives it)
        try:
            check_memory(model, (h, w), size or (h, w), limit, decoded_mode=mode, **how)
        except PhotoTooLarge as exc:
            raise ImageError(_label(image, 0), str(exc)) from None
    return check


def _resize_filter(model, size, interpolation) -> str:
    """The filter photos are resized with: ``interpolation`` (default Keras' nearest) when they are resized;
    a model that takes photos at their own size resizes nothing (or in its stage, as the Keras model does),
    so a filter given for it would be ignored: refused instead, naming target_size."""
    if size is None and interpolation is not None:
        stage = ", ".join(s["name"] for s in model.input_stage if s["kind"] in GEOMETRY)
        how = (f"its input stage ({stage}) resizes it as the Keras model does" if stage
               else f"nothing resizes it (the source model's input shape {model.source_input_shape})")
        raise ValueError(f"interpolation: this model takes each photo at its own size and {how}; "
                         f"interpolation= applies only when photos are resized: give target_size=(h, w) "
                         f"(--size HxW) too, or leave it unset")
    return interpolation or CONFIG.default_interpolation


def _to_pixels(image, target_size, interpolation, exif_transpose=False, check_size=None, mode="rgb"):
    """Any accepted image form -> float32 (H, W, C) pixels in [0, 255] at target_size, in color mode ``mode``
    (:func:`~npxception.images.color_mode` of the model's channels); at its own size (``target_size`` None)
    a file or PIL image stays the PIL image ``load_img`` gives, for :func:`_staged` to read only the pixels
    the model's stage uses. ``exif_transpose`` and ``check_size`` as in :func:`~npxception.images.load_img`
    (``check_size`` also sees an array's size)."""
    if isinstance(image, np.ndarray):
        if image.ndim == 4:
            raise ValueError(f"images: a 4-D array {image.shape} is a batch; pass a list of images "
                             "(e.g. list(batch)) or one (H, W, C) image")
        pixels = to_array(image, mode)
        if check_size is not None:
            check_size(*pixels.shape[:2])  # in memory already, but its forward pass is still to come
        if target_size is not None and pixels.shape[:2] != tuple(target_size):
            pixels = resize_array(pixels, target_size, interpolation, mode)
        return pixels
    if isinstance(image, (str, bytes, os.PathLike, Image.Image)) or hasattr(image, "read"):
        if isinstance(image, Image.Image) and check_size is not None:
            check_size(image.height, image.width)  # decoded already, but its forward pass is still to come
        if target_size is None:
            return load_img(image, exif_transpose=exif_transpose, check_size=check_size, color_mode=mode)
        return load_image(image, target_size=target_size, interpolation=interpolation,  # what it reads
                          exif_transpose=exif_transpose, check_size=check_size, color_mode=mode)
    raise TypeError(f"images: expected a path, a binary file object, a PIL image or an array, "
                    f"found {type(image).__name__}")


def _is_folder(item) -> bool:
    return isinstance(item, (str, bytes, os.PathLike)) and os.path.isdir(item)


def _decode(model, probs, top, labels=None) -> list[list[Prediction]]:
    names = labels if labels is not None else model.labels
    if probs.shape[1] == 1:
        return [[_decide(model, row[0], names)] for row in probs]
    top = min(int(top), probs.shape[1])
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
                preds.append(Prediction(i, wnids[i][0], wnids[i][1], row[i]))
            else:
                preds.append(Prediction(i, None, None if names is None else names[i], row[i]))
        out.append(preds)
    return out


def _decide(model, value, names) -> Prediction:
    """A one-unit head's prediction: the class Keras decides for ``value`` (head_schema.decision_rule), named
    by ``names`` when it holds two names (class 0's, class 1's); see :class:`Prediction`."""
    act = head_schema.output_activation(model.head)
    rule = head_schema.decision_rule(act)
    if rule is None:  # no yes/no rule for this activation: the unit's value, as it is
        return Prediction(0, None, names[0] if names is not None and len(names) == 1 else None, value,
                          f"{act} output", None)
    index = int(value > rule.threshold)
    return Prediction(index, None, names[index] if names is not None and len(names) == 2 else None, value,
                      rule.value, f"{rule.value} > {rule.threshold:g}")


def predict(images, *, weights="imagenet", top=5, model=None, interpolation=None, labels=None,
            batch_size=8, target_size=None, exif_transpose=False, photo_memory=None):
    """Label one image or a list of images.

    images: whatever ``load_image`` reads (a path, a binary file object, a PIL
      image), a uint8 (H, W, C) / (H, W) array or a float array of pixels in
      [0, 255] (not [0, 1]: multiply by 255 first), a folder, or a list of these.
      A folder stands for its images, sorted by name, as ``expand([folder]).files``
      lists them (sub-folders are not searched).
    Returns, per image, a list of ``(label, name, score)`` best first: for the
    1000 ImageNet classes exactly Keras' ``decode_predictions`` tuples
    (``('n01484850', 'great_white_shark', 0.93)``); for other heads ``label`` is
    the class index and ``name`` comes from ``labels=`` or the weight file, else None.
    A one-unit head (a binary classifier's ``Dense(1)``) gives one tuple: the class Keras decides
    (1 when its logit is > 0, or its sigmoid's probability > 0.5, else 0), named by ``labels=[name of
    class 0, name of class 1]`` if given, and the unit's value (the logit or the probability).
    A single image gives a single list; a folder or a list gives one list per image.

    Photos are fed as the Keras user of the model feeds them: resized to its fixed
    input size, or, for a model whose source takes any size, each at its own size
    (see the module docstring). ``target_size=(h, w)`` resizes every photo to
    ``h x w`` instead, as ``load_img(path, target_size=(h, w))`` does, with
    ``interpolation`` (Keras' ``nearest`` by default).

    exif_transpose: rotate each photo file or PIL image upright by its EXIF orientation first
      (``PIL.ImageOps.exif_transpose``); Keras' load_img does not, so the default is False.
    photo_memory: the budget in bytes (or ``"8GB"``) a photo's estimated memory must fit, checked before it
      is decoded (:mod:`npxception.photo_memory`); default ``NPXCEPTION_PHOTO_MEMORY``, else 4 GB. A photo
      over it raises ImageError naming it, its size, the estimate and ``target_size``.
    """
    top = check_positive_int(top, "top")
    batch_size = check_positive_int(batch_size, "batch_size")
    _interpolation(interpolation or CONFIG.default_interpolation)  # a bad name fails even when none is resized
    single = not isinstance(images, (list, tuple)) and not _is_folder(images)
    items = []
    for item in (images if isinstance(images, (list, tuple)) else [images]):
        if not _is_folder(item):
            items.append(item)
            continue
        inputs = expand([item])
        files = inputs.files
        if inputs.empty:
            raise ValueError(f"images: {os.fsdecode(item)} holds no image files "
                             f"(expected suffixes: {', '.join(sorted(image_suffixes()))})")
        items += files
    if not items:
        return []
    model = model if model is not None else get_model(weights)
    if model.classes is None:
        raise ValueError("model: predict needs a classifier; this model has no top (include_top=False)")
    binary = model.classes == 1 and head_schema.decision_rule(head_schema.output_activation(model.head)) is not None
    if labels is not None and len(labels) != model.classes and not (binary and len(labels) == 2):
        raise ValueError(f"labels: expected {model.classes} names"
                         + (" (or 2: class 0's and class 1's, the decided classes of a one-unit head)"
                            if binary else "") + f", found {len(labels)}")
    size = photo_size(model, target_size)
    interpolation = _resize_filter(model, size, interpolation)
    mode = color_mode(model.channels)  # Keras' load_img color mode whose arrays have the model's channels
    limit = memory_budget(photo_memory)
    results = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]

        def pixels(i, im):
            check = _budget_check(model, size, _label(im, start + i), limit, transposed=exif_transpose)
            return _to_pixels(im, size, interpolation, exif_transpose, check, mode)

        try:
            if size is None:  # each at its own size, staged (and run, when sizes differ) as it is read
                probs = _finish(model, [_own_size(model, pixels(i, im), _label(im, start + i))
                                        for i, im in enumerate(chunk)])
            else:
                probs = _run(model, [pixels(i, im) for i, im in enumerate(chunk)])
        except ActivationOverflow as exc:
            if exc.rows.size and exc.output.shape[0] == len(chunk):  # (else _own_size named its photo)
                raise exc.naming([_label(im, start + i) for i, im in enumerate(chunk)]) from None
            raise
        results += _decode(model, probs, top, labels)
    tuples = [[p.as_tuple() for p in preds] for preds in results]
    return tuples[0] if single else tuples


def _label(image, index) -> str:
    """How an error names an input of predict(): its file, else its position in the list."""
    name = _name(image) if not isinstance(image, np.ndarray) else "<array>"
    return name if not name.startswith("<") else f"images[{index}]"


def feed(model, pixels) -> np.ndarray:
    """[0, 255] pixels as ``model(x)`` takes them: float32 (``img_to_array``), then raw when the model
    preprocesses in-graph (a converted Rescaling/Normalization, ``model.takes_pixels``), else through
    preprocess_input; in the model's dtype. Pixelwise, so :func:`_staged` may feed a photo in parts."""
    pixels = pixels.astype(np.float32, copy=False)
    x = pixels if model.takes_pixels else preprocess_input(pixels)
    return x.astype(model.dtype, copy=False)


def _run(model, pixels):
    """The model on a list of [0, 255] pixel arrays of one size."""
    return model(feed(model, np.stack(pixels)))


def _staged(model, photo) -> np.ndarray:
    """One photo at its own size (a PIL image as load_img gives it, or [0, 255] pixels) through :func:`feed` and
    the model's input stage: ``(1, H, W, C)`` at the backbone's size, the same bits as
    ``model.backbone_input(feed(model, img_to_array(photo))[None])``. Only the pixels the stage's first
    geometry step reads are converted and fed (``model.backbone_input_gathered``): a photo costs its
    Pillow image, not ~10 bytes per pixel and channel of float copies (docs/performance.md). Photos are
    staged as they are read, so a batch holds backbone-sized arrays rather than whole photos."""
    if isinstance(photo, Image.Image):
        hw, read = (photo.height, photo.width), functools.partial(read_pixels, photo)
    else:
        hw, read = photo.shape[:2], lambda rows, cols: photo[rows][:, cols]
    return model.backbone_input_gathered(hw, read, functools.partial(feed, model))


def _stacks(model) -> bool:
    """Whether photos at their own size stack after the stage: it brought each to the backbone's fixed size."""
    return None not in model.input_shape[:2]


def _own_size(model, photo, label=None) -> np.ndarray:
    """One photo at its own size: ``(1, h, w, C)`` staged at the backbone's fixed size, to be stacked with the
    batch (:func:`_finish`); or, when nothing fixes the backbone's size, the photo's ``(1, classes)`` scores
    at once: photos of different sizes do not stack, and a whole photo's float copy does not wait for a
    batch. A size the model refuses (below ``model.min_input_size``, or a stage layer's) raises naming ``label``."""
    try:
        staged = _staged(model, photo)
    except ValueError as exc:
        if label is None:
            raise
        raise ValueError(f"{label}: {str(exc).removeprefix('x: ')}") from None
    if _stacks(model):
        return staged
    try:
        return model.run_backbone(staged)
    except ActivationOverflow as exc:
        if label is None:
            raise
        raise exc.naming([label]) from None


def _finish(model, parts) -> np.ndarray:
    """``(N, classes)`` scores of a batch of :func:`_own_size` results, in order."""
    return model.run_backbone(np.concatenate(parts)) if _stacks(model) else np.concatenate(parts)


@dataclass(frozen=True)
class Inputs:
    """What a list of paths expands to: the image files, in order, and the folders left out."""

    files: list[str]  # the paths as given, folders replaced by their images (sorted); an empty folder stays itself
    skipped: list[str]  # sub-folders not descended into (without ``recursive``)
    other: list[str] = dataclasses.field(default_factory=list)  # folders' files without an image suffix
    empty: list[str] = dataclasses.field(default_factory=list)  # folders named that hold no image file (in files)
    repeated: list[str] = dataclasses.field(default_factory=list)  # with ``recursive``: links to a folder walked already


def expand(paths, *, recursive: bool = False) -> Inputs:
    """Files as given, and folders expanded to the images in them (sorted by name).

    A folder contributes its files with an image suffix (``images.image_suffixes()``: the suffixes
    Pillow registers for the formats npxception decodes, ``.jfif`` and ``.pnm`` included); the others
    are listed in ``Inputs.other``; its sub-folders are searched too with ``recursive=True``, else listed in
    ``Inputs.skipped`` so that the caller can say so. Files named explicitly
    are kept whatever their suffix: the decoder will judge them. A folder named that contributes no image
    keeps its place in ``files`` (and is listed in ``Inputs.empty``): its caller reports it where it stands.
    With ``recursive``, symbolic links to folders are followed, each real folder walked once: a link to one
    walked already (a loop back to a parent, or a second way to a folder) is listed in ``Inputs.repeated``,
    so the walk ends and visits at most every folder once.
    """
    files, skipped, other, empty, repeated = [], [], [], [], []
    suffixes = image_suffixes()
    for p in paths:
        path = pathlib.Path(os.fsdecode(p))
        if not path.is_dir():
            files.append(os.fsdecode(p))
            continue
        before = len(files)
        seen = {os.path.realpath(path)}
        for dirpath, dirnames, filenames in os.walk(path, followlinks=recursive):
            dirnames.sort()
            if not recursive:
                skipped += [os.path.join(dirpath, d) for d in dirnames]
                dirnames.clear()
            for d in list(dirnames):
                real = os.path.realpath(os.path.join(dirpath, d))
                if real in seen:  # a loop, or a folder reached another way: walked once
                    repeated.append(os.path.join(dirpath, d))
                    dirnames.remove(d)
                seen.add(real)
            for f in sorted(filenames):
                (files if pathlib.PurePath(f).suffix.lower() in suffixes else other).append(os.path.join(dirpath, f))
        if len(files) == before:
            files.append(os.fsdecode(p))
            empty.append(os.fsdecode(p))
    return Inputs(files, skipped, other, empty, repeated)


@dataclass(frozen=True)
class FileResult:
    """One input file's outcome: its predictions, or the reason it could not be read."""

    path: str
    predictions: list[Prediction] | None  # best first; None when ``error`` is set
    error: str | None = None  # why the file was skipped, without the path ("no such file")


def predict_files(files, model, *, top=5, interpolation=None, batch_size=8, target_size=None, exif_transpose=False,
                  photo_memory=None):
    """Yield, batch by batch, a list of FileResult for every file in input order (for the CLI).

    A list is yielded as soon as ``batch_size`` images have been run (and at the
    end), so results can be printed while later batches are still computing.
    One bad file never stops the rest: it gets its FileResult with ``error``, a photo over the memory
    budget (``photo_memory``, as in :func:`predict`) and one that runs out of memory included.
    Photos are sized as :func:`predict` sizes them (``target_size``, else the model's).
    """
    top, batch_size = check_positive_int(top, "top"), check_positive_int(batch_size, "batch_size")
    if model.classes is None:
        raise ValueError("this weight file has no classifier (it was saved without the top)")
    _interpolation(interpolation or CONFIG.default_interpolation)  # once, before any file: a bad name
    size = photo_size(model, target_size)
    interpolation = _resize_filter(model, size, interpolation)
    color_mode(model.channels)  # a model whose channels are no photo's is refused before any file is read
    limit = memory_budget(photo_memory)
    return _file_batches(files, model, top, size, interpolation, batch_size,  # the checks above ran first
                         exif_transpose, limit)


def _file_batches(files, model, top, size, interpolation, batch_size, exif_transpose, limit):
    pending: list = []  # (path, pixels or None, error or None), in input order
    loaded = 0
    overflow = "activations overflowed the float range inside the network"  # ActivationOverflow's reason

    def flush():
        nonlocal overflow
        good = [pixels for _, pixels, _ in pending if pixels is not None]
        if not good:
            probs = np.empty((0, model.classes))
        else:  # photos at their own size were staged (or run) as they were read
            try:
                probs = _run(model, good) if size is not None else _finish(model, good)
            except ActivationOverflow as exc:  # the scores of the other photos hold
                probs, overflow = exc.output, exc.reason
        decoded = iter(zip(probs, _decode(model, probs, top)))
        out = []
        for path, pixels, error in pending:
            if pixels is None:
                out.append(FileResult(path, None, error))
                continue
            row, preds = next(decoded)
            if np.isfinite(row).all():
                out.append(FileResult(path, preds))
            else:  # never print NaN scores with an arbitrary top class
                out.append(FileResult(path, None, f"the model gave non-finite scores (NaN or Inf) for this image: "
                                                  f"{overflow}"))
        pending.clear()
        return out

    mode = color_mode(model.channels)
    for path in files:
        check = _budget_check(model, size, path, limit, transposed=exif_transpose)
        if _is_folder(path):  # a folder named on the command line that holds no image (expand keeps its place)
            empty = expand([path]).empty
            pending.append((path, None, f"a folder with no image files in it (image suffixes: "
                                        f"{' '.join(sorted(image_suffixes()))})" if empty else
                                        "is a folder, not an image file (expand() lists its images)"))
            if loaded == 0:
                yield flush()
            continue
        try:
            if size is None:  # its own size, which the model may refuse (too small, a stage layer): this file's error
                pixels = _own_size(model, load_img(path, exif_transpose=exif_transpose, check_size=check,
                                                   color_mode=mode))
            else:
                pixels = load_image(path, target_size=size, interpolation=interpolation,
                                    exif_transpose=exif_transpose, check_size=check, color_mode=mode)
            pending.append((path, pixels, None))
            loaded += 1
        except ImageError as exc:
            pending.append((path, None, exc.reason))
        except ValueError as exc:
            pending.append((path, None, str(exc).removeprefix("x: ")))
        except ActivationOverflow as exc:  # its own size, run as it was read
            pending.append((path, None, f"the model gave non-finite scores (NaN or Inf) for this image: {exc.reason}"))
        except MemoryError as exc:  # the estimate was under the budget, but the machine had less: this file's
            smaller = ("resize it with --size HxW" if size is None  # its own size: a smaller feed helps
                       else "shrink the file beforehand (it is decoded whole before it is resized)")
            pending.append((path, None, f"out of memory ({' '.join(str(exc).split()) or 'MemoryError'}); "
                                        f"{smaller}, or lower --photo-memory / "
                                        "NPXCEPTION_PHOTO_MEMORY to refuse such photos before decoding them"))
        if loaded >= batch_size or loaded == 0:  # a full batch, or only failures so far: report now
            yield flush()
            loaded = 0
    if pending:
        yield flush()
