"""Wiring unknown (weights-only ``.h5``, such as the official download): Keras' by-order rule.

Keras' ``load_weights`` matches the layers that carry weights by their order,
checking every shape. Both variants have the same weighted layers with the same
shapes; Keras lists them in our table's order for its own Xception, and with each
residual convolution before its block's ``sepconv2_bn`` for the article's code, a
legacy ``.h5`` file's order that its arrays determine (:func:`_write_order`); a file
that names all our layers is mapped by name. Neither tells the wirings apart:
the file determines ``variant="keras"`` only by Keras Xception's layer names or
as the official file; otherwise the user gives ``variant`` (``--variant``) or the
config, never guessed. After the backbone, a weights-only
file may hold one Dense; its head (pooling, activation, input size) is taken
from the file only when the file determines it: a bare backbone by documented
policy and with a notice, Keras' official ImageNet file by its MD5. Otherwise
it comes from the user's ``head_spec`` or is refused: never guessed.
"""

from __future__ import annotations

from npxception import architecture as arch
from npxception import head_schema
from npxception.compare.names import AUTO_NAME_PATTERN
from npxception.config import CONFIG

from .errors import ConversionError
from .graph import KLayer
from .kinds import COMPUTING_LAYER, POOLING_CLASS, resolve_activation
from .layer_checks import _layer_params
from .unrecorded import refuse_unrecorded

def computing_layers(klayers) -> list[str]:
    """The names among ``klayers`` (a weights-only file's, unwired) of layers that compute something a
    weights-only file does not record (:data:`COMPUTING_LAYER`)."""
    return [k.name for k in klayers if COMPUTING_LAYER.fullmatch(_base_name(k))]


def _shown(names) -> str:
    return ", ".join(n.rsplit("/", 1)[-1] for n in names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4
                                                                  else "")


def _refuse_computing(prep, dense, given, source) -> None:
    """A weights-only file naming a layer that computes on the tensor: its parameters (a Rescaling's scale)
    are in the model's config only. No flag gives them: refused even with the head flags, never guessed."""
    layers = _shown(prep)
    several = len(prep) > 1
    head = ("" if given or dense is None else
            f", nor the head's pooling (average or max), the classifier's activation or the input size")
    raise ConversionError(
        f"{source}: a weights-only file does not determine the model: it does not record the input "
        f"preprocessing (layer{'s' if several else ''} {layers}): it names {'them' if several else 'it'}, which "
        f"compute{'' if several else 's'} something (a Rescaling's scale "
        f"and offset, a Normalization's axis, a function), but the parameters are in the model's config only"
        f"{head}. No flag can give them{' (' + _flags(given) + (' describes' if len(given) == 1 else ' describe') + ' the head only)' if given else ''}: pass "
        "the model's config with --config config.json (model.to_json() of the model that saved the file, or "
        "the config.json inside its .keras archive) or --config model.keras")


def _match_by_order(klayers, variant, source, given, official_file=None, keras_version=None):
    prep = computing_layers(klayers)
    if prep:
        klayers = [k for k in klayers if k.name not in set(prep)]  # a Normalization's weights: not the backbone's
    # Both variants have the same weighted layers in the same order with the same shapes (the article's
    # four departures change wiring and padding, no weight), so the shapes are checked against the
    # table first and which wiring the file holds is decided after (_file_variant).
    layers = arch.backbone(arch.resolve_variant(variant or "keras"))
    shapes = arch.param_shapes(layers, [], 3)  # RGB: no config records another input (the official layout)
    ours = [layer for layer in layers if layer.kind in ("conv", "sepconv", "bn")]
    theirs = [k for k in klayers if k.weights]
    theirs = _by_names(ours, theirs) or theirs
    ours = _write_order(ours, theirs)
    if len(theirs) < len(ours):
        raise ConversionError(f"{source}: not Xception weights: {len(theirs)} layers carry weights, "
                              f"Xception's backbone has {len(ours)}")
    stem = theirs[0].weights[0].shape if theirs[0].weights else ()
    if len(stem) == 4 and stem[2] != 3:
        raise ConversionError(f"{source}: layer #0 (block1_conv1 / {theirs[0].name} in the file) has a kernel "
                              f"{tuple(stem)}: a model of {stem[2]}-channel inputs, whose input shape a weights-only "
                              "file does not record; pass the model's --config model.keras|config.json")
    params = {}
    names = {layer.name: k.name for layer, k in zip(ours, theirs)}
    for n, (layer, k) in enumerate(zip(ours, theirs)):
        label = f"layer #{n} ({layer.name} / {k.name} in the file)"
        try:
            params.update(_layer_params(layer.name, layer.kind, k, shapes, source))
        except ConversionError as exc:
            raise ConversionError(f"{source}: {label}: {str(exc).split(': ', 1)[-1]}") from None
    rest = theirs[len(ours):]
    dense = None
    if len(rest) == 1 and len(rest[0].weights) in (1, 2) and rest[0].weights[0].ndim == 2:
        dense = rest[0]
        units = dense.weights[0].shape[1]
        if dense.weights[0].shape[0] != 2048 or (len(dense.weights) == 2
                                                 and tuple(dense.weights[1].shape) != (units,)):
            raise ConversionError(f"{source}: shape mismatch in layer #{len(ours)} (predictions / {dense.name} "
                                  f"in the file): expected [(2048, units), (units,)], found "
                                  f"{[tuple(w.shape) for w in dense.weights]}")
    elif rest:
        k = rest[0]
        raise ConversionError(f"{source}: layer {k.name} after the Xception backbone (weights "
                              f"{[tuple(w.shape) for w in k.weights]}): a weights-only file records no head "
                              "beyond one (2048, classes) Dense; pass the model's --config model.keras|config.json")
    if prep:
        _refuse_computing(prep, dense, given, source)
    v = _file_variant(variant, names, official_file)
    if v is not None:  # a Keras 3 checkpoint's weightless layers, counted where the variant puts them
        refuse_unrecorded(klayers, theirs[:len(ours)], dense, v, given, source)
    head, input_shape, notices = _weights_only_head(dense, given, source, official_file, v, keras_version,
                                                    _recorded_pooling(klayers))
    if v is None:
        sample = ", ".join(list(names.values())[:3])
        raise ConversionError(
            f"{source}: a weights-only file does not determine the model's wiring: its weights fit both "
            f"Xception variants (Keras' and the article's, whose four departures change no weight shape), "
            f"and its layer names ({sample}, ...) are not Keras Xception's block names. Give "
            f"{_VARIANT_FLAG} (variant=...), or the model's architecture with --config model.keras|config.json")
    if official_file is None and any(str(a.dtype) == "float32" for a in params.values()):
        notices = [*notices, dtype_policy_notice(source)]
    if dense is not None:
        name = head[-1]["name"]
        names[name] = dense.name
        params[f"{name}/kernel"] = dense.weights[0]  # read later, in to_npxception
        if len(dense.weights) == 2:
            params[f"{name}/bias"] = dense.weights[1]
        else:
            head[-1]["use_bias"] = False
    return params, v, head, names, input_shape, notices


_VARIANT_FLAG = "--variant keras|article"

# What no head flag gives: a mixed_float16/mixed_bfloat16 model keeps float32 weights, so a weights-only
# file's float32 arrays do not say that its model computed in 16 bits (review 26, F3: 1.65e-4 off, silent);
# the config records the policy, which the converter then refuses without --dtype-policy float32.
_DTYPE_POLICY = ("the dtype policy its model computed with (a mixed_float16 or mixed_bfloat16 model saves "
                 "float32 weights too)")


def dtype_policy_notice(source: str) -> str:
    return (f"note: {source}: a weights-only file does not record {_DTYPE_POLICY}; converted to compute in "
            f"float32, as a float32 model does. A model trained under mixed precision differs from that by its "
            f"16-bit rounding (measured up to 5e-3 of the output); if it was, give --config "
            f"model.keras|config.json, whose policy is then read (and converted with --dtype-policy float32)")


def _base_name(k: KLayer) -> str:
    """A file's layer name without its nesting and its variable suffix: ``xception/block1_conv1`` -> ``block1_conv1``."""
    return k.name.rsplit("/", 1)[-1].split(":")[0]


def _by_names(ours, theirs) -> list[KLayer] | None:
    """The file's weighted layers in our order when the file names every one of ours (a model built with
    Keras Xception's layer names, in whatever order its Keras listed them), followed by the rest in the
    file's order; None when it does not (Keras' own Xception leaves its residual layers auto-named: order)."""
    found: dict[str, KLayer] = {}
    for k in theirs:
        found.setdefault(_base_name(k), k)
    if len(found) != len(theirs) or not all(layer.name in found for layer in ours):
        return None  # a name twice, or one of ours missing: the names do not determine the mapping
    wanted = {layer.name for layer in ours}
    return [found[layer.name] for layer in ours] + [k for k in theirs if _base_name(k) not in wanted]


def _write_order(ours, theirs) -> list:
    """Our weighted layers in the order the file lists them, as Keras writes a model's layers.

    Keras lists a functional model's layers by depth from the output, and a block's residual
    convolution (1 x 1 kernel) is level with its ``sepconv2_bn``: which comes first follows the order
    the code created them (measured, Keras 3.15 and tf_keras 2.21). Keras' Xception creates the residual
    first and lists ``sepconv2, sepconv2_bn, residual_conv, residual_bn`` (our table's order); the
    article creates it last and is listed ``sepconv2, residual_conv, sepconv2_bn, residual_bn``. Both
    put ``sepconv2_bn`` (one level deeper) before ``residual_bn``, so the file's arrays at those places
    determine the order: a single 4-D array where we expect a BatchNormalization is the residual
    convolution. Every shape is checked after, as for any order.
    """
    out = list(ours)
    for i in range(min(len(out), len(theirs)) - 1):
        a, b = out[i], out[i + 1]
        if (a.kind == "bn" and a.name.endswith("_sepconv2_bn") and b.kind == "conv"
                and b.name.endswith("_residual_conv") and len(theirs[i].weights) == 1
                and len(theirs[i].weights[0].shape) == 4):
            out[i], out[i + 1] = b, a
    return out


def _file_variant(variant, names: dict, official_file) -> arch.Variant | None:
    """The variant a weights-only file holds: the user's, else ``keras`` where the file determines it, else None.

    ``names``: ``{our layer name: the file's layer name}`` of the backbone, matched by order. The
    file determines Keras' wiring when it is Keras' official ImageNet file (``official_file`` not
    None: its pinned MD5) or when its layers carry Keras Xception's own names at their places
    (``block2_sepconv1``...; Keras leaves only the residual convolutions, BNs and Adds auto-named,
    and any other name must be ours; our names for the residual layers are no Keras model's). A model built layer by layer, as the article builds it, has
    only auto-names: its weights fit Keras' order too, but its wiring may be the article's.
    """
    if variant is not None:
        return arch.resolve_variant(variant)
    if official_file is not None:
        return arch.VARIANTS["keras"]
    pairs = [(ours, theirs.rsplit("/", 1)[-1].split(":")[0]) for ours, theirs in names.items()]
    # our own residual names (block2_residual_conv) are not Keras': a model that carries them was built by
    # someone else, in either wiring
    if any(o == t for o, t in pairs) and all((o == t and "_residual_" not in o) or AUTO_NAME_PATTERN.fullmatch(t)
                                             for o, t in pairs):
        return arch.VARIANTS["keras"]
    return None


# The official ImageNet file's head, the only one a weights-only file determines:
# keras.applications.Xception(include_top=True) is avg-pooled, softmax, 299x299. The layout alone
# (a 1000-unit Dense named predictions) does not say it: Xception(classifier_activation=None) or a
# fine-tuned copy saves the same layout, so only the official file itself (its MD5) gets this head.
IMAGENET_CLASSES = 1000
_HEAD_FLAGS = {"pooling": "--pooling avg|max", "input_shape": "--input-shape H,W",
               "classifier_activation": "--classifier-activation softmax|sigmoid|linear|..."}


def _flags(given) -> str:
    return " ".join(_HEAD_FLAGS[k].split()[0] for k in given)


def _recorded_pooling(klayers) -> tuple[str, str] | None:
    """``(pooling, layer name)`` when the file names exactly one global pooling layer (weightless, kept by
    its Keras name: ``avg_pool``, ``global_max_pooling2d``...; kinds.POOLING_LAYER), else None: the file
    does not say. ``keras.applications.Xception(include_top=True, pooling="max")`` ignores its pooling and
    builds ``avg_pool``: the name, not what the user remembers passing, is what the model computed."""
    kinds = {cls: kind for kind, cls in POOLING_CLASS.items()}
    found = [(kinds[k.class_name], k.name) for k in klayers if not k.weights and k.class_name in kinds]
    return found[0] if len(found) == 1 else None


def _official_layout(dense: KLayer) -> bool:
    return dense.name.rsplit("/", 1)[-1] == "predictions" and dense.weights[0].shape[1] == IMAGENET_CLASSES


def _weights_only_head(dense: KLayer | None, given: dict, source: str, official_file=None, variant=None,
                       keras_version=None, recorded=None):
    """``(head, input_shape, notices)`` of a weights-only file: what it determines, plus ``given``; else refuse.

    A bare backbone converts by documented policy as the unpooled backbone at any
    input size (Keras' ``include_top=False, pooling=None``); the file records neither,
    so ``notices`` says so, unless ``given`` or the official file settles them.
    A classifier is determined only by the official ImageNet file with the top
    (``official_file`` True, the caller's MD5 check). Any other classifier,
    the official layout included, needs its pooling, its activation and its input
    size from the user: guessing them changes the answer silently (a
    GlobalMaxPooling head converted as average pooling, a linear classifier given a softmax).
    A given "hard_sigmoid" is read with the Keras version the file records (``keras_version``;
    :func:`~npxception.weights_tools.kinds.resolve_activation`), as a head's would be.
    ``recorded``: ``(pooling, layer name)`` of the global pooling layer the file names
    (:func:`_recorded_pooling`), which decides the pooling; a ``given`` one that contradicts it is refused.
    """
    pooling, shape, act = (given.get(k) for k in ("pooling", "input_shape", "classifier_activation"))
    if recorded is not None:
        if pooling is not None and pooling != recorded[0]:
            raise ConversionError(
                f"{source}: --pooling {pooling} contradicts the file: it records the layer {recorded[1]} "
                f"({POOLING_CLASS[recorded[0]]}), {recorded[0]} pooling; Keras computed with that layer "
                f"(keras.applications.Xception ignores pooling= when include_top=True). Give --pooling "
                f"{recorded[0]}, or leave it out")
        pooling = recorded[0]
    if act is not None:
        act = resolve_activation(act, keras_version, f"{source}: --classifier-activation")
    if pooling not in (None, "avg", "max"):
        raise ConversionError(f"{source}: --pooling: expected avg or max, found {pooling!r}")
    if act is not None and act not in head_schema.ACTIVATIONS:
        raise ConversionError(f"{source}: --classifier-activation: expected one of "
                              f"{[a for a in head_schema.ACTIVATIONS if a]}, found {act!r}")
    if shape is not None:
        shape = tuple(shape)
        if len(shape) == 2:
            shape = (*shape, 3)
        low = arch.min_input_size(arch.backbone(variant or arch.VARIANTS["keras"]))
        if len(shape) != 3 or shape[2] != 3 or not all(isinstance(d, int) and d >= low for d in shape[:2]):
            raise ConversionError(f"{source}: --input-shape: expected H,W of at least {low}, found {shape!r}")
    if dense is None:
        if act is not None:
            raise ConversionError(f"{source}: --classifier-activation: the file holds no classifier "
                                  "(a bare backbone)")
        unknown = [flag for key, flag in _HEAD_FLAGS.items() if key != "classifier_activation"
                   and {"pooling": pooling, "input_shape": shape}[key] is None]
        notices = [] if official_file is False or not unknown else [
            f"note: {source}: a weights-only backbone does not record the model's "
            f"{' or '.join(f.split()[0].lstrip('-').replace('-', ' ') for f in unknown)}; converted "
            + ("unpooled (Keras' pooling=None)" if pooling is None else f"with {pooling} pooling"
               + (f" (its layer {recorded[1]})" if recorded else ""))
            + (" for any input size" if shape is None else f" at {shape[0]}x{shape[1]}")
            + f". If the model had them, give {' '.join(unknown)}"]
        return head_schema.keras_head(False, pooling), shape, notices
    official = official_file is True and _official_layout(dense)
    if official:
        pooling, shape, act = pooling or "avg", shape or CONFIG.default_input_shape, act or "softmax"
    missing = [flag for key, flag in _HEAD_FLAGS.items()
               if {"pooling": pooling, "input_shape": shape, "classifier_activation": act}[key] is None]
    if missing and variant is None:
        missing.insert(0, _VARIANT_FLAG)
    if missing:
        units = dense.weights[0].shape[1]
        layout = (" It has the official ImageNet layout, but it is not Keras' official file (whose MD5 "
                  "decides its softmax head), and the layout is also what Xception(classifier_activation=None) "
                  "or a fine-tuned copy saves." if _official_layout(dense) else "")
        what = [text for key, text in (("pooling", "the head's pooling (average or max)"),
                                       ("classifier_activation", "the classifier's activation"),
                                       ("input_shape", "the input size it was trained at"))
                if _HEAD_FLAGS[key] in missing]
        raise ConversionError(
            f"{source}: a weights-only file does not determine the model: it holds the backbone and a "
            f"{units}-unit Dense ({dense.name})"
            + (f" after {recorded[1]} ({recorded[0]} pooling)" if recorded else "")
            + (f", but not {', '.join(what[:-1])} or {what[-1]}" if len(what) > 1 else
               f", but not {what[0]}" if what else "")
            + ("" if variant is not None else f", {'nor' if what else 'but not'} which Xception's wiring "
               "(Keras' or the article's) the weights belong to") + f".{layout} Pass the model's "
            f"architecture with --config model.keras|config.json, or give {' '.join(missing)} (which do not "
            f"give {_DTYPE_POLICY}: a mixed-precision model needs --config)")
    head = head_schema.keras_head(False, pooling) + [
        {"kind": "dense", "name": "predictions", "units": int(dense.weights[0].shape[1]),
         "activation": None if act == "linear" else act, "use_bias": True}]
    return head, shape, []
