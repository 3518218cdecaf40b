"""What ``npxception compare`` is handed: hostile Keras files, activation dumps, ONNX graphs and photo folders.

Every case here is a file an attacker (or an accident) can hand a user: it is refused
with one line naming the file and the offending thing, or read within a budget,
never run, never a hang or an allocation the file does not justify. Hostile
files run in a subprocess under ``RLIMIT_AS`` (a resource limit, not a timed
assertion), as in test_hostile.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from npxception import Xception
from test_hostile import assert_refused, run_limited


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Our model: 3 classes at 71x71 (the smallest Keras' constructor allows), random weights."""
    path = tmp_path_factory.mktemp("ours") / "small.npz"
    Xception(classes=3, input_shape=(71, 71, 3), seed=3).save(path)
    return path


# --------------------------------------------------------------------------- F1: code planted in a Keras file

@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """tf_keras files whose Lambda writes ``PWNED`` when it is rebuilt (its bytecode runs) and again when it is
    called (tf.io.write_file is in its graph, so a SavedModel's revived graph runs it too): a full-model .h5, a
    SavedModel directory, and a weights-only .h5 with the model's config.json."""
    import tf_keras as k

    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"

    # no closure (Keras marshals the code, and its closure by value): the marker's path is in the source
    plant = eval(f"lambda t: (__import__('pathlib').Path({str(marker)!r}).write_text('code ran'), "
                 f"__import__('tensorflow').io.write_file({str(marker)!r}, 'graph ran'), t)[2]")

    inp = k.Input((71, 71, 3))
    x = k.layers.Lambda(plant, name="evil")(inp)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = k.Model(inp, k.layers.Dense(3, name="predictions")(x))
    model.save(root / "evil.h5")
    model.save(root / "sm", save_format="tf")
    model.save_weights(root / "weights.h5")
    (root / "config.json").write_text(model.to_json())
    if marker.exists():  # building and saving ran the Python function: the cases start from no marker
        marker.unlink()
    return root


@pytest.mark.parametrize("against", ["evil.h5", "sm"])
def test_compare_refuses_a_planted_lambda_before_keras(evil, small, against):
    """--weights skips the conversion of --against, so Keras opened the file: its Lambda ran (review 2 F1)."""
    # 8 GB of address space: enough for TensorFlow to import (under 1 GB it cannot), so that a Keras load of the
    # file would run the Lambda here; the refusal must come before any framework is imported
    out = run_limited("npxception.cli", "compare", "--weights", small, "--against", evil / against, limit=8 << 30)
    assert not (evil / "PWNED").exists(), "the planted code ran"
    assert_refused(out, str(evil / against), "evil (Lambda)")


def test_a_config_is_vetted_too(evil):
    """A weights-only file's --config is rebuilt by Keras (compare, convert --check-with-keras): vetted as well."""
    from npxception import keras_side

    with pytest.raises(ValueError, match=r"config\.json: refused before Keras opens it: unsupported layer "
                                         r"evil \(Lambda\)"):
        keras_side.load(evil / "weights.h5", config=evil / "config.json")
    assert not (evil / "PWNED").exists(), "the planted code ran"


@pytest.mark.parametrize("against", ["evil.h5", "sm"])
def test_keras_opens_files_in_safe_mode(evil, against, monkeypatch):
    """Should the vetting miss a layer, the framework's safe mode still refuses the lambda, and a SavedModel
    is rebuilt from its config, never revived from its stored graph (which would call tf.io.write_file)."""
    import weights_tools.vetting

    from npxception import keras_side

    monkeypatch.setattr(weights_tools.vetting, "check_layers", lambda klayers, source: None)
    with pytest.raises(ValueError, match="Lambda"):
        kmodel = keras_side.load(evil / against)
        kmodel(np.zeros((1, 71, 71, 3), "float32"))  # a revived graph would run here
    assert not (evil / "PWNED").exists(), "the planted code ran"
