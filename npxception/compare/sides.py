"""The other side of a comparison: whatever it is, it becomes named NHWC activations.

:func:`open_other` turns what the user passed (a Keras model, a Keras file, an
ONNX file, a dict or ``.npz`` dump) into an :class:`Other`: a callable
``other(x) -> {name: activation}`` plus what is known about it (label, dtype,
the input it saw, whether it can be re-run on a new input). Everything after
that (name maps, layouts, errors) is the same for every kind of port.

A dump can carry the input its activations came from under the reserved key
:data:`INPUT_KEY`; compare then checks that both sides saw the same input.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import keras_side
from ..untrusted import open_regular
from .names import resolve_names
from .onnx_side import onnx_runner

# The reserved dump key for the input batch the dumped activations were computed from.
INPUT_KEY = "__input__"


@dataclass
class Other:
    """The other side. ``run(x)`` returns ``{their name: activation}`` for input batch ``x``
    (NHWC, preprocessed as ours); a dump ignores ``x`` (``fixed`` is True)."""

    label: str
    run: Callable[[np.ndarray], dict]
    dtype: str | None = None  # the precision it computes in ("float16", "bfloat16"...); None: judge by the arrays
    fixed: bool = False  # a dump: its activations are for one input only
    layout: str | None = None  # "NCHW" / "NHWC", or None to detect tensor by tensor
    names: dict = field(default_factory=dict)  # {their name: our name}, already applied by run()
    final: Callable[[np.ndarray], np.ndarray] | None = None  # the final output only, when cheaper
    no_names: str = ""  # why none of its intermediate names matched ours, when none did (an ONNX graph)
    notes: list = field(default_factory=list)  # what the report should say about it (a folded BN)

    def __call__(self, x):
        return self.run(x)


def is_keras_model(obj) -> bool:
    mod = type(obj).__module__
    return hasattr(obj, "get_layer") and hasattr(obj, "layers") and mod.split(".")[0] in ("keras", "tf_keras", "tensorflow")


def keras_dtype(kmodel):
    return keras_side.keras_dtype(kmodel)


def keras_activations(model, kmodel, x, final_only=False):
    """Activations of every Keras layer matched to ours by the converter's graph walk,
    nested backbones reached by their path (:mod:`npxception.keras_side`)."""
    return keras_side.activations(model, kmodel, x, final_only=final_only)


def load_keras_file(path, *, config=None, model=None):
    """The Keras model in ``path``, opened by the framework that wrote it (TensorFlow is imported
    only here); ``config`` gives a weights-only file its architecture.

    The file may come from anyone: before Keras or h5py's high-level reader sees it, it goes through
    the converter's guarded walk (headers only: no external or soft links, no external or virtual
    datasets, sizes within the read budget; docs/security.md), which Keras itself does not do.
    """
    import weights_tools  # imports npxception at import time, not the reverse: loaded for a Keras file

    try:
        with weights_tools.open_layers(path, config=config):
            pass
    except weights_tools.ConversionError as exc:
        raise ValueError(str(exc)) from None
    return keras_side.load(path, config=config, model=model)


def load_dump(path) -> dict:
    """A ``.npz`` dump: a regular file (a FIFO would block), no pickles, numeric arrays only."""
    with open_regular(path) as f, np.load(f, allow_pickle=False) as data:
        out = {}
        for k in data.files:
            a = data[k]
            if a.dtype.kind not in "fiu":
                # numpy has no bfloat16: np.save writes a torch/ml_dtypes bfloat16 array as raw 2-byte records
                hint = (" (bfloat16? numpy cannot read it: save bfloat16 activations as float32, "
                        "tensor.float(); compare then sees the bfloat16 rounding)") if a.dtype.itemsize == 2 else ""
                raise ValueError(f"{path}: {k!r} has dtype {a.dtype}; expected a numeric activation array{hint}")
            out[k] = a
        return out


def open_other(model, other, *, layout=None, names=None, config=None) -> Other:
    """What ``other`` is -> an :class:`Other`; see the package docstring for the kinds.

    ``config``: the architecture of a weights-only Keras file (``.keras`` or ``config.json``).
    """
    mapping = resolve_names(names, model.layer_names)
    if is_keras_model(other):
        return Other(f"keras model {other.name!r}", lambda x: keras_activations(model, other, x),
                     keras_dtype(other), layout="NHWC", final=_keras_final(model, other))
    if isinstance(other, dict):
        acts = dict(other)
        return Other("activation dict", lambda x: _renamed(acts, mapping), None, fixed=True,
                     layout=layout, names=mapping)
    if not isinstance(other, (str, pathlib.Path)):
        raise TypeError(f"other: expected a keras.Model, a path or a dict of activations, "
                        f"found {type(other).__name__}")
    path = pathlib.Path(other)
    tensorflow_save = keras_side.is_tensorflow_save(path)  # a SavedModel directory, a checkpoint prefix
    if not path.is_file() and not tensorflow_save:
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        acts = load_dump(path)
        return Other(str(path), lambda x: _renamed(acts, mapping), None, fixed=True, layout=layout,
                     names=mapping)
    if suffix == ".onnx":
        side = onnx_runner(model, path, layout, mapping)
        return Other(str(path), side.run, side.precision, layout=layout or None, names=mapping,
                     no_names=side.no_names, notes=side.notes,
                     final=lambda x: side.run(x, final_only=True)[model.layer_names[-1]])
    if suffix in (".keras", ".h5", ".hdf5") or tensorflow_save:
        kmodel = load_keras_file(path, config=config, model=model)
        return Other(str(path), lambda x: keras_activations(model, kmodel, x), keras_dtype(kmodel),
                     layout="NHWC", final=_keras_final(model, kmodel))
    raise ValueError(f"{path}: expected a .keras, .h5, .onnx or .npz file, a tf_keras SavedModel directory "
                     "or a TensorFlow checkpoint (its prefix or .index)")


def _keras_final(model, kmodel):
    return lambda x: keras_activations(model, kmodel, x, final_only=True)[model.layer_names[-1]]


def _renamed(acts: dict, mapping: dict) -> dict:
    """Apply ``{their name: our name}``; names the map does not mention stay as they are."""
    if not mapping:
        return dict(acts)
    return {mapping.get(k, k): v for k, v in acts.items()}


def to_nhwc(acts, ours_shapes, layout):
    """Their 4-D activations in NHWC. ``layout=None`` detects per tensor, only when unambiguous."""
    out = {}
    for name, a in acts.items():
        a = np.asarray(a)
        if a.ndim == 4:
            lay = layout
            mine = ours_shapes.get(name)
            if lay is None and mine is not None:
                if a.shape == mine:
                    lay = "NHWC"
                elif (a.shape[0], a.shape[2], a.shape[3], a.shape[1]) == mine:
                    lay = "NCHW"
            if lay is None and name == INPUT_KEY and a.shape[1] == 3 and a.shape[3] != 3:
                lay = "NCHW"
            if lay == "NCHW":
                a = a.transpose(0, 2, 3, 1)
        out[name] = a
    return out
