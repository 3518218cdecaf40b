"""The tree of a Keras 3 weight file, by path: one ``.weights.h5`` (or an archive's ``model.weights.h5``),
or the shards of ``save_weights("x.weights.json", max_shard_size=...)`` merged into one tree.

:mod:`npxception.weights_tools.keras3` reads a Keras 3 file through this small interface only, so that a sharded
file is read exactly as the same model's single file (the same paths, the same checks, the same
errors); paths are relative to the root, without a leading slash (``layers/dense/vars/0``):

* ``members(path)``: the names in the group at ``path`` (``""`` is the root), None if it is no group;
* ``name_attr(path)``: the ``name`` attribute Keras 3.x writes on a ``vars`` group, or None;
* ``stored(path)``: the dataset at ``path`` as a :class:`~npxception.weights_tools.hdf5.StoredArray` (headers
  checked, data read on first use against the read budget);
* ``datasets()``: every dataset's path.

:class:`H5Store` answers from one :class:`~npxception.weights_tools.hdf5.GuardedH5`, looking paths up as they are
asked for. :class:`ShardStore` walks each shard once, when it is added (every group listed once,
against one listing budget for all shards), and answers from the merged tree: a dataset found in two
shards, or a path that is a group in one shard and a dataset in another, is refused by name.
"""

from __future__ import annotations

import h5py

from .errors import ConversionError
from .hdf5 import GuardedH5, StoredArray


class H5Store:
    """One Keras 3 weight file."""

    def __init__(self, h5: GuardedH5):
        self.h5 = h5
        self.where = h5.where

    def _get(self, path: str):
        try:
            return self.h5.get(self.h5.file, path)
        except ConversionError:  # missing (or a link refused): no such group, for the caller to name
            return None

    def members(self, path: str) -> list[str] | None:
        obj = self._get(path)
        return self.h5.keys(obj) if isinstance(obj, h5py.Group) else None

    def name_attr(self, path: str) -> str | None:
        return self.h5.attr_text(self.h5.get(self.h5.file, path), "name")

    def stored(self, path: str) -> StoredArray:
        return self.h5.stored(self.h5.file, path)

    def datasets(self) -> list[str]:
        """Every dataset path, each group visited once (a hard-linked cycle of groups is refused)."""
        seen = {self.h5.file.id}
        stack = [(self.h5.file, "")]
        out = []
        while stack:
            group, prefix = stack.pop()
            for name in self.h5.keys(group):
                obj = self.h5.get(group, name)
                if isinstance(obj, h5py.Group):
                    if obj.id in seen:
                        raise ConversionError(f"{self.where}: group {prefix}{name} is linked twice (a loop?); "
                                              "every group is read once")
                    seen.add(obj.id)
                    stack.append((obj, f"{prefix}{name}/"))
                else:
                    out.append(f"{prefix}{name}")
        return out


class ShardStore:
    """The shards of one Keras 3 sharded save, merged into one tree as they are added (:meth:`add`)."""

    def __init__(self, where: str):
        self.where = where
        self.groups: dict[str, set[str]] = {}  # group path -> member names, over all shards
        self.holders: dict[str, list[GuardedH5]] = {}  # group path -> the shards holding it
        self.owner: dict[str, GuardedH5] = {}  # dataset path -> the one shard holding it

    def add(self, h5: GuardedH5) -> None:
        """Walk the shard ``h5`` once: every group listed once (charged to its listing budget), every
        dataset placed by its path; a group linked twice within it is refused."""
        seen = {h5.file.id}
        stack = [(h5.file, "")]
        while stack:
            group, path = stack.pop()
            self.groups.setdefault(path, set())
            self.holders.setdefault(path, []).append(h5)
            for name in h5.keys(group):
                full = f"{path}/{name}" if path else name
                obj = h5.get(group, name)
                is_group = isinstance(obj, h5py.Group)
                if full in (self.owner if is_group else self.groups):
                    first = self.owner[full].where if is_group else self.holders[full][0].where
                    raise ConversionError(f"{h5.where}: {full} is a {'group' if is_group else 'dataset'} here but "
                                          f"a {'dataset' if is_group else 'group'} in {first}; expected one tree "
                                          "split across the shards")
                if is_group:
                    if obj.id in seen:
                        raise ConversionError(f"{h5.where}: group {full} is linked twice (a loop?); every group "
                                              "is read once")
                    seen.add(obj.id)
                    stack.append((obj, full))
                elif full in self.owner:
                    raise ConversionError(f"{h5.where}: holds weight {full}, which {self.owner[full].where} holds "
                                          "too; each weight is in one shard")
                else:
                    self.owner[full] = h5
                self.groups[path].add(name)

    def members(self, path: str) -> list[str] | None:
        return sorted(self.groups[path]) if path in self.groups else None

    def name_attr(self, path: str) -> str | None:
        """The ``name`` a ``vars`` group records, in whichever shards hold the group (Keras writes it where
        the layer's first weight goes); shards that disagree are refused."""
        names = {}
        for h5 in self.holders.get(path, []):
            name = h5.attr_text(h5.get(h5.file, path), "name")
            if name is not None:
                names.setdefault(name, h5.where)
        if len(names) > 1:
            raise ConversionError(f"{self.where}: the shards name the layer of {path} differently: "
                                  + ", ".join(f"{n!r} in {w}" for n, w in names.items()))
        return next(iter(names), None)

    def stored(self, path: str) -> StoredArray:
        h5 = self.owner.get(path)
        if h5 is None:
            raise ConversionError(f"{self.where}: no shard holds dataset {path}")
        return h5.stored(h5.file, path)

    def datasets(self) -> list[str]:
        return list(self.owner)
