"""Numba set-up shared by every kernel: where the compile cache lives, and `njit`.

Kernels compile with ``cache=True`` so that a second process does not pay the
compile again. Numba writes that cache next to the source file; on a read-only
install that fails with "cannot cache function ... no locator available"
(numba#5566). So before numba is first imported we make sure the cache has a
writable home: the user's ``NUMBA_CACHE_DIR`` if set, else the package folder
if writable, else ``$NPXCEPTION_HOME/numba`` (default ``~/.cache/npxception``).
Numba's default (next to the source) is kept when it works, not replaced by the user folder:
the cache then belongs to its install (two versions never share one), a fresh NPXCEPTION_HOME
(tests, CI, a per-project home) does not recompile, and NUMBA_CACHE_DIR, which moves every
Numba library's cache in the process, is set only when needed. The cost, documented in
docs/debugging.md ("Where the compiled kernels are cached"): ``pip uninstall`` leaves those
cache files (~1.1 MB) in site-packages/npxception.

Debugging a kernel: run with ``NUMBA_DISABLE_JIT=1`` and every ``@njit``
function becomes plain Python, so ``pdb`` / breakpoints work inside it.
"""

from __future__ import annotations

import os
import pathlib

from .paths import NoHomeError, _writable, cache_home  # noqa: F401  (cache_home re-exported)


def _choose_cache_dir() -> str | None:
    """Set ``NUMBA_CACHE_DIR`` if needed; return None if kernels may use ``cache=True``, else why not.

    The reason ends the first-compile notice (npxception/_jit_notice.py), so it
    names the folder that failed and the variable that fixes it.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        chosen = pathlib.Path(os.environ["NUMBA_CACHE_DIR"])
        if _writable(chosen):
            return None
        return f"NUMBA_CACHE_DIR={chosen} is not writable: set NUMBA_CACHE_DIR to a writable folder"
    package_dir = pathlib.Path(__file__).resolve().parent
    if _writable(package_dir / "__pycache__"):
        return None  # numba's default locator (next to the source) works
    try:
        fallback = cache_home() / "numba"
    except NoHomeError:
        return "no home directory: set NUMBA_CACHE_DIR to a writable folder"
    if _writable(fallback):
        os.environ["NUMBA_CACHE_DIR"] = str(fallback)
        return None
    # Nowhere is writable: compile in memory in each process. Slower, but
    # ``cache=True`` would raise "no locator available" at import.
    return f"no writable cache folder ({fallback} is not): set NUMBA_CACHE_DIR to a writable folder"


NO_CACHE = _choose_cache_dir()  # None, or why every run compiles
CACHE = NO_CACHE is None

# OMP_WAIT_POLICY=PASSIVE is set in npxception/__init__.py, before anything
# can load Numba's OpenMP layer (which reads it once, when it is loaded).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402  (must follow the cache decision above)
from numba.core import sigutils  # noqa: E402
from numba.core.ccallback import CFunc  # noqa: E402

prange = numba.prange


def njit(*args, **options):
    """``numba.njit`` with ``cache`` set by the decision above (never crashes on read-only installs)."""
    options["cache"] = CACHE
    made = numba.njit(*args, **options)
    if args and callable(args[0]):  # @njit
        return _guard_cache(made)
    return lambda func: _guard_cache(made(func))  # @njit(...)


def cfunc(signature, func, **options):
    """``numba.cfunc(signature, cache=...)(func)`` with the cache decision and guard of :func:`njit`.

    Compiles now (or loads from the cache): call it on first use, not at import.
    """
    made = CFunc(func, sigutils.normalize_signature(signature), locals={}, options=options)
    _jit_notice.watch_cfunc(made, NO_CACHE)  # a first compile says so (npxception/_jit_notice.py)
    if CACHE:
        made.enable_caching()
        _guard_cache(made)
    made.compile()
    return made


# ---- a damaged cache is recompiled, never fatal ---------------------------------
# A truncated .nbc or a garbage .nbi (a full disk, a killed process, two
# versions sharing a folder) made numba raise "pickle data was truncated" on
# every later run until someone found the cache and deleted it. Now the
# damaged entry is warned about once, naming the folder, dropped, and the
# kernel compiled in memory (and cached afresh when the folder is writable).

_warned = False


def _guard_cache(dispatcher):
    cache = getattr(dispatcher, "_cache", None)
    if cache is None or not hasattr(cache, "load_overload"):
        return dispatcher
    load, save = cache.load_overload, cache.save_overload

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged entry
            _damaged(cache, exc)
            return None  # numba compiles when the cache has nothing

    def save_overload(sig, data):
        try:
            save(sig, data)
        except Exception as exc:  # noqa: BLE001 - compiled in memory already; the cache is optional
            _damaged(cache, exc)

    cache.load_overload, cache.save_overload = load_overload, save_overload
    return dispatcher


def _damaged(cache, exc) -> None:
    global _warned
    folder = getattr(cache, "_cache_path", "?")
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    if index:
        try:
            os.unlink(index)  # the damaged index; the next save writes a good one
        except OSError:
            pass
    if _warned:
        return
    _warned = True
    if isinstance(exc, OSError):  # a full disk, a read-only folder: nothing is damaged
        text = (f"cannot write the kernel cache ({exc.filename or folder}: {exc.strerror or exc}); the kernels "
                f"run compiled in memory. Free space in {folder} or set NUMBA_CACHE_DIR to a writable folder")
    else:
        text = (f"a damaged Numba cache entry in {folder} ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); recompiling. Deleting that folder clears the cache.")
    # A log line, not warnings.warn: the CLI prints it as one "npxception: ..." line (no
    # Python source line), and with no logging configured Python prints it to stderr.
    _jit_notice.log.warning(text)


# ---- a one-line notice before the first cold compile (npxception/_jit_notice.py) ----
from . import _jit_notice  # noqa: E402

_jit_notice.install(NO_CACHE)
