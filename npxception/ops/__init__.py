"""Every operation Xception needs, as pure functions on NumPy arrays.

Data is NHWC and weights are in Keras layout; semantics (padding, channel
order, epsilon) are TensorFlow's / Keras'. Every op takes
``impl="fast" | "reference"``:

* ``"reference"``: short plain NumPy that reads like the formula in its docstring;
* ``"fast"``: Numba kernels (depthwise, pooling, element-wise) and BLAS GEMMs
  (convolution, pointwise, dense).

Both are tested against TensorFlow (tests/test_ops_tf.py) and against each
other. Kernels compile lazily on first call, once per dtype (float32 / float64),
and are cached on disk. Set ``NUMBA_DISABLE_JIT=1`` to step through a kernel
in a debugger as plain Python.
"""

from __future__ import annotations

from .activations import add, relu, softmax
from .batchnorm import batch_norm
from .conv import conv2d
from .dense import dense
from .depthwise import depthwise_conv2d
from .padding import output_size, same_padding
from .pointwise import pointwise_conv2d
from .pooling import global_avg_pool2d, global_max_pool2d, max_pool2d
from .separable import separable_conv2d

__all__ = [
    "conv2d", "depthwise_conv2d", "pointwise_conv2d", "separable_conv2d", "batch_norm", "relu", "add",
    "max_pool2d", "global_avg_pool2d", "global_max_pool2d", "dense", "softmax", "same_padding", "output_size",
]
