"""compare on a user's Keras activation dump, keyed by Keras' own layer names.

keras.applications.Xception leaves its residual Conv2D/BatchNormalization and every Add
unnamed, so a dump of ``Xception(input_tensor=...)`` (flat: the backbone's layers are the
model's own) carries ``conv2d_N``, ``batch_normalization_N``, ``add_N``. compare maps them
by order when the dump determines it, and a verdict that leaves layers out says so.

One Keras 3 model per module, 71x71 (the smallest Xception input), random kernels and BN
statistics (keras_helpers.randomize); the dump is made as a user makes it: every layer of
``model.layers`` by name, ``keras.Model(...).predict``, ``np.savez(**dump)``, input under
``__input__``. Tolerances: compare's float32 default, rtol 1e-4 of max|theirs|; a correct
dump measures ~1e-6 here, a 1% scaling moves a layer by 1e-2, 100x over it.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import keras  # noqa: E402  (a test extra; imported, never skipped)
from keras_helpers import keras_predict, randomize

from npxception import cli
from npxception.compare import compare
from npxception.compare.layer_names_text import compact_names
from npxception.weights_tools import from_keras

SIZE = 71
AUTO = re.compile(r"(conv2d|batch_normalization|add)(_\d+)?")
# Our layers Keras leaves unnamed: the residual branches of blocks 2, 3, 4, 13 and the 12 adds.
UNNAMED = ([f"block{b}_residual_{k}" for k in ("conv", "bn") for b in (2, 3, 4, 13)]
           + [f"block{b}_add" for b in range(2, 14)])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    inp = keras.Input((SIZE, SIZE, 3))
    base = keras.applications.Xception(include_top=False, weights=None, input_tensor=inp)
    x = keras.layers.GlobalMaxPooling2D()(base.output)
    kmodel = randomize(keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x)), seed=3)
    ours = from_keras(kmodel)
    batch = np.random.default_rng(4).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    # the user's dump, as /tmp/review-out/dump_keras.py makes it
    names = [layer.name for layer in kmodel.layers if not isinstance(layer, keras.layers.InputLayer)]
    outs = keras_predict(keras.Model(kmodel.inputs, [kmodel.get_layer(n).output for n in names]), batch)
    dump = {n: o for n, o in zip(names, outs)}
    dump["__input__"] = batch
    root = tmp_path_factory.mktemp("keras_dump")
    np.savez(root / "dump.npz", **dump)
    ours.save(root / "ours.npz")
    return ours, dump, root


def keys_of(ours, dump, layers):
    """The dump's keys for our layers: the converter's graph walk read them from the same model."""
    return [ours.source_layer_names[n] for n in layers]


def test_flat_input_tensor_dump_compares_every_layer(setup):
    ours, dump, root = setup
    auto = [k for k in dump if AUTO.fullmatch(k)]
    assert len(auto) == 20 and not set(UNNAMED) & set(dump)  # else this test proves nothing
    report = compare(ours, root / "dump.npz")
    assert report.complete and report.not_compared == [] and report.theirs_only == [], str(report)
    assert report.compared == len(ours.layer_names)
    assert report.first_divergence is None and not report.sources, str(report)
    # every auto-name went to the layer Keras' own graph says it is
    unnamed = [n for n in ours.layer_names if n in UNNAMED]
    assert report.matched_by_order == dict(zip(unnamed, keys_of(ours, dump, unnamed)))
    assert report.verdict == (f"no divergence: {len(report.rows)} layers agree "
                              "(20 of them matched to Keras auto-names by order)")
    text = str(report)
    assert "(theirs add_" in text and "matched by order" in text


@pytest.mark.parametrize("layer", ["block3_residual_conv", "block13_residual_bn", "block8_add"])
def test_corrupted_residual_layer_is_reported_there(setup, layer):
    ours, dump, _ = setup
    key, = keys_of(ours, dump, [layer])
    assert AUTO.fullmatch(key), key
    report = compare(ours, dict(dump, **{key: dump[key] * np.float32(1.01)}))
    assert report.complete, str(report)
    assert report.first_divergence == layer, str(report)
    assert [r.layer for r in report.rows if not r.passed] == [layer]  # only the scaled dump entry differs
    assert report.sources[0].layer == layer


def test_same_shaped_adds_swapped(setup, tmp_path):
    ours, dump, _ = setup
    k5, k6 = keys_of(ours, dump, ["block5_add", "block6_add"])
    assert dump[k5].shape == dump[k6].shape
    # values swapped under Keras' names: the by-order match maps the names, the values disagree
    swapped = dict(dump, **{k5: dump[k6], k6: dump[k5]})
    report = compare(ours, swapped)
    assert report.first_divergence == "block5_add", str(report)
    assert not report.rows[[r.layer for r in report.rows].index("block5_add")].passed
    # the keys themselves swapped in the file's order: Keras' counters disagree with the order, refused
    order = list(dump)
    i, j = order.index(k5), order.index(k6)
    order[i], order[j] = order[j], order[i]
    np.savez(tmp_path / "reordered.npz", **{k: dump[k] for k in order})
    report = compare(ours, tmp_path / "reordered.npz")
    assert not report.complete and report.first_divergence is None
    assert [n for n in report.not_compared] == [n for n in ours.layer_names if n.endswith("_add")]
    assert any(f"({k6} before {k5})" in why for why in report.unmatched_names), report.unmatched_names
    assert report.verdict.startswith("PARTIAL: no divergence in the 121 of our 133 layers compared")
    assert report.verdict.endswith("block{2..13}_add")


def test_partial_verdict_when_names_cannot_be_matched(setup, tmp_path, capsys):
    ours, dump, root = setup
    dropped, = keys_of(ours, dump, ["block7_add"])
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in dump.items() if k != dropped})
    args = ["compare", "--weights", str(root / "ours.npz"), "--against", str(tmp_path / "partial.npz")]
    assert cli.main(args) == 0  # nothing compared diverged; the verdict says what was not compared
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == ("PARTIAL: no divergence in the 121 of our 133 layers compared; 12 of our 133 layers "
                         "not compared (no counterpart in theirs): block{2..13}_add")
    assert any(line.startswith("not matched by order: 11 add[_N] key(s) of theirs for 12 add layer(s)")
               for line in lines), lines
    assert not any(line.startswith("no divergence") for line in lines)
    assert cli.main(args + ["--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["complete"] is False and data["layers_compared"] == 121
    assert data["not_compared"] == [f"block{b}_add" for b in range(2, 14)]
    assert len(data["theirs_only"]) == 11 and data["verdict"] == lines[-1]
    assert len(data["matched_by_order"]) == 8  # the residual convs and BNs still match
    assert captured.err.strip().splitlines()[-1] == lines[-1]


def test_first_names_unsuffixed_and_nchw(setup):
    """Keras 3 and tf_keras both call the first of a kind ``conv2d`` and then ``conv2d_1``...;
    a dump of a fresh process starts there. An NCHW dump's shapes are checked transposed."""
    ours, dump, _ = setup
    counters = {}

    def fresh(key):
        m = AUTO.fullmatch(key)
        if not m:
            return key
        n = counters[m.group(1)] = counters.get(m.group(1), -1) + 1
        return m.group(1) + (f"_{n}" if n else "")

    renamed = {fresh(k): v for k, v in dump.items()}
    assert "conv2d" in renamed and "add_11" in renamed
    report = compare(ours, renamed)
    assert report.complete and report.first_divergence is None, str(report)
    assert report.matched_by_order["block2_add"] == "add"
    nchw = {k: v.transpose(0, 3, 1, 2) if v.ndim == 4 else v for k, v in renamed.items()}
    for layout in ("NCHW", None):  # None: detected tensor by tensor, as for named layers
        report = compare(ours, nchw, layout=layout)
        assert report.complete and report.first_divergence is None, str(report)


def test_shapes_refuse_a_by_order_match(setup):
    ours, dump, _ = setup
    # block13's add (3x3x1024) renumbered before all the others: counters and counts fit, shapes do not
    adds = keys_of(ours, dump, [f"block{b}_add" for b in range(2, 14)])
    moved = {"add_1": dump[adds[-1]]}
    renumbered = {k: f"add_{i + 2}" for i, k in enumerate(adds[:-1])}
    moved.update({renumbered.get(k, k): v for k, v in dump.items() if k != adds[-1]})
    report = compare(ours, moved)
    assert "block2_add" in report.not_compared and "add_1" in report.theirs_only
    why, = report.unmatched_names
    assert why.startswith("add_1 (1, 3, 3, 1024) would be our block2_add (1, 17, 17, 128) by order"), why
    assert report.verdict.startswith("PARTIAL")


def test_compact_names():
    assert compact_names(UNNAMED) == ("block{2,3,4,13}_residual_conv, block{2,3,4,13}_residual_bn, "
                                      "block{2..13}_add")
    assert compact_names(["block1_conv1", "dense_3", "block5_add", "block7_add"]) == (
        "block1_conv1, dense_3, block{5,7}_add")


def test_a_counter_beyond_any_model_is_no_auto_name(setup):
    """Reviewer 14 F4: an auto-name counter of 5,000 digits (int() raised Python's 4,300-digit limit, naming
    nothing): not a Keras auto-name, so a dump key of that form is theirs only, and a --names value is
    refused naming it (cut short)."""
    from npxception.compare.names import resolve_names

    ours, dump, _ = setup
    huge = "add_" + "1" * 5000
    first = ours.source_layer_names["block2_add"]  # Keras' "add"
    report = compare(ours, {(huge if k == first else k): v for k, v in dump.items()})
    assert huge in report.theirs_only and "block2_add" in report.not_compared, str(report)[:2000]
    with pytest.raises(ValueError, match=r"^names: 'x' maps to 'add_1111\S*\.\.\., which is not one of our"):
        resolve_names({"x": huge}, ours.layer_names)
    assert compact_names(["block" + "2" * 5000 + "_add", "block3_add"]).endswith(", block3_add")
