"""A first run says why it is slow: one notice per kernel family, only when Numba's cache is cold.

Each case is a fresh process with its own empty ``NUMBA_CACHE_DIR``, so the
cache is really cold; it compiles one small kernel (ReLU) in float32 twice and
then in float64, which is enough for Numba's compile event to fire (the whole
network's ~7 s compile is not needed to test the notice). A ``numba.cfunc``
(the fast path's row kernel is one) fires no event, so it is hooked on its
cache miss; one small cfunc checks that too. The command line's stderr handler
is npxception.console.run's, as every CLI command uses it.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = r"""
import sys
import numpy as np
from npxception import ops
from npxception.console import run

def job(args):
    for dtype in (np.float32, np.float32, np.float64):
        ops.relu(np.linspace(-1, 1, 8, dtype=dtype).reshape(1, 2, 2, 2))
    return 0

def twice(x):
    return 2 * x

def c_job(args):
    from npxception._jit import cfunc
    assert cfunc("float32(float32)", twice).ctypes(1.5) == 3.0
    return 0

if sys.argv[1] == "cli":
    sys.exit(run("npxception", job, None, debug=True))
if sys.argv[1] == "cfunc":
    sys.exit(run("npxception", c_job, None, debug=True))
job(None)  # the Python API: no handler attached, so nothing may reach stderr
"""

# Review 24, F11: "once ... later runs start in under a second" was printed again by each other command on a
# fresh install (each compiles other kernels): the notice now speaks of this run's kernels.
NOTICES = ["npxception: compiling the kernels this run needs, once (up to about 7 s); later runs load them "
           "from the cache",
           "npxception: compiling the float64 kernels this run needs, once (up to about 7 s); later runs load "
           "them from the cache"]


def run_job(mode, cache, tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NPXCEPTION_HOME=str(tmp_path / "home"))
    script = tmp_path / "job.py"  # a file, not -c: Numba caches only functions with a source file
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), mode], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr.splitlines()


def test_cli_notices_once_per_dtype_on_a_cold_cache_only(tmp_path):
    cache = tmp_path / "numba"
    assert run_job("cli", cache, tmp_path) == NOTICES  # cold: float32 once, then float64 once
    assert list(cache.rglob("*.nbi"))  # the compiled kernels were cached...
    assert run_job("cli", cache, tmp_path) == []  # ...so the next run is silent


def test_python_api_stays_quiet(tmp_path):
    assert run_job("api", tmp_path / "numba", tmp_path) == []


def test_cfunc_compile_notices_too(tmp_path):
    cache = tmp_path / "numba"
    assert run_job("cfunc", cache, tmp_path) == NOTICES[:1]
    assert run_job("cfunc", cache, tmp_path) == []
