"""The installed ``npxception`` console script, run as a user runs it: in a subprocess.

The weights are a Keras Xception with random weights converted to npxception
and saved to a temporary ``.npz`` (tests/predict_reference.py), passed with
``--weights PATH``; every process runs with ``NPXCEPTION_OFFLINE=1`` and a
temporary ``NPXCEPTION_HOME``, so nothing touches the network or the user's cache.

Scores printed by ``--json`` are compared with what Keras' own pipeline
predicts for the same photos, to 1e-5 absolute (probabilities; the reasoning is
in test_predict.py: same decoded pixels, float32 summation order only).

Each ``npxception predict`` process pays start-up plus Numba's JIT (cached on
disk after the first), so the predict cases are packed into few processes.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import os
import pty
import shlex
import signal
import sys
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import npxception
from npxception import architecture as arch
from npxception import head_schema
from npxception.labels import imagenet_labels
from console_script import command
from predict_reference import SAMPLES, keras_reference, top_indices

PROB_ATOL = 1e-5
LABELS = imagenet_labels()


@pytest.fixture(scope="module")
def exe():
    return command()  # the console script, or `python -m npxception` without an activated venv


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("npxception_home")
    return dict(os.environ, NPXCEPTION_OFFLINE="1", NPXCEPTION_HOME=str(home))


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return keras_reference(tmp_path_factory)


def run(exe, env, *args, cwd=None, **extra_env):
    proc = subprocess.run([*exe, *map(str, args)], env=dict(env, **extra_env), cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def messages(stderr) -> list[str]:
    """stderr's lines without the one-time compile notice (printed only when Numba's cache is cold)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("npxception: compiling ")]


def assert_no_traceback(stderr):
    assert "Traceback" not in stderr, stderr
    assert not re.search(r'File ".*", line \d+', stderr), stderr


# --------------------------------------------------------------------------- bad image files

def png_bytes(width, height, declared=None) -> bytes:
    """A valid PNG; with ``declared=(w, h)`` its IHDR claims that size instead (CRC fixed up)."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    if declared:
        # signature (8) | length (4) | b"IHDR" (4) | width (4) | height (4) | ... | CRC over type + data
        assert data[12:16] == b"IHDR"
        data[16:24] = struct.pack(">II", *declared)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Good photos, and one bad file of each kind, spread over loose files and a folder."""
    root = tmp_path_factory.mktemp("images")
    shutil.copy(SAMPLES[0], root / "good.png")
    (root / "text.jpg").write_text("this is not a JPEG\n")
    folder = root / "folder"
    folder.mkdir()
    shutil.copy(SAMPLES[1], folder / "b_coffee.png")
    shutil.copy(SAMPLES[0], folder / "a_chelsea.png")
    raw = SAMPLES[0].read_bytes()
    (folder / "c_truncated.png").write_bytes(raw[: len(raw) // 2])
    # 20000 x 20000 = 4e8 pixels, over twice Pillow's MAX_IMAGE_PIXELS (~8.9e7): refused at open.
    (folder / "d_bomb.png").write_bytes(png_bytes(1, 1, declared=(20000, 20000)))
    (folder / "notes.txt").write_text("not an image suffix: skipped when the folder is expanded\n")
    (folder / "sub").mkdir()  # sub-folders are not descended into
    shutil.copy(SAMPLES[1], folder / "sub" / "deeper.png")
    return root


def test_bomb_fixture_is_what_it_claims():
    """The patched PNG is well formed (CRC correct) and only its declared size is hostile."""
    import io

    with pytest.raises(Image.DecompressionBombError, match="decompression bomb"):
        Image.open(io.BytesIO(png_bytes(1, 1, declared=(20000, 20000))))
    with Image.open(io.BytesIO(png_bytes(1, 1, declared=(2, 2)))) as img:  # a harmless size opens fine
        assert img.size == (2, 2)


def test_predict_mixed_batch_json(exe, env, ref, batch):
    missing = batch / "missing.jpg"
    code, out, err = run(exe, env, "predict", "--json", "--top", "3", "--weights", ref.npz,
                         batch / "good.png", missing, batch / "text.jpg", batch / "folder")
    assert code == 1, err
    assert_no_traceback(err)

    # Every bad file: exactly one stderr line naming it, with the reason; and one note
    # naming the sub-folder that was not searched.
    lines = messages(err)
    bad = {missing: "no such file", batch / "text.jpg": "not a JPEG, PNG",
           batch / "folder" / "c_truncated.png": "truncated", batch / "folder" / "d_bomb.png": "decompression bomb"}
    assert len(lines) == len(bad) + 2, err
    for path, reason in bad.items():
        mine = [line for line in lines if str(path) in line]
        assert len(mine) == 1 and reason in mine[0], (path, err)
    assert [line for line in lines if "note:" in line] == [
        f"npxception: note: sub-folders skipped (use -r to include them): {batch / 'folder' / 'sub'}",
        "npxception: note: 1 file in the folders skipped for their suffix (not an image suffix; name a file to "
        f"read it anyway): {batch / 'folder' / 'notes.txt'}"]

    # stdout is one valid JSON array with the documented schema: every input file in input
    # order (the folder expanded in sorted order, non-images skipped), failed ones with "error".
    data = json.loads(out)
    assert isinstance(data, list)
    order = [batch / "good.png", missing, batch / "text.jpg", batch / "folder" / "a_chelsea.png",
             batch / "folder" / "b_coffee.png", batch / "folder" / "c_truncated.png",
             batch / "folder" / "d_bomb.png"]
    assert [d["file"] for d in data] == [str(p) for p in order]
    for entry in data:
        if Path(entry["file"]) in bad:
            assert set(entry) == {"file", "error"} and bad[Path(entry["file"])] in entry["error"], entry
    good = [d for d in data if "error" not in d]
    expected = [ref.probs[0], ref.probs[0], ref.probs[1]]
    assert len(good) == len(expected)
    for entry, probs in zip(good, expected):
        assert set(entry) == {"file", "predictions"}
        preds = entry["predictions"]
        assert len(preds) == 3  # --top 3
        for p in preds:
            assert set(p) == {"index", "label", "name", "score"}
            assert type(p["index"]) is int and type(p["score"]) is float
            assert (p["label"], p["name"]) == LABELS[p["index"]]
        assert [p["index"] for p in preds] == top_indices(probs[None], 3)[0]
        assert np.allclose([p["score"] for p in preds], probs[[p["index"] for p in preds]], rtol=0, atol=PROB_ATOL)


def test_predict_all_good_text_output(exe, env, ref):
    code, out, err = run(exe, env, "predict", "--top", "2", "--weights", ref.npz, *SAMPLES)
    assert code == 0, err
    assert_no_traceback(err)
    assert messages(err) == []  # stderr is not a terminal: no progress bar
    lines = out.strip().splitlines()
    assert len(lines) == 2 * 3  # per image: its path, then --top 2 ranked lines
    for k, (path, probs) in enumerate(zip(SAMPLES, ref.probs)):
        assert lines[3 * k] == str(path)
        for rank, index in enumerate(top_indices(probs[None], 2)[0], 1):
            wnid, name = LABELS[index]
            m = re.fullmatch(rf"\s+{rank}\.\s+([0-9.]+)\s+{wnid} {re.escape(name)}\s+\(class {index}\)",
                             lines[3 * k + rank])
            assert m, lines[3 * k + rank]
            assert abs(float(m.group(1)) - probs[index]) <= 1e-4  # printed with 4 decimals


def test_predict_error_is_one_line_unless_debug(exe, env, tmp_path):
    missing = tmp_path / "nowhere.npz"
    code, out, err = run(exe, env, "predict", "--weights", missing, SAMPLES[0])
    assert code == 1 and out == ""
    assert_no_traceback(err)
    assert err.strip().splitlines() == [f"npxception: error: {missing}: no such weight file"]
    for args in (["predict", "--debug"], ["--debug", "predict"]):  # --debug after or before the command
        code, _, err = run(exe, env, *args, "--weights", missing, SAMPLES[0])
        assert code == 1 and "Traceback" in err, (args, err)


def test_predict_imagenet_offline_says_where_to_put_the_file(exe, env, tmp_path):
    home = tmp_path / "home"
    code, out, err = run(exe, env, "predict", "--weights", "imagenet", SAMPLES[0], NPXCEPTION_HOME=str(home))
    assert code == 1 and out == ""
    assert_no_traceback(err)
    assert err.startswith("npxception: error: offline")
    assert len(err.strip().splitlines()) <= 3
    # Where the official .h5 or a converted .npz goes by hand.
    assert str(home / "downloads" / "xception_weights_tf_dim_ordering_tf_kernels.h5") in err
    assert str(home / "weights" / "xception_weights_tf_dim_ordering_tf_kernels.npz") in err
    assert "--weights" in err or "weights=PATH" in err


@pytest.mark.parametrize("args", [
    [],  # no command
    ["predict"],  # no image
    ["predict", "--top", "0", "x.png"],
    ["predict", "--top", "three", "x.png"],
    ["predict", "--no-such-option", "x.png"],
    ["predict", "--interpolation", "foo", "x.png"],  # review 17, finding 5: was exit 1, naming "interpolation:"
    ["summary", "--variant", "nope"],
    ["summary", "--format", "svg"],
    ["no-such-command"],
])
def test_usage_errors_exit_2(exe, env, args):
    code, out, err = run(exe, env, *args)
    assert code == 2, (args, code, out, err)
    assert_no_traceback(err)


def test_version(exe, env):
    code, out, err = run(exe, env, "--version")
    assert code == 0 and out.strip() == f"npxception {npxception.__version__}"


# --------------------------------------------------------------------------- summary

@pytest.mark.parametrize("variant", ["keras", "article"])
def test_summary_table_totals(exe, env, variant):
    code, out, err = run(exe, env, "summary", "--variant", variant)
    assert code == 0, err
    assert "Total params: 22,910,480" in out
    assert "Trainable params: 22,855,952" in out
    assert "Non-trainable params: 54,528" in out
    for name in [layer.name for layer in arch.backbone(variant)] + ["avg_pool", "predictions"]:
        assert re.search(rf"^{name} ", out, re.M), name  # one row per layer


def test_summary_dot(exe, env):
    code, out, err = run(exe, env, "summary", "--format", "dot")
    assert code == 0, err
    text = out.strip()
    assert text.startswith("digraph ") and text.endswith("}")
    assert text.count("{") == text.count("}")
    nodes = set(re.findall(r'^\s*"([^"]+)" \[label=', text, re.M))
    names = [layer.name for layer in arch.backbone("keras")] + [h["name"] for h in head_schema.keras_head(True)]
    assert set(names) <= nodes, sorted(set(names) - nodes)
    edges = re.findall(r'^\s*"([^"]+)" -> "([^"]+)";', text, re.M)
    assert len(edges) >= len(names) - 1
    for a, b in edges:
        assert a in nodes | {"input"} and b in nodes, (a, b)  # every edge joins declared nodes
    for layer in arch.backbone("keras"):
        for src in layer.inputs:
            assert (src, layer.name) in edges or src == "input"


def test_summary_input_size(exe, env):
    code, out, err = run(exe, env, "summary", "--input-size", "71", "--no-top")
    assert code == 0, err
    assert "Total params: 20,861,480" in out  # the top's 2,049,000 parameters removed
    assert "(None, 3, 3, 2048)" in out  # 71 -> 35 -> 33 -> 17 -> 9 -> 5 -> 3
    code, out, err = run(exe, env, "summary", "--input-size", "70")
    assert code == 1 and out == ""
    assert_no_traceback(err)
    assert err.strip().splitlines() == ["npxception: error: --input-size must be at least 71, found 70"]


# --------------------------------------------------------------------------- convert

def test_convert_bad_file_is_one_line(exe, env, tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_text("not HDF5")
    for debug in ([], ["--debug"]):
        code, out, err = run(exe, env, *debug, "convert", bad, "-o", tmp_path / "out.npz")
        assert code == 1
        assert not (tmp_path / "out.npz").exists()
        if debug:
            assert "Traceback" in err and "ConversionError" in err
        else:
            assert_no_traceback(err)
            assert len(err.strip().splitlines()) == 1 and str(bad) in err and "not a Keras weight file" in err
            assert err.startswith("npxception: error: ")  # the program the user ran, not weights_tools


def test_convert_of_our_own_npz_says_what_it_is(ref, tmp_path, capsys):
    """Review 17, finding 3: it was refused as a .keras archive with too many entries (a hostile file?)."""
    from npxception.cli import main

    assert main(["convert", str(ref.npz), "-o", str(tmp_path / "x.npz")]) == 1
    err = capsys.readouterr().err
    assert f"{ref.npz}: already an npxception weight file (it holds our manifest): nothing to convert" in err
    assert f"npxception predict --weights {ref.npz}" in err and "hostile" not in err
    assert not (tmp_path / "x.npz").exists()


def test_convert_into_a_missing_directory_is_one_line_before_reading(exe, env, tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_text("not HDF5")  # never read: the output is checked first
    code, out, err = run(exe, env, "convert", bad, "-o", tmp_path / "typo" / "out.npz")
    assert code == 1
    assert_no_traceback(err)
    assert len(err.strip().splitlines()) == 1 and "typo does not exist" in err and "not a Keras" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5"]


# --------------------------------------------------------------------------- batch output as people script it

CSV_HEADER = "file,rank,index,label,name,score,error"


def test_predict_csv_recursive_lists_every_file_in_order(exe, env, ref, batch):
    code, out, err = run(exe, env, "predict", "--format", "csv", "-r", "--top", "2", "--weights", ref.npz,
                         batch / "text.jpg", batch / "folder")
    assert code == 1, err  # some files failed
    assert_no_traceback(err)
    # -r: no sub-folder skipped; notes.txt is, for its suffix
    assert [line for line in messages(err) if "note:" in line] == [
        "npxception: note: 1 file in the folders skipped for their suffix (not an image suffix; name a file to "
        f"read it anyway): {batch / 'folder' / 'notes.txt'}"]
    assert out.splitlines()[0] == CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(out)))
    folder = batch / "folder"
    # One row per (file, rank); a failed file has one row with only file and error.
    expected = [(batch / "text.jpg", None), (folder / "a_chelsea.png", 0), (folder / "a_chelsea.png", 0),
                (folder / "b_coffee.png", 1), (folder / "b_coffee.png", 1), (folder / "c_truncated.png", None),
                (folder / "d_bomb.png", None), (folder / "sub" / "deeper.png", 1), (folder / "sub" / "deeper.png", 1)]
    assert [(r["file"]) for r in rows] == [str(path) for path, _ in expected]
    for k, (row, (path, sample)) in enumerate(zip(rows, expected)):
        if sample is None:
            assert row["error"] and row["rank"] == row["index"] == row["score"] == "", row
            continue
        rank = 1 if k == 0 or rows[k - 1]["file"] != row["file"] else 2
        index = top_indices(ref.probs[sample][None], 2)[0][rank - 1]
        assert (int(row["rank"]), int(row["index"]), row["error"]) == (rank, index, ""), row
        assert (row["label"], row["name"]) == LABELS[index]
        assert abs(float(row["score"]) - ref.probs[sample][index]) <= PROB_ATOL


def read_terminal(master: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed its end of the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return b"".join(chunks).decode()


@pytest.mark.parametrize("progress", [True, False], ids=["progress", "no-progress"])
def test_predict_jsonl_with_stderr_on_a_terminal(exe, env, ref, progress):
    """The bar follows stderr (a terminal here), not stdout (a pipe); --no-progress turns it off."""
    master, slave = pty.openpty()
    flags = [] if progress else ["--no-progress"]
    proc = subprocess.Popen([*exe, "predict", "--format", "jsonl", "--top", "1", "--batch-size", "1",
                             "--weights", str(ref.npz), *flags, *map(str, SAMPLES)],
                            env=env, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    out, _ = proc.communicate(timeout=300)
    err = read_terminal(master)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.decode().splitlines()]  # one JSON object per line
    assert [d["file"] for d in lines] == [str(p) for p in SAMPLES]
    for entry, probs in zip(lines, ref.probs):
        assert [p["index"] for p in entry["predictions"]] == top_indices(probs[None], 1)[0]
    bar = f"[{'#' * 30}] {len(SAMPLES)}/{len(SAMPLES)}"
    assert (bar in err) == progress, err


def test_predict_csv_into_head_stops_quietly(exe, env, ref):
    """`| head -2`: a header and one row, no error; npxception ends as a SIGPIPE'd tool does (141).

    --top 1000 over 4 files writes ~250 KB, more than a pipe holds (64 KB), so the
    write after head has exited really meets a closed pipe.
    """
    cmd = " ".join(shlex.quote(str(a)) for a in [*exe, "predict", "--format", "csv", "--top", "1000",
                                                  "--weights", ref.npz, *SAMPLES, *SAMPLES])
    proc = subprocess.run(["bash", "-c", f'{cmd} | head -2; echo "npxception exit ${{PIPESTATUS[0]}}" >&2'],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0] == CSV_HEADER and lines[1].startswith(f"{SAMPLES[0]},1,")
    assert messages(proc.stderr) == ["npxception exit 141"]  # nothing else: no "Broken pipe"


def closed_pipe_run(argv, env) -> subprocess.CompletedProcess:
    """Run argv with stdout the write end of a pipe whose reader is already gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write_end)


def test_closed_pipe_is_quiet_in_both_programs(exe, env, ref):
    for argv in ([*exe, "summary"], [sys.executable, "-m", "npxception.weights_tools", "inspect", str(ref.keras_file())]):
        proc = closed_pipe_run(argv, env)
        assert (proc.returncode, messages(proc.stderr)) == (141, []), (argv, proc.stderr)
    # --help: argparse itself ignores a failed write of the help text and exits 0; quiet either way.
    for argv in ([*exe, "--help"], [sys.executable, "-m", "npxception.weights_tools", "--help"]):
        proc = closed_pipe_run(argv, env)
        assert proc.returncode in (0, 141) and proc.stderr == "", (argv, proc.stderr)


def test_ctrl_c_keeps_what_was_printed(exe, env, ref, tmp_path):
    """SIGINT after the first result: exit 130, and the JSON printed so far is closed and valid."""
    files = [str(SAMPLES[0])] * 40
    with open(tmp_path / "stderr", "w+") as stderr:
        proc = subprocess.Popen([*exe, "predict", "--json", "--top", "1", "--batch-size", "1", "--weights",
                                 str(ref.npz), *files], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        first = proc.stdout.readline()  # "[\n": the newline comes with the first result
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()  # (not communicate(): it would skip what readline buffered)
        proc.wait(timeout=300)
        stderr.seek(0)
        err = stderr.read()
    assert proc.returncode == 130, err
    assert_no_traceback(err)
    data = json.loads(first + rest)
    assert 1 <= len(data) < len(files)
    assert all(d["file"] == files[0] and len(d["predictions"]) == 1 for d in data)
    assert messages(err) == [f"npxception: interrupted after {len(data)} of {len(files)} files"]


@pytest.fixture(scope="module")
def small_npz(tmp_path_factory):
    """A 3-class 71x71 model: cheap to save and to run (the ImageNet fixture takes minutes to build)."""
    path = tmp_path_factory.mktemp("small") / "small.npz"
    npxception.Xception(classes=3, input_shape=(71, 71, 3), seed=5).save(path)
    return path


@pytest.mark.parametrize("signum", [signal.SIGTERM])  # SIGINT: test_ctrl_c_keeps_what_was_printed
def test_a_signal_mid_run_leaves_valid_json(exe, env, small_npz, tmp_path, signum):
    """Review 17, finding 6: SIGTERM (kill, timeout, a job scheduler) left `predict --json` without its
    closing `]`. Both signals now stop between results: exit 128 + the signal, the JSON valid. The child
    is its own session, so that the signal reaches it with Python's handlers, not a shell's SIG_IGN."""
    files = [str(SAMPLES[0])] * 200
    with open(tmp_path / "stderr", "w+") as stderr:
        proc = subprocess.Popen([*exe, "predict", "--json", "--top", "1", "--batch-size", "1", "--weights",
                                 str(small_npz), *files], env=env, stdout=subprocess.PIPE, stderr=stderr,
                                text=True, start_new_session=True)
        first = proc.stdout.readline()  # "[\n": the newline comes with the first result
        os.kill(proc.pid, signum)
        rest = proc.stdout.read()
        proc.wait(timeout=300)
        stderr.seek(0)
        err = stderr.read()
    assert proc.returncode == 128 + signum, err
    assert_no_traceback(err)
    data = json.loads(first + rest)
    assert 1 <= len(data) < len(files)
    verb = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert messages(err) == [f"npxception: {verb} after {len(data)} of {len(files)} files"]


def test_show_unknown_layer_offers_close_names_and_the_full_list(small_npz, tmp_path, capsys):
    """Review 17, finding 4: "--layer: unknown layer 'nosuchlayer'" gave no way to find a valid name."""
    from npxception.cli import main

    argv = ["show", str(SAMPLES[0]), "--weights", str(small_npz), "-o", str(tmp_path / "m.png"), "--layer"]
    assert main([*argv, "block3_sepconv2act"]) == 1
    err = capsys.readouterr().err
    assert "did you mean ['block3_sepconv2_act'," in err and "npxception summary" in err
    assert main([*argv, "nosuchlayer"]) == 1
    # the command names the file given (quoted for the shell), so it runs as printed
    assert f"Every layer's name: `npxception summary --weights {shlex.quote(str(small_npz))}`" in \
        capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


@pytest.mark.filterwarnings("ignore::npxception.golden.NoGoldenWarning")  # saved without one: a second's work
def test_show_and_summary_take_the_input_stage_names_capture_takes(small_npz, tmp_path, capsys, monkeypatch):
    """Review 30, F4: `show --layer rescaling` on a model with a Rescaling input stage said "unknown layer name
    'rescaling'; did you mean ['rescaling']?" while forward(capture=['rescaling']) takes it, and its hint,
    `npxception summary`, could not list a converted file's names. show draws the step's output now (what
    the backbone is fed: pixels / 127.5 - 1), and `summary --weights FILE` lists the file's own layers."""
    from npxception import show
    from npxception.cli import main
    from npxception.model import XceptionModel
    from npxception.prediction import load_photo

    plain = npxception.load(small_npz)
    model = XceptionModel(plain.weights, head=plain.head, input_shape=plain.input_shape, input_stage=[
        {"kind": "rescaling", "name": "rescaling", "scale": 1 / 127.5, "offset": -1.0}])
    staged = model.save(tmp_path / "staged.npz", golden=False)
    drawn = []
    monkeypatch.setattr(show, "feature_grid", lambda act, maps: drawn.append((act, maps)) or Image.new("L", (8, 8)))
    argv = ["show", str(SAMPLES[0]), "--weights", str(staged), "-o", str(tmp_path / "r.png"), "--layer"]
    assert main([*argv, "rescaling"]) == 0 and (tmp_path / "r.png").exists()
    [(act, maps)] = drawn
    pixels = load_photo(model, SAMPLES[0])
    assert maps == 3  # every channel of the step's RGB output (16 is the default for wider layers)
    np.testing.assert_allclose(act, pixels / 127.5 - 1, rtol=0, atol=1e-6)  # float32 of x * (1/127.5) - 1
    np.testing.assert_array_equal(act, model.forward(pixels[None], capture=["rescaling"])[1]["rescaling"][0])
    capsys.readouterr()
    assert main([*argv, "rescalin"]) == 1
    err = capsys.readouterr().err
    assert "did you mean ['rescaling']" in err and f"`npxception summary --weights {shlex.quote(str(staged))}`" in err
    with pytest.raises(ValueError, match=r"'rescaling'; see model.layer_names"):
        model.get_layer("rescaling")  # get_layer takes no stage name: none is suggested
    assert main(["summary", "--weights", str(staged)]) == 0
    out = capsys.readouterr().out
    assert "input stage: rescaling (Rescaling)" in out and "predictions (Dense)" in out and "(None, 3)" in out
    assert main(["summary", "--weights", str(staged), "--no-top"]) == 2
    assert "--no-top: not with --weights, whose file says its variant and head" in capsys.readouterr().err


@pytest.fixture(scope="module")
def one_unit_heads(tmp_path_factory):
    """{activation: a 71x71 one-unit head's .npz} whose logit is z = +6 on SAMPLES[0] and -6 on SAMPLES[1]: the
    kernel is k = 12 d / |d|^2 and the bias -k.(f0 + f1) / 2, for d = f0 - f1 of the photos' pooled features
    (as predict feeds them), so that z = k.f + b = +-6 up to float32 round-off (|z| ~ 1e-5 off)."""
    from npxception.prediction import feed, load_photo

    folder = tmp_path_factory.mktemp("one_unit")
    out = {}
    for act in (None, "sigmoid", "tanh"):
        model = npxception.Xception(classes=1, classifier_activation=act, input_shape=(71, 71, 3), seed=5)
        x = feed(model, np.stack([load_photo(model, path) for path in SAMPLES]))
        f = model.forward(x, capture=["avg_pool"])[1]["avg_pool"].astype(np.float64)
        d = f[0] - f[1]
        k = 12 * d / (d @ d)
        model.get_layer("predictions").set_weights([k[:, None].astype(np.float32),
                                                    np.array([-k @ (f[0] + f[1]) / 2], np.float32)])
        out[act] = model.save(folder / f"{act}.npz", golden=False)  # a golden case costs ~25 s here
    return out


@pytest.mark.filterwarnings("ignore::npxception.golden.NoGoldenWarning")  # saved without one: see one_unit_heads
@pytest.mark.parametrize("act, output, threshold, values", [(None, "logit", "0", (6.0, -6.0)),
                                                            ("sigmoid", "probability", "0.5", (0.997527, 0.002473))])
def test_predict_one_unit_head_prints_the_class_keras_decides(one_unit_heads, act, output, threshold, values, capsys):
    """Review 30, F3: a one-unit head (the keras.io recipe's Dense(1), a logit) printed "(class 0)" whatever its
    sign. Keras decides label 1 when the logit is > 0 (a sigmoid's p > 0.5), as compare does
    (head_schema.decision_rule); the table and the JSON say the value, what it is and the decided class.
    The logits are +6 and -6 (one_unit_heads): p = sigmoid(+-6) = 0.997527, 0.002473."""
    from npxception.cli import main

    argv = ["predict", "--weights", str(one_unit_heads[act]), *map(str, SAMPLES)]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    for line, value, decided in zip(lines[1::2], values, (1, 0)):
        assert line == (f"  {output} {value:.4f} -> class {decided}  "
                        f"(one-unit head: class 1 when {output} > {threshold}, else class 0)")
    assert main([*argv, "--format", "json"]) == 0
    for entry, value, decided in zip(json.loads(capsys.readouterr().out), values, (1, 0)):
        [p] = entry["predictions"]
        assert (p["index"], p["output"], p["class_1_when"]) == (decided, output, f"{output} > {threshold}")
        assert p["score"] == pytest.approx(value, abs=1e-4)  # float32 round-off of k.f + b (docstring)


@pytest.mark.filterwarnings("ignore::npxception.golden.NoGoldenWarning")  # saved without one: see one_unit_heads
def test_one_unit_head_without_a_yes_no_rule_is_not_called_a_class(one_unit_heads, capsys):
    """A one-unit tanh head has no threshold Keras decides by: its value is printed as it is, no "class 0";
    and predict() names the decided class of a binary head by ``labels=[class 0, class 1]``."""
    from npxception.cli import main

    assert main(["predict", "--weights", str(one_unit_heads["tanh"]), str(SAMPLES[0])]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line == f"  tanh output {np.tanh(6.0):.4f}  (one-unit head: no yes/no rule for this activation; the value as it is)"
    model = npxception.load(one_unit_heads[None])
    assert npxception.predict(SAMPLES, model=model, labels=["coffee", "cat"]) == [
        [(1, "cat", pytest.approx(6.0, abs=1e-4))], [(0, "coffee", pytest.approx(-6.0, abs=1e-4))]]
    with pytest.raises(ValueError, match="expected 1 names \\(or 2: class 0's and class 1's"):
        npxception.predict(SAMPLES[0], model=model, labels=["a", "b", "c"])


def test_weights_that_are_no_npz_say_what_to_do_instead(small_npz, tmp_path, capsys):
    """Review 30, F6: predict --weights of a model.export() directory said "convert it first", which convert
    then refused; an .onnx file was "not a zip archive"; a URL given as the image was "no such file"."""
    from npxception.cli import main

    export = tmp_path / "exported"  # what Keras 3's model.export() writes: a serving graph, no keras_metadata.pb
    export.mkdir()
    (export / "saved_model.pb").write_bytes(b"\x12\x00")
    photo = str(SAMPLES[0])
    assert main(["predict", "--weights", str(export), photo]) == 1
    err = capsys.readouterr().err
    assert "a serving graph" in err and "convert cannot read it either" in err and "convert it first" not in err
    assert "model.save('model.keras')" in err and len(messages(err)) == 1
    assert main(["convert", str(export), "-o", str(tmp_path / "x.npz")]) == 1  # convert says the same
    assert "which convert cannot read" in capsys.readouterr().err
    onnx = tmp_path / "port.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch")  # an ONNX ModelProto's first fields (ir_version, producer)
    assert main(["predict", "--weights", str(onnx), photo]) == 1
    assert messages(capsys.readouterr().err) == [
        f"npxception: error: {onnx}: named as an ONNX model, not an npxception .npz weight file; npxception reads "
        f"ONNX only as the other side of a comparison: npxception compare --against {onnx} --weights model.npz (the .npz "
        "converted from the Keras file it was exported from)"]
    assert main(["predict", "--no-progress", "--weights", str(small_npz), "https://example.com/cat.jpg"]) == 1
    out = capsys.readouterr().out
    assert "error: no such file: npxception reads local files only, not URLs; download it first" in out
    # the same reason wherever a photo is read: show, and compare's --image (images.py, compare/cli.py)
    url = "https://example.com/cat.jpg"
    show = ["show", url, "--weights", str(small_npz), "-o", str(tmp_path / "m.png"), "--layer", "block1_conv1"]
    assert main(show) == 1
    assert "reads local files only, not URLs; download it first" in capsys.readouterr().err
    from npxception.compare.cli import image_paths
    with pytest.raises(FileNotFoundError, match=f"^{url}: no such file: npxception reads local files only"):
        image_paths([url])


def test_convert_head_flags_and_skip_layer_messages():
    """Review 30, F6: "--pooling describe the head" (one flag: describes), and "--skip-layer nonexistent: no
    such layer" named no candidates: the close names now (difflib), and where the file's layers are listed."""
    from npxception.weights_tools import ConversionError
    from npxception.weights_tools.graph import KLayer
    from npxception.weights_tools.mapping import to_npxception
    from npxception.weights_tools.walk import _collapse

    wired = [KLayer("input_layer", "InputLayer", {}, []), KLayer("random_flip", "RandomFlip", {}, ["input_layer"]),
             KLayer("dense", "Dense", {}, ["random_flip"])]
    with pytest.raises(ConversionError, match=r"^m\.keras: --pooling describes the head of a weights-only file"):
        to_npxception(wired, source="m.keras", head_spec={"pooling": "max"})
    with pytest.raises(ConversionError, match=r"^m\.keras: --pooling --input-shape describe the head"):
        to_npxception(wired, source="m.keras", head_spec={"pooling": "max", "input_shape": (71, 71)})
    with pytest.raises(ConversionError, match=r"^my m\.keras: --skip-layer random_flp: no such layer; did you mean "
                                              r"random_flip\? \(`python -m npxception\.weights_tools inspect "
                                              r"'my m\.keras'` lists the file's layers\)$"):
        _collapse(wired, "my m.keras", skip_layers=("random_flp",))
    with pytest.raises(ConversionError, match=r"--skip-layer zzz: no such layer \(`python -m"):  # nothing close
        _collapse(wired, "m.keras", skip_layers=("zzz",))


def test_option_values_this_model_cannot_take_exit_2(small_npz, capsys):
    """Review 17, finding 5: a bad option value is a usage error (2, as argparse's), whether argparse or the
    model refuses it, and the message names the option as typed. A file that cannot be read stays 1."""
    from npxception.cli import INTERPOLATIONS, main
    from npxception.images import INTERPOLATIONS as names

    assert INTERPOLATIONS == tuple(names)  # the CLI spells them out (images imports Pillow)
    base = ["predict", str(SAMPLES[0]), "--weights", str(small_npz)]
    assert main([*base, "--size", "10x10"]) == 2
    assert "error: --size 10x10: this model takes 71x71 images only" in capsys.readouterr().err
    assert main([*base, "--interpolation", "BILINEAR", "--top", "1"]) == 0  # Keras' names, any case
    capsys.readouterr()
    assert main(["predict", str(SAMPLES[0]), "--weights", str(small_npz) + ".missing"]) == 1


def test_no_images_exits_2(exe, env, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "nested" / "photos").mkdir(parents=True)
    code, out, err = run(exe, env, "predict", tmp_path / "empty")
    assert (code, out) == (2, "")
    assert err.startswith(f"npxception: error: no images to label in {tmp_path / 'empty'} (image suffixes: ")
    code, out, err = run(exe, env, "predict", tmp_path / "nested")
    assert (code, out) == (2, "")
    assert messages(err)[0] == ("npxception: note: sub-folders skipped (use -r to include them): "
                                f"{tmp_path / 'nested' / 'photos'}")


def test_folders_contribute_every_suffix_pillow_registers_for_the_formats_read(exe, env, ref, tmp_path):
    """Review 4, finding 3: a folder of a.jpg b.jfif c.jpe d.pbm e.pnm gave one result and no note; a folder
    of only .jfif exited 2. Every one is labelled now, and the files left out are counted on stderr."""
    folder = tmp_path / "suffixes"
    folder.mkdir()
    for name, fmt in [("a.jpg", "JPEG"), ("b.jfif", "JPEG"), ("c.jpe", "JPEG"), ("d.pbm", "PPM"), ("e.pnm", "PPM")]:
        Image.new("1" if name == "d.pbm" else "RGB", (80, 72), 1 if name == "d.pbm" else (200, 30, 90)).save(
            folder / name, fmt)
    (folder / "f.ico").write_bytes(b"\0\0\1\0")
    (folder / "g.txt").write_text("notes")
    code, out, err = run(exe, env, "predict", "--format", "jsonl", "--weights", ref.npz, folder)
    assert code == 0, err
    assert [json.loads(line)["file"] for line in out.splitlines()] == [
        str(folder / n) for n in ("a.jpg", "b.jfif", "c.jpe", "d.pbm", "e.pnm")]
    assert messages(err) == ["npxception: note: 2 files in the folders skipped for their suffix (not an image "
                             f"suffix; name a file to read it anyway): {folder / 'f.ico'}, {folder / 'g.txt'}"]


def test_csv_escapes_control_characters_as_the_table_does(exe, env, ref, tmp_path):
    """Review 4, minor: --format csv wrote a file name's ESC raw, so \\x1b[31m reached the terminal."""
    name = tmp_path / "red\x1b[31m.png"
    shutil.copy(SAMPLES[0], name)
    code, out, err = run(exe, env, "predict", "--format", "csv", "--top", "1", "--weights", ref.npz, name,
                         tmp_path / "gone\x1b[0m.jpg")
    assert code == 1 and "\x1b" not in out, out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["file"] for r in rows] == [str(tmp_path / "red\\x1b[31m.png"), str(tmp_path / "gone\\x1b[0m.jpg")]
    assert rows[1]["error"] == "no such file"


def test_dash_says_stdin_is_not_supported(exe, env, ref, tmp_path):
    code, out, err = run(exe, env, "predict", "--weights", ref.npz, "-", cwd=tmp_path)
    assert code == 1
    assert messages(err) == ["npxception: -: reading an image from standard input is not supported; save it to a "
                             "file and give its path"]


# --------------------------------------------------------------------------- one program, Unix manners

def all_actions(parser, path=()):
    """(command path, action) for every option and argument of parser and its subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_actions(sub, (*path, name))
        else:
            yield path, action


@pytest.mark.parametrize("module", ["npxception.cli", "npxception.weights_tools.cli"])
def test_every_flag_has_help(module):
    parser = importlib.import_module(module)._parser()
    actions = list(all_actions(parser))
    assert len(actions) > 10
    missing = [(path, action.option_strings or action.dest) for path, action in actions
               if not action.help and not isinstance(action, (argparse._HelpAction, argparse._VersionAction))]
    assert missing == []


@pytest.mark.parametrize("module", ["npxception.cli", "npxception.weights_tools.cli"])
def test_every_subcommand_help_has_a_description(module):
    """Review 17, finding 7: only predict's --help said what the command does."""
    parser = importlib.import_module(module)._parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert len(subs) >= 2
    # npxception convert hands its whole command line to weights_tools convert, whose parser is checked too
    missing = [name for name, sub in subs.items()
               if not (sub.description or "").strip() and not (module == "npxception.cli" and name == "convert")]
    assert missing == []


def test_version_in_both_programs(exe, env):
    for argv in ([*exe, "--version"], [sys.executable, "-m", "npxception.weights_tools", "--version"]):
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert (proc.returncode, proc.stdout.strip()) == (0, f"npxception {npxception.__version__}"), argv


@pytest.mark.parametrize("argv, prog", [
    (["convert", "--help"], "npxception convert"),
    (["convert", "model.h5"], "npxception convert"),  # -o missing: a usage error
])
def test_convert_speaks_as_npxception(exe, env, argv, prog):
    code, out, err = run(exe, env, *argv)
    text = out + err
    assert "weights_tools" not in text, text
    assert re.search(rf"^usage: {prog} ", text, re.M), text
    if code:
        assert code == 2 and f"\n{prog}: error: " in text, text


def test_show_writes_the_format_its_suffix_names(ref, tmp_path, capsys):
    from npxception.cli import main

    out = tmp_path / "maps.jpg"
    assert main(["show", str(SAMPLES[0]), "--layer", "block1_conv1_act", "--maps", "4", "-o", str(out),
                 "--weights", str(ref.npz)]) == 0
    with Image.open(out) as img:
        assert img.format == "JPEG"  # not PNG bytes in a .jpg
    capsys.readouterr()
    out = tmp_path / "maps.pgn"
    assert main(["show", str(SAMPLES[0]), "--layer", "block1_conv1_act", "-o", str(out), "--weights", "nowhere"]) == 1
    err = capsys.readouterr().err  # refused before the (missing) weights are even looked for
    assert err == (f"npxception: error: {out}: unknown picture suffix '.pgn'; "
                   "expected one of .png, .jpg, .jpeg, .webp, .bmp, .tif, .tiff\n")
    assert not out.exists()
    out = tmp_path / "many.png"
    assert main(["show", str(SAMPLES[0]), "--layer", "block1_conv1_act", "--maps", "5000", "-o", str(out),
                 "--weights", str(ref.npz)]) == 1
    assert capsys.readouterr().err == ("npxception: error: --maps: block1_conv1_act has 32 channels; "
                                       "expected at most that, found 5000\n")
    assert not out.exists()


def test_compare_plot_needs_matplotlib_before_it_runs(ref, tmp_path, monkeypatch, capsys):
    import importlib.util

    from npxception.cli import main

    compare_cli = importlib.import_module("npxception.compare.cli")

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    for step in ("open_other", "compare"):
        monkeypatch.setattr(compare_cli, step, lambda *a, **k: pytest.fail("the comparison ran"))
    code = main(["compare", "--against", str(ref.npz), "--weights", str(ref.npz), "--plot", str(tmp_path / "e.png")])
    assert code == 1
    assert capsys.readouterr().err == "npxception: error: --plot needs matplotlib: pip install 'npxception[plot]'\n"


def test_runs_without_the_console_script_on_path(env, monkeypatch):
    """An unactivated venv: no `npxception` on PATH, and the tests still run the command."""
    import console_script

    monkeypatch.setattr(console_script.shutil, "which", lambda *a, **k: None)
    argv = command()
    assert argv == [sys.executable, "-m", "npxception"]
    code, out, err = run(argv, dict(env, PATH="/nonexistent"), "--version")
    assert (code, out.strip()) == (0, f"npxception {npxception.__version__}"), err


def test_first_ctrl_c_asks_and_the_second_interrupts():
    """The first SIGINT only sets the flag (checked between results); a second one raises at once."""
    from npxception.console import interrupt_requested

    # the handler it found, restored after: Python's default_int_handler, or SIG_IGN when the
    # suite was started in the background of a non-interactive shell (which ignores SIGINT)
    before = signal.getsignal(signal.SIGINT)
    with interrupt_requested() as interrupted:
        assert not interrupted
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted  # asked, and nothing raised
        with pytest.raises(KeyboardInterrupt, match="^$"):  # raised bare, as Python does on Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # restored


# ---- review 12: real users' environments -------------------------------------------


def test_closed_stdout_is_named(exe, env, ref):
    """Review 12, finding 2: `npxception ... >&-` (Python then has sys.stdout None) ended in an
    AttributeError traceback, even for --version. fd 1 is closed in the child itself: DEVNULL is
    not closed. Review 24, F9: it then ended quietly with 141, as if a reader had left; no reader ever
    existed, so every command now says stdout is closed, exit 1."""
    for argv, prog in (([*exe, "--version"], "npxception"), ([*exe, "predict", "--help"], "npxception"),
                       ([*exe, "predict", "--format", "json", "--weights", ref.npz, SAMPLES[0]], "npxception"),
                       ([sys.executable, "-m", "npxception.weights_tools", "--help"], "python -m npxception.weights_tools")):
        proc = subprocess.run(argv, env=env, stderr=subprocess.PIPE, text=True, timeout=300,
                              preexec_fn=lambda: os.close(1))
        assert_no_traceback(proc.stderr)
        assert (proc.returncode, messages(proc.stderr)) == (1, [f"{prog}: error: cannot write to stdout: it is "
                                                                "closed"]), (argv, proc.stderr)


def test_file_names_the_stdout_encoding_cannot_hold_are_escaped_in_place(exe, env, ref, tmp_path):
    """Review 12, finding 3: under PYTHONIOENCODING=latin-1 or ascii (LANG=C) the first file name the
    encoding could not hold aborted the run ("'latin-1' codec can't encode..."), and the files after it
    were never labelled. Now each is printed escaped (backslashreplace), in its place."""
    names = ["a.png", "犬.png", "chätßé.png", "猫.png"]
    for name in names:
        shutil.copy(SAMPLES[0], tmp_path / name)
    proc = subprocess.run([*exe, "predict", "--format", "csv", "--top", "1", "--weights", str(ref.npz),
                           *(str(tmp_path / n) for n in [*names, "nö.png"])],
                          env=dict(env, PYTHONIOENCODING="ascii"), capture_output=True, timeout=300)
    err = proc.stderr.decode("ascii")
    assert proc.returncode == 1 and messages(err) == [f"npxception: {tmp_path}/n\\xf6.png: no such file"], err
    rows = list(csv.DictReader(io.StringIO(proc.stdout.decode("ascii"))))
    escaped = ["a.png", "\\u72ac.png", "ch\\xe4t\\xdf\\xe9.png", "\\u732b.png", "n\\xf6.png"]
    assert [r["file"] for r in rows] == [str(tmp_path / n) for n in escaped]  # every file, in its place
    assert len({r["index"] for r in rows[:4]}) == 1 and rows[4]["error"] == "no such file"


def test_no_home_directory_predicts_with_a_weights_file(ref, tmp_path):
    """Review 12, finding 1: no home directory made `npxception predict --weights FILE` fail with "Could not
    determine home directory", though nothing needs a cache. It now predicts (kernels compiled in memory,
    with the notice saying why), and only --weights imagenet, which needs the cache, names NPXCEPTION_HOME."""
    import no_home

    script = no_home.PROLOGUE + (
        "import sys\nfrom npxception.cli import main\n"
        "print(main(['predict', '--weights', 'imagenet', sys.argv[2]]), file=sys.stderr)\n"
        "print(main(['predict', '--top', '1', '--weights', sys.argv[1], sys.argv[2]]), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(ref.npz), str(SAMPLES[0])], capture_output=True,
                          text=True, env=dict(no_home.env(), NPXCEPTION_OFFLINE="1"), cwd=tmp_path, timeout=600)
    assert_no_traceback(proc.stderr)
    assert proc.stderr.splitlines() == [
        "npxception: error: no home directory: set NPXCEPTION_HOME to a writable folder", "1",
        "npxception: compiling kernels (about 7 s); every run compiles, because no home directory: set "
        "NUMBA_CACHE_DIR to a writable folder", "0"], proc.stderr
    assert proc.stdout.splitlines()[0] == str(SAMPLES[0])
