"""Open any Keras file the converter reads as a :class:`Reading`: its layers, wiring and weights, not yet matched.

The format comes from the file's bytes (:mod:`npxception.weights_tools.formats`); each reader
(:mod:`~npxception.weights_tools.legacy_h5`, :mod:`~npxception.weights_tools.keras3` (one file, or the shards
:mod:`~npxception.weights_tools.keras3_shards` merges), :mod:`~npxception.weights_tools.savedmodel`,
:mod:`~npxception.weights_tools.tf_checkpoint`) yields :class:`~npxception.weights_tools.graph.KLayer` lists whose
weights are read on first use, against the file's read budget.

Its own module, below the package's ``__init__`` (which matches a Reading to Xception and
converts it), so that what must read a file before Keras opens it (:mod:`npxception.weights_tools.vetting`,
for ``compare`` and ``convert --check-with-keras`` alike) can, with no import cycle.
"""

from __future__ import annotations

import contextlib
import pathlib
import zipfile
from dataclasses import dataclass, field

import h5py
import numpy as np

from npxception import shell
from npxception.config import CONFIG
from npxception.untrusted import check_zip_directory, open_regular
from npxception.weights import MANIFEST_KEY, name_from_manifest

from . import keras3, keras3_checkpoint, keras3_shards, legacy_h5, savedmodel, tf_checkpoint
from .errors import ConversionError
from .formats import _open_checked, resolve_source
from .graph import KLayer
from .hdf5 import GuardedH5
from .keras3 import ZIP_MAGIC
from .keras_config import flatten_config, subclass_name, subclassed_model
from .tf_bundle import Bundle
from .weight_store import H5Store


def _config_from(config, where, *, with_version=False):
    """A model config (dict) from a dict, a config.json path or a .keras archive path; with ``with_version``,
    ``(config, keras_version)``: the version a ``.keras`` archive's metadata.json or the config itself records
    (:func:`_recorded_version`), None when neither does."""
    if config is None or isinstance(config, dict):
        return (config, _recorded_version(config)) if with_version else config
    cpath = pathlib.Path(config)
    with _open_checked(cpath) as f:
        head = f.read(len(ZIP_MAGIC))
        if head == ZIP_MAGIC:
            found, version = keras3.read_archive_config(cpath, str(cpath), with_version=True)
            return (found, version or _recorded_version(found)) if with_version else found
        data = head + f.read(keras3.MAX_JSON_BYTES + 1 - len(head))  # read no more than the cap
    if len(data) > keras3.MAX_JSON_BYTES:
        raise ConversionError(f"{cpath}: a config over {keras3.MAX_JSON_BYTES} bytes")
    found = keras3._json(data, "the config", str(cpath))
    return (found, _recorded_version(found)) if with_version else found


_LEGACY_WEIGHTS_ONLY = "legacy Keras HDF5 weights-only file"


@dataclass
class Reading:
    """What a Keras file holds, before it is matched to Xception."""

    klayers: list[KLayer]  # in the model's layer order, nested models flattened
    input_shape: tuple | None  # (H, W, C) from the config, None when not recorded
    kind: str  # the format, for messages and inspect
    ignored: dict[str, int] = field(default_factory=dict)  # training state left out: {"optimizer state": 10}
    keras_version: str | None = None  # the version of Keras that wrote it, where the file records one
    name: str | None = None  # the Keras model's name (model.name), where a config records it

    @property
    def wired(self) -> bool:
        """True when the file records the model's wiring (a config), so nothing about it is guessed."""
        return all(k.inbound is not None for k in self.klayers)


def _recorded_version(config) -> str | None:
    """The ``keras_version`` a model config records at its top level (``to_json()`` and a SavedModel's
    root metadata write it), else None."""
    version = config.get("keras_version") if isinstance(config, dict) else None
    return version if isinstance(version, str) else None


def _refuse_given_config(config, where, kind):
    """A config given for a file that records its own is refused, never silently preferred or ignored."""
    if config is not None:
        raise ConversionError(f"{where}: {kind} records its own architecture; a given config is for weights-only "
                              "files (.weights.h5, save_weights). Convert the file without --config")


@contextlib.contextmanager
def open_layers(src, *, config=None):
    """Open any supported file as a :class:`Reading`.

    ``config`` (a dict, a ``config.json`` or a ``.keras`` file) supplies the
    wiring of a Keras-3 ``.weights.h5`` file or a TensorFlow checkpoint, which record none.

    Within the block the file stays open and each KLayer's ``weights`` are
    :class:`~npxception.weights_tools.hdf5.StoredArray`: shape and dtype known, data read
    on first use, once, against the file's read budget. Converters check
    shapes before touching the data.
    """
    where = str(src)
    fmt, src = resolve_source(src)  # a checkpoint directory: the prefix its checkpoint file names
    config, config_version = _config_from(config, where, with_version=True)
    if fmt == "savedmodel":
        with savedmodel.open_savedmodel(src) as (cfg, object_paths, bundle, graph):
            _refuse_given_config(config, where, "a SavedModel")
            klayers, paths, input_shape = flatten_config(cfg, source=where)
            ignored = tf_checkpoint.fill_weights(klayers, paths, object_paths, bundle, graph)
            yield Reading(klayers, input_shape, "tf_keras SavedModel directory", ignored,
                          _recorded_version(cfg), model_name(cfg))
        return
    if fmt == "tf_checkpoint":
        with Bundle(src) as bundle:
            yield _checkpoint_reading(bundle, config, config_version, where)
        return
    if fmt == "keras_sharded":
        with keras3_shards.open_shards(src) as (store, count):
            yield _keras3_weights(store, config, where, f"Keras 3 sharded weights index ({count} shards)",
                                  config_version)
        return
    if fmt == "zip":
        _refuse_npxception_file(src, where)
    if fmt in ("zip", "keras_dir"):
        opened = keras3.open_directory(src, where) if fmt == "keras_dir" else _opened_archive(src, where)
        with opened as (cfg, h5, version):
            kind = "Keras 3 .keras archive" + (" (unzipped: model.save(dir, zipped=False))" if fmt == "keras_dir"
                                                else "")
            _refuse_given_config(config, where, kind)
            klayers, paths, input_shape = flatten_config(cfg, source=where)
            ignored = keras3.fill_weights(klayers, paths, cfg, H5Store(h5))
            yield Reading(klayers, input_shape, kind, ignored, version, model_name(cfg))
        return
    with GuardedH5(src, where) as h5:
        names = h5.keys(h5.file)
        is_legacy = "model_weights" in names or h5.attr_strings(h5.file, "layer_names") is not None
        if is_legacy:
            used: dict = {}
            klayers, input_shape, wired = legacy_h5.read_legacy_h5(h5, config, used)
            kind = ("legacy Keras HDF5 weights-only file (with a given config)" if config is not None
                    else "legacy Keras HDF5 full-model save" if wired else _LEGACY_WEIGHTS_ONLY)
            yield Reading(klayers, input_shape, kind, legacy_h5.training_state(h5),
                          legacy_h5.h5_version(h5) or config_version, model_name(used.get("config")))
            return
        if "layers" in names:
            with keras3_shards.shard_named(src):
                reading = _keras3_weights(H5Store(h5), config, where, "Keras 3 .weights.h5 file", config_version)
            yield reading
            return
        _refuse_subclassed_weights(h5, names, config, where)
    raise keras3_shards.lone_shard_error(src, ConversionError(
        f"{where}: an HDF5 file without Keras weights (no layer_names, model_weights or layers group)"))


def _checkpoint_reading(bundle: Bundle, config, config_version, where: str) -> Reading:
    """A TensorFlow checkpoint: a Keras 3 model's (its layers under ``_operations``,
    :mod:`~npxception.weights_tools.keras3_checkpoint`) or tf_keras' (``layer-N``,
    :mod:`~npxception.weights_tools.tf_checkpoint`), by what its object graph references."""
    graph = tf_checkpoint.read_object_graph(bundle)
    keras3_graph = keras3_checkpoint.find_model(graph)
    if keras3_graph is not None:
        if not keras3_graph.prefix:
            writer = "tf.train.Checkpoint(root=model)"
        else:
            writer = f"tf.train.Checkpoint({keras3_graph.prefix[:-1]}=model)"
        module, graph, framework = keras3_checkpoint, keras3_graph, "Keras 3"
    else:
        graph = tf_checkpoint.find_model(graph)
        writer = f"tf.train.Checkpoint, its {graph.prefix[:-1]}" if graph.prefix else "save_weights"
        module, framework = tf_checkpoint, "tf_keras"
    kind = f"TensorFlow checkpoint of a {framework} model ({writer}"
    if config is None:  # Keras' by-order rule, as for a weights-only .h5
        klayers, ignored = module.klayers_by_order(bundle, graph)
        return Reading(klayers, None, f"{kind}, no config)", ignored)
    klayers, paths, input_shape = flatten_config(config, source=where)
    object_paths = module.object_paths_from_config(config, where)
    ignored = module.fill_weights(klayers, paths, object_paths, bundle, graph)
    return Reading(klayers, input_shape, f"{kind}, with a given config)", ignored, config_version,
                   model_name(config))


def model_name(config) -> str | None:
    """The model's name a config records (``{"class_name": "Functional", "config": {"name": ...}}``), or None:
    a Keras 1 Sequential's bare list, or a name that is no string of 1 to ``MAX_SOURCE_NAME`` characters
    (weights.name_from_manifest's rule: the name is saved in the converted file's manifest)."""
    inner = config.get("config") if isinstance(config, dict) else None
    name = inner.get("name") if isinstance(inner, dict) else None
    try:
        return name_from_manifest(name) if name is not None else None
    except ValueError:
        return None


def _refuse_subclassed_weights(h5: GuardedH5, names: list[str], config, where: str) -> None:
    """A Keras 3 ``save_weights`` of a subclassed model (review 26, F4): no top-level ``layers`` group, but
    the layers it holds as attributes saved under their names (``base/layers/...``, ``head/vars/0``) beside
    the model's ``vars`` (and ``optimizer``). Named as such, the given config first (its class, when it is
    a subclassed model's), rather than called an HDF5 file without Keras weights."""
    name = subclass_name(config) if config is not None else None
    if name is not None:
        raise ConversionError(f"{where}: the given config is that of {subclassed_model(name)}")
    attributes = sorted(n for n in names if n not in keras3.TRAINING_STATE)
    shown = attributes[:8]  # at most 8 groups looked into: a hostile file's thousand groups cost nothing
    if "vars" not in names or not attributes:
        return
    for n in shown:
        obj = h5.get(h5.file, n)
        if not isinstance(obj, h5py.Group) or not {"layers", "vars"} & set(h5.keys(obj)):
            return
    raise ConversionError(f"{where}: a Keras 3 weights file of " + subclassed_model(
        "its layers saved under its attributes " + ", ".join(shown)
        + (f", ... ({len(attributes)} in all)" if len(attributes) > len(shown) else ""), described=True))


def _keras3_weights(store, config, where: str, kind: str, version=None) -> Reading:
    """A Keras 3 weights-only file (one ``.weights.h5``, or sharded), wired by ``config`` when given (its Keras
    ``version`` as the config records it: a ``.weights.h5`` file records none)."""
    if config is not None:
        klayers, paths, input_shape = flatten_config(config, source=where)
        ignored = keras3.fill_weights(klayers, paths, config, store)
        return Reading(klayers, input_shape, f"{kind} (with a given config)", ignored, version, model_name(config))
    klayers, ignored = keras3.klayers_without_config(store)
    return Reading(klayers, None, f"{kind} (no config)", ignored)


def _refuse_npxception_file(src, where: str) -> None:
    """An npxception ``.npz`` (a zip holding our manifest) given to the converter: say what it is.

    It was read as a .keras archive and refused for its entry count ("a .keras archive holds at most
    100"), which told a user holding a converted file nothing (review 17, finding 3). The zip's
    directory is read within the weight file's own entry cap.
    """
    try:
        with open_regular(src) as f:
            check_zip_directory(f, where, max_entries=CONFIG.max_npz_entries, what="an .npz weight file")
            with zipfile.ZipFile(f) as z:
                ours = f"{MANIFEST_KEY}.npy" in z.NameToInfo
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return  # not ours: the archive reader reports what is wrong with it
    if ours:
        raise ConversionError(
            f"{where}: already an npxception weight file (it holds our manifest): nothing to convert; use it as "
            f"it is: `npxception predict --weights {shell.arg(where)} IMAGE`, npxception.Xception(weights=...), or "
            "`npxception verify` to check it. convert turns a Keras save (.keras, .h5, .weights.h5, a SavedModel "
            "or a TensorFlow checkpoint) into such a file")


@contextlib.contextmanager
def _opened_archive(src, where):
    cfg, h5, version = keras3.open_archive(src, where)
    with h5:
        yield cfg, h5, version


def read_layers(src, *, config=None) -> Reading:
    """Like :func:`open_layers`, with every array read (each once, within the read budget)."""
    with open_layers(src, config=config) as reading:
        for k in reading.klayers:
            k.weights = [np.asarray(w) for w in k.weights]
    return reading
