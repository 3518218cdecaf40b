"""Which kind of Keras file a path holds, from its first bytes; opened as a regular file only.

* ``"hdf5"`` and ``"zip"`` (a ``.keras`` archive): from the magic bytes;
* ``"savedmodel"``: a directory holding ``saved_model.pb`` (tf_keras' ``model.save("dir")``);
* ``"keras_dir"``: a directory holding ``config.json`` and ``model.weights.h5``: Keras 3's
  ``model.save("dir", zipped=False)``, an unzipped ``.keras`` archive, read as one;
* ``"tf_checkpoint"``: a TensorFlow checkpoint (``save_weights("ckpt")``), given
  by its prefix ``ckpt`` or as ``ckpt.index`` (an SSTable: magic in its last 8 bytes),
  or by its directory, whose ``checkpoint`` file names the latest prefix (tf_keras'
  ``ModelCheckpoint``, ``CheckpointManager``): :func:`resolve_source` follows it as
  ``tf.train.latest_checkpoint`` does, within that directory only.

* ``"keras_sharded"``: Keras 3 sharded weights (``save_weights("x.weights.json", max_shard_size=...)``),
  given by their JSON index (size-capped, parsed as plain data; :mod:`npxception.weights_tools.keras3_shards`).
  A shard ``x_00001.weights.h5`` given alone with its index beside it is refused, naming the index.

The parts of these formats that are not the model (``saved_model.pb``,
``keras_metadata.pb``, a checkpoint's data file, the ``checkpoint`` text file)
are refused with the path to give instead. Files are recognised by their bytes;
the names are used only to say what a protobuf file (which has no magic) is.

Its own module so that the readers (keras_golden included) can use it without
importing the package's ``__init__``, which imports them: no import cycle.
"""

from __future__ import annotations

import glob
import os
import pathlib
import re
import struct
import zipfile

from npxception.untrusted import NO_FILE, why_not_regular
from npxception.weights import serving_graph_refusal

from .errors import ConversionError
from .hdf5 import HDF5_MAGIC
from .keras3 import ZIP_MAGIC
from .keras3 import open_checked as _open_checked
from .keras3 import read_capped
from .keras3_shards import read_index, refuse_lone_shard
from .tf_bundle import bundle_prefix


TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)  # the last 8 bytes of a checkpoint's .index (an SSTable)
_SAVEDMODEL_PARTS = {
    "saved_model.pb": "the graph of a TensorFlow SavedModel",
    "keras_metadata.pb": "the Keras metadata of a tf_keras SavedModel",
    "fingerprint.pb": "the fingerprint of a TensorFlow SavedModel",
}


def not_keras_savedmodel(path) -> ConversionError:
    """The error for a SavedModel directory without ``keras_metadata.pb``."""
    return ConversionError(serving_graph_refusal(str(path), "which convert cannot read"))


# TensorFlow's `checkpoint` file (a CheckpointState in protobuf text format) is ~100 bytes:
# CheckpointManager lists each kept checkpoint and its timestamp, ~60 bytes apiece.
MAX_CHECKPOINT_STATE_BYTES = 64 * 1024  # ~1,000 kept checkpoints
_LATEST = re.compile(r'^model_checkpoint_path:[ \t]*"([^"\\\n]*)"[ \t]*$', re.MULTILINE)
def checkpoint_state_prefix(state: pathlib.Path) -> pathlib.Path:
    """The prefix a ``checkpoint`` file names (its ``model_checkpoint_path``), resolved as
    ``tf.train.latest_checkpoint`` does: relative to the file's directory, and the last of the lines that
    set it, as protobuf's text format (``text_format.Merge``) keeps the last value of a non-repeated field.

    Read as bounded plain text (a regular file only, its size checked before reading); a
    prefix outside that directory is refused with the path it names, never followed.
    """
    data = read_capped(state, MAX_CHECKPOINT_STATE_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""  # binary: no line to find
    found = _LATEST.findall(text) if "\0" not in text else []
    if not found or not found[-1]:
        raise ConversionError(f"{state}: not a TensorFlow checkpoint state file (no line "
                              'model_checkpoint_path: "PREFIX" in plain text); give the checkpoint\'s prefix')
    prefix = state.parent / found[-1]  # an absolute path stays absolute, as in TensorFlow
    if os.path.realpath(prefix.parent) != os.path.realpath(state.parent):
        raise ConversionError(f"{state}: names the checkpoint {prefix}, outside {state.parent}; not followed. "
                              "If that is the checkpoint you mean, give its prefix itself")
    return prefix


def _latest_checkpoint(path: pathlib.Path) -> pathlib.Path:
    prefix = checkpoint_state_prefix(path / "checkpoint")
    if not prefix.with_name(prefix.name + ".index").is_file():
        raise ConversionError(f"{path}: its checkpoint file names the checkpoint {prefix}, but there is no "
                              f"{prefix.name}.index beside it (deleted, or the directory was copied in part)")
    return prefix


def _holds_file(path: pathlib.Path) -> bool:
    """Whether ``path`` exists, as a regular file (symlinks followed); a FIFO, a device (a symlink to
    /dev/zero), a directory, a dangling link or a link loop is refused naming it and what it is: ``is_file()``
    called each of them absent, and the directory was then described as missing that file."""
    if not os.path.lexists(path):
        return False
    why = why_not_regular(path)
    if why:
        raise ConversionError(f"{path}: {'a symbolic link to nothing' if why == NO_FILE else why}; expected a "
                              "regular file")
    return True


def _directory_format(path: pathlib.Path) -> tuple[str, pathlib.Path]:
    if _holds_file(path / "saved_model.pb") or _holds_file(path / "saved_model.pbtxt"):
        if not _holds_file(path / "keras_metadata.pb"):
            raise not_keras_savedmodel(path)
        return "savedmodel", path
    if os.path.lexists(path / "config.json") and os.path.lexists(path / "model.weights.h5"):
        return "keras_dir", path  # the files are opened as regular files only, by keras3.open_directory
    if os.path.lexists(path / "checkpoint"):
        return "tf_checkpoint", _latest_checkpoint(path)
    if os.path.lexists(path / "chief" / "checkpoint"):
        raise ConversionError(f"{path}: a tf_keras BackupAndRestore directory; give {path / 'chief'} (its "
                              f"checkpoint, {_latest_checkpoint(path / 'chief')}), with --config if the model "
                              "is not a plain applications.Xception")
    if os.path.lexists(path / "latest.weights.h5") and os.path.lexists(path / "training_metadata.json"):
        raise ConversionError(f"{path}: a Keras 3 BackupAndRestore directory; its weights are "
                              f"{path / 'latest.weights.h5'}, which records no architecture: convert that file "
                              "with --config (the model's .keras archive or config.json)")
    raise ConversionError(f"{path}: is a directory, not a Keras file or a TensorFlow SavedModel (no "
                          "saved_model.pb, config.json with model.weights.h5, or checkpoint file in it)")


def detect_format(path) -> str:
    """``"hdf5"``, ``"zip"``, ``"keras_dir"``, ``"keras_sharded"``, ``"savedmodel"`` or ``"tf_checkpoint"``;
    ConversionError for anything else."""
    return resolve_source(path)[0]


def resolve_source(path) -> tuple[str, pathlib.Path]:
    """``(format, path to read)``: :func:`detect_format`'s answer, and for a checkpoint directory the
    prefix its ``checkpoint`` file names (``DIR/ckpt-3``); the path itself otherwise.

    A path that TensorFlow or Keras could read as another save is refused (:func:`_refuse_second_reading`):
    what compare and ``convert --check-with-keras`` run in Keras must be exactly what was read here."""
    fmt, source = _resolve(pathlib.Path(path))
    _refuse_second_reading(fmt, source)
    return fmt, source


def _refuse_second_reading(fmt: str, source: pathlib.Path) -> None:
    """Refuse, naming both, a save that sits where another one is read from the same name.

    tf_keras' ``load_weights(P)`` takes a readable checkpoint ``P.index`` before the file or directory ``P``
    itself, and ``tf.train.Checkpoint.restore(P)`` reads ``P/variables`` when ``P`` is a SavedModel
    directory: so a checkpoint's prefix must not exist, and nothing else may have a ``.index`` beside it.
    Both Kerases open a file named ``.keras`` as a zip archive whenever ``zipfile`` reads it as one (from its
    end), so an HDF5 file (by its first bytes) named so must not be one."""
    if fmt == "tf_checkpoint":
        prefix = bundle_prefix(source)
        if os.path.lexists(prefix):
            kind = "a directory" if prefix.is_dir() else "a file"
            raise ConversionError(
                f"{prefix}.index: the TensorFlow checkpoint {prefix} has {kind} of that very name beside "
                f"it, {prefix}, which TensorFlow or Keras may open instead of the checkpoint. Move one of "
                "the two elsewhere (or rename the checkpoint's .index and .data files together)")
        return
    if fmt == "hdf5" and source.name.endswith(".keras") and zipfile.is_zipfile(source):
        raise ConversionError(
            f"{source}: an HDF5 file by its first bytes and a zip archive by its last, which Keras opens as the "
            "archive by its name .keras: refused, as a file that reads as two saves")
    index = source.with_name(source.name + ".index")
    if os.path.lexists(index):
        raise ConversionError(
            f"{source}: a TensorFlow checkpoint index {index} is beside it, and Keras' load_weights('{source.name}')"
            f" would read that checkpoint instead of {source.name}. Move one of the two elsewhere (or rename "
            f"{source.name}) so that the name means one save")


def _resolve(path: pathlib.Path) -> tuple[str, pathlib.Path]:
    where = str(path)
    if path.is_dir():
        return _directory_format(path)
    if not path.exists() and os.path.lexists(path.with_name(path.name + ".index")):
        return "tf_checkpoint", path  # the prefix of save_weights("ckpt"); its reader opens regular files only
    with _open_checked(path) as f:
        head = f.read(8)
        size = os.fstat(f.fileno()).st_size
        tail = b""
        if size >= 16:
            f.seek(size - 8)
            tail = f.read(8)
    if not head:
        raise ConversionError(f"{where}: the file is empty")
    if head == HDF5_MAGIC:
        refuse_lone_shard(path)
        return "hdf5", path
    if head[:4] == ZIP_MAGIC:
        return "zip", path
    if tail == TABLE_MAGIC and path.name.endswith(".index"):
        prefix = path.with_name(path.name[:-len(".index")])
        # one data file, or several shards (the reader names any missing one, from the index's count)
        if not any(prefix.parent.glob(glob.escape(prefix.name) + ".data-*-of-*")):
            raise ConversionError(f"{where}: a TensorFlow checkpoint index without its data file "
                                  f"{prefix.name}.data-00000-of-00001 beside it (copy both)")
        return "tf_checkpoint", path
    if ".data-" in path.name and path.with_name(path.name.split(".data-")[0] + ".index").is_file():
        raise ConversionError(f"{where}: the data half of a TensorFlow checkpoint; give its prefix "
                              f"{path.with_name(path.name.split('.data-')[0])} (or its .index file)")
    if path.name.endswith(".json") and read_index(path) is not None:
        return "keras_sharded", path
    if path.name in _SAVEDMODEL_PARTS:
        raise ConversionError(f"{where}: {_SAVEDMODEL_PARTS[path.name]} (by its name); give the SavedModel's "
                              f"directory, {path.parent}")
    if path.name == "checkpoint" and head.startswith(b"model_ch"):
        raise ConversionError(f"{where}: the bookkeeping file of a TensorFlow checkpoint directory; give the "
                              f"checkpoint's prefix {checkpoint_state_prefix(path)} (its model_checkpoint_path), "
                              f"or the directory {path.parent}")
    raise ConversionError(f"{where}: not a Keras weight file (neither HDF5, a .keras zip archive, the .weights.json "
                          "index of Keras 3 sharded weights, a TensorFlow checkpoint nor a SavedModel directory)")
