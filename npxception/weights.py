"""npxception's weight file: one ``.npz`` of ``layer/variable`` arrays plus a JSON manifest.

Layout (format versions 2 and 3; docs/weights-format.md)::

    block1_conv1/kernel            (3, 3, 3, 32)      Keras layout, no transposes
    block1_conv1_bn/gamma          (32,)
    ...
    predictions/bias               (1000,)
    __manifest__                   0-d unicode array holding JSON:
        {"format": "npxception-weights", "format_version": 2, "variant": "keras",
         "input_shape": [299, 299, 3], "classes": 1000, "head": [...],
         "classifier_activation": "softmax", "labels": null, "source": "...",
         "dtype": "float32", "golden": {...}, "input_stage": [], "feed": "preprocess_input",
         "source_data_format": "channels_last",   (or "channels_first", or null: not recorded)
         "source_dtype_policy": null,             (or "mixed_float16"...: the source computed in 16 bits)
         "source_layer_names": {"block2_residual_conv": "conv2d_2", ...},   (the source's names; {}: none)
         "name": "xception"}                      (model.name; absent in older files: "xception")
    __golden__/input               (1, H, W, 3) uint8  the golden test case (npxception.golden):
    __golden__/<layer>/stats       (3,) float64        its input and, per checked layer, the
    __golden__/<layer>/index       (32,) int64         digest of the expected activation,
    __golden__/<layer>/sample      (32,) float64       declared key by key in manifest["golden"]

Format version 1 is version 2 without the golden case; such files still load,
with a one-time notice. Format version 3 is version 2 plus a non-empty
``input_stage``: in-graph preprocessing (``Rescaling``, ``Normalization``,
``Resizing``...) that ``model(x)`` applies (:mod:`npxception.input_stage`);
``feed`` says what ``predict()`` gives the model: ``"pixels"`` (raw [0, 255],
when the stage rescales) or ``"preprocess_input"`` (``x / 127.5 - 1``).

Reading never unpickles (``allow_pickle=False``): object arrays are refused. Every
key, shape and dtype is checked against the architecture the manifest names, and
non-finite weights are refused, because nothing downstream would notice them.
Writing goes to a temporary file in the destination folder and is renamed into
place only when complete. Loading runs the golden case once per file per process
(:func:`npxception.golden.check_on_load`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import zipfile
import zlib

import numpy as np

from . import architecture as arch
from . import head_schema
from . import shell
from . import golden as gold
from . import golden_file
from .config import CONFIG
from .untrusted import (IrregularFileError, atomic_write, check_zip_directory, loads_json,  # noqa: F401
                        open_regular, short_repr)
# (atomic_write is re-exported: show.py and others write through npxception.weights)

FORMAT = "npxception-weights"
# Bump when the layout changes; readers refuse newer versions. 2: the golden case.
# 3: the manifest's "input_stage" (in-graph preprocessing, npxception.input_stage),
# written only by a model that has one, because a version-2 reader would skip
# the stage silently and compute something else; other files stay version 2.
# 4: "source_input_shape" differs from "input_shape" (the stage resizes or crops
# other sizes, npxception.input_stage): a version-3 reader would refuse those sizes
# and let predict() resize photos with load_img instead, a different answer;
# files whose source size is the backbone's keep version 3 or 2.
# 5: the stage holds "arithmetic" steps (preprocess_input's x / 127.5 - 1 as operation nodes,
# npxception.input_stage): a version-4 reader refuses the unknown step kind, but would not say
# that a newer npxception reads it; only such files are version 5.
# 6: the head holds a "flatten" step (Keras' Flatten after the backbone, npxception.architecture):
# a version-5 reader refuses the unknown head kind, but would not say that a newer npxception
# reads it; only such files are version 6.
# 7: "input_shape" has other channels than 3 (a grayscale model's 1, RGBA's 4; block1_conv1/kernel is
# (3, 3, C, 32)): a version-6 reader refuses the shape, but would not say that a newer npxception reads
# it; only such files are version 7.
# "source_data_format" (the Keras source's channels_last/channels_first, weights_tools.layout)
# bumps nothing: the weights are stored in one layout and model(x) takes NHWC whatever the
# source's format, so a reader that ignores the field computes the same answer; it only
# tells compare and --check-with-keras to feed Keras NCHW. "source_dtype_policy" (the 16-bit Keras
# policy the source computed in, "mixed_float16"..., npxception.dtype_policy) bumps nothing either: the
# weights compute in the file's dtype whatever it says; it tells compare and --check-with-keras to judge
# Keras at 16-bit precision.
# 8: the stage starts with a "cast" step (an integer Input, npxception.input_stage), or the head
# holds a batch_norm before its pooling (on the map, npxception.architecture): a version-7 reader
# refuses the unknown step kind or head order, but would not say that a newer npxception reads
# it; only such files are version 8.
FORMAT_VERSION = 8
WITH_INPUT_CAST = WITH_MAP_BN = 8
WITH_CHANNELS = 7
WITH_FLATTEN = 6
WITH_ARITHMETIC = 5
WITH_SOURCE_INPUT_SHAPE = 4
WITH_INPUT_STAGE = 3
WITHOUT_INPUT_STAGE = 2
MANIFEST_KEY = "__manifest__"
# numpy's own cap on an .npy header (np.lib.format's max_header_size default).
NPY_HEADER_MAX = 10_000
# Reserved (non-weight) arrays a manifest may declare, all together: a golden
# test case takes a few hundred kB.
RESERVED_BYTES = 16 * 1024**2


@functools.lru_cache(maxsize=None)
def weight_budget() -> int:
    """The most bytes a valid weight file can hold: its parameter count x 8 (float64).

    The parameters are those of the largest backbone in the table (20,861,480
    for both variants with RGB input; a stem for ``CONFIG.max_input_channels`` adds 0.3 M)
    plus ``CONFIG.head_params_margin`` for any head the converter supports. Readers charge
    every array against it before allocating.
    """
    backbone = max(sum(math.prod(s) for s in arch.param_shapes(arch.backbone(v), [],
                                                                CONFIG.max_input_channels).values())
                   for v in arch.VARIANTS.values())
    return (backbone + CONFIG.head_params_margin) * np.dtype(np.float64).itemsize


def save(model, path, *, golden=True) -> pathlib.Path:
    """Write ``model``'s weights, manifest and golden test case to ``path`` atomically.

    The golden is the one the model carries (Keras' output, from
    ``weights_tools.from_keras``) when it fits, else our float64 oracle's,
    computed once per model (seconds at 299x299). ``golden=False`` writes a file
    without one, which loads with a notice: for throw-away files only.
    """
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path: npxception weight files end in .npz, found {str(path)!r}")
    version = (WITH_INPUT_CAST if any(s["kind"] == "cast" for s in model.input_stage)
               else WITH_MAP_BN if head_schema.map_batch_norms(model.head)
               else WITH_CHANNELS if model.channels != 3
               else WITH_FLATTEN if head_schema.flatten_step(model.head)
               else WITH_ARITHMETIC if any(s["kind"] == "arithmetic" for s in model.input_stage)
               else WITH_SOURCE_INPUT_SHAPE if model.source_input_shape != model.input_shape
               else WITH_INPUT_STAGE if model.input_stage else WITHOUT_INPUT_STAGE)
    manifest = {"format": FORMAT, "format_version": version, **model.manifest()}
    arrays = dict(model.weights)
    if golden:
        manifest["golden"], golden_arrays = golden_file.to_file(gold.golden_for(model))
        try:  # what load checks: a file is never written that its own loader refuses
            golden_file.parse(manifest["golden"], golden_arrays)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not written: the model's golden test case (its "
                             f"{manifest['golden']['source']} output on the golden input) is unusable: "
                             f"{exc}") from None
        manifest["reserved"] = {k: list(a.shape) for k, a in golden_arrays.items()}  # for read()
        arrays.update(golden_arrays)
    arrays[MANIFEST_KEY] = np.array(json.dumps(manifest))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _damaged(where, exc) -> str:
    """A zip error in words; a CRC mismatch names the array whose bytes changed."""
    text = str(exc)
    if text.startswith("Bad CRC-32 for file"):
        member = text.split("'")[1] if text.count("'") >= 2 else "?"
        return (f"{where}: array {member.removesuffix('.npy')!r} is damaged: its bytes no longer match "
                "the CRC-32 recorded when the file was written (a changed byte on disk or in transfer); "
                "re-convert the file or restore it from a good copy")
    return f"{where}: not a readable .npz weight file ({text})"


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check a weight file; return ``(manifest, arrays)``.

    Headers before data: the manifest is read first (its size bounded); it
    fixes every key and shape the file may hold (:func:`expected_arrays`).
    Each member's declared size and its ``.npy`` header (key, shape, dtype) are
    checked against that before a byte of its data is decompressed, and the
    data is read with a cap. Unknown keys, object arrays and a head whose
    parameters exceed the read budget are refused before reading them.
    ``arrays`` holds the weights and any reserved arrays the manifest declares
    (the golden case's ``__golden__/`` arrays; :func:`split` separates them).
    A zip CRC mismatch names the array whose bytes changed.
    """
    where = str(path)
    if serving_graph(pathlib.Path(path)):  # convert refuses it too: say what to save instead (review 30, F6)
        raise ValueError(serving_graph_refusal(where, "not an npxception .npz weight file, and convert cannot read it "
                                                      "either"))
    tf_save = _tensorflow_save(pathlib.Path(path))
    if tf_save:
        raise ValueError(_convert_first(where, *tf_save))
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such weight file") from None
    except IrregularFileError as exc:
        raise ValueError(str(exc)) from None
    with f:
        magic = f.read(4)
        if magic == b"\x89HDF":
            raise ValueError(_convert_first(where, "a Keras HDF5 file"))
        if magic != b"PK\x03\x04" and magic and where.lower().endswith(".onnx"):  # a hint: the name says ONNX
            raise ValueError(f"{where}: named as an ONNX model, not an npxception .npz weight file; npxception "
                             f"reads ONNX only as the other side of a comparison: npxception compare --against "
                             f"{shell.arg(where)} --weights model.npz (the .npz converted from the Keras file "
                             "it was exported from)")
        if magic != b"PK\x03\x04":  # an .npz is a zip archive
            raise ValueError(f"{where}: not a readable .npz weight file (it is not a zip archive"
                             + (", it is empty)" if not magic else ")"))
        try:
            check_zip_directory(f, where, max_entries=CONFIG.max_npz_entries, what="an .npz weight file")
            with zipfile.ZipFile(f) as z:
                return _read_members(z, where)
        except zipfile.BadZipFile as exc:
            raise ValueError(_damaged(where, exc)) from None
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{where}: not a readable .npz weight file ({exc})") from None


def serving_graph(path: pathlib.Path) -> bool:
    """Whether ``path`` is a SavedModel directory without ``keras_metadata.pb``: a serving graph (Keras 3's
    ``model.export()``, ``tf.saved_model.save``), which records no Keras layers, so that no reader of
    npxception's can tell which weight is which layer's."""
    return (path / "saved_model.pb").is_file() and not (path / "keras_metadata.pb").exists()


def serving_graph_refusal(where: str, what: str) -> str:
    """The refusal of a :func:`serving_graph` directory, ``what`` saying who refuses it; convert's too
    (weights_tools.formats), so that predict and convert say the same thing to save instead."""
    return (f"{where}: a TensorFlow SavedModel without keras_metadata.pb: a serving graph (Keras 3's "
            f"model.export() or tf.saved_model.save), {what}: it records no Keras layers or config, so nothing "
            "says which weight is which layer's. Save the model itself instead: model.save('model.keras') "
            "(Keras 3), or model.save('model') / model.save('model.h5') in tf_keras; then npxception convert it")


def _tensorflow_save(path: pathlib.Path) -> tuple[str, str] | None:
    """``(what, extra convert option)`` when ``path`` is a tf_keras SavedModel directory, Keras 3's
    ``model.save(dir, zipped=False)``, or a TensorFlow checkpoint (its prefix, ``.index`` or directory),
    which `npxception convert` reads; else None. A hint for the error only: convert decides what it is."""
    if (path / "saved_model.pb").is_file():
        return "a TensorFlow SavedModel directory", ""
    if (path / "config.json").is_file():
        return "a Keras 3 .keras archive, unzipped (model.save(dir, zipped=False))", ""
    if (path / "checkpoint").is_file():
        return "a directory of TensorFlow checkpoints", " --config model.json"
    if path.name.endswith(".index") or (not path.exists() and path.with_name(path.name + ".index").exists()):
        return "a TensorFlow checkpoint", " --config model.json"
    return None


def _convert_first(where: str, what: str, extra: str = "") -> str:
    return (f"{where}: {what}, not an npxception .npz weight file; convert it first: "
            f"npxception convert {shell.arg(where)}{extra} -o model.npz")


def _read_members(z: zipfile.ZipFile, where: str):
    members: dict[str, zipfile.ZipInfo] = {}
    for info in z.infolist():
        if info.filename in ("config.json", "metadata.json", "model.weights.h5"):
            raise ValueError(_convert_first(where, "a Keras .keras archive"))
        if not info.filename.endswith(".npy"):
            raise ValueError(f"{where}: unexpected member {info.filename!r}; an .npz holds .npy arrays only")
        key = info.filename[:-len(".npy")]
        if key in members:
            raise ValueError(f"{where}: member {info.filename!r} appears twice")
        members[key] = info
    if MANIFEST_KEY not in members:
        raise ValueError(f"{where}: no {MANIFEST_KEY} entry; not an npxception weight file "
                         "(convert Keras files with `npxception convert`)")
    text = _read_npy(z, members.pop(MANIFEST_KEY), where, MANIFEST_KEY, shape=(), kinds="U",
                     max_bytes=CONFIG.max_manifest_bytes)
    manifest = _parse_manifest(str(text), where)
    expected = expected_arrays(manifest, where)
    unknown = [k for k in members if k not in expected]
    if unknown:
        raise ValueError(f"{where}: unexpected weight {unknown[0]!r}; it belongs to no layer of this "
                         "architecture and head" + (f" ({len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    arrays = {}
    for key, spec in expected.items():  # each member's size and header checked before its data
        if key in members:
            arrays[key] = _read_npy(z, members[key], where, key, shape=spec.shape, kinds=spec.kinds,
                                    max_bytes=spec.max_bytes)
    missing = [k for k in expected if k not in members]
    if missing:
        raise ValueError(f"{where}: missing weight {missing[0]!r} (expected shape {expected[missing[0]].shape})"
                         + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    return manifest, arrays


def _parse_manifest(text: str, where: str) -> dict:
    try:
        manifest = loads_json(text)
    except ValueError as exc:  # JSONDecodeError, or nested too deeply
        raise ValueError(f"{where}: the manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{where}: the manifest does not name format {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"{where}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where}: written by a newer npxception (format version {version}); "
                         f"this version reads format version {FORMAT_VERSION} or older. "
                         "Upgrade npxception to read it.")
    return manifest


def _channels(manifest: dict) -> int:
    """The input channels the manifest's ``input_shape`` declares (3 when absent: files before it existed)."""
    shape = manifest.get("input_shape", [None, None, 3])
    c = shape[2] if isinstance(shape, list) and len(shape) == 3 else None
    if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= CONFIG.max_input_channels:
        raise ValueError(f"input_shape: expected [H, W, C] with C, the channels, in "
                         f"[1, {CONFIG.max_input_channels}], found {short_repr(shape)}")
    return c


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    shape: tuple  # exactly this shape
    kinds: str  # allowed dtype kinds ("f": float32/float64 weights)
    max_bytes: int  # the member's largest valid size, checked before decompressing


def expected_arrays(manifest: dict, where: str) -> dict[str, ArraySpec]:
    """Every array a file with this manifest must hold: the weights of its architecture and head,
    plus the reserved arrays it declares.

    Reserved arrays (the extension point for data that is not a weight, such as
    a golden test case) are declared in the manifest as ``"reserved":
    {"__name__": [shape...], ...}``: names start with ``__``, dtypes are numeric,
    and together they stay under ``RESERVED_BYTES``.
    """
    try:
        variant = variant_from_manifest(manifest.get("variant", "keras"), where)
        head = head_schema.validate_head(manifest.get("head", []))
        shapes = arch.param_shapes(arch.backbone(variant), head, _channels(manifest))
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{where}: the manifest's architecture is invalid ({exc})") from None
    params = sum(math.prod(s) for s in shapes.values())
    if params * np.dtype(np.float64).itemsize > weight_budget():
        raise ValueError(f"{where}: the manifest's head makes {params:,} parameters, more than the "
                         f"{weight_budget() // 8:,} any supported model holds; refused before reading")
    out = {k: ArraySpec(tuple(s), "f", math.prod(s) * 8) for k, s in shapes.items()}
    reserved = manifest.get("reserved") or {}
    if not isinstance(reserved, dict):
        raise ValueError(f"{where}: the manifest's 'reserved' must map names to shapes, found {reserved!r}")
    total = 0
    for key, shape in reserved.items():
        if not (isinstance(key, str) and key.startswith("__") and key != MANIFEST_KEY and key not in out
                and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise ValueError(f"{where}: bad reserved array {key!r}: {shape!r}; expected a name starting "
                             "with '__' and a list of sizes")
        total += math.prod(shape) * 8
        out[key] = ArraySpec(tuple(shape), "fiub", math.prod(shape) * 8)
    if total > RESERVED_BYTES:
        raise ValueError(f"{where}: the reserved arrays claim {total:,} bytes, over the {RESERVED_BYTES:,} "
                         "allowed")
    return out


def npy_header(f, where: str, key: str) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at ``f``'s position (at most
    ``NPY_HEADER_MAX`` bytes read; the data is not touched); ValueError naming ``where`` and ``key``."""
    try:
        version = np.lib.format.read_magic(f)
        header = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if header is None:
            raise ValueError(f"unsupported .npy format version {version}")
        return header(f, max_header_size=NPY_HEADER_MAX)
    except ValueError as exc:
        raise ValueError(f"{where}: {key} has no readable .npy header ({exc})") from None


def _read_npy(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, key: str, *, shape, kinds: str,
              max_bytes: int) -> np.ndarray:
    """One member: declared size, then the .npy header, checked before its data is decompressed."""
    if info.file_size > max_bytes + NPY_HEADER_MAX:
        raise ValueError(f"{where}: {key} declares {info.file_size:,} bytes, more than its expected shape "
                         f"{shape} can take; refused before decompressing")
    with z.open(info) as f:
        found_shape, fortran, dtype = npy_header(f, where, key)
        if dtype.hasobject:
            raise ValueError(f"{where}: {key} holds pickled object arrays; npxception weight files "
                             "contain numeric arrays only and are never unpickled")
        if tuple(found_shape) != tuple(shape):
            raise ValueError(f"{where}: weight {key!r} has the wrong shape: expected {tuple(shape)}, "
                             f"found {tuple(found_shape)}")
        if dtype.kind not in kinds or (kinds == "f" and dtype not in (np.float32, np.float64)) \
                or dtype.fields is not None:
            raise ValueError(f"{where}: weight {key!r} has dtype {dtype}; expected "
                             + ("float32 or float64" if kinds == "f" else "a plain numeric or text dtype"))
        nbytes = math.prod(found_shape) * dtype.itemsize  # Python ints: np.prod wrapped (2**32, 2**32) to 0
        if nbytes > max_bytes:
            raise ValueError(f"{where}: {key} claims {nbytes:,} bytes, more than its expected {max_bytes:,}")
        data = f.read(nbytes)
        if len(data) != nbytes or f.read(1):
            raise ValueError(f"{where}: {key} holds {'fewer' if len(data) != nbytes else 'more'} bytes than "
                             "its .npy header says (truncated or corrupt)")
    return np.frombuffer(data, dtype=dtype).reshape(found_shape, order="F" if fortran else "C")


def variant_from_manifest(value, where="manifest") -> arch.Variant:
    if isinstance(value, dict):
        fields = set(arch.Variant.__dataclass_fields__)
        if not set(value) <= fields or not all(isinstance(b, bool) for b in value.values()):
            raise ValueError(f"{where}: bad variant flags {value!r}; expected booleans for {sorted(fields)}")
        return arch.Variant(**value)
    return arch.resolve_variant(value)


# A Keras layer name, nested models' prefixes included ("xception/conv2d_3"), is far shorter.
MAX_SOURCE_NAME = 1024


def source_names_from_manifest(value, layer_names: list[str], where="manifest") -> dict[str, str]:
    """The manifest's ``source_layer_names`` (``{our layer name: the source file's name}``), checked as
    untrusted: at most one entry per layer of ours, keys our layer names, values short strings, one-to-one,
    and none of them another of our layers' names (a capture by it would be ambiguous). Absent: ``{}``."""
    if value is None:
        return {}
    ours = set(layer_names)
    if not isinstance(value, dict) or len(value) > len(ours):
        raise ValueError(f"{where}: source_layer_names: expected at most {len(ours)} entries "
                         f"{{our layer name: source name}}, found {short_repr(value)}")
    for key, name in value.items():
        if key not in ours:
            raise ValueError(f"{where}: source_layer_names: {short_repr(key)} is not one of the model's "
                             "layers (see model.layer_names)")
        if not isinstance(name, str) or not 0 < len(name) <= MAX_SOURCE_NAME:
            raise ValueError(f"{where}: source_layer_names[{key!r}]: expected a layer name of 1 to "
                             f"{MAX_SOURCE_NAME} characters, found {short_repr(name)}")
        if name in ours and name != key:
            raise ValueError(f"{where}: source_layer_names[{key!r}] is {name!r}, another of the model's layers")
    if len(set(value.values())) != len(value):
        twice = sorted({n for n in value.values() if list(value.values()).count(n) > 1})
        raise ValueError(f"{where}: source_layer_names: {short_repr(twice[0])} names more than one layer")
    return dict(value)


def name_from_manifest(value, where="manifest") -> str:
    """The manifest's ``name`` (``model.name``), checked as untrusted: a string of 1 to ``MAX_SOURCE_NAME``
    characters. Absent (a file written before the field existed): Keras' default, ``"xception"``."""
    if value is None:
        return "xception"
    if not isinstance(value, str) or not 0 < len(value) <= MAX_SOURCE_NAME:
        raise ValueError(f"{where}: name: expected the model's name, a string of 1 to {MAX_SOURCE_NAME} "
                         f"characters, found {short_repr(value)}")
    return value


def capturable_source_names(names: dict, layer_names: list[str]) -> dict[str, str]:
    """The entries of a ``{our layer name: source name}`` map that name one layer each: what the manifest
    keeps and capture accepts (a source name shared by two of our layers, or equal to another of our
    layers' names, would be ambiguous)."""
    ours = set(layer_names)
    values = list(names.values())
    return {k: v for k, v in names.items()
            if k in ours and isinstance(v, str) and 0 < len(v) <= MAX_SOURCE_NAME and values.count(v) == 1
            and (v == k or v not in ours)}


def split(arrays: dict) -> tuple[dict, dict]:
    """``(weights, golden arrays)``: the reserved ``__golden__/`` keys apart."""
    reserved = {k: a for k, a in arrays.items() if k.startswith(golden_file.KEY_PREFIX)}
    return {k: a for k, a in arrays.items() if k not in reserved}, reserved
