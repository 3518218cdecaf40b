"""compare on Keras ports whose graph preprocesses: their in-graph Rescaling / Normalization layers are
compared as rows, in order with ours (review 22, finding 3). Before, local runs started from *our* input
stage's output and the stage layers were no rows: a Rescaling that differed (or one only theirs has)
made block1_conv1 the source, "unexplained", with the rescaling never mentioned.

The models: tf_keras' Xception at 71x71 without top (random weights and BN statistics, keras_helpers),
and ours with the same weights; the port wraps it behind its preprocessing layers. Tolerances:
compare's float32 default (rtol 1e-4 of max|theirs|): the same float32 weights differ by round-off.
"""

from __future__ import annotations

import numpy as np
import pytest

from npxception.compare import compare
from npxception.network import XceptionModel

SHAPE = (71, 71, 3)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(tf_keras backbone, ours converted from it, a raw-pixel batch)."""
    import tf_keras as K
    from npxception import weights_tools
    from keras_helpers import randomize

    base = randomize(K.applications.Xception(weights=None, include_top=False, pooling="avg", input_shape=SHAPE), 7)
    path = tmp_path_factory.mktemp("stage") / "base.h5"
    base.save(path)
    ours = weights_tools.read(path)
    pixels = np.random.default_rng(0).uniform(0, 255, (1, *SHAPE)).astype(np.float32)
    return base, ours, pixels


def _port(base, *layers):
    import tf_keras as K

    inp = K.Input(SHAPE)
    t = inp
    for layer in layers:
        t = layer(t)
    return K.Model(inp, base(t))


def _with_stage(model, steps):
    return XceptionModel(model.weights, head=model.head, input_shape=model.input_shape, input_stage=steps)


def test_their_extra_rescaling_is_the_source_named_with_its_constants(models):
    """Ours plain (fed x/127.5 - 1), theirs Rescaling(1/255) in front of the same backbone: it was
    "block1_conv1 (local 2.5e+02): unexplained". Now the rescaling row (theirs only) is the source, its map
    fitted and named, and the backbone, run on what their rescaling gave, agrees."""
    import tf_keras as K

    base, ours, pixels = models
    x = pixels / 127.5 - 1
    report = compare(ours, _port(base, K.layers.Rescaling(1 / 255.0, name="rescaling")), x)
    assert [r.layer for r in report.sources] == ["rescaling"], str(report)
    row = report.sources[0]
    assert row.flow == "input" and "theirs only: our model has no such layer" in row.note
    d = row.diagnosis
    assert d is not None and d.cause == "input_affine" and d.parameter["scale"] == pytest.approx([1 / 255] * 3, rel=1e-4)
    assert "x/255 applied to an input already preprocessed (preprocessing twice)" in d.explanation
    assert not report.ok and report.first_divergence == "rescaling"


def test_two_rescalings_that_differ_are_compared_in_order(models):
    """Both have a stage layer, ours x/255 and theirs x/127.5 - 1 (Keras numbers theirs "rescaling_1"):
    paired in order, the rescaling row is the source with their constants; block1_conv1 (identical) is not."""
    import tf_keras as K

    base, ours, pixels = models
    mine = _with_stage(ours, [{"kind": "rescaling", "name": "rescaling", "scale": 1 / 255, "offset": 0.0}])
    report = compare(mine, _port(base, K.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling_1")), pixels)
    assert [r.layer for r in report.sources] == ["rescaling"], str(report)
    row = report.sources[0]
    assert "theirs rescaling_1, paired in order" in row.note
    assert "x -> x * 0.007843 - 1: tf's x/127.5 - 1" in row.diagnosis.explanation
    # ... and a correct port (the same Rescaling on both sides) passes, the stage row included
    same = compare(mine, _port(base, K.layers.Rescaling(1 / 255.0, name="rescaling")), pixels)
    assert same.ok and same.rows[0].layer == "rescaling" and same.rows[0].passed, str(same)


# ---- input pipelines the catalogue does not list: a per-channel affine map fitted (finding 6) ---------

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
PIPELINES = {  # what the port fed its first layer, of raw pixels r; and the words the fit must find
    "twice": (lambda r: (r / 127.5 - 1) / 127.5 - 1, "tf's x/127.5 - 1 applied to an input already preprocessed"),
    "bgr_torchvision": (lambda r: (r[..., ::-1] / 255 - MEAN) / STD,
                        "channels reversed (BGR), ours x -> x * [2.183, 2.232, 2.222]"),
    "caffe_without_flip": (lambda r: r - np.array([103.939, 116.779, 123.68]), "without caffe's BGR flip"),
    "minus_half": (lambda r: r / 255 - 0.5, "x/255 - 0.5 ([-0.5, 0.5])"),
    "hflip": (lambda r: r[:, :, ::-1] / 127.5 - 1, "their input is ours flipped left-right"),
    "vflip": (lambda r: r[:, ::-1] / 127.5 - 1, "their input is ours flipped upside down"),
    "rot180": (lambda r: r[:, ::-1, ::-1] / 127.5 - 1, "their input is ours rotated 180 degrees"),
    # a photo loaded with its EXIF orientation applied by one side only: a quarter turn each way
    "rot90_ccw": (lambda r: np.rot90(r, 1, (1, 2)) / 127.5 - 1, "their input is ours rotated 90 degrees counter-clockwise"),
    "rot90_cw": (lambda r: np.rot90(r, -1, (1, 2)) / 127.5 - 1, "their input is ours rotated 90 degrees clockwise"),
}


@pytest.fixture(scope="module")
def seeded():
    import npxception

    model = npxception.Xception(input_shape=(75, 75, 3), classes=10, seed=3)
    raw = np.random.default_rng(3).uniform(0, 255, (1, 75, 75, 3))
    return model, raw


@pytest.mark.parametrize("dumped_input", [False, True], ids=["at_block1_conv1", "at_input"])
@pytest.mark.parametrize("case", sorted(PIPELINES))
def test_input_pipelines_are_named_by_a_fitted_affine_map(seeded, case, dumped_input):
    """A dump of a port fed its own pipeline's input (preprocessing twice, BGR with torchvision's mean and
    std, caffe's means without its BGR flip, [-0.5, 0.5], a flipped image): located at block1_conv1 (or
    the dumped input) and "unexplained" before. Now named with the fitted constants. The dump holds that
    one layer (and its input): the fit is what is tested, cheaply. Its residual is float32 round-off."""
    model, raw = seeded
    transform, words = PIPELINES[case]
    xt = transform(raw).astype(np.float32)
    _, acts = model.forward(xt, capture=["block1_conv1"])
    dump = {"block1_conv1": np.asarray(acts["block1_conv1"])}
    if dumped_input:
        dump["__input__"] = xt
    report = compare(model, dump, (raw / 127.5 - 1).astype(np.float32))
    first = report.sources[0]
    assert first.layer == ("input" if dumped_input else "block1_conv1"), str(report)
    assert first.diagnosis is not None and first.diagnosis.cause == "input_affine", str(report)
    assert words in first.diagnosis.explanation, first.diagnosis.explanation


@pytest.mark.parametrize("how", ["crop_0.875_bilinear", "crop_0.875_bicubic"])
def test_the_0875_centre_crop_is_named(seeded, how):
    """torchvision's and timm's default eval crop (Resize(int(size / 0.875)), CenterCrop(size)), bilinear or
    bicubic: "unexplained" before (only timm legacy_xception's 0.8975 bicubic was tried). The port's input
    here is made with Pillow as that pipeline makes it; the dump holds block1_conv1 only."""
    import os

    from PIL import Image

    import npxception

    model, _ = seeded
    photo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "chelsea.png")
    with Image.open(photo) as img:
        img = img.convert("RGB")
        short = int(75 / 0.875)  # 85
        new = (short, int(short * img.width / img.height)) if img.height <= img.width else \
            (int(short * img.height / img.width), short)
        img = img.resize(new[::-1], resample=Image.Resampling.BILINEAR if how.endswith("bilinear") else Image.Resampling.BICUBIC)
        top, left = int(round((new[0] - 75) / 2.0)), int(round((new[1] - 75) / 2.0))
        theirs_x = np.asarray(img.crop((left, top, left + 75, top + 75)), np.float32)[None] / 127.5 - 1
    ours_x = npxception.preprocess_input(npxception.load_image(photo, (75, 75)))[None]
    dump = {"block1_conv1": model.run_layer("block1_conv1", [theirs_x])}
    report = compare(model, dump, ours_x, images=[photo])
    d = report.sources[0].diagnosis
    assert d is not None and d.cause == "input_resize" and d.parameter == how, "\n".join(report.source_lines())
    assert "resize of the shorter side to 85 (75 / 0.875) then centre crop" in d.explanation
