"""The classifier: logits against probabilities, a missing bias, a transposed kernel."""

from __future__ import annotations

import numpy as np

from ... import ops
from ...head import activation
from .case import Candidate, Case


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
    y = activation(case.inputs[0] @ p["kernel"], case.spec.get("activation"), "reference")
    return Candidate("dense_missing_bias", "the dense layer's bias is missing", y)


def dense_kernel_transposed(case: Case) -> Candidate | None:
    """A PyTorch ``Linear`` weight ``(out, in)`` read as Keras' ``(in, out)`` by a reshape."""
    p = case.params
    if case.kind != "dense":
        return None
    fi, fo = p["kernel"].shape
    k = np.ascontiguousarray(p["kernel"]).reshape(fo, fi).T
    y = activation(case.inputs[0] @ k + p.get("bias", 0), case.spec.get("activation"), "reference")
    return Candidate("dense_kernel_layout", "dense kernel (out, in) read as (in, out)", y.astype(case.local.dtype))

