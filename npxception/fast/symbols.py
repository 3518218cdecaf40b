"""Kernels called by name: a function compiled once as a C-callable, bound to a symbol that other kernels call.

Numba links a callee's LLVM IR into each caller, then optimizes and generates
machine code for it again there (numba/core/codegen.py, CPUCodeLibrary.finalize):
the depthwise row and the pointwise GEMM were so rebuilt in each fused kernel,
most of the cold compile (docs/performance.md, "Cold compile"). Bound to a
symbol, each is compiled once per dtype and the kernels call that name, as they
call OpenBLAS (npxception/blas.py).
"""

from __future__ import annotations

import zlib

import llvmlite.binding as ll
import numba

from .. import _fork
from .._jit import cfunc

_bound: set = set()  # the symbols bound in this process
_bind_lock = _fork.lock()  # held for a compile: a child forked meanwhile binds again


def symbol_name(base, signature) -> str:
    """``base`` tagged with a checksum of the C ``signature`` its function is bound with. Numba re-validates a
    cached kernel against its own file only: a caller cached before an edit of the callee's signature in
    another file would call the new function with the old arguments; tagged, it names a symbol that no longer
    exists, which LLVM refuses when it loads the caller, instead of computing wrong (review 31, R1)."""
    return f"{base}_{zlib.crc32(str(signature).encode()):08x}"


def bind_symbol(symbol, signature, func, **options):
    """Compile (or load from the cache) ``func`` as a C-callable of ``signature`` and bind it to ``symbol``,
    once a process; idempotent. A kernel that calls the symbol (a ``types.ExternalFunction``) can only be
    compiled or loaded from the cache once it is bound: the Python wrapper of each such kernel binds first."""
    if symbol in _bound or numba.config.DISABLE_JIT:
        return
    with _bind_lock:
        if symbol not in _bound:
            fn = cfunc(signature, func, **options)
            ll.add_symbol(symbol, fn.address)
            _bound.add(symbol)
