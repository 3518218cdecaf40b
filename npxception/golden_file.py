"""How a golden test case (:mod:`npxception.golden`) is stored in a weight file, and read back checked.

A golden is a manifest section (its layers, precision, tolerance, provenance, and each reserved
array's shape, dtype and SHA-256) plus reserved arrays under ``__golden__/`` keys: the input pixels
and, per checked layer, ``stats``, ``index`` and ``sample`` (docs/weights-format.md). A weight file
is untrusted input, so every array is checked against its declaration and its seal before a golden
is built from it; :mod:`npxception.weights` writes and reads the file around it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .config import CONFIG
from .golden import RTOL, SEED, Digest, Golden, GoldenMismatch

KEY_PREFIX = "__golden__/"  # reserved: layer names never start with "__"
INPUT_KEY = KEY_PREFIX + "input"
PARTS = ("stats", "index", "sample")


def to_file(golden: Golden) -> tuple[dict, dict[str, np.ndarray]]:
    """``(manifest section, {reserved key: array})`` for a weight file."""
    arrays = {INPUT_KEY: golden.pixels}
    for d in golden.digests:
        for part in PARTS:
            arrays[f"{KEY_PREFIX}{d.layer}/{part}"] = getattr(d, part)
    section = {
        "input": {"key": INPUT_KEY, "seed": golden.seed, "to_model": golden.to_model},
        "layers": {d.layer: list(d.shape) for d in golden.digests},
        "keys": {k: {"shape": list(a.shape), "dtype": a.dtype.name, "sha256": _sha256(a)}
                 for k, a in arrays.items()},
        "source": golden.source,
        "precision": golden.precision,
        "rtol": golden.rtol,
        "written_by": golden.written_by,
    }
    return section, arrays


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _check_seal(section, reserved, where) -> None:
    """Each golden array against the SHA-256 recorded beside it: a golden altered after it was
    written fails here, naming its layer, before anything runs (the load check only runs the
    output; ``verify`` runs every layer)."""
    for key, spec in section["keys"].items():
        recorded = spec.get("sha256")
        if recorded is not None and recorded != _sha256(reserved[key]):
            part = key[len(KEY_PREFIX):]
            what = "its input" if key == section["input"]["key"] else f"layer {part.rsplit('/', 1)[0]}"
            raise GoldenMismatch(
                f"{where}: the golden test case fails at {what}: {key!r} no longer matches the SHA-256 "
                "recorded when the golden was written, so the golden itself was altered or damaged. "
                "Re-convert the file from its source, or replace the golden with `npxception verify --add` "
                "once you trust the weights.")


def expected_keys(section) -> dict[str, tuple[tuple, str]]:
    """``{reserved key: (shape, dtype)}`` declared by a manifest's golden section (for readers)."""
    if not isinstance(section, dict) or not isinstance(section.get("keys"), dict):
        raise ValueError("the manifest's golden section declares no keys")
    out = {}
    for key, spec in section["keys"].items():
        if not (isinstance(key, str) and key.startswith(KEY_PREFIX) and isinstance(spec, dict)
                and isinstance(spec.get("shape"), list) and spec.get("dtype") in ("uint8", "int64", "float64")):
            raise ValueError(f"the manifest's golden key {key!r} is malformed: expected "
                             f"'{KEY_PREFIX}...' with a shape list and a dtype (uint8, int64, float64)")
        out[key] = (tuple(int(d) for d in spec["shape"]), spec["dtype"])
    return out


def parse(section, reserved: dict[str, np.ndarray]) -> Golden:
    """The golden a manifest section and its reserved arrays describe, checked as :func:`from_file` checks
    it on load (ValueError, KeyError, TypeError, AttributeError on a malformed one). The writer runs it too
    (npxception.weights.save), so that no file is written whose golden its own loader refuses."""
    declared = expected_keys(section)
    layers = section["layers"]
    if not isinstance(layers, dict) or not layers:
        raise ValueError("the manifest's golden section lists no layers")
    for key in declared.keys() | reserved.keys():
        if key not in reserved:
            raise ValueError(f"golden array {key!r} is declared but missing")
        if key not in declared:
            raise ValueError(f"golden array {key!r} is not declared in the manifest")
        shape, dtype = declared[key]
        a = reserved[key]
        if a.shape != shape or a.dtype.name != dtype:
            raise ValueError(f"golden array {key!r}: expected {shape} {dtype}, found {a.shape} {a.dtype}")
    pixels = reserved[section["input"]["key"]]
    if (pixels.ndim != 4 or pixels.shape[0] != 1 or not 1 <= pixels.shape[3] <= CONFIG.max_input_channels
            or pixels.dtype != np.uint8):
        raise ValueError(f"the golden input must be (1, H, W, C) uint8, found {pixels.shape} {pixels.dtype}")
    digests = []
    for layer, shape in layers.items():
        parts = {p: reserved.get(f"{KEY_PREFIX}{layer}/{p}") for p in PARTS}
        if any(a is None for a in parts.values()):
            raise ValueError(f"golden digest of layer {layer!r} is incomplete")
        size = int(np.prod(shape))
        if parts["stats"].shape != (3,) or parts["index"].shape != parts["sample"].shape \
                or parts["index"].ndim != 1 or ((parts["index"] < 0) | (parts["index"] >= size)).any():
            raise ValueError(f"golden digest of layer {layer!r}: malformed (stats (3,), index within "
                             f"0..{size - 1} and sample of the same length expected)")
        if not all(np.isfinite(parts[p]).all() for p in ("stats", "sample")):
            raise ValueError(f"golden digest of layer {layer!r} contains NaN or Inf")
        digests.append(Digest(layer, tuple(int(d) for d in shape), **parts))
    rtol = {k: float(section["rtol"][k]) for k in RTOL}
    precision = section["precision"]
    if precision not in RTOL:
        raise ValueError(f"golden precision must be one of {sorted(RTOL)}, found {precision!r}")
    return Golden(pixels, tuple(digests), str(section["source"]), precision, rtol,
                  dict(section.get("written_by") or {}), int(section["input"].get("seed", SEED)),
                  str(section["input"]["to_model"]))


def from_file(section, arrays: dict[str, np.ndarray], where: str) -> Golden | None:
    """The golden of a file, checking every reserved key against its declaration; None if it has none."""
    reserved = {k: a for k, a in arrays.items() if k.startswith(KEY_PREFIX)}
    if section is None:
        if reserved:
            raise ValueError(f"{where}: holds golden arrays ({sorted(reserved)[0]!r}) but its manifest "
                             "declares no golden case")
        return None
    try:
        golden = parse(section, reserved)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{where}: the manifest's golden section is malformed ({type(exc).__name__}: "
                         f"{exc}); re-save the file or add a fresh one with `npxception verify --add`") from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}; the golden case is damaged: re-convert the file, or replace "
                         "the golden with `npxception verify --add`") from None
    _check_seal(section, reserved, where)
    return golden
