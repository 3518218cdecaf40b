"""The input stage (npxception/input_stage.py): in-graph preprocessing run by model(x), recorded in the
manifest, shown by summary(), and what predict() feeds a model that has one. No framework needed.

Keras' own layers are checked against these formulas in test_real_world_files.py (converted models
with Rescaling and Normalization against keras_model.predict); here the formulas are checked against
float64 arithmetic written out, and the plumbing (manifest, predict's feed) against a model without a stage.
"""

from __future__ import annotations

import functools
import re
import types

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import npxception
from npxception import input_stage as stage
from npxception import weights as wfile
from npxception.model import XceptionModel

RESCALE = {"kind": "rescaling", "name": "rescaling", "scale": 1 / 127.5, "offset": -1.0}
NORMALIZE = {"kind": "normalization", "name": "norm", "mean": [120.0, 110.0, 100.0],
             "variance": [3000.0, 2500.0, 4000.0], "epsilon": 1e-7}


def _with_stage(model, steps):
    return XceptionModel(model.weights, variant=model.variant, head=model.head, input_shape=model.input_shape,
                         source=model.source, input_stage=steps)


@pytest.fixture(scope="module")
def plain():
    # float64 and 71x71: the stage's own rounding is then far below any tolerance used here
    return npxception.Xception(include_top=True, classes=3, input_shape=(71, 71, 3), dtype="float64", seed=3)


def test_formulas_against_float64_and_input_untouched():
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    before = x.copy()
    y = stage.apply(stage.validate([RESCALE, NORMALIZE], 3), x)
    x64 = x.astype(np.float64) / 127.5 - 1
    ref = (x64 - np.array(NORMALIZE["mean"])) / np.sqrt(NORMALIZE["variance"])
    # float32 throughout, as Keras computes it: a few ulps of 1e-7 relative
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-7)
    assert y.dtype == np.float32 and np.array_equal(x, before)


@pytest.mark.parametrize("step, message", [
    ({"kind": "lambda", "name": "l"}, "unknown kind"),
    ({"kind": "rescaling", "name": "r", "scale": float("nan"), "offset": 0.0}, "NaN"),
    ({"kind": "rescaling", "name": "r", "scale": [1.0, 2.0], "offset": 0.0}, "3 per-channel"),
    ({"kind": "normalization", "name": "n", "mean": 0.0, "variance": -1.0}, "negative"),
    ({"kind": "resizing", "name": "z", "height": 0, "width": 5}, "int height and width in \\[1, 2048\\]"),
    # a hostile manifest: a target that would make every call allocate gigabytes, wrong types
    ({"kind": "resizing", "name": "z", "height": 10**9, "width": 5}, "in \\[1, 2048\\], found 1000000000"),
    ({"kind": "center_crop", "name": "c", "height": 71.0, "width": 71}, "int height and width"),
    ({"kind": "center_crop", "name": "c", "height": True, "width": 71}, "int height and width"),
    ({"kind": "center_crop", "name": "c", "height": 71, "width": 71, "keras": "keras4"}, "keras: expected one of"),
    ({"kind": "resizing", "name": "z", "height": 71, "width": 71, "interpolation": "bicubic"},
     "interpolation: expected one of"),
    ({"kind": "resizing", "name": "z", "height": 71, "width": 71, "crop_to_aspect_ratio": 1}, "must be booleans"),
    ({"kind": "resizing", "name": "z", "height": 71, "width": 71, "keras": "keras3", "crop_to_aspect_ratio": True,
      "pad_to_aspect_ratio": True}, "not both true"),
    ({"kind": "resizing", "name": "z", "height": 71, "width": 71, "keras": "tf_keras", "pad_to_aspect_ratio": True},
     "Keras 3 only"),
    ({"kind": "resizing", "name": "z", "height": 71, "width": 71, "fill_value": float("inf")}, "finite number"),
    ({**{"kind": "arithmetic", "name": "p", "op": "power", "scalar": 2.0, "scalar_first": False,
         "keras_class": "Power"}}, "op: expected one of"),
    ({"kind": "arithmetic", "name": "d", "op": "divide", "scalar": float("nan"), "scalar_first": False,
      "keras_class": "TrueDivide"}, "scalar: expected a finite number"),
    ({"kind": "arithmetic", "name": "d", "op": "divide", "scalar": [127.5], "scalar_first": False,
      "keras_class": "TrueDivide"}, "scalar: expected a finite number"),
    ({"kind": "arithmetic", "name": "d", "op": "divide", "scalar": 127.5, "scalar_first": 0,
      "keras_class": "TrueDivide"}, "boolean scalar_first"),
])
def test_bad_steps_refused(step, message):
    with pytest.raises(ValueError, match=message):
        stage.validate([step], 3)


def test_model_with_rescaling_takes_pixels(plain):
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 71, 71, 3))
    ours = _with_stage(plain, [RESCALE])
    assert ours.takes_pixels and not plain.takes_pixels
    # x * (1/127.5) - 1 and x / 127.5 - 1 differ by float64 rounding only
    np.testing.assert_allclose(ours(pixels), plain(npxception.preprocess_input(pixels)), rtol=1e-10)


def test_input_stage_steps_are_captured_by_their_keras_names(plain):
    """A Rescaling or Normalization computes something before the backbone, so capture takes its Keras
    name as it takes a backbone layer's (reviewer 16 found `rescaling_1` refused as if it computed
    nothing); each step's output is its formula on the previous one's."""
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 71, 71, 3))
    ours = _with_stage(plain, [RESCALE, NORMALIZE])
    y, acts = ours.forward(pixels, capture=["rescaling", "norm", "block1_conv1"])
    assert set(acts) == {"rescaling", "norm", "block1_conv1"}
    scaled = pixels * RESCALE["scale"] + RESCALE["offset"]
    # keras.layers.Normalization: (x - mean) / max(sqrt(variance), epsilon)
    normed = (scaled - np.array(NORMALIZE["mean"])) / np.maximum(np.sqrt(NORMALIZE["variance"]), NORMALIZE["epsilon"])
    np.testing.assert_allclose(acts["rescaling"], scaled, rtol=1e-12)  # float64: rounding only
    np.testing.assert_allclose(acts["norm"], normed, rtol=1e-12, atol=1e-12)
    # the backbone still reads the whole stage's output: the same as without capturing the stage
    np.testing.assert_array_equal(y, ours(pixels))
    np.testing.assert_array_equal(acts["block1_conv1"], ours.forward(pixels, capture="block1_conv1")[1]["block1_conv1"])
    assert set(ours.forward(pixels, capture="norm")[1]) == {"norm"}
    with pytest.raises(ValueError, match="unknown layer name 'rescale'.*did you mean.*rescaling"):
        ours.forward(pixels, capture=["rescale"])


def _round_trip(model, path):
    """``(manifest, the loaded model, its summary)`` after saving ``model``: the stage survives, takes pixels."""
    model.save(path)
    manifest, _ = wfile.read(path)
    loaded = npxception.load(path)
    assert loaded.input_stage == model.input_stage and loaded.takes_pixels and manifest["feed"] == "pixels"
    lines = []
    loaded.summary(print_fn=lines.append)
    return manifest, loaded, "\n".join(lines)


def test_manifest_round_trip_and_version(plain, tmp_path):
    ours = _with_stage(plain, [RESCALE, NORMALIZE, {"kind": "resizing", "name": "resize", "height": 71,
                                                    "width": 71}])
    manifest, _, text = _round_trip(ours, tmp_path / "staged.npz")
    # a version-2 reader would skip the stage and compute something else: it must refuse the file
    assert manifest["format_version"] == wfile.WITH_INPUT_STAGE == 3
    assert "input stage: rescaling (Rescaling): x * 0.00784314 + -1" in text
    assert "input stage: resize (Resizing): 71x71, interpolation=bilinear [writer unrecorded" in text
    assert "raw pixels" in text


PREPROCESS_INPUT = [{"kind": "arithmetic", "name": "true_divide", "op": "divide", "scalar": 127.5, "scalar_first": False,
                     "keras_class": "TrueDivide"},
                    {"kind": "arithmetic", "name": "subtract", "op": "subtract", "scalar": 1.0, "scalar_first": False,
                     "keras_class": "Subtract"}]


def test_arithmetic_stage_round_trip_version_and_pixels(plain, tmp_path):
    """preprocess_input as operation nodes: format 5 (a version-4 reader would refuse the step as an unknown
    kind without saying a newer npxception reads it), shown by summary(), fed raw pixels by predict()."""
    manifest, loaded, text = _round_trip(_with_stage(plain, PREPROCESS_INPUT), tmp_path / "ops.npz")
    assert manifest["format_version"] == wfile.WITH_ARITHMETIC == 5
    assert "input stage: true_divide (TrueDivide): x / 127.5\n  input stage: subtract (Subtract): x - 1" in text
    image = np.random.default_rng(5).integers(0, 256, (71, 71, 3), dtype=np.uint8)
    # npxception's preprocess_input divides too: the same float64 numbers, so the same scores
    assert npxception.predict(image, model=loaded, top=3) == npxception.predict(image, model=plain, top=3)


def test_feed_contradicting_the_stage_is_refused(plain, tmp_path):
    import json

    path = _with_stage(plain, [RESCALE]).save(tmp_path / "a.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    manifest = json.loads(str(arrays.pop(wfile.MANIFEST_KEY)))
    manifest["feed"] = "preprocess_input"
    arrays[wfile.MANIFEST_KEY] = np.array(json.dumps(manifest))
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(ValueError, match="feed"):
        npxception.load(tmp_path / "b.npz")


def test_predict_feeds_raw_pixels_to_a_model_that_rescales(plain):
    image = np.random.default_rng(2).integers(0, 256, (71, 71, 3), dtype=np.uint8)
    ours = npxception.predict(image, model=_with_stage(plain, [RESCALE]), top=3)
    theirs = npxception.predict(image, model=plain, top=3)
    assert [p[0] for p in ours] == [p[0] for p in theirs]
    np.testing.assert_allclose([p[2] for p in ours], [p[2] for p in theirs], rtol=1e-9)


CROP = {"kind": "center_crop", "name": "crop", "height": 71, "width": 71}


def test_geometry_of_a_fixed_size_source_admits_that_size_only(plain):
    """A manifest without source_input_shape (written before it existed): the source size is the backbone's."""
    ours = _with_stage(plain, [CROP])
    assert ours.source_input_shape == (71, 71, 3)
    with pytest.raises(ValueError, match="takes 71x71 images.*found 80x80"):
        ours(np.zeros((1, 80, 80, 3)))


def test_geometry_of_a_variable_size_source_crops_and_resizes(plain):
    """The stage brings any size the source takes to the backbone's (formulas vs TF: test_geometry_tf.py)."""
    x = np.random.default_rng(4).uniform(0, 255, (2, 90, 77, 3))
    crop = XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(71, 71, 3),
                         input_stage=[dict(CROP, keras="tf_keras")], source_input_shape=(None, None, 3))
    # the crop is a slice: exactly the backbone on the centred window ((90 - 71) // 2 = 9, (77 - 71) // 2 = 3)
    np.testing.assert_array_equal(crop(x), plain(x[:, 9:80, 3:74]))
    # smaller than the target: tf_keras resizes (smart_resize), Keras 3 refuses, naming the layer and size
    assert crop(x[:, :60, :50]).shape == (2, 3)
    keras3 = XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(71, 71, 3),
                           input_stage=[dict(CROP, keras="keras3")], source_input_shape=(None, None, 3))
    np.testing.assert_array_equal(keras3(x), crop(x))
    with pytest.raises(ValueError, match="layer crop \\(CenterCrop\\) cannot take 60x50 images.*at least 71x71"):
        keras3(x[:, :60, :50])
    # a step written before the 'keras' field: only its target size is determined
    with pytest.raises(ValueError, match="cannot take anyxany images: .*does not record which Keras wrote it"):
        XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(71, 71, 3),
                      input_stage=[CROP], source_input_shape=(None, None, 3))


def test_variable_source_round_trip_summary_and_format_version(plain, tmp_path):
    resize = {"kind": "resizing", "name": "resize", "height": 71, "width": 71, "interpolation": "nearest",
              "keras": "keras3", "crop_to_aspect_ratio": True}
    ours = XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(71, 71, 3),
                         input_stage=[resize, RESCALE], source_input_shape=(None, None, 3))
    path = ours.save(tmp_path / "variable.npz")
    manifest, _ = wfile.read(path)
    # a version-3 reader would refuse other sizes and let predict() resize photos itself: it must refuse the file
    assert manifest["format_version"] == wfile.WITH_SOURCE_INPUT_SHAPE == 4
    assert manifest["source_input_shape"] == [None, None, 3]
    loaded = npxception.load(path)
    assert loaded.source_input_shape == (None, None, 3) and loaded.input_stage == ours.input_stage
    lines = []
    loaded.summary(print_fn=lines.append)
    assert "resize (Resizing): 71x71, interpolation=nearest, crop_to_aspect_ratio=True [Keras 3]" in lines[0]
    x = np.random.default_rng(5).uniform(0, 255, (1, 100, 130, 3))
    np.testing.assert_array_equal(loaded(x), ours(x))


@pytest.mark.parametrize("shape, message", [
    ([None, 10**6, 3], "source_input_shape: expected .* in \\[1, 2048\\]"),
    (["71", 71, 3], "source_input_shape: expected"),
    ([71, 71], "source_input_shape: expected"),
    ([None, None, 3], "brings the source's \\(None, None, 3\\) images to \\(None, None\\)"),
])
def test_hostile_source_input_shape_is_refused(plain, tmp_path, shape, message):
    import json

    path = _with_stage(plain, [RESCALE]).save(tmp_path / "a.npz", golden=False)
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    manifest = json.loads(str(arrays.pop(wfile.MANIFEST_KEY)))
    manifest["source_input_shape"] = shape
    arrays[wfile.MANIFEST_KEY] = np.array(json.dumps(manifest))
    np.savez(tmp_path / "b.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        npxception.load(tmp_path / "b.npz")


def test_too_many_steps_are_refused():
    with pytest.raises(ValueError, match="at most 16 steps, found 17"):
        stage.validate([RESCALE] * 17, 3)


def test_predict_stacks_photos_of_different_sizes_after_the_stage(plain):
    model = XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(71, 71, 3),
                          input_stage=[{"kind": "resizing", "name": "r", "height": 71, "width": 71,
                                        "keras": "keras3"}, RESCALE], source_input_shape=(None, None, 3))
    rng = np.random.default_rng(6)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(90, 120, 3), (71, 71, 3), (50, 64, 3)]]
    together = npxception.predict(images, model=model, top=3)
    # one at a time, each image is a batch of one through model(x): the same scores
    for image, preds in zip(images, together):
        alone = model(image[None].astype(np.float64))[0]
        np.testing.assert_allclose([p[2] for p in preds], np.sort(alone)[::-1], rtol=1e-12)
    # a filter for photos the model resizes itself would be ignored: refused, naming the stage's layer
    with pytest.raises(ValueError, match="interpolation: this model takes each photo at its own size and its "
                                         "input stage \\(r\\) resizes it"):
        npxception.predict(images, model=model, interpolation="bilinear")


def test_cli_refuses_a_resize_filter_for_a_model_that_resizes_in_its_stage(plain, tmp_path, capsys):
    from PIL import Image

    from npxception.cli import main

    model = XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(71, 71, 3),
                          input_stage=[{"kind": "resizing", "name": "r", "height": 71, "width": 71,
                                        "keras": "keras3"}, RESCALE], source_input_shape=(None, None, 3))
    path = model.save(tmp_path / "variable.npz")
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((80, 90, 3), np.uint8)).save(photo)
    assert main(["predict", "--weights", str(path), str(photo)]) == 0
    capsys.readouterr()
    assert main(["predict", "--weights", str(path), "--interpolation", "bilinear", str(photo)]) == 2  # usage error
    err = capsys.readouterr().err
    assert "--interpolation: this model takes each photo at its own size" in err and "Traceback" not in err, err


# --------------------------------------------------------------------------- a photo staged from the pixels it reads

def _geometry_steps(draw, name):
    """One geometry step of any kind, as the converter writes it (Keras 3 or tf_keras, every option)."""
    kind = draw(st.sampled_from(stage.GEOMETRY))
    step = {"kind": kind, "name": name, "height": draw(st.integers(1, 24)), "width": draw(st.integers(1, 24)),
            "keras": draw(st.sampled_from(stage.KERAS))}
    if kind == "resizing":
        flag = draw(st.sampled_from([None, "crop_to_aspect_ratio"] + (["pad_to_aspect_ratio"] * (
            step["keras"] == "keras3"))))
        step.update(interpolation=draw(st.sampled_from(["bilinear", "nearest"])),
                    fill_value=draw(st.sampled_from([0.0, -1.5, 200.0])))
        if flag:
            step[flag] = True
    return step


PIXELWISE = [RESCALE, NORMALIZE, {"kind": "rescaling", "name": "per_channel", "scale": [0.5, 1 / 255, 3.0],
                                  "offset": [0.25, -0.5, 1e-3]},
             PREPROCESS_INPUT[0], {**PREPROCESS_INPUT[1], "scalar_first": True}]  # x / 127.5, 1 - x


@st.composite
def photo_stages(draw):
    """``(steps, (H, W))``: pixelwise steps, then one geometry step, then more of either, at a size they take."""
    before = draw(st.lists(st.sampled_from(PIXELWISE), max_size=2))
    after = draw(st.lists(st.one_of(st.sampled_from(PIXELWISE), st.builds(lambda: None)), max_size=2))
    steps = before + [_geometry_steps(draw, "first")]
    steps += [s if s is not None else _geometry_steps(draw, f"then{i}") for i, s in enumerate(after)]
    hw = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    try:
        steps = stage.validate(steps, 3)
        stage.output_size(steps, hw)
    except ValueError:  # a size the Keras that wrote the step refuses (tested above and in test_geometry_tf.py)
        assume(False)
    return steps, hw


@given(photo_stages(), st.sampled_from(["float32", "float64"]), st.booleans(), st.integers(0, 2**32 - 1))
@settings(max_examples=150)
def test_a_photo_staged_from_the_pixels_it_reads_equals_the_whole_photo_path(case, dtype, takes_pixels, seed):
    """apply_gathered reads only what the first geometry step reads (two rows and columns per output
    coordinate for bilinear, one for nearest and crops), feeds and preprocesses those, and gives the bits of
    apply() on the whole fed photo, its readable twin: for every step kind before and after, in both dtypes,
    with predict's own feed (img_to_array's float32, preprocess_input or raw pixels, the model's dtype), from
    a NumPy array and from a PIL image."""
    from PIL import Image

    from npxception.images import read_pixels
    from npxception.prediction import feed as _feed

    steps, hw = case
    feed = functools.partial(_feed, types.SimpleNamespace(takes_pixels=takes_pixels, dtype=np.dtype(dtype)))
    photo = np.random.default_rng(seed).integers(0, 256, (*hw, 3), dtype=np.uint8)
    whole = stage.apply(steps, feed(photo)[None])
    reads = []

    def read(rows, cols):
        assert np.all(np.diff(rows) > 0) and np.all(np.diff(cols) > 0)  # sorted, distinct
        reads.append((len(rows), len(cols)))
        return photo[rows][:, cols]

    gathered = stage.apply_gathered(steps, hw, read, feed)
    from_pil = stage.apply_gathered(steps, hw, functools.partial(read_pixels, Image.fromarray(photo)), feed)
    first = next(s for s in steps if s["kind"] in stage.GEOMETRY)
    h, w = stage.output_size([first], hw)
    taps = 2 if stage.geometry_at(first, hw).interpolation == "bilinear" else 1
    assert len(reads) == 1 and reads[0][0] <= taps * h and reads[0][1] <= taps * w, (reads, (h, w), first)
    for ours in (gathered, from_pil):
        assert ours.dtype == whole.dtype == np.dtype(dtype) and ours.shape == whole.shape
        # bit for bit (also -0.0 against 0.0): the same values through the same arithmetic
        assert np.array_equal(ours.view(f"u{ours.itemsize}"), whole.view(f"u{whole.itemsize}")), (
            f"{steps} at {hw}: ours {ours.ravel()[:6]} vs whole {whole.ravel()[:6]}")


def test_a_photo_staged_from_its_pixels_checks_what_it_computes(plain):
    """model.backbone_input_gathered refuses what backbone_input refuses: the stage's size rule, naming the
    layer, and non-finite values among what it feeds (never a full-size mask of the photo)."""
    model = XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(71, 71, 3),
                          input_stage=[dict(CROP, keras="keras3")], source_input_shape=(None, None, 3))
    photo = np.random.default_rng(7).integers(0, 256, (90, 80, 3), dtype=np.uint8)

    def read(rows, cols):
        return photo[rows][:, cols]

    def feed(p):
        return npxception.preprocess_input(p)

    x = model.backbone_input_gathered((90, 80), read, feed)
    np.testing.assert_array_equal(x, model.backbone_input(feed(photo)[None]))
    with pytest.raises(ValueError, match="layer crop \\(CenterCrop\\) cannot take 60x50 images"):
        model.backbone_input_gathered((60, 50), read, feed)
    with pytest.raises(ValueError, match="x: contains NaN or Inf"):
        model.backbone_input_gathered((90, 80), read, lambda p: np.full(p.shape, np.inf))


# --------------------------------------------------------------------------- photos at their own size, no geometry

@pytest.fixture(scope="module")
def any_size(plain):
    """``Input((None, None, 3))`` -> Rescaling -> a backbone of any size: nothing fixes the photo's size."""
    return XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(None, None, 3),
                         input_stage=[RESCALE], source_input_shape=(None, None, 3))


def test_predict_runs_each_photo_at_its_own_size_when_nothing_fixes_it(any_size):
    """Photos of three sizes (not stackable) in one call, batched by two: each gets model(photo[None])'s
    scores, in order; a filter without a size to resize to would be ignored: refused; target_size resizes
    as load_img(target_size=...) does; a photo below 7x7 (what the network computes, as Keras' predict does:
    tests/test_small_inputs.py) is refused naming it and the minimum."""
    from npxception.images import resize_array

    rng = np.random.default_rng(8)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(90, 120, 3), (71, 71, 3), (75, 80, 3)]]
    together = npxception.predict(images, model=any_size, top=3, batch_size=2)
    for image, preds in zip(images, together):
        alone = any_size(image[None].astype(np.float64))[0]  # float64 model, same ops: rounding far below 1e-12
        np.testing.assert_allclose([p[2] for p in preds], np.sort(alone)[::-1], rtol=1e-12)
    with pytest.raises(ValueError, match="interpolation: this model takes each photo at its own size and nothing "
                                         "resizes it .*give target_size"):
        npxception.predict(images, model=any_size, interpolation="bilinear")
    resized = npxception.predict(images[0], model=any_size, top=3, target_size=(80, 72), interpolation="bilinear")
    expected = any_size(resize_array(images[0], (80, 72), "bilinear")[None].astype(np.float64))[0]
    np.testing.assert_allclose([p[2] for p in resized], np.sort(expected)[::-1], rtol=1e-12)
    small = [images[0], rng.integers(0, 256, (6, 90, 3), dtype=np.uint8)]
    with pytest.raises(ValueError, match="images\\[1\\]: images must be at least 7x7, found 6x90: layer "
                                         "block1_conv2 would have no output pixel \\(Keras raises on it too\\)$"):
        npxception.predict(small, model=any_size)
    with pytest.raises(ValueError, match="target_size: images must be at least 7x7, found 60x2: layer block1_conv1"):
        npxception.predict(images, model=any_size, target_size=(60, 2))


def test_size_option_is_checked_against_the_model_before_any_output(plain, any_size, tmp_path, capsys):
    from PIL import Image

    from npxception.cli import main

    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((80, 90, 3), np.uint8)).save(photo)
    fixed = plain.save(tmp_path / "fixed.npz")
    assert main(["predict", "--weights", str(fixed), "--size", "80x90", "--json", str(photo)]) == 2  # usage error
    out = capsys.readouterr()
    # in the CLI's terms: the option and the size it takes, not model(x)'s API advice (load_image(...))
    assert out.out == "" and ("--size 80x90: this model takes 71x71 images only (the source model's input shape "
                              "(71, 71, 3)), found 80x90; give --size 71x71, or leave it out: photos are then "
                              "resized to 71x71") in out.err and "load_image" not in out.err, out
    with pytest.raises(ValueError, match=re.escape("target_size: this model takes 71x71 images only (the source "
                                                   "model's input shape (71, 71, 3)), found 80x90; give "
                                                   "target_size=(71, 71), or leave it out")):
        npxception.predict(np.zeros((80, 90, 3), np.uint8), model=npxception.load(fixed), target_size=(80, 90))
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error
        main(["predict", "--weights", str(fixed), "--size", "80", str(photo)])
    assert "expected HxW" in capsys.readouterr().err
    variable = any_size.save(tmp_path / "any.npz")
    assert main(["predict", "--weights", str(variable), "--interpolation", "bilinear", "--json", str(photo)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "give --size HxW too" in out.err, out
