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
