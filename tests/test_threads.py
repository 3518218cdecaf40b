"""The hand-off of a kernel's shares to worker threads (npxception/fast/threads.py).

The fused layers' results are covered by tests/test_fast_kernels.py and
tests/test_fast_plan.py; here the hand-off itself: every share runs once, a
share's error reaches the caller, concurrent callers and forked children work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from npxception.fast import threads


def _count(t, counts):
    counts[t] += 1


@pytest.mark.parametrize("nt", [1, 2, 3, 5])
def test_every_share_runs_once(nt):
    counts = np.zeros(nt, int)
    for _ in range(3):
        threads.in_parallel(_count, nt, (counts,))
    assert counts.tolist() == [3] * nt


def _fail_on(t, bad):
    if t == bad:
        raise ValueError(f"share {t} failed")


@pytest.mark.parametrize("bad", [0, 1])
def test_a_share_error_reaches_the_caller_and_the_workers_stay_usable(bad):
    with pytest.raises(ValueError, match=f"share {bad} failed"):
        threads.in_parallel(_fail_on, 2, (bad,))
    counts = np.zeros(2, int)
    threads.in_parallel(_count, 2, (counts,))
    assert counts.tolist() == [1, 1]


def test_concurrent_callers_each_get_all_their_shares():
    """Two callers at once (two models in two threads): one takes the lock-pair workers, the other the executor."""
    nt, rounds = 3, 50
    results = {}

    def caller(name):
        counts = np.zeros(nt, int)

        def share(t):
            time.sleep(0.0005)  # long enough for the two callers to overlap
            counts[t] += 1
        for _ in range(rounds):
            threads.in_parallel(share, nt, ())
        results[name] = counts.tolist()

    workers = [threading.Thread(target=caller, args=(k,)) for k in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == {0: [rounds] * nt, 1: [rounds] * nt}


def test_a_forked_child_hands_off_to_its_own_workers():
    """A forked child has none of its parent's threads: it starts its own instead of waiting forever."""
    code = (
        "import os, numpy as np\n"
        "from npxception.fast import threads\n"
        "def share(t, c): c[t] += 1\n"
        "c = np.zeros(2, int); threads.in_parallel(share, 2, (c,))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    c = np.zeros(2, int); threads.in_parallel(share, 2, (c,))\n"
        "    os._exit(0 if c.tolist() == [1, 1] else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stdout + proc.stderr


class _InterruptedOnce:
    """A lock whose first acquire is interrupted, as by Ctrl-C while the caller waits."""

    def __init__(self, lock):
        self.lock, self.interrupted = lock, False

    def acquire(self):
        if not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return self.lock.acquire()

    def release(self):
        self.lock.release()


def test_a_ctrl_c_while_waiting_still_waits_for_the_share():
    """Otherwise the share's late 'done' would be taken by the next call's wait, which would then
    return while that call's share still runs."""
    worker = threads._Worker()
    worker.done = _InterruptedOnce(worker.done)
    counts = np.zeros(2, int)

    def slow(t, c):
        time.sleep(0.05)
        c[t] += 1
    worker.start(slow, 1, (counts,))
    with pytest.raises(KeyboardInterrupt, match="^$"):
        worker.wait()
    assert counts.tolist() == [0, 1]  # the share had finished when the interrupt was raised
    worker.start(slow, 1, (counts,))
    worker.wait()
    assert counts.tolist() == [0, 2]


@pytest.mark.parametrize("spin", [True, False])
@pytest.mark.parametrize("cycles", [1, threads.SPIN_CYCLES])
def test_every_share_runs_once_whether_the_sides_spin_or_sleep(monkeypatch, spin, cycles):
    """The spin (npxception/fast/spin.py) is only a hint before each lock wait: a spin that gives up at once
    (1 cycle), one that sees the flag, and none at all hand off the same jobs, in order."""
    monkeypatch.setattr(threads, "SPIN", spin)
    monkeypatch.setattr(threads, "SPIN_CYCLES", cycles)
    seen = []

    def share(t, k):
        if t == 1:
            seen.append(k)
    for k in range(200):
        threads.in_parallel(share, 2, (k,))
    assert seen == list(range(200))


def test_the_spin_sees_another_threads_store_and_gives_up_without_it():
    from npxception.fast import spin
    flags = np.zeros(16, np.int64)
    assert not spin.post_then_spin(flags, 15, 3, 0, 1, 100_000, 0)  # nobody stores: gives up
    assert flags[15] == 3  # its own post made first
    assert spin.post_then_spin(flags, 15, 0, 0, 0, 100_000, 1000)  # already there (then lingers)
    timer = threading.Timer(0.01, flags.__setitem__, (0, 5))
    timer.start()
    # ~10 ms later another thread stores 5; the budget (~4 s at 2.5-5 GHz) far exceeds that
    assert spin.post_then_spin(flags, 8, 7, 0, 5, 10**10, 0) and flags[8] == 7
    timer.join()
    assert spin.post_then_spin_reference(flags, 8, 9, 0, 5, 1, 1) and flags[8] == 9
    assert not spin.post_then_spin_reference(flags, 8, 9, 0, 6, 1, 1)


class _Muted:
    """A stand-in for a worker's ``go`` lock whose release does nothing: the worker, asleep on the real one, stays
    asleep, as one whose core another process holds."""

    def release(self):
        pass


def test_a_share_its_worker_has_not_begun_is_run_by_the_caller(monkeypatch):
    """The claim: the caller takes a share the worker has not begun, once; the worker, when it wakes, finds
    nothing left to run and runs the next share as before."""
    monkeypatch.setattr(threads, "SPIN", False)  # the worker sleeps on its lock at once
    worker = threads._Worker()
    deadline = time.monotonic() + 30
    while not worker.sleeping:
        assert time.monotonic() < deadline, "the worker never went to sleep"
        time.sleep(0.001)
    go, worker.go = worker.go, _Muted()
    ran = []

    def share(t, tag):
        ran.append((tag, t, threading.get_ident()))
    worker.start(share, 1, ("first",))
    job = worker.take()
    assert job is not None and worker.take() is None  # taken once
    job[0](job[1], *job[2])
    assert ran == [("first", 1, threading.get_ident())]
    worker.go = go
    go.release()  # the worker wakes late, to a share already run
    while not worker.sleeping:
        assert time.monotonic() < deadline, "the worker never went back to sleep"
        time.sleep(0.001)
    worker.start(share, 1, ("second",))
    worker.wait()
    assert ran[1][:2] == ("second", 1) and ran[1][2] != threading.get_ident() and len(ran) == 2


# ---- Ctrl-C during a pass (review 25) ----------------------------------------------------------------------------

class _Shares:
    """Shares that say when they run: ``active[t]`` while share t runs, ``counts[t]`` once it has, ``where[t]`` the
    thread. With ``wait_for_worker`` share 0 (the caller's) first waits until share 1 has begun on a worker, so the
    caller then waits for the worker rather than taking its share."""

    def __init__(self, nt, wait_for_worker):
        self.active, self.counts, self.where = np.zeros(nt, int), np.zeros(nt, int), [None] * nt
        self.begun, self.wait_for_worker = threading.Event(), wait_for_worker
        self.hold = None  # an Event share 1 waits for before it finishes, if set

    def __call__(self, t):
        self.active[t] = 1
        self.where[t] = threading.get_ident()
        if t == 1:
            self.begun.set()
            time.sleep(0.002)  # still running when the caller has finished its own share
            if self.hold is not None:
                assert self.hold.wait(30), "share 1 was never let go"  # 30 s: a safety net only
        elif t == 0 and self.wait_for_worker:
            assert self.begun.wait(30), "no worker began share 1"  # 30 s: a safety net on a loaded host
        self.counts[t] += 1
        self.active[t] = 0


def _lines(fn):
    import dis
    return sorted({line for _, line in dis.findlinestarts(fn.__code__) if line is not None})


def _interrupt_at(code, line):
    """A trace function raising KeyboardInterrupt once, as a Ctrl-C would, when ``code`` reaches ``line``."""
    fired = []

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == line and not fired:
            fired.append(1)
            raise KeyboardInterrupt
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is code else None
    return tracer, fired


def _check_the_pool_works(nt):
    """The next call runs every share once, share 1 on a live worker thread, not the caller."""
    shares = _Shares(nt, wait_for_worker=True)
    threads.in_parallel(lambda t: shares(t), nt, ())
    assert shares.counts.tolist() == [1] * nt and shares.where[1] != threading.get_ident()
    assert all(w.thread.is_alive() for w in threads._lock_workers)


@pytest.mark.parametrize("wait_for_worker", [True, False])
def test_a_ctrl_c_anywhere_in_the_hand_off_waits_for_the_shares_and_leaves_the_workers_alive(
        monkeypatch, wait_for_worker):
    """Review 25: a Ctrl-C raised just after the caller's spin (before its lock wait) left the worker's 'done'
    release untaken; the worker's next release raised 'release unlocked lock' and killed it, and a later wait
    could take the stale release while the worker still wrote. Here a KeyboardInterrupt is raised at each line
    of the caller's side of the hand-off in turn: it must reach the caller only when no share is running, and
    the pool must work after it."""
    died = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    nt = 3
    _check_the_pool_works(nt)
    targets = [threads._Worker.start, threads._Worker.take, threads._Worker.busy, threads._Worker.wait,
               threads._with_workers]
    fired_total = 0
    for fn in targets:
        for line in _lines(fn):
            shares = _Shares(nt, wait_for_worker)
            tracer, fired = _interrupt_at(fn.__code__, line)
            sys.settrace(tracer)
            try:
                threads.in_parallel(lambda t: shares(t), nt, ())
            except KeyboardInterrupt:
                sys.settrace(None)
                assert fired, f"{fn.__qualname__} line {line}: an interrupt nobody raised"
                assert not shares.active.any(), f"{fn.__qualname__} line {line}: a share still ran"
            finally:
                sys.settrace(None)
            if not fired:  # the line is not reached on this path (an error's handler, the executor's)
                assert shares.counts.tolist() == [1] * nt
            fired_total += bool(fired)
            _check_the_pool_works(nt)
    assert fired_total > 30  # the check above ran at that many places (the lines reached on this path)
    assert not died, died


_REAL_SIGINT = r"""
import os, signal, sys, threading, time
import numpy as np
import npxception
from npxception.fast import threads

signal.alarm(240)  # a hang ends the process without an answer
# a child of a backgrounded shell (CI's job) inherits SIGINT ignored, and Python then installs no handler
signal.signal(signal.SIGINT, signal.default_int_handler)
died = []
threading.excepthook = died.append
m = npxception.Xception(include_top=False, pooling=None, seed=1)
rng = np.random.default_rng(0)
X = rng.uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
want = m(X)
t0 = time.perf_counter(); m(X); dur = time.perf_counter() - t0
interrupted = wrong = 0
for i in range(40):
    timer = threading.Timer(rng.uniform(0, dur * 1.2), os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        m(X)
        timer.join()
    except KeyboardInterrupt:
        interrupted += 1
    while timer.is_alive():  # a SIGINT after the pass lands here, or nowhere
        try:
            timer.join()
        except KeyboardInterrupt:
            interrupted += 1
    time.sleep(0.01)
    try:
        wrong += not np.array_equal(m(X), want)
    except KeyboardInterrupt:  # the signal sent just as the pass ended
        interrupted += 1
        wrong += not np.array_equal(m(X), want)
alive = sum(w.thread.is_alive() for w in threads._lock_workers)
print("interrupted", interrupted, "wrong", wrong, "workers", len(threads._lock_workers), "alive", alive,
      "died", len(died))
"""


def test_real_ctrl_cs_during_passes_leave_the_model_exact_and_its_workers_alive():
    """40 SIGINTs at random points of a pass (sigint_rounds.py of review 25, which hung or lost the worker)."""
    proc = subprocess.run([sys.executable, "-c", _REAL_SIGINT], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    words = proc.stdout.split()
    assert proc.returncode == 0 and len(words) == 10, proc.stdout + proc.stderr
    counts = dict(zip(words[::2], map(int, words[1::2])))
    assert counts["wrong"] == 0 and counts["died"] == 0, proc.stdout + proc.stderr
    assert counts["interrupted"] >= 30, proc.stdout  # most SIGINTs fall inside a pass (1.2 pass lengths)
    assert counts["workers"] >= 1 and counts["alive"] == counts["workers"], proc.stdout
    assert "Exception in thread" not in proc.stderr, proc.stderr


class _Interrupted:
    """A worker's ``done`` lock whose first ``n`` waits are interrupted, as by Ctrl-Cs in a row."""

    def __init__(self, lock, n):
        self.lock, self.n, self.raised, self.all_raised = lock, n, 0, threading.Event()

    def acquire(self):
        if self.raised < self.n:
            self.raised += 1
            raise KeyboardInterrupt
        self.all_raised.set()
        return self.lock.acquire()

    def release(self):
        self.lock.release()


@pytest.mark.parametrize("interrupts", [2, 5])
def test_ctrl_cs_in_a_row_while_waiting_leave_once_the_share_has_finished(monkeypatch, interrupts):
    """A second (and later) Ctrl-C while the caller waits for a worker's share is folded into the first: the
    caller leaves with one KeyboardInterrupt once the share has finished, and the pool works after it. The first
    lands just after the spin (review 25's case), the others in the lock wait that follows."""
    died = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    monkeypatch.setattr(threads, "SPIN_CYCLES", 1)  # the spin gives up: the wait goes on to the lock
    _check_the_pool_works(2)
    worker = threads._lock_workers[0]
    monkeypatch.setattr(worker, "done", _Interrupted(worker.done, interrupts - 1))
    line = next(n for n in _lines(threads._Worker.wait) if "interrupted = None" in
                open(threads.__file__).read().split("\n")[n - 1])
    tracer, fired = _interrupt_at(threads._Worker.wait.__code__, line)
    shares = _Shares(2, wait_for_worker=True)
    shares.hold = worker.done.all_raised  # the worker's share runs until every interrupt was raised
    sys.settrace(tracer)
    try:
        with pytest.raises(KeyboardInterrupt, match="^$"):  # the injected interrupt carries no message
            threads.in_parallel(lambda t: shares(t), 2, ())
    finally:
        sys.settrace(None)
    assert fired and worker.done.raised == interrupts - 1
    assert not shares.active.any() and shares.counts.tolist() == [1, 1]
    _check_the_pool_works(2)
    assert not died, died
