"""The command line against hostile or careless arguments: outputs that are inputs, file names
that are not UTF-8, symbolic-link loops, bad option values (review 2, F6, F7, F9).

In process, through ``npxception.cli.main``: each case's refusal comes before the work, so no
forward pass runs except where a case needs predictions (a 71x71, 3-class model).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import types
import zipfile

import numpy as np
import pytest
from PIL import Image

from npxception import cli


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 3-class 71x71 model saved with its golden, and three photos."""
    import npxception

    d = tmp_path_factory.mktemp("small")
    npxception.Xception(classes=3, input_shape=(71, 71, 3), seed=5).save(d / "small.npz")
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (80, 90, 3), np.uint8)).save(d / name)
    return d


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run_cli(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- F6: outputs that are inputs

def copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def test_verify_report_onto_the_checked_file_is_refused(small, tmp_path, capsys, monkeypatch):
    """`verify w.npz --report w.npz` replaced 83 MB of weights with 9 kB of JSON."""
    from npxception import verify

    weights = copy(small / "small.npz", tmp_path / "w.npz")
    link = tmp_path / "link.json"
    link.symlink_to(weights)
    before = digest(weights)
    ran = []
    monkeypatch.setattr(verify, "verify_file", lambda *a, **k: ran.append(a))  # refused before any check
    for report in (weights, link):
        code, out, err = run_cli(capsys, "verify", weights, "--report", report)
        assert code == 1 and f"{report}: cannot write: it is also an input of this command ({weights})" in err, err
        assert "expected a different output path" in err
    assert ran == [] and digest(weights) == before and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "w.npz"]  # no partial left


def test_verify_report_into_a_directory_is_refused_before_the_work(small, tmp_path, capsys, monkeypatch):
    """It ran the whole verification, then failed at the rename: "[Errno 21] Is a directory"."""
    from npxception import verify

    ran = []
    monkeypatch.setattr(verify, "verify_file", lambda *a, **k: ran.append(a))
    code, out, err = run_cli(capsys, "verify", small / "small.npz", "--report", tmp_path)
    assert code == 1 and f"{tmp_path}: cannot write: it is a directory; expected the path of a file" in err, err
    assert ran == []


def test_show_onto_its_photo_is_refused(small, tmp_path, capsys):
    """`show --layer block1_conv1 -o photo.png photo.png` replaced the photo with the picture."""
    photo = copy(small / "a.png", tmp_path / "photo.png")
    before = digest(photo)
    code, out, err = run_cli(capsys, "show", "--layer", "block1_conv1", "--weights", small / "small.npz",
                             "-o", photo, photo)
    assert code == 1 and f"{photo}: cannot write: it is also an input of this command" in err, err
    assert digest(photo) == before


def test_convert_onto_its_config_is_refused(small, tmp_path, capsys):
    """The one .npz a conversion reads besides its source is none; a --config is refused as output
    like any input (here named .npz, so that the suffix rule lets it through)."""
    config = copy(small / "small.npz", tmp_path / "config.npz")
    before = digest(config)
    code = cli.main(["convert", str(small / "small.npz"), "--config", str(config), "-o", str(config)])
    err = capsys.readouterr().err
    assert code == 1 and f"{config}: cannot write: it is also an input" in err, err
    assert digest(config) == before


def test_compare_plot_onto_an_input_is_refused(small, tmp_path, capsys):
    theirs = copy(small / "small.npz", tmp_path / "theirs.npz")
    before = digest(theirs)
    code, out, err = run_cli(capsys, "compare", "--weights", small / "small.npz", "--against", theirs,
                             "--plot", theirs)
    assert code == 1 and f"{theirs}: cannot write: it is also an input" in err, err
    assert digest(theirs) == before


def test_bench_json_and_size_are_checked_before_tensorflow(tmp_path, capsys, monkeypatch):
    """--size 0, -5 or 5000 and an unwritable --json were refused after TensorFlow's import and
    Keras' build (~20 s); now before bench's module is even imported."""
    from npxception import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("bench ran"))
    for size in ("0", "-5", "5000", "7.5"):
        with pytest.raises(SystemExit, match="^2$") as exc:  # argparse's usage error; its message is on stderr
            cli.main(["bench", "--size", size])
        assert exc.value.code == 2
        assert f"--size: expected an integer from 71 to 2048, found '{size}'" in capsys.readouterr().err
    code, out, err = run_cli(capsys, "bench", "--against", "--json", tmp_path / "missing" / "b.json")
    assert code == 1 and "the directory" in err and "does not exist" in err, err
    code, out, err = run_cli(capsys, "bench", "--against", "--json", tmp_path)
    assert code == 1 and "it is a directory" in err, err


def test_bench_gap_is_checked_and_passed_in_seconds(capsys, monkeypatch):
    """--gap MS: the idle time before each timed call, refused outside 0..1000 ms (a NaN included) before
    anything is built, and handed to the run in seconds; the run records it in its results."""
    from npxception import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("bench ran"))
    for gap in ("-1", "1001", "nan", "soon"):
        with pytest.raises(SystemExit, match="^2$"):
            cli.main(["bench", "--gap", gap])
        assert f"--gap: expected milliseconds from 0 to 1000, found '{gap}'" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr(bench, "run", lambda *a, **k: seen.update(k) or {"runs": []})
    monkeypatch.setitem(sys.modules, "keras", sys.modules.get("keras") or types.ModuleType("keras"))
    assert cli.main(["bench", "--gap", "50"]) == 0
    assert seen["gap"] == pytest.approx(0.05)
    assert cli.main(["bench"]) == 0 and seen["gap"] is None  # the run's own default, bench.GAP_S


# --------------------------------------------------------------------------- F7: names that are not UTF-8

@pytest.fixture(scope="module")
def odd_names(small, tmp_path_factory):
    """A folder of a.png, b<0xff 0xfe>.png (not UTF-8) and c.png."""
    d = tmp_path_factory.mktemp("odd")
    for name in (b"a.png", b"b\xff\xfe.png", b"c.png"):
        src = small / ("a.png" if name != b"c.png" else "c.png")
        with open(os.path.join(os.fsencode(d), name), "wb") as f:
            f.write(src.read_bytes())
    return d


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "table"])
def test_predict_names_that_are_not_utf8(small, odd_names, capsys, monkeypatch, fmt):
    """Under a UTF-8 locale (stdout strict), `predict --format csv` printed a.png's row, then
    stopped: "'utf-8' codec can't encode characters ... surrogates not allowed", c.png never
    reported. JSON printed \\udcff escapes, which strict parsers refuse. Every format now writes
    the name's bytes escaped, b\\xff\\xfe.png, as the table did."""
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="\n")
    monkeypatch.setattr(sys, "stdout", stdout)
    code = cli.main(["predict", "--weights", str(small / "small.npz"), "--format", fmt, "--top", "1",
                     "--no-progress", str(odd_names)])
    stdout.flush()
    err = capsys.readouterr().err
    assert code == 0, err
    text = raw.getvalue().decode("utf-8")  # strict: all of it is UTF-8
    odd = os.path.join(str(odd_names), "b\\xff\\xfe.png")
    files = {"csv": lambda: [row.split(",")[0] for row in text.splitlines()[1:]],
             "json": lambda: [e["file"] for e in json.loads(text)],
             "jsonl": lambda: [json.loads(line)["file"] for line in text.splitlines()],
             "table": lambda: [line for line in text.splitlines() if not line.startswith(" ")]}[fmt]()
    assert files == [os.path.join(str(odd_names), "a.png"), odd, os.path.join(str(odd_names), "c.png")], text
    if fmt in ("json", "jsonl"):  # review 24, F10: the escape alone reads as a file named b\xff\xfe.png
        entries = json.loads(text) if fmt == "json" else [json.loads(line) for line in text.splitlines()]
        assert [bytes.fromhex(e["file_hex"]) if "file_hex" in e else None for e in entries] == [
            None, os.path.join(os.fsencode(odd_names), b"b\xff\xfe.png"), None]


def edited(src, dst, edit, extra=None):
    """A copy of the .npz ``src`` whose manifest ``edit(manifest)`` changed, with ``extra`` members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "__manifest__.npy":
                manifest = json.loads(str(np.load(io.BytesIO(data))))
                edit(manifest)
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.array(json.dumps(manifest)))
                data = buf.getvalue()
            zout.writestr(info, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


def test_json_labels_with_lone_surrogates(small, tmp_path, capsys):
    """A manifest's JSON can hold "\\udcff" in a label: printed as it was, a strict parser refused it."""
    bad = edited(small / "small.npz", tmp_path / "labels.npz",
                 lambda m: m.update(labels=["x\udcffy", "\ud800", "ok"]))
    code, out, err = run_cli(capsys, "predict", "--weights", bad, "--format", "jsonl", "--top", "3",
                             "--no-progress", small / "a.png")
    assert code == 0, err
    labels = {p["name"] for p in json.loads(out)["predictions"]}
    assert labels == {"x\\xffy", "\\ud800", "ok"}, out
    out.encode("utf-8")  # strict


# --------------------------------------------------------------------------- F9: messages

def test_symlink_loop_is_named_as_one(small, tmp_path, capsys):
    """It was "truncated or corrupt image data ([Errno 40] Too many levels of symbolic links...)"."""
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    code, out, err = run_cli(capsys, "predict", "--weights", small / "small.npz", "--no-progress", loop,
                             small / "a.png")
    assert code == 1
    assert f"{loop}: is a loop of symbolic links (too many levels), not an image file" in err, err
    assert "corrupt" not in err


def test_bad_interpolation_is_refused_once_before_any_file(small, capsys):
    """Every file got its own error line; now one refusal naming the valid names, before any output."""
    with pytest.raises(SystemExit, match="^2$"):  # argparse's choices: a usage error (review 17, finding 5)
        run_cli(capsys, "predict", "--weights", small / "small.npz", "--size", "71x71",
                "--interpolation", "foo", small / "a.png", small / "c.png")
    out, err = capsys.readouterr()
    assert out == "" and "argument --interpolation: invalid choice: 'foo' (choose from 'nearest', 'bilinear'" in err, err


def test_npz_reserved_shape_overflowing_int64(small, tmp_path, capsys):
    """(2**32, 2**32) made np.prod wrap to 0: "cannot reshape array of size 0", no file named."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**32, 2**32)})
    bad = edited(small / "small.npz", tmp_path / "wrap.npz",
                 lambda m: m.setdefault("reserved", {}).update(__x__=[2**32, 2**32]),
                 extra={"__x__.npy": header.getvalue()})
    code, out, err = run_cli(capsys, "predict", "--weights", bad, "--no-progress", small / "a.png")
    assert code == 1 and "wrap.npz: the reserved arrays claim" in err, err


def test_a_memory_error_no_reader_caught_names_the_input_file(tmp_path, capsys):
    """Review 18: a MemoryError reached the user as "npxception: error: MemoryError", naming nothing. The
    readers refuse first (the budget rule); should one not, the CLI names the command's input files."""
    import argparse

    from npxception.console import run

    src = tmp_path / "graph.onnx"
    src.write_bytes(b"\0")

    def command(args):
        raise MemoryError

    args = argparse.Namespace(against=str(src), weights="imagenet", image=None)  # "imagenet" is no file
    assert run("npxception", command, args, debug=False) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"npxception: error: {src}: reading it needed more memory than this process may take; "), err
    assert "MemoryError" not in err and "imagenet" not in err, err


def test_names_from_files_reach_the_terminal_escaped_and_cut(small, tmp_path, capsys):
    """Review 23 F4: a dump key holding an ANSI escape and a carriage return was printed raw in compare's
    report ("theirs only"), and an error quoting a name from a file was printed as it came (a 1 MB layer name
    made a 1,000,308-byte line): both go through console.shown, escaped, and a long name cut with its length."""
    from npxception import console

    x = np.random.default_rng(1).uniform(-1, 1, (1, 71, 71, 3)).astype(np.float32)
    hostile = "ok\x1b[2J\x1b[31m\rFORGED"
    np.savez(tmp_path / "d.npz", __input__=x, block1_conv1=np.zeros((1, 35, 35, 32), np.float32),  # differs: FAIL
             **{hostile: np.zeros(3, np.float32)})
    cli.main(["compare", "--weights", str(small / "small.npz"), "--against", str(tmp_path / "d.npz")])
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\r" not in out + err
    assert "ok\\x1b[2J\\x1b[31m\\rFORGED" in out, out + err

    def fails(args):
        raise ValueError(f"layer {'a' * 10**6} and {hostile}: expected a Keras name")

    assert console.run("npxception", fails, None, debug=False) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and len(err) < 2000, len(err)
    assert err.startswith("npxception: error: layer " + "a" * 400 + "..." + "a" * 100 + " (1,000,000 characters) "
                          "and ok\\x1b[2J\\x1b[31m\\rFORGED: expected a Keras name"), err[:700]
