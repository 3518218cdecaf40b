"""Commands that messages suggest paste into a shell as one argument per path (review 24, finding 6).

`npxception predict --weights "dir with spaces/my model.keras" x.png` advised
`npxception convert dir with spaces/my model.keras -o model.npz`: four arguments where one was meant.
Each check splits the suggested command as a POSIX shell does (shlex.split) and finds the path whole.
"""

from __future__ import annotations

import re
import shlex

import pytest

import npxception
from npxception import shell

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"  # the first bytes of every HDF5 file: enough for the "convert it first" check


def _command(message: str, starts: str) -> list[str]:
    """The suggested command in ``message`` (from ``starts`` to the end or the closing backtick), as a shell splits it."""
    found = re.search(re.escape(starts) + r"[^`]*?(?=`|$)", message)
    assert found, message
    return shlex.split(found[0])


def test_arg_quotes_only_what_needs_it():
    assert shell.arg("model.npz") == "model.npz"
    assert shell.arg("dir with spaces/my model.keras") == "'dir with spaces/my model.keras'"
    assert shlex.split(shell.arg("it's $HOME.h5")) == ["it's $HOME.h5"]


def test_convert_it_first_quotes_the_path(tmp_path):
    path = tmp_path / "dir with spaces" / "my model.keras"
    path.parent.mkdir()
    path.write_bytes(HDF5_MAGIC + b"\0" * 64)
    with pytest.raises(ValueError, match="convert it first") as info:
        npxception.load(path)
    assert _command(str(info.value), "npxception convert") == ["npxception", "convert", str(path), "-o", "model.npz"]


def test_cli_predict_convert_it_first_quotes_the_path(tmp_path, capsys, monkeypatch):
    from npxception.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir with spaces").mkdir()
    (tmp_path / "dir with spaces" / "my model.keras").write_bytes(HDF5_MAGIC + b"\0" * 64)
    (tmp_path / "x.png").write_bytes(b"")  # never read: the weights are refused first
    assert main(["predict", "--weights", "dir with spaces/my model.keras", "x.png"]) == 1
    err = capsys.readouterr().err
    assert _command(err.strip(), "npxception convert")[:3] == ["npxception", "convert", "dir with spaces/my model.keras"]


def test_already_converted_suggests_predict_with_the_path_quoted(tmp_path):
    from npxception.weights_tools import ConversionError, convert

    path = tmp_path / "my weights.npz"
    npxception.Xception(include_top=False, input_shape=(71, 71, 3), seed=1).save(path, golden=False)  # no golden: faster, not read here
    with pytest.raises(ConversionError, match="already an npxception weight file") as info:
        convert(path, tmp_path / "out.npz")
    assert _command(str(info.value), "npxception predict")[:4] == ["npxception", "predict", "--weights", str(path)]
