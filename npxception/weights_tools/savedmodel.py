"""tf_keras SavedModel directories: the Keras config from ``keras_metadata.pb``, the weights from ``variables/``.

``model.save("my_model")`` in tf_keras (Keras 2), without an extension, writes a directory::

    saved_model.pb        the TensorFlow graph (functions, signatures): never read here
    keras_metadata.pb     SavedMetadata (tf_keras/protobuf/saved_metadata.proto)
    variables/variables.index, variables/variables.data-00000-of-00001
                          the weights, a tensor bundle (weights_tools.tf_bundle)
    fingerprint.pb, assets/

``SavedMetadata`` is ``repeated SavedObject nodes = 1``, each ``{int32 node_id = 2;
string node_path = 3; string identifier = 4; string metadata = 5}``: one per
Keras object, ``node_path`` its object path in the SavedModel
(``root``, ``root.layer-1``, ``root.layer_with_weights-0.layer_with_weights-1``
for a layer of a nested backbone), ``metadata`` a JSON object with its ``name``,
``class_name`` and ``config``. The root's metadata holds the model's
``class_name`` and ``config``: the same ``get_config()`` that ``to_json()`` and
``.h5`` saves record, except that tuples are written as ``{"class_name":
"__tuple__", "items": [...]}`` (tf_keras ``saving/legacy/saved_model/json_utils.py``);
they are read back as lists, as tf_keras' own decoder reads them back as tuples.
The metadata is read as plain JSON data only, never deserialised.

Each layer's ``node_path`` is its path in the checkpoint's object graph too
(:mod:`npxception.weights_tools.tf_checkpoint`), so a layer's weights are found by where
the SavedModel put the layer, never by guessing an order; its ``node_id`` is
checked against the node that path reaches.

A SavedModel without ``keras_metadata.pb`` (Keras 3's ``model.export()``,
``tf.saved_model.save``) is a serving graph with no Keras config: refused, with
what to save instead.
"""

from __future__ import annotations

import contextlib
import pathlib

from npxception.config import CONFIG
from npxception.untrusted import loads_json

from . import protowire as pw
from .errors import ConversionError
from .formats import _open_checked, not_keras_savedmodel
from .tf_bundle import Bundle
from .tf_checkpoint import read_object_graph

METADATA = "keras_metadata.pb"
VARIABLES = pathlib.Path("variables") / "variables"
# keras_metadata.pb of the recipe (nested Xception) is ~500 kB: every layer's config, twice (in the
# root's model config and in its own node). Its JSON inflates ~20x when parsed, as config.json does
# (weights_tools.keras3.MAX_JSON_BYTES), so 8 MiB (16x the recipe's) keeps parsing within ~200 MB.
MAX_METADATA_BYTES = 8 * 1024**2
MAX_NODE_PATH = 4096  # characters; real paths nest a few levels of "layer_with_weights-N"
# The recipe's keras_metadata.pb (the corpus' tf_keras SavedModel) has 145 nodes (one per layer, model
# and metric), each of 4-5 fields; its longest node_path is 47 characters in 4 segments
# ("root.keras_api.metrics.0"). Nodes and their fields are counted as they are decoded, before the
# Python objects (~100 bytes a field, from 2 bytes of input) are made.
MAX_METADATA_NODES = 10_000  # 70x the recipe's
MAX_NODE_FIELDS = 1000  # a SavedObject has 5 fields
# Segments of a node_path: "root", the nested models (the config reader refuses more than
# CONFIG.max_model_nesting), then a layer, or "keras_api.metrics.N" (3 segments) of a model.
MAX_NODE_SEGMENTS = CONFIG.max_model_nesting + 4

_METADATA = {1: ("nodes", pw.LENGTH, True)}
_NODE = {2: ("node_id", pw.VARINT, False), 3: ("node_path", pw.LENGTH, False), 4: ("identifier", pw.LENGTH, False),
         5: ("metadata", pw.LENGTH, False)}


def _untuple(obj: dict):
    """json object_hook: tf_keras' ``{"class_name": "__tuple__", "items": [...]}`` back to a list."""
    if obj.get("class_name") == "__tuple__" and isinstance(obj.get("items"), list) and len(obj) == 2:
        return obj["items"]
    return obj


def read_metadata(directory: pathlib.Path) -> tuple[dict, dict[tuple, tuple], dict[tuple, int]]:
    """``(model config, {Keras path: object path}, {object path: node id})`` from ``keras_metadata.pb``."""
    path = directory / METADATA
    where = str(path)
    with _open_checked(path) as f:
        data = f.read(MAX_METADATA_BYTES + 1)
    if len(data) > MAX_METADATA_BYTES:
        raise ConversionError(f"{where}: over {MAX_METADATA_BYTES:,} bytes; refused before parsing")
    names: dict[str, str] = {}  # node_path -> the layer's name
    ids: dict[str, int] = {}
    depth: dict[str, int] = {}  # node_path -> its segments
    root = None
    nodes_budget = pw.FieldBudget(MAX_METADATA_NODES, "nodes")
    try:
        for raw in pw.message(data, _METADATA, nodes_budget).get("nodes", []):
            node = pw.message(raw, _NODE, pw.FieldBudget(MAX_NODE_FIELDS, "fields in one node"))
            node_path = pw.text(node.get("node_path", b""), "a node_path")
            if len(node_path) > MAX_NODE_PATH or not (node_path == "root" or node_path.startswith("root.")):
                raise pw.WireError(f"node_path {node_path[:80]!r} is not root or root.<child>...")
            segments = node_path.count(".") + 1
            if segments > MAX_NODE_SEGMENTS:
                raise pw.LimitError(f"a node_path of {segments:,} segments ({node_path[:40]!r}...), more than "
                                    f"{MAX_NODE_SEGMENTS} (models nest at most {CONFIG.max_model_nesting} deep)")
            if node_path in names:
                raise pw.WireError(f"node_path {node_path!r} appears twice")
            try:
                meta = loads_json(pw.text(node.get("metadata", b"{}"), "a node's metadata"), object_hook=_untuple)
            except ValueError as exc:
                raise pw.WireError(f"the metadata of {node_path} is not JSON ({exc})") from None
            if not isinstance(meta, dict):
                raise pw.WireError(f"the metadata of {node_path} is not a JSON object")
            if node_path == "root":
                root = meta
            names[node_path] = str(meta.get("name", ""))
            ids[node_path] = pw.signed64(node.get("node_id", -1))
            depth[node_path] = segments
    except pw.LimitError as exc:
        raise ConversionError(f"{where}: {exc}, over this reader's limit; a Keras model's SavedMetadata holds "
                              "a few hundred nodes, each a few segments deep") from None
    except pw.WireError as exc:
        raise ConversionError(f"{where}: not a readable Keras SavedMetadata ({exc})") from None
    if root is None or not isinstance(root.get("config"), dict):
        raise ConversionError(f"{where}: no root model config (a SavedModel of a subclassed model, which "
                              "records no layer list?); save a Functional or Sequential model")
    config = {"class_name": root.get("class_name", "Functional"), "config": root["config"],
              "keras_version": root.get("keras_version")}  # which Keras wrote it (preprocessing.input_stage)
    # The Keras path of a node: the names of the nested models on the way, then the layer's own. Built
    # from its parent's, shallowest first, so each node costs its own path's length.
    kpaths: dict[str, tuple] = {"root": ()}
    object_paths, node_ids = {}, {}
    for node_path in sorted(names, key=depth.__getitem__):
        if node_path == "root":
            continue
        parent = node_path.rpartition(".")[0]
        if parent not in kpaths:
            continue  # an object inside a non-layer (metrics under keras_api): no layer of the config
        kpath = kpaths[node_path] = kpaths[parent] + (names[node_path],)
        opath = tuple(node_path.split(".")[1:])
        object_paths[kpath] = opath
        node_ids[opath] = ids[node_path]
    return config, object_paths, node_ids


@contextlib.contextmanager
def open_savedmodel(directory):
    """``(config, paths: {Keras path: object path}, bundle, object graph)`` of a tf_keras SavedModel."""
    directory = pathlib.Path(directory)
    if not (directory / METADATA).is_file():
        raise not_keras_savedmodel(directory)
    config, object_paths, node_ids = read_metadata(directory)
    with Bundle(directory / VARIABLES) as bundle:
        graph = read_object_graph(bundle)
        for opath, node_id in node_ids.items():
            found = graph.node(opath)
            if found is not None and found != node_id:
                raise ConversionError(f"{directory}: {METADATA} puts node {node_id} at {'.'.join(('root',) + opath)}, "
                                      f"but the checkpoint's object graph has node {found} there (files of "
                                      "different saves?)")
        yield config, object_paths, bundle, graph
