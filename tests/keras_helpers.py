"""Test helpers shared by the whole-network tests: random Keras weights that exercise BN.

Randomising the BatchNorm statistics matters: with Keras' initial mean 0 and
variance 1, BN is nearly the identity and hides bugs (a wrong epsilon, swapped
mean/variance, a missing BN). Kernels are He-normal so activations keep their
scale through the 36 convolutional layers.
"""

from __future__ import annotations

import numpy as np


def random_keras_weights(layer, rng):
    """Random arrays for one Keras layer, by the role of each variable."""
    out = []
    cls = type(layer).__name__
    for w in layer.weights:
        shape = tuple(w.shape)
        name = w.name.split("/")[-1].split(":")[0]
        dtype = np.dtype(w.dtype if isinstance(w.dtype, str) else w.dtype.name)
        if cls == "BatchNormalization":
            if name == "gamma":
                a = rng.uniform(0.5, 1.5, shape)
            elif name == "beta":
                a = rng.normal(0.0, 0.1, shape)
            elif name == "moving_mean":
                a = rng.normal(0.0, 0.5, shape)
            else:  # moving_variance: away from 1, never near 0
                a = rng.uniform(0.5, 2.0, shape)
        elif name == "bias":
            a = rng.normal(0.0, 0.1, shape)
        elif name == "depthwise_kernel":
            a = rng.normal(0.0, np.sqrt(2.0 / (shape[0] * shape[1])), shape)
        else:  # kernel, pointwise_kernel
            a = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        out.append(a.astype(dtype))
    return out


def randomize(model, seed=0):
    """Give every layer of a Keras model (nested models included) random weights."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "layers"):
            randomize(layer, int(rng.integers(1 << 30)))
        elif layer.weights:
            layer.set_weights(random_keras_weights(layer, rng))
    return model


def first_divergence(ours: dict, theirs: dict, order, rtol):
    """The first layer (in network order) whose activations differ, with ours-vs-theirs detail."""
    for name in order:
        a, b = ours[name], theirs[name]
        if a.shape != b.shape:
            return f"{name}: shape ours {a.shape} vs theirs {b.shape}"
        scale = max(float(np.abs(b).max()), 1e-30)
        err = float(np.abs(a.astype(np.float64) - b).max())
        if err > rtol * scale:
            i = np.unravel_index(np.abs(a - b).argmax(), a.shape)
            return (f"{name}: max |ours - theirs| = {err:.3g} > {rtol:g} * max|theirs| ({scale:.3g}); "
                    f"at {i}: ours {a[i]!r} vs theirs {b[i]!r}")
    return None


def calibrate_batchnorm(model, x, seed=0):
    """Give every BatchNormalization of a plain functional Keras model (Keras 3 or tf_keras) random
    statistics around the ones ``x`` gives it, as a trained model's are; return the model.

    :func:`randomize`'s statistics (mean ~N(0, 0.5), variance ~U(0.5, 2)) do not normalise: each residual
    block then adds a branch as large as the stream, which grows ~1.5x a block (measured on Xception at
    71x71: 5e4 by block 11), past float16's 65504. A model trained in mixed_float16 does not overflow, so
    mixed-precision tests need this: each BN's moving mean is its input's batch mean plus N(0, 0.1) of its
    std, its variance the batch variance times U(0.7, 1.4), gamma U(0.5, 1.5) and beta N(0, 0.1). The layers
    run one by one in the model's order on ``x``, in the model's own dtype policy.
    """
    rng = np.random.default_rng(seed)
    outputs = {}
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            outputs[layer.name] = x
            continue
        tensors = layer._inbound_nodes[0].input_tensors
        tensors = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
        inputs = [outputs[t._keras_history[0].name] for t in tensors]
        feed = inputs[0] if len(inputs) == 1 else inputs
        if type(layer).__name__ == "BatchNormalization":
            a = np.asarray(feed, np.float64)
            mean, var = a.mean(axis=(0, 1, 2)), a.var(axis=(0, 1, 2))
            shape, dtype = mean.shape, np.dtype(layer.weights[0].dtype if isinstance(layer.weights[0].dtype, str)
                                                else layer.weights[0].dtype.name)
            layer.set_weights([a.astype(dtype) for a in (
                rng.uniform(0.5, 1.5, shape), rng.normal(0.0, 0.1, shape),
                mean + rng.normal(0.0, 0.1, shape) * np.sqrt(var), var * rng.uniform(0.7, 1.4, shape))])
        outputs[layer.name] = np.asarray(layer(feed, training=False))
    return model


def keras_predict(model, x):
    """``model.predict(x, verbose=0)`` as arrays: the answer of the model that wrote a file, which the
    brief names as the reference for converted files. Not ``model(x, training=False)``, although for
    one batch it runs the same layers in inference mode: predict is what users call, traced into a
    graph by Keras' own predict step, so a difference between the two would be Keras' to explain and
    our tests would see the one users see."""
    out = model.predict(x, verbose=0)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)
