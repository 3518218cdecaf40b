"""The catalogue of named causes compare tests at every source of error.

A *source* is a layer whose output differs from ours even though it ran on the
same inputs (its local error is over tolerance). Each hypothesis below is one
way a port is known to differ: it takes the :class:`Case` (their inputs, their
output, our layer) and returns a :class:`Candidate`, the output *their* layer
would produce under that cause, with the fitted parameter; or None when it does
not apply. :func:`diagnose` keeps the candidate that reproduces their output
within tolerance with the smallest residual. A port that matches no hypothesis
is reported as "unexplained", never forced into one.

Layer-specific hypotheses are tried first; the generic ones (an extra ReLU, a
different input, a skipped layer) only when no specific one explains the layer.
docs/discrepancies.md shows each with the signature compare reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import ops
from ..config import CONFIG
from .metrics import errors

# keras.applications.imagenet_utils: "caffe" mode is BGR minus these means (BGR order);
# "torch" mode is x/255 normalised by these ImageNet means and stds (RGB order).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


@dataclass
class Case:
    """One source layer, as the hypotheses see it."""

    model: object  # our XceptionModel
    name: str
    kind: str  # architecture kind: conv, sepconv, bn, relu, maxpool, add, or a head kind
    spec: object  # the architecture.Layer, or the head dict
    input_names: tuple  # the layers feeding it, in the table's order ("input": the image)
    inputs: list  # their input activations, in the table's input order
    theirs: np.ndarray  # their output
    local: np.ndarray  # our layer on their inputs
    x_ours: np.ndarray | None = None  # our input batch, when this layer reads the image
    skipped: dict | None = None  # {input position: (layer we ran to fill a gap, that layer's input)}
    earlier: dict | None = None  # their earlier activations {name: array}, for a mis-wired input
    readers: dict | None = None  # their outputs of the layers that read this one {name: array}

    @property
    def params(self) -> dict:
        w = self.model.weights
        return {k.split("/", 1)[1]: v for k, v in w.items() if k.split("/", 1)[0] == self.name}


@dataclass
class Candidate:
    cause: str  # the hypothesis' name
    explanation: str  # what the user reads: "epsilon ≈ 1e-05 (Keras uses 0.001)"
    output: np.ndarray  # their layer's output under this cause
    parameter: object = None  # the fitted value, when there is one


@dataclass
class Diagnosis:
    cause: str
    explanation: str
    parameter: object
    residual: float  # max |candidate - theirs| / max |theirs|: what the cause leaves unexplained


# ---- BatchNormalization -------------------------------------------------------------

def _bn(x, params, *, epsilon=None, gamma=None, beta=None, mean=None, var=None):
    p = params
    return ops.batch_norm(
        x, p["gamma"] if gamma is None else gamma, p["beta"] if beta is None else beta,
        p["moving_mean"] if mean is None else mean, p["moving_variance"] if var is None else var,
        epsilon=CONFIG.bn_epsilon if epsilon is None else epsilon, impl="reference")


def bn_epsilon(case: Case) -> Candidate | None:
    """A different BN epsilon (PyTorch's default is 1e-5), fitted from their output.

    Per channel, ``y - beta = s * gamma * (x - mean)`` with ``s = 1/sqrt(var + eps)``:
    the least-squares ``s`` gives ``eps = 1/s^2 - var``; the median over channels
    is the fit, robust to channels where x is nearly constant.
    """
    p = case.params
    c = case.inputs[0].shape[-1]
    # 4096 pixels per channel fix s to ~1e-9 against float32 round-off (eps to ~2e-9);
    # every pixel of a 147x147 map would only cost time.
    step = max(1, case.inputs[0].size // c // 4096)
    x = case.inputs[0].reshape(-1, c)[::step].astype(np.float64)
    y = case.theirs.reshape(-1, c)[::step].astype(np.float64)
    u = p["gamma"] * (x - p["moving_mean"])
    t = y - p["beta"]
    den = (u * u).sum(0)
    s = np.divide((t * u).sum(0), den, out=np.full_like(den, np.nan), where=den > 0)
    good = np.isfinite(s) & (s > 0)
    if not good.any():
        return None
    eps = float(np.median(1.0 / s[good] ** 2 - p["moving_variance"][good]))
    if not np.isfinite(eps) or eps < 0 or np.isclose(eps, CONFIG.bn_epsilon, rtol=1e-2):
        return None
    return Candidate("bn_epsilon", f"epsilon ≈ {eps:.2g} (Keras uses {CONFIG.bn_epsilon:g})",
                     _bn(case.inputs[0], p, epsilon=eps), eps)


def bn_batch_statistics(case: Case) -> Candidate | None:
    """BN run in training mode: the batch's mean and variance instead of the moving ones."""
    x = case.inputs[0]
    axes = tuple(range(x.ndim - 1))
    return Candidate("bn_batch_statistics", "batch statistics instead of the moving mean and variance "
                     "(the port ran BN in training mode)",
                     _bn(x, case.params, mean=x.mean(axes), var=x.var(axes)))


def bn_missing(case: Case) -> Candidate:
    """No BN at all: their layer passes its input through."""
    return Candidate("bn_missing", "missing BatchNormalization (their output is its input)", case.inputs[0])


def bn_gamma_beta_swapped(case: Case) -> Candidate:
    """gamma and beta loaded into each other's place."""
    p = case.params
    return Candidate("bn_gamma_beta_swapped", "gamma and beta swapped",
                     _bn(case.inputs[0], p, gamma=p["beta"], beta=p["gamma"]))


# ---- windowed ops: padding, window and stride -------------------------------------------

def _padded(x, pads, fill):
    (t, b), (l, r) = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)


def _symmetric(x, k, s):
    """PyTorch's ``padding=k//2``: the same on every side; output ``floor((H + 2p - k) / s) + 1``."""
    p = k // 2
    return ((p, p), (p, p))


def _pool(x, k, s, pads, fill=-np.inf):
    return ops.max_pool2d(_padded(x, pads, fill), pool_size=k, strides=s, padding="valid", impl="reference")


def _same_pads(x, k, s):
    return tuple(ops.same_padding(x.shape[i], k, s) for i in (1, 2))


def pool_symmetric_padding(case: Case) -> Candidate | None:
    """Max-pool padded symmetrically (PyTorch ``MaxPool2d(3, 2, padding=1)``) instead of TF SAME,
    which puts the odd pixel bottom/right: they differ when the input size is even."""
    layer, x = case.spec, case.inputs[0]
    pads = _symmetric(x, layer.kernel_size, layer.strides)
    if pads == _same_pads(x, layer.kernel_size, layer.strides):
        return None
    return Candidate("pool_symmetric_padding",
                     f"symmetric padding {pads[0][0]}/{pads[0][1]} instead of TF SAME "
                     f"{'/'.join(map(str, _same_pads(x, layer.kernel_size, layer.strides)[0]))} (top/bottom) "
                     f"on the {x.shape[1]}x{x.shape[2]} map",
                     _pool(x, layer.kernel_size, layer.strides, pads), pads[0][0])


def pool_zero_padding(case: Case) -> Candidate | None:
    """SAME padding filled with 0 instead of -inf: a negative border window then returns 0."""
    layer, x = case.spec, case.inputs[0]
    if layer.padding != "same":
        return None
    return Candidate("pool_zero_padding", "padding filled with 0 instead of -inf",
                     _pool(x, layer.kernel_size, layer.strides, _same_pads(x, layer.kernel_size, layer.strides), 0.0))


def pool_ceil_mode(case: Case) -> Candidate:
    """PyTorch ``ceil_mode=True`` without padding: ``ceil((H - k) / s) + 1`` windows, the last ones
    running off the bottom/right edge."""
    layer, x = case.spec, case.inputs[0]
    k, s = layer.kernel_size, layer.strides
    pads = []
    for size in x.shape[1:3]:
        out = -(-(size - k) // s) + 1
        if (out - 1) * s >= size:  # PyTorch drops a last window that starts in the padding
            out -= 1
        pads.append((0, max((out - 1) * s + k - size, 0)))
    return Candidate("pool_ceil_mode", "ceil_mode=True without padding", _pool(x, k, s, tuple(pads)))


def pool_window_off_by_one(case: Case) -> Candidate | None:
    """A pool window one larger or smaller than Keras' (3x3), with SAME padding."""
    layer, x = case.spec, case.inputs[0]
    best = None
    for k in (layer.kernel_size - 1, layer.kernel_size + 1):
        if k < 1:
            continue
        y = _pool(x, k, layer.strides, _same_pads(x, k, layer.strides))
        if y.shape == case.theirs.shape:
            err = np.abs(y - case.theirs).max()
            if best is None or err < best[0]:
                best = (err, k, y)
    if best is None:
        return None
    return Candidate("pool_window", f"pool window {best[1]}x{best[1]} instead of "
                     f"{layer.kernel_size}x{layer.kernel_size}", best[2], best[1])


def pool_stride_off_by_one(case: Case) -> Candidate | None:
    """A pool stride one larger or smaller than Keras' (2), with SAME padding."""
    layer, x = case.spec, case.inputs[0]
    for s in (layer.strides - 1, layer.strides + 1):
        if s >= 1:
            y = _pool(x, layer.kernel_size, s, _same_pads(x, layer.kernel_size, s))
            if y.shape == case.theirs.shape:
                return Candidate("pool_stride", f"pool stride {s} instead of {layer.strides}", y, s)
    return None


# ---- convolutions -------------------------------------------------------------------------

def _conv(case, x=None, kernel=None, depthwise=None, pads=None, padding=None):
    """Our conv / sepconv layer with one thing replaced."""
    layer, p = case.spec, case.params
    x = case.inputs[0] if x is None else x
    padding = layer.padding if padding is None else padding
    if pads is not None:
        x, padding = _padded(x, pads, 0.0), "valid"
    if layer.kind == "conv":
        k = p["kernel"] if kernel is None else kernel
        return ops.conv2d(x, k, strides=layer.strides, padding=padding)
    d = p["depthwise_kernel"] if depthwise is None else depthwise
    pw = p["pointwise_kernel"] if kernel is None else kernel
    return ops.separable_conv2d(x, d, pw, strides=layer.strides, padding=padding)


def conv_symmetric_padding(case: Case) -> Candidate | None:
    """PyTorch-style ``padding=k//2`` on every side instead of TF's rule (VALID, or SAME with the
    odd pixel bottom/right)."""
    layer, x = case.spec, case.inputs[0]
    pads = _symmetric(x, layer.kernel_size, layer.strides)
    if pads[0][0] == 0 or (layer.padding == "same" and pads == _same_pads(x, layer.kernel_size, layer.strides)):
        return None
    rule = "VALID" if layer.padding == "valid" else "TF SAME"
    return Candidate("conv_symmetric_padding", f"padding {pads[0][0]} on every side instead of {rule}",
                     _conv(case, pads=pads), pads[0][0])


def conv_same_for_valid(case: Case) -> Candidate | None:
    """SAME padding where Keras pads VALID (the article's stem: 299 -> 150 -> 150)."""
    if case.spec.padding != "valid":
        return None
    return Candidate("conv_same_padding", "SAME padding instead of VALID", _conv(case, padding="same"))


def conv_kernel_hw_swapped(case: Case) -> Candidate | None:
    """kh and kw swapped (a wrong transpose when converting HWIO <-> OIHW)."""
    p = case.params
    if case.spec.kind == "conv":
        if p["kernel"].shape[0] == 1:
            return None
        return Candidate("kernel_hw_swapped", "kernel height and width swapped",
                         _conv(case, kernel=p["kernel"].transpose(1, 0, 2, 3)))
    return Candidate("kernel_hw_swapped", "depthwise kernel height and width swapped",
                     _conv(case, depthwise=p["depthwise_kernel"].transpose(1, 0, 2, 3)))


def conv_kernel_read_as_oihw(case: Case) -> Candidate:
    """The Keras HWIO kernel's memory read as PyTorch OIHW (a reshape where a transpose was needed)."""
    p = case.params
    name = "kernel" if case.spec.kind == "conv" else "pointwise_kernel"
    kh, kw, ci, co = p[name].shape
    k = np.ascontiguousarray(p[name]).reshape(co, ci, kh, kw).transpose(2, 3, 1, 0)
    what = "kernel" if name == "kernel" else "pointwise kernel"
    return Candidate("kernel_read_as_oihw", f"HWIO {what} read as OIHW (reshaped, not transposed)",
                     _conv(case, kernel=k))


def depthwise_channel_order(case: Case) -> Candidate | None:
    """The depthwise kernel's channels in reverse order (a flip along the wrong axis)."""
    if case.spec.kind != "sepconv":
        return None
    d = case.params["depthwise_kernel"]
    return Candidate("depthwise_channel_order", "depthwise kernel channels in reverse order",
                     _conv(case, depthwise=d[:, :, ::-1, :]))


def conv_extra_bias(case: Case) -> Candidate | None:
    """A bias Keras does not have (Xception's convolutions use none): a per-channel offset."""
    if case.local.shape != case.theirs.shape:
        return None
    axes = tuple(range(case.local.ndim - 1))
    b = (case.theirs.astype(np.float64) - case.local).mean(axes)
    return Candidate("extra_bias", f"an extra bias (a per-channel offset, max |b| {np.abs(b).max():.3g})",
                     (case.local + b).astype(case.local.dtype), float(np.abs(b).max()))


# ---- activations -----------------------------------------------------------------------------

def relu6(case: Case) -> Candidate:
    """ReLU6 (``min(max(x, 0), 6)``, MobileNet's) instead of ReLU."""
    return Candidate("relu6", "ReLU6 instead of ReLU", np.clip(case.inputs[0], 0, 6))


def relu_missing(case: Case) -> Candidate:
    """No activation: their layer passes its input through."""
    return Candidate("relu_missing", "missing ReLU (their output is its input)", case.inputs[0])


def extra_relu_on_input(case: Case) -> Candidate | None:
    """A ReLU on one input of an add that Keras does not have (the article's ReLU after the third
    middle-flow BN, before the Add)."""
    if case.kind != "add":
        return None
    best = None
    for i in range(len(case.inputs)):
        ins = [np.maximum(a, 0) if j == i else a for j, a in enumerate(case.inputs)]
        y = ops.add(ins[0], ins[1], impl="reference")
        err = np.abs(y - case.theirs).max()
        if best is None or err < best[0]:
            best = (err, i, y)
    src = case.input_names[best[1]]
    return Candidate("extra_relu_before", f"an extra ReLU on {src} before this add", best[2], src)


def extra_relu_after(case: Case) -> Candidate | None:
    """An extra ReLU after the layer."""
    if case.kind == "relu" or case.local.shape != case.theirs.shape:
        return None
    return Candidate("extra_relu_after", "an extra ReLU after this layer", np.maximum(case.local, 0))


def wrong_input(case: Case) -> Candidate | None:
    """The layer reads a different tensor of the same shape (the article's residuals of blocks 3
    and 4 take the previous residual branch instead of the block output)."""
    if not case.earlier or len(case.inputs) != 1:
        return None
    want = case.inputs[0].shape
    best = None
    for name, a in case.earlier.items():
        if name != case.input_names[0] and a.shape == want:
            y = case.model.run_layer(case.name, [a])
            if y.shape == case.theirs.shape:
                err = np.abs(y - case.theirs).max()
                if best is None or err < best[0]:
                    best = (err, name, y)
    if best is None:
        return None
    return Candidate("wrong_input", f"reads {best[1]} instead of {case.input_names[0]}", best[2], best[1])


def overwritten_in_place(case: Case) -> Candidate | None:
    """Their dump holds, for this layer, exactly the output of a layer that reads it: an in-place
    op (``ReLU(inplace=True)``, ``x += skip``) overwrote the tensor after a forward hook kept a
    reference to it. The port may be right; the dump is not (clone in the hook)."""
    for name, a in (case.readers or {}).items():
        if a.shape == case.theirs.shape and np.array_equal(a, case.theirs):
            # an extra ReLU before a ReLU leaves the same two tensors: a dump cannot tell them apart
            also = " or an extra ReLU here" if (case.theirs >= 0).all() else ""
            return Candidate("overwritten_in_place", f"their value is {name}'s output: overwritten in place "
                             f"after it was hooked (dump with .clone()){also}", case.theirs, name)
    return None


def skipped_layer(case: Case) -> Candidate | None:
    """Their port has no layer where we have one: an input their side does not expose was filled by
    running our layer, and feeding that layer's own input instead reproduces their output (the
    article pools block14_sepconv2_bn with no ReLU)."""
    if not case.skipped:
        return None
    for pos, (gap, gap_input) in case.skipped.items():
        ins = list(case.inputs)
        ins[pos] = gap_input
        y = case.model.run_layer(case.name, ins)
        if y.shape == case.theirs.shape:
            return Candidate("skipped_layer", f"their port has no {gap}: this layer reads its input directly",
                             y, gap)
    return None


# ---- the classifier ----------------------------------------------------------------------------

def _softmax(z):
    return ops.softmax(z.astype(np.float64), impl="reference").astype(z.dtype)


def output_logits(case: Case) -> Candidate | None:
    """Logits compared with probabilities: one side applies softmax, the other does not."""
    if case.kind not in ("dense", "activation"):
        return None
    act = case.spec.get("activation")
    if act == "softmax":
        p = case.params
        logits = case.inputs[0] @ p["kernel"] + p.get("bias", 0) if case.kind == "dense" else case.inputs[0]
        return Candidate("output_logits", "their output is logits, ours probabilities (softmax missing)",
                         logits.astype(case.local.dtype))
    if act in (None, "linear"):
        return Candidate("output_probabilities", "their output is probabilities, ours logits (an extra softmax)",
                         _softmax(case.local))
    return None


def dense_missing_bias(case: Case) -> Candidate | None:
    """The classifier's bias not loaded (or zero)."""
    p = case.params
    if case.kind != "dense" or "bias" not in p:
        return None
    from ..head import activation

    y = activation(case.inputs[0] @ p["kernel"], case.spec.get("activation"), "reference")
    return Candidate("dense_missing_bias", "the dense layer's bias is missing", y)


def dense_kernel_transposed(case: Case) -> Candidate | None:
    """A PyTorch ``Linear`` weight ``(out, in)`` read as Keras' ``(in, out)`` by a reshape."""
    p = case.params
    if case.kind != "dense":
        return None
    from ..head import activation

    fi, fo = p["kernel"].shape
    k = np.ascontiguousarray(p["kernel"]).reshape(fo, fi).T
    y = activation(case.inputs[0] @ k + p.get("bias", 0), case.spec.get("activation"), "reference")
    return Candidate("dense_kernel_layout", "dense kernel (out, in) read as (in, out)", y.astype(case.local.dtype))


# ---- the input ---------------------------------------------------------------------------------

def _raw(x):
    """Our tf-mode input back in [0, 255]: x = raw / 127.5 - 1."""
    return (x.astype(np.float64) + 1.0) * CONFIG.preprocess_scale


def input_bgr(x):
    """BGR channel order instead of RGB."""
    return "BGR channel order instead of RGB", x[..., ::-1]


def input_caffe(x):
    """Keras' "caffe" preprocess_input (BGR, ImageNet means subtracted, no scaling) instead of "tf"."""
    return ("caffe preprocessing (BGR minus ImageNet means) instead of tf's x/127.5 - 1",
            _raw(x)[..., ::-1] - np.array(CAFFE_MEAN_BGR))


def input_torch(x):
    """Keras' "torch" preprocess_input (x/255 normalised by ImageNet mean and std) instead of "tf"."""
    return ("torch preprocessing ((x/255 - mean) / std) instead of tf's x/127.5 - 1",
            (_raw(x) / 255.0 - np.array(TORCH_MEAN)) / np.array(TORCH_STD))


def input_nchw_as_nhwc(x):
    """An NHWC batch's memory read as NCHW (a reshape where a transpose was needed)."""
    n, h, w, c = x.shape
    return "NHWC input read as NCHW (reshaped, not transposed)", \
        np.ascontiguousarray(x).reshape(n, c, h, w).transpose(0, 2, 3, 1)


def input_hw_transposed(x):
    """Height and width swapped (an NCHW/NHWC transpose with the wrong axis order)."""
    return "image transposed (height and width swapped)", x.transpose(0, 2, 1, 3)


INPUT_TRANSFORMS = {
    "input_bgr": input_bgr, "input_caffe": input_caffe, "input_torch": input_torch,
    "input_nchw_as_nhwc": input_nchw_as_nhwc, "input_hw_transposed": input_hw_transposed,
}


def input_candidates(x, run=None):
    """Every input hypothesis as a Candidate: the transformed input itself (``run`` None, for
    the dumped input) or the first layer run on it."""
    for cause, transform in INPUT_TRANSFORMS.items():
        text, xt = transform(x)
        xt = xt.astype(x.dtype)
        yield Candidate(cause, text, xt if run is None else run(xt))


# ---- the catalogue ------------------------------------------------------------------------------

CATALOGUE: dict[str, list[Callable]] = {
    "bn": [bn_epsilon, bn_batch_statistics, bn_missing, bn_gamma_beta_swapped],
    "batch_norm": [bn_epsilon, bn_missing, bn_gamma_beta_swapped],
    "maxpool": [pool_symmetric_padding, pool_zero_padding, pool_ceil_mode, pool_window_off_by_one,
                pool_stride_off_by_one],
    "conv": [conv_same_for_valid, conv_symmetric_padding, conv_kernel_hw_swapped, conv_kernel_read_as_oihw,
             conv_extra_bias],
    "sepconv": [conv_symmetric_padding, conv_kernel_hw_swapped, conv_kernel_read_as_oihw,
                depthwise_channel_order, conv_extra_bias],
    "relu": [relu6, relu_missing],
    "add": [extra_relu_on_input],
    "dense": [output_logits, dense_missing_bias, dense_kernel_transposed],
    "activation": [output_logits],
}
GENERIC = [skipped_layer, extra_relu_after, wrong_input]
FIRST = [overwritten_in_place]  # evidence about the dump itself, tested before any cause in the port


def _residual(y, theirs):
    if y.shape != theirs.shape or not np.isfinite(y).all():
        return None
    max_abs, _, _, scale = errors(y, theirs)
    return max_abs, scale


def best_of(candidates, theirs, rtol, atol) -> Diagnosis | None:
    """The candidate that reproduces ``theirs`` within tolerance with the smallest residual."""
    best = None
    for c in candidates:
        if c is None:
            continue
        r = _residual(c.output, theirs)
        if r is None or r[0] > atol + rtol * r[1]:
            continue
        rel = r[0] / r[1] if r[1] > 0 else 0.0
        if best is None or rel < best.residual:
            best = Diagnosis(c.cause, c.explanation, c.parameter, rel)
        if rel <= 0.01 * rtol:
            # round-off level: nothing can fit better, and the remaining candidates (each a
            # pass over the layer) would double compare's time on a port with 40 sources
            break
    return best


def _tried(hypothesis, case):
    """A hypothesis' candidate, or None when their tensors do not fit it (a shape our ops refuse)."""
    try:
        return hypothesis(case)
    except ValueError:
        return None


def diagnose(case: Case, rtol: float, atol: float) -> Diagnosis | None:
    """Test the catalogue on one source layer; the best explanation, or None."""
    if case.x_ours is not None:
        found = best_of(input_candidates(case.x_ours, lambda xt: case.model.run_layer(case.name, [xt])),
                        case.theirs, rtol, atol)
        if found:
            return found
    found = best_of((h(case) for h in FIRST), case.theirs, rtol, atol)
    if found:
        return found
    found = best_of((_tried(h, case) for h in CATALOGUE.get(case.kind, [])), case.theirs, rtol, atol)
    if found:
        return found
    return best_of((_tried(h, case) for h in GENERIC), case.theirs, rtol, atol)
