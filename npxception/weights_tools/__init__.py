"""npxception.weights_tools: convert Keras weights to npxception without TensorFlow.

Reads, with h5py, zipfile and json only (no framework import):

* legacy Keras 1/2 and tf_keras HDF5: weights-only (the official ImageNet
  download) and full-model saves (:mod:`npxception.weights_tools.legacy_h5`);
* Keras 3 ``.keras`` archives and ``.weights.h5`` files (:mod:`npxception.weights_tools.keras3`), and sharded
  weights by their ``.weights.json`` index (:mod:`npxception.weights_tools.keras3_shards`);
* tf_keras SavedModel directories (:mod:`npxception.weights_tools.savedmodel`) and TensorFlow
  checkpoints: tf_keras' ``save_weights("ckpt")`` and ``tf.train.Checkpoint(model=...)``
  (:mod:`npxception.weights_tools.tf_checkpoint`), Keras 3's ``tf.train.Checkpoint(model=...)``
  (:mod:`npxception.weights_tools.keras3_checkpoint`), read without TensorFlow
  (:mod:`npxception.weights_tools.tf_bundle`);
* a live ``keras.Model`` / ``tf_keras.Model`` (:func:`from_keras`).

The format is detected from the file's first bytes, never its extension. Every
reader yields a :class:`~npxception.weights_tools.graph.KLayer` list;
:func:`npxception.weights_tools.mapping.to_npxception` matches it to npxception's table.

    from npxception import weights_tools

    weights_tools.convert("fine_tuned.keras", "fine_tuned.npz")
    model = weights_tools.read("xception_weights_tf_dim_ordering_tf_kernels.h5")
    print(weights_tools.inspect("model.h5"))
"""

from __future__ import annotations

import pathlib

from npxception import architecture as arch
from npxception import head_schema
from npxception.dtype_policy import describe as describe_policy
from npxception.input_stage import describe
from npxception.pretrained import official_include_top
from npxception.untrusted import check_output_dir
from npxception.weights import save

from . import operations
from .dtype_policy import sixteen_bit
from .errors import ConversionError
from .formats import detect_format
from .from_keras import from_keras
from .graph import KLayer
from .keras_golden import check_with_keras as keras_check
from .mapping import to_npxception
from .reading import _LEGACY_WEIGHTS_ONLY, Reading, open_layers, read_layers

__all__ = ["from_keras", "convert", "read", "read_layers", "open_layers", "inspect", "ConversionError",
           "KLayer", "Reading", "detect_format"]


def sixteen_bit_policy(src, *, config=None) -> str | None:
    """The 16-bit dtype policy ``src``'s model computes with (``"mixed_float16"``...), or None: what
    :func:`read` refuses without ``dtype_policy="float32"`` (:mod:`npxception.weights_tools.dtype_policy`)."""
    with open_layers(src, config=config) as reading:
        found = sixteen_bit(reading.klayers)
    return found[0] if found else None


def read(src, *, variant=None, config=None, skip_layers=(), pooling=None, input_shape=None,
         classifier_activation=None, dtype_policy=None):
    """An :class:`~npxception.model.XceptionModel` from any supported Keras file.

    A weights-only file (``.weights.h5``, ``save_weights``) records no head
    beyond its arrays: unless it is a bare backbone or the official ImageNet
    layout, give its ``config`` (the model's ``.keras`` or ``config.json``), or
    all of ``pooling`` ("avg"/"max"), ``input_shape`` ((H, W)) and
    ``classifier_activation``; otherwise it is refused, never guessed. Nor does it record
    its wiring: ``variant`` None means ``"keras"`` only where the file says so (its layers
    carry Keras Xception's names, or it is the official file); otherwise give ``variant``
    ("keras" or "article", whose weights have the same shapes and order) or ``config``.
    ``skip_layers`` names layers that are identities at inference but of a
    class the converter does not know (a custom augmentation layer). The official
    ImageNet file with the top is recognised by its pinned MD5, and converts
    with Keras' head (average pooling, softmax, 299x299); any other file in its
    layout, a weights-only ``applications.Xception(classifier_activation=None)`` for one,
    needs these options. A model whose layers computed in 16 bits (Keras' mixed precision,
    ``"mixed_float16"``, ``"mixed_bfloat16"``; ``"float16"``, ``"bfloat16"``) is refused, naming the
    layer, its policy and the difference to expect, unless ``dtype_policy="float32"`` asks for its
    weights computed in float32 (:mod:`npxception.weights_tools.dtype_policy`).
    """
    with open_layers(src, config=config) as reading:
        try:
            model = _model(reading, str(src), variant=variant, skip_layers=skip_layers, pooling=pooling,
                           input_shape=input_shape, classifier_activation=classifier_activation,
                           dtype_policy=dtype_policy)
            if reading.name is not None:  # Keras' model.name (an outer model's, not its nested Xception's)
                model.name = reading.name
            return model
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
        flat = head_schema.flatten_step(model.head)
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
