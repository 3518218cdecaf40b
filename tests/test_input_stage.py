"""The input stage (npxception/input_stage.py): in-graph preprocessing run by model(x), recorded in the
manifest, shown by summary(), and what predict() feeds a model that has one. No framework needed.

Keras' own layers are checked against these formulas in test_real_world_files.py (converted models
with Rescaling and Normalization against keras_model.predict); here the formulas are checked against
float64 arithmetic written out, and the plumbing (manifest, predict's feed) against a model without a stage.
"""

from __future__ import annotations

import numpy as np
import pytest

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
    y = stage.apply(stage.validate([RESCALE, NORMALIZE]), x)
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
    ({"kind": "resizing", "name": "z", "height": 0, "width": 5}, "positive int"),
])
def test_bad_steps_refused(step, message):
    with pytest.raises(ValueError, match=message):
        stage.validate([step])


def test_model_with_rescaling_takes_pixels(plain):
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 71, 71, 3))
    ours = _with_stage(plain, [RESCALE])
    assert ours.takes_pixels and not plain.takes_pixels
    # x * (1/127.5) - 1 and x / 127.5 - 1 differ by float64 rounding only
    np.testing.assert_allclose(ours(pixels), plain(npxception.preprocess_input(pixels)), rtol=1e-10)


def test_manifest_round_trip_and_version(plain, tmp_path):
    ours = _with_stage(plain, [RESCALE, NORMALIZE, {"kind": "resizing", "name": "resize", "height": 71,
                                                    "width": 71}])
    path = ours.save(tmp_path / "staged.npz")
    manifest, _ = wfile.read(path)
    # a version-2 reader would skip the stage and compute something else: it must refuse the file
    assert manifest["format_version"] == wfile.FORMAT_VERSION == 3 and manifest["feed"] == "pixels"
    loaded = npxception.load(path)
    assert loaded.input_stage == ours.input_stage and loaded.takes_pixels
    lines = []
    loaded.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "input stage: rescaling (Rescaling): x * 0.00784314 + -1" in text
    assert "input stage: resize (Resizing): 71x71" in text and "raw pixels" in text


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


def test_geometry_fixes_the_input_size(plain):
    ours = _with_stage(plain, [{"kind": "center_crop", "name": "crop", "height": 71, "width": 71}])
    with pytest.raises(ValueError, match="crop.*identities only at that size.*target_size=\\(71, 71\\)"):
        ours(np.zeros((1, 80, 80, 3)))
