"""``npxception compare``: the command-line face of :func:`npxception.compare.compare`."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np

from .. import keras_side
from ..images import load_image, preprocess_input
from ..model import Xception, load
from .core import compare
from .sides import INPUT_KEY, open_other
from .summary import summarize

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def image_paths(items) -> list[pathlib.Path]:
    """Files as given; a folder contributes its image files, sorted by name."""
    out = []
    for item in items or []:
        p = pathlib.Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in _IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise FileNotFoundError(f"{p}: no image files ({', '.join(_IMAGE_SUFFIXES)}) in this folder")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def cli_input(model, image=None) -> np.ndarray:
    """The batch ``npxception compare`` feeds both sides, in the model's input size and kind:
    ``image`` (a path or a list of paths) as pixels, through preprocess_input unless the model
    preprocesses in-graph (``model.takes_pixels``), or without one a uniform batch from seed 0
    over the same range ([0, 255] or [-1, 1])."""
    h, w = model.source_input_shape[:2] if model.source_input_shape[0] else (299, 299)  # what model(x) takes
    if image is not None:
        paths = [image] if isinstance(image, (str, pathlib.Path)) else list(image)
        x = np.stack([load_image(p, target_size=(h, w)) for p in paths])
        x = x if model.takes_pixels else preprocess_input(x)
    elif model.takes_pixels:
        x = np.random.default_rng(0).uniform(0, 255, (1, h, w, 3))
    else:
        x = np.random.default_rng(0).uniform(-1, 1, (1, h, w, 3))
    return x.astype(model.dtype)


def cli_compare(args) -> int:
    if args.plot:  # checked before the comparison, not after minutes of it
        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("--plot needs matplotlib: pip install 'npxception[plot]'")
    against = pathlib.Path(args.against)
    keras_file = against.suffix.lower() in (".keras", ".h5", ".hdf5") or keras_side.is_tensorflow_save(against)
    if not against.is_file() and not keras_side.is_tensorflow_save(against):
        raise FileNotFoundError(f"{against}: no such file")
    if args.weights:
        model = Xception("imagenet") if args.weights == "imagenet" else load(args.weights)
    elif keras_file:
        import weights_tools  # imports npxception at import time, not the reverse: loaded to convert a Keras --against

        model = weights_tools.read(against, config=getattr(args, "config", None))
    else:
        raise ValueError("--weights is needed to compare against an .onnx file or an activation dump")
    names = getattr(args, "names", None) or getattr(args, "port", None)
    side = open_other(model, str(against), layout=args.layout, names=names, config=getattr(args, "config", None))
    images = image_paths(args.image)
    warnings = []
    x_all = None
    if images:
        x_all = cli_input(model, images)
        x = x_all[:1]
    elif side.fixed and INPUT_KEY in side(None):
        x = None  # the dump says what it ran on
    else:
        x = cli_input(model)
        if side.fixed:
            warnings.append(f"no --image given and the dump carries no input (key {INPUT_KEY!r}): ours ran on "
                            "a seeded random batch, which the dump saw only if it was made from that batch")
    if side.fixed and x_all is not None:
        x, x_all = x_all, None  # a dump holds one batch: compare all of it
    report = compare(model, side, x, rtol=args.rtol, atol=args.atol, oracle=args.oracle, layout=args.layout)
    report.warnings[:0] = warnings
    if x_all is not None and len(x_all) > 1 and model.classes:
        report.agreement = summarize(model, side, x_all)
    if args.plot:
        report.plot(args.plot)
    if args.json:
        # stdout stays one JSON document; warnings and the verdict go to stderr
        print(report.to_json())
        for w in report.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print(report.verdict, file=sys.stderr)
    else:
        print(report)  # its last line is the verdict
    return 0 if report.ok else 1
