"""The plain forward pass: the architecture table run layer by layer, one op per layer.

This loop is the whole network, read from :mod:`npxception.architecture` (its
only description): each activation is kept under its Keras name until its last
reader has run, and any of them can be captured. ``impl`` picks every op's fast
kernel ("fast") or its readable twin ("reference": the float64 oracle's path).
The fused, BN-folded plan (npxception/fast/) runs the same table faster when
nothing is captured, and is tested against this loop.
"""

from __future__ import annotations

import numpy as np

from . import ops
from .config import CONFIG
from .head import run_head


def walk(model, x: np.ndarray, impl: str):
    """Every layer of the table in order, as ``(name, activation)``; each activation is dropped as soon
    as its last reader has run, so a caller keeps only what it holds on to. The last one yielded is the
    backbone's output."""
    p = model._params
    eps = CONFIG.bn_epsilon
    # How many later layers read each activation, so memory is freed early.
    readers: dict[str, int] = {}
    for layer in model.layers:
        for i in layer.inputs:
            readers[i] = readers.get(i, 0) + 1
    acts = {"input": x}
    for layer in model.layers:
        y = acts[layer.name] = run_layer(p, layer, [acts[i] for i in layer.inputs], eps, impl)
        yield layer.name, y
        for i in layer.inputs:
            readers[i] -= 1
            if readers[i] == 0:
                del acts[i]


def run(model, x: np.ndarray, wanted: set[str], impl: str, *, stop_early: bool = False):
    """The plain forward pass: every layer of the table, one op each; ``(output, {name: activation})``.

    ``model`` needs only ``layers``, ``head`` and ``_params`` (an XceptionModel, or a test's stand-in);
    ``wanted`` names the activations to keep, ``impl`` is "fast" or "reference". ``stop_early``: return
    ``(None, captured)`` as soon as every wanted backbone layer is captured, when no head layer is
    wanted; the layers after it would cost time and memory for nothing (``npxception show``).
    """
    captured = {}
    backbone = {layer.name for layer in model.layers}
    stop = stop_early and wanted and wanted <= backbone
    y = x
    for n, y in walk(model, x, impl):
        if n in wanted:
            captured[n] = y
            if stop and len(captured) == len(wanted):
                return None, captured
    y = run_head(model.head, model._params, y, impl, captured, wanted)
    return y, captured


def first_nonfinite(model, x: np.ndarray, impl: str) -> str | None:
    """The first layer (of the table, then the head) whose output holds a NaN or an Inf for the finite
    batch ``x``, run layer by layer; None if none does. Only for a batch already found to overflow (one
    image: the run keeps what :func:`run` keeps, and checks each activation once)."""
    y = x
    for n, y in walk(model, x, impl):
        if not np.isfinite(y).all():
            return n
    captured: dict = {}
    run_head(model.head, model._params, y, impl, captured, {h["name"] for h in model.head})
    return next((h["name"] for h in model.head if not np.isfinite(captured[h["name"]]).all()), None)


def run_layer(p, layer, ins, eps, impl):
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
