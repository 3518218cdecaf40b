"""Partitioned (sliced) tensors of a TensorFlow bundle: where each slice is, and how they tile the tensor.

A sharding policy that splits a variable across shards (TF's
``tf.train.experimental.MaxShardSizePolicy`` does, whenever a variable crosses a
shard boundary) saves it as slices. The variable's own entry then holds no bytes;
its ``slices`` field lists ``TensorSliceProto``\\ s (tensorflow/core/framework/
tensor_slice.proto: one ``Extent {start = 1; length = 2}`` per dimension, no
length meaning the whole dimension), and each slice's bytes are an entry of its
own, keyed by :func:`slice_key` (tensor_slice_util ``EncodeTensorNameSlice``).

Keys are computed from the variable's name and the slice, never parsed: a slice
entry that no variable lists is refused by the bundle reader.
"""

from __future__ import annotations

from . import protowire as pw

FULL_EXTENT = -1  # TensorSlice::kFullExtent: the slice takes the whole dimension

_SLICE = {1: ("extent", pw.LENGTH, True)}
_EXTENT = {1: ("start", pw.VARINT, False), 2: ("length", pw.VARINT, False)}

# OrderedCode's header bits for a signed number encoded in n bytes (strings/ordered_code.cc kLengthToHeaderBits).
_HEADER_BITS = ((0, 0), (0x80, 0), (0xC0, 0), (0xE0, 0), (0xF0, 0), (0xF8, 0), (0xFC, 0), (0xFE, 0), (0xFF, 0),
                (0xFF, 0x80), (0xFF, 0xC0))
_ESCAPES = {0x00: b"\x00\xff", 0xFF: b"\xff\x00"}  # OrderedCode's escapes in a string


def decode_slice(raw: bytes, shape: tuple[int, ...], budget: pw.FieldBudget) -> tuple[tuple[int, int], ...]:
    """A TensorSliceProto as ``((start, length), ...)`` per dimension of ``shape`` (length
    :data:`FULL_EXTENT` where the proto gives none: the whole dimension), checked to lie inside it.

    Raises :class:`~npxception.weights_tools.protowire.WireError` naming what is wrong.
    """
    extents = pw.message(raw, _SLICE, budget).get("extent", [])
    if len(extents) != len(shape):
        raise pw.WireError(f"a slice of {len(extents)} dimensions of a tensor of shape {shape}")
    out = []
    for dim, extent in zip(shape, extents):
        e = pw.message(extent, _EXTENT, budget)
        start = pw.signed64(e.get("start", 0))
        length = pw.signed64(e["length"]) if "length" in e else FULL_EXTENT
        if (start, length) != (0, FULL_EXTENT) and not (start >= 0 and length >= 1 and start + length <= dim):
            raise pw.WireError(f"a slice of {length} from {start} of a dimension of {dim}")
        out.append((start, length))
    return tuple(out)


def region(extents: tuple[tuple[int, int], ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The NumPy index of a slice's values in the whole tensor."""
    return tuple(slice(0, dim) if length == FULL_EXTENT else slice(start, start + length)
                 for (start, length), dim in zip(extents, shape))


def describe(extents: tuple[tuple[int, int], ...]) -> str:
    """``[0:16, :]``-style text for a slice, for messages."""
    return "[" + ", ".join(":" if n == FULL_EXTENT else f"{a}:{a + n}" for a, n in extents) + "]"


def slice_key(name: str, extents: tuple[tuple[int, int], ...]) -> bytes:
    """The bundle key of a slice (tensor_slice_util.cc ``EncodeTensorNameSlice``): OrderedCode's
    ``0``, the name, the rank, then each dimension's start and length (-1: the whole dimension)."""
    out = _num_increasing(0) + _string(name.encode("utf-8")) + _num_increasing(len(extents))
    for start, length in extents:
        out += _signed_increasing(start) + _signed_increasing(length)
    return out


def _num_increasing(value: int) -> bytes:
    """OrderedCode::WriteNumIncreasing: a length byte, then the value big-endian without leading zeros."""
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return bytes([len(body)]) + body


def _string(value: bytes) -> bytes:
    """OrderedCode::WriteString: 0x00 and 0xff escaped, ended by 0x00 0x01."""
    return b"".join(_ESCAPES.get(b, bytes([b])) for b in value) + b"\x00\x01"


def _signed_increasing(value: int) -> bytes:
    """OrderedCode::WriteSignedNumIncreasing: n bytes of two's complement, the first bits saying n."""
    magnitude = ~value if value < 0 else value
    n = magnitude.bit_length() // 7 + 1  # ordered_code.cc kBitsToLength
    body = bytearray((value & ((1 << 80) - 1)).to_bytes(10, "big")[10 - n:])
    body[0] ^= _HEADER_BITS[n][0]
    if n > 1:
        body[1] ^= _HEADER_BITS[n][1]
    return bytes(body)
