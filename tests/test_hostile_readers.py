"""Amplification before the per-object guards: what a reader does while listing, not while reading data.

Reviewer 6's findings, each as a small generated file run in a subprocess under
``RLIMIT_AS`` (a resource limit, not a timed assertion), refused with a line that
names the file, the object and the expected form; and a valid file of the same
kind still read:

* F1: a variable-length name list whose 16-byte entries all point to one large
  heap string (0.9 MB on disk, 2.4 GB when libhdf5 reads it);
* F3: HDF5 groups of many hard links (1,000,000 took 6 minutes to walk);
* F4: zip central directories of many entries, parsed whole by ``zipfile.ZipFile``
  before any count was checked (1,000,000 entries: 635 MB, 22 s);
* and its defence-in-depth note: objects serialised inside an allowed layer's
  config (initializers, regularizers...) were not vetted before Keras opened the file.
"""

from __future__ import annotations

import json
import re
import resource
import struct
import zipfile

import h5py
import numpy as np
import pytest

from npxception.config import CONFIG
from npxception.untrusted import address_space_cap, check_zip_directory
from test_hostile import assert_refused, convert_refused, legacy_xception, run_limited
from npxception.weights_tools.hdf5 import VLEN_READ_BYTES, GuardedH5

TINY_CONFIG = {"class_name": "Functional", "config": {"name": "m", "layers": [
    {"class_name": "InputLayer", "name": "input_layer", "inbound_nodes": [],
     "config": {"batch_shape": [None, 71, 71, 3], "dtype": "float32", "name": "input_layer"}}],
    "input_layers": [["input_layer", 0, 0]], "output_layers": [["input_layer", 0, 0]]}}


# --------------------------------------------------------------------------- F1: variable-length name lists

def shared_heap_names(path, entries: int, text_bytes: int, part: int = 4000):
    """A legacy .h5 whose weight_names (split in parts, as Keras splits long lists) are variable-length
    strings all pointing to ONE ``text_bytes`` heap string: the attribute stores 16 bytes per entry.

    h5py writes one string per entry; the descriptors (``<I length><Q heap address><I index>``) of
    the short ones are then overwritten in the file with the long one's.
    """
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"block1_conv1"]  # Keras' own call: h5py 3 stores it variable-length
        g = f.create_group("block1_conv1")
        big = "k" * text_bytes
        for p in range(0, entries, part):
            n = min(part, entries - p)
            g.attrs.create(f"weight_names{p // part}", np.array([big if p == i == 0 else "b" for i in range(n)],
                                                                dtype=object), dtype=h5py.string_dtype())
    data = bytearray(path.read_bytes())
    at = -1
    while True:  # the long string's descriptor: its length, then the next entry's length 1
        at = data.find(struct.pack("<I", text_bytes), at + 1)
        assert at >= 0
        if data[at + 16:at + 20] == struct.pack("<I", 1):
            break
    desc = bytes(data[at:at + 16])
    i, count = 0, 0
    while (j := data.find(struct.pack("<I", 1), i)) >= 0:  # a 1-byte string's descriptor points to a heap
        addr = struct.unpack("<Q", data[j + 4:j + 12])[0]
        if data[addr:addr + 4] == b"GCOL":
            data[j:j + 16] = desc
            count, i = count + 1, j + 16
        else:
            i = j + 1
    assert count == entries - 1
    path.write_bytes(bytes(data))
    return path


def test_a_name_list_of_one_shared_heap_string_is_refused_within_its_read_bound(tmp_path):
    """20,000 entries of one 100 kB string (2 GB when read, the file under 1 MB): refused naming the
    attribute and its expected form, within the 1 GiB limit (before: "memory allocation failed for VL
    data", which says neither; without a limit, 2.4 GB)."""
    p = shared_heap_names(tmp_path / "shared.h5", 20_000, 100_000)
    assert p.stat().st_size < (1 << 20)
    convert_refused(tmp_path, p, "attribute weight_names0 (split in 5) of /block1_conv1",
                    f"inflates beyond {VLEN_READ_BYTES:,} bytes", "expected a list of at most 100,000 names")


def test_name_lists_as_keras_writes_them_with_h5py3_are_read(tmp_path):
    """tf_keras and Keras 3's legacy writer store ``[name.encode("utf8"), ...]`` with h5py 3, which makes
    them variable-length strings (measured on tf_keras 2.x and Keras 3 files): they must still read."""
    p = legacy_xception(tmp_path / "w.h5")
    with h5py.File(p, "r+") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = [n.encode("utf8") for n in names]  # save_attributes_to_hdf5_group's call
        weight_names = [n.decode() for n in f[names[0]].attrs["weight_names"]]
        f[names[0]].attrs["weight_names"] = [n.encode("utf8") for n in weight_names]
        assert f.attrs.get_id("layer_names").get_type().is_variable_str()
    with GuardedH5(p, str(p)) as h5:
        assert h5.attr_strings(h5.file, "layer_names") == names
        assert h5.attr_strings(h5.file[names[0]], "weight_names") == weight_names


def test_the_address_space_cap_is_lifted_after_its_block():
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with address_space_cap(1 << 30):
        inside = resource.getrlimit(resource.RLIMIT_AS)[0]
    assert inside != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or inside <= soft)
    assert resource.getrlimit(resource.RLIMIT_AS) == (soft, hard)


# --------------------------------------------------------------------------- F3: group walks

def test_a_group_of_many_hard_links_is_refused_before_listing(tmp_path):
    """Keras 3 training state of 12,000 hard links to one value: refused by the group's size, read
    from its header, before one name is listed or checked."""
    p = tmp_path / "links.weights.h5"
    with h5py.File(p, "w", libver="latest") as f:
        g = f.create_group("optimizer/vars")
        d = g.create_dataset("0", data=np.zeros(1, "f4"))
        for i in range(1, 12_000):
            g[str(i)] = d
        f.create_group("layers")
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    convert_refused(tmp_path, p, "group /optimizer/vars holds 12,000 objects",
                    f"of the {CONFIG.max_h5_listings:,} group members", options=("--config", tmp_path / "config.json"))


def test_many_small_groups_are_refused_by_the_walks_total(tmp_path):
    """A legacy file's optimizer_weights of 120 groups of 100 links each: every group is small, the walk
    is not; refused naming the group where the file's budget runs out."""
    p = legacy_xception(tmp_path / "full.h5")
    with h5py.File(p, "r+", libver="latest") as f:
        d = f.create_dataset("optimizer_weights/g0/0", data=np.zeros(1, "f4"))
        for i in range(120):
            for j in range(100):
                if i or j:
                    f[f"optimizer_weights/g{i}/{j}"] = d
    out = run_limited("npxception.weights_tools.cli", "inspect", p)
    assert_refused(out, "full.h5", "of the 10,000 group members that reading one Xception file may list",
                   "group /optimizer_weights/g")


def test_a_valid_files_walk_fits_its_listing_budget(tmp_path):
    """A legacy Xception with Adam state of the real size (2 slots per weight, in per-layer groups)
    is read and its state counted."""
    from npxception.weights_tools import open_layers

    p = legacy_xception(tmp_path / "full.h5")
    with h5py.File(p, "r+") as f:
        f.create_dataset("optimizer_weights/Adam/iterations:0", data=np.zeros((), "i8"))
        weights = [w for layer in f.attrs["layer_names"] for w in f[layer.decode()].attrs["weight_names"]]
        for w in weights:
            for slot in ("m", "v"):
                f.create_dataset(f"optimizer_weights/Adam/{w.decode().replace(':0', '')}/{slot}:0",
                                 data=np.zeros(1, "f4"))
    with open_layers(p) as reading:
        assert reading.ignored["optimizer state"] == 1 + 2 * len(weights) == 469


# --------------------------------------------------------------------------- F4: zip directories

def many_entries(path, entries: int, declared: int | None = None):
    """A zip whose central directory lists ``entries`` names and no data; ``declared``: the count its end
    record claims (zip64 records past 65,535)."""
    cd = b"".join(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0,
                              0, 0) + name for name in (f"{i:x}.npy".encode() for i in range(entries)))
    n = entries if declared is None else declared
    end = b""
    if n > 0xFFFF:
        end = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(cd), 30) \
            + struct.pack("<IIQI", 0x07064B50, 0, 30 + len(cd), 1)
    end += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF), len(cd), 30, 0)
    path.write_bytes(b"PK\x03\x04" + b"\0" * 26 + cd + end)
    return path


def test_an_npz_of_70000_entries_is_refused_from_its_end_record(tmp_path):
    p = many_entries(tmp_path / "many.npz", 70_000)  # zip64: the count is in the zip64 record
    out = run_limited("npxception.cli", "predict", "--weights", p, "README.md")
    assert_refused(out, "many.npz", "its zip directory lists 70,000 entries",
                   f"an .npz weight file holds at most {CONFIG.max_npz_entries:,}")


def test_a_directory_larger_than_its_declared_entries_is_refused(tmp_path):
    """ZipFile parses entries until the directory's size is used up, whatever the count says."""
    p = many_entries(tmp_path / "lying.npz", 60_000, declared=3)
    out = run_limited("npxception.cli", "predict", "--weights", p, "README.md")
    assert_refused(out, "lying.npz", "bytes for 3 entries", "bytes per entry")


def test_a_keras_archive_of_many_entries_is_refused(tmp_path):
    p = many_entries(tmp_path / "many.keras", 5_000)
    convert_refused(tmp_path, p, "its zip directory lists 5,000 entries",
                    f"a .keras archive holds at most {CONFIG.max_keras_entries:,}")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Our model: 3 classes at 71x71, random weights, saved with np.savez."""
    from npxception import Xception

    return Xception(classes=3, input_shape=(71, 71, 3), seed=3).save(tmp_path_factory.mktemp("ours") / "small.npz")


def test_a_dump_of_many_entries_is_refused_before_its_directory_is_read(small, tmp_path):
    p = many_entries(tmp_path / "dump.npz", 12_000)
    out = run_limited("npxception.cli", "compare", "--weights", small, "--against", p)
    assert_refused(out, "dump.npz", "its zip directory lists 12,000 entries", "an activation dump holds at most")


def test_valid_zips_pass_the_directory_check(small, tmp_path):
    """Real writers' files: np.savez of an Xception's weights (our save) and a Keras-written layout."""
    from npxception.weights import read

    with open(small, "rb") as f, zipfile.ZipFile(small) as z:
        assert check_zip_directory(f, "small.npz", max_entries=CONFIG.max_npz_entries, what="x") == len(z.infolist())
    assert read(small)
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:  # saving_lib's members, in its order
        for name in ("metadata.json", "config.json", "model.weights.h5"):
            z.writestr(name, b"{}")
    with open(tmp_path / "m.keras", "rb") as f:
        assert check_zip_directory(f, "m.keras", max_entries=CONFIG.max_keras_entries, what="x") == 3


# --------------------------------------------------------------------------- Keras vetting: nested objects

def conv_archive(path, kernel_initializer: dict):
    """A Keras 3 .keras archive: an input and one Conv2D, whose initializer is ``kernel_initializer``."""
    import io

    conv = {"module": "keras.layers", "class_name": "Conv2D", "name": "conv2d", "inbound_nodes": [
        {"args": [{"class_name": "__keras_tensor__", "config": {"shape": [None, 71, 71, 3], "dtype": "float32",
                                                                "keras_history": ["input_layer", 0, 0]}}],
         "kwargs": {}}],
        "config": {"name": "conv2d", "filters": 2, "kernel_size": [3, 3], "strides": [1, 1], "padding": "valid",
                   "use_bias": False, "activation": "linear", "kernel_initializer": kernel_initializer,
                   "dtype": {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
                             "registered_name": None}}}
    config = {"module": "keras", "class_name": "Functional", "config": {"name": "m", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "name": "input_layer", "inbound_nodes": [],
         "config": {"batch_shape": [None, 71, 71, 3], "dtype": "float32", "name": "input_layer"}}, conv],
        "input_layers": [["input_layer", 0, 0]], "output_layers": [["conv2d", 0, 0]]}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset("layers/conv2d/vars/0", data=np.zeros((3, 3, 3, 2), "f4"))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.6.0"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", buf.getvalue())
    return path


@pytest.mark.parametrize("form", ["archive", "directory"])
def test_an_object_of_another_module_inside_an_allowed_layer_never_reaches_keras(small, tmp_path, form):
    """A Conv2D (an allowed class) whose kernel_initializer names a function of ``os``: before, the vetting
    checked layer classes only and the object reached Keras' deserialisation, behind its safe mode alone.
    The same as Keras 3's model.save(dir, zipped=False) writes it (the archive's members, unzipped)."""
    p = conv_archive(tmp_path / "planted.keras", {"module": "os", "class_name": "system", "config": {},
                                                   "registered_name": "os>system"})
    if form == "directory":
        with zipfile.ZipFile(p) as z:
            z.extractall(tmp_path / "planted")
        p = tmp_path / "planted"
    out = run_limited("npxception.cli", "compare", "--weights", small, "--against", p)
    assert_refused(out, str(p), "refused before Keras opens it",
                   "kernel_initializer = 'system' from module 'os'", "built-in initializers")


def test_keras_built_in_objects_pass_the_vetting(tmp_path):
    from npxception.weights_tools import open_layers
    from npxception.weights_tools.vetting import check_layers

    p = conv_archive(tmp_path / "fine.keras", {"module": "keras.initializers", "class_name": "GlorotUniform",
                                               "config": {"seed": None}, "registered_name": None})
    with open_layers(p) as reading:
        check_layers(reading.klayers, str(p))


# --------------------------------------------------------------------------- names quoted in errors

def test_a_missing_objects_long_name_is_cut_in_the_error(tmp_path):
    """weight_names naming a 1 MB object the file lacks: the refusal names it in one short line (the whole
    name was printed: a 1,000,058-character line), quoted as short_repr quotes long values elsewhere."""
    p = tmp_path / "missing.h5"
    with h5py.File(p, "w") as f:
        f.attrs["layer_names"] = [b"block1_conv1"]
        g = f.create_group("block1_conv1")  # variable-length: the text lives in the heap, past 64 kB
        g.attrs.create("weight_names", np.array(["k" * 1_000_000], dtype=object), dtype=h5py.string_dtype())
    out = run_limited("npxception.weights_tools.cli", "convert", p, "-o", tmp_path / "out.npz")
    assert_refused(out, "missing.h5", "missing HDF5 object '/block1_conv1/kkkk")
    line = [s for s in out.stderr.splitlines() if "missing HDF5 object" in s]
    assert len(line) == 1 and len(line[0]) < len(str(p)) + 300, out.stderr[:1000]


@pytest.mark.parametrize("config, found", [
    ({"class_name": ["XceptionClassifier"], "config": {}}, "class_name ['XceptionClassifier'] and no layer list"),
    ([{"class_name": "XceptionClassifier"}], "a JSON list of no named layer"),
])
def test_a_config_naming_no_layers_says_what_it_is(tmp_path, config, found):
    """Review 23 F8: a config whose class_name is a list, or a bare list of unnamed entries, was "its top-level
    layers are , ..." for a weights-only .h5: the config is described instead, with the form expected."""
    from npxception import weights_tools
    from npxception.weights_tools.errors import ConversionError

    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:  # a legacy weights-only file of one layer, as save_weights lays it out
        f.attrs["layer_names"] = [b"block1_conv1"]
        g = f.create_group("block1_conv1")
        g.attrs["weight_names"] = [b"block1_conv1/kernel:0"]
        g.create_dataset("block1_conv1/kernel:0", data=np.zeros((3, 3, 3, 32), np.float32))
    (tmp_path / "c.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=f"^{path}: the given config names no layers "
                                              rf"\({re.escape(found)}\); expected the config of the model"):
        weights_tools.read(path, config=str(tmp_path / "c.json"))
