"""The Numba cache on a read-only install falls back to a user cache directory, never crashes.

As root (CI) a chmod'ed folder stays writable, so the read-only package folder
is simulated by making ``_writable`` say no for it, in a fresh process, before
``npxception._jit`` decides. A kernel is then compiled and its cache files must
appear in the fallback folder.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

PROBE = r"""
import json, os, pathlib, sys
import npxception.paths as paths
real = paths._writable
package = pathlib.Path(paths.__file__).resolve().parent
def fake(folder):
    if {mode!r} == "nothing" or pathlib.Path(folder).resolve().is_relative_to(package):
        return False
    return real(folder)
paths._writable = fake
import numpy as np
import npxception._jit as jit
from npxception import fast
x = np.zeros((1, 4, 4, 2), np.float32)
out = np.empty((16, 2), np.float32)
fast.depthwise3x3_same(x, np.ones((3, 3, 2), np.float32), out, True)
print(json.dumps({{"cache": jit.CACHE, "dir": os.environ.get("NUMBA_CACHE_DIR")}}))
"""


def _run(mode, home, tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NPXCEPTION_HOME"] = str(home)
    out = subprocess.run([sys.executable, "-c", PROBE.format(mode=mode)], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_read_only_package_uses_user_cache(tmp_path):
    home = tmp_path / "home"
    report = _run("package", home, tmp_path)
    assert report["cache"] is True
    assert report["dir"] == str(home / "numba")
    cached = list(pathlib.Path(report["dir"]).rglob("*.nbi"))
    assert cached, "no Numba cache index written to the fallback folder"


def test_nowhere_writable_still_runs(tmp_path):
    report = _run("nothing", tmp_path / "home", tmp_path)
    assert report["cache"] is False  # compiled in memory; no crash at import or call


# A tiny kernel made with npxception's own njit, in a module file (Numba caches only
# file-backed functions): it goes through the same cache guard as every real kernel,
# and compiles in well under a second.
KERNEL_MODULE = """
from npxception._jit import njit


@njit
def add_one(x):
    return x + 1
"""
KERNEL = "import probe_kernel; print(probe_kernel.add_one(1))"


def _kernel_run(tmp_path, cache_dir):
    (tmp_path / "probe_kernel.py").write_text(KERNEL_MODULE)
    env = dict(__import__("os").environ, NUMBA_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = str(tmp_path) + __import__("os").pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-W", "always", "-c", KERNEL], capture_output=True, text=True,
                          env=env, cwd=tmp_path)


def test_damaged_cache_is_recompiled_with_one_warning(tmp_path):
    """A truncated .nbc, then a garbage .nbi: each run still works, warns naming the folder, and heals."""
    cache = tmp_path / "numba"
    first = _kernel_run(tmp_path, cache)
    assert first.returncode == 0 and "damaged" not in first.stderr, first.stderr[-2000:]
    assert list(cache.rglob("*.nbc")), "nothing was cached"
    for damage in ("truncate-data", "garbage-index"):
        if damage == "truncate-data":
            for f in cache.rglob("*.nbc"):
                f.write_bytes(f.read_bytes()[:20])
        else:
            for f in cache.rglob("*.nbi"):
                f.write_bytes(b"garbage\n")
        hurt = _kernel_run(tmp_path, cache)
        assert hurt.returncode == 0 and hurt.stdout.strip() == "2", hurt.stderr[-2000:]
        assert hurt.stderr.count("damaged Numba cache") == 1 and str(cache) in hurt.stderr, hurt.stderr[-2000:]
        healed = _kernel_run(tmp_path, cache)
        assert healed.returncode == 0 and "damaged" not in healed.stderr, healed.stderr[-2000:]
