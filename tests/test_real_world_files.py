"""Files as real projects leave them: trained with fit(), with optimizer state, augmentation and
preprocessing layers, nested backbones, weights-only files that do not say their head.

The corpus (tests/keras_corpus.py) is written by Keras 3 and tf_keras once per
module. Conversions, the converted models' forward passes and `npxception
predict` on photo files run in ONE subprocess in which tensorflow, keras and
tf_keras cannot be imported (tests/free_runner.py). `compare` runs in this process (it needs the
framework that wrote each file).

Tolerance: 1e-5 relative to the largest magnitude of Keras' output, in float32.
float32's unit round-off is 6e-8; the ~36 layers of sums of up to 9 * 2048
products, accumulated in a different order by TensorFlow's kernels and ours,
leave ~2e-6 relative at the logits (measured on these models: compare's max rel
column), so 1e-5 passes every correct conversion with a 5x margin while a wrong
pooling (average for max), a missing Rescaling (an input off by 127.5x) or a
preprocess_input applied twice move the output by far more than 1e-2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from free_runner import run_jobs
from keras_corpus import REPO, build

RTOL = 1e-5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def converted(corpus, tmp_path_factory):
    """Every case converted, run and predicted, plus the refusals and inspections, without a framework."""
    work = tmp_path_factory.mktemp("corpus_out")
    jobs = []
    for name, case in corpus.items():
        np.save(work / f"{name}_x.npy", case.x)
        argv = ["convert", case.path, "-o", str(work / f"{name}.npz"), *case.options]
        if case.config:
            argv += ["--config", case.config]
        jobs.append({"name": name, "argv": argv, "output": str(work / f"{name}.npz"),
                     "x": str(work / f"{name}_x.npy"), "result": str(work / f"{name}_y.npy"),
                     "photos": case.photos})
    gmp = corpus["gmp160_weights_h5"].path
    (work / "refused").mkdir()
    jobs.append({"name": "gmp160_no_config", "argv": ["convert", gmp, "-o", str(work / "refused" / "x.npz")]})
    jobs.append({"name": "recipe_weights_no_config",
                 "argv": ["convert", corpus["recipe_weights_h5"].path, "-o", str(work / "refused" / "y.npz")]})
    jobs.append({"name": "tf_keras_ckpt_no_config",
                 "argv": ["convert", corpus["tf_keras_ckpt"].path, "-o", str(work / "refused" / "z.npz")]})
    jobs.append({"name": "tf_keras_flat_ckpt_no_flags",
                 "argv": ["convert", corpus["tf_keras_flat_ckpt_flags"].path, "-o", str(work / "refused" / "w.npz")]})
    for name in ("recipe_keras", "tf_keras_recipe_h5", "gmp160_weights_h5", "tf_keras_savedmodel",
                 "tf_keras_preprocess_input_h5"):
        jobs.append({"name": f"inspect_{name}", "argv": ["inspect", corpus[name].path]})
    return work, run_jobs(jobs, work)


CASES = ["recipe_keras", "recipe_h5", "recipe_weights_h5", "normalization_keras", "two_dense_keras",
         "gmp160_weights_h5", "gmp160_weights_h5_flags", "tf_keras_recipe_h5", "tf_keras_recipe_keras",
         "tf_keras_recipe_weights_h5", "center_crop_keras",
         "tf_keras_savedmodel", "tf_keras_ckpt", "tf_keras_ckpt_index", "tf_keras_flat_ckpt_flags", "resizing_keras",
         "tf_keras_center_crop_h5", "preprocess_input_keras", "tf_keras_preprocess_input_h5", "any_size_keras"]
PIXEL_CASES = {"recipe_keras", "recipe_h5", "recipe_weights_h5", "normalization_keras", "tf_keras_recipe_h5",
               "tf_keras_recipe_keras", "tf_keras_recipe_weights_h5",
               "center_crop_keras", "tf_keras_savedmodel", "tf_keras_ckpt", "tf_keras_ckpt_index", "resizing_keras",
               "tf_keras_center_crop_h5", "preprocess_input_keras", "tf_keras_preprocess_input_h5", "any_size_keras"}
# Input((None, None, 3)) then a geometry layer: the converted model takes any size Keras takes;
# any_size_keras has none, and its backbone takes each photo at its own size
VARIABLE = ["center_crop_keras", "resizing_keras", "tf_keras_center_crop_h5", "any_size_keras"]
ANY_SIZE = {"any_size_keras"}


def _refusal_of(name, h, w) -> str:
    """The error (a regex) for an h x w image the converted model must refuse: Keras 3's CenterCrop on a
    smaller image, or, where nothing brings it to a size, an image below the 7x7 the network computes."""
    if name in ANY_SIZE:
        return f"at least 7x7, found {h}x{w}"
    return f"layer center_crop \\(CenterCrop\\) cannot take {h}x{w} images"


def _close(ours, theirs, what, rtol=RTOL, scale=None):
    """Within ``rtol`` of max|theirs|, or of ``scale`` where the corpus gives the size of the terms that
    logits sum (keras_corpus._logits_and_terms: a fit() step can make them cancel)."""
    assert ours.shape == theirs.shape, f"{what}: shape ours {ours.shape} vs keras {theirs.shape}"
    err = float(np.abs(ours.astype(np.float64) - theirs).max())
    scale = max(float(np.abs(theirs).max()), scale or 0.0)
    assert err <= rtol * scale, f"{what}: max |ours - keras| {err:.3g} > {rtol:g} * {scale:.3g}; " \
                                f"ours {ours.ravel()[:4]} vs keras {theirs.ravel()[:4]}"


@pytest.mark.parametrize("name", CASES)
def test_converted_model_matches_keras_predict(corpus, converted, name):
    """npxception.load(...)(x) on the model's own kind of input (raw pixels where it rescales)."""
    work, results = converted
    res = results[name]
    assert res["rc"] == 0, f"{name}: {res['stderr']}"
    assert "run_error" not in res, f"{name}: converted, but the forward pass failed: {res.get('run_error')}"
    case = corpus[name]
    assert res["takes_pixels"] == (name in PIXEL_CASES) == case.pixels
    assert res["input_shape"] == ([None, None, 3] if name in ANY_SIZE else [case.size, case.size, 3])
    _close(np.load(work / f"{name}_y.npy"), case.expected, name, scale=case.scale)


@pytest.mark.parametrize("name", CASES)
def test_npxception_predict_on_photos_matches_keras(corpus, converted, name):
    """`npxception predict --weights X.npz photo...` gives Keras' scores on img_to_array(load_img(photo)):
    resized to the input size by load_img, or, for a variable-size source, at each photo's own size in
    one call (photos of four sizes, JPEG and PNG, stacked after the stage, or each run alone where no
    stage fixes the backbone's size). A photo that the converted model refuses (NaN in the corpus: Keras
    3's CenterCrop on an image smaller than its target) gets its one-line error
    naming the layer or the minimum, and the others their scores."""
    res = converted[1][name]
    case = corpus[name]
    refused = np.isnan(case.photos_expected).any(axis=1)
    assert res["predict_rc"] == (1 if refused.any() else 0), res["predict_stderr"]
    ours = np.zeros_like(case.photos_expected)
    for i, item in enumerate(json.loads(res["predict"])):
        assert item["file"] == case.photos[i]
        if refused[i]:
            assert re.search(_refusal_of(name, 64, 52), item["error"]), item
            ours[i] = np.nan
            continue
        for p in item["predictions"]:
            if ours.shape[1] == 1:  # a one-unit head (the recipe's Dense(1) logit): the class Keras decides, z > 0
                z = case.photos_expected[i, 0]
                assert (p["index"], p["output"]) == (int(p["score"] > 0), "logit"), p
                # Keras' decision too, where its logit is clear of the tolerance _close allows below (RTOL x scale)
                scale = max(float(np.nanmax(np.abs(case.photos_expected))), case.photos_scale or 0.0)
                assert abs(z) <= RTOL * scale or p["index"] == int(z > 0), (p, z)
                ours[i, 0] = p["score"]
            else:
                ours[i, p["index"]] = p["score"]
    assert np.array_equal(np.isnan(ours), np.isnan(case.photos_expected))
    _close(ours[~refused], case.photos_expected[~refused], f"{name} on {[os.path.basename(p) for p in case.photos]}",
           scale=case.photos_scale)


@pytest.fixture(scope="module")
def variable_models(converted):
    import npxception

    work, results = converted
    return {name: npxception.load(work / f"{name}.npz") for name in VARIABLE if results[name]["rc"] == 0}


@pytest.mark.parametrize("name", VARIABLE)
def test_variable_size_model_matches_keras_at_every_size(corpus, variable_models, name):
    """model(x) on batches larger and smaller than the 71x71 target, odd and even, non-square, against
    Keras' model.predict on the same arrays; the sizes Keras does not determine are refused by name."""
    model = variable_models[name]
    assert model.source_input_shape == (None, None, 3)
    assert model.input_shape == ((None, None, 3) if name in ANY_SIZE else (71, 71, 3))
    for (h, w), keras_case in corpus[name].sizes.items():
        if keras_case is None:
            with pytest.raises(ValueError, match=_refusal_of(name, h, w) + ".*at least 71x71" * (name not in ANY_SIZE)):
                model(np.zeros((1, h, w, 3), np.float32))
            continue
        x, expected, scale = keras_case
        _close(model(x), expected, f"{name} at {h}x{w}", scale=scale)


@pytest.mark.parametrize("name", VARIABLE)
def test_predict_api_on_photos_of_different_sizes_matches_keras(corpus, variable_models, name):
    """npxception.predict([photos]) stacks photos of different sizes after the stage: Keras' scores."""
    import npxception

    case, model = corpus[name], variable_models[name]
    keep = ~np.isnan(case.photos_expected).any(axis=1)
    photos = [p for p, k in zip(case.photos, keep) if k]
    ours = np.zeros((len(photos), model.classes))
    for i, preds in enumerate(npxception.predict(photos, model=model, top=model.classes)):
        for index, _, score in preds:
            ours[i, index] = score
    _close(ours, case.photos_expected[keep], f"{name}: npxception.predict on {len(photos)} photos",
           scale=case.photos_scale)
    for p in (p for p, k in zip(case.photos, keep) if not k):  # refused naming the photo
        with pytest.raises(ValueError, match=re.escape(p) + ": .*" + _refusal_of(name, 64, 52)):
            npxception.predict(p, model=model)


def test_any_size_model_with_size_option_matches_keras_load_img_target_size(corpus, converted, variable_models,
                                                                             capsys):
    """A fixed size when the user asks for one: ``target_size=(71, 71)`` / ``--size 71x71`` resize each photo
    as ``load_img(path, target_size=(71, 71))`` does (nearest), against Keras on those arrays."""
    import npxception
    from npxception import cli

    case, model = corpus["any_size_keras"], variable_models["any_size_keras"]
    ours = np.zeros_like(case.resized_expected)
    for i, preds in enumerate(npxception.predict(case.resized_photos, model=model, top=3, target_size=(71, 71))):
        for index, _, score in preds:
            ours[i, index] = score
    _close(ours, case.resized_expected, "predict(target_size=(71, 71))", scale=case.resized_scale)
    work = converted[0]
    assert cli.main(["predict", "--weights", str(work / "any_size_keras.npz"), "--size", "71x71", "--json",
                     "--top", "3", "--no-progress", *case.resized_photos]) == 0
    ours = np.zeros_like(case.resized_expected)
    for i, item in enumerate(json.loads(capsys.readouterr().out)):
        for p in item["predictions"]:
            ours[i, p["index"]] = p["score"]
    _close(ours, case.resized_expected, "predict --size 71x71", scale=case.resized_scale)


def test_compare_image_feeds_an_any_size_model_each_photo_at_its_own_size(corpus, converted, capsys):
    """`compare --against any_size.keras --image cat.jpg chelsea.png`: both sides get each photo at its own
    size (cat.jpg is 141x173: block1_conv1, 3x3 stride 2 VALID, is 70x86 on both sides), the layer report on
    the first, the prediction agreement over all three (three sizes, run one by one: 64x52 too, below
    keras.applications' 71x71, which Keras' predict computes); a photo below 7x7 is refused naming it, as
    predict refuses it."""
    from PIL import Image

    from npxception import cli

    case = corpus["any_size_keras"]
    cat, small = case.photos[2], case.photos[3]
    npz = str(converted[0] / "any_size_keras.npz")
    assert cli.main(["compare", "--against", case.path, "--weights", npz, "--image", cat, case.photos[0], small,
                     "--json"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    first = next(r for r in report["rows"] if r["flow"] != "input")  # after the input stage's rows
    assert first["layer"] == "block1_conv1" and first["shape_ours"] == first["shape_theirs"] == [1, 70, 86, 32]
    assert report["first_divergence"] is None and report["agreement"]["images"] == 3, out.err
    tiny = str(converted[0] / "tiny.png")
    with Image.open(small) as im:
        im.crop((0, 0, 30, 5)).save(tiny)
    assert cli.main(["compare", "--against", case.path, "--weights", npz, "--image", tiny]) == 1
    err = capsys.readouterr().err
    assert f"{tiny}: images must be at least 7x7, found 5x30: layer block1_conv2" in err and "Traceback" not in err, err


def test_heads_and_input_stage_are_recorded(converted):
    _, results = converted
    assert results["gmp160_weights_h5"]["head"] == ["global_max_pool", "dense"]
    assert results["gmp160_weights_h5_flags"]["head"] == ["global_max_pool", "dense"]
    assert results["two_dense_keras"]["head"] == ["global_avg_pool", "dense", "batch_norm", "dense"]
    recipe = results["recipe_keras"]["summary"]
    assert "input stage: rescaling (Rescaling): x * 0.00784314 + -1" in recipe
    assert "raw pixels" in recipe
    assert "(Normalization): (x - [" in results["normalization_keras"]["summary"]
    assert "input stage" not in results["two_dense_keras"]["summary"]
    # Input((None, None, 3)) -> CenterCrop(71, 71): the crop's target is the backbone's size, with its options
    crop = results["center_crop_keras"]["summary"]
    assert "center_crop (CenterCrop): 71x71 [Keras 3]" in crop and "(Rescaling)" in crop, crop
    assert "resizing (Resizing): 71x71, interpolation=bilinear [Keras 3]" in results["resizing_keras"]["summary"]
    assert "center_crop (CenterCrop): 71x71 [tf_keras]" in results["tf_keras_center_crop_h5"]["summary"]
    # the tutorial's preprocess_input: two operations on the input tensor, in each Keras' names (auto-names:
    # true_divide_3 when this process built other operations first)
    assert re.search(r"input stage: true_divide(_\d+)? \(TrueDivide\): x / 127.5\n  input stage: subtract(_\d+)? "
                     r"\(Subtract\): x - 1\n", results["preprocess_input_keras"]["summary"])
    assert re.search(r"input stage: tf.math.truediv(_\d+)? \(TFOpLambda\): x / 127.5\n  input stage: "
                     r"tf.math.subtract(_\d+)? \(TFOpLambda\): x - 1\n", results["tf_keras_preprocess_input_h5"]["summary"])
    inspected = results["inspect_tf_keras_preprocess_input_h5"]["stdout"]
    # its call, in place of weights; it reads the augmentation Sequential's last layer
    assert "TFOpLambda               tf.math.truediv(random_rotation, y=127.5)" in inspected, inspected
    assert re.search(r"input stage: tf.math.subtract(_\d+)? \(TFOpLambda\): x - 1", inspected)


def _refusal(res, name):
    assert res["rc"] == 1, f"{name}: exit code {res['rc']}, stdout {res['stdout']!r}"
    err = res["stderr"].strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name", ["gmp160_no_config", "recipe_weights_no_config", "tf_keras_flat_ckpt_no_flags"])
def test_weights_only_head_is_refused_not_guessed(converted, name):
    work, results = converted
    err = _refusal(results[name], name)
    for needed in ("pooling", "activation", "input size", "--config"):
        assert needed in err, f"{name}: {needed!r} not in {err!r}"
    if name == "recipe_weights_no_config":
        # the keras.io recipe's Rescaling(1/127.5, offset=-1): its scale is in the config only, so the head
        # flags would not be enough and are not offered (review 21: a Rescaling(1/255) file converted with
        # them predicted ~15% off)
        assert "input preprocessing (layer rescaling)" in err and "No flag can give them" in err, err
        assert "--pooling" not in err, err
    elif name == "gmp160_no_config":
        # a Keras 3 .weights.h5 keeps a group for its weightless GlobalMaxPooling2D: the file says its pooling
        # (review 26, F2), so only what it does not say is asked for
        assert "layers/global_max_pooling2d (max pooling)" in err and "--pooling" not in err, err
        for flag in ("--input-shape", "--classifier-activation"):
            assert flag in err, f"{name}: {flag!r} not in {err!r}"
    else:
        for flag in ("--pooling", "--input-shape", "--classifier-activation"):
            assert flag in err, f"{name}: {flag!r} not in {err!r}"
    assert list((work / "refused").iterdir()) == []


def test_inspect_reports_training_state_and_what_is_determined(converted):
    _, results = converted
    keras3 = results["inspect_recipe_keras"]
    assert keras3["rc"] == 0, keras3["stderr"]
    # Adam on the one trainable Dense: iterations, learning rate, 2 moments x (kernel, bias)
    assert "optimizer state: 6 arrays, ignored" in keras3["stdout"]
    assert "the file determines: the layers, their wiring" in keras3["stdout"]
    assert "input stage: rescaling (Rescaling)" in keras3["stdout"]
    tk = results["inspect_tf_keras_recipe_h5"]
    assert tk["rc"] == 0 and "optimizer state: " in tk["stdout"] and "ignored" in tk["stdout"]
    gmp = results["inspect_gmp160_weights_h5"]
    assert gmp["rc"] == 0 and "does not record" in gmp["stdout"] and "not convertible" in gmp["stdout"]
    assert "optimizer state:" in gmp["stdout"]


@pytest.fixture(scope="module")
def compare_reports(corpus):
    """`npxception compare --against SRC` for every source file, in this process (it runs Keras)."""
    from npxception import weights_tools
    from npxception.compare import compare

    reports = {}
    for name, case in corpus.items():
        if case.options or name == "tf_keras_ckpt_index":  # the same file as another case, another way
            continue
        model = weights_tools.read(case.path, config=case.config)  # the weights through our converter
        reports[name] = compare(model, case.path, case.x, config=case.config)
    return reports


@pytest.mark.parametrize("name", [c for c in CASES if c not in ("gmp160_weights_h5_flags", "tf_keras_ckpt_index",
                                                                 "tf_keras_flat_ckpt_flags")])
def test_compare_against_each_source_file_finds_no_divergence(compare_reports, name):
    report = compare_reports[name]
    assert report.ok, str(report)
    # every backbone layer, including those inside a nested backbone, is reached by its path
    backbone = [r for r in report.rows if r.flow != "input"]  # the input stage's layers are rows of their own
    assert len(backbone) >= 132 and backbone[0].layer == "block1_conv1"


def test_compare_cli_output_has_no_framework_noise(corpus, tmp_path):
    """The CLI run of compare on the recipe (nested backbone): the report, and no TF/absl/oneDNN lines."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "npxception", "compare", "--against",
                           corpus["recipe_keras"].path, "--image", corpus["recipe_keras"].photos[0]],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("no divergence")
    assert proc.stderr.strip() == "", f"noise on stderr: {proc.stderr[:500]}"
    for noise in ("oneDNN", "absl", "cuda", "structure of `inputs`"):
        assert noise not in proc.stdout


# ---- goldens computed by Keras (convert --check-with-keras), nested backbones included ----------

NESTED = ["recipe_keras", "normalization_keras", "tf_keras_recipe_h5", "recipe_weights_h5", "preprocess_input_keras",
          "tf_keras_preprocess_input_h5"]
# Keras with oneDNN is not bit-reproducible between graphs: a probe of a layer may differ from the
# graph that made the golden (measured 0 on these files, 2e-7 of max|x| on test_golden's backbone),
# so Keras' values are compared at 1e-6 of max|x|; a wrong layer or input is off by far more than 1e-2.
KERAS_REPEAT = 1e-6


@pytest.fixture(scope="module")
def keras_checked(corpus, tmp_path_factory):
    """Nested-backbone files and the flat two_dense, converted with Keras' own golden, in this process."""
    from npxception import weights_tools

    work = tmp_path_factory.mktemp("keras_checked")
    return {name: weights_tools.convert(corpus[name].path, work / f"{name}.npz", config=corpus[name].config,
                                        check_with_keras=True)
            for name in NESTED + ["two_dense_keras"]}


def _keras_model(case):
    """``(framework, model)``: the live Keras model that wrote the corpus file, kept by the corpus, in the
    framework that wrote it: the brief's reference for a converted file, reached with plain Keras calls.
    (Not the file opened again with load_model: 7 model rebuilds, ~3-5 s of CPU each, for the same weights;
    the goldens themselves come from the files, opened by convert --check-with-keras.)"""
    import importlib

    kmodel = case.keras_model
    assert kmodel is not None, f"{case.path}: the corpus keeps no live model for it"
    return importlib.import_module(type(kmodel).__module__.split(".")[0]), kmodel


def _assert_keras_digest(section, arrays, layer, theirs):
    from npxception import golden_file

    theirs = np.asarray(theirs, np.float64)
    assert section["layers"][layer] == list(theirs.shape), layer
    flat, scale = theirs.ravel(), np.abs(theirs).max()
    stored = {p: arrays[f"{golden_file.KEY_PREFIX}{layer}/{p}"] for p in golden_file.PARTS}
    np.testing.assert_allclose(stored["sample"], flat[stored["index"]], rtol=0, atol=KERAS_REPEAT * scale,
                               err_msg=f"{layer}: golden (ours) vs keras (theirs)")
    np.testing.assert_allclose(stored["stats"], [flat.mean(), flat.std(), scale], rtol=0,
                               atol=KERAS_REPEAT * scale, err_msg=f"{layer}: golden stats vs keras")


@pytest.mark.parametrize("name", NESTED)
def test_nested_backbone_golden_digests_backbone_layers_with_keras_values(corpus, keras_checked, name):
    """The backbone inside base_model(inputs) is digested like a flat one, with Keras' numbers,
    and the load-time check verifies every one of them."""
    import npxception
    from npxception import golden as gold
    from npxception import golden_file
    from npxception import weights as wfile

    manifest, arrays = wfile.read(keras_checked[name])
    section = manifest["golden"]
    model = npxception.load(keras_checked[name])  # the load check passes
    layers = gold.checked_layers(model)
    assert list(section["layers"]) == layers and {"block5_add", "block14_sepconv2_act"} <= set(layers)
    assert section["source"].split()[0] in ("keras", "tf_keras") and "15 intermediate layers" in section["source"]
    assert section["input"]["to_model"].startswith("pixels as they are")  # Rescaling / Normalization in-graph

    # Keras' values, reached here by hand: the preprocessing layer's output fed to the nested backbone.
    # recipe_weights_h5 is recipe_keras's model saved as weights + config.json: the same Keras values.
    fw, kmodel = _keras_model(corpus["recipe_keras" if name == "recipe_weights_h5" else name])
    base = kmodel.get_layer("xception")  # applications.Xception's name, called as one layer
    prep = next((layer for layer in kmodel.layers if type(layer).__name__ in ("Rescaling", "Normalization")),
                fw.applications.xception.preprocess_input)  # the tutorial's: operation nodes, no layer
    feed = prep(arrays[golden_file.INPUT_KEY].astype(np.float32))
    if isinstance(prep, fw.layers.Layer):  # a preprocessing layer is captured by its Keras name too
        theirs = np.asarray(feed)
        ours = model.forward(arrays[golden_file.INPUT_KEY].astype(np.float32), capture=[prep.name])[1][prep.name]
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=KERAS_REPEAT * np.abs(theirs).max(),
                                   err_msg=f"{prep.name}: captured (ours) vs keras (theirs)")
    # applications.Xception leaves its adds unnamed (add, add_1, ... in the order the process built
    # them): block5's sum is the tensor block6_sepconv1_act reads.
    probe = fw.Model(base.inputs, [base.get_layer("block1_conv1_act").output,
                                   base.get_layer("block6_sepconv1_act").input])
    for layer, theirs in zip(("block1_conv1_act", "block5_add"), probe(feed, training=False)):
        _assert_keras_digest(section, arrays, layer, theirs)

    check = gold.run_path(model, model.golden, "fast")  # what the load check localises with
    assert [r.layer for r in check.rows] == layers and check.passed, check.first_failure


def test_tampered_nested_backbone_weight_is_named_by_the_load_check(keras_checked, tmp_path):
    """A backbone weight of the converted recipe rewritten by 1%: load fails at block5_add, Keras' digest."""
    import npxception
    from npxception import golden as gold
    from weight_files import rewrite

    def edit(arrays, manifest):
        key = "block5_sepconv2/pointwise_kernel"
        arrays[key] = (arrays[key] * 1.01).astype(arrays[key].dtype)

    bad = rewrite(keras_checked["recipe_keras"], tmp_path / "bad.npz", edit)
    with pytest.raises(gold.GoldenMismatch, match="fails at layer block5_add:") as info:
        npxception.load(bad)
    msg = str(info.value)
    assert "block4_add, agrees" in msg and "The expectation came from keras" in msg


def test_flat_model_golden_is_every_layer_at_the_top_level(corpus, keras_checked):
    """A flat (inline) backbone's Keras golden: every checked layer, probed at the model's top level
    (as keras_golden did before it reached into nested backbones)."""
    import npxception
    from npxception import weights_tools
    from npxception import golden as gold
    from npxception import golden_file
    from npxception import weights as wfile

    path = keras_checked["two_dense_keras"]
    manifest, arrays = wfile.read(path)
    section = manifest["golden"]
    model = npxception.load(path)
    layers = gold.checked_layers(model)
    assert list(section["layers"]) == layers and section["source"].startswith("keras ")
    fw, kmodel = _keras_model(corpus["two_dense_keras"])
    keras_names = weights_tools.read(corpus["two_dense_keras"].path).source_layer_names  # {ours: Keras'}
    x = gold.model_input(model, arrays[golden_file.INPUT_KEY], np.float32)  # preprocess_input's output
    probe = fw.Model(kmodel.inputs, [kmodel.get_layer(keras_names[n]).output for n in layers[:-1]])
    for layer, theirs in zip(layers, [*probe(x, training=False), kmodel(x, training=False)]):
        _assert_keras_digest(section, arrays, layer, theirs)


def test_weights_only_file_is_not_rebuilt_as_an_architecture_it_is_not(corpus):
    """Without a config, keras_side rebuilds only applications.Xception (+ pooling + Dense): never a
    guess at another head, for compare --against or a Keras golden alike."""
    from npxception import weights_tools
    from npxception import keras_side

    two_dense = weights_tools.read(corpus["two_dense_keras"].path)  # GAP, Dense, BN, Dense
    with pytest.raises(ValueError, match=r"not keras.applications.Xception's \(variant keras, head "
                                         r"\['global_avg_pool', 'dense', 'batch_norm', 'dense'\]\).*config"):
        keras_side.load(corpus["recipe_weights_h5"].path, model=two_dense)
    # the recipe itself: its Rescaling stage is not in applications.Xception, which would get raw pixels
    recipe = weights_tools.read(corpus["recipe_keras"].path)
    with pytest.raises(ValueError, match=r"an input stage rescaling \(rescaling\)\).*config"):
        keras_side.load(corpus["recipe_weights_h5"].path, model=recipe)


# ---- the converter's rules on edited copies of the recipe (no framework needed) -----------

@pytest.fixture(scope="module")
def recipe_layers(corpus):
    from npxception import weights_tools

    return weights_tools.read_layers(corpus["recipe_keras"].path).klayers


def _edited(klayers, name, class_name=None, **config):
    """A copy of the layer list with layer ``name`` turned into ``class_name`` / given ``config``."""
    import dataclasses

    out = []
    for k in klayers:
        if k.name == name:
            k = dataclasses.replace(k, class_name=class_name or k.class_name, config={**(k.config or {}), **config})
        out.append(k)
    return out


def _convert(klayers, **kw):
    from npxception.weights_tools.mapping import to_npxception

    return to_npxception(klayers, source="recipe", input_shape=(71, 71, 3), **kw)


@pytest.mark.parametrize("class_name", ["Lambda", "MyAugment"])
def test_unknown_layer_is_refused_with_the_way_out(recipe_layers, class_name):
    from npxception.weights_tools import ConversionError

    edited = _edited(recipe_layers, "random_flip", class_name)
    # a Lambda's way out is a rebuild (its function is code, or only a name, in the file), never
    # --skip-layer: whether it is an identity cannot be known; an unknown class may be one
    way_out = "Rebuild the model" if class_name == "Lambda" else "--skip-layer random_flip"
    with pytest.raises(ConversionError, match=f"random_flip \\({class_name}\\).*{way_out}") as refused:
        _convert(edited)
    assert ("--skip-layer" in str(refused.value)) == (class_name != "Lambda")
    if class_name == "Lambda":  # a Lambda computes its function: the user's word is refused for it too
        with pytest.raises(ConversionError, match="--skip-layer random_flip: a Lambda layer computes"):
            _convert(edited, skip_layers=("random_flip",))
        return
    # the user's word that it is an identity at inference: then it converts, to the same model
    model = _convert(edited, skip_layers=("random_flip",))
    plain = _convert(recipe_layers)
    assert model.input_stage == plain.input_stage and model.head == plain.head


def test_skip_layer_must_name_a_weightless_layer(recipe_layers):
    from npxception.weights_tools import ConversionError

    with pytest.raises(ConversionError, match="--skip-layer no_such_layer: no such layer"):
        _convert(recipe_layers, skip_layers=("no_such_layer",))
    with pytest.raises(ConversionError, match="--skip-layer dense: it has weights"):
        _convert(recipe_layers, skip_layers=("dense",))


def test_preprocessing_after_the_backbone_is_refused_not_dropped(recipe_layers):
    from npxception.weights_tools import ConversionError

    edited = _edited(recipe_layers, "dropout", "Rescaling", scale=2.0, offset=0.0)
    with pytest.raises(ConversionError, match="dropout \\(Rescaling\\)"):
        _convert(edited)


def _with_operation(klayers, before, reads):
    """The layer list with `x * 2.0` (a Keras 3 operation node) inserted where layer ``before`` reads ``reads``."""
    import dataclasses

    from npxception.weights_tools.graph import Argument, KLayer

    op = KLayer(name="multiply", class_name="Multiply", function="keras.src.ops.numpy.Multiply", inbound=[reads],
                arguments=[Argument("#0", tensor=reads, dtype="float32"), Argument("#1", value=2.0)])
    out = []
    for k in klayers:
        if k.name == before:
            out.append(op)
            k = dataclasses.replace(k, inbound=["multiply" if i == reads else i for i in k.inbound])
        out.append(k)
    return out


def test_operation_in_the_head_or_the_backbone_is_refused_by_name_or_skipped(corpus):
    """The tutorial's model with `x * 2.0` after its pooling, or between two backbone blocks: refused, naming
    the operation, its call and where it sits; the user's --skip-layer converts it to the tutorial's model."""
    from npxception import weights_tools
    from npxception.weights_tools import ConversionError

    klayers = weights_tools.read_layers(corpus["preprocess_input_keras"].path).klayers
    plain = _convert(klayers)
    assert [s["kind"] for s in plain.input_stage] == ["arithmetic", "arithmetic"]
    block5 = next(k for k in klayers if k.name == "block5_sepconv1_act")
    for before, reads, where in (("dropout", "pool", "in the head"), ("block5_sepconv1_act", block5.inbound[0],
                                                                      "inside the backbone")):
        edited = _with_operation(klayers, before, reads)
        with pytest.raises(ConversionError, match=f"operation multiply \\(keras.ops.multiply\\({reads}, 2.0\\)\\) "
                                                  f"{where}, reading from {reads}: .*--skip-layer multiply"):
            _convert(edited)
        skipped = _convert(edited, skip_layers=("multiply",))
        assert skipped.input_stage == plain.input_stage and skipped.head == plain.head


def test_geometry_layers_size_the_backbone_or_are_refused(recipe_layers):
    """The stage's output size is the backbone's; the source's input size is kept; what the Keras that
    wrote the layer does not determine is refused (data_format in a config marks Keras 3's layers)."""
    from npxception.weights_tools import ConversionError
    from npxception.weights_tools.mapping import to_npxception

    keras3 = {"data_format": "channels_last"}
    same = _convert(_edited(recipe_layers, "rescaling", "Resizing", height=71, width=71, **keras3))
    assert same.input_shape == same.source_input_shape == (71, 71, 3)
    assert [s["kind"] for s in same.input_stage] == ["resizing"] and same.input_stage[0]["keras"] == "keras3"
    assert not same.takes_pixels  # no rescaling left: predict applies preprocess_input
    # a fixed 71x71 input and Keras 3's CenterCrop(80, 80): Keras 3 does not determine the answer
    with pytest.raises(ConversionError, match="rescaling \\(CenterCrop\\) cannot take 71x71 images.*80x80"):
        _convert(_edited(recipe_layers, "rescaling", "CenterCrop", height=80, width=80, **keras3))
    # tf_keras' CenterCrop resizes it (smart_resize): the backbone runs at 80x80, the model takes 71x71
    up = _convert(_edited(recipe_layers, "rescaling", "CenterCrop", height=80, width=80))
    assert up.input_shape == (80, 80, 3) and up.source_input_shape == (71, 71, 3)
    assert up.input_stage[0]["keras"] == "tf_keras"
    # a variable input size: the target becomes the backbone's size and the model takes any size
    free = _edited(_edited(recipe_layers, "rescaling", "CenterCrop", height=80, width=80, **keras3),
                   "image", batch_shape=[None, None, None, 3])
    model = to_npxception(free, source="recipe")
    assert model.input_shape == (80, 80, 3) and model.source_input_shape == (None, None, 3)
    # Keras 3's RandomCrop returns its input at inference, whatever size it declares: only its own size
    with pytest.raises(ConversionError, match="rescaling \\(RandomCrop\\) cannot take anyxany images.*Keras 3"):
        to_npxception(_edited(free, "rescaling", "RandomCrop"), source="recipe")
    with pytest.raises(ConversionError, match="rescaling \\(RandomCrop\\) cannot take 71x71 images"):
        _convert(_edited(recipe_layers, "rescaling", "RandomCrop", height=64, width=64, **keras3))
    rc = _convert(_edited(recipe_layers, "rescaling", "RandomCrop", height=71, width=71, **keras3))
    assert rc.input_shape == rc.source_input_shape == (71, 71, 3)
    # tf_keras' RandomCrop resizes (smart_resize) at inference since Keras 2.7: any size
    free_tk = _edited(_edited(recipe_layers, "rescaling", "RandomCrop", height=80, width=80),
                      "image", batch_shape=[None, None, None, 3])
    tk = to_npxception(free_tk, source="recipe", keras_version="2.15.0")
    assert tk.input_shape == (80, 80, 3) and tk.input_stage[0]["keras"] == "tf_keras"
    # before 2.7 it resized to the shorter side and centre-cropped, with the same config: refused where
    # the file records an older version or none
    for version in ("2.6.0", None):
        with pytest.raises(ConversionError, match="rescaling \\(RandomCrop\\): at inference Keras 2.7"):
            to_npxception(free_tk, source="recipe", keras_version=version)
    # an interpolation npxception does not compute is named at conversion
    with pytest.raises(ConversionError, match="rescaling \\(Resizing\\): interpolation='lanczos5'"):
        _convert(_edited(recipe_layers, "rescaling", "Resizing", height=71, width=71, interpolation="lanczos5"))


def test_normalization_that_depends_on_an_unrecorded_epsilon_is_refused(recipe_layers):
    from npxception.weights_tools import ConversionError

    edited = _edited(recipe_layers, "rescaling", "Normalization", mean=[0.0, 0.0, 0.0], variance=[1.0, 1e-16, 1.0],
                     axis=-1)
    with pytest.raises(ConversionError, match="epsilon"):
        _convert(edited)


def test_training_state_paths():
    from npxception.weights_tools.keras3 import training_state

    found = training_state(["optimizer/vars/0", "optimizer/vars/1", "vars/0", "metrics/0/vars/0",
                            "layers/random_flip/seed_generator/vars/0", "layers/dense/vars/0", "extra/x"])
    assert found == {"optimizer state": ["optimizer/vars/0", "optimizer/vars/1"],
                     "model-level variables": ["vars/0"], "metrics state": ["metrics/0/vars/0"],
                     "seed generator state": ["layers/random_flip/seed_generator/vars/0"]}


@pytest.mark.parametrize("policy", [
    "int8_from_float32",  # Keras 3's quantized policies, and any other name, stay refused by name
    {"module": "keras", "class_name": "QuantizedDTypePolicy", "config": {"name": "int8_from_mixed_bfloat16"},
     "registered_name": None},
])
def test_a_dtype_policy_npxception_does_not_know_is_refused_by_name(corpus, policy):
    """16-bit policies (mixed precision) are read and decided at conversion (tests/test_mixed_precision.py);
    a policy that is none of float32, float64, mixed_float16, mixed_bfloat16, float16, bfloat16 is refused
    while the config is read, naming the layer and the policy."""
    import zipfile

    from npxception.weights_tools import ConversionError
    from npxception.weights_tools.keras_config import read_keras_config

    with zipfile.ZipFile(corpus["recipe_keras"].path) as archive:
        config = json.loads(archive.read("config.json"))
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    read_keras_config(config, source="recipe.keras")  # as written (float32): accepted
    dense["config"]["dtype"] = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}
    read_keras_config(config, source="recipe.keras")  # read; converted only when asked (dtype_policy)
    dense["config"]["dtype"] = policy
    name = policy if isinstance(policy, str) else policy["config"]["name"]
    with pytest.raises(ConversionError, match=rf"layer {dense['config']['name']} \(Dense\) computes with "
                                              rf"the dtype policy '{name}'.*model.quantize\('int8'\)"):
        read_keras_config(config, source="recipe.keras")


# ---- tf_keras' TensorFlow formats: SavedModel directories and save_weights checkpoints ----------

def test_tf_checkpoint_of_a_nested_model_without_config_is_refused_naming_config(converted):
    work, results = converted
    err = _refusal(results["tf_keras_ckpt_no_config"], "tf_keras_ckpt_no_config")
    assert "layer_with_weights-0 is a nested model" in err and "--config" in err, err
    assert list((work / "refused").iterdir()) == []


def test_inspect_savedmodel_reports_its_config_and_training_state(converted):
    res = converted[1]["inspect_tf_keras_savedmodel"]
    assert res["rc"] == 0, res["stderr"]
    out = res["stdout"]
    assert "tf_keras SavedModel directory" in out
    # Adam on the Dense (iterations, learning rate, 2 moments x (kernel, bias)); the compiled loss metric
    # (total, count); RandomFlip's and RandomRotation's random state (rng_type="stateful")
    assert "optimizer state: 6 arrays, ignored" in out and "metrics state: 2 arrays, ignored" in out
    assert "random generator state: 2 arrays, ignored" in out
    assert "input stage: rescaling (Rescaling)" in out and "input stage: normalization (Normalization)" in out


@pytest.mark.parametrize("name, prefix", [("tf_keras_ckpt", ""), ("tf_keras_savedmodel", "variables/variables")])
def test_bundle_reader_matches_tensorflow_on_every_entry(corpus, name, prefix):
    """Every entry of a real bundle, read without TensorFlow, is bit for bit what TensorFlow reads."""
    import tensorflow as tf

    from npxception.weights_tools.tf_bundle import DT_STRING, Bundle

    path = os.path.join(corpus[name].path, prefix) if prefix else corpus[name].path
    theirs = tf.train.load_checkpoint(path)
    shapes, dtypes = theirs.get_variable_to_shape_map(), theirs.get_variable_to_dtype_map()
    with Bundle(path) as bundle:
        assert set(bundle.entries) == set(shapes)
        for key, entry in bundle.entries.items():
            expected = theirs.get_tensor(key)
            if entry.dtype == DT_STRING:
                assert bundle.string(key) == expected, key
                continue
            ours = np.asarray(bundle.array(key))
            assert ours.dtype == dtypes[key].as_numpy_dtype and ours.shape == tuple(shapes[key]), key
            np.testing.assert_array_equal(ours, expected, err_msg=key)


def test_tf_formats_convert_exactly_as_the_same_models_h5(corpus):
    """A SavedModel and a checkpoint + config give the model a full-model .h5 of it gives: the same
    manifest (but its source) and the same arrays, bit for bit."""
    from npxception import weights_tools

    saved = corpus["tf_keras_savedmodel"].path
    h5 = weights_tools.read(os.path.join(os.path.dirname(saved), "tf_keras_same.h5"))
    for name in ("tf_keras_savedmodel", "tf_keras_ckpt"):
        model = weights_tools.read(corpus[name].path, config=corpus[name].config)
        ours, theirs = model.manifest(), h5.manifest()
        assert {k: v for k, v in ours.items() if k != "source"} == {k: v for k, v in theirs.items() if k != "source"}
        assert model.weights.keys() == h5.weights.keys()
        for key in h5.weights:
            np.testing.assert_array_equal(model.weights[key], h5.weights[key], err_msg=f"{name}: {key}")


def test_savedmodel_without_traces_reads_as_the_default_one(corpus):
    """``model.save(dir, save_traces=False)`` of the same model: a real variant users write (and what
    tests/test_mixed_precision.py and tests/test_channels.py save, ~4 s instead of ~14-30 s of CPU). Its files
    differ where our reader does not depend on them: no traced functions in saved_model.pb, other node ids, and
    a bundle keyed by layer path (``layer_with_weights-1/...``) without the model's ``variables/N`` list or the
    compiled metrics; the reader walks the object graph to each variable, so it gets the same config, the same
    Keras-to-object paths, and the same manifest and arrays, bit for bit, as from the default save."""
    import pathlib

    from npxception import weights_tools
    from npxception.weights_tools.savedmodel import read_metadata
    from npxception.weights_tools.tf_bundle import Bundle

    default = pathlib.Path(corpus["tf_keras_savedmodel"].path)
    lean = default.parent / "tf_keras_savedmodel_no_traces"
    (config, paths, ids), (lean_config, lean_paths, lean_ids) = read_metadata(default), read_metadata(lean)
    assert config == lean_config and paths == lean_paths and len(paths) > 130
    assert ids != lean_ids  # the functions save_traces drops were numbered objects: the graph is not the same one
    keys = {}
    for name, directory in (("default", default), ("lean", lean)):
        with Bundle(directory / "variables" / "variables") as bundle:
            keys[name] = set(bundle.entries)
    # the default save is the one whose variables/N keys (and metrics state) the corpus' other tests read
    assert "variables/0/.ATTRIBUTES/VARIABLE_VALUE" in keys["default"]
    assert any(k.startswith("keras_api/metrics/") for k in keys["default"])
    assert not any(k.startswith(("variables/", "keras_api/")) for k in keys["lean"])
    assert "layer_with_weights-1/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys["lean"]
    ours, theirs = weights_tools.read(lean), weights_tools.read(default)
    assert {k: v for k, v in ours.manifest().items() if k != "source"} == \
        {k: v for k, v in theirs.manifest().items() if k != "source"}
    assert ours.weights.keys() == theirs.weights.keys()
    for key in theirs.weights:
        np.testing.assert_array_equal(ours.weights[key], theirs.weights[key], err_msg=key)


def test_tf_formats_convert_with_keras_golden(corpus, tmp_path):
    """--check-with-keras opens a SavedModel, a checkpoint (+ config), a .keras archive and a .weights.h5
    (+ to_json config) in tf_keras, which wrote them (the last two in Keras 3's layouts: review 30 F1)."""
    import npxception
    from npxception import weights_tools

    for name in ("tf_keras_savedmodel", "tf_keras_ckpt_index", "tf_keras_recipe_keras",
                 "tf_keras_recipe_weights_h5"):
        case = corpus[name]
        out = weights_tools.convert(case.path, tmp_path / f"{name}.npz", config=case.config, check_with_keras=True)
        model = npxception.load(out)  # the load-time check against Keras' digests passes
        assert model.golden.source.startswith("tf_keras "), model.golden.source


def _rezipped(src, dst, *, drop=(), metadata=None, config_edit=None):
    """A copy of the .keras archive ``src`` at ``dst``: members in ``drop`` left out, ``metadata.json``
    replaced by ``metadata`` (a dict), ``config.json`` passed through ``config_edit``."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info.filename)
            if info.filename == "metadata.json" and metadata is not None:
                data = json.dumps(metadata).encode()
            if info.filename == "config.json" and config_edit is not None:
                data = json.dumps(config_edit(json.loads(data))).encode()
            zout.writestr(info, data)
    return str(dst)


def _modules(config, keep):
    """``config`` with every object's ``module`` passed through ``keep(module)`` (dropped where it returns None)."""
    if isinstance(config, list):
        return [_modules(c, keep) for c in config]
    if not isinstance(config, dict):
        return config
    out = {k: _modules(v, keep) for k, v in config.items() if k != "module"}
    if isinstance(config.get("module"), str) and keep(config["module"]) is not None:
        out["module"] = keep(config["module"])
    return out


def test_undetermined_writer_is_refused_by_name(corpus, tmp_path, capsys):
    """A .keras archive without metadata.json's keras_version and without a framework "module" in its config,
    or a .weights.h5 whose config records neither: Keras 3 and tf_keras write both layouts, so compare refuses,
    in one line, naming what is missing, before any framework opens it. With only the metadata gone, the
    config's modules still say who wrote it (a tf_keras archive; a Keras 3 one), also where the top-level one
    is a public name both write (review 31 B1: a tf_keras Sequential records "module": "keras", as Keras 3's
    does): the Functional inside names its own package."""
    from npxception import cli, keras_side

    tfk = corpus["tf_keras_recipe_keras"].path
    no_metadata = _rezipped(tfk, tmp_path / "no_metadata.keras", drop=("metadata.json",))
    assert keras_side.saved_by(no_metadata) == ("tf_keras", True)  # its config's module: tf_keras.src...
    k3 = _rezipped(corpus["recipe_keras"].path, tmp_path / "k3_no_metadata.keras", drop=("metadata.json",))
    assert keras_side.saved_by(k3) == ("keras", True)  # Keras 3's module: keras.src.models.functional
    for src, writer in ((tfk, "tf_keras"), (corpus["recipe_keras"].path, "keras")):
        public_top = _rezipped(src, tmp_path / f"{writer}_public_top.keras", drop=("metadata.json",),
                               config_edit=lambda c: {**c, "module": "keras"})
        assert keras_side.saved_by(public_top) == (writer, True)  # the nested Functional's module decides
    # only public names, which both write: nothing says
    def public(module):  # a public name: "keras", "keras.layers"
        return module if module.split(".")[:2] in (["keras"], ["keras", "layers"]) else None

    unsaid = _rezipped(tfk, tmp_path / "unsaid.keras", drop=("metadata.json",),
                       config_edit=lambda c: _modules(c, public))
    assert cli.main(["compare", "--against", unsaid]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot tell whether Keras 3 or tf_keras wrote this .keras" in err, err
    assert "metadata.json" in err and "keras_version" in err, err

    weights = corpus["tf_keras_recipe_weights_h5"]
    config = json.loads(open(weights.config).read())
    del config["keras_version"]  # the nested objects' modules still say: tf_keras
    (tmp_path / "versionless.json").write_text(json.dumps(config))
    assert keras_side.saved_by(weights.path, str(tmp_path / "versionless.json")) == ("tf_keras", False)
    (tmp_path / "bare.json").write_text(json.dumps(_modules(config, public)))  # public names only: nothing says
    assert cli.main(["compare", "--against", weights.path, "--config", str(tmp_path / "bare.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot tell whether Keras 3 or tf_keras wrote this .weights.h5" in err
    assert "keras_version" in err and "bare.json" in err, err


def test_a_frameworks_huge_error_is_one_bounded_line(corpus, tmp_path, capsys):
    """A tf_keras archive whose metadata.json claims Keras 3: Keras 3 opens it (as the file says) and fails with
    "Could not locate class 'Functional'" followed by the whole config (~100 KB on one line, review 30 F1).
    compare and convert --check-with-keras print its first line cut to keras_side.FRAMEWORK_MESSAGE_CHARS."""
    from npxception import cli, keras_side
    from npxception.weights_tools.cli import main as convert_main

    lying = _rezipped(corpus["tf_keras_recipe_keras"].path, tmp_path / "lying.keras",
                      metadata={"keras_version": "3.15.1", "date_saved": "2026-11-30@20:00:00"})
    # the whole message is what the bound is for: our line is the path, the framework, and at most the cut line
    bound = len(lying) + 200 + keras_side.FRAMEWORK_MESSAGE_CHARS
    assert cli.main(["compare", "--against", lying]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < bound, err[:2000]
    assert "keras 3." in err and "Could not locate class" in err and err.endswith("...)"), err
    assert convert_main(["convert", lying, "-o", str(tmp_path / "x.npz"), "--check-with-keras"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < bound, err[:2000]
    assert "--check-with-keras: keras 3." in err and "Could not locate class" in err, err
    assert not (tmp_path / "x.npz").exists()


def test_tf_format_parts_are_refused_with_the_path_to_give(corpus, tmp_path):
    """detect_format on the pieces of a SavedModel or checkpoint names the file and what to give instead."""
    import shutil

    from npxception.weights_tools import ConversionError, detect_format

    saved = corpus["tf_keras_savedmodel"].path
    ckpt = corpus["tf_keras_ckpt"].path
    assert detect_format(saved) == "savedmodel"
    assert detect_format(ckpt) == detect_format(ckpt + ".index") == "tf_checkpoint"
    cases = [
        (os.path.join(saved, "saved_model.pb"), "graph of a TensorFlow SavedModel.*give the SavedModel's directory"),
        (os.path.join(saved, "keras_metadata.pb"), "Keras metadata of a tf_keras SavedModel.*directory"),
        (os.path.join(saved, "variables"), "is a directory, not a Keras file or a TensorFlow SavedModel"),
        (ckpt + ".data-00000-of-00001", "the data half of a TensorFlow checkpoint; give its prefix"),
        (os.path.join(os.path.dirname(ckpt), "checkpoint"), "bookkeeping file of a TensorFlow checkpoint"),
        (ckpt + "_missing", "no such file"),
    ]
    lonely = tmp_path / "lonely.index"  # an index copied without its data file
    shutil.copy(ckpt + ".index", lonely)
    cases.append((str(lonely), "index without its data file lonely.data-00000-of-00001"))
    export = tmp_path / "exported"  # what model.export() writes: saved_model.pb, no keras_metadata.pb
    shutil.copytree(saved, export, ignore=shutil.ignore_patterns("keras_metadata.pb", "variables*"))
    cases.append((str(export), "SavedModel without keras_metadata.pb.*model.save\\('model.keras'\\)"))
    for path, message in cases:
        with pytest.raises(ConversionError, match=message):
            detect_format(path)


@pytest.mark.parametrize("name", ["tf_keras_savedmodel", "tf_keras_ckpt", "tf_keras_ckpt_index", "recipe_keras",
                                  "recipe_h5"])
def test_a_keras_save_given_as_npxception_weights_says_convert_it_first(corpus, name):
    """`npxception predict --weights` takes converted .npz files; a Keras or TensorFlow save is named as
    what it is, with the command that converts it."""
    import npxception

    with pytest.raises(ValueError, match=r"not an npxception \.npz weight file; convert it first: "
                                         r"npxception convert .* -o model\.npz"):
        npxception.load(corpus[name].path)


def test_keras3_export_is_refused_with_what_to_save_instead(tmp_path):
    """Keras 3's model.export(): a real SavedModel with a serving graph and no keras_metadata.pb."""
    import keras

    from npxception.weights_tools import ConversionError, read

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.export(str(tmp_path / "exported"), verbose=False)
    assert (tmp_path / "exported" / "saved_model.pb").is_file()
    with pytest.raises(ConversionError, match=r"exported: a TensorFlow SavedModel without keras_metadata\.pb.*"
                                              r"model\.save\('model\.keras'\)"):
        read(tmp_path / "exported")


def test_every_format_records_the_keras_version_that_wrote_it(corpus):
    """What decides an old tf_keras RandomCrop's answer (weights_tools.preprocessing): the version each
    reader finds (.keras metadata.json, a legacy .h5's attribute, a SavedModel's root metadata, a given
    to_json() config), equal to the version of the Keras that wrote the file in this process."""
    import keras
    import tf_keras

    from npxception import weights_tools

    expected = {"recipe_keras": keras.__version__, "recipe_h5": keras.__version__,
                "tf_keras_recipe_h5": tf_keras.__version__, "tf_keras_savedmodel": tf_keras.__version__,
                "tf_keras_ckpt": tf_keras.__version__}
    for name, version in expected.items():
        case = corpus[name]
        with weights_tools.open_layers(case.path, config=case.config) as reading:
            assert reading.keras_version == version, (name, reading.keras_version, version)
