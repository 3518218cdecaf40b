"""How tests run the ``npxception`` command: as installed, or through this interpreter.

The console script is on PATH when the package is pip-installed into an
activated venv (what CI does). Running ``.venv/bin/python -m pytest`` without
activating it leaves the script off PATH; the tests then run
``sys.executable -m npxception``, the same ``main()`` through the same
interpreter, with PYTHONPATH as the environment sets it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys


def command() -> list[str]:
    """argv prefix that runs npxception: the console script if on PATH, else ``python -m npxception``."""
    path = shutil.which("npxception")
    return [path] if path else [sys.executable, "-m", "npxception"]


def path_with_command(folder: pathlib.Path, env: dict) -> str:
    """A PATH on which ``npxception`` resolves, for shell lines that name it (e.g. the README's).

    Without the console script on PATH, ``folder`` gets a two-line ``npxception``
    that execs ``sys.executable -m npxception`` and goes first.
    """
    if shutil.which("npxception", path=env.get("PATH")):
        return env["PATH"]
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "npxception"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m npxception "$@"\n')
    shim.chmod(0o755)
    return f"{folder}{os.pathsep}{env.get('PATH', '')}"
