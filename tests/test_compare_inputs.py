"""What ``npxception compare`` is handed: hostile Keras files, activation dumps, ONNX graphs and photo folders.

Every case here is a file an attacker (or an accident) can hand a user: it is refused
with one line naming the file and the offending thing, or read within a budget,
never run, never a hang or an allocation the file does not justify. Hostile
files run in a subprocess under ``RLIMIT_AS`` (a resource limit, not a timed
assertion), as in test_hostile.py.
"""

from __future__ import annotations

import io
import os
import pathlib
import re
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npxception import Xception
from npxception.compare import INPUT_KEY, compare
from test_hostile import LIMIT, assert_refused, run_limited


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Our model: 3 classes at 71x71 (the smallest Keras' constructor allows), random weights."""
    path = tmp_path_factory.mktemp("ours") / "small.npz"
    Xception(classes=3, input_shape=(71, 71, 3), seed=3).save(path)
    return path


# --------------------------------------------------------------------------- F1: code planted in a Keras file

@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """tf_keras files whose Lambda writes ``PWNED`` when it is rebuilt (its bytecode runs) and again when it is
    called (tf.io.write_file is in its graph, so a SavedModel's revived graph runs it too): a full-model .h5, a
    SavedModel directory, a weights-only .h5, a checkpoint directory (save_weights("ckdir/cp.ckpt") writes its
    checkpoint file) and a CheckpointManager's tf.train.Checkpoint(model=...), each with the model's
    config.json; and the same model in Keras 3, saved as model.save(dir, zipped=False)."""
    import keras
    import tensorflow as tf
    import tf_keras as k

    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"

    # no closure (Keras marshals the code, and its closure by value): the marker's path is in the source
    plant = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).write_text('code ran'), "
                 f"__import__('tensorflow').io.write_file({str(marker)!r}, 'graph ran'), t)[2]")

    inp = k.Input((71, 71, 3))
    x = k.layers.Lambda(plant, name="evil")(inp)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = k.Model(inp, k.layers.Dense(3, name="predictions")(x))
    model.save(root / "evil.h5")
    model.save(root / "sm", save_format="tf")
    model.save_weights(root / "weights.h5")
    model.save_weights(str(root / "ckdir" / "cp.ckpt"))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(root / "manager"), max_to_keep=1).save()
    (root / "config.json").write_text(model.to_json())

    inp = keras.Input((71, 71, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Lambda(plant, name="evil")(inp))
    keras.Model(inp, keras.layers.Dense(3, name="predictions")(x)).save(root / "k3_dir", zipped=False)
    if marker.exists():  # building and saving ran the Python function: the cases start from no marker
        marker.unlink()
    return root


@pytest.mark.parametrize("against", ["evil.h5", "sm"])
def test_compare_refuses_a_planted_lambda_before_keras(evil, small, against):
    """--weights skips the conversion of --against, so Keras opened the file: its Lambda ran (review 2 F1)."""
    # 8 GB of address space: enough for TensorFlow to import (under 1 GB it cannot), so that a Keras load of the
    # file would run the Lambda here; the refusal must come before any framework is imported
    out = run_limited("npxception.cli", "compare", "--weights", small, "--against", evil / against, limit=8 << 30)
    assert not (evil / "PWNED").exists(), "the planted code ran"
    assert_refused(out, str(evil / against), "evil (Lambda)")


# Every form convert reads that Keras rebuilds from a config: the file's own (Keras 3's unzipped directory) or
# the --config given with a checkpoint (its directory, a tf.train.Checkpoint's prefix)
PLANTED_FORMS = {"k3_dir": (None, "k3_dir"), "ckdir": ("config.json", "config.json"),
                 "manager": ("config.json", "config.json"), "manager/ckpt-1": ("config.json", "config.json")}


@pytest.mark.parametrize("against", PLANTED_FORMS)
def test_compare_and_check_with_keras_refuse_a_planted_lambda_in_every_form_before_keras(evil, small, against,
                                                                                          tmp_path, monkeypatch,
                                                                                          capsys):
    """compare --weights skips converting --against: the vetting refuses it, naming the file that holds the
    Lambda, under 8 GB of address space (enough for TensorFlow to import: a Keras load would run the Lambda
    here). convert --check-with-keras: its conversion refuses it, before Keras is asked for (in this process,
    with the framework import made to fail loudly), and nothing is written."""
    from npxception import keras_side
    from npxception.weights_tools.cli import main

    config, named = PLANTED_FORMS[against]
    given = ["--config", str(evil / config)] if config else []
    out = run_limited("npxception.cli", "compare", "--weights", small, "--against", evil / against, *given,
                      limit=8 << 30)
    assert not (evil / "PWNED").exists(), "the planted code ran"
    assert_refused(out, f"{evil / named}: refused before Keras opens it: unsupported layer evil (Lambda)")

    def no_framework(name):
        raise AssertionError(f"{name} was imported to open a file with a planted Lambda")
    monkeypatch.setattr(keras_side, "_import", no_framework)
    assert main(["convert", str(evil / against), "-o", str(tmp_path / "out.npz"), "--check-with-keras", *given]) == 1
    err = capsys.readouterr().err
    assert f"{evil / against}: unsupported layer evil (Lambda)" in err, err  # the converter's refusal
    assert not (evil / "PWNED").exists(), "the planted code ran"
    assert not list(tmp_path.glob("out.npz*"))


def test_a_config_is_vetted_too(evil):
    """A weights-only file's --config is rebuilt by Keras (compare, convert --check-with-keras): vetted as well."""
    from npxception.weights_tools.vetting import open_in_keras

    with pytest.raises(ValueError, match=r"config\.json: refused before Keras opens it: unsupported layer "
                                         r"evil \(Lambda\)"):
        open_in_keras(evil / "weights.h5", config=evil / "config.json")
    assert not (evil / "PWNED").exists(), "the planted code ran"


@pytest.mark.parametrize("against", ["evil.h5", "sm"])
def test_keras_opens_files_in_safe_mode(evil, against, monkeypatch):
    """Should the vetting miss a layer, the framework's safe mode still refuses the lambda, and a SavedModel
    is rebuilt from its config, never revived from its stored graph (which would call tf.io.write_file)."""
    from npxception.weights_tools import vetting

    from npxception import keras_side

    monkeypatch.setattr(vetting, "check_layers", lambda klayers, source: None)
    with pytest.raises(ValueError, match="Lambda"):
        kmodel = keras_side.load(evil / against)
        kmodel(np.zeros((1, 71, 71, 3), "float32"))  # a revived graph would run here
    assert not (evil / "PWNED").exists(), "the planted code ran"


# --------------------------------------------------------------------------- shared by the cases below

def run_capped(*args, limit=LIMIT, cpu=60):
    """The CLI in a child process under RLIMIT_AS and RLIMIT_CPU (tests/limited_runner.py: forked from a server
    that imported the CLI once, with the state, limits and captured output of a fresh ``python -c``): a loop that
    never ends is killed by the kernel (SIGXCPU, a non-1 exit status) after ``cpu`` seconds of CPU, a resource
    limit rather than a timed assertion."""
    return run_limited("npxception.cli", *args, limit=limit, cpu=cpu)


def _header(shape, dtype="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


# --------------------------------------------------------------------------- F4: activation dumps

@pytest.fixture(scope="module")
def dump(small):
    """Our own activations on a batch of one, as a dump of them (the input under __input__)."""
    import npxception

    model = npxception.load(small)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 71, 71, 3)).astype(np.float32)
    _, acts = model.forward(x, capture="all")
    return model, {**acts, INPUT_KEY: x}


def test_a_compressed_dump_is_read_and_a_header_beyond_our_layer_is_refused(small, dump, tmp_path):
    """np.savez_compressed's dump compares; the same dump whose block1_conv1 header declares a billion values
    (1 kB of data behind it) is refused before a byte of it is read, naming the entry and our layer."""
    model, acts = dump
    np.savez_compressed(tmp_path / "ok.npz", **acts)
    report = compare(model, tmp_path / "ok.npz")
    assert report.first_divergence is None and report.complete, str(report)

    with zipfile.ZipFile(tmp_path / "ok.npz") as src, zipfile.ZipFile(tmp_path / "lying.npz", "w") as z:
        for name in src.namelist():
            data = src.read(name)
            z.writestr(name, _header((1, 35, 35, 10**6)) + b"\0" * 1024 if name == "block1_conv1.npy" else data)
    out = run_limited("npxception.cli", "compare", "--weights", small, "--against", tmp_path / "lying.npz")
    assert_refused(out, str(tmp_path / "lying.npz"), "entry 'block1_conv1' declares shape (1, 35, 35, 1000000)",
                   "our block1_conv1 holds 39,200 per image at 71x71")


def test_a_zip_bomb_dump_is_refused_before_inflating(small, tmp_path):
    """64 MiB of zeros deflated to 64 kB: refused by its declared size against the file's, never inflated."""
    path = tmp_path / "bomb.npz"
    n = 16 << 20
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("block1_conv1.npy", "w", force_zip64=True) as f:
            f.write(_header((n,)))
            chunk = b"\0" * (16 << 20)
            for _ in range(n * 4 // len(chunk)):
                f.write(chunk)
    assert path.stat().st_size < (1 << 20)
    out = run_limited("npxception.cli", "compare", "--weights", small, "--against", path)
    assert_refused(out, str(path), "entry 'block1_conv1'", f"{n * 4:,} bytes", "a zip bomb?")


def test_a_dump_naming_an_entry_twice_is_refused(small, dump, tmp_path):
    """The zip directory lists block1_conv1 twice (each read would cost its size again): refused by name."""
    model, acts = dump
    path = tmp_path / "twice.npz"
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name", and writes it
        for name in ("block1_conv1", "block1_conv1", INPUT_KEY):
            buf = io.BytesIO()
            np.save(buf, acts[name])
            z.writestr(f"{name}.npy", buf.getvalue())
    with pytest.raises(ValueError, match=f"{path}: entry 'block1_conv1' appears twice"):
        compare(model, path)



def test_a_dump_entry_matching_no_layer_is_listed_never_read(small, dump, tmp_path):
    """Review 23 F2: an entry named after none of our layers was inflated in full (2.24 GB declared in a 50 MB
    dump: MemoryError) though compare never uses it. Here its data is cut short, so reading it fails: it is
    listed as theirs only, from its name and header, and the rest compares; the same data under a layer's
    name is read, and refused as truncated, which shows the header alone decided."""
    model, acts = dump

    def with_entry(path, name):
        with zipfile.ZipFile(path, "w") as z:
            for key in ("block1_conv1", INPUT_KEY):
                buf = io.BytesIO()
                np.save(buf, acts[key])
                z.writestr(f"{key}.npy", buf.getvalue())
            z.writestr(f"{name}.npy", _header((1, 35, 35, 32)) + b"\0" * 10)
        return path

    report = compare(model, with_entry(tmp_path / "junk.npz", "junk"))
    assert report.theirs_only == ["junk"] and report.first_divergence is None, str(report)
    with pytest.raises(ValueError, match="block1_conv1_bn"):
        compare(model, with_entry(tmp_path / "bn.npz", "block1_conv1_bn"))


def test_a_dump_entry_of_shape_nothing_under_a_layer_name_is_refused(small, dump, tmp_path):
    """Review 23 F6: a single number under our layer's name was "tuple index out of range"."""
    model, acts = dump
    path = tmp_path / "scalar.npz"
    np.savez(path, **{**acts, "block1_conv1_bn": np.float32(1.0)})
    with pytest.raises(ValueError, match=f"{path}: entry 'block1_conv1_bn' has shape \\(\\), a single number; "
                                         "expected our block1_conv1_bn's activations, a batch \\(N, ...\\) of them"):
        compare(model, path)


def test_a_big_endian_dump_compares_as_its_little_endian_twin(small, dump, tmp_path):
    """Review 23 F3: '>f4' arrays hold valid values, and reached the compiled error measures as they were
    (a Numba typing failure naming no file); read in native order, the report is the little-endian one's,
    the same for a dict of them."""
    model, acts = dump
    np.savez(tmp_path / "little.npz", **acts)
    np.savez(tmp_path / "big.npz", **{k: v.astype(v.dtype.newbyteorder(">")) for k, v in acts.items()})
    little = compare(model, tmp_path / "little.npz")
    for other in (tmp_path / "big.npz", dict(np.load(tmp_path / "big.npz"))):
        big = compare(model, other)
        assert big.rows == little.rows and big.first_divergence is None, str(big)


def test_a_names_map_is_read_within_the_configs_limits(tmp_path):
    """Review 23 F5: --names MAP.json was json.loads(path.read_text()): 100,000 levels deep was Python's
    "maximum recursion depth exceeded" naming no file, and 600 MB of whitespace parsed at 1.41 GB. It is read
    as a config is (8 MiB, checked on its size before reading; nesting a clear error naming the file)."""
    from npxception.compare.names import resolve_names

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match=f"^{deep}: not a readable JSON object \\(the JSON is nested too deeply"):
        resolve_names(deep, ["block1_conv1"])
    big = tmp_path / "big.json"
    with open(big, "wb") as f:  # sparse: refused by its size before a byte is read
        f.truncate(8 * 1024**2 + 1)
    with pytest.raises(ValueError, match=f"^{big}: 8,388,609 bytes, over the 8,388,608-byte limit: a names map"):
        resolve_names(big, ["block1_conv1"])
    fine = tmp_path / "fine.json"
    fine.write_text('{"conv1": "block1_conv1"}')
    assert resolve_names(fine, ["block1_conv1"]) == {"conv1": "block1_conv1"}


def test_a_dump_input_holding_nan_is_named(small, dump, tmp_path):
    """Review 23 F6: a NaN in the dump's __input__ was "x: contains NaN or Inf", naming neither file nor entry."""
    model, acts = dump
    x = acts[INPUT_KEY].copy()
    x[0, 3, 4, 1] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, **{**acts, INPUT_KEY: x})
    with pytest.raises(ValueError, match=f"^{path}: entry '__input__' contains NaN or Inf; expected the finite"):
        compare(model, path)


def test_our_overflow_on_a_dumps_finite_input_names_the_dump(small, dump, tmp_path):
    """Review 23 F9: a finite __input__ of 3e38 made our side compute NaN, with NumPy's RuntimeWarning lines
    quoting our source; it is the ActivationOverflow predict raises, naming the dump's input, and no warning."""
    from npxception import ActivationOverflow

    model, acts = dump
    path = tmp_path / "huge.npz"
    np.savez(path, **{**acts, INPUT_KEY: np.full_like(acts[INPUT_KEY], 3e38)})
    with warnings.catch_warnings(), pytest.raises(ActivationOverflow, match=f"^model: {path}'s '__input__' image 0: "
                                                  "the output is NaN or Inf: activations overflowed"):
        warnings.simplefilter("error", RuntimeWarning)
        compare(model, path)

# --------------------------------------------------------------------------- F5: a folder of photos

def test_compare_streams_a_folder_of_photos(small, tmp_path, monkeypatch, capsys):
    """compare --image DIR decodes photos batch by batch, as predict does: at most 8 decoded at once
    (a folder of 1000 photos held whole took +4 GB), and all of them are summarised."""
    import weakref

    from PIL import Image

    import npxception
    from npxception import cli, prediction
    from onnx_port import build

    build(npxception.load(small), tmp_path / "port.onnx")
    (tmp_path / "photos").mkdir()
    rng = np.random.default_rng(1)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{i:02}.png")
    alive, most = set(), [0]
    real = prediction.load_image  # compare reads photos through prediction.load_photo, as predict sizes them

    def counted(path, **kw):
        pixels = real(path, **kw)
        alive.add(id(pixels))
        weakref.finalize(pixels, alive.discard, id(pixels))
        most[0] = max(most[0], len(alive))
        return pixels

    monkeypatch.setattr(prediction, "load_image", counted)
    args = ["compare", "--weights", str(small), "--against", str(tmp_path / "port.onnx"), "--layout", "NCHW",
            "--port", "timm.legacy_xception", "--image", str(tmp_path / "photos")]
    assert cli.main(args) == 3  # timm's conventions (BN epsilon, logits) differ from ours
    assert "predictions: 20 image(s): top-1 agreement" in capsys.readouterr().out
    assert most[0] <= 8, f"{most[0]} decoded photos held at once"  # predict's batch (compare_cli.BATCH_SIZE)


def test_compare_reads_a_folder_as_predict_does(tmp_path):
    """A folder gives compare the files predict would label: every suffix Pillow registers for the formats
    npxception decodes (``images.image_suffixes()``: ``.ppm``, ``.jfif``...), not a list of its own."""
    from PIL import Image

    from npxception.compare.cli import image_paths
    from npxception.images import image_suffixes
    from npxception.prediction import expand

    (tmp_path / "photos").mkdir()
    pixels = np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photos" / "a.ppm")
    Image.fromarray(pixels).save(tmp_path / "photos" / "b.jfif", format="JPEG")
    (tmp_path / "photos" / "notes.txt").write_text("not a photo")
    found = image_paths([tmp_path / "photos"])
    assert [p.name for p in found] == ["a.ppm", "b.jfif"]
    assert [str(p) for p in found] == expand([tmp_path / "photos"]).files
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files") as err:
        image_paths([tmp_path / "empty"])
    assert all(s in str(err.value) for s in image_suffixes())


# --------------------------------------------------------------------------- F8: ONNX graphs

def _onnx(path, nodes, inits=(), extra_inits=()):
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    graph = h.make_graph(list(nodes), "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 71, 71, 3])],
                         [h.make_tensor_value_info("predictions", T.FLOAT, [1, 3])],
                         initializer=list(inits) + list(extra_inits))
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), path)
    return path


def test_an_onnx_loop_is_refused_before_it_runs(small, tmp_path):
    """The reviewer's graph: a Loop of 10^15 iterations feeding the output ran for ever; it is refused by node,
    before onnxruntime sees it (the CPU limit turns a hang into a kill, which fails the test)."""
    from onnx import TensorProto as T
    from onnx import helper as h

    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]), h.make_node("Add", ["v_in", "one"], ["v_out"])],
        "body", [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
                 h.make_tensor_value_info("v_in", T.FLOAT, [1, 3])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("v_out", T.FLOAT, [1, 3])],
        initializer=[h.make_tensor("one", T.FLOAT, [1], [1.0])])
    path = _onnx(tmp_path / "loop.onnx",
                 [h.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2], keepdims=0, name="mean"),
                  h.make_node("Loop", ["trip", "cond", "m"], ["predictions"], body=body, name="forever")],
                 [h.make_tensor("trip", T.INT64, [], [10**15]), h.make_tensor("cond", T.BOOL, [], [True])])
    out = run_capped("compare", "--weights", small, "--against", path)
    assert_refused(out, str(path), "node 'forever' is a Loop operator", "control flow")


@pytest.mark.parametrize("name, scopes, message", [
    ("/" + "a/" * 40_000 + "Relu_output_0", None, "80,014 characters in 1 ';'-joined segments; an export's names are "
     "at most 4,096 characters in 64 segments"),
    ("/" + "a/" * 40 + "Relu_output_0", None, "a scope path 94 characters long of 42 scopes and modules"),
    ("/" + "a" * 1_000 + "/Relu_output_0", None, "a scope path 1,015 characters long of 3 scopes and modules ('/', "
     "':' and '.'-separated); an export's are at most 32 deep and a torch module path at most 512 characters long"),
    # review 18: 180 modules in a 378-character name, which the '/' count alone let through
    ("/" + ".".join(["r"] * 180) + "/Relu_output_0", None, "374 characters long of 182 scopes and modules"),
    # review 18: TFLite-style ';'-joined names, each segment a list once split (40 M ';' took 1 GB)
    (";" * 3_000, None, "3,000 characters in 3,001 ';'-joined segments"),
    (";".join(["a"] * 65), None, "129 characters in 65 ';'-joined segments"),
    ("relu_out", ["", *(".".join(["a"] * k) for k in range(1, 41)), "relu"],
     "node 'relu''s pkg.torch.onnx.name_scopes is 1,772 characters long; a torch export's lists at most 32 module "
     "paths of at most 512 characters and 32 modules: refused before reading it"),
    ("relu_out", ["", ".".join(["a"] * 40), "relu"], "pkg.torch.onnx.name_scopes is 95 characters long"),
], ids=["long", "deep", "long-scoped", "dotted", "semicolons", "segments", "metadata", "metadata-dotted"])
def test_an_onnx_module_path_deeper_or_longer_than_any_export_is_refused(small, tmp_path, name, scopes, message):
    """Reviewer 14 F2: splitting a torch-style name into every enclosing module path cost depth x length (40,000
    scopes in 160 kB: MemoryError at 3.3 GB; 4,000 ran past 1,200 s), and finding their common root a pass per
    level: refused by node, with the caps, before; the dynamo exporter's name_scopes metadata too."""
    from onnx import helper as h

    relu = h.make_node("Relu", ["x"], [name], name="relu")
    if scopes is not None:
        relu.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=str(scopes))
    path = _onnx(tmp_path / "deep.onnx", [relu, h.make_node("ReduceMean", [name], ["predictions"], axes=[1, 2],
                                                            keepdims=0, name="mean")])
    out = run_capped("compare", "--weights", small, "--against", path)
    assert_refused(out, str(path), "node 'relu'", message)


def test_onnx_names_longer_in_total_than_any_export_are_refused(small, tmp_path):
    """Each name within its caps, but together more than any export's (4 M characters: 2,100 nodes of 2,000):
    the splitting of all of them is refused before it starts (review 18)."""
    from onnx import helper as h

    names = [f"n{i:05d}" + "a" * 1_994 for i in range(2_100)]
    nodes = [h.make_node("Relu", [a], [b], name=f"r{i}") for i, (a, b) in enumerate(zip(["x", *names], names))]
    path = _onnx(tmp_path / "names.onnx", [*nodes, h.make_node("ReduceMean", [names[-1]], ["predictions"],
                                                                 axes=[1, 2], keepdims=0, name="mean")])
    out = run_capped("compare", "--weights", small, "--against", path)
    assert_refused(out, str(path), "its nodes' names total more than 4,194,304 characters (at node 'r1048')")




def _counted(kind):
    """Review 23 F1: graphs whose lists are each one item over this reader's caps (the review's were 20 M empty
    inputs, 2 M initializers, 50 M ints, 300 MB of metadata: GBs once parsed by every reader after ours). The counts
    are written out, as the caps in compare/inputs.py give them."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    nodes = [h.make_node("ReduceMean", ["x"], ["predictions"], axes=[1, 2], keepdims=0, name="mean")]
    inits, model_meta = [], {}
    if kind == "inputs":  # empty names cost nothing in the name budget
        nodes.append(h.make_node("Sum", ["predictions"] + [""] * 64, ["junk"]))
    elif kind == "initializers":
        inits = [h.make_tensor(f"i{k}", T.FLOAT, [], [0.0]) for k in range(10_001)]
    elif kind == "attributes":
        nodes.append(h.make_node("Identity", ["predictions"], ["junk"],
                                 **{f"a{k}": 1 for k in range(65)}))
    elif kind == "attribute values":
        nodes.append(h.make_node("Identity", ["predictions"], ["junk"], junk=[1] * (4_097)))
    elif kind == "metadata":
        model_meta = {"junk": "a" * (16 << 20)}
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 71, 71, 3])],
                         [h.make_tensor_value_info("predictions", T.FLOAT, [1, 3])], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    onnx.helper.set_model_props(model, model_meta)
    if kind == "items":  # 2^20 empty opset_import entries appended to the protobuf: a list no other cap names
        return model.SerializeToString() + b"\x42\x00" * (1 << 20)  # field 8, length-delimited, empty
    return model


@pytest.mark.parametrize("kind, message", [
    ("inputs", "node #1 has more than 64 input entries; an Xception export's nodes take at most 5, and this reader "
     "takes at most 64"),
    ("initializers", "its graph has more than 10,000 initializer entries"),
    ("attributes", "node #1 has more than 64 attribute entries"),
    ("attribute values", "an attribute of node #1 has more than 4,096 ints entries; an Xception export's attributes "
     "hold at most 4 (a window's pads), and this reader takes at most 4,096"),
    ("items", "its protobuf holds more than 1,048,576 items in all"),
    ("metadata", "its doc_string and metadata_props text totals more than 16,777,216 characters"),
])
def test_onnx_lists_longer_than_any_export_are_refused_by_count(tmp_path, monkeypatch, kind, message):
    """Each refused from its count in the protobuf's wire format, before the file is parsed (the parser is
    replaced by one that fails the test)."""
    import onnx

    from npxception.compare.inputs import load_onnx

    path = tmp_path / "counted.onnx"
    model = _counted(kind)
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    monkeypatch.setattr(onnx, "load_model_from_string", lambda data: pytest.fail("parsed before the counts"))
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_onnx(path)
    assert str(info.value).startswith(f"{path}: {message}"), info.value


@settings(max_examples=200)
@given(data=st.data())
def test_a_damaged_onnx_protobuf_is_refused_by_its_count_scan_as_unreadable(data):
    """The wire-format scan meets every byte of the file before the parser does: a valid model's bytes cut short,
    overwritten or spliced give the scan's own one-line refusal naming the file, or pass it (the bytes still
    read as a protobuf), and never another exception (an IndexError past the end, a KeyError on a field)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    from npxception.compare.inputs import _check_counts

    sub = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "sub", [], [h.make_tensor_value_info("y", T.FLOAT, [1])])
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[0, 0, 1, 1], name="conv"),
             h.make_node("If", ["cond"], ["predictions"], then_branch=sub, else_branch=sub, name="if")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                         [h.make_tensor_value_info("predictions", T.FLOAT, [1, 3])],
                         initializer=[h.make_tensor("w", T.FLOAT, [3, 3, 1, 1], [0.5] * 9)])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)], doc_string="d")
    onnx.helper.set_model_props(model, {"k": "v"})
    valid = model.SerializeToString()
    _check_counts(valid, "m.onnx")  # the undamaged model passes
    cut = data.draw(st.integers(0, len(valid) - 1), label="cut at")
    damaged = data.draw(st.sampled_from([
        valid[:cut],
        valid[:cut] + bytes([data.draw(st.integers(0, 255), label="byte")]) + valid[cut + 1:],
        valid[:cut] + data.draw(st.binary(min_size=1, max_size=12), label="spliced") + valid[cut:],
    ]), label="damage")
    try:
        _check_counts(damaged, "m.onnx")
    except ValueError as exc:
        assert str(exc).startswith("m.onnx: ") and "\n" not in str(exc), exc


def test_onnx_empty_inputs_are_refused_in_the_cli_under_a_memory_limit(small, tmp_path):
    """The review's repro through the CLI: one line naming the file and the count, not a shape error."""
    import onnx

    path = tmp_path / "sum.onnx"
    onnx.save(_counted("inputs"), path)
    out = run_capped("compare", "--weights", small, "--against", path)
    assert_refused(out, str(path), "node #1 has more than 64 input entries")


def test_an_onnx_graph_without_outputs_is_refused_by_name(tmp_path):
    """Review 23 F6: a graph declaring no output was "list index out of range"."""
    import onnx

    from npxception.compare.inputs import load_onnx

    model = _counted("none")
    del model.graph.output[:]
    path = tmp_path / "no_output.onnx"
    onnx.save(model, path)
    with pytest.raises(ValueError, match=f"^{path}: its graph declares no output; an exported model declares"):
        load_onnx(path)


def test_an_onnx_initializer_named_twice_is_refused(tmp_path):
    """Review 23 F9: two initializers of one name (invalid ONNX) were read, onnxruntime taking the first and
    compare's weight reader (their_convs) the last."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    from npxception.compare.inputs import load_onnx

    model = _counted("none")
    model.graph.initializer.extend([h.make_tensor("w", T.FLOAT, [1], [1.0]), h.make_tensor("w", T.FLOAT, [1], [2.0])])
    path = tmp_path / "twice.onnx"
    onnx.save(model, path)
    with pytest.raises(ValueError, match=f"^{path}: initializer 'w' appears twice; an ONNX graph names each"):
        load_onnx(path)



def test_onnx_external_data_and_foreign_operators_are_refused(dump, tmp_path):
    """A tensor stored in another file (onnxruntime would read whatever path it names) and an operator of
    another domain are refused by name; an ONNX file as a FIFO is named, never opened for reading."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    model, _ = dump
    mean = h.make_node("ReduceMean", ["x"], ["predictions"], axes=[1, 2], keepdims=0, name="mean")
    outside = onnx.TensorProto(name="w", data_type=T.FLOAT, dims=[16], data_location=T.EXTERNAL)
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "64")):
        entry = outside.external_data.add()
        entry.key, entry.value = key, value
    path = _onnx(tmp_path / "outside.onnx", [mean], [outside])
    with pytest.raises(ValueError, match=f"{path}: tensor 'w' is stored outside the file"):
        compare(model, path, np.zeros((1, 71, 71, 3), np.float32))
    path = _onnx(tmp_path / "custom.onnx", [h.make_node("Evil", ["x"], ["predictions"], domain="com.example",
                                                        name="plugin")])
    with pytest.raises(ValueError, match=r"node 'plugin' is a com\.example\.Evil operator"):
        compare(model, path, np.zeros((1, 71, 71, 3), np.float32))
    # review 18: an attribute's tensors list (not only its single tensor) and a subgraph attribute, on an
    # operator compare runs (onnxruntime may read or ignore an attribute the operator does not take)
    stray = h.make_node("Identity", ["x"], ["y"], name="stray")
    stray.attribute.append(onnx.AttributeProto(name="pad", type=onnx.AttributeProto.TENSORS, tensors=[outside]))
    path = _onnx(tmp_path / "tensors.onnx", [stray, mean])
    with pytest.raises(ValueError, match=f"{path}: tensor 'w' is stored outside the file"):
        compare(model, path, np.zeros((1, 71, 71, 3), np.float32))
    sub = h.make_graph([], "sub", [], [], initializer=[outside])
    stray = h.make_node("Identity", ["x"], ["y"], name="stray")
    stray.attribute.append(onnx.AttributeProto(name="body", type=onnx.AttributeProto.GRAPHS, graphs=[sub]))
    path = _onnx(tmp_path / "graphs.onnx", [stray, mean])
    with pytest.raises(ValueError, match=f"{path}: node 'stray''s attribute 'body' holds a subgraph"):
        compare(model, path, np.zeros((1, 71, 71, 3), np.float32))


def _work_graph(path, kind):
    """Review 6's F2 graphs, made only of allowed operators and far under MAX_ONNX_NODES, for a 71x71 input:

    * ``resize``: one Resize by 300, 250 bytes asking onnxruntime for 1.4 G values (5.4 GB);
    * ``conv``: a Conv 3->512 then 9,997 1x1 Conv 512->512 sharing one weight (1 MB): 1.4 T multiply-adds,
      far beyond the CPU limit (onnxruntime's ~25 G/s on this machine);
    * ``sparse``: a sparse initializer declaring 5e8 values, which onnxruntime densified (4 GB) on loading.

    Each starts with a tensor named like our block1_conv1, so compare finds a layer in common and runs it."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    nodes, inits, sparse = [h.make_node("Transpose", ["x"], ["block1_conv1"], perm=[0, 3, 1, 2])], [], []
    if kind == "resize":
        inits.append(nh.from_array(np.array([1, 1, 300, 300], np.float32), "scales"))
        nodes.append(h.make_node("Resize", ["block1_conv1", "", "scales"], ["big"], mode="nearest", name="zoom"))
        last = "big"
    elif kind == "conv":
        rng = np.random.default_rng(0)
        inits.append(nh.from_array((rng.standard_normal((512, 3, 3, 3)) * 0.1).astype(np.float32), "w0"))
        inits.append(nh.from_array((rng.standard_normal((512, 512, 1, 1)) / 23).astype(np.float32), "w"))
        nodes.append(h.make_node("Conv", ["block1_conv1", "w0"], ["t0"], strides=[3, 3], kernel_shape=[3, 3]))
        nodes += [h.make_node("Conv", [f"t{i - 1}", "w"], [f"t{i}"], kernel_shape=[1, 1], name=f"conv{i}")
                  for i in range(1, 9_998)]
        last = "t9997"
    else:
        sparse.append(h.make_sparse_tensor(nh.from_array(np.ones(1, np.float32), "s"),
                                           nh.from_array(np.zeros(1, np.int64), "s_idx"), [500_000_000]))
        nodes.append(h.make_node("Identity", ["s"], ["big"], name="dense"))
        last = "block1_conv1"
    nodes.append(h.make_node("ReduceMean", [last], ["predictions"], axes=[2, 3], keepdims=0))
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 71, 71, 3])],
                         [h.make_tensor_value_info("predictions", T.FLOAT, None)], inits, sparse_initializer=sparse)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("resize", "node 'zoom', a Resize, makes 'big' of shape (1, 3, 21300, 21300), 1,361,070,000 values, for a "
               "1x71x71x3 input; more than the"),
    ("conv", "its convolutions, products and pools up to node 'conv16', a Conv, ask for"),
    ("sparse", "tensor 's' is sparse"),
])
def test_the_work_an_onnx_graph_asks_is_bounded_before_it_runs(small, tmp_path, kind, message):
    """Review 6 F2: an allowed-operator graph asked onnxruntime for 3.9 GB (a 250-byte Resize) or hours of
    convolutions; each is refused by node, from its inferred shapes, before onnxruntime loads it. Under
    RLIMIT_AS (1 GiB) and RLIMIT_CPU (60 s): without the bound the Resize and the sparse tensor fail inside
    onnxruntime with its own message, and the convolutions are killed."""
    path = _work_graph(tmp_path / f"{kind}.onnx", kind)
    out = run_capped("compare", "--weights", small, "--against", path)
    assert_refused(out, str(path), message, *(["refused before running it"] if kind != "sparse" else []))
    assert "ONNXRuntimeError" not in out.stderr and ":onnxruntime" not in out.stderr, out.stderr  # never loaded


def test_a_valid_onnx_port_still_compares_under_the_same_limits(small, tmp_path):
    """Under the CPU limit of the hostile graphs above, a whole PyTorch-convention port at 71x71 passes the
    bound, runs and is reported (exit 1: timm's BN epsilon and logits differ from ours), and onnxruntime's own
    log stays quiet. 2 GiB of address space: the session holds the file's 83 MB of weights three times (the
    model, its serialisation, onnxruntime's copy); it ran in 1.5 GiB, 770 MB peak RSS."""
    import npxception
    from onnx_port import build

    build(npxception.load(small), tmp_path / "port.onnx")
    out = run_capped("compare", "--weights", small, "--against", tmp_path / "port.onnx", "--layout", "NCHW",
                     "--port", "timm.legacy_xception", limit=2 << 30)
    assert out.returncode == 3, out.stderr[-3000:]  # it ran, and the ports differ
    assert "block14_sepconv2_act" in out.stdout and "error" not in out.stderr, out.stdout[-2000:] + out.stderr


def test_onnx_sizes_set_by_values_must_follow_from_the_input_shape(dump, tmp_path):
    """A Resize whose output size is computed from the input's values (its largest pixel) has a shape no
    inference can know before the run: refused, naming the node; a Pad of 5,000 and a Concat of 2,000 copies
    by their tensor's size; and 300 Resizes by 3 (each within the one-tensor bound) feeding one Sum, all
    alive at once, by their total."""
    from onnx import TensorProto as T
    from onnx import helper as h

    model, acts = dump
    x = acts[INPUT_KEY]
    ident = h.make_node("Transpose", ["x"], ["block1_conv1"], perm=[0, 3, 1, 2])
    mean = h.make_node("ReduceMean", ["big"], ["predictions"], axes=[2, 3], keepdims=0)
    by_value = [ident, h.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
                h.make_node("Cast", ["m"], ["n"], to=T.INT64),
                h.make_node("Unsqueeze", ["n", "axis0"], ["n1"]),
                h.make_node("Concat", ["head", "n1", "n1"], ["sizes"], axis=0),
                h.make_node("Resize", ["block1_conv1", "", "", "sizes"], ["big"], mode="nearest", name="by_value"),
                mean]
    path = _onnx(tmp_path / "by_value.onnx", by_value,
                 [h.make_tensor("axis0", T.INT64, [1], [0]), h.make_tensor("head", T.INT64, [2], [1, 3])])
    with pytest.raises(ValueError, match=f"{path}: the shape of 'big', output of node 'by_value', a Resize, "
                                         "does not follow from a 1x71x71x3 input"):
        compare(model, path, x)
    for op, node, inits in (  # sizes set by values in the file: one tensor's bound, as the Resize above
            ("Pad", h.make_node("Pad", ["block1_conv1", "pads"], ["big"], name="grow"),
             [h.make_tensor("pads", T.INT64, [8], [0, 0, 5000, 5000, 0, 0, 5000, 5000])]),
            ("Concat", h.make_node("Concat", ["block1_conv1"] * 64, ["big"], axis=1, name="grow"), [])):  # 64: a node's cap
        path = _onnx(tmp_path / f"{op}.onnx", [ident, node, mean], inits)
        with pytest.raises(ValueError, match=f"{path}: node 'grow', a {op}, makes 'big' of shape"):
            compare(model, path, x)
    many = [ident, *(h.make_node("Resize", ["block1_conv1", "", "scales"], [f"r{i}"], mode="nearest")
                     for i in range(300)),  # summed 60 at a time: a node takes at most 64 inputs
            *(h.make_node("Sum", [f"r{i}" for i in range(j, j + 60)], [f"s{j}"]) for j in range(0, 300, 60)),
            h.make_node("Sum", [f"s{j}" for j in range(0, 300, 60)], ["big"]), mean]
    path = _onnx(tmp_path / "many.onnx", many, [h.make_tensor("scales", T.FLOAT, [4], [1, 1, 3, 3])])
    with pytest.raises(ValueError, match=r"its tensors hold 41,6\d\d,\d{3} values in all for a 1x71x71x3 input"):
        compare(model, path, x)


def test_an_onnx_run_past_its_deadline_is_stopped(dump, tmp_path, monkeypatch):
    """The backstop should onnxruntime do more than the shapes say: the run's deadline (from the multiply-add
    budget) sets RunOptions.terminate, and the run stops with one line saying why. The timer here fires at
    once (no timed assertion): a graph that fits its budget is stopped all the same."""
    import threading

    from onnx import helper as h

    model, acts = dump
    path = _onnx(tmp_path / "slow.onnx", [h.make_node("Transpose", ["x"], ["block1_conv1"], perm=[0, 3, 1, 2]),
                                          h.make_node("ReduceMean", ["block1_conv1"], ["predictions"], axes=[2, 3],
                                                      keepdims=0)])

    class AtOnce(threading.Timer):
        def start(self):
            self.function(*self.args)

    monkeypatch.setattr("npxception.compare.onnx_side.threading.Timer", AtOnce)
    with pytest.raises(ValueError, match=rf"{path}: onnxruntime ran longer than 62 s, the time the work its "
                                         r"graph declares for a \(1, 71, 71, 3\) input allows"):
        compare(model, path, acts[INPUT_KEY])


# --------------------------------------------------------------------------- F9: what --against is

@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_against_a_fifo_or_a_device_says_what_it_is(small, tmp_path, capsys, kind):
    """A FIFO and /dev/zero were both "no such file"; each is named for what it is, and nothing waits on it."""
    from npxception import cli

    if kind == "fifo":
        path = tmp_path / "cat.npz"
        os.mkfifo(path)
    else:
        path = pathlib.Path("/dev/zero")
    assert cli.main(["compare", "--weights", str(small), "--against", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: is {'a FIFO (named pipe)' if kind == 'fifo' else 'a character device'}" in err, err
    assert "expected a .keras, .h5, .onnx or .npz file" in err


def test_irregular_photos_and_savedmodel_files_say_what_they_are(small, dump, tmp_path, capsys):
    """Review 23 F7: `compare --image` given a FIFO or a symlink to /dev/zero said "no such file or folder", and
    in a SavedModel directory an irregular keras_metadata.pb or saved_model.pb was described as missing. Each is
    named for what it is (nothing waits on the FIFO)."""
    from npxception import cli
    from npxception.weights_tools.errors import ConversionError
    from npxception.weights_tools.formats import detect_format

    model, acts = dump
    np.savez(tmp_path / "d.npz", **acts)
    os.mkfifo(tmp_path / "cat.jpg")
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")
    for photo, what in (("cat.jpg", "is a FIFO (named pipe)"), ("zero.jpg", "is a character device")):
        assert cli.main(["compare", "--weights", str(small), "--against", str(tmp_path / "d.npz"),
                         "--image", str(tmp_path / photo)]) == 1
        err = capsys.readouterr().err
        assert f"{tmp_path / photo}: {what}, not a regular file; expected a photo or a folder of photos" in err, err

    for name, kind, what in (("keras_metadata.pb", "fifo", "is a FIFO (named pipe)"),
                             ("keras_metadata.pb", "zero", "is a character device"),
                             ("keras_metadata.pb", "dir", "is a directory"),
                             ("keras_metadata.pb", "loop", "cannot be opened (Too many levels of symbolic links)"),
                             ("saved_model.pb", "fifo", "is a FIFO (named pipe)"),
                             ("saved_model.pb", "urandom", "is a character device")):
        sm = tmp_path / f"sm_{name}_{kind}"
        sm.mkdir()
        for other in {"saved_model.pb", "keras_metadata.pb"} - {name}:
            (sm / other).write_bytes(b"\x08\x01")
        target = sm / name
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "dir":
            target.mkdir()
        elif kind == "loop":
            target.symlink_to(target)
        else:
            target.symlink_to(f"/dev/{kind}")
        with pytest.raises(ConversionError, match=f"^{target}: {re.escape(what)}"):
            detect_format(sm)
