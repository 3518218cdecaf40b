"""npxception's weight file: one ``.npz`` of ``layer/variable`` arrays plus a JSON manifest.

Layout (format version 2; docs/weights-format.md)::

    block1_conv1/kernel            (3, 3, 3, 32)      Keras layout, no transposes
    block1_conv1_bn/gamma          (32,)
    ...
    predictions/bias               (1000,)
    __manifest__                   0-d unicode array holding JSON:
        {"format": "npxception-weights", "format_version": 1, "variant": "keras",
         "input_shape": [299, 299, 3], "classes": 1000, "head": [...],
         "classifier_activation": "softmax", "labels": null, "source": "...",
         "dtype": "float32", "golden": {...}}
    __golden__/input               (1, H, W, 3) uint8  the golden test case (npxception.golden):
    __golden__/<layer>/stats       (3,) float64        its input and, per checked layer, the
    __golden__/<layer>/index       (32,) int64         digest of the expected activation,
    __golden__/<layer>/sample      (32,) float64       declared key by key in manifest["golden"]

Format version 1 is version 2 without the golden case; such files still load,
with a one-time notice.

Reading never unpickles (``allow_pickle=False``): object arrays are refused. Every
key, shape and dtype is checked against the architecture the manifest names, and
non-finite weights are refused, because nothing downstream would notice them.
Writing goes to a temporary file in the destination folder and is renamed into
place only when complete. Loading runs the golden case once per file per process
(:func:`npxception.golden.check_on_load`).
"""

from __future__ import annotations

import json
import os
import pathlib
import uuid
import zipfile

import numpy as np

from . import architecture as arch
from . import golden as gold

FORMAT = "npxception-weights"
FORMAT_VERSION = 2  # bump when the layout changes; readers refuse newer versions. 2: the golden case
MANIFEST_KEY = "__manifest__"


def atomic_write(path, write) -> pathlib.Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it into place.

    A failure at any point (KeyboardInterrupt included) leaves no file behind.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **model.manifest()}
    arrays = dict(model.weights)
    if golden:
        manifest["golden"], golden_arrays = gold.to_file(gold.golden_for(model))
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
    """Read and check a weight file's manifest; return ``(manifest, arrays)``.

    ``arrays`` holds the weights and the golden case's reserved ``__golden__/``
    arrays (:func:`split` separates them).
    """
    path = pathlib.Path(path)
    where = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such weight file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # an .npz is a zip archive
        raise ValueError(f"{where}: not a readable .npz weight file (it is not a zip archive"
                         + (", it is empty)" if not magic else ")"))
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise ValueError(f"{where}: holds pickled object arrays; npxception weight files "
                             "contain numeric arrays only and are never unpickled") from None
        raise ValueError(f"{where}: not a readable .npz weight file ({exc})") from None
    except zipfile.BadZipFile as exc:
        raise ValueError(_damaged(where, exc)) from None
    except (OSError, EOFError) as exc:
        raise ValueError(f"{where}: not a readable .npz weight file ({exc})") from None
    if MANIFEST_KEY not in arrays:
        raise ValueError(f"{where}: no {MANIFEST_KEY} entry; not an npxception weight file "
                         "(convert Keras files with `npxception convert`)")
    try:
        manifest = json.loads(str(arrays.pop(MANIFEST_KEY)))
    except (json.JSONDecodeError, TypeError) as exc:
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
    return manifest, arrays


def variant_from_manifest(value, where="manifest") -> arch.Variant:
    if isinstance(value, dict):
        fields = set(arch.Variant.__dataclass_fields__)
        if not set(value) <= fields or not all(isinstance(b, bool) for b in value.values()):
            raise ValueError(f"{where}: bad variant flags {value!r}; expected booleans for {sorted(fields)}")
        return arch.Variant(**value)
    return arch.resolve_variant(value)


def split(arrays: dict) -> tuple[dict, dict]:
    """``(weights, golden arrays)``: the reserved ``__golden__/`` keys apart."""
    reserved = {k: a for k, a in arrays.items() if k.startswith(gold.KEY_PREFIX)}
    return {k: a for k, a in arrays.items() if k not in reserved}, reserved


def load(path, *, verify=True):
    """Load a weight file into an :class:`~npxception.model.XceptionModel`.

    Raises ValueError naming the layer, the expected and the found shape for a
    missing, unexpected, misshapen or non-finite weight. With ``verify`` (the
    default) the file's golden test case runs once per file per process and a
    mismatch raises :class:`~npxception.golden.GoldenMismatch` (a ValueError);
    a file without one loads with a one-time :class:`~npxception.golden.NoGoldenWarning`.
    """
    model = _build(path)
    where = str(path)
    identity = gold.file_identity(path)
    if model.golden is None:
        gold.notify_missing(where, identity)
    elif verify and not gold.already_checked(identity, model.dtype.name):
        gold.check_on_load(model, model.golden, where)
        gold.mark_checked(identity, model.dtype.name)
    return model


def _build(path):
    """The model and its golden (unchecked) from a weight file."""
    from .model import XceptionModel

    manifest, arrays = read(path)
    arrays, golden_arrays = split(arrays)
    where = str(path)
    golden = gold.from_file(manifest.get("golden"), golden_arrays, where)
    try:
        variant = variant_from_manifest(manifest.get("variant", "keras"), where)
        head = manifest.get("head", [])
        input_shape = manifest.get("input_shape", [None, None, 3])
        if not (isinstance(input_shape, list) and len(input_shape) == 3):
            raise ValueError(f"input_shape must be [H, W, 3], found {input_shape!r}")
        labels = manifest.get("labels")
        model = XceptionModel(arrays, variant=variant, head=head, input_shape=input_shape,
                              labels=labels, source=manifest.get("source") or where)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if not msg.startswith(where):
            msg = f"{where}: {msg}"
        raise type(exc)(msg) from None
    if golden is not None and not golden.fits(model):
        raise ValueError(f"{where}: the golden case does not fit the model the manifest describes "
                         f"(layers {golden.layers}, input {golden.pixels.shape[1:3]}); re-convert the file "
                         "or replace the golden with `npxception verify --add`")
    model.golden = golden
    return model
