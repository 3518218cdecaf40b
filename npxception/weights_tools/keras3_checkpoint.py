"""A Keras 3 model in a TensorFlow checkpoint: which object holds which layer's weights.

Keras 3 on the TensorFlow backend has no TensorFlow-format ``save_weights``; its models reach a
checkpoint through ``tf.train.Checkpoint(model=model, ...)`` (``.save()``, ``.write()``, a
``CheckpointManager``). The checkpoint is a TensorFlow bundle whose TrackableObjectGraph
(:mod:`npxception.weights_tools.tf_checkpoint`) references, measured on Keras 3.15 (TensorFlow 2.21):

* a Functional model's layers as its list ``_operations``: ``_operations/i`` is ``model.operations[i]``,
  the i-th entry of the model config's ``layers`` (the InputLayer first). Only trackable entries are
  listed: an operation (``x / 127.5``, Keras' ``TrueDivide``) leaves its index out. A Sequential holds
  the Functional it builds as ``_functional``, whose ``_operations`` list its layers, its InputLayer first;
* a layer's variables by attribute: ``depthwise_kernel``, ``gamma``, ``moving_mean``... and ``_kernel`` for
  Dense and Conv2D (:data:`KERAS3_ALIASES`); each variable records its path, ``block1_conv1/kernel``
  (``base/c1/kernel`` inside a Sequential ``base``): the layer it belongs to is checked against it;
* a compiled model's optimizer as its child ``optimizer`` (beside the root's ``optimizer=``, when given),
  whose ``_trainable_variables`` list the model's weights too: the bundle key of a weight is the first
  breadth-first path to it (``optimizer/_trainable_variables/3/...``), so keys are never parsed; each weight
  is found from the model's layer.

With the model's config (``--config``: its ``.keras`` or ``config.json``) each layer's object is the
config's index (:func:`object_paths_from_config`) and everything is checked as for tf_keras'
checkpoints. Without, the layers are read in ``_operations`` order for Keras' by-order rule
(:func:`klayers_by_order`): a layer with weights is named by its variables' paths and its class inferred from
their names; a layer without weights is listed with its class not recorded (:data:`UNRECORDED`), which
:mod:`npxception.weights_tools.by_order` counts against the table to refuse what it cannot know (a
Rescaling in front, a pooling not given, a layer after the classifier). A nested model is refused there:
the checkpoint does not record how it is wired.
"""

from __future__ import annotations

import re
from dataclasses import replace

from npxception.config import CONFIG

from .errors import ConversionError
from .graph import UNRECORDED, KLayer
from .keras_config import is_operation
from .legacy_h5 import infer_class
from .tf_bundle import Bundle
from .tf_checkpoint import ObjectGraph, _layer_arrays, _leftovers, _owner, layer_nodes, read_object_graph
from .tf_checkpoint import find_model as tf_find_model
from .tf_checkpoint import object_paths_from_config as tf_object_paths

OPERATIONS = "_operations"  # Functional: self._operations, every layer and operation of the model
SEQUENTIAL = "_functional"  # Sequential: the Functional it builds from its layers
# Attributes that hold a variable under another name than the variable's own (its path's last part).
# keras/src/layers/core/dense.py and convolutional/base_conv.py keep the kernel as self._kernel (the
# property `kernel` adds LoRA/quantization); the checkpoint tracks the attribute.
KERAS3_ALIASES = {"_kernel": "kernel"}
_INDEX = re.compile(r"0|[1-9][0-9]{0,5}")  # a list index as TensorFlow's ListWrapper writes it: str(i)


def layer_list(graph: ObjectGraph, node: int) -> tuple[tuple[str, ...], int] | None:
    """``(path, node)`` of a Keras 3 model's layer list under ``node`` (``("_operations",)`` or
    ``("_functional", "_operations")``), or None when ``node`` is no Keras 3 model. Two lookups: O(1)."""
    children = graph.children[node]
    if OPERATIONS in children:
        return (OPERATIONS,), children[OPERATIONS]
    inner = children.get(SEQUENTIAL)
    if inner is not None and OPERATIONS in graph.children[inner]:
        return (SEQUENTIAL, OPERATIONS), graph.children[inner][OPERATIONS]
    return None


def find_model(graph: ObjectGraph) -> ObjectGraph | None:
    """The graph rooted at its Keras 3 model, with :data:`KERAS3_ALIASES`; None when it holds none.

    ``tf.train.Checkpoint(model=model)`` holds the model as a child of its root, under whatever name the
    user gave it (``net=model``): the one root child that is a Keras 3 model is it. Several (an EMA copy
    beside the model) are refused naming them, never chosen; so is one object under several names."""
    if layer_list(graph, 0) is not None:  # tf.train.Checkpoint(root=model)
        return replace(graph, aliases=KERAS3_ALIASES)
    found: dict[int, list[str]] = {}
    for name, node in graph.children[0].items():  # each root child looked at once: O(children)
        if layer_list(graph, node) is not None:
            found.setdefault(node, []).append(name)
    if not found:
        return None
    names = sorted(n for ns in found.values() for n in ns)
    if len(names) > 1:
        what = (f"{len(found)} Keras 3 models" if len(found) > 1
                else f"one Keras 3 model under {len(names)} names")
        raise ConversionError(f"{graph.where}: a checkpoint holding {what} ({', '.join(names[:5])}"
                              f"{', ...' if len(names) > 5 else ''}); expected one: which one to convert is "
                              "not determined (save it alone: tf.train.Checkpoint(model=model))")
    (node, [name]), = found.items()
    return replace(graph, root=node, prefix=name + "/", aliases=KERAS3_ALIASES)


def checkpoint_model(prefix) -> tuple[str, str]:
    """``(framework, child)`` of the checkpoint at ``prefix``: ``"keras"`` for a Keras 3 model's, else
    ``"tf_keras"``; ``child``, the name under which its root holds the model (``"model"`` for
    ``tf.train.Checkpoint(model=model)``, TensorFlow restores it as ``tf.train.Checkpoint(model=m)``), ``""``
    when the model is the root (``save_weights``, ``ModelCheckpoint``: ``model.load_weights``). Read within
    the object graph's caps."""
    with Bundle(prefix) as bundle:
        graph = read_object_graph(bundle)
        keras3 = find_model(graph)
        if keras3 is not None:
            return "keras", keras3.prefix[:-1]
        return "tf_keras", tf_find_model(graph).prefix[:-1]


def _entries(graph: ObjectGraph, path: tuple[str, ...]) -> list[tuple[int, int]]:
    """``[(index, node)]`` of a layer list, by index; its names checked as ``str(i)`` of a layer's index."""
    node = graph.node(path)
    where = f"{graph.where}: {graph.prefix}{'/'.join(path)}"
    out = []
    for name, child in graph.children[node].items():
        if not _INDEX.fullmatch(name) or int(name) >= CONFIG.max_config_layers:
            raise ConversionError(f"{where} holds {name[:40]!r}; expected the indices 0, 1, ... of at most "
                                  f"{CONFIG.max_config_layers:,} layers")
        out.append((int(name), child))
    return sorted(out)


def _variables_of(bundle: Bundle, graph: ObjectGraph, node: int, what: str, layer: str | None):
    """``_layer_arrays`` of a layer's node, each variable's path checked: it names the variable (its own
    name, ``kernel`` for ``_kernel``) and, when ``layer`` is given, that layer."""
    names, variables, tensors = _layer_arrays(bundle, graph, node, what)
    for name, v in zip(names, variables):
        if v.full_name.rsplit("/", 1)[-1] != name or _owner(v) is None:
            raise ConversionError(f"{bundle.where}: {what} holds variable {v.full_name!r} as {name!r}; Keras 3 "
                                  f"records a variable's path as <layer>/{name}")
        if layer is not None and _owner(v) != layer:
            raise ConversionError(f"{bundle.where}: {what} holds variable {v.full_name!r}, but the config puts "
                                  f"layer {layer!r} there; the config does not describe the model that wrote "
                                  "this checkpoint")
    return names, variables, tensors


def _take(bundle: Bundle, used: dict[str, str], keys, what: str) -> None:
    """Record that ``what`` takes the entries ``keys``; one taken twice (two layers holding one variable
    object) is refused: Keras gives every layer variables of its own."""
    for key in keys:
        if key in used:
            raise ConversionError(f"{bundle.where}: {what} holds the variable {key!r} that {used[key]} holds; "
                                  "a Keras layer owns its variables (a corrupt checkpoint)")
        used[key] = what


def _leftovers_of(bundle: Bundle, graph: ObjectGraph, used) -> dict[str, int]:
    """:func:`tf_checkpoint._leftovers` for a Keras 3 model: its root is a ``tf.train.Checkpoint`` (Keras 3
    writes no other TensorFlow checkpoint), so scalars beside the model are its counters (``step=``), and
    a root child that is the model's own optimizer (``opt=model.optimizer``) holds optimizer state."""
    root = graph.children[0]
    optimizer = graph.children[graph.root].get("optimizer")
    optimizers = tuple(name for name, node in root.items() if optimizer is not None and node == optimizer)
    return _leftovers(bundle, set(used), graph.prefix, root, checkpoint=bool(graph.prefix),
                      optimizers=optimizers)


def keras3_places(cls: str, entries: list[dict]):
    """``(entry, local names)`` of a model's config entries in Keras 3's layout: the i-th entry of a
    Functional's ``layers`` is ``_operations/i``, of a Sequential's ``_functional/_operations/i`` (shifted by one
    when the config does not list the InputLayer its Functional starts with); an operation has no object."""
    base = (SEQUENTIAL, OPERATIONS) if cls == "Sequential" else (OPERATIONS,)
    shift = 1 if cls == "Sequential" and entries and entries[0].get("class_name") != "InputLayer" else 0
    for index, entry in enumerate(entries):
        if not is_operation(entry):  # an operation is untracked: no object, no weights
            yield entry, base + (str(index + shift),)


def object_paths_from_config(config, where: str) -> dict[tuple, tuple]:
    """``{Keras path: object path}`` from a model config, in Keras 3's layout (:func:`keras3_places`)."""
    return tf_object_paths(config, where, keras3_places)


def fill_weights(klayers, paths: dict[str, tuple], object_paths: dict[tuple, tuple], bundle: Bundle,
                 graph: ObjectGraph) -> dict[str, int]:
    """Put the bundle's tensors (checked, not yet read) into the flattened config's KLayers, as
    :func:`tf_checkpoint.fill_weights` does for tf_keras' layout, each variable's path checked against its
    layer and taken once; returns the training state ignored."""
    used: dict[str, str] = {}
    for k, kpath, opath, node in layer_nodes(klayers, paths, object_paths, graph):
        what = f"{graph.prefix}{'/'.join(opath)} (layer {k.name}, {k.class_name})"
        _, variables, tensors = _variables_of(bundle, graph, node, what, kpath[-1])
        k.weights, k.weight_names = tensors, [v.key for v in variables]
        _take(bundle, used, k.weight_names, what)
    return _leftovers_of(bundle, graph, used)


def klayers_by_order(bundle: Bundle, graph: ObjectGraph) -> tuple[list[KLayer], dict[str, int]]:
    """``(klayers, ignored)`` without config: the model's ``_operations`` in index order, each with
    ``inbound=None``; a layer with weights named by its variables (``predictions/kernel``), its class
    inferred from their names; a layer without weights, or an operation's missing index, listed as
    :data:`UNRECORDED` (its name: its object path), for by_order to count."""
    path, _ = layer_list(graph, graph.root)
    label = graph.prefix + "/".join(path)
    entries = _entries(graph, path)
    if not entries or entries[0][0] != 0 or graph.variables(entries[0][1]):
        raise ConversionError(f"{bundle.where}: {label} does not start with the model's input (an object without "
                              "variables at index 0, its InputLayer); not a Keras 3 model's layer list")
    klayers: list[KLayer] = []
    used: dict[str, str] = {}
    seen: dict[int, str] = {}
    for index, node in entries:
        while len(klayers) < index:  # an operation (x / 127.5): not tracked, so its index is missing
            klayers.append(KLayer(name=f"{label}/{len(klayers)} (an operation)", class_name=UNRECORDED,
                                  inbound=None))
        what = f"{label}/{index}"
        if node in seen:  # Keras lists each layer of a model once
            raise ConversionError(f"{bundle.where}: {what} is the object {seen[node]} is (node {node}); a Keras "
                                  "model lists each of its layers once (a corrupt checkpoint)")
        seen[node] = what
        if node == graph.root or layer_list(graph, node) is not None:
            raise ConversionError(f"{bundle.where}: {what} is a nested model, whose wiring a checkpoint does not "
                                  "record; pass the model's config (its .keras archive, or model.to_json()) "
                                  "as --config")
        if not graph.variables(node):
            klayers.append(KLayer(name=what, class_name=UNRECORDED, inbound=None))
            continue
        names, variables, tensors = _variables_of(bundle, graph, node, what, None)
        owners = sorted({_owner(v) for v in variables})
        if len(owners) > 1:
            raise ConversionError(f"{bundle.where}: {what} holds the variables of layers {', '.join(owners[:4])}; "
                                  "a Keras layer holds its own")
        keys = [v.key for v in variables]
        _take(bundle, used, keys, f"{what} ({owners[0]})")
        klayers.append(KLayer(name=owners[0], class_name=infer_class(names, tensors), inbound=None,
                              weights=tensors, weight_names=keys))
    return klayers, _leftovers_of(bundle, graph, used)
