"""Layers a model's config calls with ``training=True``: refused, because the file does not settle what they compute.

``Dropout(0.5)(x, training=True)`` (Monte-Carlo dropout), ``base(x, training=True)``
and ``BatchNormalization()(x, training=True)`` are recorded in the layer's inbound
node: tf_keras as ``[["dense", 0, 0, {"training": true}]]``, Keras 3 as
``{"args": [...], "kwargs": {"training": true}}``. What the saved model then computes
depends on who runs it:

* tf_keras honours the flag in ``predict`` too, before and after ``load_model``
  (``Functional._run_internal_graph`` calls the layer with the node's kwargs, which
  win over the call context): batch statistics in BatchNormalization, random drops
  in Dropout, random augmentation;
* Keras 3's ``predict`` passes ``training=False``, which overrides the node's flag
  (``Functional._run_through_graph``), but its eager ``model(x)`` keeps it. Keras 3 also
  records the ``training=True`` default of its augmentation layers in every node: that one
  is not the user's flag, and is read as no flag (:data:`_KERAS3_DEFAULT_TRUE`).

npxception computes inference only, so such a file is refused by name, with the remedy.
The flag is inherited: a nested model called with ``training=True`` calls its layers
with it, unless a layer's own node says ``training=False``.

A layer whose training mode provably computes what its inference mode does is
accepted: the layers whose ``call`` ignores ``training`` (convolutions, Dense,
pooling, activations, Add, Rescaling, Normalization, Resizing, CenterCrop, operation
nodes), and a BatchNormalization with ``trainable: false``: tf_keras (TF2 behaviour,
``BatchNormalization._get_training_value``) and Keras 3 (``call``: ``training and
self.trainable``) both normalise it with its moving statistics. Both are tested
against the framework's ``predict`` in tests/test_training_flag.py.
"""

from __future__ import annotations

from collections import Counter

from .errors import ConversionError
from .graph import KLayer
from .kinds import kind_of

# Our kinds whose Keras call does not read `training`. Everything else that is called in training
# mode is refused: Dropout and augmentation (the "identity" kind), RandomCrop (it crops at random
# in training), BatchNormalization with trainable weights, and classes we do not know.
_IGNORES_TRAINING = frozenset({
    "input", "conv", "sepconv", "maxpool", "add", "global_avg_pool", "global_max_pool", "flatten", "dense", "relu",
    "softmax", "activation", "op", "rescaling", "normalization", "resizing", "center_crop"})


# Keras 3's image augmentation layers default to `call(data, training=True)` (BaseImagePreprocessingLayer), and
# Keras 3 records that default in every node (`RandomFlip()(x)` writes "training": true; tf_keras writes no
# kwargs): the flag is there whether the user wrote it or not, and means what an unflagged tf_keras
# augmentation layer means (predict: the identity; eager model(x): augment). Not a flag the user set.
# The same holds for every BaseImagePreprocessingLayer (the newer augmentation layers, RandomColorJitter ... CutMix)
# and for keras.layers.Pipeline, whose `call(inputs, training=True)` passes the flag on to each of its layers.
_KERAS3_DEFAULT_TRUE = frozenset({
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast", "RandomBrightness",
    "RandomCrop", "RandomColorJitter", "RandomGrayscale", "RandomErasing", "RandomGaussianBlur", "RandomPerspective",
    "RandomShear", "RandomHue", "RandomSaturation", "RandomSharpness", "RandomInvert", "RandomPosterization",
    "RandomColorDegeneration", "RandomElasticTransform", "RandAugment", "AugMix", "Solarization", "MixUp", "CutMix",
    "Pipeline"})


def training_flag(node, class_name=None) -> bool | None:
    """The ``training`` argument an inbound node records (True/False), or None when it records none
    (or records only Keras 3's default for an augmentation layer)."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        kwargs = node.get("kwargs")
        value = kwargs.get("training") if isinstance(kwargs, dict) else None
        if value is True and class_name in _KERAS3_DEFAULT_TRUE:
            return None
    else:  # Keras 1/2: [[name, node, tensor, kwargs], ...] (or one such item); kwargs on every item
        items = [node] if isinstance(node, list) and node and isinstance(node[0], str) else node
        value = None
        for item in items if isinstance(items, list) else ():
            if isinstance(item, list) and len(item) == 4 and isinstance(item[3], dict) and "training" in item[3]:
                value = item[3]["training"]
                break
    return value if isinstance(value, bool) else None


def _differs_in_training(k: KLayer) -> bool:
    kind = kind_of(k)
    if kind == "bn":
        return (k.config or {}).get("trainable", True) is not False
    return kind not in _IGNORES_TRAINING


def refuse_training_mode(called: dict[str, list[KLayer]], source: str) -> None:
    """Refuse when a layer computes differently in the training mode a node puts it in.

    ``called``: ``{layer whose node says training=True: [the layers it runs in training mode]}``
    (itself, or a nested model's layers).
    """
    offenders = {}
    for origin, layers in called.items():
        hit = [k for k in layers if _differs_in_training(k)]
        if hit:
            offenders[origin] = hit
    if not offenders:
        return
    parts = []
    for origin, hit in offenders.items():
        if len(hit) == 1 and hit[0].name == origin:
            parts.append(f"{origin} ({hit[0].class_name})")
        else:
            counts = ", ".join(f"{n} {cls}" for cls, n in Counter(k.class_name for k in hit).items())
            parts.append(f"{origin} (a nested model: {counts} run in training mode, e.g. {hit[0].name})")
    raise ConversionError(
        f"{source}: {'; '.join(parts)} {'is' if len(parts) == 1 else 'are'} called with training=True. tf_keras "
        "computes such a layer in training mode in predict too (batch statistics in BatchNormalization, random "
        "drops in Dropout, random augmentation), Keras 3 in model(x) but not in predict, so the file does not "
        "settle what the model computes, and npxception computes inference only. Rebuild the model calling "
        "them without the argument (or with training=False), copy the weights over (new.set_weights("
        "model.get_weights())), save it and convert that file")
