"""Converted Keras files against the framework that wrote them, and bad files refused.

The files are written by tf_keras and Keras 3 (tests/keras_fixtures.py, once per
session). They are converted, inspected and run in ONE subprocess in which
importing tensorflow, keras or tf_keras raises ImportError, which proves the
converters and the forward pass need no framework.

Tolerances:
* probabilities (softmax outputs in [0, 1]): 1e-5 absolute. float32 has a unit
  round-off of 6e-8; the logits carry ~1e-5 relative error after ~36 conv layers
  of float32 accumulation (sums of up to 9 * 2048 terms, summed in a different
  order by TensorFlow's kernels and ours), and softmax's Jacobian is bounded by
  1/4 in each output, so probabilities move by well under 1e-5.
* features / logits (unbounded): 1e-4 relative to the largest magnitude: the
  same ~1e-5 per layer, compounded over the network (as in test_model_keras.py).
"""

from __future__ import annotations

import zipfile

import h5py
import numpy as np
import pytest

from free_runner import run_jobs
from keras_fixtures import OFFICIAL_HEAD, build_bad_files, build_keras3, build_tf_keras
from npxception._jit_notice import message

from npxception.weights_tools import ConversionError
from npxception.weights_tools.hdf5 import GuardedH5
from npxception.weights_tools.keras_config import read_keras_config

PROB_ATOL = 1e-5
FEATURE_RTOL = 1e-4

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("keras_files"))
    good = {**build_tf_keras(root), **build_keras3(root)}
    bad = build_bad_files(root, good["tf_keras_weights_h5"].path)
    return root, good, bad


@pytest.fixture(scope="module")
def converted(files, tmp_path_factory):
    """Convert every good and bad file, and inspect some, in one framework-free subprocess."""
    root, good, bad = files
    work = tmp_path_factory.mktemp("converted")
    jobs = []
    for name, fx in good.items():
        x = str(work / f"{name}_x.npy")
        np.save(x, fx.x)
        argv = ["convert", fx.path, "-o", str(work / f"{name}.npz"), *fx.options]
        if fx.config:
            argv += ["--config", fx.config]
        jobs.append({"name": name, "argv": argv, "output": str(work / f"{name}.npz"), "x": x,
                     "result": str(work / f"{name}_y.npy")})
    # A .weights.h5 with a two-Dense head and no config: the activations are unknowable. Its output
    # folder exists (convert writes only into an existing directory), so the head is what is refused.
    (work / "b_noconfig").mkdir()
    jobs.append({"name": "b_weights_h5_no_config", "argv": ["convert", good["b_weights_h5"].path, "-o",
                                                              str(work / "b_noconfig" / "out.npz")]})
    for name, path in bad.items():
        (work / f"bad_{name}").mkdir()
        # edited copies of the weights-only stand-in: its head given, so that the edit is what is refused
        options = list(OFFICIAL_HEAD) if name in EDITED_COPIES else []
        jobs.append({"name": f"bad_{name}",
                     "argv": ["convert", path, "-o", str(work / f"bad_{name}" / "out.npz"), *options]})
    jobs.append({"name": "inspect_tf_keras", "argv": ["inspect", good["tf_keras_weights_h5"].path, *OFFICIAL_HEAD]})
    jobs.append({"name": "inspect_backbone", "argv": ["inspect", good["a_weights_h5"].path]})
    jobs.append({"name": "inspect_nested", "argv": ["inspect", good["b_keras"].path]})
    jobs.append({"name": "inspect_bad", "argv": ["inspect", bad["text"]]})
    return work, run_jobs(jobs, work)


EDITED_COPIES = {"wrong_shape", "nan", "inf", "external_link", "soft_link", "external_storage"}
GOOD = ["tf_keras_weights_h5", "tf_keras_full_h5", "a_keras", "a_weights_h5",
        "b_keras", "b_weights_h5", "c_keras", "c_weights_h5"]


@pytest.mark.parametrize("name", GOOD)
def test_converted_file_matches_keras(files, converted, name):
    _, good, _ = files
    work, results = converted
    res = results[name]
    assert res["rc"] == 0, f"{name}: {res['stderr']}"
    assert "run_error" not in res, f"{name}: converted, but the forward pass failed: {res.get('run_error')}"
    lines = res["stdout"].strip().splitlines()
    assert lines[0] == str(work / f"{name}.npz") and "variant=keras" in lines[1]
    fx = good[name]
    ours = np.load(work / f"{name}_y.npy")
    if fx.pool:
        ours = ours.mean(axis=(1, 2))
    theirs = fx.expected
    assert ours.shape == theirs.shape, f"ours {ours.shape} vs keras {theirs.shape}"
    err = np.abs(ours.astype(np.float64) - theirs)
    if fx.kind == "probabilities":
        assert err.max() <= PROB_ATOL, f"{name}: max |ours - keras| {err.max():.3g}; " \
                                       f"ours {ours[0, :4]} vs keras {theirs[0, :4]}"
    else:
        scale = np.abs(theirs).max()
        assert err.max() <= FEATURE_RTOL * scale, f"{name}: max |ours - keras| {err.max():.3g} " \
                                                  f"> {FEATURE_RTOL} * {scale:.3g}"
    assert res["dtype"] == "float32"


def test_manifest_records_head_and_input_size(converted):
    import npxception

    work, _ = converted
    model = npxception.load(work / "b_keras.npz")
    assert model.input_shape == (150, 150, 3)
    assert [h["kind"] for h in model.head] == ["global_avg_pool", "dense", "dense"]
    assert model.head[1]["activation"] == "relu" and model.head[2]["activation"] == "softmax"
    full = npxception.load(work / "tf_keras_full_h5.npz")
    assert full.input_shape == (299, 299, 3) and full.classes == 1000


def _one_line_refusal(res, name):
    assert res["rc"] == 1, f"{name}: exit code {res['rc']}, stdout {res['stdout']!r}"
    err = res["stderr"].strip()
    assert err and "\n" not in err, f"{name}: expected one line on stderr, found {err!r}"
    assert "Traceback" not in res["stderr"]
    return err


BAD = {
    "empty": "empty", "truncated": "HDF5", "text": "neither HDF5", "not_keras": "config.json",
    "tiny_cnn": "conv2d", "mobilenet": "", "wrong_shape": "shape", "nan": "NaN", "inf": "NaN or Inf",
    "external_link": "external link", "soft_link": "soft link", "external_storage": "external storage",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_refused_without_output(files, converted, name):
    work, results = converted
    err = _one_line_refusal(results[f"bad_{name}"], name)
    assert BAD[name].lower() in err.lower(), f"{name}: {err}"
    assert list((work / f"bad_{name}").iterdir()) == [], f"{name}: a file was left behind"


def test_weights_h5_without_config_names_the_remedy(converted):
    work, results = converted
    err = _one_line_refusal(results["b_weights_h5_no_config"], "b without config")
    assert "--config" in err
    assert not (work / "b_noconfig").exists() or list((work / "b_noconfig").iterdir()) == []


def test_inspect(converted):
    _, results = converted
    res = results["inspect_tf_keras"]
    assert res["rc"] == 0, res["stderr"]
    out = res["stdout"]
    assert "legacy Keras HDF5 weights-only file" in out
    assert "block14_sepconv2" in out and "(1, 1, 1536, 2048)" in out
    assert "detected architecture: Xception variant=keras" in out
    nested = results["inspect_nested"]
    assert nested["rc"] == 0 and "Keras 3 .keras archive" in nested["stdout"]
    assert "input shape: (150, 150, 3)" in nested["stdout"]
    _one_line_refusal(results["inspect_bad"], "inspect of a text file")


# ---- readers, without any framework ------------------------------------------

def _k3_tensor(name):
    return {"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "keras_history": [name, 0, 0]}}


def test_keras3_functional_config_with_list_args():
    config = {"class_name": "Functional", "config": {
        "name": "m", "input_layers": [["in", 0, 0]], "output_layers": [["add", 0, 0]],
        "layers": [
            {"class_name": "InputLayer", "name": "in", "config": {"name": "in", "batch_shape": [None, 71, 72, 3]},
             "inbound_nodes": []},
            {"class_name": "Conv2D", "name": "a", "config": {"name": "a"},
             "inbound_nodes": [{"args": [_k3_tensor("in")], "kwargs": {}}]},
            {"class_name": "Add", "name": "add", "config": {"name": "add"},
             "inbound_nodes": [{"args": [[_k3_tensor("a"), _k3_tensor("in")]], "kwargs": {}}]},
        ]}}
    klayers, shape = read_keras_config(config)
    assert shape == (71, 72, 3)
    assert [(k.name, k.inbound) for k in klayers] == [("in", []), ("a", ["in"]), ("add", ["a", "in"])]
    assert all(k.weights == [] for k in klayers)


def test_tf_keras_nested_sequential_is_flattened_with_prefix_on_clash():
    inner = {"name": "inner", "layers": [
        {"class_name": "InputLayer", "config": {"name": "dense", "batch_input_shape": [None, 8]}},
        {"class_name": "Dense", "config": {"name": "d1"}},
    ]}
    config = {"class_name": "Functional", "config": {
        "name": "outer", "input_layers": [["x", 0, 0]], "output_layers": [["dense", 0, 0]],
        "layers": [
            {"class_name": "InputLayer", "name": "x", "config": {"name": "x", "batch_input_shape": [None, 8]},
             "inbound_nodes": []},
            {"class_name": "Sequential", "name": "inner", "config": inner,
             "inbound_nodes": [[["x", 0, 0, {}]]]},
            {"class_name": "Dense", "name": "dense", "config": {"name": "dense"},
             "inbound_nodes": [[["inner", 1, 0, {}]]]},
        ]}}
    klayers, shape = read_keras_config(config)
    assert shape == (8,)
    # the nested InputLayer is called "dense", like an outer layer: the nested model is prefixed
    assert [(k.name, k.inbound) for k in klayers] == [
        ("x", []), ("inner/dense", ["x"]), ("inner/d1", ["inner/dense"]), ("dense", ["inner/d1"])]


def test_sequential_without_input_layer_gets_one():
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Conv2D", "config": {"name": "c", "batch_input_shape": [None, 99, 99, 3]}},
        {"class_name": "Dense", "config": {"name": "d"}}]}}
    klayers, shape = read_keras_config(config)
    assert shape == (99, 99, 3)
    assert [(k.name, k.class_name, k.inbound) for k in klayers] == [
        ("s_input", "InputLayer", []), ("c", "Conv2D", ["s_input"]), ("d", "Dense", ["c"])]


def test_config_refusals():
    with pytest.raises(ConversionError, match="not valid JSON"):
        read_keras_config("{not json")
    shared = {"name": "m", "input_layers": [["in", 0, 0]], "output_layers": [["a", 0, 0]], "layers": [
        {"class_name": "InputLayer", "name": "in", "config": {}, "inbound_nodes": []},
        {"class_name": "Dense", "name": "a", "config": {},
         "inbound_nodes": [[["in", 0, 0, {}]], [["in", 0, 0, {}]]]}]}
    with pytest.raises(ConversionError, match="called 2 times"):
        read_keras_config(shared)


def test_hdf5_guards(tmp_path):
    p = tmp_path / "hostile.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("ext", shape=(10,), dtype="f4", external=[("/dev/zero", 0, 40)])
        f["soft"] = h5py.SoftLink("/ext")
        f["link"] = h5py.ExternalLink("/etc/passwd", "/x")
        f.create_dataset("ints", data=np.arange(3))
        f.create_dataset("ok", data=np.ones(3, np.float32))
        layout = h5py.VirtualLayout(shape=(10,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "a", shape=(10,))
        f.create_virtual_dataset("virtual", layout)
    with GuardedH5(str(p), "hostile.h5") as h5:
        assert h5.read(h5.file, "ok").tolist() == [1, 1, 1]
        for name, message in [("ext", "external storage"), ("soft", "soft link"), ("link", "external link"),
                              ("ints", "floating point"), ("virtual", "virtual dataset")]:
            with pytest.raises(ConversionError, match=message) as info:
                h5.read(h5.file, name)
            assert "hostile.h5" in str(info.value)


def test_legacy_keras1_names_and_chunked_layer_names(tmp_path):
    """Keras-1 auto-names and split layer_names attributes: classes come from the arrays."""
    from npxception.weights_tools.legacy_h5 import read_legacy_h5

    p = tmp_path / "keras1.h5"
    rng = np.random.default_rng(0)
    layers = {
        "convolution2d_1": [("convolution2d_1_W", (3, 3, 3, 32))],
        "batchnormalization_1": [(f"batchnormalization_1_{v}", (32,))
                                 for v in ("gamma", "beta", "running_mean", "running_std")],
        "separableconvolution2d_1": [("separableconvolution2d_1_depthwise_kernel", (3, 3, 32, 1)),
                                     ("separableconvolution2d_1_pointwise_kernel", (1, 1, 32, 64))],
    }
    with h5py.File(p, "w") as f:
        names = list(layers)
        f.attrs["layer_names0"] = np.array([n.encode() for n in names[:2]])
        f.attrs["layer_names1"] = np.array([n.encode() for n in names[2:]])
        for layer, weights in layers.items():
            g = f.create_group(layer)
            g.attrs["weight_names"] = np.array([w.encode() for w, _ in weights])
            for w, shape in weights:
                g.create_dataset(w, data=rng.normal(size=shape).astype(np.float32))
    with GuardedH5(str(p), "keras1.h5") as h5:
        klayers, shape, wired = read_legacy_h5(h5)
    assert not wired and shape is None
    assert [(k.name, k.class_name, k.inbound) for k in klayers] == [
        ("convolution2d_1", "Conv2D", None), ("batchnormalization_1", "BatchNormalization", None),
        ("separableconvolution2d_1", "SeparableConv2D", None)]


def test_archive_member_size_limit(tmp_path, monkeypatch):
    from npxception.weights_tools import keras3

    p = tmp_path / "big.keras"
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", "{}")
        z.writestr("model.weights.h5", b"\0" * 10_000)
    monkeypatch.setattr(keras3, "max_weights_bytes", lambda: 1000)
    with pytest.raises(ConversionError, match="limit"):
        keras3.open_archive(str(p), str(p))


def test_pretrained_converts_in_a_child_process_and_only_the_official_file_gets_its_head(files, tmp_path):
    # npxception.pretrained converts the downloaded official .h5 by running
    # `python -m npxception.weights_tools convert` in a child (the package never imports the
    # converter). The child decides the head by the file's MD5 like any conversion:
    # the tf_keras stand-in has the official layout but not the official bytes, so
    # it is refused, naming what to give; test_golden's notop test converts through it.
    import pathlib

    from npxception import pretrained

    _, good, bad = files
    fx = good["tf_keras_weights_h5"]
    npz = tmp_path / "weights" / "official.npz"
    with pytest.raises(ValueError, match=r"converting the official weights failed \(.*not Keras' official "
                                         r"file.*--classifier-activation"):
        pretrained.convert(pathlib.Path(fx.path), npz)
    assert not npz.exists()
    with pytest.raises(ValueError, match=r"truncated\.h5: converting the official weights failed \(.*HDF5"):
        pretrained.convert(pathlib.Path(bad["truncated"]), tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_pretrained_conversion_that_cannot_write_keeps_the_download(files, tmp_path, monkeypatch):
    """Review 12, finding 6: a full disk while converting the official weights said "delete it to
    download it again" of a good download. The child converter runs under RLIMIT_FSIZE (1 MB), so the
    .npz write really fails (EFBIG, as a full disk fails it) after the file was read."""
    import pathlib
    import resource
    import subprocess

    from npxception import pretrained

    real_run = subprocess.run

    def limited(*args, **kwargs):
        one_mb = 1 << 20
        return real_run(*args, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (one_mb, one_mb)),
                        **kwargs)

    monkeypatch.setattr(pretrained.subprocess, "run", limited)
    src = pathlib.Path(files[1]["a_keras"].path)
    npz = tmp_path / "weights" / "official.npz"
    with pytest.raises(ValueError, match=r"cannot write \(File too large\)") as info:
        pretrained.convert(src, npz)
    msg = str(info.value)
    assert f"{npz}: cannot write (File too large)" in msg and "the download is intact" in msg, msg
    assert "delete it" not in msg and "NPXCEPTION_HOME" in msg
    assert list(npz.parent.iterdir()) == []


def test_official_file_by_its_md5_gets_keras_softmax_head(files, monkeypatch):
    """The rule itself: the stand-in made the official file by pinning its MD5 (as if Keras had
    published these bytes) converts with Keras' head and matches Keras; unpinned, the same bytes are
    refused (Xception(classifier_activation=None) saves the same layout), naming the options."""
    from npxception import weights_tools
    from npxception import pretrained
    from npxception.download import file_hash

    fx = files[1]["tf_keras_weights_h5"]
    # its avg_pool layer (tf_keras' layer_names) records the pooling: only the size and activation are asked for
    with pytest.raises(ConversionError, match=r"after avg_pool \(avg pooling\).*official ImageNet layout, but it "
                                              r"is not Keras' official file.*--config.*--input-shape.*"
                                              r"--classifier-activation"):
        weights_tools.read(fx.path)
    official = pretrained.FILES[True]
    monkeypatch.setitem(pretrained.FILES, True, pretrained.WeightFile(official.fname, file_hash(fx.path, "md5")))
    model = weights_tools.read(fx.path)
    assert model.head[-1]["activation"] == "softmax" and model.input_shape == (299, 299, 3)
    assert model.notices == []
    ours = model(fx.x)
    assert np.abs(ours.astype(np.float64) - fx.expected).max() <= PROB_ATOL  # as test_converted_file_matches_keras
    # the pinned MD5 of the file without the top does not make a file with the top official
    monkeypatch.setitem(pretrained.FILES, True, official)
    monkeypatch.setitem(pretrained.FILES, False, pretrained.WeightFile(official.fname, file_hash(fx.path, "md5")))
    with pytest.raises(ConversionError, match="--classifier-activation"):
        weights_tools.read(fx.path)


def _without_compile_notice(stderr: str) -> str:
    """``stderr`` without the one-line notice of a cold Numba cache (npxception/_jit_notice.py).

    Which conversion of the ``converted`` fixture compiles the kernels first depends on the
    cache the run starts with (a fresh clone's is empty), so that line may be on any of them.
    """
    notices = [message(dtype, None) for dtype in ("float32", "float64")] + ["every run compiles, because "]
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not any(n in line for n in notices))


def test_weights_only_backbone_notice_says_what_is_not_recorded(files, converted):
    """A weights-only backbone converts at any size (the documented policy), with the pooling its file
    records (layers/global_average_pooling2d), and a one-line notice on stderr naming the input size it does
    not record and the flag that gives it (the unpooled policy: tests/test_weights_only_pooling.py)."""
    from npxception import weights_tools

    _, results = converted
    res = results["a_weights_h5"]
    assert res["rc"] == 0
    lines = _without_compile_notice(res["stderr"]).strip().splitlines()
    assert "Traceback" not in res["stderr"], res["stderr"]
    # one line for the head, one for the dtype policy no weights-only file records (review 26, F3)
    assert len(lines) == 2 and DTYPE_NOTICE in lines[1], lines
    notice = lines[0]
    for needed in ("a_backbone.weights.h5", "does not record", "input shape", "with avg pooling",
                   "global_average_pooling2d", "--input-shape H,W"):
        assert needed in notice, (needed, notice)
    assert "--pooling" not in notice, notice
    inspected = results["inspect_backbone"]
    assert inspected["rc"] == 0 and notice in inspected["stdout"], inspected["stdout"]
    # given, nothing of the head is left to policy: only the dtype policy's notice
    model = weights_tools.read(files[1]["a_weights_h5"].path, pooling="avg", input_shape=(96, 96))
    assert len(model.notices) == 1 and DTYPE_NOTICE in model.notices[0], model.notices
    assert [h["kind"] for h in model.head] == ["global_avg_pool"]
    # files that record their model print nothing; the classifier stand-in given its head, the dtype notice only
    assert _without_compile_notice(results["a_keras"]["stderr"]) == ""
    stand_in = _without_compile_notice(results["tf_keras_weights_h5"]["stderr"]).strip().splitlines()
    assert len(stand_in) == 1 and DTYPE_NOTICE in stand_in[0], stand_in


DTYPE_NOTICE = "a weights-only file does not record the dtype policy"


def test_nested_file_captures_by_the_names_keras_shows(files, converted):
    """Review 15, finding 2: a converted fine-tuned nested model, loaded from its .npz, captures its layers
    by the names Keras' summary shows (auto-names conv2d, batch_normalization_N, add_N included), and
    they are Keras' own intermediate outputs."""
    import keras

    import npxception

    _, good, _ = files
    work, _ = converted
    model = npxception.load(work / "b_keras.npz")
    names = model.source_layer_names
    auto = {ours: theirs for ours, theirs in names.items() if "residual" in ours or ours.endswith("_add")}
    assert len(auto) == 20 and all(theirs.rsplit("/", 1)[-1].startswith(("conv2d", "batch_normalization", "add"))
                                   for theirs in auto.values()), auto
    fx = good["b_keras"]
    kmodel = keras.models.load_model(fx.path, compile=False)
    backbone = next(layer for layer in kmodel.layers if hasattr(layer, "layers"))
    theirs = {**auto, "block14_sepconv2_act": names["block14_sepconv2_act"]}
    probe = keras.Model(backbone.input, [backbone.get_layer(t.rsplit("/", 1)[-1]).output for t in theirs.values()])
    expected = dict(zip(theirs.values(), probe(fx.x, training=False)))
    _, acts = model.forward(fx.x, capture=list(theirs.values()))
    for name, want in expected.items():
        want = np.asarray(want)
        # float32 both sides, different summation orders over up to 3*3*1024 terms: FEATURE_RTOL of the scale
        assert np.abs(acts[name] - want).max() <= FEATURE_RTOL * np.abs(want).max(), name
