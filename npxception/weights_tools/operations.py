"""Operation nodes on the input path: ``preprocess_input`` and hand-written arithmetic on a symbolic tensor.

The tensorflow.org transfer-learning tutorial calls
``keras.applications.xception.preprocess_input(x)`` on the model's input tensor.
On a symbolic tensor that runs ``x /= 127.5; x -= 1.0`` (``imagenet_utils``'
"tf" mode, the same two operations in tf_keras and Keras 3), and each Keras
records each operation as a node of the functional config, with no weights:

* tf_keras: a ``TFOpLambda`` layer named after the TensorFlow function
  (``"function": "math.truediv"``). The node holds the first argument
  (``["input_2", 0, 0, kwargs]``, or ``["_CONSTANT_VALUE", -1, 1.0, kwargs]``
  for ``1.0 - x``) and the others as its kwargs (``{"y": 127.5, "name": null}``).
* Keras 3: an operation (``"module": "keras.src.ops.numpy", "class_name":
  "TrueDivide"``) whose node holds ``args`` (``[<tensor>, 127.5]``, or
  ``[1.0, <tensor>]`` for ``1.0 - x``) and ``kwargs``. A constant is a number or
  ``{"class_name": "__tensor__" | "__numpy__", "config": {"value", "dtype"}}``.

:mod:`npxception.weights_tools.keras_config` reads both into a KLayer's ``function`` and
``arguments``. Here, add, subtract, multiply and divide of a float32 tensor by
a scalar become :mod:`npxception.input_stage` ``arithmetic`` steps, with the
operands in the order the config gives them. A cast of a float32 tensor to
float32 changes nothing and is dropped. Anything else is refused by name, with
the call it makes.

What Keras computes: both convert the scalar to the tensor's float32 and call
TensorFlow's elementwise kernel (Keras 3: ``keras/src/backend/tensorflow/numpy.py``
``divide`` -> ``tf.divide``; tf_keras: ``tf.math.truediv``), so the eager call
``model(x)`` divides. ``model.predict`` runs a graph that TensorFlow's graph
optimizer rewrites: Grappler's constant folding (``ReduceDivToReciprocalMul``)
turns ``x / 127.5`` into ``x * (1 / 127.5)``, which can differ from the
quotient in the last bit (docs/keras-recipe.md). npxception keeps the division
that the config records, as eager Keras and NumPy's ``preprocess_input`` compute it.
"""

from __future__ import annotations

import math

import numpy as np

from npxception.input_stage import INTEGER_DTYPES

from .graph import Argument, KLayer, to_snake_case

# The function -> (the step's op, its operands' parameter names in call order).
BINARY = {
    # tf_keras: the TensorFlow function a TFOpLambda calls; tf.math's take (x, y, name)
    "tf.math.truediv": ("divide", ("x", "y")),
    "tf.math.divide": ("divide", ("x", "y")),
    "tf.math.multiply": ("multiply", ("x", "y")),
    "tf.math.subtract": ("subtract", ("x", "y")),
    "tf.math.add": ("add", ("x", "y")),
    "tf.__operators__.add": ("add", ("x", "y")),  # `x + c` on a symbolic tensor
    "tf.math.scalar_mul": ("multiply", ("scalar", "x")),
    "tf.compat.v1.math.scalar_mul": ("multiply", ("scalar", "x")),
    # Keras 3: keras.ops' binary operations take (x1, x2); `x / c` is true_divide
    "keras.ops.true_divide": ("divide", ("x1", "x2")),
    "keras.ops.divide": ("divide", ("x1", "x2")),
    "keras.ops.multiply": ("multiply", ("x1", "x2")),
    "keras.ops.subtract": ("subtract", ("x1", "x2")),
    "keras.ops.add": ("add", ("x1", "x2")),
}
CASTS = {"tf.cast": ("x", "dtype"), "keras.ops.cast": ("x",)}  # Keras 3's target dtype is in its config
FLOAT32_MAX = float(np.finfo(np.float32).max)
SUPPORTED = ("elementwise +, -, * and / of the image with one number (x / c, c - x...: tf.math.add/subtract/"
             "multiply/truediv, keras.ops.add/subtract/multiply/divide/true_divide, as keras.applications."
             "xception.preprocess_input writes them) and casts to float32 from float32 or an integer type of at most "
             "16 bits (exact), between the model's "
             "input and the backbone")


class OperationError(ValueError):
    """An operation node the converter cannot reproduce where it sits; the message says why."""


def function_name(k: KLayer) -> str:
    """The public name of what ``k`` calls: ``"tf.math.truediv"``, ``"keras.ops.true_divide"``."""
    function = k.function or "?"
    if not function.startswith("tf."):
        module, _, cls = function.rpartition(".")
        sub = module.rpartition(".")[2]  # keras.src.ops.numpy -> numpy; image ops keep their namespace
        function = f"keras.ops.{'image.' if sub == 'image' else ''}{to_snake_case(cls)}"
    return function if len(function) <= 80 else function[:77] + "..."  # a hostile class name floods no message


def _show(a: Argument) -> str:
    text = a.tensor if a.tensor is not None else repr(a.value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return text if a.name.startswith("#") else f"{a.name}={text}"


def call_text(k: KLayer) -> str:
    """The call as the config records it: ``tf.math.pow(input_2, y=2)``, tensors by their layer's name."""
    args = [a for a in k.arguments if not (a.name == "name" and a.value is None)]
    if not function_name(k).startswith("tf."):  # a Keras 3 operation's own arguments are in its config
        args += [Argument(str(key), value=v) for key, v in (k.config or {}).items() if key != "name"]
    return f"{function_name(k)}({', '.join(_show(a) for a in args[:6])}{', ...' if len(args) > 6 else ''})"


def _by_parameter(k: KLayer, params) -> list[Argument]:
    """The arguments in ``params`` order: positional ones (``#i``) take the i-th name; TF's ``name`` is dropped."""
    found: dict[str, Argument] = {}
    for a in k.arguments:
        if a.name.startswith("#"):
            i = int(a.name[1:]) if a.name[1:].isdigit() else len(params)
            if i >= len(params):
                raise OperationError(f"it is called with more than the {len(params)} arguments "
                                     f"{', '.join(params)}")
            param = params[i]
        else:
            param = a.name
        if param == "name":
            continue  # the TensorFlow op's name: no arithmetic
        if param not in params or param in found:
            raise OperationError(f"unexpected argument {param!r}; expected {', '.join(params)}")
        found[param] = a
    missing = [p for p in params if p not in found]
    if missing:
        raise OperationError(f"the config records no argument {missing[0]!r}")
    return [found[p] for p in params]


def _scalar(a: Argument) -> float:
    """A constant operand as a float: a Python number, or a float32 scalar tensor or array."""
    v = a.value
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise OperationError(f"its constant operand {a.value!r:.60} is not one number")
    if a.dtype not in (None, "float32"):
        raise OperationError(f"its constant operand {v!r} is a {a.dtype} tensor, so Keras computes the step in "
                             f"{a.dtype} (its type promotion), not in the image's float32; write the constant "
                             "as a Python number")
    try:
        v = float(v)
    except OverflowError:
        v = math.inf
    if not (math.isfinite(v) and abs(v) <= FLOAT32_MAX):
        raise OperationError(f"its constant operand {a.value!r:.60} is not a finite float32 number")
    return v


# Integer dtypes whose every value is a float32 exactly (|v| < 2**24): a cast of one to float32 changes nothing.
EXACT_IN_FLOAT32 = INTEGER_DTYPES  # every value of each is a float32: the stage's cast step (input_stage.py)


def _check_float32(tensor: Argument, input_dtype, policies) -> None:
    """The tensor operand must be float32: Keras 3 records its dtype; tf_keras records only the input's and
    each layer's dtype policy (``policies``: {layer name: its policy, when not float32}), which sets the
    dtype of that layer's output (a float64 Rescaling gives float64, and x / 127.5 on it divides in float64)."""
    policy = (policies or {}).get(tensor.tensor) if tensor.dtype is None else None
    if policy == "float32":  # a cast's output (tf_keras records no dtype on the tensor)
        return
    if policy is not None:
        raise OperationError(f"it reads the output of layer {tensor.tensor}, whose dtype policy is {policy!r}, so "
                             f"Keras computes this operation in {policy}, not in npxception's float32; give {tensor.tensor} "
                             "the float32 policy")
    dtype = tensor.dtype or input_dtype or "float32"
    if dtype != "float32":
        raise OperationError(f"it reads a {dtype} tensor, whose arithmetic Keras promotes by dtype rules "
                             "npxception does not reproduce; give the model a float32 Input")


def step(k: KLayer, input_dtype=None, policies=None) -> dict | None:
    """The input-stage step for operation node ``k``, None for a cast that changes nothing.

    ``input_dtype``: the model input's recorded dtype (None: Keras' default float32).
    ``policies``: {layer name: its dtype policy} for the stage's layers whose policy is not float32.
    Raises :class:`OperationError` saying why ``k`` does not convert.
    """
    name = function_name(k)
    if name in CASTS:
        (tensor, *rest) = _by_parameter(k, CASTS[name])
        target = rest[0].value if rest else (k.config or {}).get("dtype")
        if tensor.tensor is None:
            raise OperationError("it casts a constant, not the image")
        if target != "float32":
            raise OperationError(f"a cast to {target!r} changes the values (rounding or truncation)")
        source = tensor.dtype or (policies or {}).get(tensor.tensor) or input_dtype or "float32"
        if source not in EXACT_IN_FLOAT32:  # an integer Input cast to float32 (a serving model's uint8): exact
            _check_float32(tensor, input_dtype, policies)
        return None
    if name not in BINARY:
        raise OperationError("it is not elementwise arithmetic with a scalar")
    op, params = BINARY[name]
    operands = _by_parameter(k, params)
    tensors = [a for a in operands if a.tensor is not None]
    if len(tensors) != 1:
        raise OperationError(f"{'both its operands are tensors' if tensors else 'neither operand is a tensor'} "
                             f"({', '.join(_show(a) for a in operands)})")
    _check_float32(tensors[0], input_dtype, policies)
    scalar_first = operands[0].tensor is None
    scalar = _scalar(operands[0] if scalar_first else operands[1])
    if op == "divide" and not scalar_first and scalar == 0:
        raise OperationError(f"it divides the image by zero ({scalar!r}), which gives Inf or NaN at every pixel: "
                             "no scores follow from it")
    return {"kind": "arithmetic", "name": k.name, "op": op, "scalar": scalar, "scalar_first": scalar_first,
            "keras_class": k.class_name}


def refusal(k: KLayer, where: str, input_dtype=None, policies=None) -> str:
    """One line: operation ``k`` (its call) does not convert ``where`` it sits, why, and what does."""
    try:
        step(k, input_dtype, policies)
        why = ("npxception converts such arithmetic only between the model's input and the backbone, "
               "as preprocessing")
    except OperationError as exc:
        why = f"{exc}; npxception converts {SUPPORTED}"
    text = f"operation {k.name} ({call_text(k)}) {where}: {why}"
    if sum(a.tensor is not None for a in k.arguments) == 1:
        text += f". If it is an identity at inference, pass --skip-layer {k.name}"
    return text
