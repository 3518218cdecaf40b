"""Feature maps of one layer as a picture, with Pillow alone (no matplotlib needed).

``npxception show --layer block2_sepconv2_act cat.png -o maps.png`` draws the
input image, then the ``--maps`` most active channels of that layer, each
scaled to its own 0..255 range, in a grid.
"""

from __future__ import annotations

import math

import numpy as np


def feature_grid(activation: np.ndarray, maps: int = 16, tile: int = 96):
    """(H, W, C) activation -> a grid image of its ``maps`` channels with the largest mean."""
    from PIL import Image

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


def render(model, image_path, layer: str, out_path, maps: int = 16):
    """Write the input image beside the feature-map grid of ``layer`` to ``out_path`` (PNG)."""
    from PIL import Image

    from .images import load_image, preprocess_input

    if layer not in model.layer_names:
        import difflib

        hint = difflib.get_close_matches(layer, model.layer_names, n=3)
        raise ValueError(f"--layer: unknown layer {layer!r}" + (f"; did you mean {hint}?" if hint else ""))
    h, w = model.input_shape[:2] if model.input_shape[0] else (299, 299)
    pixels = load_image(image_path, target_size=(h, w))
    _, acts = model.forward(preprocess_input(pixels)[None].astype(model.dtype), capture=[layer])
    act = acts[layer][0]
    if act.ndim != 3:
        raise ValueError(f"--layer: {layer} outputs a vector {act.shape}, not feature maps; "
                         "pick a convolutional layer")
    grid = feature_grid(act, maps)
    photo = Image.fromarray(pixels.astype(np.uint8)).resize((grid.height, grid.height))
    canvas = Image.new("RGB", (photo.width + grid.width + 8, grid.height), "white")
    canvas.paste(photo, (0, 0))
    canvas.paste(grid.convert("RGB"), (photo.width + 8, 0))
    from .weights import atomic_write

    atomic_write(out_path, lambda f: canvas.save(f, format="PNG"))
    return out_path


def cli_show(args) -> int:
    from .prediction import get_model

    render(get_model(args.weights), args.image, args.layer, args.output, args.maps)
    print(args.output)
    return 0
