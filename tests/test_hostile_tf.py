"""Hostile TensorFlow checkpoints: small forged bundles that try to crash, hang or bloat the reader.

The bundles are written here by a tiny SSTable writer (:func:`write_bundle`,
following google/leveldb's table format document and tensorflow's tensor_bundle.proto,
as weights_tools.tf_bundle reads them; the reader is checked against TensorFlow on
real files in test_real_world_files.py). Big claims are made with small files or
sparse ones (``truncate``), never with big data on disk. As in test_hostile.py,
each case runs in a subprocess under ``RLIMIT_AS`` (a resource limit, not a timed
assertion) and must end with exit status 1 and one clear line naming the file:
never a MemoryError, a traceback, a hang or a kill.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

import limited_runner
from test_hostile import LIMIT, REPO, assert_refused
from npxception.weights_tools.crc32c import crc32c, crc32c_reference, mask, unmask

DT = {np.dtype("float32"): 1, np.dtype("float64"): 2, np.dtype("int64"): 9}
GRAPH_KEY = b"_CHECKPOINTABLE_OBJECT_GRAPH"
MAGIC = struct.pack("<Q", 0xDB4775248B80FB57)


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def f_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def f_bytes(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def entry_proto(dtype, shape, offset, size, crc, shard=0, slices=()) -> bytes:
    dims = b"".join(f_bytes(2, f_varint(1, d)) for d in shape)
    return (f_varint(1, dtype) + f_bytes(2, dims) + f_varint(3, shard) + f_varint(4, offset) + f_varint(5, size)
            + varint(6 << 3 | 5) + struct.pack("<I", crc) + b"".join(f_bytes(7, s) for s in slices))


def slice_proto(extents) -> bytes:
    """A TensorSliceProto: ``(start, length)`` per dimension, length -1 for the whole dimension (no field)."""
    return b"".join(f_bytes(1, f_varint(1, a) + (f_varint(2, n) if n != -1 else b"")) for a, n in extents)


def block(pairs, kind=0) -> bytes:
    """A block without prefix compression (one restart point), with its trailer."""
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in pairs)
    body += struct.pack("<II", 0, 1)
    return body + bytes([kind]) + struct.pack("<I", mask(crc32c(body + bytes([kind]))))


def finish_table(table: bytes, handles) -> bytes:
    """The data blocks ``table`` (``handles``: each block's (offset, size)) with an empty metaindex block,
    the index block (block i keyed by i + 1, as two bytes: keys only order them) and the footer."""
    metaindex = block([])
    meta_handle = (len(table), len(metaindex) - 5)
    table += metaindex
    index = block([(bytes([i + 1]) * 2, varint(o) + varint(s)) for i, (o, s) in enumerate(handles)])
    index_handle = (len(table), len(index) - 5)
    table += index
    footer = (varint(meta_handle[0]) + varint(meta_handle[1]) + varint(index_handle[0]) + varint(index_handle[1]))
    return table + footer.ljust(40, b"\0") + MAGIC


def write_bundle(prefix, tensors: dict, *, graph=b"\x0a\x00", shards=1, endianness=0, kind=0, edit=None,
                 data_size=None, duplicate_block=False, shard_of=lambda key: 0):
    """``prefix.index`` + ``prefix.data-0000i-of-0000N`` for each of the ``shards`` (``shard_of(key)``: where
    each tensor goes); ``edit(key, fields) -> fields`` forges an entry."""
    datas, pairs = [bytearray() for _ in range(max(shards, 1))], []
    raw_graph = varint(len(graph)) + struct.pack("<I", mask(crc32c(struct.pack("<I", len(graph))))) + graph
    graph_crc = crc32c(struct.pack("<I", len(graph)) + raw_graph[len(varint(len(graph))):])
    items = {k if isinstance(k, bytes) else k.encode(): np.asarray(a) for k, a in tensors.items()}
    for key in sorted(set(items) | {GRAPH_KEY}):
        shard = shard_of(key.decode("latin-1"))  # latin-1: a slice's key is not UTF-8
        data = datas[shard]
        if key == GRAPH_KEY:
            fields = dict(dtype=7, shape=(), offset=len(data), size=len(raw_graph), crc=mask(graph_crc), shard=shard)
            data += raw_graph
        else:
            raw = items[key].astype(items[key].dtype.newbyteorder("<")).tobytes()
            fields = dict(dtype=DT[items[key].dtype], shape=items[key].shape, offset=len(data), size=len(raw),
                          crc=mask(crc32c(raw)), shard=shard)
            data += raw
        if edit is not None:
            fields = edit(key.decode("latin-1"), fields)
        pairs.append((key, entry_proto(**fields)))
    header = f_varint(1, shards) + f_varint(2, endianness) + f_bytes(3, f_varint(1, 1))
    first = block([(b"", header)] + pairs[:1], kind)
    second = block(pairs[1:], kind)
    handles = [(0, len(first) - 5), (len(first), len(second) - 5)]
    if duplicate_block:
        handles.append(handles[1])  # the same data block listed twice
    with open(f"{prefix}.index", "wb") as f:
        f.write(finish_table(first + second, handles))
    for shard, data in enumerate(datas):
        with open(f"{prefix}.data-{shard:05d}-of-{max(shards, 1):05d}", "wb") as f:
            f.write(data)
            if data_size is not None and shard == 0:
                f.truncate(data_size)  # sparse: claims bytes without storing them
    return prefix


CONFIG = '{"class_name": "Sequential", "config": {"name": "m", "layers": []}}'
WEIGHTS = {"layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.arange(12, dtype=np.float32).reshape(3, 4)}


def run_limited(module: str, *args, cpu: int = 0):
    """test_hostile.run_limited's child (``main(args)`` of ``module`` forked by tests/limited_runner.py under
    RLIMIT_AS ``LIMIT``, and RLIMIT_CPU ``cpu`` seconds when given), from one server per module for this file:
    the environment without pytest's PYTEST_CURRENT_TEST, which names each test and would start a server (and
    its ~1.5 s of imports) per test; tests/ on the path for read_all_bundle."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = os.pathsep.join([REPO, os.path.dirname(os.path.abspath(__file__)),
                                         os.environ.get("PYTHONPATH", "")])
    return limited_runner.run(module, args, limit=LIMIT, cpu=cpu, env=env)


def read_refused(prefix, *fragments):
    """A child that opens the bundle and reads every numeric entry, as the converter does once it has checked
    shapes (tests/read_all_bundle.py), under RLIMIT_AS ``LIMIT``."""
    assert_refused(run_limited("read_all_bundle", prefix), os.path.basename(str(prefix)), *fragments)


def convert_refused(tmp_path, src, *fragments):
    config = tmp_path / "config.json"
    config.write_text(CONFIG)
    out = run_limited("npxception.weights_tools.cli", "convert", src, "-o", tmp_path / "out.npz", "--config", config)
    assert_refused(out, os.path.basename(str(src)), *fragments)
    assert not list(tmp_path.glob("out.npz*")), "a refused conversion left a file"


def test_crc32c_kernel_matches_its_reference():
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 9, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == crc32c_reference(data)
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value (RFC 3720, B.4)
    assert crc32c(b"6789", crc32c(b"12345")) == 0xE3069283  # extending
    assert unmask(mask(0x12345678)) == 0x12345678


def test_a_forged_bundle_reads_back(tmp_path):
    """The writer below is sound: what it writes, the reader returns, checksums included."""
    from npxception.weights_tools.tf_bundle import Bundle

    prefix = write_bundle(tmp_path / "ok", WEIGHTS)
    with Bundle(prefix) as b:
        key = next(iter(WEIGHTS))
        np.testing.assert_array_equal(b.tensor(key).read(), WEIGHTS[key])
        assert b.string(GRAPH_KEY.decode()) == b"\x0a\x00"


def test_truncated_index(tmp_path):
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS)
    index = tmp_path / "ckpt.index"
    index.write_bytes(index.read_bytes()[:-30])
    convert_refused(tmp_path, index, "not a Keras weight file")  # no magic at its end: not recognised
    convert_refused(tmp_path, prefix, "ckpt.index: not a TensorFlow checkpoint index")  # given by its prefix
    index.write_bytes(b"\x00" * 20)
    convert_refused(tmp_path, prefix, "too short for a TensorFlow checkpoint index")


def test_wrong_magic(tmp_path):
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS)
    index = tmp_path / "ckpt.index"
    index.write_bytes(index.read_bytes()[:-1] + b"\x00")
    convert_refused(tmp_path, prefix, "not a TensorFlow checkpoint index", "table magic")


def test_huge_shape_is_refused_before_reading(tmp_path):
    key = next(iter(WEIGHTS))
    huge = write_bundle(tmp_path / "huge", WEIGHTS,
                        edit=lambda k, f: {**f, "shape": (1 << 40, 1 << 20)} if k == key else f)
    convert_refused(tmp_path, huge, f"entry {key!r} of shape", "its shape needs")
    both = write_bundle(tmp_path / "both", WEIGHTS,
                        edit=lambda k, f: {**f, "shape": (1 << 30,), "size": 4 << 30} if k == key else f)
    convert_refused(tmp_path, both, "claims bytes", "which holds")


def test_entry_beyond_the_data_file(tmp_path):
    key = next(iter(WEIGHTS))
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS, edit=lambda k, f: {**f, "offset": 1 << 33} if k == key else f)
    convert_refused(tmp_path, prefix, f"entry {key!r} claims bytes", "ckpt.data-00000-of-00001")


def test_checksum_mismatch(tmp_path):
    key = next(iter(WEIGHTS))
    # a flipped byte in a tensor: found when it is read (TensorFlow checks it there too)
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS)
    data = tmp_path / "ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    read_refused(prefix, f"entry {key!r} fails its checksum")
    # in the object graph: found before any layer is matched
    graph = write_bundle(tmp_path / "graph", WEIGHTS, edit=lambda k, f: {**f, "crc": f["crc"] ^ 1}
                         if k == GRAPH_KEY.decode() else f)
    convert_refused(tmp_path, graph, "_CHECKPOINTABLE_OBJECT_GRAPH' fails its checksum")
    # in an index block
    index = tmp_path / "ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[3] ^= 1
    index.write_bytes(bytes(raw))
    convert_refused(tmp_path, prefix, "fails its checksum", "corrupt index")


def test_fifo_as_data_file(tmp_path):
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS)
    data = tmp_path / "ckpt.data-00000-of-00001"
    data.unlink()
    os.mkfifo(data)
    convert_refused(tmp_path, prefix, "FIFO")
    index = tmp_path / "ckpt.index"
    index.unlink()
    os.mkfifo(index)  # the index itself
    convert_refused(tmp_path, prefix, "FIFO")


def test_compressed_block(tmp_path):
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS, kind=1)
    convert_refused(tmp_path, prefix, "is compressed (type 1)")


@pytest.mark.parametrize("options, message", [
    (dict(endianness=1), "big-endian"),
    (dict(shards=0), "a bundle of 0 data shards for 2 entries; expected 1 to one shard per entry"),
    (dict(shards=3), "a bundle of 3 data shards for 2 entries"),  # TensorFlow writes no empty shard
    (dict(duplicate_block=True), "overlaps or precedes"),
])
def test_header_and_layout_refusals(tmp_path, options, message):
    convert_refused(tmp_path, write_bundle(tmp_path / "ckpt", WEIGHTS, **options), message)


def test_tensor_beyond_the_read_budget(tmp_path):
    """A 400 MB entry in a sparse data file: refused by the budget before a byte is allocated."""
    key = next(iter(WEIGHTS))
    count = 100_000_000  # float32: 400 MB, x 8 bytes per parameter charged = 800 MB > the ~680 MB budget
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS, data_size=(count + 1024) * 4,
                          edit=lambda k, f: {**f, "shape": (count,), "size": count * 4, "offset": 1024 * 4}
                          if k == key else f)
    read_refused(prefix, "read budget")


def test_index_beyond_its_cap(tmp_path):
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS)
    with open(tmp_path / "ckpt.index", "r+b") as f:
        f.truncate(17 * 1024**2)  # sparse
    convert_refused(tmp_path, prefix, "refused before parsing")


@pytest.mark.parametrize("metadata, message", [
    (b"\xff" * 16, "not a readable Keras SavedMetadata"),
    # one node whose metadata JSON nests beyond the parser: a clear error, not a RecursionError
    (f_bytes(1, f_bytes(3, b"root") + f_bytes(5, b"[" * 100_000)), "is not JSON"),
    (f_bytes(1, f_bytes(3, b"root.layer-0") + f_bytes(5, b"{}")), "no root model config"),
])
def test_savedmodel_with_a_hostile_keras_metadata(tmp_path, metadata, message):
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"")  # never read: only its presence says "SavedModel"
    (saved / "keras_metadata.pb").write_bytes(metadata)
    convert_refused(tmp_path, saved, "keras_metadata.pb", message)


def test_savedmodel_metadata_beyond_its_cap(tmp_path):
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "saved_model.pb").write_bytes(b"")
    with open(saved / "keras_metadata.pb", "wb") as f:
        f.truncate(9 * 1024**2)  # sparse
    convert_refused(tmp_path, saved, "refused before parsing")


def write_prefix_compressed_index(prefix, first: bytes, n: int, shared: int, step: bytes = b"a"):
    """``prefix.index`` whose one data block holds ``first`` then ``n - 1`` keys that each share
    ``shared`` bytes with the previous one (``-1``: all of it) and add ``step``: a few bytes each in
    the file, whole keys of up to n bytes each once rebuilt."""
    body = bytearray(varint(0) + varint(len(first)) + varint(0) + first)
    length = len(first)
    for _ in range(1, n):
        s = length if shared < 0 else shared
        body += varint(s) + varint(len(step)) + varint(0) + step
        length = s + len(step)
    body += struct.pack("<II", 0, 1)

    def trailer(b):
        return bytes(b) + b"\0" + struct.pack("<I", mask(crc32c(bytes(b) + b"\0")))

    data = trailer(body)
    handle = varint(0) + varint(len(body))
    index = varint(0) + varint(1) + varint(len(handle)) + b"z" + handle + struct.pack("<II", 0, 1)
    table = data + trailer(index)
    footer = (varint(0) + varint(0) + varint(len(data)) + varint(len(index) - 0)).ljust(40, b"\0") + MAGIC
    with open(f"{prefix}.index", "wb") as f:
        f.write(table + footer)
    open(f"{prefix}.data-00000-of-00001", "wb").close()
    return prefix


@pytest.mark.parametrize("first, n, shared, message", [
    # 400,000 keys, each the previous plus one byte: a 2.4 MB index whose keys would take 80 GB whole
    # (without the caps: a MemoryError under RLIMIT_AS after ~3 s). The total trips at key ~2,900.
    (b"a", 400_000, -1, "its keys total more than 4,194,304 bytes (in the data block 0)"),
    # one key over the per-key cap
    (b"k" * 5000, 1, 0, "a key of 5,000 bytes in the data block 0, over the 4,096-byte limit per key"),
], ids=["growing_keys", "long_key"])
def test_index_keys_beyond_their_caps(tmp_path, first, n, shared, message):
    prefix = write_prefix_compressed_index(tmp_path / "ckpt", first, n, shared)
    convert_refused(tmp_path, prefix, "ckpt.index", message)


@pytest.mark.parametrize("graph, message", [
    # 4,000,000 empty objects (2 bytes each, within the 8 MiB string cap): without a count, ~100x
    # Python-object inflation before any check (a MemoryError under RLIMIT_AS 1 GiB)
    (b"\x0a\x00" * 4_000_000, "holds more than 100,000 objects (the limit)"),
    # one object with 3,000,000 empty child references
    (f_bytes(1, b"\x0a\x00" * 3_000_000), "holds more than 100,000 fields in object 0 (the limit)"),
    # 20 objects of 60,000 references each: the objects and each object's fields within their caps
    (f_bytes(1, b"\x0a\x00" * 60_000) * 20, "holds more than 1,000,000 fields in all"),
], ids=["objects", "references", "total"])
def test_object_graph_beyond_its_caps(tmp_path, graph, message):
    prefix = write_bundle(tmp_path / "ckpt", WEIGHTS, graph=graph)
    convert_refused(tmp_path, prefix, "ckpt.index: entry _CHECKPOINTABLE_OBJECT_GRAPH", message)


def ref(node: int, name: str) -> bytes:
    """An object's child reference (ObjectReference: node_id = 1, local_name = 2), as a children field."""
    return f_bytes(1, f_varint(1, node) + f_bytes(2, name.encode()))


# Object graphs that multiply work (review 10 F1): K references to one node with M children (each a
# reference back to itself), a few MB. A walk that scans a node's children once per reference does
# K x M = 10^10 steps (the reviewer's K=1,000: 10-14 s CPU; K=100,000: killed after 600 s); each node
# scanned once, the read takes 2.5-4 s of CPU, imports included. RLIMIT_CPU 30 s tells the two apart (the
# config case on old main: 5 s per 1,000 layers, ~47 s for its 9,000).
FAN, CPU_SECONDS = 100_000, 30
FANNED = f_bytes(1, b"".join(ref(1, f"c{i}") for i in range(FAN)))  # node 1: M children, all itself


@pytest.mark.parametrize("root, config, message", [
    # find_model: is the root, or one of its children, a model? K root children, one node
    ("c", None, "no Keras model in the checkpoint's object graph: its root holds c0, c1, c10"),
    # klayers_by_order (no config): layer_with_weights-0..K-1, one node; tf_keras lists each layer once
    ("layer_with_weights-", None,
     "layer_with_weights-1 is the object layer_with_weights-0 is (node 1); a Keras model references each of "
     "its layers once"),
    # fill_weights (a config of 9,000 Dense layers, under its 10,000-layer cap): layer-0..K-1, one node
    ("layer-", 9_000, "not an Xception (keras) graph"),
], ids=["find_model", "by_order", "with_config"])
def test_an_object_graph_fanning_into_one_node_is_walked_once(tmp_path, root, config, message):
    import json

    k = FAN if config is None else config
    prefix = write_bundle(tmp_path / "ckpt", {}, graph=f_bytes(1, b"".join(ref(1, f"{root}{i}") for i in range(k)))
                          + FANNED)
    options = ()
    if config:
        layers = [{"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [None, 71, 71, 3]}}]
        layers += [{"class_name": "Dense", "config": {"name": f"dense{i}", "units": 4}} for i in range(config)]
        (tmp_path / "config.json").write_text(json.dumps({"class_name": "Sequential",
                                                          "config": {"name": "m", "layers": layers}}))
        options = ("--config", tmp_path / "config.json")
    out = run_limited("npxception.weights_tools.cli", "convert", prefix, "-o", tmp_path / "out.npz", *options, cpu=CPU_SECONDS)
    assert_refused(out, "ckpt", message)
    assert not list(tmp_path.glob("out.npz*")), "a refused conversion left a file"


def _saved_metadata(tmp_path, nodes: bytes):
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"")
    root = f_bytes(1, f_varint(2, 0) + f_bytes(3, b"root")
                   + f_bytes(5, b'{"name": "m", "class_name": "Functional", "config": {"layers": []}}'))
    (saved / "keras_metadata.pb").write_bytes(root + nodes)
    return saved


@pytest.mark.parametrize("nodes, message", [
    # 500,000 nodes "root.<i>" of empty metadata (6 MB): each decoded, its JSON parsed, its path kept
    (b"".join(f_bytes(1, f_bytes(3, b"root.%d" % i)) for i in range(500_000)),
     "keras_metadata.pb: more than 10,000 nodes, over this reader's limit"),
    # a node_path of 1,991 segments (4,000 characters, within MAX_NODE_PATH): each of its prefixes was
    # rebuilt and hashed, O(depth^2) per node (1,600 such nodes took ~2 minutes)
    (b"".join(f_bytes(1, f_bytes(3, ("root" + ".a" * 1990 + f".{i}").encode()) + f_bytes(5, b"{}"))
              for i in range(1600)), "a node_path of 1,992 segments"),
], ids=["nodes", "deep_node_path"])
def test_keras_metadata_beyond_its_caps(tmp_path, nodes, message):
    convert_refused(tmp_path, _saved_metadata(tmp_path, nodes), message)


# --------------------------------------------------------------------------- several data shards

TWO = {"layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE": np.arange(12, dtype=np.float32).reshape(3, 4),
       "layer_with_weights-0/bias/.ATTRIBUTES/VARIABLE_VALUE": np.arange(4, dtype=np.float64)}


def _bias_in_shard_1(key):
    return 1 if "bias" in key else 0


def two_shards(prefix, **kw):
    """A bundle of 2 shards: the bias in the second, the kernel and the object graph in the first."""
    return write_bundle(prefix, TWO, shards=2, shard_of=_bias_in_shard_1, **kw)


def test_a_forged_two_shard_bundle_reads_back(tmp_path):
    from npxception.weights_tools.tf_bundle import Bundle

    prefix = two_shards(tmp_path / "ok")
    assert (tmp_path / "ok.data-00001-of-00002").stat().st_size == 32
    with Bundle(prefix) as b:
        assert b.shards == 2 and b.entries[next(k for k in TWO if "bias" in k)].shard == 1
        for key, value in TWO.items():
            np.testing.assert_array_equal(b.tensor(key).read(), value)


def test_a_missing_or_irregular_shard_is_refused_before_any_data_is_read(tmp_path):
    """Every shard is opened and measured when the bundle opens: a missing second shard is named with the
    files a checkpoint of 2 shards is, before a byte of the first is read (READ_ALL reads every entry)."""
    prefix = two_shards(tmp_path / "ckpt")
    second = tmp_path / "ckpt.data-00001-of-00002"
    second.unlink()
    read_refused(prefix, "its data file ckpt.data-00001-of-00002 is missing",
                 "PREFIX.index plus its data files ckpt.data-00000-of-00002 to ckpt.data-00001-of-00002")
    os.mkfifo(second)
    read_refused(prefix, "FIFO")


def test_a_short_shard_is_refused_naming_it(tmp_path):
    prefix = two_shards(tmp_path / "ckpt")
    second = tmp_path / "ckpt.data-00001-of-00002"
    second.write_bytes(second.read_bytes()[:-1])
    key = next(k for k in TWO if "bias" in k)
    read_refused(prefix, f"entry {key!r} claims bytes 0..32 of ckpt.data-00001-of-00002, which holds 31")


@pytest.mark.parametrize("shard", [2, -1])  # -1: a list index would take the last shard
def test_a_shard_id_out_of_range_is_refused(tmp_path, shard):
    key = next(iter(TWO))
    prefix = two_shards(tmp_path / "ckpt", edit=lambda k, f: {**f, "shard": shard} if k == key else f)
    read_refused(prefix, f"entry {key!r} is in shard {shard}; the bundle has 2 (shards 0 to 1)")


def test_entries_sharing_bytes_are_refused(tmp_path):
    """Two entries over the same bytes of a shard: each byte is read once, so the second is refused
    (one 64 MiB region named by many entries would otherwise be read many times)."""
    kernel, bias = list(TWO)
    prefix = write_bundle(tmp_path / "ckpt", {kernel: np.zeros(8, np.float32), bias: np.zeros(4, np.float64)},
                          edit=lambda k, f: {**f, "offset": 0} if k in (kernel, bias) else f)
    read_refused(prefix, "share bytes of ckpt.data-00000-of-00001")


def test_a_corrupt_second_shard_fails_its_checksum(tmp_path):
    prefix = two_shards(tmp_path / "ckpt")
    second = tmp_path / "ckpt.data-00001-of-00002"
    raw = bytearray(second.read_bytes())
    raw[0] ^= 1
    second.write_bytes(bytes(raw))
    read_refused(prefix, "fails its checksum", "bytes in ckpt.data-00001-of-00002")


# --------------------------------------------------------------------------- partitioned (sliced) tensors

KERNEL = "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
VALUE = np.arange(12, dtype=np.float32).reshape(3, 4)


def sliced(prefix, parts, *, extra=(), listed=None, shards=1, shard_of=lambda key: 0):
    """KERNEL (VALUE) saved as the slices ``parts`` (``((start, length), ...)`` each, -1: whole dimension),
    each slice an entry keyed as TensorFlow keys it; ``listed``: the slices KERNEL's entry lists
    (default ``parts``); ``extra``: slice entries ``(extents, array)`` stored but not derived from VALUE."""
    from npxception.weights_tools.tensor_slices import region, slice_key

    tensors = {KERNEL: np.zeros(0, np.float32)}  # the partitioned tensor's own entry holds no bytes
    for extents in parts:
        tensors[slice_key(KERNEL, extents)] = VALUE[region(extents, VALUE.shape)]
    for extents, array in extra:
        tensors[slice_key(KERNEL, extents)] = array
    slices = [slice_proto(e) for e in (parts if listed is None else listed)]
    return write_bundle(prefix, tensors, shards=shards, shard_of=shard_of,
                        edit=lambda k, f: {**f, "shape": VALUE.shape, "slices": slices} if k == KERNEL else f)


ROWS = (((0, 1), (0, -1)), ((1, 2), (0, -1)))  # rows 0 and 1-2, whole columns: as MaxShardSizePolicy splits


def test_a_forged_partitioned_tensor_reads_back_from_slices_in_two_shards(tmp_path):
    from npxception.weights_tools.tensor_slices import slice_key
    from npxception.weights_tools.tf_bundle import Bundle

    second = slice_key(KERNEL, ROWS[1]).decode("latin-1")
    prefix = sliced(tmp_path / "ok", ROWS, shards=2, shard_of=lambda k: int(k == second))
    with Bundle(prefix) as b:
        assert [p.shard for p in b.slices[KERNEL]] == [0, 1] and set(b.entries) == {KERNEL, GRAPH_KEY.decode()}
        np.testing.assert_array_equal(b.tensor(KERNEL).read(), VALUE)


@pytest.mark.parametrize("case, message", [
    ("missing", "lists slice [1:3, :], which has no entry"),
    ("beyond", "lists 2 slices, beyond the table's 1 slice entries"),
    ("stray", "is a slice that no tensor lists (1 such entry)"),
    ("short", "lists slices of 8 values in all; its shape holds 12"),
    ("misshaped", "expected float32 of shape (2, 4)"),
    ("outside", "slice 1 is not a readable TensorSliceProto inside it (a slice of 3 from 1 of a dimension of 3)"),
    ("overlap", "overlaps another slice"),
])
def test_hostile_slices_are_refused_by_name(tmp_path, case, message):
    first, second = ROWS
    prefix = {
        # as many slice entries as slices listed, but not the listed one
        "missing": lambda: sliced(tmp_path / "ckpt", [first], listed=ROWS, extra=[(((2, 1), (0, -1)), VALUE[2:])]),
        "beyond": lambda: sliced(tmp_path / "ckpt", [first], listed=ROWS),
        "stray": lambda: sliced(tmp_path / "ckpt", ROWS, extra=[(((2, 1), (0, -1)), VALUE[2:])]),
        "short": lambda: sliced(tmp_path / "ckpt", [((0, 2), (0, -1))]),
        "misshaped": lambda: sliced(tmp_path / "ckpt", [first], listed=ROWS, extra=[(second, VALUE[1:2])]),
        "outside": lambda: sliced(tmp_path / "ckpt", [first, ((1, 3), (0, -1))]),
        # row 0 twice, in other words (an explicit and a whole extent), row 1 never: as many values as the tensor
        "overlap": lambda: sliced(tmp_path / "ckpt", [((0, 1), (0, 4)), ((0, 1), (0, -1)), ((2, 1), (0, -1))]),
    }[case]()
    read_refused(prefix, message)


def test_slices_listed_beyond_the_tables_slice_entries_are_refused_before_decoding(tmp_path):
    """Review 10 F2: 190,000 filler entries (not slices) once raised every entry's slice allowance to the
    table's size, so 10 entries listing 100,000 empty slices each had 10^6 slices decoded before the first
    was looked up (the reviewer's 7 M: 19 s CPU, 343 MB). One budget for the table, its slice entries
    (here none), refuses at the first slice listed: within RLIMIT_CPU, and the message says why."""
    fillers, listing, slices = 190_000, 10, 100_000  # the table holds at most 200,000 entries
    pairs = [(b"", f_varint(1, 1) + f_bytes(3, f_varint(1, 1)))]
    pairs += [(b"a%05d" % i, f_varint(1, 1) + f_bytes(7, b"") * slices) for i in range(listing)]
    pairs += [(b"z%06d" % i, b"") for i in range(fillers)]
    blocks = [pairs[i:i + 20_000] for i in range(0, len(pairs), 20_000)]  # ~1 MB blocks
    table, handles = b"", []
    for b in blocks:
        raw = block(b)
        handles.append((len(table), len(raw) - 5))
        table += raw
    (tmp_path / "ckpt.index").write_bytes(finish_table(table, handles))
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"\0" * 16)
    assert os.path.getsize(tmp_path / "ckpt.index") < 4 << 20
    out = run_limited("npxception.weights_tools.cli", "convert", tmp_path / "ckpt", "-o", tmp_path / "out.npz",
                      cpu=CPU_SECONDS)
    assert_refused(out, "ckpt.index", "entry 'a00000' holds more than 1,000 fields",
                   "the table's 0 slice entries")
    assert not list(tmp_path.glob("out.npz*"))
