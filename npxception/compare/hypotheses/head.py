"""The classifier: logits against probabilities, a missing bias, a transposed kernel, a Flatten's feature order."""

from __future__ import annotations

import numpy as np

from ... import head_schema
from ... import ops
from ...head import activation, flatten
from .case import Candidate, Case, closest


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


def global_max_for_avg(case: Case) -> Candidate | None:
    """Global max pooling where Keras averages (``AdaptiveMaxPool2d`` for ``AdaptiveAvgPool2d``)."""
    x = case.inputs[0]
    if case.kind != "global_avg_pool" or x.ndim != 4:
        return None
    return Candidate("global_max_for_avg", "global max pooling instead of average pooling", x.max((1, 2)))


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



def dense_classes_permuted(case: Case) -> Candidate | None:
    """Their classes in another order: the classifier's rows (a PyTorch ``Linear``'s output rows, with its
    bias) permuted, as a label file in another order or a re-indexed fine-tune leaves them. Each of their
    classes is matched to the class of ours whose outputs, over the batch, are nearest; a match that is not
    one to one is no permutation. The fitted parameter: ``perm``, their class ``j`` is our class ``perm[j]``."""
    if case.kind not in ("dense", "activation") or case.local.ndim != 2 or case.local.shape != case.theirs.shape:
        return None
    ours, theirs = case.local.astype(np.float64), case.theirs.astype(np.float64)
    if ours.shape[1] < 2:
        return None
    dist = ((theirs[:, :, None] - ours[:, None, :]) ** 2).sum(0)  # (their class, our class)
    perm = dist.argmin(1)
    if len(set(perm.tolist())) != len(perm) or (perm == np.arange(len(perm))).all():
        return None
    moved = [f"{j}<-{int(p)}" for j, p in enumerate(perm) if j != p]
    shown = ", ".join(moved[:6]) + (" ..." if len(moved) > 6 else "")
    return Candidate("classes_permuted", f"their classes in another order ({len(moved)} of {len(perm)} moved; their "
                     f"class <- ours: {shown}): the classifier's rows permuted, a label order that differs",
                     case.local[:, perm], [int(p) for p in perm])


def extra_class(case: Case) -> Candidate | None:
    """Their classifier has one class more than ours: a background class (TF-slim's and the original
    Inception checkpoints' 1001 outputs: "background" at index 0), or one appended at the end. Ours, with
    their extra column put back: probabilities renormalised (their softmax over 1001 classes is ours times
    1 - p(extra)), logits as they are. The fitted parameter: the extra column's index."""
    if case.kind not in ("dense", "activation") or case.local.ndim != 2 or case.theirs.ndim != 2:
        return None
    n, k = case.local.shape
    if case.theirs.shape != (n, k + 1):
        return None
    act = case.spec.get("activation")
    found = None
    for i in (0, k):
        extra = case.theirs[:, i:i + 1].astype(np.float64)
        ours = case.local.astype(np.float64) * (1.0 - extra) if act == "softmax" else case.local.astype(np.float64)
        y = np.insert(ours, i, extra[:, 0], axis=1)
        err = np.abs(y - case.theirs).max()
        if found is None or err < found[0]:
            found = (err, i, y)
    _, i, y = found
    where = "at index 0 (a background class, as 1001-class ImageNet heads have it)" if i == 0 else f"at the end (index {i})"
    return Candidate("extra_class", f"their classifier has one class more than ours ({k + 1} vs {k}), {where}: "
                     "the other classes agree once it is dropped", y.astype(case.theirs.dtype), i)


def _axes(order: str) -> str:
    """``"chw"`` -> ``"(C, H, W)"``."""
    return "(" + ", ".join(order.upper()) + ")"


def flatten_order(case: Case) -> Candidate | None:
    """Their Flatten orders each image's features another way: a PyTorch port flattens its NCHW map with
    ``x.view(N, -1)``, features in (C, H, W) order, where Keras' Flatten gives (H, W, C) (its ``order``,
    :func:`npxception.head.flatten`). The Dense after it then reads each weight row against another feature.

    Tested at the flatten itself (their map in, their features out), and at the layer after it when their
    side does not expose the flatten (``x.view`` is no module: a hook dump of a PyTorch port holds no
    flatten output), from the map our fill of the flatten read (``case.skipped``): that layer run on the
    features in each other order. The order that reproduces their output is the fitted parameter.
    """
    flat = head_schema.flatten_step(case.model.head)
    if flat is None:
        return None
    if case.kind == "flatten":
        x = case.inputs[0]

        def run(features):
            return features
    else:
        gap = (case.skipped or {}).get(0)
        if gap is None or gap[0] != flat["name"]:
            return None
        x = gap[1]

        def run(features):
            return case.model.run_layer(case.name, [features])
    if x is None or np.ndim(x) != 4:
        return None
    found = closest(((order, run(flatten(x, order))) for order in head_schema.FLATTEN_ORDERS if order != flat["order"]),
                    case.theirs)
    if found is None:
        return None
    order, y = found
    where = "" if case.kind == "flatten" else f" (their side shows no {flat['name']} output: seen at {case.name})"
    return Candidate("flatten_order", f"their Flatten orders features {_axes(order)}; Keras {_axes(flat['order'])}"
                     f"{where}", y, order)


def dense_rows_follow_flatten(case: Case) -> Candidate | None:
    """The Dense after a Flatten diagnosed :func:`flatten_order` has its kernel's rows permuted to match
    that order (a converter that did reorder the weights for ``x.view(N, -1)``): consistent, their output is
    Keras' once their features are put back in Keras' order. The flatten row still differs, by a permutation."""
    flat = head_schema.flatten_step(case.model.head)
    if (case.kind != "dense" or flat is None or case.input_names[0] != flat["name"]
            or (case.input_causes or {}).get(flat["name"]) != "flatten_order"):
        return None
    n = case.inputs[0].shape[0]
    dims = dict(zip("hwc", flat["map_shape"]))

    def undone(order):  # their features, in ``order``, back in ours
        grid = case.inputs[0].reshape(n, *(dims[a] for a in order))
        return flatten(grid.transpose(0, *(1 + order.index(a) for a in "hwc")), flat["order"])

    found = closest(((order, case.model.run_layer(case.name, [undone(order)]))
                     for order in head_schema.FLATTEN_ORDERS if order != flat["order"]), case.theirs)
    if found is None:
        return None
    order, y = found
    return Candidate("dense_rows_follow_flatten", f"its kernel's rows follow their Flatten's {_axes(order)} order: "
                     "consistent with it, the same outputs as Keras'", y, order)
