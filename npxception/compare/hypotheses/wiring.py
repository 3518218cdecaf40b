"""Activations and wiring: ReLU6, a missing or extra ReLU, a different input, a skipped layer,
and a dump overwritten in place."""

from __future__ import annotations

import numpy as np

from ... import ops
from .batchnorm import bn_epsilon
from .case import Candidate, Case, closest


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
    options = []
    for i in range(len(case.inputs)):
        ins = [np.maximum(a, 0) if j == i else a for j, a in enumerate(case.inputs)]
        options.append((case.input_names[i], ops.add(ins[0], ins[1], impl="reference")))
    found = closest(options, case.theirs)
    if found is None:
        return None
    src, y = found
    return Candidate("extra_relu_before", f"an extra ReLU on {src} before this add", y, src)


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
    found = closest(((name, case.model.run_layer(case.name, [a])) for name, a in case.earlier.items()
                     if name != case.input_names[0] and a.shape == want), case.theirs)
    if found is None:
        return None
    name, y = found
    return Candidate("wrong_input", f"reads {name} instead of {case.input_names[0]}", y, name)


# A reader "reproduces" its dumped output from their values at float32's default tolerance
# (precision.DEFAULT_RTOL): a reader fed the value before an in-place ReLU misses it by O(1)
# wherever that value was negative.
_FED_ON_RTOL = 1e-4


def _reproduced(case: Case, reader: str) -> bool:
    """Our layer ``reader`` run on their inputs (this layer's dumped value among them) gives their output;
    a reader of this layer's kind (the next residual add) with the same extra ReLU after it."""
    ins = (case.reader_inputs or {}).get(reader)
    if ins is None:
        return False
    y, theirs = case.model.run_layer(reader, ins), case.readers[reader]
    kind = next((n.kind for n in case.model.layers if n.name == reader), None)
    return y.shape == theirs.shape and any(np.abs(t - theirs).max() <= _FED_ON_RTOL * np.abs(theirs).max()
                                           for t in ([y, np.maximum(y, 0)] if kind == case.kind else [y]))


def overwritten_in_place(case: Case) -> Candidate | None:
    """Their dump holds, for this layer, exactly the output of a layer that reads it: an in-place
    op (``ReLU(inplace=True)``, ``x += skip``) overwrote the tensor after a forward hook kept a
    reference to it; the port may be right, the dump is not (clone in the hook). Unless this
    layer's other readers (a residual convolution, the next add) reproduce their outputs from
    that very value: the port fed it on, so the port has an extra ReLU here."""
    for name, a in (case.readers or {}).items():
        if a.shape == case.theirs.shape and np.array_equal(a, case.theirs):
            others = [r for r in case.readers if r != name]
            if others and (case.theirs >= 0).all() and all(_reproduced(case, r) for r in others):
                return Candidate("extra_relu_after", f"an extra ReLU after this layer (the port feeds it on: "
                                 f"their {' and '.join(others)} {'match' if len(others) > 1 else 'matches'} ours run on "
                                 "the ReLU'd value)",
                                 np.maximum(case.local, 0), others[0])
            # an extra ReLU before a ReLU leaves the same two tensors: a dump cannot tell them apart
            also = " or an extra ReLU here" if (case.theirs >= 0).all() else ""
            return Candidate("overwritten_in_place", f"their value is {name}'s output: overwritten in place "
                             f"after it was hooked (dump with .clone()){also}", case.theirs, name)
    return None


def add_input_overwritten(case: Case) -> Candidate | None:
    """An add whose input their dump holds overwritten in place by the add itself (``x += skip`` after a
    hook kept a reference to ``x``): that input was diagnosed :func:`overwritten_in_place` and holds
    exactly this add's output, so one addend is lost and the add cannot be checked locally from the
    dump. Its output is still compared with ours as any layer's (the accumulated error)."""
    if case.kind != "add":
        return None
    for name, a in zip(case.input_names, case.inputs):
        if (case.input_causes or {}).get(name) == "overwritten_in_place" and np.array_equal(a, case.theirs):
            return Candidate("add_input_overwritten", f"its input {name} holds this add's output ({name} += ... "
                             "overwrote it in place after it was hooked: dump with .clone()); the add cannot "
                             "be checked locally from this dump", case.theirs, name)
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


def skipped_behind_gap(case: Case) -> Candidate | None:
    """Their port has no layer two steps up, behind a gap compare filled: the default BN-folded export
    hides the convolution a BN row reads (``block8_sepconv2``, filled by ours), and a missing ReLU before it
    (``block8_sepconv2_act``) is then a gap too, so :func:`skipped_layer`, which drops only the row's direct
    input, cannot see it. The filled layer is run on the inner gap's own input instead (the ReLU left out),
    then this layer; at a BN with the epsilon fitted from their output too, when that is not Keras'."""
    if not case.skipped or not case.gaps:
        return None
    layers = {layer.name: layer for layer in case.model.layers}
    for pos, (gap, _) in case.skipped.items():
        outer = layers.get(gap)
        if outer is None or len(outer.inputs) != 1 or outer.inputs[0] not in case.gaps:
            continue
        inner = layers.get(outer.inputs[0])
        x = case.gaps[outer.inputs[0]]
        if inner is None or len(inner.inputs) != 1 or x is None:
            continue
        filled = case.model.run_layer(gap, [x])
        ins = list(case.inputs)
        ins[pos] = filled
        y = case.model.run_layer(case.name, ins)
        if y.shape != case.theirs.shape:
            continue
        what = f"their port has no {inner.name}: {gap}, which their side does not expose, reads its input directly"
        if case.kind == "bn":
            eps = bn_epsilon(Case(case.model, case.name, case.kind, case.spec, case.input_names, ins,
                                  case.theirs, y))
            if eps is not None and np.abs(eps.output - case.theirs).max() < np.abs(y - case.theirs).max():
                return Candidate("skipped_layer", f"{what}, and BN {eps.explanation}", eps.output.astype(y.dtype),
                                 inner.name)
        return Candidate("skipped_layer", what, y, inner.name)
    return None

