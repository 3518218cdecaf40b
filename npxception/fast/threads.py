"""Running a kernel's shares at once: Python threads, each in a Numba function that releases the GIL.

Why not a Numba parallel loop (``prange``): it links the loop body's code (the
GEMM call, the epilogue, im2col) into a gufunc and compiles all of it again,
several seconds of the cold compile per kernel and dtype (docs/performance.md,
"Cold compile"); a hand-off costs tens of microseconds.

Every caller's shares are correct in any order (tests/test_fast_kernels.py runs
them forwards and backwards), so when no worker thread can be had (the
interpreter is shutting its thread pools down: a call from a thread that
outlives the main thread, or from an ``atexit`` handler) they run one after
another on the calling thread instead of failing.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

_pool = None
_pool_lock = threading.Lock()


def _forget_pool():
    global _pool, _pool_lock
    # a forked child has none of the parent's threads, and the lock may have been held by one of them
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _workers(n):
    """A pool with at least ``n`` worker threads; a smaller one is shut down once its work is done."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < n:
            old, _pool = _pool, concurrent.futures.ThreadPoolExecutor(n, thread_name_prefix="npxception")
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def in_parallel(part, nt, args):
    """``part(t, *args)`` for t in 0..nt-1 at once: t = 0 on this thread, the others on worker threads."""
    futures = []
    try:
        if nt > 1:
            pool = _workers(nt - 1)
            for t in range(1, nt):
                futures.append(pool.submit(part, t, *args))
    except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
        for t in range(len(futures) + 1, nt):  # the shares no worker took, here, one after another
            part(t, *args)
    try:
        part(0, *args)
    finally:
        for f in futures:
            f.result()
