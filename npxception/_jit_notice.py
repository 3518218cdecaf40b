"""The one line a first run prints before Numba compiles npxception's kernels.

A cold compile takes ~7 s for the float32 kernels and another ~6-7 s for the
float64 ones (measured on 2 cores; docs/performance.md); without a word it
looks like a hang. Numba fires its ``numba:compile`` event only when a kernel
is not found in the on-disk cache (``Dispatcher.compile`` tries the cache
first), so a listener on that event knows the cache is cold without guessing
from file names. The notice is logged once per dtype per process on the
``npxception`` logger: the Python API stays quiet unless the caller configures
logging, and the CLI attaches a stderr handler (npxception/console.py).
"""

from __future__ import annotations

import logging

from numba.core import event, types

from . import _fork

log = logging.getLogger("npxception")

_announced: set[str] = set()
_lock = _fork.lock()


def _dtype_of(args) -> str:
    """"float64" if any array (or pointer) argument is float64, else "float32": the two kernel families."""
    for t in args:
        if isinstance(t, (types.Array, types.CPointer)) and t.dtype == types.float64:
            return "float64"
    return "float32"


def message(dtype: str, no_cache: str | None) -> str:
    """The notice; ``no_cache`` is None when the cache works, else why not (npxception._jit says)."""
    kernels = "kernels" if dtype == "float32" else "float64 kernels"
    if no_cache is None:
        # Each command compiles the kernels it runs (predict's are not verify's or summary's), so a fresh
        # install prints this once per command, and for the kernels of this run only (review 24, F11).
        return f"compiling the {kernels} this run needs, once (up to about 7 s); later runs load them from the cache"
    return f"compiling {kernels} (about 7 s); every run compiles, because {no_cache}"


def announce(dtype: str, no_cache: str | None) -> None:
    """Log the notice for ``dtype``'s kernels, the first time only."""
    with _lock:
        if dtype in _announced:
            return
        _announced.add(dtype)
    log.info(message(dtype, no_cache))


class _Listener(event.Listener):
    def __init__(self, no_cache: str | None):
        self.no_cache = no_cache

    def on_start(self, ev):
        dispatcher = ev.data.get("dispatcher")
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if not module.startswith("npxception"):  # someone else's Numba code in the same process
            return
        announce(_dtype_of(ev.data.get("args", ())), self.no_cache)

    def on_end(self, ev):
        pass


def install(no_cache: str | None) -> None:
    """Listen to Numba's compile events (called once, by npxception._jit)."""
    event.register("numba:compile", _Listener(no_cache))


def watch_cfunc(made, no_cache: str | None) -> None:
    """The same notice for a ``numba.cfunc``: its compile fires no event, so hook its cache miss.

    ``CFunc.compile`` calls ``_compile_uncached`` only when the cache had nothing.
    """
    uncached = made._compile_uncached

    def compile_uncached():
        announce(_dtype_of(made._sig.args), no_cache)
        return uncached()

    made._compile_uncached = compile_uncached
