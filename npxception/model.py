"""The Xception model: build it with Keras' arguments, or load it from a weight file.

``Xception(...)`` mirrors ``keras.applications.Xception``'s signature; the
object it returns is a plain container of NumPy weights plus the layer table
from :mod:`npxception.architecture`. Its forward pass is the whole network: a
loop over the table, one op per layer, every activation nameable.

    model = npxception.Xception(weights="imagenet")
    probs = model(npxception.preprocess_input(batch))            # (N, 1000)
    probs, acts = model.forward(x, capture=["block4_add"])        # cross-checking
    oracle = model.astype("float64")                              # same weights, float64

This module holds the two ways to get a model, :func:`Xception` and
:func:`load`. The model itself is split by concept, and its names are
re-exported here (``from npxception.model import XceptionModel`` works):

* :mod:`npxception.network`: :class:`XceptionModel`: the weights, what they
  describe, ``model(x)``, ``forward``, ``run_layer``, ``astype``, ``save``;
* :mod:`npxception.model_checks`: what a model is built from, checked (input shape, labels...);
* :mod:`npxception.overflow`: :class:`ActivationOverflow`, a finite input with a non-finite output;
* :mod:`npxception.forward`: the plain forward pass, one op per layer of the table;
* :mod:`npxception.params`: the weights in memory, checked against the table, or seeded random;
* :mod:`npxception.summary`: the Keras-like table ``model.summary()`` prints.
"""

from __future__ import annotations

import os

import numpy as np

from . import architecture as arch
from . import head_schema
from . import golden as gold
from . import golden_file
from . import input_stage as stage
from .config import CONFIG
from .model_checks import check_input_shape
from .network import XceptionModel
from .params import as_dtype, random_params
from .pretrained import imagenet_source, imagenet_weights
from .untrusted import short_repr
from .weights import read as read_weights
from .weights import split as split_golden
from .weights import name_from_manifest, source_names_from_manifest, variant_from_manifest

__all__ = ["Xception", "XceptionModel", "load", "random_params"]


class _Default:
    """An argument's default, told apart from the same value passed explicitly.

    A weight file carries its own head: ``Xception(weights=file)`` keeps the file's classes and
    activation, while an explicit ``classes=1000`` or ``classifier_activation="softmax"`` is a request
    the file must meet (Keras builds ``Dense(classes, activation=classifier_activation)`` whatever the
    weights were trained with). The repr is the value's, so ``help(Xception)`` shows Keras' defaults.
    """

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)


def _given(value):
    """The value of an argument, whether defaulted or passed."""
    return value.value if isinstance(value, _Default) else value


def Xception(weights=None, *, variant="keras", include_top=True, pooling=None, classes=_Default(1000),
             classifier_activation=_Default("softmax"), input_shape=None, dtype="float32", seed=0, verify=True,
             name="xception", input_tensor=None):
    """Build Xception with ``keras.applications.Xception``'s arguments.

    weights: None (the default: seeded random weights and BN statistics),
      "imagenet" (the official Keras weights, downloaded once, 88 MB, and
      converted into the cache), or a path to an npxception ``.npz`` weight file.
      Keras defaults to "imagenet"; npxception deliberately does not, so that
      building a model never starts a download behind the caller's back (a
      test, an offline machine, a CI job). ``model.source`` and the repr say
      where the weights came from: ``random(seed=0)``, ``imagenet (PATH)`` (or
      ``unverified (PATH: ...)`` for an ``.npz`` placed in the cache by hand:
      npxception.pretrained.imagenet_source) or the file.
    variant: "keras" (default; what real weights fit) or "article".
    include_top / pooling / classes: as in Keras; with a weight file, ``classes`` defaults to the file's.
    classifier_activation: as in Keras, by name: one of ``head_schema.ACTIVATIONS`` (None or "linear"
      for logits, "softmax", "sigmoid", ...), not a callable; only read with the top, as Keras does.
      "hard_sigmoid" is refused: Keras 3's is relu6(x + 3) / 6, tf_keras' clip(0.2 x + 0.5, 0, 1);
      say which with "hard_sigmoid_keras3" or "hard_sigmoid_keras2".
      With a weight file the default keeps the file's head; an explicit one replaces the file's
      classifier activation (None: its logits, even behind a separate Activation/Softmax layer), as
      Keras' Dense(classes, activation=...) would. ImageNet weights take only "softmax" or None, Keras' rule.
    input_shape: (H, W, C) with H, W >= 71, Keras' constructor rule (it raises "Input size must
      be at least 71x71"); None for H and W builds a model for any size, which computes
      images down to 7x7 as Keras' predict does (``model.min_input_size``), without the top
      only, as Keras requires. With the top and ImageNet weights it must be (299, 299, 3); a weight
      file whose top pools (GlobalAveragePooling2D, as Keras' Xception builds it) is built at any size
      asked, as Keras builds it; a Flatten head or a Resizing/CenterCrop input stage keeps the file's.
      C, the channels, is 3 (RGB) by default; without ImageNet weights any C, as Keras builds
      it (imagenet_utils.obtain_input_shape; Keras warns "This model usually expects 1 or 3
      input channels" for others, such as RGBA's 4, and builds them): 1 for grayscale, 4 for
      RGBA or RGB+NIR. ImageNet weights take 3 only (Keras: "The input must have 3 channels").
      ``predict`` feeds photos to a 1-channel model as ``load_img(color_mode="grayscale")`` and
      to a 4-channel one as ``color_mode="rgba"`` (npxception.images.color_mode).
    dtype: "float32" or "float64".
    verify: run the weight file's golden test case (once per file per process);
      False skips it for speed-critical callers.
    name: the model's name, ``model.name``, as Keras' ``name="xception"``.
    input_tensor: only None. Keras builds the model on a framework's symbolic tensor, the output of
      another model's layer; npxception has no graph to connect to, so any value is refused, a NumPy
      array included: its batch is data to run, not the model's input (whose shape alone would be
      taken, silently dropping the values). Build with ``input_shape=x.shape[1:]`` and run ``model(x)``
      or ``model.predict(x)``; to chain another model, call it on its output.
    """
    if input_tensor is not None:
        found = (f"an array of shape {tuple(input_tensor.shape)}" if isinstance(input_tensor, np.ndarray)
                 else f"a {type(input_tensor).__name__}")
        raise ValueError(f"input_tensor: npxception builds no graph of symbolic tensors (it runs no framework), "
                         f"found {found}; give input_shape=(H, W, C) instead and call model(x) or "
                         "model.predict(x) on your NumPy batch (for an array x: input_shape=x.shape[1:])")
    dt = as_dtype(dtype)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, found {short_repr(name)}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling: expected None, 'avg' or 'max', found {pooling!r}")
    if include_top:  # Keras reads classifier_activation only with the top
        _check_activation(classifier_activation, weights)
    if include_top and (not isinstance(_given(classes), (int, np.integer)) or isinstance(_given(classes), bool)
                        or _given(classes) < 1):  # without the top Keras 3 ignores classes, whatever it is
        raise ValueError(f"classes: expected a positive int, found {_given(classes)!r}")
    if input_shape is not None:
        input_shape = _constructor_shape(input_shape, variant)
        if isinstance(weights, str) and weights == "imagenet" and input_shape[2] != 3 and not include_top:
            raise ValueError(f"input_shape: ImageNet weights take 3 channels (Keras: 'The input must have 3 "
                             f"channels'), found {input_shape}")
        if include_top and None in input_shape[:2]:
            # Keras' obtain_input_shape(require_flatten=include_top): a top wants a static size
            raise ValueError(f"input_shape: with include_top=True Keras requires a static input_shape ('If "
                             f"`include_top` is True, you should specify a static `input_shape`'), found "
                             f"{input_shape}; give (H, W, {input_shape[2]}), or include_top=False for a model "
                             "of any size")

    if weights is None:
        v = arch.resolve_variant(variant)
        head = head_schema.keras_head(include_top, pooling, _given(classes), _given(classifier_activation))
        if input_shape is None:
            input_shape = CONFIG.default_input_shape if include_top else (None, None, 3)
        params = random_params(arch.backbone(v), head, dt, seed, channels=input_shape[2])
        model = XceptionModel(params, variant=v, head=head, input_shape=input_shape, source=f"random(seed={seed})")
        model.name = name
        return model

    if isinstance(weights, str) and weights == "imagenet":
        if include_top and _given(classes) != 1000:
            raise ValueError(f"classes: ImageNet weights with the top have 1000 classes, found {classes}")
        if include_top and input_shape not in (None, CONFIG.default_input_shape):
            raise ValueError(f"input_shape: ImageNet weights with the top take "
                             f"{CONFIG.default_input_shape}, found {input_shape}")
        if arch.resolve_variant(variant) != arch.VARIANTS["keras"]:
            raise ValueError(f"variant: the ImageNet weights fit variant='keras', found {variant!r}")
        weights = imagenet_weights(include_top=include_top)
        source = imagenet_source(include_top)  # "imagenet (PATH)" only for our conversion of the official file
    elif isinstance(weights, (str, os.PathLike)):
        source = None  # the file's own: what it was converted from, else its path
    else:
        raise TypeError(f"weights: expected None, 'imagenet' or a path, found {type(weights).__name__}")

    model = load(weights, verify=verify)
    model.source = source or model.source
    model = _adapt(model, where=str(weights), variant=variant, include_top=include_top, pooling=pooling,
                   classes=classes, classifier_activation=classifier_activation, input_shape=input_shape, dtype=dt)
    model.name = name
    return model


def _check_activation(value, weights) -> None:
    """``classifier_activation`` as Xception() takes it: a name our head runs (``head_schema.ACTIVATIONS``)."""
    if isinstance(value, _Default):
        return
    names = ", ".join(repr(a) for a in head_schema.ACTIVATIONS)
    if callable(value):
        name = getattr(value, "__name__", type(value).__name__)
        hint = f"; pass {name!r}" if name in head_schema.ACTIVATIONS else ""
        raise ValueError(f"classifier_activation: expected a name, one of {names}, found the callable "
                         f"{short_repr(name)} (npxception runs its own activations, chosen by name){hint}")
    if isinstance(value, str) and value in head_schema.VERSIONED_ACTIVATIONS:
        raise ValueError(f"classifier_activation: {head_schema.versioned_activation_hint(value)} (npxception runs no "
                         "Keras, so the name alone does not say which)")
    if not (value is None or isinstance(value, str)) or value not in head_schema.ACTIVATIONS:
        raise ValueError(f"classifier_activation: expected one of {names}, found {short_repr(value)}")
    if isinstance(weights, str) and weights == "imagenet" and value not in (None, "linear", "softmax"):
        raise ValueError(f"classifier_activation: ImageNet weights with the top take 'softmax' or None "
                         f"(Keras: 'Only `None` and `softmax` activations are allowed ... when using "
                         f"pretrained weights'), found {value!r}")


def _with_activation(head, wanted, where) -> list[dict]:
    """The file's head with its classifier activation replaced by ``wanted``, as Keras' Xception builds
    ``Dense(classes, activation=wanted)`` whatever the weights were trained with.

    The classifier activation is the head's last activation, past any linear Activation layers: a
    Dense's own (``Dense(5, activation="softmax")``) or a layer of its own (``Dense(5)`` then
    ``Activation("softmax")`` or ``Softmax()``, which convert to the same kind). Its input is the
    logits, so None (or "linear") makes that activation the identity, keeping every layer name. A head
    that ends in another layer (a BatchNormalization after the last Dense) already gives logits: None
    keeps it, another activation is refused, naming the head, rather than invented as a new layer.
    """
    head = [dict(h) for h in head]
    wanted = None if wanted == "linear" else wanted
    i = len(head) - 1
    while head[i]["kind"] == "activation" and head[i]["activation"] in (None, "linear"):
        i -= 1  # an identity: the layer before it decides
    if head[i]["kind"] in ("dense", "activation"):
        head[i]["activation"] = wanted
    elif wanted is not None:
        layers = " -> ".join(f"{h['name']} ({h['kind']}"
                             + (f", {h['activation']})" if h.get("activation") else ")") for h in head)
        raise ValueError(f"{where}: classifier_activation={wanted!r}: the file's head ends in logits from "
                         f"{head[i]['name']} ({head[i]['kind']}), not in a Dense or an Activation layer "
                         f"whose activation could be replaced: {layers}; use classifier_activation=None "
                         "(its logits) or leave it out (the file's head)")
    return head


def _constructor_shape(input_shape, variant) -> tuple:
    """``input_shape`` under keras.applications.Xception's rule: each fixed side at least
    ``CONFIG.constructor_min_size`` (71), as Keras 3 and tf_keras require of it, though a model built
    for any size computes smaller images (:func:`npxception.architecture.min_input_size`: 7x7 and up).
    Another table than Keras' (the article's) has no such constructor: its own minimum holds."""
    shape = check_input_shape(input_shape, 1)
    v = arch.resolve_variant(variant)
    low = arch.min_input_size(arch.backbone(v))
    if v != arch.VARIANTS["keras"]:
        return check_input_shape(shape, low)  # names the table's minimum
    m = CONFIG.constructor_min_size
    if any(d is not None and d < m for d in shape[:2]):
        raise ValueError(f"input_shape: keras.applications.Xception requires at least {m}x{m} (Keras: 'Input "
                         f"size must be at least {m}x{m}'), found {shape}; input_shape=(None, None, {shape[2]}) builds "
                         f"a model for any size, which takes images down to {low}x{low} as Keras' predict does")
    return shape


def _adapt(model, *, where, variant, include_top, pooling, classes, classifier_activation, input_shape, dtype):
    """Fit a loaded model to the requested Keras arguments, or explain why it cannot."""
    wanted = arch.resolve_variant(variant)
    if model.variant != wanted:
        raise ValueError(f"variant: the weight file holds variant {model.variant_name!r}, "
                         f"requested {arch.variant_name(wanted)!r}")
    if dtype != model.dtype:
        model = model.astype(dtype)
    if input_shape is not None and input_shape[2] != model.channels:
        raise ValueError(f"input_shape: the weight file's model takes {model.channels}-channel images "
                         f"(input_shape {model.input_shape}), requested {input_shape}")
    if include_top:
        if not model.include_top:
            raise ValueError("include_top: the weight file has no classifier (it was saved without the top)")
        if not isinstance(classes, _Default) and classes != model.classes:
            raise ValueError(f"classes: the weight file's classifier has {model.classes} classes, "
                             f"requested {classes}")
        resized = input_shape is not None and input_shape != model.input_shape
        if resized and (head_schema.flatten_step(model.head) or stage.has_geometry(model.input_stage)):
            # a Flatten's Dense has a row per feature of the map it was built for; a Resizing/CenterCrop stage
            # fixes the backbone's size. Keras' Xception(weights=file, input_shape=...) builds only a GAP head.
            fixed = (f"its Flatten head {head_schema.flatten_step(model.head)['name']} is built for that size"
                     if head_schema.flatten_step(model.head) else "its input stage brings every image to that size")
            raise ValueError(f"input_shape: the weight file was converted for {model.input_shape} and {fixed}, "
                             f"requested {input_shape}")
        head = model.head if isinstance(classifier_activation, _Default) else \
            _with_activation(model.head, classifier_activation, where)
        if head != model.head or resized:
            # A pooled head's weights fit any size: Keras' Xception(weights=file, input_shape=...) loads them at
            # the size asked (its 299x299 rule is the ImageNet top's only, imagenet_utils.obtain_input_shape).
            shape = input_shape if resized else model.input_shape
            adapted = XceptionModel(model._params, variant=model.variant, head=head, input_shape=shape,
                                    labels=model.labels, source=model.source, input_stage=model.input_stage,
                                    source_input_shape=None if resized else model.source_input_shape,
                                    source_data_format=model.source_data_format,
                                    source_dtype_policy=model.source_dtype_policy)
            adapted.source_layer_names = model.source_layer_names  # same layers, same names
            model = adapted
        return model
    # Without the top: drop the classifier, keep the backbone, apply `pooling`.
    head = head_schema.keras_head(False, pooling)
    backbone_keys = arch.param_shapes(model.layers, [], model.channels)
    params = model._params.subset(backbone_keys)  # shared: kernels the plan packed stay packed once
    source_shape = None
    if input_shape is None and stage.has_geometry(model.input_stage):
        # a Resizing/CenterCrop stage fixes the backbone's size; the source's is kept
        input_shape, source_shape = model.input_shape, model.source_input_shape
    elif input_shape is None:
        input_shape = (None, None, model.channels)
    adapted = XceptionModel(params, variant=model.variant, head=head, input_shape=input_shape,
                            source=model.source, input_stage=model.input_stage, source_input_shape=source_shape,
                            source_data_format=model.source_data_format,
                            source_dtype_policy=model.source_dtype_policy)
    adapted.source_layer_names = {k: v for k, v in model.source_layer_names.items() if k in adapted.layer_names}
    if head == model.head and adapted.input_shape == model.input_shape:
        adapted.golden = model.golden  # the same network: a no-top file loaded without the top
    return adapted


def load(path, *, verify=True) -> XceptionModel:
    """Load an npxception ``.npz`` weight file into an :class:`XceptionModel`.

    :func:`npxception.weights.read` checks the file against its format and
    returns the arrays and the manifest; the model is built here and checks
    every weight against the table.
    Raises ValueError naming the layer, the expected and the found shape for a
    missing, unexpected, misshapen or non-finite weight. With ``verify`` (the
    default) the file's golden test case runs once per file per process and a
    mismatch raises :class:`~npxception.golden.GoldenMismatch` (a ValueError);
    a file without one loads with a one-time :class:`~npxception.golden.NoGoldenWarning`.
    """
    model = _from_file(path)
    where = str(path)
    identity = gold.file_identity(path)
    if model.golden is None:
        gold.notify_missing(where, identity)
    elif verify and not gold.already_checked(identity, model.dtype.name):
        gold.check_on_load(model, model.golden, where)
        gold.mark_checked(identity, model.dtype.name)
    return model


def _from_file(path):
    """The model and its golden (unchecked) from a weight file."""
    manifest, arrays = read_weights(path)
    arrays, golden_arrays = split_golden(arrays)
    where = str(path)
    golden = golden_file.from_file(manifest.get("golden"), golden_arrays, where)
    for key in manifest.get("reserved") or {}:  # not weights (read() checked them)
        arrays.pop(key, None)
    try:
        variant = variant_from_manifest(manifest.get("variant", "keras"), where)
        head = manifest.get("head", [])
        input_shape = manifest.get("input_shape", [None, None, 3])
        if not (isinstance(input_shape, list) and len(input_shape) == 3):
            raise ValueError(f"input_shape: expected [H, W, C], found {short_repr(input_shape)}")
        labels = manifest.get("labels")
        # XceptionModel refuses what cannot be valid: input_shape outside [min_input_size, max]
        # or channels outside [1, max_input_channels], labels that are not exactly one string per class, a
        # negative or non-finite BN variance, any non-finite weight, a bad input stage.
        model = XceptionModel(arrays, variant=variant, head=head, input_shape=input_shape,
                              labels=labels, source=manifest.get("source") or where,
                              input_stage=manifest.get("input_stage", []),
                              # absent before format 4: the backbone's size (input_stage.py)
                              source_input_shape=manifest.get("source_input_shape"),
                              # absent before it existed: not recorded (weights.py, FORMAT_VERSION)
                              source_data_format=manifest.get("source_data_format"),
                              # absent before it existed: the source computed in the model's dtype
                              source_dtype_policy=manifest.get("source_dtype_policy"))
        # absent before it existed: the source's names are unknown (capture takes ours only)
        model.source_layer_names = source_names_from_manifest(manifest.get("source_layer_names"),
                                                              model.layer_names, "manifest")
        model.name = name_from_manifest(manifest.get("name"))
        feed = manifest.get("feed", "pixels" if model.takes_pixels else "preprocess_input")
        if feed != ("pixels" if model.takes_pixels else "preprocess_input"):
            raise ValueError(f"manifest: feed {feed!r} contradicts its input_stage")
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if not msg.startswith(where):
            msg = f"{where}: {msg}"
        raise type(exc)(msg) from None
    if golden is not None and not golden.fits(model):
        raise ValueError(f"{where}: the golden case does not fit the model the manifest describes "
                         f"(layers {golden.layers}, input {golden.pixels.shape[1:3]}); re-convert the file "
                         "or replace the golden with `npxception verify --add`")
    model.golden = golden
    return model
