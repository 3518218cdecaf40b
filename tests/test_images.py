"""load_image / to_array / preprocess_input against Keras' own pipeline, and bad files.

Reference: ``keras.utils.load_img(path, target_size=..., interpolation=...)`` then
``keras.utils.img_to_array``, which must equal ``load_image`` bit for bit, and
``keras.applications.xception.preprocess_input``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from npxception.images import (
    INTERPOLATIONS,
    ImageError,
    load_image,
    preprocess_input,
    resize_array,
    to_array,
)



def _keras():
    """Keras, for the tests that compare against it; the framework-free tests here run without it."""
    return pytest.importorskip("keras")

H, W = 37, 53  # odd, non-square, so (height, width) mix-ups show

# (file name, Pillow mode, format): every mode Keras has to convert, in PNG and JPEG.
CASES = [
    ("rgb.png", "RGB", "PNG"),
    ("rgb.jpg", "RGB", "JPEG"),
    ("rgba.png", "RGBA", "PNG"),
    ("l.png", "L", "PNG"),
    ("l.jpg", "L", "JPEG"),
    ("i16.png", "I;16", "PNG"),
    ("i16b.tif", "I;16B", "TIFF"),  # big-endian 16-bit: ImageJ's, many microscopes' and scanners' TIFFs (review 30)
    ("p.png", "P", "PNG"),
    ("p.gif", "P", "GIF"),
    ("la.png", "LA", "PNG"),
    ("cmyk.jpg", "CMYK", "JPEG"),
]
SIZES = [None, (299, 299), (20, 31), (80, 120), 64]  # keep, square, down, up (non-square), int


def _random_image(mode, rng):
    if mode in ("I;16", "I;16B"):
        # Full 16-bit range: convert("RGB") clips (Pillow#2574), and both sides must agree.
        return Image.fromarray(rng.integers(0, 65536, (H, W), dtype=np.uint16).astype(
            "<u2" if mode == "I;16" else ">u2"))
    if mode == "P":
        img = Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8), mode="L").convert("P")
        img.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tobytes())
        return img
    bands = len(Image.new(mode, (1, 1)).getbands())
    arr = rng.integers(0, 256, (H, W, bands), dtype=np.uint8)
    return Image.frombytes(mode, (W, H), arr.tobytes())


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    out = {}
    for name, mode, fmt in CASES:
        path = root / name
        _random_image(mode, rng).save(path, fmt)
        with Image.open(path) as check:
            assert check.mode == mode, f"{name}: Pillow wrote {check.mode}, the test wants {mode}"
        out[name] = path
    return out


def keras_pixels(path, target_size=None, interpolation="nearest"):
    keras = _keras()
    img = keras.utils.load_img(str(path), target_size=target_size, interpolation=interpolation)
    return keras.utils.img_to_array(img)


def _keras_size(size):
    return (size, size) if isinstance(size, int) else size


# --------------------------------------------------------------------------- vs Keras

@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", SIZES, ids=str)
@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_load_image_equals_keras_bit_for_bit(image_files, name, size, interpolation):
    ours = load_image(image_files[name], target_size=size, interpolation=interpolation)
    theirs = keras_pixels(image_files[name], _keras_size(size), interpolation)
    assert ours.dtype == np.float32 == theirs.dtype
    assert ours.shape == theirs.shape, f"{name}: ours {ours.shape}, theirs {theirs.shape}"
    expected = (H, W) if size is None else _keras_size(size)
    assert ours.shape == (*expected, 3)
    diff = np.flatnonzero(ours != theirs)
    assert diff.size == 0, f"{name} {size} {interpolation}: {diff.size} pixels differ, first ours " \
                           f"{ours.flat[diff[0]]} theirs {theirs.flat[diff[0]]}"


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
def test_every_interpolation_equals_keras(image_files, interpolation):
    ours = load_image(image_files["rgb.png"], (50, 40), interpolation)
    np.testing.assert_array_equal(ours, keras_pixels(image_files["rgb.png"], (50, 40), interpolation))


def test_sample_photos_equal_keras():
    for name in ("chelsea.png", "coffee.png"):
        path = f"examples/{name}"
        np.testing.assert_array_equal(load_image(path, (299, 299)), keras_pixels(path, (299, 299)))


def test_i16_is_clipped_like_convert_rgb(image_files):
    # Keras' pipeline clips 16-bit values to 255 (no scaling); ours keeps that default.
    raw = np.asarray(Image.open(image_files["i16.png"])).astype(np.int64)
    ours = load_image(image_files["i16.png"])
    np.testing.assert_array_equal(ours[:, :, 0], np.clip(raw, 0, 255))
    np.testing.assert_array_equal(ours[:, :, 0], ours[:, :, 2])


def test_a_big_endian_16_bit_tiff_reads_as_keras_reads_it_and_is_warned_about(image_files, caplog):
    """Pillow has no getextrema() for I;16B: the saturation check must read the pixels instead of refusing the
    file (review 30 found it refused as "cannot convert to rgb (image has wrong mode)"). Keras converts it to
    L for grayscale (not a kept 16-bit mode) and to RGB, clipped."""
    keras = _keras()
    path = image_files["i16b.tif"]
    with caplog.at_level("WARNING", logger="npxception"):
        ours = load_image(path, color_mode="grayscale")
    theirs = keras.utils.img_to_array(keras.utils.load_img(str(path), color_mode="grayscale"))
    np.testing.assert_array_equal(ours, theirs)
    assert "of this I;16B image's pixels are outside 0..255" in caplog.text, caplog.text


def test_a_16_bit_image_that_saturates_is_warned_about(tmp_path, caplog):
    # Keras' pipeline clips 16-bit values (kept), but a 16-bit photo then turns all white without a word
    # (review 4, finding 5). 'Most' (images.SATURATION_WARNING, a half): a 16-bit gradient over the full
    # range saturates all but its darkest 0.4%; 8-bit values stored in 16 bits saturate none.
    ramp = (np.arange(256 * 64, dtype=np.uint32).reshape(64, 256) * 65535 // (256 * 64 - 1)).astype(np.uint16)
    wide, narrow, float_f = tmp_path / "wide16.png", tmp_path / "narrow16.png", tmp_path / "f.tiff"
    Image.fromarray(ramp).save(wide)
    Image.fromarray((ramp >> 8).astype(np.uint16)).save(narrow)  # values 0..255 in a 16-bit file
    Image.fromarray((ramp.astype(np.float32) / 65535 * 1000)).save(float_f)  # F: 0..1000
    with caplog.at_level("WARNING", logger="npxception"):
        for path in (wide, narrow, float_f):
            caplog.clear()
            with Image.open(path) as img:
                mode = img.mode
                expected = np.asarray(img.convert("RGB"), np.float32)
            np.testing.assert_array_equal(load_image(path), expected)  # the pixels stay Keras'
            messages = [r.getMessage() for r in caplog.records]
            if path is narrow:
                assert messages == [], messages
            else:
                share = 1 - np.count_nonzero((ramp if path is wide else ramp / 65535 * 1000) <= 255) / ramp.size
                assert messages == [f"warning: {path}: {share:.0%} of this {mode} image's pixels are outside 0..255 "
                                    "and saturate when converted to 8-bit RGB (as Keras' load_img does: Pillow "
                                    "clips, it does not scale); scale it to 0..255 first for a meaningful "
                                    "prediction"], messages


def test_suffixes_are_pillows_for_the_formats_read():
    from npxception.images import image_suffixes

    suffixes = image_suffixes()
    # review 4, finding 3: a folder's .jfif/.jpe/.pbm/.pnm photos were dropped silently
    assert {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
            ".pbm", ".pnm"} <= suffixes
    assert not {".ico", ".tga", ".fits", ".txt"} & suffixes


def test_file_object_pil_image_and_pathlike_inputs(image_files):
    path = image_files["rgba.png"]
    expected = keras_pixels(path, (30, 30))
    np.testing.assert_array_equal(load_image(str(path), 30), expected)
    np.testing.assert_array_equal(load_image(path, (30, 30)), expected)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(load_image(f, 30), expected)
        assert not f.closed  # the caller's file is left open
    np.testing.assert_array_equal(load_image(io.BytesIO(path.read_bytes()), 30), expected)
    with Image.open(path) as img:
        np.testing.assert_array_equal(load_image(img, 30), expected)
        assert img.mode == "RGBA"  # the caller's image is not modified


def test_exif_transpose(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path, exif=exif)
    # Default: no rotation, as Keras.
    np.testing.assert_array_equal(load_image(path), keras_pixels(path))
    assert load_image(path).shape == (H, W, 3)
    turned = load_image(path, exif_transpose=True)
    assert turned.shape == (W, H, 3)
    with Image.open(path) as img:
        np.testing.assert_array_equal(turned, np.asarray(ImageOps.exif_transpose(img).convert("RGB"), np.float32))


def test_bad_exif_does_not_crash(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (5, 4), (1, 2, 3)).save(path)

    def broken(img, **kwargs):
        raise TypeError("bad EXIF tag")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    np.testing.assert_array_equal(load_image(path, exif_transpose=True), load_image(path))


def test_bad_arguments(image_files):
    path = image_files["rgb.png"]
    with pytest.raises(ValueError, match="nearest, bilinear, bicubic, hamming, box, lanczos"):
        load_image(path, 10, interpolation="cubic")
    for bad in [(0, 10), (10,), (1, 2, 3), "299", (10.0, 10), -3, True]:
        with pytest.raises(ValueError, match="target_size"):
            load_image(path, bad)
    with pytest.raises(TypeError, match="path"):
        load_image(12345)


def test_import_does_not_load_numba_or_frameworks():
    code = ("import sys, npxception.images, npxception.labels; "
            "bad = [m for m in ('numba', 'tensorflow', 'keras', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- bad files

def _assert_one_line_naming(exc_info, path):
    message = str(exc_info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    assert isinstance(exc_info.value, ValueError)
    assert exc_info.value.path == str(path)
    return message


def _png_bytes(shape=(64, 64, 3)):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _jpeg_bytes():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="no such file") as info:
        load_image(path)
    assert "no such file" in _assert_one_line_naming(info, path)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="is a directory, not an image file") as info:
        load_image(tmp_path)
    _assert_one_line_naming(info, tmp_path)


def test_not_an_image(tmp_path):
    path = tmp_path / "cat.jpg"
    path.write_text("this is text, not a JPEG\n")
    with pytest.raises(ImageError, match="not a JPEG, PNG") as info:
        load_image(path)
    assert ("not a JPEG, PNG, GIF, BMP, TIFF, WebP or PPM/PGM/PBM file (npxception reads only these)"
            in _assert_one_line_naming(info, path))


@pytest.mark.parametrize("fmt", ["ICO", "TGA"])
def test_format_outside_the_allowed_decoders(tmp_path, fmt):
    # Pillow (and Keras' load_img) read ICO and TGA; npxception leaves those decoders out on purpose, and
    # says so truthfully rather than "not an image Pillow can read" (review 4, finding 4).
    path = tmp_path / f"icon.{fmt.lower()}"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path, fmt)
    with Image.open(path) as img:
        assert img.format == fmt  # Pillow reads it
    with pytest.raises(ImageError, match=rf"{fmt} is not read because .* \(npxception reads JPEG, .*\)") as info:
        load_image(path)  # why: tests/test_user_image_files.py
    assert "Pillow can read" not in _assert_one_line_naming(info, path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file") as info:
        load_image(path)
    assert _assert_one_line_naming(info, path).endswith(": empty file (0 bytes)")
    with pytest.raises(ImageError, match="empty file"):
        load_image(io.BytesIO(b""))


def test_stdin_dash_is_not_supported(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImageError, match="reading an image from standard input is not supported") as info:
        load_image("-")
    _assert_one_line_naming(info, "-")
    Image.new("RGB", (4, 3), (9, 8, 7)).save(tmp_path / "-", "PNG")  # a file really named "-" is read
    assert load_image("-").shape == (3, 4, 3)


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_truncated_file(tmp_path, kind):
    data = _png_bytes() if kind == "png" else _jpeg_bytes()
    path = tmp_path / f"half.{kind}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated") as info:
        load_image(path, 299)
    assert "truncated" in _assert_one_line_naming(info, path)


def test_corrupt_png_data(tmp_path):
    data = bytearray(_png_bytes())
    data[100:140] = bytes(40)  # inside the IDAT chunk: CRC / zlib errors
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupt") as info:
        load_image(path)
    _assert_one_line_naming(info, path)


def test_decompression_bomb_warning_range_reads_and_warns(tmp_path, monkeypatch, caplog):
    # Pillow warns between MAX_IMAGE_PIXELS and twice that and reads the image, as Keras' load_img
    # does: a 101.8 MP camera JPEG was refused here (review 4, finding 2). One named line, no Python warning.
    path = tmp_path / "big.png"
    path.write_bytes(_png_bytes())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Python warning escapes
        with caplog.at_level("WARNING", logger="npxception"):
            pixels = load_image(path)
    assert pixels.shape == (64, 64, 3)
    [record] = [r for r in caplog.records if "MAX_IMAGE_PIXELS" in r.getMessage()]
    assert record.getMessage().startswith(f"warning: {path}: 64x64 is 4,096 pixels, more than Pillow's "
                                          "MAX_IMAGE_PIXELS (4,095)"), record.getMessage()


def test_decompression_bomb(tmp_path, monkeypatch):
    # Above twice MAX_IMAGE_PIXELS Pillow raises: one ImageError naming the limit and how to raise it.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 2 - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may escape either
        with pytest.raises(ImageError, match="decompression bomb") as info:
            load_image(path)
    message = _assert_one_line_naming(info, path)
    assert "more than twice Pillow's MAX_IMAGE_PIXELS (2,047)" in message and "raise PIL.Image.MAX_IMAGE_PIXELS" in message


def test_bomb_limit_is_kept_for_file_objects(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    f = io.BytesIO(_png_bytes())
    with pytest.raises(ImageError, match="decompression bomb") as info:
        load_image(f)
    assert str(info.value).startswith("<BytesIO>: ")


# --------------------------------------------------------------------------- to_array

def test_to_array_uint8_forms():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    np.testing.assert_array_equal(to_array(rgb), rgb.astype(np.float32))
    # Grayscale and RGBA give what convert("RGB") gives.
    np.testing.assert_array_equal(to_array(gray), np.asarray(Image.fromarray(gray).convert("RGB"), np.float32))
    np.testing.assert_array_equal(to_array(gray[:, :, None]), to_array(gray))
    np.testing.assert_array_equal(to_array(rgba), np.asarray(Image.fromarray(rgba).convert("RGB"), np.float32))
    np.testing.assert_array_equal(to_array(Image.fromarray(rgba)), to_array(rgba))
    for out in (to_array(rgb), to_array(rgba), to_array(Image.fromarray(gray))):
        assert out.dtype == np.float32 and out.shape == (6, 7, 3) and out.flags.c_contiguous


def test_to_array_float_is_copied_not_rescaled():
    x = np.linspace(0, 255, 2 * 3 * 3).reshape(2, 3, 3)
    out = to_array(x)
    np.testing.assert_array_equal(out, x.astype(np.float32))
    out[...] = -1
    assert x.min() == 0  # never aliases the caller's array
    f32 = x.astype(np.float32)
    assert not np.shares_memory(to_array(f32), f32)


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((4, 4, 2), np.uint8), ValueError, "shape"),
    (np.zeros((4, 4, 5), np.uint8), ValueError, "shape"),
    (np.zeros((2, 4, 4, 3), np.uint8), ValueError, "shape"),
    (np.zeros(4, np.uint8), ValueError, "shape"),
    (np.zeros((0, 4, 3), np.uint8), ValueError, "empty"),
    (np.zeros((4, 4, 3), bool), TypeError, "dtype"),
    (np.zeros((4, 4, 3), object), TypeError, "dtype"),
    (np.zeros((4, 4, 3), complex), TypeError, "dtype"),
    (np.full((4, 4, 3), np.nan), ValueError, "NaN"),
    (np.full((4, 4, 3), np.inf), ValueError, "NaN"),
    (np.full((4, 4, 3), -0.5), ValueError, r"\[0, 255\]"),
    (np.full((4, 4, 3), 256.0), ValueError, r"\[0, 255\]"),
    (np.full((4, 4, 3), 1000, np.uint16), ValueError, r"\[0, 255\]"),
    ([[1, 2, 3]], TypeError, "numpy array"),
    ("cat.jpg", TypeError, "numpy array"),
])
def test_to_array_rejects(bad, error, match):
    with pytest.raises(error, match=match):
        to_array(bad)


def test_resize_array_matches_keras_on_whole_pixels():
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    for interpolation in ("nearest", "bilinear"):
        theirs = _keras().utils.img_to_array(Image.fromarray(rgb).resize((31, 20), INTERPOLATIONS[interpolation]))
        np.testing.assert_array_equal(resize_array(rgb.astype(np.float32), (20, 31), interpolation), theirs)
    # Fractional pixels are resized as float images, not rounded to uint8 first.
    half = rgb // 2
    out = resize_array(half.astype(np.float32) + 0.25, (20, 31), "nearest")
    assert out.shape == (20, 31, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, resize_array(half.astype(np.float32), (20, 31), "nearest") + 0.25)


# --------------------------------------------------------------------------- preprocess_input

@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.float32, np.float64])
def test_preprocess_input_equals_keras_and_leaves_input_alone(dtype):
    keras_preprocess = _keras().applications.xception.preprocess_input

    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (2, 5, 4, 3)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        x += rng.random(x.shape).astype(dtype)  # fractional pixels too
    before = x.copy()
    ours = preprocess_input(x)
    theirs = keras_preprocess(x.copy())
    np.testing.assert_array_equal(x, before)  # ours never writes into its argument
    assert ours.dtype == (np.float64 if dtype == np.float64 else np.float32)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)
    assert not np.shares_memory(ours, x)


def test_keras_preprocess_writes_in_place_but_ours_does_not():
    # The behaviour we guard against (keras#11591); if Keras changes, this documents it.
    keras_preprocess = _keras().applications.xception.preprocess_input

    x = np.full((1, 2, 2, 3), 255.0, np.float32)
    keras_preprocess(x)
    assert x.max() == 1.0
    y = np.full((1, 2, 2, 3), 255.0, np.float32)
    preprocess_input(y)
    assert y.max() == 255.0


def test_float16_pixels_are_scaled_in_float32_where_keras_keeps_float16():
    """The docstring's claim, measured: Keras 3 and tf_keras return float16 for float16 pixels, rounding
    x / 127.5 - 1 to float16 (half an ulp at 1.0 is 4.9e-4); ours is float32, within float32's rounding
    (6e-8 at 1.0) of the float64 value, since the model computes in float32."""
    import tf_keras

    x = np.arange(256, dtype=np.float16).reshape(1, -1, 1).repeat(3, axis=-1)  # every whole pixel value
    exact = x.astype(np.float64) / 127.5 - 1
    for keras_preprocess in (_keras().applications.xception.preprocess_input,
                             tf_keras.applications.xception.preprocess_input):
        theirs = np.asarray(keras_preprocess(x.copy()))
        assert theirs.dtype == np.float16
        assert np.abs(theirs - exact).max() > 1e-4
    ours = preprocess_input(x)
    assert ours.dtype == np.float32
    assert np.abs(ours - exact).max() <= 6e-8
    assert "float16 gives float32 too, unlike Keras 3 and tf_keras" in preprocess_input.__doc__


def test_preprocess_input_shapes_and_types():
    assert preprocess_input([0, 127.5, 255]).tolist() == [-1.0, 0.0, 1.0]
    assert preprocess_input(np.zeros((3,), np.float16)).dtype == np.float32
    assert preprocess_input(np.zeros((4, 4, 3), np.uint8)).shape == (4, 4, 3)
    # element-wise, as Keras' "tf" mode: a grayscale or RGBA model's pixels too
    assert preprocess_input(np.full((4, 4, 4), 255.0)).tolist() == np.ones((4, 4, 4)).tolist()
    assert preprocess_input(np.zeros((4, 4, 1), np.uint16)).shape == (4, 4, 1)
    with pytest.raises(ValueError, match=r"expected pixels of shape \(\.\.\., C\) \(channels last\), found a scalar"):
        preprocess_input(np.float32(3))
    for bad in (np.array([["a", "b", "c"]]), np.zeros((2, 3), object),
                np.zeros((2, 3), complex)):
        with pytest.raises(TypeError, match="expected a numeric array of pixels"):
            preprocess_input(bad)


@pytest.mark.parametrize("band_bytes", [1, 7, 100, 10**9])
def test_read_pixels_in_bands_of_any_size_is_the_image_indexed(monkeypatch, band_bytes):
    """read_pixels reads runs of rows in bands of at most BAND_BYTES (or one row): any band gives the same bytes."""
    from npxception import images

    monkeypatch.setattr(images, "BAND_BYTES", band_bytes)
    rng = np.random.default_rng(band_bytes)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        rows = np.unique(rng.integers(0, h, rng.integers(1, h + 1)))
        cols = np.unique(rng.integers(0, w, rng.integers(1, w + 1)))
        np.testing.assert_array_equal(images.read_pixels(Image.fromarray(photo), rows, cols), photo[rows][:, cols])


@pytest.mark.parametrize("data_format", [None, "channels_last", "channels_first"])
def test_preprocess_input_data_format_equals_keras_and_leaves_input_alone(data_format):
    """Keras' data_format argument: accepted with its values; the "tf" mode is element-wise, so an NCHW
    array is scaled as it lies, as Keras scales it (keras.applications.xception.preprocess_input)."""
    import tf_keras

    x = np.random.default_rng(8).uniform(0, 255, (2, 3, 5, 4)).astype(np.float32)  # (N, C, H, W) or NHWC
    before = x.copy()
    ours = preprocess_input(x, data_format=data_format)
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(ours, x)
    for keras_preprocess in (_keras().applications.xception.preprocess_input,
                             tf_keras.applications.xception.preprocess_input):
        np.testing.assert_array_equal(ours, np.asarray(keras_preprocess(x.copy(), data_format=data_format)))
    np.testing.assert_array_equal(preprocess_input(x, data_format), ours)  # positional, as Keras' signature


@pytest.mark.parametrize("bad", ["NHWC", "channels-last", "", 1, ["channels_last"]])
def test_preprocess_input_refuses_another_data_format_naming_it(bad):
    keras_preprocess = _keras().applications.xception.preprocess_input
    x = np.zeros((1, 2, 2, 3), np.float32)
    if isinstance(bad, str):
        with pytest.raises(ValueError, match="data_format"):  # Keras refuses them too
            keras_preprocess(x.copy(), data_format=bad)
    with pytest.raises(ValueError, match=r"preprocess_input: data_format: expected None, 'channels_first' or "
                                         r"'channels_last' \(Keras' values\), found"):
        preprocess_input(x, data_format=bad)


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
@pytest.mark.parametrize("size", [(20, 31), (80, 40), (37, 53), (64, 64), (11, 90)])
def test_keep_aspect_ratio_equals_keras_bit_for_bit(image_files, interpolation, size):
    """load_image(keep_aspect_ratio=True): Keras crops the centre to the target's aspect ratio, then resizes
    (load_img's crop box, integer arithmetic); bit for bit, for wider, taller, equal and same-size targets."""
    keras = _keras()
    import tf_keras

    path = image_files["rgb.png"]  # 37 x 53
    ours = load_image(path, size, interpolation, keep_aspect_ratio=True)
    for fw in (keras, tf_keras):
        theirs = fw.utils.img_to_array(fw.utils.load_img(str(path), target_size=size, interpolation=interpolation,
                                                        keep_aspect_ratio=True))
        np.testing.assert_array_equal(ours, theirs)
    if size != (H, W):  # the case's power: cropping differs from stretching the whole image
        assert not np.array_equal(ours, load_image(path, size, interpolation))


def test_keep_aspect_ratio_refuses_a_non_bool(image_files):
    with pytest.raises(TypeError, match="keep_aspect_ratio: expected True or False"):
        load_image(image_files["rgb.png"], (20, 20), keep_aspect_ratio="yes")
