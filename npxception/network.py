"""XceptionModel: an architecture table with NumPy weights in Keras layout, and how it runs.

The object holds a backbone from :mod:`npxception.architecture`, a head, an
optional in-graph input stage (:mod:`npxception.input_stage`) and the weights
(:mod:`npxception.params`). ``model(x)`` runs the fused, BN-folded plan
(npxception/fast/) when nothing is captured; ``model.forward(x, capture=...)``
runs the plain forward pass (:mod:`npxception.forward`), which names every
activation. Build one with :func:`npxception.Xception` or :func:`npxception.load`
(npxception/model.py), not directly.

A process forked while another thread was inside ``model(x)`` finds the
model's lock released (review 25: the child waited forever on it; see
``_unlock_in_child``), and threads.py's pool and OpenBLAS' thread count reset.
"""

from __future__ import annotations

import difflib
import os
import threading
import types
import weakref
from collections.abc import Iterator

import numpy as np

from . import architecture as arch
from . import head_schema
from . import forward
from . import input_stage as stage
from .config import CONFIG
from .dtype_policy import check_source_policy
from .fast import fast_forward
from .head import run_head
from .model_checks import (check_data_format, check_flatten_size, check_input_shape, check_labels,
                           check_positive_int, check_source_shape)
from .ops._checks import check_impl
from .overflow import check_finite_output
from .params import Params, as_dtype, check_bn_divisors, check_params, new_weights
from .summary import summary_table
from .weights import capturable_source_names
from .weights import save as save_weights


SET_WEIGHTS = " + set_weights"  # appended to model.source once weights were set by hand

# Every model, for a forked child (review 25): a thread of the parent inside model(x) or set_weights at the fork
# leaves the model's lock held in the child by a thread the child does not have, and its next model(x) waited
# forever. A set of the models, each given a new lock in the child, rather than a fork count checked on each
# use: the child runs one thread when the hook runs, so nothing can hold or race for the new locks, and the
# per-call path stays as it was. A model whose lock was held also drops its plan: it may have been between
# set_weights' stores (the pass's own state, the plan's arena, is scratch rewritten by the next call).
_MODELS: "weakref.WeakSet[XceptionModel]" = weakref.WeakSet()


def _unlock_in_child():
    for model in list(_MODELS):
        if model._lock.locked():
            model._fast = None
        model._lock = threading.Lock()


os.register_at_fork(after_in_child=_unlock_in_child)


class XceptionModel:
    """An Xception backbone plus a head, holding NumPy weights in Keras layout.

    Build one with :func:`npxception.Xception` or :func:`npxception.load`, not directly.
    """

    name = "xception"  # Keras' model name; Xception(name=...) sets another

    def __init__(self, params, *, variant="keras", head=(), input_shape=(None, None, 3),
                 labels=None, source=None, input_stage=(), source_input_shape=None, source_data_format=None,
                 source_dtype_policy=None):
        self.variant = arch.resolve_variant(variant)
        self.head = head_schema.validate_head(list(head))
        self.layers = arch.backbone(self.variant)
        # The smallest height and width the backbone computes (7 for Keras' table): where Keras' predict
        # stops answering too. keras.applications.Xception's constructor rule (71) is Xception()'s own.
        self.min_input_size = arch.min_input_size(self.layers)
        self.input_shape = check_input_shape(input_shape, self.min_input_size)  # the backbone's
        # In-graph preprocessing run by model(x) before the backbone (npxception.input_stage); its
        # per-channel numbers have one value per input channel.
        self.input_stage = stage.validate(input_stage, self.channels)
        check_flatten_size(self.layers, self.head, self.input_shape)
        # What the source model takes, before its stage; None (a model built here, or a manifest
        # written before the field existed): the backbone's size, where geometry steps are identities.
        self.source_input_shape = (self.input_shape if source_input_shape is None
                                   else check_source_shape(source_input_shape, self.channels))
        reached = stage.output_size(self.input_stage, self.source_input_shape[:2])
        if reached != self.input_shape[:2]:
            raise ValueError(f"input_stage: brings the source's {self.source_input_shape} images to "
                             f"{reached}, but the backbone's input_shape is {self.input_shape}")
        self.source = source
        # The data format the source Keras model computed in ("channels_last", "channels_first" or None:
        # not recorded). Ours is NHWC whatever it says: it tells compare and --check-with-keras to feed
        # Keras NCHW, and a reader where the weights came from (weights_tools.layout).
        self.source_data_format = check_data_format(source_data_format)
        # The 16-bit Keras dtype policy the source computed in ("mixed_float16"...), or None: ours computes
        # its weights in self.dtype whatever it says; compare and --check-with-keras judge Keras by it.
        self.source_dtype_policy = check_source_policy(source_dtype_policy)
        self.labels = check_labels(labels, self.classes)
        expected = arch.param_shapes(self.layers, self.head, self.channels)
        if not isinstance(params, Params):
            params = dict(params)
        check_params(params, expected, where=source or "params")
        check_bn_divisors(params, self.head, where=source or "params")
        # another model's Params (the same keys, checked above) is shared: its packed kernels too
        self._params = params if isinstance(params, Params) else Params(params)
        self.dtype = self._params[next(iter(expected))].dtype
        stage.check_dtype(self.input_stage, self.dtype)
        # {our layer name: the source model's layer name}, set by weights_tools
        # converters and kept in the .npz manifest; compare() uses it to find Keras'
        # auto-named layers, capture and run_layer accept those names.
        self.source_layer_names: dict[str, str] = {}
        # The golden test case a weight file carries (npxception.golden): set by
        # load() and from_keras, computed by save() when absent.
        self.golden = None
        self.golden_factory = None  # a deferred golden (from_keras: Keras runs only if the model is saved)
        self._fast = None  # the BN-folded plan, built on first use (npxception/fast/)
        self._lock = threading.Lock()
        _MODELS.add(self)

    # ---- description ----------------------------------------------------
    @property
    def variant_name(self) -> str:
        return arch.variant_name(self.variant)

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """``{"block1_conv1/kernel": array, ...}`` in Keras' order (read-only arrays), a new dict.

        Kernels the fast plan holds packed are unpacked for it, bit for bit (npxception/params.py), so
        each read costs a pass over every kernel once the model has run: read it once, then index the dict
        (``w = model.weights; w[k]``), not ``model.weights[k]`` in a loop.
        """
        return dict(self._params)

    @property
    def channels(self) -> int:
        """The input's channels, ``input_shape[2]``: 3 (RGB), 1 (grayscale), 4 (RGBA, RGB+NIR)..."""
        return self.input_shape[2]

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
    def takes_pixels(self) -> bool:
        """True when the model preprocesses in-graph: it takes raw [0, 255] pixels, not preprocess_input's output."""
        return stage.takes_pixels(self.input_stage)

    @property
    def layer_names(self) -> list[str]:
        """Every capturable layer name, in network order."""
        return [layer.name for layer in self.layers] + [h["name"] for h in self.head]

    def get_weights(self) -> list[np.ndarray]:
        """Keras' ``model.get_weights()``: every weight as an array, in Keras' order (layer by layer, each
        layer's variables as Keras lists them: kernel, bias; depthwise, pointwise; gamma, beta, moving_mean,
        moving_variance) and shapes. Read-only arrays; a kernel held packed is unpacked for the call."""
        return [self._params[key] for key in self._shapes()]

    def set_weights(self, weights) -> None:
        """Keras' ``model.set_weights(weights)``: a list of arrays in :meth:`get_weights`' order and shapes,
        cast to the model's dtype (float64, int and bool arrays, as Keras casts them). Everything is
        checked before anything changes (Keras assigns layer by layer and stops at the first bad array):
        a wrong count or shape, NaN or Inf, values beyond the dtype's range, a negative moving_variance
        or a head BatchNormalization dividing by zero are refused naming the weight, as a weight file
        holding them is. Then ``model(x)`` (its compiled plan and packed kernels rebuilt), ``forward``
        and ``save`` use the new weights; the golden test case of the file the model came from no
        longer applies and is dropped (``save`` computes one for the new weights)."""
        self._assign(new_weights("set_weights", self._shapes(), weights, self.dtype))

    def _assign(self, arrays: dict) -> None:
        """Replace the weights ``arrays`` (checked by :func:`new_weights`) and what was derived from them."""
        params = self._params.replaced(arrays)
        check_bn_divisors(params, self.head, where="set_weights")
        with self._lock:  # model(x) runs the plan under this lock: it sees the old weights or the new
            self._params = params  # a store of its own: models made from this one keep theirs
            self._fast = None  # the BN-folded plan and its packed kernels were the old weights'
            self.golden = self.golden_factory = None
            if self.source and not self.source.endswith(SET_WEIGHTS):
                self.source += SET_WEIGHTS  # the repr and a saved manifest no longer claim the file's weights

    def get_layer(self, name) -> "LayerView":
        """Keras' ``model.get_layer(name)``: the layer by our name or the source file's (``conv2d_2``),
        with ``name``, ``get_weights()`` and ``set_weights()`` (``[]`` for a layer without weights, as in Keras)."""
        name = self._our_name("get_layer", name)
        return LayerView(self, name, [key for key in self._shapes() if key.rsplit("/", 1)[0] == name])

    @property
    def input(self):
        """Keras' ``model.input`` is a symbolic tensor of the framework's graph; npxception has none."""
        raise AttributeError("model.input: npxception builds no graph of symbolic tensors (Keras' model.input is "
                             "one); the input's shape is model.input_shape, (H, W, C) without the batch "
                             "(Keras' (None, H, W, C)), and model(x) runs a NumPy batch")

    @property
    def output(self):
        """Keras' ``model.output`` is a symbolic tensor of the framework's graph; npxception has none."""
        raise AttributeError("model.output: npxception builds no graph of symbolic tensors (Keras' model.output "
                             "is one); the output's shape is model.output_shape, with None for the batch as in "
                             "Keras, and model(x) computes it on a NumPy batch")

    @property
    def output_shape(self) -> tuple:
        """Keras' ``model.output_shape``: ``(None, classes)`` with the top, ``(None, 2048)`` pooled,
        ``(None, H', W', 2048)`` for the bare backbone (None where the input size is open)."""
        out = arch.trace(self.layers, self.head, self.input_shape)
        last = self.head[-1]["name"] if self.head else self.layers[-1].name
        return (None, *out[last][0])

    def count_params(self) -> int:
        """The number of weights, BN moving statistics included: Keras' ``model.count_params()``."""
        return sum(int(np.prod(s)) for s in self._shapes().values())

    def count_trainable_params(self) -> int:
        """The weights Keras counts as trainable (``summary()``'s "Trainable params"): all but the BN moving
        statistics, Keras' non-trainable ones; ``count_params() - count_trainable_params()`` are those."""
        return sum(int(np.prod(s)) for k, s in self._shapes().items() if not k.endswith(arch.NON_TRAINABLE))

    def _shapes(self) -> dict:
        """Every weight's shape, from the table (the weights were checked against it; nothing is unpacked)."""
        return arch.param_shapes(self.layers, self.head, self.channels)

    def manifest(self) -> dict:
        return {
            "name": self.name,  # model.name, Keras' (Xception(name=...)); absent before it existed: "xception"
            "variant": self.variant_name if self.variant_name in arch.VARIANTS
            else {f: getattr(self.variant, f) for f in arch.Variant.__dataclass_fields__},
            "input_shape": list(self.input_shape),
            "classes": self.classes,
            "head": self.head,
            "classifier_activation": self.classifier_activation,
            "labels": self.labels,
            "source": self.source,
            "dtype": self.dtype.name,
            "input_stage": self.input_stage,
            "source_input_shape": list(self.source_input_shape),
            "source_data_format": self.source_data_format,
            "source_dtype_policy": self.source_dtype_policy,
            # {our layer name: the source model's}: capture and run_layer take either (old readers ignore it)
            "source_layer_names": capturable_source_names(self.source_layer_names or {}, self.layer_names),
            # what predict() feeds model(x): raw pixels when the model preprocesses in-graph
            "feed": "pixels" if self.takes_pixels else "preprocess_input",
        }

    def summary(self, input_shape=None, print_fn=None) -> None:
        """Print a Keras-like table: layer, type, output shape, parameters, multiply-adds.

        Returns None, as Keras' ``model.summary()`` does (an interactive session
        would otherwise show the table twice). ``print_fn`` receives the whole
        table as one string instead of ``print``: ``summary(print_fn=lines.append)``
        captures it. The table is :func:`npxception.summary.summary_table`'s.
        """
        (print_fn or print)(summary_table(self, input_shape))

    # ---- conversion and files -------------------------------------------
    def astype(self, dtype) -> "XceptionModel":
        """The same weights in another dtype; ``astype("float64")`` is the oracle."""
        dt = as_dtype(dtype)
        model = XceptionModel({k: a.astype(dt) for k, a in self._params.items()},
                              variant=self.variant, head=self.head, input_shape=self.input_shape,
                              labels=self.labels, source=self.source, input_stage=self.input_stage,
                              source_input_shape=self.source_input_shape,
                              source_data_format=self.source_data_format,
                              source_dtype_policy=self.source_dtype_policy)
        # the same network: its golden still holds, at the tolerance of the new dtype
        model.golden, model.golden_factory, model.name = self.golden, self.golden_factory, self.name
        model.source_layer_names = dict(self.source_layer_names)
        return model

    def save(self, path, *, golden=True) -> "os.PathLike":
        """Write the weights, manifest and golden test case to ``path`` (``.npz``), atomically."""
        return save_weights(self, path, golden=golden)

    # ---- the forward pass -----------------------------------------------
    def __call__(self, x, *, impl="fast"):
        """The forward pass: ``(N, H, W, C) -> (N, classes)``, ``C`` the model's ``channels``.

        ``x`` is what the source model takes: ``preprocess_input``'s output, or
        raw pixels when the model preprocesses in-graph (``takes_pixels``).
        The whole batch runs at once, as Keras' ``model(x)`` does: its activations
        take ~23 MB per 299x299 image in float32 (docs/performance.md); use
        :meth:`predict` for a large batch. Raises :class:`npxception.overflow.ActivationOverflow` when a
        finite input gives a non-finite output.
        """
        return self.forward(x, impl=impl)[0]

    def predict(self, x, batch_size=32, *, impl="fast"):
        """``model(x)`` run ``batch_size`` images at a time and concatenated, as Keras' ``model.predict``
        does (its default is 32 too): the activations of one chunk are alive at a time, so the peak memory
        is bounded by ``batch_size``, not by ``N`` (docs/performance.md#batches). Each row is what
        ``model(x[i:i + batch_size])`` gives for its chunk. ``batch_size``: a positive int.
        ``x`` may also be a Python generator of ``(batch,)`` tuples, as Keras' predict takes one
        (:meth:`_predict_generator`); another iterator is refused by name.
        """
        batch_size = check_positive_int(batch_size, "batch_size")
        check_impl("model", impl)
        if isinstance(x, types.GeneratorType):
            return self._predict_generator(x, batch_size, impl)
        if isinstance(x, Iterator):  # np.asarray would make a 0-d object array of it: name it instead
            raise TypeError(f"x: an iterator ({type(x).__name__}) is not accepted; pass an array (N, H, W, "
                            f"{self.channels}), a list of images, or a generator yielding (batch,) tuples, as "
                            "Keras' predict takes")
        x = self._check_input(x)  # once, whole: a bad value anywhere is refused before any chunk runs
        chunks = [self._run_backbone(stage.apply(self.input_stage, x[i:i + batch_size], finite=True), set(), impl)[0]
                  for i in range(0, x.shape[0], batch_size)]
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _predict_generator(self, batches, batch_size, impl):
        """``predict`` of a Python generator, as Keras 3's (its GeneratorDataAdapter): each item a tuple
        ``(x,)``, ``(x, y)`` or ``(x, y, sample_weight)`` (Keras refuses a bare array or a list there; ``y`` and the
        weights are ignored, as predict ignores them), ``x`` one batch, run ``batch_size`` images at a time;
        the outputs concatenated in order. Each batch is checked and run as it comes, so one input batch is
        held at a time (a bad batch is refused by its number, after the ones before it ran)."""
        outputs = []
        for k, item in enumerate(batches):
            if not isinstance(item, tuple) or not 1 <= len(item) <= 3:
                found = f"a tuple of {len(item)}" if isinstance(item, tuple) else f"a {type(item).__name__}"
                raise TypeError(f"x: batch {k} of the generator is {found}; expected a tuple (x,), (x, y) or "
                                "(x, y, sample_weight), as Keras' predict requires of a generator: yield (batch,)")
            try:
                out = self.predict(item[0], batch_size, impl=impl)
            except (TypeError, ValueError) as exc:
                message = str(exc)
                raise type(exc)(f"x: batch {k} of the generator: "
                                f"{message[3:] if message.startswith('x: ') else message}") from None
            if outputs and out.shape[1:] != outputs[0].shape[1:]:
                raise ValueError(f"x: batch {k} of the generator gives outputs {out.shape[1:]}, batch 0 "
                                 f"{outputs[0].shape[1:]}; expected batches that give outputs of one shape")
            outputs.append(out)
        if not outputs:
            raise ValueError("x: the generator yielded no batch; expected at least one (as Keras' predict)")
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs)

    def forward(self, x, capture=None, impl="fast"):
        """Run the network; return ``(output, {layer_name: activation})``.

        capture: None (nothing), "all", or a list of layer names (see ``layer_names``; the source file's
        Keras names too, and the input stage's steps, such as ``rescaling``, which "all" leaves out).
        impl: "fast" (Numba/BLAS kernels) or "reference" (every op's readable twin).
        """
        check_impl("model", impl)
        staged = self._staged(capture)
        wanted, aliases = self._capture_set(capture, skip=staged)
        b, acts_staged = self._stage_captured(x, staged) if staged else (self.backbone_input(x), {})
        y, acts = self._run_backbone(b, wanted, impl)
        for theirs, ours in aliases.items():  # asked by the source file's name: returned under it too
            acts[theirs] = acts[ours]
        acts.update(acts_staged)
        return y, acts

    def _staged(self, capture) -> list[str]:
        """The input stage's steps asked for by name (their Keras names: ``rescaling``, ``normalization``,
        ``center_crop``), which compute something before the backbone and so can be captured too."""
        asked = [capture] if isinstance(capture, str) and capture != "all" else capture
        if asked is None or isinstance(asked, str):
            return []
        steps = set(self.stage_names())
        return [name for name in asked if name in steps]

    def _stage_captured(self, x, staged) -> tuple[np.ndarray, dict]:
        """``(backbone_input(x), {a staged name: that step's output})``: the stage run step by step
        (what :func:`npxception.input_stage.apply` does in one call) to keep the outputs asked for."""
        b, out = self._check_input(x), {}
        for step, b in stage.each_step(self.input_stage, b, finite=True):
            if step["name"] in staged:
                out[step["name"]] = b
        return np.ascontiguousarray(b), out

    def run_backbone(self, b, *, impl="fast"):
        """The network after its input stage: ``b`` is what :meth:`backbone_input` returned (``(N, H, W, C)``
        at the backbone's ``input_shape``, in the model's dtype); ``predict()`` stacks photos of different
        sizes this way, each brought to the backbone's size by the stage."""
        check_impl("model", impl)
        eh, ew = self.input_shape[:2]
        if (not isinstance(b, np.ndarray) or b.ndim != 4 or b.dtype != self.dtype or b.shape[3] != self.channels
                or (eh is not None and b.shape[1:3] != (eh, ew))):
            raise ValueError(f"b: expected backbone_input's output, a {self.dtype} array "
                             f"(N, {eh}, {ew}, {self.channels}), "
                             f"found {type(b).__name__} {getattr(b, 'shape', '')} {getattr(b, 'dtype', '')}")
        return self._run_backbone(np.ascontiguousarray(b), set(), impl)[0]

    def _run_backbone(self, x, wanted, impl):
        if impl == "fast" and not wanted:
            y = fast_forward(self, x)
            if y is not None:  # None: the fused steps cannot express this table (npxception/fast/plan.py)
                return check_finite_output(y, x, self._overflowed(x, impl)), {}
        # an overflow is named by check_finite_output (ActivationOverflow, with its first layer), not left to
        # NumPy's RuntimeWarning lines quoting our source
        with np.errstate(over="ignore", invalid="ignore"):
            y, captured = forward.run(self, x, wanted, impl)
        return check_finite_output(y, x, self._overflowed(x, impl)), captured

    def _overflowed(self, x, impl):
        """For :func:`check_finite_output`: the first layer whose output is not finite for image ``row``
        of ``x``, found only once an output is (a second, layer-by-layer pass over that image)."""
        def first(row):
            with np.errstate(over="ignore", invalid="ignore"):  # what it looks for
                return forward.first_nonfinite(self, x[row:row + 1], impl)
        return first

    def backbone_input(self, x) -> np.ndarray:
        """``x`` checked and through the input stage: what ``block1_conv1`` reads."""
        return stage.apply(self.input_stage, self._check_input(x), finite=True)

    def backbone_input_gathered(self, hw, read, feed) -> np.ndarray:
        """``backbone_input(feed(x)[None])`` for one ``H x W`` image ``x`` that is never whole in memory.

        ``read(rows, cols)`` gives ``x[rows][:, cols]``, ``feed`` is pixelwise (predict's cast to float
        and ``preprocess_input``): only the pixels the input stage's first geometry step reads are read,
        fed and checked (:func:`npxception.input_stage.apply_gathered`), with the same bits and the
        same refusals as :meth:`backbone_input`. ``(1, H', W', C)`` at the backbone's size.
        """
        self.check_image_size(*hw)

        def fed(pixels):
            x = np.ascontiguousarray(feed(pixels), dtype=self.dtype)
            if not np.isfinite(x).all():  # the gathered values only: what the stage computes with
                raise ValueError("x: contains NaN or Inf")
            return x

        return stage.apply_gathered(self.input_stage, hw, read, fed, finite=True)

    def _check_input(self, x) -> np.ndarray:
        c = self.channels
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
                raise TypeError(f"x: expected an array of shape (N, H, W, {c}), found {type(x).__name__}") from exc
        if x.dtype.kind not in "fiub":  # bool: 0 and 1, as Keras 3's model(x) and predict cast it
            raise TypeError(f"x: expected a float array (preprocessed image batch), found dtype {x.dtype}")
        if x.ndim == 3 and x.shape[-1] == c:
            raise ValueError(f"x: expected a batch (N, H, W, {c}), found a single image {x.shape}; "
                             "use x[None] to add the batch axis")
        if x.ndim != 4 or x.shape[-1] != c:
            took = f" (this model takes {c}-channel images)" if x.ndim == 4 else ""
            raise ValueError(f"x: expected shape (N, H, W, {c}), found {x.shape}{took}")
        if x.shape[0] < 1:
            raise ValueError(f"x: expected at least one image, found batch size {x.shape[0]}")
        self.check_image_size(*x.shape[1:3])
        if self.input_stage and self.input_stage[0]["kind"] == "cast":
            # before any rounding to the model's dtype, as Keras casts what it is fed (a float64 254.99999999
            # is 254 there, and would be 255 after float32); the stage's own cast then changes nothing
            x = stage.cast(self.input_stage[0], x)
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if not np.isfinite(x).all():
            raise ValueError("x: contains NaN or Inf")
        return x

    def check_image_size(self, h, w) -> None:
        """Raise ValueError unless ``model(x)`` takes ``h x w`` images, naming the sizes it takes and,
        where the input stage refuses, the layer (:func:`npxception.input_stage.output_size`)."""
        eh, ew = self.source_input_shape[:2]
        if (eh is not None and h != eh) or (ew is not None and w != ew):
            want = "x".join("any" if d is None else str(d) for d in (eh, ew))
            hint = f"({eh}, {ew})" if None not in (eh, ew) else "..."
            flat = head_schema.flatten_step(self.head)
            why = (f"; its Flatten head {flat['name']} is built for the {arch.shape_text(flat['map_shape'])} "
                   "feature map of that size" if flat and self.source_input_shape == self.input_shape else "")
            raise ValueError(f"x: this model takes {want} images (the source model's input shape "
                             f"{self.source_input_shape}{why}), found {h}x{w}; resize when loading: "
                             f"load_image(path, target_size={hint}), or let npxception.predict do it")
        if self.source_input_shape[:2] != self.input_shape[:2]:
            stage.output_size(self.input_stage, (h, w))  # refuses, naming the layer, what Keras would not run
        elif min(h, w) < self.min_input_size:
            m = self.min_input_size
            raise ValueError(f"x: images must be at least {m}x{m}, found {h}x{w}: layer "
                             f"{arch.vanishing_layer(self.layers, min(h, w))} would have no output pixel "
                             "(Keras raises on it too)")

    def stage_names(self) -> list[str]:
        """The input stage's steps that ``forward(capture=...)`` and ``show --layer`` take by name (``rescaling``,
        ``normalization``, ``center_crop``): they compute before the backbone, so they are not ``layer_names``."""
        ours = set(self.layer_names)
        return [s["name"] for s in self.input_stage if s["name"] not in ours]

    def _our_name(self, what: str, name, *, stage=False) -> str:
        """Our layer name for ``name``: one of ``layer_names``, or the source file's name of one of them
        (``source_layer_names``: Keras' auto-names such as ``conv2d_2`` for ``block2_residual_conv``).
        ``stage``: the caller takes the input stage's names too (:meth:`stage_names`; capture, show): a close
        one is suggested. Otherwise none is, since this returns none of them (review 30, F4: show suggested
        'rescaling' for 'rescaling')."""
        names = self.layer_names
        if name in names:
            return name
        theirs = {src: ours for ours, src in capturable_source_names(self.source_layer_names or {}, names).items()}
        if name in theirs and theirs[name] in names:
            return theirs[name]
        steps = self.stage_names() if stage else []
        hint = difflib.get_close_matches(str(name), [*names, *theirs, *steps], n=3)  # Keras' names too
        where = ("; the source model's layers that compute nothing at inference (Dropout, augmentation "
                 "layers) or that hold others (a nested model's own name) have no output of their own here: "
                 "capture the layer before them, or the nested model's last layer" if self.source_layer_names else
                 "; this model records no source names (model.source_layer_names is empty: a file converted "
                 "before npxception kept them; re-convert it), so Keras' auto-names (conv2d_2, "
                 "batch_normalization_4, add_1) are ours: blockN_residual_conv, blockN_residual_bn, blockN_add")
        raise ValueError(f"{what}: unknown layer name {name!r}"
                         + (f"; did you mean {hint}?" if hint else "; see model.layer_names") + where)

    def _capture_set(self, capture, skip=()) -> tuple[set[str], dict[str, str]]:
        """``(our names to capture, {a source name asked for: our name})``; the names in ``skip`` (the
        input stage's, :meth:`_staged`) are left out."""
        if capture is None:
            return set(), {}
        if isinstance(capture, str):
            if capture == "all":
                return set(self.layer_names), {}
            capture = [capture]
        ours = {name: self._our_name("capture", name, stage=True) for name in capture if name not in skip}
        return set(ours.values()), {name: our for name, our in ours.items() if name != our}

    def run_layer(self, name, inputs, *, impl="fast"):
        """Run one layer (backbone or head) on given input activations; return its output.

        ``inputs`` is a list in the order of the layer's inputs in the architecture
        table (one array, two for an ``add``; a head layer takes the previous
        layer's output). ``compare`` uses it to run *our* layer on *their* inputs.
        """
        check_impl("run_layer", impl)
        name = self._our_name("run_layer", name)
        x = [np.ascontiguousarray(a, dtype=self.dtype) for a in inputs]
        for layer in self.layers:
            if layer.name == name:
                return forward.run_layer(self._params, layer, x, CONFIG.bn_epsilon, impl)
        for h in self.head:
            if h["name"] == name:
                return run_head([h], self._params, x[0], impl)
        raise ValueError(f"run_layer: unknown layer name {name!r}; see model.layer_names")

    def __repr__(self):
        return (f"<XceptionModel variant={self.variant_name} input_shape={self.input_shape} "
                f"classes={self.classes} dtype={self.dtype.name} params={self.count_params():,} "
                f"weights={self.source}>")


class LayerView:
    """One layer of a model, as ``model.get_layer(name)`` gives it: ``name`` (ours), ``get_weights()`` and
    ``set_weights()``."""

    def __init__(self, model, name, keys):
        self._model, self.name, self._keys = model, name, keys

    def get_weights(self) -> list[np.ndarray]:
        """Keras' ``layer.get_weights()``: the layer's weights in Keras' order, read-only arrays."""
        return [self._model._params[key] for key in self._keys]

    def set_weights(self, weights) -> None:
        """Keras' ``layer.set_weights(weights)``: this layer's arrays in :meth:`get_weights`' order
        (``[]`` for a layer without weights), checked and applied as :meth:`XceptionModel.set_weights` does."""
        model = self._model
        expected = {key: shape for key, shape in model._shapes().items() if key in self._keys}
        model._assign(new_weights(f"set_weights: layer {self.name!r}", expected, weights, model.dtype))

    def __repr__(self):
        return f"<LayerView {self.name} weights={[tuple(a.shape) for a in self.get_weights()]}>"
