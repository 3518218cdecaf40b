"""``npxception.predict``: Keras' own pipeline reproduced, every accepted input form, and bad input refused.

The reference is a Keras 3 Xception with random weights (tests/predict_reference.py,
which also explains why its classifier kernel is scaled down: otherwise the
softmax is exactly one-hot). Keras' documented pipeline is run on the sample
photos (``load_img(target_size=(299, 299))`` -> ``img_to_array`` ->
``xception.preprocess_input`` -> ``model.predict`` -> ``decode_predictions``)
and ``npxception.predict`` must give the same classes in the same order with
the same scores.

Tolerances:
* probabilities: 1e-5 absolute. Both sides decode the same uint8 pixels with
  Pillow and resize them with the same ``nearest`` filter, so the network
  inputs are bit-identical (checked below); what differs is only the float32
  summation order in ~36 conv layers (TensorFlow's kernels vs ours). That
  leaves the logits (|z| <= ~12 here) off by ~1e-5 absolute (measured 1.1e-5,
  ~1e-6 relative). Softmax turns a logit error dz into
  dp_i = p_i * (dz_i - sum_j p_j dz_j), so |dp_i| <= 2 * p_i * max|dz|, about
  1e-5 for the top class in the worst case; the errors are uncorrelated and
  partly cancel, and the measured difference is ~7e-7, so 1e-5 keeps a 10x margin.
* logits: 1e-4 relative to the largest |logit| of the row: the same float32
  reordering, compounded through the network (as in test_model_keras.py) and
  through the cancellation in the last Dense layer (measured: ~1e-6).
* the same image in batches of different sizes: 1e-5 relative to the row's
  largest |score|: our GEMM kernels block the work by batch size, so the
  summation order, not the arithmetic, may differ.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps

import npxception
from npxception.labels import imagenet_labels
from predict_reference import SAMPLES, assert_well_separated, keras_reference, top_indices

PROB_ATOL = 1e-5
LOGIT_RTOL = 1e-4
BATCH_RTOL = 1e-5
REPO = pathlib.Path(__file__).resolve().parent.parent
LABEL_FILE = REPO / "npxception" / "data" / "imagenet_class_index.json"
WNID_INDEX = {wnid: i for i, (wnid, _) in enumerate(imagenet_labels())}

# The module holding predict() and its model cache is npxception.prediction.
predict_module = importlib.import_module("npxception.prediction")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return keras_reference(tmp_path_factory)


@pytest.fixture
def keras_decode(tmp_path, monkeypatch):
    """Keras' decode_predictions, offline: its cache dir holds a copy of our label file.

    Keras checks the copy against the MD5 it pins before use (see test_labels.py).
    """
    from keras.src.applications import imagenet_utils
    from keras.src.backend import config

    (tmp_path / "models").mkdir()
    shutil.copy(LABEL_FILE, tmp_path / "models" / "imagenet_class_index.json")
    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.setattr(imagenet_utils, "CLASS_INDEX", None)
    return imagenet_utils.decode_predictions


@pytest.fixture(scope="module")
def small():
    """A fast 10-class model (71x71) whose scores are logits, so that they are all distinct."""
    return npxception.Xception(weights=None, classes=10, input_shape=(71, 71, 3), classifier_activation=None,
                               seed=3)


def _close(a, b, rtol=BATCH_RTOL):
    """Two predictions lists: same classes and names in the same order, scores within rtol * max|score|."""
    assert [p[:2] for p in a] == [p[:2] for p in b], f"{a}\n{b}"
    scale = max(abs(p[2]) for p in b)
    assert np.allclose([p[2] for p in a], [p[2] for p in b], rtol=0, atol=rtol * scale), f"{a}\n{b}"


# --------------------------------------------------------------------------- vs Keras' pipeline

def test_reference_is_informative(ref):
    """The comparison below means something: peaked but not one-hot, and an unambiguous top-5 order."""
    for row in ref.probs:
        assert 0.2 < row.max() < 0.9, row.max()
    # Adjacent top-6 probabilities differ by far more than the tolerance, so the
    # order cannot flip by rounding.
    assert_well_separated(ref.probs, 5, 10 * PROB_ATOL)


def test_model_input_equals_keras_bit_for_bit(ref):
    """The premise of the tolerances: both pipelines feed the network the very same numbers."""
    x = np.stack([npxception.load_image(p, target_size=(299, 299)) for p in SAMPLES])
    assert np.array_equal(npxception.preprocess_input(x), ref.inputs)


def test_predict_equals_keras_pipeline(ref, keras_decode):
    theirs = keras_decode(ref.probs.copy(), top=5)
    ours = npxception.predict([str(p) for p in SAMPLES], model=ref.ours, top=5)
    assert len(ours) == len(theirs) == 2
    for row_ours, row_theirs, probs in zip(ours, theirs, ref.probs):
        assert [t[:2] for t in row_ours] == [tuple(t[:2]) for t in row_theirs]
        assert [WNID_INDEX[t[0]] for t in row_ours] == top_indices(probs[None], 5)[0]
        for a, b in zip(row_ours, row_theirs):
            assert abs(a[2] - float(b[2])) <= PROB_ATOL, (a, b)


def test_predict_from_weight_file_equals_keras(ref, monkeypatch):
    """The same through weights=PATH (the saved .npz), the way users call it."""
    monkeypatch.setattr(predict_module, "_MODELS", {})
    ours = npxception.predict([pathlib.Path(p) for p in SAMPLES], weights=ref.npz, top=5)
    for row, probs in zip(ours, ref.probs):
        idx = [WNID_INDEX[t[0]] for t in row]
        assert idx == top_indices(probs[None], 5)[0]
        assert np.allclose([t[2] for t in row], probs[idx], rtol=0, atol=PROB_ATOL)


def test_exif_transpose_equals_keras_on_the_upright_photo(ref, tmp_path, capsys):
    """Review 4, finding 5: predict(exif_transpose=True) and --exif-transpose feed what Keras' pipeline feeds on
    the photo turned upright by PIL.ImageOps.exif_transpose; without it, Keras' own (sideways) pixels."""
    import keras

    from npxception.cli import main

    photo = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    with Image.open(SAMPLES[0]) as img:
        img.convert("RGB").crop((0, 0, 451, 300)).save(photo, exif=exif, quality=95)
    upright = tmp_path / "upright.png"
    with Image.open(photo) as img:
        ImageOps.exif_transpose(img).save(upright)  # lossless: the same pixels Keras then reads
    assert Image.open(upright).size == (300, 451)
    keras_scores = []
    for path, turn in [(upright, True), (photo, False)]:
        x = keras.utils.img_to_array(keras.utils.load_img(str(path), target_size=(299, 299)))
        theirs = ref.keras_model.predict(keras.applications.xception.preprocess_input(x[None]), verbose=0)[0]
        ours = npxception.predict(str(photo), model=ref.ours, top=3, exif_transpose=turn)
        assert [WNID_INDEX[t[0]] for t in ours] == top_indices(theirs[None], 3)[0]
        assert max(abs(t[2] - theirs[WNID_INDEX[t[0]]]) for t in ours) <= PROB_ATOL
        keras_scores.append(theirs)
    assert np.abs(keras_scores[0] - keras_scores[1]).max() > 100 * PROB_ATOL  # upright and sideways differ
    # the CLI's option is the same switch
    assert main(["predict", "--weights", str(ref.npz), "--format", "jsonl", "--top", "3", "--exif-transpose",
                 str(photo)]) == 0
    cli = [(p["label"], p["name"]) for p in __import__("json").loads(capsys.readouterr().out)["predictions"]]
    assert cli == [t[:2] for t in npxception.predict(str(photo), model=ref.ours, top=3, exif_transpose=True)]


def test_logits_equal_keras(ref):
    """classifier_activation=None: the raw logits, which no softmax can flatten."""
    model = npxception.Xception(weights=ref.npz, classifier_activation=None)
    ours = npxception.predict([str(p) for p in SAMPLES], model=model, top=10)
    for row, logits in zip(ours, ref.logits):
        idx = [WNID_INDEX[t[0]] for t in row]
        assert idx == top_indices(logits[None], 10)[0]
        scale = float(np.abs(logits).max())
        assert np.allclose([t[2] for t in row], logits[idx], rtol=0, atol=LOGIT_RTOL * scale)


def test_imagenet_tuple_format(ref):
    preds = npxception.predict(str(SAMPLES[0]), model=ref.ours, top=7)
    assert isinstance(preds, list) and len(preds) == 7
    names = dict(imagenet_labels())
    for wnid, name, score in preds:
        assert type(wnid) is str and re.fullmatch(r"n\d{8}", wnid)
        assert type(name) is str and name == names[wnid]
        assert type(score) is np.float32 and 0.0 <= score <= 1.0  # as Keras' decode_predictions (review 17)
    scores = [p[2] for p in preds]
    assert scores == sorted(scores, reverse=True)


# --------------------------------------------------------------------------- accepted input forms

def test_every_input_form_gives_the_same_answer(small, tmp_path):
    path = SAMPLES[0]
    rgb = np.asarray(Image.open(path).convert("RGB"))  # uint8 (H, W, 3), full size
    gray = np.asarray(Image.open(path).convert("L"))  # uint8 (H, W)
    Image.fromarray(gray).save(tmp_path / "gray.png")

    def one(image):
        out = npxception.predict(image, model=small, top=10)
        assert isinstance(out, list) and all(isinstance(t, tuple) and len(t) == 3 for t in out)
        return out

    expected = one(str(path))
    # Each form is Keras' load_img on the same pixels: identical input, identical answer.
    assert one(path) == expected  # pathlib.Path
    assert one(Image.open(path)) == expected  # PIL image
    assert one(rgb) == expected  # uint8 (H, W, 3), resized like load_img
    assert one(rgb.astype(np.float32)) == expected  # float array of whole numbers
    assert one(rgb.astype(np.float64)) == expected
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    assert one(rgba) == expected  # alpha dropped, as convert("RGB")
    expected_gray = one(str(tmp_path / "gray.png"))  # Keras: L -> convert("RGB")
    assert one(gray) == expected_gray  # uint8 (H, W)
    assert one(gray[:, :, None]) == expected_gray
    assert one(Image.fromarray(gray)) == expected_gray
    # Non-integer floats are resized without rounding: close, not equal.
    _close(one(rgb.astype(np.float32) * 0.999), expected, rtol=1e-2)

    mixed = [str(path), path, Image.open(path), rgb, gray, rgb.astype(np.float32)]
    out = npxception.predict(mixed, model=small, top=10)
    assert isinstance(out, list) and len(out) == len(mixed)
    for got, want in zip(out, [expected] * 4 + [expected_gray, expected]):
        _close(got, want)
    tupled = npxception.predict(tuple(mixed[:2]), model=small, top=3)  # a tuple is a list of images too
    assert len(tupled) == 2
    for got in tupled:
        _close(got, expected[:3])


def test_predict_reads_what_load_image_reads(small, tmp_path):
    """Folders, binary file objects and bytes paths, as load_image takes them (and the CLI's folders)."""
    expected = [npxception.predict(str(p), model=small, top=4) for p in SAMPLES]
    with open(SAMPLES[1], "rb") as f:
        assert npxception.predict(f, model=small, top=4) == expected[1]
    assert npxception.predict(os.fsencode(SAMPLES[0]), model=small, top=4) == expected[0]
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES[1], folder / "b.png")
    shutil.copy(SAMPLES[0], folder / "a.png")
    shutil.copy(SAMPLES[0], folder / "sub" / "c.png")  # sub-folders are not searched, as in the CLI
    (folder / "notes.txt").write_text("not an image")
    # A folder is the list of its images, sorted by name: a list of lists even for one folder.
    # (batched: the same classes, scores to BATCH_RTOL, see the module docstring)
    for got, want in zip(npxception.predict(folder, model=small, top=4), expected, strict=True):
        _close(got, want)
    for got, want in zip(npxception.predict([str(folder), SAMPLES[1]], model=small, top=4),
                         [*expected, expected[1]], strict=True):
        _close(got, want)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty holds no image files \(expected suffixes: .*\.png"):
        npxception.predict(tmp_path / "empty", model=small)


def test_single_image_gives_a_single_list_and_a_list_gives_a_list_of_lists(small):
    single = npxception.predict(str(SAMPLES[0]), model=small, top=3)
    assert len(single) == 3 and isinstance(single[0], tuple)
    one = npxception.predict([str(SAMPLES[0])], model=small, top=3)
    assert len(one) == 1 and one[0] == single
    assert npxception.predict([], model=small) == []


def test_batches_larger_than_batch_size(small):
    images = [str(SAMPLES[i % 2]) for i in range(5)]
    out = npxception.predict(images, model=small, top=4, batch_size=2)
    singles = [npxception.predict(im, model=small, top=4) for im in SAMPLES]
    for i, row in enumerate(out):
        _close(row, singles[i % 2])


def test_caller_array_is_not_modified(small):
    arr = np.asarray(Image.open(SAMPLES[0]), dtype=np.float32)
    before = arr.copy()
    npxception.predict(arr, model=small)
    npxception.predict(arr[:71, :71], model=small)  # no resize needed: still not written into
    assert np.array_equal(arr, before)


def test_other_heads_give_index_and_names(small, tmp_path, monkeypatch):
    preds = npxception.predict(str(SAMPLES[1]), model=small, top=10)
    assert sorted(p[0] for p in preds) == list(range(10))
    for index, name, score in preds:
        assert type(index) is int and name is None and type(score) is np.float32

    names = [f"class_{i}" for i in range(10)]
    named = npxception.predict(str(SAMPLES[1]), model=small, top=10, labels=names)
    assert named == [(i, names[i], s) for i, _, s in preds]

    # Names stored in the weight file are used when labels= is not given.
    from npxception.model import XceptionModel

    labelled = XceptionModel(small.weights, variant=small.variant, head=small.head,
                             input_shape=small.input_shape, labels=names)
    path = labelled.save(tmp_path / "labelled.npz")
    monkeypatch.setattr(predict_module, "_MODELS", {})
    from_file = npxception.predict(str(SAMPLES[1]), weights=path, top=10)
    assert [p[:2] for p in from_file] == [(i, names[i]) for i, _, _ in preds]


def test_top_larger_than_the_classes_gives_them_all(small):
    assert len(npxception.predict(str(SAMPLES[0]), model=small, top=50)) == 10


# --------------------------------------------------------------------------- weights loaded once

def test_weights_are_loaded_once_per_process(ref, monkeypatch):
    calls = []
    real_load = predict_module.load  # npxception.model.load, as prediction calls it

    def counting_load(path):
        calls.append(path)
        return real_load(path)

    monkeypatch.setattr(predict_module, "_MODELS", {})
    monkeypatch.setattr(predict_module, "load", counting_load)
    image = np.zeros((299, 299, 3), np.uint8)
    first = npxception.predict(image, weights=str(ref.npz))
    second = npxception.predict(image, weights=ref.npz)  # a Path to the same file: the same entry
    assert first == second
    assert len(calls) == 1
    assert len(predict_module._MODELS) == 1
    assert predict_module.get_model(ref.npz) is next(iter(predict_module._MODELS.values()))
    assert len(calls) == 1


def test_rewritten_weight_file_is_reloaded(small, tmp_path, monkeypatch):
    import os

    calls = []
    real_load = predict_module.load  # npxception.model.load, as prediction calls it
    monkeypatch.setattr(predict_module, "load", lambda p: calls.append(p) or real_load(p))
    monkeypatch.setattr(predict_module, "_MODELS", {})
    path = small.save(tmp_path / "w.npz")
    npxception.predict(np.zeros((71, 71), np.uint8), weights=path)
    npxception.predict(np.zeros((71, 71), np.uint8), weights=path)
    assert len(calls) == 1
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file changed on disk
    npxception.predict(np.zeros((71, 71), np.uint8), weights=path)
    assert len(calls) == 2


def test_imagenet_weights_are_built_once(small, monkeypatch):
    calls = []
    monkeypatch.setattr(predict_module, "_MODELS", {})
    monkeypatch.setattr(predict_module, "Xception", lambda weights=None, **kw: calls.append(weights) or small)
    image = np.zeros((71, 71, 3), np.uint8)
    a = npxception.predict(image)  # weights="imagenet" is the default
    b = npxception.predict([image, image], weights="imagenet")
    assert calls == ["imagenet"]
    _close(b[0], a)
    _close(b[1], a)


def test_predict_works_after_the_submodule_is_imported(small):
    """Importing the module behind predict() (the CLI does) must leave npxception.predict the function."""
    import npxception.cli  # noqa: F401
    import npxception.prediction  # noqa: F401

    assert callable(npxception.predict)
    assert npxception.predict(np.zeros((71, 71), np.uint8), model=small, top=1)[0][0] in range(10)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("top", [0, -1, 1.5, "5", True, None])
def test_bad_top(small, top):
    with pytest.raises(ValueError, match="top"):
        npxception.predict(np.zeros((71, 71), np.uint8), model=small, top=top)


def test_model_without_top():
    model = npxception.Xception(weights=None, include_top=False, pooling="avg", input_shape=(71, 71, 3))
    with pytest.raises(ValueError, match="include_top|no top|classifier"):
        npxception.predict(np.zeros((71, 71), np.uint8), model=model)


@pytest.mark.parametrize("n", [0, 9, 11, 1000])
def test_wrong_label_count(small, n):
    with pytest.raises(ValueError, match=f"labels: expected 10 names, found {n}"):
        npxception.predict(np.zeros((71, 71), np.uint8), model=small, labels=[f"c{i}" for i in range(n)])


@pytest.mark.parametrize("array, match", [
    (np.zeros((71, 71, 2), np.uint8), r"shape"),
    (np.zeros((71, 71, 5), np.uint8), r"shape"),
    (np.zeros((71,), np.uint8), r"shape"),
    (np.zeros((2, 71, 71, 3), np.uint8), r"batch.*list"),
    (np.zeros((0, 71, 3), np.uint8), r"empty"),
    (np.full((71, 71, 3), -0.5, np.float32), r"\[0, 255\].*not preprocessed"),
    (np.full((71, 71, 3), 256.0), r"\[0, 255\]"),
    (np.full((71, 71, 3), np.nan, np.float32), r"NaN"),
    # A float image scaled to [0, 1] would be read as a nearly black photo: refused with the fix.
    (np.linspace(0, 1, 71 * 71 * 3, dtype=np.float32).reshape(71, 71, 3), r"\[0, 1\].*\* 255"),
    (np.full((71, 71, 3), 0.5), r"all in \[0, 1\] \(max 0.5\)"),
])
def test_bad_array_shapes_and_values(small, array, match):
    with pytest.raises(ValueError, match=match):
        npxception.predict(array, model=small)


@pytest.mark.parametrize("array", [
    np.zeros((71, 71, 3), bool),
    np.zeros((71, 71, 3), np.complex64),
    np.zeros((71, 71, 3), object),
    np.full((71, 71, 3), "a"),
])
def test_bad_array_dtypes(small, array):
    with pytest.raises(TypeError, match="dtype"):
        npxception.predict(array, model=small)


@pytest.mark.parametrize("image", [42, None, {"path": "x"}])
def test_unsupported_image_types(small, image):
    with pytest.raises(TypeError, match="path, a binary file object, a PIL image or an array"):
        npxception.predict(image, model=small)
    with pytest.raises(TypeError, match=f"found {type(image).__name__}"):
        npxception.predict([str(SAMPLES[0]), image], model=small)


def test_bad_weights_and_interpolation(small, tmp_path):
    with pytest.raises(TypeError, match="weights"):
        npxception.predict(np.zeros((71, 71), np.uint8), weights=42)
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        npxception.predict(np.zeros((71, 71), np.uint8), weights=tmp_path / "missing.npz")
    # Checked even when no resize is needed.
    with pytest.raises(ValueError, match="interpolation.*nearest"):
        npxception.predict(np.zeros((71, 71), np.uint8), model=small, interpolation="sharpest")


def test_bad_file_names_the_file(small, tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ": not a JPEG, PNG"):
        npxception.predict([str(SAMPLES[0]), str(bad)], model=small)
    with pytest.raises(ValueError, match="no such file"):
        npxception.predict(tmp_path / "missing.png", model=small)
