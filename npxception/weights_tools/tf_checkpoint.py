"""Keras layers in a TensorFlow checkpoint: which bundle entries hold which layer's weights.

tf_keras saves a model's variables as a TensorFlow checkpoint: ``save_weights("ckpt")``
without ``.h5`` (and ``ModelCheckpoint(save_weights_only=True)``), and the ``variables/`` of a
SavedModel directory; ``tf.train.Checkpoint(model=model)`` (and ``CheckpointManager``) saves one
with the model as a child of its root (:func:`find_model`). Its entries are
keyed not by layer name but by a path of *object references* from the model to
the variable (tensorflow/python/checkpoint/graph_view.py):

* a Functional or Sequential model references ``model.layers[i]`` as ``layer-i``
  and, when that layer has weights, also as ``layer_with_weights-k`` for the
  k-th such layer (tf_keras ``training.py``, ``_layer_checkpoint_dependencies``).
  A Sequential's ``layers`` leave out its InputLayer; a Functional's include it;
* a layer references each variable by the name given to ``add_weight``
  (``kernel``, ``depthwise_kernel``, ``gamma``, ``moving_mean``, ...).

The graph of these references is stored in the bundle itself: a
TrackableObjectGraph (tensorflow/core/protobuf/trackable_object_graph.proto)
under the key ``_CHECKPOINTABLE_OBJECT_GRAPH``, whose nodes list their named
children (``ObjectReference``: node_id = 1, local_name = 2) and, for a variable,
the bundle key of its value (``SerializedTensor``: name = 1 "VARIABLE_VALUE",
full_name = 2 "block1_conv1/kernel", checkpoint_key = 3). A key is the first
breadth-first path to its variable, so one variable is keyed
``layer_with_weights-0/layer_with_weights-1/gamma/.ATTRIBUTES/VARIABLE_VALUE``
in a checkpoint but ``variables/7/.ATTRIBUTES/VARIABLE_VALUE`` in a SavedModel
(whose model also lists its variables). Keys are therefore never parsed: the
object graph is walked from the model (node 0) along each layer's object path,
and the variable's ``full_name`` (``<layer name>/<variable>``) is checked
against the layer the config puts there.

The object path of a layer comes from the config's layer order
(:func:`object_paths_from_config`, for ``save_weights`` files) or from a
SavedModel's ``keras_metadata.pb`` (:mod:`npxception.weights_tools.savedmodel`). Without
a config, a checkpoint of ``applications.Xception`` (the layout the official
weights have) is read by Keras' by-order rule (:func:`klayers_by_order`): its
``layer_with_weights-0``, ``-1``, ... are the weighted layers in order; a nested
model among them is not determined and is refused. Every
entry no layer takes must be training state (:func:`training_state`), counted
and ignored as ``load_model(..., compile=False)`` ignores it; any other is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from npxception.config import CONFIG

from . import protowire as pw
from .errors import ConversionError
from .graph import KLayer, set_aside
from .legacy_h5 import infer_class
from .keras_config import MODEL_CLASSES, _unwrap
from .tf_bundle import Bundle

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
WEIGHTED = "layer_with_weights-"  # model.layers[i] with weights, the k-th of them: layer_with_weights-k
LAYER_PREFIXES = ("layer-", WEIGHTED)
VALUE_ATTRIBUTE = "VARIABLE_VALUE"
# get_weights() order of every variable name the converter's layers have: Conv2D (kernel, bias),
# SeparableConv2D (depthwise_kernel, pointwise_kernel, bias), BatchNormalization (gamma, beta,
# moving_mean, moving_variance; gamma/beta absent with scale/center off), Dense (kernel, bias),
# Normalization (mean, variance, count). One order fits them all.
WEIGHT_ORDER = ("kernel", "depthwise_kernel", "pointwise_kernel", "bias", "gamma", "beta", "moving_mean",
                "moving_variance", "mean", "variance", "count")

# The object graph is decoded field by field against these caps (protowire.FieldBudget), so a refusal
# comes before the Python objects (~100 bytes a field, from 2 bytes of input) are made. The recipe's
# SavedModel (the largest graph of the corpus: the model also lists its variables) has 2,426 objects,
# 20,701 fields in all, and its largest object (the root) 240 fields; the flat checkpoint's root has 314.
MAX_OBJECTS = 100_000  # 40x the recipe's SavedModel
MAX_GRAPH_FIELDS = 1_000_000  # 50x its fields: objects, references, attributes and their fields together
MAX_OBJECT_FIELDS = 100_000  # 300x the largest object's (children, attributes, ...)

_GRAPH = {1: ("nodes", pw.LENGTH, True)}
_OBJECT = {1: ("children", pw.LENGTH, True), 2: ("attributes", pw.LENGTH, True)}
_REFERENCE = {1: ("node_id", pw.VARINT, False), 2: ("local_name", pw.LENGTH, False)}
_TENSOR = {1: ("name", pw.LENGTH, False), 2: ("full_name", pw.LENGTH, False), 3: ("checkpoint_key", pw.LENGTH, False)}


@dataclass(frozen=True)
class Variable:
    full_name: str  # the variable's own name, "block1_conv1/kernel"
    key: str  # its bundle key


@dataclass
class ObjectGraph:
    """The checkpoint's TrackableObjectGraph: each node's named children, and the value of each variable."""

    children: list[dict[str, int]]  # node id -> {local name: child node id}
    values: dict[int, Variable]  # variable node id -> where its value is
    where: str
    # the Keras model's node: 0 for save_weights; a tf.train.Checkpoint(model=...) holds it as a child
    root: int = 0
    prefix: str = ""  # the keys' path to the model: "" or "model/" (find_model)
    # {local name: variable name} of the layers' attributes that are not their variables' names: Keras 3's
    # Dense and Conv2D hold the kernel as `_kernel` (keras3_checkpoint.KERAS3_ALIASES); none in tf_keras
    aliases: dict = field(default_factory=dict)
    # Each node's children are scanned once, whatever number of references reach it (the budget rule:
    # a node with 100,000 children referenced 100,000 times must not cost 10^10 steps): what a scan
    # finds is kept here by node id, shared by the graphs find_model derives.
    _variables: dict = field(default_factory=dict, repr=False, compare=False)
    _layered: dict = field(default_factory=dict, repr=False, compare=False)

    def node(self, path: tuple[str, ...]) -> int | None:
        """The node reached from the model (:attr:`root`) along ``path``'s local names, or None."""
        node = self.root
        for name in path:
            node = self.children[node].get(name)
            if node is None:
                return None
        return node

    def variables(self, node: int) -> dict[str, Variable]:
        """``{local name: variable}`` of a layer's node: its children that hold a value.

        A variable referenced under several names (tf_keras' Normalization tracks its
        ``mean`` weight as ``mean`` and as the attribute ``adapt_mean``) is listed once,
        by its weight name when one of its names is in :data:`WEIGHT_ORDER`.
        """
        if node in self._variables:
            return self._variables[node]
        names: dict[int, list[str]] = {}
        for name, child in self.children[node].items():
            if child in self.values:
                names.setdefault(child, []).append(self.aliases.get(name, name))
        out = {}
        for child, aliases in names.items():
            known = [a for a in aliases if a in WEIGHT_ORDER]
            name = (known or aliases)[0]
            if name in out:  # `kernel` and `_kernel` both: which one the layer computes with is not recorded
                raise ConversionError(f"{self.where}: object {node} holds two variables named {name!r} (nodes "
                                      f"{[c for c, a in names.items() if name in a][:2]}); a layer has one")
            out[name] = self.values[child]
        self._variables[node] = out
        return out

    def references_layers(self, node: int) -> frozenset[str]:
        """Which of ``layer-`` and ``layer_with_weights-`` a node's children are named with: a Keras model
        references its layers so (tf_keras ``_layer_checkpoint_dependencies``); any other node, neither."""
        if node not in self._layered:
            self._layered[node] = frozenset(p for p in LAYER_PREFIXES
                                            if any(name.startswith(p) for name in self.children[node]))
        return self._layered[node]

    def is_model(self, node: int) -> bool:
        return bool(self.references_layers(node))


def read_object_graph(bundle: Bundle) -> ObjectGraph:
    """Decode the bundle's ``_CHECKPOINTABLE_OBJECT_GRAPH`` (one linear pass; child ids checked)."""
    where = bundle.where
    if OBJECT_GRAPH_KEY not in bundle.entries:
        raise ConversionError(f"{where}: no {OBJECT_GRAPH_KEY} entry, so nothing says which tensor belongs to "
                              "which layer (a checkpoint of TF1's Saver, not of Keras' save_weights?)")
    raw = bundle.string(OBJECT_GRAPH_KEY)
    children: list[dict[str, int]] = []
    values: dict[int, Variable] = {}
    total = pw.FieldBudget(MAX_GRAPH_FIELDS, "fields in all (objects, references, attributes)")
    try:
        nodes = pw.message(raw, _GRAPH, total, pw.FieldBudget(MAX_OBJECTS, "objects")).get("nodes", [])
        for i, node in enumerate(nodes):
            obj = pw.message(node, _OBJECT, total, pw.FieldBudget(MAX_OBJECT_FIELDS, f"fields in object {i}"))
            refs: dict[str, int] = {}
            for ref in obj.get("children", []):
                r = pw.message(ref, _REFERENCE, total)
                # the first reference of a name wins, as TensorFlow's restore does
                refs.setdefault(pw.text(r.get("local_name", b""), "a child's name"), pw.signed64(r.get("node_id", 0)))
            children.append(refs)
            for attr in obj.get("attributes", []):
                a = pw.message(attr, _TENSOR, total)
                if pw.text(a.get("name", b""), "an attribute's name") == VALUE_ATTRIBUTE:
                    values[i] = Variable(pw.text(a.get("full_name", b""), "a variable's name"),
                                         pw.text(a.get("checkpoint_key", b""), "a checkpoint key"))
    except pw.LimitError as exc:
        raise ConversionError(f"{where}: entry {OBJECT_GRAPH_KEY} holds {exc} (the limit); a Keras model's "
                              "object graph holds a few thousand objects") from None
    except pw.WireError as exc:
        raise ConversionError(f"{where}: entry {OBJECT_GRAPH_KEY} is not a readable object graph ({exc})") from None
    if not children:
        raise ConversionError(f"{where}: entry {OBJECT_GRAPH_KEY} holds no objects")
    for i, refs in enumerate(children):
        for name, child in refs.items():
            if not 0 <= child < len(children):
                raise ConversionError(f"{where}: object {i}'s child {name!r} is node {child}; the graph has "
                                      f"{len(children)} nodes (a corrupt checkpoint)")
    return ObjectGraph(children, values, where)


def find_model(graph: ObjectGraph) -> ObjectGraph:
    """The graph rooted at its Keras model. ``save_weights`` (and ``ModelCheckpoint``) save the model as
    the root; ``tf.train.Checkpoint(model=model, ...)`` and its ``CheckpointManager`` save a Checkpoint
    whose children are the model and the rest (``save_counter``, an optimizer): the one child that is a
    Keras model is the model; a checkpoint holding several is refused, not guessed."""
    if graph.is_model(0):
        return graph
    models = sorted(name for name, node in graph.children[0].items() if graph.is_model(node))
    if not models:
        return graph  # no model anywhere: the readers' own errors say what is missing
    if len(models) > 1:
        raise ConversionError(f"{graph.where}: a checkpoint holding {len(models)} Keras models "
                              f"({', '.join(models[:5])}); expected one (save it alone: save_weights, or "
                              "tf.train.Checkpoint(model=model))")
    return replace(graph, root=graph.children[0][models[0]], prefix=models[0] + "/")


def tf_keras_places(cls: str, entries: list[dict]):
    """``(entry, local names)`` of a model's config entries in tf_keras' layout: ``model.layers[i]`` is
    ``layer-i`` (a Sequential's ``layers`` leave out its InputLayer)."""
    index = 0
    for entry in entries:
        if entry.get("class_name") == "InputLayer" and cls == "Sequential":
            continue
        yield entry, (f"layer-{index}",)
        index += 1


def object_paths_from_config(config, where: str, places=tf_keras_places) -> dict[tuple, tuple]:
    """``{Keras path: object path}`` from a model config: with ``places`` (tf_keras' by default:
    :func:`tf_keras_places`), ``model.layers[i]`` is ``layer-i``.

    The Keras path is :func:`npxception.weights_tools.keras_config.flatten_config`'s (nested
    model names, then the layer name); the object path, the local names from
    the model to that layer (``("layer-3", "layer-1")``). A walk with an explicit
    stack, linear in the config, nesting bounded as the config reader bounds it.
    """
    class_name, cfg = _unwrap(config, where)
    out: dict[tuple, tuple] = {}
    stack = [(class_name, cfg, (), ())]
    while stack:
        cls, cfg, kpath, opath = stack.pop()
        if len(kpath) > CONFIG.max_model_nesting:
            raise ConversionError(f"{where}: models nest more than {CONFIG.max_model_nesting} levels deep")
        layers = cfg.get("layers") if isinstance(cfg.get("layers"), list) else []
        for entry, local in places(cls, [e for e in layers if isinstance(e, dict)]):
            inner = entry.get("config") if isinstance(entry.get("config"), dict) else {}
            here = (kpath + (entry.get("name") or inner.get("name"),), opath + local)
            out[here[0]] = here[1]
            if entry.get("class_name") in MODEL_CLASSES or "layers" in inner:
                stack.append((entry.get("class_name"), inner, *here))
    return out


# Entries that are training state, not model state, by the object they hang from.
def training_state(keys) -> dict[str, list[str]]:
    """``{what: [keys]}`` for the bundle keys that are training state:

    * ``optimizer/...`` (the optimizer's iterations, learning rate and moments) and, for
      tf_keras' legacy optimizers, slots hung from a variable (``.../.OPTIMIZER_SLOT/optimizer/m/...``);
    * ``keras_api/metrics/...``: a compiled model's metric accumulators (SavedModel);
    * ``.../_random_generator/...``: augmentation layers' random state (``rng_type="stateful"``);
    * ``save_counter/...``: a ``tf.train.Checkpoint``'s count of its saves.
    """
    out: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split("/")
        if parts[0] == "save_counter":
            out.setdefault("checkpoint save counter", []).append(key)
        elif parts[0] == "optimizer" or ".OPTIMIZER_SLOT" in parts:
            out.setdefault("optimizer state", []).append(key)
        elif parts[0] == "keras_api":
            out.setdefault("metrics state", []).append(key)
        elif "_random_generator" in parts:
            out.setdefault("random generator state", []).append(key)
    return out


def _owner(variable: Variable) -> str | None:
    """The layer a variable was created in: ``block1_conv1`` for ``block1_conv1/kernel``."""
    return variable.full_name.rsplit("/", 1)[0].rsplit("/", 1)[-1] if "/" in variable.full_name else None


# Keras 3's LoRA adapters (keras/src/layers/core/dense.py, convolutional/base_conv.py: enable_lora): the layer
# computes with kernel + (lora_alpha / lora_rank) * lora_kernel_a @ lora_kernel_b, merged only when saved to .keras
LORA_VARIABLES = ("lora_kernel_a", "lora_kernel_b")


def _layer_arrays(bundle: Bundle, graph: ObjectGraph, node: int, what: str):
    """``(variable names, variables, tensors)`` of a layer's node, in ``get_weights()`` order."""
    variables = graph.variables(node)
    unknown = sorted(set(variables) - set(WEIGHT_ORDER))
    lora = [n for n in unknown if n in LORA_VARIABLES]
    if lora:
        raise ConversionError(f"{bundle.where}: {what} holds {' and '.join(lora)}: LoRA (Keras 3's "
                              "layer.enable_lora(rank)), which a checkpoint keeps beside the kernel, unmerged, and "
                              "npxception does not merge; save the model with model.save('model.keras') or "
                              "model.save_weights('model.weights.h5'), which store the merged kernel, and convert that")
    if unknown:
        raise ConversionError(f"{bundle.where}: {what} holds variable {unknown[0]!r}, which no layer the "
                              "converter knows has")
    names = [n for n in WEIGHT_ORDER if n in variables]
    # checked (shape, dtype, extent), read only after the converter has checked the shape
    return names, [variables[n] for n in names], [bundle.tensor(variables[n].key) for n in names]


# What tf_keras' BackupAndRestore hangs from its tf.train.Checkpoint's root beside the model
# (tf_keras/src/distribute/worker_training_state.py): the epoch and batch it saved at, the train counter.
BACKUP_STATE = ("ckpt_saved_epoch", "ckpt_saved_batch", "train_counter")
CHECKPOINT_COUNTER = "save_counter"  # every tf.train.Checkpoint.save() hangs it from the root


def _beside_the_model(keys, prefix: str, bundle: Bundle, root_children: dict[str, int],
                      checkpoint: bool | None = None, optimizers=()) -> dict[str, list[str]]:
    """``{what: [keys]}`` of the entries hung from the root beside its model that are known checkpoint
    state, which ``tf.train.Checkpoint(model=m).restore`` leaves alone too: tf_keras' BackupAndRestore's
    (:data:`BACKUP_STATE`) and, in a ``tf.train.Checkpoint`` (its root holds ``save_counter``, or the
    caller knows it is one: ``checkpoint``), scalar counters of its own (``tf.train.Checkpoint(step=
    tf.Variable(1), model=m)``); ``optimizers``: the names under which the root holds the model's own
    optimizer (``tf.train.Checkpoint(opt=model.optimizer, ...)``), whose entries are its state. Any other
    entry beside the model (a Dense kernel of a subclassed model saved with ``save_weights``) is a weight of
    something the file does not wire up, and :func:`_refuse_beside` refuses it rather than drop it."""
    out: dict[str, list[str]] = {}
    if checkpoint is None:
        checkpoint = CHECKPOINT_COUNTER in root_children
    for key in keys:
        if key.startswith(prefix):
            continue
        top = key.split("/")[0]
        entry = bundle.entries.get(key)
        if top in optimizers:
            out.setdefault("optimizer state", []).append(key)
        elif top in BACKUP_STATE or (checkpoint and entry is not None and entry.shape == ()):
            out.setdefault(f"checkpoint state beside the model ({top})", []).append(key)
    return out


def _variable_name(key: str) -> str:
    return key[: -len("/.ATTRIBUTES/VARIABLE_VALUE")] if key.endswith("/.ATTRIBUTES/VARIABLE_VALUE") else key


def _refuse_beside(bundle: Bundle, stray: list[str], prefix: str, root_children: dict[str, int],
                   checkpoint: bool | None = None) -> None:
    """Refuse weights found beside the model under the root: name them, and what the root likely is."""
    shown = ", ".join(f"{_variable_name(k)} {bundle.entries[k].shape if k in bundle.entries else ''}".rstrip()
                      for k in stray[:4]) + (f", ... ({len(stray)} in all)" if len(stray) > 4 else "")
    model = prefix[:-1]
    if checkpoint or (checkpoint is None and CHECKPOINT_COUNTER in root_children):
        what = (f"a tf.train.Checkpoint holding the model as {model!r} and {shown} beside it, which is no "
                "layer of that model")
    else:
        what = (f"its root is no tf.train.Checkpoint (no {CHECKPOINT_COUNTER}) but an object whose attributes "
                f"({_names(root_children)}) hold the Keras model {model!r} and {shown}: it looks like a "
                f"subclassed Keras model (class ...(keras.Model) with self.{model} = Xception(...)) saved with "
                "save_weights, whose call() is Python code the file does not hold, so how those weights are "
                "used is not determined")
    raise ConversionError(f"{bundle.where}: {what}; refused rather than dropped. Rebuild the network as a "
                          "Functional model (keras.Model(inputs, outputs) with the same layers), copy the "
                          "weights into it (set_weights(subclassed.get_weights()), or layer by layer), save "
                          "it (model.save('x.keras') or save_weights), and convert that")


def _names(refs: dict[str, int], shown: int = 8) -> str:
    names = sorted(refs)
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)" if len(names) > shown else "") or "nothing"


def _refuse_modelless(graph: ObjectGraph) -> None:
    """A root that references no layer, with no child that does: say what it holds instead."""
    if graph.root == 0 and not graph.is_model(0) and "signatures" in graph.children[0]:
        # tf.saved_model.save tracks the exported functions as the root's "signatures" (Keras 3's model.export()
        # too, beside serve, _all_variables...): these are a SavedModel's variables/, no Keras save
        raise ConversionError(
            f"{graph.where}: the variables of a TensorFlow SavedModel (its root holds {_names(graph.children[0])}): "
            "a serving graph written by Keras 3's model.export() or tf.saved_model.save, which records no Keras "
            "layers or config, so nothing says which weight is which layer's. Save the model itself instead: "
            "model.save('model.keras') (Keras 3), or model.save('model') / model.save('model.h5') in tf_keras")
    if graph.root == 0 and not graph.is_model(0):
        raise ConversionError(f"{graph.where}: no Keras model in the checkpoint's object graph: its root holds "
                              f"{_names(graph.children[0])}, and none of them references layers (tf_keras' layer-0, "
                              "layer_with_weights-0, or Keras 3's _operations); not the save_weights of a "
                              "Keras model, nor a tf.train.Checkpoint(model=...) of one")


def _leftovers(bundle: Bundle, used: set[str], prefix: str = "", root_children=None, *,
               checkpoint: bool | None = None, optimizers=()) -> dict[str, int]:
    """The training state among the entries no layer took; any other entry is refused. ``prefix``: the
    model's path in the keys (``model/`` in a tf.train.Checkpoint), read past for the model's own state;
    ``root_children``: the references of the object graph's root (what else it holds beside the model);
    ``checkpoint`` and ``optimizers``: :func:`_beside_the_model`'s."""
    root_children = root_children or {}
    keys = sorted(set(bundle.entries) - used - {OBJECT_GRAPH_KEY})

    def local(key):  # the key from the model, as save_weights would have written it
        return key[len(prefix):] if prefix and key.startswith(prefix) else key
    ignored, rest = set_aside([local(k) for k in keys], training_state)
    rest = set(rest)
    stray = [k for k in keys if local(k) in rest]
    if prefix:  # what else the Checkpoint holds at its root: tf_keras BackupAndRestore's epoch and batch...
        beside, stray = set_aside(stray, lambda keys: _beside_the_model(keys, prefix, bundle, root_children,
                                                                        checkpoint, optimizers))
        for what, count in beside.items():
            ignored[what] = ignored.get(what, 0) + count
        outside = [k for k in stray if not k.startswith(prefix)]
        if outside:
            _refuse_beside(bundle, outside, prefix, root_children, checkpoint)
    if stray:
        raise ConversionError(f"{bundle.where}: entry {stray[0]!r} belongs to no layer of the model "
                              f"({len(stray)} unexpected entr{'y' if len(stray) == 1 else 'ies'})")
    return ignored


def layer_nodes(klayers, paths: dict[str, tuple], object_paths: dict[tuple, tuple], graph: ObjectGraph):
    """``(klayer, Keras path, object path, node)`` of each of a flattened config's layers that has an object
    (not an InputLayer, an operation or a nested model); a layer whose object is missing is refused."""
    for k in klayers:
        kpath = paths.get(k.name)
        if k.class_name == "InputLayer" or kpath is None or k.function is not None:
            continue
        opath = object_paths.get(kpath)
        node = graph.node(opath) if opath is not None else None
        if node is None:
            if opath is None or k.class_name in MODEL_CLASSES:
                continue
            raise ConversionError(f"{graph.where}: no object {graph.prefix}{'/'.join(opath)} for layer {k.name} "
                                  f"({k.class_name}); the config does not describe the model that wrote this "
                                  "checkpoint")
        if k.class_name not in MODEL_CLASSES:  # a nested model's layers are each at their own path
            yield k, kpath, opath, node


def fill_weights(klayers, paths: dict[str, tuple], object_paths: dict[tuple, tuple], bundle: Bundle,
                 graph: ObjectGraph) -> dict[str, int]:
    """Put the bundle's tensors (checked, not yet read) into the flattened config's KLayers.

    ``paths``: ``{flat name: Keras path}`` (flatten_config); ``object_paths``:
    ``{Keras path: object path}``. Returns ``{what: entry count}`` of the
    training state ignored; any other entry that belongs to no layer is refused.
    """
    where = bundle.where
    _refuse_modelless(graph)
    used: set[str] = set()
    for k, kpath, opath, node in layer_nodes(klayers, paths, object_paths, graph):
        _, variables, tensors = _layer_arrays(bundle, graph, node, f"layer {k.name} ({k.class_name})")
        for v in variables:
            if _owner(v) not in (None, kpath[-1]):
                raise ConversionError(f"{where}: {'/'.join(opath)} holds variable {v.full_name!r}, but the "
                                      f"config puts layer {kpath[-1]!r} there; the config does not describe "
                                      "the model that wrote this checkpoint")
        k.weights, k.weight_names = tensors, [v.key for v in variables]
        used.update(k.weight_names)
    return _leftovers(bundle, used, graph.prefix, graph.children[0])


def klayers_by_order(bundle: Bundle, graph: ObjectGraph) -> tuple[list[KLayer], dict[str, int]]:
    """``(klayers, ignored)`` of a checkpoint without config: the model's ``layer_with_weights-0``,
    ``-1``, ... in order, each with ``inbound=None`` (Keras' by-order rule, as for a weights-only
    ``.h5``), named by its variables (``predictions/kernel`` -> ``predictions``), its class
    inferred from their names as for a legacy weights-only file."""
    _refuse_modelless(graph)
    klayers, used, seen = [], set(), {}
    root = graph.children[graph.root]
    while f"{WEIGHTED}{len(klayers)}" in root:
        what = f"{WEIGHTED}{len(klayers)}"
        node = root[what]
        if node in seen:  # model.layers lists each layer once, so tf_keras writes each one once
            raise ConversionError(f"{bundle.where}: {what} is the object {seen[node]} is (node {node}); a "
                                  "Keras model references each of its layers once (a corrupt checkpoint)")
        seen[node] = what
        if WEIGHTED in graph.references_layers(node):
            raise ConversionError(f"{bundle.where}: {what} is a nested model, whose wiring a checkpoint does "
                                  "not record; pass the model's config.json (model.to_json()) as --config")
        names, variables, tensors = _layer_arrays(bundle, graph, node, what)
        owners = {_owner(v) for v in variables} - {None}
        klayers.append(KLayer(name=owners.pop() if len(owners) == 1 else what,
                              class_name=infer_class(names, tensors), inbound=None, weights=tensors,
                              weight_names=[v.key for v in variables]))
        used.update(v.key for v in variables)
    if not klayers:
        raise ConversionError(f"{bundle.where}: no {WEIGHTED}0 in the checkpoint's object graph; "
                              "not the save_weights of a Keras model")
    return klayers, _leftovers(bundle, used, graph.prefix, graph.children[0])
