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

A share the worker has not begun by the time the caller has finished its own
is run by the caller (each share has a claim, :class:`_Worker`): a worker
woken late, or whose core another process's thread holds (ONNX Runtime's pool
spins ~25 ms after its run), no longer holds the step up (docs/performance.md,
"Issue 15, 2026-11-30 07:30-09:15 UTC").
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
CLAIM = True  # the caller runs a share its worker has not begun (_Worker); False: waits for it (A/B)
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
    """A daemon thread that runs handed-out shares: :meth:`start` posts one, :meth:`take` lets the caller run it
    instead while the worker has not begun it, :meth:`wait` waits for the worker's run of it.

    Each share carries a claim (a lock taken without blocking): whoever takes it first runs the share, the
    worker or the caller, so a worker that is late (asleep, or its core held by another process's spinning
    thread) never holds the step up: the caller, its own share done, runs the worker's too
    (docs/performance.md, "Issue 15, 2026-11-30 07:30-09:15 UTC"). Shares handed out are numbered; the
    worker runs the latest one it finds unclaimed, so one it missed needs no answer.
    """

    def __init__(self):
        self.go = _thread.allocate_lock()  # released to wake the worker from its sleep (only then)
        self.done = _thread.allocate_lock()  # released once for each share the worker ran
        self.sleep_lock = _thread.allocate_lock()  # orders the worker's going to sleep against a post
        self.go.acquire()
        self.done.acquire()
        self.sleeping = False
        self.job = None  # (number, claim, part, t, args) of the latest share handed out
        self.error = None
        # flags[_GO] = the latest share's number, flags[_DONE] = the last the worker ran: a spinning side reads
        # them (spin.py)
        self.flags = np.zeros(16, np.int64)
        self.jobs = 0
        threading.Thread(target=self._loop, name="npxception", daemon=True).start()

    def _loop(self):
        seen = ran = 0
        while True:
            # says its last share is done (the caller may be spinning on it), then waits for a newer one
            if not (SPIN and _post_then_spin(self.flags, _DONE, ran, _GO, seen + 1, SPIN_CYCLES, LINGER_CYCLES)):
                self.flags[_DONE] = ran
                with self.sleep_lock:
                    asleep = self.flags[_GO] <= seen
                    self.sleeping = asleep
                if asleep:
                    self.go.acquire()
            job = self.job
            if job is None or job[0] <= seen:  # taken by the caller (and cleared) meanwhile
                seen = max(seen, int(self.flags[_GO]))
                continue
            number, claim, part, t, args = job
            seen = number
            if not claim.acquire(False):  # the caller runs it
                continue
            try:
                part(t, *args)
            except BaseException as exc:  # re-raised on the caller's thread
                self.error = exc
            self.job = None
            ran = number
            self.done.release()

    def start(self, part, t, args):
        self.error = None
        self.jobs += 1
        self.job = (self.jobs, _thread.allocate_lock(), part, t, args)
        self.flags[_GO] = self.jobs  # after the job: a worker that saw it finds it
        with self.sleep_lock:
            if self.sleeping:
                self.sleeping = False
                self.go.release()

    def take(self):
        """The latest share, if the worker has not begun it: (part, t, args), now the caller's to run; else None."""
        job = self.job
        if job is None or job[0] != self.jobs or not job[1].acquire(False):
            return None
        self.job = None
        return job[2:]

    def wait(self):
        """Wait until the worker has run the latest share (which it has claimed)."""
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
    errors = []
    try:
        for t in range(1, nt):
            _lock_workers[t - 1].start(part, t, args)
            started.append(_lock_workers[t - 1])
        part(0, *args)
    except BaseException as exc:
        errors.append(exc)
    for w in started:  # every share the worker took is waited for: they write into the caller's arrays
        job = w.take() if CLAIM or errors else None
        if job is not None:  # not begun: run here (after an error, dropped)
            if not errors:
                try:
                    job[0](job[1], *job[2])
                except BaseException as exc:
                    errors.append(exc)
            continue
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
