"""TensorFlow checkpoints of several data shards, written by TensorFlow 2.21, converted.

What makes TensorFlow write ``ckpt.data-00000-of-0000N`` with N > 1 (measured here):

* a sharding policy, ``tf.train.CheckpointOptions(experimental_sharding_callback=...)``,
  which tf_keras' ``save_weights(..., options=)`` and ``ModelCheckpoint(options=)`` pass on,
  as ``tf.train.Checkpoint`` and ``CheckpointManager`` do, and ``tf.saved_model.SaveOptions``
  for a SavedModel's ``variables/``: TF's ``MaxShardSizePolicy`` (which slices a variable that
  crosses a shard boundary) or a policy of the user's (a ``ShardingCallback`` subclass);
* training over several machines: the default ``ShardByTaskPolicy`` writes one shard per task.

Variables on several devices of one machine (GPU:0 and CPU:0; here, the CPU split into two
logical devices) give one shard: TF saves each variable through its task's CPU:0.

One tf_keras Xception classifier, trained one ``fit()`` step, is saved with ``save_weights``
under a policy that keeps variables whole (``WholeVariables``) and under TF's
``MaxShardSizePolicy`` (variables in slices across shards), and with ``tf.train.Checkpoint``
(the model a child of its root); each must convert to what ``model.predict`` gives. The forged hostile
shard layouts are in test_hostile_tf.py.

Tolerance: 1e-5 of max|Keras' output|, as tests/test_real_world_files.py (float32 rounding of
~36 layers of sums in another order leaves ~2e-6; a wrong weight moves it by far more).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from keras_corpus import _fit_one_step, _nested_classifier, _x
from keras_helpers import keras_predict

RTOL = 1e-5  # see the module docstring
SHARD_BYTES = 16 * 1024**2  # above Xception's largest variable (block14_sepconv2's 1536x2048 kernel, 12.6 MB)


def _whole_variables_policy(tf):
    class WholeVariables(tf.train.experimental.ShardingCallback):
        """Whole variables, packed in order into shards of at most ``SHARD_BYTES`` (a variable larger
        than that alone in one): the sharding a user writes to keep each variable in one file."""

        @property
        def description(self):
            return f"whole variables, at most {SHARD_BYTES} bytes a shard"

        def __call__(self, shardable_tensors):
            shards, size = [{}], 0
            for t in shardable_tensors:
                nbytes = t.shape.num_elements() * t.dtype.size if t.dtype != tf.string else 0
                if size and size + nbytes > SHARD_BYTES:
                    shards, size = shards + [{}], 0
                shards[-1].setdefault(t.checkpoint_key, {})[t.slice_spec] = t.tensor
                size += nbytes
            return shards
    return WholeVariables()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """``{"whole" | "sliced": checkpoint prefix}``, the config, the input and Keras' predictions."""
    import tensorflow as tf
    import tf_keras

    root = tmp_path_factory.mktemp("shards")
    model = _nested_classifier(tf_keras, 71, tf_keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling"),
                               tf_keras.layers.Dense(3, name="dense"), seed=41)
    _fit_one_step(model, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), 71, True, np.array([0, 2]))
    prefixes = {}
    sliced = tf.train.experimental.MaxShardSizePolicy(max_shard_size=SHARD_BYTES)
    for name, policy in (("whole", _whole_variables_policy(tf)), ("sliced", sliced)):
        prefixes[name] = str(root / name / "ckpt")
        model.save_weights(prefixes[name], options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    # tf.train.Checkpoint (CheckpointManager writes the same): the model is the root's child "model"
    prefixes["tf.train.Checkpoint"] = str(root / "checkpoint" / "ckpt")
    tf.train.Checkpoint(model=model).write(prefixes["tf.train.Checkpoint"],
                                           options=tf.train.CheckpointOptions(experimental_sharding_callback=sliced))
    config = root / "config.json"
    config.write_text(model.to_json())
    x = _x(71, True, 11)
    return prefixes, str(config), x, keras_predict(model, x)


def _shards(prefix) -> int:
    folder, name = os.path.split(prefix)
    counts = {f.rsplit("-of-", 1)[1] for f in os.listdir(folder) if f.startswith(name + ".data-")}
    assert len(counts) == 1, counts
    return int(counts.pop())


@pytest.mark.parametrize("name, suffix", [("whole", ""), ("sliced", ".index"),  # given by prefix or index
                                          ("tf.train.Checkpoint", "")])
def test_sharded_checkpoint_converts_to_what_keras_predicts(written, name, suffix):
    from npxception import weights_tools

    prefixes, config, x, expected = written
    assert _shards(prefixes[name]) > 4  # ~83 MB of weights in 16 MiB shards
    model = weights_tools.read(prefixes[name] + suffix, config=config)
    ours = model(x)
    err = float(np.abs(ours.astype(np.float64) - expected).max())
    assert err <= RTOL * float(np.abs(expected).max()), f"max |ours - keras| {err:.3g}; ours {ours[0]} vs {expected[0]}"


@pytest.mark.parametrize("name", ["whole", "sliced"])
def test_bundle_reader_matches_tensorflow_on_every_entry_of_every_shard(written, name):
    """Every entry, read without TensorFlow from whichever shards hold it, is bit for bit TensorFlow's;
    MaxShardSizePolicy's file has variables in slices across shards, the other none."""
    import tensorflow as tf

    from npxception.weights_tools.tf_bundle import DT_STRING, Bundle

    prefix = written[0][name]
    theirs = tf.train.load_checkpoint(prefix)
    shapes = theirs.get_variable_to_shape_map()
    with Bundle(prefix) as bundle:
        assert set(bundle.entries) == set(shapes)
        assert bundle.shards == _shards(prefix)
        assert bool(bundle.slices) == (name == "sliced")
        for key, entry in bundle.entries.items():
            if entry.dtype == DT_STRING:
                assert bundle.string(key) == theirs.get_tensor(key), key
            else:
                np.testing.assert_array_equal(bundle.array(key).read(), theirs.get_tensor(key), err_msg=key)


def test_a_checkpoint_of_two_models_is_refused_not_guessed(tmp_path):
    """tf.train.Checkpoint(a=model, b=other): which one is the Xception is not the file's to say."""
    import tensorflow as tf
    import tf_keras

    from npxception import weights_tools

    models = [tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)]) for _ in range(2)]
    prefix = str(tmp_path / "ckpt")
    tf.train.Checkpoint(a=models[0], b=models[1]).write(prefix)
    with pytest.raises(weights_tools.ConversionError, match=r"a checkpoint holding 2 Keras models \(a, b\); "
                                                            r"expected one"):
        weights_tools.read(prefix)
