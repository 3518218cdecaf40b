"""Their layer names -> ours: a user's map, or a built-in map for a known port.

A port names its activations after its own modules (timm: ``block4.rep.4``);
compare works in Keras' names (``block5_sepconv2``). ``names=`` takes a dict
``{their name: our name}``, a path to such a JSON object, or the name of a known
port from :data:`KNOWN_PORTS`.

timm's ``legacy_xception`` (``timm/models/xception.py`` in huggingface/
pytorch-image-models at aa4b5850, registered as ``legacy_xception``; the
tstandley/cadene port of these Keras weights) is read from its source:

* the stem is ``conv1, bn1, act1, conv2, bn2, act2``;
* ``block1`` .. ``block12`` are Keras' block2 .. block13. A ``Block`` holds
  ``rep``, a Sequential of ``[ReLU, SeparableConv2d, BatchNorm2d] * reps`` with
  the first ReLU dropped when ``start_with_relu=False`` (only ``block1``), then a
  ``MaxPool2d(3, strides, 1)`` when strided; ``skip`` / ``skipbn`` is the 1x1
  residual, and the Block's own output is the residual add (``x += skip``);
* ``block12`` has ``grow_first=False``: 728 -> 728 then 728 -> 1024, the same
  layer sequence as Keras' block13;
* the exit is ``conv3, bn3, act3, conv4, bn4, act4``, then ``global_pool`` and
  ``fc`` (logits: timm has no softmax).

Its ReLUs are in place and its add is ``x += skip``: a forward hook must copy
each output (see docs/discrepancies.md, dumping a PyTorch port).

A Keras dump keyed by Keras' own layer names matches ours by name except where
``keras.applications.Xception`` leaves layers unnamed: the residual Conv2D and
BatchNormalization of blocks 2, 3, 4 and 13 and every Add, which Keras calls
``conv2d_60``, ``batch_normalization_62``, ``add_180`` (the counters depend on
what the process built before). :func:`match_auto_names` maps those by order,
as the converter maps a weights-only file (npxception/weights_tools/by_order.py), but only
when the dump determines it; see its docstring.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass, field

from ..architecture import MIDDLE_FLOW_BLOCKS
from ..config import CONFIG
from ..untrusted import COUNTER, IrregularFileError, loads_json, read_capped, short_repr


def _timm_rep(block: str, ours: list[str]) -> dict[str, str]:
    return {f"{block}.rep.{i}": name for i, name in enumerate(ours)}


def timm_legacy_xception() -> dict[str, str]:
    """``{timm module path: our layer name}`` for timm's ``legacy_xception``."""
    m = {
        "conv1": "block1_conv1", "bn1": "block1_conv1_bn", "act1": "block1_conv1_act",
        "conv2": "block1_conv2", "bn2": "block1_conv2_bn", "act2": "block1_conv2_act",
    }
    # block1 has start_with_relu=False: its rep starts at the first separable conv.
    m.update(_timm_rep("block1", ["block2_sepconv1", "block2_sepconv1_bn", "block2_sepconv2_act",
                                  "block2_sepconv2", "block2_sepconv2_bn", "block2_pool"]))
    for timm_block, keras_block in (("block2", "block3"), ("block3", "block4"), ("block12", "block13")):
        k = keras_block
        m.update(_timm_rep(timm_block, [f"{k}_sepconv1_act", f"{k}_sepconv1", f"{k}_sepconv1_bn",
                                        f"{k}_sepconv2_act", f"{k}_sepconv2", f"{k}_sepconv2_bn", f"{k}_pool"]))
    for keras_index in MIDDLE_FLOW_BLOCKS:  # timm block4..block11 are Keras block5..block12
        k = f"block{keras_index}"
        m.update(_timm_rep(f"block{keras_index - 1}", [
            f"{k}_sepconv{i}{part}" for i in (1, 2, 3) for part in ("_act", "", "_bn")]))
    for timm_index in range(1, 13):
        k = f"block{timm_index + 1}"
        m[f"block{timm_index}"] = f"{k}_add"
        if timm_index in (1, 2, 3, 12):
            m[f"block{timm_index}.skip"] = f"{k}_residual_conv"
            m[f"block{timm_index}.skipbn"] = f"{k}_residual_bn"
    m.update({
        "conv3": "block14_sepconv1", "bn3": "block14_sepconv1_bn", "act3": "block14_sepconv1_act",
        "conv4": "block14_sepconv2", "bn4": "block14_sepconv2_bn", "act4": "block14_sepconv2_act",
        "global_pool": "avg_pool", "fc": "predictions",
    })
    return m


# Known ports by the name ``names=`` / ``--port`` accepts.
KNOWN_PORTS = {
    "timm.legacy_xception": timm_legacy_xception,
}
# The head modules of a known port, by role: their target above is Keras' name for ImageNet's head
# (avg_pool, predictions), which a headless or fine-tuned model names otherwise; port_names finds
# the model's own layer of that role. timm's legacy_xception: ``global_pool`` is a
# SelectAdaptivePool2d (the pooling, whatever kind), ``fc`` the Linear reading it (absent, an
# Identity, with ``num_classes=0``).
PORT_HEADS = {
    "timm.legacy_xception": {"global_pool": "pool", "fc": "classifier"},
}


def _head_roles(head) -> tuple[dict, dict]:
    """``({role: our layer name}, {role: why the model has none})`` for a head's pooling and the
    classifier reading it directly (a Dense right after the pooling, the last layer)."""
    pools = [h for h in head if h["kind"] in ("global_avg_pool", "global_max_pool")]
    found, why = {}, {}
    if len(pools) == 1:
        found["pool"] = pools[0]["name"]
    else:
        why["pool"] = ("the model has no global pooling layer (pooling=None or a Flatten head)" if not pools
                       else "the model has more than one global pooling layer")
    if pools and len(head) == 2 and head[0] is pools[0] and head[1]["kind"] == "dense":
        found["classifier"] = head[1]["name"]
    elif len(head) <= 1:
        why["classifier"] = "the model has no classifier after its pooling (include_top=False)"
    else:
        kinds = ", ".join(f"{h['name']} ({h['kind']})" for h in head)
        why["classifier"] = f"the model's head is not one pooling then one Dense: {kinds}"
    return found, why


def port_names(port: str, model) -> tuple[dict, list[str]]:
    """A known port's map fitted to ``model``: ``({their name: our name}, notes)``.

    The built-in map is ours, not the user's: an entry whose layer the model lacks is no typo to refuse
    but a layer not compared, and each note says which and why. Its head entries (:data:`PORT_HEADS`)
    go to the model's own layer of that role, whatever its name: a headless model's
    ``global_average_pooling2d``, a fine-tuned head's Dense."""
    mapping = KNOWN_PORTS[port]()
    ours = set(model.layer_names)
    found, why = _head_roles(model.head)
    out, notes = {}, []
    for theirs, mine in mapping.items():
        role = PORT_HEADS.get(port, {}).get(theirs)
        if role is not None and role in found:
            if found[role] != mine:
                notes.append(f"{port}: their {theirs} is compared as our {found[role]} (the model's {role})")
            out[theirs] = found[role]
        elif role is not None:
            notes.append(f"{port}: their {theirs} not compared: {why[role]}")
        elif mine not in ours:
            notes.append(f"{port}: their {theirs} not compared: the model has no layer {mine}")
        else:
            out[theirs] = mine
    return out, notes


def names_for(names, model) -> tuple[dict, list[str]]:
    """``names`` as compare takes it -> ``({their name: our name}, notes)``: a known port's name fitted to
    the model (:func:`port_names`), anything else by :func:`resolve_names` (a typo refused)."""
    if isinstance(names, str) and names in KNOWN_PORTS:
        return port_names(names, model)
    return resolve_names(names, model.layer_names), []


def resolve_names(names, our_names) -> dict[str, str]:
    """``names`` (None, dict, JSON path or a known port's name) -> ``{their name: our name}``.

    Every target must be one of ``our_names``: a typo in a hand-written map is an
    error naming the entry, not a silently missing row.
    """
    if names is None:
        return {}
    if isinstance(names, str) and names in KNOWN_PORTS:
        mapping = KNOWN_PORTS[names]()
    elif isinstance(names, dict):
        mapping = dict(names)
    elif isinstance(names, (str, pathlib.Path)):
        path = pathlib.Path(names)
        if path.suffix.lower() != ".json":
            raise ValueError(f"names: expected a dict, a .json file or one of {sorted(KNOWN_PORTS)}, "
                             f"found {str(names)!r}")
        try:  # a map names each of our ~134 layers once, two names of at most a few hundred characters: ~100 kB;
            # read as a config is, under its cap (8 MiB), and its nesting a clear error
            data = read_capped(path, CONFIG.max_config_bytes)
        except FileNotFoundError:
            raise ValueError(f"names: expected a dict, a .json file or one of {sorted(KNOWN_PORTS)}, "
                             f"found {str(names)!r} (no such file)") from None
        except IrregularFileError as exc:
            raise ValueError(f"names: {exc}; expected a .json file") from None
        except OSError as exc:
            raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise ValueError(f"{exc}: a names map, {{their name: our name}} for each of our layers, is ~100 kB"
                             ) from None
        try:
            mapping = loads_json(data)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
            raise ValueError(f"{path}: not a readable JSON object ({exc})") from None
        if not isinstance(mapping, dict):
            raise ValueError(f"{path}: expected a JSON object {{their name: our name}}, "
                             f"found {type(mapping).__name__}")
    else:
        raise TypeError(f"names: expected a dict, a .json path or a known port name, found {type(names).__name__}")
    ours = set(our_names)
    for theirs, mine in mapping.items():
        if not isinstance(theirs, str) or not isinstance(mine, str):
            raise ValueError(f"names: entries must map strings to strings, found {theirs!r}: {mine!r}")
        if mine not in ours and not AUTO_NAME_PATTERN.fullmatch(mine):
            raise ValueError(f"names: {short_repr(theirs)} maps to {short_repr(mine)}, which is not one of our "
                             "layer names "
                             "(see model.layer_names) nor a Keras auto-name (conv2d_N, batch_normalization_N, add_N)")
    return mapping


# Keras' automatic layer names, by our layer kind: the class name in snake case, then a
# per-name counter, "_N", absent on the first (Keras 3 and tf_keras spell them alike).
# Only the kinds keras.applications.Xception leaves unnamed; a head's BatchNormalization
# ("batch_norm" in our head) is auto-named the same way.
AUTO_NAMES = {"conv": "conv2d", "bn": "batch_normalization", "batch_norm": "batch_normalization", "add": "add"}
# One auto-name: a prefix of AUTO_NAMES, then its counter (group 2), absent on the first.
AUTO_NAME_PATTERN = re.compile(rf"({'|'.join(sorted(set(AUTO_NAMES.values())))})(?:_({COUNTER}))?")


def by_counter(keys) -> list[str]:
    """Keras auto-names in the order of their counters (``add`` before ``add_1`` before ``add_10``): the
    order Keras created them, for auto-names that a names map or TFLite's scopes gave, in no order of
    the dump's own."""
    return sorted(keys, key=lambda k: int(AUTO_NAME_PATTERN.fullmatch(k).group(2) or 0))


# The op ending a TFLite tensor name's first segment when the tensor is that layer's output (the fused
# op's output: its activation included), by our layer kind, as TFLite names a Keras 3 model's ops. A
# separable convolution's "separable_conv2d/depthwise1" is its depthwise half, no layer of ours.
_TFLITE_OUTPUT_OPS = {
    "relu": {"Relu"}, "maxpool": {"MaxPool2d"}, "add": {"Add"}, "bn": {"batchnorm/add_1"},
    "batch_norm": {"batchnorm/add_1"}, "conv": {"convolution"}, "sepconv": {"separable_conv2d"},
    "global_avg_pool": {"Mean"}, "global_max_pool": {"Max"},
}


def match_tflite_names(theirs: dict[str, tuple], ours: dict[str, tuple[str, tuple]], layout=None) -> TfliteNames:
    """Their keys named as a TFLite model converted from Keras names its tensors, by Keras layer name:
    ``xception/block1_conv1_act_1/Relu;xception/block1_conv1_bn_1/batchnorm/add_1;...`` is the output of
    the op its first ``;``-segment names (the ReLU, with the convolution and BN fused into it).

    ``theirs``: ``{key: shape}``; ``ours``: ``{Keras name: (our kind, NHWC shape)}``. A segment's layer is
    the scope that is a Keras name or an auto-name (``add_11``: :func:`match_auto_names` maps those by
    order), once Keras 3's tracing suffix is dropped when most scopes carry one (``block1_conv1_act_1``;
    TensorFlow makes a second ``add_1`` scope ``add_1_2``, the first ``add``'s ``add_1``). The key is that
    layer's output only when the rest of the segment is the op that ends its kind (not a depthwise half)
    and its shape agrees with that layer's, or an auto-name's with one of our layers of its kind (a fused
    bias or a kernel constant carries the same name).
    """
    parts = {key: key.split(";")[0].split("/") for key in theirs if "/" in key}
    scopes = [p for key in parts for seg in key.split(";") for p in seg.split("/")[:-1]]
    suffixed = sum(_TRACED.sub("", p) in ours for p in scopes) > sum(p in ours for p in scopes)
    out = TfliteNames(seen={_TRACED.sub("", p) if suffixed else p for p in scopes})
    kinds = {prefix: kind for kind, prefix in AUTO_NAMES.items()}
    for key, ps in parts.items():
        for i, scope in enumerate(ps[:-1]):
            name = _TRACED.sub("", scope) if suffixed else scope
            auto = AUTO_NAME_PATTERN.fullmatch(name)
            kind = ours[name][0] if name in ours else kinds[auto.group(1)] if auto else None
            if kind is None:
                continue
            shape = tuple(theirs[key])
            shapes = [ours[name][1]] if name in ours else [s for k, s in ours.values() if AUTO_NAMES.get(k) == auto[1]]
            if "/".join(ps[i + 1:]) in _TFLITE_OUTPUT_OPS.get(kind, ()) and any(
                    _shape_agrees(shape, s, layout) for s in shapes):
                out.matched[key] = name
            break
    return out


_TRACED = re.compile(r"_\d+$")  # the suffix a traced Keras 3 model's scopes carry


@dataclass
class TfliteNames:
    """What :func:`match_tflite_names` found."""

    matched: dict[str, str] = field(default_factory=dict)  # {their key: Keras layer name}
    seen: set[str] = field(default_factory=set)  # every name a scope of theirs holds, fused or not


@dataclass
class ByOrder:
    """Their Keras auto-named keys mapped to our layers by order, and why others were not."""

    matched: dict[str, str] = field(default_factory=dict)  # {their key: our name}
    refused: list[str] = field(default_factory=list)  # one line per auto-name left unmatched: why


def _shape_agrees(theirs: tuple, ours: tuple, layout) -> bool:
    nchw = (ours[0], ours[3], ours[1], ours[2]) if len(ours) == 4 else None
    if layout == "NCHW":
        return theirs == nchw if nchw else theirs == ours
    return theirs == ours or (layout is None and nchw is not None and theirs == nchw)


def match_auto_names(theirs: dict[str, tuple], ours: list[tuple[str, str, tuple]], layout=None) -> ByOrder:
    """Map their unmatched Keras auto-names to our layers without a counterpart, by order.

    ``theirs``: ``{key: shape}`` of their keys that are none of our names, in the dump's key
    order (an ``.npz`` keeps the order it was written in). ``ours``: ``(name, kind, NHWC
    shape)`` of our layers that have no counterpart, in network order. ``layout``: the
    dump's ("NCHW", "NHWC" or None: either).

    For each auto-name (``conv2d[_N]``, ``batch_normalization[_N]``, ``add[_N]``) the i-th
    such key of theirs becomes our i-th layer of that kind, only if the dump determines it:
    the counts are equal, the keys' counters increase in key order (Keras numbers layers
    as it creates them, and applications.Xception creates them in network order; a dump
    whose order disagrees with its own counters was reordered), and every pair's shape
    agrees. Otherwise none of that name is mapped, and ``refused`` says why. A wrong order
    among same-shaped layers (the nine 728-channel adds) cannot pass as agreement: their
    values are compared like any other layer's.
    """
    out = ByOrder()
    by_prefix: dict[str, list[tuple[str, int]]] = {}
    for key in theirs:
        m = AUTO_NAME_PATTERN.fullmatch(key)
        if m:
            by_prefix.setdefault(m.group(1), []).append((key, int(m.group(2) or 0)))
    for prefix, keys in by_prefix.items():
        mine = [(name, shape) for name, kind, shape in ours if AUTO_NAMES.get(kind) == prefix]
        spelled = f"{prefix}[_N]"
        if not mine:  # every layer of ours of that kind has its name: these keys are theirs only
            continue
        if len(keys) != len(mine):
            out.refused.append(f"{len(keys)} {spelled} key(s) of theirs for {len(mine)} {prefix} layer(s) of ours "
                               "without a counterpart: the counts differ, so the order does not say which is which")
            continue
        late = next((i for i in range(1, len(keys)) if keys[i][1] <= keys[i - 1][1]), None)
        if late is not None:
            out.refused.append(f"their {spelled} keys are not in Keras' creation order ({keys[late - 1][0]} before "
                               f"{keys[late][0]}): the dump was reordered, so its order does not say which is which")
            continue
        wrong = next(((key, tuple(theirs[key]), name, shape) for (key, _), (name, shape) in zip(keys, mine)
                      if not _shape_agrees(tuple(theirs[key]), tuple(shape), layout)), None)
        if wrong is not None:
            key, found, name, shape = wrong
            out.refused.append(f"{key} {found} would be our {name} {shape} by order, and the shapes differ: "
                               f"no {spelled} key matched")
            continue
        out.matched.update({key: name for (key, _), (name, _) in zip(keys, mine)})
    return out
