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

import weights_tools  # noqa: E402
from keras_helpers import randomize  # noqa: E402
from weights_tools import ConversionError  # noqa: E402

SIZE = 40  # the article's SAME stem computes any size; small keeps the Keras build cheap
HEAD = dict(pooling="avg", input_shape=(SIZE, SIZE), classifier_activation="softmax")


@pytest.fixture(scope="module")
def article(tmp_path_factory):
    from article_model import build_article_xception

    root = tmp_path_factory.mktemp("article")
    kmodel = randomize(build_article_xception((SIZE, SIZE, 3)), seed=15)  # BN statistics random too
    kmodel.save_weights(root / "article.weights.h5")
    x = np.random.default_rng(1).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    return root / "article.weights.h5", x, kmodel.predict(x, verbose=0)


def test_article_weights_only_file_needs_its_variant(article):
    path, x, expected = article
    with pytest.raises(ConversionError, match=r"does not determine the model's wiring.*conv2d.*"
                                              r"--variant keras\|article.*--config"):
        weights_tools.read(path, **HEAD)
    # without the head options either, one message names everything missing, --variant included
    with pytest.raises(ConversionError, match=r"nor which Xception's wiring.*give --variant keras\|article "
                                              r"--pooling"):
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
