"""npxception's weight file: one ``.npz`` of ``layer/variable`` arrays plus a JSON manifest.

Layout (format version 1)::

    block1_conv1/kernel            (3, 3, 3, 32)      Keras layout, no transposes
    block1_conv1_bn/gamma          (32,)
    ...
    predictions/bias               (1000,)
    __manifest__                   0-d unicode array holding JSON:
        {"format": "npxception-weights", "format_version": 1, "variant": "keras",
         "input_shape": [299, 299, 3], "classes": 1000, "head": [...],
         "classifier_activation": "softmax", "labels": null, "source": "...",
         "dtype": "float32"}

Reading never unpickles (``allow_pickle=False``): object arrays are refused. Every
key, shape and dtype is checked against the architecture the manifest names, and
non-finite weights are refused, because nothing downstream would notice them.
Writing goes to a temporary file in the destination folder and is renamed into
place only when complete.
"""

from __future__ import annotations

import functools
import itertools
import json
import pathlib
import zipfile

import numpy as np

from . import architecture as arch
from .config import CONFIG
from .untrusted import atomic_write  # noqa: F401  (re-exported: show.py and others write through it)

FORMAT = "npxception-weights"
FORMAT_VERSION = 1  # bump when the layout changes; readers refuse newer versions
MANIFEST_KEY = "__manifest__"


@functools.lru_cache(maxsize=None)
def weight_budget() -> int:
    """The most bytes a valid weight file can hold: its parameter count x 8 (float64).

    The parameters are those of the largest backbone in the table (over every
    combination of the variant flags) plus ``CONFIG.head_params_margin`` for
    any head the converter supports. Readers charge every array against it
    before allocating.
    """
    flags = list(arch.Variant.__dataclass_fields__)
    backbone = max(sum(int(np.prod(s)) for s in arch.param_shapes(arch.backbone(
        arch.Variant(**dict(zip(flags, bits)))), []).values())
        for bits in itertools.product((False, True), repeat=len(flags)))
    return (backbone + CONFIG.head_params_margin) * np.dtype(np.float64).itemsize


def save(model, path) -> pathlib.Path:
    """Write ``model``'s weights and manifest to ``path`` atomically."""
    path = pathlib.Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path: npxception weight files end in .npz, found {str(path)!r}")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **model.manifest()}
    arrays = dict(model.weights)
    arrays[MANIFEST_KEY] = np.array(json.dumps(manifest))
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and check a weight file's manifest; return ``(manifest, arrays)``."""
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
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
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


def load(path):
    """Load a weight file into an :class:`~npxception.model.XceptionModel`.

    Raises ValueError naming the layer, the expected and the found shape for a
    missing, unexpected, misshapen or non-finite weight.
    """
    from .model import XceptionModel

    manifest, arrays = read(path)
    where = str(path)
    try:
        variant = variant_from_manifest(manifest.get("variant", "keras"), where)
        head = manifest.get("head", [])
        input_shape = manifest.get("input_shape", [None, None, 3])
        if not (isinstance(input_shape, list) and len(input_shape) == 3):
            raise ValueError(f"input_shape must be [H, W, 3], found {input_shape!r}")
        labels = manifest.get("labels")
        return XceptionModel(arrays, variant=variant, head=head, input_shape=input_shape,
                             labels=labels, source=manifest.get("source") or where)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if not msg.startswith(where):
            msg = f"{where}: {msg}"
        raise type(exc)(msg) from None
