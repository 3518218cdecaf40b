"""Vet a Keras file before a framework opens it (``compare --against``, ``convert --check-with-keras``).

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
``convert`` refuses it: a Keras layer class of :mod:`weights_tools.mapping`'s
table, or an operation node calling the elementwise arithmetic of
:mod:`weights_tools.operations`. Nothing here imports a framework.
"""

from __future__ import annotations

import pathlib

from . import _config_from, open_layers, operations
from .formats import _open_checked
from .graph import KLayer
from .keras3 import ZIP_MAGIC
from .keras_config import flatten_config
from .mapping import ConversionError, kind_of


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


def check_layers(klayers, source: str) -> None:
    """Refuse, naming the first, a layer Keras must not be asked to rebuild."""
    for k in klayers:
        why = _refusal(k)
        if why:
            raise ConversionError(f"{source}: refused before Keras opens it: {why}")


def vet(src, *, config=None) -> bool:
    """Read ``src`` (and ``config``, a ``.keras`` archive or ``config.json``) as the converter reads them,
    headers only, and refuse any layer Keras must not rebuild; True when ``src`` records its own config.

    Raises :class:`~weights_tools.mapping.ConversionError` naming the file and the layer.
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

