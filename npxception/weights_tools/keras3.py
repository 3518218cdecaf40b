"""Keras 3 files: ``.keras`` archives and ``.weights.h5`` weight files.

A ``.keras`` archive is a zip holding ``config.json`` (the model config, read
here as plain JSON data only: never deserialised, see CVE-2025-1550 and
CVE-2025-9906), ``metadata.json`` and ``model.weights.h5``. The HDF5 member is
read from the zip into memory, with a size limit, and opened from a BytesIO:
nothing is ever extracted to disk. ``model.save("dir", zipped=False)`` writes
the same three files into a directory (:func:`open_directory`), read with the
same limits.

Weight paths (keras/src/saving/saving_lib.py, ``_save_container_state``): a
layer is addressed not by its name but by its class, snake-cased, with a
per-class counter in the order of its model's ``layers`` list::

    layers/functional/layers/separable_conv2d_3/vars/0     (the 4th SeparableConv2D)
    layers/dense_1/vars/1                                  (the 2nd Dense's bias)

A nested model is ``layers/<its class key>/layers/...``. A Functional's
``layers`` include its InputLayer; a Sequential's do not. The ``vars/<i>``
order is the layer's variable order, which is ``get_weights()`` order. Keras
3.x also writes the layer's real name as the ``name`` attribute of its ``vars``
group; when present it is checked against the config.

Training state is not model state: ``optimizer/...``, metrics, the model's own
``vars`` and augmentation layers' seed generators are counted and ignored
(:func:`training_state`), as ``load_model(..., compile=False)`` ignores them.

A ``.weights.h5`` file has no config. With ``config=`` (a ``.keras`` archive or
a ``config.json``) its paths are resolved exactly as an archive's. Without, the
architecture is Xception by assumption: our table gives each weighted layer's
class, hence its per-class key (``conv2d_2`` is Keras' third Conv2D, the block2
residual), and the layers come out in Keras' order with ``inbound=None`` for the
by-order rule. Only a single Dense after the backbone can be placed that way:
a weights-only file does not record a head's activations.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import re
import zipfile
import zlib

from npxception import architecture as arch
from npxception.config import CONFIG
from npxception.untrusted import (IrregularFileError, check_zip_directory, counter, loads_json, open_regular,
                                  short_repr)
from npxception.untrusted import read_capped as read_regular_capped
from npxception.weights import weight_budget

from .errors import ConversionError
from .graph import KLayer, set_aside, to_snake_case
from .hdf5 import HDF5_MAGIC, GuardedH5
from .keras_config import MODEL_CLASSES, _unwrap, is_operation, subclassed_model
from .kinds import COMPUTING_LAYER, POOLING_CLASS, _unsupported, pooling_of
from .weight_store import ShardStore

ZIP_MAGIC = b"PK\x03\x04"
# model.weights.h5 may hold what the largest valid model holds (the read budget,
# npxception.weights.weight_budget) plus HDF5's own metadata: a few hundred kB
# for Xception's ~240 datasets, given ample room here.
HDF5_OVERHEAD_BYTES = 64 * 1024**2
# The cap is what keeps a zip-compressed config from parsing into gigabytes.
MAX_JSON_BYTES = CONFIG.max_config_bytes
CHUNK_BYTES = 1 << 20  # members are inflated 1 MiB at a time, each chunk counted against the cap
_KIND_CLASS = {"conv": "Conv2D", "sepconv": "SeparableConv2D", "bn": "BatchNormalization"}


# ---- the archive -------------------------------------------------------------

def max_weights_bytes() -> int:
    return weight_budget() + HDF5_OVERHEAD_BYTES


def _member(z: zipfile.ZipFile, name: str, limit: int, where: str, magic: bytes = b"") -> bytes:
    """A member's bytes: its declared size checked first, then inflated in chunks under the cap.

    ``magic``: the bytes the member must start with, checked after inflating
    only those, before the rest.
    """
    try:
        info = z.getinfo(name)
    except KeyError:
        raise ConversionError(f"{where}: a zip without {name}; not a Keras .keras archive") from None
    if info.file_size > limit:
        raise ConversionError(f"{where}: {name} declares {info.file_size:,} bytes, over the {limit:,}-byte "
                              "limit; refused before decompressing")
    buf = io.BytesIO()
    try:
        with z.open(info) as f:
            head = f.read(len(magic))
            if head != magic:
                raise ConversionError(f"{where}: {name} is not an HDF5 file (its first bytes are {head!r})")
            buf.write(head)
            # zipfile stops at the declared size; the cap is checked again in case it does not.
            while chunk := f.read(CHUNK_BYTES):
                if buf.tell() + len(chunk) > min(limit, info.file_size):
                    raise ConversionError(f"{where}: {name} inflates beyond its declared {info.file_size:,} "
                                          "bytes")
                buf.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as exc:
        if isinstance(exc, ConversionError):
            raise
        raise ConversionError(f"{where}: cannot read {name} from the archive ({exc})") from None
    return buf.getvalue()


@contextlib.contextmanager
def _archive(src, where: str):
    """``zipfile.ZipFile`` of ``src`` (a path or a binary file object), its directory's size checked first."""
    with contextlib.nullcontext(src) if hasattr(src, "read") else open_regular(src) as f:
        check_zip_directory(f, where, max_entries=CONFIG.max_keras_entries, what="a .keras archive",
                            error=ConversionError)
        with zipfile.ZipFile(f) as z:
            yield z


def read_archive_config(src, where: str, *, with_version=False):
    """``config.json`` of a ``.keras`` archive, as plain data; with ``with_version``, ``(config,
    keras_version)``, the version its ``metadata.json`` records (None when it has no readable one)."""
    try:
        with _archive(src, where) as z:
            config = _json(_member(z, "config.json", MAX_JSON_BYTES, where), "config.json", where)
            if not with_version:
                return config
            version = None
            if "metadata.json" in set(z.namelist()):
                version = _keras_version(_member(z, "metadata.json", MAX_JSON_BYTES, where), where)
            return config, version
    except zipfile.BadZipFile as exc:
        raise ConversionError(f"{where}: not a readable zip archive ({exc})") from None


def read_directory_config(directory, where: str) -> tuple[dict, str | None]:
    """``(config, keras_version)`` of ``model.save("dir", zipped=False)``, as :func:`read_archive_config`: its
    JSON files read as regular files under the archive's limits."""
    directory = pathlib.Path(directory)
    config = _json(read_capped(directory / "config.json", MAX_JSON_BYTES), "config.json", where)
    version = None
    if os.path.lexists(directory / "metadata.json"):
        version = _keras_version(read_capped(directory / "metadata.json", MAX_JSON_BYTES), where)
    return config, version


def _keras_version(metadata: bytes, where: str) -> str | None:
    """The ``keras_version`` a ``metadata.json`` records, None when it records no string."""
    found = _json(metadata, "metadata.json", where)
    version = found.get("keras_version") if isinstance(found, dict) else None
    return version if isinstance(version, str) else None


def _json(data: bytes, name: str, where: str):
    try:
        return loads_json(data)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
        raise ConversionError(f"{where}: {name} is not valid JSON ({exc})") from None


def open_archive(src, where: str) -> tuple[dict, GuardedH5, str | None]:
    """``(config, weights, keras_version)`` of a ``.keras`` archive; the weights opened from memory.

    ``keras_version`` is what ``metadata.json`` records (``"3.6.0"``, or ``"2.15.0"`` for an
    archive tf_keras wrote); None when the archive has no readable one.
    """
    try:
        with _archive(src, where) as z:
            names: set[str] = set()
            for name in z.namelist():  # zipfile reads the last of two same-named entries, another reader the first
                if name in names:
                    raise ConversionError(f"{where}: entry {short_repr(name)} appears twice in the zip's directory; "
                                          "Keras writes each once (which one is the model's?)")
                names.add(name)
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ConversionError(_not_h5_archive(names, where))
            config = _json(_member(z, "config.json", MAX_JSON_BYTES, where), "config.json", where)
            version = None
            if "metadata.json" in names:
                version = _keras_version(_member(z, "metadata.json", MAX_JSON_BYTES, where), where)
            blob = _member(z, "model.weights.h5", max_weights_bytes(), where, magic=HDF5_MAGIC)
    except zipfile.BadZipFile as exc:
        raise ConversionError(f"{where}: not a readable zip archive ({exc})") from None
    return config, GuardedH5(io.BytesIO(blob), f"{where} (model.weights.h5)"), version


def _not_h5_archive(names: set[str], where: str) -> str:
    """Why a zip without config.json and model.weights.h5 is refused, naming what it holds."""
    held = ", ".join(short_repr(n) for n in sorted(names)[:6]) + (f" and {len(names) - 6} more" if len(names) > 6
                                                                  else "")
    if "config.json" in names and "model.weights.npz" in names:
        # keras.src.saving.saving_lib.save_model(model, path, weights_format="npz"): loadable by load_model
        return (f"{where}: a .keras archive whose weights are model.weights.npz (saved with weights_format=\"npz\"); "
                "npxception reads Keras' default, model.weights.h5. Load it with keras.saving.load_model and save "
                "it again with model.save(\"model.keras\"), then convert that")
    if "config.json" in names:
        return (f"{where}: a zip archive holding {held}, with no model.weights.h5: a .keras file without its weights "
                "(Keras leaves one so when model.save fails partway, as it does for a model quantized to float8). "
                "Convert a complete save: one whose model.save finished, and for a quantized model the float model "
                "saved before quantize() was called")
    return (f"{where}: a zip archive holding {held or 'nothing'}; not a Keras .keras file, which holds config.json "
            "and model.weights.h5")


def open_checked(path: pathlib.Path):
    """Open a regular file for reading (a FIFO would block open() forever); ConversionError otherwise."""
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise ConversionError(f"{path}: no such file") from None
    except IrregularFileError as exc:
        raise ConversionError(str(exc)) from None
    except OSError as exc:
        raise ConversionError(f"{path}: cannot open ({exc.strerror or exc})") from None


def read_capped(path, limit: int) -> bytes:
    """A regular file's bytes, its size checked against ``limit`` before reading (and the read capped)."""
    with open_checked(path) as f:
        try:
            return read_regular_capped(path, limit, f)
        except ValueError as exc:
            raise ConversionError(str(exc)) from None


@contextlib.contextmanager
def open_directory(directory, where: str):
    """``(config, weights, keras_version)`` of ``model.save("dir", zipped=False)``, as :func:`open_archive`:
    each file a regular file, the JSON files and ``model.weights.h5`` under the archive's limits."""
    directory = pathlib.Path(directory)
    config, version = read_directory_config(directory, where)
    name = f"{where}/model.weights.h5"
    with open_checked(directory / "model.weights.h5") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_weights_bytes():
            raise ConversionError(f"{name}: {size:,} bytes, over the {max_weights_bytes():,}-byte limit (what "
                                  "the largest supported Xception model holds, plus HDF5's metadata)")
        if f.read(len(HDF5_MAGIC)) != HDF5_MAGIC:
            raise ConversionError(f"{name}: not an HDF5 file")
        f.seek(0)
        with GuardedH5(f, name) as h5:
            yield config, h5, version


# ---- weights by config -------------------------------------------------------

def weight_keys(config, where: str) -> dict[tuple, str]:
    """``{(nested model, ..., layer name): "layers/.../<class key>"}`` from a model config."""
    class_name, cfg = _unwrap(config, where)
    out: dict[tuple, str] = {}

    def walk(class_name, cfg, path, prefix):
        if len(path) > CONFIG.max_model_nesting:  # flatten_config refuses this first; kept as a guard
            raise ConversionError(f"{where}: models nest more than {CONFIG.max_model_nesting} levels deep")
        used: dict[str, int] = {}
        for entry in cfg.get("layers", []):
            if not isinstance(entry, dict):
                continue
            cls = str(entry.get("class_name"))
            inner = entry.get("config") if isinstance(entry.get("config"), dict) else {}
            name = entry.get("name") or inner.get("name")
            if cls == "InputLayer" and class_name == "Sequential":
                continue  # Sequential.layers leaves out its InputLayer
            if is_operation(entry):
                continue  # an operation (`x / 127.5`) is no layer: no weights, no place in model.layers
            key = to_snake_case(cls)
            if key in used:
                used[key] += 1
                key = f"{key}_{used[key]}"
            else:
                used[key] = 0
            here = f"{prefix}layers/{key}"
            out[path + (name,)] = here
            if cls in MODEL_CLASSES or "layers" in inner:
                walk(cls, inner, path + (name,), here + "/")

    walk(class_name, cfg, (), "")
    return out


def _both_auto_names(key: str, *names: str) -> bool:
    """Whether every name is an auto-name of the class whose place ``key`` is (``conv2d``, ``conv2d_12``, for
    ``layers/conv2d_2``): Keras' loader places weights by that path, never by name, and the counters behind
    auto-names depend on what the process built before (a notebook that rebuilds the model to save its
    config: ``conv2d_12`` where the training run said ``conv2d_8``). Names a user gave are compared."""
    auto = re.compile(re.escape(re.sub(r"_[0-9]+$", "", key.rsplit("/", 1)[-1])) + r"(_[0-9]{1,9})?")
    return all(auto.fullmatch(n) for n in names)


def _read_vars(store, key: str, expected_name: str | None):
    """The arrays under ``key/vars`` in index order, with their paths, and the layer name the group records;
    ``(None, [], None)`` when there is no group ``key``. ``store``: :mod:`npxception.weights_tools.weight_store`'s."""
    members = store.members(key)
    if members is None:
        return None, [], None
    if "vars" not in members:
        return [], [], None
    vpath = f"{key}/vars"
    indices = store.members(vpath)
    if indices is None:
        raise ConversionError(f"{store.where}: {vpath} is a dataset where a group was expected")
    stored = store.name_attr(vpath)
    if expected_name is not None and stored is not None and stored != expected_name \
            and not _both_auto_names(key, stored, expected_name):
        raise ConversionError(f"{store.where}: {key} holds the weights of layer {stored!r}, but the config "
                              f"puts layer {expected_name!r} there")
    indices = sorted(indices, key=lambda s: -1 if counter(s) is None else counter(s))
    if [counter(s) for s in indices] != list(range(len(indices))):
        raise ConversionError(f"{store.where}: {key}/vars holds {short_repr(indices)}; expected 0, 1, ...")
    arrays = [store.stored(f"{vpath}/{s}") for s in indices]  # checked, read after the shape check
    return arrays, [f"{vpath}/{s}" for s in indices], stored


# Classes with no variables in Keras 3: a file with no group for one of them misses nothing (Keras' loader
# reads no group for a layer without variables). A file missing the group of any other layer is refused.
WEIGHTLESS = frozenset({
    "MaxPooling2D", "MaxPool2D", "AveragePooling2D", "AvgPool2D", "GlobalAveragePooling2D", "GlobalAvgPool2D",
    "GlobalMaxPooling2D", "GlobalMaxPool2D", "Activation", "ReLU", "LeakyReLU", "ELU", "Softmax", "Add",
    "Concatenate", "Flatten", "Reshape", "ZeroPadding2D", "Cropping2D", "Dropout", "SpatialDropout2D",
    "GaussianDropout", "GaussianNoise", "Rescaling", "Resizing", "CenterCrop",
})


def _missing_group(k, klayers, paths, keys, store) -> str:
    """The refusal for layer ``k`` (with weights) that has no group in ``store``, naming how many later
    layers with weights have none either: a sharded index that stops there is an interrupted save."""
    later = klayers[klayers.index(k) + 1:]
    more = sum(1 for x in later if x.class_name not in WEIGHTLESS and x.class_name != "InputLayer"
               and paths[x.name] in keys and store.members(keys[paths[x.name]]) is None)
    also = f" (nor {more} later layer(s) with weights)" if more else ""
    if isinstance(store, ShardStore):
        return (f"{store.where}: the index covers only part of the model (an interrupted save?): no shard it "
                f"lists holds weights for layer {k.name} (group {keys[paths[k.name]]}){also}; save the model "
                "again into an empty directory and convert that index")
    return f"{store.where}: no weights group {keys[paths[k.name]]} for layer {k.name}{also}"


def fill_weights(klayers, paths, config, store) -> dict[str, int]:
    """Put the arrays of ``store`` (a Keras 3 file or its shards, :mod:`npxception.weights_tools.weight_store`) into the
    flattened config's KLayers.

    Returns ``{what: array count}`` of the training state that was ignored
    (:func:`training_state`); any other array that belongs to no layer is refused.
    """
    keys = weight_keys(config, store.where)
    used = set()
    for k in klayers:
        path = paths[k.name]
        if k.class_name == "InputLayer" or path not in keys:
            continue
        arrays, names, _ = _read_vars(store, keys[path], path[-1])
        if arrays is None:
            if k.class_name in WEIGHTLESS:  # Keras writes an empty group for it, and loads nothing from one
                continue
            raise ConversionError(_missing_group(k, klayers, paths, keys, store))
        k.weights, k.weight_names = arrays, names
        used.update(names)
    # A nested model (`layers/<key>` holding layers of its own) has training state of its own: a model
    # compiled and fit, then wrapped (e.g. behind a Rescaling) and saved, keeps its optimizer under
    # `layers/<key>/optimizer/vars/<i>`, which load_model(..., compile=False) ignores as well.
    models = {here for here in keys.values() if any(k.startswith(here + "/layers/") for k in keys.values())}
    ignored, stray = set_aside(sorted(set(store.datasets()) - used),
                               lambda names: training_state(names, models))
    if stray:
        _refuse_wrapper(stray, klayers, paths, keys, store.where)
        raise ConversionError(f"{store.where}: weights {stray[0]} belong to no layer of the model config "
                              f"({len(stray)} unexpected array(s))")
    return ignored


# Wrappers that run the layer or model they hold on each step of a sequence: their weights are the inner
# layers', under layers/<wrapper>/layer/... (review 26, F5: refused as "belong to no layer", like a damaged file).
WRAPPERS = ("TimeDistributed", "Bidirectional")


def _refuse_wrapper(stray, klayers, paths, keys, where: str) -> None:
    """Refuse arrays under a config layer that is no model (a TimeDistributed holding the Xception) as that
    layer, by name and class, before they are called weights of no layer: the layer class is what is not
    converted."""
    owners = [(len(keys[paths[k.name]]), k) for k in klayers
              if paths.get(k.name) in keys and stray[0].startswith(keys[paths[k.name]] + "/")
              and k.class_name not in MODEL_CLASSES]
    if not owners:
        return
    k = max(owners, key=lambda pair: pair[0])[1]
    held = f"it holds {len(stray)} array(s) of layers inside it ({stray[0]}, ...)"
    if k.class_name in WRAPPERS:
        raise ConversionError(
            f"{where}: unsupported layer {k.name} ({k.class_name}): it wraps a layer or model and applies it to "
            f"each step of a sequence ({held}); npxception converts an Xception applied to images, not a "
            f"{k.class_name} of one. Convert the wrapped model on its own: "
            f"model.get_layer({k.name!r}).layer.save('inner.keras')")
    raise ConversionError(f"{_unsupported(k, where)} ({held})")


# Groups of a Keras 3 weight file that hold training state, not model state:
# keras.saving.load_model(..., compile=False) skips them (saving_lib loads the
# optimizer only into a compiled model, and metrics and seed generators are
# re-created when a model is compiled or trained), and so does the converter.
TRAINING_STATE = {
    "optimizer": "optimizer state",  # optimizer/vars/<i>: iterations, learning rate, moments
    "metrics": "metrics state",  # compiled metrics' accumulators
    "compile_metrics": "metrics state",
    "loss": "loss state",
    "vars": "model-level variables",  # the Model object's own trackers (no layer's weights)
}


def training_state(datasets, models=()) -> dict[str, list[str]]:
    """``{what: [dataset paths]}`` for the arrays of ``datasets`` that are training state.

    A path is training state when its first component is a group of
    :data:`TRAINING_STATE`, or the first after the key of one of the nested
    ``models`` (``layers/sequential/optimizer/vars/0``), or when it sits in a
    layer's ``seed_generator`` (the random state of augmentation layers, e.g.
    ``layers/random_flip/seed_generator/vars/0``): never a weight of the model.
    """
    out: dict[str, list[str]] = {}
    for path in datasets:
        parts = path.split("/")
        model = max((m for m in models if path.startswith(m + "/")), key=len, default=None)
        if model is not None:
            parts = path[len(model) + 1:].split("/")
        if parts[0] in TRAINING_STATE and len(parts) > 1:
            out.setdefault(TRAINING_STATE[parts[0]], []).append(path)
        elif any(p == "seed_generator" or p.startswith("seed_generator_") for p in parts[:-1]):
            out.setdefault("seed generator state", []).append(path)
    return out


# ---- weights without config: Xception by assumption ---------------------------

def _find_backbone_prefix(store) -> str:
    """Where the backbone's layers sit: "" (inline) or "layers/functional/" etc. (nested)."""
    if "layers" not in (store.members("") or []):
        raise ConversionError(f"{store.where}: no 'layers' group; not a Keras 3 weight file")
    layers = store.members("layers")
    if "separable_conv2d" in layers:
        return ""
    candidates = [f"layers/{name}/" for name in layers
                  if "layers" in (store.members(f"layers/{name}") or [])
                  and "separable_conv2d" in (store.members(f"layers/{name}/layers") or [])]
    if not candidates:
        # a subclassed model's save_weights: each layer it holds as an attribute (self.backbone = ...) is saved
        # under the attribute's name beside "layers", e.g. backbone/layers/separable_conv2d
        attributes = sorted(name for name in store.members("") or [] if name not in ("layers", "vars", "optimizer"))
        nested = [name for name in attributes
                  if "separable_conv2d" in (store.members(f"{name}/layers") or [])]
        if nested:
            raise ConversionError(
                f"{store.where}: the Xception backbone is under {nested[0]}/layers/, beside the root groups "
                f"{', '.join(attributes[:8])}: the save_weights of {subclassed_model('its layers saved under its attributes ' + ', '.join(attributes[:8]), described=True)}")
    if len(candidates) != 1:
        raise ConversionError(f"{store.where}: cannot find an Xception backbone (no SeparableConv2D layers)"
                              if not candidates else f"{store.where}: several nested models hold "
                              f"SeparableConv2D layers ({', '.join(candidates)}); give the config")
    return candidates[0]


def klayers_without_config(store) -> tuple[list[KLayer], dict[str, int]]:
    """``(klayers, ignored)`` for an Xception ``.weights.h5``: KLayers in Keras' layer order
    (``inbound=None``), and the training state left out (as :func:`fill_weights`)."""
    prefix = _find_backbone_prefix(store)
    counters: dict[str, int] = {}
    klayers, used = [], set()
    for layer in arch.backbone("keras"):
        if layer.kind not in _KIND_CLASS:
            continue
        cls = _KIND_CLASS[layer.kind]
        base = to_snake_case(cls)
        n = counters.get(base, -1) + 1
        counters[base] = n
        key = f"{prefix}layers/{base}" + (f"_{n}" if n else "")
        arrays, names, stored = _read_vars(store, key, None)
        if arrays is None:
            raise ConversionError(f"{store.where}: no weights group {key} (our {layer.name}); "
                                  "not Xception weights")
        # Keras 3.x records the layer's own name ("block1_conv1") on its vars group: what tells Keras'
        # Xception from a model built with the same layers (by_order._file_variant)
        stored = stored if arrays else None
        klayers.append(KLayer(name=stored or key, class_name=cls, inbound=None, weights=arrays,
                              weight_names=names))
        used.update(names)
    # What is left is the head: Dense layers at the top level, in counter order.
    backbone = {prefix.rstrip("/")} if prefix else set()  # a compiled backbone's own optimizer state
    ignored, rest = set_aside(sorted(set(store.datasets()) - used), lambda names: training_state(names, backbone))
    dense_keys = sorted({r.rsplit("/vars/", 1)[0] for r in rest},
                        key=lambda s: (s.rsplit("_", 1)[0], counter(s.rsplit("_", 1)[-1]) or 0))
    for key in dense_keys:
        arrays, names, stored = _read_vars(store, key, None)
        cls = "Dense" if key.split("/")[-1].startswith("dense") else to_camel(key.split("/")[-1])
        # Keras 3.x records the layer's own name ("predictions") on its vars group.
        stored = stored if arrays else None
        klayers.append(KLayer(name=stored or key, class_name=cls, inbound=None, weights=arrays,
                              weight_names=names))
    # Weightless layers that compute something, named by their groups (layers/rescaling): listed, without
    # weights, for by_order to refuse; their parameters are in the config only
    for group in dict.fromkeys(("layers", f"{prefix}layers")):
        for name in store.members(group) or []:
            if COMPUTING_LAYER.fullmatch(name) and f"{group}/{name}" not in dense_keys:
                klayers.insert(0, KLayer(name=f"{group}/{name}", class_name=to_camel(name), inbound=None,
                                         weights=[], weight_names=[]))
            elif (pooling := pooling_of(name)) and f"{group}/{name}" not in dense_keys:
                # a global pooling layer (weightless), kept by its group's name: the head's pooling (by_order)
                klayers.append(KLayer(name=f"{group}/{name}", class_name=POOLING_CLASS[pooling],
                                      inbound=None, weights=[], weight_names=[]))
    return klayers, ignored


def to_camel(key: str) -> str:
    return "".join(p.capitalize() for p in re.sub(r"_\d+$", "", key).split("_"))
