"""The .npz weight format: round trip, and every kind of bad file refused with a clear message."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import npxception
from npxception import weights as wfile
from weight_files import rewrite as _rewrite


@pytest.fixture(scope="module")
def small_model():
    # classes=10 keeps the file small; the format is the same for 1000. 71x71 keeps the
    # golden test case's float64 oracle (computed once per model, at save) to ~1 s.
    return npxception.Xception(classes=10, seed=5, input_shape=(71, 71, 3))


def test_round_trip(small_model, tmp_path):
    path = small_model.save(tmp_path / "w.npz")
    loaded = npxception.load(path)
    assert loaded.manifest() | {"source": None} == small_model.manifest() | {"source": None}
    # .weights is a new dict each call, unpacking every packed kernel: read it once, not once per key
    loaded_weights = loaded.weights
    for key, a in small_model.weights.items():
        np.testing.assert_array_equal(loaded_weights[key], a)
    assert list(loaded_weights) == list(small_model.weights)
    manifest, _ = wfile.read(path)
    # no input stage: version 2, which readers from before the input stage understand
    assert manifest["format_version"] == wfile.WITHOUT_INPUT_STAGE and manifest["feed"] == "preprocess_input"
    assert manifest["variant"] == "keras" and manifest["input_shape"] == [71, 71, 3]
    assert manifest["classes"] == 10 and manifest["classifier_activation"] == "softmax"
    assert [h["kind"] for h in manifest["head"]] == ["global_avg_pool", "dense"]
    # Xception(weights=path) gives the same model.
    again = npxception.Xception(weights=path, classes=10)
    np.testing.assert_array_equal(again.weights["predictions/bias"], small_model.weights["predictions/bias"])


def test_float64_round_trip_and_astype(small_model, tmp_path):
    oracle = small_model.astype("float64")
    assert oracle.dtype == np.float64 and small_model.dtype == np.float32
    loaded = npxception.load(oracle.save(tmp_path / "w64.npz"))
    assert loaded.dtype == np.float64


def test_save_is_atomic(small_model, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt, match="^$"):
        small_model.save(tmp_path / "w.npz")
    assert list(tmp_path.iterdir()) == []


def test_save_into_a_missing_directory_is_refused_and_creates_nothing(small_model, tmp_path):
    """As open() and np.save: a mistyped output path must not create directories somewhere unexpected."""
    with pytest.raises(FileNotFoundError, match=r"the directory .*typo.sub does not exist; expected an existing"):
        small_model.save(tmp_path / "typo" / "sub" / "w.npz")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"a_file is not a directory"):
        small_model.save(tmp_path / "a_file" / "w.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_missing_key(small_model, tmp_path):
    good = small_model.save(tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", lambda a, m: a.pop("block4_sepconv2_bn/gamma"))
    with pytest.raises(ValueError, match=r"missing weight 'block4_sepconv2_bn/gamma' \(expected shape \(728,\)\)"):
        npxception.load(bad)


def test_unexpected_key(small_model, tmp_path):
    good = small_model.save(tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", lambda a, m: a.update({"block99_conv/kernel": np.zeros(3, "f4")}))
    with pytest.raises(ValueError, match="unexpected weight 'block99_conv/kernel'"):
        npxception.load(bad)


def test_wrong_shape(small_model, tmp_path):
    good = small_model.save(tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz",
                   lambda a, m: a.update({"block2_sepconv1/pointwise_kernel": np.zeros((1, 1, 64, 127), "f4")}))
    with pytest.raises(ValueError, match=r"block2_sepconv1/pointwise_kernel.*expected \(1, 1, 64, 128\), found \(1, 1, 64, 127\)"):
        npxception.load(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite(small_model, tmp_path, value):
    good = small_model.save(tmp_path / "good.npz")

    def poison(arrays, manifest):
        a = arrays["block13_sepconv1/depthwise_kernel"].copy()
        a[0, 0, 0, 0] = value
        arrays["block13_sepconv1/depthwise_kernel"] = a

    bad = _rewrite(good, tmp_path / "bad.npz", poison)
    with pytest.raises(ValueError, match="block13_sepconv1/depthwise_kernel.*NaN or Inf"):
        npxception.load(bad)


def test_pickled_object_refused(small_model, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    good = small_model.save(tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz",
                   lambda a, m: a.update({"block1_conv1/kernel": np.array([Evil()], dtype=object)}))
    with pytest.raises(ValueError, match="pickled object"):
        npxception.load(bad)
    assert pickle  # the payload above is a pickle; it must never be executed


def test_newer_version_refused(small_model, tmp_path):
    good = small_model.save(tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", lambda a, m: m.update(format_version=wfile.FORMAT_VERSION + 1))
    with pytest.raises(ValueError, match=f"newer npxception.*format version {wfile.FORMAT_VERSION} or older"):
        npxception.load(bad)


def test_not_an_npz(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz"):
        npxception.load(junk)
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.zeros(3))
    with pytest.raises(ValueError, match="not an npxception weight file"):
        npxception.load(plain)
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        npxception.load(tmp_path / "absent.npz")


def test_head_override_rules(small_model, tmp_path):
    path = small_model.save(tmp_path / "w.npz")
    features = npxception.Xception(weights=path, include_top=False, pooling="max")
    assert features.head == [{"kind": "global_max_pool", "name": "max_pool"}]
    assert features.input_shape == (None, None, 3)
    with pytest.raises(ValueError, match="variant"):
        npxception.Xception(weights=path, variant="article")
    with pytest.raises(ValueError, match="classes"):
        npxception.Xception(weights=path, classes=7)
    logits = npxception.Xception(weights=path, classifier_activation=None, classes=10)
    assert logits.classifier_activation is None


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(pooling="mean"), ValueError, "pooling"),
    (dict(classes=0), ValueError, "classes"),
    # hard_tanh: a Keras 3 activation npxception does not compute (hard_sigmoid is refused with its own hint)
    (dict(classifier_activation="hard_tanh"), ValueError, "classifier_activation: expected one of"),
    (dict(classifier_activation="hard_sigmoid"), ValueError, "classifier_activation: 'hard_sigmoid' is relu6"),
    (dict(input_shape=(70, 70, 3), include_top=False), ValueError, "at least 71"),
    (dict(input_shape=(299, 299, 0)), ValueError, r"\(H, W, C\) with C, the channels, in \[1, 1024\]"),
    (dict(dtype="float16"), TypeError, "float32"),
    (dict(variant="pytorch"), ValueError, "variant"),
    (dict(weights=3), TypeError, "weights"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        npxception.Xception(**kwargs)


def test_repr_and_source_say_where_the_weights_came_from(small_model, tmp_path, monkeypatch):
    # weights=None is the default (no implicit download, unlike Keras): random, and it says so.
    assert small_model.source == "random(seed=5)"
    assert repr(small_model).endswith(" weights=random(seed=5)>")
    path = small_model.save(tmp_path / "w.npz")
    assert npxception.Xception(weights=path, include_top=False).source == "random(seed=5)"  # kept by the file
    # "imagenet": the cached file, placed by hand here (no download): named unverified, with a warning
    # (review 24, F7: any .npz there was called the official weights)
    from npxception import pretrained
    from npxception.download import file_hash

    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    monkeypatch.setenv("NPXCEPTION_HOME", str(home))
    cached = home / "weights" / "xception_weights_tf_dim_ordering_tf_kernels_notop.npz"
    # the module's weights without the top (any no-top weights do; a fresh random Xception cost its init)
    npxception.Xception(weights=path, include_top=False).save(cached)
    with pytest.warns(pretrained.UnverifiedWeightsWarning, match="placed by hand"):
        model = npxception.Xception(weights="imagenet", include_top=False)
    assert model.source.startswith(f"unverified ({cached}: placed by hand") and "imagenet (" not in repr(model)
    # with the record the download-and-convert route writes (the official file's MD5): named as such
    sidecar = cached.with_name(cached.name + ".sha256")
    pretrained._write_sidecar(sidecar, file_hash(cached, "sha256"), pretrained.FILES[False])
    model = npxception.Xception(weights="imagenet", include_top=False)
    assert model.source == f"imagenet ({cached})" and f"weights=imagenet ({cached})>" in repr(model)


def test_source_layer_names_are_kept_and_captured_by(small_model, tmp_path):
    """Review 15, finding 2: the converter's {our name: Keras' name} map survives save/load, and capture
    and run_layer take Keras' names (auto-names such as conv2d_2) as well as ours."""
    source = {"block2_residual_conv": "conv2d_2", "block2_residual_bn": "batch_normalization_4",
              "block2_add": "add", "predictions": "dense_1"}
    model = small_model.astype("float32")  # a copy: the module's model stays without a map
    model.source_layer_names = dict(source)
    loaded = npxception.load(model.save(tmp_path / "named.npz"))
    assert loaded.source_layer_names == source
    x = np.random.default_rng(0).uniform(-1, 1, (1, 71, 71, 3)).astype(np.float32)
    _, acts = loaded.forward(x, capture=[*source.values(), "block2_residual_bn"])  # ours and theirs mixed
    # ours by our names, and block1's output for run_layer below, in one pass (a whole forward each otherwise)
    _, ours = loaded.forward(x, capture=[*source, "block1_conv2_act"])
    for mine, theirs in source.items():
        np.testing.assert_array_equal(acts[theirs], ours[mine])
    np.testing.assert_array_equal(acts["block2_residual_bn"], ours["block2_residual_bn"])
    block1 = ours["block1_conv2_act"]
    np.testing.assert_array_equal(loaded.run_layer("conv2d_2", [block1]), ours["block2_residual_conv"])
    with pytest.raises(ValueError, match=r"unknown layer name 'dropout'.*compute nothing at inference \(Dropout"):
        loaded.forward(x, capture=["dropout"])
    with pytest.raises(ValueError, match=r"unknown layer name 'conv2d'.*records no source names.*"
                                         r"blockN_residual_conv"):
        small_model.forward(x, capture=["conv2d"])


@pytest.fixture(scope="module")
def saved_small_model(small_model, tmp_path_factory):
    return small_model.save(tmp_path_factory.mktemp("saved") / "good.npz")  # its golden computed once


@pytest.mark.parametrize("names,match", [
    ({"block2_residual_conv": "conv2d", "block3_residual_conv": "conv2d"}, "names more than one layer"),
    ({"not_a_layer": "conv2d"}, "is not one of the model's layers"),
    ({"block2_residual_conv": "block3_residual_conv"}, "another of the model's layers"),
    ({"block2_residual_conv": "x" * 5000}, "expected a layer name of 1 to 1024"),
    ({"block2_residual_conv": 7}, "expected a layer name"),
    (["conv2d"], "expected at most"),
    ({f"k{i}": "n" for i in range(500)}, "expected at most"),
])
def test_source_layer_names_in_a_file_are_untrusted(saved_small_model, tmp_path, names, match):
    bad = _rewrite(saved_small_model, tmp_path / "bad.npz", lambda a, m: m.update(source_layer_names=names))
    with pytest.raises(ValueError, match=f"bad.npz: .*source_layer_names.*{match}|bad.npz: .*{match}"):
        npxception.load(bad)


def test_model_name_survives_save_and_load(small_model, tmp_path):
    """model.name (Keras' Xception(name=...)) is saved in the manifest and restored by load."""
    model = small_model.astype("float32")  # a copy
    model.name = "my_classifier"
    assert npxception.load(model.save(tmp_path / "named.npz")).name == "my_classifier"


def test_model_name_absent_is_xception_and_a_bad_one_is_refused(saved_small_model, tmp_path):
    def drop(a, m):
        m.pop("name")
    old = _rewrite(saved_small_model, tmp_path / "old.npz", drop)  # a file written before the field
    assert npxception.load(old).name == "xception"
    for bad_name in ("", 7, "n" * 5000):
        bad = _rewrite(saved_small_model, tmp_path / "bad.npz", lambda a, m: m.update(name=bad_name))
        with pytest.raises(ValueError, match=r"bad.npz: manifest: name: expected the model's name, a string of 1 to 1024"):
            npxception.load(bad)
