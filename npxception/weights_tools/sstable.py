"""LevelDB-format SSTables (a TensorFlow checkpoint's ``.index``), read without TensorFlow.

The format (google/leveldb's table format document, ``doc/table_format`` there;
TensorFlow's copy is ``tsl/lib/io/table*``): the table's last 48 bytes are the
footer: two BlockHandles (varint64 offset, varint64 size; padded to 40 bytes)
for the metaindex and index blocks, then the magic ``0xdb4775248b80fb57`` as a
little-endian fixed64. Each block is followed by a 5-byte trailer: its
compression type (0: none) and the masked CRC32C (:mod:`npxception.weights_tools.crc32c`)
of the block and that type byte. A block is a run of prefix-compressed entries
(varint32 shared key bytes, varint32 unshared key bytes, varint32 value length,
the unshared key bytes, the value) then the restart offsets (fixed32 each) and
their count (fixed32). The index block maps keys to the BlockHandles of the
data blocks, which hold the table's ``(key, value)`` pairs in key order.

Against hostile files (the budget rule, docs/security.md) :func:`read_table`
checks the footer, every block's trailer and CRC, that data blocks are
disjoint and in order (a block cannot be parsed twice), and caps the entries
at :data:`MAX_ENTRIES`, each key at :data:`MAX_KEY_BYTES` and all keys at
:data:`MAX_TOTAL_KEY_BYTES`, counted as each key is rebuilt (prefix
compression lets n keys of 4 bytes each in the file take n^2/2 bytes whole);
compressed blocks (TensorFlow writes none) are refused.
"""

from __future__ import annotations

import struct

from . import protowire as pw
from .crc32c import crc32c, unmask
from .errors import ConversionError

TABLE_MAGIC = 0xDB4775248B80FB57  # leveldb's kTableMagicNumber, TensorFlow's too
FOOTER_BYTES = 48  # 2 BlockHandles padded to 40 bytes, then the 8-byte magic
TRAILER_BYTES = 5  # compression type + masked crc32c
# An Xception checkpoint after fit() with Adam holds ~720 entries in a ~50 kB
# index; a SavedModel's ~240. This cap is 300x that.
MAX_ENTRIES = 200_000
# Keys are rebuilt whole from their shared prefixes, so a key that extends the previous one by a byte
# costs 4 bytes of file and len(key) bytes of memory: n such keys take n^2/2 bytes. The longest key of
# the corpus' checkpoints and SavedModel is 86 bytes ("layer_with_weights-0/layer_with_weights-1/
# .../.ATTRIBUTES/VARIABLE_VALUE"), 551 keys the most, ~40 kB of keys in all. A key is capped at
# 4 KiB (50x the longest) and all keys together at 4 MiB (100x the corpus' total), so keys never
# take more memory than a quarter of the largest index (MAX_INDEX_BYTES) read whole.
MAX_KEY_BYTES = 4096
MAX_TOTAL_KEY_BYTES = 4 * 1024**2


def _handle(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    offset, pos = pw.read_varint(buf, pos, end)
    size, pos = pw.read_varint(buf, pos, end)
    return offset, size, pos


def _block(data: bytes, offset: int, size: int, limit: int, where: str, what: str) -> bytes:
    """The contents of the block at ``(offset, size)``, its trailer's type and CRC checked."""
    if offset < 0 or size < 4 or offset + size + TRAILER_BYTES > limit:
        raise ConversionError(f"{where}: the {what} at bytes {offset}..{offset + size} lies outside the "
                              f"{limit}-byte table (a truncated or corrupt index file)")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    if kind != 0:
        raise ConversionError(f"{where}: the {what} is compressed (type {kind}); TensorFlow writes bundle "
                              "indexes uncompressed, and this reader reads no other")
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    actual = crc32c(data[offset:offset + size + 1])
    if unmask(stored) != actual:
        raise ConversionError(f"{where}: the {what} fails its checksum (stored {unmask(stored):08x}, "
                              f"computed {actual:08x}; a corrupt index file)")
    return contents


def _block_entries(contents: bytes, where: str, what: str, limits: list[int]) -> list[tuple[bytes, bytes]]:
    """The ``(key, value)`` pairs of one block, keys rebuilt from their shared prefixes.

    ``limits``: ``[entries left, key bytes left]`` of the whole table, charged
    entry by entry before its key is built, so a refusal comes before the memory is taken.
    """
    n = len(contents)
    restarts = struct.unpack_from("<I", contents, n - 4)[0]
    end = n - 4 - 4 * restarts
    if restarts < 1 or end < 0:
        raise ConversionError(f"{where}: the {what} claims {restarts} restart points in {n} bytes (corrupt)")
    out, key, pos = [], b"", 0
    try:
        while pos < end:
            shared, pos = pw.read_varint(contents, pos, end)
            unshared, pos = pw.read_varint(contents, pos, end)
            length, pos = pw.read_varint(contents, pos, end)
            if shared > len(key) or unshared + length > end - pos:
                raise pw.WireError("an entry runs past the end of its block")
            size = shared + unshared
            if size > MAX_KEY_BYTES:
                raise ConversionError(f"{where}: a key of {size:,} bytes in the {what}, over the "
                                      f"{MAX_KEY_BYTES:,}-byte limit per key (a Keras checkpoint's are under 100)")
            limits[0] -= 1
            limits[1] -= size
            if limits[0] < 0:
                raise ConversionError(f"{where}: more than {MAX_ENTRIES:,} entries (in the {what}); a Keras "
                                      "checkpoint holds a few hundred")
            if limits[1] < 0:
                raise ConversionError(f"{where}: its keys total more than {MAX_TOTAL_KEY_BYTES:,} bytes (in the "
                                      f"{what}); a Keras checkpoint's total tens of kB")
            key = key[:shared] + contents[pos:pos + unshared]
            pos += unshared
            out.append((key, contents[pos:pos + length]))
            pos += length
    except pw.WireError as exc:
        raise ConversionError(f"{where}: unreadable {what} ({exc})") from None
    return out


def read_table(data: bytes, where: str) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of an SSTable held in ``data``, in key order."""
    if len(data) < FOOTER_BYTES:
        raise ConversionError(f"{where}: {len(data)} bytes, too short for a TensorFlow checkpoint index "
                              f"(its footer alone is {FOOTER_BYTES}); a truncated file?")
    footer = len(data) - FOOTER_BYTES
    magic = struct.unpack_from("<Q", data, footer + 40)[0]
    if magic != TABLE_MAGIC:
        raise ConversionError(f"{where}: not a TensorFlow checkpoint index (its footer ends in {magic:#018x}, "
                              f"expected the table magic {TABLE_MAGIC:#018x}); truncated or another format?")
    try:
        _, _, pos = _handle(data, footer, footer + 40, "metaindex")
        index_offset, index_size, _ = _handle(data, pos, footer + 40, "index")
    except pw.WireError as exc:
        raise ConversionError(f"{where}: unreadable index footer ({exc})") from None
    index = _block_entries(_block(data, index_offset, index_size, footer, where, "index block"), where,
                           "index block", [MAX_ENTRIES, MAX_TOTAL_KEY_BYTES])
    limits = [MAX_ENTRIES, MAX_TOTAL_KEY_BYTES]  # the data blocks' entries and keys, counted as they are built
    entries: list[tuple[bytes, bytes]] = []
    next_free = 0
    for i, (_, value) in enumerate(index):
        try:
            offset, size, _ = _handle(value, 0, len(value), "data block")
        except pw.WireError as exc:
            raise ConversionError(f"{where}: unreadable handle of data block {i} ({exc})") from None
        # Blocks in file order and disjoint: each byte of the table is parsed once at most.
        if offset < next_free:
            raise ConversionError(f"{where}: data block {i} overlaps or precedes block {i - 1}; "
                                  "every block is read once")
        next_free = offset + size + TRAILER_BYTES
        block = _block(data, offset, size, index_offset, where, f"data block {i}")
        entries += _block_entries(block, where, f"data block {i}", limits)
    for (a, _), (b, _) in zip(entries, entries[1:]):
        if not a < b:  # an SSTable's keys are sorted and unique
            raise ConversionError(f"{where}: key {b[:80]!r} is out of order or repeated (a corrupt index)")
    return entries

