"""Locks that a forked child finds released.

``os.fork`` copies only the thread that called it: a lock another thread held
at that moment stays held in the child, by a thread that does not exist there,
and the child's first use of it waits forever (review 25). The locks made here
are reinitialised in the child, as the standard library does for its own
(``logging``, ``concurrent.futures``) with the same private method. Only for
locks whose guarded state is still whole if the fork fell inside the section
(each user says why); per-model state is reset by npxception/network.py,
threads.py's pool by npxception/fast/threads.py.
"""

from __future__ import annotations

import os
import threading
import weakref

_LOCKS: "weakref.WeakSet" = weakref.WeakSet()


def lock() -> threading.Lock:
    """A ``threading.Lock``, released again in a forked child."""
    new = threading.Lock()
    _LOCKS.add(new)
    return new


def _release_in_child():
    for held in list(_LOCKS):
        held._at_fork_reinit()


os.register_at_fork(after_in_child=_release_in_child)
