"""A hostile corpus: small files (and streams) that try to make a reader do far more work than they justify.

Every file is generated here and is small: big claims are made with unallocated
HDF5 datasets (a shape and a fill value, no stored bytes), forged zip headers
and nested JSON, never with a big file on disk. Each case runs in a subprocess
under ``RLIMIT_AS`` of 1 GB (a resource limit, not a timed assertion) and must
end with exit status 1 and one clear line naming the file: never a
MemoryError, a RecursionError, "Unable to allocate", a traceback or a kill.
The budgets and the threat model are in docs/security.md.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib

import h5py
import numpy as np
import pytest

from npxception import architecture as arch
from npxception.weights import weight_budget

import limited_runner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 1 << 30  # RLIMIT_AS: the acceptance bound on peak memory (address space >= RSS)
BAD_SIGNS = ("MemoryError", "RecursionError", "Unable to allocate", "Traceback", "recursion depth")

# The child sets its own address-space limit (and, for work a file could multiply, a CPU-time limit:
# the kernel kills it, exit -9), then runs a command-line entry point.
def run_limited(module: str, *args, limit: int = LIMIT, cpu: int = 0):
    """``sys.exit(main(args))`` of ``module`` in a child under RLIMIT_AS ``limit`` bytes and, when ``cpu``,
    RLIMIT_CPU ``cpu`` seconds (CPU time, not wall time: a loaded machine does not trip it). The child is forked
    from a process that imported the module once (tests/limited_runner.py: the same process state, limits, exit
    and captured output as a fresh ``python -c`` per case, without its ~1.5 s of imports on each of ~100 cases)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return limited_runner.run(module, args, limit=limit, cpu=cpu, env=env)


def assert_refused(out, name: str, *fragments: str):
    """Exit 1 (not a kill, not a crash), one clear line naming the file, no memory or recursion error."""
    text = out.stdout + out.stderr
    assert out.returncode == 1, f"exit {out.returncode}\n{text[-3000:]}"
    assert not any(sign in text for sign in BAD_SIGNS), text[-3000:]
    assert name in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in out.stderr, out.stderr


# A weights-only file with a head that is not the official ImageNet one does not say its pooling,
# activation or input size (issue 11: refused, never guessed), nor, without Keras Xception's layer
# names, its wiring (review 15); these give them, so that the reading itself is what is tested.
HEAD_FLAGS = ("--pooling", "avg", "--input-shape", "299,299", "--classifier-activation", "softmax",
              "--variant", "keras")


def convert_refused(tmp_path, src, *fragments, options=()):
    out = run_limited("npxception.weights_tools.cli", "convert", src, "-o", tmp_path / "out.npz", *options)
    assert_refused(out, os.path.basename(src), *fragments)
    assert not list(tmp_path.glob("out.npz*")), "a refused conversion left a file"


# --------------------------------------------------------------------------- builders

def _lazy(group, name, shape, dtype="f4"):
    """A dataset that claims ``shape`` but stores nothing: chunked, compressed, never written."""
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=True, compression="gzip")


def legacy_xception(path, *, head_units=None, tweak=None, padding_bytes=0, dtype="f4", attrs=None):
    """A legacy weights-only Xception file (Keras' layout) of unallocated datasets: tiny on disk.

    tweak(name, var, shape) -> shape lets a case misshape one array; ``dtype`` is every dataset's, and
    ``attrs`` are set on each (Keras 3 tags a bfloat16 dataset with ``dtype="bfloat16"``).
    """
    shapes = arch.param_shapes(arch.backbone("keras"), [], 3)
    layers: dict[str, list] = {}
    for key, shape in shapes.items():
        layer, var = key.split("/")
        layers.setdefault(layer, []).append((var, tweak(layer, var, shape) if tweak else shape))
    if head_units:
        layers["predictions"] = [("kernel", (2048, head_units)), ("bias", (head_units,))]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in layers])
        for layer, weights in layers.items():
            g = f.create_group(layer)
            g.attrs["weight_names"] = np.array([f"{layer}/{v}:0".encode() for v, _ in weights])
            for var, shape in weights:
                _lazy(g, f"{layer}/{var}:0", shape, dtype).attrs.update(attrs or {})
        _pad(f, padding_bytes)
    return path


def _pad(f, nbytes):
    """Stored, incompressible bytes listed nowhere: the file grows past the per-file expansion guard
    (a dataset may claim 64x the file size), as the measured 1 MB attack files did."""
    if nbytes:
        f.create_dataset("padding", data=np.random.default_rng(0).integers(0, 255, nbytes, np.uint8))


def keras_archive(path, config_text: str, weights: bytes | None = None):
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("layers")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("metadata.json", "{}")
        z.writestr("config.json", config_text)
        z.writestr("model.weights.h5", buf.getvalue() if weights is None else weights)
    return path


def forge_declared_size(path, member: str, size: int):
    """Rewrite ``member``'s uncompressed size in the zip's central directory (what readers trust)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    name = member.encode()
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        n = struct.unpack("<H", data[at + 28:at + 30])[0]
        if data[at + 46:at + 46 + n] == name:
            data[at + 24:at + 28] = struct.pack("<I", size)
            break
        at = data.find(b"PK\x01\x02", at + 4)
    assert at >= 0 and info.file_size != size
    path.write_bytes(bytes(data))
    return path


def nested_sequential_json(depth: int) -> str:
    """``depth`` Sequential models, each the only layer of the one around it (built in linear time)."""
    opening = "".join(f'{{"class_name": "Sequential", "config": {{"name": "s{i}", "layers": ['
                      for i in range(depth))
    return opening + '{"class_name": "Dense", "config": {"name": "d", "units": 1}}' + "]}}" * depth


# --------------------------------------------------------------------------- HDF5 amplification

@pytest.mark.parametrize("layer_names, weight_names, message", [
    ([b"block1_conv1"], [b"w"] * 400, "referenced a second time"),  # one dataset named 400 times
    ([b"block1_conv1"] * 400, [b"w"], "lists 'block1_conv1' twice"),  # one layer listed 400 times
], ids=["weight_names", "layer_names"])
def test_one_dataset_named_many_times_is_read_once(tmp_path, layer_names, weight_names, message):
    p = tmp_path / "repeat.h5"
    with h5py.File(p, "w") as f:  # 64 MiB claimed, nothing stored
        f.attrs["layer_names"] = np.array(layer_names)
        g = f.create_group("block1_conv1")
        g.attrs["weight_names"] = np.array(weight_names)
        _lazy(g, "w", (16 * 1024**2,))
        _pad(f, 1 << 20)
    convert_refused(tmp_path, p, message)


def test_hard_links_to_one_dataset(tmp_path):
    p = tmp_path / "links.weights.h5"
    with h5py.File(p, "w") as f:
        big = _lazy(f, "layers/conv2d/vars/0", (16 * 1024**2,))
        f.create_group("layers/separable_conv2d/vars")
        for i in range(234):  # Keras 3 paths of the next layers the reader visits
            f[f"layers/batch_normalization{f'_{i}' if i else ''}/vars/0"] = big
        _pad(f, 1 << 20)
    convert_refused(tmp_path, p, "hard link")


def test_dataset_larger_than_its_layer_is_refused_before_reading(tmp_path):
    # 64 MiB claimed by block1_conv1's kernel (3.5 kB), in a file padded so that the
    # claim passes the per-file expansion guard: the layer's shape refuses it.
    p = legacy_xception(tmp_path / "claim.h5", padding_bytes=1 << 20,
                        tweak=lambda layer, var, s: (16, 1024, 1024) if layer == "block1_conv1" else s)
    convert_refused(tmp_path, p, "block1_conv1", "expected (3, 3, 3, 32)")


def test_head_beyond_the_read_budget(tmp_path):
    units = weight_budget() // 8 // 2048  # this head alone would take the whole budget
    p = legacy_xception(tmp_path / "head.h5", head_units=units, padding_bytes=8 << 20)
    convert_refused(tmp_path, p, "read budget", options=HEAD_FLAGS)


def test_no_dataset_is_read_twice_or_before_its_shape_is_checked(tmp_path, monkeypatch):
    """In process: count every data read of a whole conversion."""
    from npxception import weights_tools
    from npxception.weights_tools import hdf5

    reads: list[str] = []
    real = hdf5.GuardedH5._read_data

    def counting(self, dset, name, *rest):
        reads.append(name)
        return real(self, dset, name, *rest)

    monkeypatch.setattr(hdf5.GuardedH5, "_read_data", counting)
    # variant: the file's residual layers carry our names, no Keras model's (by_order._file_variant)
    model = weights_tools.read(legacy_xception(tmp_path / "ok.h5", head_units=10), pooling="avg",
                               input_shape=(299, 299), classifier_activation="softmax", variant="keras")
    assert model.classes == 10
    assert len(reads) == len(set(reads)) == len(model.weights)
    reads.clear()
    bad = legacy_xception(tmp_path / "bad.h5", tweak=lambda layer, var, s: (7,) if layer == "block14_sepconv2_bn"
                          and var == "moving_variance" else s)
    with pytest.raises(weights_tools.ConversionError, match="block14_sepconv2_bn"):
        weights_tools.read(bad)
    assert reads == [], "arrays were read before every shape was checked"


def _zeros_deflated(nbytes: int, segment: int = 4 << 20) -> bytes:
    """A zlib stream of ``nbytes`` zeros, built in milliseconds: one raw-deflate segment of zeros,
    ended by a full flush (so it stands alone), repeated; the Adler-32 of n zeros is n mod 65521 << 16 | 1."""
    assert nbytes % segment == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(segment)) + c.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    return b"\x78\xda" + block * (nbytes // segment) + end + struct.pack(">I", (nbytes % 65521) << 16 | 1)


def test_chunk_larger_than_its_dataset(tmp_path):
    """block1_conv1's kernel (3.5 kB) in one gzip chunk of 1 GiB (1 MB in the file): an extendible
    dataset's chunk may exceed its shape, and reading it inflated the whole chunk (1.18 GB, 17 s;
    under this limit a misleading "filter returned failure")."""
    p = legacy_xception(tmp_path / "chunk.h5")
    chunks = (64, 64, 2048, 32)  # float32: 1 GiB
    with h5py.File(p, "a") as f:
        g = f["block1_conv1"]
        del g["block1_conv1/kernel:0"]
        d = g.create_dataset("block1_conv1/kernel:0", shape=(3, 3, 3, 32), maxshape=(None,) * 4,
                             chunks=chunks, compression="gzip", dtype="f4")
        d.id.write_direct_chunk((0, 0, 0, 0), _zeros_deflated(4 * int(np.prod(chunks))))
    convert_refused(tmp_path, p, "block1_conv1/kernel:0", "chunks of (64, 64, 2048, 32)",
                    "expected chunks within its shape")


def test_chunked_reads_are_charged_whole_chunks(tmp_path):
    """Chunks within the shape, but each read inflates whole chunks: (2048, 100) in chunks of
    (2047, 1) touches 2 x 100 chunks, twice the values; the budget is charged that."""
    from npxception import weights_tools
    from npxception.untrusted import ReadBudget
    from npxception.weights_tools import hdf5

    p = tmp_path / "grid.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("w", data=np.ones((2048, 100), "f4"), chunks=(2047, 1))
    budget = ReadBudget(10**9, "grid.h5", error=weights_tools.ConversionError)
    with hdf5.GuardedH5(str(p), "grid.h5", budget) as h5:
        h5.read(h5.file, "w")
    assert 10**9 - budget.left == 2 * 2047 * 100 * hdf5.PARAM_BYTES


def _full_model(path, config=None, **attrs):
    """A legacy full-model save holding one layer, with root attributes (model_config ...) to test."""
    with h5py.File(path, "w", libver="latest") as f:  # "latest": attributes over 64 KiB
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([b"dense"])
        d = g.create_group("dense")
        d.attrs["weight_names"] = np.array([b"dense/kernel:0"])
        d.create_dataset("dense/kernel:0", data=np.zeros((2, 2), "f4"))
        for key, value in attrs.items():
            (g if key == "layer_names" else d if key == "weight_names" else f).attrs[key] = value
    return path


def test_model_config_attribute_over_the_config_cap(tmp_path):
    """40 MB of ``[],`` parsed into 1.29 GB (24 s) before "more than 10000 layers"; a config.json
    has been capped at 8 MiB all along. Variable-length (Keras 3's str) and fixed-length alike."""
    from npxception.config import CONFIG

    n = CONFIG.max_config_bytes // 3 + 1
    text = "[" + "[]," * (n - 1) + "[]]"
    convert_refused(tmp_path, _full_model(tmp_path / "vlen.h5", model_config=text),
                    "attribute model_config of /", f"at most {CONFIG.max_config_bytes:,} bytes")
    convert_refused(tmp_path, _full_model(tmp_path / "fixed.h5", model_config=np.bytes_(text.encode())),
                    "attribute model_config of /", "stores", f"at most {CONFIG.max_config_bytes:,} bytes")


@pytest.mark.parametrize("key, bound", [("layer_names", "max_config_layers"), ("weight_names", "max_weight_names")])
def test_name_lists_beyond_their_bound(tmp_path, key, bound):
    """A million one-byte names (1 MB stored) became a million NumPy and Python strings each
    (~90 bytes apiece): refused from the attribute's shape, before a byte is read."""
    from npxception.config import CONFIG

    limit = getattr(CONFIG, bound)
    p = _full_model(tmp_path / "names.h5", **{key: np.full(10**6, b"x")})
    convert_refused(tmp_path, p, f"attribute {key} of", "1,000,000 values", f"at most {limit:,} names")


def test_name_lists_split_beyond_the_bound(tmp_path):
    """Keras' split form (layer_names0, layer_names1, ...) shares one bound."""
    from npxception.config import CONFIG

    parts = CONFIG.max_config_layers // 2000 + 1
    p = tmp_path / "split.h5"
    with h5py.File(p, "w") as f:
        for i in range(parts):
            f.attrs[f"layer_names{i}"] = np.full(2000, b"x")
    convert_refused(tmp_path, p, f"attribute layer_names0 (split in {parts}) of /", f"{2000 * parts:,} values",
                    f"at most {CONFIG.max_config_layers:,} names")


@pytest.mark.parametrize("key", ["layer_names", "weight_names", "model_config"])
def test_attribute_text_that_is_not_utf8(tmp_path, key):
    """It was "'utf-8' codec can't decode byte 0xff ...": no file, no attribute named."""
    value = np.array([b"ok", b"bad\xff\xfe"]) if key != "model_config" else np.bytes_(b"{\xff}")
    p = _full_model(tmp_path / "utf.h5", **{key: value})
    convert_refused(tmp_path, p, f"attribute {key} of", "is not UTF-8 text", "expected UTF-8")


# --------------------------------------------------------------------------- .keras archives

def test_archive_member_declaring_gigabytes(tmp_path):
    p = forge_declared_size(keras_archive(tmp_path / "bomb.keras", "{}"), "model.weights.h5", 2**31)
    convert_refused(tmp_path, p, "before decompressing")


def test_archive_member_inflating_beyond_its_declared_size(tmp_path):
    p = keras_archive(tmp_path / "liar.keras", "{}", weights=b"\x89HDF\r\n\x1a\n" + b"\0" * (8 << 20))
    p = forge_declared_size(p, "model.weights.h5", 4096)
    convert_refused(tmp_path, p, "model.weights.h5")


def test_archive_with_an_entry_named_twice(tmp_path):
    """zipfile reads the last of two same-named entries, another reader (or a scanner) the first: refused
    (review 18)."""
    from npxception import weights_tools as wt

    p = keras_archive(tmp_path / "twice.keras", "{}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
        with zipfile.ZipFile(p, "a") as z:
            z.writestr("config.json", '{"class_name": "Functional"}')
    with pytest.raises(wt.ConversionError, match=f"{p}: entry 'config.json' appears twice in the zip's directory"):
        wt.convert(p, tmp_path / "out.npz")
    assert not list(tmp_path.glob("out.npz*"))


def test_archive_member_that_is_not_hdf5(tmp_path):
    p = keras_archive(tmp_path / "zeros.keras", "{}", weights=b"\0" * (8 << 20))
    convert_refused(tmp_path, p, "not an HDF5 file")


# --------------------------------------------------------------------------- configs

def test_config_nested_beyond_the_json_parser(tmp_path):
    p = keras_archive(tmp_path / "deep.keras", nested_sequential_json(50_000))
    convert_refused(tmp_path, p, "nested too deeply")


def test_config_nesting_models_beyond_the_bound(tmp_path):
    from npxception.config import CONFIG

    p = keras_archive(tmp_path / "nest.keras", nested_sequential_json(CONFIG.max_model_nesting + 5))
    convert_refused(tmp_path, p, "nest more than")


def test_config_with_too_many_layers(tmp_path):
    from npxception.config import CONFIG

    layers = ",".join(f'{{"class_name": "Sequential", "config": {{"name": "s{i}", "layers": []}}}}'
                      for i in range(CONFIG.max_config_layers + 1))
    p = keras_archive(tmp_path / "wide.keras", f'{{"class_name": "Sequential", "config": '
                                               f'{{"name": "top", "layers": [{layers}]}}}}')
    convert_refused(tmp_path, p, "more than")


def test_config_at_the_nesting_bound_flattens():
    """30 nested Sequentials of 200 layers each: within the bounds, flattened in full."""
    from npxception.weights_tools.keras_config import flatten_config

    width, depth = 200, 30
    inner = {"class_name": "Sequential", "config": {"name": "leaf", "layers": [
        {"class_name": "Dense", "config": {"name": f"leaf_{j}", "units": 1}} for j in range(width)]}}
    for i in range(depth):
        inner = {"class_name": "Sequential", "config": {"name": f"m{i}", "layers": [inner] + [
            {"class_name": "Dense", "config": {"name": f"m{i}_{j}", "units": 1}} for j in range(width)]}}
    klayers, paths, _ = flatten_config(inner)
    dense = [k for k in klayers if k.class_name == "Dense"]
    assert len(dense) == (depth + 1) * width
    assert max(len(p) for p in paths.values()) == depth + 1


# --------------------------------------------------------------------------- .npz weight files

def npy_bytes(shape, dtype="<f4", body=b"") -> bytes:
    """An .npy member: a real header claiming ``shape``, then ``body`` (nothing like its claim)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + body


def manifest_npy(manifest_text: str) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(manifest_text))
    return buf.getvalue()


GOOD_MANIFEST = ('{"format": "npxception-weights", "format_version": 1, "variant": "keras", '
                 '"input_shape": [null, null, 3], "head": []}')


def npz(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)
    return path


def load_refused(path, *fragments):
    out = run_limited("npxception.cli", "predict", "--weights", path, os.path.join(REPO, "README.md"))
    assert_refused(out, os.path.basename(path), *fragments)


def test_npz_unknown_member_is_refused_before_decompressing(tmp_path):
    p = npz(tmp_path / "extra.npz", {"__manifest__": manifest_npy(GOOD_MANIFEST),
                                     "evil": npy_bytes((1,), body=b"\0" * (8 << 20))})
    load_refused(forge_declared_size(p, "evil.npy", 2_400_000_000), "unexpected weight 'evil'")


def test_npz_member_declaring_more_than_its_shape(tmp_path):
    p = npz(tmp_path / "big.npz", {"__manifest__": manifest_npy(GOOD_MANIFEST),
                                   "block1_conv1/kernel": npy_bytes((3, 3, 3, 32), body=b"\0" * 3456)})
    load_refused(forge_declared_size(p, "block1_conv1/kernel.npy", 2_000_000_000), "before decompressing")


def test_npz_header_claiming_1e11_values(tmp_path):
    p = npz(tmp_path / "claim.npz", {"__manifest__": manifest_npy(GOOD_MANIFEST),
                                     "block1_conv1/kernel": npy_bytes((10**11,), body=b"\0" * 64)})
    load_refused(p, "block1_conv1/kernel", "expected (3, 3, 3, 32), found (100000000000,)")


def test_npz_manifest_nested_100000_levels(tmp_path):
    p = npz(tmp_path / "deep.npz", {"__manifest__": manifest_npy("[" * 100_000 + "]" * 100_000)})
    load_refused(p, "nested too deeply")


def test_npz_manifest_head_beyond_the_budget(tmp_path):
    head = ('[{"kind": "global_avg_pool", "name": "avg_pool"}, {"kind": "dense", "name": "predictions", '
            '"units": 100000000, "activation": "softmax"}]')
    p = npz(tmp_path / "head.npz", {"__manifest__": manifest_npy(GOOD_MANIFEST.replace('"head": []',
                                                                                     f'"head": {head}'))})
    load_refused(p, "refused before reading")


# --------------------------------------------------------------------------- values that cannot be valid

LABELS = ["tabby\x1b[31m", "two\nlines", "\u202eevil"]  # an ANSI escape, a newline, a bidi override


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A small classifier (3 classes, 71x71) saved with hostile label text."""
    import npxception
    from npxception.model import XceptionModel

    base = npxception.Xception(classes=3, input_shape=(71, 71, 3), seed=3)
    model = XceptionModel(base.weights, variant=base.variant, head=base.head, input_shape=base.input_shape,
                          labels=LABELS)
    return model.save(tmp_path_factory.mktemp("labelled") / "labelled.npz")


def rewrite(src, dst, manifest_edit=None, arrays=None):
    """Copy an .npz member by member, editing the manifest (a dict) or replacing arrays."""
    import json

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            key = info.filename[:-4]
            data = zin.read(info)
            if key == "__manifest__" and manifest_edit:
                manifest = json.loads(str(np.load(io.BytesIO(data))))
                manifest_edit(manifest)
                data = manifest_npy(json.dumps(manifest))
            elif arrays and key in arrays:
                buf = io.BytesIO()
                np.lib.format.write_array(buf, arrays[key])
                data = buf.getvalue()
            zout.writestr(info.filename, data)
    return dst


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(input_shape=[100000, 100000, 3]), "at most 2048"),  # was a MemoryError
    # 5 channels are valid (Keras builds them), but the file's block1_conv1 kernel takes 3
    (lambda m: m.update(input_shape=[299, 299, 5]), "'block1_conv1/kernel'"),
    (lambda m: m.update(input_shape=[299, 299, 10**9]), "C, the channels, in [1, 1024]"),
    (lambda m: m.update(labels=["only one"]), "expected 3 names"),  # was "list index out of range"
    (lambda m: m.update(labels="abc"), "list of strings"),  # was three labels
    # a geometry step or a source size that would make model(x) or predict() allocate gigabytes, and a
    # stage that would resample 20,000 times per call: refused when the manifest is read
    (lambda m: m.update(input_stage=[{"kind": "resizing", "name": "r", "height": 10**6, "width": 10**6,
                                      "keras": "keras3"}], source_input_shape=[None, None, 3]), "[1, 2048]"),
    (lambda m: m.update(source_input_shape=[100000, 100000, 3]), "source_input_shape: expected"),
    (lambda m: m.update(input_stage=[{"kind": "rescaling", "name": "r", "scale": 2.0}] * 20000),
     "at most 16 steps"),
], ids=["huge-input", "five-channels", "huge-channels", "short-labels", "string-labels", "huge-resize", "huge-source",
        "many-steps"])
def test_manifest_values_that_cannot_be_valid(labelled, tmp_path, edit, message):
    load_refused(rewrite(labelled, tmp_path / "bad.npz", manifest_edit=edit), message)


def test_a_stage_padding_to_an_extreme_aspect_runs_in_bounded_memory(labelled, tmp_path):
    """Every side within [1, 2048], yet the middle step pads a 1x2048 image to a 2048:1 aspect: built,
    the padded image was 4M x 2048 pixels (96 GiB), and both the load-time golden check and model(x)
    died with a MemoryError. Resampled without building it, each takes the memory of the steps' outputs:
    the golden check now runs and names its mismatch (the stage changed the golden input), and model(x)
    answers."""
    step = {"kind": "resizing", "interpolation": "nearest", "keras": "keras3"}
    stage = [dict(step, name="a", height=1, width=2048),
             dict(step, name="b", height=2048, width=1, pad_to_aspect_ratio=True),
             dict(step, name="c", height=71, width=71)]
    bad = rewrite(labelled, tmp_path / "pad.npz",
                  manifest_edit=lambda m: m.update(input_stage=stage, source_input_shape=[None, None, 3]))
    load_refused(bad, "golden test case fails")
    code = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({LIMIT}, {LIMIT}))\n"
            "import sys, numpy as np, npxception\n"
            "m = npxception.load(sys.argv[1], verify=False)\n"
            "print(m(np.full((1, 80, 90, 3), 0.5, np.float32)).shape)\n")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "(1, 3)", out.stderr[-3000:]


def test_negative_bn_variance_is_refused(labelled, tmp_path):
    """It passed every guard, and predict printed nan scores with exit 0."""
    var = -np.ones(32, np.float32)
    bad = rewrite(labelled, tmp_path / "var.npz", arrays={"block1_conv1_bn/moving_variance": var})
    load_refused(bad, "block1_conv1_bn/moving_variance", "negative")


def test_predict_fifo_is_refused_and_the_rest_answered_with_escaped_labels(labelled, tmp_path):
    from PIL import Image

    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 90, 3), np.uint8)).save(good)
    out = run_limited("npxception.cli", "predict", "--weights", labelled, "--top", "3", fifo, "/dev/zero", good)
    assert out.returncode == 1, out.stderr
    assert "fifo.jpg: is a FIFO (named pipe), not an image file" in out.stderr
    assert "/dev/zero: is a character device, not an image file" in out.stderr
    # Every file has its place in the output, in input order (issue 14): the two refused ones
    # with their error line, then the good one's path and three classes: no forged lines.
    lines = out.stdout.strip().splitlines()
    assert lines[:4] == [str(fifo), "  error: is a FIFO (named pipe), not an image file",
                         "/dev/zero", "  error: is a character device, not an image file"], out.stdout
    assert lines[4] == str(good)
    assert "\x1b" not in out.stdout and "\u202e" not in out.stdout and "tabby\\x1b[31m" in out.stdout
    assert len(lines) == 8
    assert "two\\nlines" in out.stdout and "\\u202eevil" in out.stdout


def test_predict_json_is_strict_when_scores_are_not_finite(labelled, tmp_path, monkeypatch, capsys):
    """Finite weights can still overflow (a kernel of 1e38): no NaN token reaches the JSON."""
    import json

    import npxception
    from npxception import cli, prediction
    from npxception.model import XceptionModel
    from PIL import Image

    model = npxception.load(labelled)
    weights = model.weights
    weights["predictions/kernel"] = np.full_like(weights["predictions/kernel"], 1e38)
    huge = XceptionModel(weights, variant=model.variant, head=model.head, input_shape=model.input_shape)
    monkeypatch.setattr(prediction, "get_model", lambda w: huge)
    good = tmp_path / "good.png"
    Image.fromarray(np.full((71, 71, 3), 200, np.uint8)).save(good)
    assert cli.main(["predict", "--json", "--weights", str(labelled), str(good)]) == 1
    out, err = capsys.readouterr()

    def refuse(token):
        raise AssertionError(f"non-standard JSON token {token}")

    (entry,) = json.loads(out, parse_constant=refuse)
    assert entry["file"] == str(good) and "predictions" not in entry
    assert entry["error"].startswith("the model gave non-finite scores (NaN or Inf) for this image: activations "
                                     "overflowed the float32 range (largest 3.403e+38) inside the network")
    assert "good.png: the model gave non-finite scores" in err


# --------------------------------------------------------------------------- litter

WRITER = """
import sys
from npxception.weights import atomic_write

def write(f):
    f.write(b"half a weight file")
    f.flush()
    print("ready", flush=True)
    sys.stdin.read()  # blocks until the test has sent its signal

atomic_write(sys.argv[1], write)
"""


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_killed_write_leaves_no_partial(tmp_path, signum):
    import signal

    env = dict(os.environ, PYTHONPATH=REPO)
    # SIGINT back to its default in the child: a shell runs background jobs with it ignored, and Python
    # then never raises KeyboardInterrupt (the test would measure the shell, not atomic_write)
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "dst.npz")], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert child.stdout.readline() == b"ready\n", child.stderr.read()
        assert [p.name.endswith(".partial") for p in tmp_path.iterdir()] == [True]
        child.send_signal(getattr(signal, signum))
        assert child.wait(60) != 0
    finally:
        child.kill()
        child.wait()
    assert list(tmp_path.iterdir()) == []


def test_config_many_sibling_models_flatten():
    """Up to the layer bound, nested models side by side (the old walk copied every name seen
    at each one: quadratic, 51-93 s for 20,000) flatten in one linear pass."""
    from npxception.config import CONFIG
    from npxception.weights_tools.keras_config import flatten_config

    n = CONFIG.max_config_layers // 3
    config = {"class_name": "Sequential", "config": {"name": "top", "layers": [
        {"class_name": "Sequential", "config": {"name": f"m{i}", "layers": [
            {"class_name": "Dense", "config": {"name": f"d{i}", "units": 1}},
            {"class_name": "Dense", "config": {"name": f"e{i}", "units": 1}}]}} for i in range(n)]}}
    klayers, paths, _ = flatten_config(config)
    assert sum(k.class_name == "Dense" for k in klayers) == 2 * n


def test_weights_h5_variable_claiming_more_than_its_layer(tmp_path):
    """Keras 3 layout, no config: a 64 MiB claim where Xception's first kernel takes 3.5 kB."""
    shapes = arch.param_shapes(arch.backbone("keras"), [], 3)
    keys = {"conv": "conv2d", "sepconv": "separable_conv2d", "bn": "batch_normalization"}
    counters: dict[str, int] = {}
    p = tmp_path / "claim.weights.h5"
    with h5py.File(p, "w") as f:
        for layer in arch.backbone("keras"):
            if layer.kind not in keys:
                continue
            n = counters[keys[layer.kind]] = counters.get(keys[layer.kind], -1) + 1
            key = keys[layer.kind] + (f"_{n}" if n else "")
            ours = [s for k, s in shapes.items() if k.rsplit("/", 1)[0] == layer.name]
            for i, shape in enumerate(ours):
                if layer.name == "block13_sepconv2" and len(shape) == 4 and shape[:2] == (1, 1):
                    # 3 MB stored: the file grows past the expansion guard, as _pad does elsewhere
                    f[f"layers/{key}/vars/{i}"] = np.random.default_rng(0).normal(size=shape).astype("f4")
                else:
                    _lazy(f, f"layers/{key}/vars/{i}", (16, 1024, 1024) if layer.name == "block1_conv1" else shape)
    convert_refused(tmp_path, p, "block1_conv1", "expected (3, 3, 3, 32)")


def test_config_json_that_is_a_fifo_or_too_big(tmp_path):
    from npxception import weights_tools
    from npxception.weights_tools import keras3
    from npxception.weights_tools.reading import _config_from

    fifo = tmp_path / "config.json"
    os.mkfifo(fifo)
    with pytest.raises(weights_tools.ConversionError, match="FIFO"):
        _config_from(str(fifo), "x")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (keras3.MAX_JSON_BYTES + 10))
    with pytest.raises(weights_tools.ConversionError, match="a config over"):
        _config_from(str(big), "x")


def test_config_json_that_parses_into_millions_of_objects(tmp_path):
    """A config at the size cap made of empty objects: parsed within the memory limit, then refused."""
    from npxception.weights_tools import keras3

    n = (keras3.MAX_JSON_BYTES - 2) // 3
    p = keras_archive(tmp_path / "wide.keras", "[" + "{}," * (n - 1) + "{}]")
    convert_refused(tmp_path, p)
    p = keras_archive(tmp_path / "over.keras", "[" + "{}," * n + "{}]")
    convert_refused(tmp_path, p, "over the")


def test_stale_partials_of_killed_writes_are_swept(tmp_path):
    """SIGKILL cannot be caught: the next write of the same name removes partials over a day old."""
    from npxception.untrusted import atomic_write

    dst = tmp_path / "dst.npz"
    old = [tmp_path / f"dst.npz.{'a' * 32}.partial", tmp_path / f".dst.npz.{'b' * 32}.partial"]  # both namings
    fresh = tmp_path / f"dst.npz.{'c' * 32}.partial"  # maybe another process, writing now
    unrelated = tmp_path / f"other.npz.{'d' * 32}.partial"
    for p in (*old, fresh, unrelated):
        p.write_bytes(b"x")
    for p in (*old, unrelated):
        os.utime(p, (1e9, 1e9))  # 2001
    atomic_write(dst, lambda f: f.write(b"done"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([dst.name, fresh.name, unrelated.name])


def test_compare_vets_a_keras_file_before_keras_opens_it(labelled, tmp_path):
    """`compare --weights ours.npz --against theirs.h5`: their file goes through the converter's
    guarded walk first (Keras and h5py's high-level reader follow links and external storage)."""
    linked = legacy_xception(tmp_path / "linked.h5")
    with h5py.File(linked, "a") as f:
        del f["block1_conv1/block1_conv1/kernel:0"]
        f["block1_conv1/block1_conv1/kernel:0"] = h5py.ExternalLink("/etc/passwd", "/x")
    assert_refused(run_limited("npxception.cli", "compare", "--weights", labelled, "--against", linked),
                   "linked.h5", "external link")
    junk = tmp_path / "junk.h5"
    junk.write_text("not a model\n")
    assert_refused(run_limited("npxception.cli", "compare", "--weights", labelled, "--against", junk), "junk.h5")
