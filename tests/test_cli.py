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

import json
import os
import re
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
from PIL import Image

import npxception
from npxception import architecture as arch
from npxception.labels import imagenet_labels
from predict_reference import SAMPLES, keras_reference, top_indices

PROB_ATOL = 1e-5
LABELS = imagenet_labels()


@pytest.fixture(scope="module")
def exe():
    path = shutil.which("npxception")
    assert path, "the npxception console script is not on PATH: install the package (pip install -e .)"
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("npxception_home")
    return dict(os.environ, NPXCEPTION_OFFLINE="1", NPXCEPTION_HOME=str(home))


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    return keras_reference(tmp_path_factory)


def run(exe, env, *args, cwd=None, **extra_env):
    proc = subprocess.run([exe, *map(str, args)], env=dict(env, **extra_env), cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


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

    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(png_bytes(1, 1, declared=(20000, 20000))))
    with Image.open(io.BytesIO(png_bytes(1, 1, declared=(2, 2)))) as img:  # a harmless size opens fine
        assert img.size == (2, 2)


def test_predict_mixed_batch_json(exe, env, ref, batch):
    missing = batch / "missing.jpg"
    code, out, err = run(exe, env, "predict", "--json", "--top", "3", "--weights", ref.npz,
                         batch / "good.png", missing, batch / "text.jpg", batch / "folder")
    assert code == 1, err
    assert_no_traceback(err)

    # Every bad file: exactly one stderr line naming it, with the reason.
    lines = err.strip().splitlines()
    bad = {missing: "no such file", batch / "text.jpg": "not an image",
           batch / "folder" / "c_truncated.png": "truncated", batch / "folder" / "d_bomb.png": "decompression bomb"}
    assert len(lines) == len(bad), err
    for path, reason in bad.items():
        mine = [line for line in lines if str(path) in line]
        assert len(mine) == 1 and reason in mine[0], (path, err)

    # stdout is one valid JSON array with the documented schema; the good files are all there,
    # the folder expanded in sorted order, non-images and sub-folders skipped.
    data = json.loads(out)
    assert isinstance(data, list)
    assert [d["file"] for d in data] == [str(batch / "good.png"), str(batch / "folder" / "a_chelsea.png"),
                                         str(batch / "folder" / "b_coffee.png")]
    expected = [ref.probs[0], ref.probs[0], ref.probs[1]]
    for entry, probs in zip(data, expected):
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
    assert err.strip() == ""  # stdout is not a terminal: no progress bar
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
    names = [layer.name for layer in arch.backbone("keras")] + [h["name"] for h in arch.keras_head(True)]
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
