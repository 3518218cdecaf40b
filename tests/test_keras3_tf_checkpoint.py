"""A Keras 3 model's tf.train.Checkpoint converts as the model that wrote it predicts (issue 27).

Keras 3 on the TensorFlow backend saves training state with ``tf.train.Checkpoint(model=model)`` and its
``CheckpointManager``: layers under ``model/_operations/i``, not tf_keras' ``layer_with_weights-N``
(review 26, F1, once refused by name). Built once for the module: ``applications.Xception`` at 71x71 with
random weights and BatchNorm statistics, a global pooling and a linear 3-unit Dense, one ``fit()`` step
with Adam (its slots and iterations in the checkpoints), saved as users save it: a ``CheckpointManager``
with the optimizer and a step counter, ``write()`` with the model under another name (``net=``) and its
optimizer as ``opt=``, ``write()`` with a step but no ``save_counter``. Then the keras.io fine-tuning
shape on the same (frozen) backbone: augmentation, Rescaling, the nested Xception, pooling, Dropout,
Dense(1), fit once. Each is converted and compared with ``model.predict`` of the model that wrote it.

Tolerance: 1e-5 of the size of the terms the logits sum (``max_k sum_j |f_j W_jk| + |b_k|``, from Keras'
own pooled features, as tests/keras_corpus.py): float32 sums accumulated in another order leave ~2e-6 of
them (tests/test_training_checkpoints.py measured 8e-7..1.6e-6 on the pooled features), and a fit() step
can make logits cancel far below their terms; a weight of the wrong layer or a skipped BatchNorm moves
them by orders of magnitude more. Structure the file alone cannot give (what a weightless layer is) is
tested by editing the object graph of a real checkpoint (TensorFlow's own protos, rewritten with SaveV2);
hostile object graphs are forged small and read in subprocesses under RLIMIT_AS (tests/test_hostile.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from npxception import weights_tools as wt
from keras_helpers import keras_predict, randomize
from test_hostile_tf import f_bytes, ref, write_bundle
from weight_files import conversion_refused as _refused

RTOL = 1e-5  # of the logits' terms: see the module docstring
SIZE = 71
FLAGS = dict(pooling="avg", input_shape=(SIZE, SIZE), classifier_activation="linear")


def _fit_once(model, x, y, loss="mse"):
    # run_eagerly: tracing Xception's training graph costs more CPU than one eager step at 71x71
    model.compile(optimizer="adam", loss=loss, run_eagerly=True)
    model.fit(x, y, epochs=1, batch_size=len(x), verbose=0)


def _predict_with_terms(keras, model, pool, dense, x):
    """``(model.predict(x), terms)``: the writing model's answer, and the size of the terms its logits sum."""
    features = keras_predict(keras.Model(model.inputs, pool.output), x)
    kernel, bias = dense.get_weights()
    return keras_predict(model, x), float((np.abs(features) @ np.abs(kernel) + np.abs(bias)).max())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import keras
    import tensorflow as tf

    assert keras.backend.backend() == "tensorflow", "a tf.train.Checkpoint of a Keras 3 model needs TensorFlow"
    root = tmp_path_factory.mktemp("k3ckpt")
    rng = np.random.default_rng(27)
    x = rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    pixels = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    out = {"root": root, "x": x, "pixels": pixels}

    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    pool = keras.layers.GlobalAveragePooling2D(name="avg_pool")
    dense = keras.layers.Dense(3, name="predictions")
    flat = randomize(keras.Model(base.input, dense(pool(base.output))), seed=27)
    _fit_once(flat, x, np.zeros((2, 3), np.float32))
    step = tf.Variable(1, dtype=tf.int64)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=flat, optimizer=flat.optimizer, step=step),
                               str(root / "manager"), max_to_keep=2).save()
    tf.train.Checkpoint(net=flat, opt=flat.optimizer).write(str(root / "net" / "ckpt"))
    tf.train.Checkpoint(model=flat, step=step).write(str(root / "written" / "ckpt"))
    (root / "flat.json").write_text(flat.to_json())
    out["flat"] = _predict_with_terms(keras, flat, pool, dense, x)

    # keras.io "Transfer learning & fine-tuning": the base frozen, run in inference mode, behind augmentation
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal", name="random_flip"),
                                keras.layers.RandomRotation(0.1)], name="data_augmentation")
    h = keras.layers.Rescaling(1 / 127.5, offset=-1)(augment(inputs))
    tuned_pool, tuned_dense = keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, name="dense")
    # named: an unnamed layer takes the next free auto-name in its worker (dense_8 after other modules)
    tuned = keras.Model(inputs, tuned_dense(keras.layers.Dropout(0.2)(tuned_pool(base(h, training=False)))))
    _fit_once(tuned, pixels, np.ones((2, 1), np.float32), keras.losses.BinaryCrossentropy(from_logits=True))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=tuned, optimizer=tuned.optimizer),
                               str(root / "tuned"), max_to_keep=1).save()
    tuned.save(str(root / "tuned.keras"))
    out["tuned"] = _predict_with_terms(keras, tuned, tuned_pool, tuned_dense, pixels)
    return out


def _close(ours, expected, what=""):
    theirs, terms = expected
    err = float(np.abs(np.asarray(ours, np.float64) - theirs).max())
    assert ours.shape == theirs.shape and err <= RTOL * terms, \
        f"{what}: max |ours - keras| {err:.3g} > {RTOL} * {terms:.3g}; ours {ours.ravel()[:3]} vs {theirs.ravel()[:3]}"


# --------------------------------------------------------------------------- what users save

def test_checkpoint_manager_save_converts_as_the_model_predicts(saved):
    """The CheckpointManager's directory (its ``checkpoint`` file names ckpt-1), the numbered prefix and its
    .index: what model.predict gives (``npxception convert`` of the directory: the check-with-keras test
    below); the optimizer's Adam slots, the save counter and the step counter are counted as training state."""
    root = saved["root"]
    for src in (root / "manager", root / "manager" / "ckpt-1", root / "manager" / "ckpt-1.index"):
        _close(wt.read(src, config=root / "flat.json")(saved["x"]), saved["flat"], str(src))
    report = wt.inspect(root / "manager", config=root / "flat.json")
    assert "TensorFlow checkpoint of a Keras 3 model (tf.train.Checkpoint(model=model), with a given config)" \
        in report, report[:300]
    for ignored in ("optimizer state: ", "checkpoint save counter: 1 arrays",
                    "checkpoint state beside the model (step): 1 arrays"):
        assert ignored in report, report


def test_written_prefix_with_the_model_under_another_name(saved):
    """``tf.train.Checkpoint(net=model, opt=model.optimizer).write()``: the one Keras 3 model among the
    root's children, whatever its name, its optimizer's state recognised as the model's own optimizer;
    ``write()`` with a step and no save_counter: the root is a tf.train.Checkpoint all the same."""
    root = saved["root"]
    _close(wt.read(root / "net" / "ckpt", config=root / "flat.json")(saved["x"]), saved["flat"], "net=")
    report = wt.inspect(root / "net" / "ckpt", config=root / "flat.json")
    assert "(tf.train.Checkpoint(net=model), with a given config)" in report and "optimizer state: " in report, report
    _close(wt.read(root / "written" / "ckpt", config=root / "flat.json")(saved["x"]), saved["flat"], "write()")
    assert "checkpoint state beside the model (step): 1 arrays" in wt.inspect(root / "written" / "ckpt", **FLAGS)


def test_without_config_the_layers_are_read_in_their_recorded_order(saved):
    """No config: Keras' by-order rule over ``_operations`` in index order, the head from the flags, as for
    a weights-only .weights.h5; without them, refused naming each missing flag."""
    root = saved["root"]
    for src in (root / "manager", root / "net" / "ckpt"):
        _close(wt.read(src, **FLAGS)(saved["x"]), saved["flat"], f"{src} without config")
    _refused(root / "net" / "ckpt", "a weights-only file does not determine the model", "--pooling avg|max",
             "--input-shape H,W", "--classifier-activation")
    _refused(root / "net" / "ckpt", "--input-shape H,W", pooling="avg", classifier_activation="linear")


def test_the_keras_io_fine_tuning_shape_converts_with_its_config(saved):
    """Augmentation (an identity at inference), Rescaling (the input stage: raw pixels in), the nested
    Xception, pooling, Dropout, Dense(1): what model.predict gives on pixels. Without the config the
    checkpoint does not say how the nested model is wired: refused, naming it and --config."""
    root = saved["root"]
    model = wt.read(root / "tuned", config=root / "tuned.keras")
    assert model.takes_pixels, model.input_stage
    _close(model(saved["pixels"]), saved["tuned"], "fine-tuned")
    _refused(root / "tuned", "model/_operations/1 is a nested model", "--config", **FLAGS)  # the augmentation


def test_a_config_of_another_model_is_refused(saved):
    root = saved["root"]
    _refused(root / "tuned", "(layer block1_conv2_act, Activation) holds variable 'dense/kernel'",
             "the config does not describe the model that wrote this checkpoint", config=root / "flat.json")
    _refused(root / "manager", "no object model/_operations/1/_functional/_operations/1 for layer random_flip",
             "the config does not describe the model that wrote this checkpoint", config=root / "tuned.keras")


@pytest.mark.parametrize("src, options", [
    ("manager", ["--config", "flat.json"]),  # Keras 3 builds it from the config, restores under "model"
    ("net/ckpt", ["--pooling", "avg", "--input-shape", "71,71", "--classifier-activation", "linear"]),
], ids=["manager_with_config", "written_net_without_config"])
def test_check_with_keras_opens_it_in_keras_3(saved, tmp_path, src, options):
    """``convert --check-with-keras``: Keras 3 (not tf_keras) builds the model (from the config, or as
    applications.Xception with the converted head) and restores the checkpoint under the name its root gives
    the model (``read()``: a ``write()`` holds no save_counter); its output is the golden, and ours is
    model.predict's."""
    import npxception
    from npxception.weights_tools.cli import main

    root = saved["root"]
    out = tmp_path / "m.npz"
    argv = ["convert", str(root / src), "-o", str(out), "--check-with-keras"]
    assert main(argv + [str(root / o) if o.endswith(".json") else o for o in options]) == 0
    model = npxception.load(out)  # the load-time check against Keras' digests passes
    assert model.golden.source.startswith("keras "), model.golden.source
    _close(model(saved["x"]), saved["flat"], src)


# --------------------------------------------------------------------------- what the file does not say

def _edited(saved, tmp_path, edit, drop=()):
    """The ``net=`` checkpoint rewritten with its object graph edited: ``edit(graph, operations)`` changes
    TensorFlow's TrackableObjectGraph (``operations``: the model's _operations node); ``drop``: keys left out."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(str(saved["root"] / "net" / "ckpt"))
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    model = next(c.node_id for c in graph.nodes[0].children if c.local_name == "net")
    operations = next(c.node_id for c in graph.nodes[model].children if c.local_name == "_operations")
    edit(graph, graph.nodes[operations])
    # Adam's moments (opt/_variables/<k>) left out: a third of the bytes to rewrite, and training state that
    # is no entry of the bundle is no entry to ignore (the weights are opt/_trainable_variables/<j>)
    keys = [k for k in reader.get_variable_to_shape_map() if k != "_CHECKPOINTABLE_OBJECT_GRAPH" and k not in drop
            and not k.startswith("opt/_variables/")]
    prefix = tmp_path / "edited" / "ckpt"
    prefix.parent.mkdir(parents=True)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=keys + ["_CHECKPOINTABLE_OBJECT_GRAPH"],
                      shape_and_slices=[""] * (len(keys) + 1),
                      tensors=[reader.get_tensor(k) for k in keys] + [tf.constant(graph.SerializeToString())])
    return prefix


def _shift(start, by=1, empty=0):
    """Move ``_operations`` entries from index ``start`` on ``by`` places later, and list ``empty`` new
    weightless layers at the places freed (the rest of them stay free: operations, untracked)."""
    def edit(graph, operations):
        for child in operations.children:
            if int(child.local_name) >= start:
                child.local_name = str(int(child.local_name) + by)
        for i in range(empty):
            graph.nodes.add()
            operations.children.add(node_id=len(graph.nodes) - 1, local_name=str(start + i))
    return edit


@pytest.mark.parametrize("case, fragments", [
    # an x / 127.5 in front (an operation: its index missing), a Rescaling (a weightless layer)
    ("operation_in_front", ["2 layers or operations before block1_conv1", "_operations/1 (an operation)",
                            "a Rescaling", "--config"]),
    ("layer_in_front", ["2 layers or operations before block1_conv1", "net/_operations/1", "--config"]),
    ("layer_inside", ["layers without weights between block1_conv1 and block14_sepconv2_bn, where keras "
                      "Xception has", "--config"]),
    ("dropout_before_dense", ["3 layers without weights between block14_sepconv2_bn and the Dense predictions",
                              "head has 2 (block14_sepconv2_act, its global pooling)", "--config"]),
    ("activation_after_dense", ["1 layer(s) after the classifier predictions", "--config"]),
])
def test_weightless_layers_the_checkpoint_does_not_describe_are_refused(saved, tmp_path, case, fragments):
    """The checkpoint lists a weightless layer (or an operation's index) without its class: counted
    against the table, one more than Xception has anywhere is refused naming where and the remedy."""
    n = 134  # applications.Xception(include_top=False): 132 layers, + pooling + Dense (asserted below)
    edit = {"operation_in_front": _shift(1), "layer_in_front": _shift(1, empty=1),
            "layer_inside": _shift(60, empty=1), "dropout_before_dense": _shift(n - 1, empty=1),
            "activation_after_dense": _shift(n, empty=1)}[case]
    _refused(_edited(saved, tmp_path, edit), fragments[0], *fragments[1:], **FLAGS)


def test_the_number_of_layers_edited_above_is_the_models(saved):
    assert len(json.loads((saved["root"] / "flat.json").read_text())["config"]["layers"]) == 134


def test_a_bare_backbone_needs_its_pooling_named_and_is_read_unpooled_when_none_follows(saved, tmp_path):
    """Without its Dense (dropped from the graph and the bundle), the pooled backbone's checkpoint records a
    layer after block14_sepconv2_act but not which pooling: --pooling is asked for, then read; without
    that layer too, it records no pooling, and --pooling is refused as a contradiction."""
    def without(*indices):
        def edit(graph, operations):
            kept = [c for c in operations.children if int(c.local_name) not in indices]
            del operations.children[:]
            operations.children.extend(kept)
        return edit

    # the Dense's variables are keyed by the first path to them (here under opt/_trainable_variables):
    # dropped by their names in the graph, whatever the key
    pooled = _edited(saved, tmp_path / "pooled", without(133), drop=_dense_keys(saved))
    _refused(pooled, "records one layer after block14_sepconv2_act (net/_operations/132) but not its class",
             "--pooling avg|max")
    model = wt.read(pooled, pooling="avg")
    assert [h["kind"] for h in model.head] == ["global_avg_pool"]
    bare = _edited(saved, tmp_path / "bare", without(132, 133), drop=_dense_keys(saved))
    _refused(bare, "--pooling avg contradicts the file: it records no layer after block14_sepconv2_act",
             pooling="avg")
    assert wt.read(bare).head == []


def _dense_keys(saved):
    """The bundle keys of the Dense's kernel and bias, found through the object graph."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    reader = tf.train.load_checkpoint(str(saved["root"] / "net" / "ckpt"))
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    return [a.checkpoint_key for node in graph.nodes for a in node.attributes
            if a.full_name in ("predictions/kernel", "predictions/bias")]


# --------------------------------------------------------------------------- hostile object graphs

VALUE = "model/_operations/1/depthwise_kernel/.ATTRIBUTES/VARIABLE_VALUE"


def _node(*children, value=None) -> bytes:
    """A TrackableObjectGraph node (a ``nodes`` field): ``children`` as (node id, name); ``value`` as
    (full_name, checkpoint_key) of a VARIABLE_VALUE attribute."""
    body = b"".join(ref(n, name) for n, name in children)
    if value is not None:
        body += f_bytes(2, f_bytes(1, b"VARIABLE_VALUE") + f_bytes(2, value[0].encode()) + f_bytes(3, value[1].encode()))
    return f_bytes(1, body)


def _keras3_graph(operations, extra=()) -> bytes:
    """root -> model -> _operations (node 2) with ``operations`` [(node, index name)]; node 3 the input,
    node 4 a layer holding node 5, a variable block1_conv1/depthwise_kernel; ``extra`` nodes from 6 on."""
    return (_node((1, "model")) + _node((2, "_operations")) + _node(*operations) + _node()
            + _node((5, "depthwise_kernel")) + _node(value=("block1_conv1/depthwise_kernel", VALUE))
            + b"".join(extra))


KERNEL = {VALUE: np.ones((3, 3, 3, 1), np.float32)}
FAN = 100_000


HOSTILE = {
    # a layer list that holds the model itself: a cycle, refused at the first look (a nested model)
    "cycle": (_keras3_graph([(3, "0"), (1, "1")]), KERNEL, "model/_operations/1 is a nested model"),
    # a child beyond the graph's nodes
    "child_out_of_range": (_keras3_graph([(3, "0"), (99, "1")]), KERNEL,
                           "object 2's child '1' is node 99; the graph has 6 nodes"),
    # an index no Keras model reaches, and one written twice ("1" and "01"): not str(i) of a layer's index
    "huge_index": (_keras3_graph([(3, "0"), (4, "99999999")]), KERNEL,
                   "holds '99999999'; expected the indices 0, 1, ..."),
    "index_twice": (_keras3_graph([(3, "0"), (4, "1"), (4, "01")]), KERNEL, "holds '01'; expected the indices 0, 1"),
    # two places in the list for one layer object; two layers holding one variable object
    "layer_twice": (_keras3_graph([(3, "0"), (4, "1"), (4, "2")]), KERNEL,
                    "model/_operations/2 is the object model/_operations/1 is (node 4)"),
    "variable_twice": (_keras3_graph([(3, "0"), (4, "1"), (6, "2")], [_node((5, "depthwise_kernel"))]), KERNEL,
                       "holds the variable 'model/_operations/1/depthwise_kernel/.ATTRIBUTES/VARIABLE_VALUE' that "
                       "model/_operations/1 (block1_conv1) holds"),
    # a kernel held as `kernel` and as Keras 3's `_kernel` by one layer: which one it computes with?
    "kernel_aliased_twice": (_keras3_graph([(3, "0"), (4, "1")], [_node(value=("block1_conv1/depthwise_kernel",
                                                                              VALUE))])
                             .replace(_node((5, "depthwise_kernel")), _node((5, "kernel"), (6, "_kernel"))), KERNEL,
                             "holds two variables named 'kernel'"),
    # the variable declares 2^60 values: refused from the index, before anything is read
    "huge_shape": (_keras3_graph([(3, "0"), (4, "1")]), "huge", "its shape needs"),
    # one Keras 3 model under 100,000 names of the root: each looked at once, refused naming it
    "fanned_root": (_node(*((1, f"m{i}") for i in range(FAN))) + _keras3_graph([(3, "0"), (4, "1")])[
        len(_node((1, "model"))):], KERNEL, "a checkpoint holding one Keras 3 model under 100000 names (m0, m1, "
                                            "m10, m100, m1000, ...)"),
}

# One child for all the cases (an interpreter and npxception's imports cost ~2 s apiece), under the limits
# of tests/test_hostile.py's: convert's main() on each forged checkpoint, its exit code and its output.
MANY = """
import contextlib, io, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
from npxception.weights_tools.cli import main
for prefix in sys.argv[1:]:
    text = io.StringIO()
    with contextlib.redirect_stderr(text), contextlib.redirect_stdout(text):
        rc = main(["convert", prefix, "-o", prefix + ".npz", "--pooling", "avg", "--input-shape", "71,71"])
    print(repr((prefix, rc, text.getvalue())), flush=True)
"""


def test_hostile_keras3_object_graphs_are_refused_within_bounds(tmp_path):
    """Each forged checkpoint refused with exit 1 and one line naming it and what is wrong, no memory or
    recursion error, no output file, all within RLIMIT_AS 1 GiB and 30 s of CPU together."""
    import ast
    import os
    import subprocess
    import sys

    from test_hostile import BAD_SIGNS, LIMIT, REPO

    prefixes = {}
    for case, (graph, tensors, _) in HOSTILE.items():
        edit = None
        if tensors == "huge":
            tensors = KERNEL
            edit = lambda k, f: {**f, "shape": (1 << 30, 1 << 30)} if k == VALUE else f  # noqa: E731
        (tmp_path / case).mkdir()
        prefixes[str(write_bundle(tmp_path / case / "ckpt", tensors, graph=graph, edit=edit))] = case
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", MANY.format(limit=LIMIT, cpu=30), *prefixes], capture_output=True,
                         text=True, env=env, cwd=REPO)
    results = {prefixes[p]: (rc, text) for p, rc, text in map(ast.literal_eval, out.stdout.splitlines())}
    assert set(results) == set(HOSTILE), f"exit {out.returncode}, cases done {sorted(results)}\n{out.stderr[-3000:]}"
    for case, (rc, text) in results.items():
        assert rc == 1 and not any(sign in text for sign in BAD_SIGNS), f"{case}: exit {rc}\n{text[-2000:]}"
        assert f"{case}/ckpt" in text and HOSTILE[case][2] in text, f"{case}: {text}"
        assert not list((tmp_path / case).glob("*.npz*")), f"{case}: a refused conversion left a file"
