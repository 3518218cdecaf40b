"""The input: channel order, preprocessing mode, layout. Each transform maps our tf-mode batch
to what the port would have fed its first layer."""

from __future__ import annotations

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
RESIZES = ("bilinear", "bicubic", "lanczos", "timm")


def _resized(path, size, how):
    """``path`` at ``size`` (H, W) as [0, 255] pixels: a Pillow filter, or timm's resize and centre crop."""
    from ...images import load_image, load_img  # Pillow's pipeline, loaded only when a photo is re-read

    if how != "timm":
        return load_image(path, size, interpolation=how)
    img = load_img(path)
    h, w = size
    short = int(min(h, w) / TIMM_CROP_PCT)
    ih, iw = img.height, img.width
    new = (short, int(short * iw / ih)) if ih <= iw else (int(short * ih / iw), short)  # (H, W)
    img = img.resize(new[::-1], resample=Image.Resampling.BICUBIC)
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
        what = ("timm's bicubic resize of the shorter side to 299 / 0.8975 then centre crop" if how == "timm"
                else f"{how} resize") + " instead of Keras' nearest"
        feeds = [(what, pixels if model.takes_pixels else preprocess_input(pixels))]
        if not model.takes_pixels and x.shape[-1] == 3:  # torch's means and stds are RGB's
            feeds.append((what + ", and torch preprocessing ((x/255 - mean) / std)",
                          (pixels / 255.0 - np.array(TORCH_MEAN)) / np.array(TORCH_STD)))
        for text, xt in feeds:
            xt = xt.astype(x.dtype)
            yield Candidate("input_resize", text, xt if run is None else run(model.backbone_input(xt)), how)
