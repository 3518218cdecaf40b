"""weights_tools: convert Keras weights to npxception without TensorFlow.

Reads, with h5py, zipfile and json only (no framework import):

* legacy Keras 1/2 and tf_keras HDF5: weights-only (the official ImageNet
  download) and full-model saves (:mod:`weights_tools.legacy_h5`);
* Keras 3 ``.keras`` archives and ``.weights.h5`` files (:mod:`weights_tools.keras3`);
* a live ``keras.Model`` / ``tf_keras.Model`` (:func:`from_keras`).

The format is detected from the file's first bytes, never its extension. Every
reader yields a :class:`~weights_tools.graph.KLayer` list;
:func:`weights_tools.mapping.to_npxception` matches it to npxception's table.

    weights_tools.convert("fine_tuned.keras", "fine_tuned.npz")
    model = weights_tools.read("xception_weights_tf_dim_ordering_tf_kernels.h5")
    print(weights_tools.inspect("model.h5"))
"""

from __future__ import annotations

import contextlib
import pathlib

from .from_keras import from_keras
from .graph import KLayer
from .mapping import ConversionError

__all__ = ["from_keras", "convert", "read", "read_layers", "open_layers", "inspect", "ConversionError",
           "KLayer"]

from .formats import _open_checked, detect_format  # noqa: E402,F401  (detect_format is public)
from .keras3 import ZIP_MAGIC  # noqa: E402


def _config_from(config, where):
    """A model config (dict) from a dict, a config.json path or a .keras archive path."""
    from . import keras3

    if config is None or isinstance(config, dict):
        return config
    cpath = pathlib.Path(config)
    with _open_checked(cpath) as f:
        head = f.read(len(ZIP_MAGIC))
        if head == ZIP_MAGIC:
            return keras3.read_archive_config(cpath, str(cpath))
        data = head + f.read(keras3.MAX_JSON_BYTES + 1 - len(head))  # read no more than the cap
    if len(data) > keras3.MAX_JSON_BYTES:
        raise ConversionError(f"{cpath}: a config over {keras3.MAX_JSON_BYTES} bytes")
    return keras3._json(data, "the config", str(cpath))


@contextlib.contextmanager
def open_layers(src, *, config=None):
    """Open any supported file as ``(klayers, input_shape, kind)``; kind describes the format.

    ``config`` (a dict, a ``config.json`` or a ``.keras`` file) supplies the
    wiring of a Keras-3 ``.weights.h5`` file, which records none.

    Within the block the file stays open and each KLayer's ``weights`` are
    :class:`~weights_tools.hdf5.StoredArray`: shape and dtype known, data read
    on first use, once, against the file's read budget. Converters check
    shapes before touching the data.
    """
    from . import keras3, legacy_h5
    from .hdf5 import GuardedH5
    from .keras_config import flatten_config

    where = str(src)
    fmt = detect_format(src)
    config = _config_from(config, where)
    if fmt == "zip":
        cfg, h5 = keras3.open_archive(src, where)
        with h5:
            klayers, paths, input_shape = flatten_config(cfg, source=where)
            keras3.fill_weights(klayers, paths, cfg, h5)
            yield klayers, input_shape, "Keras 3 .keras archive"
        return
    with GuardedH5(src, where) as h5:
        names = h5.keys(h5.file)
        is_legacy = "model_weights" in names or h5.attr_strings(h5.file, "layer_names") is not None
        if is_legacy:
            klayers, input_shape, wired = legacy_h5.read_legacy_h5(h5)
            kind = "legacy Keras HDF5 " + ("full-model save" if wired else "weights-only file")
            yield klayers, input_shape, kind
            return
        if "layers" in names:
            if config is not None:
                klayers, paths, input_shape = flatten_config(config, source=where)
                keras3.fill_weights(klayers, paths, config, h5)
                yield klayers, input_shape, "Keras 3 .weights.h5 file (with a given config)"
                return
            yield keras3.klayers_without_config(h5), None, "Keras 3 .weights.h5 file (no config)"
            return
    raise ConversionError(f"{where}: an HDF5 file without Keras weights (no layer_names, model_weights "
                          "or layers group)")


def read_layers(src, *, config=None) -> tuple[list[KLayer], tuple | None, str]:
    """Like :func:`open_layers`, with every array read (each once, within the read budget)."""
    import numpy as np

    with open_layers(src, config=config) as (klayers, input_shape, kind):
        for k in klayers:
            k.weights = [np.asarray(w) for w in k.weights]
    return klayers, input_shape, kind


def read(src, *, variant=None, config=None):
    """An :class:`~npxception.model.XceptionModel` from any supported Keras file."""
    from .mapping import to_npxception

    kind = ""
    try:
        with open_layers(src, config=config) as (klayers, input_shape, kind):
            in_shape = tuple(input_shape) if input_shape and len(input_shape) == 3 else None
            return to_npxception(klayers, variant=variant, source=str(src), input_shape=in_shape)
    except ConversionError as exc:
        if "Keras 3 .weights.h5" in kind and "no config" in kind:
            raise ConversionError(f"{exc} (a .weights.h5 file records no architecture; pass the model's "
                                  ".keras archive or config.json as config=/--config)") from None
        raise


def convert(src, dst, *, variant=None, config=None, check_with_keras=False) -> pathlib.Path:
    """Convert ``src`` to an npxception ``.npz`` at ``dst``, written atomically.

    The file carries a golden test case: our float64 oracle's output
    (``impl="reference"``) or, with ``check_with_keras`` (TensorFlow needed),
    Keras' own output on ``src``, after checking that we agree with it.
    A failed conversion leaves no output file (nothing is written until the
    model has been fully read and checked, and the write itself is atomic).
    """
    from npxception.weights import save

    dst = pathlib.Path(dst)
    if dst.suffix != ".npz":
        raise ConversionError(f"{dst}: the output must end in .npz")
    model = read(src, variant=variant, config=config)
    if check_with_keras:
        from .keras_golden import check_with_keras as keras_check

        model.golden = keras_check(src, model, config=config)
    return save(model, dst)


def inspect(src, *, config=None) -> str:
    """A text report: the format, every layer with its weight shapes, and the detected architecture."""
    with open_layers(src, config=config) as (klayers, input_shape, kind):
        return _report(src, klayers, input_shape, kind)


def _report(src, klayers, input_shape, kind) -> str:
    lines = [f"{src}: {kind}", f"input shape: {input_shape}" if input_shape else "input shape: not recorded",
             f"{len(klayers)} layers ({sum(1 for k in klayers if k.weights)} with weights):"]
    for k in klayers:
        shapes = ", ".join(str(tuple(w.shape)) for w in k.weights)
        lines.append(f"  {k.name:<48} {k.class_name:<24} {shapes}")
    try:
        from .mapping import to_npxception

        in_shape = tuple(input_shape) if input_shape and len(input_shape) == 3 else None
        model = to_npxception(klayers, source=str(src), input_shape=in_shape)
        total, trainable = model.count_params()
        lines.append(f"detected architecture: Xception variant={model.variant_name}, "
                     f"input {model.input_shape}, head {[h['kind'] for h in model.head]}, "
                     f"classes {model.classes}, dtype {model.dtype}, {total:,} parameters "
                     f"({trainable:,} trainable)")
    except ConversionError as exc:
        lines.append(f"detected architecture: not convertible: {exc}")
    return "\n".join(lines)
