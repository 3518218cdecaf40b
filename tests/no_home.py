"""A process with no home directory, on a read-only install (review 12, finding 1), for tests/test_*.

``docker run --user 54321`` gives a uid with no passwd entry and no ``HOME``, and
there ``pathlib.Path.home()`` raises. Tests run as root (whose passwd entry
exists, and who writes anywhere), so a child started with :func:`env` runs
:data:`PROLOGUE` first: ``pwd.getpwuid`` finds no entry, and the package folder
reads as unwritable (as a site-packages owned by root does for that uid).
"""

from __future__ import annotations

import os

PROLOGUE = r"""
import pathlib, pwd
def _no_entry(uid):
    raise KeyError(f"getpwuid(): uid not found: {uid}")
pwd.getpwuid = _no_entry
import npxception.paths as _paths
_real, _package = _paths._writable, pathlib.Path(_paths.__file__).resolve().parent
_paths._writable = lambda folder: not pathlib.Path(folder).resolve().is_relative_to(_package) and _real(folder)
"""


def env(base=None) -> dict:
    """``base`` (default os.environ) without HOME or any variable that names a cache folder."""
    return {k: v for k, v in (os.environ if base is None else base).items()
            if k not in ("HOME", "NUMBA_CACHE_DIR", "NPXCEPTION_HOME", "XDG_CACHE_HOME")}
