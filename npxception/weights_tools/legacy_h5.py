"""Legacy Keras (1, 2 and tf_keras) HDF5 files: weights-only and full-model saves.

Layout, as ``keras/engine/saving.py`` (Keras 2) and tf_keras' ``hdf5_format.py`` write it::

    /                         attrs: layer_names (maybe split: layer_names0, layer_names1, ...),
                                     keras_version, backend
    /<layer>                  attrs: weight_names  (e.g. "block1_conv1/kernel:0")
    /<layer>/<weight name>    the array

A full-model save (``model.save("x.h5")``) puts that tree under ``/model_weights``
and the architecture in the root attribute ``model_config`` (JSON), which gives
the wiring through :func:`npxception.weights_tools.keras_config.flatten_config`. A
weights-only file (``save_weights``, and the official ImageNet download) has no
wiring: its layers come out with ``inbound=None`` in file order, and
:mod:`npxception.weights_tools.by_order` applies Keras' by-order rule, checking every shape.

Names are never trusted. Official files carry auto-names (``conv2d_1``, or in
Keras-1 files ``convolution2d_N``, ``separableconvolution2d_N``,
``batchnormalization_N``), so without a config a layer's class is inferred from
its variable names when they are informative, else from the number and shapes
of its arrays.

A nested model (e.g. a fine-tuned classifier whose first layer is the Xception
model) is stored as one layer group whose ``weight_names`` span all its inner
layers ("block1_conv1/kernel:0", ...), trainable variables first and the BN
moving statistics after. Its weights are regrouped by inner layer name (the
path component before the variable name), keeping file order within a layer,
which is each layer's own variable order.

**Keras 1 ``running_std`` is a variance.** Keras 1's BatchNormalization stored
``[gamma, beta, running_mean, running_std]``, but ``running_std`` held the moving
*variance*: training updated it with the variance returned by
``K.normalize_batch_in_training`` and inference passed it as ``var`` to
``K.batch_normalization`` (TensorFlow's ``tf.nn.batch_normalization(x, mean,
variance, ...)``). Keras 2 renamed it ``moving_variance`` and loads Keras-1 files
without any conversion of the values. So we use it as the variance, unchanged.
"""

from __future__ import annotations

import h5py

from npxception.untrusted import loads_json, short_repr

from .errors import ConversionError
from .graph import KLayer
from .hdf5 import GuardedH5
from .keras_config import flatten_config, subclass_name, subclassed_model
from .kinds import COMPUTING_LAYER, POOLING_CLASS, pooling_of

_BN_VARS = {"gamma", "beta", "moving_mean", "moving_variance", "running_mean", "running_std"}


def _var_name(weight_name: str) -> str:
    """``"block1_conv1_bn/moving_mean:0"`` -> ``"moving_mean"``; Keras-1 ``"..._running_std"`` too."""
    leaf = weight_name.split("/")[-1].split(":")[0]
    for known in sorted(_BN_VARS | {"depthwise_kernel", "pointwise_kernel", "kernel", "bias"}, key=len,
                        reverse=True):
        if leaf == known or leaf.endswith("_" + known):
            return known
    return leaf


def _owner(weight_name: str, default: str) -> str:
    """The layer a weight belongs to: the path component before the variable name."""
    parts = weight_name.split("/")
    return parts[-2] if len(parts) >= 2 else default


def infer_class(weight_names, arrays) -> str:
    """A layer's Keras class from its variable names, else from its arrays' shapes."""
    names = {_var_name(n) for n in weight_names}
    if {"depthwise_kernel", "pointwise_kernel"} <= names:
        return "SeparableConv2D"
    if names and names <= _BN_VARS:
        return "BatchNormalization"
    shapes = [a.shape for a in arrays]
    if len(shapes) == 4 and all(len(s) == 1 for s in shapes) and len(set(shapes)) == 1:
        return "BatchNormalization"
    if len(shapes) in (2, 3) and len(shapes[0]) == 4 and len(shapes[1]) == 4 and shapes[1][:2] == (1, 1) \
            and shapes[0][3] == 1:
        return "SeparableConv2D"
    if shapes and len(shapes[0]) == 4 and len(shapes) <= 2:
        return "Conv2D"
    if shapes and len(shapes[0]) == 2 and len(shapes) <= 2:
        return "Dense"
    return "Unknown"


def _weights_root(h5: GuardedH5):
    root = h5.file
    names = h5.keys(root)
    if "model_weights" in names:
        return h5.get(root, "model_weights"), True
    return root, False


def _read_groups(h5: GuardedH5, group) -> list[tuple[str, list[str], list]]:
    """``[(layer name, weight names, arrays)]`` in the file's layer order."""
    layer_names = h5.attr_strings(group, "layer_names")
    if layer_names is None:
        raise ConversionError(f"{h5.where}: an HDF5 file without Keras 'layer_names'; not a Keras weight file")
    members = set(h5.keys(group))
    out = []
    listed = set()
    for name in layer_names:
        if name not in members:
            raise ConversionError(f"{h5.where}: layer_names lists {name!r}, but the file has no such group")
        if name in listed:
            raise ConversionError(f"{h5.where}: layer_names lists {name!r} twice; every layer is read once")
        listed.add(name)
        g = h5.get(group, name)
        weight_names = h5.attr_strings(g, "weight_names") or []
        # Checked (links, storage, each dataset referenced once), not yet read:
        # the converter reads each array after checking its shape.
        arrays = [h5.stored(g, wn) for wn in weight_names]
        out.append((name, weight_names, arrays))
    return out


def _split_nested(name, weight_names, arrays, nested=False):
    """One group -> [(inner layer name, weight names, arrays)]: several when it is a nested model.

    ``nested``: the config says the group is a nested model, so its weights are split by owner
    even when one inner layer holds them all (a Sequential preprocessing block whose only
    weighted layer is a Normalization).
    """
    owners: dict[str, tuple[list, list]] = {}
    for wn, a in zip(weight_names, arrays):
        wns, arr = owners.setdefault(_owner(wn, name), ([], []))
        wns.append(wn)
        arr.append(a)
    if len(owners) <= 1 and not nested:
        return [(name, list(weight_names), list(arrays))]
    return [(inner, wns, arr) for inner, (wns, arr) in owners.items()]


def training_state(h5: GuardedH5) -> dict[str, int]:
    """``{"optimizer state": n}`` for a full-model save's ``/optimizer_weights`` group.

    ``model.save("x.h5")`` after ``compile()`` stores the optimizer's slots there
    (and ``training_config`` in the root attributes). ``load_model(...,
    compile=False)`` never reads them; neither do we, beyond counting them for
    ``inspect``.
    """
    if "optimizer_weights" not in h5.keys(h5.file):
        return {}
    root = h5.get(h5.file, "optimizer_weights")
    # Iterative, and each object once: a deep or cyclic (hard-linked) hostile
    # tree can neither exhaust the stack nor loop.
    count, stack, seen = 0, [root], {root.id}
    while stack:
        group = stack.pop()
        for name in h5.keys(group):
            obj = h5.get(group, name)
            if obj.id in seen:
                continue
            seen.add(obj.id)
            if isinstance(obj, h5py.Group):
                stack.append(obj)
            else:
                count += 1
    return {"optimizer state": count}


def h5_version(h5: GuardedH5) -> str | None:
    """The ``keras_version`` attribute of a legacy HDF5 file, else None (an unreadable one is no version)."""
    try:
        return h5.attr_text(h5.file, "keras_version")
    except (UnicodeDecodeError, TypeError, ValueError):
        return None


def read_legacy_h5(h5: GuardedH5, config=None, used=None) -> tuple[list[KLayer], tuple | None, bool]:
    """``(klayers, input_shape, wired)`` from an open legacy Keras HDF5 file; ``used`` (a dict), if given,
    gets the config the layers were read with as ``used["config"]`` (the model's name is in it).

    ``config``: the model config (a dict) given for a weights-only file (``save_weights("w.h5")``,
    ``ModelCheckpoint(save_weights_only=True)``); a full-model save records its own and is refused one.
    """
    group, full_model = _weights_root(h5)
    groups = _read_groups(h5, group)
    config_text = h5.attr_text(h5.file, "model_config") if full_model else None
    if config is not None:
        if full_model:
            raise ConversionError(f"{h5.where}: a full-model save records its own architecture; a given config "
                                  "is for weights-only files (.weights.h5, save_weights). Convert the file "
                                  "without --config")
        _in_load_weights_order(h5, groups, config)
        if used is not None:
            used["config"] = config
        return _with_config(h5, groups, config)
    if config_text:
        try:
            config = loads_json(config_text)
        except ValueError as exc:
            raise ConversionError(f"{h5.where}: the model_config attribute is not valid JSON ({exc})") from None
        if used is not None:
            used["config"] = config
        return _with_config(h5, groups, config)
    klayers = []
    seen = set()
    for name, weight_names, arrays in groups:
        parts = _split_nested(name, weight_names, arrays)
        nested = len(parts) > 1
        for inner, wns, arr in parts:
            pooling = pooling_of(inner) if not arr else None  # "avg", "max" or None
            if not arr and not COMPUTING_LAYER.fullmatch(inner) and not pooling:
                continue  # weightless and computing nothing by its name (kept: by_order refuses those)
            flat = f"{name}/{inner}" if nested else inner
            if flat in seen:
                raise ConversionError(f"{h5.where}: layer {flat!r} appears twice")
            seen.add(flat)
            # a global pooling layer, kept by its name: what by_order reads the head's pooling from
            cls = POOLING_CLASS[pooling] if pooling else infer_class(wns, arr)
            klayers.append(KLayer(name=flat, class_name=cls, config=None, inbound=None,
                                  weights=arr, weight_names=wns))
    if not klayers:
        raise ConversionError(f"{h5.where}: the file holds no weights")
    return klayers, None, False


def _in_load_weights_order(h5: GuardedH5, groups, config):
    """Refuse a weights-only file whose layers are not the config's, in the config's order.

    tf_keras' ``load_weights("w.h5")`` pairs the file's layers that hold weights with the model's
    top-level layers that hold weights by order (``hdf5_format.load_weights_from_hdf5_group``); we
    pair them by name. The two agree when the file's weighted layers are config layers, in the
    config's order, which is what ``save_weights`` of the model the config describes writes.
    """
    name = subclass_name(config)
    if name is not None:
        raise ConversionError(f"{h5.where}: the given config is that of {subclassed_model(name)}")
    model = config.get("config", config) if isinstance(config, dict) else config  # with or without the wrapper
    layers = model.get("layers") if isinstance(model, dict) else model  # Keras 1 Sequential: a bare list
    order = {}
    for i, entry in enumerate(layers if isinstance(layers, list) else []):
        name = entry.get("name") or (entry.get("config") or {}).get("name") if isinstance(entry, dict) else None
        if isinstance(name, str):
            order.setdefault(name, i)
    weighted = [name for name, _wns, arrays in groups if arrays]
    if weighted and not order:  # nothing to list: say what the config is instead
        found = (f"class_name {short_repr(config.get('class_name'))} and no layer list" if isinstance(config, dict)
                 else f"a JSON {type(config).__name__} of no named layer")
        raise ConversionError(f"{h5.where}: the given config names no layers ({found}); expected the config of the "
                              'model that saved these weights, {"class_name": "Functional", "config": {"layers": '
                              '[{"name": ..., ...}, ...]}} (model.to_json())')
    missing = [name for name in weighted if name not in order]
    if missing:
        raise ConversionError(f"{h5.where}: the file holds weights for {', '.join(missing[:5])}, which the given "
                              f"config does not have; its top-level layers are {', '.join(list(order)[:8])}, ... "
                              "Give the config of the model that saved these weights")
    positions = [order[name] for name in weighted]
    if positions != sorted(positions):
        raise ConversionError(f"{h5.where}: the file's layers ({', '.join(weighted[:8])}) are not in the given "
                              "config's order; Keras' load_weights pairs them by order. Give the config of the "
                              "model that saved these weights")


def _with_config(h5: GuardedH5, groups, config):
    klayers, paths, input_shape = flatten_config(config, source=h5.where,
                                                 keras3_legacy_h5=(h5_version(h5) or "").startswith("3."))
    by_path = {paths[k.name]: k for k in klayers}
    for name, weight_names, arrays in groups:
        if not arrays:
            continue
        if (name,) in by_path:  # a top-level layer: its weights in its own order
            k = by_path[(name,)]
            k.weights, k.weight_names = list(arrays), list(weight_names)
            continue
        inner_layers = {p[-1]: k for p, k in by_path.items() if len(p) > 1 and p[0] == name}
        if not inner_layers:
            raise ConversionError(f"{h5.where}: weights for layer {name!r}, which the model config "
                                  "does not have")
        for inner, wns, arr in _split_nested(name, weight_names, arrays, nested=True):
            k = inner_layers.get(inner)
            if k is None:
                raise ConversionError(f"{h5.where}: weights {wns[0]!r} in {name!r} belong to no layer of "
                                      "the nested model's config")
            k.weights, k.weight_names = list(arr), list(wns)
    return klayers, input_shape, True
