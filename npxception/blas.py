"""NumPy's own BLAS GEMM, callable from inside Numba kernels.

Why: a separable convolution is a depthwise pass, a GEMM and an epilogue. With
``np.matmul`` between two Numba kernels, every layer wakes two thread pools
(Numba's, then OpenBLAS') three times, and on this 2-core VM each wake-up costs
about 70 microseconds: with the tiles of the large entry-flow maps that is 230
wake-ups and ~15 ms per image. Calling GEMM from inside the kernel lets each
Numba thread take its own rows through depthwise -> GEMM -> epilogue while they
are in its cache, one parallel region per layer, with OpenBLAS single-threaded
so that our threads (npxception/fast/threads.py) are the only ones (no oversubscription).

What is found: the OpenBLAS that NumPy's wheels bundle ("scipy-openblas":
64-bit integers, symbols ``scipy_cblas_sgemm64_`` etc.), loaded by NumPy
already; we only look its symbols up. Any other BLAS (MKL, Accelerate, a
distribution's OpenBLAS) leaves :data:`AVAILABLE` False and the fast path uses
``np.matmul`` between its kernels instead (see npxception/fast/run.py). Setting
``NPXCEPTION_GEMM=numpy`` forces that fallback.

The symbols are declared to Numba as named external functions
(``types.ExternalFunction``) rather than ctypes pointers, so kernels that call
them can still be cached on disk: the cache refers to the name, and
:func:`llvmlite.binding.add_symbol` binds the name in each process. Under
``NUMBA_DISABLE_JIT=1`` (kernels run as Python, docs/debugging.md) the same
symbols are ctypes functions instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pathlib
import threading

import numpy as np

# CBLAS constants (cblas.h)
ROW_MAJOR = 101
NO_TRANS = 111

_SYMBOLS = {  # our name -> the scipy-openblas symbol (ILP64 interface)
    "npxception_sgemm": "scipy_cblas_sgemm64_",
    "npxception_dgemm": "scipy_cblas_dgemm64_",
}


def _candidates():
    """Where NumPy's wheels put their bundled OpenBLAS (Linux, macOS, Windows)."""
    root = pathlib.Path(np.__file__).resolve().parent
    for folder in (root.parent / "numpy.libs", root / ".dylibs"):  # Linux and Windows; macOS
        yield from sorted(glob.glob(str(folder / "*openblas*")))


def _find():
    """(library, reason): the loaded scipy-openblas with every symbol we need, or None and why not."""
    if os.environ.get("NPXCEPTION_GEMM", "").lower() == "numpy":
        return None, "NPXCEPTION_GEMM=numpy"
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            for symbol in (*_SYMBOLS.values(), "scipy_openblas_set_num_threads64_",
                           "scipy_openblas_get_num_threads64_"):
                getattr(lib, symbol)
        except (OSError, AttributeError):
            continue
        return lib, path
    return None, "NumPy's BLAS is not the bundled scipy-openblas"


_LIB, WHERE = _find()
AVAILABLE = _LIB is not None

if AVAILABLE:
    import llvmlite.binding as _ll
    import numba
    from numba import types as _t

    for _ours, _theirs in _SYMBOLS.items():
        _ll.add_symbol(_ours, ctypes.cast(getattr(_LIB, _theirs), ctypes.c_void_p).value)
    _get_threads = _LIB.scipy_openblas_get_num_threads64_
    _get_threads.restype = ctypes.c_int
    _set_threads = _LIB.scipy_openblas_set_num_threads64_
    _set_threads.argtypes = [ctypes.c_int]
    _set_threads.restype = None

    def _gemm_type(real):
        i32, i64, p = _t.int32, _t.int64, _t.voidptr
        return _t.void(i32, i32, i32, i64, i64, i64, real, p, i64, p, i64, real, p, i64)

    def _ctypes_gemm(symbol, real):
        """The same symbol, callable from Python: what the kernels call when they run as Python."""
        fn = getattr(_LIB, symbol)
        i32, i64, p = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p
        fn.argtypes = [i32, i32, i32, i64, i64, i64, real, p, i64, p, i64, real, p, i64]
        fn.restype = None
        return fn

    # cblas_?gemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc):
    # C = alpha * A @ B + beta * C, row-major, A (M, K), B (K, N), C (M, N) with row strides lda, ldb, ldc.
    if numba.config.DISABLE_JIT:
        # NUMBA_DISABLE_JIT=1 (docs/debugging.md) runs the kernels as Python, where calling an
        # ExternalFunction (a Numba type) builds a signature and computes nothing: the output stayed
        # uninitialised and model(x) gave NaN. So there the kernels call OpenBLAS through ctypes.
        sgemm = _ctypes_gemm(_SYMBOLS["npxception_sgemm"], ctypes.c_float)
        dgemm = _ctypes_gemm(_SYMBOLS["npxception_dgemm"], ctypes.c_double)
    else:
        sgemm = _t.ExternalFunction("npxception_sgemm", _gemm_type(_t.float32))
        dgemm = _t.ExternalFunction("npxception_dgemm", _gemm_type(_t.float64))
else:  # never called: npxception/fast/run.py checks AVAILABLE first
    sgemm = dgemm = None


_state_lock = threading.Lock()
_users = 0
_saved = 1


def _reset_in_child():
    """A child forked during a pass of another thread (review 25) has none of its users, the lock maybe held by
    one, and OpenBLAS on the 1 thread that pass set: the count those passes would have restored is restored."""
    global _state_lock, _users
    _state_lock = threading.Lock()
    if _users:
        _users = 0
        if _saved != 1:
            _set_threads(_saved)


os.register_at_fork(after_in_child=_reset_in_child)


@contextlib.contextmanager
def single_threaded():
    """OpenBLAS on one thread while we run: our threads each call it on their own rows.

    Process-wide (OpenBLAS has no per-thread setting in this build), so it is
    restored as soon as the last concurrent forward pass ends.
    """
    global _users, _saved
    if not AVAILABLE:
        yield
        return
    with _state_lock:
        if _users == 0:
            _saved = _get_threads()
            if _saved != 1:
                _set_threads(1)
        _users += 1
    try:
        yield
    finally:
        with _state_lock:
            _users -= 1
            if _users == 0 and _saved != 1:
                _set_threads(_saved)
