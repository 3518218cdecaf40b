"""Keras 3 sharded weights: ``model.save_weights("x.weights.json", max_shard_size=...)``.

Keras' layout (keras/src/saving/saving_lib.py, ``ShardedH5IOStore``, Keras 3.15): the index
``x.weights.json`` is plain JSON, ``{"metadata": {"total_size": ...}, "weight_map": {...}}``, mapping
each ``vars`` group (``"/layers/dense/vars"``) to the shard files holding its variables (a name, or a
list when the layer's variables straddle a shard boundary). The shards, ``x_00000.weights.h5``,
``x_00001.weights.h5``..., sit beside the index (``x`` is the index's name without ``.json`` and
``.weights``, as Keras derives it) and hold the tree a single ``.weights.h5`` holds, cut between
variables: a layer's ``vars/0`` may be in one shard and ``vars/1`` in the next. Keras writes a new
shard only when the next variable does not fit, so every shard holds a variable, and refuses a
variable larger than ``max_shard_size``. ``model.load_weights("x.weights.json")`` reads it back.
``model.save`` / ``keras.saving.save_model`` cannot shard in this version (they refuse
``max_shard_size``), and an unzipped ``.keras`` directory holds one ``model.weights.h5``.

Read here (against hostile files: the budget rule, docs/security.md):

* the index, size-capped before parsing (``CONFIG.max_config_bytes``), parsed as plain data; every
  key a ``vars`` group path, every shard a plain file name of Keras' form ``x_NNNNN.weights.h5``
  (so no path, no ``..``, nothing outside the index's directory), numbered 0, 1, ... with none
  missing, none listed twice for a group, at most :func:`max_shards` of them;
* the directory: a file ``x_NNNNN.weights.h5`` the index does not list is refused by name (a shard of
  another save, mixed in);
* each shard, before any weight is read: a regular file (no FIFO or device) inside the directory (a
  symlink is followed only to a file of the same directory), not the same file as another shard,
  opened once and walked once (:class:`~npxception.weights_tools.weight_store.ShardStore`), all shards sharing one
  read budget and one listing budget (what one valid Xception file may take);
* consistency: every weight in a shard the index lists for its group, every shard the index lists
  for a group holding some of its weights, no weight in two shards.

Then the merged tree is read as a single ``.weights.h5`` is (:mod:`npxception.weights_tools.keras3`).
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import re

from npxception import architecture as arch
from npxception.config import CONFIG
from npxception.untrusted import DeepJSONError, IrregularFileError, ReadBudget, loads_json, open_regular, short_repr
from npxception.weights import weight_budget

from .errors import ConversionError
from .hdf5 import HDF5_MAGIC, PARAM_BYTES, GuardedH5
from .keras3 import read_capped
from .weight_store import ShardStore

SHARD = re.compile(r"(.+)_(\d{5})\.weights\.h5")  # Keras' f"{base_name}_{index:05}.weights.h5"
# Copies of each weight a training save may hold: the weight and up to 3 optimizer slots (Adam with amsgrad).
_COPIES = 4


def max_shards() -> int:
    """The most shards a valid Xception save can have.

    Keras opens a new shard only when the next variable does not fit in ``max_shard_size``, and refuses
    a variable larger than that, so two consecutive shards hold more than the largest variable: n shards
    hold more than (n - 1) / 2 of them. A valid file holds at most the read budget's parameters
    (:func:`~npxception.weights.weight_budget`), ``_COPIES`` times, and its largest variable is at least
    Xception's (block14_sepconv2's 1x1x1536x2048 kernel): 219 shards. Real saves have a few dozen at most
    (an Xception trained with Adam, at the smallest ``max_shard_size`` Keras accepts for it: ~45).
    """
    largest = max(math.prod(s) for s in arch.param_shapes(arch.backbone("keras"), [], 3).values())
    return 2 * math.ceil(_COPIES * (weight_budget() // PARAM_BYTES) / largest) + 1


def base_name(index: pathlib.Path) -> str:
    """The shards' stem for the index ``index``, as Keras derives it (``Path.stem.replace(".weights", "")``
    of the ``.json`` name)."""
    return index.with_suffix(".json").stem.replace(".weights", "")


def read_index(path: pathlib.Path) -> dict | None:
    """The index at ``path`` as plain data if it is one (a JSON object with a ``weight_map`` object), else
    None. Its size is checked before a byte is parsed."""
    data = read_capped(path, CONFIG.max_config_bytes)  # its refusal is a ConversionError: not in the try
    try:
        index = loads_json(data)
    except DeepJSONError as exc:  # JSON, but no index (one nests 3 levels): say why, not "not a weight file"
        raise ConversionError(f"{path}: {exc}; a Keras 3 sharded weights index nests 3 levels") from None
    except ValueError:  # not JSON (UnicodeDecodeError, JSONDecodeError)
        return None
    return index if isinstance(index, dict) and isinstance(index.get("weight_map"), dict) else None


def sibling_index(shard: pathlib.Path) -> pathlib.Path | None:
    """The index beside a file named as a shard (``x_00001.weights.h5`` -> ``x.weights.json``), if it exists."""
    match = SHARD.fullmatch(shard.name)
    index = shard.with_name(f"{match.group(1)}.weights.json") if match else None
    return index if index is not None and os.path.lexists(index) else None


def refuse_lone_shard(path: pathlib.Path) -> None:
    """A shard given alone while its index is beside it: name the index, never read part of a model."""
    index = sibling_index(path)
    if index is not None:
        raise ConversionError(f"{path}: one shard of a set of Keras 3 sharded weights, indexed by {index}; "
                              f"convert the index {index.name} (npxception reads every shard it lists)")


def lone_shard_error(path, exc: ConversionError) -> ConversionError:
    """``exc`` for a file that did not read as a whole model, or, when the file is named as a shard
    (``x_00001.weights.h5``, no index beside it), the error saying it is most likely one shard of a set.

    A file so named that reads whole (``ModelCheckpoint("ckpt_{epoch:05d}.weights.h5")`` writes such names)
    never gets here: it is read as any other."""
    path = pathlib.Path(path)
    match = SHARD.fullmatch(path.name)
    if match is None:
        return exc
    return ConversionError(
        f"{path}: named as one shard of a set of Keras 3 sharded weights (save_weights(..., max_shard_size=)), "
        f"and it does not hold a whole model ({exc}); convert the set's index {match.group(1)}.weights.json, "
        "with every shard it lists beside it")


@contextlib.contextmanager
def shard_named(path):
    """Within the block, a ConversionError becomes :func:`lone_shard_error`'s."""
    try:
        yield
    except ConversionError as exc:
        raise lone_shard_error(path, exc) from None


def _shard_list(key: str, value, where: str, most: int) -> list[str]:
    """The shard names of one weight_map entry: counted against ``most`` before any is looked at, then
    checked in one pass (a hostile list is refused by its length, never searched pairwise)."""
    names = [value] if isinstance(value, str) else value
    if isinstance(names, list) and len(names) > most:
        raise ConversionError(f"{where}: weight_map[{short_repr(key)}] lists {len(names):,} shards; a valid "
                              f"Xception save has at most {most} (a hostile or corrupt file?)")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConversionError(f"{where}: weight_map[{short_repr(key)}] is {short_repr(value)}; expected a shard "
                              "file name or a non-empty list of them")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConversionError(f"{where}: weight_map[{short_repr(key)}] lists shard {short_repr(name)} twice; "
                                  "expected each shard once")
        seen.add(name)
    return names


def _renamed_from(weight_map: dict) -> str | None:
    """The one stem of every shard name the weight_map lists, when they all have Keras' form with one stem
    (an index renamed after the save), else None. A linear walk, on the error path only."""
    stems = set()
    for value in weight_map.values():
        for name in [value] if isinstance(value, str) else value if isinstance(value, list) else [None]:
            match = SHARD.fullmatch(name) if isinstance(name, str) else None
            if match is None or "/" in name or "\\" in name or len(stems | {match.group(1)}) > 1:
                return None
            stems.add(match.group(1))
    return next(iter(stems), None)


def check_index(index: dict, path: pathlib.Path) -> tuple[dict[str, list[str]], list[str]]:
    """``({group path without slashes: [shard names]}, shard names in order)``: the index's weight_map,
    every key and shard name checked (module docstring)."""
    where = str(path)
    weight_map = index["weight_map"]
    if len(weight_map) > CONFIG.max_h5_listings:
        raise ConversionError(f"{where}: its weight_map lists {len(weight_map):,} weight groups; a valid Xception "
                              f"save has at most {CONFIG.max_h5_listings:,} (a hostile or corrupt file?)")
    base, most = base_name(path), max_shards()
    shard = re.compile(re.escape(base) + r"_(\d{5})\.weights\.h5")
    groups: dict[str, list[str]] = {}
    numbers: dict[str, int] = {}
    for key, value in weight_map.items():
        if not (key == "/vars" or (key.startswith("/") and key.endswith("/vars"))) or "//" in key:
            raise ConversionError(f"{where}: weight_map key {short_repr(key)} is not a weight group; expected "
                                  "Keras' '/layers/<layer>/vars' form")
        names = _shard_list(key, value, where, most)
        for name in names:
            match = shard.fullmatch(name)
            if match is None:
                stem = _renamed_from(weight_map)
                if stem is not None:
                    raise ConversionError(
                        f"{where}: its weight_map lists the shards {stem}_NNNNN.weights.h5 of a save named "
                        f"{stem}.weights.json: the index was renamed? Keras' load_weights cannot read it either (it "
                        f"derives the shard names from the index's name and opens {base}_00000.weights.h5 first); "
                        f"give the index its saved name {stem}.weights.json, beside its shards")
                raise ConversionError(f"{where}: weight_map[{short_repr(key)}] names {short_repr(name)}; expected a "
                                      f"file name of the form {base}_NNNNN.weights.h5, beside the index (Keras "
                                      "writes no other; a path is never followed)")
            numbers[name] = int(match.group(1))
            if len(numbers) > most:
                raise ConversionError(f"{where}: lists more than {most} shards, the most a valid Xception "
                                      "save can have (a hostile or corrupt file?)")
        groups[key.strip("/")] = names
    ordered = sorted(numbers, key=numbers.get)
    for expected, name in enumerate(ordered):
        if numbers[name] != expected:
            raise ConversionError(f"{where}: lists no weight in shard {base}_{expected:05d}.weights.h5 (it lists "
                                  f"{len(ordered)} shards up to {ordered[-1]}); Keras numbers its shards 0, 1, ... "
                                  "and writes a weight in each: not the index Keras wrote with these shards")
    return groups, ordered


def _unreferenced(path: pathlib.Path, listed: list[str]) -> None:
    """Refuse a file of the index's shard names that the index does not list: a shard of another save."""
    base, known = base_name(path), set(listed)
    shard = re.compile(re.escape(base) + r"_\d{5}\.weights\.h5")
    with os.scandir(path.parent) as entries:
        for entry in entries:
            if shard.fullmatch(entry.name) and entry.name not in known:
                raise ConversionError(f"{path}: {entry.name} beside it is not listed by the index ({len(listed)} "
                                      f"shards, up to {listed[-1]}): left by an interrupted save, or by another "
                                      "save? Save the model again into an empty directory (or, if it belongs to "
                                      "another save, move it away)")


def _open_shard(directory: pathlib.Path, name: str, seen: dict, where: str):
    """Open shard ``name`` of ``directory``: a regular file inside it (a symlink followed only to a file of
    the same directory), not a file already opened under another name."""
    shard = directory / name
    real = pathlib.Path(os.path.realpath(shard))
    if real.parent != pathlib.Path(os.path.realpath(directory)):
        raise ConversionError(f"{shard}: a symlink to {real}, outside the directory of its index "
                              f"{pathlib.Path(where).name}; not followed. Copy the shard beside the index")
    try:
        f = open_regular(real, follow_symlinks=False)  # the path checked above, not one swapped in since
    except IrregularFileError as exc:
        raise ConversionError(f"{shard}: {exc.kind}, not a regular file; expected a shard of {where}") from None
    except OSError as exc:
        raise ConversionError(f"{shard}: cannot open ({exc.strerror or exc})") from None
    st = os.fstat(f.fileno())
    if (st.st_dev, st.st_ino) in seen:
        f.close()
        raise ConversionError(f"{shard}: the same file as shard {seen[st.st_dev, st.st_ino]} (a link); "
                              f"expected a file per shard of {where}")
    seen[st.st_dev, st.st_ino] = name
    if f.read(len(HDF5_MAGIC)) != HDF5_MAGIC:
        f.close()
        raise ConversionError(f"{shard}: not an HDF5 file; expected a shard of {where}")
    f.seek(0)
    return f


def _check_placement(store: ShardStore, groups: dict[str, list[str]], shard_of: dict, where: str) -> None:
    """Every weight in a shard the index lists for its group, and every listed shard holding some of them."""
    held: dict[str, set[str]] = {}
    for dataset, h5 in store.owner.items():
        group, _, _ = dataset.rpartition("/")
        name = shard_of[id(h5)]
        listed = groups.get(group)
        if listed is None:
            raise ConversionError(f"{h5.where}: holds weight {dataset}, whose group /{group} the index {where} "
                                  "does not list")
        if name not in listed:
            raise ConversionError(f"{h5.where}: holds weight {dataset}, but the index {where} puts /{group} in "
                                  f"{', '.join(listed)}")
        held.setdefault(group, set()).add(name)
    for group, listed in groups.items():
        empty = [n for n in listed if n not in held.get(group, ())]
        if empty:
            raise ConversionError(f"{where}: lists shard {empty[0]} for /{group}, but it holds none of that group's "
                                  "weights; not the index Keras wrote with these shards")


@contextlib.contextmanager
def open_shards(path):
    """``(store, shard count)``: the shards of the index at ``path`` merged into one
    :class:`~npxception.weights_tools.weight_store.ShardStore`, every header checked (module docstring); the shards
    stay open within the block, their weights read on first use against one read budget."""
    path = pathlib.Path(path)
    where = str(path)
    index = read_index(path)
    if index is None:
        raise ConversionError(f"{where}: not a Keras 3 sharded weights index (a JSON object with a weight_map)")
    groups, names = check_index(index, path)
    if not names:
        raise ConversionError(f"{where}: a sharded weights index that lists no shard; expected the weights of "
                              "a model")
    _unreferenced(path, names)
    for name in names:  # all present before any is opened
        if not os.path.lexists(path.parent / name):
            raise ConversionError(f"{where}: lists shard {name}, which is not beside it ({path.parent / name}: no "
                                  "such file); copy every shard with the index")
    budget = ReadBudget(weight_budget(), where, error=ConversionError,
                        why=" (what the largest supported Xception model holds, over all its shards)")
    store, shard_of, seen = ShardStore(where), {}, {}
    listings = CONFIG.max_h5_listings  # for all shards together, as for one file
    with contextlib.ExitStack() as stack:
        for name in names:
            f = stack.enter_context(_open_shard(path.parent, name, seen, where))
            h5 = stack.enter_context(GuardedH5(f, f"{path.parent / name} (a shard of {path.name})", budget=budget))
            h5.listings_left = listings
            store.add(h5)
            listings = h5.listings_left
            shard_of[id(h5)] = name
        _check_placement(store, groups, shard_of, where)
        yield store, len(names)
