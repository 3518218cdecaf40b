"""``npxception compare``: the command-line face of :func:`npxception.compare.compare`."""

from __future__ import annotations

import importlib.util
import itertools
import pathlib
import sys

import numpy as np

from .. import keras_side, photo_memory
from ..config import CONFIG
from ..images import image_suffixes
from ..input_stage import output_size
from ..model import Xception, load
from ..prediction import check_size_option, expand, feed, load_photo, photo_size
from ..console import EXIT_DIFFER, EXIT_USAGE, CLIError, shown
from ..untrusted import NO_FILE, check_output_dir, no_such_file, why_not_regular
from .core import compare
from .inputs import check_other_path
from .onnx_side import InputRefused
from .sides import INPUT_KEY, activation_name, open_other, stated_activation
from .summary import summarize


def image_paths(items) -> list[pathlib.Path]:
    """Files as given; a folder contributes its image files, sorted by name, as ``predict`` reads a folder
    (:func:`npxception.prediction.expand`: the suffixes of ``images.image_suffixes()``, sub-folders not searched)."""
    out = []
    for item in items or []:
        p = pathlib.Path(item)
        if p.is_dir():
            inputs = expand([p])
            found = [pathlib.Path(f) for f in inputs.files]
            if inputs.empty:
                raise FileNotFoundError(f"{p}: no image files ({', '.join(sorted(image_suffixes()))}) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:  # say what it is, as predict does: a FIFO (it would block), a device (/dev/zero never ends)...
            why = why_not_regular(p)
            if why == NO_FILE:
                why = no_such_file(item)  # the item as given: Path() collapses a URL's "//"
                raise FileNotFoundError(f"{p}: no such file or folder" if why == NO_FILE else f"{item}: {why}")
            if why:
                raise ValueError(f"{p}: {why}; expected a photo or a folder of photos")
            out.append(p)  # it became a regular file since is_file(): read as any photo
    return out


# Photos decoded and preprocessed at once, as predict does: a folder of 1000 photos held whole took +4 GB.
BATCH_SIZE = 8


def iter_cli_inputs(model, images, target_size=None, batch_size=BATCH_SIZE, *, photo_memory_limit=None, capture=0,
                    captured=None):
    """Yield the photos ``npxception compare --image`` feeds both sides, as ``predict`` feeds them, at most
    ``batch_size`` at a time: resized to the model's fixed input size (or ``target_size``); for a model
    whose source takes any size, each at its own size (``img_to_array(load_img(path))``, as its Keras user
    feeds it), a batch of one per photo, since photos of different sizes do not stack
    (:func:`npxception.prediction.load_photo`, then :func:`~npxception.prediction.feed`). Pixels, through
    preprocess_input unless the model preprocesses in-graph (``model.takes_pixels``). A photo the model
    cannot take is refused by name when it is reached, and so is one over the photo memory budget
    (``photo_memory_limit``, :mod:`npxception.photo_memory`): the first ``captured`` photos (None: all), which compare
    runs layer by layer, at the cost of every layer kept by ``capture`` sides (``photo_memory.capture_bytes``),
    the others at a forward pass's."""
    size = photo_size(model, target_size)  # the one rule of what size a photo is fed at
    pending = []
    for i, p in enumerate(images):
        kept = capture if captured is None or i < captured else 0
        # refused naming the photo, as predict does
        pending.append(load_photo(model, p, target_size, photo_memory_limit=photo_memory_limit, capture=kept)[None])
        if size is None or len(pending) == batch_size:
            yield feed(model, np.concatenate(pending))
            pending = []
    if pending:
        yield feed(model, np.concatenate(pending))


def cli_inputs(model, images, target_size=None) -> list[np.ndarray]:
    """:func:`iter_cli_inputs`' batches, all of them (every photo held at once: for a few photos only)."""
    return list(iter_cli_inputs(model, images, target_size))


def _one_batch(batches, what, advice) -> np.ndarray:
    """The batches stacked into one; refused, naming the sizes, when photos of different sizes do not stack."""
    batches = list(batches)
    if len({b.shape[1:3] for b in batches}) > 1:
        raise ValueError(f"{what}: photos of different sizes do not stack in one batch "
                         f"({', '.join(f'{b.shape[1]}x{b.shape[2]}' for b in batches)}); {advice}")
    return np.concatenate(batches)


def check_batch_memory(model, x, limit=None) -> None:
    """Refuse, before compare runs, a batch of photos compared at once (against a dump, which holds one batch)
    whose layers, every one kept, would exceed the photo memory budget: each photo fit it, the batch may not."""
    bh, bw = output_size(model.input_stage, x.shape[1:3])  # the backbone's size after the model's stage
    need = int(photo_memory.OVERHEAD * photo_memory.capture_bytes(model, bh, bw, batch=len(x)))
    limit = photo_memory.budget(limit)
    if need > limit:
        raise photo_memory.PhotoTooLarge(
            f"--image: {len(x)} photos at {x.shape[1]}x{x.shape[2]}, compared in one batch against a dump, would "
            f"need about {photo_memory.human(need)} with every layer kept, over the photo memory budget of "
            f"{photo_memory.human(limit)}; give fewer photos (a dump of fewer), a smaller --size, or raise the "
            f"budget with --photo-memory or {photo_memory.ENV}")


def random_size(model, target_size=None) -> tuple[int, int]:
    """The size of the seeded random batch ``compare`` runs without ``--image``: ``target_size`` (``--size``,
    refused unless ``model(x)`` takes it), else the size the model takes, else, for a model whose source takes
    any size, 299x299, the paper's (``CONFIG.default_input_shape``): no photo to give it its own size."""
    return photo_size(model, target_size) or CONFIG.default_input_shape[:2]


def cli_input(model, image=None, target_size=None) -> np.ndarray:
    """The batch ``npxception compare`` feeds both sides, in the model's input size and kind:
    ``image`` (a path or a list of paths) as :func:`cli_inputs` loads them, stacked (a model that takes
    photos at their own size: photos of one size), or without one a uniform batch from seed 0
    over the same range ([0, 255] or [-1, 1]; integers for a model whose input is an integer dtype) at
    :func:`random_size`."""
    if image is not None:
        paths = [image] if isinstance(image, (str, pathlib.Path)) else list(image)
        return _one_batch(iter_cli_inputs(model, paths, target_size), "image",
                          "use iter_cli_inputs, which gives one batch per photo")
    h, w = random_size(model, target_size)
    cast = next((s for s in model.input_stage if s["kind"] == "cast"), None)
    if cast is not None:  # an integer Input: Keras truncates fractions (input_stage.py), so pixels as photos are
        info = np.iinfo(cast["dtype"])
        x = np.random.default_rng(0).integers(max(info.min, 0), min(info.max, 255), (1, h, w, model.channels),
                                              endpoint=True)
    elif model.takes_pixels:
        x = np.random.default_rng(0).uniform(0, 255, (1, h, w, model.channels))
    else:
        x = np.random.default_rng(0).uniform(-1, 1, (1, h, w, model.channels))
    return x.astype(model.dtype)


def input_line(model, images, first_hw, target_size) -> str:
    """What both sides ran on, for the report: the photos and the size they were fed at (``first_hw``: the
    first photo's) and why, or the seeded random batch's size and why (a model that takes any size says
    so, and how to pick another)."""
    free = model.source_input_shape[0] is None
    if images:
        h, w = first_hw
        if target_size is None and free:
            return f"{len(images)} photo(s), each at its own size (the model takes any size; the first {h}x{w})"
        why = "--size" if target_size is not None else "the model's input size"
        return f"{len(images)} photo(s) at {h}x{w} ({why})"
    h, w = random_size(model, target_size)
    why = ("--size" if target_size is not None else "the model's input size" if not free else
           "the model takes any size and no photo gives one: --size HxW or --image for another")
    return f"a seeded random batch (seed 0) at {h}x{w} ({why})"


def cli_compare(args) -> int:
    if args.plot:  # checked before the comparison, not after minutes of it
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("--plot needs matplotlib: pip install 'npxception[plot]'")
        check_output_dir(args.plot, inputs=[args.against, args.weights, getattr(args, "config", None),
                                            getattr(args, "names", None), *(args.image or ())])
    stated = getattr(args, "their_activation", None)
    if stated is not None:
        activation_name(stated, "--their-activation")  # before a model is loaded
    against = pathlib.Path(args.against)
    keras_file = keras_side.is_keras_save(against)
    check_other_path(against)  # before anything is loaded: a FIFO or a device is named, never read
    if args.weights:
        model = Xception("imagenet") if args.weights == "imagenet" else load(args.weights)
    elif keras_file:
        from npxception import weights_tools  # imports npxception at import time, not the reverse: loaded to convert a Keras --against

        config = getattr(args, "config", None)
        # compare runs the source in Keras and judges it at its precision: a 16-bit model's weights are
        # computed in float32 here, which the report says (weights_tools.dtype_policy)
        model = weights_tools.read(against, config=config,
                                   dtype_policy="float32" if weights_tools.sixteen_bit_policy(against, config=config)
                                   else None)
    else:
        raise ValueError("--weights is needed to compare against an .onnx file or an activation dump")
    names = getattr(args, "names", None) or getattr(args, "port", None)
    side = open_other(model, str(against), layout=args.layout, names=names, config=getattr(args, "config", None))
    side = stated_activation(side, stated, "--their-activation")  # before a photo is read
    images = image_paths(args.image)
    size = getattr(args, "size", None)
    check_size_option(model, size)  # in the CLI's terms, before a photo is read
    warnings = []
    x_all = None  # the photos: batches read as they are used (one per photo when each is fed at its own size)
    described = None  # what both sides ran on, for the report
    limit = getattr(args, "photo_memory", None)
    if images:
        # compare keeps every layer of the photos it runs layer by layer: of ours, and of theirs when their side
        # runs here (a dump's are in memory already); the first photo, or every photo against a dump
        x_all = iter_cli_inputs(model, images, size, photo_memory_limit=limit, capture=1 if side.fixed else 2,
                                captured=None if side.fixed else 1)
        first = next(x_all)
        x, x_all = first[:1], itertools.chain([first], x_all)
        described = input_line(model, images, first.shape[1:3], size)
    elif side.fixed and INPUT_KEY in side(None):
        if size is not None:
            raise ValueError(f"--size: the dump carries the input it ran on (key {INPUT_KEY!r}); "
                             "leave --size out, or give --image with the photo(s) it was made from")
        x = None  # the dump says what it ran on
        described = f"the input the dump carries (key {INPUT_KEY!r})"
    else:
        x = cli_input(model, target_size=size)
        described = input_line(model, images, None, size)
        if side.fixed:
            warnings.append(f"no --image given and the dump carries no input (key {INPUT_KEY!r}): ours ran on "
                            "a seeded random batch, which the dump saw only if it was made from that batch")
    if side.fixed and x_all is not None:
        # a dump holds one batch, of the photos it was made from: compare all of it
        x, x_all = _one_batch(x_all, "--image", "an activation dump holds one batch of one size: give the "
                                                "photo(s) the dump was made from, or --size HxW"), None
        check_batch_memory(model, x, limit)
    photos = None if x is None else (images if side.fixed else images[:1]) or None  # the files x was read from
    try:
        report = compare(model, side, x, rtol=args.rtol, atol=args.atol, oracle=args.oracle, layout=args.layout,
                         images=photos)
    except InputRefused as exc:  # --layout or --size contradicts the graph's declared input: a bad command line
        raise CLIError(str(exc), EXIT_USAGE) from None
    report.warnings[:0] = warnings
    report.input = described
    if x_all is not None and len(images) > 1 and model.classes:
        report.agreement = summarize(model, side, x_all, rtol=report.rtol)
    if args.plot:
        report.plot(args.plot)
    if args.json:
        # stdout stays one JSON document; warnings and the verdict go to stderr
        print(report.to_json())
        for w in report.warnings:
            print(shown(f"warning: {w}"), file=sys.stderr)
        print(shown(report.verdict), file=sys.stderr)
    else:
        print(report)  # its last line is the verdict
    return 0 if report.ok else EXIT_DIFFER
