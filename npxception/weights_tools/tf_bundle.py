"""TensorFlow's tensor bundle (checkpoints, SavedModel variables), read without TensorFlow.

A bundle with prefix ``P`` (``save_weights("ckpt")`` gives ``P = ckpt``; a
SavedModel has ``P = variables/variables``) is two files:

* ``P.index``: a LevelDB-format SSTable (:mod:`npxception.weights_tools.sstable`) which
  holds, in key order, ``"" -> BundleHeaderProto`` and ``tensor key ->
  BundleEntryProto`` (tensorflow/core/protobuf/tensor_bundle.proto);
* ``P.data-00000-of-0000N`` ... ``P.data-0000{N-1}-of-0000N``: the tensors' raw bytes,
  little-endian, C order, at ``[offset, offset + size)`` of the shard the entry
  names. ``crc32c`` is the masked CRC32C (:mod:`npxception.weights_tools.crc32c`) of those
  bytes (tensor_bundle.cc, ``BundleWriter::Add``), which TensorFlow verifies when
  it reads a tensor, and so do we.

TensorFlow writes bundles uncompressed (``TableBuilderOptions``: kNoCompression).
A bundle has several shards when a sharding policy splits it
(``tf.train.CheckpointOptions(experimental_sharding_callback=...)``, also taken by
tf_keras' ``save_weights`` and ``ModelCheckpoint``, and ``tf.saved_model.SaveOptions``'s)
or when its variables live on several machines (``ShardByTaskPolicy``, TF's default:
one shard per task). The devices of one machine (GPU:0 and CPU:0) share its shard: TF
saves every variable through its task's CPU:0 (``saveable_object_util.set_cpu0``;
measured with TF 2.21 on two logical CPUs: one shard). Against hostile files (the budget rule, docs/security.md)
this reader:

* opens regular files only (a FIFO blocks ``open()`` forever) and caps the
  index at :data:`MAX_INDEX_BYTES` (and the table's entries, see
  :mod:`npxception.weights_tools.sstable`), far above any Keras model's;
* checks the table (footer, block trailers and CRCs, blocks disjoint and in
  order) before any tensor;
* checks every shard before reading data from any: each of the header's shards
  (at most one per entry) exists and is a regular file, every entry names one of
  them and lies inside it, entries of one shard do not overlap (no byte is read
  twice), and an entry's size is ``prod(shape) * itemsize``;
* reads a partitioned (sliced) tensor from its slices (:mod:`npxception.weights_tools.tensor_slices`):
  every slice it lists has an entry of its dtype and shape, the slices hold as
  many values as the tensor and none overlaps another, and no slice entry is
  left that no tensor lists;
* refuses big-endian bundles;
* reads a tensor only when the converter has checked its shape and dtype
  (:class:`BundleTensor`), each once, charged against the converter's read budget
  (:func:`npxception.weights.weight_budget`, as :mod:`npxception.weights_tools.hdf5`),
  and verifies its CRC32C.
"""

from __future__ import annotations

import os
import pathlib
import struct
from dataclasses import dataclass

import numpy as np

from npxception.untrusted import IrregularFileError, ReadBudget, open_regular
from npxception.weights import weight_budget

from . import protowire as pw
from .crc32c import crc32c, unmask
from .errors import ConversionError
from .hdf5 import PARAM_BYTES, StoredArray
from .sstable import read_table
from .tensor_slices import decode_slice, describe, region, slice_key

HEADER_KEY = b""  # the BundleHeaderProto's key, first in the table
# An Xception checkpoint after fit() with Adam has a ~50 kB index; this cap is 300x that.
MAX_INDEX_BYTES = 16 * 1024**2
MAX_RANK = 8  # Keras weights have rank <= 4
# A BundleEntryProto has 7 fields and a shape of rank <= MAX_RANK; the header, 3 and a version of 3.
# Their fields are counted as decoded (a 16 MB entry of 2-byte fields would be 8M Python tuples).
MAX_PROTO_FIELDS = 1000
# The object graph (a DT_STRING scalar): 43 kB for the recipe's checkpoint, 123 kB for its SavedModel.
# Decoded into Python objects it grows ~20x, so 8 MiB (65x the SavedModel's) stays within ~200 MB.
MAX_STRING_BYTES = 8 * 1024**2
TENSOR_BUNDLE_VERSION = 1  # tensor_bundle.cc kTensorBundleVersion: what a reader of this format may accept

# DataType (tensorflow/core/framework/types.proto) -> NumPy dtype, for the types a weight may have.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING, DT_INT64 = 1, 2, 3, 7, 9
_NUMPY = {DT_FLOAT: np.dtype("<f4"), DT_DOUBLE: np.dtype("<f8"), DT_INT32: np.dtype("<i4"),
          DT_INT64: np.dtype("<i8")}
_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
          8: "complex64", 9: "int64", 10: "bool", 14: "bfloat16", 19: "float16", 20: "resource", 21: "variant"}

_HEADER = {1: ("num_shards", pw.VARINT, False), 2: ("endianness", pw.VARINT, False),
           3: ("version", pw.LENGTH, False)}
_VERSION = {1: ("producer", pw.VARINT, False), 2: ("min_consumer", pw.VARINT, False),
            3: ("bad_consumers", pw.VARINT, True)}
_ENTRY = {1: ("dtype", pw.VARINT, False), 2: ("shape", pw.LENGTH, False), 3: ("shard_id", pw.VARINT, False),
          4: ("offset", pw.VARINT, False), 5: ("size", pw.VARINT, False), 6: ("crc32c", pw.FIXED32, False),
          7: ("slices", pw.LENGTH, True)}
_SHAPE = {2: ("dim", pw.LENGTH, True), 3: ("unknown_rank", pw.VARINT, False)}
_DIM = {1: ("size", pw.VARINT, False)}


@dataclass(frozen=True)
class Entry:
    """One BundleEntryProto: where a tensor's bytes are, and what they hold."""

    key: str
    dtype: int  # a DataType code: 1 float32, 2 float64, 7 string, 9 int64, ...
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked
    # a partitioned tensor's slices, ((start, length), ...) each (weights_tools.tensor_slices); () if whole
    slices: tuple = ()

    @property
    def dtype_name(self) -> str:
        return _NAMES.get(self.dtype, f"DataType {self.dtype}")


def _count(shape: tuple[int, ...]) -> int:
    """The number of values of ``shape`` (a Python int: no overflow whatever the file claims)."""
    count = 1
    for d in shape:
        count *= d
    return count


def data_filename(prefix: pathlib.Path, shard: int, shards: int) -> pathlib.Path:
    """``P.data-00000-of-00001`` (tensor_bundle/naming.cc ``DataFilename``)."""
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{shards:05d}")


def bundle_prefix(path) -> pathlib.Path:
    """The bundle prefix of ``ckpt``, ``ckpt.index`` or ``ckpt.data-00000-of-00001``."""
    path = pathlib.Path(path)
    name = path.name
    if name.endswith(".index"):
        return path.with_name(name[:-len(".index")])
    if ".data-" in name:
        return path.with_name(name.split(".data-")[0])
    return path


def _decode_entry(key: str, value: bytes, where: str, slice_budget: pw.FieldBudget | None = None) -> Entry:
    """A BundleEntryProto, its shape and slices checked. ``slice_budget``: the slices the whole table may
    still list (each needs an entry of its own, so at most its slice entries), charged before each is
    decoded; None: a slice's own entry, which lists none."""
    left = slice_budget.left if slice_budget is not None else 0
    budget = pw.FieldBudget(MAX_PROTO_FIELDS + max(left, 0), "fields")
    try:
        e = pw.message(value, _ENTRY, budget)
        dims = []
        if "shape" in e:
            shape = pw.message(e["shape"], _SHAPE, budget)
            if shape.get("unknown_rank"):
                raise pw.WireError("a shape of unknown rank")
            for d in shape.get("dim", []):
                dims.append(pw.signed64(pw.message(d, _DIM, budget).get("size", 0)))
    except pw.LimitError as exc:  # slices are fields: an entry may list those the table has entries for
        raise ConversionError(f"{where}: entry {key!r} holds {exc} (the limit: {MAX_PROTO_FIELDS:,} plus one "
                              f"per slice it may list: the table's {0 if slice_budget is None else slice_budget.limit:,} "
                              "slice entries, less those listed before; each slice has an entry of its own)") from None
    except pw.WireError as exc:
        raise ConversionError(f"{where}: entry {key!r} is not a readable BundleEntryProto ({exc})") from None
    if len(dims) > MAX_RANK or any(d < 0 for d in dims):
        raise ConversionError(f"{where}: entry {key!r} has shape {tuple(dims[:MAX_RANK + 1])}; expected "
                              f"at most {MAX_RANK} non-negative dimensions")
    slices, listed = [], e.get("slices", [])
    if listed and slice_budget is None:
        raise ConversionError(f"{where}: entry {key!r}, a slice of a partitioned tensor, lists {len(listed):,} "
                              "slices of its own; a slice's entry holds its bytes")
    for raw in listed:
        try:
            slice_budget.take()
        except pw.LimitError:
            raise ConversionError(f"{where}: entry {key!r} lists {len(listed):,} slices, beyond the table's "
                                  f"{slice_budget.limit:,} slice entries (each slice listed has an entry of its "
                                  "own, so the table's entries list at most that many in all)") from None
        try:
            slices.append(decode_slice(raw, tuple(dims), pw.FieldBudget(MAX_PROTO_FIELDS, "fields")))
        except pw.WireError as exc:
            raise ConversionError(f"{where}: entry {key!r}, a partitioned tensor of shape {tuple(dims)}: slice "
                                  f"{len(slices)} is not a readable TensorSliceProto inside it ({exc})") from None
    return Entry(key, e.get("dtype", 0), tuple(dims), pw.signed64(e.get("shard_id", 0)),
                 pw.signed64(e.get("offset", 0)), pw.signed64(e.get("size", 0)), e.get("crc32c", 0), tuple(slices))


class BundleTensor(StoredArray):
    """One tensor of a :class:`Bundle`: shape and dtype now, its bytes on first use (read once, CRC checked)."""

    def __init__(self, bundle: "Bundle", entry: Entry, dtype: np.dtype):
        self._bundle, self._entry, self.name = bundle, entry, entry.key
        self.shape, self.dtype = entry.shape, dtype
        self._array = None

    def read(self) -> np.ndarray:
        if self._array is None:
            self._array = self._bundle._read_tensor(self._entry, self.dtype)
        return self._array


class Bundle:
    """An open tensor bundle: its entries decoded and checked, its data file open, no tensor read yet.

    ``path``: the prefix (``ckpt``), or ``ckpt.index``. Use as a context manager.
    """

    def __init__(self, path, budget: ReadBudget | None = None):
        self.prefix = bundle_prefix(path)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        self.where = str(self.index_path)
        data = self._read_index()
        entries = read_table(data, self.where)
        if not entries or entries[0][0] != HEADER_KEY:
            raise ConversionError(f"{self.where}: a table without the bundle header (key \"\"); not a "
                                  "TensorFlow checkpoint index")
        self.entries: dict[str, Entry] = {}  # whole tensors, and partitioned ones (their slices below)
        slice_values: dict[bytes, bytes] = {}
        # One budget for the whole table: every slice listed needs an entry of its own, so the table's
        # entries list at most as many slices as it has slice entries, each decoded only once charged.
        slices_left = pw.FieldBudget(sum(raw[:1] == b"\x00" for raw, _ in entries[1:]), "slices")
        for raw, value in entries[1:]:
            if raw[:1] == b"\x00":  # a slice's key (tensor_slices.slice_key), claimed by the tensor listing it
                slice_values[raw] = value
                continue
            try:
                key = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise ConversionError(f"{self.where}: key {raw[:80]!r} is not UTF-8 text") from None
            self.entries[key] = _decode_entry(key, value, self.where, slices_left)
        self._check_header(entries[0][1], len(entries) - 1)
        self.slices: dict[str, list[Entry]] = self._claim_slices(slice_values)
        self.data_paths = [data_filename(self.prefix, i, self.shards) for i in range(self.shards)]
        self.data_sizes = [self._shard_size(i) for i in range(self.shards)]  # every shard, before any data
        self._check_extents()
        self._open: tuple[int, object] | None = None  # (shard, file): the shard last read, kept open
        self.budget = budget or ReadBudget(weight_budget(), self.where, error=ConversionError,
                                           why=" (what the largest supported Xception model holds)")
        self.read_keys: set[str] = set()

    # -- opening ------------------------------------------------------------------------

    def _read_index(self) -> bytes:
        try:
            f = open_regular(self.index_path)
        except FileNotFoundError:
            raise ConversionError(f"{self.where}: no such file (a TensorFlow checkpoint is PREFIX.index plus "
                                  "PREFIX.data-00000-of-00001)") from None
        except IrregularFileError as exc:
            raise ConversionError(str(exc)) from None
        except OSError as exc:
            raise ConversionError(f"{self.where}: cannot open ({exc.strerror or exc})") from None
        with f:
            data = f.read(MAX_INDEX_BYTES + 1)
        if len(data) > MAX_INDEX_BYTES:
            raise ConversionError(f"{self.where}: over {MAX_INDEX_BYTES:,} bytes; a Keras checkpoint index "
                                  "is tens of kB (refused before parsing)")
        return data

    def _claim_slices(self, slice_values: dict[bytes, bytes]) -> dict[str, list[Entry]]:
        """``{key: its slices' entries}`` of each partitioned tensor: every slice it lists has an entry of
        its dtype and shape, together they hold its values, and every slice entry belongs to one tensor."""
        out = {}
        for e in self.entries.values():
            if not e.slices:
                continue
            if e.size or e.dtype not in _NUMPY:
                raise ConversionError(f"{self.where}: entry {e.key!r} ({e.dtype_name}) is partitioned and claims "
                                      f"{e.size:,} bytes of its own; a partitioned tensor is numeric and its "
                                      "slices hold its bytes")
            parts, values = [], 0
            for extents in e.slices:
                value = slice_values.pop(slice_key(e.key, extents), None)
                name = f"{e.key}{describe(extents)}"
                if value is None:
                    raise ConversionError(f"{self.where}: entry {e.key!r} lists slice {describe(extents)}, which "
                                          "has no entry (or is listed twice); a corrupt checkpoint")
                part = _decode_entry(name, value, self.where)
                shape = tuple(len(range(*r.indices(d))) for r, d in zip(region(extents, e.shape), e.shape))
                if part.slices or part.dtype != e.dtype or part.shape != shape:
                    raise ConversionError(f"{self.where}: slice {name!r} is {part.dtype_name} of shape "
                                          f"{part.shape}; expected {e.dtype_name} of shape {shape}")
                values += _count(shape)
                parts.append(part)
            if values != _count(e.shape):
                raise ConversionError(f"{self.where}: entry {e.key!r} of shape {e.shape} lists slices of "
                                      f"{values:,} values in all; its shape holds {_count(e.shape):,}")
            out[e.key] = parts
        if slice_values:
            raw = next(iter(slice_values))
            raise ConversionError(f"{self.where}: entry {raw[:80]!r} is a slice that no tensor lists "
                                  f"({len(slice_values)} such entr{'y' if len(slice_values) == 1 else 'ies'})")
        return out

    def _check_header(self, value: bytes, entries: int):
        budget = pw.FieldBudget(MAX_PROTO_FIELDS, "fields")
        try:
            header = pw.message(value, _HEADER, budget)
            version = pw.message(header.get("version", b""), _VERSION, budget)
        except pw.WireError as exc:
            raise ConversionError(f"{self.where}: unreadable bundle header ({exc})") from None
        if header.get("endianness", 0) != 0:
            raise ConversionError(f"{self.where}: a big-endian bundle; only little-endian bundles (what "
                                  "every common platform writes) are read")
        shards = pw.signed64(header.get("num_shards", 0))
        # TensorFlow writes no empty shard: each holds at least one entry (the object graph is one)
        if not 1 <= shards <= max(1, entries):
            raise ConversionError(f"{self.where}: a bundle of {shards:,} data shards for {entries:,} "
                                  "entries; expected 1 to one shard per entry")
        self.shards = shards
        if pw.signed64(version.get("min_consumer", 0)) > TENSOR_BUNDLE_VERSION:
            raise ConversionError(f"{self.where}: bundle format version {version.get('min_consumer')} "
                                  f"(a newer TensorFlow); this reader knows version {TENSOR_BUNDLE_VERSION}")

    def _form(self) -> str:
        """What the files of this bundle are, for an error about one of them."""
        last = self.data_paths[-1].name
        return (f"a TensorFlow checkpoint is PREFIX.index plus its data file{'s' if self.shards > 1 else ''} "
                + (f"{self.data_paths[0].name} to {last}" if self.shards > 1 else last) + "; copy them all")

    def _open_shard(self, shard: int):
        path = self.data_paths[shard]
        try:
            return open_regular(path)
        except FileNotFoundError:
            raise ConversionError(f"{self.where}: its data file {path.name} is missing ({self._form()})") from None
        except IrregularFileError as exc:
            raise ConversionError(f"{self.where}: data file {exc}") from None
        except OSError as exc:
            raise ConversionError(f"{path}: cannot open ({exc.strerror or exc})") from None

    def _shard_size(self, shard: int) -> int:
        with self._open_shard(shard) as f:
            return os.fstat(f.fileno()).st_size

    def _check_extents(self):
        """Every entry's bytes inside its shard, as many as its shape and dtype say, overlapping no other's."""
        spans = []
        for e in [*self.entries.values(), *(p for parts in self.slices.values() for p in parts)]:
            if not 0 <= e.shard < self.shards:
                raise ConversionError(f"{self.where}: entry {e.key!r} is in shard {e.shard}; the bundle has "
                                      f"{self.shards} (shards 0 to {self.shards - 1})")
            size = self.data_sizes[e.shard]
            if e.offset < 0 or e.size < 0 or e.offset + e.size > size:
                raise ConversionError(f"{self.where}: entry {e.key!r} claims bytes {e.offset:,}..{e.offset + e.size:,} "
                                      f"of {self.data_paths[e.shard].name}, which holds {size:,} (a truncated "
                                      f"or corrupt checkpoint, or a shard of another one; {self._form()})")
            if e.dtype in _NUMPY and not e.slices:
                count = _count(e.shape)
                if count * _NUMPY[e.dtype].itemsize != e.size:
                    raise ConversionError(f"{self.where}: entry {e.key!r} of shape {e.shape} ({e.dtype_name}) "
                                          f"claims {e.size:,} bytes; its shape needs "
                                          f"{count * _NUMPY[e.dtype].itemsize:,}")
            if e.size:
                spans.append((e.shard, e.offset, e.offset + e.size, e.key))
        spans.sort()
        for (shard, _, end, key), (next_shard, start, _, other) in zip(spans, spans[1:]):
            if shard == next_shard and start < end:
                raise ConversionError(f"{self.where}: entries {key!r} and {other!r} share bytes of "
                                      f"{self.data_paths[shard].name}; TensorFlow writes each tensor once")

    def close(self):
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- tensors --------------------------------------------------------------------------

    def tensor(self, key: str) -> BundleTensor:
        """The weight ``key``, checked but not read: float32/float64 (or an integer scalar, a counter)."""
        e = self.entries.get(key)
        if e is not None and e.dtype in _NUMPY and _NUMPY[e.dtype].kind != "f" and e.shape != ():
            raise ConversionError(f"{self.where}: entry {key!r} has dtype {e.dtype_name}; weights must be "
                                  "float32 or float64")
        return self.array(key)

    def array(self, key: str) -> BundleTensor:
        """Any numeric entry (float32, float64, int32, int64), checked but not read."""
        e = self.entries.get(key)
        if e is None:
            raise ConversionError(f"{self.where}: no entry {key!r}")
        dtype = _NUMPY.get(e.dtype)
        if dtype is None:
            raise ConversionError(f"{self.where}: entry {key!r} has dtype {e.dtype_name}; weights must be "
                                  "float32 or float64")
        return BundleTensor(self, e, dtype)

    def _bytes(self, e: Entry, crc_of=None) -> bytes:
        """The entry's bytes, read once; ``crc_of(raw)`` gives the bytes its CRC covers (default: all)."""
        if e.key in self.read_keys:
            raise ConversionError(f"{self.where}: entry {e.key!r} is read a second time; every weight is read once")
        self.read_keys.add(e.key)
        path, data = self.data_paths[e.shard], self._data(e.shard)
        try:
            data.seek(e.offset)
            raw = data.read(e.size)
        except OSError as exc:
            raise ConversionError(f"{path}: cannot read entry {e.key!r} ({exc})") from None
        if len(raw) != e.size:
            raise ConversionError(f"{path}: entry {e.key!r} ends after {len(raw):,} of its {e.size:,} "
                                  "bytes (the file shrank while being read?)")
        actual = crc32c(raw) if crc_of is None else crc32c(crc_of(raw))
        if unmask(e.crc32c) != actual:
            raise ConversionError(f"{self.where}: entry {e.key!r} fails its checksum (stored "
                                  f"{unmask(e.crc32c):08x}, computed {actual:08x} on its {e.size:,} bytes in "
                                  f"{path.name}); a corrupt checkpoint")
        return raw

    def _data(self, shard: int):
        """Shard ``shard``'s file, open (one at a time: a bundle may have more shards than a process may
        open files), still the size its entries were checked against."""
        if self._open is None or self._open[0] != shard:
            self.close()
            f = self._open_shard(shard)
            self._open = (shard, f)
            if os.fstat(f.fileno()).st_size != self.data_sizes[shard]:
                raise ConversionError(f"{self.data_paths[shard]}: changed size while the checkpoint was read "
                                      f"(was {self.data_sizes[shard]:,} bytes)")
        return self._open[1]

    def _read_tensor(self, e: Entry, dtype: np.dtype) -> np.ndarray:
        count = _count(e.shape)
        # Charged as parameters x 8 bytes whatever the stored dtype, as weights_tools.hdf5 does.
        self.budget.charge(count * PARAM_BYTES, f"entry {e.key!r} ({count:,} values)")
        if not e.slices:
            return np.frombuffer(self._bytes(e), dtype).reshape(e.shape).astype(dtype.newbyteorder("="))
        # A partitioned tensor: each slice read once into its place; slices that overlap are refused, and
        # _claim_slices checked that they hold as many values as the tensor, so together they fill it.
        out = np.empty(e.shape, dtype.newbyteorder("="))
        filled = np.zeros(e.shape, bool)
        for part, extents in zip(self.slices[e.key], e.slices):
            at = region(extents, e.shape)
            if filled[at].any():
                raise ConversionError(f"{self.where}: slice {part.key!r} overlaps another slice of {e.key!r}")
            out[at] = np.frombuffer(self._bytes(part), dtype).reshape(part.shape)
            filled[at] = True
        return out

    def string(self, key: str) -> bytes:
        """A DT_STRING scalar (the object graph): varint64 length, masked CRC32C of the length as a
        uint32, the bytes (tensor_bundle.cc ``WriteStringTensor``); every part checked."""
        e = self.entries.get(key)
        if e is None:
            raise ConversionError(f"{self.where}: no entry {key!r}")
        if e.dtype != DT_STRING or e.shape != () or e.slices:
            raise ConversionError(f"{self.where}: entry {key!r} is {e.dtype_name} of shape {e.shape}; "
                                  "expected a string scalar")
        if e.size > MAX_STRING_BYTES:
            raise ConversionError(f"{self.where}: entry {key!r} claims {e.size:,} bytes, over the "
                                  f"{MAX_STRING_BYTES:,}-byte limit")
        parts = {}

        def covered(raw):  # the CRC covers the length as a uint32, not as the varint stored
            try:
                length, pos = pw.read_varint(raw, 0)
            except pw.WireError as exc:
                raise ConversionError(f"{self.where}: entry {key!r}: unreadable string length ({exc})") from None
            if pos + 4 + length != len(raw) or length > 0xFFFFFFFF:
                raise ConversionError(f"{self.where}: entry {key!r}: a string of {length:,} bytes in a "
                                      f"{len(raw):,}-byte entry")
            parts["text"] = raw[pos + 4:]
            return struct.pack("<I", length) + raw[pos:]

        self._bytes(e, covered)
        return parts["text"]
