"""Feature maps of one layer as a picture, with Pillow alone (no matplotlib needed).

``npxception show --layer block2_sepconv2_act cat.png -o maps.png`` draws the
input image, then the ``--maps`` most active channels of that layer, each
scaled to its own 0..255 range, in a grid. The photo is sized and fed as
``npxception predict`` feeds it: the model's fixed size, its own size for a
model whose source takes any size, or ``--size HxW``.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
from PIL import Image

from . import architecture as arch
from . import forward, shell
from .input_stage import output_size
from .prediction import check_size_option, feed, get_model, load_photo
from .untrusted import atomic_write, check_output_dir

# The picture's format comes from the output's suffix, as Pillow's save(path) does,
# but from a short list: a typo (maps.pgn) is refused rather than guessed.
SUFFIX_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                  ".tif": "TIFF", ".tiff": "TIFF"}


def output_format(out_path) -> str:
    """Pillow's format name for ``out_path``'s suffix; ValueError naming the accepted suffixes."""
    suffix = pathlib.PurePath(out_path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise ValueError(f"{out_path}: unknown picture suffix {suffix or '(none)'!r}; "
                         f"expected one of {', '.join(SUFFIX_FORMATS)}")
    return SUFFIX_FORMATS[suffix]


def feature_grid(activation: np.ndarray, maps: int = 16, tile: int = 96):
    """(H, W, C) activation -> a grid image of its ``maps`` channels with the largest mean."""
    if activation.ndim != 3:
        raise ValueError(f"activation: expected (H, W, C) feature maps, found shape {activation.shape}")
    order = np.argsort(activation.mean(axis=(0, 1)))[::-1][:maps]
    cols = math.ceil(math.sqrt(len(order)))
    rows = math.ceil(len(order) / cols)
    grid = Image.new("L", (cols * (tile + 2), rows * (tile + 2)), color=255)
    for k, c in enumerate(order):
        fm = activation[:, :, c].astype(np.float64)
        lo, hi = fm.min(), fm.max()
        scaled = np.zeros_like(fm) if hi == lo else (fm - lo) / (hi - lo)
        img = Image.fromarray((scaled * 255).round().astype(np.uint8)).resize((tile, tile), Image.NEAREST)
        grid.paste(img, ((k % cols) * (tile + 2) + 1, (k // cols) * (tile + 2) + 1))
    return grid


def render(model, image_path, layer: str, out_path, maps: int | None = None, *, target_size=None, interpolation=None,
           exif_transpose=False, photo_memory=None, weights=None):
    """Write the input image beside the feature-map grid of ``layer`` to ``out_path``.

    The photo is what :func:`npxception.predict` feeds the model (:func:`~npxception.prediction.load_photo`):
    resized to ``target_size`` (``--size HxW``) or to the model's fixed input size, else, for a model whose
    source takes any size, at its own size; raw pixels or ``preprocess_input``'s output as the model takes
    them. ``layer``: a name ``model.forward(capture=...)`` takes (ours, the source file's, or an input-stage
    step's such as ``rescaling``, which shows what the backbone is fed). The format follows the suffix of
    ``out_path`` (``SUFFIX_FORMATS``); ``maps`` (default 16, or all of a layer with fewer channels) may not
    exceed the layer's channel count. The forward pass stops after ``layer``, and a photo whose pass up to it would
    exceed the photo memory budget (``photo_memory``, :mod:`npxception.photo_memory`) is refused before
    it is decoded. ``weights``: the file the model came from, named in the command an unknown layer's
    message suggests (None or "imagenet": ``npxception summary`` lists the ImageNet model's names).
    """
    fmt = output_format(out_path)  # before the forward pass: a bad name costs nothing
    staged = layer in model.stage_names()  # an input-stage step (rescaling...), as capture takes it
    if not staged:
        try:  # ours, or the source file's (Keras') name of one of ours, as capture takes
            layer = model._our_name("--layer", layer, stage=True)
        except ValueError as exc:  # review 17, finding 4: the message gave no way to find a valid name
            listing = ("npxception summary" if weights in (None, "imagenet")
                       else f"npxception summary --weights {shell.arg(weights)}")
            raise ValueError(f"{exc}. Every layer's name: `{listing}` "
                             "(model.layer_names, and the input stage's model.stage_names())") from None
    # a step of the input stage runs before the backbone's first layer: the photo's budget up to that layer
    pixels = load_photo(model, image_path, target_size, interpolation, exif_transpose=exif_transpose,
                        photo_memory_limit=photo_memory, stop_after=model.layers[0].name if staged else layer)
    if staged:  # the step's output, (H, W, C) at the stage's size at that step: checked once computed
        _, acts = model._stage_captured(feed(model, pixels[None]), [layer])
        shape = acts[layer].shape[1:]
    else:
        # The layer's output shape from the table at the size the backbone gets (after the input stage's
        # geometry), so that both checks come before the forward pass.
        h, w = output_size(model.input_stage, pixels.shape[:2])
        shape = arch.trace(model.layers, model.head, (h, w, model.channels))[layer][0]
    if len(shape) != 3:
        raise ValueError(f"--layer: {layer} outputs a vector {shape}, not feature maps; "
                         "pick a convolutional layer")
    if maps is None:  # 16, or every channel of a layer with fewer (an RGB input stage's 3)
        maps = min(16, shape[-1])
    if maps > shape[-1]:
        raise ValueError(f"--maps: {layer} has {shape[-1]} channels; expected at most that, found {maps}")
    if not staged:
        x = model.backbone_input(feed(model, pixels[None]))
        _, acts = forward.run(model, x, {layer}, "fast", stop_early=True)  # model.forward, up to the layer
    act = acts[layer][0]
    grid = feature_grid(act, maps)
    photo = photo_panel(pixels).resize((grid.height, grid.height))
    canvas = Image.new("RGB", (photo.width + grid.width + 8, grid.height), "white")
    canvas.paste(photo, (0, 0))
    canvas.paste(grid.convert("RGB"), (photo.width + 8, 0))
    atomic_write(out_path, lambda f: canvas.save(f, format=fmt))
    return out_path


def photo_panel(pixels) -> Image.Image:
    """The fed pixels ``(H, W, C)`` as an RGB picture beside the maps: RGB as it is; a grayscale model's one
    channel as gray (a 16-bit photo's values, which the model is fed unscaled, scaled to 0..255 for display
    only); an RGBA model's colour channels (its alpha is an input like the others, not a transparency)."""
    shown = pixels[:, :, :3] if pixels.shape[2] >= 3 else pixels[:, :, 0]
    top = float(shown.max()) if shown.size else 0.0
    if top > 255:
        shown = shown * (255.0 / top)
    return Image.fromarray(np.clip(shown, 0, 255).round().astype(np.uint8)).convert("RGB")


def cli_show(args) -> int:
    output_format(args.output)  # refuse a bad suffix before loading the weights
    check_output_dir(args.output, inputs=[args.image, args.weights])  # the photo must not be replaced
    model = get_model(args.weights)
    check_size_option(model, args.size, args.interpolation)  # in the CLI's terms, before the photo is read
    render(model, args.image, args.layer, args.output, args.maps, target_size=args.size,
           interpolation=args.interpolation, exif_transpose=args.exif_transpose, photo_memory=args.photo_memory,
           weights=args.weights)
    print(args.output)
    return 0
