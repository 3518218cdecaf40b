"""The Keras side of ``compare`` and of Keras' golden test case (``weights_tools.keras_golden``):
open a Keras file in the framework that wrote it, and capture its layers by npxception's names.

Correctness is measured against the framework that wrote the file, so the file
is run by that framework, never by a guess:

* a ``.keras`` archive (zipped, or the directory ``model.save(dir, zipped=False)``
  writes): the ``keras_version`` its ``metadata.json`` records (``2.x``: tf_keras, whose
  ``model.save("m.keras")`` writes the same layout; ``3.x``: Keras 3); without one, the
  package its ``config.json`` names as the model's ``module`` (Keras 3 reads no metadata.json
  either: ``tf_keras.src...``, or Keras 3's ``keras...``); refused when neither says;
* a new-layout ``.weights.h5`` (``layers/.../vars``, which tf_keras' ``save_weights("m.weights.h5")``
  writes too) with a config: the ``keras_version`` the config records (a ``.keras`` archive's
  metadata.json, a tf_keras ``to_json()``), else its ``module`` as above; refused when neither
  says. Without a config (rebuilt as ``applications.Xception``) and sharded weights (their
  ``.weights.json`` index, which only Keras 3 writes): Keras 3;
* a legacy HDF5 file: the ``keras_version`` it records (``2.x``: tf_keras, which
  reads tf_keras' and Keras 2's files; ``3.x``: Keras 3's legacy ``.h5`` save);
* a SavedModel directory with ``keras_metadata.pb``, or a TensorFlow checkpoint
  (``save_weights("ckpt")``, given as ``ckpt`` or ``ckpt.index``, or a directory
  whose ``checkpoint`` file names it; a ``tf.train.Checkpoint(model=...)`` is
  restored from the model's place in it): tf_keras, the Keras that writes them
  (Keras 3 reads neither);

What each path holds is the converter's answer (``weights_tools.formats.resolve_source``),
never a second reading of it here.
* a weights-only file: the model is rebuilt from ``config`` (the model's own
  ``.keras`` archive or ``config.json``) and the weights loaded into it; without
  a config only the layouts the converter itself accepts without one (a bare
  backbone, the official ImageNet classifier) are rebuilt, with
  ``applications.Xception``.

A channels_first model (``image_data_format`` "channels_first", npxception/weights_tools/layout.py)
is fed NCHW: our NHWC batch is transposed on the way in, and its 4-D activations
back to NHWC on the way out, so everything after this module sees NHWC.

Layers are reached by their path through nested models: the keras.io recipe
calls the backbone as one layer (``x = base_model(inputs)``), so its
``block1_conv1`` is not a layer of the outer model. Each nested model is run
on the tensor that feeds it in the outer model.

TensorFlow is imported here only, and only when a comparison or a Keras golden needs it. Its
start-up noise (absl/oneDNN/CUDA lines written to the C-level stderr) and Keras'
"structure of `inputs`" warning are kept out of the report.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pathlib
import sys
import tempfile
import warnings

import h5py
import numpy as np

from . import head_schema
from .extras import pip_install

@contextlib.contextmanager
def _quiet():
    """Silence TensorFlow's C++ logging and Keras' input-structure warning for the duration.

    ``TF_CPP_MIN_LOG_LEVEL`` is honoured only for messages after absl is set
    up, so the start-up lines are caught by pointing file descriptor 2 at a
    temporary file; they are shown again if something fails.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryFile(mode="w+b") as sink, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The structure of `inputs` doesn't match")
        warnings.filterwarnings("ignore", module=r"keras|tf_keras|tensorflow")
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            noise = sink.read().decode("utf8", "replace").strip()
            if noise:
                print(noise, file=sys.stderr)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def saved_by(path, config=None) -> tuple[str, bool]:
    """``(framework, full_model)`` for the file at ``path``: ``"keras"`` (Keras 3) or ``"tf_keras"``,
    the framework that wrote it, and whether it records its architecture (a ``.keras`` archive, zipped or
    not, a SavedModel, or a legacy full-model ``.h5``, whose root holds ``model_config``) or holds weights
    only (a TensorFlow checkpoint, a ``.weights.h5``, a weights-only ``.h5``). ``config``: a weights-only
    file's architecture (a ``.keras`` archive or ``config.json``), which says who wrote a ``.weights.h5``.

    ConversionError (a ValueError), naming what is missing, when nothing the files record says which of the
    two wrote them."""
    # weights_tools imports npxception at import time, not the reverse: the converter's rule for what a path
    # holds (a checkpoint directory resolved to the prefix its checkpoint file names), not a second copy of it
    from npxception.weights_tools.formats import resolve_source  # see above

    return _saved_by(*resolve_source(path), config=config)


def _framework_of_version(version) -> str | None:
    """``"tf_keras"`` for a recorded ``keras_version`` 2.x (tf_keras reads tf_keras' and Keras 2's saves),
    ``"keras"`` for 3.x or later; None for no version or one that is not a version."""
    from npxception.weights_tools.preprocessing import version_tuple  # see saved_by

    found = version_tuple(version)
    if found is None or found[0] < 2:
        return None
    return "tf_keras" if found[0] == 2 else "keras"


def _framework_of_module(config) -> str | None:
    """The framework a model config's ``module`` strings name, or None when they name none or both.

    Both serialisations write each object's ``module``: its public name where it has one (``keras``,
    ``keras.layers``: tf_keras writes those too, review 31 B1: a tf_keras Sequential records ``"module":
    "keras"``, as Keras 3's does), else its class's own module. Only the latter tells: ``tf_keras.*`` and
    Keras 2's ``keras(.src).engine.*`` -> tf_keras (Keras 3 has no ``engine`` package); ``keras.src.*`` ->
    keras (Keras 3's Functional: ``keras.src.models.functional``). So every object of the config is looked at
    (a Sequential wrapping Xception names the Functional inside it), iteratively: the config is already
    within its size and nesting limits."""
    found = set()
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            module = item.get("module")
            if isinstance(module, str):
                parts = module.split(".")
                if parts[0] == "tf_keras" or (parts[0] == "keras" and "engine" in parts):
                    found.add("tf_keras")
                elif parts[:2] == ["keras", "src"]:
                    found.add("keras")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found.pop() if len(found) == 1 else None


def _archive_writer(fmt: str, path: pathlib.Path) -> str:
    """Who wrote the ``.keras`` archive (or its unzipped directory) at ``path``, from its metadata.json's
    ``keras_version`` (read within the archive's size limits), else its config.json's ``module``."""
    from npxception.weights_tools import keras3  # see saved_by
    from npxception.weights_tools.errors import ConversionError  # see saved_by

    where = str(path)
    # a missing metadata.json, or one without a string keras_version: None
    config, version = (keras3.read_archive_config(path, where, with_version=True) if fmt == "zip"
                       else keras3.read_directory_config(path, where))
    name = _framework_of_version(version) or _framework_of_module(config)
    if name is None:
        said = ("has no metadata.json recording a \"keras_version\"" if version is None
                else f"records keras_version {version[:40]!r} in metadata.json, which is not Keras 2 or 3's")
        raise ConversionError(f"{path}: cannot tell whether Keras 3 or tf_keras wrote this .keras archive: "
                              f"it {said}, and its config.json's \"module\" names neither alone; save it again with "
                              "model.save(\"model.keras\") in the Keras that made it, which writes metadata.json")
    return name


def _weights_writer(path: pathlib.Path, config) -> str:
    """Who wrote the new-layout ``.weights.h5`` at ``path``: what its ``config`` records (a ``.keras``
    archive's metadata.json or the config's ``keras_version``, else its ``module``); Keras 3 without a config,
    which is rebuilt as ``applications.Xception`` (``load``)."""
    if config is None:
        return "keras"
    from npxception.weights_tools.errors import ConversionError  # see saved_by
    from npxception.weights_tools.reading import _config_from  # see saved_by

    found, version = _config_from(config, str(config), with_version=True)
    name = _framework_of_version(version) or _framework_of_module(found)
    if name is None:
        given = "the config given as a dict" if isinstance(config, dict) else f"its config {config}"
        raise ConversionError(f"{path}: cannot tell whether Keras 3 or tf_keras wrote this .weights.h5 (the same "
                              f"layout from both): {given} records no \"keras_version\" and its \"module\" "
                              "names neither alone; give as config the model's .keras archive, or the to_json() of the "
                              "Keras that saved it (tf_keras' records keras_version, Keras 3's its module)")
    return name


def _saved_by(fmt: str, path: pathlib.Path, config=None) -> tuple[str, bool]:
    """:func:`saved_by` of ``resolve_source``'s ``(format, path)``."""
    if fmt == "savedmodel":
        return "tf_keras", True  # tf_keras writes (and reads) those with keras_metadata.pb
    if fmt == "tf_checkpoint":
        # tf_keras' save_weights("ckpt"), ModelCheckpoint, tf.train.Checkpoint(model=...); Keras 3's
        # tf.train.Checkpoint(model=...), by its object graph (keras3_checkpoint)
        from npxception.weights_tools.keras3_checkpoint import checkpoint_model  # see saved_by
        from npxception.weights_tools.tf_bundle import bundle_prefix  # see saved_by

        return checkpoint_model(bundle_prefix(path))[0], False
    if fmt == "zip" and not path.name.endswith(".keras"):
        # Keras picks the archive loader by the name (an .h5 name gets its HDF5 loader, which finds an HDF5
        # superblock wherever one is planted): what it would open is not the archive read and vetted
        raise ValueError(f"{path}: a .keras zip archive (by its bytes) that Keras would not open as one under "
                         f"the name {path.name!r}: give it the .keras suffix")
    if fmt in ("zip", "keras_dir"):
        # a .keras archive, or Keras 3's model.save(dir, zipped=False): tf_keras 2.x writes the archive too
        return _archive_writer(fmt, path), True
    if fmt == "keras_sharded":
        return "keras", False  # save_weights("x.weights.json", max_shard_size=...): Keras 3's load_weights reads it
    with h5py.File(path, "r") as f:
        version = f.attrs.get("keras_version")
        legacy = "model_weights" in f or "layer_names" in f.attrs
        full_model = "model_weights" in f and "model_config" in f.attrs
    if not legacy:
        # layers/<class key>/vars/<i>: Keras 3's save_weights("m.weights.h5"), and tf_keras 2.x's
        return _weights_writer(path, config), False
    version = version.decode() if isinstance(version, bytes) else str(version or "")
    return ("keras" if version.startswith("3.") else "tf_keras"), full_model


def is_multi_file_save(path) -> bool:
    """True for a save that is not one file: a directory (a tf_keras SavedModel, a checkpoint directory,
    Keras 3's ``model.save(dir, zipped=False)``) or a TensorFlow checkpoint's prefix (``ckpt``, with no file
    of that name: ``ckpt.index`` beside it). Decided from the path alone, before anything is opened."""
    path = pathlib.Path(path)
    return path.is_dir() or (not path.exists() and path.with_name(path.name + ".index").is_file())


def is_keras_save(path) -> bool:
    """True for what compare and convert run in Keras, by the path alone: a ``.keras``, ``.h5`` or
    ``.hdf5`` file, a checkpoint's ``.index``, the ``.weights.json`` index of Keras 3 sharded weights, or a
    save that is not one file (:func:`is_multi_file_save`)."""
    path = pathlib.Path(path)
    return (path.suffix.lower() in (".keras", ".h5", ".hdf5", ".index") or path.name.endswith(".weights.json")
            or is_multi_file_save(path))


class FrameworkError(ValueError):
    """Keras or TensorFlow failed to open a file: its own words (``detail``), cut to one bounded line
    (:func:`framework_message`), after the file's name and the framework's (``framework``, with its version)."""

    def __init__(self, path, framework: str, detail: str):
        self.path, self.framework, self.detail = path, framework, detail
        super().__init__(f"{path}: {framework} could not open it ({detail})")


class _Refused(ValueError):
    """A refusal of ours while the framework opens a file: passed on as it is, never taken for the framework's."""


# How much of a framework's error reaches our one-line error: its first line, cut here. Keras 3's "Could not
# locate class" ends its first line with the whole model config (~109 KB for an Xception, review 30 F1); the
# class, module and the start of the config that say what failed fit in far less.
FRAMEWORK_MESSAGE_CHARS = 300


def framework_message(exc: BaseException, limit: int = FRAMEWORK_MESSAGE_CHARS) -> str:
    """``"TypeError: <its first non-empty line>"``, that line cut to ``limit`` characters with "..."."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    if len(first) > limit:
        first = first[:limit].rstrip() + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _import(name: str):
    try:
        with _quiet():
            return importlib.import_module(name)
    except ImportError:
        raise ImportError(f"running this Keras file needs {name} ({pip_install('keras')}); without "
                          "a framework, dump its activations to .npz and compare with that") from None


def load(path, *, config=None, model=None):
    """The Keras model stored at ``path``, opened by the framework that wrote it, in its safe mode.

    The caller vets a file from anyone first: compare and ``convert --check-with-keras`` open it through
    ``weights_tools.vetting.open_in_keras``.

    ``path``: every form the converter reads, a directory of checkpoints included (its latest, as
    ``tf.train.latest_checkpoint`` finds it). ``config``: the architecture of a weights-only file (a
    ``.keras`` archive or ``config.json``). ``model``: our converted model, which says for a
    weights-only file without config which ``applications.Xception`` to build.
    """
    # weights_tools imports npxception at import time, not the reverse: the converter's reading of the path
    from npxception.weights_tools.errors import ConversionError  # see above
    from npxception.weights_tools.formats import resolve_source  # see above

    path = pathlib.Path(path)
    fmt, source = resolve_source(path)  # a checkpoint directory: the prefix its checkpoint file names
    name, full_model = _saved_by(fmt, source, config=config)
    fw = _import(name)
    try:
        with _quiet(), _safe_mode(name):
            return _open(fw, name, fmt, source, path, full_model, config, model)
    except (_Refused, ConversionError):
        raise
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # noqa: BLE001 - anything the framework raises, in one bounded line
        raise FrameworkError(path, f"{name} {getattr(fw, '__version__', '?')}", framework_message(exc)) from exc


def _open(fw, name, fmt, source, path, full_model, config, model):
    """:func:`load`'s model, once the framework ``fw`` (named ``name``) is imported."""
    from npxception.weights_tools.savedmodel import VARIABLES, read_metadata  # see load
    from npxception.weights_tools.tf_bundle import bundle_prefix  # see load
    from npxception.weights_tools.keras3_checkpoint import checkpoint_model  # see load

    if fmt == "savedmodel":
        # Rebuilt from the config just vetted and loaded with the checkpoint under variables/: tf_keras'
        # own SavedModel loader revives a layer it cannot rebuild from the graph saved beside it, which
        # can call any TensorFlow op (docs/security.md)
        config_json = json.dumps(read_metadata(source)[0])
        kmodel = fw.models.model_from_json(config_json)
        _restore_checkpoint(kmodel, source / VARIABLES)
        return kmodel
    if full_model:
        return _load_model(fw, name, source)  # Keras 3 loads model.save(dir, zipped=False) as its archive
    if config is not None:
        cpath = pathlib.Path(config)
        if cpath.suffix == ".keras":
            kmodel = _load_model(fw, name, cpath)
        else:
            from npxception.weights_tools.reading import _config_from  # see load

            # read within its size cap again (review 31, R8: the file may have changed since it was vetted)
            kmodel = fw.models.model_from_json(json.dumps(_config_from(cpath, str(cpath))))
    elif model is not None:
        _check_rebuildable(path, model)
        pooling = next((h["kind"][7:10] for h in model.head if h["kind"].startswith("global_")), None)
        kmodel = fw.applications.Xception(
            weights=None, include_top=False, pooling=pooling,
            input_shape=model.input_shape if model.input_shape[0] else None)
        if model.include_top:
            y = fw.layers.Dense(model.classes, activation=_keras_activation(name, model.classifier_activation),
                                name="predictions")(kmodel.output)
            kmodel = fw.Model(kmodel.input, y)
    else:
        raise _Refused(f"{path}: a weights-only file records no architecture; pass the model's "
                       ".keras archive or config.json as config")
    if fmt == "tf_checkpoint":  # loaded by its prefix, from where the checkpoint holds the model
        source = bundle_prefix(source)
        _restore_checkpoint(kmodel, source, checkpoint_model(source)[1])
    else:
        # an HDF5 file (legacy .h5, Keras 3 .weights.h5): resolve_source refused one with a checkpoint's
        # .index beside it, which tf_keras' load_weights would read instead
        kmodel.load_weights(source)
    return kmodel


def _keras_activation(framework: str, ours) -> str:
    """The name ``framework`` ("keras" or "tf_keras") gives our head's activation ``ours``: a hard sigmoid
    by the name of the Keras that computes it, refused in the other (head_schema.VERSIONED_ACTIVATIONS)."""
    for keras_name, (keras2, keras3) in head_schema.VERSIONED_ACTIVATIONS.items():
        if ours in (keras2, keras3):
            if (ours == keras3) != (framework == "keras"):
                raise _Refused(f"the model's classifier computes {ours!r}, which {framework}'s {keras_name!r} "
                                 "is not: this file cannot run as that model there")
            return keras_name
    return ours or "linear"


def _restore_checkpoint(kmodel, prefix, child: str = "") -> None:
    """Restore the TensorFlow checkpoint at ``prefix`` into ``kmodel``, by TensorFlow's checkpoint API,
    never ``load_weights``, which guesses the format from the name: it reads a prefix ``ckpt.h5`` as an
    HDF5 file ``ckpt.h5``, one never vetted. ``child``: the name a ``tf.train.Checkpoint(model=...)`` gives
    the model (its ``CheckpointManager``'s, tf_keras ``BackupAndRestore``'s); "" for a model saved as the
    root (``save_weights``, ``ModelCheckpoint``, a SavedModel's variables)."""
    tf = _import("tensorflow")
    if child:
        # read(), not restore(): a checkpoint written by write() holds no save_counter, which restore() then
        # reports as an object left unmatched; the model's variables are what must match
        status = tf.train.Checkpoint(**{child: kmodel}).read(str(prefix))
    else:
        # what tf_keras' load_weights does once it has decided on a checkpoint (Model._checkpoint.read)
        status = tf.train.Checkpoint(root=kmodel).read(str(prefix))
    # a checkpoint's optimizer state has no place in an uncompiled model, as with compile=False;
    # without this, TensorFlow warns about every variable left unrestored when the status is collected
    # (a line per optimizer slot, even after a refusal below)
    status.expect_partial()
    try:
        if child:
            # every variable of the model found: a model under another name would restore nothing, silently
            status.assert_existing_objects_matched()
        else:
            status.assert_nontrivial_match()
    except AssertionError as exc:  # TensorFlow's own words, cut to their first line
        raise _Refused(f"{prefix}: TensorFlow could not restore the checkpoint into the model rebuilt for "
                         f"it ({str(exc).splitlines()[0][:300]})") from None
    _finalize_nested(kmodel)


def _load_model(fw, name, path):
    """``load_model(path, compile=False)``, in safe mode where the framework's signature has it (Keras 3)."""
    if name == "keras":
        return fw.models.load_model(path, compile=False, safe_mode=True)
    return fw.models.load_model(path, compile=False)


@contextlib.contextmanager
def _safe_mode(name: str):
    """The framework's safe mode for everything it deserialises in the block: a ``lambda`` in a config is
    refused. tf_keras' legacy loaders (``.h5``, SavedModel, ``model_from_json``) leave it unset, and unset
    means off, unless the caller enters ``SafeModeScope(True)``."""
    try:
        scope = importlib.import_module(f"{name}.src.saving.serialization_lib").SafeModeScope
    except (ImportError, AttributeError):  # a version without it: the vetting above still refused every Lambda
        yield
        return
    with scope(True):
        yield


def _finalize_nested(kmodel) -> None:
    """``finalize_state()`` on every layer of the nested models too, after loading a checkpoint.

    tf_keras' ``load_weights`` finalizes the model's own layers only, so an adapted
    ``Normalization`` inside a nested model (a Sequential preprocessing block) keeps the
    statistics it was built with: its ``mean`` is a tensor computed from its variables,
    not the variables themselves (measured: block1_conv1 off by 2.8 relative, while
    ``model.predict`` of the model that saved the checkpoint agrees with the file).
    """
    stack = list(getattr(kmodel, "layers", []))
    while stack:
        layer = stack.pop()
        if hasattr(layer, "layers"):
            stack.extend(layer.layers)
        elif hasattr(layer, "finalize_state"):
            layer.finalize_state()


def _check_rebuildable(path, model) -> None:
    """Refuse to rebuild a weights-only file's model as ``applications.Xception`` unless that is what
    ``model`` (converted from the file) is: Keras' variant, with at most one global pooling and one Dense."""
    kinds = [h["kind"] for h in model.head]
    why = None
    if model.variant_name != "keras" or kinds[:1] not in ([], ["global_avg_pool"], ["global_max_pool"]) \
            or kinds[1:] not in ([], ["dense"]):
        why = f"variant {model.variant_name}, head {kinds}"
    elif model.input_stage:  # applications.Xception has none: it would be fed raw pixels
        why = "an input stage " + ", ".join(f"{s['name']} ({s['kind']})" for s in model.input_stage)
    elif any(not h.get("use_bias", True) for h in model.head if h["kind"] == "dense"):
        why = "a Dense layer without bias"
    if why:
        raise _Refused(f"{path}: a weights-only file records no architecture, and this one is not "
                         f"keras.applications.Xception's ({why}); pass the model's .keras archive or "
                         "config.json as config")


def _call_input(layer):
    """The tensor that feeds ``layer`` (a nested model) in its outer model's graph."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    tensors = getattr(nodes[-1], "input_tensors", None) if nodes else None
    tensors = list(tensors) if isinstance(tensors, (list, tuple)) else [] if tensors is None else [tensors]
    if len(tensors) != 1:
        raise ValueError(f"nested model {layer.name!r}: expected one input tensor, found {len(tensors)}")
    return tensors[0]


def _capture(fw, kmodel, wanted: dict, x) -> dict:
    """``{key: activation}`` for ``wanted = {key: path of layer names inside kmodel}``."""
    top = {key: path[0] for key, path in wanted.items() if len(path) == 1}
    deeper: dict[str, dict] = {}
    for key, path in wanted.items():
        if len(path) > 1:
            deeper.setdefault(path[0], {})[key] = path[1:]
    tensors = [kmodel.get_layer(name).output for name in top.values()]
    tensors += [_call_input(kmodel.get_layer(name)) for name in deeper]
    values = fw.Model(kmodel.inputs, tensors)(x, training=False)
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    out = {key: np.asarray(v) for key, v in zip(top, values)}
    for (name, inner), feed in zip(deeper.items(), values[len(top):]):
        out.update(_capture(fw, kmodel.get_layer(name), inner, feed))
    return out


def keras_dtype(kmodel) -> np.dtype:
    w = kmodel.weights[0]
    return np.dtype(w.dtype if isinstance(w.dtype, str) else w.dtype.name)


def computes_in(kmodel) -> tuple[str, str | None]:
    """``(dtype, policy)``: the least precise dtype a layer of ``kmodel`` (nested models included) computes in,
    and the dtype policy it does so with (``"mixed_float16"``...; None when every layer computes in its
    variables' dtype). Mixed precision keeps float32 variables, so :func:`keras_dtype` cannot tell."""
    rank = {"bfloat16": 0, "float16": 1, "float32": 2, "float64": 3}
    found, policy = keras_dtype(kmodel).name, None
    stack = list(kmodel.layers)
    while stack:
        layer = stack.pop(0)  # in model order: the policy named is the first layer's that computes in `found`
        stack[:0] = getattr(layer, "layers", [])
        dtype = str(getattr(layer, "compute_dtype", None))
        if rank.get(dtype, 3) < rank.get(found, 3) or (policy is None and dtype == found and rank[found] < 2):
            found, policy = dtype, getattr(getattr(layer, "dtype_policy", None), "name", None)
    return found, policy


def framework_of(kmodel):
    """The module of a live Keras model: ``keras`` (Keras 3) or ``tf_keras``."""
    return importlib.import_module(type(kmodel).__module__.split(".")[0])  # keras or tf_keras


def _layers(kmodel):
    """``(klayers, paths, data format)`` of a live Keras model, read from its config as the converter reads a file."""
    # weights_tools imports npxception at import time, not the reverse: the converter loads only when a
    # Keras model is matched to ours (at the top, importing npxception.compare would load weights_tools)
    from npxception.weights_tools.keras_config import flatten_config  # the converter's config walk, see above
    from npxception.weights_tools.layout import model_data_format  # the converter's data format rule, see above

    source = f"keras model {kmodel.name!r}"
    config = json.loads(json.dumps(kmodel.get_config(), default=str))
    klayers, paths, _ = flatten_config(config, source=source)
    return klayers, paths, model_data_format(klayers, source)


def _feed(kmodel, x, data_format):
    """Our NHWC batch as the Keras model takes it: in its dtype, NCHW for a channels_first model."""
    from npxception.weights_tools.layout import CHANNELS_FIRST, nchw  # see _layers

    x = np.asarray(x).astype(keras_dtype(kmodel))
    return nchw(x) if data_format == CHANNELS_FIRST else x


def _to_ours(a, data_format):
    """A Keras activation in our NHWC layout."""
    from npxception.weights_tools.layout import CHANNELS_FIRST, nhwc  # see _layers

    a = np.asarray(a)
    return nhwc(a) if data_format == CHANNELS_FIRST else a


def activations(model, kmodel, x, final_only=False, layers=None) -> dict[str, np.ndarray]:
    """``{our layer name: the Keras layer's output}`` on ``x``, for every layer the graph walk matches
    (only ``layers``, our names, when given; only the last one with ``final_only``).

    ``x`` is what both models take (raw pixels when ``model.takes_pixels``), NHWC; a channels_first
    Keras model is fed it as NCHW, and its activations come back NHWC.
    """
    from npxception.weights_tools.mapping import match_names  # the converter's name matching, see _layers

    klayers, paths, data_format = _layers(kmodel)
    names = match_names(klayers, variant=model.variant)
    wanted = {ours: paths[names[ours]] for ours in (model.layer_names if layers is None else layers)
              if ours in names}
    if final_only:
        wanted = dict(list(wanted.items())[-1:])
    with _quiet():
        acts = _capture(framework_of(kmodel), kmodel, wanted, _feed(kmodel, x, data_format))
    return {name: _to_ours(a, data_format) for name, a in acts.items()}


def stage_activations(kmodel, x) -> list[tuple[str, np.ndarray]] | None:
    """``[(layer name, its output)]`` of the Keras model's input-stage layers (Rescaling, Normalization,
    Resizing..., the chain between its input and the backbone, as the converter finds it:
    :func:`npxception.weights_tools.stage_chain._stage_chain`), in order, NHWC, on ``x``; empty when it has none; None
    when a step of it is an operation node Keras cannot name as a layer (then not compared, as before).
    compare compares them with our input stage's layers (:func:`npxception.compare.core._stage_rows`)."""
    from npxception.weights_tools.kinds import kind_of  # the converter's reading, see _layers
    from npxception.weights_tools.stage_chain import _stage_chain  # see _layers
    from npxception.weights_tools.walk import _collapse  # see _layers

    klayers, paths, data_format = _layers(kmodel)
    _, inputs, live = _collapse(klayers, f"keras model {kmodel.name!r}")
    roots = [k for k in live if kind_of(k) == "input"]
    if len(roots) != 1:
        return []
    wanted = {k.name: paths[k.name] for k in _stage_chain(roots[0], live, inputs) if k.name in paths}
    if not wanted:
        return []
    try:
        with _quiet():
            acts = _capture(framework_of(kmodel), kmodel, wanted, _feed(kmodel, x, data_format))
    except ValueError:  # an operation node of the chain (preprocess_input's true_divide) is no layer to capture
        return None
    return [(name.rsplit("/", 1)[-1], _to_ours(acts[name], data_format)) for name in wanted]


def output_activation(model, kmodel) -> str | None:
    """The activation ending the Keras layer matched to our last one, read from its config as the
    converter reads a head (weights_tools.head): ``"softmax"``, ``"sigmoid"``..., None for none (a
    Dense without one, a BatchNormalization), ``"unknown"`` (npxception.compare.report.UNKNOWN) when no
    layer matches or it is none of those."""
    from npxception.weights_tools.kinds import _activation_name, kind_of  # the converter's reading of a layer, see _layers
    from npxception.weights_tools.mapping import match_names  # see _layers

    klayers, _, _ = _layers(kmodel)
    name = match_names(klayers, variant=model.variant).get(model.layer_names[-1])
    k = next((k for k in klayers if k.name == name), None)
    kind = kind_of(k) if k is not None else None
    if kind in ("dense", "activation"):
        act = _activation_name(k.config)
        if act in head_schema.VERSIONED_ACTIVATIONS:  # the live model's Keras computes its own hard_sigmoid
            act = head_schema.VERSIONED_ACTIVATIONS[act][framework_of(kmodel).__name__ == "keras"]
        return None if act == "linear" else act
    return {"softmax": "softmax", "relu": "relu", "bn": None}.get(kind, "unknown")


def output(kmodel, x) -> np.ndarray:
    """The Keras model's own output on NHWC ``x``: ``kmodel(x, training=False)`` in its dtype, NHWC
    (a channels_first model is fed NCHW, and a 4-D output comes back NHWC)."""
    data_format = _layers(kmodel)[2]
    with _quiet():
        return _to_ours(kmodel(_feed(kmodel, x, data_format), training=False), data_format)
