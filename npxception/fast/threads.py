"""Running a kernel's shares at once: Python threads, each in a Numba function that releases the GIL.

Why not a Numba parallel loop (``prange``): it links the loop body's code (the
GEMM call, the epilogue, im2col) into a gufunc and compiles all of it again,
several seconds of the cold compile per kernel and dtype (docs/performance.md,
"Cold compile"); a hand-off costs tens of microseconds.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

_pool = None
_pool_lock = threading.Lock()


def _forget_pool():
    global _pool
    _pool = None  # a forked child has none of the parent's threads: start its own on first use


os.register_at_fork(after_in_child=_forget_pool)


def in_parallel(part, nt, args):
    """``part(t, *args)`` for t in 0..nt-1 at once: t = 0 on this thread, the others on worker threads."""
    global _pool
    if nt > 1 and (_pool is None or _pool._max_workers < nt - 1):
        with _pool_lock:
            if _pool is None or _pool._max_workers < nt - 1:
                _pool = concurrent.futures.ThreadPoolExecutor(nt - 1, thread_name_prefix="npxception")
    futures = [_pool.submit(part, t, *args) for t in range(1, nt)]
    try:
        part(0, *args)
    finally:
        for f in futures:
            f.result()
