"""Waiting without sleeping: a GIL-free spin on a flag, bounded in time, for the hand-off of npxception/fast/threads.py.

A thread that blocks on a lock sleeps in the kernel, and waking it again costs
30-175 us on the 2-core VM measured, milliseconds when other processes hold
the cores (docs/performance.md, "Issue 15, 2026-11-29 22:50-00:30 UTC: the idle gap"). Within a forward
pass the next share arrives within a few hundred microseconds, so the waiting
side first spins here, with the GIL released, reading ``flags[i]`` until it is
at least ``value``, having first posted its own news:

    post_then_spin(flags, post_i, post_value, i, value, cycles, linger):
        flags[post_i] = post_value
        True   if flags[i] >= value within ~cycles CPU cycles (then ~linger cycles more)
        False  otherwise (the caller then blocks on its lock)

``flags`` is an int64 array written by the other thread (a plain store: x86
and ARM make it visible; the load here is atomic, so it is read anew each
time). It is only a hint: the locks of threads.py stay the hand-off's whole
protocol, so a spin that gives up, or finds nothing, changes no result.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .._jit import njit

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


@intrinsic
def _load_acquire(typingctx, arr, i):
    """arr[i] read with an atomic acquire load (never hoisted out of the loop). arr: a C-contiguous int64 array."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.load_atomic(builder.gep(data, [args[1]]), "acquire", 8)
    return types.int64(arr, types.int64), codegen


@intrinsic
def _relax(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``: leaves the sibling hyper-thread the core); nothing elsewhere."""
    def codegen(context, builder, sig, args):
        if _X86:
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(ir.VoidType(), []))
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _cycles(typingctx):
    """The CPU's time-stamp counter on x86 (``rdtsc``); 0 elsewhere, and the spins then count their rounds.

    Only x86: on AArch64 LLVM reads ``PMCCNTR_EL0``, which Linux does not let
    user code read (the process would die of SIGILL).
    """
    def codegen(context, builder, sig, args):
        if not _X86:
            return ir.Constant(ir.IntType(64), 0)
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(fn, [])
    return types.int64(), codegen


@intrinsic
def _store_release(typingctx, arr, i, value):
    """arr[i] = value with an atomic release store. arr: a C-contiguous int64 array."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        builder.store_atomic(args[2], builder.gep(data, [args[1]]), "release", 8)
        return context.get_dummy_value()
    return types.void(arr, types.int64, types.int64), codegen


@njit(nogil=True)
def post_then_spin(flags, post_i, post_value, i, value, cycles, linger):
    """flags[post_i] = post_value; then True as soon as flags[i] >= value, after ~``linger`` cycles more;
    False after ~``cycles`` CPU cycles (or 2**20 rounds) without it.

    The store is made with the GIL already released: a thread spinning on it
    then finds the GIL free when it returns to Python, instead of sleeping on
    it until this one lets it go. The linger does the same the other way: the
    poster of flags[i] (Python, holding the GIL) enters its own GIL-free code a
    few microseconds after posting, and a thread that returned at once would
    sleep on the GIL until then. One function, not three: each compiles in ~0.3 s.
    """
    _store_release(flags, post_i, post_value)
    start = _cycles()
    rounds = 0
    while _load_acquire(flags, i) < value:
        rounds += 1
        if (rounds & 63) == 0 and (_cycles() - start > cycles or rounds > 1 << 20 and _cycles() == 0):
            return False
        _relax()
    start = _cycles()
    rounds = 0
    while _cycles() - start < linger and rounds < 1 << 16:
        rounds += 1
        _relax()
    return True


def post_then_spin_reference(flags, post_i, post_value, i, value, cycles, linger):
    """Plain-Python twin of :func:`post_then_spin` (``NUMBA_DISABLE_JIT=1``): the store and one look, no spin,
    as a lock wait follows."""
    flags[post_i] = post_value
    return bool(flags[i] >= value)
