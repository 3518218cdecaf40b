"""A photo's memory is estimated from the architecture table and refused over a budget, before it is decoded.

Review 4, finding 1: an 8000x6000 JPEG on a model that takes any size stopped a
whole ``predict`` run with "Unable to allocate 2.86 GiB" naming no file, left
``--format json`` without its closing bracket, and ``show`` ran the whole network
after the layer it drew. The hostile cases run in children under ``RLIMIT_AS``
(the pattern of tests/test_photo_memory.py): the child warms up on a small photo,
reads the address space it holds (``VmSize``) and allows that plus a margin.
The photos are flat colour, so an 8000x6000 JPEG is ~0.2 MB on disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import npxception
from npxception import photo_memory
from npxception.images import ImageError
from npxception.model import XceptionModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The child: warm up (kernels, thread pools, the model), hold that address space plus MARGIN, then run the CLI.
CHILD = """
import resource, sys
from npxception.cli import main

margin, small, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
weights = argv[argv.index("--weights") + 1]
assert main(["predict", "--weights", weights, "--format", "jsonl", small]) == 0
print("--warm--", flush=True)
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))
held, rss = status("VmSize"), status("VmRSS")
resource.setrlimit(resource.RLIMIT_AS, (held + margin, held + margin))
code = main(argv)
print(f"--code {code} grew {status('VmPeak') - held} rss {status('VmHWM') - rss}", flush=True)
"""


def child(args, margin, small, env=None):
    extra, env = env or {}, dict(os.environ, PYTHONPATH=REPO)
    env.pop("NPXCEPTION_PHOTO_MEMORY", None)  # the default budget unless the test sets one
    env.update(extra)
    out = subprocess.run([sys.executable, "-c", CHILD, str(margin), str(small), *map(str, args)],
                         capture_output=True, text=True, env=env, cwd=REPO)
    stdout = out.stdout.split("--warm--\n", 1)[-1]
    body, _, tail = stdout.rpartition("--code ")
    err = [line for line in out.stderr.splitlines() if "compiling" not in line]  # the compile notice
    return body, err, tail, out


def flat_jpeg(path, width, height, color=(120, 140, 90)):
    Image.new("RGB", (width, height), color).save(path, quality=80)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("budget")
    base = npxception.Xception(classes=3, input_shape=(71, 71, 3), seed=0)
    anysize = XceptionModel(base.weights, variant=base.variant, head=base.head, input_shape=(None, None, 3))
    out = {"anysize": anysize.save(folder / "anysize.npz"), "fixed": base.save(folder / "fixed.npz"),
           "model": anysize}
    out["small"] = flat_jpeg(folder / "small.jpg", 90, 80)
    out["good"] = flat_jpeg(folder / "good.jpg", 120, 100, (10, 200, 30))
    out["big"] = flat_jpeg(folder / "big_8000x6000.jpg", 8000, 6000)
    Image.new("L", (100, 90), 77).save(folder / "gray_L.png")
    out["gray"] = folder / "gray_L.png"
    return out


# Address space grows by more than the bytes used: glibc reserves 64 MB heaps for threads' malloc arenas, and
# Numba's and OpenBLAS' threads allocate there. Measured for the 1200x900 photo: +299 MB of address space for
# +274 MB of peak RSS, an estimate of 295 MB (2026-11-29).
ADDRESS_SPACE_SLACK = 150 * 10**6


def test_estimate_bounds_what_a_prediction_allocates(files, tmp_path):
    """The estimate (photo_memory.photo_bytes) is at least the child's peak RSS growth, and within a factor of
    two of it: a 1200x900 photo at its own size, under RLIMIT_AS of the estimate plus the allocator's slack."""
    model = files["model"]
    photo = flat_jpeg(tmp_path / "mid.jpg", 1200, 900)
    estimate = photo_memory.photo_bytes(model, (900, 1200), (900, 1200))
    body, err, tail, out = child(["predict", "--weights", files["anysize"], "--format", "jsonl", photo],
                                 estimate + ADDRESS_SPACE_SLACK, files["small"])
    assert tail.startswith("0 "), out.stdout[-2000:] + out.stderr[-2000:]
    rss = int(tail.split()[4])
    assert rss <= estimate <= 2 * rss, (rss, estimate)  # conservative, but within a factor of two
    assert json.loads(body)["file"] == str(photo)


def test_a_photo_over_the_budget_is_its_own_error_and_the_run_goes_on(files):
    """The 8000x6000 photo (~13 GB at its own size) is refused by name before decoding; good.jpg and the gray
    PNG after it keep their places, the JSON array is whole, exit 1 (the old code: MemoryError, exit 1,
    '[' and one object)."""
    args = ["predict", "--weights", files["anysize"], "--format", "json", "--batch-size", "1",
            files["good"], files["big"], files["gray"]]
    body, err, tail, out = child(args, 600 * 10**6, files["small"])
    assert tail.startswith("1 "), out.stdout[-2000:] + out.stderr[-2000:]
    data = json.loads(body)
    assert [d["file"] for d in data] == [str(files["good"]), str(files["big"]), str(files["gray"])]
    assert "predictions" in data[0] and "predictions" in data[2], data
    need = photo_memory.photo_bytes(files["model"], (6000, 8000), (6000, 8000), decoded_mode="RGB")  # its header
    reason = (f"a 6000x8000 photo (height x width) at its own size would need about {photo_memory.human(need)}, "
              "over the photo memory budget of 4.0 GB; resize it with --size HxW")
    assert data[1]["error"].startswith(reason), data[1]
    assert err == [f"npxception: {files['big']}: {data[1]['error']}"], err
    # the process grew by far less than the photo would have cost
    assert int(tail.split()[2]) < 200 * 10**6


def test_the_budget_is_set_by_option_or_environment(files, tmp_path, monkeypatch, capsys):
    from npxception.cli import main

    model = files["model"]
    photo = flat_jpeg(tmp_path / "p.jpg", 300, 200)
    need = photo_memory.photo_bytes(model, (200, 300), (200, 300))
    base = ["predict", "--weights", str(files["anysize"]), "--format", "jsonl"]
    monkeypatch.delenv("NPXCEPTION_PHOTO_MEMORY", raising=False)
    assert main([*base, "--photo-memory", str(need // 2), str(photo)]) == 1
    assert "over the photo memory budget of" in json.loads(capsys.readouterr().out)["error"]
    monkeypatch.setenv("NPXCEPTION_PHOTO_MEMORY", str(need // 2))
    assert main([*base, str(photo)]) == 1
    assert "over the photo memory budget of" in json.loads(capsys.readouterr().out)["error"]
    monkeypatch.setenv("NPXCEPTION_PHOTO_MEMORY", "1")
    assert main([*base, "--photo-memory", "1GB", str(photo)]) == 0  # the option wins
    assert "predictions" in json.loads(capsys.readouterr().out)
    assert main([*base, "--photo-memory", "lots", str(photo)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "--photo-memory: expected a positive size such as 4GB, 500MB or 8e9 (bytes), found 'lots'")
    # the API: photo_memory= and the same refusal, naming the file
    monkeypatch.delenv("NPXCEPTION_PHOTO_MEMORY")
    with pytest.raises(ImageError, match=rf"^{photo}: a 200x300 photo .* over the photo memory budget"):
        npxception.predict(str(photo), model=model, photo_memory=need // 2)
    assert len(npxception.predict(str(photo), model=model, photo_memory="1GB", top=3)) == 3
    array = np.zeros((200, 300, 3), np.uint8)  # an array's forward pass is budgeted too, named by its position
    with pytest.raises(ImageError, match=r"^images\[1\]: a 200x300 photo .* over the photo memory budget"):
        npxception.predict([array[:100, :100], array], model=model, photo_memory=need // 2)


def test_a_memory_error_is_that_files_error(files):
    """With the budget raised past the machine (1 TB), the big photo's allocation fails under RLIMIT_AS: its
    own 'out of memory' line, the next file still labelled, the JSON array closed."""
    args = ["predict", "--weights", files["anysize"], "--format", "json", "--batch-size", "1",
            files["big"], files["gray"]]
    body, err, tail, out = child(args, 600 * 10**6, files["small"], env={"NPXCEPTION_PHOTO_MEMORY": "1TB"})
    assert tail.startswith("1 "), out.stdout[-2000:] + out.stderr[-2000:]
    data = json.loads(body)
    assert [d["file"] for d in data] == [str(files["big"]), str(files["gray"])]
    assert data[0]["error"].startswith("out of memory (") and "--size HxW" in data[0]["error"], data
    assert "predictions" in data[1]
    assert len(err) == 1 and err[0].startswith(f"npxception: {files['big']}: out of memory"), err


def test_json_array_is_closed_when_the_run_fails(files, monkeypatch, capsys):
    """Any error that stops the run (here a failure inside the model) still closes the JSON array."""
    from npxception import prediction
    from npxception.cli import main

    def broken(*args, **kwargs):
        yield [prediction.FileResult(str(files["good"]), None, "unreadable")]
        raise RuntimeError("boom")

    monkeypatch.setattr(prediction, "predict_files", broken)
    assert main(["predict", "--weights", str(files["anysize"]), "--format", "json", str(files["good"])]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [{"file": str(files["good"]), "error": "unreadable"}]
    assert captured.err.strip().endswith("npxception: error: boom")


def test_show_stops_after_its_layer_and_is_budgeted(files, tmp_path):
    """show --layer block1_conv1_act on a 1600x1200 photo: the whole plain pass would need
    photo_memory.plain_bytes(...) (~1 GB); up to the layer, ~0.2 GB. Under RLIMIT_AS of the estimate up to the
    layer (plus the drawing's margin) it draws (the old code ran every layer: a MemoryError); the 8000x6000
    photo is refused before decoding, naming --size."""
    model = files["model"]
    photo = flat_jpeg(tmp_path / "show.jpg", 1600, 1200)
    upto = photo_memory.photo_bytes(model, (1200, 1600), (1200, 1600), stop_after="block1_conv1_act")
    whole = photo_memory.photo_bytes(model, (1200, 1600), (1200, 1600), plain=True)
    assert whole > 3 * upto
    code = CHILD.replace('assert main(["predict", "--weights", weights, "--format", "jsonl", small]) == 0',
                         'assert main(["show", "--weights", weights, "--layer", "block1_conv1_act", small, '
                         '"-o", argv[-1] + ".warm.png"]) == 0')
    env = dict(os.environ, PYTHONPATH=REPO)
    out_png = tmp_path / "maps.png"
    args = ["show", "--weights", files["anysize"], "--layer", "block1_conv1_act", photo, "-o", out_png]
    out = subprocess.run([sys.executable, "-c", code, str(upto + 100 * 10**6), str(files["small"]), *map(str, args)],
                         capture_output=True, text=True, env=env)
    assert "--code 0 " in out.stdout and out_png.exists(), out.stdout[-2000:] + out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-m", "npxception", "show", "--weights", str(files["anysize"]), "--layer",
                          "block2_sepconv2_act", str(files["big"]), "-o", str(tmp_path / "no.png")],
                         capture_output=True, text=True, env=env)
    need = photo_memory.photo_bytes(model, (6000, 8000), (6000, 8000), stop_after="block2_sepconv2_act",
                                    decoded_mode="RGB")  # the header's mode
    assert out.returncode == 1 and out.stderr.strip().endswith(
        f"npxception: error: {files['big']}: a 6000x8000 photo (height x width) at its own size would need about "
        f"{photo_memory.human(need)}, over the photo memory budget of 4.0 GB; resize it with --size HxW "
        f"(target_size=(h, w) in Python), or raise the budget with --photo-memory or NPXCEPTION_PHOTO_MEMORY "
        f"(e.g. {photo_memory.human(need * 1.1)})"), out.stderr
    assert not (tmp_path / "no.png").exists()


def test_between_pillows_limits_a_photo_is_read_with_a_warning(files, tmp_path):
    """A 9500x9500 JPEG (90.25 Mpx, above MAX_IMAGE_PIXELS 89.48 Mpx, below twice that): on a fixed-size model,
    labelled with a warning line, exit 0 (it was refused as a bomb); on a model that takes any size, refused by
    the memory budget, naming --size (review 4, finding 2)."""
    assert Image.MAX_IMAGE_PIXELS < 9500 * 9500 < 2 * Image.MAX_IMAGE_PIXELS
    photo = flat_jpeg(tmp_path / "camera.jpg", 9500, 9500)
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("NPXCEPTION_PHOTO_MEMORY", None)
    base = [sys.executable, "-m", "npxception", "predict", "--format", "jsonl", "--weights"]
    out = subprocess.run([*base, str(files["fixed"]), str(photo)], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "predictions" in json.loads(out.stdout), out
    lines = [line for line in out.stderr.splitlines() if "compiling" not in line]
    assert lines == [f"npxception: warning: {photo}: 9500x9500 is 90,250,000 pixels, more than Pillow's "
                     "MAX_IMAGE_PIXELS (89,478,485) but not twice that, where Pillow refuses it as a possible "
                     "decompression bomb; reading it"], out.stderr
    out = subprocess.run([*base, str(files["anysize"]), str(photo)], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "resize it with --size HxW" in json.loads(out.stdout)["error"], out


def test_estimate_matches_the_plan_it_describes(files):
    """The fast estimate's arena is the plan's: run the plan at 150x130 and compare its arena's bytes."""
    model = XceptionModel(files["model"].weights, variant=files["model"].variant, head=files["model"].head,
                          input_shape=(None, None, 3))  # a fresh arena: slots keep their largest use
    model(np.zeros((1, 150, 130, 3), np.float32))
    arena = sum(a.nbytes for a in model._fast.arena.values())
    estimate = photo_memory.fast_plan_bytes(model, 150, 130)
    assert arena <= estimate <= arena * 1.05 + 2 * 10**6, (arena, estimate)


def test_a_photo_staged_by_a_resizing_layer_is_budgeted_at_what_predict_reads(files):
    """A model converted with a Resizing stage gathers only the pixels the resize reads (test_photo_memory.py):
    a 13000x13000 photo (169 Mpx, under twice MAX_IMAGE_PIXELS) costs about its decoded image, under the
    default budget, where the whole photo fed as float32 would be ~7 GB."""
    base = files["model"]
    resize = {"kind": "resizing", "name": "resizing", "height": 71, "width": 71, "keras": "keras3"}
    model = XceptionModel(base.weights, variant=base.variant, head=base.head, input_shape=(71, 71, 3),
                          input_stage=[resize], source_input_shape=(None, None, 3))
    hw = (13000, 13000)
    gathered = photo_memory.photo_bytes(model, hw, hw, gathered=True)
    assert gathered <= photo_memory.OVERHEAD * (photo_memory.DECODE_BYTES_PER_PIXEL * 13000**2 + 50 * 10**6)
    assert gathered < photo_memory.DEFAULT_BUDGET < photo_memory.photo_bytes(model, hw, hw)


def test_compare_budgets_every_layer_kept(files, tmp_path, monkeypatch, capsys):
    """compare keeps every layer of the photo it compares (ours, and theirs when their side runs here): a
    photo whose prediction fits the budget but whose comparison does not is refused by name before it is
    decoded (the old check was the plain pass's, a ninth of what compare took: docs/performance.md); against
    a dump, every photo is compared in one batch, and the batch is checked too."""
    from npxception.cli import main
    from onnx_port import build

    model = files["model"]
    monkeypatch.delenv("NPXCEPTION_PHOTO_MEMORY", raising=False)
    photo, other = flat_jpeg(tmp_path / "p.jpg", 300, 200), flat_jpeg(tmp_path / "q.jpg", 300, 200, (9, 9, 9))
    plain, ours, both = (photo_memory.photo_bytes(model, (200, 300), (200, 300), **how)
                         for how in ({"plain": True}, {"capture": 1}, {"capture": 2}))
    assert 4 * plain < ours < both  # every layer kept: ~5x the plain pass's live activations
    np.savez(tmp_path / "dump.npz", predictions=np.zeros((1, 3), np.float32))
    build(model, tmp_path / "port.onnx")
    base = ["compare", "--weights", str(files["anysize"]), "--image"]

    def refused(argv, budget):
        assert main([*base, *map(str, argv), "--photo-memory", str(budget)]) == 1
        return capsys.readouterr().err

    err = refused([photo, "--against", tmp_path / "dump.npz"], (plain + ours) // 2)
    assert (f"{photo}: a 200x300 photo (height x width) at its own size would need about {photo_memory.human(ours)}, "
            "over the photo memory budget") in err, err
    err = refused([photo, "--against", tmp_path / "port.onnx", "--layout", "NCHW", "--port", "timm.legacy_xception"],
                  (ours + both) // 2)  # their side runs here: its activations count too
    assert f"{photo}: a 200x300 photo (height x width) at its own size would need about {photo_memory.human(both)}" in err
    batch = photo_memory.OVERHEAD * photo_memory.capture_bytes(model, 200, 300, batch=2)
    err = refused([photo, other, "--against", tmp_path / "dump.npz"], int(ours + batch) // 2)
    assert "--image: 2 photos at 200x300, compared in one batch against a dump, would need about" in err, err
