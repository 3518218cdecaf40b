"""Inference BatchNorm folded into a per-channel affine map, which the fused kernels apply in their epilogue."""

from __future__ import annotations

import numpy as np

from ..config import CONFIG


def fold_bn(gamma, beta, mean, var, eps):
    """An inference BN as a per-channel affine map: BN(z) = z * scale + shift.

    scale = gamma / sqrt(var + eps), shift = beta - scale * mean. Applied to a
    convolution's output channels it is the convolution with its kernel's last
    axis multiplied by ``scale``, plus a bias ``shift``.
    """
    scale = gamma / np.sqrt(var + gamma.dtype.type(eps))
    return scale.astype(gamma.dtype), (beta - scale * mean).astype(gamma.dtype)


def folded_bn(p, name):
    """BN layer ``name``'s weights in ``p`` (gamma, beta, moving mean and variance) as :func:`fold_bn`'s map, with
    Keras' epsilon (npxception/config.py)."""
    return fold_bn(*(p[f"{name}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")),
                   CONFIG.bn_epsilon)
