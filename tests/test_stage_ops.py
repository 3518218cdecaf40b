"""Operation nodes on the input path (npxception/weights_tools/operations.py): ``preprocess_input`` and hand-written
arithmetic on a symbolic tensor, read from the configs that Keras 3 and tf_keras write, computed as they compute it.

Each form is a small model ``Input -> form`` built by each Keras; its config is read as the converter reads
a file, and the stage it becomes must equal the Keras model called on the same array, bit for bit, on
hypothesis draws of pixel arrays. The Keras call is eager, ``model(x)``: TensorFlow's graph optimizer
rewrites ``x / c`` in ``model.predict`` into ``x * (1 / c)`` (operations.py), which the whole tutorial
models of test_real_world_files.py (preprocess_input_keras, tf_keras_preprocess_input_h5) meet within
their tolerance. Unsupported operations are refused by name, from the same real configs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from npxception import input_stage as stage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAVOURS = ("keras3", "tf_keras")


def _frameworks(flavour):
    import tensorflow as tf

    if flavour == "tf_keras":
        import tf_keras as fw
    else:
        import keras as fw
    return fw, tf


# name: (the form on a symbolic tensor x, the steps it must become: (op, scalar, scalar_first))
FORMS = {
    "preprocess_input": (lambda fw, tf, x: fw.applications.xception.preprocess_input(x),
                         [("divide", 127.5, False), ("subtract", 1.0, False)]),
    "c_minus_x": (lambda fw, tf, x: 1.0 - x, [("subtract", 1.0, True)]),
    "c_over_x": (lambda fw, tf, x: 255.0 / x, [("divide", 255.0, True)]),
    "x_over_tenth": (lambda fw, tf, x: x / 0.1, [("divide", 0.1, False)]),  # not x * 10 (0.1 is inexact)
    "x_times_c": (lambda fw, tf, x: x * 0.1, [("multiply", 0.1, False)]),
    "c_times_x": (lambda fw, tf, x: 2.5 * x, [("multiply", 2.5, True)]),
    "x_plus_int": (lambda fw, tf, x: x + 1, [("add", 1.0, False)]),
    "c_plus_x": (lambda fw, tf, x: 3.0 + x, [("add", 3.0, True)]),
    "scale_shift": (lambda fw, tf, x: (x / 255.0 - 0.5) * 2.0,
                    [("divide", 255.0, False), ("subtract", 0.5, False), ("multiply", 2.0, False)]),
}
KERAS3_FORMS = {
    "ops_divide": (lambda fw, tf, x: fw.ops.divide(x, 127.5), [("divide", 127.5, False)]),
    "ops_add": (lambda fw, tf, x: fw.ops.add(2.0, x), [("add", 2.0, True)]),
    "tf_constant": (lambda fw, tf, x: x / tf.constant(127.5), [("divide", 127.5, False)]),  # a __tensor__ float32
    "cast_then_divide": (lambda fw, tf, x: fw.ops.cast(x, "float32") / 127.5, [("divide", 127.5, False)]),
}
TF_KERAS_FORMS = {
    "tf_divide": (lambda fw, tf, x: tf.math.divide(x, 127.5), [("divide", 127.5, False)]),
    "tf_add": (lambda fw, tf, x: tf.math.add(x, 2.0), [("add", 2.0, False)]),
    "scalar_mul": (lambda fw, tf, x: tf.math.scalar_mul(2.0, x), [("multiply", 2.0, True)]),
    "cast_then_divide": (lambda fw, tf, x: tf.cast(x, tf.float32) / 127.5, [("divide", 127.5, False)]),
}


def _klayers(model):
    from npxception.weights_tools.keras_config import read_keras_config

    return read_keras_config(model.to_json(), source="test model")[0]


def _stage_of(model):
    """The stage the converter builds from the model's config: its operation nodes, in order."""
    from npxception.weights_tools.preprocessing import input_stage

    chain = [k for k in _klayers(model) if k.function is not None]
    return input_stage(chain, (None, None))[0]


@pytest.fixture(scope="module")
def forms():
    """{(flavour, form): (keras model, its stage)}, each model Input((None, None, 3)) -> the form."""
    out = {}
    for flavour in FLAVOURS:
        fw, tf = _frameworks(flavour)
        extra = KERAS3_FORMS if flavour == "keras3" else TF_KERAS_FORMS
        for name, (form, expected) in {**FORMS, **extra}.items():
            inputs = fw.Input((None, None, 3))
            model = fw.Model(inputs, form(fw, tf, inputs))
            steps = _stage_of(model)
            assert [(s["op"], s["scalar"], s["scalar_first"]) for s in steps] == expected, (flavour, name, steps)
            out[flavour, name] = model, steps
    return out


def test_every_form_becomes_its_steps(forms):
    """Both Keras write every form so that the converter reads the op, the number and the operand order."""
    assert len(forms) == 2 * len(FORMS) + len(KERAS3_FORMS) + len(TF_KERAS_FORMS)
    model, steps = forms["keras3", "preprocess_input"]
    # Keras numbers its automatic names per process (true_divide, true_divide_1, ...): which one this model
    # got depends on the tests that ran before it, so the number is not part of what is checked.
    described = [re.sub(r"^(\w+?)(_\d+)? \(", r"\1 (", stage.describe(s)) for s in steps]
    assert described == ["true_divide (TrueDivide): x / 127.5", "subtract (Subtract): x - 1"]
    model, steps = forms["tf_keras", "c_minus_x"]
    assert stage.describe(steps[0]).endswith("(TFOpLambda): 1 - x")


# Pixels as img_to_array gives them (whole numbers) or as augmentation leaves them (fractions), in [0, 255].
# Not below 2**-20: TensorFlow's CPU kernels flush subnormal inputs and results to zero, numpy does not,
# and a pixel is never within 1e-38 of zero without being zero.
pixels = arrays(np.float32, st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 7), st.just(3)),
                elements=st.one_of(st.integers(0, 255).map(float),
                                   st.floats(2**-20, 255, width=32), st.just(0.0)))


@given(x=pixels)
def test_stage_equals_keras_eager_call_bit_for_bit(forms, x):
    """stage.apply on the converter's steps == the Keras model called on the same pixels (c / 0 = inf in both)."""
    for (flavour, name), (model, steps) in forms.items():
        theirs = np.asarray(model(x, training=False))
        ours = stage.apply(stage.validate(steps, 3), x)
        assert ours.dtype == theirs.dtype == np.float32
        assert np.array_equal(ours, theirs, equal_nan=True), \
            f"{flavour} {name}: ours {ours.ravel()[:4]} vs keras {theirs.ravel()[:4]}"


@given(x=pixels, op=st.sampled_from(sorted(stage.ARITHMETIC)), scalar_first=st.booleans(),
       c=st.floats(-1e4, 1e4).filter(lambda c: abs(c) > 1e-3))
def test_arithmetic_step_equals_tensorflow_and_keras_ops(x, op, scalar_first, c):
    """Any number, either order: the step == tf.math's op (tf_keras' TFOpLambda) and keras.ops' (Keras 3),
    the Python float rounded to float32 as both convert it."""
    import keras
    import tensorflow as tf

    tf_op = {"add": tf.math.add, "subtract": tf.math.subtract, "multiply": tf.math.multiply,
             "divide": tf.math.truediv}[op]
    keras_op = {"add": keras.ops.add, "subtract": keras.ops.subtract, "multiply": keras.ops.multiply,
                "divide": keras.ops.true_divide}[op]
    args = (c, x) if scalar_first else (x, c)
    ours = stage.apply(stage.validate([{"kind": "arithmetic", "name": "op", "op": op, "scalar": c,
                                        "scalar_first": scalar_first, "keras_class": "Test"}], 3), x)
    for theirs in (tf_op(*(tf.constant(a) if a is x else a for a in args)), keras_op(*args)):
        theirs = np.asarray(theirs)
        assert theirs.dtype == np.float32
        assert np.array_equal(ours, theirs, equal_nan=True), f"{op} {c!r}: ours {ours.ravel()[:3]} vs {theirs.ravel()[:3]}"


# ---- refusals, from the configs each Keras writes -----------------------------------------------------

def _conv(fw, x):
    return fw.layers.Conv2D(2, 1, name="conv")(x)


# name: (the model's layers after Input((8, 8, 3)), what the refusal must say)
REFUSED = {
    "tensor_operand": (lambda fw, tf, x: _conv(fw, x - x), r"on the input path.*both its operands are tensors"),
    "vector_constant": (lambda fw, tf, x: _conv(fw, x - np.array([1.0, 2.0, 3.0], np.float32)),
                        r"between the input and the backbone: its constant operand \[1.0, 2.0, 3.0\] is not one number"),
    "power": (lambda fw, tf, x: _conv(fw, x ** 2), r"it is not elementwise arithmetic with a scalar"),
    "cast_float16": (lambda fw, tf, x: _conv(fw, tf.cast(x, tf.float16) if fw.__name__ == "tf_keras"
                                            else fw.ops.cast(x, "float16")),
                     r"dtype='float16'\).*a cast to 'float16' changes the values"),
    "resize": (lambda fw, tf, x: _conv(fw, tf.image.resize(x, (8, 8)) if fw.__name__ == "tf_keras"
                                       else fw.ops.image.resize(x, (8, 8))),
               r"image.resize\(.*size=\[8, 8\].*it is not elementwise arithmetic"),
    "bgr": (lambda fw, tf, x: _conv(fw, x[..., ::-1]), r"it is not elementwise arithmetic"),
    "divide_by_zero": (lambda fw, tf, x: _conv(fw, x / 0.0),
                       r"between the input and the backbone: it divides the image by zero \(0.0\), which gives Inf "
                       r"or NaN at every pixel"),
    "in_the_head": (lambda fw, tf, x: fw.layers.Dense(2)(fw.layers.GlobalAveragePooling2D(name="gap")(_conv(fw, x))
                                                         * 2.0),
                    r"in the head, reading from gap: npxception converts such arithmetic only between the "
                    r"model's input and the backbone"),
    "between_blocks": (lambda fw, tf, x: fw.layers.Conv2D(2, 1)(_conv(fw, x) * 2.0),
                       r"inside the backbone, reading from conv: npxception converts such arithmetic only"),
}
SKIPPABLE = {"divide_by_zero", "vector_constant", "power", "cast_float16", "resize", "bgr", "in_the_head", "between_blocks"}


@pytest.fixture(scope="module")
def refused():
    """{(flavour, case): (the op node's name, the ConversionError's text)}, from each Keras' config."""
    from npxception.weights_tools.mapping import ConversionError, to_npxception

    out = {}
    for flavour in FLAVOURS:
        fw, tf = _frameworks(flavour)
        for name, (build, _) in REFUSED.items():
            inputs = fw.Input((8, 8, 3))
            klayers = _klayers(fw.Model(inputs, build(fw, tf, inputs)))
            op = next(k for k in klayers if k.function is not None)
            with pytest.raises(ConversionError, match=rf"^m: operation {re.escape(op.name)} \(") as info:
                to_npxception(klayers, source="m", input_shape=(8, 8, 3))
            out[flavour, name] = op.name, str(info.value)
    return out


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_operation_is_refused_naming_it(refused, flavour, name):
    op, message = refused[flavour, name]
    assert message.startswith(f"m: operation {op} ("), message
    assert ("tf." if flavour == "tf_keras" else "keras.ops.") in message  # what it calls, by its public name
    assert re.search(REFUSED[name][1], message), message
    assert ("--skip-layer " + op in message) == (name in SKIPPABLE)  # not for two tensor operands
    for vague in ("unreadable inbound node", "no weights group", "not an Xception"):
        assert vague not in message


def test_keras3_float64_constant_is_refused_not_computed_in_float32():
    """Keras 3 promotes float32 / float64-tensor to float64: a step npxception would compute differently."""
    import keras
    import tensorflow as tf

    from npxception.weights_tools.mapping import ConversionError, to_npxception

    inputs = keras.Input((8, 8, 3))
    klayers = _klayers(keras.Model(inputs, _conv(keras, inputs / tf.constant(127.5, tf.float64))))
    with pytest.raises(ConversionError, match=r"operation true_divide.*is a float64 tensor, so Keras computes"):
        to_npxception(klayers, source="m", input_shape=(8, 8, 3))


@pytest.mark.parametrize("flavour, refusal", [
    ("tf_keras", r"operation tf.math.truediv(_\d+)? \(.*it reads the output of layer f64, whose dtype policy is 'float64', "
                 r"so Keras computes this operation in float64"),
    ("keras3", r"operation true_divide(_\d+)? \(.*it reads a float64 tensor")])
def test_float64_layer_before_an_operation_is_refused(flavour, refusal):
    """Rescaling(dtype="float64") -> preprocess_input: Keras divides in float64 (tf_keras records no dtype on
    the op's tensor, only the layer's policy); npxception would divide in float32, differing in the last bits."""
    from npxception.weights_tools.mapping import ConversionError, to_npxception

    fw, tf = _frameworks(flavour)
    inputs = fw.Input((8, 8, 3))
    x = fw.applications.xception.preprocess_input(fw.layers.Rescaling(1.0, dtype="float64", name="f64")(inputs))
    model = fw.Model(inputs, _conv(fw, x))
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
    assert np.asarray(fw.Model(inputs, x)(pixels)).dtype == np.float64  # what the stage computes in Keras
    with pytest.raises(ConversionError, match=refusal):
        to_npxception(_klayers(model), source="m", input_shape=(8, 8, 3))


@pytest.fixture(scope="module")
def saved_power(tmp_path_factory):
    """`x ** 2` before a Conv2D, saved by each Keras in its own format."""
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("saved_power")
    paths = {}
    for fw, file in ((keras, "power.keras"), (tf_keras, "power.h5")):
        inputs = fw.Input((8, 8, 3))
        fw.Model(inputs, _conv(fw, inputs ** 2)).save(root / file)
        paths[fw.__name__] = root / file
    return paths


@pytest.mark.parametrize("flavour, op", [("keras", "power"), ("tf_keras", "tf.math.pow")])
def test_saved_files_are_refused_naming_the_operation(saved_power, flavour, op):
    """Through each file reader (the .keras archive has no weights group for an operation: skipped)."""
    from npxception import weights_tools

    # auto-named: power_3 when this process built other powers first
    with pytest.raises(weights_tools.ConversionError, match=f"operation {op}(_\\d+)? \\(.*pow.*it is not elementwise"):
        weights_tools.read(saved_power[flavour])


def test_cli_refusal_is_one_line(saved_power, tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "npxception.weights_tools", "convert", str(saved_power["keras"]), "-o",
                           str(tmp_path / "out.npz")], env=env, capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    assert proc.returncode == 1 and "\n" not in err and "Traceback" not in err, proc.stderr
    assert re.search(r"operation power(_\d+)? \(keras.ops.power\(", err) and not (tmp_path / "out.npz").exists()


def _tensor(prev):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [None, 8, 8, 3], "dtype": "float32", "keras_history": [prev, 0, 0]}}


def _hand_written(n, edit=lambda layer: None):
    """The klayers of a Keras 3 config written by hand: Input((8, 8, 3)) then ``n`` divisions by 2, each
    entry passed to ``edit`` (no Keras needed)."""
    import json

    from npxception.weights_tools.keras_config import read_keras_config

    layers = [{"class_name": "InputLayer", "name": "input_layer", "inbound_nodes": [],
               "config": {"batch_shape": [None, 8, 8, 3], "dtype": "float32", "name": "input_layer"}}]
    for i in range(n):
        layers.append({"module": "keras.src.ops.numpy", "class_name": "TrueDivide", "name": f"op{i}",
                       "config": {"name": f"op{i}"},
                       "inbound_nodes": [{"args": [_tensor(layers[-1]["name"]), 2.0], "kwargs": {}}]})
        edit(layers[-1])
    config = {"class_name": "Functional", "config": {"name": "m", "layers": layers, "input_layers": [
        ["input_layer", 0, 0]], "output_layers": [[layers[-1]["name"], 0, 0]]}}
    return read_keras_config(json.dumps(config), source="m")[0]


def test_a_chain_longer_than_the_stage_limit_is_refused_at_conversion():
    """MAX_STEPS + 1 divisions after the input: refused by the converter with the model's own wording,
    before the backbone is looked for."""
    from npxception.weights_tools.mapping import ConversionError, to_npxception

    klayers = _hand_written(stage.MAX_STEPS + 1)
    with pytest.raises(ConversionError, match=rf"^m: input_stage: at most {stage.MAX_STEPS} steps, found "
                                              rf"{stage.MAX_STEPS + 1} \(the layers op0 to op{stage.MAX_STEPS} "):
        to_npxception(klayers, source="m", input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match=rf"^input_stage: at most {stage.MAX_STEPS} steps, found "):  # the same words
        stage.validate([{"kind": "rescaling", "name": "r", "scale": 1.0}] * (stage.MAX_STEPS + 1), 3)


def test_malformed_operation_entries_get_readable_refusals():
    """A tensor whose config is a list, a node written as a list, a 5,000-character class name: each refusal
    names the file and the layer, in words and at a readable length."""
    from npxception.weights_tools.mapping import ConversionError, to_npxception

    def list_config(layer):
        layer["inbound_nodes"][0]["args"][0]["config"] = [1]

    with pytest.raises(ConversionError, match=r"^m: layer op0: a tensor without keras_history"):
        _hand_written(1, list_config)

    def node_list(layer):
        layer["inbound_nodes"][0] = [["input_layer", 0, 0, {}]]

    with pytest.raises(ConversionError, match=r"^m: operation op0 \(keras.ops.true_divide\(\[\['input_layer'.*the config records "
                                              r"no argument 'x2'") as info:
        to_npxception(_hand_written(1, node_list), source="m", input_shape=(8, 8, 3))
    assert "None" not in str(info.value)

    def long_class(layer):
        layer["class_name"] = "Divide" + "X" * 5000

    with pytest.raises(ConversionError, match=r"^m: operation op0 \(keras.ops.divide_x+\.\.\.\(") as info:
        to_npxception(_hand_written(1, long_class), source="m", input_shape=(8, 8, 3))
    assert len(str(info.value)) < 1000, len(str(info.value))


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_uint8_input_cast_to_float32_then_preprocess_input(flavour):
    """Input(dtype="uint8") -> cast to float32 -> preprocess_input (a serving model): Keras casts whatever it is
    fed to uint8 first, so the stage starts with that cast: fractional pixels (and -1 < x < 0) truncate
    towards zero, as Keras computes them (bit for bit: the same float32 ops on the same integers); values whose
    truncation uint8 does not hold (Keras wraps them on x86-64, undefined in C++) are refused by name. An
    int32 Input (not exact in float32 beyond 2**24) is still refused."""
    fw, tf = _frameworks(flavour)

    def cast(x):
        return tf.cast(x, tf.float32) if flavour == "tf_keras" else fw.ops.cast(x, "float32")

    from npxception.weights_tools.preprocessing import StageError, input_stage

    inputs = fw.Input((None, None, 3), dtype="uint8", name="pixels")
    model = fw.Model(inputs, fw.applications.xception.preprocess_input(cast(inputs)))
    chain = [k for k in _klayers(model) if k.function is not None]
    steps = stage.validate(input_stage(chain, (None, None), input_dtype="uint8", input_name="pixels")[0], 3)
    assert steps[0] == {"kind": "cast", "name": "pixels", "dtype": "uint8"}
    assert [(s["op"], s["scalar"]) for s in steps[1:]] == [("divide", 127.5), ("subtract", 1.0)]
    x = np.arange(256 * 3, dtype=np.uint32).reshape(1, 16, 16, 3).__mod__(256).astype(np.uint8)  # every value
    assert np.array_equal(stage.apply(steps, x.astype(np.float32)), np.asarray(model(x)))
    # fractional and slightly negative pixels: what model.predict computes (it casts them to uint8 first)
    frac = np.random.default_rng(3).uniform(-0.99, 255.99, (2, 8, 8, 3)).astype(np.float32)
    frac[0, 0, 0] = [-0.5, 0.6, 254.9]
    assert np.array_equal(stage.apply(steps, frac), np.asarray(model(frac)))
    # model.predict truncates alike; its traced graph turns x / 127.5 into a multiply (1 ulp of 1.0 = 1.2e-7)
    np.testing.assert_allclose(stage.apply(steps, frac), model.predict(frac, verbose=0), rtol=0, atol=2.4e-7)
    assert np.abs(stage.apply(steps[1:], frac) - np.asarray(model(frac))).max() > 0.003  # the old stage: 0.99/127.5
    for bad in (-1.5, 256.7):  # Keras (x86-64) gives 255 and 0: wrapped, undefined in C++ -> refused
        with pytest.raises(ValueError, match=rf"pixels is uint8.*{bad}.*\(-1, 256\)"):
            stage.apply(steps, np.full((1, 2, 2, 3), bad, np.float32))

    inputs = fw.Input((None, None, 3), dtype="int32")
    model = fw.Model(inputs, cast(inputs) / 127.5)
    with pytest.raises(StageError, match=r"is int32: Keras casts what it is fed"):
        input_stage([k for k in _klayers(model) if k.function is not None], (None, None), input_dtype="int32")
