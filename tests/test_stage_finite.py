"""No NaN scores and no unusable file from an input stage that makes Inf or NaN.

An arithmetic step can make every pixel Inf (x / 0, a scalar beyond float32) or some (c / x at a zero
pixel): the converter and the manifest validator refuse the first kind, model(x) and predict refuse
the second naming the step, and save() never writes a file whose golden its own loader refuses.
The Keras configs with x / 0 are in tests/test_stage_ops.py (REFUSED["divide_by_zero"]).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import npxception
from npxception import golden as gold
from npxception import input_stage as stage
from npxception.network import XceptionModel


def _step(op, scalar, scalar_first=False):
    return {"kind": "arithmetic", "name": f"{op}_step", "op": op, "scalar": scalar, "scalar_first": scalar_first,
            "keras_class": "TFOpLambda"}


@pytest.fixture(scope="module")
def plain():
    return npxception.Xception(include_top=True, classes=3, input_shape=(71, 71, 3), seed=3)


def _with_stage(plain, steps, source=(71, 71, 3)):
    return XceptionModel(plain.weights, variant=plain.variant, head=plain.head, input_shape=(71, 71, 3),
                         input_stage=steps, source_input_shape=source)


def test_manifest_division_by_zero_is_refused(plain):
    with pytest.raises(ValueError, match=r"input_stage\[0\]: layer divide_step divides the image by zero"):
        stage.validate([_step("divide", 0.0)], 3)
    stage.validate([_step("divide", 0.0, scalar_first=True)], 3)  # 0 / x: finite except at a zero pixel (below)


def test_manifest_scalar_beyond_the_model_dtype_is_refused(plain):
    """1e300 is a finite float64, Inf in the float32 model computes in: every pixel would be Inf or NaN."""
    with pytest.raises(ValueError, match=r"input_stage\[0\]\.scalar: layer multiply_step's 1e\+300 is not a finite "
                                         r"float32 number"):
        _with_stage(plain, [_step("multiply", 1e300)])
    model64 = XceptionModel({k: v.astype(np.float64) for k, v in plain.weights.items()}, variant=plain.variant,
                            head=plain.head, input_shape=(71, 71, 3), input_stage=[_step("multiply", 1e300)])
    assert model64.dtype == np.float64  # finite in float64: the model computes in it


def test_model_refuses_a_stage_output_with_inf_naming_the_step(plain):
    """255 / x at a zero pixel is Inf (as in Keras): model(x) refuses it rather than return NaN scores."""
    model = _with_stage(plain, [_step("divide", 255.0, scalar_first=True), _step("subtract", 1.0)])
    x = np.full((1, 71, 71, 3), 10.0, np.float32)
    assert np.isfinite(model(x)).all()
    x[0, 5, 5, 1] = 0.0
    with pytest.raises(ValueError, match=r"x: the input stage's step divide_step \(TFOpLambda\): 255 / x gives NaN "
                                         r"or Inf on this input"):
        model(x)


def test_predict_refuses_a_photo_whose_stage_output_is_not_finite(plain, tmp_path):
    """The API's gathered path (a photo at its own size, a geometry step) checks the same."""
    from PIL import Image

    resize = {"kind": "resizing", "name": "r", "height": 71, "width": 71, "keras": "keras3",
              "crop_to_aspect_ratio": True}
    model = _with_stage(plain, [_step("divide", 255.0, scalar_first=True), resize], source=(None, None, 3))
    pixels = np.full((90, 80, 3), 100, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "ok.png")
    assert np.isfinite([s for _, _, s in npxception.predict(str(tmp_path / "ok.png"), model=model, top=3)]).all()
    pixels[40:50, 40:50] = 0  # inside the window the resize reads
    Image.fromarray(pixels).save(tmp_path / "black.png")
    with pytest.raises(ValueError, match=r"the input stage's step divide_step \(TFOpLambda\): 255 / x gives NaN"):
        npxception.predict(str(tmp_path / "black.png"), model=model, top=3)


def test_save_writes_no_file_whose_golden_load_refuses(plain, tmp_path):
    """A golden holding NaN (an overflowing model) is refused before the write, not on every later load."""
    model = _with_stage(plain, [])
    golden = gold.golden_for(model)
    bad = dataclasses.replace(golden.digests[0], sample=np.full_like(golden.digests[0].sample, np.nan))
    model.golden = dataclasses.replace(golden, digests=(bad,) + golden.digests[1:])
    path = tmp_path / "out.npz"
    with pytest.raises(ValueError, match=rf"not written: .*golden digest of layer '{bad.layer}' contains NaN or Inf"):
        model.save(path)
    assert list(tmp_path.iterdir()) == []
    model.golden = golden
    assert npxception.load(model.save(path)).golden.digests[0].layer == bad.layer  # the check passes a good one
