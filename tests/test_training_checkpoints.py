"""What training code leaves on disk besides model.save: reviewer 9's findings.

* F3: ``tf.train.Checkpoint(model=m, optimizer=opt)`` saved by a ``CheckpointManager``, and
  tf_keras' ``BackupAndRestore`` checkpoint, put the model under the root's child ``model``,
  beside training state; TensorFlow restores them with ``tf.train.Checkpoint(model=m).restore``;
* F1: Keras 3 ``model.save(dir, zipped=False)``: an unzipped ``.keras`` archive;
* F2: Keras 3 sharded weights (``save_weights("x.weights.json", max_shard_size=...)``), read with
  every shard their index lists (the hostile sets: tests/test_hostile_shards.py);
* F4: directories of checkpoints (tf_keras ``ModelCheckpoint``'s, with its ``checkpoint`` state
  file; Keras 3 ``BackupAndRestore``'s) and the ``checkpoint`` file itself.

One tf_keras and one Keras 3 model (``applications.Xception`` at 71x71, average pooling, random
weights and BatchNorm statistics, one ``fit()`` step that writes the training-time files), built
once for the module. Converted outputs are compared with ``model.predict`` of the model that wrote
the file. Tolerance 1e-5 relative to max|predict|: the pooled features are post-ReLU averages (no
cancellation), and float32 sums accumulated in another order leave ~2e-6 here (measured
8e-7..1.6e-6), while a weight of the wrong layer or a skipped BatchNorm moves them by far more.
Hostile ``checkpoint`` files and indexes run in subprocesses under RLIMIT_AS (tests/test_hostile.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from npxception import weights_tools as wt
from keras_helpers import keras_predict, randomize
from weight_files import conversion_refused as _refused
from test_hostile import assert_refused, run_limited

RTOL = 1e-5


def _fit_once(fw, model, x, callbacks):
    # run_eagerly: tracing Xception's training graph costs more CPU than one eager step at 71x71
    model.compile(optimizer="adam", loss="mse", run_eagerly=True)
    model.fit(x, np.zeros((len(x), 2048), np.float32), epochs=1, batch_size=len(x), verbose=0,
              callbacks=callbacks)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras
    import tensorflow as tf
    import tf_keras

    root = tmp_path_factory.mktemp("training")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 71, 71, 3)).astype(np.float32)
    out = {"x": x, "root": root}

    tk = randomize(tf_keras.applications.Xception(weights=None, include_top=False, pooling="avg",
                                                  input_shape=(71, 71, 3)), seed=3)
    _fit_once(tf_keras, tk, x, [tf_keras.callbacks.BackupAndRestore(str(root / "tk_backup"), delete_checkpoint=False),
                                tf_keras.callbacks.ModelCheckpoint(str(root / "training_1" / "cp.ckpt"),
                                                                   save_weights_only=True)])
    tf.train.CheckpointManager(tf.train.Checkpoint(model=tk, optimizer=tk.optimizer), str(root / "tf_ckpts"),
                               max_to_keep=3).save()
    other = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    tf.train.Checkpoint(model=tk, ema_model=other).write(str(root / "two_models" / "ckpt"))
    (root / "tk.json").write_text(tk.to_json())
    out["tk_y"] = keras_predict(tk, x)

    k3 = randomize(keras.applications.Xception(weights=None, include_top=False, pooling="avg",
                                               input_shape=(71, 71, 3)), seed=4)
    _fit_once(keras, k3, x, [keras.callbacks.BackupAndRestore(str(root / "k3_backup"), delete_checkpoint=False)])
    k3.save(str(root / "k3_dir"), zipped=False)
    k3.save_weights(str(root / "k3_sharded.weights.json"), max_shard_size=0.02)  # GB: 14 shards, with Adam's
    k3.save_weights(str(root / "k3.weights.h5"))  # the same weights unsharded
    # An interrupted save: at 0.01 GB Keras raises at block14_sepconv2's 12 MB kernel, having written the
    # index of the shards before it and one more shard the index does not list (reviewer 16's repro).
    (root / "partial").mkdir()
    try:
        k3.save_weights(str(root / "partial" / "x.weights.json"), max_shard_size=0.01)
        out["partial_raised"] = None
    except ValueError as exc:
        out["partial_raised"] = str(exc)
    out["k3_y"] = keras_predict(k3, x)
    return out


def _close(model, files, which):
    ours, theirs = model(files["x"]), files[which]
    err = float(np.abs(ours - theirs).max())
    assert err <= RTOL * float(np.abs(theirs).max()), f"max |ours - Keras| {err} vs max|Keras| {np.abs(theirs).max()}"


# --------------------------------------------------------------------------- F3

@pytest.mark.parametrize("src", ["tf_ckpts/ckpt-1", "tk_backup/chief/ckpt-1"])
def test_checkpoint_with_the_model_under_its_root_converts_as_tensorflow_restores_it(files, src):
    path = files["root"] / src
    _close(wt.read(path, config=files["root"] / "tk.json"), files, "tk_y")
    _close(wt.read(path, pooling="avg"), files, "tk_y")  # without config: Keras' by-order rule, from the model
    report = wt.inspect(path, config=files["root"] / "tk.json")
    assert "checkpoint save counter" in report, report
    if "backup" in src:
        assert "checkpoint state beside the model (ckpt_saved_epoch)" in report, report
    else:
        assert "optimizer state" in report, report


def test_checkpoint_holding_two_models_is_refused_naming_them(files):
    _refused(files["root"] / "two_models" / "ckpt", "2 Keras models", "(ema_model, model)",
             config=files["root"] / "tk.json")


def test_checkpoint_holding_no_model_names_what_its_root_holds(tmp_path):
    import tensorflow as tf

    tf.train.Checkpoint(step=tf.Variable(3), lr=tf.Variable(0.1)).write(str(tmp_path / "ckpt"))
    _refused(tmp_path / "ckpt", "its root holds lr, step", "none of them references layers", pooling="avg")


# --------------------------------------------------------------------------- F1

def test_unzipped_keras_save_is_read_as_its_archive(files):
    path = files["root"] / "k3_dir"
    _close(wt.read(path), files, "k3_y")
    assert wt.inspect(path).startswith(f"{path}: Keras 3 .keras archive (unzipped"), wt.inspect(path)[:200]
    _refused(path, "records its own architecture", config=files["root"] / "tk.json")


def test_unzipped_keras_save_with_a_fifo_for_its_weights_is_refused(files, tmp_path):
    for name in ("config.json", "metadata.json"):
        (tmp_path / name).write_bytes((files["root"] / "k3_dir" / name).read_bytes())
    os.mkfifo(tmp_path / "model.weights.h5")
    _refused(tmp_path, "model.weights.h5", "FIFO")


# --------------------------------------------------------------------------- F2

def test_sharded_weights_convert_as_their_single_file_and_as_keras_predicts(files):
    """The index, read with every shard it lists: what model.predict gives (RTOL, module docstring), with
    the config and without (Keras' by-order rule), and the very arrays of the same weights saved unsharded."""
    root = files["root"]
    index, config = root / "k3_sharded.weights.json", root / "k3_dir" / "config.json"
    shards = sorted(root.glob("k3_sharded_0*.weights.h5"))
    listed = {k: [v] if isinstance(v, str) else v for k, v in json.loads(index.read_text())["weight_map"].items()}
    assert len(shards) > 2 and {n for v in listed.values() for n in v} == {s.name for s in shards}
    assert any(len(v) > 1 for k, v in listed.items() if k.startswith("/layers/")), \
        "no layer straddles a shard boundary"  # Keras splits a layer's variables between shards
    sharded = wt.read(index, config=config)
    _close(sharded, files, "k3_y")
    _close(wt.read(index, pooling="avg"), files, "k3_y")
    single = wt.read(root / "k3.weights.h5", config=config)
    theirs = single.weights
    assert sharded.weights.keys() == theirs.keys()
    for name, value in sharded.weights.items():
        assert np.array_equal(value, theirs[name]), name
    report = wt.inspect(index, config=config)
    assert report.startswith(f"{index}: Keras 3 sharded weights index ({len(shards)} shards) (with a given config)"), report
    assert "optimizer state" in report, report


def test_a_lone_shard_of_a_keras_save_is_refused_naming_its_index(files):
    root = files["root"]
    index = root / "k3_sharded.weights.json"
    _refused(sorted(root.glob("k3_sharded_0*.weights.h5"))[1], "one shard of a set of Keras 3 sharded weights",
             f"indexed by {index}", config=root / "k3_dir" / "config.json")


def test_keras_shards_only_save_weights(tmp_path):
    """In this Keras (3.15) model.save and keras.saving.save_model refuse max_shard_size, so a .keras archive
    and its unzipped directory hold one model.weights.h5: the index of save_weights is the one sharded form.
    A Keras that shards them fails here, and its new form must be read before this test is changed."""
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    for save in (lambda: model.save(tmp_path / "m.keras", max_shard_size=0.001),
                 lambda: keras.saving.save_model(model, tmp_path / "dir", zipped=False, max_shard_size=0.001)):
        with pytest.raises(ValueError, match=r"not supported: \['max_shard_size'\]"):
            save()


# --------------------------------------------------------------------------- F4

def test_checkpoint_directory_converts_its_latest_checkpoint(files):
    for directory in ("training_1", "tf_ckpts"):
        _close(wt.read(files["root"] / directory, config=files["root"] / "tk.json"), files, "tk_y")


def test_checkpoint_state_file_names_the_real_prefix(files):
    root = files["root"]
    _refused(root / "training_1" / "checkpoint", f"give the checkpoint's prefix {root / 'training_1' / 'cp.ckpt'}")
    _refused(root / "tk_backup", "tf_keras BackupAndRestore", str(root / "tk_backup" / "chief" / "ckpt-1"))
    _refused(root / "k3_backup", "Keras 3 BackupAndRestore", str(root / "k3_backup" / "latest.weights.h5"), "--config")


def test_keras3_backup_weights_convert_with_the_config(files):
    _close(wt.read(files["root"] / "k3_backup" / "latest.weights.h5", config=files["root"] / "k3_dir" / "config.json"),
           files, "k3_y")


def _state_dir(tmp_path, text: bytes):
    d = tmp_path / "ckdir"
    d.mkdir(exist_ok=True)
    (d / "checkpoint").write_bytes(text)
    return d


def test_checkpoint_state_outside_its_directory_or_missing_is_refused(files, tmp_path):
    elsewhere = files["root"] / "training_1" / "cp.ckpt"
    _refused(_state_dir(tmp_path, f'model_checkpoint_path: "{elsewhere}"\n'.encode()), str(elsewhere),
             "not followed")
    _refused(_state_dir(tmp_path, b'model_checkpoint_path: "../training_1/cp.ckpt"\n'), "not followed")
    _refused(_state_dir(tmp_path, b'model_checkpoint_path: "gone"\n'), "no gone.index")


@pytest.mark.parametrize("case", ["huge", "binary", "fifo", "escaped"])
def test_hostile_checkpoint_state_is_refused_within_bounds(tmp_path, case):
    d = tmp_path / "ckdir"
    d.mkdir()
    state = d / "checkpoint"
    if case == "huge":  # 1 GB claimed, nothing stored: refused by its size, before a byte is read
        with open(state, "wb") as f:
            f.truncate(1 << 30)
    elif case == "binary":
        state.write_bytes(b"model_checkpoint_path: \"\xff\xfe\x00" + bytes(range(256)) * 4)
    elif case == "fifo":
        os.mkfifo(state)
    else:
        state.write_bytes(b'model_checkpoint_path: "a\\"b"\n')
    expected = {"huge": "over the 65,536-byte limit", "binary": "not a TensorFlow checkpoint state file",
                "fifo": "FIFO", "escaped": "not a TensorFlow checkpoint state file"}[case]
    out = run_limited("npxception.weights_tools.cli", "convert", d, "-o", tmp_path / "out.npz")
    assert_refused(out, "checkpoint", expected)
    assert not list(tmp_path.glob("out.npz*"))


# --------------------------------------------------------------------------- compare and --check-with-keras

# Every form above that convert reads, as a user who just converted it tries next: (path, --config, the
# Keras that runs it). Each is run by the framework that wrote it: Keras 3 loads its unzipped directory,
# tf_keras builds the model from the config and loads the checkpoint as TensorFlow restores it.
FORMS = {
    "keras3_unzipped_dir": ("k3_dir", None, "keras"),
    "keras3_sharded_weights": ("k3_sharded.weights.json", "k3_dir/config.json", "keras"),  # load_weights(index)
    "model_checkpoint_dir": ("training_1", "tk.json", "tf_keras"),  # its checkpoint file names cp.ckpt
    "checkpoint_manager_dir": ("tf_ckpts", "tk.json", "tf_keras"),  # tf.train.Checkpoint(model=...) inside
    "checkpoint_prefix": ("tk_backup/chief/ckpt-1", "tk.json", "tf_keras"),  # BackupAndRestore's Checkpoint
}


def _form(files, form):
    path, config, framework = FORMS[form]
    return files["root"] / path, config and files["root"] / config, framework


# compare's layer-by-layer run of a Keras 3 weights-only form is the unzipped directory's once Keras holds the
# model (~1 min here): the sharded index is opened the way compare opens it, in the test after this one.
@pytest.mark.parametrize("form", [f for f in FORMS if f != "keras3_sharded_weights"])
def test_compare_against_each_form_finds_no_divergence(files, form, capsys):
    """`npxception compare --against FORM [--config model.json]`: converted by us, run in Keras, every layer
    agrees (compare's float32 tolerances)."""
    from npxception import cli

    path, config, _ = _form(files, form)
    argv = ["compare", "--against", str(path)] + (["--config", str(config)] if config else [])
    code = cli.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().splitlines()[-1].startswith("no divergence: "), out[-2000:]


def test_compare_opens_the_sharded_index_in_keras_as_the_model_that_wrote_it(files):
    """`compare --against k3_sharded.weights.json --config config.json`: a Keras save by its name, converted by
    us, and opened by compare's own path (vetted, then Keras 3's load_weights of the index): Keras' output is
    model.predict of the model that wrote the shards, and ours is too (RTOL, module docstring)."""
    from npxception import keras_side
    from npxception.compare.sides import open_other

    root = files["root"]
    index, config = root / "k3_sharded.weights.json", root / "k3_dir" / "config.json"
    assert keras_side.is_keras_save(index)
    model = wt.read(index, config=config)
    side = open_other(model, str(index), config=str(config))
    theirs, expected = side.final(files["x"]), files["k3_y"]
    err = float(np.abs(theirs - expected).max())
    assert err <= RTOL * float(np.abs(expected).max()), f"max |Keras from the index - predict| {err}"
    _close(model, files, "k3_y")


@pytest.mark.parametrize("form", FORMS)
def test_check_with_keras_passes_on_each_form(files, form, tmp_path):
    """`npxception convert FORM --check-with-keras`: Keras' own output is the golden, and the converted model
    gives model.predict of the model that wrote the file."""
    import npxception
    from npxception.weights_tools.cli import main

    path, config, framework = _form(files, form)
    out = tmp_path / "m.npz"
    argv = ["convert", str(path), "-o", str(out), "--check-with-keras"] + (["--config", str(config)] if config else [])
    assert main(argv) == 0
    model = npxception.load(out)  # the load-time check against Keras' digests passes
    assert model.golden.source.startswith(f"{framework} "), model.golden.source
    _close(model, files, "k3_y" if framework == "keras" else "tk_y")


def test_compare_rebuilds_applications_xception_for_a_checkpoint_without_config(files, tmp_path):
    """--weights and a tf.train.Checkpoint without --config: Keras' applications.Xception is rebuilt from our
    model and restored from the model's place in the checkpoint (a wrong place would restore nothing)."""
    from npxception.compare import compare

    path = files["root"] / "tf_ckpts" / "ckpt-1"
    model = wt.read(path, pooling="avg")
    report = compare(model, path, files["x"])
    assert report.ok, str(report)


@pytest.mark.parametrize("directory", ["k3_dir", "training_1"])
def test_a_directory_given_as_npxception_weights_says_convert_it_first(files, directory):
    """`--weights DIR` (predict, compare) takes a converted .npz: each directory form is named, with the
    command that converts it (it was "is a directory, not a regular file")."""
    import npxception

    with pytest.raises(ValueError, match=r"not an npxception \.npz weight file; convert it first: "
                                         r"npxception convert .* -o model\.npz"):
        npxception.load(files["root"] / directory)


def test_check_with_keras_vets_the_objects_inside_a_layer_before_keras(files, tmp_path, monkeypatch):
    """block1_conv1's kernel_initializer naming a function of ``os``, planted in the unzipped directory's
    config.json: the conversion reads the weights, not the initializers, and converts it; --check-with-keras
    refuses it before any framework is asked for (the vetting compare does), and writes nothing."""
    import shutil

    from npxception import keras_side

    planted = tmp_path / "planted"
    shutil.copytree(files["root"] / "k3_dir", planted)
    config = json.loads((planted / "config.json").read_text())
    conv = next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == "block1_conv1")
    conv["config"]["kernel_initializer"] = {"module": "os", "class_name": "system", "config": {},
                                            "registered_name": "os>system"}
    (planted / "config.json").write_text(json.dumps(config))
    wt.read(planted)

    def no_framework(name):
        raise AssertionError(f"{name} was imported to open a file with a planted object")
    monkeypatch.setattr(keras_side, "_import", no_framework)
    with pytest.raises(wt.ConversionError, match=re.escape(
            f"{planted}: refused before Keras opens it: layer block1_conv1 (Conv2D) holds kernel_initializer = "
            "'system' from module 'os'")):
        wt.convert(planted, tmp_path / "out.npz", check_with_keras=True)
    assert not list(tmp_path.glob("out.npz*"))


# --------------------------------------------------------------------------- reviewer 14 F1: one name, two saves

def _checkpoint_copy(files, tmp_path, prefix: str):
    """training_1 (ModelCheckpoint's directory) copied with its checkpoint renamed ``prefix``."""
    d = tmp_path / "renamed"
    d.mkdir()
    for f in (files["root"] / "training_1").glob("cp.ckpt.*"):
        os.link(f, d / f.name.replace("cp.ckpt", prefix, 1))
    (d / "checkpoint").write_text(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    return d


def test_checkpoint_prefix_named_like_an_hdf5_file_is_restored_as_the_checkpoint(files, tmp_path):
    """A checkpoint saved as ``ckpt.h5``: tf_keras' load_weights takes the name for an HDF5 file; Keras is
    given the checkpoint that was vetted, by TensorFlow's checkpoint API (it was "Unable to open file")."""
    from npxception.weights_tools.vetting import open_in_keras

    d = _checkpoint_copy(files, tmp_path, "ckpt.h5")
    for path in (d, d / "ckpt.h5", d / "ckpt.h5.index"):
        kmodel = open_in_keras(path, config=files["root"] / "tk.json")
        # the same weights, run again: called, not predict, which traces a new graph for each freshly opened
        # model (~1 s of CPU each, against ~0.3 s for one eager call on 2 images at 71x71); in float32 the two
        # differ by round-off (~1e-6 of max|y|), within RTOL of the model's predict (tk_y)
        _close(lambda x: np.asarray(kmodel(x, training=False)), files, "tk_y")


def test_a_name_that_reads_as_two_saves_is_refused_naming_both(files, tmp_path):
    """Reviewer 14 F1: what Keras opens must be what was read. (a) the checkpoint ``ckpt.h5`` with a file
    ``ckpt.h5`` beside it (tf_keras' load_weights opens that file), or with a SavedModel directory of that
    name (``tf.train.Checkpoint.restore`` reads its variables); (b) an HDF5 file ``w`` with a checkpoint
    ``w.index`` beside it (load_weights reads the checkpoint). Each way in is refused, naming both."""
    d = _checkpoint_copy(files, tmp_path, "ckpt.h5")
    sibling = d / "ckpt.h5"
    os.link(files["root"] / "k3_backup" / "latest.weights.h5", sibling)
    for path in (d, d / "ckpt.h5.index"):
        _refused(path, f"{sibling}.index: the TensorFlow checkpoint {sibling} has a file of that very name beside "
                       f"it, {sibling}", "Move one of the two", config=files["root"] / "tk.json")
    # given as the name itself, it is the HDF5 file with a checkpoint's index beside it: (b)
    _refused(sibling, f"{sibling}: a TensorFlow checkpoint index {sibling}.index is beside it",
             "Move one of the two", config=files["root"] / "k3_dir" / "config.json")
    sibling.unlink()
    sibling.mkdir()
    (sibling / "saved_model.pb").write_bytes(b"")
    _refused(d, f"has a directory of that very name beside it, {sibling}", config=files["root"] / "tk.json")


def test_checkpoint_state_setting_its_path_twice_names_what_tensorflow_takes(tmp_path):
    """Reviewer 14 F5: a hand-edited ``checkpoint`` file with two model_checkpoint_path lines; TensorFlow's text
    format keeps the last (npxception took the first)."""
    import tensorflow as tf

    from npxception.weights_tools.formats import resolve_source

    d = tmp_path / "dup"
    d.mkdir()
    for name in ("a", "b"):
        (d / f"{name}.index").write_bytes(b"")
    (d / "checkpoint").write_text('model_checkpoint_path: "a"\nmodel_checkpoint_path: "b"\n')
    assert tf.train.latest_checkpoint(str(d)) == str(d / "b")
    assert resolve_source(d) == ("tf_checkpoint", d / "b")


def test_keras_is_not_given_a_file_whose_name_says_another_format(tmp_path, monkeypatch):
    """Keras picks a loader by the name: ``.keras`` is the zip loader whenever zipfile reads the file (from its
    end), ``.h5`` the HDF5 one (which finds a superblock at 512, 1024, ...). An HDF5 file with a zip archive
    appended, named .keras, is refused as two saves in one; an archive named .h5 is refused before Keras."""
    import io
    import zipfile

    import h5py

    from npxception import keras_side
    from npxception.weights_tools.formats import resolve_source

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", "{}")
    both = tmp_path / "both.keras"
    with h5py.File(both, "w") as f:
        f.attrs["layer_names"] = []
    with open(both, "ab") as f:
        f.write(archive.getvalue())
    with pytest.raises(wt.ConversionError, match="^" + re.escape(
            f"{both}: an HDF5 file by its first bytes and a zip archive by its last, which Keras opens as the "
            "archive by its name .keras")):
        resolve_source(both)
    renamed = tmp_path / "model.h5"
    renamed.write_bytes(archive.getvalue())

    def no_framework(name):
        raise AssertionError(f"{name} was imported to open {renamed}")
    monkeypatch.setattr(keras_side, "_import", no_framework)
    with pytest.raises(ValueError, match="^" + re.escape(
            f"{renamed}: a .keras zip archive (by its bytes) that Keras would not open as one under the name "
            "'model.h5': give it the .keras suffix")):
        keras_side.load(renamed)


def test_an_interrupted_sharded_save_is_named_as_one(files, tmp_path):
    """Keras' save that raised half-way (reviewer 16): the shard it wrote after the index is named, with
    "save again into an empty directory" first; once it is moved away, the refusal says the index covers only
    part of the model and names the first layer with weights that it misses (a weightless pooling layer,
    which has no group either, was named before)."""
    assert "exceeds the maximum shard size" in (files["partial_raised"] or ""), files["partial_raised"]
    partial, config = files["root"] / "partial", files["root"] / "k3_dir" / "config.json"
    listed = {n for v in json.loads((partial / "x.weights.json").read_text())["weight_map"].values()
              for n in ([v] if isinstance(v, str) else v)}
    on_disk = {p.name for p in partial.glob("x_*.weights.h5")}
    stray = sorted(on_disk - listed)
    assert len(stray) == 1, (sorted(listed), sorted(on_disk))
    _refused(partial / "x.weights.json", f"{stray[0]} beside it is not listed by the index",
             "left by an interrupted save", "Save the model again into an empty directory", config=config)
    moved = tmp_path / "partial"
    moved.mkdir()
    for name in listed | {"x.weights.json"}:
        os.link(partial / name, moved / name)
    message = _refused(moved / "x.weights.json", "the index covers only part of the model (an interrupted save?)",
                       "save the model again into an empty directory", config=config)
    missing = re.search(r"holds weights for layer (\S+) \(group (\S+)\)", message)
    assert missing, message
    cfg = {l["config"]["name"]: l["class_name"] for l in json.loads(config.read_text())["config"]["layers"]}
    assert cfg[missing.group(1)] in ("BatchNormalization", "SeparableConv2D", "Conv2D"), message


def test_a_renamed_index_is_refused_as_keras_refuses_it(files, tmp_path):
    """An index renamed beside its shards (reviewer 16 took it for readable): Keras' load_weights opens
    <new name>_00000.weights.h5 first (ShardedH5IOStore derives it from the index's name) and fails; ours
    refuses naming the index's saved name."""
    import keras

    root = files["root"]
    for shard in root.glob("k3_sharded_0*.weights.h5"):
        os.link(shard, tmp_path / shard.name)
    shutil.copyfile(root / "k3_sharded.weights.json", tmp_path / "my.weights.json")
    model = keras.applications.Xception(weights=None, include_top=False, pooling="avg", input_shape=(71, 71, 3))
    with pytest.raises(FileNotFoundError, match="my_00000.weights.h5"):
        model.load_weights(str(tmp_path / "my.weights.json"))
    _refused(tmp_path / "my.weights.json", "lists the shards k3_sharded_NNNNN.weights.h5 of a save named "
             "k3_sharded.weights.json: the index was renamed?", "opens my_00000.weights.h5 first",
             config=root / "k3_dir" / "config.json")
