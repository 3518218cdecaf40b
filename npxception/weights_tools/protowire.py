"""The protocol buffer wire format, decoded as plain data: enough to read TensorFlow's small metadata.

TensorFlow checkpoints and SavedModel directories describe their tensors with
protobuf messages (``BundleEntryProto``, ``TrackableObjectGraph``, tf_keras'
``SavedMetadata``). We read them without TensorFlow or the ``protobuf``
package: a message is a sequence of fields, each a varint key
``field_number << 3 | wire_type`` then a value
(https://protobuf.dev/programming-guides/encoding/):

* wire type 0, varint: 7 bits a byte, low group first, high bit set on all but
  the last byte; at most 10 bytes (a 64-bit value);
* wire type 1, fixed64 and wire type 5, fixed32: little-endian;
* wire type 2, length-delimited: a varint length, then that many bytes (a
  string, bytes, a nested message or a packed repeated field).

Groups (wire types 3 and 4) were deprecated before any of these messages
existed, and are refused. Decoding is one linear pass over the bytes; a nested
message is decoded only when its reader asks for it, so nothing recurses on
the input's say-so. A reader bounds how many fields it accepts with
:class:`FieldBudget` objects, counted as each field is decoded: two bytes of input
make a field, and a decoded field costs ~100 bytes of Python objects, so a byte
cap alone lets a few MB of input take a GB.
"""

from __future__ import annotations

import struct

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
MAX_VARINT_BYTES = 10  # a 64-bit value needs ceil(64 / 7) bytes


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message; the caller names the file and the message."""


class LimitError(WireError):
    """A well-formed message with more fields than its reader allows (a :class:`FieldBudget` ran out)."""


class FieldBudget:
    """How many more fields a reader accepts: shared by every message decoded with it (a total), or
    made per message (a per-message cap). ``what`` names the fields in the error."""

    def __init__(self, limit: int, what: str):
        self.limit, self.left, self.what = limit, limit, what

    def take(self):
        self.left -= 1
        if self.left < 0:
            raise LimitError(f"more than {self.limit:,} {self.what}")


def read_varint(buf: bytes, pos: int, end: int | None = None) -> tuple[int, int]:
    """``(value, position after it)`` of the varint at ``buf[pos]``."""
    end = len(buf) if end is None else end
    value = shift = 0
    for i in range(MAX_VARINT_BYTES):
        if pos + i >= end:
            raise WireError("a varint runs past the end of its message")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    raise WireError("a varint longer than 10 bytes")


def signed64(value: int) -> int:
    """An int32/int64 field as written: negative numbers are 10-byte two's complement varints."""
    return value - (1 << 64) if value >= 1 << 63 else value


def fields(buf: bytes, *budgets: FieldBudget) -> list[tuple[int, int, int | bytes]]:
    """``[(field number, wire type, value)]`` of one message, in wire order.

    ``value`` is an int for varint and fixed fields, the raw bytes for
    length-delimited ones (decode a nested message with another call). Each
    field is charged to every one of ``budgets`` before it is decoded.
    """
    out = []
    pos, end = 0, len(buf)
    while pos < end:
        for budget in budgets:
            budget.take()
        key, pos = read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
        elif wire == LENGTH:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise WireError(f"field {number} claims {length} bytes; {end - pos} are left")
            value, pos = bytes(buf[pos:pos + length]), pos + length
        elif wire in (FIXED32, FIXED64):
            size = 4 if wire == FIXED32 else 8
            if pos + size > end:
                raise WireError(f"field {number} runs past the end of its message")
            value = struct.unpack_from("<I" if size == 4 else "<Q", buf, pos)[0]
            pos += size
        else:
            raise WireError(f"field {number} has wire type {wire} (groups are not used by these messages)")
        out.append((number, wire, value))
    return out


def message(buf: bytes, schema: dict[int, tuple[str, int, bool]], *budgets: FieldBudget) -> dict:
    """Decode one message into ``{name: value}`` by ``schema``: ``{number: (name, wire type, repeated)}``.

    A field of the wrong wire type is a WireError; unknown fields are skipped,
    as protobuf readers do. Missing singular fields are absent (callers apply
    proto3's defaults). A repeated varint field may come packed (one
    length-delimited run of varints), as proto3 writes them; each of its
    values is charged to ``budgets`` as a field.
    """
    out: dict = {}
    for number, wire, value in fields(buf, *budgets):
        if number not in schema:
            continue
        name, expected, repeated = schema[number]
        if repeated and expected == VARINT and wire == LENGTH:
            packed, pos = [], 0
            while pos < len(value):
                for budget in budgets:
                    budget.take()
                v, pos = read_varint(value, pos)
                packed.append(v)
            out.setdefault(name, []).extend(packed)
            continue
        if wire != expected:
            raise WireError(f"field {name} has wire type {wire}, expected {expected}")
        if repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


def text(value: bytes, what: str) -> str:
    """A ``string`` field: UTF-8 by the protobuf spec."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"{what} is not UTF-8 text") from None
