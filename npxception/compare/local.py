"""Local error: *our* layer run on *their* inputs, layer by layer from the architecture table.

Accumulated error (ours against theirs on the same image) mixes what a layer
inherits with what it adds; one wrong BN epsilon early on makes every later
layer fail. Running each of our layers on the other side's own input
activations isolates what that layer itself does differently.

Where the other side does not expose a layer's input (an ONNX export that fused
it away, a dump that omits it, a port that has no such layer), the gap is
filled by running our own layers from the nearest activations they do expose;
the local error then covers that short segment, and the hypotheses know which
layers were filled (see ``skipped_layer``).

A layer is not run on an input of theirs that holds Inf or NaN: our layer would
only carry them on, and an error measured against that (or a cause fitted to it)
would be noise. The layer that first produced them is found instead, as the one
whose inputs are finite and whose output is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import non_finite


@dataclass(frozen=True)
class Node:
    """A backbone layer or a head layer, as compare walks them."""

    name: str
    kind: str
    inputs: tuple[str, ...]  # "input" is the image batch
    flow: str  # entry / middle / exit
    spec: object  # architecture.Layer, or the head's dict


def nodes(model) -> list[Node]:
    """Every layer of ``model`` in network order; the head reads the backbone's last layer."""
    out = [Node(layer.name, layer.kind, layer.inputs, layer.flow, layer) for layer in model.layers]
    prev = model.layers[-1].name
    for h in model.head:
        out.append(Node(h["name"], h["kind"], (prev,), "exit", h))
        prev = h["name"]
    return out


@dataclass
class Local:
    """One layer's local run."""

    node: Node
    inputs: list  # what it ran on: theirs where they have it, else our fill
    output: np.ndarray | None  # our layer on those inputs; None when their inputs do not fit it
    skipped: dict  # {input position: (gap layer we filled, that layer's own input)}
    error: str = ""  # why output is None
    non_finite_input: str = ""  # their input that holds Inf or NaN (not run on), if any
    gaps: dict | None = None  # {every gap layer filled so far: the input we ran it on}


def local_pass(model, theirs: dict, x_in: np.ndarray):
    """Yield a :class:`Local` for every layer, in network order.

    ``theirs`` maps our names to their NHWC activations; ``x_in`` is the input
    they ran on (or ours when they do not say).
    """
    filled = {"input": x_in}  # our fills for what they do not expose
    fill_input = {}  # {gap layer: the input we ran it on}
    bad = {}  # {their layer: how many Inf/NaN it holds}, each checked once
    for node in nodes(model):
        ins, skipped = [], {}
        for pos, name in enumerate(node.inputs):
            if name in theirs:
                ins.append(theirs[name])
            else:
                ins.append(filled.get(name))
                if name in fill_input:
                    skipped[pos] = (name, fill_input[name])
        y, error, bad_input = None, "", ""
        for name in node.inputs:
            given = theirs.get(name, x_in if name == "input" else None)
            if given is not None and name not in bad:
                bad[name] = non_finite(given)
            if bad.get(name):
                bad_input = name
        if bad_input:
            error = f"their input {bad_input} holds {bad[bad_input]}"
        elif all(a is not None for a in ins):
            try:
                y = model.run_layer(node.name, ins)
            except ValueError as exc:  # their input's shape does not fit our layer
                error = str(exc).split("\n")[0]
        else:
            error = "an input is missing"
        if node.name not in theirs:
            filled[node.name] = y
            fill_input[node.name] = ins[0] if ins and ins[0] is not None else None
        yield Local(node, ins, y, skipped, error, bad_input, fill_input)


def rerun(model, node: Node, theirs: dict, x_in: np.ndarray) -> np.ndarray:
    """Our ``node`` on their inputs in ``model``'s dtype, every gap before it filled by our layers as
    :func:`local_pass` fills it, in that dtype too: ``model.astype("float64")`` gives the exact output of
    the layer on their inputs. The fills live for this call only (one row's gap, not the network's)."""
    by_name = {n.name: n for n in nodes(model)}
    fills: dict = {}  # a gap read twice (two branches of a missing add) is run once

    def value(name):
        if name in theirs:
            return theirs[name]
        if name == "input":
            return x_in
        if name not in fills:
            fills[name] = model.run_layer(name, [value(i) for i in by_name[name].inputs])
        return fills[name]
    return model.run_layer(node.name, [value(i) for i in node.inputs])
