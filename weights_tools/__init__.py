"""weights_tools: convert Keras weights to npxception without TensorFlow.

Reads, with h5py, zipfile and json only (no framework import):

* legacy Keras 1/2 and tf_keras HDF5: weights-only (the official ImageNet
  download) and full-model saves (:mod:`weights_tools.legacy_h5`);
* Keras 3 ``.keras`` archives and ``.weights.h5`` files (:mod:`weights_tools.keras3`);
* tf_keras SavedModel directories (:mod:`weights_tools.savedmodel`) and TensorFlow
  checkpoints from ``save_weights("ckpt")`` (:mod:`weights_tools.tf_checkpoint`),
  read without TensorFlow (:mod:`weights_tools.tf_bundle`);
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
from dataclasses import dataclass, field

import numpy as np

from npxception import architecture as arch
from npxception.dtype_policy import describe as describe_policy
from npxception.input_stage import describe
from npxception.pretrained import official_include_top
from npxception.untrusted import check_output_dir
from npxception.weights import save

from . import keras3, legacy_h5, operations, savedmodel, tf_checkpoint
from .dtype_policy import sixteen_bit
from .errors import ConversionError
from .formats import _open_checked, detect_format, resolve_source
from .from_keras import from_keras
from .graph import KLayer
from .hdf5 import GuardedH5
from .keras3 import ZIP_MAGIC
from .keras_config import flatten_config
from .keras_golden import check_with_keras as keras_check
from .mapping import to_npxception
from .tf_bundle import Bundle

__all__ = ["from_keras", "convert", "read", "read_layers", "open_layers", "inspect", "ConversionError",
           "KLayer", "Reading", "detect_format"]


def _config_from(config, where):
    """A model config (dict) from a dict, a config.json path or a .keras archive path."""
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


_LEGACY_WEIGHTS_ONLY = "legacy Keras HDF5 weights-only file"


@dataclass
class Reading:
    """What a Keras file holds, before it is matched to Xception."""

    klayers: list[KLayer]  # in the model's layer order, nested models flattened
    input_shape: tuple | None  # (H, W, C) from the config, None when not recorded
    kind: str  # the format, for messages and inspect
    ignored: dict[str, int] = field(default_factory=dict)  # training state left out: {"optimizer state": 10}
    keras_version: str | None = None  # the version of Keras that wrote it, where the file records one

    @property
    def wired(self) -> bool:
        """True when the file records the model's wiring (a config), so nothing about it is guessed."""
        return all(k.inbound is not None for k in self.klayers)


def _recorded_version(config) -> str | None:
    """The ``keras_version`` a model config records at its top level (``to_json()`` and a SavedModel's
    root metadata write it), else None."""
    version = config.get("keras_version") if isinstance(config, dict) else None
    return version if isinstance(version, str) else None


def _refuse_given_config(config, where, kind):
    """A config given for a file that records its own is refused, never silently preferred or ignored."""
    if config is not None:
        raise ConversionError(f"{where}: {kind} records its own architecture; a given config is for weights-only "
                              "files (.weights.h5, save_weights). Convert the file without --config")


@contextlib.contextmanager
def open_layers(src, *, config=None):
    """Open any supported file as a :class:`Reading`.

    ``config`` (a dict, a ``config.json`` or a ``.keras`` file) supplies the
    wiring of a Keras-3 ``.weights.h5`` file or a TensorFlow checkpoint, which record none.

    Within the block the file stays open and each KLayer's ``weights`` are
    :class:`~weights_tools.hdf5.StoredArray`: shape and dtype known, data read
    on first use, once, against the file's read budget. Converters check
    shapes before touching the data.
    """
    where = str(src)
    fmt, src = resolve_source(src)  # a checkpoint directory: the prefix its checkpoint file names
    config = _config_from(config, where)
    if fmt == "savedmodel":
        with savedmodel.open_savedmodel(src) as (cfg, object_paths, bundle, graph):
            _refuse_given_config(config, where, "a SavedModel")
            klayers, paths, input_shape = flatten_config(cfg, source=where)
            ignored = tf_checkpoint.fill_weights(klayers, paths, object_paths, bundle, graph)
            yield Reading(klayers, input_shape, "tf_keras SavedModel directory", ignored,
                          _recorded_version(cfg))
        return
    if fmt == "tf_checkpoint":
        with Bundle(src) as bundle:
            graph = tf_checkpoint.find_model(tf_checkpoint.read_object_graph(bundle))
            writer = f"tf.train.Checkpoint, its {graph.prefix[:-1]}" if graph.prefix else "save_weights"
            if config is None:  # Keras' by-order rule, as for a weights-only .h5
                klayers, ignored = tf_checkpoint.klayers_by_order(bundle, graph)
                yield Reading(klayers, None, f"TensorFlow checkpoint ({writer}, no config)", ignored)
                return
            klayers, paths, input_shape = flatten_config(config, source=where)
            object_paths = tf_checkpoint.object_paths_from_config(config, where)
            ignored = tf_checkpoint.fill_weights(klayers, paths, object_paths, bundle, graph)
            yield Reading(klayers, input_shape, f"TensorFlow checkpoint ({writer}, with a given config)",
                          ignored, _recorded_version(config))
        return
    if fmt in ("zip", "keras_dir"):
        opened = keras3.open_directory(src, where) if fmt == "keras_dir" else _opened_archive(src, where)
        with opened as (cfg, h5, version):
            kind = "Keras 3 .keras archive" + (" (unzipped: model.save(dir, zipped=False))" if fmt == "keras_dir"
                                                else "")
            _refuse_given_config(config, where, kind)
            klayers, paths, input_shape = flatten_config(cfg, source=where)
            ignored = keras3.fill_weights(klayers, paths, cfg, h5)
            yield Reading(klayers, input_shape, kind, ignored, version)
        return
    with GuardedH5(src, where) as h5:
        names = h5.keys(h5.file)
        is_legacy = "model_weights" in names or h5.attr_strings(h5.file, "layer_names") is not None
        if is_legacy:
            klayers, input_shape, wired = legacy_h5.read_legacy_h5(h5, config)
            kind = ("legacy Keras HDF5 weights-only file (with a given config)" if config is not None
                    else "legacy Keras HDF5 full-model save" if wired else _LEGACY_WEIGHTS_ONLY)
            yield Reading(klayers, input_shape, kind, legacy_h5.training_state(h5), legacy_h5.h5_version(h5))
            return
        if "layers" in names:
            if config is not None:
                klayers, paths, input_shape = flatten_config(config, source=where)
                ignored = keras3.fill_weights(klayers, paths, config, h5)
                yield Reading(klayers, input_shape, "Keras 3 .weights.h5 file (with a given config)", ignored,
                              _recorded_version(config))
                return
            klayers, ignored = keras3.klayers_without_config(h5)
            yield Reading(klayers, None, "Keras 3 .weights.h5 file (no config)", ignored)
            return
    raise ConversionError(f"{where}: an HDF5 file without Keras weights (no layer_names, model_weights "
                          "or layers group)")


@contextlib.contextmanager
def _opened_archive(src, where):
    cfg, h5, version = keras3.open_archive(src, where)
    with h5:
        yield cfg, h5, version


def sixteen_bit_policy(src, *, config=None) -> str | None:
    """The 16-bit dtype policy ``src``'s model computes with (``"mixed_float16"``...), or None: what
    :func:`read` refuses without ``dtype_policy="float32"`` (:mod:`weights_tools.dtype_policy`)."""
    with open_layers(src, config=config) as reading:
        found = sixteen_bit(reading.klayers)
    return found[0] if found else None


def read_layers(src, *, config=None) -> Reading:
    """Like :func:`open_layers`, with every array read (each once, within the read budget)."""
    with open_layers(src, config=config) as reading:
        for k in reading.klayers:
            k.weights = [np.asarray(w) for w in k.weights]
    return reading


def read(src, *, variant=None, config=None, skip_layers=(), pooling=None, input_shape=None,
         classifier_activation=None, dtype_policy=None):
    """An :class:`~npxception.model.XceptionModel` from any supported Keras file.

    A weights-only file (``.weights.h5``, ``save_weights``) records no head
    beyond its arrays: unless it is a bare backbone or the official ImageNet
    layout, give its ``config`` (the model's ``.keras`` or ``config.json``), or
    all of ``pooling`` ("avg"/"max"), ``input_shape`` ((H, W)) and
    ``classifier_activation``; otherwise it is refused, never guessed.
    ``skip_layers`` names layers that are identities at inference but of a
    class the converter does not know (a custom augmentation layer). The official
    ImageNet file with the top is recognised by its pinned MD5, and converts
    with Keras' head (average pooling, softmax, 299x299); any other file in its
    layout, a weights-only ``applications.Xception(classifier_activation=None)`` for one,
    needs these options. A model whose layers computed in 16 bits (Keras' mixed precision,
    ``"mixed_float16"``, ``"mixed_bfloat16"``; ``"float16"``, ``"bfloat16"``) is refused, naming the
    layer, its policy and the difference to expect, unless ``dtype_policy="float32"`` asks for its
    weights computed in float32 (:mod:`weights_tools.dtype_policy`).
    """
    with open_layers(src, config=config) as reading:
        try:
            return _model(reading, str(src), variant=variant, skip_layers=skip_layers, pooling=pooling,
                          input_shape=input_shape, classifier_activation=classifier_activation,
                          dtype_policy=dtype_policy)
        except ConversionError as exc:
            if "no config" in reading.kind and "--config" not in str(exc):
                raise ConversionError(f"{exc} (a {reading.kind.split(' (')[0]} records no architecture; pass "
                                      "the model's .keras archive or config.json as config=/--config)") from None
            raise


def _model(reading: Reading, source: str, *, variant=None, skip_layers=(), pooling=None, input_shape=None,
           classifier_activation=None, dtype_policy=None):
    in_shape = tuple(reading.input_shape) if reading.input_shape and len(reading.input_shape) == 3 else None
    head_spec = {"pooling": pooling, "input_shape": input_shape, "classifier_activation": classifier_activation}
    # Keras' official files are legacy weights-only HDF5; their head is defined by which file they are
    official = official_include_top(source) if reading.kind == _LEGACY_WEIGHTS_ONLY else None
    return to_npxception(reading.klayers, variant=variant, source=source, input_shape=in_shape,
                         skip_layers=tuple(skip_layers), head_spec=head_spec, keras_version=reading.keras_version,
                         official_file=official, dtype_policy=dtype_policy)


def convert(src, dst, *, variant=None, config=None, check_with_keras=False, on_notice=None,
            **options) -> pathlib.Path:
    """Convert ``src`` to an npxception ``.npz`` at ``dst``, written atomically.

    ``options`` are :func:`read`'s. The file carries a golden test case: our
    float64 oracle's output (``impl="reference"``) or, with ``check_with_keras``
    (TensorFlow needed), Keras' own output on ``src``, after checking that we
    agree with it. A failed conversion leaves no output file (nothing is written
    until the model has been fully read and checked, and the write itself is atomic).
    ``on_notice`` is called with each line of the model's ``notices`` (what a
    weights-only file left to documented policy); the command line prints them on stderr.
    """
    dst = pathlib.Path(dst)
    if dst.suffix != ".npz":
        raise ConversionError(f"{dst}: the output must end in .npz")
    check_output_dir(dst, inputs=[src, config])  # before the reading, which can take a while
    model = read(src, variant=variant, config=config, **options)
    for line in model.notices if on_notice else ():
        on_notice(line)
    if check_with_keras:
        model.golden = keras_check(src, model, config=config)
    return save(model, dst)


def inspect(src, *, config=None, **options) -> str:
    """A text report: the format, every layer with its weight shapes, the training state
    ignored, what the file does and does not determine, and the detected architecture."""
    with open_layers(src, config=config) as reading:
        return _report(src, reading, options)


def _report(src, reading: Reading, options) -> str:
    input_shape = reading.input_shape
    lines = [f"{src}: {reading.kind}", f"input shape: {input_shape}" if input_shape else "input shape: not recorded",
             f"{len(reading.klayers)} layers ({sum(1 for k in reading.klayers if k.weights)} with weights):"]
    for k in reading.klayers:
        shapes = ", ".join(str(tuple(w.shape)) for w in k.weights)
        if k.function is not None:  # an operation node: no weights, its call instead
            shapes = operations.call_text(k)
        lines.append(f"  {k.name:<48} {k.class_name:<24} {shapes}")
    for what, count in reading.ignored.items():
        lines.append(f"{what}: {count} arrays, ignored (training state; Keras ignores it with compile=False)")
    if reading.wired:
        lines.append("the file determines: the layers, their wiring and configs, and every weight")
    else:
        lines.append("the file determines: the weights, in layer order; it does not record the layers' wiring, "
                     "the head's pooling and activations, or the input size")
    sixteen = sixteen_bit(reading.klayers)
    if sixteen:
        lines.append(f"dtype policy: {describe_policy(sixteen[0])}, from {sixteen[1]}")
    try:
        model = _model(reading, str(src), **options)
        total, trainable = model.count_params(), model.count_trainable_params()
        if model.source_data_format:
            lines.append(f"data_format: {model.source_data_format}"
                         + (f" (the source takes NCHW (N, {model.channels}, H, W); the converted model takes NHWC)"
                            if model.source_data_format == "channels_first" else ""))
        lines.append(f"detected architecture: Xception variant={model.variant_name}, "
                     f"input {model.input_shape}"
                     + (f" (the source takes {model.source_input_shape})"
                        if model.source_input_shape != model.input_shape else "")
                     + f", head {[h['kind'] for h in model.head]}, "
                     f"classes {model.classes}, dtype {model.dtype}, {total:,} parameters "
                     f"({trainable:,} trainable)")
        flat = arch.flatten_step(model.head)
        if flat:
            sh, sw = model.source_input_shape[:2]
            takes = (f"the model takes {sh}x{sw} images only" if None not in (sh, sw)
                     else f"its input stage brings every image to {model.input_shape[0]}x{model.input_shape[1]}")
            lines.append(f"head: {flat['name']} (Flatten) of the {arch.shape_text(flat['map_shape'])} feature map, "
                         f"features in ({', '.join(flat['order'].upper())}) order; {takes}")
        lines.extend(model.notices)
        for step in model.input_stage:
            lines.append(f"input stage: {describe(step)}")
        if model.input_stage:
            lines.append("input: raw pixels in [0, 255] (the model preprocesses in-graph)" if model.takes_pixels
                         else "input: preprocess_input(pixels)")
    except ConversionError as exc:
        lines.append(f"detected architecture: not convertible: {exc}")
    return "\n".join(lines)
