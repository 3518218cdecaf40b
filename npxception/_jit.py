"""Numba set-up shared by every kernel: where the compile cache lives, and `njit`.

Kernels compile with ``cache=True`` so that a second process does not pay the
compile again. Numba writes that cache next to the source file; on a read-only
install that fails with "cannot cache function ... no locator available"
(numba#5566). So before numba is first imported we make sure the cache has a
writable home: the user's ``NUMBA_CACHE_DIR`` if set, else the package folder
if writable, else ``$NPXCEPTION_HOME/numba`` (default ``~/.cache/npxception``).

Debugging a kernel: run with ``NUMBA_DISABLE_JIT=1`` and every ``@njit``
function becomes plain Python, so ``pdb`` / breakpoints work inside it.
"""

from __future__ import annotations

import os
import pathlib

from .paths import _writable, cache_home  # noqa: F401  (cache_home re-exported)


def _choose_cache_dir() -> bool:
    """Return whether kernels may use ``cache=True``; set ``NUMBA_CACHE_DIR`` if needed."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return _writable(pathlib.Path(os.environ["NUMBA_CACHE_DIR"]))
    package_dir = pathlib.Path(__file__).resolve().parent
    if _writable(package_dir / "__pycache__"):
        return True  # numba's default locator (next to the source) works
    fallback = cache_home() / "numba"
    if _writable(fallback):
        os.environ["NUMBA_CACHE_DIR"] = str(fallback)
        return True
    # Nowhere is writable: compile in memory in each process. Slower, but
    # ``cache=True`` would raise "no locator available" at import.
    return False


CACHE = _choose_cache_dir()

# OMP_WAIT_POLICY=PASSIVE is set in npxception/__init__.py, before anything
# can load Numba's OpenMP layer (which reads it once, when it is loaded).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402  (must follow the cache decision above)

prange = numba.prange


def njit(*args, **options):
    """``numba.njit`` with ``cache`` set by the decision above (never crashes on read-only installs)."""
    options["cache"] = CACHE
    return numba.njit(*args, **options)


# A one-line notice before the first cold compile (npxception/_jit_notice.py).
from . import _jit_notice  # noqa: E402

_jit_notice.install(CACHE)
