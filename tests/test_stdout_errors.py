"""A stdout that cannot take the output is named, exit 1; `COMMAND --version` works (review 24, F9 and F12).

`npxception summary > /dev/full` said only "[Errno 28] No space left on device"; `npxception --version >
/dev/full` exited 0 (argparse ignores a failed write); `>&-` ended quietly with 141 as if a reader had
left (tests/test_cli.py::test_closed_stdout_is_named). A closed pipe (`| head`) still ends quietly, 141.
Subprocesses: the failures are the file descriptor's, which an in-process capture cannot have.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from npxception import __version__

NPX = [sys.executable, "-m", "npxception"]
WT = [sys.executable, "-m", "npxception.weights_tools"]
FULL = "cannot write to stdout: No space left on device"


def run(argv, stdout, **env):
    return subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300,
                          env={**os.environ, "NPXCEPTION_OFFLINE": "1", **env})


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux's (CI runs Linux)")
@pytest.mark.parametrize("unbuffered", ["1", ""])  # a write fails at once, or only at the final flush
def test_a_full_stdout_is_named(unbuffered):
    with open("/dev/full", "w") as full:
        for argv, prog in ((NPX + ["--version"], "npxception"), (NPX + ["summary"], "npxception"),
                           (NPX + ["summary", "--version"], "npxception"),
                           (WT + ["--version"], "python -m npxception.weights_tools")):
            proc = run(argv, full, PYTHONUNBUFFERED=unbuffered)
            assert (proc.returncode, proc.stderr) == (1, f"{prog}: error: {FULL}\n"), (argv, proc.stderr)


def test_a_closed_pipe_still_ends_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = run(NPX + ["summary"], write_end)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


@pytest.mark.parametrize("argv", [["predict"], ["summary"], ["convert"], ["compare"], ["show"], ["verify"],
                                  ["bench"], ["--debug", "summary"]])
def test_every_command_takes_version(argv, capsys):
    """F12: `npxception summary --version` was a usage error (exit 2) showing the top-level usage line."""
    from npxception.cli import main

    with pytest.raises(SystemExit, match="^0$"):  # argparse's exit after printing the version
        main([*argv, "--version"])
    assert capsys.readouterr().out == f"npxception {__version__}\n"


@pytest.mark.parametrize("command", ["convert", "inspect"])
def test_weights_tools_commands_take_version(command, capsys):
    from npxception.weights_tools.cli import main

    with pytest.raises(SystemExit, match="^0$"):
        main([command, "--version"])
    assert capsys.readouterr().out == f"npxception {__version__}\n"
