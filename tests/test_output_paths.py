"""Where a write lands when the output path is not a plain new name (npxception.untrusted.output_target).

Review 17, finding 1: `verify --report link.json` replaced the symlink with a regular file (its target
never written), `--report fifo.png` swapped the FIFO for a file, and a link to /proc/self/fd/1 became a
9 KB file instead of reaching stdout. Every writer goes through atomic_write, so these cases are its.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import threading

import pytest

from npxception.untrusted import IrregularFileError, atomic_write

REPO = str(pathlib.Path(__file__).resolve().parents[1])


def write(data: bytes):
    return lambda f: f.write(data)


def test_a_symlink_is_followed_and_kept(tmp_path):
    (tmp_path / "target.json").write_text("old")
    (tmp_path / "link.json").symlink_to("target.json")
    atomic_write(tmp_path / "link.json", write(b"new"))
    assert (tmp_path / "link.json").is_symlink()
    assert (tmp_path / "target.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "target.json"]  # no partial left


def test_a_dangling_symlink_creates_its_target_beside_it(tmp_path):
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    (tmp_path / "link.json").symlink_to(sub / "made.json")
    atomic_write(tmp_path / "link.json", write(b"made"))
    assert (tmp_path / "link.json").is_symlink()
    assert (sub / "made.json").read_text() == "made"
    assert [p.name for p in sub.iterdir()] == ["made.json"]  # the partial was beside the target, and is gone


def test_a_symlink_to_a_directory_or_a_missing_folder_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "to_dir").symlink_to("d")
    with pytest.raises(IsADirectoryError, match="to_dir: cannot write: it is a directory"):
        atomic_write(tmp_path / "to_dir", write(b"x"))
    (tmp_path / "to_nowhere").symlink_to("missing/x.json")
    with pytest.raises(FileNotFoundError, match="where the link .*to_nowhere points"):
        atomic_write(tmp_path / "to_nowhere", write(b"x"))
    assert (tmp_path / "to_dir").is_symlink() and (tmp_path / "to_nowhere").is_symlink()
    assert list((tmp_path / "d").iterdir()) == []


def test_a_fifo_is_written_to_not_replaced(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write(fifo, write(b"through the pipe"))
    reader.join(60)
    assert got == [b"through the pipe"]
    assert fifo.is_fifo()
    assert [p.name for p in tmp_path.iterdir()] == ["fifo.png"]


def test_dev_null_is_written_to(tmp_path):
    atomic_write("/dev/null", write(b"x"))
    assert pathlib.Path("/dev/null").is_char_device()


def test_a_socket_is_refused_by_name(tmp_path):
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        with pytest.raises(IrregularFileError, match="sock: cannot write: it is a socket; expected a file"):
            atomic_write(path, write(b"x"))
    assert not path.is_file()


WRITER = """
import sys
from npxception.untrusted import atomic_write
print("printed first")
atomic_write(sys.argv[1], lambda f: f.write(b"the report\\n"))
print("printed after")
"""


@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", "link"])
@pytest.mark.parametrize("stdout_kind", ["file", "pipe"])
def test_a_descriptor_link_reaches_the_stream_in_order(tmp_path, name, stdout_kind):
    """`--report /dev/stdout > out.txt` and `| reader`: the report lands in the stream after what was
    printed, and the shell's file is neither replaced (renaming over it cut off the rest of the output)
    nor truncated. `link`: a symlink to /proc/self/fd/1, reviewer 17's stdout_link.json."""
    if name == "link":
        (tmp_path / "link").symlink_to("/proc/self/fd/1")
        name = str(tmp_path / "link")
    env = dict(os.environ, PYTHONPATH=REPO)
    out = tmp_path / "out.txt"
    if stdout_kind == "file":
        with open(out, "wb") as f:
            subprocess.run([sys.executable, "-c", WRITER, name], stdout=f, env=env, check=True, timeout=120)
        text = out.read_text()
    else:
        text = subprocess.run([sys.executable, "-c", WRITER, name], stdout=subprocess.PIPE, env=env,
                              check=True, timeout=120).stdout.decode()
    assert text == "printed first\nthe report\nprinted after\n"
    if name.endswith("link"):
        assert (tmp_path / "link").is_symlink()
