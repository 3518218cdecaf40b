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

Before each lock wait, the waiting side first spins for about 11 ms,
GIL released, on a counter the other side posts (npxception/fast/spin.py):
within a forward pass the next share comes sooner than that, and a thread that
never slept needs no waking, which on the VM measured costs 30-175 us quiet and
milliseconds under load, twice per hand-off (docs/performance.md, "Issue 15,
2026-11-29 22:50-00:30 UTC: the idle gap"). Under load a thread that sleeps
can lose its core when woken, and the other thread waits for it. With a 1 ms
spin, while another process's TensorFlow ran, our worker slept ~50 times a pass
and our threads waited 25-97 ms each a slow pass for a core, against ONNX
Runtime's ~4 ms (docs/performance.md, "Issue 15, 2026-11-30 19:35-21:05 UTC"). So the worker spins on for up to ~11 ms after a pass's
last share before it sleeps, as ONNX Runtime's pool spins ~25 ms after its
run. The locks stay the protocol: a spin that gives up changes nothing but the
time.

A share the worker has not begun by the time the caller has finished its own
is run by the caller (each share has a claim, :class:`_Worker`): a worker
woken late, or whose core another process's thread holds (ONNX Runtime's pool
spins ~25 ms after its run), no longer holds the step up (docs/performance.md,
"Issue 15, 2026-11-30 07:30-09:15 UTC").

A Ctrl-C (or any exception) during a call reaches the caller only once every
share begun has finished, since they write into the caller's arrays; a second
Ctrl-C while it waits is folded into the first, and the wait is bounded by the
shares (or by the worker's death). Review 25 found that a Ctrl-C raised just
after the caller's spin returned killed the worker thread ("release unlocked
lock") and could let a later wait return while a share still ran; the hand-off
now waits on facts (:class:`_Worker`) and retries its whole wait after an
interrupt (:func:`_with_workers`). The window left: a second interrupt in the
one line of its handler, or one just as ``in_parallel`` takes the workers
(later calls then use the executor: exact, slower).
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
SPIN_CYCLES = 30_000_000  # ~11.5 ms at this host's 2.6 GHz: never a sleep within a pass, even under load; shorter
# than the bench's 20 ms gap. A/B 30 M / 3 M: medians 0.855 and 0.922 (docs/performance.md, module docstring)
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


_WORKER, _CALLER = "worker", "caller"  # a share's claim: a list each side appends its name to; the first one wins


def _token(lock):
    """Release ``lock`` as a wake-up token: one already pending is left as it is (a second wake changes nothing)."""
    try:
        lock.release()
    except RuntimeError:  # "release unlocked lock": a token was already there
        pass


class _Worker:
    """A daemon thread that runs handed-out shares: :meth:`start` posts one, :meth:`take` lets the caller run it
    instead while the worker has not begun it, :meth:`wait` waits for the worker's run of it.

    Each share carries a claim: whoever claims it first runs the share, the worker or the caller, so a worker
    that is late (asleep, or its core held by another process's spinning thread) never holds the step up: the
    caller, its own share done, runs the worker's too (docs/performance.md, "Issue 15, 2026-11-30 07:30-09:15
    UTC"). Shares handed out are numbered; the worker runs the latest one it finds unclaimed, so one it missed
    needs no answer.

    What the caller waits for is a fact, not a lock's state: ``finished`` (the last share the worker ran) has
    reached the share's number, or the worker claimed nothing, or it is gone. The ``go`` and ``done`` locks are
    only wake-up tokens, released at most once pending (:func:`_token`). The claim is a list appended to in one
    step, so who won stays readable. Before review 25 ``done`` was released once per share and each release had
    to be taken: a Ctrl-C raised just after the caller's spin returned (before its lock wait) left one untaken,
    the worker's next release raised "release unlocked lock" and killed the thread (later calls ran on one
    thread), and a wait that found the stale release returned while the worker was still writing. Neither can
    happen now: a stale token only costs the waiter one more look at ``finished``.
    """

    def __init__(self):
        self.go = _thread.allocate_lock()  # a token released to wake the worker from its sleep
        self.done = _thread.allocate_lock()  # a token released after each share the worker ran
        self.sleep_lock = _thread.allocate_lock()  # orders the worker's going to sleep against a post
        self.go.acquire()
        self.done.acquire()
        self.sleeping = False
        self.job = None  # (number, claim, part, t, args) of the latest share handed out (kept once run)
        self.error = None
        self.finished = 0  # the number of the last share the worker ran (set before ``done`` is released)
        self.alive = True  # False once the thread has ended (a bug; a caller must not wait for it then)
        # flags[_GO] = the latest share's number, flags[_DONE] = the last the worker ran: a spinning side reads
        # them (spin.py)
        self.flags = np.zeros(16, np.int64)
        self.jobs = 0
        self.thread = threading.Thread(target=self._loop, name="npxception", daemon=True)
        self.thread.start()

    def _loop(self):
        try:
            self._serve()
        finally:
            self.alive = False
            _token(self.done)

    def _serve(self):
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
            if job is None or job[0] <= seen:  # taken by the caller meanwhile, or a stale token
                seen = max(seen, int(self.flags[_GO]))
                continue
            number, claim, part, t, args = job
            seen = number
            claim.append(_WORKER)
            if claim[0] is not _WORKER:  # the caller runs it
                continue
            try:
                part(t, *args)
            except BaseException as exc:  # re-raised on the caller's thread
                self.error = exc
            ran = self.finished = number
            _token(self.done)

    def start(self, part, t, args):
        self.error = None
        number = self.jobs + 1
        self.job = (number, [], part, t, args)
        self.jobs = number
        self.flags[_GO] = number  # after the job: a worker that saw it finds it
        with self.sleep_lock:
            if self.sleeping:
                _token(self.go)  # first: if a Ctrl-C lands between, the flag says to wake it again
                self.sleeping = False

    def take(self):
        """The latest share, if the worker has not begun it: (part, t, args), now the caller's to run; else None
        (also for a share already taken: it is handed out once)."""
        job = self.job
        if job is None or job[1]:
            return None
        job[1].append(_CALLER)
        return job[2:] if job[1][0] is _CALLER else None

    def busy(self):
        """Whether the latest share is the worker's (or may still become so) and not yet run."""
        job = self.job
        if job is None or not self.alive:
            return False
        claim = job[1]
        return (not claim or claim[0] is _WORKER) and self.finished < job[0]

    def wait(self):
        """Wait until the worker has run the latest share (unless the caller took it). A Ctrl-C meanwhile is raised
        after that. Returns at once when called again for the same share; raises the share's error once."""
        if SPIN and self.busy():
            _post_then_spin(self.flags, _NOTHING, 0, _DONE, self.job[0], SPIN_CYCLES, 0)
        interrupted = None
        while True:  # a Ctrl-C must not leave the worker writing into the caller's arrays
            try:
                while self.busy():
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
    """``part(t, *args)`` for t in 0..nt-1 at once: t = 0 on this thread, the others on worker threads.

    A Ctrl-C (or any exception) is raised once every share begun has finished: they write into the caller's
    arrays. A second Ctrl-C while waiting for them is not lost either: the caller leaves when they have
    finished (bounded: a share is a slice of one step) with the first, as one KeyboardInterrupt.
    """
    if nt > 1 and _workers_busy.acquire(blocking=False):
        try:
            _lock_workers[:] = [w for w in _lock_workers if w.alive]  # a worker that died is replaced
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
    workers = _lock_workers[:nt - 1]
    errors = []
    started = False
    # One try, retried whole after any exception (a Ctrl-C can land between any two steps; the shares are handed
    # out once, every other step is safe to repeat): only after every share begun has finished does an exception
    # leave. The loop's only way out other than that is a second interrupt inside the handler's one line.
    while True:
        try:
            if not started:
                started = True
                for t, w in enumerate(workers, 1):
                    w.start(part, t, args)
                part(0, *args)
            for w in workers:
                job = w.take() if CLAIM or errors else None
                if job is not None and not errors:  # not begun: run here (after an error, dropped)
                    job[0](job[1], *job[2])
                w.wait()
            break
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _with_executor(part, nt, args):
    """:func:`in_parallel` on ``concurrent.futures``' pool (a concurrent caller, or no new thread to be had).
    An exception leaves, as from :func:`_with_workers`, once every share submitted has finished."""
    futures = []
    errors = []
    started = False
    while True:  # retried whole after an exception, as in _with_workers
        try:
            if not started:
                started = True
                try:
                    if nt > 1:
                        pool = _workers(nt - 1)
                        for t in range(1, nt):
                            futures.append(pool.submit(part, t, *args))
                except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
                    for t in range(len(futures) + 1, nt):  # the shares no worker took, here, one after another
                        part(t, *args)
                part(0, *args)
            for f in futures:
                if not f.cancelled() and f.exception() is not None and not errors:  # waits; the share's error
                    errors.append(f.exception())
            break
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
