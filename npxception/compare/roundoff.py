"""Is a layer's local error round-off? The test for an error under the tolerance on a failing row.

A source is a layer whose own computation differs from ours. The tolerance (``rtol`` of max|theirs|)
decides that for most layers: a wrong BN epsilon moves a BN row by ~1e-3 of its largest value, a
correct float32 layer's round-off by ~5e-7. But a real fault can be small against a layer's largest
value. A fold that dropped the fused bias ``beta - moving_mean * s`` shifts every value of a channel
by the same constant, and the late layers' values are large: at block14_sepconv2_bn of the 75x75
test model that shift is 2.4e-6 of max|theirs|, under rtol 1e-4, and the layer is still wrong.

So where the tolerance is exceeded (the row fails: every layer that adds to it counts), a layer under
the tolerance is measured against the round-off of a float32 computation of itself:

    exact      our layer in float64 on their inputs (a gap before it filled in float64 too)
    round-off  our float32 layer on the same inputs, against exact
    theirs     their output, against exact

as root-mean-squares over the whole tensor, not maxima. A maximum is one value's accident; the RMS
of thousands of values is stable: their error over ours measured 0.56-0.99 at every correct layer of
onnxruntime ports of the test model (folded BN, BN nodes, convolutions, the pool: tests/
test_onnx_exports.py), up to 1.68 at TensorFlow's (oneDNN's convolutions, Keras Xceptions at 75x75 and
150x150 behind a planted BN epsilon: tests/test_compare.py), and 10.1 at the smallest of the no-bias
fold's BN layers (block14_sepconv2_bn; its max-based ratio is 5.4, too near round-off's ~3 to tell),
9.0 there in reviewer 8's own no-bias port of another random 75x75 model.
A layer is a source when their RMS error is over ``ROUNDOFF_FACTOR`` times ours (``ours`` never below
the rounding of the output itself, ``u * RMS(exact)``, so an exact op such as ReLU is not held to zero).
That holds at compare's float32 tolerance or a stricter one; a looser one (``rtol`` over 1e-4, or an
``atol``) is what the user lets a layer add: ``--rtol 5e-3`` accepts PyTorch's BN epsilon (~8e-4)
before a failing pool and after it alike.

The causes at such a source are then tested at that scale (``rtol`` = the factor times our largest
round-off, relative to max|theirs|), since every candidate is within the tolerance there.
Only float32 is tested so: a float16 or bfloat16 port's error is its storage rounding, which our
float32 run does not estimate (its tolerance, precision.DEFAULT_RTOL, was measured on such ports).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .local import Node, rerun

# Their RMS error over float32 round-off's at which a layer is a source: correct layers measured
# <= 1.68 and a dropped fused bias >= 9.0 (above), so 4 leaves a 2.4x margin below and 2.25x above.
ROUNDOFF_FACTOR = 4.0
_U32 = 2.0 ** -24  # float32's unit round-off


@dataclass(frozen=True)
class Beyond:
    """Their local error against float32 round-off at one layer."""

    ratio: float  # RMS |theirs - exact| / RMS |our float32 - exact|
    rtol: float  # the tolerance its causes are tested at: ROUNDOFF_FACTOR x our largest round-off / max|theirs|

    @property
    def source(self) -> bool:
        return self.ratio > ROUNDOFF_FACTOR


def _rms(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.sqrt(np.mean(a * a))) if a.size else 0.0


class RoundOff:
    """Our layers in float32 and float64 on their inputs, for one comparison."""

    def __init__(self, model, theirs: dict, x_in):
        self.model, self.theirs, self.x_in = model, theirs, x_in
        self._models: dict = {}

    def _in(self, dtype):
        if self.model.dtype.name == dtype:
            return self.model
        if dtype not in self._models:  # made when first needed: a passing comparison never pays for it
            self._models[dtype] = self.model.astype(dtype)
        return self._models[dtype]

    def beyond(self, node: Node, y, theirs_out) -> Beyond:
        """``y``: our layer's local output (in the model's dtype); ``theirs_out``: theirs, float32."""
        exact = rerun(self._in("float64"), node, self.theirs, self.x_in)
        ours = y if y.dtype == np.float32 else rerun(self._in("float32"), node, self.theirs, self.x_in)
        roundoff = max(_rms(ours - exact), _U32 * _rms(exact))
        ratio = _rms(theirs_out - exact) / roundoff if roundoff > 0 else 0.0
        scale = float(np.abs(theirs_out).max()) if theirs_out.size else 0.0
        largest = max(float(np.abs(ours - exact).max()) if ours.size else 0.0, _U32 * scale)
        return Beyond(ratio, ROUNDOFF_FACTOR * largest / scale if scale > 0 else 0.0)
