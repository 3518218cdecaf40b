"""What a hypothesis sees (:class:`Case`) and what it returns (:class:`Candidate`, :class:`Diagnosis`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Case:
    """One source layer, as the hypotheses see it."""

    model: object  # our XceptionModel
    name: str
    kind: str  # architecture kind: conv, sepconv, bn, relu, maxpool, add, or a head kind
    spec: object  # the architecture.Layer, or the head dict
    input_names: tuple  # the layers feeding it, in the table's order ("input": the image)
    inputs: list  # their input activations, in the table's input order
    theirs: np.ndarray  # their output
    local: np.ndarray  # our layer on their inputs
    x_ours: np.ndarray | None = None  # our input batch, when this layer reads the image
    skipped: dict | None = None  # {input position: (layer we ran to fill a gap, that layer's input)}
    gaps: dict | None = None  # {every layer we ran to fill a gap before this one: its input}
    earlier: dict | None = None  # their earlier activations {name: array}, for a mis-wired input
    readers: dict | None = None  # their outputs of the layers that read this one {name: array}
    reader_inputs: dict | None = None  # {reader: its inputs, theirs}, for the readers whose inputs they expose
    input_causes: dict | None = None  # {input layer: the cause diagnosed there}, for its inputs that are sources
    images: list | None = None  # the photo files the batch was made from, one per image, when known
    x_input: np.ndarray | None = None  # that batch as the model takes it (x_ours is after its input stage)
    their_convs: dict | None = None  # {our conv layer: their_convs.TheirConv}, from their graph's weights

    @property
    def params(self) -> dict:
        w = self.model._params  # read by key: only this layer's kernels are unpacked (npxception/params.py)
        return {k.split("/", 1)[1]: w[k] for k in w if k.split("/", 1)[0] == self.name}


@dataclass
class Candidate:
    cause: str  # the hypothesis' name
    explanation: str  # what the user reads: "epsilon ≈ 1e-05 (Keras uses 0.001)"
    output: np.ndarray  # their layer's output under this cause
    parameter: object = None  # the fitted value, when there is one


@dataclass
class Diagnosis:
    """Why a source layer differs: the catalogue's cause that reproduces their output within the tolerance,
    with the smallest residual (docs/discrepancies.md lists the causes).

    ``cause``: the hypothesis' name (``"bn_epsilon"``, ``"input_affine"``...), stable, for programs.
    ``explanation``: what the user reads, with the fitted value (``"epsilon ≈ 1e-05 (Keras uses 0.001)"``).
    ``parameter``: the fitted value itself (an epsilon, a permutation, an index, a dict of constants), or None.
    ``residual``: max |their layer under this cause - their output| / max |their output|: what the cause
    leaves unexplained (round-off when it is the whole story)."""

    cause: str
    explanation: str
    parameter: object
    residual: float  # max |candidate - theirs| / max |theirs|: what the cause leaves unexplained



def closest(options, theirs):
    """``(label, output)`` of the ``(label, output)`` pair nearest ``theirs`` (max abs error) among
    those of its shape, or None: for hypotheses with a discrete parameter to choose."""
    best = None
    for label, y in options:
        if y.shape == theirs.shape:
            err = np.abs(y - theirs).max()
            if best is None or err < best[0]:
                best = (err, label, y)
    return None if best is None else best[1:]
