"""The golden test case a weight file carries: a seeded input and digests of what it must produce.

frugally-deep (the C++ Keras inference library) embeds a test case computed by
Keras in every converted model and runs it on load; npxception does the same, so
that a file damaged on disk, converted by a buggy mapping, or run by kernels
that miscompile on this machine is noticed before it answers a question.

A golden case (format version 2, see docs/weights-format.md) is:

* ``input``: seeded pixels, ``(1, H, W, C)`` uint8, at the model's input size and channels
  (71x71 for a backbone without a fixed size). The model receives them as its
  own kind of input (:func:`model_input`: ``preprocess_input`` for a model
  without an input stage).
* per checked layer (the first ReLU, every residual ``add``, the backbone's
  last layer and every head layer, all taken from the architecture table), a
  digest of its activation: mean, std and max|x| (``stats``) and the values
  at ``K`` fixed positions (``index`` -> ``sample``), all float64;
* where the expectation came from: Keras' own output for a live Keras model, or
  our float64 oracle (``impl="reference"``) for a file converted without a
  framework, so that a fast-kernel bug cannot certify itself; its tolerance;
  the versions that wrote it.

A digest agrees when every one of its numbers is within ``rtol * max|x|`` of
the expectation (:func:`deviation`): the error scaled by the layer's own size,
as ``npxception.compare`` measures it.

How a golden is stored in a weight file (its reserved arrays and manifest section) is
:mod:`npxception.golden_file`'s; the machine a bug report describes, :mod:`npxception.verify`'s.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numba
import numpy as np

from . import __version__
from . import _fork
from . import architecture as arch
from . import forward
from . import shell
from .config import CONFIG
from .head import run_head

SEED = 16  # any fixed seed; the pixels are stored, so the generator's stream may change freely
SAMPLE_SIZE = 32  # values per layer: 32 x 16 bytes x 16 layers = 8 kB, the input dominates the size
# Tolerance relative to the layer's max|x|, by the lower of the two precisions
# compared (the golden's and the run's). float32: npxception.compare's 1e-4,
# 80x above the worst correct float32 run against the float64 oracle (1.2e-6)
# and 100x below what one layer's weights scaled by 1.01 do (1e-2).
# float64: summation order only (measured below 3e-15). docs/weights-format.md.
RTOL = {"float32": 1e-4, "float64": 1e-9}


@dataclasses.dataclass(frozen=True)
class Digest:
    """What one layer's activation must look like."""

    layer: str
    shape: tuple  # the activation's shape, batch 1
    stats: np.ndarray  # (3,) float64: mean, std, max|x|
    index: np.ndarray  # (K,) int64: positions in the flattened activation
    sample: np.ndarray  # (K,) float64: the values there


@dataclasses.dataclass(frozen=True)
class Golden:
    """A golden test case: input pixels, digests in network order, and their provenance."""

    pixels: np.ndarray  # (1, H, W, C) uint8, C the model's channels
    digests: tuple  # of Digest, network order
    source: str  # who computed the expectation, in words
    precision: str  # dtype the expectation was computed in: "float32" or "float64"
    rtol: dict  # {"float32": ..., "float64": ...}
    written_by: dict  # {"npxception": ..., "numpy": ..., maybe "keras": ...}
    seed: int = SEED
    to_model: str = "preprocess_input (x / 127.5 - 1)"  # how the pixels become the model's input

    @property
    def layers(self) -> list[str]:
        return [d.layer for d in self.digests]

    def tolerance(self, dtype) -> float:
        """The tolerance for a run in ``dtype``: the looser of the golden's and the run's precision."""
        low = "float32" if "float32" in (self.precision, np.dtype(dtype).name) else "float64"
        return float(self.rtol[low])

    def fits(self, model) -> bool:
        """Whether this golden was made for ``model``'s architecture, head and input size.

        It digests checked layers in network order, ending with the output (a
        Keras golden may lack intermediates Keras could not expose).
        """
        checked = checked_layers(model)
        order = [n for n in checked if n in self.layers]
        return (order == self.layers and self.layers[-1] == checked[-1]
                and self.pixels.shape[1:3] == golden_size(model) and self.pixels.shape[3] == model.channels
                and self.to_model == input_description(model))


# ---- making a golden --------------------------------------------------------

def checked_layers(model) -> list[str]:
    """The layers a golden digests, from the architecture table: the first ReLU, every ``add``,
    the backbone's last layer and every head layer (the last one is the model's output)."""
    first_relu = next(layer.name for layer in model.layers if layer.kind == "relu")
    names = [first_relu] + [layer.name for layer in model.layers if layer.kind == "add"]
    names.append(model.layers[-1].name)
    names += [h["name"] for h in model.head]
    return list(dict.fromkeys(names))


def golden_size(model) -> tuple[int, int]:
    """The model's input size, or, for a backbone without one, 71x71: the smallest fixed size
    keras.applications.Xception builds (files record it: ``fits`` compares it), where every block's map
    is still more than one pixel wide, unlike at the network's own minimum (architecture.min_input_size)."""
    h, w = model.input_shape[:2]
    return (CONFIG.constructor_min_size, CONFIG.constructor_min_size) if h is None else (h, w)


def golden_pixels(model, seed=SEED) -> np.ndarray:
    """Seeded pixels ``(1, H, W, C)`` uint8 for ``model``'s golden, ``C`` its channels."""
    h, w = golden_size(model)
    return np.random.default_rng(seed).integers(0, 256, (1, h, w, model.channels), dtype=np.uint8)


def model_input(model, pixels: np.ndarray, dtype=None) -> np.ndarray:
    """The golden pixels as ``model`` takes them: as they are for a model that preprocesses
    in-graph (an input stage), else through Keras' ``preprocess_input`` (x / 127.5 - 1)."""
    from .images import preprocess_input  # loads Pillow, which model and weights (our importers) never need

    if getattr(model, "takes_pixels", False):
        return pixels.astype(dtype or model.dtype)
    x = preprocess_input(pixels.astype(np.float64))
    return x.astype(dtype or model.dtype)


def input_description(model) -> str:
    return ("pixels as they are (the model's input stage preprocesses)" if getattr(model, "takes_pixels", False)
            else "preprocess_input (x / 127.5 - 1)")


def digest(layer: str, activation: np.ndarray, index: np.ndarray | None = None, *, seed=SEED,
           position=0) -> Digest:
    """The digest of one activation; ``index`` defaults to ``SAMPLE_SIZE`` seeded positions."""
    a = np.asarray(activation, dtype=np.float64)
    flat = a.ravel()
    if index is None:
        rng = np.random.default_rng([seed, position])
        index = np.sort(rng.choice(flat.size, min(SAMPLE_SIZE, flat.size), replace=False))
    index = np.asarray(index, dtype=np.int64)
    stats = np.array([flat.mean(), flat.std(), np.abs(flat).max()])
    return Digest(layer, tuple(a.shape), stats, index, flat[index])


def make_golden(model, activations: dict, *, source: str, precision: str, pixels=None,
                extra_versions=None) -> Golden:
    """A golden from ``{layer: activation}`` computed on ``model_input(model, pixels)``."""
    pixels = golden_pixels(model) if pixels is None else pixels
    digests = tuple(digest(name, activations[name], position=i)
                    for i, name in enumerate(checked_layers(model)) if name in activations)
    if not digests:
        raise ValueError("golden: no checked layer among the activations given")
    written_by = {"npxception": __version__, "numpy": np.__version__, **(extra_versions or {})}
    return Golden(pixels, digests, source, precision, dict(RTOL), written_by, to_model=input_description(model))


def reference_golden(model) -> Golden:
    """The golden from our float64 oracle, ``impl="reference"``: independent of the fast kernels."""
    oracle = model.astype("float64")
    pixels = golden_pixels(model)
    _, acts = oracle.forward(model_input(oracle, pixels), capture=checked_layers(model), impl="reference")
    return make_golden(model, acts, pixels=pixels, precision="float64",
                       source="npxception float64 oracle (impl='reference')")


def golden_for(model) -> Golden:
    """``model``'s golden: the one it carries (or its ``golden_factory`` makes) when it fits,
    else the reference golden. The result is kept on the model: computed once."""
    golden = model.golden
    if golden is None and model.golden_factory is not None:
        golden = model.golden_factory()
    if golden is None or not golden.fits(model):
        golden = reference_golden(model)
    model.golden = golden
    return golden


# ---- checking ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LayerCheck:
    layer: str
    deviation: float  # max |ours - expected| over the digest / max|x| of the expectation
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.deviation <= self.tolerance


@dataclasses.dataclass(frozen=True)
class PathCheck:
    """One run of the golden input: which path, in which dtype, and each checked layer's deviation."""

    path: str  # "fused" (model(x), the fast plan), "fast" (per-op kernels) or "reference"
    dtype: str
    rows: tuple  # of LayerCheck

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def first_failure(self) -> LayerCheck | None:
        return next((r for r in self.rows if not r.passed), None)

    @property
    def worst(self) -> LayerCheck:
        return max(self.rows, key=lambda r: r.deviation / r.tolerance)


def deviation(expected: Digest, activation: np.ndarray) -> float:
    """``max |ours - expected|`` over the digest's numbers, divided by the expected max|x|."""
    a = np.asarray(activation)
    if tuple(a.shape) != expected.shape:
        return float("inf")
    ours = digest(expected.layer, a, expected.index)
    scale = max(float(expected.stats[2]), float(np.finfo(np.float32).tiny))
    worst = max(np.abs(ours.stats - expected.stats).max(), np.abs(ours.sample - expected.sample).max())
    return float(worst) / scale if np.isfinite(worst) else float("inf")


def run_path(model, golden: Golden, path: str) -> PathCheck:
    """Run the golden input through ``path`` and measure every checked layer it produces."""
    x = model_input(model, golden.pixels)
    tol = golden.tolerance(model.dtype)
    if path == "fused":
        acts = _fused_activations(model, x, golden.layers)
    else:
        acts = _captured_even_if_not_finite(model, x, golden.layers, path)
    rows = tuple(LayerCheck(d.layer, deviation(d, acts[d.layer]), tol)
                 for d in golden.digests if d.layer in acts)
    return PathCheck(path, model.dtype.name, rows)


def _fused_activations(model, x, layers) -> dict:
    """``model(x)``, the fused fast plan, and what it lets us see.

    The plan yields only its output. Without a dense layer in the head that
    output (the features, or their pooling) shows any damage, and the check is
    exactly the forward pass the caller's first ``model(x)`` would build anyway.
    A classifier's softmax, though, can saturate on the golden input (random test
    weights do: one class at 1.0) and hide the damage; so its backbone runs
    alone, as a headless twin sharing the weights, and the features feed the
    head with every head layer captured.
    """
    last = model.layers[-1].name
    if not any(h["kind"] == "dense" for h in model.head):
        return {layers[-1]: _even_if_not_finite(model, x)}
    # An in-graph input stage (issue 11's, where the model has one) runs in the twin too.
    stage = {"input_stage": model.input_stage} if hasattr(model, "input_stage") else {}
    twin = _backbone_twin(model, model.input_shape, **stage)
    features = _even_if_not_finite(twin, x)
    del twin  # its folded plan and buffers (~40 MB at 299x299, float32) are not kept
    acts = {last: features}
    # NumPy for the head, as the fast plan runs it (npxception/fast/run.py): the ops' parallel
    # pooling and softmax kernels would add ~5 s to a cold first load, for microseconds of work
    run_head(model.head, model._params, features, "reference", acts, set(layers))
    return acts


def _even_if_not_finite(model, x) -> np.ndarray:
    """``model(x)``, NaN or Inf included: a kernel that computes NaN is what the checks exist to name (as a
    deviation, with the first layer that disagrees), where ``model(x)`` raises ActivationOverflow, whose
    message blames the weights' float range."""
    try:
        return model(x)
    except FloatingPointError as exc:  # overflow.ActivationOverflow (any FloatingPointError carrying .output)
        return exc.output


def _captured_even_if_not_finite(model, x, layers, impl) -> dict:
    """``model.forward(x, capture=layers, impl=impl)``'s activations, NaN or Inf included (as
    :func:`_even_if_not_finite`): the digests then name the first checked layer that disagrees."""
    try:
        return model.forward(x, capture=layers, impl=impl)[1]
    except FloatingPointError:  # overflow.ActivationOverflow: the same walk, without the finite check
        return forward.run(model, model.backbone_input(x), set(layers), impl)[1]


def _backbone_twin(model, input_shape, **options):
    """A headless model (an XceptionModel) sharing ``model``'s backbone weights, so that the kernels its plan
    packs are packed for ``model`` too (npxception/params.py: each weight held once)."""
    return type(model)(model._params.subset(arch.param_shapes(model.layers, [], model.channels)),
                       variant=model.variant, head=[], input_shape=input_shape, **options)


# Under NUMBA_DISABLE_JIT=1 (docs/debugging.md) the kernels run as Python, far slower than the
# reference ops (docs/performance.md, "Measurements behind the code's choices"). So in that mode the
# golden runs on the reference ops (the file is checked) and the fused path that model(x) will run is
# checked against them on a small seeded input through the file's own backbone: what catches kernels
# that compute otherwise as Python than compiled (a GEMM that computed nothing left model(x) NaN).
# 24x24, the smallest size whose middle flow maps are 2x2 (at 16x16 they are 1x1): each of two
# threads reads the other's row as its halo.
JIT_OFF_SIZE = 24


def jit_enabled() -> bool:
    """False under ``NUMBA_DISABLE_JIT=1``, where the fast kernels run as (slow) Python."""
    return not numba.config.DISABLE_JIT


def fused_against_reference(model) -> PathCheck:
    """``model(x)``'s kernels against the reference ops, on a seeded ``JIT_OFF_SIZE`` square input.

    The model's backbone with its weights, the input already through any input stage (the kernels
    start after it): one row, the backbone's last layer, deviation ``max|ours - reference|`` divided
    by the reference's max|x|, at the golden tolerance of the model's dtype.
    """
    twin = _backbone_twin(model, (None, None, model.channels))
    size = max(JIT_OFF_SIZE, twin.min_input_size)
    x = np.random.default_rng(SEED).uniform(-1, 1, (1, size, size, model.channels)).astype(model.dtype)
    ours = _even_if_not_finite(twin, x)
    reference = twin.forward(x, impl="reference")[0]
    worst = float(np.abs(ours - reference).max())
    scale = max(float(np.abs(reference).max()), float(np.finfo(np.float32).tiny))
    dev = worst / scale if np.isfinite(worst) else float("inf")
    return PathCheck("fused", model.dtype.name, (LayerCheck(model.layers[-1].name, dev, RTOL[model.dtype.name]),))


class GoldenMismatch(ValueError):
    """A weight file's golden test case failed: the file or the kernels are wrong."""


REPORT_ADVICE = ("Either the file is damaged or was converted with a since-fixed bug: re-convert it from its "
                 "source; or the kernels miscompute on this machine: report a kernel bug with the output of "
                 "`npxception verify --report report.json {where}`. (verify=False skips this check.)")


def mismatch_message(where: str, golden: Golden, check: PathCheck, localised: PathCheck | None = None,
                     advice: str = REPORT_ADVICE) -> str:
    """The error: the file, the first layer that disagrees and by how much, and the ways out."""
    located = localised if localised is not None and not localised.passed else check
    bad = located.first_failure
    idx = [r.layer for r in located.rows].index(bad.layer)
    before = f"; the layer checked before it, {located.rows[idx - 1].layer}, agrees" if idx else ""
    how = {"fused": "the fast path (model(x))", "fast": "the fast per-layer kernels",
           "reference": "the reference ops"}[located.path]
    text = (f"{where}: the golden test case fails at layer {bad.layer}: it differs from the expected "
            f"digest by {bad.deviation:.3g} of its max|x| (tolerance {bad.tolerance:g}, {how}, "
            f"{located.dtype}){before}. The expectation came from {golden.source}.")
    if localised is not None and localised.passed:
        text += (" Every layer agrees when run op by op, so the fused fast path miscomputes on this "
                 "machine.")
    return f"{text} {advice.format(where=shell.arg(where))}"  # {where} is in a command


def check_on_load(model, golden: Golden, where: str) -> PathCheck:
    """The load-time check: one forward pass of the golden input in the model's dtype.

    The fast path (``model(x)``); the output digest decides. Only on a mismatch
    are the checked layers run again op by op, to name the first one that
    disagrees. Under ``NUMBA_DISABLE_JIT=1``: the reference ops, then the fast
    path against them on a small input (:data:`JIT_OFF_SIZE`).
    """
    if not jit_enabled():
        check = run_path(model, golden, "reference")
        if not check.passed:
            raise GoldenMismatch(mismatch_message(where, golden, check))
        kernels = fused_against_reference(model)
        if not kernels.passed:
            bad = kernels.first_failure
            raise GoldenMismatch(
                f"{where}: the golden test case passes on the reference ops, but under NUMBA_DISABLE_JIT=1 "
                f"the fast path (model(x), its kernels run as Python) differs from them at layer {bad.layer} "
                f"by {bad.deviation:.3g} of its max|x| on a small seeded input "
                f"(tolerance {bad.tolerance:g}, {kernels.dtype}): the kernels miscompute as Python. Report "
                "a kernel bug; without NUMBA_DISABLE_JIT the compiled kernels run. (verify=False skips "
                "this check.)")
        return check
    check = run_path(model, golden, "fused")
    if check.passed:
        return check
    raise GoldenMismatch(mismatch_message(where, golden, check, run_path(model, golden, "fast")))


# ---- once per file per process, and the notice for files without a golden -----

_LOCK = _fork.lock()
_CHECKED: set = set()
_NOTIFIED: set = set()


class NoGoldenWarning(UserWarning):
    """A weight file without a golden test case was loaded unchecked."""


def file_identity(path) -> tuple:
    """The file as the OS knows it now: a rewritten or replaced file is checked again."""
    st = os.stat(path)
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def already_checked(identity, dtype) -> bool:
    with _LOCK:
        return (identity, dtype) in _CHECKED


def mark_checked(identity, dtype) -> None:
    with _LOCK:
        _CHECKED.add((identity, dtype))


def notify_missing(where: str, identity) -> None:
    """Warn once per file per process that it carries no golden case."""
    with _LOCK:
        if identity in _NOTIFIED:
            return
        _NOTIFIED.add(identity)
    warnings.warn(f"{where}: this weight file carries no golden test case (written by an older npxception, or "
                  "saved with golden=False), "
                  "so it was loaded unchecked; `npxception verify --add FILE` (or re-saving it) adds one",
                  NoGoldenWarning, stacklevel=4)
