"""Which kind of Keras file a path holds, from its first bytes; opened as a regular file only.

* ``"hdf5"`` and ``"zip"`` (a ``.keras`` archive): from the magic bytes;
* ``"savedmodel"``: a directory holding ``saved_model.pb`` (tf_keras' ``model.save("dir")``);
* ``"tf_checkpoint"``: a TensorFlow checkpoint (``save_weights("ckpt")``), given
  by its prefix ``ckpt`` or as ``ckpt.index`` (an SSTable: magic in its last 8 bytes).

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
import struct

from npxception.untrusted import IrregularFileError, open_regular

from .errors import ConversionError
from .hdf5 import HDF5_MAGIC
from .keras3 import ZIP_MAGIC


def _open_checked(path: pathlib.Path):
    """Open a regular file for reading (a FIFO would block open() forever); ConversionError otherwise."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except IrregularFileError as exc:
        raise ConversionError(str(exc)) from None
    except OSError as exc:
        raise ConversionError(f"{path}: cannot open ({exc.strerror or exc})") from None


TABLE_MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)  # the last 8 bytes of a checkpoint's .index (an SSTable)
_SAVEDMODEL_PARTS = {
    "saved_model.pb": "the graph of a TensorFlow SavedModel",
    "keras_metadata.pb": "the Keras metadata of a tf_keras SavedModel",
    "fingerprint.pb": "the fingerprint of a TensorFlow SavedModel",
}


def not_keras_savedmodel(path) -> ConversionError:
    """The error for a SavedModel directory without ``keras_metadata.pb``."""
    return ConversionError(
        f"{path}: a TensorFlow SavedModel without keras_metadata.pb: a serving graph (Keras 3's "
        "model.export() or tf.saved_model.save) that records no Keras layers or config, so nothing says "
        "which weight is which layer's. Save the model itself instead: model.save('model.keras') (Keras 3), "
        "or model.save('model') / model.save('model.h5') in tf_keras")


def _directory_format(path: pathlib.Path) -> str:
    if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
        if not (path / "keras_metadata.pb").is_file():
            raise not_keras_savedmodel(path)
        return "savedmodel"
    raise ConversionError(f"{path}: is a directory, not a Keras file or a TensorFlow SavedModel (no "
                          "saved_model.pb in it)")


def detect_format(path) -> str:
    """``"hdf5"``, ``"zip"``, ``"savedmodel"`` or ``"tf_checkpoint"``; ConversionError for anything else."""
    path = pathlib.Path(path)
    where = str(path)
    if path.is_dir():
        return _directory_format(path)
    if not path.exists() and os.path.lexists(path.with_name(path.name + ".index")):
        return "tf_checkpoint"  # the prefix of save_weights("ckpt"); its reader opens regular files only
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
        return "hdf5"
    if head[:4] == ZIP_MAGIC:
        return "zip"
    if tail == TABLE_MAGIC and path.name.endswith(".index"):
        prefix = path.with_name(path.name[:-len(".index")])
        # one data file, or several shards (the reader names any missing one, from the index's count)
        if not any(prefix.parent.glob(glob.escape(prefix.name) + ".data-*-of-*")):
            raise ConversionError(f"{where}: a TensorFlow checkpoint index without its data file "
                                  f"{prefix.name}.data-00000-of-00001 beside it (copy both)")
        return "tf_checkpoint"
    if ".data-" in path.name and path.with_name(path.name.split(".data-")[0] + ".index").is_file():
        raise ConversionError(f"{where}: the data half of a TensorFlow checkpoint; give its prefix "
                              f"{path.with_name(path.name.split('.data-')[0])} (or its .index file)")
    if path.name in _SAVEDMODEL_PARTS:
        raise ConversionError(f"{where}: {_SAVEDMODEL_PARTS[path.name]} (by its name); give the SavedModel's "
                              f"directory, {path.parent}")
    if path.name == "checkpoint" and head.startswith(b"model_ch"):
        raise ConversionError(f"{where}: the bookkeeping file of a TensorFlow checkpoint directory; give the "
                              "checkpoint's prefix (its model_checkpoint_path, e.g. DIR/ckpt for ckpt.index)")
    raise ConversionError(f"{where}: not a Keras weight file (neither HDF5, a .keras zip archive, a TensorFlow "
                          "checkpoint nor a SavedModel directory)")
