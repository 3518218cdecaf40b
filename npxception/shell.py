"""Commands that messages suggest, written so that pasting them into a shell runs them as meant.

A path with a space or a quote (``dir with spaces/my model.keras``) printed bare in
``npxception convert PATH -o model.npz`` splits into several arguments when pasted; every
suggested command quotes its paths through :func:`arg` (POSIX shell quoting, ``shlex.quote``:
a plain path stays as it is).
"""

from __future__ import annotations

import os
import shlex


def arg(value: str | os.PathLike) -> str:
    """``value`` as one shell word: ``my model.keras`` -> ``'my model.keras'``; ``model.npz`` unchanged."""
    return shlex.quote(os.fspath(value))
