"""The precision the other side computed in, and the tolerance that follows from it.

A port may run in float16 (``model.half()``, an fp16 ONNX export, Keras' mixed
precision) or bfloat16. Its activations are then compared in float32 (our layers
run on float32 copies of theirs), with a tolerance its precision can meet. The
precision is the least precise of: what the side declares (an ONNX graph's
weights and input, a Keras model's dtype), the dtype of the arrays it returned,
and, for float32 arrays, whether every value is exactly a float16 or bfloat16
number (a half-precision port dumped with ``tensor.float()``: numpy has no
bfloat16, so that is how a bfloat16 dump arrives).
"""

from __future__ import annotations

import numpy as np

# Default tolerances, by the lower precision of the two sides, relative to the
# largest magnitude of the other side's activation (|ours - theirs| <= atol + rtol * max|theirs|):
# float32: float32 round-off (6e-8) times reduction lengths up to 9 * 2048, compounded over
#   36 layers, stays below ~3e-5 for a correct port; a wrong BN epsilon (1e-5 for 1e-3)
#   moves a BN output by ~1e-3 relative. The same bound serves local errors, which are
#   one layer's round-off (~1e-6); under it, a failing row's layer is held to float32's
#   round-off itself (roundoff.py: a dropped fused bias can be 2e-6 of max|theirs|).
# float64: summation order only.
# float16: unit round-off 2^-11 = 4.9e-4; a correct float16 port's local errors (its weights and
#   its outputs rounded to float16) measured up to 1e-3 of max|theirs| on the 75x75 test model,
#   accumulated errors up to 2e-3 (docs/discrepancies.md); 1e-2 (~20 round-offs) leaves a 5x margin.
#   A BN epsilon of 1e-5 for 1e-3 (~1e-3) is below what float16 can show: the report says so.
# bfloat16: unit round-off 2^-8 = 3.9e-3, 8x float16's; measured the same way, local errors up to
#   7.4e-3 and accumulated 1.7e-2; the same ~20 round-offs, 8e-2, leave a 5x margin.
# A Keras model under mixed precision (71x71 Xceptions fit one step, docs/keras-recipe.md#mixed-precision):
#   local errors up to 9.2e-4 (float16) and 1.4e-2 (bfloat16), within these with 10x and 5.7x to spare, but
#   its accumulated errors reach 1.4e-2 and 0.14 of a layer's max|x|: compare attributes those to its rounding
#   (core._attribute_rounding) where no layer is a source and ours is float32-exact against the oracle.
DEFAULT_RTOL = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 8e-2}
UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
HALF = ("float16", "bfloat16")

_SAMPLE = 4096  # values looked at per array: enough that a float32 port passes as float16 with odds 2^-13 per value
_MIN_VALUES = 1000  # nonzero values needed before a dump's rounding says anything (zeros are exact in every type)


def _name(dtype) -> str | None:
    if dtype is None:
        return None
    return dtype if isinstance(dtype, str) else np.dtype(dtype).name


def rounded_to(arrays) -> str | None:
    """"bfloat16" or "float16" when every (sampled, nonzero) value of these float32 arrays is exactly
    such a number, else None."""
    values = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype != np.float32:
            return None
        flat = a.ravel()
        v = flat[::max(1, flat.size // _SAMPLE)]
        values.append(v[np.isfinite(v) & (v != 0)])
    v = np.concatenate(values) if values else np.zeros(0, np.float32)
    if v.size < _MIN_VALUES:
        return None
    if not (v.view(np.uint32) & 0xFFFF).any():  # bfloat16 is float32's top 16 bits
        return "bfloat16"
    with np.errstate(over="ignore"):
        if (v.astype(np.float16).astype(np.float32) == v).all():
            return "float16"
    return None


def their_precision(model_dtype, declared, theirs: dict, declared_how=None) -> tuple[str, str]:
    """``(precision, how it is known)``: the least precise of ours, what their side declares and
    their arrays (``theirs``: their activations, the input left out). ``declared_how`` says more of
    how their side declares it (a Keras model's dtype policy)."""
    found = {_name(model_dtype): "ours"}
    if _name(declared):
        found.setdefault(_name(declared), declared_how or "declared by their file or model")
    floats = [np.asarray(a) for a in theirs.values() if np.asarray(a).dtype.kind in "fV"]
    for a in floats:
        found.setdefault(_name(a.dtype), f"their arrays are {_name(a.dtype)}")
    if declared is None or _name(declared) == "float32":
        rounded = rounded_to(floats)
        if rounded:
            found.setdefault(rounded, f"every value of their float32 arrays is a {rounded} number")
    precision = max((p for p in found if p in UNIT_ROUNDOFF), key=UNIT_ROUNDOFF.get, default="float32")
    return precision, found[precision]


def as_float32(a):
    """Their float16 / bfloat16 activation as float32 (exact), for our layers and error measures."""
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind in "fV" and a.dtype.itemsize == 2 else a
