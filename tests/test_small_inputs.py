"""Images smaller than 71x71 on models whose input size is variable, against Keras' model.predict.

71x71 is ``keras.applications.Xception``'s constructor rule for a fixed ``input_shape``; a model
built with ``input_shape=(None, None, 3)`` and saved after ``fit()`` is computed by Keras 3 and
tf_keras from 7x7 up (the VALID stem: 7 -> 3 -> 1, then 1x1 maps to the end) and refused below,
on either axis. The converted model answers the same sizes with the same numbers, on the fast path
(fused, and between kernels) and the reference path, in float32 and float64, and refuses the rest
naming the size and the minimum; ``npxception.Xception(input_shape=...)`` keeps the constructor's
rule, as Keras does. ``show`` and ``compare`` feed photos as ``predict`` does.

One Keras 3 and one tf_keras model per module: the brief's layout (applications.Xception without
the top, GlobalAveragePooling2D, Dense(3) logits), random kernels and BN statistics, one fit() step
(on 23x23 images: the model takes any size, and a small step is cheap), saved as .keras / .h5.

Keras' answer at each size comes from one graph per model, ``tf.function`` of ``model(x, training=False)``
traced once for ``(None, None, None, 3)``: ``predict`` traces a new graph for every input size (~3.6 s of
CPU each, measured 2026-11-30, and each hypothesis example is a new size), for the same layers in
inference mode on the same batch. Where that graph gives no finite answer, Keras' ``predict`` decides
(it raises below 7x7, where ours must refuse).

Tolerance: 1e-5 of the size of the terms the Dense logits sum (keras_corpus._logits_and_terms:
random BN statistics and a fit() step leave logits far smaller than their terms, 12x to 57x here,
so rounding is relative to the terms). Keras computes in float32 (unit round-off 6e-8); our float32
paths and our float64 oracle differ from it by its rounding and ours through ~36 layers of sums in
another order: measured at most 1.9e-7 of the terms at 7x7 to 71x8 (both frameworks, both paths,
both dtypes), so 1e-5 passes every correct port with a 50x margin, while a wrong SAME padding at the
1x1 and 2x2 maps (the odd pixel top/left) or a pooled map of the wrong size changes the logits
themselves, at least 1/57 of the terms, by a large fraction.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

import npxception
from keras_corpus import _fit_one_step, _logits_and_terms
from keras_helpers import randomize

RTOL = 1e-5
FRAMEWORKS = ("keras", "tf_keras")
MIN = 7  # measured: Keras 3 and tf_keras raise below 7 on either axis, and answer from 7x7 up


def _framework(name):
    import keras
    import tf_keras

    return {"keras": keras, "tf_keras": tf_keras}[name]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{framework: (the saved file, Keras' run: x -> (logits, terms), our float32 and float64 models, and
    {dtype: the same weights in a model whose plan runs np.matmul between kernels} (_between_kernels))}."""
    from npxception import weights_tools

    root = tmp_path_factory.mktemp("small")
    out = {}
    for name, seed in zip(FRAMEWORKS, (41, 42)):
        fw = _framework(name)
        base = fw.applications.Xception(weights=None, include_top=False, input_shape=(None, None, 3))
        pooled = fw.layers.GlobalAveragePooling2D(name="pool")(base.output)
        model = randomize(fw.Model(base.input, fw.layers.Dense(3, name="dense")(pooled)), seed=seed)
        _fit_one_step(model, fw.losses.SparseCategoricalCrossentropy(from_logits=True), 23, False, np.array([2, 0]))
        path = str(root / ("variable.keras" if name == "keras" else "variable_tf_keras.h5"))
        model.save(path)
        ours = weights_tools.read(path)
        ours64 = ours.astype("float64")
        between = {m.dtype.name: _between_kernels(m) for m in (ours, ours64)}
        out[name] = (path, _one_graph(fw, model), ours, ours64, between)
    return out


def _one_graph(fw, model):
    """``x -> (logits, terms)`` as keras_corpus._logits_and_terms gives them, from one graph traced once for
    every size; ``_logits_and_terms`` (``model.predict``) where the graph raises or its logits are not finite,
    so that a size Keras refuses still raises Keras' own error (the test's refusal branch)."""
    import tensorflow as tf

    both = fw.Model(model.input, [model.get_layer("pool").output, model.output])
    kernel, bias = model.get_layer("dense").get_weights()
    graph = tf.function(lambda x: both(x, training=False),
                        input_signature=[tf.TensorSpec((None, None, None, 3), tf.float32)])
    predict = _logits_and_terms(fw, model)

    def run(x):
        try:
            features, logits = (np.asarray(t) for t in graph(x))
        except (ValueError, tf.errors.InvalidArgumentError):
            return predict(x)
        if not (np.isfinite(logits).all() and np.isfinite(features).all()):
            return predict(x)
        return logits, float((np.abs(features) @ np.abs(kernel) + np.abs(bias)).max())
    return run


def _close(ours, theirs, scale, what):
    err = float(np.abs(ours.astype(np.float64) - theirs).max())
    assert err <= RTOL * scale, f"{what}: max |ours - keras| {err:.3g} > {RTOL:g} * {scale:.3g}; " \
                                f"ours {ours.ravel()[:3]} vs keras {theirs.ravel()[:3]}"


def _refusal(h, w) -> str:
    """Our message for an h x w image (a regex): the size, the minimum, and the layer left empty."""
    layer = "block1_conv1" if min(h, w) < 3 else "block1_conv2"  # 1-2 rows: none after the 3x3/2 stem
    return f"images must be at least {MIN}x{MIN}, found {h}x{w}: layer {layer} would have no output pixel"


def test_the_network_minimum_is_the_tables_and_the_converted_model_takes_any_size(sources):
    for _, _, ours, _, _ in sources.values():
        assert ours.input_shape == ours.source_input_shape == (None, None, 3)
        assert ours.min_input_size == MIN
    # the article's SAME stem never empties a map: any size
    assert npxception.Xception(variant="article", include_top=False, input_shape=(None, None, 3)).min_input_size == 1


@pytest.mark.parametrize("name", FRAMEWORKS)
@settings(max_examples=5)
@example(h=7, w=7)  # the smallest: 1x1 maps from block1_conv2 to the end
@example(h=39, w=70)  # 2x2 maps in the exit flow (39..70), 20x34 at block1_conv2
@example(h=71, w=8)  # 1 x 3 maps: one row, several columns, through the fast path's tiles
@example(h=6, w=70)  # 2 rows after block1_conv1: block1_conv2 has none
@example(h=70, w=2)  # block1_conv1 already has no column
@given(h=st.integers(1, 70), w=st.integers(1, 70))
def test_small_inputs_match_keras_predict_or_are_refused_as_keras_refuses(sources, name, h, w):
    """model(x) at h x w against Keras' model.predict on the same batch, on both paths and dtypes; where
    Keras raises (measured: below 7 rows or columns), model(x) refuses naming the size and the minimum."""
    import tensorflow as tf

    _, keras_run, ours32, ours64, between = sources[name]
    x = np.random.default_rng(h * 100 + w).uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
    try:
        expected, scale = keras_run(x)
    except (ValueError, tf.errors.InvalidArgumentError):  # Keras 3 and tf_keras raise either, by size
        assert min(h, w) < MIN, f"{name} raised at {h}x{w}"
        for model in (ours32, ours64):
            for impl in ("fast", "reference"):
                with pytest.raises(ValueError, match=re.escape("x: ") + _refusal(h, w)):
                    model(x, impl=impl)
        return
    assert min(h, w) >= MIN and np.isfinite(expected).all(), f"{name} answered at {h}x{w}"
    for model in (ours32, ours64):
        for impl in ("fast", "reference"):
            _close(model(x, impl=impl), expected, scale, f"{name} {h}x{w} {model.dtype.name} {impl}")
        _close(between[model.dtype.name](x), expected, scale, f"{name} {h}x{w} {model.dtype.name} between kernels")


def _between_kernels(model):
    """``model``'s weights (a copy: ``astype``) in a model whose fast plan runs its steps the other way,
    np.matmul between Numba kernels in row tiles, built as it is where NumPy's bundled OpenBLAS is not found
    (any other BLAS, or NPXCEPTION_GEMM=numpy: blas.AVAILABLE False): its tiles at 1x1 and 2x2 maps too.

    Its own plan rather than the fused plan switched off after the fused call (tests/test_model_keras.py
    still does that): the fused plan holds the pointwise kernels only packed, and unpacks every one of them
    at each call switched off, ~0.9 s of CPU a call at these sizes (measured 2026-11-30), for the same
    np.matmul on the same kernels."""
    from npxception import blas
    from npxception.fast.run import FastPlan

    twin = model.astype(model.dtype)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blas, "AVAILABLE", False)
        twin._fast = FastPlan(twin)
    assert not twin._fast.fused
    return twin


@pytest.fixture(scope="module")
def photos(sources, tmp_path_factory):
    """Photos smaller than 71x71 cut from examples/chelsea.png (PNG and JPEG), one below 7 rows, and the
    converted Keras 3 model as a file; Keras on each photo at its own size, fed as a Keras user feeds it:
    img_to_array(load_img(path)) (one call per photo, through the module's one graph: _one_graph)."""
    import keras
    from npxception import weights_tools

    root = tmp_path_factory.mktemp("small_photos")
    sizes = {"wide.png": (50, 80), "tiny.jpg": (9, 7), "strip.png": (7, 61), "flat.png": (6, 40)}
    with Image.open(os.path.join(os.path.dirname(__file__), "..", "examples", "chelsea.png")) as im:
        rgb = im.convert("RGB")
        for i, (file, (h, w)) in enumerate(sizes.items()):
            rgb.crop((100 + 20 * i, 60, 100 + 20 * i + w, 60 + h)).save(root / file)
    path, keras_run, _, _, _ = sources["keras"]
    files = [str(root / f) for f in sizes]
    expected = {}
    for f in files[:-1]:
        arr = keras.utils.img_to_array(keras.utils.load_img(f))[None] / 127.5 - 1  # the model takes preprocess_input's
        expected[f] = keras_run(arr.astype(np.float32))
    npz = weights_tools.convert(path, root / "variable.npz")
    return files, expected, npz, path


def test_predict_on_small_photos_matches_keras(photos):
    """npxception.predict and `npxception predict` on photos of 50x80, 9x7 (JPEG) and 7x61: Keras' logits;
    a 6x40 photo is refused naming it, the size and the minimum, and the others still get their scores."""
    files, expected, npz, _ = photos
    model = npxception.load(npz)
    for f, (logits, scale) in expected.items():
        ours = np.zeros(3)
        for index, _, score in npxception.predict(f, model=model, top=3):
            ours[index] = score
        _close(ours, logits[0], scale, f"predict({os.path.basename(f)})")
    with pytest.raises(ValueError, match=re.escape(files[-1]) + ": " + _refusal(6, 40)):
        npxception.predict(files, model=model)


def test_cli_predict_on_small_photos_matches_keras(photos, capsys):
    from npxception import cli

    files, expected, npz, _ = photos
    assert cli.main(["predict", "--weights", str(npz), "--json", "--top", "3", "--no-progress", *files]) == 1
    out = capsys.readouterr()
    results = json.loads(out.out)
    assert [r["file"] for r in results] == files
    for r in results[:-1]:
        logits, scale = expected[r["file"]]
        ours = np.zeros(3)
        for p in r["predictions"]:
            ours[p["index"]] = p["score"]
        _close(ours, logits[0], scale, f"npxception predict {os.path.basename(r['file'])}")
    assert re.fullmatch(_refusal(6, 40) + re.escape(" (Keras raises on it too)"), results[-1]["error"]), results[-1]
    assert "Traceback" not in out.err
    # --size below the minimum: a usage error (exit 2, as argparse's) before any photo is read, naming the
    # size and the minimum
    assert cli.main(["predict", "--weights", str(npz), "--size", "40x6", "--no-progress", files[0]]) == 2
    out = capsys.readouterr()
    assert out.out == "" and re.search("--size 40x6: " + _refusal(40, 6), out.err), out.err


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_constructor_keeps_keras_rule_of_71(name):
    """keras.applications.Xception refuses a fixed input_shape below 71x71 (either side; None is any
    size), and so does npxception.Xception, naming the size, the rule and what computes smaller images."""
    fw = _framework(name)
    for shape in [(70, 70, 3), (None, 50, 3), (71, 7, 3)]:
        with pytest.raises(ValueError, match=re.escape(f"Input size must be at least 71x71; Received: "
                                                       f"input_shape={shape}")):
            fw.applications.Xception(weights=None, include_top=False, input_shape=shape)
        with pytest.raises(ValueError, match=re.escape(
                f"input_shape: keras.applications.Xception requires at least 71x71 (Keras: 'Input size must "
                f"be at least 71x71'), found {shape}; input_shape=(None, None, 3) builds a model for any size, "
                f"which takes images down to 7x7 as Keras' predict does")):
            npxception.Xception(include_top=False, input_shape=shape)
    assert npxception.Xception(include_top=False, input_shape=(71, 71, 3)).input_shape == (71, 71, 3)


def test_a_weight_file_may_hold_any_size_the_network_computes(tmp_path):
    """A model (a converted file, a manifest) is held to the network's minimum, not the constructor's: a
    backbone fixed at 7x7 loads and runs; 6x6 is refused naming the minimum."""
    from npxception.model import XceptionModel

    base = npxception.Xception(include_top=False, pooling="avg", input_shape=(None, None, 3), seed=4)
    seven = XceptionModel(base.weights, head=base.head, input_shape=(7, 7, 3))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 7, 7, 3)).astype(np.float32)
    np.testing.assert_array_equal(npxception.load(seven.save(tmp_path / "seven.npz"))(x), seven(x))
    with pytest.raises(ValueError, match=re.escape("input_shape: height and width must be at least 7 and at most "
                                                   "2048, found (6, 6, 3)")):
        XceptionModel(base.weights, head=base.head, input_shape=(6, 6, 3))


# --------------------------------------------------------------------------- show and compare: predict's sizes

def _spy_forward(monkeypatch, model):
    """Record what show ran ``model`` on (``model.backbone_input``'s argument: what ``model(x)`` takes) and what
    it captured (``npxception.forward.run``, which show stops after the layer); the CLI's model is get_model's
    cached one."""
    from npxception import forward

    seen = []
    backbone_input, run = model.backbone_input, forward.run

    def spy_input(x):
        seen.append([x, None])
        return backbone_input(x)

    def spy_run(m, b, wanted, impl, **kwargs):
        out = run(m, b, wanted, impl, **kwargs)
        if m is model:
            seen[-1][1] = out[1]
        return out

    monkeypatch.setattr(model, "backbone_input", spy_input)
    monkeypatch.setattr(forward, "run", spy_run)
    return seen


def test_show_feeds_the_photo_as_predict_does(photos, monkeypatch, tmp_path, capsys):
    """`npxception show` on a variable-size model: the photo at its own size (50x80), or at --size HxW as
    load_img(target_size=...) gives it, and the maps drawn are Keras' activations of that layer on that
    input; a photo or a --size below 7x7, and --interpolation without --size, are refused by name."""
    import keras

    from npxception import cli
    from npxception.prediction import get_model
    from npxception.show import render

    files, _, npz, source = photos
    layer = "block14_sepconv1_act"
    kmodel = keras.saving.load_model(source, compile=False)
    tap = keras.Model(kmodel.input, kmodel.get_layer(layer).output)
    seen = _spy_forward(monkeypatch, get_model(npz))
    for argv, load_kw in (([], {}), (["--size", "40x30", "--interpolation", "bilinear"],
                                     dict(target_size=(40, 30), interpolation="bilinear"))):
        out = tmp_path / "maps.png"
        assert cli.main(["show", "--weights", str(npz), "--layer", layer, files[0], "-o", str(out), *argv]) == 0
        assert capsys.readouterr().out.strip() == str(out) and Image.open(out).size[0] > 0
        x, acts = seen.pop()
        theirs = keras.utils.img_to_array(keras.utils.load_img(files[0], **load_kw))[None] / 127.5 - 1
        np.testing.assert_array_equal(x, theirs.astype(np.float32))  # the same pixels, preprocessed alike
        expected = tap.predict(theirs, verbose=0)
        # an activation, not logits: 1e-5 of its largest value (the module docstring's argument, per layer)
        _close(acts[layer], expected, float(np.abs(expected).max()), f"show {layer} {argv}")
    # a model that rescales in-graph is fed raw pixels, as predict feeds it (show applied preprocess_input
    # to every model: twice for this one)
    from npxception.model import XceptionModel

    plain = npxception.load(npz)
    rescaling = XceptionModel(plain.weights, head=plain.head, input_stage=[
        {"kind": "rescaling", "name": "rescaling", "scale": 1 / 127.5, "offset": -1.0}])
    seen = _spy_forward(monkeypatch, rescaling)
    render(rescaling, files[0], layer, tmp_path / "raw.png", maps=4)
    np.testing.assert_array_equal(seen.pop()[0], keras.utils.img_to_array(keras.utils.load_img(files[0]))[None])
    # an option the model cannot take is a usage error (exit 2); a photo it cannot take, failed work (exit 1)
    for argv, message, code in ((["--size", "5x5"], "--size 5x5: " + _refusal(5, 5), 2),
                                (["--interpolation", "bilinear"], "interpolation: this model takes each photo at "
                                                                  "its own size and nothing resizes it", 2),
                                ([files[-1]], re.escape(files[-1]) + ": " + _refusal(6, 40), 1)):
        photo = [] if argv[0] == files[-1] else [files[0]]
        assert cli.main(["show", "--weights", str(npz), "--layer", layer, *photo, *argv,
                         "-o", str(tmp_path / "no.png")]) == code, argv
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err, err
        assert not (tmp_path / "no.png").exists()


def test_compare_says_what_input_it_ran_on(photos, tmp_path, capsys):
    """`compare` without --image on a variable-size model: a seeded random batch at --size HxW (the Keras
    model agrees at 20x30, a size below 71x71), else at 299x299, and the report's input line says which size
    and why; with --image, each photo at its own size, as predict feeds it. A --size the model cannot take,
    or one given with a dump that carries its input, is refused naming it."""
    from npxception import cli
    from npxception.compare.cli import cli_input, input_line

    files, _, npz, source = photos
    assert cli.main(["compare", "--against", source, "--weights", str(npz), "--size", "20x30", "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["input"] == "a seeded random batch (seed 0) at 20x30 (--size)", report["input"]
    first = report["rows"][0]  # block1_conv1, 3x3/2 VALID: 20x30 -> 9x14 on both sides
    assert first["layer"] == "block1_conv1" and first["shape_ours"] == first["shape_theirs"] == [1, 9, 14, 32]
    assert report["first_divergence"] is None, out.err
    assert cli.main(["compare", "--against", source, "--weights", str(npz), "--image", files[0], files[2]]) == 0
    text = capsys.readouterr().out
    assert "\ninput: 2 photo(s), each at its own size (the model takes any size; the first 50x80)\n" in text, text
    model = npxception.load(npz)
    assert cli_input(model).shape == (1, 299, 299, 3)  # the default, named by the report (not run here: 299x299)
    assert input_line(model, [], None, None) == ("a seeded random batch (seed 0) at 299x299 (the model takes any "
                                                 "size and no photo gives one: --size HxW or --image for another)")
    assert cli.main(["compare", "--against", source, "--weights", str(npz), "--size", "6x30"]) == 2  # usage error
    err = capsys.readouterr().err
    assert re.search("--size 6x30: " + _refusal(6, 30), err) and "Traceback" not in err, err
    dump = tmp_path / "dump.npz"
    np.savez(dump, __input__=np.zeros((1, 20, 30, 3), np.float32))
    assert cli.main(["compare", "--against", str(dump), "--weights", str(npz), "--size", "20x30"]) == 1
    err = capsys.readouterr().err
    assert "--size: the dump carries the input it ran on (key '__input__')" in err and "Traceback" not in err, err
