"""ActivationOverflow: a finite input whose output is not finite, found by reading the output only.

Keras returns the NaN silently; a reference must not (BRIEF: "never a NaN"). ``model(x)`` checks its
output with :func:`check_finite_output`, and :mod:`npxception.prediction` names the photos an
overflow hit. A leaf module (NumPy only), so that both can import it without importing the model.
"""

from __future__ import annotations

import numpy as np


class ActivationOverflow(FloatingPointError):
    """A finite input gave a non-finite output: an activation overflowed the model's float range inside
    the network (Keras returns the NaN silently). ``output`` holds the output anyway, ``rows`` the images
    whose output is not finite, ``reason`` the message without the images' names (:meth:`naming`)."""

    def __init__(self, reason, output, rows, names=None):
        names = names if names is not None else [f"image {r}" for r in rows]
        super().__init__(f"model: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}: the output is NaN "
                         f"or Inf: {reason}")
        self.reason, self.output, self.rows = reason, output, rows

    def naming(self, names) -> "ActivationOverflow":
        """The same error naming the images ``names[row]`` (their files) instead of their rows."""
        return ActivationOverflow(self.reason, self.output, self.rows, [names[r] for r in self.rows])


def check_finite_output(y, x, locate=None) -> np.ndarray:
    """``y`` when it is all finite, else :class:`ActivationOverflow` saying so. ``x`` (finite: the inputs
    are checked) is what the backbone read. The check reads the output only: N x classes numbers for a
    classifier, a small fraction of the network's work for a feature map. ``locate(row)``: the first
    layer whose output is not finite for image ``row`` (or None), called only once the output is not."""
    if np.isfinite(y).all():
        return y
    rows = np.flatnonzero(~np.isfinite(y.reshape(y.shape[0], -1)).all(axis=1))
    big = float(np.abs(x[rows]).max())
    layer = locate(int(rows[0])) if locate is not None else None
    raise ActivationOverflow(
        f"activations overflowed the {y.dtype} range (largest {np.finfo(y.dtype).max:.4g}) inside the network, "
        f"although the input is finite; the input the backbone read has values up "
        f"to {big:.4g} (preprocess_input gives [-1, 1])"
        + (f"; the first layer whose output is NaN or Inf is {layer} (the first such image run layer by layer: "
           "check its weights and its input)" if layer is not None else "")
        + ("; model.astype('float64') has a wider range" if y.dtype == np.float32 else ""), y, rows)
