"""Hostile Keras 3 sharded weights (``x.weights.json`` and its ``x_0000N.weights.h5`` shards).

Each set is generated here in Keras' layout (npxception/weights_tools/keras3_shards.py: the index's weight_map,
a layer's variables straddling a shard boundary, unallocated datasets so that nothing big is on disk),
checked to read as a valid set first, then broken one way. ``convert`` must refuse each with one line
naming the offending file or shard and the expected form, and write nothing. The sets that could make a
reader allocate, read twice or wait (a huge index, more shards than a valid save has, a budget crossed
only by all shards together, a weight in two shards, a FIFO) run in a subprocess under ``RLIMIT_AS`` of
1 GB (tests/test_hostile.py: a resource limit, not a timed assertion) and must exit 1; those decided
from names, links and placement before any weight is read run in this process.
The sets Keras itself writes are converted against ``model.predict`` in tests/test_training_checkpoints.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import h5py
import numpy as np
import pytest

from npxception import weights_tools as wt
from npxception import architecture as arch
from npxception.weights import weight_budget
from test_hostile import HEAD_FLAGS, _lazy, assert_refused, run_limited
from npxception.weights_tools.keras3_shards import max_shards

_CLASS_KEY = {"conv": "conv2d", "sepconv": "separable_conv2d", "bn": "batch_normalization"}


def _xception_vars(head_units=None) -> list[tuple[str, list]]:
    """``[(Keras 3 group path, [shape of vars/0, vars/1, ...])]`` of a bare applications.Xception, in Keras'
    layer order (keys per class, as saving_lib names them), and a top-level Dense of ``head_units``."""
    shapes = arch.param_shapes(arch.backbone("keras"), [], 3)
    counters: dict[str, int] = {}
    out = []
    for layer in arch.backbone("keras"):
        if layer.kind not in _CLASS_KEY:
            continue
        base = _CLASS_KEY[layer.kind]
        n = counters[base] = counters.get(base, -1) + 1
        out.append((f"layers/{base}" + (f"_{n}" if n else ""), [s for k, s in shapes.items()
                                                                 if k.split("/")[0] == layer.name]))
    if head_units:
        out.append(("layers/dense", [(2048, head_units), (head_units,)]))
    return out


def sharded_xception(folder, shards=3, *, head_units=None, head_alone=False, padding_bytes=256 << 10):
    """``folder/x.weights.json`` and its shards as Keras writes them: variables in order, a new shard every
    ~1/shards of them (the boundary falls inside a layer's vars), the weight_map listing where each group's
    variables went. ``head_alone``: the Dense head in a shard of its own. ``edit(files, weight_map)`` runs
    before the index is written, the shards open for writing."""
    folder.mkdir(exist_ok=True)
    groups = _xception_vars(head_units)
    variables = [(g, i, s) for g, vs in groups for i, s in enumerate(vs)]
    backbone = sum(1 for g, _, _ in variables if g != "layers/dense") if head_alone else len(variables)
    per = -(-backbone // (shards - int(head_alone)))
    files = [h5py.File(folder / f"x_{k:05d}.weights.h5", "w") for k in range(shards)]
    weight_map: dict[str, list[str]] = {}
    try:
        for n, (group, i, shape) in enumerate(variables):
            k = min(n // per, shards - 1) if n < backbone else shards - 1
            vars_group = files[k].require_group(f"{group}/vars")
            _lazy(vars_group, str(i), shape)
            listed = weight_map.setdefault(f"/{group}/vars", [])
            if os.path.basename(files[k].filename) not in listed:
                listed.append(os.path.basename(files[k].filename))
        for k, f in enumerate(files):
            f.create_dataset(f"optimizer/vars/{k}", data=np.random.default_rng(k).integers(0, 255, padding_bytes,
                                                                                          np.uint8))
            weight_map.setdefault("/optimizer/vars", []).append(os.path.basename(f.filename))
    finally:
        for f in files:
            f.close()
    index = folder / "x.weights.json"
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return index


def test_a_generated_set_reads_as_keras_lays_it_out(valid_set):
    """The builder's set is valid: every weight found where the index puts it, a layer split across shards."""
    index = valid_set
    weight_map = json.loads(index.read_text())["weight_map"]
    assert any(len(v) == 2 for v in weight_map.values()), "no layer straddles a shard boundary"
    with wt.open_layers(index) as reading:
        assert reading.kind == "Keras 3 sharded weights index (3 shards) (no config)"
        assert sum(len(k.weights) for k in reading.klayers) == 234


def _refused_limited(tmp_path, index, *fragments):
    """``convert`` in a child under RLIMIT_AS: for the cases that could make a reader allocate or wait."""
    out = run_limited("npxception.weights_tools.cli", "convert", index, "-o", tmp_path / "out.npz", *HEAD_FLAGS)
    assert_refused(out, os.path.basename(index), *fragments)
    assert not list(tmp_path.glob("out.npz*")), "a refused conversion left a file"


def _refused(tmp_path, index, *fragments, name=None):
    """Refused in this process: the cases decided from names, counts and placement, before any data."""
    with pytest.raises(wt.ConversionError, match=re.escape(name or os.path.basename(index))) as exc:
        wt.convert(index, tmp_path / "out.npz", pooling="avg", input_shape=(299, 299),
                   classifier_activation="softmax", variant="keras")
    message = str(exc.value)
    for fragment in fragments:
        assert fragment in message, message
    assert not list(tmp_path.glob("out.npz*")), "a refused conversion left a file"


@pytest.fixture(scope="module")
def valid_set(tmp_path_factory):
    return sharded_xception(tmp_path_factory.mktemp("valid") / "set")


def _copy(valid_set, tmp_path):
    """A copy of the valid set to break: ``tmp_path/set/x.weights.json``."""
    shutil.copytree(valid_set.parent, tmp_path / "set")
    return tmp_path / "set" / "x.weights.json"


def _rewrite_index(index, edit):
    data = json.loads(index.read_text())
    edit(data["weight_map"])
    index.write_text(json.dumps(data))


def _first_split(weight_map) -> str:
    return next(k for k, v in weight_map.items() if len(v) == 2)


# --------------------------------------------------------------------------- shard names

@pytest.mark.parametrize("name, expected", [
    ("../x_00001.weights.h5", "names '../x_00001.weights.h5'; expected a file name of the form x_NNNNN.weights.h5"),
    ("/etc/passwd", "names '/etc/passwd'; expected a file name of the form x_NNNNN.weights.h5"),
    ("x.weights.json", "names 'x.weights.json'; expected a file name of the form x_NNNNN.weights.h5"),
    ("y_00001.weights.h5", "expected a file name of the form x_NNNNN.weights.h5, beside the index"),
])
def test_a_shard_name_that_is_a_path_or_another_form_is_refused_before_any_shard_opens(valid_set, tmp_path, name, expected):
    index = _copy(valid_set, tmp_path)
    _rewrite_index(index, lambda m: m.__setitem__(_first_split(m), ["x_00000.weights.h5", name]))
    _refused(tmp_path, index, expected)


def test_a_renamed_index_is_refused_naming_its_saved_name(valid_set, tmp_path):
    """The index renamed beside its x_NNNNN shards: Keras cannot read it (it opens my_00000.weights.h5 first,
    tests/test_training_checkpoints.py); ours names the rename, not a shard as a bad name."""
    index = _copy(valid_set, tmp_path)
    os.rename(index, index.with_name("my.weights.json"))
    _refused(tmp_path, index.with_name("my.weights.json"), "lists the shards x_NNNNN.weights.h5 of a save named "
             "x.weights.json: the index was renamed?", "opens my_00000.weights.h5 first")


def test_a_shard_symlinked_out_of_the_directory_is_refused(valid_set, tmp_path):
    index = _copy(valid_set, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(tmp_path / "set" / "x_00001.weights.h5", elsewhere / "x_00001.weights.h5")
    os.symlink(elsewhere / "x_00001.weights.h5", tmp_path / "set" / "x_00001.weights.h5")
    _refused(tmp_path, index, "x_00001.weights.h5: a symlink to", "outside the directory of its index x.weights.json; not followed")


def test_a_symlink_within_the_directory_is_followed(valid_set, tmp_path):
    """A shard linked to a file of the same directory is read (a link farm of one folder stays usable)."""
    index = _copy(valid_set, tmp_path)
    os.rename(tmp_path / "set" / "x_00001.weights.h5", tmp_path / "set" / "data1.h5")
    os.symlink("data1.h5", tmp_path / "set" / "x_00001.weights.h5")
    with wt.open_layers(index) as reading:
        assert reading.kind.startswith("Keras 3 sharded weights index (3 shards)")


def test_a_fifo_as_a_shard_is_named_not_waited_on(valid_set, tmp_path):
    index = _copy(valid_set, tmp_path)
    os.unlink(tmp_path / "set" / "x_00002.weights.h5")
    os.mkfifo(tmp_path / "set" / "x_00002.weights.h5")
    _refused_limited(tmp_path, index, "x_00002.weights.h5: a FIFO (named pipe), not a regular file; expected a shard of")


def test_the_same_file_under_two_shard_names_is_refused(valid_set, tmp_path):
    index = _copy(valid_set, tmp_path)
    os.unlink(tmp_path / "set" / "x_00002.weights.h5")
    os.link(tmp_path / "set" / "x_00001.weights.h5", tmp_path / "set" / "x_00002.weights.h5")
    _refused(tmp_path, index, "x_00002.weights.h5: the same file as shard x_00001.weights.h5 (a link)")


# --------------------------------------------------------------------------- missing, unreferenced, duplicated

def test_a_missing_shard_is_named_before_any_shard_is_read(valid_set, tmp_path):
    index = _copy(valid_set, tmp_path)
    os.unlink(tmp_path / "set" / "x_00001.weights.h5")
    _refused(tmp_path, index, "lists shard x_00001.weights.h5, which is not beside it")


def test_a_shard_the_index_does_not_list_is_refused_by_name(valid_set, tmp_path):
    index = _copy(valid_set, tmp_path)
    shutil.copyfile(tmp_path / "set" / "x_00002.weights.h5", tmp_path / "set" / "x_00003.weights.h5")
    _refused(tmp_path, index, "x_00003.weights.h5 beside it is not listed by the index (3 shards")


def test_a_gap_in_the_numbering_is_refused(valid_set, tmp_path):
    """Shard 1's weights listed as shard 2's, shard 2 renamed to 3: the index lists 0, 2, 3."""
    def renumber(m):
        for v in m.values():
            v[:] = [{"x_00001.weights.h5": "x_00002.weights.h5", "x_00002.weights.h5": "x_00003.weights.h5"}
                    .get(n, n) for n in v]
    index = _copy(valid_set, tmp_path)
    os.rename(tmp_path / "set" / "x_00002.weights.h5", tmp_path / "set" / "x_00003.weights.h5")
    os.rename(tmp_path / "set" / "x_00001.weights.h5", tmp_path / "set" / "x_00002.weights.h5")
    _rewrite_index(index, renumber)
    _refused(tmp_path, index, "lists no weight in shard x_00001.weights.h5")


def test_a_shard_listed_twice_for_a_group_is_refused(valid_set, tmp_path):
    index = _copy(valid_set, tmp_path)
    _rewrite_index(index, lambda m: m[_first_split(m)].append(m[_first_split(m)][0]))
    _refused(tmp_path, index, "lists shard 'x_00000.weights.h5' twice; expected each shard once")


def test_a_weight_in_two_shards_is_refused(valid_set, tmp_path):
    """Two copies of one weight, each where the index says: the second is refused, never read (the first
    shard's copy would otherwise be read, or both charged)."""
    index = _copy(valid_set, tmp_path)
    with h5py.File(index.parent / "x_00000.weights.h5", "r") as first, \
            h5py.File(index.parent / "x_00001.weights.h5", "a") as second:
        _lazy(second.require_group("layers/conv2d/vars"), "0", first["layers/conv2d/vars/0"].shape)
    _rewrite_index(index, lambda m: m["/layers/conv2d/vars"].append("x_00001.weights.h5"))
    _refused_limited(tmp_path, index, "x_00001.weights.h5 (a shard of x.weights.json): holds weight layers/conv2d/vars/0, which", "holds too")


def test_a_weight_in_a_shard_the_index_does_not_list_for_it_is_refused(valid_set, tmp_path):
    """The index and the shards disagree (a stale index, or shards of another save)."""
    index = _copy(valid_set, tmp_path)
    _rewrite_index(index, lambda m: m.__setitem__("/layers/conv2d/vars", ["x_00001.weights.h5"]))
    _refused(tmp_path, index, "x_00000.weights.h5 (a shard of x.weights.json): holds weight layers/conv2d/vars/0, but the index",
             "puts /layers/conv2d/vars in x_00001.weights.h5", name="x_00000")


def test_a_listed_shard_holding_none_of_the_groups_weights_is_refused(valid_set, tmp_path):
    index = _copy(valid_set, tmp_path)
    _rewrite_index(index, lambda m: m["/layers/conv2d/vars"].append("x_00002.weights.h5"))
    _refused(tmp_path, index, "lists shard x_00002.weights.h5 for /layers/conv2d/vars, but it holds none")


# --------------------------------------------------------------------------- amplification

@pytest.mark.parametrize("groups, shards, expected", [
    (5000, 5000, f"lists more than {max_shards()} shards"),  # 5,000 shard names, none of them on disk
    (150_000, 100, "its weight_map lists 150,000 weight groups; a valid Xception save has at most 10,000"),  # 7.5 MB
])
def test_an_index_listing_more_than_a_valid_save_is_refused_before_opening_any_shard(tmp_path, groups, shards,
                                                                                     expected):
    folder = tmp_path / "set"
    folder.mkdir()
    index = folder / "x.weights.json"
    index.write_text(json.dumps({"weight_map": {f"/layers/dense_{i}/vars": f"x_{i % shards:05d}.weights.h5"
                                                for i in range(groups)}}))
    assert index.stat().st_size < 8 << 20  # under the index's size cap: refused by its counts
    _refused_limited(tmp_path, index, expected)


# Review 18: 300,000 names in one weight_map value (6.3 MB, under the index's size cap) were searched
# pairwise for the one listed twice (names.count per name: 111 s of CPU until RLIMIT_CPU killed the reader,
# nothing printed). Refused by the list's length, before any name is looked at; RLIMIT_CPU of 30 s is the
# guard against a quadratic walk (the linear read of the whole index takes under 2 s, imports included).
def test_a_weight_map_value_listing_more_shards_than_a_valid_save_is_refused_by_its_length(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    index = folder / "x.weights.json"
    names = [f"x_{i % 1000:05d}.weights.h5" for i in range(300_000)]  # every name listed 300 times
    index.write_text(json.dumps({"weight_map": {"/layers/dense/vars": names}}))
    out = run_limited("npxception.weights_tools.cli", "convert", index, "-o", tmp_path / "out.npz", *HEAD_FLAGS, cpu=30)
    assert_refused(out, "x.weights.json", "weight_map['/layers/dense/vars'] lists 300,000 shards; a valid Xception "
                   f"save has at most {max_shards()}")


def test_an_index_nested_beyond_the_json_parser_is_named_so(tmp_path):
    """Review 18: an index nested 100,000 levels deep was called "not a Keras weight file"."""
    index = tmp_path / "x.weights.json"
    index.write_text('{"weight_map": {}, "m": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _refused_limited(tmp_path, index, "nested too deeply", "a Keras 3 sharded weights index nests 3 levels")


def test_one_read_budget_covers_all_shards(tmp_path):
    """A Dense head of 62 M parameters in a shard of its own and the backbone in two more: each shard alone
    is under the read budget, all three are over it; refused naming the dataset that crosses it, with
    the budget said to cover all shards, before that dataset is allocated."""
    units = (weight_budget() // 8 - 20_000_000) // 2048  # the head alone fits; with the backbone it does not
    index = sharded_xception(tmp_path / "set", head_units=units, head_alone=True, padding_bytes=5 << 20)
    _refused_limited(tmp_path, index, "read budget are left (what the largest supported Xception model holds, over all "
             "its shards)")


def test_a_huge_index_is_refused_before_parsing(tmp_path):
    index = tmp_path / "x.weights.json"
    with open(index, "wb") as f:
        f.truncate(1 << 30)  # 1 GB claimed, nothing stored
    _refused_limited(tmp_path, index, "over the 8,388,608-byte limit")


# --------------------------------------------------------------------------- one shard alone

def test_a_shard_given_alone_is_refused_naming_its_index(valid_set, tmp_path):
    index = _copy(valid_set, tmp_path)
    _refused(tmp_path, index.parent / "x_00001.weights.h5",
             f"one shard of a set of Keras 3 sharded weights, indexed by {index}")


def test_a_shard_without_its_index_is_refused_as_one_shard_of_a_set(valid_set, tmp_path):
    lone = tmp_path / "x_00001.weights.h5"
    shutil.copyfile(valid_set.parent / "x_00001.weights.h5", lone)
    _refused(tmp_path, lone, "named as one shard of a set of Keras 3 sharded weights",
             "convert the set's index x.weights.json")
