"""Wiring known (live models, ``.keras`` archives, full-model ``.h5``): the whole graph matched.

:func:`_match_graph` checks the input and its data format, reads the input-stage
chain (:mod:`npxception.weights_tools.stage_chain`), refuses operation nodes outside it,
walks the backbone for each candidate variant (:mod:`npxception.weights_tools.walk`) and
follows the head (:mod:`npxception.weights_tools.head`). :func:`match_names` does the same
walk without checking configuration values, for compare().
"""

from __future__ import annotations

from npxception import architecture as arch
from npxception.input_stage import MAX_STEPS
from npxception.untrusted import short_repr

from . import operations
from .errors import ConversionError
from .graph import KLayer
from .head import _head, _head_chain
from .kinds import _unsupported, kind_of
from .layout import CHANNELS_LAST, LayoutError, model_data_format, to_hwc
from .preprocessing import StageError, input_stage
from .stage_chain import _input_shape, _stage_chain
from .walk import _candidate_variants, _collapse, _walk, _where

def _one_input(roots, source) -> None:
    """Refuse a model with other inputs than the image (a metadata vector merged into the head), naming them
    and the model that does convert: the image branch (review 26, F6)."""
    if len(roots) == 1:
        return
    shown = ", ".join(f"{k.name} {_shape(k)}" for k in roots[:6]) + (", ..." if len(roots) > 6 else "")
    first = roots[0].name if roots else "input_layer"
    raise ConversionError(
        f"{source}: expected one image input, found {len(roots)} input layers ({shown}); npxception converts a "
        "model whose only input is the image. Save the image branch as a model of its own and convert that: "
        f"keras.Model(model.get_layer({first!r}).output, model.get_layer('<the layer before the inputs "
        "merge, e.g. the pooling>').output).save('image_branch.keras'); the layers after it take the other "
        "inputs and run in Keras")


def _shape(k) -> str:
    cfg = k.config or {}
    shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
    return short_repr(tuple(shape), 60) if isinstance(shape, list) and len(shape) <= 8 else "(shape not recorded)"


def _match_graph(klayers, variant, source, skip_layers=(), recorded_shape=None, keras_version=None):
    """``(params, variant, head, backbone input shape, source input shape, names, stage steps, data format)``."""
    by_name, inputs, live = _collapse(klayers, source, skip_layers)
    try:
        data_format = model_data_format(live, source)
    except LayoutError as exc:
        raise ConversionError(str(exc)) from None
    roots = [k for k in live if kind_of(k) == "input"]
    _one_input(roots, source)
    unsupported = [k for k in live if kind_of(k) == "unsupported"]
    if unsupported:
        raise _unsupported(unsupported[0], source)
    for k in (k for k in live if kind_of(k) == "flatten"):  # converted in the head only (weights_tools.head)
        where = _where(k, live, inputs)
        if not where.startswith("in the head"):
            raise ConversionError(f"{source}: unsupported layer {k.name} (Flatten) {where}: npxception "
                                  "converts a Flatten only after the backbone, as the head's first layer")
    root_shape = _input_shape(roots[0], source, data_format) or to_hwc(recorded_shape, data_format) or (None, None, 3)
    chain = _stage_chain(roots[0], live, inputs)
    input_dtype = (roots[0].config or {}).get("dtype")
    input_dtype = input_dtype if isinstance(input_dtype, str) else None
    try:
        steps, size = input_stage(chain, root_shape[:2], keras_version, data_format or CHANNELS_LAST,
                                  input_dtype=input_dtype, input_name=roots[0].name, channels=root_shape[2])
    except StageError as exc:
        raise ConversionError(f"{source}: {exc}") from None
    if len(steps) > MAX_STEPS:  # the model's own limit (npxception.input_stage.validate), before any matching
        raise ConversionError(f"{source}: input_stage: at most {MAX_STEPS} steps, found {len(steps)} (the layers "
                              f"{chain[0].name} to {chain[-1].name} between the input and the backbone)")
    in_chain = {c.name for c in chain}
    misplaced = [k for k in live if kind_of(k) == "op" and k.name not in in_chain]
    if misplaced:
        where = _where(misplaced[0], live, inputs)
        raise ConversionError(f"{source}: {operations.refusal(misplaced[0], where, input_dtype)}")
    # the stage's output is the backbone's input: a geometry layer (CenterCrop...) behind a
    # variable-size Input fixes the size that the recorded (None, None, C) leaves open; the channels are the input's
    in_shape = (*size, root_shape[2])
    source_shape = tuple(root_shape) if chain else None
    start = chain[-1] if chain else roots[0]
    failures = []
    for v in _candidate_variants(variant):
        try:
            matched, params = _walk(v, start, live, inputs, source, data_format=data_format, channels=in_shape[2])
        except ConversionError as exc:
            failures.append((v, exc))
            continue
        map_shape = arch.trace(arch.backbone(v), [], in_shape)[arch.backbone(v)[-1].name][0]
        head, head_params = _head(matched, live, inputs, v, source,
                                  before={roots[0].name} | {k.name for k in chain},
                                  map_shape=map_shape, data_format=data_format, keras_version=keras_version)
        params.update(head_params)
        matched.pop("input")
        matched.update({h["name"]: h["name"] for h in head})
        return params, v, head, in_shape, source_shape, matched, steps, data_format
    v, exc = failures[0]
    raise ConversionError(str(exc)) from None


def match_names(klayers: list[KLayer], *, variant=None, source="model") -> dict[str, str]:
    """``{our layer name: Keras layer name}`` by the wiring alone.

    Configuration values (epsilon, padding...) are not checked, so a model with a
    planted fault still maps; that is what compare() needs to find the fault.
    """
    _, inputs, live = _collapse(klayers, source)
    roots = [k for k in live if kind_of(k) == "input"]
    _one_input(roots, source)
    chain = _stage_chain(roots[0], live, inputs)
    failures = []
    for v in _candidate_variants(variant):
        try:
            matched, _ = _walk(v, chain[-1] if chain else roots[0], live, inputs, source, check=False)
        except ConversionError as exc:
            failures.append(exc)
            continue
        matched.pop("input")
        matched.update(dict(_head_chain(matched, live, inputs, v)))
        return matched
    raise failures[0]
