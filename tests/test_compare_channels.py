"""compare against ports of grayscale and 4-channel models: the layout follows the model's channels.

compare reads an NCHW graph's input and a dump's ``__input__`` by the model's channel count (it read
them as 3-channel images only: a 1-channel NCHW dump's input was not recognised as NCHW), and refuses by
name a shape that reads both ways. The ports are NCHW ONNX graphs written with onnx.helper as
``torch.onnx.export`` writes a timm-style port (tests/onnx_port.py) and dumps of tests/ports.py's port,
of 75x75 models with 1 and 4 input channels (README "Grayscale and 4-channel models").

Tolerances: compare's float32 default (rtol 1e-4 of max|theirs|, tests/test_onnx_exports.py): a correct
port's layers differ by round-off (< 1e-6), a planted convention by > 1e-4 at its layer.
"""

from __future__ import annotations

import numpy as np
import pytest
from ports import PORT_SIZE, Conventions, run_port

import npxception
from npxception import architecture as arch
from npxception.compare import INPUT_KEY, compare
from npxception.compare.sides import to_nhwc

BN_LAYERS = [layer.name for layer in arch.backbone() if layer.kind == "bn"]
CORRECT = dict(epsilon=1e-3, pool_pads="same", softmax=True)  # Keras' conventions, in an NCHW graph


@pytest.fixture(scope="module", params=[1, 4], ids=["gray", "rgba"])
def case(request, tmp_path_factory):
    """(model, x, port(name, **build options)) for a ``channels``-channel model, built once per module."""
    from onnx_port import build

    c = request.param
    model = npxception.Xception(input_shape=(PORT_SIZE, PORT_SIZE, c), classes=10, seed=3)
    x = np.random.default_rng(1).uniform(-1, 1, (1, PORT_SIZE, PORT_SIZE, c)).astype(np.float32)
    folder, built = tmp_path_factory.mktemp(f"channels{c}"), {}

    def port(name, **options):
        if name not in built:
            built[name] = folder / f"{name}.onnx"
            build(model, built[name], **options)
        return built[name]
    return model, x, port


def run(model, path, x):
    return compare(model, path, x, layout="NCHW", names="timm.legacy_xception")


def causes(report) -> dict:
    return {r.layer: r.diagnosis.cause if r.diagnosis else None for r in report.sources}


def test_a_correct_nchw_export_has_no_divergence(case):
    """Keras' conventions in an NCHW graph declared (N, C, ?, ?): without --layout compare reads the input
    as NCHW by the model's channels (it took only a declared 3 for NCHW, and fed a 1- or 4-channel graph
    NHWC for onnxruntime to refuse; then it refused any NCHW input until told, though the README says it
    is read from the input's shape), and every one of the 133 layers agrees."""
    model, x, port = case
    report = compare(model, port("correct", **CORRECT), x, names="timm.legacy_xception")
    assert report.ok and report.complete and not report.sources, str(report)
    assert report.compared == len(model.layer_names) and report.agreement.max_dp < 1e-6


def test_a_convention_that_differs_is_named(case):
    """The grayscale port with PyTorch's BN epsilon, timm's pool padding and logits: every BN layer,
    block3_pool and the classifier named, and nothing else (the 3-channel port's signature,
    docs/discrepancies.md); a port fed twice our input is a source at its stem that no cause of RGB's
    (BGR, caffe or torch preprocessing: three channels, three means) is tried on, or crashes on: the
    fitted affine map names it. The
    4-channel port reads its image as BGRA (OpenCV's order) and is fed RGBA: named at the stem."""
    model, x, port = case
    if model.channels == 1:
        report = run(model, port("pytorch"), x)
        assert causes(report) == {n: "bn_epsilon" for n in BN_LAYERS} | {
            "block3_pool": "pool_symmetric_padding"}, str(report)
        report = compare(model, run_port(model, 2 * x), x)
        # no cause of RGB's is tried; the fitted per-channel affine map (review 22) names the factor 2
        d = report.sources[0].diagnosis
        assert report.sources[0].layer == "block1_conv1" and d is not None and d.cause == "input_affine", str(report)
        assert d.parameter["scale"] == pytest.approx([2.0], rel=1e-4) and "ours x -> x * 2" in d.explanation
        return
    report = run(model, port("bgra", channel_order=(2, 1, 0, 3), **CORRECT), x)
    assert causes(report) == {"block1_conv1": "input_bgr"}, str(report)
    assert "BGRA channel order instead of RGBA" in report.sources[0].diagnosis.explanation


def test_an_nchw_dump_and_its_input_are_read_by_the_models_channels(case):
    """A dump of the port in NCHW with its input, no layout given: the input (N, C, 75, 75) is NCHW by
    the model's channels (a 1-channel one was read as NHWC and refused as a different shape). The
    grayscale dump compares clean; the 4-channel one, with PyTorch's epsilon, names it at every BN."""
    model, x, _ = case
    eps = 1e-3 if model.channels == 1 else 1e-5
    dump = {k: v.transpose(0, 3, 1, 2) if v.ndim == 4 else v
            for k, v in run_port(model, x, Conventions(bn_epsilon=eps)).items()}
    dump[INPUT_KEY] = x.transpose(0, 3, 1, 2)
    report = compare(model, dump)
    assert report.rows[0].layer == "input" and report.rows[0].passed, str(report)
    assert causes(report) == ({} if eps == 1e-3 else {n: "bn_epsilon" for n in BN_LAYERS}), str(report)
    assert report.ok == (eps == 1e-3)


def test_a_shape_that_reads_both_ways_is_refused_by_name():
    """(N, 128, 128, 128) is NHWC and NCHW at once for a 128-channel map (block2_sepconv1 of a 259x259
    input), as (N, 75, 75, 75) is for a 75-channel model's 75x75 input: refused, the tensor named, never
    read one way by default. A 1x1 map reads the same both ways and passes."""
    square = np.zeros((1, 128, 128, 128), np.float32)
    with pytest.raises(ValueError, match="'block2_sepconv1' .* reads as NCHW and as NHWC.*layout="):
        to_nhwc({"block2_sepconv1": square}, {"block2_sepconv1": square.shape}, None, 3)
    assert to_nhwc({"block2_sepconv1": square}, {}, "NCHW", 3)["block2_sepconv1"].shape == square.shape
    with pytest.raises(ValueError, match=r"'__input__'.*\(1, 75, 75, 75\) reads as NCHW and as NHWC for a "
                                         r"75-channel model"):
        to_nhwc({INPUT_KEY: np.zeros((1, 75, 75, 75))}, {}, None, 75)
    one = np.arange(4.0).reshape(4, 1, 1, 1)
    assert (to_nhwc({"t": one}, {"t": (4, 1, 1, 1)}, None, 1)["t"] == one).all()
    for c, shape in ((1, (2, 1, 75, 75)), (4, (2, 4, 75, 75)), (1, (2, 75, 75, 1)), (4, (2, 75, 75, 4))):
        got = to_nhwc({INPUT_KEY: np.zeros(shape)}, {}, None, c)[INPUT_KEY]
        assert got.shape == (2, 75, 75, c), (c, shape)
