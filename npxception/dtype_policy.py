"""The Keras dtype policies a converted model's source may have computed in.

Keras' mixed precision (``keras.mixed_precision.set_global_policy("mixed_float16")``, or
``"mixed_bfloat16"``: what keras.io recommends for training on GPUs) keeps every variable in
float32 and computes each layer in float16 or bfloat16; the pure ``"float16"`` and
``"bfloat16"`` policies store the variables in 16 bits too. npxception computes in float32 or
float64 only. A model converted from such a source computes its weights in float32, the exact
math of those weights (``weights_tools.dtype_policy`` decides when that is allowed), and
records the source's policy: ``model.source_dtype_policy`` and the manifest's
``"source_dtype_policy"``. ``compare`` and ``convert --check-with-keras`` read it to judge
Keras' answers at 16-bit precision (docs/keras-recipe.md#mixed-precision).
"""

from __future__ import annotations

from .untrusted import short_repr

# {policy: the dtype its layers compute in}
SIXTEEN_BIT = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16", "float16": "float16",
               "bfloat16": "bfloat16"}


def check_source_policy(value) -> str | None:
    """``value`` if it is one of :data:`SIXTEEN_BIT`'s policies or None (the source computed in our dtype)."""
    if value is None or value in SIXTEEN_BIT:
        return value
    raise ValueError(f"source_dtype_policy: expected one of {', '.join(SIXTEEN_BIT)} or None, found "
                     f"{short_repr(value)}")


def describe(policy: str) -> str:
    """``"mixed_float16 (float32 variables, float16 arithmetic)"``: the policy and what it computes in."""
    stored = "float32" if policy.startswith("mixed_") else SIXTEEN_BIT[policy]
    return f"{policy} ({stored} variables, {SIXTEEN_BIT[policy]} arithmetic)"
