"""npxception: Xception (Chollet, arXiv:1610.02357) in pure NumPy, hot loops in Numba.

Keras-identical ImageNet predictions with only numpy, numba, Pillow and h5py,
every op readable as a reference next to its fast kernel, and layer-by-layer
cross-checking of other implementations. No deep-learning framework is ever
imported by this package.

The public names are loaded lazily so that ``import npxception`` stays fast.
"""

from __future__ import annotations

import importlib
import os

# Threads: Numba's kernels and OpenBLAS' GEMMs take turns on the same cores, so
# neither pool may spin while the other works. OpenBLAS' workers busy-wait
# after each GEMM (2^28 cycles by default) and halve the speed of the Numba
# kernel that follows: a separable conv measured 6.5 ms spinning, 4.5 ms with
# OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles), the whole network 100 -> 94 ms.
# OpenBLAS reads this once, when NumPy loads it, so it only helps when
# npxception is imported before NumPy (the `npxception` command always is).
# A user's own setting wins. OMP_WAIT_POLICY: see npxception/_jit.py.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
# Numba's parallel kernels run on GNU OpenMP here, whose threads spin-wait after
# each parallel region; they then steal both cores from the OpenBLAS threads of
# the GEMMs between kernels. Measured on 2 cores, one 299x299 image: 400-1700 ms
# spinning, 90 ms passive. libgomp reads this once, when Numba first starts its
# threads (the first parallel kernel, or numba.get_num_threads()), so it is set
# here, at package import, rather than next to the kernels: a caller that asked
# Numba for its thread count between the two imports measured 384 ms.
# A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "ops": "npxception.ops",
    "Xception": "npxception.model",
    "XceptionModel": "npxception.model",
    "load": "npxception.model",
    "predict": "npxception.prediction",
    "load_image": "npxception.images",
    "preprocess_input": "npxception.images",
    "decode_predictions": "npxception.labels",
    "get_file": "npxception.download",
    "compare": "npxception.compare",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if name == "ops" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'npxception' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
