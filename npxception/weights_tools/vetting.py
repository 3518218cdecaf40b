"""Vet a Keras file before a framework opens it (``compare --against``, ``convert --check-with-keras``:
both open it through :func:`open_in_keras`).

Opening a Keras file in Keras rebuilds its layers from the file's config, and
some configs carry code: a ``Lambda`` layer's function is Python bytecode that
tf_keras' legacy loaders (``.h5``, SavedModel) run unless safe mode is on, and
a SavedModel's layers that Keras cannot rebuild from their config are revived
from the TensorFlow graph stored beside them, which can call any TensorFlow op
(``tf.io.write_file``). Keras' safe mode covers the first only, and only where
the caller asks for it.

So a file reaches Keras only after the converter's guarded reading of it (headers
only: links, external and virtual datasets, sizes; docs/security.md) and after
every layer of every config that Keras will rebuild (the file's own, and the one
given with ``config``) is one the converter knows, refused by name otherwise, as
``convert`` refuses it: a Keras layer class of :mod:`npxception.weights_tools.mapping`'s
table, or an operation node calling the elementwise arithmetic of
:mod:`npxception.weights_tools.operations`. Nothing here imports a framework.
"""

from __future__ import annotations

import pathlib

from npxception import keras_side
from npxception.untrusted import short_repr

from . import operations
from .errors import ConversionError
from .formats import _open_checked
from .graph import KLayer
from .keras3 import ZIP_MAGIC
from .keras_config import flatten_config
from .kinds import kind_of
from .reading import _config_from, open_layers


def _refusal(k: KLayer) -> str | None:
    """Why layer ``k`` must not reach Keras, or None."""
    if k.function is not None:
        if operations.function_name(k) in (*operations.BINARY, *operations.CASTS):
            return None
        return (f"operation {k.name} calls {operations.function_name(k)}; the ones npxception reads are "
                f"{operations.SUPPORTED}")
    if kind_of(k) != "unsupported":
        return None
    why = ("its function is code, which opening the file in Keras would run"
           if k.class_name == "Lambda" else "not a layer class npxception converts")
    return (f"unsupported layer {k.name} ({k.class_name}): {why}. npxception opens in Keras only files whose "
            "every layer is one `npxception convert` reads (Keras' convolution, pooling, BatchNormalization, "
            "activation, Dense, Dropout, augmentation and preprocessing layers, and elementwise arithmetic with "
            "a number)")


# The objects Keras rebuilds from inside an allowed layer's config (its initializers,
# regularizers, constraints, dtype policy, activation): Keras' and tf_keras' built-ins only.
# Anything else (a custom or registered class, a function of another module, a
# ``__lambda__``) would reach Keras' deserialisation with only its safe mode in the way.
SAFE_OBJECTS = frozenset({
    # initializers
    "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "TruncatedNormal", "VarianceScaling",
    "GlorotUniform", "GlorotNormal", "HeNormal", "HeUniform", "LecunNormal", "LecunUniform", "Orthogonal",
    "OrthogonalInitializer", "Identity", "IdentityInitializer",
    # regularizers and constraints
    "L1", "L2", "L1L2", "OrthogonalRegularizer", "MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm", "RadialConstraint",
    # dtype policies (Keras 3; tf_keras' mixed precision Policy)
    "DTypePolicy", "FloatDTypePolicy", "Policy",
    # Keras 3's plain-data markers, and a built-in activation function by name
    "__tuple__", "__numpy__", "__keras_tensor__", "function",
})


def _nested_refusal(k: KLayer) -> str | None:
    """Why an object serialised inside layer ``k``'s config must not reach Keras, or None.

    Iterative over the config (already bounded in size and depth by the reader); a nested
    model's ``layers`` are skipped, each being a layer of its own here.
    """
    stack = [("", k.config)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, list):
            stack.extend((path, v) for v in value)
            continue
        if not isinstance(value, dict):
            continue
        cls, module = value.get("class_name"), value.get("module")
        if cls is not None and path:
            registered = value.get("registered_name")
            builtin = cls in SAFE_OBJECTS and (module is None or str(module).split(".")[0] == "keras") \
                and registered in (None, cls)
            if cls == "function":  # Keras 3: {"module": "keras.activations", "config": "relu"}
                builtin = builtin and module is not None and isinstance(value.get("config"), str)
            if not builtin:
                return (f"layer {k.name} ({k.class_name}) holds {path} = {short_repr(cls)}"
                        + (f" from module {short_repr(module)}" if module is not None else "")
                        + (f" (registered as {short_repr(registered)})" if registered not in (None, cls) else "")
                        + "; npxception lets Keras rebuild only its built-in initializers, regularizers, "
                          "constraints, dtype policies and activations")
        stack.extend((key, v) for key, v in value.items() if key != "layers")
    return None


def check_layers(klayers, source: str) -> None:
    """Refuse, naming the first, a layer Keras must not be asked to rebuild, or one holding an object
    (an initializer, a regularizer...) that is not one of Keras' built-ins."""
    for k in klayers:
        why = _refusal(k) or _nested_refusal(k)
        if why:
            raise ConversionError(f"{source}: refused before Keras opens it: {why}")


def vet(src, *, config=None) -> bool:
    """Read ``src`` (and ``config``, a ``.keras`` archive or ``config.json``) as the converter reads them,
    headers only, and refuse any layer Keras must not rebuild; True when ``src`` records its own config.

    Raises :class:`~npxception.weights_tools.mapping.ConversionError` naming the file and the layer.
    """
    where = str(src)
    if config is not None and not isinstance(config, dict):
        with _open_checked(pathlib.Path(config)) as f:
            archive = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
        if archive:  # a .keras archive: Keras opens all of it, its weights included
            with open_layers(config) as reading:
                check_layers(reading.klayers, str(config))
        else:
            klayers, _, _ = flatten_config(_config_from(config, where), source=str(config))
            check_layers(klayers, str(config))
    with open_layers(src, config=config) as reading:
        if reading.wired:
            check_layers(reading.klayers, where)
        return reading.wired



def open_in_keras(src, *, config=None, model=None):
    """The Keras model ``src`` holds, opened by the framework that wrote it (:func:`npxception.keras_side.load`),
    only once :func:`vet` has passed it and ``config``: what ``compare --against`` and
    ``convert --check-with-keras`` both open, every form the converter reads. ``model``: our converted model,
    for a weights-only file without config (see ``keras_side.load``).
    """
    wired = vet(src, config=config)
    if keras_side.saved_by(src)[1] and not wired:
        raise ConversionError(f"{src}: Keras would rebuild it from a model config that the converter's reading "
                              "did not find; refused")
    return keras_side.load(src, config=config, model=model)
