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

import no_home

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


# ---- review 12: real users' environments -----------------------------------------

NO_HOME_PROBE = no_home.PROLOGUE + r"""
import json
import npxception
import npxception._jit as jit
from npxception import pretrained
try:
    pretrained.imagenet_weights()
except OSError as exc:
    error = str(exc)
print(json.dumps({"no_cache": jit.NO_CACHE, "imagenet": error}))
"""


def test_no_home_directory_imports_and_says_what_to_set(tmp_path):
    """Review 12, finding 1: with no home directory (and a read-only install) `import npxception` raised
    "Could not determine home directory". Now kernels compile in memory, saying which variable gives
    them a cache, and only the weight cache, which needs a folder, asks for NPXCEPTION_HOME."""
    out = subprocess.run([sys.executable, "-c", NO_HOME_PROBE], capture_output=True, text=True,
                         env=no_home.env(), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"no_cache": "no home directory: set NUMBA_CACHE_DIR to a writable folder",
                      "imagenet": "no home directory: set NPXCEPTION_HOME to a writable folder"}


def test_unwritable_numba_cache_dir_is_named(tmp_path):
    """Review 12, finding 7a: an unwritable NUMBA_CACHE_DIR the user set was reported as "no writable
    cache folder", naming nothing. (Root writes anywhere, so the folder is under a regular file.)"""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    folder = blocker / "numba"
    env = dict(__import__("os").environ, NUMBA_CACHE_DIR=str(folder))
    out = subprocess.run([sys.executable, "-c", "import npxception._jit as j, npxception._jit_notice as n; "
                          "print(n.message('float32', j.NO_CACHE))"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == (f"compiling kernels (about 7 s); every run compiles, because NUMBA_CACHE_DIR="
                                  f"{folder} is not writable: set NUMBA_CACHE_DIR to a writable folder")


def test_a_kernel_cache_that_cannot_be_written_is_not_called_damaged(monkeypatch, capsys):
    """Review 12, finding 6: a full NUMBA_CACHE_DIR was reported as "a damaged Numba cache entry", and
    through warnings.warn, so the CLI printed Python's source line ("_damaged(cache, exc)") under it.
    The full disk is injected where numba writes its index; the CLI's stderr handler prints one line."""
    import errno

    import numba
    from numba.core import caching

    from npxception import _jit
    from npxception.console import _notices

    def full(self, overloads):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(caching.IndexDataCacheFile, "_save_index", full)
    monkeypatch.setattr(_jit, "_warned", False)

    def add_two(x):
        return x + 2

    kernel = _jit._guard_cache(numba.njit(cache=True)(add_two))
    with _notices("npxception"):
        assert kernel(1) == 3  # compiled in memory; the cache is optional
    err = capsys.readouterr().err
    folder = kernel._cache._cache_path
    assert err == (f"npxception: cannot write the kernel cache ({folder}: No space left on device); the kernels "
                   f"run compiled in memory. Free space in {folder} or set NUMBA_CACHE_DIR to a writable "
                   "folder\n"), err
