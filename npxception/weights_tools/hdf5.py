"""Guarded HDF5 reading: every weight file may be broken or hostile.

Crafted HDF5 files have crashed libhdf5 (several CVEs), and some HDF5 features
read data from outside the file. Like Keras 3.12.3+, we read through guards and
refuse, naming the file and the object:

* external links and soft links (they point outside the object tree we check);
* datasets with external storage (``dset.external``): they read arbitrary
  local files, and their reported storage size is tiny;
* virtual datasets (``dset.is_virtual``): they assemble data from other files;
* datasets claiming more bytes than the whole file holds (a decompression or
  allocation bomb, or a truncated file);
* chunks larger than their dataset: only an extendible dataset can have one
  (Keras writes none), and reading it inflates the whole chunk, up to 4 GiB
  behind a 3.5 kB kernel. Reads are charged the whole chunks they touch;
* datasets of a non-float dtype (weights are floating point; integer scalars,
  the counters of adapted layers, are the one exception).

And, against amplification (the budget rule, docs/security.md):

* **each dataset is referenced once.** Names are resolved to HDF5 object ids;
  a second name for the same data (``weight_names`` listing it twice, a layer
  listed twice in ``layer_names``, a hard link) is refused before anything is read;
* **headers before data.** Readers get a :class:`StoredArray`: the dataset's
  shape and dtype, read only when the converter has checked them against the
  layer they belong to (``np.asarray`` reads it, once);
* **a read budget.** Every read is charged, before it allocates, against the
  bytes a valid file can hold (:func:`npxception.weights.weight_budget`);
* **text attributes within bounds.** ``model_config``, ``layer_names`` and
  ``weight_names`` are checked, by their stored size and element count, before
  they are read (:func:`GuardedH5.attr_text`, :func:`GuardedH5.attr_strings`):
  parsed, 40 MB of JSON took 1.3 GB. A variable-length one (h5py 3 stores Keras' name lists
  so) is read within ``VLEN_READ_BYTES`` of address space: its entries may all point to one
  large heap string, and HDF5 reads an attribute whole;
* **a listing budget.** Every group's size is charged against ``CONFIG.max_h5_listings``
  before its members are listed (1,000,000 hard links took 6 minutes to walk).
"""

from __future__ import annotations

import contextlib
import io
import math
import os

import h5py
import numpy as np

from npxception.config import CONFIG
from npxception.untrusted import ReadBudget, address_space_cap, short_repr
from npxception.weights import weight_budget

from .errors import ConversionError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# A compressed dataset may legitimately expand; allow this ratio over the file size.
MAX_EXPANSION = 64
PARAM_BYTES = 8  # the read budget counts every parameter as a float64
# Address space a variable-length text attribute may take while libhdf5 reads it: its text
# (CONFIG.max_config_bytes), per-entry overhead (~100 bytes x 100,000 names) and a new
# malloc arena (64 MiB reserved), with room to spare.
VLEN_READ_BYTES = 256 * 1024**2
# Names in one string-list attribute (all its split chunks together).
MAX_NAMES = {"layer_names": CONFIG.max_config_layers, "weight_names": CONFIG.max_weight_names}
# An object path quoted in an error, cut beyond this (the file chose it: weight_names may hold 8 MiB).
# Real ones stay whole: a nested Keras 3 path such as layers/functional/layers/xception/layers/
# separable_conv2d_11/vars/0 is ~80 characters.
NAME_CHARS = 200


def open_h5(src, where: str):
    """Open ``src`` (a path or a binary file object) read-only; ConversionError if it is not HDF5."""
    try:
        return h5py.File(src, "r")
    except (OSError, ValueError) as exc:
        reason = str(exc).split("(")[0].strip().rstrip(".") or type(exc).__name__
        raise ConversionError(f"{where}: not a readable HDF5 file ({reason}; truncated or corrupt?)") from None


def file_size(src) -> int:
    if isinstance(src, (io.BytesIO,)):
        return len(src.getbuffer())
    if hasattr(src, "seek"):
        pos = src.tell()
        src.seek(0, os.SEEK_END)
        size = src.tell()
        src.seek(pos)
        return size
    return os.path.getsize(src)


class StoredArray(np.lib.mixins.NDArrayOperatorsMixin):
    """One checked dataset of a :class:`GuardedH5`: its shape and dtype now, its data on first use.

    ``np.asarray(stored)`` (or any NumPy operation) reads the data, once,
    charging the file's read budget first. Converters check ``shape`` and
    ``dtype`` against the layer the array belongs to before that.
    """

    def __init__(self, h5: "GuardedH5", dset, name: str, work: int | None = None):
        self._h5, self._dset, self.name = h5, dset, name
        self.shape = tuple(int(d) for d in dset.shape)
        self.dtype = dset.dtype
        self._work = work  # the values a read inflates (whole chunks), checked by GuardedH5.stored
        self._array = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def read(self) -> np.ndarray:
        if self._array is None:
            self._array = self._h5._read_data(self._dset, self.name, self.size, self._work)
            self._dset = None
        return self._array

    def __array__(self, dtype=None, copy=None):
        a = self.read()
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(i.read() if isinstance(i, StoredArray) else i for i in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __getitem__(self, index):
        return self.read()[index]

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __getattr__(self, attr):  # .T, .astype, .tolist, ...: the data's own
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.read(), attr)

    def __repr__(self):
        state = "read" if self._array is not None else "not read"
        return f"<StoredArray {self.name} shape={self.shape} dtype={self.dtype} ({state})>"


class GuardedH5:
    """A read-only view of an HDF5 file that checks every object before reading it.

    ``budget``: the total bytes its datasets may make us read; by default what
    the largest valid Xception file can hold.
    """

    def __init__(self, src, where: str, budget: ReadBudget | None = None):
        self.where = where
        self.size = file_size(src)
        self.budget = budget or ReadBudget(weight_budget(), where, error=ConversionError,
                                           why=" (what the largest supported Xception model holds)")
        self.referenced: dict = {}  # dataset object id -> the name it was first reached by
        self.listings_left = CONFIG.max_h5_listings  # group members all walks of this file may list
        self.file = open_h5(src, where)

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_link(self, group, name):
        path = short_repr(f"{group.name.rstrip('/')}/{name}", NAME_CHARS)
        try:
            link = group.get(name, getlink=True)
        except (KeyError, OSError, ValueError) as exc:
            raise ConversionError(f"{self.where}: unreadable HDF5 object {path} ({exc})") from None
        if link is None:
            raise ConversionError(f"{self.where}: missing HDF5 object {path}")
        if isinstance(link, h5py.ExternalLink):
            raise ConversionError(f"{self.where}: refusing external link {path} "
                                  f"-> {short_repr(f'{link.filename}:{link.path}', NAME_CHARS)}")
        if isinstance(link, h5py.SoftLink):
            raise ConversionError(f"{self.where}: refusing soft link {path} -> {short_repr(link.path, NAME_CHARS)}")

    def get(self, group, path: str):
        """``group[path]``, refusing any link that is not a plain hard link along the way."""
        obj = group
        for part in [p for p in path.split("/") if p]:
            if not isinstance(obj, h5py.Group):
                raise ConversionError(f"{self.where}: {short_repr(obj.name, NAME_CHARS)} is not a group (looking for "
                                      f"{short_repr(path, NAME_CHARS)})")
            self._check_link(obj, part)
            try:
                obj = obj[part]
            except (KeyError, OSError, ValueError) as exc:
                raise ConversionError(f"{self.where}: unreadable HDF5 object {short_repr(path, NAME_CHARS)} ({exc})") from None
        return obj

    def keys(self, group) -> list[str]:
        """The member names of ``group``, each checked to be a hard link.

        Charged against the file's listing budget (``CONFIG.max_h5_listings``) by the group's
        size, which libhdf5 keeps in the group's header, before a name is listed: a 30 MB file
        of 1,000,000 hard links took 6 minutes to walk.
        """
        if not hasattr(group, "keys"):
            raise ConversionError(f"{self.where}: {group.name} is a dataset where a group was expected")
        try:
            count = len(group)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConversionError(f"{self.where}: unreadable HDF5 group {group.name} ({exc})") from None
        if count > self.listings_left:
            raise ConversionError(
                f"{self.where}: group {group.name} holds {count:,} objects; only {self.listings_left:,} of the "
                f"{CONFIG.max_h5_listings:,} group members that reading one Xception file may list are left "
                "(a hostile or corrupt file?); refused before listing them")
        self.listings_left -= count
        try:
            names = list(group.keys())
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConversionError(f"{self.where}: unreadable HDF5 group {group.name} ({exc})") from None
        for n in names:
            self._check_link(group, n)
        return names

    def read(self, group, path: str) -> np.ndarray:
        """Read one float dataset, after every guard."""
        return self.stored(group, path).read()

    def stored(self, group, path: str) -> StoredArray:
        """One float dataset, checked but not read: a second reference to it is refused."""
        dset = self.get(group, path)
        name = dset.name
        if not isinstance(dset, h5py.Dataset):
            raise ConversionError(f"{self.where}: {name} is not a dataset")
        if dset.is_virtual:
            raise ConversionError(f"{self.where}: refusing virtual dataset {name}")
        if dset.external:
            raise ConversionError(f"{self.where}: refusing dataset {name} with external storage "
                                  f"({dset.external[0][0]!r}...)")
        # An integer scalar is a counter (Normalization's adapted `count`), never a weight we use.
        if dset.dtype.kind != "f" and not (dset.dtype.kind in "iu" and dset.shape == ()):
            if dset.dtype == np.dtype("V2") and self.attr_strings(dset, "dtype") == ["bfloat16"]:
                # Keras 3 stores a "bfloat16" policy's variables as opaque 2-byte records tagged so
                raise ConversionError(
                    f"{self.where}: dataset {name} holds bfloat16 weights (a model built under the dtype policy "
                    "'bfloat16'); npxception reads float16, float32 and float64 weights. Rebuild the model under "
                    "keras.config.set_dtype_policy('mixed_bfloat16') (float32 variables), load its weights, save "
                    "it again and convert that with --dtype-policy float32")
            quantized = ""
            if dset.dtype.kind in "iu" and dset.dtype.itemsize == 1:
                # Keras 3's model.quantize("int8"/"int4") stores each kernel as int8 (int4 packed two to a byte)
                # beside a float kernel_scale (keras/src/layers/core/dense.py, _int8_build/_int4_build)
                quantized = (". This looks like a layer quantized by Keras' model.quantize('int8') or ('int4'): an "
                             "integer kernel beside its float kernel_scale. npxception does not compute quantized "
                             "layers, and the float weights cannot be recovered from them: convert the float "
                             "model, saved before quantize() was called")
            raise ConversionError(f"{self.where}: dataset {name} has dtype {dset.dtype}; weights must be "
                                  "floating point" + quantized)
        claimed = math.prod(int(d) for d in dset.shape) * dset.dtype.itemsize
        if claimed > MAX_EXPANSION * self.size + (1 << 16):
            raise ConversionError(f"{self.where}: dataset {name} claims {claimed} bytes, far more than "
                                  f"the {self.size}-byte file holds")
        try:
            stored = dset.id.get_storage_size()
        except (OSError, ValueError, RuntimeError):
            stored = 0
        if dset.compression is None and claimed and stored < claimed:
            raise ConversionError(f"{self.where}: dataset {name} stores {stored} of its {claimed} bytes "
                                  "(truncated file?)")
        work = self._chunk_work(dset, name)
        first = self.referenced.get(dset.id)
        if first is not None:
            again = "referenced a second time" if first == name else f"the same data as {first} (a hard link)"
            raise ConversionError(f"{self.where}: dataset {name} is {again}; every weight is read once")
        self.referenced[dset.id] = name
        return StoredArray(self, dset, name, work)

    def _chunk_work(self, dset, name: str) -> int:
        """The values libhdf5 inflates to read ``dset`` whole: every chunk it touches, in full.

        A chunk dimension beyond the dataset's is refused: HDF5 allows one only
        along an extendible dimension, Keras never writes extendible datasets, and
        one such chunk (up to 4 GiB, ~1 MB compressed) hid behind a 3.5 kB kernel.
        """
        shape = tuple(int(d) for d in dset.shape)
        chunks = dset.chunks
        size = math.prod(shape)
        if chunks is None or size == 0:
            return size
        if any(c > s for c, s in zip(chunks, shape)):
            chunk_bytes = math.prod(chunks) * dset.dtype.itemsize
            raise ConversionError(f"{self.where}: dataset {name} of shape {shape} is stored in chunks of "
                                  f"{tuple(chunks)} ({chunk_bytes:,} bytes each), larger than the dataset; "
                                  "expected chunks within its shape (a hostile or corrupt file?)")
        return math.prod(-(-s // c) * c for s, c in zip(shape, chunks))

    def _read_data(self, dset, name: str, size: int, work: int | None = None) -> np.ndarray:
        # Charged as parameters x 8 bytes whatever the stored dtype, so a float16
        # file cannot fit twice the parameters into the budget; a chunked dataset
        # is charged the whole chunks its read inflates.
        work = size if work is None else work
        self.budget.charge(work * PARAM_BYTES, f"dataset {name} ({size:,} values"
                           + (f" in chunks holding {work:,})" if work != size else ")"))
        try:
            return np.array(dset[()])
        except MemoryError:
            raise ConversionError(f"{self.where}: dataset {name} ({size:,} values) does not fit in "
                                  "memory") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise ConversionError(f"{self.where}: cannot read dataset {name} ({exc}; truncated file?)") from None

    def _attr_header(self, obj, key: str) -> tuple[tuple, int, bool]:
        """An attribute's shape, stored bytes and whether it is variable-length, read without its data."""
        try:
            aid = obj.attrs.get_id(key)
            if aid.shape is None:  # a null dataspace (h5py.Empty): no value at all
                return (0,), 0, False
            shape = tuple(aid.shape)
            kind = aid.get_type()
            variable = isinstance(kind, h5py.h5t.TypeVlenID) or (
                isinstance(kind, h5py.h5t.TypeStringID) and kind.is_variable_str())
            # an empty list (a layer without weights) stores nothing: libhdf5 reports 0 as an error
            return shape, int(aid.get_storage_size()) if math.prod(shape) else 0, variable
        except (KeyError, OSError, ValueError, RuntimeError) as exc:
            raise ConversionError(f"{self.where}: attribute {key} of {obj.name} is unreadable ({exc})") from None

    def _attrs_checked(self, obj, keys: list[str], max_count: int, expected: str) -> list:
        """The values of attributes ``keys`` (one attribute, or the chunks of a split one), read only
        after their element count and stored bytes, all chunks together, are checked.

        A variable-length string stores a 16-byte pointer into the file's heap, and every
        entry of a list may point to the same large string: 20,000 entries of one 100 kB
        string (a 0.9 MB file) read as 2.4 GB. Real writers use that form (h5py 3 stores
        Keras' lists of encoded names so: tf_keras and Keras 3's legacy writer), and HDF5
        reads an attribute whole, with no way to see the strings' lengths first, so such an
        attribute is read within ``VLEN_READ_BYTES`` of address space, and its text checked after.
        """
        what = f"{self.where}: attribute {keys[0]}" + (f" (split in {len(keys)})" if len(keys) > 1 else "") \
            + f" of {obj.name}"
        headers = [self._attr_header(obj, k) for k in keys]
        count = sum(math.prod(shape) for shape, _, _ in headers)
        stored = sum(nbytes for _, nbytes, _ in headers)
        if any(len(shape) > 1 for shape, _, _ in headers) or count > max_count:
            raise ConversionError(f"{what} holds {count:,} values"
                                  + (f" of shape {headers[0][0]}" if len(keys) == 1 else "")
                                  + f"; expected {expected}")
        if stored > CONFIG.max_config_bytes:
            raise ConversionError(f"{what} stores {stored:,} bytes; expected at most "
                                  f"{CONFIG.max_config_bytes:,} bytes of text (a hostile or corrupt file?)")
        variable = any(v for _, _, v in headers)
        try:
            with address_space_cap(VLEN_READ_BYTES) if variable else contextlib.nullcontext():
                return [obj.attrs[k] for k in keys]
        except (OSError, ValueError, TypeError, RuntimeError, MemoryError) as exc:
            if variable and (isinstance(exc, MemoryError) or "allocation failed" in str(exc)):
                raise ConversionError(f"{what} is variable-length text that inflates beyond "
                                      f"{VLEN_READ_BYTES:,} bytes when read (its entries point into the file's "
                                      "heap, where one large string can serve them all); "
                                      f"expected {expected} of at most {CONFIG.max_config_bytes:,} bytes in all "
                                      "(a hostile or corrupt file?)") from None
            raise ConversionError(f"{what} is unreadable ({exc}); expected {expected}") from None

    def _text(self, value, where: str, text_left: int) -> str:
        """An attribute's text, UTF-8 decoded; its length checked again (variable-length
        strings live in the file's heap, outside the attribute's stored bytes)."""
        if isinstance(value, bytes):
            if len(value) > text_left:
                raise ConversionError(f"{where} holds {len(value):,} bytes; expected at most "
                                      f"{CONFIG.max_config_bytes:,} bytes of text (a hostile or corrupt file?)")
            try:
                return value.decode("utf8")
            except UnicodeDecodeError as exc:
                raise ConversionError(f"{where} is not UTF-8 text (byte {exc.start}: "
                                      f"{short_repr(value[max(0, exc.start - 20):exc.start + 20])}); "
                                      "expected UTF-8, as Keras writes it") from None
        text = str(value)
        if len(text) > text_left:
            raise ConversionError(f"{where} holds {len(text):,} characters; expected at most "
                                  f"{CONFIG.max_config_bytes:,} bytes of text (a hostile or corrupt file?)")
        return text

    def attr_strings(self, obj, key: str) -> list[str] | None:
        """A string-list attribute (``layer_names``...), possibly split as ``key0``, ``key1``, ...

        Keras splits attributes beyond HDF5's 64 KiB header limit into numbered chunks.
        The names (``MAX_NAMES``) and their bytes (``CONFIG.max_config_bytes``) are
        bounded over all chunks, and checked before each chunk is read.
        """
        attrs = obj.attrs
        if key in attrs:
            parts = [key]
        elif f"{key}0" in attrs:
            parts, i = [], 0
            while f"{key}{i}" in attrs:
                if i >= MAX_NAMES.get(key, CONFIG.max_weight_names):  # every chunk holds a name or more
                    raise ConversionError(f"{self.where}: attribute {key} of {obj.name} is split in more than "
                                          f"{i:,} chunks; expected at most one chunk per name")
                parts.append(f"{key}{i}")
                i += 1
        else:
            return None
        max_names = MAX_NAMES.get(key, CONFIG.max_weight_names)
        values = self._attrs_checked(obj, parts, max_names, f"a list of at most {max_names:,} names")
        text_left = CONFIG.max_config_bytes
        out: list[str] = []
        for part, value in zip(parts, values):
            for v in np.atleast_1d(value):
                text = self._text(v, f"{self.where}: attribute {part} of {obj.name}, entry {len(out)},",
                                  text_left)
                text_left -= len(text)
                out.append(text)
        return out

    def attr_text(self, obj, key: str) -> str | None:
        """A text attribute (``model_config``, ``keras_version``...), at most ``CONFIG.max_config_bytes``."""
        if key not in obj.attrs:
            return None
        value, = self._attrs_checked(obj, [key], 1, "one UTF-8 text")
        if isinstance(value, np.ndarray):
            value = value[()] if value.shape == () else value.reshape(-1)[0]
        return self._text(value, f"{self.where}: attribute {key} of {obj.name}", CONFIG.max_config_bytes)
