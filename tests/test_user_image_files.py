"""Real users' image inputs that review 28 found handled unclearly: image bytes where a path goes, a refusal's
advice, images Keras feeds black or sideways without a word, folders that vanished, Pillow's unnamed warnings,
ambiguous escapes, and the formats Keras reads and we refuse. Pixels stay Keras' everywhere; what changes is
what the user is told. Small images and a 71x71 model throughout (the CLI runs in-process: ``main`` returns
the exit code, stderr is captured)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import npxception
from npxception import photo_memory
from npxception.cli import main
from npxception.images import ImageError, load_image
from npxception.model import XceptionModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 3-class 71x71 model (cheap to run), its weight file, and the same weights taking any size."""
    folder = tmp_path_factory.mktemp("small")
    model = npxception.Xception(classes=3, input_shape=(71, 71, 3), seed=7)
    anysize = XceptionModel(model.weights, variant=model.variant, head=model.head, input_shape=(None, None, 3))
    return {"model": model, "anysize": anysize, "npz": str(model.save(folder / "small.npz"))}


def photo(path, size=(80, 72), color=(200, 30, 90), **save):
    Image.new("RGB", size, color).save(path, **save)
    return path


def cli(capsys, *argv):
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, [line for line in err.splitlines() if "compiling" not in line]


# ---- F1: bytes where a path goes ---------------------------------------------------------------------------

def test_image_bytes_are_refused_with_the_bytesio_hint(tmp_path, small):
    """Before: a 33 KB binary "file name" and "truncated or corrupt image data (open: embedded null character
    in path)". Keras' load_img reads bytes as a path too, so they stay one: the refusal says so, briefly."""
    data = photo(tmp_path / "cat.jpg").read_bytes()
    for given in (data, photo(tmp_path / "cat.png").read_bytes()):
        with pytest.raises(ImageError, match="io.BytesIO") as err:
            load_image(given)
        assert len(str(err.value)) < 250, str(err.value)
        assert str(err.value).startswith("<bytes>: bytes are read as a file path"), str(err.value)
        assert "pass io.BytesIO(data)" in str(err.value)
    with pytest.raises(ImageError, match=r"^<bytes>: bytes are read as a file path .* start like a JPEG image"):
        npxception.predict(data, model=small["model"])
    assert load_image(io.BytesIO(data)).shape == (72, 80, 3)  # the hint works


def test_a_nul_in_a_path_is_named_as_such_and_long_names_are_bounded(tmp_path):
    with pytest.raises(ImageError, match="NUL byte") as err:
        load_image(str(tmp_path / "cat\0.jpg"))
    assert str(err.value) == (f"{tmp_path}/cat\\x00.jpg: the path contains a NUL byte (\\x00), which no file path "
                              "can hold; check how it was built")
    with pytest.raises(ImageError, match="File name too long") as err:  # not image content: a path, named within bounds
        load_image(b"x" * 5000 + b".jpg")
    assert len(str(err.value)) < 300 and "\u2026" in err.value.path and "corrupt" not in str(err.value), str(err.value)
    assert str(err.value).endswith(": cannot open: File name too long")


# ---- F2: the photo-memory refusal's advice and estimate -----------------------------------------------------

def test_the_refusal_advises_what_can_help_this_model(small, tmp_path, monkeypatch, caplog):
    """A fixed-size model cannot take --size HxW of another size, and the file is decoded before any resize:
    only a smaller file or a larger budget helps. A model of any size, fed at its own size: --size."""
    with pytest.raises(photo_memory.PhotoTooLarge, match="over the photo memory budget") as fixed:
        photo_memory.check(small["model"], (3000, 4000), (71, 71), 10**6)
    assert "--size" not in str(fixed.value) and "shrink it beforehand" in str(fixed.value), str(fixed.value)
    assert "raise the budget with --photo-memory" in str(fixed.value)
    with pytest.raises(photo_memory.PhotoTooLarge, match="over the photo memory budget") as own:
        photo_memory.check(small["anysize"], (3000, 4000), (3000, 4000), 10**6)
    assert "resize it with --size HxW" in str(own.value), str(own.value)
    # a photo between MAX_IMAGE_PIXELS and twice that, refused by the budget: no "reading it" warning first
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    big = photo(tmp_path / "big.png", (80, 72))  # 5,760 pixels
    with caplog.at_level("WARNING", logger="npxception"):
        with pytest.raises(ImageError, match="over the photo memory budget"):
            npxception.predict(str(big), model=small["model"], photo_memory=1000)
        assert [r.getMessage() for r in caplog.records] == []
        npxception.predict(str(big), model=small["model"])  # read, and then warned about
        assert any("reading it" in r.getMessage() for r in caplog.records)


# What a decoded photo costs by its mode, from its header: 4 bytes per pixel for RGB (Pillow's RGBX), none to
# convert; the old count, 8 for every mode, made the review's 13000x13000 RGB PNG 1.5 GB against ~650 MB measured.
CHILD = """
import sys
from npxception.cli import main
weights, warm, photo = sys.argv[1:]
assert main(["predict", "--weights", weights, "--format", "jsonl", warm]) == 0
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))
rss = status("VmRSS")
code = main(["predict", "--weights", weights, "--format", "jsonl", photo])
print("--grew", code, status("VmHWM") - rss, flush=True)
"""


def test_the_estimate_counts_the_decoded_mode_and_stays_an_upper_bound(small, tmp_path, capsys):
    """A 6000x5000 RGB PNG fed at 71x71 (its decoded image is nearly all the cost): the estimate is at least the
    child's peak RSS growth and below 1.5 times it (the old count, 8 bytes per pixel, was ~2.3 times). The
    refusal quotes that estimate, so the check path reads the mode."""
    hw = (5000, 6000)
    big = photo(tmp_path / "big.png", hw[::-1], (10, 200, 30))
    estimate = photo_memory.photo_bytes(small["model"], hw, (71, 71), decoded_mode="RGB")
    assert estimate < photo_memory.photo_bytes(small["model"], hw, (71, 71))  # the mode-blind bound
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("NPXCEPTION_PHOTO_MEMORY", None)
    out = subprocess.run([sys.executable, "-c", CHILD, small["npz"], str(photo(tmp_path / "w.jpg")), str(big)],
                         capture_output=True, text=True, env=env, cwd=REPO)
    code, grew = map(int, out.stdout.rpartition("--grew ")[2].split())
    assert code == 0, out.stderr[-2000:]
    assert grew <= estimate <= 1.5 * grew, (grew, estimate)
    code, stdout, err = cli(capsys, "--weights", small["npz"], "--format", "jsonl", "--photo-memory",
                            str(estimate - 1), big)
    assert code == 1
    assert f"would need about {photo_memory.human(estimate)}, over" in json.loads(stdout)["error"]


def test_decoded_bytes_per_mode():
    """Pillow's storage per mode and the converted copy (measured 2026-11-30 with VmHWM: L->RGB 4, F->RGB 5,
    I;16B->RGB 5 bytes per pixel beyond the source; +1 covers the 8-bit step)."""
    per = photo_memory.decode_bytes_per_pixel
    assert (per("RGB"), per("L"), per("I;16"), per("F"), per("RGBA")) == (4, 6, 7, 9, 9)
    assert per("L", channels=1) == 1 and per("I;16", channels=1) == 2 and per("RGB", channels=4) == 9
    assert per("RGB", transposed=True) == 8 and per(None) == photo_memory.DECODE_BYTES_PER_PIXEL


# ---- F3, F10, F6: what Keras feeds without a word, and Pillow's unnamed warnings ----------------------------

def test_a_float_image_in_0_1_is_warned_about_and_fed_as_keras_feeds_it(tmp_path, caplog):
    ramp = np.linspace(0, 0.8, 64 * 48, dtype=np.float32).reshape(48, 64)
    scaled, wide = tmp_path / "scaled.tif", tmp_path / "wide.tif"
    Image.fromarray(ramp).save(scaled)
    Image.fromarray(ramp * 255).save(wide)
    with caplog.at_level("WARNING", logger="npxception"):
        x = load_image(scaled)
        with Image.open(scaled) as img:
            np.testing.assert_array_equal(x, np.asarray(img.convert("RGB"), np.float32))  # Keras' pixels
        assert [r.getMessage() for r in caplog.records] == [
            f"warning: {scaled}: this 32-bit float (F) image's values all lie in [0, 1] (max 0.8): converted to "
            "8-bit RGB it is black or nearly so (as Keras' load_img feeds it: Pillow clips, it does not scale); "
            "multiply it by 255 first for a meaningful prediction"]
        caplog.clear()
        load_image(wide)
        assert caplog.records == []


def exif_jpeg(path, orientation):
    img = Image.new("RGB", (90, 60), (40, 90, 200))
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif)
    return path


def test_an_exif_orientation_is_noted_by_file_unless_transposed(tmp_path, caplog, small, capsys):
    turned, upright = exif_jpeg(tmp_path / "turned.jpg", 6), exif_jpeg(tmp_path / "upright.jpg", 1)
    with caplog.at_level("WARNING", logger="npxception"):
        x = load_image(turned)
        with Image.open(turned) as img:
            np.testing.assert_array_equal(x, np.asarray(img.convert("RGB"), np.float32))  # as stored, as Keras
        [message] = [r.getMessage() for r in caplog.records]
        assert message.startswith(f"note: {turned}: EXIF orientation 6: the photo is stored on its side"), message
        assert "--exif-transpose (exif_transpose=True in Python)" in message
        caplog.clear()
        assert load_image(turned, exif_transpose=True).shape == (90, 60, 3)
        load_image(upright)
        assert caplog.records == []
    code, out, err = cli(capsys, "--weights", small["npz"], "--top", "1", turned, upright)
    assert code == 0
    assert err == [f"npxception: {message}"]


def test_pillows_warnings_are_named_per_file(tmp_path, caplog, small, capsys):
    """Pillow's "Palette images with Transparency expressed in bytes" reached stderr raw, once per process,
    without the file's name: now one named line per file, and nothing raw."""
    paths = []
    for name in ("a.png", "b.png"):
        img = Image.new("P", (80, 72), 3)
        img.putpalette(list(range(256)) * 3)
        img.save(tmp_path / name, transparency=bytes(range(4)))
        paths.append(tmp_path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = []
        for path in paths:
            with Image.open(path) as img:
                expected.append(np.asarray(img.convert("RGB"), np.float32))
    with caplog.at_level("WARNING", logger="npxception"), warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        for path, pixels in zip(paths, expected):
            np.testing.assert_array_equal(load_image(path), pixels)  # Keras' pixels
    assert [str(w.message) for w in raw] == []
    text = "Palette images with Transparency expressed in bytes should be converted to RGBA images"
    assert [r.getMessage() for r in caplog.records] == [
        f"warning: {p}: {text} (Pillow's UserWarning while reading it)" for p in paths]
    code, out, err = cli(capsys, "--weights", small["npz"], "--top", "1", *paths)
    assert code == 0
    assert err == [f"npxception: warning: {p}: {text} (Pillow's UserWarning while reading it)" for p in paths]


# ---- F4, F5: folders ----------------------------------------------------------------------------------------

def test_an_empty_folder_among_inputs_keeps_its_place(tmp_path, small, capsys):
    (tmp_path / "empty").mkdir()
    good = photo(tmp_path / "good.jpg")
    code, out, err = cli(capsys, "--weights", small["npz"], "--format", "csv", "--top", "1", tmp_path / "empty", good)
    assert code == 1  # a bad input, as an unreadable file (README's exit codes)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["file"] for r in rows] == [str(tmp_path / "empty"), str(good)]
    assert rows[0]["error"].startswith("a folder with no image files in it (image suffixes: .apng .bmp"), rows[0]
    assert rows[1]["error"] == ""
    assert err == [f"npxception: {tmp_path / 'empty'}: {rows[0]['error']}"]
    code, out, err = cli(capsys, "--weights", small["npz"], tmp_path / "empty")  # alone: nothing to label
    assert (code, out) == (2, "")


def test_recursion_follows_linked_folders_once(tmp_path, small, capsys):
    """-r walked past symbolic links to folders without a word; now they are followed, each real folder once:
    a loop back to the top and a second way to a folder are noted, and the walk ends."""
    top, elsewhere = tmp_path / "top", tmp_path / "elsewhere"
    (top / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    photo(top / "a.jpg")
    photo(top / "sub" / "b.jpg")
    photo(elsewhere / "c.jpg")
    (top / "linked").symlink_to(elsewhere)
    (top / "sub" / "loop").symlink_to(top)
    (top / "sub" / "again").symlink_to(elsewhere)
    code, out, err = cli(capsys, "--weights", small["npz"], "--format", "jsonl", "-r", top)
    assert code == 0
    assert [json.loads(line)["file"] for line in out.splitlines()] == [
        str(top / "a.jpg"), str(top / "linked" / "c.jpg"), str(top / "sub" / "b.jpg")]
    assert err == ["npxception: note: linked folders skipped, walked already (a loop, or a second way to a folder): "
                   f"{top / 'sub' / 'again'}, {top / 'sub' / 'loop'}"]


# ---- F7: unambiguous names ----------------------------------------------------------------------------------

def test_a_newline_and_a_backslash_n_print_differently(tmp_path, small, capsys):
    lf, backslash = photo(tmp_path / "new\nline.jpg"), photo(tmp_path / "new\\nline.jpg")
    code, out, err = cli(capsys, "--weights", small["npz"], "--format", "csv", "--top", "1", lf, backslash)
    assert code == 0
    assert [r["file"] for r in csv.DictReader(io.StringIO(out))] == [
        f"{tmp_path}/new\\nline.jpg", f"{tmp_path}/new\\\\nline.jpg"]
    code, out, err = cli(capsys, "--weights", small["npz"], "--top", "1", lf, backslash)
    assert [line for line in out.splitlines() if line.startswith(str(tmp_path))] == [
        f"{tmp_path}/new\\nline.jpg", f"{tmp_path}/new\\\\nline.jpg"]


# ---- F9: the formats Keras reads and we refuse say why ------------------------------------------------------

@pytest.mark.parametrize("name, why", [
    ("i.ico", "an ICO icon: ICO is not read because its directory declares each image's size"),
    ("t.tga", "a TGA (Targa) file, by its suffix: TGA is not read because it has no signature"),
])
def test_ico_and_tga_refusals_say_why(tmp_path, name, why):
    path = photo(tmp_path / name, (32, 32))
    with pytest.raises(ImageError, match="is not read because") as err:
        load_image(path)
    assert err.value.reason.startswith(why), err.value.reason
    assert err.value.reason.endswith("convert it to PNG first (npxception reads JPEG, PNG, GIF, BMP, TIFF, WebP or "
                                     "PPM/PGM/PBM)")
