"""Do two classifiers rank the classes the same way, beyond near-ties?

A saturated softmax (1 - 1e-9 for the top class) or sigmoid hides, within a tolerance of max|p| = 1, a
change of the other classes' scores that reorders them. Rankings are compared in log probability (logits
as they are: their differences are log probability differences), where that change shows. A near-tie (two
classes within the margin on either side) may rank either way in a correct port, and is not counted.
"""

from __future__ import annotations

import numpy as np

PROBABILITIES = ("softmax", "sigmoid")
# Two classes are ordered apart when their scores differ by more than this many rtol of the image's largest
# |score| (at least 1): 10 rtol is, in float32 (rtol 1e-4), a thousand times float32's round-off of a logit.
RANK_MARGIN = 10.0


def scores(a, activation) -> np.ndarray:
    """``(N, classes)`` scores whose differences are log-probability differences: log p of probabilities,
    logits (or values of unknown kind) as they are."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    return np.log(np.maximum(a, np.finfo(np.float64).tiny)) if activation in PROBABILITIES else a


def ranking_difference(ours, theirs, rtol, k=5) -> str:
    """Where the top-``k`` of two ``(N, classes)`` score batches (:func:`scores`) differ beyond near-ties, in
    words ("image 0: ours ranks class 3 above class 7, theirs below, by 2.1 and 0.9"), else ""."""
    s, t = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    if s.ndim != 2 or s.shape != t.shape or s.shape[1] < 2:
        return ""
    k = min(k, s.shape[1])
    for n in range(s.shape[0]):
        margin = RANK_MARGIN * rtol * max(1.0, np.abs(s[n]).max(), np.abs(t[n]).max())
        top_s, top_t = set(np.argsort(-s[n])[:k].tolist()), set(np.argsort(-t[n])[:k].tolist())
        pairs = [(a, b) for a in top_s - top_t for b in top_t - top_s]
        a0, b0 = int(np.argmax(s[n])), int(np.argmax(t[n]))
        if a0 != b0:
            pairs.insert(0, (a0, b0))
        for a, b in pairs:
            if s[n, a] - s[n, b] > margin and t[n, b] - t[n, a] > margin:
                return (f"image {n}: ours ranks class {a} above class {b}, theirs below, by {s[n, a] - s[n, b]:.3g} "
                        f"and {t[n, b] - t[n, a]:.3g} in log probability")
    return ""
