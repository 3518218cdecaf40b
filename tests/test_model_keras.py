"""The whole network against keras.applications.Xception and the article's TF model.

Each case builds the Keras model with random kernels and random BN statistics,
converts it with ``weights_tools.from_keras`` and compares the final output and
every layer's activation, by name (Keras' auto-named residual branches are
found through the converter's name map).

Tolerances (relative to the largest magnitude of the Keras activation):
* float64: 1e-10. Both sides compute in IEEE double; the only differences are
  summation order over reductions of at most 9 * 2048 terms, ~1e-13 each layer,
  compounded over 36 layers and the residual adds.
* float32: 1e-4 for the whole network: float32's 6e-8 unit
  round-off times the reduction lengths (sqrt(18k) ~ 130 for a random walk)
  is ~1e-5 per layer, and errors compound over 36 conv layers.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_helpers import first_divergence, randomize

import keras  # noqa: E402  (a test extra; imported, never skipped)

import npxception  # noqa: E402
from npxception.weights_tools import from_keras  # noqa: E402

RTOL = {"float32": 1e-4, "float64": 1e-10}


class floatx:
    """Build Keras models in a given float type, restoring the default afterwards."""

    def __init__(self, dtype):
        self.dtype = dtype

    def __enter__(self):
        # Keras 3 caches its global dtype policy on first use, so set it with floatx.
        self.saved = keras.config.floatx(), keras.config.dtype_policy()
        keras.config.set_floatx(self.dtype)
        keras.config.set_dtype_policy(self.dtype)

    def __exit__(self, *exc):
        keras.config.set_floatx(self.saved[0])
        keras.config.set_dtype_policy(self.saved[1])


def keras_activations(kmodel, names_by_ours: dict, x):
    """``(kmodel(x, training=False), {our name: Keras activation} for every layer)``, in one Keras call: the
    model's output is one more output of the probe, rather than a second whole-network Keras call."""
    ours = list(names_by_ours)
    outputs = [kmodel.get_layer(names_by_ours[n]).output for n in ours]
    probe = keras.Model(kmodel.inputs, [kmodel.output, *outputs])
    expected, *values = probe(x, training=False)
    return np.asarray(expected), {n: np.asarray(v) for n, v in zip(ours, values)}


def check_against_keras(kmodel, x, dtype, variant=None):
    model = from_keras(kmodel, variant=variant)
    assert model.dtype == np.dtype(dtype)
    out, acts = model.forward(x, capture="all")
    assert out.dtype == np.dtype(dtype)
    names = model.source_layer_names
    assert set(names) == set(model.layer_names), "every layer must have a Keras twin"
    expected, theirs = keras_activations(kmodel, names, x)
    problem = first_divergence(acts, theirs, model.layer_names, RTOL[dtype])
    assert problem is None, f"first divergent layer: {problem}"
    # captured by the names Keras' model.summary() shows, its auto-names included (conv2d, add_3...)
    _, by_keras = model.forward(x, capture=sorted(set(names.values())))
    problem = first_divergence({ours: by_keras[src] for ours, src in names.items()}, theirs, model.layer_names,
                               RTOL[dtype])
    assert problem is None, f"captured by Keras' name: first divergent layer: {problem}"
    # The fast whole-network path (no capture) must agree too: as it runs by
    # default (every layer fused, GEMM inside the kernel; tests/test_fast_kernels.py
    # checks it is found), and as it runs with any other BLAS (np.matmul between kernels).
    scale = np.abs(expected).max()
    for plan in ("fused", "np.matmul between kernels"):
        fast = model(x)
        assert np.abs(fast - expected).max() <= RTOL[dtype] * scale, (
            f"{plan}: output ours {fast.ravel()[:4]} vs keras {expected.ravel()[:4]}")
        model._fast.fused = False
    model._fast = None
    return model


def random_input(shape, dtype, seed=1):
    # Preprocessed images live in [-1, 1].
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(dtype)


# include_top, pooling, classes, size, batch, dtype. Together these cover both
# tops, all poolings, 1000 and 10 classes, sizes 71/150/299, batch 1/3, both dtypes.
CASES = [
    (True, None, 1000, 299, 1, "float32"),
    (True, None, 1000, 299, 1, "float64"),
    (True, None, 10, 150, 3, "float32"),
    (False, None, None, 71, 3, "float64"),
    (False, "avg", None, 150, 1, "float32"),
    (False, "max", None, 71, 3, "float32"),
    (False, "max", None, 150, 1, "float64"),
]


@pytest.mark.parametrize("include_top,pooling,classes,size,batch,dtype", CASES)
def test_keras_xception(include_top, pooling, classes, size, batch, dtype):
    with floatx(dtype):
        kwargs = dict(weights=None, include_top=include_top, pooling=pooling,
                      input_shape=(size, size, 3))
        if include_top:
            kwargs.update(classes=classes, classifier_activation=None)  # logits: the sensitive output
        kmodel = randomize(keras.applications.Xception(**kwargs), seed=size + batch)
    x = random_input((batch, size, size, 3), dtype)
    model = check_against_keras(kmodel, x, dtype)
    assert model.variant_name == "keras"
    assert model.count_params() == kmodel.count_params()  # an int, as Keras' is
    assert model.count_trainable_params() == sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)


@pytest.mark.parametrize("dtype,size", [("float32", 299), ("float64", 150)])
def test_article_variant(dtype, size):
    from article_model import build_article_xception

    with floatx(dtype):
        kmodel = randomize(build_article_xception((size, size, 3)), seed=7)
    trainable = sum(int(np.prod(w.shape)) for w in kmodel.trainable_weights)
    assert trainable == 22_855_952  # the article's own printed count
    x = random_input((2, size, size, 3), dtype)
    model = check_against_keras(kmodel, x, dtype)
    assert model.variant_name == "article"  # detected from the wiring and the stem padding
    assert (model.count_params(), model.count_trainable_params()) == (kmodel.count_params(), 22_855_952)


def test_keras_model_is_not_mistaken_for_article():
    kmodel = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    assert from_keras(kmodel).variant_name == "keras"
    with pytest.raises(ValueError, match="padding"):
        from_keras(kmodel, variant="article")


def test_summary_totals_match_keras():
    for variant in ("keras", "article"):
        model = npxception.Xception(variant=variant)
        printed = []
        assert model.summary(print_fn=printed.append) is None  # Keras' summary() returns None too
        text = "\n".join(printed)
        assert (model.count_params(), model.count_trainable_params()) == (22_910_480, 22_855_952)
        assert "Total params: 22,910,480" in text
        assert "Trainable params: 22,855,952" in text
        assert "Non-trainable params: 54,528" in text
    kmodel = keras.applications.Xception(weights=None, include_top=False, pooling="avg")
    ours = npxception.Xception(include_top=False, pooling="avg")
    assert type(ours.count_params()) is int and ours.count_params() == kmodel.count_params()


def test_reference_agrees_with_fast():
    model = npxception.Xception(include_top=False, pooling="avg", dtype="float64", seed=3)
    x = random_input((1, 71, 71, 3), "float64")
    ref, ref_acts = model.forward(x, capture="all", impl="reference")
    fast, fast_acts = model.forward(x, capture="all", impl="fast")
    # float64 on both sides: only summation order differs (see module docstring).
    problem = first_divergence(ref_acts, fast_acts, model.layer_names, 1e-10)
    assert problem is None, problem
    np.testing.assert_allclose(ref, fast, rtol=1e-10, atol=0)
