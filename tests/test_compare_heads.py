"""compare's "predictions:" line reads each side's output by the activation its head states.

It once softmaxed any rows not summing to 1: a one-unit head (the keras.io recipe's one logit) was then
always "top-1 agreement 100%, max |Δp| 0", a flipped decision included, and a sigmoid multi-label
head's differences were under-reported. Now: softmax heads by class rankings and |Δp|; one unit and
sigmoid labels by yes/no decisions (p > 0.5, or z > 0 for a logit); an activation nothing states (a
dump) is never guessed.
"""

import os
import sys

import numpy as np
import pytest

from npxception.compare import agreement
from npxception.compare.report import UNKNOWN, output_activation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = [os.path.join(REPO, "examples", name) for name in ("chelsea.png", "coffee.png")]


# ---- agreement() on its own: the reviewer's cases ---------------------------------------------------

def test_one_sigmoid_unit_is_a_decision_never_a_softmax():
    a = agreement([[0.1], [0.7]], [[0.9], [0.8]], ours_activation="sigmoid", theirs_activation="sigmoid")
    assert (a.decisions, a.flips, a.top1) == (0.5, 1, None)
    assert a.max_dp == pytest.approx(0.8) and "decided at p > 0.5" in a.note
    assert "decisions agree 50.0% (1 flipped), max |Δp| 0.8" in str(a)


def test_one_logit_decides_at_zero_and_reports_the_logit_difference():
    a = agreement([[-0.00016]], [[4.99984]], ours_activation=None, theirs_activation="linear")
    assert (a.decisions, a.flips, a.max_dp) == (0.0, 1, None) and a.max_dz == pytest.approx(5.0)
    assert "both logits; decided at z > 0" in a.note
    # a logit against a sigmoid probability: the logit gets the sigmoid the other head states
    b = agreement([[2.0]], [[0.2]], ours_activation=None, theirs_activation="sigmoid")
    assert b.flips == 1 and b.max_dp == pytest.approx(1 / (1 + np.exp(-2.0)) - 0.2)
    assert "sigmoid applied to ours" in b.note


def test_sigmoid_labels_are_compared_label_by_label():
    a = agreement([[0.1, 0.9, 0.45]], [[0.6, 0.9, 0.4]], ours_activation="sigmoid", theirs_activation="sigmoid")
    assert a.per_label_dp == pytest.approx([0.5, 0.0, 0.05]) and a.max_dp == pytest.approx(0.5)  # not 0.115
    assert (a.decisions, a.flips) == (pytest.approx(2 / 3), 1)
    assert "label decisions agree 66.7% (1 flipped), max |Δp| per label 0.5, 0, 0.05" in str(a)


def test_softmax_head_and_logits_on_the_other_side():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 10))
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    a = agreement(p, z, ours_activation="softmax", theirs_activation=None)
    assert (a.top1, a.top5_overlap, a.decisions) == (1.0, 1.0, None) and a.max_dp < 1e-12
    assert "theirs logits, ours softmax: softmax applied to theirs" in a.note


def test_an_unknown_activation_is_not_guessed():
    # one column: no threshold is right for both a probability and a logit, so no decision
    a = agreement([[0.3]], [[-2.0]], ours_activation="sigmoid", theirs_activation=UNKNOWN)
    assert a.decisions is None and a.max_dp is None and a.max_dz == pytest.approx(2.3)
    assert "theirs activation unknown" in a.note and "no yes/no decision" in a.note
    # several: rankings (any monotonic activation keeps them) and the values as they are
    b = agreement([[0.2, 0.8]], [[3.0, -1.0]])
    assert (b.top1, b.max_dp, b.max_dz) == (0.0, None, pytest.approx(2.8))
    assert "neither side's activation known" in b.note
    # a softmax over one unit is always 1: never applied to a logit
    c = agreement([[1.0]], [[-3.0]], ours_activation="softmax", theirs_activation=None)
    assert c.max_dz == pytest.approx(4.0) and "compared as logits" in c.note


def test_our_output_activation_comes_from_the_head():
    assert output_activation([{"kind": "dense", "name": "d", "activation": "linear"}]) is None
    assert output_activation([{"kind": "dense", "name": "d", "activation": "sigmoid"}]) == "sigmoid"
    assert output_activation([{"kind": "dense", "name": "d", "activation": None},
                              {"kind": "activation", "name": "a", "activation": "softmax"}]) == "softmax"


# ---- the command line on the keras.io recipe (examples/finetune_recipe.py): one logit -------------

@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """examples/finetune_recipe.py's recipe.keras (one logit), its conversion, and a copy whose logit is negated."""
    from npxception import weights_tools
    from npxception.network import XceptionModel

    work = tmp_path_factory.mktemp("recipe")
    sys.path.insert(0, os.path.join(REPO, "examples"))
    try:
        import finetune_recipe
    finally:
        sys.path.pop(0)
    # The example's own model, data and fit() step (main() without the command line), run eagerly: tracing
    # Xception's training graph took 19-21 s of the fixture against 5-8 s for the eager step (measured here,
    # 2026-11-30; keras_corpus._fit_one_step says the same). The step's arithmetic is the same kernels, and the
    # file keeps the example's compile config (run_eagerly set on the model after compile() is not saved).
    # The example itself, as its command line, runs in tests/test_readme.py (README's first commands).
    model = finetune_recipe.build(71, imagenet=False)
    model.run_eagerly = True
    images, labels = finetune_recipe.demo_data(71)
    model.fit(images, labels, epochs=1, batch_size=2, verbose=0)
    model.save(work / "recipe.keras")
    model = weights_tools.read(work / "recipe.keras")
    assert model.classes == 1 and model.classifier_activation is None
    p = dict(model.weights)
    # The logit's Dense by the head's record, not by name: Keras 3 auto-names it "dense" only in a process
    # that has built no Dense before (in a shared xdist worker it is "dense_N").
    dense = [h for h in model.head if h["kind"] == "dense"][-1]["name"]
    # The logit negated, so that every decision flips whatever the recipe's training left: a shifted bias
    # flipped only logits near 0, and the recipe's one fit() step does not fix them (random in a shared worker).
    p[f"{dense}/kernel"], p[f"{dense}/bias"] = -p[f"{dense}/kernel"], -p[f"{dense}/bias"]
    XceptionModel(p, variant=model.variant, head=model.head, input_shape=model.input_shape, labels=model.labels,
                  source=f"{dense} negated", input_stage=model.input_stage,
                  source_input_shape=model.source_input_shape,
                  source_data_format=model.source_data_format).save(work / "altered.npz")
    return work


def _predictions(capsys, *argv):
    from npxception import cli

    code = cli.main(["compare", *map(str, argv)])
    lines = capsys.readouterr().out.splitlines()
    return code, next(line for line in lines if line.startswith("predictions: "))


def test_compare_shows_a_flipped_binary_decision(recipe, capsys):
    """Ours with the logit negated against recipe.keras, over both photos (the multi-image summary)."""
    code, line = _predictions(capsys, "--against", recipe / "recipe.keras", "--weights", recipe / "altered.npz",
                              "--image", *PHOTOS)
    assert code == 3  # the sides differ
    # both photos' logits change sign: both decisions flip, whatever their size
    assert line.startswith("predictions: 2 image(s): decisions agree 0.0% (2 flipped), max |Δ| "), line
    assert "both logits; decided at z > 0" in line and "top-1" not in line


def test_compare_of_the_unaltered_recipe_agrees(recipe, capsys):
    code, line = _predictions(capsys, "--against", recipe / "recipe.keras", "--image", PHOTOS[0])
    assert code == 0
    assert line.startswith("predictions: 1 image(s): decisions agree 100.0% (0 flipped), max |Δ| "), line
    # |Δ logit| of float32 runs of the same weights: round-off, far below the 5 of the altered copy
    assert float(line.split("max |Δ| ")[1].split()[0]) < 1e-3 and "both logits" in line


# ---- a dump states no activation: --their-activation says it ----------------------------------------

@pytest.fixture(scope="module")
def logits_dump(tmp_path_factory):
    """A softmax model of ours (3 classes, 71x71) and a dump of a port of it whose classifier returns logits
    (tests/ports.py, the PyTorch habit: ``nn.Linear`` last, softmax left to the loss), with its input,
    for two images; one image's logits are altered so that |Δp| has something to measure."""
    from npxception import Xception
    from npxception.network import XceptionModel
    from ports import Conventions, run_port

    model = Xception(classes=3, input_shape=(71, 71, 3), seed=3)
    x = np.random.default_rng(5).uniform(-1, 1, (2, 71, 71, 3)).astype(np.float32)
    # logits of size ~2: random weights give logits of 1e5, probabilities saturated at 0 and 1
    p = dict(model.weights)
    features = model.forward(x, capture=["avg_pool"])[1]["avg_pool"]
    p["predictions/kernel"] = p["predictions/kernel"] * (2 / np.abs(features @ p["predictions/kernel"]).max())
    p["predictions/bias"] = p["predictions/bias"] * 0
    model = XceptionModel(p, head=model.head, input_shape=model.input_shape)
    dump = run_port(model, x, Conventions(logits=True))
    dump["predictions"] = dump["predictions"] + np.array([[0, 0, 0], [1.5, 0, -1.5]], np.float32)
    dump["__input__"] = x
    path = tmp_path_factory.mktemp("logits") / "dump.npz"
    weights = path.parent / "ours.npz"
    np.savez(path, **dump)
    model.save(weights)
    return model, dump, path, weights


def _softmax64(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_a_dump_of_logits_gets_dp_once_its_activation_is_stated(logits_dump):
    from npxception.compare import compare, summarize

    model, dump, _, _ = logits_dump
    unstated = compare(model, dump, explain=False).agreement
    assert unstated.max_dp is None and "theirs activation unknown" in unstated.note  # never guessed
    expected = np.abs(_softmax64(dump["predictions"].astype(np.float64)) - model(dump["__input__"])).max()
    for a in (compare(model, dump, explain=False, their_activation="linear").agreement,
              summarize(model, dump, their_activation="linear")):
        # float32 probabilities of ours against float64 softmax of their float32 logits: round-off, 1e-6
        assert a.max_dp == pytest.approx(expected, abs=1e-6) and a.max_dz is None
        assert "theirs logits" in a.note and "softmax applied to theirs" in a.note
    assert expected > 0.1  # the altered image's probabilities moved: the |Δp| measured is that, not noise


def test_an_unknown_or_contradicted_activation_is_refused(logits_dump, tmp_path):
    from npxception.compare import compare
    from onnx_port import build

    model, dump, _, _ = logits_dump
    with pytest.raises(ValueError, match=r"their_activation: unknown activation 'softmx'; expected .*softmax"):
        compare(model, dump, explain=False, their_activation="softmx")
    build(model, tmp_path / "port.onnx")  # its final op is a Gemm: it states logits itself
    with pytest.raises(ValueError, match=r"states that its output ends with linear \(logits\), not softmax"):
        compare(model, tmp_path / "port.onnx", dump["__input__"], layout="NCHW", names="timm.legacy_xception",
                their_activation="softmax")


def test_cli_their_activation(logits_dump, capsys):
    from npxception import cli

    model, dump, path, weights = logits_dump
    code, line = _predictions(capsys, "--against", path, "--weights", weights, "--their-activation", "linear")
    assert code == 3 and "max |Δp| " in line and "softmax applied to theirs" in line, line
    assert cli.main(["compare", "--against", str(path), "--weights", str(weights), "--their-activation", "softmx"]) != 0
    err = capsys.readouterr().err
    assert "--their-activation: unknown activation 'softmx'" in err and "linear" in err, err
