"""Wiring known: our backbone table matched to the Keras graph by where each layer sits.

:func:`_collapse` indexes the layers and routes around the identities (nested
InputLayers, Dropout, augmentation, ``--skip-layer``); :func:`_walk` then takes
our table in order and, for each of our layers, finds the one Keras layer of the
same kind whose inputs are the layers already matched to ours. Names are never
trusted, so auto-named residual branches match by their place in the graph.
The variants are tried in :func:`_candidate_variants`' order: ``keras``,
``article``, then the other combinations of the four differences.
"""

from __future__ import annotations

import difflib
import itertools

from npxception import architecture as arch
from npxception import shell

from .errors import ConversionError
from .graph import KLayer
from .keras_layers import not_identity_reason
from .kinds import _lambda_function, _xception_lambda_module, kind_of
from .layout import CHANNELS_LAST
from .layer_checks import _check_config, _layer_params

def _candidate_variants(variant):
    if variant is not None:
        return [arch.resolve_variant(variant)]
    flags = [f for f in arch.Variant.__dataclass_fields__]
    others = [arch.Variant(**dict(zip(flags, bits))) for bits in itertools.product((False, True), repeat=4)]
    ordered = [arch.VARIANTS["keras"], arch.VARIANTS["article"]]
    return ordered + [o for o in others if o not in ordered]


def _computes(k: KLayer) -> str | None:
    """Why ``k`` computes something though it has no weights and no class :mod:`keras_layers` names: a
    Lambda (its function's purpose is to compute; kinds._lambda_refusal: a file records its function as a
    name or code, never as an identity). None otherwise: a custom layer, or an operation node, for which
    operations.refusal offers --skip-layer as the user's word (only the user knows)."""
    if k.class_name == "Lambda":
        module = _xception_lambda_module(k.config)
        name = _lambda_function(k.config) or (f"{module}.preprocess_input" if module else None)
        return (f"a Lambda layer computes its function ({name!r})" if name else
                "a Lambda layer computes its function (which the file records as code, or not at all)")
    return None


def _collapse(klayers: list[KLayer], source: str, skip_layers=()):
    """Index layers by name and route around identity layers (nested InputLayers, Dropout,
    augmentation, and the layers the user named in ``skip_layers``)."""
    by_name = {}
    for k in klayers:
        if k.name in by_name:
            raise ConversionError(f"{source}: two layers are named {k.name!r}")
        by_name[k.name] = k
    skip = set(skip_layers)
    for name in sorted(skip):
        nested_input = by_name.get(f"{name}_input")
        if name not in by_name and nested_input is not None and nested_input.class_name == "InputLayer":
            # weights_tools.keras_config reads a nested Sequential or Pipeline as its layers, after an InputLayer
            # it names "<model>_input"; its layers are judged one by one (a Rescaling in it is applied)
            raise ConversionError(
                f"{source}: --skip-layer {name}: a nested model (a Sequential or Pipeline), not one layer: "
                "npxception reads the layers inside it in turn, converting the preprocessing and augmentation it "
                "knows, and refusing the rest by name. Name a layer inside it to skip that one")
        if name not in by_name:
            hint = [k.name for k in klayers if k.name.rsplit("/", 1)[-1] == name]
            close = hint[:1] or difflib.get_close_matches(name, list(by_name), n=3)
            raise ConversionError(f"{source}: --skip-layer {name}: no such layer"
                                  + (f"; did you mean {', '.join(close)}?" if close else "")
                                  + f" (`python -m npxception.weights_tools inspect {shell.arg(str(source))}` lists "
                                  "the file's layers)")
        if by_name[name].weights:
            raise ConversionError(f"{source}: --skip-layer {name}: it has weights "
                                  f"({len(by_name[name].weights)} arrays), so it is not an identity")
        computes = _computes(by_name[name])
        if computes:
            raise ConversionError(f"{source}: --skip-layer {name}: {computes}; skipping it would change the "
                                  "model's output, so --skip-layer is refused for it. If it is Keras' "
                                  "preprocess_input, rebuild the model with layers.Rescaling(1 / 127.5, offset=-1) "
                                  "in its place (or preprocess_input called on the input tensor), copy the weights "
                                  "into it (set_weights), save it and convert that")
        # a layer class's rule: an operation node (Keras 3's Multiply op shares the merge layer's class name)
        # reads one tensor when --skip-layer is offered for it (weights_tools.operations.refusal)
        why = not_identity_reason(by_name[name].class_name) if by_name[name].function is None else None
        if why:
            raise ConversionError(f"{source}: --skip-layer {name}: a {by_name[name].class_name} layer is not an "
                                  f"identity at inference ({why}); skipping it would change the model's output")

    def is_identity(k):
        kind = kind_of(k)
        return (kind == "input" and k.inbound) or kind == "identity" or k.name in skip

    def resolve(name, seen=()):
        k = by_name.get(name)
        if k is None:
            raise ConversionError(f"{source}: layer input {name!r} names no layer")
        if is_identity(k):
            if len(k.inbound or []) != 1 or name in seen:
                raise ConversionError(f"{source}: {k.name} ({k.class_name}) must have exactly one input")
            return resolve(k.inbound[0], seen + (name,))
        return name

    inputs = {k.name: [resolve(i) for i in k.inbound] for k in klayers}
    live = [k for k in klayers if not is_identity(k)]
    return by_name, inputs, live


def _consumers(live, inputs) -> dict[str, list[KLayer]]:
    """{layer name: the layers reading it}, in model order."""
    consumers: dict[str, list[KLayer]] = {}
    for k in live:
        for i in inputs[k.name]:
            consumers.setdefault(i, []).append(k)
    return consumers


def _where(k: KLayer, live, inputs) -> str:
    """Where a layer sits, in words: on the input path, inside the backbone or in the head, reading from what."""
    consumers = _consumers(live, inputs)
    by_name = {x.name: x for x in live}

    def reaches_conv(start, step):  # a linear walk up (inputs) or down (consumers) the graph
        seen, stack = set(), list(start)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if kind_of(by_name[name]) in ("conv", "sepconv"):
                return True
            stack.extend(step(name))
        return False

    after = reaches_conv(inputs[k.name], lambda n: inputs[n])
    before = reaches_conv([c.name for c in consumers.get(k.name, [])], lambda n: [c.name for c in consumers.get(n, [])])
    where = ("inside the backbone" if after and before else "in the head" if after
             else "on the input path" if before else "apart from the backbone")
    return where + (f", reading from {', '.join(inputs[k.name])}" if inputs[k.name] else "")


def _walk(v, root, live, inputs, source, check=True, data_format=None, channels=3):
    """Match our backbone table to the Keras graph; return ({ours: theirs}, params).

    ``channels``: the model input's (its Input layer's), which the first convolution's kernel takes."""
    matched = {"input": root.name}
    used = {root.name}
    params = {}
    consumers = _consumers(live, inputs)
    layers = arch.backbone(v)
    shapes = arch.param_shapes(layers, [], channels)
    for layer in layers:
        srcs = [matched[i] for i in layer.inputs]
        cands = [k for k in consumers.get(srcs[0], [])
                 if k.name not in used and kind_of(k) == layer.kind
                 and sorted(inputs[k.name]) == sorted(srcs)]
        if len(cands) != 1:
            where = ", ".join(srcs)
            raise ConversionError(
                f"{source}: not an Xception ({arch.variant_name(v)}) graph: expected one {layer.kind} "
                f"layer reading from {where} (our {layer.name}), found {len(cands)}")
        k = cands[0]
        matched[layer.name] = k.name
        used.add(k.name)
        if check:
            _check_config(layer, k, source, data_format or CHANNELS_LAST)
            params.update(_layer_params(layer.name, layer.kind, k, shapes, source))
    return matched, params
