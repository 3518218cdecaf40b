"""The fast plan, compiled from the architecture table: fused steps and the buffers they use.

:func:`compile_plan` walks ``architecture.backbone(variant)`` in order and
matches layer sequences by following the graph's edges (a layer's inputs and
its readers), never by names:

* ``conv -> bn (-> relu)``                            -> :class:`ConvBN`
* ``(relu ->) sepconv -> bn (-> relu) (-> add)``      -> :class:`SepConvBN`
* ``maxpool -> add`` with a branch computed earlier   -> :class:`PoolAdd`
* the head list                                       -> :class:`Head`

A ReLU is fused into the step before it when it is that step's only reader
(applied in the epilogue), else into the separable convolution that is its only
reader (applied as the depthwise kernel loads its input). An Add is fused into
a separable convolution's epilogue when the other branch has no later reader:
the result is added into that branch's buffer in place. Every table layer is
consumed by exactly one step, which :func:`compile_plan` asserts; a table the
steps cannot express raises :class:`Unsupported`, and the model then runs op
by op (npxception/forward.py).

Buffers: every value a step writes gets an arena slot, chosen by liveness
(the lowest slot whose value is dead). A separable convolution that keeps its
width and is its input's last reader writes over its input (the fused kernel
saves the rows its 3x3 window still needs); that saves the largest buffer of
the network, the 147x147x128 map.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

INPUT = "input"  # the image batch's name in the table


class Unsupported(ValueError):
    """The table holds a layer sequence that no fused step implements."""


@dataclass(frozen=True)
class ConvBN:
    """conv -> BN (-> ReLU): im2col, GEMM, folded-BN epilogue."""

    conv: str  # the conv layer (its kernel)
    bn: str  # the BN that follows it (folded into the epilogue)
    source: str  # the value read
    output: str  # the value written: the last layer consumed
    kernel_size: int
    strides: int
    padding: str
    relu_out: bool
    channels: int  # output channels
    layers: tuple[str, ...]  # every table layer this step stands for
    slot: int = -1  # arena slot of the output

    @property
    def reads(self):
        return (self.source,)

    @property
    def label(self):
        return self.conv


@dataclass(frozen=True)
class SepConvBN:
    """(ReLU ->) separable conv 3x3 SAME -> BN (-> ReLU) (-> Add into ``residual``)."""

    sepconv: str
    bn: str
    source: str
    output: str
    relu_in: bool  # a ReLU on the input, applied as the depthwise kernel reads it
    relu_out: bool  # a ReLU after the BN, in the epilogue
    residual: str | None  # the Add's other branch, which the result is added into in place
    channels: int
    layers: tuple[str, ...]
    slot: int = -1
    in_place: bool = False  # the output overwrites the input (same width, input read last here)

    @property
    def reads(self):
        return (self.source,) if self.residual is None else (self.source, self.residual)

    @property
    def label(self):
        return self.sepconv


@dataclass(frozen=True)
class PoolAdd:
    """max-pool -> Add with a branch computed earlier (the entry and exit flows' residuals)."""

    pool: str
    source: str
    residual: str
    output: str
    kernel_size: int
    strides: int
    padding: str
    channels: int
    layers: tuple[str, ...]
    slot: int = -1

    @property
    def reads(self):
        return (self.source, self.residual)

    @property
    def label(self):
        return self.pool + "+add"


@dataclass(frozen=True)
class Head:
    """The head's layers, run by npxception/head.py (global average pooling by a kernel)."""

    source: str
    layers: tuple[str, ...]

    @property
    def reads(self):
        return (self.source,)

    @property
    def label(self):
        return "head"


def compile_plan(layers, head, channels: int) -> list:
    """The fused steps for a backbone table and a head list, with arena slots assigned.

    ``channels``: the input's (the model's ``input_shape[2]``); the first convolution's im2col
    reads ``K = kh * kw * channels`` values per output pixel (27 for RGB, 9 grayscale, 36 RGBA).

    Raises :class:`Unsupported` naming the first layer no step can take.
    """
    readers: dict[str, list] = {}
    for layer in layers:
        for name in layer.inputs:
            readers.setdefault(name, []).append(layer)
    channels = {INPUT: channels}
    claimed: dict[str, int] = {}
    steps: list = []

    def sole_reader(name, kind=None):
        r = readers.get(name, [])
        if len(r) == 1 and (kind is None or r[0].kind == kind) and r[0].name not in claimed:
            return r[0]
        return None

    def conv_bn(conv):
        bn = sole_reader(conv.name, "bn")
        if bn is None:
            raise Unsupported(f"fast plan: {conv.name} ({conv.kind}) is not followed by its own BatchNormalization")
        relu = sole_reader(bn.name, "relu")
        return bn, relu

    for layer in layers:
        if layer.name in claimed:
            continue
        if layer.kind == "conv":
            bn, relu = conv_bn(layer)
            out = relu or bn
            step = ConvBN(layer.name, bn.name, layer.inputs[0], out.name, layer.kernel_size, layer.strides,
                          layer.padding, relu is not None, layer.filters,
                          tuple(x.name for x in (layer, bn, relu) if x is not None))
        elif layer.kind == "sepconv" or (layer.kind == "relu" and sole_reader(layer.name, "sepconv")):
            pre = layer if layer.kind == "relu" else None
            sep = sole_reader(layer.name, "sepconv") if pre else layer
            if (sep.kernel_size, sep.strides, sep.padding) != (3, 1, "same"):
                raise Unsupported(f"fast plan: {sep.name} is a {sep.kernel_size}x{sep.kernel_size} stride-"
                                  f"{sep.strides} {sep.padding.upper()} separable convolution; the fused "
                                  "kernel takes 3x3 stride-1 SAME only")
            bn, relu = conv_bn(sep)
            out = relu or bn
            add = sole_reader(out.name, "add")
            residual = None
            if add is not None:
                others = [i for i in add.inputs if i != out.name]
                other = others[0] if len(others) == 1 else None
                # the Add may write into the other branch only if nothing reads it later
                if other is not None and other != INPUT and all(r.name in claimed or r is add
                                                                  for r in readers[other]):
                    residual = other
                else:
                    add = None
            source = (pre or sep).inputs[0]
            step = SepConvBN(sep.name, bn.name, source, (add or out).name, pre is not None, relu is not None,
                             residual, sep.filters,
                             tuple(x.name for x in (pre, sep, bn, relu, add) if x is not None))
        elif layer.kind == "maxpool":
            add = sole_reader(layer.name, "add")
            other = None if add is None else [i for i in add.inputs if i != layer.name]
            if add is None or len(other) != 1 or other[0] not in channels:
                raise Unsupported(f"fast plan: {layer.name} (maxpool) must feed an Add whose other branch "
                                  "is computed before it")
            step = PoolAdd(layer.name, layer.inputs[0], other[0], add.name, layer.kernel_size, layer.strides,
                           layer.padding, channels[layer.inputs[0]], (layer.name, add.name))
        else:
            raise Unsupported(f"fast plan: no fused step starts at {layer.name} ({layer.kind})")
        for name in step.reads:
            if name not in channels:
                raise Unsupported(f"fast plan: {step.label} reads {name} before it is computed")
        for name in step.layers:
            assert name not in claimed, f"fast plan: {name} consumed twice"
            claimed[name] = len(steps)
        channels[step.output] = step.channels
        steps.append(step)
    last = layers[-1].name
    if last not in channels:
        raise Unsupported(f"fast plan: the last layer {last} is consumed inside a step")
    steps.append(Head(last, tuple(h["name"] for h in head)))
    unclaimed = [layer.name for layer in layers if layer.name not in claimed]
    assert not unclaimed, f"fast plan: layers consumed by no step: {unclaimed}"
    return _assign_slots(steps, channels)


def _assign_slots(steps, channels) -> list:
    """Give each step's output an arena slot: reuse dead values' slots, write in place where allowed."""
    last_read = {}
    for i, step in enumerate(steps):
        for name in step.reads:
            last_read[name] = i
    slot_of: dict[str, int] = {}
    busy: set[int] = set()
    out = []
    for i, step in enumerate(steps):
        dying = [v for v in step.reads if last_read[v] == i and v != INPUT]
        if isinstance(step, Head):
            out.append(step)
            continue
        in_place = False
        if isinstance(step, SepConvBN) and step.residual is not None:
            assert step.residual in dying, f"fast plan: {step.label} adds into {step.residual}, read later"
            slot = slot_of[step.residual]
        elif (isinstance(step, SepConvBN) and step.source in dying
              and channels[step.source] == step.channels):
            slot, in_place = slot_of[step.source], True
        else:
            slot = min(set(range(len(busy) + 1)) - busy)
        for v in dying:
            busy.discard(slot_of[v])
        busy.add(slot)
        slot_of[step.output] = slot
        extra = {"in_place": in_place} if isinstance(step, SepConvBN) else {}
        out.append(dataclasses.replace(step, slot=slot, **extra))
    return out
