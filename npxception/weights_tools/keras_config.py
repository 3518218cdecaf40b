"""Read a Keras model configuration as plain JSON data into a :class:`KLayer` list.

The configuration is never turned into objects and Keras is never imported:
deserialising a config can run code (CVE-2025-1550, CVE-2025-9906), and reading
it as data is all the converter needs. The layers' wiring is recovered from the
three serialisations Keras has used:

* Keras 3 Functional: ``"inbound_nodes": [{"args": [<tensor> | [<tensor>, ...]],
  "kwargs": {...}}]`` where a tensor is ``{"class_name": "__keras_tensor__",
  "config": {"keras_history": [layer_name, node_index, tensor_index]}}``;
* Keras 2 / tf_keras (and Keras 1) Functional: ``"inbound_nodes": [[[name, node,
  index, kwargs], ...]]``;
* Sequential: no wiring at all; each layer reads the previous one. Its first
  layer is an ``InputLayer`` or carries ``batch_input_shape`` / ``batch_shape``
  (Keras 1 and early Keras 2 serialise a Sequential's config as a bare list).

Nested models (a Functional or Sequential used as a layer) are flattened: the
nested model's ``InputLayer`` reads from whatever fed the nested model, and the
nested model's consumers read from its output layer. Inner names are kept as
they are unless they clash with another layer's name; then every layer of that
nested model is renamed ``"<nested model>/<layer>"``.

Node indices are not used to pick between several calls of one layer: Xception
calls each layer once, and tf_keras numbers a nested model's nodes globally (the
head of a tf_keras classifier reads ``["xception", 1, 0]`` although only one
node is serialised), so a layer called more than once is refused instead.
"""

from __future__ import annotations

import re
from collections import Counter

from npxception.config import CONFIG
from npxception.untrusted import loads_json, short_repr

from .errors import ConversionError
from .dtype_policy import check_known
from .graph import Argument, KLayer
from .training_mode import refuse_training_mode, training_flag

# class names that hold a whole model as a layer
MODEL_CLASSES = ("Functional", "Model", "Sequential")
# tf_keras' layers that call a TensorFlow function on a symbolic tensor (`x / 127.5`, `x[..., 0]`)
OPERATION_LAYERS = ("TFOpLambda", "SlicingOpLambda")


def read_keras_config(config, *, source: str = "model config") -> tuple[list[KLayer], tuple | None]:
    """``(klayers, input_shape)`` from a Keras model config (a dict, or its JSON text).

    ``config`` may be what ``model.get_config()`` returns (``{"name", "layers",
    ...}``), or the ``{"class_name": ..., "config": {...}}`` wrapper stored in
    ``.keras`` archives' ``config.json`` and legacy HDF5's ``model_config``.

    The KLayers come in the model's layer order, nested models flattened, with
    ``weights`` empty and ``inbound`` set (names of the feeding layers).
    ``input_shape`` is the model input's ``(H, W, C)`` from its InputLayer's
    ``batch_shape`` / ``batch_input_shape`` (``H``/``W`` may be None), or None
    when the config does not record it.
    """
    klayers, _paths, input_shape = flatten_config(config, source=source)
    return klayers, input_shape


def flatten_config(config, *, source: str = "model config", keras3_legacy_h5: bool = False):
    """Like :func:`read_keras_config`, plus ``{flat name: (nested model, ..., layer name)}``.

    The path names each layer inside the nested models it sits in, which is how
    :mod:`npxception.weights_tools.from_keras` and the archive readers find its weights.
    ``keras3_legacy_h5``: the config of a legacy ``.h5`` that Keras 3 wrote, whose
    operations (``x / 127.5``) lost their module there and are refused by name.
    """
    if isinstance(config, (str, bytes)):
        try:
            config = loads_json(config)
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
            raise ConversionError(f"{source}: the model config is not valid JSON ({exc})") from None
    class_name, cfg = _unwrap(config, source)
    reader = _Reader(source, keras3_legacy_h5)
    out, _ = reader.model(class_name, cfg, outer_inbound=None, prefix="", path=())
    if not reader.klayers:
        raise ConversionError(f"{source}: the model config holds no layers")
    refuse_training_mode(reader.training_mode, source)
    return reader.klayers, reader.paths, reader.input_shape


def _unwrap(config, source):
    """``(class_name, inner config)`` for a model config with or without its wrapper."""
    if not isinstance(config, (dict, list)):
        raise ConversionError(f"{source}: a model config must be a JSON object, found {type(config).__name__}")
    if isinstance(config, list):  # Keras 1 Sequential: the config is the list of layers
        return "Sequential", {"layers": config}
    if "layers" in config:  # model.get_config(): no wrapper
        kind = "Sequential" if not any("inbound_nodes" in (l or {}) for l in config["layers"]
                                       if isinstance(l, dict)) and "input_layers" not in config \
            else "Functional"
        return kind, config
    inner = config.get("config")
    if isinstance(inner, list):
        return "Sequential", {"layers": inner}
    if isinstance(inner, dict) and "layers" in inner:
        return str(config.get("class_name", "Functional")), inner
    name = subclass_name(config)
    if name is not None:
        raise ConversionError(f"{source}: {subclassed_model(name)}")
    raise ConversionError(f"{source}: not a Keras model config (no 'layers' list)")


SUBCLASS_FIX = ("rebuild the same network as a Functional model (keras.Model(inputs, outputs) with the same "
                "layers), copy the weights into it (set_weights(subclassed.get_weights()), or layer by "
                "layer), save it (model.save('x.keras')), and convert that")


def subclass_name(config) -> str | None:
    """The class a model config names when it is no Functional or Sequential model and lists no layers:
    a subclassed ``keras.Model`` (``registered_name`` "package>Class" in Keras 3, ``class_name`` in
    tf_keras); None for anything else. Reads two strings, bounded."""
    if not isinstance(config, dict) or "layers" in config:
        return None
    inner = config.get("config")
    if isinstance(inner, list) or (isinstance(inner, dict) and "layers" in inner):
        return None
    cls = config.get("class_name")
    if not isinstance(cls, str) or not cls or cls in MODEL_CLASSES:
        return None
    registered = config.get("registered_name")
    return (registered if isinstance(registered, str) and registered else cls)[:200]


def subclassed_model(name: str, described: bool = False) -> str:
    """What to say of a subclassed model ``name`` (its class; or, ``described``, words that identify it):
    its layers run in its call(), code no file holds."""
    return (f"a subclassed Keras model ({name if described else repr(name)}): it lists no layers, and its "
            "call(), which says how its "
            f"layers run, is Python code the file does not hold, so its network is not determined; {SUBCLASS_FIX}")


def _layer_name(entry: dict) -> str:
    name = entry.get("name") or (entry.get("config") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("a layer without a name")
    return name


# tf_keras: a TFOpLambda's first argument that is a constant, not a tensor, is written
# [_CONSTANT_VALUE, -1, value, kwargs] (tf_keras/src/engine/node.py, Node.serialize).
_CONSTANT = "_CONSTANT_VALUE"
# Keras 3 writes an operation node (keras.ops on a symbolic tensor: `x / 127.5`) with its class'
# own module, "keras.src.ops.numpy"; a layer with its public one, "keras.layers".
_OPERATION_MODULE = re.compile(r"keras(\.src)?\.ops(\.|$)")


def is_operation(entry) -> bool:
    """True for a Keras 3 operation node: not a layer, so it has no weights and no place in ``model.layers``."""
    module = entry.get("module") if isinstance(entry, dict) else None
    return isinstance(module, str) and _OPERATION_MODULE.match(module) is not None


def _moduleless_operation(entry, node) -> bool:
    """A Keras 3 operation as Keras 3's legacy ``.h5`` save writes it (every entry without its module): a
    Keras 3 node (``{"args": ...}``) and no ``trainable`` in its config, which every Keras 3 layer writes."""
    config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    return (isinstance(node, dict) and entry.get("module") is None and "trainable" not in config
            and entry.get("class_name") not in ("InputLayer", *MODEL_CLASSES))


def _is_ref(value) -> bool:
    """tf_keras' rule for a serialised tensor (``convert_inner_node_data``): ``[layer name, node index,
    tensor index(, kwargs)]``."""
    return isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)


def _keras2_items(node, source, layer):
    """A Keras 1/2 node's top-level items: ``[[name, node, tensor, kwargs], ...]``, or a TFOpLambda's first
    argument kept as it was called (one ``[name, node, tensor, kwargs]``, or a structure of them)."""
    if _is_ref(node):
        return [node]
    if not isinstance(node, list) or not all(isinstance(item, list) for item in node):
        raise ConversionError(f"{source}: layer {layer}: unreadable inbound node {short_repr(node)}")
    return node


def _history_names(node, source, layer):
    """The names of the layers feeding one inbound node, in argument order."""
    names: list[str] = []

    def walk(value, keras2=False):
        # An explicit stack, depth-first in argument order: linear, and no
        # recursion however deeply the JSON nests.
        stack = [value]
        while stack:
            value = stack.pop()
            if isinstance(value, dict):
                if value.get("class_name") == "__keras_tensor__":
                    config = value.get("config")
                    hist = config.get("keras_history") if isinstance(config, dict) else None
                    if not (isinstance(hist, list) and hist and isinstance(hist[0], str)):
                        raise ConversionError(f"{source}: layer {layer}: a tensor without keras_history")
                    names.append(hist[0])
                else:
                    stack.extend(reversed(list(value.values())))
            elif keras2 and _is_ref(value):
                if not (value[0] == _CONSTANT and value[1] == -1):
                    names.append(value[0])
                if len(value) == 4:
                    stack.append(value[3])  # kwargs: a TFOpLambda's other operands (`y`) may be tensors
            elif isinstance(value, list):
                stack.extend(reversed(value))

    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        walk(node.get("args", []))
        walk(node.get("kwargs", {}))
    else:  # Keras 1/2: [[name, node_index, tensor_index(, kwargs)], ...]
        walk(_keras2_items(node, source, layer), keras2=True)
    return names


def _keras3_argument(name, value, flat) -> Argument:
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        config = value.get("config") or {}
        return Argument(name, tensor=flat[config["keras_history"][0]], dtype=config.get("dtype"))
    if isinstance(value, dict) and value.get("class_name") in ("__tensor__", "__numpy__"):
        config = value.get("config") if isinstance(value.get("config"), dict) else {}
        return Argument(name, value=config.get("value"), dtype=config.get("dtype"))
    return Argument(name, value=value)


def _operation(entry, node, flat) -> tuple[str, list[Argument]]:
    """``(function, arguments)`` of an operation node: a tf_keras TFOpLambda or a Keras 3 operation.

    Tensors are named by the flat name of the layer they come from. tf_keras records the
    first argument in the node and the others as its kwargs; Keras 3 records ``args`` and ``kwargs``.
    """
    if isinstance(node, dict):  # Keras 3
        args = node.get("args") if isinstance(node.get("args"), list) else []
        kwargs = node.get("kwargs") if isinstance(node.get("kwargs"), dict) else {}
        return (f"{entry.get('module')}.{entry.get('class_name')}",
                [_keras3_argument(f"#{i}", v, flat) for i, v in enumerate(args)]
                + [_keras3_argument(str(k), v, flat) for k, v in kwargs.items()])
    function = (entry.get("config") or {}).get("function") if isinstance(entry.get("config"), dict) else None
    # a Keras 3 operation whose node is a list, not {"args", "kwargs"}: named as Keras 3 names it
    name = f"tf.{function}" if isinstance(function, str) else f"{entry.get('module')}.{entry.get('class_name')}"
    out, kwargs = [], {}
    if _is_ref(node):
        if node[0] == _CONSTANT and node[1] == -1:
            out.append(Argument("#0", value=node[2]))
        else:
            out.append(Argument("#0", tensor=flat[node[0]]))
        kwargs = node[3] if len(node) == 4 and isinstance(node[3], dict) else {}
    elif node:
        out.append(Argument("#0", value=node))  # a structure of tensors (tf.concat([a, b]))
    for k, v in kwargs.items():
        out.append(Argument(str(k), tensor=flat[v[0]]) if _is_ref(v) else Argument(str(k), value=v))
    return name, out


def _endpoint_names(value) -> list[str]:
    """``input_layers`` / ``output_layers``: ``[name, 0, 0]`` or ``[[name, 0, 0], ...]``."""
    out, stack = [], [value]
    while stack:  # an explicit stack: no recursion however deeply the JSON nests
        value = stack.pop()
        if isinstance(value, list) and value and isinstance(value[0], str):
            out.append(value[0])
        elif isinstance(value, dict):  # Keras 3 may key them by input name
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list):
            stack.extend(reversed(value))
    return out


class _Reader:
    def __init__(self, source, keras3_legacy_h5=False):
        self.source = source
        self.keras3_legacy_h5 = keras3_legacy_h5
        self.klayers: list[KLayer] = []
        self.paths: dict[str, tuple] = {}
        self.input_shape = None
        # The layer names of every model being walked (the nested models around
        # the current one): a multiset updated on entry and exit, so the clash
        # test costs the nested model's size, not the whole config's.
        self.scope: Counter = Counter()
        self.layer_count = 0
        # The layer whose node says training=True and is in force where the walk is (a nested model's
        # flag reaches its layers), or None; and {that layer: [the layers it runs in training mode]}.
        self.training_origin: str | None = None
        self.training_mode: dict[str, list[KLayer]] = {}

    def emit(self, name, class_name, config, inbound, path, function=None, arguments=()):
        if name in self.paths:
            raise ConversionError(f"{self.source}: two layers are named {name!r}")
        klayer = KLayer(name=name, class_name=class_name, config=config, inbound=inbound, function=function,
                        arguments=list(arguments))
        # 16-bit policies (mixed precision) are read here and decided at conversion (weights_tools.dtype_policy)
        check_known(klayer, self.source)
        self.klayers.append(klayer)
        self.paths[name] = path
        if self.training_origin is not None:
            self.training_mode.setdefault(self.training_origin, []).append(self.klayers[-1])

    def record_input_shape(self, config):
        shape = (config or {}).get("batch_shape") or (config or {}).get("batch_input_shape")
        if self.input_shape is None and isinstance(shape, list) and len(shape) >= 2:
            self.input_shape = tuple(shape[1:])

    def model(self, class_name, cfg, *, outer_inbound, prefix, path):
        """Emit one (possibly nested) model's layers; return (output flat name, its names)."""
        if len(path) > CONFIG.max_model_nesting:
            raise ConversionError(f"{self.source}: models nest more than {CONFIG.max_model_nesting} levels "
                                  f"deep (at {'/'.join(path[:3])}/...); real Xception models nest a few")
        layers = cfg.get("layers")
        if not isinstance(layers, list):
            raise ConversionError(f"{self.source}: model {cfg.get('name')!r} has no 'layers' list")
        self.layer_count += len(layers)
        if self.layer_count > CONFIG.max_config_layers:
            raise ConversionError(f"{self.source}: the config holds more than {CONFIG.max_config_layers} "
                                  "layers; an Xception model has about 140")
        try:
            names = [_layer_name(e) for e in layers]
        except (ValueError, AttributeError):
            raise ConversionError(f"{self.source}: a layer of model {cfg.get('name')!r} has no name") from None
        self.scope.update(names)
        try:
            if class_name == "Sequential" or not any("inbound_nodes" in e for e in layers):
                return self.sequential(cfg, layers, names, outer_inbound, prefix, path)
            return self.functional(cfg, layers, names, outer_inbound, prefix, path)
        finally:
            self.scope.subtract(names)

    def nested(self, entry, name, inbound, prefix, path):
        """Flatten a model used as a layer; return its output layer's flat name."""
        inner_cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        inner_layers = inner_cfg.get("layers")
        inner_names = {_layer_name(e) for e in inner_layers if isinstance(e, dict)} \
            if isinstance(inner_layers, list) else set()
        # Keep inner names when they are unique; otherwise prefix the whole nested model.
        clash = any(self.scope[n] > 0 or n in self.paths for n in inner_names)
        inner_prefix = f"{prefix}{name}/" if clash else prefix
        out, _ = self.model(entry.get("class_name"), inner_cfg, outer_inbound=inbound,
                            prefix=inner_prefix, path=path + (name,))
        return out

    def functional(self, cfg, layers, names, outer_inbound, prefix, path):
        flat: dict[str, str] = {}  # this model's layer name -> flat name of its output
        for entry, name in zip(layers, names):
            nodes = entry.get("inbound_nodes") or []
            if len(nodes) > 1:
                raise ConversionError(f"{self.source}: layer {name} is called {len(nodes)} times (a shared "
                                      "layer); Xception calls every layer once")
            srcs = _history_names(nodes[0], self.source, name) if nodes else []
            try:
                inbound = [flat[s] for s in srcs]
            except KeyError as exc:
                raise ConversionError(f"{self.source}: layer {name} reads from {exc.args[0]!r}, "
                                      "which is not an earlier layer") from None
            class_name = entry.get("class_name")
            config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
            flag = training_flag(nodes[0], class_name) if nodes else None
            outer_origin = self.training_origin
            if flag is not None:  # the node's own flag wins over the one it inherits
                self.training_origin = prefix + name if flag else None
            try:
                if class_name in MODEL_CLASSES or "layers" in config:
                    flat[name] = self.nested(entry, name, inbound, prefix, path)
                    continue
                flat[name] = self.functional_layer(entry, name, class_name, config, nodes, inbound, flat,
                                                   outer_inbound, prefix, path)
            finally:
                self.training_origin = outer_origin
        outputs = _endpoint_names(cfg.get("output_layers"))
        if len(outputs) != 1:
            shown = ", ".join(outputs[:8]) + (", ..." if len(outputs) > 8 else "")
            first = outputs[0] if outputs else "name"
            raise ConversionError(
                f"{self.source}: model {cfg.get('name')!r} has {len(outputs)} outputs ({shown}); npxception "
                "converts a model with one output. Save a model of the output you want and convert that: "
                f"keras.Model(model.inputs, model.get_layer({first!r}).output).save('one_output.keras')")
        if outputs[0] not in flat:
            raise ConversionError(f"{self.source}: model {cfg.get('name')!r} names output "
                                  f"{outputs[0]!r}, which is not one of its layers")
        return flat[outputs[0]], names

    def functional_layer(self, entry, name, class_name, config, nodes, inbound, flat, outer_inbound, prefix, path):
        """Emit one layer (or operation) of a Functional model; return its flat name."""
        if class_name == "InputLayer":
            if outer_inbound is not None:
                inbound = list(outer_inbound)
            else:
                self.record_input_shape(config)
        function, arguments = None, ()
        if self.keras3_legacy_h5 and nodes and _moduleless_operation(entry, nodes[0]):
            raise ConversionError(
                f"{self.source}: operation {name} ({class_name}): Keras 3 wrote it into a legacy .h5 without "
                f"its module, and Keras 3 cannot load that file itself (\"Unknown layer: '{class_name}'\"), "
                "so no Keras can check what it computes. Save the model as .keras "
                "(model.save('model.keras')) and convert that")
        if nodes and (is_operation(entry) or class_name in OPERATION_LAYERS):
            function, arguments = _operation(entry, nodes[0], flat)
        self.emit(prefix + name, str(class_name), config, inbound, path + (name,), function, arguments)
        return prefix + name

    def sequential(self, cfg, layers, names, outer_inbound, prefix, path):
        previous = None
        for i, (entry, name) in enumerate(zip(layers, names)):
            class_name = entry.get("class_name")
            config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
            if i == 0 and class_name != "InputLayer":
                # The implicit input: its shape is on the first layer or the model.
                shape = (config.get("batch_shape") or config.get("batch_input_shape")
                         or cfg.get("build_input_shape"))
                input_name = prefix + f"{cfg.get('name') or 'sequential'}_input"
                input_cfg = {"name": input_name, "batch_shape": shape}
                if outer_inbound is None:
                    self.record_input_shape(input_cfg)
                self.emit(input_name, "InputLayer", input_cfg,
                          list(outer_inbound) if outer_inbound is not None else [],
                          path + ("<input>",))
                previous = input_name
            inbound = [previous] if previous is not None else (
                list(outer_inbound) if outer_inbound is not None else [])
            if class_name in MODEL_CLASSES or "layers" in config:
                previous = self.nested(entry, name, inbound, prefix, path)
                continue
            if class_name == "InputLayer" and outer_inbound is None:
                self.record_input_shape(config)
            self.emit(prefix + name, str(class_name), config, inbound, path + (name,))
            previous = prefix + name
        if previous is None:
            raise ConversionError(f"{self.source}: Sequential model {cfg.get('name')!r} has no layers")
        return previous, names
