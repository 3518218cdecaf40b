"""BatchNormalization: another epsilon, batch statistics, no BN, gamma and beta swapped."""

from __future__ import annotations

import numpy as np

from ... import ops
from ...config import CONFIG
from .case import Candidate, Case


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
    eps = _fitted_epsilon(case, p)
    if eps is None:
        return None
    return Candidate("bn_epsilon", f"epsilon ≈ {eps:.2g} (Keras uses {CONFIG.bn_epsilon:g})",
                     _bn(case.inputs[0], p, epsilon=eps), eps)


def _fitted_epsilon(case: Case, p: dict) -> float | None:
    """The epsilon that best explains their output with BN weights ``p`` (:func:`bn_epsilon`), or None when
    none does or it is Keras' own."""
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
    return eps


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



def bn_shift_missing(case: Case) -> Candidate | None:
    """BN scaled and not shifted: ``y = gamma * x / sqrt(var + eps)``, without ``beta - moving_mean * s``.
    A fold that drops the fused bias leaves exactly that (the convolution keeps ``W * s``, loses
    ``b = beta - moving_mean * s``). ``s`` is fitted per channel through the origin, ``eps = (gamma / s)^2
    - var`` as in :func:`bn_epsilon`; Keras' epsilon when the fit gives it or none > 0."""
    p = case.params
    c = case.inputs[0].shape[-1]
    if case.theirs.shape != case.inputs[0].shape:
        return None
    step = max(1, case.inputs[0].size // c // 4096)  # as bn_epsilon
    x = case.inputs[0].reshape(-1, c)[::step].astype(np.float64)
    y = case.theirs.reshape(-1, c)[::step].astype(np.float64)
    den = (x * x).sum(0)
    s = np.divide((x * y).sum(0), den, out=np.full_like(den, np.nan), where=den > 0)
    good = np.isfinite(s) & (s != 0)
    eps = float(np.median((p["gamma"][good] / s[good]) ** 2 - p["moving_variance"][good])) if good.any() else np.nan
    keras = not np.isfinite(eps) or eps <= 0 or np.isclose(eps, CONFIG.bn_epsilon, rtol=1e-2)
    eps = CONFIG.bn_epsilon if keras else eps
    scale = p["gamma"] / np.sqrt(p["moving_variance"] + eps)
    what = ("the fused bias beta - moving_mean * s missing: BN folded into the convolution without it"
            if case.skipped and 0 in case.skipped else "BN's shift beta - moving_mean * s missing")
    return Candidate("bn_shift_missing", f"{what} (s = gamma / sqrt(var + eps)"
                     f"{')' if keras else f', epsilon ≈ {eps:.2g}; Keras uses {CONFIG.bn_epsilon:g})'}",
                     (case.inputs[0] * scale).astype(case.local.dtype), eps)
