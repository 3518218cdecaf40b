"""A weights-only file of the article's model: its weights fit Keras' order, so its wiring is the user's word.

Review 15, finding 1: the article's model (tests/article_model.py, every layer auto-named) saved with
``save_weights`` converted as ``variant="keras"`` when the head was given by options, and its
features were wrong by 100 %. Its weight shapes and order are Keras Xception's, so nothing but the
layer names (Keras' own ``block2_sepconv1``...) or the user's ``--variant``/``--config`` tells the
two wirings apart: without them the file is refused.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from npxception import weights_tools  # noqa: E402
from keras_helpers import keras_predict, randomize  # noqa: E402
from npxception.weights_tools import ConversionError  # noqa: E402

SIZE = 40  # the article's SAME stem computes any size; small keeps the Keras build cheap
HEAD = dict(pooling="avg", input_shape=(SIZE, SIZE), classifier_activation="softmax")


@pytest.fixture(scope="module")
def article(tmp_path_factory):
    from article_model import build_article_xception

    root = tmp_path_factory.mktemp("article")
    kmodel = randomize(build_article_xception((SIZE, SIZE, 3)), seed=15)  # BN statistics random too
    kmodel.save_weights(root / "article.weights.h5")
    x = np.random.default_rng(1).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    return root / "article.weights.h5", x, keras_predict(kmodel, x)


def test_article_weights_only_file_needs_its_variant(article):
    path, x, expected = article
    with pytest.raises(ConversionError, match=r"does not determine the model's wiring.*conv2d.*"
                                              r"--variant keras\|article.*--config"):
        weights_tools.read(path, **HEAD)
    # without the head options either, one message names everything missing, --variant included (not the
    # pooling: its layers/global_average_pooling2d group records it, by_order._recorded_pooling)
    with pytest.raises(ConversionError, match=r"nor which Xception's wiring.*give --variant keras\|article "
                                              r"--input-shape"):
        weights_tools.read(path)

    model = weights_tools.read(path, variant="article", **HEAD)
    assert model.variant_name == "article"
    ours = model.predict(x)
    # float32 both sides, summation orders differ over reductions of at most 3*3*1024 terms: ~1e-6
    # relative; 1e-4 of the largest probability leaves a margin and still catches a wrong wiring
    # (variant keras below differs by ~30 % of it)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert (ours.argmax(1) == expected.argmax(1)).all()

    # --variant keras on the article's file is the user's explicit word: converted, and visibly not
    # the article's model (what the refusal above protects a user from getting silently)
    wrong = weights_tools.read(path, variant="keras", **HEAD)
    assert wrong.variant_name == "keras"
    assert np.abs(wrong.predict(x) - expected).max() > 1e-2 * np.abs(expected).max()


@pytest.fixture(scope="module")
def article_legacy_h5(tmp_path_factory):
    """The article's model in a legacy weights-only .h5 (Keras' layer order, not our table's: each residual
    convolution of blocks 2, 3, 4 and 13 before its block's sepconv2_bn), as the two Kerases write it:
    tf_keras' ``save_weights("w.h5")`` (the article's own tensorflow.keras) and Keras 3's legacy HDF5
    writer (what its ``model.save("m.h5")`` writes under model_weights, here without the config)."""
    import h5py
    import tf_keras
    from keras.src.legacy.saving import legacy_h5_format

    from article_model import build_article_xception

    root = tmp_path_factory.mktemp("article_h5")
    x = np.random.default_rng(2).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    out = {}
    tk = randomize(build_article_xception((SIZE, SIZE, 3), keras=tf_keras), seed=16)
    tk.save_weights(str(root / "tk_article.h5"))
    out["tf_keras"] = (root / "tk_article.h5", keras_predict(tk, x),
                       [(k.name, type(k).__name__) for k in tk.layers if k.weights])
    k3 = randomize(build_article_xception((SIZE, SIZE, 3)), seed=17)
    with h5py.File(root / "k3_article.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, k3)
    out["keras3"] = (root / "k3_article.h5", keras_predict(k3, x),
                     [(k.name, type(k).__name__) for k in k3.layers if k.weights])
    return out, x


@pytest.mark.parametrize("writer", ["tf_keras", "keras3"])
def test_article_legacy_h5_converts_in_keras_order(article_legacy_h5, writer):
    cases, x = article_legacy_h5
    path, expected, order = cases[writer]
    # the case's power: the file lists block 2's residual convolution between its sepconv2 and that
    # one's BN, where our table lists the BN (auto-names depend on what the process built before: classes)
    assert [c for _, c in order[6:10]] == ["SeparableConv2D", "Conv2D", "BatchNormalization",
                                           "BatchNormalization"], order
    with pytest.raises(ConversionError, match=r"does not determine the model's wiring"):
        weights_tools.read(path, **HEAD)  # the order tells no wiring either
    model = weights_tools.read(path, variant="article", **HEAD)
    assert model.source_layer_names["block2_residual_conv"] == order[7][0]
    assert model.source_layer_names["block2_sepconv2_bn"] == order[8][0]
    assert model.source_layer_names["block2_residual_bn"] == order[9][0]
    # tolerance: as test_article_weights_only_file_needs_its_variant's (float32, ~1e-6 relative measured)
    np.testing.assert_allclose(model.predict(x), expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_file_named_with_our_names_maps_by_name_and_needs_its_variant(article_legacy_h5, tmp_path):
    """A legacy file whose layers carry all of our names (residual ones included) maps by name, in whatever
    order it lists them; those names are no Keras model's, so its wiring is still the user's word."""
    import h5py

    cases, x = article_legacy_h5
    path, expected, order = cases["tf_keras"]
    reading = weights_tools.read(path, variant="article", **HEAD)
    rename = {theirs: ours for ours, theirs in reading.source_layer_names.items() if theirs in dict(order)}
    renamed = tmp_path / "named.h5"
    with h5py.File(path, "r") as src, h5py.File(renamed, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        names = [n.decode() if isinstance(n, bytes) else n for n in src.attrs["layer_names"]]
        shuffled = names[::-1]  # any order: the names decide
        dst.attrs["layer_names"] = np.array([rename.get(n, n).encode() for n in shuffled])
        for n in shuffled:
            g = dst.create_group(rename.get(n, n))
            weight_names = [w.decode() if isinstance(w, bytes) else w for w in src[n].attrs["weight_names"]]
            new_names = [w.replace(n + "/", rename.get(n, n) + "/", 1) for w in weight_names]
            g.attrs["weight_names"] = np.array([w.encode() for w in new_names])
            for old, new in zip(weight_names, new_names):
                g.create_dataset(new, data=src[n][old][()])
    with pytest.raises(ConversionError, match=r"does not determine the model's wiring"):
        weights_tools.read(renamed, **HEAD)
    model = weights_tools.read(renamed, variant="article", **HEAD)
    assert model.source_layer_names["block2_sepconv2_bn"] == "block2_sepconv2_bn"
    np.testing.assert_allclose(model.predict(x), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
