"""Match a Keras model (as a :class:`~npxception.weights_tools.graph.KLayer` list) to npxception's table.

Two rules, as Keras itself uses them:

* **Wiring known** (live models, ``.keras`` archives, full-model ``.h5``): walk our
  architecture table in order and, for each of our layers, find the one Keras
  layer of the same kind whose inputs are the Keras layers already matched to
  ours. Names are never trusted, so auto-named residual branches (``conv2d_1``,
  ``batch_normalization_1``) and the article's all-auto-named model are matched
  by where they sit in the graph. Every configuration value that changes the
  arithmetic (filters, kernel, strides, padding, bias, epsilon) is checked.
  The variant is detected: the first of ``keras``, ``article`` (then the other
  combinations of the four differences) whose graph fits.
* **Wiring unknown** (weights-only ``.h5``, such as the official download):
  Keras' ``load_weights`` rule, by order of the layers that carry weights,
  checking every shape. This is only unambiguous for ``variant="keras"``, whose
  weight order Keras defines; article-variant files need their config.

Layers that are identities at inference (Dropout, augmentation) are routed
around; preprocessing between the input and the backbone becomes the model's
input stage (:mod:`npxception.weights_tools.preprocessing`); any other layer is refused by
name, with the way out (``--skip-layer`` only for classes not known to compute
something: :mod:`npxception.weights_tools.keras_layers`). A weights-only file's head is taken
from the file only when the file determines it (a bare backbone, by documented
policy and with a notice; Keras' official ImageNet file, by its MD5), else from
the user's ``head_spec``, else refused: never guessed.

Explicit list of transforms: none. Keras' kernel layouts are npxception's
layouts ((KH, KW, C_in, C_out), depthwise (KH, KW, C_in, M), dense (C_in, units)),
so every array is copied as it is; channels_first files too, whose kernels Keras
stores in the same layouts (:mod:`npxception.weights_tools.layout`): only their input
shape and BN axis are read the other way round.

This module is the entry point, :func:`to_npxception`, which picks the rule and
builds the model. The rules live one concept to a file, each importing only the
ones listed after it: :mod:`~npxception.weights_tools.graph_match` (wiring known, the whole
graph), :mod:`~npxception.weights_tools.head` (the classifier head after the backbone),
:mod:`~npxception.weights_tools.stage_chain` (the input and the input-stage chain behind it),
:mod:`~npxception.weights_tools.walk` (the backbone walk), :mod:`~npxception.weights_tools.by_order`
(wiring unknown, with the official-head rule), :mod:`~npxception.weights_tools.layer_checks`
(configuration, BatchNormalization and shape checks), :mod:`~npxception.weights_tools.kinds`
(Keras class -> our kind) and :mod:`~npxception.weights_tools.errors` (:class:`ConversionError`).
"""

from __future__ import annotations

import numpy as np

from npxception.model import XceptionModel
from npxception.params import as_dtype

from .by_order import IMAGENET_CLASSES, _flags, _match_by_order
from .dtype_policy import source_policy as sixteen_bit_source
from .errors import ConversionError
from .graph import KLayer
from .graph_match import _match_graph, match_names
from .kinds import kind_of
from .layer_checks import FEATURE_AXES

# The names importers have always taken from here, now defined in the modules above.
__all__ = ["ConversionError", "FEATURE_AXES", "IMAGENET_CLASSES", "kind_of", "match_names", "to_npxception"]


def to_npxception(klayers: list[KLayer], *, variant=None, source: str, input_shape=None,
                  dtype=None, labels=None, skip_layers=(), head_spec=None, keras_version=None,
                  official_file=None, dtype_policy=None) -> XceptionModel:
    """Convert a KLayer list to an :class:`XceptionModel`; raise :class:`ConversionError` if it is not Xception.

    ``skip_layers``: names of layers to treat as identities (the user's word that
    they are at inference). ``head_spec``: ``{"pooling", "input_shape",
    "classifier_activation"}`` for a weights-only file, which records none of them.
    ``keras_version``: the Keras version the file records (None: none), for the
    preprocessing layers whose inference changed between versions. ``official_file``:
    the file is one of Keras' official ImageNet files (``True``/``False`` for with/without
    the top, checked by the caller against the pinned MD5 of its whole bytes), whose
    head ``keras.applications.Xception`` defines; None for any other file. ``dtype_policy``: ``"float32"`` to
    convert a model that computed in 16 bits (mixed precision) to compute in float32, which it records
    (:mod:`npxception.weights_tools.dtype_policy`); such a model is refused without it.

    The model's ``notices`` lists what was decided by documented policy rather than
    read from the file (a weights-only backbone's pooling and input size), one line each.
    """
    if not klayers:
        raise ConversionError(f"{source}: no layers found")
    source_policy = sixteen_bit_source(klayers, dtype_policy, source)
    wired = all(k.inbound is not None for k in klayers)
    given = {k: v for k, v in (head_spec or {}).items() if v is not None}
    steps, source_shape, notices = [], None, []
    if wired:
        if given:
            verb = "describes" if len(given) == 1 else "describe"
            raise ConversionError(f"{source}: {_flags(given)} {verb} the head of a weights-only file; this "
                                  "file records its own head and input size")
        params, v, head, input_shape, source_shape, names, steps, data_format = _match_graph(
            klayers, variant, source, skip_layers, input_shape, keras_version)
    else:
        if skip_layers:
            raise ConversionError(f"{source}: --skip-layer needs a file that records its layers (a weights-only "
                                  "file is matched by weight order; pass --config)")
        params, v, head, names, input_shape, notices = _match_by_order(klayers, variant, source, given,
                                                                       official_file, keras_version)
        data_format = None  # no config: the weights' layout is the same in both formats (layout.py)
    if input_shape is None:
        input_shape = (None, None, 3)  # a weights-only file matched by order: an RGB backbone (by_order.py)
    elif input_shape[0] is None:
        input_shape = (None, None, input_shape[2])  # the file allows any size (>= 7x7), as the Keras model does
    dtypes = {a.dtype for a in params.values()}
    for a in params.values():
        if a.dtype.kind != "f":
            raise ConversionError(f"{source}: weights must be floating point, found {a.dtype}")
    target = as_dtype(dtype) if dtype is not None else np.dtype(dtype_policy) if source_policy else (
        np.dtype("float64") if np.dtype("float64") in dtypes else np.dtype("float32"))
    # The arrays are read here, after every shape was checked; asarray: no copy
    # when the dtype already fits (a budget-sized file must not need twice the memory).
    params = {k: np.asarray(a, dtype=target) for k, a in params.items()}
    for key, a in params.items():
        if not np.isfinite(a).all():
            raise ConversionError(f"{source}: weight {key} contains NaN or Inf")
    try:
        model = XceptionModel(params, variant=v, head=head, input_shape=input_shape,
                              labels=labels, source=source, input_stage=steps, source_input_shape=source_shape,
                              source_data_format=data_format, source_dtype_policy=source_policy)
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"{source}: {exc}") from None
    # {our layer name: the source's layer name}: how compare() finds Keras' auto-named layers.
    model.source_layer_names = names
    model.notices = notices
    if source_policy:
        model.source = f"{source} (its Keras model computed in {source_policy}; converted to compute in {target.name})"
    return model
