"""The input: channel order, preprocessing mode, layout. Each transform maps our tf-mode batch
to what the port would have fed its first layer."""

from __future__ import annotations

from itertools import permutations

import numpy as np
from PIL import Image

from ...config import CONFIG
from .case import Candidate

# keras.applications.imagenet_utils: "caffe" mode is BGR minus these means (BGR order);
# "torch" mode is x/255 normalised by these ImageNet means and stds (RGB order).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def _raw(x):
    """Our tf-mode input back in [0, 255]: x = raw / 127.5 - 1."""
    return (x.astype(np.float64) + 1.0) * CONFIG.preprocess_scale


def input_bgr(x):
    """BGR channel order instead of RGB; for a 4-channel model BGRA instead of RGBA (OpenCV's
    ``imread(..., IMREAD_UNCHANGED)``). Other channel counts name no colours: not tried."""
    if x.shape[-1] == 3:
        return "BGR channel order instead of RGB", x[..., ::-1]
    if x.shape[-1] == 4:
        return "BGRA channel order instead of RGBA", x[..., [2, 1, 0, 3]]
    return None


def input_caffe(x):
    """Keras' "caffe" preprocess_input (BGR, ImageNet means subtracted, no scaling) instead of "tf":
    RGB images only (its means are three)."""
    if x.shape[-1] != 3:
        return None
    return ("caffe preprocessing (BGR minus ImageNet means) instead of tf's x/127.5 - 1",
            _raw(x)[..., ::-1] - np.array(CAFFE_MEAN_BGR))


def input_torch(x):
    """Keras' "torch" preprocess_input (x/255 normalised by ImageNet mean and std) instead of "tf":
    RGB images only (its means and stds are three)."""
    if x.shape[-1] != 3:
        return None
    return ("torch preprocessing ((x/255 - mean) / std) instead of tf's x/127.5 - 1",
            (_raw(x) / 255.0 - np.array(TORCH_MEAN)) / np.array(TORCH_STD))


def input_unit_range(x):
    """The image scaled to [0, 1] (``x / 255``, ``ToTensor()``'s range) instead of tf's [-1, 1]."""
    return "input scaled to [0, 1] (x/255) instead of tf's x/127.5 - 1", _raw(x) / 255.0


def input_raw(x):
    """The raw [0, 255] pixels, not preprocessed at all."""
    return "raw 0..255 pixels (no preprocessing) instead of tf's x/127.5 - 1", _raw(x)


def input_nchw_as_nhwc(x):
    """An NHWC batch's memory read as NCHW (a reshape where a transpose was needed)."""
    n, h, w, c = x.shape
    return "NHWC input read as NCHW (reshaped, not transposed)", \
        np.ascontiguousarray(x).reshape(n, c, h, w).transpose(0, 2, 3, 1)


def input_hw_transposed(x):
    """Height and width swapped (an NCHW/NHWC transpose with the wrong axis order)."""
    return "image transposed (height and width swapped)", x.transpose(0, 2, 1, 3)


INPUT_TRANSFORMS = {
    "input_bgr": input_bgr, "input_caffe": input_caffe, "input_torch": input_torch,
    "input_unit_range": input_unit_range, "input_raw": input_raw,
    "input_nchw_as_nhwc": input_nchw_as_nhwc, "input_hw_transposed": input_hw_transposed,
}


def input_candidates(x, run=None):
    """Every input hypothesis as a Candidate: the transformed input itself (``run`` None, for
    the dumped input) or the first layer run on it."""
    for cause, transform in INPUT_TRANSFORMS.items():
        tried = transform(x)
        if tried is None:  # a transform of RGB images, and these are not
            continue
        text, xt = tried
        xt = xt.astype(x.dtype)
        yield Candidate(cause, text, xt if run is None else run(xt))



# ---- the photo's resize, when compare knows which photos the batch came from ------------------------

# timm's legacy_xception default_cfg: input 299, crop_pct 0.8975, bicubic: the shorter side resized
# to int(299 / 0.8975) = 333, then the centre 299x299 cropped (timm.data.transforms_factory).
TIMM_CROP_PCT = 0.8975
# torchvision's and timm's default ImageNet eval crop (Resize(int(size / 0.875)) then CenterCrop(size)), with
# its two filters: torchvision's Resize is bilinear, timm's default bicubic
CROPS = {"timm": (TIMM_CROP_PCT, "bicubic"), "crop_0.875_bilinear": (0.875, "bilinear"),
         "crop_0.875_bicubic": (0.875, "bicubic")}
RESIZES = ("bilinear", "bicubic", "lanczos", *CROPS)


def _resized(path, size, how):
    """``path`` at ``size`` (H, W) as [0, 255] pixels: a Pillow filter, or a resize of the shorter side and a
    centre crop (:data:`CROPS`: timm's legacy_xception, torchvision's 0.875)."""
    from ...images import load_image, load_img  # Pillow's pipeline, loaded only when a photo is re-read

    if how not in CROPS:
        return load_image(path, size, interpolation=how)
    pct, filt = CROPS[how]
    img = load_img(path)
    h, w = size
    short = int(min(h, w) / pct)
    ih, iw = img.height, img.width
    new = (short, int(short * iw / ih)) if ih <= iw else (int(short * ih / iw), short)  # (H, W)
    img = img.resize(new[::-1], resample=Image.Resampling.BICUBIC if filt == "bicubic" else Image.Resampling.BILINEAR)
    top, left = int(round((new[0] - h) / 2.0)), int(round((new[1] - w) / 2.0))
    return np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32)


def resize_candidates(images, x, model, run=None):
    """The photos the batch ``x`` (as ``model`` takes it) was made from, one path per image, resized
    another way than Keras' nearest, then fed as ours (tf-mode preprocessing, or pixels for a model
    that takes them) or with torch's normalisation: each as a Candidate of the input (``run`` None)
    or of the first layer run on what the model's input stage makes of it."""
    if not images or x is None or len(images) != len(x):
        return
    from ...images import preprocess_input  # ours, as the photos were fed; loaded only when photos are given

    size = x.shape[1:3]
    for how in RESIZES:
        pixels = np.stack([_resized(p, size, how) for p in images])
        if how in CROPS:
            pct, filt = CROPS[how]
            short = int(min(size) / pct)  # the size this batch's crop was taken from, not always 299's
            who = "timm's " if how == "timm" else ""
            what = f"{who}{filt} resize of the shorter side to {short} ({min(size)} / {pct}) then centre crop"
        else:
            what = f"{how} resize"
        what += " instead of Keras' nearest"
        feeds = [(what, pixels if model.takes_pixels else preprocess_input(pixels))]
        if not model.takes_pixels and x.shape[-1] == 3:  # torch's means and stds are RGB's
            feeds.append((what + ", and torch preprocessing ((x/255 - mean) / std)",
                          (pixels / 255.0 - np.array(TORCH_MEAN)) / np.array(TORCH_STD)))
        for text, xt in feeds:
            xt = xt.astype(x.dtype)
            yield Candidate("input_resize", text, xt if run is None else run(model.backbone_input(xt)), how)


# ---- a per-channel affine map and a channel order, fitted (review 22, finding 6) --------------------

# Known pipelines, as what they make of raw [0, 255] pixels: per channel (scale, offset), and whether
# they reverse the channels. Compared with the fitted map once it is read in raw pixels.
_KNOWN = {
    "tf's x/127.5 - 1": ((1 / 127.5,) * 3, (-1.0,) * 3),
    "x/255 ([0, 1])": ((1 / 255,) * 3, (0.0,) * 3),
    "x/255 - 0.5 ([-0.5, 0.5])": ((1 / 255,) * 3, (-0.5,) * 3),
    "raw 0..255 pixels": ((1.0,) * 3, (0.0,) * 3),
    "torch's (x/255 - mean) / std": (tuple(1 / (255 * s) for s in TORCH_STD),
                                     tuple(-m / s for m, s in zip(TORCH_MEAN, TORCH_STD))),
    "caffe's means (103.9, 116.8, 123.7: B, G, R) subtracted": ((1.0,) * 3, tuple(-m for m in CAFFE_MEAN_BGR)),
    "(x/127.5 - 1) * 255": ((2.0,) * 3, (-255.0,) * 3),
}
# ... and what they make of an input already preprocessed (ours x), the map read as it is
_KNOWN_TWICE = {"tf's x/127.5 - 1 applied to an input already preprocessed (preprocessing twice)": (1 / 127.5, -1.0),
                "x/255 applied to an input already preprocessed (preprocessing twice)": (1 / 255, 0.0)}
# A fit that reproduces their values has 2 parameters per channel against every value of the layer; fewer
# than this many values per parameter and a fit says nothing.
_VALUES_PER_PARAMETER = 100
_GEOMETRY = {"": lambda a: a, "flipped left-right, ": lambda a: a[:, :, ::-1],
             "flipped upside down, ": lambda a: a[:, ::-1], "rotated 180 degrees, ": lambda a: a[:, ::-1, ::-1],
             # np.rot90 turns from the first axis (H) towards the second (W): counter-clockwise as the image is seen
             "rotated 90 degrees counter-clockwise, ": lambda a: np.rot90(a, 1, (1, 2)),
             "rotated 90 degrees clockwise, ": lambda a: np.rot90(a, 3, (1, 2))}


def _numbers(v):
    v = np.asarray(v)
    return f"{v[0]:.4g}" if np.allclose(v, v[0], rtol=1e-4, atol=1e-6) else "[" + ", ".join(f"{a:.4g}" for a in v) + "]"


def _named(scale, offset, perm, tf_mode, raw=False, var="ours x"):
    """The fitted map in words: ours x -> theirs x * scale + offset, channels ``perm``; and, when ours is
    tf-mode (raw / 127.5 - 1), what it is of raw pixels, with a known pipeline's name when one matches."""
    c = len(scale)
    order = ""
    if list(perm) != list(range(c)):
        order = "channels reversed (BGR), " if list(perm) == list(range(c))[::-1] else f"channels in order {list(perm)}, "
    text = f"{order}{var} -> {_affine(scale, offset)}"
    if not raw:
        for name, (s, o) in _KNOWN_TWICE.items():
            if np.allclose(scale, s, rtol=2e-3) and np.allclose(offset, o, rtol=2e-3, atol=2e-3):
                return f"{text}: {name}"
    if not (tf_mode or raw) or c != 3:
        return text
    if raw:
        raw_scale, raw_offset = np.asarray(scale), np.asarray(offset)
    else:
        raw_scale, raw_offset = np.asarray(scale) / 127.5, np.asarray(offset) - np.asarray(scale)
        text += f"; of raw pixels, {_affine(raw_scale, raw_offset)}"
    for name, (s, o) in _KNOWN.items():
        if np.allclose(raw_scale, s, rtol=2e-3) and np.allclose(raw_offset, o, rtol=2e-3, atol=2e-3):
            text += f": {name}"
            if name.startswith("caffe") and list(perm) == list(range(c)):
                text += ", without caffe's BGR flip (channels left RGB)"
            break
    return text


def _affine(scale, offset):
    """``x * a + b`` with its numbers, an offset that rounds to 0 left out."""
    off = np.asarray(offset)
    if np.abs(off).max() < 1e-5 * max(1.0, np.abs(scale).max()):
        return f"x * {_numbers(scale)}"
    if np.allclose(off, off[0], rtol=1e-4, atol=1e-6):
        return f"x * {_numbers(scale)} {'-' if off[0] < 0 else '+'} {abs(off[0]):.4g}"
    return f"x * {_numbers(scale)} + {_numbers(off)}"


def input_affine(x, theirs, run=None, *, tf_mode=True, geometry=True, raw=False, what="their input is ours",
                 var="ours x"):
    """Their input is ours through a per-channel affine map (``x * a_c + b_c``), its channels possibly in
    another order, and, with ``geometry``, the image flipped or rotated: fitted by least squares to their
    output (their input itself with ``run`` None, or a layer ``run`` that is linear without bias, such as
    ``block1_conv1``, on it: its output is linear in the ``2C`` constants). Names any preprocessing that is
    such a map with its fitted constants (preprocessing twice, BGR with torch's mean and std, [-0.5, 0.5]),
    where the catalogue's fixed transforms name only the pipelines it lists. ``tf_mode``: ours is
    ``raw / 127.5 - 1``, so the map is also said in raw pixels; ``raw``: ``x`` is raw pixels. ``what`` and
    ``var`` word it (an input-stage layer's map of its own input). The candidate is the fitted map's output;
    ``diagnose`` accepts it only when it reproduces theirs within the tolerance."""
    if x is None or theirs is None or x.ndim != 4 or not 1 <= x.shape[-1] <= 4:
        return None
    c = x.shape[-1]
    t = np.asarray(theirs, dtype=np.float64).ravel()
    if t.size < _VALUES_PER_PARAMETER * 2 * c or not np.isfinite(t).all():
        return None
    x64 = x.astype(np.float64)

    def f(a):
        return np.asarray(a, dtype=np.float64) if run is None else np.asarray(run(a.astype(x.dtype)), dtype=np.float64)

    best = None
    for where, move in _GEOMETRY.items():
        if not geometry and where:
            continue
        xg = np.ascontiguousarray(move(x64))
        if xg.shape != x.shape:  # a rotation of a non-square image
            continue
        unit = []
        for at in range(c):
            z = np.zeros_like(xg)
            z[..., at] = 1.0
            unit.append(f(z).ravel())
        if unit[0].size != t.size:
            return None
        placed = {}
        for src in range(c):
            for at in range(c):
                z = np.zeros_like(xg)
                z[..., at] = xg[..., src]
                placed[src, at] = f(z).ravel()
        for perm in permutations(range(c)):  # their channel `at` reads our channel perm[at]
            a = np.stack([placed[perm[at], at] for at in range(c)] + unit, 1)
            coef = np.linalg.lstsq(a, t, rcond=None)[0]
            fit = a @ coef
            err = np.abs(fit - t).max()
            if best is None or err < best[0]:
                best = (err, where, perm, coef, fit)
    _, where, perm, coef, fit = best
    scale, offset = coef[:c], coef[c:]
    if not where and list(perm) == list(range(c)) and np.allclose(scale, 1, atol=1e-6) and np.allclose(offset, 0, atol=1e-6):
        return None  # the identity: no difference to name
    text = f"{what} {where}through a per-channel affine map, fitted: " + _named(scale, offset, perm, tf_mode, raw, var)
    return Candidate("input_affine", text, fit.reshape(np.shape(theirs)).astype(np.asarray(theirs).dtype),
                     {"scale": [float(v) for v in scale], "offset": [float(v) for v in offset],
                      "channels": [int(p) for p in perm], "geometry": where.strip(", ") or None})
