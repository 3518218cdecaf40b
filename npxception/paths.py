"""Where npxception keeps its files: one cache home shared by every module.

``NPXCEPTION_HOME``, then ``$XDG_CACHE_HOME/npxception``, then
``~/.cache/npxception`` (the XDG base-directory convention, as torch.hub and
huggingface_hub follow). This module imports nothing heavy (no numba), so the
downloader and the weight cache can use it without starting the JIT.
"""

from __future__ import annotations

import os
import pathlib
import tempfile


class NoHomeError(OSError):
    """There is no home directory to put the cache in, and ``NPXCEPTION_HOME`` is not set.

    A uid without a passwd entry and no ``HOME`` (``docker run --user 54321``,
    some CI runners): ``pathlib.Path.home()`` raises RuntimeError there. An
    OSError, because every caller already treats an unusable cache folder as one.
    """


NO_HOME = "no home directory: set NPXCEPTION_HOME to a writable folder"


def cache_home() -> pathlib.Path:
    """``NPXCEPTION_HOME``, then ``$XDG_CACHE_HOME/npxception``, then ``~/.cache/npxception``.

    Raises NoHomeError when none is set and there is no home directory.
    """
    try:  # expanduser too: NPXCEPTION_HOME=~/x needs a home directory
        if os.environ.get("NPXCEPTION_HOME"):
            return pathlib.Path(os.environ["NPXCEPTION_HOME"]).expanduser()
        if os.environ.get("XDG_CACHE_HOME"):
            return pathlib.Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "npxception"
        return pathlib.Path.home() / ".cache" / "npxception"
    except (RuntimeError, KeyError):  # RuntimeError: "Could not determine home directory."
        raise NoHomeError(NO_HOME) from None


def _writable(folder: pathlib.Path) -> bool:
    """Whether ``folder`` exists (created if needed) and accepts a new file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        return True
    except OSError:
        return False
