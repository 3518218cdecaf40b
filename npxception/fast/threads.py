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

The hand-off itself: each worker waits on a bare lock, and releases another
when its share is done (:class:`_Worker`): about half the cost of
``concurrent.futures``' queue and futures (docs/performance.md, "Issue 15's
speed part"). One caller at a time uses those workers; a second, concurrent
caller (two models in two threads) takes the executor.

Before each lock wait, the waiting side first spins for about a millisecond,
GIL released, on a counter the other side posts (npxception/fast/spin.py):
within a forward pass the next share comes sooner than that, and a thread that
never slept needs no waking, which on the VM measured costs 30-175 us quiet and
milliseconds under load, twice per hand-off (docs/performance.md, "Issue 15,
2026-11-29 22:50-00:30 UTC: the idle gap"). The locks stay the protocol: a spin
that gives up changes nothing but the time.
"""

from __future__ import annotations

import _thread
import concurrent.futures
import os
import threading

import numba
import numpy as np

from . import spin

_pool = None
_pool_lock = threading.Lock()


SPIN = True  # spin (GIL-free, bounded) before sleeping on a lock; False: the locks alone (benchmarks' A/B)
SPIN_CYCLES = 3_000_000  # ~1 ms at 3 GHz: longer than a pass's gaps between steps, short after its last
LINGER_CYCLES = 50_000  # ~20 us: the worker, its job seen, waits for the caller to let the GIL go (spin.py)
_GO, _DONE, _NOTHING = 0, 8, 15  # flag indices (GO and DONE a cache line apart); the caller's wait posts nothing

_workers_busy = threading.Lock()  # held by the one caller using the lock-pair workers
_lock_workers: list = []


def _forget_pool():
    global _pool, _pool_lock, _workers_busy, _lock_workers
    # a forked child has none of the parent's threads, and the locks may have been held by one of them
    _pool, _pool_lock = None, threading.Lock()
    _workers_busy, _lock_workers = threading.Lock(), []


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


class _Worker:
    """A daemon thread that runs one share at a time: ``go`` released hands it a job, ``done`` hands it back."""

    def __init__(self):
        self.go = _thread.allocate_lock()
        self.done = _thread.allocate_lock()
        self.go.acquire()
        self.done.acquire()
        self.job = None
        self.error = None
        # flags[_GO] = jobs handed out, flags[_DONE] = jobs finished: a spinning side reads them (spin.py)
        self.flags = np.zeros(16, np.int64)
        self.jobs = 0
        threading.Thread(target=self._loop, name="npxception", daemon=True).start()

    def _loop(self):
        finished = 0
        while True:
            if SPIN:  # says this job is done (main may be spinning on it), then waits for the next
                _post_then_spin(self.flags, _DONE, finished, _GO, finished + 1, SPIN_CYCLES, LINGER_CYCLES)
            else:
                self.flags[_DONE] = finished
            self.go.acquire()
            part, t, args = self.job
            try:
                part(t, *args)
            except BaseException as exc:  # re-raised on the caller's thread
                self.error = exc
            self.job = None
            finished += 1
            self.done.release()

    def start(self, part, t, args):
        self.error = None
        self.job = (part, t, args)
        self.jobs += 1
        self.go.release()
        self.flags[_GO] = self.jobs  # after the release: a worker that saw it finds the lock free

    def wait(self):
        if SPIN:
            _post_then_spin(self.flags, _NOTHING, 0, _DONE, self.jobs, SPIN_CYCLES, 0)
        interrupted = None
        while True:  # a Ctrl-C must not leave ``done`` to be released into the next call's wait
            try:
                self.done.acquire()
                break
            except BaseException as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted
        if self.error is not None:
            error, self.error = self.error, None
            raise error


_post_then_spin = spin.post_then_spin_reference if numba.config.DISABLE_JIT else spin.post_then_spin


def in_parallel(part, nt, args):
    """``part(t, *args)`` for t in 0..nt-1 at once: t = 0 on this thread, the others on worker threads."""
    if nt > 1 and _workers_busy.acquire(blocking=False):
        try:
            while len(_lock_workers) < nt - 1:
                _lock_workers.append(_Worker())
        except RuntimeError:  # "can't create new thread at interpreter shutdown": the executor's fallbacks
            _workers_busy.release()
        else:
            try:
                _with_workers(part, nt, args)
            finally:
                _workers_busy.release()
            return
    _with_executor(part, nt, args)


def _with_workers(part, nt, args):
    started = []
    try:
        for t in range(1, nt):
            _lock_workers[t - 1].start(part, t, args)
            started.append(_lock_workers[t - 1])
        part(0, *args)
    finally:
        errors = []
        for w in started:  # every share is waited for: they write into the caller's arrays
            try:
                w.wait()
            except BaseException as exc:
                errors.append(exc)
    if errors:
        raise errors[0]


def _with_executor(part, nt, args):
    """:func:`in_parallel` on ``concurrent.futures``' pool (a concurrent caller, or no new thread to be had)."""
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
