"""What one photo will cost, known before its pixels are decoded, and the budget it must fit.

A model that takes photos at their own size (``Input((None, None, 3))``) runs the
network at the photo's size: its buffers grow with ``H x W``, and a 48-megapixel
photo needs ~14 GB. npxception reads the photo's header (Pillow's ``open`` is lazy),
estimates the bytes the prediction will allocate from the architecture table,
and refuses the photo, by name, before a byte of it is decoded when the estimate
exceeds the budget (the project's reliability rule: a MemoryError reaching the user is a bug).

The estimate, for one photo decoded at ``H0 x W0`` and fed at ``H x W``:

* Pillow's decoded image and its RGB conversion, by the mode its header declares
  (:func:`decode_bytes_per_pixel`: an RGB image is stored as RGBX, 4 bytes; another mode
  holds its own pixels, 1 to 4 bytes, while the RGB copy is made); ``DECODE_BYTES_PER_PIXEL``,
  8, when no header gave a mode;
* the pixels fed: ``np.asarray``'s uint8 (3 bytes per pixel), ``img_to_array``'s
  float32 (12), ``preprocess_input``'s result (12) and the model's input in its
  dtype (3 x itemsize): ``feed_bytes``;
* the forward pass at the backbone's size (after the input stage's geometry):
  :func:`fast_plan_bytes` for ``model(x)`` (the fused plan's arena: each slot holds
  the largest value the plan (npxception/fast/plan.py) assigns to it, so the sum of
  the slots at this size, from ``architecture.trace``, plus the per-thread scratch
  tiles, which are bounded by FastPlan's tile sizes or one row), and
  :func:`plain_bytes` for ``model.forward(capture=...)`` (npxception/forward.py:
  the largest sum, layer by layer, of the live activations, the layer's output
  and its op's scratch: a convolution's whole im2col matrix, a separable
  convolution's padded input and depthwise output), and :func:`capture_bytes` for
  ``compare``, which keeps every layer (ours, and theirs when their side runs in this
  process: docs/performance.md, "compare's memory").

For Keras' table in float32 the plan's arena is ~225 bytes per input pixel at
large sizes (block1_conv2's output, 64 channels at a quarter of the pixels, is 64
bytes per pixel; block2_sepconv1's 128 channels, 128; the block-2 residual, 32, as
the slots are assigned), the input side 43 to 47 (4 to 8 decoded + 39 fed) and ``OVERHEAD``
10% over all: ~300 bytes per pixel, 3.6 GB for a 12-megapixel photo. Measured peak
RSS growth stays below it: 795 MB against 901 MB at 2000x1500 (docs/performance.md,
"A photo's memory, estimated before it is decoded"; tests/test_photo_budget.py
holds the estimate between the child's growth and twice it).

The budget is a fixed, documented figure so that the same photo gets the same
answer on every machine: ``DEFAULT_BUDGET``, 4 GB. A 12-megapixel phone photo at its
own size on Keras' table fits, a 24-megapixel camera's does not; any photo resized to
a fixed input fits (its decoded image is at most 2 x MAX_IMAGE_PIXELS x 8 bytes, 1.4 GB).
``NPXCEPTION_PHOTO_MEMORY`` (e.g. ``8GB``, ``500MB`` or a number of bytes) or the
CLI's ``--photo-memory`` raises or lowers it.
"""

from __future__ import annotations

import os
import re

import numba
import numpy as np

from . import architecture as arch
from .fast.plan import Head, SepConvBN, ConvBN, PoolAdd, Unsupported, compile_plan
from .fast import direct
from .fast.direct import shares_panels
from .fast.direct import reads_in_place
from .fast.run import FastPlan
from .images import BAND_BYTES
from .input_stage import output_size

DEFAULT_BUDGET = 4 * 10**9
ENV = "NPXCEPTION_PHOTO_MEMORY"
# Pillow's RGB image is RGBX (4 bytes per pixel); a non-RGB image's own pixels (at most 4 bytes: I, F) are
# held while convert("RGB") makes that copy. The bound when the decoded mode is not known (an array's size).
DECODE_BYTES_PER_PIXEL = 8
# Pillow's storage per pixel of the modes it keeps in fewer than 4 bytes (every other mode: 4).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decode_bytes_per_pixel(mode=None, channels: int = 3, transposed: bool = False) -> int:
    """Bytes per decoded pixel while a photo of Pillow mode ``mode`` (from its header) becomes the image a model of
    ``channels`` channels is fed: its own pixels (1 for L, P, 1; 2 for I;16; 4 else), a second copy when
    ``transposed`` (exif_transpose rotates it while the original is held), and the converted image (4 bytes
    for RGB or RGBA, 1 for L) plus 1 for the 8-bit step Pillow takes from some modes (F and I;16B to RGB:
    5 bytes measured, 4 for every other mode; docs/performance.md). ``mode`` None: :data:`DECODE_BYTES_PER_PIXEL`
    (plus 4 when transposed)."""
    if mode is None:
        return DECODE_BYTES_PER_PIXEL + (4 if transposed else 0)
    own = _MODE_BYTES.get(mode, 4)
    target = {1: "L", 4: "RGBA"}.get(channels, "RGB")
    kept = ("L", "I;16", "I") if channels == 1 else (target,)  # images.load_img keeps these as they are
    converted = 0 if mode in kept else (1 if target == "L" else 4) + 1
    return own * (2 if transposed else 1) + converted
# What the buffers counted here miss: transient masks (isfinite's bool, 1 byte per pixel), libjpeg's
# buffers, the allocator's rounding. Measured peak RSS growth exceeded the plain count by 2.4% for a
# 1200x900 photo (306 MB against 299 MB, tests/test_photo_budget.py); 10% covers that with room.
OVERHEAD = 1.10
# Their side's every activation, as a framework running in this process returns them to compare, over ours:
# peak RSS growth of `npxception compare --image` from a 150x150 to a 500x500 photo measured 1.29x ours beyond
# our count for onnxruntime, 1.05x for Keras 3 (docs/performance.md, "compare's memory"); 1.5 covers both.
THEIRS_IN_PROCESS = 1.5
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(text: str, what: str = ENV) -> int:
    """``"4GB"``, ``"500MB"``, ``"1.5G"``, ``"2GiB"`` or a number of bytes -> bytes; ValueError naming ``what``."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m and m.group(2).upper()
    if not m or unit not in _UNITS or float(m.group(1)) * _UNITS[unit] < 1:
        raise ValueError(f"{what}: expected a positive size such as 4GB, 500MB or 8e9 (bytes), found {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def budget(value=None) -> int:
    """The photo memory budget in bytes: ``value`` (bytes or a size string), else ``NPXCEPTION_PHOTO_MEMORY``,
    else ``DEFAULT_BUDGET``."""
    if value is not None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else \
            parse_bytes(value, "photo_memory")
    env = os.environ.get(ENV)
    return parse_bytes(env) if env else DEFAULT_BUDGET


def human(nbytes: float) -> str:
    """Bytes as ``12.4 GB`` / ``310 MB`` (decimal units, as the budget is written)."""
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.0f} MB"


def _size(shape) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def fast_plan_bytes(model, h: int, w: int, batch: int = 1) -> int:
    """Bytes the fused plan (npxception/fast/run.py) allocates for a ``(batch, h, w, C)`` backbone input.

    Raises :class:`~npxception.fast.plan.Unsupported` when the plan cannot run the table (the model then runs
    op by op: use :func:`plain_bytes`).
    """
    steps = compile_plan(model.layers, model.head, model.channels)
    shapes = arch.trace(model.layers, model.head, (h, w, model.channels))
    shapes["input"] = ((h, w, model.channels),)
    threads = numba.get_num_threads()
    slots: dict[int, int] = {}
    scratch: dict[str, int] = {}

    def role(name, elems):
        scratch[name] = max(scratch.get(name, 0), elems)

    for step in steps:
        if isinstance(step, Head):
            continue
        ih, iw, ic = shapes[step.source][0]
        out = shapes[step.output][0]
        slots[step.slot] = max(slots.get(step.slot, 0), batch * _size(out))
        if isinstance(step, ConvBN) and reads_in_place(step, ih, iw) and direct.worth_packing(model.dtype):
            continue  # the direct kernel: no im2col buffer (FastPlan.conv_bn)
        if isinstance(step, ConvBN):  # row tiles of im2col (FastPlan.conv_bn)
            role("cols", np.prod(FastPlan.cols_shape(batch, out[0], out[1], step.kernel_size ** 2 * ic, threads)))
        elif isinstance(step, SepConvBN):  # FastPlan.sep_bn's tiles: FUSED_TILE_ELEMS or one row each
            tile = threads * max(FastPlan.FUSED_TILE_ELEMS, iw * max(ic, step.channels))
            role("dw0", tile)
            if shares_panels(batch * ih * iw, step.channels, threads) and direct.worth_packing(model.dtype):
                role("dw0", batch * ih * iw * ic)  # the whole depthwise output (FastPlan.sep_bn)
            role("rows", threads * 3 * iw * ic)
            if step.residual is not None:
                role("tile", tile)
        else:
            assert isinstance(step, PoolAdd)
    return (sum(slots.values()) + sum(scratch.values())) * model.dtype.itemsize


def _op_scratch(layer, shapes, batch, hw_c) -> int:
    """Values an op allocates beyond its output while it runs (npxception/ops): a convolution's whole
    im2col matrix, a separable convolution's padded input and depthwise output."""
    out = shapes[layer.name][0]
    ih, iw, ic = shapes[layer.inputs[0]][0] if layer.inputs[0] != "input" else hw_c  # (h, w, channels)
    if layer.kind == "conv" and not (layer.kernel_size == 1 and layer.strides == 1):
        return batch * out[0] * out[1] * layer.kernel_size ** 2 * ic  # ops.conv2d's whole im2col matrix
    if layer.kind == "sepconv":
        # depthwise_conv2d's padded input (a little larger than x) and its output, then the pointwise
        k = layer.kernel_size
        return batch * ((ih + k) * (iw + k) + out[0] * out[1]) * ic
    return 0


def plain_bytes(model, h: int, w: int, stop_after=None, batch: int = 1) -> int:
    """Bytes the plain forward pass (npxception/forward.py) holds at its peak for a ``(batch, h, w, C)``
    backbone input, run up to layer ``stop_after`` (None: the whole backbone)."""
    shapes = arch.trace(model.layers, model.head, (h, w, model.channels))
    size = {"input": batch * h * w * model.channels}
    readers: dict[str, int] = {}
    for layer in model.layers:
        for i in layer.inputs:
            readers[i] = readers.get(i, 0) + 1
    live = size["input"]
    peak = live
    for layer in model.layers:
        size[layer.name] = batch * _size(shapes[layer.name][0])
        peak = max(peak, live + size[layer.name] + _op_scratch(layer, shapes, batch, (h, w, model.channels)))
        live += size[layer.name]
        for i in layer.inputs:
            readers[i] -= 1
            if readers[i] == 0:
                live -= size[i]
        if layer.name == stop_after:
            break
    return peak * model.dtype.itemsize


def capture_bytes(model, h: int, w: int, batch: int = 1, sides: int = 1) -> int:
    """Bytes ``compare`` holds at its peak for a ``(batch, h, w, C)`` backbone input: every layer's output
    kept (``model.forward(capture="all")``: ~2.8 KB per input pixel in float32 on Keras' table, five
    times the plain pass), plus the largest op's scratch as it runs; ``sides=2`` when their side runs in
    this process (a Keras model, an ONNX graph): its activations, :data:`THEIRS_IN_PROCESS` times ours.
    A dump's are in memory before the photos are read (bounded by its file, compare.inputs), not counted."""
    shapes = arch.trace(model.layers, model.head, (h, w, model.channels))
    kept = batch * (h * w * model.channels + sum(_size(shape) for shape, _, _ in shapes.values()))
    scratch = max(_op_scratch(layer, shapes, batch, (h, w, model.channels)) for layer in model.layers)
    return int((kept * (1 + THEIRS_IN_PROCESS * (sides - 1)) + scratch) * model.dtype.itemsize)


def feed_bytes(model, h: int, w: int) -> int:
    """The pixels fed at ``h x w``, per channel (3 for RGB): uint8 (1), float32 (4), preprocess_input (4), the
    model's input (itemsize). A 16-bit grayscale photo's uint16 array (2 bytes) is within the float32 copy's margin."""
    return h * w * model.channels * (1 + 4 + 4 + model.dtype.itemsize)


def photo_bytes(model, decoded_hw, fed_hw, *, stop_after=None, plain=False, gathered=False, capture=0,
                decoded_mode=None, transposed=False) -> int:
    """The estimated bytes of one photo decoded at ``decoded_hw`` and fed at ``fed_hw`` (see the module
    docstring): ``plain`` (or ``stop_after``) for the plain forward pass, ``capture`` (the number of sides
    that keep every layer: 1 or 2) for ``compare``'s (:func:`capture_bytes`), else the fused plan. ``gathered``:
    predict's path for a photo at its own size, where only the pixels the stage's first geometry step
    reads are fed (``input_stage.apply_gathered``: at most twice the backbone's size per axis, read in
    bands of ``images.BAND_BYTES``), not the whole photo. ``decoded_mode`` (Pillow's mode from the header) and
    ``transposed`` (exif_transpose): the decoded image's bytes per pixel, :func:`decode_bytes_per_pixel`."""
    decoded = decode_bytes_per_pixel(decoded_mode, model.channels, transposed) * decoded_hw[0] * decoded_hw[1]
    try:
        model.check_image_size(*fed_hw)
    except ValueError:  # a size the model refuses: its own error names the photo once it is read (a few bytes)
        return int(OVERHEAD * decoded)
    bh, bw = output_size(model.input_stage, fed_hw)  # the backbone's size after the stage's geometry
    if gathered and (bh, bw) != tuple(fed_hw):
        fh, fw = min(fed_hw[0], 2 * bh), min(fed_hw[1], 2 * bw)
        fed = feed_bytes(model, fh, fw) + 2 * BAND_BYTES  # a band's crop and its array
    else:
        fed = feed_bytes(model, *fed_hw)
    if capture:
        forward = capture_bytes(model, bh, bw, sides=capture)
    elif plain or stop_after is not None:
        forward = plain_bytes(model, bh, bw, stop_after)
    else:
        try:
            forward = fast_plan_bytes(model, bh, bw)
        except Unsupported:
            forward = plain_bytes(model, bh, bw)
    counted = decoded + fed + forward
    return int(OVERHEAD * counted)


class PhotoTooLarge(ValueError):
    """A photo whose estimated memory exceeds the budget (the message names the size, estimate and remedy)."""


def check(model, decoded_hw, fed_hw, limit: int, *, stop_after=None, plain=False, gathered=False,
          capture=0, decoded_mode=None, transposed=False) -> None:
    """Raise :class:`PhotoTooLarge` when :func:`photo_bytes` exceeds ``limit``; the message is the reason
    (without the file's name) and names the budget's settings and, for a model that takes photos at their own
    size, ``--size HxW``: any other photo is decoded whole before it is resized, so only a smaller file helps."""
    need = photo_bytes(model, decoded_hw, fed_hw, stop_after=stop_after, plain=plain, gathered=gathered,
                       capture=capture, decoded_mode=decoded_mode, transposed=transposed)
    if need <= limit:
        return
    h, w = decoded_hw
    own = tuple(fed_hw) == tuple(decoded_hw)
    at = "at its own size" if own else f"fed at {fed_hw[0]}x{fed_hw[1]}"
    raise_it = f"raise the budget with --photo-memory or {ENV} (e.g. {human(need * 1.1)})"
    if own and None in tuple(model.source_input_shape[:2]):  # a model of any size: a smaller feed helps
        advice = f"resize it with --size HxW (target_size=(h, w) in Python), or {raise_it}"
    else:  # the file is decoded whole before any resize: only a smaller file helps
        advice = (f"the file is decoded at its own size before it is resized, so only a smaller file helps: shrink "
                  f"it beforehand (e.g. with an image editor), or {raise_it}")
    raise PhotoTooLarge(f"a {h}x{w} photo (height x width) {at} would need about {human(need)}, over the photo "
                        f"memory budget of {human(limit)}; {advice}")
