"""``npxception.Xception``'s Keras arguments against ``keras.applications.Xception`` (Keras 3) itself.

* ``classifier_activation`` with a weight file: the default keeps the file's head; an explicit one
  replaces the file's classifier activation, as Keras builds ``Dense(classes, activation=...)`` whatever
  the weights were trained with. Measured against Keras' own model with the file's weights and the
  activation asked (None: the logits, also behind a separate ``Activation("softmax")`` or ``Softmax()``).
* The activations our head runs are accepted (Keras builds them), by name; callables are refused naming
  the name to pass; the argument is read only with the top, as Keras reads it.
* ``include_top=True`` with a size-free ``input_shape``: refused, as Keras refuses it.
* ``count_params()`` an int, ``summary()`` of a model of any size: None sizes, as Keras prints them.
* The article's model has no 71x71 constructor rule: its table's minimum (1x1), measured against it.

Keras models are 71x71 (Keras' minimum without the top), random kernels and BN statistics; the last
Dense is scaled so that the logits are a few units (a saturated softmax would hide a missing one).
Tolerances: float32 through ~36 layers summed in another order, 1e-4 relative to the largest logit
(measured 2e-7..1e-6 here); probabilities 1e-5 absolute (softmax's and sigmoid's Jacobians are at most 1/4).
"""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np
import pytest

import npxception
from npxception.golden import NoGoldenWarning
from keras_helpers import keras_predict, randomize

SIZE = 71
CLASSES = 5
LOGIT_RTOL = 1e-4
PROB_ATOL = 1e-5


def _keras():
    import keras

    return keras


@functools.lru_cache(maxsize=None)
def _built(activation):
    """keras.applications.Xception with ``classifier_activation=activation`` (built once per activation)."""
    return _keras().applications.Xception(weights=None, classes=CLASSES, input_shape=(SIZE, SIZE, 3),
                                          classifier_activation=activation)


def _asked(activation, weights):
    """Keras' answer to classifier_activation=``activation`` on ``weights``: applications.Xception built
    with it, the weights set (what Keras' Xception(weights=file, classifier_activation=...) loads)."""
    model = _built(activation)
    model.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{name: (npz path, Keras' output of the model that wrote it)}, the weights, the batch and Keras' logits.

    The files are saved without a golden case (npxception.golden): its Keras run costs seconds a file
    and is not what is measured here; Keras' own outputs are computed below."""
    from npxception.weights_tools import from_keras

    keras = _keras()
    root = tmp_path_factory.mktemp("heads")
    x = np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    logits_model = randomize(_built(None), seed=3)
    _, acts = from_keras(logits_model).forward(x, capture=["avg_pool"])  # Keras' features, as ours (a 2nd trace
    dense = logits_model.get_layer("predictions")                         # of Keras would cost seconds)
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * (3.0 / np.abs(acts["avg_pool"] @ kernel).max()), bias])  # logits of a few units
    weights = logits_model.get_weights()
    logits = np.asarray(logits_model(x, training=False))
    assert 1.0 < np.abs(logits).max() < 10.0

    head_logits = logits_model.get_layer("predictions").output
    out = {
        "logits": logits_model,
        "dense_softmax": _asked("softmax", weights),  # Dense(5, activation="softmax"): Keras' default head
        # the same layers with the softmax as a layer of its own: Activation("softmax"), Softmax()
        "activation_layer": keras.Model(logits_model.input, keras.layers.Activation("softmax", name="probs")(head_logits)),
        "softmax_layer": keras.Model(logits_model.input, keras.layers.Softmax(name="probs")(head_logits)),
    }
    paths = {}
    for name, model in out.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoGoldenWarning)
            path = from_keras(model).save(root / f"{name}.npz", golden=False)
            npxception.load(path)  # its one-time warning, here
        paths[name] = (path, np.asarray(model(x, training=False)))
    return paths, weights, x, logits


def _close_logits(ours, theirs, what):
    err = float(np.abs(ours - theirs).max())
    assert err <= LOGIT_RTOL * np.abs(theirs).max(), f"{what}: max |ours - keras| {err:.3g}; ours {ours[0]} " \
                                                     f"vs keras {theirs[0]}"


@pytest.mark.parametrize("name", ["dense_softmax", "activation_layer", "softmax_layer"])
@pytest.mark.parametrize("asked", [None, "linear"])
def test_none_returns_the_logits_whatever_the_files_head(files, name, asked):
    """Dense(5, softmax), Dense(5) -> Activation("softmax") and Dense(5) -> Softmax(): the same logits."""
    paths, _, x, logits = files
    path, probs = paths[name]
    kept = npxception.Xception(weights=path)  # the default: the file's head, its probabilities
    assert kept.classifier_activation == "softmax"
    np.testing.assert_allclose(kept(x), probs, atol=PROB_ATOL)
    model = npxception.Xception(weights=path, classifier_activation=asked, classes=CLASSES)
    assert model.classifier_activation is None
    _close_logits(model(x), logits, f"{name}, classifier_activation={asked!r}")
    _close_logits(model.forward(x, impl="reference")[0], logits, f"{name} reference")
    assert model.layer_names == kept.layer_names  # the softmax layer stays, as the identity


@pytest.mark.parametrize("name", ["logits", "activation_layer"])
@pytest.mark.parametrize("asked", ["softmax", "sigmoid"])
def test_an_explicit_activation_is_applied_as_keras_applies_it(files, name, asked):
    """An explicit classifier_activation on the file's logits: Keras' Xception built with it, same weights."""
    paths, weights, x, _ = files
    expected = np.asarray(_asked(asked, weights)(x, training=False))
    model = npxception.Xception(weights=paths[name][0], classifier_activation=asked)
    assert model.classifier_activation == asked
    for impl in ("fast", "reference"):
        np.testing.assert_allclose(model(x, impl=impl), expected, atol=PROB_ATOL * np.abs(expected).max(),
                                   err_msg=f"{name} asked {asked} ({impl})")


def test_a_head_ending_past_its_last_activation_is_refused_by_name(tmp_path):
    """Dense -> BatchNormalization: logits with no activation to replace; None keeps them, "softmax" is
    refused naming the head rather than appended as a layer the file never had."""
    from npxception.model import XceptionModel, random_params
    import npxception.architecture as arch
    import npxception.head_schema as head_schema

    head = head_schema.keras_head(True, classes=3, classifier_activation=None) + [
        {"kind": "batch_norm", "name": "head_bn", "epsilon": 1e-3}]
    params = random_params(arch.backbone(arch.VARIANTS["keras"]), head, np.float32, 1)
    path = XceptionModel(params, head=head, input_shape=(SIZE, SIZE, 3)).save(tmp_path / "bn.npz")
    assert npxception.Xception(weights=path, classifier_activation=None).head == head
    with pytest.raises(ValueError, match=re.escape(f"{path}: classifier_activation='softmax': the file's head "
                                                   "ends in logits from head_bn (batch_norm)") + ".*avg_pool "
                                         r"\(global_avg_pool\) -> predictions \(dense\) -> head_bn \(batch_norm\)"):
        npxception.Xception(weights=path, classifier_activation="softmax")


def test_explicit_classes_must_be_the_files(files):
    """classes=1000 given (not the default) on a 5-class file: refused, as Keras' load would fail."""
    paths, *_ = files
    with pytest.raises(ValueError, match="classes: the weight file's classifier has 5 classes, requested 1000"):
        npxception.Xception(weights=paths["logits"][0], classes=1000)
    assert npxception.Xception(weights=paths["logits"][0]).classes == CLASSES


def test_activations_keras_builds_are_built():
    """weights=None: Keras builds them (the files' tests above build it with several); ours applies each,
    as Keras' activation computes it, to the same seed's logits."""
    keras = _keras()
    x = np.random.default_rng(1).uniform(-1, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
    z = npxception.Xception(classes=CLASSES, input_shape=(SIZE, SIZE, 3), classifier_activation=None, seed=4)(x)
    for activation in ("linear", "relu", "sigmoid", "tanh"):
        ours = npxception.Xception(classes=CLASSES, input_shape=(SIZE, SIZE, 3), classifier_activation=activation,
                                   seed=4)
        expected = np.asarray(keras.activations.get(activation)(z))
        np.testing.assert_allclose(ours(x), expected, rtol=1e-5, atol=1e-6 * np.abs(z).max(), err_msg=activation)


def test_callables_and_unknown_names_are_refused_naming_the_form():
    keras = _keras()
    names = ", ".join(repr(a) for a in npxception.head_schema.ACTIVATIONS)
    with pytest.raises(ValueError, match=re.escape(f"classifier_activation: expected a name, one of {names}, found "
                                                   "the callable 'sigmoid' (npxception runs its own activations, "
                                                   "chosen by name); pass 'sigmoid'")):
        npxception.Xception(classifier_activation=keras.activations.sigmoid)
    with pytest.raises(ValueError, match=r"found the callable '<lambda>' \(npxception runs its own activations, "
                                         r"chosen by name\)$"):
        npxception.Xception(classifier_activation=lambda z: z)
    with pytest.raises(ValueError, match=re.escape(f"classifier_activation: expected one of {names}, found 'bogus'")):
        npxception.Xception(classifier_activation="bogus")
    with pytest.raises(ValueError, match="Could not interpret activation function identifier: bogus"):
        keras.applications.Xception(weights=None, classifier_activation="bogus")  # Keras refuses it too
    # ImageNet weights with the top: softmax or None, Keras' rule (refused before any download)
    with pytest.raises(ValueError, match="classifier_activation: ImageNet weights with the top take 'softmax' or None"):
        npxception.Xception("imagenet", classifier_activation="sigmoid")


@pytest.fixture(scope="module")
def no_top():
    """Keras' no-top model, built with an activation it would refuse with the top: it ignores it."""
    return _keras().applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3),
                                          classifier_activation="bogus")


@pytest.mark.parametrize("activation", ["sigmoid", "bogus", len])
def test_the_activation_is_ignored_without_the_top_as_keras_ignores_it(no_top, activation):
    ours = npxception.Xception(include_top=False, input_shape=(SIZE, SIZE, 3), classifier_activation=activation)
    assert ours.head == [] and ours.count_params() == no_top.count_params()


@pytest.mark.parametrize("shape", [(None, None, 3), (None, SIZE, 3), (SIZE, None, 3)])
def test_the_top_needs_a_static_input_shape_as_in_keras(shape):
    with pytest.raises(ValueError, match=re.escape("you should specify a static `input_shape`")):
        _keras().applications.Xception(weights=None, input_shape=shape)
    with pytest.raises(ValueError, match=re.escape("input_shape: with include_top=True Keras requires a static "
                                                   "input_shape ('If `include_top` is True, you should specify a "
                                                   f"static `input_shape`'), found {shape}")):
        npxception.Xception(input_shape=shape)
    assert npxception.Xception(include_top=False, input_shape=shape).input_shape == shape


def test_count_params_is_an_int_and_the_trainable_split_a_method(no_top):
    kmodel = no_top
    ours = npxception.Xception(include_top=False, input_shape=(SIZE, SIZE, 3))
    assert type(ours.count_params()) is int and ours.count_params() == kmodel.count_params() == 20_861_480
    trainable = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    assert ours.count_trainable_params() == trainable == 20_806_952


def test_summary_of_a_model_of_any_size_prints_none_as_keras_does():
    keras = _keras()
    kmodel = keras.applications.Xception(weights=None, include_top=False, pooling="avg", input_shape=(None, None, 3))
    # what Keras' summary prints in its Output Shape column (its table wraps them across rows)
    theirs = {layer.name: str(tuple(layer.output.shape)) for layer in kmodel.layers}
    ours = npxception.Xception(include_top=False, pooling="avg")
    lines = []
    ours.summary(print_fn=lines.append)
    text = lines[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+) \(\w+\)\s+(\([^)]*\))", text, re.M)}
    shared = [n for n in ours.layer_names if n in theirs]
    assert len(shared) > 100 and "block1_conv1" in shared  # the rest: Keras auto-names (architecture.py)
    for name in shared:
        assert rows[name] == theirs[name], f"{name}: ours {rows[name]} vs keras {theirs[name]}"
    assert rows["block1_conv1"] == "(None, None, None, 32)"
    assert "input (None, None, 3)" in text.splitlines()[0]
    assert f"Total params: {kmodel.count_params():,}" in text
    # multiply-adds need a size: counted at 299x299, and the table says so; the same as a 299x299 model's
    fixed = []
    npxception.Xception(include_top=False, pooling="avg", input_shape=(299, 299, 3)).summary(print_fn=fixed.append)
    total = re.search(r"Total mult-adds: .* for one 299x299 image", text)
    assert total and total.group(0) in fixed[0] and "Mult-Adds @299x299" in text


def test_the_article_model_has_no_71x71_rule():
    """The article's model (tests/article_model.py) computes any size down to 1x1 (its stem is SAME):
    Xception(variant="article", input_shape=...) takes it, where the keras variant keeps Keras' rule."""
    from article_model import build_article_xception
    from npxception.weights_tools import from_keras

    from npxception.model import XceptionModel

    keras = _keras()
    kmodel = randomize(build_article_xception((None, None, 3)), seed=5)
    features = keras.Model(kmodel.input, kmodel.layers[-2].output)  # the pooled features: no softmax to hide them
    source = from_keras(kmodel, variant="article")
    for size in (1, 5, 50):
        shaped = npxception.Xception(variant="article", include_top=False, pooling="avg",
                                     input_shape=(size, size + 1, 3))  # refused below 71x71 before
        assert shaped.input_shape == (size, size + 1, 3)
        source_weights = source.weights  # a new dict per read: once, not once per key
        ours = XceptionModel({k: source_weights[k] for k in shaped.weights}, variant="article", head=shaped.head,
                             input_shape=shaped.input_shape)  # the Keras model's weights, that shape
        x = np.random.default_rng(size).uniform(-1, 1, (2, size, size + 1, 3)).astype(np.float32)
        expected = np.asarray(features(x, training=False))
        err = np.abs(ours(x) - expected).max()
        assert err <= LOGIT_RTOL * np.abs(expected).max(), f"{size}x{size + 1}: {err:.3g}"
    with pytest.raises(ValueError, match=r"input_shape: height and width must be at least 1 and at most \d+, "
                                         r"found \(0, 5, 3\)"):
        npxception.Xception(variant="article", input_shape=(0, 5, 3))
    with pytest.raises(ValueError, match="keras.applications.Xception requires at least 71x71"):
        npxception.Xception(include_top=False, input_shape=(50, 50, 3))


@pytest.fixture(scope="module")
def ours_no_top():
    return npxception.Xception(include_top=False, input_shape=(SIZE, SIZE, 3))


@pytest.mark.parametrize("name", ["flaot32", "float32 ", "float16", "int32", None, "bfloat16", "mixed_float16",
                                  "mixed_bfloat16"])
def test_a_dtype_other_than_float32_or_float64_is_refused_naming_it(name, ours_no_top):
    """A name NumPy does not know used to fall back to np.dtype(None), a float64 model: refused, naming the
    argument, the value and what is accepted; Keras' 16-bit policy names point to the converter's option."""
    expected = re.escape(f"dtype: expected 'float32' or 'float64', found {name!r}")
    if name in ("bfloat16", "mixed_float16", "mixed_bfloat16"):
        expected += ".*computes in float32 or float64 only.*dtype_policy='float32'"
    with pytest.raises(TypeError, match=expected):
        npxception.Xception(dtype=name, include_top=False, input_shape=(SIZE, SIZE, 3))
    with pytest.raises(TypeError, match=expected):
        ours_no_top.astype(name)


def test_float32_and_float64_are_accepted_by_any_numpy_spelling(ours_no_top):
    for good in ("float32", "float64", np.float32, np.dtype("float64"), "f8"):
        assert ours_no_top.astype(good).dtype == np.dtype(good)


def test_a_pooled_top_is_built_at_the_size_asked_as_keras_builds_it(files):
    """Keras' Xception(weights=file, input_shape=(96, 96, 3), classes=5) loads a 71x71 model's weights (a GAP
    head's weights fit any size; its 299 rule is the ImageNet top's only, obtain_input_shape): ours did refuse."""
    paths, weights, _, _ = files
    x = np.random.default_rng(6).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    kmodel = _keras().applications.Xception(weights=None, classes=CLASSES, input_shape=(96, 96, 3),
                                            classifier_activation=None)
    kmodel.set_weights(weights)
    theirs = keras_predict(kmodel, x)
    ours = npxception.Xception(weights=paths["logits"][0], input_shape=(96, 96, 3))
    assert ours.input_shape == (96, 96, 3)
    _close_logits(ours(x), theirs, "96x96")
    probs = npxception.Xception(weights=paths["dense_softmax"][0], input_shape=(96, 96, 3), classifier_activation=None)
    _close_logits(probs(x), theirs, "96x96, activation replaced")


def test_a_flatten_top_keeps_its_size(tmp_path):
    """A Flatten's Dense has a row per feature of the 3x3 map of a 71x71 image: another size is refused
    (Keras cannot load those weights at another size either: the Dense's kernel shape differs)."""
    from npxception.architecture import backbone
    from npxception.model import XceptionModel, random_params

    head = [{"kind": "flatten", "name": "flatten", "map_shape": [3, 3, 2048], "order": "hwc"},
            {"kind": "dense", "name": "predictions", "units": 2, "activation": None, "use_bias": True}]
    model = XceptionModel(random_params(backbone("keras"), head), head=head, input_shape=(SIZE, SIZE, 3))
    path = model.save(tmp_path / "flat.npz", golden=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoGoldenWarning)
        with pytest.raises(ValueError, match=re.escape("input_shape: the weight file was converted for (71, 71, 3) "
                                                       "and its Flatten head flatten is built for that size, "
                                                       "requested (96, 96, 3)")):
            npxception.Xception(weights=path, input_shape=(96, 96, 3))
        assert npxception.Xception(weights=path, input_shape=(SIZE, SIZE, 3)).input_shape == (SIZE, SIZE, 3)


# Keras' activations on logits that our head added (review 13): the converter reads each from the file
NEW_ACTIVATIONS = ["swish", "gelu", "softplus", "relu6", "selu", "log_softmax", "mish", "softsign"]
# converted from a file (seconds each): the converter reads every name by the same lookup in
# head_schema.ACTIVATIONS, so four stand for all: Keras 3's "silu" alias, erfc, a scale, an axis reduction
CONVERTED = ["swish", "gelu", "selu", "log_softmax"]


def test_converted_heads_with_keras_activations_match_model_predict(files, tmp_path):
    """Dense(5) -> Activation(name) in a Keras 3 model (Keras 3 writes swish as "silu"), converted, against
    model.predict; the last Dense scaled to logits of a few units, so every activation is away from its
    saturation. Tolerance: LOGIT_RTOL of the largest output (the logits' float32 reordering, through a
    Lipschitz-1..1.76 activation: selu's scale)."""
    from npxception.weights_tools import from_keras

    keras = _keras()
    paths, weights, x, _ = files
    logits_model = _asked(None, weights)
    kmodels = {name: keras.Model(logits_model.input,
                                 keras.layers.Activation(name, name=f"act_{name}")(logits_model.output))
               for name in CONVERTED}
    # Keras' answers from one predict of a model with the four converted models' outputs (the same layer
    # objects, so the same computation): one trace of the Xception instead of one per activation
    all_heads = keras.Model(logits_model.input, [kmodels[name].output for name in CONVERTED])
    predicted = dict(zip(CONVERTED, keras_predict(all_heads, x)))
    for name, kmodel in kmodels.items():
        ours = from_keras(kmodel)
        assert ours.classifier_activation == name
        theirs = predicted[name]
        assert theirs.shape == (len(x), CLASSES)
        err = np.abs(ours(x) - theirs).max()
        assert err <= 2 * LOGIT_RTOL * np.abs(theirs).max(), f"{name}: max |ours - keras| {err:.3g}"


@pytest.mark.parametrize("name", [*NEW_ACTIVATIONS, "silu", "log_sigmoid", "exponential"])
def test_a_keras_activation_asked_of_a_file_is_applied(files, name):
    """Xception(weights=file, classifier_activation=name) on the logits file: keras.activations on Keras'
    own logits (LOGIT_RTOL as above; exponential's relative error is the logits' times their size, ~3)."""
    keras = _keras()
    paths, _, x, logits = files
    expected = np.asarray(keras.activations.get(name)(logits))
    ours = npxception.Xception(weights=paths["logits"][0], classifier_activation=name)(x)
    err = np.abs(ours - expected).max()
    assert err <= 4 * LOGIT_RTOL * np.abs(expected).max(), f"{name}: max |ours - keras| {err:.3g}"


@pytest.mark.parametrize("classes", [0, -3, "x"])
def test_classes_is_ignored_without_the_top_as_keras_3_ignores_it(no_top, classes):
    keras = _keras()
    theirs = keras.applications.Xception(weights=None, include_top=False, classes=classes, input_shape=(SIZE, SIZE, 3))
    assert theirs.count_params() == no_top.count_params()  # Keras builds it
    ours = npxception.Xception(include_top=False, classes=classes, input_shape=(SIZE, SIZE, 3))
    assert ours.head == [] and ours.count_params() == no_top.count_params()
    with pytest.raises(ValueError, match=f"classes: expected a positive int, found {classes!r}"):
        npxception.Xception(classes=classes, input_shape=(SIZE, SIZE, 3))  # with the top it is the Dense's width


def test_name_is_keras_default_and_can_be_set(ours_no_top):
    assert ours_no_top.name == "xception" == _keras().applications.Xception.__defaults__[-1]
    named = npxception.Xception(include_top=False, input_shape=(SIZE, SIZE, 3), name="backbone")
    assert named.name == "backbone" and named.astype("float64").name == "backbone"
    with pytest.raises(ValueError, match="name: expected a non-empty string, found 3"):
        npxception.Xception(name=3)
