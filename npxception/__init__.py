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

# Neither thread pool may spin while the other works (measurements: docs/performance.md,
# "Threads"). Both libraries read these once, at load, so they are set at package
# import, before NumPy or Numba's OpenMP layer can load; a user's own setting wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # OpenBLAS' workers busy-wait 2^28 cycles otherwise
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # GNU OpenMP's workers spin after each kernel otherwise

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
    "ActivationOverflow": "npxception.overflow",
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
