"""The Xception model: the architecture table run op by op, with Keras' arguments.

``Xception(...)`` mirrors ``keras.applications.Xception``'s signature; the
object it returns is a plain container of NumPy weights plus the layer table
from :mod:`npxception.architecture`. The forward pass below is the whole
network: a loop over the table, one op per layer, every activation nameable.

    model = npxception.Xception(weights="imagenet")
    probs = model(npxception.preprocess_input(batch))            # (N, 1000)
    probs, acts = model.forward(x, capture=["block4_add"])        # cross-checking
    oracle = model.astype("float64")                              # same weights, float64
"""

from __future__ import annotations

import difflib
import os
import threading

import numpy as np

from . import architecture as arch
from . import golden as gold
from . import ops
from .config import CONFIG
from .fast import fast_forward
from .head import run_head
from .pretrained import imagenet_weights
from .untrusted import short_repr
from .weights import read as read_weights
from .weights import save as save_weights
from .weights import split as split_golden
from .weights import variant_from_manifest

_DTYPES = (np.dtype("float32"), np.dtype("float64"))
_KERAS_TYPES = {
    "conv": "Conv2D",
    "sepconv": "SeparableConv2D",
    "bn": "BatchNormalization",
    "relu": "Activation",
    "maxpool": "MaxPooling2D",
    "add": "Add",
    "global_avg_pool": "GlobalAveragePooling2D",
    "global_max_pool": "GlobalMaxPooling2D",
    "dense": "Dense",
    "batch_norm": "BatchNormalization",
    "activation": "Activation",
}


def _as_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _DTYPES:
        raise TypeError(f"dtype: expected 'float32' or 'float64', found {dtype!r}")
    return dt


class XceptionModel:
    """An Xception backbone plus a head, holding NumPy weights in Keras layout.

    Build one with :func:`Xception` or :func:`load`, not directly.
    """

    def __init__(self, params, *, variant="keras", head=(), input_shape=(None, None, 3),
                 labels=None, source=None):
        self.variant = arch.resolve_variant(variant)
        self.head = arch.validate_head(list(head))
        self.layers = arch.backbone(self.variant)
        self.input_shape = _check_input_shape(input_shape)
        self.source = source
        self.labels = _check_labels(labels, self.classes)
        expected = arch.param_shapes(self.layers, self.head)
        params = dict(params)
        _check_params(params, expected, where=source or "params")
        self.dtype = next(iter(params.values())).dtype
        for array in params.values():
            array.flags.writeable = False  # weights are shared with prepared fast plans
        self._params = params
        # {our layer name: the source model's layer name}, set by weights_tools
        # converters; compare() uses it to find Keras' auto-named layers.
        self.source_layer_names: dict[str, str] = {}
        # The golden test case a weight file carries (npxception.golden): set by
        # load() and from_keras, computed by save() when absent.
        self.golden = None
        self.golden_factory = None  # a deferred golden (from_keras: Keras runs only if the model is saved)
        self._fast = None  # the BN-folded plan, built on first use (npxception/fast/)
        self._lock = threading.Lock()

    # ---- description ----------------------------------------------------
    @property
    def variant_name(self) -> str:
        return arch.variant_name(self.variant)

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """``{"block1_conv1/kernel": array, ...}`` in Keras' order (read-only arrays)."""
        return dict(self._params)

    @property
    def classes(self) -> int | None:
        """Width of the last dense layer, or None for a feature extractor."""
        dense = [h for h in self.head if h["kind"] == "dense"]
        return dense[-1]["units"] if dense else None

    @property
    def include_top(self) -> bool:
        return self.classes is not None

    @property
    def classifier_activation(self):
        for h in reversed(self.head):
            if h["kind"] == "dense":
                return h.get("activation")
            if h["kind"] == "activation":
                return h["activation"]
        return None

    @property
    def layer_names(self) -> list[str]:
        """Every capturable layer name, in network order."""
        return [layer.name for layer in self.layers] + [h["name"] for h in self.head]

    def count_params(self) -> tuple[int, int]:
        """``(total, trainable)``; BN moving statistics are non-trainable, as in Keras."""
        total = sum(a.size for a in self._params.values())
        frozen = sum(a.size for k, a in self._params.items() if k.endswith(arch.NON_TRAINABLE))
        return total, total - frozen

    def manifest(self) -> dict:
        return {
            "variant": self.variant_name if self.variant_name in arch.VARIANTS
            else {f: getattr(self.variant, f) for f in arch.Variant.__dataclass_fields__},
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "head": self.head,
            "classifier_activation": self.classifier_activation,
            "labels": self.labels,
            "source": self.source,
            "dtype": self.dtype.name,
        }

    def summary(self, input_shape=None, print_fn=None) -> None:
        """Print a Keras-like table: layer, type, output shape, parameters, multiply-adds.

        Returns None, as Keras' ``model.summary()`` does (an interactive session
        would otherwise show the table twice). ``print_fn`` receives the whole
        table as one string instead of ``print``: ``summary(print_fn=lines.append)``
        captures it.

        Multiply-adds count the convolutions and dense layers (BN, ReLU, pooling
        and adds are a rounding error next to them, and BN folds away).
        """
        shape = tuple(input_shape or self.input_shape)
        if shape[0] is None:
            shape = CONFIG.default_input_shape
        rows = arch.trace(self.layers, self.head, shape)
        lines = [f'Model: "xception" (variant={self.variant_name}, input {shape}, dtype={self.dtype.name})']
        header = f"{'Layer (type)':<48}{'Output Shape':<24}{'Param #':>12}{'Mult-Adds':>16}"
        rule = "=" * len(header)
        lines += [rule, header, rule]
        kinds = {layer.name: layer.kind for layer in self.layers}
        kinds.update({h["name"]: h["kind"] for h in self.head})
        total_macs = 0
        for name, (out_shape, params, macs) in rows.items():
            n = sum(int(np.prod(s)) for s in params.values())
            total_macs += macs
            typ = _KERAS_TYPES[kinds[name]]
            lines.append(f"{name + ' (' + typ + ')':<48}{str((None, *out_shape)):<24}{n:>12,}{macs:>16,}")
        total, trainable = self.count_params()
        lines += [
            rule,
            f"Total params: {total:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {total - trainable:,}",
            f"Total mult-adds: {total_macs:,} ({total_macs / 1e9:.2f} G)",
            rule,
        ]
        (print_fn or print)("\n".join(lines))

    # ---- conversion and files -------------------------------------------
    def astype(self, dtype) -> "XceptionModel":
        """The same weights in another dtype; ``astype("float64")`` is the oracle."""
        dt = _as_dtype(dtype)
        model = XceptionModel({k: a.astype(dt) for k, a in self._params.items()},
                              variant=self.variant, head=self.head, input_shape=self.input_shape,
                              labels=self.labels, source=self.source)
        # the same network: its golden still holds, at the tolerance of the new dtype
        model.golden, model.golden_factory = self.golden, self.golden_factory
        return model

    def save(self, path, *, golden=True) -> "os.PathLike":
        """Write the weights, manifest and golden test case to ``path`` (``.npz``), atomically."""
        return save_weights(self, path, golden=golden)

    # ---- the forward pass -----------------------------------------------
    def __call__(self, x, *, impl="fast"):
        """The forward pass on a preprocessed NHWC batch: ``(N, H, W, 3) -> (N, classes)``."""
        return self.forward(x, impl=impl)[0]

    def predict(self, x, *, impl="fast"):
        """Alias of ``model(x)``, as in Keras."""
        return self(x, impl=impl)

    def forward(self, x, capture=None, impl="fast"):
        """Run the network; return ``(output, {layer_name: activation})``.

        capture: None (nothing), "all", or a list of layer names (see ``layer_names``).
        impl: "fast" (Numba/BLAS kernels) or "reference" (every op's readable twin).
        """
        if impl not in ("fast", "reference"):
            raise ValueError(f"impl: expected 'fast' or 'reference', found {impl!r}")
        x = self._check_input(x)
        wanted = self._capture_set(capture)
        if impl == "fast" and not wanted:
            y = fast_forward(self, x)
            if y is not None:  # None: the fused steps cannot express this table (npxception/fast/plan.py)
                return y, {}
        return _run(self, x, wanted, impl)

    def _check_input(self, x) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
                raise TypeError(f"x: expected an array of shape (N, H, W, 3), found {type(x).__name__}") from exc
        if x.dtype.kind not in "fiu" or x.dtype == np.bool_:
            raise TypeError(f"x: expected a float array (preprocessed image batch), found dtype {x.dtype}")
        if x.ndim == 3 and x.shape[-1] == 3:
            raise ValueError(f"x: expected a batch (N, H, W, 3), found a single image {x.shape}; "
                             "use x[None] to add the batch axis")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"x: expected shape (N, H, W, 3), found {x.shape}")
        if x.shape[0] < 1:
            raise ValueError(f"x: expected at least one image, found batch size {x.shape[0]}")
        h, w = x.shape[1:3]
        eh, ew = self.input_shape[:2]
        if eh is not None and (h, w) != (eh, ew):
            raise ValueError(f"x: this model takes {eh}x{ew} images (its input_shape is "
                             f"{self.input_shape}), found {h}x{w}; resize when loading: "
                             f"load_image(path, target_size=({eh}, {ew})), or let npxception.predict do it")
        if min(h, w) < CONFIG.min_input_size:
            raise ValueError(f"x: images must be at least {CONFIG.min_input_size}x"
                             f"{CONFIG.min_input_size}, found {h}x{w}")
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if not np.isfinite(x).all():
            raise ValueError("x: contains NaN or Inf")
        return x

    def _capture_set(self, capture) -> set[str]:
        if capture is None:
            return set()
        names = self.layer_names
        if isinstance(capture, str):
            if capture == "all":
                return set(names)
            capture = [capture]
        wanted = set(capture)
        unknown = sorted(wanted - set(names))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], names, n=3)
            raise ValueError(f"capture: unknown layer name {unknown[0]!r}"
                             + (f"; did you mean {hint}?" if hint else "; see model.layer_names"))
        return wanted

    def run_layer(self, name, inputs, *, impl="fast"):
        """Run one layer (backbone or head) on given input activations; return its output.

        ``inputs`` is a list in the order of the layer's inputs in the architecture
        table (one array, two for an ``add``; a head layer takes the previous
        layer's output). ``compare`` uses it to run *our* layer on *their* inputs.
        """
        x = [np.ascontiguousarray(a, dtype=self.dtype) for a in inputs]
        for layer in self.layers:
            if layer.name == name:
                return _run_layer(self._params, layer, x, CONFIG.bn_epsilon, impl)
        for h in self.head:
            if h["name"] == name:
                return run_head([h], self._params, x[0], impl)
        raise ValueError(f"run_layer: unknown layer name {name!r}; see model.layer_names")

    def __repr__(self):
        total, _ = self.count_params()
        return (f"<XceptionModel variant={self.variant_name} input_shape={self.input_shape} "
                f"classes={self.classes} dtype={self.dtype.name} params={total:,} weights={self.source}>")


def _run(model: XceptionModel, x: np.ndarray, wanted: set[str], impl: str):
    """The plain forward pass: every layer of the table, one op each."""
    p = model._params
    eps = CONFIG.bn_epsilon
    # How many later layers read each activation, so memory is freed early.
    readers: dict[str, int] = {}
    for layer in model.layers:
        for i in layer.inputs:
            readers[i] = readers.get(i, 0) + 1
    acts = {"input": x}
    captured = {}
    for layer in model.layers:
        n = layer.name
        y = _run_layer(p, layer, [acts[i] for i in layer.inputs], eps, impl)
        acts[n] = y
        if n in wanted:
            captured[n] = y
        for i in layer.inputs:
            readers[i] -= 1
            if readers[i] == 0:
                del acts[i]
    y = acts[model.layers[-1].name]
    y = run_head(model.head, p, y, impl, captured, wanted)
    return y, captured


def _run_layer(p, layer, ins, eps, impl):
    """One layer of the table on its input activations (``ins``, in ``layer.inputs`` order)."""
    n = layer.name
    if layer.kind == "conv":
        return ops.conv2d(ins[0], p[f"{n}/kernel"], strides=layer.strides, padding=layer.padding, impl=impl)
    if layer.kind == "sepconv":
        return ops.separable_conv2d(ins[0], p[f"{n}/depthwise_kernel"], p[f"{n}/pointwise_kernel"],
                                    strides=layer.strides, padding=layer.padding, impl=impl)
    if layer.kind == "bn":
        return ops.batch_norm(ins[0], p[f"{n}/gamma"], p[f"{n}/beta"], p[f"{n}/moving_mean"],
                              p[f"{n}/moving_variance"], epsilon=eps, impl=impl)
    if layer.kind == "relu":
        return ops.relu(ins[0], impl=impl)
    if layer.kind == "maxpool":
        return ops.max_pool2d(ins[0], pool_size=layer.kernel_size, strides=layer.strides,
                              padding=layer.padding, impl=impl)
    if layer.kind == "add":
        return ops.add(ins[0], ins[1], impl=impl)
    raise AssertionError(layer.kind)  # pragma: no cover - architecture.Layer kinds are closed


def _check_params(params: dict, expected: dict, where: str) -> None:
    """Every key present, nothing extra, every shape right, one float dtype, all finite."""
    missing = [k for k in expected if k not in params]
    if missing:
        raise ValueError(f"{where}: missing weight {missing[0]!r} (expected shape {expected[missing[0]]})"
                         + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    extra = [k for k in params if k not in expected]
    if extra:
        raise ValueError(f"{where}: unexpected weight {extra[0]!r} (shape {np.shape(params[extra[0]])}); "
                         "it belongs to no layer of this architecture and head")
    dtypes = set()
    for key, shape in expected.items():
        a = params[key]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{where}: weight {key!r} must be a numpy array, found {type(a).__name__}")
        if a.shape != tuple(shape):
            raise ValueError(f"{where}: weight {key!r} has the wrong shape: expected {tuple(shape)}, "
                             f"found {a.shape}")
        if a.dtype not in _DTYPES:
            raise TypeError(f"{where}: weight {key!r} must be float32 or float64, found {a.dtype}")
        dtypes.add(a.dtype)
        if not np.isfinite(a).all():
            raise ValueError(f"{where}: weight {key!r} contains NaN or Inf")
        if key.endswith("/moving_variance") and (a < 0).any():  # BN would take the sqrt of a negative
            raise ValueError(f"{where}: weight {key!r} is a variance but holds negative values "
                             f"(min {a.min():g})")
    if len(dtypes) > 1:
        raise TypeError(f"{where}: weights mix dtypes {sorted(d.name for d in dtypes)}; expected one")


def random_params(layers, head, dtype="float32", seed=0) -> dict[str, np.ndarray]:
    """Seeded random weights with random BN statistics (for tests and teaching).

    Kernels are He-normal (std sqrt(2 / fan_in)) so activations keep their scale
    through 36 layers; BN statistics are drawn away from the identity on purpose,
    because BN with mean 0 and variance 1 would hide bugs.
    """
    dt = _as_dtype(dtype)
    rng = np.random.default_rng(seed)
    out = {}
    for key, shape in arch.param_shapes(layers, head).items():
        var = key.rsplit("/", 1)[1]
        if var in ("kernel", "pointwise_kernel"):
            fan_in = int(np.prod(shape[:-1]))
            a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif var == "depthwise_kernel":
            a = rng.normal(0.0, np.sqrt(2.0 / (shape[0] * shape[1])), shape)
        elif var == "gamma":
            a = rng.uniform(0.5, 1.5, shape)
        elif var in ("beta", "bias"):
            a = rng.normal(0.0, 0.1, shape)
        elif var == "moving_mean":
            a = rng.normal(0.0, 0.5, shape)
        elif var == "moving_variance":
            a = rng.uniform(0.5, 2.0, shape)
        else:  # pragma: no cover
            raise AssertionError(key)
        out[key] = a.astype(dt)
    return out


def Xception(weights=None, *, variant="keras", include_top=True, pooling=None, classes=1000,
             classifier_activation="softmax", input_shape=None, dtype="float32", seed=0, verify=True):
    """Build Xception with ``keras.applications.Xception``'s arguments.

    weights: None (the default: seeded random weights and BN statistics),
      "imagenet" (the official Keras weights, downloaded once, 88 MB, and
      converted into the cache), or a path to an npxception ``.npz`` weight file.
      Keras defaults to "imagenet"; npxception deliberately does not, so that
      building a model never starts a download behind the caller's back (a
      test, an offline machine, a CI job). ``model.source`` and the repr say
      where the weights came from: ``random(seed=0)``, ``imagenet (PATH)`` or the file.
    variant: "keras" (default; what real weights fit) or "article".
    include_top / pooling / classes / classifier_activation: as in Keras.
    input_shape: (H, W, 3); any H, W >= 71 without the top. With the top and
      ImageNet weights it must be (299, 299, 3).
    dtype: "float32" or "float64".
    verify: run the weight file's golden test case (once per file per process);
      False skips it for speed-critical callers.
    """
    dt = _as_dtype(dtype)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling: expected None, 'avg' or 'max', found {pooling!r}")
    if classifier_activation not in (None, "softmax"):
        raise ValueError(f"classifier_activation: expected 'softmax' or None, found {classifier_activation!r}")
    if not isinstance(classes, (int, np.integer)) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"classes: expected a positive int, found {classes!r}")
    if input_shape is not None:
        input_shape = _check_input_shape(input_shape)

    if weights is None:
        v = arch.resolve_variant(variant)
        head = arch.keras_head(include_top, pooling, classes, classifier_activation)
        if input_shape is None:
            input_shape = CONFIG.default_input_shape if include_top else (None, None, 3)
        params = random_params(arch.backbone(v), head, dt, seed)
        return XceptionModel(params, variant=v, head=head, input_shape=input_shape,
                             source=f"random(seed={seed})")

    if isinstance(weights, str) and weights == "imagenet":
        if include_top and classes != 1000:
            raise ValueError(f"classes: ImageNet weights with the top have 1000 classes, found {classes}")
        if include_top and input_shape not in (None, CONFIG.default_input_shape):
            raise ValueError(f"input_shape: ImageNet weights with the top take "
                             f"{CONFIG.default_input_shape}, found {input_shape}")
        if arch.resolve_variant(variant) != arch.VARIANTS["keras"]:
            raise ValueError(f"variant: the ImageNet weights fit variant='keras', found {variant!r}")
        weights = imagenet_weights(include_top=include_top)
        source = f"imagenet ({weights})"
    elif isinstance(weights, (str, os.PathLike)):
        source = None  # the file's own: what it was converted from, else its path
    else:
        raise TypeError(f"weights: expected None, 'imagenet' or a path, found {type(weights).__name__}")

    model = load(weights, verify=verify)
    model.source = source or model.source
    return _adapt(model, variant=variant, include_top=include_top, pooling=pooling, classes=classes,
                  classifier_activation=classifier_activation, input_shape=input_shape, dtype=dt)


def _check_input_shape(shape) -> tuple:
    """(H, W, 3) with min_input_size <= H, W <= max_input_size, or None for H and W (any size)."""
    try:
        shape = tuple(None if d is None else _int(d) for d in shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape: expected (H, W, 3), found {shape!r}") from None
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"input_shape: expected (H, W, 3), found {shape!r}")
    if any(d is not None and not CONFIG.min_input_size <= d <= CONFIG.max_input_size for d in shape[:2]):
        raise ValueError(f"input_shape: height and width must be at least {CONFIG.min_input_size} and at "
                         f"most {CONFIG.max_input_size}, found {shape}")
    return shape


def _int(d) -> int:
    """An int dimension; 299.0 or "299" (a hand-edited manifest) are not silently accepted."""
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
        raise TypeError(d)
    return int(d)


def _check_labels(labels, classes):
    """None, or a list of exactly ``classes`` strings (a string is not a list of labels)."""
    if labels is None:
        return None
    if not isinstance(labels, (list, tuple)) or not all(isinstance(s, str) for s in labels):
        raise ValueError(f"labels: expected a list of strings, found {short_repr(labels)}")
    if classes is None or len(labels) != classes:
        raise ValueError(f"labels: expected {classes or 0} names, one per class, found {len(labels)}")
    return list(labels)



def _adapt(model, *, variant, include_top, pooling, classes, classifier_activation, input_shape, dtype):
    """Fit a loaded model to the requested Keras arguments, or explain why it cannot."""
    wanted = arch.resolve_variant(variant)
    if model.variant != wanted:
        raise ValueError(f"variant: the weight file holds variant {model.variant_name!r}, "
                         f"requested {arch.variant_name(wanted)!r}")
    if dtype != model.dtype:
        model = model.astype(dtype)
    if include_top:
        if not model.include_top:
            raise ValueError("include_top: the weight file has no classifier (it was saved without the top)")
        if classes != model.classes and classes != 1000:
            raise ValueError(f"classes: the weight file's classifier has {model.classes} classes, "
                             f"requested {classes}")
        if input_shape is not None and model.input_shape[0] is not None and input_shape != model.input_shape:
            raise ValueError(f"input_shape: the weight file was converted for {model.input_shape}, "
                             f"requested {input_shape}")
        if classifier_activation is None and model.head[-1]["kind"] == "dense":
            head = [dict(h) for h in model.head]
            head[-1]["activation"] = None
            model = XceptionModel(model._params, variant=model.variant, head=head,
                                  input_shape=model.input_shape, labels=model.labels, source=model.source)
        return model
    # Without the top: drop the classifier, keep the backbone, apply `pooling`.
    head = arch.keras_head(False, pooling)
    backbone_keys = arch.param_shapes(model.layers, [])
    params = {k: model._params[k] for k in backbone_keys}
    adapted = XceptionModel(params, variant=model.variant, head=head,
                            input_shape=input_shape or (None, None, 3), source=model.source)
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
    golden = gold.from_file(manifest.get("golden"), golden_arrays, where)
    for key in manifest.get("reserved") or {}:  # not weights (read() checked them)
        arrays.pop(key, None)
    try:
        variant = variant_from_manifest(manifest.get("variant", "keras"), where)
        head = manifest.get("head", [])
        input_shape = manifest.get("input_shape", [None, None, 3])
        if not (isinstance(input_shape, list) and len(input_shape) == 3):
            raise ValueError(f"input_shape: expected [H, W, 3], found {short_repr(input_shape)}")
        labels = manifest.get("labels")
        # XceptionModel refuses what cannot be valid: input_shape outside [71, max]
        # or not 3 channels, labels that are not exactly one string per class, a
        # negative or non-finite BN variance, any non-finite weight.
        model = XceptionModel(arrays, variant=variant, head=head, input_shape=input_shape,
                              labels=labels, source=manifest.get("source") or where)
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

