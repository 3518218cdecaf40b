"""What ``compare`` is handed, read as untrusted input: the ``--against`` path, activation dumps, ONNX graphs.

A dump or a graph may come from anyone (docs/security.md), so each is checked
before the work it asks for, and every refusal names the file and the offending
entry or node:

* the path (:func:`check_other_path`): a regular file or a TensorFlow save; a FIFO
  or a device is named as such, never waited on or read for ever;
* an ``.npz`` dump (:func:`read_dump`): headers before data. The zip's directory
  (each entry once), then every ``.npy`` header, are checked against a budget
  known before a byte of data is read: what our model's layers hold for the
  dump's batch and input size (from its ``__input__``, else our fixed input
  size), and never more than :data:`MAX_INFLATION` times the file's size;
* an ONNX graph (:func:`load_onnx`): a bounded file and node count, and only
  the operators an exported CNN is made of; control flow (``Loop`` with a trip
  count of 10^15 ran for ever), random, sequence and allocation-by-value
  operators are refused by node, before onnxruntime sees the graph; then, for
  the input it is fed, the work it asks (:mod:`.onnx_work`: every tensor's
  shape, their sizes and the multiply-adds, against our Xception's at that size).
"""

from __future__ import annotations

import math
import os
import pathlib
import re
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from .. import architecture as arch
from .. import input_stage as stage
from .. import keras_side
from ..untrusted import NO_FILE, check_zip_directory, open_regular, short_repr, why_not_regular
from ..weights import _read_npy, npy_header, weight_budget
from .names import AUTO_NAME_PATTERN, AUTO_NAMES

# The reserved dump key for the input batch the dumped activations were computed from.
INPUT_KEY = "__input__"
# A dump's arrays may hold at most this many times the file's size: np.savez stores them (1x), and
# savez_compressed shrinks float activations about 2x (a ReLU output is half zeros); deflate reaches
# 1032x, which made a 1 MB file a 1 GiB allocation.
MAX_INFLATION = 64
FLOOR_BYTES = 1 << 20  # what a tiny dump may always hold (a few small arrays compress better than 64x)
# An entry's per-image values may exceed our layer's by this factor plus SLACK_VALUES: a port's map can
# be a row or column larger (symmetric padding), its head wider (1000 classes against our 3); compare
# explains such shape differences, so they must be read, not refused.
SLACK_FACTOR = 4
SLACK_VALUES = 1 << 16
# Entries of a dump: a PyTorch dump hooks every module (containers, activations: ~4 per layer of ours).
MAX_ENTRIES = 10_000


# What compare's other side may be, for its errors: every form `npxception convert` reads, and a port's.
OTHER_FORMS = ("a .keras, .h5, .onnx or .npz file, the .weights.json index of Keras 3 sharded weights, a directory (a tf_keras SavedModel, Keras 3's "
               "model.save(dir, zipped=False), a directory of TensorFlow checkpoints) or a TensorFlow checkpoint "
               "(its prefix or .index)")


def check_other_path(path: pathlib.Path) -> None:
    """Refuse an ``--against`` that is neither a save of several files (a directory, a checkpoint prefix)
    nor a regular file, saying what it is: a FIFO would block the reader, ``/dev/zero`` never ends."""
    if keras_side.is_multi_file_save(path):
        return
    why = why_not_regular(path)
    if why == NO_FILE:
        raise FileNotFoundError(f"{path}: no such file")
    if why:
        raise ValueError(f"{path}: {why}; expected {OTHER_FORMS}")


# --------------------------------------------------------------------------- activation dumps

def _per_image(model, hw) -> dict[str, int]:
    """``{our layer: values per image}`` for a source input of ``hw``, or {} when the size is unknown."""
    if hw is None or None in hw:
        return {}
    try:
        bh, bw = stage.output_size(model.input_stage, hw)  # what the backbone sees after the model's stage
        shapes = arch.trace(model.layers, model.head, (bh, bw, model.channels))
    except (ValueError, TypeError):
        return {}  # a size the model refuses: compare says so when it runs
    return {name: math.prod(d for d in shape if d is not None) for name, (shape, _, _) in shapes.items()}


def input_layout(dims, channels: int, what: str) -> str | None:
    """The layout a 4-D image batch's dims determine for a ``channels``-channel model: ``"NCHW"`` when
    only dim 1 is ``channels``, ``"NHWC"`` when only dim 3 is, None when neither is (an unknown dim,
    None, as an ONNX graph may declare it, is no evidence: whoever feeds it then refuses a shape that
    does not fit). Both (a 75x75 image of 75 channels, ``(N, 75, 75, 75)``) is refused, ``what`` named:
    either reading fits, and guessing one compares the other's values."""
    if len(dims) != 4:
        return None
    first, last = dims[1] == channels, dims[3] == channels
    if first and last:
        shown = "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"
        raise ValueError(f"{what}: {shown} reads as NCHW and as NHWC for a {channels}-channel model (dims 1 and "
                         "3 are both its channel count); pass layout='NCHW' or layout='NHWC' (--layout) to say which")
    return "NCHW" if first else "NHWC" if last else None


def _input_geometry(shape, layout, channels, what) -> tuple[int, tuple[int, int]] | None:
    """``(batch, (H, W))`` of a 4-D input header, NCHW when ``layout`` says so or the channels (``channels``,
    the model's) say it (:func:`input_layout`)."""
    if len(shape) != 4:
        return None
    nchw = layout == "NCHW" or (layout is None and input_layout(shape, channels, what) == "NCHW")
    return shape[0], (shape[2], shape[3]) if nchw else (shape[1], shape[2])


def read_dump(path, model, mapping=None, layout=None) -> tuple[dict, list[str]]:
    """A ``.npz`` activation dump ``{their key: array}``, read within a budget known before its data, and
    the keys it holds that compare can never match to a layer of ours (listed, never read).

    ``mapping``: ``{their name: our name}`` (compare's ``names=``); ``layout``: the dump's, if given.
    Refused, naming the file and the entry: a name listed twice in the zip, an entry that is no
    ``.npy`` array, a non-numeric dtype, an entry holding more values than our layer of that name
    (for the batch and input size the dump declares; see the slack constants), and arrays that
    together exceed :data:`MAX_INFLATION` times the file's size (a zip bomb).
    """
    where = str(path)
    mapping = mapping or {}
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            check_zip_directory(f, where, max_entries=MAX_ENTRIES, what="an activation dump")
            with zipfile.ZipFile(f) as z:
                return _read_members(z, where, size, model, mapping, layout)
        except zipfile.BadZipFile as exc:
            raise ValueError(f"{where}: not a readable .npz dump ({exc})") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{where}: not a readable .npz dump ({exc})") from None


def _read_members(z: zipfile.ZipFile, where, size, model, mapping, layout) -> dict:
    infos = z.infolist()
    if len(infos) > MAX_ENTRIES:
        raise ValueError(f"{where}: {len(infos):,} entries, more than the {MAX_ENTRIES:,} a dump of "
                         f"{len(model.layer_names)} layers can need; refused before reading them")
    members = {}
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise ValueError(f"{where}: entry {info.filename!r} is not an .npy array; a dump holds "
                             "np.savez(path, **{name: activation}) arrays only")
        key = info.filename[:-len(".npy")]
        if key in members:
            raise ValueError(f"{where}: entry {key!r} appears twice in the zip's directory; a dump holds "
                             "each name once")
        members[key] = info
    headers = {}
    for key, info in members.items():  # every header first: nothing is decompressed past them
        with z.open(info) as f:
            shape, _, dtype = npy_header(f, where, repr(key))
        if dtype.kind not in "fiu" or dtype.fields is not None or dtype.hasobject:
            # numpy has no bfloat16: np.save writes a torch/ml_dtypes bfloat16 array as raw 2-byte records
            hint = (" (bfloat16? numpy cannot read it: save bfloat16 activations as float32, tensor.float(); "
                    "compare then sees the bfloat16 rounding)") if dtype.itemsize == 2 else ""
            raise ValueError(f"{where}: entry {key!r} has dtype {dtype}; expected a numeric activation "
                             f"array{hint}")
        headers[key] = (tuple(shape), dtype)
    unread = _check_budget(headers, where, size, model, mapping, layout)
    return {key: native_order(_read_npy(z, members[key], where, repr(key), shape=shape, kinds="fiu",
                                        max_bytes=math.prod(shape) * dtype.itemsize))
            for key, (shape, dtype) in headers.items() if key not in unread}, unread


def native_order(a):
    """``a`` in the machine's byte order: a big-endian array (``>f4``: np.save on a big-endian machine, or
    ``astype('>f4')`` wrote) holds valid values, and the compiled kernels take native arrays only."""
    a = np.asarray(a)
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


def _scoped_layer(key: str, names: set, largest: dict) -> str | None:
    """Our layer a TFLite-style key's scopes name (``model/block1_conv1_act/Relu;...``: any scope, its traced
    ``_N`` suffix dropped or not, that is one of our names, or our largest layer of an auto-name's kind), as
    compare's matcher (names.match_tflite_names) may take it; None when no scope does."""
    for segment in key.split(";"):
        for scope in segment.split("/")[:-1]:
            for name in (scope, re.sub(r"_\d+$", "", scope)):
                if name in names:
                    return name
                if (auto := AUTO_NAME_PATTERN.fullmatch(name)) and auto.group(1) in largest:
                    return largest[auto.group(1)]
    return None


def _check_budget(headers, where, size, model, mapping, layout) -> list[str]:
    """Refuse, before any data is read, an entry larger than our layer of its name (or, for a Keras
    auto-name, our largest layer of that kind) for the dump's batch and input size, or arrays that
    together exceed what the file's size can hold. Returns the entries compare can never match to a layer
    of ours, by name or (a TFLite-style scoped key, an auto-name) by shape: they are listed in the report
    as theirs only and never read (review 23: an entry ``junk`` declaring 2.24 GB in a 50 MB dump was
    inflated in full)."""
    batch, hw = None, None
    if INPUT_KEY in headers:
        geometry = _input_geometry(headers[INPUT_KEY][0], layout, model.channels, f"{where}: entry {INPUT_KEY!r}")
        if geometry is None:
            c = model.channels
            raise ValueError(f"{where}: entry {INPUT_KEY!r} has shape {headers[INPUT_KEY][0]}; expected the "
                             f"input batch, (N, H, W, {c}) or (N, {c}, H, W)")
        batch, hw = geometry
    elif model.source_input_shape[0] is not None:
        hw = tuple(model.source_input_shape[:2])
    ours = _per_image(model, hw)
    largest = {}  # {Keras auto-name prefix: our largest layer of that kind}, what such a key may be
    for layer in model.layers:
        prefix = AUTO_NAMES.get(layer.kind)
        if prefix and ours.get(layer.name, 0) > ours.get(largest.get(prefix), -1):
            largest[prefix] = layer.name
    names = set(model.layer_names)
    total, largest_entry, unread = 0, None, []
    for key, (shape, dtype) in headers.items():
        nbytes = math.prod(shape) * dtype.itemsize  # Python ints: np.prod wraps (2**32, 2**32) to 0
        target = mapping.get(key, key)
        auto = AUTO_NAME_PATTERN.fullmatch(target)
        name = target if target in names else largest.get(auto.group(1)) if auto else None
        per_image = math.prod(shape[1:])
        if key != INPUT_KEY and name is None:
            # a scoped key is matched only when its shape agrees with its layer's: a larger one never is
            scoped = _scoped_layer(target, names, largest)
            if (scoped is None or not shape
                    or (scoped in ours and per_image > SLACK_FACTOR * ours[scoped] + SLACK_VALUES)):
                unread.append(key)
                continue
        total += nbytes
        if largest_entry is None or nbytes > largest_entry[1]:
            largest_entry = (key, nbytes, shape)
        if key == INPUT_KEY or name is None:
            continue  # the input is checked by the caller; a scoped key is matched by its shape
        if not shape:
            raise ValueError(f"{where}: entry {key!r} has shape (), a single number; expected our {name}'s "
                             "activations, a batch (N, ...) of them")
        if name not in ours:
            continue  # our input size is unknown: only the file's own budget below bounds it
        if per_image > SLACK_FACTOR * ours[name] + SLACK_VALUES or (batch is not None and shape[0] != batch):
            raise ValueError(f"{where}: entry {key!r} declares shape {shape}: {shape[0]:,} images of {per_image:,} "
                             f"values; our {name} holds {ours[name]:,} per image at {hw[0]}x{hw[1]}"
                             + (f", and the dump's {INPUT_KEY} is a batch of {batch}" if batch is not None else "")
                             + ": refused before reading it")
    cap = MAX_INFLATION * size + FLOOR_BYTES
    if total > cap:
        key, nbytes, shape = largest_entry
        raise ValueError(f"{where}: its arrays declare {total:,} bytes in all (the largest, entry {key!r}, "
                         f"shape {shape}: {nbytes:,} bytes), more than a dump of {size:,} bytes may unpack to "
                         f"({cap:,}: {MAX_INFLATION}x its size + 1 MiB; a zip bomb?); refused before reading them")
    return unread


# --------------------------------------------------------------------------- ONNX graphs

# The operators an exported CNN is made of: what torch.onnx.export, tf2onnx (Keras' preprocessing layers
# included) and onnxruntime's float16 converter write for Xception, its heads and its preprocessing. The
# rest is refused by node: control flow (a Loop's trip count of 10^15 ran for ever), random and sequence
# operators, and the ones that allocate by value (ConstantOfShape, Expand, Tile, Range).
ONNX_OPS = frozenset({
    "Conv", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "ReduceMean", "ReduceMax", "ReduceSum", "Gemm", "MatMul",
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softmax",
    "LogSoftmax", "Erf",
    "Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Neg", "Abs", "Sqrt", "Reciprocal", "Pow", "Exp", "Log",
    "Floor", "Ceil", "Round",
    "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast", "CastLike",
    "Pad", "Constant", "Shape", "Gather", "Concat", "Slice", "Split", "Resize",
})
MAX_ONNX_NODES = 10_000  # tf2onnx's Xception has ~250, a torch export ~300
# A torch export's scoped name, "/block1/rep/rep.0/pointwise/Conv_output_0": its module path, split into every
# enclosing path (onnx_side.torch_module_paths), costs depth x length. Real ones are 5-6 scopes deep and under
# 100 characters (timm's /blocks/blocks.0/stack/stack.conv1/conv_dw/Conv_output_0); these caps keep the
# splitting of 10,000 nodes' names under ~100 MB, where a 160 KB name 40,000 scopes deep took 3.3 GB.
MAX_SCOPE_DEPTH = 32
MAX_SCOPED_NAME = 512  # characters
# torch's dynamo exporter leaves a node's module paths as metadata instead: a Python list's repr
NAME_SCOPES = "pkg.torch.onnx.name_scopes"
_MAX_SCOPES_TEXT = (MAX_SCOPE_DEPTH + 2) * (MAX_SCOPED_NAME + 4)


# Every tensor and node name, whoever exported it, before any is split: compare splits names into scopes
# (onnx_side.keras_scopes), TFLite's ';'-joined ones into segments (onnx_side.fused_segments), module paths into
# their modules (also at '.': onnx_side.strip_root), each part a Python object of ~50 bytes; one name of 40 M
# ';' took 1 GB (review 18). What valid Xception exports carry: tf2onnx from Keras, scoped TF names
# ("StatefulPartitionedCall/model/block2_pool/MaxPool:0", under 100 characters, 3-4 scopes); ``tf2onnx
# --tflite`` of a TFLite model converted from Keras, a fused op's name joined from every op fused into it
# (conv + BN + ReLU: 4 segments, ~130 characters in tests/onnx_port.py's tflite_named, each 3 scopes deep);
# torch.onnx (timm's, tests/onnx_port.py) under 100 characters, 6 scopes. Fresh exports of a fine-tuned
# Xception (tf2onnx from tf_keras, nested or not, its SavedModel and TFLite, Keras 3's exports) measure at most
# 115 characters, 3 segments, 5 separators deep, 46 K characters in all (docs/security.md, the names of real
# exports). The caps are 7 (depth) to 90 times those, and bound the splitting of all names (MAX_NAMES_TEXT: at
# worst a part per 2 characters, ~30 bytes a character) to ~150 MB.
MAX_NAME = 4096  # characters
MAX_NAME_SEGMENTS = 64  # ';'-joined segments
MAX_NAMES_TEXT = 4 << 20  # characters, all nodes' names, inputs and outputs together
# A node's outputs: an Xception export's nodes have 1 (BatchNormalization in training mode, Dropout with its
# mask, Split: a few); each output's name is split as above.
MAX_NODE_OUTPUTS = 64
# Counts the protobuf parser turns into objects whatever their size in the file: an empty name is 2 bytes in the
# file and a string object in every reader after ours (onnx's shape inference, onnxruntime), so each list is
# capped by count, before its items are read (review 23: a Sum of 20 M empty inputs, 123 MB, took 1.74 GB and
# 28.5 s; 2 M scalar initializers 2.2 GB and 99 s; one attribute of 50 M ints 1.9 GB). What an Xception export
# holds: tf2onnx's 165 nodes take at most 5 inputs (Slice: data, starts, ends, axes, steps; Resize 4) and carry
# at most 5 attributes (Conv: dilations, group, kernel_shape, pads, strides) of at most 4 values (pads of a 2-D
# window); 219 initializers (236 weight arrays in Keras' model, fewer once BN is folded, a torch export ~280).
MAX_NODE_INPUTS = 64  # a port's Concat or Sum joins a few branches
MAX_NODE_ATTRIBUTES = 64
MAX_ATTRIBUTE_VALUES = 4096  # an attribute's ints, floats, strings or tensors: a Constant's shape vector at most
MAX_ONNX_TENSORS = MAX_ONNX_NODES  # initializers, and each of the graph's inputs, outputs and value_info lists
# Every repeated item of the model together (nodes, their inputs, outputs and attributes, attribute values,
# tensors' dims, opset imports, functions, training info...), tensors' stored values apart (they are weights,
# charged by the file's size), every field counted: tf2onnx's Xception has 4,294; this bounds any list the caps
# above do not name.
MAX_ONNX_ITEMS = 1 << 20
# doc_string and metadata_props (key and value) anywhere in the model: tf2onnx writes none, torch's dynamo
# exporter a stack trace and module paths per node (a few kB each, under 1 MB for an Xception). A 300 MB
# metadata_props was copied by every reader after ours (2.3 GB).
MAX_METADATA_TEXT = 16 << 20  # characters
# a tensor's stored values (its dims are charged as items)
_TENSOR_VALUES = frozenset({"float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"})


def _check_name(name: str, node, i: int, where: str) -> None:
    """Refuse a tensor or node name longer, more segmented or deeper than any export's (the caps above),
    looking at its length first, then its ';'-segments, then each segment's scopes and modules."""
    if len(name) > MAX_NAME or name.count(";") >= MAX_NAME_SEGMENTS:
        raise ValueError(f"{where}: node {node_label(node, i)} names {short_repr(name)}, {len(name):,} characters "
                         f"in {name.count(';') + 1:,} ';'-joined segments; an export's names are at most "
                         f"{MAX_NAME:,} characters in {MAX_NAME_SEGMENTS} segments (TFLite's fused ops', the longest, "
                         "a few hundred in ~10): refused before reading its scopes")
    for segment in name.split(";") if ";" in name else (name,):
        # scopes (tf2onnx's "/" and ":"), and the modules of a torch path ("/" and "."): counted together
        depth = segment.count("/") + segment.count(":") + segment.count(".")
        scoped = segment.startswith("/") and len(segment) > MAX_SCOPED_NAME
        if depth > MAX_SCOPE_DEPTH + 2 or scoped:
            raise ValueError(f"{where}: node {node_label(node, i)} names {short_repr(segment)}, a scope path "
                             f"{len(segment):,} characters long of {depth + 1:,} scopes and modules ('/', ':' and "
                             f"'.'-separated); an export's are at most {MAX_SCOPE_DEPTH} deep and a torch module "
                             f"path at most {MAX_SCOPED_NAME} characters long (an Xception's, 6 and under 100): "
                             "refused before reading its scopes")


def name_scopes(value: str) -> list[str]:
    """The quoted strings of a ``name_scopes`` entry, never evaluated: the root "", the module paths
    outermost first, then the node's own name."""
    return re.findall(r"'([^']*)'", value)
ONNX_MARGIN_BYTES = 64 * 1024**2  # the graph's own protobuf beside its weights


def load_onnx(path):
    """The ONNX model at ``path`` (an ``onnx.ModelProto``), checked before onnxruntime sees it.

    Refused, naming the file and the node or tensor: a file larger than the largest valid model's weights
    (``weights.weight_budget``) plus :data:`ONNX_MARGIN_BYTES`, lists longer than any export's, counted in the
    protobuf before it is parsed (:func:`_check_counts`: nodes, their inputs, outputs and attributes,
    initializers, attribute values, all items together, doc and metadata text), a node
    whose operator is not in :data:`ONNX_OPS` (or is in another domain, a local function's included; an
    int8-quantized or onnxruntime-optimized graph is named as such, with what to compare instead),
    a tensor stored outside the file (external data: it would be read from any path it names), a sparse
    tensor, and an initializer that holds fewer values than its shape declares. The work the graph asks for
    an input is bounded when that input is known (:mod:`npxception.compare.onnx_work`).
    """
    import onnx  # optional extra ('bench'), imported by the caller first with its install hint
    from onnx.external_data_helper import uses_external_data  # optional extra, as onnx above

    where = str(path)
    cap = weight_budget() + ONNX_MARGIN_BYTES
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size  # read(cap + 1) would allocate the cap up front
        if size > cap:
            raise ValueError(f"{where}: {size:,} bytes, more than the {cap:,} any Xception's weights in float64 "
                             "and its graph take; refused before parsing")
        data = f.read(size)
    _check_counts(data, where)
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own types
        raise ValueError(f"{where}: not a readable ONNX model ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    del data
    graph = proto.graph
    seen = set()
    for t in graph.initializer:  # invalid ONNX: onnxruntime uses the first, a reader by name the last
        if t.name in seen:
            raise ValueError(f"{where}: initializer {short_repr(t.name)} appears twice; an ONNX graph names each "
                             "tensor once (which one is the weight?)")
        seen.add(t.name)
    if not graph.output:  # compare reads the final output from the first
        raise ValueError(f"{where}: its graph declares no output; an exported model declares its predictions "
                         "(graph.output) at least")
    family = _foreign_family(graph)
    if family:
        raise ValueError(f"{where}: {family}")
    names_left = MAX_NAMES_TEXT
    for i, node in enumerate(graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type not in ONNX_OPS:
            op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            raise ValueError(f"{where}: node {node_label(node, i)} is a {op} operator, which no Xception "
                             f"export holds{' (control flow: it could run for ever)' if op in _CONTROL_FLOW else ''};"
                             f" compare runs graphs of {', '.join(sorted(ONNX_OPS))}")
        for name in (*node.input, *node.output, node.name):
            names_left -= len(name)
            if names_left < 0:
                raise ValueError(f"{where}: its nodes' names total more than {MAX_NAMES_TEXT:,} characters (at node "
                                 f"{node_label(node, i)}); an Xception export's total well under 1 MB: refused "
                                 "before reading their scopes")
            _check_name(name, node, i, where)
        for prop in node.metadata_props:
            if prop.key != NAME_SCOPES:
                continue
            # parsed only when no longer than the caps allow (", 'NAME'" per scope)
            if (len(prop.value) > _MAX_SCOPES_TEXT or len(scopes := name_scopes(prop.value)) > MAX_SCOPE_DEPTH + 2
                    or any(len(s) > MAX_SCOPED_NAME or s.count(".") > MAX_SCOPE_DEPTH for s in scopes)):
                raise ValueError(f"{where}: node {node_label(node, i)}'s {NAME_SCOPES} is {len(prop.value):,} "
                                 f"characters long; a torch export's lists at most {MAX_SCOPE_DEPTH} module "
                                 f"paths of at most {MAX_SCOPED_NAME} characters and {MAX_SCOPE_DEPTH} modules: refused before "
                                 "reading it")
    for i, node in enumerate(graph.node):  # a subgraph holds tensors and nodes of its own, none checked here
        for a in node.attribute:
            if a.HasField("g") or len(a.graphs):
                raise ValueError(f"{where}: node {node_label(node, i)}'s attribute {short_repr(a.name)} holds a "
                                 "subgraph, which no Xception export's does: refused before loading")
    sparse = [t.values.name or "(unnamed)" for t in graph.sparse_initializer]
    sparse += [node.name or node.output[0] for node in graph.node
               for a in node.attribute if a.HasField("sparse_tensor") or len(a.sparse_tensors)]
    if sparse:  # a 196-byte file declaring 5e8 values made onnxruntime allocate 4 GB densifying it
        raise ValueError(f"{where}: tensor {sparse[0]!r} is sparse; no CNN export writes sparse tensors, and "
                         "onnxruntime makes them dense whatever size they declare: refused before loading")
    tensors = list(graph.initializer) + [a.t for node in graph.node for a in node.attribute if a.HasField("t")]
    tensors += [t for node in graph.node for a in node.attribute for t in a.tensors]  # every tensor-bearing field
    for t in tensors:
        if uses_external_data(t):
            raise ValueError(f"{where}: tensor {t.name!r} is stored outside the file (external data); compare reads "
                             "self-contained ONNX files only: save it with onnx.save(model, path, "
                             "save_as_external_data=False)")
        declared = math.prod(t.dims)
        stored = _stored_values(t)
        if stored is not None and stored != declared:
            raise ValueError(f"{where}: tensor {t.name!r} declares shape {tuple(t.dims)} ({declared:,} values) and "
                             f"stores {stored:,}")
    return proto


# The lists capped one by one, by (message, field): their refusals say which list of which node.
_LIST_CAPS = {
    ("GraphProto", "node"): MAX_ONNX_NODES,
    ("GraphProto", "initializer"): MAX_ONNX_TENSORS, ("GraphProto", "input"): MAX_ONNX_TENSORS,
    ("GraphProto", "output"): MAX_ONNX_TENSORS, ("GraphProto", "value_info"): MAX_ONNX_TENSORS,
    ("NodeProto", "input"): MAX_NODE_INPUTS, ("NodeProto", "output"): MAX_NODE_OUTPUTS,
    ("NodeProto", "attribute"): MAX_NODE_ATTRIBUTES,
    **{("AttributeProto", f): MAX_ATTRIBUTE_VALUES
       for f in ("floats", "ints", "strings", "tensors", "graphs", "sparse_tensors", "type_protos")},
}
# What a valid export's lists hold, for the refusals (tf2onnx's Xception).
_LIST_NORMS = {("NodeProto", "input"): "take at most 5", ("NodeProto", "output"): "have 1 (a few for Split)",
               ("NodeProto", "attribute"): "carry at most 5", ("AttributeProto", None): "hold at most 4 (a window's pads)"}
_FIELDS: dict = {}  # message full name -> {field number: _Field}


class _Field(NamedTuple):
    name: str | None
    sub: object  # the submessage's descriptor, or None
    charged: bool  # counted as an item (a tensor's stored values are not: weights, charged by the file's size)
    packed_items: bool  # a length-delimited scalar list: at most a value per byte
    cap: int | None  # _LIST_CAPS' cap on this list
    is_node: bool  # GraphProto.node: its items are numbered for the refusals


_UNKNOWN = _Field(None, None, True, False, None, False)


def _fields(desc) -> dict:
    """Everything the scan asks of a message's field, worked out once per message type (the scan meets each
    field up to ~10^6 times)."""
    if desc.full_name not in _FIELDS:
        _FIELDS[desc.full_name] = {
            f.number: _Field(f.name, f.message_type,
                             not (desc.name == "TensorProto" and f.name in _TENSOR_VALUES),
                             f.message_type is None and f.type not in (9, 12),  # 9, 12: string, bytes
                             _LIST_CAPS.get((desc.name, f.name)), (desc.name, f.name) == ("GraphProto", "node"))
            for f in desc.fields}
    return _FIELDS[desc.full_name]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _check_counts(data: bytes, where: str) -> None:
    """Refuse, from the protobuf's wire format and before it is parsed, a model whose lists hold more items
    than any Xception export's (the caps above): every field of every message is stepped over once, each
    submessage's bytes entered but never copied, a list counted as its items are met, so the scan stops at
    a cap after ~as many steps as the cap (1 s for 10^6). The parser would make an object of each (an empty
    input name is 2 bytes in the file: 20 M took 1.34 GB parsed). A packed list counts one item per byte
    (a varint's at most), tensors' stored values apart (weights: charged by the file's size)."""
    import onnx  # see load_onnx

    items, text = 0, 0
    # (start, end, message descriptor, its node number in its graph or None)
    stack = [(0, len(data), onnx.ModelProto.DESCRIPTOR, None)]
    try:
        while stack:
            pos, end, desc, node = stack.pop()
            fields, counts, nodes = _fields(desc), {}, 0
            while pos < end:
                tag = data[pos]  # a one-byte varint for every field number ONNX uses below 16
                pos += 1
                if tag >= 0x80:
                    tag, pos = _varint(data, pos - 1)
                number, wire = tag >> 3, tag & 7
                field = fields.get(number, _UNKNOWN)
                if wire == 2:
                    length = data[pos]
                    pos += 1
                    if length >= 0x80:
                        length, pos = _varint(data, pos - 1)
                    if field.sub is not None:
                        if length:  # an empty message holds nothing to scan (it is still an item, below)
                            stack.append((pos, pos + length, field.sub, nodes if field.is_node else node))
                        nodes += field.is_node
                    elif field.name == "doc_string" or desc.name == "StringStringEntryProto":
                        text += length
                    elif field.charged and field.packed_items:
                        items += length - 1  # a packed list: at most a value per byte (strings, bytes: one)
                    pos += length
                elif wire == 0:
                    _, pos = _varint(data, pos)
                elif wire == 1:
                    pos += 8
                elif wire == 5:
                    pos += 4
                else:
                    raise ValueError(f"wire type {wire}, which ONNX's messages do not use")
                if pos > end:
                    raise ValueError("a field runs past its message")
                items += field.charged
                if field.cap is not None:
                    n = counts[number] = counts.get(number, 0) + 1
                    if n > field.cap:
                        _refuse_count(where, desc.name, field.name, field.cap, node)
                if items > MAX_ONNX_ITEMS:
                    raise ValueError(f"{where}: its protobuf holds more than {MAX_ONNX_ITEMS:,} items in all "
                                     f"(nodes, their inputs, outputs and attributes, tensors' dims...; at a "
                                     f"{desc.name}'s {field.name or number!r} field); an Xception export's hold a "
                                     "few thousand: refused before parsing it")
                if text > MAX_METADATA_TEXT:
                    raise ValueError(f"{where}: its doc_string and metadata_props text totals more than "
                                     f"{MAX_METADATA_TEXT:,} characters; an Xception export's is under 1 MB (none "
                                     "from tf2onnx): refused before parsing it")
    except IndexError:
        raise ValueError(f"{where}: not a readable ONNX model (its protobuf ends inside a field)") from None
    except ValueError as exc:
        if str(exc).startswith(where):
            raise
        raise ValueError(f"{where}: not a readable ONNX model ({exc})") from None


def _refuse_count(where, message, field, cap, node):
    owner = {"GraphProto": "its graph", "NodeProto": f"node #{node}",
             "AttributeProto": f"an attribute of node #{node}"}[message]
    if message == "NodeProto" and node is None:  # a node of a function or a subgraph
        owner = "a node"
    norm = _LIST_NORMS.get((message, field)) or _LIST_NORMS.get((message, None))
    norm = f"an Xception export's {'nodes' if message == 'NodeProto' else 'attributes'} {norm}, and " if norm else ""
    raise ValueError(f"{where}: {owner} has more than {cap:,} {field} entries; {norm}this reader takes at most "
                     f"{cap:,} (an Xception export has a few hundred tensors and nodes): refused before parsing it")


_CONTROL_FLOW = {"Loop", "Scan", "If", "SequenceMap"}

# Graphs onnxruntime writes from an exported one, which compare does not run (their operators are not an
# export's, and their values differ from the float graph's by design): named, with what to compare instead.
_QUANTIZED = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
              "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm", "QLinearMul"}


def _foreign_family(graph) -> str:
    """What an int8-quantized or onnxruntime-optimized graph is and what to do, or "" for any other."""
    ops = [(n.domain, n.op_type) for n in graph.node]
    quant = sorted({op for _, op in ops if op in _QUANTIZED})
    if quant:
        return (f"an int8-quantized graph ({', '.join(quant[:3])} nodes: onnxruntime.quantization's quantize_dynamic "
                "or quantize_static): its weights and activations are rounded to 8 bits, so every layer differs from "
                "ours by more than any float tolerance; compare the float model it was quantized from")
    ort = sorted({f"{d}.{op}" for d, op in ops if d.startswith("com.microsoft")})
    if ort:
        return (f"an onnxruntime-optimized graph ({', '.join(ort[:3])} nodes: saved by a session with "
                "ORT_ENABLE_EXTENDED or ORT_ENABLE_ALL, fusions only onnxruntime runs); compare the graph you "
                "exported, or save the optimized one with GraphOptimizationLevel.ORT_ENABLE_BASIC")
    return ""


def node_label(node, i: int) -> str:
    """How a refusal names the ``i``-th node of a graph: its name, else its number and first output."""
    return short_repr(node.name) if node.name else f"#{i} (unnamed, output {short_repr(list(node.output)[:1])})"


def _stored_values(t) -> int | None:
    """How many values an ONNX tensor stores, or None when its type is not one we count."""
    import onnx  # see load_onnx

    if t.HasField("raw_data"):
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, TypeError, ValueError):
            return None
        return len(t.raw_data) // itemsize
    for field in ("float_data", "double_data", "int32_data", "int64_data", "uint64_data"):
        if getattr(t, field):
            return len(getattr(t, field))
    return 0 if not t.string_data else None
