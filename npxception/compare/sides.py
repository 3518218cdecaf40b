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

import dataclasses
import pathlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import head_schema
from .. import keras_side
from .inputs import INPUT_KEY, OTHER_FORMS, check_other_path, input_layout, native_order, read_dump
from .names import names_for
from .onnx_side import onnx_runner
from .report import UNKNOWN


@dataclass
class Other:
    """The other side. ``run(x)`` returns ``{their name: activation}`` for input batch ``x``
    (NHWC, preprocessed as ours); a dump ignores ``x`` (``fixed`` is True)."""

    label: str
    run: Callable[[np.ndarray], dict]
    dtype: str | None = None  # the precision it computes in ("float16", "bfloat16"...); None: judge by the arrays
    dtype_how: str | None = None  # how that precision is known, when the side says more than its dtype
    fixed: bool = False  # a dump: its activations are for one input only
    layout: str | None = None  # "NCHW" / "NHWC", or None to detect tensor by tensor
    names: dict = field(default_factory=dict)  # {their name: our name}, already applied by run()
    final: Callable[[np.ndarray], np.ndarray] | None = None  # the final output only, when cheaper
    no_names: str = ""  # why none of its intermediate names matched ours, when none did (an ONNX graph)
    notes: list = field(default_factory=list)  # what the report should say about it (a folded BN)
    # the activation its final output ends with ("softmax", "sigmoid", None for logits), as the model states
    # it; a dump states none (UNKNOWN), and the prediction agreement never guesses one (report.agreement)
    activation: str | None = UNKNOWN
    convs: dict = field(default_factory=dict)  # {our conv layer: their weights and pads}, from an ONNX graph
    # x -> [(name, output)] of their input-stage layers in order (a Keras model's Rescaling...); None: unknown
    stage: Callable | None = None
    theirs_only: list = field(default_factory=list)  # their names matching none of ours, never read (a dump's)

    def __call__(self, x):
        return self.run(x)


# What --their-activation accepts: the activations a head of ours can end with, by their Keras names.
STATED_ACTIVATIONS = tuple(a for a in head_schema.ACTIVATIONS if a is not None)


def activation_name(name: str, what: str = "their_activation") -> str | None:
    """A stated activation's Keras name -> what :attr:`Other.activation` holds (None for ``"linear"``:
    logits); an unknown name is refused, naming ``what`` and the names known."""
    if name not in STATED_ACTIVATIONS:
        raise ValueError(f"{what}: unknown activation {name!r}; expected a Keras activation name, one "
                         f"of {', '.join(STATED_ACTIVATIONS)} ('linear' for logits)")
    return None if name == "linear" else name


def stated_activation(side: Other, name: str | None, what: str = "their_activation") -> Other:
    """``side`` with the activation its final output ends with as the user states it (``"softmax"``,
    ``"sigmoid"``, ``"linear"`` for logits...: Keras' names): what a dump cannot say for itself. None leaves
    ``side`` as it is. A side that states its own (a Keras model, an ONNX graph's final op) must agree:
    two statements that differ are refused, naming both, never one picked."""
    if name is None:
        return side
    act = activation_name(name, what)
    if side.activation not in (UNKNOWN, act):
        own = "linear (logits)" if side.activation is None else side.activation
        raise ValueError(f"{what}: {side.label} states that its output ends with {own}, not {name}; "
                         f"leave {what} out for a model or graph that states its own")
    return dataclasses.replace(side, activation=act)


def is_keras_model(obj) -> bool:
    mod = type(obj).__module__
    return hasattr(obj, "get_layer") and hasattr(obj, "layers") and mod.split(".")[0] in ("keras", "tf_keras", "tensorflow")


def keras_dtype(kmodel):
    return keras_side.keras_dtype(kmodel)


def keras_precision(kmodel) -> tuple[str, str | None]:
    """``(dtype, how it is known)``: what a Keras model computes in (:func:`npxception.keras_side.computes_in`),
    and, for a 16-bit dtype policy (mixed precision), that policy, to which compare attributes its rounding."""
    dtype, policy = keras_side.computes_in(kmodel)
    if policy is None:
        return dtype, None
    return dtype, (f"the Keras model computes with the dtype policy {policy!r}; differences of its {dtype} "
                   "rounding are its own, not a port's")


def keras_activations(model, kmodel, x, final_only=False):
    """Activations of every Keras layer matched to ours by the converter's graph walk,
    nested backbones reached by their path (:mod:`npxception.keras_side`)."""
    return keras_side.activations(model, kmodel, x, final_only=final_only)


def open_other(model, other, *, layout=None, names=None, config=None) -> Other:
    """What ``other`` is -> an :class:`Other`; see the package docstring for the kinds.

    ``config``: the architecture of a weights-only Keras file (``.keras`` or ``config.json``).
    """
    mapping, name_notes = names_for(names, model)
    side = _open_other(model, other, layout=layout, mapping=mapping, config=config)
    if name_notes:
        side = dataclasses.replace(side, notes=name_notes + list(side.notes))
    logits = PORT_OUTPUTS.get(names) if isinstance(names, str) else None
    if logits is not None and side.activation is UNKNOWN and logits in mapping:
        # the port's own source says what its classifier returns (timm's fc: logits), as a graph's final op would
        side = dataclasses.replace(side, activation=None)
    return side


# A known port whose classifier returns logits, by the module that is its classifier: the timm model's
# forward ends at ``fc`` (no softmax; timm/models/xception.py, forward_head).
PORT_OUTPUTS = {"timm.legacy_xception": "fc"}


def _open_other(model, other, *, layout, mapping, config) -> Other:
    if is_keras_model(other):
        return Other(f"keras model {other.name!r}", lambda x: keras_activations(model, other, x),
                     *keras_precision(other), layout="NHWC", final=_keras_final(model, other),
                     activation=keras_side.output_activation(model, other),
                     stage=lambda x: keras_side.stage_activations(other, x))
    if isinstance(other, dict):
        acts = {k: native_order(v) for k, v in other.items()}
        return Other("activation dict", lambda x: _renamed(acts, mapping), None, fixed=True,
                     layout=layout, names=mapping)
    if not isinstance(other, (str, pathlib.Path)):
        raise TypeError(f"other: expected a keras.Model, a path or a dict of activations, "
                        f"found {type(other).__name__}")
    path = pathlib.Path(other)
    check_other_path(path)  # a regular file or a TensorFlow save; a FIFO or a device is named, never read
    suffix = path.suffix.lower()
    if suffix == ".npz":
        acts, unread = read_dump(path, model, mapping, layout)  # headers first, within a budget (inputs.py)
        return Other(str(path), lambda x: _renamed(acts, mapping), None, fixed=True, layout=layout,
                     names=mapping, theirs_only=[mapping.get(k, k) for k in unread])
    if suffix == ".onnx":
        side = onnx_runner(model, path, layout, mapping)
        return Other(str(path), side.run, side.precision, layout=layout or None, names=mapping,
                     no_names=side.no_names, notes=side.notes, activation=side.activation, convs=side.convs,
                     final=lambda x: side.run(x, final_only=True)[model.layer_names[-1]])
    if keras_side.is_keras_save(path):
        # weights_tools imports npxception at import time, not the reverse: the file (and config) is vetted
        # as the converter reads it, a Lambda refused by name, before Keras opens it in its safe mode
        from npxception.weights_tools.vetting import open_in_keras  # see above

        kmodel = open_in_keras(path, config=config, model=model)
        return Other(str(path), lambda x: keras_activations(model, kmodel, x), *keras_precision(kmodel),
                     layout="NHWC", final=_keras_final(model, kmodel),
                     activation=keras_side.output_activation(model, kmodel),
                     stage=lambda x: keras_side.stage_activations(kmodel, x))
    raise ValueError(f"{path}: expected {OTHER_FORMS}")


def _keras_final(model, kmodel):
    return lambda x: keras_activations(model, kmodel, x, final_only=True)[model.layer_names[-1]]


def _renamed(acts: dict, mapping: dict) -> dict:
    """Apply ``{their name: our name}``; names the map does not mention stay as they are."""
    if not mapping:
        return dict(acts)
    return {mapping.get(k, k): v for k, v in acts.items()}


def to_nhwc(acts, ours_shapes, layout, channels):
    """Their 4-D activations in NHWC. ``layout=None`` detects per tensor, only when unambiguous: by our
    layer's shape, and the input (:data:`INPUT_KEY`) by the model's ``channels`` where ``ours_shapes`` lacks
    it (:func:`~npxception.compare.inputs.input_layout`). A tensor both readings fit (a square map with as
    many channels as pixels a side, ``(N, 128, 128, 128)``) is refused by name, never guessed.

    A tensor whose shape is neither reading of ours (a stem padded otherwise: theirs ``(1, 32, 48, 48)``
    where ours is ``(1, 47, 47, 32)``) is read by its channels, when only one of its dims 1 and 3 is our
    layer's channel count; else by the layout every tensor that did fit showed, when they all showed one
    (and their input agrees). Left as it is otherwise: its row then says the shapes differ. Before, such a
    tensor stayed NCHW and its row blamed "channels differ (32 vs 48)", or a hypothesis crashed on it."""
    out, pending, seen = {}, [], set()
    for name, a in acts.items():
        a = np.asarray(a)
        if a.ndim == 4:
            lay = layout
            mine = ours_shapes.get(name)
            if lay is None and mine is not None:
                nhwc, nchw = a.shape == mine, (a.shape[0], a.shape[2], a.shape[3], a.shape[1]) == mine
                if nhwc and nchw and a.shape[1] > 1:  # (N, 1, 1, 1) reads the same either way
                    raise ValueError(f"their {name!r} {a.shape} reads as NCHW and as NHWC (our {name} is "
                                     f"{mine}); pass layout='NCHW' or layout='NHWC' (--layout) to say which")
                lay = "NHWC" if nhwc else "NCHW" if nchw else None
                if lay is None:
                    pending.append(name)
                elif not (nhwc and nchw):
                    seen.add(lay)
            elif lay is None and name == INPUT_KEY:
                lay = input_layout(a.shape, channels, f"their {INPUT_KEY!r}")
                if lay is not None:
                    seen.add(lay)
            if lay == "NCHW":
                a = a.transpose(0, 2, 3, 1)
        out[name] = a
    established = next(iter(seen)) if len(seen) == 1 else None
    for name in pending:
        a, c = out[name], ours_shapes[name][3]
        by_channels = {"NCHW": a.shape[1] == c, "NHWC": a.shape[3] == c}
        if name == INPUT_KEY:
            lay = input_layout(a.shape, channels, f"their {INPUT_KEY!r}")
        elif by_channels["NCHW"] != by_channels["NHWC"]:
            lay = "NCHW" if by_channels["NCHW"] else "NHWC"
        else:
            lay = established
        if lay == "NCHW":
            out[name] = a.transpose(0, 2, 3, 1)
    return out


def squeezed(acts, ours_shapes) -> tuple[dict, dict]:
    """``(acts, {name: their shape})``: each activation that is ours with extra size-1 dimensions
    (``(N, C, 1, 1)`` after PyTorch's ``AdaptiveAvgPool2d(1)``, where Keras' pooling gives ``(N, C)``)
    reshaped to our shape, which keeps its values in order; the second dict names those reshaped."""
    out, was = {}, {}
    for name, a in acts.items():
        mine = ours_shapes.get(name)
        if (mine is not None and np.shape(a) != mine and np.size(a) == np.prod(mine)
                and [d for d in np.shape(a) if d != 1] == [d for d in mine if d != 1]):
            was[name] = np.shape(a)
            a = np.reshape(a, mine)
        out[name] = a
    return out, was
