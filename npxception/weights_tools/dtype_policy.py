"""What a Keras model computed in, read from its layers' dtype policies, and when it converts.

Keras' mixed precision keeps float32 variables and computes each layer in float16 or
bfloat16 (:mod:`npxception.dtype_policy`). The weights alone look like any float32 model's;
the config records the policy layer by layer (``"dtype": "mixed_float16"`` in tf_keras,
``{"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}`` in Keras 3), and a
pure ``"float16"`` model's weights are float16 arrays. npxception computes in float32, so
its answer is the exact math of the weights, and the source's own ``predict`` differs from
it by the source's 16-bit rounding (measured in docs/keras-recipe.md#mixed-precision:
:data:`MEASURED`). That is a difference nothing would flag, so such a model is refused by
default, naming the layer, the policy and the size of the difference, and converts with
one explicit opt-in, ``dtype_policy="float32"`` (``--dtype-policy float32``): its weights
computed in float32, the source's policy recorded on the model.

A policy npxception knows nothing about (Keras 3's quantized ``"int8_from_float32"``, a
float8 policy...) is refused by name at reading, with or without the opt-in.
"""

from __future__ import annotations

import re

from npxception.dtype_policy import SIXTEEN_BIT, describe
from npxception.untrusted import short_repr

from .errors import ConversionError
from .graph import KLayer, dtype_policy

# The policies a layer may compute with: ours (float32, float64) and the 16-bit ones we convert on request.
KNOWN = ("float32", "float64", *SIXTEEN_BIT)
# Keras 3's quantized policies, named f"{mode}_from_{source}" (keras/src/dtype_policies/dtype_policy.py): int8, int4
# (its mode "int4/128" with a block size in newer Keras), float8, gptq, awq.
QUANTIZED = re.compile(r"^(int8|int4|float8|gptq|awq)(/\w+)?_from_\w+$")
# What the opt-in accepts: the dtype the converted model computes in.
TARGETS = ("float32",)
# max |Keras' predict - the float32 math of its weights| / max|output| on 71x71 Xceptions fit one step under
# each policy (docs/keras-recipe.md#mixed-precision), by the arithmetic's dtype: Keras 3 and tf_keras
# mixed_float16 4.8e-3 and 4.2e-3, pure float16 1.2e-3; mixed_bfloat16 3.2e-2 and 4.4e-2.
MEASURED = {"float16": "5e-3", "bfloat16": "4e-2"}


def layer_policy(k: KLayer) -> str | None:
    """The dtype policy layer ``k`` computes with, or None (an operation node, or none recorded)."""
    if k.function is not None and k.class_name != "TFOpLambda":
        return None  # a Keras 3 operation has no dtype policy: a "dtype" in its config is its argument (Cast's)
    return dtype_policy(k.config)


def check_known(k: KLayer, source: str) -> None:
    """Refuse a layer whose dtype policy is none of :data:`KNOWN`, by name."""
    policy = layer_policy(k)
    if k.class_name != "InputLayer" and isinstance(policy, str) and QUANTIZED.match(policy):
        raise ConversionError(
            f"{source}: layer {k.name} ({k.class_name}) computes with the dtype policy {short_repr(policy)}: the "
            f"model was quantized by Keras' model.quantize({policy.split('_from_')[0].split('/')[0]!r}), which "
            "replaces its float kernels with low-precision ones and their scales. npxception does not compute "
            "quantized layers, and the float weights cannot be recovered from them: convert the float model, "
            "saved before quantize() was called")
    if k.class_name != "InputLayer" and policy not in (None, *KNOWN):
        raise ConversionError(
            f"{source}: layer {k.name} ({k.class_name}) computes with the dtype policy {short_repr(policy)}; npxception "
            f"computes in float32 (or float64) and converts models whose layers compute with one of "
            f"{', '.join(KNOWN)}. Rebuild the model under keras.mixed_precision.set_global_policy('float32'), "
            "load its weights, save it again and convert that file")


def sixteen_bit(klayers) -> tuple[str, str] | None:
    """``(policy, where)`` for the least precise 16-bit policy the model computes with (``where``: the first
    layer that does, ``"layer NAME (Class)"``, or its weights' dtype for a file without a config), else None."""
    found = {}
    for k in klayers:
        policy = layer_policy(k) if k.class_name != "InputLayer" else None
        if policy in SIXTEEN_BIT:
            found.setdefault(policy, f"layer {k.name} ({k.class_name})")
        elif k.inbound is None and any(str(w.dtype) == "float16" for w in k.weights):
            # no config: float16 arrays are what a "float16" policy stores (mixed precision stores float32)
            found.setdefault("float16", f"layer {k.name} ({k.class_name}) (its weights are float16)")
    if not found:
        return None
    policy = max(found, key=lambda p: SIXTEEN_BIT[p] == "bfloat16")  # bfloat16 keeps 8 bits, float16 11
    return policy, found[policy]


def source_policy(klayers, requested, source: str) -> str | None:
    """The 16-bit policy the converted model records (None: the source computed in float32/float64).

    ``requested``: the user's ``dtype_policy`` (None, or one of :data:`TARGETS`). A 16-bit source
    without it is refused, naming the layer, the policy, the measured difference and the opt-in;
    the opt-in on a source that records no 16-bit policy is refused too, never ignored.
    """
    if requested is not None and requested not in TARGETS:
        raise ConversionError(f"{source}: dtype_policy: npxception converts a 16-bit source to compute in "
                              f"{', '.join(TARGETS)}, found {requested!r}")
    found = sixteen_bit(klayers)
    if found is None:
        if requested is not None:
            raise ConversionError(
                f"{source}: --dtype-policy {requested} (dtype_policy={requested!r}) converts a model that "
                "computes in 16 bits (mixed_float16, mixed_bfloat16, float16, bfloat16), and this file records "
                "none: its layers compute in float32 or float64 (a weights-only file with float32 arrays records "
                "no policy). Convert it without the option")
        return None
    policy, where = found
    if requested is None:
        dtype = SIXTEEN_BIT[policy]
        raise ConversionError(
            f"{source}: {where} computes with the dtype policy {policy!r}: {describe(policy)}. npxception "
            f"computes in float32, the exact math of the weights, and this model's own predict differs from "
            f"that by its {dtype} rounding: measured up to {MEASURED[dtype]} of the output's largest value "
            f"on {dtype} Xceptions (docs/keras-recipe.md, \"Mixed precision\", in npxception's source distribution). To convert its weights to compute "
            "in float32, say so: --dtype-policy float32 (dtype_policy='float32'); the converted file records the source's policy, "
            "and compare and --check-with-keras then judge Keras at its precision")
    return policy
