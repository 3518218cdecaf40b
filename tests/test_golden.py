"""Weight files that prove themselves: the golden test case, checked on load and by `npxception verify`.

Every tamper case of issue 16 must fail both ``load`` and ``verify`` with the
layer named: a weight rewritten by 1%, a flipped byte in a stored array, two
equal-shape layers swapped, and the golden itself altered. Models are 71x71
(the golden's float64 oracle then costs about a second) and share one saved
file per module.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile

import numpy as np
import pytest

import npxception
from weight_files import rewrite as _rewrite
from npxception import golden as gold
from npxception import golden_file
from npxception import weights as wfile
from npxception.cli import main as cli
from npxception.untrusted import short_repr

SIZE = 71


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A classifier saved once: its path and the model (with the golden save() computed)."""
    model = npxception.Xception(classes=10, input_shape=(SIZE, SIZE, 3), seed=7)
    path = model.save(tmp_path_factory.mktemp("golden") / "w.npz")
    return path, model


def _verify(capsys, *argv):
    code = cli(["verify", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out + err


def _scaled(key, factor):
    def edit(arrays, manifest):
        arrays[key] = (arrays[key] * factor).astype(arrays[key].dtype)
    return edit


def test_saved_file_carries_a_golden_that_verify_passes_on_every_path(saved, capsys):
    path, model = saved
    manifest, arrays = wfile.read(path)
    section = manifest["golden"]
    assert manifest["format_version"] == 2
    assert section["source"] == "npxception float64 oracle (impl='reference')"
    assert section["precision"] == "float64" and section["rtol"] == gold.RTOL
    assert section["written_by"]["npxception"] == npxception.__version__
    assert section["written_by"]["numpy"] == np.__version__
    assert list(section["layers"]) == gold.checked_layers(model)
    assert {"block1_conv1_act", "block4_add", "block13_add", "predictions"} <= set(section["layers"])
    # every reserved array is declared with its shape and dtype, and nothing else is reserved
    declared = golden_file.expected_keys(section)
    reserved = {k: a for k, a in arrays.items() if k.startswith(golden_file.KEY_PREFIX)}
    assert declared == {k: (a.shape, a.dtype.name) for k, a in reserved.items()}
    assert reserved[golden_file.INPUT_KEY].shape == (1, SIZE, SIZE, 3) and reserved[golden_file.INPUT_KEY].dtype == np.uint8
    # "at most a few hundred kB": at 299x299 the uint8 input is 268 kB of it
    assert sum(a.nbytes for a in reserved.values()) < 30_000

    # The expectation is our float64 oracle's, independently recomputed here.
    oracle = model.astype("float64")
    x = npxception.preprocess_input(reserved[golden_file.INPUT_KEY].astype(np.float64))
    _, acts = oracle.forward(x, capture=["block4_add"], impl="reference")
    a = acts["block4_add"].ravel()
    np.testing.assert_allclose(reserved[golden_file.KEY_PREFIX + "block4_add/stats"],
                               [a.mean(), a.std(), np.abs(a).max()], rtol=1e-12)  # same float64 sums
    np.testing.assert_array_equal(reserved[golden_file.KEY_PREFIX + "block4_add/sample"],
                                  a[reserved[golden_file.KEY_PREFIX + "block4_add/index"]])

    code, out = _verify(capsys, path)
    assert code == 0, out
    assert "golden from npxception float64 oracle" in out
    for column in ("fused float32", "fast float32", "reference float32"):
        assert column in out
    assert "block13_add" in out and "ok: every path agrees" in out


def test_load_runs_the_golden_once_per_file_per_process(saved, monkeypatch, tmp_path):
    path, model = saved
    fresh = _rewrite(path, tmp_path / "copy.npz", lambda a, m: None)
    calls = []
    real = gold.run_path
    monkeypatch.setattr(gold, "run_path", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    npxception.load(fresh)
    npxception.Xception(weights=fresh, classes=10)
    npxception.load(fresh, verify=False)
    assert calls == ["fused"]  # one forward pass, on the fast path
    npxception.load(fresh).astype("float64")  # the file's dtype is what is checked
    assert calls == ["fused"]


def test_a_fused_plan_that_computes_nan_is_a_golden_mismatch(saved, monkeypatch, tmp_path):
    """A fast path whose kernels miscompute into NaN fails the load check as a GoldenMismatch naming the fused
    path, not as ActivationOverflow, which blames the weights' float range and says nothing of the kernels
    (CI met that message when a stubbed GEMM left NaN in its buffers)."""
    import npxception.network as network

    path, _ = saved
    fresh = _rewrite(path, tmp_path / "copy.npz", lambda a, m: None)  # a file this process has not checked
    real = network.fast_forward
    monkeypatch.setattr(network, "fast_forward", lambda model, x: np.full_like(real(model, x), np.nan))
    with pytest.raises(gold.GoldenMismatch, match="Every layer agrees when run op by op, so the fused fast "
                                                  "path miscomputes on this machine"):
        npxception.load(fresh)


def test_per_layer_kernels_that_compute_nan_are_located_by_the_golden(saved, monkeypatch, tmp_path):
    """When the fused plan and the per-layer fast kernels both compute NaN (from block6_sepconv1 on), the
    load check's second pass still names the first checked layer that disagrees, as for wrong finite
    numbers; before, the per-layer pass raised ActivationOverflow, blaming the weights."""
    import npxception.forward as forward
    import npxception.network as network

    path, _ = saved
    fresh = _rewrite(path, tmp_path / "copy.npz", lambda a, m: None)
    real_plan, real_layer = network.fast_forward, forward.run_layer
    monkeypatch.setattr(network, "fast_forward", lambda model, x: np.full_like(real_plan(model, x), np.nan))

    def run_layer(p, layer, inputs, eps, impl):
        y = real_layer(p, layer, inputs, eps, impl)
        return np.full_like(y, np.nan) if impl == "fast" and layer.name == "block6_sepconv1" else y

    monkeypatch.setattr(forward, "run_layer", run_layer)
    with pytest.raises(gold.GoldenMismatch, match="fails at layer block6_add: .*the fast per-layer kernels.*"
                                                  "block5_add, agrees"):
        npxception.load(fresh)


TAMPER = {
    # a weight rewritten by 1%: block5's second separable conv -> block5_add is the first to disagree
    "one weight by 1%": (_scaled("block5_sepconv2/pointwise_kernel", 1.01), "block5_add", "block4_add"),
    # two layers' weights of equal shape (728, 728) swapped between blocks 6 and 7
    "two layers swapped": (lambda a, m: a.update({
        "block6_sepconv1/pointwise_kernel": a["block7_sepconv1/pointwise_kernel"],
        "block7_sepconv1/pointwise_kernel": a["block6_sepconv1/pointwise_kernel"]}), "block6_add", "block5_add"),
    # the golden itself: one digest's std, then its input
    "golden digest altered": (lambda a, m: a[golden_file.KEY_PREFIX + "block9_add/stats"].__setitem__(
        1, a[golden_file.KEY_PREFIX + "block9_add/stats"][1] * 1.01), "block9_add", "block8_add"),
    "golden input altered": (lambda a, m: a[golden_file.INPUT_KEY].__setitem__((0, 3, 5, 1), 255 - a[golden_file.INPUT_KEY][0, 3, 5, 1]),
                             "its input", None),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_tampered_file_fails_load_and_verify_naming_the_layer(saved, tmp_path, capsys, case):
    path, _ = saved
    edit, layer, before = TAMPER[case]
    bad = _rewrite(path, tmp_path / "bad.npz", edit)
    where = layer if layer == "its input" else f"layer {layer}"
    with pytest.raises(ValueError, match=f"golden test case fails at {where}:") as info:
        npxception.load(bad)
    assert isinstance(info.value, gold.GoldenMismatch)
    msg = str(info.value)
    assert msg.startswith(str(bad)) and "Re-convert" in msg.replace("re-convert", "Re-convert")
    if "golden" in case:  # the golden's seal: found before anything runs, so verify=False cannot skip it
        assert "SHA-256" in msg and "altered" in msg
    else:
        assert f"npxception verify --report report.json {bad}" in msg and "verify=False" in msg
        assert f"{before}, agrees" in msg
        npxception.load(bad, verify=False)  # the opt-out for speed-critical callers
    code, out = _verify(capsys, bad)
    assert code == 1
    assert f"FAIL: {bad}: the golden test case fails at {where}:" in out
    if "golden" not in case:  # every path disagrees from the same layer on: the file, not the kernels
        assert "The reference ops disagree as well" in out


def test_flipped_byte_in_a_stored_array_is_named(saved, tmp_path, capsys):
    path, _ = saved
    member = "block3_sepconv1/pointwise_kernel.npy"
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    data = bytearray(path.read_bytes())
    # local header: 30 bytes + name + extra field, then the stored (uncompressed) .npy
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10  # one bit of one weight's mantissa
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is damaged") as exc:
        npxception.load(bad)
    msg = str(exc.value)
    assert msg.startswith(f"{bad}: array 'block3_sepconv1/pointwise_kernel' is damaged") and "CRC-32" in msg
    assert "re-convert the file or restore it" in msg
    code, out = _verify(capsys, bad)
    assert code == 1 and "'block3_sepconv1/pointwise_kernel' is damaged" in out


def test_old_format_loads_with_a_one_time_notice_and_verify_add(saved, tmp_path, capsys):
    path, model = saved

    def downgrade(arrays, manifest):
        for key in [k for k in arrays if k.startswith(golden_file.KEY_PREFIX)]:
            del arrays[key]
        del manifest["golden"], manifest["reserved"]
        manifest["format_version"] = 1  # as npxception wrote files before the golden case

    old = _rewrite(path, tmp_path / "old.npz", downgrade)
    with pytest.warns(gold.NoGoldenWarning, match="no golden test case.*verify --add"):
        loaded = npxception.load(old)
    np.testing.assert_array_equal(loaded.weights["predictions/bias"], model.weights["predictions/bias"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the notice is once per file per process
        npxception.load(old)
    code, out = _verify(capsys, old)
    assert code == 1 and "no golden test case" in out and "verify --add" in out
    code, out = _verify(capsys, old, "--add")
    assert code == 0, out
    assert "(just added)" in out
    manifest, _ = wfile.read(old)
    assert manifest["format_version"] == 2 and manifest["golden"]["precision"] == "float64"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        npxception.load(old)


def test_report_json(saved, tmp_path, capsys):
    path, _ = saved
    bad = _rewrite(path, tmp_path / "bad.npz", _scaled("block2_sepconv1/depthwise_kernel", 1.01))
    report = tmp_path / "report.json"
    code, _ = _verify(capsys, path, bad, "--report", report)
    assert code == 1
    data = json.loads(report.read_text())
    env = data["environment"]
    assert env["numpy"] == np.__version__ and env["npxception"] == npxception.__version__
    assert env["numba"] and env["threading_layer"] and isinstance(env["cpu_flags"], list) and env["gemm"]
    good, tampered = data["files"]
    assert good["passed"] and not tampered["passed"] and data["passed"] is False
    assert [p["path"] for p in good["paths"]] == ["fused", "fast", "reference"]
    fast = next(p for p in tampered["paths"] if p["path"] == "fast")
    assert fast["first_failure"] == "block2_add"
    row = next(r for r in fast["layers"] if r["layer"] == "block2_add")
    assert row["deviation"] > row["tolerance"] and not row["passed"]


def test_malformed_golden_section_is_refused_clearly(saved, tmp_path):
    path, _ = saved
    undeclared = _rewrite(path, tmp_path / "u.npz",
                          lambda a, m: a.update({golden_file.KEY_PREFIX + "extra": np.zeros(3)}))
    with pytest.raises(ValueError, match="unexpected weight '__golden__/extra'"):  # refused before reading
        npxception.load(undeclared)
    missing = _rewrite(path, tmp_path / "m.npz", lambda a, m: a.pop(golden_file.KEY_PREFIX + "block4_add/index"))
    with pytest.raises(ValueError, match="missing weight '__golden__/block4_add/index'"):
        npxception.load(missing)
    undeclared_by_golden = _rewrite(path, tmp_path / "g.npz", lambda a, m: (
        a.update({golden_file.KEY_PREFIX + "extra": np.zeros(3)}), m["reserved"].update({golden_file.KEY_PREFIX + "extra": [3]})))
    with pytest.raises(ValueError, match="golden array '__golden__/extra' is not declared"):
        npxception.load(undeclared_by_golden)
    orphan = _rewrite(path, tmp_path / "o.npz", lambda a, m: m.pop("golden"))
    with pytest.raises(ValueError, match="declares no golden case"):
        npxception.load(orphan)


def test_float64_file_is_checked_at_float64_tolerance(saved, tmp_path):
    _, model = saved
    path = model.astype("float64").save(tmp_path / "w64.npz")  # the golden carries over
    loaded = npxception.load(path)
    assert loaded.dtype == np.float64 and loaded.golden.tolerance("float64") == gold.RTOL["float64"]
    check = gold.run_path(loaded, loaded.golden, "fast")
    assert check.passed and check.worst.deviation < 1e-12  # float64 vs float64: summation order only


# ---- goldens from Keras, from convert, and in the ImageNet cache ---------------------

@pytest.fixture(scope="module")
def keras_backbone(tmp_path_factory):
    """A randomised Keras 3 backbone at 71x71, and its .keras archive."""
    import keras

    from keras_helpers import randomize

    kmodel = randomize(keras.applications.Xception(weights=None, include_top=False, pooling="avg",
                                                   input_shape=(SIZE, SIZE, 3)), seed=3)
    root = tmp_path_factory.mktemp("keras_golden")
    kmodel.save(root / "backbone.keras")
    return kmodel, root


def test_from_keras_golden_is_keras_own_output(keras_backbone, capsys):
    import keras

    from npxception.weights_tools import from_keras

    kmodel, root = keras_backbone
    model = from_keras(kmodel)
    path = model.save(root / "from_keras.npz")
    pool = model.head[0]["name"]  # Keras' name for it: global_average_pooling2d
    manifest, arrays = wfile.read(path)
    section = manifest["golden"]
    assert section["source"].startswith(f"keras {keras.__version__}: the Keras model") and section["precision"] == "float32"
    assert section["written_by"]["keras"] == keras.__version__
    assert list(section["layers"]) == gold.checked_layers(model)  # a top-level backbone: every layer
    assert list(section["layers"])[-1] == pool
    # Keras' numbers, not ours: the stored digest is Keras' output on the stored input. Keras
    # with oneDNN is not bit-reproducible between graphs (measured 2e-7 of max|x|), so 1e-6.
    x = gold.model_input(model, arrays[golden_file.INPUT_KEY])
    theirs = np.asarray(kmodel(x, training=False), np.float64).ravel()
    np.testing.assert_allclose(arrays[f"{golden_file.KEY_PREFIX}{pool}/sample"],
                               theirs[arrays[f"{golden_file.KEY_PREFIX}{pool}/index"]],
                               rtol=0, atol=1e-6 * np.abs(theirs).max())
    code, out = _verify(capsys, path)
    assert code == 0, out
    assert "golden from keras" in out


def test_sequential_around_a_nested_backbone_digests_its_layers(keras_backbone):
    """Sequential([backbone, Dense]): the backbone (its pooling included) is a nested model, and
    its layers are digested from Keras like a top-level backbone's."""
    import keras

    from npxception.weights_tools import from_keras

    kmodel, _ = keras_backbone
    logits = keras.layers.Dense(4, name="logits")
    seq = keras.Sequential([keras.Input((SIZE, SIZE, 3)), kmodel, logits], name="seq")
    rng = np.random.default_rng(5)
    logits.set_weights([rng.normal(0, 0.05, (2048, 4)).astype(np.float32), rng.normal(0, 0.1, 4).astype(np.float32)])
    model = from_keras(seq)
    golden = gold.golden_for(model)
    assert golden.layers == gold.checked_layers(model) and golden.layers[-1] == "logits"
    assert "block5_add" in golden.layers and golden.source.startswith("keras ")
    # Keras' block5 sum, probed in the backbone itself: the tensor block6_sepconv1_act reads (the adds are unnamed)
    x = gold.model_input(model, golden.pixels)
    theirs = np.asarray(keras.Model(kmodel.inputs, kmodel.get_layer("block6_sepconv1_act").input)(x), np.float64)
    d = golden.digests[golden.layers.index("block5_add")]
    # oneDNN is not bit-reproducible between graphs (measured 2e-7 of max|x|), hence 1e-6
    np.testing.assert_allclose(d.sample, theirs.ravel()[d.index], rtol=0, atol=1e-6 * np.abs(theirs).max())
    assert gold.run_path(model, golden, "fast").passed


def test_convert_writes_a_golden_and_check_with_keras_records_keras(keras_backbone, tmp_path, capsys, monkeypatch):
    from npxception import weights_tools
    from npxception.weights_tools import ConversionError

    from npxception.weights_tools import keras_golden

    kmodel, root = keras_backbone
    src = root / "backbone.keras"
    plain, checked = tmp_path / "plain.npz", tmp_path / "checked.npz"
    assert cli(["convert", str(src), "-o", str(plain)]) == 0
    assert cli(["convert", str(src), "-o", str(checked), "--check-with-keras"]) == 0
    out = capsys.readouterr().out
    assert "golden test case: npxception float64 oracle" in out and "golden test case: keras" in out
    assert wfile.read(plain)[0]["golden"]["precision"] == "float64"
    assert wfile.read(checked)[0]["golden"]["source"].startswith("keras")
    code, out = _verify(capsys, plain, checked)
    assert code == 0, out

    # A conversion that disagrees with Keras is refused, and nothing is written. (The Keras
    # model is the one the archive was saved from: loading it again is tested above.)
    monkeypatch.setattr(keras_golden, "load_in_keras", lambda *a, **k: kmodel)
    real_read = weights_tools.read

    def misread(*args, **kwargs):
        model = real_read(*args, **kwargs)
        params = model.weights
        params["block8_sepconv3_bn/gamma"] = params["block8_sepconv3_bn/gamma"] * np.float32(1.01)
        return npxception.XceptionModel(params, variant=model.variant, head=model.head,
                                        input_shape=model.input_shape, source=model.source)

    monkeypatch.setattr(weights_tools, "read", misread)
    bad = tmp_path / "bad.npz"
    with pytest.raises(ConversionError, match=r"fails at layer block8_add.*npxception and Keras disagree"):
        weights_tools.convert(src, bad, check_with_keras=True)
    assert not bad.exists()


def test_imagenet_cache_conversion_carries_a_golden(tmp_path, monkeypatch, capsys):
    """The official no-top layout (a tf_keras save_weights .h5) through the cache: converted with a golden."""
    import tf_keras

    from keras_helpers import randomize
    from npxception import pretrained
    from npxception.download import file_hash

    official = pretrained.FILES[False]
    home = tmp_path / "home"
    h5 = home / "downloads" / official.fname
    h5.parent.mkdir(parents=True)
    randomize(tf_keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3)),
              seed=4).save_weights(str(h5))
    monkeypatch.setitem(pretrained.FILES, False, pretrained.WeightFile(official.fname, file_hash(h5, "md5")))
    monkeypatch.setenv("NPXCEPTION_HOME", str(home))
    monkeypatch.setenv("NPXCEPTION_OFFLINE", "1")  # the .h5 is cached: no network call
    model = npxception.Xception(weights="imagenet", include_top=False)
    npz = pretrained.imagenet_weights(include_top=False)
    manifest, _ = wfile.read(npz)
    assert manifest["golden"]["source"] == "npxception float64 oracle (impl='reference')"
    assert model.golden.pixels.shape == (1, SIZE, SIZE, 3)  # no fixed input size: 71x71
    assert gold.already_checked(gold.file_identity(npz), "float32")  # weights="imagenet" ran it
    assert model.source == f"imagenet ({npz})"  # converted here from the MD5-checked file (review 24, F7)
    code, out = _verify(capsys, npz)
    assert code == 0, out


def test_without_the_fast_path_the_check_runs_the_reference_ops(saved, tmp_path):
    """NUMBA_DISABLE_JIT=1 (kernels as slow Python): the load check uses the reference path instead."""
    import os
    import subprocess
    import sys

    path, _ = saved
    bad = _rewrite(path, tmp_path / "bad.npz", TAMPER["two layers swapped"][0])
    code = ("import sys, npxception\n"
            "npxception.load(sys.argv[1])\n"
            "try:\n    npxception.load(sys.argv[2])\nexcept ValueError as exc:\n    print(exc)\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(bad)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "fails at layer block6_add" in proc.stdout and "the reference ops, float32" in proc.stdout


@pytest.fixture(scope="module")
def map_bn_file(tmp_path_factory):
    """A file whose head has a batch_norm on the map (its epsilon is the manifest's): saved with its golden."""
    from npxception import architecture as arch
    from npxception import head_schema
    from npxception.network import XceptionModel
    from npxception.params import random_params

    head = [{"kind": "batch_norm", "name": "map_bn", "epsilon": 1e-3}] + head_schema.keras_head(True, classes=3)
    params = random_params(arch.backbone(arch.VARIANTS["keras"]), head, np.float32, 5)
    return XceptionModel(params, head=head, input_shape=(SIZE, SIZE, 3)).save(
        tmp_path_factory.mktemp("map_bn") / "bn.npz")


def _bad_epsilon(src, dst, epsilon):
    def edit(arrays, manifest):
        manifest["head"][0]["epsilon"] = epsilon
    bad = _rewrite(src, dst, edit)
    return bad, f"{bad}: the manifest's architecture is invalid (head[0] (map_bn): batch_norm epsilon must be a "


@pytest.mark.parametrize("epsilon", [-1.0, "abc", float("nan"), 1e308, 10**400, None, [1e-3]],
                         ids=["negative", "text", "nan", "beyond_float32", "int_beyond_float64", "null", "list"])
def test_a_bad_head_epsilon_is_refused_naming_the_file_and_step(map_bn_file, tmp_path, epsilon):
    bad, expected = _bad_epsilon(map_bn_file, tmp_path / "bad.npz", epsilon)
    with pytest.raises(ValueError, match="^" + re.escape(expected)) as info:
        npxception.load(bad)
    assert f"found {short_repr(epsilon)}" in str(info.value)


def test_verify_prints_a_files_error_and_goes_on_to_the_next(map_bn_file, tmp_path, capsys):
    """Its table needs checks that ran: a file refused (here by its head's epsilon) is one FAIL line
    with the reason, never a crash of verify's own (min() of no checks), and the next file is verified."""
    bad, expected = _bad_epsilon(map_bn_file, tmp_path / "bad.npz", -1.0)
    code, out = _verify(capsys, bad, map_bn_file)
    assert code == 1 and "min() arg" not in out, out
    assert f"{bad}: FAIL: {expected}" in out
    assert f"{map_bn_file}: golden from" in out and "ok: every path agrees with the golden" in out
    assert f"1 of 2 files failed: {bad}" in out
